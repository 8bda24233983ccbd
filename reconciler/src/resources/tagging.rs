//! The Resource Groups Tagging API: every resource tagged as this stack's, with its tags, in
//! one GetResources per pass (a page per 100 resources), shared by the kinds whose own
//! listings return no tags (log groups, queues), which would otherwise read each resource's
//! tags with a call of its own.
//!
//! The batch is eventually consistent: a tag set a moment ago may not show in it yet, and one
//! removed a moment ago may still show. So it only ever confirms, and only what would not be
//! changed anyway: a wanted resource that it shows as this stack's, under the wanted logical
//! id, with exactly the wanted tags, and whose other fields are all as wanted, needs no tag
//! read of its own. Everything else (not in the batch, any difference, a resource no longer
//! wanted) is read from its own service, whose answer decides; destroy's observation never
//! uses the batch. A difference is thus never reported from the batch, and nothing is changed
//! on its word; what its lag can do is hide, for that lag, a tag changed by hand on a resource
//! that is otherwise as wanted.
//!
//! The batch is an optimisation: denied (remembered for the process) or failed, every
//! resource's tags are read on their own, and stderr says so.

use crate::engine::ownership::{self, TagMap};
use crate::engine::{Ctx, Desired, ErrorClass, Fields, Settings};
use serde_json::Value;
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

/// The call, as IAM policies and the refusal memory name it.
pub const CALL: &str = "tag:GetResources";

/// What the pass's GetResources showed: ARN → tags. Empty outside an observation (nothing
/// shares it there), in destroy's, and where the call is denied or failed.
#[derive(Default)]
pub struct Tagged(HashMap<String, Vec<(String, String)>>);

/// The pass's batch: read once per observation, whichever kind asks first (ask beside your
/// own listing, so that it costs no round trip).
pub async fn of_pass(ctx: &Ctx) -> anyhow::Result<Arc<Tagged>> {
    if !ctx.in_observation() || !ctx.settings.account_wide_reads || !ctx.batches_trusted() || ctx.was_refused(CALL) {
        return Ok(Arc::default());
    }
    ctx.shared_read("tag:GetResources of the stack", || read(ctx)).await
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
            Err(e) => {
                ctx.batch_failed(CALL, &e, "reading each log group's and queue's tags with a call of its own");
                return Ok(Tagged::default());
            }
        };
        for m in page.resource_tag_mapping_list() {
            let tags = m.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect();
            out.insert(m.resource_arn().unwrap_or_default().to_string(), tags);
        }
    }
    Ok(Tagged(out))
}

