//! ECS: the cluster, the task definition and the Fargate service, one file each, and their
//! shared plumbing: the client, ECS's error classification, tag helpers and the capacity
//! provider strategy shape both the cluster and the service use.
//!
//! Each kind describes its fields as a serde struct (`ClusterFields`, `TaskDefinitionFields`,
//! `ServiceFields`): observe builds it from the API's answer and serialises it
//! ([`untyped`]), create and update deserialise the resolved desired fields into it
//! ([`typed`]). So the shape observe reports and
//! the shape the verbs read cannot drift apart, and a misspelt field is an error, not a
//! silent never-converging difference.

mod cluster;
mod container;
mod rollout;
mod service;
mod service_fields;
mod task_definition;

pub use cluster::{Cluster, ClusterFields};
pub use container::{container_definition, Container, EnvVar, HealthCheck, Log, Mount, SecretRef};
pub use service::EcsService;
pub use service_fields::{Registry, ServiceFields};
pub use task_definition::{TaskDefinition, TaskDefinitionFields};

pub use crate::engine::fields::{changed, typed, untyped};
use crate::engine::ownership::{self, TagDelta, STACK_TAG};
use crate::engine::{Ctx, DynKind, ErrorClass, FieldChange, Fields};
use aws_sdk_ecs::types::{CapacityProviderStrategyItem, Tag};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

crate::engine::calls::service!(aws_sdk_ecs, classify);

/// How the service's tasks are doing, for `reconciler verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskHealth {
    pub running: i32,
    pub desired: i32,
    /// Why the most recently stopped task stopped, if ECS still lists one.
    pub last_stopped: Option<String>,
}

/// DescribeServices, then (only when fewer tasks run than wanted) the latest stopped task's
/// reason: ListTasks (STOPPED) + DescribeTasks. `None`: no such active service.
pub async fn task_health(ctx: &Ctx, cluster: &str, service: &str) -> anyhow::Result<Option<TaskHealth>> {
    let ecs = client(ctx);
    let out = ecs.describe_services().cluster(cluster).services(service).send().await.map_err(call_failed("DescribeServices"))?;
    let Some(svc) = out.services().iter().find(|s| s.status() == Some("ACTIVE")) else { return Ok(None) };
    let mut health = TaskHealth { running: svc.running_count(), desired: svc.desired_count(), last_stopped: None };
    if health.running >= health.desired && health.desired > 0 {
        return Ok(Some(health));
    }
    let stopped = ecs
        .list_tasks()
        .cluster(cluster)
        .service_name(service)
        .desired_status(aws_sdk_ecs::types::DesiredStatus::Stopped)
        .send()
        .await
        .map_err(call_failed("ListTasks"))?;
    if !stopped.task_arns().is_empty() {
        let tasks = ecs
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(stopped.task_arns().to_vec()))
            .send()
            .await
            .map_err(call_failed("DescribeTasks"))?;
        health.last_stopped = tasks
            .tasks()
            .iter()
            .filter(|t| t.stopped_reason().is_some())
            .max_by_key(|t| t.stopped_at().map(|d| d.secs()))
            .and_then(|t| t.stopped_reason())
            .map(str::to_string);
    }
    Ok(Some(health))
}

/// The ECS kinds, dependencies first.
pub fn kinds() -> Vec<Box<dyn DynKind>> {
    vec![Box::new(Cluster), Box::new(TaskDefinition), Box::new(EcsService)]
}

/// ECS's own error codes (see `engine::retry` for the generic rules that follow).
fn classify(code: &str, message: &str) -> Option<ErrorClass> {
    match code {
        "ClusterNotFoundException" | "ServiceNotFoundException" | "ServiceNotActiveException" | "ResourceNotFoundException" => {
            Some(ErrorClass::Gone)
        }
        // Another change is still running on the resource (a deployment, a capacity provider
        // update), or a cluster still holds services that are draining: try again later.
        "ResourceInUseException"
        | "UpdateInProgressException"
        | "ConflictException"
        | "ClusterContainsServicesException"
        | "ClusterContainsTasksException" => Some(ErrorClass::Conflict),
        // A role created a moment ago that ECS cannot assume yet.
        _ if super::iam::is_propagation_error(code, message) => Some(ErrorClass::Propagation),
        // DescribeTaskDefinition / DeregisterTaskDefinition of a revision or family that
        // does not exist (ECS has no dedicated code for it).
        "ClientException" if message.contains("Unable to describe task definition") || message.contains("does not exist") => {
            Some(ErrorClass::Gone)
        }
        _ => None,
    }
}

