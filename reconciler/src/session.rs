//! The application core every command shares: a loaded spec with a context to reach AWS,
//! reloading it, the signal handler, the stack lock, and the reads a plan is made of (facts,
//! desired state, observation). `cli` and `run` both drive it; it knows neither.

use crate::args::AwsOpts;
use crate::desired::{self, DesiredState};
use crate::engine::{self, Ctx, Settings};
use crate::plan::{Cost, Plan};
use crate::resources;
use crate::spec::{self, Spec};
use anyhow::{bail, Context as _};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

/// Exit code of an unattended apply (or a `run` that ends) that held destructive steps back.
pub const HELD: u8 = 3;

/// Loads and validates a spec file; the error points at the schema.
pub(crate) fn load(file: &std::path::Path) -> anyhow::Result<Spec> {
    spec::load(file).map_err(|e| anyhow::anyhow!("{e}\n(see `reconciler schema` for every allowed key)"))
}

/// A loaded spec and a context to reach AWS with.
pub(crate) struct Session {
    /// The spec file (read again by `run` at every iteration).
    pub(crate) file: PathBuf,
    pub(crate) spec: Spec,
    pub(crate) ctx: Ctx,
    pub(crate) kinds: Vec<Box<dyn engine::DynKind>>,
    pub(crate) lock_wait: Duration,
}

/// The reason a signal gives for stopping (run exits 0 for it).
pub(crate) const SIGNALLED: &str = "signal received";

impl Session {
    pub(crate) async fn open(file: &std::path::Path, aws: &AwsOpts) -> anyhow::Result<Self> {
        let spec = load(file)?;
        let mut settings = Settings::new(&spec.name, spec.tags.clone());
        settings.ignore_tags = spec.ignore_tags.clone();
        settings.account_wide_reads = spec.account_wide_reads;
        settings.poll_interval = Duration::from_secs_f64(aws.poll_interval.max(0.0));
        settings.wait_timeout = Duration::from_secs_f64(aws.wait_timeout.max(0.0));
        settings.max_concurrency = aws.concurrency.max(1);
        settings.max_attempts = aws.max_attempts.max(1);
        settings.retry_base = Duration::from_millis(aws.retry_base_ms);
        settings.propagation_timeout = Duration::from_secs_f64(aws.propagation_timeout.max(0.0));
        settings.conflict_timeout = Duration::from_secs_f64(aws.conflict_timeout.max(0.0));
        settings.listing_lag = Duration::from_secs_f64(aws.listing_lag.max(0.0));
        settings.service_concurrency = aws.service_concurrency.max(1);
        settings.wait_for_rollouts = aws.wait_for_deployments;
        settings.interactive = std::io::stderr().is_terminal();
        let ctx = Ctx::from_env(&spec.region, settings).await;
        Ok(Session {
            file: file.to_path_buf(),
            spec,
            ctx,
            kinds: resources::registry(),
            lock_wait: Duration::from_secs_f64(aws.lock_wait.max(0.0)),
        })
    }

    /// Reads the spec file again. An invalid file, or one naming another stack or region
    /// (that would be another controller), is an error and the spec in use stays.
    pub(crate) fn reload(&mut self) -> anyhow::Result<()> {
        let spec = load(&self.file).with_context(|| format!("{} was edited and is not valid; nothing was changed", self.file.display()))?;
        if spec.name != self.spec.name || spec.region != self.spec.region {
            bail!(
                "{} now names stack `{}` in {} (this run manages `{}` in {}): restart `reconciler run` to manage another stack; nothing was changed",
                self.file.display(),
                spec.name,
                spec.region,
                self.spec.name,
                self.spec.region
            );
        }
        self.ctx.settings.tags = spec.tags.clone();
        self.ctx.settings.ignore_tags = spec.ignore_tags.clone();
        self.ctx.settings.account_wide_reads = spec.account_wide_reads;
        self.spec = spec;
        Ok(())
    }

    /// One listener for SIGTERM and SIGINT for the whole command, registered before anything
    /// changes: the first signal lets the mutations in flight finish and starts no new one
    /// (the command then releases the lock and exits); a second one exits at once.
    pub(crate) fn stop_on_signal(&self) {
        let stop = self.ctx.stop.clone();
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        let int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
        let (Ok(mut term), Ok(mut int)) = (term, int) else { return };
        tokio::spawn(async move {
            for n in 0.. {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
                if n > 0 {
                    eprintln!("second signal: exiting now");
                    std::process::exit(130);
                }
                eprintln!("signal received: finishing the changes in flight, starting no new one");
                stop.request(SIGNALLED);
            }
        });
    }

    /// Takes the stack lock if the spec configures one.
    pub(crate) async fn lock(&self) -> anyhow::Result<Option<engine::lock::StackLock>> {
        self.lock_waiting(self.lock_wait).await
    }

