#!/usr/bin/env python3
"""The local Lambda host: runs the binaries `make build` made, each function
as AWS runs it, behind the Lambda Invoke API.

    python localstack/lambda_host.py --port 9000 --functions .tally/functions.json \
        --bin-dir $CARGO_TARGET_DIR/release --endpoint http://127.0.0.1:4566 --log .tally/local/lambda.log

Why not `cargo lambda watch`: it builds a function on its first invocation
(a second build, with other features than `make build`), hands every function
the union of all environments and the operator's credentials, and enforces no
timeout or memory size. A bank's tests need the opposite: the artifact that
was built, its own environment and role, and the limits of its template.
AWS's runtime interface emulator needs Docker and a Go toolchain, which these
machines lack, so the host is written here; it is small because the Rust
runtime (lambda_runtime) does the protocol's other half.

What each function gets, from `functions.json` (written by deploy.py from
infra/template.yaml):

* **Its own process per concurrent invocation** ("instance"), started from
  `<bin-dir>/<binary>` with the function's environment, the Lambda runtime
  variables, and credentials of **its own role**: an `sts:AssumeRole` of the
  role deploy.py created from the template, one session per instance, made
  through the gateway (which records the keys and authorizes every call they
  sign). Instances live until they fail, are killed, or their credentials near
  expiry; they are reused between invocations as AWS reuses warm sandboxes.
* **The Runtime API** on this port under `/<instance-id>/2018-06-01/runtime/…`
  (`AWS_LAMBDA_RUNTIME_API=http://127.0.0.1:<port>/<instance-id>`: lambda_runtime
  accepts a base path, so one port serves every instance): `invocation/next`,
  `…/response`, `…/error`, `init/error`.
* **Limits as on AWS.** `Timeout`: an invocation past it is killed (SIGKILL of
  the instance's process group) and answered with `Sandbox.Timedout`.
  `MemorySize`: an instance whose resident memory passes it is killed and the
  invocation answered `Runtime.OutOfMemory`. An instance that dies mid-call
  (a crash, or the fault suite's SIGKILL) answers `Runtime.ExitError`.
  `ReservedConcurrentExecutions` (else `--concurrency-max`) caps instances; an
  invocation beyond the cap gets HTTP 429 `TooManyRequestsException`, as AWS
  throttles. Payloads over 6 MB are refused both ways.
* **Logs**: every instance's stdout and stderr go, line by line, to
  `--log` (the functions print JSON lines: tracing and EMF), with START /
  END / REPORT lines (duration, max memory) as CloudWatch shows them.

Admin endpoints (tests, the fault suite): `GET /_local/health`,
`GET /_local/instances` (function, instance, pid, access key, busy),
`POST /_local/kill` `{"instance"|"access_key_id"|"function": …}` (SIGKILL; an
invocation in flight is answered `Runtime.ExitError`, as a crash would be),
`POST /_local/functions/<name>/limits` `{"timeout_s": 3}` (a shorter timeout
or memory size than the template's until `null` is posted: how a test makes a
partition run past its timeout without waiting 15 minutes),
`POST /_local/functions/<name>/environment` `{"VAR": "value"}` (laid over the
function's environment until `null` is posted, as a redeploy with another
parameter would: how a test sends small files down the container branch).

Stdlib only, plus boto3 for the one STS call per instance.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from iam_gate import function_name_from  # noqa: E402 -- the one place names are cut
from procs import group_rss_mb  # noqa: E402

PAYLOAD_BYTES_MAX = 6 * 1024 * 1024
INIT_SECONDS_MAX = 10.0  # AWS's init phase limit for on-demand functions
CREDENTIAL_SECONDS = 3600
# An instance retires (between invocations) this long before its credentials
# expire, so a call never signs with an expired key.
CREDENTIAL_MARGIN_SECONDS = 15 * 60
MEMORY_POLL_SECONDS = 0.1


def log(msg: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} [lambda-host] {msg}\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    binary: str
    environment: dict
    timeout_s: float
    memory_mb: int
    role_arn: str
    reserved_concurrency: Optional[int] = None

    @staticmethod
    def parse(name: str, raw: dict) -> "FunctionSpec":
        try:
            return FunctionSpec(
                name=name,
                binary=str(raw["binary"]),
                environment={str(k): str(v) for k, v in (raw.get("environment") or {}).items()},
                timeout_s=float(raw["timeout_s"]),
                memory_mb=int(raw["memory_mb"]),
                role_arn=str(raw["role_arn"]),
                reserved_concurrency=(int(raw["reserved_concurrency"])
                                      if raw.get("reserved_concurrency") is not None else None),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"functions.json: function {name}: {e!r}") from None


@dataclass
class Invocation:
    function: str
    payload: bytes
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created: float = field(default_factory=time.monotonic)
    started: Optional[float] = None  # when an instance took it
    deadline: Optional[float] = None
    timeout_s: float = 0.0
    instance: Optional["Instance"] = None
    done: threading.Event = field(default_factory=threading.Event)
    # ("ok", body) or ("error", body): the answer the invoker gets.
    result: Optional[tuple[str, bytes]] = None

    def finish(self, kind: str, body: bytes) -> bool:
        """Sets the answer once; False if it was already set."""
        if self.result is not None:
            return False
        self.result = (kind, body)
        self.done.set()
        return True


def runtime_error(inv: Invocation, error_type: str, detail: str) -> bytes:
    return json.dumps({"errorType": error_type,
                       "errorMessage": f"RequestId: {inv.request_id} Error: {detail}"}).encode()


class Instance:
    _ids = itertools.count(1)

    def __init__(self, spec: FunctionSpec):
        self.spec = spec
        self.id = f"{spec.name}-{next(Instance._ids)}-{uuid.uuid4().hex[:6]}"
        self.proc: Optional[subprocess.Popen] = None
        self.access_key_id = ""
        self.credentials_expire = 0.0
        self.current: Optional[Invocation] = None
        self.polling = False  # in invocation/next, waiting for work
        self.dead = False
        self.death_reason = ""  # "timeout", "oom", "killed", or empty (it exited)
        self.init_error: Optional[bytes] = None
        self.started = time.monotonic()
        self.max_rss_mb = 0.0
        self.invocations = 0

    def describe(self) -> dict:
        return {"function": self.spec.name, "instance": self.id,
                "pid": self.proc.pid if self.proc else None, "access_key_id": self.access_key_id,
                "busy": self.current is not None, "invocations": self.invocations,
                "max_rss_mb": round(self.max_rss_mb, 1)}

    def kill(self, reason: str) -> None:
        if not self.death_reason:
            self.death_reason = reason
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Host:
    def __init__(self, functions_file: Path, bin_dir: Path, endpoint: str, port: int, log_path: Path,
                 concurrency_max: int, region: str = "us-east-1"):
        self.functions_file = functions_file
        self.bin_dir = bin_dir
        self.endpoint = endpoint
        self.port = port
        self.region = region
        self.concurrency_max = concurrency_max
        self.lock = threading.Condition()
        self.specs: dict[str, FunctionSpec] = {}
        self.specs_mtime = -1.0
        # Test knobs (POST /_local/functions/<name>/limits): a shorter timeout
        # or a smaller memory size than the template's, until cleared.
        self.overrides: dict[str, dict] = {}
        self.env_overrides: dict[str, dict[str, str]] = {}
        self.instances: dict[str, Instance] = {}
        self.queues: dict[str, collections.deque[Invocation]] = collections.defaultdict(collections.deque)
        self.log_lock = threading.Lock()
        self.log_path = log_path
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_file = open(self.log_path, "ab", buffering=0)
        self._sts = None
        threading.Thread(target=self._memory_watch, name="memory-watch", daemon=True).start()

    # ---- functions ------------------------------------------------------

    def spec(self, name: str) -> Optional[FunctionSpec]:
        try:
            mtime = self.functions_file.stat().st_mtime
        except OSError:
            return None
        if mtime != self.specs_mtime:
            raw = json.loads(self.functions_file.read_text(encoding="utf-8"))
            specs = {n: FunctionSpec.parse(n, r) for n, r in raw.items()}
            with self.lock:
                changed = {n for n, s in specs.items() if self.specs.get(n) != s}
                self.specs, self.specs_mtime = specs, mtime
                # An instance of a changed function keeps its old environment:
                # retire it once it is idle, as a deploy does on AWS.
                for inst in list(self.instances.values()):
                    if inst.spec.name in changed or inst.spec.name not in specs:
                        if inst.current is None:
                            inst.kill("redeployed")
        spec = self.specs.get(name)
        if spec is not None and name in self.overrides:
            spec = dataclasses.replace(spec, **{k: v for k, v in self.overrides[name].items() if k != "invocations"})
        return spec

    def override_environment(self, name: str, env: Optional[dict]) -> dict:
        """Test knob: variables laid over a function's environment (None
        clears them). As a redeploy would, it retires the function's idle
        instances; an invocation in flight finishes with the old one."""
        with self.lock:
            if env is None:
                self.env_overrides.pop(name, None)
            else:
                self.env_overrides[name] = {str(k): str(v) for k, v in env.items()}
            for inst in list(self.instances.values()):
                if inst.spec.name == name and inst.current is None:
                    inst.kill("redeployed")
        log(f"{name}: environment overrides {self.env_overrides.get(name) or 'none'}")
        return self.env_overrides.get(name, {})

    def override(self, name: str, limits: Optional[dict]) -> dict:
        """Test knob: a shorter timeout or a smaller memory size than the
        template's (None clears it); `invocations: N` limits it to the next
        N invocations, after which the deployed limits apply again."""
        allowed = {"timeout_s": float, "memory_mb": int, "invocations": int}
        if limits is None:
            self.overrides.pop(name, None)
        else:
            bad = set(limits) - set(allowed)
            if bad:
                raise ValueError(f"unknown limits {sorted(bad)}; allowed: {sorted(allowed)}")
            self.overrides[name] = {k: allowed[k](v) for k, v in limits.items()}
        log(f"{name}: limits {self.overrides.get(name) or 'as deployed'}")
        return self.overrides.get(name, {})

    # ---- credentials ----------------------------------------------------

    def assume(self, spec: FunctionSpec, session: str) -> dict:
        if self._sts is None:
            import boto3
            from botocore.config import Config

            self._sts = boto3.client(
                "sts", endpoint_url=self.endpoint, region_name=self.region,
                aws_access_key_id="test", aws_secret_access_key="test",
                config=Config(retries={"max_attempts": 5, "mode": "standard"}))
        creds = self._sts.assume_role(RoleArn=spec.role_arn, RoleSessionName=session[:64],
                                      DurationSeconds=CREDENTIAL_SECONDS)["Credentials"]
        return creds

    # ---- instances ------------------------------------------------------

    def _spawn(self, spec: FunctionSpec) -> Instance:
        """Starts an instance; the caller holds the lock and has counted it."""
        inst = Instance(spec)
        self.instances[inst.id] = inst
        threading.Thread(target=self._start, args=(inst,), name=f"start-{inst.id}", daemon=True).start()
        return inst

    def _start(self, inst: Instance) -> None:
        spec = inst.spec
        binary = self.bin_dir / spec.binary
        try:
            if not binary.is_file():
                raise RuntimeError(f"{binary} does not exist: run `make build` (or the debug build)")
            creds = self.assume(spec, inst.id)
        except Exception as e:  # noqa: BLE001 -- reported to the invocation that wanted this instance
            inst.init_error = json.dumps({"errorType": "Runtime.InitError",
                                          "errorMessage": f"local host: {e}"}).encode()
            log(f"{inst.id}: cannot start: {e}")
            self._died(inst)
            return
        inst.access_key_id = creds["AccessKeyId"]
        inst.credentials_expire = time.monotonic() + CREDENTIAL_SECONDS
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "RUST_BACKTRACE", "RUST_LIB_BACKTRACE")}
        env.update(spec.environment)
        env.update(self.env_overrides.get(spec.name, {}))
        env.update({
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": inst.id,
            "AWS_LAMBDA_RUNTIME_API": f"http://127.0.0.1:{self.port}/{inst.id}",
            "AWS_EXECUTION_ENV": "AWS_Lambda_provided.al2023",
            "_HANDLER": "bootstrap",
            "LAMBDA_TASK_ROOT": str(self.bin_dir),
            "TZ": ":UTC",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
            "AWS_SESSION_TOKEN": creds["SessionToken"],
        })
        try:
            proc = subprocess.Popen([str(binary)], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True, cwd=str(self.bin_dir))
        except OSError as e:
            inst.init_error = json.dumps({"errorType": "Runtime.InitError",
                                          "errorMessage": f"cannot start {binary}: {e}"}).encode()
            self._died(inst)
            return
        with self.lock:
            inst.proc = proc
            if inst.death_reason:  # killed while starting
                inst.kill(inst.death_reason)
        threading.Thread(target=self._pump_logs, args=(inst, proc), name=f"logs-{inst.id}", daemon=True).start()
        proc.wait()
        self._died(inst)

    def _pump_logs(self, inst: Instance, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.write_log(line)

    def write_log(self, line: bytes) -> None:
        if not line.endswith(b"\n"):
            line += b"\n"
        with self.log_lock:
            self.log_file.write(line)

    def _died(self, inst: Instance) -> None:
        code = inst.proc.returncode if inst.proc is not None else None
        with self.lock:
            inst.dead = True
            self.instances.pop(inst.id, None)
            inv = inst.current
            inst.current = None
            if inv is None and inst.invocations == 0 and not inst.death_reason:
                # It died on its own before taking any work: the invocation
                # that made it start (the oldest queued) fails with its init
                # error, as on AWS.
                q = self.queues[inst.spec.name]
                if q and not self._enough_instances(inst.spec.name):
                    inv = q.popleft()
            # Work still queued gets a fresh instance (a killed or retired
            # one's place), within the function's limit.
            spec = self.specs.get(inst.spec.name)
            if spec is not None:
                self._ensure_capacity(self.spec_locked(spec.name))
            self.lock.notify_all()
        if inv is None:
            if inst.death_reason not in ("", "idle", "redeployed", "expiring"):
                log(f"{inst.id} died idle ({inst.death_reason or f'exit {code}'})")
            return
        if inst.death_reason == "timeout":
            body = runtime_error(inv, "Sandbox.Timedout", f"Task timed out after {inv.timeout_s:.2f} seconds")
        elif inst.death_reason == "oom":
            body = runtime_error(inv, "Runtime.OutOfMemory", "Runtime exited with error: signal: killed")
        elif inst.init_error is not None and inst.invocations == 0:
            body = inst.init_error
        elif code is not None and code < 0:
            body = runtime_error(inv, "Runtime.ExitError", f"Runtime exited with error: signal: {signal_text(-code)}")
        else:
            body = runtime_error(inv, "Runtime.ExitError", f"Runtime exited with error: exit status {code}")
        if inv.result is None:
            self._report(inv, inst, json.loads(body).get("errorType"))
        inv.finish("error", body)

    def _serving(self, name: str) -> list[Instance]:
        """Instances of a function that can still take work (lock held)."""
        return [i for i in self.instances.values() if i.spec.name == name and not i.dead and not i.death_reason]

    def _enough_instances(self, name: str) -> bool:
        """Whether the live instances can take every queued invocation (lock held)."""
        free = sum(1 for i in self._serving(name) if i.current is None)
        return free >= len(self.queues[name])

    def limit(self, spec: FunctionSpec) -> int:
        return spec.reserved_concurrency if spec.reserved_concurrency is not None else self.concurrency_max

    def _ensure_capacity(self, spec: FunctionSpec) -> None:
        """Starts instances until the queued work has one each, within the limit (lock held)."""
        name = spec.name
        while not self._enough_instances(name):
            if len([i for i in self.instances.values() if i.spec.name == name and not i.dead]) >= self.limit(spec):
                return
            self._spawn(spec)

    def spec_locked(self, name: str) -> FunctionSpec:
        spec = self.specs[name]
        if name not in self.overrides:
            return spec
        return dataclasses.replace(spec, **{k: v for k, v in self.overrides[name].items() if k != "invocations"})

    def _memory_watch(self) -> None:
        while True:
            time.sleep(MEMORY_POLL_SECONDS)
            with self.lock:
                live = [i for i in self.instances.values() if i.proc is not None and not i.dead]
            for inst in live:
                rss = group_rss_mb(inst.proc.pid)
                if rss is None:
                    continue
                inst.max_rss_mb = max(inst.max_rss_mb, rss)
                memory_mb = self.overrides.get(inst.spec.name, {}).get("memory_mb", inst.spec.memory_mb)
                if rss > memory_mb:
                    log(f"{inst.id}: {rss:.0f} MB resident over MemorySize {memory_mb} MB: killed")
                    inst.kill("oom")
            now = time.monotonic()
            with self.lock:
                for inst in list(self.instances.values()):
                    inv = inst.current
                    if inv is not None and inv.deadline is not None and now > inv.deadline:
                        log(f"{inst.id}: {inv.request_id} ran past its {inv.timeout_s:g} s timeout: killed")
                        inst.kill("timeout")
                    elif inv is None and inst.polling and inst.credentials_expire \
                            and now > inst.credentials_expire - CREDENTIAL_MARGIN_SECONDS:
                        inst.kill("expiring")

    # ---- invoke ---------------------------------------------------------

    def invoke(self, name: str, payload: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        spec = self.spec(name)
        if spec is None:
            return service_error(404, "ResourceNotFoundException", f"Function not found: {name}")
        if len(payload) > PAYLOAD_BYTES_MAX:
            return service_error(413, "RequestEntityTooLargeException",
                                 f"Request must be smaller than {PAYLOAD_BYTES_MAX} bytes for the InvokeFunction operation")
        inv = Invocation(name, payload)
        with self.lock:
            serving = self._serving(name)
            free = sum(1 for i in serving if i.current is None)
            if free <= len(self.queues[name]):
                live = [i for i in self.instances.values() if i.spec.name == name and not i.dead]
                if len(live) >= self.limit(spec):
                    return service_error(429, "TooManyRequestsException", "Rate Exceeded.",
                                         reason="ReservedFunctionConcurrentInvocationLimitExceeded")
                self._spawn(spec)
            self.queues[name].append(inv)
            self.lock.notify_all()
        # The invocation's own deadline is enforced by the memory watch once an
        # instance takes it; here only the wait for an instance is bounded.
        while not inv.done.wait(0.5):
            if inv.started is None and time.monotonic() - inv.created > INIT_SECONDS_MAX + 60:
                with self.lock:
                    try:
                        self.queues[name].remove(inv)
                    except ValueError:
                        pass
                inv.finish("error", runtime_error(inv, "Runtime.InitError", "no instance started in time"))
        kind, body = inv.result or ("error", b"{}")
        headers = [("Content-Type", "application/json"), ("X-Amz-Executed-Version", "$LATEST"),
                   ("x-amzn-RequestId", inv.request_id)]
        if kind == "error":
            headers.append(("X-Amz-Function-Error", "Unhandled"))
        return 200, headers, body

    def _report(self, inv: Invocation, inst: Optional[Instance], error: Optional[str] = None) -> None:
        started = inv.started or inv.created
        ms = (time.monotonic() - started) * 1000
        mem = f"{inst.max_rss_mb:.0f}" if inst else "?"
        status = f"\tStatus: error\tErrorType: {error}" if error else ""
        self.write_log(f"END RequestId: {inv.request_id}".encode())
        self.write_log(f"REPORT RequestId: {inv.request_id}\tFunction: {inv.function}\tDuration: {ms:.2f} ms\t"
                       f"Memory Size: {inst.spec.memory_mb if inst else '?'} MB\tMax Memory Used: {mem} MB{status}"
                       .encode())

    # ---- runtime API ----------------------------------------------------

    def next_invocation(self, instance_id: str, timeout: float) -> Optional[Invocation]:
        """Blocks until work for this instance arrives; None if it is gone."""
        deadline = time.monotonic() + timeout
        with self.lock:
            inst = self.instances.get(instance_id)
            if inst is None:
                return None
            inst.polling = True
            try:
                while True:
                    if inst.dead or inst.death_reason:
                        return None
                    q = self.queues[inst.spec.name]
                    if q:
                        inv = q.popleft()
                        inv.started = time.monotonic()
                        current = self.specs.get(inst.spec.name, inst.spec)
                        limits = self.overrides.get(inst.spec.name, {})
                        inv.timeout_s = limits.get("timeout_s", current.timeout_s)
                        inv.deadline = inv.started + inv.timeout_s
                        if "invocations" in limits:
                            limits["invocations"] -= 1
                            if limits["invocations"] <= 0:
                                self.overrides.pop(inst.spec.name, None)
                        inv.instance = inst
                        inst.current = inv
                        inst.invocations += 1
                        return inv
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self.lock.wait(min(left, 1.0))
            finally:
                inst.polling = False

    def requeue(self, inv: Invocation) -> None:
        """The instance could not be handed its work (its connection broke)."""
        with self.lock:
            inst = inv.instance
            if inst is not None and inst.current is inv:
                inst.current = None
            inv.started = inv.deadline = inv.instance = None
            if inv.result is None:
                self.queues[inv.function].appendleft(inv)
            self.lock.notify_all()

    def complete(self, instance_id: str, request_id: str, kind: str, body: bytes) -> bool:
        with self.lock:
            inst = self.instances.get(instance_id)
            inv = inst.current if inst else None
            if inv is None or inv.request_id != request_id:
                return False
            inst.current = None
            self.lock.notify_all()
        if kind == "ok" and len(body) > PAYLOAD_BYTES_MAX:
            kind, body = "error", runtime_error(inv, "Function.ResponseSizeTooLarge",
                                                f"Response payload size exceeded maximum allowed payload size "
                                                f"({PAYLOAD_BYTES_MAX} bytes).")
        error = json.loads(body).get("errorType") if kind == "error" and body.startswith(b"{") else None
        if inv.result is None:
            self._report(inv, inst, error)  # logged before the invoker hears back
        inv.finish(kind, body)
        return True

    def init_failed(self, instance_id: str, body: bytes) -> None:
        with self.lock:
            inst = self.instances.get(instance_id)
            if inst is not None:
                inst.init_error = body or b'{"errorType":"Runtime.InitError"}'

    # ---- admin ----------------------------------------------------------

    def describe(self) -> list[dict]:
        with self.lock:
            return [i.describe() for i in self.instances.values()]

    def kill(self, selector: dict) -> list[str]:
        with self.lock:
            chosen = [i for i in self.instances.values()
                      if i.id == selector.get("instance")
                      or (selector.get("access_key_id") and i.access_key_id == selector.get("access_key_id"))
                      or (selector.get("function") and i.spec.name == selector.get("function")
                          and (i.current is not None or not selector.get("busy_only")))]
        for i in chosen:
            log(f"{i.id}: SIGKILL on request ({selector})")
            i.kill("killed")
        return [i.id for i in chosen]


def signal_text(signum: int) -> str:
    """As Go's os/exec words it, which is what AWS's runtime reports."""
    return {signal.SIGKILL: "killed", signal.SIGSEGV: "segmentation fault", signal.SIGABRT: "aborted",
            signal.SIGTERM: "terminated", signal.SIGBUS: "bus error"}.get(signum, f"signal {signum}")


def service_error(status: int, code: str, message: str, reason: Optional[str] = None):
    body = {"Type": "User" if status < 500 else "Service", "message": message}
    if reason:
        body["Reason"] = reason
    return status, [("Content-Type", "application/json"), ("x-amzn-ErrorType", code),
                    ("x-amzn-RequestId", str(uuid.uuid4()))], json.dumps(body).encode()


INVOKE_PATH = "/2015-03-31/functions/"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    host: Host

    def log_message(self, fmt: str, *args) -> None:  # quiet: the host logs what matters
        pass

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        if n > PAYLOAD_BYTES_MAX + 1024 * 1024:
            raise ValueError("body too large")
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, doc) -> None:
        self._send(status, [("Content-Type", "application/json")], json.dumps(doc).encode())

    def do_GET(self) -> None:  # noqa: N802
        path = urllib.parse.urlsplit(self.path).path
        if path == "/_local/health":
            self._json(200, {"ok": True})
        elif path == "/_local/instances":
            self._json(200, self.host.describe())
        elif path.endswith("/2018-06-01/runtime/invocation/next"):
            instance_id = path.split("/")[1]
            inv = self.host.next_invocation(instance_id, timeout=3600)
            if inv is None:
                # Gone (killed, retired): the process is being stopped.
                self._json(410, {"errorType": "InstanceGone"})
                return
            deadline_ms = int((time.time() + (inv.deadline - time.monotonic())) * 1000)
            self.host.write_log(f"START RequestId: {inv.request_id} Version: $LATEST".encode())
            try:
                self._send(200, [("Content-Type", "application/json"),
                                 ("Lambda-Runtime-Aws-Request-Id", inv.request_id),
                                 ("Lambda-Runtime-Deadline-Ms", str(deadline_ms)),
                                 ("Lambda-Runtime-Invoked-Function-Arn",
                                  f"arn:aws:lambda:{self.host.region}:123456789012:function:{inv.function}"),
                                 ("Lambda-Runtime-Trace-Id", f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}")],
                           inv.payload)
            except OSError:
                self.host.requeue(inv)
        else:
            self._json(404, {"message": f"no route {path}"})

    def do_POST(self) -> None:  # noqa: N802
        path = urllib.parse.urlsplit(self.path).path
        try:
            body = self._body()
        except ValueError:
            self._send(*service_error(413, "RequestEntityTooLargeException", "request too large"))
            return
        if path.startswith(INVOKE_PATH) and path.rstrip("/").endswith("/invocations"):
            name = urllib.parse.unquote(path[len(INVOKE_PATH):].split("/")[0])
            name = function_name_from(name)
            if self.headers.get("X-Amz-Invocation-Type") == "Event":
                threading.Thread(target=self.host.invoke, args=(name, body), daemon=True).start()
                self._send(202, [("x-amzn-RequestId", str(uuid.uuid4()))], b"")
                return
            self._send(*self.host.invoke(name, body))
            return
        if path.startswith("/_local/functions/") and path.endswith("/environment"):
            name = path[len("/_local/functions/"):-len("/environment")]
            try:
                env = json.loads(body or b"null")
                if env is not None and not isinstance(env, dict):
                    raise ValueError("the body must be an object of variables, or null")
                self._json(200, {"function": name, "environment": self.host.override_environment(name, env)})
            except (ValueError, TypeError) as e:
                self._json(400, {"message": str(e)})
            return
        if path.startswith("/_local/functions/") and path.endswith("/limits"):
            name = path[len("/_local/functions/"):-len("/limits")]
            try:
                limits = json.loads(body or b"null")
                self._json(200, {"function": name, "limits": self.host.override(name, limits)})
            except (ValueError, TypeError) as e:
                self._json(400, {"message": str(e)})
            return
        if path == "/_local/kill":
            try:
                selector = json.loads(body or b"{}")
            except ValueError:
                self._json(400, {"message": "body must be JSON"})
                return
            self._json(200, {"killed": self.host.kill(selector)})
            return
        parts = path.split("/")
        # /<instance>/2018-06-01/runtime/invocation/<request-id>/(response|error)
        if len(parts) == 7 and parts[2:5] == ["2018-06-01", "runtime", "invocation"] \
                and parts[6] in ("response", "error"):
            ok = self.host.complete(parts[1], parts[5], "ok" if parts[6] == "response" else "error", body)
            self._json(202 if ok else 400, {"status": "OK" if ok else "InvalidRequestID"})
            return
        if len(parts) == 5 and parts[2:5] == ["2018-06-01", "runtime", "init"] or path.endswith("/runtime/init/error"):
            self.host.init_failed(parts[1], body)
            self._json(202, {"status": "OK"})
            return
        self._json(404, {"message": f"no route {path}"})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Tally's local Lambda host")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--functions", required=True, help="functions.json from deploy.py")
    p.add_argument("--bin-dir", required=True, help="where `make build` put the binaries")
    p.add_argument("--endpoint", required=True, help="the gateway, for the functions and the STS calls")
    p.add_argument("--log", required=True, help="the functions' output")
    p.add_argument("--concurrency-max", type=int, default=32,
                   help="instances per function without ReservedConcurrentExecutions")
    p.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    args = p.parse_args(argv)
    host = Host(Path(args.functions), Path(args.bin_dir), args.endpoint.rstrip("/"), args.port, Path(args.log),
                args.concurrency_max, args.region)
    handler = type("BoundHandler", (Handler,), {"host": host})
    server = Server(("127.0.0.1", args.port), handler)
    log(f"listening on 127.0.0.1:{args.port}; binaries from {args.bin_dir}; functions {args.functions}")

    def stop(*_):
        with host.lock:
            for inst in list(host.instances.values()):
                inst.kill("host stopping")
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
