//! The packaging worker against moto (SQS FIFO, S3) and a fake Benchling (token, entry, export
//! task, download): jobs are sent to the FIFO queue as the webhook handler queues them (group =
//! entry id, dedup = webhook id), and the worker turns each into S3 objects and a packager
//! message. Covers retries, dead-lettering, per-entry order, two workers on one queue with jobs
//! that outlast the visibility timeout, hostile export zips, and a failing delete. Each test owns
//! its moto server.

use crate::{fault_proxy, support};

use serde_json::{json, Value};
use service::worker::{Worker, WorkerConfig};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use support::Moto;

mod fake_benchling {
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use serde_json::{json, Value};
    use std::collections::HashMap;
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    #[derive(Default)]
    pub struct Fake {
        pub base: String,
        /// entry id → how many export calls fail before one succeeds (u32::MAX: always).
        pub fail_exports: HashMap<String, u32>,
        pub export_calls: Vec<String>,
        pub token_calls: usize,
        pub task_polls: HashMap<String, u32>,
        /// entry id → the export zip to serve (default: `data.csv` and `raw/plate.txt`).
        pub zips: HashMap<String, Vec<u8>>,
        /// How long an export task stays RUNNING after it was started (a slow export).
        pub export_time: Duration,
        /// task id → (entry id, when the export started).
        pub tasks: HashMap<String, (String, Instant)>,
    }
    pub type Shared = Arc<Mutex<Fake>>;

    fn authorized(h: &HeaderMap) -> bool {
        h.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer tok-1")
    }

    pub async fn start() -> Shared {
        let shared: Shared = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        shared.lock().unwrap().base = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/api/v2/token", post(token))
            .route("/api/v2/entries/{id}", get(entry))
            .route("/api/v2/exports", post(export))
            .route("/api/v2/tasks/{task}", get(task))
            .route("/download/{task}", get(download))
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        shared
    }

    async fn token(State(s): State<Shared>, h: HeaderMap, body: String) -> Response {
        use base64::Engine as _;
        let want = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("cid:s3cr3t-value"));
        if h.get("authorization").and_then(|v| v.to_str().ok()) != Some(want.as_str()) || body != "grant_type=client_credentials" {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        s.lock().unwrap().token_calls += 1;
        Json(json!({"access_token": "tok-1", "expires_in": 3600, "token_type": "Bearer"})).into_response()
    }

    async fn entry(h: HeaderMap, Path(id): Path<String>) -> Response {
        if !authorized(&h) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        Json(json!({"entry": {"id": id, "displayId": format!("EXP-{id}"), "name": format!("Experiment {id}"), "webURL": format!("https://t.benchling.com/{id}")}})).into_response()
    }

    async fn export(State(s): State<Shared>, h: HeaderMap, Json(body): Json<Value>) -> Response {
        if !authorized(&h) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let id = body["id"].as_str().unwrap_or_default().to_string();
        let mut f = s.lock().unwrap();
        f.export_calls.push(id.clone());
        if let Some(left) = f.fail_exports.get_mut(&id) {
            if *left > 0 {
                *left = left.saturating_sub(1);
                return (StatusCode::INTERNAL_SERVER_ERROR, "export backend down").into_response();
            }
        }
        let n = f.export_calls.len();
        let task = format!("task-{id}-{n}");
        f.tasks.insert(task.clone(), (id, Instant::now()));
        (StatusCode::ACCEPTED, Json(json!({"taskId": task}))).into_response()
    }

    async fn task(State(s): State<Shared>, h: HeaderMap, Path(task): Path<String>) -> Response {
        if !authorized(&h) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let mut f = s.lock().unwrap();
        let slow = f.tasks.get(&task).is_some_and(|(_, started)| started.elapsed() < f.export_time);
        let polls = f.task_polls.entry(task.clone()).or_default();
        *polls += 1;
        if *polls < 2 || slow {
            return Json(json!({"id": task, "status": "RUNNING"})).into_response();
        }
        Json(json!({"id": task, "status": "SUCCEEDED", "response": {"downloadURL": format!("{}/download/{task}", f.base)}})).into_response()
    }

