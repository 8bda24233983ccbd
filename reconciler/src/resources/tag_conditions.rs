//! The review of every tag-conditioned statement of the apply policy: for each call it
//! covers, why the tag its condition names is there when AWS authorises the call. A call
//! added to a conditioned statement without a reason here fails the test, so the question is
//! asked every time. (The security-group rule ARNs are not under a tag condition: a new rule
//! and AWS's default egress rule carry no tags; see `ec2/security_group.rs`.)

/// `aws:RequestTag/reconciler:stack = <stack>`: the call carries the stack's tags itself.
/// The key is request-wide, so it holds for every resource the call names (the VPC a subnet
/// is created in, the subnet and Elastic IP a NAT gateway takes).
const CREATED_WITH_TAGS: &[(&str, &str)] = &[
    ("ec2:AllocateAddress", "TagSpecifications with the stack's tags"),
    ("ec2:CreateInternetGateway", "TagSpecifications with the stack's tags"),
    ("ec2:CreateNatGateway", "TagSpecifications with the stack's tags"),
    ("ec2:CreateRouteTable", "TagSpecifications with the stack's tags"),
    ("ec2:CreateSecurityGroup", "TagSpecifications with the stack's tags"),
    ("ec2:CreateSubnet", "TagSpecifications with the stack's tags"),
    ("ec2:CreateVpc", "TagSpecifications with the stack's tags"),
    ("ec2:CreateTags", "TagOnCreate: EC2 authorises the tags of those creates as CreateTags, with ec2:CreateAction"),
    ("ecs:CreateCluster", "tags in the request"),
    ("ecs:CreateService", "tags in the request"),
    ("ecs:RegisterTaskDefinition", "tags in the request"),
    ("ecs:TagResource", "EcsTagOnCreate: ECS authorises a create's tags as TagResource, with ecs:CreateAction"),
    ("application-autoscaling:RegisterScalableTarget", "Tags in the request (the first registration)"),
    ("application-autoscaling:TagResource", "the tags of RegisterScalableTarget"),
    ("scheduler:CreateScheduleGroup", "Tags in the request"),
    ("scheduler:TagResource", "the tags of CreateScheduleGroup"),
    ("servicediscovery:CreatePrivateDnsNamespace", "Tags in the request"),
    ("servicediscovery:CreateService", "Tags in the request"),
    ("servicediscovery:TagResource", "the tags of those creates"),
    (
        "apigateway:POST",
        "CreateApi, CreateVpcLink, CreateDomainName send Tags; children send none: API mappings are allowed by the resource-tag statement (the domain's tags), an API's routes, integrations and stage by path (HttpApiChildrenByPath)",
    ),
];

