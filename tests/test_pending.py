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
    other_spec = spec_for(state, ws)
    other = pending.create(other_spec)
    assert audit.Auditor(other_spec).run() == []
    theirs, mine, drained = pending.drain(str(state), [str(ws)], other, other_spec)
    assert not drained, "drained while another run was live"
    other.release()
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
    spec = spec_for(state, ws)
    mine = pending.create(spec)
    plant_hook(ws)
    assert audit.Auditor(spec).run()
    theirs, again, drained = pending.drain(str(state), [str(ws)], mine, spec)
    mine.release()
    assert drained and theirs == [] and again == [] and markers(state) == []
