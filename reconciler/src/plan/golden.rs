//! Golden files: fixed plans (create-all, update, replace, delete, drift, spec-changed,
//! held-back, no-op) rendered as plain text, markdown and JSON, compared with the files in
//! `reconciler/src/plan/golden/`. After a deliberate change of a renderer, rewrite them with
//! `UPDATE_GOLDEN=1 cargo nextest run --workspace -E 'test(golden)'` and review the diff.
//! The fixtures are written here, not built from a spec, so that only renderer changes move
//! the files; their prices are fixed too (not the shipped table's).

use super::cost::{CostLine, PriceSource};
use super::{render_json, render_markdown, render_text, Action, Cause, Cost, Plan, ResourcePlan, Style, DUPLICATE};
use crate::engine::FieldChange;
use crate::spec::CostAssumptions;
use serde_json::{json, Value};

fn change(field: &str, before: Option<Value>, after: Value) -> FieldChange {
    FieldChange { field: field.into(), before, after }
}

fn resource(kind: &'static str, id: &str, physical_id: Option<&str>, action: Action, changes: Vec<FieldChange>) -> ResourcePlan {
    ResourcePlan { kind, id: id.into(), physical_id: physical_id.map(Into::into), action, changes, cause: None, follows: None }
}

fn caused(mut r: ResourcePlan, cause: Cause) -> ResourcePlan {
    r.cause = Some(cause);
    r
}

fn plan(resources: Vec<ResourcePlan>) -> Plan {
    Plan { stack: "demo".into(), resources, notes: vec![], fingerprint: "0123456789abcdef".into() }
}

/// Dollars a month per resource, (kind, id, before, after, basis); totals are their sums.
fn cost(lines: &[(&str, &str, f64, f64, &str)]) -> Cost {
    let lines: Vec<CostLine> = lines
        .iter()
        .map(|&(kind, id, before, after, basis)| CostLine { kind: kind.into(), id: id.into(), before, after, basis: basis.into() })
        .collect();
    Cost {
        before: (lines.iter().map(|l| l.before).sum::<f64>() * 100.0).round() / 100.0,
        after: (lines.iter().map(|l| l.after).sum::<f64>() * 100.0).round() / 100.0,
        lines,
        prices: PriceSource { region: "us-east-1".into(), as_of: "2026-11-28".into(), source: "golden-file fixture prices".into() },
        assumptions: CostAssumptions::default(),
        note: None,
    }
}

const NAT: (&str, &str) = ("ec2:nat-gateway", "nat-1");
const NAT_BASIS: &str = "730 h and 10 GB processed";
const SERVICE_BASIS_2: &str = "2 task(s) of 0.25 vCPU and 0.5 GB, 730 h; 0 on Spot";
const SERVICE_BASIS_3: &str = "3 task(s) of 0.25 vCPU and 0.5 GB, 730 h; 0 on Spot";
const LOG_BASIS: &str = "1 GB ingested, 0.986 GB stored for 30 days";

fn sg_ingress(before: &[&str], after: &[&str]) -> FieldChange {
    change("ingress", Some(json!(before)), json!(after))
}

fn no_op(kind: &'static str, id: &str, phys: &str) -> ResourcePlan {
    resource(kind, id, Some(phys), Action::NoOp, vec![])
}

