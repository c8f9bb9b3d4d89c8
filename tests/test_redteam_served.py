"""Red-team regression tests for served runs (issue 14) and the changes
that came with them (sandbox.linux.drift's reach check).

Each test runs the real bwrap through the installed CLI, and each shows the
attack working where the protection is absent (a bare run, or the
vulnerable behaviour) so that it can fail.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import sandbox_exe

SECRET = b"TOPSECRET-red-4f1c"


def test_a_secret_below_roots_own_unsearchable_dir_stays_masked(senv, who):
    """drift._searchable_parents dropped the mask on a secret whose parent
    directory had no search bit for its owner: root's discovery (which
    ignores modes) had masked ``locked/.env``, the prune step dropped the
    mask because the caller "could not reach it", and the sandboxed command,
    the directory's owner, simply chmod-ed it back and read the secret."""
    if who.name != "root":
        pytest.skip("the planner sees inside a mode-000 directory only as root")
    locked = senv.ws / "locked"
    locked.mkdir()
    (locked / ".env").write_bytes(SECRET + b"\n")
    os.chmod(locked, 0)
    try:
        script = "chmod 700 locked && cat locked/.env"
        bare = senv.sh(script, sandboxed=False)
        assert SECRET in bare.stdout  # the attack itself works without the sandbox
        os.chmod(locked, 0)
        done = senv.sh(script)
        assert SECRET not in done.stdout + done.stderr, done
    finally:
        os.chmod(locked, 0o700)
