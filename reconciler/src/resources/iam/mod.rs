//! IAM: the task and execution roles, and what every IAM kind shares: the client, error
//! classification (including other services' "role cannot be assumed yet" errors), tags,
//! and policy documents — decoded from IAM's URL-encoding and put in a canonical form so
//! that they are compared by meaning, not by spelling.

mod role;

pub use role::{Role, RoleFields};

use crate::engine::ownership;
use crate::engine::ownership::{TagDelta, TagMap};
use crate::engine::{Ctx, DynKind, ErrorClass};
use anyhow::Context as _;
use aws_sdk_iam::types::Tag;
use serde_json::{Map, Value};

crate::engine::calls::service!(aws_sdk_iam, classify);

/// The IAM kinds.
pub fn kinds() -> Vec<Box<dyn DynKind>> {
    vec![Box::new(Role)]
}

/// IAM's own error codes, and propagation delays reported by any service.
fn classify(code: &str, message: &str) -> Option<ErrorClass> {
    match code {
        "NoSuchEntity" | "NoSuchEntityException" => Some(ErrorClass::Gone),
        "ConcurrentModification" | "ConcurrentModificationException" => Some(ErrorClass::Conflict),
        "ServiceFailure" | "ServiceFailureException" => Some(ErrorClass::Retryable),
        _ => propagation(code, message),
    }
}

/// A [`crate::engine::retry::Classifier`] rule for the services that are handed a role
/// (ECS, Application Auto Scaling): a role created seconds ago is not yet visible to them.
/// Their own `call_failed` can chain it: `propagation(code, message).or(...)`.
pub fn propagation(code: &str, message: &str) -> Option<ErrorClass> {
    is_propagation_error(code, message).then_some(ErrorClass::Propagation)
}

/// Whether another service's validation error only says that a role is not usable *yet*.
/// IAM is eventually consistent: a role (or its trust policy) created or changed a moment
/// ago can be refused as "cannot be assumed" for a few seconds, by a service that validates
/// the role on the request (ECS task definitions and services, Application Auto Scaling,
/// Lambda, EventBridge Scheduler). Retried with backoff this goes away; a role that really is
/// wrong keeps failing and surfaces once the attempts are used up.
pub fn is_propagation_error(code: &str, message: &str) -> bool {
    // Only validation-style codes: an AccessDenied for the *caller* is not a delay.
    const CODES: &[&str] = &[
        "InvalidParameterException",
        "InvalidParameterValueException",
        "InvalidParameterValue",
        "InvalidParameter",
        "InvalidParameterCombination",
        "ValidationException",
        "ValidationError",
        "ClientException",
        "BadRequestException",
        "InvalidRequestException",
        "InvalidInputException",
        "MalformedPolicyDocument",
    ];
    const SAYINGS: &[&str] = &[
        "cannot be assumed",
        "could not be assumed",
        "unable to assume",
        "could not assume",
        "failed to assume",
        "not authorized to perform: sts:assumerole",
        "is not authorized to assume",
        "to assume the role",
        // ECS RegisterTaskDefinition names a role it cannot see yet this way.
        "role is not valid",
        // IAM itself, for a trust policy naming a role principal created a moment ago.
        "invalid principal in policy",
        // ECS, for a task role or execution role it cannot see yet.
        "verify that the role being passed has the proper trust relationship",
    ];
    if !CODES.contains(&code) {
        return false;
    }
    let m = message.to_ascii_lowercase();
    SAYINGS.iter().any(|s| m.contains(s))
}

/// Logical id and comparable tags of a role, if `stack` owns it.
pub fn owned(ctx: &Ctx, tags: &[Tag]) -> (Option<String>, TagMap) {
    ownership::owner(&ctx.settings.stack, tags.iter().map(|t| (t.key(), t.value())))
}

