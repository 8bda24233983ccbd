//! `ecs:service` — the Fargate service, found by name in its cluster (DescribeServices takes
//! the cluster NAME, which desired state passes as the literal `cluster_name` so observe can
//! look before references are resolved).
//!
//! `desired_count` belongs to autoscaling once it exists: desired state wraps it in `$within`,
//! so it is only a change when the live count leaves the bounds, and UpdateService sends
//! `desiredCount` only when it is among the changes (never the desired value blindly).
//!
//! Deployments: where they are waited for (`Settings::wait_for_rollouts`), the service
//! settles after a change (`settles_after_change`): observe reports it Pending while its
//! PRIMARY deployment rolls out, the engine's readiness wait polls it, and `settled` judges
//! the result: the revision sent is running, or its deployment failed (recorded on the
//! service, so that later runs do not deploy it again). The decisions are pure, in `rollout.rs`.

use super::cluster;
use super::rollout::{failed_revision, service_status, FAILED_REVISION_TAG};
use super::{call_failed, changed, client, ecs_tags, int, literal, owned_id, sync_tags, tag_map, typed};
use super::{iam_arn, tag_on_create};
use crate::engine::ownership::not_owned;
use crate::engine::retry::is_gone;
use crate::engine::{wait, Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed, Status};
use aws_sdk_ecs::types::{DeploymentController, DeploymentControllerType, DesiredStatus, PropagateTags, SchedulingStrategy, ServiceField};
use std::collections::BTreeMap;

use super::service_fields::{
    deployment_configuration, fields_of, identity, network, registries, strategy, update_request, ServiceFields, UNREPORTED,
};

pub struct EcsService;

/// ACTIVE services among `names` (10 per call) in `cluster` (name or ARN), with tags.
/// INACTIVE ones are gone; DRAINING ones are on their way out: absent here, kept by
/// [`describe_present`]. A missing cluster has none.
async fn describe(ctx: &Ctx, cluster: &str, names: &[String]) -> anyhow::Result<Vec<aws_sdk_ecs::types::Service>> {
    Ok(describe_present(ctx, cluster, names).await?.into_iter().filter(|s| s.status() == Some("ACTIVE")).collect())
}

