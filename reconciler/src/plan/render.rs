//! Renderers only read a [`Plan`] (and its [`Cost`] estimate): text for a terminal or a log,
//! markdown for a pull-request comment, JSON for programs (schema: `specs/plan.schema.json`).

use super::{Action, Cause, Cost, Plan, PlanDocument, ResourcePlan, FORMAT_VERSION};
use serde_json::Value;
use std::fmt::Write;
use std::io::IsTerminal;

/// How text output looks: ANSI colours on a terminal, plain everywhere else (files, pipes,
/// CI logs, and whenever `NO_COLOR` is set: <https://no-color.org>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    Colour,
}

impl Style {
    /// Colour only when standard output is a terminal and `NO_COLOR` is unset or empty.
    pub fn for_stdout() -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        if std::io::stdout().is_terminal() && !no_color {
            Style::Colour
        } else {
            Style::Plain
        }
    }

    fn paint(self, sgr: &str, text: &str) -> String {
        match self {
            Style::Plain => text.to_string(),
            Style::Colour => format!("\x1b[{sgr}m{text}\x1b[0m"),
        }
    }
}

const GREEN: &str = "32";
const YELLOW: &str = "33";
const RED: &str = "1;31";
const MAGENTA: &str = "35";
const DIM: &str = "2";

/// Symbol, verb, and colour of an action.
fn verb(action: &Action) -> (&'static str, String, &'static str) {
    match action {
        Action::NoOp => (" ", "no change".into(), DIM),
        Action::Create => ("+", "create".into(), GREEN),
        Action::Update => ("~", "update".into(), YELLOW),
        Action::Replace { reason } => ("-/+", format!("replace ({reason})"), RED),
        Action::Delete { reason } => ("-", format!("delete ({reason})"), RED),
        Action::Retain { reason } => ("~", format!("retain ({reason}): stays in AWS, no longer managed"), YELLOW),
    }
}

fn drifted(plan: &Plan) -> Vec<&ResourcePlan> {
    plan.resources.iter().filter(|r| r.cause == Some(Cause::Drift) && r.action != Action::NoOp).collect()
}

