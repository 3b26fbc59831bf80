"""localstack/moto_launcher.py: moto_server with an item-level TransactWriteItems rollback.

Starts the patched launcher and, for comparison, a plain `moto_server` (each on
a free port, in-memory), and checks with boto3 that

* a successful transaction writes every item (table and GSI);
* a cancelled one reports one CancellationReason per item, in order, and rolls
  back exactly what it had written (an Update of an existing item, a Put of a
  new item -- gone from the GSI too --, a Delete), identically to plain moto;
* a duplicate key is still a ValidationException (with rollback);
* the patch is active: at 50,000 items, a 100-item transaction is >= 10x
  faster than plain moto's. Plain moto deep-copies the table once per
  transaction *item* naming it (about 1.5 s per copy at 50,000 items, so
  ~150 s for one 100-item transaction), so plain moto is timed with 2-item
  transactions (1 Update + 1 Put, two copies) and the patched launcher with
  100-item ones; the patched one must still be >= 10x faster. The numbers are
  printed (`pytest -s`); this guards the patch, it is not a benchmark of Tally;
* moto 5.2.5 runs several Step Functions executions in one process (5.2.1
  could run only one: moto #10077).

Run: /root/.cache/tally/venv/bin/python -m pytest tests/static/test_moto_patch.py -q -s
"""
from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

boto3 = pytest.importorskip("boto3")
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "localstack" / "moto_launcher.py"
REGION = "us-east-1"

TABLE = "ledger"
GSI = "byAccount"
BIG_ITEMS = 50_000
PERF_TXNS = 20
PERF_ITEMS = 100
UNPATCHED_TXNS = 2
UNPATCHED_ITEMS = 2  # plain moto copies the whole table once per item: keep the test short


# ---------------------------------------------------------------------------
# servers
# ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{url} did not answer within {timeout}s")


def start_server(cmd: list[str], tmp: Path, name: str):
    port = free_port()
    log = tmp / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd + ["-H", "127.0.0.1", "-p", str(port)],
                                env=dict(os.environ, MOTO_PORT=str(port)),
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    wait_http(f"{endpoint}/moto-api/config", proc, log)
    return proc, endpoint, log


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="module")
def patched(tmp_path_factory):
    proc, endpoint, log = start_server([sys.executable, str(LAUNCHER)],
                                       tmp_path_factory.mktemp("moto-patched"), "patched")
    try:
        yield endpoint
    finally:
        stop_server(proc)
    assert "transact_write_items patched" in log.read_text(errors="replace")


@pytest.fixture(scope="module")
def unpatched(tmp_path_factory):
    exe = Path(sys.executable).parent / "moto_server"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    proc, endpoint, _ = start_server(cmd, tmp_path_factory.mktemp("moto-plain"), "plain")
    try:
        yield endpoint
    finally:
        stop_server(proc)


def client(endpoint: str, service: str = "dynamodb"):
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id="test", aws_secret_access_key="test",
                        config=Config(retries={"max_attempts": 1}, read_timeout=600))


# ---------------------------------------------------------------------------
# data helpers
# ---------------------------------------------------------------------------


def create_ledger(ddb, name: str = TABLE) -> None:
    """pk/sk table with a GSI on account/seq (like a ledger: postings per account)."""
    ddb.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": t}
                              for a, t in (("pk", "S"), ("sk", "S"), ("account", "S"), ("seq", "N"))],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[{
            "IndexName": GSI,
            "KeySchema": [{"AttributeName": "account", "KeyType": "HASH"},
                          {"AttributeName": "seq", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "ALL"},
        }],
    )


def account_item(acct: str, balance: int, version: int) -> dict:
    return {"pk": {"S": f"ACCT#{acct}"}, "sk": {"S": "STATE"},
            "balance": {"N": str(balance)}, "version": {"N": str(version)}}


def posting_item(acct: str, seq: int, amount: int = 1) -> dict:
    return {"pk": {"S": f"POST#{acct}#{seq:08d}"}, "sk": {"S": "P"}, "account": {"S": acct},
            "seq": {"N": str(seq)}, "amount": {"N": str(amount)}}


