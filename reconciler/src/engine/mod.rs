//! The generic reconcile engine. It knows no resource kind: kinds plug in through [`Kind`]
//! (one file each under `resources/<service>/`), desired state comes in as [`Desired`] nodes,
//! live state as [`Observed`] items found by ownership (tags, a deterministic name, or a parent).

pub mod advice;
mod apply;
pub mod budget;
pub mod calls;
mod context;
mod destroy;
mod diff;
pub mod fields;
mod graph;
mod kind;
pub mod lock;
mod markers;
mod observe;
pub mod ownership;
mod planner;
pub mod policy;
#[cfg(test)]
mod properties;
mod ready;
mod refs;
mod replacement;
pub mod retry;
mod slots;
#[cfg(test)]
mod testing;
mod timeline;
pub mod wait;

pub use crate::changes::FieldChange;
pub use apply::{apply, fail_if_unhealthy, ApplyReport, Destructive};
pub use context::{Ctx, Service, Settings, Stop};
pub use destroy::{destroy, destroy_order};
pub use diff::{diff_fields, for_create, for_update};
pub use graph::creation_order;
pub use kind::{DynKind, Kind};
pub(crate) use markers::{initial_value, within_bounds};
pub use markers::{set_of, UNKNOWN};
pub use markers::{Managed, Ref, Set};
pub use observe::{observe, observe_owned, Snapshot};
pub use planner::plan;
#[cfg(test)]
pub use refs::{initial, within};
pub use refs::{normalise_set, reference, reference_to, references as references_in, resolve, set};
pub use retry::{call_failed, call_failed_with, AwsError, ErrorClass};

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Fields of a resource: desired (may contain references and markers) or observed (normalised).
pub type Fields = Map<String, Value>;

/// Attributes other resources may reference besides the physical id: `arn`, `name`, `url`, ...
pub type Attrs = BTreeMap<String, String>;

/// One resource the spec wants: its kind's fields struct as JSON. `fields` may contain
/// references (`Ref::to(id)`, `Ref::attr(id, "arn")`) to other nodes; the dependency graph is
/// derived from them plus `after`.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub kind: &'static str,
    pub id: String,
    pub fields: Fields,
    /// Extra ordering edges that no field expresses (e.g. a NAT gateway needs the IGW).
    /// (`deletion_policy: retain` is recorded on the resource itself, as the tag
    /// `ownership::RETAIN_TAG`, so that pruning and destroy know it without the spec.)
    pub after: Vec<String>,
}

/// Whether a live resource is usable (dependents wait for Ready; Failed is replaced).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum Status {
    #[default]
    Ready,
    Pending(String),
    Failed(String),
    /// There and in use, but not healthy, and replacing it would not help (an ECS service whose
    /// deployment failed: the image or configuration must change). Dependents go on; `status`
    /// shows it; an apply that leaves it as it is fails, saying why.
    Degraded(String),
    /// On its way out: being deleted by an earlier run (killed or timed out) or by AWS (a NAT
    /// gateway `deleting`, a VPC link `DELETING`, an ECS service `DRAINING`). Not usable and
    /// never deleted again: apply waits until it is gone before creating its successor (which
    /// would clash with it: the same Elastic IP, the same service name), destroy waits until
    /// it is gone before deleting what it sits in.
    Leaving(String),
}

/// One live resource, with the fields its kind normalised for comparison.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Observed {
    pub kind: &'static str,
    /// Logical id, from the `reconciler:id` tag (or the kind's naming scheme).
    pub id: String,
    /// AWS id (vpc-..., an ARN, a queue URL: whatever the kind's calls address it by).
    pub physical_id: String,
    /// What dependents may reference besides the physical id.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: Attrs,
    pub fields: Fields,
    #[serde(skip_serializing_if = "is_ready")]
    pub status: Status,
    /// When AWS created it (seconds since the epoch), where the API says: of duplicates left
    /// by an interrupted create, the oldest is kept. Never compared.
    #[serde(skip)]
    pub created: Option<i64>,
}

fn is_ready(s: &Status) -> bool {
    *s == Status::Ready
}

