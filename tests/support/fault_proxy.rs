//! A fault proxy between the SDK and moto, and the AWS behaviour model the tests script with it.
//!
//! moto answers at once and never says "not yet"; AWS does. The proxy forwards every request,
//! counts them by `service:Action` (`ec2:CreateVpc`, `iam:CreateRole`, `ecs:CreateService`;
//! REST services by method and path with ids starred: `apigateway:POST /vpclinks`,
//! `apigateway:DELETE /vpclinks/*`, `scheduler:POST /schedules/*`), and answers in each
//! protocol's own wire format: EC2's query XML, the awsQuery XML of IAM and STS, the JSON
//! protocols (`x-amzn-ErrorType` and `__type`) of ECS, Cloud Map, CloudWatch Logs, Application
//! Auto Scaling and SQS, and REST-JSON (API Gateway, Scheduler). It listens on 127.0.0.1 only.
//!
//! What a test can script ([`Rule`]), per action or per service (`apigateway:*`):
//! - any error (status, code, message, `Retry-After`), before forwarding or after it (the change
//!   happened, the client got an error), or forward and then drop the connection (a lost answer);
//! - **time windows**: the first K matching calls, S seconds after the first or the last
//!   forwarded call of a trigger action, until a trigger action is first forwarded, or at random
//!   with a probability (seeded, so a failure can be replayed);
//! - **state rewriting** of forwarded answers (a NAT gateway `pending`, a VPC link `PENDING`);
//! - **listing lag** ([`FaultProxy::listing_lag`]): an id a create returned is left out of a
//!   listing's answer for S seconds;
//! - **rate limits** ([`FaultProxy::rate_limit`]): token buckets per service or action, answered
//!   with the service's own throttling error (API Gateway: 429 with `Retry-After`);
//! - **a kill hook** ([`FaultProxy::kill_after_mutations`], [`FaultProxy::kill_after_call`]):
//!   SIGKILL a process right after the Nth mutating call (or the Nth call of one action) was
//!   forwarded, before it sees the answer.
//!
//! Durations are scaled down for tests (seconds, not minutes).
#![allow(dead_code)]

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The original, simple faults: one per call, in order, for the next calls of an action.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// The service's throttling error, before the call reaches moto.
    Throttle,
    /// 500 InternalError, before the call reaches moto.
    ServerError,
    /// The call reaches moto (and takes effect), then the client gets 500 InternalError.
    ServerErrorAfterForwarding,
    /// 400 InvalidParameterValue: must never be retried.
    Validation,
    /// 400 InvalidVpcID.NotFound: what EC2's eventual consistency looks like right after a create.
    NotYetVisible,
    /// The call is held this many milliseconds, then forwarded (a slow call in flight).
    Delay(u64),
}

/// When a [`Rule`] applies.
#[derive(Clone, Debug)]
pub enum Window {
    Always,
    /// The first K matching calls.
    First(usize),
    /// For S seconds after the first forwarded call of the trigger action.
    AfterFirst(String, f64),
    /// For S seconds after the latest forwarded call of the trigger action.
    AfterLast(String, f64),
    /// Until the trigger action is first forwarded.
    Until(String),
    /// Each matching call with this probability.
    Random(f64),
    /// Every nth matching call (the nth, the 2nth, ...).
    Every(usize),
}

/// What a [`Rule`] does to a matching call.
#[derive(Clone, Debug)]
pub enum Effect {
    Error {
        status: u16,
        code: String,
        message: String,
        retry_after: Option<f64>,
        after_forwarding: bool,
    },
    /// The service's own throttling error (API Gateway: 429 TooManyRequestsException).
    Throttle,
    /// The protocol's 500, before forwarding or after it.
    ServerError {
        after_forwarding: bool,
    },
    /// Forward, then drop the connection before the answer: the change happened, the client
    /// never hears of it.
    DropAfterForwarding,
    /// Forward, then replace `from` with `to` in the answer.
    Rewrite {
        from: String,
        to: String,
    },
    /// Hold the call this long, then go on.
    Delay(Duration),
    /// Forward at once, but answer no sooner than this after the call arrived (see
    /// [`Rule::latency`]).
    Latency(Duration),
    /// Answer with this status and JSON body without forwarding (a state moto cannot show,
    /// like a VPC link still DELETING after moto forgot it).
    Respond {
        status: u16,
        body: String,
    },
}

/// One scripted behaviour: which calls (`service:Action`, `service:*`, or `*`), when, and what.
#[derive(Clone, Debug)]
pub struct Rule {
    pub action: String,
    pub effect: Effect,
    pub window: Window,
    /// Calls that matched while the window was open.
    hits: usize,
    /// Calls that matched.
    seen: usize,
}