    async fn download(State(s): State<Shared>, Path(task): Path<String>) -> Response {
        let f = s.lock().unwrap();
        if let Some(zip) = f.tasks.get(&task).and_then(|(entry, _)| f.zips.get(entry)) {
            return zip.clone().into_response();
        }
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, body) in [("data.csv", format!("task,{task}\n1,2\n")), ("raw/plate.txt", "A1 0.5\n".to_string())] {
            w.start_file(name, zip::write::SimpleFileOptions::default()).unwrap();
            w.write_all(body.as_bytes()).unwrap();
        }
        w.finish().unwrap().into_inner().into_response()
    }
}

/// moto with the service's FIFO queue (`events.fifo`, with the given visibility timeout, as the
/// stack creates it), a FIFO packager queue, a FIFO dead-letter queue and the user bucket; a
/// fake Benchling; and a fresh export directory.
struct Rig {
    moto: Moto,
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
    queue_url: String,
    packager_url: String,
    dlq_url: String,
    fake: fake_benchling::Shared,
    secret: service::config::BenchlingSecret,
    export_dir: PathBuf,
}

async fn rig(queue_visibility_secs: u32) -> Rig {
    let moto = Moto::start();
    let aws = moto.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&aws).force_path_style(true).build());
    s3.create_bucket().bucket("bucket").send().await.unwrap();
    let fifo = |name: &'static str, visibility: u32| {
        let sqs = sqs.clone();
        async move {
            use aws_sdk_sqs::types::QueueAttributeName as A;
            sqs.create_queue()
                .queue_name(name)
                .attributes(A::FifoQueue, "true")
                .attributes(A::VisibilityTimeout, visibility.to_string())
                .send()
                .await
                .unwrap()
                .queue_url()
                .unwrap()
                .to_string()
        }
    };
    let queue_url = fifo("events.fifo", queue_visibility_secs).await;
    let packager_url = fifo("packager.fifo", 30).await;
    let dlq_url = fifo("events-dlq.fifo", 30).await;
    let secret = service::config::BenchlingSecret {
        tenant: "t".into(),
        client_id: "cid".into(),
        client_secret: "s3cr3t-value".into(),
        app_definition_id: "appdef_1".into(),
        pkg_prefix: "benchling".into(),
        pkg_key: String::new(),
        user_bucket: "bucket".into(),
        log_level: "info".into(),
        enable_webhook_verification: true,
    };
    static DIRS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = DIRS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let export_dir = std::env::temp_dir().join(format!("worker-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&export_dir).unwrap();
    Rig { moto, sqs, s3, queue_url, packager_url, dlq_url, fake: fake_benchling::start().await, secret, export_dir }
}

impl Rig {
    /// The worker's configuration in these tests: no backoff, short polls.
    fn config(&self) -> WorkerConfig {
        WorkerConfig {
            queue_url: self.queue_url.clone(),
            packager_url: self.packager_url.clone(),
            dead_letter_url: Some(self.dlq_url.clone()),
            max_attempts: 3,
            retry_base: Duration::ZERO,
            receive_wait_secs: 0,
            export_poll: Duration::from_millis(10),
            export_timeout: Duration::from_secs(30),
            benchling_base_url: Some(self.fake.lock().unwrap().base.clone()),
            export_dir: self.export_dir.clone(),
            ..WorkerConfig::default()
        }
    }

    /// A worker with its own SQS client (as each ECS task has), pointed at `sqs_endpoint`.
    async fn worker_at(&self, cfg: WorkerConfig, sqs_endpoint: &str) -> Worker {
        let aws = self.moto.sdk_config().await;
        let sqs = aws_sdk_sqs::Client::from_conf(aws_sdk_sqs::config::Builder::from(&aws).endpoint_url(sqs_endpoint).build());
        let base = cfg.benchling_base_url.clone();
        Worker {
            benchling: service::benchling::Benchling::new(reqwest::Client::new(), &self.secret, base.as_deref()),
            cfg,
            sqs,
            s3: self.s3.clone(),
            secret: self.secret.clone(),
        }
    }

    async fn worker(&self, cfg: WorkerConfig) -> Worker {
        self.worker_at(cfg, &self.moto.endpoint).await
    }

    /// Queues a job as the webhook handler does.
    async fn enqueue(&self, entry_id: &str, webhook_id: &str, event_type: &str) {
        let job = json!({"kind": "package", "channel": "events", "event_type": event_type, "entry_id": entry_id,
                         "webhook_id": webhook_id, "received_at": 0, "message": {"resourceId": entry_id, "type": event_type}});
        self.sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_group_id(entry_id)
            .message_deduplication_id(webhook_id)
            .message_body(job.to_string())
            .send()
            .await
            .unwrap();
    }

    /// Messages in the work queue, visible or in flight.
    async fn queued(&self) -> usize {
        support::queued(&self.sqs, &self.queue_url).await
    }

    /// The bytes of an object in the user bucket.
    async fn object(&self, key: &str) -> Vec<u8> {
        self.s3.get_object().bucket("bucket").key(key).send().await.unwrap().body.collect().await.unwrap().into_bytes().to_vec()
    }

    /// Every key in the user bucket.
    async fn keys(&self) -> Vec<String> {
        let listed = self.s3.list_objects_v2().bucket("bucket").send().await.unwrap();
        let mut keys: Vec<String> = listed.contents().iter().filter_map(|o| o.key().map(String::from)).collect();
        keys.sort();
        keys
    }

    /// Files left in the export directory (temporary downloads must never stay).
    fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(&self.export_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    }

    /// Serves `zip` as the export of `entry_id`.
    fn serve_zip(&self, entry_id: &str, zip: Vec<u8>) {
        self.fake.lock().unwrap().zips.insert(entry_id.into(), zip);
    }

    fn export_calls(&self, entry_id: &str) -> usize {
        self.fake.lock().unwrap().export_calls.iter().filter(|e| *e == entry_id).count()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.export_dir);
    }
}

