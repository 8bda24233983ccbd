//! `apigateway:route` — `ANY /` and `ANY /{proxy+}`, each targeting the integration. A child
//! of the API, identified by its route key (an API has one route per key; an emulator that
//! accepts a second one shows it as a duplicate, which apply removes). A route the spec does
//! not want in the stack's API is pruned.

use super::{api_of, call_failed, child, child_id, children, client, pages};
use crate::engine::fields::{typed, untyped, wanted_keys};
use crate::engine::Ref;
use crate::engine::{Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed};
use serde::{Deserialize, Serialize};

pub struct Route;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFields {
    pub api: Ref,
    /// `ANY /{proxy+}`.
    pub route_key: String,
    /// The integration's id (the target is `integrations/<id>`).
    pub integration: Ref,
    /// `NONE`: the service verifies each webhook's signature itself.
    pub authorization: String,
}

/// The integration id a route target names, or the raw target when it names none.
pub fn target_integration(target: Option<&str>) -> String {
    let t = target.unwrap_or_default();
    t.strip_prefix("integrations/").unwrap_or(t).to_string()
}

fn target(f: &RouteFields) -> String {
    format!("integrations/{}", f.integration)
}

async fn list(ctx: &Ctx, api_id: String) -> anyhow::Result<Vec<aws_sdk_apigatewayv2::types::Route>> {
    pages(|token| {
        let api_id = api_id.clone();
        async move {
            let page = client(ctx).get_routes().api_id(api_id).set_next_token(token).send().await.map_err(call_failed("GetRoutes"))?;
            Ok((page.items().to_vec(), page.next_token().map(str::to_string)))
        }
    })
    .await
}

impl Kind for Route {
    fn name(&self) -> &'static str {
        "apigateway:route"
    }

    type Typed = RouteFields;

    fn replace_on(&self) -> &'static [&'static str] {
        &["api", "route_key"]
    }

    /// GetApis, then GetRoutes per API the stack owns.
    async fn observe(&self, ctx: &Ctx, wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let keys = wanted_keys(self.name(), wanted, |f: RouteFields| f.route_key)?;
        let found = children(ctx, |api_id| list(ctx, api_id)).await?;
        Ok(found
            .iter()
            .filter_map(|(api_id, r)| {
                let (route_id, key) = (r.route_id()?, r.route_key()?);
                let fields = RouteFields {
                    api: api_id.clone().into(),
                    route_key: key.to_string(),
                    integration: target_integration(r.target()).into(),
                    authorization: r.authorization_type().map(|a| a.as_str().to_string()).unwrap_or_else(|| "NONE".into()),
                };
                Some(child(self.name(), child_id(&keys, key, "route"), route_id, api_id, untyped(&fields)))
            })
            .collect())
    }

    async fn create(&self, ctx: &Ctx, _id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: RouteFields = typed(self.name(), fields)?;
        let out = client(ctx)
            .create_route()
            .api_id(&f.api)
            .route_key(&f.route_key)
            .target(target(&f))
            .authorization_type(aws_sdk_apigatewayv2::types::AuthorizationType::from(f.authorization.as_str()))
            .send()
            .await
            .map_err(call_failed("CreateRoute"))?;
        let route_id = out.route_id().ok_or_else(|| anyhow::anyhow!("CreateRoute returned no id"))?;
        Ok(Identity::id(route_id).with("api", f.api))
    }

    /// UpdateRoute: the target and the authorization type.
    async fn update(&self, ctx: &Ctx, live: &Observed, fields: &Fields, _changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        let f: RouteFields = typed(self.name(), fields)?;
        client(ctx)
            .update_route()
            .api_id(api_of(live)?)
            .route_id(&live.physical_id)
            .target(target(&f))
            .authorization_type(aws_sdk_apigatewayv2::types::AuthorizationType::from(f.authorization.as_str()))
            .send()
            .await
            .map_err(call_failed("UpdateRoute"))?;
        Ok(None)
    }

    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        client(ctx).delete_route().api_id(api_of(live)?).route_id(&live.physical_id).send().await.map_err(call_failed("DeleteRoute"))?;
        Ok(())
    }

    fn iam(&self, _stack: &str) -> IamActions {
        super::api_child_iam()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_the_integration() {
        assert_eq!(target_integration(Some("integrations/abc")), "abc");
        assert_eq!(target_integration(Some("something-else")), "something-else", "shown as drift, not hidden");
        assert_eq!(target_integration(None), "");
        let f = RouteFields { api: "a".into(), route_key: "ANY /".into(), integration: "i1".into(), authorization: "NONE".into() };
        assert_eq!(target(&f), "integrations/i1");
    }
}
