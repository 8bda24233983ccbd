//! Per-call retries, inside the SDK, for every client the engine builds ([`sdk_client!`]).
//!
//! The SDK's standard retry strategy (attempts = `max_attempts`, jittered exponential backoff
//! from `retry_base`, capped at 20 s, `Retry-After` honoured) decides *when*; this module
//! decides *what* is sent again, with the same rules the engine uses ([`super::retry`]):
//! - a throttled call, read or mutation: the service refused it, nothing happened;
//! - a read answered with a 5xx, or not answered at all (transport);
//! - nothing else. A mutation answered with a 5xx, or not at all, may have happened: the
//!   engine observes the resource again before anything is re-sent.
//!
//! Calls in flight to one AWS service are bounded ([`bounded_https_client`],
//! `--service-concurrency`): a pass reads every kind at once, and a service's API rate limit is
//! per account, so one pass must not flood one service while another waits for nothing.
//!
//! The retry quota (the SDK's token bucket) is unlimited: a 429 storm is paced by backoff and
//! `Retry-After`, and bounded by attempts, never cut short by a process-wide quota that an
//! earlier burst drained.

use super::retry::{class_of, is_read, retried_per_call, Classifier, ErrorClass};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextMut, FinalizerInterceptorContextMut, InterceptorContext,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::classifiers::{ClassifyRetry, RetryAction, RetryClassifierPriority};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::Headers;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::retry::ErrorKind;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Response header the [`NameOperation`] interceptor adds, so that the classifier (which sees
/// only the attempt, not the operation's configuration) knows which call it is classifying.
const OPERATION_HEADER: &str = "x-reconciler-operation";

/// Builds a service's SDK client from the shared configuration with the engine's interceptors
/// (call metrics, operation naming) and per-call retry rules: `sdk_client!(aws_sdk_<service>, conf,
/// classify)`, with extra builder calls after it (the lock's `force_path_style(emulated)`).
macro_rules! sdk_client {
    ($sdk:ident, $conf:expr, $classify:expr $(, $extra:ident($($arg:expr),*))*) => {
        $sdk::Client::from_conf(
            $sdk::config::Builder::from($conf)
                .interceptor(crate::metrics::CallCounter)
                .interceptor(crate::engine::calls::NameOperation)
                .retry_classifier(crate::engine::calls::CallRetry::new($classify))
                .retry_partition(crate::engine::calls::partition())
                $(.$extra($($arg),*))*
                .build(),
        )
    };
}
pub(crate) use sdk_client;

/// A service's plumbing, the same for every service, written once: its client built from the
/// shared configuration with the service's error classifier (`impl Service`), `client(ctx)`,
/// and `call_failed(call)` for `.map_err` on its SDK results. A service's `mod.rs` says
/// `crate::engine::calls::service!(aws_sdk_<service>, classify);` and keeps only what is its own:
/// its error codes (`classify`), its ARN scheme, its kinds. `service!(sdk, classify,
/// client_only)` leaves `call_failed` to the service (API Gateway adds its own check).
macro_rules! service {
    ($sdk:ident, $classify:expr) => {
        crate::engine::calls::service!($sdk, $classify, client_only);

        /// For `.map_err(call_failed("CreateX"))` on this service's SDK results: the failure
        /// classified by the service's own codes, then the engine's rules.
        pub fn call_failed<E>(
            call: &str,
        ) -> impl FnOnce(aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::http::Response>) -> anyhow::Error + '_
        where
            E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        {
            crate::engine::call_failed_with(call, $classify)
        }
    };
    ($sdk:ident, $classify:expr, client_only) => {
        impl crate::engine::Service for $sdk::Client {
            fn connect(conf: &aws_config::SdkConfig) -> Self {
                crate::engine::calls::sdk_client!($sdk, conf, $classify)
            }
        }

        /// This service's client (one per process, from the shared configuration).
        pub fn client(ctx: &crate::engine::Ctx) -> $sdk::Client {
            ctx.client()
        }
    };
}
pub(crate) use service;

/// The retry partition every client shares: an unlimited retry quota (see the module docs).
pub fn partition() -> aws_smithy_runtime::client::retries::RetryPartition {
    aws_smithy_runtime::client::retries::RetryPartition::custom("reconciler")
        .token_bucket(aws_smithy_runtime::client::retries::TokenBucket::unlimited())
        .build()
}

/// Names the operation on its response (see [`OPERATION_HEADER`]).
#[derive(Debug)]
pub struct NameOperation;

impl Intercept for NameOperation {
    fn name(&self) -> &'static str {
        "NameOperation"
    }

    fn modify_before_deserialization(
        &self,
        ctx: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(m) = cfg.load::<Metadata>() {
            ctx.response_mut().headers_mut().insert(OPERATION_HEADER, m.name().to_string());
        }
        Ok(())
    }

    /// An attempt that got no answer at all (connection refused or dropped, a timeout) has no
    /// response to name: it gets an empty one with the operation's name, so that a read is
    /// sent again per call as well. The SDK reports the failure as before (a dispatch failure
    /// or a timeout: the response is not used for those).
    fn modify_before_attempt_completion(
        &self,
        ctx: &mut FinalizerInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let inner = ctx.inner_mut();
        if inner.is_failed() && inner.response().is_none() {
            if let Some(m) = cfg.load::<Metadata>() {
                let mut r = aws_smithy_runtime_api::http::Response::new(200u16.try_into()?, aws_smithy_types::body::SdkBody::empty());
                r.headers_mut().insert(OPERATION_HEADER, m.name().to_string());
                inner.set_response(r);
            }
        }
        Ok(())
    }
}

