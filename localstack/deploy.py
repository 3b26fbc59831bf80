#!/usr/bin/env python3
"""Deploy Tally into a local AWS endpoint from infra/template.yaml.

Reads the SAM template (CloudFormation short tags included) and the state
machine definitions it points at, and creates the same resources in a running
endpoint -- moto behind localstack/gateway.py (default http://127.0.0.1:4566)
or a real LocalStack. There is no second list of resources: every resource of a
supported type in the template is created, the rest are skipped with a note.

    python localstack/deploy.py [--endpoint URL] [--stack-name tally]
        [--parameter-overrides K=V ...] [--env K=V ...] [--out-dir .tally]

Writes <out-dir>/stack.json (the shape of `sam list stack-outputs --output json`)
and <out-dir>/functions.json (per function: binary, environment, timeout,
memory size, role, reserved concurrency: what localstack/lambda_host.py runs).
IAM roles are created in the endpoint's IAM from the template (declared
`AWS::IAM::Role`s, and the role SAM makes for each function and state machine
from its `Policies`), so the local stack can judge every call against them.

Importable: load_template(), Stack (parameters, conditions, intrinsic
resolution, per-resource requests) and deploy() -- tests use them to compare
what the template declares with what the endpoint holds.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE = REPO_ROOT / "infra" / "template.yaml"
DEFAULT_OUT_DIR = REPO_ROOT / ".tally"
DEFAULT_ENDPOINT = "http://127.0.0.1:4566"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}


class TemplateError(Exception):
    """The template cannot be understood or resolved."""


class UnsupportedIntrinsic(TemplateError):
    """An intrinsic function this resolver does not implement."""


class DeployError(Exception):
    """The endpoint refused or disagrees with what the template declares."""


def note(msg: str) -> None:
    print(f"[deploy] {msg}", file=sys.stderr)


# ---------------------------------------------------------------------------
# YAML with CloudFormation short tags -> the long (JSON) form
# ---------------------------------------------------------------------------

# short tag -> long key. Fn::GetAtt gets special handling ("A.B" -> ["A", "B"]).
SHORT_TAGS = {
    "Ref": "Ref",
    "Condition": "Condition",
    "Sub": "Fn::Sub",
    "GetAtt": "Fn::GetAtt",
    "Join": "Fn::Join",
    "Select": "Fn::Select",
    "Split": "Fn::Split",
    "If": "Fn::If",
    "Equals": "Fn::Equals",
    "Not": "Fn::Not",
    "And": "Fn::And",
    "Or": "Fn::Or",
    "FindInMap": "Fn::FindInMap",
    "Base64": "Fn::Base64",
    "GetAZs": "Fn::GetAZs",
    "ImportValue": "Fn::ImportValue",
    "Cidr": "Fn::Cidr",
    "Transform": "Fn::Transform",
    "ToJsonString": "Fn::ToJsonString",
    "Length": "Fn::Length",
}


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns `!Tag x` into `{"Fn::Tag": x}`."""


def _construct(loader: yaml.Loader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)


def _make_tag_constructor(short: str, long: str):
    def construct(loader: yaml.Loader, node: yaml.Node) -> Any:
        value = _construct(loader, node)
        if short == "GetAtt" and isinstance(value, str):
            logical, _, attr = value.partition(".")
            if not attr:
                raise TemplateError(f"!GetAtt {value!r}: expected Resource.Attribute")
            value = [logical, attr]
        return {long: value}

    return construct


def _unknown_tag(loader: yaml.Loader, suffix: str, node: yaml.Node) -> Any:
    raise UnsupportedIntrinsic(f"unknown YAML tag !{suffix} at {node.start_mark}")


for _short, _long in SHORT_TAGS.items():
    CfnLoader.add_constructor(f"!{_short}", _make_tag_constructor(_short, _long))
CfnLoader.add_multi_constructor("!", _unknown_tag)
# Keep dates/timestamps as strings, as CloudFormation does.
CfnLoader.add_constructor(
    "tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node)
)


def load_template(path: str | os.PathLike) -> dict:
    with open(path, encoding="utf-8") as f:
        doc = yaml.load(f, Loader=CfnLoader)  # noqa: S506 -- SafeLoader subclass
    if not isinstance(doc, dict) or "Resources" not in doc:
        raise TemplateError(f"{path}: not a CloudFormation template (no Resources)")
    return doc


# ---------------------------------------------------------------------------
# Intrinsic resolution
# ---------------------------------------------------------------------------

NO_VALUE = object()  # AWS::NoValue: removes the enclosing key / list element

SUPPORTED_FUNCTIONS = {
    "Fn::Sub",
    "Fn::GetAtt",
    "Fn::Join",
    "Fn::Select",
    "Fn::Split",
    "Fn::If",
    "Fn::Equals",
    "Fn::Not",
    "Fn::And",
    "Fn::Or",
    "Fn::FindInMap",
    "Fn::Base64",
    "Fn::GetAZs",
    "Fn::ToJsonString",
    "Fn::Length",
}
SUB_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")

# Types deployed locally: see HANDLERS below. Types with no local meaning
# are skipped with a one-line note:
SKIPPED_TYPES = {
    "AWS::Lambda::Permission": "no resource policies locally",
    "AWS::Lambda::EventInvokeConfig": "no local meaning",
    "AWS::Scheduler::Schedule": "no scheduler locally; start executions by hand",
    "AWS::Scheduler::ScheduleGroup": "no scheduler locally",
    "AWS::CloudWatch::Alarm": "no CloudWatch alarms locally",
    "AWS::CloudWatch::Dashboard": "no CloudWatch dashboards locally",
    "AWS::Logs::LogGroup": "logs go to .tally/local/*.log",
    "AWS::Logs::MetricFilter": "no CloudWatch Logs locally",
    "AWS::SNS::TopicPolicy": "resource policies are not enforced locally",
    "AWS::SQS::QueuePolicy": "resource policies are not enforced locally",
    "AWS::Events::EventBusPolicy": "resource policies are not enforced locally",
    "AWS::S3::BucketPolicy": "resource policies are not enforced locally",
}
SKIPPED_PREFIXES = ("AWS::IAM::InstanceProfile",)


