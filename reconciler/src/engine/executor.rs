//! Observe → plan → apply, and destroy. Reads of all kinds run concurrently (one batched
//! read per kind, a few dependent calls deep); mutations run as soon as their dependencies
//! are done, at most `max_concurrency` at a time; deletions follow the dependency graph.

use super::diff::{diff_fields, for_create, for_update};
use super::ownership;
use super::refs::{contains_unknown, references, resolve};
use super::retry::RetryBudget;
use super::{Ctx, Desired, FieldChange, Fields, Identity, Kind, Observed, Replacement, Status};
use crate::plan::{Action, Plan, ResourcePlan, DUPLICATE, LEAVING};
use anyhow::{anyhow, Context as _};
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// Everything the stack owns, as observed at one moment.
pub type Snapshot = Vec<Observed>;

/// Reads every kind concurrently (each read retried while it fails retryably). `desired`
/// gives the kinds found by name or parent what to look for.
pub async fn observe(ctx: &Ctx, kinds: &[Box<dyn Kind>], desired: &[Desired]) -> anyhow::Result<Snapshot> {
    ctx.join_shared_reads();
    let results = futures::future::join_all(kinds.iter().map(|k| async move {
        let wanted: Vec<&Desired> = desired.iter().filter(|d| d.kind == k.name()).collect();
        observe_kind(ctx, k.as_ref(), &wanted).await
    }))
    .await;
    ctx.share_reads(false);
    let mut all = Vec::new();
    for (k, r) in kinds.iter().zip(results) {
        all.extend(r.with_context(|| format!("reading the stack's {} resources", k.name()))?);
    }
    Ok(all)
}

async fn observe_kind(ctx: &Ctx, kind: &dyn Kind, wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
    let s = &ctx.settings;
    // Each call was retried by the SDK where that is safe; what is left (no answer at all, an
    // "observe again") is retried here, by its class's budget.
    let mut found = super::retry::with_retries(s, || kind.observe(ctx, wanted)).await?;
    for o in &mut found {
        let spec_tags = wanted.iter().find(|d| d.id == o.id).and_then(|d| d.fields.get("tags"));
        ownership::drop_ignored_tags(&mut o.fields, spec_tags, &s.ignore_tags);
    }
    Ok(found)
}

/// Like [`observe`], for destroy: a resource found by a wanted name that the stack does not
/// own (another owner's, or one an earlier destroy retained) is left out and reported, not
/// an error: destroy deletes only what is ours.
pub async fn observe_owned(ctx: &Ctx, kinds: &[Box<dyn Kind>], desired: &[Desired]) -> anyhow::Result<(Snapshot, Vec<String>)> {
    ctx.join_shared_reads();
    let results = futures::future::join_all(kinds.iter().map(|k| async move {
        let mut wanted: Vec<&Desired> = desired.iter().filter(|d| d.kind == k.name()).collect();
        let mut skipped = Vec::new();
        loop {
            match observe_kind(ctx, k.as_ref(), &wanted).await {
                Ok(found) => return Ok((found, skipped)),
                Err(e) => {
                    let Some(n) = e.chain().find_map(|c| c.downcast_ref::<ownership::NotOwned>()) else { return Err(e) };
                    let before = wanted.len();
                    wanted.retain(|d| !d.fields.values().any(|v| v.as_str() == Some(n.name.as_str())));
                    if wanted.len() == before {
                        return Err(e);
                    }
                    skipped.push(n.message.clone());
                }
            }
        }
    }))
    .await;
    ctx.share_reads(false);
    let (mut all, mut skipped) = (Vec::new(), Vec::new());
    for (k, r) in kinds.iter().zip(results) {
        let (found, s) = r.with_context(|| format!("reading the stack's {} resources", k.name()))?;
        all.extend(found);
        skipped.extend(s);
    }
    Ok((all, skipped))
}

/// The resource with this logical id, as it is now (one on its way out is not it).
async fn observe_one(ctx: &Ctx, kind: &dyn Kind, d: &Desired) -> anyhow::Result<Option<Observed>> {
    Ok(observe_kind(ctx, kind, &[d]).await?.into_iter().find(|o| o.id == d.id && !leaving(o)))
}

fn leaving(o: &Observed) -> bool {
    matches!(o.status, Status::Leaving(_))
}

/// This very resource (by its AWS id), as it is now. It is looked for as what it is (kinds
/// found by name or by parent find nothing when asked for nothing in particular: that would
/// pass for "gone").
async fn observe_again(ctx: &Ctx, kind: &dyn Kind, live: &Observed) -> anyhow::Result<Option<Observed>> {
    let probe = Desired { kind: live.kind, id: live.id.clone(), fields: live.fields.clone(), after: vec![] };
    Ok(observe_kind(ctx, kind, &[&probe]).await?.into_iter().find(|o| o.physical_id == live.physical_id))
}

/// Waits while a resource is on its way out ([`Status::Leaving`]): `None` once it is gone,
/// or what it is now if it stopped leaving (then it is there to be dealt with).
async fn wait_while_leaving(ctx: &Ctx, kind: &dyn Kind, live: &Observed) -> anyhow::Result<Option<Observed>> {
    let what = format!("{} {} [{}] to finish being deleted", live.kind, live.id, live.physical_id);
    progress(&format!("waiting for {what}"));
    super::wait::until(ctx, &what, || async {
        Ok(match observe_again(ctx, kind, live).await? {
            None => Some(None),
            Some(now) if leaving(&now) => None,
            Some(now) => Some(Some(now)),
        })
    })
    .await
}

fn kind_of<'k>(kinds: &'k [Box<dyn Kind>], name: &str) -> anyhow::Result<&'k dyn Kind> {
    kinds
        .iter()
        .find(|k| k.name() == name)
        .map(|k| k.as_ref())
        .ok_or_else(|| anyhow!("internal error: no resource kind `{name}` is registered"))
}

/// Which replacements go delete-first (`replaced` in creation order, dependencies first): the
/// ones their kind orders so, and any whose dependency goes delete-first.
fn delete_first<'a>(replaced: &[(&'a Desired, Replacement)]) -> BTreeSet<&'a str> {
    let mut out: BTreeSet<&str> = BTreeSet::new();
    for (d, how) in replaced {
        if *how == Replacement::DeleteBeforeCreate || deps_of(d).iter().any(|x| out.contains(x.as_str())) {
            out.insert(d.id.as_str());
        }
    }
    out
}

