//! Replay protection: a `webhook-id` is accepted once while any request carrying it could
//! still pass the timestamp check.
//!
//! A signed request stays valid until `timestamp + tolerance`, and its timestamp may be up to
//! `tolerance` ahead of the clock, so an id must be remembered for at least twice the
//! tolerance after it was first seen. Ids are kept in generations of one tolerance each, and
//! the three newest are kept, so the set never needs scanning: rotation drops a whole
//! generation. Each entry is a keyed 64-bit hash of the id (random key per process, so ids
//! cannot be chosen to collide): about 10 to 20 bytes an id.
//!
//! The set is split into shards by hash, each with its own lock and generations. A shard's
//! table grows by doubling, so a resize briefly holds old and new tables: sharding keeps
//! that spike at 1/64 of the set (and the locks uncontended).
//!
//! An id is reserved while its request is being queued and released if queuing fails, so
//! Benchling's retry of a request we answered 503 is not mistaken for a replay.

use std::collections::hash_map::RandomState;
use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;

const GENERATIONS: usize = 3;
const SHARDS: usize = 64;

pub struct ReplayGuard {
    tolerance: i64,
    keys: RandomState,
    shards: Vec<Mutex<Inner>>,
}

struct Inner {
    /// Newest first.
    generations: VecDeque<HashSet<u64>>,
    /// When the newest generation was started (unix seconds).
    started: Option<i64>,
}

impl ReplayGuard {
    pub fn new(tolerance_secs: i64) -> Self {
        ReplayGuard {
            tolerance: tolerance_secs.max(1),
            keys: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(Inner { generations: VecDeque::from([HashSet::new()]), started: None })).collect(),
        }
    }

    fn shard(&self, h: u64) -> std::sync::MutexGuard<'_, Inner> {
        // The low bits pick the bucket inside a shard's table; use the high bits here.
        self.shards[(h >> 58) as usize % SHARDS].lock().unwrap()
    }

    /// Reserves `id` at time `now`; false if it was seen recently (a replay).
    pub fn reserve(&self, id: &str, now: i64) -> bool {
        let h = self.keys.hash_one(id);
        let mut inner = self.shard(h);
        let started = *inner.started.get_or_insert(now);
        let elapsed = (now - started).max(0);
        if elapsed >= self.tolerance {
            // One new generation per tolerance that passed (at most enough to empty the set).
            let steps = ((elapsed / self.tolerance) as usize).min(GENERATIONS);
            for _ in 0..steps {
                inner.generations.push_front(HashSet::new());
                inner.generations.truncate(GENERATIONS);
            }
            inner.started = Some(now - elapsed % self.tolerance);
        }
        if inner.generations.iter().any(|g| g.contains(&h)) {
            return false;
        }
        inner.generations[0].insert(h);
        true
    }

    /// Forgets a reservation (the request was not acknowledged).
    pub fn release(&self, id: &str) {
        let h = self.keys.hash_one(id);
        for g in self.shard(h).generations.iter_mut() {
            g.remove(&h);
        }
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().generations.iter().map(HashSet::len).sum::<usize>()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_use_is_refused_and_release_allows_a_retry() {
        let g = ReplayGuard::new(300);
        assert!(g.reserve("a", 1000));
        assert!(!g.reserve("a", 1001));
        assert!(g.reserve("b", 1001));
        g.release("b");
        assert!(g.reserve("b", 1002));
        assert!(!g.reserve("b", 1003));
    }

    #[test]
    fn ids_are_remembered_for_at_least_twice_the_tolerance_then_forgotten() {
        let g = ReplayGuard::new(300);
        assert!(g.reserve("a", 1000));
        // A request signed up to 300 s in the future stays valid until 1000 + 600.
        for now in [1299, 1300, 1500, 1599] {
            assert!(!g.reserve("a", now), "forgotten too early at {now}");
        }
        assert!(g.reserve("filler", 1900));
        assert!(g.reserve("a", 1901), "remembered for ever");
        // Memory is bounded: old generations are dropped whole.
        for i in 0..1000 {
            g.reserve(&format!("x{i}"), 2000);
        }
        // Each shard drops its old generations when it is next used.
        for i in 0..1000 {
            g.reserve(&format!("y{i}"), 3000);
        }
        assert!(g.len() <= 1000 + SHARDS, "{} ids still remembered", g.len());
        assert!(g.reserve("x1", 3001), "an id from long ago is forgotten");
    }
}
