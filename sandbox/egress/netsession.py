"""Runs of one workspace session share one network namespace.

A coding agent starts a dev server in one ``sandbox run`` and curls it
from the next.  Every run used to get a network namespace of its own, so
the second run's loopback was empty.  Now the runs of one *session* (by
default: the workspace; or ``--session NAME``) that also have the same
network policy share the namespace: the first one makes it exactly as
before (``sandbox.egress.netns``), the later ones enter it with ``setns`` instead.

No process exists to keep the namespace: it lives as long as something of
some run of the session holds it (the run's bwrap, the command, the
proxy's or resolver's socket), and goes when the last run ends.  A
registry file per session in the state directory (which the command
cannot write) records the live members::

    PID START NET_INODE USER_INODE PROXY_PORT RESOLVER

``PID`` is the run's bwrap (the process that became bwrap in the
namespace), ``START`` its start time from ``/proc/PID/stat`` (so a reused
pid is not taken for it), the inodes those of its namespaces (``USER_INODE``
0 when it is ours: a root caller makes no user namespace).  The file is
read and rewritten under ``flock``; each run removes its own line when it
ends, and a line whose process is gone (a run killed with SIGKILL) is
pruned by the next run that reads the file.

A joining run opens the member's ``/proc/PID/ns/user`` and
``/proc/PID/ns/net`` *in the wrapper*, checks the inodes against the
registry, and only then checks that PID is still the same process (start
time, owner): a process alive after the open was alive during it, so the
descriptors are its namespaces, and they keep the namespace alive for the
child that enters it (``netns.Bridge.enter``).

The key of a session is the workspace's real path (or the name), the
caller's uid and a hash of the run's whole network plan: a run never joins
a namespace where another run's proxy or forwarded ports would give it a
way out its own policy does not.

This module is on the fast path: ``os`` and ``fcntl`` only at the top.
"""

from __future__ import annotations

import os

DIR = "sessions"
NONE = "none"  # --session none: a private namespace, as before sessions
# The proxy of the run that makes the namespace listens on 3128 (as always);
# each later member gets the next port that no live member holds.
FIRST_PROXY_PORT = 3128
PROXY_PORTS = 64
PORT_TRIES = 8  # ports found taken (squatted by a command) before the run gives up
# The resolver of a run without network: 127.0.0.1 for the first member,
# 127.0.0.N for the others (resolv.conf cannot name a port for the C library)
RESOLVERS = 250
FORMAT = 1
# Name of a session (--session NAME): what fits in a file name and a report
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
NAME_MAX = 64


def parse_name(raw: str | None) -> str | None:
    """``--session NAME``: letters, digits, ``.``, ``_`` and ``-``; ``none`` opts out."""
    if raw is None:
        return None
    if not raw or len(raw) > NAME_MAX or not _NAME_CHARS.issuperset(raw) or raw[0] in ".-":
        from sandbox.runflags import FlagError

        shown = raw if raw.isprintable() else repr(raw)
        raise FlagError("--session", f"{shown!r} is not a session name",
                        f"use up to {NAME_MAX} letters, digits, '.', '_' or '-' (not first), "
                        "e.g. --session web; --session none gives the run a network "
                        "namespace of its own")
    return raw


def resolver_address(index: int) -> str:
    return f"127.0.0.{index}"


def key(label: str, network, uid: int) -> str:
    """The registry's name for a session: who, where, and under which network policy."""
    from sandbox import statefile

    return statefile.sha256_hex(repr((FORMAT, uid, label, network)).encode())[:32]


def network_of(egress: dict | None, resolver: dict | None, profile: dict | None = None,
               forwards=None):
    """What of the plan decides what the namespace's listeners give a command.

    The egress plan whole (rules, pins, credentials, inspection, and
    whatever is added to it later), and the profile's digest: every
    listener a run binds in the namespace (proxy, resolver, forwarded host
    ports) comes from one of the two, with the per-run flags
    (``--network``, ``--allow-host``) already in the egress plan.  A profile
    that differs only outside ``[network]`` also gives another session:
    stricter than needed, never looser.  The ``[[network.forward]]`` grants
    by name as well (``sandbox.egress.hostports.plan``): what the managed policy or
    an untrusted project takes away from them is not in the digest.
    """
    digest = (profile or {}).get("sha256")
    granted = repr(sorted(tuple(g) for g in forwards or ()))
    if egress is not None:
        return ("proxy", digest, granted, sorted((k, repr(v)) for k, v in egress.items()))
    return ("none", digest, granted)


