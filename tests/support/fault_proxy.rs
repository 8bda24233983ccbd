//! A fault proxy between the SDK and moto (which injects no faults itself): it forwards every
//! request, counts them by EC2 action, and answers chosen actions with throttling, a 5xx, a
//! 5xx after really forwarding the call (the ambiguous case), or a validation error. It
//! listens on 127.0.0.1 only.
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
}

#[derive(Default)]
struct State_ {
    upstream: String,
    /// action → faults to inject, in order.
    rules: HashMap<String, Vec<Fault>>,
    /// action → requests seen.
    counts: HashMap<String, usize>,
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

    /// The next `faults.len()` calls of `action` get these faults.
    pub fn inject(&self, action: &str, faults: &[Fault]) {
        self.state.lock().unwrap().rules.entry(action.to_string()).or_default().extend_from_slice(faults);
    }

    pub fn count(&self, action: &str) -> usize {
        self.state.lock().unwrap().counts.get(action).copied().unwrap_or(0)
    }
}

fn action_of(body: &[u8]) -> String {
    String::from_utf8_lossy(body).split('&').find_map(|kv| kv.strip_prefix("Action=")).unwrap_or("?").to_string()
}

fn ec2_error(status: StatusCode, code: &str, message: &str) -> Response {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>fault-proxy</RequestID></Response>"
    );
    (status, [("content-type", "text/xml")], xml).into_response()
}

async fn forward(
    State((state, http)): State<(Arc<Mutex<State_>>, reqwest::Client)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let action = action_of(&body);
    let (upstream, fault) = {
        let mut s = state.lock().unwrap();
        *s.counts.entry(action.clone()).or_default() += 1;
        let fault = s.rules.get_mut(&action).and_then(|q| (!q.is_empty()).then(|| q.remove(0)));
        (s.upstream.clone(), fault)
    };
    match fault {
        Some(Fault::Throttle) => return ec2_error(StatusCode::SERVICE_UNAVAILABLE, "RequestLimitExceeded", "Request limit exceeded."),
        Some(Fault::ServerError) => {
            return ec2_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "An internal error has occurred.")
        }
        Some(Fault::Validation) => return ec2_error(StatusCode::BAD_REQUEST, "InvalidParameterValue", "injected validation error"),
        Some(Fault::NotYetVisible) => return ec2_error(StatusCode::BAD_REQUEST, "InvalidVpcID.NotFound", "The vpc ID does not exist"),
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
        return ec2_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "An internal error has occurred.");
    }
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("text/xml").to_string();
    let bytes = resp.bytes().await.unwrap_or_default();
    (status, [("content-type", content_type)], bytes).into_response()
}
