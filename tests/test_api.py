"""The Python API (sandbox.api) runs the real sandbox, as root and as a plain user.

Each test starts a fresh Python (the test user's, through setpriv when the
suite runs as root) that imports the installed package and calls the API,
as a plugin would; the sandbox then runs through the real bwrap.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest

from conftest import REPO

PYTHON = str(Path(os.path.realpath(sys.prefix)) / "bin" / "python")
REPORT_SCHEMA = json.loads((REPO / "docs" / "schemas" / "report.schema.json").read_text())
SECRET = b"-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n"


def py(senv, code: str, *, env=None, timeout=120) -> subprocess.CompletedProcess:
    """Run ``code`` in a new Python as the test's user, in the workspace."""
    senv.finish()
    return subprocess.run(senv.who.prefix() + [PYTHON, "-c", textwrap.dedent(code)],
                          cwd=senv.ws, env=env or senv.environ(), capture_output=True,
                          timeout=timeout)


def result_of(done: subprocess.CompletedProcess) -> dict:
    """The JSON the snippet printed on its last line of stdout."""
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


DUMP = """
import base64, json
def dump(r):
    print(json.dumps({"report": r.report, "exit": r.exit_status,
                      "stdout": None if r.stdout is None else base64.b64encode(r.stdout).decode(),
                      "stderr": None if r.stderr is None else base64.b64encode(r.stderr).decode()}))
"""


def decode(value):
    import base64

    return None if value is None else base64.b64decode(value)


def test_captured_output_exit_status_and_report(senv):
    got = result_of(py(senv, DUMP + """
from sandbox import run
dump(run(["sh", "-c", "echo out; echo err >&2; exit 7"], capture_output=True))
"""))
    assert got["exit"] == 7
    assert decode(got["stdout"]) == b"out\n" and decode(got["stderr"]) == b"err\n"
    jsonschema.validate(got["report"], REPORT_SCHEMA)
    assert got["report"]["outcome"] == "exited" and got["report"]["command_status"] == 7


def test_cwd_is_where_the_run_starts_and_the_workspace(senv):
    sub = senv.ws / "sub"
    sub.mkdir()
    got = result_of(py(senv, DUMP + f"""
import os
from sandbox import run
dump(run(["sh", "-c", "pwd; touch made"], cwd={str(sub)!r}, capture_output=True))
assert os.getcwd() == {str(senv.ws)!r}
"""))
    assert decode(got["stdout"]) == f"{sub}\n".encode()
    assert (sub / "made").exists() and got["report"]["workspace"] == str(sub)


def test_input_reaches_the_command(senv):
    got = result_of(py(senv, DUMP + """
from sandbox import run
dump(run(["wc", "-c"], input=b"x" * 100000, capture_output=True))
"""))
    assert decode(got["stdout"]).strip() == b"100000"


def test_passed_through_output_goes_to_the_callers_descriptors(senv):
    done = py(senv, """
import sys
from sandbox import run
r = run(["sh", "-c", "echo to-stdout; echo to-stderr >&2"])
assert r.stdout is None and r.stderr is None
print("status", r.exit_status)
""")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"to-stdout\nstatus 0\n"
    assert done.stderr == b"to-stderr\n"  # and nothing of the sandbox's


def test_secret_reads_empty(senv):
    ssh = senv.home / ".ssh"
    ssh.mkdir()
    (ssh / "id_ed25519").write_bytes(SECRET)
    senv.finish()
    # the attack works without the sandbox
    bare = subprocess.run(senv.who.prefix() + ["cat", str(ssh / "id_ed25519")],
                          capture_output=True)
    assert bare.stdout == SECRET
    got = result_of(py(senv, DUMP + f"""
from sandbox import run
dump(run(["cat", {str(ssh / "id_ed25519")!r}], capture_output=True))
"""))
    # ~/.ssh is an empty directory inside: nothing of the key comes out
    assert decode(got["stdout"]) == b"" and b"not-a-real-key" not in decode(got["stderr"])