/// Tags in IAM's request shape.
pub fn iam_tags<'a>(tags: impl IntoIterator<Item = (&'a String, &'a String)>) -> anyhow::Result<Vec<Tag>> {
    tags.into_iter().map(|(k, v)| Tag::builder().key(k).value(v).build().context("internal error: building an IAM tag")).collect()
}

/// Applies a tag delta to a role: TagRole for what to set, UntagRole for what to remove.
pub async fn apply_tags(ctx: &Ctx, role: &str, delta: &TagDelta) -> anyhow::Result<()> {
    if !delta.set.is_empty() {
        client(ctx).tag_role().role_name(role).set_tags(Some(iam_tags(&delta.set)?)).send().await.map_err(call_failed("TagRole"))?;
    }
    if !delta.unset.is_empty() {
        client(ctx).untag_role().role_name(role).set_tag_keys(Some(delta.unset.clone())).send().await.map_err(call_failed("UntagRole"))?;
    }
    Ok(())
}

/// The path every role of `stack` lives under: it scopes both the listing and the IAM
/// policy (`arn:aws:iam::*:role/reconciler/<stack>/*`).
pub fn role_path(stack: &str) -> String {
    format!("/reconciler/{stack}/")
}

/// `%XX` escapes decoded (RFC 3986: `+` stays a plus). `None` for a malformed escape or
/// bytes that are not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A policy document as IAM returns it. Real IAM URL-encodes documents (`%7B%22Version…`)
/// in GetRole, GetRolePolicy, ListRoles and GetAccountAuthorizationDetails; moto encodes them
/// in GetRole, GetRolePolicy and GetAccountAuthorizationDetails but returns plain JSON from
/// ListRoles. Plain JSON is taken as is; anything that starts with `%7B` or does not parse is
/// decoded first.
pub fn parse_policy_document(text: &str) -> anyhow::Result<Value> {
    let encoded = text.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("%7B"));
    if !encoded {
        if let Ok(v) = serde_json::from_str(text) {
            return Ok(v);
        }
    }
    let decoded = percent_decode(text)
        .with_context(|| format!("IAM returned a policy document that is neither JSON nor URL-encoded JSON: {text:.200}"))?;
    serde_json::from_str(&decoded).with_context(|| format!("IAM returned a policy document that is not valid JSON: {decoded:.200}"))
}

/// The canonical form of a policy document, for comparing by meaning: `Statement` always an
/// array, statements sorted and de-duplicated; `Action`, `NotAction`, `Resource`,
/// `NotResource` and each `Principal`/`NotPrincipal` entry a sorted array even where written
/// as one string; object keys in one order; `Version`, `Sid` and `Condition` values kept as
/// written (desired state builds conditions with single values, and IAM echoes a document as
/// it was sent). Desired state builds documents in this form (or applies this function), so
/// a document written with single strings matches what IAM echoes back. Idempotent.
pub fn canonical_policy(doc: &Value) -> Value {
    let Value::Object(m) = doc else { return doc.clone() };
    let mut out = Map::new();
    for (k, v) in sorted(m) {
        let v = match k.as_str() {
            "Statement" => {
                let list = match v {
                    Value::Array(a) => a.iter().map(statement).collect(),
                    one => vec![statement(one)],
                };
                sorted_set(list)
            }
            _ => keys_sorted(v),
        };
        out.insert(k.clone(), v);
    }
    Value::Object(out)
}

fn statement(s: &Value) -> Value {
    let Value::Object(m) = s else { return keys_sorted(s) };
    let mut out = Map::new();
    for (k, v) in sorted(m) {
        let v = match k.as_str() {
            "Action" | "NotAction" | "Resource" | "NotResource" => as_set(v),
            // `"Principal": "*"` stays a string: `{"AWS": "*"}` is its other spelling, and
            // AWS echoes whichever was sent.
            "Principal" | "NotPrincipal" => match v {
                Value::Object(p) => Value::Object(sorted(p).map(|(k, v)| (k.clone(), as_set(v))).collect()),
                other => other.clone(),
            },
            _ => keys_sorted(v),
        };
        out.insert(k.clone(), v);
    }
    Value::Object(out)
}

