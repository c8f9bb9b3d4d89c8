"""Two runs at once in one workspace: the second one says so (and does not wait)."""

from __future__ import annotations

import subprocess
import time

from conftest import sandbox_exe

WARNING = "another sandbox run is active in this workspace"


def start_long_run(senv, script: str, seconds: int = 3) -> subprocess.Popen:
    """A run that creates 'started' and then sleeps; returns once it has started."""
    senv.finish()
    proc = subprocess.Popen(senv.who.prefix() + [sandbox_exe(), "run", "--", "sh", "-c",
                                                 f"{script}; touch started; sleep {seconds}"],
                            cwd=senv.ws, env=senv.environ(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not (senv.ws / "started").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first run did not start"
        time.sleep(0.05)
    return proc


def test_second_run_warns_and_runs(senv):
    assert WARNING not in senv.sh("true").stderr.decode()
    first = start_long_run(senv, "true")
    try:
        started = time.monotonic()
        second = senv.sh("echo second")
        assert time.monotonic() - started < 2.5, "the second run waited for the first"
        assert second.returncode == 0, second.stderr
        assert second.stdout == b"second\n"
        assert f"sandbox: warning: {WARNING}" in second.stderr.decode()
    finally:
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert WARNING not in err.decode()
    assert WARNING not in senv.sh("true").stderr.decode()  # the lock went with the run


def test_the_warning_is_said_once_per_overlap(senv):
    """Next to a background server (docs/sessions.md) every command overlaps
    it: the first run to meet it warns, the next ones do not, and once the
    workspace was free again a new overlap warns again."""
    for _ in range(2):
        first = start_long_run(senv, "true", seconds=30)
        try:
            said = [WARNING in senv.sh("true").stderr.decode() for _ in range(3)]
            assert first.poll() is None, "the first run ended too early for this test"
        finally:
            first.terminate()  # by its PID: the wrapper forwards it and ends the run
            first.communicate(timeout=60)
        assert said == [True, False, False]
        assert WARNING not in senv.sh("true").stderr.decode()  # alone: clears the mark
        (senv.ws / "started").unlink()


def test_a_running_run_is_not_audited_as_left_over(senv):
    """The pending audit of a run that is still going is its own business: the
    next run audited it as 'left by an interrupted run' while it still ran."""
    first = start_long_run(senv, "echo 'echo hi' > .envrc")
    try:
        second = senv.sh("true")
        assert "left by an interrupted run" not in second.stderr.decode()
    finally:
        out, err = first.communicate(timeout=60)
    assert "audit" in err.decode() and ".envrc" in err.decode()  # its own audit did it


def test_cache_clean_leaves_a_running_workspace_alone(senv):
    first = start_long_run(senv, 'echo x > "$PIP_CACHE_DIR/kept"')
    try:
        senv.finish()
        r = subprocess.run(senv.who.prefix() + [sandbox_exe(), "cache", "clean"], cwd=senv.ws,
                           env=senv.environ(), capture_output=True, text=True, timeout=60)
        assert r.returncode == 125
        assert "a running sandbox uses it" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    finally:
        first.communicate(timeout=60)
    check = senv.sh('cat "$PIP_CACHE_DIR/kept"')
    assert check.stdout == b"x\n"
