#[tokio::main]
async fn main() -> std::process::ExitCode {
    reconciler::cli::main().await
}