    /// [`lock`](Self::lock), waiting up to `wait` for another holder.
    pub(crate) async fn lock_waiting(&self, wait: Duration) -> anyhow::Result<Option<engine::lock::StackLock>> {
        let Some(l) = &self.spec.lock else {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                eprintln!(
                    "warning: the spec has no `lock:`: two reconcilers running at once are not fenced from each other (see README, Safety)"
                )
            });
            return Ok(None);
        };
        // The object the printed policy names (`spec::policy::lock_object`).
        let key = crate::spec::policy::lock_object(&self.spec).map(|(_, k)| k).unwrap_or_default();
        let ttl = Duration::from_secs(l.ttl_seconds as u64);
        let lock = engine::lock::StackLock::acquire(&self.ctx.client(), &l.bucket, &key, &self.spec.name, ttl, wait, self.ctx.stop.clone())
            .await?;
        Ok(Some(lock))
    }

    /// `read` (what the command plans from), made while the lease just taken is confirmed as
    /// ours ([`engine::lock::StackLock::confirmed`]), and with `mark`, whether the stack is
    /// marked destroyed, looked up meanwhile too: one round trip for all three. A lease
    /// another reconciler won at the same moment (only a store whose conditional create is not
    /// atomic lets that happen) is given up, the lock taken again by `relock` (as the command
    /// took it: waiting within `--lock-wait`) and `read` made again: what was read while the
    /// winner may have been changing the stack is not planned from. The outer error is the
    /// lock's; the read's and the mark's results are the caller's to weigh.
    pub(crate) async fn under_lock<T, F, Fut, R, RFut>(
        &self,
        lock: &mut Option<engine::lock::StackLock>,
        mark: bool,
        read: F,
        relock: R,
    ) -> anyhow::Result<(anyhow::Result<T>, anyhow::Result<bool>)>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
        R: Fn() -> RFut,
        RFut: std::future::Future<Output = anyhow::Result<Option<engine::lock::StackLock>>>,
    {
        // Each retry needs another taker winning another simultaneous race: a few at most.
        for attempt in 1..=3 {
            let Some(l) = lock.as_ref() else { return Ok((read().await, Ok(false))) };
            let marked = async {
                match mark {
                    true => l.destroyed().await,
                    false => Ok(false),
                }
            };
            let (read, confirmed, marked) = tokio::join!(read(), l.confirmed(), marked);
            let lost = match confirmed {
                Ok(()) => return Ok((read, marked)),
                Err(e) if e.downcast_ref::<engine::lock::Held>().is_some() => e,
                Err(e) => return Err(e),
            };
            // Not ours: nothing to renew or release.
            if let Some(l) = lock.take() {
                l.abandon();
            }
            if attempt == 3 {
                break;
            }
            // Taken again as the command took it: a holder found at once fails or is waited
            // for (`--lock-wait`; destroy stops the stack's passes first).
            eprintln!("  {lost:#}; taking the lock again");
            *lock = relock().await?;
        }
        anyhow::bail!("the stack lock was taken by another reconciler at the same moment three times in a row; run the command again")
    }

    /// Live facts and the desired state computed from them.
    pub(crate) async fn desired(&self) -> anyhow::Result<(desired::Facts, DesiredState)> {
        let s = &self.ctx.settings;
        // One pass: the facts and the observation that follows share their reads (the stack's
        // subnets, listed once for the zones in use and for the subnet kind).
        self.ctx.share_reads(true);
        let facts = engine::budget::with_retries(s, || crate::facts::gather(&self.ctx, &self.spec))
            .await
            .context("reading the facts the spec depends on (zones, an existing VPC, the account)")?;
        let state = desired::build(&self.spec, &facts)?;
        Ok((facts, state))
    }

    /// What the stack owns, for destroy: same-named resources it does not own are reported
    /// (on stdout, part of destroy's listing) and left alone.
    pub(crate) async fn observe_owned(&self) -> anyhow::Result<(DesiredState, engine::Snapshot)> {
        self.observe_owned_reporting(|m| println!("not ours, left alone: {m}")).await
    }

    /// Like `observe_owned`, for commands whose stdout is a document (`output`, `verify`):
    /// resources not owned are mentioned on stderr.
    pub(crate) async fn observe_owned_quietly(&self) -> anyhow::Result<(DesiredState, engine::Snapshot)> {
        self.observe_owned_reporting(|m| eprintln!("note: not owned by this stack, ignored: {m}")).await
    }

    async fn observe_owned_reporting(&self, report: impl Fn(&str)) -> anyhow::Result<(DesiredState, engine::Snapshot)> {
        let (_, state) = self.desired().await?;
        let (observed, skipped) = engine::observe_owned(&self.ctx, &self.kinds, &state.resources).await?;
        for m in skipped {
            report(&m.to_string());
        }
        Ok((state, observed))
    }

    /// The monthly cost of what is observed (before) and of the desired state (after).
    pub(crate) fn estimate(&self, state: &DesiredState, observed: &[engine::Observed]) -> Cost {
        crate::plan::cost::estimate(&self.spec.region, &self.spec.cost, &state.resources, observed)
    }

    pub(crate) async fn plan(&self) -> anyhow::Result<(DesiredState, engine::Snapshot, Plan)> {
        let (facts, state) = self.desired().await?;
        let observed = engine::observe(&self.ctx, &self.kinds, &state.resources).await?;
        let mut plan = engine::plan(&self.spec.name, &self.kinds, &state.resources, &observed, &state.externals)?;
        if let Some(d) = self.spec.api.as_ref().and_then(|a| a.domain.as_ref()) {
            if let Some(r) = crate::outputs::dns_record(Some(&d.name), &observed) {
                plan.notes.push(format!("custom domain: create the DNS record {} (the reconciler does not manage DNS)", r.describe()));
            }
        }
        plan.fingerprint = crate::plan::fingerprint(&self.spec, &facts, &observed, &state.resources);
        Ok((state, observed, plan))
    }
}