impl Observed {
    /// A ready resource with no attributes beyond its id (most EC2 kinds).
    pub fn new(kind: &'static str, id: String, physical_id: String, fields: Fields) -> Self {
        Observed { kind, id, physical_id, attrs: Attrs::new(), fields, status: Status::Ready, created: None }
    }

    pub fn identity(&self) -> Identity {
        Identity { physical_id: self.physical_id.clone(), attrs: self.attrs.clone() }
    }
}

/// What a create (or an update that yields a new identity) returns: how dependents refer to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub physical_id: String,
    pub attrs: Attrs,
}

impl Identity {
    pub fn id(physical_id: impl Into<String>) -> Self {
        Identity { physical_id: physical_id.into(), attrs: Attrs::new() }
    }

    pub fn with(mut self, attr: &str, value: impl Into<String>) -> Self {
        self.attrs.insert(attr.to_string(), value.into());
        self
    }
}

/// How a kind is replaced when an immutable field changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replacement {
    /// The new one is created first, dependents are repointed, then the old one is deleted.
    /// Possible where two can coexist (no unique name in the way).
    CreateBeforeDestroy,
    /// AWS forbids two at once (a unique name, a CIDR): the old one goes first.
    DeleteBeforeCreate,
}

/// IAM actions of one kind, by how they can be constrained to what the stack owns.
#[derive(Debug, Clone, Default)]
pub struct IamActions {
    /// Called by `observe` (and so by `plan`) and taking no resource ARN (List/Describe of
    /// many): on `*`.
    pub read: Vec<&'static str>,
    /// Reads of that kind that show the whole account (every role's policies, every tag),
    /// used by observe only where the spec allows it (`account_wide_reads`), and granted
    /// only then.
    pub read_account_wide: Vec<&'static str>,
    /// Called by `observe` on one resource that AWS authorises by its ARN (GetRole,
    /// DescribeClusters): on the service's [`arns`](Self::arns), without condition (a plan
    /// also reads what the stack does not own, to refuse it). An action listed here by any
    /// kind is granted by ARN wherever it is needed, also among the engine's own reads.
    pub read_by_arn: Vec<&'static str>,
    /// Create calls that tag the new resource in the same request (`aws:RequestTag`): on the
    /// service's [`arns`](Self::arns) unless listed in [`on_any`](Self::on_any).
    pub create: Vec<&'static str>,
    /// Calls that change or delete a resource the stack already owns (`aws:ResourceTag`): on
    /// the service's [`arns`](Self::arns) unless listed in [`on_any`](Self::on_any).
    pub change: Vec<&'static str>,
    /// ARN patterns of the resource types this kind's calls act on or name (the VPC a subnet
    /// is created in), one per type, for any name, region and account
    /// (`arn:aws:ec2:*:*:vpc/*`). A service's calls get the union of the patterns the kinds
    /// declare for it (the ARN's third field names the service, as the prefix of an action
    /// does); the tag conditions above still limit creates and changes to the stack. A service
    /// with no patterns keeps `*`.
    pub arns: Vec<String>,
    /// Creates and changes that AWS authorises on `*` only (no resource type): kept on `*`,
    /// under their tag condition.
    pub on_any: Vec<&'static str>,
    /// Calls scoped by resource ARN pattern instead of tags (names derived from the stack,
    /// for APIs whose resources cannot be tag-conditioned).
    pub scoped: Vec<Scoped>,
    /// Whole statements a service needs beside these (EC2's tag-on-create condition).
    pub extra: Vec<serde_json::Value>,
}

/// Actions allowed on resources matching ARN patterns.
#[derive(Debug, Clone)]
pub struct Scoped {
    pub actions: Vec<&'static str>,
    pub resources: Vec<String>,
    /// Read-only actions (also granted to `plan`).
    pub read_only: bool,
}

pub(crate) fn kind_of<'k>(kinds: &'k [Box<dyn DynKind>], name: &str) -> anyhow::Result<&'k dyn DynKind> {
    kinds
        .iter()
        .find(|k| k.name() == name)
        .map(|k| k.as_ref())
        .ok_or_else(|| anyhow::anyhow!("internal error: no resource kind `{name}` is registered"))
}

pub(crate) fn progress(msg: &str) {
    crate::log::progress(msg);
}
