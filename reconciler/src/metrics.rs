//! `run --metrics-addr`: Prometheus metrics (prometheus-client, the Prometheus project's own
//! Rust client) and `/healthz` on one port.
//!
//! One process-wide set: the reconcile loop records passes and corrections, the engine records
//! failures by kind, and an SDK interceptor on every client counts AWS calls and throttles by
//! service and action (each attempt is a call).

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabel {
    service: String,
    action: String,
}

pub struct Metrics {
    registry: Registry,
    passes: Family<ResultLabel, Counter>,
    pass_seconds: Histogram,
    drifted: Family<KindLabel, Gauge>,
    corrections: Family<KindLabel, Counter>,
    errors: Family<KindLabel, Counter>,
    calls: Family<CallLabel, Counter>,
    throttles: Family<CallLabel, Counter>,
    last_success: Gauge<f64, AtomicU64>,
    lock_held: Gauge,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("reconciler");
        let m = Metrics {
            passes: Family::default(),
            pass_seconds: Histogram::new(exponential_buckets(0.25, 2.0, 12)),
            drifted: Family::default(),
            corrections: Family::default(),
            errors: Family::default(),
            calls: Family::default(),
            throttles: Family::default(),
            last_success: Gauge::default(),
            lock_held: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("passes", "Reconcile passes, by result", m.passes.clone());
        registry.register("pass_duration_seconds", "How long a pass took", m.pass_seconds.clone());
        registry.register("drifted_resources", "Resources that differed from the spec in the last pass, by kind", m.drifted.clone());
        registry.register("corrections", "Changes applied (creations, updates, replacements, deletions), by kind", m.corrections.clone());
        registry.register("errors", "Failures, by resource kind (`pass` for a pass that failed before any resource)", m.errors.clone());
        registry.register("aws_calls", "AWS API calls (attempts), by service and action", m.calls.clone());
        registry.register("aws_throttles", "AWS API calls answered with throttling, by service and action", m.throttles.clone());
        registry.register(
            "last_success_timestamp_seconds",
            "When the last pass without error ended (unix seconds)",
            m.last_success.clone(),
        );
        registry.register("lock_held", "1 while this process holds the stack lock", m.lock_held.clone());
        Metrics { registry, ..m }
    }

    /// A finished pass: `result` as in the status line, the kinds that differed and, when it
    /// applied them, the kinds corrected.
    pub fn pass(&self, result: &str, seconds: f64, drifted: &[&str], corrected: &[&str]) {
        self.passes.get_or_create(&ResultLabel { result: result.to_string() }).inc();
        self.pass_seconds.observe(seconds);
        self.drifted.clear();
        for k in drifted {
            self.drifted.get_or_create(&KindLabel { kind: k.to_string() }).inc();
        }
        for k in corrected {
            self.corrections.get_or_create(&KindLabel { kind: k.to_string() }).inc();
        }
        if result != "error" {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
            self.last_success.set(now);
        }
    }

    pub fn error(&self, kind: &str) {
        self.errors.get_or_create(&KindLabel { kind: kind.to_string() }).inc();
    }

    pub fn lock_held(&self, held: bool) {
        self.lock_held.set(held as i64);
    }

    fn call(&self, service: &str, action: &str, throttled: bool) {
        let label = CallLabel { service: service.to_string(), action: action.to_string() };
        self.calls.get_or_create(&label).inc();
        if throttled {
            self.throttles.get_or_create(&label).inc();
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encoding to a String cannot fail");
        out
    }
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

/// Whether an AWS error response is throttling: HTTP 429, or an error code naming it (JSON
/// protocols put it in a header, query protocols in the body).
pub fn is_throttle(status: u16, error_type: Option<&str>, body: Option<&[u8]>) -> bool {
    const CODES: [&str; 3] = ["Throttl", "RequestLimitExceeded", "TooManyRequests"];
    if status == 429 {
        return true;
    }
    if status < 400 {
        return false;
    }
    let named = |text: &str| CODES.iter().any(|c| text.contains(c));
    error_type.is_some_and(named) || body.and_then(|b| std::str::from_utf8(b).ok()).is_some_and(named)
}

/// Counts every attempt of every AWS call (added to each client the reconciler builds).
#[derive(Debug)]
pub struct CallCounter;

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "reconciler-call-counter"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, action) = cfg.load::<Metadata>().map(|m| (m.service().to_string(), m.name().to_string())).unwrap_or_default();
        let throttled =
            context.response().is_some_and(|r| is_throttle(r.status().as_u16(), r.headers().get("x-amzn-errortype"), r.body().bytes()));
        global().call(&service, &action, throttled);
        Ok(())
    }
}

/// Serves `/metrics` and `/healthz` on `addr` until the process ends.
pub async fn serve(addr: &str) -> anyhow::Result<std::net::SocketAddr> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on --metrics-addr {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(|| async {
                ([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], global().encode())
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_told_from_other_errors() {
        assert!(is_throttle(429, None, None));
        assert!(is_throttle(400, Some("ThrottlingException:http://internal"), None));
        assert!(is_throttle(503, None, Some(b"<Response><Errors><Error><Code>RequestLimitExceeded</Code>")));
        assert!(!is_throttle(400, Some("ValidationException"), Some(b"{}")));
        assert!(!is_throttle(200, Some("Throttling"), None), "a success is never throttling");
    }

    #[test]
    fn passes_and_corrections_are_exposed() {
        let m = Metrics::new();
        m.pass("corrected", 1.5, &["ec2:security-group"], &["ec2:security-group", "logs:log-group"]);
        m.pass("in_sync", 0.5, &[], &[]);
        m.call("EC2", "DescribeVpcs", false);
        m.call("EC2", "DescribeVpcs", true);
        m.lock_held(true);
        let text = m.encode();
        for line in [
            r#"reconciler_passes_total{result="corrected"} 1"#,
            r#"reconciler_passes_total{result="in_sync"} 1"#,
            r#"reconciler_corrections_total{kind="ec2:security-group"} 1"#,
            r#"reconciler_aws_calls_total{service="EC2",action="DescribeVpcs"} 2"#,
            r#"reconciler_aws_throttles_total{service="EC2",action="DescribeVpcs"} 1"#,
            "reconciler_lock_held 1",
            "reconciler_pass_duration_seconds_count 2",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
        assert!(!text.contains("reconciler_drifted_resources{"), "the last pass had no drift: the gauge set is cleared\n{text}");
    }
}
