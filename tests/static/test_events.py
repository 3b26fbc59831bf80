"""(c) published event samples against their JSON Schemas (draft 2020-12); sample consistency."""
from __future__ import annotations

import copy
import json
from collections import defaultdict
from decimal import Decimal

import pytest
from jsonschema import Draft202012Validator

from conftest import EVENTS, load_json

SCHEMAS = EVENTS / "schemas"
PUBLISHED = sorted((EVENTS / "published").glob("*.json"))

# event_type -> schema files it must satisfy (every v2 completed detail is also a valid v1 one)
SCHEMAS_FOR = {
    "bank.core.accrual_run_completed": ["accrual_run_completed.v2.schema.json", "accrual_run_completed.v1.schema.json"],
    "bank.core.accrual_run_failed": ["accrual_run_failed.v2.schema.json"],
}


def validator(name: str) -> Draft202012Validator:
    schema = load_json(SCHEMAS / name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def errors(name: str, instance) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(name).iter_errors(instance)]


def test_every_json_file_under_events_parses():
    files = sorted(EVENTS.rglob("*.json"))
    assert len(files) >= 13
    for f in files:
        load_json(f)


@pytest.mark.parametrize("name", sorted(p.name for p in SCHEMAS.glob("*.schema.json")))
def test_schema_is_valid_draft_2020_12(name):
    schema = load_json(SCHEMAS / name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_every_schema_is_used_by_a_sample():
    used = {s for names in SCHEMAS_FOR.values() for s in names}
    assert {p.name for p in SCHEMAS.glob("*.schema.json")} <= used


@pytest.mark.parametrize("sample", PUBLISHED, ids=lambda p: p.name)
def test_published_sample_matches_its_schemas(sample):
    detail = load_json(sample)
    assert detail.get("event_type") in SCHEMAS_FOR, f"{sample.name}: unknown event_type {detail.get('event_type')!r}"
    assert detail.get("schema_version") == "2"
    for name in SCHEMAS_FOR[detail["event_type"]]:
        assert errors(name, detail) == [], f"{sample.name} vs {name}"


def test_both_detail_types_have_samples():
    types = {load_json(p).get("event_type") for p in PUBLISHED}
    assert types == set(SCHEMAS_FOR)


def test_v2_completed_is_additive_over_v1():
    detail = load_json(EVENTS / "published" / "accrual_run_completed.json")
    assert errors("accrual_run_completed.v1.schema.json", detail) == []
    v1_only = {k: v for k, v in detail.items() if k not in ("partition_count", "slowest_partition_ms")}
    v1_only["schema_version"] = "1"
    assert errors("accrual_run_completed.v1.schema.json", v1_only) == []
    assert errors("accrual_run_completed.v2.schema.json", v1_only) != [], "v2 must require its new fields"


@pytest.mark.parametrize("mutate, schema", [
    (lambda d: d["totals"][0].__setitem__("amount", 1.52), "accrual_run_completed.v1.schema.json"),
    (lambda d: d["totals"][0].__setitem__("amount", "1,52"), "accrual_run_completed.v2.schema.json"),
    (lambda d: d.__setitem__("business_date", "2026-11-20T00:00:00Z"), "accrual_run_completed.v2.schema.json"),
    (lambda d: d.__setitem__("partition_count", 0), "accrual_run_completed.v2.schema.json"),
    (lambda d: d.__setitem__("slowest_partition_ms", -1), "accrual_run_completed.v2.schema.json"),
], ids=["amount-number", "amount-comma", "date-with-time", "zero-partitions", "negative-ms"])
def test_completed_schema_rejects_bad_values(mutate, schema):
    detail = copy.deepcopy(load_json(EVENTS / "published" / "accrual_run_completed.json"))
    mutate(detail)
    assert errors(schema, detail) != []


def test_failed_schema_requires_error_when_plan_failed():
    detail = load_json(EVENTS / "published" / "accrual_run_failed_plan.json")
    assert detail["stage"] == "PLAN"
    assert errors("accrual_run_failed.v2.schema.json", detail) == []
    del detail["error"]
    assert errors("accrual_run_failed.v2.schema.json", detail) != []


def test_published_completed_sample_agrees_with_aggregate_input():
    """events/cob-aggregate/completed.json summed == events/published/accrual_run_completed.json."""
    agg = load_json(EVENTS / "cob-aggregate" / "completed.json")
    pub = load_json(EVENTS / "published" / "accrual_run_completed.json")
    results = agg["results"]
    assert all(r["status"] == "SUCCEEDED" for r in results)
    totals = defaultdict(lambda: [Decimal(0), 0])
    for r in results:
        for t in r["totals"]:
            totals[t["currency"]][0] += Decimal(t["amount"])
            totals[t["currency"]][1] += t["postings"]
    assert {t["currency"]: [Decimal(t["amount"]), t["postings"]] for t in pub["totals"]} == dict(totals)
    assert pub["run_id"] == agg["plan"]["run_id"]
    assert pub["business_date"] == agg["plan"]["business_date"]
    assert pub["accounts_processed"] == sum(r["accounts_seen"] for r in results)
    assert pub["postings_written"] == sum(r["postings_written"] for r in results)
    assert pub["partition_count"] == agg["plan"]["partition_count"] == len(results)
    assert pub["slowest_partition_ms"] == max(r["duration_ms"] for r in results)


def test_published_failed_sample_agrees_with_aggregate_input():
    agg = load_json(EVENTS / "cob-aggregate" / "partition-failed.json")
    pub = load_json(EVENTS / "published" / "accrual_run_failed.json")
    failed = [{"partition": r["partition"], "error": r["error"], "cause": r["cause"]}
              for r in agg["results"] if r["status"] == "FAILED"]
    assert failed and pub["failed_partitions"] == failed
    assert pub["stage"] == "PARTITION" and pub["partition_count"] == agg["plan"]["partition_count"]


def test_aggregate_plan_failed_sample_shape():
    agg = load_json(EVENTS / "cob-aggregate" / "plan-failed.json")
    assert agg["plan"] is None and set(agg) == {"plan", "failure", "input"}
    assert set(agg["failure"]) == {"error", "cause"}
    pub = load_json(EVENTS / "published" / "accrual_run_failed_plan.json")
    assert (pub["error"], pub["cause"]) == (agg["failure"]["error"], agg["failure"]["cause"])


def test_partition_items_carry_design_fields():
    keys = {"run_id", "business_date", "partition", "partition_count"}
    item = load_json(EVENTS / "cob-partition" / "partition.json")
    assert keys <= set(item) and 0 <= item["partition"] < item["partition_count"]
    for name in ("completed.json", "partition-failed.json"):
        plan = load_json(EVENTS / "cob-aggregate" / name)["plan"]
        assert [p["partition"] for p in plan["partitions"]] == list(range(plan["partition_count"]))
        assert all(keys <= set(p) for p in plan["partitions"])
