"""Many directory stamps as one plan dependency, cheap to load and to check.

Secret names are searched below ``skip_dirs`` too, so a plan depends on the
listing of every directory of a ``node_modules`` (tens of thousands).  As
one ``(path, stamp)`` tuple each, loading a cached plan cost more than
checking it (measured: 36 ms to unmarshal 12,600 entries, 24 ms to lstat
them).  Here they are one ``bytes`` value: the stamps as an array of 64-bit
integers, then the paths joined by NUL; loading it is one copy, and the
check is one ``lstat`` and three integer comparisons per directory.

A stamp is (inode, mtime, ctime), taken by the walk *before* it listed the
directory, so a change made while it was being listed shows up next time.
"""

from __future__ import annotations

import os

_MAGIC = b"DS1\0"


def pack(paths, stamps) -> tuple[bytes, int]:
    """(blob, newest mtime or ctime): the caller decides whether that is too
    recent to trust (``sandbox.observe``)."""
    from array import array  # only when planning: it imports collections.abc (1.5 ms)

    values = array("q")
    newest = 0
    for ino, mtime, ctime in stamps:
        newest = max(newest, mtime, ctime)
        values.extend((ino, mtime, ctime))
    if values.itemsize != 8:  # pragma: no cover - every Linux platform we run on
        raise RuntimeError("array('q') is not 64-bit here")
    names = "\0".join(paths).encode("utf-8", "surrogateescape")
    return (_MAGIC + len(paths).to_bytes(4, "little") + values.tobytes() + names), newest


def valid(blob: bytes) -> bool:
    """Is every directory in ``blob`` still what it was?"""
    if blob[:4] != _MAGIC:
        return False
    count = int.from_bytes(blob[4:8], "little")
    end = 8 + 24 * count
    if count == 0:
        return True
    stamps = memoryview(blob)[8:end].cast("q")
    paths = blob[end:].decode("utf-8", "surrogateescape").split("\0")
    if len(paths) != count:
        return False
    lstat = os.lstat
    i = 0
    for path in paths:
        try:
            st = lstat(path)
        except OSError:
            return False
        if st.st_ino != stamps[i] or st.st_mtime_ns != stamps[i + 1] or st.st_ctime_ns != stamps[i + 2]:
            return False
        i += 3
    return True
