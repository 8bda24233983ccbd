//! The IAM policy the tool needs, built from what each kind declares it calls. `plan` needs
//! only reads. `apply` and `destroy` also need creates, allowed only when the request tags the
//! new resource with this stack's `reconciler:stack`, and changes, allowed only on resources
//! that already carry it. Kinds whose resources cannot be tag-conditioned (IAM roles, log
//! groups, queues) scope their actions by ARN patterns derived from the stack name instead.
//! So the policy cannot touch what the stack does not own.

use super::ownership::STACK_TAG;
use super::Kind;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Plan,
    Apply,
}

/// `facts`: reads the engine makes beside the kinds' (what the layout depends on).
/// `lock`: the S3 bucket and key of the stack lock, if the spec has one.
pub fn document(stack: &str, kinds: &[Box<dyn Kind>], purpose: Purpose, facts: &[&'static str], lock: Option<(&str, &str)>) -> Value {
    let mut read: BTreeSet<&str> = facts.iter().copied().collect();
    let mut create: BTreeSet<&str> = BTreeSet::new();
    let mut change: BTreeSet<&str> = BTreeSet::new();
    // Scoped statements, merged by resource set so each set appears once.
    let mut scoped: BTreeMap<Vec<String>, BTreeSet<&str>> = BTreeMap::new();
    let mut extra: Vec<Value> = Vec::new();
    for k in kinds {
        let a = k.iam(stack);
        read.extend(a.read);
        create.extend(a.create);
        change.extend(a.change);
        for sc in a.scoped {
            if purpose == Purpose::Apply || sc.read_only {
                let mut resources = sc.resources.clone();
                resources.sort();
                scoped.entry(resources).or_default().extend(sc.actions);
            }
        }
        if purpose == Purpose::Apply {
            for st in a.extra {
                if !extra.contains(&st) {
                    extra.push(st);
                }
            }
        }
    }
    let mut statements = vec![json!({"Sid": "ReadEverythingTheStackLooksAt", "Effect": "Allow", "Action": read, "Resource": "*"})];
    if purpose == Purpose::Apply {
        if !create.is_empty() {
            statements.push(json!({
                "Sid": "CreateOnlyTaggedForThisStack",
                "Effect": "Allow",
                "Action": create,
                "Resource": "*",
                "Condition": {"StringEquals": {format!("aws:RequestTag/{STACK_TAG}"): stack}},
            }));
        }
        if !change.is_empty() {
            statements.push(json!({
                "Sid": "ChangeOnlyWhatThisStackOwns",
                "Effect": "Allow",
                "Action": change,
                "Resource": "*",
                "Condition": {"StringEquals": {format!("aws:ResourceTag/{STACK_TAG}"): stack}},
            }));
        }
    }
    for (i, (resources, actions)) in scoped.into_iter().enumerate() {
        statements.push(json!({"Sid": format!("ScopedByName{}", i + 1), "Effect": "Allow", "Action": actions, "Resource": resources}));
    }
    statements.extend(extra);
    if let (Purpose::Apply, Some((bucket, key))) = (purpose, lock) {
        statements.push(json!({
            "Sid": "HoldTheStackLock",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
            "Resource": format!("arn:aws:s3:::{bucket}/{key}"),
        }));
    }
    json!({"Version": "2012-10-17", "Statement": statements})
}
