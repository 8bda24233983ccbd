//! `ecs:cluster` — found by name (DescribeClusters takes a list, so one call reads every
//! wanted cluster). Container Insights is a cluster setting; the capacity providers and the
//! default strategy are changed together by PutClusterCapacityProviders.

use super::{
    call_failed, changed, client, create_service_linked_role, ecs_tags, emulator_lacks_operation, iam_arn, lacks_service_linked_role,
    owned_id, service_linked_role_statement, strategy_items, strategy_of, sync_tags, tag_map, tag_on_create, typed, untyped, StrategyItem,
};
use crate::engine::ownership::not_owned;
use crate::engine::{wait, Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed};
use aws_sdk_ecs::operation::update_cluster_settings::UpdateClusterSettingsInput;
use aws_sdk_ecs::types::{ClusterField, ClusterSetting, ClusterSettingName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub struct Cluster;

/// The fields of `ecs:cluster`, as desired state builds them and observe reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFields {
    pub name: String,
    /// "enabled" / "disabled" (or "enhanced").
    pub container_insights: String,
    /// Sorted.
    pub capacity_providers: Vec<String>,
    /// Sorted by provider.
    pub default_strategy: Vec<StrategyItem>,
    pub tags: BTreeMap<String, String>,
}

/// The comparable shape of a described cluster. A cluster created without the setting
/// reports no Container Insights value: that is "disabled" (the account default aside).
fn fields_of(c: &aws_sdk_ecs::types::Cluster) -> ClusterFields {
    let insights = c
        .settings()
        .iter()
        .find(|s| s.name() == Some(&ClusterSettingName::ContainerInsights))
        .and_then(|s| s.value())
        .unwrap_or("disabled")
        .to_string();
    let mut providers = c.capacity_providers().to_vec();
    providers.sort();
    ClusterFields {
        name: c.cluster_name().unwrap_or_default().to_string(),
        container_insights: insights,
        capacity_providers: providers,
        default_strategy: strategy_of(c.default_capacity_provider_strategy()),
        tags: tag_map(c.tags()),
    }
}

fn insights_setting(value: &str) -> ClusterSetting {
    ClusterSetting::builder().name(ClusterSettingName::ContainerInsights).value(value).build()
}

/// The UpdateClusterSettings request for a Container Insights change (pure, so the real
/// AWS path is tested even though the emulator lacks the call).
pub fn settings_update(cluster_arn: &str, container_insights: &str) -> anyhow::Result<UpdateClusterSettingsInput> {
    Ok(UpdateClusterSettingsInput::builder().cluster(cluster_arn).settings(insights_setting(container_insights)).build()?)
}

fn identity(c: &aws_sdk_ecs::types::Cluster) -> anyhow::Result<Identity> {
    let arn = c.cluster_arn().ok_or_else(|| anyhow::anyhow!("ECS returned a cluster without an ARN"))?;
    Ok(Identity::id(arn).with("arn", arn).with("name", c.cluster_name().unwrap_or_default()))
}

/// Clusters by name or ARN (100 per call), with settings and tags. INACTIVE clusters (deleted,
/// still listed for a while) are left out: for every purpose here they do not exist.
async fn describe(ctx: &Ctx, clusters: &[String]) -> anyhow::Result<Vec<aws_sdk_ecs::types::Cluster>> {
    let mut out = Vec::new();
    for chunk in clusters.chunks(100) {
        let resp = client(ctx)
            .describe_clusters()
            .set_clusters(Some(chunk.to_vec()))
            .include(ClusterField::Settings)
            .include(ClusterField::Tags)
            .send()
            .await
            .map_err(call_failed("DescribeClusters"))?;
        out.extend(resp.clusters().iter().filter(|c| c.status() != Some("INACTIVE")).cloned());
    }
    Ok(out)
}

/// Every cluster's ARN (only needed when there is no name to look for).
pub(super) async fn list_all(ctx: &Ctx) -> anyhow::Result<Vec<String>> {
    let mut arns = Vec::new();
    let mut pages = client(ctx).list_clusters().into_paginator().send();
    while let Some(page) = pages.next().await {
        arns.extend(page.map_err(call_failed("ListClusters"))?.cluster_arns().iter().cloned());
    }
    Ok(arns)
}

