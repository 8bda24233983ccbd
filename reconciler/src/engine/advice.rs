//! What to do about a failed run, where we know it: the last line a person reads after
//! `error: …`. The error itself already says what failed (`creating ec2:nat-gateway nat-1:
//! CreateNatGateway: Resource.AlreadyAssociated: …`); this adds the step that fixes it for
//! the failures people meet most: missing permissions, bad credentials, throttling that
//! outlasted the retries, a value AWS refused, a quota, an unreachable endpoint.

use super::retry::{is_access_denied, ErrorClass};

/// The error line and, where one applies, a `hint:` line: what a failed command prints last
/// (the golden tests' view of `log::failure`).
#[cfg(test)]
fn render(e: &anyhow::Error) -> String {
    crate::log::failure_text(&format!("{e:#}"), advice(e).as_deref())
}

/// The error's text and, where one applies, `\nhint: …` (for `run`'s status line).
pub fn with_hint(e: &anyhow::Error) -> String {
    format!("{e:#}{}", crate::log::hint_lines(advice(e).as_deref()))
}

/// The step that fixes `e`, if it is a failure we know.
pub fn advice(e: &anyhow::Error) -> Option<String> {
    let aws = super::retry::aws_error(e)?;
    let code = aws.code.as_deref().unwrap_or_default();
    let rerun = "then run the same command again (it converges from what exists)";
    if is_access_denied(code, &aws.message) {
        let action = denied_action(&aws.message).unwrap_or_else(|| aws.call.clone());
        return Some(format!(
            "the credentials in use may not call {action}. `reconciler policy SPEC` prints the IAM policy apply needs (`--for plan` for plan); attach it to the identity running the reconciler, {rerun}"
        ));
    }
    if matches!(
        code,
        "ExpiredToken"
            | "ExpiredTokenException"
            | "InvalidClientTokenId"
            | "UnrecognizedClientException"
            | "SignatureDoesNotMatch"
            | "AuthFailure"
    ) {
        return Some(format!("the AWS credentials are expired or not valid: refresh them (a new session, `aws sso login`), {rerun}"));
    }
    if code.contains("LimitExceeded") || code == "ServiceQuotaExceededException" {
        if aws.class == ErrorClass::Throttled {
            return Some(throttled(&aws.call));
        }
        return Some(format!("an account quota was reached: remove what no longer runs or raise the quota in Service Quotas, {rerun}"));
    }
    match (aws.class, aws.status) {
        (ErrorClass::Throttled, _) => Some(throttled(&aws.call)),
        (ErrorClass::Retryable, None) => {
            Some(format!("no answer from AWS for {}: check the network, the region, and AWS_ENDPOINT_URL if it is set, {rerun}", aws.call))
        }
        (_, Some(status)) if aws.code.is_none() => Some(format!(
            "HTTP {status} without an AWS error for {}: something other than AWS answered (a proxy, or a wrong AWS_ENDPOINT_URL); check those, {rerun}",
            aws.call
        )),
        (ErrorClass::Final, _) if code.contains("Validation") || code.starts_with("InvalidParameter") => Some(format!(
            "AWS refused a value (the message above names it): change it in the spec, or report a bug if the spec does not set it, {rerun}"
        )),
        _ => None,
    }
}

fn throttled(call: &str) -> String {
    format!("AWS kept throttling {call} after the retries: something else is using this account's API rate (another stack's pass, a deploy). Wait a minute, then run the same command again (it converges from what exists)")
}

