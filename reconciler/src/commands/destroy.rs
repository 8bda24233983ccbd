//! `destroy`: every resource the stack owns, dependents first, under the stack lock (the
//! stack's drift-correction passes are stopped first); data with `deletion_policy: retain`
//! stays, no longer managed.

use super::{confirm, release};
use crate::engine;
use crate::session::Session;
use crate::spec::DeletionPolicy;
use anyhow::{bail, Context as _};
use std::process::ExitCode;
use std::time::Duration;

/// `destroy FILE`: under the stack lock, released however the destroy ends.
pub async fn destroy(s: &Session, auto_approve: bool) -> anyhow::Result<ExitCode> {
    s.stop_on_signal();
    let mut lock = lock_for_destroy(s).await?;
    let result = destroy_locked(s, auto_approve, &mut lock).await;
    release(lock, result).await
}

/// The stack lock for `destroy`. A drift-correction pass holds it while it works: when the
/// lock is held, the stack's passes running now are stopped (SIGTERM: the pass ends its waits,
/// lets the call in flight finish and releases the lock; the next pass finds the stack
/// destroyed and changes nothing) and waited for, then the lock is waited for as usual.
async fn lock_for_destroy(s: &Session) -> anyhow::Result<Option<engine::lock::StackLock>> {
    let held = match s.lock_waiting(Duration::ZERO).await {
        Err(held) if held.downcast_ref::<engine::lock::Held>().is_some() => held,
        other => return other,
    };
    let stopped = crate::run::stop_running_passes(s)
        .await
        .with_context(|| format!("{held:#}; stopping the stack's drift-correction passes (which may hold it) failed"))?;
    if stopped.is_empty() {
        return s.lock().await;
    }
    eprintln!("  {held:#}\n  stopped the stack's drift-correction pass(es) running now ({}); waiting for the lock", stopped.join(", "));
    // A pass that exited released the lock; a lease left by one ECS had to kill expires by itself.
    s.lock_waiting(s.lock_wait.max(Duration::from_secs(30))).await
}

async fn destroy_locked(s: &Session, auto_approve: bool, lock: &mut Option<engine::lock::StackLock>) -> anyhow::Result<ExitCode> {
    if s.spec.deletion_policy == DeletionPolicy::Retain {
        bail!("the spec says `deletion_policy: retain`: destroy deletes nothing. Change it to `delete` first if you really mean to delete stack `{}`.", s.spec.name);
    }
    let (observed, _) = s.under_lock(lock, false, || s.observe_owned(), || lock_for_destroy(s)).await?;
    let (state, observed) = observed?;
    if observed.is_empty() {
        println!("Nothing to destroy: no resource is owned by stack {}.", s.spec.name);
        return Ok(ExitCode::SUCCESS);
    }
    // In the order they will go: dependents first, from the dependency graph.
    let ordered = engine::destroy_order(&observed, &state.resources);
    let kept = ordered.iter().filter(|o| engine::ownership::retained(&o.fields)).count();
    for o in ordered {
        let what = if engine::ownership::retained(&o.fields) { "retain (stays in AWS, no longer managed)" } else { "delete" };
        println!("- {} {} [{}]: {what}", o.kind, o.id, o.physical_id);
    }
    println!("\nDestroy stack `{}`: {} resources to delete, {kept} to retain.", s.spec.name, observed.len() - kept);
    confirm(auto_approve, "delete these resources")?;
    // Before the first delete: no unattended pass builds the stack again (see `run`). A pass
    // that starts meanwhile finds the lock held and exits.
    if let Some(l) = lock {
        l.mark_destroyed().await?;
    }
    let (deleted, retained) = engine::destroy(&s.ctx, &s.kinds, &observed, &state.resources).await?;
    println!("Destroy complete: {deleted} deleted, {retained} retained.");
    Ok(ExitCode::SUCCESS)
}