impl Tagged {
    /// Whether `live` is what `want` asks for. A reference to another resource's ARN holds
    /// when the batch shows that ARN as the stack's resource of the referenced logical id; any
    /// other reference cannot be checked here, so it does not hold (the resource is then read).
    fn as_wanted(&self, stack: &str, want: &Value, live: &Value) -> bool {
        match (want, live) {
            (Value::Object(w), _) if w.contains_key("$ref") => {
                let arn = live.as_str().filter(|_| w.get("$attr").and_then(Value::as_str) == Some("arn"));
                let shown = arn
                    .and_then(|a| self.0.get(a))
                    .and_then(|t| ownership::owned_id(stack, t.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
                shown.is_some() && shown.as_deref() == w.get("$ref").and_then(Value::as_str)
            }
            (Value::Object(w), Value::Object(l)) => {
                w.len() == l.len() && w.iter().all(|(k, v)| l.get(k).is_some_and(|lv| self.as_wanted(stack, v, lv)))
            }
            (Value::Array(w), Value::Array(l)) => w.len() == l.len() && w.iter().zip(l).all(|(a, b)| self.as_wanted(stack, a, b)),
            _ => want == live,
        }
    }

    /// The ARN of the one `service` resource in the batch whose ARN ends with `:<tail>`: for a
    /// kind that knows only the end of its resource's ARN before reading it (a queue's account
    /// and name, from its URL), whatever the partition.
    pub fn arn_ending(&self, service: &str, tail: &str) -> Option<&str> {
        let mut found = self.0.keys().filter(|a| a.split(':').nth(2) == Some(service) && a.ends_with(&format!(":{tail}")));
        let arn = found.next()?;
        found.next().is_none().then_some(arn.as_str())
    }

    /// The logical id and comparable tags of `arn` (what the kind's own tag read and `owned`
    /// would give) when the batch shows it exactly as `want` has it and `live` (its observed
    /// fields, tags aside) is as wanted too; `None`: read its tags from its service. Tags the
    /// settings ignore (`ignore_tags`) are left out of the comparison, as observe leaves them
    /// out of the diff.
    pub fn confirmed(&self, settings: &Settings, arn: &str, want: Option<&Desired>, live: &Fields) -> Option<(String, TagMap)> {
        let (want, tags) = (want?, self.0.get(arn)?);
        let stack = &settings.stack;
        let (id, tags) = ownership::owner(stack, tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let wanted_tags = want.fields.get("tags")?;
        let mut compared = Fields::from_iter([("tags".to_string(), serde_json::to_value(&tags).ok()?)]);
        ownership::drop_ignored_tags(&mut compared, Some(wanted_tags), &settings.ignore_tags);
        let rest_as_wanted = want.fields.len() == live.len()
            && want.fields.iter().all(|(k, v)| k == "tags" || live.get(k).is_some_and(|l| self.as_wanted(stack, v, l)));
        (id.as_deref() == Some(want.id.as_str()) && compared.get("tags") == Some(wanted_tags) && rest_as_wanted)
            .then(|| (want.id.clone(), tags))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DLQ: &str = "arn:aws:sqs:r:1:dlq";

    fn desired(id: &str, tags: &[(&str, &str)]) -> Desired {
        let tags: TagMap = tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let fields = json!({"name": "n", "retention": 7, "target": {"$ref": "queue-dlq", "$attr": "arn"}, "tags": tags});
        Desired { kind: "logs:log-group", id: id.into(), fields: fields.as_object().unwrap().clone(), after: vec![] }
    }

    /// Observed fields: as wanted, the reference resolved to `target`, tags not yet known.
    fn live(retention: u64, target: &str) -> Fields {
        json!({"name": "n", "retention": retention, "target": target, "tags": {}}).as_object().unwrap().clone()
    }

    /// The batch: `arn` with `tags`, and the stack's dead-letter queue.
    fn batch(arn: &str, tags: &[(&str, &str)]) -> Tagged {
        let pairs = |t: &[(&str, &str)]| t.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Tagged(HashMap::from([
            (arn.to_string(), pairs(tags)),
            (DLQ.to_string(), pairs(&[("reconciler:stack", "s"), ("reconciler:id", "queue-dlq")])),
        ]))
    }

    fn settings(stack: &str) -> Settings {
        Settings::new(stack, Default::default())
    }

    #[test]
    fn the_batch_only_confirms_what_is_wanted() {
        let ours = [("reconciler:stack", "s"), ("reconciler:id", "logs"), ("team", "a")];
        let want = desired("logs", &ours);
        let b = batch("arn:1", &ours);
        let confirmed =
            |b: &Tagged, stack: &str, arn: &str, want: Option<&Desired>| b.confirmed(&settings(stack), arn, want, &live(7, DLQ));
        let (id, tags) = confirmed(&b, "s", "arn:1", Some(&want)).expect("shown exactly as wanted");
        assert_eq!((id.as_str(), tags.len()), ("logs", 3));
        assert_eq!(confirmed(&b, "s", "arn:2", Some(&want)), None, "not in the batch (yet): read it");
        assert_eq!(confirmed(&b, "s", "arn:1", None), None, "not wanted (to be pruned): read it");
        assert_eq!(confirmed(&b, "s", "arn:1", Some(&desired("other", &ours))), None, "another logical id");
        assert_eq!(confirmed(&b, "t", "arn:1", Some(&want)), None, "another stack's");
        let drifted = batch("arn:1", &[("reconciler:stack", "s"), ("reconciler:id", "logs"), ("team", "b")]);
        assert_eq!(
            confirmed(&drifted, "s", "arn:1", Some(&want)),
            None,
            "a difference is read from the service, never reported from the batch"
        );
        let extra = batch("arn:1", &[("reconciler:stack", "s"), ("reconciler:id", "logs"), ("team", "a"), ("x", "y")]);
        assert_eq!(confirmed(&extra, "s", "arn:1", Some(&want)), None);
        let aws = batch("arn:1", &[("reconciler:stack", "s"), ("reconciler:id", "logs"), ("team", "a"), ("aws:cloudformation:x", "y")]);
        assert!(confirmed(&aws, "s", "arn:1", Some(&want)).is_some(), "aws: tags are not compared");
        assert_eq!(confirmed(&Tagged::default(), "s", "arn:1", Some(&want)), None, "outside a pass, or denied");
        let s = settings("s");
        assert_eq!(
            b.confirmed(&s, "arn:1", Some(&want), &live(30, DLQ)),
            None,
            "another field differs: the change to come needs the owner's own word"
        );
        let mut missing = live(7, DLQ);
        missing.remove("retention");
        assert_eq!(b.confirmed(&s, "arn:1", Some(&want), &missing), None);
    }

    #[test]
    fn a_reference_holds_only_for_the_stack_resource_it_names() {
        let ours = [("reconciler:stack", "s"), ("reconciler:id", "logs")];
        let (want, b, s) = (desired("logs", &ours), batch("arn:1", &ours), settings("s"));
        assert!(b.confirmed(&s, "arn:1", Some(&want), &live(7, DLQ)).is_some());
        let elsewhere = live(7, "arn:aws:sqs:r:1:someone-elses-dlq");
        assert_eq!(
            b.confirmed(&s, "arn:1", Some(&want), &elsewhere),
            None,
            "pointed by hand at a queue the batch does not show as queue-dlq"
        );
        let mut null = live(7, DLQ);
        null.insert("target".into(), Value::Null);
        assert_eq!(b.confirmed(&s, "arn:1", Some(&want), &null), None);
    }

    #[test]
    fn ignored_tags_do_not_stand_in_the_way() {
        let ours = [("reconciler:stack", "s"), ("reconciler:id", "logs")];
        let want = desired("logs", &ours);
        let b = batch("arn:1", &[("reconciler:stack", "s"), ("reconciler:id", "logs"), ("backup:plan", "daily")]);
        assert_eq!(b.confirmed(&settings("s"), "arn:1", Some(&want), &live(7, DLQ)), None);
        let s = Settings { ignore_tags: vec!["backup:*".into()], ..settings("s") };
        let (_, tags) = b.confirmed(&s, "arn:1", Some(&want), &live(7, DLQ)).expect("the ignored tag is not compared");
        assert!(tags.contains_key("backup:plan"), "and is reported, as the service's own read would (observe drops it)");
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
