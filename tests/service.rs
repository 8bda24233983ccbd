//! The webhook service against moto (SQS FIFO, Secrets Manager) with a local JWKS server:
//! every route's statuses, durable acknowledgement, concurrency, degraded mode, and no 5xx
//! for any client input. Each test owns its moto server and its service instance.

use crate::{fault_proxy, signer, support};

use fault_proxy::{Fault, FaultProxy};
use serde_json::{json, Value};
use service::app::AppState;
use service::config::Config;
use service::queue::SqsQueue;
use signer::{now, Signer};
use std::sync::Arc;
use std::time::Duration;
use support::Moto;

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
    jwks: signer::JwksServer,
    /// Between the service's SQS client and moto, in `Setup::OneSlotBehindProxy`.
    proxy: Option<FaultProxy>,
}

#[derive(Clone, Copy, PartialEq)]
enum Setup {
    Normal,
    VerificationOff,
    NoSecret,
    BrokenQueue,
    /// SQS, but every send takes 2 s longer (a retry arrives while the first is in flight).
    SlowQueue,
    /// SQS through the fault proxy, one call in flight at a time (events queue up behind it).
    OneSlotBehindProxy,
}

/// A queue whose sends take `.1` longer.
struct Delayed<Q>(Q, Duration);

impl<Q: service::queue::Queue> service::queue::Queue for Delayed<Q> {
    fn send<'a>(&'a self, group: &'a str, dedup: &'a str, body: String) -> futures::future::BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            tokio::time::sleep(self.1).await;
            self.0.send(group, dedup, body).await
        })
    }
}

async fn start(setup: Setup) -> Service {
    start_with_jwks(setup, None).await
}

