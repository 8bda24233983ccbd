//! The api section: the public entrance. An HTTP API whose one private integration reaches
//! the tasks through a VPC link (in the private subnets, with the `sg-vpc-link` group) and the
//! Cloud Map service; `ANY /` and `ANY /{proxy+}` routes; the `$default` stage (no stage name
//! in the path), auto-deployed, with JSON access logs and default route throttling.

use super::{refs_to, Builder};
use crate::engine::{Ref, Set};
use crate::ids;
use crate::resources::apigateway::{
    ApiFields, ApiMappingFields, DomainNameFields, IntegrationFields, RouteFields, StageFields, VpcLinkFields,
};
use crate::resources::logs::LogGroupFields;

/// API Gateway cuts an HTTP API's integration off at 30 s; stay under it.
pub const INTEGRATION_TIMEOUT_MS: u64 = 29_000;

/// The header the integration overwrites with the caller's address as API Gateway saw it: the
/// only client address the service trusts for `WEBHOOK_ALLOW_CIDRS` (its
/// `WEBHOOK_CLIENT_IP_HEADER` default). A caller can send this header too; API Gateway
/// replaces it, where it would append to `X-Forwarded-For`.
pub const CLIENT_IP_HEADER: &str = "x-webhook-source-ip";

/// The routes: everything goes to the service, which routes by path itself.
pub const ROUTES: [(&str, &str); 2] = [("route-root", "ANY /"), ("route-proxy", "ANY /{proxy+}")];

/// One JSON object per request (values quoted, so that an empty value is still valid JSON):
/// who called, what, how it went at the edge and at the integration, and why it failed.
pub const ACCESS_LOG_FORMAT: &str = concat!(
    r#"{"requestId":"$context.requestId","extendedRequestId":"$context.extendedRequestId","#,
    r#""ip":"$context.identity.sourceIp","requestTime":"$context.requestTime","httpMethod":"$context.httpMethod","#,
    r#""routeKey":"$context.routeKey","path":"$context.path","status":"$context.status","#,
    r#""protocol":"$context.protocol","responseLength":"$context.responseLength","responseLatency":"$context.responseLatency","#,
    r#""integrationStatus":"$context.integration.status","integrationLatency":"$context.integration.latency","#,
    r#""integrationError":"$context.integrationErrorMessage","error":"$context.error.message"}"#
);

fn api_log_group(stack: &str) -> String {
    crate::resources::logs::stack_prefixes(stack)[1].clone()
}

pub(super) fn build(b: &mut Builder, private_subnets: &[String]) {
    let Some(api) = b.spec.api.clone() else { return };
    let stack = b.spec.name.clone();

    if let Some(l) = &api.access_logs {
        let log_group = |tags| LogGroupFields { name: api_log_group(&stack), retention_days: Some(l.retention_days.into()), tags };
        b.add_with_policy("logs:log-group", ids::LOG_API, log_group, &[], l.deletion_policy);
    }
    let vpc_link = |tags| VpcLinkFields {
        name: stack.clone(),
        subnets: refs_to(private_subnets),
        security_groups: Set::of(vec![Ref::to(ids::SG_VPC_LINK)]),
        tags,
    };
    b.add("apigateway:vpc-link", ids::VPC_LINK, vpc_link, &[]);
    b.add("apigateway:api", ids::API, |tags| ApiFields { name: api.name.clone(), protocol: "HTTP".into(), tags }, &[]);
    let integration = IntegrationFields {
        api: Ref::to(ids::API),
        integration_type: "HTTP_PROXY".into(),
        method: "ANY".into(),
        connection_type: "VPC_LINK".into(),
        connection_id: Ref::to(ids::VPC_LINK),
        uri: Ref::attr(ids::DISCOVERY_SERVICE, "arn"),
        payload_format: "1.0".into(),
        timeout_ms: INTEGRATION_TIMEOUT_MS,
        request_parameters: [(format!("overwrite:header.{CLIENT_IP_HEADER}"), "$context.identity.sourceIp".to_string())].into(),
    };
    b.add_untagged("apigateway:integration", ids::INTEGRATION, integration, &[]);
    for (id, key) in ROUTES {
        let route = RouteFields {
            api: Ref::to(ids::API),
            route_key: key.into(),
            integration: Ref::to(ids::INTEGRATION),
            authorization: "NONE".into(),
        };
        b.add_untagged("apigateway:route", id, route, &[]);
    }
    let logs = api.access_logs.as_ref();
    let stage = StageFields {
        api: Ref::to(ids::API),
        name: "$default".into(),
        auto_deploy: true,
        access_log_destination: logs.map(|_| Ref::attr(ids::LOG_API, "arn")),
        access_log_format: logs.map(|_| ACCESS_LOG_FORMAT.into()),
        throttling_rate: api.throttling.as_ref().map(|t| t.rate),
        throttling_burst: api.throttling.as_ref().map(|t| t.burst.into()),
    };
    // The routes exist before the stage deploys them.
    b.add_untagged("apigateway:stage", ids::STAGE, stage, &["route-root", "route-proxy"]);
    if let Some(d) = &api.domain {
        let domain = |tags| DomainNameFields { name: d.name.clone(), certificate_arn: d.certificate_arn.clone(), tags };
        b.add("apigateway:domain-name", ids::DOMAIN_NAME, domain, &[]);
        let mapping =
            ApiMappingFields { domain: Ref::to(ids::DOMAIN_NAME), api: Ref::to(ids::API), stage: "$default".into(), key: String::new() };
        b.add_untagged("apigateway:api-mapping", "api-mapping", mapping, &[ids::STAGE]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_log_format_is_json() {
        let v: serde_json::Value = serde_json::from_str(ACCESS_LOG_FORMAT).expect("valid JSON");
        for field in ["requestId", "ip", "status", "integrationStatus", "integrationError", "error"] {
            assert!(v.get(field).is_some(), "{field} missing");
        }
    }
}
