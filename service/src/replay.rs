//! Replay protection: a `webhook-id` is accepted once within the timestamp tolerance window.
//! An id is reserved while its request is being queued and released if queuing fails, so
//! Benchling's retry of a request we answered 503 is not mistaken for a replay.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct ReplayGuard {
    window: Duration,
    seen: Mutex<HashMap<String, Instant>>,
}

impl ReplayGuard {
    pub fn new(window: Duration) -> Self {
        ReplayGuard { window, seen: Mutex::new(HashMap::new()) }
    }

    /// Reserves `id`; false if it was seen within the window.
    pub fn reserve(&self, id: &str) -> bool {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap();
        if seen.len() > 10_000 {
            let window = self.window;
            seen.retain(|_, t| now.duration_since(*t) < window);
        }
        match seen.get(id) {
            Some(t) if now.duration_since(*t) < self.window => false,
            _ => {
                seen.insert(id.to_string(), now);
                true
            }
        }
    }

    /// Forgets a reservation (the request was not acknowledged).
    pub fn release(&self, id: &str) {
        self.seen.lock().unwrap().remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_use_within_window_is_refused_and_release_allows_retry() {
        let g = ReplayGuard::new(Duration::from_secs(300));
        assert!(g.reserve("a"));
        assert!(!g.reserve("a"));
        assert!(g.reserve("b"));
        g.release("b");
        assert!(g.reserve("b"));
        let short = ReplayGuard::new(Duration::from_millis(1));
        assert!(short.reserve("x"));
        std::thread::sleep(Duration::from_millis(5));
        assert!(short.reserve("x"));
    }
}
