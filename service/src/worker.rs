//! The packaging worker: consumes the service's SQS FIFO queue and turns each entry event
//! into a data package (Benchling export → S3 → packager SQS message).
//!
//! A message is deleted only after its package is complete. A failure makes the message
//! visible again after a backoff (10 s, 20 s, 40 s ... by default); after `max_attempts`
//! receives it goes to the dead-letter queue. Messages are processed one at a time, in
//! queue order; when one fails, later messages of the same entry in that batch are released
//! untouched, so an entry's events are never packaged out of order.

use crate::benchling::Benchling;
use crate::config::BenchlingSecret;
use aws_sdk_sqs::types::MessageSystemAttributeName as Attr;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub queue_url: String,
    pub packager_url: String,
    pub dead_letter_url: Option<String>,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub receive_wait_secs: i32,
    pub export_poll: Duration,
    pub export_timeout: Duration,
    pub benchling_base_url: Option<String>,
}

impl WorkerConfig {
    pub fn from_env(config: &crate::config::Config) -> Result<Self, String> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let num = |k: &str, d: u64| {
            get(k).map(|v| v.parse::<u64>().map_err(|_| format!("{k} must be a whole number"))).transpose().map(|v| v.unwrap_or(d))
        };
        Ok(WorkerConfig {
            queue_url: config.queue_url.clone().ok_or("the worker needs QUEUE_URL")?,
            packager_url: config.packager_sqs_url.clone().ok_or("the worker needs PACKAGER_SQS_URL")?,
            dead_letter_url: get("DEAD_LETTER_QUEUE_URL"),
            max_attempts: num("WORKER_MAX_ATTEMPTS", 5)? as u32,
            retry_base: Duration::from_millis(num("WORKER_RETRY_BASE_MS", 10_000)?),
            receive_wait_secs: num("WORKER_RECEIVE_WAIT_SECS", 20)? as i32,
            export_poll: Duration::from_millis(num("EXPORT_POLL_MS", 2_000)?),
            export_timeout: Duration::from_secs(num("EXPORT_TIMEOUT_SECS", 600)?),
            benchling_base_url: config.benchling_base_url.clone(),
        })
    }
}

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

fn safe_name(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split(['/', '\\']).filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.is_empty() || parts.contains(&"..") {
        return None;
    }
    Some(parts.join("/"))
}

/// The files of an export zip (directories skipped; names that would escape the prefix refused).
pub fn unzip(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(data)).map_err(|e| format!("export is not a zip file: {e}"))?;
    let mut files = Vec::new();
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).map_err(|e| format!("reading the export zip: {e}"))?;
        if f.is_dir() {
            continue;
        }
        let raw = f.name().map_err(|e| format!("export zip has an unreadable file name: {e}"))?.to_string();
        let name = safe_name(&raw).ok_or_else(|| format!("export zip has an unsafe file name `{raw}`"))?;
        let mut buf = Vec::with_capacity(f.size() as usize);
        f.read_to_end(&mut buf).map_err(|e| format!("reading {name} from the export zip: {e}"))?;
        files.push((name, buf));
    }
    Ok(files)
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

