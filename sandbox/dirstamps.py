"""Many directory stamps as one plan dependency, cheap to load and to check.

Secret names are searched below ``skip_dirs`` too, so a plan depends on the
listing of every directory of a ``node_modules`` (tens of thousands).  As
one ``(path, stamp)`` tuple each, loading a cached plan cost more than
checking it (measured: 36 ms to unmarshal 12,600 entries, 24 ms to lstat
them).  Here they are one ``bytes`` value: the stamps as an array of 64-bit
integers, a digest of what each directory held, the paths joined by NUL,
and the walk that listed them; loading it is one copy, and the check is one
``lstat`` and three integer comparisons per directory.

A stamp is (inode, mtime, ctime), taken by the walk *before* it listed the
directory, so a change made while it was being listed shows up next time.
In a blob that carries its walk, a stamp younger than ``RACY_NS`` is
stored as (inode, -1, -1), which never
matches: a change in the same clock tick would not move the mtime, so that
directory is listed again by the next run (``sandbox.relist``), at the cost
of one ``scandir``, instead of keeping the whole plan from being cached.

The digest is of the directory's own findings (``scan.Result.found``: the
secrets, protected names, git entries, sockets and FIFOs in it), 16 bytes
of SHA-256 (a sandboxed command names the files, so it must not be able to
make two listings collide), or 16 zero bytes when it held none.  With the
walk's root and rules (marshalled at the end) that is all
``sandbox.relist`` needs to decide whether a changed directory changes the
plan.  A blob without a walk (``spec`` None) is only ever valid or not.
"""

from __future__ import annotations

import os

_MAGIC = b"DS2\0"
_GLOB = b"GL1\0"  # one directory, where only the names matching a pattern count
RACY_NS = 2_000_000_000  # the same window as sandbox.observe and sandbox.scan
NO_FINDINGS = bytes(16)
_HEADER = 12  # magic, count, length of the marshalled walk


def found_digest(found) -> bytes:
    """16 bytes naming what one directory held (NO_FINDINGS for nothing)."""
    if not found:
        return NO_FINDINGS
    from sandbox.statefile import sha256_hex

    text = repr(sorted(tuple(f) for f in found))
    return bytes.fromhex(sha256_hex(text.encode("utf-8", "surrogatepass"))[:32])


def pack(paths, stamps, founds=None, spec=None, now: int | None = None) -> tuple[bytes, int]:
    """(blob, newest mtime or ctime).

    ``founds`` (one list per path) and ``spec`` (the walk's root and rules,
    plain data) make the blob refreshable; ``digests`` may be given instead
    of ``founds`` as ``bytes`` (16 per path).  In a refreshable blob racy
    stamps are stored so that they never match; without one the caller
    decides from ``newest`` whether to trust them.
    """
    import marshal
    import time
    from array import array  # only when planning: it imports collections.abc (1.5 ms)

    now = time.time_ns() if now is None else now
    values = array("q")
    newest = 0
    for ino, mtime, ctime in stamps:
        newest = max(newest, mtime, ctime)
        if spec is not None and mtime != -1 and now - max(mtime, ctime) < RACY_NS:
            mtime = ctime = -1
        values.extend((ino, mtime, ctime))
    if values.itemsize != 8:  # pragma: no cover - every Linux platform we run on
        raise RuntimeError("array('q') is not 64-bit here")
    if isinstance(founds, bytes):
        digests = founds
    elif founds is None:
        digests = NO_FINDINGS * len(paths)
    else:
        digests = b"".join(found_digest(f) for f in founds)
    walk = marshal.dumps(spec) if spec is not None else b""
    names = "\0".join(paths).encode("utf-8", "surrogateescape")
    return (_MAGIC + len(paths).to_bytes(4, "little") + len(walk).to_bytes(4, "little")
            + values.tobytes() + digests + walk + names), newest


def unpack(blob: bytes):
    """(paths, stamps as a flat list of ints, digests, spec) or None if malformed."""
    import marshal

    if blob[:4] != _MAGIC or len(blob) < _HEADER:
        return None
    count = int.from_bytes(blob[4:8], "little")
    walk_len = int.from_bytes(blob[8:12], "little")
    end = _HEADER + 24 * count
    digests_end = end + 16 * count
    names_at = digests_end + walk_len
    if len(blob) < names_at:
        return None
    stamps = memoryview(blob)[_HEADER:end].cast("q").tolist()
    try:
        spec = marshal.loads(blob[digests_end:names_at]) if walk_len else None
    except (EOFError, ValueError, TypeError):
        return None
    paths = blob[names_at:].decode("utf-8", "surrogateescape").split("\0") if count else []
    if len(paths) != count:
        return None
    return paths, stamps, blob[end:digests_end], spec


def names_digest(names) -> bytes:
    from sandbox.statefile import sha256_hex

    text = "\0".join(sorted(names)) + "\0"
    return bytes.fromhex(sha256_hex(text.encode("utf-8", "surrogateescape"))[:32])


def pack_glob(path: str, pattern: str, stamp: tuple[int, int, int], names,
              now: int | None = None) -> bytes:
    """One directory whose listing counts only through the names matching
    ``pattern`` (a secret pattern such as ``~/.*_history``): a file made or
    removed there that does not match changes its stamp, not the plan.
    ``stamp`` is taken before listing; a young one is stored as never matching."""
    import time

    now = time.time_ns() if now is None else now
    ino, mtime, ctime = stamp
    if now - max(mtime, ctime) < RACY_NS:
        mtime = ctime = -1
    raw = b"".join(v.to_bytes(8, "little", signed=True) for v in (ino, mtime, ctime))
    text = f"{path}\0{pattern}".encode("utf-8", "surrogateescape")
    return _GLOB + raw + names_digest(names) + text


def unpack_glob(blob: bytes):
    """(path, pattern, (ino, mtime, ctime), digest) or None."""
    if blob[:4] != _GLOB or len(blob) < 44:
        return None
    stamp = tuple(int.from_bytes(blob[i:i + 8], "little", signed=True) for i in (4, 12, 20))
    path, _, pattern = blob[44:].decode("utf-8", "surrogateescape").partition("\0")
    return path, pattern, stamp, blob[28:44]


def _glob_valid(blob: bytes) -> bool:
    parts = unpack_glob(blob)
    if parts is None:
        return False
    try:
        st = os.lstat(parts[0])
    except OSError:
        return False
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns) == parts[2]


def valid(blob: bytes) -> bool:
    """Is every directory in ``blob`` still what it was?"""
    if blob[:4] != _MAGIC or len(blob) < _HEADER:
        return blob[:4] == _GLOB and _glob_valid(blob)
    count = int.from_bytes(blob[4:8], "little")
    if count == 0:
        return True
    end = _HEADER + 24 * count
    names_at = end + 16 * count + int.from_bytes(blob[8:12], "little")
    if len(blob) < names_at:
        return False
    stamps = memoryview(blob)[_HEADER:end].cast("q")
    paths = blob[names_at:].decode("utf-8", "surrogateescape").split("\0")
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
