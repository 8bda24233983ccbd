//! What a valid value is, field by field: Fargate sizes, image references, schedule
//! expressions, names AWS accepts, the default subnet layout. `validate` applies these to a
//! spec; desired state and the drift-correction task reuse some of them.

use super::cidr::Cidr;
use super::model::*;

/// The largest spec (as JSON) the drift-correction task definition carries.
pub const MAX_SPEC_IN_TASK: usize = 32 * 1024;

/// Why an image reference is refused, if it is.
pub(super) fn image_problem(image: &str) -> Option<String> {
    if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
        return Some("image must be `<registry>/<repo>:<tag>` or `<registry>/<repo>@sha256:<digest>` with no spaces".into());
    }
    if let Some((_, digest)) = image.split_once("@sha256:") {
        if digest.len() != 64 || !digest.chars().all(|c| c.is_ascii_hexdigit()) {
            return Some("an image digest is `@sha256:` followed by 64 hex digits".into());
        }
    }
    None
}

/// Why an EventBridge Scheduler expression would be refused, if it would be: `rate(N unit)`
/// with N ≥ 1 (a singular unit for 1, plural otherwise, as Scheduler requires), `cron(...)`
/// with six fields of which day-of-month or day-of-week (not both) is `?`, or
/// `at(yyyy-mm-ddThh:mm:ss)`.
pub fn schedule_expression_problem(expr: &str) -> Option<String> {
    let usage = "use `rate(15 minutes)`, `cron(0/15 * * * ? *)` or `at(2030-01-01T00:00:00)`";
    let Some((kind, body)) = expr.strip_suffix(')').and_then(|e| e.split_once('(')) else {
        return Some(format!("`{expr}` is not a schedule expression: {usage}"));
    };
    match kind {
        "rate" => {
            let parts: Vec<&str> = body.split_whitespace().collect();
            let [n, unit] = parts[..] else { return Some(format!("`{expr}`: a rate is a number and a unit, e.g. `rate(15 minutes)`")) };
            let Ok(n) = n.parse::<u32>() else { return Some(format!("`{expr}`: `{n}` is not a whole number")) };
            if n == 0 {
                return Some(format!("`{expr}`: the rate must be at least 1"));
            }
            let singular = ["minute", "hour", "day"];
            let plural = ["minutes", "hours", "days"];
            match (n, singular.contains(&unit), plural.contains(&unit)) {
                (1, true, _) | (2.., _, true) => None,
                (1, _, true) => {
                    Some(format!("`{expr}`: write `rate(1 {})` (Scheduler wants the singular for 1)", unit.trim_end_matches('s')))
                }
                (2.., true, _) => Some(format!("`{expr}`: write `rate({n} {unit}s)` (Scheduler wants the plural above 1)")),
                _ => Some(format!("`{expr}`: the unit is minute(s), hour(s) or day(s), not `{unit}`")),
            }
        }
        "cron" => {
            let fields: Vec<&str> = body.split_whitespace().collect();
            if fields.len() != 6 {
                return Some(format!(
                    "`{expr}`: a cron expression has 6 fields (minutes hours day-of-month month day-of-week year), not {}",
                    fields.len()
                ));
            }
            let allowed = |c: char| c.is_ascii_alphanumeric() || ",-*/?#".contains(c);
            if let Some(f) = fields.iter().find(|f| !f.chars().all(allowed)) {
                return Some(format!("`{expr}`: `{f}` is not a cron field"));
            }
            if (fields[2] == "?") == (fields[4] == "?") {
                return Some(format!("`{expr}`: exactly one of day-of-month (3rd field) and day-of-week (5th) must be `?`"));
            }
            None
        }
        "at" => {
            let b = body.as_bytes();
            let digits = |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
            let shape = b.len() == 19
                && digits(0..4)
                && b[4] == b'-'
                && digits(5..7)
                && b[7] == b'-'
                && digits(8..10)
                && b[10] == b'T'
                && digits(11..13)
                && b[13] == b':'
                && digits(14..16)
                && b[16] == b':'
                && digits(17..19);
            (!shape).then(|| format!("`{expr}`: a one-time schedule is `at(yyyy-mm-ddThh:mm:ss)`"))
        }
        _ => Some(format!("`{expr}` is not a schedule expression: {usage}")),
    }
}

