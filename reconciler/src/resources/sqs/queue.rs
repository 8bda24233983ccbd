//! `sqs:queue` — found by name (`<stack>-…`), owned by its tags. The physical id is the queue
//! URL (what every SQS call takes); dependents reference its `arn` (a redrive target, IAM
//! policies) or `url` (the service's environment).
//!
//! CreateQueue is idempotent by name: for a name that exists with the same attributes it
//! returns that queue's URL, whoever owns it. So create looks the name up first and never
//! takes over a queue it did not make.

use super::{apply_tags, call_failed, client, deleted_recently, owned};
use crate::engine::fields::{typed, untyped};
use crate::engine::ownership::not_owned;
use crate::engine::ownership::{TagDelta, TagMap};
use crate::engine::retry::{gone_as_none, observe_again};
use crate::engine::Ref;
use crate::engine::{wait, Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed, Replacement, Scoped};
use crate::resources::tagging;
use aws_sdk_sqs::types::QueueAttributeName as A;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};

pub struct Queue;

/// The fields of a queue, exactly as desired state builds them and observe reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueFields {
    pub name: String,
    pub fifo: bool,
    pub content_based_dedup: bool,
    /// Seconds.
    pub visibility_timeout: u64,
    /// Message retention, seconds.
    pub retention: u64,
    /// SQS-managed server-side encryption (`SqsManagedSseEnabled`).
    pub sse: bool,
    /// `null` when the queue has no dead-letter queue.
    pub redrive: Option<Redrive>,
    pub tags: TagMap,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redrive {
    pub dead_letter_arn: Ref,
    pub max_receive_count: u64,
}

/// The queue's name: the last segment of its URL.
pub fn queue_name(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

/// A `RedrivePolicy` attribute as SQS returns it (absent or `""` when there is none).
/// `maxReceiveCount` comes back as a number, or as a string where it was sent as one.
pub fn parse_redrive(text: Option<&str>) -> anyhow::Result<Option<Redrive>> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else { return Ok(None) };
    let bad = || anyhow::anyhow!("SQS returned a RedrivePolicy this tool cannot read: {text}");
    let v: Value = serde_json::from_str(text).map_err(|_| bad())?;
    let arn = v.get("deadLetterTargetArn").and_then(Value::as_str).ok_or_else(bad)?;
    let count = match v.get("maxReceiveCount") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(bad)?;
    Ok(Some(Redrive { dead_letter_arn: arn.to_string().into(), max_receive_count: count }))
}

/// The `RedrivePolicy` attribute to send; `""` removes the dead-letter queue.
pub fn redrive_policy(r: Option<&Redrive>) -> String {
    r.map(|r| json!({"deadLetterTargetArn": r.dead_letter_arn, "maxReceiveCount": r.max_receive_count}).to_string()).unwrap_or_default()
}

/// Observed fields from GetQueueAttributes(All). Standard queues report neither `FifoQueue`
/// nor `ContentBasedDeduplication`: both are false there.
pub fn from_attributes(name: &str, attrs: &HashMap<A, String>, tags: TagMap) -> anyhow::Result<QueueFields> {
    let flag = |a: A| attrs.get(&a).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let number = |a: A| -> anyhow::Result<u64> {
        let v = attrs.get(&a).ok_or_else(|| anyhow::anyhow!("SQS did not report {} for queue `{name}`", a.as_str()))?;
        v.trim().parse().map_err(|_| anyhow::anyhow!("SQS reported {} = `{v}` for queue `{name}`, which is not a number", a.as_str()))
    };
    Ok(QueueFields {
        name: name.to_string(),
        fifo: flag(A::FifoQueue),
        content_based_dedup: flag(A::ContentBasedDeduplication),
        visibility_timeout: number(A::VisibilityTimeout)?,
        retention: number(A::MessageRetentionPeriod)?,
        sse: flag(A::SqsManagedSseEnabled),
        redrive: parse_redrive(attrs.get(&A::RedrivePolicy).map(String::as_str))?,
        tags,
    })
}

