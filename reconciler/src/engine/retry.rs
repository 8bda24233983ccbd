//! Retrying AWS calls without ever repeating a mutation blindly, with a budget per error class.
//!
//! Two layers, each doing what only it can:
//! - **Per call** (in the SDK, [`super::calls`]): a throttled call is sent again (the service
//!   refused it, nothing happened), honouring `Retry-After`; a read that failed with a 5xx is
//!   sent again. Up to `max_attempts` tries, jittered exponential backoff. So a throttle on one
//!   of a dozen reads costs one more read, not the whole observe.
//! - **Per resource** (the engine, [`super::budget::RetryBudget`]): a mutation that failed ambiguously (5xx,
//!   transport: it may have happened) is never re-sent as it was: the resource is observed again
//!   by its tags and converged from what is there. Errors that heal with time have deadlines, not
//!   attempt counts: IAM propagation and "not visible yet" (`propagation_timeout`, default
//!   2 minutes, as Terraform's AWS provider uses for IAM), conflicts and dependency waits
//!   (`conflict_timeout`, default 10 minutes).
//!
//! Validation errors, access denied and limits are final.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

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
];

/// Whether a call only reads (it can be sent again whatever happened to the first one).
pub fn is_read(call: &str) -> bool {
    ["Describe", "List", "Get", "Discover", "Head", "Lookup"].iter().any(|p| call.starts_with(p))
}

/// Whether an answer with this HTTP status and code is throttling (API Gateway and others say
/// 429 with `TooManyRequestsException` or `LimitExceededException`).
pub fn is_throttling(status: u16, code: &str) -> bool {
    status == 429 || THROTTLING_CODES.contains(&code)
}

/// How a failed call should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The service refused the call for its rate: nothing happened. Retried per call, with
    /// backoff and `Retry-After`.
    Throttled,
    /// 5xx or transport: a read is sent again; a mutation may have happened, so it is observed
    /// again before anything is re-sent.
    Retryable,
    /// Not usable or visible *yet*: an IAM role another service cannot assume a moment after
    /// its creation, an id EC2 does not know a moment after creating it. Heals by itself;
    /// retried until `propagation_timeout`.
    Propagation,
    /// The resource is not there (any more): a delete is done, a read finds nothing.
    Gone,
    /// Another change is in progress on it (ConflictException, ResourceInUse, a dependency
    /// still being removed): retried until `conflict_timeout`.
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
    /// The SDK already sent this call again, up to `max_attempts` times (throttling; a 5xx on a
    /// read): the engine does not multiply those attempts.
    pub retried_per_call: bool,
    /// The HTTP status of the answer; `None` when no answer came (a timeout, a connection
    /// that failed).
    pub status: Option<u16>,
    /// AWS's id of the request, where the answer carried one: what AWS support asks for.
    pub request_id: Option<String>,
}

impl AwsError {
    pub fn new(call: &str, code: Option<String>, message: String, class: ErrorClass) -> Self {
        AwsError { call: call.to_string(), code, message, class, retried_per_call: false, status: None, request_id: None }
    }

    pub fn retryable(&self) -> bool {
        matches!(self.class, ErrorClass::Retryable | ErrorClass::Throttled | ErrorClass::Propagation | ErrorClass::Conflict)
    }
}

impl std::fmt::Display for AwsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.call, self.message)?;
        match &self.request_id {
            Some(id) => write!(f, " (request id {id})"),
            None => Ok(()),
        }
    }
}
impl std::error::Error for AwsError {}

/// A service's own error codes: (code, message) → class, `None` for the generic rules.
pub type Classifier = fn(&str, &str) -> Option<ErrorClass>;

pub(crate) fn no_extra(_: &str, _: &str) -> Option<ErrorClass> {
    None
}

/// The class of an AWS error answer: the service's own rules first (its "not visible yet",
/// "in use" and "gone" codes), then throttling (any 429), 5xx; everything else is final.
pub fn class_of(status: u16, code: &str, message: &str, extra: Classifier) -> ErrorClass {
    extra(code, message).unwrap_or({
        if is_throttling(status, code) {
            ErrorClass::Throttled
        } else if status >= 500 {
            ErrorClass::Retryable
        } else {
            ErrorClass::Final
        }
    })
}

/// Whether the SDK retries an error of this class on this call by itself (see
/// [`super::calls`]): the two must agree, so both use this.
pub fn retried_per_call(class: ErrorClass, read: bool) -> bool {
    class == ErrorClass::Throttled || (class == ErrorClass::Retryable && read)
}

