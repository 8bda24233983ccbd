//! The monthly cost of a plan: before (what exists now; nothing for what does not exist) and
//! after (what the spec asks for), per resource, from the price table shipped with the
//! reconciler (`reconciler/prices/us-east-1.json`: region, date, source) and the spec's traffic
//! assumptions (`cost:`). Pure: desired and observed fields in, dollars out. Like desired
//! state, it knows the kinds (the ones that cost money); the engine knows none.

use super::prices::{cents, num, round2, thousands, usd, PriceTable, TABLE};
use crate::engine::{initial_value, ownership, within_bounds, Desired, Fields, Observed};
use crate::ids;
use crate::spec::CostAssumptions;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

/// Bytes one access log line takes (the JSON format in `desired/edge.rs` is about 600 bytes,
/// plus CloudWatch's per-event overhead), rounded up; 1 GB is 10^9 bytes.
const ACCESS_LOG_BYTES_PER_REQUEST: f64 = 1000.0;
/// SQS requests per webhook: the service sends it, the worker receives and deletes it.
const SQS_REQUESTS_PER_WEBHOOK: f64 = 3.0;
/// A drift-correction run: about a minute of its task, one status line (and a few progress
/// lines) of logs.
const DRIFT_RUN_HOURS: f64 = 1.0 / 60.0;
const DRIFT_LOG_BYTES_PER_RUN: f64 = 2000.0;

/// Runs a month of a Scheduler expression: `rate(N minutes|hours|days)` exactly, `at(...)`
/// once; `cron(...)` is not modelled (`None`).
fn runs_per_month(expression: &str, hours_per_month: f64) -> Option<f64> {
    if expression.starts_with("at(") {
        return Some(1.0);
    }
    let inner = expression.strip_prefix("rate(")?.strip_suffix(')')?;
    let (n, unit) = inner.trim().split_once(' ')?;
    let n: f64 = n.parse().ok().filter(|n: &f64| *n > 0.0)?;
    let minutes = match unit.trim_end_matches('s') {
        "minute" => 1.0,
        "hour" => 60.0,
        "day" => 1440.0,
        _ => return None,
    };
    Some(hours_per_month * 60.0 / (n * minutes))
}

/// The estimate of one plan. Dollars a month, rounded to cents.
#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq)]
pub struct Cost {
    /// What the stack's resources cost now (nothing for what does not exist yet).
    pub before: f64,
    /// What they cost once the plan is applied.
    pub after: f64,
    /// One line per resource that is priced, in plan order; resources AWS does not charge
    /// for (subnets, roles, security groups, ...) have none.
    pub lines: Vec<CostLine>,
    pub prices: PriceSource,
    pub assumptions: CostAssumptions,
    /// Set when the stack is not in the price table's region.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
}

/// Where the prices come from.
#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq)]
pub struct PriceSource {
    pub region: String,
    pub as_of: String,
    pub source: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema, PartialEq)]
pub struct CostLine {
    pub kind: String,
    pub id: String,
    pub before: f64,
    pub after: f64,
    /// How the figure was computed: of `after`, or of `before` for what goes away.
    pub basis: String,
}

impl Cost {
    pub fn line(&self, kind: &str, id: &str) -> Option<&CostLine> {
        self.lines.iter().find(|l| l.kind == kind && l.id == id)
    }

    /// `Estimated monthly cost: $X → $Y (list prices us-east-1, <date>; assumes N requests/month)`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "Estimated monthly cost: {} → {} (list prices {}, {}; assumes {} requests/month)",
            usd(self.before),
            usd(self.after),
            self.prices.region,
            self.prices.as_of,
            thousands(self.assumptions.requests_per_month)
        );
        if let Some(n) = &self.note {
            s.push_str(&format!("; {n}"));
        }
        s
    }
}

