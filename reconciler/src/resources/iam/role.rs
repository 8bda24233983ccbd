//! `iam:role` — found by name under the stack's path (`/reconciler/<stack>/`), owned by its
//! tags. The physical id is the role name; dependents reference its `arn`. The trust policy
//! and the inline policies are compared in canonical form (`canonical_policy`), so that a
//! document IAM echoes back with other spelling is not drift.

use super::{apply_tags, call_failed, canonical_policy, client, iam_tags, owned, parse_policy_document, role_path};
use crate::engine::fields::{typed, untyped};
use crate::engine::ownership::not_owned;
use crate::engine::ownership::{TagDelta, TagMap};
use crate::engine::retry::{gone_as_none, has_code, observe_again};
use crate::engine::{Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed, Scoped};
use anyhow::Context as _;
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

pub struct Role;

/// The fields of a role, exactly as desired state builds them and observe reports them.
/// Policy documents are in `canonical_policy` form on both sides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleFields {
    pub name: String,
    pub path: String,
    /// The trust (assume-role) policy document.
    pub trust: Value,
    /// Inline policies: name → document.
    pub policies: BTreeMap<String, Value>,
    pub tags: TagMap,
}

/// The inline policies to put (new or changed) and to delete, going from `have` to `want`.
pub fn policy_changes<'a>(
    have: &'a BTreeMap<String, Value>,
    want: &'a BTreeMap<String, Value>,
) -> (Vec<(&'a str, &'a Value)>, Vec<&'a str>) {
    let put = want.iter().filter(|(k, v)| have.get(*k) != Some(v)).map(|(k, v)| (k.as_str(), v)).collect();
    let delete = have.keys().filter(|k| !want.contains_key(*k)).map(String::as_str).collect();
    (put, delete)
}

fn policy_map(v: Option<&Value>) -> BTreeMap<String, Value> {
    v.and_then(Value::as_object).map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
}

/// What one role name turned out to be.
enum Found {
    Owned(Box<Observed>),
    /// Exists, but this stack does not own it: its comparable tags.
    Foreign(TagMap),
    Gone,
}

/// Names of the role's inline policies.
async fn policy_names(ctx: &Ctx, role: &str) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    let mut pages = client(ctx).list_role_policies().role_name(role).into_paginator().send();
    while let Some(page) = pages.next().await {
        names.extend(page.map_err(call_failed("ListRolePolicies"))?.policy_names().iter().cloned());
    }
    Ok(names)
}

/// One inline policy, canonical; `None` when the role has no such policy (or is gone).
async fn policy(ctx: &Ctx, role: &str, name: &str) -> anyhow::Result<Option<Value>> {
    let out =
        gone_as_none(client(ctx).get_role_policy().role_name(role).policy_name(name).send().await.map_err(call_failed("GetRolePolicy")))?;
    out.map(|o| {
        parse_policy_document(o.policy_document())
            .map(|d| canonical_policy(&d))
            .with_context(|| format!("reading inline policy `{name}` of role `{role}`"))
    })
    .transpose()
}

/// Inline policies, canonical, as ListRolePolicies names them. The `expected` ones (the
/// spec's) are read beside the listing, in the same round trip; one only the listing shows
/// (added by hand) is read after it.
async fn policies(ctx: &Ctx, role: &str, expected: &[String]) -> anyhow::Result<BTreeMap<String, Value>> {
    let (names, early) = futures::try_join!(policy_names(ctx, role), try_join_all(expected.iter().map(|p| policy(ctx, role, p))))?;
    let mut docs: BTreeMap<&str, Option<Value>> = expected.iter().map(String::as_str).zip(early).collect();
    let later: Vec<&str> = names.iter().map(String::as_str).filter(|n| !docs.contains_key(n)).collect();
    let read_later = try_join_all(later.iter().map(|p| policy(ctx, role, p))).await?;
    docs.extend(later.into_iter().zip(read_later));
    // A policy deleted between the calls is simply not there.
    Ok(names.iter().filter_map(|n| Some((n.clone(), docs.get_mut(n.as_str())?.take()?))).collect())
}

