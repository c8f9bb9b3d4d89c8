"""A workspace with very many protected paths (sandbox/runner.py, long argv).

Every protected file is a read-only bind plus keep-in-place binds of its
parents, so a workspace with hundreds of `.envrc` files makes an argv larger
than execve takes (E2BIG, which once ended in a traceback).  Past a size the
options go to bwrap through an `--args` descriptor; past what bwrap itself
accepts, the run fails closed with one line (exit 125), never with a
traceback and never without the protections.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def _plant(ws, count: int) -> None:
    for i in range(count):
        d = ws / f"a-directory-with-a-rather-long-name-{i:05d}" / "sub"
        d.mkdir(parents=True)
        (d / ".envrc").write_text("echo host-run\n")


def test_an_argv_too_long_for_execve_still_runs_with_every_protection(senv):
    _plant(senv.ws, 800)  # about 300 KiB of bwrap options
    senv.who.chown(senv.base)
    dry = senv.run(["true"], args=["--dry-run"])
    assert len(dry.stdout) > 256 << 10, len(dry.stdout)  # the case under test
    target = "a-directory-with-a-rather-long-name-00799/sub/.envrc"
    done = senv.sh(f"cat {target}; (echo changed > {target}) 2>/dev/null && echo WROTE; true")
    assert done.returncode == 0, done.stderr
    assert b"echo host-run" in done.stdout and b"WROTE" not in done.stdout, done.stdout
    assert b"Traceback" not in done.stderr, done.stderr
    assert (senv.ws / target).read_text() == "echo host-run\n"


def test_more_mounts_than_bwrap_takes_fail_closed_in_one_line(senv):
    _plant(senv.ws, 3500)
    senv.who.chown(senv.base)
    done = senv.sh("echo RAN")
    assert done.returncode == 125, (done.returncode, done.stderr)
    assert b"RAN" not in done.stdout
    assert b"Traceback" not in done.stderr, done.stderr
    lines = [ln for ln in done.stderr.decode().splitlines() if ln.startswith("sandbox:")]
    assert any("more than bwrap accepts" in ln for ln in lines), done.stderr
