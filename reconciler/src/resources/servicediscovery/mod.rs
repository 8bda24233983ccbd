//! Cloud Map (AWS Service Discovery): the private DNS namespace the webhook tasks register
//! in, and the discovery service API Gateway resolves them through. Shared here: the client,
//! error classes, tagging, and waiting for Cloud Map's asynchronous operations.
//!
//! Cloud Map's `List*` calls ignore their filters on moto, so every listing is also filtered
//! client-side. Namespaces and services carry the ownership tags like every other kind.

mod namespace;
mod service;

pub use namespace::{Namespace, NamespaceFields};
pub use service::{DiscoveryService, DiscoveryServiceFields, Ttl};

pub use crate::engine::fields::{changed, typed, untyped};
use crate::engine::ownership::{self, TagDelta, TagMap};
use crate::engine::retry::{self};
use crate::engine::{wait, Ctx, ErrorClass, FieldChange};
use aws_sdk_servicediscovery::types::{OperationStatus, OperationTargetType, Tag};
use std::collections::{BTreeMap, HashMap};

crate::engine::calls::service!(aws_sdk_servicediscovery, classify);

/// Cloud Map's own error codes. Not-found means gone (a delete is done); `ResourceInUse`
/// (a namespace that still has services, a service that still has instances ECS has not
/// deregistered yet) and `DuplicateRequest` (the same operation is still running) clear up
/// by themselves: try again later. So does `ConflictingDomainExists` on a create: observe
/// found no namespace of that name the stack could clash with, so it is the stack's own,
/// created by an earlier attempt or run whose operation has just finished and is not listed
/// yet; observed again, it is found and used (a foreign one of that name in the VPC stops
/// the run at observe, as not owned).
fn classify(code: &str, _message: &str) -> Option<ErrorClass> {
    match code {
        "NamespaceNotFound" | "ServiceNotFound" | "OperationNotFound" | "InstanceNotFound" | "ResourceNotFoundException" => {
            Some(ErrorClass::Gone)
        }
        "ResourceInUse" | "DuplicateRequest" | "ConflictingDomainExists" => Some(ErrorClass::Conflict),
        _ => None,
    }
}

/// IAM ARN pattern for every Cloud Map resource of one type (`namespace`, `service`).
pub fn iam_arn(resource_type: &str) -> String {
    format!("arn:aws:servicediscovery:*:*:{resource_type}/*")
}

/// Cloud Map calls AWS authorises on `*` only (they take no resource type).
pub const ON_ANY: [&str; 3] =
    ["servicediscovery:CreatePrivateDnsNamespace", "servicediscovery:TagResource", "servicediscovery:UntagResource"];

/// The description put on everything this kind creates: for people looking at the console,
/// and (services) a cheap hint that finds a renamed service of the stack without reading the
/// tags of every service in the account. Ownership is still decided by the tags alone.
pub fn description(stack: &str) -> String {
    format!("Managed by reconciler stack {stack}")
}

/// A `CreatorRequestId` for one create call. moto ignores it; on AWS a token reused after the
/// namespace was deleted (a replacement) could answer with the old operation, so each call
/// gets its own. A create that did happen is found by its tags on the next observe instead.
pub fn request_id(ctx: &Ctx, id: &str) -> String {
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let mut token = format!("{}-{id}-{millis}", ctx.settings.stack);
    // The API allows 64 characters; keep the unique end.
    if token.len() > 64 {
        token = token[token.len() - 64..].to_string();
    }
    token
}

/// Tags of one namespace or service, by ARN; `None` when it is gone by now (deleted between
/// the listing and this read, by another stack or a destroy in progress: not an error).
pub async fn tags_of(ctx: &Ctx, arn: &str) -> anyhow::Result<Option<BTreeMap<String, String>>> {
    let out = client(ctx).list_tags_for_resource().resource_arn(arn).send().await.map_err(call_failed("ListTagsForResource"));
    Ok(retry::gone_as_none(out)?.map(|out| out.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect()))
}

