//! Waiting for a resource to become ready, by the kind's own observe: a resource found still
//! becoming ready (Pending) before dependents use it, and a resource of a kind that settles
//! after a change ([`Kind::settles_after_change`](super::Kind::settles_after_change): an ECS
//! service's deployment rolls out), which the kind then judges against what was sent
//! ([`Kind::settled`](super::Kind::settled)). The waits poll, print how far the resource is
//! when that changes, and stop at the wait timeout saying where it was.

use super::observe::observe_again;
use super::wait::{until_reporting, Check};
use super::{progress, Ctx, Desired, DynKind, Fields, Identity, Observed, Status};
use anyhow::anyhow;

/// Polls until the resource is no longer Pending and returns it as it is then: Ready, or
/// Degraded (usable but unhealthy: dependents go on; the end of apply reports it). Failed,
/// on its way out or gone are errors that say what to do.
pub(super) async fn wait_ready(ctx: &Ctx, kind: &dyn DynKind, d: &Desired, live: &Observed) -> anyhow::Result<Observed> {
    let what = format!("{} {} [{}] to become ready", d.kind, d.id, live.physical_id);
    progress(&format!("waiting for {what}"));
    until_reporting(ctx, &what, || async {
        let Some(now) = observe_again(ctx, kind, live).await? else {
            return Err(anyhow!("{} {} disappeared while waiting for it; run apply again", d.kind, d.id));
        };
        match &now.status {
            Status::Ready | Status::Degraded(_) => Ok(Check::Done(now)),
            Status::Pending(how_far) => Ok(Check::Waiting(how_far.clone())),
            Status::Failed(why) => Err(anyhow!("{} {} failed: {why}; the next apply replaces it", d.kind, d.id)),
            Status::Leaving(why) => Err(anyhow!("{} {} is being deleted ({why}); run apply again", d.kind, d.id)),
        }
    })
    .await
}

/// After a create or an update of a kind that settles after a change: looks at the resource
/// again, waits while it is Pending, and lets the kind judge what it settled as. `fields` are
/// what create or update received.
pub(super) async fn settle(ctx: &Ctx, kind: &dyn DynKind, d: &Desired, fields: &Fields, changed: &Identity) -> anyhow::Result<()> {
    let probe = Observed::new(d.kind, d.id.clone(), changed.physical_id.clone(), fields.clone());
    let now = match observe_again(ctx, kind, &probe).await? {
        Some(now) if matches!(now.status, Status::Pending(_)) => wait_ready(ctx, kind, d, &now).await?,
        Some(now) => now,
        None => return Err(anyhow!("{} {} disappeared right after it was changed; run apply again", d.kind, d.id)),
    };
    kind.settled(ctx, &now, fields).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{FieldChange, IamActions, Kind, Settings};
    use serde_json::json;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Pending for its first `pending` looks, then Ready; records what `settled` was given.
    struct Settling {
        looks: Mutex<u32>,
        pending: u32,
        gone: bool,
        judged: Mutex<Vec<(Status, Fields)>>,
    }

    impl Kind for Settling {
        fn name(&self) -> &'static str {
            "test:settling"
        }
        type Typed = Fields;
        fn replace_on(&self) -> &'static [&'static str] {
            &[]
        }
        fn settles_after_change(&self, _: &Settings) -> bool {
            true
        }
        async fn settled(&self, _: &Ctx, live: &Observed, fields: &Fields) -> anyhow::Result<()> {
            self.judged.lock().unwrap().push((live.status.clone(), fields.clone()));
            anyhow::ensure!(fields.get("ok") == Some(&json!(true)), "the deployment of this revision failed");
            Ok(())
        }
        async fn observe(&self, _: &Ctx, wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
            let mut looks = self.looks.lock().unwrap();
            *looks += 1;
            if self.gone {
                return Ok(vec![]);
            }
            let status = if *looks <= self.pending { Status::Pending(format!("{}/2 running", *looks - 1)) } else { Status::Ready };
            Ok(wanted
                .iter()
                .map(|d| Observed { status: status.clone(), ..Observed::new(d.kind, d.id.clone(), "phys-1".into(), d.fields.clone()) })
                .collect())
        }
        async fn create(&self, _: &Ctx, _: &str, _: &Fields) -> anyhow::Result<Identity> {
            unreachable!()
        }
        async fn update(&self, _: &Ctx, _: &Observed, _: &Fields, _: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
            unreachable!()
        }
        async fn delete(&self, _: &Ctx, _: &Observed) -> anyhow::Result<()> {
            unreachable!()
        }
        fn iam(&self, _: &str) -> IamActions {
            IamActions::default()
        }
    }

    fn kind(pending: u32, gone: bool) -> Settling {
        Settling { looks: Mutex::new(0), pending, gone, judged: Mutex::new(vec![]) }
    }

    async fn ctx() -> Ctx {
        let settings = Settings { poll_interval: Duration::from_millis(1), ..Settings::new("demo", Default::default()) };
        Ctx::from_env("us-east-1", settings).await
    }

    async fn settle_with(k: &Settling, fields: serde_json::Value) -> anyhow::Result<()> {
        let d = crate::engine::testing::desired("test:settling", "svc", fields.clone());
        settle(&ctx().await, k, &d, &d.fields, &Identity::id("phys-1")).await
    }

    /// The engine waits while the resource is Pending, then the kind judges it as it settled,
    /// with the fields the change sent; the kind's verdict is the change's.
    #[tokio::test]
    async fn a_change_is_waited_for_and_then_judged_by_its_kind() {
        let k = kind(3, false);
        settle_with(&k, json!({"ok": true})).await.unwrap();
        assert_eq!(*k.looks.lock().unwrap(), 4, "three Pending looks, then Ready");
        assert_eq!(*k.judged.lock().unwrap(), vec![(Status::Ready, json!({"ok": true}).as_object().unwrap().clone())]);

        let k = kind(0, false);
        let e = settle_with(&k, json!({"ok": false})).await.unwrap_err().to_string();
        assert_eq!(e, "the deployment of this revision failed");
        assert_eq!(*k.looks.lock().unwrap(), 1, "Ready at once: no wait");

        let k = kind(0, true);
        let e = settle_with(&k, json!({"ok": true})).await.unwrap_err().to_string();
        assert!(e.contains("disappeared right after it was changed"), "{e}");
        assert!(k.judged.lock().unwrap().is_empty());
    }
}
