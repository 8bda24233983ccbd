//! Durable acknowledgement: an event is acknowledged only once its queue accepted it.

use futures::future::BoxFuture;
use std::time::Duration;

/// Where verified events go. FIFO semantics: `group` orders (the entry id), `dedup` makes a
/// retried send harmless (the webhook-id).
pub trait Queue: Send + Sync {
    fn send<'a>(&'a self, group: &'a str, dedup: &'a str, body: String) -> BoxFuture<'a, Result<(), String>>;
}

/// SQS FIFO queue. Sends in flight are capped (`SQS_MAX_IN_FLIGHT`, default 32): each one
/// holds a pooled connection and the SDK's request state, and at ~10 ms per SendMessage 32
/// carry ~3,000 acknowledgements a second, far above what one task receives.
///
/// A send, waiting for its turn included, gives up after `timeout` (`SQS_SEND_TIMEOUT_MS`,
/// 10 s by default): the event is then answered 503 (not acknowledged) long before API
/// Gateway's 30 s integration timeout would cut the caller off with a 504 whose outcome is
/// unknown. The client itself has the same operation timeout and a third of it per attempt
/// (`sqs_client`), so a hung connection is retried once or twice inside that budget.
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
    in_flight: tokio::sync::Semaphore,
    timeout: Duration,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: String, max_in_flight: usize, timeout: Duration) -> Self {
        SqsQueue { client, url, in_flight: tokio::sync::Semaphore::new(max_in_flight.max(1)), timeout }
    }
}

/// An SQS client whose calls give up after `timeout` in all (a third of it per attempt).
pub fn sqs_client(aws: &aws_config::SdkConfig, timeout: Duration) -> aws_sdk_sqs::Client {
    sqs_client_with(aws, timeout, timeout / 3)
}

/// An SQS client whose calls give up after `operation` in all and `attempt` per attempt.
pub fn sqs_client_with(aws: &aws_config::SdkConfig, operation: Duration, attempt: Duration) -> aws_sdk_sqs::Client {
    let timeouts =
        aws_sdk_sqs::config::timeout::TimeoutConfig::builder().operation_timeout(operation).operation_attempt_timeout(attempt).build();
    aws_sdk_sqs::Client::from_conf(aws_sdk_sqs::config::Builder::from(aws).timeout_config(timeouts).build())
}

impl Queue for SqsQueue {
    fn send<'a>(&'a self, group: &'a str, dedup: &'a str, body: String) -> BoxFuture<'a, Result<(), String>> {
        let send = async move {
            let _permit = self.in_flight.acquire().await.map_err(|_| "queue closed".to_string())?;
            self.client
                .send_message()
                .queue_url(&self.url)
                .message_group_id(group)
                .message_deduplication_id(dedup)
                .message_body(body)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("SQS SendMessage: {}", aws_sdk_sqs::error::DisplayErrorContext(&e)))
        };
        Box::pin(async move {
            tokio::time::timeout(self.timeout, send)
                .await
                .unwrap_or_else(|_| Err(format!("SQS SendMessage did not complete within {} ms", self.timeout.as_millis())))
        })
    }
}

/// No queue configured: every send fails, so nothing is acknowledged that is not queued.
pub struct NoQueue;

impl Queue for NoQueue {
    fn send<'a>(&'a self, _: &'a str, _: &'a str, _: String) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Err("QUEUE_URL is not set".to_string()) })
    }
}