/// The stack's clusters among `names`; a named one the stack does not own is an error.
/// Without names: every cluster the stack owns (ListClusters + DescribeClusters).
pub(super) async fn owned(ctx: &Ctx, names: &[String]) -> anyhow::Result<Vec<(String, aws_sdk_ecs::types::Cluster)>> {
    let lookup = if names.is_empty() { list_all(ctx).await? } else { names.to_vec() };
    let mut out = Vec::new();
    for c in describe(ctx, &lookup).await? {
        match owned_id(ctx, c.tags()) {
            Some(id) => out.push((id, c)),
            None => {
                let name = c.cluster_name().unwrap_or_default();
                if names.iter().any(|n| n == name) {
                    return Err(not_owned("ECS cluster", name, &ctx.settings.stack, &tag_map(c.tags())));
                }
            }
        }
    }
    Ok(out)
}

fn wanted_names(wanted: &[&Desired]) -> anyhow::Result<Vec<String>> {
    let wanted: Vec<ClusterFields> = crate::engine::fields::wanted("ecs:cluster", wanted)?;
    Ok(wanted.into_iter().map(|c| c.name).collect())
}

impl Kind for Cluster {
    fn name(&self) -> &'static str {
        "ecs:cluster"
    }

    type Typed = ClusterFields;

    fn replace_on(&self) -> &'static [&'static str] {
        &["name"]
    }

    async fn observe(&self, ctx: &Ctx, wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let mut found = Vec::new();
        for (id, c) in owned(ctx, &wanted_names(wanted)?).await? {
            let ident = identity(&c)?;
            found.push(Observed { attrs: ident.attrs, ..Observed::new(self.name(), id, ident.physical_id, untyped(&fields_of(&c))) });
        }
        Ok(found)
    }

    async fn create(&self, ctx: &Ctx, id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: ClusterFields = typed(self.name(), fields)?;
        // CreateCluster on an existing name returns (or, in moto, replaces) that cluster:
        // look first, so a cluster someone else owns is never taken over and one an
        // interrupted run created is kept.
        if let Some((owner, c)) = owned(ctx, std::slice::from_ref(&f.name)).await?.into_iter().next() {
            anyhow::ensure!(
                owner == id,
                "ECS cluster `{}` already belongs to `{owner}` in this stack; two logical ids cannot share it",
                f.name
            );
            return identity(&c);
        }
        let out = client(ctx)
            .create_cluster()
            .cluster_name(&f.name)
            .settings(insights_setting(&f.container_insights))
            .set_capacity_providers(Some(f.capacity_providers.clone()))
            .set_default_capacity_provider_strategy(Some(strategy_items(&f.default_strategy)?))
            .set_tags(Some(ecs_tags(&f.tags)))
            .send()
            .await
            .map_err(call_failed("CreateCluster"));
        // A fresh account: ECS creates its service-linked role itself only if the caller may;
        // create it, then the engine retries this create until the role has propagated.
        let out = match out {
            Err(e) if lacks_service_linked_role(&e) => {
                create_service_linked_role(ctx).await?;
                return Err(e);
            }
            other => other?,
        };
        identity(out.cluster().ok_or_else(|| anyhow::anyhow!("CreateCluster returned no cluster"))?)
    }

    async fn update(&self, ctx: &Ctx, live: &Observed, fields: &Fields, changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        let f: ClusterFields = typed(self.name(), fields)?;
        let arn = &live.physical_id;
        if changed(changes, "capacity_providers") || changed(changes, "default_strategy") {
            // The call replaces both lists; sending the full desired pair converges both.
            client(ctx)
                .put_cluster_capacity_providers()
                .cluster(arn)
                .set_capacity_providers(Some(f.capacity_providers.clone()))
                .set_default_capacity_provider_strategy(Some(strategy_items(&f.default_strategy)?))
                .send()
                .await
                .map_err(call_failed("PutClusterCapacityProviders"))?;
        }
        sync_tags(ctx, arn, changes).await?;
        // Last, so that everything else has converged if the emulator cannot do this one.
        if changed(changes, "container_insights") {
            let input = settings_update(arn, &f.container_insights)?;
            let r = client(ctx).update_cluster_settings().set_cluster(input.cluster).set_settings(input.settings).send().await;
            if let Err(e) = r {
                if emulator_lacks_operation(ctx, &e) {
                    anyhow::bail!(
                        "cannot set Container Insights to `{}` on ECS cluster {}: the AWS emulator at AWS_ENDPOINT_URL does not implement \
                         UpdateClusterSettings (moto answers it with a bare 500). Everything else about the cluster was converged; on AWS \
                         this call works. To test it against the emulator, create the cluster with the wanted setting instead.",
                        f.container_insights,
                        f.name
                    );
                }
                return Err(call_failed("UpdateClusterSettings")(e));
            }
        }
        Ok(None)
    }

    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        client(ctx).delete_cluster().cluster(&live.physical_id).send().await.map_err(call_failed("DeleteCluster"))?;
        // A cluster with capacity providers goes through DEPROVISIONING before INACTIVE.
        let arn = [live.physical_id.clone()];
        wait::until(ctx, &format!("ECS cluster {} to be deleted", live.physical_id), || async {
            Ok(describe(ctx, &arn).await?.iter().all(|c| c.status() != Some("DEPROVISIONING")).then_some(()))
        })
        .await
    }

    fn iam(&self, stack: &str) -> IamActions {
        IamActions {
            read: vec!["ecs:ListClusters"],
            read_by_arn: vec!["ecs:DescribeClusters"],
            create: vec!["ecs:CreateCluster"],
            change: vec![
                "ecs:UpdateClusterSettings",
                "ecs:PutClusterCapacityProviders",
                "ecs:DeleteCluster",
                "ecs:TagResource",
                "ecs:UntagResource",
            ],
            // The FARGATE capacity providers need ECS's service-linked role: in an account
            // without it, the cluster kind creates it (that one role, for ECS only).
            arns: vec![iam_arn("cluster")],
            extra: vec![tag_on_create(stack), service_linked_role_statement()],
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::{CapacityProviderStrategyItem, Tag};

    fn described() -> aws_sdk_ecs::types::Cluster {
        aws_sdk_ecs::types::Cluster::builder()
            .cluster_arn("arn:aws:ecs:us-east-1:1:cluster/demo")
            .cluster_name("demo")
            .status("ACTIVE")
            .capacity_providers("FARGATE_SPOT")
            .capacity_providers("FARGATE")
            .default_capacity_provider_strategy(
                CapacityProviderStrategyItem::builder().capacity_provider("FARGATE_SPOT").weight(3).build().unwrap(),
            )
            .default_capacity_provider_strategy(
                CapacityProviderStrategyItem::builder().capacity_provider("FARGATE").weight(1).base(1).build().unwrap(),
            )
            .settings(insights_setting("enabled"))
            .tags(Tag::builder().key("reconciler:stack").value("s").build())
            .tags(Tag::builder().key("aws:ecs:clusterName").value("demo").build())
            .build()
    }

    #[test]
    fn observed_shape_is_sorted_and_complete() {
        let f = untyped(&fields_of(&described()));
        assert_eq!(
            serde_json::Value::Object(f),
            serde_json::json!({
                "name": "demo",
                "container_insights": "enabled",
                "capacity_providers": ["FARGATE", "FARGATE_SPOT"],
                "default_strategy": [{"provider": "FARGATE", "weight": 1, "base": 1}, {"provider": "FARGATE_SPOT", "weight": 3, "base": 0}],
                "tags": {"reconciler:stack": "s"},
            })
        );
    }

    #[test]
    fn missing_insights_setting_is_disabled() {
        let c = aws_sdk_ecs::types::Cluster::builder().cluster_name("x").build();
        let f = fields_of(&c);
        assert_eq!(f.container_insights, "disabled");
        assert!(f.capacity_providers.is_empty() && f.default_strategy.is_empty());
    }

    #[test]
    fn settings_update_request() {
        let input = settings_update("arn:aws:ecs:us-east-1:1:cluster/demo", "enabled").unwrap();
        assert_eq!(input.cluster(), Some("arn:aws:ecs:us-east-1:1:cluster/demo"));
        let settings = input.settings();
        assert_eq!(settings.len(), 1);
        assert_eq!(settings[0].name(), Some(&ClusterSettingName::ContainerInsights));
        assert_eq!(settings[0].value(), Some("enabled"));
    }

    #[test]
    fn desired_fields_round_trip_through_the_typed_struct() {
        let f = fields_of(&described());
        let back: ClusterFields = typed("ecs:cluster", &untyped(&f)).unwrap();
        assert_eq!(back, f);
    }
}