/// One value or a list of values, as a sorted, de-duplicated list.
fn as_set(v: &Value) -> Value {
    match v {
        Value::Array(a) => sorted_set(a.iter().map(keys_sorted).collect()),
        one => Value::Array(vec![keys_sorted(one)]),
    }
}

fn sorted_set(mut items: Vec<Value>) -> Value {
    items.sort_by_cached_key(Value::to_string);
    items.dedup();
    Value::Array(items)
}

fn sorted(m: &Map<String, Value>) -> impl Iterator<Item = (&String, &Value)> {
    let mut entries: Vec<(&String, &Value)> = m.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries.into_iter()
}

/// Objects rebuilt with their keys in order (so that serialised forms, used to sort
/// statements, do not depend on how the document was written).
fn keys_sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(sorted(m).map(|(k, v)| (k.clone(), keys_sorted(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(keys_sorted).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("%7B%22a%22%3A%20%22b%2Bc+d%22%7D").as_deref(), Some(r#"{"a": "b+c+d"}"#));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("%e2%82%ac").as_deref(), Some("€"), "multi-byte UTF-8, lower-case hex");
        assert_eq!(percent_decode("%7"), None, "truncated escape");
        assert_eq!(percent_decode("%+1"), None, "a sign is not a hex digit");
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%FF"), None, "not UTF-8");
    }

    #[test]
    fn policy_documents_are_decoded_when_encoded() {
        let want = json!({"Version": "2012-10-17", "Statement": []});
        // As real IAM (and moto's GetRole) returns it.
        assert_eq!(parse_policy_document("%7B%22Version%22%3A%20%222012-10-17%22%2C%20%22Statement%22%3A%20%5B%5D%7D").unwrap(), want);
        assert_eq!(parse_policy_document("%7b%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D").unwrap(), want);
        // As moto's ListRoles returns it.
        assert_eq!(parse_policy_document(r#"{"Version": "2012-10-17", "Statement": []}"#).unwrap(), want);
        // Encoded but starting with encoded whitespace: not JSON, so decoded.
        assert_eq!(parse_policy_document("%0A%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D").unwrap(), want);
        // Plain JSON containing a percent sign is left alone.
        assert_eq!(parse_policy_document(r#"{"Sid": "100%25"}"#).unwrap(), json!({"Sid": "100%25"}));
        let err = parse_policy_document("%7Bnot json").unwrap_err();
        assert!(format!("{err:#}").contains("not valid JSON"), "{err:#}");
    }

    #[test]
    fn canonical_policies_compare_by_meaning() {
        let written = json!({
            "Version": "2012-10-17",
            "Statement": {
                "Effect": "Allow",
                "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": "123456789012"}}
            }
        });
        let echoed = json!({
            "Statement": [{
                "Condition": {"StringEquals": {"aws:SourceAccount": "123456789012"}},
                "Action": ["sts:AssumeRole"],
                "Principal": {"Service": ["ecs-tasks.amazonaws.com"]},
                "Effect": "Allow"
            }],
            "Version": "2012-10-17"
        });
        assert_eq!(canonical_policy(&written), canonical_policy(&echoed));
        assert_eq!(
            canonical_policy(&written),
            json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Action": ["sts:AssumeRole"],
                    "Condition": {"StringEquals": {"aws:SourceAccount": "123456789012"}},
                    "Effect": "Allow",
                    "Principal": {"Service": ["ecs-tasks.amazonaws.com"]}
                }]
            })
        );
    }

    #[test]
    fn statements_and_lists_are_sets() {
        let a = json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["sqs:SendMessage", "sqs:GetQueueUrl"], "Resource": "arn:aws:sqs:*:*:q"},
            {"Sid": "Logs", "Effect": "Allow", "NotAction": "logs:Delete*", "NotResource": ["b", "a", "a"]},
        ]});
        let b = json!({"Version": "2012-10-17", "Statement": [
            {"NotResource": ["a", "b"], "NotAction": ["logs:Delete*"], "Effect": "Allow", "Sid": "Logs"},
            {"Resource": ["arn:aws:sqs:*:*:q"], "Action": ["sqs:GetQueueUrl", "sqs:SendMessage"], "Effect": "Allow"},
            {"Resource": "arn:aws:sqs:*:*:q", "Action": ["sqs:GetQueueUrl", "sqs:SendMessage"], "Effect": "Allow"},
        ]});
        assert_eq!(canonical_policy(&a), canonical_policy(&b));
        // Idempotent, and real differences survive.
        let c = canonical_policy(&a);
        assert_eq!(canonical_policy(&c), c);
        let mut d = a.clone();
        d["Statement"][0]["Action"] = json!("sqs:SendMessage");
        assert_ne!(canonical_policy(&d), c);
        let mut e = a.clone();
        e["Version"] = json!("2008-10-17");
        assert_ne!(canonical_policy(&e), c, "Version is kept");
    }

    #[test]
    fn documents_built_canonical_are_a_fixed_point() {
        // As desired state builds them (lists everywhere, statements sorted, conditions with
        // single values): what IAM echoes must canonicalise back to exactly this.
        let built = json!({"Version": "2012-10-17", "Statement": [
            {"Action": ["sts:AssumeRole"], "Condition": {"ArnLike": {"aws:SourceArn": "arn:aws:ecs:us-east-1:1:*"}, "StringEquals": {"aws:SourceAccount": "1"}},
             "Effect": "Allow", "Principal": {"Service": ["ecs-tasks.amazonaws.com"]}},
            {"Action": ["s3:ListBucket"], "Condition": {"StringLike": {"s3:prefix": ["pkg/*"]}}, "Effect": "Allow", "Resource": ["arn:aws:s3:::b"], "Sid": "List"},
        ]});
        let mut sorted = built.clone();
        sorted["Statement"] = crate::engine::normalise_set(built["Statement"].as_array().unwrap().clone());
        assert_eq!(canonical_policy(&sorted), sorted);
    }

    #[test]
    fn wildcard_principal_stays_a_string() {
        let p = canonical_policy(&json!({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject"}]}));
        assert_eq!(p["Statement"][0]["Principal"], json!("*"));
    }

    #[test]
    fn propagation_errors_from_other_services() {
        assert!(is_propagation_error(
            "InvalidParameterException",
            "ECS was unable to assume the role 'arn:aws:iam::1:role/reconciler/s/s-execution' that was provided for this task."
        ));
        assert!(is_propagation_error("ValidationException", "Unable to assume IAM role: arn:aws:iam::1:role/x"));
        assert!(is_propagation_error("InvalidParameterValueException", "The role defined for the function cannot be assumed by Lambda."));
        assert!(is_propagation_error(
            "ValidationException",
            "User: arn:aws:sts::1:assumed-role/x is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::1:role/y"
        ));
        assert!(is_propagation_error("ClientException", "Role is not valid"));
        // The caller's own permissions, and unrelated validation errors, are not delays.
        assert!(!is_propagation_error("AccessDeniedException", "User x is not authorized to perform: iam:PassRole"));
        assert!(!is_propagation_error("InvalidParameterException", "The specified cluster is inactive."));
        assert!(!is_propagation_error("ThrottlingException", "unable to assume role"));
    }

    #[test]
    fn classification() {
        assert_eq!(classify("NoSuchEntity", "Role x not found"), Some(ErrorClass::Gone));
        assert_eq!(classify("ConcurrentModification", ""), Some(ErrorClass::Conflict));
        assert_eq!(classify("MalformedPolicyDocument", "Invalid principal in policy: \"AWS\":\"arn:…\""), Some(ErrorClass::Propagation));
        assert_eq!(classify("MalformedPolicyDocument", "Policy document should not specify a principal."), None);
        assert_eq!(classify("EntityAlreadyExists", "Role with name x already exists."), None);
        assert_eq!(propagation("ValidationException", "Unable to assume IAM role"), Some(ErrorClass::Propagation));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// One policy statement, every list written as a list.
        fn statement() -> impl Strategy<Value = Value> {
            let actions = prop::collection::vec("(s3|sqs|ecs|logs):[A-Z][a-zA-Z]{0,8}\\*?", 1..4);
            let resources = prop::collection::vec(prop_oneof![Just("*".to_string()), "arn:aws:s3:::[a-z]{1,6}/[a-z*]{0,4}"], 1..3);
            let principal = prop::option::of(prop::collection::vec("[a-z]{1,8}\\.amazonaws\\.com", 1..3));
            let condition = prop::option::of(("[a-z]{1,6}", "[a-z0-9]{0,6}"));
            (any::<bool>(), any::<bool>(), actions, resources, principal, condition).prop_map(
                |(allow, not, actions, resources, principal, condition)| {
                    let mut st = json!({"Effect": if allow { "Allow" } else { "Deny" }, "Resource": resources});
                    st[if not { "NotAction" } else { "Action" }] = json!(actions);
                    if let Some(p) = principal {
                        st["Principal"] = json!({"Service": p});
                    }
                    if let Some((k, v)) = condition {
                        st["Condition"] = json!({"StringEquals": {format!("aws:ResourceTag/{k}"): v}});
                    }
                    st
                },
            )
        }

        fn policy() -> impl Strategy<Value = Value> {
            prop::collection::vec(statement(), 1..4).prop_map(|s| json!({"Version": "2012-10-17", "Statement": s}))
        }

        /// The same policy as someone may write it and IAM echoes it (as sent): a one-item list
        /// as a string, lists in another order and with repeats, statements in another order,
        /// one statement not in a list.
        fn respelled(doc: &Value, turn: usize) -> Value {
            fn list(v: &Value, turn: usize) -> Value {
                let Value::Array(a) = v else { return v.clone() };
                match (a.len(), turn % 3) {
                    (1, 0) => a[0].clone(),
                    (_, 1) => Value::Array(a.iter().rev().cloned().collect()),
                    _ => Value::Array(a.iter().chain(a.first()).cloned().collect()),
                }
            }
            let mut statements: Vec<Value> = doc["Statement"].as_array().unwrap().clone();
            for st in &mut statements {
                for k in ["Action", "NotAction", "Resource"] {
                    if let Some(v) = st.get(k).cloned() {
                        st[k] = list(&v, turn);
                    }
                }
                if let Some(p) = st.get("Principal").and_then(|p| p.get("Service")).cloned() {
                    st["Principal"]["Service"] = list(&p, turn + 1);
                }
            }
            let by = turn % statements.len();
            statements.rotate_left(by);
            let statement = if statements.len() == 1 && turn.is_multiple_of(2) { statements[0].clone() } else { Value::Array(statements) };
            json!({"Version": "2012-10-17", "Statement": statement})
        }

        /// RFC 3986 percent-encoding, as IAM returns documents.
        fn url_encoded(text: &str) -> String {
            text.bytes()
                .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
                .collect()
        }

        proptest! {
            /// #23 §2: a policy, written any of the ways that mean the same and read back as IAM
            /// returns it (URL-encoded), compares equal to it; canonical forms are a fixed point.
            #[test]
            fn a_policy_read_back_compares_equal_to_what_was_sent(doc in policy(), turn in 0..6usize, pretty in any::<bool>()) {
                let sent = respelled(&doc, turn);
                let text = if pretty { serde_json::to_string_pretty(&sent).unwrap() } else { sent.to_string() };
                let echoed = parse_policy_document(&url_encoded(&text)).unwrap();
                prop_assert_eq!(canonical_policy(&echoed), canonical_policy(&doc));
                prop_assert_eq!(canonical_policy(&canonical_policy(&doc)), canonical_policy(&doc));
            }
        }
    }
}
