//! Desired state: computed from the spec and a few live facts (availability zones, an
//! existing VPC, the account id), purely: no AWS calls here, so every layout decision is
//! unit-tested. One builder per spec section: network, discovery, compute (IAM, logs,
//! queues, ECS, autoscaling), edge, drift correction.

mod compute;
mod discovery;
pub mod drift_correction;
mod edge;
mod network;

use crate::engine::fields::untyped;
use crate::engine::ownership::{self, TagMap};
use crate::engine::{initial_value, Desired, Ref, Set};
pub use crate::facts::{ExistingNetwork, Facts};
use crate::spec::{DeletionPolicy, Spec};
use serde::Serialize;
use std::collections::BTreeMap;

/// The desired resources, and the AWS ids of what they reference but the stack does not own.
pub struct DesiredState {
    pub resources: Vec<Desired>,
    pub externals: BTreeMap<String, String>,
}

pub(crate) struct Builder<'a> {
    spec: &'a Spec,
    facts: &'a Facts,
    out: Vec<Desired>,
    externals: BTreeMap<String, String>,
}

impl Builder<'_> {
    /// A resource that takes tags: `fields` builds the kind's fields struct around the tags
    /// it is given (the ownership tags and the spec's).
    fn add<F: Serialize>(&mut self, kind: &'static str, id: &str, fields: impl Fn(TagMap) -> F, after: &[&str]) {
        self.add_tagged(kind, id, fields, after, false);
    }

    /// A resource that holds data (log group, queue) with its own deletion policy (default:
    /// the stack's). `retain` is recorded on the resource as a tag, so that pruning and
    /// destroy know it without the spec.
    fn add_with_policy<F: Serialize>(
        &mut self,
        kind: &'static str,
        id: &str,
        fields: impl Fn(TagMap) -> F,
        after: &[&str],
        policy: Option<DeletionPolicy>,
    ) {
        let retain = policy.unwrap_or(self.spec.deletion_policy) == DeletionPolicy::Retain;
        self.add_tagged(kind, id, fields, after, retain);
    }

    fn add_tagged<F: Serialize>(&mut self, kind: &'static str, id: &str, fields: impl Fn(TagMap) -> F, after: &[&str], retain: bool) {
        let mut tags = ownership::tags(&self.spec.name, id, &self.spec.tags);
        if retain {
            tags.insert(ownership::RETAIN_TAG.into(), "retain".into());
        }
        // What this resource is converged to, recorded on it (drift attribution): hashed with
        // its tags as they are, also where they are only set on create (`Managed::Initial`).
        let mut hashed = untyped(&fields(tags.clone()));
        if let Some(plain) = hashed.get("tags").and_then(initial_value).cloned() {
            hashed.insert("tags".into(), plain);
        }
        let applied = ownership::applied_hash(&hashed);
        tags.insert(ownership::APPLIED_TAG.into(), applied);
        self.add_untagged(kind, id, fields(tags), after);
    }

    /// The private route tables, each with its route out (through a NAT gateway, which it
    /// references): a task started before them has no way out (image pulls, secrets, logs
    /// fail), so services and scheduled tasks are ordered after them. Empty with an existing VPC.
    fn private_egress(&self) -> Vec<String> {
        self.out.iter().filter(|d| d.kind == "ec2:route-table" && d.id.starts_with("rt-private-")).map(|d| d.id.clone()).collect()
    }

    /// A resource that takes no tags (found by its parent).
    fn add_untagged<F: Serialize>(&mut self, kind: &'static str, id: &str, fields: F, after: &[&str]) {
        let fields = untyped(&fields);
        self.out.push(Desired { kind, id: id.into(), fields, after: after.iter().map(|s| s.to_string()).collect() });
    }
}

/// References to the nodes `ids` (subnets, security groups), as a set.
fn refs_to(ids: &[String]) -> Set<Ref> {
    Set::of(ids.iter().map(|s| Ref::to(s)).collect())
}