/// A delete-first replacement that something staying in place still uses: a dependent that
/// is only updated (an internet gateway attached to the VPC, an ECS service whose tasks sit
/// in the subnets) or replaced create-before-destroy (its old half lives on until the end).
/// Deleting the old resource under it fails on AWS (`DependencyViolation`, `ResourceInUse`)
/// or strands the dependent, so the whole apply is refused before any change, saying what
/// to do instead. `None` when every delete-first replacement takes its dependents with it.
fn stranded_by_delete_first(
    kinds: &[Box<dyn Kind>],
    desired: &[Desired],
    delete_first: &BTreeSet<&str>,
    action_of: impl Fn(&Desired) -> Action,
) -> Option<String> {
    let mut stranded: Vec<String> = Vec::new();
    for d in desired {
        if delete_first.contains(d.id.as_str()) || matches!(action_of(d), Action::Create) {
            continue;
        }
        if !kind_of(kinds, d.kind).is_ok_and(|k| k.holds_what_it_uses()) {
            continue;
        }
        for dep in deps_of(d).iter().filter(|x| delete_first.contains(x.as_str())) {
            stranded.push(format!("  {} {} still uses `{dep}`", d.kind, d.id));
        }
    }
    if stranded.is_empty() {
        return None;
    }
    let replaced: Vec<&str> = delete_first.iter().copied().collect();
    Some(format!(
        "refusing to apply: this change replaces {} delete-first (AWS can neither change it in place nor keep two at once), but resources that stay in place still use it:\n{}\nNothing was changed. Deleting what they use under them fails on AWS (DependencyViolation, ResourceInUse) and would leave the stack half-replaced. To make this change (a new network, another VPC, a Cloud Map record type): either destroy the stack (`reconciler destroy`; retained data is kept) and apply the new spec (downtime), or apply the new spec as a second stack under another `name`, move traffic to it, then destroy the old stack (no downtime).",
        replaced.join(", "),
        stranded.join("\n")
    ))
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

/// Logical ids in the order apply creates them (dependencies first).
pub fn creation_order(desired: &[Desired], externals: &BTreeMap<String, String>) -> anyhow::Result<Vec<String>> {
    Ok(topo_order(desired, externals)?.into_iter().map(|i| desired[i].id.clone()).collect())
}

fn resolve_fields(fields: &Fields, ids: &BTreeMap<String, Identity>) -> Fields {
    fields.iter().map(|(k, v)| (k.clone(), resolve(v, ids))).collect()
}

/// Live resources by (kind, logical id). Where an interrupted run (or an API without
/// idempotency tokens) left two or more, one is kept: the one that already is what the spec
/// asks (no difference to its desired fields, references resolved against the other kept
/// resources: the new half of a create-before-destroy replacement that was interrupted, so
/// the replacement is finished, not started again beside it), else one that other resources
/// reference, else the oldest (where the kind reports creation times; else the first listed).
/// The others are returned separately, to be deleted; those something still references come
/// with what references them (deleting them is safe only once those have moved to the kept
/// one: see `plan`).
type Referrers<'o> = Vec<(&'o Observed, Vec<&'o Observed>)>;
fn index_live<'o>(
    kinds: &[Box<dyn Kind>],
    observed: &'o [Observed],
    desired: &[Desired],
    externals: &BTreeMap<String, String>,
) -> (BTreeMap<(&'o str, &'o str), &'o Observed>, Vec<&'o Observed>, Referrers<'o>) {
    let all: Vec<&Observed> = observed.iter().collect();
    let deps = super::graph::dependencies(&all, &[]);
    let referenced = |i: usize| deps.iter().any(|d| d.contains(&i));
    let mut groups: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    // What is on its way out is neither kept nor deleted again: it is waited for.
    for (i, o) in observed.iter().enumerate().filter(|(_, o)| !leaving(o)) {
        groups.entry((o.kind, o.id.as_str())).or_default().push(i);
    }
    // First choice: referenced, else the oldest (unknown creation times keep the API's order,
    // after the known ones).
    let mut keep: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (key, members) in &groups {
        let mut by_age = members.clone();
        by_age.sort_by_key(|&i| observed[i].created.unwrap_or(i64::MAX));
        keep.insert(*key, by_age.iter().copied().find(|&i| referenced(i)).unwrap_or(by_age[0]));
    }
    // Then, among copies of one logical id, the one that already matches the spec.
    let mut ids: BTreeMap<String, Identity> = externals.iter().map(|(k, v)| (k.clone(), Identity::id(v.clone()))).collect();
    ids.extend(keep.values().map(|&i| (observed[i].id.clone(), observed[i].identity())));
    for (key, members) in groups.iter().filter(|(_, m)| m.len() > 1) {
        let (Some(d), Ok(kind)) = (desired.iter().find(|d| (d.kind, d.id.as_str()) == *key), kind_of(kinds, key.0)) else {
            continue;
        };
        let fields = resolve_fields(&d.fields, &ids);
        let matching: Vec<usize> =
            members.iter().copied().filter(|&i| diff_fields(&fields, &observed[i].fields, kind.unreported()).is_empty()).collect();
        if let [one] = matching[..] {
            keep.insert(*key, one);
        }
    }
    let mut live = BTreeMap::new();
    let (mut dups, mut used) = (Vec::new(), Vec::new());
    for (key, members) in groups {
        let kept = keep[&key];
        live.insert(key, &observed[kept]);
        for i in members.into_iter().filter(|&i| i != kept) {
            if referenced(i) {
                let referrers = (0..observed.len()).filter(|&j| deps[j].contains(&i)).map(|j| &observed[j]).collect();
                used.push((&observed[i], referrers));
            } else {
                dups.push(&observed[i]);
            }
        }
    }
    (live, dups, used)
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
    let (live, mut dups, used) = index_live(kinds, observed, desired, externals);
    let mut ids: BTreeMap<String, Identity> = externals.iter().map(|(k, v)| (k.clone(), Identity::id(v.clone()))).collect();
    for d in desired {
        if let Some(l) = live.get(&(d.kind, d.id.as_str())) {
            ids.insert(d.id.clone(), l.identity());
        }
    }
    let mut resources = Vec::new();
    for &i in &order {
        let d = &desired[i];
        let kind = kind_of(kinds, d.kind)?;
        let fields = resolve_fields(&d.fields, &ids);
        let (mut cause, mut follows) = (None, None);
        let (action, changes, physical_id) = match live.get(&(d.kind, d.id.as_str())) {
            None => {
                ids.remove(&d.id);
                let all = for_create(&fields).into_iter().map(|(k, v)| FieldChange { field: k, before: None, after: v }).collect();
                (Action::Create, all, None)
            }
            Some(l) => {
                let changes = diff_fields(&fields, &l.fields, kind.unreported());
                let action = if let Status::Failed(why) = &l.status {
                    ids.remove(&d.id);
                    Action::Replace { reason: format!("it failed: {why}") }
                } else if let Some(reason) = replace_reason(kind, &changes) {
                    ids.remove(&d.id);
                    Action::Replace { reason }
                } else if changes.is_empty() {
                    Action::NoOp
                } else {
                    if kind.updates_yield_new_identity() {
                        ids.remove(&d.id);
                    }
                    Action::Update
                };
                if matches!(action, Action::Update | Action::Replace { .. }) {
                    follows = forced_by(d, &changes, &ids, &resources);
                    cause = Some(match follows {
                        Some(_) => crate::plan::Cause::Cascade,
                        None => super::ownership::attribution(&d.fields, &l.fields),
                    });
                }
                (action, changes, Some(l.physical_id.clone()))
            }
        };
        resources.push(ResourcePlan { kind: d.kind, id: d.id.clone(), physical_id, action, changes, cause, follows });
    }
    // A duplicate something still uses goes in this apply too when everything that uses it is
    // kept and only updated (so moved to the kept copy before the deletions, never held back):
    // an interrupted create-before-destroy is finished in one run. Otherwise it stays until
    // the next run.
    for (dup, referrers) in used {
        let moves = |r: &&Observed| {
            live.get(&(r.kind, r.id.as_str())).is_some_and(|k| std::ptr::eq(*k, *r))
                && resources.iter().any(|p| p.kind == r.kind && p.id == r.id && p.action == Action::Update)
        };
        if referrers.iter().all(moves) {
            dups.push(dup);
        }
    }
    let wanted: BTreeSet<(&str, &str)> = desired.iter().map(|d| (d.kind, d.id.as_str())).collect();
    for o in observed {
        let duplicate = dups.iter().any(|d| std::ptr::eq(*d, o));
        let action = if leaving(o) {
            Action::Delete { reason: LEAVING.into() }
        } else if duplicate {
            Action::Delete { reason: DUPLICATE.into() }
        } else if wanted.contains(&(o.kind, o.id.as_str())) {
            continue;
        } else if ownership::retained(&o.fields) {
            Action::Retain { reason: "no longer in the spec; deletion_policy is retain".into() }
        } else {
            Action::Delete { reason: "no longer in the spec".into() }
        };
        resources.push(ResourcePlan {
            kind: o.kind,
            id: o.id.clone(),
            physical_id: Some(o.physical_id.clone()),
            action,
            changes: vec![],
            cause: None,
            follows: None,
        });
    }
    // Told now, not half-way through an apply: a delete-first replacement under something
    // that stays (the apply refuses it before any change).
    let mut replaced: Vec<(&Desired, Replacement)> = Vec::new();
    for d in order.iter().map(|&i| &desired[i]) {
        if let Some(r) = resources.iter().find(|r| r.kind == d.kind && r.id == d.id && matches!(r.action, Action::Replace { .. })) {
            replaced.push((d, kind_of(kinds, d.kind)?.replacement_for(&r.changes)));
        }
    }
    let action_of =
        |d: &Desired| resources.iter().find(|r| r.kind == d.kind && r.id == d.id).map(|r| r.action.clone()).unwrap_or(Action::Create);
    let notes = stranded_by_delete_first(kinds, desired, &delete_first(&replaced), action_of)
        .map(|why| why.replacen("refusing to apply:", "apply refuses this plan:", 1))
        .into_iter()
        .collect();
    Ok(Plan { stack: stack.to_string(), resources, notes, fingerprint: String::new() })
}

