//! `reconciler verify`: is the webhook reachable from the internet, and if not, which hop of
//! the chain is broken? It calls the public `GET /health/ready` and, when that fails, reads
//! the control plane along the chain (stage → integration → VPC link → ECS tasks → Cloud Map
//! instances) and names the first hop that is wrong, with the evidence. Read-only: the plan
//! policy (plus the reads in `spec::policy::VERIFY_READS`) suffices.
//!
//! The decision is [`diagnose`], pure and unit-tested hop by hop; gathering the evidence is
//! I/O only.

use crate::engine::{Observed, Status};
use crate::ids;
use serde::Serialize;
use std::time::Duration;

/// The readiness path the service serves.
pub const READY_PATH: &str = "/health/ready";

/// What the public endpoint answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Endpoint {
    /// The stack has no API endpoint to call (and none was given).
    NoUrl,
    /// No HTTP answer: DNS, connection or TLS failure, or a timeout.
    Unreachable { url: String, error: String },
    /// An HTTP answer.
    Answered { url: String, status: u16, body: String },
}

/// Where the service's tasks stand.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tasks {
    pub running: i32,
    pub desired: i32,
    pub last_stopped: Option<String>,
}

/// Everything the diagnosis looks at. `None` means "the stack has no such resource".
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    pub endpoint: Endpoint,
    pub stage: bool,
    pub integration: bool,
    pub vpc_link: Option<Status>,
    pub tasks: Option<Tasks>,
    /// (instance id, health) of the Cloud Map service's registered instances.
    pub instances: Option<Vec<(String, String)>>,
}

impl Evidence {
    /// The endpoint's answer alone (enough when it answered 200).
    pub fn endpoint_only(endpoint: Endpoint) -> Self {
        Evidence { endpoint, stage: false, integration: false, vpc_link: None, tasks: None, instances: None }
    }
}

/// Whether the endpoint answered ready.
pub fn is_ready(e: &Endpoint) -> bool {
    matches!(e, Endpoint::Answered { status: 200, .. })
}

/// One hop of the chain and how it looks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hop {
    pub hop: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The verdict: ready, or the first broken hop (`broken`), with every hop's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub ready: bool,
    pub broken: Option<&'static str>,
    pub hops: Vec<Hop>,
}

fn hop(hop: &'static str, ok: bool, detail: impl Into<String>) -> Hop {
    Hop { hop, ok, detail: detail.into() }
}

/// The chain, from the caller inwards. Ready when the public endpoint answers 200 (the control
/// plane is then not consulted); otherwise
/// the first control-plane hop that is wrong is the broken one, and when the control plane
/// looks right, the endpoint's own answer says which end failed (503/504: API Gateway could
/// not reach a target; another status: the service answered, but not ready).
pub fn diagnose(e: &Evidence) -> Verdict {
    let mut hops = Vec::new();
    let ready = is_ready(&e.endpoint);
    let first = match &e.endpoint {
        Endpoint::NoUrl => hop("endpoint", false, "the stack has no HTTP API yet (run apply), and no --endpoint was given"),
        Endpoint::Unreachable { url, error } => hop(
            "endpoint",
            false,
            format!("cannot reach {url}{READY_PATH} from here: {error} (checked the control plane instead; from a machine that reaches AWS, run verify again)"),
        ),
        Endpoint::Answered { url, status, body } => {
            hop("endpoint", *status == 200, format!("GET {url}{READY_PATH} answered {status}{}", snippet(body)))
        }
    };
    hops.push(first);
    // Answered through the whole chain: nothing behind it needs looking at.
    if ready {
        return Verdict { ready, broken: None, hops };
    }
    hops.push(if e.stage {
        hop("stage", true, "stage $default exists (auto-deploy)")
    } else {
        hop("stage", false, "stage $default is missing: API Gateway answers 404 for every path; run apply")
    });
    hops.push(if e.integration {
        hop("integration", true, "private integration over the VPC link to the Cloud Map service")
    } else {
        hop("integration", false, "the API has no integration to the service: run apply")
    });
    hops.push(match &e.vpc_link {
        None => hop("vpc link", false, "the stack has no VPC link: run apply"),
        Some(Status::Ready) => hop("vpc link", true, "VPC link AVAILABLE"),
        Some(Status::Pending(why)) => hop("vpc link", false, format!("{why}: not AVAILABLE yet (it takes minutes after a create)")),
        Some(Status::Failed(why)) => hop("vpc link", false, format!("{why}: apply replaces a failed VPC link")),
        Some(Status::Degraded(why)) => hop("vpc link", false, why.clone()),
        Some(Status::Leaving(why)) => hop("vpc link", false, format!("{why}: being deleted; run apply to create the stack's link")),
    });
    hops.push(match &e.tasks {
        None => hop("ecs service", false, "the ECS service does not exist: run apply"),
        Some(t) if t.running == 0 => hop(
            "ecs service",
            false,
            format!(
                "0 of {} tasks running; last stopped task: {}",
                t.desired,
                t.last_stopped.as_deref().unwrap_or("none recorded (see the service's events and the container log group)")
            ),
        ),
        Some(t) => hop("ecs service", true, format!("{} of {} tasks running", t.running, t.desired)),
    });
    hops.push(match &e.instances {
        None => hop("cloud map", false, "the stack has no Cloud Map service: run apply"),
        Some(list) if list.is_empty() => {
            hop("cloud map", false, "no instance registered in the Cloud Map service (ECS registers running tasks)")
        }
        Some(list) => {
            let healthy = list.iter().filter(|(_, h)| h == "HEALTHY").count();
            let all: Vec<String> = list.iter().map(|(id, h)| format!("{id} {h}")).collect();
            let detail = format!("{healthy} of {} instances healthy ({})", list.len(), all.join(", "));
            if healthy == 0 {
                hop("cloud map", false, format!("{detail}: the container health check fails (see the container log group)"))
            } else {
                hop("cloud map", true, detail)
            }
        }
    });
    let control_plane_ok = hops[1..].iter().all(|h| h.ok);
    if control_plane_ok {
        if let Endpoint::Answered { status, .. } = &e.endpoint {
            hops.push(match status {
                503 | 504 => hop(
                    "integration",
                    false,
                    format!("API Gateway answered {status}: the integration could not reach a healthy task in time (security group sg-vpc-link → sg-service on the service port, or the service is slow)"),
                ),
                _ => hop("service", false, format!("the service answered {status}: it runs but is not ready (its dependencies; see the container log group)")),
            });
        }
    }
    let broken = hops[1..].iter().chain(hops.iter().take(1)).find(|h| !h.ok).map(|h| h.hop);
    Verdict { ready, broken, hops }
}

