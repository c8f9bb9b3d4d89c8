"""sandbox.pending: one locked marker per run; left-over ones are audited by the next run.

These drive the real audit (sandbox.audit) on a directory tree, without a
sandbox: a marker stands for a run, its lock for the run being alive.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sandbox import audit, gitsnapshot, pending


def spec_for(state: Path, ws: Path) -> dict:
    spec = {"state": str(state), "workspace": str(ws), "roots": [str(ws)], "git_roots": [],
            "cache_dir": None, "known_protected": [], "unprotected": [], "git_dirs": [],
            "hooks_dirs": [], "hooks_relative": [], "hook_managers": [], "git_configs": [],
            "names": [".envrc"], "skip_dirs": ["node_modules"], "secret_names": [],
            "secret_exceptions": [], "classes": list(audit.CLASSES)}
    spec["snapshot"] = gitsnapshot.take(spec)
    return spec


def plant_hook(ws: Path) -> Path:
    gd = ws / "evil"
    (gd / "objects").mkdir(parents=True)
    (gd / "refs").mkdir()
    (gd / "HEAD").write_text("ref: refs/heads/main\n")
    (gd / "hooks").mkdir()
    hook = gd / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho pwned\n")
    hook.chmod(0o755)
    return hook


def markers(state: Path) -> list[str]:
    return sorted(n for n in os.listdir(state / pending.DIR) if not n.startswith("."))


def test_a_marker_is_locked_while_its_run_lives(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    m = pending.create(spec_for(tmp_path / "state", ws))
    fd = os.open(m.path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            raise AssertionError("a live run's marker could be locked by another")
        except BlockingIOError:
            pass
        m.release()  # as a SIGKILL would
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_markers_are_one_per_run(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    state = tmp_path / "state"
    a, b = pending.create(spec_for(state, ws)), pending.create(spec_for(state, ws))
    assert a.path != b.path and len(markers(state)) == 2
    a.release()
    b.release()


def test_a_killed_runs_marker_is_audited_even_after_an_overlapping_run(tmp_path):
    """The red team's sequence: a run is live, a second one starts and ends,
    the first plants and is killed; the next run must still audit its plant."""
    ws = tmp_path / "ws"
    ws.mkdir()
    state = tmp_path / "state"
    victim = pending.create(spec_for(state, ws))
    other = pending.create(spec_for(state, ws))
    audited = pending.now()
    assert audit.Auditor(other.spec).run() == []
    theirs, mine, drained = pending.drain(str(state), [str(ws)], other, audited)
    assert not drained, "drained while another run was live"
    other.finish()
    hook = plant_hook(ws)
    victim.release()  # SIGKILL: no audit of its own
    theirs, _mine, drained = pending.drain(str(state), [str(ws / "sub")])  # the next run
    assert drained and not hook.exists()
    assert any("pre-commit" in f.path for f in theirs)
    assert markers(state) == []


def test_a_live_run_elsewhere_does_not_hold_back_a_drain(tmp_path):
    state = tmp_path / "state"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    live = pending.create(spec_for(state, tmp_path / "b"))
    left = pending.create(spec_for(state, tmp_path / "a"))
    hook = plant_hook(tmp_path / "a")
    left.release()
    _theirs, _mine, drained = pending.drain(str(state), [str(tmp_path / "a")])
    assert drained and not hook.exists()
    assert markers(state) == [os.path.basename(live.path)]
    live.release()


def test_a_run_that_audited_alone_removes_only_its_own_marker(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    state = tmp_path / "state"
    mine = pending.create(spec_for(state, ws))
    plant_hook(ws)
    audited = pending.now()
    assert audit.Auditor(mine.spec).run()
    theirs, again, drained = pending.drain(str(state), [str(ws)], mine, audited)
    mine.release()
    assert drained and theirs == [] and again == [] and markers(state) == []


def test_runs_that_came_and_went_during_a_long_run_are_not_audited_again(tmp_path):
    """A dev server's run ends with one audit, not one per run that finished
    while it ran: its own audit covered them (they started after its snapshot
    and ended before its audit began)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    state = tmp_path / "state"
    server = pending.create(spec_for(state, ws))
    for _ in range(3):
        short = pending.create(spec_for(state, ws))
        short.finish()  # ended while the server was live: kept for it
    hook = plant_hook(ws)  # made by one of them, say
    audited = pending.now()
    assert audit.Auditor(server.spec).run(), "the server's own audit sees the plant"
    assert not hook.exists()
    theirs, again, drained = pending.drain(str(state), [str(ws)], server, audited)
    server.release()
    assert drained and theirs == [] and again == [] and markers(state) == []


def test_a_run_that_may_have_raced_the_audit_makes_every_marker_audited_again(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    state = tmp_path / "state"
    first = pending.create(spec_for(state, ws))
    audited = pending.now()
    assert audit.Auditor(first.spec).run() == []
    racer = pending.create(spec_for(state, ws))  # its command ran during our audit...
    hook = plant_hook(ws)  # ...and moved a plant past it
    racer.finish()
    theirs, again, drained = pending.drain(str(state), [str(ws)], first, audited)
    first.release()
    assert drained and not hook.exists()
    assert any("pre-commit" in f.path for f in theirs + again)
    assert markers(state) == []


def test_a_drain_that_finds_nothing_does_not_load_the_audit(tmp_path):
    # every run drains before it starts; the directory of markers exists once
    # any run has been here, and is usually empty: that must stay cheap
    import subprocess
    import sys

    state, ws = tmp_path / "state", tmp_path / "ws"
    (state / pending.DIR).mkdir(parents=True)
    ws.mkdir()
    code = ("import sys\nfrom sandbox import pending\n"
            f"print(pending.drain({str(state)!r}, [{str(ws)!r}]))\n"
            "print('sandbox.audit' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path).stdout.split("\n")
    assert out[:2] == ["([], [], True)", "False"]
