"""(a) asl-validator on every statemachines/*.asl.json; (e) placeholders <-> DefinitionSubstitutions."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import (PLACEHOLDER, REPO, STATEMACHINES, TEMPLATE, definition_path, load_json,
                      sample_value, state_machines)

ASL_FILES = sorted(STATEMACHINES.glob("*.asl.json"))
ASL_VALIDATOR = REPO / "node_modules" / ".bin" / "asl-validator"


def test_there_are_state_machines():
    assert ASL_FILES, f"no *.asl.json under {STATEMACHINES}"


@pytest.mark.parametrize("asl", ASL_FILES, ids=lambda p: p.name)
def test_asl_validator_accepts_substituted_definition(asl, tmp_path):
    if not ASL_VALIDATOR.exists():
        pytest.fail(f"{ASL_VALIDATOR} missing: run `npm ci` in {REPO}")
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH")
    text = asl.read_text(encoding="utf-8")
    substituted = PLACEHOLDER.sub(lambda m: sample_value(m.group(1)), text)
    assert not PLACEHOLDER.search(substituted)
    out = tmp_path / asl.name
    out.write_text(substituted, encoding="utf-8")
    proc = subprocess.run([str(ASL_VALIDATOR), "--json-path", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"asl-validator rejected {asl.name}:\n{report}"
    assert "is valid" in report and "✕" not in report, report


@pytest.mark.parametrize("asl", ASL_FILES, ids=lambda p: p.name)
def test_asl_is_jsonpath_not_jsonata(asl):
    d = load_json(asl)
    assert d.get("QueryLanguage", "JSONPath") == "JSONPath", "moto's engine needs JSONPath"
    assert "{%" not in asl.read_text(encoding="utf-8"), "JSONata expression found"


def test_every_state_machine_definition_file_exists_and_is_in_statemachines(template):
    sms = state_machines(template)
    assert sms, f"no state machine in {TEMPLATE}"
    for lid, props in sms.items():
        path = definition_path(props)
        assert path is not None, f"{lid}: expected DefinitionUri to a local file"
        assert path.exists(), f"{lid}: {path} does not exist"
        assert path in [p.resolve() for p in ASL_FILES], f"{lid}: {path} is not a statemachines/*.asl.json"


def test_placeholders_match_definition_substitutions(template):
    checked = 0
    for lid, props in state_machines(template).items():
        path = definition_path(props)
        used = set(PLACEHOLDER.findall(path.read_text(encoding="utf-8")))
        given = set((props.get("DefinitionSubstitutions") or {}).keys())
        assert used - given == set(), f"{lid}: placeholders in {path.name} without a DefinitionSubstitutions key"
        assert given - used == set(), f"{lid}: DefinitionSubstitutions keys not used in {path.name}"
        checked += 1
    assert checked


def test_function_arn_substitutions_point_at_template_functions(template):
    functions = {lid for lid, r in template["Resources"].items()
                 if r.get("Type") in ("AWS::Serverless::Function", "AWS::Lambda::Function")}
    for lid, props in state_machines(template).items():
        for key, value in (props.get("DefinitionSubstitutions") or {}).items():
            if key.endswith("FunctionArn"):
                assert isinstance(value, dict) and "Fn::GetAtt" in value, f"{lid}.{key}: expected !GetAtt X.Arn"
                target, attr = value["Fn::GetAtt"]
                assert target in functions and attr == "Arn", f"{lid}.{key}: {value} is not a function's Arn"
