//! `ecs:task-definition` — immutable revisions of one family. Observe reports the latest
//! ACTIVE revision; every update registers exactly one new revision (a new identity the
//! service is repointed to) and leaves the old ones ACTIVE, because a circuit-breaker rollback
//! and a manual rollback both need them. Delete deregisters every ACTIVE revision.
//!
//! AWS fills defaults into what it echoes (`essential`, container `cpu: 0`, the port mapping's
//! protocol and host port, health check timings, empty lists) and keeps environment order as
//! sent; `container.rs` folds all of that into the one shape desired state builds, or
//! every plan would show a change and every apply would register a revision.

use super::container::{container_definition, container_fields, container_of, Container};
use super::{call_failed, client, ecs_tags, literal, owned_id, tag_map, typed, untyped};
use crate::engine::ownership::not_owned;
use crate::engine::retry::is_gone;
use crate::engine::{Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed, Replacement};
use crate::engine::{Managed, Ref};
use aws_sdk_ecs::types::{
    Compatibility, ContainerDefinition, NetworkMode, SortOrder, Tag, TaskDefinitionFamilyStatus, TaskDefinitionField, TaskDefinitionStatus,
    Volume,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub struct TaskDefinition;

/// The fields of `ecs:task-definition`, as desired state builds them and observe reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskDefinitionFields {
    pub family: String,
    /// Task-level CPU units as ECS echoes them: an integer string ("256").
    pub cpu: String,
    /// Task-level memory in MiB as an integer string ("512").
    pub memory: String,
    pub network_mode: String,
    /// requiresCompatibilities, sorted (["FARGATE"]).
    pub requires: Vec<String>,
    pub execution_role: Ref,
    pub task_role: Ref,
    /// The container's image (kept apart from `container` because a deploy pipeline may own it).
    pub image: Managed<String>,
    /// Names of the task's (Fargate ephemeral) volumes, sorted.
    pub volumes: Vec<String>,
    pub container: Container,
    pub tags: Managed<BTreeMap<String, String>>,
}

impl TaskDefinitionFields {
    pub fn normalised(mut self) -> Self {
        self.requires.sort();
        self.volumes.sort();
        self.container = self.container.normalised();
        self
    }
}

/// The comparable fields of a described revision. A revision with other than exactly one
/// container reports `container` as the list of all of them, so that it shows as a change
/// (an injected sidecar is drift) and the update registers the one container wanted.
fn fields_of(td: &aws_sdk_ecs::types::TaskDefinition, tags: &[Tag]) -> Fields {
    let containers = td.container_definitions();
    let first = containers.first().map(container_of).unwrap_or_else(|| container_of(&ContainerDefinition::builder().build()));
    let mut requires: Vec<String> = td.requires_compatibilities().iter().map(|c| c.as_str().to_string()).collect();
    requires.sort();
    let mut volumes: Vec<String> = td.volumes().iter().filter_map(|v| v.name()).map(String::from).collect();
    volumes.sort();
    let f = TaskDefinitionFields {
        family: td.family().unwrap_or_default().to_string(),
        cpu: td.cpu().unwrap_or_default().to_string(),
        memory: td.memory().unwrap_or_default().to_string(),
        network_mode: td.network_mode().map(|m| m.as_str().to_string()).unwrap_or_default(),
        requires,
        execution_role: td.execution_role_arn().unwrap_or_default().to_string().into(),
        task_role: td.task_role_arn().unwrap_or_default().to_string().into(),
        image: containers.first().and_then(|c| c.image()).unwrap_or_default().to_string().into(),
        volumes,
        container: first,
        tags: tag_map(tags).into(),
    };
    let mut fields = untyped(&f);
    if containers.len() != 1 {
        fields.insert("container".into(), Value::Array(containers.iter().map(container_fields).collect()));
    }
    fields
}

/// The family of a task definition ARN (`…:task-definition/<family>:<revision>`).
fn family_of(arn: &str) -> Option<&str> {
    let (_, rest) = arn.rsplit_once(":task-definition/")?;
    Some(rest.rsplit_once(':').map(|(f, _)| f).unwrap_or(rest))
}

/// ACTIVE revisions of exactly `family`, newest first. `familyPrefix` is a prefix match
/// (`demo` also lists `demo-worker`), so the family is compared exactly here.
async fn active_revisions(ctx: &Ctx, family: &str) -> anyhow::Result<Vec<String>> {
    let mut arns = Vec::new();
    let mut pages = client(ctx)
        .list_task_definitions()
        .family_prefix(family)
        .status(TaskDefinitionStatus::Active)
        .sort(SortOrder::Desc)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(call_failed("ListTaskDefinitions"))?;
        arns.extend(page.task_definition_arns().iter().filter(|a| family_of(a) == Some(family)).cloned());
    }
    Ok(arns)
}

