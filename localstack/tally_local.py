#!/usr/bin/env python3
"""Run Tally's local AWS stack: moto + gateway + Lambda host, then deploy.

    python localstack/tally_local.py up      [--no-lambda-host] [--debug-build] [--endpoint URL] ...
    python localstack/tally_local.py deploy  [--endpoint URL] ...
    python localstack/tally_local.py status
    python localstack/tally_local.py down

`up` starts, as background processes (own process group, pid file and log
under .tally/local/):

  moto      moto_server on 127.0.0.1:4575 with MOTO_PORT=4566, so that its Step
            Functions engine sends every service call (Lambda invoke included)
            back through the gateway, signed with the state machine's role;
            started through localstack/moto_launcher.py;
  gateway   localstack/gateway.py on 127.0.0.1:4566 -- the endpoint everything
            uses (AWS_ENDPOINT_URL=http://127.0.0.1:4566); it enforces IAM
            (localstack/iam_gate.py) on every call signed by an assumed role;
  faults    with --fault-proxy only (the integration tests): the test-only
            tests/fault-proxy binary on 127.0.0.1:4576 between the gateway and
            moto, so that every call any function or Step Functions makes
            passes it; it injects nothing until a test sets a plan;
  lambda    localstack/lambda_host.py on 127.0.0.1:9000: the binaries of
            `make build` (target/release; --debug-build: target/debug), each
            function with its own environment, role credentials, timeout and
            memory size from .tally/functions.json.

then deploys infra/template.yaml (localstack/deploy.py), which writes
.tally/stack.json and .tally/functions.json. Order: moto, gateway, deploy,
lambda host. `up` is idempotent: what runs is health-checked and kept, what
is missing is started, and the template is redeployed (the Lambda host reads
functions.json again when it changes).

`--endpoint URL` targets an already running endpoint (e.g. real LocalStack
from localstack/docker-compose.yml): nothing but the lambda host is started,
and the deploy goes to URL. LIMITATION of that mode: the Step Functions
engine of real LocalStack invokes Lambda functions inside LocalStack (Docker
containers created from deployment packages), not this Lambda host, and
this tool does not create Lambda functions there. So with real LocalStack the
tables, topic, bus and state machine exist, but a state machine execution
fails at its first Lambda task (Lambda.ResourceNotFoundException).
In that mode the credentials are AWS_ACCESS_KEY_ID=123456789012 so that
LocalStack puts the resources in account 123456789012, the account the ARNs
in the state machine and functions.json are built for.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = REPO_ROOT / ".tally" / "local"
OUT_DIR = REPO_ROOT / ".tally"
HOST = "127.0.0.1"
ACCOUNT_ID = "123456789012"


def venv_dir() -> Path:
    return Path(os.environ.get("TALLY_VENV") or Path.home() / ".cache" / "tally" / "venv")


def say(msg: str) -> None:
    print(f"[tally-local] {msg}", flush=True)


class Fail(Exception):
    pass


# ---------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------


class Component:
    """A background process with a pid file, a log and a health check."""

    def __init__(self, name: str, port: int, marker: str, *older_markers: str):
        self.name = name
        self.port = port
        self.marker = marker  # substring of its command line: guards against a recycled pid
        self.older_markers = older_markers  # command lines of earlier versions (still ours)

    @property
    def pid_file(self) -> Path:
        return STATE_DIR / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return STATE_DIR / f"{self.name}.log"

    def pid(self) -> Optional[int]:
        return self._pid(self.marker, *self.older_markers)

    def pid_is_current(self) -> bool:
        """The running process (if any) is the current command, not an earlier version's."""
        return self._pid(self.marker) is not None

    def _pid(self, *markers: str) -> Optional[int]:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ProcessLookupError):
            return None
        if not any(m in cmdline for m in markers):
            return None
        return pid

    def start(self, cmd: list[str], env: dict[str, str], cwd: Path = REPO_ROOT) -> subprocess.Popen:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "ab")
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: `down` stops the whole tree
        )
        log.close()
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc

    def stop(self, timeout: float = 15) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(pid):
                time.sleep(0.2)
            if not _group_alive(pid):
                break
        self.pid_file.unlink(missing_ok=True)
        return True

    def wait_ready(self, check, timeout: float, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            if proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise Fail(f"{self.name} exited during start-up; see {self.log_file}:\n{tail(self.log_file)}")
            time.sleep(0.3)
        self.stop()
        raise Fail(f"{self.name} did not answer on {HOST}:{self.port} within {timeout:.0f}s; "
                   f"see {self.log_file}:\n{tail(self.log_file)}")


def _group_alive(pgid: int) -> bool:
    try:  # reap the leader if it is our own child (restart within one `up`)
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def port_open(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def http_ok(port: int, path: str, host: str = HOST) -> bool:
    try:
        conn = http.client.HTTPConnection(host, port, timeout=3)
        conn.request("GET", path)
        status = conn.getresponse().status
        conn.close()
        return 200 <= status < 300
    except (OSError, http.client.HTTPException):
        return False


def moto_healthy(port: int) -> bool:
    return http_ok(port, "/moto-api/config")


# ---------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------


def components(args) -> dict[str, Component]:
    return {
        "moto": Component("moto", args.moto_port, "moto_launcher.py", "moto_server"),
        "gateway": Component("gateway", args.gateway_port, "gateway.py"),
        "faults": Component("faults", args.fault_proxy_port, "fault-proxy"),
        "lambda": Component("lambda", args.lambda_port, "lambda_host.py", "lambda watch"),
    }


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise Fail(f"{what} not found at {path}; install the venv (localstack/requirements.txt) "
                   f"or set TALLY_VENV")
    return path


def aws_env(endpoint: str, real_localstack: bool) -> dict[str, str]:
    key = ACCOUNT_ID if real_localstack else "test"
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": "test",
    }


def ensure_moto(args, comp: Component) -> None:
    pid = comp.pid()
    if pid is not None and not comp.pid_is_current():
        say(f"moto (pid {pid}) is a plain moto_server; restarting it through moto_launcher.py "
            f"(its in-memory data is lost; the deploy recreates the resources)")
        comp.stop()
        pid = None
    if pid is not None and moto_healthy(comp.port):
        say(f"moto already up (pid {pid}, port {comp.port})")
        return
    if pid is not None:
        say(f"moto (pid {pid}) does not answer; restarting")
        comp.stop()
    if port_open(comp.port):
        raise Fail(f"port {comp.port} is taken by a process tally_local did not start; stop it or pick --moto-port")
    py = require(venv_dir() / "bin" / "python", "venv python")
    launcher = REPO_ROOT / "localstack" / "moto_launcher.py"
    env = dict(os.environ, MOTO_PORT=str(args.gateway_port))
    proc = comp.start([str(py), str(launcher), "-H", HOST, "-p", str(comp.port)], env)
    comp.wait_ready(lambda: moto_healthy(comp.port), args.wait_timeout, proc)
    pid = proc.pid
    say(f"moto up (pid {pid}, {HOST}:{comp.port}, MOTO_PORT={args.gateway_port}) log {comp.log_file}")


def bin_dir(args) -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO_ROOT / "target")
    return target / ("debug" if args.debug_build else "release")


