//! Test harness: one moto server per test, on a free port on 127.0.0.1, killed on drop.
//! moto (and the policy linter parliament) is installed by `tests/emulator/install-moto.sh`
//! into the checkout's `.venv` (or `$MOTO_VENV`); the first test to need it installs it,
//! holding a file lock.
#![allow(dead_code)]

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    // Read when the test runs, not baked in: clones share one target directory (Makefile).
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from);
    dir.parent().unwrap().to_path_buf()
}

fn moto_server() -> PathBuf {
    let root = repo_root();
    let lock = File::create(std::env::temp_dir().join("fargate-reconciler-moto-install.lock")).unwrap();
    lock.lock().unwrap();
    let out = Command::new("bash")
        .arg(root.join("tests/emulator/install-moto.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/emulator/install-moto.sh");
    assert!(out.status.success(), "installing moto failed: see the output above (it needs python3 and PyPI)");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The pinned IAM policy linter `parliament`, installed beside moto by the same script.
pub fn parliament() -> PathBuf {
    moto_server().with_file_name("parliament")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A GET over HTTP/1.0 (the server closes the connection after its answer): the answer's
/// head and body, or None when nothing answers.
fn http_get(port: u16, path: &str, headers: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{headers}\r\n").as_bytes()).ok()?;
    let mut answer = Vec::new();
    let _ = s.take(64 * 1024).read_to_end(&mut answer);
    Some(String::from_utf8_lossy(&answer).into_owned())
}

/// Whether a moto server answers on `port` (its own API, not an AWS call: it counts against
/// no IAM-enforcement budget).
fn is_moto(port: u16) -> bool {
    http_get(port, "/moto-api/data.json", "").is_some_and(|a| a.starts_with("HTTP/1.1 200") && a.contains("Werkzeug"))
}

/// moto 5.2.5 builds a REST service's request router on the first request to it, and two
/// first requests at once can race (one fails with HTTP 500, "'OperationModel' object has no
/// attribute 'http_trait'"; seen in a clean-clone run with API Gateway v2). One request to
/// each REST-protocol service the tests use, one after the other, builds them before any test
/// sends requests in parallel. Unsigned: only for moto without IAM enforcement.
fn warm_up_rest_routers(port: u16) {
    for (scope, path) in [("apigateway", "/v2/apis"), ("scheduler", "/schedule-groups"), ("s3", "/")] {
        let auth = format!(
            "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{scope}/aws4_request, SignedHeaders=host, Signature=0\r\n"
        );
        let answer = http_get(port, path, &auth).unwrap_or_default();
        assert!(answer.starts_with("HTTP/1.1 200"), "moto did not answer GET {path} ({scope}) with 200:\n{answer}");
    }
}

/// specs/prod.yaml's `lock.bucket`, and the lock's key for its stack.
pub const LOCK_BUCKET: &str = "benchling-webhook-ops";
pub const LOCK_KEY: &str = "reconciler/benchling-webhook.lock";

pub struct Moto {
    /// A moto server this test started itself (IAM enforcement), killed on drop.
    child: Option<Child>,
    /// The connection to a forked moto: it exits when this closes.
    _hangup: Option<std::os::unix::net::UnixStream>,
    pub port: u16,
    pub endpoint: String,
}

/// The virtualenv's Python (beside moto_server), for the test-only helper scripts in
/// tests/emulator/.
pub fn venv_python() -> PathBuf {
    moto_server().with_file_name("python")
}

impl Moto {
    /// moto through tests/emulator/moto-aws.py: where moto differs from AWS in a way the
    /// reconciler's waits depend on, it behaves as AWS (see moto_aws.py).
    /// A fresh moto (with tests/emulator/moto_aws.py's behaviours) for one test: a fork of
    /// the fork server (tests/emulator/moto-forkserver.py), which this starts when none runs.
    /// It lives until this value is dropped or the test process ends, however it ends.
    pub fn start() -> Moto {
        let moto = forkserver::fork().unwrap_or_else(|e| panic!("starting moto: {e}"));
        warm_up_rest_routers(moto.port);
        moto.create_lock_bucket();
        moto
    }

    /// A fork of the template `name` (see [`forkserver::from_template`]): the state `build`
    /// made of a fresh moto, built once per run.
    pub fn from_template(name: &str, build: impl FnOnce(&Moto) -> Result<(), String>) -> Result<Moto, String> {
        forkserver::from_template(name, build)
    }

    /// The bucket of specs/prod.yaml's stack lock (the operator creates it once; the stack
    /// does not own it). One unsigned request: under IAM enforcement, one of the free ones.
    pub fn create_lock_bucket(&self) {
        use std::io::{Read, Write};
        let auth =
            "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\n";
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("PUT /{LOCK_BUCKET} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n{auth}\r\n").as_bytes()).unwrap();
        let mut answer = Vec::new();
        let _ = s.take(64 * 1024).read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "creating the lock bucket {LOCK_BUCKET}:\n{answer}");
    }

    /// Deletes the stack lock a killed run left (as its lease expiring would, minutes later
    /// on AWS): the kill tests' next run then starts at once.
    pub async fn expire_lock(&self) {
        let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&self.sdk_config().await).force_path_style(true).build());
        s3.delete_object().bucket(LOCK_BUCKET).key(LOCK_KEY).send().await.unwrap();
    }

    /// moto with IAM enforcement: the first `free` requests are unauthenticated (to create
    /// users, their policies and keys), every later one is authenticated and authorised.
    /// Runs moto through tests/emulator/moto-enforcing.py (see there for the moto bug it fixes).
    pub fn start_enforcing(free: u32) -> Moto {
        let launcher = repo_root().join("tests/emulator/moto-enforcing.py");
        Moto::start_with(venv_python(), &[launcher.to_str().unwrap()], &[("INITIAL_NO_AUTH_ACTION_COUNT", &free.to_string())])
    }

    fn start_with(program: PathBuf, pre_args: &[&str], env: &[(&str, &str)]) -> Moto {
        for _attempt in 0..3 {
            let port = free_port();
            let log = File::create(std::env::temp_dir().join(format!("moto-{port}.log"))).unwrap();
            let mut child = Command::new(&program)
                .args(pre_args)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .envs(env.iter().copied())
                .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start moto_server");
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(30) {
                // Whoever answers must be this moto: another test's server can take the port
                // between the probe and moto's bind (moto then exits, and the next port is tried).
                if is_moto(port) {
                    return Moto { child: Some(child), _hangup: None, port, endpoint: format!("http://127.0.0.1:{port}") };
                }
                if child.try_wait().unwrap().is_some() {
                    break; // port taken between probe and bind: try another
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("moto_server did not start; see moto-*.log in the temp directory");
    }

    /// Environment that points an AWS SDK (or the reconciler) at this emulator.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", "/dev/null".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
        ]
    }

    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .test_credentials()
            .retry_config(aws_config::retry::RetryConfig::disabled())
            // Plain HTTP (the emulator is on this machine): the SDK's default client would load
            // and parse the system's root certificates for every client a test makes.
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .load()
            .await
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Most of the test suite's CPU went to starting moto (~2 s of Python imports per test), so
/// one process imports it once and forks a ready emulator for each test (milliseconds). Its
/// socket's name carries a hash of the emulator's files and the virtualenv, so a change to
/// them starts a new server; an idle server exits after a minute.
mod forkserver {
    use super::{repo_root, venv_python, Moto};
    use std::fs::File;
    use std::hash::{Hash, Hasher};
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    use std::os::unix::process::CommandExt;
    use std::path::PathBuf;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    const IDLE_SECS: &str = "60";

    /// Computed once per test process (it reads the emulator's files).
    fn key() -> &'static str {
        static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        KEY.get_or_init(compute_key)
    }

    fn compute_key() -> String {
        let root = repo_root();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for file in ["moto-forkserver.py", "moto_aws.py", "install-moto.sh"] {
            std::fs::read(root.join("tests/emulator").join(file)).unwrap_or_default().hash(&mut h);
        }
        std::env::var_os("MOTO_VENV").hash(&mut h);
        root.hash(&mut h);
        format!("{:016x}", h.finish())
    }

    fn path(suffix: &str) -> PathBuf {
        std::env::temp_dir().join(format!("fargate-reconciler-moto-{}.{suffix}", key()))
    }

    /// Asks the fork server for a moto (starting the server if none answers); a server that
    /// was just exiting is asked again.
    pub fn fork() -> Result<Moto, String> {
        let socket = path("sock");
        let mut last = String::new();
        for _attempt in 0..3 {
            let conn = match UnixStream::connect(&socket) {
                Ok(conn) => conn,
                Err(_) => {
                    start_server(&socket)?;
                    UnixStream::connect(&socket).map_err(|e| format!("connecting to {}: {e}", socket.display()))?
                }
            };
            match ask(conn) {
                Ok(moto) => return Ok(moto),
                Err(e) => last = e,
            }
        }
        Err(format!("the moto fork server did not answer ({last}); see {}", path("log").display()))
    }

    /// A fork of the template `name`: an emulator holding what `build` made of a fresh one
    /// (see tests/emulator/moto-forkserver.py). The first test to ask in a run builds it,
    /// under a file lock; the others fork it. `name` must change with whatever `build`'s
    /// result depends on (the spec, the reconciler binary, the tests). A template that could
    /// not be built is not tried again by every waiting test: they are told at once.
    pub fn from_template(name: &str, build: impl FnOnce(&Moto) -> Result<(), String>) -> Result<Moto, String> {
        let short = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            name.hash(&mut h);
            format!("t{:08x}", h.finish() as u32)
        };
        // Short: a Unix socket's path is at most 107 bytes.
        let socket = path(&format!("{short}.sock"));
        // For this run only (nextest names each run; `cargo test` runs a binary's tests in one
        // process): a failure that passes by itself is tried again by the next run.
        let run = std::env::var("NEXTEST_RUN_ID").unwrap_or_else(|_| std::process::id().to_string());
        let failed = path(&format!("{short}.{run}.failed"));
        let forked = || UnixStream::connect(&socket).map_err(|e| e.to_string()).and_then(ask);
        if let Ok(moto) = forked() {
            return Ok(moto);
        }
        let lock = File::create(path("templates.lock")).map_err(|e| e.to_string())?;
        lock.lock().map_err(|e| e.to_string())?;
        if let Ok(moto) = forked() {
            return Ok(moto); // another test built it meanwhile
        }
        if let Ok(why) = std::fs::read_to_string(&failed) {
            return Err(format!("building it failed in another test: {why}"));
        }
        let built = freeze(&socket, build);
        if let Err(why) = &built {
            let _ = std::fs::write(&failed, why);
        }
        drop(lock);
        built?;
        forked()
    }

    /// A fresh emulator, made into the template at `socket` once `build` is done with it.
    fn freeze(socket: &std::path::Path, build: impl FnOnce(&Moto) -> Result<(), String>) -> Result<(), String> {
        let moto = Moto::start();
        build(&moto)?;
        let mut conn = moto._hangup.as_ref().ok_or("not a forked emulator")?;
        conn.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
        conn.write_all(format!("freeze {}\n", socket.display()).as_bytes()).map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line).map_err(|e| format!("waiting for the template to freeze: {e}"))?;
        match line.trim() {
            "frozen" => Ok(()),
            other => Err(format!("the template answered {other:?} to freeze")),
        }
    }

    fn ask(mut conn: UnixStream) -> Result<Moto, String> {
        conn.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
        conn.write_all(b"start\n").map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(&conn).read_line(&mut line).map_err(|e| e.to_string())?;
        let port: u16 = line
            .strip_prefix("port ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("unexpected answer {line:?}"))?;
        conn.set_read_timeout(None).map_err(|e| e.to_string())?;
        Ok(Moto { child: None, _hangup: Some(conn), port, endpoint: format!("http://127.0.0.1:{port}") })
    }

    /// Starts the server (one test at a time, under a file lock), detached from this test's
    /// process group and output, and waits until its socket accepts.
    fn start_server(socket: &PathBuf) -> Result<(), String> {
        let lock = File::create(path("lock")).map_err(|e| e.to_string())?;
        lock.lock().map_err(|e| e.to_string())?;
        if UnixStream::connect(socket).is_ok() {
            return Ok(()); // another test started it meanwhile
        }
        let python = venv_python();
        let log = File::create(path("log")).map_err(|e| e.to_string())?;
        let mut command = Command::new(python);
        command
            .arg(repo_root().join("tests/emulator/moto-forkserver.py"))
            .arg(socket)
            .arg(IDLE_SECS)
            .env_clear()
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .process_group(0);
        for var in ["PATH", "HOME", "TMPDIR", "LANG"] {
            if let Some(value) = std::env::var_os(var) {
                command.env(var, value);
            }
        }
        let mut server = command.spawn().map_err(|e| format!("starting the moto fork server: {e}"))?;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if UnixStream::connect(socket).is_ok() {
                return Ok(()); // left running for the next tests; it exits when idle
            }
            if let Ok(Some(status)) = server.try_wait() {
                let log = std::fs::read_to_string(path("log")).unwrap_or_default();
                return Err(format!("the moto fork server exited ({status}):\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = server.kill();
        Err(format!("the moto fork server did not listen within 60 s; see {}", path("log").display()))
    }
}

/// Messages in an SQS queue, visible or in flight.
pub async fn queued(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> usize {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let a = out.attributes().unwrap();
    a[&A::ApproximateNumberOfMessages].parse::<usize>().unwrap() + a[&A::ApproximateNumberOfMessagesNotVisible].parse::<usize>().unwrap()
}

/// Result of one CLI run, with both streams for assertions and failure messages.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}
