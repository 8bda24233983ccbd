//! The discovery section: a Cloud Map private DNS namespace in the VPC and the service the
//! ECS tasks register in. SRV records (an IP and a port per task) are what API Gateway's
//! private integration needs; `HealthCheckCustomConfig` lets ECS report each task's container
//! health, so only healthy tasks are discovered.

use super::Builder;
use crate::engine::Ref;
use crate::ids;
use crate::resources::servicediscovery::{DiscoveryServiceFields, NamespaceFields, Ttl};

pub(super) fn build(b: &mut Builder) {
    let Some(d) = &b.spec.discovery else { return };
    let mut records: Vec<String> = d.records.iter().map(|r| r.as_str().to_string()).collect();
    records.sort();
    let namespace = |tags| NamespaceFields { name: d.namespace.clone(), vpc: Some(Ref::to(ids::VPC)), tags };
    b.add("servicediscovery:namespace", "namespace", namespace, &[]);
    let service = |tags| DiscoveryServiceFields {
        name: d.service.clone(),
        namespace: Ref::to("namespace"),
        record_types: records.clone(),
        routing_policy: "MULTIVALUE".into(),
        health_check_custom: true,
        ttl: Some(Ttl::One(d.ttl.into())),
        tags,
    };
    b.add("servicediscovery:service", ids::DISCOVERY_SERVICE, service, &[]);
}