/// Classifies an SDK error: the service's own rules first, then the generic ones; timeouts
/// and transport failures are retryable (a mutation only after observing again).
pub fn classify<E>(call: &str, e: SdkError<E, Response>, extra: Classifier) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    // The SDK's whole structure, for `RUST_LOG=reconciler::aws=debug` and the JSON log; what
    // a person reads is the code and message below.
    tracing::debug!(target: "reconciler::aws", call, error = ?e, "{call} failed");
    let (code, class, message, status, request_id) = match &e {
        SdkError::ServiceError(ctx) => {
            let code = ctx.err().code().map(str::to_string);
            let status = ctx.raw().status().as_u16();
            let said = ctx.err().message().unwrap_or_default();
            let class = class_of(status, code.as_deref().unwrap_or_default(), said, extra);
            let message = match (code.as_deref(), said) {
                (Some(c), "") => format!("{c} (HTTP {status})"),
                (Some(c), m) => format!("{c}: {m}"),
                (None, _) => format!("HTTP {status} with no AWS error code{}", excerpt(ctx.raw())),
            };
            let request_id = ctx.err().meta().extra("aws_request_id").map(str::to_string);
            (code, class, message, Some(status), request_id)
        }
        // An answer the SDK could not read: what it said, and what the answer was.
        SdkError::ResponseError(r) => {
            let status = r.raw().status().as_u16();
            (None, ErrorClass::Retryable, format!("{}; HTTP {status}{}", causes(&e), excerpt(r.raw())), Some(status), None)
        }
        // No answer: a read was sent again per call; a mutation may have happened.
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => (None, ErrorClass::Retryable, causes(&e), None, None),
        _ => (None, ErrorClass::Final, causes(&e), None, None),
    };
    let per_call = retried_per_call(class, is_read(call));
    AwsError { call: call.to_string(), code, message, class, retried_per_call: per_call, status, request_id }
}

/// The start of an answer's body on one line (": <text>"), for answers without an AWS error
/// code: what the endpoint said is the only clue.
fn excerpt(raw: &Response) -> String {
    let text = String::from_utf8_lossy(raw.body().bytes().unwrap_or_default()).split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(200) {
        _ if text.is_empty() => String::new(),
        Some((cut, _)) => format!(": {}…", &text[..cut]),
        None => format!(": {text}"),
    }
}

/// An error and its sources on one line ("dispatch failure: io error: connection refused"),
/// without the SDK's debug structures.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = s.source();
    }
    parts.join(": ")
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

/// The first AWS error in the chain.
pub fn aws_error(e: &anyhow::Error) -> Option<&AwsError> {
    e.chain().find_map(|c| c.downcast_ref::<AwsError>())
}

/// Whether any AWS error in the chain may succeed if tried again.
pub fn is_retryable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<AwsError>().is_some_and(AwsError::retryable))
}

/// Whether the error says the resource is gone (a delete of it is done).
pub fn is_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<AwsError>().is_some_and(|a| a.class == ErrorClass::Gone))
}

/// Whether the failed call may have taken effect (a mutation answered with a 5xx, or not
/// answered at all): whoever sent it must look before sending it again.
pub fn is_ambiguous(e: &anyhow::Error) -> bool {
    aws_error(e).is_some_and(|a| a.class == ErrorClass::Retryable && !is_read(&a.call) && a.code.as_deref() != Some(OBSERVE_AGAIN))
}

/// Whether `e` is AWS refusing the caller the call (its policy does not allow it): a reader
/// with a cheaper call to fall back on can tell this from a real failure.
pub fn is_denied(e: &anyhow::Error) -> bool {
    aws_error(e).is_some_and(|a| is_access_denied(a.code.as_deref().unwrap_or_default(), &a.message))
}

/// An access-denied answer, by code (query, EC2 and JSON protocols) or by message.
pub fn is_access_denied(code: &str, message: &str) -> bool {
    matches!(code, "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" | "UnauthorizedAccess" | "AuthorizationError")
        || message.contains("not authorized to perform")
}

/// Whether an AWS call in the chain failed with this error code.
pub fn has_code(e: &anyhow::Error, code: &str) -> bool {
    e.chain().any(|c| c.downcast_ref::<AwsError>().is_some_and(|a| a.code.as_deref() == Some(code)))
}

/// The code of an [`observe_again`] error.
const OBSERVE_AGAIN: &str = "ObserveAgain";

