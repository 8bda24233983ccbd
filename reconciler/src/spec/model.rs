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
    /// Tag keys other tools manage on the stack's resources (cost allocation, security
    /// scanners): never compared and never removed. An entry ending in `*` is a prefix
    /// (`cost:*`). `aws:*` is always ignored. Default: none (a tag can carry meaning, e.g. for
    /// attribute-based access control, so hiding its drift is opt-in).
    #[serde(default)]
    pub ignore_tags: Vec<String>,
    /// What happens to owned resources on `destroy`: `delete` (default) or `retain`.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Whether observe may use two account-wide batch reads that save most of a pass's calls:
    /// `iam:GetAccountAuthorizationDetails` (every role's trust and inline policies) and
    /// `tag:GetResources` (every resource's tags). They let the holder read all the account's
    /// roles and tags; `false` reads resource by resource instead (about 20 more calls a pass)
    /// and leaves both out of the printed policies and the drift-correction task's role.
    /// Default: `true`.
    #[serde(default = "account_wide_reads_default", skip_serializing_if = "is_account_wide_reads_default")]
    pub account_wide_reads: bool,
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
    /// The webhook's own SQS FIFO queue and its dead-letter queue (created with `service`).
    #[serde(default)]
    pub queue: QueueSpec,
    /// What the webhook reaches outside the stack. The task role is scoped to exactly these.
    #[serde(default)]
    pub webhook: Option<Webhook>,
    #[serde(default)]
    pub api: Option<Api>,
    /// What the monthly cost estimate in every plan assumes about traffic (prices come from
    /// the table shipped with the reconciler).
    #[serde(default)]
    pub cost: CostAssumptions,
    /// The reconciler deploys itself into the stack as a scheduled task: an EventBridge
    /// Scheduler schedule runs the reconciler image on Fargate in the stack's cluster, with
    /// this spec, and each run converges the stack once (or only reports drift).
    #[serde(default)]
    pub drift_correction: Option<DriftCorrection>,
}

fn account_wide_reads_default() -> bool {
    true
}

