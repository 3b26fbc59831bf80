"""The local Lambda host (localstack/lambda_host.py) enforces what AWS
enforces: each function's timeout, memory size and concurrency, its own
environment and credentials, and answers a crash or a kill as Lambda does.

The "function" here is a small runtime client in Python that speaks the
Lambda Runtime API exactly as lambda_runtime does (next, response, error),
so the host is tested without a Rust build; the integration suite runs the
real binaries on it.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "localstack"))
import lambda_host  # noqa: E402

FUNCTION = textwrap.dedent("""\
    #!{python}
    import json, os, sys, time, urllib.request
    base = os.environ["AWS_LAMBDA_RUNTIME_API"]
    api = ("" if base.startswith("http") else "http://") + base + "/2018-06-01/runtime/invocation/"
    hog = []
    while True:
        with urllib.request.urlopen(api + "next", timeout=3600) as r:
            rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
            deadline = int(r.headers["Lambda-Runtime-Deadline-Ms"])
            event = json.loads(r.read())
        op = event.get("op")
        if op == "sleep":
            time.sleep(event["seconds"])
        if op == "exit":
            os._exit(3)
        if op == "alloc":
            hog.append(bytearray(event["mb"] * 1024 * 1024))
            for i in range(0, len(hog[-1]), 4096):
                hog[-1][i] = 1
            time.sleep(2)
        if op == "error":
            body, kind = json.dumps({{"errorType": "TransientStoreError", "errorMessage": "boom"}}), "error"
        else:
            env = {{k: os.environ.get(k) for k in ("AWS_LAMBDA_FUNCTION_NAME", "AWS_ACCESS_KEY_ID",
                    "AWS_SESSION_TOKEN", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "TABLE", "OTHER", "AWS_ENDPOINT_URL")}}
            body, kind = json.dumps({{"env": env, "pid": os.getpid(), "deadline_ms": deadline}}), "response"
        req = urllib.request.Request(api + rid + "/" + kind, data=body.encode(), method="POST")
        urllib.request.urlopen(req).read()
    """)


class FakeCredentialsHost(lambda_host.Host):
    def assume(self, spec, session):
        return {"AccessKeyId": f"ASIA{session.upper()[:12]}", "SecretAccessKey": "s", "SessionToken": f"t-{session}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def host(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "fn"
    script.write_text(FUNCTION.format(python=sys.executable))
    script.chmod(0o755)
    specs = {
        "fast": {"binary": "fn", "environment": {"TABLE": "t1"}, "timeout_s": 2, "memory_mb": 128,
                 "role_arn": "arn:aws:iam::123456789012:role/fast"},
        "other": {"binary": "fn", "environment": {"OTHER": "o"}, "timeout_s": 30, "memory_mb": 256,
                  "role_arn": "arn:aws:iam::123456789012:role/other", "reserved_concurrency": 1},
    }
    functions = tmp_path / "functions.json"
    functions.write_text(json.dumps(specs))
    port = free_port()
    h = FakeCredentialsHost(functions, bin_dir, "http://127.0.0.1:1", port, tmp_path / "lambda.log", concurrency_max=4)
    handler = type("H", (lambda_host.Handler,), {"host": h})
    server = lambda_host.Server(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield h, port
    server.shutdown()
    for inst in list(h.instances.values()):
        inst.kill("test over")


def invoke(port: int, name: str, event: dict, timeout: float = 60):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/2015-03-31/functions/{name}/invocations",
                                 data=json.dumps(event).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers.get("X-Amz-Function-Error"), json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("x-amzn-ErrorType"), json.loads(e.read() or b"{}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def test_each_function_gets_its_own_environment_and_its_own_credentials(host):
    h, port = host
    status, err, out = invoke(port, "fast", {})
    assert (status, err) == (200, None)
    env = out["env"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "fast" and env["TABLE"] == "t1" and env["OTHER"] is None
    assert env["AWS_ACCESS_KEY_ID"].startswith("ASIAFAST") and env["AWS_SESSION_TOKEN"].startswith("t-fast")
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "128"
    assert 0 < out["deadline_ms"] - time.time() * 1000 <= 2000
    _, _, other = invoke(port, "other", {})
    assert other["env"]["OTHER"] == "o" and other["env"]["TABLE"] is None
    assert other["env"]["AWS_ACCESS_KEY_ID"] != env["AWS_ACCESS_KEY_ID"]
    # A warm instance is reused.
    _, _, again = invoke(port, "fast", {})
    assert again["pid"] == out["pid"]


def test_an_invocation_past_its_timeout_is_killed_and_answered_sandbox_timedout(host):
    h, port = host
    _, _, warm = invoke(port, "fast", {})
    started = time.monotonic()
    status, err, out = invoke(port, "fast", {"op": "sleep", "seconds": 30})
    took = time.monotonic() - started
    assert (status, err, out["errorType"]) == (200, "Unhandled", "Sandbox.Timedout")
    assert "Task timed out after 2.00 seconds" in out["errorMessage"]
    assert 1.9 < took < 6, took
    time.sleep(0.3)
    assert not alive(warm["pid"])
    # The next invocation gets a fresh instance.
    status, err, fresh = invoke(port, "fast", {})
    assert (status, err) == (200, None) and fresh["pid"] != warm["pid"]


def test_a_crash_mid_invocation_is_a_runtime_exit_error(host):
    _, port = host
    status, err, out = invoke(port, "fast", {"op": "exit"})
    assert (status, err, out["errorType"]) == (200, "Unhandled", "Runtime.ExitError")
    assert "exit status 3" in out["errorMessage"]


def test_memory_past_the_memory_size_is_killed_as_out_of_memory(host):
    _, port = host
    status, err, out = invoke(port, "other", {"op": "alloc", "mb": 400})
    assert (status, err, out["errorType"]) == (200, "Unhandled", "Runtime.OutOfMemory"), out


def test_a_function_error_keeps_its_error_type(host):
    _, port = host
    status, err, out = invoke(port, "fast", {"op": "error"})
    assert (status, err, out["errorType"]) == (200, "Unhandled", "TransientStoreError")


def test_reserved_concurrency_throttles_the_invocation_beyond_it(host):
    _, port = host
    results = []
    t = threading.Thread(target=lambda: results.append(invoke(port, "other", {"op": "sleep", "seconds": 2})))
    t.start()
    time.sleep(0.8)
    status, code, body = invoke(port, "other", {})
    t.join()
    assert (status, code) == (429, "TooManyRequestsException")
    assert body["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert results[0][:2] == (200, None)


def test_a_kill_by_access_key_answers_the_invocation_in_flight_as_killed(host):
    h, port = host
    results = []
    t = threading.Thread(target=lambda: results.append(invoke(port, "other", {"op": "sleep", "seconds": 20})))
    t.start()
    deadline = time.monotonic() + 10
    busy = []
    while time.monotonic() < deadline and not busy:
        busy = [i for i in h.describe() if i["function"] == "other" and i["busy"]]
        time.sleep(0.05)
    assert busy
    req = urllib.request.Request(f"http://127.0.0.1:{port}/_local/kill", method="POST",
                                 data=json.dumps({"access_key_id": busy[0]["access_key_id"]}).encode())
    killed = json.loads(urllib.request.urlopen(req).read())["killed"]
    assert killed == [busy[0]["instance"]]
    t.join(10)
    status, err, out = results[0]
    assert (status, err, out["errorType"]) == (200, "Unhandled", "Runtime.ExitError")
    assert "signal: killed" in out["errorMessage"]


def test_the_log_holds_the_functions_output_and_a_report_per_invocation(host, tmp_path):
    _, port = host
    invoke(port, "fast", {})
    text = (tmp_path / "lambda.log").read_text()
    assert "START RequestId:" in text and "REPORT RequestId:" in text and "Max Memory Used" in text


def test_an_unknown_function_and_an_oversized_payload_are_refused(host):
    _, port = host
    assert invoke(port, "nope", {})[:2] == (404, "ResourceNotFoundException")
    assert invoke(port, "fast", {"x": "y" * (6 * 1024 * 1024)})[:2] == (413, "RequestEntityTooLargeException")


def test_a_test_may_shorten_a_functions_timeout_until_it_clears_it(host):
    _, port = host

    def limits(doc):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/_local/functions/other/limits", method="POST",
                                     data=json.dumps(doc).encode())
        return json.loads(urllib.request.urlopen(req).read())

    assert limits({"timeout_s": 1})["limits"] == {"timeout_s": 1.0}
    status, err, out = invoke(port, "other", {"op": "sleep", "seconds": 3})
    assert (err, out["errorType"]) == ("Unhandled", "Sandbox.Timedout")
    assert "after 1.00 seconds" in out["errorMessage"]
    assert limits(None)["limits"] == {}
    assert invoke(port, "other", {"op": "sleep", "seconds": 1.5})[:2] == (200, None)


def test_a_test_may_lay_variables_over_a_functions_environment(host):
    _, port = host

    def environment(doc):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/_local/functions/fast/environment", method="POST",
                                     data=json.dumps(doc).encode())
        return json.loads(urllib.request.urlopen(req).read())

    _, _, before = invoke(port, "fast", {})
    assert environment({"TABLE": "t2"})["environment"] == {"TABLE": "t2"}
    _, _, during = invoke(port, "fast", {})
    assert during["env"]["TABLE"] == "t2" and during["pid"] != before["pid"]
    environment(None)
    assert invoke(port, "fast", {})[2]["env"]["TABLE"] == "t1"


def test_a_shortened_timeout_may_last_for_one_invocation_only(host):
    _, port = host
    req = urllib.request.Request(f"http://127.0.0.1:{port}/_local/functions/other/limits", method="POST",
                                 data=json.dumps({"timeout_s": 1, "invocations": 1}).encode())
    urllib.request.urlopen(req).read()
    assert invoke(port, "other", {"op": "sleep", "seconds": 2})[2]["errorType"] == "Sandbox.Timedout"
    assert invoke(port, "other", {"op": "sleep", "seconds": 2})[:2] == (200, None)
