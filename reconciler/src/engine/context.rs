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
    /// Whether observe may use account-wide batch reads (the spec's `account_wide_reads`);
    /// kinds fall back to reading resource by resource without them.
    pub account_wide_reads: bool,
    /// How often waiters poll (NAT gateways, Cloud Map operations, ECS deployments).
    pub poll_interval: Duration,
    /// How long one waiter may wait before failing with a message that a re-run resumes.
    pub wait_timeout: Duration,
    /// Steps at work at once (a step that only waits gives its slot back: `slots.rs`).
    pub max_concurrency: usize,
    /// Tries per AWS call when it is throttled (or a read fails with a 5xx), and per resource
    /// when a mutation fails ambiguously (see `retry.rs`).
    pub max_attempts: u32,
    /// First backoff; doubles per attempt, with full jitter, capped at 20 s.
    pub retry_base: Duration,
    /// How long "not usable yet" is retried: IAM propagation (a role another service cannot
    /// assume a moment after its creation), an id EC2 does not know yet.
    pub propagation_timeout: Duration,
    /// How long conflicts and dependency waits are retried (another change in progress, a
    /// resource still in use by one being deleted).
    pub conflict_timeout: Duration,
    /// How long a create whose answer was lost is looked for (listings lag behind creates)
    /// before it is sent again.
    pub listing_lag: Duration,
    /// Calls in flight to one AWS service at once (per process).
    pub service_concurrency: usize,
    /// After a create or update, wait until the resource runs what was asked, for kinds whose
    /// changes roll out over time (an ECS service's deployment). On by default; off where
    /// nothing runs (an emulator never gets there).
    pub wait_for_rollouts: bool,
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
            account_wide_reads: true,
            poll_interval: Duration::from_secs(5),
            wait_timeout: Duration::from_secs(600),
            max_concurrency: 8,
            max_attempts: 5,
            retry_base: Duration::from_millis(500),
            propagation_timeout: Duration::from_secs(120),
            conflict_timeout: Duration::from_secs(600),
            listing_lag: Duration::from_secs(30),
            service_concurrency: 8,
            wait_for_rollouts: true,
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
    fn connect(conf: &SdkConfig) -> Self;
}

pub struct Ctx {
    pub settings: Settings,
    /// The one SDK configuration (credential chain, region, `AWS_ENDPOINT_URL`).
    pub aws: SdkConfig,
    /// True when `AWS_ENDPOINT_URL` is set: the tests' emulator (a kind may tell an
    /// emulator's missing call from a real failure).
    pub emulated: bool,
    /// Set by a signal or a lost lock: start no new mutation.
    pub stop: std::sync::Arc<Stop>,
    clients: Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>,
    /// Reads shared by the kinds during one observation (see [`Ctx::shared_read`]); `None`
    /// outside one, so that every later read sees what mutations did.
    reads: Mutex<Option<HashMap<String, SharedCell>>>,
    /// Calls AWS allows only once per interval (a kind names its call and the interval).
    pacer: Pacer,
    /// Calls these credentials were refused (a batch read with a fallback): not asked again
    /// in this process, so that a denial costs one AccessDenied, not one every pass.
    refused: Mutex<std::collections::BTreeSet<String>>,
    /// Whether a batch read may stand in for a resource's own ownership read (see
    /// [`Ctx::trust_batches`]).
    batches_trusted: std::sync::atomic::AtomicBool,
}

/// Spaces calls that share a quota key: each waits until `interval` has passed since the last
/// one with its key was answered, one at a time. The slot is held until the call's answer
/// (the returned [`PaceSlot`] is dropped), so the spacing AWS sees between two arrivals is
/// never shorter than `interval`, whatever the network's latency did to either. (The quota is
/// per account; calls from other processes still meet AWS's 429, which is retried with its
/// `Retry-After`.)
#[derive(Default)]
pub struct Pacer {
    last: Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<Option<std::time::Instant>>>>>,
}

/// One paced call's turn: hold it across the call; dropping it (answered, failed or
/// cancelled) starts the next call's interval.
pub struct PaceSlot(tokio::sync::OwnedMutexGuard<Option<std::time::Instant>>);

impl Drop for PaceSlot {
    fn drop(&mut self) {
        *self.0 = Some(std::time::Instant::now());
    }
}