def cfn_str(value: Any) -> str:
    """A resolved scalar as CloudFormation renders it in a string context."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise TemplateError(f"expected a scalar, got {type(value).__name__}: {value!r}")


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise TemplateError(f"expected a boolean, got {value!r}")


def as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise TemplateError(f"expected an integer, got {value!r}") from None


def _intrinsic(node: Any) -> Optional[tuple[str, Any]]:
    if isinstance(node, dict) and len(node) == 1:
        (key, value), = node.items()
        if key == "Ref" or key.startswith("Fn::"):
            return key, value
    return None


def find_unsupported_intrinsics(node: Any, where: str = "") -> list[str]:
    """Every Fn::* in the template this resolver does not implement."""
    found = []
    if isinstance(node, dict):
        hit = _intrinsic(node)
        if hit and hit[0] != "Ref" and hit[0] not in SUPPORTED_FUNCTIONS:
            found.append(f"{hit[0]} at {where or '/'}")
        for k, v in node.items():
            found += find_unsupported_intrinsics(v, f"{where}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += find_unsupported_intrinsics(v, f"{where}/{i}")
    return found


class Stack:
    """A template with its parameters bound: resolves intrinsics and builds requests.

    ``actual`` holds attribute values read back from the endpoint after a
    resource was created (a queue URL, a stream ARN); they win over the
    computed ones.
    """

    def __init__(
        self,
        template: dict,
        template_path: str | os.PathLike = DEFAULT_TEMPLATE,
        stack_name: str = "tally",
        parameter_overrides: Optional[dict[str, str]] = None,
        region: str = REGION,
        account_id: str = ACCOUNT_ID,
        endpoint: Optional[str] = None,
    ):
        self.template = template
        self.template_path = Path(template_path)
        self.stack_name = stack_name
        self.region = region
        self.account_id = account_id
        self.endpoint = endpoint
        self.resources: dict[str, dict] = template.get("Resources") or {}
        self.globals: dict = template.get("Globals") or {}
        self.actual: dict[str, dict[str, Any]] = {}
        # task definition ARN -> what localstack/local_ecs.py runs for it
        self.ecs_tasks: dict[str, dict[str, Any]] = {}
        # function name -> what localstack/lambda_host.py runs for it
        self.functions: dict[str, dict[str, Any]] = {}
        self._resolving: set[str] = set()
        self._conditions: dict[str, bool] = {}
        self.parameters = self._bind_parameters(parameter_overrides or {})
        bad = find_unsupported_intrinsics(template)
        if bad:
            raise UnsupportedIntrinsic("unsupported intrinsic function(s): " + "; ".join(bad))

    # ---- parameters and conditions ----------------------------------------

    def _bind_parameters(self, overrides: dict[str, str]) -> dict[str, Any]:
        declared = self.template.get("Parameters") or {}
        unknown = sorted(set(overrides) - set(declared))
        if unknown:
            raise TemplateError(f"--parameter-overrides for undeclared parameter(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, spec in declared.items():
            spec = spec or {}
            if name in overrides:
                raw = overrides[name]
            elif "Default" in spec:
                raw = spec["Default"]
            else:
                raise TemplateError(f"parameter {name} has no Default and no override")
            ptype = str(spec.get("Type", "String"))
            if ptype == "CommaDelimitedList" or ptype.startswith("List<"):
                value = raw if isinstance(raw, list) else [s.strip() for s in cfn_str(raw).split(",")]
                value = [cfn_str(v) for v in value]
            else:
                value = cfn_str(raw)
                if ptype == "Number":
                    try:
                        num = float(value)
                    except ValueError:
                        raise TemplateError(f"parameter {name}: {value!r} is not a Number") from None
                    lo, hi = spec.get("MinValue"), spec.get("MaxValue")
                    if (lo is not None and num < float(lo)) or (hi is not None and num > float(hi)):
                        raise TemplateError(f"parameter {name}: {value} outside [{lo}, {hi}]")
            allowed = spec.get("AllowedValues")
            if allowed is not None:
                allowed_s = [cfn_str(a) for a in allowed]
                for v in value if isinstance(value, list) else [value]:
                    if v not in allowed_s:
                        raise TemplateError(f"parameter {name}: {v!r} not in AllowedValues {allowed_s}")
            pattern = spec.get("AllowedPattern")
            if pattern is not None and isinstance(value, str) and not re.fullmatch(pattern, value):
                raise TemplateError(f"parameter {name}: {value!r} does not match AllowedPattern {pattern!r}")
            values[name] = value
        return values

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            conds = self.template.get("Conditions") or {}
            if name not in conds:
                raise TemplateError(f"unknown condition {name}")
            if name in self._resolving:
                raise TemplateError(f"condition {name} refers to itself")
            self._resolving.add(name)
            try:
                self._conditions[name] = as_bool(self._condition_expr(conds[name]))
            finally:
                self._resolving.discard(name)
        return self._conditions[name]

    def _condition_expr(self, node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1 and "Condition" in node:
            return self.condition(node["Condition"])
        return self.resolve(node)

    def enabled(self, logical: str) -> bool:
        cond = (self.resources.get(logical) or {}).get("Condition")
        return True if cond is None else self.condition(cond)

    # ---- the resolver -------------------------------------------------------

    def resolve(self, node: Any) -> Any:
        """Resolve every intrinsic in node (deep). NO_VALUE entries are dropped."""
        hit = _intrinsic(node)
        if hit:
            return self._call(*hit)
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                r = self.resolve(v)
                if r is not NO_VALUE:
                    out[k] = r
            return out
        if isinstance(node, list):
            return [r for r in (self.resolve(v) for v in node) if r is not NO_VALUE]
        return node

    def _call(self, fn: str, arg: Any) -> Any:
        if fn == "Ref":
            return self.ref(self.resolve(arg) if not isinstance(arg, str) else arg)
        if fn == "Fn::GetAtt":
            if isinstance(arg, str):
                logical, _, attr = arg.partition(".")
            else:
                arg = self.resolve(arg)
                if not (isinstance(arg, list) and len(arg) == 2):
                    raise TemplateError(f"Fn::GetAtt expects [Resource, Attribute], got {arg!r}")
                logical, attr = arg
            return self.get_att(logical, attr)
        if fn == "Fn::Sub":
            if isinstance(arg, str):
                return self._sub(arg, {})
            if isinstance(arg, list) and len(arg) == 2 and isinstance(arg[1], dict):
                return self._sub(self.resolve(arg[0]), {k: self.resolve(v) for k, v in arg[1].items()})
            raise TemplateError(f"Fn::Sub expects a string or [string, map], got {arg!r}")
        if fn == "Fn::Join":
            delim, items = self._args(fn, arg, 2)
            items = self.resolve(items)
            if not isinstance(items, list):
                raise TemplateError(f"Fn::Join expects a list, got {items!r}")
            return cfn_str(delim).join(cfn_str(i) for i in items)
        if fn == "Fn::Select":
            idx, items = self._args(fn, arg, 2)
            items = self.resolve(items)
            idx = as_int(self.resolve(idx))
            if not isinstance(items, list) or not 0 <= idx < len(items):
                raise TemplateError(f"Fn::Select index {idx} out of range for {items!r}")
            return items[idx]
        if fn == "Fn::Split":
            delim, s = self._args(fn, arg, 2)
            return cfn_str(self.resolve(s)).split(cfn_str(delim))
        if fn == "Fn::If":
            cond, a, b = self._args(fn, arg, 3)
            return self.resolve(a if self.condition(cond) else b)
        if fn == "Fn::Equals":
            a, b = self._args(fn, arg, 2)
            return cfn_str(self.resolve(a)) == cfn_str(self.resolve(b))
        if fn == "Fn::Not":
            (a,) = self._args(fn, arg, 1)
            return not as_bool(self._condition_expr(a))
        if fn in ("Fn::And", "Fn::Or"):
            if not isinstance(arg, list) or not 2 <= len(arg) <= 10:
                raise TemplateError(f"{fn} expects 2..10 conditions, got {arg!r}")
            vals = [as_bool(self._condition_expr(a)) for a in arg]
            return all(vals) if fn == "Fn::And" else any(vals)
        if fn == "Fn::FindInMap":
            m, k1, k2 = (cfn_str(self.resolve(a)) for a in self._args(fn, arg, 3))
            try:
                return self.resolve(self.template["Mappings"][m][k1][k2])
            except (KeyError, TypeError):
                raise TemplateError(f"Fn::FindInMap: no {m}/{k1}/{k2} in Mappings") from None
        if fn == "Fn::Base64":
            return base64.b64encode(cfn_str(self.resolve(arg)).encode()).decode()
        if fn == "Fn::GetAZs":
            return [f"{self.region}{s}" for s in "abc"]
        if fn == "Fn::ToJsonString":
            return json.dumps(self.resolve(arg), separators=(",", ":"))
        if fn == "Fn::Length":
            v = self.resolve(arg)
            if not isinstance(v, list):
                raise TemplateError(f"Fn::Length expects a list, got {v!r}")
            return len(v)
        raise UnsupportedIntrinsic(f"{fn} is not supported by localstack/deploy.py")

    @staticmethod
    def _args(fn: str, arg: Any, n: int) -> list:
        if not isinstance(arg, list) or len(arg) != n:
            raise TemplateError(f"{fn} expects {n} arguments, got {arg!r}")
        return arg

    def _sub(self, text: Any, variables: dict[str, Any]) -> str:
        if not isinstance(text, str):
            raise TemplateError(f"Fn::Sub expects a string, got {text!r}")

        def repl(m: re.Match) -> str:
            name = m.group(1).strip()
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return cfn_str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                logical, _, attr = name.partition(".")
                return cfn_str(self.get_att(logical, attr))
            value = self.ref(name)
            if isinstance(value, list):
                raise TemplateError(f"Fn::Sub: ${{{name}}} is a list")
            return cfn_str(value)

        return SUB_PLACEHOLDER.sub(repl, text)

    # ---- Ref / GetAtt -------------------------------------------------------

    def pseudo(self, name: str) -> Any:
        return {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{self.account_id}:stack/{self.stack_name}/local",
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NotificationARNs": [],
            "AWS::NoValue": NO_VALUE,
        }.get(name)

    def ref(self, name: str) -> Any:
        if name.startswith("AWS::"):
            v = self.pseudo(name)
            if v is None:
                raise TemplateError(f"unknown pseudo parameter {name}")
            return v
        if name in self.parameters:
            return self.parameters[name]
        if name in self.resources:
            return self.attributes(name)["Ref"]
        raise TemplateError(f"Ref to unknown parameter or resource {name!r}")

    def get_att(self, logical: str, attr: str) -> Any:
        if logical not in self.resources:
            raise TemplateError(f"Fn::GetAtt on unknown resource {logical!r}")
        attrs = self.attributes(logical)
        if attr not in attrs:
            rtype = self.resources[logical].get("Type")
            raise TemplateError(
                f"Fn::GetAtt {logical}.{attr}: attribute not known locally for {rtype} "
                f"(known: {', '.join(sorted(a for a in attrs if a != 'Ref'))})"
            )
        return attrs[attr]

    def props(self, logical: str) -> dict:
        """Resolved Properties of a resource (Globals merged for SAM types)."""
        res = self.resources[logical]
        raw = copy.deepcopy(res.get("Properties") or {})
        rtype = res.get("Type")
        gkey = {"AWS::Serverless::Function": "Function", "AWS::Serverless::StateMachine": "StateMachine"}.get(rtype)
        if gkey and self.globals.get(gkey):
            raw = merge_globals(self.globals[gkey], raw)
        if logical in self._resolving:
            raise TemplateError(f"circular reference through {logical}")
        self._resolving.add(logical)
        try:
            return self.resolve(raw)
        finally:
            self._resolving.discard(logical)

    def _prop(self, logical: str, key: str, default: Any = None) -> Any:
        """One resolved property (without resolving the rest of the resource)."""
        res = self.resources[logical]
        raw = (res.get("Properties") or {}).get(key)
        if raw is None:
            return default
        if logical in self._resolving:
            raise TemplateError(f"circular reference through {logical}.{key}")
        self._resolving.add(logical)
        try:
            v = self.resolve(raw)
        finally:
            self._resolving.discard(logical)
        return default if v is NO_VALUE else v

    def function_binary(self, logical: str) -> str:
        res = self.resources[logical]
        binary = ((res.get("Metadata") or {}).get("BuildProperties") or {}).get("Binary")
        if binary:
            return cfn_str(self.resolve(binary))
        name = self._prop(logical, "FunctionName")
        if name:
            return cfn_str(name)
        raise TemplateError(
            f"{logical}: no Metadata.BuildProperties.Binary (the local Lambda host serves functions by binary name)"
        )

    def default_name(self, logical: str) -> str:
        return f"{self.stack_name}-{logical}"

    def attributes(self, logical: str) -> dict[str, Any]:
        """Ref and GetAtt values of a resource, as AWS would give them."""
        res = self.resources[logical]
        rtype = res.get("Type", "")
        r, a = self.region, self.account_id
        if not self.enabled(logical):
            raise TemplateError(f"{logical} is disabled by its Condition but referenced")
        out: dict[str, Any]
        if rtype == "AWS::DynamoDB::Table":
            name = cfn_str(self._prop(logical, "TableName") or self.default_name(logical))
            arn = f"arn:aws:dynamodb:{r}:{a}:table/{name}"
            out = {"Ref": name, "Arn": arn}
            if self._prop(logical, "StreamSpecification"):
                out["StreamArn"] = f"{arn}/stream/local"
        elif rtype == "AWS::SNS::Topic":
            name = cfn_str(self._prop(logical, "TopicName") or self.default_name(logical))
            if as_bool(self._prop(logical, "FifoTopic", False)) and not name.endswith(".fifo"):
                name += ".fifo"
            arn = f"arn:aws:sns:{r}:{a}:{name}"
            out = {"Ref": arn, "TopicArn": arn, "TopicName": name}
        elif rtype == "AWS::SQS::Queue":
            name = cfn_str(self._prop(logical, "QueueName") or self.default_name(logical))
            if as_bool(self._prop(logical, "FifoQueue", False)) and not name.endswith(".fifo"):
                name += ".fifo"
            base = (self.endpoint or f"https://sqs.{r}.amazonaws.com").rstrip("/")
            url = f"{base}/{a}/{name}"
            out = {"Ref": url, "QueueUrl": url, "QueueName": name, "Arn": f"arn:aws:sqs:{r}:{a}:{name}"}
        elif rtype == "AWS::Events::EventBus":
            name = cfn_str(self._prop(logical, "Name") or self.default_name(logical))
            arn = f"arn:aws:events:{r}:{a}:event-bus/{name}"
            out = {"Ref": name, "Name": name, "Arn": arn}
        elif rtype == "AWS::Events::Rule":
            name = cfn_str(self._prop(logical, "Name") or self.default_name(logical))
            bus = self._prop(logical, "EventBusName")
            bus_part = "" if not bus or bus == "default" else f"{cfn_str(bus).split('/')[-1]}/"
            arn = f"arn:aws:events:{r}:{a}:rule/{bus_part}{name}"
            out = {"Ref": name, "Arn": arn}
        elif rtype == "AWS::S3::Bucket":
            name = cfn_str(self._prop(logical, "BucketName") or self.default_name(logical).lower())
            out = {"Ref": name, "Arn": f"arn:aws:s3:::{name}", "DomainName": f"{name}.s3.amazonaws.com",
                   "RegionalDomainName": f"{name}.s3.{r}.amazonaws.com"}
        elif rtype in ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine"):
            name = self.state_machine_name(logical)
            arn = f"arn:aws:states:{r}:{a}:stateMachine:{name}"
            out = {"Ref": arn, "Arn": arn, "Name": name}
        elif rtype in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            binary = self.function_binary(logical)
            out = {"Ref": binary, "Arn": f"arn:aws:lambda:{r}:{a}:function:{binary}"}
        elif rtype == "AWS::SNS::Subscription":
            topic = cfn_str(self._prop(logical, "TopicArn"))
            out = {"Ref": f"{topic}:{logical}"}
        elif rtype == "AWS::IAM::Role":
            name = cfn_str(self._prop(logical, "RoleName") or self.default_name(logical))
            out = {"Ref": name, "Arn": f"arn:aws:iam::{a}:role/{name}", "RoleId": f"AROA{name.upper()[:16]}"}
        elif rtype == "AWS::Scheduler::Schedule":
            name = cfn_str(self._prop(logical, "Name") or self.default_name(logical))
            group = cfn_str(self._prop(logical, "GroupName") or "default")
            out = {"Ref": name, "Arn": f"arn:aws:scheduler:{r}:{a}:schedule/{group}/{name}"}
        elif rtype == "AWS::CloudWatch::Alarm":
            name = cfn_str(self._prop(logical, "AlarmName") or self.default_name(logical))
            out = {"Ref": name, "Arn": f"arn:aws:cloudwatch:{r}:{a}:alarm:{name}"}
        elif rtype == "AWS::KMS::Key":
            # The key id exists once deploy_kms_key has made the key; until then a
            # placeholder (seen only by --dry-run), replaced from self.actual below.
            key_id = f"local-{self.stack_name}-{logical}"
            out = {"Ref": key_id, "KeyId": key_id, "Arn": f"arn:aws:kms:{r}:{a}:key/{key_id}"}
        elif rtype == "AWS::ECS::Cluster":
            name = cfn_str(self._prop(logical, "ClusterName") or self.default_name(logical))
            out = {"Ref": name, "Arn": f"arn:aws:ecs:{r}:{a}:cluster/{name}"}
        elif rtype == "AWS::ECS::TaskDefinition":
            family = cfn_str(self._prop(logical, "Family") or self.default_name(logical))
            arn = f"arn:aws:ecs:{r}:{a}:task-definition/{family}:1"
            out = {"Ref": arn, "TaskDefinitionArn": arn}
        elif rtype == "AWS::ECR::Repository":
            name = cfn_str(self._prop(logical, "RepositoryName") or self.default_name(logical).lower())
            out = {"Ref": name, "Arn": f"arn:aws:ecr:{r}:{a}:repository/{name}",
                   "RepositoryUri": f"{a}.dkr.ecr.{r}.amazonaws.com/{name}"}
        elif rtype == "AWS::Logs::LogGroup":
            name = cfn_str(self._prop(logical, "LogGroupName") or self.default_name(logical))
            out = {"Ref": name, "Arn": f"arn:aws:logs:{r}:{a}:log-group:{name}:*"}
        else:
            raise TemplateError(f"Ref/GetAtt of {logical} ({rtype}) is not supported locally")
        out.update(self.actual.get(logical, {}))
        return out

    def sqs_event_sources(self) -> list[dict[str, Any]]:
        """The functions' `Events: {Type: SQS}`, for the local event source
        mapping (localstack/local_sqs_source.py): queue URL, function, batch size."""
        url_by_arn = {self.get_att(lid, "Arn"): self.get_att(lid, "QueueUrl")
                      for lid, r in self.resources.items()
                      if r.get("Type") == "AWS::SQS::Queue" and self.enabled(lid)}
        out = []
        for lid, r in self.resources.items():
            if r.get("Type") != "AWS::Serverless::Function" or not self.enabled(lid):
                continue
            for ev in ((r.get("Properties") or {}).get("Events") or {}).values():
                if ev.get("Type") != "SQS":
                    continue
                p = ev.get("Properties") or {}
                arn = cfn_str(self.resolve(p["Queue"]))
                out.append({
                    "queue_url": url_by_arn.get(arn, arn),
                    "function": self.function_binary(lid),
                    "batch_size": as_int(self.resolve(p.get("BatchSize", 10))),
                    "report_batch_item_failures": "ReportBatchItemFailures" in (p.get("FunctionResponseTypes") or []),
                })
        return out

    # ---- IAM roles --------------------------------------------------------------

    SAM_SERVICE = {"AWS::Serverless::Function": "lambda.amazonaws.com",
                   "AWS::Serverless::StateMachine": "states.amazonaws.com"}
    # SAM attaches this managed policy to every function role it makes.
    LAMBDA_BASIC_EXECUTION = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": "*"}]}

    def role_arn_of(self, logical: str) -> str:
        """The role a function or state machine runs with: its `Role`, or the
        one SAM makes for it (`<logical>Role`)."""
        explicit = self._prop(logical, "Role")
        if explicit:
            value = cfn_str(explicit)
            return value if value.startswith("arn:") else f"arn:aws:iam::{self.account_id}:role/{value}"
        return f"arn:aws:iam::{self.account_id}:role/{self.sam_role_name(logical)}"

    def sam_role_name(self, logical: str) -> str:
        return f"{self.stack_name}-{logical}Role"[:64]

    def role_definition(self, logical: str) -> Optional[dict]:
        """Name, trust policy and inline policies of the role a resource
        declares (AWS::IAM::Role) or SAM makes for it; None when a SAM
        resource names its own Role."""
        res = self.resources[logical]
        rtype = res.get("Type")
        if rtype == "AWS::IAM::Role":
            p = self.props(logical)
            if p.get("ManagedPolicyArns") or p.get("PermissionsBoundary"):
                raise TemplateError(f"{logical}: ManagedPolicyArns / PermissionsBoundary are not deployed locally; "
                                    f"write the statements inline")
            return {"name": self.ref(logical), "trust": p["AssumeRolePolicyDocument"],
                    "policies": {cfn_str(x["PolicyName"]): x["PolicyDocument"] for x in p.get("Policies") or []}}
        if rtype not in self.SAM_SERVICE or self._prop(logical, "Role"):
            return None
        raw = self._prop(logical, "Policies") or []
        raw = raw if isinstance(raw, list) else [raw]
        policies: dict[str, Any] = {}
        if rtype == "AWS::Serverless::Function":
            policies["AWSLambdaBasicExecutionRole"] = self.LAMBDA_BASIC_EXECUTION
        for i, item in enumerate(raw):
            if isinstance(item, dict) and "Statement" in item:
                policies[f"{logical}RolePolicy{i}"] = item
            else:
                what = item if isinstance(item, str) else next(iter(item), "?")
                raise TemplateError(f"{logical}.Policies[{i}]: {what!r} (a managed policy or SAM policy template) "
                                    f"is not deployed locally, so its grants could not be checked; write the "
                                    f"statements inline")
        return {"name": self.sam_role_name(logical),
                "trust": {"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Principal": {"Service": self.SAM_SERVICE[rtype]},
                    "Action": "sts:AssumeRole"}]},
                "policies": policies}

    def function_spec(self, logical: str) -> dict:
        """What the local Lambda host needs to run a function as AWS would."""
        p = self.props(logical)
        env = (p.get("Environment") or {}).get("Variables") or {}
        reserved = p.get("ReservedConcurrentExecutions")
        return {
            "logical_id": logical,
            "binary": self.function_binary(logical),
            "environment": {k: cfn_str(v) for k, v in env.items()},
            "timeout_s": as_int(p.get("Timeout", 3)),
            "memory_mb": as_int(p.get("MemorySize", 128)),
            "role_arn": self.role_arn_of(logical),
            "reserved_concurrency": as_int(reserved) if reserved is not None else None,
            "architectures": [cfn_str(a) for a in p.get("Architectures") or ["x86_64"]],
        }

    # ---- per-type views -----------------------------------------------------

    def resources_of(self, *types: str) -> list[str]:
        return [k for k, v in self.resources.items() if v.get("Type") in types and self.enabled(k)]

    def table_request(self, logical: str) -> dict:
        """boto3 dynamodb.create_table kwargs for an AWS::DynamoDB::Table."""
        p = self.props(logical)
        billing = p.get("BillingMode", "PROVISIONED")
        req: dict[str, Any] = {
            "TableName": self.ref(logical),
            "AttributeDefinitions": p["AttributeDefinitions"],
            "KeySchema": p["KeySchema"],
            "BillingMode": billing,
        }

        def throughput(pt):
            return {"ReadCapacityUnits": as_int(pt["ReadCapacityUnits"]),
                    "WriteCapacityUnits": as_int(pt["WriteCapacityUnits"])}

        if billing == "PROVISIONED":
            if "ProvisionedThroughput" not in p:
                raise TemplateError(f"{logical}: PROVISIONED billing without ProvisionedThroughput")
            req["ProvisionedThroughput"] = throughput(p["ProvisionedThroughput"])
        gsis = []
        for g in p.get("GlobalSecondaryIndexes") or []:
            item = {"IndexName": g["IndexName"], "KeySchema": g["KeySchema"], "Projection": g["Projection"]}
            if billing == "PROVISIONED" and "ProvisionedThroughput" in g:
                item["ProvisionedThroughput"] = throughput(g["ProvisionedThroughput"])
            gsis.append(item)
        if gsis:
            req["GlobalSecondaryIndexes"] = gsis
        lsis = [{"IndexName": g["IndexName"], "KeySchema": g["KeySchema"], "Projection": g["Projection"]}
                for g in p.get("LocalSecondaryIndexes") or []]
        if lsis:
            req["LocalSecondaryIndexes"] = lsis
        sse = p.get("SSESpecification")
        if sse is not None:
            s: dict[str, Any] = {"Enabled": as_bool(sse.get("SSEEnabled", False))}
            if s["Enabled"]:
                s["SSEType"] = sse.get("SSEType", "KMS")
                if sse.get("KMSMasterKeyId"):
                    s["KMSMasterKeyId"] = sse["KMSMasterKeyId"]
            req["SSESpecification"] = s
        stream = p.get("StreamSpecification")
        if stream:
            req["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
        if p.get("Tags"):
            req["Tags"] = [{"Key": cfn_str(t["Key"]), "Value": cfn_str(t["Value"])} for t in p["Tags"]]
        if "TableClass" in p:
            req["TableClass"] = p["TableClass"]
        if "DeletionProtectionEnabled" in p:
            req["DeletionProtectionEnabled"] = as_bool(p["DeletionProtectionEnabled"])
        return req

    def table_extras(self, logical: str) -> dict:
        """Settings applied after create_table: TTL and point-in-time recovery."""
        p = self.props(logical)
        ttl = p.get("TimeToLiveSpecification") or {}
        pitr = p.get("PointInTimeRecoverySpecification") or {}
        return {
            "ttl_attribute": ttl.get("AttributeName") if as_bool(ttl.get("Enabled", False)) else None,
            "pitr": as_bool(pitr.get("PointInTimeRecoveryEnabled", False)),
        }

    def state_machine_name(self, logical: str) -> str:
        rtype = self.resources[logical].get("Type")
        key = "Name" if rtype == "AWS::Serverless::StateMachine" else "StateMachineName"
        return cfn_str(self._prop(logical, key) or self.default_name(logical))

    def state_machine_definition(self, logical: str) -> dict:
        """The definition after DefinitionSubstitutions, parsed."""
        res = self.resources[logical]
        raw_props = res.get("Properties") or {}
        subs_raw = raw_props.get("DefinitionSubstitutions") or {}
        subs = {k: cfn_str(self.resolve(v)) for k, v in subs_raw.items()}
        if "DefinitionUri" in raw_props:
            uri = self.resolve(raw_props["DefinitionUri"])
            if not isinstance(uri, str):
                raise TemplateError(f"{logical}: DefinitionUri must be a local path here (S3 locations unsupported)")
            path = (self.template_path.parent / uri).resolve()
            text = path.read_text(encoding="utf-8")
            source = str(path)
        elif "DefinitionString" in raw_props:
            text = cfn_str(self.resolve(raw_props["DefinitionString"]))
            source = f"{logical}.DefinitionString"
        elif "Definition" in raw_props:
            text = json.dumps(self.resolve(raw_props["Definition"]))
            source = f"{logical}.Definition"
        else:
            raise TemplateError(f"{logical}: no DefinitionUri, DefinitionString or Definition")
        text = substitute_definition(text, subs, source)
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise TemplateError(f"{source}: not valid JSON after substitution: {e}") from None

    def state_machine_type(self, logical: str) -> str:
        return cfn_str(self._prop(logical, "Type") or self._prop(logical, "StateMachineType") or "STANDARD")

    def function_environments(self) -> dict[str, dict[str, str]]:
        """logical id -> resolved Environment.Variables (Globals merged)."""
        out = {}
        for logical in self.resources_of("AWS::Serverless::Function", "AWS::Lambda::Function"):
            env = (self.props(logical).get("Environment") or {}).get("Variables") or {}
            out[logical] = {k: cfn_str(v) for k, v in env.items()}
        return out

    def lambda_env(self, overrides: Optional[dict[str, str]] = None) -> dict[str, str]:
        """Union of every function's environment; a name must have one value."""
        merged: dict[str, str] = {}
        origin: dict[str, str] = {}
        for logical, env in self.function_environments().items():
            for k, v in env.items():
                if k in merged and merged[k] != v:
                    raise TemplateError(
                        f"environment variable {k} differs between functions: "
                        f"{origin[k]}={merged[k]!r} vs {logical}={v!r} (design.md: same name => same value)"
                    )
                merged[k] = v
                origin[k] = logical
        merged.update(overrides or {})
        return dict(sorted(merged.items()))

    def outputs(self) -> list[dict[str, str]]:
        out = []
        for key, spec in (self.template.get("Outputs") or {}).items():
            spec = spec or {}
            if "Condition" in spec and not self.condition(spec["Condition"]):
                continue
            item = {"OutputKey": key, "OutputValue": cfn_str_or_list(self.resolve(spec["Value"]))}
            if spec.get("Description"):
                item["Description"] = cfn_str(self.resolve(spec["Description"]))
            out.append(item)
        return out

    def references(self, node: Any) -> set[str]:
        """Logical ids a node refers to (Ref, GetAtt, ${} in Sub)."""
        found: set[str] = set()
        hit = _intrinsic(node)
        if hit:
            fn, arg = hit
            if fn == "Ref" and isinstance(arg, str) and arg in self.resources:
                found.add(arg)
            elif fn == "Fn::GetAtt":
                logical = arg.partition(".")[0] if isinstance(arg, str) else arg[0]
                if isinstance(logical, str) and logical in self.resources:
                    found.add(logical)
            elif fn == "Fn::Sub":
                text = arg if isinstance(arg, str) else arg[0]
                names = set(arg[1]) if isinstance(arg, list) and isinstance(arg[1], dict) else set()
                if isinstance(text, str):
                    for m in SUB_PLACEHOLDER.finditer(text):
                        n = m.group(1).strip().partition(".")[0]
                        if n in self.resources and n not in names:
                            found.add(n)
        if isinstance(node, dict):
            for v in node.values():
                found |= self.references(v)
        elif isinstance(node, list):
            for v in node:
                found |= self.references(v)
        return found

    def deploy_order(self, logicals: Iterable[str]) -> list[str]:
        """Topological order of the given resources by their references and DependsOn."""
        todo = list(logicals)
        wanted = set(todo)
        deps = {}
        for lg in todo:
            res = self.resources[lg]
            d = self.references(res.get("Properties") or {})
            dep_on = res.get("DependsOn") or []
            d |= set([dep_on] if isinstance(dep_on, str) else dep_on)
            deps[lg] = (d & wanted) - {lg}
        order: list[str] = []
        while todo:
            ready = [lg for lg in todo if deps[lg] <= set(order)]
            if not ready:
                raise TemplateError(f"circular dependency among {todo}")
            for lg in ready:
                order.append(lg)
                todo.remove(lg)
        return order


