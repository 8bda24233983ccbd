//! Renderers only read a [`Plan`].

use super::{Action, Plan};
use serde_json::Value;
use std::fmt::Write;

/// Markdown for a pull-request comment: a summary line, a table of changing resources, and
/// the field changes in a collapsed block. Values are code-quoted, `|` escaped.
pub fn render_markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let changing: Vec<_> = plan.resources.iter().filter(|r| r.action != Action::NoOp).collect();
    if changing.is_empty() {
        let _ = writeln!(out, "### `{}`: no changes\n\nLive state matches the spec ({} resources).", plan.stack, plan.resources.len());
    } else {
        let _ = writeln!(out, "### `{}`: {} resource(s) change\n", plan.stack, changing.len());
        if let Some(line) = destructive_summary(plan) {
            let _ = writeln!(out, "> **{line}**\n");
        }
        let _ = writeln!(out, "| action | kind | resource | AWS id | why / fields |\n|---|---|---|---|---|");
        for r in &changing {
            let (action, why) = match &r.action {
                Action::Create => ("create", String::new()),
                Action::Update => ("update", r.changes.iter().map(|c| format!("`{}`", c.field)).collect::<Vec<_>>().join(", ")),
                Action::Replace { reason } => ("**replace**", reason.clone()),
                Action::Delete { reason } => ("**delete**", reason.clone()),
                Action::Retain { reason } => ("retain", reason.clone()),
                Action::NoOp => unreachable!(),
            };
            let phys = r.physical_id.as_deref().map(|p| format!("`{p}`")).unwrap_or_default();
            let why = match r.cause {
                Some(super::Cause::Drift) => format!("**drift** (changed outside the spec): {why}"),
                Some(c) => format!("{}: {why}", c.describe()),
                None => why,
            };
            let _ = writeln!(out, "| {action} | `{}` | `{}` | {phys} | {} |", r.kind, r.id, why.replace('|', "\\|"));
        }
        let text = render_text(plan).replace("```", "'''");
        let _ = writeln!(out, "\n<details><summary>Field changes</summary>\n\n```diff\n{text}```\n</details>");
    }
    for n in &plan.notes {
        let _ = writeln!(out, "\n> {n}");
    }
    out
}

/// One unmistakable line when the plan replaces or deletes anything.
pub fn destructive_summary(plan: &Plan) -> Option<String> {
    let steps = plan.destructive();
    if steps.is_empty() {
        return None;
    }
    let count = |f: fn(&Action) -> bool| steps.iter().filter(|r| f(&r.action)).count();
    let (replace, delete, retain) = (
        count(|a| matches!(a, Action::Replace { .. })),
        count(|a| matches!(a, Action::Delete { .. })),
        count(|a| matches!(a, Action::Retain { .. })),
    );
    Some(format!(
        "DESTRUCTIVE: {replace} replacement(s), {delete} deletion(s), {retain} released from management. Unattended runs (`run`, `apply --auto-approve`) hold these back unless --allow-destructive is given."
    ))
}

pub fn render_json(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan).expect("plan serialises") + "\n"
}

