"""A cached plan checked while bwrap already builds the sandbox (``plancache.Speculation``).

What makes it safe is that the command cannot start before the check has
passed: bwrap reads its seccomp filter from a pipe after every mount and
before the command, and the runner writes the filter only then
(``runner._filter_gate``).  These tests hold that with the real bwrap: a
command started from a plan that turned stale never runs (it runs once,
from the fresh plan), a wrapper that dies during the check leaves a sandbox
that never runs anything, and an empty filter is refused.  Each shows the
same thing happening without the gate first.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BWRAP, sandbox_exe
from sandbox import plancache, runner

# one classic BPF instruction: return SECCOMP_RET_ALLOW
ALLOW_ALL = struct.pack("HBBI", 0x06, 0, 0, 0x7FFF0000)


def _bwrap_argv(where: Path, command: list[str]) -> tuple[list[str], int, int]:
    argv = [BWRAP, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/",
            "--dev", "/dev", "--proc", "/proc", "--bind", str(where), str(where),
            "--seccomp", "-1", "--json-status-fd", "-1", "--", *command]
    return argv, argv.index("--json-status-fd") + 1, argv.index("--seccomp") + 1


@pytest.fixture
def gate_dir(tmp_path):
    (tmp_path / "filter.bpf").write_bytes(ALLOW_ALL)
    return tmp_path


def _run(where: Path, verify, command=None):
    argv, status, seccomp = _bwrap_argv(where, command or ["touch", str(where / "ran")])
    return runner.run(argv, {"PATH": "/usr/bin:/bin"}, status, False,
                      seccomp=(seccomp, str(where / "filter.bpf")), verify=verify)


def test_the_command_starts_once_the_check_passes(gate_dir):
    calls = []
    outcome = _run(gate_dir, lambda: calls.append(time.monotonic()))
    assert calls and outcome.started and outcome.exit_status == 0
    assert (gate_dir / "ran").exists()


def test_a_stale_plan_never_starts_the_command(gate_dir):
    """The check fails while bwrap waits for its filter: bwrap is killed and
    reaped, PlanStale comes back, and nothing ran."""
    def stale():
        time.sleep(0.2)  # bwrap has made every mount by now and waits
        raise plancache.PlanStale()

    with pytest.raises(plancache.PlanStale):
        _run(gate_dir, stale)
    time.sleep(0.3)
    assert not (gate_dir / "ran").exists()


WRAPPER = """\
import os, signal, sys, time
sys.path[:0] = [{path!r}]
from test_speculation import _run
from pathlib import Path
where = Path(sys.argv[1])
def die():
    time.sleep(0.2)  # the sandbox is built and waits
    open(where / "bwrap-waited", "w").close()
    os.kill(os.getpid(), signal.SIGKILL)
if sys.argv[2] == "gate":
    _run(where, die)
else:  # the filter as a file, the way a plan checked first is run: nothing holds it back
    from sandbox import runner
    def killed(*a, **k):
        die()
    runner._supervise = killed
    _run(where, None)
