//! A fake resource kind and builders for the engine's unit tests.

use super::{Ctx, Desired, DynKind, FieldChange, Fields, Identity, Kind, Observed};
use crate::changes::{Action, Plan};
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
    type Typed = super::Fields;
    fn replace_on(&self) -> &'static [&'static str] {
        &["parent", "cidr"]
    }
    async fn observe(&self, _: &Ctx, _: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        unreachable!()
    }
    async fn create(&self, _: &Ctx, _: &str, _: &Fields) -> anyhow::Result<Identity> {
        unreachable!()
    }
    async fn update(&self, _: &Ctx, _: &Observed, _: &Fields, _: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        unreachable!()
    }
    fn updates_yield_new_identity(&self) -> bool {
        self.0 == "rev"
    }
    fn holds_what_it_uses(&self) -> bool {
        self.0 != "rt"
    }
    async fn delete(&self, _: &Ctx, live: &Observed) -> anyhow::Result<()> {
        let ended = self.1.as_ref().expect("this kind is never deleted");
        if self.0 == "slow" {
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        }
        ended.lock().unwrap().push((live.id.clone(), Instant::now()));
        Ok(())
    }
    fn iam(&self, _: &str) -> crate::engine::IamActions {
        crate::engine::IamActions::default()
    }
}

pub fn kinds() -> Vec<Box<dyn DynKind>> {
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
