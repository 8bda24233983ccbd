use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "benchling-webhook", version, about = "Benchling app webhook receiver and packaging worker")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP on $PORT (default 8080). The default command.
    Serve {
        /// Also run the packaging worker in this process.
        #[arg(long)]
        with_worker: bool,
    },
    /// Run only the packaging worker (consumes QUEUE_URL).
    Worker,
    /// Exit 0 only if the local /health/ready answers 200 (the container health check: the
    /// runtime image has no curl).
    Healthcheck,
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(1)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match service::config::Config::from_env() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let command = cli.command.unwrap_or(Command::Serve { with_worker: false });
    if let Command::Healthcheck = command {
        // The address the server listens on, or loopback when it listens on every interface.
        let host = if config.bind_addr.is_unspecified() { std::net::Ipv4Addr::LOCALHOST.into() } else { config.bind_addr };
        let url = format!("http://{}/health/ready", std::net::SocketAddr::new(host, config.port));
        let ok =
            reqwest::Client::new().get(&url).timeout(std::time::Duration::from_secs(3)).send().await.is_ok_and(|r| r.status().is_success());
        return if ok { ExitCode::SUCCESS } else { ExitCode::from(1) };
    }
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let run_worker = matches!(command, Command::Worker | Command::Serve { with_worker: true });
    let worker_cfg = if run_worker {
        match service::worker::WorkerConfig::from_env(&config) {
            Ok(c) => Some(c),
            Err(e) => return fail(e),
        }
    } else {
        None
    };
    let listener = if let Command::Serve { .. } = command {
        match tokio::net::TcpListener::bind((config.bind_addr, config.port)).await {
            Ok(l) => Some(l),
            Err(e) => return fail(format!("cannot listen on {}:{}: {e}", config.bind_addr, config.port)),
        }
    } else {
        None
    };
    let (state, aws) = service::start(config).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = worker_cfg.map(|cfg| tokio::spawn(service::run_worker(state.clone(), aws, cfg, stop_rx)));
    let served = match listener {
        Some(l) => {
            tracing::info!(port = l.local_addr().map(|a| a.port()).unwrap_or(0), version = service::app::VERSION, "listening");
            service::serve(state, l, service::shutdown_signal()).await
        }
        None => {
            service::shutdown_signal().await;
            Ok(())
        }
    };
    // SIGTERM: stop taking work, let the worker finish the job in hand.
    let _ = stop_tx.send(true);
    if let Some(w) = worker {
        let _ = w.await;
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}
