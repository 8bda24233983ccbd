//! `ec2:route-table` — routes and subnet associations, both converged as sets: only the
//! difference is created, replaced or deleted, so traffic never loses its route in between.
//! A route is `{"destination": CIDR, "target": igw-…|nat-…}`; the VPC's local route is AWS's.

use super::{call_failed, changed, ec2, iam_arn, owned, stack_filter, sync_tags, tag_on_create, tag_spec, typed, untyped};
use crate::engine::ownership::TagMap;
use crate::engine::{Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed};
use crate::engine::{Ref, Set};
use aws_sdk_ec2::types::{ResourceType, RouteOrigin};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub struct RouteTable;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTableFields {
    pub vpc: Ref,
    /// A set (sorted as the engine sorts sets).
    pub routes: Set<Route>,
    /// Subnet ids associated with the table; a set.
    pub subnets: Set<Ref>,
    /// Reported, never desired (so never diffed): subnet id → association id, what
    /// disassociation needs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub association_ids: BTreeMap<String, String>,
    pub tags: TagMap,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub destination: String,
    /// `igw-…` or `nat-…`.
    pub target: Ref,
}

impl RouteTableFields {
    fn routes(&self) -> BTreeMap<&str, &str> {
        self.routes.iter().map(|r| (r.destination.as_str(), r.target.as_str())).collect()
    }
}

async fn set_route(ctx: &Ctx, rt: &str, dest: &str, target: &str, replace: bool) -> anyhow::Result<()> {
    if replace {
        let mut r = ec2(ctx).replace_route().route_table_id(rt).destination_cidr_block(dest);
        r = if target.starts_with("nat-") { r.nat_gateway_id(target) } else { r.gateway_id(target) };
        r.send().await.map_err(call_failed("ReplaceRoute"))?;
    } else {
        let mut r = ec2(ctx).create_route().route_table_id(rt).destination_cidr_block(dest);
        r = if target.starts_with("nat-") { r.nat_gateway_id(target) } else { r.gateway_id(target) };
        r.send().await.map_err(call_failed("CreateRoute"))?;
    }
    Ok(())
}

/// The id of the subnet's explicit association with some route table, if it has one.
async fn association_elsewhere(ctx: &Ctx, subnet: &str) -> anyhow::Result<Option<String>> {
    let filter = aws_sdk_ec2::types::Filter::builder().name("association.subnet-id").values(subnet).build();
    let out = ec2(ctx).describe_route_tables().filters(filter).send().await.map_err(call_failed("DescribeRouteTables"))?;
    Ok(out
        .route_tables()
        .iter()
        .flat_map(|t| t.associations())
        .find(|a| a.subnet_id() == Some(subnet) && a.main() != Some(true))
        .and_then(|a| a.route_table_association_id().map(String::from)))
}

/// Converges routes and associations from `have` (nothing on create) to `want`.
async fn converge(ctx: &Ctx, rt: &str, have: Option<&RouteTableFields>, want: &RouteTableFields) -> anyhow::Result<()> {
    let (have_r, want_r) = (have.map(RouteTableFields::routes).unwrap_or_default(), want.routes());
    for (dest, target) in &want_r {
        match have_r.get(dest) {
            Some(t) if t == target => {}
            Some(_) => set_route(ctx, rt, dest, target, true).await?,
            None => set_route(ctx, rt, dest, target, false).await?,
        }
    }
    for dest in have_r.keys().filter(|d| !want_r.contains_key(*d)) {
        ec2(ctx).delete_route().route_table_id(rt).destination_cidr_block(*dest).send().await.map_err(call_failed("DeleteRoute"))?;
    }
    let (have_s, want_s): (&[Ref], &[Ref]) = (have.map(|h| &h.subnets[..]).unwrap_or_default(), &want.subnets);
    for s in want_s.iter().filter(|s| !have_s.contains(s)) {
        // A subnet has one explicit association: where it has one elsewhere (it is moving
        // between tables), that association is re-pointed; AssociateRouteTable would fail.
        match association_elsewhere(ctx, s).await? {
            Some(a) => {
                ec2(ctx)
                    .replace_route_table_association()
                    .association_id(a)
                    .route_table_id(rt)
                    .send()
                    .await
                    .map_err(call_failed("ReplaceRouteTableAssociation"))?;
            }
            None => {
                ec2(ctx)
                    .associate_route_table()
                    .route_table_id(rt)
                    .subnet_id(s)
                    .send()
                    .await
                    .map_err(call_failed("AssociateRouteTable"))?;
            }
        }
    }
    for s in have_s.iter().filter(|s| !want_s.contains(s)) {
        if let Some(a) = have.and_then(|h| h.association_ids.get(s.as_str())) {
            ec2(ctx).disassociate_route_table().association_id(a).send().await.map_err(call_failed("DisassociateRouteTable"))?;
        }
    }
    Ok(())
}

