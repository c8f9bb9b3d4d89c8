"""docs/ci.md and docs/examples/github-actions.yml say what the code does."""

from __future__ import annotations

import os
import textwrap

from conftest import REPO

from sandbox import caches, discover, fixes

CI_MD = (REPO / "docs" / "ci.md").read_text()
WORKFLOW = (REPO / "docs" / "examples" / "github-actions.yml").read_text()


def workflow_shell() -> list[str]:
    """The job's default shell, split on whitespace as the runner does."""
    line = WORKFLOW.split("defaults:", 1)[1].split("shell:", 1)[1].splitlines()[0]
    return line.split()


def test_apparmor_profile_in_docs_and_workflow_is_the_one_doctor_prints():
    profile = fixes.apparmor_profile("/usr/bin/bwrap")
    assert "```\n" + profile + "```" in CI_MD
    block = WORKFLOW.split("<<'PROFILE'\n", 1)[1].split("PROFILE\n", 1)[0]
    assert textwrap.dedent(block) == profile
    assert f"apparmor_parser -r {fixes.APPARMOR_FILE}" in WORKFLOW
    assert "kernel.apparmor_restrict_unprivileged_userns=0" in WORKFLOW  # the fallback


def test_workflow_shell_wraps_the_script_in_sandbox_run():
    shell = workflow_shell()
    assert shell[:3] == ["sandbox", "run", "--"] and shell[-1] == "{0}"
    assert " ".join(shell) in CI_MD
    assert "sandbox doctor" in WORKFLOW


def test_cache_path_is_the_tool_cache_root():
    home = "/home/runner"
    state = discover.state_dir({"HOME": home}, home)
    root = caches.root(state)
    assert root == os.path.join(home, ".cache/sandbox/workspaces")
    assert "path: ~/.cache/sandbox/workspaces" in WORKFLOW
    assert "`~/.cache/sandbox/workspaces`" in CI_MD


def test_container_seccomp_recipe_allows_exactly_what_doctor_names():
    calls = ", ".join(f'"{c}"' for c in fixes.SECCOMP_EXTRA_CALLS)
    assert f'"names": [{calls}]' in CI_MD
    assert f"--security-opt seccomp={fixes.SECCOMP_PROFILE_NAME}" in CI_MD
