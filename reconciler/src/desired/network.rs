//! The network section: a new VPC (subnets, gateways, routes) or references to an existing
//! one, and the two security groups every layout needs.

use super::{obj, Builder, Facts};
use crate::engine::{initial, reference, set};
use crate::ids;
use crate::spec::cidr::Cidr;
use crate::spec::NatMode;
use serde_json::{json, Value};

impl Builder<'_> {
    pub(super) fn security_group(&mut self, id: &str, suffix: &str, purpose: &str, ingress: Vec<Value>, egress: Vec<Value>) {
        let fields = obj(json!({
            "group_name": format!("{}-{suffix}", self.spec.name),
            // EC2 cannot change a description: set it on create and never compare it, so
            // that rewording it here never replaces a group in use.
            "description": initial(json!(format!("{} {purpose} (managed by reconciler)", self.spec.name))),
            "vpc": reference(ids::VPC),
            "ingress": set(ingress),
            "egress": set(egress),
        }));
        self.add("ec2:security-group", id, fields, &[]);
    }
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

        b.add("ec2:vpc", ids::VPC, obj(json!({"cidr": vpc_cidr, "dns_support": true, "dns_hostnames": true})), &[]);
        b.add("ec2:internet-gateway", "igw", obj(json!({"vpc": reference(ids::VPC)})), &[]);
        for (i, az) in azs.iter().enumerate() {
            let k = i + 1;
            b.add(
                "ec2:subnet",
                &format!("subnet-public-{k}"),
                obj(json!({"vpc": reference(ids::VPC), "cidr": public[i], "availability_zone": az, "public_ip_on_launch": true})),
                &[],
            );
            b.add(
                "ec2:subnet",
                &format!("subnet-private-{k}"),
                obj(json!({"vpc": reference(ids::VPC), "cidr": private[i], "availability_zone": az, "public_ip_on_launch": false})),
                &[],
            );
        }
        let nats = match vpc.nat {
            NatMode::PerAz => n,
            NatMode::Single => 1,
            NatMode::None => 0,
        };
        for k in 1..=nats {
            b.add("ec2:elastic-ip", &format!("eip-nat-{k}"), obj(json!({})), &[]);
            // A public NAT gateway needs the internet gateway attached to be usable.
            b.add(
                "ec2:nat-gateway",
                &format!("nat-{k}"),
                obj(json!({"subnet": reference(&format!("subnet-public-{k}")), "allocation": reference(&format!("eip-nat-{k}"))})),
                &["igw"],
            );
        }
        let public_subnets: Vec<Value> = (1..=n).map(|k| reference(&format!("subnet-public-{k}"))).collect();
        b.add(
            "ec2:route-table",
            "rt-public",
            obj(json!({"vpc": reference(ids::VPC), "routes": set(vec![json!({"destination": "0.0.0.0/0", "target": reference("igw")})]), "subnets": set(public_subnets)})),
            &[],
        );
        for k in 1..=n {
            let routes = if nats == 0 {
                set(vec![])
            } else {
                let nat = if nats == 1 { 1 } else { k };
                set(vec![json!({"destination": "0.0.0.0/0", "target": reference(&format!("nat-{nat}"))})])
            };
            b.add(
                "ec2:route-table",
                &format!("rt-private-{k}"),
                obj(json!({"vpc": reference(ids::VPC), "routes": routes, "subnets": set(vec![reference(&format!("subnet-private-{k}"))])})),
                &[],
            );
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
    let service_port = json!(format!("tcp {port} {vpc_cidr}"));
    b.security_group("sg-service", "service", "webhook service tasks", vec![service_port.clone()], vec![json!("all all 0.0.0.0/0")]);
    b.security_group("sg-vpc-link", "vpc-link", "API Gateway VPC link", vec![], vec![service_port]);

    Ok(private_ids)
}
