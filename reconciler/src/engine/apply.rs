//! Apply: live state converged to the plan, each resource as soon as what it depends on is
//! done, at most `max_concurrency` at work at a time (`slots.rs`); then what left the spec is deleted (what sits in
//! a delete-first replacement goes before it, at the start).

use super::budget::RetryBudget;
use super::destroy::{delete_in_dependency_order, delete_one};
use super::diff::{diff_fields, for_create, for_update};
use super::graph::{deps_of, topo_order};
use super::observe::{leaving, observe_again, observe_one, wait_while_leaving};
use super::planner::{index_live, removed, replace_reason, replacements, resolve_fields};
use super::ready::{after_step, Outcome};
use super::replacement::{first_phase, refusal};
use super::slots::{Next, Slots};
use super::{kind_of, progress};
use super::{Ctx, Desired, DynKind, Fields, Identity, Observed, Status};
use crate::changes::{Action, Plan, ResourcePlan, DUPLICATE, DUPLICATE_IN_USE};
use anyhow::{anyhow, Context as _};
use futures::stream::FuturesUnordered;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

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

/// Converges live state to `desired`. `plan` must have been computed from the same inputs;
/// fields are re-resolved as dependencies are created, so later nodes see new AWS ids.
/// Four phases, one function each: wait for what is still being deleted, delete the old half
/// of delete-first replacements (and what left the spec that sits in them), create and
/// update, then delete what else left the spec, duplicates and create-before-destroy old halves.
pub async fn apply(
    ctx: &Ctx,
    kinds: &[Box<dyn DynKind>],
    desired: &[Desired],
    observed: &[Observed],
    externals: &BTreeMap<String, String>,
    plan: &Plan,
    destructive: Destructive,
) -> anyhow::Result<ApplyReport> {
    // Held by logical id, except duplicates' deletes: a duplicate shares its logical id with
    // the copy that is kept (and converged); those are held by `hold` (see `Run::removed`).
    let hold = destructive == Destructive::Hold;
    let held = match destructive {
        Destructive::Allow => BTreeSet::new(),
        Destructive::Hold => plan.destructive().into_iter().filter(|r| !is_duplicate(&r.action)).map(|r| (r.kind, r.id.as_str())).collect(),
    };
    let order = topo_order(desired, externals)?;
    let (live, _, _) = index_live(kinds, observed, desired, externals);
    let run = Run { ctx, kinds, desired, observed, externals, plan, order, live, held, hold };
    let mut report = ApplyReport { held: run.held_steps(), ..ApplyReport::default() };
    run.wait_for_what_is_leaving().await?;
    let (old_halves, deleted) = run.delete_first_replacements(&mut report).await?;
    let (mut failed, hints) = run.create_and_update(&deleted, &mut report).await?;
    if failed.is_empty() {
        run.delete_what_left(old_halves, &deleted, &mut report).await?;
    } else if plan.count(|a| matches!(a, Action::Delete { .. })) > 0 || !old_halves.is_empty() {
        progress("not deleting the rest of what left the spec or was replaced, because something failed above");
    }
    // Unhealthy resources this apply left as they were: see `unhealthy`.
    failed.extend(unhealthy(plan, observed));
    if !failed.is_empty() {
        let list: Vec<String> = failed.iter().map(|(id, e)| format!("  {id}: {e}")).collect();
        return Err(anyhow!(
            "apply did not finish; {} resource(s) failed:\n{}\nWhat succeeded is kept and found again by its tags: fix the cause and run apply again.{}",
            failed.len(),
            list.join("\n"),
            crate::log::hint_lines(hints.iter().map(String::as_str))
        ));
    }
    Ok(report)
}

