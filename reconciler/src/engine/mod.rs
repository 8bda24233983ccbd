//! The generic reconcile engine. It knows no resource kind: kinds plug in through [`Kind`]
//! (one file each under `resources/`), desired state comes in as [`Desired`] nodes, live state
//! as [`Observed`] items found by ownership tags.

mod context;
mod diff;
mod executor;
pub mod lock;
pub mod ownership;
pub mod policy;
mod refs;
pub mod retry;
pub mod wait;

pub use context::{Ctx, Settings};
pub use diff::{diff_fields, normalise_set};
pub use executor::{apply, destroy, observe, plan, ApplyReport, Snapshot};
pub use refs::{reference, references as references_in, resolve, set, UNKNOWN};
pub use retry::{call_failed, AwsError};

use futures::future::BoxFuture;
use serde_json::{Map, Value};

/// Fields of a resource: desired (may contain references) or observed (normalised).
pub type Fields = Map<String, Value>;

/// One resource the spec wants. `fields` may contain references (`engine::reference(id)`)
/// to other nodes' physical ids; the dependency graph is derived from them plus `after`.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub kind: &'static str,
    pub id: String,
    pub fields: Fields,
    /// Extra ordering edges that no field expresses (e.g. a NAT gateway needs the IGW).
    pub after: Vec<String>,
}

/// One live resource, with the fields its kind normalised for comparison.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Observed {
    pub kind: &'static str,
    /// Logical id, from the `reconciler:id` tag.
    pub id: String,
    /// AWS id (vpc-..., subnet-..., sg-...).
    pub physical_id: String,
    pub fields: Fields,
}

/// A resource kind: the same verbs for every kind. Implementations do AWS I/O only; the
/// decisions (what to create, update, replace, delete) are the engine's.
pub trait Kind: Send + Sync {
    /// Stable kind name, e.g. `ec2:subnet`.
    fn name(&self) -> &'static str;
    /// Fields that cannot change in place: a difference there is a replacement.
    fn replace_on(&self) -> &'static [&'static str];
    /// Every resource of this kind owned by the stack (one batched read).
    fn observe<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, anyhow::Result<Vec<Observed>>>;
    /// Creates the resource (tagged atomically where the API allows) and waits until usable.
    /// `fields` are resolved: no references left.
    fn create<'a>(&'a self, ctx: &'a Ctx, id: &'a str, fields: &'a Fields) -> BoxFuture<'a, anyhow::Result<String>>;
    /// Converges the changed fields in place.
    fn update<'a>(
        &'a self,
        ctx: &'a Ctx,
        live: &'a Observed,
        fields: &'a Fields,
        changes: &'a [FieldChange],
    ) -> BoxFuture<'a, anyhow::Result<()>>;
    /// Deletes the resource and waits until it is gone (or going, where AWS allows reuse).
    fn delete<'a>(&'a self, ctx: &'a Ctx, live: &'a Observed) -> BoxFuture<'a, anyhow::Result<()>>;
    /// The IAM actions the verbs above call (for `reconciler policy`).
    fn iam_actions(&self) -> IamActions;
}

/// IAM actions of one kind, by how they can be constrained to what the stack owns.
#[derive(Debug, Clone, Copy, Default)]
pub struct IamActions {
    /// Called by `observe` (and so by `plan`).
    pub read: &'static [&'static str],
    /// Create calls that tag the new resource in the same request.
    pub create: &'static [&'static str],
    /// Calls that change or delete a resource the stack already owns (tagged).
    pub change: &'static [&'static str],
}

/// One field's difference: `before` is `None` when the field is missing live.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FieldChange {
    pub field: String,
    pub before: Option<Value>,
    pub after: Value,
}