/// Receives and deletes what a queue has visible (up to 10). Deleting matters on FIFO queues:
/// a message left in flight holds back the rest of its group.
async fn drain(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<Value> {
    let out = sqs.receive_message().queue_url(url).max_number_of_messages(10).send().await.unwrap();
    let mut bodies = Vec::new();
    for m in out.messages() {
        bodies.push(serde_json::from_str(m.body().unwrap()).unwrap());
        sqs.delete_message().queue_url(url).receipt_handle(m.receipt_handle().unwrap()).send().await.unwrap();
    }
    bodies
}

/// Drains a queue until it stays empty.
async fn drain_all(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<Value> {
    let mut all = Vec::new();
    loop {
        let got = drain(sqs, url).await;
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
}

/// A zip of (name, bytes) entries, deflated.
fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated).large_file(false);
    for (name, body) in files {
        w.start_file(*name, options).unwrap();
        w.write_all(body).unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_event_becomes_s3_objects_and_a_packager_message() {
    let rig = rig(30).await;
    let worker = rig.worker(rig.config()).await;
    rig.enqueue("etr_w1", "msg_w1", "v2.entry.updated.fields").await;
    assert_eq!(worker.run_once().await.unwrap(), 1);

    assert_eq!(
        rig.keys().await,
        [
            "benchling/EXP-etr_w1/README.md",
            "benchling/EXP-etr_w1/data.csv",
            "benchling/EXP-etr_w1/entry.json",
            "benchling/EXP-etr_w1/raw/plate.txt"
        ]
    );
    let csv = rig.object("benchling/EXP-etr_w1/data.csv").await;
    assert!(String::from_utf8_lossy(&csv).starts_with("task,task-etr_w1-"), "the export's file, unchanged");
    let entry = rig.object("benchling/EXP-etr_w1/entry.json").await;
    assert_eq!(serde_json::from_slice::<Value>(&entry).unwrap()["displayId"], "EXP-etr_w1");

    let msgs = drain(&rig.sqs, &rig.packager_url).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        msgs[0],
        json!({
            "source_prefix": "s3://bucket/benchling/EXP-etr_w1/",
            "registry": "bucket",
            "package_name": "benchling/EXP-etr_w1",
            "metadata_uri": "entry.json",
            "commit_message": "Benchling v2.entry.updated.fields etr_w1",
        })
    );
    assert_eq!(rig.queued().await, 0, "the job is deleted once packaged");
    assert_eq!(rig.leftovers(), Vec::<String>::new(), "the downloaded export is deleted");

    // A second job reuses the cached OAuth token.
    rig.enqueue("etr_w2", "msg_w2", "v2.entry.created").await;
    assert_eq!(worker.run_once().await.unwrap(), 1);
    assert_eq!(rig.fake.lock().unwrap().token_calls, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_export_is_retried_then_dead_lettered() {
    let rig = rig(30).await;
    let worker = rig.worker(rig.config()).await;
    rig.fake.lock().unwrap().fail_exports.insert("etr_bad".into(), u32::MAX);
    rig.enqueue("etr_bad", "msg_bad", "v2.entry.created").await;
    let mut dead = Vec::new();
    for _ in 0..10 {
        worker.run_once().await.unwrap();
        dead = drain(&rig.sqs, &rig.dlq_url).await;
        if !dead.is_empty() {
            break;
        }
    }
    assert_eq!(dead.len(), 1, "the job should reach the dead-letter queue");
    assert_eq!(dead[0]["job"]["entry_id"], "etr_bad");
    assert!(dead[0]["error"].as_str().unwrap().contains("500"), "{}", dead[0]);
    assert_eq!(dead[0]["attempts"], 3, "{}", dead[0]);
    assert_eq!(rig.export_calls("etr_bad"), 3, "max_attempts = 3 tries");
    assert_eq!(rig.queued().await, 0, "dead-lettered jobs leave the work queue");
    assert!(drain(&rig.sqs, &rig.packager_url).await.is_empty(), "nothing packaged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_entrys_events_are_packaged_in_order_even_across_a_retry() {
    let rig = rig(30).await;
    let worker = rig.worker(WorkerConfig { receive_max: 10, ..rig.config() }).await;
    rig.fake.lock().unwrap().fail_exports.insert("etr_o".into(), 1); // the first export fails once
    let types = ["v2.entry.created", "v2.entry.updated.fields", "v2.entry.updated.reviewRecord"];
    for (i, t) in types.iter().enumerate() {
        rig.enqueue("etr_o", &format!("msg_o{i}"), t).await;
    }
    let mut packaged = Vec::new();
    for _ in 0..10 {
        worker.run_once().await.unwrap();
        packaged.extend(drain(&rig.sqs, &rig.packager_url).await);
        if packaged.len() >= 3 {
            break;
        }
    }
    let order: Vec<String> = packaged.iter().map(|m| m["commit_message"].as_str().unwrap().to_string()).collect();
    assert_eq!(order, types.iter().map(|t| format!("Benchling {t} etr_o")).collect::<Vec<_>>());
    assert_eq!(rig.export_calls("etr_o"), 4, "one failed export, then three good ones");
}

/// Two workers (two ECS tasks) on one queue, each job taking longer than the queue's
/// visibility timeout: the heartbeat keeps each message hidden while its job runs, so no
/// message reappears for the other worker. Every event is exported and packaged exactly once,
/// and each entry's events in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_package_slow_jobs_exactly_once_and_in_order() {
    let rig = rig(2).await;
    rig.fake.lock().unwrap().export_time = Duration::from_secs(3);
    let entries = ["etr_a", "etr_b", "etr_c"];
    let types = ["v2.entry.created", "v2.entry.updated.fields", "v2.entry.updated.reviewRecord"];
    for (i, t) in types.iter().enumerate() {
        for e in entries {
            rig.enqueue(e, &format!("msg_{e}_{i}"), t).await;
        }
    }
    let cfg =
        WorkerConfig { visibility: Duration::from_secs(2), receive_wait_secs: 1, export_poll: Duration::from_millis(200), ..rig.config() };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let worker = Arc::new(rig.worker(cfg.clone()).await);
        tasks.push(tokio::spawn(worker.run(stop_rx.clone())));
    }

    let want = entries.len() * types.len();
    let mut packaged = Vec::new();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        packaged.extend(drain(&rig.sqs, &rig.packager_url).await);
        if packaged.len() >= want && rig.queued().await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Longer than a visibility timeout more: a lapsed message would be packaged again now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_tx.send(true).unwrap();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t).await.expect("workers stop").unwrap();
    }
    packaged.extend(drain_all(&rig.sqs, &rig.packager_url).await);

    let mut by_entry: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in &packaged {
        let commit = m["commit_message"].as_str().unwrap();
        let (rest, entry) = commit.rsplit_once(' ').unwrap();
        by_entry.entry(entry.to_string()).or_default().push(rest.trim_start_matches("Benchling ").to_string());
    }
    for e in entries {
        assert_eq!(rig.export_calls(e), types.len(), "{e}: each event exported exactly once");
        assert_eq!(by_entry.get(e).map(Vec::as_slice), Some(&types.map(String::from)[..]), "{e}: each event packaged once, in order");
    }
    assert_eq!(packaged.len(), want);
    assert_eq!(rig.queued().await, 0);
    assert!(drain(&rig.sqs, &rig.dlq_url).await.is_empty());
}

/// A zip bomb: a small export whose file inflates far past the per-file cap. Refused while
/// decompressing (by bytes actually inflated, not the header's claim), dead-lettered on the
/// first attempt with the cap named, nothing uploaded, the download deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zip_bomb_is_dead_lettered_at_once_and_nothing_reaches_s3() {
    let rig = rig(30).await;
    let zeros = vec![0u8; 16 << 20];
    let bomb = zip_of(&[("ok.csv", b"a,b\n"), ("bomb.bin", &zeros)]);
    assert!(bomb.len() < 100_000, "the bomb is small: {} bytes", bomb.len());
    rig.serve_zip("etr_bomb", bomb);
    let mut cfg = rig.config();
    cfg.limits.max_file_bytes = 1 << 20;
    let worker = rig.worker(cfg).await;
    rig.enqueue("etr_bomb", "msg_bomb", "v2.entry.created").await;
    worker.run_once().await.unwrap();

    let dead = drain(&rig.sqs, &rig.dlq_url).await;
    assert_eq!(dead.len(), 1, "dead-lettered on the first attempt");
    let error = dead[0]["error"].as_str().unwrap();
    assert!(error.contains("bomb.bin") && error.contains("EXPORT_MAX_FILE_BYTES") && error.contains("1048576"), "{error}");
    assert_eq!((dead[0]["attempts"].as_u64(), dead[0]["job"]["webhook_id"].as_str()), (Some(1), Some("msg_bomb")), "{}", dead[0]);
    assert_eq!(rig.export_calls("etr_bomb"), 1, "not retried");
    assert_eq!(rig.queued().await, 0);
    assert_eq!(rig.keys().await, Vec::<String>::new(), "nothing of a refused export in S3");
    assert!(drain(&rig.sqs, &rig.packager_url).await.is_empty());
    assert_eq!(rig.leftovers(), Vec::<String>::new(), "the downloaded export is deleted");
}

