//! The commands that read and report, never change: `plan` (exit 2 with
//! `--detailed-exitcode` when there are changes), `status`, `output`, `verify` (exit 1 when
//! the endpoint does not answer as the service does).

use super::print_outputs;
use crate::args::{Format, OutputFormat};
use crate::plan::{render_json, render_markdown, render_text, Style};
use crate::session::Session;
use anyhow::Context as _;
use std::path::Path;
use std::process::ExitCode;

/// `plan FILE`: printed in `format`, and saved as JSON to `out` for a reviewed apply.
pub async fn plan(s: &Session, detailed_exitcode: bool, format: Format, out: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (state, observed, plan) = s.plan().await?;
    let cost = s.estimate(&state, &observed);
    if let Some(out) = out {
        std::fs::write(out, render_json(&plan, Some(&cost))).with_context(|| format!("writing the plan to {}", out.display()))?;
        eprintln!("plan saved to {} (fingerprint {})", out.display(), plan.fingerprint);
    }
    match format {
        Format::Text => print!("{}", render_text(&plan, Some(&cost), Style::for_stdout())),
        Format::Json => print!("{}", render_json(&plan, Some(&cost))),
        Format::Markdown => print!("{}", render_markdown(&plan, Some(&cost))),
    }
    Ok(if detailed_exitcode && plan.has_changes() { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

/// `status FILE`: each resource's readiness and drift, Kubernetes-style conditions.
pub async fn status(s: &Session, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let (_, observed, plan) = s.plan().await?;
    let status = crate::status::of(&plan, &observed);
    match format {
        OutputFormat::Text => print!("{}", crate::status::render_text(&status)),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&status)?),
    }
    Ok(ExitCode::SUCCESS)
}

/// `output FILE`: the stack's outputs (webhook URL, names, ARNs) from what exists.
pub async fn output(s: &Session, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let (_, observed) = s.observe_owned_quietly().await?;
    print_outputs(s, &observed, format)?;
    Ok(ExitCode::SUCCESS)
}

/// `verify FILE`: calls the webhook endpoint (the stack's, or `endpoint`); where it does not
/// answer as the service does, gathers the evidence along the path and says where it breaks.
pub async fn verify(s: &Session, endpoint: Option<String>, format: OutputFormat) -> anyhow::Result<ExitCode> {
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
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&serde_json::json!({"verdict": verdict, "evidence": evidence}))?),
    }
    Ok(if verdict.ready { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
