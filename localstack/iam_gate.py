"""IAM at the local gateway: who signed a request, what it asks to do to
which resource, and whether the signer's role allows it.

moto can enforce IAM itself (`INITIAL_NO_AUTH_ACTION_COUNT`), but for most
services it checks every action against the resource `*` (DynamoDB, SNS,
Step Functions, EventBridge, ECS, Kinesis, Scheduler), names Lambda's invoke
`lambda:Invoke`, cannot verify bodyless rest-json calls, and its Step
Functions engine signs with fixed keys. A role that grants `PutItem` on one
table would pass for every table. So the gateway judges each request itself,
with the **resource** AWS would judge it on, and uses moto only for what it
does well here: holding the roles and their policies (IAM), issuing
credentials (STS), and evaluating a policy document against an action and a
resource ARN (`moto.iam.access_control.IAMPolicy`, the maintained evaluator
this stack already runs).

Who: a request is signed with an access key (the `Credential=` of its SigV4
`Authorization` header, or `X-Amz-Credential` of a presigned URL). A key that
`sts:AssumeRole` issued through this gateway (the gateway reads every
AssumeRole answer it relays) belongs to that role's session; its session
token must match. Any other key is the operator, an administrator, so the CLI
and tools work with `AWS_ACCESS_KEY_ID=test` as before. An unknown key of the
temporary kind (`ASIA…`) is refused, as AWS refuses an unknown key.

What: `requested()` turns a request into the (action, resource ARN) pairs AWS
evaluates, service by service: DynamoDB table and index ARNs (and each item
of a transaction or batch on its own table, with its own action), S3 bucket
and key, SQS queue, SNS topic (a publish to a KMS-encrypted topic also needs
`kms:GenerateDataKey` and `kms:Decrypt` on its key, as AWS checks), the
EventBridge bus of each entry, Step Functions state machine or execution,
Lambda function, ECS task definition or task, Kinesis stream, Scheduler
schedule, the role of `sts:AssumeRole`.

Whether: every pair must be allowed by the role's identity policies (inline
and attached, as moto holds them) and denied by none. A refusal has the
shape AWS gives for that protocol: `AccessDeniedException` (JSON
protocols, Lambda), `AccessDenied` (S3, STS), `AuthorizationError` (SNS).

Not covered, on purpose (README, "What the local IAM check covers"):
condition keys (a statement with a `Condition` never allows here, and a
conditional Deny always applies: fail closed), resource policies (bucket,
queue, topic, key policies), KMS key policies and grants, SCPs, permission
boundaries, session policies, and SigV4 signature verification (the key and
its session token are checked, not the signature).
"""
from __future__ import annotations

import functools
import json
import os
import re
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

ACCOUNT = "123456789012"

CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")

# Signing name -> IAM action prefix, where they differ.
ACTION_PREFIX = {"monitoring": "cloudwatch", "execute-api": "execute-api"}


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


class Unknown(Exception):
    """The request is not one this gateway can judge."""


@dataclass(frozen=True)
class AssumedKey:
    access_key_id: str
    secret_access_key: str
    session_token: str
    role_arn: str
    session_arn: str
    expires_epoch: float