impl CostLine {
    /// `$33.30 a month`, or `$32.85 → $33.30 a month` when the plan changes it.
    pub fn describe(&self) -> String {
        if cents(self.before) == cents(self.after) {
            format!("{} a month", usd(self.after))
        } else {
            format!("{} → {} a month", usd(self.before), usd(self.after))
        }
    }
}

/// Estimates the monthly cost before and after, per resource. `region` is the stack's.
pub fn estimate(region: &str, assumptions: &CostAssumptions, desired: &[Desired], observed: &[Observed]) -> Cost {
    let t = &*TABLE;
    let after_side = Side { items: desired.iter().map(|d| (d.kind, d.id.as_str(), &d.fields)).collect(), live: Some(observed) };
    let before_side = Side { items: observed.iter().map(|o| (o.kind, o.id.as_str(), &o.fields)).collect(), live: None };
    // Summed unrounded, rounded once at the end.
    let mut lines: Vec<CostLine> = Vec::new();
    for &(kind, id, fields) in &after_side.items {
        if let Some((usd, basis)) = price(kind, id, fields, &after_side, assumptions, t) {
            let l = line(&mut lines, kind, id);
            l.after += usd;
            l.basis = basis;
        }
    }
    for o in observed {
        if let Some((usd, basis)) = price(o.kind, &o.id, &o.fields, &before_side, assumptions, t) {
            let wanted = desired.iter().any(|d| d.kind == o.kind && d.id == o.id);
            let l = line(&mut lines, o.kind, &o.id);
            l.before += usd;
            if !wanted && ownership::retained(&o.fields) {
                // Released from management, not deleted: AWS keeps charging for it.
                l.after += usd;
                l.basis = format!("{basis}; retained: still billed, no longer managed");
            } else if l.basis.is_empty() {
                l.basis = basis;
            }
        }
    }
    let before: f64 = lines.iter().map(|l| l.before).sum();
    let after: f64 = lines.iter().map(|l| l.after).sum();
    for l in &mut lines {
        l.before = round2(l.before);
        l.after = round2(l.after);
    }
    let note = (region != t.region).then(|| format!("the stack is in {region}: this estimate uses {} prices", t.region));
    Cost {
        before: round2(before),
        after: round2(after),
        lines,
        prices: PriceSource { region: t.region.clone(), as_of: t.as_of.clone(), source: t.source.clone() },
        assumptions: assumptions.clone(),
        note,
    }
}

fn line<'l>(lines: &'l mut Vec<CostLine>, kind: &str, id: &str) -> &'l mut CostLine {
    let i = match lines.iter().position(|l| l.kind == kind && l.id == id) {
        Some(i) => i,
        None => {
            lines.push(CostLine { kind: kind.into(), id: id.into(), before: 0.0, after: 0.0, basis: String::new() });
            lines.len() - 1
        }
    };
    &mut lines[i]
}

/// One side of the estimate: the desired resources (after) or the observed ones (before).
struct Side<'a> {
    items: Vec<(&'static str, &'a str, &'a Fields)>,
    /// For the desired side: what exists, for values another owner controls once created
    /// (a desired count under autoscaling).
    live: Option<&'a [Observed]>,
}

