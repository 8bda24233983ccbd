//! The engine's retry budget: how often, and for how long, one engine-level operation
//! (observing a kind, converging or deleting one resource, reading the facts) is tried again
//! after an AWS failure, by the failure's class ([`super::retry`] classifies; this decides).

use super::retry::{aws_error, ErrorClass};
use std::future::Future;
use std::time::{Duration, Instant};

/// Exponential backoff with full jitter: a random wait in [0, base · 2^(attempt-1)], capped.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let cap = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(Duration::from_secs(20));
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    // xorshift of the clock's nanoseconds: enough to spread concurrent retries.
    let mut x = nanos as u64 ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    cap.mul_f64((x % 10_000) as f64 / 10_000.0)
}

/// The retry budget of one engine-level operation (observing a kind, converging or deleting
/// one resource), by error class:
/// - throttling and 5xx the SDK already retried per call: no more;
/// - other retryable failures (an ambiguous mutation, transport, "observe again"): up to
///   `max_attempts` tries, jittered backoff from `retry_base`;
/// - propagation: until `propagation_timeout` after the first such error;
/// - conflicts and dependency waits: until `conflict_timeout` after the first such error;
/// - gone and final: never.
///
/// Backoff for the deadline classes grows from `retry_base` and is capped at a tenth of the
/// deadline (and 20 s), so a short deadline is still polled several times.
#[derive(Debug)]
pub struct RetryBudget {
    max_attempts: u32,
    base: Duration,
    propagation: Duration,
    conflict: Duration,
    attempt: u32,
    first_wait: Option<(ErrorClass, Instant)>,
}

impl RetryBudget {
    pub fn new(s: &super::Settings) -> Self {
        RetryBudget {
            max_attempts: s.max_attempts.max(1),
            base: s.retry_base,
            propagation: s.propagation_timeout,
            conflict: s.conflict_timeout,
            attempt: 1,
            first_wait: None,
        }
    }

    /// Tries made so far (1 before any retry).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How long to wait before trying again after `e`, or `None` when the budget for its class
    /// is spent (or it is not worth trying again).
    pub fn next(&mut self, e: &anyhow::Error) -> Option<Duration> {
        let a = aws_error(e)?;
        let deadline = match a.class {
            ErrorClass::Gone | ErrorClass::Final => return None,
            ErrorClass::Throttled | ErrorClass::Retryable if a.retried_per_call => return None,
            ErrorClass::Throttled | ErrorClass::Retryable => {
                if self.attempt >= self.max_attempts {
                    return None;
                }
                self.attempt += 1;
                return Some(backoff(self.base, self.attempt - 1));
            }
            ErrorClass::Propagation => self.propagation,
            ErrorClass::Conflict => self.conflict,
        };
        let since = match self.first_wait {
            Some((class, since)) if class == a.class => since,
            _ => {
                let now = Instant::now();
                self.first_wait = Some((a.class, now));
                now
            }
        };
        let left = deadline.checked_sub(since.elapsed())?;
        if left.is_zero() {
            return None;
        }
        self.attempt += 1;
        let cap = (deadline / 10).clamp(Duration::from_millis(1), Duration::from_secs(20));
        Some(backoff(self.base, self.attempt - 1).min(cap).min(left))
    }
}