/// A retryable failure that is not an AWS error: the engine observes again and converges from
/// what it finds (a resource an earlier attempt created, one not yet visible after a create).
pub fn observe_again(call: &str, message: String) -> anyhow::Error {
    anyhow::Error::new(AwsError::new(call, Some(OBSERVE_AGAIN.into()), message, ErrorClass::Retryable))
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
pub(crate) mod tests {
    use super::*;

    /// An AWS failure of this class (`per_call`: the SDK already retried it).
    pub(crate) fn err_of(class: ErrorClass, call: &str, per_call: bool) -> anyhow::Error {
        anyhow::Error::new(AwsError { retried_per_call: per_call, ..AwsError::new(call, Some("C".into()), "m".into(), class) })
    }

    /// A failure of `CreateX`: retryable or final.
    pub(crate) fn err(retryable: bool) -> anyhow::Error {
        err_of(if retryable { ErrorClass::Retryable } else { ErrorClass::Final }, "CreateX", false)
    }

    #[test]
    fn failures_read_as_code_and_message() {
        use aws_smithy_types::body::SdkBody;
        use aws_smithy_types::error::ErrorMetadata;
        let raw = |status: u16| Response::new(status.try_into().unwrap(), SdkBody::from("{}"));
        let err = ErrorMetadata::builder().code("ClientException").message("Role is not valid").build();
        let a = classify("RegisterTaskDefinition", SdkError::service_error(err, raw(400)), no_extra);
        assert_eq!(a.to_string(), "RegisterTaskDefinition: ClientException: Role is not valid");
        // AWS's request id, where the answer has one: what AWS support asks for.
        let with_id = ErrorMetadata::builder()
            .code("Resource.AlreadyAssociated")
            .message("Resource 127.110.138.43 is already associated")
            .custom("aws_request_id", "5f2c-41aa")
            .build();
        let a = classify("CreateNatGateway", SdkError::service_error(with_id, raw(400)), no_extra);
        assert_eq!(
            a.to_string(),
            "CreateNatGateway: Resource.AlreadyAssociated: Resource 127.110.138.43 is already associated (request id 5f2c-41aa)"
        );
        let bare = ErrorMetadata::builder().code("InternalError").build();
        let a = classify("CreateVpc", SdkError::service_error(bare, raw(500)), no_extra);
        assert_eq!(a.to_string(), "CreateVpc: InternalError (HTTP 500)");
        let uncoded = ErrorMetadata::builder().build();
        let a = classify("GetApis", SdkError::service_error(uncoded, raw(502)), no_extra);
        assert_eq!(a.to_string(), "GetApis: HTTP 502 with no AWS error code: {}", "the body is the only clue");
        let lost: SdkError<ErrorMetadata, Response> = SdkError::timeout_error("attempt timed out after 3s");
        let a = classify("DescribeVpcs", lost, no_extra);
        assert!(!a.to_string().contains('{') && a.to_string().contains("attempt timed out"), "{a}");
    }

    #[test]
    fn classes_of_answers() {
        assert_eq!(class_of(400, "Throttling", "Rate exceeded", no_extra), ErrorClass::Throttled);
        assert_eq!(class_of(503, "RequestLimitExceeded", "", no_extra), ErrorClass::Throttled);
        assert_eq!(class_of(429, "LimitExceededException", "Too Many Requests", no_extra), ErrorClass::Throttled, "any 429");
        assert_eq!(class_of(500, "InternalError", "", no_extra), ErrorClass::Retryable);
        assert_eq!(class_of(400, "InvalidParameterValue", "", no_extra), ErrorClass::Final);
        assert_eq!(class_of(403, "AccessDenied", "", no_extra), ErrorClass::Final);
        fn gone(code: &str, _: &str) -> Option<ErrorClass> {
            (code == "InternalError").then_some(ErrorClass::Gone)
        }
        assert_eq!(class_of(500, "InternalError", "", gone), ErrorClass::Gone, "the service's own rules come first");
    }

    #[test]
    fn what_the_sdk_retries_per_call() {
        assert!(retried_per_call(ErrorClass::Throttled, false), "a throttled mutation had no effect");
        assert!(retried_per_call(ErrorClass::Retryable, true), "a read is sent again after a 5xx");
        assert!(!retried_per_call(ErrorClass::Retryable, false), "a mutation after a 5xx may have happened");
        assert!(!retried_per_call(ErrorClass::Propagation, true));
        assert!(is_read("DescribeVpcs") && is_read("ListRoles") && is_read("GetRole") && is_read("DiscoverInstances"));
        assert!(!is_read("CreateVpc") && !is_read("DeleteVpcLink") && !is_read("RegisterTaskDefinition"));
    }

    #[test]
    fn ambiguous_means_a_mutation_that_may_have_happened() {
        assert!(is_ambiguous(&err_of(ErrorClass::Retryable, "CreateVpc", false)));
        assert!(!is_ambiguous(&err_of(ErrorClass::Retryable, "DescribeVpcs", true)));
        assert!(!is_ambiguous(&err_of(ErrorClass::Throttled, "CreateVpc", true)), "refused for its rate: nothing happened");
        assert!(!is_ambiguous(&observe_again("CreateRole", "exists".into())));
    }

    #[test]
    fn retryable_is_found_through_context() {
        assert!(is_retryable(&err(true).context("creating ec2:vpc vpc")));
        assert!(!is_retryable(&err(false).context("creating ec2:vpc vpc")));
        assert!(!is_retryable(&anyhow::anyhow!("plain")));
    }
}