class KeyRegistry:
    """Keys issued by sts:AssumeRole through the gateway, persisted so a
    gateway restart does not turn running functions' keys into strangers."""

    def __init__(self, path: Optional[Path]):
        self.path = path
        self.lock = threading.Lock()
        self.keys: dict[str, AssumedKey] = {}
        if path is not None and path.exists():
            try:
                for k in json.loads(path.read_text(encoding="utf-8")):
                    self.keys[k["access_key_id"]] = AssumedKey(**k)
            except (OSError, ValueError, TypeError, KeyError):
                self.keys = {}

    def lookup(self, access_key_id: str) -> Optional[AssumedKey]:
        return self.keys.get(access_key_id)

    def add(self, key: AssumedKey) -> None:
        with self.lock:
            now = time.time()
            self.keys = {k: v for k, v in self.keys.items() if v.expires_epoch > now}
            self.keys[key.access_key_id] = key
            if self.path is not None:
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps([vars(v) for v in self.keys.values()]), encoding="utf-8")
                os.replace(tmp, self.path)

    def observe_assume_role(self, form: dict[str, list[str]], answer: bytes) -> Optional[AssumedKey]:
        """Records the key an AssumeRole answer carries (XML, STS's query protocol)."""
        try:
            root = ET.fromstring(answer)
        except ET.ParseError:
            return None

        def find(name: str) -> str:
            for el in root.iter():
                if el.tag.rsplit("}", 1)[-1] == name and el.text:
                    return el.text.strip()
            return ""

        key_id = find("AccessKeyId")
        if not key_id:
            return None
        expiration = find("Expiration")
        try:
            from datetime import datetime

            expires = datetime.fromisoformat(expiration.replace("Z", "+00:00")).timestamp()
        except ValueError:
            expires = time.time() + 3600
        key = AssumedKey(key_id, find("SecretAccessKey"), find("SessionToken"),
                         (form.get("RoleArn") or [""])[0], find("Arn"), expires)
        self.add(key)
        return key


class Policies:
    """A role's identity policy documents, read from moto's IAM (the deployed
    roles), cached briefly and dropped whenever an IAM change passes the gateway."""

    TTL_SECONDS = 10.0

    def __init__(self, iam_client: Callable[[], object]):
        self.iam_client = iam_client
        self.lock = threading.Lock()
        self.cache: dict[str, tuple[float, tuple[str, ...]]] = {}
        self.generation = 0

    def invalidate(self) -> None:
        with self.lock:
            self.cache.clear()
            self.generation += 1

    def documents(self, role_arn: str) -> tuple[str, ...]:
        now = time.monotonic()
        with self.lock:
            hit = self.cache.get(role_arn)
            if hit and now - hit[0] < self.TTL_SECONDS:
                return hit[1]
        name = role_arn.rsplit("/", 1)[-1]
        iam = self.iam_client()
        docs: list[str] = []
        try:
            for pname in iam.list_role_policies(RoleName=name)["PolicyNames"]:
                doc = iam.get_role_policy(RoleName=name, PolicyName=pname)["PolicyDocument"]
                docs.append(doc if isinstance(doc, str) else json.dumps(doc))
            for att in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
                pol = iam.get_policy(PolicyArn=att["PolicyArn"])["Policy"]
                ver = iam.get_policy_version(PolicyArn=att["PolicyArn"], VersionId=pol["DefaultVersionId"])
                doc = ver["PolicyVersion"]["Document"]
                docs.append(doc if isinstance(doc, str) else json.dumps(doc))
        except Exception as e:  # noqa: BLE001 -- a role that is gone has no grants
            if "NoSuchEntity" not in repr(e):
                raise
        out = tuple(docs)
        with self.lock:
            self.cache[role_arn] = (now, out)
        return out


def _statements(doc: dict) -> list[dict]:
    st = doc.get("Statement") or []
    return [st] if isinstance(st, dict) else list(st)


@functools.lru_cache(maxsize=4096)
def _compiled(doc_text: str):
    """moto's evaluator for a document, with conditional statements handled
    fail-closed: a conditional Allow is dropped, a conditional Deny kept
    without its condition."""
    from moto.iam.access_control import IAMPolicy

    doc = json.loads(doc_text)
    statements = []
    for s in _statements(doc):
        if "Condition" in s:
            if s.get("Effect") == "Allow":
                continue
            s = {k: v for k, v in s.items() if k != "Condition"}
        statements.append(s)
    return IAMPolicy(json.dumps({"Version": doc.get("Version", "2012-10-17"), "Statement": statements}))


def evaluate(documents: tuple[str, ...], action: str, resource: str) -> bool:
    """Allowed by at least one statement and denied by none (AWS's identity-policy rule)."""
    from moto.iam.access_control import PermissionResult

    allowed = False
    for d in documents:
        r = _compiled(d).is_action_permitted(action, resource)
        if r == PermissionResult.DENIED:
            return False
        allowed = allowed or r == PermissionResult.PERMITTED
    return allowed


