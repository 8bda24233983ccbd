//! `reconciler status`: per resource, Kubernetes-style conditions from live state and the
//! plan. Read-only (the plan policy suffices).
//!
//! - `Ready`: the resource exists and AWS reports it usable (`False` with `NotFound`,
//!   `Pending` or `Failed` and AWS's own words).
//! - `Synced`: live state matches the spec (`False` with the action apply would take and the
//!   fields).
//! - `Drifted`: the difference was made outside the spec (`True`), the spec changed (`False`,
//!   `SpecChanged`), or it cannot be told (`Unknown`: untaggable kind, or never tagged).

use crate::engine::{Observed, Status};
use crate::plan::{Action, Cause, Plan};
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `True`, `False` or `Unknown`, as Kubernetes writes them.
    pub status: &'static str,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResourceStatus {
    pub kind: &'static str,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub physical_id: Option<String>,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StackStatus {
    pub stack: String,
    /// Every resource Ready and Synced.
    pub healthy: bool,
    pub resources: Vec<ResourceStatus>,
}

fn condition(kind: &'static str, status: &'static str, reason: &str, message: impl Into<String>) -> Condition {
    Condition { kind, status, reason: reason.to_string(), message: message.into() }
}

/// The conditions of every resource in `plan` (desired ones, and live ones it would prune).
pub fn of(plan: &Plan, observed: &[Observed]) -> StackStatus {
    let resources: Vec<ResourceStatus> = plan
        .resources
        .iter()
        .map(|r| {
            let live = observed.iter().find(|o| o.kind == r.kind && o.id == r.id);
            let ready = match live.map(|o| &o.status) {
                None => condition("Ready", "False", "NotFound", "does not exist yet"),
                Some(Status::Ready) => condition("Ready", "True", "Available", ""),
                Some(Status::Pending(why)) => condition("Ready", "False", "Pending", why.clone()),
                Some(Status::Failed(why)) => condition("Ready", "False", "Failed", why.clone()),
                Some(Status::Degraded(why)) => condition("Ready", "False", "Failed", why.clone()),
                Some(Status::Leaving(why)) => condition("Ready", "False", "Deleting", why.clone()),
            };
            let fields = r.changes.iter().map(|c| c.field.as_str()).collect::<Vec<_>>().join(", ");
            let synced = match &r.action {
                Action::NoOp => condition("Synced", "True", "InSync", ""),
                Action::Create => condition("Synced", "False", "CreatePending", "apply creates it"),
                Action::Update => condition("Synced", "False", "UpdatePending", format!("differs in: {fields}")),
                Action::Replace { reason } => condition("Synced", "False", "ReplacePending", reason.clone()),
                Action::Delete { reason } => condition("Synced", "False", "DeletePending", reason.clone()),
                Action::Retain { reason } => condition("Synced", "False", "ReleasePending", reason.clone()),
            };
            let drifted = match r.cause {
                None => condition("Drifted", "False", "NoDifference", ""),
                Some(Cause::Drift) => condition("Drifted", "True", "ChangedOutsideSpec", format!("changed outside the spec: {fields}")),
                Some(Cause::SpecChanged) => condition("Drifted", "False", "SpecChanged", format!("the spec changed: {fields}")),
                Some(Cause::Unknown) => condition("Drifted", "Unknown", "NotAttributable", format!("differs in: {fields}")),
                Some(Cause::Cascade) => condition(
                    "Drifted",
                    "False",
                    "FollowsReplacement",
                    format!("follows the replacement of {}: {fields}", r.follows.as_deref().unwrap_or("a dependency")),
                ),
            };
            ResourceStatus { kind: r.kind, id: r.id.clone(), physical_id: r.physical_id.clone(), conditions: vec![ready, synced, drifted] }
        })
        .collect();
    let healthy = resources.iter().all(|r| r.conditions.iter().filter(|c| c.kind != "Drifted").all(|c| c.status == "True"));
    StackStatus { stack: plan.stack.clone(), healthy, resources }
}

/// One line per resource: `READY SYNCED DRIFTED kind id`, then the reasons of what is not fine.
pub fn render_text(s: &StackStatus) -> String {
    let mut out = format!("{:<6} {:<6} {:<8} RESOURCE\n", "READY", "SYNCED", "DRIFTED");
    for r in &s.resources {
        let st = |k: &str| r.conditions.iter().find(|c| c.kind == k).map(|c| c.status).unwrap_or("?");
        let _ = writeln!(out, "{:<6} {:<6} {:<8} {} {}", st("Ready"), st("Synced"), st("Drifted"), r.kind, r.id);
        for c in r.conditions.iter().filter(|c| !c.message.is_empty()) {
            let _ = writeln!(out, "{:>24}{}: {} ({})", "", c.kind, c.message, c.reason);
        }
    }
    let _ = writeln!(
        out,
        "\nStack `{}`: {}.",
        s.stack,
        if s.healthy { "every resource ready and in sync" } else { "not every resource is ready and in sync" }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::FieldChange;
    use crate::plan::ResourcePlan;

    fn res(id: &str, action: Action, cause: Option<Cause>) -> ResourcePlan {
        let changes = if cause.is_some() {
            vec![FieldChange { field: "ingress".into(), before: None, after: serde_json::json!([]) }]
        } else {
            vec![]
        };
        ResourcePlan {
            kind: "ec2:security-group",
            id: id.into(),
            physical_id: Some(format!("sg-{id}")),
            action,
            changes,
            cause,
            follows: None,
        }
    }

    fn live(id: &str, status: Status) -> Observed {
        let mut o = Observed::new("ec2:security-group", id.into(), format!("sg-{id}"), Default::default());
        o.status = status;
        o
    }

    #[test]
    fn conditions_name_what_is_wrong() {
        let plan = Plan {
            stack: "s".into(),
            resources: vec![
                res("ok", Action::NoOp, None),
                res("drifted", Action::Update, Some(Cause::Drift)),
                res("edited", Action::Update, Some(Cause::SpecChanged)),
                res("new", Action::Create, None),
                res("slow", Action::NoOp, None),
            ],
            notes: vec![],
            fingerprint: String::new(),
        };
        let observed = vec![
            live("ok", Status::Ready),
            live("drifted", Status::Ready),
            live("edited", Status::Ready),
            live("slow", Status::Pending("PENDING".into())),
        ];
        let s = of(&plan, &observed);
        let get =
            |id: &str, k: &str| s.resources.iter().find(|r| r.id == id).unwrap().conditions.iter().find(|c| c.kind == k).unwrap().clone();
        assert_eq!((get("ok", "Ready").status, get("ok", "Synced").status, get("ok", "Drifted").status), ("True", "True", "False"));
        let d = get("drifted", "Drifted");
        assert_eq!((d.status, d.reason.as_str()), ("True", "ChangedOutsideSpec"));
        assert!(d.message.contains("ingress"), "{d:?}");
        assert_eq!(get("edited", "Drifted").reason, "SpecChanged");
        assert_eq!(get("new", "Ready").reason, "NotFound");
        assert_eq!((get("slow", "Ready").status, get("slow", "Ready").message.as_str()), ("False", "PENDING"));
        assert!(!s.healthy);
        let text = render_text(&s);
        assert!(text.contains("True   False  True     ec2:security-group drifted"), "{text}");
        let only_ok = Plan { resources: vec![res("ok", Action::NoOp, None)], ..plan };
        assert!(of(&only_ok, &observed).healthy);
    }
}