/// `start`, with the app's JWKS document given (its private keys are elsewhere) instead of
/// the test signer's.
async fn start_with_jwks(setup: Setup, jwks_doc: Option<Value>) -> Service {
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
    let jwks = signer::serve_jwks(jwks_doc.unwrap_or_else(|| signer.jwks())).await;
    let jwks_url = jwks.url.clone();

    let used_queue =
        if setup == Setup::BrokenQueue { format!("{}-missing.fifo", queue_url.trim_end_matches(".fifo")) } else { queue_url.clone() };
    let config = Config::from_lookup(|k| match k {
        "BENCHLING_SECRET" => Some("benchling".into()),
        "QUEUE_URL" => Some(used_queue.clone()),
        "BENCHLING_JWKS_URL" => Some(jwks_url.clone()),
        "JWKS_MIN_REFETCH_SECS" => Some("0.5".into()),
        _ => None,
    })
    .unwrap();
    let proxy = match setup {
        Setup::OneSlotBehindProxy => Some(FaultProxy::start(&moto.endpoint).await),
        _ => None,
    };
    let sqs_queue = match &proxy {
        Some(p) => {
            let through = aws_sdk_sqs::Client::new(&aws.to_builder().endpoint_url(&p.url).build());
            SqsQueue::new(through, used_queue.clone(), 1, Duration::from_secs(10))
        }
        None => SqsQueue::new(sqs.clone(), used_queue.clone(), 4, Duration::from_secs(10)),
    };
    let queue: Arc<dyn service::queue::Queue> = match setup {
        Setup::SlowQueue => Arc::new(Delayed(sqs_queue, Duration::from_secs(2))),
        _ => Arc::new(sqs_queue),
    };
    let state = AppState::new(config, queue);
    tokio::spawn(service::load_forever(state.clone(), sm, service::http_client(), Duration::from_millis(100)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(service::serve(state.clone(), listener, std::future::pending()));
    let svc = Service { moto, url, signer, sqs, queue_url, http: reqwest::Client::new(), state, jwks, proxy };
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
        let headers = [
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", self.signer.sign(id, ts, body.as_bytes())),
        ];
        self.post_raw(path, &headers, body.as_bytes().to_vec()).await
    }

    /// Messages in the queue, visible or in flight.
    async fn queued(&self) -> usize {
        support::queued(&self.sqs, &self.queue_url).await
    }

    /// The webhook ids of every message in the queue, one per message, sorted (received
    /// once each with a long visibility timeout; call it once per test).
    async fn queued_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .visibility_timeout(600)
                .send()
                .await
                .unwrap();
            if out.messages().is_empty() {
                break;
            }
            for m in out.messages() {
                let job: Value = serde_json::from_str(m.body().unwrap()).unwrap();
                ids.push(job["webhook_id"].as_str().unwrap().to_string());
            }
        }
        ids.sort();
        ids
    }

    /// One event for its own entry, signed, per id, all at once: (id, status).
    async fn post_all(self: &Arc<Self>, ids: &[String]) -> Vec<(String, u16)> {
        let tasks: Vec<_> = ids
            .iter()
            .map(|id| {
                let (s, id) = (self.clone(), id.clone());
                tokio::spawn(async move {
                    let st = s.post_signed("/event", &id, &event_body("v2.entry.created", &format!("etr_{id}"))).await.0;
                    (id, st)
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
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
    let canvas =
        json!({"message": {"type": "v2.canvas.userInteracted", "buttonId": "update-package-etr_5", "resourceId": "etr_5"}}).to_string();
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

    // A repeat of an acknowledged webhook (Benchling retrying after a lost 200, or a replay of
    // the same signed request): 200 again, nothing queued twice.
    let (st, v) = s.post_signed("/event", "msg_1", &body).await;
    assert_eq!((st, v["status"].as_str()), (200, Some("already acknowledged")), "{v}");
    assert_eq!(s.queued().await, 3, "a repeat is not queued again");

    // Failures.
    let ts = now();
    let replay_forged = [
        ("webhook-id", "msg_1".to_string()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", s.signer.sign("msg_1", ts, b"other body")),
    ];
    assert_eq!(s.post_raw("/event", &replay_forged, body.clone().into_bytes()).await.0, 401, "a known id with a bad signature");
    assert_eq!(s.post_raw("/event", &[], body.clone().into_bytes()).await.0, 401, "unsigned");
    let ts = now();
    let forged = [
        ("webhook-id", "msg_9".to_string()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", s.signer.sign("msg_9", ts, b"other body")),
    ];
    let (st, v) = s.post_raw("/event", &forged, body.clone().into_bytes()).await;
    assert_eq!(st, 401);
    assert!(v["error"].as_str().unwrap().contains("signature"), "{v}");
    let old = ts - 400;
    let stale = [
        ("webhook-id", "msg_10".to_string()),
        ("webhook-timestamp", old.to_string()),
        ("webhook-signature", s.signer.sign("msg_10", old, body.as_bytes())),
    ];
    assert_eq!(s.post_raw("/event", &stale, body.clone().into_bytes()).await.0, 401, "stale timestamp");
    // 250 s old: inside the Standard Webhooks' 5 minutes, outside our 240 s (verify.rs says why).
    let old = ts - 250;
    let stale = [
        ("webhook-id", "msg_10b".to_string()),
        ("webhook-timestamp", old.to_string()),
        ("webhook-signature", s.signer.sign("msg_10b", old, body.as_bytes())),
    ];
    let (st, v) = s.post_raw("/event", &stale, body.clone().into_bytes()).await;
    assert_eq!(st, 401, "{v}");
    assert!(v["error"].as_str().unwrap().contains("limit 240s"), "{v}");
    // Six signature entries (one of them valid): 400 before any verification.
    let signed = s.signer.sign("msg_14", ts, body.as_bytes());
    let many = [
        ("webhook-id", "msg_14".to_string()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", format!("{} {signed}", ["v1bder,AAAA"; 5].join(" "))),
    ];
    let (st, v) = s.post_raw("/event", &many, body.clone().into_bytes()).await;
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("6 entries (at most 5)"), "{v}");
    let long = [
        ("webhook-id", "msg_15".to_string()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", format!("{signed} v1bder,{}", "A".repeat(2000))),
    ];
    assert_eq!(s.post_raw("/event", &long, body.clone().into_bytes()).await.0, 400, "an over-long signature header");
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
    let r = s.http.get(format!("{}/health/live", s.url)).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123", "the caller's request id is echoed");
    let r = s.http.get(format!("{}/health/live", s.url)).header("x-request-id", "evil\tline").send().await.unwrap();
    assert!(r.headers()["x-request-id"].to_str().unwrap().starts_with("req-"), "unsafe ids are replaced");
    let all = format!("{h}");
    assert!(!all.contains("s3cr3t-value"), "health must not show secrets");
}

/// Benchling rotates the app's key: the first request signed with the new key triggers one
/// JWKS refresh and succeeds; a flood of forged requests causes at most one fetch per
/// `JWKS_MIN_REFETCH_SECS` (0.5 s here, 60 s by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_fetched_once_and_forgeries_cannot_cause_a_fetch_storm() {
    let mut s = start(Setup::Normal).await;
    assert_eq!(s.jwks.hits.load(std::sync::atomic::Ordering::SeqCst), 1, "keys are fetched at start-up");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let rotated = Signer::new();
    *s.jwks.doc.lock().unwrap() = rotated.jwks();
    s.signer = rotated;
    let (st, v) = s.post_signed("/event", "msg_rot", &event_body("v2.entry.created", "etr_1")).await;
    assert_eq!(st, 200, "signed with the rotated key: {v}");
    assert_eq!(s.jwks.hits.load(std::sync::atomic::Ordering::SeqCst), 2);

    let forger = Signer::new();
    let started = std::time::Instant::now();
    let body = event_body("v2.entry.created", "etr_1");
    let mut tasks = Vec::new();
    for i in 0..40 {
        let ts = now();
        let headers = vec![
            ("webhook-id", format!("forged_{i}")),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", forger.sign(&format!("forged_{i}"), ts, body.as_bytes())),
        ];
        let (http, url, body) = (s.http.clone(), format!("{}/event", s.url), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut req = http.post(url).body(body);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            req.send().await.unwrap().status().as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 401);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let fetches = s.jwks.hits.load(std::sync::atomic::Ordering::SeqCst) - 2;
    assert!(fetches as f64 <= 1.0 + elapsed / 0.5, "{fetches} JWKS fetches in {elapsed:.2}s for 40 forged requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_events_are_all_acknowledged_and_queued_exactly_once() {
    let s = Arc::new(start(Setup::Normal).await);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.post_signed("/event", &format!("msg_{i}"), &event_body("v2.entry.created", &format!("etr_{i}"))).await.0
        }));
    }
    let mut ok = 0;
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
        ok += 1;
    }
    assert_eq!(ok, 100);
    assert_eq!(s.queued().await, 100);
}

/// Events that arrive while every SQS call slot is busy go together in one SendMessageBatch
/// (group commit), and each is answered by its own entry of the reply: acknowledged only if
/// queued, queued once. Here one slot, held for 3 s by a delayed first call, so the rest
/// pile up behind it; then a batch call that fails: its events are answered 503, not queued,
/// and their retries are queued once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_waiting_for_a_call_share_a_batch_and_each_is_acknowledged_only_if_queued() {
    let s = Arc::new(start(Setup::OneSlotBehindProxy).await);
    let proxy = s.proxy.clone().unwrap();
    let ids = |from: usize, n: usize| (from..from + n).map(|i| format!("msg_{i:03}")).collect::<Vec<_>>();
    // Posts `first` alone; once its SendMessage is held in the proxy, posts `rest` at once.
    let behind_a_held_call = |first: Vec<String>, rest: Vec<String>| {
        let (s, proxy) = (s.clone(), proxy.clone());
        async move {
            let singles = proxy.count("sqs:SendMessage");
            let held = {
                let s = s.clone();
                tokio::spawn(async move { s.post_all(&first).await })
            };
            for _ in 0..400 {
                if proxy.count("sqs:SendMessage") > singles {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            assert!(proxy.count("sqs:SendMessage") > singles, "the first event's call never reached SQS");
            let mut answers = s.post_all(&rest).await;
            answers.extend(held.await.unwrap());
            answers
        }
    };

    // Wave 1: one event holds the only slot for 3 s; 39 more arrive meanwhile.
    proxy.inject("sqs:SendMessage", &[Fault::Delay(3000)]);
    let answers = behind_a_held_call(ids(0, 1), ids(1, 39)).await;
    assert!(answers.iter().all(|(_, st)| *st == 200), "{answers:?}");
    let (single, batches) = (proxy.count("sqs:SendMessage"), proxy.count("sqs:SendMessageBatch"));
    assert!(batches >= 1 && single + batches <= 10, "40 events in {single} SendMessage + {batches} SendMessageBatch calls");

    // Wave 2: the batch calls fail (a validation error the SDK does not retry).
    proxy.inject("sqs:SendMessage", &[Fault::Delay(3000)]);
    proxy.inject("sqs:SendMessageBatch", &[Fault::Validation, Fault::Validation]);
    let answers = behind_a_held_call(ids(40, 1), ids(41, 19)).await;
    proxy.clear_faults();
    let refused: Vec<String> = answers.iter().filter(|(_, st)| *st == 503).map(|(id, _)| id.clone()).collect();
    assert!(answers.iter().all(|(_, st)| *st == 200 || *st == 503), "{answers:?}");
    assert!(!refused.is_empty(), "a failed batch call answers its events 503: {answers:?}");
    assert_eq!(s.queued().await, 60 - refused.len(), "what was answered 503 is not queued");

    // Benchling retries what was not acknowledged.
    let retried = s.post_all(&refused).await;
    assert!(retried.iter().all(|(_, st)| *st == 200), "{retried:?}");
    assert_eq!(s.queued_ids().await, ids(0, 60), "every event queued exactly once");
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

/// Benchling retries a webhook while the first delivery is still being queued (API Gateway
/// timed out on it): the retry gets 503 with Retry-After, not 401; once the first is
/// queued, a further retry gets 200 and the event is queued once. A request whose caller hung
/// up leaves nothing reserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_while_the_first_is_in_flight_gets_503_then_200() {
    let s = Arc::new(start(Setup::SlowQueue).await);
    let body = event_body("v2.entry.created", "etr_1");
    let first = {
        let (s, body) = (s.clone(), body.clone());
        tokio::spawn(async move { s.post_signed("/event", "msg_r", &body).await })
    };
    // Well inside the first request's 2 s send, even on a loaded machine.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ts = now();
    let headers = [
        ("webhook-id", "msg_r".to_string()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", s.signer.sign("msg_r", ts, body.as_bytes())),
    ];
    let mut req = s.http.post(format!("{}/event", s.url)).body(body.clone());
    for (k, v) in &headers {
        req = req.header(*k, v);
    }
    let retry = req.send().await.unwrap();
    assert_eq!(retry.status().as_u16(), 503, "still in flight");
    assert_eq!(retry.headers()["retry-after"], "10", "Retry-After: the SQS send timeout");
    let (st, v) = first.await.unwrap();
    assert_eq!((st, v["status"].as_str()), (200, Some("queued")), "{v}");
    let (st, v) = s.post_signed("/event", "msg_r", &body).await;
    assert_eq!((st, v["status"].as_str()), (200, Some("already acknowledged")), "{v}");
    assert_eq!(s.queued().await, 1);

    // A caller that hangs up mid-send (API Gateway timing out) leaves no reservation behind:
    // Benchling's retry is taken afresh, not answered 503 until the id is forgotten.
    let ts = now();
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    let cut = impatient
        .post(format!("{}/event", s.url))
        .header("webhook-id", "msg_c")
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", s.signer.sign("msg_c", ts, body.as_bytes()))
        .body(body.clone())
        .send()
        .await;
    assert!(cut.is_err(), "the caller gave up: {cut:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (st, v) = s.post_signed("/event", "msg_c", &body).await;
    assert_eq!((st, v["status"].as_str()), (200, Some("queued")), "{v}");
    assert_eq!(s.queued().await, 2, "the cut-off request queued nothing; its retry did");
}

/// A SendMessage that hangs (here: an endpoint that accepts connections and never answers)
/// gives up after SQS_SEND_TIMEOUT_MS: the event is answered 503 (not acknowledged) instead of
/// outliving API Gateway's 30 s, and the same webhook can be retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_sqs_send_is_answered_503_within_the_timeout() {
    let blackhole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", blackhole.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = blackhole.accept().await {
            held.push(sock); // never answered, never closed
        }
    });
    let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&endpoint)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "test"))
        .load()
        .await;
    let timeout = Duration::from_millis(600);
    let url = format!("{endpoint}/123456789012/events.fifo");
    let queue = SqsQueue::new(service::queue::sqs_client(&aws, timeout), url, 4, timeout);
    let (_moto, state) = start_unverified(&[("SQS_SEND_TIMEOUT_MS", "600")], Arc::new(queue)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/event", listener.local_addr().unwrap());
    tokio::spawn(service::serve(state, listener, std::future::pending()));
    // Without the timeout the request would hang past this client's 20 s.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let r = http.post(&url).header("webhook-id", "msg_h").body(event_body("v2.entry.created", "etr_1")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("could not be queued"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_can_only_be_switched_off_explicitly_and_health_says_so() {
    let s = start(Setup::VerificationOff).await;
    let (_, h) = s.get("/health").await;
    assert_eq!(h["verification"], "DISABLED", "{h}");
    let (st, _) = s.post_raw("/event", &[], event_body("v2.entry.created", "etr_1").into_bytes()).await;
    assert_eq!(st, 200);
    // A second event in the same second, without a webhook-id: not swallowed by FIFO
    // deduplication (its deduplication id is its content's hash, not the second).
    let (st, _) = s.post_raw("/event", &[], event_body("v2.entry.created", "etr_2").into_bytes()).await;
    assert_eq!(st, 200);
    assert_eq!(s.queued().await, 2);
}

