//! The packaging worker: consumes the service's SQS FIFO queue and turns each entry event
//! into a data package (Benchling export → S3 → packager SQS message).
//!
//! **Holding messages.** A worker receives at most `receive_max` messages at a time
//! (`WORKER_RECEIVE_MAX`, default 1: take only what it is about to work on) with a visibility
//! timeout of `visibility` (`WORKER_VISIBILITY_SECS`, default 60 s), and while it works, a
//! heartbeat extends every message it still holds (processed or waiting its turn) by that
//! timeout again every third of it (ChangeMessageVisibility). A job may take many minutes
//! (export wait, download, upload); without the heartbeat its message would reappear for
//! another worker and be packaged twice, possibly out of order. A worker that dies stops
//! beating, and its messages come back within one timeout.
//!
//! **Order per entry across workers.** The stack runs several tasks, each with a worker. The
//! queue is FIFO with the entry id as message group, and SQS hands out no message of a group
//! while an earlier one of that group is in flight. So one entry's events are packaged in order
//! across workers exactly as long as a message never becomes visible while its job runs: that
//! is the heartbeat's job. When a job fails, its message is hidden for the backoff, which holds
//! back the rest of its entry; later messages of that entry in the same batch are released
//! untouched (they cannot be received before it). If a heartbeat fails (SQS unreachable for a
//! whole timeout) the message can be received again: delivery is at least once, and the
//! packager message carries the webhook id as deduplication id on a FIFO packager queue.
//!
//! **Retries.** A message is deleted only after its package is complete. A retryable failure
//! (Benchling or AWS unavailable) hides the message for a backoff (10 s, 20 s, 40 s ... up to
//! 15 min by default); after `max_attempts` receives it goes to the dead-letter queue. A
//! permanent failure (a hostile or oversized export, an unreadable job: see [`JobError`]) goes
//! there at once. The dead-letter message is `{"job", "error", "attempts", "permanent"}`. A
//! failed delete is logged and the batch goes on: the message comes back and is packaged again.
//!
//! **Exports on disk.** The export is streamed to a temporary file in `export_dir`
//! (`EXPORT_DIR`, default the system temp directory: the task's writable `/tmp` volume),
//! capped at `EXPORT_MAX_BYTES`; checked whole (see [`crate::export`]: names, file count,
//! decompressed sizes); then each file is streamed to S3 (`worker/upload.rs`), a single
//! PutObject up to `part_size` (`EXPORT_PART_BYTES`, 64 MiB) and a multipart upload in parts
//! of that size beyond. Memory per job stays around one part. The temporary file is deleted when the job ends, however it
//! ends.
//!
//! **Shutdown.** `run` stops receiving when `stop` turns true, finishes the job in hand (still
//! heartbeating) and releases the messages it has not started.

mod config;
mod upload;

use crate::benchling::Benchling;
use crate::config::BenchlingSecret;
use crate::export;
pub use crate::job::JobError;
use aws_sdk_sqs::types::MessageSystemAttributeName as Attr;
pub use config::WorkerConfig;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub struct Worker {
    pub cfg: WorkerConfig,
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
    pub secret: BenchlingSecret,
    pub benchling: Benchling,
}

/// What one package produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Packaged {
    pub entry_id: String,
    pub prefix: String,
    pub files: Vec<String>,
}

/// How long a failed job stays hidden before its next attempt: `base` doubled for each attempt
/// after the first, at most 15 minutes.
pub fn backoff(base: Duration, attempts: u32) -> Duration {
    base.saturating_mul(1 << attempts.saturating_sub(1).min(6)).min(Duration::from_secs(900))
}

/// A key component taken from Benchling (display id, entry id): one safe path segment.
fn key_component(s: &str) -> Option<&str> {
    (export::safe_name(s).as_deref() == Ok(s) && !s.contains('/')).then_some(s)
}

/// A downloaded export's path, removed when dropped: after success, failure or panic alike.
struct TempFile(PathBuf);

impl TempFile {
    fn new(dir: &Path) -> TempFile {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        TempFile(dir.join(format!("benchling-export-{}-{n}-{nanos}.zip", std::process::id())))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %self.0.display(), error = %e, "could not delete a downloaded export")
            }
            _ => {}
        }
    }
}

