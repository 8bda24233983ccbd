//! The stack lock: a lease held as one S3 object, written with conditional puts, so that two
//! reconcilers never change one stack at the same time.
//!
//! Acquire: create the object only if it does not exist (`If-None-Match: *`). If it exists
//! and its lease has expired (the holder crashed), take it over only if nobody else changed
//! it meanwhile (`If-Match: <etag>`). While held, the lease is renewed every third of its TTL.
//! Release deletes it, if it is still ours.

use super::retry::call_failed;
use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

impl super::Service for aws_sdk_s3::Client {
    /// Path-style addressing against an emulator (`AWS_ENDPOINT_URL` on localhost).
    fn connect(conf: &aws_config::SdkConfig, emulated: bool) -> Self {
        aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(conf).force_path_style(emulated).build())
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// 412 Precondition Failed (the condition did not hold), or 409 (a concurrent conditional write).
fn precondition_failed<E>(e: &aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::http::Response>) -> bool {
    use aws_smithy_runtime_api::client::result::SdkError;
    matches!(e, SdkError::ServiceError(ctx) if matches!(ctx.raw().status().as_u16(), 412 | 409))
}

pub struct StackLock {
    s3: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    holder: String,
    renew: tokio::task::JoinHandle<()>,
}

fn lease(stack: &str, holder: &str, ttl: Duration) -> Vec<u8> {
    let t = now();
    json!({"stack": stack, "holder": holder, "acquired_at": t, "expires_at": t + ttl.as_secs()}).to_string().into_bytes()
}

impl StackLock {
    pub async fn acquire(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, stack: &str, ttl: Duration) -> anyhow::Result<StackLock> {
        let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "unknown-host".into());
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let holder = format!("{host}/pid-{}/{nanos}", std::process::id());
        let where_ = format!("s3://{bucket}/{key}");
        let put = || s3.put_object().bucket(bucket).key(key).content_type("application/json");
        let etag = match put().if_none_match("*").body(lease(stack, &holder, ttl).into()).send().await {
            Ok(out) => out.e_tag().unwrap_or_default().to_string(),
            Err(e) if precondition_failed(&e) => {
                let cur = s3
                    .get_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(call_failed("GetObject"))
                    .with_context(|| format!("reading the lock {where_}"))?;
                let cur_etag = cur.e_tag().unwrap_or_default().to_string();
                let body = cur.body.collect().await.context("reading the lock")?.into_bytes();
                let held: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let expires = held["expires_at"].as_u64().unwrap_or(0);
                if expires > now() {
                    bail!(
                        "stack `{stack}` is locked by {} since {} (lease until {expires}, unix time): another reconciler is changing it. Wait for it; if that holder is gone, its lease expires by itself ({where_}).",
                        held["holder"].as_str().unwrap_or("an unknown holder"),
                        held["acquired_at"].as_u64().unwrap_or(0),
                    );
                }
                eprintln!("  taking over an expired lock from {} ({where_})", held["holder"].as_str().unwrap_or("an unknown holder"));
                match put().if_match(&cur_etag).body(lease(stack, &holder, ttl).into()).send().await {
                    Ok(out) => out.e_tag().unwrap_or_default().to_string(),
                    Err(e) if precondition_failed(&e) => bail!("another reconciler took the expired lock {where_} first; try again later"),
                    Err(e) => return Err(call_failed("PutObject")(e)).with_context(|| format!("taking over the lock {where_}")),
                }
            }
            Err(e) => {
                return Err(call_failed("PutObject")(e))
                    .with_context(|| format!("acquiring the lock {where_} (the bucket must exist and allow s3:PutObject)"))
            }
        };
        let etag = Arc::new(Mutex::new(etag));
        let renew = {
            let (s3, bucket, key, stack, holder, etag) =
                (s3.clone(), bucket.to_string(), key.to_string(), stack.to_string(), holder.clone(), etag.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    let current = etag.lock().unwrap().clone();
                    match s3.put_object().bucket(&bucket).key(&key).if_match(current).body(lease(&stack, &holder, ttl).into()).send().await
                    {
                        Ok(out) => *etag.lock().unwrap() = out.e_tag().unwrap_or_default().to_string(),
                        Err(e) => eprintln!(
                            "  warning: renewing the lock s3://{bucket}/{key} failed: {}",
                            aws_smithy_types::error::display::DisplayErrorContext(&e)
                        ),
                    }
                }
            })
        };
        Ok(StackLock { s3: s3.clone(), bucket: bucket.into(), key: key.into(), holder, renew })
    }

    /// Deletes the lease if it is still ours (a lease taken over after expiry is left alone).
    pub async fn release(self) -> anyhow::Result<()> {
        self.renew.abort();
        let cur = match self.s3.get_object().bucket(&self.bucket).key(&self.key).send().await {
            Ok(c) => c,
            Err(_) => return Ok(()), // already gone
        };
        let body = cur.body.collect().await.context("reading the lock")?.into_bytes();
        let held: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if held["holder"].as_str() == Some(self.holder.as_str()) {
            self.s3.delete_object().bucket(&self.bucket).key(&self.key).send().await.map_err(call_failed("DeleteObject"))?;
        } else {
            eprintln!("  warning: the lock s3://{}/{} was taken over while held; not deleting it", self.bucket, self.key);
        }
        Ok(())
    }
}