/// The per-call retry rule, with the service's own error classification.
#[derive(Debug, Clone)]
pub struct CallRetry {
    classify: Classifier,
}

impl CallRetry {
    pub fn new(classify: Classifier) -> Self {
        CallRetry { classify }
    }

    /// The decision for one answer: (status, headers, body) of a failed attempt.
    pub fn decide(&self, status: u16, headers: &Headers, body: &[u8]) -> RetryAction {
        let operation = headers.get(OPERATION_HEADER).unwrap_or_default();
        let (code, message) = error_code(headers, body);
        // A failure with a success status: the answer was cut off (or never came; see
        // `NameOperation`): transport, which a read survives by being sent again.
        let class = if status < 300 { ErrorClass::Retryable } else { class_of(status, &code, &message, self.classify) };
        if !retried_per_call(class, is_read(operation)) {
            return RetryAction::RetryForbidden;
        }
        let kind = if class == ErrorClass::Throttled { ErrorKind::ThrottlingError } else { ErrorKind::ServerError };
        match retry_after(headers) {
            Some(wait) => RetryAction::retryable_error_with_explicit_delay(kind, wait),
            None => RetryAction::retryable_error(kind),
        }
    }
}

impl ClassifyRetry for CallRetry {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        match ctx.output_or_error() {
            None | Some(Ok(_)) => RetryAction::NoActionIndicated,
            Some(Err(_)) => match ctx.response() {
                Some(r) => self.decide(r.status().as_u16(), r.headers(), r.body().bytes().unwrap_or_default()),
                // Not named (no operation metadata): the engine decides.
                None => RetryAction::RetryForbidden,
            },
        }
    }

    fn name(&self) -> &'static str {
        "reconciler per-call retry"
    }

    /// Last, so that its decision is the one that counts.
    fn priority(&self) -> RetryClassifierPriority {
        RetryClassifierPriority::run_after(RetryClassifierPriority::transient_error_classifier())
    }
}

/// The wait a throttled answer asks for: `Retry-After` (seconds), or `x-amz-retry-after`
/// (milliseconds).
pub fn retry_after(headers: &Headers) -> Option<Duration> {
    if let Some(ms) = headers.get("x-amz-retry-after").and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(Duration::from_millis(ms));
    }
    let secs = headers.get("retry-after")?.trim().parse::<f64>().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(300.0)))
}

/// (code, message) of an AWS error answer in any protocol: the `x-amzn-ErrorType` header or
/// the JSON `__type`/`code` (JSON 1.0/1.1, REST-JSON), `<Code>` (EC2, awsQuery, REST-XML).
pub fn error_code(headers: &Headers, body: &[u8]) -> (String, String) {
    let strip = |c: &str| c.split(':').next().unwrap_or_default().rsplit('#').next().unwrap_or_default().trim().to_string();
    let text = String::from_utf8_lossy(body);
    if let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(&text) {
        let field = |keys: &[&str]| keys.iter().find_map(|k| m.get(*k).and_then(|v| v.as_str())).unwrap_or_default().to_string();
        let code = headers.get("x-amzn-errortype").map(strip).unwrap_or_else(|| strip(&field(&["__type", "code", "Code"])));
        return (code, field(&["message", "Message", "errorMessage"]));
    }
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(text[start..end].to_string())
    };
    let code = headers.get("x-amzn-errortype").map(strip).or_else(|| tag("Code")).unwrap_or_default();
    (code, tag("Message").unwrap_or_default())
}

