//! Standard Webhooks verification, Benchling's variant: ECDSA P-256 / SHA-256 signatures in
//! ASN.1 DER (`v1bder,<base64>` today; any `v{n}…der` label, see [`der_signature`]) over
//! `"{webhook-id}.{webhook-timestamp}.{raw body}"`.
//! Crypto is aws-lc-rs (already in the tree for TLS); nothing here is hand-rolled.

use aws_lc_rs::signature::{ParsedPublicKey, ECDSA_P256_SHA256_ASN1};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;

/// How old a `webhook-timestamp` may be.
pub const MAX_AGE_SECS: i64 = 240;
/// How far ahead of our clock a `webhook-timestamp` may be (clock skew).
pub const MAX_SKEW_SECS: i64 = 30;
/// How long one signed request stays acceptable, from the earliest moment to the latest:
/// 270 s. Replay protection across tasks rests on it: each task remembers the ids it took
/// (replay.rs), but another task does not know them; there the SQS FIFO queue deduplicates
/// by webhook-id for 5 minutes from the first send. The first send happens after
/// `timestamp - MAX_SKEW_SECS`; a replay is accepted before `timestamp + MAX_AGE_SECS` and
/// its send gives up within the SQS timeout (`SQS_SEND_TIMEOUT_MS`, 10 s by default): 280 s
/// in all, inside the 300 s deduplication interval. The Standard Webhooks default (5 minutes
/// each way) would keep a request valid for 10 minutes, twice that interval.
pub const TOLERANCE_SECS: i64 = MAX_AGE_SECS + MAX_SKEW_SECS;

/// At most this many entries in `webhook-signature` (Benchling sends one per active key).
pub const MAX_SIGNATURES: usize = 5;
/// At most this many bytes of `webhook-signature`: five `v1bder,` entries of a P-256 DER
/// signature (at most 72 bytes, 96 in base64) and their separators fit in 600.
pub const MAX_SIGNATURE_HEADER: usize = 1024;
/// At most this many bytes of `webhook-id` (it becomes the SQS deduplication id: 128 at most).
pub const MAX_ID: usize = 128;

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
    /// A header beyond its cap: answered 400 before any verification work.
    Oversized(String),
}