/// A role as one of IAM's reads shows it, before ownership is decided.
struct RoleView<'a> {
    name: &'a str,
    path: &'a str,
    arn: &'a str,
    /// The trust policy as IAM returns it (URL-encoded JSON).
    trust: Option<&'a str>,
    tags: &'a [aws_sdk_iam::types::Tag],
}

/// What `role` is to this stack; `policies` (its inline policies, canonical; `None`: the role
/// went away meanwhile) is asked for only if the stack owns it.
fn found(ctx: &Ctx, role: RoleView, policies: impl FnOnce() -> anyhow::Result<Option<BTreeMap<String, Value>>>) -> anyhow::Result<Found> {
    let (id, tags) = owned(ctx, role.tags);
    let Some(id) = id else { return Ok(Found::Foreign(tags)) };
    let trust = match role.trust {
        Some(doc) => {
            canonical_policy(&parse_policy_document(doc).with_context(|| format!("reading the trust policy of role `{}`", role.name))?)
        }
        None => Value::Null,
    };
    let Some(policies) = policies()? else { return Ok(Found::Gone) };
    let fields = RoleFields { name: role.name.to_string(), path: role.path.to_string(), trust, policies, tags };
    let identity = Identity::id(role.name).with("arn", role.arn).with("name", role.name);
    Ok(Found::Owned(Box::new(Observed { attrs: identity.attrs, ..Observed::new("iam:role", id, role.name.to_string(), untyped(&fields)) })))
}

/// Reads one role: GetRole (tags, trust) and, beside it, its inline policies (`expected`:
/// the policy names the spec gives it), used only if the stack owns it.
async fn read(ctx: &Ctx, name: &str, expected: &[String]) -> anyhow::Result<Found> {
    let (got, inline) = futures::join!(client(ctx).get_role().role_name(name).send(), policies(ctx, name, expected));
    let Some(out) = gone_as_none(got.map_err(call_failed("GetRole")))? else {
        return Ok(Found::Gone);
    };
    from_get_role(ctx, &out, || gone_as_none(inline))
}

/// What a GetRole answer says the role is; `policies` as in [`found`].
fn from_get_role(
    ctx: &Ctx,
    out: &aws_sdk_iam::operation::get_role::GetRoleOutput,
    policies: impl FnOnce() -> anyhow::Result<Option<BTreeMap<String, Value>>>,
) -> anyhow::Result<Found> {
    let Some(role) = out.role() else { return Ok(Found::Gone) };
    let view = RoleView {
        name: role.role_name(),
        path: role.path(),
        arn: role.arn(),
        trust: role.assume_role_policy_document(),
        tags: role.tags(),
    };
    found(ctx, view, policies)
}

/// The call, as IAM policies and the refusal memory name it.
const BATCH: &str = "iam:GetAccountAuthorizationDetails";

/// The roles that matter to this stack (those named in `wanted`, and any under `path`), with
/// their tags and inline policies, from GetAccountAuthorizationDetails(Filter=Role): the whole
/// IAM read in one call (more for an account with many roles: up to 1000 a page, IAM may
/// return fewer) instead of four calls per role. A wanted role the answer lacks (IAM is
/// eventually consistent) is read by name. `None` when the call failed, denied (an
/// organisation can deny it: it shows every role's policies) or otherwise: observe then reads
/// role by role.
async fn account_roles(ctx: &Ctx, path: &str, wanted: &BTreeMap<String, Vec<String>>) -> anyhow::Result<Option<Vec<(String, Found)>>> {
    let mut found_roles = Vec::new();
    let mut pages = client(ctx)
        .get_account_authorization_details()
        .filter(aws_sdk_iam::types::EntityType::Role)
        .max_items(1000)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = match page.map_err(call_failed("GetAccountAuthorizationDetails")) {
            Ok(page) => page,
            Err(e) => {
                ctx.batch_failed(BATCH, &e, "reading the stack's roles one by one (ListRoles, then three calls per role)");
                return Ok(None);
            }
        };
        for role in page.role_detail_list() {
            let name = role.role_name().unwrap_or_default();
            let path_of = role.path().unwrap_or("/");
            if !wanted.contains_key(name) && !path_of.starts_with(path) {
                continue;
            }
            let view = RoleView {
                name,
                path: path_of,
                arn: role.arn().unwrap_or_default(),
                trust: role.assume_role_policy_document(),
                tags: role.tags(),
            };
            let policies = || {
                let mut docs = BTreeMap::new();
                for p in role.role_policy_list() {
                    let (policy, doc) = (p.policy_name().unwrap_or_default(), p.policy_document().unwrap_or_default());
                    let doc = parse_policy_document(doc).with_context(|| format!("reading inline policy `{policy}` of role `{name}`"))?;
                    docs.insert(policy.to_string(), canonical_policy(&doc));
                }
                Ok(Some(docs))
            };
            found_roles.push((name.to_string(), found(ctx, view, policies)?));
        }
    }
    let missing: Vec<(&String, &Vec<String>)> = wanted.iter().filter(|(n, _)| !found_roles.iter().any(|(f, _)| f == *n)).collect();
    let late = try_join_all(missing.iter().map(|(n, p)| read_missing(ctx, n, p))).await?;
    found_roles.extend(missing.into_iter().map(|(n, _)| n.clone()).zip(late));
    Ok(Some(found_roles))
}

