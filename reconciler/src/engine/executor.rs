//! Observe → plan → apply, and destroy. Reads of all kinds run concurrently (one batched
//! read per kind, so a plan costs one round trip of latency); mutations run as soon as their
//! dependencies are done, at most `max_concurrency` at a time.

use super::diff::diff_fields;
use super::refs::{contains_unknown, references, resolve};
use super::{Ctx, Desired, FieldChange, Fields, Kind, Observed};
use crate::plan::{Action, Plan, ResourcePlan};
use anyhow::{anyhow, Context as _};
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// Everything the stack owns, as observed at one moment.
pub type Snapshot = Vec<Observed>;

/// Reads every kind concurrently (each read retried while it fails retryably).
pub async fn observe(ctx: &Ctx, kinds: &[Box<dyn Kind>]) -> anyhow::Result<Snapshot> {
    let results = futures::future::join_all(kinds.iter().map(|k| observe_kind(ctx, k.as_ref()))).await;
    let mut all = Vec::new();
    for (k, r) in kinds.iter().zip(results) {
        all.extend(r.with_context(|| format!("reading the stack's {} resources", k.name()))?);
    }
    Ok(all)
}

async fn observe_kind(ctx: &Ctx, kind: &dyn Kind) -> anyhow::Result<Vec<Observed>> {
    let s = &ctx.settings;
    super::retry::with_retries(s.max_attempts, s.retry_base, || kind.observe(ctx)).await
}

/// The resource with this logical id, as it is now.
async fn observe_one(ctx: &Ctx, kind: &dyn Kind, id: &str) -> anyhow::Result<Option<Observed>> {
    Ok(observe_kind(ctx, kind).await?.into_iter().find(|o| o.id == id))
}

fn kind_of<'k>(kinds: &'k [Box<dyn Kind>], name: &str) -> anyhow::Result<&'k dyn Kind> {
    kinds
        .iter()
        .find(|k| k.name() == name)
        .map(|k| k.as_ref())
        .ok_or_else(|| anyhow!("internal error: no resource kind `{name}` is registered"))
}

fn deps_of(d: &Desired) -> BTreeSet<String> {
    let mut deps = BTreeSet::new();
    for v in d.fields.values() {
        references(v, &mut deps);
    }
    deps.extend(d.after.iter().cloned());
    deps
}

/// Indexes of `desired` in dependency order (stable: input order among independent nodes).
fn topo_order(desired: &[Desired], externals: &BTreeMap<String, String>) -> anyhow::Result<Vec<usize>> {
    let index: BTreeMap<&str, usize> = desired.iter().enumerate().map(|(i, d)| (d.id.as_str(), i)).collect();
    if index.len() != desired.len() {
        return Err(anyhow!("internal error: two desired resources share a logical id"));
    }
    let mut deps: Vec<BTreeSet<usize>> = Vec::with_capacity(desired.len());
    for d in desired {
        let mut set = BTreeSet::new();
        for dep in deps_of(d) {
            if externals.contains_key(&dep) {
                continue;
            }
            let j = *index.get(dep.as_str()).ok_or_else(|| anyhow!("internal error: `{}` depends on unknown `{dep}`", d.id))?;
            set.insert(j);
        }
        deps.push(set);
    }
    let mut order = Vec::with_capacity(desired.len());
    let mut placed = vec![false; desired.len()];
    while order.len() < desired.len() {
        let before = order.len();
        for i in 0..desired.len() {
            if !placed[i] && deps[i].iter().all(|&j| placed[j]) {
                placed[i] = true;
                order.push(i);
            }
        }
        if order.len() == before {
            let stuck: Vec<&str> = (0..desired.len()).filter(|&i| !placed[i]).map(|i| desired[i].id.as_str()).collect();
            return Err(anyhow!("internal error: dependency cycle among {stuck:?}"));
        }
    }
    Ok(order)
}

fn resolve_fields(fields: &Fields, ids: &BTreeMap<String, String>) -> Fields {
    fields.iter().map(|(k, v)| (k.clone(), resolve(v, ids))).collect()
}

/// Live resources by (kind, logical id); later duplicates (a crashed run, an emulator that
/// ignores idempotency tokens) are returned separately, to be deleted.
fn index_live(observed: &[Observed]) -> (BTreeMap<(&str, &str), &Observed>, Vec<&Observed>) {
    let mut live = BTreeMap::new();
    let mut dups = Vec::new();
    for o in observed {
        match live.entry((o.kind, o.id.as_str())) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(o);
            }
            std::collections::btree_map::Entry::Occupied(_) => dups.push(o),
        }
    }
    (live, dups)
}

