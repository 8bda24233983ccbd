//! `application-autoscaling:scaling-policy` — target tracking on the ECS service's average CPU
//! or memory. physical id = the policy name (`<stack>-cpu`); PutScalingPolicy creates and
//! updates alike. Its ARN is reported but never compared: moto hands out a new one per put.
//!
//! Found under the wanted resource ids. A policy there named `<stack>-<x>` that no wanted node
//! names (the spec dropped its memory target) is reported as `scaling-<x>`, the logical id
//! desired state gives `<stack>-<x>`, so that it is deleted instead of scaling on forever.

use super::{api_int, by_resource_id, call_failed, client, target_tracking_alarms, typed, untyped, DIMENSION, SCALABLE_TARGETS};
use crate::engine::{Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed};
use aws_sdk_applicationautoscaling::types::{
    MetricType, PolicyType, PredefinedMetricSpecification, ScalableDimension, ServiceNamespace, TargetTrackingScalingPolicyConfiguration,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;

pub struct ScalingPolicy;

/// AWS's cooldown for ECS services when a policy sets none.
const DEFAULT_COOLDOWN: i32 = 300;

/// Target tracking on a predefined metric. Desired state sets every field; observe reports
/// null for the last four where the policy is something else (changed by hand), so that the
/// put converges it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingPolicyFields {
    /// `<stack>-<x>`: also the physical id.
    pub name: String,
    pub resource_id: String,
    /// `ECSServiceAverageCPUUtilization`, ...
    pub metric: Option<String>,
    /// A float (70.0, never 70), as desired state writes it.
    pub target: Option<f64>,
    pub scale_in_cooldown: Option<u64>,
    pub scale_out_cooldown: Option<u64>,
}

/// Observed fields of a policy.
pub fn policy_fields(p: &aws_sdk_applicationautoscaling::types::ScalingPolicy) -> ScalingPolicyFields {
    let tt = p.target_tracking_scaling_policy_configuration().filter(|_| *p.policy_type() == PolicyType::TargetTrackingScaling);
    let cooldown = |c: Option<i32>| c.unwrap_or(DEFAULT_COOLDOWN).max(0) as u64;
    ScalingPolicyFields {
        name: p.policy_name().to_string(),
        resource_id: p.resource_id().to_string(),
        metric: tt.and_then(|c| c.predefined_metric_specification()).map(|m| m.predefined_metric_type().as_str().to_string()),
        target: tt.map(|c| c.target_value()),
        scale_in_cooldown: tt.map(|c| cooldown(c.scale_in_cooldown())),
        scale_out_cooldown: tt.map(|c| cooldown(c.scale_out_cooldown())),
    }
}

/// The logical id of a stack policy by its name: `<stack>-<x>` → `scaling-<x>`.
pub fn logical_id_of(stack: &str, policy_name: &str) -> Option<String> {
    let suffix = policy_name.strip_prefix(stack)?.strip_prefix('-')?;
    (!suffix.is_empty()).then(|| format!("scaling-{suffix}"))
}

async fn put(ctx: &Ctx, f: &ScalingPolicyFields) -> anyhow::Result<String> {
    let wanted = |field: &str| anyhow::anyhow!("internal error: scaling policy {} is wanted without `{field}`", f.name);
    let cooldown = |field: &str, v: Option<u64>| api_int(field, v.ok_or_else(|| wanted(field))?);
    let metric = f.metric.as_deref().ok_or_else(|| wanted("metric"))?;
    let config = TargetTrackingScalingPolicyConfiguration::builder()
        .target_value(f.target.ok_or_else(|| wanted("target"))?)
        .predefined_metric_specification(PredefinedMetricSpecification::builder().predefined_metric_type(MetricType::from(metric)).build()?)
        .scale_in_cooldown(cooldown("scale_in_cooldown", f.scale_in_cooldown)?)
        .scale_out_cooldown(cooldown("scale_out_cooldown", f.scale_out_cooldown)?)
        .build()?;
    let out = client(ctx)
        .put_scaling_policy()
        .policy_name(&f.name)
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(&f.resource_id)
        .scalable_dimension(ScalableDimension::from(DIMENSION))
        .policy_type(PolicyType::TargetTrackingScaling)
        .target_tracking_scaling_policy_configuration(config)
        .send()
        .await
        .map_err(call_failed("PutScalingPolicy"))?;
    Ok(out.policy_arn().to_string())
}

