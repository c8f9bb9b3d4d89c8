"""sandbox.relist: a cached plan brought up to date by re-listing changed directories
is byte for byte the plan a fresh build makes, whatever was edited.

The differential test applies random sequences of edits (new files, dotenv
files, directories, nested repositories, FIFOs, symlinks named like secrets
or pointing at them, directories renamed, replaced by symlinks or removed,
atomic saves, churn and FIFOs under ``~/.config``) to a workspace and a home
with a cached plan, then asks the fast path's loader for the plan and
compares whatever it returns with a fresh ``app.prepare``.  A refused plan
(``None``: plan afresh) is always allowed; a kept one must be identical.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import _test_root
from sandbox import app, dirstamps, hostsockets, plancache, relist, scan
from sandbox.errors import SandboxError
from sandbox.options import RunOptions
from test_plancache import age  # backdates a tree out of the racy window

OPTS = RunOptions(command=("true",))
TRUST_BACKDATED_STAMPS = True  # see conftest._trust_backdated_stamps
TICK = 0.03  # longer than a clock tick of the file timestamps (4 ms at HZ=250)




def make_place() -> tuple[Path, Path, Path, dict]:
    base = _test_root() / f"relist-{os.getpid()}-{time.monotonic_ns()}"
    home, ws = base / "home", base / "ws"
    (home / ".cache").mkdir(parents=True)
    (home / ".config" / "app").mkdir(parents=True)
    (home / "outside").mkdir()
    (home / "outside" / ".env").write_text("HOST_SECRET=1\n")
    ws.mkdir()
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    for d in ("src/pkg", "docs", "build/out"):
        (ws / d).mkdir(parents=True)
    (ws / "src" / "main.py").write_text("print('hi')\n")
    (ws / "docs" / "index.md").write_text("# docs\n")
    env = {"HOME": str(home), "PATH": os.environ["PATH"], "PWD": str(ws),
           "XDG_CONFIG_HOME": str(home / ".config")}
    return base, home, ws, env


def _dirs(top: Path) -> list[Path]:
    out = []
    for dirpath, dirs, _files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        out.append(Path(dirpath))
    return out


NAMES = ("a.py", "notes.txt", ".env", ".env.local", ".envrc", "config.txt", "node_modules",
         ".vscode", "build", "lib", "x")


def _write(path: Path, text: str) -> None:
    """Write a regular file; never block on a FIFO an earlier edit made there
    (O_NONBLOCK: ENXIO without a reader) or write through a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK | os.O_NOFOLLOW,
                 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def apply(op: tuple, home: Path, ws: Path) -> None:
    """One edit; ones that do not apply here (a name taken) do nothing."""
    kind, where, name = op
    if kind == "homeroot_file":  # an application's file in $HOME itself
        _write(home / f".app-{where}.tmp", "x\n")
        return
    if kind == "homeroot_history":  # a new file a secret pattern (~/.*_history) names
        _write(home / f".tool{where}_history", "secret\n")
        return
    name = NAMES[name % len(NAMES)]
    if kind.startswith("home_"):
        dirs = _dirs(home / ".config")
    else:
        dirs = _dirs(ws)
    d = dirs[where % len(dirs)]
    p = d / name
    try:
        if kind in ("file", "home_file"):
            _write(p, "x\n")
        elif kind == "churn":  # what an editor or a desktop app does: made and gone again
            _write(p, "x\n")
            p.unlink()
        elif kind in ("mkdir", "home_mkdir"):
            p.mkdir()
            _write(p / "f.txt", "y\n")
        elif kind == "gitinit":
            subprocess.run(["git", "init", "-q", str(p)], check=True, capture_output=True)
        elif kind in ("fifo", "home_fifo"):
            os.mkfifo(p)
        elif kind == "link_secret":  # a plain name leading to a secret outside
            os.symlink(home / "outside" / ".env", p)
        elif kind == "link_plain":
            os.symlink("../docs", p)
        elif kind == "rename_dir":
            if d != ws:
                d.rename(d.parent / (d.name + "-moved"))
        elif kind == "dir_to_link":
            if d != ws:
                shutil.rmtree(d)
                os.symlink(home / "outside", d)
        elif kind == "dir_to_secret_link":  # a directory becomes a link to a secret
            if d != ws:
                shutil.rmtree(d)
                os.symlink(home / "outside" / ".env", d)
        elif kind == "remove":
            if d != ws:
                shutil.rmtree(d)
        elif kind == "atomic_save":  # write a temporary file, rename it over the old one
            target = d / "saved.txt"
            tmp = d / ".saved.txt.swp"
            _write(tmp, str(time.monotonic_ns()))
            tmp.rename(target)
    except (OSError, subprocess.CalledProcessError):
        pass


KINDS = ("file", "churn", "mkdir", "gitinit", "fifo", "link_secret", "link_plain", "rename_dir",
         "dir_to_link", "dir_to_secret_link", "remove", "atomic_save", "home_file", "home_mkdir", "home_fifo",
         "homeroot_file", "homeroot_history")
OPS = st.tuples(st.sampled_from(KINDS), st.integers(0, 50), st.integers(0, 50))


def prepare(env):
    try:
        return app.prepare(OPTS, env)
    except SandboxError:
        return None


