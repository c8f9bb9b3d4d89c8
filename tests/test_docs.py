"""The docs match the code: README's commands, the profile reference, --help."""

from __future__ import annotations

import subprocess

import pytest

from conftest import REPO, sandbox_exe
from sandbox.schema import SCHEMA

README = (REPO / "README.md").read_text()


def quick_start_commands() -> list[str]:
    block = README.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_quick_start_has_two_commands_and_ci_runs_the_test_one():
    setup_and_run, setup_and_test = quick_start_commands()
    assert setup_and_run.startswith("scripts/setup && .venv/bin/sandbox run -- ")
    test_command = setup_and_test.split("&&", 1)[1].strip()
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert "scripts/setup" in ci
    assert test_command in ci, "the README's test command must be what .ci/run runs"


@pytest.mark.parametrize("table,key", [(t, k) for t, keys in SCHEMA.items() for k in keys if k != "*"])
def test_every_profile_key_is_documented(table, key):
    doc = (REPO / "docs" / "profiles.md").read_text()
    if table:
        assert f"`[{table}]`" in doc
    assert f"| `{key}` |" in doc, f"{table}.{key} is missing from docs/profiles.md"


@pytest.mark.parametrize("argv", [[], ["run"], ["explain"], ["profiles"], ["profiles", "list"],
                                  ["profiles", "show"], ["quarantine"], ["quarantine", "list"],
                                  ["quarantine", "restore"], ["trust"], ["doctor"]])
def test_every_command_has_help(argv):
    out = subprocess.run([sandbox_exe(), *argv, "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout
    first = out.stdout.split("Usage:", 1)[1]
    assert len(first.strip().splitlines()) >= 3, "help text is missing"


def test_run_help_names_every_option_the_fast_path_knows():
    from sandbox import __main__ as entry

    out = subprocess.run([sandbox_exe(), "run", "--help"], capture_output=True, text=True).stdout
    for option in list(entry._VALUE_OPTS) + list(entry._LIST_OPTS) + ["--dry-run"]:
        assert option in out, option


def test_usage_errors_are_one_line_with_status_125():
    out = subprocess.run([sandbox_exe(), "run", "--no-such-option", "--", "true"],
                         capture_output=True, text=True)
    assert out.returncode == 125
    assert out.stderr.startswith("sandbox: usage error:")
    assert len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr
