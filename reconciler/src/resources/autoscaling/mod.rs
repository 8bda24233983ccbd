//! Application Auto Scaling: the ECS service's scalable target (desired-count bounds) and its
//! target-tracking policies. Neither can be found by tags (moto's ListTagsForResource fails),
//! so both are found by their parent: the resource id `service/<cluster>/<service>` that
//! names the stack's ECS service, taken from the wanted nodes (a literal string there).
//! Shared here: the client, error classes, and what both kinds declare for IAM.

mod scalable_target;
mod scaling_policy;

pub use scalable_target::{ScalableTarget, ScalableTargetFields};
pub use scaling_policy::{ScalingPolicy, ScalingPolicyFields};

pub use crate::engine::fields::{typed, untyped};

use crate::engine::{Desired, ErrorClass, Scoped};
use serde_json::{json, Value};

crate::engine::calls::service!(aws_sdk_applicationautoscaling, classify);

/// The one dimension an ECS service scales on.
pub const DIMENSION: &str = "ecs:service:DesiredCount";

/// Application Auto Scaling's own error codes. A missing target or policy is gone (AWS says
/// ObjectNotFoundException; moto says ValidationException "No scalable target found …" /
/// "No scaling policy found …"); ConcurrentUpdateException clears up by itself.
fn classify(code: &str, message: &str) -> Option<ErrorClass> {
    match code {
        "ObjectNotFoundException" => Some(ErrorClass::Gone),
        "ValidationException" if message.starts_with("No scalable target") || message.starts_with("No scaling policy") => {
            Some(ErrorClass::Gone)
        }
        "ConcurrentUpdateException" => Some(ErrorClass::Conflict),
        _ => None,
    }
}

/// The wanted nodes that name their parent literally, with that resource id.
pub fn by_resource_id<'a>(wanted: &'a [&'a Desired]) -> Vec<(&'a Desired, &'a str)> {
    wanted.iter().filter_map(|w| Some((*w, w.fields.get("resource_id")?.as_str()?))).collect()
}

/// A count or cooldown (field `name`) as the API takes it.
pub fn api_int(name: &str, n: u64) -> anyhow::Result<i32> {
    i32::try_from(n).map_err(|_| anyhow::anyhow!("`{name}` = {n} is too large for Application Auto Scaling"))
}

/// Application Auto Scaling creates its service-linked role for ECS on the first
/// RegisterScalableTarget in the account, with the caller's permissions. An account-wide,
/// AWS-defined role: it cannot be scoped to the stack, only to that one service and role.
fn service_linked_role() -> Value {
    json!({
        "Sid": "AutoscalingCreatesItsServiceLinkedRoleForEcs",
        "Effect": "Allow",
        "Action": "iam:CreateServiceLinkedRole",
        "Resource": "arn:aws:iam::*:role/aws-service-role/ecs.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_ECSService",
        "Condition": {"StringEquals": {"iam:AWSServiceName": "ecs.application-autoscaling.amazonaws.com"}},
    })
}

/// IAM ARN pattern of every scalable target.
const SCALABLE_TARGETS: &str = "arn:aws:application-autoscaling:*:*:scalable-target/*";

/// Target tracking creates and deletes its CloudWatch alarms with the caller's permissions.
/// They are named `TargetTracking-service/<cluster>/<service>-AlarmHigh-<uuid>` (and
/// `-AlarmLow-`), and desired state names the ECS service after the stack.
fn target_tracking_alarms(stack: &str) -> Scoped {
    Scoped {
        actions: vec!["cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms"],
        resources: vec![format!("arn:aws:cloudwatch:*:*:alarm:TargetTracking-service/*/{stack}-Alarm*")],
        read_only: false,
    }
}

/// The Application Auto Scaling kinds, the target first.
pub fn kinds() -> Vec<Box<dyn crate::engine::DynKind>> {
    vec![Box::new(ScalableTarget), Box::new(ScalingPolicy)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_targets_and_policies_are_gone_in_both_dialects() {
        assert_eq!(classify("ObjectNotFoundException", "No scalable target registered for service namespace: ecs"), Some(ErrorClass::Gone));
        assert_eq!(
            classify("ValidationException", "No scalable target found for service namespace: ecs, resource ID: service/c/s"),
            Some(ErrorClass::Gone)
        );
        assert_eq!(classify("ValidationException", "No scaling policy found for service namespace: ecs"), Some(ErrorClass::Gone));
        assert_eq!(classify("ValidationException", "ECS service doesn't exist: service/c/s"), None);
        assert_eq!(classify("ConcurrentUpdateException", ""), Some(ErrorClass::Conflict));
    }

    #[test]
    fn only_literal_resource_ids_are_looked_up() {
        let d = |id: &str, rid: Value| Desired {
            kind: "k",
            id: id.into(),
            fields: json!({"resource_id": rid}).as_object().unwrap().clone(),
            after: vec![],
        };
        let a = d("a", json!("service/c/s"));
        let b = d("b", json!({"$ref": "service", "$attr": "resource_id"}));
        let wanted = [&a, &b];
        let found = by_resource_id(&wanted);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1, "service/c/s");
    }

    #[test]
    fn counts_fit_the_api() {
        assert_eq!(api_int("min", 2).unwrap(), 2);
        let e = api_int("max", 3_000_000_000).unwrap_err().to_string();
        assert!(e.contains("`max` = 3000000000 is too large"), "{e}");
    }
}
