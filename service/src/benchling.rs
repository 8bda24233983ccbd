//! The Benchling API calls the worker needs: OAuth client credentials (token cached until
//! shortly before expiry), entry, export task, and the export download (streamed to disk).

use crate::config::BenchlingSecret;
use crate::job::JobError;
use base64::Engine as _;
use serde_json::Value;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An export download may take this long in all (a few GiB over a slow link)...
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(2 * 3600);
/// ...but gives up after this long without a byte.
const DOWNLOAD_STALL: Duration = Duration::from_secs(120);

pub struct Benchling {
    http: reqwest::Client,
    base: String,
    client_id: String,
    client_secret: String,
    token: Mutex<Option<(String, Instant)>>,
}

impl Benchling {
    /// `base_url` overrides `https://{tenant}.benchling.com` (tests run a fake Benchling).
    pub fn new(http: reqwest::Client, secret: &BenchlingSecret, base_url: Option<&str>) -> Self {
        let base = base_url.map(str::to_string).unwrap_or_else(|| format!("https://{}.benchling.com", secret.tenant));
        Benchling {
            http,
            base: base.trim_end_matches('/').to_string(),
            client_id: secret.client_id.clone(),
            client_secret: secret.client_secret.clone(),
            token: Mutex::new(None),
        }
    }

    async fn token(&self) -> Result<String, String> {
        if let Some((t, until)) = self.token.lock().unwrap().clone() {
            if Instant::now() < until {
                return Ok(t);
            }
        }
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.client_id, self.client_secret));
        let resp = self
            .http
            .post(format!("{}/api/v2/token", self.base))
            .header("authorization", format!("Basic {basic}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .map_err(|e| format!("Benchling token request: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("Benchling token request: HTTP {} (check client_id/client_secret in the secret)", resp.status()));
        }
        let v: Value = resp.json().await.map_err(|e| format!("Benchling token response: {e}"))?;
        let token = v["access_token"].as_str().ok_or("Benchling token response lacks access_token")?.to_string();
        let ttl = v["expires_in"].as_u64().unwrap_or(900).saturating_sub(60).max(1);
        *self.token.lock().unwrap() = Some((token.clone(), Instant::now() + Duration::from_secs(ttl)));
        Ok(token)
    }

    async fn call(&self, req: reqwest::RequestBuilder, what: &str) -> Result<Value, String> {
        let token = self.token().await?;
        let resp = req.bearer_auth(token).send().await.map_err(|e| format!("{what}: {e}"))?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            *self.token.lock().unwrap() = None; // next attempt gets a fresh token
        }
        if !status.is_success() {
            return Err(format!("{what}: HTTP {status}"));
        }
        resp.json().await.map_err(|e| format!("{what}: bad JSON: {e}"))
    }

    /// The entry object (`GET /api/v2/entries/{id}` answers `{"entry": {...}}`).
    pub async fn entry(&self, entry_id: &str) -> Result<Value, String> {
        let v = self.call(self.http.get(format!("{}/api/v2/entries/{entry_id}", self.base)), "GET entry").await?;
        Ok(v.get("entry").cloned().unwrap_or(v))
    }

    /// Starts an export of the entry; returns the task id.
    pub async fn start_export(&self, entry_id: &str) -> Result<String, String> {
        let v = self
            .call(self.http.post(format!("{}/api/v2/exports", self.base)).json(&serde_json::json!({"id": entry_id})), "POST export")
            .await?;
        v["taskId"].as_str().map(str::to_string).ok_or_else(|| "export response lacks taskId".to_string())
    }

    /// Polls the task until it succeeds; returns its download URL.
    pub async fn wait_for_export(&self, task_id: &str, poll: Duration, timeout: Duration) -> Result<String, String> {
        let started = Instant::now();
        loop {
            let v = self.call(self.http.get(format!("{}/api/v2/tasks/{task_id}", self.base)), "GET task").await?;
            match v["status"].as_str() {
                Some("SUCCEEDED") => {
                    return v["response"]["downloadURL"]
                        .as_str()
                        .or(v["downloadURL"].as_str())
                        .map(str::to_string)
                        .ok_or_else(|| "export task succeeded without a downloadURL".to_string())
                }
                Some("FAILED") => return Err(format!("export task {task_id} failed: {}", v["message"].as_str().unwrap_or("no message"))),
                _ if started.elapsed() > timeout => return Err(format!("export task {task_id} still running after {timeout:?}")),
                _ => tokio::time::sleep(poll).await,
            }
        }
    }

    /// Streams the export (a pre-signed URL: no Benchling credentials are sent to it) into a
    /// new file at `path`, never more than `max_bytes` (`EXPORT_MAX_BYTES`): a larger export is
    /// refused, as announced or as soon as the bytes pass the cap. Returns the bytes written.
    pub async fn download_to(&self, url: &str, path: &std::path::Path, max_bytes: u64) -> Result<u64, JobError> {
        use tokio::io::AsyncWriteExt as _;
        let too_big = |size: String| {
            JobError::Permanent(format!(
                "the export is {size} bytes, over EXPORT_MAX_BYTES ({max_bytes}); raise EXPORT_MAX_BYTES if the export is genuine"
            ))
        };
        let mut resp =
            self.http.get(url).timeout(DOWNLOAD_TIMEOUT).send().await.map_err(|e| format!("downloading export: {}", e.without_url()))?;
        if !resp.status().is_success() {
            return Err(format!("downloading export: HTTP {}", resp.status()).into());
        }
        if let Some(size) = resp.content_length().filter(|n| *n > max_bytes) {
            return Err(too_big(size.to_string()));
        }
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .await
            .map_err(|e| format!("creating {}: {e} (EXPORT_DIR must be a writable directory)", path.display()))?;
        let mut written = 0u64;
        loop {
            let chunk = match tokio::time::timeout(DOWNLOAD_STALL, resp.chunk()).await {
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => return Err(format!("downloading export: {}", e.without_url()).into()),
                Err(_) => return Err(format!("downloading export: no data for {DOWNLOAD_STALL:?}").into()),
            };
            written += chunk.len() as u64;
            if written > max_bytes {
                return Err(too_big(format!("more than {max_bytes}")));
            }
            file.write_all(&chunk).await.map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        file.flush().await.map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(written)
    }
}