def update_account(acct: str, delta: int, expect_version: int, table: str = TABLE) -> dict:
    return {"Update": {
        "TableName": table, "Key": {"pk": {"S": f"ACCT#{acct}"}, "sk": {"S": "STATE"}},
        "UpdateExpression": "SET balance = balance + :d, version = version + :one",
        "ConditionExpression": "version = :v",
        "ExpressionAttributeValues": {":d": {"N": str(delta)}, ":one": {"N": "1"},
                                      ":v": {"N": str(expect_version)}},
    }}


def put_new(item: dict, table: str = TABLE) -> dict:
    return {"Put": {"TableName": table, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}}


def get(ddb, pk: str, sk: str, table: str = TABLE):
    return ddb.get_item(TableName=table, Key={"pk": {"S": pk}, "sk": {"S": sk}},
                        ConsistentRead=True).get("Item")


def gsi_seqs(ddb, acct: str, table: str = TABLE) -> list[int]:
    items, kwargs = [], {}
    while True:
        page = ddb.query(TableName=table, IndexName=GSI, KeyConditionExpression="account = :a",
                         ExpressionAttributeValues={":a": {"S": acct}}, **kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return [int(i["seq"]["N"]) for i in items]
        kwargs = {"ExclusiveStartKey": page["LastEvaluatedKey"]}


def full_state(ddb, table: str) -> list[dict]:
    items, kwargs = [], {}
    while True:
        page = ddb.scan(TableName=table, **kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return sorted(items, key=lambda i: (i["pk"]["S"], i["sk"]["S"]))
        kwargs = {"ExclusiveStartKey": page["LastEvaluatedKey"]}


# ---------------------------------------------------------------------------
# semantics
# ---------------------------------------------------------------------------


def test_successful_transaction_writes_all_items(patched):
    ddb = client(patched)
    create_ledger(ddb, "ok")
    ddb.put_item(TableName="ok", Item=account_item("A", 100, 1))
    ddb.transact_write_items(TransactItems=[
        update_account("A", 30, 1, "ok"),
        *(put_new(posting_item("A", s, 10), "ok") for s in (1, 2, 3)),
    ])
    assert get(ddb, "ACCT#A", "STATE", "ok") == account_item("A", 130, 2)
    for s in (1, 2, 3):
        assert get(ddb, f"POST#A#{s:08d}", "P", "ok") == posting_item("A", s, 10)
    assert gsi_seqs(ddb, "A", "ok") == [1, 2, 3]


def cancelled_scenario(endpoint: str, table: str) -> dict:
    """Items 1,2,4,5 would succeed, item 3's condition fails. Returns what is observable."""
    ddb = client(endpoint)
    create_ledger(ddb, table)
    ddb.put_item(TableName=table, Item=account_item("B", 100, 1))
    ddb.put_item(TableName=table, Item=posting_item("B", 7))  # makes item 3 fail
    ddb.put_item(TableName=table, Item=posting_item("B", 9))  # deleted by item 4
    before = full_state(ddb, table)
    with pytest.raises(ClientError) as exc:
        ddb.transact_write_items(TransactItems=[
            update_account("B", 50, 1, table),          # 1: modifies an existing item
            put_new(posting_item("B", 8), table),        # 2: creates a new item (in the GSI too)
            put_new(posting_item("B", 7, 99), table),    # 3: exists -> ConditionalCheckFailed
            {"Delete": {"TableName": table,              # 4: deletes an existing item
                        "Key": {"pk": {"S": "POST#B#00000009"}, "sk": {"S": "P"}}}},
            put_new(posting_item("B", 10), table),       # 5: creates a new item
        ])
    err = exc.value.response
    return {
        "code": err["Error"]["Code"],
        "message": err["Error"]["Message"],
        "reasons": err.get("CancellationReasons"),
        "before": before,
        "after": full_state(ddb, table),
        "gsi": gsi_seqs(ddb, "B", table),
        "account": get(ddb, "ACCT#B", "STATE", table),
        "new_posting": get(ddb, "POST#B#00000008", "P", table),
        "later_posting": get(ddb, "POST#B#00000010", "P", table),
    }


def test_cancelled_transaction_reports_reasons_in_order_and_rolls_back(patched, unpatched):
    got = cancelled_scenario(patched, "cancel")
    assert got["code"] == "TransactionCanceledException"
    codes = [r["Code"] for r in got["reasons"]]
    assert codes == ["None", "None", "ConditionalCheckFailed", "None", "None"], got["reasons"]
    assert got["after"] == got["before"]
    assert got["account"] == account_item("B", 100, 1)   # the Update is undone
    assert got["new_posting"] is None                     # the Put is gone ...
    assert got["later_posting"] is None
    assert got["gsi"] == [7, 9]                           # ... from the GSI too; the Delete is undone
    # and exactly what plain moto answers and leaves behind
    assert got == cancelled_scenario(unpatched, "cancel")


def duplicate_scenario(endpoint: str, table: str) -> dict:
    ddb = client(endpoint)
    create_ledger(ddb, table)
    ddb.put_item(TableName=table, Item=account_item("C", 5, 1))
    before = full_state(ddb, table)
    with pytest.raises(ClientError) as exc:
        ddb.transact_write_items(TransactItems=[
            update_account("C", 1, 1, table),
            put_new(posting_item("C", 1), table),
            put_new(posting_item("C", 1, 2), table),  # same key as the previous item
        ])
    err = exc.value.response
    return {"code": err["Error"]["Code"], "message": err["Error"]["Message"],
            "reasons": err.get("CancellationReasons"), "before": before, "after": full_state(ddb, table)}


def test_duplicate_key_is_a_validation_error(patched, unpatched):
    got = duplicate_scenario(patched, "dup")
    assert got["code"] == "ValidationException"
    assert "multiple operations on one item" in got["message"]
    assert got["after"] == got["before"]
    assert got == duplicate_scenario(unpatched, "dup")


# ---------------------------------------------------------------------------
# the patch is active: O(items) instead of O(table)
# ---------------------------------------------------------------------------


def load_table(ddb, n: int, workers: int = 1) -> float:
    """BatchWriteItem n postings (25 per call); returns items per second."""
    def batch(start: int) -> None:
        req = [{"PutRequest": {"Item": posting_item(f"L{i % 500}", i)}} for i in range(start, min(start + 25, n))]
        while req:
            out = ddb.batch_write_item(RequestItems={TABLE: req})
            req = out.get("UnprocessedItems", {}).get(TABLE, [])

    t0 = time.perf_counter()
    if workers == 1:
        for start in range(0, n, 25):
            batch(start)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(batch, range(0, n, 25)))
    return n / (time.perf_counter() - t0)


def time_transactions(ddb, count: int, size: int, first_seq: int) -> float:
    """`count` transactions of `size` items (1 conditional Update of an account + conditional
    Puts of new postings, like the COB); seconds per transaction."""
    ddb.put_item(TableName=TABLE, Item=account_item("P", 0, 0))
    t0 = time.perf_counter()
    seq = first_seq
    for version in range(count):
        items = [update_account("P", size - 1, version)]
        for _ in range(size - 1):
            items.append(put_new(posting_item("P", seq)))
            seq += 1
        ddb.transact_write_items(TransactItems=items)
    elapsed = (time.perf_counter() - t0) / count
    assert get(ddb, "ACCT#P", "STATE") == account_item("P", (size - 1) * count, count)
    return elapsed


def test_transaction_cost_does_not_grow_with_the_table(patched, unpatched):
    fast, slow = client(patched), client(unpatched)
    create_ledger(fast)
    create_ledger(slow)
    rate = load_table(fast, BIG_ITEMS)
    load_table(slow, BIG_ITEMS, workers=4)
    assert fast.describe_table(TableName=TABLE)["Table"]["ItemCount"] == BIG_ITEMS

    per_txn_patched = time_transactions(fast, PERF_TXNS, PERF_ITEMS, BIG_ITEMS)
    per_txn_plain = time_transactions(slow, UNPATCHED_TXNS, UNPATCHED_ITEMS, BIG_ITEMS)
    print(f"\nBatchWriteItem into the patched launcher: {rate:,.0f} items/s "
          f"(1 client, 25 items per call, {BIG_ITEMS:,} items)")
    print(f"TransactWriteItems at {BIG_ITEMS:,} items: patched {per_txn_patched * 1000:.1f} ms per "
          f"{PERF_ITEMS}-item txn ({PERF_TXNS} txns); plain moto {per_txn_plain * 1000:.0f} ms per "
          f"{UNPATCHED_ITEMS}-item txn ({UNPATCHED_TXNS} txns; one table copy per item, so ~"
          f"{per_txn_plain * PERF_ITEMS / UNPATCHED_ITEMS:.0f} s per {PERF_ITEMS}-item txn)")
    assert per_txn_plain >= 10 * per_txn_patched, (per_txn_patched, per_txn_plain)


# ---------------------------------------------------------------------------
# Step Functions: more than one execution per moto process
# ---------------------------------------------------------------------------


def test_two_step_functions_executions_in_one_process(patched):
    req = urllib.request.Request(f"{patched}/moto-api/config", method="POST",
                                 data=json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status in (200, 201)
    sfn = client(patched, "stepfunctions")
    arn = sfn.create_state_machine(
        name="two-runs", roleArn="arn:aws:iam::123456789012:role/tally-local-states",
        definition=json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}),
    )["stateMachineArn"]
    runs = [sfn.start_execution(stateMachineArn=arn, name=f"run-{i}", input=json.dumps({"i": i}))["executionArn"]
            for i in (1, 2)]
    deadline = time.monotonic() + 60
    status = {}
    while time.monotonic() < deadline:
        status = {r: sfn.describe_execution(executionArn=r) for r in runs}
        if all(d["status"] != "RUNNING" for d in status.values()):
            break
        time.sleep(0.2)
    assert [d["status"] for d in status.values()] == ["SUCCEEDED", "SUCCEEDED"], status
    assert [json.loads(d["output"]) for d in status.values()] == [{"i": 1}, {"i": 2}]


