//! The IAM policy the tool needs, built from what each kind declares it calls. `plan` needs
//! only reads. `apply` and `destroy` also need creates, allowed only when the request tags the
//! new resource with this stack's `reconciler:stack`, and changes, allowed only on resources
//! that already carry it. Kinds whose resources cannot be tag-conditioned (IAM roles, log
//! groups, queues) scope their actions by ARN patterns derived from the stack name instead.
//! So the policy cannot touch what the stack does not own.
//!
//! Calls AWS authorises on a resource ARN are granted on the ARN patterns the kinds declare
//! for their service (`arn:aws:ec2:*:*:vpc/*`), not on `*`, under the same tag conditions;
//! only calls that take no resource stay on `*` (statements whose `Sid` ends in `NoArn`).

use super::ownership::STACK_TAG;
use super::DynKind;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Plan,
    Apply,
}

/// `facts`: reads the engine makes beside the kinds' (what the layout depends on); one a kind
/// lists in `read_by_arn` is granted by ARN like the kind's.
/// `added`: statements for what the caller does beside the kinds (holding the stack lock:
/// [`super::lock::iam_statement`]), appended as they are.
/// `account_wide`: whether the kinds' account-wide reads are granted (the spec allows them).
pub fn document(
    stack: &str,
    kinds: &[Box<dyn DynKind>],
    purpose: Purpose,
    facts: &[&'static str],
    added: &[Value],
    account_wide: bool,
) -> Value {
    let mut read: BTreeSet<&str> = facts.iter().copied().collect();
    let mut read_by_arn: BTreeSet<&str> = BTreeSet::new();
    let mut create: BTreeSet<&str> = BTreeSet::new();
    let mut change: BTreeSet<&str> = BTreeSet::new();
    let mut on_any: BTreeSet<&str> = BTreeSet::new();
    // ARN patterns by service (the ARN's third field).
    let mut arns: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Scoped statements, merged by resource set so each set appears once.
    let mut scoped: BTreeMap<Vec<String>, BTreeSet<&str>> = BTreeMap::new();
    let mut extra: Vec<Value> = Vec::new();
    for k in kinds {
        let a = k.iam(stack);
        read.extend(a.read);
        if account_wide {
            read.extend(a.read_account_wide);
        }
        read_by_arn.extend(a.read_by_arn);
        create.extend(a.create);
        change.extend(a.change);
        on_any.extend(a.on_any);
        for arn in a.arns {
            arns.entry(arn_service(&arn).to_string()).or_default().insert(arn);
        }
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
    read.extend(read_by_arn.iter().copied());
    let read = split(&read, &arns, |a| read_by_arn.contains(a));
    let mut statements = vec![json!({"Sid": "ReadCallsThatTakeNoArn", "Effect": "Allow", "Action": read.anywhere, "Resource": "*"})];
    if !read.by_arn.is_empty() {
        statements.push(json!({"Sid": "ReadByArn", "Effect": "Allow", "Action": read.by_arn, "Resource": read.resources}));
    }
    if purpose == Purpose::Apply {
        let conditioned = [
            ("CreateOnlyTaggedForThisStack", create, format!("aws:RequestTag/{STACK_TAG}")),
            ("ChangeOnlyWhatThisStackOwns", change, format!("aws:ResourceTag/{STACK_TAG}")),
        ];
        for (sid, actions, key) in conditioned {
            let condition = json!({"StringEquals": {key: stack}});
            let actions = split(&actions, &arns, |a| !on_any.contains(a));
            if !actions.by_arn.is_empty() {
                statements.push(json!({
                    "Sid": sid,
                    "Effect": "Allow",
                    "Action": actions.by_arn,
                    "Resource": actions.resources,
                    "Condition": condition,
                }));
            }
            if !actions.anywhere.is_empty() {
                statements.push(json!({
                    "Sid": format!("{sid}NoArn"),
                    "Effect": "Allow",
                    "Action": actions.anywhere,
                    "Resource": "*",
                    "Condition": condition,
                }));
            }
        }
    }
    for (i, (resources, actions)) in scoped.into_iter().enumerate() {
        statements.push(json!({"Sid": format!("ScopedByName{}", i + 1), "Effect": "Allow", "Action": actions, "Resource": resources}));
    }
    statements.extend(extra);
    statements.extend(added.iter().cloned());
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// The service an ARN belongs to (`arn:aws:ec2:*:*:vpc/*` → `ec2`).
fn arn_service(arn: &str) -> &str {
    arn.split(':').nth(2).unwrap_or_default()
}

/// Actions split by what AWS authorises them on.
struct Split<'a> {
    /// On `*`.
    anywhere: BTreeSet<&'a str>,
    /// On the ARN patterns of their service.
    by_arn: BTreeSet<&'a str>,
    /// The patterns of every service in `by_arn`. One statement holds them all (an action is
    /// only ever matched against ARNs of its own service, so this grants what one statement
    /// per service would, and keeps the policy under IAM's size limits).
    resources: BTreeSet<&'a str>,
}

/// `actions` split: an action goes by ARN when `by_arn` says it takes one and its service
/// has patterns.
fn split<'a>(actions: &BTreeSet<&'a str>, arns: &'a BTreeMap<String, BTreeSet<String>>, by_arn: impl Fn(&str) -> bool) -> Split<'a> {
    let mut out = Split { anywhere: BTreeSet::new(), by_arn: BTreeSet::new(), resources: BTreeSet::new() };
    for &a in actions {
        match arns.get(a.split(':').next().unwrap_or_default()) {
            Some(patterns) if by_arn(a) => {
                out.by_arn.insert(a);
                out.resources.extend(patterns.iter().map(String::as_str));
            }
            _ => {
                out.anywhere.insert(a);
            }
        }
    }
    out
}