# ---------------------------------------------------------------------------
# The request
# ---------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str  # without the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes

    @staticmethod
    def of(method: str, raw_path: str, headers, body: bytes) -> "Request":
        parts = urllib.parse.urlsplit(raw_path)
        return Request(method, parts.path, urllib.parse.parse_qs(parts.query, keep_blank_values=True),
                       {k.lower(): v for k, v in headers.items()}, body)

    def signer(self) -> Optional[tuple[str, str, str]]:
        """(access key id, region, signing service) from the signature."""
        m = CREDENTIAL.search(self.headers.get("authorization", ""))
        if m:
            return m.group(1), m.group(2), m.group(3)
        cred = (self.query.get("X-Amz-Credential") or [""])[0]
        parts = cred.split("/")
        if len(parts) == 5:
            return parts[0], parts[2], parts[3]
        return None

    def session_token(self) -> str:
        return self.headers.get("x-amz-security-token") or (self.query.get("X-Amz-Security-Token") or [""])[0]

    def target(self) -> str:
        return self.headers.get("x-amz-target", "")

    def form(self) -> dict[str, list[str]]:
        ctype = self.headers.get("content-type", "")
        if self.method == "POST" and "x-www-form-urlencoded" in ctype:
            return urllib.parse.parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)
        return self.query

    def json(self) -> dict:
        try:
            doc = json.loads(self.body or b"{}")
        except ValueError:
            raise Unknown("the body is not JSON") from None
        if not isinstance(doc, dict):
            raise Unknown("the body is not a JSON object")
        return doc


def _one(form: dict[str, list[str]], key: str, default: str = "") -> str:
    return (form.get(key) or [default])[0]


class Resources:
    """ARNs of this stack's account and region."""

    def __init__(self, region: str, account: str = ACCOUNT):
        self.region, self.account = region, account

    def arn(self, service: str, rest: str, region: bool = True) -> str:
        return f"arn:aws:{service}:{self.region if region else ''}:{self.account}:{rest}"

    def table(self, name: str) -> str:
        return name if name.startswith("arn:") else self.arn("dynamodb", f"table/{name}")

    def queue(self, url_or_name: str) -> str:
        if url_or_name.startswith("arn:"):
            return url_or_name
        path = urllib.parse.urlsplit(url_or_name).path.strip("/").split("/") if "://" in url_or_name \
            else [self.account, url_or_name]
        account, name = (path[-2], path[-1]) if len(path) >= 2 else (self.account, path[-1])
        return f"arn:aws:sqs:{self.region}:{account}:{name}"

    def bus(self, name: str) -> str:
        return name if name.startswith("arn:") else self.arn("events", f"event-bus/{name or 'default'}")

    def function(self, name: str) -> str:
        return self.arn("lambda", f"function:{function_name_from(name)}")

    def stream(self, name: str) -> str:
        return name if name.startswith("arn:") else self.arn("kinesis", f"stream/{name}")


def requested(req: Request, service: str, res: Resources,
              topic_key: Callable[[str], Optional[str]] = lambda _t: None) -> list[tuple[str, str]]:
    """The (action, resource ARN) pairs the request asks for."""
    prefix = ACTION_PREFIX.get(service, service)
    if service == "s3":
        return _s3(req, res)
    if service == "lambda":
        return _lambda(req, res)
    if service == "scheduler":
        return _scheduler(req, res)
    target = req.target()
    if target:
        op = target.rsplit(".", 1)[-1]
        body = req.json()
        handler = JSON_SERVICES.get(service)
        if handler is None:
            return [(f"{prefix}:{op}", "*")]
        return handler(op, body, res)
    form = req.form()
    op = _one(form, "Action")
    if not op:
        raise Unknown(f"{service}: no X-Amz-Target and no Action")
    handler = QUERY_SERVICES.get(service)
    if handler is None:
        return [(f"{prefix}:{op}", "*")]
    return handler(op, form, res, topic_key)


# ---- DynamoDB -------------------------------------------------------------

TRANSACT_ACTIONS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                    "ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}