/// Whether a failed call means the emulator does not implement the operation. moto answers
/// an unimplemented action with a bare HTML "500 Internal Server Error" page; AWS answers
/// every error, 5xx included, with a JSON body. Only ever true against an emulator.
pub fn emulator_lacks_operation<E>(ctx: &Ctx, e: &SdkError<E, Response>) -> bool {
    let Some(raw) = e.raw_response() else { return false };
    lacks_operation(ctx.emulated, raw.status().as_u16(), raw.body().bytes().unwrap_or_default())
}

fn lacks_operation(emulated: bool, status: u16, body: &[u8]) -> bool {
    emulated && status == 500 && String::from_utf8_lossy(body).trim_start().starts_with('<')
}

/// The logical id, if this stack owns a resource with these tags.
pub fn owned_id(ctx: &Ctx, tags: &[Tag]) -> Option<String> {
    ownership::owned_id(&ctx.settings.stack, tags.iter().map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())))
}

/// Tags as compared in diffs (`aws:*` left out).
pub fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    ownership::comparable(tags.iter().map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())))
}

/// Tags in the form ECS's create calls take them (tagged in the same request, so a crash
/// cannot leave an untagged, hence invisible, resource behind).
pub fn ecs_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

/// Converges tags if `tags` is among the changes: adds/overwrites what differs, removes keys
/// no longer wanted. `aws:*` tags were never compared, so they are left alone.
pub async fn sync_tags(ctx: &Ctx, arn: &str, changes: &[FieldChange]) -> anyhow::Result<()> {
    let TagDelta { set, unset } = TagDelta::of(changes);
    if !set.is_empty() {
        client(ctx).tag_resource().resource_arn(arn).set_tags(Some(ecs_tags(&set))).send().await.map_err(call_failed("TagResource"))?;
    }
    if !unset.is_empty() {
        client(ctx).untag_resource().resource_arn(arn).set_tag_keys(Some(unset)).send().await.map_err(call_failed("UntagResource"))?;
    }
    Ok(())
}

/// One entry of a capacity provider strategy (the cluster's default, a service's own).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategyItem {
    pub provider: String,
    pub weight: u64,
    pub base: u64,
}

/// A strategy as compared: sorted by provider; ECS's absent `base` is 0.
pub fn strategy_of(items: &[CapacityProviderStrategyItem]) -> Vec<StrategyItem> {
    let mut out: Vec<StrategyItem> = items
        .iter()
        .map(|i| StrategyItem {
            provider: i.capacity_provider().to_string(),
            weight: i.weight().max(0) as u64,
            base: i.base().max(0) as u64,
        })
        .collect();
    out.sort();
    out
}

/// The API form of a strategy.
pub fn strategy_items(items: &[StrategyItem]) -> anyhow::Result<Vec<CapacityProviderStrategyItem>> {
    items
        .iter()
        .map(|i| {
            CapacityProviderStrategyItem::builder()
                .capacity_provider(&i.provider)
                .weight(i32::try_from(i.weight)?)
                .base(i32::try_from(i.base)?)
                .build()
                .map_err(anyhow::Error::from)
        })
        .collect()
}

/// A literal string field of a desired node (names are literal even before references are
/// resolved).
pub fn literal<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields.get(name).and_then(Value::as_str)
}

/// A count or duration for an ECS API that takes `i32`.
pub fn int(field: &str, n: u64) -> anyhow::Result<i32> {
    i32::try_from(n).map_err(|_| anyhow::anyhow!("{field} = {n} is too large for ECS"))
}

/// Stops the tasks of `family` still running in `cluster` (the stack's drift-correction runs,
/// which `destroy` stops) and waits until they, and any told to stop earlier (a destroy
/// killed while it waited), have exited: ECS sends SIGTERM, then SIGKILL after the container's
/// stop timeout. The tasks stopped or waited for; none when the cluster is gone.
pub async fn stop_family_tasks(ctx: &Ctx, cluster: &str, family: &str, reason: &str) -> anyhow::Result<Vec<String>> {
    use crate::engine::retry::is_gone;
    use aws_sdk_ecs::types::DesiredStatus;
    let list = |wanted: DesiredStatus| task_arns(client(ctx).list_tasks().cluster(cluster).family(family).desired_status(wanted));
    let (running, told_to_stop) = futures::try_join!(list(DesiredStatus::Running), list(DesiredStatus::Stopped))?;
    for arn in &running {
        match client(ctx).stop_task().cluster(cluster).task(arn).reason(reason).send().await.map_err(call_failed("StopTask")) {
            Err(e) if !is_gone(&e) => return Err(e),
            _ => {}
        }
    }
    // Told to stop, earlier or now: waited for until none is still stopping.
    let all: Vec<String> = running.iter().cloned().chain(told_to_stop).collect();
    let up = not_stopped(ctx, cluster, &all).await?;
    if !up.is_empty() {
        crate::engine::wait::until(ctx, &format!("the stopped {family} task(s) to exit"), || async {
            Ok(not_stopped(ctx, cluster, &all).await?.is_empty().then_some(()))
        })
        .await?;
    }
    let mut seen = running;
    seen.extend(up.into_iter().filter(|t| !seen.contains(t)).collect::<Vec<_>>());
    Ok(seen)
}

