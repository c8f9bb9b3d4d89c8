"""A workspace (or writable path) deeper under the private /tmp or /var/tmp.

Found by a newcomer's trial: with a repository in /tmp/repo and the workspace
/tmp/repo/sub, the sandbox's private tmpfs over /tmp hid the rest of the
repository, git stopped at the filesystem boundary, and a write to ``..``
succeeded, returned 0 and vanished with the tmpfs.  Now the host directory
just below the scratch dir is bound read-only over the tmpfs: the repository
works, and a write the host would never see fails with EROFS.

These tests must use the real /tmp and /var/tmp (that is what they are
about), so they make their own directories there and remove them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from sandbox import profile
from sandbox.linux import bwrap
from sandbox.layout import Layout

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c",
       "init.defaultBranch=main"]


@pytest.fixture(params=["/tmp", "/var/tmp"])
def scratch_tree(request, senv):
    """An empty directory directly under /tmp (or /var/tmp), owned by the test's user."""
    top = Path(tempfile.mkdtemp(prefix="sbx-tmpws-", dir=request.param))
    os.chmod(top, 0o755)
    yield top
    shutil.rmtree(top, ignore_errors=True)


def own(senv, path: Path) -> None:
    senv.finish()
    senv.who.chown(path)


def make_repo(senv, top: Path) -> Path:
    (top / "sub").mkdir()
    (top / "top.txt").write_text("top\n")
    (top / "sub" / "s.txt").write_text("s\n")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "first"]):
        subprocess.run(GIT + args, cwd=top, check=True, capture_output=True)
    own(senv, top)
    return top / "sub"


def test_repository_around_the_workspace_works(senv, scratch_tree):
    sub = make_repo(senv, scratch_tree)
    env = senv.environ(HOME=str(senv.home))
    script = ("cat ../top.txt && git status --porcelain && git log --format=%s && "
              "echo new > n.txt && git add n.txt && "
              "git -c user.name=t -c user.email=t@example.invalid commit -qm second && "
              "git log --format=%s")
    r = senv.run(["sh", "-c", script], cwd=sub, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines() == ["top", "first", "second", "first"]
    host_log = subprocess.run(["git", "-c", "safe.directory=*", "log", "--format=%s"], cwd=scratch_tree, capture_output=True,
                              text=True, check=True).stdout.split()
    assert host_log == ["second", "first"]


def test_write_beside_the_workspace_fails_instead_of_vanishing(senv, scratch_tree):
    sub = make_repo(senv, scratch_tree)
    # without the sandbox the write reaches the host
    bare = senv.run(["sh", "-c", "echo x > ../bare.txt"], cwd=sub, sandboxed=False)
    assert bare.returncode == 0 and (scratch_tree / "bare.txt").exists()
    r = senv.run(["sh", "-c", "echo x > ../lost.txt"], cwd=sub)
    assert r.returncode != 0
    assert b"Read-only file system" in r.stderr
    assert not (scratch_tree / "lost.txt").exists()


def test_deep_workspace_without_a_repository(senv, scratch_tree):
    ws = scratch_tree / "a" / "ws"
    ws.mkdir(parents=True)
    (scratch_tree / "a" / "sibling.txt").write_text("beside\n")
    own(senv, scratch_tree)
    r = senv.run(["sh", "-c", "cat ../sibling.txt; echo in > inside.txt; "
                  "echo out > ../outside.txt || echo refused"], cwd=ws)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"beside\nrefused\n"
    assert (ws / "inside.txt").read_text() == "in\n"
    assert not (scratch_tree / "a" / "outside.txt").exists()


def test_the_rest_of_tmp_stays_private(senv, scratch_tree):
    ws = scratch_tree / "ws"
    ws.mkdir()
    own(senv, scratch_tree)
    scratch = os.path.dirname(scratch_tree)
    r = senv.run(["sh", "-c", f"ls -A {scratch}"], cwd=ws)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split() == [scratch_tree.name]


def test_allow_write_under_tmp_has_read_only_parents(senv, scratch_tree):
    extra = scratch_tree / "cache" / "deep"
    extra.mkdir(parents=True)
    own(senv, scratch_tree)
    r = senv.sh(f"echo ok > {extra}/made && echo no > {extra.parent}/lost",
                args=["--allow-write", str(extra)])
    assert r.returncode != 0 and b"Read-only file system" in r.stderr
    assert (extra / "made").read_text() == "ok\n"
    assert not (extra.parent / "lost").exists()


def test_host_socket_beside_the_workspace_stays_hidden(senv, scratch_tree):
    ws = scratch_tree / "ws"
    ws.mkdir()
    path = scratch_tree / "agent.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)
    try:
        own(senv, scratch_tree)
        os.chmod(path, 0o777)
        probe = ("import socket,sys; s=socket.socket(socket.AF_UNIX); "
                 f"s.settimeout(2); s.connect({str(path)!r}); print('connected')")
        bare = senv.run(["/usr/bin/python3", "-c", probe], cwd=ws, sandboxed=False)
        assert bare.stdout == b"connected\n", bare.stderr  # reachable without the sandbox
        r = senv.run(["/usr/bin/python3", "-c", probe], cwd=ws)
        assert r.returncode != 0 and b"connected" not in r.stdout
    finally:
        server.close()


def test_readonly_profile_sees_the_repository(senv, scratch_tree):
    sub = make_repo(senv, scratch_tree)
    r = senv.run(["sh", "-c", "cat ../top.txt; git log --format=%s"], cwd=sub,
                 args=["--profile", "readonly"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"top\nfirst\n"


def test_argv_binds_the_parent_read_only_before_the_workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    ctx = profile.Context(workspace="/tmp/repo/sub", home="/home/u", tmp="/tmp",
                          runtime="/run/user/1000")
    pol = profile.load("default", ctx)[0]
    lay = Layout(workspace="/tmp/repo/sub", cwd="/tmp/repo/sub",
                 writable_roots=("/tmp/repo/.git", "/tmp/repo/sub"), keep_in_place=(),
                 read_only=("/tmp/repo/.git/config",), masked_dirs=(), masked_files=(),
                 empty_dirs=(), cache_dir=None, empty_file="/e", scratch_parents=("/tmp/repo",))
    argv = list(bwrap.build(pol, lay, ["true"], {}).argv)
    mounts = argv[argv.index("--dev"):argv.index("--chdir")]
    assert mounts[mounts.index("/dev/shm") + 1:] == [
        "--ro-bind", "/tmp/repo", "/tmp/repo",
        "--bind", "/tmp/repo/.git", "/tmp/repo/.git", "--bind", "/tmp/repo/sub", "/tmp/repo/sub",
        "--ro-bind", "/tmp/repo/.git/config", "/tmp/repo/.git/config",
    ]
