//! What a user needs after `apply`: the webhook URL and the three paths for the Benchling app
//! manifest, and the names of what runs it. Read from live state (`reconciler output` only
//! reads); printed after every apply.
//!
//! The JSON form (`output --format json`) is stable: keys are only ever added. Values not
//! created yet are `null`.

use crate::engine::Observed;
use crate::ids;
use serde::Serialize;
use std::collections::BTreeMap;

/// The kinds the outputs are read from: after an apply only these are read again.
pub const KINDS: [&str; 7] =
    ["apigateway:api", "apigateway:domain-name", "apigateway:vpc-link", "ecs:cluster", "ecs:service", "logs:log-group", "sqs:queue"];

/// The Benchling webhook paths (the service serves each; `$default` adds no stage prefix).
pub const PATHS: [(&str, &str); 3] = [("event", "/event"), ("lifecycle", "/lifecycle"), ("canvas", "/canvas")];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outputs {
    pub stack: String,
    pub region: String,
    /// `https://<api-id>.execute-api.<region>.amazonaws.com`, or `https://<custom domain>`;
    /// no trailing slash.
    pub webhook_url: Option<String>,
    /// With a custom domain: the DNS record the user creates so that the name reaches API
    /// Gateway (`null` without one).
    pub dns_record: Option<DnsRecord>,
    /// The URLs to paste into the Benchling app manifest: `event`, `lifecycle`, `canvas`.
    pub manifest: Option<BTreeMap<String, String>>,
    pub api_id: Option<String>,
    pub vpc_link_id: Option<String>,
    pub cluster: Option<String>,
    pub service: Option<String>,
    /// Logical id → log group name.
    pub log_groups: BTreeMap<String, String>,
    /// Logical id → queue URL.
    pub queues: BTreeMap<String, String>,
}

/// A CNAME from the custom domain to API Gateway's regional name (or, in Route 53, an alias
/// to it in `hosted_zone_id`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DnsRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: String,
    /// `d-xxxx.execute-api.<region>.amazonaws.com`; `null` until the domain exists (or where
    /// the endpoint reports none, as moto).
    pub value: Option<String>,
    pub hosted_zone_id: Option<String>,
}

impl DnsRecord {
    pub fn describe(&self) -> String {
        let value = self.value.clone().unwrap_or_else(|| crate::engine::UNKNOWN.to_string());
        let zone = self.hosted_zone_id.as_ref().map(|z| format!(" (or a Route 53 alias to it, hosted zone {z})")).unwrap_or_default();
        format!("{} {} -> {value}{zone}", self.record_type, self.name)
    }
}

/// The DNS record a custom domain needs, from what observe found (the name from the spec
/// when the domain is not created yet).
pub fn dns_record(wanted: Option<&str>, observed: &[Observed]) -> Option<DnsRecord> {
    let live = find(observed, "apigateway:domain-name", ids::DOMAIN_NAME);
    let name = live.map(|o| o.physical_id.clone()).or_else(|| wanted.map(str::to_string))?;
    Some(DnsRecord {
        name,
        record_type: "CNAME".into(),
        value: live.and_then(|o| o.attrs.get("target").cloned()),
        hosted_zone_id: live.and_then(|o| o.attrs.get("hosted_zone_id").cloned()),
    })
}

fn find<'a>(observed: &'a [Observed], kind: &str, id: &str) -> Option<&'a Observed> {
    observed.iter().find(|o| o.kind == kind && o.id == id)
}

fn attr(observed: &[Observed], kind: &str, id: &str, attr: &str) -> Option<String> {
    find(observed, kind, id).and_then(|o| o.attrs.get(attr)).cloned()
}

/// The outputs of a stack from what observe found.
pub fn from_observed(stack: &str, region: &str, observed: &[Observed]) -> Outputs {
    let dns_record = dns_record(None, observed);
    let webhook_url = match &dns_record {
        Some(d) => Some(format!("https://{}", d.name)),
        None => attr(observed, "apigateway:api", ids::API, "endpoint").map(|e| e.trim_end_matches('/').to_string()),
    };
    let manifest = webhook_url.as_ref().map(|base| PATHS.iter().map(|(name, path)| (name.to_string(), format!("{base}{path}"))).collect());
    let of_kind = |kind: &str, value: &dyn Fn(&Observed) -> Option<String>| -> BTreeMap<String, String> {
        observed.iter().filter(|o| o.kind == kind).filter_map(|o| Some((o.id.clone(), value(o)?))).collect()
    };
    Outputs {
        stack: stack.to_string(),
        region: region.to_string(),
        webhook_url,
        dns_record,
        manifest,
        api_id: find(observed, "apigateway:api", ids::API).map(|o| o.physical_id.clone()),
        vpc_link_id: find(observed, "apigateway:vpc-link", ids::VPC_LINK).map(|o| o.physical_id.clone()),
        cluster: attr(observed, "ecs:cluster", ids::CLUSTER, "name"),
        service: attr(observed, "ecs:service", ids::SERVICE, "name"),
        log_groups: of_kind("logs:log-group", &|o| Some(o.physical_id.clone())),
        queues: of_kind("sqs:queue", &|o| o.attrs.get("url").cloned()),
    }
}

