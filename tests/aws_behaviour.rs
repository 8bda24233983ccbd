//! The reconciler under AWS's behaviour, scripted in the fault proxy (moto itself answers at
//! once and never says "not yet"): throttling that costs one call, not a whole observe;
//! `Retry-After`; IAM propagation retried until its deadline, not for a few attempts; a create
//! whose answer is lost while listings lag, which must not become a duplicate. Durations are
//! scaled down (seconds), and so are the reconciler's deadlines. Each test owns its moto server.

use crate::{cli, fault_proxy, support};

use fault_proxy::{ecs_deployments, ecs_service_draining, first_apply_model, iam_propagation, nat_gateways_deleting};

use cli::{applied, assert_converged};
use fault_proxy::{FaultProxy, Rule};
use std::process::Stdio;
use std::time::Duration;
use support::{Moto, Run};

const STACK: &str = "benchling-webhook";

/// The CLI through the proxy, with the scaled-down settings plus `extra` environment.
fn reconciler(moto: &Moto, proxy: &FaultProxy, extra: &[(&str, &str)], args: &[&str]) -> Run {
    let mut c = cli::command(moto, &proxy.url, "4");
    c.env("RECONCILER_PROPAGATION_TIMEOUT", "30").env("RECONCILER_CONFLICT_TIMEOUT", "30").envs(extra.iter().copied()).args(args);
    Run::from(c.output().expect("run reconciler"))
}

/// `args` (a plan) while `call` answers 500 every time, tried twice; the proxy's faults and
/// counts cleared first.
fn plan_while_failing(moto: &Moto, proxy: &FaultProxy, call: &str, args: &[&str]) -> Run {
    proxy.clear_faults();
    proxy.rule(Rule::server_error(call));
    proxy.reset_counts();
    reconciler(moto, proxy, &[("RECONCILER_MAX_ATTEMPTS", "2")], args)
}

fn iam_calls(proxy: &FaultProxy) -> usize {
    proxy.calls().iter().filter(|c| c.starts_with("iam:")).count()
}

async fn owned_vpcs(moto: &Moto) -> usize {
    let ec2 = aws_sdk_ec2::Client::new(&moto.sdk_config().await);
    let f = aws_sdk_ec2::types::Filter::builder().name("tag:reconciler:stack").values(STACK).build();
    ec2.describe_vpcs().filters(f).send().await.unwrap().vpcs().len()
}

/// The model itself: listing lag cuts the right items out of EC2 XML and JSON listings, and
/// only mutations count for the kill hook.
#[test]
fn the_model_hides_listed_items_and_knows_mutations() {
    let xml = "<DescribeVpcsResponse><vpcSet><item><vpcId>vpc-1</vpcId><tagSet><item><key>a</key></item></tagSet></item><item><vpcId>vpc-2</vpcId></item></vpcSet></DescribeVpcsResponse>";
    let out = fault_proxy::without_id(xml, "vpc-1");
    assert_eq!(out, "<DescribeVpcsResponse><vpcSet><item><vpcId>vpc-2</vpcId></item></vpcSet></DescribeVpcsResponse>");
    let json = r#"{"Items":[{"VpcLinkId":"abc"},{"VpcLinkId":"def"}],"NextToken":null}"#;
    let out = fault_proxy::without_id(json, "abc");
    assert!(!out.contains("abc") && out.contains("def"), "{out}");
    assert_eq!(fault_proxy::field_value("<x><vpcId>vpc-9</vpcId></x>", "vpcId").as_deref(), Some("vpc-9"));
    assert_eq!(fault_proxy::field_value(r#"{"VpcLinkId": "q1w2"}"#, "VpcLinkId").as_deref(), Some("q1w2"));
    assert!(fault_proxy::is_mutation("ec2:CreateVpc") && fault_proxy::is_mutation("apigateway:POST /vpclinks"));
    assert!(!fault_proxy::is_mutation("ec2:DescribeVpcs") && !fault_proxy::is_mutation("apigateway:GET /vpclinks"));
}

/// IAM's batch read, as the proxy names it.
const BATCH: &str = "iam:GetAccountAuthorizationDetails";

/// What an organisation that denies GetAccountAuthorizationDetails (it shows every role's
/// policies) answers.
fn authorization_details_denied() -> Rule {
    Rule::error(
        "iam:GetAccountAuthorizationDetails",
        403,
        "AccessDenied",
        "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: iam:GetAccountAuthorizationDetails on resource: *",
    )
}

/// IAM's whole read is one GetAccountAuthorizationDetails (it was ListRoles and three calls
/// per role). Where the credentials may not make it, or it fails, the roles are read one by
/// one: the same plan, the fallback said on stderr, and drift in an inline policy seen either
/// way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_is_read_in_one_call_or_role_by_role_where_that_call_is_denied() {
    let moto = applied("specs/prod.yaml");
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let plan = ["plan", "specs/prod.yaml", "--detailed-exitcode"];
    let batched = reconciler(&moto, &proxy, &[], &plan);
    assert_eq!(batched.code, 0, "{batched}");
    assert_eq!(proxy.calls().iter().filter(|c| c.starts_with("iam:")).collect::<Vec<_>>(), ["iam:GetAccountAuthorizationDetails"]);

    proxy.reset_counts();
    proxy.rule(authorization_details_denied());
    let each = reconciler(&moto, &proxy, &[], &plan);
    assert_eq!(each.code, 0, "{each}");
    assert_eq!(each.stdout, batched.stdout);
    assert!(each.stderr.contains("GetAccountAuthorizationDetails is denied"), "{each}");
    assert_eq!((proxy.count("iam:ListRoles"), proxy.count("iam:GetRole")), (1, 5), "{:?}", proxy.calls());
    // Any other failure of the batch is no reason to fail the pass either.
    let failed = plan_while_failing(&moto, &proxy, "iam:GetAccountAuthorizationDetails", &plan);
    assert_eq!((failed.code, &failed.stdout), (0, &batched.stdout), "{failed}");
    assert!(failed.stderr.contains("GetAccountAuthorizationDetails failed"), "{failed}");
    assert_eq!(proxy.count("iam:GetAccountAuthorizationDetails"), 2, "tried as any read is, then given up for the pass");
    assert_eq!((proxy.count("iam:ListRoles"), proxy.count("iam:GetRole")), (1, 5), "{:?}", proxy.calls());
    // An answer asking again cannot change (here a validation error) is remembered for the
    // process, as a refusal is: a long-running `run` asks once; a 500 is asked again each pass.
    let passes = ["run", "specs/prod.yaml", "--plan-only", "--iterations", "2", "--interval", "100ms"];
    for (rule, asked) in [(Rule::error(BATCH, 400, "ValidationError", "not today"), 1), (Rule::server_error(BATCH), 2)] {
        proxy.clear_faults();
        proxy.rule(rule);
        proxy.reset_counts();
        let run = reconciler(&moto, &proxy, &[("RECONCILER_MAX_ATTEMPTS", "1")], &passes);
        assert_eq!(run.stdout.lines().count(), 2, "{run}");
        assert_eq!((proxy.count(BATCH), proxy.count("iam:ListRoles")), (asked, 2), "{:?}", proxy.calls());
    }

    let iam = aws_sdk_iam::Client::new(&moto.sdk_config().await);
    let doc = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
    iam.put_role_policy().role_name("benchling-webhook-task").policy_name("by-hand").policy_document(doc).send().await.unwrap();
    // A role of the stack's left over under a sub-path of its path is found to be pruned.
    let tag = |k: &str, v: &str| aws_sdk_iam::types::Tag::builder().key(k).value(v).build().unwrap();
    iam.create_role()
        .role_name("benchling-webhook-old")
        .path(format!("/reconciler/{STACK}/old/"))
        .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[]}"#)
        .tags(tag("reconciler:stack", STACK))
        .tags(tag("reconciler:id", "role-old"))
        .send()
        .await
        .unwrap();
    for denied in [true, false] {
        proxy.clear_faults();
        if denied {
            proxy.rule(authorization_details_denied());
        }
        let drift = reconciler(&moto, &proxy, &[], &plan);
        assert_eq!(drift.code, 2, "denied: {denied}\n{drift}");
        assert!(drift.stdout.contains("iam:role role-task") && drift.stdout.contains("policies"), "denied: {denied}\n{drift}");
        assert!(drift.stdout.contains("- iam:role role-old"), "denied: {denied}\n{drift}");
    }
}

/// A spec that does not allow the account-wide reads (`account_wide_reads: false`, for an
/// organisation that will not grant them) never makes them, in apply or plan: IAM is read role
/// by role, tags resource by resource, the plan is the same no-op, and nothing is said of a
/// refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_that_does_not_allow_account_wide_reads_never_makes_them() {
    let moto = applied("specs/prod.yaml");
    let spec = cli::spec_variant(&moto, "specs/prod.yaml", "no-account-reads.yaml", |s| s + "\naccount_wide_reads: false\n");
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let batches = |p: &FaultProxy| (p.count("iam:GetAccountAuthorizationDetails"), p.count("tagging:GetResources"));
    let apply = reconciler(&moto, &proxy, &[], &["apply", &spec, "--auto-approve"]);
    assert_eq!(apply.code, 0, "{apply}");
    assert_eq!(batches(&proxy), (0, 0), "{:?}", proxy.calls());
    proxy.reset_counts();
    let plan = reconciler(&moto, &proxy, &[], &["plan", &spec, "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{plan}");
    assert_eq!(batches(&proxy), (0, 0), "{:?}", proxy.calls());
    let fallbacks = ["iam:ListRoles", "iam:GetRole", "logs:ListTagsForResource", "sqs:ListQueueTags"].map(|c| proxy.count(c));
    assert_eq!(fallbacks, [1, 5, 3, 2], "{:?}", proxy.calls());
    assert!(!plan.stderr.contains("denied") && !plan.stderr.contains("failed"), "{plan}");
}

/// IAM is eventually consistent: GetAccountAuthorizationDetails can miss a role created a
/// moment ago (the proxy hides the task role from it). That wanted role is looked up by name
/// (GetRole, then its inline policies, since it is there and ours): the plan is a no-op, not a
/// create that CreateRole would refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_the_batch_does_not_show_yet_is_looked_up_by_name() {
    let moto = applied("specs/prod.yaml");
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let shown = format!("<Path>/reconciler/{STACK}/</Path><RoleName>benchling-webhook-task</RoleName>");
    proxy.rule(Rule::rewrite("iam:GetAccountAuthorizationDetails", &shown, "<Path>/elsewhere/</Path><RoleName>hidden</RoleName>"));
    let plan = reconciler(&moto, &proxy, &[], &["plan", "specs/prod.yaml", "--detailed-exitcode"]);
    assert_eq!(proxy.injected("iam:GetAccountAuthorizationDetails"), 1, "the role was hidden from the batch\n{plan}");
    assert_eq!(plan.code, 0, "{plan}");
    let by_name = ["iam:GetRole", "iam:ListRolePolicies", "iam:GetRolePolicy", "iam:ListRoles"].map(|a| proxy.count(a));
    assert_eq!(by_name, [1, 1, 1, 0], "{:?}", proxy.calls());
}

