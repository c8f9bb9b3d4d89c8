"""sandbox.linux.landlock's masks and rulesets, and sandbox.linux.fallback's pure plan."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sandbox.linux import fallback, landlock, seccomp
from sandbox.layout import Layout
from sandbox.policy import NetworkMode, Policy

ABI = landlock.abi_version()
needs_landlock = pytest.mark.skipif(ABI < 1, reason="this kernel has no Landlock")


def test_masks_grow_with_the_abi():
    assert landlock.fs_mask(0) == 0
    assert landlock.fs_mask(1) == (1 << 13) - 1
    assert landlock.fs_mask(2) & landlock.REFER and not landlock.fs_mask(2) & landlock.TRUNCATE
    assert landlock.fs_mask(3) & landlock.TRUNCATE
    assert not landlock.fs_mask(7) & landlock.IOCTL_DEV  # terminals need their ioctls
    assert landlock.net_mask(3) == 0 and landlock.net_mask(4) == 3
    assert landlock.scope_mask(5) == 0 and landlock.scope_mask(6) == 3
    assert not landlock.write_mask(7) & (landlock.MAKE_CHAR | landlock.MAKE_BLOCK)


@needs_landlock
def test_restrict_self_in_a_child(tmp_path):
    """A real ruleset: a child restricted to reading tmp_path cannot read elsewhere."""
    (tmp_path / "ok").write_text("yes")
    code = f"""
import ctypes, os, sys
from sandbox.linux import landlock
abi = landlock.abi_version()
rs = landlock.Ruleset(abi, landlock.fs_mask(abi))
rs.allow_path({str(tmp_path)!r}, landlock.READ)
ctypes.CDLL(None).prctl(38, 1, 0, 0, 0)
rs.restrict_self()
print(open({str(tmp_path / 'ok')!r}).read())
try:
    open("/etc/hostname").read()
    print("LEAK")
except PermissionError:
    print("refused")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["yes", "refused"], out.stderr


def _layout(**kw) -> Layout:
    base = dict(workspace="/w", cwd="/w", writable_roots=("/w", "/c/cache"), keep_in_place=(),
                read_only=("/w/.git/hooks",), masked_dirs=("/h/.ssh",),
                masked_files=("/w/.env", "/etc/shadow"), empty_dirs=("/run",),
                cache_dir="/c/cache", empty_file="/c/empty", state_dir="/c")
    base.update(kw)
    return Layout(**base)


def test_plan_paths_hide_what_landlock_can_and_name_the_rest():
    hidden, exposed, read = fallback.plan_paths(Policy("p", ("p",), "d"), _layout())
    assert "/h/.ssh" in hidden and "/etc/shadow" in hidden
    assert {"/tmp", "/var/tmp", "/dev/shm", "/run", "/c"} <= set(hidden)
    assert exposed == ["/w/.env"]  # inside a writable root: cannot be hidden
    assert read == []  # the workspace is not under a hidden path: the walk grants it


def test_workspace_under_tmp_gets_its_own_rule_and_exposes_its_secrets():
    layout = _layout(workspace="/tmp/w", cwd="/tmp/w", writable_roots=("/tmp/w",),
                     masked_files=("/tmp/w/.env",), scratch_parents=("/tmp/x",))
    hidden, exposed, read = fallback.plan_paths(Policy("p", ("p",), "d"), layout)
    assert "/tmp" in hidden and exposed == ["/tmp/w/.env"] and read == ["/tmp/x"]


def test_build_argv_and_degraded():
    policy = Policy("p", ("p",), "d")
    inv = fallback.build(policy, _layout(), ["echo", "hi"], {"PATH": "/usr/bin"}, state="/c",
                         seccomp_file="/c/f.bpf", python="/py")
    argv = list(inv.argv)
    assert argv[:4] == ["/py", "-I", "-m", "sandbox.linux.confine"]
    assert argv[inv.status_fd_arg - 1] == "--json-status-fd"
    assert argv[inv.seccomp_fd_arg - 1] == "--seccomp"
    assert argv[-3:] == ["--", "echo", "hi"]
    spec = json.loads(argv[argv.index("--spec") + 1])
    assert spec["write"] == ["/w", "/c/cache"] and spec["cwd"] == "/w"
    words = " ".join(fallback.degraded(policy, _layout(), 7))
    assert "1 protected path(s)" in words and "1 secret file(s)" in words
    assert "signals" not in words and "signals" in " ".join(fallback.degraded(policy, _layout(), 5))


def test_what_the_fallback_cannot_enforce_is_refused():
    from sandbox.errors import SetupError

    proxied = Policy("p", ("p",), "d", network=NetworkMode.PROXY)
    with pytest.raises(SetupError, match="egress proxy"):
        fallback.check(proxied, 3)  # no Landlock network rules before ABI 4
    fallback.check(proxied, 4)
    with pytest.raises(SetupError, match="seccomp"):
        fallback.check(Policy("p", ("p",), "d", syscalls_enabled=False), 7)


def test_proxy_mode_socket_rules_leave_only_tcp():
    rules = fallback.seccomp_extra(Policy("p", ("p",), "d", network=NetworkMode.PROXY))
    refused_types = {c[1][2] for c in (r.conditions for r in rules) if c[1][0] == 1}
    assert 1 not in refused_types and {2, 3, 5} <= refused_types  # SOCK_STREAM stays
    refused_protocols = {c[1][2] for c in (r.conditions for r in rules) if c[1][0] == 2}
    assert refused_protocols == {132, 262}  # SCTP, MPTCP: not seen by Landlock's TCP rules


def test_socket_rules_survive_syscalls_allow():
    rules = seccomp.rules("default", allow=("socket",), extra=fallback.seccomp_extra(
        Policy("p", ("p",), "d")))
    inet = [r for r in rules if r.syscall == "socket"]
    assert sorted(r.conditions[0][2] for r in inet) == [2, 10]
