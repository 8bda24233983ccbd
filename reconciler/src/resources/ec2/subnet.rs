//! `ec2:subnet` — public and private subnets, one of each per availability zone.

use super::{
    call_failed, changed, ec2, iam_arn, owned, stack_subnets, sync_tags, tag_on_create, tag_spec, typed, untyped,
    wait_until_no_interface_in,
};
use crate::engine::ownership::TagMap;
use crate::engine::Ref;
use crate::engine::{Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed};
use aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType};
use serde::{Deserialize, Serialize};

pub struct Subnet;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetFields {
    pub vpc: Ref,
    pub cidr: String,
    pub availability_zone: String,
    /// Left out where the API does not say (desired state always sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip_on_launch: Option<bool>,
    pub tags: TagMap,
}

impl Subnet {
    async fn set_public_ip(ctx: &Ctx, subnet_id: &str, on: bool) -> anyhow::Result<()> {
        let v = AttributeBooleanValue::builder().value(on).build();
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

    type Typed = SubnetFields;

    fn replace_on(&self) -> &'static [&'static str] {
        &["vpc", "cidr", "availability_zone"]
    }

    async fn observe(&self, ctx: &Ctx, _wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let mut out = Vec::new();
        // Listed once per pass with the facts (`stack_subnets`).
        for s in stack_subnets(ctx).await?.iter() {
            let (Some((id, tags)), Some(subnet_id)) = (owned(ctx, s.tags()), s.subnet_id()) else { continue };
            let fields = SubnetFields {
                vpc: s.vpc_id().unwrap_or_default().to_string().into(),
                cidr: s.cidr_block().unwrap_or_default().to_string(),
                availability_zone: s.availability_zone().unwrap_or_default().to_string(),
                public_ip_on_launch: s.map_public_ip_on_launch(),
                tags,
            };
            out.push(Observed::new(self.name(), id, subnet_id.to_string(), untyped(&fields)));
        }
        Ok(out)
    }

    async fn create(&self, ctx: &Ctx, _id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: SubnetFields = typed(self.name(), fields)?;
        let out = ec2(ctx)
            .create_subnet()
            .vpc_id(&f.vpc)
            .cidr_block(&f.cidr)
            .availability_zone(&f.availability_zone)
            .tag_specifications(tag_spec(ResourceType::Subnet, &f.tags))
            .send()
            .await
            .map_err(call_failed("CreateSubnet"))?;
        let subnet_id =
            out.subnet().and_then(|s| s.subnet_id()).ok_or_else(|| anyhow::anyhow!("CreateSubnet returned no subnet id"))?.to_string();
        if f.public_ip_on_launch == Some(true) {
            Self::set_public_ip(ctx, &subnet_id, true).await?;
        }
        Ok(Identity::id(subnet_id))
    }

    async fn update(&self, ctx: &Ctx, live: &Observed, fields: &Fields, changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        let f: SubnetFields = typed(self.name(), fields)?;
        if changed(changes, "public_ip_on_launch") {
            Self::set_public_ip(ctx, &live.physical_id, f.public_ip_on_launch.unwrap_or(false)).await?;
        }
        sync_tags(ctx, &live.physical_id, changes).await?;
        Ok(None)
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

    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        wait_until_no_interface_in(ctx, "subnet-id", "subnet", &live.physical_id).await?;
        ec2(ctx).delete_subnet().subnet_id(&live.physical_id).send().await.map_err(call_failed("DeleteSubnet"))?;
        Ok(())
    }
}
