//! CloudWatch Logs: the container and API access log groups, and the service's plumbing:
//! the client, error classification, tags, and the stack's log group name prefixes.

mod log_group;

pub use log_group::{LogGroup, LogGroupFields};

use crate::engine::ownership;
use crate::engine::ownership::{TagDelta, TagMap};
use crate::engine::{Ctx, DynKind, ErrorClass};
use std::collections::HashMap;

crate::engine::calls::service!(aws_sdk_cloudwatchlogs, classify);

/// The CloudWatch Logs kinds.
pub fn kinds() -> Vec<Box<dyn DynKind>> {
    vec![Box::new(LogGroup)]
}

fn classify(code: &str, _message: &str) -> Option<ErrorClass> {
    match code {
        "ResourceNotFoundException" => Some(ErrorClass::Gone),
        // Another operation on the same log group is in progress.
        "OperationAbortedException" => Some(ErrorClass::Conflict),
        "ServiceUnavailableException" => Some(ErrorClass::Retryable),
        _ => None,
    }
}

/// Where the stack's log groups live (`/ecs/<stack>`, `/aws/apigateway/<stack>`). Log groups
/// carry no tags in DescribeLogGroups and their ARNs cannot be tag-conditioned in IAM, so
/// these prefixes both bound the search when no names are given and scope the IAM policy.
pub fn stack_prefixes(stack: &str) -> Vec<String> {
    vec![format!("/ecs/{stack}"), format!("/aws/apigateway/{stack}")]
}

/// The log group of one of the stack's tasks beside the service (`/ecs/<stack>/<task>`): under
/// the stack's prefix, so found like the others, and in IAM under `/ecs/<stack>/*` (which a
/// stack named `<stack>-dev` cannot match).
pub fn task_log_group(stack: &str, task: &str) -> String {
    format!("{}/{task}", stack_prefixes(stack)[0])
}

/// A log group ARN without the `:*` suffix DescribeLogGroups' `arn` carries (the form
/// TagResource and ListTagsForResource take), and with it (the form IAM policies for
/// log streams use).
pub fn arns(arn: &str) -> (String, String) {
    let plain = arn.strip_suffix(":*").unwrap_or(arn);
    (plain.to_string(), format!("{plain}:*"))
}

/// Logical id and comparable tags, from ListTagsForResource's map.
pub fn owned(ctx: &Ctx, tags: Option<&HashMap<String, String>>) -> (Option<String>, TagMap) {
    ownership::owner_of_map(&ctx.settings.stack, tags)
}

/// Applies a tag delta to a log group (`arn` without `:*`).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arn_forms() {
        let (plain, wild) = arns("arn:aws:logs:us-east-1:1:log-group:/ecs/s:*");
        assert_eq!(plain, "arn:aws:logs:us-east-1:1:log-group:/ecs/s");
        assert_eq!(wild, "arn:aws:logs:us-east-1:1:log-group:/ecs/s:*");
        assert_eq!(arns(&plain), (plain.clone(), wild.clone()), "either form in, both out");
    }

    #[test]
    fn logs_error_codes() {
        assert_eq!(classify("ResourceNotFoundException", ""), Some(ErrorClass::Gone));
        assert_eq!(classify("OperationAbortedException", ""), Some(ErrorClass::Conflict));
        assert_eq!(classify("ResourceAlreadyExistsException", ""), None);
    }
}
