"""The commands the README and the operator docs name run as written.

Every ``make <target>`` they name is a target of the Makefile; each operator command
(the ones that take ``ARGS``) answers ``--help`` through make exactly as documented,
with the environment a fresh shell has (no PYTHONPATH); every ``python -m <module>`` they
name answers ``--help`` from the repository root without PYTHONPATH either.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The pages a newcomer, a deployer and an operator follow (the measurement reports,
# benchmarks.md and speed.md, name their own commands).
DOCS = [
    REPO / "README.md",
    *(
        REPO / "docs" / page
        for page in ("deploy.md", "operations.md", "api.md", "data-model.md", "testing.md")
    ),
]
# Operator commands: `make <target> ARGS="..."` runs `<module> ...`; the upgrade
# command's module arrives with the storage upgrade (its target is here already).
OPERATOR_TARGETS = {
    "replay": "usage: python -m watch_history.replay",
    "capacity": "usage: python -m loadtest capacity",
    "smoke": "usage: python -m devtools.smoke",
    "upgrade": "usage: python -m watch_history.upgrade",
}


def _documented(pattern: str) -> set[str]:
    found: set[str] = set()
    for page in DOCS:
        found |= set(re.findall(pattern, page.read_text(encoding="utf-8")))
    return found


def _targets() -> set[str]:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets: set[str] = set()
    for names in re.findall(r"^([A-Za-z][\w .-]*):(?!=)", makefile, re.M):
        targets |= set(names.split())
    return targets


def _fresh_env() -> dict[str, str]:
    """A shell's environment: no PYTHONPATH (the Makefile exports one to the suite)."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "MAKEFLAGS", "MFLAGS"}}
    env["MAKELEVEL"] = "0"
    return env


def _run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd,
        cwd=REPO,
        env=env or _fresh_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_documented_make_target_exists() -> None:
    documented = _documented(r"\bmake ([a-z][a-z-]*)")
    assert {"demo", "test", "smoke", "replay", "capacity"} <= documented
    missing = sorted(documented - _targets())
    assert not missing, f"the docs name make targets the Makefile lacks: {missing}"


@pytest.mark.parametrize("target", sorted(OPERATOR_TARGETS))
def test_operator_command_help_runs_through_make(target: str) -> None:
    # -o: the venv this suite runs in is built already (a fresh clone builds it first).
    proc = _run(
        ["make", "--no-print-directory", "-s", "-o", ".venv/.installed", target, "ARGS=--help"]
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(OPERATOR_TARGETS[target]), proc.stdout
    assert "Traceback" not in proc.stderr


def test_documented_python_modules_run_without_pythonpath() -> None:
    modules = _documented(r"python -m ([a-z_][a-z_.]*)")
    for module in sorted(modules):
        proc = _run([str(BIN / "python"), "-m", module, "--help"])
        assert proc.returncode == 0, f"python -m {module} --help: {proc.stderr[-2000:]}"


def test_loadtest_help_lists_its_commands() -> None:
    pythonpath = f"{REPO}{os.pathsep}{REPO / 'shared'}"
    proc = _run(
        [str(BIN / "python"), "-m", "loadtest", "--help"],
        {**_fresh_env(), "PYTHONPATH": pythonpath},
    )
    assert proc.returncode == 0, proc.stderr
    assert "capacity" in proc.stdout
    assert "report" in proc.stdout


# --------------------------------------------------------------------- the pages themselves

ALL_PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_readme_opens_with_the_service_and_its_two_commands() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) < 150
    first_screen = "\n".join(lines[:25])
    assert "make demo" in first_screen
    assert "make test" in first_screen
    assert "MemoryDB" in first_screen


def test_links_between_pages_resolve() -> None:
    for page in ALL_PAGES:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            assert (page.parent / target).exists(), f"{page.name} links to {target}"


def test_pages_carry_no_history_of_the_work() -> None:
    """What changed, and when, belongs in commit messages, not in the pages."""
    pattern = re.compile(r"\bissue[- ]?\d+|\bbefore = |what changed", re.IGNORECASE)
    for page in ALL_PAGES:
        found = pattern.findall(page.read_text(encoding="utf-8"))
        assert not found, f"{page.name}: {found}"


def test_hand_written_pages_name_no_machine_path() -> None:
    # benchmarks.md is generated by `make loadtest` (loadtest/report.py), which records
    # the command line it ran as it was typed.
    for page in ALL_PAGES:
        if page.name != "benchmarks.md":
            assert "/work/" not in page.read_text(encoding="utf-8"), page.name
