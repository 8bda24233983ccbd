//! SQS: the stack's event queue and its dead-letter queue, and the service's plumbing: the
//! client, error classification, tags.
//!
//! This module also holds the small pure helpers the sqs, logs and iam folders share (typed
//! fields, tag arithmetic for convergence and for retaining). They need no AWS types; their
//! natural home is `engine::ownership` / `engine`, and they can move there as they are.

mod queue;

pub use queue::{Queue, QueueFields, Redrive};

use crate::engine::ownership::{self, ID_TAG, RETAINED_FROM_TAG, STACK_TAG};
use crate::engine::{call_failed_with, AwsError, Ctx, ErrorClass, FieldChange, Fields, Kind, Service};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

impl Service for aws_sdk_sqs::Client {
    fn connect(conf: &aws_config::SdkConfig, _emulated: bool) -> Self {
        aws_sdk_sqs::Client::new(conf)
    }
}

pub fn client(ctx: &Ctx) -> aws_sdk_sqs::Client {
    ctx.client()
}

/// The SQS kinds.
pub fn kinds() -> Vec<Box<dyn Kind>> {
    vec![Box::new(Queue)]
}

/// SQS speaks JSON but reports the old query-protocol codes (`x-amzn-query-error`), which the
/// SDK prefers; both spellings are listed.
fn classify(code: &str, _message: &str) -> Option<ErrorClass> {
    match code {
        "AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist" => Some(ErrorClass::Gone),
        // A queue name is blocked for 60 s after its queue was deleted.
        "AWS.SimpleQueueService.QueueDeletedRecently" | "QueueDeletedRecently" => Some(ErrorClass::Conflict),
        _ => None,
    }
}

/// For `.map_err(call_failed("GetQueueAttributes"))` on SQS SDK results.
pub fn call_failed<E>(call: &str) -> impl FnOnce(SdkError<E, Response>) -> anyhow::Error + '_
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    call_failed_with(call, classify)
}

/// Whether `e` is SQS refusing a name because a queue of that name was deleted < 60 s ago.
pub fn deleted_recently(e: &anyhow::Error) -> bool {
    has_code(e, "AWS.SimpleQueueService.QueueDeletedRecently") || has_code(e, "QueueDeletedRecently")
}

/// Logical id and comparable tags, from SQS's tag map.
pub fn owned(ctx: &Ctx, tags: Option<&HashMap<String, String>>) -> (Option<String>, TagMap) {
    let pairs = || tags.into_iter().flatten().map(|(k, v)| (k.as_str(), v.as_str()));
    (ownership::owned_id(&ctx.settings.stack, pairs()), ownership::comparable(pairs()))
}

/// Applies a tag delta to a queue: TagQueue for what to set, UntagQueue for what to remove.
pub async fn apply_tags(ctx: &Ctx, url: &str, delta: &TagDelta) -> anyhow::Result<()> {
    if !delta.set.is_empty() {
        let tags: HashMap<String, String> = delta.set.clone().into_iter().collect();
        client(ctx).tag_queue().queue_url(url).set_tags(Some(tags)).send().await.map_err(call_failed("TagQueue"))?;
    }
    if !delta.unset.is_empty() {
        client(ctx).untag_queue().queue_url(url).set_tag_keys(Some(delta.unset.clone())).send().await.map_err(call_failed("UntagQueue"))?;
    }
    Ok(())
}

// ---- Shared by the sqs, logs and iam folders -------------------------------------------

/// A `tags` field: key → value.
pub type TagMap = BTreeMap<String, String>;

/// What turns one tag set into another: keys to set (new, or with another value) and keys to
/// remove. Tags are set before they are removed, so ownership tags are never missing midway.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TagDelta {
    pub set: TagMap,
    pub unset: Vec<String>,
}

