//! Observe: every kind read concurrently into one snapshot, and the reads apply and
//! destroy repeat for one resource (again after a failure, while it is on its way out).

use super::ownership;
use super::progress;
use super::{Ctx, Desired, DynKind, Observed, Status};
use anyhow::Context as _;

/// Everything the stack owns, as observed at one moment.
pub type Snapshot = Vec<Observed>;

/// Reads every kind concurrently (each read retried while it fails retryably). `desired`
/// gives the kinds found by name or parent what to look for.
pub async fn observe(ctx: &Ctx, kinds: &[Box<dyn DynKind>], desired: &[Desired]) -> anyhow::Result<Snapshot> {
    ctx.join_shared_reads();
    let results = futures::future::join_all(kinds.iter().map(|k| async move {
        let wanted: Vec<&Desired> = desired.iter().filter(|d| d.kind == k.name()).collect();
        observe_kind(ctx, k.as_ref(), &wanted).await
    }))
    .await;
    ctx.share_reads(false);
    let mut all = Vec::new();
    for (k, r) in kinds.iter().zip(results) {
        all.extend(r.with_context(|| format!("reading the stack's {} resources", k.name()))?);
    }
    Ok(all)
}

pub(super) async fn observe_kind(ctx: &Ctx, kind: &dyn DynKind, wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
    let s = &ctx.settings;
    // Each call was retried by the SDK where that is safe; what is left (no answer at all, an
    // "observe again") is retried here, by its class's budget.
    let mut found = super::budget::with_retries(s, || kind.observe(ctx, wanted)).await?;
    for o in &mut found {
        let spec_tags = wanted.iter().find(|d| d.id == o.id).and_then(|d| d.fields.get("tags"));
        ownership::drop_ignored_tags(&mut o.fields, spec_tags, &s.ignore_tags);
    }
    Ok(found)
}

/// Like [`observe`], for destroy: a resource found by a wanted name that the stack does not
/// own (another owner's, or one an earlier destroy retained) is left out and reported, not
/// an error: destroy deletes only what is ours.
pub async fn observe_owned(ctx: &Ctx, kinds: &[Box<dyn DynKind>], desired: &[Desired]) -> anyhow::Result<(Snapshot, Vec<String>)> {
    ctx.join_shared_reads();
    // What this finds owned may be deleted: every resource answers for its own tags.
    ctx.trust_batches(false);
    let results = futures::future::join_all(kinds.iter().map(|k| async move {
        let mut wanted: Vec<&Desired> = desired.iter().filter(|d| d.kind == k.name()).collect();
        let mut skipped = Vec::new();
        loop {
            match observe_kind(ctx, k.as_ref(), &wanted).await {
                Ok(found) => return Ok((found, skipped)),
                Err(e) => {
                    let Some(n) = e.chain().find_map(|c| c.downcast_ref::<ownership::NotOwned>()) else { return Err(e) };
                    let before = wanted.len();
                    wanted.retain(|d| !d.fields.values().any(|v| v.as_str() == Some(n.name.as_str())));
                    if wanted.len() == before {
                        return Err(e);
                    }
                    skipped.push(n.message.clone());
                }
            }
        }
    }))
    .await;
    ctx.share_reads(false);
    ctx.trust_batches(true);
    let (mut all, mut skipped) = (Vec::new(), Vec::new());
    for (k, r) in kinds.iter().zip(results) {
        let (found, s) = r.with_context(|| format!("reading the stack's {} resources", k.name()))?;
        all.extend(found);
        skipped.extend(s);
    }
    Ok((all, skipped))
}

/// The resource with this logical id, as it is now, other than those with a `known` AWS id
/// (what a replacement replaces and duplicates keep the logical id until they are deleted).
/// One on its way out is not it.
pub(super) async fn observe_one(ctx: &Ctx, kind: &dyn DynKind, d: &Desired, known: &[&str]) -> anyhow::Result<Option<Observed>> {
    let found = observe_kind(ctx, kind, &[d]).await?;
    Ok(found.into_iter().find(|o| o.id == d.id && !leaving(o) && !known.contains(&o.physical_id.as_str())))
}

pub(super) fn leaving(o: &Observed) -> bool {
    matches!(o.status, Status::Leaving(_))
}

/// This very resource (by its AWS id), as it is now. It is looked for as what it is (kinds
/// found by name or by parent find nothing when asked for nothing in particular: that would
/// pass for "gone").
pub(super) async fn observe_again(ctx: &Ctx, kind: &dyn DynKind, live: &Observed) -> anyhow::Result<Option<Observed>> {
    let probe = Desired { kind: live.kind, id: live.id.clone(), fields: live.fields.clone(), after: vec![] };
    Ok(observe_kind(ctx, kind, &[&probe]).await?.into_iter().find(|o| o.physical_id == live.physical_id))
}

/// Waits while a resource is on its way out ([`Status::Leaving`]): `None` once it is gone,
/// or what it is now if it stopped leaving (then it is there to be dealt with).
pub(super) async fn wait_while_leaving(ctx: &Ctx, kind: &dyn DynKind, live: &Observed) -> anyhow::Result<Option<Observed>> {
    let what = format!("{} {} [{}] to finish being deleted", live.kind, live.id, live.physical_id);
    progress(&format!("waiting for {what}"));
    super::wait::until(ctx, &what, || async {
        Ok(match observe_again(ctx, kind, live).await? {
            None => Some(None),
            Some(now) if leaving(&now) => None,
            Some(now) => Some(Some(now)),
        })
    })
    .await
}