/// The task ARNs a ListTasks request lists, every page (a crash-looping service can leave
/// more stopped tasks than one page holds); none when the cluster is gone.
pub async fn task_arns(request: aws_sdk_ecs::operation::list_tasks::builders::ListTasksFluentBuilder) -> anyhow::Result<Vec<String>> {
    let mut arns = Vec::new();
    let mut pages = request.into_paginator().send();
    while let Some(page) = pages.next().await {
        match page.map_err(call_failed("ListTasks")) {
            Ok(out) => arns.extend(out.task_arns().iter().cloned()),
            Err(e) if crate::engine::retry::is_gone(&e) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(arns)
}

/// Of these tasks, those not STOPPED yet (running, or told to stop and still STOPPING /
/// DEPROVISIONING): DescribeTasks, 100 at a time.
pub async fn not_stopped(ctx: &Ctx, cluster: &str, tasks: &[String]) -> anyhow::Result<Vec<String>> {
    let mut up = Vec::new();
    for chunk in tasks.chunks(100) {
        let out = client(ctx)
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(call_failed("DescribeTasks"))?;
        up.extend(out.tasks().iter().filter(|t| t.last_status() != Some("STOPPED")).filter_map(|t| t.task_arn().map(str::to_string)));
    }
    Ok(up)
}

/// Which ECS create calls the kinds make: `ecs:TagResource` on create is authorised with
/// `ecs:CreateAction` naming them.
const CREATES: &[&str] = &["CreateCluster", "RegisterTaskDefinition", "CreateService"];

/// IAM ARN pattern for every ECS resource of one type (`cluster` → `arn:aws:ecs:*:*:cluster/*`).
pub fn iam_arn(resource_type: &str) -> String {
    format!("arn:aws:ecs:*:*:{resource_type}/*")
}

/// The service ECS's service-linked role (`AWSServiceRoleForECS`) is for.
const ECS_SERVICE: &str = "ecs.amazonaws.com";

/// Whether ECS refused a call because the account has no service-linked role for it yet
/// ("Unable to assume the service linked role. Please verify that the ECS service linked role
/// exists."): a fresh account, whose first cluster with capacity providers needs it.
pub fn lacks_service_linked_role(e: &anyhow::Error) -> bool {
    crate::engine::retry::aws_error(e).is_some_and(|a| {
        let m = a.message.to_ascii_lowercase();
        m.contains("service linked role") || m.contains("service-linked role")
    })
}

/// Creates ECS's service-linked role. One that exists already ("has been taken") is fine.
/// The caller then retries its call until the propagation deadline: a new role takes a moment
/// to be usable.
pub async fn create_service_linked_role(ctx: &Ctx) -> anyhow::Result<()> {
    crate::log::progress("ECS has no service-linked role in this account yet: creating AWSServiceRoleForECS (once per account)");
    let sent = super::iam::client(ctx)
        .create_service_linked_role()
        .aws_service_name(ECS_SERVICE)
        .send()
        .await
        .map_err(super::iam::call_failed("CreateServiceLinkedRole"));
    match sent {
        Ok(_) => Ok(()),
        Err(e) if crate::engine::retry::aws_error(&e).is_some_and(|a| a.message.contains("has been taken")) => Ok(()),
        Err(e) => Err(e.context(format!(
            "ECS needs its service-linked role and it could not be created; create it once with `aws iam create-service-linked-role --aws-service-name {ECS_SERVICE}` and apply again"
        ))),
    }
}

/// The policy statement for [`create_service_linked_role`]: that one role, for ECS only.
pub fn service_linked_role_statement() -> Value {
    json!({
        "Sid": "EcsCreatesItsServiceLinkedRole",
        "Effect": "Allow",
        "Action": "iam:CreateServiceLinkedRole",
        "Resource": format!("arn:aws:iam::*:role/aws-service-role/{ECS_SERVICE}/AWSServiceRoleForECS"),
        "Condition": {"StringEquals": {"iam:AWSServiceName": ECS_SERVICE}},
    })
}

/// ECS authorises the tags of a create call as `ecs:TagResource` too (since 2023), with the
/// condition key `ecs:CreateAction` naming the create call.
pub fn tag_on_create(stack: &str) -> Value {
    json!({
        "Sid": "EcsTagOnCreate",
        "Effect": "Allow",
        "Action": "ecs:TagResource",
        "Resource": "*",
        "Condition": {"StringEquals": {"ecs:CreateAction": CREATES, format!("aws:RequestTag/{STACK_TAG}"): stack}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_classes() {
        assert_eq!(classify("ClusterNotFoundException", "Cluster not found."), Some(ErrorClass::Gone));
        assert_eq!(classify("ServiceNotActiveException", "Service was not ACTIVE."), Some(ErrorClass::Gone));
        assert_eq!(classify("ServiceNotFoundException", ""), Some(ErrorClass::Gone));
        assert_eq!(classify("ClientException", "Unable to describe task definition."), Some(ErrorClass::Gone));
        assert_eq!(
            classify("ClusterContainsServicesException", "The Cluster cannot be deleted while Services are active."),
            Some(ErrorClass::Conflict)
        );
        assert_eq!(classify("UpdateInProgressException", ""), Some(ErrorClass::Conflict));
        assert_eq!(classify("InvalidParameterException", "subnets can not be empty."), None);
        assert_eq!(classify("ClientException", "Invalid setting for container 'a'."), None);
    }

    #[test]
    fn role_propagation_is_retried() {
        for (code, msg) in [
            (
                "ClientException",
                "ECS was unable to assume the role 'arn:aws:iam::1:role/reconciler/s/s-execution' that was provided for this task. Please verify that the role being passed has the proper trust relationship and permissions and that your IAM user has permissions to pass this role.",
            ),
            ("InvalidParameterException", "Unable to assume the service linked role. Please verify that the ECS service linked role exists."),
            ("InvalidParameterException", "The role arn:aws:iam::1:role/x cannot be assumed by ecs-tasks.amazonaws.com"),
            ("ClientException", "User: arn:aws:sts::1:assumed-role/x is not authorized to perform: sts:AssumeRole on resource: y"),
        ] {
            assert_eq!(classify(code, msg), Some(ErrorClass::Propagation), "{msg}");
        }
        assert_eq!(classify("AccessDeniedException", "Unable to assume role"), None, "only validation codes");
        assert_eq!(classify("InvalidParameterException", "The role ARN is malformed"), None);
    }

    #[test]
    fn unimplemented_operations_are_only_detected_against_an_emulator() {
        let page = b"<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>";
        assert!(lacks_operation(true, 500, page));
        assert!(!lacks_operation(false, 500, page), "AWS's 5xx are retried, never taken for a missing feature");
        assert!(!lacks_operation(true, 500, br#"{"__type":"ServerException","message":"x"}"#));
        assert!(!lacks_operation(true, 400, page));
    }

    #[test]
    fn strategies_are_sorted_and_round_trip() {
        let want = vec![
            StrategyItem { provider: "FARGATE_SPOT".into(), weight: 3, base: 0 },
            StrategyItem { provider: "FARGATE".into(), weight: 1, base: 1 },
        ];
        let api = strategy_items(&want).unwrap();
        let back = strategy_of(&api);
        assert_eq!(back[0].provider, "FARGATE");
        assert_eq!(back.len(), 2);
        assert!(back.contains(&want[0]) && back.contains(&want[1]));
        // ECS leaves `base` out when it is 0.
        let no_base = CapacityProviderStrategyItem::builder().capacity_provider("FARGATE").weight(2).build().unwrap();
        assert_eq!(strategy_of(&[no_base]), vec![StrategyItem { provider: "FARGATE".into(), weight: 2, base: 0 }]);
    }

    #[test]
    fn tag_on_create_names_every_create() {
        for k in kinds() {
            for c in k.iam("s").create {
                assert!(CREATES.contains(&c.trim_start_matches("ecs:")), "{c} is not in CREATES");
            }
        }
        assert_eq!(tag_on_create("s")["Condition"]["StringEquals"]["aws:RequestTag/reconciler:stack"], "s");
    }

    #[test]
    fn typed_fields_reject_unknown_and_missing_fields() {
        let ok = json!({"provider": "FARGATE", "weight": 1, "base": 0});
        assert!(serde_json::from_value::<StrategyItem>(ok).is_ok());
        let typo = json!({"provider": "FARGATE", "wieght": 1, "base": 0});
        assert!(serde_json::from_value::<StrategyItem>(typo).is_err());
    }
}
