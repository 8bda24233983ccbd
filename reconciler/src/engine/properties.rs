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

use super::retry::{AwsError, ErrorClass};
use super::{Ctx, Desired, DynKind, FieldChange, Fields, Identity, Kind, Observed, Replacement, Settings};
use crate::changes::{Action, Plan};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const STACK: &str = "prop";

/// One resource in the fake cloud. `owner` is (stack, logical id), from its tags.
#[derive(Debug, Clone)]
struct Res {
    kind: &'static str,
    phys: String,
    owner: Option<(String, String)>,
    fields: Fields,
    created: i64,
    alive: bool,
    /// Listed by observe: an older revision of a kind that makes one per update is alive (what
    /// uses it keeps working) but no longer listed, as ECS lists a family's latest revision.
    listed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Refused, nothing happened (validation, a limit).
    Refused,
    /// A 503 before anything happened.
    Unavailable,
    /// The change was made; its answer was lost (a 5xx or a dropped connection).
    LostAnswer,
    /// The change was made; then the process died.
    Kill,
}

#[derive(Default)]
struct Cloud {
    res: Vec<Res>,
    next: u64,
    /// Mutations in the current run, and the faults injected by their number (from 1).
    mutations: u64,
    faults: BTreeMap<u64, Fault>,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    killed: bool,
    /// What the engine did, in order (for the failure message).
    log: Vec<String>,
    /// This run's changes that took effect: ("create", logical id) and ("delete", AWS id).
    touched: Vec<(&'static str, String)>,
    violations: Vec<String>,
}

impl Cloud {
    fn new_phys(&mut self, kind: &str) -> String {
        self.next += 1;
        format!("{kind}-{:04}", self.next)
    }
    fn alive(&self, phys: &str) -> bool {
        self.res.iter().any(|r| r.alive && r.phys == phys)
    }
    /// Alive resources (anyone's) whose fields name `phys`.
    fn users_of(&self, phys: &str) -> Vec<String> {
        self.res.iter().filter(|r| r.alive && r.fields.values().any(|v| v.as_str() == Some(phys))).map(|r| r.phys.clone()).collect()
    }
    fn owned_alive(&self) -> impl Iterator<Item = &Res> {
        self.res.iter().filter(|r| r.alive && r.listed && r.owner.as_ref().is_some_and(|(s, _)| s == STACK))
    }
}

type Shared = Arc<Mutex<Cloud>>;

fn aws(call: &str, class: ErrorClass, code: &str, msg: &str) -> anyhow::Error {
    anyhow::Error::new(AwsError::new(call, Some(code.into()), msg.into(), class))
}

/// A kind whose reference fields (`refs`) name other resources by their AWS id.
struct CloudKind {
    name: &'static str,
    refs: &'static [&'static str],
    replace_on: &'static [&'static str],
    replacement: Replacement,
    /// Each update registers a new revision with a new AWS id (a task definition).
    revisions: bool,
    cloud: Shared,
}

impl CloudKind {
    /// The fields' references must name live resources (AWS refuses otherwise).
    fn check_refs(&self, c: &mut Cloud, call: &str, fields: &Fields) -> anyhow::Result<()> {
        for f in self.refs {
            let Some(target) = fields.get(*f).and_then(Value::as_str) else { continue };
            if !c.alive(target) {
                c.violations.push(format!("{call} {} names `{f}` = {target}, which is not there", self.name));
                return Err(aws(call, ErrorClass::Final, "InvalidParameterValue", "the referenced resource does not exist"));
            }
        }
        Ok(())
    }

    /// One mutation, with the fault injected for its number in this run.
    async fn mutate<T: Send>(&self, call: String, op: impl FnOnce(&mut Cloud) -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
        match self.mutate_now(&call, op) {
            // The process is dead: nothing answers.
            None => std::future::pending().await,
            Some((Some(Fault::LostAnswer), Ok(_))) => {
                Err(aws(&call, ErrorClass::Retryable, "InternalError", "injected: the answer was lost"))
            }
            Some((_, result)) => result,
        }
    }

