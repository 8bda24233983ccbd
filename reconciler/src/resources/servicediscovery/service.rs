//! `servicediscovery:service` — the Cloud Map service ECS registers the webhook tasks in and
//! API Gateway's private integration discovers them through. SRV records carry the port API
//! Gateway needs (A records alone are not supported there); `HealthCheckCustomConfig` lets
//! ECS report each task's container health, so unhealthy tasks are not returned. Both are
//! fixed at creation (a change is a replacement); only the TTL is updated in place.
//!
//! Names are unique within a namespace, so a replacement deletes first. Found by name, or by
//! the description this kind writes (a renamed service is then still found, and pruned);
//! ownership is decided by the tags.

use super::{
    api_tags, call_failed, changed, client, comparable_tags, description, owned, request_id, sync_tags, tags_of, typed, untyped,
    wait_for_operation,
};
use crate::engine::ownership::{not_owned, TagMap};
use crate::engine::retry::gone_as_none;
use crate::engine::Ref;
use crate::engine::{Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed};
use aws_sdk_servicediscovery::types::{
    DnsConfig, DnsConfigChange, DnsRecord, HealthCheckCustomConfig, RecordType, RoutingPolicy, ServiceChange,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub struct DiscoveryService;

/// Cloud Map's routing policy when none was given.
const DEFAULT_ROUTING: &str = "MULTIVALUE";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryServiceFields {
    pub name: String,
    /// The namespace id.
    pub namespace: Ref,
    /// Sorted: `A`, `SRV`.
    pub record_types: Vec<String>,
    pub routing_policy: String,
    /// ECS reports each task's container health.
    pub health_check_custom: bool,
    /// One TTL for all records (desired state has one); null without DNS records.
    pub ttl: Option<Ttl>,
    pub tags: TagMap,
}

/// Records whose TTLs differ (changed by hand) show as the list of the distinct TTLs, which is
/// never equal to the wanted number, so the update rewrites them all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ttl {
    One(u64),
    Mixed(Vec<i64>),
}

