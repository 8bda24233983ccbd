//! Values with meaning to the engine inside desired fields:
//! - `{"$ref": "<logical id>"}` stands for that node's physical id until it is known, and
//!   `{"$ref": "<id>", "$attr": "arn"}` for one of its attributes (ARN, name, URL);
//! - `{"$set": [...]}` is a list AWS treats as a set;
//! - `{"$initial": v}` is set on create and then owned by someone else (never diffed);
//! - `{"$within": [min, max], "$initial": n}` is set to `n` on create and afterwards only
//!   drift when the live value leaves [min, max] (a count that autoscaling owns).

pub(crate) use super::markers::{initial_value, set_of, within_bounds, UNKNOWN};
use super::markers::{ref_target, set_items};
use super::markers::{Ref, Set};
use super::Identity;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

// The JSON builders below serialise the typed forms (`engine::markers`): one definition of
// each marker's shape.

pub fn reference(id: &str) -> Value {
    to_json(Ref::to(id))
}

/// One attribute of another node (`arn`, `name`, `url`: whatever its kind reports).
pub fn reference_to(id: &str, attr: &str) -> Value {
    to_json(Ref::attr(id, attr))
}

/// A list AWS treats as a set (rules, routes, associations). It is sorted after references
/// are resolved, because the order of AWS ids is only known then; observe sorts the live
/// side the same way (`Set::from`, `set_of`), so order never shows as a change.
pub fn set(items: Vec<Value>) -> Value {
    to_json(Set::of(items))
}

/// Set on create; afterwards another owner controls it (a deploy pipeline's image). Desired
/// state writes `Managed::Initial`; the engine's tests write the JSON with this.
#[cfg(test)]
pub fn initial(v: Value) -> Value {
    to_json(super::markers::Managed::Initial(v))
}

/// Set to `initial` on create; afterwards drift only outside [min, max] (`Managed::Within`).
#[cfg(test)]
pub fn within(min: u64, max: u64, initial: u64) -> Value {
    to_json(super::markers::Managed::Within { min, max, initial })
}

fn to_json(v: impl Serialize) -> Value {
    serde_json::to_value(v).expect("markers serialise to JSON")
}

/// Every logical id referenced anywhere inside `v`.
pub fn references(v: &Value, out: &mut BTreeSet<String>) {
    if let Some((id, _)) = ref_target(v) {
        out.insert(id.to_string());
        return;
    }
    match v {
        Value::Array(a) => a.iter().for_each(|x| references(x, out)),
        Value::Object(m) => m.values().for_each(|x| references(x, out)),
        _ => {}
    }
}

/// Replaces references by what they point at; what is not (yet) known becomes [`UNKNOWN`].
pub fn resolve(v: &Value, ids: &BTreeMap<String, Identity>) -> Value {
    if let Some((id, attr)) = ref_target(v) {
        let found = ids.get(id).and_then(|i| match attr {
            None => Some(i.physical_id.clone()),
            Some(a) => i.attrs.get(a).cloned(),
        });
        return Value::String(found.unwrap_or_else(|| UNKNOWN.to_string()));
    }
    if let Some(items) = set_items(v) {
        return normalise_set(items.iter().map(|x| resolve(x, ids)).collect());
    }
    match v {
        Value::Array(a) => Value::Array(a.iter().map(|x| resolve(x, ids)).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), resolve(x, ids))).collect()),
        other => other.clone(),
    }
}

pub fn contains_unknown(v: &Value) -> bool {
    match v {
        Value::String(s) => s == UNKNOWN,
        Value::Array(a) => a.iter().any(contains_unknown),
        Value::Object(m) => m.values().any(contains_unknown),
        _ => false,
    }
}

/// Sorts and de-duplicates a list that AWS treats as a set (rules, routes, associations),
/// so that order never shows as a change.
pub fn normalise_set(items: Vec<Value>) -> Value {
    Value::Array(set_of(items))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ids(pairs: &[(&str, &str)]) -> BTreeMap<String, Identity> {
        pairs.iter().map(|(k, v)| (k.to_string(), Identity::id(*v).with("arn", format!("arn:{v}")))).collect()
    }

    #[test]
    fn resolves_nested_references_and_attributes() {
        let v = json!({"vpc": reference("vpc"), "role": reference_to("role", "arn"), "routes": [{"to": "0.0.0.0/0", "nat": reference("nat-1")}]});
        let mut refs = BTreeSet::new();
        references(&v, &mut refs);
        assert_eq!(refs.into_iter().collect::<Vec<_>>(), ["nat-1", "role", "vpc"]);
        let r = resolve(&v, &ids(&[("vpc", "vpc-1"), ("role", "r")]));
        assert_eq!(r["vpc"], "vpc-1");
        assert_eq!(r["role"], "arn:r");
        assert_eq!(r["routes"][0]["nat"], UNKNOWN);
        assert!(contains_unknown(&r));
        assert!(!contains_unknown(&r["vpc"]));
        // An attribute the kind does not report is unknown, not the id.
        assert_eq!(resolve(&reference_to("vpc", "url"), &ids(&[("vpc", "vpc-1")])), json!(UNKNOWN));
    }

    #[test]
    fn sets_are_sorted_after_resolution() {
        let v = set(vec![reference("a"), reference("b"), json!("x")]);
        let r = resolve(&v, &ids(&[("a", "subnet-9"), ("b", "subnet-1")]));
        assert_eq!(r, json!(["subnet-1", "subnet-9", "x"]));
        let mut refs = BTreeSet::new();
        references(&v, &mut refs);
        assert_eq!(refs.len(), 2);
    }

    #[test]
    fn markers_are_recognised() {
        assert_eq!(initial_value(&initial(json!("img:1"))), Some(&json!("img:1")));
        assert_eq!(initial_value(&json!({"$initial": 1, "x": 2})), None);
        let w = within(2, 10, 3);
        let (lo, hi, n) = within_bounds(&w).unwrap();
        assert_eq!((lo, hi, n), (2.0, 10.0, &json!(3)));
    }
}
