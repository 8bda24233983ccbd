//! SQS: the stack's event queue and its dead-letter queue, and the service's plumbing: the
//! client, error classification, tags.

mod queue;

pub use queue::{Queue, QueueFields, Redrive};

use crate::engine::ownership::{self, TagDelta, TagMap};
use crate::engine::retry::has_code;
use crate::engine::{Ctx, DynKind, ErrorClass};
use std::collections::HashMap;

crate::engine::calls::service!(aws_sdk_sqs, classify);

/// The stack's queues: the webhook's FIFO queue and its dead-letter queue.
pub fn queue_names(stack: &str) -> [String; 2] {
    [format!("{stack}-events.fifo"), format!("{stack}-dlq.fifo")]
}

/// The SQS kinds.
pub fn kinds() -> Vec<Box<dyn DynKind>> {
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

/// Whether `e` is SQS refusing a name because a queue of that name was deleted < 60 s ago.
pub fn deleted_recently(e: &anyhow::Error) -> bool {
    has_code(e, "AWS.SimpleQueueService.QueueDeletedRecently") || has_code(e, "QueueDeletedRecently")
}

/// Logical id and comparable tags, from SQS's tag map.
pub fn owned(ctx: &Ctx, tags: Option<&HashMap<String, String>>) -> (Option<String>, TagMap) {
    ownership::owner_of_map(&ctx.settings.stack, tags)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqs_error_codes() {
        assert_eq!(classify("AWS.SimpleQueueService.NonExistentQueue", ""), Some(ErrorClass::Gone));
        assert_eq!(classify("QueueDoesNotExist", ""), Some(ErrorClass::Gone));
        assert_eq!(classify("AWS.SimpleQueueService.QueueDeletedRecently", ""), Some(ErrorClass::Conflict));
        assert_eq!(classify("QueueAlreadyExists", ""), None);
    }
}
