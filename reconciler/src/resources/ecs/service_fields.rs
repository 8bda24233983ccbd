//! `ecs:service`'s fields and the API: the comparable fields of a described service
//! ([`fields_of`]), and the request shapes create and update send (network, Cloud Map
//! registry, deployment configuration, capacity strategy, the UpdateService request), where
//! ECS's defaults and what an emulator leaves out are handled. The verbs are in `service.rs`.

use super::rollout::FAILED_REVISION_TAG;
use super::{changed, int, strategy_items, strategy_of, tag_map};
use super::{untyped, StrategyItem};
use crate::engine::{FieldChange, Fields, Identity};
use crate::engine::{Managed, Ref, Set};
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, DeploymentCircuitBreaker, DeploymentConfiguration, NetworkConfiguration, PropagateTags,
    ServiceRegistry,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The fields of `ecs:service`, as desired state builds them and observe reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFields {
    pub name: String,
    /// Cluster ARN.
    pub cluster: Ref,
    /// The same cluster's name, literal in desired state (observe needs it unresolved).
    pub cluster_name: String,
    /// Task definition ARN with revision.
    pub task_definition: Ref,
    pub desired_count: Managed<u64>,
    /// Sorted by provider; empty: the cluster's default strategy.
    pub capacity_strategy: Vec<StrategyItem>,
    /// Sorted.
    pub subnets: Set<Ref>,
    /// Sorted.
    pub security_groups: Set<Ref>,
    pub assign_public_ip: bool,
    /// null: not registered in Cloud Map.
    pub registry: Option<Registry>,
    /// Deployment circuit breaker, enabled with rollback.
    pub circuit_breaker: bool,
    pub min_healthy_percent: u64,
    pub max_percent: u64,
    pub health_check_grace: u64,
    /// "SERVICE", "TASK_DEFINITION" or "NONE".
    pub propagate_tags: String,
    pub managed_tags: bool,
    pub tags: BTreeMap<String, String>,
}

/// The service's Cloud Map registration (ECS allows one per service).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    pub arn: Ref,
    pub container_name: String,
    pub container_port: u64,
}

/// Fields DescribeServices may leave out. Verified against moto 5.2.5: after CreateService
/// it omits `capacityProviderStrategy`, `deploymentConfiguration` (circuit breaker, minimum
/// and maximum percent), `healthCheckGracePeriodSeconds` and `enableECSManagedTags`; it
/// reports them once an UpdateService has set them. `propagateTags`, `assignPublicIp` (sent
/// on every create here) and the service registry are echoed. AWS returns all of them.
pub(super) const UNREPORTED: &[&str] =
    &["capacity_strategy", "circuit_breaker", "min_healthy_percent", "max_percent", "health_check_grace", "managed_tags"];

/// The comparable fields of a described service: the typed struct, minus the unreported
/// fields the answer did not contain (unknown, not drift).
pub(super) fn fields_of(emulated: bool, s: &aws_sdk_ecs::types::Service) -> Fields {
    let mut missing: Vec<&str> = Vec::new();
    let vpc = s.network_configuration().and_then(|n| n.awsvpc_configuration());
    let subnets = vpc.map(|v| v.subnets().to_vec()).unwrap_or_default();
    let security_groups = vpc.map(|v| v.security_groups().to_vec()).unwrap_or_default();
    let capacity_strategy = match &s.capacity_provider_strategy {
        Some(items) => strategy_of(items),
        None => {
            missing.push("capacity_strategy");
            vec![]
        }
    };
    let dc = s.deployment_configuration();
    if dc.is_none() {
        missing.extend(["circuit_breaker", "min_healthy_percent", "max_percent"]);
    }
    let breaker = dc.and_then(|d| d.deployment_circuit_breaker());
    if dc.is_some_and(|d| d.minimum_healthy_percent().is_none()) {
        missing.push("min_healthy_percent");
    }
    if dc.is_some_and(|d| d.maximum_percent().is_none()) {
        missing.push("max_percent");
    }
    if s.health_check_grace_period_seconds().is_none() {
        missing.push("health_check_grace");
    }
    // The SDK turns an absent `enableECSManagedTags` into `false`. AWS always sends it; the
    // emulator leaves it out after CreateService, so there `false` may mean "not said".
    if emulated && !s.enable_ecs_managed_tags() {
        missing.push("managed_tags");
    }
    let cluster_arn = s.cluster_arn().unwrap_or_default();
    let f = ServiceFields {
        name: s.service_name().unwrap_or_default().to_string(),
        cluster: cluster_arn.to_string().into(),
        cluster_name: cluster_name_of(cluster_arn).to_string(),
        task_definition: s.task_definition().unwrap_or_default().to_string().into(),
        desired_count: (s.desired_count().max(0) as u64).into(),
        capacity_strategy,
        subnets: subnets.into(),
        security_groups: security_groups.into(),
        assign_public_ip: vpc.and_then(|v| v.assign_public_ip()) == Some(&AssignPublicIp::Enabled),
        registry: s.service_registries().first().map(|r| Registry {
            arn: r.registry_arn().unwrap_or_default().to_string().into(),
            container_name: r.container_name().unwrap_or_default().to_string(),
            container_port: r.container_port().map(|p| p.max(0) as u64).unwrap_or(0),
        }),
        circuit_breaker: breaker.is_some_and(|b| b.enable() && b.rollback()),
        min_healthy_percent: dc.and_then(|d| d.minimum_healthy_percent()).map(|p| p.max(0) as u64).unwrap_or(0),
        max_percent: dc.and_then(|d| d.maximum_percent()).map(|p| p.max(0) as u64).unwrap_or(0),
        health_check_grace: s.health_check_grace_period_seconds().map(|p| p.max(0) as u64).unwrap_or(0),
        propagate_tags: s.propagate_tags().map(|p| p.as_str().to_string()).unwrap_or_else(|| "NONE".into()),
        managed_tags: s.enable_ecs_managed_tags(),
        tags: tag_map(s.tags()).into_iter().filter(|(k, _)| k != FAILED_REVISION_TAG).collect(),
    };
    let mut fields = untyped(&f);
    for m in missing {
        debug_assert!(UNREPORTED.contains(&m), "{m} is left out but not declared unreported");
        fields.remove(m);
    }
    fields
}

