"""sandbox.selfguard: nothing the command can write is on the sandbox's own import path."""

from __future__ import annotations

import os
import sys

from sandbox import selfguard

STDLIB = os.path.dirname(os.__file__)


def test_entries_before_the_stdlib_move_last_and_the_cwd_goes():
    path = ["", "/ws", "/pythonpath", "/usr/lib/python311.zip", STDLIB, STDLIB + "/lib-dynload",
            "/venv/site-packages", "/src"]
    selfguard.harden_sys_path(path)
    assert path == ["/usr/lib/python311.zip", STDLIB, STDLIB + "/lib-dynload",
                    "/venv/site-packages", "/src", "/ws", "/pythonpath"]


def test_a_path_without_the_stdlib_is_left_alone():
    path = ["/a", "/b"]
    selfguard.harden_sys_path(path)
    assert path == ["/a", "/b"]


def test_install_paths_cover_the_package_the_interpreter_and_late_imports():
    import h11

    import sandbox

    paths = selfguard.install_paths()

    def covered(path: str) -> bool:
        path = os.path.realpath(path)
        return any(path == p or path.startswith(p + "/") for p in paths)

    assert covered(os.path.dirname(sandbox.__file__))
    assert covered(os.path.dirname(sys.executable))
    assert covered(os.path.dirname(h11.__file__))  # imported by the proxy only
    assert covered(os.path.dirname(os.__file__))
    # outermost first, none inside another
    for p in paths:
        assert not any(p != q and p.startswith(q.rstrip("/") + "/") for q in paths)


def test_the_running_entry_point_hardened_sys_path():
    import subprocess

    out = subprocess.run([sys.executable, "-c", "import sys; import sandbox.__main__; print(sys.path[0])"],
                         capture_output=True, text=True, cwd="/", check=True).stdout.strip()
    assert out != "" and out != "/"
