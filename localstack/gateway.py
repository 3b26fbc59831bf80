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


def function_name_from(raw: str) -> str:
    """Bare function name from what a client put in the Invoke path.

    >>> function_name_from("arn:aws:lambda:us-east-1:123456789012:function:cob-partition")
    'cob-partition'
    >>> function_name_from("arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Acob-partition%3A%24LATEST")
    'cob-partition'
    >>> function_name_from("123456789012:function:cob-aggregate")
    'cob-aggregate'
    >>> function_name_from("cob-coordinator:live")
    'cob-coordinator'
    >>> function_name_from("cob-coordinator")
    'cob-coordinator'
    """
    name = urllib.parse.unquote(raw)
    parts = name.split(":")
    if "function" in parts:
        i = parts.index("function")
        if i + 1 < len(parts):
            return parts[i + 1]
    return parts[0]


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
    ):
        self.moto = moto
        self.lambda_host = lambda_host
        self.invoke_timeout = invoke_timeout
        self.proxy_timeout = proxy_timeout
        self.verbose = verbose


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
# A handler gets (operation, request_json, headers) and returns
# (status, response_json) or None to fall through to moto.
# --------------------------------------------------------------------------
EcsHandler = Callable[[str, dict, dict], Optional[tuple[int, dict]]]
ECS_HANDLERS: dict[str, EcsHandler] = {}


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

    # ---- dispatch -------------------------------------------------------

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except (ConnectionError, ValueError) as e:
            self.log_line(f"bad request body: {e}")
            self.close_connection = True
            return
        path = urllib.parse.urlsplit(self.path).path
        m = INVOKE_PATH.match(path)
        if self.command == "POST" and m:
            self._invoke(m.group("name"), body)
            return
        target = self.headers.get("X-Amz-Target", "")
        if target.startswith(ECS_TARGET_PREFIX):
            if self._ecs(target[len(ECS_TARGET_PREFIX):], body):
                return
        self._proxy_to_moto(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _dispatch

    # ---- moto -----------------------------------------------------------

    def _proxy_to_moto(self, body: bytes) -> None:
        host, port = self.config.moto
        conn = http.client.HTTPConnection(host, port, timeout=self.config.proxy_timeout)
        try:
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                has_host = False
                for k, v in self._forward_headers(len(body)):
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

    # ---- lambda ---------------------------------------------------------

    def _invoke(self, raw_name: str, body: bytes) -> None:
        name = function_name_from(raw_name)
        invocation_type = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if invocation_type == "DryRun":
            self._send_simple(204, [], b"")
            return
        if invocation_type == "Event":
            headers = self._forward_headers(len(body), drop_host=True)
            t = threading.Thread(
                target=self._call_lambda_host, args=(name, body, headers), daemon=True
            )
            t.start()
            self._send_simple(202, [("x-amzn-RequestId", str(uuid.uuid4()))], b"")
            return
        headers = self._forward_headers(len(body), drop_host=True)
        started = time.monotonic()
        result = self._call_lambda_host(name, body, headers)
        status, resp_headers, resp_body = result
        elapsed = time.monotonic() - started
        self.log_line(f"invoke {name} -> {status} in {elapsed:.1f}s")
        self._answer_invoke(name, status, resp_headers, resp_body)

    def _call_lambda_host(self, name: str, body: bytes, headers):
        host, port = self.config.lambda_host
        conn = http.client.HTTPConnection(host, port, timeout=self.config.invoke_timeout)
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

    def _answer_invoke(self, name: str, status, headers, body: bytes) -> None:
        request_id = str(uuid.uuid4())
        base = [
            ("Content-Type", "application/json"),
            ("x-amzn-RequestId", request_id),
            ("X-Amz-Executed-Version", "$LATEST"),
        ]
        if status is None:
            self._service_error(
                500,
                "ServiceException",
                f"local Lambda host {self.config.lambda_host[0]}:{self.config.lambda_host[1]} "
                f"unreachable for function {name}: {body.decode(errors='replace')}",
            )
            return
        hdr = {k.lower(): v for k, v in headers}
        if 200 <= status < 300:
            out = list(base)
            if "x-amz-function-error" in hdr:
                out.append(("X-Amz-Function-Error", hdr["x-amz-function-error"]))
            self._send_simple(status, out, body)
            return
        handler_error = _handler_error(body)
        if status >= 500 and handler_error is not None:
            self.log_line(
                f"invoke {name}: handler error {handler_error.get('errorType')}: "
                f"{str(handler_error.get('errorMessage'))[:200]}"
            )
            self._send_simple(200, base + [("X-Amz-Function-Error", "Unhandled")], body)
            return
        text = body.decode(errors="replace")[:2000]
        if status == 404:
            self._service_error(
                404,
                "ResourceNotFoundException",
                f"Function not found on the local Lambda host: {name} ({text})",
            )
            return
        self._service_error(
            500, "ServiceException", f"local Lambda host answered {status} for {name}: {text}"
        )

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

    def _ecs(self, operation: str, body: bytes) -> bool:
        handler = ECS_HANDLERS.get(operation)
        if handler is None:
            return False
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = {}
        result = handler(operation, request, dict(self.headers.items()))
        if result is None:
            return False
        status, payload = result
        self._send_simple(
            status,
            [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", str(uuid.uuid4()))],
            json.dumps(payload).encode(),
        )
        return True


def _handler_error(body: bytes) -> Optional[dict]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(doc, dict) and "errorType" in doc:
        return doc
    return None


class GatewayServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def make_server(bind: str, port: int, config: Config) -> GatewayServer:
    handler = type("BoundGatewayHandler", (GatewayHandler,), {"config": config})
    return GatewayServer((bind, port), handler)


def main(argv=None) -> int:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bind", default=env("TALLY_GATEWAY_BIND", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(env("TALLY_GATEWAY_PORT", "4566")))
    p.add_argument("--moto", default=env("TALLY_MOTO_ADDR", "127.0.0.1:4575"), help="host:port of moto_server")
    p.add_argument("--lambda-host", default=env("TALLY_LAMBDA_HOST_ADDR", "127.0.0.1:9000"),
                   help="host:port of cargo lambda watch")
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
    args = p.parse_args(argv)
    if args.ecs_tasks and args.bin_dir:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from local_ecs import LocalEcs

        LocalEcs(
            tasks_file=Path(args.ecs_tasks),
            bin_dir=Path(args.bin_dir),
            log_dir=Path(args.log_dir),
            aws_env={
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{args.port}",
                "AWS_REGION": env("AWS_REGION", "us-east-1"),
                "AWS_DEFAULT_REGION": env("AWS_REGION", "us-east-1"),
                "AWS_ACCESS_KEY_ID": "test",
                "AWS_SECRET_ACCESS_KEY": "test",
            },
        ).register(ECS_HANDLERS)
    config = Config(
        moto=parse_hostport(args.moto, 4575),
        lambda_host=parse_hostport(args.lambda_host, 9000),
        invoke_timeout=args.invoke_timeout,
        proxy_timeout=args.proxy_timeout,
        verbose=args.verbose,
    )
    server = make_server(args.bind, args.port, config)
    if args.event_sources:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
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

        start_all(Path(args.event_sources), config.moto, invoke, env("AWS_REGION", "us-east-1"))
    sys.stderr.write(
        f"[gateway] listening on {args.bind}:{args.port}; moto {args.moto}; lambda host {args.lambda_host}\n"
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
