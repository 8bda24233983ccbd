//! Ownership: a resource belongs to a stack when it carries `reconciler:stack = <stack>`;
//! `reconciler:id` names its logical id. Nothing without both tags is ever updated or deleted.

use serde_json::Value;
use std::collections::BTreeMap;

pub const STACK_TAG: &str = "reconciler:stack";
pub const ID_TAG: &str = "reconciler:id";
/// On a resource whose deletion policy is `retain`: destroy and pruning orphan it.
pub const RETAIN_TAG: &str = "reconciler:deletion-policy";
/// Put on an orphaned resource, naming the stack that retained it.
pub const RETAINED_FROM_TAG: &str = "reconciler:retained-from";
/// A hash of the desired fields (tags included) a resource was last converged to: drift
/// attribution without a state file. Live differs, tag = desired hash → changed outside the
/// spec; tag ≠ desired hash → the spec changed.
pub const APPLIED_TAG: &str = "reconciler:applied";

/// The `reconciler:applied` value for desired `fields` (before references are resolved, so it
/// depends on the spec only, not on physical ids): FNV-1a 64 of the canonical JSON.
pub fn applied_hash(fields: &serde_json::Map<String, Value>) -> String {
    let text = serde_json::to_string(fields).expect("fields serialise");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Who made the difference between `desired` and `live` fields: the `reconciler:applied` tags
/// told apart. `Unknown` where either side has none (an untaggable kind, or a resource last
/// converged by a version without the tag).
pub fn attribution(desired: &serde_json::Map<String, Value>, live: &serde_json::Map<String, Value>) -> crate::changes::Cause {
    let applied =
        |f: &serde_json::Map<String, Value>| f.get("tags").and_then(|t| t.get(APPLIED_TAG)).and_then(Value::as_str).map(str::to_string);
    match (applied(desired), applied(live)) {
        (Some(want), Some(have)) if want == have => crate::changes::Cause::Drift,
        (Some(_), Some(_)) => crate::changes::Cause::SpecChanged,
        _ => crate::changes::Cause::Unknown,
    }
}

/// Whether observed fields (their `tags` map) say the resource is to be retained.
pub fn retained(fields: &serde_json::Map<String, serde_json::Value>) -> bool {
    fields.get("tags").and_then(|t| t.get(RETAIN_TAG)).and_then(|v| v.as_str()) == Some("retain")
}

/// A resource found by a name the spec wants that this stack does not own. `plan` and
/// `apply` stop on it; `destroy` leaves it alone (it is not ours to delete).
#[derive(Debug)]
pub struct NotOwned {
    pub name: String,
    pub message: String,
}

impl std::fmt::Display for NotOwned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for NotOwned {}

/// The error for a resource found by name that this stack does not own.
pub fn not_owned(what: &str, name: &str, stack: &str, tags: &BTreeMap<String, String>) -> anyhow::Error {
    let hint = match tags.get(RETAINED_FROM_TAG) {
        Some(s) if s == stack => format!(
            " It was retained by an earlier destroy of this stack: to adopt it, tag it {STACK_TAG}={stack} and {ID_TAG}=<logical id>, or delete it."
        ),
        _ => " Rename it in the spec, or remove or re-tag the other one: the reconciler never adopts what it does not own.".to_string(),
    };
    let message = format!(
        "{what} `{name}` exists but is not owned by stack `{stack}` (it lacks the tag {STACK_TAG}={stack}); nothing was changed.{hint}"
    );
    anyhow::Error::new(NotOwned { name: name.to_string(), message })
}

pub fn tags(stack: &str, id: &str, user: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut t = user.clone();
    t.insert("Name".into(), format!("{stack}-{id}"));
    t.insert(STACK_TAG.into(), stack.into());
    t.insert(ID_TAG.into(), id.into());
    t
}

/// The logical id of a resource if (and only if) `stack` owns it.
pub fn owned_id<'a>(stack: &str, tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<String> {
    let mut is_ours = false;
    let mut id = None;
    for (k, v) in tags {
        match k {
            STACK_TAG => is_ours = v == stack,
            ID_TAG => id = Some(v.to_string()),
            _ => {}
        }
    }
    id.filter(|_| is_ours)
}

/// What a resource's tags say: its logical id if `stack` owns it, and its tags as compared.
pub fn owner<'a, I>(stack: &str, tags: I) -> (Option<String>, TagMap)
where
    I: IntoIterator<Item = (&'a str, &'a str)> + Clone,
{
    (owned_id(stack, tags.clone()), comparable(tags))
}