/// One apply's inputs and what it derives from them once.
struct Run<'a> {
    ctx: &'a Ctx,
    kinds: &'a [Box<dyn DynKind>],
    desired: &'a [Desired],
    observed: &'a [Observed],
    externals: &'a BTreeMap<String, String>,
    plan: &'a Plan,
    /// Indexes of `desired`, dependencies first.
    order: Vec<usize>,
    /// The live resource kept for each (kind, logical id).
    live: BTreeMap<(&'a str, &'a str), &'a Observed>,
    /// Destructive steps held back (unattended): the resource stays as it is (a held
    /// replacement keeps the old one, which dependents keep pointing at).
    held: BTreeSet<(&'a str, &'a str)>,
    /// Unattended: destructive steps are held, the deletes of duplicates in use among them.
    hold: bool,
}

/// A duplicate's delete (a logical id's other copy, not the resource the spec means).
fn is_duplicate(a: &Action) -> bool {
    matches!(a, Action::Delete { reason } if reason == DUPLICATE || reason == DUPLICATE_IN_USE)
}

impl<'a> Run<'a> {
    /// The held steps, as the report lists them: `kind id: action (reason)`.
    fn held_steps(&self) -> Vec<String> {
        let held = self.plan.destructive().into_iter().filter(|r| {
            if is_duplicate(&r.action) {
                self.hold
            } else {
                self.held.contains(&(r.kind, r.id.as_str()))
            }
        });
        held.filter_map(|r| {
            let what = match &r.action {
                Action::Replace { reason } => format!("replace ({reason})"),
                Action::Delete { reason } => format!("delete ({reason})"),
                Action::Retain { reason } => format!("retain ({reason})"),
                _ => return None,
            };
            Some(format!("{} {}: {what}", r.kind, r.id))
        })
        .collect()
    }

    /// What this apply does to `d` (a held step does nothing).
    fn action_of(&self, d: &Desired) -> Action {
        if self.held.contains(&(d.kind, d.id.as_str())) {
            return Action::NoOp;
        }
        self.planned(d).map(|r| r.action.clone()).unwrap_or(Action::Create)
    }

