"""The local substitute for ECS RunTask / DescribeTasks: a task runs as a
local process of the workspace binary its container names.

moto's ECS records tasks but runs nothing. moto's Step Functions engine makes
its `ecs:runTask.sync` calls over HTTP through the gateway (RunTask, then
DescribeTasks until lastStatus is STOPPED), so the gateway answers those two
calls with this module instead of moto:

* RunTask looks the task definition up in `ecs-tasks.json` (written by
  localstack/deploy.py from the template: each container's environment and
  the workspace binary named in the task definition's
  `Metadata.LocalBinaries`), starts that binary with the container's
  environment, the call's `overrides.containerOverrides[].environment`, and
  the local AWS endpoint and credentials, and logs to
  `<log-dir>/ecs-<family>-<n>.log`;
* DescribeTasks reports RUNNING while the process lives, then STOPPED with
  the container's exit code (`stopCode: EssentialContainerExited`).

A task definition this file does not know falls through to moto. Stdlib only.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Optional

_COUNTER = itertools.count(1)


class LocalEcs:
    def __init__(self, tasks_file: Path, bin_dir: Path, log_dir: Path, aws_env: dict[str, str]):
        self.tasks_file = tasks_file
        self.bin_dir = bin_dir
        self.log_dir = log_dir
        self.aws_env = aws_env
        self.lock = threading.Lock()
        self.running: dict[str, dict] = {}

    def _definitions(self) -> dict:
        try:
            return json.loads(self.tasks_file.read_text())
        except (OSError, ValueError):
            return {}

    def run_task(self, _op: str, req: dict, _headers: dict) -> Optional[tuple[int, dict]]:
        definition = self._definitions().get(req.get("taskDefinition", ""))
        if definition is None:
            return None
        cluster = req.get("cluster") or "default"
        overrides = {o.get("name"): o for o in (req.get("overrides") or {}).get("containerOverrides") or []}
        (name, container), = definition["containers"].items()  # one essential container per task
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "RUST_BACKTRACE")}
        env.update(self.aws_env)
        env.update(container.get("environment") or {})
        for e in (overrides.get(name) or {}).get("environment") or []:
            env[e["name"]] = e.get("value", "")
        binary = self.bin_dir / container["binary"]
        task_id = uuid.uuid4().hex
        region = self.aws_env.get("AWS_REGION", "us-east-1")
        cluster_arn = cluster if cluster.startswith("arn:") else f"arn:aws:ecs:{region}:123456789012:cluster/{cluster}"
        task_arn = f"{cluster_arn.replace(':cluster/', ':task/')}/{task_id}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"ecs-{definition['family']}-{next(_COUNTER)}.log"
        with open(log, "ab") as out:
            try:
                proc = subprocess.Popen([str(binary)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
            except OSError as e:
                return 200, {"tasks": [], "failures": [{"arn": req.get("taskDefinition"),
                                                        "reason": f"cannot start {binary}: {e}"}]}
        task = {"taskArn": task_arn, "clusterArn": cluster_arn, "taskDefinitionArn": req["taskDefinition"],
                "launchType": req.get("launchType", "FARGATE"), "desiredStatus": "RUNNING",
                "lastStatus": "PROVISIONING", "containers": [{"name": name, "lastStatus": "PENDING"}]}
        with self.lock:
            self.running[task_arn] = {"proc": proc, "task": task, "log": str(log)}
        return 200, {"tasks": [task], "failures": []}

    def describe_tasks(self, _op: str, req: dict, _headers: dict) -> Optional[tuple[int, dict]]:
        arns = req.get("tasks") or []
        with self.lock:
            known = [self.running.get(a) for a in arns]
        if not arns or any(k is None for k in known):
            return None
        tasks = []
        for k in known:
            task = dict(k["task"])
            code = k["proc"].poll()
            container = dict(task["containers"][0])
            if code is None:
                task["lastStatus"] = container["lastStatus"] = "RUNNING"
            else:
                task.update(lastStatus="STOPPED", desiredStatus="STOPPED", stopCode="EssentialContainerExited",
                            stoppedReason=f"Essential container in task exited (log {k['log']})")
                container.update(lastStatus="STOPPED", exitCode=code)
            task["containers"] = [container]
            tasks.append(task)
        return 200, {"tasks": tasks, "failures": []}

    def register(self, handlers: dict) -> None:
        handlers["RunTask"] = self.run_task
        handlers["DescribeTasks"] = self.describe_tasks