def test_network_is_closed(senv):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    port = server.getsockname()[1]
    probe = (f"import socket; s = socket.socket(); s.settimeout(5); "
             f"print(s.connect_ex(('127.0.0.1', {port})))")
    try:
        # without the sandbox the connection is made
        bare = subprocess.run(["/usr/bin/python3", "-c", probe], capture_output=True, timeout=30)
        assert bare.stdout.strip() == b"0"
        got = result_of(py(senv, DUMP + f"""
from sandbox import run
dump(run(["/usr/bin/python3", "-c", {probe!r}], capture_output=True))
"""))
    finally:
        server.close()
    assert decode(got["stdout"]).strip() not in (b"0", b"")  # ECONNREFUSED inside


def test_timeout_from_a_profile(senv):
    profile = senv.base / "slow.toml"
    profile.write_text('extends = "default"\n[limits]\ntimeout_seconds = 1\n')
    got = result_of(py(senv, DUMP + f"""
from sandbox import run
dump(run(["sleep", "30"], profile={str(profile)!r}, capture_output=True))
"""))
    assert got["exit"] == 124 and got["report"]["outcome"] == "timeout"
    jsonschema.validate(got["report"], REPORT_SCHEMA)


def test_timeout_option(senv):
    from sandbox.options import FIELDS

    if "timeout" not in FIELDS:
        pytest.skip("no per-call --timeout option in this build (issue 10, deliverable 5)")
    got = result_of(py(senv, DUMP + """
from sandbox import run
dump(run(["sleep", "30"], timeout=1, capture_output=True))
"""))
    assert got["exit"] == 124 and got["report"]["outcome"] == "timeout"


@pytest.mark.parametrize("case,cls,code", [
    ("profile", "ProfileError", "profile_not_found"),
    ("workspace", "UsageError", "workspace_invalid"),
    ("bwrap", "SetupError", "bwrap_missing"),
    ("command", "CommandNotFound", "command_not_found"),
])
def test_setup_failures_raise_with_their_code(senv, case, cls, code):
    kwargs = {"profile": "profile='no-such-profile'", "workspace": "workspace='/usr'",
              "bwrap": "env=dict(os.environ, SANDBOX_BWRAP='/nonexistent/bwrap')",
              "command": ""}[case]
    command = "['no-such-command-xyz']" if case == "command" else "['touch', 'made']"
    got = result_of(py(senv, f"""
import json, os, sandbox
try:
    sandbox.run({command}, {kwargs})
except sandbox.SandboxError as err:
    print(json.dumps({{"cls": type(err).__name__, "code": err.code, "message": err.message,
                      "report": err.result.report}}))
"""))
    assert (got["cls"], got["code"]) == (cls, code), got
    jsonschema.validate(got["report"], REPORT_SCHEMA)
    assert got["report"]["outcome"] == "error"
    assert not (senv.ws / "made").exists()


def test_explain(senv):
    got = result_of(py(senv, """
import json
from sandbox.api import explain
print(json.dumps(explain(profile="readonly")))
"""))
    schema = json.loads((REPO / "docs" / "schemas" / "explain.schema.json").read_text())
    jsonschema.validate(got, schema)
    assert got["profile"]["name"] == "readonly" and got["error"] is None


def test_the_caller_keeps_its_state_and_threads_work(senv):
    """cwd, environment, signal handlers and descriptors of the caller are unchanged;
    four runs from threads at once each get their own output."""
    done = py(senv, """
import os, signal, threading
from sandbox import run
def fds():
    return sorted(os.listdir("/proc/self/fd"))
names = [s for s in dir(signal) if s.startswith("SIG") and not s.startswith("SIG_")
         and isinstance(getattr(signal, s), signal.Signals)]
watch = [getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGWINCH",
                                      "SIGCHLD", "SIGPIPE")]
before = (os.getcwd(), dict(os.environ), [signal.getsignal(s) for s in watch], fds())
results = {}
def one(i):
    results[i] = run(["sh", "-c", f"echo {i}; exit {i}"], capture_output=True)
threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
for t in threads: t.start()
for t in threads: t.join()
after = (os.getcwd(), dict(os.environ), [signal.getsignal(s) for s in watch], fds())
assert before == after, (before, after)
for i, r in results.items():
    assert r.exit_status == i and r.stdout == f"{i}\\n".encode(), (i, r, r.stdout)
print("ok")
""")
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"ok\n"