fn snippet(body: &str) -> String {
    let b: String = body.chars().take(200).collect();
    if b.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", b.trim())
    }
}

/// Calls `GET <url>/health/ready` (10 s timeout).
pub async fn call_endpoint(url: Option<&str>) -> Endpoint {
    let Some(url) = url else { return Endpoint::NoUrl };
    let url = url.trim_end_matches('/').to_string();
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(c) => c,
        Err(e) => return Endpoint::Unreachable { url, error: e.to_string() },
    };
    match client.get(format!("{url}{READY_PATH}")).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            Endpoint::Answered { url, status, body }
        }
        Err(e) => Endpoint::Unreachable { url, error: unreachable(&e) },
    }
}

/// Why a request got no answer, in a person's words: the innermost cause (`Connection refused
/// (os error 111)`, `failed to lookup address information: …`), not the client library's
/// chain of wrappers (the URL is shown beside it already).
fn unreachable(e: &reqwest::Error) -> String {
    let mut root: &dyn std::error::Error = e;
    while let Some(s) = root.source() {
        root = s;
    }
    if e.is_timeout() {
        "no answer within 10 s".to_string()
    } else if e.is_connect() {
        format!("could not connect: {root}")
    } else {
        root.to_string()
    }
}

/// The control-plane evidence from an observed snapshot, plus the ECS and Cloud Map reads.
pub async fn gather(ctx: &crate::engine::Ctx, observed: &[Observed], endpoint: Endpoint) -> anyhow::Result<Evidence> {
    let find = |kind: &str, id: &str| observed.iter().find(|o| o.kind == kind && o.id == id);
    let tasks = match find("ecs:service", ids::SERVICE) {
        Some(svc) => {
            let cluster = svc.fields.get("cluster_name").and_then(|v| v.as_str()).unwrap_or_default();
            let name = svc.attrs.get("name").cloned().unwrap_or_default();
            crate::resources::ecs::task_health(ctx, cluster, &name).await?.map(|t| Tasks {
                running: t.running,
                desired: t.desired,
                last_stopped: t.last_stopped,
            })
        }
        None => None,
    };
    let instances = match find("servicediscovery:service", ids::DISCOVERY_SERVICE) {
        Some(s) => Some(crate::resources::servicediscovery::instance_health(ctx, &s.physical_id).await?),
        None => None,
    };
    Ok(Evidence {
        endpoint,
        stage: find("apigateway:stage", ids::STAGE).is_some(),
        integration: find("apigateway:integration", ids::INTEGRATION).is_some(),
        vpc_link: find("apigateway:vpc-link", ids::VPC_LINK).map(|o| o.status.clone()),
        tasks,
        instances,
    })
}

