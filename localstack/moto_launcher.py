#!/usr/bin/env python3
"""Drop-in replacement for the `moto_server` command, with one performance patch.

    python localstack/moto_launcher.py [-H HOST] [-p PORT] [other moto_server options]

Same CLI and behaviour as `moto_server` (it runs `moto.server.main`, the
function behind that entry point, so `-H/-p/-r/-s/-c/-k` and the MOTO_PORT
environment variable work exactly as there), after replacing
`DynamoDBBackend.transact_write_items`.

Why: moto 5.2.5's TransactWriteItems takes `copy.deepcopy()` of every table
the transaction touches, on every call, so that it can roll back. That is
O(table size) per call; Tally's COB writes postings in transactions of up to
100 items against tables of 10^5..10^6 items, which made the local stack
unusably slow. The patched method is moto's method body verbatim except for the
snapshot/rollback: it keeps an undo log of only the items the transaction
touches (a deep copy of each item before its operation, or "absent") and, on
failure, puts exactly those items back (or deletes the ones that did not
exist). Validations, exceptions (TransactionCanceledException with one
CancellationReason per item in order, MultipleTransactionsException for a
duplicate key, MockValidationException re-raised) and rollback are moto's.

moto keeps no separate index data: a table's items live in `Table.items`
(hash -> Item, or hash -> {range -> Item}) and LSI/GSI queries and scans are
computed from it, so restoring `Table.items` restores the indexes. The only
other state the write path changes is the table's stream shard (records are
appended to `StreamShard.items`); the undo log truncates that list back too,
as moto's table-replacing rollback did. (Records already handed to a Lambda
event source mapping cannot be recalled -- the same in moto.)

Difference from moto's rollback, on purpose: moto replaced the whole Table
object by its copy, so writes of *other* requests that ran concurrently
(moto's server is threaded) were lost on a rollback; this one restores only the
transaction's own items and keeps the Table object.

The method was taken from moto 5.2.5 (moto/dynamodb/models/__init__.py). The
launcher refuses to start with any other moto version, or if the source of the
original method differs from what the patch was written against: after a moto
upgrade, re-read the new method, port the patch, and update
EXPECTED_MOTO_VERSION / EXPECTED_ORIGINAL_SHA256.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import sys
import threading
from typing import Any

EXPECTED_MOTO_VERSION = "5.2.5"
# sha256 of inspect.getsource(DynamoDBBackend.transact_write_items) in moto 5.2.5
EXPECTED_ORIGINAL_SHA256 = "81db2cb7d94e39c90b3a2077e1f4bb41a449c558ef9b1b1e2910fdaa39978ad4"

import moto  # noqa: E402

if moto.__version__ != EXPECTED_MOTO_VERSION:
    raise RuntimeError(
        f"localstack/moto_launcher.py patches moto {EXPECTED_MOTO_VERSION}'s DynamoDB "
        f"transact_write_items, but moto {moto.__version__} is installed. Review the patch "
        f"against the new moto (or install moto[server]=={EXPECTED_MOTO_VERSION}, see "
        f"localstack/requirements.txt)."
    )

from moto.dynamodb.models import (  # noqa: E402
    ConditionalCheckFailed,
    DynamoDBBackend,
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
    get_filter_expression,
)

_ORIGINAL = DynamoDBBackend.transact_write_items


def _source_sha256(func: Any) -> str:
    return hashlib.sha256(inspect.getsource(func).encode()).hexdigest()


class _UndoLog:
    """Before-images of the items one transaction touches (key-level, not table-level)."""

    def __init__(self, backend: DynamoDBBackend):
        self.backend = backend
        # (table, hash_key, range_key, hash_bucket_existed, deep copy of the item or None)
        self.entries: list[tuple[Any, Any, Any, bool, Any]] = []
        self.seen: set[tuple[int, Any, Any]] = set()
        # id(table) -> (stream shard, its record list, the list's length)
        self.streams: dict[int, tuple[Any, list, int]] = {}

    def record(self, table_name: str, key: dict[str, Any]) -> None:
        """Remember the item under `key` as it is now (call before the operation)."""
        try:
            # exactly the lookups self.get_item(table_name, key) does next; if they
            # fail, the operation fails the same way before it writes anything
            table = self.backend.get_table(table_name)
            hash_key, range_key = self.backend.get_keys_value(table, key)
        except Exception:
            return
        ident = (id(table), hash_key, range_key)
        if ident in self.seen:
            return
        self.seen.add(ident)
        existed = hash_key in table.items  # .get / `in`: the defaultdict must not grow here
        current = table.items.get(hash_key)
        if table.has_range_key and current is not None:
            current = current.get(range_key)
        self.entries.append((table, hash_key, range_key, existed,
                             copy.deepcopy(current) if current is not None else None))
        shard = table.stream_shard
        if shard is not None and id(table) not in self.streams:
            self.streams[id(table)] = (shard, shard.items, len(shard.items))

    def rollback(self) -> None:
        for table, hash_key, range_key, existed, before in reversed(self.entries):
            if not table.has_range_key:
                if before is None:
                    table.items.pop(hash_key, None)
                else:
                    table.items[hash_key] = before
                continue
            if before is not None:
                table.items[hash_key][range_key] = before
                continue
            bucket = table.items.get(hash_key)
            if bucket is not None:
                bucket.pop(range_key, None)
                # get_item() on a defaultdict leaves an empty bucket behind; moto's
                # table-copy rollback dropped those, so do we
                if not existed and not bucket:
                    table.items.pop(hash_key, None)
        for shard, records, length in self.streams.values():
            del records[length:]
            shard.items = records


def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    # Body of moto 5.2.5 DynamoDBBackend.transact_write_items; only the lines marked
    # PATCH differ: the table deepcopy, the two table-restoring rollbacks, and the
    # condition passed on to put/update/delete_item. moto evaluated each item's
    # condition twice, here and again inside the write; the transaction lock
    # (below) means nothing can change the item in between, so the second
    # evaluation (a second parse of the expression) is dropped.
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    # PATCH: instead of `original_table_state[name] = copy.deepcopy(self.tables[name])`
    # for every table named in the transaction, an undo log of the touched items.
    # moto's pre-pass is kept without the copy, so that a malformed item (e.g. {})
    # still fails here, before anything is written, with the same exception.
    for item in transact_items:
        _, op = next(iter(item.items()))
        op.get("TableName")
    undo = _UndoLog(self)

    target_items: set[tuple[str, str]] = set()

    def check_unicity(table_name: str, key: dict[str, Any]) -> None:
        item = (str(table_name), str(dict(sorted(key.items()))))
        if item in target_items:
            raise MultipleTransactionsException()
        target_items.add(item)

    errors: list[
        tuple[str, str, dict[str, Any]] | tuple[None, None, None]
    ] = []  # [(Code, Message, Item), ..]
    for item in transact_items:
        original_item: dict[str, Any] | None = None
        # Check transact writes are not performing multiple operations on the same item
        if len(list(item.keys())) > 1:
            # (as in moto: raised without a rollback of the items already applied)
            raise TransactWriteSingleOpException

        try:
            op_type, op = next(iter(item.items()))
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise ValueError("Unsupported transaction operation")

            table_name = op["TableName"]
            condition_expression = op.get("ConditionExpression")
            expression_attribute_names = op.get("ExpressionAttributeNames")
            expression_attribute_values = op.get("ExpressionAttributeValues")
            return_values_on_condition_check_failure = op.get(
                "ReturnValuesOnConditionCheckFailure"
            )

            if op_type == "Put":
                attrs = op["Item"]
                table = self.get_table(table_name)
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
            else:
                key = op["Key"]

            check_unicity(table_name, key)

            undo.record(table_name, key)  # PATCH: before-image of this item

            current = self.get_item(table_name, key)
            if condition_expression is not None:
                condition_op = get_filter_expression(
                    condition_expression,
                    expression_attribute_names,
                    expression_attribute_values,
                )
                if not condition_op.expr(current):
                    if (
                        return_values_on_condition_check_failure == "ALL_OLD"
                        and current
                    ):
                        original_item = current.to_json()["Attributes"]
                    raise ConditionalCheckFailed(item=original_item)

            if op_type == "Put":
                attrs = op["Item"]
                self.put_item(
                    table_name,
                    attrs,
                    condition_expression=None,  # PATCH: checked above, under the lock
                    expression_attribute_names=expression_attribute_names,
                    expression_attribute_values=expression_attribute_values,
                )
            elif op_type == "Delete":
                self.delete_item(
                    table_name,
                    key,
                    condition_expression=None,  # PATCH: checked above, under the lock
                    expression_attribute_names=expression_attribute_names,
                    expression_attribute_values=expression_attribute_values,
                )
            elif op_type == "Update":
                update_expression = op["UpdateExpression"]
                self.update_item(
                    table_name,
                    key,
                    update_expression=update_expression,
                    condition_expression=None,  # PATCH: checked above, under the lock
                    expression_attribute_names=expression_attribute_names,
                    expression_attribute_values=expression_attribute_values,
                )
            errors.append((None, None, None))
        except (MultipleTransactionsException, MockValidationException):
            # Rollback to the original state, and reraise the error
            undo.rollback()  # PATCH
            raise
        except ConditionalCheckFailed as e:
            errors.append(("ConditionalCheckFailed", str(e.message), original_item))  # type: ignore
        except Exception as e:  # noqa: E722 Do not use bare except
            # For other exceptions, capture their details
            errors.append((type(e).__name__, str(e), original_item))  # type: ignore

    if any(code is not None for code, _, _ in errors):
        # Rollback to the original state, and reraise the errors
        undo.rollback()  # PATCH
        raise TransactionCanceledException(errors)


# moto serves requests on threads and does not isolate a transaction's
# condition checks from its writes: two transactions on the same item could
# both pass their conditions. DynamoDB transactions are serializable, so all
# transactions of this process take one lock (single Python process: the GIL
# already serialises the work, the lock only removes the interleaving).
_TRANSACTIONS = threading.Lock()


def serializable_transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    with _TRANSACTIONS:
        return transact_write_items(self, transact_items)


# ---------------------------------------------------------------------------
# GSI queries. moto answers a Query by walking every item of the table
# (`for item in self.all_items()`), so one query over a 100,000-item table
# costs ~0.6 s; a COB makes one per index shard. DynamoDB answers from the
# index. This keeps, per (table, index), a map hash-key value -> primary keys,
# rebuilt only when an item may have entered or left the index: a put, a
# delete, a transaction rollback, or an update that changed an index key.
# Candidates are resolved to the table's current items and re-checked at query
# time, and moto's own query code then runs over just those candidates, so the
# results (order, paging, filters, projections) are moto's.

from moto.dynamodb.models.dynamo_type import DynamoType, Item  # noqa: E402
from moto.dynamodb.models.table import Table  # noqa: E402

_ORIGINAL_QUERY = Table.query
_ORIGINAL_ALL_ITEMS = Table.all_items
_ORIGINAL_PUT = Table.put_item
_ORIGINAL_DELETE = Table.delete_item
_ORIGINAL_UPDATE = DynamoDBBackend.update_item
_ORIGINAL_ROLLBACK = _UndoLog.rollback
_local = threading.local()


def _bump(table: Table) -> None:
    table._tally_index_version = getattr(table, "_tally_index_version", 0) + 1


def _index_hash_attr(table: Table, index_name: str) -> str | None:
    for index in table.global_indexes:
        if index.name == index_name:
            hashes = [k["AttributeName"] for k in index.schema if k["KeyType"] == "HASH"]
            return hashes[0] if len(hashes) == 1 else None
    return None


def _keys_only(table: Table, index_name: str) -> list[str] | None:
    """The attributes a KEYS_ONLY index holds (table and index keys), else None."""
    for index in table.global_indexes:
        if index.name == index_name and (index.projection or {}).get("ProjectionType") == "KEYS_ONLY":
            keys = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
            return keys + [k["AttributeName"] for k in index.schema if k["AttributeName"] not in keys]
    return None


def _candidates(table: Table, index_name: str, attr: str, value: DynamoType) -> list:
    version = getattr(table, "_tally_index_version", 0)
    cache = table.__dict__.setdefault("_tally_index_cache", {})
    entry = cache.get(index_name)
    if entry is None or entry[0] != version:
        by_value: dict[DynamoType, list] = {}
        for item in _ORIGINAL_ALL_ITEMS(table):
            v = item.attrs.get(attr)
            if v is not None:
                by_value.setdefault(v, []).append((item.hash_key, item.range_key))
        entry = (version, by_value)
        cache[index_name] = entry
    out = []
    for hash_key, range_key in entry[1].get(value, ()):
        current = table.items.get(hash_key)
        if current is not None and table.range_key_attr:
            current = current.get(range_key)
        if current is None:
            continue
        v = current.attrs.get(attr)  # DynamoType.__eq__ cannot take None
        if v is not None and v == value:
            out.append(current)
    keys = _keys_only(table, index_name)
    if keys is not None:
        # A KEYS_ONLY index holds just the keys: hand moto index entries, not
        # whole items, so it copies (and filters, and sizes pages by) what
        # DynamoDB's index would hold.
        out = [Item(hash_key=i.hash_key, range_key=i.range_key,
                    attrs={k: i.attrs[k].to_json() for k in keys if k in i.attrs}) for i in out]
    return out


def _all_items(self: Table) -> list:
    override = getattr(_local, "override", None)
    if override is not None and override[0] is self:
        return override[1]
    return _ORIGINAL_ALL_ITEMS(self)


_QUERY_SIGNATURE = inspect.signature(_ORIGINAL_QUERY)


def _query(self: Table, *args: Any, **kwargs: Any):
    # moto's backend passes index_name positionally and the conditions by name.
    bound = _QUERY_SIGNATURE.bind(self, *args, **kwargs).arguments
    index_name = bound.get("index_name")
    conditions = bound.get("hash_key_conditions") or []
    hash_key = bound.get("hash_key")
    if not index_name and self.range_key_attr and hash_key is not None:
        # A base-table query reads one partition: moto walks and sorts the
        # whole table (all_items) to find it; its items are already grouped
        # by hash key. moto still filters and sorts the candidates itself.
        partition = self.items.get(hash_key)
        _local.override = (self, list(partition.values()) if partition else [])
        try:
            return _ORIGINAL_QUERY(self, *args, **kwargs)
        finally:
            _local.override = None
    attr = _index_hash_attr(self, index_name) if index_name else None
    if attr is None or len(conditions) != 1 or conditions[0][0] != attr:
        return _ORIGINAL_QUERY(self, *args, **kwargs)
    _local.override = (self, _candidates(self, index_name, attr, conditions[0][1]))
    try:
        return _ORIGINAL_QUERY(self, *args, **kwargs)
    finally:
        _local.override = None


def _put_item(self: Table, *args: Any, **kwargs: Any):
    result = _ORIGINAL_PUT(self, *args, **kwargs)
    _bump(self)
    return result


def _delete_item(self: Table, *args: Any, **kwargs: Any):
    result = _ORIGINAL_DELETE(self, *args, **kwargs)
    _bump(self)
    return result


def _update_item(self: DynamoDBBackend, table_name: str, key: dict[str, Any], *args: Any, **kwargs: Any):
    table = self.get_table(table_name)
    attrs = {k["AttributeName"] for i in table.global_indexes for k in i.schema}

    def index_keys():
        try:
            item = self.get_item(table_name, key)
        except Exception:  # noqa: BLE001 -- moto raises for a malformed key; the update will too
            return None
        if item is None:
            return None
        return {a: (None if item.attrs.get(a) is None else item.attrs[a].to_json()) for a in attrs}

    before = index_keys()
    try:
        return _ORIGINAL_UPDATE(self, table_name, key, *args, **kwargs)
    finally:
        if index_keys() != before:
            _bump(table)


def _rollback(self: "_UndoLog") -> None:
    try:
        _ORIGINAL_ROLLBACK(self)
    finally:
        for table, *_ in self.entries:
            _bump(table)


# ---------------------------------------------------------------------------
# Per-request costs that are moto's, not DynamoDB's. Profiled (py-spy) during
# a local COB, moto spent about a third of its time on work whose result
# depends only on the expression text or on nothing at all:
# - parsing the same UpdateExpression twice per item (the transaction handler
#   and update_item), and lexing the same ConditionExpression per item;
# - listing its own package directory (hundreds of isdir calls) per request,
#   to route the request to a service;
# - writing an access-log line per request through werkzeug's logger.
# The caches below are keyed by the exact expression text and hand back what
# moto would have built: the update AST is never mutated by moto (its
# validator deep-copies it first), and lexed condition tokens are leaves that
# are copied on the way out. Set TALLY_MOTO_ACCESS_LOG=1 to keep the log.

import collections  # noqa: E402
import functools  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402

from moto import backends as _moto_backends  # noqa: E402
from moto.dynamodb.comparisons import ConditionExpressionParser  # noqa: E402
from moto.dynamodb.parsing import expressions as _update_expressions  # noqa: E402

_EXPRESSION_CACHE_MAX = 1024
_ORIGINAL_UPDATE_MAKE = _update_expressions.UpdateExpressionParser.make
_ORIGINAL_LEX = ConditionExpressionParser._lex_condition_expression
_ORIGINAL_LIST_MODULES = _moto_backends.list_of_moto_modules


@functools.lru_cache(maxsize=_EXPRESSION_CACHE_MAX)
def _update_ast(expression: str):
    return _ORIGINAL_UPDATE_MAKE(expression)


def _make_update_ast(cls, expression_str: str):  # noqa: ARG001 -- classmethod shape
    return _update_ast(expression_str)


@functools.lru_cache(maxsize=_EXPRESSION_CACHE_MAX)
def _condition_tokens(expression: str) -> tuple:
    parser = ConditionExpressionParser(expression, {}, {})
    return tuple(_ORIGINAL_LEX(parser))


def _lex_condition_expression(self: ConditionExpressionParser):
    # Token nodes are leaves (children == []); each caller gets its own list.
    return collections.deque(n._replace(children=[]) for n in _condition_tokens(self.condition_expression))


@functools.lru_cache(maxsize=1)
def _moto_modules() -> tuple:
    return tuple(_ORIGINAL_LIST_MODULES())


def _list_of_moto_modules():
    return iter(_moto_modules())


# moto serialises every DynamoDB response by walking botocore's output shape
# model member by member, which for a BatchGetItem of 100 items or a Query
# page is most of the request's cost (a fifth of moto's CPU in a COB). For the
# data-plane reads whose result is already plain JSON (no bytes: binary
# attributes, no datetimes), the body is that JSON. Anything else, and any
# result json cannot encode, goes through moto's serializer. A differential
# test compares the two bodies item for item.
import json  # noqa: E402

from moto import settings as _moto_settings  # noqa: E402
from moto.dynamodb.responses import DynamoResult  # noqa: E402

_FAST_READS = frozenset({"GetItem", "BatchGetItem", "Query", "Scan"})
_ORIGINAL_EXECUTE_RESULT = DynamoResult.execute_result


def _execute_result(self: DynamoResult, context: Any):
    if (context.operation_model.name in _FAST_READS and isinstance(self.result, dict)
            and not _moto_settings.PRETTIFY_RESPONSES):
        try:
            body = json.dumps(self.result, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError):
            return _ORIGINAL_EXECUTE_RESULT(self, context)
        serializer = context.serializer_class(operation_model=context.operation_model,
                                              pretty_print=False, value_picker=None)
        headers = {"Content-Type": serializer._get_protocol_specific_content_type()}
        return 200, headers, body
    return _ORIGINAL_EXECUTE_RESULT(self, context)


def apply_request_path_patches() -> None:
    DynamoResult.execute_result = _execute_result  # type: ignore[method-assign]
    _update_expressions.UpdateExpressionParser.make = classmethod(_make_update_ast)  # type: ignore[method-assign,assignment]
    ConditionExpressionParser._lex_condition_expression = _lex_condition_expression  # type: ignore[method-assign]
    _moto_backends.list_of_moto_modules = _list_of_moto_modules  # type: ignore[assignment]
    if os.environ.get("TALLY_MOTO_ACCESS_LOG") != "1":
        logging.getLogger("werkzeug").setLevel(logging.WARNING)


# ---------------------------------------------------------------------------
# Step Functions `ecs:runTask(.sync)`. moto 5.2.5 carries LocalStack's ECS
# task state without the two conversions it relies on (both are no-ops in
# moto): the state's PascalCase parameters are passed to boto's run_task
# as is (`Cluster=` -> a KeyError/validation error), and the result is read
# with PascalCase keys that boto's camelCase response does not have. AWS
# calls RunTask with the API's names and hands the state the task described
# in PascalCase (`TaskArn`, `Containers[0].ExitCode`, ...). These two methods
# do exactly that; moto's waiting loop (`_eval_sync`) is unchanged.

from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (  # noqa: E402
    state_task_service_ecs as _sfn_ecs,
)
from moto.stepfunctions.parser.asl.eval.callback.callback import (  # noqa: E402
    CallbackOutcomeFailure as _CallbackOutcomeFailure,
    CallbackOutcomeFailureError as _CallbackOutcomeFailureError,
)


def _camel_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {(k[:1].lower() + k[1:]): _camel_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_camel_keys(v) for v in value]
    return value


def _pascal_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {(k[:1].upper() + k[1:]): _pascal_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_pascal_keys(v) for v in value]
    return value


def _ecs_eval_service_task(self, env, resource_runtime_part, normalised_parameters, state_credentials):
    ecs = _sfn_ecs.boto_client_for(region=resource_runtime_part.region, service="ecs",
                                   state_credentials=state_credentials)
    action = self._get_boto_service_action()
    response = getattr(ecs, action)(**_camel_keys(normalised_parameters))
    response.pop("ResponseMetadata", None)
    if response.get("failures"):
        raise RuntimeError(f"ECS {action} failures: {response['failures']}")
    env.stack.append(_pascal_keys(response))


def _ecs_build_sync_resolver(self, env, resource_runtime_part, normalised_parameters, state_credentials):
    ecs = _sfn_ecs.boto_client_for(service="ecs", region=resource_runtime_part.region,
                                   state_credentials=state_credentials)
    submitted = env.stack.pop()
    task_arn = submitted["Tasks"][0]["TaskArn"]
    cluster_arn = submitted["Tasks"][0]["ClusterArn"]

    def resolve():
        described = ecs.describe_tasks(cluster=cluster_arn, tasks=[task_arn])
        task = described["tasks"][0]
        if task["lastStatus"] != "STOPPED":
            return None
        if task.get("stopCode") == "TaskFailedToStart":
            # AWS fails the state when the task never started (no container
            # ran, so there is no exit code to hand on): States.TaskFailed.
            raise _CallbackOutcomeFailureError(_CallbackOutcomeFailure(
                callback_id=task_arn, error="States.TaskFailed", cause=json.dumps(_pascal_keys(task))))
        return _pascal_keys(task)

    return resolve


# ---------------------------------------------------------------------------
# Step Functions calls with the state machine's role. moto's engine signs
# every service integration with the fixed keys "ak"/"sk"
# (asl/utils/boto_client.py), whatever the state machine's roleArn: on a
# stack that enforces IAM, that is either everything or nothing. AWS calls
# with the role's credentials, so this does too: an sts:AssumeRole of the
# role (through the gateway, which records the key and then judges each call
# it signs against the role's policies), cached per role until a quarter of
# an hour before it expires. `boto_client_for` is imported by name into many
# modules of the engine, so every reference is replaced.

from moto.stepfunctions.parser.asl.utils import boto_client as _boto_client  # noqa: E402

_ORIGINAL_BOTO_CLIENT_FOR = _boto_client.boto_client_for
_ROLE_CREDENTIALS: dict[str, tuple[float, dict]] = {}
_ROLE_LOCK = threading.Lock()
ROLE_SESSION_SECONDS = 3600
ROLE_REFRESH_MARGIN_SECONDS = 900


def _role_credentials(role_arn: str, region: str) -> dict:
    import time

    import boto3
    from moto.settings import moto_server_port

    with _ROLE_LOCK:
        hit = _ROLE_CREDENTIALS.get(role_arn)
        if hit and hit[0] - ROLE_REFRESH_MARGIN_SECONDS > time.time():
            return hit[1]
        sts = boto3.client("sts", endpoint_url=f"http://localhost:{moto_server_port()}", region_name=region,
                           aws_access_key_id="test", aws_secret_access_key="test")
        creds = sts.assume_role(RoleArn=role_arn, RoleSessionName=f"states-{role_arn.rsplit('/', 1)[-1]}"[:64],
                                DurationSeconds=ROLE_SESSION_SECONDS)["Credentials"]
        _ROLE_CREDENTIALS[role_arn] = (time.time() + ROLE_SESSION_SECONDS, creds)
        return creds


def _boto_client_for_role(region: str, service: str, state_credentials: Any = None):
    role_arn = getattr(state_credentials, "role_arn", None)
    if not role_arn:
        return _ORIGINAL_BOTO_CLIENT_FOR(region, service, state_credentials)
    import boto3
    from botocore.config import Config
    from moto.settings import moto_server_port
    from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import TimeoutSeconds

    creds = _role_credentials(role_arn, region)
    return boto3.client(
        service_name=service, region_name=region, endpoint_url=f"http://localhost:{moto_server_port()}",
        aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        config=Config(parameter_validation=False, retries={"max_attempts": 0, "total_max_attempts": 1},
                      connect_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS,
                      read_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS),
    )


def apply_state_machine_role_patch() -> int:
    """Points every module's `boto_client_for` at the role-signing one; returns how many."""
    import moto.stepfunctions.parser.asl.parse.asl_parser  # noqa: F401 -- loads every state module
    import moto.stepfunctions.parser.models  # noqa: F401

    n = 0
    for module in list(sys.modules.values()):
        if getattr(module, "boto_client_for", None) is _ORIGINAL_BOTO_CLIENT_FOR:
            module.boto_client_for = _boto_client_for_role
            n += 1
    return n


