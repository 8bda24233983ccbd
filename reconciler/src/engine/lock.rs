//! The stack lock: a lease held as one S3 object, written with conditional puts, so that two
//! reconcilers never change one stack at the same time.
//!
//! Acquire: create the object only if it does not exist (`If-None-Match: *`). If it exists
//! and its lease has expired (the holder crashed), take it over only if nobody else changed
//! it meanwhile (`If-Match: <etag>`). A live lease held by someone else fails at once, or is
//! waited for up to `--lock-wait`. While held, the lease is renewed every third of its TTL
//! (`If-Match` on our last ETag); a failed renewal means the lease may be someone else's now:
//! the holder requests a stop (no new mutation starts) and the command fails saying so.
//! Release deletes the object only if it is still exactly what we wrote (`If-Match`).
//!
//! A store whose conditional create is not atomic (the emulator lets two racing creates both
//! succeed) is caught by reading the lease back a moment after it was written: the last
//! writer is the holder. That read-back runs while the command reads what it plans from
//! ([`StackLock::confirmed`], awaited before its first change), not before: reading under a
//! lease that turns out lost changes nothing.

use super::retry::call_failed;
use anyhow::Context as _;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

impl super::Service for aws_sdk_s3::Client {
    /// Path-style addressing where an endpoint is configured (`AWS_ENDPOINT_URL`: an emulator
    /// on one host has no per-bucket DNS names).
    fn connect(conf: &aws_config::SdkConfig) -> Self {
        let emulated = conf.endpoint_url().is_some();
        crate::engine::calls::sdk_client!(aws_sdk_s3, conf, crate::engine::retry::no_extra, force_path_style(emulated))
    }
}

