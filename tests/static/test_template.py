"""(b) `sam validate --lint` is clean; (d) no `*` in any IAM Action or Resource of the template."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, TEMPLATE, load_template


def _sam() -> str:
    beside = Path(sys.executable).parent / "sam"
    found = str(beside) if beside.exists() else shutil.which("sam")
    if not found:
        pytest.fail("sam (aws-sam-cli) not found beside the interpreter or on PATH")
    return found


def test_sam_validate_lint_is_clean():
    env = dict(os.environ, AWS_DEFAULT_REGION=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
               SAM_CLI_TELEMETRY="0")
    proc = subprocess.run([_sam(), "validate", "--lint", "-t", str(TEMPLATE)],
                          capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "is a valid SAM Template" in out, out


# ------------------------------------------------------------------ IAM walk

def _strings(node):
    """Every string leaf of a (possibly intrinsic) value: 'a', ['a'], {'Fn::Sub': '...'}, ..."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for x in node:
            yield from _strings(x)
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)


def _statements(document, where):
    stmts = document.get("Statement")
    assert stmts is not None, f"{where}: policy document without Statement"
    for i, s in enumerate(stmts if isinstance(stmts, list) else [stmts]):
        yield f"{where}.Statement[{i}]", s


def iam_statements(template: dict):
    """(where, statement) for every permission statement the template grants."""
    problems = []
    out = []
    resources = dict(template.get("Resources") or {})
    glob_fn = ((template.get("Globals") or {}).get("Function") or {})
    if "Policies" in glob_fn:
        resources["Globals.Function"] = {"Type": "AWS::Serverless::Function", "Properties": glob_fn}
    for lid, res in resources.items():
        rtype, props = res.get("Type"), res.get("Properties") or {}
        if rtype in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine"):
            policies = props.get("Policies")
            if policies is None:
                continue
            if not isinstance(policies, list):
                policies = [policies]
            for i, pol in enumerate(policies):
                where = f"{lid}.Policies[{i}]"
                if isinstance(pol, dict) and "Statement" in pol:
                    out.extend(_statements(pol, where))
                else:
                    # Managed policy names/ARNs and SAM policy templates expand to statements
                    # this test cannot see (LambdaInvokePolicy's resource ends in '*').
                    problems.append(f"{where}: {pol!r} is not an inline policy document with Statement")
        elif rtype == "AWS::IAM::Role":
            for arn in props.get("ManagedPolicyArns") or []:
                problems.append(f"{lid}.ManagedPolicyArns: {arn!r} cannot be checked; use inline policies")
            for i, pol in enumerate(props.get("Policies") or []):
                out.extend(_statements(pol["PolicyDocument"], f"{lid}.Policies[{i}]"))
        elif rtype in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::RolePolicy"):
            out.extend(_statements(props["PolicyDocument"], lid))
    return out, problems


# The only wildcards allowed, each the last segment under one resource of
# ours, where the names cannot be known in advance: objects under one prefix
# of the landing bucket, the ECS tasks of the reconciliation cluster, and the
# executions of the two state machines.
# No action, and no resource of any other shape, may hold a '*'.
SCOPED_WILDCARDS = {
    *(f"${{LandingBucket.Arn}}/{prefix}/*" for prefix in ("settlement", "internal", "rejected", "reports", "state")),
    "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:task/${ReconCluster}/*",
    # The sweeper describes executions of the COB state machine (run ids)
    # and of the reconciliation state machine (one per landed object).
    "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:execution:${AWS::StackName}-accrual-cob:*",
    "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:execution:${AWS::StackName}-reconciliation:*",
}


# Actions AWS defines with no resource type: a policy can grant them only
# on "*". A statement may hold "*" as its resource only if every action it
# grants is one of these.
ACTIONS_WITHOUT_RESOURCES = {"ecr:GetAuthorizationToken"}