/// Markdown for a pull-request comment. The first line is a marker naming the stack, so a CI
/// job can find its earlier comment and update it instead of adding one per push. Then a
/// summary, the destructive steps and drift called out, the cost, and one collapsed block per
/// changing resource with its field changes as a diff.
pub fn render_markdown(plan: &Plan, cost: Option<&Cost>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}\n", comment_marker(&plan.stack));
    let changing: Vec<_> = plan.resources.iter().filter(|r| r.action != Action::NoOp).collect();
    if changing.is_empty() {
        let _ = writeln!(out, "### `{}`: no changes\n\nLive state matches the spec ({} resources).\n", plan.stack, plan.resources.len());
    } else {
        let _ = writeln!(out, "### `{}`: {} resource(s) change\n", plan.stack, changing.len());
        let _ = writeln!(out, "{}\n", counts(plan));
        if let Some(line) = destructive_summary(plan) {
            let _ = writeln!(out, "> **{line}**\n");
        }
        let drift = drifted(plan);
        if !drift.is_empty() {
            let list: Vec<String> = drift.iter().map(|r| format!("`{} {}`", r.kind, r.id)).collect();
            let _ = writeln!(out, "> **Drift**: {} resource(s) changed outside the spec: {}.\n", drift.len(), list.join(", "));
        }
    }
    if let Some(c) = cost {
        let _ = writeln!(out, "{}\n", markdown_cost(c));
    }
    for r in &changing {
        let (sym, verb, _) = verb(&r.action);
        let mut summary = format!("<code>{sym}</code> <b>{}</b> <code>{}</code> <code>{}</code>", html(&verb), r.kind, html(&r.id));
        if let Some(p) = &r.physical_id {
            let _ = write!(summary, " [<code>{}</code>]", html(p));
        }
        match r.cause {
            Some(Cause::Drift) => summary.push_str(" · <b>drift</b>: changed outside the spec"),
            Some(Cause::Cascade) => {
                let _ =
                    write!(summary, " · follows the replacement of <code>{}</code>", html(r.follows.as_deref().unwrap_or("a dependency")));
            }
            Some(c) => {
                let _ = write!(summary, " · {}", c.describe());
            }
            None => {}
        }
        let line = cost.and_then(|c| c.line(r.kind, &r.id));
        if let Some(l) = line {
            let _ = write!(summary, " · {}", l.describe());
        }
        let _ = writeln!(out, "<details><summary>{summary}</summary>\n");
        if let Some(l) = line {
            let _ = writeln!(out, "Cost: {} ({}).\n", l.describe(), l.basis);
        }
        let diff = diff_lines(r);
        if diff.is_empty() {
            let _ = writeln!(out, "No field changes.\n");
        } else {
            let _ = writeln!(out, "```diff\n{}\n```\n", diff.join("\n").replace("```", "'''"));
        }
        let _ = writeln!(out, "</details>\n");
    }
    for n in &plan.notes {
        let _ = writeln!(out, "> {n}\n");
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

/// The first line of a markdown plan: `<!-- reconciler-plan:<stack> -->`.
pub fn comment_marker(stack: &str) -> String {
    format!("<!-- reconciler-plan:{stack} -->")
}

fn markdown_cost(c: &Cost) -> String {
    let summary = c.summary();
    match summary.split_once(" (") {
        Some((head, rest)) => format!("**{head}** ({rest}"),
        None => format!("**{summary}**"),
    }
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Field changes as unified-diff lines (`-` before, `+` after): sets by element, maps by key.
fn diff_lines(r: &ResourcePlan) -> Vec<String> {
    let mut out = Vec::new();
    if matches!(r.action, Action::Delete { .. } | Action::Retain { .. }) {
        return out;
    }
    for c in &r.changes {
        match (&c.before, &c.after) {
            (Some(Value::Array(before)), Value::Array(after)) => {
                out.extend(after.iter().filter(|x| !before.contains(x)).map(|x| format!("+ {}: {}", c.field, compact(x))));
                out.extend(before.iter().filter(|x| !after.contains(x)).map(|x| format!("- {}: {}", c.field, compact(x))));
            }
            (Some(Value::Object(before)), Value::Object(after)) => {
                let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
                for k in keys.into_iter().filter(|k| before.get(*k) != after.get(*k)) {
                    if let Some(b) = before.get(k) {
                        out.push(format!("- {}.{k}: {}", c.field, compact(b)));
                    }
                    if let Some(a) = after.get(k) {
                        out.push(format!("+ {}.{k}: {}", c.field, compact(a)));
                    }
                }
            }
            (before, after) => {
                if let Some(b) = before {
                    out.push(format!("- {}: {}", c.field, compact(b)));
                }
                out.push(format!("+ {}: {}", c.field, compact(after)));
            }
        }
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

/// A duration for people: `850ms`, `12.3s`, `2m 03s`, `1h 02m`.
pub fn duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m {:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h {:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// The JSON plan document ([`PlanDocument`]): the plan with `format_version` and `cost`.
pub fn render_json(plan: &Plan, cost: Option<&Cost>) -> String {
    let doc = PlanDocument { format_version: FORMAT_VERSION, plan: plan.clone(), cost: cost.cloned() };
    serde_json::to_string_pretty(&doc).expect("plan serialises") + "\n"
}

/// `Plan for stack `s`: 1 to create, 2 to update, 0 to replace, 0 to delete.`
fn counts(plan: &Plan) -> String {
    let (c, u, r, d) = (
        plan.count(|a| *a == Action::Create),
        plan.count(|a| *a == Action::Update),
        plan.count(|a| matches!(a, Action::Replace { .. })),
        plan.count(|a| matches!(a, Action::Delete { .. })),
    );
    let kept = plan.count(|a| matches!(a, Action::Retain { .. }));
    let retain = if kept > 0 { format!(", {kept} to retain") } else { String::new() };
    format!("Plan for stack `{}`: {c} to create, {u} to update, {r} to replace, {d} to delete{retain}.", plan.stack)
}

/// Human-readable plan: one line per changing resource (why, when known: drift or a spec
/// change), its monthly cost, then its fields. Sets (JSON arrays) show only the elements added
/// (+) and removed (-), so a one-rule drift reads as one line. Ends with the counts, the
/// destructive steps and the cost estimate.
pub fn render_text(plan: &Plan, cost: Option<&Cost>, style: Style) -> String {
    let mut out = String::new();
    for r in &plan.resources {
        if r.action == Action::NoOp {
            continue;
        }
        let (sym, verb, colour) = verb(&r.action);
        let phys = r.physical_id.as_deref().map(|p| format!(" [{p}]")).unwrap_or_default();
        let cause = match (r.cause, &r.follows) {
            (Some(c @ Cause::Drift), _) => format!("; {}", style.paint(MAGENTA, c.describe())),
            (Some(Cause::Cascade), Some(dep)) => format!("; follows the replacement of {dep}"),
            (Some(c), _) => format!("; {}", c.describe()),
            (None, _) => String::new(),
        };
        let _ = writeln!(out, "{} {} {}{phys}: {}{cause}", style.paint(colour, sym), r.kind, r.id, style.paint(colour, &verb));
        if let Some(l) = cost.and_then(|c| c.line(r.kind, &r.id)) {
            let _ = writeln!(out, "    {}", style.paint(DIM, &format!("cost: {} ({})", l.describe(), l.basis)));
        }
        if matches!(r.action, Action::Create | Action::Delete { .. } | Action::Retain { .. }) {
            continue;
        }
        for c in &r.changes {
            match (&c.before, &c.after) {
                (Some(Value::Array(before)), Value::Array(after)) => {
                    let _ = writeln!(out, "    {}:", c.field);
                    for x in after.iter().filter(|x| !before.contains(x)) {
                        let _ = writeln!(out, "      {} {}", style.paint(GREEN, "+"), compact(x));
                    }
                    for x in before.iter().filter(|x| !after.contains(x)) {
                        let _ = writeln!(out, "      {} {}", style.paint(RED, "-"), compact(x));
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
    if plan.has_changes() {
        let _ = writeln!(out, "\n{}", counts(plan));
        if let Some(line) = destructive_summary(plan) {
            let _ = writeln!(out, "{}", style.paint(RED, &line));
        }
        let drift = drifted(plan).len();
        if drift > 0 {
            let _ = writeln!(out, "{}", style.paint(MAGENTA, &format!("Drift: {drift} resource(s) changed outside the spec.")));
        }
    } else {
        let _ = writeln!(out, "No changes: stack `{}` matches the spec ({} resources).", plan.stack, plan.resources.len());
    }
    if let Some(c) = cost {
        let _ = writeln!(out, "{}", c.summary());
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
                follows: None,
            }],
            notes: vec![],
            fingerprint: String::new(),
        }
    }

    #[test]
    fn durations_read_well() {
        use std::time::Duration;
        assert_eq!(duration(Duration::from_millis(850)), "850ms");
        assert_eq!(duration(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(duration(Duration::from_secs(123)), "2m 03s");
        assert_eq!(duration(Duration::from_secs(3720)), "1h 02m");
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
        let t = render_text(&p, None, Style::Plain);
        assert!(t.contains("~ ec2:security-group sg-service [sg-1]: update"), "{t}");
        assert!(t.contains("      - tcp 22 0.0.0.0/0"), "{t}");
        assert!(!t.contains("+ tcp 8080"), "{t}");
        assert!(t.contains("1 to update"), "{t}");
    }

    #[test]
    fn markdown_for_pull_requests() {
        let p = plan(Action::Update, vec![FieldChange { field: "ingress".into(), before: Some(json!(["a|b"])), after: json!([]) }]);
        let m = render_markdown(&p, None);
        assert!(m.contains("### `s`: 1 resource(s) change"), "{m}");
        assert!(m.starts_with("<!-- reconciler-plan:s -->\n"), "{m}");
        assert!(
            m.contains("<details><summary><code>~</code> <b>update</b> <code>ec2:security-group</code> <code>sg-service</code> [<code>sg-1</code>]</summary>"),
            "{m}"
        );
        assert!(m.contains("```diff\n- ingress: a|b\n```"), "{m}");
        let m = render_markdown(&plan(Action::NoOp, vec![]), None);
        assert!(m.contains("no changes"), "{m}");
        let m = render_markdown(&plan(Action::Delete { reason: "x <b> y".into() }, vec![]), None);
        assert!(m.contains("delete (x &lt;b&gt; y)"), "reasons are escaped in HTML: {m}");
    }

    #[test]
    fn scalar_changes_and_no_op() {
        let p = plan(
            Action::Replace { reason: "cidr cannot change in place".into() },
            vec![FieldChange { field: "cidr".into(), before: Some(json!("10.0.0.0/24")), after: json!("10.0.2.0/24") }],
        );
        let t = render_text(&p, None, Style::Plain);
        assert!(t.contains("-/+ ec2:security-group sg-service [sg-1]: replace (cidr cannot change in place)"), "{t}");
        assert!(t.contains("cidr: 10.0.0.0/24 -> 10.0.2.0/24"), "{t}");
        let t = render_text(
            &plan(
                Action::Update,
                vec![FieldChange {
                    field: "tags".into(),
                    before: Some(json!({"a": "1", "b": "2", "old": "x"})),
                    after: json!({"a": "1", "b": "3", "new": "y"}),
                }],
            ),
            None,
            Style::Plain,
        );
        assert!(t.contains("    tags.b: 2 -> 3\n") && t.contains("tags.old: x -> (unset)") && t.contains("tags.new: (unset) -> y"), "{t}");
        assert!(!t.contains("tags.a"), "{t}");
        let t = render_text(&plan(Action::NoOp, vec![]), None, Style::Plain);
        assert!(t.starts_with("No changes"), "{t}");
        let j: serde_json::Value = serde_json::from_str(&render_json(&plan(Action::Delete { reason: "r".into() }, vec![]), None)).unwrap();
        assert_eq!(j["resources"][0]["action"], "delete");
        assert_eq!(j["resources"][0]["reason"], "r");
    }
}
