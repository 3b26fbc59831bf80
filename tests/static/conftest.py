"""Shared helpers for the static checks (no AWS, no cargo, no network).

Run: /root/.cache/tally/venv/bin/python -m pytest tests/static -q
(needs `npm ci` once for node_modules/.bin/asl-validator).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "infra" / "template.yaml"
STATEMACHINES = REPO / "statemachines"
EVENTS = REPO / "events"

PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_.:]+)\}")


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that reads CloudFormation short-form tags (!Ref, !Sub, !GetAtt, ...)."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path: Path = TEMPLATE) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


@pytest.fixture(scope="session")
def template() -> dict:
    return load_template()


def state_machines(template: dict) -> dict[str, dict]:
    """Logical id -> properties of every state machine in the template."""
    return {
        lid: res.get("Properties") or {}
        for lid, res in template["Resources"].items()
        if res.get("Type") in ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine")
    }


def definition_path(props: dict) -> Path | None:
    uri = props.get("DefinitionUri")
    return (TEMPLATE.parent / uri).resolve() if isinstance(uri, str) else None


def sample_value(key: str) -> str:
    """A plausible value for a DefinitionSubstitutions placeholder."""
    if key.endswith("FunctionArn"):
        name = re.sub(r"(?<!^)(?=[A-Z])", "-", key[: -len("FunctionArn")]).lower()
        return f"arn:aws:lambda:us-east-1:123456789012:function:tally-{name}"
    if key.endswith("Arn"):
        return f"arn:aws:sns:us-east-1:123456789012:tally-{key.lower()}"
    return "1"


def load_json(path: Path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)
