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
and then *drains*.  If a run overlapping its roots is live, it records when
it ended in its marker and leaves it, with every other marker there, to
that run.  If none is, it audits again every marker left there and removes
them, with two shortcuts: a run that started after our snapshot and ended
before our audit began was covered by our audit (whatever it did differs
from our snapshot, and it could not fool the audit), so its marker is just
removed; and our own is audited a second time only if some marker says
its run may have been running during our audit (ended after it began, or
never said when it ended).  A long-lived run (a dev server) thus ends with
one audit, not one per run that came and went meanwhile.  A run that
starts also drains first (before it plans), so a killed run's plants are
audited by the next run in the workspace.  The liveness test is the lock
itself, so a killed run is never taken for a live one, and one that starts
while a drain works is seen by the check the drain makes after it.  Times
are ``time.monotonic_ns()`` with the boot id: a marker from another boot is
never taken as covered.

The markers live in the state directory, outside every writable root and
invisible inside the sandbox, so the command can neither remove nor forge
them.
"""

from __future__ import annotations

import marshal
import os
import time

DIR = "pending-audit"


def _dir(state: str) -> str:
    return os.path.join(state, DIR)


def _boot() -> str:
    """This boot's id: times from time.monotonic_ns() compare only within one boot."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as fh:
            return fh.read(64).decode("ascii", "replace").strip()
    except OSError:
        return ""


def now() -> tuple[str, int]:
    return _boot(), time.monotonic_ns()


class Marker:
    """This run's marker: its path and the descriptor that holds the lock."""

    __slots__ = ("path", "fd", "spec")

    def __init__(self, path: str, fd: int | None, spec: dict) -> None:
        self.path, self.fd, self.spec = path, fd, spec

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # the last descriptor: the flock goes with it
            self.fd = None

    def rewrite(self, spec: dict) -> None:
        """Replace the spec in this run's (locked) marker: the plan changed
        before the command started (sandbox.linux.drift dropped a vanished mount).
        The run's start time stays."""
        self.spec = dict(spec, started=self.spec.get("started"))
        _put(self.fd, self.spec)

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass
        self.release()

    def finish(self) -> None:
        """Keep the marker as an audit owed after a clean end: record when the
        run ended (a drain tells from it whether the run overlapped its audit)."""
        if self.fd is None:
            return
        try:
            _put(self.fd, dict(self.spec, ended=now()))
        except (OSError, ValueError):
            pass  # without an end time it is audited again in full: safe
        self.release()


def _put(fd: int, spec: dict) -> None:
    """Write ``spec`` over the whole marker file (it stays the same inode,
    so the lock held on it stays too)."""
    data = marshal.dumps(spec)
    os.lseek(fd, 0, os.SEEK_SET)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.ftruncate(fd, len(data))


def create(spec: dict) -> Marker:
    """Write and lock this run's marker; raise OSError if that is impossible
    (no audit promise, no run).  Call it after the snapshot and before the
    command starts: its time says that whatever the command does comes after
    the snapshot."""
    import fcntl

    from sandbox.statefile import sha256_hex

    spec = dict(spec, started=now())
    where = _dir(spec["state"])
    os.makedirs(where, mode=0o700, exist_ok=True)
    name = f"{sha256_hex(spec['workspace'].encode())[:16]}-{os.getpid()}-{os.urandom(6).hex()}"
    tmp = os.path.join(where, "." + name)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        # locked before it has its name: no one can take it for a left-over one
        fcntl.flock(fd, fcntl.LOCK_EX)
        _put(fd, spec)
        os.rename(tmp, os.path.join(where, name))
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return Marker(os.path.join(where, name), fd, spec)


def _load(fd: int):
    try:
        with os.fdopen(os.dup(fd), "rb") as fh:
            fh.seek(0)
            spec = marshal.loads(fh.read())  # not marshal.load: statefile.load
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
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its run is live (or another run is draining it)
            spec = _load(fd)
            os.close(fd)
            live = live or spec is None or overlaps(spec, where)
            continue
        spec = _load(fd)  # read under our lock: a clean end rewrites it first
        if spec is None or not overlaps(spec, where):
            os.close(fd)
            continue
        held.append(_Held(path, fd, spec))
    return held, live


def live_elsewhere(state: str, where, skip=()) -> bool:
    """Is a run whose roots overlap ``where`` live now (not counting ``skip``)?"""
    held, live = _scan(state, where, skip)
    for h in held:
        os.close(h.fd)
    return live


def _before(a, b) -> bool:
    """Is time ``a`` before time ``b`` (both (boot, monotonic ns)), provably?"""
    return (isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == 2
            and len(b) == 2 and a[0] == b[0] and bool(a[0]) and a[1] < b[1])


def _covered(h: _Held, own_spec: dict, audited) -> bool:
    """Did our own audit cover this marker's run?  It started after our
    snapshot (so all it did differs from it) and ended before our audit
    began (so it could not fool it)."""
    return (_before(own_spec.get("started"), h.spec.get("started"))
            and _before(h.spec.get("ended"), audited))


def drain(state: str, where, own: Marker | None = None, audited=None):
    """Audit every marker left in ``where`` again if no overlapping run is live.

    Returns (findings of the left-over markers, findings of our own marker's
    second audit, whether the drain happened).  ``own``: this run's marker
    (still locked by us), whose audit began at ``audited`` (see ``now``).
    A left-over marker of a run that our own audit covered is just removed;
    if any other run may have been running while our audit did (its marker
    ended after the audit began, or never said when it ended), every marker
    is audited again, ours too.  Markers whose audit failed stay (the next
    run audits them before it runs anything).
    """
    mine_path = own.path if own else None
    held, live = _scan(state, where, (mine_path,))
    if live:
        for h in held:
            os.close(h.fd)
        return [], [], False
    theirs, mine, done = [], [], []
    try:
        # only when there is something to audit: the drain before every run
        # usually finds nothing, and the audit's modules cost about 1 ms
        if held:
            from sandbox import audit
        own_spec = own.spec if own is not None else None
        overlapped = own is None or any(not _before(h.spec.get("ended"), audited) for h in held)
        for h in held:
            if not overlapped and _covered(h, own_spec, audited):
                done.append(h.path)
                continue
            findings = audit.Auditor(h.spec).run()
            theirs += findings
            if not any(f.failed for f in findings):
                done.append(h.path)
        if own is not None:
            if held and overlapped:
                mine = audit.Auditor(own_spec).run()  # the tree may have changed under the first
            if not any(f.failed for f in mine):
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
