"""The local stack deploys what infra/template.yaml declares -- no drift possible.

Run with the tally venv:  ~/.cache/tally/venv/bin/python -m pytest tests/static -q

Starts a private moto (free port) behind a private localstack/gateway.py, runs
localstack/deploy.py through the gateway into a temporary outputs dir, then
reads both sides -- the template's properties and boto3's describe_* -- and
compares them. Also unit-tests the intrinsic resolver and the gateway's Lambda
routing. TALLY_TEMPLATE overrides the template path (default infra/template.yaml).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "localstack"))

import deploy  # noqa: E402
import gateway  # noqa: E402

TEMPLATE = Path(os.environ.get("TALLY_TEMPLATE", REPO / "infra" / "template.yaml"))
STACK = "tally"
REGION = "us-east-1"
ACCOUNT = "123456789012"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:  # noqa: BLE001
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout}s")


# ---------------------------------------------------------------------------
# fixtures: moto + gateway + fake Lambda host, and one deploy
# ---------------------------------------------------------------------------


class FakeLambdaHost(BaseHTTPRequestHandler):
    """Answers as localstack/lambda_host.py does, which answers as AWS Lambda
    does: 200 + result; 200 + X-Amz-Function-Error + the error for a handler
    error; 404 ResourceNotFoundException; 429 for a throttle."""

    protocol_version = "HTTP/1.1"
    calls: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        name = self.path.split("/")[3]
        FakeLambdaHost.calls.append(self.path)
        headers = [("Content-Type", "application/json")]
        if name == "fails":
            status, out = 200, {"errorType": "TransientStoreError", "errorMessage": "throttled"}
            headers.append(("X-Amz-Function-Error", "Unhandled"))
        elif name == "missing":
            status, out = 404, {"Type": "User", "message": "Function not found: missing"}
            headers.append(("x-amzn-ErrorType", "ResourceNotFoundException"))
        elif name == "busy":
            status, out = 429, {"Type": "User", "message": "Rate Exceeded.",
                                "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"}
            headers.append(("x-amzn-ErrorType", "TooManyRequestsException"))
        else:
            status, out = 200, {"function": name, "event": json.loads(body or b"null")}
        data = json.dumps(out).encode()
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory):
    if not TEMPLATE.exists():
        pytest.fail(f"{TEMPLATE} does not exist: the local deploy has nothing to compare against")
    moto_port, gw_port = free_port(), free_port()
    lam = ThreadingHTTPServer(("127.0.0.1", 0), FakeLambdaHost)
    threading.Thread(target=lam.serve_forever, daemon=True).start()
    moto_server = Path(sys.executable).parent / "moto_server"
    cmd = [str(moto_server)] if moto_server.exists() else [sys.executable, "-m", "moto.server"]
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    moto = subprocess.Popen(
        cmd + ["-H", "127.0.0.1", "-p", str(moto_port)],
        env=dict(os.environ, MOTO_PORT=str(gw_port)), stdout=log, stderr=subprocess.STDOUT,
    )
    gw = gateway.make_server("127.0.0.1", gw_port, gateway.Config(
        moto=("127.0.0.1", moto_port), lambda_host=("127.0.0.1", lam.server_address[1]), invoke_timeout=30))
    threading.Thread(target=gw.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{gw_port}"
    try:
        wait_http(f"http://127.0.0.1:{moto_port}/moto-api/config")
        wait_http(f"{endpoint}/moto-api/config")
        yield endpoint
    finally:
        gw.shutdown()
        lam.shutdown()
        moto.terminate()
        moto.wait(10)
        log.close()


@pytest.fixture(scope="module")
def clients(local_stack):
    import boto3

    def client(name):
        return boto3.client(name, endpoint_url=local_stack, region_name=REGION,
                            aws_access_key_id="test", aws_secret_access_key="test")
    return client


@pytest.fixture(scope="module")
def deployed(local_stack, tmp_path_factory):
    out = tmp_path_factory.mktemp("tally-out")
    stack = deploy.deploy(local_stack, TEMPLATE, STACK, {}, {"TALLY_FAULT_INJECTION": "enabled"}, out)
    return stack, out


@pytest.fixture(scope="module")
def template():
    return deploy.load_template(TEMPLATE)


@pytest.fixture(scope="module")
def declared(template):
    """The template with parameter defaults bound -- the 'template side'."""
    return deploy.Stack(template, TEMPLATE, STACK)


def of_type(template, *types):
    return {k: v for k, v in template["Resources"].items() if v.get("Type") in types}


# ---------------------------------------------------------------------------
# template vs deployed
# ---------------------------------------------------------------------------


def keys(ks):
    return [(k["AttributeName"], k["KeyType"]) for k in ks]


def table_diffs(props: dict, desc: dict) -> list[str]:
    """Differences between a table's template Properties and describe_table."""
    d = []
    if keys(props["KeySchema"]) != keys(desc["KeySchema"]):
        d.append(f"KeySchema {keys(props['KeySchema'])} != {keys(desc['KeySchema'])}")
    want_attrs = {(a["AttributeName"], a["AttributeType"]) for a in props["AttributeDefinitions"]}
    have_attrs = {(a["AttributeName"], a["AttributeType"]) for a in desc["AttributeDefinitions"]}
    if want_attrs != have_attrs:
        d.append(f"AttributeDefinitions {sorted(want_attrs)} != {sorted(have_attrs)}")
    want_billing = props.get("BillingMode", "PROVISIONED")
    have_billing = (desc.get("BillingModeSummary") or {}).get("BillingMode", "PROVISIONED")
    if want_billing != have_billing:
        d.append(f"BillingMode {want_billing} != {have_billing}")
    want_gsi = {g["IndexName"]: g for g in props.get("GlobalSecondaryIndexes") or []}
    have_gsi = {g["IndexName"]: g for g in desc.get("GlobalSecondaryIndexes") or []}
    if set(want_gsi) != set(have_gsi):
        d.append(f"GSIs {sorted(want_gsi)} != {sorted(have_gsi)}")
    for name in set(want_gsi) & set(have_gsi):
        w, h = want_gsi[name], have_gsi[name]
        if keys(w["KeySchema"]) != keys(h["KeySchema"]):
            d.append(f"GSI {name} KeySchema {keys(w['KeySchema'])} != {keys(h['KeySchema'])}")
        wp, hp = w["Projection"], h["Projection"]
        if wp.get("ProjectionType") != hp.get("ProjectionType") or sorted(wp.get("NonKeyAttributes", [])) != sorted(
            hp.get("NonKeyAttributes", [])
        ):
            d.append(f"GSI {name} Projection {wp} != {hp}")
    want_lsi = sorted(g["IndexName"] for g in props.get("LocalSecondaryIndexes") or [])
    have_lsi = sorted(g["IndexName"] for g in desc.get("LocalSecondaryIndexes") or [])
    if want_lsi != have_lsi:
        d.append(f"LSIs {want_lsi} != {have_lsi}")
    sse = deploy.as_bool((props.get("SSESpecification") or {}).get("SSEEnabled", False))
    have_sse = (desc.get("SSEDescription") or {}).get("Status") == "ENABLED"
    if sse != have_sse:
        d.append(f"SSE {sse} != {have_sse}")
    stream = (props.get("StreamSpecification") or {}).get("StreamViewType")
    have_stream = (desc.get("StreamSpecification") or {}).get("StreamViewType")
    if stream != have_stream:
        d.append(f"StreamViewType {stream} != {have_stream}")
    return d


