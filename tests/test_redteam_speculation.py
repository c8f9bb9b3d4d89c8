"""Red-team regression tests for the speculative start (sandbox.plancache
``Speculation``, sandbox.runner ``_filter_gate``/``_open_gate``) and the
native launcher (native/launch.c, sandbox.runner ``_launch``).

Each test runs the real bwrap through the installed CLI and shows the
difference it guards against: the reference path (``SANDBOX_LAUNCH=fork``,
the Python ``_child``), a bare run, or what the vulnerable code did.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest


from conftest import sandbox_exe


def _launch_env(senv, mode: str, **extra: str) -> dict[str, str]:
    return senv.environ(SANDBOX_LAUNCH=mode, **extra)


def test_the_launcher_maps_the_callers_ids_in_the_namespace_it_makes(senv, who):
    """native/launch.c wrote ``getuid()`` into uid_map *after*
    ``unshare(CLONE_NEWUSER)``, where it is already the overflow id 65534:
    the kernel refused the map (EPERM), so for every caller but root the
    direct bridge failed.  With SANDBOX_NET_BRIDGE=direct the run was
    refused; in auto mode every run of an unprivileged user fell back to a
    bwrap-made namespace of its own (sessions and [[network.forward]]
    grants of other runs unreachable, a note on every run).  The Python
    reference (``_child``) maps the caller's own ids."""
    script = "cat /proc/self/uid_map; echo ran"
    reference = senv.run(["sh", "-c", script],
                         env=_launch_env(senv, "fork", SANDBOX_NET_BRIDGE="direct"))
    assert reference.returncode == 0 and b"ran" in reference.stdout, reference
    native = senv.run(["sh", "-c", script],
                      env=_launch_env(senv, "native", SANDBOX_NET_BRIDGE="direct"))
    assert native.returncode == 0, native
    assert native.stdout == reference.stdout, (native, reference)
    # auto mode: the launcher's own namespace, not the bwrap fallback's
    auto = senv.run(["sh", "-c", script], env=_launch_env(senv, "native"))
    assert auto.returncode == 0 and b"ran" in auto.stdout, auto
    assert b"host refused the direct bridge" not in auto.stderr, auto


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return [int(k) for k in fh.read().split()]


def _descendant_started(pid: int, depth: int = 1, timeout: float = 30.0) -> str:
    """Wait until a process ``depth`` generations below ``pid`` is the
    launcher or bwrap; its argv[0].  (A posix_spawn child shows the
    parent's argv until its exec.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            level = [pid]
            for _ in range(depth):
                level = [kid for parent in level for kid in _children(parent)]
            for kid in level:
                with open(f"/proc/{kid}/cmdline", "rb") as fh:
                    program = fh.read().split(b"\0")[0].decode()
                if program.endswith(("/launch", "/bwrap")):
                    return program
        except OSError:
            pass
        time.sleep(0.0002)
    raise AssertionError("bwrap was never started")


def _stale_slow_plan(senv, env: dict, dirs: int = 30000) -> socket.socket:
    """A cached plan whose check is slow (``dirs`` directories listed again)
    and stale (a host socket bound since it was made, which the check finds
    last): the socket, to close when done."""
    for i in range(dirs):
        (senv.ws / f"d{i}").mkdir()
    first = senv.run(["true"], env=env, timeout=300)  # the plan, cached
    assert first.returncode == 0, first
    for i in range(dirs):  # every directory's stamp changes, not what it holds
        probe = senv.ws / f"d{i}" / "t"
        probe.touch()
        probe.unlink()
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(senv.home / "agent.sock"))  # bound since: the plan's argv is stale
    server.listen()
    return server


def _sigterm_once_bwrap_runs(senv, prefix: list[str], env: dict, above, depth: int):
    """Start ``prefix run -- sh -c 'touch ran'``, send it SIGTERM once the
    launcher or bwrap is ``depth`` below ``above(proc)``; (proc, that
    program, its stderr)."""
    proc = subprocess.Popen(senv.who.prefix() + prefix + ["run", "--", "sh", "-c", "touch ran"],
                            cwd=senv.ws, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        started = _descendant_started(above(proc), depth)
        proc.send_signal(15)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc, started, err


def test_a_sigterm_while_a_stale_plan_is_checked_is_not_lost(senv, who):
    """The wrapper's handlers only queue SIGTERM/SIGINT/SIGHUP/SIGQUIT while
    bwrap sets up, for the command once it runs.  With the speculative start
    the plan's check runs in that window; when it failed, the queue was
    dropped with the stale attempt and the run started over from a fresh
    plan: a SIGTERM sent to cancel the run (an agent's timeout) was lost
    and the command ran to the end, exit 0.  Checked first (as before the
    speculation, or when the filter does not fit a pipe), the same SIGTERM
    ends the wrapper before anything starts.  The check is made slow and
    stale (``_stale_slow_plan``) so that the signal lands inside it."""
    direct = str(Path(sandbox_exe()).with_name("sandbox-direct"))
    env = senv.environ()
    server = _stale_slow_plan(senv, env)
    marker = senv.ws / "ran"
    try:
        senv.finish()
        # the plan is being checked once bwrap appears: the command has not started
        proc, started, err = _sigterm_once_bwrap_runs(senv, [direct], env, lambda p: p.pid, 1)
        assert started.endswith(("launch", "bwrap")), started
        assert not marker.exists(), (proc.returncode, err)
        assert proc.returncode == -15, (proc.returncode, err)
    finally:
        server.close()
    # and the cancelled run left the next one in order
    again = senv.run(["sh", "-c", "touch ran"], env=env, timeout=300)
    assert again.returncode == 0 and marker.exists(), again


def test_a_sigterm_to_the_served_client_while_a_stale_plan_is_checked_is_not_lost(served):
    """The same through the native client: it passes SIGTERM on to the
    served run, whose handler queued it; the stale attempt dropped it and
    the command ran, and the client exited 0."""
    if served.client() != [sandbox_exe()]:
        pytest.skip("needs the native client")
    senv = served.senv
    server = _stale_slow_plan(senv, served.env)
    marker = senv.ws / "ran"
    try:
        senv.finish()
        # bwrap is two below the server: the server, its child, bwrap
        proc, started, err = _sigterm_once_bwrap_runs(senv, [sandbox_exe()], served.env,
                                                      lambda p: served.pid, 2)
        assert started.endswith(("launch", "bwrap")), started
        assert not marker.exists(), (proc.returncode, err)
        assert proc.returncode in (-15, 128 + 15), (proc.returncode, err)
    finally:
        server.close()