/// The receipt handles of the messages this worker holds. The heartbeat renews them all each
/// round, holding the lock; a message is taken out (under the lock) before it is deleted,
/// released or hidden for a backoff, so no renewal can land after and undo that.
#[derive(Default)]
struct Held(tokio::sync::Mutex<Vec<String>>);

/// What becomes of a held message.
enum Settle {
    Delete,
    /// Visible again after this long (zero: at once).
    HideFor(Duration),
}

impl Worker {
    /// Packages one job (the JSON the webhook handler queued).
    pub async fn package(&self, job: &Value) -> Result<Packaged, JobError> {
        let entry_id = job["entry_id"].as_str().ok_or(JobError::Permanent("the job lacks entry_id".into()))?;
        let event_type = job["event_type"].as_str().unwrap_or("event");
        let entry = self.benchling.entry(entry_id).await?;
        let display_id = entry["displayId"].as_str().and_then(key_component).or_else(|| key_component(entry_id)).ok_or_else(|| {
            JobError::Permanent(format!("neither the entry's displayId nor its id `{entry_id}` can be a segment of an S3 key"))
        })?;
        let task = self.benchling.start_export(entry_id).await?;
        let url = self.benchling.wait_for_export(&task, self.cfg.export_poll, self.cfg.export_timeout).await?;

        let download = TempFile::new(&self.cfg.export_dir);
        let bytes = self.benchling.download_to(&url, &download.0, self.cfg.limits.max_download_bytes).await?;
        let (path, limits) = (download.0.clone(), self.cfg.limits.clone());
        let files = tokio::task::spawn_blocking(move || export::check(&path, &limits))
            .await
            .map_err(|e| format!("checking the export crashed: {e}"))??;
        tracing::info!(entry_id, bytes, files = files.len(), unzipped = files.iter().map(|f| f.size).sum::<u64>(), "export checked");

        let bucket = &self.secret.user_bucket;
        let prefix = format!("{}/{display_id}", self.secret.pkg_prefix.trim_matches('/'));
        self.upload_export(&download.0, &files, bucket, &prefix).await?;
        drop(download);
        let names: Vec<String> = files.into_iter().map(|f| f.name).collect();
        let entry_json = serde_json::to_vec_pretty(&entry).expect("JSON");
        self.put(bucket, &format!("{prefix}/entry.json"), entry_json, "application/json").await?;
        self.put(bucket, &format!("{prefix}/README.md"), readme(&entry, entry_id, event_type, &names).into_bytes(), "text/markdown")
            .await?;

        let message = json!({
            "source_prefix": format!("s3://{bucket}/{prefix}/"),
            "registry": bucket,
            "package_name": prefix,
            "metadata_uri": "entry.json",
            "commit_message": format!("Benchling {event_type} {entry_id}"),
        });
        let mut send = self.sqs.send_message().queue_url(&self.cfg.packager_url).message_body(message.to_string());
        if self.cfg.packager_url.ends_with(".fifo") {
            let dedup = job["webhook_id"].as_str().unwrap_or(entry_id);
            send = send.message_group_id(entry_id).message_deduplication_id(dedup);
        }
        send.send().await.map_err(|e| format!("sending to the packager queue: {}", aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
        Ok(Packaged { entry_id: entry_id.to_string(), prefix, files: names })
    }

    async fn receive(&self) -> Result<Vec<aws_sdk_sqs::types::Message>, String> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.cfg.queue_url)
            .max_number_of_messages(self.cfg.receive_max.clamp(1, 10))
            .visibility_timeout(self.visibility_secs())
            .wait_time_seconds(self.cfg.receive_wait_secs)
            .message_system_attribute_names(Attr::ApproximateReceiveCount)
            .message_system_attribute_names(Attr::MessageGroupId)
            .send()
            .await
            .map_err(|e| format!("receiving from {}: {}", self.cfg.queue_url, aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
        Ok(out.messages().to_vec())
    }

    fn visibility_secs(&self) -> i32 {
        self.cfg.visibility.as_secs().clamp(1, 43_200) as i32
    }

    /// Renews the visibility of every held message every third of the timeout. Never returns:
    /// it runs beside the work and is dropped with it.
    async fn heartbeat(&self, held: &Held) {
        let every = (self.cfg.visibility / 3).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(every).await;
            let receipts = held.0.lock().await;
            for receipt in receipts.iter() {
                let renewed = self
                    .sqs
                    .change_message_visibility()
                    .queue_url(&self.cfg.queue_url)
                    .receipt_handle(receipt)
                    .visibility_timeout(self.visibility_secs())
                    .send()
                    .await;
                if let Err(e) = renewed {
                    tracing::error!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e),
                        "could not extend a message's visibility: if it lapses, another worker may package it again");
                }
            }
        }
    }

    /// Takes a message out of the held set, then deletes it or sets its visibility. Failures
    /// are logged, never fatal: the message comes back by itself.
    async fn settle(&self, held: &Held, receipt: &str, how: Settle) {
        held.0.lock().await.retain(|r| r != receipt);
        match how {
            Settle::Delete => {
                let deleted = self.sqs.delete_message().queue_url(&self.cfg.queue_url).receipt_handle(receipt).send().await;
                if let Err(e) = deleted {
                    tracing::error!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e),
                        "could not delete a finished message; it will be received and packaged again");
                }
            }
            Settle::HideFor(wait) => {
                let changed = self
                    .sqs
                    .change_message_visibility()
                    .queue_url(&self.cfg.queue_url)
                    .receipt_handle(receipt)
                    .visibility_timeout(wait.as_secs().min(43_200) as i32)
                    .send()
                    .await;
                if let Err(e) = changed {
                    tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), wait_secs = wait.as_secs(),
                        "could not set a message's visibility; it comes back when its timeout ends");
                }
            }
        }
    }

    /// Receives and processes one batch; returns how many messages were received.
    pub async fn run_once(&self) -> Result<usize, String> {
        let messages = self.receive().await?;
        self.process(&messages, None).await;
        Ok(messages.len())
    }

    /// Processes a batch in order while the heartbeat keeps every message not yet settled
    /// hidden. Once `stop` turns true, messages not started are released.
    async fn process(&self, messages: &[aws_sdk_sqs::types::Message], stop: Option<&watch::Receiver<bool>>) {
        let held = Held(tokio::sync::Mutex::new(messages.iter().filter_map(|m| m.receipt_handle().map(String::from)).collect()));
        tokio::select! {
            () = self.work_through(messages, &held, stop) => {}
            () = self.heartbeat(&held) => {}
        }
    }

    async fn work_through(&self, messages: &[aws_sdk_sqs::types::Message], held: &Held, stop: Option<&watch::Receiver<bool>>) {
        let mut failed_groups = BTreeSet::new();
        for m in messages {
            let receipt = m.receipt_handle().unwrap_or_default();
            let attrs = m.attributes();
            let group = attrs.and_then(|a| a.get(&Attr::MessageGroupId)).cloned().unwrap_or_default();
            if failed_groups.contains(&group) || stop.is_some_and(|s| *s.borrow()) {
                // Keep the entry's order (it comes after the failed one), or hand it back on shutdown.
                self.settle(held, receipt, Settle::HideFor(Duration::ZERO)).await;
                continue;
            }
            let attempts: u32 = attrs.and_then(|a| a.get(&Attr::ApproximateReceiveCount)).and_then(|c| c.parse().ok()).unwrap_or(1);
            let body = m.body().unwrap_or_default();
            let result = match serde_json::from_str::<Value>(body) {
                Ok(job) => self.package(&job).await,
                Err(e) => Err(JobError::Permanent(format!("unreadable job: {e}"))),
            };
            let retry_in = backoff(self.cfg.retry_base, attempts);
            match result {
                Ok(p) => {
                    tracing::info!(entry_id = p.entry_id, prefix = p.prefix, files = p.files.len(), "packaged");
                    self.settle(held, receipt, Settle::Delete).await;
                }
                Err(e) if e.is_permanent() || attempts >= self.cfg.max_attempts => {
                    tracing::error!(error = %e, attempts, group, permanent = e.is_permanent(), "giving up on the job: dead-lettering it");
                    match self.dead_letter(body, &group, m.message_id().unwrap_or_default(), &e, attempts).await {
                        Ok(()) => self.settle(held, receipt, Settle::Delete).await,
                        Err(why) => {
                            tracing::error!(error = why, group, "could not dead-letter the job; it stays queued and is tried again");
                            failed_groups.insert(group);
                            self.settle(held, receipt, Settle::HideFor(retry_in)).await;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempts, group, retry_in_ms = retry_in.as_millis() as u64, "job failed; will retry");
                    failed_groups.insert(group);
                    self.settle(held, receipt, Settle::HideFor(retry_in)).await;
                }
            }
        }
    }

    async fn dead_letter(&self, body: &str, group: &str, id: &str, error: &JobError, attempts: u32) -> Result<(), String> {
        let Some(dlq) = &self.cfg.dead_letter_url else {
            return Err(format!("DEAD_LETTER_QUEUE_URL is not set (last error: {error})"));
        };
        let wrapped = json!({
            "job": serde_json::from_str::<Value>(body).unwrap_or(Value::String(body.into())),
            "error": error.message(),
            "attempts": attempts,
            "permanent": error.is_permanent(),
        });
        let mut send = self.sqs.send_message().queue_url(dlq).message_body(wrapped.to_string());
        if dlq.ends_with(".fifo") {
            send = send.message_group_id(if group.is_empty() { "dead-letter" } else { group }).message_deduplication_id(id);
        }
        send.send().await.map(|_| ()).map_err(|e| format!("dead-lettering: {}", aws_sdk_sqs::error::DisplayErrorContext(&e)))
    }

    /// Runs until `stop` turns true. Only the (long-polling) receive is interrupted; a job in
    /// hand is finished, so SIGTERM never leaves half a package behind.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            let received = tokio::select! {
                r = self.receive() => r,
                _ = stop.changed() => break,
            };
            match received {
                Ok(messages) => self.process(&messages, Some(&stop)).await,
                Err(e) => {
                    tracing::error!(error = %e, "worker could not receive");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
        tracing::info!("worker stopped");
    }
}

