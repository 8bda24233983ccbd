//! `ec2:nat-gateway` — the private subnets' way out (image pulls, AWS APIs, Benchling).
//! Asynchronous on AWS: create waits for `available`, delete waits for `deleted` (the EIP
//! cannot be released before).

use super::{call_failed, changed, ec2, iam_arn, owned, stack_filter, sync_tags, tag_on_create, tag_spec, typed, untyped};
use crate::engine::ownership::TagMap;
use crate::engine::Ref;
use crate::engine::{wait, Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed, Replacement, Status};
use aws_sdk_ec2::types::{NatGatewayState, ResourceType};
use serde::{Deserialize, Serialize};

pub struct NatGateway;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatGatewayFields {
    pub subnet: Ref,
    /// The Elastic IP's allocation id; a pending gateway may not report it yet (`unreported`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<Ref>,
    pub tags: TagMap,
}

async fn state(ctx: &Ctx, nat_id: &str) -> anyhow::Result<Option<(NatGatewayState, String)>> {
    let out = ec2(ctx).describe_nat_gateways().nat_gateway_ids(nat_id).send().await.map_err(call_failed("DescribeNatGateways"))?;
    Ok(out.nat_gateways().first().and_then(|n| Some((n.state()?.clone(), n.failure_message().unwrap_or_default().to_string()))))
}

impl Kind for NatGateway {
    fn name(&self) -> &'static str {
        "ec2:nat-gateway"
    }

    type Typed = NatGatewayFields;

    /// A pending NAT gateway may not list its address yet.
    fn unreported(&self) -> &'static [&'static str] {
        &["allocation"]
    }

    fn replace_on(&self) -> &'static [&'static str] {
        &["subnet", "allocation"]
    }

    /// An Elastic IP serves one NAT gateway at a time. With a new address the successor is
    /// created first, the private routes are moved to it, and only then is the old gateway
    /// deleted: egress never stops. With the same address (only the subnet changes) AWS forces
    /// the old one to go first.
    fn replacement_for(&self, changes: &[FieldChange]) -> Replacement {
        if changed(changes, "allocation") {
            Replacement::CreateBeforeDestroy
        } else {
            Replacement::DeleteBeforeCreate
        }
    }

    async fn observe(&self, ctx: &Ctx, _wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        // Deleted NAT gateways stay listed for a while; moto ignores the tag filter here,
        // so `owned` (client-side) is what decides.
        let mut pages = ec2(ctx).describe_nat_gateways().filter(stack_filter(ctx)).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            for n in page.map_err(call_failed("DescribeNatGateways"))?.nat_gateways() {
                if matches!(n.state(), Some(NatGatewayState::Deleted | NatGatewayState::Failed)) {
                    continue;
                }
                let (Some((id, tags)), Some(nat_id)) = (owned(ctx, n.tags()), n.nat_gateway_id()) else { continue };
                let fields = NatGatewayFields {
                    subnet: n.subnet_id().unwrap_or_default().to_string().into(),
                    allocation: n.nat_gateway_addresses().iter().find_map(|a| a.allocation_id()).map(String::from).map(Into::into),
                    tags,
                };
                let mut o = Observed::new(self.name(), id, nat_id.to_string(), untyped(&fields));
                o.created = n.create_time().map(|t| t.secs());
                // Left pending by a run that timed out: the next run waits for it (the
                // engine waits on Pending before dependents), it does not create another.
                // Deleting (by a run that was killed or timed out): it still holds its
                // Elastic IP and its subnet; the engine waits until it is gone.
                match n.state() {
                    Some(NatGatewayState::Pending) => o.status = Status::Pending("NAT gateway pending".into()),
                    Some(NatGatewayState::Deleting) => o.status = Status::Leaving("NAT gateway deleting".into()),
                    _ => {}
                }
                out.push(o);
            }
        }
        Ok(out)
    }

    async fn create(&self, ctx: &Ctx, id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: NatGatewayFields = typed(self.name(), fields)?;
        let allocation =
            f.allocation.as_deref().ok_or_else(|| anyhow::anyhow!("internal error: NAT gateway {id} is wanted without an Elastic IP"))?;
        let out = ec2(ctx)
            .create_nat_gateway()
            // A retry after an ambiguous failure returns the same NAT gateway.
            .client_token(ctx.settings.client_token(id))
            .subnet_id(&f.subnet)
            .allocation_id(allocation)
            .tag_specifications(tag_spec(ResourceType::Natgateway, &f.tags))
            .send()
            .await
            .map_err(call_failed("CreateNatGateway"))?;
        let nat = out
            .nat_gateway()
            .and_then(|n| n.nat_gateway_id())
            .ok_or_else(|| anyhow::anyhow!("CreateNatGateway returned no id"))?
            .to_string();
        wait::until(ctx, &format!("NAT gateway {nat} to become available"), || async {
            match state(ctx, &nat).await? {
                Some((NatGatewayState::Available, _)) => Ok(Some(())),
                Some((NatGatewayState::Failed, why)) => anyhow::bail!("NAT gateway {nat} failed: {why}"),
                _ => Ok(None),
            }
        })
        .await?;
        Ok(Identity::id(nat))
    }

    async fn update(&self, ctx: &Ctx, live: &Observed, _fields: &Fields, changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        sync_tags(ctx, &live.physical_id, changes).await?;
        Ok(None)
    }

    fn iam(&self, stack: &str) -> IamActions {
        IamActions {
            read: vec!["ec2:DescribeNatGateways"],
            create: vec!["ec2:CreateNatGateway"],
            change: vec!["ec2:DeleteNatGateway", "ec2:CreateTags", "ec2:DeleteTags"],
            // Created in a subnet with an Elastic IP.
            arns: vec![iam_arn("natgateway"), iam_arn("subnet"), iam_arn("elastic-ip")],
            extra: vec![tag_on_create(stack)],
            ..Default::default()
        }
    }

    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        let nat = &live.physical_id;
        ec2(ctx).delete_nat_gateway().nat_gateway_id(nat).send().await.map_err(call_failed("DeleteNatGateway"))?;
        wait::until(ctx, &format!("NAT gateway {nat} to be deleted"), || async {
            Ok(match state(ctx, nat).await? {
                None | Some((NatGatewayState::Deleted, _)) => Some(()),
                _ => None,
            })
        })
        .await
    }
}
