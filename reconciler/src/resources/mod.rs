//! One file per AWS resource kind, each implementing [`crate::engine::Kind`] with the same verbs.

mod ec2;
mod elastic_ip;
mod internet_gateway;
mod nat_gateway;
mod route_table;
mod security_group;
mod subnet;
mod vpc;

use crate::engine::Kind;

/// Every kind, dependencies first: destroy and pruning delete in reverse of this order, so a
/// kind may only reference kinds listed before it (checked by a test in `desired`).
pub fn registry() -> Vec<Box<dyn Kind>> {
    vec![
        Box::new(vpc::Vpc),
        Box::new(internet_gateway::InternetGateway),
        Box::new(subnet::Subnet),
        Box::new(elastic_ip::ElasticIp),
        Box::new(nat_gateway::NatGateway),
        Box::new(route_table::RouteTable),
        Box::new(security_group::SecurityGroup),
    ]
}
