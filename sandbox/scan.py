"""Find protected paths, git entries, dotenv files, sockets and FIFOs in a tree, cheaply.

A full walk of a 100k-file workspace costs tens of milliseconds, paid on every
command.  So the walk keeps, per directory, what it found there together with
the directory's inode and mtime.  Adding, removing or renaming an entry
changes the mtime of the directory that holds it, so on the next run a
directory whose stamp is unchanged is not listed again: the walk costs one
``stat`` per directory.  A directory modified within ``RACY_NS`` of the walk
is not trusted next time (a change in the same clock tick would not move its
mtime), the same rule git applies to its index.

The cache lives in the tool's state directory, which the sandboxed command
cannot write; it is keyed by the root and by every rule that affects the
result, and written with ``marshal`` (fast, and it cannot run code on load).
"""

from __future__ import annotations

import marshal
import os
import stat
import sys
import time

from sandbox.patterns import match_any
from sandbox.statefile import sha256_hex

RACY_NS = 2_000_000_000
FORMAT = 5  # 5: FIFOs are findings

# kinds of findings
GIT = "git"  # a .git directory or file
# A directory git might use as a git dir (it holds an entry HEAD that is not a
# directory: git's own first test) or as a common dir (it holds objects and
# refs, which is all git asks of the target of a commondir file).  Git reads
# config and hooks from such a directory, whoever points at it, so the
# persistence audit judges every one (sandbox.audit).  Found everywhere the
# walk goes when rules.find_git is set: inside .git directories and skip_dirs
# too, where nothing else is looked for.
GITDIR = "gitdir"
UNREADABLE = "unreadable"  # a directory the walk could not list
PROTECTED = "protected"  # a protected name (file or directory)
SECRET = "secret"  # a file matching deny_read_names
SOCKET = "socket"  # a unix socket
FIFO = "fifo"  # a named pipe: writable through a read-only mount, like a socket


class Rules:
    """What a walk looks for.  A plain immutable class, not a dataclass: the
    persistence audit walks after every run and should not pay for importing
    ``dataclasses``."""

    __slots__ = ("protected_names", "skip_dirs", "secret_names", "secret_exceptions",
                 "find_git", "max_depth", "exclude")

    def __init__(self, protected_names=(), skip_dirs=(), secret_names=(), secret_exceptions=(),
                 find_git: bool = True, max_depth: int = 4096, exclude=()) -> None:
        values = (tuple(protected_names), tuple(skip_dirs), tuple(secret_names),
                  tuple(secret_exceptions), bool(find_git), int(max_depth), tuple(exclude))
        for name, value in zip(self.__slots__, values):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError("Rules is immutable")

    def _values(self) -> tuple:
        return tuple(getattr(self, n) for n in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rules) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return "Rules(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__) + ")"

    def digest(self) -> str:
        text = repr((FORMAT, sys.version_info[:2], self._values()))
        return sha256_hex(text.encode())[:24]


class Result:
    """What a walk found: (path, kind, is_dir) findings, and which directories it saw.

    ``dirs`` leaves out the directories inside .git and skip_dirs: their
    listings change with every commit or install and decide nothing but
    where git dirs are (the audit looks again after every run).
    """

    __slots__ = ("findings", "dirs_listed", "dirs_reused", "dirs")

    def __init__(self, findings, dirs_listed: int, dirs_reused: int, dirs=()) -> None:
        self.findings = findings
        self.dirs_listed = dirs_listed
        self.dirs_reused = dirs_reused
        self.dirs = dirs  # every directory walked (their stamps decide reuse)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Result) and all(
            getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __repr__(self) -> str:
        return f"Result(findings={self.findings!r}, listed={self.dirs_listed}, reused={self.dirs_reused})"


def _classify(rules: Rules, names: frozenset, entry: os.DirEntry) -> tuple[str | None, bool]:
    """Return (kind or None, descend?) for one directory entry."""
    name = entry.name
    try:
        is_dir = entry.is_dir(follow_symlinks=False)
    except OSError:
        return None, False
    if name == ".git" and rules.find_git:
        return GIT, is_dir  # walked for git dirs only (see _DEEP)
    if name in names:
        return PROTECTED, False
    if is_dir:
        if entry.path in rules.exclude:
            return None, False
        if name in rules.skip_dirs:
            return None, rules.find_git  # walked for git dirs only
        return None, True
    try:
        if entry.is_symlink():
            return None, False
        mode = entry.stat(follow_symlinks=False).st_mode if not entry.is_file(follow_symlinks=False) else 0
    except OSError:
        return None, False
    if mode and stat.S_ISSOCK(mode):
        return SOCKET, False
    if mode and stat.S_ISFIFO(mode):
        return FIFO, False
    if rules.secret_names and match_any(name, rules.secret_names):
        if not match_any(name, rules.secret_exceptions):
            return SECRET, False
    return None, False


