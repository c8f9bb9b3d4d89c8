"""Is the process at the other end of a unix socket in exactly our context?

The warm server (``sandbox.server``) runs a client's ``sandbox run`` with the
client's environment, arguments and descriptors, but with the *server's*
process context: its namespaces, root, cgroup, limits, credentials,
capabilities, seccomp filters, CPU set, nice value.  That is only the same
run as a direct one if the two contexts are equal.  A process inside a
sandbox (other namespaces, NoNewPrivs, a seccomp filter, no capabilities)
that reached the socket would otherwise get a run made by an unconfined
host process, with whatever ``--allow-write`` or ``--unprotect`` it asks
for: that is the escape this module closes.  So every attribute a direct
run would inherit from its caller and that a served child does not adopt
from the request is compared, and any difference, or anything that cannot
be read, means "not served" (the client then runs directly, in its own
context, with exactly its own powers).

The peer is pinned by a pidfd (``SO_PEERPIDFD``, Linux 6.5+) so that its pid
cannot be recycled by another process between the reads; on older kernels
the pid from ``SO_PEERCRED`` is pinned by its start time instead.
"""

from __future__ import annotations

import os
import socket
import struct

SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)  # Python 3.11 lacks the name
NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")
STATUS_KEYS = ("Uid", "Gid", "Groups", "NoNewPrivs", "Seccomp", "Seccomp_filters", "CapInh",
               "CapPrm", "CapEff", "CapBnd", "CapAmb", "Cpus_allowed_list", "Mems_allowed_list")
# whole files that must be equal (attr/current: the LSM label, when readable for both)
# loginuid/sessionid: the kernel audit's login and session, which a direct
# run's processes inherit from the caller
FILES = ("cgroup", "limits", "oom_score_adj", "loginuid", "sessionid")
# personality: e.g. `setarch -R` (no address space randomization), which a
# direct run would pass on to the command; readable only where ptrace is
# allowed (Yama), so compared when both can be read, like the LSM label
OPTIONAL_FILES = ("attr/current", "personality")


class Mismatch(Exception):
    """The peer's context differs from ours, or could not be read: do not serve."""


def _read(path: str) -> bytes:
    # os.open/os.read, not open(): some twenty /proc files per side, per request
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, 65536)
        while len(data) % 65536 == 0 and data:  # bounded by the file's size
            more = os.read(fd, 65536)
            if not more:
                break
            data += more
        return data
    finally:
        os.close(fd)


def _stat_key(path: str):
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _sched(proc: str) -> tuple[bytes, bytes, bytes]:
    """(nice, policy, start time) from /proc/PID/stat, read after the name's ')'."""
    fields = _read(f"{proc}/stat").rpartition(b")")[2].split()
    # fields[0] is field 3 (state): field n is fields[n - 3]
    return fields[19 - 3], fields[41 - 3], fields[22 - 3]


# ioprio_get(2) by machine: Python has no wrapper; an unknown machine
# cannot compare the I/O priority, so nothing is served there
_IOPRIO_GET = {"x86_64": 252, "i686": 290, "i386": 290, "aarch64": 31, "riscv64": 31,
               "loongarch64": 31, "armv7l": 315, "armv8l": 315, "ppc64le": 274,
               "ppc64": 274, "s390x": 283}
_IOPRIO_WHO_PROCESS = 1


def _ioprio(proc: str) -> int:
    """The I/O priority (`ionice`), which a direct run's processes inherit."""
    from sandbox import libc

    number = _IOPRIO_GET.get(os.uname().machine)
    if number is None:
        raise OSError(f"no ioprio_get number known for {os.uname().machine}")
    pid = 0 if proc == "/proc/self" else int(proc.rsplit("/", 1)[1])
    value = libc.function("syscall")(number, _IOPRIO_WHO_PROCESS, pid)
    if value < 0:
        raise OSError(libc.errno(), "ioprio_get")
    return value


def same_install(proc: str, script: str) -> bool:
    """Is the ``sandbox-direct`` next to the peer's executable ``script``?

    The native client's direct run is the ``sandbox-direct`` beside its own
    (resolved) executable; a server of another installation (another venv,
    another version) must not serve it.  An executable with no
    ``sandbox-direct`` beside it (an interpreter running a protocol client)
    has no direct run of its own to differ from.
    """
    exe = os.readlink(f"{proc}/exe").removesuffix(" (deleted)")
    try:
        theirs = os.stat(os.path.join(os.path.dirname(exe), "sandbox-direct"))
    except FileNotFoundError:
        return True
    ours = os.stat(script)
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def _status(proc: str) -> dict[bytes, bytes]:
    wanted = {k.encode() for k in STATUS_KEYS}
    out = {}
    for line in _read(f"{proc}/status").splitlines():
        name, _, value = line.partition(b":")
        if name in wanted:
            out[name] = value.strip()
    return out


