//! `--log-format text|json`. Text: the progress lines on stderr, as a person reads them. JSON:
//! the same lines as `tracing` events (one JSON object per line on stderr), plus one event per
//! corrected field with the resource, the field, and the values before and after (values are
//! the spec's: secrets appear only as the references the spec holds), plus each failed AWS
//! call with the SDK's whole error (`reconciler::aws`, debug). `RUST_LOG` chooses the events
//! in either format (`RUST_LOG=reconciler::aws=debug` prints the failed calls' whole errors
//! beside the text).

use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

static JSON: AtomicBool = AtomicBool::new(false);

/// Chooses the format for the whole process (once, at start).
pub fn init(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let from_env = std::env::var_os("RUST_LOG").is_some();
    if format == LogFormat::Json && !JSON.swap(true, Ordering::SeqCst) {
        let filter = if from_env { EnvFilter::from_default_env() } else { EnvFilter::new("info,reconciler::aws=debug") };
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else if format == LogFormat::Text && from_env {
        tracing_subscriber::fmt().with_env_filter(EnvFilter::from_default_env()).with_writer(std::io::stderr).try_init().ok();
    }
}

fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// How a run that failed ends (`error`: the whole chain; `hint`: what to do, where known):
/// `error: …` and `hint: …` lines for a person; in the JSON log one event like every other
/// line (`level` ERROR, `error`, `hint`), so that a log pipeline parses the whole stream.
pub fn failure(error: &str, hint: Option<&str>) {
    if json() {
        tracing::error!(target: "reconciler", error, hint, "{}", error.lines().next().unwrap_or_default());
    } else {
        eprintln!("{}", failure_text(error, hint));
    }
}

/// The text form of [`failure`].
pub fn failure_text(error: &str, hint: Option<&str>) -> String {
    format!("error: {error}{}", hint_lines(hint))
}

/// `hint:` lines, one per hint, each after a newline; empty when there are none. The one form
/// a hint takes in text: at exit, in `run`'s status line, in apply's and destroy's summaries.
pub fn hint_lines<'a>(hints: impl IntoIterator<Item = &'a str>) -> String {
    hints.into_iter().map(|h| format!("\nhint: {h}")).collect()
}

/// A progress line (created, updated, deleting, waiting ...).
pub fn progress(msg: &str) {
    if json() {
        tracing::info!(target: "reconciler", "{msg}");
    } else {
        eprintln!("  {msg}");
    }
}

/// One event per field a correction changed (JSON only: the text form is the progress line).
pub fn correction(kind: &str, id: &str, changes: &[crate::changes::FieldChange]) {
    if !json() {
        return;
    }
    let show = |v: Option<&Value>| v.map(|v| v.to_string()).unwrap_or_else(|| "null".into());
    for c in changes {
        tracing::info!(
            target: "reconciler",
            event = "correction",
            kind,
            resource = id,
            field = c.field.as_str(),
            before = show(c.before.as_ref()),
            after = show(Some(&c.after)),
            "corrected {kind} {id} {}",
            c.field
        );
    }
}