/// Human-readable plan: one line per changing resource, then its fields. Sets (JSON arrays)
/// show only the elements added (+) and removed (-), so a one-rule drift reads as one line.
pub fn render_text(plan: &Plan) -> String {
    let mut out = String::new();
    for r in &plan.resources {
        let (sym, verb) = match &r.action {
            Action::NoOp => continue,
            Action::Create => ("+", "create".to_string()),
            Action::Update => ("~", "update".to_string()),
            Action::Replace { reason } => ("-/+", format!("replace ({reason})")),
            Action::Delete { reason } => ("-", format!("delete ({reason})")),
            Action::Retain { reason } => ("~", format!("retain ({reason}): stays in AWS, no longer managed")),
        };
        let phys = r.physical_id.as_deref().map(|p| format!(" [{p}]")).unwrap_or_default();
        let cause = r.cause.map(|c| format!(" ({})", c.describe())).unwrap_or_default();
        let _ = writeln!(out, "{sym} {} {}{phys}: {verb}{cause}", r.kind, r.id);
        if matches!(r.action, Action::Create | Action::Delete { .. } | Action::Retain { .. }) {
            continue;
        }
        for c in &r.changes {
            match (&c.before, &c.after) {
                (Some(Value::Array(before)), Value::Array(after)) => {
                    let _ = writeln!(out, "    {}:", c.field);
                    for x in after.iter().filter(|x| !before.contains(x)) {
                        let _ = writeln!(out, "      + {}", compact(x));
                    }
                    for x in before.iter().filter(|x| !after.contains(x)) {
                        let _ = writeln!(out, "      - {}", compact(x));
                    }
                }
                (Some(Value::Object(before)), Value::Object(after)) => {
                    // Maps (tags): one line per key that differs.
                    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
                    for k in keys.into_iter().filter(|k| before.get(*k) != after.get(*k)) {
                        let b = before.get(k).map(compact).unwrap_or_else(|| "(unset)".into());
                        let a = after.get(k).map(compact).unwrap_or_else(|| "(unset)".into());
                        let _ = writeln!(out, "    {}.{k}: {b} -> {a}", c.field);
                    }
                }
                (before, after) => {
                    let b = before.as_ref().map(compact).unwrap_or_else(|| "(unset)".into());
                    let _ = writeln!(out, "    {}: {} -> {}", c.field, b, compact(after));
                }
            }
        }
    }
    let (c, u, r, d) = (
        plan.count(|a| *a == Action::Create),
        plan.count(|a| *a == Action::Update),
        plan.count(|a| matches!(a, Action::Replace { .. })),
        plan.count(|a| matches!(a, Action::Delete { .. })),
    );
    let kept = plan.count(|a| matches!(a, Action::Retain { .. }));
    if plan.has_changes() {
        let retain = if kept > 0 { format!(", {kept} to retain") } else { String::new() };
        let _ = writeln!(out, "\nPlan for stack `{}`: {c} to create, {u} to update, {r} to replace, {d} to delete{retain}.", plan.stack);
        if let Some(line) = destructive_summary(plan) {
            let _ = writeln!(out, "{line}");
        }
    } else {
        let _ = writeln!(out, "No changes: stack `{}` matches the spec ({} resources).", plan.stack, plan.resources.len());
    }
    for n in &plan.notes {
        let _ = writeln!(out, "note: {n}");
    }
    out
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::FieldChange;
    use crate::plan::ResourcePlan;
    use serde_json::json;

    fn plan(action: Action, changes: Vec<FieldChange>) -> Plan {
        Plan {
            stack: "s".into(),
            resources: vec![ResourcePlan {
                kind: "ec2:security-group",
                id: "sg-service".into(),
                physical_id: Some("sg-1".into()),
                action,
                changes,
                cause: None,
            }],
            notes: vec![],
            fingerprint: String::new(),
        }
    }

    #[test]
    fn set_changes_show_only_the_difference() {
        let p = plan(
            Action::Update,
            vec![FieldChange {
                field: "ingress".into(),
                before: Some(json!(["tcp 8080 10.0.0.0/16", "tcp 22 0.0.0.0/0"])),
                after: json!(["tcp 8080 10.0.0.0/16"]),
            }],
        );
        let t = render_text(&p);
        assert!(t.contains("~ ec2:security-group sg-service [sg-1]: update"), "{t}");
        assert!(t.contains("      - tcp 22 0.0.0.0/0"), "{t}");
        assert!(!t.contains("+ tcp 8080"), "{t}");
        assert!(t.contains("1 to update"), "{t}");
    }

    #[test]
    fn markdown_for_pull_requests() {
        let p = plan(Action::Update, vec![FieldChange { field: "ingress".into(), before: Some(json!(["a|b"])), after: json!([]) }]);
        let m = render_markdown(&p);
        assert!(m.contains("### `s`: 1 resource(s) change"), "{m}");
        assert!(m.contains("| update | `ec2:security-group` | `sg-service` | `sg-1` | `ingress` |"), "{m}");
        assert!(m.contains("```diff") && m.contains("      - a|b"), "{m}");
        let m = render_markdown(&plan(Action::NoOp, vec![]));
        assert!(m.contains("no changes"), "{m}");
        let m = render_markdown(&plan(Action::Delete { reason: "x | y".into() }, vec![]));
        assert!(m.contains("x \\| y"), "pipes in reasons are escaped: {m}");
    }

    #[test]
    fn scalar_changes_and_no_op() {
        let p = plan(
            Action::Replace { reason: "cidr cannot change in place".into() },
            vec![FieldChange { field: "cidr".into(), before: Some(json!("10.0.0.0/24")), after: json!("10.0.2.0/24") }],
        );
        let t = render_text(&p);
        assert!(t.contains("-/+ ec2:security-group sg-service [sg-1]: replace (cidr cannot change in place)"), "{t}");
        assert!(t.contains("cidr: 10.0.0.0/24 -> 10.0.2.0/24"), "{t}");
        let t = render_text(&plan(
            Action::Update,
            vec![FieldChange {
                field: "tags".into(),
                before: Some(json!({"a": "1", "b": "2", "old": "x"})),
                after: json!({"a": "1", "b": "3", "new": "y"}),
            }],
        ));
        assert!(t.contains("    tags.b: 2 -> 3\n") && t.contains("tags.old: x -> (unset)") && t.contains("tags.new: (unset) -> y"), "{t}");
        assert!(!t.contains("tags.a"), "{t}");
        let t = render_text(&plan(Action::NoOp, vec![]));
        assert!(t.starts_with("No changes"), "{t}");
        let j: serde_json::Value = serde_json::from_str(&render_json(&plan(Action::Delete { reason: "r".into() }, vec![]))).unwrap();
        assert_eq!(j["resources"][0]["action"], "delete");
        assert_eq!(j["resources"][0]["reason"], "r");
    }
}