def _list(rules: Rules, names: frozenset, path: str, deep: bool = False):
    """List one directory: (subdirectories to walk, findings).

    ``deep``: inside a .git directory or a skip_dir, where only git dirs (and
    directories hidden from us) are looked for, at any depth.
    """
    subdirs, found = [], []
    seen = set()
    head_is_dir = False
    try:
        with os.scandir(path) as it:
            for entry in it:
                name = entry.name
                seen.add(name)
                if deep:
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        is_dir = False
                    if is_dir:
                        subdirs.append(name)
                    if name == "HEAD":
                        head_is_dir = is_dir
                    continue
                kind, descend = _classify(rules, names, entry)
                if name == "HEAD":
                    head_is_dir = entry.is_dir(follow_symlinks=False)
                if kind == GIT and descend:
                    found.append((name, kind, True))
                    subdirs.append(name)
                elif descend:
                    subdirs.append(name)
                elif kind:
                    found.append((name, kind, entry.is_dir(follow_symlinks=False)))
    except PermissionError:
        found.append(("", UNREADABLE, True))  # hidden from us is not the same as empty
    except OSError:
        pass
    # the necessary condition, not git's full test: a superset is safe here
    if rules.find_git and (("HEAD" in seen and not head_is_dir) or {"objects", "refs"} <= seen):
        found.append(("", GITDIR, True))
    return subdirs, found


def _well_formed(entry) -> bool:
    """A cache entry is ((ino, mtime), [subdir names], [(name, kind, is_dir)])."""
    return (isinstance(entry, tuple) and len(entry) == 3 and isinstance(entry[0], tuple)
            and len(entry[0]) == 3 and isinstance(entry[1], list) and isinstance(entry[2], list))


def walk(root: str, rules: Rules, cache_file: str | None) -> Result:
    """Walk ``root`` (a real directory path) and return what ``rules`` look for."""
    old: dict = {}
    if cache_file:
        try:
            with open(cache_file, "rb") as fh:
                loaded = marshal.load(fh)
            if isinstance(loaded, dict) and all(_well_formed(v) for v in loaded.values()):
                old = loaded
        except (OSError, EOFError, ValueError, TypeError):
            old = {}
    names = frozenset(n for n in rules.protected_names if "/" not in n)
    now = time.time_ns()
    new: dict = {}
    findings: list[tuple[str, str, bool]] = []
    listed = reused = 0
    stack = [(root, 0, False)]
    shallow = []
    while stack:
        path, depth, deep = stack.pop()
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            continue
        # ctime as well as mtime: the command can reset mtime (utimensat), not ctime
        stamp = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
        prev = old.get(path)
        if prev is not None and prev[0] == stamp and prev[0][1] != -1:
            subdirs, found = prev[1], prev[2]
            reused += 1
        else:
            subdirs, found = _list(rules, names, path, deep)
            listed += 1
        if not deep:
            shallow.append(path)
        racy = now - max(st.st_mtime_ns, st.st_ctime_ns) < RACY_NS
        new[path] = ((st.st_ino, -1, -1) if racy else stamp, subdirs, found)
        prefix = path.rstrip("/") + "/"
        for name, kind, is_dir in found:
            findings.append((path if name == "" else prefix + name, kind, is_dir))
        if depth < rules.max_depth:
            for name in subdirs:
                stack.append((prefix + name, depth + 1,
                              deep or (rules.find_git
                                       and (name == ".git" or name in rules.skip_dirs))))
    for rel in (n for n in rules.protected_names if "/" in n):
        candidate = os.path.join(root, rel)
        if os.path.lexists(candidate):
            findings.append((candidate, PROTECTED, os.path.isdir(candidate)))
    if cache_file and new != old:
        _store(cache_file, new)
    findings.sort()
    return Result(tuple(findings), listed, reused, tuple(shallow))


def _store(cache_file: str, data: dict) -> None:
    from sandbox import statefile

    statefile.dump(cache_file, data)


def cache_name(root: str, rules: Rules) -> str:
    return sha256_hex(f"{root}\0{rules.digest()}".encode())[:32] + ".scan"