/// ACTIVE and DRAINING services among `names` (what observe reports: a DRAINING one, left by
/// a delete that was killed or timed out, is waited for, not hidden).
async fn describe_present(ctx: &Ctx, cluster: &str, names: &[String]) -> anyhow::Result<Vec<aws_sdk_ecs::types::Service>> {
    let mut out = Vec::new();
    for chunk in names.chunks(10) {
        let resp = client(ctx)
            .describe_services()
            .cluster(cluster)
            .set_services(Some(chunk.to_vec()))
            .include(ServiceField::Tags)
            .send()
            .await
            .map_err(call_failed("DescribeServices"));
        match resp {
            Ok(r) => out.extend(r.services().iter().filter(|s| matches!(s.status(), Some("ACTIVE" | "DRAINING"))).cloned()),
            Err(e) if is_gone(&e) => return Ok(vec![]),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Every ACTIVE service in the clusters the stack owns (when there is no name to look for).
async fn all_in_owned_clusters(ctx: &Ctx) -> anyhow::Result<Vec<aws_sdk_ecs::types::Service>> {
    let mut out = Vec::new();
    for (_, c) in cluster::owned(ctx, &[]).await? {
        let Some(arn) = c.cluster_arn() else { continue };
        let mut arns = Vec::new();
        let mut pages = client(ctx).list_services().cluster(arn).into_paginator().send();
        while let Some(page) = pages.next().await {
            arns.extend(page.map_err(call_failed("ListServices"))?.service_arns().iter().cloned());
        }
        out.extend(describe_present(ctx, arn, &arns).await?);
    }
    Ok(out)
}

impl Kind for EcsService {
    fn name(&self) -> &'static str {
        "ecs:service"
    }

    type Typed = ServiceFields;

    fn replace_on(&self) -> &'static [&'static str] {
        &["name", "cluster", "cluster_name"]
    }

    fn unreported(&self) -> &'static [&'static str] {
        UNREPORTED
    }

    async fn observe(&self, ctx: &Ctx, wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let services = if wanted.is_empty() {
            all_in_owned_clusters(ctx).await?
        } else {
            // One DescribeServices per cluster (there is one).
            let mut by_cluster: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for d in wanted {
                if let (Some(c), Some(n)) = (literal(&d.fields, "cluster_name"), literal(&d.fields, "name")) {
                    by_cluster.entry(c).or_default().push(n.to_string());
                }
            }
            let mut all = Vec::new();
            for (cluster, names) in &by_cluster {
                for s in describe_present(ctx, cluster, names).await? {
                    if owned_id(ctx, s.tags()).is_none() && s.status() == Some("ACTIVE") {
                        let name = s.service_name().unwrap_or_default();
                        return Err(not_owned(
                            &format!("ECS service (in cluster {cluster})"),
                            name,
                            &ctx.settings.stack,
                            &tag_map(s.tags()),
                        ));
                    }
                    all.push(s);
                }
            }
            all
        };
        let mut found = Vec::new();
        for s in services {
            let Some(id) = owned_id(ctx, s.tags()) else { continue };
            let ident = identity(&s)?;
            // Pending only when waiting is on: an emulator's deployments never complete,
            // and a plan must not wait for them.
            let status = if s.status() == Some("DRAINING") {
                Status::Leaving("ECS service DRAINING (its tasks are stopping)".into())
            } else {
                service_status(&s, ctx.settings.wait_for_rollouts)
            };
            let mut attrs = ident.attrs;
            if let Some(r) = failed_revision(&s) {
                attrs.insert("failed_revision".into(), r.to_string());
            }
            found.push(Observed { attrs, status, ..Observed::new(self.name(), id, ident.physical_id, fields_of(ctx.emulated, &s)) });
        }
        Ok(found)
    }

    async fn create(&self, ctx: &Ctx, id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: ServiceFields = typed(self.name(), fields)?;
        // CreateService has no working idempotency (moto replaces a same-named service,
        // AWS refuses it): look first.
        if let Some(s) = describe(ctx, &f.cluster, std::slice::from_ref(&f.name)).await?.first() {
            return match owned_id(ctx, s.tags()) {
                Some(owner) if owner == id => identity(s),
                Some(owner) => {
                    anyhow::bail!("ECS service `{}` already belongs to `{owner}` in this stack; two logical ids cannot share it", f.name)
                }
                None => Err(not_owned("ECS service", &f.name, &ctx.settings.stack, &tag_map(s.tags()))),
            };
        }
        let out = client(ctx)
            .create_service()
            // A retry after an ambiguous failure returns the same service.
            .client_token(ctx.settings.client_token(id))
            .cluster(&f.cluster)
            .service_name(&f.name)
            .task_definition(&f.task_definition)
            .desired_count(int("desired_count", *f.desired_count)?)
            .set_capacity_provider_strategy(strategy(&f)?)
            .network_configuration(network(&f)?)
            .set_service_registries(Some(registries(&f)?))
            .deployment_configuration(deployment_configuration(&f)?)
            .health_check_grace_period_seconds(int("health_check_grace", f.health_check_grace)?)
            .scheduling_strategy(SchedulingStrategy::Replica)
            .deployment_controller(DeploymentController::builder().r#type(DeploymentControllerType::Ecs).build()?)
            .propagate_tags(PropagateTags::from(f.propagate_tags.as_str()))
            .enable_ecs_managed_tags(f.managed_tags)
            .set_tags(Some(ecs_tags(&f.tags)))
            .send()
            .await
            .map_err(call_failed("CreateService"))?;
        identity(out.service().ok_or_else(|| anyhow::anyhow!("CreateService returned no service"))?)
    }

    async fn update(&self, ctx: &Ctx, live: &Observed, fields: &Fields, changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        let f: ServiceFields = typed(self.name(), fields)?;
        if changed(changes, "task_definition") && live.attrs.get("failed_revision").is_some_and(|r| f.task_definition == *r) {
            anyhow::bail!(
                "ECS service {}: not deploying {} again: its deployment failed before (the service runs {}). \
                 Fix the image or the configuration (a new revision is deployed as usual), or remove the tag {FAILED_REVISION_TAG} from the service to retry it as it is.",
                f.name,
                f.task_definition,
                live.fields.get("task_definition").and_then(|v| v.as_str()).unwrap_or("another revision"),
            );
        }
        if let Some(req) = update_request(&client(ctx), &live.physical_id, &f, changes)? {
            req.send().await.map_err(call_failed("UpdateService"))?;
        }
        sync_tags(ctx, &live.physical_id, changes).await?;
        Ok(None)
    }

    /// After a change that deploys: not after one of tags only.
    fn settles_after_change(&self, changed: Option<&[String]>) -> bool {
        changed.is_none_or(|fields| fields.iter().any(|f| f != "tags"))
    }

    /// The revision sent runs, its deployment completed: a stale failed-revision record is
    /// removed. Otherwise (the deployment failed, ECS is rolling the service back or has rolled
    /// it back to another revision) the revision is recorded as failed on the service and the
    /// change fails, saying why and what to do. From observe's answer alone: no other call
    /// that could fail before the record is written.
    async fn settled(&self, ctx: &Ctx, live: &Observed, fields: &Fields) -> anyhow::Result<()> {
        let f: ServiceFields = typed(self.name(), fields)?;
        let running = live.fields.get("task_definition").and_then(|v| v.as_str()).unwrap_or("no revision");
        let why = match &live.status {
            Status::Ready if running == f.task_definition.as_str() => {
                if live.attrs.contains_key("failed_revision") {
                    // Best effort: a stale record only names a revision no longer wanted.
                    let untagged = client(ctx).untag_resource().resource_arn(&live.physical_id).tag_keys(FAILED_REVISION_TAG).send().await;
                    if let Err(e) = untagged.map_err(call_failed("UntagResource")) {
                        eprintln!("  warning: ecs:service {}: removing the stale {FAILED_REVISION_TAG} tag failed: {e:#}", f.name);
                    }
                }
                return Ok(());
            }
            Status::Degraded(why) => why.clone(),
            _ => format!(
                "the service runs {running}, not {}: its deployment was rolled back by the circuit breaker or replaced by another deployment. {}",
                f.task_definition,
                super::rollout::FIX
            ),
        };
        let record = client(ctx)
            .tag_resource()
            .resource_arn(&live.physical_id)
            .tags(aws_sdk_ecs::types::Tag::builder().key(FAILED_REVISION_TAG).value(f.task_definition.as_str()).build())
            .send()
            .await
            .map_err(call_failed("TagResource"));
        let note = match record {
            Ok(_) => "Later runs do not deploy this revision again".to_string(),
            Err(e) => format!("(recording the failed revision failed: {e:#}; the next run may deploy it again)"),
        };
        anyhow::bail!("ECS service {}: {why} {note}.", f.name)
    }

    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        let cluster = live.fields.get("cluster").and_then(|v| v.as_str()).unwrap_or_default();
        // Scale to zero first, so tasks drain (and leave Cloud Map) before the service goes.
        match client(ctx)
            .update_service()
            .cluster(cluster)
            .service(&live.physical_id)
            .desired_count(0)
            .send()
            .await
            .map_err(call_failed("UpdateService"))
        {
            Ok(_) => {}
            Err(e) if is_gone(&e) => return Ok(()),
            Err(e) => return Err(e),
        }
        client(ctx)
            .delete_service()
            .cluster(cluster)
            .service(&live.physical_id)
            .force(true)
            .send()
            .await
            .map_err(call_failed("DeleteService"))?;
        // DRAINING until its tasks have stopped; the Cloud Map service and the cluster can
        // only be deleted after that.
        let name = [live.physical_id.clone()];
        wait::until(ctx, &format!("ECS service {} to finish draining", live.physical_id), || async {
            Ok(describe_any_status(ctx, cluster, &name).await?.iter().all(|s| s.status() == Some("INACTIVE")).then_some(()))
        })
        .await?;
        // INACTIVE is not the end: its tasks may still be stopping, still registered in
        // Cloud Map and still holding network interfaces in the subnets.
        let service_name = live.physical_id.rsplit('/').next().unwrap_or(&live.physical_id);
        wait::until(ctx, &format!("the tasks of ECS service {service_name} to stop"), || async {
            Ok(tasks_still_running(ctx, cluster, service_name).await?.is_empty().then_some(()))
        })
        .await
    }

    fn iam(&self, stack: &str) -> IamActions {
        IamActions {
            read: vec!["ecs:ListServices", "ecs:ListClusters"],
            // With `verify`'s reads of the service's tasks (ListTasks is authorised on the
            // container-instance type, with the cluster as condition).
            read_by_arn: vec!["ecs:DescribeServices", "ecs:DescribeClusters", "ecs:ListTasks", "ecs:DescribeTasks"],
            create: vec!["ecs:CreateService"],
            change: vec!["ecs:UpdateService", "ecs:DeleteService", "ecs:TagResource", "ecs:UntagResource"],
            arns: vec![iam_arn("service"), iam_arn("cluster"), iam_arn("task"), iam_arn("container-instance")],
            extra: vec![tag_on_create(stack)],
            ..Default::default()
        }
    }
}