/// The attributes CreateQueue sends. Every mutable one is explicit (SQS would otherwise
/// pick its defaults, e.g. SSE on); the FIFO-only ones only for FIFO queues (SQS rejects
/// them on standard queues).
pub fn create_attributes(f: &QueueFields) -> HashMap<A, String> {
    let mut attrs = HashMap::from([
        (A::VisibilityTimeout, f.visibility_timeout.to_string()),
        (A::MessageRetentionPeriod, f.retention.to_string()),
        (A::SqsManagedSseEnabled, f.sse.to_string()),
    ]);
    if f.fifo {
        attrs.insert(A::FifoQueue, "true".into());
        attrs.insert(A::ContentBasedDeduplication, f.content_based_dedup.to_string());
    }
    if let Some(r) = &f.redrive {
        attrs.insert(A::RedrivePolicy, redrive_policy(Some(r)));
    }
    attrs
}

/// The attributes SetQueueAttributes sends for the fields among `changes`.
pub fn update_attributes(f: &QueueFields, changes: &[FieldChange]) -> HashMap<A, String> {
    let mut attrs = HashMap::new();
    for c in changes {
        let (a, v) = match c.field.as_str() {
            "content_based_dedup" => (A::ContentBasedDeduplication, f.content_based_dedup.to_string()),
            "visibility_timeout" => (A::VisibilityTimeout, f.visibility_timeout.to_string()),
            "retention" => (A::MessageRetentionPeriod, f.retention.to_string()),
            "sse" => (A::SqsManagedSseEnabled, f.sse.to_string()),
            "redrive" => (A::RedrivePolicy, redrive_policy(f.redrive.as_ref())),
            _ => continue,
        };
        attrs.insert(a, v);
    }
    attrs
}

/// What one queue URL turned out to be.
enum Found {
    Owned(Box<Observed>),
    /// Exists, but this stack does not own it: its comparable tags.
    Foreign(TagMap),
    /// Deleted since it was listed.
    Gone,
}

/// Reads one queue: GetQueueAttributes(All) and ListQueueTags at once (one round trip; the
/// attributes of a queue the tags then show is not ours go unused). In an observation, for a
/// wanted queue (`want`) the pass's tag batch has: the attributes first, and ListQueueTags only
/// if the batch does not confirm the queue (see `tagging`: exactly as wanted).
async fn read(ctx: &Ctx, url: &str, want: Option<&Desired>) -> anyhow::Result<Found> {
    let sqs = client(ctx);
    let name = queue_name(url);
    let tags = || async {
        let out = gone_as_none(sqs.list_queue_tags().queue_url(url).send().await.map_err(call_failed("ListQueueTags")))?;
        anyhow::Ok(out.map(|t| owned(ctx, t.tags())))
    };
    let attributes = async {
        let sent = sqs.get_queue_attributes().queue_url(url).attribute_names(A::All).send().await;
        gone_as_none(sent.map_err(call_failed("GetQueueAttributes")))
    };
    // The attributes go at once; the tags beside them unless the batch has the queue.
    let tagged = async {
        let batch = match want {
            Some(_) => tagging::of_pass(ctx).await?,
            None => Default::default(),
        };
        let account = url.trim_end_matches('/').rsplit('/').nth(1);
        let arn = account.and_then(|a| batch.arn_ending("sqs", &format!("{a}:{name}"))).map(String::from);
        let early = match arn {
            Some(_) => None,
            None => Some(tags().await?),
        };
        anyhow::Ok((batch, arn, early))
    };
    let (attributes, tagged) = futures::future::join(attributes, tagged).await;
    let (batch, arn, early) = tagged?;
    // Gone or not ours by the tags: the attributes are not looked at (whatever their answer).
    match &early {
        Some(None) => return Ok(Found::Gone),
        Some(Some((None, tags))) => return Ok(Found::Foreign(tags.clone())),
        _ => {}
    }
    let Some(out) = attributes? else { return Ok(Found::Gone) };
    let attrs = out.attributes().cloned().unwrap_or_default();
    // The fields, tags aside, which the batch compares; the tags go in once known.
    let mut fields = from_attributes(name, &attrs, TagMap::new())?;
    let owner = match early.flatten() {
        Some(owner) => owner,
        None => {
            let live = untyped(&fields);
            match arn.and_then(|arn| batch.confirmed(&ctx.settings, &arn, want, &live)) {
                Some((id, tags)) => (Some(id), tags),
                None => match tags().await? {
                    Some(owner) => owner,
                    None => return Ok(Found::Gone),
                },
            }
        }
    };
    let (id, tags) = owner;
    let Some(id) = id else { return Ok(Found::Foreign(tags)) };
    fields.tags = tags;
    let arn = attrs.get(&A::QueueArn).cloned().unwrap_or_default();
    let identity = identity(url, &arn);
    Ok(Found::Owned(Box::new(Observed { attrs: identity.attrs, ..Observed::new("sqs:queue", id, url.to_string(), untyped(&fields)) })))
}

