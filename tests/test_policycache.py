"""sandbox.policycache: a cached Policy is the same Policy, and goes stale correctly."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from sandbox import policycache, profile
from sandbox.options import RunOptions

CTX = profile.Context(workspace="/ws", home="/home/u", tmp="/tmp", runtime="/run/user/1000")



# backdated mtimes (utime) leave ctime new: see conftest._trust_backdated_stamps
TRUST_BACKDATED_STAMPS = True

@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    (tmp_path / "cfg" / "sandbox" / "profiles").mkdir(parents=True)


@pytest.fixture
def state(tmp_path) -> str:
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    return str(d)


def load(spec, state, ctx=CTX):
    result = policycache.load(spec, ctx, state)
    return result[0], result[1]


def make_old(path: Path, seconds: int = 3600) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def user_profile(tmp_path, name: str, text: str) -> Path:
    path = tmp_path / "cfg" / "sandbox" / "profiles" / f"{name}.toml"
    path.write_text(text)
    make_old(path)
    return path


@pytest.mark.parametrize("spec", ["default", "readonly"])
def test_cached_equals_fresh(spec, state):
    fresh, _ = profile.load(spec, CTX)
    first, cached1 = load(spec, state)
    second, cached2 = load(spec, state)
    assert (cached1, cached2) == (False, True)
    assert first == fresh
    assert second == fresh
    assert second.weakenings == fresh.weakenings


def test_cached_user_profile_with_weakenings(tmp_path, state):
    user_profile(tmp_path, "loose", 'extends = "default"\n[protect]\ngit = false\n'
                                    '[env]\npass = ["MY_TOKEN"]\n[filesystem]\nallow_read = ["${home}/.aws"]\n'
                                    '[env.set]\nA = "1"\n[caches]\nX = "x"\n')
    fresh, _ = profile.load("loose", CTX)
    assert len(fresh.weakenings) == 3
    load("loose", state)
    cached, hit = load("loose", state)
    assert hit and cached == fresh
    assert isinstance(cached.env_set, tuple) and isinstance(cached.env_set[0], tuple)


def test_profile_by_path(tmp_path, state):
    path = tmp_path / "p.toml"
    path.write_text('extends = "readonly"\n[env]\ndeny = ["FOO"]\n')
    make_old(path)
    fresh, _ = profile.load(str(path), CTX)
    assert load(str(path), state) == (fresh, False)
    assert load(str(path), state) == (fresh, True)


def test_editing_the_profile_invalidates(tmp_path, state):
    path = user_profile(tmp_path, "mine", 'extends = "default"\n[env]\ndeny = ["AAA"]\n')
    load("mine", state)
    assert load("mine", state)[1] is True
    path.write_text('extends = "default"\n[env]\ndeny = ["BBB"]\n')
    make_old(path, 1800)
    policy, hit = load("mine", state)
    assert hit is False
    assert "BBB" in policy.env_deny and "AAA" not in policy.env_deny
    assert load("mine", state) == (policy, True)


def test_editing_a_parent_invalidates(tmp_path, state):
    base = tmp_path / "base.toml"
    base.write_text('[env]\ndeny = ["ONE"]\n')
    make_old(base)
    child = tmp_path / "child.toml"
    child.write_text('extends = "base.toml"\n')
    make_old(child)
    load(str(child), state)
    assert load(str(child), state)[1] is True
    base.write_text('[env]\ndeny = ["TWO"]\n')
    make_old(base, 1800)
    policy, hit = load(str(child), state)
    assert not hit and "TWO" in policy.env_deny and "ONE" not in policy.env_deny


def test_a_new_user_profile_shadowing_a_builtin_is_noticed(tmp_path, state):
    load("default", state)
    assert load("default", state)[1] is True
    user_profile(tmp_path, "default", 'description = "shadow"\n')
    with pytest.raises(profile.ProfileError, match="shadows the built-in"):
        load("default", state)


def test_a_user_profile_created_later_is_noticed(tmp_path, state):
    with pytest.raises(profile.ProfileError):
        load("later", state)
    user_profile(tmp_path, "later", 'description = "now"\n')
    policy, hit = load("later", state)
    assert not hit and policy.description == "now"


def test_recent_files_are_not_cached(tmp_path, state):
    path = tmp_path / "fresh.toml"
    path.write_text('description = "just written"\n')
    load(str(path), state)
    assert load(str(path), state)[1] is False


def test_racy_ns_zero_caches_fresh_files(tmp_path, state, monkeypatch):
    monkeypatch.setattr(policycache, "RACY_NS", 0)
    path = tmp_path / "fresh.toml"
    path.write_text('description = "just written"\n')
    fresh, _ = profile.load(str(path), CTX)
    load(str(path), state)
    assert load(str(path), state) == (fresh, True)


def test_context_is_part_of_the_key(state):
    other = profile.Context(workspace="/other", home="/home/v", tmp="/tmp", runtime="/run/user/1")
    load("default", state)
    policy, hit = load("default", state, other)
    assert not hit
    assert policy == profile.load("default", other)[0]
    assert "/home/v/.ssh" in policy.deny_read


def test_corrupt_entry_means_fresh_load(state):
    load("default", state)
    entries = list(Path(state, "policy").iterdir())
    assert len(entries) == 1
    for garbage in (b"", b"\x00\x01junk", b"N"):
        entries[0].write_bytes(garbage)
        policy, hit = load("default", state)
        assert not hit and policy == profile.load("default", CTX)[0]


def test_no_state_dir(state):
    policy, hit = load("default", None)
    assert not hit and policy == profile.load("default", CTX)[0]


# -- the whole plan: a cached policy gives the same bwrap argv --------------------

def test_prepared_argv_same_with_cached_policy(tmp_path, monkeypatch):
    from sandbox import app

    home = tmp_path / "home"
    ws = tmp_path / "ws"
    (ws / ".git" / "hooks").mkdir(parents=True)
    (ws / ".vscode").mkdir()
    (ws / ".env").write_text("SECRET=1\n")
    (home / ".ssh").mkdir(parents=True)
    (home / ".netrc").write_text("x")
    monkeypatch.chdir(ws)
    environ = {
        "HOME": str(home),
        "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"),
        "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "PWD": str(ws),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SANDBOX_BWRAP": sys.executable,  # any executable: nothing is run
        "GITHUB_TOKEN": "ghp_value",
    }
    # the kernel's socket list held still: other tests bind and close host
    # sockets meanwhile, and each would (rightly) change the masks between
    # the two prepares (tests/test_hostsockets.py covers the list)
    from sandbox import hostsockets

    snapshot = hostsockets.read().split(b"\n", 1)[0] + b"\n"  # header only: see test_relist
    monkeypatch.setattr(hostsockets, "read", lambda source=hostsockets.SOURCE: snapshot)
    opts = RunOptions(command=("make", "test"))
    first = app.prepare(opts, environ)
    # the profile files are old, so the first prepare stored the policy
    second = app.prepare(opts, environ)
    assert first.policy_cached is False
    assert second.policy_cached is True
    assert second.policy == first.policy
    assert second.invocation.argv == first.invocation.argv
    assert second.invocation.env == first.invocation.env
    assert second.layout == first.layout
    argv = first.invocation.argv
    assert argv[0] == sys.executable
    assert "GITHUB_TOKEN" not in first.invocation.env
    assert str(home / ".ssh") in argv and str(ws / ".env") in argv
    assert argv[-3:] == ("--", "make", "test")


def test_a_user_profile_shadowing_a_builtin_parent_is_noticed(tmp_path, state):
    # readonly extends default by name: a user default.toml created later must
    # give the same error as a fresh load, not the cached policy
    load("readonly", state)
    assert load("readonly", state)[1] is True
    user_profile(tmp_path, "default", 'description = "shadow"\n')
    with pytest.raises(profile.ProfileError, match="shadows the built-in profile 'default'"):
        profile.load("readonly", CTX)
    with pytest.raises(profile.ProfileError, match="shadows the built-in profile 'default'"):
        load("readonly", state)