def cfn_str_or_list(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(cfn_str(v) for v in value)
    return cfn_str(value)


def merge_globals(glob: dict, props: dict) -> dict:
    """SAM Globals merge: maps merge (resource wins), lists append, scalars: resource wins."""
    out = copy.deepcopy(glob)
    for k, v in props.items():
        if k in out and isinstance(out[k], dict) and isinstance(v, dict) and _intrinsic(v) is None:
            out[k] = merge_globals(out[k], v)
        elif k in out and isinstance(out[k], list) and isinstance(v, list):
            out[k] = out[k] + v
        else:
            out[k] = copy.deepcopy(v)
    return out


DEFINITION_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_.:-]+)\}")


def substitute_definition(text: str, subs: dict[str, str], source: str = "definition") -> str:
    """DefinitionSubstitutions: textual ${Key} replacement, as CloudFormation does."""
    missing = set()

    def repl(m: re.Match) -> str:
        key = m.group(1)
        if key in subs:
            return subs[key]
        missing.add(key)
        return m.group(0)

    out = DEFINITION_PLACEHOLDER.sub(repl, text)
    if missing:
        raise TemplateError(f"{source}: placeholders without a DefinitionSubstitutions entry: {sorted(missing)}")
    return out


# ---------------------------------------------------------------------------
# Deploying
# ---------------------------------------------------------------------------