def test_every_template_table_is_deployed_as_declared(deployed, template, declared, clients):
    ddb = clients("dynamodb")
    tables = of_type(template, "AWS::DynamoDB::Table")
    assert tables, "the template declares no DynamoDB table"
    existing = set(ddb.list_tables()["TableNames"])
    for logical in tables:
        props = declared.props(logical)
        name = props.get("TableName")
        assert name, f"{logical}: design.md wants an explicit TableName"
        assert name in existing, f"{logical}: table {name} not deployed (have {sorted(existing)})"
        desc = ddb.describe_table(TableName=name)["Table"]
        assert table_diffs(props, desc) == [], f"{logical} drifted from the template"
        ttl = props.get("TimeToLiveSpecification") or {}
        ttl_desc = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if deploy.as_bool(ttl.get("Enabled", False)):
            assert ttl_desc.get("TimeToLiveStatus") == "ENABLED"
            assert ttl_desc.get("AttributeName") == ttl["AttributeName"]
        else:
            assert ttl_desc.get("TimeToLiveStatus") in (None, "DISABLED")
        pitr = deploy.as_bool((props.get("PointInTimeRecoverySpecification") or {}).get(
            "PointInTimeRecoveryEnabled", False))
        cb = ddb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
        status = cb["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"]
        assert (status == "ENABLED") == pitr, f"{logical}: PITR {status}, template says {pitr}"


