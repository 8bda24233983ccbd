//! Property tests of the engine against an in-memory cloud (issue #23 §2).
//!
//! Four fake kinds with dependencies, AWS's rules enforced by the fake cloud the way AWS
//! enforces them (a create or update naming something that is not there fails; a delete of
//! something another resource still uses fails with `DependencyViolation`), random desired
//! states, random out-of-band changes (a resource deleted, a field changed, a duplicate left
//! by an interrupted create, a look-alike the stack does not own) and random failures (a call
//! refused, a 503 before anything happened, an answer lost after the change was made, the
//! process killed right after a mutation). Every breach of AWS's rules the fake sees is a
//! violation; the properties:
//! - no violation ever: deletes go dependents-first, a replacement never leaves a dependent
//!   pointing at a deleted resource, nothing the stack does not own is changed or deleted;
//! - after an apply that succeeded: a new plan is empty, one live resource per logical id,
//!   exactly the spec's;
//! - after any sequence of failed, killed and refused runs, one clean apply (or, where the
//!   change needs it, destroy then apply) converges; destroy then leaves only what others own.

use super::{Ctx, Desired, Settings};
use crate::changes::{Action, Plan};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

mod cloud;
mod regressions;

use cloud::*;

/// A desired state, by index (references are taken modulo what exists, so every generated
/// spec is valid).
#[derive(Debug, Clone)]
struct Spec {
    nets: Vec<(u8, u8)>,
    subs: Vec<(usize, u8)>,
    apps: Vec<(usize, u8, u8)>,
    edges: Vec<(usize, u8)>,
    revs: Vec<u8>,
    svcs: Vec<(usize, u8)>,
}

impl Spec {
    fn desired(&self) -> Vec<Desired> {
        let node = |kind, id: String, fields: Value| Desired { kind, id, fields: fields.as_object().unwrap().clone(), after: vec![] };
        let mut out = Vec::new();
        for (i, image) in self.revs.iter().enumerate() {
            out.push(node("rev", format!("rev{i}"), json!({"image": image})));
        }
        for (i, (rev, count)) in self.svcs.iter().enumerate().filter(|_| !self.revs.is_empty()) {
            let rev = format!("rev{}", rev % self.revs.len());
            out.push(node("svc", format!("svc{i}"), json!({"def": super::reference(&rev), "count": count})));
        }
        for (i, (cidr, label)) in self.nets.iter().enumerate() {
            out.push(node("net", format!("net{i}"), json!({"cidr": format!("10.{cidr}.0.0/16"), "label": label})));
        }
        for (i, (net, size)) in self.subs.iter().enumerate() {
            let net = format!("net{}", net % self.nets.len());
            out.push(node("sub", format!("sub{i}"), json!({"net": super::reference(&net), "size": size})));
        }
        if self.subs.is_empty() {
            return out;
        }
        for (i, (sub, flavor, image)) in self.apps.iter().enumerate() {
            let sub = format!("sub{}", sub % self.subs.len());
            out.push(node("app", format!("app{i}"), json!({"sub": super::reference(&sub), "flavor": flavor, "image": image})));
        }
        if self.apps.is_empty() {
            return out;
        }
        for (i, (app, route)) in self.edges.iter().enumerate() {
            let app = format!("app{}", app % self.apps.len());
            out.push(node("edge", format!("edge{i}"), json!({"app": super::reference(&app), "route": route})));
        }
        out
    }
}

/// Changes made behind the engine's back, each picking its victim by index among what is there.
#[derive(Debug, Clone)]
enum Perturb {
    /// Deleted (only what nothing uses: AWS refuses the rest).
    Delete(usize),
    /// A field that is not a reference set to another value.
    Change(usize, u8),
    /// A second copy with the same ownership tags (an interrupted create's).
    Duplicate(usize),
    /// A copy the stack does not own: another stack's (true) or untagged.
    LookAlike(usize, bool),
}

#[derive(Debug, Clone)]
enum Step {
    /// A run of `apply` with faults by mutation number.
    Apply(Spec, Vec<(u64, Fault)>),
    /// The same, unattended (`--auto-approve` without `--allow-destructive`): destructive
    /// steps held.
    Unattended(Spec, Vec<(u64, Fault)>),
    Perturb(Perturb),
}

