//! The YAML model of one stack. Unknown keys are errors everywhere (`deny_unknown_fields`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One webhook stack on AWS Fargate.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Stack name. Every owned resource is tagged `reconciler:stack=<name>`.
    /// Lowercase letters, digits and hyphens, 2 to 32 characters.
    pub name: String,
    /// AWS region, e.g. `us-east-1`.
    pub region: String,
    /// Tags put on every owned resource (besides the ownership tags).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// What happens to owned resources on `destroy`: `delete` (default) or `retain`.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    pub network: Network,
    /// A lease in S3 that keeps two reconcilers (a `run` loop and a person's `apply`) from
    /// changing the stack at the same time. Without it, do not run two at once.
    #[serde(default)]
    pub lock: Option<LockSpec>,
    #[serde(default)]
    pub discovery: Option<Discovery>,
    #[serde(default)]
    pub service: Option<Service>,
    #[serde(default)]
    pub scaling: Option<Scaling>,
    #[serde(default)]
    pub api: Option<Api>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DeletionPolicy {
    #[default]
    Delete,
    Retain,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LockSpec {
    /// An existing S3 bucket (the stack does not own it); the lease is one small object.
    pub bucket: String,
    /// Object key; default `reconciler/<stack>.lock`.
    #[serde(default)]
    pub key: Option<String>,
    /// How long a lease lives without renewal (a crashed holder blocks no longer than this).
    #[serde(default = "default_lock_ttl")]
    pub ttl_seconds: u32,
}
fn default_lock_ttl() -> u32 {
    900
}

/// Exactly one of `vpc` (a new VPC the stack owns) or `existing` (referenced, never modified).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Network {
    #[serde(default)]
    pub vpc: Option<NewVpc>,
    #[serde(default)]
    pub existing: Option<ExistingVpc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NewVpc {
    /// VPC CIDR block, /16 to /28.
    #[serde(default = "default_vpc_cidr")]
    pub cidr: String,
    /// Number of availability zones (2 to 6); one public and one private subnet in each.
    #[serde(default = "default_azs")]
    pub azs: u8,
    /// NAT gateways: one per AZ (`per-az`), one shared (`single`), or none.
    #[serde(default)]
    pub nat: NatMode,
    /// Availability zone names; default: the first `azs` zones the region reports.
    #[serde(default)]
    pub availability_zones: Option<Vec<String>>,
    /// Public subnet CIDRs, one per AZ; default: consecutive /24s from the start of the VPC.
    #[serde(default)]
    pub public_subnets: Option<Vec<String>>,
    /// Private subnet CIDRs, one per AZ; default: consecutive /24s from the middle of the VPC.
    #[serde(default)]
    pub private_subnets: Option<Vec<String>>,
}

fn default_vpc_cidr() -> String {
    "10.0.0.0/16".into()
}
fn default_azs() -> u8 {
    2
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum NatMode {
    #[default]
    PerAz,
    Single,
    None,
}

/// A VPC the stack does not own: validated live, referenced, never modified or deleted.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExistingVpc {
    pub vpc_id: String,
    /// Private subnets with a route to the internet (for image pulls); at least 2 AZs.
    pub private_subnet_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Discovery {
    /// Cloud Map private DNS namespace, e.g. `benchling.local`.
    pub namespace: String,
    /// Cloud Map service name.
    pub service: String,
    /// DNS TTL in seconds.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
}
fn default_ttl() -> u32 {
    30
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub cluster: String,
    /// Container image, `<registry>/<repo>:<tag>` or `<registry>/<repo>@sha256:<digest>`.
    pub image: String,
    /// Fargate task CPU units (256, 512, 1024, 2048, 4096, 8192, 16384).
    pub cpu: u32,
    /// Fargate task memory in MiB; must fit the CPU size (the Fargate table).
    pub memory: u32,
    /// Container port, 1 to 65535.
    #[serde(default = "default_port")]
    pub port: u32,
    #[serde(default = "default_desired")]
    pub desired_count: u32,
    /// Plain environment variables. Secret values belong in `secrets`.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Secrets by reference only: Secrets Manager or SSM Parameter Store ARNs.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
}
fn default_port() -> u32 {
    8080
}
fn default_desired() -> u32 {
    2
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scaling {
    pub min: u32,
    pub max: u32,
    /// Target average CPU utilisation in percent (1 to 100).
    #[serde(default)]
    pub cpu_target: Option<u32>,
    /// Target average memory utilisation in percent (1 to 100).
    #[serde(default)]
    pub memory_target: Option<u32>,
    #[serde(default = "default_out_cooldown")]
    pub scale_out_cooldown: u32,
    #[serde(default = "default_in_cooldown")]
    pub scale_in_cooldown: u32,
}
fn default_out_cooldown() -> u32 {
    60
}
fn default_in_cooldown() -> u32 {
    300
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Api {
    pub name: String,
    #[serde(default)]
    pub access_logs: Option<AccessLogs>,
    #[serde(default)]
    pub throttling: Option<Throttling>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccessLogs {
    /// CloudWatch Logs retention; one of the values CloudWatch accepts (1, 3, 5, 7, 14, 30, ...).
    pub retention_days: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Throttling {
    /// Steady-state requests per second.
    pub rate: f64,
    /// Burst capacity.
    pub burst: u32,
}
