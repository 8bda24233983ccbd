//! `apply`: plan, show, confirm (or check a reviewed plan), converge under the stack lock,
//! then print the outputs. Exit 0, 2 with `--detailed-exitcode` when something changed, 3
//! when an unattended apply held destructive steps back.

use super::{confirm, print_outputs, release};
use crate::args::OutputFormat;
use crate::engine;
use crate::plan::{render_text, Cost, Style};
use crate::session::{Session, HELD};
use anyhow::Context as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

/// How an apply ended, for its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
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

/// `apply FILE`: under the stack lock, released however the apply ends.
pub async fn apply(
    s: &Session,
    file: &Path,
    auto_approve: bool,
    allow_destructive: bool,
    saved: Option<&Path>,
    detailed_exitcode: bool,
) -> anyhow::Result<ExitCode> {
    s.stop_on_signal();
    let mut lock = s.lock().await?;
    let result = apply_locked(s, file, auto_approve, allow_destructive, saved, &mut lock).await;
    release(lock, result).await.map(|outcome| outcome.exit_code(detailed_exitcode))
}

async fn apply_locked(
    s: &Session,
    file: &Path,
    auto_approve: bool,
    allow_destructive: bool,
    saved: Option<&Path>,
    lock: &mut Option<engine::lock::StackLock>,
) -> anyhow::Result<Applied> {
    // A person's apply that goes ahead (confirmed, or nothing to change) builds the stack on
    // purpose: unattended passes may follow again. A cancelled one leaves the mark. Looked
    // for while the plan is made (most applies find none: one round trip less); a failure is
    // a warning, not a failed apply.
    let started = Instant::now();
    let (planned, marked) = s.under_lock(lock, true, || s.plan(), || s.lock()).await?;
    let (state, observed, plan) = planned?;
    let lock = lock.as_ref();
    let clear_destroyed = async move {
        let cleared = match (lock, marked) {
            (Some(l), Ok(true)) => l.clear_destroyed().await,
            (_, Ok(_)) => Ok(()),
            (_, Err(e)) => Err(e),
        };
        if let Err(e) = cleared {
            eprintln!("warning: {e:#}; unattended passes keep refusing to run until an apply clears the destroyed mark (or it is deleted)");
        }
    };
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
        clear_destroyed.await;
        println!();
        print_outputs(s, &observed, OutputFormat::Text)?;
        engine::fail_if_unhealthy(&plan, &observed)?;
        return Ok(Applied::NothingToDo);
    }
    if !reviewed {
        confirm(auto_approve, "apply these changes")?;
    }
    clear_destroyed.await;
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

/// `Estimated monthly cost now: $97.31 (was $0.00)` for the apply summary.
fn cost_after(cost: &Cost) -> String {
    let was = if crate::plan::prices::usd(cost.before) == crate::plan::prices::usd(cost.after) {
        String::new()
    } else {
        format!(" (was {})", crate::plan::prices::usd(cost.before))
    };
    format!("Estimated monthly cost now: {}{was}", crate::plan::prices::usd(cost.after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_detailed_exitcode_and_held_is_always_3() {
        for detailed in [false, true] {
            assert_eq!(Applied::NothingToDo.exit_code(detailed), ExitCode::SUCCESS);
            assert_eq!(Applied::Held.exit_code(detailed), ExitCode::from(HELD));
        }
        assert_eq!(Applied::Changed.exit_code(false), ExitCode::SUCCESS);
        assert_eq!(Applied::Changed.exit_code(true), ExitCode::from(2));
    }
}
