//! What every verb gets: the stack's identity, tunables, and AWS clients.

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Stack name: the `reconciler:stack` tag value.
    pub stack: String,
    /// User tags from the spec, put on every owned resource.
    pub tags: BTreeMap<String, String>,
    /// How often waiters poll (NAT gateways, and later VPC links, ECS deployments).
    pub poll_interval: Duration,
    /// How long one waiter may wait before failing with a message that a re-run resumes.
    pub wait_timeout: Duration,
    /// Mutations in flight at once.
    pub max_concurrency: usize,
    /// Tries per AWS operation when it fails retryably (throttling, 5xx, transport).
    pub max_attempts: u32,
    /// First backoff; doubles per attempt, with full jitter, capped at 20 s.
    pub retry_base: Duration,
}

impl Settings {
    pub fn new(stack: &str, tags: BTreeMap<String, String>) -> Self {
        Settings {
            stack: stack.to_string(),
            tags,
            poll_interval: Duration::from_secs(5),
            wait_timeout: Duration::from_secs(600),
            max_concurrency: 4,
            max_attempts: 5,
            retry_base: Duration::from_millis(500),
        }
    }
}

pub struct Ctx {
    pub settings: Settings,
    pub ec2: aws_sdk_ec2::Client,
    /// For the stack lock only.
    pub s3: aws_sdk_s3::Client,
}

impl Ctx {
    /// Standard AWS configuration (credential chain, profiles, `AWS_ENDPOINT_URL`), in the
    /// spec's region. The SDK's own retries are off: the engine retries (see `retry.rs`).
    pub async fn from_env(region: &str, settings: Settings) -> Self {
        let conf = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .retry_config(RetryConfig::disabled())
            .load()
            .await;
        // Path-style addressing only against an emulator (`AWS_ENDPOINT_URL`).
        let emulated = std::env::var_os("AWS_ENDPOINT_URL").is_some();
        let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&conf).force_path_style(emulated).build());
        Ctx { settings, ec2: aws_sdk_ec2::Client::new(&conf), s3 }
    }

    /// The full tag set for an owned resource: user tags, a Name, and the ownership tags.
    pub fn tags_for(&self, id: &str) -> BTreeMap<String, String> {
        super::ownership::tags(&self.settings.stack, id, &self.settings.tags)
    }
}
