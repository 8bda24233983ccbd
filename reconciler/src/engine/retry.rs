//! Retrying AWS calls without ever repeating a mutation blindly.
//!
//! The SDK's own retries are off: a create retried after an ambiguous 5xx can make a
//! duplicate (EC2's CreateVpc has no idempotency token), and a delete or a rule change
//! retried after it succeeded fails with NotFound or Duplicate. The engine retries instead.
//! Reads are repeated. Mutations are never re-sent as they were: the resource is observed
//! again by its tags and converged from what is there, so a create that did happen is found
//! and kept. Only throttling, 5xx and transport failures are retried, never a validation error.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use std::future::Future;
use std::time::Duration;

/// Error codes AWS uses for throttling.
pub const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "BandwidthLimitExceeded",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

/// EC2 is eventually consistent: a resource just created can be "not found" for a few
/// seconds by the next call (`InvalidVpcID.NotFound` on CreateSubnet right after CreateVpc).
/// Retrying these is safe here because retried mutations re-observe first, and a delete whose
/// target is gone is done.
pub fn is_eventual_consistency(code: &str) -> bool {
    code.starts_with("Invalid") && code.ends_with(".NotFound")
}

/// How a failed call should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Throttling, 5xx, transport, eventual consistency: try again (a mutation only after
    /// observing again).
    Retryable,
    /// The resource is not there (any more): a delete is done, a read finds nothing.
    Gone,
    /// Another change is in progress on it (ConflictException, ResourceInUse): try again later.
    Conflict,
    /// Validation, access denied, limits: trying again cannot help.
    Final,
}

/// One failed AWS call: which, why (the service's code and message), and what to do about it.
#[derive(Debug)]
pub struct AwsError {
    pub call: String,
    pub code: Option<String>,
    pub message: String,
    pub class: ErrorClass,
}

impl AwsError {
    pub fn retryable(&self) -> bool {
        matches!(self.class, ErrorClass::Retryable | ErrorClass::Conflict)
    }
}

impl std::fmt::Display for AwsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.call, self.message)
    }
}
impl std::error::Error for AwsError {}

/// A service's own error codes: (code, message) → class, `None` for the generic rules.
pub type Classifier = fn(&str, &str) -> Option<ErrorClass>;

fn no_extra(_: &str, _: &str) -> Option<ErrorClass> {
    None
}

/// Classifies an SDK error: the service's own rules first, then throttling codes, HTTP 5xx,
/// timeouts and transport failures are retryable; everything else is final.
pub fn classify<E>(call: &str, e: SdkError<E, Response>, extra: Classifier) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (code, class) = match &e {
        SdkError::ServiceError(ctx) => {
            let code = ctx.err().code().map(str::to_string);
            let c = code.as_deref().unwrap_or_default();
            let class = extra(c, ctx.err().message().unwrap_or_default()).unwrap_or({
                if THROTTLING_CODES.contains(&c) || is_eventual_consistency(c) || ctx.raw().status().as_u16() >= 500 {
                    ErrorClass::Retryable
                } else {
                    ErrorClass::Final
                }
            });
            (code, class)
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => (None, ErrorClass::Retryable),
        _ => (None, ErrorClass::Final),
    };
    let message = aws_smithy_types::error::display::DisplayErrorContext(&e).to_string();
    AwsError { call: call.to_string(), code, message, class }
}

/// For `.map_err(call_failed("CreateVpc"))` on SDK results.
pub fn call_failed<E>(call: &str) -> impl FnOnce(SdkError<E, Response>) -> anyhow::Error + '_
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    call_failed_with(call, no_extra)
}

/// Like [`call_failed`], with a service's own classification (each service folder wraps it).
pub fn call_failed_with<E>(call: &str, extra: Classifier) -> impl FnOnce(SdkError<E, Response>) -> anyhow::Error + '_
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    move |e| anyhow::Error::new(classify(call, e, extra))
}

