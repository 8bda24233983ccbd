//! HTTP surface: health, and the three Benchling webhook routes (also under a stage prefix,
//! since API Gateway forwards `/{stage}/...` for named stages). Client input never causes a
//! 5xx; 503 means "not acknowledged, retry" (degraded, or the queue refused).

use crate::config::{allowed, BenchlingSecret, Config};
use crate::jwks::KeyCache;
use crate::queue::Queue;
use crate::replay::{ReplayGuard, Seen};
use crate::verify::{self, Rejection, SignedHeaders};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::net::IpAddr;
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

/// The client address for the allowlist: the one value of the header the API Gateway
/// integration overwrites with `$context.identity.sourceIp` (the address API Gateway itself
/// saw). `X-Forwarded-For` and `Forwarded` are not read: proxies append to them, so their
/// first entries are whatever the caller wrote.
fn client_ip(h: &HeaderMap, name: &HeaderName) -> Result<IpAddr, String> {
    let mut values = h.get_all(name).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(format!(
            "no single client address: the {name} header (set by the API Gateway integration from $context.identity.sourceIp) \
             is missing or repeated; X-Forwarded-For is not trusted"
        ));
    };
    value.to_str().ok().and_then(|v| v.trim().parse().ok()).ok_or_else(|| format!("the {name} header is not an IP address"))
}

/// Whether the caller may post webhooks (always, without an allowlist).
fn admitted(config: &Config, headers: &HeaderMap) -> Result<(), String> {
    if config.allow_cidrs.is_empty() {
        return Ok(());
    }
    let ip = client_ip(headers, &config.client_ip_header)?;
    let v4 = match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    if v4.is_some_and(|v4| allowed(&config.allow_cidrs, v4)) {
        Ok(())
    } else {
        Err(format!("client address {ip} is not in the allowlist"))
    }
}

/// A webhook-id reserved in the replay guard: acknowledged explicitly, released on drop
/// otherwise.
struct Reservation<'a> {
    state: &'a AppState,
    id: &'a str,
    held: bool,
}

impl Reservation<'_> {
    fn acknowledge(&self) {
        if self.held {
            self.state.replay.acknowledge(self.id);
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        // Acknowledged ids are kept (release only forgets ids still in flight).
        if self.held {
            self.state.replay.release_in_flight(self.id);
        }
    }
}

/// What verification decided about a request's webhook-id.
enum Admission {
    /// First time seen (reserved if `reserved`): queue it.
    New { id: String, reserved: bool },
    /// Already answered 200: answer 200 again, queue nothing.
    Acknowledged(String),
    /// Another request with this id is still being queued: 503, retry shortly.
    InFlight(String),
}

/// How long a retry of an id still being queued should wait: by then the first request has
/// been queued or has given up (the SQS send timeout).
fn retry_after(config: &Config) -> u64 {
    config.sqs_send_timeout.as_secs().max(1)
}

