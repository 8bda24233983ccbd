//! `scheduler:schedule` — a schedule in the stack's schedule group, running an ECS task on
//! Fargate (the drift-correction task). Schedules take no tags: a schedule is the stack's
//! because it is in the stack's group, and it is found by its parent (the group, if the stack
//! owns it) and its name. physical id = the name. A schedule in the group that no wanted node
//! names is reported as `schedule-<name>` (the logical id desired state gives `<name>`), so
//! that it is pruned.
//!
//! UpdateSchedule replaces the whole definition, so every update sends every field. The
//! task definition is referenced by revision: a new revision repoints the schedule in the
//! same apply.

use super::{call_failed, client, find_group, iam_arn, stack_group};
use crate::engine::fields::{typed, untyped};
use crate::engine::ownership::not_owned;
use crate::engine::retry::{gone_as_none, has_code, observe_again};
use crate::engine::{Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed, Scoped};
use crate::engine::{Ref, Set};
use aws_sdk_scheduler::types::{
    AssignPublicIp, AwsVpcConfiguration, EcsParameters, FlexibleTimeWindow, FlexibleTimeWindowMode, LaunchType, NetworkConfiguration,
    PropagateTags, RetryPolicy, ScheduleState, Target,
};
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub struct Schedule;

/// The fields of a schedule, exactly as desired state builds them and observe reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleFields {
    pub name: String,
    /// The schedule group (the stack's).
    pub group: Ref,
    /// `rate(...)`, `cron(...)` or `at(...)`.
    pub expression: String,
    /// IANA time zone that `cron` and `at` expressions are read in.
    pub timezone: String,
    /// `ENABLED` or `DISABLED`.
    pub state: String,
    /// `null`: the window is OFF (runs at the scheduled time); else its width in minutes.
    pub flexible_window_minutes: Option<u64>,
    pub description: String,
    pub target: ScheduleTarget,
}

/// An ECS RunTask target on Fargate in awsvpc mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleTarget {
    /// The cluster's ARN.
    pub cluster: Ref,
    /// The role Scheduler assumes to run the task (ecs:RunTask, iam:PassRole).
    pub role: Ref,
    /// The task definition revision's ARN.
    pub task_definition: Ref,
    pub launch_type: String,
    pub task_count: u64,
    /// Sorted.
    pub subnets: Set<Ref>,
    /// Sorted.
    pub security_groups: Set<Ref>,
    pub assign_public_ip: bool,
    /// `TASK_DEFINITION`: the task carries its definition's tags (the stack's), so that the
    /// stack's policy may stop it (`destroy`) and its cost is the stack's; `NONE`: untagged.
    pub propagate_tags: String,
    /// Retries of a failed RunTask, and how long Scheduler keeps trying one run.
    pub retry_attempts: u64,
    pub max_event_age_seconds: u64,
}

/// Scheduler's defaults where a schedule leaves them out.
const DEFAULT_TIMEZONE: &str = "UTC";
const DEFAULT_RETRY_ATTEMPTS: u64 = 185;
const DEFAULT_MAX_EVENT_AGE: u64 = 86_400;
/// A target that propagates no tags (Scheduler's only value is `TASK_DEFINITION`; absent = none).
const NO_TAGS: &str = "NONE";

