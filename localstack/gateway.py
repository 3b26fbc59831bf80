#!/usr/bin/env python3
"""Tally local gateway: one AWS endpoint in front of moto and the cargo-lambda host.

Routes (see docs/design.md, "Local stack"):

* ``POST /2015-03-31/functions/<name-or-arn>/invocations`` -> the cargo-lambda
  host (default 127.0.0.1:9000), same path with the bare function name (an ARN
  ``arn:aws:lambda:<region>:<acct>:function:<name>[:<qualifier>]``, a partial
  ARN ``<acct>:function:<name>`` or ``<name>:<qualifier>`` all become ``<name>``,
  which is the binary name). A handler error -- cargo-lambda answers HTTP 5xx
  with ``{"errorType": .., "errorMessage": ..}`` -- is turned into what AWS
  Lambda answers: HTTP 200, ``X-Amz-Function-Error: Unhandled`` and that body,
  so Step Functions Retry/Catch match on the Rust ``errorType``. A host that is
  down or answers something that is not a handler error becomes a Lambda
  ``ServiceException`` (Step Functions: ``Lambda.ServiceException``, retried).
* ``X-Amz-Target: AmazonEC2ContainerServiceV20141113.*`` -> ``ECS_HANDLERS``
  (with ``--ecs-tasks`` and ``--bin-dir``: RunTask and DescribeTasks of the
  template's task definitions run the container's binary as a local process,
  localstack/local_ecs.py; anything else goes to moto).
* everything else -> moto (default 127.0.0.1:4575), method, path, query,
  headers and body unchanged. A chunked request body is de-chunked and sent with
  ``Content-Length`` (moto's werkzeug reads bodies by Content-Length); the body
  bytes themselves are not touched. Responses are streamed back.

Stdlib only. Thread per connection (ThreadingHTTPServer), no global lock, a new
upstream connection per request, long timeouts (partition invocations run for
minutes; the first invocation of a function also waits for its compilation).

    python localstack/gateway.py [--port 4566] [--moto 127.0.0.1:4575] \
        [--lambda-host 127.0.0.1:9000] [--invoke-timeout 960]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import iam_gate  # noqa: E402
from iam_gate import function_name_from  # noqa: E402,F401 -- re-exported for the tests

INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations/?$")
ECS_TARGET_PREFIX = "AmazonEC2ContainerServiceV20141113."

# Hop-by-hop headers (RFC 7230 6.1) are never forwarded. "expect" is answered
# by this server itself (100-continue), so it is not forwarded either.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "expect",
}

COPY_CHUNK = 64 * 1024


def parse_hostport(value: str, default_port: int) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host:
        return value, default_port
    return host, int(port)


class Config:
    def __init__(
        self,
        moto: tuple[str, int] = ("127.0.0.1", 4575),
        lambda_host: tuple[str, int] = ("127.0.0.1", 9000),
        invoke_timeout: float = 960.0,
        proxy_timeout: float = 960.0,
        verbose: bool = False,
        authorizer: Optional["iam_gate.Authorizer"] = None,
        via: Optional[tuple[str, int]] = None,
    ):
        self.moto = moto
        # The test-only fault proxy: when set, every call to moto or the
        # Lambda host goes through it, naming its destination in
        # X-Tally-Upstream and its signer in X-Tally-Caller.
        self.via = via
        self.lambda_host = lambda_host
        self.invoke_timeout = invoke_timeout
        self.proxy_timeout = proxy_timeout
        self.verbose = verbose
        # IAM as AWS enforces it (localstack/iam_gate.py); None: no checks
        # (the gateway's own unit tests).
        self.authorizer = authorizer


# --------------------------------------------------------------------------
# ECS extension point.
#
# moto's Step Functions engine calls `ecs:runTask(.sync)` over HTTP through
# this gateway: RunTask, then DescribeTasks until lastStatus == STOPPED
# (JSON 1.1 protocol, X-Amz-Target AmazonEC2ContainerServiceV20141113.<Op>).
# To run a container entry point as a local process, register handlers here:
#
#     ECS_HANDLERS["RunTask"] = my_run_task       # start the process, return task JSON
#     ECS_HANDLERS["DescribeTasks"] = my_describe # report lastStatus / exitCode
#
# A handler gets (operation, request_json, headers, caller) and returns
# (status, response_json) or None to fall through to moto. `caller` is the
# signer's assumed-role key (None: the operator), for the checks AWS makes
# beyond the action itself (iam:PassRole of the task's roles).
# --------------------------------------------------------------------------
EcsHandler = Callable[[str, dict, dict, Optional["iam_gate.AssumedKey"]], Optional[tuple[int, dict]]]
ECS_HANDLERS: dict[str, EcsHandler] = {}
# The local ECS substitute, for the admin endpoints (/_local/ecs/...).
LOCAL_ECS = None


class GatewayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's
    # algorithm meets the client's delayed ACK and every response waits ~40 ms.
    disable_nagle_algorithm = True
    server_version = "TallyGateway/1"
    config: Config = Config()

    # ---- plumbing -------------------------------------------------------

    def log_message(self, fmt: str, *args) -> None:  # noqa: D401
        if self.config.verbose:
            sys.stderr.write(
                "%s [gateway] %s\n" % (time.strftime("%H:%M:%S"), fmt % args)
            )

    def log_line(self, msg: str) -> None:
        sys.stderr.write("%s [gateway] %s\n" % (time.strftime("%H:%M:%S"), msg))
        sys.stderr.flush()

    def _read_body(self) -> bytes:
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("client closed during chunked body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until an empty line
                    while True:
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                out += self._read_exact(size)
                self.rfile.readline(65537)  # CRLF after the chunk
            return bytes(out)
        length = self.headers.get("Content-Length")
        if length:
            return self._read_exact(int(length))
        return b""

    def _read_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            piece = self.rfile.read(n - len(buf))
            if not piece:
                raise ConnectionError("client closed during body")
            buf += piece
        return bytes(buf)

    def _forward_headers(self, body_len: int, drop_host: bool = False):
        out = []
        for k, v in self.headers.items():
            lk = k.lower()
            if lk in HOP_BY_HOP or lk == "content-length":
                continue
            if lk == "host" and drop_host:
                continue
            out.append((k, v))
        if body_len or self.command in ("POST", "PUT", "PATCH"):
            out.append(("Content-Length", str(body_len)))
        return out

    def _send_simple(self, status: int, headers: list[tuple[str, str]], body: bytes):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _relay_response(self, resp: http.client.HTTPResponse) -> None:
        """Stream an upstream response back to the client."""
        self.send_response_only(resp.status, resp.reason)
        length = resp.getheader("Content-Length")
        for k, v in resp.getheaders():
            lk = k.lower()
            if lk in HOP_BY_HOP or lk == "content-length":
                continue
            self.send_header(k, v)
        no_body = (
            self.command == "HEAD" or resp.status in (204, 304) or resp.status < 200
        )
        if no_body:
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            resp.read()
            return
        if length is not None:
            self.send_header("Content-Length", length)
            self.end_headers()
            remaining = int(length)
            while remaining > 0:
                piece = resp.read(min(COPY_CHUNK, remaining))
                if not piece:
                    self.close_connection = True  # short upstream body
                    break
                self.wfile.write(piece)
                remaining -= len(piece)
            return
        # Unknown length upstream: re-chunk for our HTTP/1.1 client.
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while True:
            piece = resp.read1(COPY_CHUNK) if hasattr(resp, "read1") else resp.read(COPY_CHUNK)
            if not piece:
                break
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def _connect(self, dest: tuple[str, int], timeout: float) -> tuple[http.client.HTTPConnection, list]:
        """A connection to `dest` (through the fault proxy when there is one)
        and the routing headers to add."""
        if self.config.via is None:
            return http.client.HTTPConnection(dest[0], dest[1], timeout=timeout), []
        caller = getattr(self, "_caller", "") or "operator"
        return (http.client.HTTPConnection(self.config.via[0], self.config.via[1], timeout=timeout),
                [("X-Tally-Upstream", f"{dest[0]}:{dest[1]}"), ("X-Tally-Caller", caller)])

    # ---- dispatch -------------------------------------------------------

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except (ConnectionError, ValueError) as e:
            self.log_line(f"bad request body: {e}")
            self.close_connection = True
            return
        req = iam_gate.Request.of(self.command, self.path, self.headers, body)
        if req.path.startswith("/_local/"):
            self._admin(req)
            return
        auth = self.config.authorizer
        self._caller = ""
        if auth is not None:
            key = auth.principal(req)[0]
            self._caller = key.session_arn if key is not None else "operator"
            denial = auth.check(req)
            if denial is not None:
                self._send_simple(denial.status, denial.headers, denial.body)
                return
        path = req.path
        m = INVOKE_PATH.match(path)
        if self.command == "POST" and m:
            self._invoke(m.group("name"), body)
            return
        target = self.headers.get("X-Amz-Target", "")
        if target.startswith(ECS_TARGET_PREFIX):
            caller = auth.principal(req)[0] if auth is not None else None
            if self._ecs(target[len(ECS_TARGET_PREFIX):], body, caller):
                return
        self._proxy_to_moto(body, req)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _dispatch

    def _admin(self, req: "iam_gate.Request") -> None:
        """The local stack's own endpoints (no AWS meaning; S3 bucket names
        cannot start with '_'): IAM counters, the ECS tasks and their kill."""
        auth = self.config.authorizer
        if req.path == "/_local/iam" and self.command == "GET":
            doc = {"enforced": auth is not None, "checked": auth.checked if auth else 0,
                   "denied": auth.denials if auth else 0}
        elif req.path == "/_local/ecs/tasks" and self.command == "GET":
            doc = LOCAL_ECS.describe_local() if LOCAL_ECS else []
        elif req.path == "/_local/ecs/kill" and self.command == "POST":
            try:
                selector = json.loads(req.body or b"{}")
            except ValueError:
                selector = {}
            doc = {"killed": LOCAL_ECS.kill(selector) if LOCAL_ECS else []}
        else:
            self._send_simple(404, [("Content-Type", "application/json")], b'{"message": "no such endpoint"}')
            return
        self._send_simple(200, [("Content-Type", "application/json")], json.dumps(doc).encode())

    # ---- moto -----------------------------------------------------------

    def _proxy_to_moto(self, body: bytes, req: Optional["iam_gate.Request"] = None) -> None:
        auth = self.config.authorizer
        signer = req.signer() if req is not None else None
        service = signer[2] if signer else ""
        form = req.form() if req is not None and service in ("sts", "iam") else {}
        action = (form.get("Action") or [""])[0]
        if auth is not None and service == "sts" and action == "AssumeRole":
            self._assume_role(body, form)
            return
        if auth is not None and service == "iam" and not action.startswith(("Get", "List")):
            auth.policies.invalidate()
        host, port = self.config.moto
        conn, routing = self._connect(self.config.moto, self.config.proxy_timeout)
        try:
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                has_host = False
                for k, v in self._forward_headers(len(body)) + routing:
                    if k.lower() == "host":
                        has_host = True
                    conn.putheader(k, v)
                if not has_host:
                    conn.putheader("Host", f"{host}:{port}")
                conn.endheaders(body if body else None)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                self.log_line(f"moto unreachable for {self.command} {self.path}: {e!r}")
                msg = json.dumps({"__type": "ServiceUnavailable", "message": f"moto backend unreachable: {e}"})
                self._send_simple(503, [("Content-Type", "application/json")], msg.encode())
                return
            try:
                self._relay_response(resp)
            except (OSError, http.client.HTTPException) as e:
                # Response already started: all we can do is drop the connection.
                self.log_line(f"relay of {self.command} {self.path} broken: {e!r}")
                self.close_connection = True
        finally:
            conn.close()

    def _assume_role(self, body: bytes, form: dict) -> None:
        """Relays an AssumeRole and records the key it issues, so the calls
        that key signs are judged against the role's policies."""
        host, port = self.config.moto
        conn = http.client.HTTPConnection(host, port, timeout=self.config.proxy_timeout)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in self._forward_headers(len(body)):
                conn.putheader(k, v)
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            data = resp.read()
            headers = [(k, v) for k, v in resp.getheaders()
                       if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"]
        except (OSError, http.client.HTTPException) as e:
            msg = json.dumps({"__type": "ServiceUnavailable", "message": f"moto backend unreachable: {e}"})
            self._send_simple(503, [("Content-Type", "application/json")], msg.encode())
            return
        finally:
            conn.close()
        if resp.status == 200:
            key = self.config.authorizer.registry.observe_assume_role(form, data)
            if key is not None:
                self.log_line(f"sts: {key.access_key_id} is {key.session_arn}")
        self._send_simple(resp.status, headers, data)

    # ---- lambda ---------------------------------------------------------

    def _invoke(self, raw_name: str, body: bytes) -> None:
        """Lambda Invoke -> the local Lambda host (localstack/lambda_host.py),
        which answers as AWS Lambda does (a function error is HTTP 200 with
        X-Amz-Function-Error; a throttle is 429); relayed unchanged. A host
        that is down becomes Lambda's ServiceException (Step Functions:
        Lambda.ServiceException, retried)."""
        name = function_name_from(raw_name)
        invocation_type = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if invocation_type == "DryRun":
            self._send_simple(204, [], b"")
            return
        headers = self._forward_headers(len(body), drop_host=True)
        started = time.monotonic()
        status, resp_headers, resp_body = self._call_lambda_host(name, body, headers)
        elapsed = time.monotonic() - started
        if status is None:
            self._service_error(
                500,
                "ServiceException",
                f"local Lambda host {self.config.lambda_host[0]}:{self.config.lambda_host[1]} "
                f"unreachable for function {name}: {resp_body.decode(errors='replace')}",
            )
            return
        hdr = {k.lower(): v for k, v in resp_headers}
        if "x-amz-function-error" in hdr:
            self.log_line(f"invoke {name} -> function error in {elapsed:.1f}s: {resp_body[:300].decode(errors='replace')}")
        elif status >= 300:
            self.log_line(f"invoke {name} -> {status} in {elapsed:.1f}s")
        keep = [(k, v) for k, v in resp_headers if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"]
        self._send_simple(status, keep, resp_body)

    def _call_lambda_host(self, name: str, body: bytes, headers):
        host, port = self.config.lambda_host
        conn, routing = self._connect(self.config.lambda_host, self.config.invoke_timeout)
        headers = list(headers) + routing
        try:
            conn.putrequest(
                "POST",
                f"/2015-03-31/functions/{urllib.parse.quote(name, safe='')}/invocations",
                skip_host=True,
                skip_accept_encoding=True,
            )
            conn.putheader("Host", f"{host}:{port}")
            for k, v in headers:
                if k.lower() == "host":
                    continue
                conn.putheader(k, v)
            conn.endheaders(body)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        except (OSError, http.client.HTTPException) as e:
            return None, [], repr(e).encode()
        finally:
            conn.close()

    def _service_error(self, status: int, code: str, message: str) -> None:
        self.log_line(f"{code}: {message[:300]}")
        body = json.dumps({"Type": "Service" if status >= 500 else "User", "message": message}).encode()
        self._send_simple(
            status,
            [
                ("Content-Type", "application/json"),
                ("x-amzn-ErrorType", code),
                ("x-amzn-RequestId", str(uuid.uuid4())),
            ],
            body,
        )

    # ---- ecs ------------------------------------------------------------

    def _ecs(self, operation: str, body: bytes, caller=None) -> bool:
        handler = ECS_HANDLERS.get(operation)
        if handler is None:
            return False
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = {}
        result = handler(operation, request, dict(self.headers.items()), caller)
        if result is None:
            return False
        status, payload = result
        self._send_simple(
            status,
            [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", str(uuid.uuid4()))],
            json.dumps(payload).encode(),
        )
        return True


class GatewayServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def make_server(bind: str, port: int, config: Config) -> GatewayServer:
    handler = type("BoundGatewayHandler", (GatewayHandler,), {"config": config})
    return GatewayServer((bind, port), handler)


def admin_clients(moto: tuple[str, int], region: str):
    """boto3 clients to moto itself (not through the gateway or the fault
    proxy), as the operator: the gateway's own reads of roles and topics."""
    import boto3
    from botocore.config import Config as BotoConfig

    session = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name=region)
    cfg = BotoConfig(retries={"max_attempts": 5, "mode": "standard"})
    clients: dict[str, object] = {}
    lock = threading.Lock()

    def client(name: str):
        with lock:
            if name not in clients:
                clients[name] = session.client(name, endpoint_url=f"http://{moto[0]}:{moto[1]}", config=cfg)
            return clients[name]

    return client


def topic_key_lookup(client) -> Callable[[str], Optional[str]]:
    """Topic ARN -> the ARN of the KMS key that encrypts it (None: unencrypted), cached."""
    cache: dict[str, Optional[str]] = {}

    def lookup(topic_arn: str) -> Optional[str]:
        if topic_arn in cache:
            return cache[topic_arn]
        try:
            attrs = client("sns").get_topic_attributes(TopicArn=topic_arn)["Attributes"]
        except Exception:  # noqa: BLE001 -- an unknown topic: the publish itself will say so
            return None
        key = attrs.get("KmsMasterKeyId")
        arn = None
        if key:
            try:
                arn = client("kms").describe_key(KeyId=key)["KeyMetadata"]["Arn"]
            except Exception:  # noqa: BLE001
                arn = key if key.startswith("arn:") else None
        cache[topic_arn] = arn
        return arn

    return lookup


def main(argv=None) -> int:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bind", default=env("TALLY_GATEWAY_BIND", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(env("TALLY_GATEWAY_PORT", "4566")))
    p.add_argument("--moto", default=env("TALLY_MOTO_ADDR", "127.0.0.1:4575"), help="host:port of moto")
    p.add_argument("--via", default=None,
                   help="host:port of the test-only fault proxy: every call to moto or the Lambda host goes "
                        "through it (X-Tally-Upstream names the destination)")
    p.add_argument("--lambda-host", default=env("TALLY_LAMBDA_HOST_ADDR", "127.0.0.1:9000"),
                   help="host:port of the local Lambda host (localstack/lambda_host.py)")
    p.add_argument("--invoke-timeout", type=float, default=float(env("TALLY_INVOKE_TIMEOUT", "960")),
                   help="seconds to wait for one Lambda invocation")
    p.add_argument("--proxy-timeout", type=float, default=float(env("TALLY_PROXY_TIMEOUT", "960")),
                   help="seconds to wait for moto")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request")
    p.add_argument("--ecs-tasks", default=env("TALLY_ECS_TASKS"),
                   help="ecs-tasks.json from deploy.py: run ECS tasks as local processes (localstack/local_ecs.py)")
    p.add_argument("--bin-dir", default=env("TALLY_BIN_DIR"), help="where the workspace binaries are (target/release)")
    p.add_argument("--log-dir", default=env("TALLY_LOG_DIR", ".tally/local"), help="where local task logs go")
    p.add_argument("--event-sources", default=env("TALLY_EVENT_SOURCES"),
                   help="event-sources.json from deploy.py: play the SQS event source mappings (localstack/local_sqs_source.py)")
    p.add_argument("--keys-file", default=None,
                   help="where the keys sts:AssumeRole issued are kept across gateway restarts")
    p.add_argument("--iam", choices=["enforce", "off"], default="enforce",
                   help="judge every call signed by an assumed role against the role's policies (default)")
    args = p.parse_args(argv)
    region = env("AWS_REGION", "us-east-1")
    clients = admin_clients(parse_hostport(args.moto, 4575), region)
    authorizer = None
    if args.iam == "enforce":
        keys = Path(args.keys_file) if args.keys_file else Path(args.log_dir) / "assumed-keys.json"
        keys.parent.mkdir(parents=True, exist_ok=True)
        authorizer = iam_gate.Authorizer(
            iam_gate.KeyRegistry(keys), iam_gate.Policies(lambda: clients("iam")), region,
            topic_key=topic_key_lookup(clients),
            log=lambda m: sys.stderr.write(f"{time.strftime('%H:%M:%S')} [gateway] {m}\n"))
    global LOCAL_ECS
    if args.ecs_tasks and args.bin_dir:
        from local_ecs import LocalEcs

        LOCAL_ECS = LocalEcs(
            tasks_file=Path(args.ecs_tasks),
            bin_dir=Path(args.bin_dir),
            log_dir=Path(args.log_dir),
            endpoint=f"http://127.0.0.1:{args.port}",
            region=region,
            authorizer=authorizer,
        )
        LOCAL_ECS.register(ECS_HANDLERS)
    config = Config(
        moto=parse_hostport(args.moto, 4575),
        lambda_host=parse_hostport(args.lambda_host, 9000),
        invoke_timeout=args.invoke_timeout,
        proxy_timeout=args.proxy_timeout,
        verbose=args.verbose,
        authorizer=authorizer,
        via=parse_hostport(args.via, 4576) if args.via else None,
    )
    server = make_server(args.bind, args.port, config)
    if args.event_sources:
        from local_sqs_source import start_all

        def invoke(name: str, payload: bytes) -> tuple[int, bytes]:
            # Through this gateway, so a handler error comes back as AWS shows it.
            conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=args.invoke_timeout)
            try:
                conn.request("POST", f"/2015-03-31/functions/{name}/invocations", payload,
                             {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                failed = resp.getheader("X-Amz-Function-Error")
                return (500 if failed else resp.status), data
            finally:
                conn.close()

        start_all(Path(args.event_sources), config.moto, invoke, region)
    sys.stderr.write(
        f"[gateway] listening on {args.bind}:{args.port}; moto {args.moto}; lambda host {args.lambda_host}; "
        f"IAM {args.iam}; {'through the fault proxy ' + args.via if args.via else 'no fault proxy'}\n"
    )
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
