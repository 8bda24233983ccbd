//! `apigateway:api-mapping` — maps the custom domain's root to the API's `$default` stage.
//! A child of the domain name: found under the domain names the stack owns. Every field is
//! part of its identity, so a change is a replacement (delete first: one mapping per key).

use super::{all_pages_of_domains, call_failed, client, owned, pages};
use crate::engine::fields::{typed, untyped};
use crate::engine::Ref;
use crate::engine::{Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed};
use serde::{Deserialize, Serialize};

pub struct ApiMapping;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiMappingFields {
    /// The domain name (the parent's physical id).
    pub domain: Ref,
    pub api: Ref,
    pub stage: Ref,
    /// The base path; empty: the domain's root.
    pub key: String,
}

impl Kind for ApiMapping {
    fn name(&self) -> &'static str {
        "apigateway:api-mapping"
    }

    type Typed = ApiMappingFields;

    fn replace_on(&self) -> &'static [&'static str] {
        &["domain", "api", "stage", "key"]
    }

    /// GetDomainNames, then GetApiMappings per domain the stack owns. A mapping whose key a
    /// wanted node names is that node; another one on the stack's domain is pruned.
    async fn observe(&self, ctx: &Ctx, wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let keys = crate::engine::fields::wanted_keys(self.name(), wanted, |f: ApiMappingFields| f.key)?;
        let mut out = Vec::new();
        for d in all_pages_of_domains(ctx).await?.iter() {
            let (Some(domain), Some(_)) = (d.domain_name(), owned(ctx, d.tags())) else { continue };
            let mappings = pages(|token| async move {
                let page = client(ctx)
                    .get_api_mappings()
                    .domain_name(domain)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(call_failed("GetApiMappings"))?;
                Ok((page.items().to_vec(), page.next_token().map(str::to_string)))
            })
            .await?;
            for m in mappings {
                let Some(mapping_id) = m.api_mapping_id() else { continue };
                let key = m.api_mapping_key().unwrap_or_default();
                let id = super::child_id(&keys, key, &format!("api mapping {domain}/"));
                let fields = ApiMappingFields {
                    domain: domain.to_string().into(),
                    api: m.api_id().unwrap_or_default().to_string().into(),
                    stage: m.stage().unwrap_or_default().to_string().into(),
                    key: key.to_string(),
                };
                let mut o = Observed::new(self.name(), id, mapping_id.to_string(), untyped(&fields));
                o.attrs.insert("domain".into(), domain.to_string());
                out.push(o);
            }
        }
        Ok(out)
    }

    async fn create(&self, ctx: &Ctx, _id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: ApiMappingFields = typed(self.name(), fields)?;
        let mut req = client(ctx).create_api_mapping().domain_name(&f.domain).api_id(&f.api).stage(&f.stage);
        if !f.key.is_empty() {
            req = req.api_mapping_key(&f.key);
        }
        let out = req.send().await.map_err(call_failed("CreateApiMapping"))?;
        let mapping_id = out.api_mapping_id().ok_or_else(|| anyhow::anyhow!("CreateApiMapping returned no id"))?;
        Ok(Identity::id(mapping_id).with("domain", f.domain))
    }

    /// Nothing updates in place (every field replaces).
    async fn update(&self, _ctx: &Ctx, _live: &Observed, _fields: &Fields, _changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        Ok(None)
    }

    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        let domain = live
            .attrs
            .get("domain")
            .ok_or_else(|| anyhow::anyhow!("internal error: API mapping {} observed without its domain", live.physical_id))?;
        client(ctx)
            .delete_api_mapping()
            .domain_name(domain)
            .api_mapping_id(&live.physical_id)
            .send()
            .await
            .map_err(call_failed("DeleteApiMapping"))?;
        Ok(())
    }

    fn iam(&self, _stack: &str) -> IamActions {
        super::domain_child_iam()
    }
}
