//! Running the reconciler CLI against moto from the reconciler's integration tests.
#![allow(dead_code)]

use super::support::{repo_root, Moto, Run};
use std::process::{Command, Stdio};

/// Runs the reconciler CLI against `endpoint` (moto itself, or the fault proxy in front of
/// it), with fast waits, `attempts` tries per call, and no waiting for ECS deployments
/// (moto never reaches a steady state).
pub fn reconciler_via(moto: &Moto, endpoint: &str, attempts: &str, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .args(args)
        .current_dir(repo_root())
        .envs(moto.env())
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("RECONCILER_POLL_INTERVAL", "0.05")
        .env("RECONCILER_MAX_ATTEMPTS", attempts)
        .env("RECONCILER_RETRY_BASE_MS", "5")
        .env("RECONCILER_WAIT_FOR_DEPLOYMENTS", "false")
        .stdin(Stdio::null())
        .output()
        .expect("run reconciler");
    Run::from(out)
}

/// The CLI straight against moto, one try per call.
pub fn reconciler(moto: &Moto, args: &[&str]) -> Run {
    reconciler_via(moto, &moto.endpoint, "1", args)
}

/// A copy of a shipped spec with `edit` applied, in a directory of this test's own; its path.
pub fn spec_variant(moto: &Moto, from: &str, name: &str, edit: impl Fn(String) -> String) -> String {
    let dir = std::env::temp_dir().join(format!("spec-{}", moto.port));
    std::fs::create_dir_all(&dir).unwrap();
    let text = edit(std::fs::read_to_string(repo_root().join(from)).unwrap());
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// A plan that must be a no-op (exit 0 with --detailed-exitcode).
pub fn assert_converged(moto: &Moto, spec: &str) {
    let plan = reconciler(moto, &["plan", spec, "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "expected a no-op plan\n{plan}");
    assert!(plan.stdout.contains("No changes"), "{plan}");
}
