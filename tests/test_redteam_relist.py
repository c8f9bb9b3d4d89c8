"""Red-team checks of the incremental plan cache (sandbox.relist).

1. The racy window is measured from when a directory was *listed*, not from
   when the refresh finished.  ``relist.refresh`` used to take "now" after
   it had listed the changed directories and walked any new subtree; a
   directory listed within one clock tick of its last change was then
   stored as trusted once that walk took longer than RACY_NS, and a second
   change in the same tick (same mtime and ctime) would never be seen: a
   host ``.env`` written then stays unmasked for every later run.  On a
   kernel with multigrain timestamps (6.13+, this machine) the second
   change gets a new ctime once the first was stat'ed, so the same-tick
   write cannot be reproduced here; the test checks the rule itself: a
   directory changed just before the refresh is stored as never matching,
   however long the refresh takes.

2. A differential run of edit kinds tests/test_relist.py does not make
   (hard links to a secret, RENAME_EXCHANGE of two directories, a secret
   below a new deep tree, a secret written and the directory's mtime put
   back, a directory moved into or renamed over another, a secret inside a
   new node_modules, a new .vscode, a file replaced by a directory holding a
   secret, a planted .git file): a kept plan must equal a fresh build.
"""

from __future__ import annotations

import ctypes
import os
import random
import shutil
import subprocess
import time
import uuid

import pytest

import test_relist as T
from conftest import _test_root
from sandbox import dirstamps, relist, scan

TRUST_BACKDATED_STAMPS = True  # see conftest._trust_backdated_stamps

RULES = scan.Rules(protected_names=(".vscode",), skip_dirs=("node_modules",),
                   secret_names=(".env", ".env.*"), find_git=True, secrets_everywhere=True)


def _blob(root: str, now: int) -> bytes:
    result = scan.walk(root, RULES, None)
    blob, _ = dirstamps.pack(result.dirs, result.stamps, result.found,
                             (root, RULES._values()), now)
    return blob


def _stamp_of(blob: bytes, path: str) -> tuple[int, int]:
    paths, flat, _digests, _spec = dirstamps.unpack(blob)
    i = paths.index(path)
    return flat[3 * i + 1], flat[3 * i + 2]


def test_slow_refresh_keeps_racy_stamp_of_a_directory_listed_just_after_its_change(monkeypatch):
    base = _test_root() / f"redrelist-{uuid.uuid4().hex[:8]}"
    ws = base / "ws"
    (ws / "d").mkdir(parents=True)
    try:
        root, d = str(ws), str(ws / "d")
        # a plan whose stamps are all trusted (made "long ago")
        blob = _blob(root, time.time_ns() + 10 * dirstamps.RACY_NS)
        assert dirstamps.valid(blob)
        # d changes (a new subdirectory: the refresh walks it) just before the run
        (ws / "d" / "new").mkdir()
        changed = os.lstat(d)
        real_walk = scan.walk

        def slow_walk(*args, **kwargs):
            # a large new subtree: its walk outlasts the racy window
            time.sleep(dirstamps.RACY_NS / 1e9 + 0.2)
            return real_walk(*args, **kwargs)

        monkeypatch.setattr(scan, "walk", slow_walk)
        out = relist.refresh(blob)
        monkeypatch.setattr(scan, "walk", real_walk)
        assert out is not None and out != blob, "the plan was not kept: nothing to check"
        # d was listed well within the racy window of its change; stored as
        # (mtime, ctime) it would be trusted by the next run even if a second
        # change landed in the same clock tick
        assert time.time_ns() - changed.st_ctime_ns > dirstamps.RACY_NS
        assert _stamp_of(out, d) == (-1, -1), (
            "a directory listed right after its change was stored as trusted "
            f"(ctime {changed.st_ctime_ns}), because the racy window was measured "
            "from the end of the refresh")
        # and the next run lists it again (and keeps the plan: nothing changed)
        again = relist.refresh(out)
        assert again is not None and _stamp_of(again, d) == (changed.st_mtime_ns,
                                                             changed.st_ctime_ns)
    finally:
        shutil.rmtree(base, ignore_errors=True)


_libc = ctypes.CDLL(None, use_errno=True)


def _exchange(a, b) -> None:
    _libc.renameat2(-100, os.fsencode(str(a)), -100, os.fsencode(str(b)), 2)  # RENAME_EXCHANGE


