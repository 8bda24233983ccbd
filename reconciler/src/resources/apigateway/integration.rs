//! `apigateway:integration` — the HTTP API's private integration: `HTTP_PROXY` over the VPC
//! link to the Cloud Map service (API Gateway discovers the tasks' IPs and ports through its
//! SRV records), payload format 1.0, a timeout under API Gateway's 30 s limit. A child of the
//! API: found under the stack's API; its description carries its logical id. A deleted VPC
//! link or Cloud Map service leaves it pointing at the old id: `connection_id` and `uri` then
//! drift and are repointed with UpdateIntegration.
//!
//! `request_parameters` is the integration's parameter mapping: the stack uses it to overwrite
//! one header with the caller's address as API Gateway saw it (`$context.identity.sourceIp`),
//! the only client address the service trusts for its allowlist (a caller can write any
//! `X-Forwarded-For`; an overwritten header it cannot).

use super::{api_of, call_failed, child, children, client, pages};
use crate::engine::fields::{typed, untyped};
use crate::engine::Ref;
use crate::engine::{Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed};
use aws_sdk_apigatewayv2::types::{ConnectionType, IntegrationType};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub struct Integration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationFields {
    /// The parent API's id.
    pub api: Ref,
    /// `HTTP_PROXY`.
    pub integration_type: String,
    /// `ANY`: the method is passed through.
    pub method: String,
    /// `VPC_LINK`.
    pub connection_type: String,
    /// The VPC link's id.
    pub connection_id: Ref,
    /// The Cloud Map service's ARN.
    pub uri: Ref,
    /// `1.0`.
    pub payload_format: String,
    /// At most 29 000 ms (API Gateway cuts HTTP APIs off at 30 s).
    pub timeout_ms: u64,
    /// Parameter mapping (`overwrite:header.NAME` → value). Absent in plans saved before it.
    #[serde(default)]
    pub request_parameters: BTreeMap<String, String>,
}

/// What marks an integration's description: the logical id follows.
const MARK: &str = "reconciler:";

/// The logical id an integration's description records (`None`: made by hand).
pub fn logical_id(description: Option<&str>) -> Option<&str> {
    description?.strip_prefix(MARK).filter(|s| !s.is_empty())
}

/// Observed fields of an integration (API Gateway's defaults where it reports nothing: a
/// payload format of 1.0 and a 30 s timeout).
pub fn integration_fields(api_id: &str, i: &aws_sdk_apigatewayv2::types::Integration) -> IntegrationFields {
    IntegrationFields {
        api: api_id.to_string().into(),
        integration_type: i.integration_type().map(|t| t.as_str().to_string()).unwrap_or_default(),
        method: i.integration_method().unwrap_or_default().to_string(),
        connection_type: i.connection_type().map(|t| t.as_str().to_string()).unwrap_or_else(|| "INTERNET".into()),
        connection_id: i.connection_id().unwrap_or_default().to_string().into(),
        uri: i.integration_uri().unwrap_or_default().to_string().into(),
        payload_format: i.payload_format_version().unwrap_or("1.0").to_string(),
        timeout_ms: i.timeout_in_millis().unwrap_or(30_000).max(0) as u64,
        request_parameters: i.request_parameters().map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default(),
    }
}

async fn list(ctx: &Ctx, api_id: String) -> anyhow::Result<Vec<aws_sdk_apigatewayv2::types::Integration>> {
    pages(|token| {
        let api_id = api_id.clone();
        async move {
            let page =
                client(ctx).get_integrations().api_id(api_id).set_next_token(token).send().await.map_err(call_failed("GetIntegrations"))?;
            Ok((page.items().to_vec(), page.next_token().map(str::to_string)))
        }
    })
    .await
}

/// The mapping UpdateIntegration is sent: every wanted key, and an empty value for each key
/// to remove (API Gateway drops a mapping whose value is empty).
fn mapping_update(live: &BTreeMap<String, String>, wanted: &BTreeMap<String, String>) -> std::collections::HashMap<String, String> {
    let mut m: std::collections::HashMap<String, String> = wanted.clone().into_iter().collect();
    for k in live.keys().filter(|k| !wanted.contains_key(*k)) {
        m.insert(k.clone(), String::new());
    }
    m
}