impl Rule {
    /// An error answer (`status`, `code`, `message`) in the protocol of the call.
    pub fn error(action: &str, status: u16, code: &str, message: &str) -> Rule {
        Rule::new(action, Effect::Error { status, code: code.into(), message: message.into(), retry_after: None, after_forwarding: false })
    }

    /// The call's own throttling answer, in its protocol.
    pub fn throttle(action: &str) -> Rule {
        Rule::new(action, Effect::Throttle)
    }

    /// The protocol's 500 InternalError.
    pub fn server_error(action: &str) -> Rule {
        Rule::new(action, Effect::ServerError { after_forwarding: false })
    }

    /// Forward, then drop the connection: a lost answer.
    pub fn drop_answer(action: &str) -> Rule {
        Rule::new(action, Effect::DropAfterForwarding)
    }

    /// Forward, then rewrite the answer.
    pub fn rewrite(action: &str, from: &str, to: &str) -> Rule {
        Rule::new(action, Effect::Rewrite { from: from.into(), to: to.into() })
    }

    /// Answer with `status` and the JSON `body`, without forwarding.
    pub fn respond(action: &str, status: u16, body: &str) -> Rule {
        Rule::new(action, Effect::Respond { status, body: body.into() })
    }

    pub fn delay(action: &str, d: Duration) -> Rule {
        Rule::new(action, Effect::Delay(d))
    }

    /// The network's and the service's time, as a client sees it: every answer leaves `d`
    /// after its call arrived (or when the emulator answers, if later). Unlike [`Rule::delay`]
    /// the call is forwarded at once, so an emulator that answers one call at a time (moto
    /// here) works through its queue during the latency, as AWS answers concurrently. Always
    /// on (a window set on it is not looked at); with a delay too, the later of the two holds.
    pub fn latency(action: &str, d: Duration) -> Rule {
        Rule::new(action, Effect::Latency(d))
    }

    fn new(action: &str, effect: Effect) -> Rule {
        assert!(action == "*" || action.contains(':'), "name actions as service:Action, e.g. ec2:CreateVpc");
        Rule { action: action.into(), effect, window: Window::Always, hits: 0, seen: 0 }
    }

    /// The error is answered after the call was forwarded (it took effect).
    pub fn after_forwarding(mut self) -> Rule {
        if let Effect::Error { after_forwarding, .. } | Effect::ServerError { after_forwarding } = &mut self.effect {
            *after_forwarding = true;
        }
        self
    }

    pub fn retry_after(mut self, secs: f64) -> Rule {
        if let Effect::Error { retry_after, .. } = &mut self.effect {
            *retry_after = Some(secs);
        }
        self
    }

    pub fn first(mut self, k: usize) -> Rule {
        self.window = Window::First(k);
        self
    }

    pub fn for_secs_after_first(mut self, trigger: &str, secs: f64) -> Rule {
        self.window = Window::AfterFirst(trigger.into(), secs);
        self
    }

    pub fn for_secs_after_last(mut self, trigger: &str, secs: f64) -> Rule {
        self.window = Window::AfterLast(trigger.into(), secs);
        self
    }

    pub fn until(mut self, trigger: &str) -> Rule {
        self.window = Window::Until(trigger.into());
        self
    }

    pub fn every(mut self, n: usize) -> Rule {
        self.window = Window::Every(n.max(1));
        self
    }

    pub fn randomly(mut self, probability: f64) -> Rule {
        self.window = Window::Random(probability);
        self
    }

    fn matches(&self, action: &str) -> bool {
        self.action == "*"
            || self.action == action
            || (self.action.ends_with(":*") && action.starts_with(&self.action[..self.action.len() - 1]))
    }
}

/// A created id left out of a listing for a while.
#[derive(Clone, Debug)]
struct Lag {
    create: String,
    id_field: String,
    listing: String,
    secs: f64,
    hidden: Vec<(String, Instant)>,
}

/// A token bucket answering throttling errors when empty.
#[derive(Clone, Debug)]
struct Bucket {
    scope: String,
    per_sec: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
    retry_after: Option<f64>,
}

struct Kill {
    after: usize,
    pid: u32,
    seen: usize,
    /// Count only this action's calls (else every mutating call).
    only: Option<String>,
}

