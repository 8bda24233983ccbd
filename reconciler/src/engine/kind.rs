//! The two faces of a resource kind: [`Kind`], what a kind's file implements (its verbs as
//! plain `async fn`s), and [`DynKind`], what the engine holds (the same verbs with their futures
//! boxed, so that kinds of different types sit in one registry). The adapter between them is
//! written once, here: a kind never writes a boxed future.

use super::{Ctx, Desired, FieldChange, Fields, IamActions, Identity, Observed, Replacement};
use futures::future::BoxFuture;
use std::future::Future;

/// A resource kind: the same verbs for every kind, plain `async fn`s. Implementations do AWS
/// I/O and judge only their own resource (its status in observe, how a change settled in
/// [`Kind::settled`]); the decisions (what to create, update, replace, delete, wait for) are
/// the engine's.
pub trait Kind: Send + Sync {
    /// Stable kind name, e.g. `ec2:subnet`, `ecs:service`.
    fn name(&self) -> &'static str;
    /// The kind's fields as a serde struct: what desired state builds, observe reports and the
    /// verbs read.
    type Typed: serde::de::DeserializeOwned + serde::Serialize;
    /// Reads fields (as desired state built them, or as `create` receives them) into
    /// [`Kind::Typed`] and writes them back, or says which field does not fit. Desired state is
    /// checked against it by a unit test and by the spec fuzz target, so a field the struct
    /// does not carry, or carries differently, fails there instead of at apply.
    fn check_fields(&self, fields: &Fields) -> anyhow::Result<Fields> {
        super::fields::typed::<Self::Typed>(self.name(), fields).map(|t| super::fields::untyped(&t))
    }
    /// Fields that cannot change in place: a difference there is a replacement.
    fn replace_on(&self) -> &'static [&'static str];
    /// How a replacement is ordered.
    fn replacement(&self) -> Replacement {
        Replacement::DeleteBeforeCreate
    }
    /// How the replacement caused by these changes is ordered, where that depends on what
    /// changed (a NAT gateway can overlap with its successor only when they have different
    /// Elastic IPs). Default: [`Kind::replacement`].
    fn replacement_for(&self, _changes: &[FieldChange]) -> Replacement {
        self.replacement()
    }
    /// Fields the API may leave out of what it returns (an emulator drops some ECS fields):
    /// missing live, they are unknown rather than drift. Any other field missing live is drift.
    fn unreported(&self) -> &'static [&'static str] {
        &[]
    }
    /// Whether this kind's references keep what they point at from being deleted (an attached
    /// internet gateway keeps its VPC, an ECS service's tasks keep their subnets, groups and
    /// Cloud Map service). A route table's routes and associations do not: AWS deletes a NAT
    /// gateway a route names (the route goes blackhole) and a subnet a table is associated
    /// with. Used to refuse a delete-first replacement under something that stays.
    fn holds_what_it_uses(&self) -> bool {
        true
    }
    /// True when an update makes a new identity (a task definition revision): the plan shows
    /// dependents' references to it as known after apply, and apply repoints them.
    fn updates_yield_new_identity(&self) -> bool {
        false
    }
    /// Whether a change leaves the resource settling for a while (a deployment rolls out after
    /// the call returned): the engine then observes it again, waits while it is Pending (the
    /// kind's observe says so) and hands what it settled as to [`Kind::settled`]. `changed`:
    /// the fields an update changed; `None` for a create, or for a change of an earlier run
    /// that was still settling when this one found it. Asked only where such waits are on
    /// (`Settings::wait_for_rollouts`). Observe must report a created resource under the
    /// physical id create returned.
    fn settles_after_change(&self, _changed: Option<&[String]>) -> bool {
        false
    }
    /// After the engine's wait: whether the resource settled as what was sent (`fields`, as
    /// create or update received them), or an error saying what went wrong and what to do. The
    /// place for what must be recorded while it is still visible (a failed deployment).
    fn settled(&self, _ctx: &Ctx, _live: &Observed, _fields: &Fields) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Ok(()) }
    }
    /// Every resource of this kind the stack owns (batched reads). `wanted` are this kind's
    /// desired nodes (unresolved), for kinds found by a deterministic name or by a parent. A
    /// same-named resource the stack does not own is an error naming it, never adopted.
    fn observe(&self, ctx: &Ctx, wanted: &[&Desired]) -> impl Future<Output = anyhow::Result<Vec<Observed>>> + Send;
    /// Creates the resource (owned from the first request where the API allows). `fields`
    /// are resolved: no references or markers left.
    fn create(&self, ctx: &Ctx, id: &str, fields: &Fields) -> impl Future<Output = anyhow::Result<Identity>> + Send;
    /// Converges the changed fields in place; returns the new identity where the update made one.
    fn update(
        &self,
        ctx: &Ctx,
        live: &Observed,
        fields: &Fields,
        changes: &[FieldChange],
    ) -> impl Future<Output = anyhow::Result<Option<Identity>>> + Send;
    /// Deletes the resource and waits until it is gone (or going, where AWS allows reuse).
    fn delete(&self, ctx: &Ctx, live: &Observed) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Leaves the resource in place but no longer owned (`deletion_policy: retain`): removes
    /// the ownership tags and marks it `reconciler:retained-from`.
    fn orphan(&self, _ctx: &Ctx, live: &Observed) -> impl Future<Output = anyhow::Result<()>> + Send {
        async move { anyhow::bail!("{} {} cannot be retained: this kind has no retain support", live.kind, live.id) }
    }
    /// The IAM permissions the verbs above need (for `reconciler policy`).
    fn iam(&self, stack: &str) -> IamActions;
}

