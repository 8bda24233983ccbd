//! A kind's typed view of its fields: each kind describes its fields as a serde struct, built
//! by desired state and read by the kind, so that a field name is a contract the compiler and
//! serde check rather than a string in three places.

use super::{FieldChange, Fields};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

/// A kind's typed fields from the engine's `Fields` (resolved). A field the kind does not know
/// or a missing one is a mismatch between desired state and the kind: an internal error that
/// names it, instead of a difference that never converges.
pub fn typed<T: DeserializeOwned>(kind: &str, fields: &Fields) -> anyhow::Result<T> {
    serde_json::from_value(Value::Object(fields.clone()))
        .map_err(|e| anyhow::anyhow!("internal error: the desired fields of a {kind} do not match what the kind expects: {e}"))
}

/// The engine's `Fields` from a kind's typed fields (what observe reports).
pub fn untyped<T: Serialize>(fields: &T) -> Fields {
    match serde_json::to_value(fields) {
        Ok(Value::Object(m)) => m,
        _ => unreachable!("typed fields serialise to an object"),
    }
}

/// A string field of resolved desired fields (for kinds that read fields one by one).
pub fn str_field<'a>(f: &'a Fields, name: &str) -> anyhow::Result<&'a str> {
    f.get(name).and_then(Value::as_str).ok_or_else(|| anyhow::anyhow!("internal error: field `{name}` is missing or not a string"))
}

/// Whether `field` is among the changes.
pub fn changed(changes: &[FieldChange], field: &str) -> bool {
    changes.iter().any(|c| c.field == field)
}