def test_table_diff_sees_drift(deployed, declared, clients):
    """The comparison is not vacuous: a table built differently is reported."""
    ddb = clients("dynamodb")
    logical = next(iter(of_type(declared.template, "AWS::DynamoDB::Table")))
    props = declared.props(logical)
    ddb.create_table(
        TableName="drifted-copy",
        AttributeDefinitions=[{"AttributeName": "other_key", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "other_key", "KeyType": "HASH"}],
        BillingMode="PROVISIONED" if props.get("BillingMode") == "PAY_PER_REQUEST" else "PAY_PER_REQUEST",
        **({"ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1}}
           if props.get("BillingMode") == "PAY_PER_REQUEST" else {}),
    )
    diffs = table_diffs(props, ddb.describe_table(TableName="drifted-copy")["Table"])
    assert any(d.startswith("KeySchema") for d in diffs)
    assert any(d.startswith("BillingMode") for d in diffs)


def test_topics_and_buses_exist(deployed, template, declared, clients):
    topics = {t["TopicArn"] for t in clients("sns").list_topics()["Topics"]}
    declared_topics = of_type(template, "AWS::SNS::Topic")
    for logical in declared_topics:
        arn = declared.ref(logical)
        assert arn == f"arn:aws:sns:{REGION}:{ACCOUNT}:{declared.props(logical)['TopicName']}"
        assert arn in topics, f"{logical}: {arn} not deployed"
    events = clients("events")
    buses = of_type(template, "AWS::Events::EventBus")
    for logical in buses:
        name = declared.props(logical)["Name"]
        assert events.describe_event_bus(Name=name)["Name"] == name
    assert declared_topics and buses, "design.md: the template declares an SNS topic and an event bus"


def expected_definition(declared: deploy.Stack, logical: str) -> dict:
    """Read the ASL file and apply DefinitionSubstitutions here, independently of deploy.py."""
    raw = declared.template["Resources"][logical]["Properties"]
    text = (TEMPLATE.parent / raw["DefinitionUri"]).read_text()
    for key, value in (raw.get("DefinitionSubstitutions") or {}).items():
        getatt = value.get("Fn::GetAtt") if isinstance(value, dict) else None
        if getatt and getatt[1] == "Arn" and \
                declared.template["Resources"][getatt[0]]["Type"] == "AWS::Serverless::Function":
            binary = declared.template["Resources"][getatt[0]]["Metadata"]["BuildProperties"]["Binary"]
            value = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{binary}"
        else:
            value = deploy.cfn_str(declared.resolve(value))
        text = text.replace("${" + key + "}", value)
    assert "${" not in text, f"{logical}: unsubstituted placeholder left in the definition"
    return json.loads(text)


def lambda_targets(node) -> set[str]:
    found = set()
    if isinstance(node, dict):
        if node.get("Resource", "").startswith("arn:aws:states:::lambda:invoke"):
            found.add(node.get("Parameters", {}).get("FunctionName"))
        for v in node.values():
            found |= lambda_targets(v)
    elif isinstance(node, list):
        for v in node:
            found |= lambda_targets(v)
    return found


def test_state_machines_hold_the_substituted_asl(deployed, template, declared, clients):
    sfn = clients("stepfunctions")
    machines = of_type(template, "AWS::Serverless::StateMachine")
    assert machines, "the template declares no state machine"
    binaries = {
        f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{r['Metadata']['BuildProperties']['Binary']}"
        for r in of_type(template, "AWS::Serverless::Function").values()
    }
    for logical in machines:
        name = declared.props(logical)["Name"]
        arn = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}"
        desc = sfn.describe_state_machine(stateMachineArn=arn)
        assert json.loads(desc["definition"]) == expected_definition(declared, logical)
        assert desc["type"] == declared.props(logical).get("Type", "STANDARD")
        targets = lambda_targets(json.loads(desc["definition"]))
        assert targets and targets <= binaries, f"{logical} invokes {targets}, functions are {binaries}"