impl Kind for ScalingPolicy {
    fn name(&self) -> &'static str {
        "application-autoscaling:scaling-policy"
    }

    type Typed = ScalingPolicyFields;

    fn replace_on(&self) -> &'static [&'static str] {
        &["name", "resource_id"]
    }

    /// One DescribeScalingPolicies per wanted resource id (one here: both policies scale the
    /// same service). Without wanted nodes there is no parent to look under: nothing.
    async fn observe(&self, ctx: &Ctx, wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let wanted = by_resource_id(wanted);
        let parents: BTreeSet<&str> = wanted.iter().map(|(_, rid)| *rid).collect();
        let mut out = Vec::new();
        for rid in parents {
            let mut pages = client(ctx)
                .describe_scaling_policies()
                .service_namespace(ServiceNamespace::Ecs)
                .resource_id(rid)
                .scalable_dimension(ScalableDimension::from(DIMENSION))
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                for p in page.map_err(call_failed("DescribeScalingPolicies"))?.scaling_policies() {
                    // moto matches the resource id as a substring (`service/c/s` also finds
                    // `service/c/s2`'s policies): compare exactly.
                    if p.resource_id() != rid {
                        continue;
                    }
                    let named =
                        wanted.iter().find(|(w, r)| *r == rid && w.fields.get("name").and_then(Value::as_str) == Some(p.policy_name()));
                    let Some(id) = named.map(|(w, _)| w.id.clone()).or_else(|| logical_id_of(&ctx.settings.stack, p.policy_name())) else {
                        continue;
                    };
                    let mut o = Observed::new(self.name(), id, p.policy_name().to_string(), untyped(&policy_fields(p)));
                    o.attrs.insert("arn".into(), p.policy_arn().into());
                    out.push(o);
                }
            }
        }
        Ok(out)
    }

    async fn create(&self, ctx: &Ctx, _id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: ScalingPolicyFields = typed(self.name(), fields)?;
        let arn = put(ctx, &f).await?;
        Ok(Identity::id(f.name).with("arn", arn))
    }

    /// PutScalingPolicy with every field (it replaces the configuration as a whole).
    async fn update(&self, ctx: &Ctx, _live: &Observed, fields: &Fields, _changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        put(ctx, &typed(self.name(), fields)?).await?;
        Ok(None)
    }

    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        let have: ScalingPolicyFields = typed(self.name(), &live.fields)?;
        client(ctx)
            .delete_scaling_policy()
            .policy_name(&live.physical_id)
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id(&have.resource_id)
            .scalable_dimension(ScalableDimension::from(DIMENSION))
            .send()
            .await
            .map_err(call_failed("DeleteScalingPolicy"))?;
        Ok(())
    }

    fn iam(&self, stack: &str) -> IamActions {
        IamActions {
            read: vec!["application-autoscaling:DescribeScalingPolicies"],
            // The policies' target tracking alarms.
            read_by_arn: vec!["cloudwatch:DescribeAlarms"],
            // A policy's resource is its scalable target, tagged for the stack on create.
            change: vec!["application-autoscaling:PutScalingPolicy", "application-autoscaling:DeleteScalingPolicy"],
            arns: vec![SCALABLE_TARGETS.to_string(), "arn:aws:cloudwatch:*:*:alarm:*".to_string()],
            scoped: vec![target_tracking_alarms(stack)],
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_applicationautoscaling::types::ScalingPolicy as Policy;
    use serde_json::json;

    fn policy(config: Option<TargetTrackingScalingPolicyConfiguration>) -> Policy {
        Policy::builder()
            .policy_arn("arn:aws:autoscaling:us-east-1:1:scalingPolicy:x:resource/ecs/service/c/s:policyName/s-cpu")
            .policy_name("s-cpu")
            .service_namespace(ServiceNamespace::Ecs)
            .resource_id("service/c/s")
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .policy_type(PolicyType::TargetTrackingScaling)
            .set_target_tracking_scaling_policy_configuration(config)
            .creation_time(aws_smithy_types::DateTime::from_secs(0))
            .build()
            .unwrap()
    }

    fn config(cooldowns: Option<(i32, i32)>) -> TargetTrackingScalingPolicyConfiguration {
        TargetTrackingScalingPolicyConfiguration::builder()
            .target_value(70.0)
            .predefined_metric_specification(
                PredefinedMetricSpecification::builder()
                    .predefined_metric_type(MetricType::EcsServiceAverageCpuUtilization)
                    .build()
                    .unwrap(),
            )
            .set_scale_in_cooldown(cooldowns.map(|c| c.0))
            .set_scale_out_cooldown(cooldowns.map(|c| c.1))
            .build()
            .unwrap()
    }

    #[test]
    fn observed_fields_have_the_desired_shape() {
        let f = untyped(&policy_fields(&policy(Some(config(Some((300, 60)))))));
        let desired = json!({
            "name": "s-cpu",
            "resource_id": "service/c/s",
            "metric": "ECSServiceAverageCPUUtilization",
            "target": 70.0,
            "scale_in_cooldown": 300,
            "scale_out_cooldown": 60,
        });
        assert_eq!(Value::Object(f), desired, "the target stays a float: 70.0 == 70.0, never 70");
    }

    #[test]
    fn cooldowns_left_out_are_aws_defaults_and_other_policies_are_null() {
        let f = untyped(&policy_fields(&policy(Some(config(None)))));
        assert_eq!((f["scale_in_cooldown"].clone(), f["scale_out_cooldown"].clone()), (json!(300), json!(300)));
        let f = untyped(&policy_fields(&policy(None)));
        assert_eq!(f["metric"], Value::Null);
        assert_eq!(f["target"], Value::Null);
    }

    #[test]
    fn stack_policies_map_to_their_logical_ids() {
        assert_eq!(logical_id_of("demo", "demo-cpu").as_deref(), Some("scaling-cpu"));
        assert_eq!(logical_id_of("demo", "demo-memory").as_deref(), Some("scaling-memory"));
        assert_eq!(logical_id_of("demo", "demo2-cpu"), None, "another stack's prefix");
        assert_eq!(logical_id_of("demo", "demo-"), None);
        assert_eq!(logical_id_of("demo", "manual"), None);
    }
}
