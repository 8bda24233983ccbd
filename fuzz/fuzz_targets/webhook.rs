//! A webhook request (path, headers, body) through the service's real router, in process,
//! with a fixed signing key: never a panic, never a 5xx for client input, and never an
//! acknowledgement (a 2xx, or an event queued) unless the request carries a genuine signature
//! in its time window, checked apart with the key.
//!
//! Input: byte 0 is flags (bit 0: sign the request now with the fixed key, so that the fuzzer
//! also reaches what comes after verification; bits 1-2: the route, 3 meaning the path is the
//! first line); then `name: value` header lines, an empty line, and the body.
#![no_main]
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Request};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures::future::BoxFuture;
use libfuzzer_sys::fuzz_target;
use service::app::{router, AppState};
use service::config::{BenchlingSecret, Config};
use service::verify::{verify, SignedHeaders, VerifyingKey};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tower::ServiceExt as _;

/// The fixed P-256 key pair (PKCS#8, and the public point as a JWK's x and y).
const PKCS8: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQguBhci9L3v4KIWBxqjZwXBEwI1/XQm/GRM9s3jjdsoz6hRANCAAQatEZkrV51hXEZVTtoeTKC5+Yp55bbOd1VRNcgV8L471D5uQOTUov9JgqoSQhpt9BqXFAWLpyntbO2C5MWVwK5";
const X: &str = "GrRGZK1edYVxGVU7aHkygufmKeeW2zndVUTXIFfC-O8";
const Y: &str = "UPm5A5NSi_0mCqhJCGm30GpcUBYunKe1s7YLkxZXArk";

/// Counts what was queued (always accepts: a 5xx cannot come from the queue).
struct Recording(AtomicUsize);
impl service::queue::Queue for Recording {
    fn send<'a>(&'a self, _: &'a str, _: &'a str, _: String) -> BoxFuture<'a, Result<(), String>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }
}

struct World {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
    queue: Arc<Recording>,
    key: EcdsaKeyPair,
    keys: Vec<VerifyingKey>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let config = Config::from_lookup(|k| match k {
            // A refetch never happens during a run (and would find nothing on loopback).
            "JWKS_MIN_REFETCH_SECS" => Some("1000000000".into()),
            "BENCHLING_JWKS_URL" => Some("http://127.0.0.1:9/jwks".into()),
            _ => None,
        })
        .unwrap();
        let queue = Arc::new(Recording(AtomicUsize::new(0)));
        let state = AppState::new(config, queue.clone());
        let keys = vec![VerifyingKey::from_jwk("fuzz", X, Y).unwrap()];
        rt.block_on(async {
            let secret = BenchlingSecret {
                tenant: "t".into(),
                client_id: "c".into(),
                client_secret: "s".into(),
                app_definition_id: "appdef_fuzz".into(),
                pkg_prefix: "p".into(),
                pkg_key: "k".into(),
                user_bucket: "b".into(),
                log_level: "error".into(),
                enable_webhook_verification: true,
            };
            let cache = state.set_secret(secret, service::http_client()).await;
            cache.set_keys(keys.clone()).await;
        });
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &STANDARD.decode(PKCS8).unwrap()).unwrap();
        World { rt, app: router(state), queue, key, keys }
    })
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let Some((&flags, rest)) = data.split_first() else { return };
    let (head, body) = match rest.windows(2).position(|p| p == b"\n\n") {
        Some(i) => (&rest[..i], &rest[i + 2..]),
        None => (rest, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.lines();
    let path = match (flags >> 1) & 3 {
        0 => "/event".to_string(),
        1 => "/lifecycle".to_string(),
        2 => "/prod/canvas".to_string(),
        _ => lines.next().unwrap_or("/").to_string(),
    };
    let mut req = match Request::builder().method("POST").uri(&path).body(Body::from(body.to_vec())) {
        Ok(r) => r,
        Err(_) => return,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name.trim()), HeaderValue::from_str(value.trim())) {
            req.headers_mut().append(n, v);
        }
    }
    let h = req.headers_mut();
    if flags & 1 == 1 {
        let id = h.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("msg_fuzz").to_string();
        let ts = match h.get("webhook-timestamp").and_then(|v| v.to_str().ok()) {
            Some(t) if t != "NOW" => t.to_string(),
            _ => now().to_string(),
        };
        let mut msg = format!("{id}.{ts}.").into_bytes();
        msg.extend_from_slice(body);
        let sig = format!("v1bder,{}", STANDARD.encode(w.key.sign(&SystemRandom::new(), &msg).unwrap().as_ref()));
        for (k, v) in [("webhook-id", id), ("webhook-timestamp", ts), ("webhook-signature", sig)] {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        }
    }
    let signed = {
        let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(String::from);
        (get("webhook-id"), get("webhook-timestamp"), get("webhook-signature"))
    };
    let queued_before = w.queue.0.load(Ordering::SeqCst);
    let status = w.rt.block_on(w.app.clone().oneshot(req)).unwrap().status();
    let queued = w.queue.0.load(Ordering::SeqCst) > queued_before;
    assert!(!status.is_server_error(), "{status} for client input on {path}");
    if status.is_success() && !path.contains("health") || queued {
        let genuine = match &signed {
            (Some(id), Some(timestamp), Some(signature)) => {
                let h = SignedHeaders { id, timestamp, signature };
                let t = now();
                // The handler's clock read may fall a second either side of this one.
                (t - 1..=t + 1).any(|t| verify(&h, body, &w.keys, t).is_ok())
            }
            _ => false,
        };
        assert!(genuine, "{status} (queued: {queued}) without a genuine signature on {path}: {signed:?}");
    }
});
