//! `logs:log-group` — found by name, owned by its tags. The physical id is the name (what
//! the log APIs and the awslogs driver take); dependents reference `arn` (tagging, API
//! Gateway access logs) or `arn_wildcard` (IAM statements for its streams).
//!
//! DescribeLogGroups returns no tags: the pass's tag batch (`tagging`) confirms the wanted
//! ones that are as wanted, and every other candidate costs one ListTagsForResource;
//! candidates are the wanted names and whatever lies under the stack's prefixes (so that a
//! log group the spec no longer wants is still found, pruned or retained).

use super::{apply_tags, arns, call_failed, client, owned, stack_prefixes};
use crate::engine::fields::{self, typed, untyped};
use crate::engine::ownership::not_owned;
use crate::engine::ownership::{TagDelta, TagMap};
use crate::engine::retry::{gone_as_none, has_code, observe_again};
use crate::engine::{Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed, Replacement, Scoped};
use crate::resources::tagging;
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub struct LogGroup;

/// The fields of a log group, exactly as desired state builds them and observe reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogGroupFields {
    pub name: String,
    /// `null` live when events never expire (no retention policy).
    pub retention_days: Option<u64>,
    pub tags: TagMap,
}

/// One log group as DescribeLogGroups lists it.
#[derive(Debug, Clone, PartialEq)]
struct Listed {
    name: String,
    arn: String,
    retention_days: Option<u64>,
}

/// The DescribeLogGroups prefixes to search: the stack's own, plus any wanted name that lies
/// outside them (one call each; a wanted name under a stack prefix costs nothing extra).
pub fn search_prefixes(stack: &str, wanted: &BTreeSet<&str>) -> Vec<String> {
    let mut prefixes = stack_prefixes(stack);
    for name in wanted {
        if !prefixes.iter().any(|p| name.starts_with(p.as_str())) {
            prefixes.push(name.to_string());
        }
    }
    prefixes
}

/// Whether a listed log group is worth a ListTagsForResource: a prefix search also returns
/// longer names (`/aws/x` finds `/aws/xyz`).
pub fn is_candidate(name: &str, stack: &str, wanted: &BTreeSet<&str>) -> bool {
    wanted.contains(name) || stack_prefixes(stack).iter().any(|p| name.starts_with(p.as_str()))
}

/// Every log group whose name starts with `prefix`.
async fn describe(ctx: &Ctx, prefix: &str) -> anyhow::Result<Vec<Listed>> {
    let mut out = Vec::new();
    let mut pages = client(ctx).describe_log_groups().log_group_name_prefix(prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        for g in page.map_err(call_failed("DescribeLogGroups"))?.log_groups() {
            let (Some(name), Some(arn)) = (g.log_group_name(), g.log_group_arn().or(g.arn())) else { continue };
            out.push(Listed {
                name: name.to_string(),
                arn: arns(arn).0,
                retention_days: g.retention_in_days().and_then(|d| u64::try_from(d).ok()),
            });
        }
    }
    Ok(out)
}

/// Logical id (if the stack owns it) and tags of the log group named exactly `name`, if it exists.
async fn owner(ctx: &Ctx, name: &str) -> anyhow::Result<Option<(Option<String>, TagMap)>> {
    let Some(g) = describe(ctx, name).await?.into_iter().find(|g| g.name == name) else { return Ok(None) };
    let tags =
        gone_as_none(client(ctx).list_tags_for_resource().resource_arn(&g.arn).send().await.map_err(call_failed("ListTagsForResource")))?;
    Ok(tags.map(|t| owned(ctx, t.tags())))
}

fn identity(name: &str, arn: &str) -> Identity {
    let (plain, wildcard) = arns(arn);
    Identity::id(name).with("arn", plain).with("arn_wildcard", wildcard).with("name", name)
}

fn retention(days: u64) -> anyhow::Result<i32> {
    i32::try_from(days).map_err(|_| anyhow::anyhow!("retention_days {days} is out of range for CloudWatch Logs"))
}

async fn set_retention(ctx: &Ctx, name: &str, days: Option<u64>) -> anyhow::Result<()> {
    match days {
        Some(d) => {
            let d = retention(d)?;
            client(ctx)
                .put_retention_policy()
                .log_group_name(name)
                .retention_in_days(d)
                .send()
                .await
                .map_err(call_failed("PutRetentionPolicy"))?;
        }
        None => {
            client(ctx).delete_retention_policy().log_group_name(name).send().await.map_err(call_failed("DeleteRetentionPolicy"))?;
        }
    }
    Ok(())
}