    /// The mutation's effect (none after a kill: `None`), and its fault.
    fn mutate_now<T>(&self, call: &str, op: impl FnOnce(&mut Cloud) -> anyhow::Result<T>) -> Option<(Option<Fault>, anyhow::Result<T>)> {
        let mut c = self.cloud.lock().unwrap();
        if c.killed {
            return None;
        }
        c.mutations += 1;
        let fault = c.faults.get(&c.mutations).copied();
        let result = match fault {
            Some(Fault::Refused) => Err(aws(call, ErrorClass::Final, "ValidationException", "injected: refused")),
            Some(Fault::Unavailable) => {
                Err(aws(call, ErrorClass::Retryable, "ServiceUnavailable", "injected: 503 before anything happened"))
            }
            _ => op(&mut c),
        };
        let how = fault.map(|f| format!(" then {f:?}")).unwrap_or_default();
        c.log.push(format!("{call} {}{how}", if result.is_ok() { "ok" } else { "failed" }));
        if fault == Some(Fault::Kill) {
            c.killed = true;
            if let Some(kill) = c.kill.take() {
                let _ = kill.send(());
            }
            return None;
        }
        Some((fault, result))
    }
}

impl Kind for CloudKind {
    fn name(&self) -> &'static str {
        self.name
    }
    /// Untyped: the fake kinds take any fields.
    fn check_fields(&self, _: &Fields) -> anyhow::Result<()> {
        Ok(())
    }
    fn replace_on(&self) -> &'static [&'static str] {
        self.replace_on
    }
    fn replacement(&self) -> Replacement {
        self.replacement
    }
    fn updates_yield_new_identity(&self) -> bool {
        self.revisions
    }
    async fn observe(&self, _: &Ctx, _: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let c = self.cloud.lock().unwrap();
        Ok(c.owned_alive()
            .filter(|r| r.kind == self.name)
            .map(|r| {
                let id = r.owner.as_ref().map(|(_, id)| id.clone()).unwrap_or_default();
                Observed { created: Some(r.created), ..Observed::new(self.name, id, r.phys.clone(), r.fields.clone()) }
            })
            .collect())
    }
    async fn create(&self, _: &Ctx, id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        self.mutate(format!("create {id}"), move |c| {
            self.check_refs(c, "create", fields)?;
            let phys = c.new_phys(self.name);
            let created = c.next as i64;
            c.res.push(Res {
                kind: self.name,
                phys: phys.clone(),
                owner: Some((STACK.into(), id.into())),
                fields: fields.clone(),
                created,
                alive: true,
                listed: true,
            });
            c.touched.push(("create", id.to_string()));
            Ok(Identity::id(phys))
        })
        .await
    }
    async fn update(&self, _: &Ctx, live: &Observed, fields: &Fields, changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        self.mutate(format!("update {} [{}]", live.id, live.physical_id), move |c| {
            if let Some(f) = changes.iter().find(|ch| self.replace_on.contains(&ch.field.as_str())) {
                c.violations.push(format!("update {} [{}] changes `{}`, which cannot change in place", live.id, live.physical_id, f.field));
            }
            self.check_refs(c, "update", fields)?;
            let Some(i) = c.res.iter().position(|r| r.alive && r.phys == live.physical_id) else {
                c.violations.push(format!("update {} [{}]: it is not there", live.id, live.physical_id));
                return Err(aws("update", ErrorClass::Gone, "NotFound", "no such resource"));
            };
            if c.res[i].owner.as_ref().map(|(s, _)| s.as_str()) != Some(STACK) {
                c.violations.push(format!("update {} [{}]: not the stack's", live.id, live.physical_id));
            }
            if self.revisions {
                let mut next = c.res[i].clone();
                c.res[i].listed = false;
                next.fields.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
                next.phys = c.new_phys(self.name);
                next.created = c.next as i64;
                let phys = next.phys.clone();
                c.res.push(next);
                return Ok(Some(Identity::id(phys)));
            }
            for (k, v) in fields {
                c.res[i].fields.insert(k.clone(), v.clone());
            }
            Ok(None)
        })
        .await
    }
    async fn delete(&self, _: &Ctx, live: &Observed) -> anyhow::Result<()> {
        self.mutate(format!("delete {} [{}]", live.id, live.physical_id), move |c| {
            let Some(i) = c.res.iter().position(|r| r.alive && r.phys == live.physical_id) else {
                return Err(aws("delete", ErrorClass::Gone, "NotFound", "no such resource"));
            };
            if c.res[i].owner.as_ref().map(|(s, _)| s.as_str()) != Some(STACK) {
                c.violations.push(format!("delete {} [{}]: not the stack's", live.id, live.physical_id));
            }
            let users = c.users_of(&live.physical_id);
            if !users.is_empty() {
                c.violations.push(format!("delete {} [{}] while {users:?} use it", live.id, live.physical_id));
                return Err(aws("delete", ErrorClass::Conflict, "DependencyViolation", "in use"));
            }
            c.res[i].alive = false;
            c.touched.push(("delete", live.physical_id.clone()));
            Ok(())
        })
        .await
    }
    fn iam(&self, _: &str) -> super::IamActions {
        super::IamActions::default()
    }
}