/// The SDK's default HTTPS client (rustls with aws-lc, proxy settings from the environment,
/// as `aws-smithy-runtime` builds it), with at most `per_service` calls in flight to any one
/// AWS service: a call waits for a slot before it is sent. The service is read from the
/// request's signature scope (`Credential=…/<region>/<service>/aws4_request`).
///
/// A call to an `http://` endpoint (an emulator on this machine) when no proxy is configured
/// goes through a connector without TLS, and the TLS connector is built only for the first
/// `https://` call: a process that never makes one (every test's) does not load and parse the
/// system's root certificates (about 20 ms of a debug build's CPU, a few in release).
pub fn bounded_https_client(per_service: usize) -> SharedHttpClient {
    use aws_smithy_http_client::{proxy::ProxyConfig, tls, Builder, ConnectorBuilder};
    let connector = |tls: bool| {
        Builder::new().build_with_connector_fn(move |settings, components| {
            let mut b = ConnectorBuilder::default();
            b.set_connector_settings(settings.cloned());
            if let Some(c) = components {
                b.set_sleep_impl(c.sleep_impl());
            }
            b.set_proxy_config(Some(ProxyConfig::from_env()));
            match tls {
                true => b.tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc)).build(),
                false => b.build_http(),
            }
        })
    };
    let proxied = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|p| !p.is_empty()));
    let plain_http = (!proxied).then(|| connector(false));
    SharedHttpClient::new(Bounded { tls: connector(true), plain_http, per_service: per_service.max(1), slots: Default::default() })
}

#[derive(Debug, Clone)]
struct Bounded {
    tls: SharedHttpClient,
    /// For `http://` endpoints; `None` where a proxy is configured (it may need TLS).
    plain_http: Option<SharedHttpClient>,
    per_service: usize,
    slots: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

impl Bounded {
    fn slots_of(&self, service: &str) -> Arc<Semaphore> {
        let mut all = self.slots.lock().expect("service slots");
        all.entry(service.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.per_service))).clone()
    }
}

impl HttpClient for Bounded {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(BoundedConnector {
            plain_http: self.plain_http.as_ref().map(|c| c.http_connector(settings, components)),
            tls: std::sync::OnceLock::new(),
            settings: settings.clone(),
            components: components.clone(),
            bound: self.clone(),
        })
    }

    /// The SDK's client builds its connector here, so that the root certificates are loaded
    /// when a client is made rather than at its first call: for the TLS client that would load
    /// them for every service client, though no call may need TLS (every test's process, which
    /// calls only the emulator). Without a proxy the plain client is validated (nothing to
    /// load) and the TLS connector waits for the first `https://` call.
    fn validate_base_client_config(
        &self,
        runtime_components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponentsBuilder,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        self.plain_http.as_ref().unwrap_or(&self.tls).validate_base_client_config(runtime_components, cfg)
    }

    fn validate_final_config(&self, runtime_components: &RuntimeComponents, cfg: &ConfigBag) -> Result<(), BoxError> {
        self.tls.validate_final_config(runtime_components, cfg)
    }

    fn connector_metadata(&self) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.tls.connector_metadata()
    }
}

#[derive(Debug)]
struct BoundedConnector {
    plain_http: Option<SharedHttpConnector>,
    /// Built at the first call that needs it.
    tls: std::sync::OnceLock<SharedHttpConnector>,
    settings: HttpConnectorSettings,
    components: RuntimeComponents,
    bound: Bounded,
}

impl BoundedConnector {
    fn for_uri(&self, uri: &str) -> SharedHttpConnector {
        match &self.plain_http {
            Some(plain) if uri.starts_with("http://") => plain.clone(),
            _ => self.tls.get_or_init(|| self.bound.tls.http_connector(&self.settings, &self.components)).clone(),
        }
    }
}

impl HttpConnector for BoundedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let slots = self.bound.slots_of(&signed_service(request.headers().get("authorization").unwrap_or_default()));
        let inner = self.for_uri(request.uri());
        HttpConnectorFuture::new(async move {
            let _slot = slots.acquire_owned().await.expect("the slots are never closed");
            inner.call(request).await
        })
    }
}

