//! The container image: built FROM scratch by `image/build.sh` (what `make image` runs) and
//! run with podman the way the task definition runs it: user 1000, a read-only root
//! filesystem, and the binary's own `healthcheck` subcommand as the health check.
//!
//! Each test builds its own image, under a tag of its own, from the *debug* binary this test
//! build has just produced: same script, same `service/Containerfile` as `make image`, which
//! uses the release binary (a cold release build would add some 20 minutes to CI). The image
//! and the container are removed at the end, also when an assertion fails.
//!
//! podman and runc are installed by `image/install-podman.sh` when missing. Where that is
//! impossible (not root, no apt-get, no Debian mirror) the tests print an `IMAGE TEST SKIPPED`
//! line and pass (`.config/nextest.toml` shows this binary's output); where podman is present,
//! a wrong image fails them.

use crate::{signer, support};

use serde_json::{json, Value};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::{repo_root, Moto};

const BINARY: &str = "/benchling-webhook";

/// Runs podman; panics with both streams unless it exits 0.
fn podman(args: &[&str]) -> String {
    let out = podman_output(args);
    assert!(out.status.success(), "podman {} failed: {}", args.join(" "), describe(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn podman_output(args: &[&str]) -> Output {
    Command::new("podman").args(args).output().expect("run podman")
}

fn describe(out: &Output) -> String {
    format!("{}\n--- stdout\n{}--- stderr\n{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// True when podman and runc are (now) installed. False, after a loud SKIPPED line, where
/// they cannot be installed.
fn podman_available(test: &str) -> bool {
    let out = Command::new("bash").arg(repo_root().join("image/install-podman.sh")).output().expect("run image/install-podman.sh");
    match out.status.code() {
        Some(0) => true,
        Some(2) => {
            let why = String::from_utf8_lossy(&out.stderr);
            let line = format!("IMAGE TEST SKIPPED ({test}): podman is not installable here, the image was not tested: {}", why.trim());
            eprintln!("{line}");
            false
        }
        _ => panic!("image/install-podman.sh failed: {}", describe(&out)),
    }
}

/// An image built by image/build.sh from the debug binary; removed on drop.
struct Image {
    tag: String,
}

impl Image {
    fn build(test: &str) -> Image {
        Self::build_from(test, std::path::Path::new(env!("CARGO_BIN_EXE_benchling-webhook")), "service/Containerfile", "benchling-webhook")
    }

    /// `binary` packed with `containerfile` (relative to the repository) by image/build.sh.
    fn build_from(test: &str, binary: &std::path::Path, containerfile: &str, name: &str) -> Image {
        assert!(binary.exists(), "{} is not built (cargo build --workspace --tests builds it)", binary.display());
        let tag = format!("localhost/{name}-test:{test}-{}", std::process::id());
        let image = Image { tag };
        let out = Command::new("bash")
            .arg(repo_root().join("image/build.sh"))
            .arg(binary)
            .arg(repo_root().join(containerfile))
            .arg(&image.tag)
            .output()
            .expect("run image/build.sh");
        assert!(out.status.success(), "image/build.sh failed: {}", describe(&out));
        image
    }

    /// A field of `podman image inspect` (`Config`, `HealthCheck`), as JSON.
    fn inspect(&self, field: &str) -> Value {
        let text = podman(&["image", "inspect", "--format", &format!("{{{{json .{field}}}}}"), &self.tag]);
        serde_json::from_str(&text).unwrap()
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = podman_output(&["rmi", "--force", &self.tag]);
    }
}

/// `podman run` options that run a container as ECS runs the task: read-only root (see the
/// README's "The container image" for why runc, cgroupfs and these limits).
const RUN_AS_ECS: [&str; 8] =
    ["--runtime", "runc", "--cgroup-manager=cgroupfs", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--read-only"];

/// A detached container, run as ECS runs the task (see the README's "The container image" for
/// why runc, cgroupfs and these limits); removed on drop.
struct Container {
    name: String,
}

impl Container {
    fn run(image: &Image, test: &str, options: &[&str], command: &[&str]) -> Container {
        let name = format!("benchling-webhook-test-{test}-{}", std::process::id());
        let container = Container { name };
        let mut args = vec!["run", "--detach", "--name", &container.name];
        args.extend_from_slice(&RUN_AS_ECS);
        args.extend_from_slice(options);
        args.push(&image.tag);
        args.extend_from_slice(command);
        podman(&args);
        container
    }

    fn logs(&self) -> String {
        describe(&podman_output(&["logs", &self.name]))
    }

    /// Exit status of a command run inside the container.
    fn exec(&self, command: &[&str]) -> Option<i32> {
        let mut args = vec!["exec", &self.name];
        args.extend_from_slice(command);
        podman_output(&args).status.code()
    }

    /// Exit status of the image's own HEALTHCHECK, run once (0 healthy, 1 unhealthy).
    fn healthcheck(&self) -> Option<i32> {
        podman_output(&["healthcheck", "run", &self.name]).status.code()
    }

    /// The host's view of the container's first process.
    fn proc_file(&self, file: &str) -> String {
        let pid = podman(&["inspect", "--format", "{{.State.Pid}}", &self.name]);
        std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap()
    }

    /// The uid and gid the service runs as, as the container sees them (real, effective,
    /// saved and filesystem ids, mapped back through the container's user namespace).
    fn ids(&self) -> (Vec<u32>, Vec<u32>) {
        let status = self.proc_file("status");
        let ids = |key: &str, map: &str| -> Vec<u32> {
            let line = status.lines().find(|l| l.starts_with(key)).unwrap();
            line.split_whitespace().skip(1).map(|id| inside(&self.proc_file(map), id.parse().unwrap())).collect()
        };
        (ids("Uid:", "uid_map"), ids("Gid:", "gid_map"))
    }

    /// Mount options of a mount point, from the container's mount table.
    fn mount_options(&self, mount_point: &str) -> Vec<String> {
        let table = self.proc_file("mountinfo");
        let line =
            table.lines().find(|l| l.split(' ').nth(4) == Some(mount_point)).unwrap_or_else(|| panic!("no {mount_point} in\n{table}"));
        line.split(' ').nth(5).unwrap().split(',').map(str::to_string).collect()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman_output(&["rm", "--force", "--time", "0", &self.name]);
    }
}

/// Maps a host id to the id inside a user namespace (`/proc/PID/uid_map` lines: inside,
/// outside, count). Rootful podman maps ids one to one.
fn inside(map: &str, host: u32) -> u32 {
    map.lines()
        .filter_map(|l| {
            let f: Vec<u64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
            let (inner, outer, count) = (f[0], f[1], f[2]);
            (outer..outer + count).contains(&u64::from(host)).then(|| (u64::from(host) - outer + inner) as u32)
        })
        .next()
        .unwrap_or_else(|| panic!("host id {host} is not mapped in {map}"))
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("image-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET `url` until it answers `status`; fails with the container's logs if it exits or 30 s pass.
async fn wait_for(container: &Container, url: &str, status: u16) {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut last = String::from("no answer");
    while started.elapsed() < Duration::from_secs(30) {
        match http.get(url).timeout(Duration::from_secs(2)).send().await {
            Ok(r) if r.status().as_u16() == status => return,
            Ok(r) => last = format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => last = e.to_string(),
        }
        if podman(&["inspect", "--format", "{{.State.Running}}", &container.name]) != "true" {
            panic!("the container exited before {url} answered {status}; logs: {}", container.logs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{url} never answered {status} (last: {last}); container logs: {}", container.logs());
}

/// Environment that keeps the AWS SDK in the container off the network: a region (else it
/// asks the instance metadata service), static credentials, and an endpoint on loopback.
fn aws_env(endpoint: &str) -> Vec<String> {
    [
        format!("AWS_ENDPOINT_URL={endpoint}"),
        "AWS_REGION=us-east-1".into(),
        "AWS_ACCESS_KEY_ID=testing".into(),
        "AWS_SECRET_ACCESS_KEY=testing".into(),
        "AWS_EC2_METADATA_DISABLED=true".into(),
    ]
    .into_iter()
    .flat_map(|e| ["--env".to_string(), e])
    .collect()
}

/// Without BENCHLING_SECRET the service starts degraded: alive (200) but not ready (503), so
/// the health check fails. The image's own USER keeps it off root (no `--user` here), the
/// root filesystem is read-only, and SIGTERM to the binary as PID 1 stops it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_unprivileged_on_a_read_only_root_and_reports_degraded_health() {
    if !podman_available("degraded") {
        return;
    }
    let image = Image::build("degraded");
    let config = image.inspect("Config");
    assert_eq!(config["User"], "1000:1000", "{config}");
    assert_eq!(config["Entrypoint"], json!([BINARY]), "{config}");
    assert_eq!(config["Cmd"], json!(["serve"]), "{config}");
    assert!(config["Env"].as_array().unwrap().contains(&json!("PORT=8080")), "{config}");
    // The task definition's health check (reconciler/src/desired/compute.rs) is the same command.
    let health = image.inspect("HealthCheck");
    assert_eq!(health["Test"], json!(["CMD", BINARY, "healthcheck"]), "{health}");

    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    let mut options = vec!["--publish".to_string(), publish];
    options.extend(aws_env("http://127.0.0.1:9"));
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    let container = Container::run(&image, "degraded", &options, &[]);

    let base = format!("http://127.0.0.1:{port}");
    wait_for(&container, &format!("{base}/health/live"), 200).await;
    wait_for(&container, &format!("{base}/health/ready"), 503).await;

    assert_eq!(container.ids(), (vec![1000; 4], vec![1000; 4]), "the service runs as 1000:1000");
    let inspected = podman(&["inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", &container.name]);
    assert_eq!(inspected, "true");
    assert!(container.mount_options("/").contains(&"ro".to_string()), "root mounted read-only: {:?}", container.mount_options("/"));

    assert_eq!(container.exec(&[BINARY, "healthcheck"]), Some(1), "healthcheck while degraded; logs: {}", container.logs());
    assert_eq!(container.healthcheck(), Some(1), "the image's HEALTHCHECK while degraded");

    let ca = tempdir();
    podman(&["cp", &format!("{}:/etc/ssl/certs/ca-certificates.crt", container.name), ca.to_str().unwrap()]);
    let bundle = std::fs::read_to_string(ca.join("ca-certificates.crt")).unwrap();
    assert!(bundle.matches("BEGIN CERTIFICATE").count() > 100, "the image holds the CA bundle");
    let _ = std::fs::remove_dir_all(&ca);

    let stopping = Instant::now();
    podman(&["stop", "--time", "10", &container.name]);
    assert!(stopping.elapsed() < Duration::from_secs(8), "SIGTERM stopped the service in {:?}", stopping.elapsed());
    let code = podman(&["inspect", "--format", "{{.State.ExitCode}}", &container.name]);
    assert_eq!(code, "0", "exit status after SIGTERM; logs: {}", container.logs());
}

/// With its secret in (emulated) Secrets Manager and its signing keys served locally, the
/// service in the image becomes ready: the health check passes, and a signed webhook is
/// verified and lands in (emulated) SQS. Run as the task definition runs it (`--user 1000`).
/// Host networking lets the container reach moto and the JWKS on 127.0.0.1; the service
/// listens on 127.0.0.1 only (BIND_ADDR).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_becomes_ready_and_acknowledges_a_signed_webhook() {
    if !podman_available("ready") {
        return;
    }
    let image = Image::build("ready");
    let moto = Moto::start();
    let aws = moto.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let queue = sqs
        .create_queue()
        .queue_name("events.fifo")
        .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .unwrap();
    let queue_url = queue.queue_url().unwrap().to_string();
    let secret = json!({"tenant": "t", "client_id": "cid", "client_secret": "s3cr3t-value", "app_definition_id": "appdef_1",
                        "user_bucket": "bucket", "pkg_prefix": "benchling"});
    aws_sdk_secretsmanager::Client::new(&aws).create_secret().name("benchling").secret_string(secret.to_string()).send().await.unwrap();
    let signer = signer::Signer::new();
    let jwks = signer::serve_jwks(signer.jwks()).await;

    let port = free_port();
    let mut options: Vec<String> = ["--network", "host", "--user", "1000"].map(String::from).to_vec();
    options.extend(aws_env(&moto.endpoint));
    for env in [
        format!("PORT={port}"),
        "BIND_ADDR=127.0.0.1".into(),
        "BENCHLING_SECRET=benchling".into(),
        format!("QUEUE_URL={queue_url}"),
        format!("BENCHLING_JWKS_URL={}", jwks.url),
    ] {
        options.extend(["--env".to_string(), env]);
    }
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    let container = Container::run(&image, "ready", &options, &[]);

    let base = format!("http://127.0.0.1:{port}");
    wait_for(&container, &format!("{base}/health/ready"), 200).await;
    assert_eq!(container.exec(&[BINARY, "healthcheck"]), Some(0), "healthcheck once ready; logs: {}", container.logs());
    assert_eq!(container.healthcheck(), Some(0), "the image's HEALTHCHECK once ready");

    let body = json!({"version": "0", "baseURL": "https://t.benchling.com", "tenantId": "ten_1", "app": {"id": "app_1"},
                      "appDefinition": {"id": "appdef_1", "versionNumber": "1"}, "channel": "events",
                      "message": {"id": "evt_1", "type": "v2.entry.created", "resourceId": "etr_1",
                                  "createdAt": "2026-11-24T12:00:00Z", "deprecated": false}})
    .to_string();
    let ts = signer::now();
    let response = reqwest::Client::new()
        .post(format!("{base}/event"))
        .header("webhook-id", "msg_image_1")
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signer.sign("msg_image_1", ts, body.as_bytes()))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "signed event; logs: {}", container.logs());
    let received = sqs.receive_message().queue_url(&queue_url).max_number_of_messages(10).send().await.unwrap();
    assert_eq!(received.messages().len(), 1, "the acknowledged event is in the queue");
}

/// The reconciler's image (what the `drift_correction` task runs): user 1000, and it runs on a
/// read-only root with no network to validate a spec and print the policy it needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_image_runs_unprivileged_on_a_read_only_root() {
    const TEST: &str = "reconciler";
    if !podman_available(TEST) {
        return;
    }
    // The workspace's debug build puts both binaries in the same directory.
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_benchling-webhook")).with_file_name("reconciler");
    let image = Image::build_from(TEST, &binary, "reconciler/Containerfile", "reconciler");
    let config = image.inspect("Config");
    assert_eq!(config["User"], "1000:1000", "{config}");
    assert_eq!(config["Entrypoint"], json!(["/reconciler"]), "{config}");
    let specs = format!("{}:/specs:ro", repo_root().join("specs").display());
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(&RUN_AS_ECS);
        all.extend_from_slice(&["--network", "none", "--volume", &specs, &image.tag]);
        all.extend_from_slice(args);
        podman_output(&all)
    };
    let out = run(&["validate", "/specs/prod.yaml"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid (stack `benchling-webhook`"), "{}", describe(&out));
    let out = run(&["policy", "/specs/prod.yaml", "--for", "plan"]);
    assert!(out.status.success(), "{}", describe(&out));
    let policy: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&out)));
    assert_eq!(policy["Version"], "2012-10-17");
    let out = run(&["validate", "/specs/missing.yaml"]);
    assert_eq!(out.status.code(), Some(1), "a missing spec is an error: {}", describe(&out));
}

/// `reconciler/Dockerfile` and `reconciler/Containerfile` build the same runtime image.
#[test]
fn the_reconciler_dockerfile_builds_what_make_image_builds() {
    same_runtime_stage("reconciler/Dockerfile", "reconciler/Containerfile", "bash image/rootfs.sh target/release/reconciler /rootfs");
}

fn same_runtime_stage(dockerfile: &str, containerfile: &str, staging: &str) {
    let instructions = |file: &str| -> Vec<String> {
        let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
        let lines: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect();
        let last_from = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
        lines[last_from..].to_vec()
    };
    let docker = instructions(dockerfile);
    let podman = instructions(containerfile);
    assert_eq!(docker[..2], ["FROM scratch", "COPY --from=build /rootfs/ /"]);
    assert_eq!(podman[..2], ["FROM scratch", "COPY rootfs/ /"]);
    assert_eq!(docker[2..], podman[2..], "the runtime stages differ");
    let text = std::fs::read_to_string(repo_root().join(dockerfile)).unwrap();
    assert!(text.contains(staging), "the build stage stages the root filesystem");
}

/// `service/Dockerfile` (for a normal Docker) and `service/Containerfile` (`make image`) build
/// the same image: both runtime stages are FROM scratch with the root filesystem
/// image/rootfs.sh stages, and the same lines after that COPY. Needs no podman.
#[test]
fn the_dockerfile_builds_what_make_image_builds() {
    same_runtime_stage("service/Dockerfile", "service/Containerfile", "bash image/rootfs.sh target/release/benchling-webhook /rootfs");
}
