"""`make setup` alone installs every tool the tests use.

A fresh machine has only the Rust toolchain, Python, Node, Java and gcc. The
setup rule once named `$(CHROMIUM)` above the line that set it, so the
prerequisite expanded to nothing and Chromium was never installed; the run
report tests then failed on every fresh machine while CI, on a machine with a
hand-installed Chromium, stayed green. These checks read make's own database
(`make -pn setup`), so they see the prerequisites as make expands them.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO

sys.path.insert(0, str(REPO / "localstack"))
import tools  # noqa: E402


def setup_prerequisites(env: dict[str, str] | None = None) -> list[str]:
    proc = subprocess.run(["make", "-pn", "setup"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=env or dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    rules = [line for line in proc.stdout.splitlines() if re.match(r"^setup:", line)]
    assert rules, "make's database has no rule for setup"
    prereqs: list[str] = []
    for line in rules:
        prereqs += line.split(":", 1)[1].split("|")[0].split()
    return prereqs


def test_setup_depends_on_the_installer_of_every_tool():
    prereqs = setup_prerequisites()
    for t in tools.tools():
        assert t.installed_by in prereqs, (
            f"{t.name} is installed by {t.installed_by}, which `make setup` does not depend on "
            f"(setup: {' '.join(prereqs)})")


def test_the_chromium_path_reaches_the_setup_rule_when_overridden():
    # The same expansion with another path: setup must follow the variable,
    # not a path written twice.
    env = dict(os.environ, CHROMIUM="/opt/elsewhere/chromium")
    assert "/opt/elsewhere/chromium" in setup_prerequisites(env)


def test_setup_ends_by_checking_every_tool():
    proc = subprocess.run(["make", "-n", "setup"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "localstack/tools.py check" in proc.stdout


# What the tests and the stack call, found in their sources: a tool named here
# must be one of tools.tools(), so a new tool cannot be used without setup
# installing it.
_CALLS = [
    (re.compile(r"node_modules\"?\s*/\s*\"?\.bin\"?\s*/\s*\"([\w.-]+)\""), None),
    (re.compile(r"node_modules/\.bin/([\w.-]+)"), None),
    (re.compile(r"venv_dir\(\)\s*/\s*\"bin\"\s*/\s*\"([\w.-]+)\""), None),
    (re.compile(r"Path\(sys\.executable\)\.parent\s*/\s*\"([\w.-]+)\""), None),
    (re.compile(r"\$\(TALLY_VENV\)/bin/([\w.-]+)"), None),
    (re.compile(r"TALLY_CHROMIUM"), "chromium"),
    (re.compile(r"\$CARGO_FUZZ|\$\{CARGO_FUZZ|CARGO_FUZZ\b"), "cargo-fuzz"),
]


def _sources():
    for pattern in ("tests/static/*.py", "tests/integration/**/*.rs", "localstack/*.py", "fuzz/*.sh"):
        for p in REPO.glob(pattern):
            if p.name not in ("test_setup.py", "tools.py"):
                yield p
    yield REPO / "Makefile"


def test_every_tool_the_tests_call_is_installed_by_setup():
    listed = {t.path.name for t in tools.tools()} | {t.name for t in tools.tools()}
    found: dict[str, str] = {}
    for src in _sources():
        text = src.read_text(encoding="utf-8")
        for rx, name in _CALLS:
            for m in rx.finditer(text):
                found.setdefault(name or m.group(1), str(src.relative_to(REPO)))
    assert {"chromium", "asl-validator", "sam"} <= set(found), found
    unlisted = {n: where for n, where in found.items() if n not in listed}
    assert not unlisted, f"called by the tests but not installed and checked by make setup: {unlisted}"