def ensure_fault_proxy(args, comp: Component) -> None:
    """The test-only fault proxy (tests/fault-proxy) between the gateway and
    moto; it injects nothing until a test sets a plan on /_fault/plan."""
    if comp.pid() is not None and http_ok(comp.port, "/_fault/health"):
        say(f"fault proxy already up (pid {comp.pid()}, port {comp.port})")
        return
    comp.stop()
    binary = bin_dir(args) / "fault-proxy"
    if not binary.exists():
        raise Fail(f"{binary} not found: cargo build -p fault-proxy{'' if args.debug_build else ' --release'}")
    proc = comp.start([str(binary), "--listen", f"{HOST}:{comp.port}",
                       "--upstream", f"{HOST}:{args.moto_port}",
                       # The kill faults: SIGKILL the process that signed a request.
                       "--kill-url", f"http://{HOST}:{args.lambda_port}/_local/kill",
                       "--kill-url", f"http://{HOST}:{args.gateway_port}/_local/ecs/kill"], dict(os.environ))
    comp.wait_ready(lambda: http_ok(comp.port, "/_fault/health"), args.wait_timeout, proc)
    say(f"fault proxy up (pid {proc.pid}, {HOST}:{comp.port}: between the gateway and moto and the Lambda host) "
        f"log {comp.log_file}")