/// The comparable fields of a schedule as GetSchedule returns it. A target that is not an ECS
/// task (changed by hand) reports empty ECS fields, so that the update puts the task back.
pub fn fields_of(s: &aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput) -> ScheduleFields {
    let target = s.target();
    let ecs = target.and_then(|t| t.ecs_parameters());
    let vpc = ecs.and_then(|e| e.network_configuration()).and_then(|n| n.awsvpc_configuration());
    let retry = target.and_then(|t| t.retry_policy());
    let window = s.flexible_time_window();
    ScheduleFields {
        name: s.name().unwrap_or_default().to_string(),
        group: s.group_name().unwrap_or_default().to_string().into(),
        expression: s.schedule_expression().unwrap_or_default().to_string(),
        timezone: s.schedule_expression_timezone().unwrap_or(DEFAULT_TIMEZONE).to_string(),
        state: s.state().map(|x| x.as_str().to_string()).unwrap_or_else(|| "ENABLED".into()),
        flexible_window_minutes: window
            .filter(|w| *w.mode() == FlexibleTimeWindowMode::Flexible)
            .map(|w| w.maximum_window_in_minutes().unwrap_or(0).max(0) as u64),
        description: s.description().unwrap_or_default().to_string(),
        target: ScheduleTarget {
            cluster: target.map(|t| t.arn().to_string()).unwrap_or_default().into(),
            role: target.map(|t| t.role_arn().to_string()).unwrap_or_default().into(),
            task_definition: ecs.map(|e| e.task_definition_arn().to_string()).unwrap_or_default().into(),
            launch_type: ecs.and_then(|e| e.launch_type()).map(|l| l.as_str().to_string()).unwrap_or_default(),
            task_count: ecs.map(|e| e.task_count().unwrap_or(1).max(0) as u64).unwrap_or(0),
            subnets: vpc.map(|v| v.subnets().to_vec()).unwrap_or_default().into(),
            security_groups: vpc.map(|v| v.security_groups().to_vec()).unwrap_or_default().into(),
            assign_public_ip: vpc.and_then(|v| v.assign_public_ip()) == Some(&AssignPublicIp::Enabled),
            propagate_tags: ecs.and_then(|e| e.propagate_tags()).map(|p| p.as_str().to_string()).unwrap_or_else(|| NO_TAGS.into()),
            retry_attempts: retry.and_then(|r| r.maximum_retry_attempts()).map(|n| n.max(0) as u64).unwrap_or(DEFAULT_RETRY_ATTEMPTS),
            max_event_age_seconds: retry
                .and_then(|r| r.maximum_event_age_in_seconds())
                .map(|n| n.max(0) as u64)
                .unwrap_or(DEFAULT_MAX_EVENT_AGE),
        },
    }
}

fn int(field: &str, n: u64) -> anyhow::Result<i32> {
    i32::try_from(n).map_err(|_| anyhow::anyhow!("{field} = {n} is too large for EventBridge Scheduler"))
}

/// The API form of the schedule's target, window and state.
fn request_parts(f: &ScheduleFields) -> anyhow::Result<(Target, FlexibleTimeWindow, ScheduleState)> {
    let t = &f.target;
    let vpc = AwsVpcConfiguration::builder()
        .set_subnets(Some(t.subnets.ids()))
        .set_security_groups(Some(t.security_groups.ids()))
        .assign_public_ip(if t.assign_public_ip { AssignPublicIp::Enabled } else { AssignPublicIp::Disabled })
        .build()?;
    let ecs = EcsParameters::builder()
        .task_definition_arn(&t.task_definition)
        .launch_type(LaunchType::from(t.launch_type.as_str()))
        .task_count(int("task_count", t.task_count)?)
        .network_configuration(NetworkConfiguration::builder().awsvpc_configuration(vpc).build())
        .set_propagate_tags((t.propagate_tags != NO_TAGS).then(|| PropagateTags::from(t.propagate_tags.as_str())))
        .build()?;
    let target = Target::builder()
        .arn(&t.cluster)
        .role_arn(&t.role)
        .ecs_parameters(ecs)
        .retry_policy(
            RetryPolicy::builder()
                .maximum_retry_attempts(int("retry_attempts", t.retry_attempts)?)
                .maximum_event_age_in_seconds(int("max_event_age_seconds", t.max_event_age_seconds)?)
                .build(),
        )
        .build()?;
    let window = match f.flexible_window_minutes {
        None => FlexibleTimeWindow::builder().mode(FlexibleTimeWindowMode::Off).build()?,
        Some(m) => FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Flexible)
            .maximum_window_in_minutes(int("flexible_window_minutes", m)?)
            .build()?,
    };
    Ok((target, window, ScheduleState::from(f.state.as_str())))
}

/// The names of the schedules in `group`. ListSchedules filters by group; the name is
/// compared again here (cheap, and an emulator's filter is not trusted).
async fn names_in(ctx: &Ctx, group: &str) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    let mut pages = client(ctx).list_schedules().group_name(group).into_paginator().send();
    while let Some(page) = pages.next().await {
        for s in page.map_err(call_failed("ListSchedules"))?.schedules() {
            if s.group_name() == Some(group) {
                names.extend(s.name().map(str::to_string));
            }
        }
    }
    Ok(names)
}

async fn get(ctx: &Ctx, group: &str, name: &str) -> anyhow::Result<Option<aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput>> {
    gone_as_none(client(ctx).get_schedule().group_name(group).name(name).send().await.map_err(call_failed("GetSchedule")))
}

/// The logical id of a schedule in the stack's group that no wanted node names.
pub fn logical_id_of(name: &str) -> String {
    format!("schedule-{name}")
}