/// The dependency whose replacement (or creation) alone explains these changes: every
/// changed field is a reference not known until apply (the `reconciler:applied` tag aside),
/// and the first such reference names a resource this plan replaces. `kind id` of it, else `None` (the
/// difference has a cause of its own: drift, or a spec change).
fn forced_by(d: &Desired, changes: &[FieldChange], ids: &BTreeMap<String, Identity>, planned: &[ResourcePlan]) -> Option<String> {
    let bookkeeping = |f: &str| f == format!("tags.{}", super::ownership::APPLIED_TAG);
    let mut unknown = changes.iter().filter(|c| !bookkeeping(&c.field)).peekable();
    unknown.peek()?;
    let mut deps = BTreeSet::new();
    for c in unknown {
        if !contains_unknown(&c.after) {
            return None;
        }
        let top = c.field.split(['.', '[']).next().unwrap_or(&c.field);
        if let Some(v) = d.fields.get(top) {
            references(v, &mut deps);
        }
    }
    // In plan order (dependencies first): the first one being (re)created.
    planned
        .iter()
        .filter(|r| matches!(r.action, Action::Replace { .. }))
        .find(|r| deps.contains(&r.id) && !ids.contains_key(&r.id))
        .map(|r| format!("{} {}", r.kind, r.id))
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub created: usize,
    pub updated: usize,
    pub replaced: usize,
    pub deleted: usize,
    pub retained: usize,
    /// Destructive steps not taken (unattended mode): `kind id: action`.
    pub held: Vec<String>,
}

/// Whether apply may take destructive steps (replacements, deletions). Unattended runs hold
/// them back and say so; a person who confirmed, or a reviewed saved plan, allows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destructive {
    Allow,
    Hold,
}