def ensure_gateway(args, comp: Component) -> None:
    pid = comp.pid()
    upstream = f"{HOST}:{args.moto_port}" + (f" via {HOST}:{args.fault_proxy_port}" if args.fault_proxy else "")
    upstream_file = STATE_DIR / "gateway.upstream"
    if pid is not None and (upstream_file.read_text().strip() if upstream_file.exists() else "") != upstream:
        say(f"gateway (pid {pid}) forwards elsewhere; restarting it to forward to {upstream}")
        comp.stop()
        pid = None
    if pid is not None and moto_healthy(comp.port):
        say(f"gateway already up (pid {pid}, port {comp.port})")
        return
    if pid is not None:
        say(f"gateway (pid {pid}) does not answer; restarting")
        comp.stop()
    if port_open(comp.port):
        raise Fail(f"port {comp.port} is taken by a process tally_local did not start "
                   f"(a LocalStack? then use --endpoint http://{HOST}:{comp.port})")
    py = require(venv_dir() / "bin" / "python", "venv python")
    cmd = [str(py), str(REPO_ROOT / "localstack" / "gateway.py"), "--port", str(comp.port),
           "--moto", f"{HOST}:{args.moto_port}",
           *(["--via", f"{HOST}:{args.fault_proxy_port}"] if args.fault_proxy else []),
           "--lambda-host", f"{HOST}:{args.lambda_port}",
           "--keys-file", str(STATE_DIR / "assumed-keys.json"),
           "--invoke-timeout", str(args.invoke_timeout),
           # ECS RunTask of the template's task definitions: a local process of the
           # container's binary (localstack/local_ecs.py), from the same build as the Lambdas.
           "--ecs-tasks", str(OUT_DIR / "ecs-tasks.json"),
           "--bin-dir", str(bin_dir(args)),
           "--log-dir", str(STATE_DIR),
           # SQS -> Lambda event source mappings, played locally (localstack/local_sqs_source.py).
           "--event-sources", str(OUT_DIR / "event-sources.json")]
    proc = comp.start(cmd, dict(os.environ))
    upstream_file.write_text(upstream + "\n")
    comp.wait_ready(lambda: moto_healthy(comp.port), args.wait_timeout, proc)
    pid = proc.pid
    say(f"gateway up (pid {pid}, {HOST}:{comp.port} -> {upstream}, lambda :{args.lambda_port}) "
        f"log {comp.log_file}")


def run_deploy(args, endpoint: str, real_localstack: bool) -> None:
    py = require(venv_dir() / "bin" / "python", "venv python")
    cmd = [str(py), str(REPO_ROOT / "localstack" / "deploy.py"), "--endpoint", endpoint,
           "--stack-name", args.stack_name, "--template", args.template, "--out-dir", str(OUT_DIR)]
    if args.parameter_overrides:
        cmd += ["--parameter-overrides", *args.parameter_overrides]
    env_over = ["TALLY_FAULT_INJECTION=enabled", *args.env]
    cmd += ["--env", *env_over]
    env = dict(os.environ, **aws_env(endpoint, real_localstack))
    say("deploy: " + shlex.join(cmd[1:]))
    rc = subprocess.call(cmd, cwd=REPO_ROOT, env=env)
    if rc != 0:
        raise Fail(f"deploy failed (exit {rc})")


def ensure_lambda_host(args, comp: Component, endpoint: str, real_localstack: bool) -> None:
    """localstack/lambda_host.py: runs exactly the binaries of `make build`
    (or the debug build), each function with its own environment, role,
    timeout and memory size from functions.json, which it re-reads when a
    deploy changes it (so a running host is kept)."""
    functions = OUT_DIR / "functions.json"
    if not functions.exists():
        raise Fail(f"{functions} missing: the deploy writes it")
    bins = bin_dir(args)
    wanted = f"{bins}|{endpoint}"
    marker_file = STATE_DIR / "lambda.config"
    pid = comp.pid()
    if pid is not None:
        old = marker_file.read_text().strip() if marker_file.exists() else ""
        if comp.pid_is_current() and old == wanted and http_ok(comp.port, "/_local/health"):
            say(f"lambda host already up (pid {pid}, port {comp.port})")
            return
        say(f"lambda host (pid {pid}) restarting: another build, endpoint or version")
        comp.stop()
    if port_open(comp.port):
        raise Fail(f"port {comp.port} is taken by a process tally_local did not start; stop it or pick --lambda-port")
    missing = [spec["binary"] for spec in json.loads(functions.read_text()).values()
               if not (bins / spec["binary"]).is_file()]
    if missing:
        raise Fail(f"not built in {bins}: {', '.join(sorted(missing))}; run `make build`"
                   f"{' (debug: cargo build)' if args.debug_build else ''}")
    py = require(venv_dir() / "bin" / "python", "venv python")
    cmd = [str(py), str(REPO_ROOT / "localstack" / "lambda_host.py"), "--port", str(comp.port),
           "--functions", str(functions), "--bin-dir", str(bins), "--endpoint", endpoint,
           "--log", str(STATE_DIR / "lambda.log"), "--concurrency-max", str(args.concurrency)]
    env = dict(os.environ, **aws_env(endpoint, real_localstack))
    proc = comp.start(cmd, env)
    comp.wait_ready(lambda: http_ok(comp.port, "/_local/health"), args.lambda_wait_timeout, proc)
    marker_file.write_text(wanted + "\n")
    say(f"lambda host up (pid {proc.pid}, {HOST}:{comp.port}, binaries {bins}) log {comp.log_file}, "
        f"functions' output {STATE_DIR / 'lambda.log'}")