impl Rejection {
    /// The status it is answered with: 400 for a request no signature could make valid.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::Oversized(_) => 400,
            Rejection::NoKeys => 503,
            _ => 401,
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::MissingHeader(h) => write!(f, "missing header {h}"),
            Rejection::Timestamp(why) => write!(f, "webhook-timestamp rejected: {why}"),
            Rejection::BadSignature => write!(f, "no webhook-signature entry verifies with the app's keys"),
            Rejection::Replay => write!(f, "webhook-id was already received"),
            Rejection::NoKeys => write!(f, "signing keys are not loaded yet"),
            Rejection::Oversized(why) => write!(f, "{why}"),
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

/// Refuses headers beyond their caps (cheap: no decoding, no crypto).
pub fn check_sizes(h: &SignedHeaders) -> Result<(), Rejection> {
    if h.id.len() > MAX_ID {
        return Err(Rejection::Oversized(format!("webhook-id is {} bytes (at most {MAX_ID})", h.id.len())));
    }
    if h.id.is_empty() || !h.id.bytes().all(|b| b.is_ascii_graphic()) {
        // It becomes the SQS deduplication id, which takes printable ASCII without spaces only.
        return Err(Rejection::Oversized("webhook-id must be 1 to 128 printable ASCII characters without spaces".into()));
    }
    if h.signature.len() > MAX_SIGNATURE_HEADER {
        return Err(Rejection::Oversized(format!("webhook-signature is {} bytes (at most {MAX_SIGNATURE_HEADER})", h.signature.len())));
    }
    let entries = h.signature.split_whitespace().count();
    if entries > MAX_SIGNATURES {
        return Err(Rejection::Oversized(format!("webhook-signature has {entries} entries (at most {MAX_SIGNATURES})")));
    }
    Ok(())
}

/// Whether a request stamped `ts` is acceptable at `now`.
fn check_window(ts: i64, now: i64) -> Result<(), Rejection> {
    if ts < now.saturating_sub(MAX_AGE_SECS) {
        return Err(Rejection::Timestamp(format!("{}s old (limit {MAX_AGE_SECS}s)", now.saturating_sub(ts))));
    }
    if ts > now.saturating_add(MAX_SKEW_SECS) {
        return Err(Rejection::Timestamp(format!("{}s in the future (limit {MAX_SKEW_SECS}s)", ts.saturating_sub(now))));
    }
    Ok(())
}

/// The base64 of a `webhook-signature` entry that carries a DER signature: its label is `v`,
/// a version number, optional lowercase letters, then `der` (`v1bder` is what Benchling sends;
/// its own verifier, benchling-sdk, documents the format as `v{n}der` and takes any label
/// containing `der`, so a `v2der` from Benchling must not be refused here). Labels outside
/// that family (`der`, `v1`, `xder`, `v1derx`) are not DER signatures of Benchling's.
fn der_signature(entry: &str) -> Option<&str> {
    let (label, b64) = entry.split_once(',')?;
    let version = label.strip_prefix('v')?.strip_suffix("der")?;
    let letters = version.trim_start_matches(|c: char| c.is_ascii_digit());
    let digits = version.len() - letters.len();
    (digits > 0 && letters.bytes().all(|b| b.is_ascii_lowercase())).then_some(b64)
}

/// Checks the header caps, the timestamp window, then whether any DER entry verifies with
/// any key.
pub fn verify(h: &SignedHeaders, body: &[u8], keys: &[VerifyingKey], now_unix: i64) -> Result<(), Rejection> {
    check_sizes(h)?;
    let ts: i64 = h.timestamp.trim().parse().map_err(|_| Rejection::Timestamp("not unix seconds".into()))?;
    check_window(ts, now_unix)?;
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
        .filter_map(der_signature)
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
    fn too_many_or_too_long_signatures_are_refused_before_any_verification() {
        let v = fixture();
        let keys = fixture_keys(&v);
        let c = v["cases"].as_array().unwrap().iter().find(|c| c["expect"] == "ok").unwrap();
        let (id, ts, body, now) =
            (c["id"].as_str().unwrap(), c["timestamp"].as_str().unwrap(), c["body"].as_str().unwrap(), c["now"].as_i64().unwrap());
        let good = c["signature"].as_str().unwrap();
        let ok = SignedHeaders { id, timestamp: ts, signature: good };
        assert_eq!(verify(&ok, body.as_bytes(), &keys, now), Ok(()));
        // Five garbage entries before the good one: over the cap, so the good one is never tried.
        let six = format!("{} {good}", ["v1bder,AAAA"; 5].join(" "));
        let r = verify(&SignedHeaders { signature: &six, ..ok }, body.as_bytes(), &keys, now);
        assert!(matches!(&r, Err(Rejection::Oversized(m)) if m.contains("6 entries")), "{r:?}");
        assert_eq!(r.unwrap_err().status(), 400);
        let five = format!("{} {good}", ["v1bder,AAAA"; 4].join(" "));
        assert_eq!(verify(&SignedHeaders { signature: &five, ..ok }, body.as_bytes(), &keys, now), Ok(()), "five entries are fine");
        let long = format!("{good} v1bder,{}", "A".repeat(MAX_SIGNATURE_HEADER));
        let r = verify(&SignedHeaders { signature: &long, ..ok }, body.as_bytes(), &keys, now);
        assert!(matches!(&r, Err(Rejection::Oversized(m)) if m.contains("bytes")), "{r:?}");
        let id = "i".repeat(MAX_ID + 1);
        assert!(matches!(verify(&SignedHeaders { id: &id, ..ok }, body.as_bytes(), &keys, now), Err(Rejection::Oversized(_))));
        for bad in ["a b", "", "é"] {
            let r = verify(&SignedHeaders { id: bad, ..ok }, body.as_bytes(), &keys, now);
            assert!(matches!(&r, Err(Rejection::Oversized(m)) if m.contains("printable ASCII")), "{bad:?}: {r:?}");
        }
    }

    /// A signed request is acceptable for 270 s in all (see TOLERANCE_SECS): up to 240 s old,
    /// up to 30 s early; the SQS FIFO deduplication interval is 300 s.
    #[test]
    fn the_acceptance_window_fits_inside_fifo_deduplication() {
        let ts = 1_000_000;
        let check = |now: i64| check_window(ts, now);
        assert!(check(ts + MAX_AGE_SECS).is_ok() && check(ts + MAX_AGE_SECS + 1).is_err());
        assert!(check(ts - MAX_SKEW_SECS).is_ok() && check(ts - MAX_SKEW_SECS - 1).is_err());
        const SQS_FIFO_DEDUP_SECS: i64 = 300;
        const SQS_SEND_TIMEOUT_SECS: i64 = 10;
        const { assert!(TOLERANCE_SECS + SQS_SEND_TIMEOUT_SECS < SQS_FIFO_DEDUP_SECS) };
    }

    #[test]
    fn every_der_label_of_the_documented_family_is_read_and_no_other() {
        for label in ["v1bder", "v1der", "v2der", "v2bder", "v10der", "v3abder"] {
            assert_eq!(der_signature(&format!("{label},QUJD")), Some("QUJD"), "{label}");
        }
        for label in ["der", "vder", "vbder", "v1", "v1b", "xder", "v1derx", "V1bder", "v1Bder", "v-1der", "v1 der", "1der"] {
            assert_eq!(der_signature(&format!("{label},QUJD")), None, "{label}");
        }
        assert_eq!(der_signature("v1bder"), None, "no comma, no signature");
        assert_eq!(der_signature("v1bder,a,b"), Some("a,b"), "the rest is the base64 (it then fails to decode)");
    }

    /// A `v2der` entry signed by a key of the set verifies like a `v1bder` one.
    #[test]
    fn a_v2der_signature_verifies() {
        let v = fixture();
        let keys = fixture_keys(&v);
        let c = v["cases"].as_array().unwrap().iter().find(|c| c["expect"] == "ok").unwrap();
        let (id, ts, body, now) =
            (c["id"].as_str().unwrap(), c["timestamp"].as_str().unwrap(), c["body"].as_str().unwrap(), c["now"].as_i64().unwrap());
        let v2 = c["signature"].as_str().unwrap().replacen("v1bder,", "v2der,", 1);
        assert_eq!(verify(&SignedHeaders { id, timestamp: ts, signature: &v2 }, body.as_bytes(), &keys, now), Ok(()));
        let bare = c["signature"].as_str().unwrap().replacen("v1bder,", "der,", 1);
        let r = verify(&SignedHeaders { id, timestamp: ts, signature: &bare }, body.as_bytes(), &keys, now);
        assert_eq!(r, Err(Rejection::BadSignature));
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
