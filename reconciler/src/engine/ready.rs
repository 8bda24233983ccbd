//! Waiting for a resource to become ready, by the kind's own observe: a resource found still
//! becoming ready (Pending) before dependents use it, and a resource of a kind that settles
//! after a change ([`Kind::settles_after_change`](super::Kind::settles_after_change): a
//! deployment that rolls out after the call returned), which the kind then judges against what
//! was sent ([`Kind::settled`](super::Kind::settled)). The waits poll, print how far the
//! resource is when that changes, and stop at the wait timeout saying where it was.

use super::diff::{for_create, for_update};
use super::observe::{leaving, observe_again, observe_kind};
use super::wait::{until_reporting, Check};
use super::{progress, Ctx, Desired, DynKind, Fields, Identity, Observed, Status};
use anyhow::anyhow;

/// Polls until the resource is no longer Pending and returns it as it is then: Ready, or
/// Degraded (usable but unhealthy: dependents go on; a kind that settles judges it, and the
/// end of apply reports what it found Degraded). Failed, on its way out or gone are errors
/// that say what to do.
pub(super) async fn wait_ready(ctx: &Ctx, kind: &dyn DynKind, d: &Desired, live: &Observed) -> anyhow::Result<Observed> {
    let what = format!("{} {} [{}] to become ready", d.kind, d.id, live.physical_id);
    progress(&format!("waiting for {what}"));
    until_reporting(ctx, &what, || async { judge(d, observe_again(ctx, kind, live).await?) }).await
}

/// What one converge step did to a resource.
pub(super) enum Outcome {
    Created(Identity),
    /// Replaced in place: the live one deleted, a new one created (its create waits for it).
    Replaced(Identity),
    /// The fields changed, and the new identity where the update made one (a new revision).
    Updated(Vec<String>, Option<Identity>),
    Unchanged,
}

/// After a converge step, before dependents run: a change that goes on after its call (a
/// deployment) is waited for and judged; otherwise a resource found still becoming ready
/// (`live`, Pending) is waited for, unless the step replaced it: the old one is gone, and the
/// new one is as ready as its kind's create leaves it. `unchanged`: the step sent nothing.
pub(super) async fn after_step(
    ctx: &Ctx,
    kind: &dyn DynKind,
    d: &Desired,
    fields: &Fields,
    outcome: &Outcome,
    live: Option<&Observed>,
    unchanged: bool,
) -> anyhow::Result<()> {
    let settled = match (outcome, live) {
        (Outcome::Created(id) | Outcome::Replaced(id), _) => settle(ctx, kind, d, fields, &id.physical_id, None).await?,
        (Outcome::Updated(f, id), Some(l)) => {
            let changed_id = id.as_ref().map_or(&l.physical_id, |i| &i.physical_id);
            settle(ctx, kind, d, fields, changed_id, Some((l, f))).await?
        }
        _ => false,
    };
    let replaced = matches!(outcome, Outcome::Replaced(_));
    if let Some(l) = live.filter(|l| !settled && !replaced && matches!(l.status, Status::Pending(_))) {
        wait_found_pending(ctx, kind, d, fields, l, unchanged).await?;
    }
    Ok(())
}

/// A resource found Pending before this run converged it: waited for until it is ready. Where
/// this run left it unchanged and its kind settles after a change, the change an earlier run
/// made (and stopped waiting for) is judged as if this run had made it.
async fn wait_found_pending(
    ctx: &Ctx,
    kind: &dyn DynKind,
    d: &Desired,
    fields: &Fields,
    pending: &Observed,
    unchanged: bool,
) -> anyhow::Result<()> {
    let now = wait_ready(ctx, kind, d, pending).await?;
    if unchanged && settles(ctx, kind, None) {
        kind.settled(ctx, &now, &for_update(fields, &pending.fields)).await?;
    }
    Ok(())
}