fn perturb(cloud: &mut Cloud, p: &Perturb) {
    let owned: Vec<usize> = (0..cloud.res.len())
        .filter(|&i| cloud.res[i].alive && cloud.res[i].listed && cloud.res[i].owner.as_ref().is_some_and(|(s, _)| s == STACK))
        .collect();
    if owned.is_empty() {
        return;
    }
    match *p {
        Perturb::Delete(n) => {
            let free: Vec<usize> = owned.iter().copied().filter(|&i| cloud.users_of(&cloud.res[i].phys).is_empty()).collect();
            if let Some(&i) = free.get(n % free.len().max(1)) {
                cloud.res[i].alive = false;
            }
        }
        Perturb::Change(n, v) => {
            let i = owned[n % owned.len()];
            let field = match cloud.res[i].kind {
                "net" if v % 2 == 0 => "cidr",
                "net" => "label",
                "sub" => "size",
                "app" if v % 2 == 0 => "flavor",
                "app" | "rev" => "image",
                "svc" => "count",
                _ => "route",
            };
            let value = if field == "cidr" { json!(format!("10.{}.0.0/16", 10 + v)) } else { json!(10 + v) };
            cloud.res[i].fields.insert(field.into(), value);
        }
        Perturb::Duplicate(n) => {
            let mut copy = cloud.res[owned[n % owned.len()]].clone();
            copy.phys = cloud.new_phys(copy.kind);
            copy.created = cloud.next as i64;
            cloud.res.push(copy);
        }
        Perturb::LookAlike(n, other_stack) => {
            let mut copy = cloud.res[owned[n % owned.len()]].clone();
            copy.phys = cloud.new_phys(copy.kind);
            copy.owner = other_stack.then(|| ("another-stack".to_string(), copy.owner.clone().unwrap().1));
            // Its references are its own stack's (not ours: it would hold our resources).
            for f in ["net", "sub", "app", "def"] {
                if copy.fields.contains_key(f) {
                    copy.fields.insert(f.into(), json!(format!("foreign-{f}")));
                }
            }
            cloud.res.push(copy);
        }
    }
}

fn settings() -> Settings {
    Settings {
        poll_interval: Duration::from_millis(1),
        wait_timeout: Duration::from_secs(5),
        retry_base: Duration::from_millis(1),
        propagation_timeout: Duration::from_millis(50),
        conflict_timeout: Duration::from_millis(20),
        listing_lag: Duration::from_millis(3),
        ..Settings::new(STACK, BTreeMap::new())
    }
}

enum Run {
    Done(anyhow::Result<super::ApplyReport>),
    Killed,
}

/// One `apply` process: observe, plan, apply; faults numbered from this run's first mutation.
/// Returns how it ended and the plan it applied (none when observe or plan failed).
async fn apply_run(cloud: &Shared, desired: &[Desired], faults: &[(u64, Fault)], how: super::Destructive) -> (Run, Option<Plan>) {
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel();
    {
        let mut c = cloud.lock().unwrap();
        (c.mutations, c.killed, c.kill) = (0, false, Some(kill_tx));
        c.faults = faults.iter().copied().collect();
        c.touched.clear();
        c.log.push(format!("-- apply ({how:?}) of {} resources, faults {faults:?}", desired.len()));
    }
    let ctx = Ctx::from_env("us-east-1", settings()).await;
    let kinds = kinds(cloud);
    let none = BTreeMap::new();
    let observed = match super::observe(&ctx, &kinds, desired).await {
        Ok(o) => o,
        Err(e) => return (Run::Done(Err(e)), None),
    };
    let plan = match super::plan(STACK, &kinds, desired, &observed, &none) {
        Ok(p) => p,
        Err(e) => return (Run::Done(Err(e)), None),
    };
    let run = tokio::select! {
        r = super::apply(&ctx, &kinds, desired, &observed, &none, &plan, how) => Run::Done(r),
        _ = kill_rx => Run::Killed,
    };
    (run, Some(plan))
}

fn refused(run: &Run) -> bool {
    matches!(run, Run::Done(Err(e)) if format!("{e:#}").contains("refusing to apply"))
}

/// What the plan said against what the apply did: it refuses exactly when the plan said it
/// would, before any change; without faults it succeeds unless it refuses.
fn check_attended(cloud: &Shared, run: &Run, plan: &Plan, faults: &[(u64, Fault)]) -> Result<(), String> {
    let said = plan.notes.iter().any(|n| n.contains("apply refuses"));
    let mutations = cloud.lock().unwrap().mutations;
    if refused(run) != said {
        let (plan_said, apply_did) = (if said { "said" } else { "did not say" }, if refused(run) { "did" } else { "did not" });
        return Err(format!("the plan {plan_said} that apply refuses, and apply {apply_did}: {:?}", plan.notes));
    }
    if refused(run) && mutations != 0 {
        return Err(format!("a refused apply made {mutations} change(s)"));
    }
    if let (true, Run::Done(Err(e))) = (faults.is_empty() && !refused(run), run) {
        return Err(format!("an apply without faults failed: {e:#}"));
    }
    Ok(())
}

