//! The shrunk failures the property test found, one test each (each failed before its fix).

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
    check(vec![apply(revs(&[1], &[])), Step::Apply(revs(&[0], &[(0, 0)]), vec![(1, Fault::LostAnswer)])], spec(&[(0, 0)], &[], &[], &[]));
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
