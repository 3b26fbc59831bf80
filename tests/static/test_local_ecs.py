"""localstack/local_ecs.py: ECS RunTask / DescribeTasks as local processes.

A stand-in "binary" (a shell script) records its environment and exits with
the code its environment asks for, so the test sees what the substitute
passes (container environment, call overrides, local AWS endpoint) and what
it reports (RUNNING, then STOPPED with the exit code).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "localstack"))

from local_ecs import LocalEcs  # noqa: E402

TD = "arn:aws:ecs:us-east-1:123456789012:task-definition/tally-recon-ingest:1"


def make(tmp: Path) -> LocalEcs:
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    script = bin_dir / "recon-ingest-task"
    script.write_text('#!/bin/sh\nenv > "$OUT"\nsleep "${SLEEP:-0}"\nexit "${CODE:-0}"\n')
    script.chmod(0o755)
    tasks = tmp / "ecs-tasks.json"
    tasks.write_text(json.dumps({TD: {"family": "tally-recon-ingest", "containers": {
        "recon-ingest": {"binary": "recon-ingest-task",
                         "environment": {"RECON_SHARD_COUNT": "64", "OUT": str(tmp / "env.txt")}}}}}))
    return LocalEcs(tasks, bin_dir, tmp / "logs", {"AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
                                                    "AWS_REGION": "us-east-1"})


def run(ecs: LocalEcs, env: dict) -> str:
    status, out = ecs.run_task("RunTask", {
        "cluster": "arn:aws:ecs:us-east-1:123456789012:cluster/tally-recon", "taskDefinition": TD,
        "launchType": "FARGATE",
        "overrides": {"containerOverrides": [{"name": "recon-ingest", "environment": [
            {"name": k, "value": v} for k, v in env.items()]}]}}, {})
    assert status == 200 and out["failures"] == []
    return out["tasks"][0]["taskArn"]


def wait_stopped(ecs: LocalEcs, arn: str) -> dict:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        _, out = ecs.describe_tasks("DescribeTasks", {"tasks": [arn]}, {})
        if out["tasks"][0]["lastStatus"] == "STOPPED":
            return out["tasks"][0]
        time.sleep(0.05)
    raise AssertionError("task did not stop")


def test_a_task_runs_its_binary_with_container_and_override_environment(tmp_path):
    ecs = make(tmp_path)
    arn = run(ecs, {"TALLY_INGEST_TASK": '{"object": {}}', "SLEEP": "0.3"})
    assert arn.startswith("arn:aws:ecs:us-east-1:123456789012:task/tally-recon/")
    _, out = ecs.describe_tasks("DescribeTasks", {"tasks": [arn]}, {})
    assert out["tasks"][0]["lastStatus"] == "RUNNING"
    task = wait_stopped(ecs, arn)
    assert task["containers"][0]["exitCode"] == 0
    assert task["stopCode"] == "EssentialContainerExited"
    env = dict(line.split("=", 1) for line in (tmp_path / "env.txt").read_text().splitlines() if "=" in line)
    assert env["TALLY_INGEST_TASK"] == '{"object": {}}'
    assert env["RECON_SHARD_COUNT"] == "64"
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:4566"


def test_a_failing_container_is_reported_with_its_exit_code(tmp_path):
    ecs = make(tmp_path)
    task = wait_stopped(ecs, run(ecs, {"CODE": "3"}))
    assert task["containers"][0]["exitCode"] == 3


def test_unknown_task_definitions_and_tasks_fall_through_to_moto(tmp_path):
    ecs = make(tmp_path)
    assert ecs.run_task("RunTask", {"taskDefinition": "arn:aws:ecs:us-east-1:1:task-definition/other:1"}, {}) is None
    assert ecs.describe_tasks("DescribeTasks", {"tasks": ["arn:aws:ecs:us-east-1:1:task/x/y"]}, {}) is None
