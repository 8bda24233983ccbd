"""Cases for the differential test of the service's webhook verifier against Benchling's own:
`benchling_sdk.apps.helpers.webhook_helpers.verify` (pinned in tests/emulator/install-moto.sh).

Prints JSON on stdout: the JWKS of the app's two keys and, for every case, the request
(headers, body), the reference's verdict on it now ("accept" or "refuse", with why) and
whether it carries a genuine signature (by a key of the set, over exactly its id, timestamp
and body, with a timestamp inside the service's window). tests/service.rs sends each case to
the service (POST /event) and compares. The timestamps are relative to the clock now: the
cases near a limit keep at least 10 s from it, so that the seconds between this verdict and
the service's cannot change either.
"""
import base64
import json
import time

from benchling_sdk.apps.helpers.webhook_helpers import WebhookVerificationError, verify
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from jwcrypto import jwk

APP_DEFINITION = "appdef_1"
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def b64u(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()


def public_jwk(key, kid):
    nums = key.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": b64u(nums.x), "y": b64u(nums.y), "kid": kid, "use": "sig", "alg": "ES256"}


k1, k2, retired = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
JWKS = {"keys": [public_jwk(k1, "k1"), public_jwk(k2, "k2")]}
KEYSET = jwk.JWKSet.from_json(json.dumps(JWKS))
NOW = int(time.time())


def der(key, msg_id, ts, body: bytes, want=lambda b64: True) -> bytes:
    """A DER signature whose standard base64 satisfies `want` (ECDSA signatures are random:
    sign again until one does)."""
    while True:
        sig = key.sign(f"{msg_id}.{ts}.".encode() + body, ec.ECDSA(hashes.SHA256()))
        if want(base64.b64encode(sig).decode()):
            return sig


def b64(sig: bytes) -> str:
    return base64.b64encode(sig).decode()


def body_for(name: str, text: str = "") -> bytes:
    return json.dumps(
        {"version": "0", "baseURL": "https://t.benchling.com", "tenantId": "ten_1", "app": {"id": "app_1"},
         "appDefinition": {"id": APP_DEFINITION, "versionNumber": "1"}, "channel": "events",
         "message": {"id": f"evt_{name}", "type": "v2.entry.created", "resourceId": f"etr_{name}{text}",
                     "createdAt": "2026-12-01T12:00:00Z", "deprecated": False, "updates": ["fields.x"]}},
        separators=(",", ":"), ensure_ascii=False).encode()


def reference(headers, body: bytes):
    try:
        verify(APP_DEFINITION, body.decode("utf-8"), dict(headers), jwk_function=lambda _app: KEYSET)
        return "accept", ""
    except WebhookVerificationError as e:
        return "refuse", str(e)
    except Exception as e:  # the reference raises on some malformed headers: it refuses them
        return "refuse", f"raised {type(e).__name__}: {e}"


cases = []


def case(name, signature, *, ts=None, body=None, msg_id=None, genuine=False, names=("webhook-id", "webhook-timestamp", "webhook-signature"), drop=()):
    msg_id = msg_id or f"msg_{name}"
    ts = str(NOW) if ts is None else ts
    body = body_for(name) if body is None else body
    headers = [(n, v) for n, v in zip(names, (msg_id, ts, signature)) if n.lower() not in drop]
    verdict, why = reference(headers, body)
    cases.append({"name": name, "headers": headers, "body": body.decode("utf-8"), "reference": verdict, "why": why, "genuine": genuine})


def signed(name, key=k1, label="v1bder", *, ts=None, msg_id=None, body=None):
    msg_id = msg_id or f"msg_{name}"
    ts = str(NOW) if ts is None else ts
    body = body_for(name) if body is None else body
    return f"{label},{b64(der(key, msg_id, ts, body))}"


# Valid, by either key of the set.
case("valid", signed("valid"), genuine=True)
case("valid_second_key", signed("valid_second_key", key=k2), genuine=True)
# Key rotation: signed by a key the set no longer has; both keys' entries, one retired.
case("retired_key_only", signed("retired_key_only", key=retired))
case("retired_and_current_key", f'{signed("retired_and_current_key", key=retired)} {signed("retired_and_current_key")}', genuine=True)
# Tampered: the body, the id or the timestamp differ from what was signed.
case("tampered_body", signed("tampered_body"), body=body_for("tampered_body", "x"))
case("tampered_id", signed("tampered_id"), msg_id="msg_other")
case("tampered_timestamp", signed("tampered_timestamp"), ts=str(NOW + 1))
# Several entries.
case("junk_then_valid", f'v1bder,{b64(b"junk")} {signed("junk_then_valid", key=retired)} {signed("junk_then_valid")}', genuine=True)
case("five_entries_last_valid", " ".join([f"v1bder,{b64(b'junk')}"] * 4 + [signed("five_entries_last_valid")]), genuine=True)
case("six_entries_last_valid", " ".join([f"v1bder,{b64(b'junk')}"] * 5 + [signed("six_entries_last_valid")]), genuine=True)
case("double_space_between_entries", f'v1bder,{b64(b"junk")}  {signed("double_space_between_entries")}', genuine=True)
case("entry_with_two_commas_then_valid", f'v1bder,a,b {signed("entry_with_two_commas_then_valid")}', genuine=True)
# Entry labels: the `v{n}der` family, and others.
for label in ["v1der", "v2der", "v2bder", "v10der"]:
    case(f"label_{label}", signed(f"label_{label}", label=label), genuine=True)
case("label_bare_der", signed("label_bare_der", label="der"), genuine=True)
case("label_v1_hmac_style", signed("label_v1_hmac_style", label="v1"))
case("no_entries", "")
# Odd encodings of the signature.
name = "urlsafe_base64"
sig = der(k1, f"msg_{name}", NOW, body_for(name), want=lambda s: "+" in s or "/" in s)
case(name, "v1bder," + base64.urlsafe_b64encode(sig).decode())
name = "unpadded_base64"
sig = der(k1, f"msg_{name}", NOW, body_for(name), want=lambda s: s.endswith("="))
case(name, "v1bder," + b64(sig).rstrip("="))
name = "der_with_a_trailing_byte"
case(name, "v1bder," + b64(der(k1, f"msg_{name}", NOW, body_for(name)) + b"\x00"))
name = "malleated_high_s"  # (r, n - s): the same signature to ECDSA, other bytes
r, s = decode_dss_signature(der(k1, f"msg_{name}", NOW, body_for(name)))
case(name, "v1bder," + b64(encode_dss_signature(r, P256_ORDER - s)), genuine=True)
# Header names in other case (HTTP header names are case-insensitive).
case("capitalised_header_names", signed("capitalised_header_names"), names=("Webhook-Id", "Webhook-Timestamp", "Webhook-Signature"), genuine=True)
# A body beyond ASCII.
name = "non_ascii_body"
body = body_for(name, "-é-✓")
case(name, signed(name, body=body), body=body, genuine=True)
# Missing headers.
for header in ["webhook-id", "webhook-timestamp", "webhook-signature"]:
    name = f"missing_{header.replace('-', '_')}"
    case(name, signed(name), drop=(header,))
# The timestamp: the window (the service: 240 s old, 30 s ahead; the reference: 5 min either
# way), and its syntax.
for age in [200, 260, 280, 330]:
    name = f"age_{age}s"
    ts = str(NOW - age)
    case(name, signed(name, ts=ts), ts=ts, genuine=age < 240)
for ahead in [20, 60, 330]:
    name = f"ahead_{ahead}s"
    ts = str(NOW + ahead)
    case(name, signed(name, ts=ts), ts=ts, genuine=ahead < 30)
for name, ts in [("timestamp_decimal", f"{NOW}.0"), ("timestamp_exponent", f"{NOW / 1e9}e9"), ("timestamp_plus_sign", f"+{NOW}"), ("timestamp_words", "soon")]:
    case(name, signed(name, ts=ts), ts=ts, genuine=name == "timestamp_plus_sign")

print(json.dumps({"jwks": JWKS, "cases": cases}, ensure_ascii=False, indent=1))
