//! One folder per AWS service, one file per resource kind, each implementing
//! [`crate::engine::Kind`] with the same verbs. Each service folder holds its own helpers
//! (client, tagging, error codes).

pub mod apigateway;
pub mod autoscaling;
pub mod ec2;
pub mod ecs;
pub mod iam;
pub mod logs;
pub mod scheduler;
pub mod servicediscovery;
pub mod sqs;
#[cfg(test)]
mod tag_conditions;
pub mod tagging;

use crate::engine::DynKind;

/// Every kind. The order is only the order of reads and listings: the engine derives
/// creation and deletion order from references, not from this list.
pub fn registry() -> Vec<Box<dyn DynKind>> {
    let mut kinds = ec2::kinds();
    kinds.extend(iam::kinds());
    kinds.extend(logs::kinds());
    kinds.extend(sqs::kinds());
    kinds.extend(servicediscovery::kinds());
    kinds.extend(ecs::kinds());
    kinds.extend(autoscaling::kinds());
    kinds.extend(apigateway::kinds());
    kinds.extend(scheduler::kinds());
    kinds.shrink_to_fit();
    kinds
}

/// The policy the whole registry needs (here, beside the registry: the engine's policy
/// builder knows no service).
#[cfg(test)]
mod policy_tests {
    use super::registry;
    use crate::engine::policy::{document, Purpose};
    use serde_json::{json, Value};
    use std::collections::BTreeSet;

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
    const UNSCOPABLE: [&str; 7] = [
        // Cloud Map creates the namespace's hosted zone with the caller's permissions; Route 53
        // scopes CreateHostedZone by neither tag nor name.
        "CloudMapCreatesTheNamespaceHostedZone",
        // Limited to the one service-linked role's ARN and service name.
        "AutoscalingCreatesItsServiceLinkedRoleForEcs",
        "EcsCreatesItsServiceLinkedRole",
        // A security-group rule carries no tags when it is authorised (nor does AWS's default
        // egress rule): EC2 authorises the call on the group too, which is tag-conditioned.
        "SecurityGroupRulesOfTheStacksGroups",
        // ECS DeregisterTaskDefinition takes neither a resource ARN nor a tag condition.
        "EcsDeregisterTaskDefinitions",
        // API Gateway's access logging is a CloudWatch Logs vended delivery, made with the
        // caller's permissions; those log-delivery actions take no resource ARN.
        "ApiGatewayAccessLogDelivery",
        // An HTTP API's routes and integrations carry no tags and API Gateway documents no
        // tag inheritance for them: granted by path under any API (the id comes later).
        "HttpApiChildrenByPath",
    ];

    fn is_read(action: &str) -> bool {
        let verb = action.split(':').nth(1).unwrap_or_default();
        // API Gateway authorises by HTTP verb: GET reads.
        verb == "GET" || ["Describe", "List", "Get"].iter().any(|p| verb.starts_with(p))
    }

    #[test]
    fn plan_policy_only_reads() {
        let doc = document("s", &registry(), Purpose::Plan, crate::spec::policy::FACTS_READS, &[], true);
        let acts = actions(&doc);
        assert!(acts.iter().all(|a| is_read(a)), "{acts:?}");
        assert!(acts.contains("ec2:DescribeSecurityGroupRules") && acts.contains("ec2:DescribeAvailabilityZones"));
        assert!(acts.contains("sts:GetCallerIdentity"));
    }

