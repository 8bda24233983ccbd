//! The one diff: desired fields (resolved) against observed fields. Kinds normalise both
//! sides (sets sorted, defaults filled) so that a plain comparison is right.

use super::{FieldChange, Fields};
use serde_json::Value;

/// Field-level differences. A field missing from `live` is unknown (the API did not report
/// it), not a difference, except where `live` reports it as null explicitly.
pub fn diff_fields(desired: &Fields, live: &Fields) -> Vec<FieldChange> {
    desired
        .iter()
        .filter_map(|(field, want)| {
            let have = live.get(field)?;
            (have != want).then(|| FieldChange { field: field.clone(), before: Some(have.clone()), after: want.clone() })
        })
        .collect()
}

/// Sorts and de-duplicates a list that AWS treats as a set (rules, routes, associations),
/// so that order never shows as a change.
pub fn normalise_set(mut items: Vec<Value>) -> Value {
    items.sort_by_key(|v| v.to_string());
    items.dedup();
    Value::Array(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Fields {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn reports_only_changed_known_fields() {
        let want = fields(json!({"cidr": "10.0.0.0/16", "dns": true, "tags": {"a": "1"}}));
        let have = fields(json!({"cidr": "10.0.0.0/16", "dns": false}));
        let d = diff_fields(&want, &have);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].field, "dns");
        assert_eq!(d[0].before, Some(json!(false)));
        assert_eq!(d[0].after, json!(true));
    }

    #[test]
    fn sets_ignore_order_and_duplicates() {
        let a = normalise_set(vec![json!({"p": 2}), json!({"p": 1}), json!({"p": 2})]);
        let b = normalise_set(vec![json!({"p": 1}), json!({"p": 2})]);
        assert_eq!(a, b);
    }
}