impl Kind for Integration {
    fn name(&self) -> &'static str {
        "apigateway:integration"
    }

    type Typed = IntegrationFields;

    fn replace_on(&self) -> &'static [&'static str] {
        &["api", "integration_type"]
    }

    /// GetApis, then GetIntegrations per API the stack owns.
    async fn observe(&self, ctx: &Ctx, _wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let found = children(ctx, |api_id| list(ctx, api_id)).await?;
        Ok(found
            .iter()
            .filter_map(|(api_id, i)| {
                let integration_id = i.integration_id()?;
                let id = logical_id(i.description()).map(str::to_string).unwrap_or_else(|| format!("integration {integration_id}"));
                Some(child(self.name(), id, integration_id, api_id, untyped(&integration_fields(api_id, i))))
            })
            .collect())
    }

    async fn create(&self, ctx: &Ctx, id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: IntegrationFields = typed(self.name(), fields)?;
        let out = client(ctx)
            .create_integration()
            .api_id(&f.api)
            .description(format!("{MARK}{id}"))
            .integration_type(IntegrationType::from(f.integration_type.as_str()))
            .integration_method(&f.method)
            .connection_type(ConnectionType::from(f.connection_type.as_str()))
            .connection_id(&f.connection_id)
            .integration_uri(&f.uri)
            .payload_format_version(&f.payload_format)
            .timeout_in_millis(f.timeout_ms as i32)
            .set_request_parameters((!f.request_parameters.is_empty()).then(|| f.request_parameters.clone().into_iter().collect()))
            .send()
            .await
            .map_err(call_failed("CreateIntegration"))?;
        let integration_id = out.integration_id().ok_or_else(|| anyhow::anyhow!("CreateIntegration returned no id"))?;
        Ok(Identity::id(integration_id).with("api", f.api))
    }

    /// UpdateIntegration with the fields that changed (repointing a replaced VPC link or Cloud
    /// Map service is one call).
    async fn update(&self, ctx: &Ctx, live: &Observed, fields: &Fields, changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        let f: IntegrationFields = typed(self.name(), fields)?;
        let has = |name: &str| crate::engine::fields::changed(changes, name);
        let mut req = client(ctx).update_integration().api_id(api_of(live)?).integration_id(&live.physical_id);
        if has("method") {
            req = req.integration_method(&f.method);
        }
        if has("connection_type") || has("connection_id") {
            req = req.connection_type(ConnectionType::from(f.connection_type.as_str())).connection_id(&f.connection_id);
        }
        if has("uri") {
            req = req.integration_uri(&f.uri);
        }
        if has("payload_format") {
            req = req.payload_format_version(&f.payload_format);
        }
        if has("timeout_ms") {
            req = req.timeout_in_millis(f.timeout_ms as i32);
        }
        if has("request_parameters") {
            let live_fields: IntegrationFields = typed(self.name(), &live.fields)?;
            req = req.set_request_parameters(Some(mapping_update(&live_fields.request_parameters, &f.request_parameters)));
        }
        req.send().await.map_err(call_failed("UpdateIntegration"))?;
        Ok(None)
    }

    /// DeleteIntegration. Routes still targeting it answer ConflictException: the engine
    /// retries (routes go first: they depend on it).
    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        client(ctx)
            .delete_integration()
            .api_id(api_of(live)?)
            .integration_id(&live.physical_id)
            .send()
            .await
            .map_err(call_failed("DeleteIntegration"))?;
        Ok(())
    }

    fn iam(&self, _stack: &str) -> IamActions {
        super::api_child_iam()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_apigatewayv2::types::Integration as Live;

    #[test]
    fn the_description_names_the_logical_id() {
        assert_eq!(logical_id(Some("reconciler:integration")), Some("integration"));
        assert_eq!(logical_id(Some("made by hand")), None);
        assert_eq!(logical_id(Some("reconciler:")), None);
        assert_eq!(logical_id(None), None);
    }

    #[test]
    fn observed_fields_fill_api_gateway_defaults() {
        let i = Live::builder()
            .integration_id("i1")
            .integration_type(IntegrationType::HttpProxy)
            .integration_method("ANY")
            .connection_type(ConnectionType::VpcLink)
            .connection_id("vl1")
            .integration_uri("arn:aws:servicediscovery:us-east-1:1:service/srv-1")
            .build();
        let f = integration_fields("a1", &i);
        assert_eq!(f.payload_format, "1.0");
        assert_eq!(f.timeout_ms, 30_000);
        assert_eq!(f.connection_type, "VPC_LINK");
        assert_eq!(f.integration_type, "HTTP_PROXY");
        assert_eq!(f.api, "a1");
        assert!(f.request_parameters.is_empty());
    }

    #[test]
    fn a_removed_mapping_is_sent_empty_and_kept_ones_with_their_value() {
        let m = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>();
        let live = m(&[("overwrite:header.a", "1"), ("overwrite:header.old", "x")]);
        let wanted = m(&[("overwrite:header.a", "2")]);
        let sent: BTreeMap<String, String> = mapping_update(&live, &wanted).into_iter().collect();
        assert_eq!(sent, m(&[("overwrite:header.a", "2"), ("overwrite:header.old", "")]));
    }
}