    fn planned(&self, d: &Desired) -> Option<&'a ResourcePlan> {
        self.plan.resources.iter().find(|r| r.kind == d.kind && r.id == d.id)
    }

    fn live_of(&self, d: &Desired) -> Option<&'a Observed> {
        self.live.get(&(d.kind, d.id.as_str())).copied()
    }

    /// Phase 0. What earlier runs (or AWS) are still deleting is waited for until it is gone:
    /// its successor would clash with it (a NAT gateway's Elastic IP, an ECS service's name),
    /// and what it sits in cannot go before it does.
    async fn wait_for_what_is_leaving(&self) -> anyhow::Result<()> {
        let on_the_way_out = self.observed.iter().filter(|o| leaving(o)).map(|o| async move {
            let kind = kind_of(self.kinds, o.kind)?;
            match wait_while_leaving(self.ctx, kind, o).await? {
                None => Ok(()),
                Some(_) => Err(anyhow!("{} {} [{}] stopped being deleted; run apply again to plan with it", o.kind, o.id, o.physical_id)),
            }
        });
        futures::future::try_join_all(on_the_way_out).await?;
        Ok(())
    }

    /// Phase 1. Replacements that AWS forces to go delete-first: the old ones go first,
    /// dependents before their dependencies. A resource whose dependency goes delete-first
    /// goes delete-first too: it cannot outlive what it lives in (a security group in a VPC
    /// being replaced). Returns the old halves of the create-before-destroy replacements,
    /// kept until the new ones exist and dependents point at them (phase 3), and what it
    /// deleted: the delete-first old halves and what used them (phase 3 skips those).
    async fn delete_first_replacements(&self, report: &mut ApplyReport) -> anyhow::Result<(Vec<&'a Observed>, Vec<&'a Observed>)> {
        let replaced =
            replacements(self.kinds, self.desired, &self.order, &self.plan.resources, |d| self.held.contains(&(d.kind, d.id.as_str())))?;
        let phase = first_phase(&replaced, &self.live, &self.removed(), self.desired);
        if let Some(why) = refusal(self.kinds, self.desired, &phase, |d| self.action_of(d), &self.live) {
            return Err(anyhow!("{why}"));
        }
        // The old halves, and what leaves the spec but still uses one (a subnet dropped from the
        // spec in the VPC being replaced: AWS refuses to delete what is used), in one order,
        // dependents first (for the old halves, the spec's order reversed).
        let going = phase.going();
        for i in super::graph::deletion_waves(&going, self.desired).into_iter().flatten() {
            let o = going[i];
            let kind = kind_of(self.kinds, o.kind)?;
            if i >= phase.old.len() {
                progress(&format!(
                    "deleting {} {} [{}] now: it left the spec and uses what is replaced delete-first",
                    o.kind, o.id, o.physical_id
                ));
                delete_one(self.ctx, kind, o).await.with_context(|| format!("deleting {} {}", o.kind, o.id))?;
                report.deleted += 1;
                continue;
            }
            let reason = match self.plan.resources.iter().find(|r| r.kind == o.kind && r.id == o.id).map(|r| &r.action) {
                Some(Action::Replace { reason }) => reason.as_str(),
                _ => "replaced",
            };
            progress(&format!("replacing {} {} [{}]: {reason}; deleting the old one", o.kind, o.id, o.physical_id));
            delete_one(self.ctx, kind, o).await.with_context(|| format!("deleting {} {} for replacement", o.kind, o.id))?;
        }
        let old_halves =
            replaced.iter().filter(|(d, _)| !phase.ids.contains(d.id.as_str())).filter_map(|(d, _)| self.live_of(d)).rev().collect();
        Ok((old_halves, going))
    }

    /// What phase 3 deletes or retains: what left the spec, duplicates (not what is already
    /// leaving, nor what is held back).
    fn removed(&self) -> Vec<&'a Observed> {
        removed(&self.plan.resources, self.observed, |r| match &r.action {
            // Cleanup, never held: nothing uses it, or what does moves off it first.
            Action::Delete { reason } if reason == DUPLICATE => true,
            // Held with its users (which go or are replaced).
            Action::Delete { reason } if reason == DUPLICATE_IN_USE => !self.hold,
            _ => !self.held.contains(&(r.kind, r.id.as_str())),
        })
    }

    /// Phase 2. Creates and updates, in dependency order, concurrently where independent (at
    /// most `max_concurrency` at work at a time: a step that waits gives its slot back). Returns what failed or was skipped, by logical id,
    /// and what to do about the failures where that is known (one hint per kind of failure).
    async fn create_and_update(
        &self,
        deleted: &[&Observed],
        report: &mut ApplyReport,
    ) -> anyhow::Result<(BTreeMap<String, String>, BTreeSet<String>)> {
        let desired = self.desired;
        let mut ids: BTreeMap<String, Identity> = self.externals.iter().map(|(k, v)| (k.clone(), Identity::id(v.clone()))).collect();
        for d in desired {
            if let (Some(l), Action::NoOp | Action::Update) = (self.live_of(d), self.action_of(d)) {
                ids.insert(d.id.clone(), l.identity());
            }
        }
        let deps: Vec<BTreeSet<String>> =
            desired.iter().map(|d| deps_of(d).into_iter().filter(|x| !self.externals.contains_key(x)).collect()).collect();
        let mut pending: Vec<usize> = self.order.clone();
        let mut done: BTreeSet<String> = BTreeSet::new();
        let mut failed: BTreeMap<String, String> = BTreeMap::new();
        let mut hints = BTreeSet::new();
        let mut running = FuturesUnordered::new();
        let mut timeline = super::timeline::Timeline::default();
        let mut step_of: BTreeMap<&str, usize> = BTreeMap::new();
        let mut slots = Slots::new(self.ctx.settings.max_concurrency);
        loop {
            let mut i = 0;
            // A step is ready to start and no slot is free.
            let mut blocked = false;
            while i < pending.len() {
                // A signal or a lost lock: what runs finishes, nothing new starts.
                if let Some(why) = self.ctx.stop.requested() {
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
                if self.held.contains(&(d.kind, d.id.as_str())) {
                    pending.remove(i);
                    done.insert(d.id.clone());
                    continue;
                }
                let Some(slot) = slots.try_take() else {
                    blocked = true;
                    break;
                };
                pending.remove(i);
                let kind = kind_of(self.kinds, d.kind)?;
                let fields = resolve_fields(&d.fields, &ids);
                let current = match self.action_of(d) {
                    Action::Create | Action::Replace { .. } => None,
                    _ => self.live_of(d),
                };
                // What still carries the logical id (an old half kept until phase 3, duplicates).
                let known: Vec<&str> = self
                    .observed
                    .iter()
                    .filter(|o| o.kind == d.kind && o.id == d.id && !deleted.iter().any(|x| std::ptr::eq(*x, *o)))
                    .filter(|o| current.is_none_or(|c| c.physical_id != o.physical_id))
                    .map(|o| o.physical_id.as_str())
                    .collect();
                let ctx = self.ctx;
                running.push(slots.run(slot, async move {
                    let started = Instant::now();
                    let r = converge_one(ctx, kind, d, &fields, current, &known).await;
                    (n, started, r)
                }));
            }
            let (n, started, result) = match slots.next(&mut running, blocked && self.ctx.stop.requested().is_none()).await {
                Next::Ended(ended) => ended,
                Next::Slot => continue,
                Next::Done => break,
            };
            let d = &desired[n];
            let after = deps[n].iter().filter_map(|x| step_of.get(x.as_str()).copied()).collect();
            step_of.insert(d.id.as_str(), timeline.record(d.kind, &d.id, started, after));
            match result {
                Ok(Outcome::Created(identity) | Outcome::Replaced(identity)) => {
                    progress(&format!("created {} {} [{}] in {:.1?}", d.kind, d.id, identity.physical_id, started.elapsed()));
                    if matches!(self.action_of(d), Action::Replace { .. }) {
                        report.replaced += 1;
                    } else {
                        report.created += 1;
                    }
                    ids.insert(d.id.clone(), identity);
                    done.insert(d.id.clone());
                }
                Ok(Outcome::Updated(fields, identity)) => {
                    progress(&format!("updated {} {} ({}) in {:.1?}", d.kind, d.id, fields.join(", "), started.elapsed()));
                    if let Some(r) = self.planned(d) {
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
                    hints.extend(super::advice::advice(&e));
                }
            }
        }
        if report.created + report.updated + report.replaced > 0 {
            if let Some(line) = timeline.summary() {
                progress(&line);
            }
        }
        Ok((failed, hints))
    }

    /// Phase 3, only when everything else succeeded: the old halves of create-before-destroy
    /// replacements, resources no longer in the spec, and duplicates, dependents first.
    async fn delete_what_left(&self, old_halves: Vec<&'a Observed>, deleted: &[&Observed], report: &mut ApplyReport) -> anyhow::Result<()> {
        let mut victims: Vec<&Observed> = self.removed().into_iter().filter(|o| !deleted.iter().any(|e| std::ptr::eq(*e, *o))).collect();
        victims.extend(old_halves);
        let (deleted, retained) = delete_in_dependency_order(self.ctx, self.kinds, &victims, self.desired).await?;
        report.deleted += deleted;
        report.retained += retained;
        Ok(())
    }
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

/// Converges one resource. After a retryable failure nothing is re-sent blindly: the resource
/// is observed again and converged from what is there (a create that did happen is kept).
/// Each error class has its own budget ([`RetryBudget`]): a role not assumable yet is retried
/// until the propagation deadline, a conflict until the conflict deadline.
/// A resource that is still becoming ready (found Pending) is waited for before dependents run.
/// Looking again, the resource being converged is found by its AWS id; a new one (after a
/// create that may have happened) is one with the logical id that is not `known`: not in the
/// snapshot the plan was made from (the old half of a replacement keeps the logical id until
/// phase 3 deletes it, and so do duplicates).
async fn converge_one(
    ctx: &Ctx,
    kind: &dyn DynKind,
    d: &Desired,
    fields: &Fields,
    live: Option<&Observed>,
    known: &[&str],
) -> anyhow::Result<Outcome> {
    let was_missing = live.is_none();
    let started_as = live.map(|l| l.physical_id.clone());
    let mut live = live.cloned();
    let mut budget = RetryBudget::new(&ctx.settings);
    loop {
        match converge_step(ctx, kind, d, fields, live.as_ref()).await {
            Ok(outcome) => {
                let unchanged = matches!(outcome, Outcome::Unchanged);
                let outcome = match (was_missing, outcome, &live) {
                    // Created by an earlier attempt that reported failure: still a creation.
                    (true, Outcome::Unchanged, Some(l)) => Outcome::Created(l.identity()),
                    (true, Outcome::Updated(_, id), Some(l)) => Outcome::Created(id.unwrap_or_else(|| l.identity())),
                    // An earlier attempt made a new identity (a new revision) and its answer
                    // was lost: dependents must get the new one.
                    (false, Outcome::Unchanged, Some(l)) if started_as.as_ref() != Some(&l.physical_id) => {
                        Outcome::Updated(vec!["by an earlier attempt whose answer was lost".into()], Some(l.identity()))
                    }
                    (false, Outcome::Updated(f, None), Some(l)) if started_as.as_ref() != Some(&l.physical_id) => {
                        Outcome::Updated(f, Some(l.identity()))
                    }
                    (_, outcome, _) => outcome,
                };
                after_step(ctx, kind, d, fields, &outcome, live.as_ref(), unchanged).await?;
                return Ok(outcome);
            }
            Err(e) => {
                let Some(wait) = budget.next(&e) else { return Err(e) };
                progress(
                    &format!("{} {}: {e:#}; observing again and retrying in {wait:.1?} (attempt {})", d.kind, d.id, budget.attempt(),),
                );
                if let Some(why) = super::wait::sleep_unless_stopped(&ctx.stop, wait).await {
                    return Err(e.context(format!("stopped ({why}) before trying again")));
                }
                live = match &live {
                    Some(l) => observe_again(ctx, kind, l).await?,
                    None => None,
                };
                // Missing (never there, or deleted by a replacement in place): a new one may be.
                if live.is_none() {
                    live = observe_one(ctx, kind, d, known).await?;
                }
                if live.is_none() && super::retry::is_ambiguous(&e) {
                    live = find_lost_create(ctx, kind, d, known).await?;
                }
            }
        }
    }
}

/// After a create that may have happened (its answer was lost or a 5xx), the new resource
/// can be missing from listings for a while: look again until `listing_lag` has passed before
/// the engine creates it anew, so that a lost answer never becomes a duplicate.
async fn find_lost_create(ctx: &Ctx, kind: &dyn DynKind, d: &Desired, known: &[&str]) -> anyhow::Result<Option<Observed>> {
    let s = &ctx.settings;
    let started = Instant::now();
    progress(&format!(
        "{} {}: the create may have happened; looking for it for up to {:.0?} before creating it again",
        d.kind, d.id, s.listing_lag
    ));
    while started.elapsed() < s.listing_lag {
        let wait = s.poll_interval.min(s.listing_lag.saturating_sub(started.elapsed()));
        // Stopped: the create may have happened, so it is not sent again; the next run finds it.
        if let Some(why) = super::wait::sleep_unless_stopped(&ctx.stop, wait).await {
            return Err(anyhow!(
                "stopped ({why}) while looking for {} {} after a create whose answer was lost; run the command again",
                d.kind,
                d.id
            ));
        }
        if let Some(found) = observe_one(ctx, kind, d, known).await? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

async fn converge_step(ctx: &Ctx, kind: &dyn DynKind, d: &Desired, fields: &Fields, live: Option<&Observed>) -> anyhow::Result<Outcome> {
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
        return Ok(Outcome::Replaced(created));
    }
    let identity = kind
        .update(ctx, live, &for_update(fields, &live.fields), &changes)
        .await
        .with_context(|| format!("updating {} {} [{}]", d.kind, d.id, live.physical_id))?;
    Ok(Outcome::Updated(changes.into_iter().map(|c| c.field).collect(), identity))
}
