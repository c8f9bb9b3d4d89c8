"""The parity table (sandbox.macos.parity): every Policy field, both backends, in the docs.

A field the table says Seatbelt enforces must change the generated profile
when it changes; a field it says Seatbelt cannot enforce must not (so the
table cannot claim more than the generator does).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import seatbelt_support as s
from sandbox.macos import parity, seatbelt
from sandbox.policy import Access, EgressRule, NetworkMode, Policy

DOC = Path(__file__).resolve().parent.parent / "docs" / "macos.md"


@pytest.fixture(autouse=True)
def _no_user_profiles(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))


def test_every_policy_field_has_a_row_and_no_other():
    fields = [f.name for f in dataclasses.fields(Policy)]
    assert sorted(parity.TABLE) == sorted(fields)


@pytest.mark.parametrize("name", list(parity.TABLE))
def test_every_row_has_known_statuses_and_a_reason(name):
    for status, text in parity.TABLE[name]:
        assert status in parity.STATUSES
        assert text.strip()
        if status in ("n/a", "differs"):
            assert len(text) >= 20, f"{name}: say why ({text!r})"


def test_docs_show_exactly_the_code_table():
    text = DOC.read_text(encoding="utf-8")
    block = text.split("<!-- parity:start -->\n", 1)[1].split("\n<!-- parity:end -->", 1)[0]
    assert block == parity.markdown()
    rows = [line for line in block.splitlines()[2:]]
    assert [r.split("`")[1] for r in rows] == list(parity.TABLE)
    for f in dataclasses.fields(Policy):
        assert f"| `{f.name}` |" in block


def _build(policy, **ctx):
    return seatbelt.build(policy, s.golden_context(policy, **ctx), ["true"])


# one change per field the generator reads; the claim "yes"/"differs" on macOS must show
CHANGES = {
    "workspace": lambda p: dataclasses.replace(p, workspace=Access.READ),
    "scratch": lambda p: dataclasses.replace(p, scratch=Access.READ),
    "deny_read": lambda p: dataclasses.replace(p, deny_read=p.deny_read + ("/Users/dev/.other",)),
    "deny_read_names": lambda p: dataclasses.replace(p, deny_read_names=p.deny_read_names
                                                     + ("*.pem",)),
    "allow_read_names": lambda p: dataclasses.replace(p, allow_read_names=()),
    "empty_dirs": lambda p: dataclasses.replace(p, empty_dirs=p.empty_dirs + ("/Volumes/x",)),
    "unix_sockets": lambda p: dataclasses.replace(p, unix_sockets=False),
    "network": lambda p: dataclasses.replace(p, network=NetworkMode.PROXY),
    "caches": lambda p: dataclasses.replace(p, caches=()),
}
# fields macOS cannot enforce: changing them must leave the profile alone
NOT_IN_PROFILE = {
    "syscalls_enabled": lambda p: dataclasses.replace(p, syscalls_enabled=False),
    "syscall_set": lambda p: dataclasses.replace(p, syscall_set="other"),
    "syscall_deny": lambda p: dataclasses.replace(p, syscall_deny=("chmod",)),
    "syscall_allow": lambda p: dataclasses.replace(p, syscall_allow=("ptrace",)),
    "allow_32bit": lambda p: dataclasses.replace(p, allow_32bit=True),
    "socket_scan_depth": lambda p: dataclasses.replace(p, socket_scan_depth=9),
    "socket_skip_dirs": lambda p: dataclasses.replace(p, socket_skip_dirs=()),
    "pids_max": lambda p: dataclasses.replace(p, pids_max=10),
    "memory_max_mb": lambda p: dataclasses.replace(p, memory_max_mb=10),
    "egress_allow": lambda p: dataclasses.replace(p, egress_allow=(EgressRule("x.org"),)),
}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_fields_seatbelt_enforces_change_the_profile(name):
    assert parity.TABLE[name][1][0] in ("yes", "differs", "shared")
    policy = s.golden_policy("default")
    before, after = _build(policy), _build(CHANGES[name](policy))
    assert (before.sbpl, before.params) != (after.sbpl, after.params), name


@pytest.mark.parametrize("name", sorted(NOT_IN_PROFILE))
def test_fields_seatbelt_leaves_to_others_do_not_change_the_profile(name):
    assert parity.TABLE[name][1][0] in ("n/a", "shared", "differs")
    policy = s.golden_policy("default")
    before, after = _build(policy), _build(NOT_IN_PROFILE[name](policy))
    assert (before.sbpl, before.params) == (after.sbpl, after.params), name


def test_every_seatbelt_only_field_is_exercised():
    """Each field whose macOS enforcement is the profile ("yes") has a change above,
    or is found by discovery and reaches the profile through the Context."""
    through_context = {"sources", "writable", "protect_git", "protected_names", "unprotect"}
    for name, (_, (status, _text)) in parity.TABLE.items():
        if status == "yes":
            assert name in CHANGES or name in through_context, name
