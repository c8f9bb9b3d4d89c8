"""The ``readonly`` profile runs test suites: private scratch space, nothing on the host.

Found by a newcomer's trial: with /tmp read-only too, pytest's ``tmp_path``
and ``mktemp`` failed, so a read-only profile could not run tests at all.
"""

from __future__ import annotations

import os
import sys

PYTHON = os.path.join(os.path.realpath(sys.prefix), "bin", "python")

TEST_FILE = '''
import subprocess, tempfile

def test_scratch(tmp_path):
    (tmp_path / "made").write_text("x")
    assert subprocess.run(["mktemp"], capture_output=True).returncode == 0
    with tempfile.NamedTemporaryFile() as fh:
        fh.write(b"y")
'''


def snapshot(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, dirs, files in os.walk(root) for f in dirs + files)


def test_pytest_runs_and_writes_nothing(senv):
    (senv.ws / "test_scratch.py").write_text(TEST_FILE)
    before = snapshot(senv.ws)
    r = senv.run([PYTHON, "-m", "pytest", "-q", "-p", "no:xdist", "test_scratch.py"],
                 args=["--profile", "readonly"])
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    assert b"1 passed" in r.stdout
    # pytest's cache provider cannot write .pytest_cache: a warning, not a failure
    assert snapshot(senv.ws) == before


def test_scratch_is_private_and_the_workspace_read_only(senv):
    r = senv.sh('f=$(mktemp) && echo x > "$f" && cat "$f" && echo "$TMPDIR"; '
                "echo y > in-workspace || echo refused", args=["--profile", "readonly"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"x\n/tmp\nrefused\n"
    assert not (senv.ws / "in-workspace").exists()