# ---------------------------------------------------------------------------
# indexed GSI queries: same answers as plain moto, without walking the table
# ---------------------------------------------------------------------------

def _gsi_table(ddb, name: str) -> None:
    ddb.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"},
                              {"AttributeName": "sh", "AttributeType": "N"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[{"IndexName": "by_sh", "Projection": {"ProjectionType": "KEYS_ONLY"},
                                 "KeySchema": [{"AttributeName": "sh", "KeyType": "HASH"},
                                               {"AttributeName": "id", "KeyType": "RANGE"}]}])


def _gsi_query(ddb, name: str, sh: int, limit=None, start=None):
    kw = dict(TableName=name, IndexName="by_sh", KeyConditionExpression="sh = :s",
              ExpressionAttributeValues={":s": {"N": str(sh)}})
    if limit:
        kw["Limit"] = limit
    if start:
        kw["ExclusiveStartKey"] = start
    r = ddb.query(**kw)
    return r["Items"], r.get("LastEvaluatedKey"), r["Count"]


def test_gsi_queries_answer_as_plain_moto_through_every_kind_of_write(patched, unpatched):
    import random
    name = "gsi_differential"
    clients = [client(patched), client(unpatched)]
    for c in clients:
        _gsi_table(c, name)
    rnd = random.Random(3)

    def both(f):
        out = []
        for c in clients:
            try:
                out.append(("ok", f(c)))
            except ClientError as e:
                out.append(("err", e.response["Error"]["Code"]))
        return out

    for step in range(300):
        op, i, sh = rnd.random(), str(rnd.randrange(60)), str(rnd.randrange(4))
        if op < 0.35:
            # A non-key attribute too: a KEYS_ONLY query must not return it.
            both(lambda c: c.put_item(TableName=name, Item={"id": {"S": i}, "sh": {"N": sh}, "pad": {"S": "x" * 40}}))
        elif op < 0.45:  # an item without the index key: not in the index
            both(lambda c: c.put_item(TableName=name, Item={"id": {"S": i}, "v": {"N": "1"}}))
        elif op < 0.60:  # the update adds or moves the index key
            both(lambda c: c.update_item(TableName=name, Key={"id": {"S": i}}, UpdateExpression="SET sh = :s",
                                         ExpressionAttributeValues={":s": {"N": sh}}))
        elif op < 0.68:  # the update removes it
            both(lambda c: c.update_item(TableName=name, Key={"id": {"S": i}}, UpdateExpression="REMOVE sh"))
        elif op < 0.80:
            both(lambda c: c.delete_item(TableName=name, Key={"id": {"S": i}}))
        else:  # a transaction that moves and adds index keys, then is rolled back
            r = both(lambda c: c.transact_write_items(TransactItems=[
                {"Put": {"TableName": name, "Item": {"id": {"S": "tx" + i}, "sh": {"N": sh}}}},
                {"Update": {"TableName": name, "Key": {"id": {"S": i}}, "UpdateExpression": "SET sh = :s",
                            "ExpressionAttributeValues": {":s": {"N": "9"}}}},
                {"ConditionCheck": {"TableName": name, "Key": {"id": {"S": "absent"}},
                                    "ConditionExpression": "attribute_exists(id)"}}]))
            assert r[0] == r[1] == ("err", "TransactionCanceledException")
        for s in (0, 1, 2, 3, 9):
            a, b = both(lambda c: _gsi_query(c, name, s))
            assert a == b, (step, s)
        a, b = both(lambda c: _gsi_query(c, name, int(sh), limit=3))
        assert a == b
        if a[1][1]:
            a2, b2 = both(lambda c: _gsi_query(c, name, int(sh), limit=3, start=a[1][1]))
            assert a2 == b2


