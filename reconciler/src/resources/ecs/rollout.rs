//! An ECS service's deployments, decided from one DescribeServices answer (pure): what the
//! primary deployment is doing ([`deployment_state`]), whether the service is usable
//! ([`service_status`], which the engine's readiness wait polls through observe), and the
//! revision recorded as failed. `service.rs` judges a settled service with them.

use crate::engine::Status;
use aws_sdk_ecs::types::DeploymentRolloutState;

/// Put on a service by the reconciler when the deployment of a task definition revision
/// failed (the circuit breaker stopped it, or rolled the service back): that revision is not
/// deployed again by later runs, which would fail the same way every pass. A new revision (a
/// changed image or configuration) is deployed as usual; removing the tag retries as it is.
/// Not compared as drift.
pub const FAILED_REVISION_TAG: &str = "reconciler:failed-revision";

/// The revision whose deployment failed, as recorded on the service.
pub(super) fn failed_revision(s: &aws_sdk_ecs::types::Service) -> Option<&str> {
    s.tags().iter().find(|t| t.key() == Some(FAILED_REVISION_TAG)).and_then(|t| t.value())
}

/// Whether a live service is usable: a failed primary deployment (the first one, with nothing
/// to roll back to) is Degraded whatever the settings (an emulator never reports one), and so
/// is a service the circuit breaker is rolling back (a failed deployment beside a primary not
/// completed yet: the change failed, there is nothing to wait for); a deployment still rolling
/// out is Pending only where deployments are waited for.
pub fn service_status(s: &aws_sdk_ecs::types::Service, wait_for_rollouts: bool) -> Status {
    let failed = |d: &&aws_sdk_ecs::types::Deployment| d.rollout_state() == Some(&DeploymentRolloutState::Failed);
    let primary = s.deployments().iter().find(|d| d.status() == Some("PRIMARY"));
    let rolling_back = || {
        let done = primary.is_some_and(|p| p.rollout_state() == Some(&DeploymentRolloutState::Completed));
        s.deployments().iter().filter(|d| d.status() != Some("PRIMARY")).find(failed).filter(|_| !done)
    };
    if let Some(f) = primary.filter(failed).or_else(rolling_back) {
        let revision = f.task_definition().unwrap_or_default();
        return Status::Degraded(match deployment_state(s, revision) {
            Rollout::Failed(why) => why,
            other => format!("deployment of {revision}: {}", other.summary()),
        });
    }
    match deployment_state(s, s.task_definition().unwrap_or_default()) {
        r @ Rollout::InProgress { .. } if wait_for_rollouts => Status::Pending(r.summary()),
        _ => Status::Ready,
    }
}

/// What the primary deployment is doing, decided from one DescribeServices answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Rollout {
    InProgress {
        deployment: String,
        state: String,
        running: i32,
        desired: i32,
        pending: i32,
        failed_tasks: i32,
    },
    Completed,
    /// The deployment of the wanted revision failed (and ECS rolled back where it could).
    Failed(String),
}

impl Rollout {
    /// One progress line (for stderr and the Pending status).
    pub fn summary(&self) -> String {
        match self {
            Rollout::InProgress { deployment, state, running, desired, pending, failed_tasks } => {
                let failed = if *failed_tasks > 0 { format!(", {failed_tasks} failed task(s)") } else { String::new() };
                format!("deployment {deployment} {state}: {running}/{desired} task(s) running, {pending} pending{failed}")
            }
            Rollout::Completed => "deployment completed".into(),
            Rollout::Failed(why) => why.clone(),
        }
    }
}

/// What to do about a deployment that did not reach its revision.
pub(super) const FIX: &str =
    "Check the service's events and the tasks' logs (stopped reason, container health check), fix the image or the configuration, and apply again.";

