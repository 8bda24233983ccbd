//! `make bench`: what the reconciler's commands cost in API calls and round trips, against
//! moto behind the fault proxy with a fixed latency per call (AWS answers in tens of
//! milliseconds; moto in one or two). Not a test: it prints one table and writes
//! `bench/results.json`; the README shows the latest table. Everything runs on 127.0.0.1 and
//! stops by itself.
//!
//! Scenarios (specs/prod.yaml, the whole stack): a no-op plan; an apply from zero; an
//! image-only change; a destroy; an apply from zero and a destroy under AWS's behaviour
//! (pending states, propagation windows, draining: `aws_model`), and the same with every
//! window four times as long (`aws_model_x4`), against the critical path each reports (the
//! chain of resource steps that set its wall time); and growth: five stacks (the spec under five names) planned
//! by five processes at once against one account, API Gateway held to 10 requests a second
//! (its control plane's documented account rate). For each: the calls by service and action, the wall time
//! (process start included), and wall ÷ latency, the number of sequential round trips it
//! amounts to; process start to the first AWS call; the process's peak resident memory
//! (through `/usr/bin/time` when the machine has it).
//!
//!   BENCH_LATENCY_MS=50 (default)  every answer leaves the proxy this long after its call
//!                                  arrived (`Rule::latency`: moto, which answers one call at
//!                                  a time, works meanwhile, as AWS would concurrently)

#[path = "../tests/support/cli.rs"]
mod cli;
#[path = "../tests/support/fault_proxy.rs"]
mod fault_proxy;
#[path = "../tests/support/mod.rs"]
mod support;

use fault_proxy::{FaultProxy, Rule};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::Moto;

struct Measured {
    name: &'static str,
    code: i32,
    wall: Duration,
    calls: Vec<String>,
    /// Process start to the first call the proxy saw.
    first_call: Option<Duration>,
    /// Peak resident set size, KiB.
    peak_rss_kib: Option<u64>,
    /// The critical path the command reported (its first "critical path N s" line).
    critical_path: Option<Duration>,
}

impl Measured {
    fn by_action(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for c in &self.calls {
            *out.entry(c.clone()).or_default() += 1;
        }
        out
    }

    fn mutating(&self) -> usize {
        self.calls.iter().filter(|c| fault_proxy::is_mutation(c)).count()
    }
}

/// One CLI command through a fresh proxy in front of `moto`, every call delayed by `latency`,
/// with AWS's behaviour set up by `model`.
async fn measure(name: &'static str, moto: &Moto, latency: Duration, model: fn(&FaultProxy), args: &[&str]) -> Measured {
    let proxy = FaultProxy::start(&moto.endpoint).await;
    proxy.rule(Rule::latency("*", latency));
    model(&proxy);
    let mut reconciler = cli::command(moto, &proxy.url, "4");
    reconciler.args(args);
    let rss_file = std::env::temp_dir().join(format!("bench-rss-{}.txt", std::process::id()));
    let mut command = with_peak_rss(&reconciler, &rss_file).unwrap_or(reconciler);
    let started = Instant::now();
    let out = command.output().expect("run the reconciler");
    let wall = started.elapsed();
    let code = out.status.code().unwrap_or(-1);
    assert!(code == 0 || code == 2, "{name}: exit {code}\n{}", String::from_utf8_lossy(&out.stderr));
    let peak_rss_kib = std::fs::read_to_string(&rss_file).ok().and_then(|t| t.trim().lines().last()?.trim().parse().ok());
    let _ = std::fs::remove_file(&rss_file);
    // Kept for reading where the time went (progress lines, the critical path's chain).
    let log = std::env::temp_dir().join(format!("bench-{}.stderr", name.replace([' ', ','], "-")));
    let mut kept = out.stderr.clone();
    for (call, at) in proxy.timed_calls() {
        kept.extend(format!("call at {:7.3} s: {call}\n", (at - started).as_secs_f64()).into_bytes());
    }
    let _ = std::fs::write(&log, kept);
    let first_call = proxy.first_call_at().map(|t| t - started);
    let critical_path = String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|l| l.split("critical path ").nth(1)?.split(' ').next()?.parse::<f64>().ok())
        .map(Duration::from_secs_f64);
    Measured { name, code, wall, calls: proxy.calls(), first_call, peak_rss_kib, critical_path }
}