async fn handle(s: Arc<AppState>, channel: Channel, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    if let Err(why) = admitted(&s.config, &headers) {
        return error(StatusCode::FORBIDDEN, why);
    }
    let Some(secret) = s.secret.read().await.clone() else {
        let why = s.degraded.lock().unwrap().clone().unwrap_or_default();
        return error(StatusCode::SERVICE_UNAVAILABLE, format!("service is degraded, retry later: {why}"));
    };

    // Verify over the raw bytes, before parsing anything.
    let (webhook_id, reserved) = match verify_request(&s, &secret, &headers, &body).await {
        Ok(Admission::New { id, reserved }) => (id, reserved),
        Ok(Admission::Acknowledged(id)) => {
            tracing::info!(
                channel = channel.name(),
                webhook_id = id,
                "repeat of an acknowledged webhook: acknowledged again, not queued twice"
            );
            return Json(json!({"status": "already acknowledged", "webhook_id": id})).into_response();
        }
        Ok(Admission::InFlight(id)) => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, format!("webhook {id} is still being queued; retry shortly"));
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, retry_after(&s.config).into());
            return r;
        }
        Err(r) => {
            let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::UNAUTHORIZED);
            if status != StatusCode::SERVICE_UNAVAILABLE {
                tracing::info!(channel = channel.name(), reason = %r, "webhook rejected");
            }
            return error(status, r);
        }
    };
    // Released on every way out that is not an acknowledgement: an error answer, a panic, or
    // the request being dropped (the caller or API Gateway hung up mid-send), so that a retry
    // is never stuck behind an in-flight reservation nobody will finish.
    let reservation = Reservation { state: &s, id: &webhook_id, held: reserved };

    let mut payload: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return error(StatusCode::BAD_REQUEST, "body must be a JSON object");
        }
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, format!("body is not valid JSON: {e}"));
        }
    };
    // Moved out, not copied: it goes into the job as it is.
    let message = payload.get_mut("message").map(Value::take).unwrap_or(Value::Null);
    let message = &message;
    let event_type = message["type"].as_str().unwrap_or_default().to_string();

    let entry = match channel {
        Channel::Event if PACKAGED_EVENTS.contains(&event_type.as_str()) => match message["resourceId"].as_str() {
            Some(id) => Some(id.to_string()),
            None => {
                return error(StatusCode::BAD_REQUEST, "message.resourceId is missing");
            }
        },
        Channel::Canvas => canvas_entry(message),
        _ => None,
    };
    let Some(entry_id) = entry else {
        reservation.acknowledge();
        tracing::info!(channel = channel.name(), webhook_id, event_type, "acknowledged, nothing to do");
        return Json(json!({"status": "acknowledged", "webhook_id": webhook_id})).into_response();
    };

    let job = Job {
        channel: channel.name(),
        entry_id: &entry_id,
        event_type: &event_type,
        kind: "package",
        message,
        received_at: now_unix(),
        webhook_id: &webhook_id,
    };
    let job = serde_json::to_string(&job).expect("a job serializes");
    match s.queue.send(&entry_id, &webhook_id, job).await {
        Ok(()) => {
            reservation.acknowledge();
            tracing::info!(channel = channel.name(), webhook_id, event_type, entry_id, ms = started.elapsed().as_millis() as u64, "queued");
            Json(Queued { entry_id: &entry_id, status: "queued", webhook_id: &webhook_id }).into_response()
        }
        Err(e) => {
            tracing::error!(channel = channel.name(), webhook_id, error = %e, "queue refused the event; answering 503 so Benchling retries");
            error(StatusCode::SERVICE_UNAVAILABLE, "event could not be queued; retry later")
        }
    }
}

/// What the worker receives (worker.rs reads it); fields in the order `json!` would give them.
#[derive(serde::Serialize)]
struct Job<'a> {
    channel: &'static str,
    entry_id: &'a str,
    event_type: &'a str,
    kind: &'static str,
    message: &'a Value,
    received_at: i64,
    webhook_id: &'a str,
}

/// The answer to a queued event (built per request: a struct, not a `json!` map).
#[derive(serde::Serialize)]
struct Queued<'a> {
    entry_id: &'a str,
    status: &'static str,
    webhook_id: &'a str,
}

/// Canvas button interactions whose id starts with `update-package-` package the canvas's entry.
fn canvas_entry(message: &Value) -> Option<String> {
    let button = message["buttonId"].as_str()?;
    let suffix = button.strip_prefix("update-package-")?;
    message["resourceId"].as_str().or_else(|| message["entryId"].as_str()).or((!suffix.is_empty()).then_some(suffix)).map(str::to_string)
}

/// The deduplication id of an unverified event: its `webhook-id` when it has a usable one,
/// else a hash of its content (two different events never share it; a resent one does).
fn unverified_id(headers: &HeaderMap, body: &[u8]) -> String {
    let given = headers.get("webhook-id").and_then(|v| v.to_str().ok()).map(str::trim);
    match given.filter(|id| !id.is_empty() && id.len() <= verify::MAX_ID && id.bytes().all(|b| b.is_ascii_graphic())) {
        Some(id) => id.to_string(),
        None => {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
            let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
            // SQS deduplication ids are at most 128 characters.
            format!("unverified-sha256-{hex}")
        }
    }
}