/// An unattended apply deletes nothing but unused duplicates and replaces nothing; when it
/// succeeds, what is left to do is what it held and what follows from a held replacement.
async fn check_unattended(cloud: &Shared, desired: &[Desired], run: &Run, plan: &Plan) -> Result<(), String> {
    let touched = cloud.lock().unwrap().touched.clone();
    for (op, what) in &touched {
        let planned = |r: &&crate::changes::ResourcePlan| match *op {
            "delete" => r.physical_id.as_deref() == Some(what.as_str()),
            _ => r.id == *what && desired.iter().any(|d| d.id == r.id && d.kind == r.kind),
        };
        let action = plan.resources.iter().find(planned).map(|r| r.action.clone());
        let fine = match (*op, &action) {
            ("delete", Some(Action::Delete { reason })) => reason == crate::changes::DUPLICATE,
            ("create", Some(Action::Create)) => true,
            _ => false,
        };
        if !fine {
            return Err(format!("an unattended apply did {op} {what}, planned as {action:?}"));
        }
    }
    if let Run::Done(Ok(_)) = run {
        let after = plan_now(cloud, desired).await?;
        // Left: the held steps, and changes that follow from a held replacement only.
        if let Some(r) = after.resources.iter().find(|r| matches!(r.action, Action::Create | Action::Update) && r.follows.is_none()) {
            return Err(format!("after a successful unattended apply, {} {} is still to {:?}", r.kind, r.id, r.action));
        }
    }
    Ok(())
}

/// A plan of `desired` against the cloud as it is now (a new process's).
async fn plan_now(cloud: &Shared, desired: &[Desired]) -> Result<Plan, String> {
    let ctx = Ctx::from_env("us-east-1", settings()).await;
    let kinds = kinds(cloud);
    let observed = super::observe(&ctx, &kinds, desired).await.map_err(|e| format!("{e:#}"))?;
    super::plan(STACK, &kinds, desired, &observed, &BTreeMap::new()).map_err(|e| format!("{e:#}"))
}

async fn destroy_run(cloud: &Shared) -> anyhow::Result<(usize, usize)> {
    cloud.lock().unwrap().log.push("-- destroy".into());
    let ctx = Ctx::from_env("us-east-1", settings()).await;
    let kinds = kinds(cloud);
    let (observed, _) = super::observe_owned(&ctx, &kinds, &[]).await?;
    super::destroy(&ctx, &kinds, &observed, &[]).await
}

/// The stack matches `desired` exactly: a new plan is empty, one live resource per logical
/// id and no other, none pointing at anything gone.
async fn check_converged(cloud: &Shared, desired: &[Desired]) -> Result<(), String> {
    let plan = plan_now(cloud, desired).await?;
    let changes: Vec<String> =
        plan.resources.iter().filter(|r| r.action != Action::NoOp).map(|r| format!("{} {}: {:?}", r.kind, r.id, r.action)).collect();
    if !changes.is_empty() {
        return Err(format!("a plan after a successful apply is not empty: {changes:?}"));
    }
    let c = cloud.lock().unwrap();
    let mut ids: Vec<&str> = c.owned_alive().map(|r| r.owner.as_ref().unwrap().1.as_str()).collect();
    ids.sort();
    let mut want: Vec<&str> = desired.iter().map(|d| d.id.as_str()).collect();
    want.sort();
    if ids != want {
        return Err(format!("live resources by logical id {ids:?}, the spec's {want:?}"));
    }
    for r in c.owned_alive() {
        for v in r.fields.values().filter_map(Value::as_str).filter(|v| v.contains('-') && !v.contains('/')) {
            if !c.alive(v) {
                return Err(format!("{} points at {v}, which is gone", r.phys));
            }
        }
    }
    Ok(())
}

fn violations(cloud: &Shared) -> Result<(), String> {
    let c = cloud.lock().unwrap();
    if c.violations.is_empty() {
        return Ok(());
    }
    Err(format!("{:?}\nwhat happened:\n{}", c.violations, c.log.join("\n")))
}

/// Unowned resources as they are (phys, fields, alive): never to change.
fn unowned(cloud: &Shared) -> Vec<(String, Value, bool)> {
    let c = cloud.lock().unwrap();
    c.res
        .iter()
        .filter(|r| r.owner.as_ref().is_none_or(|(s, _)| s != STACK))
        .map(|r| (r.phys.clone(), Value::Object(r.fields.clone()), r.alive))
        .collect()
}

