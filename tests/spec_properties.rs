//! Property tests of the spec (issue #23 §2): generated valid specs survive the round trip
//! through YAML and through the form the drift-correction task carries; the published JSON
//! Schema (specs/schema.json, `reconciler schema`) accepts every one of them, and rejects
//! every generated spec that validation rejects for a type reason (a value of the wrong type,
//! an unknown key, a word not in an enumeration, a required key missing). The schema is
//! checked by the Python `jsonschema` package (pinned by tests/emulator/install-moto.sh),
//! an implementation independent of ours.

use crate::support::repo_root;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use reconciler::spec::{parse, to_carried, Spec};
use serde_json::{json, Value};

/// The shipped specs, as carried (every default spelt out but `account_wide_reads`'s): the
/// bases generation varies.
fn bases() -> Vec<Value> {
    ["specs/prod.yaml", "specs/dev.yaml", "specs/existing-vpc.yaml"]
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(repo_root().join(f)).unwrap();
            serde_json::from_str(&to_carried(&parse(f, &text).unwrap())).unwrap()
        })
        .collect()
}

/// Strings YAML reads as something else unless quoted, and text that needs escaping.
fn tricky_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "yes",
            "no",
            "null",
            "~",
            "true",
            "1.0",
            "0x1F",
            "1e3",
            "-",
            "- a",
            ": x",
            "a: b",
            "#x",
            "a #b",
            "'q'",
            "\"d\"",
            " lead",
            "trail ",
            "",
            "*ref",
            "&anchor",
            "!tag",
            "%dir",
            "@at",
            "`tick",
            "{a}",
            "[b]",
            "line\nbreak",
            "tab\there",
            "é€😀",
        ])
        .prop_map(String::from),
        "\\PC{0,16}",
    ]
}

/// Edits that keep a spec valid (validation still decides: what it rejects is left out).
fn valid_spec() -> impl Strategy<Value = Value> {
    let tags = prop::collection::btree_map("[a-zA-Z][a-zA-Z0-9_.:/=+@-]{0,12}", "[a-zA-Z0-9 _.:/=+@-]{0,16}", 0..4);
    let env = prop::collection::btree_map("[A-Z][A-Z0-9_]{0,10}", tricky_text(), 0..5);
    let image = ("[a-z0-9]{1,8}", "[a-z][a-z0-9-]{0,8}", "[a-z0-9][a-z0-9.]{0,8}")
        .prop_map(|(acct, repo, tag)| format!("{acct}.dkr.ecr.us-east-1.amazonaws.com/{repo}:{tag}"));
    let size = prop::sample::select(vec![(256u32, 512u32), (256, 2048), (512, 1024), (1024, 4096), (2048, 8192), (4096, 30720)]);
    (
        prop::sample::select(bases()),
        "[a-z][a-z0-9-]{0,20}[a-z0-9]",
        tags,
        prop::collection::vec("[a-z]{1,6}\\*?", 0..3),
        (any::<bool>(), any::<bool>()),
        env,
        image,
        size,
        0..6u32,
        prop::option::of(0..=3600u32),
    )
        .prop_map(|(mut s, name, tags, ignore, (retain, account_wide), env, image, (cpu, memory), count, ttl)| {
            s["name"] = json!(name);
            s["tags"] = json!(tags);
            s["ignore_tags"] = json!(ignore);
            s["deletion_policy"] = json!(if retain { "retain" } else { "delete" });
            s["account_wide_reads"] = json!(account_wide);
            if s["service"].is_object() {
                s["service"]["environment"] = json!(env);
                s["service"]["image"] = json!(image);
                s["service"]["cpu"] = json!(cpu);
                s["service"]["memory"] = json!(memory);
                s["service"]["desired_count"] = json!(count);
            }
            if let (Some(ttl), true) = (ttl, s["discovery"].is_object()) {
                s["discovery"]["ttl"] = json!(ttl);
            }
            s
        })
        .prop_filter("valid", |s| parse("generated", &s.to_string()).is_ok())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    /// A valid spec written as YAML, and as the task carries it, reads back as the same spec.
    #[test]
    fn a_valid_spec_reads_back_the_same_from_yaml_and_from_the_carried_form(s in valid_spec()) {
        let spec: Spec = serde_json::from_value(s).unwrap();
        let yaml = serde_saphyr::to_string(&spec).unwrap();
        prop_assert_eq!(parse("generated.yaml", &yaml).map_err(|e| format!("{e}\n{yaml}")), Ok(spec.clone()));
        prop_assert_eq!(parse("carried", &to_carried(&spec)).map_err(|e| e.to_string()), Ok(spec));
    }
}

