//! The one diff: desired fields (resolved) against observed fields. Kinds normalise both
//! sides (sets sorted, defaults filled) so that a plain comparison is right. A field missing
//! live is drift (a removed health check, an emptied environment) unless the kind declares
//! the API may leave it out (`Kind::unreported`). Fields another owner controls
//! (`$initial`, `$within`) are compared by their own rule.

use super::refs::{initial_value, within_bounds};
use super::{FieldChange, Fields};
use serde_json::Value;

/// Field-level differences. `unreported`: fields whose absence live means "unknown".
pub fn diff_fields(desired: &Fields, live: &Fields, unreported: &[&str]) -> Vec<FieldChange> {
    desired
        .iter()
        .filter_map(|(field, want)| {
            let have = live.get(field);
            if initial_value(want).is_some() {
                return None; // someone else owns it after create
            }
            if let Some((lo, hi, _)) = within_bounds(want) {
                let n = have.and_then(Value::as_f64);
                return match n {
                    Some(n) if (lo..=hi).contains(&n) => None,
                    _ => Some(FieldChange { field: field.clone(), before: have.cloned(), after: clamp(n, lo, hi) }),
                };
            }
            match have {
                None if unreported.contains(&field.as_str()) => None,
                None => Some(FieldChange { field: field.clone(), before: None, after: want.clone() }),
                Some(have) => (have != want).then(|| FieldChange { field: field.clone(), before: Some(have.clone()), after: want.clone() }),
            }
        })
        .collect()
}

fn clamp(n: Option<f64>, lo: f64, hi: f64) -> Value {
    let v = n.map(|n| n.clamp(lo, hi)).unwrap_or(lo);
    serde_json::json!(v as u64)
}

/// Fields as a create sends them: markers replaced by their initial values.
pub fn for_create(fields: &Fields) -> Fields {
    fields
        .iter()
        .map(|(k, v)| {
            let v = initial_value(v).or_else(|| within_bounds(v).map(|(_, _, n)| n)).unwrap_or(v);
            (k.clone(), v.clone())
        })
        .collect()
}

/// Fields as an update sends them: what another owner controls keeps its live value (a
/// count inside its bounds, the deployed image); outside the bounds it is clamped.
pub fn for_update(fields: &Fields, live: &Fields) -> Fields {
    fields
        .iter()
        .map(|(k, v)| {
            let have = live.get(k);
            let v = if let Some(init) = initial_value(v) {
                have.unwrap_or(init).clone()
            } else if let Some((lo, hi, init)) = within_bounds(v) {
                match have.and_then(Value::as_f64) {
                    Some(n) => clamp(Some(n), lo, hi),
                    None => init.clone(),
                }
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{initial, normalise_set, within};
    use serde_json::json;

    fn fields(v: Value) -> Fields {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn reports_changed_and_missing_fields() {
        let want = fields(json!({"cidr": "10.0.0.0/16", "dns": true, "tags": {"a": "1"}}));
        let have = fields(json!({"cidr": "10.0.0.0/16", "dns": false}));
        let d = diff_fields(&want, &have, &[]);
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].field.as_str(), d[0].before.clone(), d[0].after.clone()), ("dns", Some(json!(false)), json!(true)));
        assert_eq!((d[1].field.as_str(), d[1].before.clone()), ("tags", None), "a field removed live is drift");
    }

    #[test]
    fn unreported_fields_are_unknown_when_missing() {
        let want = fields(json!({"grace": 60, "count": 1}));
        assert!(diff_fields(&want, &fields(json!({"count": 1})), &["grace"]).is_empty());
        // Reported but different is still drift.
        assert_eq!(diff_fields(&want, &fields(json!({"count": 1, "grace": 0})), &["grace"]).len(), 1);
    }

    #[test]
    fn values_owned_elsewhere() {
        let want = fields(json!({"image": initial(json!("a:1")), "count": within(2, 10, 3)}));
        assert!(diff_fields(&want, &fields(json!({"image": "b:2", "count": 7})), &[]).is_empty());
        let d = diff_fields(&want, &fields(json!({"image": "b:2", "count": 12})), &[]);
        assert_eq!((d[0].field.as_str(), d[0].before.clone(), d[0].after.clone()), ("count", Some(json!(12)), json!(10)));
        let d = diff_fields(&want, &fields(json!({"count": 1})), &[]);
        assert_eq!(d[0].after, json!(2));
        assert_eq!(for_create(&want), fields(json!({"image": "a:1", "count": 3})));
        assert_eq!(for_update(&want, &fields(json!({"image": "b:2", "count": 12}))), fields(json!({"image": "b:2", "count": 10})));
        assert_eq!(for_update(&want, &fields(json!({"count": 5}))), fields(json!({"image": "a:1", "count": 5})));
    }

    #[test]
    fn sets_ignore_order_and_duplicates() {
        let a = normalise_set(vec![json!({"p": 2}), json!({"p": 1}), json!({"p": 2})]);
        let b = normalise_set(vec![json!({"p": 1}), json!({"p": 2})]);
        assert_eq!(a, b);
    }
}