pub(super) fn validate_new_vpc(vpc: &NewVpc, err: &mut impl FnMut(&str, String)) {
    let cidr = match vpc.cidr.parse::<Cidr>() {
        Ok(c) if (16..=28).contains(&c.prefix) => Some(c),
        Ok(c) => {
            err("network.vpc.cidr", format!("a VPC CIDR must be /16 to /28, not /{}", c.prefix));
            None
        }
        Err(m) => {
            err("network.vpc.cidr", m);
            None
        }
    };
    if !(2..=6).contains(&vpc.azs) {
        err("network.vpc.azs", format!("azs must be 2 to 6 (API Gateway VPC links and high availability need 2), not {}", vpc.azs));
        return;
    }
    let n = vpc.azs as usize;
    if let Some(zones) = &vpc.availability_zones {
        if zones.len() != n {
            err("network.vpc.availability_zones", format!("{} zones given for azs: {n}", zones.len()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for z in zones {
            if !seen.insert(z) {
                err("network.vpc.availability_zones", format!("zone `{z}` is listed twice"));
            }
        }
    }
    let Some(cidr) = cidr else { return };
    let mut all: Vec<(String, Cidr)> = Vec::new();
    let mut too_small_said = false;
    for (field, given) in [("public_subnets", &vpc.public_subnets), ("private_subnets", &vpc.private_subnets)] {
        let path = format!("network.vpc.{field}");
        let list: Vec<String> = match given {
            Some(l) => l.clone(),
            None => match default_subnets(cidr, vpc.azs, field == "private_subnets") {
                Some(l) => l.iter().map(ToString::to_string).collect(),
                None => {
                    if !too_small_said {
                        err("network.vpc.cidr", format!("{cidr} is too small for the default /24 subnets in {n} zones: list public_subnets and private_subnets explicitly"));
                        too_small_said = true;
                    }
                    continue;
                }
            },
        };
        if list.len() != n {
            err(&path, format!("{} subnets given for azs: {n} (one per zone)", list.len()));
        }
        for s in &list {
            match s.parse::<Cidr>() {
                Err(m) => err(&path, m),
                Ok(c) if !cidr.contains(&c) => err(&path, format!("{c} is outside the VPC {cidr}")),
                Ok(c) if !(16..=28).contains(&c.prefix) => err(&path, format!("{c}: a subnet must be /16 to /28")),
                Ok(c) => {
                    if let Some((_, other)) = all.iter().find(|(_, o)| o.overlaps(&c)) {
                        err(&path, format!("{c} overlaps {other}"));
                    }
                    all.push((path.clone(), c));
                }
            }
        }
    }
}

/// Default subnet layout: public /24s from the start of the VPC, private /24s from its
/// middle (10.0.0.0/16 → 10.0.0.0/24, 10.0.1.0/24 and 10.0.128.0/24, 10.0.129.0/24).
pub fn default_subnets(vpc: Cidr, azs: u8, private: bool) -> Option<Vec<Cidr>> {
    if vpc.prefix > 23 || (azs as u64) * 256 > vpc.size() / 2 {
        return None;
    }
    let start = vpc.base + if private { (vpc.size() / 2) as u32 } else { 0 };
    Some((0..azs as u32).map(|i| Cidr::new(start + i * 256, 24)).collect())
}

/// Allowed memory for one CPU size: (from, to, step) MiB.
type MemoryRanges = &'static [(u32, u32, u32)];

/// Fargate task sizes: CPU units → allowed memory (MiB).
pub(super) const FARGATE: [(u32, MemoryRanges); 7] = [
    (256, &[(512, 512, 1), (1024, 2048, 1024)]),
    (512, &[(1024, 4096, 1024)]),
    (1024, &[(2048, 8192, 1024)]),
    (2048, &[(4096, 16384, 1024)]),
    (4096, &[(8192, 30720, 1024)]),
    (8192, &[(16384, 61440, 4096)]),
    (16384, &[(32768, 122880, 8192)]),
];

pub fn fargate_size(cpu: u32, memory: u32) -> Result<(), String> {
    let Some((_, ranges)) = FARGATE.iter().find(|(c, _)| *c == cpu) else {
        let cpus: Vec<u32> = FARGATE.iter().map(|(c, _)| *c).collect();
        return Err(format!("cpu {cpu} is not a Fargate size; use one of {cpus:?}"));
    };
    if ranges.iter().any(|&(lo, hi, step)| memory >= lo && memory <= hi && (memory - lo).is_multiple_of(step)) {
        return Ok(());
    }
    let allowed: Vec<String> =
        ranges.iter().map(|&(lo, hi, step)| if lo == hi { lo.to_string() } else { format!("{lo}..={hi} in steps of {step}") }).collect();
    Err(format!("memory {memory} MiB does not fit cpu {cpu} on Fargate; allowed: {}", allowed.join(", ")))
}

pub(super) const LOG_RETENTION_DAYS: [u32; 22] =
    [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

/// Environment variables the reconciler sets in the task definition itself.
pub const WIRED_ENV: [&str; 6] = ["QUEUE_URL", "DEAD_LETTER_QUEUE_URL", "PACKAGER_SQS_URL", "BENCHLING_SECRET", "AWS_REGION", "PORT"];

pub(super) fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && b.starts_with(|c: char| c.is_ascii_alphanumeric())
        && b.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// (region, account, name) of `arn:aws:sqs:REGION:ACCOUNT:NAME`.
pub fn sqs_arn_parts(arn: &str) -> Option<(&str, &str, &str)> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts[..] {
        ["arn", partition, "sqs", region, account, name]
            if partition.starts_with("aws")
                && !region.is_empty()
                && account.len() == 12
                && account.chars().all(|c| c.is_ascii_digit())
                && !name.is_empty() =>
        {
            Some((region, account, name))
        }
        _ => None,
    }
}

pub(super) fn valid_stack_name(s: &str) -> bool {
    (2..=32).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

pub(super) fn valid_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    (3..=4).contains(&parts.len())
        && parts[0].len() == 2
        && parts.iter().take(parts.len() - 1).all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts.last().is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

pub(super) fn valid_aws_name(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

pub(super) fn valid_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') && !s.starts_with('-') && !s.ends_with('-')
}

pub(super) fn valid_dns_name(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(valid_dns_label)
}

pub(super) fn valid_env_name(s: &str) -> bool {
    !s.is_empty() && !s.starts_with(|c: char| c.is_ascii_digit()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
