"""Where the persistence audit puts what it takes away, in a form nothing can use.

A quarantined item is archived into an uncompressed tar file (mode 0600) and
then removed from where the command left it.  A tar file is not a directory,
so git cannot take it for a repository (a ``.git`` file pointing into the
quarantine finds no ``HEAD``), and nothing in it is executable.  The
archives live in ``<state>/quarantine/<UTC time>-<random>/``: the state
directory is invisible inside the sandbox, and the random part means a
command cannot name a path inside it blind.

Everything here walks trees iteratively with one directory descriptor at a
time (``openat`` down, ``..`` up), so neither depth (Python's recursion
limit) nor length (PATH_MAX) can make it fail, and it acts relative to the
parent descriptor the audit reached without following symlinks
(``sandbox.pathat``): another run's command may still be changing the tree,
and a directory moved or swapped meanwhile stops the walk (an error the
audit counts) instead of carrying it outside the writable roots.

``sandbox quarantine list`` and ``sandbox quarantine restore ID`` read the
manifest each session directory keeps.
"""

from __future__ import annotations

import errno
import os
import stat
import time

MANIFEST = "manifest"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class QuarantineError(Exception):
    """A restore that cannot be done (the message says why)."""


def top(state: str) -> str:
    return os.path.join(state, "quarantine")


