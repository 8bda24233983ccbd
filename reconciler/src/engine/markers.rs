//! The typed forms of what [`super::refs`] describes as JSON: a kind's fields struct uses
//! [`Ref`] where desired state may point at another node, [`Set`] for a list AWS treats as a
//! set, and [`Managed`] for a value another owner controls after create. Desired state builds
//! the structs with them; they serialise to exactly the JSON the engine resolves and diffs
//! generically (`{"$ref": ...}`, `{"$set": [...]}`, `{"$initial": ...}`, `{"$within": ...}`),
//! and what observe reports or a verb receives (resolved, markers applied) reads back into the
//! plain variant. A verb never sees a reference or a marker: the engine resolves references
//! before it calls one and applies markers (`for_create`, `for_update`). The readers of the
//! JSON forms the engine needs ([`ref_target`], [`set_items`], [`initial_value`],
//! [`within_bounds`], [`set_of`]) are here too, beside the types that write them; the types
//! read through them.

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Value};
use std::ops::Deref;

/// Shown in plans for values that only exist after a dependency is created.
pub const UNKNOWN: &str = "(known after apply)";

/// `(id, attr)` of a `$ref` (with `$attr` or not), if `v` is one.
pub(crate) fn ref_target(v: &Value) -> Option<(&str, Option<&str>)> {
    let Value::Object(m) = v else { return None };
    let id = m.get("$ref")?.as_str()?;
    match (m.len(), m.get("$attr").and_then(Value::as_str)) {
        (1, None) => Some((id, None)),
        (2, Some(attr)) => Some((id, Some(attr))),
        _ => None,
    }
}

/// The items of a `$set`, if `v` is one.
pub(crate) fn set_items(v: &Value) -> Option<&Vec<Value>> {
    match v {
        Value::Object(m) if m.len() == 1 => m.get("$set").and_then(Value::as_array),
        _ => None,
    }
}

/// The value of an `$initial` marker, if `v` is one.
pub(crate) fn initial_value(v: &Value) -> Option<&Value> {
    match v {
        Value::Object(m) if m.len() == 1 => m.get("$initial"),
        _ => None,
    }
}

/// (min, max, initial) of a `$within` marker.
pub(crate) fn within_bounds(v: &Value) -> Option<(f64, f64, &Value)> {
    let Value::Object(m) = v else { return None };
    let b = m.get("$within")?.as_array()?;
    Some((b.first()?.as_f64()?, b.get(1)?.as_f64()?, m.get("$initial")?))
}

/// A list AWS treats as a set, sorted by JSON text with duplicates dropped: the one order both
/// sides are compared in (desired sets through [`super::refs::normalise_set`], a kind's typed sets
/// directly), so that the order AWS reports never shows as a change.
pub fn set_of<T: Serialize + PartialEq>(mut items: Vec<T>) -> Vec<T> {
    items.sort_by_cached_key(|v| serde_json::to_string(v).unwrap_or_default());
    items.dedup();
    items
}

/// A string field that desired state may give as another node's physical id
/// ([`Ref::to`]) or one of its attributes ([`Ref::attr`]); observe reports the string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ref {
    Is(String),
    To { id: String, attr: Option<String> },
}

impl Ref {
    /// The physical id of the node `id`.
    pub fn to(id: &str) -> Ref {
        Ref::To { id: id.into(), attr: None }
    }
    /// An attribute (`arn`, `name`, `url`, whatever its kind reports) of the node `id`.
    pub fn attr(id: &str, attr: &str) -> Ref {
        Ref::To { id: id.into(), attr: Some(attr.into()) }
    }
    pub fn as_str(&self) -> &str {
        match self {
            Ref::Is(s) => s,
            // Only desired state holds one, and the engine resolves it before a verb runs.
            Ref::To { .. } => UNKNOWN,
        }
    }
}