/// (`record_types`, `ttl`, `routing_policy`) of a service's DNS configuration, as desired
/// state writes them. No DNS configuration: no records, TTL null.
pub fn dns_fields(dns: Option<&DnsConfig>) -> (Vec<String>, Option<Ttl>, String) {
    let records = dns.map(|d| d.dns_records()).unwrap_or_default();
    let types: BTreeSet<&str> = records.iter().map(|r| r.r#type().as_str()).collect();
    let ttls: BTreeSet<i64> = records.iter().map(|r| r.ttl()).collect();
    let ttl = match ttls.len() {
        0 => None,
        1 => Some(Ttl::One(ttls.first().copied().unwrap_or_default().max(0) as u64)),
        _ => Some(Ttl::Mixed(ttls.into_iter().collect())),
    };
    let routing = dns.and_then(|d| d.routing_policy()).map(|r| r.as_str()).unwrap_or(DEFAULT_ROUTING);
    (types.into_iter().map(String::from).collect(), ttl, routing.to_string())
}

/// Observed fields of a service.
pub fn service_fields(svc: &aws_sdk_servicediscovery::types::Service, tags: &BTreeMap<String, String>) -> DiscoveryServiceFields {
    let (record_types, ttl, routing_policy) = dns_fields(svc.dns_config());
    DiscoveryServiceFields {
        name: svc.name().unwrap_or_default().to_string(),
        namespace: svc.namespace_id().unwrap_or_default().to_string().into(),
        record_types,
        routing_policy,
        health_check_custom: svc.health_check_custom_config().is_some(),
        ttl,
        tags: comparable_tags(tags),
    }
}

/// The ARN of namespace `ns_id`, next to service ARN `service_arn` (same partition, region
/// and account): `arn:aws:servicediscovery:r:a:service/srv-1` → `…:namespace/ns-1`.
pub fn namespace_arn(service_arn: &str, ns_id: &str) -> Option<String> {
    let (prefix, _) = service_arn.rsplit_once(":service/")?;
    Some(format!("{prefix}:namespace/{ns_id}"))
}

/// The DNS records desired fields ask for: one per record type, all with the one TTL.
fn dns_records(f: &DiscoveryServiceFields) -> anyhow::Result<Vec<DnsRecord>> {
    let Some(Ttl::One(ttl)) = f.ttl else { anyhow::bail!("internal error: Cloud Map service {} is wanted without one TTL", f.name) };
    let ttl = i64::try_from(ttl).map_err(|_| anyhow::anyhow!("TTL {ttl} is too large for Cloud Map"))?;
    f.record_types.iter().map(|t| Ok(DnsRecord::builder().r#type(RecordType::from(t.as_str())).ttl(ttl).build()?)).collect()
}

/// Whether an unowned service of a wanted name sits in the wanted namespace: compared
/// directly when the namespace is given literally, else (a reference to the stack's own
/// namespace) by asking whether its namespace is the stack's.
async fn in_wanted_namespace(
    ctx: &Ctx,
    wanted: &DiscoveryServiceFields,
    svc: &aws_sdk_servicediscovery::types::Service,
) -> anyhow::Result<bool> {
    let Some(ns_id) = svc.namespace_id() else { return Ok(false) };
    if let Ref::Is(want) = &wanted.namespace {
        return Ok(want == ns_id);
    }
    let Some(ns_arn) = svc.arn().and_then(|a| namespace_arn(a, ns_id)) else { return Ok(false) };
    // A namespace deleted since is nobody's.
    Ok(tags_of(ctx, &ns_arn).await?.is_some_and(|tags| owned(ctx, &tags).is_some()))
}

impl Kind for DiscoveryService {
    fn name(&self) -> &'static str {
        "servicediscovery:service"
    }

    type Typed = DiscoveryServiceFields;

    fn replace_on(&self) -> &'static [&'static str] {
        &["name", "namespace", "record_types", "routing_policy", "health_check_custom"]
    }

    /// ListServices (one page per 100; moto ignores filters, and the namespace is unresolved
    /// here anyway), then GetService and ListTagsForResource at once per candidate: a wanted name or
    /// this stack's description. One more ListTagsForResource only for an unowned service of
    /// a wanted name (is its namespace ours?).
    async fn observe(&self, ctx: &Ctx, wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let sd = client(ctx);
        let wanted: Vec<DiscoveryServiceFields> = crate::engine::fields::wanted(self.name(), wanted)?;
        let names: BTreeSet<&str> = wanted.iter().map(|w| w.name.as_str()).collect();
        let ours = description(&ctx.settings.stack);
        let mut candidates = Vec::new();
        let mut pages = sd.list_services().into_paginator().send();
        while let Some(page) = pages.next().await {
            for s in page.map_err(call_failed("ListServices"))?.services() {
                let named = s.name().is_some_and(|n| names.contains(n));
                if let (Some(id), Some(arn), true) = (s.id(), s.arn(), named || s.description() == Some(ours.as_str())) {
                    candidates.push((id.to_string(), arn.to_string()));
                }
            }
        }
        let sd = &sd;
        // The service and its tags at once; one deleted since it was listed (another stack's
        // destroy) is left out.
        let read = futures::future::try_join_all(candidates.iter().map(|(id, arn)| async move {
            let (got, tags) = futures::future::join(sd.get_service().id(id).send(), tags_of(ctx, arn)).await;
            // Gone by either answer: absent, and the other answer is not looked at.
            let Some(out) = gone_as_none(got.map_err(call_failed("GetService")))? else { return anyhow::Ok(None) };
            let Some(tags) = tags? else { return Ok(None) };
            let svc = out.service().cloned().ok_or_else(|| anyhow::anyhow!("GetService {id} returned no service"))?;
            Ok(Some((svc, tags)))
        }))
        .await?;
        let mut out = Vec::new();
        for (svc, tags) in read.into_iter().flatten() {
            let (Some(srv_id), Some(arn), Some(name)) = (svc.id(), svc.arn(), svc.name()) else { continue };
            if let Some(id) = owned(ctx, &tags) {
                let mut o = Observed::new(self.name(), id, srv_id.to_string(), untyped(&service_fields(&svc, &tags)));
                o.attrs.insert("arn".into(), arn.into());
                out.push(o);
                continue;
            }
            for w in wanted.iter().filter(|w| w.name == name) {
                if in_wanted_namespace(ctx, w, &svc).await? {
                    return Err(not_owned("Cloud Map service", name, &ctx.settings.stack, &tags));
                }
            }
        }
        Ok(out)
    }

    async fn create(&self, ctx: &Ctx, id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: DiscoveryServiceFields = typed(self.name(), fields)?;
        let routing = RoutingPolicy::from(f.routing_policy.as_str());
        let dns = DnsConfig::builder().routing_policy(routing).set_dns_records(Some(dns_records(&f)?)).build()?;
        let mut req = client(ctx)
            .create_service()
            .name(&f.name)
            .namespace_id(&f.namespace)
            .description(description(&ctx.settings.stack))
            .creator_request_id(request_id(ctx, id))
            .dns_config(dns)
            .set_tags(Some(api_tags(&f.tags)?));
        if f.health_check_custom {
            // No failure threshold: it is deprecated, Cloud Map always uses 1.
            req = req.health_check_custom_config(HealthCheckCustomConfig::builder().build());
        }
        let out = req.send().await.map_err(call_failed("CreateService"))?;
        let svc = out.service().ok_or_else(|| anyhow::anyhow!("CreateService returned no service"))?;
        let (Some(srv_id), Some(arn)) = (svc.id(), svc.arn()) else { anyhow::bail!("CreateService returned no service id or ARN") };
        Ok(Identity::id(srv_id).with("arn", arn))
    }

    /// The TTL: UpdateService with every record (records left out would be deleted), then
    /// waits for the operation. Tags: TagResource / UntagResource.
    async fn update(&self, ctx: &Ctx, live: &Observed, fields: &Fields, changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        let srv = &live.physical_id;
        if changed(changes, "ttl") {
            let change = ServiceChange::builder()
                // Resent so the description (what finds a renamed service) never goes.
                .description(description(&ctx.settings.stack))
                .dns_config(DnsConfigChange::builder().set_dns_records(Some(dns_records(&typed(self.name(), fields)?)?)).build()?)
                .build();
            let out = client(ctx).update_service().id(srv).service(change).send().await.map_err(call_failed("UpdateService"))?;
            if let Some(op) = out.operation_id() {
                wait_for_operation(ctx, op, &format!("Cloud Map service {srv} to take the new TTL")).await?;
            }
        }
        let arn = live.attrs.get("arn").ok_or_else(|| anyhow::anyhow!("internal error: service {srv} observed without an ARN"))?;
        sync_tags(ctx, arn, changes).await?;
        Ok(None)
    }

    /// DeleteService. Instances ECS has not deregistered yet answer ResourceInUse: a
    /// conflict the engine retries.
    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        client(ctx).delete_service().id(&live.physical_id).send().await.map_err(call_failed("DeleteService"))?;
        Ok(())
    }

    fn iam(&self, _stack: &str) -> IamActions {
        IamActions {
            read: vec!["servicediscovery:ListServices", "servicediscovery:ListTagsForResource", "servicediscovery:GetOperation"],
            read_by_arn: vec!["servicediscovery:GetService"],
            create: vec!["servicediscovery:CreateService", "servicediscovery:TagResource"],
            change: vec![
                "servicediscovery:UpdateService",
                "servicediscovery:DeleteService",
                "servicediscovery:TagResource",
                "servicediscovery:UntagResource",
            ],
            // A service is created in its namespace.
            arns: vec![super::iam_arn("service"), super::iam_arn("namespace")],
            on_any: super::ON_ANY.to_vec(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_servicediscovery::types::Service as CloudMapService;
    use serde_json::json;

    fn record(t: RecordType, ttl: i64) -> DnsRecord {
        DnsRecord::builder().r#type(t).ttl(ttl).build().unwrap()
    }

    #[test]
    fn dns_config_normalises_to_sorted_types_and_one_ttl() {
        // AWS echoes records in the order they were sent: SRV first here.
        let dns = DnsConfig::builder().dns_records(record(RecordType::Srv, 30)).dns_records(record(RecordType::A, 30)).build().unwrap();
        let (types, ttl, routing) = dns_fields(Some(&dns));
        assert_eq!(types, ["A", "SRV"]);
        assert_eq!(ttl, Some(Ttl::One(30)));
        assert_eq!(routing, "MULTIVALUE", "Cloud Map's default when none is reported");
        let mixed = DnsConfig::builder()
            .routing_policy(RoutingPolicy::Weighted)
            .dns_records(record(RecordType::Srv, 60))
            .dns_records(record(RecordType::A, 30))
            .build()
            .unwrap();
        let (_, ttl, routing) = dns_fields(Some(&mixed));
        assert_eq!(ttl, Some(Ttl::Mixed(vec![30, 60])), "TTLs changed by hand show, and never equal the wanted number");
        assert_eq!(serde_json::to_value(&ttl).unwrap(), json!([30, 60]));
        assert_eq!(routing, "WEIGHTED");
        assert_eq!(dns_fields(None), (vec![], None, "MULTIVALUE".to_string()));
    }

    #[test]
    fn observed_fields_have_the_desired_shape() {
        let dns = DnsConfig::builder()
            .routing_policy(RoutingPolicy::Multivalue)
            .dns_records(record(RecordType::Srv, 10))
            .dns_records(record(RecordType::A, 10))
            .build()
            .unwrap();
        let svc = CloudMapService::builder()
            .id("srv-1")
            .arn("arn:aws:servicediscovery:us-east-1:123:service/srv-1")
            .name("webhook")
            .namespace_id("ns-1")
            .dns_config(dns)
            .health_check_custom_config(HealthCheckCustomConfig::builder().build())
            .build();
        let tags: BTreeMap<String, String> =
            [("reconciler:stack", "s"), ("aws:x", "y")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(
            serde_json::Value::Object(untyped(&service_fields(&svc, &tags))),
            json!({
                "name": "webhook",
                "namespace": "ns-1",
                "record_types": ["A", "SRV"],
                "routing_policy": "MULTIVALUE",
                "health_check_custom": true,
                "ttl": 10,
                "tags": {"reconciler:stack": "s"},
            })
        );
        let bare = CloudMapService::builder().name("webhook").namespace_id("ns-1").build();
        assert!(!service_fields(&bare, &BTreeMap::new()).health_check_custom);
    }

    #[test]
    fn desired_records_round_trip() {
        let fields = json!({
            "name": "webhook", "namespace": "ns-1", "record_types": ["A", "SRV"], "routing_policy": "MULTIVALUE",
            "health_check_custom": true, "ttl": 30, "tags": {},
        });
        let f: DiscoveryServiceFields = typed("servicediscovery:service", fields.as_object().unwrap()).unwrap();
        let records = dns_records(&f).unwrap();
        let dns = DnsConfig::builder().set_dns_records(Some(records)).build().unwrap();
        assert_eq!(dns_fields(Some(&dns)).0, f.record_types);
        assert_eq!(dns_fields(Some(&dns)).1, f.ttl);
    }

    #[test]
    fn namespace_arn_sits_beside_the_service_arn() {
        assert_eq!(
            namespace_arn("arn:aws:servicediscovery:eu-west-1:123:service/srv-1", "ns-9").as_deref(),
            Some("arn:aws:servicediscovery:eu-west-1:123:namespace/ns-9")
        );
        assert_eq!(namespace_arn("not-an-arn", "ns-9"), None);
    }
}
