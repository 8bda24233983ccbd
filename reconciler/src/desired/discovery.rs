//! The discovery section: a Cloud Map private DNS namespace in the VPC and the service the
//! ECS tasks register in. SRV records (an IP and a port per task) are what API Gateway's
//! private integration needs; `HealthCheckCustomConfig` lets ECS report each task's container
//! health, so only healthy tasks are discovered.

use super::{obj, Builder};
use crate::engine::reference;
use crate::ids;
use serde_json::json;

pub(super) fn build(b: &mut Builder) {
    let Some(d) = &b.spec.discovery else { return };
    let mut records: Vec<&str> = d.records.iter().map(|r| r.as_str()).collect();
    records.sort();
    b.add("servicediscovery:namespace", "namespace", obj(json!({"name": d.namespace, "vpc": reference(ids::VPC)})), &[]);
    b.add(
        "servicediscovery:service",
        ids::DISCOVERY_SERVICE,
        obj(json!({
            "name": d.service,
            "namespace": reference("namespace"),
            "record_types": records,
            "routing_policy": "MULTIVALUE",
            "health_check_custom": true,
            "ttl": d.ttl,
        })),
        &[],
    );
}
