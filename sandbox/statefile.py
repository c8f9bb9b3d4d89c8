"""Files in the state directory: written whole or not at all, read back safely.

Plans, cached policies, scan caches and pending audits all live in
``$XDG_CACHE_HOME/sandbox``, outside every writable root.  They are written
with ``marshal`` (fast, and loading it cannot run code, unlike pickle) to a
temporary name and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import marshal
import os


def dump(path: str, data, *, must_succeed: bool = False) -> bool:
    """Atomically write ``data``; False (or the error, with must_succeed) on failure."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(tmp, "wb") as fh:
            marshal.dump(data, fh)
        os.replace(tmp, path)
        return True
    except (OSError, ValueError):
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if must_succeed:
            raise
        return False


def write_readonly(path: str, data: bytes) -> None:
    """Atomically write ``data`` as a read-only (0444) file; raise OSError."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o444)
    os.replace(tmp, path)


def sha256_hex(data: bytes) -> str:
    """Hex digest for cache keys (the hot path cannot afford importing hashlib)."""
    try:
        from _sha256 import sha256  # the C builtin: cheaper to import than hashlib
    except ImportError:  # pragma: no cover
        from hashlib import sha256
    return sha256(data).hexdigest()


def load(path: str):
    """The data in ``path``, or None if it is missing or unreadable.

    The file is read whole and then unmarshalled: ``marshal.load`` on a file
    object reads it piece by piece through Python-level calls, ten times
    slower (a 19 KB plan: 0.5 ms against 0.05 ms measured here).  Every
    reader of a state file does the same.
    """
    try:
        with open(path, "rb") as fh:
            return marshal.loads(fh.read())
    except (OSError, EOFError, ValueError, TypeError):
        return None
