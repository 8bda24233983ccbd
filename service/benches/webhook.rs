//! `make bench-service`: signed `/event` requests, all distinct and freshly signed, at 100
//! concurrent connections, against the real `benchling-webhook` binary with verification ON.
//!
//! The queue must not be the bottleneck (moto's SQS slows down as a queue fills), so this
//! benchmark provides a minimal SQS-compatible sink: JSON protocol `SendMessage` and
//! `SendMessageBatch` with FIFO rules (group id required, deduplication by id, 1 MiB limit, correct MD5 of the body). The
//! same local server answers the service's one Secrets Manager call and serves the JWKS.
//! Everything binds to 127.0.0.1; the load stops after BENCH_SECONDS (default 20).
//!
//! Reports requests/s, p50/p99 ack latency, errors, SQS calls and events per call, the
//! service's peak RSS and CPU time per request (from /proc), and verification time per
//! signature.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use md5::{Digest, Md5};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CONNECTIONS: usize = 100;
const MAX_BODY: usize = 1024 * 1024;

#[derive(Default)]
struct Sink {
    dedup: Mutex<HashSet<String>>,
    /// SendMessage and SendMessageBatch calls.
    calls: AtomicUsize,
    accepted: AtomicUsize,
    duplicates: AtomicUsize,
    secret: String,
    jwks: Value,
}

impl Sink {
    /// One message (a SendMessage request or a batch entry) under FIFO rules.
    fn accept(&self, req: &Value, fifo: bool) -> Result<Value, (&'static str, String)> {
        let Some(msg) = req["MessageBody"].as_str() else { return Err(("MissingParameter", "MessageBody is required".into())) };
        if msg.len() > MAX_BODY {
            return Err(("InvalidParameterValue", "message longer than 1 MiB".into()));
        }
        if fifo && req["MessageGroupId"].as_str().is_none() {
            return Err(("MissingParameter", "MessageGroupId is required for FIFO queues".into()));
        }
        let Some(dedup) = req["MessageDeduplicationId"].as_str() else {
            return Err(("InvalidParameterValue", "MessageDeduplicationId is required (no content-based deduplication)".into()));
        };
        if self.dedup.lock().unwrap().insert(dedup.to_string()) {
            self.accepted.fetch_add(1, Ordering::Relaxed);
        } else {
            self.duplicates.fetch_add(1, Ordering::Relaxed); // accepted by SQS, not enqueued twice
        }
        let md5: String = Md5::digest(msg.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        let n = self.accepted.load(Ordering::Relaxed);
        Ok(json!({"MD5OfMessageBody": md5, "MessageId": format!("00000000-0000-4000-8000-{n:012}"), "SequenceNumber": format!("{n:020}")}))
    }
}

/// One pre-signed request: message id, timestamp, signature header, body.
type Signed = (String, String, String, Vec<u8>);

fn sqs_error(kind: &str, msg: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "application/x-amz-json-1.0")],
        json!({"__type": format!("com.amazonaws.sqs#{kind}"), "message": msg}).to_string(),
    )
        .into_response()
}

