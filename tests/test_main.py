"""sandbox.__main__.parse_run (the fast path) agrees with the typer CLI."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import sandbox.app
from sandbox import cli
from sandbox.__main__ import parse_run

RUNNER = CliRunner()


def typer_options(args: list[str], monkeypatch=None):
    """What the typer ``run`` command hands to sandbox.app.run, or None if it refuses."""
    captured = []

    def fake_run(opts, environ):
        captured.append(opts)
        return 0

    original = sandbox.app.run
    sandbox.app.run = fake_run
    try:
        result = RUNNER.invoke(cli.app, ["run", *args], catch_exceptions=False)
    finally:
        sandbox.app.run = original
    if result.exit_code != 0 or not captured:
        return None
    return captured[0]


AGREE = [
    ["--", "echo", "hi"],
    ["--", "sh", "-c", "echo $HOME"],
    ["-p", "readonly", "--", "ls", "-la"],
    ["--profile", "readonly", "--", "ls"],
    ["--profile=readonly", "--", "ls"],
    ["--profile", "./my.toml", "-w", "sub", "--", "make", "test"],
    ["--workspace=/srv/proj", "--", "make"],
    ["-w", "..", "-p", "default", "--", "true"],
    ["--allow-write", "/a", "--allow-write=/b", "--unprotect", ".git/hooks", "--", "x"],
    ["--unprotect=.vscode", "--unprotect", ".idea", "--", "x"],
    ["--report", "r.json", "--dry-run", "--", "cmd", "--help"],
    ["--dry-run", "--report=/tmp/r.json", "--", "cmd"],
    ["--dry-run", "--dry-run", "--", "cmd"],
    ["-p", "a", "-p", "b", "--profile=c", "--", "x"],  # the last one wins
    ["--", "--", "x"],
    ["--", "-p", "readonly"],
    ["--", "--dry-run"],
    ["--profile", "a=b", "--", "x"],
    ["--workspace", "dir with spaces", "--", "x"],
    ["--allow-write", "/x=y", "--", "x"],
    ["--quiet", "--", "x"],
    ["-q", "-p", "readonly", "--", "x"],
    ["--", "-q"],
    # the per-call flags (sandbox.runflags): same canonical values on both paths
    ["--timeout", "30", "--", "x"],
    ["--timeout=0.5", "--", "x"],
    ["--timeout", "1.50", "--timeout", "2", "--", "x"],  # the last one wins
    ["--env-pass", "CI", "--env-pass=NPM_TOKEN", "--env-pass", "CI", "--", "x"],
    ["--network", "none", "--", "x"],
    ["--network=proxy", "--allow-host", "PyPI.org", "--", "x"],
    ["--allow-host", "127.0.0.1:8080", "--allow-host=[::1]:9", "--allow-host", "::1", "--", "x"],
    ["-q", "--timeout", "9", "--env-pass", "A", "--allow-host", "a.org:80", "-p", "npm", "--",
     "npm", "ci"],
    ["--", "--timeout", "x"],
]


@pytest.mark.parametrize("args", AGREE, ids=[" ".join(a) for a in AGREE])
def test_fast_path_agrees_with_typer(args):
    fast = parse_run(args)
    assert fast is not None
    assert fast == typer_options(args)


def test_parsed_values():
    opts = parse_run(["-p", "readonly", "-w", "ws", "--allow-write", "/a", "--allow-write=/b",
                      "--unprotect", "u", "--report", "r", "--dry-run", "--", "make", "-j2"])
    assert opts == cli._options(["make", "-j2"], "readonly", "ws", ["/a", "/b"], ["u"], "r", True)
    assert opts.command == ("make", "-j2")
    assert opts.allow_write == ("/a", "/b")
    assert opts.dry_run is True


def test_defaults_match_the_cli_helper():
    assert parse_run(["--", "true"]) == cli._options(["true"], None, None, None, None)  # no --profile: None


FALLBACK = [
    [],
    ["--"],
    ["echo", "hi"],
    ["--help"],
    ["-h"],
    ["--help", "--", "x"],
    ["--bogus", "--", "x"],
    ["-x", "--", "x"],
    ["--profile"],
    ["-p"],
    ["--profile", "readonly"],
    ["--profile", "readonly", "ls"],
    ["--profile=", "--", "x"],
    ["--report", "", "--", "x"],
    ["-p=readonly", "--", "x"],
    ["-preadonly", "--", "x"],
    ["--dry-run=yes", "--", "x"],
    ["--prof", "x", "--", "y"],
    ["--version", "--", "x"],
    ["-", "--", "x"],
    ["--dry-run"],
    ["--allow-write", "/a"],
    # a value that looks like an option is a forgotten value: typer says so
    ["-p", "--", "--", "x"],
    ["--profile", "-w", "--", "x"],
    ["--profile", "--dry-run", "--", "x"],
    ["--report", "--", "--", "x"],
    ["--allow-write", "--help", "--", "x"],
    ["-w", "-", "--", "x"],
    # bad per-call values: typer says what is wrong
    ["--timeout", "0", "--", "x"],
    ["--timeout", "-5", "--", "x"],
    ["--timeout", "soon", "--", "x"],
    ["--timeout", "--", "x"],
    ["--timeout=", "--", "x"],
    ["--network", "off", "--", "x"],
    ["--network", "none", "--allow-host", "a.org", "--", "x"],
    ["--allow-host", "a.org:99999", "--", "x"],
    ["--allow-host", "--", "x"],
    ["--env-pass", "A=B", "--", "x"],
    ["--env-pass", "--", "x"],
]


@pytest.mark.parametrize("args", FALLBACK, ids=[" ".join(a) or "<empty>" for a in FALLBACK])
def test_fast_path_falls_back(args):
    assert parse_run(args) is None


def test_fast_path_never_imports_typer():
    import subprocess
    import sys

    code = ("import sys; from sandbox.__main__ import parse_run; "
            "o = parse_run(['-p', 'readonly', '--', 'x']); "
            "assert o is not None; print('typer' in sys.modules, 'click' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# -- property: whenever the fast path answers, typer gives the same answer -------

TOKENS = st.sampled_from([
    "--", "-p", "--profile", "-w", "--workspace", "--allow-write", "--unprotect", "--report",
    "--dry-run", "--help", "-h", "readonly", "default", "x.toml", "/abs", "rel", "a=b", "-",
    "--profile=readonly", "--allow-write=/x", "--unprotect=.vscode", "--report=r.json",
    "--workspace=w", "-p=x", "--bogus", "echo", "hi", "",
    "--timeout", "5", "0", "1.5", "--network", "none", "proxy", "--allow-host", "a.org:80",
    "[::1]", "--env-pass", "CI", "A=B", "--timeout=3", "--network=none", "-q",
])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TOKENS, max_size=8))
def test_fast_path_agrees_with_typer_property(args):
    fast = parse_run(args)
    if fast is not None:
        assert fast == typer_options(args), args


# -- sandbox --version: answered before typer is imported ------------------------

def test_version_never_imports_typer():
    import subprocess
    import sys

    code = ("import sys; sys.argv = ['sandbox', '--version']\n"
            "from sandbox.__main__ import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print('typer' in sys.modules, 'click' in sys.modules, code)")
    # cwd "/": the installed package, not a checkout that happens to be the cwd
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd="/")
    lines = out.stdout.splitlines()
    assert lines[-1].split() == ["False", "False", "0"]
    from sandbox import __version__

    assert lines[0] == f"sandbox {__version__}"


def test_version_agrees_with_typer():
    from sandbox import __version__

    result = RUNNER.invoke(cli.app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"sandbox {__version__}\n"


def test_per_call_flag_values_are_canonical():
    opts = parse_run(["--timeout", "2.0", "--env-pass", "B", "--env-pass", "A", "--env-pass", "B",
                      "--allow-host", "Example.ORG", "--network", "proxy", "--", "x"])
    assert (opts.timeout, opts.env_pass, opts.allow_host, opts.network) == (
        2, ("B", "A"), ("example.org:443",), "proxy")


BAD_FLAGS = [
    (["--timeout", "0"], "--timeout: '0' is not positive"),
    (["--timeout", "soon"], "--timeout: 'soon' is not a number of seconds"),
    (["--network", "off"], "--network: 'off' is not a network mode"),
    (["--allow-host", "a.org:0"], "--allow-host: port '0' in 'a.org:0' is not 1 to 65535"),
    (["--network", "none", "--allow-host", "a.org"], "--allow-host: --network none turns"),
    (["--env-pass", "A=B"], "--env-pass: 'A=B' is not an environment variable name"),
]


@pytest.mark.parametrize("args, message", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flag_values_are_one_line_with_a_hint(args, message):
    result = RUNNER.invoke(cli.app, ["run", *args, "--", "true"])
    assert result.exit_code == 125
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"sandbox: usage error: {message}")
    assert "(hint: " in lines[0] and "Traceback" not in result.output


# -- the end of a run: os._exit after a flush (sandbox.__main__.exit_now) ----------

def _exit_now(body: str):
    import subprocess
    import sys

    code = "import sys\nfrom sandbox.__main__ import exit_now\n" + body
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_exit_now_keeps_the_status_and_flushes_buffered_output():
    # stdout is a pipe here, so print() only fills a buffer: lost without the flush
    done = _exit_now("print('out', end=''); print('err', file=sys.stderr, end=''); exit_now(7)")
    assert (done.returncode, done.stdout, done.stderr) == (7, "out", "err")


def test_exit_now_runs_atexit_handlers_when_there_are_any():
    done = _exit_now("import atexit; atexit.register(lambda: print('handler ran'))\nexit_now(3)")
    assert (done.returncode, done.stdout) == (3, "handler ran\n")


def test_exit_now_waits_for_threading_threads():
    done = _exit_now("import threading, time\n"
                     "t = threading.Thread(target=lambda: (time.sleep(0.2), print('joined')))\n"
                     "t.start()\nexit_now(0)")
    assert (done.returncode, done.stdout) == (0, "joined\n")


def test_main_collects_garbage_less_often():
    # the collector's default (700) made it walk the start's objects 14 times
    import subprocess
    import sys

    code = ("import gc, sys; sys.argv = ['sandbox', '--version']\n"
            "from sandbox.__main__ import main, GC_THRESHOLD\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(gc.get_threshold()[0] == GC_THRESHOLD > 700)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "True"
