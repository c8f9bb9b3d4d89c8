"""Bring a cached plan's directory stamps up to date by re-listing only what changed.

A plan depends on the listing of every directory discovery walked (the
workspace for secrets, protected names and git entries; the host's
``[sockets] scan`` roots for FIFOs and sockets), but only through what each
directory *held*: its findings (``scan.Result.found``) and which
subdirectories the walk went on into.  A new source file, an editor's
atomic save, a build's output, a settings file rewritten under
``~/.config`` change a directory's mtime and none of that.  So when a
directory's stamp no longer matches, this module lists that one directory
again, with the walk's own rules and in the mode and depth the walk would
reach it in, and compares:

- its findings against the digest the plan kept (``sandbox.dirstamps``):
  different means the plan would be different, so the caller plans afresh;
- its subdirectories against the plan's directories below it: a new one is
  walked (the same walk, from there), and must hold no findings at any
  depth; one that went away (removed, renamed, replaced by a symlink) must
  have held none, and its directories are dropped.

When all of that holds, the walk a fresh plan would make finds exactly
what the cached plan was built from, so the plan is byte for byte what a
fresh build would give (tests/test_relist.py checks this against random
edit sequences), and only its stamps change.  Anything this module cannot
decide (a root gone, a walk without its rules, a subdirectory walked
without a stamp of its own) means "plan afresh": it never guesses.

Everything a plan depends on *besides* directory listings (files read,
symlinks, profile files, git configs, identity stamps) is still checked by
``sandbox.observe.stale_packed`` and still throws the plan away.
"""

from __future__ import annotations

import os
import stat

from sandbox import dirstamps, scan

_S_ISDIR = stat.S_ISDIR


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def refresh(blob: bytes, now: int | None = None) -> bytes | None:
    """``blob`` with its stamps brought up to date, or None: the plan must be rebuilt.

    Returns ``blob`` itself when nothing needs storing (directories listed
    again whose stamps are still too young to keep).  The cost is one
    ``lstat`` per directory (as for checking the plan at all), plus one
    ``scandir`` per changed directory and a walk of each new one.
    """
    if now is None:
        # taken before any lstat or listing, as scan.walk does: a stamp is
        # trusted only if it was already RACY_NS old when its directory was
        # listed; the time after a long walk of a new subtree would trust a
        # directory listed within a clock tick of its last change (a second
        # change in that tick keeps the stamp and would never be seen)
        import time

        now = time.time_ns()
    if blob[:4] == dirstamps._GLOB:
        return _refresh_glob(blob, now)
    parts = dirstamps.unpack(blob)
    if parts is None or parts[3] is None:
        return None
    paths, flat, digests, spec = parts
    lstat = os.lstat
    stale = []  # (depth, index, stat result or None)
    for i, path in enumerate(paths):
        try:
            st = lstat(path)
        except OSError:
            stale.append((path.count("/"), i, None))
            continue
        j = 3 * i
        if st.st_ino != flat[j] or st.st_mtime_ns != flat[j + 1] or st.st_ctime_ns != flat[j + 2]:
            stale.append((path.count("/"), i, st))
    if not stale:
        return blob
    root, values = spec
    rules = scan.Rules(*values)
    names = scan.protected_names(rules)
    known = set(paths)
    # A directory of the blob that is no longer walked below its parent was
    # removed, renamed or replaced, so its own stamp changed too: the stale
    # entries are the only candidates (same stamp: same inode, still a
    # directory at that name, so still walked).
    children: dict[str, list[str]] = {}
    for _depth, i, _st in stale:
        if paths[i] != root:
            children.setdefault(paths[i].rpartition("/")[0] or "/", []).append(paths[i])
    gone: set[str] = set()  # directories the walk no longer reaches
    new_stamps: dict[int, tuple[int, int, int]] = {}
    added_paths: list[str] = []
    added_stamps: list[tuple[int, int, int]] = []
    stale.sort()  # parents before their children
    for _depth, i, st in stale:
        path = paths[i]
        if path in gone:
            continue
        if st is None or not _S_ISDIR(st.st_mode):
            return None  # its parent still lists it, or it is the root: plan afresh
        mode, depth = scan.mode_of(rules, names, root, path)
        try:
            if len(os.fsencode(path)) >= scan.LONG_PATH:
                fd = scan.open_long(path)
                try:
                    subdirs, found = scan._list(rules, names, fd, mode)
                finally:
                    os.close(fd)
            else:
                subdirs, found = scan._list(rules, names, path, mode)
        except OSError:
            return None
        if dirstamps.found_digest(found) != digests[16 * i:16 * i + 16]:
            return None  # it holds something else now: a fresh plan decides
        new_stamps[i] = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
        walked = set()
        if depth < rules.max_depth:
            prefix = path.rstrip("/") + "/"
            for name in subdirs:
                child = prefix + name
                child_mode = scan.child_mode(rules, names, mode, name)
                if not scan.stamped(rules, child_mode):
                    # a .git (a git dir's own walk): its entry is among the
                    # findings compared above.  Anything else walked without
                    # a stamp cannot be checked here.
                    if child_mode == scan.GIT_ONLY and name == ".git":
                        continue
                    return None
                walked.add(child)
                if child in known and child not in gone:
                    continue
                sub = scan.walk(child, rules, None, child_mode, depth + 1)
                if sub.findings:
                    return None
                added_paths.extend(sub.dirs)
                added_stamps.extend(sub.stamps)
        for top in children.get(path, ()):
            if top in walked or top in gone:
                continue
            # no longer walked: it and every directory below it held nothing
            for m, p in enumerate(paths):
                if _within(p, top):
                    if digests[16 * m:16 * m + 16] != dirstamps.NO_FINDINGS:
                        return None
                    gone.add(p)
    if not gone and not added_paths:
        return _patched(blob, new_stamps, now)
    keep = [i for i in range(len(paths)) if paths[i] not in gone]
    stamps = [new_stamps.get(i) or (flat[3 * i], flat[3 * i + 1], flat[3 * i + 2]) for i in keep]
    out, _newest = dirstamps.pack(
        [paths[i] for i in keep] + added_paths, stamps + added_stamps,
        b"".join(digests[16 * i:16 * i + 16] for i in keep)
        + dirstamps.NO_FINDINGS * len(added_paths), spec, now)
    return out


