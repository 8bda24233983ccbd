//! Command dispatch: `validate`, `schema`, `policy`, `plan`, `apply`, `run`, `status`,
//! `output`, `verify`, `destroy` (arguments in `args`, the shared core in `session`, the
//! long-running `run` in `run`). Exit codes follow terraform's `-detailed-exitcode`: 0
//! success / no changes, 2 changes present (with `--detailed-exitcode`), 1 error; and 3 when
//! an unattended apply held destructive steps back.

use crate::args::{Cli, Command, Format, OutputFormat, PolicyFor};
use crate::engine;
use crate::plan::{render_json, render_markdown, render_text, Cost, Style};
use crate::session::{load, Session, HELD};
use crate::spec::{self, DeletionPolicy};
use anyhow::{bail, Context as _};
use clap::Parser;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

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

pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::log::init(cli.log_format);
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            crate::log::failure(&format!("{e:#}"), engine::advice::advice(&e).as_deref());
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
            let doc = crate::spec::policy::document(&spec, purpose);
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
            crate::plan::check_saved(&path.display().to_string(), &text, &plan, &file.display().to_string())?;
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
    let output_kinds: Vec<Box<dyn engine::DynKind>> =
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
    let was = if crate::plan::prices::usd(cost.before) == crate::plan::prices::usd(cost.after) {
        String::new()
    } else {
        format!(" (was {})", crate::plan::prices::usd(cost.before))
    };
    format!("Estimated monthly cost now: {}{was}", crate::plan::prices::usd(cost.after))
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
