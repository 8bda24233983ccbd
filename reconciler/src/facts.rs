//! The few live reads that desired state depends on: availability zones, and (existing-VPC
//! mode) the referenced VPC and subnets, validated so that a bad reference fails fast.

use crate::desired::{ExistingNetwork, Facts};
use crate::engine::{call_failed, Ctx};
use crate::spec::Spec;
use anyhow::{anyhow, bail, Context as _};
use aws_sdk_ec2::types::Filter;
use std::collections::BTreeSet;

pub async fn gather(ctx: &Ctx, spec: &Spec) -> anyhow::Result<Facts> {
    let mut facts = Facts { azs: vec![], existing: None };
    if let Some(vpc) = &spec.network.vpc {
        if vpc.availability_zones.is_none() {
            let out = ctx
                .ec2
                .describe_availability_zones()
                .filters(Filter::builder().name("state").values("available").build())
                .send()
                .await
                .map_err(call_failed("DescribeAvailabilityZones"))?;
            let mut azs: Vec<String> = out
                .availability_zones()
                .iter()
                .filter(|z| z.zone_type().is_none_or(|t| t == "availability-zone"))
                .filter_map(|z| z.zone_name().map(String::from))
                .collect();
            azs.sort();
            facts.azs = azs;
        }
    }
    if let Some(ex) = &spec.network.existing {
        let vpcs = ctx.ec2.describe_vpcs().vpc_ids(&ex.vpc_id).send().await.map_err(call_failed("DescribeVpcs")).with_context(|| {
            format!("network.existing.vpc_id {} cannot be read in {}; check the id and the region", ex.vpc_id, spec.region)
        })?;
        let vpc = vpcs.vpcs().first().ok_or_else(|| anyhow!("VPC {} does not exist in {}", ex.vpc_id, spec.region))?;
        let subnets = ctx
            .ec2
            .describe_subnets()
            .set_subnet_ids(Some(ex.private_subnet_ids.clone()))
            .send()
            .await
            .map_err(call_failed("DescribeSubnets"))
            .context("network.existing.private_subnet_ids cannot be read; check the ids and the region")?;
        let found: Vec<(String, String, String)> = subnets
            .subnets()
            .iter()
            .map(|s| {
                (
                    s.subnet_id().unwrap_or_default().to_string(),
                    s.availability_zone().unwrap_or_default().to_string(),
                    s.vpc_id().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let listing = || found.iter().map(|(id, az, v)| format!("{id} ({az}, {v})")).collect::<Vec<_>>().join(", ");
        for want in &ex.private_subnet_ids {
            if !found.iter().any(|(id, _, _)| id == want) {
                bail!("subnet {want} was not found; found: {}", listing());
            }
        }
        if let Some((id, _, v)) = found.iter().find(|(_, _, v)| v != &ex.vpc_id) {
            bail!("subnet {id} is in {v}, not in {}; found: {}", ex.vpc_id, listing());
        }
        let zones: BTreeSet<&str> = found.iter().map(|(_, az, _)| az.as_str()).collect();
        if zones.len() < 2 {
            bail!(
                "the private subnets must span at least 2 availability zones (API Gateway VPC links and high availability need it); found: {}",
                listing()
            );
        }
        facts.existing = Some(ExistingNetwork {
            vpc_id: ex.vpc_id.clone(),
            cidr: vpc.cidr_block().unwrap_or_default().to_string(),
            private_subnet_ids: ex.private_subnet_ids.clone(),
        });
    }
    Ok(facts)
}
