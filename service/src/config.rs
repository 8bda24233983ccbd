//! Configuration: environment variables, plus the Benchling secret from Secrets Manager
//! (by name or ARN, never inline). Secret values never reach logs or responses: `Debug`
//! masks them.

use serde_json::Value;
use std::net::Ipv4Addr;

#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    /// The address the server listens on (`BIND_ADDR`): `0.0.0.0` by default, as a container
    /// needs; `127.0.0.1` for local runs and tests that must not be reachable from outside.
    pub bind_addr: std::net::IpAddr,
    pub app_env: String,
    /// Secrets Manager name or ARN of the Benchling secret (`BENCHLING_SECRET`).
    pub secret_id: Option<String>,
    /// The service's own SQS FIFO queue (`QUEUE_URL`).
    pub queue_url: Option<String>,
    pub packager_sqs_url: Option<String>,
    pub quilt_web_host: Option<String>,
    pub athena_user_database: Option<String>,
    /// Overrides `https://apps.benchling.com/api/v1/apps/{app_definition_id}/jwks`.
    pub jwks_url: Option<String>,
    /// Overrides `https://{tenant}.benchling.com` (tests run a fake Benchling).
    pub benchling_base_url: Option<String>,
    /// Optional client allowlist (`WEBHOOK_ALLOW_CIDRS`, comma-separated IPv4 CIDRs).
    pub allow_cidrs: Vec<(u32, u8)>,
    /// The header holding the client address the allowlist checks (`WEBHOOK_CLIENT_IP_HEADER`,
    /// default `x-webhook-source-ip`): one the API Gateway integration overwrites with
    /// `$context.identity.sourceIp`, so a caller cannot choose it. `X-Forwarded-For` and
    /// `Forwarded` are never trusted: their first entries are whatever the caller sent.
    pub client_ip_header: axum::http::HeaderName,
    /// How long one SendMessage may take in all, retries included (`SQS_SEND_TIMEOUT_MS`,
    /// default 10 000): past it the event is answered 503, well before API Gateway's 30 s.
    pub sqs_send_timeout: std::time::Duration,
    pub body_limit: usize,
    /// Least time between JWKS fetches triggered by signatures no cached key verifies
    /// (`JWKS_MIN_REFETCH_SECS`, default 60).
    pub jwks_min_refetch: std::time::Duration,
    /// SQS calls (SendMessage or SendMessageBatch) in flight at once (`SQS_MAX_IN_FLIGHT`,
    /// default 4): events arriving while all are busy share the next call (queue.rs).
    pub sqs_max_in_flight: usize,
}

impl Config {
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let port = match get("PORT") {
            Some(p) => p.parse().map_err(|_| format!("PORT must be a port number, not `{p}`"))?,
            None => 8080,
        };
        let bind_addr = match get("BIND_ADDR") {
            Some(a) => a.trim().parse().map_err(|_| format!("BIND_ADDR must be an IP address such as 0.0.0.0 or 127.0.0.1, not `{a}`"))?,
            None => std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let allow_cidrs = match get("WEBHOOK_ALLOW_CIDRS") {
            Some(list) => list.split(',').map(|c| parse_cidr(c.trim())).collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let sqs_max_in_flight = match get("SQS_MAX_IN_FLIGHT") {
            Some(v) => {
                v.parse().ok().filter(|n| *n > 0).ok_or_else(|| format!("SQS_MAX_IN_FLIGHT must be a positive number, not `{v}`"))?
            }
            None => 4,
        };
        let client_ip_header = match get("WEBHOOK_CLIENT_IP_HEADER") {
            Some(h) => axum::http::HeaderName::try_from(h.trim().to_ascii_lowercase())
                .map_err(|_| format!("WEBHOOK_CLIENT_IP_HEADER must be a header name, not `{h}`"))?,
            None => axum::http::HeaderName::from_static(DEFAULT_CLIENT_IP_HEADER),
        };
        let sqs_send_timeout = match get("SQS_SEND_TIMEOUT_MS") {
            Some(v) => std::time::Duration::from_millis(v.parse().ok().filter(|n| (1..=MAX_SQS_SEND_TIMEOUT_MS).contains(n)).ok_or_else(
                || {
                    format!(
                        "SQS_SEND_TIMEOUT_MS must be 1 to {MAX_SQS_SEND_TIMEOUT_MS} milliseconds, not `{v}`: past 25 s API Gateway's 30 s \
                         timeout answers first (a 504 whose outcome is unknown), and the replay window's arithmetic (verify.rs) no longer holds"
                    )
                },
            )?),
            None => DEFAULT_SQS_SEND_TIMEOUT,
        };
        Ok(Config {
            client_ip_header,
            sqs_send_timeout,
            sqs_max_in_flight,
            port,
            bind_addr,
            app_env: get("APP_ENV").unwrap_or_else(|| "production".into()),
            secret_id: get("BENCHLING_SECRET"),
            queue_url: get("QUEUE_URL"),
            packager_sqs_url: get("PACKAGER_SQS_URL"),
            quilt_web_host: get("QUILT_WEB_HOST"),
            athena_user_database: get("ATHENA_USER_DATABASE"),
            jwks_url: get("BENCHLING_JWKS_URL"),
            benchling_base_url: get("BENCHLING_BASE_URL"),
            allow_cidrs,
            body_limit: 1024 * 1024,
            jwks_min_refetch: std::time::Duration::from_secs_f64(match get("JWKS_MIN_REFETCH_SECS") {
                Some(v) => v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| *s >= 0.0)
                    .ok_or_else(|| format!("JWKS_MIN_REFETCH_SECS must be seconds, not `{v}`"))?,
                None => crate::jwks::MIN_REFETCH.as_secs_f64(),
            }),
        })
    }
}

