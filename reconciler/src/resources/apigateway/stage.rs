//! `apigateway:stage` — the `$default` stage: auto-deploy, access logs to the API log group,
//! default route throttling. A child of the API, identified by its name.
//!
//! Converged with UpdateStage (and DeleteAccessLogSettings when the spec drops access logs).
//! An endpoint that does not implement UpdateStage (moto) gets the same settings by deleting
//! and recreating the stage, and says so: on AWS that path is never taken.

use super::{api_of, call_failed, child, child_id, children, client, not_implemented, pages};
use crate::engine::fields::{typed, untyped, wanted_keys};
use crate::engine::Ref;
use crate::engine::{Ctx, Desired, FieldChange, Fields, IamActions, Identity, Kind, Observed};
use aws_sdk_apigatewayv2::types::{AccessLogSettings, RouteSettings};
use serde::{Deserialize, Serialize};

pub struct Stage;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageFields {
    pub api: Ref,
    /// `$default`.
    pub name: String,
    pub auto_deploy: bool,
    /// The access log group's ARN (without `:*`); `None`: no access logs.
    pub access_log_destination: Option<Ref>,
    /// The access log line: JSON with `$context` variables.
    pub access_log_format: Option<String>,
    /// Default route throttling: steady requests per second.
    pub throttling_rate: Option<f64>,
    /// Default route throttling: burst.
    pub throttling_burst: Option<u64>,
}

/// Observed fields of a stage.
pub fn stage_fields(api_id: &str, s: &aws_sdk_apigatewayv2::types::Stage) -> StageFields {
    let logs = s.access_log_settings();
    let route = s.default_route_settings();
    StageFields {
        api: api_id.to_string().into(),
        name: s.stage_name().unwrap_or_default().to_string(),
        auto_deploy: s.auto_deploy().unwrap_or(false),
        access_log_destination: logs.and_then(|l| l.destination_arn()).map(str::to_string).map(Into::into),
        access_log_format: logs.and_then(|l| l.format()).map(str::to_string),
        throttling_rate: route.and_then(|r| r.throttling_rate_limit()),
        throttling_burst: route.and_then(|r| r.throttling_burst_limit()).map(|b| b.max(0) as u64),
    }
}

/// The settings that create and update send: access logs (if any) and the default route's
/// throttling (if any).
pub fn settings(f: &StageFields) -> (Option<AccessLogSettings>, RouteSettings) {
    let logs = f
        .access_log_destination
        .as_ref()
        .map(|d| AccessLogSettings::builder().destination_arn(d).set_format(f.access_log_format.clone()).build());
    let route = RouteSettings::builder()
        .set_throttling_rate_limit(f.throttling_rate)
        .set_throttling_burst_limit(f.throttling_burst.map(|b| b.min(i32::MAX as u64) as i32))
        .build();
    (logs, route)
}

async fn list(ctx: &Ctx, api_id: String) -> anyhow::Result<Vec<aws_sdk_apigatewayv2::types::Stage>> {
    pages(|token| {
        let api_id = api_id.clone();
        async move {
            let page = client(ctx).get_stages().api_id(api_id).set_next_token(token).send().await.map_err(call_failed("GetStages"))?;
            Ok((page.items().to_vec(), page.next_token().map(str::to_string)))
        }
    })
    .await
}

async fn create_stage(ctx: &Ctx, f: &StageFields) -> anyhow::Result<()> {
    let (logs, route) = settings(f);
    client(ctx)
        .create_stage()
        .api_id(&f.api)
        .stage_name(&f.name)
        .auto_deploy(f.auto_deploy)
        .set_access_log_settings(logs)
        .default_route_settings(route)
        .send()
        .await
        .map_err(call_failed("CreateStage"))?;
    Ok(())
}

async fn delete_stage(ctx: &Ctx, api_id: &str, name: &str) -> anyhow::Result<()> {
    client(ctx).delete_stage().api_id(api_id).stage_name(name).send().await.map_err(call_failed("DeleteStage"))?;
    Ok(())
}

