"""Security checks on the template and the tree: storage and messaging are
encrypted and private; each function is granted the operations its code
calls and no others; nothing secret and no account ID is written into a
committed file. (No wildcard grants: test_template.py.)"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO
from test_template import iam_statements, _strings


def _resources(template, rtype):
    return {lid: r.get("Properties") or {} for lid, r in template["Resources"].items() if r["Type"] == rtype}


# ------------------------------------------------------------ storage and messaging

def test_every_bucket_blocks_public_access_and_is_encrypted(template):
    buckets = _resources(template, "AWS::S3::Bucket")
    assert buckets, "no bucket found: is the walk broken?"
    for lid, p in buckets.items():
        block = p.get("PublicAccessBlockConfiguration") or {}
        for flag in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"):
            assert block.get(flag) is True, f"{lid}: {flag} is not true"
        rules = (p.get("BucketEncryption") or {}).get("ServerSideEncryptionConfiguration") or []
        algos = [(r.get("ServerSideEncryptionByDefault") or {}).get("SSEAlgorithm") for r in rules]
        assert algos and all(a in ("AES256", "aws:kms", "aws:kms:dsse") for a in algos), f"{lid}: {algos}"


def test_every_bucket_refuses_plain_http(template):
    """A bucket policy denies any request not made over TLS."""
    policies = _resources(template, "AWS::S3::BucketPolicy")
    for lid in _resources(template, "AWS::S3::Bucket"):
        denies = [
            s for p in policies.values() if p.get("Bucket") == {"Ref": lid}
            for s in p["PolicyDocument"]["Statement"]
            if s.get("Effect") == "Deny"
            and (s.get("Condition") or {}).get("Bool", {}).get("aws:SecureTransport") in (False, "false")
        ]
        assert denies, f"{lid}: no Deny on aws:SecureTransport = false"


def test_every_queue_and_topic_is_encrypted(template):
    queues = _resources(template, "AWS::SQS::Queue")
    topics = _resources(template, "AWS::SNS::Topic")
    assert queues and topics
    for lid, p in queues.items():
        assert p.get("SqsManagedSseEnabled") is True or p.get("KmsMasterKeyId"), f"{lid}: not encrypted"
    for lid, p in topics.items():
        assert p.get("KmsMasterKeyId"), f"{lid}: not encrypted (SNS has no default encryption)"


def test_every_table_is_encrypted(template):
    tables = _resources(template, "AWS::DynamoDB::Table")
    assert tables
    for lid, p in tables.items():
        assert (p.get("SSESpecification") or {}).get("SSEEnabled") is True, f"{lid}: SSE not enabled"


# ------------------------------------------------------------ least privilege

def _snake(op: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", op).lower()


def _source_files(crate: Path):
    """The crate's non-test Rust sources."""
    for f in sorted((crate / "src").rglob("*.rs")):
        if f.name != "tests.rs" and "tests" not in f.relative_to(crate / "src").parts[:-1]:
            yield f


def _without_test_modules(text: str) -> str:
    # `#[cfg(test)] mod tests { ... }` sits at the end of a file by house style.
    cut = re.search(r"^#\[cfg\(test\)\]\s*\nmod tests", text, re.M)
    return text[: cut.start()] if cut else text


def _reachable_text(binary: str) -> tuple[str, str]:
    """(the function crate's own code, the tally-aws modules it names)."""
    crate = REPO / "functions" / binary
    own = "\n".join(_without_test_modules(f.read_text()) for f in _source_files(crate))
    shared = REPO / "shared" / "tally-aws" / "src"
    known = {f.stem for f in shared.glob("*.rs")}
    modules = set(re.findall(r"tally_aws::(\w+)", own))
    for group in re.findall(r"tally_aws::\{([^;]*)\}", own):  # use tally_aws::{a::X, b, c::{Y, Z}}
        modules.update(w for w in re.findall(r"\w+", group) if w in known)
    lib = "\n".join(
        _without_test_modules((shared / f"{m}.rs").read_text()) for m in sorted(modules) if (shared / f"{m}.rs").exists()
    )
    return own, lib


# Grants an operation of the code does not name, each with the reason it is
# needed anyway. Nothing else may be granted without a call behind it.
IMPLIED = {
    # Publishing to the KMS-encrypted alarm topic needs the key.
    "kms:Decrypt": lambda acts: "sns:Publish" in acts,
    "kms:GenerateDataKey": lambda acts: "sns:Publish" in acts,
}
# The Lambda service polls an SQS event source with the function's role.
SQS_EVENT_SOURCE = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"}


