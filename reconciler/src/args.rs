//! The command line's arguments (clap): commands, their options, and the AWS options every
//! command that reaches AWS takes. Parsing only; `cli` dispatches them.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "reconciler",
    version,
    about = "Converges a Fargate webhook stack on AWS to a YAML spec: no CloudFormation, no state file."
)]
pub struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    /// Progress and corrections on stderr as text lines, or as JSON events (one per line; one
    /// event per corrected field, with before and after).
    #[arg(long, global = true, value_enum, default_value_t = crate::log::LogFormat::Text, env = "RECONCILER_LOG_FORMAT")]
    pub(crate) log_format: crate::log::LogFormat,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Check a spec file (syntax, types, and what AWS would reject); no AWS calls.
    Validate { file: PathBuf },
    /// Print the spec's JSON Schema (checked in: specs/schema.json).
    Schema {
        /// Print the JSON Schema of the plan document (`plan --format json`) instead
        /// (checked in: specs/plan.schema.json).
        #[arg(long)]
        plan: bool,
    },
    /// Print the least-privilege IAM policy for `plan` or for `apply`/`destroy` of a spec.
    Policy {
        file: PathBuf,
        #[arg(long = "for", value_enum, default_value_t = PolicyFor::Apply)]
        purpose: PolicyFor,
    },
    /// Show what apply would change.
    Plan {
        file: PathBuf,
        /// Exit 2 when there are changes (0 when none, 1 on error).
        #[arg(long)]
        detailed_exitcode: bool,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Also save the plan (JSON, with a fingerprint of what it was computed from), for
        /// `apply --plan`.
        #[arg(long, value_name = "PLAN_FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        aws: AwsOpts,
    },
    /// Converge the stack to the spec.
    Apply {
        file: PathBuf,
        /// Do not ask for confirmation (required when standard input is not a terminal).
        #[arg(long)]
        auto_approve: bool,
        /// Apply a plan saved by `plan --out`, and only if nothing it was computed from has
        /// changed since (it was reviewed: no confirmation is asked).
        #[arg(long, value_name = "PLAN_FILE")]
        plan: Option<PathBuf>,
        /// With --auto-approve: also take destructive steps (replacements, deletions). Without
        /// it, an unattended apply holds them back, says which, and exits 3.
        #[arg(long, env = "RECONCILER_ALLOW_DESTRUCTIVE")]
        allow_destructive: bool,
        /// Exit codes a scheduler can act on: 0 nothing to do, 2 changes applied, 3 changes
        /// held back (destructive, unattended), 1 error.
        #[arg(long)]
        detailed_exitcode: bool,
        #[command(flatten)]
        aws: AwsOpts,
    },
    /// Reconcile continuously: every interval (with jitter), observe, and apply any difference.
    /// One JSON status line per iteration on stdout. The spec file is read again at every
    /// iteration (an edit takes effect on the next one; an invalid edit is an error iteration
    /// that changes nothing). Errors requeue sooner; SIGTERM stops.
    Run {
        file: PathBuf,
        /// Time between iterations: `30s`, `5m`, `1h`, `250ms`, or plain seconds.
        #[arg(long, default_value = "5m", value_parser = parse_interval)]
        interval: f64,
        /// Detect and report drift; change nothing (the plan policy suffices).
        #[arg(long)]
        plan_only: bool,
        /// Serve Prometheus metrics on `/metrics` and a liveness check on `/healthz` at this
        /// address (e.g. 127.0.0.1:9464).
        #[arg(long, value_name = "ADDR")]
        metrics_addr: Option<String>,
        /// Random spread of the interval, as a fraction (0.1 = ±10%).
        #[arg(long, default_value_t = 0.1)]
        jitter: f64,
        /// Stop after this many iterations (0: run until stopped).
        #[arg(long, default_value_t = 0)]
        iterations: u64,
        /// Also take destructive steps (replacements, deletions). Without it they are held
        /// back and reported (`result: held`).
        #[arg(long, env = "RECONCILER_ALLOW_DESTRUCTIVE")]
        allow_destructive: bool,
        #[command(flatten)]
        aws: AwsOpts,
    },
    /// Per resource, Kubernetes-style conditions from live state: Ready (exists and usable),
    /// Synced (matches the spec), Drifted (changed outside the spec). Only reads; exit 0.
    Status {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        #[command(flatten)]
        aws: AwsOpts,
    },
    /// Print the stack's outputs from live state: the webhook URL, the Benchling manifest URLs,
    /// the cluster and service, log groups and queues. Only reads.
    Output {
        file: PathBuf,
        /// `json` is stable (documented in the README): keys are only ever added.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        #[command(flatten)]
        aws: AwsOpts,
    },
    /// Check the webhook end to end: GET /health/ready on the public endpoint, and when it is
    /// not ready, name the broken hop (stage, integration, VPC link, ECS tasks, Cloud Map) with
    /// evidence. Exit 0 ready, 1 not. Only reads.
    Verify {
        file: PathBuf,
        /// Call this base URL instead of the API's endpoint (a custom domain, a local test).
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        #[command(flatten)]
        aws: AwsOpts,
    },
    /// Delete everything the stack owns, dependents first (from the dependency graph); retained
    /// resources are released from management, not deleted.
    Destroy {
        file: PathBuf,
        #[arg(long)]
        auto_approve: bool,
        #[command(flatten)]
        aws: AwsOpts,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum PolicyFor {
    Plan,
    Apply,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum OutputFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
    /// For pull-request comments.
    Markdown,
}

#[derive(Args, Clone)]
pub(crate) struct AwsOpts {
    /// Seconds between polls of asynchronous resources (NAT gateways, ...).
    #[arg(long, default_value_t = 5.0, env = "RECONCILER_POLL_INTERVAL")]
    pub(crate) poll_interval: f64,
    /// Seconds one wait may take before failing (a re-run resumes).
    #[arg(long, default_value_t = 600.0, env = "RECONCILER_WAIT_TIMEOUT")]
    pub(crate) wait_timeout: f64,
    /// Tries per AWS call when it is throttled (honouring Retry-After) or a read fails with a
    /// 5xx; tries per resource when a mutation fails ambiguously (observed again first).
    #[arg(long, default_value_t = 5, env = "RECONCILER_MAX_ATTEMPTS")]
    pub(crate) max_attempts: u32,
    /// First retry backoff in milliseconds (doubles per attempt, full jitter, 20 s cap).
    #[arg(long, default_value_t = 500, env = "RECONCILER_RETRY_BASE_MS")]
    pub(crate) retry_base_ms: u64,
    /// Seconds "not usable yet" is retried: a role another service cannot assume a moment
    /// after its creation (IAM propagation), an id EC2 does not know yet.
    #[arg(long, default_value_t = 120.0, env = "RECONCILER_PROPAGATION_TIMEOUT")]
    pub(crate) propagation_timeout: f64,
    /// Seconds conflicts and dependency waits are retried (another change in progress, a
    /// resource still used by one being deleted).
    #[arg(long, default_value_t = 600.0, env = "RECONCILER_CONFLICT_TIMEOUT")]
    pub(crate) conflict_timeout: f64,
    /// Seconds a create whose answer was lost is looked for (listings lag behind creates)
    /// before it is sent again.
    #[arg(long, default_value_t = 30.0, env = "RECONCILER_LISTING_LAG")]
    pub(crate) listing_lag: f64,
    /// Calls in flight to one AWS service at once (AWS rate-limits each API per account).
    #[arg(long, default_value_t = 8, env = "RECONCILER_SERVICE_CONCURRENCY")]
    pub(crate) service_concurrency: usize,
    /// Resources being created, updated or deleted at once; one that only waits (for AWS to
    /// finish, or before a retry) does not count.
    #[arg(long, default_value_t = 8)]
    pub(crate) concurrency: usize,
    /// Seconds to wait for the stack lock when another reconciler holds it (default: fail at
    /// once, naming the holder).
    #[arg(long, default_value_t = 0.0, env = "RECONCILER_LOCK_WAIT")]
    pub(crate) lock_wait: f64,
    /// Wait for ECS deployments to reach a steady state (`false` where nothing runs tasks,
    /// e.g. an emulator).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "RECONCILER_WAIT_FOR_DEPLOYMENTS")]
    pub(crate) wait_for_deployments: bool,
}

/// `--interval`: `30s`, `5m`, `1h`, `250ms`, or plain seconds.
pub(crate) fn parse_interval(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("`{text}`: use a number with s, m, h or ms (30s, 5m, 1h)")),
    };
    let n: f64 = number.trim().parse().map_err(|_| format!("`{text}`: use a number with s, m, h or ms (30s, 5m, 1h)"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("`{text}`: the interval cannot be negative"));
    }
    Ok(n * scale)
}
