//! Drift correction as a scheduled task, against moto: `drift_correction` in the spec deploys
//! an EventBridge Scheduler schedule (in the stack's own, tagged schedule group) that runs the
//! reconciler image as a Fargate task in the stack's cluster; the task role holds exactly what
//! `reconciler policy FILE --for apply` (or `--for plan`) prints, the task logs to its own log
//! group, and the spec travels in the task definition (`RECONCILER_SPEC`). Created and wired,
//! no-op re-plan, drift named and corrected, plan-only mode, pruning when the section goes,
//! destroy, and a same-named schedule group the stack does not own.
//!
//! moto starts no task: that the scheduled command works is shown by running it here, with the
//! environment the live task definition gives it. moto gaps met (README, "Testing against
//! moto"): CreateScheduleGroup replaces an existing group of the same name instead of
//! refusing it (the kind looks up first); CreateSchedule into a missing group and
//! DeleteScheduleGroup of a missing group answer 500; schedule ARNs are not authorised by
//! resource under IAM enforcement (tests/policy.rs grants every printed statement on `*`).

use crate::{cli, support};

use cli::{applied, apply, assert_converged, aws, reconciler, spec_variant, Aws};
use reconciler::resources::iam::{canonical_policy, parse_policy_document};
use serde_json::Value;
use std::process::{Command, Stdio};
use support::{repo_root, Moto, Run};

const STACK: &str = "benchling-webhook";
const CLUSTER: &str = "benchling-webhook-cluster";
const PROD: &str = "specs/prod.yaml";
const SCHEDULE: &str = "drift-correction";
const FAMILY: &str = "benchling-webhook-drift-correction";
const TASK_ROLE: &str = "benchling-webhook-drift-correction";
const LOG_GROUP: &str = "/ecs/benchling-webhook/drift-correction";

/// What `reconciler policy SPEC --for PURPOSE` prints, canonical.
fn printed_policy(moto: &Moto, spec: &str, purpose: &str) -> Value {
    let run = reconciler(moto, &["policy", spec, "--for", purpose]);
    assert_eq!(run.code, 0, "{run}");
    canonical_policy(&serde_json::from_str(&run.stdout).unwrap())
}

/// A role's inline policy as IAM returns it, canonical.
async fn inline_policy(a: &Aws, role: &str, name: &str) -> Value {
    let out = a.iam.get_role_policy().role_name(role).policy_name(name).send().await.unwrap();
    canonical_policy(&parse_policy_document(out.policy_document()).unwrap())
}

async fn schedule(a: &Aws) -> Option<aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput> {
    a.sched.get_schedule().group_name(STACK).name(SCHEDULE).send().await.ok()
}

/// The latest ACTIVE revision of drift correction's family.
async fn task_definition(a: &Aws) -> Option<aws_sdk_ecs::types::TaskDefinition> {
    let out = a.ecs.describe_task_definition().task_definition(FAMILY).send().await.ok()?;
    out.task_definition().filter(|t| t.status() == Some(&aws_sdk_ecs::types::TaskDefinitionStatus::Active)).cloned()
}

async fn role_arn(a: &Aws, name: &str) -> Option<String> {
    a.iam.get_role().role_name(name).send().await.ok().and_then(|r| r.role().map(|r| r.arn().to_string()))
}

async fn subnet_id(a: &Aws, logical_id: &str) -> String {
    let f = |k: &str, v: &str| aws_sdk_ec2::types::Filter::builder().name(format!("tag:{k}")).values(v).build();
    let out = a.ec2.describe_subnets().filters(f("reconciler:stack", STACK)).filters(f("reconciler:id", logical_id)).send().await.unwrap();
    out.subnets()[0].subnet_id().unwrap().to_string()
}

async fn drift_security_group(a: &Aws) -> Option<aws_sdk_ec2::types::SecurityGroup> {
    let name = aws_sdk_ec2::types::Filter::builder().name("group-name").values("benchling-webhook-drift-correction").build();
    a.ec2.describe_security_groups().filters(name).send().await.unwrap().security_groups().first().cloned()
}

async fn log_group_exists(a: &Aws) -> bool {
    let out = a.logs.describe_log_groups().log_group_name_prefix(LOG_GROUP).send().await.unwrap();
    out.log_groups().iter().any(|g| g.log_group_name() == Some(LOG_GROUP))
}