impl TagDelta {
    pub fn between(have: &TagMap, want: &TagMap) -> TagDelta {
        TagDelta {
            set: want.iter().filter(|(k, v)| have.get(*k) != Some(v)).map(|(k, v)| (k.clone(), v.clone())).collect(),
            unset: have.keys().filter(|k| !want.contains_key(*k)).cloned().collect(),
        }
    }

    /// The `tags` change among `changes`, if any. AWS-managed `aws:*` tags were never
    /// compared (observe drops them), so they are never removed.
    pub fn of(changes: &[FieldChange]) -> TagDelta {
        let Some(c) = changes.iter().find(|c| c.field == "tags") else { return TagDelta::default() };
        TagDelta::between(&tag_map(c.before.as_ref()), &tag_map(Some(&c.after)))
    }

    /// Retaining a resource: mark the stack it came from, then drop the ownership tags (in
    /// that order, so that an interruption never leaves it unowned *and* unmarked).
    pub fn orphan(stack: &str) -> TagDelta {
        TagDelta {
            set: TagMap::from([(RETAINED_FROM_TAG.to_string(), stack.to_string())]),
            unset: vec![STACK_TAG.to_string(), ID_TAG.to_string()],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.unset.is_empty()
    }
}

/// A `tags` field value as a map (anything else as empty).
pub fn tag_map(v: Option<&Value>) -> TagMap {
    v.and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
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
        Err(e) if crate::engine::retry::is_gone(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A kind's typed fields from the engine's `Fields` (resolved). A field the kind does not know
/// or a missing one is a mismatch between desired state and the kind: an internal error that
/// names it, instead of a difference that never converges.
pub fn typed<T: DeserializeOwned>(kind: &str, fields: &Fields) -> anyhow::Result<T> {
    serde_json::from_value(Value::Object(fields.clone()))
        .map_err(|e| anyhow::anyhow!("internal error: the desired fields of a {kind} do not match what the kind expects: {e}"))
}

/// The engine's `Fields` from a kind's typed fields (what observe reports).
pub fn untyped<T: Serialize>(fields: &T) -> Fields {
    match serde_json::to_value(fields) {
        Ok(Value::Object(m)) => m,
        _ => unreachable!("typed fields serialise to an object"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(pairs: &[(&str, &str)]) -> TagMap {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn tag_delta_sets_what_differs_and_removes_what_is_extra() {
        let have = map(&[("a", "1"), ("b", "2"), ("gone", "x")]);
        let want = map(&[("a", "1"), ("b", "3"), ("new", "y")]);
        let d = TagDelta::between(&have, &want);
        assert_eq!(d.set, map(&[("b", "3"), ("new", "y")]));
        assert_eq!(d.unset, vec!["gone".to_string()]);
        assert!(TagDelta::between(&want, &want).is_empty());
    }

    #[test]
    fn tag_delta_from_a_change() {
        let c = FieldChange { field: "tags".into(), before: None, after: json!({"a": "1"}) };
        assert_eq!(TagDelta::of(&[c]).set, map(&[("a", "1")]), "tags missing live: everything is set");
        let other = FieldChange { field: "retention".into(), before: Some(json!(1)), after: json!(2) };
        assert!(TagDelta::of(&[other]).is_empty());
    }

    #[test]
    fn orphaning_marks_then_drops_ownership() {
        let d = TagDelta::orphan("s");
        assert_eq!(d.set, map(&[(RETAINED_FROM_TAG, "s")]));
        assert_eq!(d.unset, vec![STACK_TAG.to_string(), ID_TAG.to_string()]);
    }

    #[test]
    fn sqs_error_codes() {
        assert_eq!(classify("AWS.SimpleQueueService.NonExistentQueue", ""), Some(ErrorClass::Gone));
        assert_eq!(classify("QueueDoesNotExist", ""), Some(ErrorClass::Gone));
        assert_eq!(classify("AWS.SimpleQueueService.QueueDeletedRecently", ""), Some(ErrorClass::Conflict));
        assert_eq!(classify("QueueAlreadyExists", ""), None);
    }
}
