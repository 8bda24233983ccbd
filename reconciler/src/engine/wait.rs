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
    until_reporting(ctx, what, || {
        let polled = check();
        async move { Ok(polled.await?.map_or(Check::Waiting(String::new()), Check::Done)) }
    })
    .await
}

/// One look at what is being waited for.
pub enum Check<T> {
    Done(T),
    /// Not yet, and how far it is (a deployment's running tasks); empty when nothing is known.
    Waiting(String),
}

/// [`until`], printing how far it is each time that changes; a timeout names the last.
pub async fn until_reporting<T, F, Fut>(ctx: &Ctx, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Check<T>>>,
{
    let s = &ctx.settings;
    let started = Instant::now();
    let mut last = String::new();
    loop {
        match check().await {
            Ok(Check::Done(v)) => return Ok(v),
            Ok(Check::Waiting(now)) => {
                if !now.is_empty() && now != last {
                    super::progress(&format!("  {what}: {now}"));
                    last = now;
                }
            }
            // Throttled, or not visible yet (eventual consistency): keep polling.
            Err(e) if super::retry::is_retryable(&e) => {}
            Err(e) => return Err(e),
        }
        if started.elapsed() >= s.wait_timeout {
            let seen = if last.is_empty() { String::new() } else { format!(" (last seen: {last})") };
            anyhow::bail!(
                "timed out after {:?} waiting for {what}{seen}; AWS may still be working on it and the reconciler rolled nothing back: run the same command again to resume waiting (raise --wait-timeout if this is normal here)",
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
/// Inside an apply or destroy step, the step's slot is free for others meanwhile
/// ([`super::slots::idle`]). The stop's reason, if one was requested.
pub async fn sleep_unless_stopped(stop: &super::context::Stop, d: std::time::Duration) -> Option<String> {
    let waited = async {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = stop.wait() => {}
        }
        stop.requested()
    };
    // A stopped step gives up: it needs no slot to say so.
    super::slots::idle_then(waited, Option::is_none).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A wait that times out names what it waited for, where that was last, and how to
    /// resume (nothing is rolled back).
    #[tokio::test]
    async fn a_timeout_names_the_last_progress_and_how_to_resume() {
        let settings = crate::engine::Settings {
            poll_interval: Duration::from_millis(1),
            wait_timeout: Duration::from_millis(30),
            ..crate::engine::Settings::new("demo", Default::default())
        };
        let ctx = Ctx::from_env("us-east-1", settings).await;
        let mut polls = 0;
        let e = until_reporting(&ctx, "test:deployment d [id-1] to become ready", || {
            polls += 1;
            let now = format!("look {polls}: rolling out");
            async move { Ok(Check::<()>::Waiting(now)) }
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("waiting for test:deployment d [id-1] to become ready"), "{e}");
        assert!(e.contains(&format!("(last seen: look {polls}: rolling out)")) && polls > 1, "{e}");
        assert!(e.contains("rolled nothing back: run the same command again to resume waiting"), "{e}");
    }

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