/// A network (its CIDR cannot change in place), subnets in it, apps in a subnet
/// (replaced create-before-destroy), edges that point at an app and follow it in place; apart,
/// revisions (a task definition: each update a new AWS id) and services that follow the latest.
fn kinds(cloud: &Shared) -> Vec<Box<dyn DynKind>> {
    let kind = |name, refs, replace_on, replacement, revisions| {
        Box::new(CloudKind { name, refs, replace_on, replacement, revisions, cloud: cloud.clone() }) as Box<dyn DynKind>
    };
    vec![
        kind("net", &[], &["cidr"], Replacement::DeleteBeforeCreate, false),
        kind("sub", &["net"], &["net"], Replacement::DeleteBeforeCreate, false),
        kind("app", &["sub"], &["sub", "flavor"], Replacement::CreateBeforeDestroy, false),
        kind("edge", &["app"], &[], Replacement::DeleteBeforeCreate, false),
        kind("rev", &[], &[], Replacement::DeleteBeforeCreate, true),
        kind("svc", &["def"], &[], Replacement::DeleteBeforeCreate, false),
    ]
}

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

/// The shrunk failures the property test found, one test each (each failed before its fix).
mod regressions {
    use super::*;

    fn spec(nets: &[(u8, u8)], subs: &[(usize, u8)], apps: &[(usize, u8, u8)], edges: &[(usize, u8)]) -> Spec {
        Spec { nets: nets.to_vec(), subs: subs.to_vec(), apps: apps.to_vec(), edges: edges.to_vec(), revs: vec![], svcs: vec![] }
    }
    fn apply(s: Spec) -> Step {
        Step::Apply(s, vec![])
    }
    /// A resource of the stack put in the cloud directly; its AWS id.
    fn seed(cloud: &Shared, kind: &'static str, id: &str, fields: Value) -> String {
        let mut c = cloud.lock().unwrap();
        let phys = c.new_phys(kind);
        let created = c.next as i64;
        let (owner, fields) = (Some((STACK.to_string(), id.to_string())), fields.as_object().unwrap().clone());
        c.res.push(Res { kind, phys: phys.clone(), owner, fields, created, alive: true, listed: true });
        phys
    }

    fn check(steps: Vec<Step>, last: Spec) {
        if let Err(e) = block_on(scenario(&steps, &last)) {
            panic!("{e}");
        }
    }

    /// A VPC replaced (new CIDR) while a subnet in it leaves the spec: the subnet goes first
    /// (it used to be deleted at the end, after the VPC's delete had failed: DependencyViolation).
    #[test]
    fn what_leaves_the_spec_goes_before_the_delete_first_replacement_it_sits_in() {
        check(vec![apply(spec(&[(2, 0)], &[(0, 0)], &[], &[]))], spec(&[(0, 0)], &[], &[], &[]));
    }

    /// An edge the spec moves to a new app still uses the old one, which goes delete-first with
    /// its subnet: refused before any change (it used to delete under the edge).
    #[test]
    fn a_dependent_moved_elsewhere_still_holds_what_it_uses_until_its_update() {
        check(
            vec![
                apply(spec(&[(0, 0), (0, 0)], &[(0, 0)], &[(0, 0, 0)], &[(0, 0)])),
                apply(spec(&[(1, 0)], &[(0, 0)], &[(0, 0, 0), (0, 0, 0)], &[(1, 0)])),
            ],
            spec(&[(0, 0)], &[], &[], &[]),
        );
    }

