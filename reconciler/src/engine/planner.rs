//! Plan: the desired state against the snapshot, pure (no AWS calls): what to create,
//! update, replace (and in which order) and delete, duplicates resolved.

use super::diff::{diff_fields, for_create};
use super::graph::topo_order;
use super::kind_of;
use super::observe::leaving;
use super::ownership;
use super::refs::{contains_unknown, references, resolve};
use super::replacement::{first_phase, forced_note, refusal};
use super::{Desired, DynKind, FieldChange, Fields, Identity, Observed, Replacement, Status};
use crate::changes::{Action, Plan, ResourcePlan, DUPLICATE, DUPLICATE_IN_USE, LEAVING};
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn resolve_fields(fields: &Fields, ids: &BTreeMap<String, Identity>) -> Fields {
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
pub(super) type Referrers<'o> = Vec<(&'o Observed, Vec<&'o Observed>)>;
pub(super) fn index_live<'o>(
    kinds: &[Box<dyn DynKind>],
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

pub(super) fn replace_reason(kind: &dyn DynKind, changes: &[FieldChange]) -> Option<String> {
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
    kinds: &[Box<dyn DynKind>],
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
                        Some(_) => crate::changes::Cause::Cascade,
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
    // So can one whose users all leave the spec or are replaced in this run (deleted before
    // it, dependents first).
    let wanted: BTreeSet<(&str, &str)> = desired.iter().map(|d| (d.kind, d.id.as_str())).collect();
    let mut dups_in_use: Vec<&Observed> = Vec::new();
    for (dup, referrers) in used {
        let moves = |r: &&Observed| {
            live.get(&(r.kind, r.id.as_str())).is_some_and(|k| std::ptr::eq(*k, *r))
                && resources.iter().any(|p| p.kind == r.kind && p.id == r.id && p.action == Action::Update)
        };
        // Leaves the spec, or is replaced (its old half is deleted before this one).
        let goes = |r: &&Observed| {
            let replaced = live.get(&(r.kind, r.id.as_str())).is_some_and(|k| std::ptr::eq(*k, *r))
                && resources.iter().any(|p| p.kind == r.kind && p.id == r.id && matches!(p.action, Action::Replace { .. }));
            replaced || (!wanted.contains(&(r.kind, r.id.as_str())) && !leaving(r) && !ownership::retained(&r.fields))
        };
        if referrers.iter().all(moves) {
            dups.push(dup);
        } else if referrers.iter().all(|r| moves(r) || goes(r)) {
            dups_in_use.push(dup);
        }
    }
    for o in observed {
        let duplicate = dups.iter().any(|d| std::ptr::eq(*d, o));
        let action = if leaving(o) {
            Action::Delete { reason: LEAVING.into() }
        } else if duplicate {
            Action::Delete { reason: DUPLICATE.into() }
        } else if dups_in_use.iter().any(|d| std::ptr::eq(*d, o)) {
            Action::Delete { reason: DUPLICATE_IN_USE.into() }
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
    let replaced = replacements(kinds, desired, &order, &resources, |_| false)?;
    let action_of =
        |d: &Desired| resources.iter().find(|r| r.kind == d.kind && r.id == d.id).map(|r| r.action.clone()).unwrap_or(Action::Create);
    let phase = first_phase(&replaced, &live, &removed(&resources, observed, |_| true), desired);
    let notes = refusal(kinds, desired, &phase, action_of, &live)
        .map(|why| why.replacen("refusing to apply:", "apply refuses this plan:", 1))
        .into_iter()
        .chain(forced_note(&phase))
        .collect();
    Ok(Plan { stack: stack.to_string(), resources, notes, fingerprint: String::new() })
}

/// The planned replacements in creation order (`order`, indexes of `desired`), each with how
/// its kind orders it for its changes; `held` ones are left out (an unattended run keeps them).
pub(super) fn replacements<'d>(
    kinds: &[Box<dyn DynKind>],
    desired: &'d [Desired],
    order: &[usize],
    resources: &[ResourcePlan],
    held: impl Fn(&Desired) -> bool,
) -> anyhow::Result<Vec<(&'d Desired, Replacement)>> {
    let mut out = Vec::new();
    for d in order.iter().map(|&i| &desired[i]).filter(|d| !held(d)) {
        if let Some(r) = resources.iter().find(|r| r.kind == d.kind && r.id == d.id && matches!(r.action, Action::Replace { .. })) {
            out.push((d, kind_of(kinds, d.kind)?.replacement_for(&r.changes)));
        }
    }
    Ok(out)
}

/// The live resources the plan deletes or retains at the end of a run (what left the spec,
/// duplicates; not what is already leaving), of those `runs` lets this run do.
pub(super) fn removed<'o>(resources: &[ResourcePlan], observed: &'o [Observed], runs: impl Fn(&ResourcePlan) -> bool) -> Vec<&'o Observed> {
    let doomed: Vec<(&str, &str)> = resources
        .iter()
        .filter(|r| matches!(r.action, Action::Delete { .. } | Action::Retain { .. }))
        .filter(|r| r.action != Action::Delete { reason: LEAVING.into() })
        .filter(|r| runs(r))
        .filter_map(|r| Some((r.kind, r.physical_id.as_deref()?)))
        .collect();
    observed.iter().filter(|o| doomed.contains(&(o.kind, o.physical_id.as_str()))).collect()
}

