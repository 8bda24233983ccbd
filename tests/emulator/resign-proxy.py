"""A loopback proxy that signs every request again, for moto's IAM enforcement.

moto checks SigV4 signatures with its own canonicalisation, which differs from the AWS SDK for
Rust in two places: form bodies (moto re-encodes them with `+` for spaces, the SDK sends
`%20`) and some REST paths (API Gateway v2). Both make correct requests fail with
SignatureDoesNotMatch / AuthFailure under enforcement. This proxy keeps the caller's identity
(the test created the access key and passes its secret here), rewrites `%20` to `+` in form
bodies, signs the request again with botocore (the signer moto's own tests use) and forwards
it. Test-only; listens on 127.0.0.1; stops when its parent test kills it.

usage: resign-proxy.py PORT UPSTREAM ACCESS_KEY_ID SECRET_ACCESS_KEY
"""
import http.server
import sys
import urllib.request
import urllib.error

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

PORT, UPSTREAM, KEY, SECRET = int(sys.argv[1]), sys.argv[2].rstrip("/"), sys.argv[3], sys.argv[4]
CREDS = Credentials(KEY, SECRET)
HOP = {"connection", "keep-alive", "proxy-authorization", "te", "trailers", "transfer-encoding", "upgrade", "host",
       "authorization", "x-amz-date", "x-amz-security-token", "content-length", "x-amz-content-sha256"}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _handle(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        auth = self.headers.get("authorization", "")
        # Credential=AKID/20261128/us-east-1/ec2/aws4_request
        scope = auth.split("Credential=")[1].split(",")[0].split("/") if "Credential=" in auth else []
        region, service = (scope[2], scope[3]) if len(scope) >= 4 else ("us-east-1", "sts")
        if "x-www-form-urlencoded" in (self.headers.get("content-type") or ""):
            body = body.replace(b"%20", b"+")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        req = AWSRequest(method=self.command, url=UPSTREAM + self.path, data=body, headers=headers)
        if scope:
            SigV4Auth(CREDS, service, region).add_auth(req)
        prepared = req.prepare()
        out = urllib.request.Request(prepared.url, data=body if body or self.command in ("POST", "PUT", "PATCH") else None,
                                     method=self.command, headers=dict(prepared.headers.items()))
        try:
            with urllib.request.urlopen(out, timeout=60) as r:
                status, rheaders, rbody = r.status, r.getheaders(), r.read()
        except urllib.error.HTTPError as e:
            status, rheaders, rbody = e.code, e.headers.items(), e.read()
        self.send_response(status)
        for k, v in rheaders:
            if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                self.send_header(k, v)
        self.send_header("content-length", str(len(rbody)))
        self.end_headers()
        self.wfile.write(rbody)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
# Port 0: the system picks a free one; the first line on stdout says which (no probe-then-bind race).
print(server.server_address[1], flush=True)
server.serve_forever()
