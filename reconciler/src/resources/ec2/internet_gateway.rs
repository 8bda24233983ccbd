//! `ec2:internet-gateway` — the public subnets' way out, attached to the stack's VPC.

use super::{call_failed, changed, ec2, iam_arn, owned, stack_filter, sync_tags, tag_on_create, tag_spec, typed, untyped};
use crate::engine::ownership::TagMap;
use crate::engine::Ref;
use crate::engine::{Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed};
use aws_sdk_ec2::types::ResourceType;
use serde::{Deserialize, Serialize};

pub struct InternetGateway;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternetGatewayFields {
    /// The VPC it is attached to; null when detached (drift).
    pub vpc: Option<Ref>,
    pub tags: TagMap,
}

async fn detach(ctx: &Ctx, igw: &str, vpc: &str) -> anyhow::Result<()> {
    ec2(ctx).detach_internet_gateway().internet_gateway_id(igw).vpc_id(vpc).send().await.map_err(call_failed("DetachInternetGateway"))?;
    Ok(())
}

/// Desired state always names the VPC (only a live gateway can be detached).
fn wanted_vpc(f: &InternetGatewayFields) -> anyhow::Result<&str> {
    f.vpc.as_deref().ok_or_else(|| anyhow::anyhow!("internal error: an internet gateway is wanted without a VPC"))
}

async fn attach(ctx: &Ctx, igw: &str, vpc: &str) -> anyhow::Result<()> {
    ec2(ctx).attach_internet_gateway().internet_gateway_id(igw).vpc_id(vpc).send().await.map_err(call_failed("AttachInternetGateway"))?;
    Ok(())
}

impl Kind for InternetGateway {
    fn name(&self) -> &'static str {
        "ec2:internet-gateway"
    }

    type Typed = InternetGatewayFields;

    fn replace_on(&self) -> &'static [&'static str] {
        &[]
    }

    async fn observe(&self, ctx: &Ctx, _wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let mut pages = ec2(ctx).describe_internet_gateways().filters(stack_filter(ctx)).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            for g in page.map_err(call_failed("DescribeInternetGateways"))?.internet_gateways() {
                let (Some((id, tags)), Some(igw_id)) = (owned(ctx, g.tags()), g.internet_gateway_id()) else { continue };
                let vpc = g.attachments().iter().find_map(|a| a.vpc_id()).map(String::from);
                let fields = InternetGatewayFields { vpc: vpc.map(Into::into), tags };
                out.push(Observed::new(self.name(), id, igw_id.to_string(), untyped(&fields)));
            }
        }
        Ok(out)
    }

    async fn create(&self, ctx: &Ctx, _id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: InternetGatewayFields = typed(self.name(), fields)?;
        let vpc = wanted_vpc(&f)?;
        let out = ec2(ctx)
            .create_internet_gateway()
            .tag_specifications(tag_spec(ResourceType::InternetGateway, &f.tags))
            .send()
            .await
            .map_err(call_failed("CreateInternetGateway"))?;
        let igw = out
            .internet_gateway()
            .and_then(|g| g.internet_gateway_id())
            .ok_or_else(|| anyhow::anyhow!("CreateInternetGateway returned no id"))?
            .to_string();
        attach(ctx, &igw, vpc).await?;
        Ok(Identity::id(igw))
    }

    async fn update(&self, ctx: &Ctx, live: &Observed, fields: &Fields, changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        let f: InternetGatewayFields = typed(self.name(), fields)?;
        if changed(changes, "vpc") {
            let have: InternetGatewayFields = typed(self.name(), &live.fields)?;
            if let Some(old) = &have.vpc {
                detach(ctx, &live.physical_id, old).await?;
            }
            attach(ctx, &live.physical_id, wanted_vpc(&f)?).await?;
        }
        sync_tags(ctx, &live.physical_id, changes).await?;
        Ok(None)
    }

    fn iam(&self, stack: &str) -> IamActions {
        IamActions {
            read: vec!["ec2:DescribeInternetGateways"],
            create: vec!["ec2:CreateInternetGateway"],
            change: vec![
                "ec2:AttachInternetGateway",
                "ec2:DetachInternetGateway",
                "ec2:DeleteInternetGateway",
                "ec2:CreateTags",
                "ec2:DeleteTags",
            ],
            // Attaching and detaching also name the VPC.
            arns: vec![iam_arn("internet-gateway"), iam_arn("vpc")],
            extra: vec![tag_on_create(stack)],
            ..Default::default()
        }
    }

    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        let have: InternetGatewayFields = typed(self.name(), &live.fields)?;
        if let Some(vpc) = &have.vpc {
            detach(ctx, &live.physical_id, vpc).await?;
        }
        ec2(ctx)
            .delete_internet_gateway()
            .internet_gateway_id(&live.physical_id)
            .send()
            .await
            .map_err(call_failed("DeleteInternetGateway"))?;
        Ok(())
    }
}