async fn sink(axum::extract::State(s): axum::extract::State<Arc<Sink>>, h: HeaderMap, body: axum::body::Bytes) -> Response {
    let target = h.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match target {
        "AmazonSQS.SendMessage" => {
            s.calls.fetch_add(1, Ordering::Relaxed);
            let fifo = req["QueueUrl"].as_str().unwrap_or_default().ends_with(".fifo");
            match s.accept(&req, fifo) {
                Ok(out) => ([("content-type", "application/x-amz-json-1.0")], out.to_string()).into_response(),
                Err((kind, msg)) => sqs_error(kind, &msg),
            }
        }
        "AmazonSQS.SendMessageBatch" => {
            s.calls.fetch_add(1, Ordering::Relaxed);
            let fifo = req["QueueUrl"].as_str().unwrap_or_default().ends_with(".fifo");
            let entries = req["Entries"].as_array().cloned().unwrap_or_default();
            if entries.is_empty() || entries.len() > 10 {
                return sqs_error("TooManyEntriesInBatchRequest", "a batch has 1 to 10 entries");
            }
            let total: usize = entries.iter().map(|e| e["MessageBody"].as_str().map_or(0, str::len)).sum();
            if total > MAX_BODY {
                return sqs_error("BatchRequestTooLong", "the batch's bodies exceed 1 MiB");
            }
            let (mut ok, mut failed) = (Vec::new(), Vec::new());
            for e in &entries {
                let id = e["Id"].clone();
                match s.accept(e, fifo) {
                    Ok(mut out) => {
                        out["Id"] = id;
                        ok.push(out)
                    }
                    Err((code, msg)) => failed.push(json!({"Id": id, "SenderFault": true, "Code": code, "Message": msg})),
                }
            }
            let out = json!({"Successful": ok, "Failed": failed});
            ([("content-type", "application/x-amz-json-1.0")], out.to_string()).into_response()
        }
        "secretsmanager.GetSecretValue" => {
            let out = json!({"ARN": "arn:aws:secretsmanager:us-east-1:000000000000:secret:bench", "Name": "bench", "SecretString": s.secret, "VersionId": "v1"});
            ([("content-type", "application/x-amz-json-1.1")], out.to_string()).into_response()
        }
        other => sqs_error("UnsupportedOperation", &format!("the benchmark sink does not implement {other}")),
    }
}

struct Proc {
    pid: u32,
}
impl Proc {
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let f: Vec<&str> = after.split_whitespace().collect();
        f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0) + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
    }
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
}

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run(seconds));
}

