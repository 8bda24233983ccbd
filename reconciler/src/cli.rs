//! Command dispatch: `validate`, `schema`, `policy`, `plan`, `apply`, `run`, `status`,
//! `output`, `verify`, `destroy` (arguments in `args`, the shared core in `session`, each
//! command that does more than print in `commands`, the long-running `run` in `run`). Exit
//! codes follow terraform's `-detailed-exitcode`: 0 success / no changes, 2 changes present
//! (with `--detailed-exitcode`), 1 error; and 3 when an unattended apply held destructive
//! steps back.

use crate::args::{Cli, Command, PolicyFor};
use crate::commands;
use crate::engine;
use crate::session::{load, Session};
use crate::spec;
use clap::Parser;
use std::process::ExitCode;

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
            commands::plan(&Session::open(&file, &aws).await?, detailed_exitcode, format, out.as_deref()).await
        }
        Command::Apply { file, auto_approve, plan: saved, allow_destructive, detailed_exitcode, aws } => {
            let s = Session::open(&file, &aws).await?;
            commands::apply(&s, &file, auto_approve, allow_destructive, saved.as_deref(), detailed_exitcode).await
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
        Command::Status { file, format, aws } => commands::status(&Session::open(&file, &aws).await?, format).await,
        Command::Output { file, format, aws } => commands::output(&Session::open(&file, &aws).await?, format).await,
        Command::Verify { file, endpoint, format, aws } => commands::verify(&Session::open(&file, &aws).await?, endpoint, format).await,
        Command::Destroy { file, auto_approve, aws } => commands::destroy(&Session::open(&file, &aws).await?, auto_approve).await,
    }
}
