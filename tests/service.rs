//! The webhook service against moto (SQS FIFO, Secrets Manager) with a local JWKS server:
//! every route's statuses, durable acknowledgement, concurrency, degraded mode, and no 5xx
//! for any client input. Each test owns its moto server and its service instance.

#[path = "support/mod.rs"]
mod support;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};
use service::app::AppState;
use service::config::Config;
use service::queue::SqsQueue;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::Moto;

struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Signer {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        Signer { key: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap(), rng }
    }
    fn jwks(&self) -> Value {
        let p = self.key.public_key().as_ref();
        json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "test", "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..65])}]})
    }
    fn sign(&self, id: &str, ts: i64, body: &[u8]) -> String {
        let mut msg = format!("{id}.{ts}.").into_bytes();
        msg.extend_from_slice(body);
        format!("v1bder,{}", STANDARD.encode(self.key.sign(&self.rng, &msg).unwrap().as_ref()))
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn event_body(event_type: &str, entry: &str) -> String {
    json!({"version": "0", "baseURL": "https://t.benchling.com", "tenantId": "ten_1", "app": {"id": "app_1"},
           "appDefinition": {"id": "appdef_1", "versionNumber": "1"}, "channel": "events",
           "message": {"id": "evt_1", "type": event_type, "resourceId": entry, "createdAt": "2026-11-24T12:00:00Z",
                       "deprecated": false, "updates": ["fields.x"]}})
    .to_string()
}

struct Service {
    moto: Moto,
    url: String,
    signer: Signer,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    http: reqwest::Client,
    state: Arc<AppState>,
}

#[derive(Clone, Copy, PartialEq)]
enum Setup {
    Normal,
    VerificationOff,
    NoSecret,
    BrokenQueue,
}

async fn start(setup: Setup) -> Service {
    let moto = Moto::start();
    let aws = moto.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let sm = aws_sdk_secretsmanager::Client::new(&aws);
    let q = sqs
        .create_queue()
        .queue_name("events.fifo")
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .unwrap();
    let queue_url = q.queue_url().unwrap().to_string();
    let secret = json!({"tenant": "t", "client_id": "cid", "client_secret": "s3cr3t-value", "app_definition_id": "appdef_1",
                        "user_bucket": "bucket", "pkg_prefix": "benchling", "enable_webhook_verification": setup != Setup::VerificationOff});
    if setup != Setup::NoSecret {
        sm.create_secret().name("benchling").secret_string(secret.to_string()).send().await.unwrap();
    }

    // The app's JWKS, served locally.
    let signer = Signer::new();
    let jwks = signer.jwks();
    let jwks_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/jwks", jwks_listener.local_addr().unwrap());
    tokio::spawn(async move {
        let app = axum::Router::new().route("/jwks", axum::routing::get(move || async move { axum::Json(jwks) }));
        axum::serve(jwks_listener, app).await.unwrap();
    });

    let used_queue = if setup == Setup::BrokenQueue { format!("{}-missing.fifo", queue_url.trim_end_matches(".fifo")) } else { queue_url.clone() };
    let config = Config::from_lookup(|k| match k {
        "BENCHLING_SECRET" => Some("benchling".into()),
        "QUEUE_URL" => Some(used_queue.clone()),
        "BENCHLING_JWKS_URL" => Some(jwks_url.clone()),
        _ => None,
    })
    .unwrap();
    let state = AppState::new(config, Arc::new(SqsQueue { client: sqs.clone(), url: used_queue.clone() }));
    tokio::spawn(service::load_forever(state.clone(), sm, service::http_client(), Duration::from_millis(100)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(service::serve(state.clone(), listener, std::future::pending()));
    let svc = Service { moto, url, signer, sqs, queue_url, http: reqwest::Client::new(), state };
    if setup != Setup::NoSecret {
        for _ in 0..100 {
            if svc.get("/health/ready").await.0 == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(svc.get("/health/ready").await.0, 200, "service never became ready");
    }
    svc
}

impl Service {
    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.url)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post_raw(&self, path: &str, headers: &[(&str, String)], body: Vec<u8>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.url)).body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A freshly signed request.
    async fn post_signed(&self, path: &str, id: &str, body: &str) -> (u16, Value) {
        let ts = now();
        let headers = [("webhook-id", id.to_string()), ("webhook-timestamp", ts.to_string()), ("webhook-signature", self.signer.sign(id, ts, body.as_bytes()))];
        self.post_raw(path, &headers, body.as_bytes().to_vec()).await
    }

    /// Messages in the queue, visible or in flight.
    async fn queued(&self) -> usize {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap();
        let a = out.attributes().unwrap();
        a[&A::ApproximateNumberOfMessages].parse::<usize>().unwrap() + a[&A::ApproximateNumberOfMessagesNotVisible].parse::<usize>().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_answer_with_the_documented_statuses() {
    let s = start(Setup::Normal).await;
    let body = event_body("v2.entry.updated.fields", "etr_1");

    let (st, v) = s.post_signed("/event", "msg_1", &body).await;
    assert_eq!((st, v["status"].as_str()), (200, Some("queued")), "{v}");
    let (st, v) = s.post_signed("/prod/event", "msg_2", &event_body("v2.entry.created", "etr_2")).await;
    assert_eq!((st, v["status"].as_str()), (200, Some("queued")), "stage-prefixed route: {v}");
    let (st, v) = s.post_signed("/event", "msg_3", &event_body("v2.request.created", "etr_3")).await;
    assert_eq!((st, v["status"].as_str()), (200, Some("acknowledged")), "other types are acknowledged, not queued: {v}");
    let lifecycle = json!({"message": {"type": "v2.app.installed", "id": "x"}}).to_string();
    assert_eq!(s.post_signed("/lifecycle", "msg_4", &lifecycle).await.0, 200);
    let canvas = json!({"message": {"type": "v2.canvas.userInteracted", "buttonId": "update-package-etr_5", "resourceId": "etr_5"}}).to_string();
    let (st, v) = s.post_signed("/canvas", "msg_5", &canvas).await;
    assert_eq!((st, v["entry_id"].as_str()), (200, Some("etr_5")), "{v}");
    assert_eq!(s.queued().await, 3, "event, stage event and canvas are queued; the rest are not");

    // The queued message: FIFO group = entry id, dedup id = webhook-id, the job body.
    let msgs = s
        .sqs
        .receive_message()
        .queue_url(&s.queue_url)
        .max_number_of_messages(10)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap();
    let first = msgs.messages().iter().find(|m| m.body().unwrap().contains("msg_1")).expect("msg_1 queued");
    let attrs = first.attributes().unwrap();
    assert_eq!(attrs[&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId], "etr_1");
    assert_eq!(attrs[&aws_sdk_sqs::types::MessageSystemAttributeName::MessageDeduplicationId], "msg_1");
    let job: Value = serde_json::from_str(first.body().unwrap()).unwrap();
    assert_eq!((job["entry_id"].as_str(), job["event_type"].as_str()), (Some("etr_1"), Some("v2.entry.updated.fields")));

    // Failures.
    assert_eq!(s.post_signed("/event", "msg_1", &body).await.0, 401, "replayed webhook-id");
    assert_eq!(s.post_raw("/event", &[], body.clone().into_bytes()).await.0, 401, "unsigned");
    let ts = now();
    let forged = [("webhook-id", "msg_9".to_string()), ("webhook-timestamp", ts.to_string()), ("webhook-signature", s.signer.sign("msg_9", ts, b"other body"))];
    let (st, v) = s.post_raw("/event", &forged, body.clone().into_bytes()).await;
    assert_eq!(st, 401);
    assert!(v["error"].as_str().unwrap().contains("signature"), "{v}");
    let old = ts - 400;
    let stale = [("webhook-id", "msg_10".to_string()), ("webhook-timestamp", old.to_string()), ("webhook-signature", s.signer.sign("msg_10", old, body.as_bytes()))];
    assert_eq!(s.post_raw("/event", &stale, body.clone().into_bytes()).await.0, 401, "stale timestamp");
    assert_eq!(s.post_signed("/event", "msg_11", "{not json").await.0, 400, "malformed JSON");
    assert_eq!(s.post_signed("/event", "msg_12", "[1,2]").await.0, 400, "JSON but not an object");
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(1024 * 1024 + 10));
    assert_eq!(s.post_signed("/event", "msg_13", &big).await.0, 413, "oversized body");
    assert_eq!(s.get("/nope").await.0, 404);
    assert_eq!(s.get("/event").await.0, 405);
    assert_eq!(s.queued().await, 3, "no rejected request reached the queue");

    let (st, h) = s.get("/health").await;
    assert_eq!((st, h["status"].as_str(), h["verification"].as_str()), (200, Some("ok"), Some("enabled")), "{h}");
    assert_eq!(s.get("/health/live").await.0, 200);
    let all = format!("{h}");
    assert!(!all.contains("s3cr3t-value"), "health must not show secrets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_events_are_all_acknowledged_and_queued_exactly_once() {
    let s = Arc::new(start(Setup::Normal).await);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move { s.post_signed("/event", &format!("msg_{i}"), &event_body("v2.entry.created", &format!("etr_{i}"))).await.0 }));
    }
    let mut ok = 0;
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
        ok += 1;
    }
    assert_eq!(ok, 100);
    assert_eq!(s.queued().await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_the_service_is_degraded_not_crashing() {
    let s = start(Setup::NoSecret).await;
    // Wait for the first load attempt to fail (then it retries every 100 ms).
    let mut h = Value::Null;
    for _ in 0..100 {
        h = s.get("/health").await.1;
        if h["reason"].as_str().is_some_and(|r| r.contains("cannot read secret")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (st, h) = (s.get("/health").await.0, h);
    assert_eq!((st, h["status"].as_str()), (200, Some("degraded")), "{h}");
    assert!(h["reason"].as_str().unwrap().contains("benchling"), "health says why: {h}");
    assert_eq!(s.get("/health/ready").await.0, 503);
    assert_eq!(s.post_signed("/event", "m", &event_body("v2.entry.created", "etr_1")).await.0, 503);
    assert_eq!(s.get("/health/live").await.0, 200);
    assert!(s.state.secret.read().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_queue_refuses_is_not_acknowledged_and_can_be_retried() {
    let s = start(Setup::BrokenQueue).await;
    let body = event_body("v2.entry.created", "etr_1");
    assert_eq!(s.post_signed("/event", "msg_1", &body).await.0, 503);
    // Benchling retries with the same webhook-id: still 503 (queue down), not 401 replay.
    assert_eq!(s.post_signed("/event", "msg_1", &body).await.0, 503);
    assert_eq!(s.queued().await, 0);
    drop(s.moto);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_can_only_be_switched_off_explicitly_and_health_says_so() {
    let s = start(Setup::VerificationOff).await;
    let (_, h) = s.get("/health").await;
    assert_eq!(h["verification"], "DISABLED", "{h}");
    let (st, _) = s.post_raw("/event", &[], event_body("v2.entry.created", "etr_1").into_bytes()).await;
    assert_eq!(st, 200);
    assert_eq!(s.queued().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_input_causes_a_5xx() {
    let s = start(Setup::Normal).await;
    let ts = now().to_string();
    let inputs: Vec<(&str, Vec<(&str, String)>, Vec<u8>)> = vec![
        ("/event", vec![], vec![]),
        ("/event", vec![("webhook-id", "a".into())], b"{}".to_vec()),
        ("/event", vec![("webhook-id", "a".into()), ("webhook-timestamp", "x".into()), ("webhook-signature", "v1bder,!!".into())], b"{}".to_vec()),
        ("/event", vec![("webhook-id", "a".into()), ("webhook-timestamp", ts.clone()), ("webhook-signature", "v1bder,".into())], vec![0xff, 0xfe, 0x00]),
        ("/event", vec![("webhook-id", "a".into()), ("webhook-timestamp", "99999999999999999999".into()), ("webhook-signature", "x".repeat(10_000))], b"{}".to_vec()),
        ("/canvas", vec![("content-type", "application/json".into())], b"null".to_vec()),
        ("/lifecycle", vec![], "é".repeat(1000).into_bytes()),
        ("/a/b/c/event", vec![], b"{}".to_vec()),
    ];
    for (path, headers, body) in inputs {
        let (st, v) = s.post_raw(path, &headers, body).await;
        assert!(st < 500, "{path} answered {st}: {v}");
    }
    // Signed but odd payloads.
    for body in ["{}", "{\"message\": 5}", "{\"message\": {\"type\": \"v2.entry.created\"}}", "\"str\"", "1e999"] {
        let (st, v) = s.post_signed("/event", &format!("odd-{}", body.len()), body).await;
        assert!(st < 500, "{body} answered {st}: {v}");
    }
}
