"""A command started by root must not be stronger than one started by a plain user.

Each test shows the capability exists for root outside the sandbox (without
changing anything on the host: files are only opened, never written) and is
gone inside.  The unprivileged user cannot do these things outside either, so
for them only the inside half is checked.
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.integration

PY = "/usr/bin/python3"
OPEN_FOR_WRITE = """
import os, sys
try:
    os.close(os.open(sys.argv[1], os.O_WRONLY))  # opened, never written
    print("WRITABLE")
except OSError as exc:
    print(exc.strerror)
"""


def _inside_and_outside(senv, path):
    inside = senv.run([PY, "-c", OPEN_FOR_WRITE, path]).stdout.decode().strip()
    outside = senv.run([PY, "-c", OPEN_FOR_WRITE, path], sandboxed=False).stdout.decode().strip()
    return inside, outside


@pytest.mark.parametrize("path", ["/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches"])
def test_kernel_knobs_are_read_only(senv, path):
    if not os.path.exists(path):
        pytest.skip(f"{path} does not exist on this kernel")
    inside, outside = _inside_and_outside(senv, path)
    if senv.who.uid == 0:
        assert outside == "WRITABLE", "root can write kernel knobs on the host"
        assert inside == "Read-only file system", inside
    else:
        assert outside == "Permission denied"
        assert inside in ("Permission denied", "Read-only file system"), inside


def test_no_remount_and_no_capabilities(senv):
    r = senv.sh("grep CapEff /proc/self/status; mount -o remount,rw / 2>&1; echo rc=$?")
    out = r.stdout.decode()
    assert "CapEff:\t0000000000000000" in out
    assert "rc=0" not in out


def test_sys_is_read_only(senv):
    r = senv.sh("touch /sys/kernel/sandbox-probe 2>&1; echo rc=$?")
    assert b"rc=0" not in r.stdout
