//! A plan is a value: per resource an action and its field-level changes. Computed once by
//! the engine; its monthly cost estimated beside it (`cost`); rendered as text, markdown or
//! JSON here; executed by `engine::apply`.

pub mod cost;
#[cfg(test)]
mod golden;
pub mod prices;
mod render;

pub use cost::Cost;
pub use render::{comment_marker, destructive_summary, duration, render_json, render_markdown, render_text, Style};

pub use crate::changes::{Action, Cause, FieldChange, Plan, ResourcePlan, DUPLICATE, LEAVING};
use schemars::JsonSchema;
use serde::Serialize;

/// The version of the JSON plan document (`plan --format json`, `plan --out`). Raised when a
/// field changes meaning or goes away; fields are added without raising it.
pub const FORMAT_VERSION: u32 = 1;

/// The JSON plan document: the plan, its format version and its cost estimate. Its schema is
/// checked in at `specs/plan.schema.json` (`reconciler schema --plan`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PlanDocument {
    /// The version of this document's format (see `FORMAT_VERSION`).
    pub format_version: u32,
    #[serde(flatten)]
    pub plan: Plan,
    /// Monthly cost before and after, per resource; absent when not estimated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
}

/// The JSON Schema of the plan document, as checked in at `specs/plan.schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(PlanDocument);
    serde_json::to_string_pretty(&schema).expect("schema serialises") + "\n"
}

/// Whether `text`, the saved plan `saved` (`plan --out`), may be applied as reviewed: it is a
/// plan of this stack, made from the same spec, facts and live state as `plan` (its
/// fingerprint). Only the fingerprint and the stack are read: what is applied is `plan`,
/// computed now, so a file whose changes were edited by hand cannot change what happens.
pub fn check_saved(saved: &str, text: &str, plan: &Plan, spec_file: &str) -> anyhow::Result<()> {
    let not_a_plan = || format!("{saved} is not a saved plan (a JSON document from `reconciler plan --out`)");
    let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{}: {e}", not_a_plan()))?;
    let (Some(stack), Some(fp)) = (doc.get("stack").and_then(|v| v.as_str()), doc.get("fingerprint").and_then(|v| v.as_str())) else {
        anyhow::bail!("{}: it has no `stack` and `fingerprint`", not_a_plan());
    };
    if stack != plan.stack {
        anyhow::bail!("{saved} is a plan for stack `{stack}`, not `{}`: nothing was applied", plan.stack);
    }
    if fp != plan.fingerprint {
        anyhow::bail!(
            "live state or the spec changed since {saved} was made (fingerprint {fp}, now {}): nothing was applied. Review a new plan: reconciler plan {spec_file} --out {saved}",
            plan.fingerprint
        );
    }
    Ok(())
}