async fn run(seconds: u64) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
    let p = key.public_key().as_ref().to_vec();
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "bench", "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..65])}]});

    // Verification cost alone, in this process, with the service's own verifier.
    let vkey =
        service::verify::VerifyingKey::from_jwk("bench", jwks["keys"][0]["x"].as_str().unwrap(), jwks["keys"][0]["y"].as_str().unwrap())
            .unwrap();
    let body = br#"{"message":{"type":"v2.entry.updated.fields","resourceId":"etr_1"}}"#;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let sig = format!(
        "v1bder,{}",
        STANDARD.encode(key.sign(&rng, &[b"m.".as_slice(), now.to_string().as_bytes(), b".", body].concat()).unwrap().as_ref())
    );
    let ts = now.to_string();
    let h = service::verify::SignedHeaders { id: "m", timestamp: &ts, signature: &sig };
    let n_verify = 5_000;
    let t = Instant::now();
    for _ in 0..n_verify {
        assert!(service::verify::verify(&h, body, std::slice::from_ref(&vkey), now).is_ok());
    }
    let verify_us = t.elapsed().as_secs_f64() * 1e6 / n_verify as f64;

    let secret =
        json!({"tenant": "bench", "client_id": "c", "client_secret": "s", "app_definition_id": "appdef_bench", "user_bucket": "b"})
            .to_string();
    let sink_state = Arc::new(Sink { secret, jwks: jwks.clone(), ..Default::default() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_url = format!("http://{}", listener.local_addr().unwrap());
    let jwks_doc = sink_state.jwks.clone();
    let app = axum::Router::new()
        .route("/", axum::routing::post(sink))
        .route("/jwks", axum::routing::get(move || async move { axum::Json(jwks_doc) }))
        .layer(axum::extract::DefaultBodyLimit::max(2 * MAX_BODY))
        .with_state(sink_state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_benchling-webhook"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", port.to_string())
        .env("BIND_ADDR", "127.0.0.1")
        .env("RUST_LOG", "warn")
        .envs(["MALLOC_ARENA_MAX", "SQS_MAX_IN_FLIGHT"].into_iter().filter_map(|k| std::env::var(k).ok().map(|v| (k, v))))
        .env("AWS_ENDPOINT_URL", &sink_url)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("BENCHLING_SECRET", "bench")
        .env("QUEUE_URL", format!("{sink_url}/000000000000/events.fifo"))
        .env("BENCHLING_JWKS_URL", format!("{sink_url}/jwks"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start benchling-webhook");
    let proc_ = Proc { pid: child.id() };
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().pool_max_idle_per_host(CONNECTIONS).build().unwrap();
    let mut ready = false;
    for _ in 0..200 {
        if client.get(format!("{base}/health/ready")).send().await.is_ok_and(|r| r.status().is_success()) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the service did not become ready");
    let idle_rss = proc_.peak_rss_kib();

    // Pre-sign distinct requests (fresh timestamps: all within the 5-minute window).
    let budget = 30_000 * seconds as usize;
    eprintln!("signing {budget} requests ...");
    let requests: Arc<Vec<Signed>> = Arc::new(
        (0..budget)
            .map(|i| {
                let id = format!("msg_{i}");
                let ts = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs().to_string();
                let body = json!({"version": "0", "channel": "events", "message": {"id": format!("evt_{i}"), "type": "v2.entry.updated.fields", "resourceId": format!("etr_{}", i % 1000), "updates": ["fields.x"]}}).to_string().into_bytes();
                let msg = [id.as_bytes(), b".", ts.as_bytes(), b".", &body].concat();
                let sig = format!("v1bder,{}", STANDARD.encode(key.sign(&rng, &msg).unwrap().as_ref()));
                (id, ts, sig, body)
            })
            .collect(),
    );

    eprintln!("running {CONNECTIONS} connections for {seconds}s against {base}/event ...");
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let cpu_before = proc_.cpu_ticks();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (client, requests, next, errors, url) =
            (client.clone(), requests.clone(), next.clone(), errors.clone(), format!("{base}/event"));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((id, ts, sig, body)) = requests.get(i) else { break };
                let t = Instant::now();
                let r = client
                    .post(&url)
                    .header("webhook-id", id)
                    .header("webhook-timestamp", ts)
                    .header("webhook-signature", sig)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let ok = match r {
                    Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    lat.push(t.elapsed().as_micros() as u32);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    let mut lat: Vec<u32> = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_ms = (proc_.cpu_ticks() - cpu_before) as f64 * 1000.0 / clock_ticks_per_sec() as f64;
    let peak_rss = proc_.peak_rss_kib();
    let _ = std::process::Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    lat.sort_unstable();
    let ok = lat.len();
    let errs = errors.load(Ordering::Relaxed);
    let exhausted = next.load(Ordering::Relaxed) >= budget;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);

    println!("| metric | value |");
    println!("|---|---|");
    println!("| machine | {cores} cores, {cpu}; load generator, SQS sink and service on the same machine |");
    println!("| duration, connections | {elapsed:.1} s, {CONNECTIONS} |");
    println!("| requests acknowledged (200) | {ok} |");
    println!("| requests/s | {:.0} |", ok as f64 / elapsed);
    println!(
        "| ack latency p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0)
    );
    println!("| errors (non-200 or transport) | {errs} |");
    println!(
        "| messages in the SQS sink | {} (duplicates refused: {}) |",
        sink_state.accepted.load(Ordering::Relaxed),
        sink_state.duplicates.load(Ordering::Relaxed)
    );
    let calls = sink_state.calls.load(Ordering::Relaxed);
    println!("| SQS calls (events per call) | {calls} ({:.1}) |", sink_state.accepted.load(Ordering::Relaxed) as f64 / calls.max(1) as f64);
    println!("| service peak RSS | {:.1} MiB (idle after start-up: {:.1} MiB) |", peak_rss as f64 / 1024.0, idle_rss as f64 / 1024.0);
    println!("| service CPU per request | {:.3} ms |", cpu_ms / ok.max(1) as f64);
    println!("| signature verification | {verify_us:.1} µs |");
    if exhausted {
        println!("\nnote: all {budget} pre-signed requests were used before the time was up; raise the budget in benches/webhook.rs");
    }
}