/// Log groups and queues list without their tags: the pass's one tag:GetResources stands in
/// for a tag read each (five for prod). The batch only confirms a resource that is in every
/// field as wanted: a tag changed by hand on a log group, an attribute changed by hand on a
/// queue, and that resource's tags are read from its service, and the drift shown. Where
/// GetResources is denied, every tag is read on its own and the plan is the same. Destroy's
/// observation never uses the batch. (A no-op plan also skips the region's zones: the stack's
/// subnets place them all.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_of_log_groups_and_queues_come_from_one_batch_that_only_confirms() {
    let moto = applied("specs/prod.yaml");
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let plan = ["plan", "specs/prod.yaml", "--detailed-exitcode"];
    let tag_reads = |p: &FaultProxy| (p.count("tagging:GetResources"), p.count("logs:ListTagsForResource"), p.count("sqs:ListQueueTags"));
    let quiet = reconciler(&moto, &proxy, &[], &plan);
    assert_eq!(quiet.code, 0, "{quiet}");
    assert_eq!(tag_reads(&proxy), (1, 0, 0), "{:?}", proxy.calls());
    assert_eq!(proxy.count("ec2:DescribeAvailabilityZones"), 0, "{:?}", proxy.calls());

    let conf = moto.sdk_config().await;
    let logs = aws_sdk_cloudwatchlogs::Client::new(&conf);
    let group = logs.describe_log_groups().log_group_name_prefix(format!("/ecs/{STACK}")).send().await.unwrap();
    let arn = group.log_groups()[0].log_group_arn().unwrap().to_string();
    logs.tag_resource().resource_arn(&arn).tags("team", "by-hand").send().await.unwrap();
    let sqs = aws_sdk_sqs::Client::new(&conf);
    let url = sqs.get_queue_url().queue_name(format!("{STACK}-events.fifo")).send().await.unwrap().queue_url().unwrap().to_string();
    sqs.set_queue_attributes()
        .queue_url(&url)
        .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, "45")
        .send()
        .await
        .unwrap();
    proxy.reset_counts();
    let drift = reconciler(&moto, &proxy, &[], &plan);
    assert_eq!(drift.code, 2, "{drift}");
    for (kind, field) in [("~ logs:log-group", "team"), ("~ sqs:queue", "visibility_timeout")] {
        assert!(drift.stdout.contains(kind) && drift.stdout.contains(field), "{kind} {field}\n{drift}");
    }
    assert_eq!(tag_reads(&proxy), (1, 1, 1), "only what the batch does not confirm is read: {:?}", proxy.calls());

    proxy.reset_counts();
    proxy.rule(Rule::error(
        "tagging:GetResources",
        400,
        "AccessDeniedException",
        "User: ci is not authorized to perform: tag:GetResources",
    ));
    let denied = reconciler(&moto, &proxy, &[], &plan);
    assert_eq!((denied.code, &denied.stdout), (2, &drift.stdout), "{denied}");
    assert!(denied.stderr.contains("tag:GetResources is denied"), "{denied}");
    assert_eq!(tag_reads(&proxy), (1, 3, 2), "{:?}", proxy.calls());
    // A long-running `run` asks once: the refusal is remembered for the process.
    proxy.reset_counts();
    let passes = reconciler(&moto, &proxy, &[], &["run", "specs/prod.yaml", "--plan-only", "--iterations", "2", "--interval", "100ms"]);
    assert_eq!(passes.stdout.lines().count(), 2, "{passes}");
    assert_eq!(tag_reads(&proxy), (1, 6, 4), "{:?}", proxy.calls());

    // Any other failure of the batch is no reason to fail the pass.
    let failed = plan_while_failing(&moto, &proxy, "tagging:GetResources", &plan);
    assert_eq!((failed.code, &failed.stdout), (2, &drift.stdout), "{failed}");
    assert!(failed.stderr.contains("tag:GetResources failed"), "{failed}");
    assert_eq!((proxy.count("logs:ListTagsForResource"), proxy.count("sqs:ListQueueTags")), (3, 2), "{:?}", proxy.calls());

    proxy.clear_faults();
    proxy.reset_counts();
    let destroy = reconciler(&moto, &proxy, &[], &["destroy", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(destroy.code, 0, "{destroy}");
    assert_eq!(proxy.count("tagging:GetResources"), 0, "what destroy finds owned it deletes: each answers for its own tags");
}

/// Every third IAM call is throttled during a no-op plan read role by role (the fallback where
/// GetAccountAuthorizationDetails is denied). Each throttled call is sent again on its own, so
/// the plan costs exactly one more call per throttle. (Retrying the whole roles observe
/// instead, ~13 calls, fails every attempt at this rate.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_costs_one_more_call_not_a_whole_observe() {
    let moto = applied("specs/prod.yaml");
    let proxy = FaultProxy::start(&moto.endpoint).await;
    proxy.rule(authorization_details_denied());
    let baseline = reconciler(&moto, &proxy, &[], &["plan", "specs/prod.yaml", "--detailed-exitcode"]);
    assert_eq!(baseline.code, 0, "{baseline}");
    let calm = iam_calls(&proxy);
    assert!(calm >= 10, "the roles observe makes a dozen IAM calls: {calm}");

    proxy.reset_counts();
    proxy.rule(Rule::error("iam:*", 400, "Throttling", "Rate exceeded").every(3));
    let run = reconciler(&moto, &proxy, &[("RECONCILER_MAX_ATTEMPTS", "8")], &["plan", "specs/prod.yaml", "--detailed-exitcode"]);
    assert_eq!(run.code, 0, "{run}");
    let actions: std::collections::BTreeSet<String> = proxy.calls().into_iter().filter(|c| c.starts_with("iam:")).collect();
    // The denial (the first rule, so that call is never throttled) is an injected answer too.
    let throttles = actions.iter().map(|a| proxy.injected(a)).sum::<usize>() - proxy.injected("iam:GetAccountAuthorizationDetails");
    assert!(throttles >= calm / 3, "every third IAM call was throttled: {throttles} of {}", iam_calls(&proxy));
    assert_eq!(iam_calls(&proxy), calm + throttles, "each throttle cost exactly one more call\n{run}");
}

/// A 429 with `Retry-After: 1` is tried again after a second, not after milliseconds; and a
/// plan lists API Gateway's APIs once, for all the kinds that need them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let moto = applied("specs/prod.yaml");
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let links = "apigateway:GET /vpclinks";
    let baseline = reconciler(&moto, &proxy, &[], &["plan", "specs/prod.yaml"]);
    assert_eq!(baseline.code, 0, "{baseline}");
    assert_eq!(proxy.count(links), 1, "one VPC link listing per plan (the test measures its retry)");
    // API Gateway's control plane is rate-limited: its listings are read once per pass and
    // shared by the kinds that need them (four kinds read GetApis).
    assert_eq!(proxy.count("apigateway:GET /apis"), 1, "{:?}", proxy.calls());
    assert!(proxy.count("apigateway:GET /domainnames") <= 1, "{:?}", proxy.calls());

    proxy.reset_counts();
    proxy.rule(Rule::error(links, 429, "TooManyRequestsException", "Too Many Requests").retry_after(1.0).first(1));
    let run = reconciler(&moto, &proxy, &[], &["plan", "specs/prod.yaml", "--detailed-exitcode"]);
    assert_eq!(run.code, 0, "{run}");
    let times = proxy.times(links);
    assert_eq!(times.len(), 2, "throttled once, then answered\n{run}");
    let gap = times[1] - times[0];
    assert!(gap >= Duration::from_millis(950), "Retry-After: 1 was not honoured: retried after {gap:?}");
    assert!(gap < Duration::from_secs(10), "{gap:?}");
}

/// For a few seconds after each role is created, ECS says "Role is not valid", and Scheduler
/// refuses its first six schedule creates as unable to assume the role (IAM propagation).
/// Apply from zero retries those until the propagation deadline, not for `max_attempts` (4
/// here, gone in milliseconds), and converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_propagation_is_retried_until_its_deadline() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    // More refusals than max_attempts (4): only a deadline outlasts them.
    iam_propagation(&proxy, 3.0, 6);
    let run = reconciler(&moto, &proxy, &[], &["apply", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(proxy.injected("ecs:RegisterTaskDefinition") > 4, "the window outlasted max_attempts\n{run}");
    assert!(proxy.injected("scheduler:POST /schedules/*") > 0, "{run}");
    assert_converged(&moto, "specs/prod.yaml");
}

/// CreateVpc takes effect but its answer is lost (the connection drops), and for two seconds
/// DescribeVpcs does not list the new VPC. The reconciler looks again until the listing lag
/// has passed instead of creating a second VPC, and the run ends with exactly one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_to_a_create_makes_no_duplicate_while_listings_lag() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    proxy.rule(Rule::drop_answer("ec2:CreateVpc").first(1));
    proxy.listing_lag("ec2:CreateVpc", "vpcId", "ec2:DescribeVpcs", 2.0);
    let run = reconciler(&moto, &proxy, &[("RECONCILER_LISTING_LAG", "8")], &["apply", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(proxy.injected("ec2:CreateVpc"), 1, "the answer was dropped once");
    assert_eq!(proxy.count("ec2:CreateVpc"), 1, "the VPC was found again, not created twice\n{run}");
    assert_eq!(owned_vpcs(&moto).await, 1);
    assert!(run.stderr.contains("looking for it"), "{run}");
    assert_converged(&moto, "specs/prod.yaml");
}

/// A fresh account has no ECS service-linked role, and the caller is not ECS: CreateCluster
/// answers "Unable to assume the service linked role" until the role exists. The cluster kind
/// creates the role (once), then its create succeeds; the printed apply policy allows exactly
/// that role, for ECS only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_account_gets_the_ecs_service_linked_role() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    proxy.rule(
        Rule::error(
            "ecs:CreateCluster",
            400,
            "InvalidParameterException",
            "Unable to assume the service linked role. Please verify that the ECS service linked role exists.",
        )
        .until("iam:CreateServiceLinkedRole"),
    );
    let run = reconciler(&moto, &proxy, &[], &["apply", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(proxy.count("iam:CreateServiceLinkedRole"), 1, "{run}");
    assert!(proxy.injected("ecs:CreateCluster") >= 1);
    let iam = aws_sdk_iam::Client::new(&moto.sdk_config().await);
    let roles = iam.list_roles().path_prefix("/aws-service-role/ecs.amazonaws.com/").send().await.unwrap();
    assert_eq!(roles.roles().len(), 1, "{:?}", roles.roles());
    assert_converged(&moto, "specs/prod.yaml");

    let out = cli::reconciler(&moto, &["policy", "specs/prod.yaml", "--for", "apply"]);
    let policy: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
    let slr: Vec<&serde_json::Value> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["Action"].to_string().contains("iam:CreateServiceLinkedRole"))
        .filter(|s| s["Condition"]["StringEquals"]["iam:AWSServiceName"] == "ecs.amazonaws.com")
        .collect();
    assert_eq!(slr.len(), 1, "{policy:#}");
    assert!(slr[0]["Resource"].as_str().unwrap().contains("/aws-service-role/ecs.amazonaws.com/"), "{:#}", slr[0]);
}

/// Owned resources of the kinds a create could duplicate, as AWS lists them.
async fn owned_counts(moto: &Moto) -> (usize, usize, usize, usize) {
    let c = moto.sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&c);
    let stack = || aws_sdk_ec2::types::Filter::builder().name("tag:reconciler:stack").values(STACK).build();
    let subnets = ec2.describe_subnets().filters(stack()).send().await.unwrap().subnets().len();
    let groups = ec2.describe_security_groups().filters(stack()).send().await.unwrap().security_groups().len();
    // moto ignores tag filters on DescribeNatGateways: filter here.
    let nats = ec2
        .describe_nat_gateways()
        .send()
        .await
        .unwrap()
        .nat_gateways()
        .iter()
        .filter(|n| n.tags().iter().any(|t| t.key() == Some("reconciler:stack") && t.value() == Some(STACK)))
        .filter(|n| n.state().map(|s| s.as_str()) != Some("deleted"))
        .count();
    let links = aws_sdk_apigatewayv2::Client::new(&c).get_vpc_links().send().await.unwrap().items().len();
    (subnets, groups, nats, links)
}

