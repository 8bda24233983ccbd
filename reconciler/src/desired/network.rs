//! The network section: a new VPC (subnets, gateways, routes) or references to an existing
//! one, and the two security groups every layout needs.

use super::{refs_to, Builder, Facts};
use crate::engine::{Managed, Ref, Set};
use crate::ids;
use crate::resources::ec2::{
    ElasticIpFields, InternetGatewayFields, NatGatewayFields, Route, RouteTableFields, SecurityGroupFields, SubnetFields, VpcFields,
};
use crate::spec::cidr::Cidr;
use crate::spec::NatMode;

impl Builder<'_> {
    pub(super) fn security_group(&mut self, id: &str, suffix: &str, purpose: &str, ingress: Vec<String>, egress: Vec<String>) {
        let stack = self.spec.name.clone();
        self.add(
            "ec2:security-group",
            id,
            |tags| SecurityGroupFields {
                group_name: format!("{stack}-{suffix}"),
                // EC2 cannot change a description: set it on create and never compare it, so
                // that rewording it here never replaces a group in use.
                description: Managed::Initial(format!("{stack} {purpose} (managed by reconciler)")),
                vpc: Ref::to(ids::VPC),
                ingress: Set::of(ingress.clone()),
                egress: Set::of(egress.clone()),
                tags,
            },
            &[],
        );
    }
}

/// The route out of a route table: to the internet or NAT gateway `target`.
fn default_route(target: &str) -> Route {
    Route { destination: "0.0.0.0/0".into(), target: Ref::to(target) }
}

/// Zone k (1-based) for each subnet pair: the one its subnets already use, else the first
/// zone the region lists that is not taken. A zone missing from the region's list (impaired)
/// keeps its subnets: moving them would replace subnets, NAT gateways and routes mid-incident.
fn choose_zones(facts: &Facts, n: usize) -> Vec<String> {
    let mut chosen: Vec<Option<String>> = (1..=n).map(|k| facts.zones_in_use.get(&k).cloned()).collect();
    let taken: Vec<String> = chosen.iter().flatten().cloned().collect();
    let mut free = facts.azs.iter().filter(|z| !taken.contains(z));
    for slot in chosen.iter_mut().filter(|c| c.is_none()) {
        *slot = free.next().cloned();
    }
    chosen.into_iter().flatten().collect()
}

/// Adds the network resources; returns the private subnets' logical ids (the service and the
/// VPC link run in them).
pub(super) fn build(b: &mut Builder, facts: &Facts) -> anyhow::Result<Vec<String>> {
    let spec = b.spec;
    let vpc_cidr: String;
    let private_ids: Vec<String>;

    if let Some(vpc) = &spec.network.vpc {
        let cidr: Cidr = vpc.cidr.parse().map_err(anyhow::Error::msg)?;
        vpc_cidr = cidr.to_string();
        let n = vpc.azs as usize;
        let azs: Vec<String> = vpc.availability_zones.clone().unwrap_or_else(|| choose_zones(facts, n));
        if azs.len() < n {
            anyhow::bail!(
                "the region offers {} availability zone(s) ({}) but the spec asks for {n}: lower network.vpc.azs",
                azs.len(),
                azs.join(", ")
            );
        }
        let subnets = |given: &Option<Vec<String>>, private: bool| -> anyhow::Result<Vec<String>> {
            Ok(match given {
                Some(l) => l.clone(),
                None => crate::spec::default_subnet_layout(cidr, vpc.azs, private)
                    .ok_or_else(|| anyhow::anyhow!("{cidr} is too small for the default subnet layout"))?
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            })
        };
        let public = subnets(&vpc.public_subnets, false)?;
        private_ids = (1..=n).map(|k| format!("subnet-private-{k}")).collect();
        let private = subnets(&vpc.private_subnets, true)?;

        let dns = Some(true);
        b.add("ec2:vpc", ids::VPC, |tags| VpcFields { cidr: vpc_cidr.clone(), dns_support: dns, dns_hostnames: dns, tags }, &[]);
        b.add("ec2:internet-gateway", "igw", |tags| InternetGatewayFields { vpc: Some(Ref::to(ids::VPC)), tags }, &[]);
        for (i, az) in azs.iter().enumerate() {
            let k = i + 1;
            for (tier, cidr, public_ip) in [("public", &public[i], true), ("private", &private[i], false)] {
                let subnet = |tags| SubnetFields {
                    vpc: Ref::to(ids::VPC),
                    cidr: cidr.clone(),
                    availability_zone: az.clone(),
                    public_ip_on_launch: Some(public_ip),
                    tags,
                };
                b.add("ec2:subnet", &format!("subnet-{tier}-{k}"), subnet, &[]);
            }
        }
        let nats = match vpc.nat {
            NatMode::PerAz => n,
            NatMode::Single => 1,
            NatMode::None => 0,
        };
        for k in 1..=nats {
            b.add("ec2:elastic-ip", &format!("eip-nat-{k}"), |tags| ElasticIpFields { public_ip: None, tags }, &[]);
            // A public NAT gateway needs the internet gateway attached to be usable.
            let nat = |tags| NatGatewayFields {
                subnet: Ref::to(&format!("subnet-public-{k}")),
                allocation: Some(Ref::to(&format!("eip-nat-{k}"))),
                tags,
            };
            b.add("ec2:nat-gateway", &format!("nat-{k}"), nat, &["igw"]);
        }
        let public_ids: Vec<String> = (1..=n).map(|k| format!("subnet-public-{k}")).collect();
        let route_table = |routes: Vec<Route>, subnets: &[String]| {
            let subnets = refs_to(subnets);
            move |tags| RouteTableFields {
                vpc: Ref::to(ids::VPC),
                routes: Set::of(routes.clone()),
                subnets: subnets.clone(),
                association_ids: Default::default(),
                tags,
            }
        };
        b.add("ec2:route-table", "rt-public", route_table(vec![default_route("igw")], &public_ids), &[]);
        for k in 1..=n {
            let routes = match nats {
                0 => vec![],
                1 => vec![default_route("nat-1")],
                _ => vec![default_route(&format!("nat-{k}"))],
            };
            b.add("ec2:route-table", &format!("rt-private-{k}"), route_table(routes, &[format!("subnet-private-{k}")]), &[]);
        }
    } else {
        let ex = facts.existing.as_ref().ok_or_else(|| anyhow::anyhow!("internal error: existing-VPC facts were not gathered"))?;
        vpc_cidr = ex.cidr.clone();
        b.externals.insert(ids::VPC.into(), ex.vpc_id.clone());
        for (i, s) in ex.private_subnet_ids.iter().enumerate() {
            b.externals.insert(format!("subnet-private-{}", i + 1), s.clone());
        }
        private_ids = (1..=ex.private_subnet_ids.len()).map(|k| format!("subnet-private-{k}")).collect();
    }

    // Security groups. The service takes traffic on its port from inside the VPC only (the
    // VPC link's ENIs live there); it needs egress to pull images and call AWS and Benchling.
    // The VPC link only needs to reach the service port inside the VPC.
    let port = spec.service.as_ref().map(|s| s.port).unwrap_or(8080);
    let service_port = format!("tcp {port} {vpc_cidr}");
    b.security_group(ids::SG_SERVICE, "service", "webhook service tasks", vec![service_port.clone()], vec!["all all 0.0.0.0/0".into()]);
    b.security_group(ids::SG_VPC_LINK, "vpc-link", "API Gateway VPC link", vec![], vec![service_port]);

    Ok(private_ids)
}