/// The text form of a verdict.
pub fn render_text(v: &Verdict) -> String {
    let mut s = String::new();
    for h in &v.hops {
        s.push_str(&format!("  [{}] {:<12} {}\n", if h.ok { " ok " } else { "FAIL" }, h.hop, h.detail));
    }
    match v.broken {
        None => s.push_str("READY: the webhook answers through the whole chain.\n"),
        Some(b) => s.push_str(&format!("NOT READY: broken hop: {b}\n")),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Evidence {
        Evidence {
            endpoint: Endpoint::Answered { url: "https://a.example".into(), status: 200, body: r#"{"status":"ready"}"#.into() },
            stage: true,
            integration: true,
            vpc_link: Some(Status::Ready),
            tasks: Some(Tasks { running: 2, desired: 2, last_stopped: None }),
            instances: Some(vec![("t1".into(), "HEALTHY".into()), ("t2".into(), "HEALTHY".into())]),
        }
    }

    fn failing(status: u16) -> Evidence {
        Evidence { endpoint: Endpoint::Answered { url: "https://a.example".into(), status, body: String::new() }, ..healthy() }
    }

    #[test]
    fn ready_when_the_endpoint_answers_200() {
        let v = diagnose(&healthy());
        assert!(v.ready);
        assert_eq!(v.broken, None);
        assert!(v.hops.iter().all(|h| h.ok), "{v:?}");
        // Answered 200: the chain works, whatever the control plane (read with a delay) says.
        let stale = Evidence { tasks: Some(Tasks { running: 0, desired: 2, last_stopped: None }), ..healthy() };
        assert!(diagnose(&stale).ready);
        assert!(render_text(&v).contains("READY"));
    }

    #[test]
    fn each_broken_hop_is_named() {
        let cases: Vec<(Evidence, &str, &str)> = vec![
            (Evidence { stage: false, ..failing(404) }, "stage", "stage $default is missing"),
            (Evidence { integration: false, ..failing(500) }, "integration", "no integration"),
            (Evidence { vpc_link: Some(Status::Pending("VPC link PENDING".into())), ..failing(503) }, "vpc link", "not AVAILABLE"),
            (Evidence { vpc_link: None, ..failing(503) }, "vpc link", "no VPC link"),
            (
                Evidence {
                    tasks: Some(Tasks { running: 0, desired: 2, last_stopped: Some("Essential container exited".into()) }),
                    ..failing(503)
                },
                "ecs service",
                "0 of 2 tasks running; last stopped task: Essential container exited",
            ),
            (
                Evidence { instances: Some(vec![("t1".into(), "UNHEALTHY".into())]), ..failing(503) },
                "cloud map",
                "0 of 1 instances healthy (t1 UNHEALTHY)",
            ),
            (Evidence { instances: Some(vec![]), ..failing(503) }, "cloud map", "no instance registered"),
            (failing(504), "integration", "API Gateway answered 504"),
            (failing(500), "service", "the service answered 500"),
        ];
        for (evidence, hop, detail) in cases {
            let v = diagnose(&evidence);
            assert!(!v.ready);
            assert_eq!(v.broken, Some(hop), "{evidence:?}\n{v:?}");
            let text = render_text(&v);
            assert!(text.contains(detail) && text.contains(&format!("broken hop: {hop}")), "{text}");
        }
    }

    /// A closed port on loopback: the reason in one short line, without the HTTP client's
    /// wrappers.
    #[tokio::test]
    async fn an_unreachable_endpoint_reads_as_its_reason() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}");
        let Endpoint::Unreachable { url: shown, error } = call_endpoint(Some(&url)).await else { panic!("a closed port answered") };
        assert_eq!(shown, url);
        assert!(error.starts_with("could not connect: ") && error.to_lowercase().contains("refused"), "{error}");
        assert!(!error.contains("error sending request") && !error.contains("client error"), "no wrapper chain: {error}");
    }

    #[test]
    fn an_unreachable_endpoint_says_so_and_still_checks_the_chain() {
        let e = Evidence {
            endpoint: Endpoint::Unreachable { url: "https://x.execute-api.us-east-1.amazonaws.com".into(), error: "dns error".into() },
            tasks: Some(Tasks { running: 0, desired: 2, last_stopped: None }),
            ..healthy()
        };
        let v = diagnose(&e);
        let text = render_text(&v);
        assert!(text.contains("cannot reach https://x.execute-api.us-east-1.amazonaws.com/health/ready from here: dns error"), "{text}");
        assert_eq!(v.broken, Some("ecs service"), "the control plane's broken hop comes first");
        // Nothing wrong in the control plane: the endpoint itself is the broken hop.
        let only_endpoint = Evidence { endpoint: e.endpoint.clone(), ..healthy() };
        assert_eq!(diagnose(&only_endpoint).broken, Some("endpoint"));
        assert_eq!(diagnose(&Evidence { endpoint: Endpoint::NoUrl, ..healthy() }).broken, Some("endpoint"));
    }
}
