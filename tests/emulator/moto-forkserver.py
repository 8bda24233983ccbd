"""A moto fork server for the tests: moto (with moto_aws.py's behaviours) is imported and its
service routers built once, then every test's emulator is a fork of that process, ready in
milliseconds instead of ~2 s of CPU each (most of the test suite's CPU went to starting moto).

Usage: moto-forkserver.py SOCKET [IDLE_SECONDS]
Listens on the Unix socket SOCKET. A client connects and sends `start\\n`; a forked child binds
a free port on 127.0.0.1, answers `port <n>\\n` and serves moto there until the client's
connection closes (the test ends, however it ends), then exits. Each child starts from the
same clean state (nothing is ever created in the parent) with its own random seed. The server
exits after IDLE_SECONDS (default 60) without a client.
"""
import gc
import os
import random
import signal
import socket
import sys
import tempfile
import threading

import moto_aws  # noqa: F401  (patches moto on import)
from moto.moto_api._internal import mock_random
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server
from werkzeug.test import Client

# Every service the tests call, by its signing name and a read that builds its router.
SERVICES = [
    ("apigateway", "GET", "/v2/apis", ""),
    ("scheduler", "GET", "/schedule-groups", ""),
    ("s3", "GET", "/", ""),
    ("ec2", "POST", "/", "Action=DescribeRegions&Version=2016-11-15"),
    ("iam", "POST", "/", "Action=ListRoles&Version=2010-05-08"),
    ("sts", "POST", "/", "Action=GetCallerIdentity&Version=2011-06-15"),
    ("sqs", "POST", "/", "Action=ListQueues&Version=2012-11-05"),
    ("ecs", "POST", "/", "{}", "AmazonEC2ContainerServiceV20141113.ListClusters"),
    ("logs", "POST", "/", "{}", "Logs_20140328.DescribeLogGroups"),
    ("servicediscovery", "POST", "/", "{}", "Route53AutoNaming_v20170314.ListNamespaces"),
    ("application-autoscaling", "POST", "/", '{"ServiceNamespace": "ecs"}', "AnyScaleFrontendService.DescribeScalableTargets"),
    ("secretsmanager", "POST", "/", "{}", "secretsmanager.ListSecrets"),
]
# The same services by botocore's names (their models, paginators and error tables).
BOTOCORE_NAMES = [
    "apigatewayv2", "scheduler", "s3", "ec2", "iam", "sts", "sqs", "ecs", "logs",
    "servicediscovery", "application-autoscaling", "secretsmanager",
]


def build_app():
    """moto's server application with every service's router built (what the first request
    to each service would otherwise do in every test's emulator). Only reads: the backends
    stay empty."""
    app = DomainDispatcherApplication(create_backend_app)
    client = Client(app)
    for scope, method, path, body, *target in SERVICES:
        headers = {"Authorization": f"AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{scope}/aws4_request, SignedHeaders=host, Signature=0"}
        if body:
            headers["Content-Type"] = "application/x-amz-json-1.1" if target else "application/x-www-form-urlencoded"
        if target:
            headers["X-Amz-Target"] = target[0]
        answer = client.open(path, method=method, data=body or None, headers=headers)
        if answer.status_code != 200:
            sys.exit(f"moto-forkserver: warming {scope} answered {answer.status_code}: {answer.get_data(as_text=True)[:500]}")
    moto_aws.warm(BOTOCORE_NAMES)
    return app


def serve_child(conn, app):
    """In the forked child: serve moto on a free port until the client hangs up."""
    random.seed()
    mock_random.seed()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    port = server.server_port
    os.environ["MOTO_PORT"] = str(port)
    log = os.open(os.path.join(tempfile.gettempdir(), f"moto-{port}.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)

    def hang_up_ends_it():
        try:
            while conn.recv(1024):
                pass
        finally:
            os._exit(0)

    threading.Thread(target=hang_up_ends_it, daemon=True).start()
    conn.sendall(f"port {port} pid {os.getpid()}\n".encode())
    server.serve_forever()


def main():
    path = sys.argv[1]
    idle = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    app = build_app()
    # Everything imported and built so far is shared with every child: out of the collector's
    # sight, so that collecting in a child does not touch (and copy) the parent's pages.
    gc.freeze()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = f"{path}.{os.getpid()}"
    listener.bind(tmp)
    os.rename(tmp, path)  # clients never see a socket that does not accept yet
    listener.listen(64)
    listener.settimeout(idle)
    try:
        while True:
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                return
            conn.settimeout(10)
            try:
                request = conn.recv(64)
            except OSError:
                conn.close()
                continue
            if request.strip() != b"start":
                conn.close()
                continue
            conn.settimeout(None)
            if os.fork() == 0:
                listener.close()
                serve_child(conn, app)
                os._exit(0)
            conn.close()
    finally:
        # Gone from the path before it stops answering: a client that finds no socket starts a
        # new server; one caught in between sees its connection closed and tries again.
        try:
            os.unlink(path)
        except OSError:
            pass
        listener.close()


if __name__ == "__main__":
    main()