@functools.lru_cache(maxsize=1)
def _in_process_launcher():
    """The launcher loaded once into this process, its patch applied (a second
    load would find moto already patched and refuse)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("moto_launcher_under_test", LAUNCHER)
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)
    launcher.apply_patch()
    return launcher


def test_a_gsi_query_does_not_walk_the_table(monkeypatch):
    """Deterministic guard that the query patch is active: in-process moto with
    the patch applied, counting walks of the whole table."""
    from moto import mock_aws

    launcher = _in_process_launcher()
    walks = []
    original = launcher._ORIGINAL_ALL_ITEMS
    monkeypatch.setattr(launcher, "_ORIGINAL_ALL_ITEMS", lambda table: walks.append(1) or original(table))
    with mock_aws():
        c = boto3.client("dynamodb", region_name=REGION)
        _gsi_table(c, "gsi_walks")
        for k in range(0, 500, 25):
            c.batch_write_item(RequestItems={"gsi_walks": [
                {"PutRequest": {"Item": {"id": {"S": f"a{i:04}"}, "sh": {"N": str(i % 50)}}}} for i in range(k, k + 25)]})
        assert _gsi_query(c, "gsi_walks", 1)[2] == 10
        assert len(walks) == 1, "the first query builds the map with one walk"
        for s in range(50):
            assert _gsi_query(c, "gsi_walks", s)[2] == 10
        # Updates that leave the index key alone keep the map.
        c.update_item(TableName="gsi_walks", Key={"id": {"S": "a0001"}}, UpdateExpression="SET v = :v",
                      ExpressionAttributeValues={":v": {"N": "1"}})
        assert _gsi_query(c, "gsi_walks", 1)[2] == 10
        assert len(walks) == 1, f"queries walked the table {len(walks) - 1} more times"
        # Moving an item to another index key rebuilds it, once.
        c.update_item(TableName="gsi_walks", Key={"id": {"S": "a0001"}}, UpdateExpression="SET sh = :s",
                      ExpressionAttributeValues={":s": {"N": "2"}})
        assert (_gsi_query(c, "gsi_walks", 1)[2], _gsi_query(c, "gsi_walks", 2)[2]) == (9, 11)
        assert len(walks) == 2


def test_a_base_table_query_reads_only_its_partition(monkeypatch):
    """moto finds a base-table query's partition by walking and sorting the
    whole table; the patch hands it the partition's own items."""
    from moto import mock_aws

    launcher = _in_process_launcher()
    walks = []
    original = launcher._ORIGINAL_ALL_ITEMS
    monkeypatch.setattr(launcher, "_ORIGINAL_ALL_ITEMS", lambda table: walks.append(1) or original(table))
    with mock_aws():
        c = boto3.client("dynamodb", region_name=REGION)
        c.create_table(TableName="pk_walks", BillingMode="PAY_PER_REQUEST",
                       AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                             {"AttributeName": "sk", "AttributeType": "S"}],
                       KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                  {"AttributeName": "sk", "KeyType": "RANGE"}])
        for k in range(0, 200, 25):
            c.batch_write_item(RequestItems={"pk_walks": [
                {"PutRequest": {"Item": {"pk": {"S": f"p{i % 4}"}, "sk": {"S": f"s{i:04}"}}}}
                for i in range(k, k + 25)]})
        for p in range(4):
            got = c.query(TableName="pk_walks", KeyConditionExpression="pk = :p",
                          ExpressionAttributeValues={":p": {"S": f"p{p}"}})["Items"]
            assert [i["sk"]["S"] for i in got] == [f"s{i:04}" for i in range(p, 200, 4)]
        assert c.query(TableName="pk_walks", KeyConditionExpression="pk = :p",
                       ExpressionAttributeValues={":p": {"S": "none"}})["Count"] == 0
        assert walks == [], f"base-table queries walked the table {len(walks)} times"


