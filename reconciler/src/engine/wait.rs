//! Waiting for asynchronous AWS resources, with the poll interval and timeout from
//! [`Settings`](super::Settings). A timeout says what was being waited for; a re-run resumes
//! because the resource is found by its tags.

use super::Ctx;
use std::future::Future;
use std::time::Instant;

/// Polls `check` until it returns `Some`, or fails after the wait timeout. Retryable errors
/// (throttling, not-yet-visible) count as "not yet".
pub async fn until<T, F, Fut>(ctx: &Ctx, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let s = &ctx.settings;
    let started = Instant::now();
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            // Throttled, or not visible yet (eventual consistency): keep polling.
            Err(e) if super::retry::is_retryable(&e) => {}
            Err(e) => return Err(e),
        }
        if started.elapsed() >= s.wait_timeout {
            anyhow::bail!(
                "timed out after {:?} waiting for {what}; AWS may still be working on it: run the same command again to resume (raise --wait-timeout if this is normal here)",
                s.wait_timeout
            );
        }
        tokio::time::sleep(s.poll_interval).await;
    }
}
