"""The local gateway's IAM check (localstack/iam_gate.py): what each request
asks for, and the decision on the template's own policies."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, load_template

sys.path.insert(0, str(REPO / "localstack"))
import deploy  # noqa: E402
import iam_gate  # noqa: E402

RES = iam_gate.Resources("us-east-1")
TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table/"


def ddb(op: str, body: dict) -> iam_gate.Request:
    return iam_gate.Request("POST", "/", {}, {"x-amz-target": f"DynamoDB_20120810.{op}",
                                              "content-type": "application/x-amz-json-1.0"},
                            json.dumps(body).encode())


def form(body: dict) -> iam_gate.Request:
    import urllib.parse

    return iam_gate.Request("POST", "/", {}, {"content-type": "application/x-www-form-urlencoded"},
                            urllib.parse.urlencode(body).encode())


def rest(method: str, path: str, headers: dict | None = None, body: bytes = b"") -> iam_gate.Request:
    return iam_gate.Request.of(method, path, headers or {}, body)


# ---------------------------------------------------------------------------
# what a request asks for


def test_each_item_of_a_transaction_is_judged_with_its_own_action_and_table():
    req = ddb("TransactWriteItems", {"TransactItems": [
        {"Update": {"TableName": "tally-accounts", "Key": {}}},
        {"Put": {"TableName": "tally-ledger", "Item": {}}},
        {"ConditionCheck": {"TableName": "tally-runs", "Key": {}}},
        {"Delete": {"TableName": "tally-runs", "Key": {}}},
    ]})
    assert iam_gate.requested(req, "dynamodb", RES) == [
        ("dynamodb:UpdateItem", TABLE + "tally-accounts"),
        ("dynamodb:PutItem", TABLE + "tally-ledger"),
        ("dynamodb:ConditionCheckItem", TABLE + "tally-runs"),
        ("dynamodb:DeleteItem", TABLE + "tally-runs"),
    ]


def test_an_index_query_is_judged_on_the_index_arn_and_a_batch_on_each_table():
    q = ddb("Query", {"TableName": "tally-accounts", "IndexName": "by_cob_shard"})
    assert iam_gate.requested(q, "dynamodb", RES) == [("dynamodb:Query", TABLE + "tally-accounts/index/by_cob_shard")]
    b = ddb("BatchWriteItem", {"RequestItems": {"a": [], "b": []}})
    assert iam_gate.requested(b, "dynamodb", RES) == [("dynamodb:BatchWriteItem", TABLE + "a"),
                                                      ("dynamodb:BatchWriteItem", TABLE + "b")]


def test_s3_requests_name_their_object_or_bucket():
    assert iam_gate.requested(rest("GET", "/bkt/settlement/A/2026-11-20/f.dat?x-id=GetObject"), "s3", RES) == [
        ("s3:GetObject", "arn:aws:s3:::bkt/settlement/A/2026-11-20/f.dat")]
    assert iam_gate.requested(rest("HEAD", "/bkt/k%20x"), "s3", RES) == [("s3:GetObject", "arn:aws:s3:::bkt/k x")]
    copy = rest("PUT", "/bkt/rejected/f.dat", {"x-amz-copy-source": "/bkt/settlement/f.dat?versionId=v1"})
    assert iam_gate.requested(copy, "s3", RES) == [("s3:PutObject", "arn:aws:s3:::bkt/rejected/f.dat"),
                                                  ("s3:GetObjectVersion", "arn:aws:s3:::bkt/settlement/f.dat")]
    assert iam_gate.requested(rest("GET", "/bkt?list-type=2&prefix=state/"), "s3", RES) == [
        ("s3:ListBucket", "arn:aws:s3:::bkt")]
    assert iam_gate.requested(rest("POST", "/bkt/big?uploads"), "s3", RES) == [("s3:PutObject", "arn:aws:s3:::bkt/big")]
    delete = rest("POST", "/bkt?delete", body=b"<Delete><Object><Key>a/1</Key></Object><Object><Key>b</Key></Object></Delete>")
    assert iam_gate.requested(delete, "s3", RES) == [("s3:DeleteObject", "arn:aws:s3:::bkt/a/1"),
                                                    ("s3:DeleteObject", "arn:aws:s3:::bkt/b")]


def test_a_publish_to_an_encrypted_topic_also_needs_the_key():
    topic = "arn:aws:sns:us-east-1:123456789012:tally-alarms"
    key = "arn:aws:kms:us-east-1:123456789012:key/k1"
    req = form({"Action": "Publish", "TopicArn": topic, "Message": "m"})
    assert iam_gate.requested(req, "sns", RES, lambda t: key if t == topic else None) == [
        ("sns:Publish", topic), ("kms:GenerateDataKey", key), ("kms:Decrypt", key)]


def test_other_services_name_their_resources():
    ev = iam_gate.Request("POST", "/", {}, {"x-amz-target": "AWSEvents.PutEvents"},
                          json.dumps({"Entries": [{"EventBusName": "tally-events"}, {}]}).encode())
    assert iam_gate.requested(ev, "events", RES) == [
        ("events:PutEvents", "arn:aws:events:us-east-1:123456789012:event-bus/default"),
        ("events:PutEvents", "arn:aws:events:us-east-1:123456789012:event-bus/tally-events")]
    sm = "arn:aws:states:us-east-1:123456789012:stateMachine:tally-accrual-cob"
    st = iam_gate.Request("POST", "/", {}, {"x-amz-target": "AWSStepFunctions.StartExecution"},
                          json.dumps({"stateMachineArn": sm, "name": "x"}).encode())
    assert iam_gate.requested(st, "states", RES) == [("states:StartExecution", sm)]
    inv = rest("POST", "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Acob-partition/invocations")
    assert iam_gate.requested(inv, "lambda", RES) == [
        ("lambda:InvokeFunction", "arn:aws:lambda:us-east-1:123456789012:function:cob-partition")]
    q = iam_gate.Request("POST", "/", {}, {"x-amz-target": "AmazonSQS.ReceiveMessage"},
                         json.dumps({"QueueUrl": "http://127.0.0.1:4566/123456789012/tally-recon-trigger"}).encode())
    assert iam_gate.requested(q, "sqs", RES) == [
        ("sqs:ReceiveMessage", "arn:aws:sqs:us-east-1:123456789012:tally-recon-trigger")]
    run = iam_gate.Request("POST", "/", {}, {"x-amz-target": "AmazonEC2ContainerServiceV20141113.RunTask"},
                           json.dumps({"taskDefinition": "tally-recon-ingest:1"}).encode())
    assert iam_gate.requested(run, "ecs", RES) == [
        ("ecs:RunTask", "arn:aws:ecs:us-east-1:123456789012:task-definition/tally-recon-ingest:1")]
    sch = rest("POST", "/schedules/hold-1?groupName=holds")
    assert iam_gate.requested(sch, "scheduler", RES) == [
        ("scheduler:CreateSchedule", "arn:aws:scheduler:us-east-1:123456789012:schedule/holds/hold-1")]


# ---------------------------------------------------------------------------
# decisions


def doc(*statements) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(actions, resources, **extra):
    return dict({"Effect": "Allow", "Action": actions, "Resource": resources}, **extra)


def test_a_grant_on_one_table_allows_that_table_and_no_other():
    docs = (doc(allow(["dynamodb:PutItem"], [TABLE + "tally-ledger"])),)
    assert iam_gate.evaluate(docs, "dynamodb:PutItem", TABLE + "tally-ledger")
    assert not iam_gate.evaluate(docs, "dynamodb:PutItem", TABLE + "tally-accounts")
    assert not iam_gate.evaluate(docs, "dynamodb:GetItem", TABLE + "tally-ledger")
    assert not iam_gate.evaluate(docs, "dynamodb:Query", TABLE + "tally-ledger/index/x")


def test_wildcards_deny_and_conditions_fail_closed():
    docs = (doc(allow(["s3:GetObject"], ["arn:aws:s3:::bkt/settlement/*"]),
                {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bkt/settlement/secret/*"}),)
    assert iam_gate.evaluate(docs, "s3:GetObject", "arn:aws:s3:::bkt/settlement/A/f.dat")
    assert not iam_gate.evaluate(docs, "s3:GetObject", "arn:aws:s3:::bkt/settlement/secret/f")
    assert not iam_gate.evaluate(docs, "s3:GetObject", "arn:aws:s3:::bkt/internal/f")
    conditional = (doc(allow("sqs:*", "*", Condition={"Bool": {"aws:SecureTransport": "true"}})),)
    assert not iam_gate.evaluate(conditional, "sqs:SendMessage", "arn:aws:sqs:us-east-1:123456789012:q")
    assert not iam_gate.evaluate((), "sqs:SendMessage", "*")


class FakePolicies:
    def __init__(self, docs):
        self.docs = docs

    def documents(self, role_arn):
        return self.docs.get(role_arn, ())

    def invalidate(self):
        pass


ASSUME_ANSWER = b"""<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>
<Credentials><AccessKeyId>ASIAEXAMPLE0001</AccessKeyId><SecretAccessKey>s3cr3t</SecretAccessKey>
<SessionToken>tok-1</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>
<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/tally-CobPartitionFunctionRole/i-1</Arn>
<AssumedRoleId>AROA:i-1</AssumedRoleId></AssumedRoleUser></AssumeRoleResult></AssumeRoleResponse>"""

ROLE = "arn:aws:iam::123456789012:role/tally-CobPartitionFunctionRole"


def signed(req: iam_gate.Request, key: str, service: str, token: str | None = "tok-1") -> iam_gate.Request:
    req.headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={key}/20261204/us-east-1/{service}/aws4_request, "
                                    f"SignedHeaders=host, Signature=00")
    if token is not None:
        req.headers["x-amz-security-token"] = token
    return req


@pytest.fixture
def authorizer(tmp_path):
    reg = iam_gate.KeyRegistry(tmp_path / "keys.json")
    assert reg.observe_assume_role({"RoleArn": [ROLE]}, ASSUME_ANSWER).access_key_id == "ASIAEXAMPLE0001"
    docs = {ROLE: (doc(allow(["dynamodb:PutItem"], [TABLE + "tally-ledger"])),)}
    return iam_gate.Authorizer(reg, FakePolicies(docs), "us-east-1", log=lambda _m: None)


def test_a_role_is_refused_what_it_was_not_granted_with_the_error_aws_gives(authorizer):
    ok = signed(ddb("PutItem", {"TableName": "tally-ledger"}), "ASIAEXAMPLE0001", "dynamodb")
    assert authorizer.check(ok) is None
    denied = authorizer.check(signed(ddb("PutItem", {"TableName": "tally-recon-state"}), "ASIAEXAMPLE0001", "dynamodb"))
    assert denied is not None and denied.status == 400
    body = json.loads(denied.body)
    assert body["__type"].endswith("#AccessDeniedException")
    assert "tally-CobPartitionFunctionRole/i-1 is not authorized to perform: dynamodb:PutItem on resource: " \
           + TABLE + "tally-recon-state" in body["message"]
    s3 = authorizer.check(signed(rest("GET", "/bkt/k"), "ASIAEXAMPLE0001", "s3"))
    assert s3.status == 403 and b"<Code>AccessDenied</Code>" in s3.body
    sns = authorizer.check(signed(form({"Action": "Publish", "TopicArn": "arn:aws:sns:us-east-1:123456789012:t"}),
                                  "ASIAEXAMPLE0001", "sns"))
    assert sns.status == 403 and b"<Code>AuthorizationError</Code>" in sns.body


def test_the_operator_is_an_administrator_and_strangers_are_refused(authorizer, tmp_path):
    assert authorizer.check(signed(ddb("DeleteTable", {"TableName": "x"}), "test", "dynamodb", None)) is None
    stranger = authorizer.check(signed(ddb("GetItem", {"TableName": "tally-ledger"}), "ASIAUNKNOWN", "dynamodb"))
    assert stranger is not None and b"InvalidClientTokenId" in stranger.body
    wrong_token = authorizer.check(signed(ddb("PutItem", {"TableName": "tally-ledger"}), "ASIAEXAMPLE0001",
                                          "dynamodb", "other"))
    assert wrong_token is not None and b"InvalidClientTokenId" in wrong_token.body
    # The registry survives a restart of the gateway.
    again = iam_gate.KeyRegistry(tmp_path / "keys.json")
    assert again.lookup("ASIAEXAMPLE0001").role_arn == ROLE


def test_an_expired_key_is_refused(authorizer):
    k = authorizer.registry.lookup("ASIAEXAMPLE0001")
    authorizer.registry.keys[k.access_key_id] = iam_gate.AssumedKey(**dict(vars(k), expires_epoch=time.time() - 1))
    r = authorizer.check(signed(ddb("PutItem", {"TableName": "tally-ledger"}), "ASIAEXAMPLE0001", "dynamodb"))
    assert r is not None and b"ExpiredToken" in r.body


# ---------------------------------------------------------------------------
# the template's roles, as deploy.py creates them


def test_every_function_and_state_machine_gets_the_role_sam_would_make():
    stack = deploy.Stack(load_template(), REPO / "infra" / "template.yaml", "tally")
    for lid in stack.resources_of("AWS::Serverless::Function", "AWS::Serverless::StateMachine"):
        role = stack.role_definition(lid)
        assert role is not None, lid
        assert role["name"] == f"tally-{lid}Role"
        assert role["policies"], lid
        assert stack.role_arn_of(lid) == f"arn:aws:iam::123456789012:role/tally-{lid}Role"
    spec = stack.function_spec("CobPartitionFunction")
    assert spec["timeout_s"] == 900 and spec["memory_mb"] == 1024 and spec["binary"] == "cob-partition"
    assert spec["role_arn"].endswith("role/tally-CobPartitionFunctionRole")


def test_a_sam_policy_template_is_refused_rather_than_granted_silently():
    t = {"Resources": {"F": {"Type": "AWS::Serverless::Function",
                             "Metadata": {"BuildProperties": {"Binary": "f"}},
                             "Properties": {"Policies": [{"DynamoDBCrudPolicy": {"TableName": "t"}}]}}}}
    stack = deploy.Stack(t, Path("t.yaml"), "tally")
    with pytest.raises(deploy.TemplateError, match="not deployed locally"):
        stack.role_definition("F")
