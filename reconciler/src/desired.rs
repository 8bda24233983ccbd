//! Desired state: computed from the spec and a few live facts (availability zones, an
//! existing VPC), purely: no AWS calls here, so every layout decision is unit-tested.

use crate::engine::ownership;
use crate::engine::{reference, set, Desired, Fields};
use crate::spec::cidr::Cidr;
use crate::spec::{NatMode, Spec};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Live facts the layout depends on, gathered by `facts::gather`.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// Availability zones to use, in order (new-VPC mode).
    pub azs: Vec<String>,
    /// The referenced VPC (existing-VPC mode).
    pub existing: Option<ExistingNetwork>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExistingNetwork {
    pub vpc_id: String,
    pub cidr: String,
    pub private_subnet_ids: Vec<String>,
}

/// The desired resources, and the AWS ids of what they reference but the stack does not own.
pub struct DesiredState {
    pub resources: Vec<Desired>,
    pub externals: BTreeMap<String, String>,
}

struct Builder<'a> {
    spec: &'a Spec,
    out: Vec<Desired>,
}

impl Builder<'_> {
    fn add(&mut self, kind: &'static str, id: &str, mut fields: Fields, after: &[&str]) {
        let tags = ownership::tags(&self.spec.name, id, &self.spec.tags);
        fields.insert("tags".into(), json!(tags));
        self.out.push(Desired { kind, id: id.into(), fields, after: after.iter().map(|s| s.to_string()).collect() });
    }
}

impl Builder<'_> {
    fn security_group(&mut self, id: &str, suffix: &str, purpose: &str, ingress: Vec<Value>, egress: Vec<Value>) {
        let fields = obj(json!({
            "group_name": format!("{}-{suffix}", self.spec.name),
            "description": format!("{} {purpose} (managed by reconciler)", self.spec.name),
            "vpc": reference("vpc"),
            "ingress": set(ingress),
            "egress": set(egress),
        }));
        self.add("ec2:security-group", id, fields, &[]);
    }
}

fn obj(v: Value) -> Fields {
    match v {
        Value::Object(m) => m,
        _ => unreachable!("desired fields are objects"),
    }
}

pub fn build(spec: &Spec, facts: &Facts) -> anyhow::Result<DesiredState> {
    let mut b = Builder { spec, out: Vec::new() };
    let mut externals = BTreeMap::new();
    let vpc_cidr: String;

    if let Some(vpc) = &spec.network.vpc {
        let cidr: Cidr = vpc.cidr.parse().map_err(anyhow::Error::msg)?;
        vpc_cidr = cidr.to_string();
        let n = vpc.azs as usize;
        let azs: Vec<String> = vpc.availability_zones.clone().unwrap_or_else(|| facts.azs.iter().take(n).cloned().collect());
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
        let private = subnets(&vpc.private_subnets, true)?;

        b.add("ec2:vpc", "vpc", obj(json!({"cidr": vpc_cidr, "dns_support": true, "dns_hostnames": true})), &[]);
        b.add("ec2:internet-gateway", "igw", obj(json!({"vpc": reference("vpc")})), &[]);
        for (i, az) in azs.iter().enumerate() {
            let k = i + 1;
            b.add(
                "ec2:subnet",
                &format!("subnet-public-{k}"),
                obj(json!({"vpc": reference("vpc"), "cidr": public[i], "availability_zone": az, "public_ip_on_launch": true})),
                &[],
            );
            b.add(
                "ec2:subnet",
                &format!("subnet-private-{k}"),
                obj(json!({"vpc": reference("vpc"), "cidr": private[i], "availability_zone": az, "public_ip_on_launch": false})),
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
            obj(json!({"vpc": reference("vpc"), "routes": set(vec![json!({"destination": "0.0.0.0/0", "target": reference("igw")})]), "subnets": set(public_subnets)})),
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
                obj(json!({"vpc": reference("vpc"), "routes": routes, "subnets": set(vec![reference(&format!("subnet-private-{k}"))])})),
                &[],
            );
        }
    } else {
        let ex = facts.existing.as_ref().ok_or_else(|| anyhow::anyhow!("internal error: existing-VPC facts were not gathered"))?;
        vpc_cidr = ex.cidr.clone();
        externals.insert("vpc".into(), ex.vpc_id.clone());
        for (i, s) in ex.private_subnet_ids.iter().enumerate() {
            externals.insert(format!("subnet-private-{}", i + 1), s.clone());
        }
    }

    // Security groups. The service takes traffic on its port from inside the VPC only (the
    // VPC link's ENIs live there); it needs egress to pull images and call AWS and Benchling.
    // The VPC link only needs to reach the service port inside the VPC.
    let port = spec.service.as_ref().map(|s| s.port).unwrap_or(8080);
    let service_port = json!(format!("tcp {port} {vpc_cidr}"));
    b.security_group("sg-service", "service", "webhook service tasks", vec![service_port.clone()], vec![json!("all all 0.0.0.0/0")]);
    b.security_group("sg-vpc-link", "vpc-link", "API Gateway VPC link", vec![], vec![service_port]);

    Ok(DesiredState { resources: b.out, externals })
}

