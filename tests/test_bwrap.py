"""sandbox.linux.bwrap: Policy + Layout -> the exact argv, in the documented order."""

from __future__ import annotations

import dataclasses

import pytest

from sandbox import profile
from sandbox.linux import bwrap
from sandbox.layout import Layout

CTX = profile.Context(workspace="/ws", home="/home/u", tmp="/tmp", runtime="/run/user/1000")
CACHE = "/home/u/.cache/sandbox/workspaces/abc"
EMPTY = "/home/u/.cache/sandbox/empty"
RESOLV = "/home/u/.cache/sandbox/net/resolv.conf-0123456789abcdef"

NS = [
    "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
    "--unshare-net", "--disable-userns", "--die-with-parent", "--new-session",
    "--cap-drop", "ALL", "--hostname", "sandbox",
]
BASE = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
        # kernel knobs read-only even for a root caller, right after the new /proc
        "--ro-bind-try", "/proc/sys", "/proc/sys",
        "--ro-bind-try", "/proc/sysrq-trigger", "/proc/sysrq-trigger",
        "--ro-bind-try", "/proc/irq", "/proc/irq",
        "--ro-bind-try", "/proc/bus", "/proc/bus",
        "--tmpfs", "/tmp", "--tmpfs", "/var/tmp", "--tmpfs", "/dev/shm"]


@pytest.fixture(autouse=True)
def _no_user_profiles(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))


def policy(name: str = "default"):
    return profile.load(name, CTX)[0]


def layout(**kw) -> Layout:
    values = dict(workspace="/ws", cwd="/ws/sub", writable_roots=("/ws",), keep_in_place=(),
                  read_only=(), masked_dirs=(), masked_files=(), empty_dirs=(), cache_dir=None,
                  empty_file=EMPTY)
    values.update(kw)
    return Layout(**values)


def tail(cmd=("make", "test"), cwd="/ws/sub"):
    return ["--chdir", cwd, "--json-status-fd", "3", "--", *cmd]


def test_default_write_workspace():
    lay = layout(writable_roots=("/ws", CACHE), empty_dirs=("/run", "/var/run"), cache_dir=CACHE,
                 masked_files=("/ws/.env",))
    inv = bwrap.build(policy(), lay, ["make", "test"], {"PATH": "/usr/bin"}, bwrap_path="/usr/bin/bwrap")
    assert list(inv.argv) == [
        "/usr/bin/bwrap", *NS, *BASE,
        "--tmpfs", "/run", "--tmpfs", "/var/run",
        "--bind", "/ws", "/ws", "--bind", CACHE, CACHE,
        "--ro-bind", EMPTY, "/ws/.env",
        "--remount-ro", "/run", "--remount-ro", "/var/run",
        *tail(),
    ]
    assert inv.argv[inv.status_fd_arg] == "3"
    assert inv.argv[inv.status_fd_arg - 1] == "--json-status-fd"
    assert inv.interactive is False


def test_readonly_workspace():
    lay = layout(writable_roots=(), empty_dirs=("/run",))
    inv = bwrap.build(policy("readonly"), lay, ["ls"], {})
    assert list(inv.argv) == [
        "bwrap", *NS, *BASE,
        "--tmpfs", "/run",
        "--ro-bind", "/ws", "/ws",
        "--remount-ro", "/run",
        *tail(["ls"]),  # the private scratch dirs stay writable (tests need them)
    ]


def test_read_only_scratch():
    from sandbox.policy import Access

    lay = layout(writable_roots=(), empty_dirs=("/run",))
    pol = dataclasses.replace(policy("readonly"), scratch=Access.READ)
    inv = bwrap.build(pol, lay, ["ls"], {})
    assert list(inv.argv) == [
        "bwrap", *NS, *BASE,
        "--tmpfs", "/run",
        "--ro-bind", "/ws", "/ws",
        "--remount-ro", "/run",
        "--remount-ro", "/tmp", "--remount-ro", "/var/tmp", "--remount-ro", "/dev/shm",
        *tail(["ls"]),
    ]


