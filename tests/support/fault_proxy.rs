//! A fault proxy between the SDK and moto (which injects no faults itself): it forwards every
//! request, counts them by `service:Action` (`ec2:CreateVpc`, `iam:CreateRole`,
//! `ecs:CreateService`), and answers chosen actions with throttling, a 5xx, a 5xx after really
//! forwarding the call (the ambiguous case), or a validation error, each in the protocol's own
//! error format: EC2's query XML, the awsQuery XML of IAM and STS, and the JSON protocol of
//! ECS, Cloud Map, CloudWatch Logs, Application Auto Scaling and SQS. The service comes from the
//! SigV4 credential scope; the action from `X-Amz-Target` (JSON) or the form's `Action=`
//! (query). It listens on 127.0.0.1 only.
#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// 503 RequestLimitExceeded, before the call reaches moto.
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

#[derive(Default)]
struct State_ {
    upstream: String,
    /// `service:Action` → faults to inject, in order.
    rules: HashMap<String, Vec<Fault>>,
    /// `service:Action` → requests seen.
    counts: HashMap<String, usize>,
    /// Every request seen, in order (`service:Action`).
    log: Vec<String>,
}

#[derive(Clone)]
pub struct FaultProxy {
    pub url: String,
    state: Arc<Mutex<State_>>,
}

impl FaultProxy {
    pub async fn start(upstream: &str) -> FaultProxy {
        let state = Arc::new(Mutex::new(State_ { upstream: upstream.to_string(), ..Default::default() }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(forward).with_state((state.clone(), reqwest::Client::new()));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FaultProxy { url, state }
    }

    /// The next `faults.len()` calls of `action` (`service:Action`) get these faults.
    pub fn inject(&self, action: &str, faults: &[Fault]) {
        assert!(action.contains(':'), "name actions as service:Action, e.g. ec2:CreateVpc");
        self.state.lock().unwrap().rules.entry(action.to_string()).or_default().extend_from_slice(faults);
    }

    pub fn count(&self, action: &str) -> usize {
        self.state.lock().unwrap().counts.get(action).copied().unwrap_or(0)
    }

    /// Every request so far, in order, as `service:Action`.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    /// Drops the faults not used yet.
    pub fn clear_faults(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    /// Forgets the counts and the log (not the injected faults).
    pub fn reset_counts(&self) {
        let mut s = self.state.lock().unwrap();
        s.counts.clear();
        s.log.clear();
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Protocol {
    Ec2,
    Query,
    Json,
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
            return (format!("{service}:{method} /{kind}{id}"), Protocol::Json);
        }
        if service == "apigateway" {
            let segments: Vec<&str> = uri.path().trim_start_matches("/v2/").split('/').collect();
            let path: Vec<&str> = segments.iter().enumerate().map(|(i, s)| if i % 2 == 1 { "*" } else { *s }).collect();
            return (format!("{service}:{method} /{}", path.join("/")), Protocol::Json);
        }
        return (format!("{service}:?"), Protocol::Query);
    };
    let protocol = if service == "ec2" { Protocol::Ec2 } else { Protocol::Query };
    (format!("{service}:{action}"), protocol)
}

fn error(protocol: Protocol, status: StatusCode, code: &str, message: &str) -> Response {
    match protocol {
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
            let body = format!("{{\"__type\":\"{code}\",\"message\":\"{message}\"}}");
            (status, [("content-type", "application/x-amz-json-1.1"), ("x-amzn-errortype", code)], body).into_response()
        }
    }
}

/// Each protocol's throttling answer, as the services send it.
fn throttled(protocol: Protocol) -> Response {
    match protocol {
        Protocol::Ec2 => error(protocol, StatusCode::SERVICE_UNAVAILABLE, "RequestLimitExceeded", "Request limit exceeded."),
        Protocol::Query => error(protocol, StatusCode::BAD_REQUEST, "Throttling", "Rate exceeded"),
        Protocol::Json => error(protocol, StatusCode::BAD_REQUEST, "ThrottlingException", "Rate exceeded"),
    }
}

fn validation(protocol: Protocol) -> Response {
    match protocol {
        Protocol::Ec2 => error(protocol, StatusCode::BAD_REQUEST, "InvalidParameterValue", "injected validation error"),
        Protocol::Query => error(protocol, StatusCode::BAD_REQUEST, "ValidationError", "injected validation error"),
        Protocol::Json => error(protocol, StatusCode::BAD_REQUEST, "InvalidParameterException", "injected validation error"),
    }
}

fn server_error(protocol: Protocol) -> Response {
    let code = if protocol == Protocol::Json { "ServerException" } else { "InternalError" };
    error(protocol, StatusCode::INTERNAL_SERVER_ERROR, code, "An internal error has occurred.")
}

async fn forward(
    State((state, http)): State<(Arc<Mutex<State_>>, reqwest::Client)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (action, protocol) = identify(&method, &uri, &headers, &body);
    let (upstream, fault) = {
        let mut s = state.lock().unwrap();
        *s.counts.entry(action.clone()).or_default() += 1;
        s.log.push(action.clone());
        let fault = s.rules.get_mut(&action).and_then(|q| (!q.is_empty()).then(|| q.remove(0)));
        (s.upstream.clone(), fault)
    };
    if let Some(Fault::Delay(ms)) = fault {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    match fault {
        Some(Fault::Throttle) => return throttled(protocol),
        Some(Fault::ServerError) => return server_error(protocol),
        Some(Fault::Validation) => return validation(protocol),
        Some(Fault::NotYetVisible) => {
            return error(protocol, StatusCode::BAD_REQUEST, "InvalidVpcID.NotFound", "The vpc ID does not exist")
        }
        _ => {}
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
    if fault == Some(Fault::ServerErrorAfterForwarding) {
        return server_error(protocol);
    }
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
    (status, out_headers, bytes).into_response()
}