fn progress(msg: &str) {
    crate::log::progress(msg);
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
    destructive: Destructive,
) -> anyhow::Result<ApplyReport> {
    let order = topo_order(desired, externals)?;
    let (live, _, _) = index_live(kinds, observed, desired, externals);
    let mut report = ApplyReport::default();
    // Held steps: the resource stays as it is (a held replacement keeps the old one, which
    // dependents keep pointing at).
    let held: BTreeSet<(&str, &str)> = match destructive {
        Destructive::Allow => BTreeSet::new(),
        Destructive::Hold => plan.destructive().into_iter().map(|r| (r.kind, r.id.as_str())).collect(),
    };
    for r in plan.destructive().into_iter().filter(|r| held.contains(&(r.kind, r.id.as_str()))) {
        let what = match &r.action {
            Action::Replace { reason } => format!("replace ({reason})"),
            Action::Delete { reason } => format!("delete ({reason})"),
            Action::Retain { reason } => format!("retain ({reason})"),
            _ => continue,
        };
        report.held.push(format!("{} {}: {what}", r.kind, r.id));
    }
    let action_of = |d: &Desired| {
        if held.contains(&(d.kind, d.id.as_str())) {
            return Action::NoOp;
        }
        plan.resources.iter().find(|r| r.kind == d.kind && r.id == d.id).map(|r| r.action.clone()).unwrap_or(Action::Create)
    };
    let mut ids: BTreeMap<String, Identity> = externals.iter().map(|(k, v)| (k.clone(), Identity::id(v.clone()))).collect();
    for d in desired {
        if let (Some(l), Action::NoOp | Action::Update) = (live.get(&(d.kind, d.id.as_str())), action_of(d)) {
            ids.insert(d.id.clone(), l.identity());
        }
    }

    // 0. What earlier runs (or AWS) are still deleting is waited for until it is gone: its
    //    successor would clash with it (a NAT gateway's Elastic IP, an ECS service's name),
    //    and what it sits in cannot go before it does.
    let on_the_way_out = observed.iter().filter(|o| leaving(o)).map(|o| async move {
        let kind = kind_of(kinds, o.kind)?;
        match wait_while_leaving(ctx, kind, o).await? {
            None => Ok(()),
            Some(_) => Err(anyhow!("{} {} [{}] stopped being deleted; run apply again to plan with it", o.kind, o.id, o.physical_id)),
        }
    });
    futures::future::try_join_all(on_the_way_out).await?;

    // 1. Replacements that AWS forces to go delete-first: the old ones go first, dependents
    //    before their dependencies. Create-before-destroy replacements keep the old one
    //    until the new one exists and dependents point at it (step 3).
    //    A resource whose dependency goes delete-first goes delete-first too: it cannot
    //    outlive what it lives in (a security group in a VPC being replaced).
    let mut replaced: Vec<(&Desired, Replacement)> = Vec::new();
    for &i in &order {
        let d = &desired[i];
        if let (Action::Replace { .. }, Some(_)) = (action_of(d), live.get(&(d.kind, d.id.as_str()))) {
            let changes = plan.resources.iter().find(|r| r.kind == d.kind && r.id == d.id).map(|r| r.changes.as_slice()).unwrap_or(&[]);
            replaced.push((d, kind_of(kinds, d.kind)?.replacement_for(changes)));
        }
    }
    let delete_first = delete_first(&replaced);
    if let Some(why) = stranded_by_delete_first(kinds, desired, &delete_first, |d| action_of(d)) {
        return Err(anyhow!("{why}"));
    }
    let mut old_halves: Vec<&Observed> = Vec::new();
    for &i in order.iter().rev() {
        let d = &desired[i];
        if let (Action::Replace { reason }, Some(l)) = (action_of(d), live.get(&(d.kind, d.id.as_str()))) {
            let kind = kind_of(kinds, d.kind)?;
            if !delete_first.contains(d.id.as_str()) {
                old_halves.push(l);
                continue;
            }
            progress(&format!("replacing {} {} [{}]: {reason}; deleting the old one", d.kind, d.id, l.physical_id));
            delete_one(ctx, kind, l).await.with_context(|| format!("deleting {} {} for replacement", d.kind, d.id))?;
        }
    }

    // 2. Creates and updates, in dependency order, concurrently where independent.
    let deps: Vec<BTreeSet<String>> =
        desired.iter().map(|d| deps_of(d).into_iter().filter(|x| !externals.contains_key(x)).collect()).collect();
    let mut pending: Vec<usize> = order.clone();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    let mut running = FuturesUnordered::new();
    let mut timeline = super::timeline::Timeline::default();
    let mut step_of: BTreeMap<&str, usize> = BTreeMap::new();
    loop {
        let mut i = 0;
        while i < pending.len() && running.len() < ctx.settings.max_concurrency.max(1) {
            // A signal or a lost lock: what runs finishes, nothing new starts.
            if let Some(why) = ctx.stop.requested() {
                for n in pending.drain(..) {
                    failed.insert(desired[n].id.clone(), format!("not started: {why}"));
                }
                break;
            }
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
            if held.contains(&(d.kind, d.id.as_str())) {
                done.insert(d.id.clone());
                continue;
            }
            let kind = kind_of(kinds, d.kind)?;
            let fields = resolve_fields(&d.fields, &ids);
            let current = match action_of(d) {
                Action::Create | Action::Replace { .. } => None,
                _ => live.get(&(d.kind, d.id.as_str())).copied(),
            };
            running.push(async move {
                let started = Instant::now();
                let r = converge_one(ctx, kind, d, &fields, current).await;
                (n, started, r)
            });
        }
        let Some((n, started, result)) = running.next().await else { break };
        let d = &desired[n];
        let after = deps[n].iter().filter_map(|x| step_of.get(x.as_str()).copied()).collect();
        step_of.insert(d.id.as_str(), timeline.record(d.kind, &d.id, started, after));
        match result {
            Ok(Outcome::Created(identity)) => {
                progress(&format!("created {} {} [{}] in {:.1?}", d.kind, d.id, identity.physical_id, started.elapsed()));
                if matches!(action_of(d), Action::Replace { .. }) {
                    report.replaced += 1;
                } else {
                    report.created += 1;
                }
                ids.insert(d.id.clone(), identity);
                done.insert(d.id.clone());
            }
            Ok(Outcome::Updated(fields, identity)) => {
                progress(&format!("updated {} {} ({}) in {:.1?}", d.kind, d.id, fields.join(", "), started.elapsed()));
                if let Some(r) = plan.resources.iter().find(|r| r.kind == d.kind && r.id == d.id) {
                    crate::log::correction(d.kind, &d.id, &r.changes);
                }
                report.updated += 1;
                if let Some(identity) = identity {
                    ids.insert(d.id.clone(), identity);
                }
                done.insert(d.id.clone());
            }
            Ok(Outcome::Unchanged) => {
                done.insert(d.id.clone());
            }
            Err(e) => {
                progress(&format!("FAILED {} {}: {e:#}", d.kind, d.id));
                crate::metrics::global().error(d.kind);
                failed.insert(d.id.clone(), format!("{e:#}"));
            }
        }
    }

    if report.created + report.updated + report.replaced > 0 {
        if let Some(line) = timeline.summary() {
            progress(&line);
        }
    }

    // 3. Old halves of create-before-destroy replacements, resources no longer in the spec,
    //    and duplicates: in dependency order (dependents first), only when all else succeeded.
    if failed.is_empty() {
        let doomed: Vec<(&str, &str)> = plan
            .resources
            .iter()
            .filter(|r| matches!(r.action, Action::Delete { .. } | Action::Retain { .. }))
            .filter(|r| r.action != Action::Delete { reason: LEAVING.into() })
            .filter(|r| !held.contains(&(r.kind, r.id.as_str())) || r.action == Action::Delete { reason: DUPLICATE.into() })
            .filter_map(|r| Some((r.kind, r.physical_id.as_deref()?)))
            .collect();
        let mut victims: Vec<&Observed> = observed.iter().filter(|o| doomed.contains(&(o.kind, o.physical_id.as_str()))).collect();
        victims.extend(old_halves);
        let (deleted, retained) = delete_in_dependency_order(ctx, kinds, &victims, desired).await?;
        report.deleted += deleted;
        report.retained += retained;
    } else if plan.count(|a| matches!(a, Action::Delete { .. })) > 0 || !old_halves.is_empty() {
        progress("not deleting resources that left the spec or were replaced, because something failed above");
    }

    // Unhealthy resources this apply left as they were: see `unhealthy`.
    failed.extend(unhealthy(plan, observed));
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

/// Degraded resources the plan leaves as they are (nothing in the spec changes them): the stack
/// is not what the spec asks for, so an apply (or a pass) that has nothing to do still fails,
/// saying why. Logical id → message.
pub fn unhealthy(plan: &Plan, observed: &[Observed]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for o in observed {
        let untouched = plan.resources.iter().any(|r| r.kind == o.kind && r.id == o.id && r.action == Action::NoOp);
        if let (true, Status::Degraded(why)) = (untouched, &o.status) {
            out.insert(o.id.clone(), format!("{} is not healthy: {why}", o.kind));
        }
    }
    out
}

/// [`unhealthy`] as the error of an apply that had nothing to change.
pub fn fail_if_unhealthy(plan: &Plan, observed: &[Observed]) -> anyhow::Result<()> {
    let bad = unhealthy(plan, observed);
    if bad.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = bad.iter().map(|(id, e)| format!("  {id}: {e}")).collect();
    Err(anyhow!("the stack matches the spec but {} resource(s) are not healthy:\n{}\nChanging the spec (a new image or configuration) is what fixes this; applying it as it is does not.", bad.len(), list.join("\n")))
}

enum Outcome {
    Created(Identity),
    Updated(Vec<String>, Option<Identity>),
    Unchanged,
}

/// Converges one resource. After a retryable failure nothing is re-sent blindly: the resource
/// is observed again and converged from what is there (a create that did happen is kept).
/// Each error class has its own budget ([`RetryBudget`]): a role not assumable yet is retried
/// until the propagation deadline, a conflict until the conflict deadline.
/// A resource that is still becoming ready (found Pending) is waited for before dependents run.
async fn converge_one(ctx: &Ctx, kind: &dyn Kind, d: &Desired, fields: &Fields, live: Option<&Observed>) -> anyhow::Result<Outcome> {
    let was_missing = live.is_none();
    let mut live = live.cloned();
    let mut budget = RetryBudget::new(&ctx.settings);
    loop {
        match converge_step(ctx, kind, d, fields, live.as_ref()).await {
            Ok(outcome) => {
                if let Some(l) = live.as_ref().filter(|l| matches!(l.status, Status::Pending(_))) {
                    wait_ready(ctx, kind, d, l).await?;
                }
                return Ok(match (was_missing, outcome, &live) {
                    // Created by an earlier attempt that reported failure: still a creation.
                    (true, Outcome::Unchanged, Some(l)) => Outcome::Created(l.identity()),
                    (true, Outcome::Updated(_, id), Some(l)) => Outcome::Created(id.unwrap_or_else(|| l.identity())),
                    (_, outcome, _) => outcome,
                });
            }
            Err(e) => {
                let Some(wait) = budget.next(&e) else { return Err(e) };
                progress(
                    &format!("{} {}: {e:#}; observing again and retrying in {wait:.1?} (attempt {})", d.kind, d.id, budget.attempt(),),
                );
                let lost_create = live.is_none() && super::retry::is_ambiguous(&e);
                if let Some(why) = super::wait::sleep_unless_stopped(&ctx.stop, wait).await {
                    return Err(e.context(format!("stopped ({why}) before trying again")));
                }
                live = observe_one(ctx, kind, d).await?;
                if live.is_none() && lost_create {
                    live = find_lost_create(ctx, kind, d).await?;
                }
            }
        }
    }
}

/// After a create that may have happened (its answer was lost or a 5xx), the new resource
/// can be missing from listings for a while: look again until `listing_lag` has passed before
/// the engine creates it anew, so that a lost answer never becomes a duplicate.
async fn find_lost_create(ctx: &Ctx, kind: &dyn Kind, d: &Desired) -> anyhow::Result<Option<Observed>> {
    let s = &ctx.settings;
    let started = Instant::now();
    progress(&format!(
        "{} {}: the create may have happened; looking for it for up to {:.0?} before creating it again",
        d.kind, d.id, s.listing_lag
    ));
    while started.elapsed() < s.listing_lag {
        tokio::time::sleep(s.poll_interval.min(s.listing_lag.saturating_sub(started.elapsed()))).await;
        if let Some(found) = observe_one(ctx, kind, d).await? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Polls until the resource is Ready; Failed or a timeout is an error that says so.
async fn wait_ready(ctx: &Ctx, kind: &dyn Kind, d: &Desired, live: &Observed) -> anyhow::Result<()> {
    progress(&format!("waiting for {} {} [{}] to become ready", d.kind, d.id, live.physical_id));
    super::wait::until(ctx, &format!("{} {} [{}] to become ready", d.kind, d.id, live.physical_id), || async {
        match observe_one(ctx, kind, d).await?.map(|o| o.status) {
            Some(Status::Ready) => Ok(Some(())),
            Some(Status::Failed(why)) => Err(anyhow!("{} {} failed: {why}; the next apply replaces it", d.kind, d.id)),
            // Usable but unhealthy: dependents go on; the end of apply reports it.
            Some(Status::Degraded(_)) => Ok(Some(())),
            Some(Status::Pending(_)) => Ok(None),
            Some(Status::Leaving(why)) => Err(anyhow!("{} {} is being deleted ({why}); run apply again", d.kind, d.id)),
            None => Err(anyhow!("{} {} disappeared while waiting for it; run apply again", d.kind, d.id)),
        }
    })
    .await
}

async fn converge_step(ctx: &Ctx, kind: &dyn Kind, d: &Desired, fields: &Fields, live: Option<&Observed>) -> anyhow::Result<Outcome> {
    let Some(live) = live else {
        let created = kind.create(ctx, &d.id, &for_create(fields)).await.with_context(|| format!("creating {} {}", d.kind, d.id))?;
        return Ok(Outcome::Created(created));
    };
    let changes = diff_fields(fields, &live.fields, kind.unreported());
    if changes.is_empty() {
        return Ok(Outcome::Unchanged);
    }
    if let Some(reason) = replace_reason(kind, &changes) {
        progress(&format!("replacing {} {} [{}]: {reason}", d.kind, d.id, live.physical_id));
        delete_one(ctx, kind, live).await?;
        let created = kind.create(ctx, &d.id, &for_create(fields)).await.with_context(|| format!("creating {} {}", d.kind, d.id))?;
        return Ok(Outcome::Created(created));
    }
    let identity = kind
        .update(ctx, live, &for_update(fields, &live.fields), &changes)
        .await
        .with_context(|| format!("updating {} {} [{}]", d.kind, d.id, live.physical_id))?;
    Ok(Outcome::Updated(changes.into_iter().map(|c| c.field).collect(), identity))
}

/// Deletes one resource; a "gone" answer is done. After a retryable failure it observes the
/// resource again: gone is done; still there, the next attempt starts from what it is now (a
/// gateway already detached, an association already removed by the failed attempt is not
/// detached or removed again).
async fn delete_one(ctx: &Ctx, kind: &dyn Kind, live: &Observed) -> anyhow::Result<()> {
    let mut budget = RetryBudget::new(&ctx.settings);
    let mut current = live.clone();
    loop {
        // Already on its way out (an earlier run's delete): not deleted again, waited for.
        if leaving(&current) {
            match wait_while_leaving(ctx, kind, &current).await? {
                None => return Ok(()),
                Some(now) => current = now,
            }
            continue;
        }
        match kind.delete(ctx, &current).await.with_context(|| format!("deleting {} {} [{}]", live.kind, live.id, live.physical_id)) {
            Ok(()) => return Ok(()),
            Err(e) if super::retry::is_gone(&e) => return Ok(()),
            Err(e) => {
                let Some(wait) = budget.next(&e) else { return Err(e) };
                if let Some(why) = super::wait::sleep_unless_stopped(&ctx.stop, wait).await {
                    return Err(e.context(format!("stopped ({why}) before trying again")));
                }
                match observe_again(ctx, kind, live).await? {
                    Some(now) => current = now,
                    None => return Ok(()),
                }
            }
        }
    }
}

/// Deletes (or, where the deletion policy says retain, orphans) in dependency order: each
/// resource as soon as everything that depends on it is gone (not wave by wave: a NAT gateway
/// that takes minutes to delete holds up only its subnet, not every other subnet), at most
/// `max_concurrency` at once. After a failure nothing new starts; what runs finishes.
async fn delete_in_dependency_order(
    ctx: &Ctx,
    kinds: &[Box<dyn Kind>],
    victims: &[&Observed],
    desired: &[Desired],
) -> anyhow::Result<(usize, usize)> {
    let deps = super::graph::dependencies(victims, desired);
    // What must be gone before each victim may go: the victims that depend on it.
    let dependents: Vec<BTreeSet<usize>> =
        (0..victims.len()).map(|i| (0..victims.len()).filter(|&j| deps[j].contains(&i)).collect()).collect();
    let (mut deleted, mut retained) = (0, 0);
    let mut timeline = super::timeline::Timeline::default();
    let mut step_of: BTreeMap<usize, usize> = BTreeMap::new();
    let mut pending: Vec<usize> = super::graph::waves_of(&deps).into_iter().flatten().collect();
    let mut gone: BTreeSet<usize> = BTreeSet::new();
    let mut errors = Vec::new();
    let mut stopped = None;
    let mut running = FuturesUnordered::new();
    loop {
        while errors.is_empty() && stopped.is_none() && running.len() < ctx.settings.max_concurrency.max(1) {
            if let Some(why) = ctx.stop.requested() {
                stopped = Some(why);
                break;
            }
            let ready = pending.iter().position(|i| dependents[*i].iter().all(|d| gone.contains(d)));
            // A dependency cycle (never expected): what remains goes when nothing else runs.
            let Some(at) = ready.or_else(|| (running.is_empty() && !pending.is_empty()).then_some(0)) else { break };
            let i = pending.remove(at);
            running.push(async move {
                let started = Instant::now();
                let o = victims[i];
                let result: anyhow::Result<bool> = async {
                    let kind = kind_of(kinds, o.kind)?;
                    if ownership::retained(&o.fields) {
                        progress(&format!("retaining {} {} [{}]: no longer managed, not deleted", o.kind, o.id, o.physical_id));
                        kind.orphan(ctx, o).await.with_context(|| format!("retaining {} {}", o.kind, o.id))?;
                        Ok(false)
                    } else {
                        progress(&format!("deleting {} {} [{}]", o.kind, o.id, o.physical_id));
                        delete_one(ctx, kind, o).await.map(|_| true)
                    }
                }
                .await;
                (i, started, result)
            });
        }
        let Some((i, started, result)) = running.next().await else { break };
        let after = dependents[i].iter().filter_map(|d| step_of.get(d).copied()).collect();
        step_of.insert(i, timeline.record(victims[i].kind, &victims[i].id, started, after));
        match result {
            Ok(true) => deleted += 1,
            Ok(false) => retained += 1,
            Err(e) => errors.push(format!("{e:#}")),
        }
        gone.insert(i);
    }
    if let Some(line) = timeline.summary() {
        progress(&line);
    }
    if !errors.is_empty() {
        return Err(anyhow!("{}\nRun the command again once the cause is fixed; what was deleted stays deleted.", errors.join("\n")));
    }
    if let Some(why) = stopped {
        return Err(anyhow!("stopped before deleting everything: {why}. What was deleted stays deleted; run the command again to finish."));
    }
    Ok((deleted, retained))
}

/// The order destroy goes in: dependency waves, dependents first.
pub fn destroy_order<'a>(observed: &'a [Observed], desired: &[Desired]) -> Vec<&'a Observed> {
    let all: Vec<&Observed> = observed.iter().collect();
    super::graph::deletion_waves(&all, desired).into_iter().flatten().map(|i| all[i]).collect()
}

/// Deletes everything the stack owns (found by its tags), dependents first; retained
/// resources are orphaned. Returns (deleted, retained).
pub async fn destroy(ctx: &Ctx, kinds: &[Box<dyn Kind>], observed: &[Observed], desired: &[Desired]) -> anyhow::Result<(usize, usize)> {
    let all: Vec<&Observed> = observed.iter().collect();
    delete_in_dependency_order(ctx, kinds, &all, desired).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{reference, reference_to};
    use futures::future::BoxFuture;
    use serde_json::json;

    /// Deletes note when they ended (the kind "slow" takes 400 ms); kinds without a log are
    /// never deleted.
    type Ended = std::sync::Arc<std::sync::Mutex<Vec<(String, Instant)>>>;
    struct FakeKind(&'static str, Option<Ended>);
    impl Kind for FakeKind {
        fn name(&self) -> &'static str {
            self.0
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

    fn kinds() -> Vec<Box<dyn Kind>> {
        vec![Box::new(FakeKind("a", None)), Box::new(FakeKind("b", None)), Box::new(FakeKind("rev", None)), Box::new(FakeKind("rt", None))]
    }

    /// A slow delete holds up only what it sits in: the other subnet goes as soon as its own
    /// dependent is gone, not after the whole "wave" of dependents.
    #[tokio::test]
    async fn a_slow_delete_holds_up_only_what_depends_on_it() {
        let ended = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kinds: Vec<Box<dyn Kind>> =
            ["slow", "fast", "base"].into_iter().map(|name| Box::new(FakeKind(name, Some(ended.clone()))) as Box<dyn Kind>).collect();
        let victims = [
            live("slow", "nat", "nat-1", json!({"subnet": "subnet-1"})),
            live("fast", "endpoint", "ep-2", json!({"subnet": "subnet-2"})),
            live("base", "subnet-a", "subnet-1", json!({})),
            live("base", "subnet-b", "subnet-2", json!({})),
        ];
        let ctx = Ctx::from_env("us-east-1", crate::engine::Settings::new("stack", BTreeMap::new())).await;
        let refs: Vec<&Observed> = victims.iter().collect();
        assert_eq!(delete_in_dependency_order(&ctx, &kinds, &refs, &[]).await.unwrap(), (4, 0));
        let ended = ended.lock().unwrap().clone();
        let at = |id: &str| ended.iter().find(|(x, _)| x == id).unwrap_or_else(|| panic!("{id} not deleted: {ended:?}")).1;
        assert!(at("subnet-b") < at("nat"), "subnet-b waited for the NAT gateway it does not depend on: {ended:?}");
        assert!(at("subnet-a") > at("nat"), "subnet-a went before the NAT gateway in it: {ended:?}");
    }

    /// A delete-first replacement under something that stays and holds it is refused; under
    /// something that does not hold what it uses (a route table's route to a NAT gateway) it
    /// goes ahead.
    #[test]
    fn only_dependents_that_hold_what_they_use_refuse_a_delete_first_replacement() {
        let sub = desired("a", "sub", json!({}));
        let table = desired("rt", "table", json!({"subnets": reference("sub")}));
        let service = desired("b", "service", json!({"subnets": reference("sub")}));
        let first = BTreeSet::from(["sub"]);
        assert_eq!(stranded_by_delete_first(&kinds(), &[sub.clone(), table.clone()], &first, |_| Action::Update), None);
        let why = stranded_by_delete_first(&kinds(), &[sub, table, service], &first, |_| Action::Update).unwrap();
        assert!(why.contains("b service still uses `sub`") && !why.contains("table"), "{why}");
    }

    /// A create-before-destroy replacement inside something replaced delete-first (a security
    /// group in a VPC being replaced) goes delete-first too; on its own it overlaps.
    #[test]
    fn replacements_inside_a_delete_first_one_go_first_too() {
        let vpc = desired("a", "vpc", json!({}));
        let sg = desired("b", "sg", json!({"vpc": reference("vpc")}));
        let other = desired("b", "sg-other", json!({}));
        let got = delete_first(&[
            (&vpc, Replacement::DeleteBeforeCreate),
            (&sg, Replacement::CreateBeforeDestroy),
            (&other, Replacement::CreateBeforeDestroy),
        ]);
        assert_eq!(got, BTreeSet::from(["vpc", "sg"]));
        let alone = delete_first(&[(&sg, Replacement::CreateBeforeDestroy)]);
        assert!(alone.is_empty());
    }
    fn desired(kind: &'static str, id: &str, fields: serde_json::Value) -> Desired {
        Desired { kind, id: id.into(), fields: fields.as_object().unwrap().clone(), after: vec![] }
    }
    fn live(kind: &'static str, id: &str, phys: &str, fields: serde_json::Value) -> Observed {
        Observed::new(kind, id.into(), phys.into(), fields.as_object().unwrap().clone())
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
        // Attributed to the replacement, not to drift.
        assert_eq!((p.resources[1].cause, p.resources[1].follows.as_deref()), (Some(crate::plan::Cause::Cascade), Some("a root")));
        assert_eq!(p.resources[0].cause, Some(crate::plan::Cause::Unknown), "the root's own cause (no applied tags here)");
    }

    /// A dependent that only moves to the replacement (an internet gateway to the new VPC) is
    /// an update that follows the replacement; one with a difference of its own keeps its
    /// own cause.
    #[test]
    fn changes_forced_by_a_replacement_say_so() {
        let d = vec![
            desired("a", "root", json!({"cidr": "10.1.0.0/16"})),
            desired("b", "moves", json!({"link": reference("root")})),
            desired("b", "also-drifted", json!({"link": reference("root"), "size": 2})),
        ];
        let obs = vec![
            live("a", "root", "r-1", json!({"cidr": "10.0.0.0/16"})),
            live("b", "moves", "m-1", json!({"link": "r-1"})),
            live("b", "also-drifted", "x-1", json!({"link": "r-1", "size": 3})),
        ];
        let p = plan("s", &kinds(), &d, &obs, &BTreeMap::new()).unwrap();
        assert_eq!(p.resources[1].action, Action::Update);
        assert_eq!((p.resources[1].cause, p.resources[1].follows.as_deref()), (Some(crate::plan::Cause::Cascade), Some("a root")));
        assert_eq!((p.resources[2].cause, p.resources[2].follows.as_deref()), (Some(crate::plan::Cause::Unknown), None));
    }

    #[test]
    fn duplicates_are_deleted_keeping_the_referenced_one() {
        let d = vec![desired("a", "root", json!({})), desired("b", "child", json!({"parent": reference("root")}))];
        let obs = vec![
            live("a", "root", "r-1", json!({})),
            live("a", "root", "r-2", json!({})),
            live("b", "child", "c-1", json!({"parent": "r-2"})),
        ];
        let p = plan("s", &kinds(), &d, &obs, &BTreeMap::new()).unwrap();
        assert_eq!(p.resources[0].physical_id.as_deref(), Some("r-2"), "the duplicate the child uses is kept");
        assert_eq!(p.resources[0].action, Action::NoOp);
        assert_eq!(p.resources[1].action, Action::NoOp);
        assert_eq!(p.resources[2].physical_id.as_deref(), Some("r-1"));
        assert!(matches!(&p.resources[2].action, Action::Delete { reason } if reason.contains("duplicate")));
        // Nobody references either: the first listed stays.
        let p = plan("s", &kinds(), &d[..1], &obs[..2], &BTreeMap::new()).unwrap();
        assert_eq!(p.resources[0].physical_id.as_deref(), Some("r-1"));
    }

    /// A resource an earlier run was deleting (a NAT gateway `deleting`) is neither kept nor
    /// deleted again: its logical id is created anew, after it is gone, and waiting for it is
    /// not a destructive step (an unattended run does it too).
    #[test]
    fn what_is_on_its_way_out_is_waited_for_not_kept() {
        let d = vec![desired("a", "root", json!({})), desired("b", "child", json!({"parent": reference("root")}))];
        let going = Observed { status: Status::Leaving("deleting".into()), ..live("a", "root", "r-old", json!({})) };
        let obs = vec![going, live("b", "child", "c-1", json!({"parent": "r-old"}))];
        let p = plan("s", &kinds(), &d, &obs, &BTreeMap::new()).unwrap();
        assert_eq!(
            actions(&p),
            vec![
                ("root".into(), Action::Create),
                (
                    "child".into(),
                    Action::Replace { reason: "`parent` cannot change in place and depends on a resource being (re)created".into() }
                ),
                ("root".into(), Action::Delete { reason: LEAVING.into() }),
            ]
        );
        assert!(!p.resources[2].action.is_destructive());
        assert_eq!(p.resources[2].physical_id.as_deref(), Some("r-old"));
    }

    /// A create-before-destroy replacement interrupted after the create: two copies of one
    /// logical id, the old one still referenced, the new one already what the spec asks. The
    /// new one is kept (the dependent moves to it); no third copy is planned.
    #[test]
    fn the_copy_that_matches_the_spec_finishes_an_interrupted_replacement() {
        let d = vec![
            desired("a", "eip", json!({})),
            desired("b", "nat", json!({"alloc": reference("eip")})),
            desired("a", "route", json!({"nat": reference("nat")})),
        ];
        let obs = vec![
            live("a", "eip", "eip-new", json!({})),
            Observed { created: Some(100), ..live("b", "nat", "nat-old", json!({"alloc": "eip-old"})) },
            Observed { created: Some(200), ..live("b", "nat", "nat-new", json!({"alloc": "eip-new"})) },
            live("a", "route", "r-1", json!({"nat": "nat-old"})),
        ];
        let p = plan("s", &kinds(), &d, &obs, &BTreeMap::new()).unwrap();
        let nat = p.resources.iter().find(|r| r.id == "nat").unwrap();
        assert_eq!((nat.physical_id.as_deref(), &nat.action), (Some("nat-new"), &Action::NoOp), "{:?}", actions(&p));
        let route = p.resources.iter().find(|r| r.id == "route").unwrap();
        assert_eq!(route.action, Action::Update, "moves to the kept copy");
        assert_eq!(route.changes[0].after, json!("nat-new"));
        assert!(p.resources.iter().all(|r| r.action != Action::Create), "{:?}", actions(&p));
        // The old copy goes in the same apply, after the route moved (it only is updated).
        let old = p.resources.iter().find(|r| r.physical_id.as_deref() == Some("nat-old")).unwrap();
        assert_eq!(old.action, Action::Delete { reason: DUPLICATE.into() });
    }

    #[test]
    fn of_unreferenced_duplicates_the_oldest_stays() {
        let d = vec![desired("a", "root", json!({}))];
        let aged = |phys: &str, created: Option<i64>| Observed { created, ..live("a", "root", phys, json!({})) };
        let obs = vec![aged("r-new", Some(200)), aged("r-unknown", None), aged("r-old", Some(100))];
        let p = plan("s", &kinds(), &d, &obs, &BTreeMap::new()).unwrap();
        let kept = p.resources.iter().find(|r| r.action == Action::NoOp).unwrap();
        assert_eq!(kept.physical_id.as_deref(), Some("r-old"));
        assert_eq!(p.resources.iter().filter(|r| matches!(r.action, Action::Delete { .. })).count(), 2);
    }

    /// Two duplicates each used by something: one is kept, the other is not deleted under its
    /// dependent (which apply moves to the kept one; the next run removes the duplicate).
    #[test]
    fn a_duplicate_something_depends_on_is_never_deleted() {
        let d = vec![
            desired("a", "root", json!({})),
            desired("b", "child", json!({"parent": reference("root")})),
            desired("b", "other", json!({"parent": reference("root")})),
        ];
        let obs = vec![
            live("a", "root", "r-1", json!({})),
            live("a", "root", "r-2", json!({})),
            live("b", "child", "c-1", json!({"parent": "r-1"})),
            live("b", "other", "o-1", json!({"parent": "r-2"})),
        ];
        let p = plan("s", &kinds(), &d, &obs, &BTreeMap::new()).unwrap();
        assert!(p.resources.iter().all(|r| !matches!(r.action, Action::Delete { .. })), "{:?}", actions(&p));
        // The dependent of the other duplicate moves to the kept one (here by replacement: the
        // fake kind cannot change `parent` in place); the one on the kept one stays.
        let moving: Vec<String> = p.resources.iter().filter(|r| r.action != Action::NoOp).map(|r| r.id.clone()).collect();
        assert_eq!(moving.len(), 1, "{:?}", actions(&p));
        assert!(moving[0] == "child" || moving[0] == "other");
    }

    #[test]
    fn an_update_that_makes_a_new_identity_repoints_dependents() {
        let d = vec![desired("rev", "td", json!({"image": "b"})), desired("a", "svc", json!({"td": reference_to("td", "arn")}))];
        let mut td = live("rev", "td", "td-1", json!({"image": "a"}));
        td.attrs.insert("arn".into(), "arn:td:1".into());
        let obs = vec![td, live("a", "svc", "s-1", json!({"td": "arn:td:1"}))];
        let p = plan("s", &kinds(), &d, &obs, &BTreeMap::new()).unwrap();
        assert_eq!(p.resources[0].action, Action::Update);
        assert_eq!(p.resources[1].action, Action::Update);
        assert_eq!(p.resources[1].changes[0].after, json!(crate::engine::UNKNOWN));
    }

    #[test]
    fn failed_resources_are_replaced_and_retained_ones_are_not_deleted() {
        let d = vec![desired("a", "root", json!({}))];
        let mut root = live("a", "root", "r-1", json!({}));
        root.status = Status::Failed("INACTIVE".into());
        let logs = live("b", "old-logs", "l-1", json!({"tags": {"reconciler:deletion-policy": "retain"}}));
        let p = plan("s", &kinds(), &d, &[root, logs], &BTreeMap::new()).unwrap();
        assert!(matches!(&p.resources[0].action, Action::Replace { reason } if reason.contains("INACTIVE")));
        assert!(matches!(&p.resources[1].action, Action::Retain { .. }));
    }
}