/// The logical id, if `stack` owns a resource with these tags.
pub fn owned(ctx: &Ctx, tags: &BTreeMap<String, String>) -> Option<String> {
    ownership::owned_id(&ctx.settings.stack, tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// Tags as the `tags` field compares them.
pub fn comparable_tags(tags: &BTreeMap<String, String>) -> TagMap {
    ownership::comparable(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// Tags in the form create calls take (tagging in the create request itself, so a crash can
/// never leave an untagged, hence invisible, namespace or service behind).
pub fn api_tags(tags: &BTreeMap<String, String>) -> anyhow::Result<Vec<Tag>> {
    tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build().map_err(anyhow::Error::from)).collect()
}

/// Converges tags if `tags` is among the changes: adds/overwrites what differs and removes
/// keys no longer wanted. Keys that were never compared (`aws:*`, the namespace's VPC record)
/// are not in `before`, so they are left alone.
pub async fn sync_tags(ctx: &Ctx, arn: &str, changes: &[FieldChange]) -> anyhow::Result<()> {
    let TagDelta { set, unset } = TagDelta::of(changes);
    if !set.is_empty() {
        client(ctx).tag_resource().resource_arn(arn).set_tags(Some(api_tags(&set)?)).send().await.map_err(call_failed("TagResource"))?;
    }
    if !unset.is_empty() {
        client(ctx).untag_resource().resource_arn(arn).set_tag_keys(Some(unset)).send().await.map_err(call_failed("UntagResource"))?;
    }
    Ok(())
}

/// Where one Cloud Map operation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationState {
    Done,
    Running,
    /// FAIL, with Cloud Map's reason.
    Failed(String),
}

/// SUBMITTED and PENDING are still running; so is a status this SDK does not know yet (the
/// waiter's timeout bounds it). FAIL carries the operation's error code and message.
pub fn operation_state(status: Option<&OperationStatus>, error_code: Option<&str>, error_message: Option<&str>) -> OperationState {
    match status {
        Some(OperationStatus::Success) => OperationState::Done,
        Some(OperationStatus::Fail) => {
            let why = match (error_code, error_message) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (None, Some(m)) => m.to_string(),
                (Some(c), None) => c.to_string(),
                (None, None) => "no reason given".to_string(),
            };
            OperationState::Failed(why)
        }
        _ => OperationState::Running,
    }
}

/// Polls a Cloud Map operation (namespace create/delete, service update) until it succeeds;
/// returns its targets (NAMESPACE / SERVICE → id). FAIL is an error with Cloud Map's reason.
pub async fn wait_for_operation(ctx: &Ctx, operation_id: &str, what: &str) -> anyhow::Result<HashMap<OperationTargetType, String>> {
    let sd = client(ctx);
    wait::until(ctx, what, || async {
        let out = match sd.get_operation().operation_id(operation_id).send().await.map_err(call_failed("GetOperation")) {
            Ok(out) => out,
            // Just submitted: an eventually consistent read may not see it yet.
            Err(e) if retry::is_gone(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(op) = out.operation() else { return Ok(None) };
        match operation_state(op.status(), op.error_code(), op.error_message()) {
            OperationState::Done => Ok(Some(op.targets().cloned().unwrap_or_default())),
            OperationState::Running => Ok(None),
            OperationState::Failed(why) => {
                Err(anyhow::anyhow!("{what}: Cloud Map operation {operation_id} failed ({why}); fix the cause and run the command again"))
            }
        }
    })
    .await
}

/// Each registered instance of a Cloud Map service and its health as Cloud Map reports it
/// (HEALTHY, UNHEALTHY, UNKNOWN), for `reconciler verify`: ListInstances, then
/// GetInstancesHealthStatus.
pub async fn instance_health(ctx: &Ctx, service_id: &str) -> anyhow::Result<Vec<(String, String)>> {
    let sd = client(ctx);
    let mut ids = Vec::new();
    let mut pages = sd.list_instances().service_id(service_id).into_paginator().send();
    while let Some(page) = pages.next().await {
        ids.extend(page.map_err(call_failed("ListInstances"))?.instances().iter().filter_map(|i| i.id().map(str::to_string)));
    }
    if ids.is_empty() {
        return Ok(vec![]);
    }
    let health = sd.get_instances_health_status().service_id(service_id).send().await.map_err(call_failed("GetInstancesHealthStatus"))?;
    let status = health.status().cloned().unwrap_or_default();
    Ok(ids
        .into_iter()
        .map(|id| {
            let h = status.get(&id).map(|s| s.as_str().to_string()).unwrap_or_else(|| "UNKNOWN".into());
            (id, h)
        })
        .collect())
}

/// The Cloud Map kinds, namespace first.
pub fn kinds() -> Vec<Box<dyn crate::engine::DynKind>> {
    vec![Box::new(Namespace), Box::new(DiscoveryService)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_states() {
        assert_eq!(operation_state(Some(&OperationStatus::Success), None, None), OperationState::Done);
        assert_eq!(operation_state(Some(&OperationStatus::Submitted), None, None), OperationState::Running);
        assert_eq!(operation_state(Some(&OperationStatus::Pending), None, None), OperationState::Running);
        assert_eq!(operation_state(None, None, None), OperationState::Running);
        assert_eq!(
            operation_state(Some(&OperationStatus::Fail), Some("CANNOT_CREATE_HOSTED_ZONE"), Some("The VPC does not exist")),
            OperationState::Failed("CANNOT_CREATE_HOSTED_ZONE: The VPC does not exist".into())
        );
        assert_eq!(operation_state(Some(&OperationStatus::Fail), None, None), OperationState::Failed("no reason given".into()));
    }

    #[test]
    fn error_classes() {
        assert_eq!(classify("NamespaceNotFound", ""), Some(ErrorClass::Gone));
        assert_eq!(classify("ServiceNotFound", ""), Some(ErrorClass::Gone));
        assert_eq!(classify("ResourceInUse", "has instances"), Some(ErrorClass::Conflict));
        assert_eq!(classify("ConflictingDomainExists", "vpc-1"), Some(ErrorClass::Conflict));
        assert_eq!(classify("InvalidInput", ""), None);
    }

    #[test]
    fn tags_compare_without_aws_tags() {
        let tags: BTreeMap<String, String> =
            [("aws:cloudformation:stack-name", "x"), ("a", "1")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(comparable_tags(&tags), TagMap::from([("a".to_string(), "1".to_string())]));
    }
}