"""


@pytest.mark.parametrize("mode", ["gate", "no-gate"])
def test_a_wrapper_killed_during_the_check_starts_nothing(gate_dir, mode):
    """SIGKILL of the wrapper while bwrap waits for the filter: end-of-file on
    an empty pipe, and bwrap refuses to go on.  Without the gate the same
    kill comes too late: the command runs (--die-with-parent then ends it)."""
    script = gate_dir / "wrapper.py"
    script.write_text(WRAPPER.format(path=str(Path(__file__).parent)))
    done = subprocess.run([sys.executable, str(script), str(gate_dir), mode],
                          capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    end = time.monotonic() + 3
    while time.monotonic() < end and not (gate_dir / "ran").exists():
        time.sleep(0.05)
    assert (gate_dir / "bwrap-waited").exists()
    assert (gate_dir / "ran").exists() == (mode == "no-gate")


def test_bwrap_refuses_an_empty_filter(tmp_path):
    """The fail-closed end of the gate, from bwrap itself: a filter pipe that
    ends with nothing in it stops the sandbox before the command."""
    argv, status, seccomp = _bwrap_argv(tmp_path, ["touch", str(tmp_path / "ran")])
    read_end, write_end = os.pipe()
    os.close(write_end)
    argv[seccomp], argv[status] = str(read_end), "2"
    try:
        done = subprocess.run(argv, pass_fds=(read_end,), capture_output=True, timeout=30)
    finally:
        os.close(read_end)
    assert done.returncode != 0
    assert not (tmp_path / "ran").exists()
    # and the same argv with the filter in the pipe runs it
    read_end, write_end = os.pipe()
    os.write(write_end, ALLOW_ALL)
    os.close(write_end)
    argv[seccomp] = str(read_end)
    try:
        done = subprocess.run(argv, pass_fds=(read_end,), capture_output=True, timeout=30)
    finally:
        os.close(read_end)
    assert done.returncode == 0 and (tmp_path / "ran").exists(), done.stderr


def test_a_filter_the_pipe_cannot_hold_is_checked_first(gate_dir, monkeypatch):
    """No room for the whole filter in one write (the user's pipe-buffer
    limit): the check runs before bwrap starts, and the filter is the file."""
    import fcntl

    real = fcntl.fcntl

    def no_room(fd, cmd, *arg):
        if cmd == runner._F_SETPIPE_SZ:
            raise PermissionError(1, "over the user's pipe-buffer limit")
        if cmd == runner._F_GETPIPE_SZ:
            return 4096
        return real(fd, cmd, *arg)

    monkeypatch.setattr(fcntl, "fcntl", no_room)
    (gate_dir / "filter.bpf").write_bytes(ALLOW_ALL * 1024)  # 8 KiB
    spawned = []
    real_spawn = runner._spawn_bridged
    monkeypatch.setattr(runner, "_spawn_bridged",
                        lambda *a, **k: spawned.append(1) or real_spawn(*a, **k))
    order = []
    outcome = _run(gate_dir, lambda: order.append(len(spawned)))
    assert order == [0] and outcome.exit_status == 0  # checked before the spawn


# -- through the CLI ------------------------------------------------------------------

def _cached(senv, run):
    """Runs ``true`` until the plan is cached (what changed in the last 2 s is not trusted)."""
    for _ in range(4):
        time.sleep(2.1)
        first = run(["true"])
        assert first.returncode == 0, first.stderr
        if json.loads((senv.base / "report.json").read_text())["plan_cached"]:
            return
    pytest.fail("the plan was never cached")


def test_a_secret_made_after_the_plan_is_hidden_and_the_command_runs_once(senv, who):
    """The cached plan knows no .env; bwrap starts from it; the check finds
    the new secret; that sandbox never runs the command, the fresh plan's
    does, once, with the secret masked and the plan's lines said once."""
    extra = senv.base / "extra"
    extra.mkdir()
    report = senv.base / "report.json"

    def run(command):  # senv.run would chown the tree again, and so make every stamp new
        return subprocess.run(who.prefix() + [sandbox_exe(), "run", "--report", str(report),
                                              "--allow-write", str(extra), "--", *command],
                              cwd=senv.ws, env=senv.environ(), capture_output=True, timeout=120)

    senv.finish()
    _cached(senv, run)
    secret = senv.ws / ".env"
    secret.write_text("API_KEY=hunter2-speculation\n")
    who.chown(secret)
    outside = senv.run(["cat", ".env"], sandboxed=False)
    assert b"hunter2-speculation" in outside.stdout  # readable without the sandbox
    inside = run(["sh", "-c", "echo once >> ran.log; cat .env; echo rc=$?"])
    assert b"hunter2-speculation" not in inside.stdout + inside.stderr
    assert (senv.ws / "ran.log").read_text() == "once\n"
    assert inside.stderr.count(b"sandbox: weakened:") == 1, inside.stderr
    doc = json.loads(report.read_text())
    assert doc["exit_status"] == 0 and not doc["plan_cached"]
    # and the plan made then is cached and used again, speculatively
    again = run(["sh", "-c", "echo twice >> ran.log; cat .env >/dev/null; echo rc=$?"])
    assert again.stderr.count(b"sandbox: weakened:") == 1
    assert (senv.ws / "ran.log").read_text() == "once\ntwice\n"


def test_no_pending_marker_means_no_run_from_a_speculated_plan(senv, who):
    """The pending audit's marker is made while bwrap builds the sandbox; if it
    cannot be made, the command never starts (the sandbox is killed, the
    run refused in words), as when it is made first."""
    report = senv.base / "report.json"

    def run(command):
        return subprocess.run(who.prefix() + [sandbox_exe(), "run", "--report", str(report),
                                              "--", *command],
                              cwd=senv.ws, env=senv.environ(), capture_output=True, timeout=120)

    subprocess.run(["git", "init", "-q", str(senv.ws)], check=True)
    senv.finish()
    _cached(senv, run)
    markers = senv.home / ".cache" / "sandbox" / "pending-audit"
    assert markers.is_dir()
    markers.rmdir()
    markers.write_text("")  # a file where the markers' directory was
    who.chown(markers)
    done = run(["touch", "ran"])
    doc = json.loads(report.read_text())
    assert done.returncode == 125, done.stderr
    assert doc["plan_cached"] and doc["error"]["code"] == "state_dir_invalid"
    assert b"cannot record the pending audit" in done.stderr
    assert not (senv.ws / "ran").exists()


def test_a_run_started_again_in_its_session_has_a_resolver_that_answers(senv, who):
    """A plan made stale by a host socket bound since it was cached (the fresh
    plan masks it) is started again from the checked plan, in the same
    session's namespace.  The first attempt's resolver socket was bound at
    the run's address there (SO_REUSEPORT): left open, it took some of the
    next attempt's queries and answered none (EAI_AGAIN after the C
    library's retries).  It must be closed before the run starts again."""
    import socket

    from test_netsession import LOOKUP, PY, Server, _free_port

    report = senv.base / "report.json"
    (senv.ws / "lookup.py").write_text(LOOKUP)
    server = Server(senv, senv.ws, _free_port(), "A")  # holds the session's namespace
    late = None
    try:
        def run(command):  # not senv.run: it would chown the tree, every stamp new
            return subprocess.run(who.prefix() + [sandbox_exe(), "run", "--report", str(report),
                                                  "--", *command],
                                  cwd=senv.ws, env=senv.environ(), capture_output=True,
                                  timeout=120)

        _cached(senv, run)
        svc = senv.base / "opt"
        svc.mkdir()
        late = socket.socket(socket.AF_UNIX)
        late.bind(str(svc / "late.sock"))  # bound since: the checked plan masks it
        late.listen()
        if who.uid != os.getuid():
            os.chown(svc / "late.sock", who.uid, who.gid)
        results = [run([PY, "lookup.py"]) for _ in range(3)]
        doc = json.loads(report.read_text())
    finally:
        if late is not None:
            late.close()
        server.stop()
    for done in results:
        assert done.stdout.decode().split() == ["gaierror", str(socket.EAI_NONAME)], done
    assert doc["session"]["namespace"] == "joined" and doc["plan_cached"]