fn replace_reason(kind: &dyn Kind, changes: &[FieldChange]) -> Option<String> {
    changes.iter().find(|c| kind.replace_on().contains(&c.field.as_str())).map(|c| {
        if contains_unknown(&c.after) {
            format!("`{}` cannot change in place and depends on a resource being (re)created", c.field)
        } else {
            format!("`{}` cannot change in place", c.field)
        }
    })
}

/// Computes the plan: pure, no AWS calls. `externals` maps logical ids of resources the stack
/// references but does not own (an existing VPC) to their AWS ids.
pub fn plan(
    stack: &str,
    kinds: &[Box<dyn Kind>],
    desired: &[Desired],
    observed: &[Observed],
    externals: &BTreeMap<String, String>,
) -> anyhow::Result<Plan> {
    let order = topo_order(desired, externals)?;
    let (live, dups) = index_live(observed);
    let mut ids = externals.clone();
    for d in desired {
        if let Some(l) = live.get(&(d.kind, d.id.as_str())) {
            ids.insert(d.id.clone(), l.physical_id.clone());
        }
    }
    let mut resources = Vec::new();
    for i in order {
        let d = &desired[i];
        let kind = kind_of(kinds, d.kind)?;
        let fields = resolve_fields(&d.fields, &ids);
        let (action, changes, physical_id) = match live.get(&(d.kind, d.id.as_str())) {
            None => {
                ids.remove(&d.id);
                let all = fields.iter().map(|(k, v)| FieldChange { field: k.clone(), before: None, after: v.clone() }).collect();
                (Action::Create, all, None)
            }
            Some(l) => {
                let changes = diff_fields(&fields, &l.fields);
                let action = if let Some(reason) = replace_reason(kind, &changes) {
                    ids.remove(&d.id);
                    Action::Replace { reason }
                } else if changes.is_empty() {
                    Action::NoOp
                } else {
                    Action::Update
                };
                (action, changes, Some(l.physical_id.clone()))
            }
        };
        resources.push(ResourcePlan { kind: d.kind, id: d.id.clone(), physical_id, action, changes });
    }
    let wanted: BTreeSet<(&str, &str)> = desired.iter().map(|d| (d.kind, d.id.as_str())).collect();
    for o in observed {
        let reason = if dups.iter().any(|d| std::ptr::eq(*d, o)) {
            "duplicate of the same logical id (left by an interrupted run)"
        } else if !wanted.contains(&(o.kind, o.id.as_str())) {
            "no longer in the spec"
        } else {
            continue;
        };
        resources.push(ResourcePlan {
            kind: o.kind,
            id: o.id.clone(),
            physical_id: Some(o.physical_id.clone()),
            action: Action::Delete { reason: reason.into() },
            changes: vec![],
        });
    }
    Ok(Plan { stack: stack.to_string(), resources, notes: vec![], fingerprint: String::new() })
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub created: usize,
    pub updated: usize,
    pub replaced: usize,
    pub deleted: usize,
}

fn progress(msg: &str) {
    eprintln!("  {msg}");
}

