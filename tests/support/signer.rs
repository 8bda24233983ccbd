//! Signs webhooks the way Benchling does (ECDSA P-256 / SHA-256, DER, `v1bder,`), with a
//! key generated per test, and serves its public half as a JWKS document.
#![allow(dead_code)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Signer {
    pub fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        Signer { key: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap(), rng }
    }
    pub fn jwks(&self) -> Value {
        let p = self.key.public_key().as_ref();
        json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "test", "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..65])}]})
    }
    pub fn sign(&self, id: &str, ts: i64, body: &[u8]) -> String {
        let mut msg = format!("{id}.{ts}.").into_bytes();
        msg.extend_from_slice(body);
        format!("v1bder,{}", STANDARD.encode(self.key.sign(&self.rng, &msg).unwrap().as_ref()))
    }
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A JWKS document the test can swap (key rotation), and how often it was fetched.
#[derive(Clone, Default)]
pub struct JwksServer {
    pub doc: Arc<Mutex<Value>>,
    pub hits: Arc<AtomicUsize>,
    pub url: String,
}

/// Serves `jwks` at `http://127.0.0.1:PORT/jwks`.
pub async fn serve_jwks(jwks: Value) -> JwksServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = JwksServer {
        doc: Arc::new(Mutex::new(jwks)),
        hits: Arc::default(),
        url: format!("http://{}/jwks", listener.local_addr().unwrap()),
    };
    let (doc, hits) = (server.doc.clone(), server.hits.clone());
    tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || async move {
                hits.fetch_add(1, Ordering::SeqCst);
                axum::Json(doc.lock().unwrap().clone())
            }),
        );
        axum::serve(listener, app).await.unwrap();
    });
    server
}
