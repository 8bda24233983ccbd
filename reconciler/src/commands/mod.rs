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

/// Releases the stack lock after the work it guarded, and returns that work's result: a
/// failed release is an error only when the work succeeded. When the work failed, its error
/// is what the person needs, and the release failure is a warning (the lease expires by
/// itself).
async fn release<T>(lock: Option<engine::lock::StackLock>, result: anyhow::Result<T>) -> anyhow::Result<T> {
    let released = match lock {
        Some(l) => l.release().await.context("releasing the stack lock"),
        None => Ok(()),
    };
    after_release(result, released)
}

fn after_release<T>(result: anyhow::Result<T>, released: anyhow::Result<()>) -> anyhow::Result<T> {
    match (result, released) {
        (Ok(v), Ok(())) => Ok(v),
        (Ok(_), Err(e)) => Err(e),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(r)) => {
            eprintln!("warning: {r:#}; its lease expires by itself");
            Err(e)
        }
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

#[cfg(test)]
mod tests {
    use super::after_release;

    /// The work's error wins over a failed release; a failed release fails work that succeeded.
    #[test]
    fn a_failed_release_never_hides_the_error_of_the_work() {
        let work_failed = || Err::<u8, _>(anyhow::anyhow!("creating sqs:queue queue: refused"));
        let release_failed = || Err(anyhow::anyhow!("releasing the stack lock: AccessDenied"));
        assert_eq!(after_release(work_failed(), release_failed()).unwrap_err().to_string(), "creating sqs:queue queue: refused");
        assert_eq!(after_release(Ok(7), release_failed()).unwrap_err().to_string(), "releasing the stack lock: AccessDenied");
        assert_eq!(after_release(work_failed(), Ok(())).unwrap_err().to_string(), "creating sqs:queue queue: refused");
        assert_eq!(after_release(Ok(7), Ok(())).unwrap(), 7);
    }
}