/// The whole scenario: the steps, then a clean apply of `last` (destroy first where the change
/// needs it, as the refusal says), then destroy.
async fn scenario(steps: &[Step], last: &Spec) -> Result<(), String> {
    let cloud: Shared = Arc::default();
    for step in steps {
        match step {
            Step::Perturb(p) => perturb(&mut cloud.lock().unwrap(), p),
            Step::Apply(spec, faults) | Step::Unattended(spec, faults) => {
                let desired = spec.desired();
                let before = unowned(&cloud);
                let unattended = matches!(step, Step::Unattended(..));
                let how = if unattended { super::Destructive::Hold } else { super::Destructive::Allow };
                let (run, plan) = apply_run(&cloud, &desired, faults, how).await;
                let log = || cloud.lock().unwrap().log.join("\n");
                violations(&cloud)?;
                if unowned(&cloud) != before {
                    return Err("a resource the stack does not own changed".into());
                }
                if let Some(plan) = &plan {
                    let checked = if unattended {
                        check_unattended(&cloud, &desired, &run, plan).await
                    } else {
                        check_attended(&cloud, &run, plan, faults)
                    };
                    checked.map_err(|e| format!("{e}\nwhat happened:\n{}", log()))?;
                }
                if unattended {
                    continue;
                }
                if let Run::Done(Ok(_)) = run {
                    check_converged(&cloud, &desired)
                        .await
                        .map_err(|e| format!("{e}\nwhat happened:\n{}", cloud.lock().unwrap().log.join("\n")))?;
                }
            }
        }
    }
    let desired = last.desired();
    let before = unowned(&cloud);
    let clean = match apply_run(&cloud, &desired, &[], super::Destructive::Allow).await.0 {
        Run::Done(Err(e)) if format!("{e:#}").contains("refusing to apply") => {
            let mutations = cloud.lock().unwrap().mutations;
            if mutations != 0 {
                return Err(format!("a refused apply changed {mutations} resource(s)"));
            }
            destroy_run(&cloud).await.map_err(|e| format!("destroy before a delete-first change: {e:#}"))?;
            apply_run(&cloud, &desired, &[], super::Destructive::Allow).await.0
        }
        other => other,
    };
    let log = || cloud.lock().unwrap().log.join("\n");
    match clean {
        Run::Done(Ok(_)) => {}
        Run::Done(Err(e)) => return Err(format!("a clean apply after the steps failed: {e:#}\nwhat happened:\n{}", log())),
        Run::Killed => unreachable!("no faults"),
    }
    violations(&cloud)?;
    check_converged(&cloud, &desired).await.map_err(|e| format!("{e}\nwhat happened:\n{}", log()))?;
    destroy_run(&cloud).await.map_err(|e| format!("destroy: {e:#}\nwhat happened:\n{}", log()))?;
    violations(&cloud)?;
    if cloud.lock().unwrap().owned_alive().count() > 0 {
        return Err(format!("destroy left resources of the stack\nwhat happened:\n{}", log()));
    }
    if unowned(&cloud) != before {
        return Err("a resource the stack does not own changed".into());
    }
    Ok(())
}

fn any_spec() -> impl Strategy<Value = Spec> {
    (
        prop::collection::vec((0..3u8, 0..3u8), 1..=2),
        prop::collection::vec((0..4usize, 0..3u8), 0..=3),
        prop::collection::vec((0..4usize, 0..2u8, 0..3u8), 0..=2),
        prop::collection::vec((0..4usize, 0..2u8), 0..=2),
        prop::collection::vec(0..3u8, 0..=2),
        prop::collection::vec((0..2usize, 0..3u8), 0..=2),
    )
        .prop_map(|(nets, subs, apps, edges, revs, svcs)| Spec { nets, subs, apps, edges, revs, svcs })
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![Just(Fault::Refused), Just(Fault::Unavailable), Just(Fault::LostAnswer), Just(Fault::Kill)]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (any_spec(), prop::collection::vec((1..14u64, fault()), 0..=2)).prop_map(|(s, f)| Step::Apply(s, f)),
        1 => (any_spec(), prop::collection::vec((1..14u64, fault()), 0..=1)).prop_map(|(s, f)| Step::Unattended(s, f)),
        1 => (0..8usize).prop_map(|n| Step::Perturb(Perturb::Delete(n))),
        1 => (0..8usize, 0..4u8).prop_map(|(n, v)| Step::Perturb(Perturb::Change(n, v))),
        1 => (0..8usize).prop_map(|n| Step::Perturb(Perturb::Duplicate(n))),
        1 => (0..8usize, any::<bool>()).prop_map(|(n, b)| Step::Perturb(Perturb::LookAlike(n, b))),
    ]
}

/// `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
}

proptest! {
    // PROPTEST_CASES=20000 for a longer search.
    #![proptest_config(ProptestConfig { cases: cases(256), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_converges_whatever_happened_before(steps in prop::collection::vec(step(), 1..=5), last in any_spec()) {
        if let Err(e) = block_on(scenario(&steps, &last)) {
            prop_assert!(false, "{e}");
        }
    }
}