def _functions(template):
    for lid, r in template["Resources"].items():
        if r["Type"] == "AWS::Serverless::Function":
            binary = r["Metadata"]["BuildProperties"]["Binary"]
            actions = set()
            for pol in r["Properties"]["Policies"]:
                for s in pol["Statement"]:
                    if s.get("Effect", "Allow") == "Allow":
                        actions.update(_strings(s["Action"]))
            has_sqs_source = any(
                (e or {}).get("Type") == "SQS" for e in (r["Properties"].get("Events") or {}).values()
            )
            yield lid, binary, actions, has_sqs_source


# TransactWriteItems has no action of its own: each item needs the action of
# its kind (Put, Update, Delete, ConditionCheck) on its table.
TRANSACT_ITEMS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                  "ConditionCheck": "ConditionCheckItem"}


def called(op: str, code: str) -> bool:
    if re.search(rf"\.{_snake(op)}\(", code):
        return True
    return ".transact_write_items(" in code and any(
        op == action and re.search(rf"\b{kind}::builder\(", code) for kind, action in TRANSACT_ITEMS.items()
    )


def unused_grants(template) -> list[str]:
    found = []
    for lid, binary, actions, has_sqs_source in _functions(template):
        own, lib = _reachable_text(binary)
        code = own + lib
        for action in sorted(actions):
            service, op = action.split(":", 1)
            if called(op, code):
                continue
            if action in IMPLIED and IMPLIED[action](actions):
                continue
            if has_sqs_source and action in SQS_EVENT_SOURCE:
                continue
            found.append(f"{lid} ({binary}): {action} is granted but no code it runs calls .{_snake(op)}()")
    return found


# ---- the other direction: every call a function makes, through tally-aws too

# SDK operation (the fluent builder's method) -> the IAM actions it needs.
SDK_ACTIONS = {
    "get_item": ["dynamodb:GetItem"], "put_item": ["dynamodb:PutItem"], "update_item": ["dynamodb:UpdateItem"],
    "delete_item": ["dynamodb:DeleteItem"], "query": ["dynamodb:Query"], "scan": ["dynamodb:Scan"],
    "batch_get_item": ["dynamodb:BatchGetItem"], "batch_write_item": ["dynamodb:BatchWriteItem"],
    "get_object": ["s3:GetObject"], "put_object": ["s3:PutObject"], "copy_object": ["s3:PutObject", "s3:GetObject"],
    "head_object": ["s3:GetObject"], "list_objects_v2": ["s3:ListBucket"], "delete_object": ["s3:DeleteObject"],
    "create_multipart_upload": ["s3:PutObject"], "upload_part": ["s3:PutObject"],
    "complete_multipart_upload": ["s3:PutObject"], "abort_multipart_upload": ["s3:AbortMultipartUpload"],
    "publish": ["sns:Publish"], "put_events": ["events:PutEvents"],
    "start_execution": ["states:StartExecution"], "describe_execution": ["states:DescribeExecution"],
    "stop_execution": ["states:StopExecution"], "get_execution_history": ["states:GetExecutionHistory"],
    "send_message": ["sqs:SendMessage"], "delete_message": ["sqs:DeleteMessage"],
    "receive_message": ["sqs:ReceiveMessage"], "put_record": ["kinesis:PutRecord"],
    "put_records": ["kinesis:PutRecords"], "create_schedule": ["scheduler:CreateSchedule"],
    "delete_schedule": ["scheduler:DeleteSchedule"],
}

# String and character literals: their braces and quotes are not code.
_LITERAL = re.compile(r"""(?<![\w])r(#*)"[\s\S]*?"\1|"(?:\\[\s\S]|[^"\\])*"|'(?:\\.|[^'\\])'""")
_IMPL = re.compile(r"\bimpl(?:<[^>{]*>)?\s+(?:[\w:]+(?:<[^>{]*>)?\s+for\s+)?(\w+)(?:<[^>{]*>)?\s*(?:where[^{]*)?\{")
_FN = re.compile(r"\bfn\s+(\w+)")
_SELF_CALL = re.compile(r"\bself\s*\.\s*(\w+)\s*(?:::<[^>]*>)?\(")
_PATH_CALL = re.compile(r"\b([A-Z]\w*)\s*::\s*(\w+)\s*(?:::<[^>]*>)?\(")
_METHOD_CALL = re.compile(r"\.\s*(\w+)\s*(?:::<[^>]*>)?\(")
_FREE_CALL = re.compile(r"(?<![.\w:])(\w+)\s*(?:::<[^>]*>)?\(")


