//! `scheduler:schedule-group` — the stack's schedule group: found by its name (the stack's),
//! owned by its tags. Schedules take no tags, so this group is what makes a schedule the
//! stack's (see the module comment). physical id = the name; dependents reference `name`.
//!
//! DeleteScheduleGroup also deletes the schedules in it, asynchronously (the group is
//! DELETING meanwhile and its name cannot be reused): delete waits until it is gone.

use super::{apply_tags, call_failed, client, find_group, iam_arn, scheduler_tags, stack_group};
use crate::engine::fields::{typed, untyped};
use crate::engine::ownership::{not_owned, TagDelta, TagMap};
use crate::engine::retry::{gone_as_none, has_code, observe_again};
use crate::engine::{wait, Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed};
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

pub struct ScheduleGroup;

/// The fields of a schedule group, exactly as desired state builds them and observe reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleGroupFields {
    pub name: String,
    pub tags: TagMap,
}

fn identity(name: &str, arn: &str) -> Identity {
    Identity::id(name).with("arn", arn).with("name", name)
}

impl Kind for ScheduleGroup {
    fn name(&self) -> &'static str {
        "scheduler:schedule-group"
    }

    type Typed = ScheduleGroupFields;

    fn replace_on(&self) -> &'static [&'static str] {
        &["name"]
    }

    /// GetScheduleGroup + ListTagsForResource for the stack's group and any other wanted name.
    async fn observe(&self, ctx: &Ctx, wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let stack = &ctx.settings.stack;
        let wanted: Vec<ScheduleGroupFields> = crate::engine::fields::wanted(self.name(), wanted)?;
        let wanted: BTreeSet<&str> = wanted.iter().map(|w| w.name.as_str()).collect();
        let mut names: BTreeSet<String> = wanted.iter().map(|n| n.to_string()).collect();
        names.insert(stack_group(stack));
        let mut found = Vec::new();
        for g in try_join_all(names.iter().map(|n| find_group(ctx, n))).await?.into_iter().flatten() {
            match g.owned_as {
                Some(id) => {
                    let fields = ScheduleGroupFields { name: g.name.clone(), tags: g.tags };
                    let ident = identity(&g.name, &g.arn);
                    found.push(Observed { attrs: ident.attrs, ..Observed::new(self.name(), id, g.name.clone(), untyped(&fields)) });
                }
                None if wanted.contains(g.name.as_str()) => {
                    return Err(not_owned("EventBridge Scheduler schedule group", &g.name, stack, &g.tags))
                }
                None => {}
            }
        }
        Ok(found)
    }

    async fn create(&self, ctx: &Ctx, id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: ScheduleGroupFields = typed(self.name(), fields)?;
        // Looked up first: AWS refuses an existing name, but moto replaces the group (and
        // drops its schedules), so the refusal cannot be relied on.
        let exists = |g: super::FoundGroup| match g.owned_as {
            Some(owned_as) => observe_again(
                "CreateScheduleGroup",
                format!("schedule group `{}` already exists as this stack's `{owned_as}` (an earlier attempt made it)", g.name),
            ),
            None => not_owned("EventBridge Scheduler schedule group", &g.name, &ctx.settings.stack, &g.tags),
        };
        if let Some(g) = find_group(ctx, &f.name).await? {
            return Err(exists(g));
        }
        let sent = client(ctx)
            .create_schedule_group()
            .name(&f.name)
            .set_tags(Some(scheduler_tags(&f.tags)?))
            .client_token(ctx.settings.client_token(id))
            .send()
            .await
            .map_err(call_failed("CreateScheduleGroup"));
        match sent {
            Ok(out) => Ok(identity(&f.name, out.schedule_group_arn())),
            Err(e) if has_code(&e, "ConflictException") => match find_group(ctx, &f.name).await? {
                Some(g) => Err(exists(g)),
                // Still DELETING from an earlier destroy: try again once it is gone.
                None => Err(observe_again("CreateScheduleGroup", format!("schedule group `{}` is still being deleted", f.name))),
            },
            Err(e) => Err(e),
        }
    }

    async fn update(&self, ctx: &Ctx, live: &Observed, _fields: &Fields, changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        let arn = live
            .attrs
            .get("arn")
            .ok_or_else(|| anyhow::anyhow!("internal error: schedule group {} was observed without an ARN", live.physical_id))?;
        apply_tags(ctx, arn, &TagDelta::of(changes)).await?;
        Ok(None)
    }

    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        let name = &live.physical_id;
        let sched = client(ctx);
        gone_as_none(sched.delete_schedule_group().name(name).send().await.map_err(call_failed("DeleteScheduleGroup")))?;
        wait::until(ctx, &format!("schedule group `{name}` to be deleted"), || async {
            let out = gone_as_none(sched.get_schedule_group().name(name).send().await.map_err(call_failed("GetScheduleGroup")))?;
            Ok(out.is_none().then_some(()))
        })
        .await
    }

    fn iam(&self, _stack: &str) -> IamActions {
        IamActions {
            read_by_arn: vec!["scheduler:GetScheduleGroup", "scheduler:ListTagsForResource"],
            // Tags given to CreateScheduleGroup are also authorised as TagResource.
            create: vec!["scheduler:CreateScheduleGroup", "scheduler:TagResource"],
            change: vec!["scheduler:TagResource", "scheduler:UntagResource", "scheduler:DeleteScheduleGroup"],
            arns: vec![iam_arn("schedule-group")],
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_shape() {
        let f = ScheduleGroupFields { name: "s".into(), tags: TagMap::from([("reconciler:stack".to_string(), "s".to_string())]) };
        assert_eq!(serde_json::Value::Object(untyped(&f)), json!({"name": "s", "tags": {"reconciler:stack": "s"}}));
        assert_eq!(typed::<ScheduleGroupFields>("scheduler:schedule-group", &untyped(&f)).unwrap(), f);
    }

    #[test]
    fn group_calls_are_limited_by_the_stack_s_tags() {
        let a = ScheduleGroup.iam("s");
        assert!(a.create.contains(&"scheduler:CreateScheduleGroup") && a.change.contains(&"scheduler:DeleteScheduleGroup"));
        assert_eq!(a.arns, vec!["arn:aws:scheduler:*:*:schedule-group/*".to_string()]);
        assert!(a.read.is_empty(), "no listing: the group is found by name");
    }
}
