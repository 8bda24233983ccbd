//! EventBridge Scheduler: the drift-correction schedule and the schedule group that owns it,
//! and what both kinds share: the client, error classification, tags, and the stack's group.
//!
//! Schedules take no tags; schedule groups do. So the stack owns one group, named after the
//! stack and tagged like every owned resource, and every schedule in that group is the
//! stack's; a schedule anywhere else is never looked at. IAM scopes the schedule calls to the
//! group's schedules by ARN (`schedule/<stack>/*`) and the group calls by its tags.

mod schedule;
mod schedule_group;

pub use schedule::{Schedule, ScheduleFields, ScheduleTarget};
pub use schedule_group::{ScheduleGroup, ScheduleGroupFields};

use crate::engine::ownership::{self, TagDelta, TagMap};
use crate::engine::retry::gone_as_none;
use crate::engine::{Ctx, DynKind, ErrorClass};
use aws_sdk_scheduler::types::Tag;

crate::engine::calls::service!(aws_sdk_scheduler, classify);

/// The Scheduler kinds, the group first.
pub fn kinds() -> Vec<Box<dyn DynKind>> {
    vec![Box::new(ScheduleGroup), Box::new(Schedule)]
}

/// The schedule group the stack owns: named after the stack (one per stack and region).
pub fn stack_group(stack: &str) -> String {
    stack.to_string()
}

fn classify(code: &str, message: &str) -> Option<ErrorClass> {
    match code {
        "ResourceNotFoundException" => Some(ErrorClass::Gone),
        "InternalServerException" => Some(ErrorClass::Retryable),
        // A role created a moment ago that Scheduler cannot assume yet.
        _ => super::iam::propagation(code, message),
    }
}

/// Tags in Scheduler's request shape.
pub fn scheduler_tags(tags: &TagMap) -> anyhow::Result<Vec<Tag>> {
    tags.iter().map(|(k, v)| Ok(Tag::builder().key(k).value(v).build()?)).collect()
}

/// A group as found: its ARN, its owner (the logical id, if this stack owns it) and tags.
#[derive(Clone)]
pub struct FoundGroup {
    pub name: String,
    pub arn: String,
    pub owned_as: Option<String>,
    pub tags: TagMap,
}

/// GetScheduleGroup + ListTagsForResource; `None` if there is no such group (or it is being
/// deleted, which makes it unusable and ends in its removal). Read once per observation for
/// both kinds (the group's and its schedules').
pub async fn find_group(ctx: &Ctx, name: &str) -> anyhow::Result<Option<FoundGroup>> {
    let found = ctx.shared_read(&format!("scheduler:GetScheduleGroup {name}"), || read_group(ctx, name)).await?;
    Ok(found.as_ref().clone())
}

async fn read_group(ctx: &Ctx, name: &str) -> anyhow::Result<Option<FoundGroup>> {
    let sched = client(ctx);
    let Some(g) = gone_as_none(sched.get_schedule_group().name(name).send().await.map_err(call_failed("GetScheduleGroup")))? else {
        return Ok(None);
    };
    if g.state().is_some_and(|s| s.as_str() == "DELETING") {
        return Ok(None);
    }
    let Some(arn) = g.arn().map(str::to_string) else { return Ok(None) };
    let Some(t) = gone_as_none(sched.list_tags_for_resource().resource_arn(&arn).send().await.map_err(call_failed("ListTagsForResource")))?
    else {
        return Ok(None);
    };
    let pairs = || t.tags().iter().map(|t| (t.key(), t.value()));
    Ok(Some(FoundGroup {
        name: name.to_string(),
        arn,
        owned_as: ownership::owned_id(&ctx.settings.stack, pairs()),
        tags: ownership::comparable(pairs()),
    }))
}

/// Applies a tag delta to a schedule group.
pub async fn apply_tags(ctx: &Ctx, arn: &str, delta: &TagDelta) -> anyhow::Result<()> {
    if !delta.set.is_empty() {
        client(ctx)
            .tag_resource()
            .resource_arn(arn)
            .set_tags(Some(scheduler_tags(&delta.set)?))
            .send()
            .await
            .map_err(call_failed("TagResource"))?;
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

/// IAM ARN pattern of every Scheduler resource of one type (`schedule-group` →
/// `arn:aws:scheduler:*:*:schedule-group/*`).
pub fn iam_arn(resource_type: &str) -> String {
    format!("arn:aws:scheduler:*:*:{resource_type}/*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_error_codes() {
        assert_eq!(classify("ResourceNotFoundException", "Schedule x does not exist."), Some(ErrorClass::Gone));
        assert_eq!(classify("InternalServerException", ""), Some(ErrorClass::Retryable));
        assert_eq!(classify("ConflictException", "Schedule x already exists."), None, "handled where it is met: an existing name");
        assert_eq!(
            classify("ValidationException", "The execution role you provide must allow AWS EventBridge Scheduler to assume the role."),
            Some(ErrorClass::Propagation),
            "a role created a moment ago"
        );
        assert_eq!(classify("ValidationException", "Invalid Schedule Expression rate(0 minutes)."), None);
    }
}
