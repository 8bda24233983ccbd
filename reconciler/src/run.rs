//! `reconciler run`: the reconcile loop as a long-running controller (kube-rs style: reconcile
//! is an idempotent function of desired + observed; scheduling and error policy live here).

use crate::engine::{self, budget};
use crate::plan::{Action, Plan};
use crate::session::Session;
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What one iteration found and did, as printed. `held`: destructive steps not taken.
pub fn status_line(stack: &str, plan: Option<&Plan>, applied: bool, held: &[String], error: Option<&str>, took: Duration) -> Value {
    let drifted: Vec<Value> = plan
        .map(|p| {
            p.resources
                .iter()
                .filter(|r| r.action != Action::NoOp)
                .map(|r| {
                    let action = match &r.action {
                        Action::Create => "create",
                        Action::Update => "update",
                        Action::Replace { .. } => "replace",
                        Action::Delete { .. } => "delete",
                        Action::Retain { .. } => "retain",
                        Action::NoOp => "no_op",
                    };
                    let mut change = json!({"kind": r.kind, "id": r.id, "action": action, "fields": r.changes.iter().map(|c| c.field.clone()).collect::<Vec<_>>()});
                    if let Some(cause) = r.cause {
                        change["cause"] = json!(cause);
                    }
                    change
                })
                .collect()
        })
        .unwrap_or_default();
    let result = match (error, drifted.is_empty(), applied) {
        (Some(_), _, _) => "error",
        (None, true, _) => "in_sync",
        (None, false, _) if !held.is_empty() => "held",
        (None, false, true) => "corrected",
        (None, false, false) => "drifted",
    };
    json!({
        "time": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "stack": stack,
        "result": result,
        "changes": drifted,
        "held": held,
        "error": error,
        "duration_ms": took.as_millis() as u64,
    })
}

/// Interval with ±jitter.
fn next_wait(interval: f64, jitter: f64, consecutive_errors: u32, retry_base: Duration) -> Duration {
    let base = Duration::from_secs_f64(interval.max(0.0));
    if consecutive_errors > 0 {
        // Requeue sooner after an error, backing off up to the normal interval.
        return budget::backoff(retry_base.max(Duration::from_secs(1)), consecutive_errors + 2).min(base).max(Duration::from_millis(100));
    }
    let spread = jitter.clamp(0.0, 1.0);
    let unit = budget::backoff(Duration::from_millis(1000), 1).as_secs_f64(); // in [0, 1) s
    base.mul_f64(1.0 - spread + 2.0 * spread * unit)
}

/// Stops the stack's drift-correction passes running now and waits until they have exited
/// (`destroy` does, so that none holds the stack lock or network interfaces in what goes).
/// None when the spec has no drift correction.
pub(crate) async fn stop_running_passes(s: &Session) -> anyhow::Result<Vec<String>> {
    let (Some(_), Some(service)) = (&s.spec.drift_correction, &s.spec.service) else { return Ok(vec![]) };
    let family = crate::desired::drift_correction::task_family(&s.spec.name);
    crate::resources::ecs::stop_family_tasks(&s.ctx, &service.cluster, &family, "stack destroyed (reconciler destroy)").await
}

/// What `run` does with the drift it finds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    /// Report it, change nothing (`--plan-only`).
    PlanOnly,
    /// Correct it (holding destructive steps back unless allowed).
    Apply(engine::Destructive),
}

