//! The worker's settings: the queues (from the app's config), retries and timeouts, the
//! export limits and the upload part size, each with its default and its environment
//! variable, range-checked where S3 or SQS bound it.

use crate::export::ExportLimits;
use std::path::PathBuf;
use std::time::Duration;

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
    /// How long a received message stays hidden; the heartbeat renews it every third of that
    /// (`WORKER_VISIBILITY_SECS`, default 60, whole seconds from 1 to 43200).
    pub visibility: Duration,
    /// Messages received (and held) at once, 1 to 10 (`WORKER_RECEIVE_MAX`, default 1).
    pub receive_max: i32,
    /// Where exports are downloaded (`EXPORT_DIR`, default the system temp directory).
    pub export_dir: PathBuf,
    pub limits: ExportLimits,
    /// Files up to this size are one PutObject; larger ones a multipart upload in parts of this
    /// size (`EXPORT_PART_BYTES`, default 64 MiB, at least S3's 5 MiB).
    pub part_size: usize,
}

/// S3's smallest part (all but the last).
const MIN_PART: u64 = 5 << 20;

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            queue_url: String::new(),
            packager_url: String::new(),
            dead_letter_url: None,
            max_attempts: 5,
            retry_base: Duration::from_secs(10),
            receive_wait_secs: 20,
            export_poll: Duration::from_secs(2),
            export_timeout: Duration::from_secs(600),
            benchling_base_url: None,
            visibility: Duration::from_secs(60),
            receive_max: 1,
            export_dir: std::env::temp_dir(),
            limits: ExportLimits::default(),
            part_size: 64 << 20,
        }
    }
}

impl WorkerConfig {
    pub fn from_env(config: &crate::config::Config) -> Result<Self, String> {
        Self::from_lookup(config, |k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    pub fn from_lookup(config: &crate::config::Config, get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let num = |k: &str, d: u64| {
            get(k).map(|v| v.parse::<u64>().map_err(|_| format!("{k} must be a whole number"))).transpose().map(|v| v.unwrap_or(d))
        };
        let within = |k: &str, d: u64, lo: u64, hi: u64| {
            num(k, d).and_then(|v| if (lo..=hi).contains(&v) { Ok(v) } else { Err(format!("{k} must be between {lo} and {hi}, not {v}")) })
        };
        let d = WorkerConfig::default();
        let l = ExportLimits::default();
        Ok(WorkerConfig {
            queue_url: config.queue_url.clone().ok_or("the worker needs QUEUE_URL")?,
            packager_url: config.packager_sqs_url.clone().ok_or("the worker needs PACKAGER_SQS_URL")?,
            dead_letter_url: get("DEAD_LETTER_QUEUE_URL"),
            max_attempts: num("WORKER_MAX_ATTEMPTS", d.max_attempts.into())? as u32,
            retry_base: Duration::from_millis(num("WORKER_RETRY_BASE_MS", d.retry_base.as_millis() as u64)?),
            receive_wait_secs: num("WORKER_RECEIVE_WAIT_SECS", d.receive_wait_secs as u64)? as i32,
            export_poll: Duration::from_millis(num("EXPORT_POLL_MS", d.export_poll.as_millis() as u64)?),
            export_timeout: Duration::from_secs(num("EXPORT_TIMEOUT_SECS", d.export_timeout.as_secs())?),
            benchling_base_url: config.benchling_base_url.clone(),
            visibility: Duration::from_secs(within("WORKER_VISIBILITY_SECS", d.visibility.as_secs(), 1, 43_200)?),
            receive_max: within("WORKER_RECEIVE_MAX", d.receive_max as u64, 1, 10)? as i32,
            export_dir: get("EXPORT_DIR").map(PathBuf::from).unwrap_or(d.export_dir),
            limits: ExportLimits {
                max_download_bytes: num("EXPORT_MAX_BYTES", l.max_download_bytes)?,
                max_file_bytes: num("EXPORT_MAX_FILE_BYTES", l.max_file_bytes)?,
                max_total_bytes: num("EXPORT_MAX_UNZIPPED_BYTES", l.max_total_bytes)?,
                max_files: num("EXPORT_MAX_FILES", l.max_files as u64)? as usize,
            },
            part_size: within("EXPORT_PART_BYTES", d.part_size as u64, MIN_PART, 5 << 30)? as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_has_defaults_and_checks_ranges() {
        let config = crate::config::Config::from_lookup(|k| match k {
            "QUEUE_URL" => Some("q".into()),
            "PACKAGER_SQS_URL" => Some("p".into()),
            _ => None,
        })
        .unwrap();
        let with = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            WorkerConfig::from_lookup(&config, move |k| vars.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()))
        };
        let cfg = with(&[]).unwrap();
        assert_eq!((cfg.visibility, cfg.receive_max, cfg.part_size), (Duration::from_secs(60), 1, 64 << 20));
        assert_eq!((cfg.limits.clone(), cfg.export_dir), (ExportLimits::default(), std::env::temp_dir()));
        let cfg = with(&[
            ("WORKER_VISIBILITY_SECS", "5"),
            ("WORKER_RECEIVE_MAX", "10"),
            ("EXPORT_DIR", "/scratch"),
            ("EXPORT_MAX_BYTES", "100"),
            ("EXPORT_MAX_FILE_BYTES", "200"),
            ("EXPORT_MAX_UNZIPPED_BYTES", "300"),
            ("EXPORT_MAX_FILES", "7"),
            ("EXPORT_PART_BYTES", "5242880"),
        ])
        .unwrap();
        assert_eq!(
            (cfg.visibility, cfg.receive_max, cfg.export_dir, cfg.part_size),
            (Duration::from_secs(5), 10, "/scratch".into(), 5 << 20)
        );
        assert_eq!(cfg.limits, ExportLimits { max_download_bytes: 100, max_file_bytes: 200, max_total_bytes: 300, max_files: 7 });
        for (k, v) in
            [("WORKER_VISIBILITY_SECS", "0"), ("WORKER_RECEIVE_MAX", "11"), ("EXPORT_PART_BYTES", "1000"), ("EXPORT_MAX_BYTES", "5G")]
        {
            let e = with(&[(k, v)]).unwrap_err();
            assert!(e.contains(k), "{k}={v}: {e}");
        }
    }
}
