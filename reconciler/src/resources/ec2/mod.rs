//! EC2: the network kinds, one file each, and their shared plumbing: the client, ownership
//! filters, atomic tagging on create, tag convergence, and error context.

mod elastic_ip;
mod internet_gateway;
mod nat_gateway;
mod route_table;
mod security_group;
mod subnet;
mod vpc;

pub use elastic_ip::{ElasticIp, ElasticIpFields};
pub use internet_gateway::{InternetGateway, InternetGatewayFields};
pub use nat_gateway::{NatGateway, NatGatewayFields};
pub use route_table::{Route, RouteTable, RouteTableFields};
pub use security_group::{SecurityGroup, SecurityGroupFields};
pub use subnet::{Subnet, SubnetFields};
pub use vpc::{Vpc, VpcFields};

pub use crate::engine::fields::{changed, typed, untyped};
use crate::engine::ownership::{self, TagDelta, TagMap, STACK_TAG};
use crate::engine::{Ctx, ErrorClass, FieldChange};
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use serde_json::{json, Value};

crate::engine::calls::service!(aws_sdk_ec2, classify);

/// EC2's own error codes. `DependencyViolation`: something still uses the resource (a VPC
/// link's network interfaces outlive the link for minutes, a NAT gateway being deleted still
/// holds its subnet and address); it goes away by itself, so a delete (or a detach) waits for
/// it until the conflict deadline, as Terraform's AWS provider does. `InvalidGroup.InUse`: a
/// security group another group still references.
///
/// EC2 is eventually consistent: a resource just created can be "not found" for a few seconds
/// by the next call (`InvalidVpcID.NotFound` on CreateSubnet right after CreateVpc;
/// `NatGatewayNotFound` on DescribeNatGateways): not visible yet, retried until the
/// propagation deadline. Safe, because a retried mutation re-observes first and a delete whose
/// target is gone is done. `EC2ThrottledException`: EC2's own name for throttling.
fn classify(code: &str, _message: &str) -> Option<ErrorClass> {
    match code {
        "DependencyViolation" | "InvalidGroup.InUse" => Some(ErrorClass::Conflict),
        "NatGatewayNotFound" => Some(ErrorClass::Propagation),
        c if c.starts_with("Invalid") && c.ends_with(".NotFound") => Some(ErrorClass::Propagation),
        "EC2ThrottledException" => Some(ErrorClass::Throttled),
        _ => None,
    }
}

/// The EC2 client (what every EC2 kind calls `ec2(ctx)`).
pub use self::client as ec2;

/// Every EC2 create call the kinds make (checked against each kind's `iam().create` by a test).
const CREATES: &[&str] = &[
    "AllocateAddress",
    "CreateInternetGateway",
    "CreateNatGateway",
    "CreateRouteTable",
    "CreateSecurityGroup",
    "CreateSubnet",
    "CreateVpc",
];

/// IAM ARN pattern for every EC2 resource of one type (`vpc` → `arn:aws:ec2:*:*:vpc/*`).
pub fn iam_arn(resource_type: &str) -> String {
    format!("arn:aws:ec2:*:*:{resource_type}/*")
}

/// EC2 authorises the tags of a create as `ec2:CreateTags` with `ec2:CreateAction` naming
/// the create call: the bare action name (`CreateVpc`), not `ec2:CreateVpc`.
pub fn tag_on_create(stack: &str) -> Value {
    json!({
        "Sid": "TagOnCreate",
        "Effect": "Allow",
        "Action": "ec2:CreateTags",
        "Resource": "*",
        "Condition": {"StringEquals": {"ec2:CreateAction": CREATES, format!("aws:RequestTag/{STACK_TAG}"): stack}},
    })
}

/// The network kinds, dependencies first.
pub fn kinds() -> Vec<Box<dyn crate::engine::DynKind>> {
    vec![
        Box::new(Vpc),
        Box::new(InternetGateway),
        Box::new(Subnet),
        Box::new(ElasticIp),
        Box::new(NatGateway),
        Box::new(RouteTable),
        Box::new(SecurityGroup),
    ]
}

/// Server-side filter for everything this stack owns. Some emulators ignore filters, so
/// callers also check ownership client-side with [`owned`].
pub fn stack_filter(ctx: &Ctx) -> Filter {
    Filter::builder().name(format!("tag:{STACK_TAG}")).values(&ctx.settings.stack).build()
}

/// The subnets tagged as the stack's, every page: read once per pass, for the facts (the
/// zones in use) and for the subnet kind.
pub async fn stack_subnets(ctx: &Ctx) -> anyhow::Result<std::sync::Arc<Vec<aws_sdk_ec2::types::Subnet>>> {
    ctx.shared_read("ec2:DescribeSubnets of the stack", || async {
        let mut pages = ec2(ctx).describe_subnets().filters(stack_filter(ctx)).into_paginator().send();
        let mut all = Vec::new();
        while let Some(page) = pages.next().await {
            all.extend(page.map_err(call_failed("DescribeSubnets"))?.subnets().iter().cloned());
        }
        Ok(all)
    })
    .await
}

/// Logical id and comparable tags, if the stack owns a resource with these tags.
pub fn owned(ctx: &Ctx, tags: &[Tag]) -> Option<(String, TagMap)> {
    let pairs = || tags.iter().map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default()));
    let id = ownership::owned_id(&ctx.settings.stack, pairs())?;
    Some((id, ownership::comparable(pairs())))
}

