//! A kind's typed view of its fields: each kind describes its fields as a serde struct that
//! desired state builds, observe reports and the verbs read, so that a field name is a
//! contract the compiler checks. References and markers are typed there too
//! (`engine::markers`: `Ref`, `Set`, `Managed`). The engine holds fields as JSON between the
//! two ends, because it diffs, resolves and prints them without knowing any kind;
//! [`check_desired`] reads every desired node back into its kind's struct, as built and as
//! create receives it, so that a kind whose struct and verbs disagree fails a unit test.

use super::planner::resolve_fields;
use super::{for_create, Desired, DynKind, FieldChange, Fields, Identity};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// A kind's typed fields from the engine's `Fields` (resolved). A field the kind does not know
/// or a missing one is a mismatch between desired state and the kind: an internal error that
/// names it, instead of a difference that never converges.
pub fn typed<T: DeserializeOwned>(kind: &str, fields: &Fields) -> anyhow::Result<T> {
    serde_json::from_value(Value::Object(fields.clone()))
        .map_err(|e| anyhow::anyhow!("internal error: the fields of a {kind} do not match its fields struct: {e}"))
}

/// The nodes observe is asked for, read into the kind's fields struct: what it looks its
/// resources up by (a name, a parent). They come as desired state built them (references
/// unresolved: `Ref::To`) or, looking again at one resource, as observe reported it; a kind
/// whose observe leaves out a field its struct requires (the ECS service's unreported
/// fields) reads the few it looks up by instead.
pub fn wanted<T: DeserializeOwned>(kind: &str, wanted: &[&Desired]) -> anyhow::Result<Vec<T>> {
    wanted.iter().map(|d| typed(kind, &d.fields)).collect()
}

/// (logical id, key) of each wanted resource of a kind, the key (a name, a route key) read
/// from its fields by `key_of`: for a kind that finds its resources by listing them, to name
/// each one found ([`logical_id`]).
pub fn wanted_keys<T: DeserializeOwned>(
    kind: &str,
    wanted: &[&Desired],
    key_of: impl Fn(T) -> String,
) -> anyhow::Result<Vec<(String, String)>> {
    let fields: Vec<T> = self::wanted(kind, wanted)?;
    Ok(wanted.iter().zip(fields).map(|(w, f)| (w.id.clone(), key_of(f))).collect())
}

/// The logical id of a resource found with key `key`: the wanted one's ([`wanted_keys`]), else
/// `unwanted()`, for one the spec does not want (plan shows it, apply prunes it).
pub fn logical_id(keys: &[(String, String)], key: &str, unwanted: impl FnOnce() -> String) -> String {
    keys.iter().find(|(_, k)| k == key).map_or_else(unwanted, |(id, _)| id.clone())
}

/// The engine's `Fields` from a kind's typed fields (what observe reports).
pub fn untyped<T: Serialize>(fields: &T) -> Fields {
    match serde_json::to_value(fields) {
        Ok(Value::Object(m)) => m,
        _ => unreachable!("typed fields serialise to an object"),
    }
}

/// Whether `field` is among the changes.
pub fn changed(changes: &[FieldChange], field: &str) -> bool {
    changes.iter().any(|c| c.field == field)
}

/// The first reference or marker key (`$ref`, `$set`, `$initial`, `$within`) inside `v`.
fn marker_in(v: &Value) -> Option<String> {
    match v {
        Value::Object(m) => m.keys().find(|k| k.starts_with('$')).cloned().or_else(|| m.values().find_map(marker_in)),
        Value::Array(a) => a.iter().find_map(marker_in),
        _ => None,
    }
}

/// Whether every desired node reads into its kind's typed fields ([`Kind::check_fields`]), both
/// as desired state built it (references and markers in place) and as `create` would receive
/// it: references resolved (to stand-in ids: what matters is the shape, not the value) and
/// markers replaced by their initial values. Pure, no AWS call: the
/// unit tests run it over the desired state of every spec in `specs/`, the spec fuzz target
/// over every spec it finds valid. The error lists every node that does not fit.
pub fn check_desired(kinds: &[Box<dyn DynKind>], desired: &[Desired], externals: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let mut ids: BTreeMap<String, Identity> = desired.iter().map(|d| (d.id.clone(), Identity::id(format!("{}-id", d.id)))).collect();
    ids.extend(externals.iter().map(|(k, v)| (k.clone(), Identity::id(v.as_str()))));
    let mut bad = Vec::new();
    for d in desired {
        let Some(kind) = kinds.iter().find(|k| k.name() == d.kind) else {
            bad.push(format!("{} {}: no such kind is registered", d.kind, d.id));
            continue;
        };
        match kind.check_fields(&d.fields) {
            Err(e) => bad.push(format!("{} {}: {e}", d.kind, d.id)),
            // What the struct writes back is the node: it carries every field, markers included.
            Ok(back) if back != d.fields => {
                let keys: BTreeSet<&String> = d.fields.keys().chain(back.keys()).collect();
                let differ: Vec<&&String> = keys.iter().filter(|k| back.get(**k) != d.fields.get(**k)).collect();
                bad.push(format!("{} {}: its fields struct does not write back {differ:?} as given", d.kind, d.id));
            }
            Ok(_) => match kind.check_fields(&for_create(&resolve_fields(&d.fields, &ids))) {
                Err(e) => bad.push(format!("{} {} (as create receives it): {e}", d.kind, d.id)),
                // A marker the engine does not apply (below the top level) would reach a verb.
                Ok(back) => {
                    if let Some(key) = marker_in(&Value::Object(back)) {
                        bad.push(format!(
                            "{} {}: `{key}` is left where create receives it: markers go on top-level fields only",
                            d.kind, d.id
                        ));
                    }
                }
            },
        }
    }
    anyhow::ensure!(bad.is_empty(), "desired state does not fit its kinds' fields:\n{}", bad.join("\n"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::marker_in;
    use serde_json::json;

    #[test]
    fn a_listed_resource_is_named_by_its_key_or_as_unwanted() {
        #[derive(serde::Deserialize)]
        struct Named {
            name: String,
        }
        let desired = |id: &str, name: &str| crate::engine::Desired {
            kind: "x:named",
            id: id.into(),
            fields: json!({"name": name}).as_object().unwrap().clone(),
            after: vec![],
        };
        let (a, b) = (desired("route-a", "GET /a"), desired("route-b", "GET /b"));
        let keys = super::wanted_keys("x:named", &[&a, &b], |f: Named| f.name).unwrap();
        assert_eq!(super::logical_id(&keys, "GET /b", || "unwanted".into()), "route-b");
        assert_eq!(super::logical_id(&keys, "GET /c", || "route GET /c".into()), "route GET /c", "not wanted: named by the kind");
        let wrong = crate::engine::Desired { fields: json!({"name": 3}).as_object().unwrap().clone(), ..desired("route-c", "") };
        assert!(super::wanted_keys("x:named", &[&wrong], |f: Named| f.name).is_err(), "fields that are not the kind's are an error");
    }

    #[test]
    fn a_marker_below_the_top_level_is_found() {
        assert_eq!(marker_in(&json!({"a": 1, "b": [{"c": "$default"}]})), None, "a value starting with $ is not a marker");
        assert_eq!(marker_in(&json!({"a": {"b": [{"$initial": 3}]}})).as_deref(), Some("$initial"));
        assert_eq!(marker_in(&json!([{"$ref": "x"}])).as_deref(), Some("$ref"));
    }
}
