//! One file per command that does more than print (`apply`, `destroy`, `inspect`: `plan`,
//! `status`, `output`, `verify`; `run` is `crate::run`), and what they share: the
//! confirmation prompt, the outputs and releasing the stack lock. `cli` dispatches to them.

mod apply;
mod destroy;
mod inspect;

pub use apply::apply;
pub use destroy::destroy;
pub use inspect::{output, plan, status, verify};

use crate::args::OutputFormat;
use crate::engine;
use crate::session::Session;
use anyhow::{bail, Context as _};
use std::io::{BufRead, IsTerminal, Write};

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
