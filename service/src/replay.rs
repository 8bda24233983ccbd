//! Replay protection and retries: a `webhook-id` is queued once while any request carrying it
//! could still pass the timestamp check, and the id's state answers a repeat of it.
//!
//! A repeat with a valid signature is the same signed content (the signature covers id,
//! timestamp and body), so it is either Benchling retrying (our 200 was lost, or API Gateway
//! timed out) or someone replaying a captured request. Both get what the first one got:
//! `Acknowledged` → 200 again, nothing queued twice; `InFlight` (the first is still being
//! queued) → 503 with Retry-After. Only a request whose signature or timestamp fails is 401.
//!
//! A signed request is acceptable for `window` seconds in all (verify.rs, TOLERANCE_SECS), so
//! an id must be remembered for at least that long after it was first seen; it is kept for
//! two to three windows. Ids are kept in generations of one tolerance each, and
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
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;

const GENERATIONS: usize = 3;
const SHARDS: usize = 64;

pub struct ReplayGuard {
    tolerance: i64,
    keys: RandomState,
    shards: Vec<Mutex<Inner>>,
}

/// What is known of a webhook-id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Never seen (now reserved: the caller queues it, then acknowledges or releases it).
    New,
    /// Reserved by a request still being queued.
    InFlight,
    /// Queued (or needing nothing) and answered 200.
    Acknowledged,
}

struct Inner {
    /// Newest first; the value is true once acknowledged.
    generations: VecDeque<HashMap<u64, bool>>,
    /// When the newest generation was started (unix seconds).
    started: Option<i64>,
}

impl ReplayGuard {
    /// `window_secs`: how long one signed request stays acceptable.
    pub fn new(window_secs: i64) -> Self {
        ReplayGuard {
            tolerance: window_secs.max(1),
            keys: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(Inner { generations: VecDeque::from([HashMap::new()]), started: None })).collect(),
        }
    }

    fn shard(&self, h: u64) -> std::sync::MutexGuard<'_, Inner> {
        // The low bits pick the bucket inside a shard's table; use the high bits here.
        self.shards[(h >> 58) as usize % SHARDS].lock().unwrap()
    }

    /// What is known of `id` at time `now`; a `New` id is reserved by this call.
    pub fn reserve(&self, id: &str, now: i64) -> Seen {
        let h = self.keys.hash_one(id);
        let mut inner = self.shard(h);
        let started = *inner.started.get_or_insert(now);
        let elapsed = (now - started).max(0);
        if elapsed >= self.tolerance {
            // One new generation per window that passed (at most enough to empty the set).
            let steps = ((elapsed / self.tolerance) as usize).min(GENERATIONS);
            for _ in 0..steps {
                inner.generations.push_front(HashMap::new());
                inner.generations.truncate(GENERATIONS);
            }
            inner.started = Some(now - elapsed % self.tolerance);
        }
        if let Some(&acknowledged) = inner.generations.iter().find_map(|g| g.get(&h)) {
            return if acknowledged { Seen::Acknowledged } else { Seen::InFlight };
        }
        inner.generations[0].insert(h, false);
        Seen::New
    }

    /// Marks a reserved id answered 200: a repeat of it is answered 200 too.
    pub fn acknowledge(&self, id: &str) {
        let h = self.keys.hash_one(id);
        for g in self.shard(h).generations.iter_mut() {
            if let Some(v) = g.get_mut(&h) {
                *v = true;
            }
        }
    }

    /// Forgets a reservation still in flight (its request ended without an acknowledgement);
    /// an acknowledged id stays.
    pub fn release_in_flight(&self, id: &str) {
        let h = self.keys.hash_one(id);
        for g in self.shard(h).generations.iter_mut() {
            if g.get(&h) == Some(&false) {
                g.remove(&h);
            }
        }
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
        self.shards.iter().map(|s| s.lock().unwrap().generations.iter().map(HashMap::len).sum::<usize>()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_sees_in_flight_then_acknowledged_and_release_allows_a_retry() {
        let g = ReplayGuard::new(300);
        assert_eq!(g.reserve("a", 1000), Seen::New);
        assert_eq!(g.reserve("a", 1001), Seen::InFlight);
        g.acknowledge("a");
        assert_eq!(g.reserve("a", 1002), Seen::Acknowledged);
        assert_eq!(g.reserve("b", 1001), Seen::New);
        g.release("b");
        assert_eq!(g.reserve("b", 1002), Seen::New);
        assert_eq!(g.reserve("b", 1003), Seen::InFlight);
        g.release_in_flight("a");
        assert_eq!(g.reserve("a", 1004), Seen::Acknowledged, "an acknowledged id is not forgotten");
        g.release_in_flight("b");
        assert_eq!(g.reserve("b", 1005), Seen::New);
    }

    #[test]
    fn ids_are_remembered_for_at_least_twice_the_window_then_forgotten() {
        let g = ReplayGuard::new(300);
        assert_eq!(g.reserve("a", 1000), Seen::New);
        for now in [1299, 1300, 1500, 1599] {
            assert_eq!(g.reserve("a", now), Seen::InFlight, "forgotten too early at {now}");
        }
        assert_eq!(g.reserve("filler", 1900), Seen::New);
        assert_eq!(g.reserve("a", 1901), Seen::New, "remembered for ever");
        // Memory is bounded: old generations are dropped whole.
        for i in 0..1000 {
            g.reserve(&format!("x{i}"), 2000);
        }
        // Each shard drops its old generations when it is next used.
        for i in 0..1000 {
            g.reserve(&format!("y{i}"), 3000);
        }
        assert!(g.len() <= 1000 + SHARDS, "{} ids still remembered", g.len());
        assert_eq!(g.reserve("x1", 3001), Seen::New, "an id from long ago is forgotten");
    }
}
