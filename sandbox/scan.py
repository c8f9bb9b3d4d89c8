"""Find protected paths, git entries, dotenv files, sockets and FIFOs in a tree, cheaply.

A full walk of a 100k-file workspace costs tens of milliseconds, paid on every
command.  So the walk keeps, per directory, what it found there together with
the directory's inode and mtime.  Adding, removing or renaming an entry
changes the mtime of the directory that holds it, so on the next run a
directory whose stamp is unchanged is not listed again: the walk costs one
``stat`` per directory.  A directory modified within ``RACY_NS`` of the walk
is not trusted next time (a change in the same clock tick would not move its
mtime), the same rule git applies to its index.

With ``secrets_everywhere``, secrets are looked for everywhere below a root:
inside ``skip_dirs`` and protected directories too, where nothing else is (a
``.env`` in ``node_modules/pkg/`` or ``.devcontainer/`` is as secret as one at
the top).  A symlink is a secret when its own name or the last name of the
path it holds is one (``.env -> /vault/app``, ``config.txt -> ../.env``):
discovery then hides the file it leads to (``sandbox.secretfiles``).

When no directory of a walk changed at all, its whole result is kept
beside that cache (a summary checked with one ``lstat`` per directory), so
the walk does not even load the per-directory cache.  A plan keeps a digest
of what each directory held, so a changed one can be listed again alone
(``sandbox.relist``).

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
FORMAT = 7  # 7: walks past PATH_MAX; 6: FIFOs are findings
# Paths at least this long (in bytes) are opened one component at a time
# (openat), never whole: PATH_MAX (4096) is no limit to where git can find a
# git dir (a chain of short symlinks reaches a directory whose real path is
# longer), so it must be none to the walk either.
LONG_PATH = 3000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC

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
# A .git entry where nothing else is looked for (inside a skip_dir, a .git
# directory or a protected directory): discovery leaves these alone, the
# persistence audit takes the directory holding one for a work tree root.
GIT_BURIED = "git-buried"
UNREADABLE = "unreadable"  # a directory the walk could not list
PROTECTED = "protected"  # a protected name (file or directory)
SECRET = "secret"  # a file matching deny_read_names
SECRET_LINK = "secret-link"  # a symlink whose name or target's name matches deny_read_names
SOCKET = "socket"  # a unix socket
FIFO = "fifo"  # a named pipe: writable through a read-only mount, like a socket

# How a directory is walked.  A directory's mode follows from the names
# between it and the root, so a cached listing is always reused in the mode
# it was made in.
FULL = 0  # everything the rules look for
SKIPPED = 1  # inside a skip_dir: git dirs, and (secrets_everywhere) secrets and sockets
SECRETS = 2  # inside a protected directory (secrets_everywhere): secrets and sockets
GIT_ONLY = 3  # inside a .git directory: git dirs


class Rules:
    """What a walk looks for.  A plain immutable class, not a dataclass: the
    persistence audit walks after every run and should not pay for importing
    ``dataclasses``."""

    __slots__ = ("protected_names", "skip_dirs", "secret_names", "secret_exceptions",
                 "find_git", "max_depth", "exclude", "secrets_everywhere")

    def __init__(self, protected_names=(), skip_dirs=(), secret_names=(), secret_exceptions=(),
                 find_git: bool = True, max_depth: int = 1 << 62, exclude=(),
                 secrets_everywhere: bool = False) -> None:
        # secrets_everywhere: also search skip_dirs and protected directories
        # for secret names (discovery does; the persistence audit needs no
        # secrets there)
        values = (tuple(protected_names), tuple(skip_dirs), tuple(secret_names),
                  tuple(secret_exceptions), bool(find_git), int(max_depth), tuple(exclude),
                  bool(secrets_everywhere))
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

    def deep_secrets(self) -> bool:
        return bool(self.secrets_everywhere and self.secret_names)

    def digest(self) -> str:
        text = repr((FORMAT, sys.version_info[:2], self._values()))
        return sha256_hex(text.encode())[:24]


class Result:
    """What a walk found: (path, kind, is_dir) findings, and which directories it saw.

    ``dirs`` leaves out the directories inside .git, and those inside
    skip_dirs unless secrets are searched there: their listings change with
    every commit or install and decide nothing but where git dirs are (the
    audit looks again after every run).  Where secrets are searched, a new
    one must change the plan, so their stamps count.
    """

    __slots__ = ("findings", "dirs_listed", "dirs_reused", "dirs", "stamps", "found", "started")

    def __init__(self, findings, dirs_listed: int, dirs_reused: int, dirs=(), stamps=(),
                 found=(), started: int | None = None) -> None:
        self.findings = findings
        self.dirs_listed = dirs_listed
        self.dirs_reused = dirs_reused
        self.dirs = dirs  # every directory walked (their stamps decide reuse)
        # (inode, mtime, ctime) of each of dirs, taken before it was listed
        self.stamps = stamps
        # what each of dirs held itself ([(name, kind, is_dir)]): a plan keeps a
        # digest of it, so a changed directory can be re-listed and compared
        # instead of planning again (sandbox.relist)
        self.found = found
        # time.time_ns() before the first stamp was taken: a stamp is judged
        # racy against it, not against the walk's end (a long walk would
        # otherwise trust a directory listed within a tick of its change)
        self.started = started

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Result) and all(
            getattr(self, n) == getattr(other, n) for n in self.__slots__ if n != "started")

    def __repr__(self) -> str:
        return f"Result(findings={self.findings!r}, listed={self.dirs_listed}, reused={self.dirs_reused})"


def _is_secret(rules: Rules, name: str) -> bool:
    return match_any(name, rules.secret_names) and not match_any(name, rules.secret_exceptions)


def _secret_link(rules: Rules, entry: os.DirEntry, dir_fd: int | None = None) -> bool:
    """Does the link's own name, or the last name in the path it holds, say secret?

    The directory's stamp covers the link text (a link cannot be changed in
    place, only replaced), so this is cached with the listing.
    """
    if _is_secret(rules, entry.name):
        return True
    try:
        text = (os.readlink(entry.path) if dir_fd is None
                else os.readlink(entry.name, dir_fd=dir_fd))
    except OSError:
        return False
    return _is_secret(rules, text.rpartition("/")[2])


def _leaf(rules: Rules, entry: os.DirEntry, dir_fd: int | None = None) -> str | None:
    """A secret, a secret-named link, a socket or a FIFO (an entry that is not a directory)."""
    try:
        if entry.is_symlink():
            return (SECRET_LINK if rules.secret_names and _secret_link(rules, entry, dir_fd)
                    else None)
        mode = entry.stat(follow_symlinks=False).st_mode if not entry.is_file(follow_symlinks=False) else 0
    except OSError:
        return None
    if mode and stat.S_ISSOCK(mode):
        return SOCKET
    if mode and stat.S_ISFIFO(mode):
        return FIFO
    if rules.secret_names and _is_secret(rules, entry.name):
        return SECRET
    return None


def _classify(rules: Rules, names: frozenset, entry: os.DirEntry,
              dir_fd: int | None = None) -> tuple[str | None, bool]:
    """Return (kind or None, descend?) for one directory entry of a FULL directory."""
    name = entry.name
    try:
        is_dir = entry.is_dir(follow_symlinks=False)
    except OSError:
        return None, False
    if name == ".git" and rules.find_git:
        return GIT, is_dir  # walked for git dirs only
    if name in names:
        # walked for secrets and git dirs only: a git dir planted in a new
        # .vscode/ must be found even when the audit leaves .vscode/ itself
        # alone (its class turned off, or --unprotect)
        return PROTECTED, is_dir and (rules.deep_secrets() or rules.find_git)
    if is_dir:
        if entry.path in rules.exclude:
            return None, False
        if name in rules.skip_dirs:
            return None, rules.find_git or rules.deep_secrets()  # git dirs, secrets
        return None, True
    return _leaf(rules, entry, dir_fd), False


def child_mode(rules: Rules, names: frozenset, mode: int, name: str) -> int:
    if mode == GIT_ONLY or (name == ".git" and rules.find_git):
        return GIT_ONLY
    if mode != FULL:
        return mode
    if name in rules.skip_dirs:
        return SKIPPED
    return SECRETS if name in names else FULL


def _list(rules: Rules, names: frozenset, path, mode: int = FULL):
    """List one directory (a path, or a descriptor for a long one): (subdirectories
    to walk, findings).

    Outside FULL mode only directories, git dirs and .git entries (with
    find_git), secrets and sockets (SKIPPED and SECRETS with
    secrets_everywhere) and directories hidden from us are looked for, at
    any depth.
    """
    subdirs, found = [], []
    seen = set()
    head_is_dir = False
    leaves = mode in (SKIPPED, SECRETS) and rules.deep_secrets()
    dir_fd = path if isinstance(path, int) else None
    try:
        with os.scandir(path) as it:
            for entry in it:
                name = entry.name
                seen.add(name)
                if mode != FULL:
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        is_dir = False
                    if name == "HEAD":
                        head_is_dir = is_dir
                    if name == ".git" and rules.find_git:
                        found.append((name, GIT_BURIED, is_dir))
                    if is_dir:
                        # a git dependency's .git in a skip_dir: its git dirs only;
                        # a .git in a protected directory only when git dirs count
                        if mode != SECRETS or name != ".git" or rules.find_git:
                            subdirs.append(name)
                    elif leaves:
                        kind = _leaf(rules, entry, dir_fd)
                        if kind:
                            found.append((name, kind, False))
                    continue
                kind, descend = _classify(rules, names, entry, dir_fd)
                if name == "HEAD":
                    head_is_dir = entry.is_dir(follow_symlinks=False)
                if kind:
                    found.append((name, kind, descend or entry.is_dir(follow_symlinks=False)))
                if descend:
                    subdirs.append(name)
    except PermissionError:
        if mode == FULL or rules.find_git:
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


def stamped(rules: Rules, mode: int) -> bool:
    """Does a directory walked in ``mode`` count for a plan (see ``Result.dirs``)?"""
    return mode == FULL or (rules.deep_secrets() and mode != GIT_ONLY)


def mode_of(rules: Rules, names: frozenset, root: str, path: str) -> tuple[int, int]:
    """(mode, depth) the walk from ``root`` lists ``path`` in: both follow from
    the names between them alone."""
    if path == root:
        return FULL, 0
    mode = FULL
    rest = path[len(root.rstrip("/")) + 1:].split("/")
    for name in rest:
        mode = child_mode(rules, names, mode, name)
    return mode, len(rest)


def protected_names(rules: Rules) -> frozenset:
    """The protected names matched per entry (those with a "/" are looked up from the root)."""
    return frozenset(n for n in rules.protected_names if "/" not in n)


def walk(root: str, rules: Rules, cache_file: str | None, start_mode: int = FULL,
         start_depth: int = 0) -> Result:
    """Walk ``root`` (a real directory path) and return what ``rules`` look for.

    ``start_mode`` and ``start_depth``: where ``root`` sits in a larger walk (a new
    subdirectory found by ``sandbox.relist``); the protected names with a
    "/" are looked up only from the top (depth 0).
    """
    summary = None
    if cache_file and start_depth == 0:
        summary = _summary_file(cache_file)
        result = _from_summary(summary, root, rules)
        if result is not None:
            return result
    old: dict = {}
    if cache_file:
        try:
            with open(cache_file, "rb") as fh:
                loaded = marshal.loads(fh.read())  # not marshal.load: statefile.load
            if isinstance(loaded, dict):
                old = loaded  # each entry is checked when it is used
        except (OSError, EOFError, ValueError, TypeError):
            old = {}
    names = protected_names(rules)
    now = time.time_ns()
    new: dict = {}
    findings: list[tuple[str, str, bool]] = []
    listed = reused = 0
    stack = [(root, start_depth, start_mode)]
    dirs, stamps, founds = [], [], []  # the directories whose listing decides the result (Result.dirs)
    deep_secrets = rules.deep_secrets()
    while stack:
        path, depth, mode = stack.pop()
        fd = None  # a descriptor only for a path too long to name whole
        try:
            if len(path) * 4 >= LONG_PATH and len(os.fsencode(path)) >= LONG_PATH:
                fd = open_long(path)
                st = os.fstat(fd)
            else:
                st = os.stat(path, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                continue
            # ctime as well as mtime: the command can reset mtime (utimensat), not ctime
            stamp = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
            prev = old.get(path)
            if prev is not None and _well_formed(prev) and prev[0] == stamp and prev[0][1] != -1:
                subdirs, found = prev[1], prev[2]
                reused += 1
            else:
                subdirs, found = _list(rules, names, path if fd is None else fd, mode)
                listed += 1
        except OSError:
            continue
        finally:
            if fd is not None:
                os.close(fd)
        if mode == FULL or (deep_secrets and mode != GIT_ONLY):
            dirs.append(path)
            stamps.append(stamp)
            founds.append(found)
        racy = now - max(st.st_mtime_ns, st.st_ctime_ns) < RACY_NS
        new[path] = ((st.st_ino, -1, -1) if racy else stamp, subdirs, found)
        prefix = path.rstrip("/") + "/"
        for name, kind, is_dir in found:
            findings.append((path if name == "" else prefix + name, kind, is_dir))
        if depth < rules.max_depth:
            for name in subdirs:
                stack.append((prefix + name, depth + 1, child_mode(rules, names, mode, name)))
    # a reused entry is stored as it was read: only a listing or a directory
    # gone can change the cache (cheaper than comparing every entry)
    if cache_file and (listed or len(new) != len(old)):
        _store(cache_file, new)
    if summary is not None and not any(v[0][1] == -1 for v in new.values()):
        # (a directory too young to trust is listed again next time anyway)
        _store_summary(summary, new, findings, dirs, founds)
    if start_depth == 0:
        findings += _named_below(root, rules)
    findings.sort()
    return Result(tuple(findings), listed, reused, tuple(dirs), tuple(stamps), tuple(founds),
                  now)


def _named_below(root: str, rules: Rules) -> list:
    """The protected names with a "/" (looked up by name from the root, never cached)."""
    out = []
    for rel in (n for n in rules.protected_names if "/" in n):
        candidate = os.path.join(root, rel)
        if os.path.lexists(candidate):
            out.append((candidate, PROTECTED, os.path.isdir(candidate)))
    return out


# The summary of a walk: when no directory it went through changed, the walk
# would reuse every cached listing and find the same, so its result is kept
# whole beside the per-directory cache and checked with one lstat per
# directory, without loading the cache (in a 100,000-file workspace,
# unmarshalling the per-directory cache cost more than the stat calls).
_SUMMARY = "scan-summary-1"


def _summary_file(cache_file: str) -> str:
    return cache_file + ".sum"


def _from_summary(path: str, root: str, rules: Rules) -> Result | None:
    from sandbox import dirstamps

    started = time.time_ns()

    try:
        with open(path, "rb") as fh:
            data = marshal.load(fh)
        tag, blob, findings, stamped, sparse = data
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if tag != (_SUMMARY, FORMAT) or not isinstance(blob, bytes) or not dirstamps.valid(blob):
        return None
    parts = dirstamps.unpack(blob)
    if parts is None or not parts[0] or parts[0][0] != root or len(stamped) != len(parts[0]):
        return None
    paths, flat = parts[0], parts[1]
    dirs, stamps, founds = [], [], []
    for i, path in enumerate(paths):
        if stamped[i]:
            dirs.append(path)
            stamps.append((flat[3 * i], flat[3 * i + 1], flat[3 * i + 2]))
            founds.append(sparse.get(i, []))
    findings = list(findings) + _named_below(root, rules)
    findings.sort()
    return Result(tuple(findings), 0, len(paths), tuple(dirs), tuple(stamps), tuple(founds),
                  started)


def _store_summary(path: str, new: dict, findings: list, dirs: list, founds: list) -> None:
    """Keep the walk's result for ``_from_summary``; racy stamps never match there."""
    from sandbox import dirstamps

    paths = list(new)
    stamped_set = set(dirs)
    found_of = dict(zip(dirs, founds))
    stamped = bytes(1 if p in stamped_set else 0 for p in paths)
    sparse = {i: list(found_of[p]) for i, p in enumerate(paths) if found_of.get(p)}
    blob, _newest = dirstamps.pack(paths, [new[p][0] for p in paths])
    _store(path, ((_SUMMARY, FORMAT), blob, tuple(findings), stamped, sparse))


def open_long(path: str) -> int:
    """An O_DIRECTORY descriptor for ``path``, however long: the part below
    LONG_PATH is opened as one path, the rest one component at a time
    (never through a symlink)."""
    raw = os.fsencode(path)
    cut = raw.rfind(b"/", 0, LONG_PATH)
    fd = os.open(raw[:cut] or b"/", _DIR_FLAGS)
    try:
        for part in raw[cut + 1:].split(b"/"):
            if part:
                down = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = down
    except BaseException:
        os.close(fd)
        raise
    return fd


def _store(cache_file: str, data: dict) -> None:
    from sandbox import statefile

    statefile.dump(cache_file, data)


def cache_name(root: str, rules: Rules) -> str:
    return sha256_hex(f"{root}\0{rules.digest()}".encode())[:32] + ".scan"
