//! `make bench`: what the reconciler's commands cost in API calls and round trips, against
//! moto behind the fault proxy with a fixed latency per call (AWS answers in tens of
//! milliseconds; moto in one or two). Not a test: it prints one table and writes
//! `bench/results.json`; the README shows the latest table. Everything runs on 127.0.0.1 and
//! stops by itself.
//!
//! Scenarios (specs/prod.yaml, the whole stack): a no-op plan; an apply from zero; an
//! image-only change; a destroy. For each: the calls by service and action, the wall time
//! (process start included), and wall ÷ latency, the number of sequential round trips it
//! amounts to.
//!
//!   BENCH_LATENCY_MS=50 (default)  the latency the proxy adds to every call

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

/// One CLI command through a fresh proxy in front of `moto`, every call delayed by `latency`.
async fn measure(name: &'static str, moto: &Moto, latency: Duration, args: &[&str]) -> Measured {
    let proxy = FaultProxy::start(&moto.endpoint).await;
    proxy.rule(Rule::delay("*", latency));
    let started = Instant::now();
    let out = cli::command(moto, &proxy.url, "4").args(args).output().expect("run the reconciler");
    let wall = started.elapsed();
    let code = out.status.code().unwrap_or(-1);
    assert!(code == 0 || code == 2, "{name}: exit {code}\n{}", String::from_utf8_lossy(&out.stderr));
    Measured { name, code, wall, calls: proxy.calls() }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let latency = Duration::from_millis(std::env::var("BENCH_LATENCY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(50));
    let spec = "specs/prod.yaml";
    let moto = Moto::start();
    let mut runs = Vec::new();
    runs.push(measure("apply from zero", &moto, latency, &["apply", spec, "--auto-approve"]).await);
    runs.push(measure("no-op plan", &moto, latency, &["plan", spec, "--detailed-exitcode"]).await);
    let image = cli::spec_variant(&moto, spec, "new-image.yaml", |s| {
        s.replace("image: public.ecr.aws/example/benchling-webhook:0.1.0", "image: public.ecr.aws/example/benchling-webhook:0.2.0")
    });
    runs.push(measure("image-only change", &moto, latency, &["apply", &image, "--auto-approve"]).await);
    runs.push(measure("destroy", &moto, latency, &["destroy", &image, "--auto-approve"]).await);

    let ms = latency.as_secs_f64() * 1000.0;
    println!("\nreconciler round trips: specs/prod.yaml against moto, {ms:.0} ms added to every call\n");
    println!("| command | exit | API calls | mutating | wall (s) | wall ÷ latency |");
    println!("|---|---|---|---|---|---|");
    for r in &runs {
        let trips = r.wall.as_secs_f64() / latency.as_secs_f64();
        println!("| {} | {} | {} | {} | {:.2} | {trips:.1} |", r.name, r.code, r.calls.len(), r.mutating(), r.wall.as_secs_f64());
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
                "by_action": r.by_action(),
            })
        })
        .collect();
    let out = json!({"spec": spec, "latency_ms": ms, "runs": doc});
    let path = support::repo_root().join("bench/results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap() + "\n").unwrap();
    println!("\nwritten: {}", path.display());
}