def test_full_ordering():
    lay = layout(
        writable_roots=("/ws", "/srv/out"),
        keep_in_place=("/ws/.git", "/ws/a"),
        read_only=("/ws/.git/hooks", "/ws/.git/config", "/ws/a/.vscode"),
        masked_dirs=("/home/u/.ssh", "/home/u/.aws"),
        masked_files=("/home/u/.netrc", "/home/u/agent.sock"),
        empty_dirs=("/run", "/var/run", "/run/user/1000"),
        resolv_conf=(RESOLV, "/etc/resolv.conf"),
        nsswitch=("/home/u/.cache/sandbox/net/nsswitch.conf-1", "/etc/nsswitch.conf"),
    )
    inv = bwrap.build(policy(), lay, ["sh", "-c", "echo hi"], {})
    assert list(inv.argv) == [
        "bwrap", *NS, *BASE,
        # empty dirs as tmpfs, before the writable roots
        "--tmpfs", "/run", "--tmpfs", "/var/run", "--tmpfs", "/run/user/1000",
        "--bind", "/ws", "/ws", "--bind", "/srv/out", "/srv/out",
        # keep-in-place before the read-only protected paths
        "--bind", "/ws/.git", "/ws/.git", "--bind", "/ws/a", "/ws/a",
        "--ro-bind", "/ws/.git/hooks", "/ws/.git/hooks",
        "--ro-bind", "/ws/.git/config", "/ws/.git/config",
        "--ro-bind", "/ws/a/.vscode", "/ws/a/.vscode",
        # no network: lookups go to the run's own resolver; after the
        # writable roots (none may cover it), before the secrets (a mask wins);
        # nsswitch.conf is only for a run that falls back (sandbox.egress.dns)
        "--ro-bind", RESOLV, "/etc/resolv.conf",
        # secrets: dirs become a read-only tmpfs, files the empty file
        "--tmpfs", "/home/u/.ssh", "--remount-ro", "/home/u/.ssh",
        "--tmpfs", "/home/u/.aws", "--remount-ro", "/home/u/.aws",
        "--ro-bind", EMPTY, "/home/u/.netrc",
        "--ro-bind", EMPTY, "/home/u/agent.sock",
        # empty dirs become read-only after everything was mounted inside them
        "--remount-ro", "/run", "--remount-ro", "/var/run", "--remount-ro", "/run/user/1000",
        *tail(["sh", "-c", "echo hi"]),
    ]


def test_ctty_helper_after_double_dash():
    inv = bwrap.build(policy(), layout(), ["vim", "x"], {}, ctty_helper="/usr/bin/setsid")
    argv = list(inv.argv)
    assert argv == ["bwrap", *NS, *BASE, "--bind", "/ws", "/ws",
                    "--chdir", "/ws/sub", "--json-status-fd", "3", "--",
                    "/usr/bin/setsid", "--wait", "--ctty", "--", "vim", "x"]
    assert inv.interactive is True
    assert argv[inv.status_fd_arg] == "3"


def test_command_with_dashes_is_passed_verbatim():
    inv = bwrap.build(policy(), layout(), ["--", "--tmpfs", "/"], {})
    assert list(inv.argv[-4:]) == ["--", "--", "--tmpfs", "/"]


def test_environment():
    environ = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/u",
        "GITHUB_TOKEN": "ghp_supersecretvalue1",
        "aws_secret_access_key": "awsSECRETvalue2",
        "SSH_AUTH_SOCK": "/run/user/1000/ssh-agent.sock",
        "OPENAI_API_KEY": "sk-value3",
        "TOKENIZERS_PARALLELISM": "false",
        "TMPDIR": "/home/u/tmp",
        "PIP_CACHE_DIR": "/home/u/.cache/pip",
        "LANG": "C.UTF-8",
    }
    lay = layout(writable_roots=("/ws", CACHE), cache_dir=CACHE)
    pol = policy()
    inv = bwrap.build(pol, lay, ["env"], environ)
    expected = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/u",
        "TOKENIZERS_PARALLELISM": "false",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        "PWD": "/ws/sub",
        "SANDBOX_ACTIVE": "1",
    }
    expected.update({var: f"{CACHE}/{sub}" for var, sub in pol.caches})
    assert inv.env == expected
    assert inv.env["PIP_CACHE_DIR"] == f"{CACHE}/pip"
    assert inv.env["XDG_CACHE_HOME"] == f"{CACHE}/xdg-cache"
    joined = "\0".join(inv.argv)
    for value in environ.values():
        if value not in ("/home/u",):  # a path that may legitimately be a mount point
            assert value not in joined
    assert "--setenv" not in inv.argv


def test_environment_without_cache_dir():
    inv = bwrap.build(policy("readonly"), layout(writable_roots=()), ["env"],
                      {"PIP_CACHE_DIR": "/host/pip", "NPM_TOKEN": "x"})
    assert inv.env == {"PIP_CACHE_DIR": "/host/pip", "TMPDIR": "/tmp", "PWD": "/ws/sub",
                       "SANDBOX_ACTIVE": "1"}


def test_build_is_pure():
    pol, lay = policy(), layout(masked_files=("/a",))
    environ = {"A_TOKEN": "x", "B": "y"}
    first = bwrap.build(pol, lay, ["true"], environ)
    second = bwrap.build(pol, lay, ["true"], environ)
    assert first == second
    assert environ == {"A_TOKEN": "x", "B": "y"}


def test_network_namespace_always_unshared():
    pol = policy()
    args = bwrap.namespace_args(pol)
    assert "--unshare-net" in args
    assert bwrap.namespace_args(dataclasses.replace(pol, name="x")) == args


def test_proxy_mode_leaves_the_network_namespace_to_the_bridge():
    """Exactly one difference: no --unshare-net (the runner starts bwrap inside
    the bridge's namespace and refuses this argv without it)."""
    from sandbox.policy import NetworkMode

    pol = dataclasses.replace(policy(), network=NetworkMode.PROXY)
    assert bwrap.namespace_args(pol) == [a for a in NS if a != "--unshare-net"]
    for name in ("pypi", "npm", "github"):
        assert "--unshare-net" not in bwrap.namespace_args(policy(name))
    assert "--unshare-net" in bwrap.namespace_args(policy("readonly"))