impl<'a> Side<'a> {
    fn get(&self, kind: &str, id: &str) -> Option<&'a Fields> {
        self.items.iter().find(|(k, i, _)| *k == kind && *i == id).map(|(_, _, f)| *f)
    }

    /// Drift-correction runs a month, from the schedule on this side.
    fn drift_runs(&self, hours_per_month: f64) -> Option<f64> {
        let (_, f) = self.first("scheduler:schedule")?;
        runs_per_month(f.get("expression")?.as_str()?, hours_per_month)
    }

    fn first(&self, kind: &str) -> Option<(&'a str, &'a Fields)> {
        self.items.iter().find(|(k, _, _)| *k == kind).map(|(_, id, f)| (*id, *f))
    }

    fn count(&self, kind: &str) -> usize {
        self.items.iter().filter(|(k, _, _)| *k == kind).count()
    }

    /// A numeric field, through the markers desired state uses: `$within` (autoscaling owns
    /// the live value inside the bounds) and `$initial` (set on create, then someone else's).
    fn number(&self, kind: &str, id: &str, fields: &Fields, field: &str) -> Option<f64> {
        let live = || self.live?.iter().find(|o| o.kind == kind && o.id == id).and_then(|o| o.fields.get(field)).and_then(literal_number);
        let v = fields.get(field)?;
        if let Some(n) = literal_number(v) {
            return Some(n);
        }
        if let Some((lo, hi, initial)) = within_bounds(v) {
            return live().map(|n| n.clamp(lo, hi)).or_else(|| literal_number(initial));
        }
        live().or_else(|| initial_value(v).and_then(literal_number))
    }

    /// Tasks the ECS service runs on this side.
    fn tasks(&self) -> Option<f64> {
        let (id, f) = self.first("ecs:service")?;
        self.number("ecs:service", id, f, "desired_count")
    }
}

fn literal_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Tasks on (FARGATE, FARGATE_SPOT) for `n` tasks: each provider's base first, in order, the
/// rest by weight. No strategy: all on FARGATE.
fn split(n: f64, strategy: &[Value]) -> (f64, f64) {
    let item = |v: &Value| {
        let spot = v["provider"].as_str() == Some("FARGATE_SPOT");
        (spot, v["weight"].as_f64().unwrap_or(0.0), v["base"].as_f64().unwrap_or(0.0))
    };
    let items: Vec<(bool, f64, f64)> = strategy.iter().map(item).collect();
    let total: f64 = items.iter().map(|i| i.1).sum();
    if items.is_empty() || total <= 0.0 {
        return (n, 0.0);
    }
    let (mut on_demand, mut spot, mut left) = (0.0, 0.0, n);
    for &(is_spot, _, base) in &items {
        let b = base.min(left);
        left -= b;
        if is_spot {
            spot += b
        } else {
            on_demand += b
        }
    }
    for &(is_spot, weight, _) in &items {
        let share = left * weight / total;
        if is_spot {
            spot += share
        } else {
            on_demand += share
        }
    }
    (on_demand, spot)
}

