//! The list prices the cost estimate uses (`reconciler/prices/us-east-1.json`: region, date,
//! source, embedded at build time), and how amounts are written.

use serde::Deserialize;
use std::sync::LazyLock;

/// The list prices the estimate uses, embedded at build time.
pub static TABLE: LazyLock<PriceTable> =
    LazyLock::new(|| serde_json::from_str(include_str!("../../prices/us-east-1.json")).expect("reconciler/prices/us-east-1.json is valid"));

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    pub region: String,
    /// When the prices were written down (YYYY-MM-DD).
    pub as_of: String,
    pub source: String,
    pub hours_per_month: f64,
    pub prices: Prices,
}

/// US dollars, on-demand list prices, first tier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    pub fargate_vcpu_hour: f64,
    pub fargate_gb_hour: f64,
    pub fargate_spot_vcpu_hour: f64,
    pub fargate_spot_gb_hour: f64,
    pub nat_gateway_hour: f64,
    pub nat_gateway_gb: f64,
    pub public_ipv4_hour: f64,
    pub vpc_link_hour: f64,
    pub http_api_per_million: f64,
    pub cloud_map_instance_month: f64,
    pub cloud_map_discovery_per_million: f64,
    pub route53_hosted_zone_month: f64,
    pub logs_ingestion_gb: f64,
    pub logs_storage_gb_month: f64,
    pub sqs_fifo_per_million: f64,
}

/// Dollars as people read them: `$1,234.56`.
pub fn usd(x: f64) -> String {
    let c = cents(x);
    format!("{}${}.{:02}", if c < 0 { "-" } else { "" }, thousands(c.unsigned_abs() / 100), c.unsigned_abs() % 100)
}

pub(crate) fn cents(x: f64) -> i64 {
    (x * 100.0).round() as i64
}

pub(crate) fn round2(x: f64) -> f64 {
    cents(x) as f64 / 100.0
}

pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A quantity in a cost line: up to three decimals, no trailing zeros.
pub(crate) fn num(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}