/// The package's README.md.
pub fn readme(entry: &Value, entry_id: &str, event_type: &str, files: &[String]) -> String {
    let name = entry["name"].as_str().unwrap_or(entry_id);
    let mut s = format!("# {name}\n\nBenchling entry `{entry_id}`");
    if let Some(d) = entry["displayId"].as_str() {
        s.push_str(&format!(" ({d})"));
    }
    if let Some(url) = entry["webURL"].as_str() {
        s.push_str(&format!(", <{url}>"));
    }
    s.push_str(&format!(".\n\nPackaged on `{event_type}`. Files:\n\n"));
    for f in files {
        s.push_str(&format!("- `{f}`\n"));
    }
    s.push_str("- `entry.json`: the entry's metadata as Benchling reports it\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_lists_files() {
        let r =
            readme(&json!({"name": "Exp 1", "displayId": "EXP1", "webURL": "https://t/e"}), "etr_1", "v2.entry.created", &["a.csv".into()]);
        assert!(r.starts_with("# Exp 1") && r.contains("(EXP1)") && r.contains("- `a.csv`") && r.contains("entry.json"), "{r}");
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_fifteen_minutes() {
        let base = Duration::from_secs(10);
        let waits: Vec<u64> = (1..=9).map(|a| backoff(base, a).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 640, 640]);
        assert_eq!(backoff(Duration::from_secs(60), 8), Duration::from_secs(900), "capped");
        assert_eq!(backoff(base, 0), base, "a missing receive count counts as the first");
        assert_eq!(backoff(Duration::ZERO, 5), Duration::ZERO);
    }

    #[test]
    fn key_components_are_single_safe_segments() {
        assert_eq!(key_component("EXP-1"), Some("EXP-1"));
        assert_eq!(key_component("etr_1"), Some("etr_1"));
        for bad in ["a/b", "..", "../x", "/x", "a\\b", "", ".", "C:"] {
            assert_eq!(key_component(bad), None, "{bad}");
        }
    }

    #[test]
    fn job_errors_say_whether_to_retry() {
        assert!(!JobError::from("S3 down".to_string()).is_permanent());
        assert!(JobError::Permanent("bomb".into()).is_permanent());
        assert_eq!(JobError::Permanent("bomb".into()).to_string(), "bomb");
    }
}