struct State_ {
    upstream: String,
    /// `service:Action` → faults to inject, in order.
    faults: HashMap<String, Vec<Fault>>,
    rules: Vec<Rule>,
    lags: Vec<Lag>,
    buckets: Vec<Bucket>,
    kill: Option<Kill>,
    /// Forwarded calls: (first, latest) by action.
    forwarded: HashMap<String, (Instant, Instant)>,
    /// `service:Action` → requests seen.
    counts: HashMap<String, usize>,
    /// Every request seen, in order (`service:Action`), with when it came.
    /// Every request: its action, when it came, and the start of its path and body (ids).
    log: Vec<(String, Instant, String)>,
    /// Answers the proxy made up (not moto's), by action: what the client was told.
    injected: HashMap<String, usize>,
    /// Calls in flight by service now, and the most seen at once.
    in_flight: HashMap<String, (usize, usize)>,
    rng: u64,
}

#[derive(Clone)]
pub struct FaultProxy {
    pub url: String,
    state: Arc<Mutex<State_>>,
}

impl FaultProxy {
    pub async fn start(upstream: &str) -> FaultProxy {
        let state = Arc::new(Mutex::new(State_ {
            upstream: upstream.to_string(),
            faults: HashMap::new(),
            rules: Vec::new(),
            lags: Vec::new(),
            buckets: Vec::new(),
            kill: None,
            forwarded: HashMap::new(),
            counts: HashMap::new(),
            log: Vec::new(),
            injected: HashMap::new(),
            in_flight: HashMap::new(),
            rng: 0x2545_F491_4F6C_DD1D,
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(forward).with_state((state.clone(), reqwest::Client::new()));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FaultProxy { url, state }
    }

    /// The next `faults.len()` calls of `action` (`service:Action`) get these faults.
    pub fn inject(&self, action: &str, faults: &[Fault]) {
        assert!(action.contains(':'), "name actions as service:Action, e.g. ec2:CreateVpc");
        self.state.lock().unwrap().faults.entry(action.to_string()).or_default().extend_from_slice(faults);
    }

    /// Adds a scripted behaviour (rules are checked in the order added; the first whose window
    /// is open applies).
    pub fn rule(&self, rule: Rule) {
        self.state.lock().unwrap().rules.push(rule);
    }

    /// Seeds the random windows (the same seed replays the same faults for the same calls).
    pub fn seed(&self, seed: u64) {
        self.state.lock().unwrap().rng = seed.max(1);
    }

    /// For `secs` after `create` returns an id (the value of `id_field` in its answer: an
    /// XML element or a JSON key), that id is left out of `listing`'s answers.
    pub fn listing_lag(&self, create: &str, id_field: &str, listing: &str, secs: f64) {
        self.state.lock().unwrap().lags.push(Lag {
            create: create.into(),
            id_field: id_field.into(),
            listing: listing.into(),
            secs,
            hidden: Vec::new(),
        });
    }

    /// A token bucket for a service (`apigateway`) or one action (`apigateway:POST /vpclinks`):
    /// `per_sec` tokens a second, at most `burst`; an empty bucket answers the service's
    /// throttling error (API Gateway: 429 TooManyRequestsException) with `Retry-After` when given.
    pub fn rate_limit(&self, scope: &str, per_sec: f64, burst: f64, retry_after: Option<f64>) {
        self.state.lock().unwrap().buckets.push(Bucket {
            scope: scope.into(),
            per_sec,
            burst,
            tokens: burst,
            at: Instant::now(),
            retry_after,
        });
    }

    /// SIGKILLs `pid` right after the `n`th mutating call (not a Describe/List/Get, not a
    /// REST GET) has been forwarded, before its answer is returned.
    pub fn kill_after_mutations(&self, n: usize, pid: u32) {
        self.state.lock().unwrap().kill = Some(Kill { after: n, pid, seen: 0, only: None });
    }

    /// SIGKILLs `pid` right after the `n`th call of `action` has been forwarded, before its
    /// answer is returned (a kill inside an in-progress state: right after DeleteNatGateway).
    pub fn kill_after_call(&self, action: &str, n: usize, pid: u32) {
        self.state.lock().unwrap().kill = Some(Kill { after: n, pid, seen: 0, only: Some(action.to_string()) });
    }

    pub fn count(&self, action: &str) -> usize {
        self.state.lock().unwrap().counts.get(action).copied().unwrap_or(0)
    }

    /// Calls of `action` the proxy answered itself (an injected error), dropped, or whose
    /// answer it rewrote.
    pub fn injected(&self, action: &str) -> usize {
        self.state.lock().unwrap().injected.get(action).copied().unwrap_or(0)
    }

    /// The most calls to `service` the proxy held at once (between a request's arrival and
    /// its answer).
    pub fn max_in_flight(&self, service: &str) -> usize {
        self.state.lock().unwrap().in_flight.get(service).map(|(_, most)| *most).unwrap_or(0)
    }

    /// Every request so far, in order, as `service:Action`.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().log.iter().map(|(a, _, _)| a.clone()).collect()
    }

    /// Every request so far, in order, as `service:Action` with when it came.
    pub fn timed_calls(&self) -> Vec<(String, Instant)> {
        self.state.lock().unwrap().log.iter().map(|(a, t, _)| (a.clone(), *t)).collect()
    }

    /// When the first call came (of any action).
    pub fn first_call_at(&self) -> Option<Instant> {
        self.state.lock().unwrap().log.first().map(|(_, t, _)| *t)
    }

    /// When each call of `action` came, in order.
    pub fn times(&self, action: &str) -> Vec<Instant> {
        self.state.lock().unwrap().log.iter().filter(|(a, _, _)| a == action).map(|(_, t, _)| *t).collect()
    }

    /// When each call of `action` whose path or body mentions `needle` (an id) came, in order.
    pub fn times_mentioning(&self, action: &str, needle: &str) -> Vec<Instant> {
        self.state.lock().unwrap().log.iter().filter(|(a, _, r)| a == action && r.contains(needle)).map(|(_, t, _)| *t).collect()
    }

    /// Drops the faults and rules not used yet, the lags and the rate limits.
    pub fn clear_faults(&self) {
        let mut s = self.state.lock().unwrap();
        s.faults.clear();
        s.rules.clear();
        s.lags.clear();
        s.buckets.clear();
        s.kill = None;
    }

    /// Forgets the counts and the log (not the injected faults).
    pub fn reset_counts(&self) {
        let mut s = self.state.lock().unwrap();
        s.counts.clear();
        s.log.clear();
        s.injected.clear();
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Protocol {
    Ec2,
    Query,
    Json,
    /// REST-JSON: API Gateway, Scheduler (the error code in `x-amzn-ErrorType` only).
    Rest,
}

/// AWS's behaviour in a fresh account's first apply, as the fault proxy plays it (the tests
/// and `make bench`): no ECS service-linked role until it is created; IAM propagation (see
/// [`iam_propagation`]; Application Auto Scaling unable to assume a new role for
/// `propagation_secs`); NAT gateways, the VPC link and the Cloud Map namespace's operation
/// pending for `pending_secs` after their create.
pub fn first_apply_model(proxy: &FaultProxy, pending_secs: f64, propagation_secs: f64, scheduler_refusals: usize) {
    let slr = "Unable to assume the service linked role. Please verify that the ECS service linked role exists.";
    proxy.rule(Rule::error("ecs:CreateCluster", 400, "InvalidParameterException", slr).until("iam:CreateServiceLinkedRole"));
    iam_propagation(proxy, propagation_secs, scheduler_refusals);
    proxy.rule(
        Rule::error("application-autoscaling:RegisterScalableTarget", 400, "ValidationException", "Unable to assume IAM role")
            .for_secs_after_last("iam:CreateRole", propagation_secs),
    );
    proxy.rule(
        Rule::rewrite("ec2:DescribeNatGateways", "<state>available</state>", "<state>pending</state>")
            .for_secs_after_first("ec2:CreateNatGateway", pending_secs),
    );
    let (available, pending) = ("\"vpcLinkStatus\": \"AVAILABLE\"", "\"vpcLinkStatus\": \"PENDING\"");
    proxy.rule(Rule::rewrite("apigateway:POST /vpclinks", available, pending));
    for listing in ["apigateway:GET /vpclinks/*", "apigateway:GET /vpclinks"] {
        proxy.rule(Rule::rewrite(listing, available, pending).for_secs_after_first("apigateway:POST /vpclinks", pending_secs));
    }
    proxy.rule(
        Rule::rewrite("servicediscovery:GetOperation", "\"Status\": \"SUCCESS\"", "\"Status\": \"SUBMITTED\"")
            .for_secs_after_first("servicediscovery:CreatePrivateDnsNamespace", pending_secs),
    );
}

/// IAM propagation as the services that are handed a role show it: ECS says "Role is not
/// valid" for `secs` after the latest role was created, Scheduler refuses its first
/// `scheduler_refusals` schedule creates as unable to assume the role.
pub fn iam_propagation(proxy: &FaultProxy, secs: f64, scheduler_refusals: usize) {
    proxy.rule(
        Rule::error("ecs:RegisterTaskDefinition", 400, "ClientException", "Role is not valid").for_secs_after_last("iam:CreateRole", secs),
    );
    proxy.rule(
        Rule::error(
            "scheduler:POST /schedules/*",
            400,
            "ValidationException",
            "The execution role you provide must allow AWS EventBridge Scheduler to assume the role.",
        )
        .first(scheduler_refusals),
    );
}

/// NAT gateways stay `deleting` for `secs` after the last DeleteNatGateway.
pub fn nat_gateways_deleting(proxy: &FaultProxy, secs: f64) {
    let rewrite = Rule::rewrite("ec2:DescribeNatGateways", "<state>deleted</state>", "<state>deleting</state>");
    proxy.rule(rewrite.for_secs_after_last("ec2:DeleteNatGateway", secs));
}

/// ECS deployments roll out for `secs` after the first CreateService and after the latest
/// UpdateService, then complete (moto's never leave IN_PROGRESS). The two windows keep the
/// state in a form the last rule, which completes every other deployment, does not match.
pub fn ecs_deployments(proxy: &FaultProxy, secs: f64) {
    let (rolling, still) = (r#""rolloutState": "IN_PROGRESS""#, r#""rolloutState":"IN_PROGRESS""#);
    proxy.rule(Rule::rewrite("ecs:DescribeServices", rolling, still).for_secs_after_first("ecs:CreateService", secs));
    proxy.rule(Rule::rewrite("ecs:DescribeServices", rolling, still).for_secs_after_last("ecs:UpdateService", secs));
    proxy.rule(Rule::rewrite("ecs:DescribeServices", rolling, r#""rolloutState": "COMPLETED""#));
}

/// An ECS service stays DRAINING for `secs` after DeleteService.
pub fn ecs_service_draining(proxy: &FaultProxy, secs: f64) {
    let rewrite = Rule::rewrite("ecs:DescribeServices", r#""status": "INACTIVE""#, r#""status": "DRAINING""#);
    proxy.rule(rewrite.for_secs_after_first("ecs:DeleteService", secs));
}

/// Whether a call changes something (what the kill hook counts).
pub fn is_mutation(action: &str) -> bool {
    let (_, name) = action.split_once(':').unwrap_or(("", action));
    if let Some((method, _)) = name.split_once(' ') {
        return method != "GET" && method != "HEAD";
    }
    !["Describe", "List", "Get", "Discover", "Head", "Lookup"].iter().any(|p| name.starts_with(p))
}

/// (`service:Action`, protocol) of a request. REST services (API Gateway, EventBridge
/// Scheduler) name no action: the key is the method and the path with ids starred,
/// `apigateway:GET /apis/*/routes`, `scheduler:PUT /schedules/*`.
fn identify(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> (String, Protocol) {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    // Credential=AKID/20261128/us-east-1/iam/aws4_request
    let service =
        auth.split("Credential=").nth(1).and_then(|c| c.split(',').next()).and_then(|c| c.split('/').nth(3)).unwrap_or("?").to_string();
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        let action = target.rsplit('.').next().unwrap_or(target);
        return (format!("{service}:{action}"), Protocol::Json);
    }
    let Some(action) = String::from_utf8_lossy(body).split('&').find_map(|kv| kv.strip_prefix("Action=").map(String::from)) else {
        if service == "scheduler" {
            // /schedules/{name}, /schedule-groups/{name}, /tags/{arn}: the resource type, then its id.
            let kind = uri.path().trim_start_matches('/').split('/').next().unwrap_or_default();
            let id = if uri.path().trim_start_matches('/').contains('/') { "/*" } else { "" };
            return (format!("{service}:{method} /{kind}{id}"), Protocol::Rest);
        }
        if service == "apigateway" {
            let segments: Vec<&str> = uri.path().trim_start_matches("/v2/").split('/').collect();
            let path: Vec<&str> = segments.iter().enumerate().map(|(i, s)| if i % 2 == 1 { "*" } else { *s }).collect();
            return (format!("{service}:{method} /{}", path.join("/")), Protocol::Rest);
        }
        return (format!("{service}:?"), Protocol::Query);
    };
    let protocol = if service == "ec2" { Protocol::Ec2 } else { Protocol::Query };
    (format!("{service}:{action}"), protocol)
}

fn error(protocol: Protocol, status: StatusCode, code: &str, message: &str, retry_after: Option<f64>) -> Response {
    let mut r = match protocol {
        Protocol::Ec2 => {
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>fault-proxy</RequestID></Response>"
            );
            (status, [("content-type", "text/xml")], xml).into_response()
        }
        Protocol::Query => {
            let kind = if status.is_server_error() { "Receiver" } else { "Sender" };
            let xml = format!(
                "<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>fault-proxy</RequestId></ErrorResponse>"
            );
            (status, [("content-type", "text/xml")], xml).into_response()
        }
        Protocol::Json => {
            let body = serde_json::json!({"__type": code, "message": message}).to_string();
            (status, [("content-type", "application/x-amz-json-1.1"), ("x-amzn-errortype", code)], body).into_response()
        }
        Protocol::Rest => {
            let body = serde_json::json!({"message": message}).to_string();
            (status, [("content-type", "application/json"), ("x-amzn-errortype", code)], body).into_response()
        }
    };
    if let Some(secs) = retry_after {
        r.headers_mut().insert("retry-after", format!("{secs}").parse().unwrap());
    }
    r
}

/// Each protocol's throttling answer, as the services send it.
fn throttled(protocol: Protocol, retry_after: Option<f64>) -> Response {
    match protocol {
        Protocol::Ec2 => error(protocol, StatusCode::SERVICE_UNAVAILABLE, "RequestLimitExceeded", "Request limit exceeded.", retry_after),
        Protocol::Query => error(protocol, StatusCode::BAD_REQUEST, "Throttling", "Rate exceeded", retry_after),
        Protocol::Json => error(protocol, StatusCode::BAD_REQUEST, "ThrottlingException", "Rate exceeded", retry_after),
        Protocol::Rest => error(protocol, StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException", "Too Many Requests", retry_after),
    }
}

fn validation(protocol: Protocol) -> Response {
    match protocol {
        Protocol::Ec2 => error(protocol, StatusCode::BAD_REQUEST, "InvalidParameterValue", "injected validation error", None),
        Protocol::Query => error(protocol, StatusCode::BAD_REQUEST, "ValidationError", "injected validation error", None),
        Protocol::Json => error(protocol, StatusCode::BAD_REQUEST, "InvalidParameterException", "injected validation error", None),
        Protocol::Rest => error(protocol, StatusCode::BAD_REQUEST, "BadRequestException", "injected validation error", None),
    }
}

fn server_error(protocol: Protocol) -> Response {
    let code = if matches!(protocol, Protocol::Json | Protocol::Rest) { "ServerException" } else { "InternalError" };
    error(protocol, StatusCode::INTERNAL_SERVER_ERROR, code, "An internal error has occurred.", None)
}

/// A response whose body fails after the head: the connection is cut before the answer.
fn dropped() -> Response {
    let stream =
        futures::stream::once(async { Err::<Bytes, std::io::Error>(std::io::Error::other("connection dropped by the fault proxy")) });
    Response::builder().status(200).header("content-length", "100").body(Body::from_stream(stream)).unwrap()
}

fn next_random(rng: &mut u64) -> f64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    (*rng % 1_000_000) as f64 / 1_000_000.0
}

impl State_ {
    /// The longest [`Rule::latency`] for `action`, if any.
    fn latency(&self, action: &str) -> Option<Duration> {
        self.rules.iter().filter(|r| r.matches(action)).filter_map(|r| if let Effect::Latency(d) = r.effect { Some(d) } else { None }).max()
    }

    fn window_open(&mut self, i: usize, now: Instant) -> bool {
        let since = |s: &State_, trigger: &str, last: bool| s.forwarded.get(trigger).map(|(f, l)| now - if last { *l } else { *f });
        match self.rules[i].window.clone() {
            Window::Always => true,
            Window::First(k) => self.rules[i].hits < k,
            Window::AfterFirst(t, secs) => since(self, &t, false).is_some_and(|d| d.as_secs_f64() < secs),
            Window::AfterLast(t, secs) => since(self, &t, true).is_some_and(|d| d.as_secs_f64() < secs),
            Window::Until(t) => !self.forwarded.contains_key(&t),
            Window::Random(p) => next_random(&mut self.rng) < p,
            Window::Every(n) => self.rules[i].seen.is_multiple_of(n),
        }
    }

    /// The effects of the first open rule of each kind (one error or drop; every rewrite).
    fn effects(&mut self, action: &str, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        let mut decisive = false;
        for i in 0..self.rules.len() {
            if !self.rules[i].matches(action) {
                continue;
            }
            let is_decisive = matches!(
                self.rules[i].effect,
                Effect::Error { .. } | Effect::Throttle | Effect::ServerError { .. } | Effect::DropAfterForwarding
            );
            if is_decisive && decisive {
                continue;
            }
            self.rules[i].seen += 1;
            if self.window_open(i, now) {
                self.rules[i].hits += 1;
                decisive |= is_decisive;
                out.push(self.rules[i].effect.clone());
            }
        }
        out
    }

    /// Takes a token from every bucket that covers the call; `Some(retry_after)` when one is empty.
    fn throttled_by_bucket(&mut self, action: &str, now: Instant) -> Option<Option<f64>> {
        let service = action.split(':').next().unwrap_or_default().to_string();
        for b in self.buckets.iter_mut().filter(|b| b.scope == action || b.scope == service) {
            b.tokens = (b.tokens + (now - b.at).as_secs_f64() * b.per_sec).min(b.burst);
            b.at = now;
            if b.tokens < 1.0 {
                return Some(b.retry_after);
            }
            b.tokens -= 1.0;
        }
        None
    }
}

/// The value of `field` in an answer: `<field>VALUE</field>` or `"field": "VALUE"`.
pub fn field_value(body: &str, field: &str) -> Option<String> {
    let open = format!("<{field}>");
    if let Some(start) = body.find(&open) {
        let rest = &body[start + open.len()..];
        return Some(rest[..rest.find('<')?].to_string());
    }
    let key = format!("\"{field}\"");
    let rest = &body[body.find(&key)? + key.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

/// The answer without the listed items that mention `id`: EC2's top-level `<item>`s, or the
/// elements of the JSON arrays of the top-level object.
pub fn without_id(body: &str, id: &str) -> String {
    if let Ok(serde_json::Value::Object(mut m)) = serde_json::from_str::<serde_json::Value>(body) {
        for v in m.values_mut() {
            if let serde_json::Value::Array(items) = v {
                items.retain(|item| !item.to_string().contains(&format!("\"{id}\"")) && !item.to_string().contains(id));
            }
        }
        return serde_json::Value::Object(m).to_string();
    }
    // XML: spans of top-level items (depth 1) that contain the id are cut out.
    let mut out = String::with_capacity(body.len());
    let (mut depth, mut i, mut item_start) = (0usize, 0usize, None::<usize>);
    let mut last = 0usize;
    while i < body.len() {
        let rest = &body[i..];
        if rest.starts_with("<item>") {
            if depth == 0 {
                item_start = Some(i);
            }
            depth += 1;
            i += "<item>".len();
        } else if rest.starts_with("</item>") {
            depth = depth.saturating_sub(1);
            i += "</item>".len();
            if depth == 0 {
                if let Some(start) = item_start.take() {
                    if body[start..i].contains(&format!(">{id}<")) {
                        out.push_str(&body[last..start]);
                        last = i;
                    }
                }
            }
        } else {
            i += rest.chars().next().map(char::len_utf8).unwrap_or(1);
        }
    }
    out.push_str(&body[last..]);
    out
}

/// Counts a call in flight for its service while alive.
struct InFlight {
    state: Arc<Mutex<State_>>,
    service: String,
}

impl InFlight {
    fn enter(state: &Arc<Mutex<State_>>, service: &str) -> InFlight {
        let mut s = state.lock().unwrap();
        let (now, most) = s.in_flight.entry(service.to_string()).or_default();
        *now += 1;
        *most = (*most).max(*now);
        InFlight { state: state.clone(), service: service.to_string() }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some((now, _)) = self.state.lock().unwrap().in_flight.get_mut(&self.service) {
            *now -= 1;
        }
    }
}

/// Answers a call (see [`answer`]), no sooner than a [`Rule::latency`] after it arrived.
async fn forward(
    State((state, http)): State<(Arc<Mutex<State_>>, reqwest::Client)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (action, protocol) = identify(&method, &uri, &headers, &body);
    // In flight until the client has its answer (the latency included).
    let _in_flight = InFlight::enter(&state, action.split(':').next().unwrap_or_default());
    let due = state.lock().unwrap().latency(&action).map(|d| tokio::time::Instant::now() + d);
    let answered = answer(&state, &http, action, protocol, method, uri, headers, body).await;
    if let Some(due) = due {
        tokio::time::sleep_until(due).await;
    }
    answered
}

/// The call `action` (its `protocol` for error answers), with the faults, rules and lags in
/// `state`: answered by the proxy, or forwarded and its answer passed on.
#[allow(clippy::too_many_arguments)]
async fn answer(
    state: &Arc<Mutex<State_>>,
    http: &reqwest::Client,
    action: String,
    protocol: Protocol,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = Instant::now();
    let (upstream, fault, effects, bucket) = {
        let mut s = state.lock().unwrap();
        *s.counts.entry(action.clone()).or_default() += 1;
        let request = format!("{} {}", uri.path(), String::from_utf8_lossy(&body[..body.len().min(512)]));
        s.log.push((action.clone(), now, request));
        let fault = s.faults.get_mut(&action).and_then(|q| (!q.is_empty()).then(|| q.remove(0)));
        let bucket = if fault.is_none() { s.throttled_by_bucket(&action, now) } else { None };
        let effects = if fault.is_none() && bucket.is_none() { s.effects(&action, now) } else { vec![] };
        (s.upstream.clone(), fault, effects, bucket)
    };
    let note_injected = || *state.lock().unwrap().injected.entry(action.clone()).or_default() += 1;
    if let Some(retry_after) = bucket {
        note_injected();
        return throttled(protocol, retry_after);
    }
    if let Some(Fault::Delay(ms)) = fault {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    for e in &effects {
        if let Effect::Delay(d) = e {
            tokio::time::sleep(*d).await;
        }
    }
    match fault {
        Some(Fault::Throttle) => {
            note_injected();
            return throttled(protocol, None);
        }
        Some(Fault::ServerError) => {
            note_injected();
            return server_error(protocol);
        }
        Some(Fault::Validation) => {
            note_injected();
            return validation(protocol);
        }
        Some(Fault::NotYetVisible) => {
            note_injected();
            return error(protocol, StatusCode::BAD_REQUEST, "InvalidVpcID.NotFound", "The vpc ID does not exist", None);
        }
        _ => {}
    }
    let error_effect = effects.iter().find_map(|e| match e {
        Effect::Error { status, code, message, retry_after, after_forwarding } => {
            Some((StatusCode::from_u16(*status).unwrap(), code.clone(), message.clone(), *retry_after, *after_forwarding))
        }
        _ => None,
    });
    if let Some((status, code, message, retry_after, false)) = &error_effect {
        note_injected();
        return error(protocol, *status, code, message, *retry_after);
    }
    if let Some((status, body)) = effects.iter().find_map(|e| match e {
        Effect::Respond { status, body } => Some((StatusCode::from_u16(*status).unwrap(), body.clone())),
        _ => None,
    }) {
        note_injected();
        return (status, [("content-type", "application/json")], body).into_response();
    }
    if effects.iter().any(|e| matches!(e, Effect::Throttle)) {
        note_injected();
        return throttled(protocol, None);
    }
    if effects.iter().any(|e| matches!(e, Effect::ServerError { after_forwarding: false })) {
        note_injected();
        return server_error(protocol);
    }

    let mut req = http.request(method, format!("{upstream}{}", uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")));
    for (k, v) in headers.iter() {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    let resp = match req.body(body).send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    // Every response header goes back (S3's ETag carries the lock's fencing token), except
    // those that describe this hop's framing.
    let mut out_headers = HeaderMap::new();
    for (k, v) in resp.headers() {
        if !["content-length", "transfer-encoding", "connection"].contains(&k.as_str()) {
            if let (Ok(k), Ok(v)) =
                (axum::http::HeaderName::from_bytes(k.as_str().as_bytes()), axum::http::HeaderValue::from_bytes(v.as_bytes()))
            {
                out_headers.insert(k, v);
            }
        }
    }
    let bytes = resp.bytes().await.unwrap_or_default();
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    let kill = {
        let mut s = state.lock().unwrap();
        if status.is_success() {
            let t = Instant::now();
            s.forwarded.entry(action.clone()).and_modify(|(_, l)| *l = t).or_insert((t, t));
            // Listing lag: remember what a create made; hide it from its listing a while.
            for lag in s.lags.iter_mut() {
                if lag.create == action {
                    if let Some(id) = field_value(&text, &lag.id_field) {
                        lag.hidden.push((id, t));
                    }
                }
            }
            for e in &effects {
                if let Effect::Rewrite { from, to } = e {
                    if text.contains(from.as_str()) {
                        text = text.replace(from.as_str(), to);
                        *s.injected.entry(action.clone()).or_default() += 1;
                    }
                }
            }
            for lag in s.lags.iter().filter(|l| l.listing == action) {
                for (id, at) in &lag.hidden {
                    if at.elapsed().as_secs_f64() < lag.secs {
                        text = without_id(&text, id);
                    }
                }
            }
        }
        match s.kill.as_mut() {
            Some(k) if is_mutation(&action) && k.only.as_ref().is_none_or(|a| *a == action) => {
                k.seen += 1;
                (k.seen == k.after).then_some(k.pid)
            }
            _ => None,
        }
    };
    if let Some(pid) = kill {
        let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        return dropped();
    }
    if effects.iter().any(|e| matches!(e, Effect::DropAfterForwarding)) {
        note_injected();
        return dropped();
    }
    if let Some((status, code, message, retry_after, true)) = &error_effect {
        note_injected();
        return error(protocol, *status, code, message, *retry_after);
    }
    if fault == Some(Fault::ServerErrorAfterForwarding)
        || effects.iter().any(|e| matches!(e, Effect::ServerError { after_forwarding: true }))
    {
        note_injected();
        return server_error(protocol);
    }
    (status, out_headers, text).into_response()
}
