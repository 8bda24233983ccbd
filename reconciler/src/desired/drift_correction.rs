//! The drift_correction section: the reconciler deploys itself into the stack as a scheduled
//! Fargate task. An EventBridge Scheduler schedule (in the stack's schedule group) runs the
//! reconciler image in the service's cluster and private subnets, with a security group that
//! takes no traffic; the task runs `reconciler run env:RECONCILER_SPEC --iterations 1` (with
//! `--plan-only` in plan-only mode), its spec baked into the task definition, so each run
//! prints one JSON status line to its own log group.
//!
//! Roles: the task role holds exactly the policy `reconciler policy <spec> --for apply` (or
//! `--for plan`) prints; a dedicated execution role may only write the task's log group (and
//! pull an ECR image); the scheduler role may only run this task family in this cluster and
//! pass these two roles.

use super::compute::{base_container, fargate_task, image_pull, role, statement, trust_policy};
use super::{refs_to, Builder};
use crate::engine::policy::Purpose;
use crate::engine::{reference_to, set, Managed, Ref, Set};
use crate::ids;
use crate::resources::ecs::{Container, EnvVar};
use crate::resources::iam::canonical_policy;
use crate::resources::logs::LogGroupFields;
use crate::resources::scheduler::{ScheduleFields, ScheduleGroupFields, ScheduleTarget};
use crate::spec::{DriftMode, ENV_PREFIX, SPEC_VARIABLE};
use serde_json::{json, Value};

/// The container's name in the task definition.
pub const CONTAINER: &str = "reconciler";
/// The schedule's name in the stack's group, and the suffix of the task's names.
pub const NAME: &str = "drift-correction";

/// The task's command: one reconcile pass over the spec the task definition carries.
pub fn command(mode: DriftMode) -> Vec<String> {
    let mut c: Vec<String> = ["run", &format!("{ENV_PREFIX}{SPEC_VARIABLE}"), "--iterations", "1"].iter().map(|s| s.to_string()).collect();
    if mode == DriftMode::PlanOnly {
        c.push("--plan-only".into());
    }
    c
}

/// The policy the task role holds: what `reconciler policy` prints for the mode, canonical
/// (the form IAM's echo is compared in).
pub fn task_policy(spec: &crate::spec::Spec, mode: DriftMode) -> Value {
    let purpose = match mode {
        DriftMode::Apply => Purpose::Apply,
        DriftMode::PlanOnly => Purpose::Plan,
    };
    canonical_policy(&crate::spec::policy::document(spec, purpose))
}

/// The drift-correction task's family (`<stack>-drift-correction`).
pub fn task_family(stack: &str) -> String {
    format!("{stack}-{NAME}")
}