/// After a create (`updated: None`) or an update (the live resource and the fields it
/// changed) of a kind that settles after such a change: waits while the resource is Pending,
/// then lets the kind judge what it settled as, against what create or update received
/// (`fields` resolved, markers applied as they were). `changed_id` is the physical id they
/// returned. Whether it waited: `false` where the kind does not settle after this change.
async fn settle(
    ctx: &Ctx,
    kind: &dyn DynKind,
    d: &Desired,
    fields: &Fields,
    changed_id: &str,
    updated: Option<(&Observed, &[String])>,
) -> anyhow::Result<bool> {
    if !settles(ctx, kind, updated.map(|(_, f)| f)) {
        return Ok(false);
    }
    let sent = match updated {
        Some((live, _)) => for_update(fields, &live.fields),
        None => for_create(fields),
    };
    let what = format!("{} {} [{}] to settle after the change", d.kind, d.id, changed_id);
    let now = until_reporting(ctx, &what, || async {
        // Looked for as the plan looks for it (the unresolved node), and picked by its AWS id.
        let found = observe_kind(ctx, kind, &[d]).await?;
        let now = found.into_iter().find(|o| o.physical_id == changed_id || (o.id == d.id && !leaving(o)));
        judge(d, now)
    })
    .await?;
    kind.settled(ctx, &now, &sent).await?;
    Ok(true)
}

/// Whether the engine waits for this change to settle: where such waits are on
/// (`Settings::wait_for_rollouts`; an emulator's rollouts never finish) and the kind says so.
fn settles(ctx: &Ctx, kind: &dyn DynKind, changed: Option<&[String]>) -> bool {
    ctx.settings.wait_for_rollouts && kind.settles_after_change(changed)
}