def _dynamodb(op: str, body: dict, res: Resources) -> list[tuple[str, str]]:
    if op in ("BatchWriteItem", "BatchGetItem"):
        return [(f"dynamodb:{op}", res.table(t)) for t in body.get("RequestItems") or {}]
    if op in ("TransactWriteItems", "TransactGetItems"):
        out = []
        for item in body.get("TransactItems") or []:
            for kind, spec in item.items():
                action = TRANSACT_ACTIONS.get(kind)
                if action is None:
                    raise Unknown(f"dynamodb:{op}: item kind {kind}")
                out.append((f"dynamodb:{action}", res.table(spec.get("TableName", ""))))
        return out
    if op in ("ListTables", "DescribeLimits", "DescribeEndpoints"):
        return [(f"dynamodb:{op}", "*")]
    if "TableName" in body:
        arn = res.table(body["TableName"])
        if op in ("Query", "Scan") and body.get("IndexName"):
            arn = f"{arn}/index/{body['IndexName']}"
        return [(f"dynamodb:{op}", arn)]
    if "ResourceArn" in body:
        return [(f"dynamodb:{op}", body["ResourceArn"])]
    return [(f"dynamodb:{op}", "*")]


# ---- SQS, EventBridge, Step Functions, ECS, Kinesis (JSON) ------------------


def _sqs_json(op: str, body: dict, res: Resources) -> list[tuple[str, str]]:
    if op == "ListQueues":
        return [("sqs:ListQueues", "*")]
    name = body.get("QueueUrl") or body.get("QueueName") or ""
    return [(f"sqs:{op}", res.queue(name) if name else "*")]


def _events(op: str, body: dict, res: Resources) -> list[tuple[str, str]]:
    if op == "PutEvents":
        buses = {e.get("EventBusName") or "default" for e in body.get("Entries") or []} or {"default"}
        return [("events:PutEvents", res.bus(b)) for b in sorted(buses)]
    if op in ("PutRule", "PutTargets", "RemoveTargets", "DescribeRule", "DeleteRule", "EnableRule",
              "DisableRule", "ListTargetsByRule"):
        name = body.get("Name") or body.get("Rule") or ""
        bus = body.get("EventBusName") or "default"
        bus_part = "" if bus == "default" else f"{bus.rsplit('/', 1)[-1]}/"
        return [(f"events:{op}", res.arn("events", f"rule/{bus_part}{name}"))]
    if op in ("CreateEventBus", "DeleteEventBus", "DescribeEventBus"):
        return [(f"events:{op}", res.bus(body.get("Name") or "default"))]
    return [(f"events:{op}", "*")]


def _states(op: str, body: dict, res: Resources) -> list[tuple[str, str]]:
    for key in ("executionArn", "stateMachineArn", "mapRunArn", "activityArn"):
        if body.get(key):
            return [(f"states:{op}", body[key])]
    if op == "CreateStateMachine" and body.get("name"):
        return [("states:CreateStateMachine", res.arn("states", f"stateMachine:{body['name']}"))]
    return [(f"states:{op}", "*")]


def _ecs_task_definition(res: Resources, td: str) -> str:
    return td if td.startswith("arn:") else res.arn("ecs", f"task-definition/{td}")


def _ecs(op: str, body: dict, res: Resources) -> list[tuple[str, str]]:
    if op in ("RunTask", "StartTask", "DescribeTaskDefinition", "DeregisterTaskDefinition"):
        return [(f"ecs:{op}", _ecs_task_definition(res, body.get("taskDefinition", "")))]
    if op in ("DescribeTasks", "StopTask"):
        cluster = (body.get("cluster") or "default").rsplit("/", 1)[-1]
        tasks = body.get("tasks") or ([body["task"]] if body.get("task") else [])
        return [(f"ecs:{op}", t if t.startswith("arn:") else res.arn("ecs", f"task/{cluster}/{t}"))
                for t in tasks] or [(f"ecs:{op}", "*")]
    if body.get("cluster"):
        c = body["cluster"]
        return [(f"ecs:{op}", c if c.startswith("arn:") else res.arn("ecs", f"cluster/{c}"))]
    return [(f"ecs:{op}", "*")]