/// One revision (or a family's latest) with its tags; `None` if there is no such thing.
async fn describe(ctx: &Ctx, what: &str) -> anyhow::Result<Option<(aws_sdk_ecs::types::TaskDefinition, Vec<Tag>)>> {
    match client(ctx).describe_task_definition().task_definition(what).include(TaskDefinitionField::Tags).send().await {
        Ok(out) => Ok(out.task_definition().cloned().map(|td| (td, out.tags().to_vec()))),
        Err(e) => {
            let e = call_failed("DescribeTaskDefinition")(e);
            if is_gone(&e) {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

/// The latest ACTIVE revision of `family`. DescribeTaskDefinition by family answers with it
/// in one call; only when that answer is INACTIVE (the emulator returns the newest revision
/// whatever its status) are the ACTIVE revisions listed.
async fn latest_active(ctx: &Ctx, family: &str) -> anyhow::Result<Option<(aws_sdk_ecs::types::TaskDefinition, Vec<Tag>)>> {
    match describe(ctx, family).await? {
        Some((td, tags)) if td.status() == Some(&TaskDefinitionStatus::Active) => Ok(Some((td, tags))),
        None => Ok(None),
        Some(_) => match active_revisions(ctx, family).await?.first() {
            Some(arn) => describe(ctx, arn).await,
            None => Ok(None),
        },
    }
}

/// How many older revisions are checked for the stack's tags when the newest one lacks them.
const OWNER_SEARCH_DEPTH: usize = 20;

/// Who owns a family whose newest revision is untagged. A deploy pipeline that registers
/// revisions itself (image owned by CI) usually copies the definition without its tags; the
/// family is still the stack's if an earlier ACTIVE revision carries the stack's tags. The
/// untagged revision is then what is live (its tags show as drift and the next update
/// registers a tagged revision with the live image).
async fn owner_of_family(ctx: &Ctx, family: &str, newest: &str) -> anyhow::Result<Option<String>> {
    for arn in active_revisions(ctx, family).await?.iter().filter(|a| a.as_str() != newest).take(OWNER_SEARCH_DEPTH) {
        let out = client(ctx).list_tags_for_resource().resource_arn(arn).send().await.map_err(call_failed("ListTagsForResource"))?;
        if let Some(id) = owned_id(ctx, out.tags()) {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

fn identity(td: &aws_sdk_ecs::types::TaskDefinition) -> anyhow::Result<Identity> {
    let arn = td.task_definition_arn().ok_or_else(|| anyhow::anyhow!("ECS returned a task definition without an ARN"))?;
    Ok(Identity::id(arn).with("arn", arn).with("family", td.family().unwrap_or_default()))
}

/// The stack's latest ACTIVE revision of `family`, if any; a family someone else owns is an
/// error (`named`) or skipped (found by listing).
async fn observe_family(ctx: &Ctx, kind: &'static str, family: &str, named: bool) -> anyhow::Result<Option<Observed>> {
    let Some((td, tags)) = latest_active(ctx, family).await? else { return Ok(None) };
    let ident = identity(&td)?;
    let id = match owned_id(ctx, &tags) {
        Some(id) => id,
        None => match owner_of_family(ctx, family, &ident.physical_id).await? {
            Some(id) => id,
            None if named => return Err(not_owned("ECS task definition family", family, &ctx.settings.stack, &tag_map(&tags))),
            None => return Ok(None),
        },
    };
    Ok(Some(Observed { attrs: ident.attrs, ..Observed::new(kind, id, ident.physical_id, fields_of(&td, &tags)) }))
}

/// Registers one revision from the (resolved) fields.
async fn register(ctx: &Ctx, kind: &str, fields: &Fields) -> anyhow::Result<Identity> {
    let f: TaskDefinitionFields = typed(kind, fields)?;
    let out = client(ctx)
        .register_task_definition()
        .family(&f.family)
        .cpu(&f.cpu)
        .memory(&f.memory)
        .network_mode(NetworkMode::from(f.network_mode.as_str()))
        .set_requires_compatibilities(Some(f.requires.iter().map(|c| Compatibility::from(c.as_str())).collect()))
        .set_execution_role_arn((!f.execution_role.is_empty()).then(|| f.execution_role.to_string()))
        .set_task_role_arn((!f.task_role.is_empty()).then(|| f.task_role.to_string()))
        .set_volumes(Some(f.volumes.iter().map(|v| Volume::builder().name(v).build()).collect()))
        .container_definitions(container_definition(&f.container, &f.image)?)
        .set_tags(Some(ecs_tags(&f.tags)))
        .send()
        .await
        .map_err(call_failed("RegisterTaskDefinition"))?;
    identity(out.task_definition().ok_or_else(|| anyhow::anyhow!("RegisterTaskDefinition returned no task definition"))?)
}

impl Kind for TaskDefinition {
    fn name(&self) -> &'static str {
        "ecs:task-definition"
    }

    type Typed = TaskDefinitionFields;

    fn replace_on(&self) -> &'static [&'static str] {
        &["family"]
    }

    /// Two families coexist: the new one is registered, the service repointed, then the old
    /// family deregistered (running tasks keep a deregistered revision).
    fn replacement(&self) -> Replacement {
        Replacement::CreateBeforeDestroy
    }

    fn updates_yield_new_identity(&self) -> bool {
        true
    }

    /// The named families and the listing of the stack's families at once (one round trip);
    /// then any family the listing adds.
    async fn observe(&self, ctx: &Ctx, wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let named: Vec<&str> = wanted.iter().filter_map(|d| literal(&d.fields, "family")).collect();
        // Also the families named after the stack that no node names (a task the spec
        // dropped, such as drift correction): still the stack's, found so they are pruned.
        let listed = async {
            let mut families = Vec::new();
            let mut pages = client(ctx)
                .list_task_definition_families()
                .family_prefix(&ctx.settings.stack)
                .status(TaskDefinitionFamilyStatus::Active)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                families.extend(page.map_err(call_failed("ListTaskDefinitionFamilies"))?.families().iter().cloned());
            }
            anyhow::Ok(families)
        };
        let (found, families) = futures::future::try_join(
            futures::future::try_join_all(named.iter().map(|f| observe_family(ctx, self.name(), f, true))),
            listed,
        )
        .await?;
        let others = families.iter().filter(|f| !named.contains(&f.as_str())).map(|f| observe_family(ctx, self.name(), f, false));
        let others = futures::future::try_join_all(others).await?;
        Ok(found.into_iter().chain(others).flatten().collect())
    }

    async fn create(&self, ctx: &Ctx, _id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        register(ctx, self.name(), fields).await
    }

    /// Revisions are immutable: any change (tags included) is one new revision.
    async fn update(&self, ctx: &Ctx, _live: &Observed, fields: &Fields, _changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        register(ctx, self.name(), fields).await.map(Some)
    }

    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        let family = live
            .attrs
            .get("family")
            .map(String::as_str)
            .or_else(|| family_of(&live.physical_id))
            .ok_or_else(|| anyhow::anyhow!("internal error: no family for task definition {}", live.physical_id))?;
        for arn in active_revisions(ctx, family).await? {
            match client(ctx)
                .deregister_task_definition()
                .task_definition(&arn)
                .send()
                .await
                .map_err(call_failed("DeregisterTaskDefinition"))
            {
                Ok(_) => {}
                Err(e) if is_gone(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn iam(&self, _stack: &str) -> IamActions {
        IamActions {
            read: vec!["ecs:DescribeTaskDefinition", "ecs:ListTaskDefinitions", "ecs:ListTaskDefinitionFamilies"],
            read_by_arn: vec!["ecs:ListTagsForResource"],
            create: vec!["ecs:RegisterTaskDefinition"],
            arns: vec![super::iam_arn("task-definition")],
            // DeregisterTaskDefinition supports neither resource ARNs nor tag conditions.
            extra: vec![serde_json::json!({
                "Sid": "EcsDeregisterTaskDefinitions",
                "Effect": "Allow",
                "Action": "ecs:DeregisterTaskDefinition",
                "Resource": "*",
            })],
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::container::tests::{desired, echo};
    use super::*;
    use serde_json::json;

    #[test]
    fn task_level_fields() {
        let td = aws_sdk_ecs::types::TaskDefinition::builder()
            .task_definition_arn("arn:aws:ecs:us-east-1:1:task-definition/demo:3")
            .family("demo")
            .cpu("256")
            .memory("512")
            .network_mode(NetworkMode::Awsvpc)
            .requires_compatibilities(Compatibility::Fargate)
            .compatibilities(Compatibility::Ec2)
            .compatibilities(Compatibility::Fargate)
            .execution_role_arn("arn:aws:iam::1:role/reconciler/demo/demo-execution")
            .task_role_arn("arn:aws:iam::1:role/reconciler/demo/demo-task")
            .volumes(Volume::builder().name("tmp").build())
            .container_definitions(echo().build())
            .revision(3)
            .status(TaskDefinitionStatus::Active)
            .build();
        let tags = [Tag::builder().key("reconciler:stack").value("demo").build()];
        let f = fields_of(&td, &tags);
        assert_eq!(f["cpu"], "256");
        assert_eq!(f["memory"], "512");
        assert_eq!(f["network_mode"], "awsvpc");
        assert_eq!(f["requires"], json!(["FARGATE"]));
        assert_eq!(f["image"], "r/i:1");
        assert_eq!(f["volumes"], json!(["tmp"]));
        assert_eq!(f["container"], desired());
        assert_eq!(f["tags"], json!({"reconciler:stack": "demo"}));
        let t: TaskDefinitionFields = typed("ecs:task-definition", &f).unwrap();
        assert_eq!(t.family, "demo");
        // A second (injected) container shows as a list, so it is a difference.
        let two = td.to_owned();
        let two = aws_sdk_ecs::types::TaskDefinition::builder()
            .set_container_definitions(Some(vec![echo().build(), ContainerDefinition::builder().name("sidecar").image("s").build()]))
            .family(two.family().unwrap())
            .build();
        assert!(fields_of(&two, &[])["container"].is_array());
    }

    #[test]
    fn family_of_arn() {
        assert_eq!(family_of("arn:aws:ecs:us-east-1:1:task-definition/demo:3"), Some("demo"));
        assert_eq!(family_of("arn:aws:ecs:us-east-1:1:task-definition/demo-worker:12"), Some("demo-worker"));
        assert_eq!(family_of("arn:aws:ecs:us-east-1:1:cluster/demo"), None);
    }
}