/// Converges live state to `desired`. `plan` must have been computed from the same inputs;
/// fields are re-resolved as dependencies are created, so later nodes see new AWS ids.
pub async fn apply(
    ctx: &Ctx,
    kinds: &[Box<dyn Kind>],
    desired: &[Desired],
    observed: &[Observed],
    externals: &BTreeMap<String, String>,
    plan: &Plan,
) -> anyhow::Result<ApplyReport> {
    let order = topo_order(desired, externals)?;
    let (live, _) = index_live(observed);
    let action_of =
        |d: &Desired| plan.resources.iter().find(|r| r.kind == d.kind && r.id == d.id).map(|r| r.action.clone()).unwrap_or(Action::Create);
    let mut report = ApplyReport::default();
    let mut ids = externals.clone();
    for d in desired {
        if let (Some(l), Action::NoOp | Action::Update) = (live.get(&(d.kind, d.id.as_str())), action_of(d)) {
            ids.insert(d.id.clone(), l.physical_id.clone());
        }
    }

    // 1. Replacements: delete the old ones first, dependents before their dependencies.
    for &i in order.iter().rev() {
        let d = &desired[i];
        if let (Action::Replace { reason }, Some(l)) = (action_of(d), live.get(&(d.kind, d.id.as_str()))) {
            progress(&format!("replacing {} {} [{}]: {reason}; deleting the old one", d.kind, d.id, l.physical_id));
            delete_one(ctx, kind_of(kinds, d.kind)?, l).await.with_context(|| format!("deleting {} {} for replacement", d.kind, d.id))?;
        }
    }

    // 2. Creates and updates, in dependency order, concurrently where independent.
    let deps: Vec<BTreeSet<String>> =
        desired.iter().map(|d| deps_of(d).into_iter().filter(|x| !externals.contains_key(x)).collect()).collect();
    let mut pending: Vec<usize> = order.clone();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    let mut running = FuturesUnordered::new();
    loop {
        let mut i = 0;
        while i < pending.len() && running.len() < ctx.settings.max_concurrency.max(1) {
            let n = pending[i];
            let d = &desired[n];
            if let Some(bad) = deps[n].iter().find(|x| failed.contains_key(*x)) {
                failed.insert(d.id.clone(), format!("skipped: `{bad}` failed"));
                pending.remove(i);
                continue;
            }
            if !deps[n].iter().all(|x| done.contains(x)) {
                i += 1;
                continue;
            }
            pending.remove(i);
            let kind = kind_of(kinds, d.kind)?;
            let fields = resolve_fields(&d.fields, &ids);
            let current = match action_of(d) {
                Action::Create | Action::Replace { .. } => None,
                _ => live.get(&(d.kind, d.id.as_str())).copied(),
            };
            running.push(async move {
                let started = Instant::now();
                let r = converge_one(ctx, kind, d, &fields, current).await;
                (d, started, r)
            });
        }
        let Some((d, started, result)) = running.next().await else { break };
        match result {
            Ok(Outcome::Created(phys)) => {
                progress(&format!("created {} {} [{phys}] in {:.1?}", d.kind, d.id, started.elapsed()));
                if matches!(action_of(d), Action::Replace { .. }) {
                    report.replaced += 1;
                } else {
                    report.created += 1;
                }
                ids.insert(d.id.clone(), phys);
                done.insert(d.id.clone());
            }
            Ok(Outcome::Updated(fields)) => {
                progress(&format!("updated {} {} ({}) in {:.1?}", d.kind, d.id, fields.join(", "), started.elapsed()));
                report.updated += 1;
                done.insert(d.id.clone());
            }
            Ok(Outcome::Unchanged) => {
                done.insert(d.id.clone());
            }
            Err(e) => {
                progress(&format!("FAILED {} {}: {e:#}", d.kind, d.id));
                failed.insert(d.id.clone(), format!("{e:#}"));
            }
        }
    }

    // 3. Resources no longer in the spec (and duplicates): reverse kind order.
    if failed.is_empty() {
        let doomed: Vec<(&str, &str)> = plan
            .resources
            .iter()
            .filter(|r| matches!(r.action, Action::Delete { .. }))
            .filter_map(|r| Some((r.kind, r.physical_id.as_deref()?)))
            .collect();
        let victims: Vec<&Observed> = observed.iter().filter(|o| doomed.contains(&(o.kind, o.physical_id.as_str()))).collect();
        report.deleted += delete_in_reverse_kind_order(ctx, kinds, &victims).await?;
    } else if plan.count(|a| matches!(a, Action::Delete { .. })) > 0 {
        progress("not deleting resources that left the spec, because something failed above");
    }

    if !failed.is_empty() {
        let list: Vec<String> = failed.iter().map(|(id, e)| format!("  {id}: {e}")).collect();
        return Err(anyhow!(
            "apply did not finish; {} resource(s) failed:\n{}\nWhat succeeded is kept and found again by its tags: fix the cause and run apply again.",
            failed.len(),
            list.join("\n")
        ));
    }
    Ok(report)
}

enum Outcome {
    Created(String),
    Updated(Vec<String>),
    Unchanged,
}

