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
        if let Some(why) = sleep_unless_stopped(&ctx.stop, s.poll_interval).await {
            anyhow::bail!("stopped ({why}) while waiting for {what}; AWS goes on with it, and the next run waits for it again");
        }
    }
}

/// Sleeps for `d`, or until a stop is requested (a signal, a lost lock), whichever is first:
/// a stopped run ends its waits and retries at once, so that it releases the stack lock.
/// The stop's reason, if one was requested.
pub async fn sleep_unless_stopped(stop: &super::context::Stop, d: std::time::Duration) -> Option<String> {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.wait() => {}
    }
    stop.requested()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_stop_ends_a_wait_at_once() {
        let stop = std::sync::Arc::new(super::super::context::Stop::default());
        let started = Instant::now();
        let waiting = tokio::spawn({
            let stop = stop.clone();
            async move { sleep_unless_stopped(&stop, Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.request("signal received");
        assert_eq!(waiting.await.unwrap().as_deref(), Some("signal received"));
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }
}