def test_no_typer_and_a_cheap_package_import():
    code = """
import sys
import sandbox
assert "sandbox.api" not in sys.modules  # the package does not load the API by itself
from sandbox import run, RunOptions
heavy = [m for m in ("typer", "click", "jsonschema", "pydantic", "sandbox.cli", "sandbox.app")
         if m in sys.modules]
print(heavy)
"""
    # -P: the installed package, not a source tree in the current directory
    done = subprocess.run([PYTHON, "-P", "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_no_typer_after_a_run(senv):
    done = py(senv, """
import sys
from sandbox import run
run(["true"])
print([m for m in ("typer", "click", "jsonschema") if m in sys.modules])
""")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == b"[]"


def test_cli_args_round_trip_through_the_fast_path():
    """Every RunOptions field becomes the option the command line parses back to it."""
    from sandbox.__main__ import parse_run
    from sandbox.api import cli_args
    from sandbox.options import FIELDS, RunOptions

    values = {"profile": "readonly", "workspace": "/srv/w", "allow_write": ("/a", "/b=c"),
              "unprotect": (".vscode",)}
    # the per-call flags (issue 10): values in their canonical form
    samples = {"timeout": 5, "network": "proxy", "env_pass": ("CI",),
               "allow_host": ("example.test:8443",)}
    values.update({k: v for k, v in samples.items() if k in FIELDS})
    for field in FIELDS:  # any other field: a sample value of the default's type
        default = getattr(RunOptions(), field)
        if field in values or field in ("command", "report", "quiet", "dry_run"):
            continue
        values[field] = (True if isinstance(default, bool) else ("x1",) if isinstance(default, tuple)
                         else "5")
    opts = RunOptions(command=("make", "-j2"), **values)
    parsed = parse_run(["--quiet", "--report-fd=3"] + cli_args(opts))
    assert parsed is not None
    assert parsed == RunOptions(command=("make", "-j2"), quiet=True, report="/dev/fd/3", **values)


def test_option_values_like_options_are_refused_before_anything_runs():
    from sandbox import UsageError
    from sandbox.api import cli_args
    from sandbox.options import RunOptions

    with pytest.raises(UsageError) as caught:
        cli_args(RunOptions(command=("x",), profile="-p"))
    assert caught.value.code == "usage_invalid"


def test_the_documented_example_runs(senv):
    """docs/api.md's worked example, as it stands, as a plugin would run it."""
    text = (REPO / "docs" / "api.md").read_text()
    example = re.search(r"## A worked example.*?```python\n(.*?)```", text, re.S).group(1)
    ssh = senv.home / ".ssh"
    ssh.mkdir()
    (ssh / "id_ed25519").write_bytes(SECRET)  # so that "reads as empty" means something
    done = py(senv, example)
    assert done.returncode == 0, done.stderr.decode()
    assert "readonly none" in done.stdout.decode()


def test_schema_path_is_the_installed_copy_of_the_shipped_schema():
    from sandbox.api import schema_path

    for name in ("report", "explain"):
        installed = Path(schema_path(name))
        assert installed.read_text() == (REPO / "docs" / "schemas" / f"{name}.schema.json").read_text()


def test_an_interrupted_call_stops_the_run_gracefully(senv):
    """An exception in the waiting caller (here from a signal handler) sends SIGTERM
    through the sandbox to the command, whose handler runs; the exception propagates."""
    done = py(senv, """
import signal, time
from sandbox import run
def stop(signum, frame):
    raise RuntimeError("caller gave up")
signal.signal(signal.SIGALRM, stop)
signal.alarm(2)
started = time.monotonic()
try:
    run(["sh", "-c", "trap 'echo got-term > handled; exit 5' TERM; sleep 60 & wait"])
except RuntimeError:
    print("raised after", int(time.monotonic() - started))
""", timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    seconds = int(done.stdout.split()[-1])
    assert seconds < 15, done.stdout
    assert (senv.ws / "handled").read_text() == "got-term\n"
