"""The local substitute for ECS RunTask / DescribeTasks / StopTask: a task
runs as a local process of the workspace binary its container names.

moto's ECS records tasks but runs nothing. moto's Step Functions engine makes
its `ecs:runTask.sync` calls over HTTP through the gateway (RunTask, then
DescribeTasks until lastStatus is STOPPED), so the gateway answers those
calls with this module instead of moto.

What AWS checks, checked here too:

* **The caller** (the state machine's role): `ecs:RunTask` on the task
  definition is the gateway's ordinary check; RunTask itself also needs
  `iam:PassRole` on the task role and the execution role, refused with
  `AccessDeniedException` as ECS refuses it.
* **The execution role**, before the container starts: pulling an ECR image
  needs `ecr:GetAuthorizationToken` and `ecr:BatchGetImage` /
  `ecr:GetDownloadUrlForLayer` on the repository, and the `awslogs` driver
  needs `logs:CreateLogStream` / `logs:PutLogEvents` on the log group. Without
  them the task stops at once with `stopCode: TaskFailedToStart` and the
  reason Fargate gives (`ResourceInitializationError` /
  `CannotPullContainerError`), and Step Functions fails the state
  (`States.TaskFailed`).
* **The task role**: the container runs with credentials of an
  `sts:AssumeRole` of it (one session per task, through the gateway, which
  then judges every call they sign).
* **Memory**: the task's `Memory` (MiB) caps the process's resident memory;
  past it the container is killed (exit code 137, `OutOfMemoryError`).

RunTask looks the task definition up in `ecs-tasks.json` (written by
localstack/deploy.py from the template: each container's environment, image,
log options, and the workspace binary named in the task definition's
`Metadata.LocalBinaries`); DescribeTasks reports RUNNING while the process
lives, then STOPPED with the container's exit code
(`stopCode: EssentialContainerExited`); StopTask sends SIGTERM, then SIGKILL
after 30 s (ECS's stop timeout). A task definition this file does not know
falls through to moto. Stdlib only, plus boto3 for the one STS call a task.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

_COUNTER = itertools.count(1)
STOP_TIMEOUT_SECONDS = 30.0
ECR_IMAGE = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com/"
                       r"(?P<repo>[a-z0-9._/-]+)(?::(?P<tag>[\w.-]+)|@(?P<digest>sha256:[0-9a-f]{64}))?$")


class LocalEcs:
    def __init__(self, tasks_file: Path, bin_dir: Path, log_dir: Path, endpoint: str, region: str = "us-east-1",
                 authorizer=None):
        self.tasks_file = tasks_file
        self.bin_dir = bin_dir
        self.log_dir = log_dir
        self.endpoint = endpoint
        self.region = region
        self.authorizer = authorizer
        self.lock = threading.Lock()
        self.running: dict[str, dict] = {}
        self._sts = None
        threading.Thread(target=self._memory_watch, name="ecs-memory", daemon=True).start()

    def _definitions(self) -> dict:
        try:
            return json.loads(self.tasks_file.read_text())
        except (OSError, ValueError):
            return {}

    # ---- IAM ----------------------------------------------------------------

    def _allowed(self, role_arn: str, action: str, resource: str) -> bool:
        if self.authorizer is None:
            return True
        from iam_gate import evaluate

        return evaluate(self.authorizer.policies.documents(role_arn), action, resource)

    def _assume(self, role_arn: str, session: str) -> dict:
        if self._sts is None:
            import boto3
            from botocore.config import Config

            self._sts = boto3.client("sts", endpoint_url=self.endpoint, region_name=self.region,
                                     aws_access_key_id="test", aws_secret_access_key="test",
                                     config=Config(retries={"max_attempts": 5, "mode": "standard"}))
        return self._sts.assume_role(RoleArn=role_arn, RoleSessionName=session[:64],
                                     DurationSeconds=3600)["Credentials"]

    def _start_failure(self, definition: dict, container: dict, task_id: str) -> Optional[str]:
        """Why the execution role cannot start this container (None: it can)."""
        role = definition.get("execution_role_arn")
        image = container.get("image", "")
        m = ECR_IMAGE.match(image)
        if m:
            if not role:
                return f"CannotPullContainerError: {image}: the task definition has no execution role to pull with"
            repo = f"arn:aws:ecr:{m.group('region')}:{m.group('account')}:repository/{m.group('repo')}"
            for action, resource in (("ecr:GetAuthorizationToken", "*"), ("ecr:BatchGetImage", repo),
                                     ("ecr:GetDownloadUrlForLayer", repo)):
                if not self._allowed(role, action, resource):
                    return (f"ResourceInitializationError: unable to pull secrets or registry auth: "
                            f"execution resource retrieval failed: AccessDeniedException: User: {role} is not "
                            f"authorized to perform: {action} on resource: {resource}")
        logs = container.get("log_options") or {}
        group = logs.get("awslogs-group")
        if group:
            if not role:
                return "ResourceInitializationError: the awslogs log driver needs an execution role"
            stream = f"{logs.get('awslogs-stream-prefix', 'ecs')}/{container['name']}/{task_id}"
            arn = f"arn:aws:logs:{logs.get('awslogs-region', self.region)}:{definition.get('account', '123456789012')}" \
                  f":log-group:{group}:log-stream:{stream}"
            for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
                if not self._allowed(role, action, arn):
                    return (f"ResourceInitializationError: failed to validate logger args: AccessDeniedException: "
                            f"User: {role} is not authorized to perform: {action} on resource: {arn}")
        return None

    # ---- the API ------------------------------------------------------------

    def run_task(self, _op: str, req: dict, _headers: dict, caller=None) -> Optional[tuple[int, dict]]:
        definition = self._definitions().get(req.get("taskDefinition", ""))
        if definition is None:
            return None
        if caller is not None:
            for role in (definition.get("task_role_arn"), definition.get("execution_role_arn")):
                if role and not self._allowed(caller.role_arn, "iam:PassRole", role):
                    return 400, {"__type": "AccessDeniedException",
                                 "message": f"User: {caller.session_arn} is not authorized to perform: iam:PassRole "
                                            f"on resource: {role}"}
        cluster = req.get("cluster") or "default"
        overrides = {o.get("name"): o for o in (req.get("overrides") or {}).get("containerOverrides") or []}
        (name, container), = definition["containers"].items()  # one essential container per task
        container = dict(container, name=name)
        task_id = uuid.uuid4().hex
        cluster_arn = cluster if cluster.startswith("arn:") \
            else f"arn:aws:ecs:{self.region}:123456789012:cluster/{cluster}"
        task_arn = f"{cluster_arn.replace(':cluster/', ':task/')}/{task_id}"
        task = {"taskArn": task_arn, "clusterArn": cluster_arn, "taskDefinitionArn": req["taskDefinition"],
                "launchType": req.get("launchType", "FARGATE"), "desiredStatus": "RUNNING",
                "lastStatus": "PROVISIONING", "containers": [{"name": name, "lastStatus": "PENDING"}]}
        why = self._start_failure(definition, container, task_id)
        if why is not None:
            stopped = dict(task, lastStatus="STOPPED", desiredStatus="STOPPED", stopCode="TaskFailedToStart",
                           stoppedReason=why, containers=[{"name": name, "lastStatus": "STOPPED", "reason": why}])
            with self.lock:
                self.running[task_arn] = {"proc": None, "task": stopped, "log": "", "failed": True}
            return 200, {"tasks": [task], "failures": []}
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "RUST_BACKTRACE")}
        env.update({"AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region,
                    "ECS_CONTAINER_METADATA_URI_V4": f"http://127.0.0.1/v4/{task_id}"})
        env.update(container.get("environment") or {})
        for e in (overrides.get(name) or {}).get("environment") or []:
            env[e["name"]] = e.get("value", "")
        role = definition.get("task_role_arn")
        key_id = ""
        if role:
            creds = self._assume(role, f"ecs-{task_id}")
            env.update({"AWS_ACCESS_KEY_ID": creds["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
                        "AWS_SESSION_TOKEN": creds["SessionToken"]})
            key_id = creds["AccessKeyId"]
        else:  # no task role: the container has no credentials, as on AWS
            env.update({"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
        binary = self.bin_dir / container["binary"]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"ecs-{definition['family']}-{next(_COUNTER)}.log"
        with open(log, "ab") as out:
            try:
                proc = subprocess.Popen([str(binary)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as e:
                return 200, {"tasks": [], "failures": [{"arn": req.get("taskDefinition"),
                                                        "reason": f"cannot start {binary}: {e}"}]}
        with self.lock:
            self.running[task_arn] = {"proc": proc, "task": task, "log": str(log), "access_key_id": key_id,
                                      "memory_mb": int(definition.get("memory_mb") or 0), "reason": ""}
        return 200, {"tasks": [task], "failures": []}

    def describe_tasks(self, _op: str, req: dict, _headers: dict, _caller=None) -> Optional[tuple[int, dict]]:
        arns = req.get("tasks") or []
        with self.lock:
            known = [self.running.get(a) for a in arns]
        if not arns or any(k is None for k in known):
            return None
        tasks = []
        for k in known:
            if k.get("failed"):
                tasks.append(k["task"])
                continue
            task = dict(k["task"])
            code = k["proc"].poll()
            container = dict(task["containers"][0])
            if code is None:
                task["lastStatus"] = container["lastStatus"] = "RUNNING"
            else:
                exit_code = 128 - code if code < 0 else code  # a signal, as Docker reports it
                stop_code = "UserInitiated" if k.get("reason") == "stopped" else "EssentialContainerExited"
                reason = {"oom": "OutOfMemoryError: Container killed due to memory usage",
                          "stopped": "Task stopped by user"}.get(k.get("reason", ""),
                                                                 "Essential container in task exited")
                task.update(lastStatus="STOPPED", desiredStatus="STOPPED", stopCode=stop_code,
                            stoppedReason=f"{reason} (log {k['log']})")
                container.update(lastStatus="STOPPED", exitCode=exit_code)
            task["containers"] = [container]
            tasks.append(task)
        return 200, {"tasks": tasks, "failures": []}

    def stop_task(self, _op: str, req: dict, _headers: dict, _caller=None) -> Optional[tuple[int, dict]]:
        with self.lock:
            k = self.running.get(req.get("task", ""))
        if k is None:
            return None
        proc = k.get("proc")
        if proc is not None and proc.poll() is None:
            k["reason"] = "stopped"
            os.killpg(proc.pid, signal.SIGTERM)

            def escalate():
                time.sleep(STOP_TIMEOUT_SECONDS)
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)

            threading.Thread(target=escalate, daemon=True).start()
        return 200, {"task": dict(k["task"], desiredStatus="STOPPED")}

    # ---- admin (the fault suite) ------------------------------------------------

    def describe_local(self) -> list[dict]:
        with self.lock:
            return [{"task": arn, "pid": k["proc"].pid if k.get("proc") else None,
                     "access_key_id": k.get("access_key_id", ""),
                     "running": bool(k.get("proc")) and k["proc"].poll() is None}
                    for arn, k in self.running.items()]

    def kill(self, selector: dict) -> list[str]:
        killed = []
        with self.lock:
            for arn, k in self.running.items():
                proc = k.get("proc")
                if proc is None or proc.poll() is not None:
                    continue
                if arn == selector.get("task") or (selector.get("access_key_id")
                                                   and k.get("access_key_id") == selector["access_key_id"]) \
                        or (selector.get("family") and f":task-definition/{selector['family']}:"
                            in k["task"]["taskDefinitionArn"]):
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed.append(arn)
        return killed

    def _memory_watch(self) -> None:
        from procs import group_rss_mb

        while True:
            time.sleep(0.2)
            with self.lock:
                live = [k for k in self.running.values()
                        if k.get("proc") is not None and k["proc"].poll() is None and k.get("memory_mb")]
            for k in live:
                rss = group_rss_mb(k["proc"].pid)
                if rss is not None and rss > k["memory_mb"]:
                    k["reason"] = "oom"
                    os.killpg(k["proc"].pid, signal.SIGKILL)

    def register(self, handlers: dict) -> None:
        handlers["RunTask"] = self.run_task
        handlers["DescribeTasks"] = self.describe_tasks
        handlers["StopTask"] = self.stop_task
