//! API Gateway v2: the stack's public entrance. An HTTP API whose one integration reaches the
//! webhook tasks through a VPC link and the Cloud Map service; two catch-all routes; the
//! `$default` stage with access logs and throttling. Shared here: the client, error classes
//! (including endpoints that do not implement a call), tags, and the lookup of the stack's
//! APIs that the API's children (integration, routes, stage) are found under.
//!
//! The VPC link and the API carry the ownership tags. Integrations, routes and stages take no
//! tags the reconciler relies on: they are found by their parent, the stack's API (identity
//! by parent), and everything inside an API the stack owns is the stack's.

mod api;
mod api_mapping;
mod domain_name;
mod integration;
mod route;
mod stage;
mod vpc_link;

pub use api::{ApiFields, HttpApi};
pub use api_mapping::{ApiMapping, ApiMappingFields};
pub use domain_name::{DomainName, DomainNameFields};
pub use integration::{Integration, IntegrationFields};
pub use route::{Route, RouteFields};
pub use stage::{Stage, StageFields};
pub use vpc_link::{VpcLink, VpcLinkFields};

use crate::engine::ownership::{self, TagDelta, TagMap};
use crate::engine::retry::AwsError;
use crate::engine::{call_failed_with, Ctx, DynKind, ErrorClass};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use std::collections::HashMap;

crate::engine::calls::service!(aws_sdk_apigatewayv2, classify, client_only);

/// The API Gateway kinds: the VPC link and the API first, then the API's children.
pub fn kinds() -> Vec<Box<dyn DynKind>> {
    vec![
        Box::new(VpcLink),
        Box::new(HttpApi),
        Box::new(Integration),
        Box::new(Route),
        Box::new(Stage),
        Box::new(DomainName),
        Box::new(ApiMapping),
    ]
}

/// The code given to a call the endpoint does not implement (see [`call_failed`]).
pub const NOT_IMPLEMENTED: &str = "NotImplemented";

fn classify(code: &str, _message: &str) -> Option<ErrorClass> {
    match code {
        "NotFoundException" => Some(ErrorClass::Gone),
        // "Unable to complete operation due to concurrent modification": a route still
        // targets the integration, an integration still uses the VPC link. Try again.
        "ConflictException" => Some(ErrorClass::Conflict),
        "TooManyRequestsException" | "LimitExceededException" => Some(ErrorClass::Throttled),
        _ => None,
    }
}

/// Whether a failed response is not an AWS error at all but a web server's page (HTML, no
/// error code) with 404, 500 or 501: the endpoint does not implement the call (an emulator's
/// gap; moto answers UpdateStage like this). AWS itself always answers with an error code.
pub fn unimplemented_status(status: u16, body: Option<&[u8]>, code: Option<&str>) -> bool {
    let html = body.is_some_and(|b| b.trim_ascii_start().first() == Some(&b'<'));
    let coded = code.is_some_and(|c| c.parse::<u16>().is_err());
    html && !coded && matches!(status, 404 | 500 | 501)
}

/// For `.map_err(call_failed("CreateApi"))` on API Gateway calls. A call the endpoint does not
/// implement is a final error with code [`NOT_IMPLEMENTED`] (not retried as a 5xx), so that a
/// kind can detect the missing capability and degrade.
pub fn call_failed<E>(call: &str) -> impl FnOnce(SdkError<E, Response>) -> anyhow::Error + '_
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    move |e| {
        let seen = match &e {
            SdkError::ServiceError(s) => Some((s.raw().status().as_u16(), s.raw().body().bytes(), s.err().code())),
            SdkError::ResponseError(r) => Some((r.raw().status().as_u16(), r.raw().body().bytes(), None)),
            _ => None,
        };
        if let Some((status, body, code)) = seen {
            if unimplemented_status(status, body, code) {
                return anyhow::Error::new(AwsError::new(
                    call,
                    Some(NOT_IMPLEMENTED.into()),
                    format!(
                        "this endpoint does not implement {call} (it answered HTTP {status} with a web page, not an AWS error: an emulator's gap)"
                    ),
                    ErrorClass::Final,
                ));
            }
        }
        call_failed_with(call, classify)(e)
    }
}

/// Whether the error is a call the endpoint does not implement.
pub fn not_implemented(e: &anyhow::Error) -> bool {
    crate::engine::retry::has_code(e, NOT_IMPLEMENTED)
}

