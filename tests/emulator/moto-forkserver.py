"""A moto fork server for the tests: moto (with moto_aws.py's behaviours) is imported and its
service routers built once, then every test's emulator is a fork of that process, ready in
milliseconds instead of ~2 s of CPU each (most of the test suite's CPU went to starting moto).

Usage: moto-forkserver.py SOCKET [IDLE_SECONDS]
Listens on the Unix socket SOCKET. A client connects and sends `start\\n`; a forked child binds
a free port on 127.0.0.1, answers `port <n>\\n` and serves moto there until the client's
connection closes (the test ends, however it ends), then exits. Each child starts from the
same clean state (nothing is ever created in the parent) with its own random seed. The server
exits after IDLE_SECONDS (default 60) without a client.

A template: a client that made something of its child (the tests apply specs/prod.yaml once
per run) sends `freeze PATH\n` on its connection; the child stops serving HTTP, answers
`frozen\n` and becomes a fork server of its own on the Unix socket PATH, whose children each
start from that state (a test that needs the stack applied gets it in milliseconds instead
of an apply's ~1.5 s of CPU). It outlives the client that made it and exits when idle too.
"""
import gc
import os
import random
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback

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


def serve_child(conn, app, idle):
    """In the forked child: serve moto on a free port until the client hangs up, or, told to
    freeze, become a template (see the module's head)."""
    random.seed()
    mock_random.seed()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    # Request threads are joined when the server closes (a freeze must not fork one that is
    # half-way through a request, holding a lock); a plain child exits without closing it.
    server.daemon_threads = False
    port = server.server_port
    os.environ["MOTO_PORT"] = str(port)
    output_to(os.path.join(tempfile.gettempdir(), f"moto-{port}.log"))
    frozen = []

    def listen():
        """Hang-up ends the child; `freeze PATH` stops the HTTP server instead."""
        pending = b""
        try:
            while True:
                data = conn.recv(1024)
                if not data:
                    break
                pending += data
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if line.startswith(b"freeze "):
                        frozen.append(line[len(b"freeze "):].decode())
                        server.shutdown()
                        return
        finally:
            if not frozen:
                os._exit(0)

    threading.Thread(target=listen, daemon=True).start()
    conn.sendall(f"port {port} pid {os.getpid()}\n".encode())
    server.serve_forever()
    # Only after a freeze: wait (10 s at most) for the requests in flight to be answered and
    # their threads to end, so that no fork starts inside one.
    server.socket.close()
    deadline = time.monotonic() + 10
    for thread in threading.enumerate():
        if thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
    if threading.active_count() > 1:
        conn.sendall(b"busy\n")
        os._exit(1)
    gc.collect()
    gc.freeze()
    output_to(f"{frozen[0]}.log")
    # Listening before it says so, and found at its path only once the client has heard it.
    listener, tmp = listen_at(frozen[0], publish=False)
    try:
        conn.sendall(b"frozen\n")
        conn.close()
    except OSError:
        os.unlink(tmp)
        os._exit(1)
    os.rename(tmp, frozen[0])
    serve_forks(listener, frozen[0], app, idle)


def output_to(path):
    """This process's stdout and stderr go to the file at `path` (emptied)."""
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)


def listen_at(path, publish=True):
    """A listening Unix socket, bound at a temporary path and (with `publish`) moved to
    `path` once it accepts; without, the caller moves it and gets the temporary path too."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = f"{path}.{os.getpid()}"
    listener.bind(tmp)
    listener.listen(64)
    if not publish:
        return listener, tmp
    os.rename(tmp, path)  # clients never see a socket that does not accept yet
    return listener


def serve_forks(listener, path, app, idle):
    """Answers each `start` with a forked child serving `app`'s state, until `idle` seconds
    pass without a client."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
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
                # The child never unwinds into this frame (whose `finally` is the parent's).
                code = 0
                try:
                    listener.close()
                    serve_child(conn, app, idle)
                except BaseException:
                    traceback.print_exc()
                    code = 1
                finally:
                    os._exit(code)
            conn.close()
    finally:
        # Gone from the path before it stops answering: a client that finds no socket starts a
        # new server; one caught in between sees its connection closed and tries again.
        try:
            os.unlink(path)
        except OSError:
            pass
        listener.close()


def main():
    path = sys.argv[1]
    idle = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    app = build_app()
    # Everything imported and built so far is shared with every child: out of the collector's
    # sight, so that collecting in a child does not touch (and copy) the parent's pages.
    gc.freeze()
    serve_forks(listen_at(path), path, app, idle)


if __name__ == "__main__":
    main()