impl Worker {
    /// Packages one job (the JSON the webhook handler queued).
    pub async fn package(&self, job: &Value) -> Result<Packaged, String> {
        let entry_id = job["entry_id"].as_str().ok_or("job lacks entry_id")?;
        let event_type = job["event_type"].as_str().unwrap_or("event");
        let entry = self.benchling.entry(entry_id).await?;
        let display_id = entry["displayId"].as_str().filter(|d| safe_name(d).as_deref() == Some(*d)).unwrap_or(entry_id);
        let task = self.benchling.start_export(entry_id).await?;
        let url = self.benchling.wait_for_export(&task, self.cfg.export_poll, self.cfg.export_timeout).await?;
        let files = unzip(&self.benchling.download(&url).await?)?;

        let bucket = &self.secret.user_bucket;
        let prefix = format!("{}/{display_id}", self.secret.pkg_prefix.trim_matches('/'));
        let mut names = Vec::new();
        for (name, data) in files {
            self.put(bucket, &format!("{prefix}/{name}"), data, "application/octet-stream").await?;
            names.push(name);
        }
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

    async fn put(&self, bucket: &str, key: &str, data: Vec<u8>, content_type: &str) -> Result<(), String> {
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .body(data.into())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("uploading s3://{bucket}/{key}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)))
    }

    async fn receive(&self) -> Result<Vec<aws_sdk_sqs::types::Message>, String> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.cfg.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(self.cfg.receive_wait_secs)
            .message_system_attribute_names(Attr::ApproximateReceiveCount)
            .message_system_attribute_names(Attr::MessageGroupId)
            .send()
            .await
            .map_err(|e| format!("receiving from {}: {}", self.cfg.queue_url, aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
        Ok(out.messages().to_vec())
    }

    async fn release(&self, receipt: &str) {
        let _ =
            self.sqs.change_message_visibility().queue_url(&self.cfg.queue_url).receipt_handle(receipt).visibility_timeout(0).send().await;
    }

    /// Receives and processes one batch; returns how many messages were received.
    pub async fn run_once(&self) -> Result<usize, String> {
        let messages = self.receive().await?;
        self.process(&messages, None).await?;
        Ok(messages.len())
    }

    /// Processes a batch in order. Once `stop` turns true, messages not started are released.
    async fn process(&self, messages: &[aws_sdk_sqs::types::Message], stop: Option<&watch::Receiver<bool>>) -> Result<(), String> {
        let mut failed_groups = BTreeSet::new();
        for m in messages {
            let receipt = m.receipt_handle().unwrap_or_default();
            let attrs = m.attributes();
            let group = attrs.and_then(|a| a.get(&Attr::MessageGroupId)).cloned().unwrap_or_default();
            if failed_groups.contains(&group) || stop.is_some_and(|s| *s.borrow()) {
                // Keep the entry's order (it comes after the failed one), or hand it back on shutdown.
                self.release(receipt).await;
                continue;
            }
            let attempts: u32 = attrs.and_then(|a| a.get(&Attr::ApproximateReceiveCount)).and_then(|c| c.parse().ok()).unwrap_or(1);
            let job: Result<Value, String> = serde_json::from_str(m.body().unwrap_or_default()).map_err(|e| format!("unreadable job: {e}"));
            let result = match &job {
                Ok(job) => self.package(job).await,
                Err(e) => Err(e.clone()),
            };
            match result {
                Ok(p) => {
                    tracing::info!(entry_id = p.entry_id, prefix = p.prefix, files = p.files.len(), "packaged");
                    self.delete(receipt).await?;
                }
                Err(e) if attempts >= self.cfg.max_attempts || job.is_err() => {
                    tracing::error!(error = %e, attempts, group, "giving up on the job: dead-lettering it");
                    self.dead_letter(m.body().unwrap_or_default(), &group, m.message_id().unwrap_or_default(), &e).await?;
                    self.delete(receipt).await?;
                }
                Err(e) => {
                    let backoff = self.cfg.retry_base.saturating_mul(1 << attempts.saturating_sub(1).min(6)).min(Duration::from_secs(900));
                    tracing::warn!(error = %e, attempts, group, retry_in_ms = backoff.as_millis() as u64, "job failed; will retry");
                    failed_groups.insert(group);
                    let _ = self
                        .sqs
                        .change_message_visibility()
                        .queue_url(&self.cfg.queue_url)
                        .receipt_handle(receipt)
                        .visibility_timeout(backoff.as_secs() as i32)
                        .send()
                        .await;
                }
            }
        }
        Ok(())
    }

    async fn delete(&self, receipt: &str) -> Result<(), String> {
        self.sqs
            .delete_message()
            .queue_url(&self.cfg.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("deleting a processed message: {}", aws_sdk_sqs::error::DisplayErrorContext(&e)))
    }

    async fn dead_letter(&self, body: &str, group: &str, id: &str, error: &str) -> Result<(), String> {
        let Some(dlq) = &self.cfg.dead_letter_url else {
            return Err(format!(
                "job failed {} times and DEAD_LETTER_QUEUE_URL is not set; leaving it on the queue (last error: {error})",
                self.cfg.max_attempts
            ));
        };
        let wrapped = json!({"job": serde_json::from_str::<Value>(body).unwrap_or(Value::String(body.into())), "error": error, "attempts": self.cfg.max_attempts});
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
            let result = match received {
                Ok(messages) => self.process(&messages, Some(&stop)).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "worker batch failed");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
        tracing::info!("worker stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, body) in files {
            w.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
            w.write_all(body.as_bytes()).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn unzips_files_and_refuses_escaping_names() {
        let files = unzip(&zip_of(&[("a.csv", "1,2"), ("dir/b.txt", "x")])).unwrap();
        assert_eq!(files.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["a.csv", "dir/b.txt"]);
        assert_eq!(files[0].1, b"1,2");
        assert!(unzip(&zip_of(&[("../evil", "x")])).unwrap_err().contains("unsafe"));
        assert!(unzip(b"not a zip").is_err());
        assert_eq!(safe_name("/abs/./x"), Some("abs/x".into()));
    }

    #[test]
    fn readme_lists_files() {
        let r =
            readme(&json!({"name": "Exp 1", "displayId": "EXP1", "webURL": "https://t/e"}), "etr_1", "v2.entry.created", &["a.csv".into()]);
        assert!(r.starts_with("# Exp 1") && r.contains("(EXP1)") && r.contains("- `a.csv`") && r.contains("entry.json"), "{r}");
    }
}
