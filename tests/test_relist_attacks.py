"""Attacks on the incremental plan (sandbox.relist), through the real CLI and bwrap.

A cached plan is now kept when a directory changed but holds the same
findings, so each change that *does* matter must still reach the next run:
a dotenv file in a subdirectory, a FIFO under a searched host directory, a
new repository's hooks, a directory replaced by a symlink to a secret.
Every test warms a cached plan first (stamps old enough to be trusted),
proves that this cached plan does not cover the new path (so reusing it
unchecked would let the attack through), proves the attack works without
the sandbox, and then that it fails inside.
"""

from __future__ import annotations

import glob
import marshal
import os
import time
import uuid

import subprocess

import pytest

from conftest import sandbox_exe


def _text(r) -> str:
    return (r.stdout + r.stderr).decode(errors="replace")


def _run(senv, command: list[str], sandboxed: bool = True):
    """``senv.run`` without handing the whole tree over again first: that chown
    moves every ctime, and a plan is not cached from inputs changed just now."""
    full = [sandbox_exe(), "run", "--", *command] if sandboxed else list(command)
    return subprocess.run(senv.who.prefix() + full, cwd=senv.ws, env=senv.environ(),
                          capture_output=True, timeout=120)


def _give(senv, *paths) -> None:
    for path in paths:
        if os.getuid() == 0 and senv.who.uid != 0:
            os.lchown(path, senv.who.uid, senv.who.gid)


def _warm(senv) -> None:
    """Runs until one uses a cached plan, with stamps past the racy window."""
    senv.finish()
    r = _run(senv, ["true"])  # makes the state directory (itself an input of the plan)
    assert r.returncode == 0, _text(r)
    time.sleep(2.1)
    for _ in range(2):
        r = _run(senv, ["true"])
        assert r.returncode == 0, _text(r)


def _plan_argvs(senv) -> list[tuple]:
    plans = glob.glob(str(senv.home / ".cache" / "sandbox" / "plans" / "*"))
    assert plans, "no cached plan"
    out = []
    for path in plans:
        if path.endswith(".tmp"):
            continue
        with open(path, "rb") as fh:
            out.append(marshal.load(fh)["argv"])
    return out


def _covered(senv, path: str) -> bool:
    return any(path in argv for argv in _plan_argvs(senv))


def test_dotenv_in_subdirectory_after_cached_run_is_masked(senv):
    (senv.ws / "src" / "app").mkdir(parents=True)
    (senv.ws / "src" / "app" / "main.py").write_text("print(1)\n")
    _warm(senv)
    secret = "relist-" + uuid.uuid4().hex
    env_file = senv.ws / "src" / "app" / ".env"
    env_file.write_text(f"TOKEN={secret}\n")
    _give(senv, env_file)
    real = os.path.realpath(env_file)
    assert not _covered(senv, real)  # the cached plan, reused unchecked, would show it
    r = _run(senv, ["cat", "src/app/.env"], sandboxed=False)
    assert secret.encode() in r.stdout, _text(r)  # the premise: readable without the sandbox
    r = _run(senv, ["cat", "src/app/.env"])
    assert secret.encode() not in r.stdout, _text(r)


def test_fifo_under_searched_host_dir_after_cached_run_is_masked(senv):
    config = senv.home / ".config" / "app"
    config.mkdir(parents=True)
    (config / "settings.json").write_text("{}\n")
    _warm(senv)
    fifo = config / "control"
    os.mkfifo(fifo)
    _give(senv, fifo)
    assert not _covered(senv, str(fifo))  # the cached plan would leave it writable
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a host program listening on it
    try:
        write = ["sh", "-c", f"echo pwned > {fifo} && echo WROTE"]
        r = _run(senv, write, sandboxed=False)
        assert b"WROTE" in r.stdout, _text(r)
        assert os.read(reader, 100) == b"pwned\n"  # the premise: a host program hears it
        r = _run(senv, write)
        assert b"WROTE" not in r.stdout, _text(r)
        try:
            heard = os.read(reader, 100)
        except BlockingIOError:
            heard = b""
        assert heard == b"", heard
    finally:
        os.close(reader)


def test_new_repository_hooks_after_cached_run_are_protected(senv):
    (senv.ws / "src").mkdir()
    (senv.ws / "src" / "main.py").write_text("print(1)\n")
    _warm(senv)
    repo = senv.ws / "src" / "lib"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    senv.who.chown(repo)
    hooks = os.path.realpath(repo / ".git" / "hooks")
    assert not _covered(senv, hooks)  # the cached plan would leave the hooks writable
    plant = ["sh", "-c", "printf '#!/bin/sh\\necho PWNED\\n' > src/lib/.git/hooks/pre-commit"
             " && echo WROTE"]
    r = _run(senv, plant, sandboxed=False)
    assert b"WROTE" in r.stdout, _text(r)  # the premise: the host lets it be written
    os.unlink(repo / ".git" / "hooks" / "pre-commit")
    r = _run(senv, plant)
    assert b"WROTE" not in r.stdout, _text(r)
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()


def test_directory_replaced_by_link_to_secret_after_cached_run(senv):
    import shutil

    outside = senv.home / "outside"
    outside.mkdir()
    secret = "relist-" + uuid.uuid4().hex
    (outside / ".env").write_text(f"TOKEN={secret}\n")
    (senv.ws / "data").mkdir()
    (senv.ws / "data" / "rows.csv").write_text("1,2\n")
    _warm(senv)
    shutil.rmtree(senv.ws / "data")
    os.symlink(outside / ".env", senv.ws / "data")  # a plain name, leading to a secret
    _give(senv, senv.ws / "data")
    target = os.path.realpath(outside / ".env")
    assert not _covered(senv, target)  # the cached plan would show it
    r = _run(senv, ["cat", "data"], sandboxed=False)
    assert secret.encode() in r.stdout, _text(r)
    r = _run(senv, ["cat", "data"])
    assert secret.encode() not in r.stdout, _text(r)


def test_benign_edit_keeps_the_plan_and_its_masks(senv):
    """The other side: a new file next to a masked .env keeps the cached plan
    (no new plan file, the same argv) and the mask still holds."""
    secret = "relist-" + uuid.uuid4().hex
    (senv.ws / "src").mkdir()
    (senv.ws / "src" / ".env").write_text(f"TOKEN={secret}\n")
    _warm(senv)
    before = _plan_argvs(senv)
    (senv.ws / "src" / "new.py").write_text("print(2)\n")
    _give(senv, senv.ws / "src" / "new.py")
    r = _run(senv, ["sh", "-c", "cat src/.env; cat src/new.py"])
    assert secret.encode() not in r.stdout and b"print(2)" in r.stdout, _text(r)
    assert _plan_argvs(senv) == before
    if not before:
        pytest.fail("no plan")
