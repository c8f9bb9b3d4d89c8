"""Record what discovery looked at, so a cached plan can prove it is current.

Every filesystem fact that shapes a plan (a path exists, a directory's
entries, a file's content, where a symlink points) is read through an
``Observer``, which remembers the ``lstat`` stamp of each path involved.  A
cached plan is reused only when every recorded stamp is unchanged: a new
entry changes its directory's mtime, a rewritten file its size or mtime, a
replaced one its inode.  Stamps younger than ``RACY_NS`` are not trusted (a
change within the same clock tick would not move the mtime), so a plan that
depends on one is not cached.

A kernel list has no useful stamp (``/proc/net/unix`` keeps its mtime while
sockets come and go), so for it discovery records a value computed from its
content, as a list (stamps are tuples).  Its owner checks it, not
``still_valid``: the plan cache keeps it apart and asks
``sandbox.hostsockets.appeared`` what is new.
"""

from __future__ import annotations

import os
import time

RACY_NS = 2_000_000_000


def stamp(path: str, full: bool = True):
    """``full``: identity and content (ino, mode, size, mtime); else identity only.

    Identity is enough for a path whose existence or type mattered; a
    directory that was listed or a file that was read needs the full stamp.
    """
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if full:
        # ctime too: a sandboxed command can put a directory's mtime back with
        # utimensat(), but nothing but the kernel sets ctime
        return (st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return (st.st_ino, st.st_mode)


def still_valid(deps) -> bool:
    """Does every recorded stamp still match?  (The hot loop of a cached run.)"""
    lstat = os.lstat
    for path, old in deps:
        if old.__class__ is bytes:  # many directories in one (sandbox.dirstamps)
            from sandbox import dirstamps

            if not dirstamps.valid(old):
                return False
            continue
        if old.__class__ is list:  # what a kernel list said: only its owner can check it
            return False
        try:
            st = lstat(path)
        except OSError:
            if old is not None:
                return False
            continue
        if old is None or st.st_ino != old[0] or st.st_mode != old[1]:
            return False
        if len(old) > 2 and (st.st_size != old[2] or st.st_mtime_ns != old[3]
                             or len(old) < 5 or st.st_ctime_ns != old[4]):
            return False
    return True


def stale_packed(deps) -> list[int] | None:
    """One pass over a plan's dependencies: None when any that is not a packed
    value (``sandbox.dirstamps``) changed, so the plan must be built afresh;
    else the indexes of the packed values that changed (``sandbox.relist``
    lists their changed directories again), empty when all still match."""
    lstat = os.lstat
    stale: list[int] = []
    for i, (path, old) in enumerate(deps):
        if old.__class__ is bytes:
            from sandbox import dirstamps

            if not dirstamps.valid(old):
                stale.append(i)
            continue
        if old.__class__ is list:
            return None
        try:
            st = lstat(path)
        except OSError:
            if old is not None:
                return None
            continue
        if old is None or st.st_ino != old[0] or st.st_mode != old[1]:
            return None
        if len(old) > 2 and (st.st_size != old[2] or st.st_mtime_ns != old[3]
                             or len(old) < 5 or st.st_ctime_ns != old[4]):
            return None
    return stale


class Observer:
    __slots__ = ("seen", "racy_dirs")

    def __init__(self) -> None:
        self.seen: dict[str, object] = {}
        self.racy_dirs = False

    def note_dirs(self, key: str, paths, stamps, found=None, spec=None,
                  now: int | None = None) -> None:
        """Record the listings of many directories at once (``sandbox.dirstamps``).

        With what each held (``found``) and the walk that listed them
        (``spec``: its root and rules), a directory changed within the racy
        window does not keep the plan from being cached: its stamp is kept
        as one that never matches, and the next run lists it again
        (``sandbox.relist``).  Without them, as before: not cached.
        """
        from sandbox import dirstamps

        blob, newest = dirstamps.pack(paths, stamps, found, spec, now)
        self.seen[key + "\0"] = blob  # no real path holds a NUL: never lstat'ed
        if spec is None:
            self.racy_dirs = self.racy_dirs or time.time_ns() - newest < RACY_NS

    def note_walk(self, key: str, root: str, rules, result) -> None:
        """Record a ``scan.walk`` of ``root`` (see ``note_dirs``)."""
        # racy against the walk's start: see scan.Result.started
        self.note_dirs(key, result.dirs, result.stamps, result.found, (root, rules._values()),
                       result.started)

    def note(self, path: str, full: bool = False):
        old = self.seen.get(path, ())
        if old == () or (full and old is not None and len(old) == 2):
            self.seen[path] = stamp(path, full)
        return self.seen[path]

    def note_value(self, path: str, value: list) -> None:
        """Record what a kernel list said (see the module docstring)."""
        self.seen[path] = value

    def note_chain(self, path: str) -> None:
        """Stamp every prefix of ``path``: a symlink anywhere changes its meaning."""
        parts = path.split("/")
        for i in range(2, len(parts) + 1):
            self.note("/".join(parts[:i]) or "/")

    def lexists(self, path: str) -> bool:
        self.note_chain(path)
        return self.seen[path] is not None

    def isdir(self, path: str) -> bool:
        self.realpath(path)
        return os.path.isdir(path)

    def isfile(self, path: str) -> bool:
        self.realpath(path)
        return os.path.isfile(path)

    def realpath(self, path: str) -> str:
        self.note_chain(path)
        try:
            real = os.path.realpath(path)
        except OSError:  # a link swapped for a file mid-way (EINVAL): changing under us
            self.racy_dirs = True  # so this plan is never cached
            return os.path.normpath(path)
        if real != path:
            self.note_chain(real)
        return real

    def listdir(self, path: str) -> list[str]:
        real = self.realpath(path)
        self.note(real, full=True)
        try:
            return sorted(os.listdir(path))
        except OSError:
            return []

    def glob(self, path: str, pattern: str) -> list[str]:
        """The names in directory ``path`` matching ``pattern`` (``sandbox.patterns``).

        The plan depends on which names match, not on the whole listing: a
        file made or removed in ``$HOME`` that no secret pattern names
        (an editor's swap file, a shell's temporary file) changes the
        directory's stamp, and the next run lists it again and keeps the
        plan (``sandbox.relist``).
        """
        from sandbox import dirstamps
        from sandbox.patterns import match

        real = self.realpath(path)
        try:
            st = os.lstat(real)
            if not os.path.isdir(real) or os.path.islink(real):
                raise NotADirectoryError
            names = sorted(n for n in os.listdir(real) if match(n, pattern))
        except OSError:
            self.note(real, full=True)
            return []
        key = f"{real}\0glob\0{pattern}"  # no real path holds a NUL: never lstat'ed
        self.seen[key] = dirstamps.pack_glob(real, pattern,
                                             (st.st_ino, st.st_mtime_ns, st.st_ctime_ns), names)
        return names

    def read(self, path: str, limit: int = 1 << 20) -> str | None:
        from sandbox.safeio import read_text

        real = self.realpath(path)
        self.note(real, full=True)
        return read_text(real, limit)  # not a FIFO, not a device, not through a link

    def deps(self) -> list:
        return sorted(self.seen.items())

    def racy(self) -> bool:
        now = time.time_ns()
        return self.racy_dirs or any(
            s.__class__ is tuple and len(s) > 2 and now - max(s[3:]) < RACY_NS
            for s in self.seen.values())
