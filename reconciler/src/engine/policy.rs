//! The IAM policy the tool needs, built from what each kind declares it calls. `plan` needs
//! only reads. `apply` and `destroy` also need creates, allowed only when the request tags the
//! new resource with this stack's `reconciler:stack`, and changes, allowed only on resources
//! that already carry it. So the policy cannot touch what the stack does not own.

use super::ownership::STACK_TAG;
use super::Kind;
use serde_json::{json, Value};
use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Plan,
    Apply,
}

/// Reads that the engine itself needs beside the kinds' (the facts the layout depends on).
pub const FACT_READS: &[&str] = &["ec2:DescribeAvailabilityZones", "ec2:DescribeVpcs", "ec2:DescribeSubnets"];

/// `lock`: the S3 bucket and key of the stack lock, if the spec has one.
pub fn document(stack: &str, kinds: &[Box<dyn Kind>], purpose: Purpose, lock: Option<(&str, &str)>) -> Value {
    let mut read: BTreeSet<&str> = FACT_READS.iter().copied().collect();
    let mut create: BTreeSet<&str> = BTreeSet::new();
    let mut change: BTreeSet<&str> = BTreeSet::new();
    for k in kinds {
        let a = k.iam_actions();
        read.extend(a.read);
        create.extend(a.create);
        change.extend(a.change);
    }
    let mut statements = vec![json!({"Sid": "ReadEverythingTheStackLooksAt", "Effect": "Allow", "Action": read, "Resource": "*"})];
    if purpose == Purpose::Apply {
        statements.push(json!({
            "Sid": "CreateOnlyTaggedForThisStack",
            "Effect": "Allow",
            "Action": create,
            "Resource": "*",
            "Condition": {"StringEquals": {format!("aws:RequestTag/{STACK_TAG}"): stack}},
        }));
        statements.push(json!({
            "Sid": "TagOnCreate",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": "*",
            "Condition": {"StringEquals": {"ec2:CreateAction": create, format!("aws:RequestTag/{STACK_TAG}"): stack}},
        }));
        statements.push(json!({
            "Sid": "ChangeOnlyWhatThisStackOwns",
            "Effect": "Allow",
            "Action": change,
            "Resource": "*",
            "Condition": {"StringEquals": {format!("aws:ResourceTag/{STACK_TAG}"): stack}},
        }));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::registry;

    fn actions(doc: &Value) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for s in doc["Statement"].as_array().unwrap() {
            if s["Effect"] != "Allow" {
                continue;
            }
            match &s["Action"] {
                Value::String(a) => {
                    out.insert(a.clone());
                }
                Value::Array(a) => out.extend(a.iter().map(|x| x.as_str().unwrap().to_string())),
                _ => {}
            }
        }
        out
    }

    #[test]
    fn plan_policy_only_reads() {
        let doc = document("s", &registry(), Purpose::Plan, Some(("b", "k")));
        let acts = actions(&doc);
        assert!(acts.iter().all(|a| a.starts_with("ec2:Describe")), "{acts:?}");
        assert!(acts.contains("ec2:DescribeSecurityGroupRules") && acts.contains("ec2:DescribeAvailabilityZones"));
        assert!(!acts.contains("s3:PutObject"), "plan takes no lock");
    }

    #[test]
    fn the_lock_is_one_object() {
        let doc = document("s", &registry(), Purpose::Apply, Some(("locks", "reconciler/s.lock")));
        let st = doc["Statement"].as_array().unwrap().iter().find(|s| s["Sid"] == "HoldTheStackLock").unwrap();
        assert_eq!(st["Resource"], "arn:aws:s3:::locks/reconciler/s.lock");
    }

    #[test]
    fn apply_policy_scopes_mutations_to_the_stack() {
        let doc = document("my-stack", &registry(), Purpose::Apply, None);
        let acts = actions(&doc);
        for a in ["ec2:CreateVpc", "ec2:DeleteVpc", "ec2:RevokeSecurityGroupIngress", "ec2:CreateNatGateway", "ec2:ReplaceRoute"] {
            assert!(acts.contains(a), "missing {a}");
        }
        for s in doc["Statement"].as_array().unwrap() {
            let only_reads = s["Action"].as_array().is_some_and(|a| a.iter().all(|x| x.as_str().unwrap().starts_with("ec2:Describe")));
            if !only_reads {
                assert!(s["Condition"].to_string().contains("my-stack"), "unscoped statement {s}");
            }
        }
    }
}