/// Tags to apply atomically with a create call (so a crash can never leave an untagged,
/// hence invisible, resource behind).
pub fn tag_spec(kind: ResourceType, tags: &TagMap) -> TagSpecification {
    let tags: Vec<Tag> = tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
    TagSpecification::builder().resource_type(kind).set_tags(Some(tags)).build()
}

/// Converges tags if `tags` is among the changes: adds/overwrites what differs and removes
/// keys we no longer want. AWS-managed tags were never compared, so they are left alone.
pub async fn sync_tags(ctx: &Ctx, resource_id: &str, changes: &[FieldChange]) -> anyhow::Result<()> {
    let delta = TagDelta::of(changes);
    let set: Vec<Tag> = delta.set.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
    let unset: Vec<Tag> = delta.unset.iter().map(|k| Tag::builder().key(k).build()).collect();
    if !set.is_empty() {
        ec2(ctx).create_tags().resources(resource_id).set_tags(Some(set)).send().await.map_err(call_failed("CreateTags"))?;
    }
    if !unset.is_empty() {
        ec2(ctx).delete_tags().resources(resource_id).set_tags(Some(unset)).send().await.map_err(call_failed("DeleteTags"))?;
    }
    Ok(())
}

/// Waits until no network interface is in a security group or subnet (`filter`: `group-id` or
/// `subnet-id`): EC2 refuses to delete either while one is (`DependencyViolation`). The
/// interfaces of a VPC link, of a Fargate task and of a NAT gateway outlive their owner by
/// minutes and then go by themselves, so this polls `DescribeNetworkInterfaces` instead of
/// sending deletes AWS refuses. One still there at the wait timeout is named in the error.
pub async fn wait_until_no_interface_in(ctx: &Ctx, filter: &str, what: &str, id: &str) -> anyhow::Result<()> {
    let seen = std::sync::Mutex::new(Vec::new());
    let waited = crate::engine::wait::until(ctx, &format!("the network interfaces in {what} {id} to be released"), || async {
        let only = Filter::builder().name(filter).values(id).build();
        let mut pages = ec2(ctx).describe_network_interfaces().filters(only).into_paginator().send();
        let mut busy = Vec::new();
        while let Some(page) = pages.next().await {
            busy.extend(page.map_err(call_failed("DescribeNetworkInterfaces"))?.network_interfaces().iter().map(interface_text));
        }
        let released = busy.is_empty();
        *seen.lock().unwrap() = busy;
        Ok(released.then_some(()))
    })
    .await;
    let busy = seen.into_inner().unwrap();
    waited.map_err(|e| {
        if busy.is_empty() {
            return e;
        }
        e.context(format!(
            "{what} {id} is still in use by network interface(s) {}. A VPC link's, a task's or a NAT gateway's go by themselves after their owner is deleted; one this stack did not create (its description says what made it) must be deleted or moved by whoever owns it. Then run the same command again",
            busy.join(", ")
        ))
    })
}

/// `eni-1 (VPC Link ENI, in-use)`: what a person needs to find it and its owner.
fn interface_text(eni: &aws_sdk_ec2::types::NetworkInterface) -> String {
    let about: Vec<&str> = [eni.description(), eni.status().map(|s| s.as_str())].into_iter().flatten().filter(|s| !s.is_empty()).collect();
    let id = eni.network_interface_id().unwrap_or("?");
    if about.is_empty() {
        id.to_string()
    } else {
        format!("{id} ({})", about.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_still_going_are_conflicts() {
        assert_eq!(classify("DependencyViolation", "resource sg-1 has a dependent object"), Some(ErrorClass::Conflict));
        assert_eq!(classify("InvalidGroup.InUse", ""), Some(ErrorClass::Conflict));
        assert_eq!(classify("NatGatewayNotFound", ""), Some(ErrorClass::Propagation), "not visible yet");
        assert_eq!(classify("InvalidVpcID.NotFound", ""), Some(ErrorClass::Propagation), "not visible yet");
        assert_eq!(classify("InvalidGroup.NotFound", ""), Some(ErrorClass::Propagation));
        assert_eq!(classify("EC2ThrottledException", ""), Some(ErrorClass::Throttled));
        assert_eq!(classify("InvalidParameterValue", ""), None);
        // Only EC2's: another service's `Invalid….NotFound` is final (its classifier decides).
        use crate::engine::retry::{class_of, no_extra};
        assert_eq!(class_of(400, "InvalidSubnetID.NotFound", "", classify), ErrorClass::Propagation);
        assert_eq!(class_of(400, "InvalidSubnetID.NotFound", "", no_extra), ErrorClass::Final);
    }

    #[test]
    fn tag_on_create_names_every_create_by_its_bare_action() {
        let st = tag_on_create("s");
        let listed: Vec<&str> =
            st["Condition"]["StringEquals"]["ec2:CreateAction"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert!(listed.iter().all(|a| !a.contains(':')), "bare names only: {listed:?}");
        for k in kinds() {
            for c in k.iam("s").create {
                assert!(listed.contains(&c.trim_start_matches("ec2:")), "{c} is not in CREATES");
            }
        }
        assert_eq!(st["Condition"]["StringEquals"]["aws:RequestTag/reconciler:stack"], "s");
    }
}