/// A wanted role the batch did not show: usually simply not there (yet), so GetRole alone
/// first, and its inline policies only if it is there after all (and ours).
async fn read_missing(ctx: &Ctx, name: &str, expected: &[String]) -> anyhow::Result<Found> {
    let Some(out) = gone_as_none(client(ctx).get_role().role_name(name).send().await.map_err(call_failed("GetRole")))? else {
        return Ok(Found::Gone);
    };
    // Ownership first (no policy read for a role that is not ours), then the policies.
    match from_get_role(ctx, &out, || Ok(Some(BTreeMap::new())))? {
        Found::Owned(_) => {
            let inline = gone_as_none(policies(ctx, name, expected).await)?;
            from_get_role(ctx, &out, || Ok(inline))
        }
        other => Ok(other),
    }
}

/// Role by role: the wanted roles by name (GetRole, ListRolePolicies and GetRolePolicy of the
/// spec's policies, all at once) beside ListRoles(PathPrefix): one round trip; a role only the
/// listing shows (left over, to be pruned) is read after it.
async fn each_role(ctx: &Ctx, path: &str, wanted: &BTreeMap<String, Vec<String>>) -> anyhow::Result<Vec<(String, Found)>> {
    let listing = async {
        let mut names = BTreeSet::new();
        let mut pages = client(ctx).list_roles().path_prefix(path).into_paginator().send();
        while let Some(page) = pages.next().await {
            names.extend(page.map_err(call_failed("ListRoles"))?.roles().iter().map(|r| r.role_name().to_string()));
        }
        Ok::<_, anyhow::Error>(names)
    };
    let (listed, early) = futures::try_join!(listing, try_join_all(wanted.iter().map(|(n, p)| read(ctx, n, p))))?;
    let extra: Vec<String> = listed.into_iter().filter(|n| !wanted.contains_key(n)).collect();
    let late = try_join_all(extra.iter().map(|n| read(ctx, n, &[]))).await?;
    Ok(wanted.keys().cloned().chain(extra).zip(early.into_iter().chain(late)).collect())
}