def _clients(endpoint: str, region: str):
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        region_name=region,
    )
    cfg = Config(retries={"max_attempts": 3, "mode": "standard"}, s3={"addressing_style": "path"})

    def client(name: str):
        return session.client(name, endpoint_url=endpoint, config=cfg)

    return client


def _code(e: Exception) -> str:
    return getattr(e, "response", {}).get("Error", {}).get("Code", "")


def _wait_table(ddb, name: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        t = ddb.describe_table(TableName=name)["Table"]
        busy = t["TableStatus"] != "ACTIVE" or any(
            g.get("IndexStatus", "ACTIVE") != "ACTIVE" for g in t.get("GlobalSecondaryIndexes", [])
        )
        if not busy:
            return t
        if time.monotonic() > deadline:
            raise DeployError(f"table {name} not ACTIVE after {timeout}s")
        time.sleep(0.5)


def _key_schema(ks: list) -> list:
    return [(k["AttributeName"], k["KeyType"]) for k in ks]


def _attr_types(defs: list) -> dict:
    return {d["AttributeName"]: d["AttributeType"] for d in defs}


def deploy_table(stack: Stack, logical: str, client, recreate: bool = False) -> str:
    ddb = client("dynamodb")
    req = stack.table_request(logical)
    name = req["TableName"]
    try:
        current = ddb.describe_table(TableName=name)["Table"]
    except Exception as e:  # noqa: BLE001
        if _code(e) != "ResourceNotFoundException":
            raise
        current = None
    action = "created"
    if current is not None and _key_schema(current["KeySchema"]) != _key_schema(req["KeySchema"]):
        if not recreate:
            raise DeployError(
                f"table {name} exists with key schema {_key_schema(current['KeySchema'])}, the template says "
                f"{_key_schema(req['KeySchema'])}; rerun with --recreate-changed-tables (drops its data)"
            )
        ddb.delete_table(TableName=name)
        ddb.get_waiter("table_not_exists").wait(TableName=name)
        current = None
        action = "recreated"
    if current is None:
        ddb.create_table(**req)
        _wait_table(ddb, name)
    else:
        action = _update_table(ddb, req, current, recreate)
    extras = stack.table_extras(logical)
    if extras["ttl_attribute"]:
        ttl = ddb.describe_time_to_live(TableName=name).get("TimeToLiveDescription", {})
        if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING") or ttl.get("AttributeName") != extras["ttl_attribute"]:
            ddb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": extras["ttl_attribute"]},
            )
    if extras["pitr"]:
        try:
            ddb.update_continuous_backups(
                TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
            )
        except Exception as e:  # noqa: BLE001 -- no functional meaning locally
            note(f"  {name}: point-in-time recovery not enabled locally ({_code(e) or e})")
    t = ddb.describe_table(TableName=name)["Table"]
    if t.get("LatestStreamArn"):
        stack.actual.setdefault(logical, {})["StreamArn"] = t["LatestStreamArn"]
    return action if current is not None else f"{action} table {name}"


