//! The code's shape, checked: no import cycle between sibling modules of either crate
//! except the known ones (tests/import-cycles.py reads the `crate::`/`super::` paths).

use crate::support;

/// The cycles left, each with why. A new cycle fails
/// here; so does one that went away (take it off the list).
const KNOWN: &[(&str, &str)] = &[];

#[test]
fn import_cycles_are_the_known_ones() {
    let root = support::repo_root();
    let out = std::process::Command::new("python3")
        .current_dir(&root)
        .args(["tests/import-cycles.py", "reconciler/src", "service/src"])
        .output()
        .expect("running python3 tests/import-cycles.py");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let found: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(|l| l.split(" (").next().unwrap_or(l).to_string()).collect();
    let known: Vec<String> = KNOWN.iter().map(|(c, _)| c.to_string()).collect();
    assert_eq!(
        found,
        known,
        "import cycles (python3 tests/import-cycles.py reconciler/src service/src):\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