fn identity(url: &str, arn: &str) -> Identity {
    Identity::id(url).with("arn", arn).with("url", url).with("name", queue_name(url))
}

/// The URL of the queue named `name`, if it exists.
async fn url_of(ctx: &Ctx, name: &str) -> anyhow::Result<Option<String>> {
    let out = gone_as_none(client(ctx).get_queue_url().queue_name(name).send().await.map_err(call_failed("GetQueueUrl")))?;
    Ok(out.and_then(|o| o.queue_url().map(String::from)))
}

impl Kind for Queue {
    fn name(&self) -> &'static str {
        "sqs:queue"
    }

    type Typed = QueueFields;

    fn replace_on(&self) -> &'static [&'static str] {
        &["name", "fifo"]
    }

    /// A new name is a new queue that can exist beside the old one: dependents move over
    /// before the old queue goes.
    fn replacement(&self) -> Replacement {
        Replacement::CreateBeforeDestroy
    }

    /// ListQueues(prefix `<stack>-`) beside the pass's tag batch, then per listed queue
    /// GetQueueAttributes and (unless the batch confirms it) ListQueueTags; per wanted name
    /// the listing did not show (a listing lags a create by up to a minute on AWS),
    /// GetQueueUrl and the same reads.
    async fn observe(&self, ctx: &Ctx, desired: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let stack = &ctx.settings.stack;
        let typed: Vec<QueueFields> = crate::engine::fields::wanted(self.name(), desired)?;
        let by_name: BTreeMap<&str, &Desired> = typed.iter().map(|w| w.name.as_str()).zip(desired.iter().copied()).collect();
        let wanted: BTreeSet<&str> = by_name.keys().copied().collect();
        let listing = async {
            let mut urls = Vec::new();
            let mut pages = client(ctx).list_queues().queue_name_prefix(format!("{stack}-")).max_results(1000).into_paginator().send();
            while let Some(page) = pages.next().await {
                urls.extend(page.map_err(call_failed("ListQueues"))?.queue_urls().iter().cloned());
            }
            Ok::<_, anyhow::Error>(urls)
        };
        // The pass's tag batch is read beside the listing: it costs no round trip.
        let (mut urls, _) = futures::try_join!(listing, tagging::of_pass(ctx))?;
        let listed: BTreeSet<&str> = urls.iter().map(|u| queue_name(u)).collect();
        let missing: Vec<&str> = wanted.iter().copied().filter(|n| !listed.contains(n)).collect();
        for (name, url) in missing.iter().zip(futures::future::try_join_all(missing.iter().map(|n| url_of(ctx, n))).await?) {
            if let Some(url) = url {
                if queue_name(&url) == *name {
                    urls.push(url);
                }
            }
        }
        let mut found = Vec::new();
        let reads = futures::future::try_join_all(urls.iter().map(|u| read(ctx, u, by_name.get(queue_name(u)).copied())));
        for (url, r) in urls.iter().zip(reads.await?) {
            match r {
                Found::Owned(o) => found.push(*o),
                Found::Foreign(tags) if wanted.contains(queue_name(url)) => {
                    return Err(not_owned("SQS queue", queue_name(url), stack, &tags))
                }
                Found::Foreign(_) | Found::Gone => {}
            }
        }
        Ok(found)
    }

    async fn create(&self, ctx: &Ctx, id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: QueueFields = typed(self.name(), fields)?;
        if let Some(url) = url_of(ctx, &f.name).await? {
            match read(ctx, &url, None).await? {
                Found::Owned(o) => {
                    return Err(observe_again(
                        "CreateQueue",
                        format!("queue `{}` already exists as this stack's `{}` (an earlier attempt made it)", f.name, o.id),
                    ))
                }
                Found::Foreign(tags) => return Err(not_owned("SQS queue", &f.name, &ctx.settings.stack, &tags)),
                Found::Gone => {}
            }
        }
        let sqs = client(ctx);
        let attrs = create_attributes(&f);
        let tags: HashMap<String, String> = f.tags.clone().into_iter().collect();
        // On AWS a name is blocked for 60 s after its queue was deleted (a destroy followed
        // by an apply): wait that out instead of failing.
        let created =
            wait::until(ctx, &format!("SQS to release the name `{}` (its queue was deleted less than 60 s ago)", f.name), || async {
                let sent =
                    sqs.create_queue().queue_name(&f.name).set_attributes(Some(attrs.clone())).set_tags(Some(tags.clone())).send().await;
                match sent.map_err(call_failed("CreateQueue")) {
                    Ok(out) => Ok(Some(Ok(out))),
                    Err(e) if deleted_recently(&e) => Ok(None),
                    // Anything else (also a retryable failure) goes to the engine, which
                    // observes before it tries again.
                    Err(e) => Ok(Some(Err(e))),
                }
            })
            .await??;
        let url = created.queue_url().ok_or_else(|| anyhow::anyhow!("CreateQueue returned no queue URL for `{}`", f.name))?;
        let out = sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(A::QueueArn)
            .send()
            .await
            .map_err(call_failed("GetQueueAttributes"))
            .map_err(|e| e.context(format!("queue `{}` ({id}) was created; reading its ARN failed", f.name)))?;
        let arn = out.attributes().and_then(|a| a.get(&A::QueueArn)).cloned().unwrap_or_default();
        Ok(identity(url, &arn))
    }

    async fn update(&self, ctx: &Ctx, live: &Observed, fields: &Fields, changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        let f: QueueFields = typed(self.name(), fields)?;
        let attrs = update_attributes(&f, changes);
        if !attrs.is_empty() {
            client(ctx)
                .set_queue_attributes()
                .queue_url(&live.physical_id)
                .set_attributes(Some(attrs))
                .send()
                .await
                .map_err(call_failed("SetQueueAttributes"))?;
        }
        apply_tags(ctx, &live.physical_id, &TagDelta::of(changes)).await?;
        Ok(None)
    }

    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        // Deletion completes in the background (up to 60 s on AWS); nothing waits on it.
        client(ctx).delete_queue().queue_url(&live.physical_id).send().await.map_err(call_failed("DeleteQueue"))?;
        Ok(())
    }

    async fn orphan(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        apply_tags(ctx, &live.physical_id, &TagDelta::orphan(&ctx.settings.stack)).await
    }

    fn iam(&self, stack: &str) -> IamActions {
        IamActions {
            read: vec!["sqs:ListQueues"],
            read_account_wide: vec![crate::resources::tagging::CALL],
            // Every queue the listing by the `<stack>-` prefix shows, other stacks' included
            // (their tags are read to tell them apart).
            read_by_arn: vec!["sqs:GetQueueUrl", "sqs:ListQueueTags", "sqs:GetQueueAttributes"],
            arns: vec![format!("arn:aws:sqs:*:*:{stack}-*")],
            // Queue names are the stack's, so the mutations are scoped by ARN. CreateQueue with
            // tags also needs TagQueue.
            scoped: vec![Scoped {
                actions: vec!["sqs:CreateQueue", "sqs:SetQueueAttributes", "sqs:TagQueue", "sqs:UntagQueue", "sqs:DeleteQueue"],
                // Exact names: a prefix would also match another stack whose name starts
                // with this one's (`<stack>-dev`).
                resources: super::queue_names(stack).iter().map(|n| format!("arn:aws:sqs:*:*:{n}")).collect(),
                read_only: false,
            }],
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(A, &str)]) -> HashMap<A, String> {
        pairs.iter().map(|(k, v)| (k.clone(), v.to_string())).collect()
    }

    fn desired() -> QueueFields {
        QueueFields {
            name: "s-events.fifo".into(),
            fifo: true,
            content_based_dedup: true,
            visibility_timeout: 60,
            retention: 1_209_600,
            sse: true,
            redrive: Some(Redrive { dead_letter_arn: "arn:aws:sqs:us-east-1:1:s-dlq.fifo".into(), max_receive_count: 5 }),
            tags: TagMap::from([("reconciler:stack".into(), "s".into())]),
        }
    }

    #[test]
    fn names_from_urls() {
        assert_eq!(queue_name("https://sqs.us-east-1.amazonaws.com/123456789012/s-events.fifo"), "s-events.fifo");
        assert_eq!(queue_name("http://127.0.0.1:5000/123456789012/s-dlq.fifo"), "s-dlq.fifo");
    }

    #[test]
    fn redrive_policies_parse_either_count_spelling() {
        let want = Some(Redrive { dead_letter_arn: "arn:x".into(), max_receive_count: 5 });
        assert_eq!(parse_redrive(Some(r#"{"deadLetterTargetArn":"arn:x","maxReceiveCount":5}"#)).unwrap(), want);
        assert_eq!(parse_redrive(Some(r#"{"deadLetterTargetArn": "arn:x", "maxReceiveCount": "5"}"#)).unwrap(), want);
        assert_eq!(parse_redrive(Some("")).unwrap(), None);
        assert_eq!(parse_redrive(None).unwrap(), None);
        assert!(parse_redrive(Some(r#"{"maxReceiveCount":5}"#)).is_err());
        // What we send parses back to the same value; removal is the empty string.
        assert_eq!(parse_redrive(Some(&redrive_policy(want.as_ref()))).unwrap(), want);
        assert_eq!(redrive_policy(None), "");
    }

    #[test]
    fn observed_fields_round_trip_what_create_sends() {
        let f = desired();
        let mut echoed = create_attributes(&f);
        // What GetQueueAttributes(All) adds beside them.
        echoed.insert(A::QueueArn, "arn:aws:sqs:us-east-1:1:s-events.fifo".into());
        echoed.insert(A::DelaySeconds, "0".into());
        echoed.insert(A::FifoThroughputLimit, "perQueue".into());
        assert_eq!(from_attributes("s-events.fifo", &echoed, f.tags.clone()).unwrap(), f);
        // And the untyped form is exactly the contract's shape.
        let u = untyped(&f);
        assert_eq!(u.keys().map(String::as_str).collect::<Vec<_>>().len(), 8);
        assert_eq!(u["redrive"], json!({"dead_letter_arn": "arn:aws:sqs:us-east-1:1:s-dlq.fifo", "max_receive_count": 5}));
    }

    #[test]
    fn standard_queues_report_no_fifo_attributes() {
        let a = attrs(&[
            (A::VisibilityTimeout, "30"),
            (A::MessageRetentionPeriod, "345600"),
            (A::SqsManagedSseEnabled, "true"),
            (A::QueueArn, "arn:aws:sqs:us-east-1:1:s-std"),
        ]);
        let f = from_attributes("s-std", &a, TagMap::new()).unwrap();
        assert!(!f.fifo && !f.content_based_dedup && f.sse);
        assert_eq!(f.redrive, None);
        assert_eq!(untyped(&f)["redrive"], Value::Null, "no redrive is reported as null, so a removed one is drift");
        let sent = create_attributes(&QueueFields { fifo: false, ..f });
        assert!(!sent.contains_key(&A::FifoQueue) && !sent.contains_key(&A::ContentBasedDeduplication));
        assert_eq!(sent[&A::SqsManagedSseEnabled], "true");
        assert!(from_attributes("s-std", &attrs(&[(A::VisibilityTimeout, "x")]), TagMap::new()).is_err());
    }

    #[test]
    fn updates_send_only_what_changed() {
        let f = QueueFields { redrive: None, ..desired() };
        let change = |field: &str| FieldChange { field: field.into(), before: None, after: Value::Null };
        let sent = update_attributes(&f, &[change("redrive"), change("visibility_timeout"), change("tags")]);
        assert_eq!(sent, attrs(&[(A::RedrivePolicy, ""), (A::VisibilityTimeout, "60")]));
    }

    #[test]
    fn desired_fields_must_match_the_kind() {
        let mut u = untyped(&desired());
        assert_eq!(typed::<QueueFields>("sqs:queue", &u).unwrap(), desired());
        u.insert("delay".into(), json!(0));
        let e = typed::<QueueFields>("sqs:queue", &u).unwrap_err().to_string();
        assert!(e.contains("delay"), "{e}");
    }

    #[test]
    fn iam_is_scoped_to_the_stacks_queue_names() {
        let a = Queue.iam("s");
        assert!(a.create.is_empty() && a.change.is_empty());
        assert_eq!(a.scoped[0].resources, vec!["arn:aws:sqs:*:*:s-events.fifo".to_string(), "arn:aws:sqs:*:*:s-dlq.fifo".to_string()]);
        assert!(a.scoped[0].actions.contains(&"sqs:TagQueue"), "tag-on-create needs TagQueue");
    }
}
