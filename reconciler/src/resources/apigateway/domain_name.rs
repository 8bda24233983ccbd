//! `apigateway:domain-name` — the optional custom domain (regional endpoint, TLS 1.2) the
//! webhook URL uses instead of `execute-api`. Names are unique in a region: found by name,
//! owned by its tags (a same-named domain the stack does not own is refused, never adopted).
//! Its `target` and `hosted_zone_id` attributes are the DNS record the user creates.
//! The certificate is rotated in place (UpdateDomainName); the name replaces (delete first).

use super::{all_pages_of_domains, apply_tags, call_failed, client, owned};
use crate::engine::fields::{typed, untyped};
use crate::engine::ownership::{not_owned, TagDelta, TagMap};
use crate::engine::{Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed};
use aws_sdk_apigatewayv2::types::{DomainNameConfiguration, EndpointType, SecurityPolicy};
use serde::{Deserialize, Serialize};

pub struct DomainName;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainNameFields {
    pub name: String,
    pub certificate_arn: String,
    pub tags: TagMap,
}

fn identity(d: &aws_sdk_apigatewayv2::types::DomainName) -> Identity {
    let name = d.domain_name().unwrap_or_default();
    let mut id = Identity::id(name);
    if let Some(c) = d.domain_name_configurations().first() {
        if let Some(t) = c.api_gateway_domain_name() {
            id = id.with("target", t);
        }
        if let Some(z) = c.hosted_zone_id() {
            id = id.with("hosted_zone_id", z);
        }
    }
    id
}

fn configuration(f: &DomainNameFields) -> DomainNameConfiguration {
    DomainNameConfiguration::builder()
        .certificate_arn(&f.certificate_arn)
        .endpoint_type(EndpointType::Regional)
        .security_policy(SecurityPolicy::Tls12)
        .build()
}

impl Kind for DomainName {
    fn name(&self) -> &'static str {
        "apigateway:domain-name"
    }

    type Typed = DomainNameFields;

    fn replace_on(&self) -> &'static [&'static str] {
        &["name"]
    }

    /// GetDomainNames (tags included).
    async fn observe(&self, ctx: &Ctx, wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let wanted: Vec<DomainNameFields> = crate::engine::fields::wanted(self.name(), wanted)?;
        let mut out = Vec::new();
        for d in all_pages_of_domains(ctx).await?.iter() {
            let Some(name) = d.domain_name() else { continue };
            let Some((id, tags)) = owned(ctx, d.tags()) else {
                if wanted.iter().any(|w| w.name == name) {
                    let tags = d.tags().map(|t| t.clone().into_iter().collect()).unwrap_or_default();
                    return Err(not_owned("API Gateway domain name", name, &ctx.settings.stack, &tags));
                }
                continue;
            };
            let fields = DomainNameFields {
                name: name.to_string(),
                certificate_arn: d.domain_name_configurations().first().and_then(|c| c.certificate_arn()).unwrap_or_default().to_string(),
                tags,
            };
            out.push(Observed { attrs: identity(d).attrs, ..Observed::new(self.name(), id, name.to_string(), untyped(&fields)) });
        }
        Ok(out)
    }

    async fn create(&self, ctx: &Ctx, _id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: DomainNameFields = typed(self.name(), fields)?;
        let out = client(ctx)
            .create_domain_name()
            .domain_name(&f.name)
            .domain_name_configurations(configuration(&f))
            .set_tags(Some(f.tags.clone().into_iter().collect()))
            .send()
            .await
            .map_err(call_failed("CreateDomainName"))?;
        let d = aws_sdk_apigatewayv2::types::DomainName::builder()
            .domain_name(out.domain_name().unwrap_or(&f.name))
            .set_domain_name_configurations(Some(out.domain_name_configurations().to_vec()))
            .build();
        Ok(identity(&d))
    }

    /// UpdateDomainName (a new certificate) and tags.
    async fn update(&self, ctx: &Ctx, live: &Observed, fields: &Fields, changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        let f: DomainNameFields = typed(self.name(), fields)?;
        if crate::engine::fields::changed(changes, "certificate_arn") {
            client(ctx)
                .update_domain_name()
                .domain_name(&live.physical_id)
                .domain_name_configurations(configuration(&f))
                .send()
                .await
                .map_err(call_failed("UpdateDomainName"))?;
        }
        let arn = super::arn(ctx, &format!("/domainnames/{}", live.physical_id));
        apply_tags(ctx, &arn, &TagDelta::of(changes)).await?;
        Ok(None)
    }

    /// DeleteDomainName (its API mappings go first: they depend on it).
    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        client(ctx).delete_domain_name().domain_name(&live.physical_id).send().await.map_err(call_failed("DeleteDomainName"))?;
        Ok(())
    }

    fn iam(&self, _stack: &str) -> IamActions {
        super::tagged_iam()
    }
}
