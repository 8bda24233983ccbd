//! Destroy: resources deleted as soon as everything that depends on them is gone (the
//! dependency graph, not waves); retained data kept.

use super::budget::RetryBudget;
use super::observe::{leaving, observe_again, wait_while_leaving};
use super::ownership;
use super::slots::{Next, Slots};
use super::{kind_of, progress};
use super::{Ctx, Desired, DynKind, Observed};
use anyhow::{anyhow, Context as _};
use futures::stream::FuturesUnordered;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// Deletes one resource; a "gone" answer is done. After a retryable failure it observes the
/// resource again: gone is done; still there, the next attempt starts from what it is now (a
/// gateway already detached, an association already removed by the failed attempt is not
/// detached or removed again).
pub(super) async fn delete_one(ctx: &Ctx, kind: &dyn DynKind, live: &Observed) -> anyhow::Result<()> {
    let mut budget = RetryBudget::new(&ctx.settings);
    let mut current = live.clone();
    loop {
        // Already on its way out (an earlier run's delete): not deleted again, waited for.
        if leaving(&current) {
            match wait_while_leaving(ctx, kind, &current).await? {
                None => return Ok(()),
                Some(now) => current = now,
            }
            continue;
        }
        match kind.delete(ctx, &current).await.with_context(|| format!("deleting {} {} [{}]", live.kind, live.id, live.physical_id)) {
            Ok(()) => return Ok(()),
            Err(e) if super::retry::is_gone(&e) => return Ok(()),
            Err(e) => {
                let Some(wait) = budget.next(&e) else { return Err(e) };
                if let Some(why) = super::wait::sleep_unless_stopped(&ctx.stop, wait).await {
                    return Err(e.context(format!("stopped ({why}) before trying again")));
                }
                match observe_again(ctx, kind, live).await? {
                    Some(now) => current = now,
                    None => return Ok(()),
                }
            }
        }
    }
}

/// Deletes (or, where the deletion policy says retain, orphans) in dependency order: each
/// resource as soon as everything that depends on it is gone (not wave by wave: a NAT gateway
/// that takes minutes to delete holds up only its subnet, not every other subnet), at most
/// `max_concurrency` at work at once (a step that waits gives its slot back: `slots.rs`). After a failure nothing new starts; what runs finishes.
pub(super) async fn delete_in_dependency_order(
    ctx: &Ctx,
    kinds: &[Box<dyn DynKind>],
    victims: &[&Observed],
    desired: &[Desired],
) -> anyhow::Result<(usize, usize)> {
    let deps = super::graph::dependencies(victims, desired);
    // What must be gone before each victim may go: the victims that depend on it.
    let dependents: Vec<BTreeSet<usize>> =
        (0..victims.len()).map(|i| (0..victims.len()).filter(|&j| deps[j].contains(&i)).collect()).collect();
    let (mut deleted, mut retained) = (0, 0);
    let mut timeline = super::timeline::Timeline::default();
    let mut step_of: BTreeMap<usize, usize> = BTreeMap::new();
    let mut pending: Vec<usize> = super::graph::waves_of(&deps).into_iter().flatten().collect();
    let mut gone: BTreeSet<usize> = BTreeSet::new();
    let mut errors = Vec::new();
    let mut hints = std::collections::BTreeSet::new();
    let mut stopped = None;
    let mut running = FuturesUnordered::new();
    let mut slots = Slots::new(ctx.settings.max_concurrency);
    loop {
        // A deletion is ready to start and no slot is free.
        let mut blocked = false;
        while errors.is_empty() && stopped.is_none() {
            if let Some(why) = ctx.stop.requested() {
                stopped = Some(why);
                break;
            }
            let ready = pending.iter().position(|i| dependents[*i].iter().all(|d| gone.contains(d)));
            // A dependency cycle (never expected): what remains goes when nothing else runs.
            let Some(at) = ready.or_else(|| (running.is_empty() && !pending.is_empty()).then_some(0)) else { break };
            let Some(slot) = slots.try_take() else {
                blocked = true;
                break;
            };
            let i = pending.remove(at);
            running.push(slots.run(slot, async move {
                let started = Instant::now();
                let o = victims[i];
                let result: anyhow::Result<bool> = async {
                    let kind = kind_of(kinds, o.kind)?;
                    if ownership::retained(&o.fields) {
                        progress(&format!("retaining {} {} [{}]: no longer managed, not deleted", o.kind, o.id, o.physical_id));
                        kind.orphan(ctx, o).await.with_context(|| format!("retaining {} {}", o.kind, o.id))?;
                        Ok(false)
                    } else {
                        progress(&format!("deleting {} {} [{}]", o.kind, o.id, o.physical_id));
                        delete_one(ctx, kind, o).await.map(|_| true)
                    }
                }
                .await;
                (i, started, result)
            }));
        }
        let (i, started, result) = match slots.next(&mut running, blocked && ctx.stop.requested().is_none()).await {
            Next::Ended(ended) => ended,
            Next::Slot => continue,
            Next::Done => break,
        };
        let after = dependents[i].iter().filter_map(|d| step_of.get(d).copied()).collect();
        step_of.insert(i, timeline.record(victims[i].kind, &victims[i].id, started, after));
        match result {
            Ok(true) => deleted += 1,
            Ok(false) => retained += 1,
            Err(e) => {
                errors.push(format!("{e:#}"));
                hints.extend(super::advice::advice(&e));
            }
        }
        gone.insert(i);
    }
    if let Some(line) = timeline.summary() {
        progress(&line);
    }
    if !errors.is_empty() {
        return Err(anyhow!(
            "{}\nRun the command again once the cause is fixed; what was deleted stays deleted.{}",
            errors.join("\n"),
            crate::log::hint_lines(hints.iter().map(String::as_str))
        ));
    }
    if let Some(why) = stopped {
        return Err(anyhow!("stopped before deleting everything: {why}. What was deleted stays deleted; run the command again to finish."));
    }
    Ok((deleted, retained))
}

