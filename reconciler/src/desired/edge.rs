//! The api section: the public entrance. An HTTP API whose one private integration reaches
//! the tasks through a VPC link (in the private subnets, with the `sg-vpc-link` group) and the
//! Cloud Map service; `ANY /` and `ANY /{proxy+}` routes; the `$default` stage (no stage name
//! in the path), auto-deployed, with JSON access logs and default route throttling.

use super::{obj, Builder};
use crate::engine::{reference, reference_to, set};
use crate::ids;
use serde_json::{json, Value};

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
        b.add_with_policy(
            "logs:log-group",
            ids::LOG_API,
            obj(json!({"name": api_log_group(&stack), "retention_days": l.retention_days})),
            &[],
            l.deletion_policy,
        );
    }
    b.add(
        "apigateway:vpc-link",
        ids::VPC_LINK,
        obj(json!({
            "name": stack,
            "subnets": set(private_subnets.iter().map(|s| reference(s)).collect()),
            "security_groups": set(vec![reference("sg-vpc-link")]),
        })),
        &[],
    );
    b.add("apigateway:api", ids::API, obj(json!({"name": api.name, "protocol": "HTTP"})), &[]);
    b.add_untagged(
        "apigateway:integration",
        ids::INTEGRATION,
        obj(json!({
            "api": reference(ids::API),
            "integration_type": "HTTP_PROXY",
            "method": "ANY",
            "connection_type": "VPC_LINK",
            "connection_id": reference(ids::VPC_LINK),
            "uri": reference_to(ids::DISCOVERY_SERVICE, "arn"),
            "payload_format": "1.0",
            "timeout_ms": INTEGRATION_TIMEOUT_MS,
            "request_parameters": {format!("overwrite:header.{CLIENT_IP_HEADER}"): "$context.identity.sourceIp"},
        })),
        &[],
    );
    for (id, key) in ROUTES {
        b.add_untagged(
            "apigateway:route",
            id,
            obj(json!({"api": reference(ids::API), "route_key": key, "integration": reference(ids::INTEGRATION), "authorization": "NONE"})),
            &[],
        );
    }
    let (destination, format) = match &api.access_logs {
        Some(_) => (reference_to(ids::LOG_API, "arn"), json!(ACCESS_LOG_FORMAT)),
        None => (Value::Null, Value::Null),
    };
    b.add_untagged(
        "apigateway:stage",
        ids::STAGE,
        obj(json!({
            "api": reference(ids::API),
            "name": "$default",
            "auto_deploy": true,
            "access_log_destination": destination,
            "access_log_format": format,
            "throttling_rate": api.throttling.as_ref().map(|t| t.rate),
            "throttling_burst": api.throttling.as_ref().map(|t| t.burst),
        })),
        // The routes exist before the stage deploys them.
        &["route-root", "route-proxy"],
    );
    if let Some(d) = &api.domain {
        b.add("apigateway:domain-name", ids::DOMAIN_NAME, obj(json!({"name": d.name, "certificate_arn": d.certificate_arn})), &[]);
        b.add_untagged(
            "apigateway:api-mapping",
            "api-mapping",
            obj(json!({"domain": reference(ids::DOMAIN_NAME), "api": reference(ids::API), "stage": "$default", "key": ""})),
            &["stage"],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_log_format_is_json() {
        let v: Value = serde_json::from_str(ACCESS_LOG_FORMAT).expect("valid JSON");
        for field in ["requestId", "ip", "status", "integrationStatus", "integrationError", "error"] {
            assert!(v.get(field).is_some(), "{field} missing");
        }
    }
}
