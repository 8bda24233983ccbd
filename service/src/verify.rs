//! Standard Webhooks verification, Benchling's variant: ECDSA P-256 / SHA-256 signatures in
//! ASN.1 DER (`v1bder,<base64>`) over `"{webhook-id}.{webhook-timestamp}.{raw body}"`.
//! Crypto is aws-lc-rs (already in the tree for TLS); nothing here is hand-rolled.

use aws_lc_rs::signature::{ParsedPublicKey, ECDSA_P256_SHA256_ASN1};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;

/// Largest allowed distance between `webhook-timestamp` and now.
pub const TOLERANCE_SECS: i64 = 300;

/// A P-256 public key with its JWKS key id, parsed and validated once (not per request).
#[derive(Clone)]
pub struct VerifyingKey {
    pub kid: String,
    key: ParsedPublicKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({})", self.kid)
    }
}

impl VerifyingKey {
    /// From a JWK's base64url `x` and `y` (32 bytes each).
    pub fn from_jwk(kid: &str, x: &str, y: &str) -> Result<Self, String> {
        let x = URL_SAFE_NO_PAD.decode(x.trim_end_matches('=')).map_err(|e| format!("key {kid}: x is not base64url: {e}"))?;
        let y = URL_SAFE_NO_PAD.decode(y.trim_end_matches('=')).map_err(|e| format!("key {kid}: y is not base64url: {e}"))?;
        if x.len() != 32 || y.len() != 32 {
            return Err(format!("key {kid}: P-256 coordinates are 32 bytes"));
        }
        let mut point = Vec::with_capacity(65);
        point.push(0x04);
        point.extend_from_slice(&x);
        point.extend_from_slice(&y);
        let key =
            ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &point).map_err(|e| format!("key {kid}: not a valid P-256 public key: {e}"))?;
        Ok(VerifyingKey { kid: kid.to_string(), key })
    }

    fn verifies(&self, message: &[u8], der: &[u8]) -> bool {
        self.key.verify_sig(message, der).is_ok()
    }
}

/// Why a request failed verification; the text goes back to the caller (no secrets in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    MissingHeader(&'static str),
    Timestamp(String),
    BadSignature,
    Replay,
    NoKeys,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::MissingHeader(h) => write!(f, "missing header {h}"),
            Rejection::Timestamp(why) => write!(f, "webhook-timestamp rejected: {why}"),
            Rejection::BadSignature => write!(f, "no webhook-signature entry verifies with the app's keys"),
            Rejection::Replay => write!(f, "webhook-id was already received"),
            Rejection::NoKeys => write!(f, "signing keys are not loaded yet"),
        }
    }
}

/// The three Standard Webhooks headers.
#[derive(Debug, Clone, Copy)]
pub struct SignedHeaders<'a> {
    pub id: &'a str,
    pub timestamp: &'a str,
    pub signature: &'a str,
}

/// Checks the timestamp window, then whether any `v1bder` entry verifies with any key.
pub fn verify(h: &SignedHeaders, body: &[u8], keys: &[VerifyingKey], now_unix: i64) -> Result<(), Rejection> {
    let ts: i64 = h.timestamp.trim().parse().map_err(|_| Rejection::Timestamp("not unix seconds".into()))?;
    if ts < now_unix - TOLERANCE_SECS {
        return Err(Rejection::Timestamp(format!("{}s old (limit {TOLERANCE_SECS}s)", now_unix - ts)));
    }
    if ts > now_unix + TOLERANCE_SECS {
        return Err(Rejection::Timestamp(format!("{}s in the future (limit {TOLERANCE_SECS}s)", ts - now_unix)));
    }
    if keys.is_empty() {
        return Err(Rejection::NoKeys);
    }
    let mut message = Vec::with_capacity(h.id.len() + h.timestamp.len() + body.len() + 2);
    message.extend_from_slice(h.id.as_bytes());
    message.push(b'.');
    message.extend_from_slice(h.timestamp.as_bytes());
    message.push(b'.');
    message.extend_from_slice(body);
    let ok = h
        .signature
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1bder,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .any(|der| keys.iter().any(|k| k.verifies(&message, &der)));
    if ok {
        Ok(())
    } else {
        Err(Rejection::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn fixture() -> Value {
        serde_json::from_str(include_str!("../tests/fixtures/vectors.json")).unwrap()
    }

    pub fn fixture_keys(v: &Value) -> Vec<VerifyingKey> {
        v["jwks"]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| VerifyingKey::from_jwk(k["kid"].as_str().unwrap(), k["x"].as_str().unwrap(), k["y"].as_str().unwrap()).unwrap())
            .collect()
    }

    /// Vectors made by Python `cryptography` (tests/fixtures/gen_vectors.py).
    #[test]
    fn independent_vectors() {
        let v = fixture();
        let keys = fixture_keys(&v);
        let cases = v["cases"].as_array().unwrap();
        assert!(cases.len() >= 12);
        for c in cases {
            let h = SignedHeaders {
                id: c["id"].as_str().unwrap(),
                timestamp: c["timestamp"].as_str().unwrap(),
                signature: c["signature"].as_str().unwrap(),
            };
            let got = verify(&h, c["body"].as_str().unwrap().as_bytes(), &keys, c["now"].as_i64().unwrap());
            let want = c["expect"].as_str().unwrap();
            let ok = match want {
                "ok" => got.is_ok(),
                "bad_signature" => got == Err(Rejection::BadSignature),
                "timestamp" => matches!(got, Err(Rejection::Timestamp(_))),
                other => panic!("unknown expectation {other}"),
            };
            assert!(ok, "case {}: expected {want}, got {got:?}", c["name"]);
        }
    }

    #[test]
    fn no_keys_is_its_own_rejection_and_bad_jwks_are_refused() {
        let v = fixture();
        let c = &v["cases"][0];
        let h = SignedHeaders { id: "msg_1", timestamp: c["timestamp"].as_str().unwrap(), signature: c["signature"].as_str().unwrap() };
        assert_eq!(verify(&h, c["body"].as_str().unwrap().as_bytes(), &[], c["now"].as_i64().unwrap()), Err(Rejection::NoKeys));
        assert!(VerifyingKey::from_jwk("k", "AAAA", "AAAA").is_err());
        assert!(VerifyingKey::from_jwk("k", "%%", "AAAA").is_err());
        let not_on_curve = URL_SAFE_NO_PAD.encode([1u8; 32]);
        assert!(VerifyingKey::from_jwk("k", &not_on_curve, &not_on_curve).unwrap_err().contains("not a valid P-256"));
    }
}
