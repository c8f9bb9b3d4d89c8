"""sandbox.plancache: a cached plan equals a fresh build, and goes stale when the host changes.

The plan is only reused when every stamp recorded during discovery still
matches; these tests change the host in the ways that matter (a new nested
repository, a new secret, a new dotenv file, a new host socket, a changed
profile) and check that the cached plan is refused and a fresh build sees
the change.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import _test_root
from sandbox import app, plancache
from sandbox.options import RunOptions

OPTS = RunOptions(command=("true",))



# backdated mtimes (utime) leave ctime new: see conftest._trust_backdated_stamps
TRUST_BACKDATED_STAMPS = True

def age(root: Path) -> None:
    """Backdate a tree so its stamps are outside the 2-second racy window."""
    old = time.time() - 60
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            os.utime(os.path.join(dirpath, name), (old, old), follow_symlinks=False)
        os.utime(dirpath, (old, old))


@pytest.fixture
def place(monkeypatch):
    base = _test_root() / f"plan-{os.getpid()}-{time.monotonic_ns()}"
    home, ws = base / "home", base / "ws"
    (home / ".cache").mkdir(parents=True)
    ws.mkdir()
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    (ws / "src").mkdir()
    (ws / "src" / "main.py").write_text("print('hi')\n")
    monkeypatch.chdir(ws)
    env = {"HOME": str(home), "PATH": os.environ["PATH"], "PWD": str(ws),
           "XDG_CONFIG_HOME": str(home / ".config")}
    app.prepare(OPTS, env)  # the first run creates the state directory under ~/.cache
    age(base)
    yield base, home, ws, env
    subprocess.run(["rm", "-rf", str(base)], check=False)


def fresh_and_cached(env):
    """Build a plan, store it, and load it back through the fast path's loader."""
    prepared = app.prepare(OPTS, env)
    assert not prepared.racy, [d for d in prepared.deps if d[1] and len(d[1]) == 4]
    plancache.store(env, prepared, app.plan_meta(prepared))
    return prepared, plancache.load(OPTS, env)


def test_cached_plan_equals_fresh_build(place):
    _base, _home, _ws, env = place
    prepared, plan = fresh_and_cached(env)
    assert plan is not None
    assert plan["argv"] + OPTS.command == prepared.invocation.argv
    assert plan["cwd"] == prepared.layout.cwd
    assert plan["status_index"] == prepared.invocation.status_fd_arg
    again = app.prepare(OPTS, env)  # a second fresh build is identical too
    assert again.invocation.argv == prepared.invocation.argv
    assert again.invocation.env == prepared.invocation.env


def _changes(base: Path, home: Path, ws: Path):
    def nested_repo():
        subprocess.run(["git", "init", "-q", str(ws / "src" / "vendored")], check=True)

    def new_secret():
        (home / ".aws").mkdir()
        (home / ".aws" / "credentials").write_text("[default]\n")

    def dotenv():
        (ws / "src" / ".env").write_text("TOKEN=x\n")

    def editor_config():
        (ws / ".vscode").mkdir()

    def host_socket():
        d = home / ".local" / "share" / "app"
        d.mkdir(parents=True)
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(d / "agent.sock"))
        s.close()

    def hooks_path():
        subprocess.run(["git", "-C", str(ws), "config", "core.hooksPath", "src"], check=True)

    return {"nested_repo": nested_repo, "new_secret": new_secret, "dotenv": dotenv,
            "editor_config": editor_config, "host_socket": host_socket, "hooks_path": hooks_path}


@pytest.mark.parametrize("change", sorted(_changes(Path("/"), Path("/"), Path("/"))))
def test_host_change_invalidates_cached_plan(place, change):
    base, home, ws, env = place
    before, plan = fresh_and_cached(env)
    assert plan is not None
    _changes(base, home, ws)[change]()
    assert plancache.load(OPTS, env) is None, f"stale plan reused after {change}"
    after = app.prepare(OPTS, env)
    assert after.invocation.argv != before.invocation.argv, change


def test_unrelated_file_content_change_keeps_plan(place):
    _base, _home, ws, env = place
    fresh_and_cached(env)
    with open(ws / "src" / "main.py", "a") as fh:  # same directory listing
        fh.write("# edit\n")
    assert plancache.load(OPTS, env) is not None


def test_plan_not_owned_privately_is_ignored(place):
    _base, _home, _ws, env = place
    fresh_and_cached(env)
    path = Path(plancache._path(env, plancache.key(OPTS, env)))
    os.chmod(path, 0o666)
    assert plancache.load(OPTS, env) is None


def test_racy_inputs_are_not_cached(place):
    _base, _home, ws, env = place
    config = ws / ".git" / "config"  # a file discovery reads, changed just now
    config.write_text(config.read_text() + "\n")
    prepared = app.prepare(OPTS, env)
    assert prepared.racy


def test_young_directory_is_cached_and_listed_again(place, monkeypatch):
    """A directory changed within the racy window no longer keeps the plan from
    being cached: its stamp is kept as one that never matches, so every run
    lists it again (sandbox.relist) until it is old enough to trust."""
    from sandbox import dirstamps

    monkeypatch.setattr(dirstamps, "RACY_NS", 2_000_000_000)  # the real window, for directories
    _base, _home, ws, env = place
    (ws / "src" / "new-file").write_text("x")  # the directory changed just now
    prepared = app.prepare(OPTS, env)
    assert not prepared.racy
    plancache.store(env, prepared, app.plan_meta(prepared))
    plan = plancache.load(OPTS, env)
    assert plan is not None and plan["argv"] + OPTS.command == prepared.invocation.argv
    (ws / "src" / ".env").write_text("TOKEN=x\n")  # possibly within the same clock tick
    assert plancache.load(OPTS, env) is None