class Private:
    """A run outside every session: its own namespace, ports as always."""

    created = True
    joined = False
    join = None
    port = FIRST_PROXY_PORT
    resolver = 1
    resolver_at = "127.0.0.1"
    members_at_start = 0

    def __init__(self, name: str | None, why: str) -> None:
        self.name = name
        self.why = why
        self.key = None

    def spawned(self, pid) -> None:
        pass

    def leave(self) -> None:
        pass

    def report(self, proxy: bool) -> dict:
        return {"name": self.name, "key": None, "namespace": "private", "why": self.why,
                "proxy_port": self.port if proxy else None,
                "resolver": None if proxy else self.resolver_at,
                "members_at_start": 0}


def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: when the process started, in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
        return int(data[data.rfind(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _own_user_inode() -> int:
    return os.stat("/proc/self/ns/user").st_ino


class Member:
    """This run's place in its session, from just before bwrap until the run ends.

    Made under the registry's lock, which is held until ``spawned`` has
    written this run's line (or the run failed): a run starting at the same
    moment waits a millisecond or two, then sees this one.
    """

    def __init__(self, state: str, session_key: str, name: str | None, uid: int) -> None:
        import fcntl

        self._flock = fcntl.flock
        self._lock_ex, self._lock_un = fcntl.LOCK_EX, fcntl.LOCK_UN
        self.key = session_key
        self.name = name
        self.uid = uid
        self.path = os.path.join(state, DIR, session_key)
        self.fd = -1
        self.line = None  # this run's registry line, once written
        self.join = None  # (user ns fd or -1, net ns fd) of the member joined
        self.joined_pid = None
        self.created = True
        self.joined = False
        self.why = None
        self.rejected: set = set()
        self.tried: set = set()  # ports found taken inside the namespace
        self.own_user = _own_user_inode()
        self._lock()
        try:
            live = self._live(self._read())
            for entry in live:
                fds = self._open(entry)
                if fds is not None:
                    self.join, self.joined_pid = fds, entry[0]
                    self.created, self.joined = False, True
                    break
                self.rejected.add(entry)  # alive, but not what its line says: pruned
            live = [e for e in live if e not in self.rejected]
            self.members_at_start = len(live)
            self.port = _lowest(FIRST_PROXY_PORT, PROXY_PORTS, {e[4] for e in live})
            self.resolver = _lowest(1, RESOLVERS, {e[5] for e in live})
            # where the resolver listens (sandbox.egress.dns may fall back to 127.0.0.1)
            self.resolver_at = resolver_address(self.resolver or 1)
            if self.port is None or self.resolver is None:
                from sandbox.errors import SetupError

                raise SetupError(f"session {self.label()} has no free proxy port or resolver "
                                 "address left (too many runs at once); the command was not run",
                                 hint="wait for some of its runs to end, or use --session none",
                                 code="network_setup_failed")
            self._live_entries = live
        except BaseException:
            self.leave()
            raise

    def label(self) -> str:
        return repr(self.name) if self.name else "of this workspace"

    # -- the registry --------------------------------------------------------
    def _lock(self) -> None:
        directory = os.path.dirname(self.path)
        os.makedirs(directory, 0o700, exist_ok=True)
        st = os.stat(directory, follow_symlinks=False)
        if st.st_uid != self.uid or st.st_mode & 0o022 or st.st_mode & 0o170000 != 0o040000:
            raise OSError(f"{directory} is not private to this user")
        for _ in range(16):  # bounded: another run may remove the file we opened
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                self._flock(fd, self._lock_ex)
                st = os.fstat(fd)
                try:
                    now = os.stat(self.path, follow_symlinks=False)
                except FileNotFoundError:
                    now = None
            except BaseException:
                os.close(fd)
                raise
            if now is not None and (now.st_ino, now.st_dev) == (st.st_ino, st.st_dev):
                if st.st_uid != self.uid or st.st_mode & 0o077:
                    os.close(fd)
                    raise OSError(f"{self.path} is not private to this user")
                self.fd = fd
                return
            os.close(fd)  # removed by the last member while we waited: open it again
        raise OSError(f"cannot lock {self.path}")

    def _unlock(self) -> None:
        if self.fd >= 0:
            try:
                self._flock(self.fd, self._lock_un)
            finally:
                os.close(self.fd)
                self.fd = -1

    def _read(self) -> list[tuple[int, ...]]:
        os.lseek(self.fd, 0, os.SEEK_SET)
        data = b""
        while len(data) < 1 << 20:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                break
            data += chunk
        entries = []
        for line in data.split(b"\n"):
            words = line.split()
            if len(words) == 6 and all(w.isdigit() for w in words):
                entries.append(tuple(int(w) for w in words))
        return entries

    def _write(self, entries) -> None:
        if not entries:
            os.unlink(self.path)  # under the lock: a waiter sees the inode change
            return
        text = "".join(" ".join(str(v) for v in e) + "\n" for e in entries).encode()
        os.lseek(self.fd, 0, os.SEEK_SET)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, text)

    def _alive(self, entry) -> bool:
        pid, start = entry[0], entry[1]
        if _start_time(pid) != start:
            return False  # gone, or the pid is another process's now
        try:
            return os.stat(f"/proc/{pid}").st_uid == self.uid
        except OSError:
            return False

    def _live(self, entries):
        return [e for e in entries if e not in self.rejected and self._alive(e)]

    def _open(self, entry):
        """The member's namespaces as descriptors, or None if it is not what the registry says."""
        pid, _start, net_ino, user_ino = entry[:4]
        user_fd = net_fd = -1
        try:
            if user_ino:
                user_fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
            net_fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            same = (os.fstat(net_fd).st_ino == net_ino
                    and (user_fd < 0 or os.fstat(user_fd).st_ino == user_ino))
            # after the open: alive now means it was alive when the files
            # were opened, so they are its namespaces, not a newcomer's
            if same and self._alive(entry):
                return user_fd, net_fd
        except OSError:
            pass
        for fd in (user_fd, net_fd):
            if fd >= 0:
                os.close(fd)
        return None

    def another_port(self) -> int | None:
        """The port given to this run is taken inside the namespace: the next
        one no live member holds (at most a few tries: each costs a fork)."""
        self.tried.add(self.port)
        if len(self.tried) >= PORT_TRIES:
            return None
        taken = {e[4] for e in self._live_entries} | self.tried
        found = _lowest(FIRST_PROXY_PORT, PROXY_PORTS, taken)
        if found is not None:
            self.port = found
        return found

    # -- the run ---------------------------------------------------------------
    def spawned(self, pid: int | None) -> None:
        """bwrap runs (``pid``: the process in the namespace; None: a private one
        after all, made through bwrap): write this run's line, let others in."""
        try:
            if pid is None:  # auto mode, on a host that refused the direct bridge
                self.created, self.joined = True, False
                self.why = ("the host refused the direct bridge, so bwrap made the namespace "
                            "(see SANDBOX_NET_BRIDGE in network.md)")
                return
            start = _start_time(pid)
            try:
                net = os.stat(f"/proc/{pid}/ns/net").st_ino
                user = os.stat(f"/proc/{pid}/ns/user").st_ino
            except OSError:
                return  # already over: nothing to join
            if start is None:
                return
            self.line = (pid, start, net, 0 if user == self.own_user else user,
                         self.port, self.resolver)
            entries = self._live(self._read())
            self._write(entries + [self.line])
        except OSError:
            self.line = None  # not joinable; the run itself goes on
        finally:
            self._close_join()
            self._unlock()

    def _close_join(self) -> None:
        if self.join is not None:
            for fd in self.join:
                if fd >= 0:
                    os.close(fd)
            self.join = None

    def leave(self) -> None:
        """The run is over (or never started): take its line out, prune the dead."""
        self._close_join()
        try:
            if self.fd < 0:
                if self.line is None:
                    return
                self._lock()
            entries = self._live([e for e in self._read() if e != self.line])
            self._write(entries)
        except OSError:
            pass
        finally:
            self.line = None
            self._unlock()

    def report(self, proxy: bool) -> dict:
        private = self.why is not None
        return {"name": self.name, "key": None if private else self.key,
                "namespace": "private" if private else "joined" if self.joined else "created",
                "why": self.why, "proxy_port": self.port if proxy else None,
                "resolver": None if proxy else self.resolver_at,
                "members_at_start": self.members_at_start}


def _lowest(first: int, count: int, taken: set) -> int | None:
    for value in range(first, first + count):
        if value not in taken:
            return value
    return None


def open_for(opts, meta: dict, egress, resolver, mode: str, state: str, forwards=None):
    """This run's membership: a ``Member``, or ``Private`` saying why not."""
    name = getattr(opts, "session", None)
    if name == NONE:
        return Private(None, "--session none")
    if mode == "bwrap":
        return Private(name, "SANDBOX_NET_BRIDGE=bwrap: the namespace is made by bwrap, which "
                             "cannot enter another run's")
    label = f"name:{name}" if name else f"workspace:{meta.get('workspace')}"
    uid = os.getuid()
    try:
        network = network_of(egress, resolver, meta.get("profile"), forwards)
        return Member(state, key(label, network, uid), name, uid)
    except OSError as exc:
        return Private(name, f"the session registry could not be used ({exc.strerror or exc})")
