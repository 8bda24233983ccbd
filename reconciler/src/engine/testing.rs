//! A fake resource kind and builders for the engine's unit tests.

use super::{Ctx, Desired, FieldChange, Fields, Identity, Kind, Observed};
use crate::changes::{Action, Plan};
use futures::future::BoxFuture;
use std::time::Instant;
/// Deletes note when they ended (the kind "slow" takes 400 ms); kinds without a log are
/// never deleted.
pub type Ended = std::sync::Arc<std::sync::Mutex<Vec<(String, Instant)>>>;
pub struct FakeKind(pub &'static str, pub Option<Ended>);
impl Kind for FakeKind {
    fn name(&self) -> &'static str {
        self.0
    }
    /// Untyped: the fake kinds take any fields.
    fn check_fields(&self, _: &Fields) -> anyhow::Result<()> {
        Ok(())
    }
    fn replace_on(&self) -> &'static [&'static str] {
        &["parent", "cidr"]
    }
    fn observe<'a>(&'a self, _: &'a Ctx, _: &'a [&'a Desired]) -> BoxFuture<'a, anyhow::Result<Vec<Observed>>> {
        unreachable!()
    }
    fn create<'a>(&'a self, _: &'a Ctx, _: &'a str, _: &'a Fields) -> BoxFuture<'a, anyhow::Result<Identity>> {
        unreachable!()
    }
    fn update<'a>(
        &'a self,
        _: &'a Ctx,
        _: &'a Observed,
        _: &'a Fields,
        _: &'a [FieldChange],
    ) -> BoxFuture<'a, anyhow::Result<Option<Identity>>> {
        unreachable!()
    }
    fn updates_yield_new_identity(&self) -> bool {
        self.0 == "rev"
    }
    fn holds_what_it_uses(&self) -> bool {
        self.0 != "rt"
    }
    fn delete<'a>(&'a self, _: &'a Ctx, live: &'a Observed) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let ended = self.1.as_ref().expect("this kind is never deleted");
            if self.0 == "slow" {
                tokio::time::sleep(std::time::Duration::from_millis(400)).await;
            }
            ended.lock().unwrap().push((live.id.clone(), Instant::now()));
            Ok(())
        })
    }
    fn iam(&self, _: &str) -> crate::engine::IamActions {
        crate::engine::IamActions::default()
    }
}

pub fn kinds() -> Vec<Box<dyn Kind>> {
    vec![Box::new(FakeKind("a", None)), Box::new(FakeKind("b", None)), Box::new(FakeKind("rev", None)), Box::new(FakeKind("rt", None))]
}

pub fn desired(kind: &'static str, id: &str, fields: serde_json::Value) -> Desired {
    Desired { kind, id: id.into(), fields: fields.as_object().unwrap().clone(), after: vec![] }
}
pub fn live(kind: &'static str, id: &str, phys: &str, fields: serde_json::Value) -> Observed {
    Observed::new(kind, id.into(), phys.into(), fields.as_object().unwrap().clone())
}
pub fn actions(p: &Plan) -> Vec<(String, Action)> {
    p.resources.iter().map(|r| (r.id.clone(), r.action.clone())).collect()
}