impl Kind for RouteTable {
    fn name(&self) -> &'static str {
        "ec2:route-table"
    }

    type Typed = RouteTableFields;

    /// Routes and associations do not keep a NAT gateway or a subnet from being deleted.
    fn holds_what_it_uses(&self) -> bool {
        false
    }

    fn replace_on(&self) -> &'static [&'static str] {
        &["vpc"]
    }

    async fn observe(&self, ctx: &Ctx, _wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let mut pages = ec2(ctx).describe_route_tables().filters(stack_filter(ctx)).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            for t in page.map_err(call_failed("DescribeRouteTables"))?.route_tables() {
                let (Some((id, tags)), Some(rt_id)) = (owned(ctx, t.tags()), t.route_table_id()) else { continue };
                let routes: Vec<Route> = t
                    .routes()
                    .iter()
                    .filter(|r| r.origin() != Some(&RouteOrigin::CreateRouteTable) && r.gateway_id() != Some("local"))
                    .filter_map(|r| {
                        let target = r.nat_gateway_id().or(r.gateway_id())?;
                        Some(Route { destination: r.destination_cidr_block()?.to_string(), target: target.to_string().into() })
                    })
                    .collect();
                let mut subnets = Vec::new();
                let mut association_ids = BTreeMap::new();
                for a in t.associations() {
                    if let (Some(s), Some(aid)) = (a.subnet_id(), a.route_table_association_id()) {
                        subnets.push(s.to_string());
                        association_ids.insert(s.to_string(), aid.to_string());
                    }
                }
                let fields = RouteTableFields {
                    vpc: t.vpc_id().unwrap_or_default().to_string().into(),
                    routes: routes.into(),
                    subnets: subnets.into(),
                    association_ids,
                    tags,
                };
                out.push(Observed::new(self.name(), id, rt_id.to_string(), untyped(&fields)));
            }
        }
        Ok(out)
    }

    async fn create(&self, ctx: &Ctx, id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: RouteTableFields = typed(self.name(), fields)?;
        let out = ec2(ctx)
            .create_route_table()
            .client_token(ctx.settings.client_token(id))
            .vpc_id(&f.vpc)
            .tag_specifications(tag_spec(ResourceType::RouteTable, &f.tags))
            .send()
            .await
            .map_err(call_failed("CreateRouteTable"))?;
        let rt = out
            .route_table()
            .and_then(|t| t.route_table_id())
            .ok_or_else(|| anyhow::anyhow!("CreateRouteTable returned no id"))?
            .to_string();
        converge(ctx, &rt, None, &f).await?;
        Ok(Identity::id(rt))
    }

    async fn update(&self, ctx: &Ctx, live: &Observed, fields: &Fields, changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        if changed(changes, "routes") || changed(changes, "subnets") {
            let have: RouteTableFields = typed(self.name(), &live.fields)?;
            converge(ctx, &live.physical_id, Some(&have), &typed(self.name(), fields)?).await?;
        }
        sync_tags(ctx, &live.physical_id, changes).await?;
        Ok(None)
    }

    fn iam(&self, stack: &str) -> IamActions {
        IamActions {
            read: vec!["ec2:DescribeRouteTables"],
            create: vec!["ec2:CreateRouteTable"],
            change: vec![
                "ec2:CreateRoute",
                "ec2:ReplaceRoute",
                "ec2:DeleteRoute",
                "ec2:AssociateRouteTable",
                "ec2:ReplaceRouteTableAssociation",
                "ec2:DisassociateRouteTable",
                "ec2:DeleteRouteTable",
                "ec2:CreateTags",
                "ec2:DeleteTags",
            ],
            // Created in a VPC; associations name the subnet, routes the gateway.
            arns: vec![iam_arn("route-table"), iam_arn("vpc"), iam_arn("subnet"), iam_arn("internet-gateway"), iam_arn("natgateway")],
            extra: vec![tag_on_create(stack)],
            ..Default::default()
        }
    }

    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        let have: RouteTableFields = typed(self.name(), &live.fields)?;
        for a in have.association_ids.values() {
            ec2(ctx).disassociate_route_table().association_id(a).send().await.map_err(call_failed("DisassociateRouteTable"))?;
        }
        ec2(ctx).delete_route_table().route_table_id(&live.physical_id).send().await.map_err(call_failed("DeleteRouteTable"))?;
        Ok(())
    }
}
