"""Pending-audit markers: one per run, held locked while the run lives.

Before its command starts, every run writes its audit spec (with the
pre-run snapshot) to a marker of its own, ``<state>/pending-audit/<workspace
hash>-<pid>-<random>``, and holds an exclusive ``flock`` on it until it has
finished.  A marker nobody holds is an audit still owed: its run was
killed (SIGKILL), its audit could not neutralise everything, or another run
was live in an overlapping writable root while it audited.

Why the last case: an audit made while another command can still change
the same tree may be fooled (a plant moved from a place not yet walked to
one already walked), and the other run's own audit compares with a
snapshot taken when the first run's plants may already have been there.
So a run audits at its end whatever else is running (its own plants must
not wait for a dev server in the next terminal to exit, and every act of
the audit stays inside the roots however the tree changes: sandbox.pathat),
and then *drains*: if no run overlapping its roots is live, it audits again
every marker left there, its own included, and removes them; if one is
live, it leaves them all to that run, which drains at its end.  A run that
starts also drains first (before it plans), so a killed run's plants are
audited by the next run in the workspace.  The liveness test is the lock
itself, so a killed run is never taken for a live one, and one that
starts while a drain works is seen by the check the drain makes after it.

The markers live in the state directory, outside every writable root and
invisible inside the sandbox, so the command can neither remove nor forge
them.
"""

from __future__ import annotations

import marshal
import os

DIR = "pending-audit"


def _dir(state: str) -> str:
    return os.path.join(state, DIR)


class Marker:
    """This run's marker: its path and the descriptor that holds the lock."""

    __slots__ = ("path", "fd")

    def __init__(self, path: str, fd: int | None) -> None:
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # the last descriptor: the flock goes with it
            self.fd = None

    def rewrite(self, spec: dict) -> None:
        """Replace the spec in this run's (locked) marker: the plan changed
        before the command started (sandbox.drift dropped a vanished mount)."""
        data = marshal.dumps(spec)
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass
        self.release()


def create(spec: dict) -> Marker:
    """Write and lock this run's marker; raise OSError if that is impossible
    (no audit promise, no run)."""
    import fcntl

    from sandbox.statefile import sha256_hex

    where = _dir(spec["state"])
    os.makedirs(where, mode=0o700, exist_ok=True)
    name = f"{sha256_hex(spec['workspace'].encode())[:16]}-{os.getpid()}-{os.urandom(6).hex()}"
    tmp = os.path.join(where, "." + name)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        # locked before it has its name: no one can take it for a left-over one
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = marshal.dumps(spec)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.rename(tmp, os.path.join(where, name))
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return Marker(os.path.join(where, name), fd)


def _load(fd: int):
    try:
        with os.fdopen(os.dup(fd), "rb") as fh:
            fh.seek(0)
            spec = marshal.load(fh)
    except (OSError, EOFError, ValueError, TypeError):
        return None
    return spec if isinstance(spec, dict) else None


def places(spec: dict) -> list[str]:
    """Where a run could write: its workspace and writable roots."""
    return [p for p in [spec.get("workspace")] + list(spec.get("roots", ()))
            if isinstance(p, str) and p]


def overlaps(spec: dict, where) -> bool:
    from sandbox.command import is_within

    return any(is_within(a, b) or is_within(b, a) for a in places(spec) for b in where)


class _Held:
    """Another run's marker, locked by us while we audit it."""

    __slots__ = ("path", "fd", "spec")

    def __init__(self, path: str, fd: int, spec: dict) -> None:
        self.path, self.fd, self.spec = path, fd, spec


def _scan(state: str, where, skip=()):
    """(markers overlapping ``where`` that we could lock, is one of them live?);
    ``skip``: markers we hold already."""
    import fcntl

    try:
        names = sorted(os.listdir(_dir(state)))
    except OSError:
        return [], False
    held, live = [], False
    for name in names:
        path = os.path.join(_dir(state), name)
        if name.startswith(".") or path in skip:
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        spec = _load(fd)
        if spec is None or not overlaps(spec, where):
            os.close(fd)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its run is live (or another run is draining it)
            os.close(fd)
            live = True
            continue
        held.append(_Held(path, fd, spec))
    return held, live


def live_elsewhere(state: str, where, skip=()) -> bool:
    """Is a run whose roots overlap ``where`` live now (not counting ``skip``)?"""
    held, live = _scan(state, where, skip)
    for h in held:
        os.close(h.fd)
    return live


def drain(state: str, where, own: Marker | None = None, own_spec: dict | None = None):
    """Audit every marker left in ``where`` again if no overlapping run is live.

    Returns (findings of the left-over markers, findings of our own marker's
    second audit, whether the drain happened).  ``own``: this run's marker
    (still locked by us), already audited once: removed without a second
    audit when no other marker was left there.  Markers whose audit failed
    stay (the next run audits them before it runs anything).
    """
    from sandbox import audit

    mine_path = own.path if own else None
    held, live = _scan(state, where, (mine_path,))
    if live:
        for h in held:
            os.close(h.fd)
        return [], [], False
    theirs, mine, done = [], [], []
    try:
        for h in held:
            findings = audit.Auditor(h.spec).run()
            theirs += findings
            if not any(f.failed for f in findings):
                done.append(h.path)
        if held and own is not None and own_spec is not None:
            mine = audit.Auditor(own_spec).run()  # the tree may have changed under the first
            if not any(f.failed for f in mine):
                done.append(own.path)
        elif own is not None:
            done.append(own.path)
        # a run that started meanwhile could have changed the tree under these
        # audits: then they are owed again, by that run's drain
        if live_elsewhere(state, where, {mine_path, *(h.path for h in held)}):
            return theirs, mine, False
        for path in done:
            try:
                os.unlink(path)
            except OSError:
                pass
    finally:
        for h in held:
            os.close(h.fd)
    return theirs, mine, True