def _update_table(ddb, req: dict, current: dict, recreate: bool) -> str:
    name = req["TableName"]
    changes = []
    want_billing = req["BillingMode"]
    have_billing = (current.get("BillingModeSummary") or {}).get("BillingMode", "PROVISIONED")
    if want_billing != have_billing:
        kw = {"TableName": name, "BillingMode": want_billing}
        if want_billing == "PROVISIONED":
            kw["ProvisionedThroughput"] = req["ProvisionedThroughput"]
        ddb.update_table(**kw)
        _wait_table(ddb, name)
        changes.append(f"billing {have_billing}->{want_billing}")
    want = {g["IndexName"]: g for g in req.get("GlobalSecondaryIndexes", [])}
    have = {g["IndexName"]: g for g in current.get("GlobalSecondaryIndexes", [])}
    for idx, g in list(have.items()):
        w = want.get(idx)
        if w is None or _key_schema(w["KeySchema"]) != _key_schema(g["KeySchema"]) or (
            w["Projection"].get("ProjectionType") != g.get("Projection", {}).get("ProjectionType")
        ) or sorted(w["Projection"].get("NonKeyAttributes", [])) != sorted(g.get("Projection", {}).get("NonKeyAttributes", [])):
            ddb.update_table(TableName=name, GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": idx}}])
            _wait_table(ddb, name)
            have.pop(idx)
            changes.append(f"dropped GSI {idx}")
    for idx, g in want.items():
        if idx in have:
            continue
        needed = {k["AttributeName"] for k in g["KeySchema"]}
        defs = [d for d in req["AttributeDefinitions"] if d["AttributeName"] in needed]
        ddb.update_table(
            TableName=name, AttributeDefinitions=defs, GlobalSecondaryIndexUpdates=[{"Create": g}]
        )
        _wait_table(ddb, name)
        changes.append(f"created GSI {idx}")
    want_types = _attr_types(req["AttributeDefinitions"])
    have_types = _attr_types(current["AttributeDefinitions"])
    clash = {k for k in want_types.keys() & have_types.keys() if want_types[k] != have_types[k]}
    if clash:
        raise DeployError(f"table {name}: attribute types differ for {sorted(clash)}; use --recreate-changed-tables")
    return f"updated table {name} ({', '.join(changes)})" if changes else f"exists: table {name} (unchanged)"


def deploy_topic(stack: Stack, logical: str, client) -> str:
    sns = client("sns")
    p = stack.props(logical)
    name = stack.get_att(logical, "TopicName")
    attrs = {}
    for key in ("DisplayName", "KmsMasterKeyId", "ContentBasedDeduplication", "FifoTopic", "SignatureVersion",
                "TracingConfig", "ArchivePolicy", "FifoThroughputScope"):
        if key in p:
            v = p[key]
            attrs[key] = json.dumps(v) if isinstance(v, (dict, list)) else cfn_str(v)
    kw: dict[str, Any] = {"Name": name}
    if attrs:
        kw["Attributes"] = attrs
    if p.get("Tags"):
        kw["Tags"] = [{"Key": cfn_str(t["Key"]), "Value": cfn_str(t["Value"])} for t in p["Tags"]]
    arn = sns.create_topic(**kw)["TopicArn"]
    stack.actual.setdefault(logical, {}).update({"Ref": arn, "TopicArn": arn})
    for sub in p.get("Subscription") or []:
        sns.subscribe(TopicArn=arn, Protocol=sub["Protocol"], Endpoint=cfn_str(sub["Endpoint"]))
    return f"topic {arn}"


def deploy_subscription(stack: Stack, logical: str, client) -> str:
    sns = client("sns")
    p = stack.props(logical)
    kw: dict[str, Any] = {"TopicArn": cfn_str(p["TopicArn"]), "Protocol": cfn_str(p["Protocol"]),
                          "Endpoint": cfn_str(p["Endpoint"]), "ReturnSubscriptionArn": True}
    attrs = {}
    for key in ("FilterPolicy", "FilterPolicyScope", "RawMessageDelivery", "RedrivePolicy"):
        if key in p:
            v = p[key]
            attrs[key] = json.dumps(v) if isinstance(v, (dict, list)) else cfn_str(v)
    if attrs:
        kw["Attributes"] = attrs
    arn = sns.subscribe(**kw)["SubscriptionArn"]
    stack.actual.setdefault(logical, {})["Ref"] = arn
    return f"subscription {kw['Protocol']}:{kw['Endpoint']} -> {kw['TopicArn']}"


SQS_ATTRIBUTES = (
    "DelaySeconds", "MaximumMessageSize", "MessageRetentionPeriod", "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout", "RedrivePolicy", "RedriveAllowPolicy", "FifoQueue", "ContentBasedDeduplication",
    "DeduplicationScope", "FifoThroughputLimit", "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
)


def deploy_queue(stack: Stack, logical: str, client) -> str:
    sqs = client("sqs")
    p = stack.props(logical)
    name = stack.get_att(logical, "QueueName")
    attrs = {}
    for key in SQS_ATTRIBUTES:
        if key in p:
            v = p[key]
            attrs[key] = json.dumps(v) if isinstance(v, (dict, list)) else cfn_str(v)
    try:
        url = sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
    except Exception as e:  # noqa: BLE001
        if "QueueAlreadyExists" not in _code(e) and "QueueNameExists" not in _code(e):
            raise
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        if attrs:
            sqs.set_queue_attributes(QueueUrl=url, Attributes={k: v for k, v in attrs.items() if k != "FifoQueue"})
    stack.actual.setdefault(logical, {}).update({"Ref": url, "QueueUrl": url})
    return f"queue {url}"


def deploy_bus(stack: Stack, logical: str, client) -> str:
    events = client("events")
    name = stack.ref(logical)
    try:
        events.create_event_bus(Name=name)
        return f"created event bus {name}"
    except Exception as e:  # noqa: BLE001
        if _code(e) != "ResourceAlreadyExistsException":
            raise
        return f"exists: event bus {name}"


def deploy_rule(stack: Stack, logical: str, client) -> str:
    events = client("events")
    p = stack.props(logical)
    name = stack.ref(logical)
    kw: dict[str, Any] = {"Name": name, "State": p.get("State", "ENABLED")}
    if "EventPattern" in p:
        ep = p["EventPattern"]
        kw["EventPattern"] = ep if isinstance(ep, str) else json.dumps(ep)
    for key in ("ScheduleExpression", "Description", "RoleArn"):
        if key in p:
            kw[key] = cfn_str(p[key])
    bus = p.get("EventBusName")
    if bus:
        kw["EventBusName"] = cfn_str(bus)
    events.put_rule(**kw)
    targets = p.get("Targets") or []
    if targets:
        tkw: dict[str, Any] = {"Rule": name, "Targets": targets}
        if bus:
            tkw["EventBusName"] = cfn_str(bus)
        events.put_targets(**tkw)
    return f"rule {name} ({len(targets)} target(s))"


def deploy_bucket(stack: Stack, logical: str, client) -> str:
    """The bucket, with the declared public access block, default encryption,
    versioning and EventBridge notifications (what the reconciliation trigger
    needs: moto sends Object Created events to the default bus)."""
    s3 = client("s3")
    name = stack.ref(logical)
    p = stack.props(logical)
    try:
        s3.create_bucket(Bucket=name)
        result = f"created bucket {name}"
    except Exception as e:  # noqa: BLE001
        if _code(e) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
        result = f"exists: bucket {name}"
    if "PublicAccessBlockConfiguration" in p:
        block = {k: as_bool(v) for k, v in p["PublicAccessBlockConfiguration"].items()}
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=block)
    if "BucketEncryption" in p:
        # CloudFormation's ServerSideEncryptionByDefault is the API's ApplyServerSideEncryptionByDefault.
        rules = [{("ApplyServerSideEncryptionByDefault" if k == "ServerSideEncryptionByDefault" else k): v
                  for k, v in rule.items()}
                 for rule in p["BucketEncryption"]["ServerSideEncryptionConfiguration"]]
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
    if "VersioningConfiguration" in p:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={
            "Status": cfn_str(p["VersioningConfiguration"]["Status"])})
    eventbridge = (p.get("NotificationConfiguration") or {}).get("EventBridgeConfiguration") or {}
    if as_bool(eventbridge.get("EventBridgeEnabled", False)):
        # (moto keeps it, though its GetBucketNotificationConfiguration does not show it.)
        s3.put_bucket_notification_configuration(
            Bucket=name, NotificationConfiguration={"EventBridgeConfiguration": {}})
    return result