/// The monthly dollars of one resource and how they were computed; `None` for what is not
/// priced here (free, or billed by usage the estimate does not model).
fn price(kind: &str, id: &str, fields: &Fields, side: &Side, a: &CostAssumptions, t: &PriceTable) -> Option<(f64, String)> {
    let p = &t.prices;
    let h = t.hours_per_month;
    let requests = a.requests_per_month as f64;
    match kind {
        "ecs:service" => {
            let n = side.number(kind, id, fields, "desired_count")?;
            let td = side.get("ecs:task-definition", ids::TASK_DEFINITION)?;
            let vcpu = side.number("ecs:task-definition", ids::TASK_DEFINITION, td, "cpu")? / 1024.0;
            let gb = side.number("ecs:task-definition", ids::TASK_DEFINITION, td, "memory")? / 1024.0;
            let own = fields.get("capacity_strategy").and_then(Value::as_array).filter(|s| !s.is_empty());
            let cluster = side.first("ecs:cluster").and_then(|(_, c)| c.get("default_strategy")).and_then(Value::as_array);
            let (on_demand, spot) = split(n, own.or(cluster).map(Vec::as_slice).unwrap_or_default());
            let usd = (on_demand * (vcpu * p.fargate_vcpu_hour + gb * p.fargate_gb_hour)
                + spot * (vcpu * p.fargate_spot_vcpu_hour + gb * p.fargate_spot_gb_hour))
                * h;
            Some((usd, format!("{} task(s) of {} vCPU and {} GB, {} h; {} on Spot", num(n), num(vcpu), num(gb), num(h), num(spot))))
        }
        "ec2:nat-gateway" => {
            let gb = a.nat_gb_per_month / side.count(kind).max(1) as f64;
            Some((h * p.nat_gateway_hour + gb * p.nat_gateway_gb, format!("{} h and {} GB processed", num(h), num(gb))))
        }
        "ec2:elastic-ip" => Some((h * p.public_ipv4_hour, format!("public IPv4 address, {} h", num(h)))),
        "apigateway:vpc-link" => Some((h * p.vpc_link_hour, "VPC links of HTTP APIs are not charged".into())),
        "apigateway:api" => Some((requests / 1e6 * p.http_api_per_million, format!("{} requests", thousands(a.requests_per_month)))),
        "servicediscovery:namespace" => Some((p.route53_hosted_zone_month, "the private DNS namespace's Route 53 hosted zone".into())),
        "servicediscovery:service" => {
            let instances = side.tasks().unwrap_or(0.0);
            let mut usd = instances * p.cloud_map_instance_month;
            let mut basis = format!("{} registered instance(s)", num(instances));
            if side.first("apigateway:api").is_some() {
                usd += requests / 1e6 * p.cloud_map_discovery_per_million;
                basis.push_str(&format!(", {} discovery calls (one per request)", thousands(a.requests_per_month)));
            }
            Some((usd, basis))
        }
        "scheduler:schedule" => {
            let runs = side.drift_runs(h)?;
            let td = side.get("ecs:task-definition", ids::DRIFT_TASK_DEFINITION)?;
            let vcpu = side.number("ecs:task-definition", ids::DRIFT_TASK_DEFINITION, td, "cpu")? / 1024.0;
            let gb = side.number("ecs:task-definition", ids::DRIFT_TASK_DEFINITION, td, "memory")? / 1024.0;
            let usd = runs * DRIFT_RUN_HOURS * (vcpu * p.fargate_vcpu_hour + gb * p.fargate_gb_hour);
            Some((usd, format!("{} runs of about a minute, {} vCPU and {} GB", num(runs), num(vcpu), num(gb))))
        }
        "logs:log-group" => {
            // Access logs grow with the requests, the drift task's with its runs; every other
            // log group is the containers' (`cost.log_gb_per_month`).
            let gb = match id {
                ids::LOG_API => requests * ACCESS_LOG_BYTES_PER_REQUEST / 1e9,
                ids::DRIFT_LOG_GROUP => side.drift_runs(h).unwrap_or(0.0) * DRIFT_LOG_BYTES_PER_RUN / 1e9,
                _ => a.log_gb_per_month,
            };
            // Kept for the retention period: that many days of logs are stored at any time.
            // Without a retention logs never expire; a year of them is assumed.
            let days = side.number(kind, id, fields, "retention_days").unwrap_or(365.0);
            let stored = gb * days * 24.0 / h;
            let usd = gb * p.logs_ingestion_gb + stored * p.logs_storage_gb_month;
            Some((usd, format!("{} GB ingested, {} GB stored for {} days", num(gb), num(stored), num(days))))
        }
        "sqs:queue" if id == ids::QUEUE => {
            let n = requests * SQS_REQUESTS_PER_WEBHOOK;
            Some((n / 1e6 * p.sqs_fifo_per_million, format!("{} FIFO requests (send, receive, delete per webhook)", thousands(n as u64))))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{build, Facts};

    fn spec(file: &str) -> crate::spec::Spec {
        crate::spec::load(&crate::spec::shipped(&format!("../specs/{file}"))).unwrap()
    }

    fn facts() -> Facts {
        Facts::in_zones("abc")
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 0.006
    }

    #[test]
    fn the_price_table_parses_and_says_where_it_is_from() {
        assert_eq!(TABLE.region, "us-east-1");
        assert_eq!(TABLE.as_of.len(), 10);
        assert!(TABLE.source.contains("list prices"));
        assert_eq!(TABLE.hours_per_month, 730.0);
    }

    /// specs/prod.yaml, nothing built yet, default assumptions (1,000,000 requests, 10 GB through
    /// NAT, 1 GB of container logs), prices of reconciler/prices/us-east-1.json.
    #[test]
    fn prod_total_matches_the_arithmetic() {
        let s = spec("prod.yaml");
        let state = build(&s, &facts()).unwrap();
        let c = estimate(&s.region, &s.cost, &state.resources, &[]);
        // 2 tasks of 256 CPU units (0.25 vCPU) and 512 MiB (0.5 GB), all on FARGATE, 730 h.
        let fargate = 2.0 * (0.25 * 0.04048 + 0.5 * 0.004445) * 730.0; // 18.02005
                                                                       // Two NAT gateways (one per AZ), 10 GB processed between them.
        let nat = 2.0 * (0.045 * 730.0) + 10.0 * 0.045; // 66.15
                                                        // Their two Elastic IPs are public IPv4 addresses.
        let ipv4 = 2.0 * 0.005 * 730.0; // 7.30
                                        // Route 53 hosted zone of the namespace; 2 instances; one discovery call per request.
        let cloud_map = 0.50 + 2.0 * 0.10 + 1.0 * 1.00; // 1.70
        let http_api = 1.0 * 1.00; // 1,000,000 requests
        let vpc_link = 0.0;
        let sqs = 3.0 * 0.50; // 3,000,000 FIFO requests
                              // Container logs: 1 GB ingested, 30 days retained; access logs: 1 KB x 1,000,000
                              // requests = 1 GB, 7 days retained.
        let logs = (1.0 * 0.50 + 1.0 * 30.0 * 24.0 / 730.0 * 0.03) + (1.0 * 0.50 + 1.0 * 7.0 * 24.0 / 730.0 * 0.03); // 1.0365
                                                                                                                     // Drift correction every 15 minutes: 730 h x 4 = 2,920 runs of about a minute of a
                                                                                                                     // 0.25 vCPU / 0.5 GB task on FARGATE, and 2 KB of logs each, kept 14 days.
        let runs = 730.0 * 60.0 / 15.0; // 2920
        let drift_task = runs / 60.0 * (0.25 * 0.04048 + 0.5 * 0.004445); // 0.6007
        let drift_gb = runs * 2000.0 / 1e9; // 0.00584
        let drift_logs = drift_gb * 0.50 + drift_gb * 14.0 * 24.0 / 730.0 * 0.03; // 0.0030
        let total = fargate + nat + ipv4 + cloud_map + http_api + vpc_link + sqs + logs + drift_task + drift_logs; // 97.31
        assert!(close(c.after, total), "prod after: {} vs {total}\n{:#?}", c.after, c.lines);
        assert!(close(c.after, 97.31), "{}", c.after);
        assert!(close(c.line("scheduler:schedule", "schedule-drift-correction").unwrap().after, drift_task));
        assert_eq!(runs_per_month("rate(1 hour)", 730.0), Some(730.0));
        assert_eq!(runs_per_month("cron(0 * * * ? *)", 730.0), None);
        assert_eq!(c.before, 0.0);
        assert!(close(c.line("ecs:service", "service").unwrap().after, fargate));
        assert!(close(c.line("ec2:nat-gateway", "nat-1").unwrap().after, nat / 2.0));
        assert!(c.note.is_none());
        assert_eq!(
            c.summary(),
            format!("Estimated monthly cost: $0.00 → $97.31 (list prices us-east-1, {}; assumes 1,000,000 requests/month)", TABLE.as_of)
        );
    }

    /// specs/dev.yaml: one shared NAT gateway, one task on FARGATE_SPOT only.
    #[test]
    fn dev_total_matches_the_arithmetic() {
        let s = spec("dev.yaml");
        let state = build(&s, &facts()).unwrap();
        let c = estimate(&s.region, &s.cost, &state.resources, &[]);
        let fargate_spot = 1.0 * (0.25 * 0.01214 + 0.5 * 0.00133) * 730.0; // 2.701
        let nat = 0.045 * 730.0 + 10.0 * 0.045; // 33.30
        let ipv4 = 0.005 * 730.0; // 3.65
        let cloud_map = 0.50 + 1.0 * 0.10 + 1.0 * 1.00; // 1.60
        let http_api = 1.00;
        let sqs = 3.0 * 0.50;
        // Container logs kept 7 days, access logs 3 days.
        let logs = (0.50 + 7.0 * 24.0 / 730.0 * 0.03) + (0.50 + 3.0 * 24.0 / 730.0 * 0.03); // 1.0099
        let total = fargate_spot + nat + ipv4 + cloud_map + http_api + sqs + logs; // 44.76
        assert!(close(c.after, total), "dev after: {} vs {total}\n{:#?}", c.after, c.lines);
        assert!(close(c.after, 44.76), "{}", c.after);
    }

    #[test]
    fn before_is_what_exists_and_autoscaling_owns_the_live_count() {
        let s = spec("prod.yaml");
        let state = build(&s, &facts()).unwrap();
        let fields = |v: Value| v.as_object().unwrap().clone();
        let observed = vec![
            Observed::new("ec2:elastic-ip", "eip-nat-1".into(), "eipalloc-1".into(), fields(serde_json::json!({}))),
            Observed::new(
                "ecs:service",
                "service".into(),
                "arn:svc".into(),
                fields(serde_json::json!({"desired_count": 4, "capacity_strategy": [{"provider": "FARGATE", "weight": 1, "base": 0}]})),
            ),
            Observed::new(
                "ecs:task-definition",
                "task-definition".into(),
                "arn:td".into(),
                fields(serde_json::json!({"cpu": "256", "memory": "512"})),
            ),
            // Left the spec, deletion_policy retain: still billed after.
            Observed::new(
                "logs:log-group",
                "log-old".into(),
                "/old".into(),
                fields(serde_json::json!({"retention_days": 30, "tags": {"reconciler:deletion-policy": "retain"}})),
            ),
        ];
        let c = estimate(&s.region, &s.cost, &state.resources, &observed);
        let task = (0.25 * 0.04048 + 0.5 * 0.004445) * 730.0;
        let svc = c.line("ecs:service", "service").unwrap();
        // 4 running inside scaling's [2, 10]: autoscaling's count stays.
        assert!(close(svc.before, 4.0 * task) && close(svc.after, 4.0 * task), "{svc:?}");
        assert!(close(c.line("ec2:elastic-ip", "eip-nat-1").unwrap().before, 3.65));
        assert_eq!(c.line("ec2:elastic-ip", "eip-nat-2").unwrap().before, 0.0);
        let old = c.line("logs:log-group", "log-old").unwrap();
        assert!(old.before > 0.0 && old.before == old.after && old.basis.contains("retained"), "{old:?} {:?}", ownership::RETAIN_TAG);
    }

    #[test]
    fn spot_share_takes_the_base_first_then_the_weights() {
        let s = |v: Value| v.as_array().unwrap().clone();
        let strategy =
            s(serde_json::json!([{"provider": "FARGATE", "weight": 1, "base": 2}, {"provider": "FARGATE_SPOT", "weight": 3, "base": 0}]));
        assert_eq!(split(10.0, &strategy), (4.0, 6.0));
        assert_eq!(split(1.0, &strategy), (1.0, 0.0));
        assert_eq!(split(3.0, &[]), (3.0, 0.0));
    }

    #[test]
    fn other_regions_are_told_the_table_is_us_east_1() {
        let c = estimate("eu-west-1", &CostAssumptions::default(), &[], &[]);
        assert!(c.summary().ends_with("; the stack is in eu-west-1: this estimate uses us-east-1 prices"), "{}", c.summary());
        assert_eq!(usd(1234567.891), "$1,234,567.89");
        assert_eq!(usd(0.004), "$0.00");
    }
}
