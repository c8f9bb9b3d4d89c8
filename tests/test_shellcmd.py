"""``sandbox sh 'STRING'``: the fast path's parse agrees with typer, and the string
reaches ``bash -c`` inside the sandbox unchanged."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import sandbox.app
from conftest import sandbox_exe
from sandbox import cli, shellcmd
from sandbox.__main__ import parse_sh

RUNNER = CliRunner()


def typer_sh(args: list[str]):
    captured = []
    original = sandbox.app.run
    sandbox.app.run = lambda opts, environ: captured.append(opts) or 0
    try:
        result = RUNNER.invoke(cli.app, ["sh", *args], catch_exceptions=False)
    finally:
        sandbox.app.run = original
    return captured[0] if result.exit_code == 0 and captured else None


AGREE = [
    ["echo hi"],
    ["--", "echo hi"],
    ["--", "-x"],
    ["--", "--"],
    ["-p", "readonly", "make test && echo ok"],
    ["-p", "readonly", "--", "make test"],
    ["--profile=pypi", "-w", "sub", "--", "pip install -r r.txt"],
    ["-q", "--dry-run", "true"],
    ["--report", "-", "x"],
    ["--allow-write", "/a", "--unprotect", ".vscode", "--", "x"],
    ["cat <<'EOF'\n$HOME 'q' \"d\"\nEOF"],
    [""],
]


@pytest.mark.parametrize("args", AGREE, ids=[repr(a) for a in AGREE])
def test_fast_path_agrees_with_typer(args):
    fast = parse_sh(args)
    assert fast is not None
    assert fast.command == (shellcmd.shell_path(), "-c", "--", args[-1])
    assert fast == typer_sh(args)


FALLBACK = [[], ["--"], ["a", "b"], ["--", "a", "b"], ["-p", "readonly"], ["-x"], ["--help"],
            ["-p", "--", "x"], ["--bogus", "x"], ["x", "--", "y"]]


@pytest.mark.parametrize("args", FALLBACK, ids=[repr(a) for a in FALLBACK])
def test_fast_path_falls_back(args):
    assert parse_sh(args) is None


TOKENS = st.sampled_from(["--", "-p", "--profile", "-w", "--allow-write", "--report", "--dry-run",
                          "-q", "--help", "readonly", "/abs", "a=b", "-", "--profile=x", "-p=x",
                          "--bogus", "echo hi", "-n", "", "it's"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TOKENS, max_size=7))
def test_fast_path_agrees_with_typer_property(args):
    fast = parse_sh(args)
    if fast is not None:
        assert fast == typer_sh(args), args


def test_shell_is_taken_from_fixed_places(monkeypatch):
    assert shellcmd.shell_path() in shellcmd.SHELLS
    present = {"/bin/sh"}
    monkeypatch.setattr(shellcmd.os, "access", lambda p, mode: p in present)
    monkeypatch.setattr(shellcmd.os.path, "isfile", lambda p: p in present)
    assert shellcmd.shell_path() == "/bin/sh"  # no bash: sh
    present.clear()
    assert shellcmd.shell_path() == "/bin/sh"  # nothing: the run says "not found"


def test_sh_never_imports_typer():
    code = ("import sys; from sandbox.__main__ import parse_sh; "
            "o = parse_sh(['-p', 'readonly', 'echo hi']); assert o is not None; "
            "print('typer' in sys.modules, 'click' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd="/")
    assert out.stdout.split() == ["False", "False"]


# -- real runs -------------------------------------------------------------------------

def sh(senv, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    senv.finish()
    return subprocess.run(senv.who.prefix() + [sandbox_exe(), "sh", *args], cwd=senv.ws,
                          capture_output=True, env=env or senv.environ(), timeout=120)


STRING = ("cat <<'EOF'\nit's \"x\" $HOME `id -u` \\n\tend \nEOF\n"
          "printf '%s|' \"$0\" 'a  b' $'c\\td'; exit 7")


@pytest.mark.integration
def test_string_reaches_bash_unchanged(senv):
    bare = subprocess.run(["/bin/bash", "-c", STRING], capture_output=True)
    inside = sh(senv, "-q", STRING)
    assert inside.returncode == 7 == bare.returncode, inside.stderr.decode()
    assert inside.stdout == bare.stdout.replace(b"/bin/bash|", shellcmd.shell_path().encode()
                                                + b"|")


@pytest.mark.integration
def test_leading_dash_needs_double_dash(senv):
    dash = sh(senv, "-q", "--", "-n")  # the string "-n", run as a command, not a shell option
    assert dash.returncode == 127 and b"-n: command not found" in dash.stderr, dash.stderr
    bad = sh(senv, "-n")
    assert bad.returncode == 125 and bad.stderr.startswith(b"sandbox: usage error:")


@pytest.mark.integration
@pytest.mark.parametrize("args", [[], ["a", "b"], ["--", "a", "b"]])
def test_not_one_string_is_a_one_line_usage_error(senv, args):
    r = sh(senv, *args)
    assert r.returncode == 125
    assert r.stderr.decode().startswith("sandbox: usage error:")
    assert len(r.stderr.decode().strip().splitlines()) == 1


@pytest.mark.integration
def test_a_bash_first_on_path_is_not_used(senv):
    """An activated workspace venv can put its own ``bash`` first on PATH; the
    string still goes to the system shell, never to that file."""
    fake = senv.ws / ".venv" / "bin"
    fake.mkdir(parents=True)
    (fake / "bash").write_text("#!/bin/sh\necho PLANTED\n")
    (fake / "bash").chmod(0o755)
    env = senv.environ(PATH=f"{fake}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    senv.finish()
    bare = subprocess.run(senv.who.prefix() + ["bash", "-c", "echo real"], cwd=senv.ws, env=env,
                          capture_output=True)
    assert bare.stdout == b"PLANTED\n"  # the plant works where PATH decides
    inside = sh(senv, "-q", "echo real", env=env)
    assert inside.stdout == b"real\n", inside.stderr.decode()


@pytest.mark.integration
def test_secret_and_network_closed_through_sh(senv):
    token = os.urandom(6).hex()
    (senv.ws / ".env").write_text(f"K={token}\n")
    r = sh(senv, "-q", "cat .env; (echo > /dev/tcp/127.0.0.1/9) 2>/dev/null && echo OPEN || "
                       "echo CLOSED")
    assert token not in r.stdout.decode() and b"CLOSED" in r.stdout
