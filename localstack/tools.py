#!/usr/bin/env python3
"""The tools Tally's tests and local stack run, where `make setup` puts them,
and a check that each one answers.

    python localstack/tools.py check     # each tool's version line, or exit 1 naming the missing ones
    python localstack/tools.py list      # name, path, the make target that installs it (one a line)

`make setup` runs `check` last, so a setup that left a tool out fails at once,
naming it, instead of a test failing twenty minutes later.
`tests/static/test_setup.py` holds the other half: every tool here is installed
by a prerequisite of the `setup` rule (read from `make -pn`), and every tool
the tests call is listed here.

Paths follow the same environment variables the Makefile exports
(TALLY_VENV, TALLY_CHROMIUM, CARGO_FUZZ), with the Makefile's defaults.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "tally"


@dataclass(frozen=True)
class Tool:
    name: str
    path: Path
    version_args: tuple[str, ...]
    # The make target (a file the setup rule depends on) whose recipe installs it.
    installed_by: str


def venv() -> Path:
    return Path(os.environ.get("TALLY_VENV", CACHE / "venv"))


def tools() -> list[Tool]:
    v = venv() / "bin"
    node_bin = REPO / "node_modules" / ".bin"
    venv_marker = str(venv() / ".installed")
    node_marker = "node_modules/.installed"
    chromium = os.environ.get("TALLY_CHROMIUM", "/usr/bin/chromium")
    cargo_fuzz = os.environ.get("CARGO_FUZZ", str(CACHE / "tools" / "bin" / "cargo-fuzz"))
    return [
        Tool("python (venv)", v / "python", ("--version",), venv_marker),
        Tool("pytest", v / "pytest", ("--version",), venv_marker),
        Tool("moto_server", v / "moto_server", ("--help",), venv_marker),
        Tool("cargo-lambda", v / "cargo-lambda", ("lambda", "--version"), venv_marker),
        Tool("sam", v / "sam", ("--version",), venv_marker),
        Tool("asl-validator", node_bin / "asl-validator", ("--version",), node_marker),
        Tool("ajv", node_bin / "ajv", ("help",), node_marker),
        Tool("chromium", Path(chromium), ("--version",), chromium),
        Tool("cargo-fuzz", Path(cargo_fuzz), ("--version",), cargo_fuzz),
    ]


def check() -> int:
    missing = []
    for t in tools():
        if not t.path.exists():
            missing.append(f"{t.name}: {t.path} does not exist (installed by make's {t.installed_by})")
            continue
        try:
            out = subprocess.run([str(t.path), *t.version_args], capture_output=True, text=True,
                                 timeout=120, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as e:
            missing.append(f"{t.name}: {t.path} did not run: {e}")
            continue
        if out.returncode != 0:
            missing.append(f"{t.name}: `{t.path} {' '.join(t.version_args)}` exited {out.returncode}: "
                           f"{(out.stderr or out.stdout).strip()[:200]}")
            continue
        first = ((out.stdout or out.stderr).strip().splitlines() or [""])[0]
        print(f"tools: {t.name}: {first[:100]}")
    for m in missing:
        print(f"tools: MISSING {m}", file=sys.stderr)
    return 1 if missing else 0


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "check"
    if cmd == "check":
        return check()
    if cmd == "list":
        for t in tools():
            print(f"{t.name}\t{t.path}\t{t.installed_by}")
        return 0
    print(f"usage: {argv[0]} check|list", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