def _apply(op, home, ws) -> None:
    kind, where, name = op
    dirs = T._dirs(ws)
    d, e = dirs[where % len(dirs)], dirs[name % len(dirs)]
    try:
        if kind == "hardlink":  # a plain name for a secret's inode
            envs = sorted(ws.rglob(".env"))
            if envs and envs[0].is_file():
                os.link(envs[0], d / "plain.txt")
        elif kind == "exchange":
            if ws not in (d, e):
                _exchange(d, e)
        elif kind == "deep":
            p = d / "n1" / "n2" / "n3"
            p.mkdir(parents=True)
            (p / ".env").write_text("S=1\n")
        elif kind == "utime_back":  # a secret written, the directory's mtime put back
            st = os.lstat(d)
            (d / ".env").write_text("S=1\n")
            os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns))
        elif kind == "move_into":
            if d != ws and not str(e).startswith(str(d)):
                d.rename(e / (d.name + "-in"))
        elif kind == "rename_over":
            if ws not in (d, e) and not str(e).startswith(str(d)) and not str(d).startswith(str(e)):
                os.rename(d, e)
        elif kind == "nm_env":
            (d / "node_modules").mkdir(exist_ok=True)
            (d / "node_modules" / ".env").write_text("S=1\n")
        elif kind == "vscode":
            (d / ".vscode").mkdir(exist_ok=True)
            (d / ".vscode" / "tasks.json").write_text("{}\n")
        elif kind == "file_to_dir":
            p = d / "thing"
            if p.is_file():
                p.unlink()
                p.mkdir()
                (p / ".env").write_text("S=1\n")
            else:
                p.write_text("x\n")
        elif kind == "gitfile":
            (d / ".git").write_text("gitdir: /nonexistent\n")
        else:
            T.apply(op, home, ws)  # not reached: dispatch below
    except (OSError, subprocess.CalledProcessError):
        pass


KINDS = ("hardlink", "exchange", "deep", "utime_back", "move_into", "rename_over", "nm_env",
         "vscode", "file_to_dir", "gitfile", "mkdir", "file", "atomic_save", "churn")


@pytest.mark.parametrize("seed", range(16))
def test_more_edit_kinds_keep_only_fresh_plans(seed, monkeypatch):
    rng = random.Random(seed)
    batches = [[(rng.choice(KINDS), rng.randrange(50), rng.randrange(50))
                for _ in range(rng.randint(1, 3))] for _ in range(rng.randint(1, 4))]
    original = T.apply
    monkeypatch.setattr(T, "apply", lambda op, home, ws: _apply(op, home, ws)
                        if op[0] in KINDS[:10] else original(op, home, ws))
    T.check_rounds(batches, rng.random() < 0.3, monkeypatch)


# The fresh path had the same flaw: observe.note_walk packed a walk's stamps
# against the time after the whole walk.  scan.Result.started now carries the
# walk's start, and the stamps are judged against it.
def test_slow_fresh_walk_keeps_racy_stamp_of_a_directory_listed_just_after_its_change(
        monkeypatch):
    from sandbox import observe

    base = _test_root() / f"redrelist-{uuid.uuid4().hex[:8]}"
    ws = base / "ws"
    (ws / "a").mkdir(parents=True)
    try:
        root, a = str(ws), str(ws / "a")
        (ws / "a" / "x.txt").write_text("x\n")  # a changes just before the walk
        real_list = scan._list

        def slow_list(rules, names, path, mode=scan.FULL):
            out = real_list(rules, names, path, mode)
            if path == a:  # the rest of a large workspace takes longer than RACY_NS
                time.sleep(dirstamps.RACY_NS / 1e9 + 0.2)
            return out

        monkeypatch.setattr(scan, "_list", slow_list)
        result = scan.walk(root, RULES, None)
        monkeypatch.setattr(scan, "_list", real_list)
        obs = observe.Observer()
        obs.note_walk(root, root, RULES, result)
        blob = obs.seen[root + "\0"]
        assert _stamp_of(blob, a) == (-1, -1), (
            "a directory listed right after its change was stored as trusted by a "
            "fresh plan whose walk took longer than the racy window")
    finally:
        shutil.rmtree(base, ignore_errors=True)
