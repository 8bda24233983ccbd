//! The front door against moto: VPC link, HTTP API, integration, routes, `$default` stage.
//! Built from zero and wired end to end, no-op re-plan, drift named and corrected (a deleted
//! route, a changed integration URI, a deleted VPC link, a stage without access logs),
//! outputs, `verify` against a local endpoint, and destroy (edge before network).
//! Each test owns its moto server.
//!
//! moto does not implement UpdateStage: the stage kind then recreates the stage and says so
//! (the UpdateStage path itself is unit-tested in `resources/apigateway/stage.rs`).

use crate::{cli, support};

use aws_sdk_apigatewayv2::types::{AccessLogSettings, RouteSettings};
use cli::{applied, assert_converged, aws, reconciler, spec_variant, Aws};
use support::Moto;

const PROD: &str = "specs/prod.yaml";
const API_LOG_GROUP: &str = "/aws/apigateway/benchling-webhook";

fn apply(moto: &Moto, spec: &str) -> String {
    let run = reconciler(moto, &["apply", spec, "--auto-approve", "--allow-destructive"]);
    assert_eq!(run.code, 0, "{run}");
    run.stdout
}

/// Plan exits 2 and names each (resource, field).
fn assert_drift(moto: &Moto, spec: &str, expect: &[(&str, &str)]) -> String {
    let plan = reconciler(moto, &["plan", spec, "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{plan}");
    for (resource, field) in expect {
        let at = plan.stdout.find(resource).unwrap_or_else(|| panic!("plan does not name {resource}\n{plan}"));
        let block: String = plan.stdout[at..].lines().take(12).collect::<Vec<_>>().join("\n");
        assert!(block.contains(field), "{resource} should show `{field}`\n{plan}");
    }
    plan.stdout
}

async fn api(a: &Aws) -> aws_sdk_apigatewayv2::types::Api {
    let apis = a.apigw.get_apis().send().await.unwrap();
    assert_eq!(apis.items().len(), 1, "exactly one HTTP API: {apis:?}");
    apis.items()[0].clone()
}

async fn vpc_links(a: &Aws) -> Vec<aws_sdk_apigatewayv2::types::VpcLink> {
    a.apigw.get_vpc_links().send().await.unwrap().items().to_vec()
}

async fn integrations(a: &Aws, api_id: &str) -> Vec<aws_sdk_apigatewayv2::types::Integration> {
    a.apigw.get_integrations().api_id(api_id).send().await.unwrap().items().to_vec()
}

async fn routes(a: &Aws, api_id: &str) -> Vec<aws_sdk_apigatewayv2::types::Route> {
    a.apigw.get_routes().api_id(api_id).send().await.unwrap().items().to_vec()
}

async fn stages(a: &Aws, api_id: &str) -> Vec<aws_sdk_apigatewayv2::types::Stage> {
    a.apigw.get_stages().api_id(api_id).send().await.unwrap().items().to_vec()
}

/// The EC2 id of one of the stack's resources, by its logical id.
async fn ec2_id(a: &Aws, logical: &str) -> String {
    let f = |n: &str, v: &str| aws_sdk_ec2::types::Filter::builder().name(n).values(v).build();
    if logical.starts_with("sg-") {
        let out = a.ec2.describe_security_groups().filters(f("tag:reconciler:id", logical)).send().await.unwrap();
        return out.security_groups()[0].group_id().unwrap().to_string();
    }
    let out = a.ec2.describe_subnets().filters(f("tag:reconciler:id", logical)).send().await.unwrap();
    out.subnets()[0].subnet_id().unwrap().to_string()
}

async fn cloud_map_arn(a: &Aws) -> String {
    let out = a.cloudmap.list_services().send().await.unwrap();
    out.services().iter().find(|s| s.name() == Some("benchling-webhook")).and_then(|s| s.arn()).unwrap().to_string()
}

async fn api_log_group_arn(a: &Aws) -> String {
    let out = a.logs.describe_log_groups().log_group_name_prefix(API_LOG_GROUP).send().await.unwrap();
    let g = &out.log_groups()[0];
    g.log_group_arn().or(g.arn()).unwrap().trim_end_matches(":*").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_from_zero_builds_the_whole_edge_and_prints_the_urls() {
    let moto = Moto::start();
    let a = aws(&moto).await;
    let out = apply(&moto, PROD);

    let api = api(&a).await;
    let api_id = api.api_id().unwrap();
    let endpoint = api.api_endpoint().unwrap().trim_end_matches('/').to_string();
    assert_eq!(api.name(), Some("benchling-webhook-http"));

    // Exactly one VPC link, in the private subnets, with its own security group.
    let links = vpc_links(&a).await;
    assert_eq!(links.len(), 1, "{links:?}");
    let link = &links[0];
    let mut subnets = link.subnet_ids().to_vec();
    subnets.sort();
    let mut private = vec![ec2_id(&a, "subnet-private-1").await, ec2_id(&a, "subnet-private-2").await];
    private.sort();
    assert_eq!(subnets, private);
    assert_eq!(link.security_group_ids(), [ec2_id(&a, "sg-vpc-link").await]);

    // One integration: over that link, to the live Cloud Map service.
    let ints = integrations(&a, api_id).await;
    assert_eq!(ints.len(), 1, "{ints:?}");
    let i = &ints[0];
    assert_eq!(i.integration_uri(), Some(cloud_map_arn(&a).await.as_str()));
    assert_eq!(i.connection_id(), link.vpc_link_id());
    assert_eq!(i.connection_type().map(|c| c.as_str()), Some("VPC_LINK"));
    assert_eq!(i.integration_type().map(|c| c.as_str()), Some("HTTP_PROXY"));
    assert_eq!(i.payload_format_version(), Some("1.0"));
    assert!(i.timeout_in_millis().unwrap() <= 29_000);
    // The one client address the service's allowlist trusts: overwritten, never appended.
    let mapping = i.request_parameters().cloned().unwrap_or_default();
    assert_eq!(mapping.get("overwrite:header.x-webhook-source-ip").map(String::as_str), Some("$context.identity.sourceIp"), "{mapping:?}");

    // Two routes to it.
    let target = format!("integrations/{}", i.integration_id().unwrap());
    let mut keys: Vec<(String, String)> =
        routes(&a, api_id).await.iter().map(|r| (r.route_key().unwrap().to_string(), r.target().unwrap_or_default().to_string())).collect();
    keys.sort();
    assert_eq!(keys, [("ANY /".to_string(), target.clone()), ("ANY /{proxy+}".to_string(), target)]);

    // The $default stage: auto-deploy, JSON access logs to the API log group, throttling.
    let st = stages(&a, api_id).await;
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].stage_name(), Some("$default"));
    assert_eq!(st[0].auto_deploy(), Some(true));
    let logs = st[0].access_log_settings().expect("access logs");
    assert_eq!(logs.destination_arn(), Some(api_log_group_arn(&a).await.as_str()));
    let format: serde_json::Value = serde_json::from_str(logs.format().unwrap()).expect("a JSON access log format");
    assert_eq!(format["ip"], "$context.identity.sourceIp");
    let route = st[0].default_route_settings().unwrap();
    assert_eq!((route.throttling_rate_limit(), route.throttling_burst_limit()), (Some(100.0), Some(200)));

    // apply printed the URLs to paste into the Benchling manifest.
    assert!(out.contains(&format!("webhook URL:  {endpoint}")), "{out}");
    for path in ["/event", "/lifecycle", "/canvas"] {
        assert!(out.contains(&format!("{endpoint}{path}")), "{path} missing\n{out}");
    }

    // Re-apply creates nothing; the plan is a no-op; no section is left unreconciled.
    let again = apply(&moto, PROD);
    assert!(again.contains("No changes") && !again.contains("not reconciled"), "{again}");
    assert_converged(&moto, PROD);
    assert_eq!(vpc_links(&a).await.len(), 1);
    assert_eq!(routes(&a, api_id).await.len(), 2);

    // `output` only reads, and its JSON is the documented shape.
    let o = reconciler(&moto, &["output", PROD, "--format", "json"]);
    assert_eq!(o.code, 0, "{o}");
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["webhook_url"], endpoint.as_str());
    assert_eq!(v["manifest"]["event"], format!("{endpoint}/event"));
    assert_eq!(v["manifest"]["lifecycle"], format!("{endpoint}/lifecycle"));
    assert_eq!(v["manifest"]["canvas"], format!("{endpoint}/canvas"));
    assert_eq!(v["api_id"], api_id);
    assert_eq!(v["cluster"], "benchling-webhook-cluster");
    assert_eq!(v["service"], "benchling-webhook");
    assert_eq!(v["log_groups"]["log-api"], API_LOG_GROUP);
    assert!(v["queues"]["queue"].as_str().unwrap().ends_with("benchling-webhook-events.fifo"), "{v}");
    let text = reconciler(&moto, &["output", PROD]);
    assert!(text.stdout.contains(&format!("event      {endpoint}/event")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_at_the_edge_is_named_and_corrected() {
    let moto = applied(PROD);
    let a = aws(&moto).await;
    let api_id = api(&a).await.api_id().unwrap().to_string();
    let integration = integrations(&a, &api_id).await[0].clone();
    let integration_id = integration.integration_id().unwrap().to_string();

    // A deleted route, a changed integration URI, and the client-address mapping removed.
    let proxy = routes(&a, &api_id).await.into_iter().find(|r| r.route_key() == Some("ANY /{proxy+}")).unwrap();
    a.apigw.delete_route().api_id(&api_id).route_id(proxy.route_id().unwrap()).send().await.unwrap();
    let elsewhere = "arn:aws:servicediscovery:us-east-1:123456789012:service/srv-elsewhere";
    a.apigw
        .update_integration()
        .api_id(&api_id)
        .integration_id(&integration_id)
        .integration_uri(elsewhere)
        .request_parameters("overwrite:header.x-webhook-source-ip", "")
        .send()
        .await
        .unwrap();
    assert_drift(
        &moto,
        PROD,
        &[
            ("+ apigateway:route route-proxy", "create"),
            ("~ apigateway:integration integration", &format!("uri: {elsewhere} ->")),
            ("~ apigateway:integration integration", "request_parameters"),
        ],
    );
    apply(&moto, PROD);
    assert_converged(&moto, PROD);
    let fixed = integrations(&a, &api_id).await[0].clone();
    assert_eq!(fixed.integration_uri(), Some(cloud_map_arn(&a).await.as_str()));
    assert!(fixed.request_parameters().is_some_and(|m| m.contains_key("overwrite:header.x-webhook-source-ip")), "{fixed:?}");
    assert_eq!(routes(&a, &api_id).await.len(), 2);

    // A deleted VPC link: recreated, and the integration repointed to it.
    let old_link = vpc_links(&a).await[0].vpc_link_id().unwrap().to_string();
    a.apigw.delete_vpc_link().vpc_link_id(&old_link).send().await.unwrap();
    assert_drift(&moto, PROD, &[("+ apigateway:vpc-link vpc-link", "create"), ("~ apigateway:integration integration", "connection_id")]);
    apply(&moto, PROD);
    assert_converged(&moto, PROD);
    let links = vpc_links(&a).await;
    assert_eq!(links.len(), 1);
    assert_ne!(links[0].vpc_link_id(), Some(old_link.as_str()));
    assert_eq!(integrations(&a, &api_id).await[0].connection_id(), links[0].vpc_link_id(), "repointed");

    // The stage recreated by hand without access logs and with other throttling (moto cannot
    // UpdateStage, so this is how the drift is made; real AWS would show the same fields).
    a.apigw.delete_stage().api_id(&api_id).stage_name("$default").send().await.unwrap();
    a.apigw
        .create_stage()
        .api_id(&api_id)
        .stage_name("$default")
        .auto_deploy(true)
        .default_route_settings(RouteSettings::builder().throttling_rate_limit(5.0).throttling_burst_limit(5).build())
        .send()
        .await
        .unwrap();
    assert_drift(&moto, PROD, &[("~ apigateway:stage stage", "access_log_destination"), ("~ apigateway:stage stage", "throttling_rate")]);
    let run = reconciler(&moto, &["apply", PROD, "--auto-approve"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stderr.contains("does not implement UpdateStage") && run.stderr.contains("recreating stage $default"), "{run}");
    assert_converged(&moto, PROD);
    let st = stages(&a, &api_id).await;
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].access_log_settings().and_then(AccessLogSettings::destination_arn), Some(api_log_group_arn(&a).await.as_str()));

    // A deleted stage is recreated.
    a.apigw.delete_stage().api_id(&api_id).stage_name("$default").send().await.unwrap();
    assert_drift(&moto, PROD, &[("+ apigateway:stage stage", "create")]);
    apply(&moto, PROD);
    assert_converged(&moto, PROD);
}

/// A local HTTP server on 127.0.0.1 playing the public endpoint: `/health/ready` answers
/// `status`. Stops when the test ends.
async fn endpoint(status: u16) -> String {
    let app = axum::Router::new().route(
        "/health/ready",
        axum::routing::get(move || async move { (axum::http::StatusCode::from_u16(status).unwrap(), "{\"status\":\"x\"}") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Against moto there is no data plane: a local server plays the endpoint, moto the control
/// plane (which runs no tasks and registers no Cloud Map instance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_broken_hop() {
    let moto = applied(PROD);
    let a = aws(&moto).await;

    let ready = endpoint(200).await;
    let run = reconciler(&moto, &["verify", PROD, "--endpoint", &ready]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("READY"), "{run}");

    let unavailable = endpoint(503).await;
    let run = reconciler(&moto, &["verify", PROD, "--endpoint", &unavailable]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stdout.contains("answered 503"), "{run}");
    assert!(run.stdout.contains("broken hop: ecs service") && run.stdout.contains("0 of 2 tasks running"), "{run}");

    // The stage gone: named first, as it is the first hop from the caller.
    let api_id = api(&a).await.api_id().unwrap().to_string();
    a.apigw.delete_stage().api_id(&api_id).stage_name("$default").send().await.unwrap();
    let run = reconciler(&moto, &["verify", PROD, "--endpoint", &unavailable, "--format", "json"]);
    assert_eq!(run.code, 1, "{run}");
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["verdict"]["broken"], "stage", "{v}");

    // Without --endpoint: moto's API endpoint is not reachable from here, and verify says so.
    let run = reconciler(&moto, &["verify", PROD]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stdout.contains("cannot reach https://") && run.stdout.contains(".execute-api.us-east-1.amazonaws.com"), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_removes_the_edge_before_the_network() {
    let moto = applied(PROD);
    let a = aws(&moto).await;
    let destroy = reconciler(&moto, &["destroy", PROD, "--auto-approve"]);
    assert_eq!(destroy.code, 0, "{destroy}");
    let at = |needle: &str| destroy.stdout.find(needle).unwrap_or_else(|| panic!("{needle} not listed\n{destroy}"));
    assert!(at("apigateway:route route-proxy") < at("apigateway:integration integration"), "routes before the integration\n{destroy}");
    assert!(at("apigateway:integration integration") < at("apigateway:vpc-link vpc-link"), "{destroy}");
    assert!(at("apigateway:integration integration") < at("servicediscovery:service"), "{destroy}");
    assert!(at("apigateway:vpc-link vpc-link") < at("ec2:security-group sg-vpc-link"), "edge before network\n{destroy}");
    assert!(at("apigateway:vpc-link vpc-link") < at("ec2:subnet subnet-private-1"), "{destroy}");
    assert!(at("apigateway:stage stage") < at("logs:log-group log-api"), "{destroy}");
    assert!(a.apigw.get_apis().send().await.unwrap().items().is_empty());
    assert!(vpc_links(&a).await.is_empty());

    // Retained data (the container log group) is no longer the stack's: `output` still prints
    // a valid document on stdout and mentions it on stderr.
    let o = reconciler(&moto, &["output", PROD, "--format", "json"]);
    assert_eq!(o.code, 0, "{o}");
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e})\n{o}"));
    assert_eq!(v["webhook_url"], serde_json::Value::Null);
    assert!(o.stderr.contains("not owned by this stack, ignored"), "{o}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_domain_is_mapped_and_its_dns_record_shown() {
    let moto = Moto::start();
    let a = aws(&moto).await;
    let spec = spec_variant(&moto, PROD, "domain.yaml", |s| {
        s.replace(
            "  name: benchling-webhook-http\n",
            "  name: benchling-webhook-http\n  domain:\n    name: hooks.example.com\n    certificate_arn: arn:aws:acm:us-east-1:123456789012:certificate/abc\n",
        )
    });
    let plan = reconciler(&moto, &["plan", &spec]);
    assert!(plan.stdout.contains("create the DNS record CNAME hooks.example.com -> (known after apply)"), "{plan}");
    let out = apply(&moto, &spec);
    assert!(out.contains("webhook URL:  https://hooks.example.com") && out.contains("https://hooks.example.com/event"), "{out}");
    assert!(out.contains("DNS record to create: CNAME hooks.example.com"), "{out}");

    let domains = a.apigw.get_domain_names().send().await.unwrap();
    assert_eq!(domains.items().len(), 1);
    let d = &domains.items()[0];
    assert_eq!(d.domain_name(), Some("hooks.example.com"));
    assert_eq!(d.domain_name_configurations()[0].certificate_arn(), Some("arn:aws:acm:us-east-1:123456789012:certificate/abc"));
    assert_eq!(d.tags().unwrap().get("reconciler:stack").map(String::as_str), Some("benchling-webhook"));
    let mappings = a.apigw.get_api_mappings().domain_name("hooks.example.com").send().await.unwrap();
    assert_eq!(mappings.items().len(), 1);
    assert_eq!(mappings.items()[0].api_id(), api(&a).await.api_id());
    assert_eq!(mappings.items()[0].stage(), Some("$default"));
    assert_converged(&moto, &spec);

    // The mapping deleted by hand comes back; destroy removes it before the domain.
    let mapping_id = mappings.items()[0].api_mapping_id().unwrap().to_string();
    a.apigw.delete_api_mapping().domain_name("hooks.example.com").api_mapping_id(&mapping_id).send().await.unwrap();
    assert_drift(&moto, &spec, &[("+ apigateway:api-mapping api-mapping", "create")]);
    apply(&moto, &spec);
    assert_converged(&moto, &spec);
    let destroy = reconciler(&moto, &["destroy", &spec, "--auto-approve"]);
    assert_eq!(destroy.code, 0, "{destroy}");
    let at = |needle: &str| destroy.stdout.find(needle).unwrap_or_else(|| panic!("{needle} not listed\n{destroy}"));
    assert!(at("apigateway:api-mapping api-mapping") < at("apigateway:domain-name domain-name"), "{destroy}");
    assert!(a.apigw.get_domain_names().send().await.unwrap().items().is_empty());
}

/// A domain name of the same name that the stack does not own is refused, never adopted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_named_domain_we_do_not_own_is_refused() {
    let moto = Moto::start();
    let a = aws(&moto).await;
    let spec = spec_variant(&moto, PROD, "domain.yaml", |s| {
        s.replace(
            "  name: benchling-webhook-http\n",
            "  name: benchling-webhook-http\n  domain:\n    name: hooks.example.com\n    certificate_arn: arn:aws:acm:us-east-1:123456789012:certificate/abc\n",
        )
    });
    a.apigw
        .create_domain_name()
        .domain_name("hooks.example.com")
        .domain_name_configurations(
            aws_sdk_apigatewayv2::types::DomainNameConfiguration::builder()
                .certificate_arn("arn:aws:acm:us-east-1:123456789012:certificate/other")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let run = reconciler(&moto, &["plan", &spec]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("API Gateway domain name `hooks.example.com` exists but is not owned"), "{run}");
}