/// The service's tasks that have not stopped yet (RUNNING, or told to stop and still
/// STOPPING / DEPROVISIONING): ListTasks by desired status RUNNING and STOPPED, DescribeTasks
/// of the latter. A service or cluster already gone has none.
async fn tasks_still_running(ctx: &Ctx, cluster: &str, service_name: &str) -> anyhow::Result<Vec<String>> {
    let mut busy = Vec::new();
    for wanted in [DesiredStatus::Running, DesiredStatus::Stopped] {
        let arns =
            super::task_arns(client(ctx).list_tasks().cluster(cluster).service_name(service_name).desired_status(wanted.clone())).await?;
        if arns.is_empty() {
            continue;
        }
        if wanted == DesiredStatus::Running {
            busy.extend(arns);
            continue;
        }
        busy.extend(super::not_stopped(ctx, cluster, &arns).await?);
    }
    Ok(busy)
}

/// Services in any status (the delete waiter needs to see DRAINING).
async fn describe_any_status(ctx: &Ctx, cluster: &str, names: &[String]) -> anyhow::Result<Vec<aws_sdk_ecs::types::Service>> {
    match client(ctx)
        .describe_services()
        .cluster(cluster)
        .set_services(Some(names.to_vec()))
        .send()
        .await
        .map_err(call_failed("DescribeServices"))
    {
        Ok(r) => Ok(r.services().to_vec()),
        Err(e) if is_gone(&e) => Ok(vec![]),
        Err(e) => Err(e),
    }
}
