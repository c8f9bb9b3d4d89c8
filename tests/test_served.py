"""Served runs (sandbox.served) give exactly what direct runs give.

Every test here runs through the real bwrap: the direct side is the
``sandbox-direct`` console script (never served), the served side the
installed client (the native one when installed, else the protocol's test
client, tests/served_support.py), against a real server started by a direct
run (the ``served`` fixture in conftest).
"""

from __future__ import annotations

import json
import re
import os
import signal
import sys
import subprocess
import time
from pathlib import Path

import pytest

from conftest import sandbox_exe


def direct_exe() -> str:
    return str(Path(sandbox_exe()).with_name("sandbox-direct"))


def invoke(served, prefix: list[str], args: list[str], env=None, **kw):
    return subprocess.run(served.senv.who.prefix() + prefix + list(args), cwd=served.senv.ws,
                          env=env or served.env, capture_output=True, timeout=120,
                          input=kw.pop("input", b""), **kw)


def clean_ws(ws: Path) -> None:
    import shutil

    for entry in ws.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def tree(ws: Path) -> dict[str, bytes | None]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(ws):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(ws))
            out[rel] = None if path.is_dir() else path.read_bytes()
    return out


VOLATILE = {"duration_ms", "plan_ms", "pid", "time", "started", "ended", "elapsed_ms"}


QUARANTINE_ID = re.compile(rb"\d{8}T\d{6}-[0-9a-f]{16}")
# a socket of a parallel test's server that went away while bwrap set up
# (sandbox.linux.drift): the host changed between the two runs, not the run
DRIFT_NOTE = re.compile(rb"sandbox: note: [^\n]* vanished while bwrap was setting up the "
                        rb"sandbox;[^\n]*\n")
# and bwrap's own line for that attempt, printed before the note
BWRAP_CANNOT = re.compile(rb"bwrap: Can't create file at [^\n]*\n")


def without_drift(stderr: bytes) -> bytes:
    return BWRAP_CANNOT.sub(b"", DRIFT_NOTE.sub(b"", stderr)) if DRIFT_NOTE.search(stderr) \
        else stderr


def stable(report):
    """A report without what differs between any two runs (timings, pids, quarantine IDs)."""
    if isinstance(report, str):
        return QUARANTINE_ID.sub(b"ID", report.encode()).decode()
    if isinstance(report, dict):
        return {k: stable(v) for k, v in report.items() if k not in VOLATILE}
    if isinstance(report, list):
        return [stable(v) for v in report
                if not (isinstance(v, str) and DRIFT_NOTE.fullmatch(v.encode() + b"\n"))]
    return report


