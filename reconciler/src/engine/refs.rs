//! References between desired nodes: `{"$ref": "<logical id>"}` stands for that node's
//! physical id until it is known.

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Shown in plans for values that only exist after a dependency is created.
pub const UNKNOWN: &str = "(known after apply)";

pub fn reference(id: &str) -> Value {
    json!({ "$ref": id })
}

/// A list AWS treats as a set (rules, routes, associations). It is sorted after references
/// are resolved, because the order of AWS ids is only known then; observe sorts the live
/// side the same way (`normalise_set`), so order never shows as a change.
pub fn set(items: Vec<Value>) -> Value {
    json!({ "$set": items })
}

fn ref_target(v: &Value) -> Option<&str> {
    match v {
        Value::Object(m) if m.len() == 1 => m.get("$ref").and_then(Value::as_str),
        _ => None,
    }
}

fn set_items(v: &Value) -> Option<&Vec<Value>> {
    match v {
        Value::Object(m) if m.len() == 1 => m.get("$set").and_then(Value::as_array),
        _ => None,
    }
}

/// Every logical id referenced anywhere inside `v`.
pub fn references(v: &Value, out: &mut BTreeSet<String>) {
    if let Some(id) = ref_target(v) {
        out.insert(id.to_string());
        return;
    }
    match v {
        Value::Array(a) => a.iter().for_each(|x| references(x, out)),
        Value::Object(m) => m.values().for_each(|x| references(x, out)),
        _ => {}
    }
}

/// Replaces references by physical ids; ids not (yet) known become [`UNKNOWN`].
pub fn resolve(v: &Value, ids: &BTreeMap<String, String>) -> Value {
    if let Some(id) = ref_target(v) {
        return Value::String(ids.get(id).cloned().unwrap_or_else(|| UNKNOWN.to_string()));
    }
    if let Some(items) = set_items(v) {
        return super::diff::normalise_set(items.iter().map(|x| resolve(x, ids)).collect());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_nested_references() {
        let v = json!({"vpc": reference("vpc"), "routes": [{"to": "0.0.0.0/0", "nat": reference("nat-1")}]});
        let mut refs = BTreeSet::new();
        references(&v, &mut refs);
        assert_eq!(refs.into_iter().collect::<Vec<_>>(), ["nat-1", "vpc"]);
        let ids = BTreeMap::from([("vpc".to_string(), "vpc-1".to_string())]);
        let r = resolve(&v, &ids);
        assert_eq!(r["vpc"], "vpc-1");
        assert_eq!(r["routes"][0]["nat"], UNKNOWN);
        assert!(contains_unknown(&r));
        assert!(!contains_unknown(&r["vpc"]));
    }

    #[test]
    fn sets_are_sorted_after_resolution() {
        let v = set(vec![reference("a"), reference("b"), json!("x")]);
        let ids = BTreeMap::from([("a".to_string(), "subnet-9".to_string()), ("b".to_string(), "subnet-1".to_string())]);
        assert_eq!(resolve(&v, &ids), json!(["subnet-1", "subnet-9", "x"]));
        let mut refs = BTreeSet::new();
        references(&v, &mut refs);
        assert_eq!(refs.len(), 2);
    }
}
