//! The app's signing keys: fetched at start-up (so the first webhook is not slow), refreshed
//! every 6 hours, and refreshed early when no cached key verifies a signature (key rotation),
//! at most once a minute so that forged requests cannot turn into a fetch storm.

use crate::verify::VerifyingKey;
use serde::Deserialize;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

pub const REFRESH_EVERY: Duration = Duration::from_secs(6 * 3600);
pub const MIN_REFETCH: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

/// Parses a JWKS document, keeping the EC P-256 keys.
pub fn parse(doc: &[u8]) -> Result<Vec<VerifyingKey>, String> {
    let jwks: Jwks = serde_json::from_slice(doc).map_err(|e| format!("JWKS is not valid JSON: {e}"))?;
    let mut keys = Vec::new();
    for (i, k) in jwks.keys.iter().enumerate() {
        if k.kty != "EC" || k.crv.as_deref() != Some("P-256") {
            continue;
        }
        let kid = k.kid.clone().unwrap_or_else(|| format!("#{i}"));
        let (Some(x), Some(y)) = (&k.x, &k.y) else { continue };
        keys.push(VerifyingKey::from_jwk(&kid, x, y)?);
    }
    if keys.is_empty() {
        return Err("JWKS holds no EC P-256 key".into());
    }
    Ok(keys)
}

pub struct KeyCache {
    url: String,
    min_refetch: Duration,
    http: reqwest::Client,
    keys: RwLock<Vec<VerifyingKey>>,
    fetched: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
}

impl KeyCache {
    /// `min_refetch`: the least time between two fetches triggered by unverifiable requests.
    pub fn new(url: String, http: reqwest::Client, min_refetch: Duration) -> Self {
        KeyCache { url, min_refetch, http, keys: RwLock::new(Vec::new()), fetched: Mutex::new(None), last_error: Mutex::new(None) }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn keys(&self) -> Vec<VerifyingKey> {
        self.keys.read().await.clone()
    }

    pub async fn is_loaded(&self) -> bool {
        !self.keys.read().await.is_empty()
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap().clone()
    }

    /// Fetches now. On failure the cached keys stay in use.
    pub async fn refresh(&self) -> Result<usize, String> {
        *self.fetched.lock().unwrap() = Some(Instant::now());
        let result = async {
            let resp = self
                .http
                .get(&self.url)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .map_err(|e| format!("fetching JWKS from {}: {e}", self.url))?;
            if !resp.status().is_success() {
                return Err(format!("fetching JWKS from {}: HTTP {}", self.url, resp.status()));
            }
            let body = resp.bytes().await.map_err(|e| format!("reading JWKS: {e}"))?;
            parse(&body)
        }
        .await;
        match result {
            Ok(keys) => {
                let n = keys.len();
                *self.keys.write().await = keys;
                *self.last_error.lock().unwrap() = None;
                Ok(n)
            }
            Err(e) => {
                *self.last_error.lock().unwrap() = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Refreshes unless a fetch happened within `min_refetch`; true if it fetched new keys.
    /// The check and the claim are one step, so concurrent forged requests cause one fetch.
    pub async fn refresh_if_stale(&self) -> bool {
        {
            let mut fetched = self.fetched.lock().unwrap();
            if fetched.is_some_and(|t| t.elapsed() < self.min_refetch) {
                return false;
            }
            *fetched = Some(Instant::now());
        }
        self.refresh().await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ec_keys_and_skips_others() {
        let doc = include_str!("../tests/fixtures/vectors.json");
        let v: serde_json::Value = serde_json::from_str(doc).unwrap();
        let mut jwks = v["jwks"].clone();
        jwks["keys"].as_array_mut().unwrap().push(serde_json::json!({"kty": "RSA", "n": "x", "e": "AQAB"}));
        let keys = parse(jwks.to_string().as_bytes()).unwrap();
        assert_eq!(keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(), ["k1", "k2"]);
        assert!(parse(b"{\"keys\": []}").unwrap_err().contains("no EC P-256"));
        assert!(parse(b"nope").is_err());
    }
}