pub(crate) async fn run(s: &mut Session, interval: f64, jitter: f64, iterations: u64, mode: Mode) -> anyhow::Result<ExitCode> {
    let mut errors = 0u32;
    let mut n = 0u64;
    loop {
        n += 1;
        let started = Instant::now();
        // The spec as it is now: an edit takes effect on this iteration.
        let reloaded = s.reload();
        let s = &*s;
        let outcome = async {
            reloaded?;
            let Mode::Apply(destructive) = mode else {
                let (_, _, plan) = s.plan().await?;
                return Ok((plan, false, vec![]));
            };
            // Held per iteration, so a person can apply between iterations.
            let mut lock = s.lock().await?;
            crate::metrics::global().lock_held(lock.is_some());
            let result = async {
                let (planned, destroyed) = s.under_lock(&mut lock, true, || s.plan(), || s.lock()).await?;
                // Destroyed (and not applied by a person since): an unattended pass must not
                // build the stack again. Said first, whatever the plan met.
                if destroyed? {
                    anyhow::bail!(
                        "stack `{}` was destroyed: this pass changes nothing. `reconciler apply` builds it again (and lets passes run), or remove the drift-correction schedule",
                        s.spec.name
                    );
                }
                let (state, observed, plan) = planned?;
                if plan.has_changes() {
                    let report = engine::apply(&s.ctx, &s.kinds, &state.resources, &observed, &state.externals, &plan, destructive).await?;
                    for h in &report.held {
                        eprintln!("held back (needs --allow-destructive): {h}");
                    }
                    return Ok::<_, anyhow::Error>((plan, true, report.held));
                }
                engine::fail_if_unhealthy(&plan, &observed)?;
                Ok((plan, false, vec![]))
            }
            .await;
            crate::metrics::global().lock_held(false);
            if let Some(l) = lock {
                l.release().await?;
            }
            result
        }
        .await;
        let line = match &outcome {
            Ok((plan, applied, held)) => status_line(&s.spec.name, Some(plan), *applied, held, None, started.elapsed()),
            // What to do, where known (apply's own summary already carries its hints).
            Err(e) => status_line(&s.spec.name, None, false, &[], Some(&engine::advice::with_hint(e)), started.elapsed()),
        };
        let mut line = line;
        if s.ctx.stop.requested().is_some() {
            line["result"] = "stopped".into();
        }
        record(&line, &outcome, started.elapsed());
        println!("{line}");
        if let Some(why) = s.ctx.stop.requested() {
            // The lock was released above; a signal is a normal way to stop, a lost lease is not.
            eprintln!("stopping: {why}");
            return Ok(if why == crate::session::SIGNALLED { ExitCode::SUCCESS } else { ExitCode::from(1) });
        }
        errors = if outcome.is_err() { errors + 1 } else { 0 };
        if iterations > 0 && n >= iterations {
            let held = matches!(&outcome, Ok((_, _, h)) if !h.is_empty());
            let drifted = matches!((&outcome, mode), (Ok((p, _, _)), Mode::PlanOnly) if p.has_changes());
            return Ok(if errors > 0 {
                ExitCode::from(1)
            } else if held {
                ExitCode::from(crate::session::HELD)
            } else if drifted {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            });
        }
        let wait = next_wait(interval, jitter, errors, s.ctx.settings.retry_base);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = s.ctx.stop.wait() => {
                eprintln!("stopping: {} between iterations", s.ctx.stop.requested().unwrap_or_default());
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
}

/// The pass in the metrics: its result and duration, what differed, what was applied.
fn record(line: &Value, outcome: &anyhow::Result<(Plan, bool, Vec<String>)>, took: Duration) {
    let m = crate::metrics::global();
    let result = line["result"].as_str().unwrap_or("error");
    let (drifted, corrected): (Vec<&str>, Vec<&str>) = match outcome {
        Ok((plan, applied, held)) => {
            let changing: Vec<&crate::plan::ResourcePlan> = plan.resources.iter().filter(|r| r.action != Action::NoOp).collect();
            let done = changing
                .iter()
                .filter(|r| *applied && !held.iter().any(|h| h.starts_with(&format!("{} {}:", r.kind, r.id))))
                .map(|r| r.kind)
                .collect();
            (changing.iter().map(|r| r.kind).collect(), done)
        }
        Err(_) => {
            m.error("pass");
            (vec![], vec![])
        }
    };
    m.pass(result, took.as_secs_f64(), &drifted, &corrected);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_jittered_and_errors_requeue_sooner() {
        let mut seen = Vec::new();
        for _ in 0..50 {
            let w = next_wait(100.0, 0.1, 0, Duration::from_millis(500)).as_secs_f64();
            assert!((90.0..=110.0).contains(&w), "{w}");
            seen.push(w);
            let e = next_wait(100.0, 0.1, 1, Duration::from_millis(500));
            assert!(e <= Duration::from_secs(100) && e >= Duration::from_millis(100));
        }
        assert!(next_wait(2.0, 0.0, 5, Duration::from_secs(10)) <= Duration::from_secs(2), "never longer than the interval");
        // Jittered: the waits differ, and spread over a good part of the ±10% band.
        let (lo, hi) = seen.iter().fold((f64::MAX, f64::MIN), |(lo, hi), w| (lo.min(*w), hi.max(*w)));
        assert!(hi - lo > 2.0, "50 waits should spread over the ±10 s band, got {lo}..{hi}");
        assert_eq!(next_wait(100.0, 0.0, 0, Duration::from_millis(500)), Duration::from_secs(100), "no jitter asked, none given");
    }

    #[test]
    fn status_lines() {
        let l = status_line("s", None, false, &[], Some("boom"), Duration::from_millis(5));
        assert_eq!(l["result"], "error");
        assert_eq!(l["error"], "boom");
        let p = Plan { stack: "s".into(), resources: vec![], notes: vec![], fingerprint: String::new() };
        assert_eq!(status_line("s", Some(&p), false, &[], None, Duration::ZERO)["result"], "in_sync");
    }

    #[test]
    fn intervals_take_units() {
        use crate::args::parse_interval;
        assert_eq!(parse_interval("30s"), Ok(30.0));
        assert_eq!(parse_interval("5m"), Ok(300.0));
        assert_eq!(parse_interval("1h"), Ok(3600.0));
        assert_eq!(parse_interval("250ms"), Ok(0.25));
        assert_eq!(parse_interval("90"), Ok(90.0), "plain seconds, as before");
        assert_eq!(parse_interval("1.5m"), Ok(90.0));
        for bad in ["5d", "m", "-1s", "fast", ""] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }
}