# ---------------------------------------------------------------------------
# request-path patches: the same bytes-for-meaning as plain moto
# ---------------------------------------------------------------------------


def _raw(endpoint: str, target: str, body: dict) -> tuple[int, str, dict]:
    """One DynamoDB call over plain HTTP: (status, content type, parsed body)."""
    req = urllib.request.Request(endpoint + "/", method="POST", data=json.dumps(body).encode(), headers={
        "Content-Type": "application/x-amz-json-1.0",
        "X-Amz-Target": f"DynamoDB_20120810.{target}",
        "Authorization": "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/aws4_request, "
                         "SignedHeaders=host, Signature=0",
    })
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers["Content-Type"], json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], json.loads(e.read())


def test_read_responses_and_cached_expressions_match_plain_moto(patched, unpatched):
    """GetItem, BatchGetItem, Query and Scan answered by the launcher's plain-JSON
    path, and conditional writes through the expression caches, give the same
    status, content type and body as plain moto: every attribute type (binary
    ones fall back to moto's serializer), projections, paging, capacity,
    missing items, and errors."""
    name = "read_differential"
    everything = {
        "pk": {"S": "a"}, "sk": {"N": "1"}, "s": {"S": "ü ✓ \"quoted\""}, "n": {"N": "-12.50"},
        "t": {"BOOL": True}, "z": {"NULL": True}, "ss": {"SS": ["x", "y"]}, "ns": {"NS": ["1", "2.5"]},
        "m": {"M": {"in": {"L": [{"S": "l"}, {"N": "3"}, {"M": {}}]}}}, "g": {"S": "idx"},
    }
    binary = {"pk": {"S": "b"}, "sk": {"N": "1"}, "bin": {"B": "AAEC"}, "bs": {"BS": ["AQ==", "Ag=="]}}
    calls = [
        ("CreateTable", {"TableName": name, "BillingMode": "PAY_PER_REQUEST",
                         "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"},
                                                  {"AttributeName": "sk", "AttributeType": "N"},
                                                  {"AttributeName": "g", "AttributeType": "S"}],
                         "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"},
                                       {"AttributeName": "sk", "KeyType": "RANGE"}],
                         "GlobalSecondaryIndexes": [{"IndexName": "by_g", "Projection": {"ProjectionType": "KEYS_ONLY"},
                                                     "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}]}]}),
        ("PutItem", {"TableName": name, "Item": everything}),
        ("PutItem", {"TableName": name, "Item": binary}),
    ] + [("PutItem", {"TableName": name, "Item": {"pk": {"S": "a"}, "sk": {"N": str(i)}, "g": {"S": "idx"}}})
         for i in range(2, 7)] + [
        ("GetItem", {"TableName": name, "Key": {"pk": {"S": "a"}, "sk": {"N": "1"}}}),
        ("GetItem", {"TableName": name, "Key": {"pk": {"S": "a"}, "sk": {"N": "1"}}, "ConsistentRead": True,
                     "ProjectionExpression": "#m.#i[1], ss", "ExpressionAttributeNames": {"#m": "m", "#i": "in"},
                     "ReturnConsumedCapacity": "TOTAL"}),
        ("GetItem", {"TableName": name, "Key": {"pk": {"S": "nope"}, "sk": {"N": "1"}}}),
        ("GetItem", {"TableName": name, "Key": {"pk": {"S": "b"}, "sk": {"N": "1"}}}),
        ("GetItem", {"TableName": "no_such_table", "Key": {"pk": {"S": "a"}}}),
        ("BatchGetItem", {"RequestItems": {name: {"Keys": [{"pk": {"S": k}, "sk": {"N": str(n)}}
                                                           for k, n in (("a", 1), ("a", 4), ("b", 1), ("zz", 9))]}},
                          "ReturnConsumedCapacity": "TOTAL"}),
        ("BatchGetItem", {"RequestItems": {name: {"Keys": [{"pk": {"S": "a"}, "sk": {"N": "2"}}],
                                                  "ProjectionExpression": "sk"}}}),
        ("Query", {"TableName": name, "KeyConditionExpression": "pk = :p AND sk > :s",
                   "ExpressionAttributeValues": {":p": {"S": "a"}, ":s": {"N": "1"}}, "Limit": 2}),
        ("Query", {"TableName": name, "KeyConditionExpression": "pk = :p",
                   "ExpressionAttributeValues": {":p": {"S": "a"}, ":x": {"N": "4"}}, "FilterExpression": "sk <> :x",
                   "ExclusiveStartKey": {"pk": {"S": "a"}, "sk": {"N": "2"}}, "ScanIndexForward": False,
                   "ReturnConsumedCapacity": "INDEXES"}),
        ("Query", {"TableName": name, "IndexName": "by_g", "KeyConditionExpression": "g = :g",
                   "ExpressionAttributeValues": {":g": {"S": "idx"}}, "Select": "COUNT"}),
        ("Query", {"TableName": name, "KeyConditionExpression": "pk = :p",
                   "ExpressionAttributeValues": {":p": {"S": "b"}}}),
        ("Query", {"TableName": name, "KeyConditionExpression": "pk = :p",
                   "ExpressionAttributeValues": {":p": {"S": "no such partition"}}}),
        ("Query", {"TableName": name, "KeyConditionExpression": "pk = :p AND sk BETWEEN :a AND :b",
                   "ExpressionAttributeValues": {":p": {"S": "a"}, ":a": {"N": "2"}, ":b": {"N": "5"}},
                   "ConsistentRead": True}),
        ("Scan", {"TableName": name, "Limit": 3}),
        ("Scan", {"TableName": name, "FilterExpression": "attribute_exists(ss)"}),
        # Conditional writes through the cached expressions: met, failed, in a transaction.
        ("UpdateItem", {"TableName": name, "Key": {"pk": {"S": "a"}, "sk": {"N": "2"}},
                        "UpdateExpression": "SET c = if_not_exists(c, :z) + :one",
                        "ConditionExpression": "attribute_exists(pk) AND g = :g",
                        "ExpressionAttributeValues": {":z": {"N": "0"}, ":one": {"N": "1"}, ":g": {"S": "idx"}},
                        "ReturnValues": "ALL_NEW"}),
        ("UpdateItem", {"TableName": name, "Key": {"pk": {"S": "a"}, "sk": {"N": "2"}},
                        "UpdateExpression": "SET c = if_not_exists(c, :z) + :one",
                        "ConditionExpression": "attribute_exists(pk) AND g = :g",
                        "ExpressionAttributeValues": {":z": {"N": "0"}, ":one": {"N": "1"}, ":g": {"S": "other"}}}),
        ("TransactWriteItems", {"TransactItems": [
            {"Update": {"TableName": name, "Key": {"pk": {"S": "a"}, "sk": {"N": "3"}},
                        "UpdateExpression": "SET c = if_not_exists(c, :z) + :one",
                        "ConditionExpression": "attribute_exists(pk) AND g = :g",
                        "ExpressionAttributeValues": {":z": {"N": "0"}, ":one": {"N": "1"}, ":g": {"S": "idx"}}}},
            {"Put": {"TableName": name, "Item": {"pk": {"S": "a"}, "sk": {"N": "3"}},
                     "ConditionExpression": "attribute_not_exists(pk)"}}]}),
        ("TransactWriteItems", {"TransactItems": [
            {"Update": {"TableName": name, "Key": {"pk": {"S": "a"}, "sk": {"N": "4"}},
                        "UpdateExpression": "SET c = if_not_exists(c, :z) + :one",
                        "ConditionExpression": "attribute_exists(pk) AND g = :g",
                        "ExpressionAttributeValues": {":z": {"N": "0"}, ":one": {"N": "1"}, ":g": {"S": "idx"}}}},
            {"Put": {"TableName": name, "Item": {"pk": {"S": "a"}, "sk": {"N": "1"}},
                     "ConditionExpression": "attribute_not_exists(pk)"}},
            {"ConditionCheck": {"TableName": name, "Key": {"pk": {"S": "b"}, "sk": {"N": "1"}},
                                "ConditionExpression": "attribute_exists(bin)"}}]}),
        ("Scan", {"TableName": name, "ConsistentRead": True}),
    ]
    for target, body in calls:
        mine, plain = _raw(patched, target, body), _raw(unpatched, target, body)
        if target == "CreateTable":  # timestamps and ARNs differ by construction
            assert mine[0] == plain[0] == 200
            continue
        assert mine == plain, (target, body)