def test_stack_json_has_the_template_outputs(deployed, template, declared, clients):
    stack, out = deployed
    written = json.loads((out / "stack.json").read_text())
    assert [o["OutputKey"] for o in written] == list(template.get("Outputs") or {})
    values = {o["OutputKey"]: o["OutputValue"] for o in written}
    for key, spec in (template.get("Outputs") or {}).items():
        want = deploy.cfn_str(declared.resolve(spec["Value"]))
        if key.endswith("QueueUrl"):
            # A queue URL carries the endpoint it was created through; the
            # account and queue name must agree.
            assert values[key].split("/")[-2:] == want.split("/")[-2:], key
        else:
            assert values[key] == want, key
    # design.md's contract keys, and that they name deployed things
    for key in ("AccountsTableName", "LedgerTableName", "RunsTableName", "AlarmTopicArn",
                "EventBusName", "AccrualCobStateMachineArn"):
        assert key in values, f"design.md output {key} missing"
    tables = set(clients("dynamodb").list_tables()["TableNames"])
    assert {values["AccountsTableName"], values["LedgerTableName"], values["RunsTableName"]} <= tables
    assert values["AlarmTopicArn"] in {t["TopicArn"] for t in clients("sns").list_topics()["Topics"]}
    clients("events").describe_event_bus(Name=values["EventBusName"])
    clients("stepfunctions").describe_state_machine(stateMachineArn=values["AccrualCobStateMachineArn"])


def test_functions_json_gives_each_function_its_own_environment_limits_and_role(deployed, template, declared):
    stack, out = deployed
    written = json.loads((out / "functions.json").read_text())
    functions = of_type(template, "AWS::Serverless::Function")
    glob = (template.get("Globals") or {}).get("Function") or {}
    assert sorted(written) == sorted(r["Metadata"]["BuildProperties"]["Binary"] for r in functions.values())
    for logical, res in functions.items():
        props = res.get("Properties") or {}
        spec = written[res["Metadata"]["BuildProperties"]["Binary"]]
        own = (props.get("Environment") or {}).get("Variables") or {}
        want = {k: deploy.cfn_str(declared.resolve(v)) for k, v in own.items()}
        if "TALLY_FAULT_INJECTION" in want:  # the deploy's --env overrides only what a function declares
            want["TALLY_FAULT_INJECTION"] = "enabled"
        assert spec["environment"] == want, logical
        assert spec["timeout_s"] == props.get("Timeout", glob.get("Timeout", 3)), logical
        assert spec["memory_mb"] == props.get("MemorySize", glob.get("MemorySize", 128)), logical
        assert spec["role_arn"] == f"arn:aws:iam::{ACCOUNT}:role/{STACK}-{logical}Role", logical


def test_every_role_is_deployed_with_exactly_the_templates_statements(deployed, declared, clients):
    iam = clients("iam")
    roles = [lid for lid in declared.resources_of("AWS::IAM::Role", "AWS::Serverless::Function",
                                                  "AWS::Serverless::StateMachine")]
    assert len(roles) > 10
    stack = deployed[0]  # resolved with what the deploy made (the alarm key's id)
    for lid in roles:
        want = stack.role_definition(lid)
        names = iam.list_role_policies(RoleName=want["name"])["PolicyNames"]
        assert sorted(names) == sorted(want["policies"]), lid
        for pname in names:
            doc = iam.get_role_policy(RoleName=want["name"], PolicyName=pname)["PolicyDocument"]
            doc = json.loads(doc) if isinstance(doc, str) else doc
            assert doc == json.loads(json.dumps(want["policies"][pname])), f"{lid}/{pname}"
    sm = clients("stepfunctions").describe_state_machine(
        stateMachineArn=declared.ref("AccrualCobStateMachine"))
    assert sm["roleArn"] == f"arn:aws:iam::{ACCOUNT}:role/{STACK}-AccrualCobStateMachineRole"