/// Names that would escape the package prefix (`../`, absolute, backslashes) are refused the
/// same way, even when a harmless file comes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_escaping_the_prefix_is_dead_lettered_at_once() {
    let rig = rig(30).await;
    let hostile = [("etr_up", "data/../../evil.csv"), ("etr_abs", "/etc/passwd"), ("etr_bs", "..\\evil.csv")];
    for (entry, name) in hostile {
        rig.serve_zip(entry, zip_of(&[("ok.csv", b"a,b\n"), (name, b"x")]));
        rig.enqueue(entry, &format!("msg_{entry}"), "v2.entry.created").await;
    }
    let worker = rig.worker(WorkerConfig { receive_max: 10, ..rig.config() }).await;
    worker.run_once().await.unwrap();

    let dead = drain_all(&rig.sqs, &rig.dlq_url).await;
    assert_eq!(dead.len(), hostile.len(), "each dead-lettered on the first attempt: {dead:?}");
    for (entry, name) in hostile {
        let d = dead.iter().find(|d| d["job"]["entry_id"] == entry).unwrap();
        let error = d["error"].as_str().unwrap();
        assert!(error.contains("unsafe file name") && error.contains(name), "{error}");
        assert_eq!(rig.export_calls(entry), 1, "{entry}: not retried");
    }
    assert_eq!(rig.queued().await, 0);
    assert_eq!(rig.keys().await, Vec::<String>::new(), "nothing of a refused export in S3");
    assert_eq!(rig.leftovers(), Vec::<String>::new());
}

