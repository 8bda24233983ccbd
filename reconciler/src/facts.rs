//! The few live reads that desired state depends on: availability zones, and (existing-VPC
//! mode) the referenced VPC and subnets, validated so that a bad reference fails fast.

use crate::engine::{call_failed, Ctx};
use crate::resources::ec2::{self, ec2};
use crate::spec::Spec;
use anyhow::{anyhow, bail, Context as _};
use aws_sdk_ec2::types::Filter;
use std::collections::{BTreeMap, BTreeSet};

/// Live facts the layout depends on, gathered by [`gather`].
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// Availability zones the region offers now, sorted (new-VPC mode); empty when the stack's
    /// subnets already place every zone the spec asks for (then not read).
    pub azs: Vec<String>,
    /// Zones the stack's own subnets already use, by subnet index (1-based): kept, so that a
    /// zone the region stops listing (impaired) never moves a subnet.
    pub zones_in_use: BTreeMap<usize, String>,
    /// The referenced VPC (existing-VPC mode).
    pub existing: Option<ExistingNetwork>,
    /// The AWS account the stack lives in (trust policies, ARNs).
    pub account: String,
}

impl Facts {
    /// Facts for unit tests: a new VPC in a region offering `azs` (`us-east-1` + letter),
    /// in account 123456789012.
    #[cfg(test)]
    pub(crate) fn in_zones(azs: &str) -> Facts {
        Facts {
            azs: azs.chars().map(|z| format!("us-east-1{z}")).collect(),
            zones_in_use: BTreeMap::new(),
            existing: None,
            account: "123456789012".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExistingNetwork {
    pub vpc_id: String,
    pub cidr: String,
    pub private_subnet_ids: Vec<String>,
}

// STS has no codes of its own to classify: the engine's rules (`call_failed`) apply.
crate::engine::calls::service!(aws_sdk_sts, crate::engine::retry::no_extra, client_only);

/// The account the credentials belong to (trust policies and ARNs are scoped to it).
async fn account(ctx: &Ctx) -> anyhow::Result<String> {
    let out = client(ctx).get_caller_identity().send().await.map_err(call_failed("GetCallerIdentity"))?;
    out.account().map(String::from).ok_or_else(|| anyhow!("GetCallerIdentity returned no account"))
}

/// Zones of the stack's own subnets (`subnet-public-K` / `subnet-private-K`), by K.
async fn zones_in_use(ctx: &Ctx) -> anyhow::Result<std::collections::BTreeMap<usize, String>> {
    let subnets = crate::resources::ec2::stack_subnets(ctx).await?;
    let mut zones = std::collections::BTreeMap::new();
    for s in subnets.iter() {
        let tags = s.tags().iter().map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default()));
        let Some(id) = crate::engine::ownership::owned_id(&ctx.settings.stack, tags) else { continue };
        let k = id.strip_prefix("subnet-public-").or_else(|| id.strip_prefix("subnet-private-")).and_then(|k| k.parse::<usize>().ok());
        if let (Some(k), Some(az)) = (k, s.availability_zone()) {
            zones.entry(k).or_insert_with(|| az.to_string());
        }
    }
    Ok(zones)
}

/// AZ IDs (stable across accounts, unlike zone names) where HTTP API VPC links are not
/// available, from the API Gateway developer guide's table of supported zones per region
/// (regions it lists with fewer zones than they have). A zone outside the table is assumed
/// supported.
const NO_VPC_LINK: &[&str] = &["use1-az3", "usw1-az2", "ape1-az1"];

/// Whether an HTTP API VPC link can use a subnet in this zone (by AZ ID).
pub fn vpc_link_supported(zone_id: &str) -> bool {
    !NO_VPC_LINK.contains(&zone_id)
}

/// The region's available zones, sorted; `with_api`: only those where an HTTP API VPC link
/// can be placed.
async fn region_zones(ctx: &Ctx, with_api: bool) -> anyhow::Result<Vec<String>> {
    let out = ec2(ctx)
        .describe_availability_zones()
        .filters(Filter::builder().name("state").values("available").build())
        .send()
        .await
        .map_err(ec2::call_failed("DescribeAvailabilityZones"))?;
    let mut azs: Vec<String> = out
        .availability_zones()
        .iter()
        .filter(|z| z.zone_type().is_none_or(|t| t == "availability-zone"))
        // Zone names map to different zones in every account; AZ IDs do not. A VPC link cannot
        // be placed in some zones: never choose one of them.
        .filter(|z| !with_api || z.zone_id().is_none_or(vpc_link_supported))
        .filter_map(|z| z.zone_name().map(String::from))
        .collect();
    azs.sort();
    Ok(azs)
}

pub async fn gather(ctx: &Ctx, spec: &Spec) -> anyhow::Result<Facts> {
    let mut facts = Facts { azs: vec![], zones_in_use: Default::default(), existing: None, account: String::new() };
    // Independent reads, concurrently: one round trip. The region's zones are read after it,
    // and only when the stack's subnets do not already place every zone the spec asks for
    // (a new VPC, more zones): a pass over an existing stack does not need them.
    let new_vpc = spec.network.vpc.as_ref().filter(|v| v.availability_zones.is_none());
    let (in_use, account) = tokio::try_join!(
        async {
            match new_vpc {
                Some(_) => zones_in_use(ctx).await,
                None => Ok(Default::default()),
            }
        },
        async {
            if spec.service.is_none() {
                return Ok(String::new());
            }
            account(ctx).await.context("finding the AWS account (sts:GetCallerIdentity)")
        }
    )?;
    let azs = match new_vpc {
        Some(vpc) if !(1..=vpc.azs as usize).all(|k| in_use.contains_key(&k)) => region_zones(ctx, spec.api.is_some()).await?,
        _ => vec![],
    };
    (facts.azs, facts.zones_in_use, facts.account) = (azs, in_use, account);
    if let Some(ex) = &spec.network.existing {
        let vpcs =
            ec2(ctx).describe_vpcs().vpc_ids(&ex.vpc_id).send().await.map_err(ec2::call_failed("DescribeVpcs")).with_context(|| {
                format!("network.existing.vpc_id {} cannot be read in {}; check the id and the region", ex.vpc_id, spec.region)
            })?;
        let vpc = vpcs.vpcs().first().ok_or_else(|| anyhow!("VPC {} does not exist in {}", ex.vpc_id, spec.region))?;
        let subnets = ec2(ctx)
            .describe_subnets()
            .set_subnet_ids(Some(ex.private_subnet_ids.clone()))
            .send()
            .await
            .map_err(ec2::call_failed("DescribeSubnets"))
            .context("network.existing.private_subnet_ids cannot be read; check the ids and the region")?;
        if spec.api.is_some() {
            if let Some(s) = subnets.subnets().iter().find(|s| s.availability_zone_id().is_some_and(|z| !vpc_link_supported(z))) {
                bail!(
                    "subnet {} is in zone {} ({}), where API Gateway cannot place an HTTP API VPC link; list private subnets in other zones (network.existing.private_subnet_ids)",
                    s.subnet_id().unwrap_or_default(),
                    s.availability_zone().unwrap_or_default(),
                    s.availability_zone_id().unwrap_or_default()
                );
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_without_vpc_links_are_never_chosen() {
        assert!(!vpc_link_supported("use1-az3"));
        assert!(!vpc_link_supported("usw1-az2"));
        assert!(vpc_link_supported("use1-az1") && vpc_link_supported("use1-az6") && vpc_link_supported("euw1-az1"));
    }
}
