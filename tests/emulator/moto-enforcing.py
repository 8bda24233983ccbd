"""moto_server with IAM enforcement fixed for bodiless requests (test-only launcher).

moto 5.2.5 recomputes each request's SigV4 signature over `body or data`; for a GET or DELETE
without a body (API Gateway v2's GetApis, DeleteRoute, ...) `data` holds the request's headers, so the
signature it expects is over the wrong payload and every such call fails with
SignatureDoesNotMatch, from boto3 as from the Rust SDK. This launcher signs over the body
alone (empty when there is none), as AWS does, then runs moto's own server entry point with
the same arguments. Used only by tests/policy.rs; IAM enforcement is switched on with
INITIAL_NO_AUTH_ACTION_COUNT in the environment. The AWS behaviours of moto_aws.py apply here too.
"""
import sys

from botocore.awsrequest import AWSRequest
import moto.iam.access_control as access_control
import moto_aws  # noqa: F401  (patches moto on import)
from moto.server import main


def _create_aws_request(self):
    signed = self._get_string_between("SignedHeaders=", ",", self._headers["Authorization"]).split(";")
    headers = self._create_headers_for_aws_request(signed, self._headers)
    # Form posts keep moto's own behaviour (it re-encodes the parsed form; the re-signing
    # proxy makes the client side match). Only bodiless GET/DELETE/HEAD are signed over "".
    body = self._body or ("" if self._method in ("GET", "DELETE", "HEAD") else self._data)
    request = AWSRequest(method=self._method, url=self._path, data=body, headers=headers)
    request.context["timestamp"] = headers["X-Amz-Date"]
    return request


access_control.IAMRequestBase._create_aws_request = _create_aws_request
sys.exit(main(sys.argv[1:]))