/// The other caps: a download over EXPORT_MAX_BYTES, more files than EXPORT_MAX_FILES, and
/// files that each pass EXPORT_MAX_FILE_BYTES but together inflate past
/// EXPORT_MAX_UNZIPPED_BYTES. Each is permanent: dead-lettered at once, nothing in S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_over_the_caps_are_dead_lettered_at_once() {
    let rig = rig(30).await;
    let noise: Vec<u8> = (0..200_000u32).flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()).collect(); // 800 KB, incompressible
    rig.serve_zip("etr_big", zip_of(&[("noise.bin", &noise)]));
    let many: Vec<(String, Vec<u8>)> = (0..20).map(|i| (format!("f{i}.txt"), b"x".to_vec())).collect();
    rig.serve_zip("etr_many", zip_of(&many.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect::<Vec<_>>()));
    let mib = vec![7u8; 1 << 20];
    rig.serve_zip("etr_total", zip_of(&[("a.bin", &mib), ("b.bin", &mib), ("c.bin", &mib)]));
    for entry in ["etr_big", "etr_many", "etr_total"] {
        rig.enqueue(entry, &format!("msg_{entry}"), "v2.entry.created").await;
    }
    let mut cfg = WorkerConfig { receive_max: 10, ..rig.config() };
    cfg.limits.max_download_bytes = 500_000;
    cfg.limits.max_files = 10;
    cfg.limits.max_total_bytes = (5 << 20) / 2;
    let worker = rig.worker(cfg).await;
    worker.run_once().await.unwrap();

    let dead = drain_all(&rig.sqs, &rig.dlq_url).await;
    let reason = |entry: &str| dead.iter().find(|d| d["job"]["entry_id"] == entry).map(|d| d["error"].as_str().unwrap().to_string());
    assert!(reason("etr_big").is_some_and(|r| r.contains("EXPORT_MAX_BYTES")), "{dead:?}");
    assert!(reason("etr_many").is_some_and(|r| r.contains("EXPORT_MAX_FILES")), "{dead:?}");
    assert!(reason("etr_total").is_some_and(|r| r.contains("EXPORT_MAX_UNZIPPED_BYTES")), "{dead:?}");
    assert_eq!(rig.fake.lock().unwrap().export_calls.len(), 3, "none retried");
    assert_eq!(rig.queued().await, 0);
    assert_eq!(rig.keys().await, Vec::<String>::new());
    assert_eq!(rig.leftovers(), Vec::<String>::new());
}

