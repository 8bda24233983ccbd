//! The Resource Groups Tagging API: every resource tagged as this stack's, with its tags, in
//! one GetResources per pass (a page per 100 resources), shared by the kinds whose own
//! listings return no tags (log groups, queues), which would otherwise read each resource's
//! tags with a call of its own.
//!
//! The batch is eventually consistent (a tag set a moment ago may not show in it yet), so it
//! only ever confirms: a wanted resource it shows as this stack's, under the wanted logical id
//! and with exactly the wanted tags, needs no tag read of its own. Everything else — not in the
//! batch, tags that differ, a resource no longer wanted (about to be pruned) — is read from its
//! own service, whose answer decides. A difference is therefore never reported from the batch.

use crate::engine::ownership::{self, TagMap};
use crate::engine::{Ctx, Desired, ErrorClass};
use std::collections::HashMap;
use std::sync::Arc;

crate::engine::calls::service!(aws_sdk_resourcegroupstagging, classify);

fn classify(code: &str, _message: &str) -> Option<ErrorClass> {
    match code {
        "InternalServiceException" => Some(ErrorClass::Retryable),
        "ThrottledException" => Some(ErrorClass::Throttled),
        _ => None,
    }
}

/// What the pass's GetResources showed: ARN → tags. Empty outside an observation (nothing
/// shares it there) and where the call is denied.
#[derive(Default)]
pub struct Tagged(HashMap<String, Vec<(String, String)>>);

/// The pass's batch: read once per observation, whichever kind asks first (ask beside your
/// own listing, so that it costs no round trip).
pub async fn of_pass(ctx: &Ctx) -> anyhow::Result<Arc<Tagged>> {
    let read = ctx.shared_read_in_pass("tag:GetResources of the stack", || read(ctx)).await?;
    Ok(read.unwrap_or_default())
}

/// The services whose kinds ask for the batch (`ResourceTypeFilters`): only their resources
/// are returned, so the batch is one page (100 resources) however large the rest of the stack.
const SERVICES: &[&str] = &["logs", "sqs"];

async fn read(ctx: &Ctx) -> anyhow::Result<Tagged> {
    use aws_sdk_resourcegroupstagging::types::TagFilter;
    let filter = TagFilter::builder().key(ownership::STACK_TAG).values(&ctx.settings.stack).build();
    let mut out = HashMap::new();
    let types = SERVICES.iter().map(|s| s.to_string()).collect();
    let mut pages = client(ctx)
        .get_resources()
        .tag_filters(filter)
        .set_resource_type_filters(Some(types))
        .resources_per_page(100)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = match page.map_err(call_failed("GetResources")) {
            Ok(page) => page,
            Err(e) if crate::engine::advice::is_denied(&e) => {
                crate::log::progress(
                    "tag:GetResources is denied to these credentials: reading each log group's and queue's tags with a call of its own",
                );
                return Ok(Tagged::default());
            }
            Err(e) => return Err(e),
        };
        for m in page.resource_tag_mapping_list() {
            let tags = m.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect();
            out.insert(m.resource_arn().unwrap_or_default().to_string(), tags);
        }
    }
    Ok(Tagged(out))
}

impl Tagged {
    /// The ARN of the one `service` resource in the batch whose ARN ends with `:<tail>`: for a
    /// kind that knows only the end of its resource's ARN before reading it (a queue's account
    /// and name, from its URL), whatever the partition.
    pub fn arn_ending(&self, service: &str, tail: &str) -> Option<&str> {
        let mut found = self.0.keys().filter(|a| a.split(':').nth(2) == Some(service) && a.ends_with(&format!(":{tail}")));
        let arn = found.next()?;
        found.next().is_none().then_some(arn.as_str())
    }

    /// The logical id and comparable tags of `arn` (what the kind's own tag read and `owned`
    /// would give) when the batch shows it exactly as `want` has it; `None`: read its tags.
    pub fn confirmed(&self, stack: &str, arn: &str, want: Option<&Desired>) -> Option<(String, TagMap)> {
        let (want, tags) = (want?, self.0.get(arn)?);
        let pairs = || tags.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let id = ownership::owned_id(stack, pairs())?;
        let tags = ownership::comparable(pairs());
        let wanted_tags: TagMap = serde_json::from_value(want.fields.get("tags")?.clone()).ok()?;
        (id == want.id && tags == wanted_tags).then_some((id, tags))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn desired(id: &str, tags: &[(&str, &str)]) -> Desired {
        let tags: TagMap = tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let fields = json!({"name": "n", "tags": tags}).as_object().unwrap().clone();
        Desired { kind: "logs:log-group", id: id.into(), fields, after: vec![] }
    }

    fn batch(arn: &str, tags: &[(&str, &str)]) -> Tagged {
        Tagged(HashMap::from([(arn.to_string(), tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())]))
    }

    #[test]
    fn the_batch_only_confirms_what_is_wanted() {
        let ours = [("reconciler:stack", "s"), ("reconciler:id", "logs"), ("team", "a")];
        let want = desired("logs", &ours);
        let b = batch("arn:1", &ours);
        let (id, tags) = b.confirmed("s", "arn:1", Some(&want)).expect("shown exactly as wanted");
        assert_eq!((id.as_str(), tags.len()), ("logs", 3));
        assert_eq!(b.confirmed("s", "arn:2", Some(&want)), None, "not in the batch (yet): read it");
        assert_eq!(b.confirmed("s", "arn:1", None), None, "not wanted (to be pruned): read it");
        assert_eq!(b.confirmed("s", "arn:1", Some(&desired("other", &ours))), None, "another logical id");
        assert_eq!(b.confirmed("t", "arn:1", Some(&want)), None, "another stack's");
        let drifted = batch("arn:1", &[("reconciler:stack", "s"), ("reconciler:id", "logs"), ("team", "b")]);
        assert_eq!(
            drifted.confirmed("s", "arn:1", Some(&want)),
            None,
            "a difference is read from the service, never reported from the batch"
        );
        let extra = batch("arn:1", &[("reconciler:stack", "s"), ("reconciler:id", "logs"), ("team", "a"), ("x", "y")]);
        assert_eq!(extra.confirmed("s", "arn:1", Some(&want)), None);
        let aws = batch("arn:1", &[("reconciler:stack", "s"), ("reconciler:id", "logs"), ("team", "a"), ("aws:cloudformation:x", "y")]);
        assert!(aws.confirmed("s", "arn:1", Some(&want)).is_some(), "aws: tags are not compared");
        assert_eq!(Tagged::default().confirmed("s", "arn:1", Some(&want)), None, "outside a pass, or denied");
    }

    #[test]
    fn an_arn_by_its_end() {
        let b = Tagged(HashMap::from([
            ("arn:aws-cn:sqs:cn-north-1:1:s-events.fifo".to_string(), vec![]),
            ("arn:aws-cn:sqs:cn-north-1:1:xs-events.fifo".to_string(), vec![]),
            ("arn:aws-cn:logs:cn-north-1:1:log-group:1:s-dlq.fifo".to_string(), vec![]),
        ]));
        assert_eq!(b.arn_ending("sqs", "1:s-events.fifo"), Some("arn:aws-cn:sqs:cn-north-1:1:s-events.fifo"));
        assert_eq!(b.arn_ending("sqs", "1:s-dlq.fifo"), None, "another service's");
        assert_eq!(b.arn_ending("sqs", "2:s-events.fifo"), None, "another account's");
    }
}