/// A stable digest (FNV-1a, 64 bit, hex) of the plan's inputs: the tool's version, the spec,
/// the live facts, and of each observed resource its identity and the fields the plan compared
/// (fields nobody compares, such as a running count, may change without invalidating a
/// reviewed plan). Observed resources are sorted first, so the order AWS lists them in does
/// not matter; JSON objects have sorted keys.
pub fn fingerprint(
    spec: &impl Serialize,
    facts: &impl std::fmt::Debug,
    observed: &[crate::engine::Observed],
    desired: &[crate::engine::Desired],
) -> String {
    let mut items: Vec<String> = observed
        .iter()
        .map(|o| {
            let compared = desired.iter().find(|d| d.kind == o.kind && d.id == o.id);
            let fields: serde_json::Map<String, serde_json::Value> = o
                .fields
                .iter()
                .filter(|(k, _)| compared.is_some_and(|d| d.fields.contains_key(*k)))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            serde_json::json!([o.kind, o.id, o.physical_id, o.attrs, fields, o.status]).to_string()
        })
        .collect();
    items.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff; // separator
    };
    feed(env!("CARGO_PKG_VERSION").as_bytes());
    feed(serde_json::to_string(spec).expect("spec serialises").as_bytes());
    feed(format!("{facts:?}").as_bytes());
    for i in &items {
        feed(i.as_bytes());
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Observed;
    use serde_json::json;

    /// A saved plan is applied only for its stack and fingerprint; anything else is refused,
    /// saying what it is and that nothing was applied.
    #[test]
    fn a_saved_plan_is_checked_by_stack_and_fingerprint() {
        let plan = Plan { stack: "s".into(), resources: vec![], notes: vec![], fingerprint: "0123456789abcdef".into() };
        let check = |text: &str| check_saved("p.json", text, &plan, "spec.yaml").map_err(|e| format!("{e:#}"));
        assert_eq!(check(r#"{"stack": "s", "fingerprint": "0123456789abcdef", "resources": "edited"}"#), Ok(()));
        for (text, says) in [
            ("not json", "p.json is not a saved plan"),
            ("[]", "has no `stack` and `fingerprint`"),
            (r#"{"stack": "s", "fingerprint": 7}"#, "has no `stack` and `fingerprint`"),
            (r#"{"stack": "t", "fingerprint": "0123456789abcdef"}"#, "a plan for stack `t`, not `s`: nothing was applied"),
            (r#"{"stack": "s", "fingerprint": "ffffffffffffffff"}"#, "reconciler plan spec.yaml --out p.json"),
        ] {
            let e = check(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    fn obs(id: &str, cidr: &str) -> Observed {
        Observed::new("ec2:subnet", id.into(), format!("subnet-{id}"), json!({"cidr": cidr}).as_object().unwrap().clone())
    }

    fn want(id: &str) -> crate::engine::Desired {
        crate::engine::Desired {
            kind: "ec2:subnet",
            id: id.into(),
            fields: json!({"cidr": ""}).as_object().unwrap().clone(),
            after: vec![],
        }
    }

    #[test]
    fn fingerprint_is_stable_and_sensitive() {
        let d = vec![want("a"), want("b")];
        let a = vec![obs("a", "10.0.0.0/24"), obs("b", "10.0.1.0/24")];
        let b = vec![a[1].clone(), a[0].clone()];
        assert_eq!(fingerprint(&"spec", &1, &a, &d), fingerprint(&"spec", &1, &b, &d), "order of observation is irrelevant");
        assert_ne!(fingerprint(&"spec", &1, &a, &d), fingerprint(&"spec2", &1, &a, &d), "the spec counts");
        assert_ne!(fingerprint(&"spec", &1, &a, &d), fingerprint(&"spec", &2, &a, &d), "the facts count");
        let drifted = vec![obs("a", "10.0.9.0/24"), obs("b", "10.0.1.0/24")];
        assert_ne!(fingerprint(&"spec", &1, &a, &d), fingerprint(&"spec", &1, &drifted, &d), "live state counts");
        assert_eq!(fingerprint(&"spec", &1, &a, &d).len(), 16);
        // A field the plan does not compare may change.
        let mut busy = a.clone();
        busy[0].fields.insert("running_count".into(), json!(3));
        assert_eq!(fingerprint(&"spec", &1, &a, &d), fingerprint(&"spec", &1, &busy, &d));
    }

    #[test]
    fn destructive_steps_are_replacements_and_deletions_but_not_duplicate_cleanup() {
        let r = |action: Action| ResourcePlan {
            kind: "k",
            id: "i".into(),
            physical_id: None,
            action,
            changes: vec![],
            cause: None,
            follows: None,
        };
        let p = Plan {
            stack: "s".into(),
            resources: vec![
                r(Action::Create),
                r(Action::Update),
                r(Action::Replace { reason: "x".into() }),
                r(Action::Delete { reason: "no longer in the spec".into() }),
                r(Action::Delete { reason: DUPLICATE.into() }),
                r(Action::Retain { reason: "x".into() }),
            ],
            notes: vec![],
            fingerprint: String::new(),
        };
        let d: Vec<&Action> = p.destructive().iter().map(|r| &r.action).collect();
        assert_eq!(d.len(), 3);
        assert!(matches!(d[0], Action::Replace { .. }) && matches!(d[1], Action::Delete { .. }) && matches!(d[2], Action::Retain { .. }));
        let text = super::render_text(&p, None, Style::Plain);
        assert!(text.contains("DESTRUCTIVE: 1 replacement(s), 1 deletion(s), 1 released"), "{text}");
    }
}
