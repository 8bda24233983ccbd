//! `ec2:elastic-ip` — one public address per NAT gateway.

use super::{call_failed, ec2, iam_arn, owned, stack_filter, sync_tags, tag_on_create, tag_spec, typed, untyped};
use crate::engine::ownership::TagMap;
use crate::engine::{Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed};
use aws_sdk_ec2::types::{DomainType, ResourceType};
use serde::{Deserialize, Serialize};

pub struct ElasticIp;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticIpFields {
    /// Reported, never desired (AWS picks the address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<String>,
    pub tags: TagMap,
}

impl Kind for ElasticIp {
    fn name(&self) -> &'static str {
        "ec2:elastic-ip"
    }

    type Typed = ElasticIpFields;

    fn replace_on(&self) -> &'static [&'static str] {
        &[]
    }

    async fn observe(&self, ctx: &Ctx, _wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        // DescribeAddresses has no pagination.
        let out = ec2(ctx).describe_addresses().filters(stack_filter(ctx)).send().await.map_err(call_failed("DescribeAddresses"))?;
        Ok(out
            .addresses()
            .iter()
            .filter_map(|a| {
                let (id, tags) = owned(ctx, a.tags())?;
                let fields = ElasticIpFields { public_ip: a.public_ip().map(String::from), tags };
                Some(Observed::new(self.name(), id, a.allocation_id()?.to_string(), untyped(&fields)))
            })
            .collect())
    }

    async fn create(&self, ctx: &Ctx, _id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: ElasticIpFields = typed(self.name(), fields)?;
        let out = ec2(ctx)
            .allocate_address()
            .domain(DomainType::Vpc)
            .tag_specifications(tag_spec(ResourceType::ElasticIp, &f.tags))
            .send()
            .await
            .map_err(call_failed("AllocateAddress"))?;
        Ok(Identity::id(out.allocation_id().ok_or_else(|| anyhow::anyhow!("AllocateAddress returned no allocation id"))?))
    }

    async fn update(&self, ctx: &Ctx, live: &Observed, _fields: &Fields, changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        sync_tags(ctx, &live.physical_id, changes).await?;
        Ok(None)
    }

    fn iam(&self, stack: &str) -> IamActions {
        IamActions {
            read: vec!["ec2:DescribeAddresses"],
            create: vec!["ec2:AllocateAddress"],
            change: vec!["ec2:ReleaseAddress", "ec2:CreateTags", "ec2:DeleteTags"],
            arns: vec![iam_arn("elastic-ip")],
            extra: vec![tag_on_create(stack)],
            ..Default::default()
        }
    }

    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        ec2(ctx).release_address().allocation_id(&live.physical_id).send().await.map_err(call_failed("ReleaseAddress"))?;
        Ok(())
    }
}