/// A resource that only waits for AWS gives its slot back (`--concurrency` bounds the steps at
/// work, not the waits): with two slots and both NAT gateways pending for 3 s, the rest of the
/// stack goes on being created meanwhile. Before, the two waits held both slots and nothing
/// else was sent until a NAT gateway was available.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_waiting_for_aws_do_not_hold_up_the_rest() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let secs = 3.0;
    proxy.rule(
        Rule::rewrite("ec2:DescribeNatGateways", "<state>available</state>", "<state>pending</state>")
            .for_secs_after_first("ec2:CreateNatGateway", secs),
    );
    let run = reconciler(&moto, &proxy, &[], &["apply", "specs/prod.yaml", "--auto-approve", "--concurrency", "2"]);
    assert_eq!(run.code, 0, "{run}");
    let nats = proxy.times("ec2:CreateNatGateway");
    assert_eq!(nats.len(), 2, "{run}");
    let (both_pending, first_available) = (nats[1], nats[0] + Duration::from_secs_f64(secs));
    let meanwhile: Vec<String> = proxy
        .timed_calls()
        .into_iter()
        .filter(|(call, at)| fault_proxy::is_mutation(call) && *at > both_pending && *at < first_available)
        .map(|(call, _)| call)
        .collect();
    assert!(meanwhile.len() >= 3, "work went on while both NAT gateways were pending: {meanwhile:?}\n{run}");
    assert_converged(&moto, "specs/prod.yaml");
}

/// A first apply in a fresh account, everything at once, in ONE run: no ECS service-linked
/// role, IAM propagation windows on every service that is handed a role, NAT gateways,
/// the VPC link and the Cloud Map namespace operation reported pending for a while, a lost
/// answer to CreateVpc while DescribeVpcs lags, and API Gateway's control plane rate-limited
/// (429 with Retry-After). The run succeeds, and a plan right after is a no-op.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_apply_in_a_fresh_account_succeeds_in_one_run() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    first_apply_model(&proxy, 1.5, 2.0, 8);
    proxy.rule(Rule::drop_answer("ec2:CreateVpc").first(1));
    proxy.listing_lag("ec2:CreateVpc", "vpcId", "ec2:DescribeVpcs", 2.0);
    proxy.rate_limit("apigateway", 2.0, 2.0, Some(1.0));

    let run = reconciler(
        &moto,
        &proxy,
        &[("RECONCILER_LISTING_LAG", "6"), ("RECONCILER_MAX_ATTEMPTS", "6")],
        &["apply", "specs/prod.yaml", "--auto-approve"],
    );
    assert_eq!(run.code, 0, "{run}");
    for (what, action) in [
        ("the service-linked role was missing", "ecs:CreateCluster"),
        ("ECS could not use a new role", "ecs:RegisterTaskDefinition"),
        ("Scheduler could not assume a new role", "scheduler:POST /schedules/*"),
        ("a NAT gateway was pending", "ec2:DescribeNatGateways"),
        ("the VPC link was pending", "apigateway:POST /vpclinks"),
        ("the namespace operation was in flight", "servicediscovery:GetOperation"),
        ("the CreateVpc answer was lost", "ec2:CreateVpc"),
    ] {
        assert!(proxy.injected(action) > 0, "the scenario did not happen: {what} ({action})\n{run}");
    }
    // (The VPC link's answers are rewritten, not throttled: left out of this count.)
    let apigateway: std::collections::BTreeSet<String> =
        proxy.calls().into_iter().filter(|c| c.starts_with("apigateway:") && !c.contains("vpclinks")).collect();
    let throttled: usize = apigateway.iter().map(|a| proxy.injected(a)).sum();
    assert!(throttled > 0, "API Gateway's rate limit was met\n{run}");
    assert_eq!(proxy.count("ec2:CreateVpc"), 1, "no second VPC\n{run}");
    assert_eq!(owned_vpcs(&moto).await, 1);
    assert_eq!(owned_counts(&moto).await, (4, 3, 2, 1), "(subnets, security groups, NAT gateways, VPC links)\n{run}");
    // Egress before tasks: nothing that starts a task (the service, the schedule) is created
    // before the last route out exists, although the NAT gateways were pending a while.
    let calls = proxy.calls();
    let last_route = calls.iter().rposition(|c| c == "ec2:CreateRoute").expect("routes were created");
    for starter in ["ecs:CreateService", "scheduler:POST /schedules/*"] {
        let first = calls.iter().position(|c| c == starter).unwrap_or_else(|| panic!("{starter} never called"));
        assert!(first > last_route, "{starter} (call {first}) came before the last route out (call {last_route})");
    }
    assert_converged(&moto, "specs/prod.yaml");
}

/// Apply from zero while 15% of all calls are throttled, 5% fail with a 500 (half of those
/// after the call took effect) and 5% lose their answer after taking effect: it converges in
/// one run, with exactly one of everything. (The faults are seeded: the same calls in the same
/// order meet the same faults.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_converges_under_random_faults_with_no_duplicates() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    proxy.seed(0x5eed_2026);
    // Every AWS call, the stack lock's S3 calls too (not moto's own API).
    proxy.rule(Rule::throttle("*").randomly(0.15));
    proxy.rule(Rule::server_error("*").randomly(0.025));
    proxy.rule(Rule::server_error("*").after_forwarding().randomly(0.025));
    proxy.rule(Rule::drop_answer("*").randomly(0.05));
    let run = reconciler(&moto, &proxy, &[("RECONCILER_MAX_ATTEMPTS", "8")], &["apply", "specs/prod.yaml", "--auto-approve"]);
    let injected: usize = {
        let actions: std::collections::BTreeSet<String> = proxy.calls().into_iter().collect();
        actions.iter().map(|a| proxy.injected(a)).sum()
    };
    assert_eq!(run.code, 0, "{injected} faults injected\n{run}");
    assert!(injected >= 20, "the faults happened: {injected}");
    assert_eq!(owned_vpcs(&moto).await, 1, "{run}");
    assert_eq!(owned_counts(&moto).await, (4, 3, 2, 1), "(subnets, security groups, NAT gateways, VPC links)\n{run}");
    proxy.clear_faults();
    assert_converged(&moto, "specs/prod.yaml");
}

/// The ECS service's task definition ARN, as ECS reports it.
async fn service_revision(moto: &Moto) -> String {
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    let out = ecs.describe_services().cluster("benchling-webhook-cluster").services(STACK).send().await.unwrap();
    out.services()[0].task_definition().unwrap().to_string()
}

