//! Spec validation end to end: every file in tests/specs/invalid/ must fail with a located,
//! specific error (its first line says `# expect: LINE: TEXT`); the shipped specs validate;
//! specs/schema.json is what `reconciler schema` prints, specs/plan.schema.json what
//! `reconciler schema --plan` prints.

use crate::support;

use std::process::Command;
use support::{repo_root, Run};

fn cli(args: &[&str]) -> Run {
    Run::from(Command::new(env!("CARGO_BIN_EXE_reconciler")).args(args).current_dir(repo_root()).output().unwrap())
}

#[test]
fn every_invalid_spec_gives_a_located_specific_error() {
    let dir = repo_root().join("tests/specs/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 25, "the corpus should hold at least 25 invalid specs, has {}", files.len());
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let header = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks `# expect: LINE: TEXT`", path.display()));
        let (line, want) = header.split_once(": ").map(|(l, t)| (l, t.trim())).unwrap_or((header.trim_end_matches(':'), ""));
        let line: u64 = line.trim().parse().unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        let errors = match reconciler::spec::parse(name, &text) {
            Ok(_) => panic!("{name} was accepted"),
            Err(e) => e.0,
        };
        assert!(
            errors.iter().any(|e| e.line == line && e.message.contains(want) && e.column >= 1 && e.file == name),
            "{name}: expected an error at line {line} containing `{want}`, got:\n{}",
            errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
        );
        for e in &errors {
            assert!(!e.message.is_empty() && e.line >= 1, "{name}: unlocated or empty error {e}");
        }
    }
}

#[test]
fn validate_reports_file_line_and_column_and_exits_1() {
    let run = cli(&["validate", "tests/specs/invalid/unknown-top-key.yaml"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("tests/specs/invalid/unknown-top-key.yaml:3:1: unknown field `bogus`"), "{run}");
    assert!(run.stderr.contains("expected one of"), "the error should say what is allowed\n{run}");
}

#[test]
fn shipped_specs_are_valid() {
    for spec in ["specs/prod.yaml", "specs/dev.yaml", "specs/existing-vpc.yaml"] {
        let run = cli(&["validate", spec]);
        assert_eq!(run.code, 0, "{spec}\n{run}");
    }
}

#[test]
fn checked_in_schema_is_current() {
    let run = cli(&["schema"]);
    assert_eq!(run.code, 0, "{run}");
    let checked_in = std::fs::read_to_string(repo_root().join("specs/schema.json")).unwrap();
    assert!(checked_in == run.stdout, "specs/schema.json is stale: run `make schema` and commit it");
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["additionalProperties"], false, "unknown top-level keys must be rejected by the schema too");
}

#[test]
fn checked_in_plan_schema_is_current() {
    let run = cli(&["schema", "--plan"]);
    assert_eq!(run.code, 0, "{run}");
    let checked_in = std::fs::read_to_string(repo_root().join("specs/plan.schema.json")).unwrap();
    assert!(checked_in == run.stdout, "specs/plan.schema.json is stale: run `make schema` and commit it");
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["title"], "PlanDocument");
    assert!(v["required"].as_array().unwrap().iter().any(|r| r == "format_version"), "{}", v["required"]);
}
