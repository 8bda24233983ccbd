//! The stack spec: YAML model, loading with located errors, and validation beyond types.

pub mod cidr;
mod locate;
mod model;
pub mod policy;
mod rules;
mod validate;
pub use rules::{default_subnets as default_subnet_layout, fargate_size, sqs_arn_parts, WIRED_ENV};

pub use model::*;

use std::fmt;
use std::path::Path;

/// One problem in a spec, located in the file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecError {
    pub file: String,
    pub line: u64,
    pub column: u64,
    /// Dotted path of the offending key, e.g. `network.vpc.cidr` (empty for syntax errors).
    pub path: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)
    }
}

/// All the problems found in one spec file.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
impl std::error::Error for SpecErrors {}

/// Names a spec held by an environment variable instead of a file: `env:RECONCILER_SPEC`
/// (how the drift-correction task gets its spec: the task definition carries it).
pub const ENV_PREFIX: &str = "env:";

/// The environment variable the drift-correction task definition puts the spec in.
pub const SPEC_VARIABLE: &str = "RECONCILER_SPEC";

/// Reads and validates a spec file, or the variable `env:NAME` names.
pub fn load(path: &Path) -> Result<Spec, SpecErrors> {
    let file = path.display().to_string();
    let unreadable = |message: String| SpecErrors(vec![SpecError { file: file.clone(), line: 0, column: 0, path: String::new(), message }]);
    let text = match file.strip_prefix(ENV_PREFIX) {
        Some(var) => {
            std::env::var(var).map_err(|e| unreadable(format!("cannot read the spec from the environment variable {var}: {e}")))?
        }
        None => std::fs::read_to_string(path).map_err(|e| unreadable(format!("cannot read the spec: {e}")))?,
    };
    parse(&file, &text)
}

/// The spec as the drift-correction task carries it: compact JSON of the parsed spec (YAML's
/// JSON subset, so `parse` reads it back), with every default spelt out but
/// `account_wide_reads`'s (left out when true, as before it existed). Comments and layout
/// of the file do not change it; a change of meaning does. `parse(to_carried(s)) == s`.
pub fn to_carried(spec: &Spec) -> String {
    serde_json::to_string(spec).expect("a spec serialises")
}

/// Parses and validates spec text; `file` is only used to name locations.
pub fn parse(file: &str, text: &str) -> Result<Spec, SpecErrors> {
    if text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
        return Err(SpecErrors(vec![SpecError {
            file: file.to_string(),
            line: 1,
            column: 1,
            path: String::new(),
            message: "the spec is empty: it needs at least `name`, `region` and `network` (see specs/prod.yaml)".into(),
        }]));
    }
    let spec: Spec = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
        SpecErrors(vec![SpecError {
            file: file.to_string(),
            line,
            column,
            path: String::new(),
            message: clean_parse_message(&e.to_string()),
        }])
    })?;
    let problems = validate::validate(&spec);
    if problems.is_empty() {
        return Ok(spec);
    }
    Err(SpecErrors(
        problems
            .into_iter()
            .map(|(path, message)| {
                let (line, column) = locate::locate(text, &path);
                SpecError { file: file.to_string(), line, column, path, message }
            })
            .collect(),
    ))
}

/// serde-saphyr's Display repeats the location and may append a source snippet; keep the
/// first line, without the location (we print our own `file:line:col`).
fn clean_parse_message(msg: &str) -> String {
    let first = msg.lines().find(|l| !l.trim().is_empty()).unwrap_or(msg).trim();
    let first = match first.find(" at line ") {
        Some(i) => &first[..i],
        None => first,
    };
    let first = first.trim_start_matches("error: ");
    // Drop a leading "line N column M: ": the location is printed as file:line:col already.
    match first.strip_prefix("line ").and_then(|rest| rest.split_once(": ")) {
        Some((loc, msg)) if loc.contains("column") => msg.to_string(),
        _ => first.to_string(),
    }
}

/// The JSON Schema of the spec, as checked in at `specs/schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Spec);
    serde_json::to_string_pretty(&schema).expect("schema serialises") + "\n"
}

/// A file of the checkout, for tests: `shipped("../specs/prod.yaml")`. The crate's directory
/// is read when the test runs (cargo and nextest set it), not only at build time: clones share
/// one target directory (Makefile), and a test binary another clone built must read this
/// clone's files, not that one's (which may be gone).
#[cfg(test)]
pub(crate) fn shipped(relative: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), std::path::PathBuf::from);
    dir.join(relative)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_carried_spec_reads_back_as_the_same_spec() {
        for f in ["prod.yaml", "dev.yaml", "existing-vpc.yaml"] {
            let spec = load(&shipped(&format!("../specs/{f}"))).unwrap();
            let carried = to_carried(&spec);
            assert!(!carried.contains('\n'), "one line: {carried}");
            let back = parse("env:RECONCILER_SPEC", &carried).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert_eq!(back, spec, "{f}");
            assert_eq!(to_carried(&back), carried, "{f}: a fixed point, so the task definition does not change run after run");
        }
    }

    #[test]
    fn a_spec_is_read_from_the_variable_env_names() {
        let text = std::fs::read_to_string(shipped("../specs/prod.yaml")).unwrap();
        let var = "RECONCILER_SPEC_TEST_A_SPEC_IS_READ";
        std::env::set_var(var, to_carried(&parse("prod.yaml", &text).unwrap()));
        let spec = load(Path::new(&format!("env:{var}"))).unwrap();
        assert_eq!(spec.name, "benchling-webhook");
        let missing = load(Path::new("env:RECONCILER_SPEC_TEST_NOT_SET")).unwrap_err().to_string();
        assert!(missing.contains("environment variable RECONCILER_SPEC_TEST_NOT_SET"), "{missing}");
    }
}