/// [`owner`] from a tag map as the SDKs of CloudWatch Logs, SQS and API Gateway return it.
pub fn owner_of_map(stack: &str, tags: Option<&std::collections::HashMap<String, String>>) -> (Option<String>, TagMap) {
    owner(stack, tags.into_iter().flatten().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// Removes from an observed `tags` field the keys other tools manage (`ignore`: keys, or
/// prefixes ending in `*`), unless the spec sets that key itself: they are then neither
/// compared nor removed by tag convergence, which only acts on compared keys.
pub fn drop_ignored_tags(fields: &mut serde_json::Map<String, Value>, spec_tags: Option<&Value>, ignore: &[String]) {
    if ignore.is_empty() {
        return;
    }
    let Some(Value::Object(live)) = fields.get_mut("tags") else { return };
    let wanted = |k: &str| spec_tags.and_then(|t| t.get(k)).is_some();
    let ignored = |k: &str| {
        ignore.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => k.starts_with(prefix),
            None => k == p,
        })
    };
    live.retain(|k, _| wanted(k) || !ignored(k));
}

/// Tags as compared in diffs: AWS-managed `aws:*` tags are not ours to manage.
pub fn comparable<'a>(tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> BTreeMap<String, String> {
    tags.into_iter().filter(|(k, _)| !k.starts_with("aws:")).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A `tags` field: key → value.
pub type TagMap = BTreeMap<String, String>;

/// What turns one tag set into another: keys to set (new, or with another value) and keys to
/// remove. Tags are set before they are removed, so ownership tags are never missing midway.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TagDelta {
    pub set: TagMap,
    pub unset: Vec<String>,
}

impl TagDelta {
    pub fn between(have: &TagMap, want: &TagMap) -> TagDelta {
        TagDelta {
            set: want.iter().filter(|(k, v)| have.get(*k) != Some(v)).map(|(k, v)| (k.clone(), v.clone())).collect(),
            unset: have.keys().filter(|k| !want.contains_key(*k)).cloned().collect(),
        }
    }

    /// The `tags` change among `changes`, if any. AWS-managed `aws:*` tags were never
    /// compared (observe drops them), so they are never removed.
    pub fn of(changes: &[super::FieldChange]) -> TagDelta {
        let Some(c) = changes.iter().find(|c| c.field == "tags") else { return TagDelta::default() };
        TagDelta::between(&tag_map(c.before.as_ref()), &tag_map(Some(&c.after)))
    }

