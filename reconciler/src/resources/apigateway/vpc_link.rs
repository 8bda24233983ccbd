//! `apigateway:vpc-link` — how API Gateway reaches the private subnets: ENIs in the private
//! subnets with the `sg-vpc-link` security group. Owned by its tags. Asynchronous on AWS
//! (PENDING → AVAILABLE, minutes): create waits for AVAILABLE; one left PENDING by a run that
//! timed out is observed Pending and waited for by the next run. Subnets and security groups
//! are immutable; names are not unique, so a replacement creates the new link first, the
//! integration is repointed, and then the old one is deleted.

use super::{apply_tags, arn, call_failed, client, owned, pages};
use crate::engine::fields::{typed, untyped};
use crate::engine::ownership::{TagDelta, TagMap};
use crate::engine::retry::is_gone;
use crate::engine::{wait, Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed, Replacement, Status};
use crate::engine::{Ref, Set};
use aws_sdk_apigatewayv2::types::VpcLinkStatus;
use serde::{Deserialize, Serialize};

/// API Gateway's account quotas for these two calls (one CreateVpcLink per 15 s, one
/// DeleteVpcLink per 30 s): a replacement or a second stack's link waits its turn instead of
/// meeting a 429.
const CREATE_QUOTA: std::time::Duration = std::time::Duration::from_secs(15);
const DELETE_QUOTA: std::time::Duration = std::time::Duration::from_secs(30);

pub struct VpcLink;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpcLinkFields {
    pub name: String,
    /// Sorted (a set).
    pub subnets: Set<Ref>,
    /// Sorted (a set).
    pub security_groups: Set<Ref>,
    pub tags: TagMap,
}

/// Readiness from the link's status. INACTIVE (unused for 60 days) re-provisions on first use:
/// usable. DELETING (its network interfaces are being released, minutes) is on its way out.
pub fn status_of(status: Option<&VpcLinkStatus>, message: Option<&str>) -> Status {
    let why = |s: &str| match message {
        Some(m) if !m.is_empty() => format!("VPC link {s}: {m}"),
        _ => format!("VPC link {s}"),
    };
    match status {
        Some(VpcLinkStatus::Pending) => Status::Pending(why("PENDING")),
        Some(VpcLinkStatus::Failed) => Status::Failed(why("FAILED")),
        Some(VpcLinkStatus::Deleting) => Status::Leaving(why("DELETING")),
        _ => Status::Ready,
    }
}

