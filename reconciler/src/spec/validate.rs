//! Validation beyond types: what AWS would reject, and what would make the stack unsafe.
//! Pure: returns (dotted path, message) pairs; `spec::parse` locates them in the file.

use super::model::*;
use super::rules::*;

type Problems = Vec<(String, String)>;

pub fn validate(spec: &Spec) -> Problems {
    let mut p = Problems::new();
    let mut err = |path: &str, msg: String| p.push((path.to_string(), msg));

    if !valid_stack_name(&spec.name) {
        err("name", format!("`{}` is not a valid stack name: use 2 to 32 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen", spec.name));
    }
    if !valid_region(&spec.region) {
        err("region", format!("`{}` is not an AWS region name (expected e.g. us-east-1, eu-west-2)", spec.region));
    }
    for (k, v) in &spec.tags {
        if k.starts_with("aws:") || k.starts_with("reconciler:") {
            err(&format!("tags.{k}"), format!("tag key `{k}` is reserved (aws:* belongs to AWS, reconciler:* to ownership)"));
        } else if k.is_empty() || k.len() > 128 || v.len() > 256 {
            err(&format!("tags.{k}"), "tag keys are 1 to 128 characters and values at most 256".into());
        }
    }

    for t in &spec.ignore_tags {
        let body = t.strip_suffix('*').unwrap_or(t);
        if body.is_empty() || body.contains('*') || body.len() > 128 {
            err("ignore_tags", format!("`{t}` is not a tag key or a prefix ending in `*` (1 to 128 characters)"));
        } else if body.starts_with("reconciler:") {
            err("ignore_tags", format!("`{t}`: the reconciler's own tags (ownership) cannot be ignored"));
        }
    }

    if let Some(l) = &spec.lock {
        let b = &l.bucket;
        if !valid_bucket(b) {
            err("lock.bucket", format!("`{b}` is not an S3 bucket name (3 to 63 lowercase letters, digits, dots and hyphens)"));
        }
        if !(60..=86_400).contains(&l.ttl_seconds) {
            err("lock.ttl_seconds", "ttl_seconds must be 60 to 86400".into());
        }
    }

    match (&spec.network.vpc, &spec.network.existing) {
        (Some(_), Some(_)) => err("network", "give either `vpc` (a new VPC) or `existing` (a VPC you own elsewhere), not both".into()),
        (None, None) => err("network", "missing `vpc` (a new VPC) or `existing` (vpc_id + private_subnet_ids)".into()),
        (Some(vpc), None) => validate_new_vpc(vpc, &mut err),
        (None, Some(ex)) => {
            if !ex.vpc_id.starts_with("vpc-") {
                err("network.existing.vpc_id", format!("`{}` is not a VPC id (vpc-...)", ex.vpc_id));
            }
            if ex.private_subnet_ids.len() < 2 {
                err("network.existing.private_subnet_ids", "give at least 2 private subnets, in 2 different availability zones".into());
            }
            for s in &ex.private_subnet_ids {
                if !s.starts_with("subnet-") {
                    err("network.existing.private_subnet_ids", format!("`{s}` is not a subnet id (subnet-...)"));
                }
            }
        }
    }

    if let Some(d) = &spec.discovery {
        if !valid_dns_name(&d.namespace) {
            err(
                "discovery.namespace",
                format!("`{}` is not a DNS name (labels of letters, digits and hyphens, separated by dots)", d.namespace),
            );
        }
        if !valid_dns_label(&d.service) {
            err("discovery.service", format!("`{}` is not a DNS label (letters, digits and hyphens, at most 63)", d.service));
        }
        if !(1..=2_147_483_647).contains(&d.ttl) {
            err("discovery.ttl", "ttl must be at least 1 second".into());
        }
        if !d.records.contains(&RecordType::Srv) {
            err("discovery.records", "records must include SRV: API Gateway finds each task's IP and port through SRV records".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        if d.records.iter().any(|r| !seen.insert(*r)) {
            err("discovery.records", "a record type is listed twice".into());
        }
    }

    if let Some(s) = &spec.service {
        if !valid_aws_name(&s.cluster, 255) {
            err(
                "service.cluster",
                format!("`{}` is not a valid ECS cluster name: letters, digits, hyphens and underscores, at most 255", s.cluster),
            );
        }
        if let Some(m) = image_problem(&s.image) {
            err("service.image", m);
        }
        if let Err(m) = fargate_size(s.cpu, s.memory) {
            let path = if FARGATE.iter().any(|(c, _)| *c == s.cpu) { "service.memory" } else { "service.cpu" };
            err(path, m);
        }
        if !(1..=65535).contains(&s.port) {
            err("service.port", format!("port {} is out of range: use 1 to 65535", s.port));
        }
        for (k, v) in &s.environment {
            let up = k.to_ascii_uppercase();
            if !valid_env_name(k) {
                err(&format!("service.environment.{k}"), format!("`{k}` is not a valid environment variable name"));
            } else if ["SECRET", "PASSWORD", "TOKEN", "PRIVATE_KEY"].iter().any(|w| up.contains(w)) && !v.starts_with("arn:") {
                err(
                    &format!("service.environment.{k}"),
                    format!("`{k}` looks like a secret given inline: move it to `service.secrets` as a Secrets Manager or SSM ARN"),
                );
            }
        }
        for (k, v) in &s.secrets {
            if !valid_env_name(k) {
                err(&format!("service.secrets.{k}"), format!("`{k}` is not a valid environment variable name"));
            }
            if !(v.starts_with("arn:") && (v.contains(":secretsmanager:") || v.contains(":ssm:"))) {
                err(
                    &format!("service.secrets.{k}"),
                    "secrets are references only: give a Secrets Manager or SSM parameter ARN, never the value".into(),
                );
            }
            if s.environment.contains_key(k) {
                err(&format!("service.secrets.{k}"), format!("`{k}` is also in `environment`: keep it in one place"));
            }
        }
        if let Some(sc) = &spec.scaling {
            if s.desired_count < sc.min || s.desired_count > sc.max {
                err(
                    "service.desired_count",
                    format!("desired_count {} must lie within scaling min {} and max {}", s.desired_count, sc.min, sc.max),
                );
            }
        }
    }

    if let Some(sc) = &spec.scaling {
        if sc.min > sc.max {
            err("scaling.min", format!("min ({}) is greater than max ({})", sc.min, sc.max));
        }
        if sc.max == 0 {
            err("scaling.max", "max must be at least 1".into());
        }
        for (name, v) in [("cpu_target", sc.cpu_target), ("memory_target", sc.memory_target)] {
            if let Some(v) = v {
                if !(1..=100).contains(&v) {
                    err(&format!("scaling.{name}"), format!("{name} is a percentage: use 1 to 100, not {v}"));
                }
            }
        }
        if sc.cpu_target.is_none() && sc.memory_target.is_none() {
            err("scaling", "give cpu_target, memory_target or both: without a target nothing scales".into());
        }
        if spec.service.is_none() {
            err("scaling", "scaling needs a `service` section".into());
        }
    }

    if let Some(s) = &spec.service {
        if !LOG_RETENTION_DAYS.contains(&s.logs.retention_days) {
            err(
                "service.logs.retention_days",
                format!("{} is not a retention CloudWatch Logs accepts; use one of {:?}", s.logs.retention_days, LOG_RETENTION_DAYS),
            );
        }
        if !(2..=120).contains(&s.stop_timeout_seconds) {
            err(
                "service.stop_timeout_seconds",
                format!("stop_timeout_seconds must be 2 to 120 (Fargate's limit), not {}", s.stop_timeout_seconds),
            );
        }
        if s.health_check_grace_seconds > 2_147_483_647 {
            err("service.health_check_grace_seconds", "health_check_grace_seconds is too large".into());
        }
        if s.capacity.fargate_weight + s.capacity.spot_weight == 0 {
            err("service.capacity", "fargate_weight and spot_weight are both 0: no task could be placed".into());
        }
        if s.capacity.fargate_weight > 1000 || s.capacity.spot_weight > 1000 || s.capacity.fargate_base > 100_000 {
            err("service.capacity", "weights are 0 to 1000 and fargate_base 0 to 100000".into());
        }
        for k in s.environment.keys().chain(s.secrets.keys()) {
            if WIRED_ENV.contains(&k.as_str()) {
                let section = if s.environment.contains_key(k) { "environment" } else { "secrets" };
                err(
                    &format!("service.{section}.{k}"),
                    format!("`{k}` is set by the reconciler from the stack (queues, `webhook`, region, port): remove it here"),
                );
            }
        }
    }
    let q = &spec.queue;
    if q.visibility_timeout_seconds > 43_200 {
        err("queue.visibility_timeout_seconds", "visibility_timeout_seconds must be 0 to 43200 (12 hours)".into());
    }
    if !(1..=1000).contains(&q.max_receive_count) {
        err("queue.max_receive_count", format!("max_receive_count must be 1 to 1000, not {}", q.max_receive_count));
    }
    if !(60..=1_209_600).contains(&q.retention_seconds) {
        err("queue.retention_seconds", "retention_seconds must be 60 to 1209600 (14 days)".into());
    }
    if let Some(w) = &spec.webhook {
        if spec.service.is_none() {
            err("webhook", "webhook needs a `service` section to run in".into());
        }
        if !(w.benchling_secret_arn.starts_with("arn:") && w.benchling_secret_arn.contains(":secretsmanager:")) {
            err(
                "webhook.benchling_secret_arn",
                "give the Secrets Manager ARN of the Benchling app secret (arn:aws:secretsmanager:...)".into(),
            );
        }
        if sqs_arn_parts(&w.packager_queue_arn).is_none() {
            err(
                "webhook.packager_queue_arn",
                format!("`{}` is not an SQS queue ARN (arn:aws:sqs:REGION:ACCOUNT:NAME)", w.packager_queue_arn),
            );
        }
        if !valid_bucket(&w.user_bucket) {
            err(
                "webhook.user_bucket",
                format!("`{}` is not an S3 bucket name (3 to 63 lowercase letters, digits, dots and hyphens)", w.user_bucket),
            );
        }
        if w.pkg_prefix.is_empty() || w.pkg_prefix.starts_with('/') || w.pkg_prefix.ends_with('/') || w.pkg_prefix.contains('*') {
            err("webhook.pkg_prefix", "pkg_prefix is a key prefix without leading or trailing `/` and without `*`".into());
        }
    }

    if let Some(api) = &spec.api {
        if api.name.is_empty() || api.name.len() > 128 {
            err("api.name", "api name must be 1 to 128 characters".into());
        }
        if let Some(l) = &api.access_logs {
            if !LOG_RETENTION_DAYS.contains(&l.retention_days) {
                err(
                    "api.access_logs.retention_days",
                    format!("{} is not a retention CloudWatch Logs accepts; use one of {:?}", l.retention_days, LOG_RETENTION_DAYS),
                );
            }
        }
        if let Some(t) = &api.throttling {
            if !(t.rate.is_finite() && t.rate >= 0.0) {
                err("api.throttling.rate", "rate must be a non-negative number of requests per second".into());
            }
            if (t.burst as f64) < t.rate.min(1.0) {
                err("api.throttling.burst", "burst must be at least 1 when rate is above 0".into());
            }
        }
        if let Some(d) = &api.domain {
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            };
            if d.name.len() > 253
                || d.name.split('.').count() < 2
                || !d.name.split('.').all(label_ok)
                || d.name != d.name.to_ascii_lowercase()
            {
                err("api.domain.name", format!("`{}` is not a lowercase host name such as hooks.example.com", d.name));
            }
            let parts: Vec<&str> = d.certificate_arn.split(':').collect();
            if parts.len() != 6 || parts[0] != "arn" || parts[2] != "acm" || !parts[5].starts_with("certificate/") {
                err(
                    "api.domain.certificate_arn",
                    format!("`{}` is not an ACM certificate ARN (arn:aws:acm:<region>:<account>:certificate/<id>)", d.certificate_arn),
                );
            } else if parts[3] != spec.region {
                err(
                    "api.domain.certificate_arn",
                    format!(
                        "the certificate is in {}, the stack in {}: a regional API domain needs a certificate in its own region",
                        parts[3], spec.region
                    ),
                );
            }
        }
        if spec.service.is_none() || spec.discovery.is_none() {
            err("api", "the HTTP API routes to the service through Cloud Map: it needs `service` and `discovery`".into());
        }
    }
    let c = &spec.cost;
    if c.requests_per_month > 1_000_000_000_000 {
        err("cost.requests_per_month", "requests_per_month is at most 10^12".into());
    }
    for (name, v) in [("nat_gb_per_month", c.nat_gb_per_month), ("log_gb_per_month", c.log_gb_per_month)] {
        if !(v.is_finite() && (0.0..=1e9).contains(&v)) {
            err(&format!("cost.{name}"), format!("{name} is a number of GB from 0 to 10^9, not {v}"));
        }
    }

    if let Some(d) = &spec.drift_correction {
        if let Some(m) = schedule_expression_problem(&d.schedule) {
            err("drift_correction.schedule", m);
        }
        if let Some(m) = image_problem(&d.image) {
            err("drift_correction.image", m);
        }
        if let Err(m) = fargate_size(d.cpu, d.memory) {
            let path = if FARGATE.iter().any(|(c, _)| *c == d.cpu) { "drift_correction.memory" } else { "drift_correction.cpu" };
            err(path, m);
        }
        if !LOG_RETENTION_DAYS.contains(&d.logs.retention_days) {
            err(
                "drift_correction.logs.retention_days",
                format!("{} is not a retention CloudWatch Logs accepts; use one of {:?}", d.logs.retention_days, LOG_RETENTION_DAYS),
            );
        }
        if spec.service.is_none() {
            err("drift_correction", "drift_correction runs as a task in the service's ECS cluster: it needs a `service` section".into());
        }
        // Unattended applies every few minutes, beside people's applies and destroys: without
        // a lease nothing keeps two of them from changing the stack at once (a destroy racing
        // a pass that re-creates what it just deleted).
        if d.mode == DriftMode::Apply && spec.lock.is_none() {
            err(
                "drift_correction.mode",
                "drift correction in `mode: apply` changes the stack unattended: it needs a `lock:` (an S3 bucket you own, e.g. `lock: {bucket: my-ops-bucket}`) so that it never runs at the same time as a person's apply or destroy; or use `mode: plan-only`".into(),
            );
        }
        // The task definition carries the spec (RECONCILER_SPEC); ECS allows 64 KiB for all of it.
        let size = serde_json::to_string(spec).map(|t| t.len()).unwrap_or(0);
        if size > MAX_SPEC_IN_TASK {
            err(
                "drift_correction",
                format!("the spec is {size} bytes as JSON; the task definition carries it and holds at most {MAX_SPEC_IN_TASK} of them (ECS allows 64 KiB per task definition)"),
            );
        }
        // The task role holds the printed policy inline; IAM allows 10,240 characters.
        let (purpose, flag) = match d.mode {
            DriftMode::Apply => (crate::engine::policy::Purpose::Apply, "apply"),
            DriftMode::PlanOnly => (crate::engine::policy::Purpose::Plan, "plan"),
        };
        let chars = crate::spec::policy::inline_size(&crate::spec::policy::document(spec, purpose));
        if chars > crate::spec::policy::INLINE_LIMIT {
            err(
                "drift_correction",
                format!(
                    "the task role would hold `reconciler policy --for {flag}` inline, {chars} characters without spaces, but IAM allows {} per role: use `mode: plan-only`, or run drift correction outside the stack (examples/drift-correction/)",
                    crate::spec::policy::INLINE_LIMIT
                ),
            );
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::cidr::Cidr;

    #[test]
    fn fargate_table() {
        assert!(fargate_size(256, 512).is_ok());
        assert!(fargate_size(256, 2048).is_ok());
        assert!(fargate_size(256, 4096).is_err());
        assert!(fargate_size(512, 3072).is_ok());
        assert!(fargate_size(4096, 30720).is_ok());
        assert!(fargate_size(8192, 20480).is_ok());
        assert!(fargate_size(8192, 18432).is_err());
        assert!(fargate_size(300, 512).unwrap_err().contains("not a Fargate size"));
        assert!(fargate_size(1024, 1024).unwrap_err().contains("2048..=8192"));
    }

    #[test]
    fn default_subnet_layout_matches_the_seed_design() {
        let vpc: Cidr = "10.0.0.0/16".parse().unwrap();
        let s = |v: Vec<Cidr>| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(s(default_subnets(vpc, 2, false).unwrap()), ["10.0.0.0/24", "10.0.1.0/24"]);
        assert_eq!(s(default_subnets(vpc, 2, true).unwrap()), ["10.0.128.0/24", "10.0.129.0/24"]);
        assert!(default_subnets("10.0.0.0/24".parse().unwrap(), 2, false).is_none());
    }

    #[test]
    fn schedule_expressions() {
        for ok in [
            "rate(1 minute)",
            "rate(15 minutes)",
            "rate(2 hours)",
            "rate(1 day)",
            "cron(0/15 * * * ? *)",
            "cron(0 3 ? * MON-FRI *)",
            "at(2030-01-01T00:00:00)",
        ] {
            assert_eq!(schedule_expression_problem(ok), None, "{ok}");
        }
        for (bad, says) in [
            ("rate(0 minutes)", "at least 1"),
            ("rate(1 minutes)", "singular"),
            ("rate(5 minute)", "plural"),
            ("rate(5 weeks)", "minute(s), hour(s) or day(s)"),
            ("rate(-5 minutes)", "whole number"),
            ("rate(15)", "a number and a unit"),
            ("cron(0/15 * * * *)", "6 fields"),
            ("cron(0 3 * * * *)", "exactly one"),
            ("cron(0 3 ? * ? *)", "exactly one"),
            ("cron(0 3 ? * MON; *)", "not a cron field"),
            ("at(2030-01-01 00:00)", "at(yyyy-mm-ddThh:mm:ss)"),
            ("every 15 minutes", "not a schedule expression"),
            ("weekly(1)", "not a schedule expression"),
        ] {
            let m = schedule_expression_problem(bad).unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(m.contains(says), "{bad}: {m}");
        }
    }

    #[test]
    fn names() {
        assert!(valid_stack_name("benchling-webhook"));
        assert!(!valid_stack_name("Benchling"));
        assert!(!valid_stack_name("a-"));
        assert!(valid_region("us-east-1") && valid_region("us-gov-west-1"));
        assert!(!valid_region("useast1") && !valid_region("us-east"));
        assert!(valid_dns_name("benchling.local") && !valid_dns_name("a..b"));
        assert_eq!(sqs_arn_parts("arn:aws:sqs:us-east-1:123456789012:packager"), Some(("us-east-1", "123456789012", "packager")));
        assert!(sqs_arn_parts("arn:aws:sqs:us-east-1:1234:packager").is_none());
        assert!(sqs_arn_parts("https://sqs.us-east-1.amazonaws.com/123456789012/q").is_none());
    }
}
