//! Ownership: a resource belongs to a stack when it carries `reconciler:stack = <stack>`;
//! `reconciler:id` names its logical id. Nothing without both tags is ever updated or deleted.

use std::collections::BTreeMap;

pub const STACK_TAG: &str = "reconciler:stack";
pub const ID_TAG: &str = "reconciler:id";

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
