"""The shipped data (profiles/, bwrap/) is found both in a checkout and in an installed wheel."""

from __future__ import annotations

from pathlib import Path

import pytest

import sandbox
from conftest import REPO
from sandbox import discover, resources


def test_profiles_and_bwrap_data_are_found():
    assert {"default", "readonly"} <= {p.stem for p in resources.profiles_dir().glob("*.toml")}
    assert (resources.bwrap_dir() / "refused-paths.txt").is_file()
    assert (resources.bwrap_dir() / "seccomp.toml").is_file()
    exact, trees = discover.refused_paths()
    assert "/" in exact and "/proc" in trees


def test_installed_wheel_carries_the_data():
    package = Path(sandbox.__file__).resolve().parent
    if package.parent == REPO.resolve():
        pytest.skip("running from the source tree (editable install); scripts/setup installs a wheel")
    assert resources.profiles_dir() == package / "_data" / "profiles"
    assert resources.bwrap_dir() == package / "_data" / "bwrap"
    for name in ("default.toml", "readonly.toml"):
        shipped = (REPO / "profiles" / name).read_text()
        assert (package / "_data" / "profiles" / name).read_text() == shipped
