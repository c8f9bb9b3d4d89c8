"""sandbox.secretfiles: hidden, shown as it is, or shown as git has it.

Repositories are made with the real git; the decisions are checked against
what git says.  The end-to-end behaviour through bwrap is in test_secrets.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sandbox import secretfiles
from sandbox.observe import Observer

GIT = shutil.which("git")
pytestmark = pytest.mark.skipif(GIT is None, reason="git is not installed")
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_CONFIG_NOSYSTEM": "1",
       "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@e", "HOME": "/nonexistent"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run([GIT, "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env=ENV).stdout


@pytest.fixture
def repo(tmp_path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    git(ws, "init", "-q")
    return ws


def settle(ws: Path, files, state: Path, ok=lambda objects: True, writable=None):
    obs = Observer()
    result = secretfiles.settle([str(f) for f in files], worktrees={str(ws): str(ws / ".git")},
                                stores_ok=ok, writable=[str(ws)] if writable is None else writable,
                                state=str(state), obs=obs)
    return result, obs


def test_untracked_secret_is_hidden(repo, tmp_path):
    (repo / ".env").write_text("K=1\n")
    result, _ = settle(repo, [repo / ".env"], tmp_path / "state")
    assert result.hidden == [str(repo / ".env")] and result.binds == [] and result.warnings == []


def test_committed_secret_is_shown_as_it_is(repo, tmp_path):
    (repo / ".env").write_text("K=1\n")
    git(repo, "add", ".env")
    git(repo, "commit", "-qm", "x")
    result, obs = settle(repo, [repo / ".env"], tmp_path / "state")
    assert result.hidden == [] and result.binds == [(str(repo / ".env"), str(repo / ".env"))]
    assert len(result.warnings) == 1 and "already holds this exact content" in result.warnings[0]
    # the plan depends on the file's content and on where its object is
    hexid = git(repo, "rev-parse", "HEAD:.env").strip()
    assert str(repo / ".env") in obs.seen and len(obs.seen[str(repo / ".env")]) == 5
    assert str(repo / ".git/objects" / hexid[:2] / hexid[2:]) in obs.seen
    assert str(repo / ".git/index") not in obs.seen  # held: the index was never read
    # outside the writable roots it is read-only already: nothing to mount
    result, _ = settle(repo, [repo / ".env"], tmp_path / "state", writable=[])
    assert result.binds == [] and result.hidden == [] and len(result.warnings) == 1


def test_store_the_command_cannot_read_does_not_count(repo, tmp_path):
    (repo / ".env").write_text("K=1\n")
    git(repo, "add", ".env")
    result, _ = settle(repo, [repo / ".env"], tmp_path / "state", ok=lambda objects: False)
    assert result.hidden == [str(repo / ".env")] and result.binds == []


def test_locally_changed_secret_is_shown_as_staged(repo, tmp_path):
    (repo / ".env").write_text("K=committed\n")
    git(repo, "add", ".env")
    git(repo, "commit", "-qm", "x")
    (repo / ".env").write_text("K=local-secret\n")
    state = tmp_path / "state"
    result, obs = settle(repo, [repo / ".env"], state)
    assert result.hidden == []
    [(copy, target)] = result.binds
    assert target == str(repo / ".env") and Path(copy).parent == state / "staged"
    assert Path(copy).read_text() == "K=committed\n"
    assert not os.stat(copy).st_mode & 0o222
    assert "index has it" in result.warnings[0]
    assert str(repo / ".git/index") in obs.seen and copy in obs.seen
    # a copy that went missing is written again by the next plan
    os.chmod(copy, 0o644)
    os.unlink(copy)
    result, _ = settle(repo, [repo / ".env"], state)
    assert Path(result.binds[0][0]).read_text() == "K=committed\n"


def test_staged_real_content_missing_from_the_store_is_hidden(repo, tmp_path):
    (repo / ".env").write_text("K=1\n")
    git(repo, "add", ".env")
    hexid = git(repo, "rev-parse", ":.env").strip()
    os.unlink(repo / ".git/objects" / hexid[:2] / hexid[2:])  # e.g. in an alternate store
    result, _ = settle(repo, [repo / ".env"], tmp_path / "state")
    assert result.hidden == [str(repo / ".env")] and result.binds == []


def test_empty_and_huge_files_are_hidden_without_looking(repo, tmp_path, monkeypatch):
    (repo / ".env").write_text("")
    (repo / ".env.big").write_text("x" * 100)
    git(repo, "add", "-A")
    monkeypatch.setattr(secretfiles, "MAX_SECRET", 50)
    result, obs = settle(repo, [repo / ".env", repo / ".env.big"], tmp_path / "state")
    assert result.hidden == [str(repo / ".env"), str(repo / ".env.big")]
    assert not any(".git/objects/" in p for p in obs.seen)


def test_hard_links_are_reported(repo, tmp_path):
    (repo / ".env").write_text("K=1\n")
    os.link(repo / ".env", repo / "copy.txt")
    result, _ = settle(repo, [repo / ".env"], tmp_path / "state")
    assert result.hidden == [str(repo / ".env")]
    assert "1 more hard link" in result.warnings[0]


def test_no_repository_means_hidden(tmp_path):
    (tmp_path / ".env").write_text("K=1\n")
    obs = Observer()
    result = secretfiles.settle([str(tmp_path / ".env")], worktrees={}, stores_ok=lambda o: True,
                                writable=[str(tmp_path)], state=str(tmp_path / "s"), obs=obs)
    assert result.hidden == [str(tmp_path / ".env")]


def test_follow_resolves_and_stamps_every_link(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "secret").write_text("x")
    os.symlink("real", tmp_path / "current")
    os.symlink("../current/secret", tmp_path / "real" / "up")
    os.symlink(str(tmp_path / "real" / "up"), tmp_path / ".env")
    obs = Observer()
    assert secretfiles.follow(str(tmp_path / ".env"), obs) == str(tmp_path / "real" / "secret")
    assert os.path.realpath(tmp_path / ".env") == str(tmp_path / "real" / "secret")
    # every link on the way is stamped: switching one re-plans
    for link in (".env", "real/up", "current"):
        assert str(tmp_path / link) in obs.seen
    os.symlink("loop", tmp_path / "loop")
    assert secretfiles.follow(str(tmp_path / "loop"), obs) is None


def test_link_targets_only_regular_files(tmp_path):
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    links = {"a": "f", "b": "d", "c": "/dev/null", "e": "/proc/self/environ", "g": "missing"}
    for name, target in links.items():
        os.symlink(target, tmp_path / name)
    got = secretfiles.link_targets([str(tmp_path / n) for n in links], Observer())
    assert got == [str(tmp_path / "f")]
