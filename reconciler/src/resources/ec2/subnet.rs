//! `ec2:subnet` — public and private subnets, one of each per availability zone.

use super::{
    bool_field, call_failed, changed, ec2, iam_arn, owned, stack_subnets, str_field, sync_tags, tag_on_create, tag_spec,
    wait_until_no_interface_in,
};
use crate::engine::{Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed};
use aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType};
use futures::future::BoxFuture;

pub struct Subnet;

impl Subnet {
    async fn set_public_ip(ctx: &Ctx, subnet_id: &str, fields: &Fields) -> anyhow::Result<()> {
        let v = AttributeBooleanValue::builder().value(bool_field(fields, "public_ip_on_launch")).build();
        ec2(ctx)
            .modify_subnet_attribute()
            .subnet_id(subnet_id)
            .map_public_ip_on_launch(v)
            .send()
            .await
            .map_err(call_failed("ModifySubnetAttribute"))?;
        Ok(())
    }
}

impl Kind for Subnet {
    fn name(&self) -> &'static str {
        "ec2:subnet"
    }

    fn replace_on(&self) -> &'static [&'static str] {
        &["vpc", "cidr", "availability_zone"]
    }

    fn observe<'a>(&'a self, ctx: &'a Ctx, _wanted: &'a [&'a Desired]) -> BoxFuture<'a, anyhow::Result<Vec<Observed>>> {
        Box::pin(async move {
            let mut out = Vec::new();
            // Listed once per pass with the facts (`stack_subnets`).
            for s in stack_subnets(ctx).await?.iter() {
                let (Some((id, tags)), Some(subnet_id)) = (owned(ctx, s.tags()), s.subnet_id()) else { continue };
                let mut fields = Fields::new();
                fields.insert("vpc".into(), s.vpc_id().unwrap_or_default().into());
                fields.insert("cidr".into(), s.cidr_block().unwrap_or_default().into());
                fields.insert("availability_zone".into(), s.availability_zone().unwrap_or_default().into());
                if let Some(p) = s.map_public_ip_on_launch() {
                    fields.insert("public_ip_on_launch".into(), p.into());
                }
                fields.insert("tags".into(), tags);
                out.push(Observed::new(self.name(), id, subnet_id.to_string(), fields));
            }
            Ok(out)
        })
    }

    fn create<'a>(&'a self, ctx: &'a Ctx, _id: &'a str, fields: &'a Fields) -> BoxFuture<'a, anyhow::Result<Identity>> {
        Box::pin(async move {
            let out = ec2(ctx)
                .create_subnet()
                .vpc_id(str_field(fields, "vpc")?)
                .cidr_block(str_field(fields, "cidr")?)
                .availability_zone(str_field(fields, "availability_zone")?)
                .tag_specifications(tag_spec(ResourceType::Subnet, fields))
                .send()
                .await
                .map_err(call_failed("CreateSubnet"))?;
            let subnet_id =
                out.subnet().and_then(|s| s.subnet_id()).ok_or_else(|| anyhow::anyhow!("CreateSubnet returned no subnet id"))?.to_string();
            if bool_field(fields, "public_ip_on_launch") {
                Self::set_public_ip(ctx, &subnet_id, fields).await?;
            }
            Ok(Identity::id(subnet_id))
        })
    }

    fn update<'a>(
        &'a self,
        ctx: &'a Ctx,
        live: &'a Observed,
        fields: &'a Fields,
        changes: &'a [FieldChange],
    ) -> BoxFuture<'a, anyhow::Result<Option<Identity>>> {
        Box::pin(async move {
            if changed(changes, "public_ip_on_launch") {
                Self::set_public_ip(ctx, &live.physical_id, fields).await?;
            }
            sync_tags(ctx, &live.physical_id, changes).await?;
            Ok(None)
        })
    }

    fn iam(&self, stack: &str) -> IamActions {
        IamActions {
            // DescribeNetworkInterfaces: a subnet is deleted once no interface is in it.
            read: vec!["ec2:DescribeSubnets", "ec2:DescribeNetworkInterfaces"],
            create: vec!["ec2:CreateSubnet"],
            change: vec!["ec2:ModifySubnetAttribute", "ec2:DeleteSubnet", "ec2:CreateTags", "ec2:DeleteTags"],
            // Created in a VPC.
            arns: vec![iam_arn("subnet"), iam_arn("vpc")],
            extra: vec![tag_on_create(stack)],
            ..Default::default()
        }
    }

    fn delete<'a>(&'a self, ctx: &'a Ctx, live: &'a Observed) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            wait_until_no_interface_in(ctx, "subnet-id", "subnet", &live.physical_id).await?;
            ec2(ctx).delete_subnet().subnet_id(&live.physical_id).send().await.map_err(call_failed("DeleteSubnet"))?;
            Ok(())
        })
    }
}