impl Pacer {
    pub async fn pace(&self, key: &str, interval: Duration) -> PaceSlot {
        let slot = self.last.lock().expect("pacer").entry(key.to_string()).or_default().clone();
        // Waiting for the turn and the interval is a wait: the step's slot is free meanwhile.
        let last = super::slots::idle(async {
            let last = slot.lock_owned().await;
            if let Some(at) = *last {
                let due = at + interval;
                let now = std::time::Instant::now();
                if due > now {
                    crate::log::progress(&format!("waiting {:.0?} for AWS's quota of one {key} per {interval:?}", due - now));
                    tokio::time::sleep(due - now).await;
                }
            }
            last
        })
        .await;
        PaceSlot(last)
    }
}

type SharedCell = std::sync::Arc<tokio::sync::OnceCell<std::sync::Arc<dyn Any + Send + Sync>>>;

impl Ctx {
    /// Standard AWS configuration (credential chain, profiles, `AWS_ENDPOINT_URL`), in the
    /// spec's region. The SDK retries a call only by the engine's rules (`calls.rs`): throttled
    /// calls and reads, `max_attempts` tries from `retry_base`, capped at 20 s.
    pub async fn from_env(region: &str, settings: Settings) -> Self {
        let retries = RetryConfig::standard()
            .with_max_attempts(settings.max_attempts.max(1))
            .with_initial_backoff(settings.retry_base)
            .with_max_backoff(Duration::from_secs(20));
        let aws = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .retry_config(retries)
            .http_client(super::calls::bounded_https_client(settings.service_concurrency))
            .load()
            .await;
        let emulated = std::env::var_os("AWS_ENDPOINT_URL").is_some();
        Ctx {
            settings,
            aws,
            emulated,
            stop: Default::default(),
            clients: Mutex::new(HashMap::new()),
            reads: Mutex::new(None),
            pacer: Pacer::default(),
            refused: Mutex::default(),
            batches_trusted: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// The client for service `C`, built once and shared (clients are cheap handles).
    pub fn client<C: Service>(&self) -> C {
        let mut clients = self.clients.lock().expect("client cache");
        clients
            .entry(TypeId::of::<C>())
            .or_insert_with(|| Box::new(C::connect(&self.aws)))
            .downcast_ref::<C>()
            .expect("one client type per TypeId")
            .clone()
    }

    /// Starts (`true`, afresh) or ends (`false`) one observation: while it lasts,
    /// [`Ctx::shared_read`] reads each key once for all kinds (and for the facts read first).
    pub fn share_reads(&self, on: bool) {
        *self.reads.lock().expect("read cache") = on.then(HashMap::new);
    }

    /// Joins the observation started with the facts (its reads are shared), or starts one.
    pub fn join_shared_reads(&self) {
        self.reads.lock().expect("read cache").get_or_insert_with(HashMap::new);
    }

    /// A listing several kinds need (a parent listing its child kinds share): during an
    /// observation it is read once and shared, concurrent callers
    /// waiting for the first; a failed read is not kept (the next caller reads again). Outside
    /// an observation it is read every time.
    pub async fn shared_read<T, F, Fut>(&self, key: &str, read: F) -> anyhow::Result<std::sync::Arc<T>>
    where
        T: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        let cell = self.reads.lock().expect("read cache").as_mut().map(|m| m.entry(key.to_string()).or_default().clone());
        let Some(cell) = cell else { return Ok(std::sync::Arc::new(read().await?)) };
        let value = cell
            .get_or_try_init(|| async { read().await.map(|v| std::sync::Arc::new(v) as std::sync::Arc<dyn Any + Send + Sync>) })
            .await?;
        value.clone().downcast::<T>().map_err(|_| anyhow::anyhow!("internal error: shared read `{key}` was read as two types"))
    }

    /// Whether an observation is under way (its reads are shared): a batch read that the
    /// kinds would share is worth making only then.
    pub fn in_observation(&self) -> bool {
        self.reads.lock().expect("read cache").is_some()
    }

    /// Whether these credentials were refused `call` earlier in this process.
    pub fn was_refused(&self, call: &str) -> bool {
        self.refused.lock().expect("refused calls").contains(call)
    }

    /// For a batch read with a fallback (what is done `instead`) that failed with `e`: says so
    /// on stderr. A refusal, or any answer asking again cannot change (a validation error, an
    /// endpoint without the API), is also remembered for the process (see
    /// [`Ctx::was_refused`]), so later passes do not ask again; a 5xx or a throttle the SDK's
    /// tries did not get past is asked again next pass.
    pub fn batch_failed(&self, call: &str, e: &anyhow::Error, instead: &str) {
        let denied = super::retry::is_denied(e);
        let for_good = denied || super::retry::aws_error(e).is_some_and(|a| a.class == super::retry::ErrorClass::Final);
        if for_good {
            self.refused.lock().expect("refused calls").insert(call.to_string());
        }
        match (denied, for_good) {
            (true, _) => crate::log::progress(&format!("{call} is denied to these credentials: {instead}")),
            (false, true) => crate::log::progress(&format!("{call} failed ({e:#}): {instead}, and not asked again by this process")),
            (false, false) => crate::log::progress(&format!("{call} failed ({e:#}): {instead}")),
        }
    }

    /// Turns off (for destroy's observation: what it finds owned, it deletes) or back on the
    /// use of eventually consistent batch reads to confirm ownership; every resource then
    /// answers for its own tags.
    pub fn trust_batches(&self, on: bool) {
        self.batches_trusted.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn batches_trusted(&self) -> bool {
        self.batches_trusted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits for AWS's quota of one `key` call per `interval` (see [`Pacer`]); hold the
    /// returned slot until the call is answered. A stop (a signal, a lost lock) ends the wait:
    /// the call is not sent.
    pub async fn pace(&self, key: &str, interval: Duration) -> anyhow::Result<PaceSlot> {
        tokio::select! {
            slot = self.pacer.pace(key, interval) => {
                match self.stop.requested() {
                    Some(why) => anyhow::bail!("stopped ({why}) before {key}"),
                    None => Ok(slot),
                }
            }
            _ = self.stop.wait() => anyhow::bail!("stopped ({}) while waiting for AWS's quota of {key}", self.stop.requested().unwrap_or_default()),
        }
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

    #[tokio::test]
    async fn paced_calls_are_spaced_by_their_key() {
        let p = Pacer::default();
        let started = std::time::Instant::now();
        drop(p.pace("service:CreateThing", Duration::from_millis(150)).await);
        assert!(started.elapsed() < Duration::from_millis(100), "the first call goes at once");
        drop(p.pace("service:DeleteThing", Duration::from_millis(150)).await);
        assert!(started.elapsed() < Duration::from_millis(100), "another key has its own quota");
        drop(p.pace("service:CreateThing", Duration::from_millis(150)).await);
        assert!(started.elapsed() >= Duration::from_millis(150), "the second waits: {:?}", started.elapsed());
        // Concurrent callers are serialised: three calls take two intervals.
        let p = std::sync::Arc::new(Pacer::default());
        let started = std::time::Instant::now();
        let calls = (0..3).map(|_| {
            let p = p.clone();
            tokio::spawn(async move { drop(p.pace("k", Duration::from_millis(100)).await) })
        });
        for c in calls.collect::<Vec<_>>() {
            c.await.unwrap();
        }
        assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());
    }

    /// The interval counts from the answer, not from when the call left: a slow first call
    /// (its request may reach AWS late) cannot bring the next one closer than the quota.
    #[tokio::test]
    async fn the_interval_counts_from_the_answer() {
        let p = Pacer::default();
        let slot = p.pace("k", Duration::from_millis(100)).await;
        tokio::time::sleep(Duration::from_millis(80)).await; // the first call in flight
        drop(slot);
        let answered = std::time::Instant::now();
        drop(p.pace("k", Duration::from_millis(100)).await);
        assert!(answered.elapsed() >= Duration::from_millis(100), "the second came {:?} after the first's answer", answered.elapsed());
    }

    /// A stop (a signal, a lost lock) ends a wait for the quota, and the call is not sent.
    #[tokio::test]
    async fn a_stop_ends_a_wait_for_the_quota() {
        let ctx = Ctx::from_env("us-east-1", Settings::new("demo", BTreeMap::new())).await;
        drop(ctx.pace("k", Duration::from_secs(30)).await.unwrap());
        let started = std::time::Instant::now();
        let stop = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            ctx.stop.request("signal received");
        };
        let (waited, ()) = tokio::join!(ctx.pace("k", Duration::from_secs(30)), stop);
        let e = waited.err().expect("no slot after a stop").to_string();
        assert!(e.contains("stopped (signal received)"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert!(ctx.pace("other", Duration::from_secs(30)).await.is_err(), "nothing is sent once stopped");
    }

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