def deploy_ecs_cluster(stack: Stack, logical: str, client) -> str:
    """Registered in moto so that ARNs resolve; tasks are run by the gateway's
    local ECS substitute (localstack/gateway.py), not by moto."""
    ecs = client("ecs")
    name = stack.ref(logical)
    ecs.create_cluster(clusterName=name)
    return f"cluster {name}"


def deploy_task_definition(stack: Stack, logical: str, client) -> str:
    ecs = client("ecs")
    p = stack.props(logical)
    family = cfn_str(p.get("Family") or stack.default_name(logical))
    containers = [{
        "name": cfn_str(c["Name"]),
        "image": cfn_str(c["Image"]),
        "essential": as_bool(c.get("Essential", True)),
        "environment": [{"name": cfn_str(e["Name"]), "value": cfn_str(e["Value"])}
                        for e in c.get("Environment") or []],
    } for c in p["ContainerDefinitions"]]
    kw: dict[str, Any] = {}
    for key, api in (("TaskRoleArn", "taskRoleArn"), ("ExecutionRoleArn", "executionRoleArn")):
        if p.get(key):
            kw[api] = cfn_str(p[key])
    arn = ecs.register_task_definition(
        family=family, containerDefinitions=containers, networkMode=cfn_str(p.get("NetworkMode", "awsvpc")),
        requiresCompatibilities=[cfn_str(x) for x in p.get("RequiresCompatibilities") or []],
        cpu=cfn_str(p.get("Cpu", "256")), memory=cfn_str(p.get("Memory", "512")), **kw,
    )["taskDefinition"]["taskDefinitionArn"]
    stack.actual.setdefault(logical, {}).update({"Ref": arn, "TaskDefinitionArn": arn})
    # What the gateway's local ECS substitute runs for this task definition.
    binaries = (stack.resources[logical].get("Metadata") or {}).get("LocalBinaries") or {}
    log_options = {cfn_str(c["Name"]): {k: cfn_str(v) for k, v in
                                        ((c.get("LogConfiguration") or {}).get("Options") or {}).items()}
                   for c in p["ContainerDefinitions"]}
    stack.ecs_tasks[arn] = {
        "family": family, "account": stack.account_id,
        "task_role_arn": kw.get("taskRoleArn"), "execution_role_arn": kw.get("executionRoleArn"),
        "memory_mb": as_int(p.get("Memory", 512)),
        "containers": {
            c["name"]: {"binary": binaries.get(c["name"], c["name"]), "image": c["image"],
                        "log_options": log_options.get(c["name"]) or {},
                        "environment": {e["name"]: e["value"] for e in c["environment"]}}
            for c in containers}}
    return f"task definition {arn}"