/// IAM ARN patterns of every path the HTTP API kinds call (API Gateway authorises a call as
/// its HTTP verb on the path): the APIs and their routes, integrations and stages, VPC links,
/// domain names and their API mappings, and tags. Each collection is listed beside its items
/// (`/apis` is where an API is created): `/apis*` is the collection and its items (a wildcard
/// also spans `/`), one pattern instead of two, so the policy fits a role inline.
pub fn iam_arns() -> Vec<String> {
    ["/apis*", "/vpclinks*", "/domainnames*", "/tags/*"].iter().map(|p| format!("arn:aws:apigateway:*::{p}")).collect()
}

/// The IAM actions of a tagged resource (VPC link, API, domain name). API Gateway authorises
/// every call as an HTTP verb on a path: GET reads; POST creates (with the stack's tags in the
/// request) and also creates children; PATCH and DELETE change what carries the stack's tags.
pub fn tagged_iam() -> crate::engine::IamActions {
    crate::engine::IamActions {
        read_by_arn: vec!["apigateway:GET"],
        create: vec!["apigateway:POST"],
        change: vec!["apigateway:PATCH", "apigateway:DELETE", "apigateway:POST"],
        arns: iam_arns(),
        ..Default::default()
    }
}

/// The IAM actions of an API mapping, a child of the stack's domain name: judged by the
/// domain's tags, which API Gateway documents as inherited by a domain's API mappings for
/// access control.
pub fn domain_child_iam() -> crate::engine::IamActions {
    crate::engine::IamActions {
        read_by_arn: vec!["apigateway:GET"],
        change: vec!["apigateway:POST", "apigateway:PATCH", "apigateway:DELETE"],
        arns: iam_arns(),
        ..Default::default()
    }
}

/// The IAM actions of a child of the stack's HTTP API (its routes, integrations and stage).
/// Routes and integrations cannot carry tags, and API Gateway documents tag inheritance for
/// access control only for REST API (V1) children and a domain's API mappings, so a
/// resource-tag condition could refuse them. They are granted by path instead: the children
/// of any HTTP API in the account and region (the API's id is not known before the first
/// apply creates it); the reconciler only calls them under an API it owns, found by its tags.
/// One statement, the same from each child kind (the policy builder keeps it once).
pub fn api_child_iam() -> crate::engine::IamActions {
    // `routes*` is the collection and its items (a wildcard also spans `/`).
    let resources: Vec<String> =
        ["routes", "integrations", "stages"].iter().map(|c| format!("arn:aws:apigateway:*::/apis/*/{c}*")).collect();
    crate::engine::IamActions {
        read_by_arn: vec!["apigateway:GET"],
        arns: iam_arns(),
        extra: vec![serde_json::json!({
            "Sid": "HttpApiChildrenByPath",
            "Effect": "Allow",
            "Action": ["apigateway:DELETE", "apigateway:PATCH", "apigateway:POST"],
            "Resource": resources,
        })],
        ..Default::default()
    }
}

/// The ARN API Gateway tags an API or VPC link by: `arn:aws:apigateway:<region>::/apis/<id>`.
pub fn arn(ctx: &Ctx, path: &str) -> String {
    format!("arn:aws:apigateway:{}::{path}", ctx.region())
}

/// Logical id and comparable tags, if the stack owns a resource with these tags.
pub fn owned(ctx: &Ctx, tags: Option<&HashMap<String, String>>) -> Option<(String, TagMap)> {
    let (id, tags) = ownership::owner_of_map(&ctx.settings.stack, tags);
    Some((id?, tags))
}

/// Applies a tag delta to an API or VPC link (by its ARN).
pub async fn apply_tags(ctx: &Ctx, arn: &str, delta: &TagDelta) -> anyhow::Result<()> {
    if !delta.set.is_empty() {
        let tags: HashMap<String, String> = delta.set.clone().into_iter().collect();
        client(ctx).tag_resource().resource_arn(arn).set_tags(Some(tags)).send().await.map_err(call_failed("TagResource"))?;
    }
    if !delta.unset.is_empty() {
        client(ctx)
            .untag_resource()
            .resource_arn(arn)
            .set_tag_keys(Some(delta.unset.clone()))
            .send()
            .await
            .map_err(call_failed("UntagResource"))?;
    }
    Ok(())
}

/// Every item of a listing, page by page: `get(token)` returns one page's items and the next
/// token. An endpoint that repeats the token it was given (or ignores paging) ends the loop.
pub async fn pages<T, F, Fut>(mut get: F) -> anyhow::Result<Vec<T>>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(Vec<T>, Option<String>)>>,
{
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let (items, next) = get(token.clone()).await?;
        out.extend(items);
        match next {
            Some(t) if !t.is_empty() && Some(&t) != token.as_ref() => token = Some(t),
            _ => return Ok(out),
        }
    }
}