/// Every place in `v` with a value: (JSON pointer, value).
fn leaves(v: &Value, at: String, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            out.push((at.clone(), v.clone()));
            m.iter().for_each(|(k, x)| leaves(x, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out))
        }
        Value::Array(a) => {
            out.push((at.clone(), v.clone()));
            a.iter().enumerate().for_each(|(i, x)| leaves(x, format!("{at}/{i}"), out))
        }
        _ => out.push((at, v.clone())),
    }
}

/// A type error at one place: a value of another JSON type, an unknown key, an enum word
/// that is not one, or a required top-level key removed.
fn broken(mut s: Value, pick: usize, how: usize) -> Value {
    let mut places = Vec::new();
    leaves(&s, String::new(), &mut places);
    let (at, old) = places[pick % places.len()].clone();
    let replacement = match (&old, how % 4) {
        (Value::Object(_), 0) => {
            let target = s.pointer_mut(&at).unwrap();
            target["unknown_key_x"] = json!(1);
            return s;
        }
        (_, 3) => {
            let key = ["name", "region", "network"][pick % 3];
            s.as_object_mut().unwrap().remove(key);
            return s;
        }
        (Value::String(_), 1) => json!("not-a-known-word-x").clone(),
        (Value::String(_), _) => json!({"nested": true}),
        (Value::Number(_), 1) => json!(-1),
        (Value::Number(_), _) => json!("many"),
        (Value::Bool(_), _) => json!("maybe"),
        (Value::Array(_), _) => json!({"not": "a list"}),
        (Value::Object(_), _) => json!(["not", "an", "object"]),
        (Value::Null, _) => json!([[]]),
    };
    if at.is_empty() {
        return replacement;
    }
    *s.pointer_mut(&at).unwrap() = replacement;
    s
}

/// Whether each spec is valid under specs/schema.json, by Python's `jsonschema`.
fn schema_accepts(specs: &[Value]) -> Vec<bool> {
    let dir = tempfile_dir();
    let cases = dir.join("cases.json");
    std::fs::write(&cases, serde_json::to_string(specs).unwrap()).unwrap();
    let python = repo_root().join(".venv/bin/python");
    let out = std::process::Command::new(&python)
        .arg(repo_root().join("tests/reference/schema-check.py"))
        .arg(repo_root().join("specs/schema.json"))
        .arg(&cases)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run `make moto` first)", python.display()));
    assert!(out.status.success(), "schema-check.py failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("spec-properties-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The schema agrees with validation: it accepts every generated valid spec, and rejects every
/// generated spec validation rejects for a type reason.
#[test]
fn the_published_schema_accepts_valid_specs_and_rejects_type_errors() {
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let valid: Vec<Value> = (0..150).map(|_| valid_spec().new_tree(&mut runner).unwrap().current()).collect();
    let breaks = (0..100_000usize, 0..4usize);
    let mut invalid = Vec::new();
    let mut accepted_by_validation = 0;
    for s in &valid {
        for _ in 0..2 {
            let (pick, how) = breaks.new_tree(&mut runner).unwrap().current();
            let b = broken(s.clone(), pick, how);
            // Only what validation rejects counts (YAML reads `5` as a string where a string is
            // wanted; some words are free text).
            match parse("broken", &b.to_string()) {
                Err(_) => invalid.push(b),
                Ok(_) => accepted_by_validation += 1,
            }
        }
    }
    assert!(invalid.len() >= 150, "too few type errors generated: {} (validation accepted {accepted_by_validation})", invalid.len());
    let verdicts = schema_accepts(&valid);
    for (s, ok) in valid.iter().zip(&verdicts) {
        assert!(ok, "the schema rejects a valid spec:\n{s:#}");
    }
    let verdicts = schema_accepts(&invalid);
    let mut missed = Vec::new();
    for (s, ok) in invalid.iter().zip(&verdicts) {
        if *ok {
            missed.push(parse("broken", &s.to_string()).unwrap_err().to_string());
        }
    }
    // Validation rules beyond types (a CIDR's syntax, cross-field rules) the schema cannot
    // express are not type errors: those are counted apart, the rest must be rejected.
    let (semantic, typed): (Vec<&String>, Vec<&String>) = missed.iter().partition(|e| {
        !["unknown field", "invalid type", "unknown variant", "missing field", "invalid value"].iter().any(|t| e.contains(t))
    });
    assert!(
        typed.is_empty(),
        "the schema accepts specs validation rejects for their type:\n{}",
        typed.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
    );
    for e in semantic.iter().take(12) {
        eprintln!("  not a type error: {}", e.lines().next().unwrap_or(""));
    }
    eprintln!(
        "schema: {} valid accepted; {} type-invalid rejected by both; {} rejected by validation for a rule the schema does not express",
        valid.len(),
        invalid.len() - missed.len(),
        semantic.len()
    );
    std::fs::remove_dir_all(tempfile_dir()).ok();
}