def apply_ecs_task_patch() -> None:
    _sfn_ecs.StateTaskServiceEcs._eval_service_task = _ecs_eval_service_task  # type: ignore[method-assign]
    _sfn_ecs.StateTaskServiceEcs._build_sync_resolver = _ecs_build_sync_resolver  # type: ignore[method-assign]


def apply_patch() -> None:
    """Replace DynamoDBBackend.transact_write_items and speed up GSI queries
    (idempotent). Fails on an unreviewed moto."""
    if DynamoDBBackend.transact_write_items is serializable_transact_write_items:
        return
    digest = _source_sha256(_ORIGINAL)
    if digest != EXPECTED_ORIGINAL_SHA256:
        raise RuntimeError(
            f"moto {moto.__version__}'s DynamoDBBackend.transact_write_items is not the code "
            f"localstack/moto_launcher.py was written against (source sha256 {digest}, "
            f"expected {EXPECTED_ORIGINAL_SHA256}); review the patch."
        )
    DynamoDBBackend.transact_write_items = serializable_transact_write_items  # type: ignore[method-assign]
    Table.query = _query  # type: ignore[method-assign]
    Table.all_items = _all_items  # type: ignore[method-assign]
    Table.put_item = _put_item  # type: ignore[method-assign]
    Table.delete_item = _delete_item  # type: ignore[method-assign]
    DynamoDBBackend.update_item = _update_item  # type: ignore[method-assign]
    _UndoLog.rollback = _rollback  # type: ignore[method-assign]
    apply_request_path_patches()
    apply_ecs_task_patch()
    apply_state_machine_role_patch()


def main(argv: list[str] | None = None) -> None:
    apply_patch()
    print(f"moto_launcher: moto {moto.__version__}, DynamoDB transact_write_items patched "
          f"(item-level rollback), GSI queries indexed", file=sys.stderr, flush=True)
    from moto.server import main as moto_server_main

    moto_server_main(argv)


if __name__ == "__main__":
    main()