/// `demo` from `arn:aws:ecs:us-east-1:1:cluster/demo` (a plain name stays as it is).
pub(super) fn cluster_name_of(arn: &str) -> &str {
    arn.rsplit_once(":cluster/").map(|(_, n)| n).unwrap_or(arn)
}

pub(super) fn identity(s: &aws_sdk_ecs::types::Service) -> anyhow::Result<Identity> {
    let arn = s.service_arn().ok_or_else(|| anyhow::anyhow!("ECS returned a service without an ARN"))?;
    let name = s.service_name().unwrap_or_default();
    let cluster = cluster_name_of(s.cluster_arn().unwrap_or_default());
    Ok(Identity::id(arn).with("arn", arn).with("name", name).with("resource_id", format!("service/{cluster}/{name}")))
}

pub(super) fn network(f: &ServiceFields) -> anyhow::Result<NetworkConfiguration> {
    // Security groups are always sent (moto answers 500 without them; AWS would pick the
    // VPC's default group, which this stack must not depend on).
    let vpc = AwsVpcConfiguration::builder()
        .set_subnets(Some(f.subnets.ids()))
        .set_security_groups(Some(f.security_groups.ids()))
        .assign_public_ip(if f.assign_public_ip { AssignPublicIp::Enabled } else { AssignPublicIp::Disabled })
        .build()?;
    Ok(NetworkConfiguration::builder().awsvpc_configuration(vpc).build())
}

pub(super) fn registries(f: &ServiceFields) -> anyhow::Result<Vec<ServiceRegistry>> {
    f.registry
        .iter()
        .map(|r| {
            Ok(ServiceRegistry::builder()
                .registry_arn(&r.arn)
                .container_name(&r.container_name)
                .container_port(int("registry.container_port", r.container_port)?)
                .build())
        })
        .collect()
}

pub(super) fn deployment_configuration(f: &ServiceFields) -> anyhow::Result<DeploymentConfiguration> {
    Ok(DeploymentConfiguration::builder()
        .deployment_circuit_breaker(DeploymentCircuitBreaker::builder().enable(f.circuit_breaker).rollback(f.circuit_breaker).build())
        .minimum_healthy_percent(int("min_healthy_percent", f.min_healthy_percent)?)
        .maximum_percent(int("max_percent", f.max_percent)?)
        .build())
}

/// An empty strategy means "the cluster's default": nothing is sent.
pub(super) fn strategy(f: &ServiceFields) -> anyhow::Result<Option<Vec<aws_sdk_ecs::types::CapacityProviderStrategyItem>>> {
    Ok(if f.capacity_strategy.is_empty() { None } else { Some(strategy_items(&f.capacity_strategy)?) })
}