/// Runs an idempotent lock call (a plain put or delete of our own object), trying again after
/// a throttle, a 5xx or no answer: a few times, with backoff.
async fn idempotent<T, F, Fut>(mut call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if attempt < 5 && super::retry::is_retryable(&e) => {
                tokio::time::sleep(super::budget::backoff(Duration::from_millis(200), attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// What holding the lock needs: the lease object, and beside it the mark destroy leaves
/// ([`tombstone`]: the lease's key with a suffix), in one pattern so that the policy fits a
/// role inline.
pub fn iam_statement(bucket: &str, key: &str) -> serde_json::Value {
    serde_json::json!({
        "Sid": "HoldTheStackLock",
        "Effect": "Allow",
        "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
        "Resource": format!("arn:aws:s3:::{bucket}/{key}*"),
    })
}

/// The object beside the lease that says the stack was destroyed: `<lease key>.destroyed`.
pub fn tombstone(lease_key: &str) -> String {
    format!("{lease_key}.destroyed")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

use aws_smithy_runtime_api::client::result::SdkError as SdkErr;
type S3Err<E> = SdkErr<E, aws_smithy_runtime_api::http::Response>;

/// The HTTP status S3 answered with, when it answered.
fn status<E>(e: &S3Err<E>) -> Option<u16> {
    match e {
        SdkErr::ServiceError(ctx) => Some(ctx.raw().status().as_u16()),
        _ => None,
    }
}

/// 412 Precondition Failed (the condition did not hold), or 409 (a concurrent conditional write).
fn precondition_failed<E>(e: &S3Err<E>) -> bool {
    matches!(status(e), Some(412 | 409))
}

fn is_server_error<E>(e: &S3Err<E>) -> bool {
    status(e).is_some_and(|s| s >= 500)
}

pub struct StackLock {
    s3: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    /// Our last write's ETag: renewals and the release are conditional on it.
    etag: Arc<Mutex<String>>,
    /// The read-back, then (once the lease is confirmed ours) the renewals.
    renew: tokio::task::JoinHandle<()>,
    /// The read-back's verdict (is the lease ours?), until [`StackLock::confirmed`] takes it.
    check: tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<anyhow::Result<()>>>>,
    /// Set once the read-back showed our write.
    ours: std::sync::atomic::AtomicBool,
}

/// The lease object. `acquired_at` stays what it was when the lease was taken; renewals move
/// `renewed_at` and `expires_at`.
fn lease(stack: &str, holder: &str, acquired_at: u64, ttl: Duration) -> Vec<u8> {
    let t = now();
    json!({"stack": stack, "holder": holder, "acquired_at": acquired_at, "renewed_at": t, "expires_at": t + ttl.as_secs()})
        .to_string()
        .into_bytes()
}

/// Whether a failed acquisition may be worth waiting out (another live holder).
#[derive(Debug)]
pub struct Held(pub String);
impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Held {}

impl StackLock {
    /// Takes the lease, waiting up to `wait` for a live holder to finish. A lost renewal later
    /// requests `stop`.
    pub async fn acquire(
        s3: &aws_sdk_s3::Client,
        bucket: &str,
        key: &str,
        stack: &str,
        ttl: Duration,
        wait: Duration,
        stop: Arc<super::Stop>,
    ) -> anyhow::Result<StackLock> {
        let started = std::time::Instant::now();
        loop {
            match Self::try_acquire(s3, bucket, key, stack, ttl, stop.clone()).await {
                Err(e) if e.downcast_ref::<Held>().is_some() && started.elapsed() < wait => {
                    eprintln!("  {e:#}; waiting (up to --lock-wait {wait:?})");
                    tokio::time::sleep(Duration::from_secs(2).min(wait.saturating_sub(started.elapsed())).max(Duration::from_millis(100)))
                        .await;
                }
                other => return other,
            }
        }
    }

    async fn try_acquire(
        s3: &aws_sdk_s3::Client,
        bucket: &str,
        key: &str,
        stack: &str,
        ttl: Duration,
        stop: Arc<super::Stop>,
    ) -> anyhow::Result<StackLock> {
        let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "unknown-host".into());
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        // Per-process randomness too: in containers the pid is often 1 and hosts can share a
        // name; the read-back tells two takers apart by this string.
        let random = {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new().build_hasher().finish() & 0xffff_ffff
        };
        let holder = format!("{host}/pid-{}/{nanos}-{random:08x}", std::process::id());
        let where_ = format!("s3://{bucket}/{key}");
        let acquired_at = now();
        // Before the create is sent: the lease is valid from no later than this.
        let acquired = Instant::now();
        let put = || s3.put_object().bucket(bucket).key(key).content_type("application/json");
        let etag = match put().if_none_match("*").body(lease(stack, &holder, acquired_at, ttl).into()).send().await {
            Ok(out) => out.e_tag().unwrap_or_default().to_string(),
            Err(e) if precondition_failed(&e) || is_server_error(&e) => {
                // 412: someone holds it. A 5xx on a conditional create was once seen from the
                // emulator when two raced: either way, read what is there.
                let (cur_etag, held) = match current(s3, bucket, key).await {
                    Ok(cur) => cur,
                    // Released between the two calls: free now, so tried again (as a lock held
                    // for an instant, within --lock-wait).
                    Err(e) if crate::engine::retry::has_code(&e, "NoSuchKey") => {
                        return Err(anyhow::Error::new(Held(format!("the lock {where_} was released as it was read"))))
                    }
                    Err(e) => return Err(e).with_context(|| format!("reading the lock {where_}")),
                };
                let expires = held["expires_at"].as_u64().unwrap_or(0);
                if expires > now() {
                    return Err(anyhow::Error::new(Held(format!(
                        "stack `{stack}` is locked by {} since {} (lease until {expires}, unix time): another reconciler is changing it. Wait for it (--lock-wait), or, if that holder is gone, its lease expires by itself ({where_})",
                        held["holder"].as_str().unwrap_or("an unknown holder"),
                        held["acquired_at"].as_u64().unwrap_or(0),
                    ))));
                }
                eprintln!("  taking over an expired lock from {} ({where_})", held["holder"].as_str().unwrap_or("an unknown holder"));
                match put().if_match(cur_etag.unwrap_or_default()).body(lease(stack, &holder, acquired_at, ttl).into()).send().await {
                    Ok(out) => out.e_tag().unwrap_or_default().to_string(),
                    Err(e) if precondition_failed(&e) => {
                        return Err(anyhow::Error::new(Held(format!("another reconciler took the expired lock {where_} first"))))
                    }
                    Err(e) => return Err(call_failed("PutObject")(e)).with_context(|| format!("taking over the lock {where_}")),
                }
            }
            Err(e) => {
                return Err(call_failed("PutObject")(e)).with_context(|| {
                    format!(
                    "acquiring the lock {where_}: the bucket must exist (create it once: aws s3 mb s3://{bucket}) and allow s3:PutObject"
                )
                })
            }
        };
        // Renewal and release are conditional on this ETag: without one nothing is fenced.
        if etag.is_empty() {
            anyhow::bail!("S3 returned no ETag for the lock {where_}: the lease cannot be renewed or released conditionally");
        }
        // One task: the read-back after a moment (see the module's head), while the command
        // reads on; then, only for a lease confirmed ours, the renewals. A lease another taker
        // won is never renewed, so it cannot report itself lost and stop the retry.
        let (verdict, check) = tokio::sync::oneshot::channel();
        let etag = Arc::new(Mutex::new(etag));
        let renew = {
            let (s3, bucket, key, stack, holder, etag) =
                (s3.clone(), bucket.to_string(), key.to_string(), stack.to_string(), holder.clone(), etag.clone());
            tokio::spawn(async move {
                let read = read_back(&s3, &bucket, &key, &stack, &holder, acquired + ttl - ttl / 6, &stop).await;
                let ours = read.is_ok();
                let _ = verdict.send(read);
                if !ours {
                    return;
                }
                let renewal = Renewal { s3: &s3, bucket: &bucket, key: &key, stack: &stack, holder: &holder, acquired_at, ttl };
                let mut renewed = acquired;
                loop {
                    tokio::time::sleep_until((renewed + ttl / 3).into()).await;
                    let current = etag.lock().unwrap().clone();
                    // Before the renewal is sent: the renewed lease runs from no later than this.
                    let sent = Instant::now();
                    match renewal.renew(current, renewed).await {
                        Ok(tag) => {
                            *etag.lock().unwrap() = tag;
                            renewed = sent;
                        }
                        Err(why) => {
                            // Changed under us (taken over), or not renewed while the lease was
                            // still ours: it may be someone else's now. Start nothing new.
                            stop.request(format!(
                                "the stack lock s3://{bucket}/{key} was lost ({why}); another reconciler may hold it now"
                            ));
                            return;
                        }
                    }
                }
            })
        };
        Ok(StackLock {
            s3: s3.clone(),
            bucket: bucket.into(),
            key: key.into(),
            etag,
            renew,
            check: tokio::sync::Mutex::new(Some(check)),
            ours: Default::default(),
        })
    }

    /// Whether the lease is ours: the read-back a moment after it was written shows our write.
    /// A [`Held`] error where another reconciler won a simultaneous acquisition. Every command
    /// awaits this before its first change (`Session::under_lock`); the stack-lock writes
    /// below check it themselves.
    pub async fn confirmed(&self) -> anyhow::Result<()> {
        let mut check = self.check.lock().await;
        if let Some(verdict) = check.take() {
            verdict.await.context("reading back the stack lock")??;
            self.ours.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        anyhow::ensure!(
            self.ours.load(std::sync::atomic::Ordering::SeqCst),
            "the stack lock s3://{}/{} was not confirmed as ours",
            self.bucket,
            self.key
        );
        Ok(())
    }

    /// Lets go of a lease that turned out not to be ours (see [`confirmed`](Self::confirmed)):
    /// stops renewing it and leaves the object to its holder.
    pub fn abandon(self) {
        self.renew.abort();
    }

    /// Records, beside the lease, that the stack is being destroyed (written before the first
    /// delete): an unattended `run` pass then changes nothing, so a drift-correction task that
    /// started just before the destroy (and waited for the lease) cannot build the stack again
    /// after it. A person's `apply` removes the mark.
    pub async fn mark_destroyed(&self) -> anyhow::Result<()> {
        self.confirmed().await?;
        let body = format!("{{\"destroyed_at\": {}}}", now());
        let key = tombstone(&self.key);
        let put = || {
            self.s3
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .content_type("application/json")
                .body(body.clone().into_bytes().into())
                .send()
        };
        idempotent(|| async { put().await.map_err(call_failed("PutObject")) })
            .await
            .with_context(|| format!("marking the stack destroyed (s3://{}/{key})", self.bucket))?;
        Ok(())
    }

    /// Removes the destroyed mark (a person's apply builds the stack again on purpose).
    pub async fn clear_destroyed(&self) -> anyhow::Result<()> {
        self.confirmed().await?;
        let key = tombstone(&self.key);
        idempotent(|| async { self.s3.delete_object().bucket(&self.bucket).key(&key).send().await.map_err(call_failed("DeleteObject")) })
            .await
            .with_context(|| format!("clearing the destroyed mark s3://{}/{key}", self.bucket))?;
        Ok(())
    }

    /// Whether the stack was destroyed (and not applied by a person since). A missing mark
    /// is 404, or 403 where the caller may not list the bucket (S3 says 403 for a missing
    /// object then; the printed policy grants reading this one key, so a 403 means missing).
    pub async fn destroyed(&self) -> anyhow::Result<bool> {
        let key = tombstone(&self.key);
        idempotent(|| async {
            match self.s3.head_object().bucket(&self.bucket).key(&key).send().await {
                Ok(_) => Ok(true),
                Err(e) if matches!(status(&e), Some(403 | 404)) => Ok(false),
                Err(e) => Err(call_failed("HeadObject")(e)),
            }
        })
        .await
        .with_context(|| format!("reading s3://{}/{key}", self.bucket))
    }

    /// Deletes the lease only if it is still exactly what we last wrote (`If-Match`): a lease
    /// taken over meanwhile is the next holder's and stays.
    pub async fn release(self) -> anyhow::Result<()> {
        self.renew.abort();
        let etag = self.etag.lock().unwrap().clone();
        // Conditional on our ETag, so trying again after a 5xx or a lost answer is safe: a
        // delete that did happen answers 404 (or 412 once someone else holds it) the next time.
        let released = idempotent(|| async {
            match self.s3.delete_object().bucket(&self.bucket).key(&self.key).if_match(&etag).send().await {
                Ok(_) => Ok(()),
                Err(e) if precondition_failed(&e) => {
                    eprintln!("  warning: the lock s3://{}/{} changed while held (taken over); not deleting it", self.bucket, self.key);
                    Ok(())
                }
                Err(e) if status(&e) == Some(404) => Ok(()),
                Err(e) => Err(call_failed("DeleteObject")(e)),
            }
        })
        .await;
        released.with_context(|| format!("releasing the lock s3://{}/{}", self.bucket, self.key))
    }
}

/// The lease object as it is now: its ETag, and its JSON (`Null` where it is not JSON: a
/// holder named nowhere, expired at 0).
async fn current(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> anyhow::Result<(Option<String>, Value)> {
    let cur = s3.get_object().bucket(bucket).key(key).send().await.map_err(call_failed("GetObject"))?;
    let etag = cur.e_tag().map(str::to_string);
    let body = cur.body.collect().await.context("the lease's body")?.into_bytes();
    Ok((etag, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// A moment after the lease was written: is it still ours (our `holder` in it)? A [`Held`]
/// error naming the other holder where it is not (or where the lease is gone: a winner that
/// already released). A throttle or a 5xx is tried again while the lease would still be
/// valid (`until`), as a renewal is: it says nothing about who holds it; a stop ends that.
async fn read_back(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    stack: &str,
    holder: &str,
    until: Instant,
    stop: &super::Stop,
) -> anyhow::Result<()> {
    let where_ = format!("s3://{bucket}/{key}");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let mut attempt = 1;
    let held = loop {
        let e = match current(s3, bucket, key).await {
            Ok((_, held)) => break held,
            Err(e) => e,
        };
        if super::retry::has_code(&e, "NoSuchKey") {
            return Err(anyhow::Error::new(Held(format!("the lock {where_} was taken by another reconciler and released as it was read"))));
        }
        let wait = super::budget::backoff(Duration::from_millis(200), attempt);
        if !super::retry::is_retryable(&e) || Instant::now() + wait >= until {
            return Err(e).with_context(|| format!("reading back the lock {where_}"));
        }
        if let Some(why) = super::wait::sleep_unless_stopped(stop, wait).await {
            return Err(e).with_context(|| format!("reading back the lock {where_}, stopped ({why})"));
        }
        attempt += 1;
    };
    if held["holder"].as_str() != Some(holder) {
        return Err(anyhow::Error::new(Held(format!(
            "stack `{stack}` is locked by {} (it won a simultaneous acquisition of {where_})",
            held["holder"].as_str().unwrap_or("an unknown holder")
        ))));
    }
    Ok(())
}

/// One lease's renewal: a conditional put on our last ETag, tried again while the lease we hold
/// is still valid (a throttle or a 5xx is not a lost lock), with a margin of a sixth of the TTL.
struct Renewal<'a> {
    s3: &'a aws_sdk_s3::Client,
    bucket: &'a str,
    key: &'a str,
    stack: &'a str,
    holder: &'a str,
    acquired_at: u64,
    ttl: Duration,
}

impl Renewal<'_> {
    /// The new ETag, or why the lease may not be ours any more.
    async fn renew(&self, etag: String, renewed: std::time::Instant) -> Result<String, String> {
        let valid_until = renewed + self.ttl - self.ttl / 6;
        let base = (self.ttl / 30).clamp(Duration::from_millis(10), Duration::from_secs(2));
        let mut attempt = 1;
        let mut ambiguous = false;
        loop {
            let body = lease(self.stack, self.holder, self.acquired_at, self.ttl);
            let sent = self.s3.put_object().bucket(self.bucket).key(self.key).if_match(&etag).body(body.into()).send().await;
            let e = match sent {
                Ok(out) => {
                    return out
                        .e_tag()
                        .map(str::to_string)
                        .ok_or_else(|| "S3 returned no ETag on renewal, so the lease cannot be fenced".to_string())
                }
                Err(e) => e,
            };
            if precondition_failed(&e) {
                // After an answer that got lost, our own renewal may be what changed it.
                if ambiguous {
                    if let Some(tag) = self.ours().await {
                        return Ok(tag);
                    }
                }
                return Err("it was changed by someone else".into());
            }
            ambiguous |= status(&e).is_none_or(|s| s >= 500);
            let wait = super::budget::backoff(base, attempt);
            if std::time::Instant::now() + wait >= valid_until {
                return Err(format!("renewal failed {attempt} time(s) while the lease was valid; last: {:#}", call_failed("PutObject")(e)));
            }
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// The lease's current ETag if the lease is still ours.
    async fn ours(&self) -> Option<String> {
        let (tag, held) = current(self.s3, self.bucket, self.key).await.ok()?;
        (held["holder"].as_str() == Some(self.holder)).then_some(tag?)
    }
}
