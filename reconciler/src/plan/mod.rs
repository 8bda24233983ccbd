//! A plan is a value: per resource an action and its field-level changes. Computed once by
//! the engine; rendered as text or JSON here; executed by `engine::apply`.

mod render;

pub use render::{render_json, render_markdown, render_text};

use crate::engine::FieldChange;
use serde::Serialize;

/// A stable digest (FNV-1a, 64 bit, hex) of the plan's inputs. Observed resources are sorted
/// first, so the order AWS lists them in does not matter; JSON objects have sorted keys.
pub fn fingerprint(spec: &impl Serialize, facts: &impl std::fmt::Debug, observed: &[crate::engine::Observed]) -> String {
    let mut items: Vec<String> = observed.iter().map(|o| serde_json::to_string(o).expect("observed serialises")).collect();
    items.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff; // separator
    };
    feed(serde_json::to_string(spec).expect("spec serialises").as_bytes());
    feed(format!("{facts:?}").as_bytes());
    for i in &items {
        feed(i.as_bytes());
    }
    format!("{h:016x}")
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Plan {
    pub stack: String,
    pub resources: Vec<ResourcePlan>,
    /// Things the user should know that are not changes (e.g. sections not reconciled yet).
    pub notes: Vec<String>,
    /// Digest of everything the plan was computed from (spec, live facts, observed resources):
    /// a saved plan is applied only while this still matches.
    #[serde(default)]
    pub fingerprint: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResourcePlan {
    pub kind: &'static str,
    pub id: String,
    pub physical_id: Option<String>,
    #[serde(flatten)]
    pub action: Action,
    pub changes: Vec<FieldChange>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    NoOp,
    Create,
    Update,
    Replace { reason: String },
    Delete { reason: String },
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.resources.iter().any(|r| r.action != Action::NoOp)
    }

    pub fn count(&self, pred: impl Fn(&Action) -> bool) -> usize {
        self.resources.iter().filter(|r| pred(&r.action)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Observed;
    use serde_json::json;

    fn obs(id: &str, cidr: &str) -> Observed {
        Observed {
            kind: "ec2:subnet",
            id: id.into(),
            physical_id: format!("subnet-{id}"),
            fields: json!({"cidr": cidr}).as_object().unwrap().clone(),
        }
    }

    #[test]
    fn fingerprint_is_stable_and_sensitive() {
        let a = vec![obs("a", "10.0.0.0/24"), obs("b", "10.0.1.0/24")];
        let b = vec![a[1].clone(), a[0].clone()];
        assert_eq!(fingerprint(&"spec", &1, &a), fingerprint(&"spec", &1, &b), "order of observation is irrelevant");
        assert_ne!(fingerprint(&"spec", &1, &a), fingerprint(&"spec2", &1, &a), "the spec counts");
        assert_ne!(fingerprint(&"spec", &1, &a), fingerprint(&"spec", &2, &a), "the facts count");
        let drifted = vec![obs("a", "10.0.9.0/24"), obs("b", "10.0.1.0/24")];
        assert_ne!(fingerprint(&"spec", &1, &a), fingerprint(&"spec", &1, &drifted), "live state counts");
        assert_eq!(fingerprint(&"spec", &1, &a).len(), 16);
    }
}