async fn read(ctx: &Ctx, link_id: &str) -> anyhow::Result<Option<aws_sdk_apigatewayv2::operation::get_vpc_link::GetVpcLinkOutput>> {
    match client(ctx).get_vpc_link().vpc_link_id(link_id).send().await.map_err(call_failed("GetVpcLink")) {
        Ok(out) => Ok(Some(out)),
        Err(e) if is_gone(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Kind for VpcLink {
    fn name(&self) -> &'static str {
        "apigateway:vpc-link"
    }

    type Typed = VpcLinkFields;

    fn replace_on(&self) -> &'static [&'static str] {
        &["subnets", "security_groups"]
    }

    fn replacement(&self) -> Replacement {
        Replacement::CreateBeforeDestroy
    }

    /// GetVpcLinks (tags included in the listing), page by page.
    async fn observe(&self, ctx: &Ctx, _wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let links = pages(|token| async move {
            let page = client(ctx).get_vpc_links().set_next_token(token).send().await.map_err(call_failed("GetVpcLinks"))?;
            Ok((page.items().to_vec(), page.next_token().map(str::to_string)))
        })
        .await?;
        let mut out = Vec::new();
        for l in &links {
            let (Some((id, tags)), Some(link_id)) = (owned(ctx, l.tags()), l.vpc_link_id()) else { continue };
            let fields = VpcLinkFields {
                name: l.name().unwrap_or_default().to_string(),
                subnets: l.subnet_ids().to_vec().into(),
                security_groups: l.security_group_ids().to_vec().into(),
                tags,
            };
            let mut o = Observed::new(self.name(), id, link_id.to_string(), untyped(&fields));
            o.created = l.created_date().map(|t| t.secs());
            o.status = status_of(l.vpc_link_status(), l.vpc_link_status_message());
            out.push(o);
        }
        Ok(out)
    }

    /// CreateVpcLink (paced to its quota), tagged in the request, then waits for AVAILABLE
    /// (minutes on AWS).
    async fn create(&self, ctx: &Ctx, _id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: VpcLinkFields = typed(self.name(), fields)?;
        let slot = ctx.pace("apigateway:CreateVpcLink", CREATE_QUOTA).await?;
        let out = client(ctx)
            .create_vpc_link()
            .name(&f.name)
            .set_subnet_ids(Some(f.subnets.ids()))
            .set_security_group_ids(Some(f.security_groups.ids()))
            .set_tags(Some(f.tags.clone().into_iter().collect()))
            .send()
            .await;
        drop(slot);
        let out = out.map_err(call_failed("CreateVpcLink"))?;
        let link_id = out.vpc_link_id().ok_or_else(|| anyhow::anyhow!("CreateVpcLink returned no id"))?.to_string();
        if status_of(out.vpc_link_status(), None) != Status::Ready {
            let what = format!("VPC link {link_id} to become AVAILABLE (usually a few minutes)");
            eprintln!("  waiting for {what}");
            wait::until(ctx, &what, || async {
                let Some(l) = read(ctx, &link_id).await? else { return Ok(None) };
                match status_of(l.vpc_link_status(), l.vpc_link_status_message()) {
                    Status::Ready => Ok(Some(())),
                    Status::Pending(_) => Ok(None),
                    Status::Failed(why) | Status::Degraded(why) | Status::Leaving(why) => {
                        Err(anyhow::anyhow!("{why}; check the subnets and security group, then apply again"))
                    }
                }
            })
            .await?;
        }
        Ok(Identity::id(link_id))
    }

    /// UpdateVpcLink (the name) and tags; subnets and security groups replace.
    async fn update(&self, ctx: &Ctx, live: &Observed, fields: &Fields, changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        let f: VpcLinkFields = typed(self.name(), fields)?;
        if crate::engine::fields::changed(changes, "name") {
            client(ctx)
                .update_vpc_link()
                .vpc_link_id(&live.physical_id)
                .name(&f.name)
                .send()
                .await
                .map_err(call_failed("UpdateVpcLink"))?;
        }
        apply_tags(ctx, &arn(ctx, &format!("/vpclinks/{}", live.physical_id)), &TagDelta::of(changes)).await?;
        Ok(None)
    }

    /// DeleteVpcLink (paced to its quota), then waits until it is gone. An integration still
    /// using it answers ConflictException: the engine retries (the integration is repointed or
    /// deleted first).
    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        let link = &live.physical_id;
        let slot = ctx.pace("apigateway:DeleteVpcLink", DELETE_QUOTA).await?;
        let deleted = client(ctx).delete_vpc_link().vpc_link_id(link).send().await;
        drop(slot);
        deleted.map_err(call_failed("DeleteVpcLink"))?;
        // DELETING until its network interfaces are released: what it sits in (the
        // security group, the subnets) cannot go before that.
        wait::until(ctx, &format!("VPC link {link} to be deleted"), || async { Ok(read(ctx, link).await?.is_none().then_some(())) }).await
    }

    fn iam(&self, _stack: &str) -> IamActions {
        super::tagged_iam()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_link_status() {
        assert_eq!(status_of(Some(&VpcLinkStatus::Available), None), Status::Ready);
        assert_eq!(status_of(Some(&VpcLinkStatus::Inactive), None), Status::Ready, "re-provisions on first use");
        assert_eq!(status_of(Some(&VpcLinkStatus::Deleting), None), Status::Leaving("VPC link DELETING".into()), "waited for, not hidden");
        assert_eq!(status_of(Some(&VpcLinkStatus::Pending), Some("")), Status::Pending("VPC link PENDING".into()));
        assert_eq!(
            status_of(Some(&VpcLinkStatus::Failed), Some("subnet not found")),
            Status::Failed("VPC link FAILED: subnet not found".into())
        );
    }
}