/// The engine's view of a kind ([`Kind`] with boxed futures): `Box<dyn DynKind>` in the
/// registry. Every [`Kind`] is one; nothing else implements it.
pub trait DynKind: Send + Sync {
    fn name(&self) -> &'static str;
    fn check_fields(&self, fields: &Fields) -> anyhow::Result<Fields>;
    fn replace_on(&self) -> &'static [&'static str];
    fn replacement(&self) -> Replacement;
    fn replacement_for(&self, changes: &[FieldChange]) -> Replacement;
    fn unreported(&self) -> &'static [&'static str];
    fn holds_what_it_uses(&self) -> bool;
    fn updates_yield_new_identity(&self) -> bool;
    fn settles_after_change(&self, changed: Option<&[String]>) -> bool;
    fn settled<'a>(&'a self, ctx: &'a Ctx, live: &'a Observed, fields: &'a Fields) -> BoxFuture<'a, anyhow::Result<()>>;
    fn observe<'a>(&'a self, ctx: &'a Ctx, wanted: &'a [&'a Desired]) -> BoxFuture<'a, anyhow::Result<Vec<Observed>>>;
    fn create<'a>(&'a self, ctx: &'a Ctx, id: &'a str, fields: &'a Fields) -> BoxFuture<'a, anyhow::Result<Identity>>;
    fn update<'a>(
        &'a self,
        ctx: &'a Ctx,
        live: &'a Observed,
        fields: &'a Fields,
        changes: &'a [FieldChange],
    ) -> BoxFuture<'a, anyhow::Result<Option<Identity>>>;
    fn delete<'a>(&'a self, ctx: &'a Ctx, live: &'a Observed) -> BoxFuture<'a, anyhow::Result<()>>;
    fn orphan<'a>(&'a self, ctx: &'a Ctx, live: &'a Observed) -> BoxFuture<'a, anyhow::Result<()>>;
    fn iam(&self, stack: &str) -> IamActions;
}

impl<K: Kind> DynKind for K {
    fn name(&self) -> &'static str {
        Kind::name(self)
    }
    fn check_fields(&self, fields: &Fields) -> anyhow::Result<Fields> {
        Kind::check_fields(self, fields)
    }
    fn replace_on(&self) -> &'static [&'static str] {
        Kind::replace_on(self)
    }
    fn replacement(&self) -> Replacement {
        Kind::replacement(self)
    }
    fn replacement_for(&self, changes: &[FieldChange]) -> Replacement {
        Kind::replacement_for(self, changes)
    }
    fn unreported(&self) -> &'static [&'static str] {
        Kind::unreported(self)
    }
    fn holds_what_it_uses(&self) -> bool {
        Kind::holds_what_it_uses(self)
    }
    fn updates_yield_new_identity(&self) -> bool {
        Kind::updates_yield_new_identity(self)
    }
    fn settles_after_change(&self, changed: Option<&[String]>) -> bool {
        Kind::settles_after_change(self, changed)
    }
    fn settled<'a>(&'a self, ctx: &'a Ctx, live: &'a Observed, fields: &'a Fields) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(Kind::settled(self, ctx, live, fields))
    }
    fn observe<'a>(&'a self, ctx: &'a Ctx, wanted: &'a [&'a Desired]) -> BoxFuture<'a, anyhow::Result<Vec<Observed>>> {
        Box::pin(Kind::observe(self, ctx, wanted))
    }
    fn create<'a>(&'a self, ctx: &'a Ctx, id: &'a str, fields: &'a Fields) -> BoxFuture<'a, anyhow::Result<Identity>> {
        Box::pin(Kind::create(self, ctx, id, fields))
    }
    fn update<'a>(
        &'a self,
        ctx: &'a Ctx,
        live: &'a Observed,
        fields: &'a Fields,
        changes: &'a [FieldChange],
    ) -> BoxFuture<'a, anyhow::Result<Option<Identity>>> {
        Box::pin(Kind::update(self, ctx, live, fields, changes))
    }
    fn delete<'a>(&'a self, ctx: &'a Ctx, live: &'a Observed) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(Kind::delete(self, ctx, live))
    }
    fn orphan<'a>(&'a self, ctx: &'a Ctx, live: &'a Observed) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(Kind::orphan(self, ctx, live))
    }
    fn iam(&self, stack: &str) -> IamActions {
        Kind::iam(self, stack)
    }
}