impl Kind for LogGroup {
    fn name(&self) -> &'static str {
        "logs:log-group"
    }

    type Typed = LogGroupFields;

    fn replace_on(&self) -> &'static [&'static str] {
        &["name"]
    }

    /// A renamed log group is another one: the task definition moves to it before the old
    /// one (and its events) goes.
    fn replacement(&self) -> Replacement {
        Replacement::CreateBeforeDestroy
    }

    /// DescribeLogGroups per search prefix (two: `/ecs/<stack>`, `/aws/apigateway/<stack>`)
    /// beside the pass's tag batch, then ListTagsForResource per candidate the batch does not
    /// confirm (see `tagging`: a wanted group with exactly the wanted tags and retention).
    async fn observe(&self, ctx: &Ctx, desired: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let stack = &ctx.settings.stack;
        let typed: Vec<LogGroupFields> = fields::wanted(self.name(), desired)?;
        let by_name: BTreeMap<&str, &Desired> = typed.iter().map(|w| w.name.as_str()).zip(desired.iter().copied()).collect();
        let wanted: BTreeSet<&str> = by_name.keys().copied().collect();
        let prefixes = search_prefixes(stack, &wanted);
        let (listed, batch) = futures::try_join!(try_join_all(prefixes.iter().map(|p| describe(ctx, p))), tagging::of_pass(ctx))?;
        // By name: overlapping prefixes list a group twice.
        let listed: BTreeMap<String, Listed> =
            listed.into_iter().flatten().filter(|g| is_candidate(&g.name, stack, &wanted)).map(|g| (g.name.clone(), g)).collect();
        let tags = try_join_all(listed.values().map(|g| async {
            let live = untyped(&LogGroupFields { name: g.name.clone(), retention_days: g.retention_days, tags: TagMap::new() });
            if let Some((id, tags)) = batch.confirmed(&ctx.settings, &g.arn, by_name.get(g.name.as_str()).copied(), &live) {
                return Ok(Some((Some(id), tags)));
            }
            let read = client(ctx).list_tags_for_resource().resource_arn(&g.arn).send().await;
            Ok::<_, anyhow::Error>(gone_as_none(read.map_err(call_failed("ListTagsForResource")))?.map(|t| owned(ctx, t.tags())))
        }))
        .await?;
        let mut found = Vec::new();
        for (g, owner) in listed.values().zip(tags) {
            let Some(owner) = owner else { continue }; // deleted since it was listed
            match owner {
                (Some(id), tags) => {
                    let fields = LogGroupFields { name: g.name.clone(), retention_days: g.retention_days, tags };
                    let identity = identity(&g.name, &g.arn);
                    found.push(Observed { attrs: identity.attrs, ..Observed::new(self.name(), id, g.name.clone(), untyped(&fields)) });
                }
                (None, tags) if wanted.contains(g.name.as_str()) => return Err(not_owned("CloudWatch log group", &g.name, stack, &tags)),
                (None, _) => {}
            }
        }
        Ok(found)
    }

    async fn create(&self, ctx: &Ctx, id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: LogGroupFields = typed(self.name(), fields)?;
        // CreateLogGroup refuses an existing name, so it can neither duplicate nor take
        // over someone else's group; the refusal is turned into what it means.
        let sent = client(ctx).create_log_group().log_group_name(&f.name).set_tags(Some(f.tags.clone().into_iter().collect())).send().await;
        if let Err(e) = sent.map_err(call_failed("CreateLogGroup")) {
            if !has_code(&e, "ResourceAlreadyExistsException") {
                return Err(e);
            }
            return Err(match owner(ctx, &f.name).await? {
                Some((Some(owned_as), _)) => observe_again(
                    "CreateLogGroup",
                    format!("log group `{}` already exists as this stack's `{owned_as}` (an earlier attempt made it)", f.name),
                ),
                Some((None, tags)) => not_owned("CloudWatch log group", &f.name, &ctx.settings.stack, &tags),
                None => e,
            });
        }
        if f.retention_days.is_some() {
            set_retention(ctx, &f.name, f.retention_days)
                .await
                .map_err(|e| e.context(format!("log group `{}` ({id}) was created; setting its retention failed", f.name)))?;
        }
        // The ARN (account id included) is only known from a read.
        let listed = describe(ctx, &f.name).await?.into_iter().find(|g| g.name == f.name);
        let g = listed
            .ok_or_else(|| observe_again("DescribeLogGroups", format!("log group `{}` was created but is not listed yet", f.name)))?;
        Ok(identity(&g.name, &g.arn))
    }

    async fn update(&self, ctx: &Ctx, live: &Observed, fields: &Fields, changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        let f: LogGroupFields = typed(self.name(), fields)?;
        if fields::changed(changes, "retention_days") {
            set_retention(ctx, &live.physical_id, f.retention_days).await?;
        }
        let arn = live
            .attrs
            .get("arn")
            .ok_or_else(|| anyhow::anyhow!("internal error: log group {} was observed without an ARN", live.physical_id))?;
        apply_tags(ctx, arn, &TagDelta::of(changes)).await?;
        Ok(None)
    }

    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        client(ctx).delete_log_group().log_group_name(&live.physical_id).send().await.map_err(call_failed("DeleteLogGroup"))?;
        Ok(())
    }

    async fn orphan(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        let arn = live
            .attrs
            .get("arn")
            .ok_or_else(|| anyhow::anyhow!("internal error: log group {} was observed without an ARN", live.physical_id))?;
        apply_tags(ctx, arn, &TagDelta::orphan(&ctx.settings.stack)).await
    }

    fn iam(&self, stack: &str) -> IamActions {
        IamActions {
            read: vec!["logs:DescribeLogGroups"],
            read_account_wide: vec![crate::resources::tagging::CALL],
            read_by_arn: vec!["logs:ListTagsForResource"],
            arns: vec!["arn:aws:logs:*:*:log-group:*".to_string()],
            // Scoped by name prefix (the pattern also covers the `:*` form). Creating with
            // tags also needs TagResource.
            scoped: vec![Scoped {
                actions: vec![
                    "logs:CreateLogGroup",
                    "logs:PutRetentionPolicy",
                    "logs:DeleteRetentionPolicy",
                    "logs:TagResource",
                    "logs:UntagResource",
                    "logs:DeleteLogGroup",
                ],
                // Exact names (and their streams): a prefix would also match another stack
                // whose name starts with this one's (`<stack>-dev`).
                resources: stack_prefixes(stack)
                    .iter()
                    .flat_map(|p| [format!("arn:aws:logs:*:*:log-group:{p}"), format!("arn:aws:logs:*:*:log-group:{p}:*")])
                    // The stack's task log groups (`task_log_group`), streams included.
                    .chain([format!("arn:aws:logs:*:*:log-group:{}/*", stack_prefixes(stack)[0])])
                    .collect(),
                read_only: false,
            }],
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn searches_the_stack_prefixes_and_only_names_outside_them() {
        let wanted = BTreeSet::from(["/ecs/s", "/aws/apigateway/s"]);
        assert_eq!(search_prefixes("s", &wanted), vec!["/ecs/s", "/aws/apigateway/s"]);
        assert_eq!(search_prefixes("s", &BTreeSet::new()), vec!["/ecs/s", "/aws/apigateway/s"], "without names: still the stack's");
        let odd = BTreeSet::from(["/custom/s-app"]);
        assert_eq!(search_prefixes("s", &odd), vec!["/ecs/s", "/aws/apigateway/s", "/custom/s-app"]);
    }

    #[test]
    fn candidates() {
        let wanted = BTreeSet::from(["/custom/s-app"]);
        assert!(is_candidate("/ecs/s", "s", &wanted));
        assert!(is_candidate("/custom/s-app", "s", &wanted));
        assert!(!is_candidate("/custom/s-app-2", "s", &wanted), "a prefix match of a wanted name is not that name");
    }

    #[test]
    fn never_expiring_is_null() {
        let f = LogGroupFields { name: "/ecs/s".into(), retention_days: None, tags: TagMap::new() };
        assert_eq!(serde_json::Value::Object(untyped(&f)), json!({"name": "/ecs/s", "retention_days": null, "tags": {}}));
        assert!(retention(u64::MAX).is_err());
    }

    #[test]
    fn iam_covers_both_prefixes_by_arn() {
        let a = LogGroup.iam("s");
        assert_eq!(
            a.scoped[0].resources,
            vec![
                "arn:aws:logs:*:*:log-group:/ecs/s",
                "arn:aws:logs:*:*:log-group:/ecs/s:*",
                "arn:aws:logs:*:*:log-group:/aws/apigateway/s",
                "arn:aws:logs:*:*:log-group:/aws/apigateway/s:*",
                "arn:aws:logs:*:*:log-group:/ecs/s/*"
            ]
        );
        assert_eq!(super::super::task_log_group("s", "drift-correction"), "/ecs/s/drift-correction");
        assert!(a.scoped[0].actions.contains(&"logs:TagResource"));
        assert!(a.create.is_empty() && a.change.is_empty());
    }
}