/// The header the stack's API Gateway integration overwrites with the caller's address.
pub const DEFAULT_CLIENT_IP_HEADER: &str = "x-webhook-source-ip";
/// The most `SQS_SEND_TIMEOUT_MS` may be: well under API Gateway's 30 s.
pub const MAX_SQS_SEND_TIMEOUT_MS: u64 = 25_000;
/// A third of API Gateway's 30 s integration timeout.
pub const DEFAULT_SQS_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn parse_cidr(s: &str) -> Result<(u32, u8), String> {
    let (a, p) = s.split_once('/').unwrap_or((s, "32"));
    let addr: Ipv4Addr = a.parse().map_err(|_| format!("WEBHOOK_ALLOW_CIDRS: `{s}` is not an IPv4 CIDR"))?;
    let prefix: u8 = p.parse().ok().filter(|p| *p <= 32).ok_or_else(|| format!("WEBHOOK_ALLOW_CIDRS: bad prefix in `{s}`"))?;
    Ok((u32::from(addr), prefix))
}

pub fn allowed(cidrs: &[(u32, u8)], ip: Ipv4Addr) -> bool {
    let ip = u32::from(ip);
    cidrs.iter().any(|&(base, prefix)| {
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        ip & mask == base & mask
    })
}

/// The Benchling secret's JSON keys.
#[derive(Clone)]
pub struct BenchlingSecret {
    pub tenant: String,
    pub client_id: String,
    pub client_secret: String,
    pub app_definition_id: String,
    pub pkg_prefix: String,
    pub pkg_key: String,
    pub user_bucket: String,
    pub log_level: String,
    pub enable_webhook_verification: bool,
}

impl std::fmt::Debug for BenchlingSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchlingSecret")
            .field("tenant", &self.tenant)
            .field("client_id", &"***")
            .field("client_secret", &"***")
            .field("app_definition_id", &self.app_definition_id)
            .field("enable_webhook_verification", &self.enable_webhook_verification)
            .finish_non_exhaustive()
    }
}

impl BenchlingSecret {
    /// Parses the secret string; the error names missing keys, never values.
    pub fn parse(text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|_| "the Benchling secret is not a JSON object".to_string())?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let need = |k: &str| s(k).filter(|x| !x.is_empty()).ok_or_else(|| format!("the Benchling secret lacks `{k}`"));
        // Verification is on unless explicitly switched off (a bool, or the string "false").
        let verification = match v.get("enable_webhook_verification") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(x)) => !matches!(x.to_ascii_lowercase().as_str(), "false" | "0" | "no" | "off"),
            Some(_) => return Err("enable_webhook_verification must be true or false".into()),
        };
        Ok(BenchlingSecret {
            tenant: need("tenant")?,
            client_id: need("client_id")?,
            client_secret: need("client_secret")?,
            app_definition_id: need("app_definition_id")?,
            pkg_prefix: s("pkg_prefix").unwrap_or_else(|| "benchling".into()),
            pkg_key: s("pkg_key").unwrap_or_else(|| "experiment_id".into()),
            user_bucket: need("user_bucket")?,
            log_level: s("log_level").unwrap_or_else(|| "info".into()),
            enable_webhook_verification: verification,
        })
    }
}