impl Deref for Ref {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for Ref {
    fn from(s: String) -> Ref {
        Ref::Is(s)
    }
}
impl From<&str> for Ref {
    fn from(s: &str) -> Ref {
        Ref::Is(s.into())
    }
}
impl From<&String> for Ref {
    fn from(s: &String) -> Ref {
        Ref::Is(s.clone())
    }
}
impl From<Ref> for String {
    fn from(r: Ref) -> String {
        r.as_str().to_string()
    }
}
impl From<&Ref> for String {
    fn from(r: &Ref) -> String {
        r.as_str().to_string()
    }
}
impl PartialEq<str> for Ref {
    fn eq(&self, other: &str) -> bool {
        matches!(self, Ref::Is(s) if s == other)
    }
}
impl PartialEq<&str> for Ref {
    fn eq(&self, other: &&str) -> bool {
        self == *other
    }
}
impl PartialEq<String> for Ref {
    fn eq(&self, other: &String) -> bool {
        self == other.as_str()
    }
}

impl Serialize for Ref {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Ref::Is(v) => v.serialize(s),
            Ref::To { id, attr: None } => json!({ "$ref": id }).serialize(s),
            Ref::To { id, attr: Some(a) } => json!({ "$ref": id, "$attr": a }).serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Ref {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ref, D::Error> {
        let v = Value::deserialize(d)?;
        match (&v, ref_target(&v)) {
            (Value::String(s), _) => Ok(Ref::Is(s.clone())),
            (_, Some((id, None))) => Ok(Ref::to(id)),
            (_, Some((id, Some(attr)))) => Ok(Ref::attr(id, attr)),
            (_, None) => Err(D::Error::custom(format!("expected a string or a reference, found {v}"))),
        }
    }
}

/// A list AWS treats as a set (rules, routes, associations, subnets). Desired state builds
/// [`Set::of`], which the engine sorts once its references are resolved (the order of AWS ids
/// is only known then); observe builds [`Set::from`], sorted the same way, so order never
/// shows as a change. Read it as a slice.
#[derive(Debug, Clone)]
pub enum Set<T> {
    /// As desired state gives it: `{"$set": [...]}`.
    Of(Vec<T>),
    /// Sorted and without duplicates: as observe reports it and a verb receives it.
    Is(Vec<T>),
}

impl<T> Set<T> {
    /// A set in desired state (its order does not matter).
    pub fn of(items: Vec<T>) -> Set<T> {
        Set::Of(items)
    }
    pub fn items(&self) -> &[T] {
        match self {
            Set::Of(v) | Set::Is(v) => v,
        }
    }
}

impl<T: Serialize + PartialEq> From<Vec<T>> for Set<T> {
    /// A live set: sorted, duplicates dropped.
    fn from(items: Vec<T>) -> Set<T> {
        Set::Is(set_of(items))
    }
}

impl From<Vec<String>> for Set<Ref> {
    /// Live ids: sorted, duplicates dropped.
    fn from(items: Vec<String>) -> Set<Ref> {
        items.into_iter().map(Ref::Is).collect()
    }
}

impl Set<Ref> {
    /// The ids, for an API call.
    pub fn ids(&self) -> Vec<String> {
        self.iter().map(String::from).collect()
    }
}

impl<T: Serialize + PartialEq> FromIterator<T> for Set<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Set<T> {
        Set::from(items.into_iter().collect::<Vec<_>>())
    }
}

impl<T> Deref for Set<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.items()
    }
}

impl<T> Default for Set<T> {
    fn default() -> Set<T> {
        Set::Is(Vec::new())
    }
}

/// Equal as sets of the same items in the same (sorted) order: how the engine compares them.
impl<T: PartialEq> PartialEq for Set<T> {
    fn eq(&self, other: &Set<T>) -> bool {
        self.items() == other.items()
    }
}

impl<T: Serialize> Serialize for Set<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Set::Of(v) => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("$set", v)?;
                m.end()
            }
            Set::Is(v) => v.serialize(s),
        }
    }
}

impl<'de, T: DeserializeOwned + Serialize + PartialEq> Deserialize<'de> for Set<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Set<T>, D::Error> {
        let v = Value::deserialize(d)?;
        match set_items(&v) {
            Some(items) => items.iter().map(T::deserialize).collect::<Result<Vec<T>, _>>().map(Set::Of).map_err(D::Error::custom),
            None => Vec::<T>::deserialize(v).map(Set::from).map_err(D::Error::custom),
        }
    }
}

/// A value another owner controls after create, or the value itself. Only at the top of a
/// kind's fields (the engine applies markers field by field).
#[derive(Debug, Clone, PartialEq)]
pub enum Managed<T> {
    Is(T),
    /// Set on create; afterwards another owner controls it (a deploy pipeline's image):
    /// never compared.
    Initial(T),
    /// Set to `initial` on create; afterwards drift only outside [min, max] (a count that
    /// autoscaling owns).
    Within {
        min: u64,
        max: u64,
        initial: T,
    },
}