impl Kind for Role {
    fn name(&self) -> &'static str {
        "iam:role"
    }

    type Typed = RoleFields;

    /// A role name is unique in the account whatever its path, so a new path cannot exist
    /// beside the old one: replacement is delete-first (the default).
    fn replace_on(&self) -> &'static [&'static str] {
        &["name", "path"]
    }

    /// The roles that matter are the wanted ones (by name, wherever they are: a same-named
    /// role elsewhere is not ours) and any under the stack's path `/reconciler/<stack>/` (left
    /// over, to be pruned): in an observation one GetAccountAuthorizationDetails; role by role
    /// where that call is denied or fails, and for the single roles apply reads again.
    async fn observe(&self, ctx: &Ctx, wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let stack = &ctx.settings.stack;
        let wanted: Vec<RoleFields> = crate::engine::fields::wanted(self.name(), wanted)?;
        let wanted: BTreeMap<String, Vec<String>> = wanted.into_iter().map(|w| (w.name, w.policies.into_keys().collect())).collect();
        let path = role_path(stack);
        // The batch pays off when every role is read (a pass), not for one role re-read
        // during apply.
        let batch = ctx.in_observation() && ctx.settings.account_wide_reads && !ctx.was_refused(BATCH);
        let roles = match batch.then(|| account_roles(ctx, &path, &wanted)) {
            Some(read) => read.await?,
            None => None,
        };
        let roles = match roles {
            Some(roles) => roles,
            None => each_role(ctx, &path, &wanted).await?,
        };
        let mut found = Vec::new();
        for (name, r) in roles {
            match r {
                Found::Owned(o) => found.push(*o),
                Found::Foreign(tags) if wanted.contains_key(&name) => return Err(not_owned("IAM role", &name, stack, &tags)),
                Found::Foreign(_) | Found::Gone => {}
            }
        }
        Ok(found)
    }

    async fn create(&self, ctx: &Ctx, id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: RoleFields = typed(self.name(), fields)?;
        // CreateRole refuses an existing name (EntityAlreadyExists): no duplicate, no
        // takeover; the refusal is turned into what it means. Tagged in the same request,
        // so an interrupted create is found again.
        let sent = client(ctx)
            .create_role()
            .role_name(&f.name)
            .path(&f.path)
            .assume_role_policy_document(f.trust.to_string())
            .set_tags(Some(iam_tags(&f.tags)?))
            .send()
            .await
            .map_err(call_failed("CreateRole"));
        let out = match sent {
            Ok(out) => out,
            Err(e) if has_code(&e, "EntityAlreadyExists") => {
                return Err(match read(ctx, &f.name, &[]).await? {
                    Found::Owned(o) => observe_again(
                        "CreateRole",
                        format!("role `{}` already exists as this stack's `{}` (an earlier attempt made it)", f.name, o.id),
                    ),
                    Found::Foreign(tags) => not_owned("IAM role", &f.name, &ctx.settings.stack, &tags),
                    Found::Gone => e,
                })
            }
            Err(e) => return Err(e),
        };
        let arn = out.role().map(|r| r.arn().to_string()).unwrap_or_default();
        for (policy, doc) in &f.policies {
            client(ctx)
                .put_role_policy()
                .role_name(&f.name)
                .policy_name(policy)
                .policy_document(doc.to_string())
                .send()
                .await
                .map_err(call_failed("PutRolePolicy"))
                .map_err(|e| e.context(format!("role `{}` ({id}) was created; putting its inline policy `{policy}` failed", f.name)))?;
        }
        Ok(Identity::id(&f.name).with("arn", arn).with("name", &f.name))
    }

    async fn update(&self, ctx: &Ctx, live: &Observed, fields: &Fields, changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        let f: RoleFields = typed(self.name(), fields)?;
        let role = &live.physical_id;
        let iam = client(ctx);
        if crate::engine::fields::changed(changes, "trust") {
            iam.update_assume_role_policy()
                .role_name(role)
                .policy_document(f.trust.to_string())
                .send()
                .await
                .map_err(call_failed("UpdateAssumeRolePolicy"))?;
        }
        if let Some(c) = changes.iter().find(|c| c.field == "policies") {
            let have = policy_map(c.before.as_ref());
            let (put, delete) = policy_changes(&have, &f.policies);
            // New permissions first, removals after: the role never has less than both.
            for (policy, doc) in put {
                iam.put_role_policy()
                    .role_name(role)
                    .policy_name(policy)
                    .policy_document(doc.to_string())
                    .send()
                    .await
                    .map_err(call_failed("PutRolePolicy"))?;
            }
            for policy in delete {
                gone_as_none(
                    iam.delete_role_policy().role_name(role).policy_name(policy).send().await.map_err(call_failed("DeleteRolePolicy")),
                )?;
            }
        }
        apply_tags(ctx, role, &TagDelta::of(changes)).await?;
        Ok(None)
    }

    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        let role = &live.physical_id;
        let iam = client(ctx);
        // Listed now rather than taken from the observation: DeleteRole fails while any
        // inline policy is left.
        for policy in policy_names(ctx, role).await? {
            // A policy already gone is fine; that must not read as "the role is gone".
            gone_as_none(
                iam.delete_role_policy().role_name(role).policy_name(&policy).send().await.map_err(call_failed("DeleteRolePolicy")),
            )?;
        }
        iam.delete_role().role_name(role).send().await.map_err(call_failed("DeleteRole")).map_err(|e| {
            if has_code(&e, "DeleteConflict") {
                e.context(format!(
                    "role `{role}` still has managed policies attached or belongs to an instance profile (added outside the reconciler): detach or remove them, then run again"
                ))
            } else {
                e
            }
        })?;
        Ok(())
    }

    fn iam(&self, stack: &str) -> IamActions {
        let roles = vec![format!("arn:aws:iam::*:role{}*", role_path(stack))];
        IamActions {
            // The whole read in one call; ListRoles and the reads by ARN are the fallback
            // where it is not allowed (by the spec or by IAM) or fails.
            read: vec!["iam:ListRoles"],
            read_account_wide: vec![BATCH],
            // By name wherever the role is (a same-named role elsewhere is reported, not read
            // as the stack's).
            read_by_arn: vec!["iam:GetRole", "iam:ListRolePolicies", "iam:GetRolePolicy"],
            arns: vec!["arn:aws:iam::*:role/*".to_string()],
            // IAM supports aws:ResourceTag poorly: scoped by the stack's role path instead.
            // CreateRole with tags also needs TagRole.
            scoped: vec![
                Scoped {
                    actions: vec![
                        "iam:CreateRole",
                        "iam:TagRole",
                        "iam:UntagRole",
                        "iam:UpdateAssumeRolePolicy",
                        "iam:PutRolePolicy",
                        "iam:DeleteRolePolicy",
                        "iam:DeleteRole",
                    ],
                    resources: roles.clone(),
                    read_only: false,
                },
                // ECS is handed these roles (task and execution role); no others.
                Scoped { actions: vec!["iam:PassRole"], resources: roles, read_only: false },
            ],
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inline_policy_changes() {
        let doc =
            |a: &str| canonical_policy(&json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": a, "Resource": "*"}}));
        let have = BTreeMap::from([
            ("keep".to_string(), doc("s3:GetObject")),
            ("edit".to_string(), doc("sqs:SendMessage")),
            ("drop".to_string(), doc("x:Y")),
        ]);
        let want = BTreeMap::from([
            ("keep".to_string(), doc("s3:GetObject")),
            ("edit".to_string(), doc("sqs:*")),
            ("add".to_string(), doc("logs:*")),
        ]);
        let (put, delete) = policy_changes(&have, &want);
        assert_eq!(put.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec!["add", "edit"]);
        assert_eq!(delete, vec!["drop"]);
        let (put, delete) = policy_changes(&want, &want);
        assert!(put.is_empty() && delete.is_empty());
    }

    #[test]
    fn fields_shape() {
        let f = RoleFields {
            name: "s-task".into(),
            path: "/reconciler/s/".into(),
            trust: json!({}),
            policies: BTreeMap::new(),
            tags: TagMap::new(),
        };
        let u = untyped(&f);
        assert_eq!(u.keys().map(String::as_str).collect::<Vec<_>>(), vec!["name", "path", "policies", "tags", "trust"]);
        assert_eq!(u["policies"], json!({}), "no inline policies is an empty object, so removing all of them is drift");
        assert_eq!(typed::<RoleFields>("iam:role", &u).unwrap(), f);
    }

    #[test]
    fn iam_scopes_roles_by_the_stack_path() {
        let a = Role.iam("s");
        assert_eq!(a.scoped[0].resources, vec!["arn:aws:iam::*:role/reconciler/s/*".to_string()]);
        assert_eq!(a.scoped[1].actions, vec!["iam:PassRole"]);
        assert!(a.read.iter().all(|r| r.starts_with("iam:List") || r.starts_with("iam:Get")));
    }
}