/// The same small stack in every fixture: a NAT gateway, a security group, the ECS service and
/// its log group.
fn fixtures() -> Vec<(&'static str, Plan, Cost)> {
    let running = |nat: f64, svc: f64, log: f64| {
        cost(&[
            (NAT.0, NAT.1, nat, nat, NAT_BASIS),
            ("ecs:service", "service", svc, svc, SERVICE_BASIS_2),
            ("logs:log-group", "log-container", log, log, LOG_BASIS),
        ])
    };
    let steady = running(33.3, 18.02, 0.53);
    vec![
        (
            "create-all",
            plan(vec![
                resource(
                    NAT.0,
                    NAT.1,
                    None,
                    Action::Create,
                    vec![change("subnet", None, json!("(known after apply)")), change("allocation", None, json!("eipalloc-0a1"))],
                ),
                resource(
                    "ec2:security-group",
                    "sg-service",
                    None,
                    Action::Create,
                    vec![
                        change("group_name", None, json!("demo-service")),
                        change("ingress", None, json!(["tcp 8080 10.0.0.0/16"])),
                        change("tags", None, json!({"reconciler:id": "sg-service", "reconciler:stack": "demo"})),
                    ],
                ),
                resource(
                    "logs:log-group",
                    "log-container",
                    None,
                    Action::Create,
                    vec![change("name", None, json!("/ecs/demo")), change("retention_days", None, json!(30))],
                ),
                resource(
                    "ecs:service",
                    "service",
                    None,
                    Action::Create,
                    vec![change("desired_count", None, json!(2)), change("name", None, json!("demo"))],
                ),
            ]),
            cost(&[
                (NAT.0, NAT.1, 0.0, 33.3, NAT_BASIS),
                ("logs:log-group", "log-container", 0.0, 0.53, LOG_BASIS),
                ("ecs:service", "service", 0.0, 18.02, SERVICE_BASIS_2),
            ]),
        ),
        (
            "update",
            plan(vec![
                no_op(NAT.0, NAT.1, "nat-0a1"),
                resource(
                    "ec2:security-group",
                    "sg-service",
                    Some("sg-0a1"),
                    Action::Update,
                    vec![
                        sg_ingress(&["tcp 8080 10.0.0.0/16"], &["tcp 8080 10.0.0.0/16", "tcp 9090 10.0.0.0/16"]),
                        change("tags", Some(json!({"team": "a", "old": "x"})), json!({"team": "b"})),
                    ],
                ),
                no_op("logs:log-group", "log-container", "/ecs/demo"),
                resource(
                    "ecs:service",
                    "service",
                    Some("arn:aws:ecs:us-east-1:123456789012:service/demo/demo"),
                    Action::Update,
                    vec![change("desired_count", Some(json!(2)), json!(3))],
                ),
            ]),
            cost(&[
                (NAT.0, NAT.1, 33.3, 33.3, NAT_BASIS),
                ("logs:log-group", "log-container", 0.53, 0.53, LOG_BASIS),
                ("ecs:service", "service", 18.02, 27.03, SERVICE_BASIS_3),
            ]),
        ),
        (
            "replace",
            plan(vec![
                caused(
                    resource(
                        NAT.0,
                        NAT.1,
                        Some("nat-0a1"),
                        Action::Replace { reason: "subnet cannot change in place".into() },
                        vec![change("subnet", Some(json!("subnet-0a1")), json!("subnet-0b2"))],
                    ),
                    Cause::SpecChanged,
                ),
                no_op("ec2:security-group", "sg-service", "sg-0a1"),
                no_op("logs:log-group", "log-container", "/ecs/demo"),
                no_op("ecs:service", "service", "arn:aws:ecs:us-east-1:123456789012:service/demo/demo"),
            ]),
            steady.clone(),
        ),
        (
            "delete",
            plan(vec![
                no_op(NAT.0, NAT.1, "nat-0a1"),
                no_op("ec2:security-group", "sg-service", "sg-0a1"),
                no_op("ecs:service", "service", "arn:aws:ecs:us-east-1:123456789012:service/demo/demo"),
                resource(
                    "logs:log-group",
                    "log-container",
                    Some("/ecs/demo"),
                    Action::Delete { reason: "no longer in the spec".into() },
                    vec![],
                ),
                resource(NAT.0, NAT.1, Some("nat-0dup"), Action::Delete { reason: DUPLICATE.into() }, vec![]),
            ]),
            cost(&[
                (NAT.0, NAT.1, 66.6, 33.3, NAT_BASIS),
                ("ecs:service", "service", 18.02, 18.02, SERVICE_BASIS_2),
                ("logs:log-group", "log-container", 0.53, 0.0, LOG_BASIS),
            ]),
        ),
        (
            "drift",
            plan(vec![
                no_op(NAT.0, NAT.1, "nat-0a1"),
                caused(
                    resource(
                        "ec2:security-group",
                        "sg-service",
                        Some("sg-0a1"),
                        Action::Update,
                        vec![sg_ingress(&["tcp 8080 10.0.0.0/16", "tcp 22 0.0.0.0/0"], &["tcp 8080 10.0.0.0/16"])],
                    ),
                    Cause::Drift,
                ),
                caused(
                    resource(
                        "logs:log-group",
                        "log-container",
                        Some("/ecs/demo"),
                        Action::Update,
                        vec![change("retention_days", Some(json!(1)), json!(30))],
                    ),
                    Cause::Unknown,
                ),
                no_op("ecs:service", "service", "arn:aws:ecs:us-east-1:123456789012:service/demo/demo"),
            ]),
            cost(&[
                (NAT.0, NAT.1, 33.3, 33.3, NAT_BASIS),
                ("logs:log-group", "log-container", 0.5, 0.53, LOG_BASIS),
                ("ecs:service", "service", 18.02, 18.02, SERVICE_BASIS_2),
            ]),
        ),
        (
            "spec-changed",
            plan(vec![
                no_op(NAT.0, NAT.1, "nat-0a1"),
                no_op("ec2:security-group", "sg-service", "sg-0a1"),
                no_op("logs:log-group", "log-container", "/ecs/demo"),
                caused(
                    resource(
                        "ecs:service",
                        "service",
                        Some("arn:aws:ecs:us-east-1:123456789012:service/demo/demo"),
                        Action::Update,
                        vec![change("desired_count", Some(json!(2)), json!(3)), change("health_check_grace", Some(json!(60)), json!(90))],
                    ),
                    Cause::SpecChanged,
                ),
            ]),
            cost(&[
                (NAT.0, NAT.1, 33.3, 33.3, NAT_BASIS),
                ("logs:log-group", "log-container", 0.53, 0.53, LOG_BASIS),
                ("ecs:service", "service", 18.02, 27.03, SERVICE_BASIS_3),
            ]),
        ),
        (
            "held-back",
            plan(vec![
                caused(
                    resource(
                        NAT.0,
                        NAT.1,
                        Some("nat-0a1"),
                        Action::Replace { reason: "allocation cannot change in place".into() },
                        vec![change("allocation", Some(json!("eipalloc-0a1")), json!("eipalloc-0b2"))],
                    ),
                    Cause::Drift,
                ),
                resource("ec2:security-group", "sg-old", Some("sg-0c3"), Action::Delete { reason: "no longer in the spec".into() }, vec![]),
                resource(
                    "logs:log-group",
                    "log-container",
                    Some("/ecs/demo"),
                    Action::Retain { reason: "no longer in the spec; deletion_policy is retain".into() },
                    vec![],
                ),
                no_op("ecs:service", "service", "arn:aws:ecs:us-east-1:123456789012:service/demo/demo"),
            ]),
            cost(&[
                (NAT.0, NAT.1, 33.3, 33.3, NAT_BASIS),
                ("ecs:service", "service", 18.02, 18.02, SERVICE_BASIS_2),
                (
                    "logs:log-group",
                    "log-container",
                    0.53,
                    0.53,
                    "1 GB ingested, 0.986 GB stored for 30 days; retained: still billed, no longer managed",
                ),
            ]),
        ),
        (
            "no-op",
            plan(vec![
                no_op(NAT.0, NAT.1, "nat-0a1"),
                no_op("ec2:security-group", "sg-service", "sg-0a1"),
                no_op("logs:log-group", "log-container", "/ecs/demo"),
                no_op("ecs:service", "service", "arn:aws:ecs:us-east-1:123456789012:service/demo/demo"),
            ]),
            steady,
        ),
    ]
}

