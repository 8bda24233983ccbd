//! HTTP surface: health, and the three Benchling webhook routes (also under a stage prefix,
//! since API Gateway forwards `/{stage}/...` for named stages). Client input never causes a
//! 5xx; 503 means "not acknowledged, retry" (degraded, or the queue refused).

use crate::config::{allowed, BenchlingSecret, Config};
use crate::jwks::KeyCache;
use crate::queue::Queue;
use crate::replay::ReplayGuard;
use crate::verify::{self, Rejection, SignedHeaders};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::RwLock;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Entry events that start packaging; other event types are acknowledged and ignored.
pub const PACKAGED_EVENTS: [&str; 3] = ["v2.entry.created", "v2.entry.updated.fields", "v2.entry.updated.reviewRecord"];

pub struct AppState {
    pub config: Config,
    pub secret: RwLock<Option<Arc<BenchlingSecret>>>,
    /// Why the service is degraded (no secret), if it is.
    pub degraded: Mutex<Option<String>>,
    pub keys: RwLock<Option<Arc<KeyCache>>>,
    pub replay: ReplayGuard,
    pub queue: Arc<dyn Queue>,
}

impl AppState {
    pub fn new(config: Config, queue: Arc<dyn Queue>) -> Arc<Self> {
        Arc::new(AppState {
            config,
            secret: RwLock::new(None),
            degraded: Mutex::new(Some("the Benchling secret is not loaded yet".into())),
            keys: RwLock::new(None),
            replay: ReplayGuard::new(verify::TOLERANCE_SECS),
            queue,
        })
    }

    /// Installs a loaded secret and builds the key cache for its app.
    pub async fn set_secret(&self, secret: BenchlingSecret, http: reqwest::Client) -> Arc<KeyCache> {
        if !secret.enable_webhook_verification {
            tracing::warn!(
                alert = "WEBHOOK VERIFICATION IS DISABLED",
                "enable_webhook_verification is false in the Benchling secret: any caller can submit webhooks. Switch it on outside local testing."
            );
        }
        let url = self
            .config
            .jwks_url
            .clone()
            .unwrap_or_else(|| format!("https://apps.benchling.com/api/v1/apps/{}/jwks", secret.app_definition_id));
        let cache = Arc::new(KeyCache::new(url, http, self.config.jwks_min_refetch));
        *self.keys.write().await = Some(cache.clone());
        *self.secret.write().await = Some(Arc::new(secret));
        *self.degraded.lock().unwrap() = None;
        cache
    }

    pub fn set_degraded(&self, reason: String) {
        *self.degraded.lock().unwrap() = Some(reason);
    }

    async fn readiness(&self) -> Result<(), String> {
        if let Some(why) = self.degraded.lock().unwrap().clone() {
            return Err(why);
        }
        let secret = self.secret.read().await.clone().ok_or("the Benchling secret is not loaded")?;
        if !secret.enable_webhook_verification {
            return Ok(());
        }
        let keys = self.keys.read().await.clone().ok_or("signing keys are not configured")?;
        if keys.is_loaded().await {
            Ok(())
        } else {
            Err(format!("signing keys not loaded yet{}", keys.last_error().map(|e| format!(": {e}")).unwrap_or_default()))
        }
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.body_limit;
    Router::new()
        .route("/health", get(health))
        .route("/health/ready", get(ready))
        .route("/health/live", get(|| async { Json(json!({"status": "alive"})) }))
        .route("/event", post(event))
        .route("/lifecycle", post(lifecycle))
        .route("/canvas", post(canvas))
        .route("/{stage}/event", post(event))
        .route("/{stage}/lifecycle", post(lifecycle))
        .route("/{stage}/canvas", post(canvas))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route: webhooks go to POST /event, /lifecycle or /canvas") })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

static REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Every log line of a request carries its id: the caller's `x-request-id` when it is a short
/// printable token (so it cannot forge log lines), else a generated one. Echoed back.
async fn request_id(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument as _;
    let given = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)))
        .map(str::to_string);
    let id = given.unwrap_or_else(|| format!("req-{:x}-{}", now_unix(), REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut resp = next.run(req).instrument(span).await;
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    (status, Json(json!({"error": msg.to_string()}))).into_response()
}

async fn health(State(s): State<Arc<AppState>>) -> Response {
    let ready = s.readiness().await;
    let secret = s.secret.read().await.clone();
    let verification = match &secret {
        Some(sec) if !sec.enable_webhook_verification => "DISABLED",
        Some(_) => "enabled",
        None => "unknown",
    };
    let body = json!({
        "status": if ready.is_ok() { "ok" } else { "degraded" },
        "version": VERSION,
        "environment": s.config.app_env,
        "config_loaded": secret.is_some(),
        "verification": verification,
        "reason": ready.err(),
    });
    (StatusCode::OK, Json(body)).into_response()
}

async fn ready(State(s): State<Arc<AppState>>) -> Response {
    match s.readiness().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "not ready", "reason": why}))).into_response(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Channel {
    Event,
    Lifecycle,
    Canvas,
}

impl Channel {
    fn name(self) -> &'static str {
        match self {
            Channel::Event => "event",
            Channel::Lifecycle => "lifecycle",
            Channel::Canvas => "canvas",
        }
    }
}

async fn event(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(s, Channel::Event, headers, body).await
}
async fn lifecycle(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(s, Channel::Lifecycle, headers, body).await
}
async fn canvas(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(s, Channel::Canvas, headers, body).await
}