/// `ec2:CreateNatGateway` from AWS's `… is not authorized to perform: ec2:CreateNatGateway on
/// resource …` (IAM, ECS and most JSON services) or `… to perform ec2:CreateNatGateway …`.
fn denied_action(message: &str) -> Option<String> {
    message.split("to perform").skip(1).find_map(|rest| {
        let rest = rest.trim_start_matches(':').trim_start();
        let action: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == ':' || *c == '-').collect();
        action.contains(':').then_some(action)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::retry::{classify, no_extra};
    use aws_smithy_runtime_api::client::result::{ConnectorError, SdkError};
    use aws_smithy_runtime_api::http::Response;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;
    use std::collections::BTreeSet;

    /// An AWS answer as the engine reports it: under the context apply gives it.
    fn answer(call: &str, status: u16, code: &str, message: &str) -> anyhow::Error {
        let raw = Response::new(status.try_into().unwrap(), SdkBody::from("{}"));
        let err = ErrorMetadata::builder().code(code).message(message).build();
        anyhow::Error::new(classify(call, SdkError::service_error(err, raw), no_extra)).context("creating ec2:nat-gateway nat-1")
    }

    /// Golden texts: what a person reads for each common failure, exactly.
    #[test]
    fn common_failures_read_as_what_failed_and_what_to_do() {
        let denied = answer(
            "CreateNatGateway",
            403,
            "UnauthorizedOperation",
            "You are not authorized to perform this operation. User: arn:aws:sts::1:assumed-role/ci/x is not authorized to perform: ec2:CreateNatGateway on resource: arn:aws:ec2:us-east-1:1:natgateway/*",
        );
        assert_eq!(
            render(&denied),
            "error: creating ec2:nat-gateway nat-1: CreateNatGateway: UnauthorizedOperation: You are not authorized to perform this operation. User: arn:aws:sts::1:assumed-role/ci/x is not authorized to perform: ec2:CreateNatGateway on resource: arn:aws:ec2:us-east-1:1:natgateway/*\n\
             hint: the credentials in use may not call ec2:CreateNatGateway. `reconciler policy SPEC` prints the IAM policy apply needs (`--for plan` for plan); attach it to the identity running the reconciler, then run the same command again (it converges from what exists)"
        );
        let throttled = answer("CreateNatGateway", 503, "RequestLimitExceeded", "Request limit exceeded.");
        assert_eq!(
            render(&throttled),
            "error: creating ec2:nat-gateway nat-1: CreateNatGateway: RequestLimitExceeded: Request limit exceeded.\n\
             hint: AWS kept throttling CreateNatGateway after the retries: something else is using this account's API rate (another stack's pass, a deploy). Wait a minute, then run the same command again (it converges from what exists)"
        );
        let validation = answer("CreateNatGateway", 400, "InvalidParameterValue", "Subnet subnet-1 is not in a public route table");
        assert_eq!(
            render(&validation),
            "error: creating ec2:nat-gateway nat-1: CreateNatGateway: InvalidParameterValue: Subnet subnet-1 is not in a public route table\n\
             hint: AWS refused a value (the message above names it): change it in the spec, or report a bug if the spec does not set it, then run the same command again (it converges from what exists)"
        );
        let quota = answer("CreateNatGateway", 400, "NatGatewayLimitExceeded", "The maximum number of NAT gateways has been reached.");
        assert!(render(&quota).ends_with("hint: an account quota was reached: remove what no longer runs or raise the quota in Service Quotas, then run the same command again (it converges from what exists)"));
        let expired = answer("CreateNatGateway", 400, "ExpiredToken", "The security token included in the request is expired");
        assert!(render(&expired).contains("\nhint: the AWS credentials are expired or not valid"));
        let lost: SdkError<ErrorMetadata, Response> =
            SdkError::dispatch_failure(ConnectorError::io("tcp connect error: Connection refused (os error 111)".into()));
        let unreachable = anyhow::Error::new(classify("DescribeVpcs", lost, no_extra)).context("observing ec2:vpc");
        let text = render(&unreachable);
        assert!(text.starts_with("error: observing ec2:vpc: DescribeVpcs: ") && text.contains("Connection refused"), "{text}");
        assert!(!text.contains("DispatchFailure") && !text.contains("ConnectorError {"), "no SDK structures: {text}");
        assert!(text.ends_with("hint: no answer from AWS for DescribeVpcs: check the network, the region, and AWS_ENDPOINT_URL if it is set, then run the same command again (it converges from what exists)"), "{text}");
    }

    #[test]
    fn failures_without_a_known_fix_have_no_hint() {
        let conflict = answer("DeleteSubnet", 400, "DependencyViolation", "The subnet has dependencies");
        assert_eq!(
            render(&conflict),
            "error: creating ec2:nat-gateway nat-1: DeleteSubnet: DependencyViolation: The subnet has dependencies"
        );
        let plain = anyhow::anyhow!("spec.yaml: line 3: unknown field `nmae`").context("loading the spec");
        assert_eq!(render(&plain), "error: loading the spec: spec.yaml: line 3: unknown field `nmae`");
        // The not-owned refusal carries its own advice.
        let tags = std::collections::BTreeMap::new();
        let not_owned = crate::engine::ownership::not_owned("Cloud Map namespace", "benchling.local", "prod", &tags);
        let text = render(&not_owned);
        assert!(text.starts_with("error: Cloud Map namespace `benchling.local` exists but is not owned by stack `prod`"), "{text}");
        assert!(!text.contains("\nhint:"), "{text}");
    }

    /// An answer without an AWS error code is not "no answer": it says what answered.
    #[test]
    fn an_answer_without_an_aws_error_is_not_called_unreachable() {
        let raw = Response::new(502.try_into().unwrap(), SdkBody::from("<html>Bad Gateway</html>"));
        let bare: SdkError<ErrorMetadata, Response> = SdkError::service_error(ErrorMetadata::builder().build(), raw);
        let text = render(&anyhow::Error::new(classify("GetApis", bare, no_extra)));
        assert!(text.contains("\nhint: HTTP 502 without an AWS error for GetApis: something other than AWS answered"), "{text}");
        assert!(!text.contains("no answer from AWS"), "{text}");
    }

    #[test]
    fn summaries_list_each_hint_once() {
        let hints: BTreeSet<String> = ["b".to_string(), "a".to_string()].into();
        assert_eq!(crate::log::hint_lines(hints.iter().map(String::as_str)), "\nhint: a\nhint: b");
        assert_eq!(crate::log::hint_lines(None), "");
    }

    #[test]
    fn the_denied_action_is_read_from_the_message() {
        assert_eq!(denied_action("User: x is not authorized to perform: svc:PassThing on resource: y").as_deref(), Some("svc:PassThing"));
        assert_eq!(denied_action("not authorized to perform svc:CreateThing because").as_deref(), Some("svc:CreateThing"));
        assert_eq!(denied_action("You are not authorized to perform this operation."), None);
        assert_eq!(denied_action("Access Denied"), None);
    }
}