#[test]
fn golden_renderings() {
    let dir = crate::spec::shipped("src/plan/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| !v.is_empty());
    let mut stale = Vec::new();
    for (name, plan, cost) in fixtures() {
        for (ext, rendered) in [
            ("txt", render_text(&plan, Some(&cost), Style::Plain)),
            ("md", render_markdown(&plan, Some(&cost))),
            ("json", render_json(&plan, Some(&cost))),
        ] {
            assert!(!rendered.contains('\x1b'), "{name}.{ext}: plain output carries no colour codes");
            let path = dir.join(format!("{name}.{ext}"));
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &rendered).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(rendered.as_str()) {
                stale.push(format!("{}:\n{rendered}", path.display()));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "golden files differ (after a deliberate renderer change: UPDATE_GOLDEN=1 cargo nextest run --workspace -E 'test(golden)', then review the diff):\n\n{}",
        stale.join("\n\n")
    );
}

#[test]
fn colour_only_on_request() {
    let (name, plan, cost) = fixtures().into_iter().find(|f| f.0 == "held-back").unwrap();
    let coloured = render_text(&plan, Some(&cost), Style::Colour);
    assert!(coloured.contains("\x1b[1;31m-/+\x1b[0m ec2:nat-gateway nat-1"), "{name}: {coloured}");
    assert!(coloured.contains("\x1b[35mdrift: changed outside the spec\x1b[0m"), "{coloured}");
    // Without the escape codes it is the plain rendering.
    let mut stripped = String::new();
    let mut rest = coloured.as_str();
    while let Some(i) = rest.find('\x1b') {
        stripped.push_str(&rest[..i]);
        rest = &rest[i + rest[i..].find('m').unwrap() + 1..];
    }
    stripped.push_str(rest);
    assert_eq!(stripped, render_text(&plan, Some(&cost), Style::Plain));
}

#[test]
fn markdown_starts_with_the_comment_marker_and_json_has_a_format_version() {
    for (name, plan, cost) in fixtures() {
        let md = render_markdown(&plan, Some(&cost));
        assert!(md.starts_with("<!-- reconciler-plan:demo -->\n"), "{name}");
        let changing = plan.resources.iter().filter(|r| r.action != Action::NoOp).count();
        assert_eq!(md.matches("<details>").count(), changing, "{name}: one block per changing resource");
        let j: Value = serde_json::from_str(&render_json(&plan, Some(&cost))).unwrap();
        assert_eq!(j["format_version"], super::FORMAT_VERSION);
        assert_eq!(j["stack"], "demo");
        assert_eq!(j["cost"]["after"], cost.after);
    }
}
