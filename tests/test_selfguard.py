"""sandbox.selfguard: nothing the command can write is on the sandbox's own import path."""

from __future__ import annotations

import os
import sys

from sandbox import selfguard

STDLIB = os.path.dirname(os.__file__)


def test_only_the_stdlib_and_site_packages_stay_on_the_path():
    trusted = [STDLIB, STDLIB + "/lib-dynload", "/venv/site-packages"]
    zipped = os.path.join(os.path.dirname(STDLIB), "python3X.zip")
    path = ["", "/ws", "/pythonpath", zipped, STDLIB, STDLIB + "/lib-dynload",
            "/venv/site-packages", "/src/editable-project", "/elsewhere/lib.zip"]
    selfguard.harden_sys_path(path, trusted)
    assert path == [zipped, STDLIB, STDLIB + "/lib-dynload", "/venv/site-packages"]


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


def test_the_running_entry_point_hardened_sys_path(tmp_path):
    import subprocess

    code = "import sys; import sandbox.__main__; print(repr(sys.path))"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(tmp_path), env=env, check=True).stdout.strip()
    path = eval(out)  # noqa: S307 - our own repr of a list of strings
    assert str(tmp_path) not in path and "" not in path
    assert os.path.dirname(os.__file__) in path
