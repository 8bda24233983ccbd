//! Delete-first replacements: which replacements delete the old resource before creating the
//! new one, what leaves the spec and has to go before them, and when such a change is refused
//! before anything is touched. Pure; apply and plan both decide by these.

use super::graph::{deps_of, users_among};
use super::kind_of;
use super::ownership;
use super::{Desired, DynKind, Observed, Replacement};
use crate::changes::Action;
use std::collections::{BTreeMap, BTreeSet};

/// What goes in apply's first phase, before anything is created.
pub(super) struct FirstPhase<'d, 'o> {
    /// Logical ids of the replacements that go delete-first.
    pub ids: BTreeSet<&'d str>,
    /// Their old halves, in creation order.
    pub old: Vec<&'o Observed>,
    /// What leaves the spec (or is a duplicate) and uses one of the old halves, directly or
    /// through each other: AWS refuses to delete what is in use, so these go with them.
    pub early: Vec<&'o Observed>,
    /// Replacements their kind would order create-before-destroy that go delete-first
    /// because their old half sits in something going first (downtime: the plan says so).
    pub forced: BTreeSet<&'d str>,
}

impl<'o> FirstPhase<'_, 'o> {
    /// Everything the first phase deletes: the old halves, then what goes with them.
    pub fn going(&self) -> Vec<&'o Observed> {
        self.old.iter().chain(&self.early).copied().collect()
    }
}

