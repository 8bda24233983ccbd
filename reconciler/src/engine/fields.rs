//! A kind's typed view of its fields: each kind describes its fields as a serde struct that
//! observe builds and the verbs read, so that a field name is a contract the compiler and
//! serde check. Desired state still writes its nodes as JSON (references and markers are JSON
//! objects there); [`check_desired`] reads every node of it into its kind's struct, so that a
//! field desired state misspells fails a unit test, not an apply.

use super::planner::resolve_fields;
use super::{for_create, Desired, DynKind, FieldChange, Fields, Identity};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// A kind's typed fields from the engine's `Fields` (resolved). A field the kind does not know
/// or a missing one is a mismatch between desired state and the kind: an internal error that
/// names it, instead of a difference that never converges.
pub fn typed<T: DeserializeOwned>(kind: &str, fields: &Fields) -> anyhow::Result<T> {
    serde_json::from_value(Value::Object(fields.clone()))
        .map_err(|e| anyhow::anyhow!("internal error: the fields of a {kind} do not match its fields struct: {e}"))
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

/// Whether every desired node reads into its kind's typed fields ([`Kind::check_fields`]) as
/// `create` would receive it: references resolved (to stand-in ids: what matters is the
/// shape, not the value) and markers replaced by their initial values. Pure, no AWS call: the
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
        if let Err(e) = kind.check_fields(&for_create(&resolve_fields(&d.fields, &ids))) {
            bad.push(format!("{} {}: {e}", d.kind, d.id));
        }
    }
    anyhow::ensure!(bad.is_empty(), "desired state does not fit its kinds' fields:\n{}", bad.join("\n"));
    Ok(())
}