/// The state of the deployment of `wanted` (a task definition ARN) from a described service.
/// - a FAILED deployment of `wanted`: the circuit breaker stopped it; if the primary now runs
///   another revision, ECS rolled back to it;
/// - a primary running another revision: ours was rolled back (and already cleaned up) or
///   replaced by someone else's deployment;
/// - otherwise the primary's rolloutState (without one — another deployment controller —
///   a single deployment with every task running is done).
pub(super) fn deployment_state(service: &aws_sdk_ecs::types::Service, wanted: &str) -> Rollout {
    let deployments = service.deployments();
    let primary = deployments.iter().find(|d| d.status() == Some("PRIMARY"));
    if let Some(failed) =
        deployments.iter().find(|d| d.task_definition() == Some(wanted) && d.rollout_state() == Some(&DeploymentRolloutState::Failed))
    {
        let id = failed.id().unwrap_or("?");
        let reason = failed.rollout_state_reason().unwrap_or("no reason given");
        return Rollout::Failed(match primary.and_then(|p| p.task_definition()).filter(|td| *td != wanted) {
            Some(previous) => format!(
                "the new task definition revision {wanted} failed to become healthy (deployment {id}: {reason}); the deployment circuit breaker rolled the service back to {previous}. {FIX}"
            ),
            None => format!(
                "the new task definition revision {wanted} failed to become healthy (deployment {id}: {reason}); ECS stopped the deployment and had no earlier healthy revision to roll back to. {FIX}"
            ),
        });
    }
    let Some(p) = primary else {
        return Rollout::InProgress {
            deployment: "(not started yet)".into(),
            state: "PENDING".into(),
            running: 0,
            desired: 0,
            pending: 0,
            failed_tasks: 0,
        };
    };
    let id = p.id().unwrap_or("?").to_string();
    if p.task_definition() != Some(wanted) {
        return Rollout::Failed(format!(
            "the service's primary deployment {id} runs {}, not {wanted}: the deployment of {wanted} was rolled back by the circuit breaker or replaced by another deployment. {FIX}",
            p.task_definition().unwrap_or("no task definition")
        ));
    }
    let done_without_state =
        p.rollout_state().is_none() && deployments.len() == 1 && p.running_count() == p.desired_count() && p.pending_count() == 0;
    match p.rollout_state() {
        Some(DeploymentRolloutState::Completed) => Rollout::Completed,
        _ if done_without_state => Rollout::Completed,
        state => Rollout::InProgress {
            deployment: id,
            state: state.map(|s| s.as_str().to_string()).unwrap_or_else(|| "IN_PROGRESS".into()),
            running: p.running_count(),
            desired: p.desired_count(),
            pending: p.pending_count(),
            failed_tasks: p.failed_tasks(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::Deployment;

    const TD1: &str = "arn:aws:ecs:us-east-1:1:task-definition/demo:1";
    const TD2: &str = "arn:aws:ecs:us-east-1:1:task-definition/demo:2";

    fn deployment(id: &str, status: &str, td: &str, state: Option<DeploymentRolloutState>, running: i32, desired: i32) -> Deployment {
        Deployment::builder()
            .id(id)
            .status(status)
            .task_definition(td)
            .set_rollout_state(state)
            .rollout_state_reason("ECS deployment circuit breaker: tasks failed to start.")
            .running_count(running)
            .desired_count(desired)
            .pending_count(desired - running)
            .build()
    }

    fn service(deployments: Vec<Deployment>) -> aws_sdk_ecs::types::Service {
        aws_sdk_ecs::types::Service::builder().service_name("demo").set_deployments(Some(deployments)).build()
    }

    #[test]
    fn in_progress_reports_counts() {
        let s = service(vec![deployment("ecs-svc/2", "PRIMARY", TD2, Some(DeploymentRolloutState::InProgress), 1, 2)]);
        let r = deployment_state(&s, TD2);
        assert!(matches!(r, Rollout::InProgress { running: 1, desired: 2, .. }), "{r:?}");
        assert_eq!(r.summary(), "deployment ecs-svc/2 IN_PROGRESS: 1/2 task(s) running, 1 pending");
        let old_draining = service(vec![
            deployment("ecs-svc/2", "PRIMARY", TD2, Some(DeploymentRolloutState::InProgress), 0, 2),
            deployment("ecs-svc/1", "ACTIVE", TD1, Some(DeploymentRolloutState::Completed), 2, 2),
        ]);
        assert!(matches!(deployment_state(&old_draining, TD2), Rollout::InProgress { .. }));
    }

    #[test]
    fn completed() {
        let s = service(vec![deployment("ecs-svc/2", "PRIMARY", TD2, Some(DeploymentRolloutState::Completed), 2, 2)]);
        assert_eq!(deployment_state(&s, TD2), Rollout::Completed);
        // No rolloutState (another deployment controller): one deployment, all running.
        let s = service(vec![deployment("d", "PRIMARY", TD2, None, 2, 2)]);
        assert_eq!(deployment_state(&s, TD2), Rollout::Completed);
        let s = service(vec![deployment("d", "PRIMARY", TD2, None, 1, 2)]);
        assert!(matches!(deployment_state(&s, TD2), Rollout::InProgress { .. }));
    }

    #[test]
    fn failed_and_rolled_back() {
        let s = service(vec![
            deployment("ecs-svc/3", "PRIMARY", TD1, Some(DeploymentRolloutState::InProgress), 1, 2),
            deployment("ecs-svc/2", "ACTIVE", TD2, Some(DeploymentRolloutState::Failed), 0, 2),
        ]);
        let Rollout::Failed(why) = deployment_state(&s, TD2) else { panic!("not failed") };
        assert!(why.contains("failed to become healthy"), "{why}");
        assert!(why.contains("rolled the service back to arn:aws:ecs:us-east-1:1:task-definition/demo:1"), "{why}");
        assert!(why.contains("ecs-svc/2") && why.contains("circuit breaker: tasks failed to start"), "{why}");
        // Rolled back and the failed deployment already cleaned up.
        let s = service(vec![deployment("ecs-svc/3", "PRIMARY", TD1, Some(DeploymentRolloutState::Completed), 2, 2)]);
        let Rollout::Failed(why) = deployment_state(&s, TD2) else { panic!("not failed") };
        assert!(why.contains("rolled back by the circuit breaker"), "{why}");
        // A first deployment has nothing to roll back to.
        let s = service(vec![deployment("ecs-svc/1", "PRIMARY", TD1, Some(DeploymentRolloutState::Failed), 0, 2)]);
        let Rollout::Failed(why) = deployment_state(&s, TD1) else { panic!("not failed") };
        assert!(why.contains("no earlier healthy revision"), "{why}");
    }

    /// A failed first deployment is Degraded (never replaced: a new service would fail the
    /// same way), whether or not deployments are waited for; one rolling out is Pending only
    /// where they are; a rolled-back service runs a healthy revision: Ready.
    #[test]
    fn live_status_of_a_service() {
        let with =
            |td: &str, d: Vec<Deployment>| aws_sdk_ecs::types::Service::builder().task_definition(td).set_deployments(Some(d)).build();
        let failed_first = with(TD1, vec![deployment("ecs-svc/1", "PRIMARY", TD1, Some(DeploymentRolloutState::Failed), 0, 2)]);
        for waiting in [true, false] {
            assert!(matches!(service_status(&failed_first, waiting), Status::Degraded(why) if why.contains("no earlier healthy revision")));
        }
        let rolling = with(TD2, vec![deployment("ecs-svc/2", "PRIMARY", TD2, Some(DeploymentRolloutState::InProgress), 1, 2)]);
        // What the engine's wait prints as it changes, and names when it times out.
        let Status::Pending(how_far) = service_status(&rolling, true) else { panic!("not pending") };
        assert_eq!(how_far, "deployment ecs-svc/2 IN_PROGRESS: 1/2 task(s) running, 1 pending");
        assert_eq!(service_status(&rolling, false), Status::Ready);
        let rolled_back = with(
            TD1,
            vec![
                deployment("ecs-svc/3", "PRIMARY", TD1, Some(DeploymentRolloutState::Completed), 2, 2),
                deployment("ecs-svc/2", "ACTIVE", TD2, Some(DeploymentRolloutState::Failed), 0, 2),
            ],
        );
        assert_eq!(service_status(&rolled_back, true), Status::Ready);
        // While the circuit breaker rolls back (a new revision, or the same one with a new
        // configuration): the change failed, whether or not deployments are waited for.
        for (failed_revision, running) in [(TD2, TD1), (TD1, TD1)] {
            let rolling_back = with(
                running,
                vec![
                    deployment("ecs-svc/3", "PRIMARY", TD1, Some(DeploymentRolloutState::InProgress), 1, 2),
                    deployment("ecs-svc/2", "ACTIVE", failed_revision, Some(DeploymentRolloutState::Failed), 0, 2),
                ],
            );
            for waiting in [true, false] {
                let status = service_status(&rolling_back, waiting);
                assert!(
                    matches!(&status, Status::Degraded(why) if why.contains("ecs-svc/2") && why.contains("circuit breaker")),
                    "{status:?}"
                );
            }
        }
    }

    #[test]
    fn no_primary_yet_is_in_progress() {
        assert!(matches!(deployment_state(&service(vec![]), TD1), Rollout::InProgress { .. }));
    }
}