    /// A subnet leaving the spec in the VPC being replaced still holds an app that moves to
    /// another subnet (a delete-first replacement too): the app's old half goes before it.
    #[test]
    fn what_leaves_early_goes_after_the_old_halves_in_it() {
        check(vec![apply(spec(&[(0, 0)], &[(0, 0), (0, 0)], &[(1, 0, 0)], &[]))], spec(&[(1, 0)], &[(0, 0)], &[(0, 0, 0)], &[]));
    }

    /// The create of a create-before-destroy replacement's new half loses its answer: looking
    /// again finds the new half, not the old one (which it used to take for the new one, delete,
    /// and create a third).
    #[test]
    fn a_lost_answer_to_a_replacements_create_finds_the_new_half() {
        check(
            vec![
                apply(spec(&[(0, 0), (2, 0)], &[(1, 0)], &[(0, 1, 0)], &[])),
                Step::Apply(spec(&[(1, 0), (2, 1)], &[(1, 0)], &[(0, 0, 0)], &[]), vec![(4, Fault::LostAnswer)]),
            ],
            spec(&[(0, 0)], &[], &[], &[]),
        );
    }

    /// An app replaced create-before-destroy whose old half sits in a subnet that goes with a
    /// replaced VPC cannot outlive it: it goes delete-first.
    #[test]
    fn a_create_before_destroy_old_half_in_what_goes_first_goes_first_too() {
        check(
            vec![
                apply(spec(&[(1, 0), (1, 0)], &[], &[], &[])),
                Step::Apply(spec(&[(0, 0), (0, 0)], &[(0, 0), (0, 0), (0, 0)], &[(2, 0, 0), (0, 0, 0)], &[]), vec![(5, Fault::Refused)]),
                apply(spec(&[(1, 0)], &[(0, 0)], &[(0, 0, 0)], &[])),
            ],
            spec(&[(0, 0)], &[], &[], &[]),
        );
    }

    /// A duplicate that only what leaves the spec still uses is deleted in the same run, after
    /// them (it used to stay until the next run: a plan after a successful apply was not empty).
    #[test]
    fn a_duplicate_used_only_by_what_leaves_goes_in_the_same_run() {
        check(
            vec![
                apply(spec(&[(0, 2)], &[], &[], &[])),
                Step::Perturb(Perturb::Duplicate(0)),
                Step::Apply(spec(&[(1, 0)], &[(0, 0)], &[(0, 0, 0)], &[]), vec![(4, Fault::Refused)]),
            ],
            spec(&[(0, 2)], &[], &[], &[]),
        );
    }

    /// An app leaving the spec sits in a subnet replaced delete-first, and an edge that stays
    /// still uses it: refused before any change (it used to delete the app under the edge).
    #[test]
    fn what_stays_and_uses_what_leaves_early_refuses_the_change() {
        check(
            vec![
                apply(spec(&[(0, 0), (0, 0)], &[(0, 0), (2, 0), (0, 0)], &[(2, 0, 0), (0, 0, 0)], &[(1, 0)])),
                Step::Perturb(Perturb::Delete(6)),
            ],
            spec(&[(1, 0)], &[(0, 0)], &[(0, 0, 0)], &[(0, 0)]),
        );
    }

    /// A VPC replaced delete-first loses the answer to its new half's create while a duplicate
    /// of the old one is still there: looking again finds the new one, not the duplicate (it
    /// took the duplicate for it, replaced it, and left two).
    #[test]
    fn a_lost_answer_is_never_taken_for_a_duplicate() {
        check(
            vec![
                apply(spec(&[(1, 0), (0, 0)], &[], &[], &[])),
                Step::Perturb(Perturb::Delete(1)),
                Step::Perturb(Perturb::Duplicate(0)),
                Step::Apply(spec(&[(0, 0)], &[], &[], &[]), vec![(2, Fault::LostAnswer)]),
            ],
            spec(&[(0, 0)], &[], &[], &[]),
        );
    }

    /// A duplicate VPC that only a subnet being replaced still uses goes in the same run, after
    /// the subnet's old half.
    #[test]
    fn a_duplicate_used_only_by_what_is_replaced_goes_in_the_same_run() {
        check(
            vec![
                apply(spec(&[(1, 2)], &[], &[], &[])),
                Step::Perturb(Perturb::Duplicate(0)),
                Step::Apply(spec(&[(0, 0)], &[(0, 0)], &[(0, 0, 0)], &[]), vec![(4, Fault::Refused)]),
            ],
            spec(&[(1, 2)], &[(0, 0)], &[], &[]),
        );
    }