/// The first phase of a run: `replaced` (in creation order) replaces the live resources of
/// `live`; `removed` is what the run deletes or retains at its end. A create-before-destroy
/// replacement goes delete-first too when its old half sits in something going first (an
/// app in a subnet that leaves the spec with the VPC being replaced): it cannot outlive it.
pub(super) fn first_phase<'d, 'o>(
    replaced: &[(&'d Desired, Replacement)],
    live: &BTreeMap<(&str, &str), &'o Observed>,
    removed: &[&'o Observed],
    desired: &[Desired],
) -> FirstPhase<'d, 'o> {
    let live_of = |d: &Desired| live.get(&(d.kind, d.id.as_str())).copied();
    let mut forced: BTreeSet<&str> = BTreeSet::new();
    loop {
        let ids = delete_first(replaced, &forced);
        let old: Vec<&Observed> = replaced.iter().filter(|(d, _)| ids.contains(d.id.as_str())).filter_map(|(d, _)| live_of(d)).collect();
        let early = users_among(&old, removed, desired);
        let mut going = old.clone();
        going.extend(early.iter().copied());
        let more: Vec<&str> = replaced
            .iter()
            .filter(|(d, _)| !ids.contains(d.id.as_str()))
            .filter(|(d, _)| live_of(d).is_some_and(|l| !users_among(&going, &[l], desired).is_empty()))
            .map(|(d, _)| d.id.as_str())
            .collect();
        if more.is_empty() {
            return FirstPhase { ids, old, early, forced };
        }
        forced.extend(more);
    }
}

/// What the plan says about the first phase besides a refusal: replacements forced
/// delete-first (unavailable until their successor exists).
pub(super) fn forced_note(phase: &FirstPhase) -> Option<String> {
    if phase.forced.is_empty() {
        return None;
    }
    let forced: Vec<&str> = phase.forced.iter().copied().collect();
    Some(format!(
        "replaced delete-first, not create-before-destroy: {} (each sits in something this change deletes first, so it cannot outlive it; it is unavailable until its successor exists)",
        forced.join(", ")
    ))
}

/// Why apply refuses this first phase before any change, if it does: something that stays
/// uses an old half ([`stranded_by_delete_first`]), or something leaving the spec with
/// `deletion_policy: retain` sits in one (it is kept, so what it sits in cannot be deleted).
pub(super) fn refusal(
    kinds: &[Box<dyn DynKind>],
    desired: &[Desired],
    phase: &FirstPhase,
    action_of: impl Fn(&Desired) -> Action,
    live: &BTreeMap<(&str, &str), &Observed>,
) -> Option<String> {
    let going = phase.going();
    let live_uses = |d: &Desired| -> BTreeSet<String> {
        let Some(l) = live.get(&(d.kind, d.id.as_str())) else { return BTreeSet::new() };
        going.iter().filter(|g| !users_among(&[**g], &[*l], &[]).is_empty()).map(|g| g.id.clone()).collect()
    };
    if let Some(why) = stranded_by_delete_first(kinds, desired, &phase.ids, action_of, live_uses) {
        return Some(why);
    }
    let kept = phase.early.iter().find(|o| ownership::retained(&o.fields))?;
    let first: Vec<String> = phase.old.iter().map(|o| format!("{} {}", o.kind, o.id)).collect();
    Some(format!(
        "refusing to apply: {} {} leaves the spec with `deletion_policy: retain`, but it sits in what this change replaces delete-first ({}). Nothing was changed. AWS cannot delete what a kept resource still uses: keep {} in the spec until the replacement is done, or destroy the stack (retained data is kept) and apply the new spec.",
        kept.kind,
        kept.id,
        first.join(", "),
        kept.id
    ))
}

/// Which replacements go delete-first (`replaced` in creation order, dependencies first): the
/// ones their kind orders so, the `forced` ones, and any whose dependency goes delete-first.
pub(super) fn delete_first<'a>(replaced: &[(&'a Desired, Replacement)], forced: &BTreeSet<&str>) -> BTreeSet<&'a str> {
    let mut out: BTreeSet<&str> = BTreeSet::new();
    for (d, how) in replaced {
        let first = *how == Replacement::DeleteBeforeCreate || forced.contains(d.id.as_str());
        if first || deps_of(d).iter().any(|x| out.contains(x.as_str())) {
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
/// What a dependent uses is what the spec says and what it uses live (`live_uses`: the
/// logical ids of what goes first that its live instance names): one the spec moves elsewhere
/// still uses the old one until its update, which comes after the delete-first phase.
pub(super) fn stranded_by_delete_first(
    kinds: &[Box<dyn DynKind>],
    desired: &[Desired],
    delete_first: &BTreeSet<&str>,
    action_of: impl Fn(&Desired) -> Action,
    live_uses: impl Fn(&Desired) -> BTreeSet<String>,
) -> Option<String> {
    let mut stranded: Vec<String> = Vec::new();
    for d in desired {
        if delete_first.contains(d.id.as_str()) || matches!(action_of(d), Action::Create) {
            continue;
        }
        if !kind_of(kinds, d.kind).is_ok_and(|k| k.holds_what_it_uses()) {
            continue;
        }
        let mut uses: BTreeSet<String> = deps_of(d).into_iter().filter(|x| delete_first.contains(x.as_str())).collect();
        uses.extend(live_uses(d));
        for dep in &uses {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::reference;
    use crate::engine::testing::{desired, kinds};
    use serde_json::json;

    /// A delete-first replacement under something that stays and holds it is refused; under
    /// something that does not hold what it uses (a route table's route to a NAT gateway) it
    /// goes ahead.
    #[test]
    fn only_dependents_that_hold_what_they_use_refuse_a_delete_first_replacement() {
        let sub = desired("a", "sub", json!({}));
        let table = desired("rt", "table", json!({"subnets": reference("sub")}));
        let service = desired("b", "service", json!({"subnets": reference("sub")}));
        let first = BTreeSet::from(["sub"]);
        assert_eq!(
            stranded_by_delete_first(&kinds(), &[sub.clone(), table.clone()], &first, |_| Action::Update, |_| BTreeSet::new()),
            None
        );
        let why = stranded_by_delete_first(&kinds(), &[sub, table, service], &first, |_| Action::Update, |_| BTreeSet::new()).unwrap();
        assert!(why.contains("b service still uses `sub`") && !why.contains("table"), "{why}");
    }

    /// A create-before-destroy replacement inside something replaced delete-first (a security
    /// group in a VPC being replaced) goes delete-first too; on its own it overlaps.
    #[test]
    fn replacements_inside_a_delete_first_one_go_first_too() {
        let vpc = desired("a", "vpc", json!({}));
        let sg = desired("b", "sg", json!({"vpc": reference("vpc")}));
        let other = desired("b", "sg-other", json!({}));
        let got = delete_first(
            &[(&vpc, Replacement::DeleteBeforeCreate), (&sg, Replacement::CreateBeforeDestroy), (&other, Replacement::CreateBeforeDestroy)],
            &BTreeSet::new(),
        );
        assert_eq!(got, BTreeSet::from(["vpc", "sg"]));
        let alone = delete_first(&[(&sg, Replacement::CreateBeforeDestroy)], &BTreeSet::new());
        assert!(alone.is_empty());
    }
}