pub(super) fn build(b: &mut Builder, private_subnets: &[String]) {
    let Some(dc) = b.spec.drift_correction.clone() else { return };
    if b.spec.service.is_none() {
        return; // validation refuses it: the task runs in the service's cluster
    }
    let spec = b.spec;
    let stack = spec.name.clone();
    let (region, account) = (spec.region.clone(), b.facts.account.clone());
    let family = task_family(&stack);

    // Egress only: the task calls AWS APIs (and pulls its image); nothing calls it.
    b.security_group(ids::SG_DRIFT_CORRECTION, NAME, "drift-correction task (reconciler)", vec![], vec!["all all 0.0.0.0/0".into()]);

    let log_name = crate::resources::logs::task_log_group(&stack, NAME);
    let log_group = |tags| LogGroupFields { name: log_name.clone(), retention_days: Some(dc.logs.retention_days.into()), tags };
    b.add_with_policy("logs:log-group", ids::DRIFT_LOG_GROUP, log_group, &[], dc.logs.deletion_policy);

    let ecs_trust = trust_policy(&region, &account);
    let mut execution = vec![statement(
        "WriteItsLogGroup",
        &["logs:CreateLogStream", "logs:PutLogEvents"],
        json!([reference_to(ids::DRIFT_LOG_GROUP, "arn_wildcard")]),
    )];
    execution.extend(image_pull(&dc.image));
    let execution = json!({"Version": "2012-10-17", "Statement": set(execution)});
    let execution_role = role(&stack, &format!("{NAME}-execution"), &ecs_trust, "execution", execution);
    b.add("iam:role", "role-drift-correction-execution", execution_role, &[]);
    let task_role = role(&stack, NAME, &ecs_trust, "reconciler", task_policy(spec, dc.mode));
    b.add("iam:role", "role-drift-correction", task_role, &[]);

    let container = Container {
        command: command(dc.mode),
        // The spec itself (it holds no secrets: those are references). A spec change is a new
        // revision, and the schedule moves to it in the same apply.
        environment: vec![EnvVar { name: SPEC_VARIABLE.into(), value: crate::spec::to_carried(spec).into() }],
        // Time to finish the changes in flight when ECS stops the task (SIGTERM).
        stop_timeout: 120,
        ..base_container(CONTAINER, ids::DRIFT_LOG_GROUP, &region)
    };
    let roles = ["role-drift-correction-execution", "role-drift-correction"];
    let task =
        |tags| fargate_task(&family, (dc.cpu, dc.memory), roles, Managed::Is(dc.image.clone()), container.clone(), Managed::Is(tags));
    b.add("ecs:task-definition", ids::DRIFT_TASK_DEFINITION, task, &[]);

    // Scheduler assumes this role to start the task: only for this account's schedules in the
    // stack's group, and it may only run this family in this cluster and hand over its roles.
    let group = crate::resources::scheduler::stack_group(&stack);
    let scheduler_trust = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": ["scheduler.amazonaws.com"]},
            "Action": ["sts:AssumeRole"],
            "Condition": {
                "StringEquals": {"aws:SourceAccount": account},
                "ArnLike": {"aws:SourceArn": format!("arn:aws:scheduler:{region}:{account}:schedule-group/{group}")},
            },
        }],
    });
    let mut run_task = statement(
        "RunTheDriftCorrectionTask",
        &["ecs:RunTask"],
        json!([format!("arn:aws:ecs:{region}:{account}:task-definition/{family}:*")]),
    );
    run_task["Condition"] = json!({"ArnEquals": {"ecs:cluster": reference_to(ids::CLUSTER, "arn")}});
    // The task carries its definition's tags (propagated at RunTask), which ECS authorises as
    // a tag on create.
    let mut tag_run = statement("TagTheTaskItRuns", &["ecs:TagResource"], json!([format!("arn:aws:ecs:{region}:{account}:task/*")]));
    tag_run["Condition"] = json!({"StringEquals": {"ecs:CreateAction": "RunTask"}});
    let pass = statement(
        "PassItsRoles",
        &["iam:PassRole"],
        set(vec![reference_to("role-drift-correction", "arn"), reference_to("role-drift-correction-execution", "arn")]),
    );
    let policy = json!({"Version": "2012-10-17", "Statement": set(vec![run_task, tag_run, pass])});
    let scheduler_role = role(&stack, &format!("{NAME}-scheduler"), &scheduler_trust, "run-task", policy);
    b.add("iam:role", "role-drift-correction-scheduler", scheduler_role, &[]);

    b.add("scheduler:schedule-group", "schedule-group", |tags| ScheduleGroupFields { name: group.clone(), tags }, &[]);
    let egress = b.private_egress();
    let what = if dc.mode == DriftMode::Apply { "drift correction" } else { "drift report" };
    let schedule = ScheduleFields {
        name: NAME.into(),
        group: Ref::attr("schedule-group", "name"),
        expression: dc.schedule.clone(),
        timezone: "UTC".into(),
        state: "ENABLED".into(),
        flexible_window_minutes: None,
        description: format!("reconciler {what} of stack {stack} (managed by reconciler)"),
        target: ScheduleTarget {
            cluster: Ref::attr(ids::CLUSTER, "arn"),
            role: Ref::attr("role-drift-correction-scheduler", "arn"),
            task_definition: Ref::attr(ids::DRIFT_TASK_DEFINITION, "arn"),
            launch_type: "FARGATE".into(),
            task_count: 1,
            subnets: refs_to(private_subnets),
            security_groups: Set::of(vec![Ref::to(ids::SG_DRIFT_CORRECTION)]),
            assign_public_ip: false,
            // Tagged as the stack's: `destroy` may stop a run still going, and it costs the stack.
            propagate_tags: "TASK_DEFINITION".into(),
            // A failed start is not retried: the next scheduled run is the retry.
            retry_attempts: 0,
            max_event_age_seconds: 60,
        },
    };
    b.add_untagged("scheduler:schedule", "schedule-drift-correction", schedule, &egress.iter().map(String::as_str).collect::<Vec<_>>());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{build as build_all, DesiredState, Facts};
    use crate::engine::reference;
    use crate::engine::Desired;
    use crate::spec::Spec;

    fn prod() -> Spec {
        crate::spec::load(&crate::spec::shipped("../specs/prod.yaml")).unwrap()
    }
    fn facts() -> Facts {
        Facts::in_zones("ab")
    }
    fn node<'a>(d: &'a DesiredState, id: &str) -> &'a Desired {
        d.resources.iter().find(|r| r.id == id).unwrap_or_else(|| panic!("no desired {id}"))
    }

    #[test]
    fn the_task_runs_the_reconciler_on_the_spec_it_carries() {
        let spec = prod();
        let d = build_all(&spec, &facts()).unwrap();
        let td = node(&d, "task-definition-drift-correction");
        assert_eq!(td.fields["family"], "benchling-webhook-drift-correction");
        assert_eq!(td.fields["image"], "public.ecr.aws/example/reconciler:0.1.0");
        assert_eq!((td.fields["cpu"].as_str(), td.fields["memory"].as_str()), (Some("256"), Some("512")));
        assert_eq!(td.fields["task_role"], reference_to("role-drift-correction", "arn"));
        assert_eq!(td.fields["execution_role"], reference_to("role-drift-correction-execution", "arn"));
        let c = &td.fields["container"];
        assert_eq!(c["command"], json!(["run", "env:RECONCILER_SPEC", "--iterations", "1"]), "never --allow-destructive");
        assert_eq!(c["port"], 0);
        assert_eq!(c["log"]["group"], reference_to("log-drift-correction", "name"));
        let env = c["environment"].as_array().unwrap();
        assert_eq!(env.len(), 1);
        assert_eq!(env[0]["name"], "RECONCILER_SPEC");
        let carried = crate::spec::parse("env:RECONCILER_SPEC", env[0]["value"].as_str().unwrap()).unwrap();
        assert_eq!(carried, spec, "the task reconciles exactly this spec");
        assert_eq!(node(&d, "log-drift-correction").fields["name"], "/ecs/benchling-webhook/drift-correction");
        assert_eq!(node(&d, "log-drift-correction").fields["retention_days"], 14);
        let sg = node(&d, "sg-drift-correction");
        assert_eq!(sg.fields["ingress"], set(vec![]), "nothing calls the task");
        assert_eq!(sg.fields["group_name"], "benchling-webhook-drift-correction");
    }

    #[test]
    fn the_task_role_holds_exactly_the_printed_policy() {
        let spec = prod();
        let d = build_all(&spec, &facts()).unwrap();
        let role = node(&d, "role-drift-correction");
        assert_eq!(role.fields["name"], "benchling-webhook-drift-correction");
        assert_eq!(role.fields["path"], "/reconciler/benchling-webhook/");
        let printed = crate::spec::policy::document(&spec, Purpose::Apply);
        assert_eq!(role.fields["policies"], json!({"reconciler": canonical_policy(&printed)}));
        assert_eq!(role.fields["trust"]["Statement"][0]["Principal"]["Service"], json!(["ecs-tasks.amazonaws.com"]));

        let mut plan_only = spec.clone();
        plan_only.drift_correction.as_mut().unwrap().mode = DriftMode::PlanOnly;
        let d = build_all(&plan_only, &facts()).unwrap();
        let printed = crate::spec::policy::document(&plan_only, Purpose::Plan);
        assert_eq!(node(&d, "role-drift-correction").fields["policies"]["reconciler"], canonical_policy(&printed));
        let command = &node(&d, "task-definition-drift-correction").fields["container"]["command"];
        assert_eq!(command.as_array().unwrap().last().unwrap(), "--plan-only");
    }

    #[test]
    fn the_schedule_runs_the_task_in_the_cluster_with_a_role_that_can_do_only_that() {
        let d = build_all(&prod(), &facts()).unwrap();
        let s = node(&d, "schedule-drift-correction");
        assert_eq!(s.fields["name"], "drift-correction");
        assert_eq!(s.fields["group"], reference_to("schedule-group", "name"));
        assert_eq!(s.fields["expression"], "rate(15 minutes)");
        assert_eq!(s.fields["flexible_window_minutes"], Value::Null, "the window is OFF");
        let t = &s.fields["target"];
        assert_eq!(t["cluster"], reference_to("cluster", "arn"));
        assert_eq!(t["task_definition"], reference_to("task-definition-drift-correction", "arn"));
        assert_eq!(t["role"], reference_to("role-drift-correction-scheduler", "arn"));
        assert_eq!(t["subnets"], set(vec![reference("subnet-private-1"), reference("subnet-private-2")]));
        assert_eq!(t["security_groups"], set(vec![reference("sg-drift-correction")]));
        assert_eq!((t["launch_type"].as_str(), t["assign_public_ip"].as_bool()), (Some("FARGATE"), Some(false)));
        assert_eq!(t["propagate_tags"], "TASK_DEFINITION", "a run carries the stack's tags: destroy may stop it");
        assert_eq!(node(&d, "schedule-group").fields["name"], "benchling-webhook");
        assert_eq!(node(&d, "schedule-group").fields["tags"]["reconciler:stack"], "benchling-webhook");

        let role = node(&d, "role-drift-correction-scheduler");
        let trust = &role.fields["trust"]["Statement"][0];
        assert_eq!(trust["Principal"]["Service"], json!(["scheduler.amazonaws.com"]));
        assert_eq!(trust["Condition"]["StringEquals"]["aws:SourceAccount"], "123456789012");
        assert_eq!(
            trust["Condition"]["ArnLike"]["aws:SourceArn"],
            "arn:aws:scheduler:us-east-1:123456789012:schedule-group/benchling-webhook"
        );
        let statements = role.fields["policies"]["run-task"]["Statement"]["$set"].as_array().unwrap();
        let run = statements.iter().find(|s| s["Sid"] == "RunTheDriftCorrectionTask").unwrap();
        assert_eq!(run["Action"], json!(["ecs:RunTask"]));
        assert_eq!(run["Resource"], json!(["arn:aws:ecs:us-east-1:123456789012:task-definition/benchling-webhook-drift-correction:*"]));
        assert_eq!(run["Condition"]["ArnEquals"]["ecs:cluster"], reference_to("cluster", "arn"));
        let tag = statements.iter().find(|s| s["Sid"] == "TagTheTaskItRuns").unwrap();
        assert_eq!(
            (&tag["Action"], &tag["Condition"]["StringEquals"]["ecs:CreateAction"]),
            (&json!(["ecs:TagResource"]), &json!("RunTask"))
        );
        let pass = statements.iter().find(|s| s["Sid"] == "PassItsRoles").unwrap();
        assert_eq!(
            pass["Resource"],
            set(vec![reference_to("role-drift-correction", "arn"), reference_to("role-drift-correction-execution", "arn")])
        );
    }

    #[test]
    fn the_execution_role_writes_only_the_task_s_log_group_and_pulls_only_its_repository() {
        let d = build_all(&prod(), &facts()).unwrap();
        let exec = node(&d, "role-drift-correction-execution").fields["policies"]["execution"].to_string();
        assert!(exec.contains("log-drift-correction") && !exec.contains("ecr:"), "public image: no ECR permission: {exec}");
        let mut spec = prod();
        spec.drift_correction.as_mut().unwrap().image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ops/reconciler:1".into();
        let d = build_all(&spec, &facts()).unwrap();
        let exec = node(&d, "role-drift-correction-execution").fields["policies"]["execution"].to_string();
        assert!(exec.contains("arn:aws:ecr:us-east-1:123456789012:repository/ops/reconciler"), "{exec}");
    }

    #[test]
    fn without_the_section_nothing_is_deployed() {
        let mut spec = prod();
        spec.drift_correction = None;
        let d = build_all(&spec, &facts()).unwrap();
        assert!(d.resources.iter().all(|r| !r.id.contains("drift-correction") && !r.kind.starts_with("scheduler:")));
    }
}
