"""Reach an entry under a writable root without following the command's symlinks.

The persistence audit acts (reads, replaces, archives, removes) on paths
that the command chose, and another run's command may still be changing
them while it does (two runs in one workspace).  Naming such a path whole
would let a directory swapped for a symlink between a check and the act
carry the act outside the writable roots (a rebuilt config written over
``~/.config/git/config``).  So every act here starts from a writable root
opened by its own path (its ancestors are not writable inside the sandbox)
and goes down one component at a time with ``openat(O_PATH | O_NOFOLLOW |
O_DIRECTORY)``; the act itself is a ``*at`` call relative to the parent it
reached.  A component that is a symlink stops the walk (``LinkOnTheWay``);
a path longer than PATH_MAX is no problem, as no call ever names it whole.

O_PATH descriptors need no read permission, so a directory the command
made unreadable can still be passed through; ``chmod_fd`` changes a mode
through such a descriptor (``/proc/self/fd``), never through a name.
"""

from __future__ import annotations

import errno
import os
import stat

PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class LinkOnTheWay(OSError):
    """A directory on the way to a path is a symlink (``link`` is its path)."""

    def __init__(self, link: str) -> None:
        super().__init__(errno.ELOOP, f"a symlink on the way: {link}")
        self.link = link


class Outside(OSError):
    """The path is not below any writable root (nothing of ours to act on)."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.EXDEV, f"not inside a writable root: {path}")


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def chmod_fd(fd: int, mode: int) -> None:
    """chmod the very inode ``fd`` refers to (an O_PATH descriptor too)."""
    os.chmod(f"/proc/self/fd/{fd}", mode)


def add_bits(fd: int, bits: int = 0o700) -> bool:
    """Give the owner ``bits`` on the directory or file behind ``fd``; True if changed."""
    st = os.fstat(fd)
    if stat.S_ISLNK(st.st_mode) or st.st_mode & bits == bits:
        return False
    chmod_fd(fd, stat.S_IMODE(st.st_mode) | bits)
    return True


def reopen_dir(fd: int) -> int:
    """A readable descriptor (for listing) of the directory behind ``fd``."""
    return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


class Roots:
    """The writable roots of a run, as the audit acts on them."""

    __slots__ = ("roots",)

    def __init__(self, roots) -> None:
        self.roots = sorted({os.path.normpath(r) for r in roots if r}, key=len)

    def anchor(self, path: str) -> str | None:
        """The outermost root holding ``path``: no writable directory lies above it."""
        for root in self.roots:  # shortest first
            if _within(path, root):
                return root
        return None

    def inside(self, path: str) -> bool:
        return self.anchor(path) is not None

    def open_parent(self, path: str, make_room: bool = False) -> tuple[int, str]:
        """(an O_PATH descriptor of ``path``'s parent, the last name); the caller
        closes the descriptor.  Raises Outside, LinkOnTheWay or the OSError met
        (FileNotFoundError, NotADirectoryError...).  ``make_room``: a directory
        on the way that we may not search is given u+rwx (it is the command's)."""
        root = self.anchor(path)
        if root is None or path == root:
            raise Outside(path)
        parts = [p for p in path[len(root):].split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise Outside(path)
        fd = os.open(root, PATH_DIR & ~os.O_NOFOLLOW)  # the root's own path is not theirs
        try:
            for i, part in enumerate(parts[:-1]):
                down = self._down(fd, part, make_room)
                if down is None:
                    raise LinkOnTheWay(root.rstrip("/") + "/" + "/".join(parts[:i + 1]))
                os.close(fd)
                fd = down
        except BaseException:
            os.close(fd)
            raise
        return fd, parts[-1]

    @staticmethod
    def _down(fd: int, name: str, make_room: bool) -> int | None:
        """Open directory ``name`` under ``fd`` (None: it is a symlink)."""
        for attempt in (1, 2):
            try:
                return os.open(name, PATH_DIR, dir_fd=fd)
            except PermissionError:
                if attempt == 2 or not make_room or not add_bits(fd):
                    raise
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    try:
                        if stat.S_ISLNK(os.lstat(name, dir_fd=fd).st_mode):
                            return None
                    except OSError:
                        pass
                raise
        return None  # not reached

    def parent(self, path: str, make_room: bool = False) -> "_Parent":
        """``with roots.parent(path) as (fd, name): ...``"""
        return _Parent(self, path, make_room)


class _Parent:
    __slots__ = ("roots", "path", "make_room", "fd")

    def __init__(self, roots: Roots, path: str, make_room: bool) -> None:
        self.roots, self.path, self.make_room, self.fd = roots, path, make_room, -1

    def __enter__(self) -> tuple[int, str]:
        self.fd, name = self.roots.open_parent(self.path, self.make_room)
        return self.fd, name

    def __exit__(self, *_exc) -> None:
        os.close(self.fd)


def open_entry(dir_fd: int, name: str) -> int:
    """An O_PATH descriptor of the entry itself (a symlink is not followed)."""
    return os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def make_room(dir_fd: int, name: str) -> None:
    """Give the owner rwx on ``dir_fd``'s directory and on the entry ``name``
    (a directory we must list or empty, a file we must read), never through a link."""
    try:
        add_bits(dir_fd)
    except OSError:
        pass
    try:
        fd = open_entry(dir_fd, name)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            add_bits(fd)
        elif stat.S_ISREG(st.st_mode):
            add_bits(fd, 0o600)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_file(dir_fd: int, name: str, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file beside ``name`` and rename it over ``name``:
    never through the old file (it may be a hard link to someone else's)."""
    tmp = f".sandbox-{os.urandom(6).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode & 0o666 or 0o644, dir_fd=dir_fd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise


def read_regular(dir_fd: int, name: str, limit: int) -> bytes:
    """At most ``limit`` bytes of a regular file (never through a link or FIFO)."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                 dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{name} is not a regular file")
        chunks, left = [], limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
