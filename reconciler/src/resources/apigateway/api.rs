//! `apigateway:api` — the HTTP API, owned by its tags. Its `endpoint` attribute
//! (`https://<id>.execute-api.<region>.amazonaws.com`) is what `apply` and `output` print.
//! The protocol is fixed at creation (a replacement); the name is updated in place. Deleting
//! the API deletes its integrations, routes and stages with it.

use super::{all_apis, apply_tags, arn, call_failed, client, owned};
use crate::engine::fields::{typed, untyped};
use crate::engine::ownership::{TagDelta, TagMap};
use crate::engine::{Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed};
use aws_sdk_apigatewayv2::types::ProtocolType;
use serde::{Deserialize, Serialize};

pub struct HttpApi;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiFields {
    pub name: String,
    /// `HTTP` (the webhook needs no WebSocket API).
    pub protocol: String,
    pub tags: TagMap,
}

fn identity(api_id: &str, endpoint: Option<&str>) -> Identity {
    let mut id = Identity::id(api_id);
    if let Some(e) = endpoint {
        id = id.with("endpoint", e);
    }
    id
}

impl Kind for HttpApi {
    fn name(&self) -> &'static str {
        "apigateway:api"
    }

    type Typed = ApiFields;

    fn replace_on(&self) -> &'static [&'static str] {
        &["protocol"]
    }

    /// GetApis (tags included), page by page.
    async fn observe(&self, ctx: &Ctx, _wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let mut out = Vec::new();
        for a in all_apis(ctx).await?.iter() {
            let (Some((id, tags)), Some(api_id)) = (owned(ctx, a.tags()), a.api_id()) else { continue };
            let fields = ApiFields {
                name: a.name().unwrap_or_default().to_string(),
                protocol: a.protocol_type().map(|p| p.as_str().to_string()).unwrap_or_default(),
                tags,
            };
            let mut o = Observed::new(self.name(), id, api_id.to_string(), untyped(&fields));
            o.attrs = identity(api_id, a.api_endpoint()).attrs;
            o.created = a.created_date().map(|t| t.secs());
            out.push(o);
        }
        Ok(out)
    }

    async fn create(&self, ctx: &Ctx, _id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: ApiFields = typed(self.name(), fields)?;
        let out = client(ctx)
            .create_api()
            .name(&f.name)
            .protocol_type(ProtocolType::from(f.protocol.as_str()))
            .set_tags(Some(f.tags.clone().into_iter().collect()))
            .send()
            .await
            .map_err(call_failed("CreateApi"))?;
        let api_id = out.api_id().ok_or_else(|| anyhow::anyhow!("CreateApi returned no id"))?;
        Ok(identity(api_id, out.api_endpoint()))
    }

    async fn update(&self, ctx: &Ctx, live: &Observed, fields: &Fields, changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        let f: ApiFields = typed(self.name(), fields)?;
        if crate::engine::fields::changed(changes, "name") {
            client(ctx).update_api().api_id(&live.physical_id).name(&f.name).send().await.map_err(call_failed("UpdateApi"))?;
        }
        apply_tags(ctx, &arn(ctx, &format!("/apis/{}", live.physical_id)), &TagDelta::of(changes)).await?;
        Ok(None)
    }

    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        client(ctx).delete_api().api_id(&live.physical_id).send().await.map_err(call_failed("DeleteApi"))?;
        Ok(())
    }

    fn iam(&self, _stack: &str) -> IamActions {
        super::tagged_iam()
    }
}