    /// A revision's update (a new task definition revision) loses its answer: looking again
    /// finds the new revision, and the service created after it uses it (it used the old one:
    /// a plan after a successful apply was not empty).
    #[test]
    fn a_new_revision_whose_answer_was_lost_is_what_dependents_get() {
        let revs = |revs: &[u8], svcs: &[(usize, u8)]| Spec { revs: revs.to_vec(), svcs: svcs.to_vec(), ..spec(&[(1, 0)], &[], &[], &[]) };
        check(
            vec![apply(revs(&[1], &[])), Step::Apply(revs(&[0], &[(0, 0)]), vec![(1, Fault::LostAnswer)])],
            spec(&[(0, 0)], &[], &[], &[]),
        );
    }

    /// Unattended, with a duplicate that only what leaves the spec uses: the duplicate's delete
    /// is held, not the kept copy, whose update goes ahead (holding by logical id held both).
    #[test]
    fn an_unattended_run_updates_the_kept_copy_of_a_duplicated_resource() {
        let cloud: Shared = Arc::default();
        let kept = seed(&cloud, "net", "net0", json!({"cidr": "10.0.0.0/16", "label": 5}));
        let dup = seed(&cloud, "net", "net0", json!({"cidr": "10.0.0.0/16", "label": 6}));
        seed(&cloud, "sub", "sub0", json!({"net": kept, "size": 0}));
        seed(&cloud, "sub", "sub9", json!({"net": dup, "size": 0}));
        let desired = spec(&[(0, 0)], &[(0, 0)], &[], &[]).desired();
        block_on(async {
            let (run, plan) = apply_run(&cloud, &desired, &[], crate::engine::Destructive::Hold).await;
            assert!(matches!(run, Run::Done(Ok(_))), "the unattended apply failed");
            check_unattended(&cloud, &desired, &run, &plan.unwrap()).await.unwrap();
        });
        violations(&cloud).unwrap();
    }

    /// A subnet leaving the spec with `deletion_policy: retain` sits in the VPC a new CIDR
    /// replaces delete-first: kept, it would block the VPC's delete, so the plan says apply
    /// refuses, and apply refuses before any change.
    #[test]
    fn what_is_retained_in_a_delete_first_replacement_refuses_the_change() {
        let cloud: Shared = Arc::default();
        let net = seed(&cloud, "net", "net0", json!({"cidr": "10.0.0.0/16", "label": 0}));
        let retain = json!({ super::super::ownership::RETAIN_TAG: "retain" });
        seed(&cloud, "sub", "sub9", json!({"net": net, "size": 0, "tags": retain}));
        let desired = spec(&[(1, 0)], &[], &[], &[]).desired();
        block_on(async {
            let (run, plan) = apply_run(&cloud, &desired, &[], crate::engine::Destructive::Allow).await;
            let plan = plan.unwrap();
            assert!(refused(&run), "apply went ahead");
            assert!(plan.notes.iter().any(|n| n.contains("apply refuses") && n.contains("deletion_policy: retain")), "{:?}", plan.notes);
            check_attended(&cloud, &run, &plan, &[]).unwrap();
        });
        violations(&cloud).unwrap();
    }

    /// An apply that fails says what to do: the hint of a failed resource's AWS error reaches
    /// the summary apply returns (it carries the causes as text), once per kind of failure.
    #[test]
    fn a_failed_apply_names_what_to_do() {
        let cloud: Shared = Default::default();
        let desired = spec(&[(0, 0)], &[(0, 0)], &[], &[]).desired();
        let (run, _) = block_on(apply_run(&cloud, &desired, &[(1, Fault::Refused)], crate::engine::Destructive::Allow));
        let Run::Done(Err(e)) = run else { panic!("the refused create did not fail the apply") };
        let text = format!("{e:#}");
        assert!(text.starts_with("apply did not finish"), "{text}");
        assert_eq!(text.matches("\nhint: AWS refused a value").count(), 1, "{text}");
    }
}