/// The UpdateService call for the changed fields, or `None` if only tags changed.
pub(super) fn update_request(
    client: &aws_sdk_ecs::Client,
    arn: &str,
    f: &ServiceFields,
    changes: &[FieldChange],
) -> anyhow::Result<Option<aws_sdk_ecs::operation::update_service::builders::UpdateServiceFluentBuilder>> {
    let mut req = client.update_service().cluster(&f.cluster).service(arn);
    let mut any = false;
    if changed(changes, "task_definition") {
        req = req.task_definition(&f.task_definition);
        any = true;
    }
    // Only when the count itself is a change (outside autoscaling's bounds, or no
    // autoscaling): otherwise autoscaling's live value stands.
    if changed(changes, "desired_count") {
        req = req.desired_count(int("desired_count", *f.desired_count)?);
        any = true;
    }
    if ["subnets", "security_groups", "assign_public_ip"].iter().any(|c| changed(changes, c)) {
        req = req.network_configuration(network(f)?);
        any = true;
    }
    if changed(changes, "registry") {
        // An empty list removes the registration.
        req = req.set_service_registries(Some(registries(f)?));
        any = true;
    }
    if changed(changes, "capacity_strategy") {
        req = req.set_capacity_provider_strategy(Some(strategy(f)?.unwrap_or_default()));
        any = true;
    }
    if ["circuit_breaker", "min_healthy_percent", "max_percent"].iter().any(|c| changed(changes, c)) {
        req = req.deployment_configuration(deployment_configuration(f)?);
        any = true;
    }
    if changed(changes, "health_check_grace") {
        req = req.health_check_grace_period_seconds(int("health_check_grace", f.health_check_grace)?);
        any = true;
    }
    if changed(changes, "propagate_tags") {
        req = req.propagate_tags(PropagateTags::from(f.propagate_tags.as_str()));
        any = true;
    }
    if changed(changes, "managed_tags") {
        req = req.enable_ecs_managed_tags(f.managed_tags);
        any = true;
    }
    Ok(any.then_some(req))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::ecs::rollout::failed_revision;
    use crate::resources::ecs::typed;
    use aws_sdk_ecs::types::{CapacityProviderStrategyItem, Tag};
    use serde_json::json;

    const TD1: &str = "arn:aws:ecs:us-east-1:1:task-definition/demo:1";
    const TD2: &str = "arn:aws:ecs:us-east-1:1:task-definition/demo:2";

    /// The recorded failed revision is not compared as a tag (it is the reconciler's own
    /// record, not drift) and is read back as an attribute.
    #[test]
    fn the_failed_revision_record_is_not_a_tag_difference() {
        let s = aws_sdk_ecs::types::Service::builder()
            .service_name("demo")
            .tags(aws_sdk_ecs::types::Tag::builder().key("team").value("x").build())
            .tags(aws_sdk_ecs::types::Tag::builder().key(FAILED_REVISION_TAG).value(TD2).build())
            .build();
        assert_eq!(failed_revision(&s), Some(TD2));
        let fields = fields_of(false, &s);
        assert_eq!(fields["tags"], json!({"team": "x"}));
    }

    fn described(with_deployment_config: bool) -> aws_sdk_ecs::types::Service {
        let mut b = aws_sdk_ecs::types::Service::builder()
            .service_arn("arn:aws:ecs:us-east-1:1:service/demo/demo-webhook")
            .service_name("demo-webhook")
            .cluster_arn("arn:aws:ecs:us-east-1:1:cluster/demo")
            .status("ACTIVE")
            .task_definition(TD1)
            .desired_count(2)
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(
                        AwsVpcConfiguration::builder()
                            .subnets("subnet-b")
                            .subnets("subnet-a")
                            .security_groups("sg-1")
                            .assign_public_ip(AssignPublicIp::Disabled)
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .service_registries(
                ServiceRegistry::builder()
                    .registry_arn("arn:aws:servicediscovery:us-east-1:1:service/srv-1")
                    .container_name("app")
                    .container_port(8080)
                    .build(),
            )
            .propagate_tags(PropagateTags::Service)
            .tags(Tag::builder().key("reconciler:stack").value("demo").build());
        if with_deployment_config {
            b = b
                .capacity_provider_strategy(CapacityProviderStrategyItem::builder().capacity_provider("FARGATE").weight(1).build().unwrap())
                .deployment_configuration(
                    DeploymentConfiguration::builder()
                        .deployment_circuit_breaker(DeploymentCircuitBreaker::builder().enable(true).rollback(true).build())
                        .minimum_healthy_percent(100)
                        .maximum_percent(200)
                        .build(),
                )
                .health_check_grace_period_seconds(60)
                .enable_ecs_managed_tags(true);
        }
        b.build()
    }

    #[test]
    fn observed_shape_on_aws() {
        let f = fields_of(false, &described(true));
        assert_eq!(
            serde_json::Value::Object(f),
            json!({
                "name": "demo-webhook",
                "cluster": "arn:aws:ecs:us-east-1:1:cluster/demo",
                "cluster_name": "demo",
                "task_definition": TD1,
                "desired_count": 2,
                "capacity_strategy": [{"provider": "FARGATE", "weight": 1, "base": 0}],
                "subnets": ["subnet-a", "subnet-b"],
                "security_groups": ["sg-1"],
                "assign_public_ip": false,
                "registry": {"arn": "arn:aws:servicediscovery:us-east-1:1:service/srv-1", "container_name": "app", "container_port": 8080},
                "circuit_breaker": true,
                "min_healthy_percent": 100,
                "max_percent": 200,
                "health_check_grace": 60,
                "propagate_tags": "SERVICE",
                "managed_tags": true,
                "tags": {"reconciler:stack": "demo"},
            })
        );
    }

    #[test]
    fn fields_the_emulator_drops_are_left_out_not_reported_as_defaults() {
        let f = fields_of(true, &described(false));
        for k in UNREPORTED {
            assert!(!f.contains_key(*k), "{k} should be unknown");
        }
        assert_eq!(f["registry"]["container_port"], 8080);
        assert_eq!(f["propagate_tags"], "SERVICE");
        // On AWS an absent managed-tags flag is a real `false`.
        assert_eq!(fields_of(false, &described(false))["managed_tags"], false);
        // No registry is null (so a removed registration is a difference).
        let bare = aws_sdk_ecs::types::Service::builder().service_name("x").build();
        assert_eq!(fields_of(false, &bare)["registry"], serde_json::Value::Null);
    }

    fn desired() -> ServiceFields {
        let f = fields_of(false, &described(true));
        typed("ecs:service", &f).unwrap()
    }

    fn change(field: &str) -> FieldChange {
        FieldChange { field: field.into(), before: None, after: json!(null) }
    }

    fn client() -> aws_sdk_ecs::Client {
        let conf = aws_sdk_ecs::Config::builder()
            .behavior_version(aws_sdk_ecs::config::BehaviorVersion::latest())
            .region(aws_sdk_ecs::config::Region::new("us-east-1"))
            .build();
        aws_sdk_ecs::Client::from_conf(conf)
    }

    #[test]
    fn update_sends_desired_count_only_when_it_is_a_change() {
        let f = desired();
        let c = client();
        let req = update_request(&c, "arn", &f, &[change("task_definition")]).unwrap().unwrap();
        assert_eq!(req.get_task_definition().as_deref(), Some(TD1));
        assert_eq!(req.get_desired_count(), &None, "autoscaling's count must not be overwritten");
        assert_eq!(req.get_network_configuration(), &None);
        let req = update_request(&c, "arn", &f, &[change("desired_count")]).unwrap().unwrap();
        assert_eq!(req.get_desired_count(), &Some(2));
        assert_eq!(req.get_task_definition(), &None);
    }

    #[test]
    fn update_groups_fields_into_their_api_shapes() {
        let mut f = desired();
        let c = client();
        assert!(update_request(&c, "arn", &f, &[change("tags")]).unwrap().is_none(), "tags alone need no UpdateService");
        let req = update_request(&c, "arn", &f, &[change("subnets")]).unwrap().unwrap();
        let vpc = req.get_network_configuration().as_ref().unwrap().awsvpc_configuration().unwrap();
        assert_eq!(vpc.security_groups(), ["sg-1"], "security groups always go with the subnets");
        let req = update_request(&c, "arn", &f, &[change("min_healthy_percent")]).unwrap().unwrap();
        let dc = req.get_deployment_configuration().as_ref().unwrap();
        assert_eq!((dc.minimum_healthy_percent(), dc.maximum_percent()), (Some(100), Some(200)));
        assert!(dc.deployment_circuit_breaker().is_some_and(|b| b.enable() && b.rollback()));
        f.registry = None;
        let req = update_request(&c, "arn", &f, &[change("registry"), change("health_check_grace")]).unwrap().unwrap();
        assert_eq!(req.get_service_registries().as_deref(), Some(&[][..]), "an empty list removes the registration");
        assert_eq!(req.get_health_check_grace_period_seconds(), &Some(60));
    }

    #[test]
    fn cluster_names() {
        assert_eq!(cluster_name_of("arn:aws:ecs:us-east-1:1:cluster/demo"), "demo");
        assert_eq!(cluster_name_of("demo"), "demo");
        let id = identity(&described(true)).unwrap();
        assert_eq!(id.attrs["resource_id"], "service/demo/demo-webhook");
    }
}