/// Sections of the spec that are validated but not reconciled yet, said in every plan.
pub fn not_yet_reconciled(spec: &Spec) -> Vec<String> {
    let mut s = Vec::new();
    for (name, present) in [
        ("discovery", spec.discovery.is_some()),
        ("service", spec.service.is_some()),
        ("scaling", spec.scaling.is_some()),
        ("api", spec.api.is_some()),
    ] {
        if present {
            s.push(name);
        }
    }
    if s.is_empty() {
        return vec![];
    }
    vec![format!(
        "spec sections {} are validated but not reconciled by this version (network layer only); nothing is created for them",
        s.join(", ")
    )]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::registry;

    fn spec(nat: &str) -> Spec {
        crate::spec::parse(
            "t.yaml",
            &format!("name: demo\nregion: us-east-1\ntags: {{team: x}}\nnetwork:\n  vpc: {{cidr: 10.0.0.0/16, azs: 2, nat: {nat}}}\nservice: {{cluster: c, image: 'r/i:1', cpu: 256, memory: 512, port: 8080}}\n"),
        )
        .unwrap()
    }
    fn facts() -> Facts {
        Facts { azs: vec!["us-east-1a".into(), "us-east-1b".into(), "us-east-1c".into()], existing: None }
    }
    fn ids(d: &DesiredState, kind: &str) -> Vec<String> {
        d.resources.iter().filter(|r| r.kind == kind).map(|r| r.id.clone()).collect()
    }

    #[test]
    fn per_az_layout() {
        let d = build(&spec("per-az"), &facts()).unwrap();
        assert_eq!(ids(&d, "ec2:vpc"), ["vpc"]);
        assert_eq!(ids(&d, "ec2:subnet").len(), 4);
        assert_eq!(ids(&d, "ec2:nat-gateway"), ["nat-1", "nat-2"]);
        assert_eq!(ids(&d, "ec2:elastic-ip").len(), 2);
        assert_eq!(ids(&d, "ec2:route-table"), ["rt-public", "rt-private-1", "rt-private-2"]);
        let rt2 = d.resources.iter().find(|r| r.id == "rt-private-2").unwrap();
        assert_eq!(rt2.fields["routes"], set(vec![json!({"destination": "0.0.0.0/0", "target": reference("nat-2")})]));
        let sub = d.resources.iter().find(|r| r.id == "subnet-private-2").unwrap();
        assert_eq!(sub.fields["cidr"], "10.0.129.0/24");
        assert_eq!(sub.fields["availability_zone"], "us-east-1b");
        assert_eq!(sub.fields["tags"]["reconciler:stack"], "demo");
        assert_eq!(sub.fields["tags"]["team"], "x");
        let sg = d.resources.iter().find(|r| r.id == "sg-service").unwrap();
        assert_eq!(sg.fields["ingress"], set(vec![json!("tcp 8080 10.0.0.0/16")]));
    }

    #[test]
    fn single_and_no_nat() {
        let d = build(&spec("single"), &facts()).unwrap();
        assert_eq!(ids(&d, "ec2:nat-gateway"), ["nat-1"]);
        let rt2 = d.resources.iter().find(|r| r.id == "rt-private-2").unwrap();
        assert_eq!(rt2.fields["routes"], set(vec![json!({"destination": "0.0.0.0/0", "target": reference("nat-1")})]));
        let d = build(&spec("none"), &facts()).unwrap();
        assert!(ids(&d, "ec2:nat-gateway").is_empty());
        let rt2 = d.resources.iter().find(|r| r.id == "rt-private-2").unwrap();
        assert_eq!(rt2.fields["routes"], set(vec![]));
    }

    #[test]
    fn too_few_zones_is_a_clear_error() {
        let f = Facts { azs: vec!["us-east-1a".into()], existing: None };
        let e = build(&spec("per-az"), &f).err().unwrap().to_string();
        assert!(e.contains("offers 1 availability zone"), "{e}");
    }

    #[test]
    fn existing_vpc_owns_only_security_groups() {
        let s = crate::spec::parse(
            "t.yaml",
            "name: demo\nregion: us-east-1\nnetwork:\n  existing: {vpc_id: vpc-1, private_subnet_ids: [subnet-1, subnet-2]}\n",
        )
        .unwrap();
        let f = Facts {
            azs: vec![],
            existing: Some(ExistingNetwork {
                vpc_id: "vpc-1".into(),
                cidr: "172.16.0.0/16".into(),
                private_subnet_ids: vec!["subnet-1".into(), "subnet-2".into()],
            }),
        };
        let d = build(&s, &f).unwrap();
        assert!(d.resources.iter().all(|r| r.kind == "ec2:security-group"));
        assert_eq!(d.externals["vpc"], "vpc-1");
        let sg = d.resources.iter().find(|r| r.id == "sg-service").unwrap();
        assert_eq!(sg.fields["ingress"], set(vec![json!("tcp 8080 172.16.0.0/16")]));
    }

    /// Destroy and pruning delete in reverse registry order; that is only right if every
    /// reference points at a kind registered earlier (or the same kind).
    #[test]
    fn references_point_backwards_in_the_registry() {
        let kinds: Vec<&str> = registry().iter().map(|k| k.name()).collect();
        let d = build(&spec("per-az"), &facts()).unwrap();
        let rank = |kind: &str| kinds.iter().position(|k| *k == kind).unwrap();
        for r in &d.resources {
            let mut deps = std::collections::BTreeSet::new();
            for v in r.fields.values() {
                crate::engine::references_in(v, &mut deps);
            }
            deps.extend(r.after.iter().cloned());
            for dep in deps {
                let target = d.resources.iter().find(|x| x.id == dep).unwrap();
                assert!(rank(target.kind) <= rank(r.kind), "{} ({}) references {} ({})", r.id, r.kind, dep, target.kind);
            }
        }
    }
}