def _refresh_glob(blob: bytes, now: int | None) -> bytes | None:
    """A directory that counts through the names matching a pattern: list it
    again and keep the plan if the same names match."""
    from sandbox.patterns import match

    parts = dirstamps.unpack_glob(blob)
    if parts is None:
        return None
    path, pattern, _old, digest = parts
    try:
        st = os.lstat(path)
        if not _S_ISDIR(st.st_mode):
            return None
        names = [n for n in os.listdir(path) if match(n, pattern)]
    except OSError:
        return None
    if dirstamps.names_digest(names) != digest:
        return None
    new = dirstamps.pack_glob(path, pattern, (st.st_ino, st.st_mtime_ns, st.st_ctime_ns),
                              names, now)
    return blob if new == blob else new


def _patched(blob: bytes, new_stamps: dict, now: int | None) -> bytes:
    """``blob`` with some stamps replaced in place (no directory came or went)."""
    import time

    now = time.time_ns() if now is None else now
    out = bytearray(blob)
    count = int.from_bytes(blob[4:8], "little")
    stamps = memoryview(out)[dirstamps._HEADER:dirstamps._HEADER + 24 * count].cast("q")
    for i, (ino, mtime, ctime) in new_stamps.items():
        if now - max(mtime, ctime) < dirstamps.RACY_NS:
            mtime = ctime = -1  # too young to trust: listed again next time
        stamps[3 * i] = ino
        stamps[3 * i + 1] = mtime
        stamps[3 * i + 2] = ctime
    stamps.release()
    patched = bytes(out)
    return blob if patched == blob else patched


def refresh_deps(deps, stale: list[int]) -> tuple | None:
    """A plan's dependencies with the packed values at ``stale`` (from
    ``sandbox.observe.stale_packed``) brought up to date, or None: plan afresh."""
    out = list(deps)
    for i in stale:
        new = refresh(deps[i][1])
        if new is None:
            return None
        out[i] = (deps[i][0], new)
    return tuple(out)
