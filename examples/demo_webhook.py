"""Drives one signed Benchling webhook through the real service binary, against moto.

Used by `make demo` (examples/demo-service.sh). It plays Benchling: makes a P-256 key, serves
its JWKS on 127.0.0.1, creates the SQS FIFO queue and the Benchling secret in the emulator,
starts `benchling-webhook serve`, waits for /health/ready, posts a signed
v2.entry.updated.fields event, and shows the queued message. Python `cryptography` and boto3
come with moto's virtualenv.
"""
import base64, json, os, socket, subprocess, sys, threading, time, urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

import boto3
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

service_bin = sys.argv[1]
key = ec.generate_private_key(ec.SECP256R1())
nums = key.public_key().public_numbers()
b64u = lambda n: base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()
JWKS = json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": "demo", "x": b64u(nums.x), "y": b64u(nums.y)}]}).encode()

class Jwks(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("content-type", "application/json"); self.end_headers(); self.wfile.write(JWKS)
    def log_message(self, *a): pass

jwks_server = HTTPServer(("127.0.0.1", 0), Jwks)
threading.Thread(target=jwks_server.serve_forever, daemon=True).start()

sqs = boto3.client("sqs")
queue_url = sqs.create_queue(QueueName="benchling-webhook-events.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
boto3.client("secretsmanager").create_secret(Name="benchling-webhook/demo", SecretString=json.dumps({
    "tenant": "demo", "client_id": "demo-client", "client_secret": "demo-secret-never-logged",
    "app_definition_id": "appdef_demo", "user_bucket": "demo-bucket", "pkg_prefix": "benchling"}))

s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
env = dict(os.environ, PORT=str(port), BIND_ADDR="127.0.0.1", QUEUE_URL=queue_url, BENCHLING_SECRET="benchling-webhook/demo",
           BENCHLING_JWKS_URL=f"http://127.0.0.1:{jwks_server.server_port}/jwks", APP_ENV="demo")
proc = subprocess.Popen([service_bin, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
base = f"http://127.0.0.1:{port}"
try:
    for _ in range(100):
        try:
            with urllib.request.urlopen(base + "/health/ready", timeout=1) as r:
                if r.status == 200: break
        except Exception:
            time.sleep(0.1)
    else:
        raise SystemExit("service did not become ready")
    with urllib.request.urlopen(base + "/health") as r:
        print("GET /health ->", r.status, r.read().decode())

    body = json.dumps({"version": "0", "channel": "events", "app": {"id": "app_demo"},
                       "message": {"id": "evt_demo", "type": "v2.entry.updated.fields", "resourceId": "etr_demo123"}}).encode()
    wid, ts = "msg_demo_1", str(int(time.time()))
    sig = base64.b64encode(key.sign(f"{wid}.{ts}.".encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    req = urllib.request.Request(base + "/event", data=body, method="POST", headers={
        "content-type": "application/json", "webhook-id": wid, "webhook-timestamp": ts, "webhook-signature": "v1bder," + sig})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req) as r:
        print(f"POST /event (signed) -> {r.status} in {1000*(time.perf_counter()-t0):.1f} ms:", r.read().decode())

    forged = urllib.request.Request(base + "/event", data=body.replace(b"etr_demo123", b"etr_forged"), method="POST",
                                    headers={"webhook-id": "msg_demo_2", "webhook-timestamp": ts, "webhook-signature": "v1bder," + sig})
    try:
        urllib.request.urlopen(forged)
        raise SystemExit("a forged webhook was accepted")
    except urllib.error.HTTPError as e:
        print("POST /event (tampered body) ->", e.code, e.read().decode())

    msgs = sqs.receive_message(QueueUrl=queue_url, AttributeNames=["All"], MaxNumberOfMessages=10)["Messages"]
    assert len(msgs) == 1, msgs
    m = msgs[0]
    print("queued:", "group", m["Attributes"]["MessageGroupId"], "dedup", m["Attributes"]["MessageDeduplicationId"], "body", m["Body"][:120] + "...")
finally:
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    if "demo-secret-never-logged" in out:
        raise SystemExit("the secret appeared in the service's logs")
    print(f"service stopped on SIGTERM (exit {proc.returncode}); {len(out.splitlines())} JSON log lines, no secret in them")