impl Kind for Stage {
    fn name(&self) -> &'static str {
        "apigateway:stage"
    }

    type Typed = StageFields;

    fn replace_on(&self) -> &'static [&'static str] {
        &["api", "name"]
    }

    /// GetApis, then GetStages per API the stack owns.
    async fn observe(&self, ctx: &Ctx, wanted: &[&Desired]) -> anyhow::Result<Vec<Observed>> {
        let keys = wanted_keys(self.name(), wanted, |f: StageFields| f.name)?;
        let found = children(ctx, |api_id| list(ctx, api_id)).await?;
        Ok(found
            .iter()
            .filter_map(|(api_id, s)| {
                let name = s.stage_name()?;
                // A stage has no id of its own: its name is unique within the API.
                Some(child(self.name(), child_id(&keys, name, "stage"), name, api_id, untyped(&stage_fields(api_id, s))))
            })
            .collect())
    }

    async fn create(&self, ctx: &Ctx, _id: &str, fields: &Fields) -> anyhow::Result<Identity> {
        let f: StageFields = typed(self.name(), fields)?;
        create_stage(ctx, &f).await?;
        Ok(Identity::id(&f.name).with("api", &f.api))
    }

    /// UpdateStage with the whole configuration; DeleteAccessLogSettings when access logs are
    /// no longer wanted. Where the endpoint does not implement UpdateStage: delete and create.
    async fn update(&self, ctx: &Ctx, live: &Observed, fields: &Fields, _changes: &[FieldChange]) -> anyhow::Result<Option<Identity>> {
        let f: StageFields = typed(self.name(), fields)?;
        let api_id = api_of(live)?;
        let (logs, route) = settings(&f);
        let drop_logs = logs.is_none() && live.fields.get("access_log_destination").is_some_and(|v| !v.is_null());
        let updated = client(ctx)
            .update_stage()
            .api_id(api_id)
            .stage_name(&live.physical_id)
            .auto_deploy(f.auto_deploy)
            .set_access_log_settings(logs)
            .default_route_settings(route)
            .send()
            .await
            .map_err(call_failed("UpdateStage"));
        match updated {
            Ok(_) => {}
            Err(e) if not_implemented(&e) => {
                eprintln!(
                    "  note: {e}; recreating stage {} of API {api_id} with the wanted settings instead (requests may fail for a moment)",
                    live.physical_id
                );
                delete_stage(ctx, api_id, &live.physical_id).await?;
                create_stage(ctx, &f).await?;
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        if drop_logs {
            client(ctx)
                .delete_access_log_settings()
                .api_id(api_id)
                .stage_name(&live.physical_id)
                .send()
                .await
                .map_err(call_failed("DeleteAccessLogSettings"))?;
        }
        Ok(None)
    }

    async fn delete(&self, ctx: &Ctx, live: &Observed) -> anyhow::Result<()> {
        delete_stage(ctx, api_of(live)?, &live.physical_id).await
    }

    fn iam(&self, _stack: &str) -> IamActions {
        let mut iam = super::api_child_iam();
        // Access logging to CloudWatch Logs is a vended log delivery made with the caller's
        // permissions; these take no resource ARN (explained in the README).
        iam.extra.push(serde_json::json!({
                "Sid": "ApiGatewayAccessLogDelivery",
                "Effect": "Allow",
                "Action": [
                    "logs:CreateLogDelivery",
                    "logs:DeleteLogDelivery",
                    "logs:DescribeResourcePolicies",
                    "logs:GetLogDelivery",
                    "logs:ListLogDeliveries",
                    "logs:PutResourcePolicy",
                    "logs:UpdateLogDelivery",
                ],
                "Resource": "*",
        }));
        iam
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_apigatewayv2::types::Stage as Live;

    fn wanted() -> StageFields {
        StageFields {
            api: "a1".into(),
            name: "$default".into(),
            auto_deploy: true,
            access_log_destination: Some("arn:aws:logs:us-east-1:1:log-group:/aws/apigateway/s".into()),
            access_log_format: Some(r#"{"requestId":"$context.requestId"}"#.into()),
            throttling_rate: Some(100.0),
            throttling_burst: Some(200),
        }
    }

    /// The real update path (UpdateStage) sends exactly what observe reads back: what the
    /// update sends, read as a stage, equals the wanted fields.
    #[test]
    fn update_settings_round_trip_through_a_stage() {
        let f = wanted();
        let (logs, route) = settings(&f);
        let live =
            Live::builder().stage_name("$default").auto_deploy(true).set_access_log_settings(logs).default_route_settings(route).build();
        assert_eq!(stage_fields("a1", &live), f);
    }

    #[test]
    fn no_access_logs_and_no_throttling() {
        let f = StageFields {
            access_log_destination: None,
            access_log_format: None,
            throttling_rate: None,
            throttling_burst: None,
            ..wanted()
        };
        let (logs, route) = settings(&f);
        assert!(logs.is_none());
        assert_eq!(route.throttling_rate_limit(), None);
        let live = Live::builder().stage_name("$default").auto_deploy(true).build();
        assert_eq!(stage_fields("a1", &live), f);
    }
}