    /// Every statement that can change something is limited to the stack: by a tag condition
    /// naming it, or by resource ARNs that contain its name.
    #[test]
    fn apply_policy_scopes_mutations_to_the_stack() {
        let doc = document("my-stack", &registry(), Purpose::Apply, crate::spec::policy::FACTS_READS, &[], true);
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

    fn statement<'a>(doc: &'a Value, sid: &str) -> &'a Value {
        doc["Statement"].as_array().unwrap().iter().find(|s| s["Sid"] == sid).unwrap_or_else(|| panic!("no statement {sid} in {doc}"))
    }

    /// An `Action` or `Resource` element as a list (one string or an array).
    pub(super) fn listed(v: &Value) -> Vec<&str> {
        match v {
            Value::String(a) => vec![a.as_str()],
            Value::Array(a) => a.iter().map(|x| x.as_str().unwrap()).collect(),
            _ => vec![],
        }
    }

    /// Calls AWS authorises on a resource ARN get their service's ARN patterns, keeping the
    /// tag conditions; only calls that take no resource stay on `*` (what `parliament` checks
    /// in tests/policy.rs, here without Python).
    #[test]
    fn calls_that_take_an_arn_are_granted_on_arn_patterns() {
        let doc = document("my-stack", &registry(), Purpose::Apply, crate::spec::policy::FACTS_READS, &[], true);
        let create = statement(&doc, "CreateOnlyTaggedForThisStack");
        assert!(listed(&create["Action"]).contains(&"ec2:CreateVpc"));
        assert!(listed(&create["Resource"]).contains(&"arn:aws:ec2:*:*:vpc/*"));
        assert_eq!(create["Condition"]["StringEquals"]["aws:RequestTag/reconciler:stack"], "my-stack");
        let change = statement(&doc, "ChangeOnlyWhatThisStackOwns");
        assert!(listed(&change["Action"]).contains(&"ecs:UpdateService"));
        assert!(listed(&change["Resource"]).contains(&"arn:aws:ecs:*:*:service/*"));
        assert_eq!(change["Condition"]["StringEquals"]["aws:ResourceTag/reconciler:stack"], "my-stack");
        // Cloud Map's namespace create takes no resource: on `*`, still tag-conditioned.
        let any = statement(&doc, "CreateOnlyTaggedForThisStackNoArn");
        assert_eq!(any["Resource"], "*");
        assert!(listed(&any["Action"]).contains(&"servicediscovery:CreatePrivateDnsNamespace"));
        assert_eq!(any["Condition"]["StringEquals"]["aws:RequestTag/reconciler:stack"], "my-stack");
        // Every ARN-scoped statement names, for each of its actions, ARNs of that service.
        for s in doc["Statement"].as_array().unwrap() {
            let resources = listed(&s["Resource"]);
            if resources == ["*"] {
                continue;
            }
            for a in listed(&s["Action"]) {
                let service = a.split(':').next().unwrap();
                assert!(resources.iter().any(|r| r.split(':').nth(2) == Some(service)), "{a} has no {service} ARN in {s}");
            }
        }
    }

    /// An HTTP API's routes and integrations cannot be tagged and AWS documents no tag
    /// inheritance from the API for them (it does for REST API children and a domain's API
    /// mappings): a resource-tag condition could refuse every route on a first apply. They
    /// are granted by path, without condition, and nothing else is in that statement.
    #[test]
    fn http_api_children_are_granted_by_path_not_by_tag() {
        let doc = document("my-stack", &registry(), Purpose::Apply, crate::spec::policy::FACTS_READS, &[], true);
        let children = statement(&doc, "HttpApiChildrenByPath");
        assert!(children.get("Condition").is_none(), "{children}");
        assert_eq!(listed(&children["Action"]), ["apigateway:DELETE", "apigateway:PATCH", "apigateway:POST"]);
        let resources = listed(&children["Resource"]);
        for c in ["routes", "integrations", "stages"] {
            assert!(resources.contains(&format!("arn:aws:apigateway:*::/apis/*/{c}*").as_str()), "{c} missing: {resources:?}");
        }
        assert!(resources.iter().all(|r| r.starts_with("arn:aws:apigateway:*::/apis/*/")), "only an API's children: {resources:?}");
        // Only one copy although three kinds declare it.
        let copies = doc["Statement"].as_array().unwrap().iter().filter(|s| s["Sid"] == "HttpApiChildrenByPath").count();
        assert_eq!(copies, 1);
        // API mappings stay under the domain's resource tag.
        let change = statement(&doc, "ChangeOnlyWhatThisStackOwns");
        assert!(listed(&change["Action"]).contains(&"apigateway:POST"));
    }

    /// A read on one resource is granted by ARN, without condition (a plan reads what the
    /// stack does not own, to refuse it), wherever it is listed: also among the reads the
    /// engine and `verify` add.
    #[test]
    fn reads_of_one_resource_are_granted_by_arn() {
        let reads = ["ecs:ListTasks", "ecs:DescribeTasks", "servicediscovery:ListInstances"];
        let doc = document("s", &registry(), Purpose::Plan, &reads, &[], true);
        let by_arn = statement(&doc, "ReadByArn");
        assert!(by_arn.get("Condition").is_none());
        for a in ["ecs:ListTasks", "ecs:DescribeTasks", "iam:GetRole", "ec2:DescribeVpcAttribute", "sqs:GetQueueAttributes"] {
            assert!(listed(&by_arn["Action"]).contains(&a), "{a} not read by ARN");
        }
        assert!(listed(&by_arn["Resource"]).contains(&"arn:aws:iam::*:role/*"));
        let anywhere = listed(&statement(&doc, "ReadCallsThatTakeNoArn")["Action"]);
        assert!(anywhere.contains(&"servicediscovery:ListInstances") && anywhere.contains(&"ec2:DescribeVpcs"));
        assert!(!anywhere.contains(&"ecs:ListTasks") && !anywhere.contains(&"iam:GetRole"));
    }

    /// A new rule has no tags when it is authorised, and AWS's default egress rule never has:
    /// a resource-tag condition on `security-group-rule` would deny every rule change on AWS.
    /// The rule ARNs get their own statement without a condition; the group ARNs (tagged)
    /// keep theirs, and EC2 authorises the call against both.
    #[test]
    fn security_group_rules_are_not_under_a_resource_tag_condition() {
        let doc = document("my-stack", &registry(), Purpose::Apply, crate::spec::policy::FACTS_READS, &[], true);
        let rule_arn = "arn:aws:ec2:*:*:security-group-rule/*";
        for s in doc["Statement"].as_array().unwrap() {
            if s["Condition"].to_string().contains("aws:ResourceTag") {
                assert!(!listed(&s["Resource"]).contains(&rule_arn), "rules under a resource-tag condition: {s}");
            }
        }
        let rules = statement(&doc, "SecurityGroupRulesOfTheStacksGroups");
        assert_eq!(listed(&rules["Resource"]), [rule_arn]);
        for a in [
            "ec2:AuthorizeSecurityGroupIngress",
            "ec2:AuthorizeSecurityGroupEgress",
            "ec2:RevokeSecurityGroupIngress",
            "ec2:RevokeSecurityGroupEgress",
        ] {
            assert!(listed(&rules["Action"]).contains(&a), "{a}");
            let change = statement(&doc, "ChangeOnlyWhatThisStackOwns");
            assert!(listed(&change["Action"]).contains(&a) && listed(&change["Resource"]).contains(&"arn:aws:ec2:*:*:security-group/*"));
        }
    }

    /// ECS's service-linked role: that one role, for ECS only.
    #[test]
    fn the_ecs_service_linked_role_statement_is_there() {
        let doc = document("my-stack", &registry(), Purpose::Apply, crate::spec::policy::FACTS_READS, &[], true);
        let st = statement(&doc, "EcsCreatesItsServiceLinkedRole");
        assert_eq!(st["Action"], "iam:CreateServiceLinkedRole");
        assert_eq!(st["Resource"], "arn:aws:iam::*:role/aws-service-role/ecs.amazonaws.com/AWSServiceRoleForECS");
        assert_eq!(st["Condition"]["StringEquals"]["iam:AWSServiceName"], "ecs.amazonaws.com");
        let plan = document("my-stack", &registry(), Purpose::Plan, crate::spec::policy::FACTS_READS, &[], true);
        assert!(!plan.to_string().contains("iam:CreateServiceLinkedRole"), "plan creates nothing");
    }

    /// EC2 names the create call in `ec2:CreateAction` by its bare name: `ec2:CreateVpc` there
    /// would deny every tagged create on real AWS.
    #[test]
    fn tag_on_create_uses_bare_action_names() {
        let doc = document("my-stack", &registry(), Purpose::Apply, crate::spec::policy::FACTS_READS, &[], true);
        let st = doc["Statement"].as_array().unwrap().iter().find(|s| s["Sid"] == "TagOnCreate").expect("one TagOnCreate statement");
        assert_eq!(st["Action"], "ec2:CreateTags");
        let listed = st["Condition"]["StringEquals"]["ec2:CreateAction"].as_array().unwrap();
        assert!(listed.contains(&json!("CreateVpc")) && listed.contains(&json!("AllocateAddress")));
        assert!(listed.iter().all(|a| !a.as_str().unwrap().contains(':')));
        assert_eq!(doc["Statement"].as_array().unwrap().iter().filter(|s| s["Sid"] == "TagOnCreate").count(), 1);
    }
}