/// Whether any AWS error in the chain may succeed if tried again.
pub fn is_retryable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<AwsError>().is_some_and(AwsError::retryable))
}

/// Whether the error says the resource is gone (a delete of it is done).
pub fn is_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<AwsError>().is_some_and(|a| a.class == ErrorClass::Gone))
}

/// Exponential backoff with full jitter: a random wait in [0, base · 2^(attempt-1)], capped.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let cap = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(Duration::from_secs(20));
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    // xorshift of the clock's nanoseconds: enough to spread concurrent retries.
    let mut x = nanos as u64 ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    cap.mul_f64((x % 10_000) as f64 / 10_000.0)
}

/// Runs an idempotent operation (a read) up to `attempts` times while it fails retryably.
pub async fn with_retries<T, F, Fut>(attempts: u32, base: Duration, mut op: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if attempt < attempts && is_retryable(&e) => {
                tokio::time::sleep(backoff(base, attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Whether an AWS call in the chain failed with this error code.
pub fn has_code(e: &anyhow::Error, code: &str) -> bool {
    e.chain().any(|c| c.downcast_ref::<AwsError>().is_some_and(|a| a.code.as_deref() == Some(code)))
}

/// A retryable failure that is not an AWS error: the engine observes again and converges from
/// what it finds (a resource an earlier attempt created, one not yet visible after a create).
pub fn observe_again(call: &str, message: String) -> anyhow::Error {
    anyhow::Error::new(AwsError { call: call.to_string(), code: None, message, class: ErrorClass::Retryable })
}

/// `Ok(None)` where the call said the resource is not there (a read that finds nothing).
pub fn gone_as_none<T>(r: anyhow::Result<T>) -> anyhow::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_gone(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(retryable: bool) -> anyhow::Error {
        let class = if retryable { ErrorClass::Retryable } else { ErrorClass::Final };
        anyhow::Error::new(AwsError { call: "X".into(), code: None, message: "m".into(), class })
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        let base = Duration::from_millis(100);
        for attempt in 1..40 {
            assert!(backoff(base, attempt) <= Duration::from_secs(20));
        }
        let most = |attempt| (0..300).map(|_| backoff(base, attempt)).max().unwrap();
        assert!(most(1) <= base);
        // Attempt 6 may wait up to 32 × base: over 300 draws some exceed what attempt 1 allows.
        assert!(most(6) > base * 2, "backoff does not grow: {:?}", most(6));
        assert!(most(12) > Duration::from_secs(10), "the cap is reached: {:?}", most(12));
    }

    #[test]
    fn eventual_consistency_codes() {
        assert!(is_eventual_consistency("InvalidVpcID.NotFound"));
        assert!(is_eventual_consistency("InvalidGroup.NotFound"));
        assert!(!is_eventual_consistency("InvalidParameterValue"));
        assert!(!is_eventual_consistency("DependencyViolation"));
    }

    #[test]
    fn retryable_is_found_through_context() {
        assert!(is_retryable(&err(true).context("creating ec2:vpc vpc")));
        assert!(!is_retryable(&err(false).context("creating ec2:vpc vpc")));
        assert!(!is_retryable(&anyhow::anyhow!("plain")));
    }

    #[tokio::test]
    async fn reads_are_retried_only_while_retryable() {
        let mut calls = 0;
        let r: anyhow::Result<u32> = with_retries(4, Duration::from_millis(1), || {
            calls += 1;
            let c = calls;
            async move {
                if c < 3 {
                    Err(err(true))
                } else {
                    Ok(c)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
        let mut calls = 0;
        let r: anyhow::Result<u32> = with_retries(4, Duration::from_millis(1), || {
            calls += 1;
            async { Err(err(false)) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1, "validation errors are not retried");
        let mut calls = 0;
        let r: anyhow::Result<u32> = with_retries(3, Duration::from_millis(1), || {
            calls += 1;
            async { Err(err(true)) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 3, "bounded");
    }
}