/// Left out of the carried spec when it is the default, so that a spec without it carries
/// what it did before the setting existed (the drift-correction task is not changed by it).
fn is_account_wide_reads_default(on: &bool) -> bool {
    *on
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
    /// DNS record types per instance. API Gateway's private integration needs SRV (an IP and
    /// a port per task); A adds plain address lookups. Fixed at creation: a change replaces
    /// the Cloud Map service.
    #[serde(default = "default_records")]
    pub records: Vec<RecordType>,
}
fn default_records() -> Vec<RecordType> {
    vec![RecordType::Srv, RecordType::A]
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord)]
pub enum RecordType {
    #[serde(rename = "SRV")]
    Srv,
    A,
}
impl RecordType {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::Srv => "SRV",
            RecordType::A => "A",
        }
    }
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
    /// Secrets by reference only: Secrets Manager or SSM Parameter Store ARNs. ECS injects
    /// their values; the execution role may read exactly these.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Who owns the running image: `pinned` (default: the spec's image wins, a different live
    /// image is drift) or `track-live` (a deploy pipeline owns it: the reconciler keeps the
    /// image of the live revision and converges everything else).
    #[serde(default)]
    pub image_policy: ImagePolicy,
    /// How tasks are spread over Fargate capacity; default: all on FARGATE.
    #[serde(default)]
    pub capacity: Capacity,
    /// Seconds ECS ignores failing health checks after a task starts.
    #[serde(default = "default_grace")]
    pub health_check_grace_seconds: u32,
    /// Seconds a container gets between SIGTERM and SIGKILL (2 to 120).
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout_seconds: u32,
    /// The container's log group `/ecs/<stack>`.
    #[serde(default)]
    pub logs: LogSpec,
}
fn default_grace() -> u32 {
    60
}
fn default_stop_timeout() -> u32 {
    30
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ImagePolicy {
    #[default]
    Pinned,
    TrackLive,
}

/// Capacity provider strategy: relative weights of FARGATE and FARGATE_SPOT, and how many
/// tasks always run on FARGATE first.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    #[serde(default = "one")]
    pub fargate_weight: u32,
    #[serde(default)]
    pub spot_weight: u32,
    #[serde(default)]
    pub fargate_base: u32,
}
impl Default for Capacity {
    fn default() -> Self {
        Capacity { fargate_weight: 1, spot_weight: 0, fargate_base: 0 }
    }
}
fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogSpec {
    /// CloudWatch Logs retention in days (one of the values CloudWatch accepts).
    #[serde(default = "default_log_retention")]
    pub retention_days: u32,
    /// `retain` keeps the log group (unmanaged) when the stack is destroyed or it leaves the
    /// spec; default: the stack's `deletion_policy`.
    #[serde(default)]
    pub deletion_policy: Option<DeletionPolicy>,
}
impl Default for LogSpec {
    fn default() -> Self {
        LogSpec { retention_days: default_log_retention(), deletion_policy: None }
    }
}
fn default_log_retention() -> u32 {
    7
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueSpec {
    /// Seconds a received message stays invisible: longer than the worker's longest job.
    #[serde(default = "default_visibility")]
    pub visibility_timeout_seconds: u32,
    /// Receives before a message moves to the dead-letter queue.
    #[serde(default = "default_max_receive")]
    pub max_receive_count: u32,
    /// Seconds a message is kept (60 to 1209600).
    #[serde(default = "default_retention")]
    pub retention_seconds: u32,
    /// `retain` keeps both queues (unmanaged) on destroy; default: the stack's `deletion_policy`.
    #[serde(default)]
    pub deletion_policy: Option<DeletionPolicy>,
}
impl Default for QueueSpec {
    fn default() -> Self {
        QueueSpec {
            visibility_timeout_seconds: default_visibility(),
            max_receive_count: default_max_receive(),
            retention_seconds: default_retention(),
            deletion_policy: None,
        }
    }
}
fn default_visibility() -> u32 {
    960
}
fn default_max_receive() -> u32 {
    5
}
fn default_retention() -> u32 {
    1_209_600
}

/// The webhook's external resources. The task role gets exactly: read the secret, send to
/// the packager queue, and read/write/list the user bucket under the prefix.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Secrets Manager ARN of the Benchling app secret (JSON). Passed by reference as
    /// `BENCHLING_SECRET`; the service reads it at start-up.
    pub benchling_secret_arn: String,
    /// ARN of the packager's SQS queue (`PACKAGER_SQS_URL` is derived from it).
    pub packager_queue_arn: String,
    /// The bucket packages are written to.
    pub user_bucket: String,
    /// Key prefix inside the bucket.
    #[serde(default = "default_pkg_prefix")]
    pub pkg_prefix: String,
    #[serde(default)]
    pub quilt_web_host: Option<String>,
    #[serde(default)]
    pub athena_user_database: Option<String>,
}
fn default_pkg_prefix() -> String {
    "benchling".into()
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
    /// A custom domain for the webhook URL (regional endpoint). The reconciler creates the
    /// API Gateway domain name and its mapping to the `$default` stage; the DNS record that
    /// points the name at API Gateway is the user's to create (plan and outputs show it).
    #[serde(default)]
    pub domain: Option<CustomDomain>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CustomDomain {
    /// The host name Benchling calls, e.g. `hooks.example.com`.
    pub name: String,
    /// An ACM certificate for `name`, in the spec's region (regional endpoints need that).
    pub certificate_arn: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccessLogs {
    /// CloudWatch Logs retention; one of the values CloudWatch accepts (1, 3, 5, 7, 14, 30, ...).
    pub retention_days: u32,
    /// `retain` keeps the access log group on destroy; default: the stack's `deletion_policy`.
    #[serde(default)]
    pub deletion_policy: Option<DeletionPolicy>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Throttling {
    /// Steady-state requests per second.
    pub rate: f64,
    /// Burst capacity.
    pub burst: u32,
}

/// Traffic the monthly cost estimate assumes; resources are priced from what the plan creates
/// or finds, traffic from these figures.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CostAssumptions {
    /// Webhook requests a month: HTTP API requests, Cloud Map discovery calls (one per
    /// request), SQS requests (send, receive, delete: 3 per request) and access log volume
    /// (1 KB per request).
    #[serde(default = "default_requests")]
    pub requests_per_month: u64,
    /// GB a month through the NAT gateways, all together (image pulls, calls to AWS and
    /// Benchling).
    #[serde(default = "default_nat_gb")]
    pub nat_gb_per_month: f64,
    /// GB a month the containers write to their log group.
    #[serde(default = "default_log_gb")]
    pub log_gb_per_month: f64,
}
impl Default for CostAssumptions {
    fn default() -> Self {
        CostAssumptions { requests_per_month: default_requests(), nat_gb_per_month: default_nat_gb(), log_gb_per_month: default_log_gb() }
    }
}
fn default_requests() -> u64 {
    1_000_000
}
fn default_nat_gb() -> f64 {
    10.0
}
fn default_log_gb() -> f64 {
    1.0
}

/// Scheduled drift correction: a schedule (`rate`, `cron` or `at`) that runs `reconciler run
/// <this spec> --iterations 1` as a Fargate task in the service's cluster. The task role holds
/// exactly what `reconciler policy <spec> --for apply` (or `--for plan`) prints; the spec is
/// baked into the task definition (`RECONCILER_SPEC`), so every run uses the spec of the last
/// apply.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DriftCorrection {
    /// EventBridge Scheduler expression: `rate(15 minutes)` (minute(s), hour(s), day(s)),
    /// `cron(0/15 * * * ? *)` (six fields), or `at(2030-01-01T00:00:00)` (once).
    pub schedule: String,
    /// The reconciler's container image (`make image`), `<registry>/<repo>:<tag>` or
    /// `<registry>/<repo>@sha256:<digest>`; its entrypoint is the `reconciler` binary.
    pub image: String,
    /// `apply` (default): correct drift, holding destructive steps back. `plan-only`: report
    /// drift in the task's log and change nothing (the task role gets the plan policy).
    #[serde(default)]
    pub mode: DriftMode,
    /// Fargate task CPU units.
    #[serde(default = "default_drift_cpu")]
    pub cpu: u32,
    /// Fargate task memory in MiB; must fit the CPU size.
    #[serde(default = "default_drift_memory")]
    pub memory: u32,
    /// The task's log group `/ecs/<stack>/drift-correction` (one JSON status line per run).
    #[serde(default)]
    pub logs: LogSpec,
}
fn default_drift_cpu() -> u32 {
    256
}
fn default_drift_memory() -> u32 {
    512
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DriftMode {
    #[default]
    Apply,
    PlanOnly,
}
