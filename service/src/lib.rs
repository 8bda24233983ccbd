//! The Benchling webhook service: verifies Benchling app webhooks, acknowledges them only once
//! they are durably queued (SQS FIFO), and reports its health for ECS and Cloud Map.

pub mod app;
pub mod benchling;
pub mod config;
pub mod export;
pub mod job;
pub mod jwks;
pub mod queue;
pub mod replay;
pub mod verify;
pub mod worker;

use app::AppState;
use config::Config;
use queue::{NoQueue, Queue, SqsQueue};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How often a missing secret or missing keys are retried.
pub const RETRY_EVERY: Duration = Duration::from_secs(30);

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("HTTP client")
}

/// Builds the state with AWS clients from the standard configuration, and starts the
/// background loader (secret, then signing keys, then their 6-hourly refresh).
pub async fn start(config: Config) -> (Arc<AppState>, aws_config::SdkConfig) {
    let aws = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let queue: Arc<dyn Queue> = match &config.queue_url {
        Some(url) => Arc::new(SqsQueue::new(
            queue::sqs_client(&aws, config.sqs_send_timeout),
            url.clone(),
            config.sqs_max_in_flight,
            config.sqs_send_timeout,
        )),
        None => Arc::new(NoQueue),
    };
    let state = AppState::new(config, queue);
    let sm = aws_sdk_secretsmanager::Client::new(&aws);
    tokio::spawn(load_forever(state.clone(), sm, http_client(), RETRY_EVERY));
    (state, aws)
}

/// Loads the secret until it succeeds (degraded meanwhile, never crash-looping), then keeps
/// the signing keys fresh.
pub async fn load_forever(state: Arc<AppState>, sm: aws_sdk_secretsmanager::Client, http: reqwest::Client, retry: Duration) {
    let Some(secret_id) = state.config.secret_id.clone() else {
        state.set_degraded("BENCHLING_SECRET is not set: give the Secrets Manager name or ARN of the Benchling secret".into());
        tracing::error!("BENCHLING_SECRET is not set; serving in degraded mode (webhooks get 503)");
        return;
    };
    let cache = loop {
        match config::load_secret(&sm, &secret_id).await {
            Ok(secret) => {
                tracing::info!(tenant = %secret.tenant, verification = secret.enable_webhook_verification, "Benchling secret loaded");
                break state.set_secret(secret, http.clone()).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "Benchling secret not loaded; degraded, retrying");
                state.set_degraded(e);
                tokio::time::sleep(retry).await;
            }
        }
    };
    loop {
        let wait = match cache.refresh().await {
            Ok(n) => {
                tracing::info!(keys = n, url = cache.url(), "signing keys loaded");
                jwks::REFRESH_EVERY
            }
            Err(e) => {
                tracing::error!(error = %e, "signing keys not loaded; retrying");
                retry
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// S3 client; path-style addressing only against an emulator (`AWS_ENDPOINT_URL`).
pub fn s3_client(aws: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let emulated = std::env::var_os("AWS_ENDPOINT_URL").is_some();
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(aws).force_path_style(emulated).build())
}

/// Waits for the Benchling secret, then runs the packaging worker until `stop` turns true.
pub async fn run_worker(
    state: Arc<AppState>,
    aws: aws_config::SdkConfig,
    cfg: worker::WorkerConfig,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let secret = loop {
        if let Some(s) = state.secret.read().await.clone() {
            break s;
        }
        if *stop.borrow() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let w = Arc::new(worker::Worker {
        benchling: benchling::Benchling::new(http_client(), &secret, cfg.benchling_base_url.as_deref()),
        cfg,
        // Above the 20 s long poll, so that a hung call (a receive, or the heartbeat's
        // ChangeMessageVisibility) gives up instead of stalling the worker.
        sqs: queue::sqs_client_with(&aws, std::time::Duration::from_secs(60), std::time::Duration::from_secs(30)),
        s3: s3_client(&aws),
        secret: (*secret).clone(),
    });
    tracing::info!(queue = w.cfg.queue_url, "worker started");
    w.run(stop).await;
}

/// Serves until `shutdown` completes, then finishes in-flight requests.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app::router(state)).with_graceful_shutdown(shutdown).await
}

/// Resolves on SIGTERM (ECS stop) or Ctrl-C.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
}