/// `aws:ResourceTag/reconciler:stack = <stack>`: the resource the call acts on was created
/// with the stack's tags (above) and keeps them; a resource without them is not the stack's
/// and is refused, as it should be.
const CHANGED_WHILE_TAGGED: &[(&str, &str)] = &[
    ("ec2:AssociateRouteTable", "the route table and the subnet are the stack's (new-VPC mode only)"),
    ("ec2:AttachInternetGateway", "the gateway and the VPC are the stack's (new-VPC mode only)"),
    ("ec2:DetachInternetGateway", "the gateway and the VPC are the stack's"),
    ("ec2:CreateRoute", "authorised on the route table, the stack's"),
    ("ec2:ReplaceRoute", "authorised on the route table, the stack's"),
    ("ec2:DeleteRoute", "authorised on the route table, the stack's"),
    ("ec2:DisassociateRouteTable", "authorised on the route table, the stack's"),
    ("ec2:ReplaceRouteTableAssociation", "authorised on the route table, the stack's"),
    ("ec2:DeleteRouteTable", "the stack's route table"),
    ("ec2:AuthorizeSecurityGroupEgress", "the group is the stack's; the new rule (untagged) is granted apart"),
    ("ec2:AuthorizeSecurityGroupIngress", "the group is the stack's; the new rule (untagged) is granted apart"),
    ("ec2:RevokeSecurityGroupEgress", "the group is the stack's; its rules (AWS's default egress rule is untagged) are granted apart"),
    ("ec2:RevokeSecurityGroupIngress", "the group is the stack's; its rules are granted apart"),
    ("ec2:DeleteSecurityGroup", "the stack's group"),
    ("ec2:DeleteSubnet", "the stack's subnet"),
    ("ec2:ModifySubnetAttribute", "the stack's subnet"),
    ("ec2:DeleteVpc", "the stack's VPC"),
    ("ec2:ModifyVpcAttribute", "the stack's VPC"),
    ("ec2:DeleteInternetGateway", "the stack's gateway"),
    ("ec2:DeleteNatGateway", "the stack's NAT gateway"),
    ("ec2:ReleaseAddress", "the stack's Elastic IP"),
    ("ec2:CreateTags", "tag drift on a resource the stack owns"),
    ("ec2:DeleteTags", "tag drift on a resource the stack owns"),
    ("ecs:UpdateService", "the stack's service"),
    ("ecs:DeleteService", "the stack's service"),
    ("ecs:DeleteCluster", "the stack's cluster"),
    ("ecs:PutClusterCapacityProviders", "the stack's cluster"),
    ("ecs:UpdateClusterSettings", "the stack's cluster"),
    ("ecs:StopTask", "a drift-correction run: it carries its task definition's tags (the schedule propagates them)"),
    ("ecs:TagResource", "tag drift, and the failed-revision record, on the stack's resources"),
    ("ecs:UntagResource", "tag drift on the stack's resources"),
    ("application-autoscaling:RegisterScalableTarget", "a later registration (new bounds) of the stack's tagged target"),
    ("application-autoscaling:PutScalingPolicy", "authorised on the scalable target, the stack's"),
    ("application-autoscaling:DeleteScalingPolicy", "authorised on the scalable target, the stack's"),
    ("application-autoscaling:DeregisterScalableTarget", "the stack's target"),
    ("scheduler:DeleteScheduleGroup", "the stack's group"),
    ("scheduler:TagResource", "tag drift on the stack's group"),
    ("scheduler:UntagResource", "tag drift on the stack's group"),
    ("servicediscovery:DeleteNamespace", "the stack's namespace"),
    ("servicediscovery:DeleteService", "the stack's Cloud Map service"),
    ("servicediscovery:UpdateService", "the stack's Cloud Map service"),
    ("servicediscovery:TagResource", "tag drift on the stack's namespace or service"),
    ("servicediscovery:UntagResource", "tag drift on the stack's namespace or service"),
    ("apigateway:PATCH", "the stack's API, VPC link or domain, and API mappings (which inherit the domain's tags)"),
    ("apigateway:DELETE", "the stack's API, VPC link or domain, and API mappings (which inherit the domain's tags)"),
    (
        "apigateway:POST",
        "API mappings under the stack's domain: API Gateway documents that a domain's API mappings inherit its tags for access control. An HTTP API's routes, integrations and stage are not judged here (no documented inheritance): HttpApiChildrenByPath",
    ),
];

mod tests {
    use super::super::policy_tests::listed;
    use super::*;
    use crate::engine::policy::{document, Purpose};
    use serde_json::Value;
    use std::collections::BTreeSet;

    /// The actions of the statements whose condition names `key`.
    fn conditioned(doc: &Value, key: &str) -> BTreeSet<String> {
        let statements = doc["Statement"].as_array().unwrap().iter().filter(|s| s["Condition"].to_string().contains(key));
        statements.flat_map(|s| listed(&s["Action"])).map(str::to_string).collect()
    }

    fn reviewed(table: &[(&str, &str)]) -> BTreeSet<String> {
        table
            .iter()
            .map(|(a, why)| {
                assert!(!why.is_empty(), "{a} has no reason");
                a.to_string()
            })
            .collect()
    }

    /// Every call under a request-tag condition sends the stack's tags; every call under a
    /// resource-tag condition acts on what carries them. Both ways: a reviewed call that left
    /// the policy leaves the table too.
    #[test]
    fn every_tag_conditioned_call_is_reviewed() {
        let doc = document("my-stack", &super::super::registry(), Purpose::Apply, crate::spec::policy::FACTS_READS, &[], true);
        let request = conditioned(&doc, "aws:RequestTag/reconciler:stack");
        let resource = conditioned(&doc, "aws:ResourceTag/reconciler:stack");
        assert_eq!(request, reviewed(CREATED_WITH_TAGS), "request-tag conditioned calls vs the review");
        assert_eq!(resource, reviewed(CHANGED_WHILE_TAGGED), "resource-tag conditioned calls vs the review");
    }
}