pub fn build(spec: &Spec, facts: &Facts) -> anyhow::Result<DesiredState> {
    let mut b = Builder { spec, facts, out: Vec::new(), externals: BTreeMap::new() };
    let private_subnets = network::build(&mut b, facts)?;
    discovery::build(&mut b);
    compute::build(&mut b, &private_subnets);
    edge::build(&mut b, &private_subnets);
    drift_correction::build(&mut b, &private_subnets);
    Ok(DesiredState { resources: b.out, externals: b.externals })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{reference, set};
    use crate::resources::registry;
    use serde_json::{json, Value};

    fn spec(nat: &str) -> Spec {
        crate::spec::parse(
            "t.yaml",
            &format!("name: demo\nregion: us-east-1\ntags: {{team: x}}\nnetwork:\n  vpc: {{cidr: 10.0.0.0/16, azs: 2, nat: {nat}}}\nservice: {{cluster: c, image: 'r/i:1', cpu: 256, memory: 512, port: 8080}}\n"),
        )
        .unwrap()
    }
    fn full_spec() -> Spec {
        crate::spec::load(&crate::spec::shipped("../specs/prod.yaml")).unwrap()
    }
    fn facts() -> Facts {
        Facts::in_zones("abc")
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

    /// No task starts without a route out: the service and the drift-correction schedule come
    /// after every private route table, and so after the NAT gateways those route through.
    #[test]
    fn tasks_start_only_after_the_route_out() {
        let d = build(&full_spec(), &facts()).unwrap();
        let order = crate::engine::creation_order(&d.resources, &d.externals).unwrap();
        let at = |id: &str| order.iter().position(|x| x == id).unwrap_or_else(|| panic!("{id} not in {order:?}"));
        for task_starter in ["service", "schedule-drift-correction"] {
            let node = d.resources.iter().find(|r| r.id == task_starter).unwrap();
            for rt in ids(&d, "ec2:route-table").iter().filter(|id| id.starts_with("rt-private-")) {
                assert!(node.after.contains(rt), "{task_starter} is not ordered after {rt}: {:?}", node.after);
                assert!(at(task_starter) > at(rt));
            }
            for nat in ids(&d, "ec2:nat-gateway") {
                assert!(at(task_starter) > at(&nat), "{task_starter} before {nat}");
            }
        }
    }

    #[test]
    fn too_few_zones_is_a_clear_error() {
        let f = Facts::in_zones("a");
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
            zones_in_use: BTreeMap::new(),
            existing: Some(ExistingNetwork {
                vpc_id: "vpc-1".into(),
                cidr: "172.16.0.0/16".into(),
                private_subnet_ids: vec!["subnet-1".into(), "subnet-2".into()],
            }),
            account: "123456789012".into(),
        };
        let d = build(&s, &f).unwrap();
        assert!(d.resources.iter().all(|r| !r.kind.starts_with("ec2:") || r.kind == "ec2:security-group"));
        assert_eq!(d.externals["vpc"], "vpc-1");
        let sg = d.resources.iter().find(|r| r.id == "sg-service").unwrap();
        assert_eq!(sg.fields["ingress"], set(vec![json!("tcp 8080 172.16.0.0/16")]));
    }

    /// Every kind desired state uses has a registered implementation, and every reference
    /// points at a desired node (or an external).
    #[test]
    fn every_desired_kind_is_registered_and_every_reference_resolves() {
        let kinds: Vec<&str> = registry().iter().map(|k| k.name()).collect();
        let d = build(&full_spec(), &facts()).unwrap();
        for r in &d.resources {
            assert!(kinds.contains(&r.kind), "{} ({}) has no registered kind", r.id, r.kind);
            let mut deps = std::collections::BTreeSet::new();
            for v in r.fields.values() {
                crate::engine::references_in(v, &mut deps);
            }
            deps.extend(r.after.iter().cloned());
            for dep in deps {
                assert!(d.resources.iter().any(|x| x.id == dep) || d.externals.contains_key(&dep), "{} references unknown {dep}", r.id);
            }
        }
    }

    /// The desired state of one of the specs in `specs/`, with facts for its network mode.
    fn state_of(file: &str) -> DesiredState {
        let spec = crate::spec::load(&crate::spec::shipped(&format!("../specs/{file}"))).unwrap();
        let existing = spec.network.existing.as_ref().map(|e| ExistingNetwork {
            vpc_id: e.vpc_id.clone(),
            cidr: "10.0.0.0/16".into(),
            private_subnet_ids: e.private_subnet_ids.clone(),
        });
        build(&spec, &Facts { existing, ..facts() }).unwrap()
    }

    /// Every node of every shipped spec's desired state reads into its kind's typed fields,
    /// as create receives it: a field desired state misspells or mistypes fails here, not at
    /// apply.
    #[test]
    fn every_desired_node_fits_its_kinds_fields() {
        let kinds = registry();
        for file in ["prod.yaml", "dev.yaml", "existing-vpc.yaml"] {
            let d = state_of(file);
            crate::engine::fields::check_desired(&kinds, &d.resources, &d.externals).unwrap_or_else(|e| panic!("{file}: {e:#}"));
        }
        // And the check can fail: a misspelt field and a mistyped one are both named.
        let mut d = state_of("prod.yaml");
        let subnet = d.resources.iter_mut().find(|r| r.id == "subnet-private-1").unwrap();
        let cidr = subnet.fields.remove("cidr").unwrap();
        subnet.fields.insert("cdir".into(), cidr);
        d.resources.iter_mut().find(|r| r.id == "queue").unwrap().fields.insert("visibility_timeout".into(), json!("30s"));
        // And a node the struct reads but would not write back the same (null where the struct
        // leaves the field out) is named too.
        d.resources.iter_mut().find(|r| r.id == "subnet-private-2").unwrap().fields.insert("public_ip_on_launch".into(), Value::Null);
        let e = crate::engine::fields::check_desired(&kinds, &d.resources, &d.externals).unwrap_err().to_string();
        assert!(e.contains("ec2:subnet subnet-private-1") && e.contains("cdir"), "{e}");
        assert!(e.contains("sqs:queue queue") && e.contains(r#"string "30s", expected u64"#), "{e}");
        assert!(e.contains(r#"ec2:subnet subnet-private-2: its fields struct does not write back ["public_ip_on_launch"]"#), "{e}");
    }

    fn node<'a>(d: &'a DesiredState, id: &str) -> &'a Desired {
        d.resources.iter().find(|r| r.id == id).unwrap_or_else(|| panic!("no desired {id}"))
    }

    #[test]
    fn the_prod_spec_deploys_the_whole_service() {
        let d = build(&full_spec(), &facts()).unwrap();
        let compute: Vec<&str> = d.resources.iter().filter(|r| !r.kind.starts_with("ec2:")).map(|r| r.id.as_str()).collect();
        assert_eq!(
            compute,
            [
                "namespace",
                "discovery-service",
                "log-container",
                "queue-dlq",
                "queue",
                "role-execution",
                "role-task",
                "cluster",
                "task-definition",
                "service",
                "scaling-target",
                "scaling-cpu",
                "scaling-memory",
                "log-api",
                "vpc-link",
                "api",
                "integration",
                "route-root",
                "route-proxy",
                "stage",
                "log-drift-correction",
                "role-drift-correction-execution",
                "role-drift-correction",
                "task-definition-drift-correction",
                "role-drift-correction-scheduler",
                "schedule-group",
                "schedule-drift-correction"
            ]
        );
        // The edge: the integration reaches the Cloud Map service over the VPC link, which
        // sits in the private subnets with its own security group; access logs go to the
        // API log group.
        let integration = node(&d, "integration");
        assert_eq!(integration.fields["uri"], crate::engine::reference_to("discovery-service", "arn"));
        assert_eq!(integration.fields["connection_id"], crate::engine::reference("vpc-link"));
        assert!(integration.fields["timeout_ms"].as_u64().unwrap() < 30_000);
        let link = node(&d, "vpc-link");
        assert_eq!(
            link.fields["subnets"],
            set(vec![crate::engine::reference("subnet-private-1"), crate::engine::reference("subnet-private-2")])
        );
        assert_eq!(link.fields["security_groups"], set(vec![crate::engine::reference("sg-vpc-link")]));
        let stage = node(&d, "stage");
        assert_eq!(stage.fields["access_log_destination"], crate::engine::reference_to("log-api", "arn"));
        assert_eq!((stage.fields["throttling_rate"].clone(), stage.fields["throttling_burst"].clone()), (json!(100.0), json!(200)));
        assert_eq!(node(&d, "log-api").fields["name"], "/aws/apigateway/benchling-webhook");
        // Wires: by reference, so creation order and new identities follow.
        let td = node(&d, "task-definition");
        assert_eq!(td.fields["execution_role"], crate::engine::reference_to("role-execution", "arn"));
        let env = td.fields["container"]["environment"].as_array().unwrap();
        let var = |k: &str| env.iter().find(|e| e["name"] == k).map(|e| e["value"].clone());
        assert_eq!(var("QUEUE_URL"), Some(crate::engine::reference_to("queue", "url")));
        assert_eq!(var("PACKAGER_SQS_URL"), Some(json!("https://sqs.us-east-1.amazonaws.com/123456789012/quilt-packager")));
        assert_eq!(var("APP_ENV"), Some(json!("production")));
        let names: Vec<&str> = env.iter().map(|e| e["name"].as_str().unwrap()).collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "environment sorted by name: {names:?}");
        assert_eq!(td.fields["image"], "public.ecr.aws/example/benchling-webhook:0.1.0");
        let svc = node(&d, "service");
        assert_eq!(svc.fields["desired_count"], crate::engine::within(2, 10, 2), "autoscaling owns the count");
        assert_eq!(svc.fields["registry"]["arn"], crate::engine::reference_to("discovery-service", "arn"));
        // Data outlives the stack where the spec says so; nothing else carries the tag.
        for id in ["log-container", "queue", "queue-dlq"] {
            assert_eq!(node(&d, id).fields["tags"][ownership::RETAIN_TAG], "retain", "{id}");
        }
        assert!(node(&d, "cluster").fields["tags"].get(ownership::RETAIN_TAG).is_none());
        assert_eq!(node(&d, "queue").fields["redrive"]["max_receive_count"], 5);
        assert_eq!(node(&d, "queue-dlq").fields["redrive"], Value::Null);
        assert_eq!(node(&d, "scaling-cpu").fields["target"], json!(70.0));
    }

    #[test]
    fn policies_are_least_privilege() {
        let d = build(&full_spec(), &facts()).unwrap();
        let task = node(&d, "role-task").fields["policies"]["task"].to_string();
        assert!(!task.contains("\"*\""), "no wildcard resource in the task policy: {task}");
        assert!(task.contains("arn:aws:s3:::example-benchling-packages/benchling/*"));
        assert!(task.contains("arn:aws:sqs:us-east-1:123456789012:quilt-packager"));
        assert!(task.contains("arn:aws:secretsmanager:us-east-1:123456789012:secret:benchling-webhook-abc123"));
        let exec = node(&d, "role-execution").fields["policies"]["execution"].to_string();
        assert!(exec.contains("arn_wildcard") && !exec.contains("ecr:"), "public image: no ECR permission: {exec}");
        let trust = &node(&d, "role-task").fields["trust"];
        assert_eq!(trust["Statement"][0]["Condition"]["StringEquals"]["aws:SourceAccount"], "123456789012");
    }

    #[test]
    fn track_live_leaves_the_image_to_the_pipeline() {
        let mut spec = full_spec();
        spec.service.as_mut().unwrap().image_policy = crate::spec::ImagePolicy::TrackLive;
        let d = build(&spec, &facts()).unwrap();
        assert_eq!(
            node(&d, "task-definition").fields["image"],
            crate::engine::initial(json!("public.ecr.aws/example/benchling-webhook:0.1.0"))
        );
    }

    #[test]
    fn without_scaling_the_count_is_the_spec_s() {
        let mut spec = full_spec();
        spec.scaling = None;
        let d = build(&spec, &facts()).unwrap();
        assert_eq!(node(&d, "service").fields["desired_count"], json!(2));
        assert!(d.resources.iter().all(|r| !r.kind.starts_with("application-autoscaling")));
    }

    #[test]
    fn zones_in_use_are_kept_when_the_region_stops_listing_them() {
        // The stack runs in a and b; b is impaired and no longer listed; c is new.
        let f = Facts {
            azs: vec!["us-east-1a".into(), "us-east-1c".into(), "us-east-1d".into()],
            zones_in_use: BTreeMap::from([(1, "us-east-1a".to_string()), (2, "us-east-1b".to_string())]),
            existing: None,
            account: "123456789012".into(),
        };
        let d = build(&spec("per-az"), &f).unwrap();
        assert_eq!(node(&d, "subnet-private-2").fields["availability_zone"], "us-east-1b");
        assert_eq!(node(&d, "subnet-public-1").fields["availability_zone"], "us-east-1a");
        // A new index takes a listed zone not already used.
        let f = Facts { zones_in_use: BTreeMap::from([(1, "us-east-1c".to_string())]), ..f };
        let d = build(&spec("per-az"), &f).unwrap();
        assert_eq!(node(&d, "subnet-public-1").fields["availability_zone"], "us-east-1c");
        assert_eq!(node(&d, "subnet-public-2").fields["availability_zone"], "us-east-1a");
    }
}