/// The JWKS fetch is capped in size and time: a huge or never-ending answer fails the refresh
/// (the keys already cached stay in use) instead of filling memory or hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_or_slow_jwks_is_refused_and_the_cached_keys_stay() {
    use axum::routing::get;
    let good = Signer::new().jwks();
    let mode = Arc::new(std::sync::Mutex::new("good"));
    let app = {
        let (mode, good) = (mode.clone(), good.clone());
        axum::Router::new().route(
            "/jwks",
            get(move || {
                let (mode, good) = (mode.clone(), good.clone());
                async move {
                    let m = *mode.lock().unwrap();
                    match m {
                        "huge" => {
                            let mut doc = good.clone();
                            doc["pad"] = Value::String("x".repeat(100 * 1024));
                            axum::Json(doc).into_response()
                        }
                        "slow" => {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            axum::Json(good).into_response()
                        }
                        _ => axum::Json(good).into_response(),
                    }
                }
            }),
        )
    };
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let cache =
        service::jwks::KeyCache::new(url, reqwest::Client::new(), Duration::ZERO).with_limits(64 * 1024, Duration::from_millis(500));
    assert_eq!(cache.refresh().await, Ok(1));
    *mode.lock().unwrap() = "huge";
    let e = cache.refresh().await.unwrap_err();
    assert!(e.contains("larger than 65536 bytes"), "{e}");
    assert!(cache.is_loaded().await, "the cached keys stay");
    *mode.lock().unwrap() = "slow";
    let e = cache.refresh().await.unwrap_err();
    assert!(e.contains("within"), "{e}");
    assert_eq!(cache.keys().await.len(), 1, "the cached keys stay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_input_causes_a_5xx() {
    let s = start(Setup::Normal).await;
    let ts = now().to_string();
    type Input<'a> = (&'a str, Vec<(&'a str, String)>, Vec<u8>);
    let inputs: Vec<Input> = vec![
        ("/event", vec![], vec![]),
        ("/event", vec![("webhook-id", "a".into())], b"{}".to_vec()),
        (
            "/event",
            vec![("webhook-id", "a".into()), ("webhook-timestamp", "x".into()), ("webhook-signature", "v1bder,!!".into())],
            b"{}".to_vec(),
        ),
        (
            "/event",
            vec![("webhook-id", "a".into()), ("webhook-timestamp", ts.clone()), ("webhook-signature", "v1bder,".into())],
            vec![0xff, 0xfe, 0x00],
        ),
        (
            "/event",
            vec![
                ("webhook-id", "a".into()),
                ("webhook-timestamp", "99999999999999999999".into()),
                ("webhook-signature", "x".repeat(10_000)),
            ],
            b"{}".to_vec(),
        ),
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

/// SIGTERM (here: the shutdown future) stops accepting but lets an in-flight request finish:
/// its event is queued and acknowledged, not cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests() {
    use futures::future::BoxFuture;
    struct SlowQueue(std::sync::atomic::AtomicUsize);
    impl service::queue::Queue for SlowQueue {
        fn send<'a>(&'a self, _: &'a str, _: &'a str, _: String) -> BoxFuture<'a, Result<(), String>> {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(700)).await;
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            })
        }
    }
    let queue = Arc::new(SlowQueue(Default::default()));
    let (_moto, state) = start_unverified(&[], queue.clone()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(service::serve(state, listener, async move {
        let _ = stop_rx.await;
    }));
    let body = event_body("v2.entry.created", "etr_1");
    let in_flight =
        tokio::spawn(
            async move { reqwest::Client::new().post(format!("{url}/event")).body(body).send().await.map(|r| r.status().as_u16()) },
        );
    tokio::time::sleep(Duration::from_millis(200)).await; // the request is waiting on the queue
    stop_tx.send(()).unwrap();
    assert_eq!(in_flight.await.unwrap().unwrap(), 200, "the in-flight request completes");
    assert_eq!(queue.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    tokio::time::timeout(Duration::from_secs(5), server).await.expect("server stops after draining").unwrap().unwrap();
}

/// With WEBHOOK_ALLOW_CIDRS, only clients whose address API Gateway saw in those ranges get in
/// (the header the integration overwrites with `$context.identity.sourceIp`); everyone else,
/// including callers that write an allowed address into X-Forwarded-For, gets 403 before
/// anything else is looked at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ip_allowlist_trusts_only_the_address_api_gateway_saw() {
    struct Accept;
    impl service::queue::Queue for Accept {
        fn send<'a>(&'a self, _: &'a str, _: &'a str, _: String) -> futures::future::BoxFuture<'a, Result<(), String>> {
            Box::pin(async { Ok(()) })
        }
    }
    let (_moto, state) = start_unverified(&[("WEBHOOK_ALLOW_CIDRS", "203.0.113.0/24")], Arc::new(Accept)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/event", listener.local_addr().unwrap());
    tokio::spawn(service::serve(state, listener, std::future::pending()));
    let http = reqwest::Client::new();
    let body = event_body("v2.entry.created", "etr_1");
    let send = |headers: &[(&'static str, &'static str)]| {
        let mut r = http.post(&url).body(body.clone());
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    // The address API Gateway itself saw, in the header its integration overwrites.
    assert_eq!(send(&[("x-webhook-source-ip", "203.0.113.7"), ("x-forwarded-for", "198.51.100.7")]).await, 200);
    assert_eq!(send(&[("x-webhook-source-ip", "198.51.100.7"), ("x-forwarded-for", "203.0.113.7")]).await, 403);
    // What a caller writes itself: the first X-Forwarded-For entry, a Forwarded `for=`.
    assert_eq!(send(&[("x-forwarded-for", "203.0.113.7, 10.0.0.5")]).await, 403, "a spoofed X-Forwarded-For");
    assert_eq!(send(&[("forwarded", "for=203.0.113.7")]).await, 403, "a spoofed Forwarded");
    assert_eq!(send(&[]).await, 403, "no client address: not allowed");
}

/// A service with verification switched off (the secret says so), the given queue, and
/// `extra` environment; waits until the secret is loaded.
async fn start_unverified(extra: &[(&str, &str)], queue: Arc<dyn service::queue::Queue>) -> (Moto, Arc<AppState>) {
    let moto = Moto::start();
    let sm = aws_sdk_secretsmanager::Client::new(&moto.sdk_config().await);
    let secret = json!({"tenant": "t", "client_id": "c", "client_secret": "s", "app_definition_id": "a", "user_bucket": "b", "enable_webhook_verification": false});
    sm.create_secret().name("benchling").secret_string(secret.to_string()).send().await.unwrap();
    let config = Config::from_lookup(|k| match k {
        "BENCHLING_SECRET" => Some("benchling".into()),
        _ => extra.iter().find(|(key, _)| *key == k).map(|(_, v)| v.to_string()),
    })
    .unwrap();
    let state = AppState::new(config, queue);
    tokio::spawn(service::load_forever(state.clone(), sm, service::http_client(), Duration::from_millis(100)));
    // Up to 20 s: moto's first answer can be slow on a loaded machine.
    for _ in 0..400 {
        if state.secret.read().await.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(state.secret.read().await.is_some(), "secret never loaded");
    (moto, state)
}

/// `benchling-webhook healthcheck` (the container health check) exits 0 only while the local
/// service is ready: ECS turns that into the Cloud Map health API Gateway routes by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_healthcheck_subcommand_follows_readiness() {
    let check = |url: &str| {
        let port = url.rsplit(':').next().unwrap().to_string();
        std::process::Command::new(env!("CARGO_BIN_EXE_benchling-webhook"))
            .arg("healthcheck")
            .env_clear()
            .env("PORT", port)
            .status()
            .unwrap()
            .code()
    };
    let ready = start(Setup::Normal).await;
    assert_eq!(check(&ready.url), Some(0), "ready service");
    let degraded = start(Setup::NoSecret).await;
    assert_eq!(check(&degraded.url), Some(1), "degraded service (no secret)");
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    assert_eq!(check(&format!("http://127.0.0.1:{free}")), Some(1), "nothing listening");
}

/// `BIND_ADDR` is the address `serve` listens on: bound to 127.0.0.2, the service answers there
/// and not on 127.0.0.1 (with the default, 0.0.0.0, it would answer on both).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_listens_on_the_bind_address_only() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_benchling-webhook"))
        .arg("serve")
        .env_clear()
        .env("PORT", port.to_string())
        .env("BIND_ADDR", "127.0.0.2")
        // No AWS reachable: the service starts degraded, which is enough to answer /health/live.
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "x")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let live = format!("http://127.0.0.2:{port}/health/live");
    let started = std::time::Instant::now();
    let mut answered = false;
    while started.elapsed() < std::time::Duration::from_secs(20) {
        if http.get(&live).send().await.map(|r| r.status().is_success()).unwrap_or(false) {
            answered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let elsewhere = http.get(format!("http://127.0.0.1:{port}/health/live")).send().await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(answered, "no answer on the bind address {live}");
    assert!(elsewhere.is_err(), "answered on 127.0.0.1 too: {elsewhere:?}");
}

/// Where the service's verdict on a signed request may differ from Benchling's own verifier
/// (benchling-sdk), and why. README, "Signature verification against Benchling's verifier".
const STRICTER_BY_DESIGN: &[(&str, &str)] = &[
    ("six_entries_last_valid", "at most 5 signature entries, refused before any verification (Benchling sends one per active key)"),
    ("label_bare_der", "an entry's label must be of the documented `v{n}der` family; the reference takes any label containing `der`"),
    (
        "age_260s",
        "at most 240 s old (the reference: 5 min), so that a replay to another task falls inside SQS FIFO's 5-minute deduplication",
    ),
    ("age_280s", "as age_260s"),
    ("ahead_60s", "at most 30 s ahead of our clock (the reference: 5 min), same reason"),
    ("timestamp_decimal", "webhook-timestamp in integer unix seconds, as Standard Webhooks and Benchling send it"),
    ("timestamp_exponent", "as timestamp_decimal"),
];

/// The service against Benchling's own verifier (benchling-sdk's `webhook_helpers.verify`,
/// run by tests/reference/benchling-verifier-cases.py on requests it signs: valid, tampered,
/// several entries, rotated keys, labels, encodings, window edges). The service never accepts
/// what the reference refuses unless a genuine in-window signature is present, and every
/// request the reference accepts and the service refuses is listed in STRICTER_BY_DESIGN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verifier_agrees_with_benchlings_own_or_is_stricter_by_design() {
    let script = support::repo_root().join("tests/reference/benchling-verifier-cases.py");
    let out = std::process::Command::new(support::venv_python()).arg(&script).output().expect("running the reference");
    assert!(out.status.success(), "{}: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("the reference's cases are JSON");
    let s = start_with_jwks(Setup::Normal, Some(doc["jwks"].clone())).await;
    let cases = doc["cases"].as_array().expect("cases");
    assert!(cases.len() >= 35, "{} cases", cases.len());
    let (mut agree, mut accepted, mut stricter, mut lenient, mut problems) = (0, 0, Vec::new(), Vec::new(), Vec::new());
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let headers: Vec<(&str, String)> =
            c["headers"].as_array().unwrap().iter().map(|h| (h[0].as_str().unwrap(), h[1].as_str().unwrap().to_string())).collect();
        let (status, answer) = s.post_raw("/event", &headers, c["body"].as_str().unwrap().as_bytes().to_vec()).await;
        let service_accepts = match status {
            200 => true,
            400 | 401 => false,
            _ => panic!("case {name}: answered {status} {answer}"),
        };
        accepted += usize::from(service_accepts);
        let reference_accepts = c["reference"] == "accept";
        match (service_accepts, reference_accepts) {
            (a, b) if a == b => agree += 1,
            (false, true) => match STRICTER_BY_DESIGN.iter().find(|(n, _)| *n == name) {
                Some(_) => stricter.push(name),
                None => {
                    problems.push(format!("{name}: the reference accepts, the service refuses ({status} {answer}) and no reason is listed"))
                }
            },
            _ if c["genuine"] == true => lenient.push(name),
            _ => problems.push(format!("{name}: the service accepts what the reference refuses ({}) with no genuine signature", c["why"])),
        }
    }
    for (name, _) in STRICTER_BY_DESIGN {
        if !stricter.contains(name) {
            problems.push(format!("{name} is listed as stricter by design but is not (any more)"));
        }
    }
    println!(
        "differential against benchling-sdk: {} cases, {agree} agree, {} stricter by design, {} lenient with a genuine signature ({})",
        cases.len(),
        stricter.len(),
        lenient.len(),
        lenient.join(", ")
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Each accepted case was queued once (the ids are unique), each refused one never.
    assert_eq!(s.queued().await, accepted);
}
