//! Shared EC2 plumbing for the network kinds: ownership filters, atomic tagging on create,
//! tag convergence, and error context. Kind logic stays in the kind files.

pub use crate::engine::call_failed;
use crate::engine::ownership::{self, STACK_TAG};
use crate::engine::{Ctx, FieldChange, Fields};
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use serde_json::Value;
use std::collections::BTreeMap;

/// Server-side filter for everything this stack owns. Some emulators ignore filters, so
/// callers also check ownership client-side with [`owned`].
pub fn stack_filter(ctx: &Ctx) -> Filter {
    Filter::builder().name(format!("tag:{STACK_TAG}")).values(&ctx.settings.stack).build()
}

/// Logical id and comparable tags, if the stack owns a resource with these tags.
pub fn owned(ctx: &Ctx, tags: &[Tag]) -> Option<(String, Value)> {
    let pairs = || tags.iter().map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default()));
    let id = ownership::owned_id(&ctx.settings.stack, pairs())?;
    Some((id, tags_value(&ownership::comparable(pairs()))))
}

pub fn tags_value(tags: &BTreeMap<String, String>) -> Value {
    Value::Object(tags.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
}

fn tag_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

/// Tags to apply atomically with a create call (so a crash can never leave an untagged,
/// hence invisible, resource behind).
pub fn tag_spec(kind: ResourceType, fields: &Fields) -> TagSpecification {
    let tags: Vec<Tag> = tag_map(fields.get("tags")).into_iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
    TagSpecification::builder().resource_type(kind).set_tags(Some(tags)).build()
}

/// Converges tags if `tags` is among the changes: adds/overwrites what differs and removes
/// keys we no longer want. AWS-managed tags were never compared, so they are left alone.
pub async fn sync_tags(ctx: &Ctx, resource_id: &str, changes: &[FieldChange]) -> anyhow::Result<()> {
    let Some(c) = changes.iter().find(|c| c.field == "tags") else { return Ok(()) };
    let want = tag_map(Some(&c.after));
    let have = tag_map(c.before.as_ref());
    let set: Vec<Tag> = want.iter().filter(|(k, v)| have.get(*k) != Some(v)).map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
    let unset: Vec<Tag> = have.keys().filter(|k| !want.contains_key(*k)).map(|k| Tag::builder().key(k).build()).collect();
    if !set.is_empty() {
        ctx.ec2.create_tags().resources(resource_id).set_tags(Some(set)).send().await.map_err(call_failed("CreateTags"))?;
    }
    if !unset.is_empty() {
        ctx.ec2.delete_tags().resources(resource_id).set_tags(Some(unset)).send().await.map_err(call_failed("DeleteTags"))?;
    }
    Ok(())
}

pub fn str_field<'a>(f: &'a Fields, name: &str) -> anyhow::Result<&'a str> {
    f.get(name).and_then(Value::as_str).ok_or_else(|| anyhow::anyhow!("internal error: field `{name}` is missing or not a string"))
}

pub fn bool_field(f: &Fields, name: &str) -> bool {
    f.get(name).and_then(Value::as_bool).unwrap_or(false)
}

pub fn changed(changes: &[FieldChange], field: &str) -> bool {
    changes.iter().any(|c| c.field == field)
}