/// A file larger than a part is streamed to S3 as a multipart upload, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_is_uploaded_in_parts() {
    let rig = rig(30).await;
    let big: Vec<u8> = (0..(11u32 << 20) / 4).flat_map(|i| (i / 1000).to_le_bytes()).collect(); // 11 MiB
    rig.serve_zip("etr_large", zip_of(&[("small.txt", b"hello"), ("large.bin", &big)]));
    let worker = rig.worker(WorkerConfig { part_size: 5 << 20, ..rig.config() }).await;
    rig.enqueue("etr_large", "msg_large", "v2.entry.created").await;
    worker.run_once().await.unwrap();

    assert!(drain(&rig.sqs, &rig.dlq_url).await.is_empty());
    assert_eq!(drain(&rig.sqs, &rig.packager_url).await.len(), 1);
    let head = rig.s3.head_object().bucket("bucket").key("benchling/EXP-etr_large/large.bin").send().await.unwrap();
    assert!(head.e_tag().unwrap().trim_matches('"').ends_with("-3"), "three parts: {:?}", head.e_tag());
    assert!(rig.object("benchling/EXP-etr_large/large.bin").await == big, "the file arrives intact");
    assert_eq!(rig.object("benchling/EXP-etr_large/small.txt").await, b"hello");
    assert_eq!(rig.leftovers(), Vec::<String>::new());
}

/// A DeleteMessage that fails (on AWS: a receipt handle gone stale) is logged and the rest of
/// the batch still runs. moto accepts every receipt handle a message ever had, so the failure
/// is injected by the fault proxy between the worker and moto.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delete_does_not_stop_the_rest_of_the_batch() {
    use fault_proxy::{Fault, FaultProxy};
    let rig = rig(30).await;
    let proxy = FaultProxy::start(&rig.moto.endpoint).await;
    proxy.inject("sqs:DeleteMessage", &[Fault::Validation]);
    let worker = rig.worker_at(WorkerConfig { receive_max: 10, ..rig.config() }, &proxy.url).await;
    rig.enqueue("etr_d1", "msg_d1", "v2.entry.created").await;
    rig.enqueue("etr_d2", "msg_d2", "v2.entry.created").await;

    assert_eq!(worker.run_once().await, Ok(2), "the batch is not aborted");
    let packaged = drain(&rig.sqs, &rig.packager_url).await;
    assert_eq!(packaged.len(), 2, "both jobs packaged: {packaged:?}");
    assert_eq!(proxy.count("sqs:DeleteMessage"), 2, "the second job was deleted too");
    assert_eq!(rig.queued().await, 1, "the first job stays queued (it will be packaged again: at least once)");
}
