"""The no-user-namespace container simulation (tests/nouserns.py) does what it claims."""

from __future__ import annotations

import shutil
import subprocess

import pytest

import nouserns

pytestmark = pytest.mark.skipif(nouserns.unavailable() is not None,
                                reason=str(nouserns.unavailable()))
BWRAP = shutil.which("bwrap") or "/usr/bin/bwrap"


def _bwrap_true(pre: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(pre + [BWRAP, "--unshare-user", "--ro-bind", "/", "/", "true"],
                          capture_output=True, text=True, timeout=30)


def test_bwrap_works_without_and_fails_within(who):
    assert _bwrap_true(who.prefix()).returncode == 0  # the host allows user namespaces
    done = _bwrap_true(nouserns.prefix() + who.prefix())
    assert done.returncode != 0
    assert "namespace" in done.stderr


def test_container_shape(who):
    done = subprocess.run(nouserns.prefix() + who.prefix() + ["cat", "/proc/self/status"],
                          capture_output=True, text=True, timeout=30, check=True)
    fields = dict(line.split(":", 1) for line in done.stdout.splitlines() if ":" in line)
    assert fields["Seccomp"].strip() == "2"
    if who.name == "root":  # a default Docker container's 14 capabilities, no CAP_SYS_ADMIN
        caps = int(fields["CapEff"], 16)
        assert bin(caps).count("1") == len(nouserns.DOCKER_CAPS)
        assert not caps >> nouserns.CAP_SYS_ADMIN & 1
    # fork and exec still work (clone without namespace flags, clone3 falls back)
    assert subprocess.run(nouserns.prefix() + who.prefix() + ["sh", "-c", "true | cat"],
                          timeout=30).returncode == 0