def test_redeploy_is_idempotent(deployed, local_stack, clients, tmp_path):
    before = sorted(clients("dynamodb").list_tables()["TableNames"])
    machines = clients("stepfunctions").list_state_machines()["stateMachines"]
    deploy.deploy(local_stack, TEMPLATE, STACK, {}, {}, tmp_path)
    assert sorted(clients("dynamodb").list_tables()["TableNames"]) == before
    assert clients("stepfunctions").list_state_machines()["stateMachines"] == machines
    assert (tmp_path / "stack.json").read_text() == (deployed[1] / "stack.json").read_text()


# ---------------------------------------------------------------------------
# gateway: Lambda invocations go to the Lambda host, errors keep their type
# ---------------------------------------------------------------------------


def test_gateway_routes_invoke_by_bare_name_and_relays_lambdas_answers(local_stack, clients):
    lam = clients("lambda")
    FakeLambdaHost.calls.clear()
    ok = lam.invoke(FunctionName=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:cob-partition:$LATEST",
                    Payload=b'{"partition": 3}')
    assert ok["StatusCode"] == 200 and "FunctionError" not in ok
    assert json.loads(ok["Payload"].read()) == {"function": "cob-partition", "event": {"partition": 3}}
    assert FakeLambdaHost.calls == ["/2015-03-31/functions/cob-partition/invocations"]
    bad = lam.invoke(FunctionName="fails", Payload=b"{}")
    assert bad["StatusCode"] == 200 and bad["FunctionError"] == "Unhandled"
    assert json.loads(bad["Payload"].read())["errorType"] == "TransientStoreError"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="missing", Payload=b"{}")
    with pytest.raises(lam.exceptions.TooManyRequestsException):
        lam.invoke(FunctionName="busy", Payload=b"{}")


def test_step_functions_sees_the_rust_error_type(local_stack, deployed, clients):
    """moto's engine calls back through the gateway (MOTO_PORT); Catch gets errorType."""
    sfn = clients("stepfunctions")
    definition = {
        "StartAt": "Call",
        "States": {
            "Call": {
                "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {"FunctionName": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:fails", "Payload": {}},
                "Catch": [{"ErrorEquals": ["TransientStoreError"], "ResultPath": "$.error", "Next": "Caught"}],
                "End": True,
            },
            "Caught": {"Type": "Pass", "End": True},
        },
    }
    arn = sfn.create_state_machine(name="gateway-error-probe", definition=json.dumps(definition),
                                   roleArn=f"arn:aws:iam::{ACCOUNT}:role/x")["stateMachineArn"]
    ex = sfn.start_execution(stateMachineArn=arn, name="probe-1", input="{}")["executionArn"]
    deadline = time.monotonic() + 30
    while (d := sfn.describe_execution(executionArn=ex))["status"] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.3)
    assert d["status"] == "SUCCEEDED", d
    assert json.loads(d["output"])["error"]["Error"] == "TransientStoreError"


# ---------------------------------------------------------------------------
# resolver unit tests (no endpoint)
# ---------------------------------------------------------------------------

MINI = textwrap.dedent("""
    Parameters:
      Threshold: {Type: Number, Default: 50000}
      Mode: {Type: String, Default: disabled, AllowedValues: [disabled, enabled]}
      Email: {Type: String, Default: ""}
    Conditions:
      HasEmail: !Not [!Equals [!Ref Email, ""]]
    Globals:
      Function:
        Environment: {Variables: {RUST_LOG: info}}
    Resources:
      Table:
        Type: AWS::DynamoDB::Table
        Properties:
          TableName: !Sub "${AWS::StackName}-accounts"
          BillingMode: PAY_PER_REQUEST
          AttributeDefinitions: [{AttributeName: id, AttributeType: S}]
          KeySchema: [{AttributeName: id, KeyType: HASH}]
      Topic:
        Type: AWS::SNS::Topic
        Properties: {TopicName: !Join ["-", [!Ref "AWS::StackName", alarms]]}
      Fn:
        Type: AWS::Serverless::Function
        Metadata: {BuildProperties: {Binary: cob-partition}}
        Properties:
          Environment:
            Variables:
              TABLE: !Ref Table
              THRESHOLD: !Ref Threshold
              MODE: !Ref Mode
              EXTRA: !If [HasEmail, !Ref Email, !Ref "AWS::NoValue"]
      Other:
        Type: AWS::Serverless::Function
        Metadata: {BuildProperties: {Binary: cob-aggregate}}
        Properties:
          Environment: {Variables: {TABLE: !Ref Table, TOPIC: !Ref Topic}}
    Outputs:
      TableName: {Value: !Ref Table}
      FnArn: {Value: !GetAtt Fn.Arn}
      Sub2: {Value: !Sub ["${Name}/${Topic.TopicName}/${!Literal}", {Name: !Ref Table}]}
""")