/// The text form, for people.
pub fn render_text(o: &Outputs) -> String {
    let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "(not created)".into());
    let mut s = String::new();
    s.push_str(&format!("Outputs of stack `{}` ({}):\n", o.stack, o.region));
    s.push_str(&format!("  webhook URL:  {}\n", or_none(&o.webhook_url)));
    if let Some(d) = &o.dns_record {
        s.push_str(&format!("  DNS record to create: {}\n", d.describe()));
    }
    if let Some(m) = &o.manifest {
        s.push_str("  Benchling app manifest (webhook URLs):\n");
        for (name, _) in PATHS {
            s.push_str(&format!("    {name:<10} {}\n", m.get(name).cloned().unwrap_or_default()));
        }
    }
    s.push_str(&format!("  cluster:      {}\n", or_none(&o.cluster)));
    s.push_str(&format!("  service:      {}\n", or_none(&o.service)));
    for (id, name) in &o.log_groups {
        s.push_str(&format!("  log group:    {name} ({id})\n"));
    }
    for (id, url) in &o.queues {
        s.push_str(&format!("  queue:        {url} ({id})\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After an apply only these kinds are read again: each must be a registered kind, and
    /// every kind this module looks up must be among them.
    #[test]
    fn the_output_kinds_are_registered_and_complete() {
        let registered: Vec<&str> = crate::resources::registry().iter().map(|k| k.name()).collect();
        for k in KINDS {
            assert!(registered.contains(&k), "{k} is not a registered kind");
        }
        let source = include_str!("outputs.rs");
        let looked_up =
            registered.iter().filter(|k| source.contains(&format!("observed, \"{k}\"")) || source.contains(&format!("of_kind(\"{k}\"")));
        for k in looked_up {
            assert!(KINDS.contains(k), "outputs read {k} but KINDS does not list it");
        }
    }
    use crate::engine::{Fields, Identity};

    fn item(kind: &'static str, id: &str, physical: &str, identity: Identity) -> Observed {
        Observed { attrs: identity.attrs, ..Observed::new(kind, id.into(), physical.into(), Fields::new()) }
    }

    fn stack() -> Vec<Observed> {
        vec![
            item(
                "apigateway:api",
                "api",
                "a1b2",
                Identity::id("a1b2").with("endpoint", "https://a1b2.execute-api.eu-west-1.amazonaws.com"),
            ),
            item("ecs:cluster", "cluster", "arn:c", Identity::id("arn:c").with("name", "webhooks")),
            item("ecs:service", "service", "arn:s", Identity::id("arn:s").with("name", "hooks")),
            item("logs:log-group", "log-container", "/ecs/hooks", Identity::id("/ecs/hooks")),
            item("sqs:queue", "queue", "https://q/1", Identity::id("https://q/1").with("url", "https://q/1")),
        ]
    }

    #[test]
    fn the_manifest_paths_hang_off_the_endpoint() {
        let o = from_observed("hooks", "eu-west-1", &stack());
        let m = o.manifest.clone().unwrap();
        assert_eq!(m["event"], "https://a1b2.execute-api.eu-west-1.amazonaws.com/event");
        assert_eq!(m["lifecycle"], "https://a1b2.execute-api.eu-west-1.amazonaws.com/lifecycle");
        assert_eq!(m["canvas"], "https://a1b2.execute-api.eu-west-1.amazonaws.com/canvas");
        assert_eq!(o.cluster.as_deref(), Some("webhooks"));
        assert_eq!(o.queues["queue"], "https://q/1");
        let text = render_text(&o);
        assert!(text.contains("webhook URL:  https://a1b2.execute-api.eu-west-1.amazonaws.com\n"), "{text}");
        assert!(text.contains("lifecycle  https://a1b2.execute-api.eu-west-1.amazonaws.com/lifecycle"), "{text}");
    }

    /// The JSON keys are a contract (documented in the README): adding is fine, renaming not.
    #[test]
    fn json_keys_are_stable() {
        let v = serde_json::to_value(from_observed("hooks", "eu-west-1", &stack())).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "api_id",
                "cluster",
                "dns_record",
                "log_groups",
                "manifest",
                "queues",
                "region",
                "service",
                "stack",
                "vpc_link_id",
                "webhook_url"
            ]
        );
        let empty = serde_json::to_value(from_observed("hooks", "eu-west-1", &[])).unwrap();
        assert_eq!(empty["webhook_url"], serde_json::Value::Null);
        assert_eq!(empty["manifest"], serde_json::Value::Null);
    }

    #[test]
    fn a_custom_domain_is_the_url_and_names_its_dns_record() {
        let mut observed = stack();
        observed.push(item(
            "apigateway:domain-name",
            "domain-name",
            "hooks.example.com",
            Identity::id("hooks.example.com")
                .with("target", "d-abc.execute-api.eu-west-1.amazonaws.com")
                .with("hosted_zone_id", "Z2FDTNDATAQYW2"),
        ));
        let o = from_observed("hooks", "eu-west-1", &observed);
        assert_eq!(o.webhook_url.as_deref(), Some("https://hooks.example.com"));
        assert_eq!(o.manifest.unwrap()["event"], "https://hooks.example.com/event");
        let text = render_text(&from_observed("hooks", "eu-west-1", &observed));
        assert!(
            text.contains("DNS record to create: CNAME hooks.example.com -> d-abc.execute-api.eu-west-1.amazonaws.com (or a Route 53 alias to it, hosted zone Z2FDTNDATAQYW2)"),
            "{text}"
        );
        // Before the domain exists, the plan can still name the record.
        assert_eq!(dns_record(Some("hooks.example.com"), &[]).unwrap().describe(), "CNAME hooks.example.com -> (known after apply)");
    }
}