def put_role(client, definition: dict) -> str:
    """Creates or updates a role and makes its inline policies exactly the
    declared ones (the local stack's IAM check reads them from there)."""
    iam = client("iam")
    name = definition["name"]
    trust = json.dumps(definition["trust"])
    try:
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust, MaxSessionDuration=43200)
        result = f"role {name}"
    except Exception as e:  # noqa: BLE001
        if _code(e) != "EntityAlreadyExists":
            raise
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=trust)
        result = f"updated role {name}"
    declared = definition["policies"]
    for pname in iam.list_role_policies(RoleName=name)["PolicyNames"]:
        if pname not in declared:
            iam.delete_role_policy(RoleName=name, PolicyName=pname)
    for pname, doc in declared.items():
        iam.put_role_policy(RoleName=name, PolicyName=pname, PolicyDocument=json.dumps(doc))
    return f"{result} ({len(declared)} inline polic{'y' if len(declared) == 1 else 'ies'})"


def deploy_role(stack: Stack, logical: str, client) -> str:
    return put_role(client, stack.role_definition(logical))


def deploy_function(stack: Stack, logical: str, client) -> str:
    """A function is not created in moto (nothing there runs it): its role is
    made, and functions.json tells the local Lambda host how to run it."""
    role = stack.role_definition(logical)
    made = put_role(client, role) if role else f"role {stack.role_arn_of(logical)} (its own)"
    spec = stack.function_spec(logical)
    stack.functions[spec["binary"]] = spec
    return f"function {spec['binary']} ({spec['timeout_s']} s, {spec['memory_mb']} MB); {made}"


def deploy_ecr_repository(stack: Stack, logical: str, client) -> str:
    ecr = client("ecr")
    name = stack.ref(logical)
    try:
        ecr.create_repository(repositoryName=name)
        return f"repository {name}"
    except Exception as e:  # noqa: BLE001
        if _code(e) != "RepositoryAlreadyExistsException":
            raise
        return f"exists: repository {name}"


def deploy_state_machine(stack: Stack, logical: str, client) -> str:
    sfn = client("stepfunctions")
    name = stack.state_machine_name(logical)
    definition = json.dumps(stack.state_machine_definition(logical), indent=2)
    arn = stack.get_att(logical, "Arn")
    role_def = stack.role_definition(logical)
    if role_def:
        put_role(client, role_def)
    role = stack.role_arn_of(logical)
    try:
        current = sfn.describe_state_machine(stateMachineArn=arn)
    except Exception as e:  # noqa: BLE001
        if _code(e) not in ("StateMachineDoesNotExist", "ResourceNotFoundException"):
            raise
        current = None
    if current is None:
        arn = sfn.create_state_machine(
            name=name, definition=definition, roleArn=role, type=stack.state_machine_type(logical)
        )["stateMachineArn"]
        result = f"created state machine {arn}"
    elif json.loads(current["definition"]) != json.loads(definition):
        sfn.update_state_machine(stateMachineArn=arn, definition=definition, roleArn=role)
        result = f"updated state machine {arn}"
    else:
        result = f"exists: state machine {arn} (definition unchanged)"
    stack.actual.setdefault(logical, {}).update({"Ref": arn, "Arn": arn})
    events = (stack.resources[logical].get("Properties") or {}).get("Events") or {}
    for ev_name, ev in events.items():
        note(f"  skip {logical}.Events.{ev_name} ({(ev or {}).get('Type')}): no local trigger")
    return result


def deploy_kms_key(stack: Stack, logical: str, client) -> str:
    """A key per (stack, logical id), found again through its alias."""
    kms = client("kms")
    p = stack.props(logical)
    alias = f"alias/{stack.stack_name}-{logical}"
    try:
        meta = kms.describe_key(KeyId=alias)["KeyMetadata"]
        result = f"exists: key {meta['KeyId']} ({alias})"
    except Exception as e:  # noqa: BLE001
        if _code(e) != "NotFoundException":
            raise
        kw: dict[str, Any] = {"Description": cfn_str(p.get("Description") or logical)}
        if p.get("KeyPolicy"):
            kw["Policy"] = json.dumps(p["KeyPolicy"])
        meta = kms.create_key(**kw)["KeyMetadata"]
        kms.create_alias(AliasName=alias, TargetKeyId=meta["KeyId"])
        if as_bool(p.get("EnableKeyRotation", False)):
            kms.enable_key_rotation(KeyId=meta["KeyId"])
        result = f"key {meta['KeyId']} ({alias})"
    stack.actual.setdefault(logical, {}).update({"Ref": meta["KeyId"], "KeyId": meta["KeyId"], "Arn": meta["Arn"]})
    return result