def _block_end(text: str, open_brace: int) -> int:
    depth = 0
    for j in range(open_brace, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(text)


def _fn_bodies(text: str) -> dict[tuple, list[str]]:
    """(the impl's type or None, fn name) -> bodies, literals blanked."""
    text = _LITERAL.sub('""', text)
    impls = [(m.end(), _block_end(text, m.end() - 1), m.group(1)) for m in _IMPL.finditer(text)]
    out: dict[tuple, list[str]] = {}
    for m in _FN.finditer(text):
        brace, semi = text.find("{", m.end()), text.find(";", m.end())
        if brace < 0 or 0 <= semi < brace:
            continue  # a declaration (trait method without a body)
        owner = next((t for start, end, t in impls if start <= m.start() < end), None)
        out.setdefault((owner, m.group(1)), []).append(text[brace:_block_end(text, brace) + 1])
    return out


def _adapter_graph() -> dict[tuple, list[str]]:
    """Every fn of tally-aws's production code (the in-memory fakes left out)."""
    graph: dict[tuple, list[str]] = {}
    for f in sorted((REPO / "shared" / "tally-aws" / "src").glob("*.rs")):
        if f.name == "memory.rs":
            continue
        for key, bodies in _fn_bodies(_without_test_modules(f.read_text())).items():
            graph.setdefault(key, []).extend(bodies)
    return graph


def traced_actions(binary: str, graph=None) -> set[str]:
    """The IAM actions a function's code needs, following its calls into
    tally-aws: `self.m(` to the same type, `Type::m(` to that type, `.m(` to
    every adapter type the code reached names, free `m(` to free fns."""
    graph = graph or _adapter_graph()
    types = {t for t, _ in graph if t}
    crate = REPO / "functions" / binary
    own = _LITERAL.sub('""', "\n".join(_without_test_modules(f.read_text()) for f in _source_files(crate)))
    used = {t for t in types if re.search(rf"\b{t}\b", own)}
    ops: set[str] = set()
    builders: set[str] = set()

    def scan(body: str, owner) -> set[tuple]:
        ops.update(re.findall(r"\.(\w+)\(\)", body))
        builders.update(re.findall(r"\b(Put|Update|Delete|ConditionCheck)::builder\(", body))
        used.update(t for t in types if re.search(rf"\b{t}\b", body))
        out = {(owner, n) for n in _SELF_CALL.findall(body) if (owner, n) in graph}
        out |= {(t, n) for t, n in _PATH_CALL.findall(body) if (t, n) in graph}
        out |= {(t, n) for n in _METHOD_CALL.findall(body) for t in used if (t, n) in graph}
        out |= {(None, n) for n in _FREE_CALL.findall(body) if (None, n) in graph}
        return out

    seen: set[tuple] = set()
    while True:
        before = (len(seen), len(used))
        todo = list(scan(own, None)) + list(seen)
        while todo:
            key = todo.pop()
            if key in seen and key not in todo:
                pass
            first = key not in seen
            seen.add(key)
            if not first:
                continue
            for body in graph[key]:
                todo.extend(k for k in scan(body, key[0]) if k not in seen)
        if (len(seen), len(used)) == before:
            break
    actions = {a for op in ops for a in SDK_ACTIONS.get(op, [])}
    if "transact_write_items" in ops:
        actions |= {f"dynamodb:{TRANSACT_ITEMS[b]}" for b in builders}
    return actions


def missing_grants(template) -> list[str]:
    """Operations a function's code calls, itself or through tally-aws, that
    its role does not grant (action by action; the local stack's IAM check
    judges the resources at run time)."""
    graph = _adapter_graph()
    found = []
    for lid, binary, actions, _ in _functions(template):
        for action in sorted(traced_actions(binary, graph) - actions):
            found.append(f"{lid} ({binary}): its code calls {action} (itself or through tally-aws), not granted")
    return found


def test_the_trace_follows_calls_into_tally_aws():
    # Rollup never calls the SDK itself: every call is an adapter's.
    rollup = traced_actions("recon-rollup")
    assert {"dynamodb:GetItem", "dynamodb:Query", "s3:GetObject", "s3:PutObject", "events:PutEvents"} <= rollup
    # The partition's ledger Puts are items of its TransactWriteItems.
    assert {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:BatchGetItem"} <= traced_actions("cob-partition")


def test_the_trace_finds_an_action_called_only_through_tally_aws(template):
    """Rollup's own crate makes no SDK call: before the trace followed calls
    into tally-aws, a role without GetItem at all passed this check.

    The holes the review found were one level finer: Rollup held GetItem,
    but on the runs table, not on the state table it reads the manifests
    from; Settle held PutItem on the state table, not on the runs table.
    An action-level check cannot see those; the local stack's IAM check,
    which judges each call's resource, refused both
    (tests/integration/tests/iam.rs)."""
    import copy
    t = copy.deepcopy(template)
    for pol in t["Resources"]["ReconRollupFunction"]["Properties"]["Policies"]:
        for st in pol["Statement"]:
            st["Action"] = [a for a in st["Action"] if a != "dynamodb:GetItem"]
    found = missing_grants(t)
    assert any("ReconRollupFunction" in f and "dynamodb:GetItem" in f for f in found), found
    assert len(found) == 1, found


def test_no_function_is_granted_an_operation_its_code_does_not_call(template):
    funcs = list(_functions(template))
    assert len(funcs) >= 9, funcs
    assert unused_grants(template) == []


def test_no_function_calls_an_operation_it_is_not_granted(template):
    assert missing_grants(template) == []


def test_the_grant_check_sees_an_extra_grant(template):
    import copy
    t = copy.deepcopy(template)
    fn = t["Resources"]["CobCoordinatorFunction"]["Properties"]
    fn["Policies"].append({"Statement": [{"Effect": "Allow", "Action": ["dynamodb:DeleteTable", "kms:Decrypt"],
                                          "Resource": {"Fn::GetAtt": ["AccountsTable", "Arn"]}}]})
    found = unused_grants(t)
    assert any("dynamodb:DeleteTable" in f for f in found), found
    # kms is implied only where the function publishes to the encrypted topic.
    assert any("kms:Decrypt" in f for f in found), found


# ------------------------------------------------------------ secrets in the tree

SECRET_PATTERNS = {
    "AWS access key ID": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(r"(?i)aws_?secret_?access_?key\W{0,5}[=:]\W{0,5}[A-Za-z0-9/+]{40}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "account ID in an ARN": re.compile(r"arn:aws[\w-]*:[\w-]+:[\w-]*:(\d{12}):"),
    "account ID setting": re.compile(r"(?i)account_?id\W{0,5}[=:]\W{0,5}(\d{12})\b"),
}
# The emulator's fixed account (moto's default), never a real one.
EMULATOR_ACCOUNTS = {"123456789012", "000000000000"}


def secret_findings(files: dict[str, str]) -> list[str]:
    found = []
    for name, text in files.items():
        for what, pattern in SECRET_PATTERNS.items():
            for m in pattern.finditer(text):
                if m.groups() and m.group(1) in EMULATOR_ACCOUNTS:
                    continue
                line = text.count("\n", 0, m.start()) + 1
                found.append(f"{name}:{line}: {what}")
    return found


def _committed_text_files() -> dict[str, str]:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    out = {}
    for n in names.decode().split("\0"):
        p = REPO / n
        if not n or not p.is_file() or p.stat().st_size > 2_000_000:
            continue
        try:
            out[n] = p.read_text()
        except UnicodeDecodeError:
            continue  # corpus files in other encodings hold no keys
    return out


def test_no_secret_or_account_id_is_committed():
    files = _committed_text_files()
    assert len(files) > 100, f"only {len(files)} files read: is git ls-files working?"
    assert secret_findings(files) == []


def test_the_secret_scan_sees_what_it_looks_for():
    # Built from parts, so that this file holds none of them whole.
    planted = {
        "a.rs": 'const K: &str = "' + "AKIA" + "IOSFODNN7EXAMPLE" + '";',
        "b.yaml": "Resource: arn:aws:sns:eu-west-1:" + "210987" + "654321:alarms",
        "c.toml": "aws_secret_" + "access_key = " + "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY",
        "d.pem": "-----BEGIN RSA " + "PRIVATE KEY-----",
        "e.env": "ACCOUNT_" + "ID=210987" + "654321",
        "f.json": '"arn:aws:sqs:us-east-1:123456789012:q"',
    }
    found = secret_findings(planted)
    assert sorted(f.split(":")[0] for f in found) == ["a.rs", "b.yaml", "c.toml", "d.pem", "e.env"], found
