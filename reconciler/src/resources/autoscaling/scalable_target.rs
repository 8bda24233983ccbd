//! `application-autoscaling:scalable-target` — the bounds autoscaling keeps the ECS service's
//! desired count within. Identified by its parent: physical id = the resource id
//! `service/<cluster>/<service>`. Registering again with new bounds updates it in place (and
//! AWS moves the service's capacity into them).

use super::{api_int, by_resource_id, call_failed, client, service_linked_role, typed, untyped, DIMENSION, SCALABLE_TARGETS};
use crate::engine::{Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed};
use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
use serde::{Deserialize, Serialize};

pub struct ScalableTarget;

/// No tags: the API reports none (they are set on create from the stack's, see `register`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalableTargetFields {
    /// `service/<cluster>/<service>`.
    pub resource_id: String,
    pub dimension: String,
    pub min: u64,
    pub max: u64,
}

/// Observed fields of a scalable target.
pub fn target_fields(t: &aws_sdk_applicationautoscaling::types::ScalableTarget) -> ScalableTargetFields {
    ScalableTargetFields {
        resource_id: t.resource_id().to_string(),
        dimension: t.scalable_dimension().as_str().to_string(),
        min: t.min_capacity().max(0) as u64,
        max: t.max_capacity().max(0) as u64,
    }
}

/// RegisterScalableTarget with the fields' bounds; tags only on create (the API tags a new
/// target only; the tags let IAM scope later calls to what the stack registered).
async fn register(ctx: &Ctx, f: &ScalableTargetFields, tags: Option<&std::collections::BTreeMap<String, String>>) -> anyhow::Result<()> {
    let mut req = client(ctx)
        .register_scalable_target()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(&f.resource_id)
        .scalable_dimension(ScalableDimension::from(f.dimension.as_str()))
        .min_capacity(api_int("min", f.min)?)
        .max_capacity(api_int("max", f.max)?);
    if let Some(tags) = tags {
        req = req.set_tags(Some(tags.clone().into_iter().collect()));
    }
    req.send().await.map_err(call_failed("RegisterScalableTarget"))?;
    Ok(())
}

impl Kind for ScalableTarget {
    fn name(&self) -> &'static str {
        "application-autoscaling:scalable-target"
    }

    type Typed = ScalableTargetFields;

    fn replace_on(&self) -> &'static [&'static str] {
        &["resource_id", "dimension"]
    }

    /// One DescribeScalableTargets (ServiceNamespace ecs, ResourceIds = the wanted ones).
    /// Without wanted nodes there is no parent to look under: nothing is returned.
    async fn observe(&self, ctx: &Ctx, wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let wanted = by_resource_id(wanted);
        if wanted.is_empty() {
            return Ok(vec![]);
        }
        let ids: Vec<String> = wanted.iter().map(|(_, rid)| rid.to_string()).collect();
        let mut pages = client(ctx)
            .describe_scalable_targets()
            .service_namespace(ServiceNamespace::Ecs)
            .set_resource_ids(Some(ids))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            for t in page.map_err(call_failed("DescribeScalableTargets"))?.scalable_targets() {
                let dimension = t.scalable_dimension().as_str();
                let wanted_here = wanted.iter().find(|(w, rid)| {
                    *rid == t.resource_id() && w.fields.get("dimension").and_then(|d| d.as_str()).unwrap_or(DIMENSION) == dimension
                });
                if let Some((w, rid)) = wanted_here {
                    out.push(Observed::new(self.name(), w.id.clone(), rid.to_string(), untyped(&target_fields(t))));
                }
            }
        }
        Ok(out)
    }

    async fn create(&self, ctx: &Ctx, id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: ScalableTargetFields = typed(self.name(), fields)?;
        register(ctx, &f, Some(&ctx.tags_for(id))).await?;
        Ok(Identity::id(f.resource_id))
    }

    async fn update(&self, ctx: &Ctx, _live: &Observed, fields: &Fields, _changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        register(ctx, &typed(self.name(), fields)?, None).await?;
        Ok(None)
    }

    /// DeregisterScalableTarget. On AWS this also deletes the target's policies.
    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        let have: ScalableTargetFields = typed(self.name(), &live.fields)?;
        client(ctx)
            .deregister_scalable_target()
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id(&live.physical_id)
            .scalable_dimension(ScalableDimension::from(have.dimension.as_str()))
            .send()
            .await
            .map_err(call_failed("DeregisterScalableTarget"))?;
        Ok(())
    }

    fn iam(&self, _stack: &str) -> IamActions {
        IamActions {
            // Registering checks the ECS service with the caller's permissions.
            read: vec!["application-autoscaling:DescribeScalableTargets"],
            read_by_arn: vec!["ecs:DescribeServices"],
            create: vec!["application-autoscaling:RegisterScalableTarget", "application-autoscaling:TagResource"],
            // Targets are tagged on create, so re-registering and deregistering are scoped by
            // those tags; registering sets the ECS service's desired count into the bounds.
            change: vec![
                "application-autoscaling:RegisterScalableTarget",
                "application-autoscaling:DeregisterScalableTarget",
                "ecs:UpdateService",
            ],
            arns: vec![SCALABLE_TARGETS.to_string(), "arn:aws:ecs:*:*:service/*".to_string()],
            extra: vec![service_linked_role()],
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_applicationautoscaling::types::ScalableTarget as Target;

    #[test]
    fn observed_fields_have_the_desired_shape() {
        let t = Target::builder()
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id("service/c/s")
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .min_capacity(2)
            .max_capacity(6)
            .role_arn("arn:aws:iam::1:role/x")
            .creation_time(aws_smithy_types::DateTime::from_secs(0))
            .build()
            .unwrap();
        assert_eq!(
            serde_json::Value::Object(untyped(&target_fields(&t))),
            serde_json::json!({"resource_id": "service/c/s", "dimension": "ecs:service:DesiredCount", "min": 2, "max": 6})
        );
        assert_eq!(ScalableDimension::EcsServiceDesiredCount.as_str(), DIMENSION);
    }
}