HANDLERS: dict[str, Callable[..., str]] = {
    "AWS::IAM::Role": deploy_role,
    "AWS::Serverless::Function": deploy_function,
    "AWS::ECR::Repository": deploy_ecr_repository,
    "AWS::KMS::Key": deploy_kms_key,
    "AWS::DynamoDB::Table": deploy_table,
    "AWS::SNS::Topic": deploy_topic,
    "AWS::SNS::Subscription": deploy_subscription,
    "AWS::SQS::Queue": deploy_queue,
    "AWS::Events::EventBus": deploy_bus,
    "AWS::Events::Rule": deploy_rule,
    "AWS::S3::Bucket": deploy_bucket,
    "AWS::ECS::Cluster": deploy_ecs_cluster,
    "AWS::ECS::TaskDefinition": deploy_task_definition,
    "AWS::Serverless::StateMachine": deploy_state_machine,
    "AWS::StepFunctions::StateMachine": deploy_state_machine,
}


def _http(method: str, url: str, body: Optional[bytes] = None, timeout: float = 5) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 -- local endpoint
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def endpoint_kind(endpoint: str) -> str:
    """'localstack', 'moto' or 'unknown'."""
    base = endpoint.rstrip("/")
    try:
        status, body = _http("GET", f"{base}/_localstack/health")
        if status == 200 and b"services" in body:
            return "localstack"
        status, body = _http("GET", f"{base}/moto-api/config")
        if status in (200, 201) and b"lambda" in body:
            return "moto"
    except (OSError, urllib.error.URLError):
        pass
    return "unknown"


def configure_moto(endpoint: str) -> bool:
    """POST the Step Functions/Lambda config moto needs; no-op elsewhere."""
    kind = endpoint_kind(endpoint)
    if kind != "moto":
        return False
    status, body = _http("POST", f"{endpoint.rstrip('/')}/moto-api/config", json.dumps(MOTO_CONFIG).encode())
    if status not in (200, 201):
        raise DeployError(f"moto refused /moto-api/config: {status} {body[:200]!r}")
    return True


def write_outputs(stack: Stack, out_dir: Path, stack_json: Optional[Path],
                  env_overrides: dict[str, str]) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    sj = stack_json or out_dir / "stack.json"
    sj.parent.mkdir(parents=True, exist_ok=True)
    sj.write_text(json.dumps(stack.outputs(), indent=2) + "\n", encoding="utf-8")
    stack.lambda_env()  # design.md: one name, one value across functions (raises otherwise)
    functions = {}
    for name, spec in stack.functions.items():
        env = dict(spec["environment"])
        for k, v in env_overrides.items():
            if k in env:  # --env overrides what a function declares, nothing else
                env[k] = v
        functions[name] = dict(spec, environment=env)
    fj = out_dir / "functions.json"
    tmp = fj.with_suffix(".tmp")
    tmp.write_text(json.dumps(functions, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, fj)  # the Lambda host re-reads it when it changes: never half-written
    (out_dir / "ecs-tasks.json").write_text(json.dumps(stack.ecs_tasks, indent=2) + "\n", encoding="utf-8")
    (out_dir / "event-sources.json").write_text(json.dumps(stack.sqs_event_sources(), indent=2) + "\n",
                                                encoding="utf-8")
    return sj, fj


def deploy(
    endpoint: str = DEFAULT_ENDPOINT,
    template_path: str | os.PathLike = DEFAULT_TEMPLATE,
    stack_name: str = "tally",
    parameter_overrides: Optional[dict[str, str]] = None,
    env_overrides: Optional[dict[str, str]] = None,
    out_dir: str | os.PathLike = DEFAULT_OUT_DIR,
    stack_json: Optional[str | os.PathLike] = None,
    recreate_changed_tables: bool = False,
    strict: bool = False,
    region: str = REGION,
    account_id: str = ACCOUNT_ID,
) -> Stack:
    template_path = Path(template_path)
    stack = Stack(load_template(template_path), template_path, stack_name, parameter_overrides,
                  region=region, account_id=account_id, endpoint=endpoint.rstrip("/"))
    client = _clients(endpoint, region)
    # moto quirk: with stepfunctions.execute_state_machine on, moto serves Step
    # Functions from a second backend; state machines created before the switch
    # are invisible after it. So configure first, then create.
    if configure_moto(endpoint):
        note("moto configured: stepfunctions.execute_state_machine=true, lambda.use_docker=false")
    try:
        who = client("sts").get_caller_identity()["Account"]
        if who != account_id:
            note(f"WARNING: the endpoint's account is {who}, ARNs are built for {account_id} "
                 f"(LocalStack: use AWS_ACCESS_KEY_ID={account_id})")
    except Exception as e:  # noqa: BLE001
        note(f"(sts get-caller-identity failed: {_code(e) or e})")

    deployable, skipped = [], []
    for logical, res in stack.resources.items():
        rtype = res.get("Type", "")
        if not stack.enabled(logical):
            note(f"skip {logical} ({rtype}): Condition {res.get('Condition')} is false")
        elif rtype in HANDLERS:
            deployable.append(logical)
        elif rtype in SKIPPED_TYPES or rtype.startswith(SKIPPED_PREFIXES):
            why = SKIPPED_TYPES.get(rtype, "no IAM locally")
            if "{binary}" in why:
                why = why.format(binary=stack.function_binary(logical))
            skipped.append(f"skip {logical} ({rtype}): {why}")
        else:
            msg = f"no local deploy for {logical} ({rtype})"
            if strict:
                raise DeployError(msg)
            skipped.append(f"WARNING: {msg} -- skipped")
    for line in skipped:
        note(line)
    for logical in stack.deploy_order(deployable):
        rtype = stack.resources[logical]["Type"]
        handler = HANDLERS[rtype]
        if handler is deploy_table:
            result = handler(stack, logical, client, recreate=recreate_changed_tables)
        else:
            result = handler(stack, logical, client)
        note(f"{logical}: {result}")
    sj, fj = write_outputs(stack, Path(out_dir), Path(stack_json) if stack_json else None, env_overrides or {})
    note(f"wrote {sj} and {fj}")
    return stack


def parse_kv(items: Iterable[str], what: str) -> dict[str, str]:
    """K=V pairs; also sam's ParameterKey=K,ParameterValue=V form."""
    out = {}
    for item in items:
        m = re.fullmatch(r"ParameterKey=([^,]+),ParameterValue=(.*)", item)
        if m:
            out[m.group(1)] = m.group(2)
            continue
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise SystemExit(f"{what}: expected KEY=VALUE, got {item!r}")
        out[k] = v
    return out


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Deploy Tally's template into a local AWS endpoint.")
    p.add_argument("--endpoint", default=os.environ.get("TALLY_ENDPOINT", DEFAULT_ENDPOINT))
    p.add_argument("--template", default=str(DEFAULT_TEMPLATE))
    p.add_argument("--stack-name", default="tally")
    p.add_argument("--parameter-overrides", nargs="*", action="extend", default=[], metavar="K=V")
    p.add_argument("--env", nargs="*", action="extend", default=[], metavar="K=V",
                   help="override an environment variable of every function that declares it")
    p.add_argument("--out-dir", default=str(DEFAULT_OUT_DIR), help="where stack.json and functions.json go")
    p.add_argument("--stack-json", help="path of stack.json (default <out-dir>/stack.json)")
    p.add_argument("--recreate-changed-tables", action="store_true",
                   help="drop and recreate a table whose key schema changed (loses its items)")
    p.add_argument("--strict", action="store_true", help="fail on resource types with no local handler")
    p.add_argument("--dry-run", action="store_true",
                   help="resolve the template and print outputs/env/definitions without calling the endpoint")
    return p


def main(argv=None) -> int:
    args = build_arg_parser().parse_args(argv)
    overrides = parse_kv(args.parameter_overrides, "--parameter-overrides")
    env = parse_kv(args.env, "--env")
    try:
        if args.dry_run:
            stack = Stack(load_template(args.template), args.template, args.stack_name, overrides,
                          endpoint=args.endpoint)
            print(json.dumps({
                "outputs": stack.outputs(),
                "functions": {stack.function_binary(lg): stack.function_spec(lg)
                              for lg in stack.resources_of("AWS::Serverless::Function")},
                "tables": {lg: stack.table_request(lg) for lg in stack.resources_of("AWS::DynamoDB::Table")},
                "state_machines": {
                    lg: stack.state_machine_definition(lg)
                    for lg in stack.resources_of("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine")
                },
            }, indent=2))
            return 0
        deploy(args.endpoint, args.template, args.stack_name, overrides, env, args.out_dir,
               args.stack_json, args.recreate_changed_tables, args.strict)
    except (TemplateError, DeployError) as e:
        print(f"deploy failed: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