/// AWS as it behaves, scaled down (the tests' model, tests/support/fault_proxy.rs): for an
/// apply from zero, no ECS service-linked role yet, IAM propagation windows of 2 s, NAT
/// gateways, the VPC link and the Cloud Map operation pending for 1.5 s; for a destroy, the
/// ECS service draining and the NAT gateways deleting for 1.5 s.
fn aws_model(proxy: &FaultProxy) {
    scaled_aws_model(proxy, 1.0);
}

/// The same four times slower (pending and draining 6 s, propagation 8 s): what is fixed in
/// the gap between wall time and critical path (process start, observe, the lock, the outputs'
/// read-back) stays the same, so the ratio shows how it shrinks as AWS's waits grow.
fn aws_model_x4(proxy: &FaultProxy) {
    scaled_aws_model(proxy, 4.0);
}

/// [`aws_model`] with every window `k` times as long.
fn scaled_aws_model(proxy: &FaultProxy, k: f64) {
    fault_proxy::first_apply_model(proxy, 1.5 * k, 2.0 * k, 2);
    fault_proxy::ecs_service_draining(proxy, 1.5 * k);
    fault_proxy::nat_gateways_deleting(proxy, 1.5 * k);
}

fn no_model(_: &FaultProxy) {}

/// Five copies of the stack (the spec under five names) applied, then planned by five
/// processes at once through one proxy: one account's worth of calls, API Gateway's control
/// plane held to 10 requests a second (429 with Retry-After beyond it).
async fn growth(moto: &Moto, latency: Duration, spec: &str) -> Value {
    const STACKS: usize = 5;
    let specs: Vec<String> = (1..=STACKS)
        .map(|i| {
            cli::spec_variant(moto, spec, &format!("stack-{i}.yaml"), |s| {
                s.replace("name: benchling-webhook\n", &format!("name: stack-{i}\n"))
                    .replace("service: benchling-webhook\n", &format!("service: stack-{i}\n"))
                    .replace("cluster: benchling-webhook-cluster", &format!("cluster: stack-{i}-cluster"))
                    .replace("name: benchling-webhook-http", &format!("name: stack-{i}-http"))
            })
        })
        .collect();
    for s in &specs {
        let out = cli::command(moto, &moto.endpoint, "4").args(["apply", s, "--auto-approve"]).output().expect("apply a copy");
        assert!(out.status.success(), "apply {s}:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let proxy = FaultProxy::start(&moto.endpoint).await;
    proxy.rule(Rule::latency("*", latency));
    proxy.rate_limit("apigateway", 10.0, 10.0, Some(1.0));
    let started = Instant::now();
    let children: Vec<_> = specs
        .iter()
        .map(|s| {
            cli::command(moto, &proxy.url, "4")
                .args(["plan", s, "--detailed-exitcode"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start a plan")
        })
        .collect();
    let outs =
        tokio::task::spawn_blocking(move || children.into_iter().map(|c| c.wait_with_output().unwrap()).collect::<Vec<_>>()).await.unwrap();
    let wall = started.elapsed();
    for o in &outs {
        assert!(matches!(o.status.code(), Some(0) | Some(2)), "a plan failed:\n{}", String::from_utf8_lossy(&o.stderr));
    }
    let calls = proxy.calls();
    let mut actions = calls.clone();
    actions.sort();
    actions.dedup();
    json!({
        "stacks": STACKS,
        "calls": calls.len(),
        "throttled": actions.iter().map(|a| proxy.injected(a)).sum::<usize>(),
        "wall_s": (wall.as_secs_f64() * 1000.0).round() / 1000.0,
        "all_no_op": outs.iter().all(|o| o.status.code() == Some(0)),
        "by_action": Measured { name: "growth", code: 0, wall, calls, first_call: None, peak_rss_kib: None, critical_path: None }.by_action(),
    })
}

/// `command` run under `/usr/bin/time -f %M` (peak RSS in KiB, written to `out`); `None` when
/// the machine has no GNU time.
fn with_peak_rss(command: &std::process::Command, out: &std::path::Path) -> Option<std::process::Command> {
    let time = std::path::Path::new("/usr/bin/time");
    if !time.exists() {
        return None;
    }
    let mut t = std::process::Command::new(time);
    t.arg("-o").arg(out).arg("-f").arg("%M").arg(command.get_program()).args(command.get_args());
    for (k, v) in command.get_envs() {
        match v {
            Some(v) => t.env(k, v),
            None => t.env_remove(k),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        t.current_dir(dir);
    }
    Some(t)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let latency = Duration::from_millis(std::env::var("BENCH_LATENCY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(50));
    let spec = "specs/prod.yaml";
    let moto = Moto::start();
    let mut runs = Vec::new();
    let apply = ["apply", spec, "--auto-approve"];
    runs.push(measure("apply from zero", &moto, latency, no_model, &apply).await);
    runs.push(measure("no-op plan", &moto, latency, no_model, &["plan", spec, "--detailed-exitcode"]).await);
    let image = cli::spec_variant(&moto, spec, "new-image.yaml", |s| {
        s.replace("image: public.ecr.aws/example/benchling-webhook:0.1.0", "image: public.ecr.aws/example/benchling-webhook:0.2.0")
    });
    runs.push(measure("image-only change", &moto, latency, no_model, &["apply", &image, "--auto-approve"]).await);
    runs.push(measure("destroy", &moto, latency, no_model, &["destroy", &image, "--auto-approve"]).await);
    // The same under AWS's behaviour (pending states, propagation, draining) in a fresh moto:
    // no service-linked role yet.
    let fresh = Moto::start();
    runs.push(measure("apply from zero, AWS model", &fresh, latency, aws_model, &apply).await);
    runs.push(measure("destroy, AWS model", &fresh, latency, aws_model, &["destroy", spec, "--auto-approve"]).await);
    drop(fresh);
    let fresh = Moto::start();
    runs.push(measure("apply from zero, AWS model ×4", &fresh, latency, aws_model_x4, &apply).await);
    runs.push(measure("destroy, AWS model ×4", &fresh, latency, aws_model_x4, &["destroy", spec, "--auto-approve"]).await);
    drop(fresh);

    let growth = growth(&moto, latency, spec).await;

    let ms = latency.as_secs_f64() * 1000.0;
    println!("\nreconciler round trips: specs/prod.yaml against moto, {ms:.0} ms added to every call\n");
    println!("| command | exit | API calls | mutating | wall (s) | wall ÷ latency | critical path (s) | wall ÷ critical path | wall − critical path (s) | start to first call (ms) | peak RSS (MiB) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "–".into());
    for r in &runs {
        let trips = r.wall.as_secs_f64() / latency.as_secs_f64();
        let first = or_dash(r.first_call.map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0)));
        let rss = or_dash(r.peak_rss_kib.map(|k| format!("{:.0}", k as f64 / 1024.0)));
        let path = or_dash(r.critical_path.map(|d| format!("{:.2}", d.as_secs_f64())));
        let ratio = or_dash(r.critical_path.map(|d| format!("{:.2}", r.wall.as_secs_f64() / d.as_secs_f64())));
        let gap = or_dash(r.critical_path.map(|d| format!("{:.2}", r.wall.as_secs_f64() - d.as_secs_f64())));
        println!(
            "| {} | {} | {} | {} | {:.2} | {trips:.1} | {path} | {ratio} | {gap} | {first} | {rss} |",
            r.name,
            r.code,
            r.calls.len(),
            r.mutating(),
            r.wall.as_secs_f64()
        );
    }
    for r in &runs {
        println!("\n{} — calls by action:", r.name);
        for (action, n) in r.by_action() {
            println!("  {n:>3}  {action}");
        }
    }
    let doc: Vec<Value> = runs
        .iter()
        .map(|r| {
            json!({
                "command": r.name,
                "exit": r.code,
                "calls": r.calls.len(),
                "mutating": r.mutating(),
                "wall_s": (r.wall.as_secs_f64() * 1000.0).round() / 1000.0,
                "round_trips": ((r.wall.as_secs_f64() / latency.as_secs_f64()) * 10.0).round() / 10.0,
                "critical_path_s": r.critical_path.map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0),
                "first_call_ms": r.first_call.map(|d| (d.as_secs_f64() * 1000.0).round()),
                "peak_rss_kib": r.peak_rss_kib,
                "by_action": r.by_action(),
            })
        })
        .collect();
    println!(
        "\ngrowth: {} stacks planned by {} processes at once: {} calls, {} throttled (429) and retried, {:.2} s wall, every plan a no-op: {}",
        growth["stacks"], growth["stacks"], growth["calls"], growth["throttled"], growth["wall_s"], growth["all_no_op"]
    );
    let out = json!({"spec": spec, "latency_ms": ms, "runs": doc, "growth": growth});
    let path = support::repo_root().join("bench/results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap() + "\n").unwrap();
    println!("\nwritten: {}", path.display());
}
