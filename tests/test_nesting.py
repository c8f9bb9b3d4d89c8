"""``sandbox run`` inside ``sandbox run`` says so instead of blaming AppArmor or Docker."""

from __future__ import annotations

from conftest import sandbox_exe

NESTED = "already inside a sandbox"


def test_nested_run_is_diagnosed(senv):
    r = senv.run([sandbox_exe(), "run", "--", "touch", "made"])
    assert r.returncode == 125, r.stderr
    line = r.stderr.decode().strip().splitlines()[-1]
    assert line.startswith("sandbox: setup error: ") and NESTED in line
    assert "AppArmor" not in line and "docker" not in line
    assert not (senv.ws / "made").exists()


def test_nested_run_is_diagnosed_without_the_environment_marker(senv):
    """The command can remove SANDBOX_ACTIVE; the diagnosis does not depend on it."""
    r = senv.run(["env", "-u", "SANDBOX_ACTIVE", sandbox_exe(), "run", "--", "true"])
    assert r.returncode == 125
    assert NESTED in r.stderr.decode()


def test_outside_a_sandbox_nothing_is_nested():
    from sandbox.linux import nesting

    assert nesting.inside_sandbox() is False
