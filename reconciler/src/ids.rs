//! Logical ids desired state gives the resources that other parts of the tool name: the cost
//! estimate (which log group grows with requests, which queue carries the webhooks), the
//! outputs (the endpoint, the cluster and service names) and `verify` (the hops of the chain),
//! and those one section of desired state makes and another uses. One constant each, so that
//! renaming one in desired state renames it everywhere or fails to compile.

pub const VPC: &str = "vpc";
pub const CLUSTER: &str = "cluster";
pub const TASK_DEFINITION: &str = "task-definition";
pub const SERVICE: &str = "service";
/// The webhook's own queue; its dead-letter queue is `queue-dlq`.
pub const QUEUE: &str = "queue";
/// The log group API Gateway writes access logs to.
pub const LOG_API: &str = "log-api";
pub const DISCOVERY_SERVICE: &str = "discovery-service";
pub const VPC_LINK: &str = "vpc-link";
pub const API: &str = "api";
pub const INTEGRATION: &str = "integration";
pub const STAGE: &str = "stage";
pub const DOMAIN_NAME: &str = "domain-name";
pub const DRIFT_TASK_DEFINITION: &str = "task-definition-drift-correction";
pub const DRIFT_LOG_GROUP: &str = "log-drift-correction";
/// The service tasks' security group (the network section makes it, the service uses it).
pub const SG_SERVICE: &str = "sg-service";
/// The VPC link's security group (the network section makes it, the edge uses it).
pub const SG_VPC_LINK: &str = "sg-vpc-link";
/// The drift-correction task's security group (made and used by that section, named here
/// beside the other two).
pub const SG_DRIFT_CORRECTION: &str = "sg-drift-correction";
