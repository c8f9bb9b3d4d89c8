"""One lock per workspace, so a second run at the same time is at least noticed.

Every run holds a shared ``flock`` on ``<state>/locks/<hash of the workspace>``
while its command runs (and until its audit is done).  Before taking it, a
run tries for an exclusive lock without waiting: if that fails, another run
(or ``sandbox cache clean``) is using the workspace, and the run says so on
stderr.  It does not wait: a dev server or a watcher may run for hours next
to short commands, and an agent's commands would then hang.  What is not
safe about two runs at once is in the README ("Does not protect against").

The lock lives in the state directory, outside every writable root, so the
command cannot take it away.  A lock that cannot be made (read-only state
dir) is skipped silently: it only ever produces a warning.
"""

from __future__ import annotations

import os

from sandbox.statefile import sha256_hex


def lock_path(state: str, workspace: str) -> str:
    return os.path.join(state, "locks", sha256_hex(workspace.encode())[:16])


def _open(state: str, workspace: str) -> int | None:
    path = lock_path(state, workspace)
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        return os.open(path, flags, 0o600)
    except FileNotFoundError:
        pass
    except OSError:
        return None
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        return os.open(path, flags, 0o600)
    except OSError:
        return None


def hold(state: str, workspace: str) -> tuple[int | None, bool]:
    """Take this run's shared lock; return (fd to release, the first to meet another run?)."""
    import fcntl

    fd = _open(state, workspace)
    if fd is None:
        return None, False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        busy = _first_of_overlap(fd)
    else:
        busy = False
        try:  # alone: the next overlap is worth a warning again
            if os.fstat(fd).st_size:
                os.ftruncate(fd, 0)
        except OSError:
            pass
    try:
        # from exclusive down to shared, or wait out another run's brief
        # exclusive check (or a cache clean's rename)
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError:
        os.close(fd)
        return None, busy
    return fd, busy


def _first_of_overlap(fd: int) -> bool:
    """Is this the first run to find the workspace busy since it was last free?

    Sessions (sessions.md in the docs) make runs next to a background server the
    normal agent loop: the warning is said once per overlap, by the run that
    first meets it, not on every command while the server runs.  The mark is
    one byte in the lock file (outside every writable root); the run that
    next finds the workspace free clears it.
    """
    try:
        if os.pread(fd, 1, 0) == b"w":
            return False
        os.pwrite(fd, b"w", 0)
    except OSError:
        pass  # cannot tell: warn, as before
    return True


def hold_for(opts, state: str, workspace: str) -> int | None:
    """``hold`` for a run (none for --dry-run), with the warning on stderr."""
    if opts.dry_run:
        return None
    fd, others = hold(state, workspace)
    if others:
        import sys

        print(f"sandbox: warning: {WARNING}", file=sys.stderr)
    return fd


def release(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the last descriptor drops the flock


def try_exclusive(state: str, workspace: str) -> int | None:
    """An exclusive lock if no run holds the workspace now, else None (for cache clean)."""
    import fcntl

    fd = _open(state, workspace)
    if fd is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def busy(state: str, workspace: str) -> bool:
    """Is a run in ``workspace`` active right now?  (No lock file: no run
    since this version.)"""
    return held(lock_path(state, workspace))


def held(path: str, shared: bool = False) -> bool:
    """Does another process hold a lock on ``path``?  Asked with a lock of
    our own that is dropped at once: exclusive (any holder answers yes), or
    ``shared`` (only an exclusive holder does, and probes do not disturb
    each other).  No file, no holder."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


WARNING = ("another sandbox run is active in this workspace: checks made while planning "
           "this run are not atomic with its mounts, and the two commands share the "
           "workspace and its tool caches (see 'Does not protect against' in the README)")