CASES = {
    "success": ["true"],
    "status": ["sh", "-c", "exit 7"],
    "output_order": ["sh", "-c", "echo one; echo two >&2; echo three; echo four >&2; exit 3"],
    "secret": ["sh", "-c", "cat \"$HOME/.ssh/id_rsa\"; echo rc=$?"],
    "write_outside": ["sh", "-c", "echo x > \"$HOME/planted\"; echo rc=$?"],
    "audit": ["sh", "-c", "git init -q r && git -C r config core.fsmonitor ./evil.sh; echo rc=$?"],
    "env": ["sh", "-c", "echo token=${GITHUB_TOKEN-unset} plain=$PLAIN_VAR"],
    "stdin": ["sh", "-c", "cat; echo end"],
    "env_listing": ["env"],  # every variable the command gets, in order
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_served_run_equals_direct_run(served, case):
    senv = served.senv
    (senv.home / ".ssh").mkdir(exist_ok=True)
    (senv.home / ".ssh" / "id_rsa").write_text("PRIVATE KEY\n")
    env = dict(served.env, GITHUB_TOKEN="ghp_secretvalue123", PLAIN_VAR="plain")
    results = []
    # first a direct run that (re)makes the plan: the two compared runs then
    # both find it cached, as any two runs in a row do
    for prefix in ([direct_exe()], [direct_exe()], served.client()):
        clean_ws(senv.ws)
        (senv.home / "planted").unlink(missing_ok=True)
        report = senv.base / "report.json"
        before = served.count()
        done = invoke(served, prefix, ["run", "--report", str(report), "--", *CASES[case]],
                      env=env, input=b"from stdin\n")
        results.append((done.returncode, done.stdout,
                        QUARANTINE_ID.sub(b"ID", without_drift(done.stderr)),
                        tree(senv.ws),
                        (senv.home / "planted").exists(),
                        stable(json.loads(report.read_text())), served.count() - before))
    direct, via_server = results[1:]
    assert direct[-1] == 0 and via_server[-1] == 1, "the served run was not served"
    for key in direct[5]:
        assert direct[5][key] == via_server[5][key], key
    assert direct[:-1] == via_server[:-1]
    if case == "secret":
        assert b"PRIVATE KEY" not in direct[1]
    if case == "audit":
        assert b"sandbox: audit:" in direct[2]


def test_served_run_uses_the_direct_runs_cached_plan(served):
    """Same plan key: a served run after a direct one makes no plan of its own."""
    plans = Path(os.path.realpath(served.senv.home / ".cache")) / "sandbox" / "plans"
    args = ["run", "--report", str(served.senv.base / "r.json"), "--", "true"]
    first = invoke(served, [direct_exe()], args)
    assert first.returncode == 0, first.stderr
    made = sorted(os.listdir(plans))
    before = served.count()
    assert invoke(served, served.client(), args).returncode == 0
    assert served.count() == before + 1
    assert sorted(os.listdir(plans)) == made
    assert json.loads((served.senv.base / "r.json").read_text())["plan_cached"] is True


def test_umask_is_the_clients(served):
    """The served child adopts the client's umask (a file made inside shows it)."""
    for mask in ("077", "002"):
        done = invoke(served, ["sh", "-c", f"umask {mask}; exec \"$@\"", "sh", *served.client()],
                      ["run", "--", "sh", "-c", "umask; touch f; stat -c %a f; rm f"])
        assert done.returncode == 0, done.stderr
        want = {"077": "600", "002": "664"}[mask]
        assert done.stdout.decode().split() == [f"0{mask}", want]


def test_differing_rlimit_is_not_served(served):
    """A client whose limits differ from the server's gets "F" (a direct run
    would inherit its limits; the server's child cannot): nothing runs."""
    before = served.count()
    marker = served.senv.ws / "ran"
    done = invoke(served, ["prlimit", "--nofile=512:512", "--"] + served.client(),
                  ["run", "--", "touch", str(marker)])
    if served.client()[0] == sandbox_exe():  # the native client then runs it directly
        assert done.returncode == 0 and marker.exists()
    else:
        assert done.returncode == 99 and not marker.exists()
    assert served.count() == before
    # the same client without the different limit is served
    assert invoke(served, served.client(), ["run", "--", "true"]).returncode == 0
    assert served.count() == before + 1


def test_differing_nice_is_not_served(served):
    before = served.count()
    done = invoke(served, ["nice", "-n", "3"] + served.client(), ["run", "--", "true"])
    assert done.returncode in (0, 99)
    assert served.count() == before


def test_differing_locale_is_not_served(served):
    """LANG is read by the interpreter at start: a client with another one is
    run directly, never by a server that decoded its start with the old one."""
    before = served.count()
    env = dict(served.env, LANG="C")
    done = invoke(served, served.client(), ["run", "--", "true"], env=env)
    assert done.returncode in (0, 99)
    assert served.count() == before


@pytest.mark.parametrize("name, value", [("LD_PRELOAD", ""), ("MALLOC_ARENA_MAX", "2"),
                                         ("GLIBC_TUNABLES", "glibc.malloc.check=0")])
def test_differing_loader_or_libc_start_variables_are_not_served(served, name, value):
    """A preloaded library, the C library's tunables and malloc's settings
    are read once, when a process starts: a direct run's wrapper would start
    with the client's; a served child has the server's.  So a client whose
    differ is run directly (LD_PRELOAD empty: set, harmless, and different
    from unset).  The same client without it is served (the test can fail)."""
    before = served.count()
    done = invoke(served, served.client(), ["run", "--", "true"], env=dict(served.env, **{name: value}))
    assert done.returncode == 0, done.stderr
    assert served.count() == before
    done = invoke(served, served.client(), ["run", "--", "true"])
    assert done.returncode == 0, done.stderr
    assert served.count() == before + 1


def _wait_for(path: Path, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), f"{path} did not appear"


def _sandbox_pids(marker: str) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as fh:
                    if marker.encode() in fh.read():
                        pids.append(int(name))
            except OSError:
                pass
    return pids


def test_sigkill_of_the_client_kills_the_sandboxed_command(served):
    marker = f"sleeper-{os.getpid()}-{time.monotonic_ns()}"
    started = served.senv.ws / "started"
    before = served.count()
    served.senv.finish()
    client = subprocess.Popen(served.senv.who.prefix() + served.client() + [
        "run", "--", "sh", "-c", f"touch started; sleep 300; : {marker}"],
        cwd=served.senv.ws, env=served.env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(started)
        # the sandboxed shell (its -c script names the marker), not the client
        assert set(_sandbox_pids(marker)) - {client.pid}, "the sandboxed command does not run"
        client.kill()
        client.wait(10)
        deadline = time.monotonic() + 2
        while _sandbox_pids(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _sandbox_pids(marker), "the sandboxed command outlived its client"
        assert served.count() == before + 1  # it was a served run
    finally:
        client.kill()
        client.wait(10)
        for pid in _sandbox_pids(marker):
            os.kill(pid, signal.SIGKILL)


def test_sigterm_to_the_client_reaches_the_command(served):
    started = served.senv.ws / "started"
    served.senv.finish()
    client = subprocess.Popen(served.senv.who.prefix() + served.client() + [
        "run", "--", "sh", "-c",
        "trap 'echo got-term; exit 42' TERM; touch started; while :; do sleep 0.1; done"],
        cwd=served.senv.ws, env=served.env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(started)
        time.sleep(0.2)  # the trap is set before the file is made
        client.send_signal(signal.SIGTERM)
        out, err = client.communicate(timeout=20)
    finally:
        client.kill()
    assert b"got-term" in out, err
    assert client.returncode == 42


@pytest.mark.parametrize("report", [["--report-fd", "3"], ["--report-fd=3"],
                                    ["--report", "/dev/fd/5"], ["--report", "/proc/self/fd/4"]])
def test_a_report_to_an_inherited_descriptor_is_not_served(served, report):
    """The client's descriptors other than 0-2 are not the served child's:
    such a run gets "F" (sent by hand: the native client never sends it)."""
    import shutil as _shutil

    support = served.senv.base / "ss.py"
    _shutil.copy(Path(__file__).with_name("served_support.py"), support)
    before = served.count()
    marker = served.senv.ws / "ran"
    done = invoke(served, [sys.executable, str(support), str(served.sock)],
                  ["run", *report, "--", "touch", str(marker)])
    assert done.returncode == 99 and b"fallback" in done.stderr
    assert not marker.exists() and served.count() == before
    # /dev/stdout is the client's own fd 1, adopted: served
    done = invoke(served, [sys.executable, str(support), str(served.sock)],
                  ["run", "--report", "/dev/stdout", "--", "true"])
    assert done.returncode == 0 and b'"exit_status": 0' in done.stdout
    assert served.count() == before + 1


def test_sandbox_sh_is_served_like_direct(served):
    args = ["sh", "echo out; echo err >&2; exit 4"]
    direct = invoke(served, [direct_exe()], args)
    before = served.count()
    via_server = invoke(served, served.client(), args)
    assert served.count() == before + 1
    assert (direct.returncode, direct.stdout, without_drift(direct.stderr)) == (
        via_server.returncode, via_server.stdout, without_drift(via_server.stderr)) == (
        4, b"out\n", b"err\n")