/// Converges one resource. After a retryable failure nothing is re-sent blindly: the resource
/// is observed again and converged from what is there (a create that did happen is kept).
async fn converge_one(ctx: &Ctx, kind: &dyn Kind, d: &Desired, fields: &Fields, live: Option<&Observed>) -> anyhow::Result<Outcome> {
    let was_missing = live.is_none();
    let mut live = live.cloned();
    let mut attempt = 1;
    loop {
        match converge_step(ctx, kind, d, fields, live.as_ref()).await {
            Ok(outcome) => {
                return Ok(match (was_missing, outcome, &live) {
                    // Created by an earlier attempt that reported failure: still a creation.
                    (true, Outcome::Unchanged | Outcome::Updated(_), Some(l)) => Outcome::Created(l.physical_id.clone()),
                    (_, outcome, _) => outcome,
                });
            }
            Err(e) if attempt < ctx.settings.max_attempts && super::retry::is_retryable(&e) => {
                let wait = super::retry::backoff(ctx.settings.retry_base, attempt);
                progress(&format!(
                    "{} {}: {e:#}; observing again and retrying in {wait:.1?} (attempt {}/{})",
                    d.kind,
                    d.id,
                    attempt + 1,
                    ctx.settings.max_attempts
                ));
                tokio::time::sleep(wait).await;
                live = observe_one(ctx, kind, &d.id).await?;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn converge_step(ctx: &Ctx, kind: &dyn Kind, d: &Desired, fields: &Fields, live: Option<&Observed>) -> anyhow::Result<Outcome> {
    let Some(live) = live else {
        return Ok(Outcome::Created(kind.create(ctx, &d.id, fields).await.with_context(|| format!("creating {} {}", d.kind, d.id))?));
    };
    let changes = diff_fields(fields, &live.fields);
    if changes.is_empty() {
        return Ok(Outcome::Unchanged);
    }
    if let Some(reason) = replace_reason(kind, &changes) {
        progress(&format!("replacing {} {} [{}]: {reason}", d.kind, d.id, live.physical_id));
        delete_one(ctx, kind, live).await?;
        return Ok(Outcome::Created(kind.create(ctx, &d.id, fields).await.with_context(|| format!("creating {} {}", d.kind, d.id))?));
    }
    kind.update(ctx, live, fields, &changes).await.with_context(|| format!("updating {} {} [{}]", d.kind, d.id, live.physical_id))?;
    Ok(Outcome::Updated(changes.into_iter().map(|c| c.field).collect()))
}

/// Deletes one resource; after a retryable failure, observes again: gone is done.
async fn delete_one(ctx: &Ctx, kind: &dyn Kind, live: &Observed) -> anyhow::Result<()> {
    let mut attempt = 1;
    loop {
        match kind.delete(ctx, live).await.with_context(|| format!("deleting {} {} [{}]", live.kind, live.id, live.physical_id)) {
            Ok(()) => return Ok(()),
            Err(e) if attempt < ctx.settings.max_attempts && super::retry::is_retryable(&e) => {
                tokio::time::sleep(super::retry::backoff(ctx.settings.retry_base, attempt)).await;
                let still_there = observe_kind(ctx, kind).await?.iter().any(|o| o.physical_id == live.physical_id);
                if !still_there {
                    return Ok(());
                }
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Deletes, kinds in reverse registration order (kinds are registered dependencies first),
/// resources of one kind concurrently. Stops at the first kind with a failure.
async fn delete_in_reverse_kind_order(ctx: &Ctx, kinds: &[Box<dyn Kind>], victims: &[&Observed]) -> anyhow::Result<usize> {
    let mut deleted = 0;
    for kind in kinds.iter().rev() {
        let mine: Vec<&Observed> = victims.iter().copied().filter(|o| o.kind == kind.name()).collect();
        let mut errors = Vec::new();
        for chunk in mine.chunks(ctx.settings.max_concurrency.max(1)) {
            let results = futures::future::join_all(chunk.iter().map(|o| async move {
                progress(&format!("deleting {} {} [{}]", o.kind, o.id, o.physical_id));
                delete_one(ctx, kind.as_ref(), o).await
            }))
            .await;
            for r in results {
                match r {
                    Ok(()) => deleted += 1,
                    Err(e) => errors.push(format!("{e:#}")),
                }
            }
        }
        if !errors.is_empty() {
            return Err(anyhow!("{}\nRun the command again once the cause is fixed; what was deleted stays deleted.", errors.join("\n")));
        }
    }
    Ok(deleted)
}

/// Deletes everything the stack owns (found by its tags), in reverse dependency order.
pub async fn destroy(ctx: &Ctx, kinds: &[Box<dyn Kind>], observed: &[Observed]) -> anyhow::Result<usize> {
    let all: Vec<&Observed> = observed.iter().collect();
    delete_in_reverse_kind_order(ctx, kinds, &all).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::reference;
    use futures::future::BoxFuture;
    use serde_json::json;

    struct FakeKind(&'static str);
    impl Kind for FakeKind {
        fn name(&self) -> &'static str {
            self.0
        }
        fn replace_on(&self) -> &'static [&'static str] {
            &["parent", "cidr"]
        }
        fn observe<'a>(&'a self, _: &'a Ctx) -> BoxFuture<'a, anyhow::Result<Vec<Observed>>> {
            unreachable!()
        }
        fn create<'a>(&'a self, _: &'a Ctx, _: &'a str, _: &'a Fields) -> BoxFuture<'a, anyhow::Result<String>> {
            unreachable!()
        }
        fn update<'a>(&'a self, _: &'a Ctx, _: &'a Observed, _: &'a Fields, _: &'a [FieldChange]) -> BoxFuture<'a, anyhow::Result<()>> {
            unreachable!()
        }
        fn delete<'a>(&'a self, _: &'a Ctx, _: &'a Observed) -> BoxFuture<'a, anyhow::Result<()>> {
            unreachable!()
        }
        fn iam_actions(&self) -> crate::engine::IamActions {
            crate::engine::IamActions::default()
        }
    }

    fn kinds() -> Vec<Box<dyn Kind>> {
        vec![Box::new(FakeKind("a")), Box::new(FakeKind("b"))]
    }
    fn desired(kind: &'static str, id: &str, fields: serde_json::Value) -> Desired {
        Desired { kind, id: id.into(), fields: fields.as_object().unwrap().clone(), after: vec![] }
    }
    fn live(kind: &'static str, id: &str, phys: &str, fields: serde_json::Value) -> Observed {
        Observed { kind, id: id.into(), physical_id: phys.into(), fields: fields.as_object().unwrap().clone() }
    }
    fn actions(p: &Plan) -> Vec<(String, Action)> {
        p.resources.iter().map(|r| (r.id.clone(), r.action.clone())).collect()
    }

    #[test]
    fn orders_by_references() {
        let d = vec![desired("b", "child", json!({"parent": reference("root")})), desired("a", "root", json!({}))];
        assert_eq!(topo_order(&d, &BTreeMap::new()).unwrap(), vec![1, 0]);
        let cyc = vec![desired("a", "x", json!({"p": reference("y")})), desired("a", "y", json!({"p": reference("x")}))];
        assert!(topo_order(&cyc, &BTreeMap::new()).unwrap_err().to_string().contains("cycle"));
        let dangling = vec![desired("a", "x", json!({"p": reference("nope")}))];
        assert!(topo_order(&dangling, &BTreeMap::new()).is_err());
        assert!(topo_order(&dangling, &BTreeMap::from([("nope".into(), "vpc-1".into())])).is_ok());
    }

    #[test]
    fn plans_create_noop_update_replace_delete() {
        let d = vec![
            desired("a", "root", json!({"cidr": "10.0.0.0/16", "tags": {"x": "1"}})),
            desired("b", "child", json!({"parent": reference("root"), "size": 2})),
            desired("b", "new", json!({"parent": reference("root")})),
        ];
        let obs = vec![
            live("a", "root", "r-1", json!({"cidr": "10.0.0.0/16", "tags": {"x": "2"}})),
            live("b", "child", "c-1", json!({"parent": "r-1", "size": 2})),
            live("b", "gone", "g-1", json!({})),
        ];
        let p = plan("s", &kinds(), &d, &obs, &BTreeMap::new()).unwrap();
        assert_eq!(
            actions(&p),
            vec![
                ("root".into(), Action::Update),
                ("child".into(), Action::NoOp),
                ("new".into(), Action::Create),
                ("gone".into(), Action::Delete { reason: "no longer in the spec".into() }),
            ]
        );
        assert_eq!(p.resources[0].changes[0].field, "tags");
    }

    #[test]
    fn replacement_propagates_to_dependents_that_cannot_move() {
        let d = vec![desired("a", "root", json!({"cidr": "10.1.0.0/16"})), desired("b", "child", json!({"parent": reference("root")}))];
        let obs = vec![live("a", "root", "r-1", json!({"cidr": "10.0.0.0/16"})), live("b", "child", "c-1", json!({"parent": "r-1"}))];
        let p = plan("s", &kinds(), &d, &obs, &BTreeMap::new()).unwrap();
        assert!(matches!(&p.resources[0].action, Action::Replace { reason } if reason.contains("`cidr`")));
        assert!(matches!(&p.resources[1].action, Action::Replace { reason } if reason.contains("being (re)created")));
    }

    #[test]
    fn duplicates_are_deleted_and_the_first_is_kept() {
        let d = vec![desired("a", "root", json!({}))];
        let obs = vec![live("a", "root", "r-1", json!({})), live("a", "root", "r-2", json!({}))];
        let p = plan("s", &kinds(), &d, &obs, &BTreeMap::new()).unwrap();
        assert_eq!(p.resources[0].physical_id.as_deref(), Some("r-1"));
        assert_eq!(p.resources[0].action, Action::NoOp);
        assert_eq!(p.resources[1].physical_id.as_deref(), Some("r-2"));
        assert!(matches!(&p.resources[1].action, Action::Delete { reason } if reason.contains("duplicate")));
    }
}
