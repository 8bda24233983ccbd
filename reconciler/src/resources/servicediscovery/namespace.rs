//! `servicediscovery:namespace` — the Cloud Map private DNS namespace (`benchling.local`) in
//! the stack's VPC. Creation and deletion are asynchronous Cloud Map operations.
//!
//! Cloud Map never reports a namespace's VPC (it lives on the Route 53 hosted zone behind it),
//! so create records it in the tag `reconciler:vpc`, written in the same request; observe reads
//! it back into the `vpc` field and keeps it out of `tags`. A namespace without that tag has
//! an unknown VPC (`unreported`), never a drifted one.

use super::{
    api_tags, call_failed, client, comparable_tags, description, owned, request_id, sync_tags, tags_of, typed, untyped, wait_for_operation,
};
use crate::engine::ownership::{not_owned, TagMap};
use crate::engine::Ref;
use crate::engine::{Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed};
use aws_sdk_servicediscovery::types::{
    FilterCondition, NamespaceFilter, NamespaceFilterName, NamespaceSummary, NamespaceType, OperationTargetType,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

pub struct Namespace;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceFields {
    pub name: String,
    /// From the `reconciler:vpc` tag; left out (unknown) where the tag is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc: Option<Ref>,
    /// Without the VPC record.
    pub tags: TagMap,
}

/// The tag that records the namespace's VPC (see the module comment).
pub const VPC_TAG: &str = "reconciler:vpc";

/// Observed fields of a namespace from its name and all its tags.
pub fn namespace_fields(name: &str, tags: &BTreeMap<String, String>) -> NamespaceFields {
    let mut user = tags.clone();
    user.remove(VPC_TAG);
    NamespaceFields { name: name.to_string(), vpc: tags.get(VPC_TAG).cloned().map(Into::into), tags: comparable_tags(&user) }
}

/// Whether a same-named namespace the stack does not own stands in the way of the wanted one.
/// Names only clash inside one VPC (two stacks in one account may both use `benchling.local`
/// in their own VPCs), but Cloud Map cannot tell us another namespace's VPC unless a stack
/// recorded it (`VPC_TAG`). Recorded: it clashes when the wanted VPC is given literally and
/// is the same (a reference is unresolved here; if both really are in one VPC, Cloud Map
/// refuses the create). Not recorded (made by hand or by another tool): refuse rather than
/// guess, since it may well be in this VPC.
pub fn clashes(wanted_vpc: Option<&Ref>, other_vpc: Option<&str>) -> bool {
    match other_vpc {
        Some(have) => matches!(wanted_vpc, Some(Ref::Is(want)) if want == have),
        None => true,
    }
}

/// Every private DNS namespace in the region (moto ignores the type filter).
async fn private_namespaces(ctx: &Ctx) -> anyhow::Result<Vec<NamespaceSummary>> {
    let filter = NamespaceFilter::builder().name(NamespaceFilterName::Type).values("DNS_PRIVATE").condition(FilterCondition::Eq).build()?;
    let mut pages = client(ctx).list_namespaces().filters(filter).into_paginator().send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        out.extend(
            page.map_err(call_failed("ListNamespaces"))?
                .namespaces()
                .iter()
                .filter(|n| n.r#type() == Some(&NamespaceType::DnsPrivate))
                .cloned(),
        );
    }
    Ok(out)
}

/// Namespaces with their tags, read at once; one deleted since it was listed is left out.
async fn with_tags(ctx: &Ctx, namespaces: Vec<NamespaceSummary>) -> anyhow::Result<Vec<(NamespaceSummary, BTreeMap<String, String>)>> {
    let tags = futures::future::try_join_all(namespaces.iter().map(|n| tags_of(ctx, n.arn().unwrap_or_default()))).await?;
    Ok(namespaces.into_iter().zip(tags).filter_map(|(n, t)| Some((n, t?))).collect())
}

impl Kind for Namespace {
    fn name(&self) -> &'static str {
        "servicediscovery:namespace"
    }

    type Typed = NamespaceFields;

    fn replace_on(&self) -> &'static [&'static str] {
        &["name", "vpc"]
    }

    fn unreported(&self) -> &'static [&'static str] {
        &["vpc"]
    }

    /// ListNamespaces (one page per 100), then ListTagsForResource for the namespaces whose
    /// description names this stack (the tags decide ownership; the description only says
    /// whose tags to read, so other stacks' namespaces cost this one nothing, and one the
    /// stack renamed is still found and replaced rather than left behind). Only where a
    /// wanted name has none of ours are the same-named others read: one of them may be ours
    /// with its description changed, or stand in the way of the create.
    async fn observe(&self, ctx: &Ctx, wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let wanted: Vec<NamespaceFields> = crate::engine::fields::wanted(self.name(), wanted)?;
        let ours = description(&ctx.settings.stack);
        let (mine, others): (Vec<NamespaceSummary>, Vec<NamespaceSummary>) =
            private_namespaces(ctx).await?.into_iter().partition(|n| n.description() == Some(ours.as_str()));
        let mut read = with_tags(ctx, mine).await?;
        let held: Vec<String> =
            read.iter().filter(|(_, t)| owned(ctx, t).is_some()).filter_map(|(n, _)| n.name().map(String::from)).collect();
        let missing = |n: &NamespaceSummary| wanted.iter().any(|w| n.name() == Some(w.name.as_str()) && !held.contains(&w.name));
        let same_named: Vec<NamespaceSummary> = others.into_iter().filter(missing).collect();
        read.extend(with_tags(ctx, same_named).await?);
        let mut out = Vec::new();
        for (n, tags) in &read {
            let (Some(ns_id), Some(arn), Some(name)) = (n.id(), n.arn(), n.name()) else { continue };
            match owned(ctx, tags) {
                Some(id) => {
                    let mut o = Observed::new(self.name(), id, ns_id.to_string(), untyped(&namespace_fields(name, tags)));
                    o.attrs.insert("arn".into(), arn.into());
                    o.attrs.insert("name".into(), name.into());
                    out.push(o);
                }
                None => {
                    let other_vpc = tags.get(VPC_TAG).map(String::as_str);
                    if wanted.iter().filter(|w| w.name == name).any(|w| clashes(w.vpc.as_ref(), other_vpc)) {
                        return Err(not_owned("Cloud Map namespace", name, &ctx.settings.stack, tags));
                    }
                }
            }
        }
        Ok(out)
    }

    async fn create(&self, ctx: &Ctx, id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: NamespaceFields = typed(self.name(), fields)?;
        let (name, vpc) =
            (f.name.as_str(), f.vpc.as_deref().ok_or_else(|| anyhow::anyhow!("internal error: namespace {id} is wanted without a VPC"))?);
        let mut tags = f.tags.clone();
        tags.insert(VPC_TAG.into(), vpc.into());
        let sd = client(ctx);
        let out = sd
            .create_private_dns_namespace()
            .name(name)
            .vpc(vpc)
            .description(description(&ctx.settings.stack))
            .creator_request_id(request_id(ctx, id))
            .set_tags(Some(api_tags(&tags)?))
            .send()
            .await
            .map_err(call_failed("CreatePrivateDnsNamespace"))?;
        let op = out.operation_id().ok_or_else(|| anyhow::anyhow!("CreatePrivateDnsNamespace returned no operation id"))?;
        let targets = wait_for_operation(ctx, op, &format!("Cloud Map namespace {name} to be created in {vpc}")).await?;
        let ns_id = targets
            .get(&OperationTargetType::Namespace)
            .ok_or_else(|| anyhow::anyhow!("Cloud Map operation {op} succeeded but names no namespace"))?;
        // The operation names only the id; the ARN is what tags and dependents use.
        let ns = sd.get_namespace().id(ns_id).send().await.map_err(call_failed("GetNamespace"))?;
        let arn = ns.namespace().and_then(|n| n.arn()).ok_or_else(|| anyhow::anyhow!("GetNamespace {ns_id} returned no ARN"))?;
        Ok(Identity::id(ns_id.as_str()).with("arn", arn).with("name", name))
    }

    async fn update(&self, ctx: &Ctx, live: &Observed, _fields: &Fields, changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        let arn = live
            .attrs
            .get("arn")
            .ok_or_else(|| anyhow::anyhow!("internal error: namespace {} observed without an ARN", live.physical_id))?;
        sync_tags(ctx, arn, changes).await?;
        Ok(None)
    }

    /// DeleteNamespace, then waits for the operation. Services still in it answer
    /// ResourceInUse (a conflict the engine retries once they are deleted).
    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        let ns = &live.physical_id;
        let out = client(ctx).delete_namespace().id(ns).send().await.map_err(call_failed("DeleteNamespace"))?;
        if let Some(op) = out.operation_id() {
            wait_for_operation(ctx, op, &format!("Cloud Map namespace {ns} to be deleted")).await?;
        }
        Ok(())
    }

    fn iam(&self, _stack: &str) -> IamActions {
        IamActions {
            read: vec![
                "servicediscovery:ListNamespaces",
                "servicediscovery:ListTagsForResource",
                "servicediscovery:GetOperation",
                // Checked by CreatePrivateDnsNamespace with the caller's permissions.
                "route53:ListHostedZonesByName",
                "ec2:DescribeVpcs",
                "ec2:DescribeRegions",
            ],
            read_by_arn: vec!["servicediscovery:GetNamespace", "route53:GetHostedZone"],
            create: vec!["servicediscovery:CreatePrivateDnsNamespace", "servicediscovery:TagResource"],
            change: vec!["servicediscovery:DeleteNamespace", "servicediscovery:TagResource", "servicediscovery:UntagResource"],
            arns: vec![super::iam_arn("namespace"), "arn:aws:route53:::hostedzone/*".to_string()],
            on_any: super::ON_ANY.to_vec(),
            // CreatePrivateDnsNamespace creates the namespace's private hosted zone with the
            // caller's own permissions. Route 53 scopes CreateHostedZone by neither tag nor
            // name (the zone is named after the spec's namespace, not the stack), so this one
            // statement cannot be limited to the stack.
            extra: vec![json!({
                "Sid": "CloudMapCreatesTheNamespaceHostedZone",
                "Effect": "Allow",
                "Action": "route53:CreateHostedZone",
                "Resource": "*",
            })],
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_vpc_comes_from_its_tag_and_stays_out_of_tags() {
        let t =
            tags(&[("Name", "s-namespace"), ("reconciler:stack", "s"), ("reconciler:id", "namespace"), (VPC_TAG, "vpc-1"), ("aws:x", "y")]);
        let f = untyped(&namespace_fields("benchling.local", &t));
        assert_eq!(
            serde_json::Value::Object(f),
            json!({
                "name": "benchling.local",
                "vpc": "vpc-1",
                "tags": {"Name": "s-namespace", "reconciler:stack": "s", "reconciler:id": "namespace"},
            })
        );
        let f = untyped(&namespace_fields("benchling.local", &tags(&[("reconciler:stack", "s")])));
        assert!(f.get("vpc").is_none(), "unknown, not empty: `vpc` is unreported");
        assert!(Namespace.unreported().contains(&"vpc"));
    }

    #[test]
    fn same_name_clashes_only_where_the_vpc_can_be_the_same() {
        let literal = Ref::from("vpc-1");
        assert!(clashes(Some(&literal), Some("vpc-1")));
        assert!(!clashes(Some(&literal), Some("vpc-2")), "another stack's namespace in its own VPC");
        let unresolved = Ref::to("vpc");
        assert!(!clashes(Some(&unresolved), Some("vpc-1")), "another stack's: cannot compare, Cloud Map refuses a real clash");
        assert!(clashes(Some(&unresolved), None), "made by hand, VPC unknown: refuse rather than guess");
        assert!(clashes(Some(&literal), None));
    }

    #[test]
    fn iam_creates_and_changes_are_cloud_map_actions() {
        let a = Namespace.iam("s");
        assert!(a.create.iter().chain(&a.change).all(|x| x.starts_with("servicediscovery:")));
        assert!(a.create.contains(&"servicediscovery:CreatePrivateDnsNamespace"));
    }
}