/// The order destroy goes in: dependency waves, dependents first.
pub fn destroy_order<'a>(observed: &'a [Observed], desired: &[Desired]) -> Vec<&'a Observed> {
    let all: Vec<&Observed> = observed.iter().collect();
    super::graph::deletion_waves(&all, desired).into_iter().flatten().map(|i| all[i]).collect()
}

/// Deletes everything the stack owns (found by its tags), dependents first; retained
/// resources are orphaned. Returns (deleted, retained).
pub async fn destroy(ctx: &Ctx, kinds: &[Box<dyn DynKind>], observed: &[Observed], desired: &[Desired]) -> anyhow::Result<(usize, usize)> {
    let all: Vec<&Observed> = observed.iter().collect();
    delete_in_dependency_order(ctx, kinds, &all, desired).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::{live, FakeKind};
    use serde_json::json;

    /// A slow delete holds up only what it sits in: the other subnet goes as soon as its own
    /// dependent is gone, not after the whole "wave" of dependents.
    #[tokio::test]
    async fn a_slow_delete_holds_up_only_what_depends_on_it() {
        let ended = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kinds: Vec<Box<dyn DynKind>> =
            ["slow", "fast", "base"].into_iter().map(|name| Box::new(FakeKind(name, Some(ended.clone()))) as Box<dyn DynKind>).collect();
        let victims = [
            live("slow", "nat", "nat-1", json!({"subnet": "subnet-1"})),
            live("fast", "endpoint", "ep-2", json!({"subnet": "subnet-2"})),
            live("base", "subnet-a", "subnet-1", json!({})),
            live("base", "subnet-b", "subnet-2", json!({})),
        ];
        let ctx = Ctx::from_env("us-east-1", crate::engine::Settings::new("stack", BTreeMap::new())).await;
        let refs: Vec<&Observed> = victims.iter().collect();
        assert_eq!(delete_in_dependency_order(&ctx, &kinds, &refs, &[]).await.unwrap(), (4, 0));
        let ended = ended.lock().unwrap().clone();
        let at = |id: &str| ended.iter().find(|(x, _)| x == id).unwrap_or_else(|| panic!("{id} not deleted: {ended:?}")).1;
        assert!(at("subnet-b") < at("nat"), "subnet-b waited for the NAT gateway it does not depend on: {ended:?}");
        assert!(at("subnet-a") > at("nat"), "subnet-a went before the NAT gateway in it: {ended:?}");
    }
}