/// The dependency whose replacement (or creation) alone explains these changes: every
/// changed field is a reference not known until apply (the `reconciler:applied` tag aside),
/// and the first such reference names a resource this plan replaces. `kind id` of it, else `None` (the
/// difference has a cause of its own: drift, or a spec change).
pub(super) fn forced_by(
    d: &Desired,
    changes: &[FieldChange],
    ids: &BTreeMap<String, Identity>,
    planned: &[ResourcePlan],
) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::{actions, desired, kinds, live};
    use crate::engine::{reference, reference_to};
    use serde_json::json;

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
        assert_eq!((p.resources[1].cause, p.resources[1].follows.as_deref()), (Some(crate::changes::Cause::Cascade), Some("a root")));
        assert_eq!(p.resources[0].cause, Some(crate::changes::Cause::Unknown), "the root's own cause (no applied tags here)");
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
        assert_eq!((p.resources[1].cause, p.resources[1].follows.as_deref()), (Some(crate::changes::Cause::Cascade), Some("a root")));
        assert_eq!((p.resources[2].cause, p.resources[2].follows.as_deref()), (Some(crate::changes::Cause::Unknown), None));
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

    /// Two duplicates each used by something: one is kept; the other is deleted only once its
    /// dependent has moved to the kept one (here by replacement: the fake kind cannot change
    /// `parent` in place), in the same run, and held with it in an unattended one.
    #[test]
    fn a_duplicate_something_depends_on_goes_only_after_it_moves() {
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
        let changed: Vec<(String, Action)> = actions(&p).into_iter().filter(|(_, a)| *a != Action::NoOp).collect();
        assert_eq!(
            changed,
            vec![
                ("other".to_string(), Action::Replace { reason: "`parent` cannot change in place".into() }),
                ("root".to_string(), Action::Delete { reason: DUPLICATE_IN_USE.into() })
            ]
        );
        assert_eq!(p.resources.iter().find(|r| r.id == "root" && r.physical_id.as_deref() == Some("r-2")).map(|r| r.kind), Some("a"));
        // A duplicate whose dependent stays as it is (not moved) is never deleted.
        let mut stays = d.clone();
        stays[2].fields.insert("parent".into(), json!("r-2"));
        let p = plan("s", &kinds(), &stays, &obs, &BTreeMap::new()).unwrap();
        assert!(p.resources.iter().all(|r| !matches!(r.action, Action::Delete { .. })), "{:?}", actions(&p));
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
