//! The network layer against moto: create from zero, no-op re-plan, drift in every kind
//! detected (exit 2, resource and field named) and corrected, pruning, existing-VPC mode,
//! and destroy that leaves unowned look-alikes alone. Each test owns its moto server.

use crate::{cli, fault_proxy, support};

use aws_sdk_ec2::types::{AttributeBooleanValue, Filter, IpPermission, IpRange, NatGatewayState, ResourceType, Tag, TagSpecification};
use aws_sdk_ec2::Client;
use cli::{applied, assert_converged, reconciler, reconciler_via};
use std::process::{Command, Stdio};
use support::{repo_root, Moto};

const STACK: &str = "benchling-webhook";

async fn ec2(moto: &Moto) -> Client {
    Client::new(&moto.sdk_config().await)
}

fn tag_filter(key: &str, value: &str) -> Filter {
    Filter::builder().name(format!("tag:{key}")).values(value).build()
}

/// Owned resources per kind, as AWS reports them (filters checked client-side too, since
/// moto ignores some of them).
#[derive(Debug, Default, PartialEq)]
struct Counts {
    vpcs: usize,
    subnets: usize,
    igws: usize,
    eips: usize,
    nats: usize,
    route_tables: usize,
    security_groups: usize,
}

fn ours(tags: &[Tag], stack: &str) -> bool {
    tags.iter().any(|t| t.key() == Some("reconciler:stack") && t.value() == Some(stack))
}

async fn counts(c: &Client, stack: &str) -> Counts {
    let f = || tag_filter("reconciler:stack", stack);
    Counts {
        vpcs: c.describe_vpcs().filters(f()).send().await.unwrap().vpcs().iter().filter(|x| ours(x.tags(), stack)).count(),
        subnets: c.describe_subnets().filters(f()).send().await.unwrap().subnets().iter().filter(|x| ours(x.tags(), stack)).count(),
        igws: c
            .describe_internet_gateways()
            .filters(f())
            .send()
            .await
            .unwrap()
            .internet_gateways()
            .iter()
            .filter(|x| ours(x.tags(), stack))
            .count(),
        eips: c.describe_addresses().filters(f()).send().await.unwrap().addresses().iter().filter(|x| ours(x.tags(), stack)).count(),
        nats: c
            .describe_nat_gateways()
            .send()
            .await
            .unwrap()
            .nat_gateways()
            .iter()
            .filter(|x| ours(x.tags(), stack) && x.state() == Some(&NatGatewayState::Available))
            .count(),
        route_tables: c
            .describe_route_tables()
            .filters(f())
            .send()
            .await
            .unwrap()
            .route_tables()
            .iter()
            .filter(|x| ours(x.tags(), stack))
            .count(),
        security_groups: c
            .describe_security_groups()
            .filters(f())
            .send()
            .await
            .unwrap()
            .security_groups()
            .iter()
            .filter(|x| ours(x.tags(), stack))
            .count(),
    }
}

async fn route_table(c: &Client, id: &str) -> aws_sdk_ec2::types::RouteTable {
    c.describe_route_tables().filters(tag_filter("reconciler:id", id)).send().await.unwrap().route_tables()[0].clone()
}
async fn security_group(c: &Client, id: &str) -> String {
    c.describe_security_groups().filters(tag_filter("reconciler:id", id)).send().await.unwrap().security_groups()[0]
        .group_id()
        .unwrap()
        .to_string()
}
/// By logical id, matched client-side (moto ignores DescribeNatGateways' tag filter).
async fn nat_gateway(c: &Client, id: &str) -> aws_sdk_ec2::types::NatGateway {
    let out = c.describe_nat_gateways().send().await.unwrap();
    out.nat_gateways().iter().find(|n| n.tags().iter().any(|t| t.key() == Some("reconciler:id") && t.value() == Some(id))).unwrap().clone()
}
async fn subnet(c: &Client, id: &str) -> aws_sdk_ec2::types::Subnet {
    c.describe_subnets().filters(tag_filter("reconciler:id", id)).send().await.unwrap().subnets()[0].clone()
}

/// A VPC made out of band (not by the reconciler), with these tags; its id.
async fn vpc_tagged(c: &Client, cidr: &str, tags: &[(&str, &str)]) -> String {
    let mut req = c.create_vpc().cidr_block(cidr);
    if !tags.is_empty() {
        let spec = tags.iter().fold(TagSpecification::builder().resource_type(ResourceType::Vpc), |b, (k, v)| {
            b.tags(Tag::builder().key(*k).value(*v).build())
        });
        req = req.tag_specifications(spec.build());
    }
    req.send().await.unwrap().vpc().unwrap().vpc_id().unwrap().to_string()
}

fn ssh_from_anywhere() -> IpPermission {
    IpPermission::builder().ip_protocol("tcp").from_port(22).to_port(22).ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build()).build()
}