/// Done once the resource is Ready or Degraded; still waiting while it is Pending (with how far
/// it is); an error otherwise.
fn judge(d: &Desired, now: Option<Observed>) -> anyhow::Result<Check<Observed>> {
    let Some(now) = now else {
        return Err(anyhow!("{} {} disappeared while waiting for it; run apply again", d.kind, d.id));
    };
    match &now.status {
        Status::Ready | Status::Degraded(_) => Ok(Check::Done(now)),
        Status::Pending(how_far) => Ok(Check::Waiting(how_far.clone())),
        Status::Failed(why) => Err(anyhow!("{} {} failed: {why}; the next apply replaces it", d.kind, d.id)),
        Status::Leaving(why) => Err(anyhow!("{} {} is being deleted ({why}); run apply again", d.kind, d.id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{FieldChange, IamActions, Identity, Kind, Settings};
    use serde_json::json;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Answers each look with the next of `states` (the last one repeats; `None`: not there);
    /// records what `settled` was given.
    struct Settling {
        /// Whether changes of this kind settle (a deployment) or are done when the call returns.
        settles: bool,
        states: Vec<Option<Status>>,
        looks: Mutex<usize>,
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
        fn settles_after_change(&self, _: Option<&[String]>) -> bool {
            self.settles
        }
        async fn settled(&self, _: &Ctx, live: &Observed, fields: &Fields) -> anyhow::Result<()> {
            self.judged.lock().unwrap().push((live.status.clone(), fields.clone()));
            anyhow::ensure!(fields.get("ok") == Some(&json!(true)), "the rollout of this revision failed");
            Ok(())
        }
        async fn observe(&self, _: &Ctx, wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
            let mut looks = self.looks.lock().unwrap();
            let state = self.states[(*looks).min(self.states.len() - 1)].clone();
            *looks += 1;
            let found = |d: &&Desired, status: Status| Observed {
                status,
                ..Observed::new(d.kind, d.id.clone(), "phys-1".into(), d.fields.clone())
            };
            Ok(state.map(|st| wanted.iter().map(|d| found(d, st.clone())).collect()).unwrap_or_default())
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

    fn kind(states: Vec<Option<Status>>) -> Settling {
        Settling { settles: true, states, looks: Mutex::new(0), judged: Mutex::new(vec![]) }
    }

    fn pending(n: usize) -> Option<Status> {
        Some(Status::Pending(format!("{n}/2 running")))
    }

    async fn settle_with(k: &Settling, fields: serde_json::Value) -> anyhow::Result<()> {
        let settings = Settings { poll_interval: Duration::from_millis(1), ..Settings::new("demo", Default::default()) };
        let d = crate::engine::testing::desired("test:settling", "svc", fields);
        settle(&Ctx::from_env("us-east-1", settings).await, k, &d, &d.fields, "phys-1", None).await.map(drop)
    }

    /// The engine waits while the resource is Pending, then the kind judges it as it settled,
    /// with the fields the change sent; the kind's verdict is the change's.
    #[tokio::test]
    async fn a_change_is_waited_for_and_then_judged_by_its_kind() {
        let k = kind(vec![pending(0), pending(1), pending(1), Some(Status::Ready)]);
        settle_with(&k, json!({"ok": true})).await.unwrap();
        assert_eq!(*k.looks.lock().unwrap(), 4, "three Pending looks, then Ready");
        assert_eq!(*k.judged.lock().unwrap(), vec![(Status::Ready, json!({"ok": true}).as_object().unwrap().clone())]);

        let k = kind(vec![pending(0), Some(Status::Degraded("rolled back".into()))]);
        let e = settle_with(&k, json!({"ok": false})).await.unwrap_err().to_string();
        assert_eq!(e, "the rollout of this revision failed");
        assert_eq!(k.judged.lock().unwrap()[0].0, Status::Degraded("rolled back".into()), "Degraded is judged, not waited on");
    }

    /// Gone or on its way out right after the change: an error that says so, and nothing for
    /// the kind to judge.
    #[tokio::test]
    async fn a_resource_gone_or_leaving_after_its_change_is_an_error_not_a_verdict() {
        for (states, says) in [
            (vec![None], "disappeared while waiting"),
            (vec![pending(0), Some(Status::Leaving("draining".into()))], "is being deleted (draining)"),
        ] {
            let k = kind(states);
            let e = settle_with(&k, json!({"ok": true})).await.unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
            assert!(k.judged.lock().unwrap().is_empty());
        }
    }

    /// A resource found Pending (a NAT gateway still starting) is waited for before dependents
    /// run, whether the step left it unchanged or recovered it as an earlier attempt's create.
    /// Where the step replaced it, the old one is gone and nothing waits on it: before, the
    /// wait looked for the deleted one and failed the apply ("disappeared while waiting").
    #[tokio::test]
    async fn a_pending_resource_is_waited_for_unless_the_step_replaced_it() {
        let settings = Settings { poll_interval: Duration::from_millis(1), ..Settings::new("demo", Default::default()) };
        let ctx = Ctx::from_env("us-east-1", settings).await;
        let d = crate::engine::testing::desired("test:settling", "nat", json!({}));
        let found =
            Observed { status: Status::Pending("pending".into()), ..crate::engine::testing::live(d.kind, "nat", "phys-1", json!({})) };
        let cases =
            [(Outcome::Unchanged, 2), (Outcome::Created(Identity::id("phys-1")), 2), (Outcome::Replaced(Identity::id("phys-2")), 0)];
        for (outcome, looks) in cases {
            // Looked at: Pending once more, then Ready. Replaced: not looked at at all.
            let k = Settling { settles: false, ..kind(vec![pending(0), Some(Status::Ready)]) };
            let unchanged = matches!(outcome, Outcome::Unchanged);
            after_step(&ctx, &k, &d, &d.fields, &outcome, Some(&found), unchanged).await.unwrap();
            assert_eq!(
                *k.looks.lock().unwrap(),
                looks,
                "looks for {}",
                match outcome {
                    Outcome::Created(id) | Outcome::Replaced(id) => id.physical_id,
                    _ => "unchanged".into(),
                }
            );
        }
    }
}