/// ECS deployments take a while on AWS. With waiting on, the engine's readiness wait (the
/// service's create and update only send their call) waits for each one, printing how far it
/// is, and the service's dependents (the scalable target) start only once it completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_deployments_are_waited_for_by_the_engine_after_each_change() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let rollout = Duration::from_millis(1500);
    ecs_deployments(&proxy, rollout.as_secs_f64());
    let waiting = [("RECONCILER_WAIT_FOR_DEPLOYMENTS", "true")];
    let run = reconciler(&moto, &proxy, &waiting, &["apply", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    let progress = "ecs:service service [arn:aws:ecs:";
    assert!(run.stderr.contains(progress) && run.stderr.contains("to settle after the change: deployment "), "{run}");
    let (created, target) = (proxy.times("ecs:CreateService")[0], proxy.times("application-autoscaling:RegisterScalableTarget")[0]);
    assert!(target.duration_since(created) >= rollout, "the scalable target did not wait for the deployment\n{run}");

    // A new image: one UpdateService, waited for the same way, polled at the poll interval.
    let v2 = cli::spec_variant(&moto, "specs/prod.yaml", "v2.yaml", |s| s.replace("benchling-webhook:0.1.0", "benchling-webhook:0.2.0"));
    proxy.reset_counts();
    let run = reconciler(&moto, &proxy, &waiting, &["apply", &v2, "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(proxy.count("ecs:UpdateService"), 1, "{run}");
    assert!(run.stderr.contains("to settle after the change: deployment "), "{run}");
    let (updated, last_look) = (proxy.times("ecs:UpdateService")[0], *proxy.times("ecs:DescribeServices").last().unwrap());
    assert!(last_look.duration_since(updated) >= rollout, "not waited for\n{run}");
    assert!(proxy.count("ecs:DescribeServices") < 60, "{} looks for a 1.5 s rollout\n{run}", proxy.count("ecs:DescribeServices"));

    // A run that did not wait (here: waiting off; or stopped, or timed out) leaves the
    // deployment rolling out; the next run that has something to do finds the service Pending
    // and waits for it (the service itself unchanged: no UpdateService).
    let v3 = cli::spec_variant(&moto, "specs/prod.yaml", "v3.yaml", |s| s.replace("benchling-webhook:0.1.0", "benchling-webhook:0.3.0"));
    let run = reconciler(&moto, &proxy, &[], &["apply", &v3, "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    let v3_logs = cli::spec_variant(&moto, &v3, "v3-logs.yaml", |s| s.replacen("retention_days: 30", "retention_days: 60", 1));
    proxy.reset_counts();
    let run = reconciler(&moto, &proxy, &waiting, &["apply", &v3_logs, "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stderr.contains("waiting for ecs:service service [arn:aws:ecs:"), "{run}");
    assert_eq!(proxy.count("ecs:UpdateService"), 0, "{run}");
    assert_converged(&moto, &v3_logs);
}

/// A new image whose deployment fails (ECS's circuit breaker stops it): apply says so and
/// exits 1, `status` shows the service Failed, and after ECS rolled the service back, later
/// runs do not deploy the failed revision again (no UpdateService, every pass): they fail
/// saying what to do, until the image or configuration changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_rollout_stays_visible_and_is_not_redeployed_by_every_run() {
    let moto = applied("specs/prod.yaml");
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let healthy = service_revision(&moto).await;
    let v2 = cli::spec_variant(&moto, "specs/prod.yaml", "v2.yaml", |s| s.replace("benchling-webhook:0.1.0", "benchling-webhook:0.2.0"));
    // ECS's answer while the circuit breaker has stopped the deployment (moto's deployments
    // never leave IN_PROGRESS).
    let failed = "\"rolloutState\": \"FAILED\", \"rolloutStateReason\": \"ECS deployment circuit breaker: tasks failed to start.\"";
    proxy.rule(Rule::rewrite("ecs:DescribeServices", "\"rolloutState\": \"IN_PROGRESS\"", failed));
    let waiting = [("RECONCILER_WAIT_FOR_DEPLOYMENTS", "true")];
    let run = reconciler(&moto, &proxy, &waiting, &["apply", &v2, "--auto-approve"]);
    assert_eq!(run.code, 1, "{run}");
    // (The new revision's deployment is the PRIMARY one and reads FAILED: nothing to roll back
    // to. A rollback in progress and one completed are unit-tested in ecs/rollout.rs.)
    let failure = run.stderr.contains("failed to become healthy") || run.stderr.contains("rolled back");
    assert!(failure && run.stderr.contains("not deploy this revision again"), "{run}");
    let broken = service_revision(&moto).await;
    assert_ne!(broken, healthy);

    let status = reconciler(&moto, &proxy, &[], &["status", &v2, "--format", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap_or_else(|e| panic!("{e}\n{status}"));
    let service = status["resources"].as_array().unwrap().iter().find(|r| r["id"] == "service").unwrap().clone();
    let ready = service["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap().clone();
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("Failed")), "{service}");
    // Unchanged and unhealthy: an apply does not call it done.
    let run = reconciler(&moto, &proxy, &[], &["apply", &v2, "--auto-approve"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("not healthy"), "{run}");

    // The circuit breaker rolls the service back to the revision that worked.
    proxy.clear_faults();
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    ecs.update_service().cluster("benchling-webhook-cluster").service(STACK).task_definition(&healthy).send().await.unwrap();
    for _ in 0..2 {
        proxy.reset_counts();
        let run = reconciler(&moto, &proxy, &[], &["apply", &v2, "--auto-approve"]);
        assert_eq!(run.code, 1, "{run}");
        assert!(run.stderr.contains("not deploying") && run.stderr.contains("reconciler:failed-revision"), "{run}");
        assert_eq!(proxy.count("ecs:UpdateService"), 0, "the failed revision was deployed again\n{run}");
        assert_eq!(service_revision(&moto).await, healthy);
    }
    // A fixed image is a new revision: deployed as usual.
    let v3 = cli::spec_variant(&moto, "specs/prod.yaml", "v3.yaml", |s| s.replace("benchling-webhook:0.1.0", "benchling-webhook:0.3.0"));
    let run = reconciler(&moto, &proxy, &[], &["apply", &v3, "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(proxy.count("ecs:UpdateService"), 1, "{run}");
    assert_converged(&moto, &v3);
}

/// Right after CreateNatGateway, EC2 may answer DescribeNatGateways with `NatGatewayNotFound`
/// for the id it just returned: "not visible yet", waited out, not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nat_gateway_not_found_right_after_its_create_is_waited_out() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    proxy.rule(
        Rule::error("ec2:DescribeNatGateways", 400, "NatGatewayNotFound", "NAT gateway nat-0 was not found")
            .for_secs_after_first("ec2:CreateNatGateway", 1.0),
    );
    let run = reconciler(&moto, &proxy, &[], &["apply", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(proxy.injected("ec2:DescribeNatGateways") > 0, "{run}");
    assert_eq!(owned_counts(&moto).await.2, 2, "two NAT gateways, none twice");
    assert_converged(&moto, "specs/prod.yaml");
}

/// `apply` from zero through the proxy, SIGKILLed by its kill hook right after its `n`th
/// mutating call reached moto; how the process ended.
async fn apply_killed_after(moto: &Moto, proxy: &FaultProxy, n: usize) -> std::process::ExitStatus {
    killed(moto, proxy, &["apply", "specs/prod.yaml", "--auto-approve"], |pid| proxy.kill_after_mutations(n, pid)).await
}

/// Runs the CLI with `args` through the proxy (the scaled-down deadlines); `arm` sets the kill
/// hook for its pid. The exit status (SIGKILL when the hook fired).
async fn killed(moto: &Moto, proxy: &FaultProxy, args: &[&str], arm: impl FnOnce(u32)) -> std::process::ExitStatus {
    let child = cli::command(moto, &proxy.url, "4")
        .env("RECONCILER_PROPAGATION_TIMEOUT", "30")
        .env("RECONCILER_CONFLICT_TIMEOUT", "30")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    arm(child.id());
    let status = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap().status).await.unwrap();
    // A killed run leaves its lease; on AWS it expires by itself (the spec's ttl_seconds).
    moto.expire_lock().await;
    status
}

/// The kill hook: the reconciler is SIGKILLed right after its 12th mutating call reached
/// moto, before it saw the answer. The next run finds what was made by its tags and finishes
/// the stack, with exactly one of everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_after_a_mutation_is_finished_by_the_next_one() {
    use std::os::unix::process::ExitStatusExt;
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let status = apply_killed_after(&moto, &proxy, 12).await;
    assert_eq!(status.signal(), Some(9), "killed by the hook: {status:?}");
    proxy.clear_faults();
    let run = reconciler(&moto, &proxy, &[], &["apply", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(owned_vpcs(&moto).await, 1);
    assert_eq!(owned_counts(&moto).await, (4, 3, 2, 1), "(subnets, security groups, NAT gateways, VPC links)\n{run}");
    assert_converged(&moto, "specs/prod.yaml");
}

/// Zone names map to different zones in every account; AZ IDs do not, and HTTP API VPC links
/// are not available in some (e.g. `use1-az3`). Here `us-east-1a` is `use1-az3`: a new VPC
/// for a stack with an API never puts its subnets there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subnets_avoid_zones_without_vpc_links() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    proxy.rule(Rule::rewrite("ec2:DescribeAvailabilityZones", "<zoneId>use1-az6</zoneId>", "<zoneId>use1-az3</zoneId>"));
    let run = reconciler(&moto, &proxy, &[], &["apply", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(proxy.injected("ec2:DescribeAvailabilityZones") > 0);
    let ec2 = aws_sdk_ec2::Client::new(&moto.sdk_config().await);
    let f = aws_sdk_ec2::types::Filter::builder().name("tag:reconciler:stack").values(STACK).build();
    let zones: std::collections::BTreeSet<String> = ec2
        .describe_subnets()
        .filters(f)
        .send()
        .await
        .unwrap()
        .subnets()
        .iter()
        .map(|s| s.availability_zone().unwrap().to_string())
        .collect();
    assert_eq!(zones, ["us-east-1b", "us-east-1c"].map(String::from).into(), "{run}");
}

/// A pass reads every kind at once, and AWS rate-limits each API per account: the calls in
/// flight to one service are bounded (`RECONCILER_SERVICE_CONCURRENCY`, here 2), whatever
/// the number of kinds reading it (seven EC2 kinds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_to_one_service_are_bounded() {
    let moto = applied("specs/prod.yaml");
    let proxy = FaultProxy::start(&moto.endpoint).await;
    proxy.rule(Rule::delay("ec2:*", Duration::from_millis(150)));
    let run = reconciler(&moto, &proxy, &[("RECONCILER_SERVICE_CONCURRENCY", "2")], &["plan", "specs/prod.yaml", "--detailed-exitcode"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(proxy.max_in_flight("ec2"), 2, "at most 2 EC2 calls at once, and the bound was reached\n{run}");
}

/// API Gateway allows one CreateVpcLink per 15 s in an account: a create sent again (the first
/// try was answered 500 before it took effect) waits for its turn instead of meeting a 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_vpc_link_create_waits_for_its_quota() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let create = "apigateway:POST /vpclinks";
    proxy.rule(Rule::server_error(create).first(1));
    let run = reconciler(&moto, &proxy, &[], &["apply", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    let times = proxy.times(create);
    assert_eq!(times.len(), 2, "{run}");
    let gap = times[1] - times[0];
    assert!(gap >= Duration::from_secs(15), "the second CreateVpcLink came {gap:?} after the first\n{run}");
    assert_eq!(owned_counts(&moto).await.3, 1, "one VPC link");
}

/// NAT gateways take minutes to become available on AWS. Nothing that starts a task (the
/// service, the drift-correction schedule) is created before the private routes through them
/// exist: a task started earlier has no way out to pull its image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_task_starts_before_its_route_out() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    proxy.rule(
        Rule::rewrite("ec2:DescribeNatGateways", "<state>available</state>", "<state>pending</state>")
            .for_secs_after_first("ec2:CreateNatGateway", 3.0),
    );
    let run = reconciler(&moto, &proxy, &[], &["apply", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(proxy.injected("ec2:DescribeNatGateways") > 0, "the NAT gateways were pending\n{run}");
    let calls = proxy.calls();
    let last_route = calls.iter().rposition(|c| c == "ec2:CreateRoute").expect("routes were created");
    for starter in ["ecs:CreateService", "scheduler:POST /schedules/*"] {
        let first = calls.iter().position(|c| c == starter).unwrap_or_else(|| panic!("{starter} never called"));
        assert!(first > last_route, "{starter} (call {first}) came before the last route out (call {last_route})");
    }
}

/// A VPC link's network interfaces outlive the link for minutes, and until they are gone EC2
/// refuses to delete the security group and the subnets they use (`DependencyViolation`, here
/// the first two tries of each: a count, so it happens however slow the machine). Destroy
/// waits that out (the conflict deadline) and finishes in one run, leaving nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_waits_out_network_interfaces_that_outlive_the_vpc_link() {
    let moto = applied("specs/prod.yaml");
    let proxy = FaultProxy::start(&moto.endpoint).await;
    proxy.rule(Rule::error("ec2:DeleteSecurityGroup", 400, "DependencyViolation", "resource sg-0 has a dependent object").first(2));
    proxy.rule(
        Rule::error("ec2:DeleteSubnet", 400, "DependencyViolation", "The subnet 'subnet-0' has dependencies and cannot be deleted.")
            .first(2),
    );
    let run = reconciler(&moto, &proxy, &[], &["destroy", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(proxy.injected("ec2:DeleteSecurityGroup") + proxy.injected("ec2:DeleteSubnet") > 0, "{run}");
    assert_eq!(owned_vpcs(&moto).await, 0, "{run}");
    let (subnets, groups, _, links) = owned_counts(&moto).await;
    assert_eq!((subnets, groups, links), (0, 0, 0), "{run}");
}

/// A VPC link's and a task's network interfaces outlive their owner by minutes, and EC2
/// refuses to delete a security group or subnet while one is in it. Destroy asks
/// (`DescribeNetworkInterfaces`) and deletes each only once none is left, instead of sending
/// deletes AWS refuses. Here real interfaces in moto, in every subnet and every security group
/// of the stack, released 2 s after destroy first asks about them or deletes a group or subnet
/// (moto itself would delete the groups and subnets under them: the order of the calls is what
/// is checked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_subnets_are_deleted_only_once_no_network_interface_is_in_them() {
    let moto = applied("specs/prod.yaml");
    let ec2 = aws_sdk_ec2::Client::new(&moto.sdk_config().await);
    let stack = || aws_sdk_ec2::types::Filter::builder().name("tag:reconciler:stack").values(STACK).build();
    let subnets = ec2.describe_subnets().filters(stack()).send().await.unwrap();
    let groups = ec2.describe_security_groups().filters(stack()).send().await.unwrap();
    let groups: Vec<String> = groups.security_groups().iter().filter_map(|g| g.group_id().map(str::to_string)).collect();
    let mut interfaces = Vec::new();
    for subnet in subnets.subnets().iter().filter_map(|s| s.subnet_id()) {
        let eni = ec2.create_network_interface().subnet_id(subnet).set_groups(Some(groups.clone())).description("VPC Link ENI");
        interfaces.push(eni.send().await.unwrap().network_interface().unwrap().network_interface_id().unwrap().to_string());
    }
    assert!(interfaces.len() == 4 && groups.len() == 3, "{interfaces:?} {groups:?}");
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let touched = ["ec2:DescribeNetworkInterfaces", "ec2:DeleteSecurityGroup", "ec2:DeleteSubnet"];
    let released = tokio::spawn({
        let proxy = proxy.clone();
        async move {
            while touched.iter().all(|a| proxy.count(a) == 0) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let at = std::time::Instant::now();
            for eni in interfaces {
                ec2.delete_network_interface().network_interface_id(eni).send().await.unwrap();
            }
            at
        }
    });
    let run = reconciler(&moto, &proxy, &[], &["destroy", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    let released = released.await.unwrap();
    for delete in ["ec2:DeleteSecurityGroup", "ec2:DeleteSubnet"] {
        let early = proxy.times(delete).into_iter().filter(|t| *t < released).count();
        assert_eq!(early, 0, "{delete} sent while network interfaces were still in it\n{run}");
    }
    assert!(proxy.count("ec2:DescribeNetworkInterfaces") > 7, "polled while they were there\n{run}");
    assert_eq!(owned_vpcs(&moto).await, 0, "{run}");
    assert_eq!(owned_counts(&moto).await, (0, 0, 0, 0), "{run}");
}

/// A delete that failed is never reported as done: DeregisterScalableTarget answered 500
/// before it took effect, and the target (found by its parent, not by tags) is looked for as
/// what it is, found still there, and deleted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delete_is_not_counted_as_done() {
    let moto = applied("specs/prod.yaml");
    let proxy = FaultProxy::start(&moto.endpoint).await;
    proxy.rule(Rule::server_error("application-autoscaling:DeregisterScalableTarget").first(1));
    let run = reconciler(&moto, &proxy, &[], &["destroy", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(proxy.count("application-autoscaling:DeregisterScalableTarget"), 2, "deleted again after the failure\n{run}");
    let scaling = aws_sdk_applicationautoscaling::Client::new(&moto.sdk_config().await);
    let left = scaling
        .describe_scalable_targets()
        .service_namespace(aws_sdk_applicationautoscaling::types::ServiceNamespace::Ecs)
        .send()
        .await
        .unwrap();
    assert!(left.scalable_targets().is_empty(), "{:?}\n{run}", left.scalable_targets());
}

/// Multi-step deletes retried after an answer that came too late: DetachInternetGateway and
/// DisassociateRouteTable took effect but were answered 500. The retry starts from what the
/// resource is now, so it does not detach or disassociate again (which EC2 refuses with
/// `Gateway.NotAttached` / `InvalidAssociationID.NotFound`), and destroy finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_deletes_start_from_what_is_there_now() {
    let moto = applied("specs/prod.yaml");
    let proxy = FaultProxy::start(&moto.endpoint).await;
    proxy.rule(Rule::server_error("ec2:DetachInternetGateway").after_forwarding().first(1));
    proxy.rule(Rule::server_error("ec2:DisassociateRouteTable").after_forwarding().first(1));
    let run = reconciler(&moto, &proxy, &[], &["destroy", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(proxy.count("ec2:DetachInternetGateway"), 1, "detached once\n{run}");
    assert_eq!(proxy.injected("ec2:DisassociateRouteTable"), 1, "{run}");
    assert_eq!(owned_vpcs(&moto).await, 0, "{run}");
}

/// Destroy in ONE run while AWS is still letting go: the ECS service drains, the NAT
/// gateways stay `deleting`, the VPC link's and the tasks' network interfaces keep the
/// security groups and subnets busy, the internet gateway and the VPC are
/// refused while NAT gateways are deleting, the service's tasks are still stopping after it
/// is INACTIVE, the Cloud Map service keeps instances until ECS deregisters them, the cluster
/// keeps tasks while they stop, and API Gateway is rate-limited. Nothing the stack owned is left (retained data excepted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_succeeds_in_one_run_while_aws_lets_go() {
    let moto = applied("specs/prod.yaml");
    let proxy = FaultProxy::start(&moto.endpoint).await;
    // Each is refused for its first tries (a count, not a time window: the scenario happens
    // however slow the machine): network interfaces (the tasks', the VPC link's) linger in the
    // security groups and subnets, the NAT gateways being deleted keep their addresses mapped
    // in the VPC, ECS has not deregistered the Cloud Map instances, tasks are still stopping.
    let in_use = "resource has a dependent object";
    for (action, code, message) in [
        ("ec2:DeleteSecurityGroup", "DependencyViolation", in_use),
        ("ec2:DeleteSubnet", "DependencyViolation", in_use),
        ("ec2:DetachInternetGateway", "DependencyViolation", "Network vpc-0 has some mapped public address(es)."),
        ("ec2:DeleteVpc", "DependencyViolation", in_use),
        ("servicediscovery:DeleteService", "ResourceInUse", "Service contains registered instances"),
        ("ecs:DeleteCluster", "ClusterContainsTasksException", "The Cluster cannot be deleted while Tasks are active."),
    ] {
        proxy.rule(Rule::error(action, 400, code, message).first(3));
    }
    // The service drains for a while after DeleteService, the NAT gateways stay `deleting`
    // after DeleteNatGateway, and the service's tasks are still stopping after it went INACTIVE.
    ecs_service_draining(&proxy, 1.5);
    nat_gateways_deleting(&proxy, 1.5);
    let task = "arn:aws:ecs:us-east-1:123456789012:task/benchling-webhook-cluster/0123456789abcdef";
    proxy.rule(Rule::respond("ecs:ListTasks", 200, &format!(r#"{{"taskArns": ["{task}"]}}"#)).first(4));
    let stopping =
        format!(r#"{{"tasks": [{{"taskArn": "{task}", "lastStatus": "STOPPING", "desiredStatus": "STOPPED"}}], "failures": []}}"#);
    proxy.rule(Rule::respond("ecs:DescribeTasks", 200, &stopping).first(2));
    proxy.rate_limit("apigateway", 4.0, 4.0, Some(1.0));
    let run = reconciler(&moto, &proxy, &[], &["destroy", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(proxy.injected("ecs:ListTasks") > 0, "the tasks were never seen stopping\n{run}");
    for (read, state) in [("ecs:DescribeServices", "DRAINING"), ("ec2:DescribeNatGateways", "deleting")] {
        assert!(proxy.injected(read) > 0, "{read} never answered {state}: the scenario did not happen\n{run}");
    }
    for action in [
        "ec2:DeleteSecurityGroup",
        "ec2:DeleteSubnet",
        "ec2:DetachInternetGateway",
        "ec2:DeleteVpc",
        "servicediscovery:DeleteService",
        "ecs:DeleteCluster",
    ] {
        assert!(proxy.injected(action) > 0, "{action} was never refused: the scenario did not happen\n{run}");
    }
    assert_eq!(owned_vpcs(&moto).await, 0, "{run}");
    assert_eq!(owned_counts(&moto).await, (0, 0, 0, 0), "(subnets, security groups, NAT gateways, VPC links)\n{run}");
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    let clusters = ecs.describe_clusters().clusters("benchling-webhook-cluster").send().await.unwrap();
    assert!(clusters.clusters().iter().all(|c| c.status() == Some("INACTIVE")), "{:?}", clusters.clusters());
}

/// A deleted VPC link stays DELETING while API Gateway releases its network interfaces:
/// destroy waits until it is gone before it deletes what the link sat in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_vpc_link_is_waited_for_until_it_is_gone() {
    let moto = applied("specs/prod.yaml");
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let (delete, get) = ("apigateway:DELETE /vpclinks/*", "apigateway:GET /vpclinks/*");
    let deleting = r#"{"vpcLinkId": "gone-soon", "name": "benchling-webhook", "vpcLinkStatus": "DELETING", "vpcLinkVersion": "V2", "subnetIds": [], "securityGroupIds": [], "tags": {}}"#;
    proxy.rule(Rule::respond(get, 200, deleting).for_secs_after_first(delete, 2.0));
    let run = reconciler(&moto, &proxy, &[], &["destroy", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    let deleted = proxy.times(delete)[0];
    let polls: Vec<Duration> = proxy.times(get).into_iter().filter(|t| *t > deleted).map(|t| t - deleted).collect();
    assert!(proxy.injected(get) > 0 && polls.iter().any(|d| *d >= Duration::from_secs(2)), "polled until gone: {polls:?}\n{run}");
    let link_group_deleted = proxy.times("ec2:DeleteSecurityGroup").into_iter().max().unwrap();
    assert!(link_group_deleted - deleted >= Duration::from_secs(2), "the link's security group went while the link was DELETING");
    assert_eq!(owned_counts(&moto).await, (0, 0, 0, 0));
}

/// Every resource of the kinds a create could leave behind, owned or not (an untagged
/// leftover of a killed create would not show in the owned counts).
async fn all_counts(moto: &Moto) -> (usize, usize, usize, usize, usize) {
    let c = moto.sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&c);
    let default = |tags: &[aws_sdk_ec2::types::Tag]| tags.iter().any(|t| t.key() == Some("reconciler:stack"));
    let vpcs = ec2.describe_vpcs().send().await.unwrap().vpcs().iter().filter(|v| !v.is_default().unwrap_or(false)).count();
    let subnets = ec2.describe_subnets().send().await.unwrap().subnets().iter().filter(|s| !s.default_for_az().unwrap_or(false)).count();
    let groups = ec2.describe_security_groups().send().await.unwrap().security_groups().iter().filter(|g| default(g.tags())).count();
    let roles = aws_sdk_iam::Client::new(&c).list_roles().path_prefix("/reconciler/").send().await.unwrap().roles().len();
    let links = aws_sdk_apigatewayv2::Client::new(&c).get_vpc_links().send().await.unwrap().items().len();
    (vpcs, subnets, groups, roles, links)
}

/// How many crash points to try: every `RECONCILER_CRASH_STRIDE`-th (default 6; `make
/// test-crash` sets 1, every one).
fn crash_stride() -> usize {
    std::env::var("RECONCILER_CRASH_STRIDE").ok().and_then(|s| s.parse().ok()).unwrap_or(6).max(1)
}

/// Prints how many of the crash points tried (every `stride`-th of `total` mutating calls,
/// named `letter`) were recovered (`make test-crash` greps this line), and fails with the
/// ones that were not.
fn report_crash_points(what: &str, letter: char, total: usize, stride: usize, failures: &[String]) {
    let tried = total.div_ceil(stride);
    eprintln!("{what}crash points: {} of {tried} recovered ({letter} = {total} mutating calls, stride {stride})", tried - failures.len());
    assert!(failures.is_empty(), "{} of {tried} crash points not recovered ({letter} = {total}):\n{}", failures.len(), failures.join("\n"));
}

/// Crash safety by count: `apply` from zero is SIGKILLed right after its Nth mutating call
/// reached AWS (before it saw the answer), for N every `RECONCILER_CRASH_STRIDE`-th mutating
/// call of a clean apply (default 6; 1 tries them all). A clean re-run must finish the
/// stack: exit 0, a no-op plan, and exactly one of everything, counting untagged leftovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_killed_after_any_mutation_is_finished_by_the_next_run() {
    let stride = crash_stride();
    // M: the mutating calls of a clean apply.
    let clean = {
        let moto = Moto::start();
        let proxy = FaultProxy::start(&moto.endpoint).await;
        let run = reconciler(&moto, &proxy, &[], &["apply", "specs/prod.yaml", "--auto-approve"]);
        assert_eq!(run.code, 0, "{run}");
        let expected = all_counts(&moto).await;
        (proxy.calls().into_iter().filter(|c| fault_proxy::is_mutation(c)).count(), expected)
    };
    let (m, expected) = clean;
    assert!(m > 50, "a clean apply makes {m} mutating calls");
    let mut failures = Vec::new();
    for n in (1..=m).step_by(stride) {
        let moto = Moto::start();
        let proxy = FaultProxy::start(&moto.endpoint).await;
        apply_killed_after(&moto, &proxy, n).await;
        proxy.clear_faults();
        let run = reconciler(&moto, &proxy, &[], &["apply", "specs/prod.yaml", "--auto-approve"]);
        let plan = reconciler(&moto, &proxy, &[], &["plan", "specs/prod.yaml", "--detailed-exitcode"]);
        let counts = all_counts(&moto).await;
        if run.code != 0 || plan.code != 0 || counts != expected {
            failures.push(format!(
                "killed after mutation {n}: re-run exit {}, plan exit {}, counts {counts:?} (want {expected:?})\n{run}",
                run.code, plan.code
            ));
        }
    }
    report_crash_points("", 'M', m, stride, &failures);
}

/// The whole stack applied, the model's rules set, then `destroy` SIGKILLed right after the
/// `nth` call of `action` reached AWS: the state the model keeps in progress is left to the
/// next run.
async fn destroy_killed_after(action: &str, nth: usize, model: impl FnOnce(&FaultProxy)) -> (Moto, FaultProxy) {
    use std::os::unix::process::ExitStatusExt;
    let moto = applied("specs/prod.yaml");
    let proxy = FaultProxy::start(&moto.endpoint).await;
    model(&proxy);
    let destroy = ["destroy", "specs/prod.yaml", "--auto-approve"];
    let status = killed(&moto, &proxy, &destroy, |pid| proxy.kill_after_call(action, nth, pid)).await;
    assert_eq!(status.signal(), Some(9), "killed by the hook: {status:?}");
    (moto, proxy)
}

/// A destroy killed right after it deleted both NAT gateways leaves them `deleting` (minutes
/// on AWS; here 4 s), still holding their Elastic IPs. The next destroy sees them (it does not
/// hide them), waits until they are gone and only then releases the addresses: EIP release
/// is refused meanwhile (`InvalidIPAddress.InUse`) and is never tried in that window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroy_killed_while_nat_gateways_delete_waits_for_them_next_time() {
    let (secs, delete) = (4.0, "ec2:DeleteNatGateway");
    let (moto, proxy) = destroy_killed_after(delete, 2, |proxy| {
        nat_gateways_deleting(proxy, secs);
        proxy
            .rule(Rule::error("ec2:ReleaseAddress", 400, "InvalidIPAddress.InUse", "Address is in use.").for_secs_after_last(delete, secs));
    })
    .await;
    let destroy = ["destroy", "specs/prod.yaml", "--auto-approve"];
    let run = reconciler(&moto, &proxy, &[], &destroy);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stderr.contains("to finish being deleted"), "waited for the NAT gateways\n{run}");
    assert_eq!(proxy.count(delete), 2, "not deleted again\n{run}");
    assert_eq!(proxy.injected("ec2:ReleaseAddress"), 0, "an address was released while its NAT gateway was deleting\n{run}");
    assert_eq!(owned_vpcs(&moto).await, 0, "{run}");
    assert_eq!(owned_counts(&moto).await, (0, 0, 0, 0), "{run}");
}

/// The same kill, then `apply` (the stack wanted back): the new NAT gateways take the same
/// Elastic IPs, which AWS refuses while the old gateways are deleting
/// (`Resource.AlreadyAssociated`). Apply waits for them first, then converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_after_a_killed_destroy_waits_for_nat_gateways_still_deleting() {
    let (secs, delete) = (4.0, "ec2:DeleteNatGateway");
    let (moto, proxy) = destroy_killed_after(delete, 2, |proxy| {
        nat_gateways_deleting(proxy, secs);
        let taken = Rule::error("ec2:CreateNatGateway", 400, "Resource.AlreadyAssociated", "Elastic IP address is already associated");
        proxy.rule(taken.for_secs_after_last(delete, secs));
    })
    .await;
    // The gateways are deleted in moto (the kill came after both calls reached it), and their
    // addresses free, as on AWS (tests/emulator/moto_aws.py); the model still shows them
    // deleting and refuses the new ones for the window.
    let run = reconciler(&moto, &proxy, &[], &["apply", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(proxy.injected("ec2:CreateNatGateway"), 0, "a NAT gateway was created while the old one held its address\n{run}");
    assert_eq!(owned_counts(&moto).await, (4, 3, 2, 1), "(subnets, security groups, NAT gateways, VPC links)\n{run}");
    assert_converged(&moto, "specs/prod.yaml");
}

/// A destroy killed right after ECS DeleteService leaves the service DRAINING while its tasks
/// stop (here 4 s). The next destroy waits for it before deleting what it uses: the cluster
/// (which refuses meanwhile) and the Cloud Map service its tasks are registered in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroy_killed_while_the_ecs_service_drains_waits_for_it_next_time() {
    let (secs, delete) = (4.0, "ecs:DeleteService");
    let (moto, proxy) = destroy_killed_after(delete, 1, |proxy| {
        ecs_service_draining(proxy, secs);
        let busy = "The Cluster cannot be deleted while Services are active.";
        proxy.rule(Rule::error("ecs:DeleteCluster", 400, "ClusterContainsServicesException", busy).for_secs_after_first(delete, secs));
    })
    .await;
    let destroy = ["destroy", "specs/prod.yaml", "--auto-approve"];
    let run = reconciler(&moto, &proxy, &[], &destroy);
    assert_eq!(run.code, 0, "{run}");
    assert!(proxy.injected("ecs:DescribeServices") > 0, "the service was seen DRAINING\n{run}");
    let deleted = proxy.times(delete)[0];
    let window = Duration::from_secs_f64(secs);
    for dependent in ["ecs:DeleteCluster", "servicediscovery:DeleteService"] {
        let first = proxy.times(dependent).into_iter().min().unwrap_or_else(|| panic!("{dependent} never called\n{run}"));
        assert!(first - deleted >= window, "{dependent} while the service was still draining\n{run}");
    }
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    let clusters = ecs.describe_clusters().clusters("benchling-webhook-cluster").send().await.unwrap();
    assert!(clusters.clusters().iter().all(|c| c.status() == Some("INACTIVE")), "{:?}", clusters.clusters());
}

/// The same kill, then `apply`: ECS refuses to create a service under the name of one still
/// draining. Apply waits for the old one to be gone, then creates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_after_a_killed_destroy_waits_for_the_draining_service() {
    let (secs, delete) = (4.0, "ecs:DeleteService");
    let (moto, proxy) = destroy_killed_after(delete, 1, |proxy| {
        ecs_service_draining(proxy, secs);
        let draining = "Unable to Start a service that is still Draining.";
        proxy.rule(Rule::error("ecs:CreateService", 400, "InvalidParameterException", draining).for_secs_after_first(delete, secs));
    })
    .await;
    let run = reconciler(&moto, &proxy, &[], &["apply", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(proxy.injected("ecs:CreateService"), 0, "created while the old one was draining\n{run}");
    assert_converged(&moto, "specs/prod.yaml");
}

/// A destroy killed right after DeleteVpcLink leaves the link DELETING while API Gateway
/// releases its network interfaces (minutes on AWS; here 6 s, during which the listing still
/// shows it, as AWS's does). The next destroy reports it and waits until it is gone before it
/// deletes the subnets it sat in (the others need not wait for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroy_killed_while_the_vpc_link_deletes_waits_for_it_next_time() {
    let (secs, delete) = (6.0, "apigateway:DELETE /vpclinks/*");
    let deleting = format!(
        r#"{{"items": [{{"vpcLinkId": "gone-soon", "name": "{STACK}", "vpcLinkStatus": "DELETING", "vpcLinkVersion": "V2", "subnetIds": [], "securityGroupIds": [], "tags": {{"reconciler:stack": "{STACK}", "reconciler:id": "vpc-link"}}}}]}}"#
    );
    let (moto, proxy) = destroy_killed_after(delete, 1, |proxy| {
        proxy.rule(Rule::respond("apigateway:GET /vpclinks", 200, &deleting).for_secs_after_first(delete, secs));
    })
    .await;
    // The subnets the link sits in (the spec's private subnets); the others may go at once.
    let ec2 = aws_sdk_ec2::Client::new(&moto.sdk_config().await);
    let subnets = ec2.describe_subnets().send().await.unwrap();
    let link_subnets: Vec<String> = subnets
        .subnets()
        .iter()
        .filter(|s| {
            s.tags().iter().any(|t| t.key() == Some("reconciler:id") && t.value().is_some_and(|v| v.starts_with("subnet-private-")))
        })
        .filter_map(|s| s.subnet_id().map(String::from))
        .collect();
    assert_eq!(link_subnets.len(), 2, "{subnets:?}");
    let destroy = ["destroy", "specs/prod.yaml", "--auto-approve"];
    let run = reconciler(&moto, &proxy, &[], &destroy);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stderr.contains("apigateway:vpc-link vpc-link [gone-soon] to finish being deleted"), "{run}");
    assert_eq!(proxy.count(delete), 1, "not deleted again\n{run}");
    let deleted = proxy.times(delete)[0];
    for subnet in &link_subnets {
        let at =
            proxy.times_mentioning("ec2:DeleteSubnet", subnet).into_iter().min().unwrap_or_else(|| panic!("{subnet} not deleted\n{run}"));
        assert!(at - deleted >= Duration::from_secs_f64(secs), "{subnet} went while the link in it was DELETING\n{run}");
    }
    assert_eq!(owned_counts(&moto).await, (0, 0, 0, 0), "{run}");
}

/// What the stack owned that is still there after a destroy, retained data excepted (its
/// queues and the service's log group are `deletion_policy: retain`): VPCs, subnets, security
/// groups (tagged or not), the stack's roles, VPC links, ACTIVE clusters, private DNS
/// namespaces, HTTP APIs.
async fn left_after_destroy(moto: &Moto) -> Vec<String> {
    let c = moto.sdk_config().await;
    let (vpcs, subnets, groups, roles, links) = all_counts(moto).await;
    let ec2 = aws_sdk_ec2::Client::new(&c);
    let untagged_groups =
        ec2.describe_security_groups().send().await.unwrap().security_groups().iter().filter(|g| g.group_name() != Some("default")).count();
    let ecs = aws_sdk_ecs::Client::new(&c);
    let arns = ecs.list_clusters().send().await.unwrap().cluster_arns().to_vec();
    let described = ecs.describe_clusters().set_clusters(Some(arns)).send().await.unwrap();
    let clusters = described.clusters().iter().filter(|c| c.status() != Some("INACTIVE")).count();
    let namespaces = aws_sdk_servicediscovery::Client::new(&c).list_namespaces().send().await.unwrap().namespaces().len();
    let apis = aws_sdk_apigatewayv2::Client::new(&c).get_apis().send().await.unwrap().items().len();
    let nats = owned_counts(moto).await.2;
    let counts = [
        ("vpcs", vpcs),
        ("subnets", subnets),
        ("tagged security groups", groups),
        ("security groups", untagged_groups),
        ("roles", roles),
        ("vpc links", links),
        ("nat gateways", nats),
        ("clusters", clusters),
        ("namespaces", namespaces),
        ("apis", apis),
    ];
    counts.iter().filter(|(_, n)| *n > 0).map(|(what, n)| format!("{n} {what}")).collect()
}

/// Crash safety of destroy, by count: the whole stack applied, then `destroy` SIGKILLed right
/// after its Nth mutating call reached AWS, for N every stride-th mutating call of a clean
/// destroy (K of them). A clean re-run of destroy must exit 0 and leave nothing the stack
/// owned (retained data excepted), counting untagged leftovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_killed_after_any_mutation_is_finished_by_the_next_run() {
    let stride = crash_stride();
    let destroy = ["destroy", "specs/prod.yaml", "--auto-approve"];
    let k = {
        let moto = applied("specs/prod.yaml");
        let proxy = FaultProxy::start(&moto.endpoint).await;
        let run = reconciler(&moto, &proxy, &[], &destroy);
        assert_eq!(run.code, 0, "{run}");
        assert_eq!(left_after_destroy(&moto).await, Vec::<String>::new(), "a clean destroy leaves nothing\n{run}");
        proxy.calls().into_iter().filter(|c| fault_proxy::is_mutation(c)).count()
    };
    assert!(k > 30, "a clean destroy makes {k} mutating calls");
    let mut failures = Vec::new();
    for n in (1..=k).step_by(stride) {
        let moto = applied("specs/prod.yaml");
        let proxy = FaultProxy::start(&moto.endpoint).await;
        killed(&moto, &proxy, &destroy, |pid| proxy.kill_after_mutations(n, pid)).await;
        proxy.clear_faults();
        let run = reconciler(&moto, &proxy, &[], &destroy);
        let left = left_after_destroy(&moto).await;
        if run.code != 0 || !left.is_empty() {
            failures.push(format!("killed after mutation {n}: re-run exit {}, left {left:?}\n{run}", run.code));
        }
    }
    report_crash_points("destroy ", 'K', k, stride, &failures);
}

/// An ECS service is INACTIVE before its tasks have stopped: they stay registered in Cloud
/// Map and keep their network interfaces in the subnets for a while (here 4 s, the tasks
/// listed and `STOPPING`). Destroy deletes the Cloud Map service and the cluster only when no
/// task of the service is running or stopping any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ecs_service_is_gone_only_when_its_tasks_have_stopped() {
    let moto = applied("specs/prod.yaml");
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let secs = 4.0;
    let delete = "ecs:DeleteService";
    let task = "arn:aws:ecs:us-east-1:123456789012:task/benchling-webhook-cluster/0123456789abcdef";
    proxy.rule(Rule::respond("ecs:ListTasks", 200, &format!(r#"{{"taskArns": ["{task}"]}}"#)).for_secs_after_first(delete, secs));
    let stopping = format!(
        r#"{{"tasks": [{{"taskArn": "{task}", "lastStatus": "STOPPING", "desiredStatus": "STOPPED", "group": "service:benchling-webhook"}}], "failures": []}}"#
    );
    proxy.rule(Rule::respond("ecs:DescribeTasks", 200, &stopping).for_secs_after_first(delete, secs));
    let run = reconciler(&moto, &proxy, &[], &["destroy", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(proxy.injected("ecs:ListTasks") > 0, "the tasks were seen stopping\n{run}");
    let deleted = proxy.times(delete)[0];
    for dependent in ["ecs:DeleteCluster", "servicediscovery:DeleteService"] {
        let first = proxy.times(dependent).into_iter().min().unwrap_or_else(|| panic!("{dependent} never called\n{run}"));
        assert!(first - deleted >= Duration::from_secs_f64(secs), "{dependent} while the service's tasks were stopping\n{run}");
    }
}

/// An apply killed right after CreatePrivateDnsNamespace leaves Cloud Map's operation running
/// (here 4 s, during which the namespace is not listed yet and another create of the same
/// name is answered `DuplicateRequest`, as AWS does while the operation is in flight). The
/// next apply does not start a second namespace: it waits for the first and uses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_create_still_running_is_not_started_again() {
    use std::os::unix::process::ExitStatusExt;
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let secs = 4.0;
    let create = "servicediscovery:CreatePrivateDnsNamespace";
    proxy.rule(Rule::respond("servicediscovery:ListNamespaces", 200, r#"{"Namespaces": []}"#).for_secs_after_first(create, secs));
    proxy.rule(Rule::error(create, 400, "DuplicateRequest", "The operation is already in progress.").for_secs_after_first(create, secs));
    let status = killed(&moto, &proxy, &["apply", "specs/prod.yaml", "--auto-approve"], |pid| proxy.kill_after_call(create, 1, pid)).await;
    assert_eq!(status.signal(), Some(9), "killed by the hook: {status:?}");
    let run = reconciler(&moto, &proxy, &[], &["apply", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    let sd = aws_sdk_servicediscovery::Client::new(&moto.sdk_config().await);
    let namespaces = sd.list_namespaces().send().await.unwrap().namespaces().len();
    assert_eq!(namespaces, 1, "one namespace, not a second one\n{run}");
    let forwarded = proxy.count(create) - proxy.injected(create);
    assert_eq!(forwarded, 1, "the create was not sent again once the first one was visible\n{run}");
    assert_converged(&moto, "specs/prod.yaml");
}

/// The same, with Cloud Map's listing lagging 6 s behind the end of the operation: a create
/// sent in between is answered `ConflictingDomainExists` (the namespace exists, it is just
/// not listed yet). The apply observes again until the namespace is listed and uses it, one
/// namespace in all; it does not fail on it. (A clean-clone CI run hit this window with the
/// test above: the retry after the last `DuplicateRequest` fell after the operation ended.)
/// The lag is longer than any retry backoff reached by then (2 s of doubling from
/// milliseconds), so a retry always lands in it: with a 1.5 s lag, a 1.8 s backoff once
/// stepped over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_create_refused_as_existing_while_listings_lag_is_found_not_failed() {
    use std::os::unix::process::ExitStatusExt;
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let (secs, lag) = (2.0, 6.0);
    let create = "servicediscovery:CreatePrivateDnsNamespace";
    proxy.rule(Rule::respond("servicediscovery:ListNamespaces", 200, r#"{"Namespaces": []}"#).for_secs_after_first(create, secs + lag));
    proxy.rule(Rule::error(create, 400, "DuplicateRequest", "The operation is already in progress.").for_secs_after_first(create, secs));
    let status = killed(&moto, &proxy, &["apply", "specs/prod.yaml", "--auto-approve"], |pid| proxy.kill_after_call(create, 1, pid)).await;
    assert_eq!(status.signal(), Some(9), "killed by the hook: {status:?}");
    let run = reconciler(&moto, &proxy, &[], &["apply", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stderr.contains("ConflictingDomainExists"), "a create fell in the lag and was refused as existing\n{run}");
    let sd = aws_sdk_servicediscovery::Client::new(&moto.sdk_config().await);
    assert_eq!(sd.list_namespaces().send().await.unwrap().namespaces().len(), 1, "one namespace\n{run}");
    assert_converged(&moto, "specs/prod.yaml");
}

/// An apply killed right after CreateVpcLink leaves the link PENDING (here 4 s: API Gateway
/// provisions its network interfaces). The next apply finds it by its tags, does not create
/// a second link, waits until it is AVAILABLE and only then creates the integration on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_killed_while_the_vpc_link_is_pending_waits_for_it_next_time() {
    use std::os::unix::process::ExitStatusExt;
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let (create, secs) = ("apigateway:POST /vpclinks", 4.0);
    let (available, pending) = ("\"vpcLinkStatus\": \"AVAILABLE\"", "\"vpcLinkStatus\": \"PENDING\"");
    proxy.rule(Rule::rewrite(create, available, pending));
    for read in ["apigateway:GET /vpclinks/*", "apigateway:GET /vpclinks"] {
        proxy.rule(Rule::rewrite(read, available, pending).for_secs_after_first(create, secs));
    }
    let status = killed(&moto, &proxy, &["apply", "specs/prod.yaml", "--auto-approve"], |pid| proxy.kill_after_call(create, 1, pid)).await;
    assert_eq!(status.signal(), Some(9), "killed by the hook: {status:?}");
    let run = reconciler(&moto, &proxy, &[], &["apply", "specs/prod.yaml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(proxy.count(create), 1, "no second VPC link\n{run}");
    let created = proxy.times(create)[0];
    let integration = proxy.times("apigateway:POST /apis/*/integrations");
    assert!(
        integration.iter().all(|t| *t - created >= Duration::from_secs_f64(secs)),
        "the integration was created on a PENDING link\n{run}"
    );
    assert_eq!(owned_counts(&moto).await.3, 1, "{run}");
    assert_converged(&moto, "specs/prod.yaml");
}

/// A create-before-destroy replacement killed half-way: NAT gateway `nat-1` moves to a new
/// Elastic IP (the stack's address for it was replaced), and apply is killed right after it
/// created the new gateway. The next run finds both copies of `nat-1`: it keeps the new one
/// (already what the spec asks), moves the private route to it, and does not create a third
/// (which would take the new address again: `Resource.AlreadyAssociated`); once the route
/// has moved it deletes the old gateway, in the same run. One of everything is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_create_before_destroy_is_finished_not_started_again() {
    use std::os::unix::process::ExitStatusExt;
    let moto = applied("specs/prod.yaml");
    let ec2 = aws_sdk_ec2::Client::new(&moto.sdk_config().await);
    let old = nat_1(ec2.clone()).await;
    replace_nat_1_address(&ec2, &old[0]).await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let args = ["apply", "specs/prod.yaml", "--auto-approve", "--allow-destructive"];
    let status = killed(&moto, &proxy, &args, |pid| proxy.kill_after_call("ec2:CreateNatGateway", 1, pid)).await;
    assert_eq!(status.signal(), Some(9), "killed by the hook: {status:?}");
    assert_eq!(nat_1(ec2.clone()).await.len(), 2, "the kill left the old and the new gateway");
    let run = reconciler(&moto, &proxy, &[], &args);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(proxy.count("ec2:CreateNatGateway"), 1, "no third gateway was tried\n{run}");
    let left = nat_1(ec2.clone()).await;
    assert_eq!(left.len(), 1, "the old gateway is gone\n{run}");
    assert_ne!(left, old);
    assert_converged(&moto, "specs/prod.yaml");
}

/// The same for a security group, which is replaced create-before-destroy when its name
/// changes: the service is left on the old copy of `sg-service` (another name, as a replacement
/// stopped half-way leaves it) beside the copy the spec names. The next apply keeps the copy
/// already as the spec asks (creating it again would be refused, `InvalidGroup.Duplicate`),
/// moves the service to it and deletes the old copy, in one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_security_group_replacement_is_finished() {
    use aws_sdk_ecs::types::{AwsVpcConfiguration, NetworkConfiguration};
    let moto = applied("specs/prod.yaml");
    let c = moto.sdk_config().await;
    let (ec2, ecs) = (aws_sdk_ec2::Client::new(&c), aws_sdk_ecs::Client::new(&c));
    let by_id = aws_sdk_ec2::types::Filter::builder().name("tag:reconciler:id").values("sg-service").build();
    let groups = ec2.describe_security_groups().filters(by_id.clone()).send().await.unwrap();
    let current = groups.security_groups()[0].clone();
    let tags = aws_sdk_ec2::types::TagSpecification::builder()
        .resource_type(aws_sdk_ec2::types::ResourceType::SecurityGroup)
        .set_tags(Some(current.tags().to_vec()))
        .build();
    let old = ec2
        .create_security_group()
        .group_name("benchling-webhook-service-before-rename")
        .description("the copy a rename left")
        .vpc_id(current.vpc_id().unwrap())
        .tag_specifications(tags)
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    let (cluster, service) = ("benchling-webhook-cluster", "benchling-webhook");
    let svc = ecs.describe_services().cluster(cluster).services(service).send().await.unwrap();
    let vpc = svc.services()[0].network_configuration().unwrap().awsvpc_configuration().unwrap().clone();
    let moved = AwsVpcConfiguration::builder().set_subnets(Some(vpc.subnets().to_vec())).security_groups(&old).build().unwrap();
    let network = NetworkConfiguration::builder().awsvpc_configuration(moved).build();
    ecs.update_service().cluster(cluster).service(service).network_configuration(network).send().await.unwrap();
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let run = reconciler(&moto, &proxy, &[], &["apply", "specs/prod.yaml", "--auto-approve", "--allow-destructive"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(proxy.count("ec2:CreateSecurityGroup"), 0, "the copy the spec names was kept, not made again\n{run}");
    let svc = ecs.describe_services().cluster(cluster).services(service).send().await.unwrap();
    let on = svc.services()[0].network_configuration().unwrap().awsvpc_configuration().unwrap().security_groups().to_vec();
    assert_eq!(on, vec![current.group_id().unwrap().to_string()], "the service moved to the kept copy\n{run}");
    let left = ec2.describe_security_groups().filters(by_id).send().await.unwrap();
    assert_eq!(left.security_groups().len(), 1, "the old copy is gone\n{run}");
    assert_converged(&moto, "specs/prod.yaml");
}

/// The available NAT gateways of logical id `nat-1` (moto ignores a tag filter on
/// DescribeNatGateways: filtered here).
async fn nat_1(ec2: aws_sdk_ec2::Client) -> Vec<String> {
    let out = ec2.describe_nat_gateways().send().await.unwrap();
    let is_nat_1 =
        |n: &&aws_sdk_ec2::types::NatGateway| n.tags().iter().any(|t| t.key() == Some("reconciler:id") && t.value() == Some("nat-1"));
    out.nat_gateways()
        .iter()
        .filter(is_nat_1)
        .filter(|n| n.state().map(|s| s.as_str()) == Some("available"))
        .filter_map(|n| n.nat_gateway_id().map(str::to_string))
        .collect()
}

/// The stack's Elastic IP for `nat-1` replaced out of band: the next apply replaces the
/// gateway create-before-destroy.
async fn replace_nat_1_address(ec2: &aws_sdk_ec2::Client, nat: &str) {
    let out = ec2.describe_nat_gateways().nat_gateway_ids(nat).send().await.unwrap();
    let alloc = out.nat_gateways()[0].nat_gateway_addresses()[0].allocation_id().unwrap().to_string();
    cli::replace_stack_address(ec2, &alloc).await;
}

/// Crash safety of a create-before-destroy replacement, by count: NAT gateway `nat-1` moves
/// to a new Elastic IP (create the new gateway, move the private route, delete the old one),
/// and that apply is SIGKILLed right after its Nth mutating call, for N every stride-th of
/// the R mutating calls of the clean replacement. A clean re-run must exit 0 and leave
/// exactly one `nat-1` (a new one), the route on it, and a no-op plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_killed_after_any_mutation_is_finished_by_the_next_run() {
    let stride = crash_stride();
    let args = ["apply", "specs/prod.yaml", "--auto-approve", "--allow-destructive"];
    let prepared = || async {
        let moto = applied("specs/prod.yaml");
        let ec2 = aws_sdk_ec2::Client::new(&moto.sdk_config().await);
        let old = nat_1(ec2.clone()).await;
        replace_nat_1_address(&ec2, &old[0]).await;
        (moto, ec2, old)
    };
    let r = {
        let (moto, ec2, old) = prepared().await;
        let proxy = FaultProxy::start(&moto.endpoint).await;
        let run = reconciler(&moto, &proxy, &[], &args);
        assert_eq!(run.code, 0, "{run}");
        let left = nat_1(ec2).await;
        assert!(left.len() == 1 && left != old, "a clean replacement leaves one new gateway\n{run}");
        proxy.calls().into_iter().filter(|c| fault_proxy::is_mutation(c)).count()
    };
    assert!(r >= 4, "a clean replacement makes {r} mutating calls");
    let mut failures = Vec::new();
    for n in (1..=r).step_by(stride) {
        let (moto, ec2, old) = prepared().await;
        let proxy = FaultProxy::start(&moto.endpoint).await;
        killed(&moto, &proxy, &args, |pid| proxy.kill_after_mutations(n, pid)).await;
        proxy.clear_faults();
        let run = reconciler(&moto, &proxy, &[], &args);
        let plan = reconciler(&moto, &proxy, &[], &["plan", "specs/prod.yaml", "--detailed-exitcode"]);
        let left = nat_1(ec2).await;
        if run.code != 0 || plan.code != 0 || left.len() != 1 || left == old {
            failures.push(format!(
                "killed after mutation {n}: re-run exit {}, plan exit {}, nat-1 {left:?} (old {old:?})\n{run}\n{plan}",
                run.code, plan.code
            ));
        }
    }
    report_crash_points("replacement ", 'R', r, stride, &failures);
}