    /// Retaining a resource: mark the stack it came from, then drop the ownership tags (in
    /// that order, so that an interruption never leaves it unowned *and* unmarked).
    pub fn orphan(stack: &str) -> TagDelta {
        TagDelta {
            set: TagMap::from([(RETAINED_FROM_TAG.to_string(), stack.to_string())]),
            unset: vec![STACK_TAG.to_string(), ID_TAG.to_string()],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.unset.is_empty()
    }
}

/// A `tags` field value as a map (anything else as empty).
pub fn tag_map(v: Option<&Value>) -> TagMap {
    v.and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribution_tells_drift_from_a_spec_change() {
        use crate::changes::Cause;
        let f = |v: serde_json::Value| v.as_object().unwrap().clone();
        let desired = f(serde_json::json!({"cidr": "10.0.0.0/16", "tags": {APPLIED_TAG: "aaa"}}));
        assert_eq!(attribution(&desired, &f(serde_json::json!({"cidr": "10.9.0.0/16", "tags": {APPLIED_TAG: "aaa"}}))), Cause::Drift);
        assert_eq!(attribution(&desired, &f(serde_json::json!({"tags": {APPLIED_TAG: "bbb"}}))), Cause::SpecChanged);
        assert_eq!(attribution(&desired, &f(serde_json::json!({"tags": {}}))), Cause::Unknown, "never tagged");
        assert_eq!(attribution(&f(serde_json::json!({"x": 1})), &f(serde_json::json!({"x": 2}))), Cause::Unknown, "untaggable");
        let a = applied_hash(&f(serde_json::json!({"b": 1, "a": [1, 2]})));
        assert_eq!(a, applied_hash(&f(serde_json::json!({"a": [1, 2], "b": 1}))), "key order does not matter");
        assert_ne!(a, applied_hash(&f(serde_json::json!({"a": [1, 2], "b": 2}))));
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn ownership_needs_both_tags_and_the_right_stack() {
        assert_eq!(owned_id("s", [(STACK_TAG, "s"), (ID_TAG, "vpc")]), Some("vpc".into()));
        assert_eq!(owned_id("s", [(STACK_TAG, "other"), (ID_TAG, "vpc")]), None);
        assert_eq!(owned_id("s", [(ID_TAG, "vpc")]), None);
        assert_eq!(owned_id("s", [(STACK_TAG, "s"), ("Name", "s-vpc")]), None);
    }

    #[test]
    fn aws_tags_are_ignored() {
        let t = comparable([("aws:cloudformation:stack-name", "x"), ("a", "1")]);
        assert_eq!(t.len(), 1);
    }

    fn map(pairs: &[(&str, &str)]) -> TagMap {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn tag_delta_sets_what_differs_and_removes_what_is_extra() {
        let have = map(&[("a", "1"), ("b", "2"), ("gone", "x")]);
        let want = map(&[("a", "1"), ("b", "3"), ("new", "y")]);
        let d = TagDelta::between(&have, &want);
        assert_eq!(d.set, map(&[("b", "3"), ("new", "y")]));
        assert_eq!(d.unset, vec!["gone".to_string()]);
        assert!(TagDelta::between(&want, &want).is_empty());
    }

    #[test]
    fn tag_delta_from_a_change() {
        let c = crate::engine::FieldChange { field: "tags".into(), before: None, after: serde_json::json!({"a": "1"}) };
        assert_eq!(TagDelta::of(&[c]).set, map(&[("a", "1")]), "tags missing live: everything is set");
        let other =
            crate::engine::FieldChange { field: "retention".into(), before: Some(serde_json::json!(1)), after: serde_json::json!(2) };
        assert!(TagDelta::of(&[other]).is_empty());
    }

    #[test]
    fn orphaning_marks_then_drops_ownership() {
        let d = TagDelta::orphan("s");
        assert_eq!(d.set, map(&[(RETAINED_FROM_TAG, "s")]));
        assert_eq!(d.unset, vec![STACK_TAG.to_string(), ID_TAG.to_string()]);
    }

    #[test]
    fn ignored_tags_are_dropped_unless_the_spec_sets_them() {
        let mut f = serde_json::json!({"tags": {"cost:team": "a", "cost:center": "b", "scanner": "x", "keep": "y", "owner": "z"}})
            .as_object()
            .unwrap()
            .clone();
        let spec = serde_json::json!({"owner": "z", "cost:team": "a"});
        drop_ignored_tags(&mut f, Some(&spec), &["cost:*".into(), "scanner".into(), "owner".into()]);
        assert_eq!(f["tags"], serde_json::json!({"cost:team": "a", "keep": "y", "owner": "z"}));
        let mut g = serde_json::json!({"tags": {"scanner": "x"}}).as_object().unwrap().clone();
        drop_ignored_tags(&mut g, None, &[]);
        assert_eq!(g["tags"], serde_json::json!({"scanner": "x"}), "nothing ignored by default");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn tag_map(keys: &'static str) -> impl Strategy<Value = TagMap> {
            prop::collection::btree_map(keys, "[a-z0-9 ]{0,6}", 0..4)
        }

        proptest! {
            /// #23 §2: the tags a resource was created with, as AWS lists them back (any order,
            /// with AWS's own `aws:*` tags and tags other tools manage), compare equal to the
            /// desired set; and a delta from any tag set reaches the desired one.
            #[test]
            fn owned_tags_read_back_equal_the_desired_ones(
                user in tag_map("[a-z]{1,5}"),
                aws in tag_map("aws:[a-z]{1,5}"),
                others in tag_map("scan-[a-z]{1,4}"),
                have in tag_map("[a-z]{1,3}"),
                turn in 0..8usize,
            ) {
                let want = tags("stack", "vpc", &user);
                let mut listed: Vec<(&str, &str)> =
                    want.iter().chain(aws.iter()).chain(others.iter()).map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let by = turn % listed.len();
                listed.rotate_left(by);
                prop_assert_eq!(owned_id("stack", listed.iter().copied()), Some("vpc".to_string()));
                let mut fields = serde_json::Map::new();
                fields.insert("tags".into(), serde_json::to_value(comparable(listed)).unwrap());
                drop_ignored_tags(&mut fields, Some(&serde_json::to_value(&want).unwrap()), &["scan-*".to_string()]);
                prop_assert_eq!(super::super::tag_map(fields.get("tags")), want.clone());

                let delta = TagDelta::between(&have, &want);
                let mut after = have.clone();
                after.extend(delta.set.clone());
                for k in &delta.unset {
                    prop_assert!(!want.contains_key(k), "removes {} that is wanted", k);
                    after.remove(k);
                }
                prop_assert_eq!(after, want);
            }
        }
    }
}
