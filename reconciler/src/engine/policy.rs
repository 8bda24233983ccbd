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

    /// Statements AWS gives no way to limit to the stack, each explained in the README
    /// (section "Least privilege").
    const UNSCOPABLE: [&str; 3] = [
        // Cloud Map creates the namespace's hosted zone with the caller's permissions; Route 53
        // scopes CreateHostedZone by neither tag nor name.
        "CloudMapCreatesTheNamespaceHostedZone",
        // Limited to the one service-linked role's ARN and service name.
        "AutoscalingCreatesItsServiceLinkedRoleForEcs",
        // ECS DeregisterTaskDefinition takes neither a resource ARN nor a tag condition.
        "EcsDeregisterTaskDefinitions",
    ];

    fn is_read(action: &str) -> bool {
        let verb = action.split(':').nth(1).unwrap_or_default();
        ["Describe", "List", "Get"].iter().any(|p| verb.starts_with(p))
    }

    #[test]
    fn plan_policy_only_reads() {
        let doc = document("s", &registry(), Purpose::Plan, crate::facts::IAM_READS, Some(("b", "k")));
        let acts = actions(&doc);
        assert!(acts.iter().all(|a| is_read(a)), "{acts:?}");
        assert!(acts.contains("ec2:DescribeSecurityGroupRules") && acts.contains("ec2:DescribeAvailabilityZones"));
        assert!(acts.contains("sts:GetCallerIdentity"));
        assert!(!acts.contains("s3:PutObject"), "plan takes no lock");
    }

    #[test]
    fn the_lock_is_one_object() {
        let doc = document("s", &registry(), Purpose::Apply, crate::facts::IAM_READS, Some(("locks", "reconciler/s.lock")));
        let st = doc["Statement"].as_array().unwrap().iter().find(|s| s["Sid"] == "HoldTheStackLock").unwrap();
        assert_eq!(st["Resource"], "arn:aws:s3:::locks/reconciler/s.lock");
    }

    /// Every statement that can change something is limited to the stack: by a tag condition
    /// naming it, or by resource ARNs that contain its name.
    #[test]
    fn apply_policy_scopes_mutations_to_the_stack() {
        let doc = document("my-stack", &registry(), Purpose::Apply, crate::facts::IAM_READS, None);
        let acts = actions(&doc);
        for a in ["ec2:CreateVpc", "ec2:DeleteVpc", "ec2:RevokeSecurityGroupIngress", "ec2:CreateNatGateway", "ec2:ReplaceRoute"] {
            assert!(acts.contains(a), "missing {a}");
        }
        for s in doc["Statement"].as_array().unwrap() {
            let listed: Vec<&str> = match &s["Action"] {
                Value::String(a) => vec![a.as_str()],
                Value::Array(a) => a.iter().map(|x| x.as_str().unwrap()).collect(),
                _ => vec![],
            };
            if listed.iter().all(|a| is_read(a)) {
                continue;
            }
            let by_tag = s["Condition"].to_string().contains("my-stack");
            let resources: Vec<String> = match &s["Resource"] {
                Value::String(r) => vec![r.clone()],
                Value::Array(r) => r.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
                _ => vec![],
            };
            let by_name = !resources.is_empty() && resources.iter().all(|r| r.contains("my-stack"));
            let sid = s["Sid"].as_str().unwrap_or_default();
            assert!(by_tag || by_name || UNSCOPABLE.contains(&sid), "unscoped statement {s}");
        }
    }

    /// EC2 names the create call in `ec2:CreateAction` by its bare name: `ec2:CreateVpc` there
    /// would deny every tagged create on real AWS.
    #[test]
    fn tag_on_create_uses_bare_action_names() {
        let doc = document("my-stack", &registry(), Purpose::Apply, crate::facts::IAM_READS, None);
        let st = doc["Statement"].as_array().unwrap().iter().find(|s| s["Sid"] == "TagOnCreate").expect("one TagOnCreate statement");
        assert_eq!(st["Action"], "ec2:CreateTags");
        let listed = st["Condition"]["StringEquals"]["ec2:CreateAction"].as_array().unwrap();
        assert!(listed.contains(&json!("CreateVpc")) && listed.contains(&json!("AllocateAddress")));
        assert!(listed.iter().all(|a| !a.as_str().unwrap().contains(':')));
        assert_eq!(doc["Statement"].as_array().unwrap().iter().filter(|s| s["Sid"] == "TagOnCreate").count(), 1);
    }
}