/// Plan exits 2 and shows `field` under `resource`.
fn assert_drift(moto: &Moto, spec: &str, resource: &str, field: &str) -> String {
    let plan = reconciler(moto, &["plan", spec, "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{plan}");
    let at = plan.stdout.find(resource).unwrap_or_else(|| panic!("plan does not name {resource}\n{plan}"));
    let block: String = plan.stdout[at..].lines().take(8).collect::<Vec<_>>().join("\n");
    assert!(block.contains(field), "{resource} should show `{field}`\n{plan}");
    plan.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_correction_deploys_a_schedule_that_runs_the_reconciler_with_exactly_the_printed_policy() {
    let moto = applied(PROD);
    let a = aws(&moto).await;

    // The schedule: the expression, OFF window, the cluster as target, RunTask of the latest
    // revision on Fargate in the private subnets with the task's own security group.
    let s = schedule(&a).await.expect("the schedule exists in the stack's group");
    assert_eq!(s.schedule_expression(), Some("rate(15 minutes)"));
    assert_eq!(s.flexible_time_window().unwrap().mode().as_str(), "OFF");
    let target = s.target().unwrap();
    let cluster = a.ecs.describe_clusters().clusters(CLUSTER).send().await.unwrap().clusters()[0].cluster_arn().unwrap().to_string();
    assert_eq!(target.arn(), cluster);
    assert_eq!(Some(target.role_arn().to_string()), role_arn(&a, "benchling-webhook-drift-correction-scheduler").await);
    let ecs = target.ecs_parameters().unwrap();
    let td = task_definition(&a).await.expect("drift correction's task definition");
    assert_eq!(Some(ecs.task_definition_arn()), td.task_definition_arn());
    assert_eq!(ecs.launch_type().unwrap().as_str(), "FARGATE");
    let vpc = ecs.network_configuration().unwrap().awsvpc_configuration().unwrap();
    let mut subnets = vpc.subnets().to_vec();
    subnets.sort();
    let mut private = vec![subnet_id(&a, "subnet-private-1").await, subnet_id(&a, "subnet-private-2").await];
    private.sort();
    assert_eq!(subnets, private);
    let sg = drift_security_group(&a).await.expect("the task's security group");
    assert_eq!(vpc.security_groups(), [sg.group_id().unwrap().to_string()]);
    assert!(sg.ip_permissions().is_empty(), "nothing may call the task: {sg:?}");
    assert_eq!(vpc.assign_public_ip().unwrap().as_str(), "DISABLED");
    // The group carries the ownership that schedules cannot.
    let group = a.sched.get_schedule_group().name(STACK).send().await.unwrap();
    let tags = a.sched.list_tags_for_resource().resource_arn(group.arn().unwrap()).send().await.unwrap();
    assert!(tags.tags().iter().any(|t| t.key() == "reconciler:stack" && t.value() == STACK), "{tags:?}");
    assert!(tags.tags().iter().any(|t| t.key() == "reconciler:id" && t.value() == "schedule-group"), "{tags:?}");

    // The task role holds exactly the printed apply policy.
    assert_eq!(inline_policy(&a, TASK_ROLE, "reconciler").await, printed_policy(&moto, PROD, "apply"));
    let names = a.iam.list_role_policies().role_name(TASK_ROLE).send().await.unwrap();
    assert_eq!(names.policy_names(), ["reconciler"], "and nothing else");
    // The scheduler's role: assumed by Scheduler, may run this family and pass the task's roles.
    let scheduler = inline_policy(&a, "benchling-webhook-drift-correction-scheduler", "run-task").await.to_string();
    assert!(scheduler.contains("ecs:RunTask") && scheduler.contains(&format!("task-definition/{FAMILY}:*")), "{scheduler}");
    assert!(scheduler.contains("iam:PassRole") && scheduler.contains(&format!("role/reconciler/{STACK}/{TASK_ROLE}")), "{scheduler}");
    let trust = a.iam.get_role().role_name("benchling-webhook-drift-correction-scheduler").send().await.unwrap();
    let trust = parse_policy_document(trust.role().unwrap().assume_role_policy_document().unwrap()).unwrap().to_string();
    assert!(trust.contains("scheduler.amazonaws.com"), "{trust}");

    // The task definition: the reconciler image, one pass over the spec it carries, logs to
    // its own log group, the task and execution roles.
    assert_eq!(td.requires_compatibilities().iter().map(|c| c.as_str()).collect::<Vec<_>>(), ["FARGATE"]);
    assert_eq!(td.task_role_arn().map(str::to_string), role_arn(&a, TASK_ROLE).await);
    assert_eq!(td.execution_role_arn().map(str::to_string), role_arn(&a, "benchling-webhook-drift-correction-execution").await);
    let c = &td.container_definitions()[0];
    assert_eq!(c.image(), Some("public.ecr.aws/example/reconciler:0.1.0"));
    assert_eq!(c.command(), ["run", "env:RECONCILER_SPEC", "--iterations", "1"]);
    let log = c.log_configuration().unwrap().options().unwrap();
    assert_eq!(log.get("awslogs-group").map(String::as_str), Some(LOG_GROUP));
    let carried = c.environment().iter().find(|e| e.name() == Some("RECONCILER_SPEC")).and_then(|e| e.value()).unwrap();
    let spec = reconciler::spec::load(&repo_root().join(PROD)).unwrap();
    assert_eq!(reconciler::spec::parse("RECONCILER_SPEC", carried).unwrap(), spec, "the task reconciles exactly this spec");
    let logs = a.logs.describe_log_groups().log_group_name_prefix(LOG_GROUP).send().await.unwrap();
    assert_eq!(logs.log_groups()[0].retention_in_days(), Some(14));

    assert_converged(&moto, PROD);
}

/// What the schedule starts, run here: the live task definition's command with its
/// environment. One pass, one JSON status line, nothing to do on a converged stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_command_reconciles_the_spec_the_task_definition_carries() {
    let moto = applied(PROD);
    let a = aws(&moto).await;
    let td = task_definition(&a).await.unwrap();
    let c = &td.container_definitions()[0];
    let out = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(c.command())
        .envs(c.environment().iter().map(|e| (e.name().unwrap(), e.value().unwrap())))
        .envs(moto.env())
        .env("RECONCILER_WAIT_FOR_DEPLOYMENTS", "false")
        .env("RECONCILER_MAX_ATTEMPTS", "1")
        // Not the checkout: the task has no spec file, only the variable.
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let run = Run::from(out);
    assert_eq!(run.code, 0, "{run}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one status line per run\n{run}");
    let status: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!((status["stack"].as_str(), status["result"].as_str()), (Some(STACK), Some("in_sync")), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_of_the_schedule_and_its_role_is_named_and_corrected() {
    let moto = applied(PROD);
    let a = aws(&moto).await;

    // The expression changed out of band.
    let s = schedule(&a).await.unwrap();
    a.sched
        .update_schedule()
        .group_name(STACK)
        .name(SCHEDULE)
        .schedule_expression("rate(1 day)")
        .flexible_time_window(s.flexible_time_window().unwrap().clone())
        .target(s.target().unwrap().clone())
        .send()
        .await
        .unwrap();
    assert_drift(&moto, PROD, "~ scheduler:schedule schedule-drift-correction", "expression: rate(1 day) -> rate(15 minutes)");
    apply(&moto, PROD);
    assert_eq!(schedule(&a).await.unwrap().schedule_expression(), Some("rate(15 minutes)"));
    assert_converged(&moto, PROD);

    // The schedule deleted: recreated.
    a.sched.delete_schedule().group_name(STACK).name(SCHEDULE).send().await.unwrap();
    assert_drift(&moto, PROD, "+ scheduler:schedule schedule-drift-correction", "create");
    apply(&moto, PROD);
    assert!(schedule(&a).await.is_some());
    assert_converged(&moto, PROD);

    // The task role given more than the printed policy: put back exactly.
    let wide = r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}"#;
    a.iam.put_role_policy().role_name(TASK_ROLE).policy_name("reconciler").policy_document(wide).send().await.unwrap();
    assert_drift(&moto, PROD, "~ iam:role role-drift-correction", "policies");
    apply(&moto, PROD);
    assert_eq!(inline_policy(&a, TASK_ROLE, "reconciler").await, printed_policy(&moto, PROD, "apply"));
    assert_converged(&moto, PROD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_only_mode_gives_the_task_the_plan_policy_and_only_reports() {
    let moto = Moto::start();
    let a = aws(&moto).await;
    let plan_only = spec_variant(&moto, PROD, "plan-only.yaml", |s| s.replace("  mode: apply\n", "  mode: plan-only\n"));
    apply(&moto, &plan_only);
    assert_eq!(inline_policy(&a, TASK_ROLE, "reconciler").await, printed_policy(&moto, &plan_only, "plan"));
    let td = task_definition(&a).await.unwrap();
    assert_eq!(td.container_definitions()[0].command(), ["run", "env:RECONCILER_SPEC", "--iterations", "1", "--plan-only"]);
    assert_converged(&moto, &plan_only);

    // To apply mode: the role gets the apply policy, a new revision the new command, and the
    // schedule moves to it, in one apply.
    let plan = assert_drift(&moto, PROD, "~ iam:role role-drift-correction", "policies");
    assert!(plan.contains("~ ecs:task-definition task-definition-drift-correction"), "{plan}");
    assert!(plan.contains("~ scheduler:schedule schedule-drift-correction"), "{plan}");
    apply(&moto, PROD);
    assert_eq!(inline_policy(&a, TASK_ROLE, "reconciler").await, printed_policy(&moto, PROD, "apply"));
    let td2 = task_definition(&a).await.unwrap();
    assert_eq!(td2.container_definitions()[0].command(), ["run", "env:RECONCILER_SPEC", "--iterations", "1"]);
    assert_eq!(
        Some(schedule(&a).await.unwrap().target().unwrap().ecs_parameters().unwrap().task_definition_arn()),
        td2.task_definition_arn()
    );
    assert_converged(&moto, PROD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_removes_the_schedule_its_roles_task_definition_and_log_group() {
    let moto = applied(PROD);
    let a = aws(&moto).await;
    let destroy = reconciler(&moto, &["destroy", PROD, "--auto-approve"]);
    assert_eq!(destroy.code, 0, "{destroy}");
    let at = |needle: &str| destroy.stdout.find(needle).unwrap_or_else(|| panic!("{needle} not listed\n{destroy}"));
    assert!(at("scheduler:schedule schedule-drift-correction") < at("scheduler:schedule-group schedule-group"), "{destroy}");
    assert!(at("scheduler:schedule schedule-drift-correction") < at("ecs:task-definition task-definition-drift-correction"), "{destroy}");

    assert!(schedule(&a).await.is_none(), "the schedule is gone");
    assert!(a.sched.get_schedule_group().name(STACK).send().await.is_err(), "the schedule group is gone");
    for role in [TASK_ROLE, "benchling-webhook-drift-correction-execution", "benchling-webhook-drift-correction-scheduler"] {
        assert!(role_arn(&a, role).await.is_none(), "{role} is gone");
    }
    assert!(task_definition(&a).await.is_none(), "every revision deregistered");
    assert!(!log_group_exists(&a).await, "its log group follows the stack's deletion policy (delete)");
    assert!(drift_security_group(&a).await.is_none());
}

/// Removing the section removes what it deployed (found by the stack's group, role path, log
/// group prefix and task family, though no desired node names them any more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_section_prunes_everything_it_deployed() {
    let moto = applied(PROD);
    let a = aws(&moto).await;
    let without = spec_variant(&moto, PROD, "without.yaml", |s| s[..s.find("drift_correction:").unwrap()].to_string());
    let plan = reconciler(&moto, &["plan", &without, "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{plan}");
    for r in [
        "- scheduler:schedule schedule-drift-correction",
        "- scheduler:schedule-group schedule-group",
        "- iam:role role-drift-correction",
        "- iam:role role-drift-correction-execution",
        "- iam:role role-drift-correction-scheduler",
        "- ecs:task-definition task-definition-drift-correction",
        "- logs:log-group log-drift-correction",
        "- ec2:security-group sg-drift-correction",
    ] {
        assert!(plan.stdout.contains(r), "{r}\n{plan}");
    }
    assert!(plan.stdout.contains("0 to create, 0 to update, 0 to replace, 8 to delete"), "nothing else\n{plan}");
    let run = reconciler(&moto, &["apply", &without, "--auto-approve", "--allow-destructive"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(schedule(&a).await.is_none() && task_definition(&a).await.is_none() && role_arn(&a, TASK_ROLE).await.is_none());
    assert!(!log_group_exists(&a).await && drift_security_group(&a).await.is_none());
    assert_converged(&moto, &without);
}

/// A schedule group named like the stack that the stack does not own: plan and apply stop
/// and name it; it and its schedules are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_group_the_stack_does_not_own_is_refused_and_left_alone() {
    let moto = Moto::start();
    let a = aws(&moto).await;
    a.sched.create_schedule_group().name(STACK).send().await.unwrap();
    let target = aws_sdk_scheduler::types::Target::builder()
        .arn("arn:aws:sqs:us-east-1:123456789012:someone-elses")
        .role_arn("arn:aws:iam::123456789012:role/someone-elses")
        .build()
        .unwrap();
    let off = aws_sdk_scheduler::types::FlexibleTimeWindow::builder()
        .mode(aws_sdk_scheduler::types::FlexibleTimeWindowMode::Off)
        .build()
        .unwrap();
    a.sched
        .create_schedule()
        .group_name(STACK)
        .name(SCHEDULE)
        .schedule_expression("rate(1 hour)")
        .flexible_time_window(off)
        .target(target)
        .send()
        .await
        .unwrap();

    for args in [vec!["plan", PROD], vec!["apply", PROD, "--auto-approve"]] {
        let run = reconciler(&moto, &args);
        assert_eq!(run.code, 1, "{run}");
        assert!(run.stderr.contains("schedule group `benchling-webhook` exists but is not owned by stack `benchling-webhook`"), "{run}");
    }
    let s = schedule(&a).await.expect("the other schedule is untouched");
    assert_eq!(s.schedule_expression(), Some("rate(1 hour)"));
    assert!(a.ecs.list_clusters().send().await.unwrap().cluster_arns().is_empty(), "nothing was created");
}
