//! What every verb gets: the stack's identity, tunables, and AWS clients for any service,
//! all built from one shared SDK configuration.

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Stack name: the `reconciler:stack` tag value.
    pub stack: String,
    /// User tags from the spec, put on every owned resource.
    pub tags: BTreeMap<String, String>,
    /// Tag keys (or `prefix*`) other tools manage: dropped from what is observed unless the
    /// spec sets them, so they are neither compared nor removed.
    pub ignore_tags: Vec<String>,
    /// How often waiters poll (NAT gateways, Cloud Map operations, ECS deployments).
    pub poll_interval: Duration,
    /// How long one waiter may wait before failing with a message that a re-run resumes.
    pub wait_timeout: Duration,
    /// Mutations in flight at once.
    pub max_concurrency: usize,
    /// Tries per AWS operation when it fails retryably (throttling, 5xx, transport).
    pub max_attempts: u32,
    /// First backoff; doubles per attempt, with full jitter, capped at 20 s.
    pub retry_base: Duration,
    /// Wait for ECS deployments to reach a steady state after a create or update (on by
    /// default; an emulator never gets there).
    pub wait_for_deployments: bool,
    /// Whether a terminal is attached (progress lines vs. quiet).
    pub interactive: bool,
    /// Unique to this process: idempotency tokens are derived from it, so a create retried in
    /// this run reuses its token and a later run (a replacement) gets a new one.
    pub run_id: String,
}

impl Settings {
    pub fn new(stack: &str, tags: BTreeMap<String, String>) -> Self {
        Settings {
            stack: stack.to_string(),
            tags,
            ignore_tags: Vec::new(),
            poll_interval: Duration::from_secs(5),
            wait_timeout: Duration::from_secs(600),
            max_concurrency: 4,
            max_attempts: 5,
            retry_base: Duration::from_millis(500),
            wait_for_deployments: true,
            interactive: false,
            run_id: new_run_id(),
        }
    }

    /// An idempotency token (`ClientToken`) for creating logical resource `id` in this run:
    /// at most 36 ASCII characters (ECS's limit; EC2 allows 64). AWS returns the resource the
    /// first request made when a retry of an ambiguous create sends the same token.
    pub fn client_token(&self, id: &str) -> String {
        // FNV-1a: stable, dependency-free; the stack and the id together.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in self.stack.bytes().chain([0]).chain(id.bytes()) {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
        format!("{}-{h:016x}", self.run_id)
    }
}

fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:012x}", (nanos as u64 ^ ((std::process::id() as u64) << 40)) & 0xffff_ffff_ffff)
}

/// A request to stop: after a signal, or when the stack lock was lost. Mutations in flight
/// finish; no new one starts; the command then says why it stopped.
#[derive(Debug, Default)]
pub struct Stop {
    reason: Mutex<Option<String>>,
    notify: tokio::sync::Notify,
}

impl Stop {
    /// The first reason wins.
    pub fn request(&self, reason: impl Into<String>) {
        let mut r = self.reason.lock().expect("stop reason");
        if r.is_none() {
            *r = Some(reason.into());
        }
        self.notify.notify_waiters();
    }

    pub fn requested(&self) -> Option<String> {
        self.reason.lock().expect("stop reason").clone()
    }

    /// Resolves once a stop is requested.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.requested().is_some() {
                return;
            }
            notified.await;
        }
    }
}

/// An AWS service client that can be built from the shared configuration. Each service
/// folder under `resources/` implements it for its SDK client; the engine names none.
pub trait Service: Clone + Send + Sync + 'static {
    fn connect(conf: &SdkConfig, emulated: bool) -> Self;
}

pub struct Ctx {
    pub settings: Settings,
    /// The one SDK configuration (credential chain, region, `AWS_ENDPOINT_URL`).
    pub aws: SdkConfig,
    /// True when `AWS_ENDPOINT_URL` points at an emulator (S3 path-style addressing).
    pub emulated: bool,
    /// Set by a signal or a lost lock: start no new mutation.
    pub stop: std::sync::Arc<Stop>,
    clients: Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>,
}

impl Ctx {
    /// Standard AWS configuration (credential chain, profiles, `AWS_ENDPOINT_URL`), in the
    /// spec's region. The SDK's own retries are off: the engine retries (see `retry.rs`).
    pub async fn from_env(region: &str, settings: Settings) -> Self {
        let aws = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .retry_config(RetryConfig::disabled())
            .load()
            .await;
        let emulated = std::env::var_os("AWS_ENDPOINT_URL").is_some();
        Ctx { settings, aws, emulated, stop: Default::default(), clients: Mutex::new(HashMap::new()) }
    }

    /// The client for service `C`, built once and shared (clients are cheap handles).
    pub fn client<C: Service>(&self) -> C {
        let mut clients = self.clients.lock().expect("client cache");
        clients
            .entry(TypeId::of::<C>())
            .or_insert_with(|| Box::new(C::connect(&self.aws, self.emulated)))
            .downcast_ref::<C>()
            .expect("one client type per TypeId")
            .clone()
    }

    /// The full tag set for an owned resource: user tags, a Name, and the ownership tags.
    pub fn tags_for(&self, id: &str) -> BTreeMap<String, String> {
        super::ownership::tags(&self.settings.stack, id, &self.settings.tags)
    }

    pub fn region(&self) -> &str {
        self.aws.region().map(|r| r.as_ref()).unwrap_or("us-east-1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_tokens_are_stable_in_a_run_and_new_in_the_next() {
        let a = Settings::new("stack", BTreeMap::new());
        let t = a.client_token("nat-1");
        assert_eq!(t, a.client_token("nat-1"), "a retry in this run reuses the token");
        assert_ne!(t, a.client_token("nat-2"));
        assert!(t.len() <= 36 && t.is_ascii(), "{t}");
        let mut b = a.clone();
        b.run_id = "000000000001".into();
        assert_ne!(t, b.client_token("nat-1"), "a later run (a replacement) gets a new token");
        let other_stack = Settings { stack: "other".into(), ..a.clone() };
        assert_ne!(t, other_stack.client_token("nat-1"));
    }
}