def cmd_up(args) -> None:
    comps = components(args)
    real = args.endpoint is not None
    if real:
        endpoint = args.endpoint.rstrip("/")
        say(f"using the running endpoint {endpoint}; not starting moto or the gateway")
        say("NOTE: state machine Lambda tasks cannot reach the local Lambda host from real LocalStack "
            "(see the module docstring)")
    else:
        endpoint = f"http://{HOST}:{args.gateway_port}"
        ensure_moto(args, comps["moto"])
        if args.fault_proxy:
            ensure_fault_proxy(args, comps["faults"])
        else:
            comps["faults"].stop()
        ensure_gateway(args, comps["gateway"])
    run_deploy(args, endpoint, real)
    if args.no_lambda_host:
        pid = comps["lambda"].pid()
        say("lambda host not started (--no-lambda-host)" + (f"; one is running (pid {pid})" if pid else ""))
    else:
        ensure_lambda_host(args, comps["lambda"], endpoint, real)
    say(f"ready: AWS_ENDPOINT_URL={endpoint}  outputs {OUT_DIR / 'stack.json'}")


def cmd_deploy(args) -> None:
    real = args.endpoint is not None
    endpoint = args.endpoint.rstrip("/") if real else f"http://{HOST}:{args.gateway_port}"
    run_deploy(args, endpoint, real)


def cmd_down(args) -> None:
    comps = components(args)
    for name in ("lambda", "gateway", "faults", "moto"):
        c = comps[name]
        pid = c.pid()
        if c.stop():
            say(f"stopped {name} (pid {pid})")
        else:
            say(f"{name} not running")
    (STATE_DIR / "lambda.config").unlink(missing_ok=True)


def cmd_status(args) -> int:
    comps = components(args)
    running = 0
    for name in ("moto", "faults", "gateway", "lambda"):
        c = comps[name]
        pid = c.pid()
        if pid is None:
            say(f"{name:8} stopped")
            continue
        running += 1
        healthy = {"lambda": lambda: port_open(c.port),
                   "faults": lambda: http_ok(c.port, "/_fault/health")}.get(name, lambda: moto_healthy(c.port))()
        say(f"{name:8} pid {pid}  {HOST}:{c.port}  {'answering' if healthy else 'NOT ANSWERING'}  log {c.log_file}")
    sj = OUT_DIR / "stack.json"
    if running and sj.exists():
        for o in json.loads(sj.read_text()):
            say(f"  {o['OutputKey']} = {o['OutputValue']}")
    return 0 if running else 3


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Tally local AWS stack (moto + gateway + Lambda host).")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--moto-port", type=int, default=4575)
        sp.add_argument("--gateway-port", type=int, default=4566)
        sp.add_argument("--fault-proxy-port", type=int, default=4576)
        sp.add_argument("--lambda-port", type=int, default=9000)

    def deploy_opts(sp):
        sp.add_argument("--endpoint", help="deploy to this running endpoint (real LocalStack) instead")
        sp.add_argument("--template", default=str(REPO_ROOT / "infra" / "template.yaml"))
        sp.add_argument("--stack-name", default="tally")
        sp.add_argument("--parameter-overrides", nargs="*", action="extend", default=[], metavar="K=V")
        sp.add_argument("--env", nargs="*", action="extend", default=[], metavar="K=V",
                        help="extra function environment (TALLY_FAULT_INJECTION=enabled is always set)")

    up = sub.add_parser("up", help="start moto, the gateway and the Lambda host; deploy")
    common(up)
    deploy_opts(up)
    up.add_argument("--no-lambda-host", action="store_true", help="do not start the Lambda host")
    up.add_argument("--fault-proxy", action="store_true",
                    help="put the test-only fault proxy (tests/fault-proxy) between the gateway and moto")
    up.add_argument("--debug-build", action="store_true", help="run the debug binaries (target/debug)")
    up.add_argument("--no-reload", action="store_true", help="(kept for old scripts; the host never rebuilds)")
    up.add_argument("--concurrency", type=int, default=32,
                    help="instances per function without ReservedConcurrentExecutions")
    up.add_argument("--invoke-timeout", type=float, default=960, help="gateway: seconds per Lambda invocation")
    up.add_argument("--wait-timeout", type=float, default=30, help="seconds to wait for moto / gateway")
    up.add_argument("--lambda-wait-timeout", type=float, default=120, help="seconds to wait for the lambda host port")
    up.set_defaults(func=cmd_up)

    dp = sub.add_parser("deploy", help="redeploy the template into the running stack")
    common(dp)
    deploy_opts(dp)
    dp.set_defaults(func=cmd_deploy)

    down = sub.add_parser("down", help="stop everything `up` started")
    common(down)
    down.set_defaults(func=cmd_down)

    st = sub.add_parser("status", help="what runs")
    common(st)
    st.set_defaults(func=cmd_status)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc = args.func(args)
    except Fail as e:
        print(f"[tally-local] ERROR: {e}", file=sys.stderr)
        return 1
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
