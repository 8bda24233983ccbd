//! The app's signing keys: fetched at start-up (so the first webhook is not slow), refreshed
//! every 6 hours, and refreshed early when no cached key verifies a signature (key rotation),
//! at most once a minute so that forged requests cannot turn into a fetch storm.
//!
//! A fetch is capped in size (`MAX_BYTES`) and time (`FETCH_TIMEOUT`, connection to last
//! byte); one malformed key is skipped and logged, not a failed refresh: the others still
//! verify (a refresh fails only when no usable key is left, and the cached keys stay).

use crate::verify::VerifyingKey;
use serde::Deserialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

pub const REFRESH_EVERY: Duration = Duration::from_secs(6 * 3600);
pub const MIN_REFETCH: Duration = Duration::from_secs(60);
/// A JWKS larger than this is refused (Benchling's holds a few keys: well under 4 KiB).
pub const MAX_BYTES: usize = 64 * 1024;
/// A fetch that takes longer is abandoned (the cached keys stay in use).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Parses a JWKS document, keeping the EC P-256 keys. A key that cannot be used (bad
/// coordinates, not on the curve) is skipped and named in the second list.
pub fn parse(doc: &[u8]) -> Result<(Vec<VerifyingKey>, Vec<String>), String> {
    let jwks: Jwks = serde_json::from_slice(doc).map_err(|e| format!("JWKS is not valid JSON: {e}"))?;
    let (mut keys, mut skipped) = (Vec::new(), Vec::new());
    for (i, k) in jwks.keys.iter().enumerate() {
        if k.kty != "EC" || k.crv.as_deref() != Some("P-256") {
            continue;
        }
        let kid = k.kid.clone().unwrap_or_else(|| format!("#{i}"));
        let (Some(x), Some(y)) = (&k.x, &k.y) else {
            skipped.push(format!("key {kid}: no x or y"));
            continue;
        };
        match VerifyingKey::from_jwk(&kid, x, y) {
            Ok(key) => keys.push(key),
            Err(e) => skipped.push(e),
        }
    }
    if keys.is_empty() {
        let why = if skipped.is_empty() { String::new() } else { format!(" ({})", skipped.join("; ")) };
        return Err(format!("JWKS holds no usable EC P-256 key{why}"));
    }
    Ok((keys, skipped))
}

/// Reads a response body, refusing more than `max` bytes (checked as it arrives, not trusting
/// Content-Length alone).
async fn read_capped(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let too_big = || format!("JWKS is larger than {max} bytes; refusing it");
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("reading JWKS: {e}"))? {
        if body.len() + chunk.len() > max {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

pub struct KeyCache {
    url: String,
    min_refetch: Duration,
    http: reqwest::Client,
    /// Shared, not copied, by every request that verifies with them.
    keys: RwLock<Arc<[VerifyingKey]>>,
    fetched: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    max_bytes: usize,
    timeout: Duration,
}

impl KeyCache {
    /// `min_refetch`: the least time between two fetches triggered by unverifiable requests.
    pub fn new(url: String, http: reqwest::Client, min_refetch: Duration) -> Self {
        KeyCache {
            url,
            min_refetch,
            http,
            keys: RwLock::new(Arc::from(Vec::new())),
            fetched: Mutex::new(None),
            last_error: Mutex::new(None),
            max_bytes: MAX_BYTES,
            timeout: FETCH_TIMEOUT,
        }
    }

    /// Other size and time caps (tests).
    pub fn with_limits(mut self, max_bytes: usize, timeout: Duration) -> Self {
        self.max_bytes = max_bytes;
        self.timeout = timeout;
        self
    }

    /// Keys given instead of fetched (tests, fuzzing). Counts as a fetch made now: a
    /// signature they do not verify triggers no fetch before `min_refetch`.
    pub async fn set_keys(&self, keys: Vec<VerifyingKey>) {
        *self.keys.write().await = Arc::from(keys);
        *self.fetched.lock().unwrap() = Some(Instant::now());
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn keys(&self) -> Arc<[VerifyingKey]> {
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
            let fetch = async {
                let resp = self.http.get(&self.url).send().await.map_err(|e| format!("fetching JWKS from {}: {e}", self.url))?;
                if !resp.status().is_success() {
                    return Err(format!("fetching JWKS from {}: HTTP {}", self.url, resp.status()));
                }
                read_capped(resp, self.max_bytes).await
            };
            let body = tokio::time::timeout(self.timeout, fetch)
                .await
                .map_err(|_| format!("fetching JWKS from {}: no complete answer within {:?}", self.url, self.timeout))??;
            parse(&body)
        }
        .await;
        match result {
            Ok((keys, skipped)) => {
                for why in &skipped {
                    tracing::warn!(url = self.url, reason = why, "skipping a JWKS key that cannot be used");
                }
                let n = keys.len();
                *self.keys.write().await = Arc::from(keys);
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
        let (keys, skipped) = parse(jwks.to_string().as_bytes()).unwrap();
        assert_eq!(keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(), ["k1", "k2"]);
        assert!(skipped.is_empty());
        assert!(parse(b"{\"keys\": []}").unwrap_err().contains("no usable EC P-256"));
        assert!(parse(b"nope").is_err());
    }

    #[test]
    fn one_malformed_key_is_skipped_not_fatal() {
        let doc = include_str!("../tests/fixtures/vectors.json");
        let v: serde_json::Value = serde_json::from_str(doc).unwrap();
        let mut jwks = v["jwks"].clone();
        let bad = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "broken", "x": "AAAA", "y": "%%"});
        jwks["keys"].as_array_mut().unwrap().insert(0, bad.clone());
        jwks["keys"].as_array_mut().unwrap().push(serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "no-y", "x": "AAAA"}));
        let (keys, skipped) = parse(jwks.to_string().as_bytes()).unwrap();
        assert_eq!(keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(), ["k1", "k2"]);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped[0].contains("broken") && skipped[1].contains("no-y"), "{skipped:?}");
        let only_bad = serde_json::json!({"keys": [bad]});
        let e = parse(only_bad.to_string().as_bytes()).unwrap_err();
        assert!(e.contains("no usable") && e.contains("broken"), "{e}");
    }
}
