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


TASK_ROLE = "arn:aws:iam::123456789012:role/tally-ReconIngestTaskRole"
EXEC_ROLE = "arn:aws:iam::123456789012:role/tally-ReconIngestExecutionRole"
STATES_ROLE = "arn:aws:iam::123456789012:role/tally-ReconciliationStateMachineRole"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/tally-recon-ingest:latest"
REPO_ARN = "arn:aws:ecr:us-east-1:123456789012:repository/tally-recon-ingest"
LOGS = {"awslogs-group": "/ecs/tally/recon-ingest", "awslogs-region": "us-east-1", "awslogs-stream-prefix": "recon-ingest"}


def doc(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(actions, resources):
    return {"Effect": "Allow", "Action": actions, "Resource": resources}


PULL_AND_LOG = doc(allow("ecr:GetAuthorizationToken", "*"),
                   allow(["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"], REPO_ARN),
                   allow(["logs:CreateLogStream", "logs:PutLogEvents"],
                         "arn:aws:logs:us-east-1:123456789012:log-group:/ecs/tally/recon-ingest:*"))


class FakePolicies:
    def __init__(self, docs):
        self.docs = docs

    def documents(self, role):
        return self.docs.get(role, ())


class FakeAuthorizer:
    def __init__(self, docs):
        self.policies = FakePolicies(docs)


class Caller:
    role_arn = STATES_ROLE
    session_arn = "arn:aws:sts::123456789012:assumed-role/tally-ReconciliationStateMachineRole/states"


class FakeCredentialsEcs(LocalEcs):
    def _assume(self, role_arn, session):
        return {"AccessKeyId": "ASIATASK", "SecretAccessKey": "s", "SessionToken": f"t-{role_arn.rsplit('/', 1)[1]}"}


def make(tmp: Path, execution_docs=(PULL_AND_LOG,), memory_mb=2048) -> LocalEcs:
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "recon-ingest-task"
    script.write_text('#!/bin/sh\nenv > "$OUT"\n[ -n "$HOG" ] && python3 -c "b=bytearray($HOG*1048576); '
                      'import time; time.sleep(5)"\nsleep "${SLEEP:-0}"\nexit "${CODE:-0}"\n')
    script.chmod(0o755)
    tasks = tmp / "ecs-tasks.json"
    tasks.write_text(json.dumps({TD: {
        "family": "tally-recon-ingest", "task_role_arn": TASK_ROLE, "execution_role_arn": EXEC_ROLE,
        "memory_mb": memory_mb, "containers": {
            "recon-ingest": {"binary": "recon-ingest-task", "image": IMAGE, "log_options": LOGS,
                             "environment": {"RECON_SHARD_COUNT": "64", "OUT": str(tmp / "env.txt")}}}}}))
    docs = {EXEC_ROLE: tuple(execution_docs), STATES_ROLE: (doc(allow("iam:PassRole", [TASK_ROLE, EXEC_ROLE])),)}
    return FakeCredentialsEcs(tasks, bin_dir, tmp / "logs", "http://127.0.0.1:4566", "us-east-1", FakeAuthorizer(docs))


def run(ecs: LocalEcs, env: dict) -> str:
    status, out = ecs.run_task("RunTask", {
        "cluster": "arn:aws:ecs:us-east-1:123456789012:cluster/tally-recon", "taskDefinition": TD,
        "launchType": "FARGATE",
        "overrides": {"containerOverrides": [{"name": "recon-ingest", "environment": [
            {"name": k, "value": v} for k, v in env.items()]}]}}, {}, Caller())
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
    # The container signs with its task role's credentials.
    assert env["AWS_ACCESS_KEY_ID"] == "ASIATASK" and env["AWS_SESSION_TOKEN"] == "t-tally-ReconIngestTaskRole"


def test_a_failing_container_is_reported_with_its_exit_code(tmp_path):
    ecs = make(tmp_path)
    task = wait_stopped(ecs, run(ecs, {"CODE": "3"}))
    assert task["containers"][0]["exitCode"] == 3


def test_unknown_task_definitions_and_tasks_fall_through_to_moto(tmp_path):
    ecs = make(tmp_path)
    assert ecs.run_task("RunTask", {"taskDefinition": "arn:aws:ecs:us-east-1:1:task-definition/other:1"}, {}) is None
    assert ecs.describe_tasks("DescribeTasks", {"tasks": ["arn:aws:ecs:us-east-1:1:task/x/y"]}, {}) is None


def test_an_execution_role_that_cannot_pull_the_image_fails_the_task_to_start(tmp_path):
    logs_only = doc(allow(["logs:CreateLogStream", "logs:PutLogEvents"],
                          "arn:aws:logs:us-east-1:123456789012:log-group:/ecs/tally/recon-ingest:*"))
    ecs = make(tmp_path, execution_docs=(logs_only,))
    task = wait_stopped(ecs, run(ecs, {}))
    assert task["stopCode"] == "TaskFailedToStart"
    assert "ecr:GetAuthorizationToken" in task["stoppedReason"] and "AccessDenied" in task["stoppedReason"]
    assert not (tmp_path / "env.txt").exists(), "the container must not have run"


def test_an_execution_role_that_cannot_write_logs_fails_the_task_to_start(tmp_path):
    pull_only = doc(allow("ecr:GetAuthorizationToken", "*"),
                    allow(["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"], REPO_ARN))
    ecs = make(tmp_path, execution_docs=(pull_only,))
    task = wait_stopped(ecs, run(ecs, {}))
    assert task["stopCode"] == "TaskFailedToStart" and "logs:CreateLogStream" in task["stoppedReason"]


def test_a_caller_without_pass_role_is_refused(tmp_path):
    ecs = make(tmp_path)
    ecs.authorizer.policies.docs[STATES_ROLE] = (doc(allow("iam:PassRole", [EXEC_ROLE])),)
    status, out = ecs.run_task("RunTask", {"taskDefinition": TD, "cluster": "tally-recon"}, {}, Caller())
    assert status == 400 and out["__type"] == "AccessDeniedException"
    assert "iam:PassRole on resource: " + TASK_ROLE in out["message"]


def test_a_container_over_its_memory_is_killed_as_out_of_memory(tmp_path):
    ecs = make(tmp_path, memory_mb=40)
    task = wait_stopped(ecs, run(ecs, {"HOG": "200"}))
    assert task["containers"][0]["exitCode"] == 137
    assert task["stoppedReason"].startswith("OutOfMemoryError")


def test_stop_task_stops_the_container(tmp_path):
    ecs = make(tmp_path)
    arn = run(ecs, {"SLEEP": "30"})
    ecs.stop_task("StopTask", {"task": arn}, {})
    task = wait_stopped(ecs, arn)
    assert task["stopCode"] == "UserInitiated" and task["containers"][0]["exitCode"] == 128 + 15