#[tokio::test]
async fn apply_from_zero_creates_the_tagged_network_and_is_idempotent() {
    let moto = Moto::start();
    let c = ec2(&moto).await;

    let plan = reconciler(&moto, &["plan", "specs/prod.yaml", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{plan}");
    // 15 network resources, 13 for the service (IAM, logs, queues, Cloud Map, ECS, scaling),
    // 7 for the edge (access log group, VPC link, API, integration, 2 routes, stage) and 8 for
    // drift correction (security group, log group, 3 roles, task definition, schedule group,
    // schedule).
    assert!(plan.stdout.contains("43 to create"), "{plan}");

    let apply = reconciler(&moto, &["apply", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(apply.code, 0, "{apply}");
    assert_eq!(counts(&c, STACK).await, Counts { vpcs: 1, subnets: 4, igws: 1, eips: 2, nats: 2, route_tables: 3, security_groups: 3 });

    // Layout: the seed design's CIDRs, public subnets route to the IGW, each private subnet
    // to the NAT gateway in its own AZ, the service takes its port from the VPC only.
    assert_eq!(subnet(&c, "subnet-private-2").await.cidr_block(), Some("10.0.129.0/24"));
    assert_eq!(subnet(&c, "subnet-public-1").await.map_public_ip_on_launch(), Some(true));
    let pub_rt = route_table(&c, "rt-public").await;
    assert!(pub_rt
        .routes()
        .iter()
        .any(|r| r.destination_cidr_block() == Some("0.0.0.0/0") && r.gateway_id().is_some_and(|g| g.starts_with("igw-"))));
    assert_eq!(pub_rt.associations().iter().filter(|a| a.subnet_id().is_some()).count(), 2);
    let nat1 = nat_gateway(&c, "nat-1").await;
    let priv_rt = route_table(&c, "rt-private-1").await;
    assert!(priv_rt.routes().iter().any(|r| r.nat_gateway_id() == nat1.nat_gateway_id()));
    let sub1 = subnet(&c, "subnet-public-1").await;
    assert_eq!(nat1.subnet_id(), sub1.subnet_id());

    // Every owned resource carries both ownership tags and the spec's tags.
    let vpc = c.describe_vpcs().filters(tag_filter("reconciler:stack", STACK)).send().await.unwrap().vpcs()[0].clone();
    for key in ["reconciler:stack", "reconciler:id", "project", "environment", "Name"] {
        assert!(vpc.tags().iter().any(|t| t.key() == Some(key)), "VPC lacks tag {key}");
    }

    let again = reconciler(&moto, &["apply", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(again.code, 0, "{again}");
    assert!(again.stdout.contains("No changes"), "second apply must change nothing\n{again}");
    assert!(!again.stderr.contains("created"), "{again}");
    assert_converged(&moto, "specs/prod.yaml");
}

#[tokio::test]
async fn drift_in_every_kind_is_named_and_corrected() {
    let moto = applied("specs/prod.yaml");
    let c = ec2(&moto).await;

    // Out-of-band changes, one (or more) per kind.
    let vpc_id =
        c.describe_vpcs().filters(tag_filter("reconciler:id", "vpc")).send().await.unwrap().vpcs()[0].vpc_id().unwrap().to_string();
    c.modify_vpc_attribute()
        .vpc_id(&vpc_id)
        .enable_dns_hostnames(AttributeBooleanValue::builder().value(false).build())
        .send()
        .await
        .unwrap();
    let pub1 = subnet(&c, "subnet-public-1").await.subnet_id().unwrap().to_string();
    c.modify_subnet_attribute()
        .subnet_id(&pub1)
        .map_public_ip_on_launch(AttributeBooleanValue::builder().value(false).build())
        .send()
        .await
        .unwrap();
    let igw = c.describe_internet_gateways().filters(tag_filter("reconciler:id", "igw")).send().await.unwrap().internet_gateways()[0]
        .internet_gateway_id()
        .unwrap()
        .to_string();
    c.detach_internet_gateway().internet_gateway_id(&igw).vpc_id(&vpc_id).send().await.unwrap();
    let eip = c.describe_addresses().filters(tag_filter("reconciler:id", "eip-nat-1")).send().await.unwrap().addresses()[0]
        .allocation_id()
        .unwrap()
        .to_string();
    c.create_tags().resources(&eip).tags(Tag::builder().key("environment").value("tampered").build()).send().await.unwrap();
    let nat2 = nat_gateway(&c, "nat-2").await.nat_gateway_id().unwrap().to_string();
    c.delete_tags().resources(&nat2).tags(Tag::builder().key("project").build()).send().await.unwrap();
    let rt = route_table(&c, "rt-private-1").await.route_table_id().unwrap().to_string();
    c.delete_route().route_table_id(&rt).destination_cidr_block("0.0.0.0/0").send().await.unwrap();
    let sg = security_group(&c, "sg-service").await;
    c.authorize_security_group_ingress().group_id(&sg).ip_permissions(ssh_from_anywhere()).send().await.unwrap();

    let plan = reconciler(&moto, &["plan", "specs/prod.yaml", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{plan}");
    let expect = [
        ("~ ec2:vpc vpc", "dns_hostnames: false -> true"),
        ("~ ec2:subnet subnet-public-1", "public_ip_on_launch: false -> true"),
        ("~ ec2:internet-gateway igw", "vpc: null -> vpc-"),
        ("~ ec2:elastic-ip eip-nat-1", "tags.environment: tampered -> production"),
        ("~ ec2:nat-gateway nat-2", "tags.project: (unset) -> benchling-webhook"),
        ("~ ec2:route-table rt-private-1", "routes:"),
        ("~ ec2:security-group sg-service", "- tcp 22 0.0.0.0/0"),
    ];
    for (resource, field) in expect {
        let at = plan.stdout.find(resource).unwrap_or_else(|| panic!("plan does not name {resource}\n{plan}"));
        let block: String = plan.stdout[at..].lines().take(8).collect::<Vec<_>>().join("\n");
        assert!(block.contains(field), "{resource} should show `{field}`\n{plan}");
    }
    assert!(plan.stdout.contains("7 to update"), "{plan}");
    assert!(plan.stdout.contains("0 to replace"), "drift must be corrected in place\n{plan}");

    let fix = reconciler(&moto, &["apply", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(fix.code, 0, "{fix}");
    assert_converged(&moto, "specs/prod.yaml");
    // And really fixed in AWS, not just in our view of it.
    assert!(route_table(&c, "rt-private-1").await.routes().iter().any(|r| r.destination_cidr_block() == Some("0.0.0.0/0")));
    let rules = c.describe_security_group_rules().filters(Filter::builder().name("group-id").values(&sg).build()).send().await.unwrap();
    assert!(!rules.security_group_rules().iter().any(|r| r.from_port() == Some(22)), "the extra rule is still there");
    assert!(rules.security_group_rules().iter().any(|r| r.from_port() == Some(8080)), "the wanted rule was lost");
    assert_eq!(counts(&c, STACK).await.nats, 2);
}

#[tokio::test]
async fn shrinking_the_spec_prunes_what_left_it() {
    let moto = applied("specs/prod.yaml");
    let c = ec2(&moto).await;

    let dir = std::env::temp_dir().join(format!("prune-{}", moto.port));
    std::fs::create_dir_all(&dir).unwrap();
    let single = dir.join("single.yaml");
    std::fs::write(&single, std::fs::read_to_string(repo_root().join("specs/prod.yaml")).unwrap().replace("nat: per-az", "nat: single"))
        .unwrap();
    let single = single.to_str().unwrap();

    let plan = reconciler(&moto, &["plan", single, "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{plan}");
    assert!(plan.stdout.contains("- ec2:nat-gateway nat-2"), "{plan}");
    assert!(plan.stdout.contains("- ec2:elastic-ip eip-nat-2"), "{plan}");
    assert!(plan.stdout.contains("~ ec2:route-table rt-private-2"), "{plan}");

    assert!(plan.stdout.contains("DESTRUCTIVE: 0 replacement(s), 2 deletion(s)"), "{plan}");

    // Unattended, the deletions are held back (exit 3) while the in-place update goes ahead.
    let held = reconciler(&moto, &["apply", single, "--auto-approve"]);
    assert_eq!(held.code, 3, "{held}");
    assert!(held.stdout.contains("Held back (2)") && held.stdout.contains("ec2:nat-gateway nat-2: delete"), "{held}");
    assert_eq!(counts(&c, STACK).await.nats, 2, "nothing may be deleted without --allow-destructive");

    let apply = reconciler(&moto, &["apply", single, "--auto-approve", "--allow-destructive"]);
    assert_eq!(apply.code, 0, "{apply}");
    let n = counts(&c, STACK).await;
    assert_eq!((n.nats, n.eips), (1, 1));
    let nat1 = c
        .describe_nat_gateways()
        .send()
        .await
        .unwrap()
        .nat_gateways()
        .iter()
        .find(|n| n.state() == Some(&NatGatewayState::Available) && ours(n.tags(), STACK))
        .unwrap()
        .nat_gateway_id()
        .unwrap()
        .to_string();
    assert!(route_table(&c, "rt-private-2").await.routes().iter().any(|r| r.nat_gateway_id() == Some(nat1.as_str())));
    assert_converged(&moto, single);
}

#[tokio::test]
async fn destroy_removes_every_owned_resource_and_nothing_else() {
    let moto = Moto::start();
    let c = ec2(&moto).await;
    // Look-alikes: an untagged VPC named like ours, and one owned by another stack.
    let lookalike = vpc_tagged(&c, "10.0.0.0/16", &[("Name", "benchling-webhook-vpc")]).await;
    let other = vpc_tagged(&c, "10.9.0.0/16", &[("reconciler:stack", "other-stack"), ("reconciler:id", "vpc")]).await;

    assert_eq!(reconciler(&moto, &["apply", "specs/prod.yaml", "--auto-approve"]).code, 0);

    let refused = reconciler(&moto, &["destroy", "specs/prod.yaml"]);
    assert_eq!(refused.code, 1, "destroy without --auto-approve and no terminal must refuse\n{refused}");
    assert!(refused.stderr.contains("--auto-approve"), "{refused}");
    assert_eq!(counts(&c, STACK).await.vpcs, 1, "a refused destroy deleted something");

    let destroy = reconciler(&moto, &["destroy", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(destroy.code, 0, "{destroy}");
    let listed = |needle: &str| destroy.stdout.find(needle).unwrap_or_else(|| panic!("{needle} not listed\n{destroy}"));
    // Dependents first: routes before the NAT gateways they point at, those before their
    // (public) subnets, the service before its security group, everything before the VPC.
    assert!(
        listed("ec2:route-table") < listed("ec2:nat-gateway")
            && listed("ec2:nat-gateway") < listed("ec2:subnet subnet-public")
            && listed("ecs:service") < listed("ec2:security-group sg-service")
            && listed("ec2:security-group sg-service") < listed("ec2:vpc vpc"),
        "listed in deletion order\n{destroy}"
    );
    // The log group and both queues are retained (specs/prod.yaml says so).
    assert!(destroy.stdout.contains("40 deleted, 3 retained"), "{destroy}");
    assert_eq!(counts(&c, STACK).await, Counts::default());
    let vpcs: Vec<String> = c.describe_vpcs().send().await.unwrap().vpcs().iter().filter_map(|v| v.vpc_id().map(String::from)).collect();
    assert!(vpcs.contains(&lookalike), "the untagged look-alike VPC was deleted");
    assert!(vpcs.contains(&other), "another stack's VPC was deleted");

    let again = reconciler(&moto, &["destroy", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(again.code, 0, "{again}");
    assert!(again.stdout.contains("Nothing to destroy"), "{again}");
}

#[tokio::test]
async fn apply_without_approval_and_without_a_terminal_changes_nothing() {
    let moto = Moto::start();
    let c = ec2(&moto).await;
    let run = reconciler(&moto, &["apply", "specs/prod.yaml"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("refusing to apply these changes without --auto-approve"), "{run}");
    assert_eq!(counts(&c, STACK).await, Counts::default());
}

/// Existing-VPC mode: the VPC and subnets are validated live and referenced; only the
/// security groups are created in it, and destroy leaves the VPC and subnets alone.
#[tokio::test]
async fn existing_vpc_is_referenced_validated_and_never_modified() {
    let moto = Moto::start();
    let c = ec2(&moto).await;
    let vpc = vpc_tagged(&c, "172.31.0.0/16", &[]).await;
    let mk = |cidr: &'static str, az: &'static str| {
        let c = c.clone();
        let vpc = vpc.clone();
        async move {
            c.create_subnet()
                .vpc_id(vpc)
                .cidr_block(cidr)
                .availability_zone(az)
                .send()
                .await
                .unwrap()
                .subnet()
                .unwrap()
                .subnet_id()
                .unwrap()
                .to_string()
        }
    };
    let (a, b, same_az) =
        (mk("172.31.1.0/24", "us-east-1a").await, mk("172.31.2.0/24", "us-east-1b").await, mk("172.31.3.0/24", "us-east-1a").await);

    let dir = std::env::temp_dir().join(format!("existing-{}", moto.port));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, s1: &str, s2: &str| {
        let text = std::fs::read_to_string(repo_root().join("specs/existing-vpc.yaml"))
            .unwrap()
            .replace("vpc-0123456789abcdef0", &vpc)
            .replace("subnet-0123456789abcdef0", s1)
            .replace("subnet-0fedcba9876543210", s2);
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };

    // One AZ only: refused before anything is created, naming the subnets found.
    let bad = write("one-az.yaml", &a, &same_az);
    let run = reconciler(&moto, &["apply", &bad, "--auto-approve"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("at least 2 availability zones") && run.stderr.contains(&same_az), "{run}");

    let good = write("good.yaml", &a, &b);
    let run = reconciler(&moto, &["apply", &good, "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("2 to create"), "only the security groups are ours\n{run}");
    let stack = "benchling-webhook-shared";
    let n = counts(&c, stack).await;
    assert_eq!(n, Counts { security_groups: 2, ..Counts::default() });
    let sg = security_group(&c, "sg-service").await;
    let rules = c.describe_security_group_rules().filters(Filter::builder().name("group-id").values(&sg).build()).send().await.unwrap();
    assert!(rules.security_group_rules().iter().any(|r| r.cidr_ipv4() == Some("172.31.0.0/16") && r.from_port() == Some(8080)));
    assert_converged(&moto, &good);

    let run = reconciler(&moto, &["destroy", &good, "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("2 deleted"), "{run}");
    let vpcs = c.describe_vpcs().vpc_ids(&vpc).send().await.unwrap();
    assert_eq!(vpcs.vpcs().len(), 1, "the existing VPC must survive destroy");
    let subs = c.describe_subnets().subnet_ids(&a).subnet_ids(&b).send().await.unwrap();
    assert_eq!(subs.subnets().len(), 2, "the existing subnets must survive destroy");
}

/// Throttling and 5xx are retried, reads as they are and mutations only after observing
/// again, and the stack converges with nothing created twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_are_retried_without_duplicates() {
    use fault_proxy::{Fault, FaultProxy};
    let moto = Moto::start();
    let c = ec2(&moto).await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    proxy.inject("ec2:DescribeVpcs", &[Fault::Throttle, Fault::ServerError]);
    proxy.inject("ec2:CreateSubnet", &[Fault::Throttle, Fault::Throttle]);
    proxy.inject("ec2:CreateSecurityGroup", &[Fault::ServerError]);
    // The ambiguous case: the VPC and a NAT gateway are created, but the client is told 500.
    proxy.inject("ec2:CreateVpc", &[Fault::ServerErrorAfterForwarding]);
    proxy.inject("ec2:CreateNatGateway", &[Fault::ServerErrorAfterForwarding]);
    proxy.inject("ec2:AuthorizeSecurityGroupIngress", &[Fault::ServerErrorAfterForwarding]);

    let run = reconciler_via(&moto, &proxy.url, "4", &["apply", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(
        counts(&c, STACK).await,
        Counts { vpcs: 1, subnets: 4, igws: 1, eips: 2, nats: 2, route_tables: 3, security_groups: 3 },
        "exactly one of everything, although creates were answered with 500 after taking effect\n{run}"
    );
    assert_eq!(proxy.count("ec2:CreateVpc"), 1, "the VPC was found by its tags, not created again");
    assert_eq!(proxy.count("ec2:CreateNatGateway"), 2, "one per AZ, none repeated");
    assert_eq!(proxy.count("ec2:CreateSubnet"), 6, "4 subnets + 2 throttled calls");
    assert!(run.stderr.contains("observing again and retrying"), "{run}");
    let sg = security_group(&c, "sg-service").await;
    let rules = c.describe_security_group_rules().filters(Filter::builder().name("group-id").values(&sg).build()).send().await.unwrap();
    assert_eq!(rules.security_group_rules().iter().filter(|r| r.from_port() == Some(8080)).count(), 1);
    assert_converged(&moto, "specs/prod.yaml");
}

/// Right after CreateVpc, EC2 may not know the new VPC yet: the waiter and the dependent
/// creates keep going instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventual_consistency_after_create_is_waited_out() {
    use fault_proxy::{Fault, FaultProxy};
    let moto = Moto::start();
    let c = ec2(&moto).await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    proxy.inject("ec2:ModifyVpcAttribute", &[Fault::NotYetVisible]);
    proxy.inject("ec2:CreateSubnet", &[Fault::NotYetVisible, Fault::NotYetVisible]);
    proxy.inject("ec2:CreateSecurityGroup", &[Fault::NotYetVisible]);
    let run = reconciler_via(&moto, &proxy.url, "4", &["apply", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(counts(&c, STACK).await, Counts { vpcs: 1, subnets: 4, igws: 1, eips: 2, nats: 2, route_tables: 3, security_groups: 3 });
    assert_converged(&moto, "specs/prod.yaml");
}

/// A validation error is final: tried once, reported with AWS's code and message, exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors_are_not_retried() {
    use fault_proxy::{Fault, FaultProxy};
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    proxy.inject("ec2:CreateVpc", &[Fault::Validation]);
    let run = reconciler_via(&moto, &proxy.url, "5", &["apply", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(proxy.count("ec2:CreateVpc"), 1, "no retry of a validation error\n{run}");
    assert!(run.stderr.contains("InvalidParameterValue") && run.stderr.contains("CreateVpc"), "{run}");
    assert!(run.stderr.contains("run apply again"), "the error says what to do\n{run}");
    // Independent work finished; nothing that depends on the VPC was attempted.
    assert_eq!(proxy.count("ec2:CreateSubnet"), 0);
}

/// Retries are bounded: a call that keeps failing gives up after the configured attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_bounded() {
    use fault_proxy::{Fault, FaultProxy};
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    proxy.inject("ec2:DescribeSubnets", &[Fault::Throttle; 10]);
    let run = reconciler_via(&moto, &proxy.url, "3", &["plan", "specs/prod.yaml"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("RequestLimitExceeded"), "{run}");
    assert_eq!(proxy.count("ec2:DescribeSubnets"), 3, "3 attempts, then the error");
}

/// A process that calls only `http://` endpoints (the emulator here) sets up no TLS: it does
/// not load the system's root certificates, which cost about a quarter of a no-op plan's CPU
/// in a debug build. The certificate store is pointed at an empty file: building the TLS
/// connector would trip the SDK's check that some root was found (a panic where the SDK is
/// built with debug assertions, as in these tests), the SDK's client validation included.
#[tokio::test]
async fn a_process_that_calls_only_http_endpoints_loads_no_root_certificates() {
    let moto = Moto::start();
    let empty = std::env::temp_dir().join(format!("no-roots-{}", moto.port));
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("roots.pem"), "").unwrap();
    let mut plan = cli::command(&moto, &moto.endpoint, "1");
    plan.args(["plan", "specs/prod.yaml"]).env("SSL_CERT_FILE", empty.join("roots.pem")).env("SSL_CERT_DIR", &empty);
    // A proxy may need TLS, so with one configured the TLS client is set up; not the case here.
    for v in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"] {
        plan.env_remove(v);
    }
    let out = plan.output().unwrap();
    let run = support::Run::from(out);
    assert!(!run.stderr.contains("panicked"), "{run}");
    assert!(run.stdout.contains("43 to create"), "the plan from zero, made without TLS\n{run}");
}

/// A saved plan is applied as reviewed, and refused once live state changed since.
#[tokio::test]
async fn a_saved_plan_is_applied_only_while_nothing_changed() {
    let moto = Moto::start();
    let c = ec2(&moto).await;
    let dir = std::env::temp_dir().join(format!("saved-plan-{}", moto.port));
    std::fs::create_dir_all(&dir).unwrap();
    let first = dir.join("first.json");
    let first = first.to_str().unwrap();

    let plan = reconciler(&moto, &["plan", "specs/prod.yaml", "--out", first]);
    assert_eq!(plan.code, 0, "{plan}");
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(first).unwrap()).unwrap();
    assert_eq!(saved["fingerprint"].as_str().unwrap().len(), 16);
    let run = reconciler(&moto, &["apply", "specs/prod.yaml", "--plan", first]);
    assert_eq!(run.code, 0, "a reviewed plan needs no --auto-approve\n{run}");
    assert_eq!(counts(&c, STACK).await.vpcs, 1);

    // Reviewed against one state, then someone changes the live stack: refused, untouched.
    let second = dir.join("second.json");
    let second = second.to_str().unwrap();
    assert_eq!(reconciler(&moto, &["plan", "specs/prod.yaml", "--out", second]).code, 0);
    let sg = security_group(&c, "sg-service").await;
    c.authorize_security_group_ingress().group_id(&sg).ip_permissions(ssh_from_anywhere()).send().await.unwrap();
    let run = reconciler(&moto, &["apply", "specs/prod.yaml", "--plan", second]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("changed since") && run.stderr.contains("nothing was applied"), "{run}");
    let plan = reconciler(&moto, &["plan", "specs/prod.yaml", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "the refused apply must not have corrected anything\n{plan}");
    // The stale plan from before the first apply is refused too.
    assert_eq!(reconciler(&moto, &["apply", "specs/prod.yaml", "--plan", first]).code, 1);
}

/// `reconciler run ARGS --jitter 0` against moto, and a reader of its JSON status lines.
fn spawn_run(moto: &Moto, args: &[&str]) -> (std::process::Child, impl FnMut() -> serde_json::Value) {
    use std::io::{BufRead, BufReader};
    let mut child = cli::command(moto, &moto.endpoint, "1")
        .arg("run")
        .args(args)
        .args(["--jitter", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let next = move || -> serde_json::Value { serde_json::from_str(&lines.next().expect("a status line").unwrap()).unwrap() };
    (child, next)
}

/// `run` converges, reports in_sync, notices drift made while it runs, corrects it, and
/// says what it changed: one JSON line per iteration. Synchronised on the status lines, not on
/// timing: the drift is made after an in_sync line, and the passes that follow may be in_sync
/// (they ran before the drift landed) until one corrects it; a pass that corrects anything
/// else, or no correction within 10 passes, fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_mode_corrects_drift_while_running() {
    let moto = Moto::start();
    let c = ec2(&moto).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let (mut child, mut next) = spawn_run(&moto, &["specs/prod.yaml", "--interval", "0.2", "--metrics-addr", &metrics_addr]);
    let first = next();
    assert_eq!(first["result"], "corrected", "{first}");
    assert_eq!(first["changes"].as_array().unwrap().len(), 43);
    let created = |kind: &str| first["changes"].as_array().unwrap().iter().filter(|c| c["kind"] == kind).count();
    let second = next();
    assert_eq!(second["result"], "in_sync", "{second}");
    // A pass that started before the drift landed may still be in sync: the correction comes in
    // one of the next passes (10 at most here, usually the first or second).
    let mut corrected_within = |what: &str| -> serde_json::Value {
        for _ in 0..10 {
            let line = next();
            match line["result"].as_str() {
                Some("in_sync") => continue,
                Some("corrected") => return line,
                _ => panic!("unexpected pass: {line}"),
            }
        }
        panic!("{what} was not corrected within 10 passes");
    };
    // Drift while it runs: an opened port.
    let sg = security_group(&c, "sg-service").await;
    c.authorize_security_group_ingress().group_id(&sg).ip_permissions(ssh_from_anywhere()).send().await.unwrap();
    let corrected = corrected_within("the opened port");
    assert_eq!(
        corrected["changes"],
        serde_json::json!([{"kind": "ec2:security-group", "id": "sg-service", "action": "update", "fields": ["ingress"], "cause": "drift"}])
    );
    // And a changed log retention.
    let logs = aws_sdk_cloudwatchlogs::Client::new(&moto.sdk_config().await);
    logs.put_retention_policy().log_group_name(format!("/ecs/{STACK}")).retention_in_days(1).send().await.unwrap();
    let corrected = corrected_within("the changed retention");
    assert_eq!(
        corrected["changes"],
        serde_json::json!([{"kind": "logs:log-group", "id": "log-container", "action": "update", "fields": ["retention_days"], "cause": "drift"}])
    );
    assert_eq!(next()["result"], "in_sync", "corrected once, then in sync");

    // The metrics show both corrections (on top of the creations of the first pass).
    let http = reqwest::Client::new();
    let metrics = http.get(format!("http://{metrics_addr}/metrics")).send().await.unwrap().text().await.unwrap();
    for line in [
        format!(r#"reconciler_corrections_total{{kind="ec2:security-group"}} {}"#, created("ec2:security-group") + 1),
        format!(r#"reconciler_corrections_total{{kind="logs:log-group"}} {}"#, created("logs:log-group") + 1),
        r#"reconciler_passes_total{result="corrected"} 3"#.to_string(),
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing `{line}` in\n{metrics}");
    }
    assert!(metrics.contains(r#"reconciler_aws_calls_total{service="EC2",action="DescribeSecurityGroups"}"#), "{metrics}");
    assert!(metrics.contains("reconciler_last_success_timestamp_seconds"), "{metrics}");
    let health = http.get(format!("http://{metrics_addr}/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(child.wait().unwrap().success(), "SIGTERM ends run with exit 0");
}

/// `apply --detailed-exitcode` tells a scheduler what happened (2 changes applied, 0 nothing to
/// do); `run --plan-only` reports drift and changes nothing; `run` reads the spec file again
/// at every pass: an invalid edit is an error pass (the run goes on), a valid edit shows on the
/// next pass. Synchronised on the status lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_plan_only_reports_and_rereads_the_spec_each_pass() {
    let moto = Moto::start();
    let c = ec2(&moto).await;
    let dir = std::env::temp_dir().join(format!("rerun-{}", moto.port));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("prod.yaml");
    let original = std::fs::read_to_string(repo_root().join("specs/prod.yaml")).unwrap();
    std::fs::write(&spec, &original).unwrap();
    let spec_arg = spec.to_str().unwrap();
    let run = reconciler(&moto, &["apply", spec_arg, "--auto-approve", "--detailed-exitcode"]);
    assert_eq!(run.code, 2, "changes applied\n{run}");
    let run = reconciler(&moto, &["apply", spec_arg, "--auto-approve", "--detailed-exitcode"]);
    assert_eq!(run.code, 0, "nothing to do\n{run}");
    // status: every resource Ready and Synced, nothing drifted.
    let status = |moto: &Moto| -> serde_json::Value {
        let out = reconciler(moto, &["status", spec_arg, "--format", "json"]);
        assert_eq!(out.code, 0, "{out}");
        serde_json::from_str(&out.stdout).unwrap()
    };
    let condition = |s: &serde_json::Value, id: &str, kind: &str| -> serde_json::Value {
        let r = s["resources"].as_array().unwrap().iter().find(|r| r["id"] == id).unwrap_or_else(|| panic!("{id} in {s}"));
        r["conditions"].as_array().unwrap().iter().find(|c| c["type"] == kind).unwrap().clone()
    };
    let after_apply = status(&moto);
    assert_eq!(after_apply["healthy"], true, "{after_apply}");
    for r in after_apply["resources"].as_array().unwrap() {
        let statuses: Vec<&str> = r["conditions"].as_array().unwrap().iter().map(|c| c["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, ["True", "True", "False"], "Ready, Synced, not Drifted: {r}");
    }

    let (mut child, mut next) = spawn_run(&moto, &[spec_arg, "--plan-only", "--interval", "200ms"]);
    let mut wait_for = |want: &str, what: &str| -> serde_json::Value {
        for _ in 0..20 {
            let line = next();
            if line["result"] == want {
                return line;
            }
        }
        panic!("no `{want}` pass within 20 passes ({what})");
    };
    assert_eq!(wait_for("in_sync", "after apply")["changes"], serde_json::json!([]));

    // Drift: reported, not corrected.
    let sg = security_group(&c, "sg-service").await;
    c.authorize_security_group_ingress().group_id(&sg).ip_permissions(ssh_from_anywhere()).send().await.unwrap();
    let drifted = wait_for("drifted", "an opened port");
    assert_eq!(
        drifted["changes"],
        serde_json::json!([{"kind": "ec2:security-group", "id": "sg-service", "action": "update", "fields": ["ingress"], "cause": "drift"}])
    );
    let now = status(&moto);
    let d = condition(&now, "sg-service", "Drifted");
    assert_eq!((d["status"].as_str(), d["reason"].as_str()), (Some("True"), Some("ChangedOutsideSpec")), "{now}");
    assert!(d["message"].as_str().unwrap().contains("ingress"), "the field is named: {d}");
    assert_eq!(condition(&now, "sg-service", "Synced")["status"], "False");
    assert_eq!(condition(&now, "sg-service", "Ready")["status"], "True");
    assert_eq!(now["healthy"], false);

    // An invalid edit: an error pass naming the file, and the run goes on.
    std::fs::write(&spec, "name: [unclosed\n").unwrap();
    let error = wait_for("error", "an invalid spec");
    assert!(error["error"].as_str().unwrap().contains("was edited and is not valid"), "{error}");

    // A valid edit takes effect on the next pass.
    std::fs::write(&spec, original.replacen("retention_days: 30", "retention_days: 14", 1)).unwrap();
    let edited = wait_for("drifted", "the edited spec");
    let changes = edited["changes"].as_array().unwrap();
    // Told apart from drift: the spec asks for something else than what was last applied (the
    // `reconciler:applied` tag changes with it).
    assert!(
        changes.iter().any(|c| c["kind"] == "logs:log-group"
            && c["fields"] == serde_json::json!(["retention_days", "tags"])
            && c["cause"] == "spec_changed"),
        "the edited retention shows as a spec change: {edited}"
    );

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(child.wait().unwrap().success(), "SIGTERM ends run with exit 0");
    // --plan-only changed nothing: the opened port is still there.
    std::fs::write(&spec, &original).unwrap();
    let plan = reconciler(&moto, &["plan", spec_arg, "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{plan}");
    assert!(plan.stdout.contains("sg-service") && plan.stdout.contains("drift: changed outside the spec"), "{plan}");

    // Corrected with JSON logs: one event per corrected field, with before and after.
    let run = reconciler(&moto, &["apply", spec_arg, "--auto-approve", "--log-format", "json"]);
    assert_eq!(run.code, 0, "{run}");
    let events: Vec<serde_json::Value> =
        run.stderr.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let correction = events
        .iter()
        .find(|e| e["event"] == "correction" && e["resource"] == "sg-service")
        .unwrap_or_else(|| panic!("no correction event for sg-service in\n{}", run.stderr));
    assert_eq!((correction["kind"].as_str(), correction["field"].as_str()), (Some("ec2:security-group"), Some("ingress")));
    assert!(correction["before"].as_str().unwrap().contains("tcp 22 0.0.0.0/0"), "{correction}");
    assert!(!correction["after"].as_str().unwrap().contains("tcp 22 0.0.0.0/0"), "{correction}");
    assert!(
        events.iter().any(|e| e["message"].as_str().is_some_and(|m| m.starts_with("updated ec2:security-group sg-service"))),
        "{}",
        run.stderr
    );
    assert_eq!(reconciler(&moto, &["plan", spec_arg, "--detailed-exitcode"]).code, 0);

    // A run that fails ends with one more JSON event, not a line of text.
    let missing = reconciler(&moto, &["plan", "no-such-spec.yaml", "--log-format", "json"]);
    assert_eq!(missing.code, 1, "{missing}");
    let last = missing.stderr.lines().last().unwrap_or_default();
    let event: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: the last line is not JSON: {last}"));
    assert_eq!(event["level"], "ERROR", "{event}");
    assert!(event["error"].as_str().unwrap().contains("no-such-spec.yaml"), "{event}");
}

/// With `lock:` in the spec, a live lease held by someone else stops apply before it touches
/// anything; an expired one (a crashed holder) is taken over; the lease is gone afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_lock_keeps_two_reconcilers_apart() {
    let moto = Moto::start();
    let c = ec2(&moto).await;
    let aws = moto.sdk_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&aws).force_path_style(true).build());
    s3.create_bucket().bucket("locks").send().await.unwrap();
    let dir = std::env::temp_dir().join(format!("lock-{}", moto.port));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("locked.yaml");
    let text = std::fs::read_to_string(repo_root().join("specs/prod.yaml"))
        .unwrap()
        .replace("lock:\n  bucket: benchling-webhook-ops\n", "lock:\n  bucket: locks\n");
    std::fs::write(&spec, text).unwrap();
    let spec = spec.to_str().unwrap();
    let key = "reconciler/benchling-webhook.lock";
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let put = |expires: u64| {
        let body = serde_json::json!({"stack": STACK, "holder": "ci-runner-7", "acquired_at": now - 10, "expires_at": expires}).to_string();
        s3.put_object().bucket("locks").key(key).body(body.into_bytes().into()).send()
    };

    put(now + 600).await.unwrap();
    let run = reconciler(&moto, &["apply", spec, "--auto-approve"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("locked by ci-runner-7"), "{run}");
    assert_eq!(counts(&c, STACK).await, Counts::default(), "nothing may change while another holds the lock");

    put(now - 1).await.unwrap(); // the holder crashed; its lease ran out
    let run = reconciler(&moto, &["apply", spec, "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stderr.contains("taking over an expired lock from ci-runner-7"), "{run}");
    assert_eq!(counts(&c, STACK).await.vpcs, 1);
    assert!(s3.get_object().bucket("locks").key(key).send().await.is_err(), "the lease is released after apply");

    // plan needs no lock; destroy takes it too.
    put(now + 600).await.unwrap();
    assert_eq!(reconciler(&moto, &["plan", spec]).code, 0);
    assert_eq!(reconciler(&moto, &["destroy", spec, "--auto-approve"]).code, 1);
    assert_eq!(counts(&c, STACK).await.vpcs, 1, "destroy waited for the lock");
}

/// Tags other tools put on the stack's resources: with `ignore_tags` they are neither drift
/// nor removed; without it they are drift (and removed by apply).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_tags_are_neither_drift_nor_removed() {
    let moto = Moto::start();
    let c = ec2(&moto).await;
    let spec =
        cli::spec_variant(&moto, "specs/prod.yaml", "ignore.yaml", |s| s.replace("network:\n", "ignore_tags: [\"scanner:*\"]\nnetwork:\n"));
    assert_eq!(reconciler(&moto, &["apply", &spec, "--auto-approve"]).code, 0);
    let vpc = c.describe_vpcs().filters(tag_filter("reconciler:id", "vpc")).send().await.unwrap().vpcs()[0].vpc_id().unwrap().to_string();
    c.create_tags().resources(&vpc).tags(Tag::builder().key("scanner:last-run").value("today").build()).send().await.unwrap();
    assert_converged(&moto, &spec);
    assert_eq!(reconciler(&moto, &["apply", &spec, "--auto-approve"]).code, 0);
    let tags = c.describe_vpcs().vpc_ids(&vpc).send().await.unwrap().vpcs()[0].tags().to_vec();
    assert!(tags.iter().any(|t| t.key() == Some("scanner:last-run")), "an ignored tag must not be removed");
    // The same tag is drift for a spec that does not ignore it.
    let plan = reconciler(&moto, &["plan", "specs/prod.yaml", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{plan}");
    assert!(plan.stdout.contains("tags.scanner:last-run: today -> (unset)"), "{plan}");
}

/// The live NAT gateway (not deleted) with logical id `id`, and its allocation id.
async fn live_nat_gateway(c: &Client, id: &str) -> (String, String) {
    let out = c.describe_nat_gateways().send().await.unwrap();
    let n = out
        .nat_gateways()
        .iter()
        .filter(|n| !matches!(n.state(), Some(NatGatewayState::Deleted | NatGatewayState::Deleting)))
        .find(|n| n.tags().iter().any(|t| t.key() == Some("reconciler:id") && t.value() == Some(id)))
        .unwrap_or_else(|| panic!("no live NAT gateway {id}"));
    (n.nat_gateway_id().unwrap().to_string(), n.nat_gateway_addresses()[0].allocation_id().unwrap().to_string())
}

/// Where `logical` (a route table) sends 0.0.0.0/0.
async fn default_route(c: &Client, logical: &str) -> String {
    let out = c.describe_route_tables().filters(tag_filter("reconciler:id", logical)).send().await.unwrap();
    let rt = &out.route_tables()[0];
    let r = rt.routes().iter().find(|r| r.destination_cidr_block() == Some("0.0.0.0/0")).expect("a default route");
    r.nat_gateway_id().or(r.gateway_id()).unwrap().to_string()
}

/// A NAT gateway whose Elastic IP changed is replaced create-before-destroy: the new one
/// exists and the private route points at it before the old one is deleted, so egress never
/// stops. (The EIP is swapped out of band: its tags moved to a new address.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nat_gateway_is_replaced_before_the_old_one_goes() {
    let moto = applied("specs/prod.yaml");
    let c = ec2(&moto).await;
    let (old_nat, old_alloc) = live_nat_gateway(&c, "nat-1").await;
    assert_eq!(default_route(&c, "rt-private-1").await, old_nat);

    cli::replace_stack_address(&c, &old_alloc).await;

    let plan = reconciler(&moto, &["plan", "specs/prod.yaml", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{plan}");
    assert!(plan.stdout.contains("-/+ ec2:nat-gateway nat-1") && plan.stdout.contains("`allocation` cannot change in place"), "{plan}");
    let run = reconciler(&moto, &["apply", "specs/prod.yaml", "--auto-approve", "--allow-destructive"]);
    assert_eq!(run.code, 0, "{run}");
    let at = |needle: &str| run.stderr.find(needle).unwrap_or_else(|| panic!("`{needle}` not in the progress\n{run}"));
    let created = at("created ec2:nat-gateway nat-1");
    let repointed = at("updated ec2:route-table rt-private-1 (routes)");
    let deleted = at(&format!("deleting ec2:nat-gateway nat-1 [{old_nat}]"));
    assert!(created < repointed && repointed < deleted, "create, repoint, then delete\n{run}");
    let (new_nat, new_alloc) = live_nat_gateway(&c, "nat-1").await;
    assert_ne!(new_nat, old_nat);
    assert_ne!(new_alloc, old_alloc);
    assert_eq!(default_route(&c, "rt-private-1").await, new_nat);
    assert_converged(&moto, "specs/prod.yaml");
}

/// Moving a stack to another existing VPC would replace its security groups
/// create-before-destroy, but also its Cloud Map namespace (bound to the VPC) and so the
/// Cloud Map service, delete-first, under the ECS service registered in it (AWS refuses
/// that delete: `ResourceInUse`). Refused up front, nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_stack_to_another_vpc_is_refused_up_front() {
    let moto = Moto::start();
    let c = ec2(&moto).await;
    let dir = std::env::temp_dir().join(format!("move-{}", moto.port));
    std::fs::create_dir_all(&dir).unwrap();
    let mut specs = Vec::new();
    for (n, cidr) in [(1, "172.31"), (2, "172.30")] {
        let vpc = vpc_tagged(&c, &format!("{cidr}.0.0/16"), &[]).await;
        let mut subnets = Vec::new();
        for (k, az) in [(1, "us-east-1a"), (2, "us-east-1b")] {
            let out = c.create_subnet().vpc_id(&vpc).cidr_block(format!("{cidr}.{k}.0/24")).availability_zone(az).send().await.unwrap();
            subnets.push(out.subnet().unwrap().subnet_id().unwrap().to_string());
        }
        let text = std::fs::read_to_string(repo_root().join("specs/existing-vpc.yaml"))
            .unwrap()
            .replace("vpc-0123456789abcdef0", &vpc)
            .replace("subnet-0123456789abcdef0", &subnets[0])
            .replace("subnet-0fedcba9876543210", &subnets[1]);
        let p = dir.join(format!("vpc-{n}.yaml"));
        std::fs::write(&p, text).unwrap();
        specs.push((vpc, p.to_str().unwrap().to_string()));
    }
    let run = reconciler(&moto, &["apply", &specs[0].1, "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    let old_sg = security_group(&c, "sg-service").await;

    let run = reconciler(&moto, &["apply", &specs[1].1, "--auto-approve", "--allow-destructive"]);
    assert_ne!(run.code, 0, "{run}");
    assert!(run.stderr.contains("refusing to apply") && run.stderr.contains("namespace"), "{run}");
    assert!(run.stderr.contains("ecs:service service still uses `discovery-service`"), "{run}");
    assert_eq!(security_group(&c, "sg-service").await, old_sg, "nothing changed");
    assert_converged(&moto, &specs[0].1);
}

/// Replacing the whole network (a new VPC CIDR, with --allow-destructive): the VPC, its
/// subnets and everything in them go delete-first, while the internet gateway and the ECS
/// service stay in place and still use them (on AWS the deletes fail: DependencyViolation).
/// The plan says so, and attributes the cascaded changes to the replacement they follow (not
/// to drift); apply refuses before changing anything, saying what to do instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_whole_network_is_refused_up_front_with_the_steps() {
    let moto = applied("specs/prod.yaml");
    let c = ec2(&moto).await;
    let vpc = c.describe_vpcs().filters(Filter::builder().name("tag:reconciler:id").values("vpc").build()).send().await.unwrap().vpcs()[0]
        .vpc_id()
        .unwrap()
        .to_string();
    let moved = cli::spec_variant(&moto, "specs/prod.yaml", "moved.yaml", |s| s.replace("cidr: 10.0.0.0/16", "cidr: 10.1.0.0/16"));

    let plan = reconciler(&moto, &["plan", &moved, "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{plan}");
    assert!(
        plan.stdout.contains("~ ec2:internet-gateway igw") && plan.stdout.contains("update; follows the replacement of ec2:vpc vpc"),
        "{plan}"
    );
    assert!(
        plan.stdout.contains("ec2:nat-gateway nat-1") && plan.stdout.contains("follows the replacement of ec2:subnet subnet-public-1"),
        "{plan}"
    );
    assert!(!plan.stdout.contains("drift: changed outside the spec"), "a spec change is not drift\n{plan}");
    assert!(plan.stdout.contains("apply refuses this plan") && plan.stdout.contains("ec2:internet-gateway igw still uses `vpc`"), "{plan}");

    let run = reconciler(&moto, &["apply", &moved, "--auto-approve", "--allow-destructive"]);
    assert_ne!(run.code, 0, "{run}");
    assert!(run.stderr.contains("refusing to apply") && run.stderr.contains("Nothing was changed"), "{run}");
    assert!(run.stderr.contains("reconciler destroy") && run.stderr.contains("second stack"), "says what to do\n{run}");
    let still = c.describe_vpcs().vpc_ids(&vpc).send().await.unwrap();
    assert_eq!(still.vpcs().len(), 1, "the old VPC is still there");
    assert_converged(&moto, "specs/prod.yaml");
}