impl Kind for Schedule {
    fn name(&self) -> &'static str {
        "scheduler:schedule"
    }

    type Typed = ScheduleFields;

    fn replace_on(&self) -> &'static [&'static str] {
        &["name", "group"]
    }

    /// The stack's group (found by name, owned by its tags) and, meanwhile, ListSchedules in it
    /// then GetSchedule per schedule. What a group the stack does not own holds is not used.
    async fn observe(&self, ctx: &Ctx, wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let stack = &ctx.settings.stack;
        let keys = crate::engine::fields::wanted_keys(self.name(), wanted, |f: ScheduleFields| f.name)?;
        let group = stack_group(stack);
        // The group's schedules are listed and read beside the group's own reads (two round
        // trips in all, not four), and used only if the stack owns the group.
        let schedules = async {
            let names = names_in(ctx, &group).await?;
            let got = try_join_all(names.iter().map(|n| get(ctx, &group, n))).await?;
            anyhow::Ok((names, got))
        };
        let (g, schedules) = futures::join!(find_group(ctx, &group), schedules);
        let Some(g) = g? else { return Ok(vec![]) };
        if g.owned_as.is_none() {
            if wanted.is_empty() {
                return Ok(vec![]);
            }
            return Err(not_owned("EventBridge Scheduler schedule group", &group, stack, &g.tags));
        }
        let (names, got) = schedules?;
        let mut found = Vec::new();
        for (name, s) in names.iter().zip(got) {
            let Some(s) = s else { continue }; // deleted since it was listed
            let id = crate::engine::fields::logical_id(&keys, name, || logical_id_of(name));
            let mut o = Observed::new(self.name(), id, name.clone(), untyped(&fields_of(&s)));
            o.attrs.insert("name".into(), name.clone());
            o.attrs.extend(s.arn().map(|a| ("arn".to_string(), a.to_string())));
            found.push(o);
        }
        Ok(found)
    }

    async fn create(&self, ctx: &Ctx, id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: ScheduleFields = typed(self.name(), fields)?;
        let (target, window, state) = request_parts(&f)?;
        // CreateSchedule refuses an existing name in the group; in the stack's group that
        // can only be an earlier attempt's.
        let sent = client(ctx)
            .create_schedule()
            .name(&f.name)
            .group_name(&f.group)
            .schedule_expression(&f.expression)
            .schedule_expression_timezone(&f.timezone)
            .description(&f.description)
            .state(state)
            .flexible_time_window(window)
            .target(target)
            .client_token(ctx.settings.client_token(id))
            .send()
            .await
            .map_err(call_failed("CreateSchedule"));
        match sent {
            Ok(out) => Ok(Identity::id(&f.name).with("name", &f.name).with("arn", out.schedule_arn())),
            Err(e) if has_code(&e, "ConflictException") => Err(observe_again(
                "CreateSchedule",
                format!("schedule `{}` already exists in the stack's group `{}` (an earlier attempt made it)", f.name, f.group),
            )),
            Err(e) => Err(e),
        }
    }

    async fn update(&self, ctx: &Ctx, live: &Observed, fields: &Fields, _changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        let f: ScheduleFields = typed(self.name(), fields)?;
        let (target, window, state) = request_parts(&f)?;
        client(ctx)
            .update_schedule()
            .name(&live.physical_id)
            .group_name(&f.group)
            .schedule_expression(&f.expression)
            .schedule_expression_timezone(&f.timezone)
            .description(&f.description)
            .state(state)
            .flexible_time_window(window)
            .target(target)
            .send()
            .await
            .map_err(call_failed("UpdateSchedule"))?;
        Ok(None)
    }

    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        let group = live.fields.get("group").and_then(Value::as_str).unwrap_or_default();
        gone_as_none(
            client(ctx).delete_schedule().group_name(group).name(&live.physical_id).send().await.map_err(call_failed("DeleteSchedule")),
        )?;
        Ok(())
    }

    fn iam(&self, stack: &str) -> IamActions {
        IamActions {
            // ListSchedules takes no resource.
            read: vec!["scheduler:ListSchedules"],
            // `destroy` stops the schedule's runs still going (tagged by propagation, so under
            // the stack's tag condition): `crate::run::stop_running_passes`.
            read_by_arn: vec!["scheduler:GetSchedule", "ecs:ListTasks", "ecs:DescribeTasks"],
            change: vec!["ecs:StopTask"],
            arns: vec![iam_arn("schedule"), crate::resources::ecs::iam_arn("task"), crate::resources::ecs::iam_arn("container-instance")],
            // Schedules carry no tags: limited to the stack's group by ARN (`schedule/<group>/<name>`).
            // Creating or updating one also passes its role (the IAM kind grants PassRole on the
            // stack's roles).
            scoped: vec![Scoped {
                actions: vec!["scheduler:CreateSchedule", "scheduler:UpdateSchedule", "scheduler:DeleteSchedule"],
                resources: vec![format!("arn:aws:scheduler:*:*:schedule/{}/*", stack_group(stack))],
                read_only: false,
            }],
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput;
    use serde_json::json;

    fn wanted() -> ScheduleFields {
        ScheduleFields {
            name: "drift-correction".into(),
            group: "s".into(),
            expression: "rate(15 minutes)".into(),
            timezone: "UTC".into(),
            state: "ENABLED".into(),
            flexible_window_minutes: None,
            description: "d".into(),
            target: ScheduleTarget {
                cluster: "arn:aws:ecs:us-east-1:1:cluster/c".into(),
                role: "arn:aws:iam::1:role/reconciler/s/s-drift-correction-scheduler".into(),
                task_definition: "arn:aws:ecs:us-east-1:1:task-definition/s-drift-correction:3".into(),
                launch_type: "FARGATE".into(),
                task_count: 1,
                subnets: vec!["subnet-1".to_string(), "subnet-2".to_string()].into(),
                security_groups: vec!["sg-1".to_string()].into(),
                assign_public_ip: false,
                propagate_tags: "TASK_DEFINITION".into(),
                retry_attempts: 0,
                max_event_age_seconds: 60,
            },
        }
    }

    /// What GetSchedule returns for a schedule created from `wanted()` (subnets in another order).
    fn echo(f: &ScheduleFields) -> GetScheduleOutput {
        let (target, window, state) = request_parts(f).unwrap();
        let mut target = target;
        if let Some(ecs) = target.ecs_parameters.as_mut() {
            if let Some(v) = ecs.network_configuration.as_mut().and_then(|n| n.awsvpc_configuration.as_mut()) {
                v.subnets.reverse();
            }
        }
        GetScheduleOutput::builder()
            .name(&f.name)
            .group_name(&f.group)
            .schedule_expression(&f.expression)
            .schedule_expression_timezone(&f.timezone)
            .description(&f.description)
            .state(state)
            .flexible_time_window(window)
            .target(target)
            .build()
    }

    #[test]
    fn what_scheduler_echoes_is_what_was_sent() {
        let f = wanted();
        assert_eq!(fields_of(&echo(&f)), f);
        let flexible = ScheduleFields { flexible_window_minutes: Some(5), ..wanted() };
        assert_eq!(fields_of(&echo(&flexible)), flexible);
        let mut untagged = wanted();
        untagged.target.propagate_tags = NO_TAGS.into();
        assert_eq!(fields_of(&echo(&untagged)), untagged, "no tags propagated is sent as nothing and read back as NONE");
    }

    #[test]
    fn scheduler_defaults_fill_what_a_hand_made_schedule_leaves_out() {
        let bare = GetScheduleOutput::builder().name("x").group_name("s").schedule_expression("rate(1 day)").build();
        let f = fields_of(&bare);
        assert_eq!((f.timezone.as_str(), f.state.as_str(), f.flexible_window_minutes), ("UTC", "ENABLED", None));
        assert_eq!((f.target.retry_attempts, f.target.max_event_age_seconds), (185, 86_400));
        assert_eq!(f.target.task_definition, "", "no ECS target: the update puts it back");
    }

    #[test]
    fn fields_shape() {
        let u = untyped(&wanted());
        assert_eq!(
            u.keys().map(String::as_str).collect::<Vec<_>>(),
            ["description", "expression", "flexible_window_minutes", "group", "name", "state", "target", "timezone"]
        );
        assert_eq!(u["flexible_window_minutes"], json!(null));
        assert_eq!(typed::<ScheduleFields>("scheduler:schedule", &u).unwrap(), wanted());
    }

    #[test]
    fn schedule_calls_are_limited_to_the_stack_s_group() {
        let a = Schedule.iam("s");
        assert_eq!(a.scoped[0].resources, vec!["arn:aws:scheduler:*:*:schedule/s/*".to_string()]);
        assert!(a.create.is_empty(), "schedules take no tags to condition on");
        assert_eq!(a.change, ["ecs:StopTask"], "only the runs it started, which carry the stack's tags");
        assert_eq!(logical_id_of("drift-correction"), "schedule-drift-correction");
    }
}
