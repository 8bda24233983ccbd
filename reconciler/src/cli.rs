//! Command line: `validate`, `schema`, `plan`, `apply`, `destroy`. Exit codes follow
//! terraform's `-detailed-exitcode`: 0 success / no changes, 2 changes present, 1 error.

use crate::desired::{self, DesiredState};
use crate::engine::{self, Ctx, Settings};
use crate::plan::{render_json, render_markdown, render_text, Cost, Plan, Style};
use crate::resources;
use crate::spec::{self, DeletionPolicy, Spec};
use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "reconciler",
    version,
    about = "Converges a Fargate webhook stack on AWS to a YAML spec: no CloudFormation, no state file."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Progress and corrections on stderr as text lines, or as JSON events (one per line; one
    /// event per corrected field, with before and after).
    #[arg(long, global = true, value_enum, default_value_t = crate::log::LogFormat::Text, env = "RECONCILER_LOG_FORMAT")]
    log_format: crate::log::LogFormat,
}

#[derive(Subcommand)]
enum Command {
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
enum PolicyFor {
    Plan,
    Apply,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
    /// For pull-request comments.
    Markdown,
}

#[derive(Args, Clone)]
struct AwsOpts {
    /// Seconds between polls of asynchronous resources (NAT gateways, ...).
    #[arg(long, default_value_t = 5.0, env = "RECONCILER_POLL_INTERVAL")]
    poll_interval: f64,
    /// Seconds one wait may take before failing (a re-run resumes).
    #[arg(long, default_value_t = 600.0, env = "RECONCILER_WAIT_TIMEOUT")]
    wait_timeout: f64,
    /// Tries per AWS call when it is throttled (honouring Retry-After) or a read fails with a
    /// 5xx; tries per resource when a mutation fails ambiguously (observed again first).
    #[arg(long, default_value_t = 5, env = "RECONCILER_MAX_ATTEMPTS")]
    max_attempts: u32,
    /// First retry backoff in milliseconds (doubles per attempt, full jitter, 20 s cap).
    #[arg(long, default_value_t = 500, env = "RECONCILER_RETRY_BASE_MS")]
    retry_base_ms: u64,
    /// Seconds "not usable yet" is retried: a role another service cannot assume a moment
    /// after its creation (IAM propagation), an id EC2 does not know yet.
    #[arg(long, default_value_t = 120.0, env = "RECONCILER_PROPAGATION_TIMEOUT")]
    propagation_timeout: f64,
    /// Seconds conflicts and dependency waits are retried (another change in progress, a
    /// resource still used by one being deleted).
    #[arg(long, default_value_t = 600.0, env = "RECONCILER_CONFLICT_TIMEOUT")]
    conflict_timeout: f64,
    /// Seconds a create whose answer was lost is looked for (listings lag behind creates)
    /// before it is sent again.
    #[arg(long, default_value_t = 30.0, env = "RECONCILER_LISTING_LAG")]
    listing_lag: f64,
    /// Calls in flight to one AWS service at once (AWS rate-limits each API per account).
    #[arg(long, default_value_t = 8, env = "RECONCILER_SERVICE_CONCURRENCY")]
    service_concurrency: usize,
    /// Mutations in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Seconds to wait for the stack lock when another reconciler holds it (default: fail at
    /// once, naming the holder).
    #[arg(long, default_value_t = 0.0, env = "RECONCILER_LOCK_WAIT")]
    lock_wait: f64,
    /// Wait for ECS deployments to reach a steady state (`false` where nothing runs tasks,
    /// e.g. an emulator).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "RECONCILER_WAIT_FOR_DEPLOYMENTS")]
    wait_for_deployments: bool,
}

/// Exit code of an unattended apply (or a `run` that ends) that held destructive steps back.
pub const HELD: u8 = 3;

/// How an apply ended, for its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    NothingToDo,
    Changed,
    /// Some destructive steps were held back (the rest was applied).
    Held,
}

