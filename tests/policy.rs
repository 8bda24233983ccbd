//! The IAM policies `reconciler policy` prints pass an independent linter: `parliament`
//! (pinned, installed with moto by tests/emulator/install-moto.sh, offline) reports no finding,
//! at any severity, for `--for plan` and `--for apply` of every shipped spec and of one with a
//! stack lock. It would say, for instance, "Unnecessary use of Resource *" for a call that
//! takes a resource ARN but is granted on `*`. The last test shows the check can fail.

#[path = "support/mod.rs"]
mod support;

use std::process::Command;
use support::{parliament, repo_root, Run};

/// What `reconciler policy SPEC --for PURPOSE` prints.
fn policy(spec: &str, purpose: &str) -> String {
    let out =
        Command::new(env!("CARGO_BIN_EXE_reconciler")).args(["policy", spec, "--for", purpose]).current_dir(repo_root()).output().unwrap();
    let run = Run::from(out);
    assert_eq!(run.code, 0, "reconciler policy {spec} --for {purpose}\n{run}");
    run.stdout
}

/// parliament's findings for `policy`, one JSON object a line (empty: none). Panics when
/// parliament itself fails, so a crash never passes for a clean policy.
fn findings(policy: &str) -> Vec<serde_json::Value> {
    let out =
        Command::new(parliament()).args(["--json", "--minimum_severity", "INFO", "--string", policy]).output().expect("run parliament");
    let run = Run::from(out);
    let found: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("parliament printed a line that is not a finding ({e}): {l}\n{run}")))
        .collect();
    // parliament exits 1 when it found something, 0 when not; anything else is its own failure.
    assert!(run.code == i32::from(!found.is_empty()), "parliament failed\n{run}");
    found
}

/// The shipped specs, and prod.yaml with a stack lock (which adds the lock's S3 statement).
fn specs() -> Vec<String> {
    let mut specs: Vec<String> = std::fs::read_dir(repo_root().join("specs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    specs.sort();
    assert!(specs.iter().any(|s| s.ends_with("specs/prod.yaml")), "{specs:?}");
    let prod = std::fs::read_to_string(repo_root().join("specs/prod.yaml")).unwrap();
    let locked = prod.replacen("\nnetwork:\n", "\nlock:\n  bucket: locks\n  ttl_seconds: 60\nnetwork:\n", 1);
    assert_ne!(locked, prod, "specs/prod.yaml has no top-level `network:` to put the lock before");
    let path = std::env::temp_dir().join(format!("policy-locked-{}.yaml", std::process::id()));
    std::fs::write(&path, locked).unwrap();
    specs.push(path.to_str().unwrap().to_string());
    specs
}

fn assert_clean(purpose: &str) {
    let mut failures = Vec::new();
    for spec in specs() {
        let doc = policy(&spec, purpose);
        let found = findings(&doc);
        if !found.is_empty() {
            let listed: Vec<String> = found.iter().map(|f| f.to_string()).collect();
            failures.push(format!("{spec} --for {purpose}:\n{}\n--- policy\n{doc}", listed.join("\n")));
        }
    }
    assert!(failures.is_empty(), "parliament has findings:\n{}", failures.join("\n\n"));
}

#[test]
fn parliament_finds_nothing_in_the_plan_policy() {
    assert_clean("plan");
}

#[test]
fn parliament_finds_nothing_in_the_apply_policy() {
    assert_clean("apply");
}

/// The check is live: parliament flags `s3:*` on `*`, and a create that takes an ARN granted
/// on `*` even under the stack's tag condition (how the apply policy granted creates before).
#[test]
fn parliament_flags_bad_policies() {
    let everything = r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}"#;
    assert!(!findings(everything).is_empty(), "parliament accepted s3:* on *");
    let create_on_star = r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:CreateVpc", "Resource": "*",
        "Condition": {"StringEquals": {"aws:RequestTag/reconciler:stack": "s"}}}]}"#;
    let found = findings(create_on_star);
    assert!(found.iter().any(|f| f["issue"] == "RESOURCE_STAR" && f["detail"].to_string().contains("ec2:CreateVpc")), "{found:?}");
}
