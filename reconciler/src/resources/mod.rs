//! One folder per AWS service, one file per resource kind, each implementing
//! [`crate::engine::Kind`] with the same verbs. Each service folder holds its own helpers
//! (client, tagging, error codes).

pub mod autoscaling;
pub mod ec2;
pub mod ecs;
pub mod iam;
pub mod logs;
pub mod servicediscovery;
pub mod sqs;

use crate::engine::Kind;

/// Every kind. The order is only the order of reads and listings: the engine derives
/// creation and deletion order from references, not from this list.
pub fn registry() -> Vec<Box<dyn Kind>> {
    let mut kinds = ec2::kinds();
    kinds.extend(iam::kinds());
    kinds.extend(logs::kinds());
    kinds.extend(sqs::kinds());
    kinds.extend(servicediscovery::kinds());
    kinds.extend(ecs::kinds());
    kinds.extend(autoscaling::kinds());
    kinds.shrink_to_fit();
    kinds
}