def check_rounds(batches, young: bool, monkeypatch) -> tuple[int, int]:
    """Apply each batch of edits, then compare the loader's plan with a fresh one.
    Returns (plans kept, plans refused)."""
    if young:  # directory stamps in the racy window: kept as never matching
        monkeypatch.setattr(dirstamps, "RACY_NS", 2_000_000_000)
    # The kernel's socket list held still and kept to its header line: other
    # processes on this machine (the suite's own sandbox servers among them)
    # bind and remove sockets between the two builds, and a named socket
    # that is gone by the second build is dropped by it, which is not what is
    # compared here (tests/test_hostsockets.py covers the list).
    snapshot = hostsockets.read().split(b"\n", 1)[0] + b"\n"
    monkeypatch.setattr(hostsockets, "read", lambda source=hostsockets.SOURCE: snapshot)
    base, home, ws, env = make_place()
    kept = refused = 0
    try:
        monkeypatch.chdir(ws)
        app.prepare(OPTS, env)  # creates the state directory
        age(base)
        fresh = prepare(env)
        assert fresh is not None and not fresh.racy
        plancache.store(env, fresh, app.plan_meta(fresh))
        for batch in batches:
            time.sleep(TICK)
            for op in batch:
                apply(op, home, ws)
            time.sleep(TICK)
            plan = plancache.load(OPTS, env)
            fresh = prepare(env)
            if plan is not None:
                kept += 1
                assert fresh is not None, f"a plan was kept that a fresh build refuses: {batch}"
                got, want = plan["argv"] + OPTS.command, fresh.invocation.argv
                assert got == want, (batch, set(got) ^ set(want))
                assert plan["cwd"] == fresh.layout.cwd
                assert plan["status_index"] == fresh.invocation.status_fd_arg
                assert plan["warnings"] == fresh.layout.warnings
                again = plancache.load(OPTS, env)  # the stamps it stored are right too
                assert again is not None and again["argv"] == plan["argv"]
            else:
                refused += 1
                if fresh is not None and not fresh.racy:
                    plancache.store(env, fresh, app.plan_meta(fresh))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return kept, refused


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batches=st.lists(st.lists(OPS, min_size=1, max_size=4), min_size=1, max_size=3),
       young=st.booleans())
def test_kept_plan_equals_fresh_build(batches, young, monkeypatch):
    check_rounds(batches, young, monkeypatch)


@pytest.mark.parametrize("young", [False, True], ids=["trusted-stamps", "young-stamps"])
def test_benign_edits_keep_the_plan(young, monkeypatch):
    """The point of it all: edits that change no finding keep the cached plan."""
    benign = [[("file", 0, 0)], [("atomic_save", 1, 0)], [("mkdir", 2, 10)], [("churn", 3, 1)],
              [("rename_dir", 4, 0)], [("home_file", 0, 1)], [("home_mkdir", 0, 9)],
              [("remove", 5, 0)], [("link_plain", 0, 10)], [("dir_to_link", 2, 0)],
              [("homeroot_file", 0, 0)]]
    kept, refused = check_rounds(benign, young, monkeypatch)
    assert (kept, refused) == (len(benign), 0)


@pytest.mark.parametrize("op", [("file", 2, 2), ("file", 0, 4), ("mkdir", 0, 7), ("gitinit", 1, 8),
                                ("fifo", 3, 1), ("link_secret", 0, 5), ("home_fifo", 0, 1),
                                ("dir_to_secret_link", 2, 0), ("homeroot_history", 0, 0)],
                         ids=["dotenv", "envrc", "vscode", "nested-repo", "fifo",
                              "link-to-secret", "fifo-in-config", "dir-to-symlink",
                              "history-file"])
def test_edits_that_matter_are_seen(op, monkeypatch):
    """Each of these changes the plan a fresh build makes, so the cached plan is refused."""
    kept, refused = check_rounds([[op]], False, monkeypatch)
    assert (kept, refused) == (0, 1), op


def test_new_subdirectory_is_walked_and_stamped(tmp_path):
    """A new directory is walked from where the walk would reach it; its
    directories join the stamps, and one that goes away again leaves them."""
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    rules = scan.Rules(protected_names=(".vscode",), skip_dirs=("node_modules",),
                       secret_names=(".env",), find_git=True, secrets_everywhere=True)
    result = scan.walk(str(root), rules, None)
    blob, _ = dirstamps.pack(result.dirs, result.stamps, result.found,
                             (str(root), rules._values()), now=time.time_ns() + 10**10)
    time.sleep(TICK)
    (root / "a" / "node_modules" / "pkg").mkdir(parents=True)
    new = relist.refresh(blob, now=time.time_ns() + 10**10)
    assert new is not None and new != blob
    paths = dirstamps.unpack(new)[0]
    assert str(root / "a" / "node_modules" / "pkg") in paths  # secrets are searched there
    assert dirstamps.valid(new)
    time.sleep(TICK)
    (root / "a" / "node_modules" / "pkg" / ".env").write_text("x")
    assert relist.refresh(new) is None  # a secret in it: plan afresh
    (root / "a" / "node_modules" / "pkg" / ".env").unlink()
    time.sleep(TICK)
    shutil.rmtree(root / "a" / "node_modules")
    gone = relist.refresh(new, now=time.time_ns() + 10**10)
    assert gone is not None and str(root / "a" / "node_modules") not in dirstamps.unpack(gone)[0]


def test_blob_without_its_walk_is_never_refreshed(tmp_path):
    (tmp_path / "d").mkdir()
    result = scan.walk(str(tmp_path), scan.Rules(), None)
    blob, _ = dirstamps.pack(result.dirs, result.stamps)
    (tmp_path / "d" / "f").write_text("x")
    assert relist.refresh(blob) is None