fn header<'a>(h: &'a HeaderMap, name: &'static str) -> Result<&'a str, Rejection> {
    h.get(name).and_then(|v| v.to_str().ok()).ok_or(Rejection::MissingHeader(name))
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The client address API Gateway forwards (first `X-Forwarded-For` entry).
fn client_ip(h: &HeaderMap) -> Option<Ipv4Addr> {
    h.get("x-forwarded-for")?.to_str().ok()?.split(',').next()?.trim().parse().ok()
}

async fn handle(s: Arc<AppState>, channel: Channel, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    if !s.config.allow_cidrs.is_empty() && !client_ip(&headers).is_some_and(|ip| allowed(&s.config.allow_cidrs, ip)) {
        return error(StatusCode::FORBIDDEN, "client address is not in the allowlist");
    }
    let Some(secret) = s.secret.read().await.clone() else {
        let why = s.degraded.lock().unwrap().clone().unwrap_or_default();
        return error(StatusCode::SERVICE_UNAVAILABLE, format!("service is degraded, retry later: {why}"));
    };

    // Verify over the raw bytes, before parsing anything.
    let webhook_id = match verify_request(&s, &secret, &headers, &body).await {
        Ok(id) => id,
        Err(Rejection::NoKeys) => return error(StatusCode::SERVICE_UNAVAILABLE, Rejection::NoKeys),
        Err(r) => {
            tracing::info!(channel = channel.name(), reason = %r, "webhook rejected");
            return error(StatusCode::UNAUTHORIZED, r);
        }
    };
    let reserved = secret.enable_webhook_verification;
    let release = |s: &AppState| {
        if reserved {
            s.replay.release(&webhook_id)
        }
    };

    let payload: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            release(&s);
            return error(StatusCode::BAD_REQUEST, "body must be a JSON object");
        }
        Err(e) => {
            release(&s);
            return error(StatusCode::BAD_REQUEST, format!("body is not valid JSON: {e}"));
        }
    };
    let message = &payload["message"];
    let event_type = message["type"].as_str().unwrap_or_default().to_string();

    let entry = match channel {
        Channel::Event if PACKAGED_EVENTS.contains(&event_type.as_str()) => match message["resourceId"].as_str() {
            Some(id) => Some(id.to_string()),
            None => {
                release(&s);
                return error(StatusCode::BAD_REQUEST, "message.resourceId is missing");
            }
        },
        Channel::Canvas => canvas_entry(message),
        _ => None,
    };
    let Some(entry_id) = entry else {
        tracing::info!(channel = channel.name(), webhook_id, event_type, "acknowledged, nothing to do");
        return Json(json!({"status": "acknowledged", "webhook_id": webhook_id})).into_response();
    };

    let job = json!({
        "kind": "package",
        "channel": channel.name(),
        "event_type": event_type,
        "entry_id": entry_id,
        "webhook_id": webhook_id,
        "received_at": now_unix(),
        "message": message,
    });
    match s.queue.send(&entry_id, &webhook_id, job.to_string()).await {
        Ok(()) => {
            tracing::info!(channel = channel.name(), webhook_id, event_type, entry_id, ms = started.elapsed().as_millis() as u64, "queued");
            Json(json!({"status": "queued", "webhook_id": webhook_id, "entry_id": entry_id})).into_response()
        }
        Err(e) => {
            release(&s);
            tracing::error!(channel = channel.name(), webhook_id, error = %e, "queue refused the event; answering 503 so Benchling retries");
            error(StatusCode::SERVICE_UNAVAILABLE, "event could not be queued; retry later")
        }
    }
}

/// Canvas button interactions whose id starts with `update-package-` package the canvas's entry.
fn canvas_entry(message: &Value) -> Option<String> {
    let button = message["buttonId"].as_str()?;
    let suffix = button.strip_prefix("update-package-")?;
    message["resourceId"].as_str().or_else(|| message["entryId"].as_str()).or((!suffix.is_empty()).then_some(suffix)).map(str::to_string)
}

/// Verifies (unless switched off) and reserves the webhook-id; returns it.
async fn verify_request(s: &AppState, secret: &BenchlingSecret, headers: &HeaderMap, body: &[u8]) -> Result<String, Rejection> {
    if !secret.enable_webhook_verification {
        let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).map(str::to_string);
        return Ok(id.unwrap_or_else(|| format!("unverified-{}", now_unix())));
    }
    let h = SignedHeaders {
        id: header(headers, "webhook-id")?,
        timestamp: header(headers, "webhook-timestamp")?,
        signature: header(headers, "webhook-signature")?,
    };
    let cache = s.keys.read().await.clone().ok_or(Rejection::NoKeys)?;
    let now = now_unix();
    let mut result = verify::verify(&h, body, &cache.keys().await, now);
    if matches!(result, Err(Rejection::BadSignature | Rejection::NoKeys)) && cache.refresh_if_stale().await {
        // The app's keys may have rotated: try once more with fresh ones.
        result = verify::verify(&h, body, &cache.keys().await, now);
    }
    result?;
    if !s.replay.reserve(h.id, now) {
        return Err(Rejection::Replay);
    }
    Ok(h.id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canvas_buttons() {
        assert_eq!(canvas_entry(&json!({"buttonId": "update-package-x", "resourceId": "etr_1"})), Some("etr_1".into()));
        assert_eq!(canvas_entry(&json!({"buttonId": "update-package-etr_9"})), Some("etr_9".into()));
        assert_eq!(canvas_entry(&json!({"buttonId": "other", "resourceId": "etr_1"})), None);
        assert_eq!(canvas_entry(&json!({})), None);
    }

    #[test]
    fn forwarded_client_address() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.0.0.1".parse().unwrap());
        assert_eq!(client_ip(&h), Some("203.0.113.9".parse().unwrap()));
    }
}