/// Loads the secret from Secrets Manager.
pub async fn load_secret(sm: &aws_sdk_secretsmanager::Client, id: &str) -> Result<BenchlingSecret, String> {
    let out = sm
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|e| format!("cannot read secret {id}: {}", aws_sdk_secretsmanager::error::DisplayErrorContext(&e)))?;
    BenchlingSecret::parse(out.secret_string().ok_or_else(|| format!("secret {id} has no string value"))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = r#"{"tenant":"t","client_id":"cid","client_secret":"hunter2","app_definition_id":"appdef_1","user_bucket":"b","enable_webhook_verification":"false"}"#;

    #[test]
    fn secret_parses_and_never_prints_its_values() {
        let s = BenchlingSecret::parse(SECRET).unwrap();
        assert!(!s.enable_webhook_verification);
        assert_eq!(s.pkg_prefix, "benchling");
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("cid"), "{dbg}");
        let e = BenchlingSecret::parse(&SECRET.replace(r#""app_definition_id":"appdef_1","#, "")).unwrap_err();
        assert!(e.contains("app_definition_id") && !e.contains("hunter2"), "{e}");
        assert!(BenchlingSecret::parse("hunter2").unwrap_err().contains("not a JSON object"));
        let on = BenchlingSecret::parse(&SECRET.replace(r#","enable_webhook_verification":"false""#, "")).unwrap();
        assert!(on.enable_webhook_verification, "verification defaults to on");
    }

    #[test]
    fn env_and_allowlist() {
        let c = Config::from_lookup(|k| match k {
            "PORT" => Some("9000".into()),
            "WEBHOOK_ALLOW_CIDRS" => Some("10.0.0.0/16, 192.168.1.7".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.port, 9000);
        assert!(allowed(&c.allow_cidrs, "10.0.200.1".parse().unwrap()));
        assert!(allowed(&c.allow_cidrs, "192.168.1.7".parse().unwrap()));
        assert!(!allowed(&c.allow_cidrs, "192.168.1.8".parse().unwrap()));
        assert!(Config::from_lookup(|k| (k == "PORT").then(|| "http".to_string())).is_err());
        assert_eq!(c.client_ip_header.as_str(), "x-webhook-source-ip");
        assert_eq!(c.sqs_send_timeout, DEFAULT_SQS_SEND_TIMEOUT);
        let c = Config::from_lookup(|k| (k == "WEBHOOK_CLIENT_IP_HEADER").then(|| "X-Real-Client".to_string())).unwrap();
        assert_eq!(c.client_ip_header.as_str(), "x-real-client");
        assert!(Config::from_lookup(|k| (k == "WEBHOOK_CLIENT_IP_HEADER").then(|| "bad header".to_string())).is_err());
        assert!(Config::from_lookup(|k| (k == "SQS_SEND_TIMEOUT_MS").then(|| "0".to_string())).is_err());
        let e = Config::from_lookup(|k| (k == "SQS_SEND_TIMEOUT_MS").then(|| "30000".to_string())).unwrap_err();
        assert!(e.contains("1 to 25000") && e.contains("API Gateway"), "{e}");
    }

    #[test]
    fn bind_address_defaults_to_every_interface_and_can_be_loopback() {
        let c = Config::from_lookup(|_| None).unwrap();
        assert_eq!(c.bind_addr.to_string(), "0.0.0.0", "a container must listen on every interface");
        let c = Config::from_lookup(|k| (k == "BIND_ADDR").then(|| "127.0.0.1".to_string())).unwrap();
        assert_eq!(c.bind_addr.to_string(), "127.0.0.1");
        let e = Config::from_lookup(|k| (k == "BIND_ADDR").then(|| "localhost:80".to_string())).unwrap_err();
        assert!(e.contains("BIND_ADDR must be an IP address"), "{e}");
    }
}