def _kinesis(op: str, body: dict, res: Resources) -> list[tuple[str, str]]:
    if body.get("StreamARN"):
        return [(f"kinesis:{op}", body["StreamARN"])]
    if body.get("StreamName"):
        return [(f"kinesis:{op}", res.stream(body["StreamName"]))]
    if body.get("ConsumerARN"):
        return [(f"kinesis:{op}", body["ConsumerARN"])]
    return [(f"kinesis:{op}", "*")]


JSON_SERVICES: dict[str, Callable[[str, dict, Resources], list[tuple[str, str]]]] = {
    "dynamodb": _dynamodb,
    "sqs": _sqs_json,
    "events": _events,
    "states": _states,
    "ecs": _ecs,
    "kinesis": _kinesis,
}


# ---- SNS, SQS, STS (query) ----------------------------------------------------


def _sns(op: str, form, res: Resources, topic_key) -> list[tuple[str, str]]:
    if op in ("ListTopics", "ListSubscriptions", "CreatePlatformApplication"):
        return [(f"sns:{op}", "*")]
    if op == "CreateTopic":
        return [("sns:CreateTopic", res.arn("sns", _one(form, "Name")))]
    topic = _one(form, "TopicArn") or _one(form, "TargetArn") or _one(form, "ResourceArn")
    if not topic and _one(form, "SubscriptionArn"):
        topic = _one(form, "SubscriptionArn").rsplit(":", 1)[0]
    out = [(f"sns:{op}", topic or "*")]
    if op == "Publish" and topic:
        key = topic_key(topic)
        if key:
            out += [("kms:GenerateDataKey", key), ("kms:Decrypt", key)]
    return out


def _sqs_query(op: str, form, res: Resources, _topic_key) -> list[tuple[str, str]]:
    if op == "ListQueues":
        return [("sqs:ListQueues", "*")]
    name = _one(form, "QueueUrl") or _one(form, "QueueName")
    return [(f"sqs:{op}", res.queue(name) if name else "*")]


def _sts(op: str, form, res: Resources, _topic_key) -> list[tuple[str, str]]:
    if op == "AssumeRole":
        return [("sts:AssumeRole", _one(form, "RoleArn"))]
    return [(f"sts:{op}", "*")]


QUERY_SERVICES = {"sns": _sns, "sqs": _sqs_query, "sts": _sts}


# ---- S3 (REST) --------------------------------------------------------------

S3_BUCKET_GET = {"versions": "ListBucketVersions", "uploads": "ListBucketMultipartUploads",
                 "location": "GetBucketLocation", "policy": "GetBucketPolicy", "versioning": "GetBucketVersioning",
                 "notification": "GetBucketNotification", "encryption": "GetEncryptionConfiguration",
                 "publicAccessBlock": "GetBucketPublicAccessBlock", "lifecycle": "GetLifecycleConfiguration",
                 "tagging": "GetBucketTagging", "acl": "GetBucketAcl", "ownershipControls": "GetBucketOwnershipControls"}
S3_BUCKET_PUT = {"versioning": "PutBucketVersioning", "policy": "PutBucketPolicy",
                 "notification": "PutBucketNotification", "encryption": "PutEncryptionConfiguration",
                 "publicAccessBlock": "PutBucketPublicAccessBlock", "lifecycle": "PutLifecycleConfiguration",
                 "tagging": "PutBucketTagging", "acl": "PutBucketAcl", "ownershipControls": "PutBucketOwnershipControls"}