/// Every HTTP API in the region (GetApis, tags included): one listing per observation, shared
/// by the API kind and its children's kinds (API Gateway's control plane is rate-limited).
pub async fn all_apis(ctx: &Ctx) -> anyhow::Result<std::sync::Arc<Vec<aws_sdk_apigatewayv2::types::Api>>> {
    ctx.shared_read("apigateway:GetApis", || {
        pages(|token| async move {
            let page = client(ctx).get_apis().set_next_token(token).send().await.map_err(call_failed("GetApis"))?;
            Ok((page.items().to_vec(), page.next_token().map(str::to_string)))
        })
    })
    .await
}

/// Every custom domain name in the region (GetDomainNames, tags included), shared like
/// [`all_apis`].
pub async fn all_pages_of_domains(ctx: &Ctx) -> anyhow::Result<std::sync::Arc<Vec<aws_sdk_apigatewayv2::types::DomainName>>> {
    ctx.shared_read("apigateway:GetDomainNames", || {
        pages(|token| async move {
            let page = client(ctx).get_domain_names().set_next_token(token).send().await.map_err(call_failed("GetDomainNames"))?;
            Ok((page.items().to_vec(), page.next_token().map(str::to_string)))
        })
    })
    .await
}

/// The API ids the stack owns, with their logical ids: the parents the children are found
/// under.
pub async fn stack_apis(ctx: &Ctx) -> anyhow::Result<Vec<(String, String)>> {
    let apis = all_apis(ctx).await?;
    Ok(apis.iter().filter_map(|a| Some((a.api_id()?.to_string(), owned(ctx, a.tags())?.0))).collect())
}

/// The children of every API the stack owns, with their API's id: `list(api_id)` lists one
/// API's integrations, routes or stages.
pub async fn children<T, F, Fut>(ctx: &Ctx, list: F) -> anyhow::Result<Vec<(String, T)>>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Vec<T>>>,
{
    let mut out = Vec::new();
    for (api_id, _) in stack_apis(ctx).await? {
        out.extend(list(api_id.clone()).await?.into_iter().map(|t| (api_id.clone(), t)));
    }
    Ok(out)
}

/// The logical id of a child found under the stack's API: the wanted one whose key is `key`
/// ([`crate::engine::fields::wanted_keys`]), else `<kind word> <key>`, a child the spec does
/// not want (made by hand in an API the stack owns): plan shows it, apply prunes it.
pub fn child_id(keys: &[(String, String)], key: &str, word: &str) -> String {
    crate::engine::fields::logical_id(keys, key, || format!("{word} {key}"))
}

/// The observed form of a child: its physical id is its own id, `api` names the parent.
pub fn child(kind: &'static str, id: String, child_id: &str, api_id: &str, fields: crate::engine::Fields) -> crate::engine::Observed {
    let mut o = crate::engine::Observed::new(kind, id, child_id.to_string(), fields);
    o.attrs.insert("api".into(), api_id.to_string());
    o
}

/// The parent API's id of an observed child.
pub fn api_of(live: &crate::engine::Observed) -> anyhow::Result<&str> {
    live.attrs
        .get("api")
        .map(String::as_str)
        .ok_or_else(|| anyhow::anyhow!("internal error: {} {} was observed without its API", live.kind, live.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_web_page_instead_of_an_aws_error_is_a_missing_call() {
        let page = b"<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>";
        assert!(unimplemented_status(500, Some(page), None));
        assert!(unimplemented_status(500, Some(page), Some("500")), "botocore-style numeric code");
        assert!(unimplemented_status(404, Some(b"  <html>"), None));
        // AWS errors carry a code and a JSON body: never a missing capability.
        assert!(!unimplemented_status(404, Some(br#"{"message":"Invalid API identifier"}"#), Some("NotFoundException")));
        assert!(!unimplemented_status(500, Some(br#"{"message":"internal"}"#), None), "a real 5xx stays retryable");
        assert!(!unimplemented_status(400, Some(page), None));
        assert!(!unimplemented_status(500, None, None));
    }

    #[test]
    fn error_classes() {
        assert_eq!(classify("NotFoundException", ""), Some(ErrorClass::Gone));
        assert_eq!(classify("ConflictException", ""), Some(ErrorClass::Conflict));
        assert_eq!(classify("BadRequestException", ""), None);
    }
}