@pytest.fixture
def mini(tmp_path):
    path = tmp_path / "template.yaml"
    path.write_text(MINI)
    return deploy.load_template(path), path


def test_sub_uses_the_stack_name(mini):
    t, p = mini
    assert deploy.Stack(t, p, "tally").ref("Table") == "tally-accounts"
    assert deploy.Stack(t, p, "other").ref("Table") == "other-accounts"
    assert deploy.Stack(t, p, "other").props("Table")["TableName"] == "other-accounts"


def test_getatt_of_a_function_is_the_binary_arn(mini):
    t, p = mini
    s = deploy.Stack(t, p, "tally")
    assert s.resolve({"Fn::GetAtt": ["Fn", "Arn"]}) == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:cob-partition"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in s.outputs()}
    assert outputs["FnArn"].endswith(":function:cob-partition")
    assert outputs["Sub2"] == "tally-accounts/tally-alarms/${Literal}"
    with pytest.raises(deploy.TemplateError):
        s.resolve({"Fn::GetAtt": ["Fn", "NoSuchAttribute"]})


def test_ref_parameter_default_and_override(mini):
    t, p = mini
    env = deploy.Stack(t, p, "tally").lambda_env()
    assert env["THRESHOLD"] == "50000" and env["MODE"] == "disabled" and "EXTRA" not in env
    assert env["RUST_LOG"] == "info" and env["TOPIC"] == f"arn:aws:sns:{REGION}:{ACCOUNT}:tally-alarms"
    over = deploy.Stack(t, p, "tally", {"Threshold": "7", "Mode": "enabled", "Email": "a@b.c"}).lambda_env()
    assert over["THRESHOLD"] == "7" and over["MODE"] == "enabled" and over["EXTRA"] == "a@b.c"
    assert deploy.Stack(t, p, "tally").lambda_env({"MODE": "x"})["MODE"] == "x"
    with pytest.raises(deploy.TemplateError, match="AllowedValues"):
        deploy.Stack(t, p, "tally", {"Mode": "sometimes"})
    with pytest.raises(deploy.TemplateError, match="undeclared"):
        deploy.Stack(t, p, "tally", {"Nope": "1"})


def test_conflicting_function_environments_fail(mini):
    t, p = mini
    t["Resources"]["Other"]["Properties"]["Environment"]["Variables"]["TABLE"] = "something-else"
    with pytest.raises(deploy.TemplateError, match="TABLE differs"):
        deploy.Stack(t, p, "tally").lambda_env()


def test_unsupported_intrinsics_fail_loudly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("Resources:\n  T:\n    Type: AWS::SNS::Topic\n    Properties: {TopicName: !ImportValue shared}\n")
    with pytest.raises(deploy.UnsupportedIntrinsic, match="ImportValue"):
        deploy.Stack(deploy.load_template(bad), bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("Resources:\n  T:\n    Type: AWS::SNS::Topic\n    Properties: {TopicName: !Frobnicate x}\n")
    with pytest.raises(deploy.UnsupportedIntrinsic, match="Frobnicate"):
        deploy.load_template(unknown)


def test_definition_substitution():
    text = '{"F": "${FnArn}", "MaxConcurrency": ${Max}}'
    assert json.loads(deploy.substitute_definition(text, {"FnArn": "arn:x", "Max": "10"})) == {
        "F": "arn:x", "MaxConcurrency": 10}
    with pytest.raises(deploy.TemplateError, match="Max"):
        deploy.substitute_definition(text, {"FnArn": "arn:x"})


def test_gateway_function_names():
    assert gateway.function_name_from("arn:aws:lambda:us-east-1:123456789012:function:cob-partition") == "cob-partition"
    assert gateway.function_name_from(
        "arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Acob-aggregate%3Aprod") == "cob-aggregate"
    assert gateway.function_name_from("cob-coordinator") == "cob-coordinator"
    assert re.match(gateway.INVOKE_PATH, "/2015-03-31/functions/x/invocations")