impl Applied {
    /// 0 / 3 always; with `--detailed-exitcode` also 2 for changes applied.
    fn exit_code(self, detailed: bool) -> ExitCode {
        match self {
            Applied::Held => ExitCode::from(HELD),
            Applied::Changed if detailed => ExitCode::from(2),
            _ => ExitCode::SUCCESS,
        }
    }
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

pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::log::init(cli.log_format);
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { file } => {
            let spec = load(&file)?;
            println!("{}: valid (stack `{}`, region {})", file.display(), spec.name, spec.region);
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema { plan } => {
            print!("{}", if plan { crate::plan::json_schema() } else { spec::json_schema() });
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy { file, purpose } => {
            let spec = load(&file)?;
            let purpose = match purpose {
                PolicyFor::Plan => engine::policy::Purpose::Plan,
                PolicyFor::Apply => engine::policy::Purpose::Apply,
            };
            let doc = crate::stack_policy::document(&spec, purpose);
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan { file, detailed_exitcode, format, out, aws } => {
            let s = Session::open(&file, &aws).await?;
            let (state, observed, plan) = s.plan().await?;
            let cost = s.estimate(&state, &observed);
            if let Some(out) = out {
                std::fs::write(&out, render_json(&plan, Some(&cost))).with_context(|| format!("writing the plan to {}", out.display()))?;
                eprintln!("plan saved to {} (fingerprint {})", out.display(), plan.fingerprint);
            }
            match format {
                Format::Text => print!("{}", render_text(&plan, Some(&cost), Style::for_stdout())),
                Format::Json => print!("{}", render_json(&plan, Some(&cost))),
                Format::Markdown => print!("{}", render_markdown(&plan, Some(&cost))),
            }
            Ok(if detailed_exitcode && plan.has_changes() { ExitCode::from(2) } else { ExitCode::SUCCESS })
        }
        Command::Apply { file, auto_approve, plan: saved, allow_destructive, detailed_exitcode, aws } => {
            let s = Session::open(&file, &aws).await?;
            s.stop_on_signal();
            let lock = s.lock().await?;
            let result = apply_locked(&s, &file, auto_approve, allow_destructive, saved.as_deref(), lock.as_ref()).await;
            release(lock).await?;
            result.map(|outcome| outcome.exit_code(detailed_exitcode))
        }
        Command::Run { file, interval, plan_only, metrics_addr, jitter, iterations, allow_destructive, aws } => {
            if let Some(addr) = &metrics_addr {
                let bound = crate::metrics::serve(addr).await?;
                eprintln!("metrics on http://{bound}/metrics, liveness on http://{bound}/healthz");
            }
            let mode = match (plan_only, allow_destructive) {
                (true, _) => crate::run::Mode::PlanOnly,
                (false, true) => crate::run::Mode::Apply(engine::Destructive::Allow),
                (false, false) => crate::run::Mode::Apply(engine::Destructive::Hold),
            };
            let mut s = Session::open(&file, &aws).await?;
            s.stop_on_signal();
            crate::run::run(&mut s, interval, jitter, iterations, mode).await
        }
        Command::Status { file, format, aws } => {
            let s = Session::open(&file, &aws).await?;
            let (_, observed, plan) = s.plan().await?;
            let status = crate::status::of(&plan, &observed);
            match format {
                OutputFormat::Text => print!("{}", crate::status::render_text(&status)),
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&status)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Output { file, format, aws } => {
            let s = Session::open(&file, &aws).await?;
            let (_, observed) = s.observe_owned_quietly().await?;
            print_outputs(&s, &observed, format)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { file, endpoint, format, aws } => {
            let s = Session::open(&file, &aws).await?;
            let (_, observed) = s.observe_owned_quietly().await?;
            let url = endpoint.or_else(|| crate::outputs::from_observed(&s.spec.name, s.ctx.region(), &observed).webhook_url);
            let answer = crate::verify::call_endpoint(url.as_deref()).await;
            let evidence = if crate::verify::is_ready(&answer) {
                crate::verify::Evidence::endpoint_only(answer)
            } else {
                crate::verify::gather(&s.ctx, &observed, answer).await?
            };
            let verdict = crate::verify::diagnose(&evidence);
            match format {
                OutputFormat::Text => print!("{}", crate::verify::render_text(&verdict)),
                OutputFormat::Json => {
                    println!("{}", serde_json::to_string_pretty(&serde_json::json!({"verdict": verdict, "evidence": evidence}))?)
                }
            }
            Ok(if verdict.ready { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Destroy { file, auto_approve, aws } => {
            let s = Session::open(&file, &aws).await?;
            s.stop_on_signal();
            let lock = lock_for_destroy(&s).await?;
            let result = destroy_locked(&s, auto_approve, lock.as_ref()).await;
            release(lock).await?;
            result
        }
    }
}

async fn apply_locked(
    s: &Session,
    file: &std::path::Path,
    auto_approve: bool,
    allow_destructive: bool,
    saved: Option<&std::path::Path>,
    lock: Option<&engine::lock::StackLock>,
) -> anyhow::Result<Applied> {
    // A person's apply that goes ahead (confirmed, or nothing to change) builds the stack on
    // purpose: unattended passes may follow again. A cancelled one leaves the mark.
    // Looked for first (most applies find none); a failure is a warning, not a failed apply.
    let clear_destroyed = || async {
        let Some(l) = lock else { return };
        let cleared = async {
            if l.destroyed().await? {
                l.clear_destroyed().await
            } else {
                Ok(())
            }
        }
        .await;
        if let Err(e) = cleared {
            eprintln!("warning: {e:#}; unattended passes keep refusing to run until an apply clears the destroyed mark (or it is deleted)");
        }
    };
    let started = Instant::now();
    let (state, observed, plan) = s.plan().await?;
    let cost = s.estimate(&state, &observed);
    let reviewed = match saved {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading the saved plan {}", path.display()))?;
            let doc: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not a saved plan (JSON)", path.display()))?;
            let (stack, fp) = (doc["stack"].as_str().unwrap_or_default(), doc["fingerprint"].as_str().unwrap_or_default());
            if stack != plan.stack {
                bail!("{} is a plan for stack `{stack}`, not `{}`", path.display(), plan.stack);
            }
            if fp != plan.fingerprint {
                bail!(
                            "live state or the spec changed since {} was made (fingerprint {fp}, now {}): nothing was applied. Review a new plan: reconciler plan {} --out {}",
                            path.display(),
                            plan.fingerprint,
                            file.display(),
                            path.display()
                        );
            }
            true
        }
        None => false,
    };
    print!("{}", render_text(&plan, Some(&cost), Style::for_stdout()));
    if !plan.has_changes() {
        clear_destroyed().await;
        println!();
        print_outputs(s, &observed, OutputFormat::Text)?;
        engine::fail_if_unhealthy(&plan, &observed)?;
        return Ok(Applied::NothingToDo);
    }
    if !reviewed {
        confirm(auto_approve, "apply these changes")?;
    }
    clear_destroyed().await;
    // A person who typed `yes`, or a reviewed plan, may replace and delete; an unattended
    // apply (--auto-approve) only with --allow-destructive.
    let destructive = if reviewed || !auto_approve || allow_destructive { engine::Destructive::Allow } else { engine::Destructive::Hold };
    let report = engine::apply(&s.ctx, &s.kinds, &state.resources, &observed, &state.externals, &plan, destructive).await?;
    // Each resource's own duration is in the progress lines (stderr) as it finishes.
    println!(
        "Apply complete: {} created, {} updated, {} replaced, {} deleted, {} retained, in {}. {}.",
        report.created,
        report.updated,
        report.replaced,
        report.deleted,
        report.retained,
        crate::plan::duration(started.elapsed()),
        cost_after(&cost)
    );
    // Only what the outputs are made of, against the same desired state (applying changes
    // neither the spec nor the facts): a few calls, not a second whole observation.
    let output_kinds: Vec<Box<dyn engine::Kind>> =
        crate::resources::registry().into_iter().filter(|k| crate::outputs::KINDS.contains(&k.name())).collect();
    let (now, _) = engine::observe_owned(&s.ctx, &output_kinds, &state.resources).await.context("reading the outputs after apply")?;
    println!();
    print_outputs(s, &now, OutputFormat::Text)?;
    if !report.held.is_empty() {
        println!(
            "Held back ({}), because this apply is unattended and destructive steps need --allow-destructive or a reviewed plan:",
            report.held.len()
        );
        for h in &report.held {
            println!("  {h}");
        }
        return Ok(Applied::Held);
    }
    Ok(Applied::Changed)
}

/// The stack lock for `destroy`. A drift-correction pass holds it while it works: when the
/// lock is held, the stack's passes running now are stopped (SIGTERM: the pass ends its waits,
/// lets the call in flight finish and releases the lock; the next pass finds the stack
/// destroyed and changes nothing) and waited for, then the lock is waited for as usual.
async fn lock_for_destroy(s: &Session) -> anyhow::Result<Option<engine::lock::StackLock>> {
    let held = match s.lock_waiting(Duration::ZERO).await {
        Err(held) if held.downcast_ref::<engine::lock::Held>().is_some() => held,
        other => return other,
    };
    let stopped = crate::run::stop_running_passes(s)
        .await
        .with_context(|| format!("{held:#}; stopping the stack's drift-correction passes (which may hold it) failed"))?;
    if stopped.is_empty() {
        return s.lock().await;
    }
    eprintln!("  {held:#}\n  stopped the stack's drift-correction pass(es) running now ({}); waiting for the lock", stopped.join(", "));
    // A pass that exited released the lock; a lease left by one ECS had to kill expires by itself.
    s.lock_waiting(s.lock_wait.max(Duration::from_secs(30))).await
}

async fn destroy_locked(s: &Session, auto_approve: bool, lock: Option<&engine::lock::StackLock>) -> anyhow::Result<ExitCode> {
    if s.spec.deletion_policy == DeletionPolicy::Retain {
        bail!("the spec says `deletion_policy: retain`: destroy deletes nothing. Change it to `delete` first if you really mean to delete stack `{}`.", s.spec.name);
    }
    let (state, observed) = s.observe_owned().await?;
    if observed.is_empty() {
        println!("Nothing to destroy: no resource is owned by stack {}.", s.spec.name);
        return Ok(ExitCode::SUCCESS);
    }
    // In the order they will go: dependents first, from the dependency graph.
    let ordered = engine::destroy_order(&observed, &state.resources);
    let kept = ordered.iter().filter(|o| engine::ownership::retained(&o.fields)).count();
    for o in ordered {
        let what = if engine::ownership::retained(&o.fields) { "retain (stays in AWS, no longer managed)" } else { "delete" };
        println!("- {} {} [{}]: {what}", o.kind, o.id, o.physical_id);
    }
    println!("\nDestroy stack `{}`: {} resources to delete, {kept} to retain.", s.spec.name, observed.len() - kept);
    confirm(auto_approve, "delete these resources")?;
    // Before the first delete: no unattended pass builds the stack again (see `run`). A pass
    // that starts meanwhile finds the lock held and exits.
    if let Some(l) = lock {
        l.mark_destroyed().await?;
    }
    let (deleted, retained) = engine::destroy(&s.ctx, &s.kinds, &observed, &state.resources).await?;
    println!("Destroy complete: {deleted} deleted, {retained} retained.");
    Ok(ExitCode::SUCCESS)
}

/// `Estimated monthly cost now: $97.31 (was $0.00)` for the apply summary.
fn cost_after(cost: &Cost) -> String {
    let was = if crate::plan::cost::usd(cost.before) == crate::plan::cost::usd(cost.after) {
        String::new()
    } else {
        format!(" (was {})", crate::plan::cost::usd(cost.before))
    };
    format!("Estimated monthly cost now: {}{was}", crate::plan::cost::usd(cost.after))
}

fn print_outputs(s: &Session, observed: &[engine::Observed], format: OutputFormat) -> anyhow::Result<()> {
    let out = crate::outputs::from_observed(&s.spec.name, s.ctx.region(), observed);
    match format {
        OutputFormat::Text => print!("{}", crate::outputs::render_text(&out)),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&out)?),
    }
    Ok(())
}

async fn release(lock: Option<engine::lock::StackLock>) -> anyhow::Result<()> {
    match lock {
        Some(l) => l.release().await.context("releasing the stack lock"),
        None => Ok(()),
    }
}

fn load(file: &std::path::Path) -> anyhow::Result<Spec> {
    spec::load(file).map_err(|e| anyhow::anyhow!("{e}\n(see `reconciler schema` for every allowed key)"))
}

fn confirm(auto_approve: bool, what: &str) -> anyhow::Result<()> {
    if auto_approve {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("refusing to {what} without --auto-approve: standard input is not a terminal");
    }
    print!("\nDo you want to {what}? Only `yes` is accepted: ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        bail!("cancelled; nothing was changed");
    }
    Ok(())
}

/// A loaded spec and a context to reach AWS with.
pub(crate) struct Session {
    /// The spec file (read again by `run` at every iteration).
    pub(crate) file: PathBuf,
    pub(crate) spec: Spec,
    pub(crate) ctx: Ctx,
    pub(crate) kinds: Vec<Box<dyn engine::Kind>>,
    lock_wait: Duration,
}

/// The reason a signal gives for stopping (run exits 0 for it).
pub(crate) const SIGNALLED: &str = "signal received";

impl Session {
    async fn open(file: &std::path::Path, aws: &AwsOpts) -> anyhow::Result<Self> {
        let spec = load(file)?;
        let mut settings = Settings::new(&spec.name, spec.tags.clone());
        settings.ignore_tags = spec.ignore_tags.clone();
        settings.poll_interval = Duration::from_secs_f64(aws.poll_interval.max(0.0));
        settings.wait_timeout = Duration::from_secs_f64(aws.wait_timeout.max(0.0));
        settings.max_concurrency = aws.concurrency.max(1);
        settings.max_attempts = aws.max_attempts.max(1);
        settings.retry_base = Duration::from_millis(aws.retry_base_ms);
        settings.propagation_timeout = Duration::from_secs_f64(aws.propagation_timeout.max(0.0));
        settings.conflict_timeout = Duration::from_secs_f64(aws.conflict_timeout.max(0.0));
        settings.listing_lag = Duration::from_secs_f64(aws.listing_lag.max(0.0));
        settings.service_concurrency = aws.service_concurrency.max(1);
        settings.wait_for_deployments = aws.wait_for_deployments;
        settings.interactive = std::io::stderr().is_terminal();
        let ctx = Ctx::from_env(&spec.region, settings).await;
        Ok(Session {
            file: file.to_path_buf(),
            spec,
            ctx,
            kinds: resources::registry(),
            lock_wait: Duration::from_secs_f64(aws.lock_wait.max(0.0)),
        })
    }

    /// Reads the spec file again. An invalid file, or one naming another stack or region
    /// (that would be another controller), is an error and the spec in use stays.
    pub(crate) fn reload(&mut self) -> anyhow::Result<()> {
        let spec = load(&self.file).with_context(|| format!("{} was edited and is not valid; nothing was changed", self.file.display()))?;
        if spec.name != self.spec.name || spec.region != self.spec.region {
            bail!(
                "{} now names stack `{}` in {} (this run manages `{}` in {}): restart `reconciler run` to manage another stack; nothing was changed",
                self.file.display(),
                spec.name,
                spec.region,
                self.spec.name,
                self.spec.region
            );
        }
        self.ctx.settings.tags = spec.tags.clone();
        self.ctx.settings.ignore_tags = spec.ignore_tags.clone();
        self.spec = spec;
        Ok(())
    }

    /// One listener for SIGTERM and SIGINT for the whole command, registered before anything
    /// changes: the first signal lets the mutations in flight finish and starts no new one
    /// (the command then releases the lock and exits); a second one exits at once.
    pub(crate) fn stop_on_signal(&self) {
        let stop = self.ctx.stop.clone();
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        let int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
        let (Ok(mut term), Ok(mut int)) = (term, int) else { return };
        tokio::spawn(async move {
            for n in 0.. {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
                if n > 0 {
                    eprintln!("second signal: exiting now");
                    std::process::exit(130);
                }
                eprintln!("signal received: finishing the changes in flight, starting no new one");
                stop.request(SIGNALLED);
            }
        });
    }

    /// Takes the stack lock if the spec configures one.
    pub(crate) async fn lock(&self) -> anyhow::Result<Option<engine::lock::StackLock>> {
        self.lock_waiting(self.lock_wait).await
    }

    /// [`lock`](Self::lock), waiting up to `wait` for another holder.
    async fn lock_waiting(&self, wait: Duration) -> anyhow::Result<Option<engine::lock::StackLock>> {
        let Some(l) = &self.spec.lock else {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                eprintln!(
                    "warning: the spec has no `lock:`: two reconcilers running at once are not fenced from each other (see README, Safety)"
                )
            });
            return Ok(None);
        };
        // The object the printed policy names (`stack_policy::lock_object`).
        let key = crate::stack_policy::lock_object(&self.spec).map(|(_, k)| k).unwrap_or_default();
        let ttl = Duration::from_secs(l.ttl_seconds as u64);
        let lock = engine::lock::StackLock::acquire(&self.ctx.client(), &l.bucket, &key, &self.spec.name, ttl, wait, self.ctx.stop.clone())
            .await?;
        Ok(Some(lock))
    }

    /// Live facts, the desired state computed from them, and what the stack owns now.
    /// Live facts and the desired state computed from them.
    async fn desired(&self) -> anyhow::Result<(desired::Facts, DesiredState)> {
        let s = &self.ctx.settings;
        // One pass: the facts and the observation that follows share their reads (the stack's
        // subnets, listed once for the zones in use and for the subnet kind).
        self.ctx.share_reads(true);
        let facts = engine::retry::with_retries(s, || crate::facts::gather(&self.ctx, &self.spec))
            .await
            .context("reading the facts the spec depends on (zones, an existing VPC, the account)")?;
        let state = desired::build(&self.spec, &facts)?;
        Ok((facts, state))
    }

    /// What the stack owns, for destroy: same-named resources it does not own are reported
    /// (on stdout, part of destroy's listing) and left alone.
    pub(crate) async fn observe_owned(&self) -> anyhow::Result<(DesiredState, engine::Snapshot)> {
        self.observe_owned_reporting(|m| println!("not ours, left alone: {m}")).await
    }

    /// Like `observe_owned`, for commands whose stdout is a document (`output`, `verify`):
    /// resources not owned are mentioned on stderr.
    pub(crate) async fn observe_owned_quietly(&self) -> anyhow::Result<(DesiredState, engine::Snapshot)> {
        self.observe_owned_reporting(|m| eprintln!("note: not owned by this stack, ignored: {m}")).await
    }

    async fn observe_owned_reporting(&self, report: impl Fn(&str)) -> anyhow::Result<(DesiredState, engine::Snapshot)> {
        let (_, state) = self.desired().await?;
        let (observed, skipped) = engine::observe_owned(&self.ctx, &self.kinds, &state.resources).await?;
        for m in skipped {
            report(&m.to_string());
        }
        Ok((state, observed))
    }

    /// The monthly cost of what is observed (before) and of the desired state (after).
    pub(crate) fn estimate(&self, state: &DesiredState, observed: &[engine::Observed]) -> Cost {
        crate::plan::cost::estimate(&self.spec.region, &self.spec.cost, &state.resources, observed)
    }

    pub(crate) async fn plan(&self) -> anyhow::Result<(DesiredState, engine::Snapshot, Plan)> {
        let (facts, state) = self.desired().await?;
        let observed = engine::observe(&self.ctx, &self.kinds, &state.resources).await?;
        let mut plan = engine::plan(&self.spec.name, &self.kinds, &state.resources, &observed, &state.externals)?;
        if let Some(d) = self.spec.api.as_ref().and_then(|a| a.domain.as_ref()) {
            if let Some(r) = crate::outputs::dns_record(Some(&d.name), &observed) {
                plan.notes.push(format!("custom domain: create the DNS record {} (the reconciler does not manage DNS)", r.describe()));
            }
        }
        plan.fingerprint = crate::plan::fingerprint(&self.spec, &facts, &observed, &state.resources);
        Ok((state, observed, plan))
    }
}