def wildcard_findings(template: dict) -> list[str]:
    statements, findings = iam_statements(template)
    for where, s in statements:
        if s.get("Effect", "Allow") != "Allow":
            continue
        for key in ("NotAction", "NotResource"):
            if key in s:
                findings.append(f"{where}: {key} grants everything not listed")
        for key in ("Action", "Resource"):
            if key not in s:
                findings.append(f"{where}: no {key}")
                continue
            actions = set(_strings(s.get("Action", [])))
            for text in _strings(s[key]):
                if key == "Resource" and text == "*" and actions and actions <= ACTIONS_WITHOUT_RESOURCES:
                    continue
                if "*" in text and not (key == "Resource" and text in SCOPED_WILDCARDS):
                    findings.append(f"{where}.{key}: {text!r} contains '*'")
    return findings


def test_iam_policies_have_no_wildcards(template):
    statements, _ = iam_statements(template)
    assert len(statements) >= 5, f"suspiciously few IAM statements found ({len(statements)}): is the walk broken?"
    assert wildcard_findings(template) == []


def test_every_function_and_state_machine_has_inline_policies(template):
    for lid, res in template["Resources"].items():
        if res.get("Type") in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine"):
            pols = (res.get("Properties") or {}).get("Policies")
            assert pols, f"{lid}: no Policies (SAM would give it no permissions, or a broad default role)"


def test_wildcard_walk_catches_sub_ending_in_slash_star(template):
    """The walk itself must see through intrinsics: a Sub string ending in '/*' counts."""
    import copy
    t = copy.deepcopy(template)
    fn = next(r for r in t["Resources"].values() if r.get("Type") == "AWS::Serverless::Function")
    fn["Properties"]["Policies"] = [{"Statement": [{"Effect": "Allow", "Action": ["dynamodb:Query"],
                                                    "Resource": [{"Fn::Sub": "${AccountsTable.Arn}/index/*"}]}]}]
    assert any("/index/*" in f for f in wildcard_findings(t))


def test_template_loads():
    assert "Resources" in load_template()


def test_only_the_listed_scoped_wildcards_pass(template):
    import copy
    t = copy.deepcopy(template)
    fn = next(r for r in t["Resources"].values() if r.get("Type") == "AWS::Serverless::Function")
    fn["Properties"]["Policies"] = [{"Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [{"Fn::Sub": "${LandingBucket.Arn}/settlement/*"}]},
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [{"Fn::Sub": "${LandingBucket.Arn}/*"}]},
        {"Effect": "Allow", "Action": ["s3:*"], "Resource": [{"Fn::Sub": "${LandingBucket.Arn}/reports/*"}]},
    ]}]
    fn["Properties"]["Policies"][0]["Statement"] += [
        {"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"},
        {"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken", "ecr:BatchGetImage"], "Resource": "*"},
    ]
    found = wildcard_findings(t)
    assert not any("/settlement/*" in f for f in found)
    # "*" only for an action that has no resource, and not for a neighbour that has one.
    assert sum("'*' contains" in f for f in found) == 1, found
    assert any("${LandingBucket.Arn}/*'" in f for f in found), found
    assert any("s3:*" in f for f in found), found


def test_the_ingest_image_runs_the_binary_the_task_definition_names(template):
    """infra/Dockerfile.recon-ingest builds and starts the binary that the task
    definition's LocalBinaries (what the local stack runs) names."""
    td = template["Resources"]["ReconIngestTaskDefinition"]
    binaries = td["Metadata"]["LocalBinaries"]
    (container,) = [c["Name"] for c in td["Properties"]["ContainerDefinitions"]]
    binary = binaries[container]
    dockerfile = (Path(__file__).resolve().parents[2] / "infra" / "Dockerfile.recon-ingest").read_text()
    assert f"--bin {binary} " in dockerfile
    assert f'ENTRYPOINT ["/{binary}"]' in dockerfile
    assert "FROM scratch" in dockerfile