def _s3(req: Request, res: Resources) -> list[tuple[str, str]]:
    parts = req.path.lstrip("/").split("/", 1)
    bucket = urllib.parse.unquote(parts[0]) if parts and parts[0] else ""
    key = urllib.parse.unquote(parts[1]) if len(parts) > 1 and parts[1] else ""
    q = req.query
    m = req.method
    if not bucket:
        return [("s3:ListAllMyBuckets", "*")]
    if key:
        arn = f"arn:aws:s3:::{bucket}/{key}"
        if m in ("GET", "HEAD"):
            if "uploadId" in q:
                return [("s3:ListMultipartUploadParts", arn)]
            if "tagging" in q:
                return [("s3:GetObjectTagging", arn)]
            if "acl" in q:
                return [("s3:GetObjectAcl", arn)]
            return [("s3:GetObjectVersion" if "versionId" in q else "s3:GetObject", arn)]
        if m == "PUT":
            if "tagging" in q:
                return [("s3:PutObjectTagging", arn)]
            if "acl" in q:
                return [("s3:PutObjectAcl", arn)]
            out = [("s3:PutObject", arn)]
            source = req.headers.get("x-amz-copy-source")
            if source:
                src, _, version = urllib.parse.unquote(source).lstrip("/").partition("?versionId=")
                out.append(("s3:GetObjectVersion" if version else "s3:GetObject", f"arn:aws:s3:::{src}"))
            return out
        if m == "POST":
            if "restore" in q:
                return [("s3:RestoreObject", arn)]
            return [("s3:PutObject", arn)]  # multipart create / complete
        if m == "DELETE":
            if "uploadId" in q:
                return [("s3:AbortMultipartUpload", arn)]
            return [("s3:DeleteObjectVersion" if "versionId" in q else "s3:DeleteObject", arn)]
        raise Unknown(f"s3: {m} on an object")
    arn = f"arn:aws:s3:::{bucket}"
    if m in ("GET", "HEAD"):
        for k, action in S3_BUCKET_GET.items():
            if k in q:
                return [(f"s3:{action}", arn)]
        return [("s3:ListBucket", arn)]
    if m == "PUT":
        for k, action in S3_BUCKET_PUT.items():
            if k in q:
                return [(f"s3:{action}", arn)]
        return [("s3:CreateBucket", arn)]
    if m == "POST" and "delete" in q:
        try:
            root = ET.fromstring(req.body)
        except ET.ParseError:
            raise Unknown("s3: DeleteObjects body") from None
        keys = [el.text or "" for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Key"]
        return [("s3:DeleteObject", f"{arn}/{k}") for k in keys] or [("s3:DeleteObject", f"{arn}/*")]
    if m == "DELETE":
        return [("s3:DeleteBucketPolicy" if "policy" in q else "s3:DeleteBucket", arn)]
    raise Unknown(f"s3: {m} on a bucket")


# ---- Lambda, Scheduler (REST) --------------------------------------------------

LAMBDA_FUNCTION = re.compile(r"^/20\d\d-\d\d-\d\d/functions/([^/]+)(/.*)?$")


def _lambda(req: Request, res: Resources) -> list[tuple[str, str]]:
    m = LAMBDA_FUNCTION.match(req.path)
    if not m:
        return [("lambda:ListFunctions" if req.method == "GET" else "lambda:CreateFunction", "*")]
    arn = res.function(urllib.parse.unquote(m.group(1)))
    rest = m.group(2) or ""
    if rest.startswith("/invocations"):
        return [("lambda:InvokeFunction", arn)]
    if rest.startswith("/configuration"):
        return [("lambda:GetFunctionConfiguration" if req.method == "GET" else "lambda:UpdateFunctionConfiguration",
                 arn)]
    if rest.startswith("/code"):
        return [("lambda:UpdateFunctionCode", arn)]
    return [({"GET": "lambda:GetFunction", "DELETE": "lambda:DeleteFunction"}.get(req.method, "lambda:UpdateFunction"),
             arn)]


def _scheduler(req: Request, res: Resources) -> list[tuple[str, str]]:
    parts = req.path.strip("/").split("/")
    if parts and parts[0] == "schedules" and len(parts) >= 2:
        name = urllib.parse.unquote(parts[1])
        try:
            body = json.loads(req.body or b"{}") if req.body else {}
        except ValueError:
            body = {}
        group = (req.query.get("groupName") or [body.get("GroupName") or "default"])[0]
        action = {"POST": "CreateSchedule", "GET": "GetSchedule", "PUT": "UpdateSchedule",
                  "DELETE": "DeleteSchedule"}.get(req.method, "GetSchedule")
        return [(f"scheduler:{action}", res.arn("scheduler", f"schedule/{group}/{name}"))]
    if parts and parts[0] == "schedule-groups" and len(parts) >= 2:
        action = {"POST": "CreateScheduleGroup", "GET": "GetScheduleGroup",
                  "DELETE": "DeleteScheduleGroup"}.get(req.method, "GetScheduleGroup")
        return [(f"scheduler:{action}", res.arn("scheduler", f"schedule-group/{parts[1]}"))]
    return [("scheduler:ListSchedules" if parts and parts[0] == "schedules" else "scheduler:ListScheduleGroups", "*")]


# ---------------------------------------------------------------------------
# The decision and the refusal
# ---------------------------------------------------------------------------


@dataclass
class Denial:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def refusal(service: str, req: Request, code: str, message: str) -> Denial:
    """The error AWS gives for this protocol."""
    rid = os.urandom(8).hex().upper()
    if service == "s3":
        s3_code = "AccessDenied" if code == "AccessDeniedException" else code
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{s3_code}</Code>'
                f"<Message>{_xml(message)}</Message><RequestId>{rid}</RequestId></Error>").encode()
        return Denial(403, [("Content-Type", "application/xml"), ("x-amz-request-id", rid)], body)
    if req.target() or service in ("lambda", "scheduler"):
        status = 403 if service in ("lambda", "scheduler") or code != "AccessDeniedException" else 400
        doc = {"__type": f"com.amazon.coral.service#{code}", "message": message, "Message": message}
        if service == "lambda":
            doc = {"Type": "User", "message": message}
        return Denial(status, [("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-ErrorType", code),
                               ("x-amzn-RequestId", rid)], json.dumps(doc).encode())
    query_code = {"sns": "AuthorizationError"}.get(service, "AccessDenied") if code == "AccessDeniedException" \
        else code
    body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{query_code}</Code>"
            f"<Message>{_xml(message)}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>").encode()
    return Denial(403, [("Content-Type", "text/xml"), ("x-amzn-RequestId", rid)], body)


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Authorizer:
    def __init__(self, registry: KeyRegistry, policies: Policies, region: str,
                 topic_key: Callable[[str], Optional[str]] = lambda _t: None, log: Callable[[str], None] = print):
        self.registry = registry
        self.policies = policies
        self.res = Resources(region)
        self.topic_key = topic_key
        self.log = log
        self.denials = 0
        self.checked = 0

    def principal(self, req: Request) -> tuple[Optional[AssumedKey], Optional[tuple[str, str, str]]]:
        signer = req.signer()
        if signer is None:
            return None, None
        return self.registry.lookup(signer[0]), signer

    def check(self, req: Request) -> Optional[Denial]:
        """None when the request may go on; else the refusal to send."""
        key, signer = self.principal(req)
        if signer is None:
            return None  # unsigned: the operator's own tools (moto-api, health checks)
        access_key, _region, service = signer
        if key is None:
            if access_key.startswith("ASIA"):
                return refusal(service, req, "InvalidClientTokenId" if service != "s3" else "InvalidAccessKeyId",
                               "The security token included in the request is invalid.")
            return None  # the operator: an administrator
        if key.session_token and req.session_token() != key.session_token:
            return refusal(service, req, "InvalidClientTokenId" if service != "s3" else "InvalidToken",
                           "The security token included in the request is invalid.")
        if key.expires_epoch < time.time():
            return refusal(service, req, "ExpiredTokenException" if service != "s3" else "ExpiredToken",
                           "The security token included in the request is expired")
        if service == "sts" and _one(req.form(), "Action") == "GetCallerIdentity":
            return None
        try:
            pairs = requested(req, service, self.res, self.topic_key)
        except Unknown as e:
            pairs = [(f"{ACTION_PREFIX.get(service, service)}:Unknown", "*")]
            self.log(f"iam: cannot name what {req.method} {req.path} asks ({e}); judged as {pairs[0][0]}")
        docs = self.policies.documents(key.role_arn)
        self.checked += 1
        for action, resource in pairs:
            if not evaluate(docs, action, resource):
                self.denials += 1
                message = (f"User: {key.session_arn or key.role_arn} is not authorized to perform: {action} "
                           f"on resource: {resource} because no identity-based policy allows the {action} action")
                self.log(f"iam: DENIED {message}")
                return refusal(service, req, "AccessDeniedException", message)
        return None
