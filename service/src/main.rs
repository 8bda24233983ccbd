use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "benchling-webhook", version, about = "Benchling app webhook receiver")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP on $PORT (default 8080). The default command.
    Serve,
    /// Exit 0 only if the local /health/ready answers 200 (the container health check: the
    /// runtime image has no curl).
    Healthcheck,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match service::config::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Healthcheck => {
            let url = format!("http://127.0.0.1:{}/health/ready", config.port);
            let ok = reqwest::Client::new().get(&url).timeout(std::time::Duration::from_secs(3)).send().await.is_ok_and(|r| r.status().is_success());
            if ok { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Command::Serve => {
            tracing_subscriber::fmt()
                .json()
                .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
                .init();
            let listener = match tokio::net::TcpListener::bind(("0.0.0.0", config.port)).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: cannot listen on port {}: {e}", config.port);
                    return ExitCode::from(1);
                }
            };
            tracing::info!(port = config.port, version = service::app::VERSION, "listening");
            let state = service::start(config).await;
            match service::serve(state, listener, service::shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