impl<T> Managed<T> {
    /// The value create sends: the value itself or its initial one.
    pub fn value(&self) -> &T {
        match self {
            Managed::Is(v) | Managed::Initial(v) | Managed::Within { initial: v, .. } => v,
        }
    }
}

impl<T> Deref for Managed<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value()
    }
}

impl<T> From<T> for Managed<T> {
    fn from(v: T) -> Managed<T> {
        Managed::Is(v)
    }
}

impl<T: Serialize> Serialize for Managed<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Managed::Is(v) => v.serialize(s),
            Managed::Initial(v) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("$initial", v)?;
                m.end()
            }
            Managed::Within { min, max, initial } => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("$within", &[min, max])?;
                m.serialize_entry("$initial", initial)?;
                m.end()
            }
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Managed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Managed<T>, D::Error> {
        let v = Value::deserialize(d)?;
        let value = |v: Value| serde_json::from_value::<T>(v).map_err(D::Error::custom);
        if let Some(init) = initial_value(&v) {
            return Ok(Managed::Initial(value(init.clone())?));
        }
        if let Some((min, max, init)) = within_bounds(&v) {
            return Ok(Managed::Within { min: min as u64, max: max as u64, initial: value(init.clone())? });
        }
        value(v).map(Managed::Is)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_form_serialises_to_the_json_the_engine_reads_and_back() {
        let cases: Vec<(Value, Value)> = vec![
            (serde_json::to_value(Ref::to("vpc")).unwrap(), json!({"$ref": "vpc"})),
            (serde_json::to_value(Ref::attr("role", "arn")).unwrap(), json!({"$ref": "role", "$attr": "arn"})),
            (serde_json::to_value(Ref::from("vpc-1")).unwrap(), json!("vpc-1")),
            (serde_json::to_value(Set::of(vec![Ref::to("b"), Ref::to("a")])).unwrap(), json!({"$set": [{"$ref": "b"}, {"$ref": "a"}]})),
            (serde_json::to_value(Set::from(vec!["b", "a", "b"])).unwrap(), json!(["a", "b"])),
            (serde_json::to_value(Managed::Initial("img:1")).unwrap(), json!({"$initial": "img:1"})),
            (serde_json::to_value(Managed::Within { min: 2, max: 10, initial: 3u64 }).unwrap(), json!({"$within": [2, 10], "$initial": 3})),
            (serde_json::to_value(Managed::Is(3u64)).unwrap(), json!(3)),
        ];
        for (typed, json) in cases {
            assert_eq!(typed, json);
        }
        let r: Ref = serde_json::from_value(json!({"$ref": "role", "$attr": "arn"})).unwrap();
        assert_eq!(r, Ref::attr("role", "arn"));
        assert_eq!(r.as_str(), UNKNOWN, "an unresolved reference never reads as an id");
        let s: Set<Ref> = serde_json::from_value(json!({"$set": [{"$ref": "a"}]})).unwrap();
        assert_eq!((s.len(), matches!(s, Set::Of(_))), (1, true));
        let m: Managed<u64> = serde_json::from_value(json!({"$within": [2, 10], "$initial": 3})).unwrap();
        assert_eq!((m.clone(), *m), (Managed::Within { min: 2, max: 10, initial: 3 }, 3));
    }

    #[test]
    fn a_value_of_the_wrong_shape_is_named() {
        let e = serde_json::from_value::<Ref>(json!(3)).unwrap_err().to_string();
        assert!(e.contains("expected a string or a reference, found 3"), "{e}");
        let e = serde_json::from_value::<Ref>(json!({"$ref": "a", "x": 1})).unwrap_err().to_string();
        assert!(e.contains("expected a string or a reference"), "{e}");
        let e = serde_json::from_value::<Managed<u64>>(json!({"$initial": "x"})).unwrap_err().to_string();
        assert!(e.contains("expected u64"), "{e}");
        let e = serde_json::from_value::<Set<String>>(json!({"$set": [1]})).unwrap_err().to_string();
        assert!(e.contains("expected a string"), "{e}");
    }
}
