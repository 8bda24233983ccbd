//! Ownership: a resource belongs to a stack when it carries `reconciler:stack = <stack>`;
//! `reconciler:id` names its logical id. Nothing without both tags is ever updated or deleted.

use std::collections::BTreeMap;

pub const STACK_TAG: &str = "reconciler:stack";
pub const ID_TAG: &str = "reconciler:id";
/// On a resource whose deletion policy is `retain`: destroy and pruning orphan it.
pub const RETAIN_TAG: &str = "reconciler:deletion-policy";
/// Put on an orphaned resource, naming the stack that retained it.
pub const RETAINED_FROM_TAG: &str = "reconciler:retained-from";

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

/// Tags as compared in diffs: AWS-managed `aws:*` tags are not ours to manage.
pub fn comparable<'a>(tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> BTreeMap<String, String> {
    tags.into_iter().filter(|(k, _)| !k.starts_with("aws:")).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