def context(proc: str) -> tuple:
    """Everything compared, for /proc/self or /proc/PID; raises OSError/IndexError."""
    spaces = []
    for name in NAMESPACES:
        try:
            spaces.append(_stat_key(f"{proc}/ns/{name}"))
        except FileNotFoundError:
            spaces.append(None)  # a kernel without it: missing for both, or a mismatch
    files = [_read(f"{proc}/{name}") for name in FILES]
    optional = []
    for name in OPTIONAL_FILES:
        try:
            optional.append(_read(f"{proc}/{name}"))
        except OSError:
            optional.append(None)
    nice, policy, _start = _sched(proc)
    return (tuple(spaces), _stat_key(f"{proc}/root/"), tuple(files), tuple(optional),
            nice, policy, _status(proc), _ioprio(proc))


def _pid_of_pidfd(pidfd: int) -> int:
    for line in _read(f"/proc/self/fdinfo/{pidfd}").splitlines():
        if line.startswith(b"Pid:"):
            return int(line.split()[1])
    raise Mismatch("no Pid in the pidfd's fdinfo")


def check(conn: socket.socket, script: str | None = None) -> int:
    """Raise ``Mismatch`` unless the peer of ``conn`` runs in exactly our context
    (and, given our ``sandbox-direct`` ``script``, is a client of our installation);
    the peer's pid."""
    try:
        pid, uid, gid = struct.unpack("3i", conn.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    except OSError as exc:
        raise Mismatch(f"SO_PEERCRED: {exc}") from None
    if uid != os.getuid() or gid != os.getgid() or pid <= 0:
        raise Mismatch("another user or group")
    pidfd = -1
    try:
        pidfd = conn.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    except OSError:
        pass  # an older kernel: the start time pins the pid below
    try:
        if pidfd >= 0:
            pid = _pid_of_pidfd(pidfd)
            if pid <= 0:  # 0: in a pid namespace we cannot see; -1: it has exited
                raise Mismatch("the peer is not visible in our pid namespace")
        proc = f"/proc/{pid}"
        start = _sched(proc)[2]
        try:
            theirs = context(proc)
            ours = context("/proc/self")
        except (OSError, IndexError, ValueError) as exc:
            raise Mismatch(f"cannot read the peer's context: {exc}") from None
        # the optional files: compared only where both can be read
        pairs = [(a, b) if None not in (a, b) else (None, None)
                 for a, b in zip(theirs[3], ours[3])]
        if theirs[3][1] is None and int(ours[3][1] or b"0", 16) != 0:
            # the peer's personality is unreadable (Yama: only ancestors may):
            # ours (setarch -X, -R...) would be the served run's, not the
            # default a client without one has (the native client checks its own)
            raise Mismatch("the server has a personality the peer's cannot be compared to")
        theirs = theirs[:3] + (tuple(a for a, _ in pairs),) + theirs[4:]
        ours = ours[:3] + (tuple(b for _, b in pairs),) + ours[4:]
        if theirs != ours:
            raise Mismatch("the peer runs in another context")
        mine = ours[6]
        sys_admin = (int(mine.get(b"CapEff", b"0"), 16)
                     | int(mine.get(b"CapPrm", b"0"), 16)) >> 21 & 1  # CAP_SYS_ADMIN
        if mine.get(b"Seccomp", b"0") != b"0" and (mine.get(b"NoNewPrivs") == b"1" or sys_admin):
            # Equal counts of seccomp filters are not equal filters, and their
            # contents cannot be read (that needs CAP_SYS_ADMIN): a process
            # with no_new_privs (or CAP_SYS_ADMIN) may have installed its
            # own, stricter than ours, which a direct run would inherit.
            # (Otherwise only a privileged ancestor installed them, for a
            # whole container or service: those are served.)
            raise Mismatch("seccomp filters the caller may have installed cannot be compared")
        if script is not None and not same_install(proc, script):
            raise Mismatch("the peer is a client of another installation")
        # what we read must be the peer's, not a recycled pid's
        if pidfd >= 0:
            import signal

            try:
                signal.pidfd_send_signal(pidfd, 0)
            except OSError:
                raise Mismatch("the peer exited while it was checked") from None
        elif _sched(proc)[2] != start:
            raise Mismatch("the peer's pid was reused while it was checked")
        return pid
    except (OSError, IndexError, ValueError) as exc:
        raise Mismatch(f"cannot read the peer's context: {exc}") from None
    finally:
        if pidfd >= 0:
            os.close(pidfd)
