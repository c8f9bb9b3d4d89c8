"""The per-workspace tool caches: where they are, what they hold, removing them.

Each workspace whose profile has ``[caches]`` gets
``<state>/workspaces/<sha256(workspace)[:16]>/``, bound writable into its
runs (pip, npm, cargo... point there).  Next to it, ``<key>.workspace`` names
the workspace in plain text, so ``sandbox cache list`` can say whose cache
it is.  That record lies outside the cache directory, where the command
cannot rewrite it.

The CLI (``sandbox cache list|clean``) is in ``sandbox.cli``; this module
does the work and never prints.
"""

from __future__ import annotations

import os
import stat

from sandbox.statefile import sha256_hex

RECORD = ".workspace"


def root(state: str) -> str:
    return os.path.join(state, "workspaces")


def key(workspace: str) -> str:
    return sha256_hex(workspace.encode())[:16]


def cache_dir(state: str, workspace: str) -> str:
    return os.path.join(root(state), key(workspace))


def prepare(state: str, workspace: str, subdirs) -> str:
    """Create the workspace's cache directory and its subdirectories; return it."""
    path = cache_dir(state, workspace)
    for sub in subdirs:
        os.makedirs(os.path.join(path, sub), mode=0o700, exist_ok=True)
    os.makedirs(path, mode=0o700, exist_ok=True)
    record = path + RECORD
    try:
        with open(record, encoding="utf-8") as fh:
            if fh.read() == workspace:
                return path
    except (OSError, UnicodeDecodeError):
        pass
    tmp = f"{record}.{os.getpid()}.tmp"
    try:  # written whole or not at all; only a label for 'cache list'
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(workspace)
        os.replace(tmp, record)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return path


class Entry:
    """One cache directory: its key, path, workspace (None if unknown) and size."""

    __slots__ = ("key", "path", "workspace", "size")

    def __init__(self, key: str, path: str, workspace: str | None, size: int) -> None:
        self.key = key
        self.path = path
        self.workspace = workspace
        self.size = size

    @property
    def gone(self) -> bool:
        """The workspace no longer exists (its cache can only be found by key now)."""
        return self.workspace is not None and not os.path.isdir(self.workspace)


def _size(path: str) -> int:
    """Bytes on disk under ``path``, like du: symlinks not followed, hard links once."""
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if st.st_nlink > 1:
                        if (st.st_dev, st.st_ino) in seen:
                            continue
                        seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(entry.path)
        except OSError:
            continue
    return total


def _workspace_of(path: str) -> str | None:
    try:
        with open(path + RECORD, encoding="utf-8") as fh:
            text = fh.read(8192)
    except (OSError, UnicodeDecodeError):
        return None
    return text if text.startswith("/") and "\n" not in text else None


def entries(state: str) -> list[Entry]:
    """Every cache directory in ``state``, largest first."""
    base = root(state)
    try:
        names = os.listdir(base)
    except OSError:
        return []
    out = []
    for name in names:
        path = os.path.join(base, name)
        if len(name) != 16 or not os.path.isdir(path) or os.path.islink(path):
            continue
        out.append(Entry(name, path, _workspace_of(path), _size(path)))
    out.sort(key=lambda e: (-e.size, e.workspace or "", e.key))
    return out


class Busy(Exception):
    """A run in that workspace is active: its cache is in use."""


def remove(state: str, entry: Entry) -> None:
    """Delete one cache directory (and its record); raise Busy if a run uses it.

    Under the workspace's run lock, the directory is renamed out of the way
    (runs starting meanwhile wait for that instant, then make a fresh one);
    the slow part, deleting what the command wrote, happens after.
    """
    from sandbox import runlock

    lock = runlock.try_exclusive(state, entry.workspace) if entry.workspace else None
    if entry.workspace and lock is None and runlock.busy(state, entry.workspace):
        raise Busy(entry.workspace)
    trash = os.path.join(root(state), f".trash-{entry.key}-{os.getpid()}")
    try:
        os.rename(entry.path, trash)
        try:
            os.unlink(entry.path + RECORD)
        except FileNotFoundError:
            pass
    finally:
        runlock.release(lock)
    _remove_tree(trash)


def remove_leftovers(state: str) -> int:
    """Delete what an interrupted clean left (``.trash-*``); return how many."""
    base = root(state)
    try:
        names = [n for n in os.listdir(base) if n.startswith(".trash-")]
    except OSError:
        return 0
    for name in names:
        _remove_tree(os.path.join(base, name))
    return len(names)


def _remove_tree(path: str) -> None:
    """rmtree that also removes what the command made read-only (Go's module
    cache is 0555 directories), never following a symlink it finds."""
    import shutil
    import sys

    def make_writable(_func, failed, _exc) -> None:
        try:
            os.chmod(os.path.dirname(failed), 0o700)  # removing an entry needs its directory
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, 0o700)
                _rmtree(failed)
            else:
                os.unlink(failed)
        except FileNotFoundError:
            pass

    def _rmtree(target: str) -> None:
        if sys.version_info >= (3, 12):
            shutil.rmtree(target, onexc=make_writable)
        else:
            shutil.rmtree(target, onerror=make_writable)

    _rmtree(path)


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover
