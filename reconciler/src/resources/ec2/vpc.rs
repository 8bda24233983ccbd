//! `ec2:vpc` — the stack's own VPC, with DNS support and hostnames (Cloud Map needs both).

use super::{call_failed, changed, ec2, iam_arn, owned, stack_filter, sync_tags, tag_on_create, tag_spec, typed, untyped};
use crate::engine::ownership::TagMap;
use crate::engine::{wait, Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed};
use aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType, VpcAttributeName, VpcState};
use serde::{Deserialize, Serialize};

pub struct Vpc;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpcFields {
    pub cidr: String,
    /// Left out where the API does not say (desired state always sets both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_support: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_hostnames: Option<bool>,
    pub tags: TagMap,
}

impl Vpc {
    async fn dns_attribute(ctx: &Ctx, vpc_id: &str, attr: VpcAttributeName) -> anyhow::Result<Option<bool>> {
        let out = ec2(ctx)
            .describe_vpc_attribute()
            .vpc_id(vpc_id)
            .attribute(attr.clone())
            .send()
            .await
            .map_err(call_failed("DescribeVpcAttribute"))?;
        let v = match attr {
            VpcAttributeName::EnableDnsSupport => out.enable_dns_support(),
            _ => out.enable_dns_hostnames(),
        };
        Ok(v.and_then(|a| a.value()))
    }

    async fn set_dns(ctx: &Ctx, vpc_id: &str, f: &VpcFields, support: bool, hostnames: bool) -> anyhow::Result<()> {
        // One attribute per call: the API refuses both at once.
        if support {
            let v = AttributeBooleanValue::builder().value(f.dns_support.unwrap_or(false)).build();
            ec2(ctx).modify_vpc_attribute().vpc_id(vpc_id).enable_dns_support(v).send().await.map_err(call_failed("ModifyVpcAttribute"))?;
        }
        if hostnames {
            let v = AttributeBooleanValue::builder().value(f.dns_hostnames.unwrap_or(false)).build();
            ec2(ctx)
                .modify_vpc_attribute()
                .vpc_id(vpc_id)
                .enable_dns_hostnames(v)
                .send()
                .await
                .map_err(call_failed("ModifyVpcAttribute"))?;
        }
        Ok(())
    }
}

impl Kind for Vpc {
    fn name(&self) -> &'static str {
        "ec2:vpc"
    }

    type Typed = VpcFields;

    fn replace_on(&self) -> &'static [&'static str] {
        &["cidr"]
    }

    async fn observe(&self, ctx: &Ctx, _wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let mut pages = ec2(ctx).describe_vpcs().filters(stack_filter(ctx)).into_paginator().send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            for v in page.map_err(call_failed("DescribeVpcs"))?.vpcs() {
                if let (Some((id, tags)), Some(vpc_id)) = (owned(ctx, v.tags()), v.vpc_id()) {
                    found.push((id, vpc_id.to_string(), v.cidr_block().unwrap_or_default().to_string(), tags));
                }
            }
        }
        let mut out = Vec::new();
        for (id, vpc_id, cidr, tags) in found {
            let (dns_support, dns_hostnames) = futures::try_join!(
                Self::dns_attribute(ctx, &vpc_id, VpcAttributeName::EnableDnsSupport),
                Self::dns_attribute(ctx, &vpc_id, VpcAttributeName::EnableDnsHostnames)
            )?;
            let fields = VpcFields { cidr, dns_support, dns_hostnames, tags };
            out.push(Observed::new(self.name(), id, vpc_id, untyped(&fields)));
        }
        Ok(out)
    }

    async fn create(&self, ctx: &Ctx, _id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: VpcFields = typed(self.name(), fields)?;
        let out = ec2(ctx)
            .create_vpc()
            .cidr_block(&f.cidr)
            .tag_specifications(tag_spec(ResourceType::Vpc, &f.tags))
            .send()
            .await
            .map_err(call_failed("CreateVpc"))?;
        let vpc_id = out.vpc().and_then(|v| v.vpc_id()).ok_or_else(|| anyhow::anyhow!("CreateVpc returned no VPC id"))?.to_string();
        wait::until(ctx, &format!("VPC {vpc_id} to become available"), || async {
            let out = ec2(ctx).describe_vpcs().vpc_ids(&vpc_id).send().await.map_err(call_failed("DescribeVpcs"))?;
            Ok(out.vpcs().first().filter(|v| v.state() == Some(&VpcState::Available)).map(|_| ()))
        })
        .await?;
        Self::set_dns(ctx, &vpc_id, &f, true, true).await?;
        Ok(Identity::id(vpc_id))
    }

    async fn update(&self, ctx: &Ctx, live: &Observed, fields: &Fields, changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        let f: VpcFields = typed(self.name(), fields)?;
        Self::set_dns(ctx, &live.physical_id, &f, changed(changes, "dns_support"), changed(changes, "dns_hostnames")).await?;
        sync_tags(ctx, &live.physical_id, changes).await?;
        Ok(None)
    }

    fn iam(&self, stack: &str) -> IamActions {
        IamActions {
            read: vec!["ec2:DescribeVpcs"],
            read_by_arn: vec!["ec2:DescribeVpcAttribute"],
            create: vec!["ec2:CreateVpc"],
            change: vec!["ec2:ModifyVpcAttribute", "ec2:DeleteVpc", "ec2:CreateTags", "ec2:DeleteTags"],
            arns: vec![iam_arn("vpc")],
            extra: vec![tag_on_create(stack)],
            ..Default::default()
        }
    }

    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        ec2(ctx).delete_vpc().vpc_id(&live.physical_id).send().await.map_err(call_failed("DeleteVpc"))?;
        Ok(())
    }
}