/// Verifies (unless switched off) and looks the webhook-id up (reserving a new one).
async fn verify_request(s: &AppState, secret: &BenchlingSecret, headers: &HeaderMap, body: &[u8]) -> Result<Admission, Rejection> {
    if !secret.enable_webhook_verification {
        return Ok(Admission::New { id: unverified_id(headers, body), reserved: false });
    }
    let h = SignedHeaders {
        id: header(headers, "webhook-id")?,
        timestamp: header(headers, "webhook-timestamp")?,
        signature: header(headers, "webhook-signature")?,
    };
    verify::check_sizes(&h)?;
    let cache = s.keys.read().await.clone().ok_or(Rejection::NoKeys)?;
    let now = now_unix();
    let mut result = verify::verify(&h, body, &cache.keys().await, now);
    if matches!(result, Err(Rejection::BadSignature | Rejection::NoKeys)) && cache.refresh_if_stale().await {
        // The app's keys may have rotated: try once more with fresh ones.
        result = verify::verify(&h, body, &cache.keys().await, now);
    }
    result?;
    let id = h.id.to_string();
    Ok(match s.replay.reserve(h.id, now) {
        Seen::New => Admission::New { id, reserved: true },
        Seen::Acknowledged => Admission::Acknowledged(id),
        Seen::InFlight => Admission::InFlight(id),
    })
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

    fn config(allow: &str) -> Config {
        Config::from_lookup(|k| (k == "WEBHOOK_ALLOW_CIDRS").then(|| allow.to_string())).unwrap()
    }

    #[test]
    fn only_the_header_api_gateway_overwrites_is_trusted() {
        let c = config("203.0.113.0/24");
        let with = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(HeaderName::try_from(*k).unwrap(), v.parse().unwrap());
            }
            admitted(&c, &h)
        };
        // The caller writes the first X-Forwarded-For / Forwarded entry itself: never trusted.
        let spoofed = with(&[("x-forwarded-for", "203.0.113.7, 198.51.100.1"), ("forwarded", "for=203.0.113.7, for=198.51.100.1")]);
        assert!(spoofed.as_ref().is_err_and(|e| e.contains("x-webhook-source-ip")), "{spoofed:?}");
        assert_eq!(with(&[("x-webhook-source-ip", "203.0.113.7"), ("x-forwarded-for", "198.51.100.1")]), Ok(()));
        let outside = with(&[("x-webhook-source-ip", "198.51.100.1"), ("x-forwarded-for", "203.0.113.7")]);
        assert!(outside.is_err_and(|e| e.contains("198.51.100.1 is not in the allowlist")));
        assert!(with(&[("x-webhook-source-ip", "203.0.113.7"), ("x-webhook-source-ip", "203.0.113.8")]).is_err(), "repeated");
        assert!(with(&[("x-webhook-source-ip", "not-an-ip")]).is_err());
        assert_eq!(with(&[("x-webhook-source-ip", "::ffff:203.0.113.9")]), Ok(()), "IPv4-mapped IPv6");
        assert!(with(&[("x-webhook-source-ip", "2001:db8::1")]).is_err());
        assert_eq!(admitted(&Config::from_lookup(|_| None).unwrap(), &HeaderMap::new()), Ok(()), "no allowlist: everyone");
    }

    #[test]
    fn unverified_events_are_told_apart_by_id_or_content() {
        let empty = HeaderMap::new();
        let a = unverified_id(&empty, b"{\"a\":1}");
        assert_eq!(a, unverified_id(&empty, b"{\"a\":1}"), "the same event resent");
        assert_ne!(a, unverified_id(&empty, b"{\"a\":2}"), "two events in the same second");
        assert!(a.len() <= 128, "an SQS deduplication id: {a}");
        let mut h = HeaderMap::new();
        h.insert("webhook-id", "msg_7".parse().unwrap());
        assert_eq!(unverified_id(&h, b"x"), "msg_7");
    }
}
