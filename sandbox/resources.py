"""Where the shipped data lives: in the wheel, or in the source tree.

The wheel carries ``profiles/``, ``bwrap/``, ``seatbelt/`` and ``docs/`` (with
the README) under ``sandbox/_data/`` (see pyproject.toml); a source checkout
keeps them at the top of the repository.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    installed = _PKG / "_data" / name
    if installed.is_dir():
        return installed
    return _PKG.parent / name


def profiles_dir() -> Path:
    return data_dir("profiles")


def bwrap_dir() -> Path:
    return data_dir("bwrap")


def doc(name: str) -> str:
    """Where the user can read ``name`` (``profiles.md``, ``README.md``...):
    the copy installed with the package, or the source tree's."""
    installed = _PKG / "_data" / "docs" / name
    if installed.is_file():
        return str(installed)
    source = _PKG.parent / ("README.md" if name == "README.md" else f"docs/{name}")
    return str(source)