class Session:
    """The quarantine directory of one audit (made on first use)."""

    def __init__(self, state: str) -> None:
        self.state = state
        self.dir: str | None = None
        self.items: list[dict] = []

    def _open(self) -> str:
        if self.dir is None:
            name = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + os.urandom(8).hex()
            os.makedirs(top(self.state), mode=0o700, exist_ok=True)
            path = os.path.join(top(self.state), name)
            os.mkdir(path, 0o700)
            self.dir = path
        return self.dir

    def keep(self, path: str, kind: str, action: str, at: tuple[int, str] | None = None) -> str:
        """Archive ``path`` (never following a symlink); return the item's ID.

        ``at``: (descriptor of the parent directory, name), as the audit
        reached it (``sandbox.pathat``); without it the parent is opened by
        its path (only for trees no one else is changing).
        ``action``: "moved" (the caller removes the original) or "replaced"
        (the caller writes a replacement).
        """
        where = self._open()
        number = len(self.items) + 1
        archive = os.path.join(where, f"{number}.tar")
        with _At(path, at) as (dir_fd, name):
            _archive(dir_fd, name, archive)
        item = {"n": number, "path": path, "kind": kind, "action": action,
                "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
        self.items.append(item)
        _write_manifest(where, self.items)
        return f"{os.path.basename(where)}/{number}"

    def move(self, path: str, kind: str, at: tuple[int, str] | None = None) -> str:
        """Archive ``path``, then remove it; return the item's ID."""
        ident = self.keep(path, kind, "moved", at)
        with _At(path, at) as (dir_fd, name):
            remove_at(dir_fd, name)
        return ident


class _At:
    """(parent descriptor, name) for ``path``: the caller's, or opened by path."""

    __slots__ = ("path", "at", "fd")

    def __init__(self, path: str, at) -> None:
        self.path, self.at, self.fd = path, at, -1

    def __enter__(self) -> tuple[int, str]:
        if self.at is not None:
            return self.at
        parent, name = os.path.split(self.path.rstrip("/"))
        self.fd = os.open(parent or "/", _DIR_FLAGS & ~os.O_NOFOLLOW)
        return self.fd, name

    def __exit__(self, *_exc) -> None:
        if self.fd >= 0:
            os.close(self.fd)


def _write_manifest(where: str, items: list[dict]) -> None:
    from sandbox import statefile

    statefile.dump(os.path.join(where, MANIFEST), items, must_succeed=True)


# -- iterative tree operations ----------------------------------------------------
# One directory descriptor at a time: openat down (O_NOFOLLOW, and the inode
# must be the one lstat saw), ".." up, and the directory reached going up
# must be the one we came down from (same device and inode).  Another run's
# command may be moving these directories while we work: a directory moved
# elsewhere makes ".." lead somewhere else, and the walk then stops with an
# error instead of acting there.

class Moved(OSError):
    def __init__(self, what: str) -> None:
        super().__init__(errno.ESTALE, f"{what} was moved or replaced while the audit worked on it")


def _ident(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _open_dir(name: str, dir_fd: int, st: os.stat_result) -> int:
    """Open the directory ``name`` that ``st`` describes (no symlink, the same
    inode); first make it ours to list and empty (the command may have left it
    0555 or 0000, and it is the command's)."""
    from sandbox import pathat

    if st.st_mode & 0o700 != 0o700:
        fd = os.open(name, pathat.PATH_DIR, dir_fd=dir_fd)
        try:
            if _ident(os.fstat(fd)) != _ident(st):
                raise Moved(name)
            pathat.add_bits(fd)
        finally:
            os.close(fd)
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    if _ident(os.fstat(fd)) != _ident(st):
        os.close(fd)
        raise Moved(name)
    return fd


def _names(fd: int) -> list[str]:
    return sorted(os.listdir(fd), reverse=True)  # popped from the end: in order


def _walk(dir_fd: int, name: str, visit_file, enter_dir=None, leave_dir=None) -> None:
    """Depth-first over the tree of entry ``name`` in ``dir_fd``.

    ``visit_file(dir_fd, name, rel, st)`` for non-directories,
    ``enter_dir(rel, st)`` before and ``leave_dir(parent_fd, name)`` after a
    directory's entries.  ``rel`` is the path below the parent.
    """
    st = os.lstat(name, dir_fd=dir_fd)
    if not stat.S_ISDIR(st.st_mode):
        visit_file(dir_fd, name, name, st)
        return
    if enter_dir:
        enter_dir(name, st)
    fd = _open_dir(name, dir_fd, st)
    stack = [(name, _names(fd), _ident(st))]
    try:
        while stack:
            rel, todo, _me = stack[-1]
            if not todo:
                stack.pop()
                if not stack:
                    break
                up = os.open("..", _DIR_FLAGS, dir_fd=fd)
                if _ident(os.fstat(up)) != stack[-1][2]:
                    os.close(up)
                    raise Moved(stack[-1][0])
                os.close(fd)
                fd = up
                if leave_dir:
                    leave_dir(fd, rel.rsplit("/", 1)[-1])
                continue
            child = todo.pop()
            cst = os.lstat(child, dir_fd=fd)
            child_rel = f"{rel}/{child}"
            if stat.S_ISDIR(cst.st_mode):
                if enter_dir:
                    enter_dir(child_rel, cst)
                down = _open_dir(child, fd, cst)
                os.close(fd)
                fd = down
                stack.append((child_rel, _names(fd), _ident(cst)))
            else:
                visit_file(fd, child, child_rel, cst)
    finally:
        os.close(fd)
    if _ident(os.lstat(name, dir_fd=dir_fd)) != _ident(st):
        raise Moved(name)
    if leave_dir:
        leave_dir(dir_fd, name)


def _archive(dir_fd: int, name: str, archive: str) -> None:
    import tarfile

    out = os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                  0o600)
    with os.fdopen(out, "wb") as raw, tarfile.open(fileobj=raw, mode="w",
                                                   format=tarfile.PAX_FORMAT) as tar:
        def info(rel: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
            ti = tarfile.TarInfo(rel)
            ti.type = kind
            ti.mode = stat.S_IMODE(st.st_mode)
            ti.mtime = int(st.st_mtime)
            ti.uid, ti.gid = st.st_uid, st.st_gid
            return ti

        def add_dir(rel: str, st: os.stat_result) -> None:
            tar.addfile(info(rel, st, tarfile.DIRTYPE))

        def add_file(fd_: int, entry: str, rel: str, st: os.stat_result) -> None:
            if stat.S_ISLNK(st.st_mode):
                ti = info(rel, st, tarfile.SYMTYPE)
                ti.linkname = os.readlink(entry, dir_fd=fd_)
                tar.addfile(ti)
            elif stat.S_ISREG(st.st_mode):
                fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=fd_)
                with os.fdopen(fd, "rb") as fh:
                    now = os.fstat(fh.fileno())
                    if not stat.S_ISREG(now.st_mode):
                        return  # swapped meanwhile: nothing of it to keep
                    ti = info(rel, now, tarfile.REGTYPE)
                    ti.size = now.st_size
                    tar.addfile(ti, fh)
            elif stat.S_ISFIFO(st.st_mode):
                tar.addfile(info(rel, st, tarfile.FIFOTYPE))
            # sockets and devices carry no content: nothing to keep

        _walk(dir_fd, name, add_file, add_dir)


def remove_at(dir_fd: int, name: str) -> None:
    """Remove entry ``name`` of ``dir_fd`` (a file, a symlink or a whole tree), however deep."""
    def unlink(fd: int, entry: str, _rel: str, _st) -> None:
        os.unlink(entry, dir_fd=fd)

    def rmdir(parent_fd: int, entry: str) -> None:
        os.rmdir(entry, dir_fd=parent_fd)

    _walk(dir_fd, name, unlink, None, rmdir)


def remove(path: str) -> None:
    """Remove ``path`` (a file, a symlink or a whole tree), however deep."""
    with _At(path, None) as (dir_fd, name):
        remove_at(dir_fd, name)


# -- sandbox quarantine list / restore --------------------------------------------

def items(state: str) -> list[tuple[str, dict]]:
    """(ID, item) for everything in the quarantine, oldest first."""
    from sandbox import statefile

    out = []
    try:
        sessions = sorted(os.listdir(top(state)))
    except OSError:
        return []
    for session in sessions:
        listed = statefile.load(os.path.join(top(state), session, MANIFEST))
        if not isinstance(listed, list):
            continue
        for item in listed:
            if isinstance(item, dict) and isinstance(item.get("n"), int):
                out.append((f"{session}/{item['n']}", item))
    return out


def _find(state: str, ident: str) -> tuple[str, dict, list]:
    from sandbox import statefile

    session, _, number = ident.partition("/")
    if not session or "/" in number or session.startswith(".") or not number.isdigit():
        raise QuarantineError(f"{ident!r} is not a quarantine ID (see 'sandbox quarantine list')")
    where = os.path.join(top(state), session)
    listed = statefile.load(os.path.join(where, MANIFEST))
    for item in listed if isinstance(listed, list) else ():
        if isinstance(item, dict) and item.get("n") == int(number):
            return where, item, listed
    raise QuarantineError(f"no quarantined item {ident} (see 'sandbox quarantine list')")


def restore(state: str, ident: str) -> dict:
    """Put item ``ident`` back where it was; return the item."""
    import tarfile

    where, item, listed = _find(state, ident)
    if item.get("restored"):
        raise QuarantineError(f"{ident} was already restored to {item['path']}")
    path = item["path"]
    parent, base = os.path.split(path)
    if item["action"] == "moved" and os.path.lexists(path):
        raise QuarantineError(f"{path} exists; move it away first, then restore {ident}")
    if not os.path.isdir(parent):
        raise QuarantineError(f"{parent} is not a directory any more; cannot restore {ident}")
    archive = os.path.join(where, f"{item['n']}.tar")
    staging = os.path.join(parent, f".sandbox-restore-{os.urandom(6).hex()}")
    os.mkdir(staging, 0o700)
    try:
        with tarfile.open(archive, "r") as tar:
            members = tar.getmembers()
            for m in members:  # written by us, but a restore writes into the workspace: check
                parts = m.name.split("/")
                if (parts[0] != base or ".." in parts or m.name.startswith("/")
                        or not (m.isfile() or m.isdir() or m.issym() or m.isfifo())):
                    raise QuarantineError(f"the archive of {ident} holds an unexpected entry "
                                          f"{m.name!r}; not restoring")
            tar.extractall(staging, members=members)
        os.replace(os.path.join(staging, base), path)
    except (OSError, tarfile.TarError) as exc:
        raise QuarantineError(f"cannot restore {ident} to {path}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
    finally:
        try:
            remove(staging)
        except OSError:
            pass
    item["restored"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    _write_manifest(where, listed)
    return item