/// Runs an idempotent operation (a read) again while its budget allows (see [`RetryBudget`]).
pub async fn with_retries<T, F, Fut>(settings: &super::Settings, mut op: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut budget = RetryBudget::new(settings);
    loop {
        match op().await {
            Err(e) => match budget.next(&e) {
                Some(wait) => super::slots::idle(tokio::time::sleep(wait)).await,
                None => return Err(e),
            },
            ok => return ok,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::retry::tests::{err, err_of};

    fn settings(attempts: u32, propagation_ms: u64, conflict_ms: u64) -> crate::engine::Settings {
        let mut s = crate::engine::Settings::new("s", Default::default());
        s.max_attempts = attempts;
        s.retry_base = Duration::from_millis(1);
        s.propagation_timeout = Duration::from_millis(propagation_ms);
        s.conflict_timeout = Duration::from_millis(conflict_ms);
        s
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        let base = Duration::from_millis(100);
        for attempt in 1..40 {
            assert!(backoff(base, attempt) <= Duration::from_secs(20));
        }
        let most = |attempt| (0..300).map(|_| backoff(base, attempt)).max().unwrap();
        assert!(most(1) <= base);
        // Attempt 6 may wait up to 32 × base: over 300 draws some exceed what attempt 1 allows.
        assert!(most(6) > base * 2, "backoff does not grow: {:?}", most(6));
        assert!(most(12) > Duration::from_secs(10), "the cap is reached: {:?}", most(12));
    }

    /// What a person reads: the call, AWS's code and message, on one line; no SDK structures.
    #[test]
    fn budget_by_class() {
        // Transient, not retried per call: attempts.
        let mut b = RetryBudget::new(&settings(3, 0, 0));
        let e = err_of(ErrorClass::Retryable, "CreateVpc", false);
        assert!(b.next(&e).is_some() && b.next(&e).is_some());
        assert!(b.next(&e).is_none(), "3 tries in all");
        // Throttling and 5xx on reads were retried per call by the SDK: not multiplied.
        let mut b = RetryBudget::new(&settings(5, 0, 0));
        assert!(b.next(&err_of(ErrorClass::Throttled, "CreateVpc", true)).is_none());
        assert!(b.next(&err_of(ErrorClass::Retryable, "DescribeVpcs", true)).is_none());
        // Final and gone: never.
        assert!(b.next(&err_of(ErrorClass::Final, "CreateVpc", false)).is_none());
        assert!(b.next(&err_of(ErrorClass::Gone, "DeleteVpc", false)).is_none());
        assert!(b.next(&anyhow::anyhow!("not an AWS error")).is_none());
    }

    #[test]
    fn propagation_and_conflicts_have_deadlines_not_attempts() {
        let mut b = RetryBudget::new(&settings(2, 300, 0));
        let e = err_of(ErrorClass::Propagation, "RegisterTaskDefinition", false);
        let started = Instant::now();
        let mut tries = 0;
        while let Some(w) = b.next(&e) {
            assert!(w <= Duration::from_millis(30), "waits are capped at a tenth of the deadline: {w:?}");
            std::thread::sleep(w.max(Duration::from_millis(1)));
            tries += 1;
        }
        assert!(tries > 2, "more tries than max_attempts while the deadline allows: {tries}");
        assert!(started.elapsed() >= Duration::from_millis(290), "{:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(2));
        // Conflicts have their own deadline: zero here, so no retry.
        let mut b = RetryBudget::new(&settings(5, 300, 0));
        assert!(b.next(&err_of(ErrorClass::Conflict, "DeleteVpcLink", false)).is_none());
        let mut b = RetryBudget::new(&settings(5, 0, 60_000));
        assert!(b.next(&err_of(ErrorClass::Conflict, "DeleteVpcLink", false)).is_some());
    }

    #[tokio::test]
    async fn reads_are_retried_only_while_retryable() {
        let s = settings(4, 0, 0);
        let mut calls = 0;
        let r: anyhow::Result<u32> = with_retries(&s, || {
            calls += 1;
            let c = calls;
            async move {
                if c < 3 {
                    Err(err(true))
                } else {
                    Ok(c)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
        let mut calls = 0;
        let r: anyhow::Result<u32> = with_retries(&s, || {
            calls += 1;
            async { Err(err(false)) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1, "validation errors are not retried");
        let mut calls = 0;
        let r: anyhow::Result<u32> = with_retries(&settings(3, 0, 0), || {
            calls += 1;
            async { Err(err(true)) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 3, "bounded");
    }
}