/// The service a SigV4 `Authorization` header was signed for (`?` when unsigned).
pub fn signed_service(authorization: &str) -> String {
    authorization
        .split("Credential=")
        .nth(1)
        .and_then(|c| c.split([',', ' ']).next())
        .and_then(|c| c.split('/').nth(3))
        .unwrap_or("?")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> Headers {
        let mut h = Headers::new();
        for (k, v) in pairs {
            h.insert(*k, *v);
        }
        h
    }

    fn no_extra(_: &str, _: &str) -> Option<ErrorClass> {
        None
    }

    #[test]
    fn codes_in_every_protocol() {
        let ec2 = b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors></Response>";
        assert_eq!(error_code(&headers(&[]), ec2), ("RequestLimitExceeded".into(), "Request limit exceeded.".into()));
        let query =
            b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>";
        assert_eq!(error_code(&headers(&[]), query).0, "Throttling");
        let json = br#"{"__type":"com.amazonaws.ecs#ClientException","message":"Role is not valid"}"#;
        assert_eq!(error_code(&headers(&[]), json), ("ClientException".into(), "Role is not valid".into()));
        let rest = br#"{"message":"Too Many Requests"}"#;
        let h = headers(&[("x-amzn-errortype", "TooManyRequestsException:http://internal.amazon.com/coral/")]);
        assert_eq!(error_code(&h, rest), ("TooManyRequestsException".into(), "Too Many Requests".into()));
    }

    #[test]
    fn the_service_comes_from_the_signature_scope() {
        let auth = "AWS4-HMAC-SHA256 Credential=AKID/20261205/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=00";
        assert_eq!(signed_service(auth), "ec2");
        assert_eq!(signed_service(""), "?");
    }

    #[tokio::test]
    async fn calls_to_one_service_wait_for_a_slot() {
        let b = Bounded { tls: bounded_https_client(1), plain_http: None, per_service: 2, slots: Default::default() };
        let ec2 = b.slots_of("ec2");
        assert!(Arc::ptr_eq(&ec2, &b.slots_of("ec2")), "one set of slots per service");
        assert!(!Arc::ptr_eq(&ec2, &b.slots_of("iam")), "services do not share slots");
        let (_a, _b) = (ec2.clone().try_acquire_owned().unwrap(), ec2.clone().try_acquire_owned().unwrap());
        assert!(ec2.clone().try_acquire_owned().is_err(), "a third call to ec2 waits");
        assert!(b.slots_of("iam").try_acquire_owned().is_ok(), "iam does not wait for ec2");
    }

    #[test]
    fn retry_after_headers() {
        assert_eq!(retry_after(&headers(&[("retry-after", "2")])), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(&headers(&[("x-amz-retry-after", "1500")])), Some(Duration::from_millis(1500)));
        assert_eq!(retry_after(&headers(&[("retry-after", "Wed, 21 Oct 2026 07:28:00 GMT")])), None);
        assert_eq!(retry_after(&headers(&[])), None);
    }

    #[test]
    fn what_is_sent_again() {
        let r = CallRetry::new(no_extra);
        let throttled = br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
        let server = br#"{"__type":"ServerException","message":"oops"}"#;
        let read = headers(&[(OPERATION_HEADER, "DescribeServices")]);
        let write = headers(&[(OPERATION_HEADER, "CreateService")]);
        assert_eq!(r.decide(400, &write, throttled), RetryAction::throttling_error(), "a throttled mutation had no effect");
        assert_eq!(r.decide(500, &read, server), RetryAction::server_error(), "a read is sent again");
        assert_eq!(r.decide(500, &write, server), RetryAction::RetryForbidden, "a mutation that may have happened is not");
        assert_eq!(r.decide(200, &read, b""), RetryAction::server_error(), "a read whose answer was lost is sent again");
        assert_eq!(r.decide(200, &write, b""), RetryAction::RetryForbidden, "a mutation whose answer was lost may have happened");
        let invalid = br#"{"__type":"InvalidParameterException","message":"bad"}"#;
        assert_eq!(r.decide(400, &read, invalid), RetryAction::RetryForbidden);
        let h = headers(&[(OPERATION_HEADER, "DeleteVpcLink"), ("retry-after", "1")]);
        assert_eq!(
            r.decide(429, &h, br#"{"message":"Too Many Requests"}"#),
            RetryAction::retryable_error_with_explicit_delay(ErrorKind::ThrottlingError, Duration::from_secs(1)),
            "429 is throttling whatever its code, and Retry-After is the wait"
        );
    }
}
