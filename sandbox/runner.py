"""The only module that starts processes.

It starts bwrap, reads bwrap's ``--json-status-fd`` to tell a sandbox that
could not be set up apart from a command that exited 1, forwards signals to
the command, gives the command a private pseudo-terminal (relayed by
``sandbox.ptyrelay``) whenever the caller's stdio includes a terminal, and
makes sure no sandboxed process outlives the wrapper.
"""

from __future__ import annotations

import errno
import os
import select
# The C module: ``signal`` builds IntEnum classes on import, which costs
# milliseconds on every start; the same functions and constants are here.
import _signal as signal
import sys
import time

from sandbox import hostprogs
from sandbox.ptyrelay import Relay, copy_winsize, output_only, write_all

# After forwarding SIGINT/SIGTERM/SIGHUP, how long the command may take to
# run its handlers before the whole sandbox is killed.
GRACE_DEFAULT = 5.0


def grace_seconds(environ) -> float:
    """SANDBOX_KILL_GRACE: seconds between a forwarded signal and the kill."""
    raw = environ.get("SANDBOX_KILL_GRACE")
    if raw is None or raw == "":
        return GRACE_DEFAULT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        from sandbox.errors import UsageError

        raise UsageError(f"SANDBOX_KILL_GRACE={raw!r} is not a number of seconds",
                         hint="use a number between 0 and 3600, e.g. SANDBOX_KILL_GRACE=5")
    return value
# this process's open descriptors: Linux's /proc, or /dev/fd (macOS)
FD_DIR = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_SIGNAL_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP",
                 signal.SIGQUIT: "SIGQUIT"}


class Outcome:
    """What happened to one run (a plain class: this module is on the fast path)."""

    __slots__ = ("started", "exit_status", "bwrap_status", "forwarded", "killed_after_grace",
                 "timed_out", "limits")

    def __init__(self) -> None:
        self.started = False  # bwrap reported the command's exit status
        self.exit_status: int | None = None  # the command's status as bwrap reported it
        self.bwrap_status = 0  # bwrap's own exit status (negative: killed by signal)
        self.forwarded: list[str] = []  # signals passed on to the command
        self.killed_after_grace = False
        self.timed_out = False  # limits.timeout_seconds expired
        self.limits: dict = {"applied": {}, "unavailable": {}}  # what Limits.summary() says


class _Status:
    """Reader for bwrap's ``--json-status-fd`` stream.

    bwrap writes small flat JSON objects; we need two integer fields, so we
    scan for them instead of importing ``json`` on the fast path.  Only
    bwrap holds this pipe (it is close-on-exec for the command), so the
    command cannot forge a record.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.text = ""
        self.child_pid: int | None = None
        self.exit_code: int | None = None
        self.closed = False

    def pump(self) -> None:
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            self.closed = True
        self.text += chunk.decode("utf-8", "replace")
        self.child_pid = _field(self.text, "child-pid", self.child_pid)
        self.exit_code = _field(self.text, "exit-code", self.exit_code)


def _field(text: str, name: str, current: int | None) -> int | None:
    """The integer value of ``"name": N`` in ``text``, once complete."""
    at = text.find(f'"{name}"')
    if at < 0:
        return current
    rest = text[at + len(name) + 2:].lstrip()
    if not rest.startswith(":"):
        return current
    rest = rest[1:].lstrip()
    digits = ""
    for ch in rest:
        if ch.isdigit() or (ch == "-" and not digits):
            digits += ch
        else:
            return int(digits) if digits and digits != "-" else current
    return current  # the number may continue in the next chunk


def _command_pgrp(init_pid: int | None, master: int | None) -> int | None:
    """The process group to signal: the terminal's job, or the command's session."""
    if master is not None:
        try:
            pgrp = os.tcgetpgrp(master)
            if pgrp > 0:
                return pgrp
        except OSError:
            pass
    if init_pid is None:
        return None
    # bwrap's init (pid 1 inside) has one child: the command.  With
    # --new-session bwrap calls setsid() before forking it, so the command's
    # group is the init's, not the command's own pid: ask for it.  (The init
    # itself ignores the signal: it is a namespace init with no handler.)
    try:
        with open(f"/proc/{init_pid}/task/{init_pid}/children") as fh:
            kids = fh.read().split()
        return os.getpgid(int(kids[0])) if kids else None
    except (OSError, ValueError):
        return None


# execve refuses an argv and environment over ARG_MAX (E2BIG): a workspace with
# thousands of protected paths or masked files gives thousands of mounts.
# Past this size the options go to bwrap through an --args descriptor
# instead (NUL-separated, read by bwrap itself), and the argv stays short.
ARGV_INLINE_MAX = 256 << 10
BWRAP_MAX_ARGS = 9000 - 16  # bwrap's own limit on what --args may hold, less our other options


def _long_options_to_fd(argv: list[str], status_fd_arg: int, seccomp, keep: list[int]) -> int:
    """Move bwrap's options before --seccomp/--json-status-fd into a memfd when
    the argv is too long to exec; return the new index of the status fd value."""
    if sum(len(os.fsencode(a)) + 1 for a in argv) <= ARGV_INLINE_MAX:
        return status_fd_arg
    cut = status_fd_arg - 1  # "--json-status-fd"
    if seccomp is not None:
        cut = min(cut, seccomp[0] - 1)  # "--seccomp" comes first
    if cut > BWRAP_MAX_ARGS:
        from sandbox.errors import SetupError

        mounts = sum(1 for a in argv[1:cut] if a.startswith("--") and "bind" in a)
        raise SetupError(f"the plan needs {mounts} bind mounts (protected paths, masked secrets, "
                         f"sockets), more than bwrap accepts ({BWRAP_MAX_ARGS} arguments); the "
                         "command was not run",
                         hint="run 'sandbox explain' to see them; add the directories that hold "
                              "most of them to [protect] skip_dirs, or use a smaller workspace",
                              code="plan_too_large")
    fd = os.memfd_create("sandbox-args", os.MFD_CLOEXEC)
    keep.append(fd)
    write_all(fd, b"".join(os.fsencode(a) + b"\0" for a in argv[1:cut]))
    os.lseek(fd, 0, os.SEEK_SET)
    argv[1:cut] = ["--args", str(fd)]
    return status_fd_arg - (cut - 1) + 2


def run(argv, env: dict[str, str], status_fd_arg: int | None, interactive: bool,
        seccomp: tuple[int, str] | None = None, limits: "Limits | None" = None,
        grace: float = GRACE_DEFAULT, bridge=None, plain: bool = False,
        gate=None, meanwhile=None, verify=None) -> Outcome:
    """Run bwrap's argv to completion and return what happened.

    ``plain``: the argv is not bwrap's but a launcher that becomes the
    command itself (macOS's sandbox-exec): no status stream, the process's
    own exit status is the command's, and its process group is the one
    signalled.

    ``seccomp`` is (argv index, BPF file): the file is opened and its
    descriptor number written into argv for bwrap's --seccomp.  ``limits``
    (see ``Limits``) are applied to bwrap and so to everything in the
    sandbox, never to this process; its cgroup is removed before returning.
    ``bridge`` (a ``sandbox.egress.netns.Bridge``) puts bwrap in a network namespace
    whose only way out is the egress proxy.  ``gate`` is (fd, release) for
    an argv with ``--block-fd fd`` (``sandbox.egress.session.Session.inspect``):
    bwrap gets ``fd``, and once it runs ``release()`` is called, which lets
    it start the command or raises; then bwrap is killed before anything
    else happens (its gate must not see end-of-file), and the error is
    raised from here.  ``verify``: called once bwrap has started, while it
    makes the sandbox; the command cannot start before it has returned,
    and if it raises, bwrap is killed first and its exception raised from
    here (``sandbox.plancache.Speculation``; see ``_filter_gate``).
    ``meanwhile``: the caller's own
    work for after the run (imports, a helper process), called once bwrap
    has started, so it overlaps bwrap setting up the sandbox; it must not
    raise.

    The caller's terminal never reaches the command: when any of fds 0-2 is
    a terminal, those fds are replaced by a private pty that this process
    relays (``sandbox.ptyrelay``); the others (pipes, files) are passed through
    untouched.  This is decided here, from the descriptors themselves, not
    from ``interactive`` (which says the plan put the ctty helper in argv,
    because stdin was a terminal when it was made).
    """
    read_fd, write_fd = os.pipe()
    argv = list(argv)
    if status_fd_arg is not None:
        argv[status_fd_arg] = str(write_fd)
    keep = [write_fd]
    if plain:  # nothing reports through the pipe: the command must not hold it
        os.close(write_fd)
        keep = []
    passed = [gate[0]] if gate is not None else []  # inherited, but the caller's to close
    # the seccomp filter, held back until ``verify`` has passed
    held = (_filter_gate(seccomp[1]) if verify is not None and seccomp is not None
            and gate is None and not plain else None)
    if verify is not None and held is None:
        verify()  # nothing can hold the command back (no filter, another gate, no room)
    if held is not None:
        argv[seccomp[0]] = str(held[0])
        keep.append(held[0])
    elif seccomp is not None:
        bpf_fd = os.open(seccomp[1], os.O_RDONLY | os.O_CLOEXEC)
        argv[seccomp[0]] = str(bpf_fd)
        keep.append(bpf_fd)
    if status_fd_arg is not None:
        status_fd_arg = _long_options_to_fd(argv, status_fd_arg, seccomp, keep)
    # Loader variables reach the command through bwrap's --setenv, never
    # bwrap's own (or the bridge launcher's) loader: see sandbox.hostprogs.
    # Every argv bwrap.build makes has --json-status-fd; the variables go in
    # just before it.  (Without it this is not a sandbox argv, only a test
    # of the spawning, and the environment is passed as it is.)
    moved = []
    if status_fd_arg is not None:
        env, moved = hostprogs.split_env(env)
    if moved:
        if argv[status_fd_arg - 1] != "--json-status-fd":
            from sandbox.errors import SetupError

            raise SetupError("internal error: the plan's argv has no --json-status-fd where "
                             "expected; the command was not run", code="internal_error")
        args_fd = os.memfd_create("sandbox-setenv", os.MFD_CLOEXEC)
        keep.append(args_fd)
        write_all(args_fd, hostprogs.setenv_args(moved))
        os.lseek(args_fd, 0, os.SEEK_SET)
        argv[status_fd_arg - 1:status_fd_arg - 1] = ["--args", str(args_fd)]
    master = slave = None
    stdio: list[int | None] = [None, None, None]
    ttys = [os.isatty(fd) for fd in (0, 1, 2)]
    if any(ttys):
        master, slave = os.openpty()
        copy_winsize(ttys.index(True), slave)
        stdio = [slave if is_tty else None for is_tty in ttys]
        if not ttys[0]:
            output_only(slave)

    pending: list[int] = []

    def on_signal(signum, _frame):
        pending.append(signum)

    old_handlers = {s: signal.signal(s, on_signal) for s in FORWARDED}
    if master is not None:
        old_handlers[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, on_signal)
    relay = None
    unstarted: list[int] = []  # signals that came while a plan that failed was checked
    try:
        if master is not None:  # raw before the start: keys typed from now on are the command's
            relay = Relay(master, 0 if ttys[0] else None, ttys.index(True), slave)
        try:
            proc = _Proc(_spawn_bridged(argv, env, keep + passed, stdio, limits, bridge))
            if bridge is not None:
                # after the fork: a bridge may start a thread now; the pid is
                # what a later run of its session joins (sandbox.egress.netsession)
                bridge.started(proc.pid)
        finally:
            for fd in keep:
                os.close(fd)
            if slave is not None:
                os.close(slave)
        if held is not None:
            opening, held = held, None  # _open_gate closes its write end, whatever happens
            try:
                _open_gate(proc, opening, verify)
            except BaseException:
                # No command started, so there is nothing to forward them to:
                # each is raised again below, with the caller's own handler,
                # as it would have been had the plan been checked before the
                # start (a SIGTERM must not be lost and the run started anew)
                unstarted = [s for s in pending if s in FORWARDED]
                raise
        if gate is not None:
            try:
                gate[1]()
            except BaseException:
                _kill_before_start(proc)
                raise
        if meanwhile is not None:
            meanwhile()
        outcome = _supervise(proc, _Status(read_fd), relay, pending,
                             limits.timeout if limits is not None else None, grace, plain)
        if limits is not None:
            outcome.limits = limits.summary()
        return outcome
    finally:
        if held is not None:  # never started: bwrap was not spawned
            os.close(held[1])
        if relay is not None:
            relay.restore()
        if limits is not None:
            limits.remove_cgroup()
        for s, handler in old_handlers.items():
            signal.signal(s, handler)
        os.close(read_fd)
        if master is not None:
            os.close(master)
        for s in dict.fromkeys(unstarted):
            if signal.getsignal(s) == signal.SIG_DFL:
                BEFORE_FATAL_SIGNAL[0](s)
            signal.raise_signal(s)


# Called with the signal's number just before ``run`` raises again, with
# its default action (death), a signal that came while a plan that failed
# was checked: a served run reports 128 + n to its client first
# (sandbox.served), as it does for a signal that comes before the handlers.
BEFORE_FATAL_SIGNAL = [lambda signum: None]

# F_SETPIPE_SZ / F_GETPIPE_SZ (fcntl.h): not in the os module
_F_SETPIPE_SZ, _F_GETPIPE_SZ = 1031, 1032


def _filter_gate(path: str) -> tuple[int, int, bytes] | None:
    """(read end, write end, filter) of a pipe that carries the seccomp filter
    to bwrap, or None when it cannot (the caller then checks first and
    passes the file).

    bwrap reads its --seccomp descriptor to end-of-file after it has made
    every mount and before anything of the command runs, so while the
    filter is held back the sandbox is built but nothing runs in it.  If
    this process dies before writing, bwrap reads nothing and refuses to
    go on (an empty filter is an error to bwrap and to the kernel).  The
    pipe must hold the whole filter: one write into an empty pipe with room
    for it is never left half done by blocking, so bwrap never reads part
    of a filter (``fcntl`` is imported only here: a few tenths of a ms).
    """
    import fcntl

    with open(path, "rb") as fh:
        bpf = fh.read()
    if not bpf:
        return None
    read_end, write_end = os.pipe()  # close-on-exec: only bwrap gets the read end
    try:
        if fcntl.fcntl(write_end, _F_GETPIPE_SZ) < len(bpf):
            fcntl.fcntl(write_end, _F_SETPIPE_SZ, len(bpf))
        if fcntl.fcntl(write_end, _F_GETPIPE_SZ) >= len(bpf):
            return read_end, write_end, bpf
    except OSError:  # over the user's pipe-buffer limit: the file, checked first
        pass
    os.close(read_end)
    os.close(write_end)
    return None


def _open_gate(proc: "_Proc", held, verify) -> None:
    """Run ``verify`` while bwrap builds the sandbox; then give bwrap its
    filter, or kill it before the command can start and raise."""
    write_end, bpf = held[1], held[2]
    try:
        try:
            verify()
        except BaseException:
            # first kill and reap bwrap, then close: end-of-file reaches a
            # sandbox that is already dying (--die-with-parent), and even
            # read, an empty filter is refused
            _kill_before_start(proc)
            raise
        try:
            if os.write(write_end, bpf) != len(bpf):  # room for all of it: see _filter_gate
                raise OSError(errno.EIO, "short write of the seccomp filter")
        except BrokenPipeError:
            pass  # bwrap gave up before it read: the status says why
        except OSError:
            _kill_before_start(proc)
            raise
    finally:
        os.close(write_end)


def _supervise(proc: "_Proc", status: _Status, relay: "Relay | None",
               pending: list[int], time_limit: float | None = None,
               grace: float = GRACE_DEFAULT, plain: bool = False) -> Outcome:
    outcome = Outcome()
    # limits.timeout_seconds: when it expires the command gets SIGTERM exactly
    # as if the caller had sent it, then the grace period applies
    time_up = None if not time_limit else time.monotonic() + time_limit
    os.set_blocking(status.fd, False)
    # Python retries select() after a signal handler runs, so a signal would
    # not wake a blocking select; the wakeup fd makes it readable instead.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    old_wakeup = signal.set_wakeup_fd(wake_w)
    deadline: float | None = None
    undelivered: list[int] = []
    master = relay.master if relay is not None else None
    try:
        while True:
            if time_up is not None and time.monotonic() >= time_up:
                time_up = None
                outcome.timed_out = True
                pending.append(signal.SIGTERM)
            while pending:
                signum = pending.pop(0)
                if signum == signal.SIGWINCH:
                    if relay is not None:
                        copy_winsize(relay.tty, master)
                    continue
                outcome.forwarded.append(_SIGNAL_NAMES.get(signum, str(signum)))
                undelivered.append(signum)
                # a second signal means: do not wait any longer
                deadline = time.monotonic() + grace if deadline is None else time.monotonic()
            if undelivered:
                # The command may not exist yet (bwrap still setting up); then
                # keep the signal and try again after the next status update.
                if status.child_pid is None and not status.closed:
                    status.pump()
                pgrp = (_command_pgrp(status.child_pid, master) if not plain
                        else _command_pgrp(None, master) or proc.pid)
                if pgrp is not None:
                    for signum in undelivered:
                        try:
                            os.killpg(pgrp, signum)
                        except OSError:
                            pass
                    undelivered.clear()
            if deadline is not None and time.monotonic() >= deadline and proc.poll() is None:
                _kill_sandbox(proc, status.child_pid, plain)
                outcome.killed_after_grace = True
                deadline = None
            # bwrap holds the status pipe until it exits (the command does not
            # inherit it), so end-of-file on it means the sandbox is gone.
            if status.closed and (relay is None or relay.done) and (
                    not plain or proc.poll() is not None):
                break
            fds = [wake_r] + ([] if status.closed else [status.fd])
            if relay is not None:
                fds += relay.wanted()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if time_up is not None:
                left = max(0.0, time_up - time.monotonic())
                timeout = left if timeout is None else min(timeout, left)
            if undelivered or (relay is not None and relay.waiting()):
                # poll until the command can be signalled / has read its input
                timeout = 0.02 if timeout is None else min(timeout, 0.02)
            if status.closed:  # only the relay is left: bound the wait
                timeout = 0.05 if timeout is None else min(timeout, 0.05)
                if proc.poll() is not None and relay is not None:
                    relay.drain()
                    break
            ready, _, _ = select.select(fds, [], [], timeout)
            if wake_r in ready:
                try:
                    os.read(wake_r, 512)
                except BlockingIOError:
                    pass
            if status.fd in ready:
                status.pump()
            if relay is not None:
                relay.move(ready)
    finally:
        signal.set_wakeup_fd(old_wakeup)
        os.close(wake_r)
        os.close(wake_w)
        if relay is not None:
            relay.restore()
        if proc.poll() is None and status.closed:
            proc.wait(timeout=2)
        if proc.poll() is None:
            _kill_sandbox(proc, status.child_pid, plain)
        proc.wait()
    outcome.started = status.exit_code is not None
    outcome.exit_status = status.exit_code
    if plain:  # the process was the command: its status is the command's
        code = proc.returncode
        outcome.started = code is not None
        outcome.exit_status = None if code is None else (128 - code if code < 0 else code)
    if not outcome.started and outcome.killed_after_grace and status.child_pid is not None:
        # the command ran and was SIGKILLed with the sandbox: not a setup error
        outcome.started = True
        outcome.exit_status = 128 + signal.SIGKILL
    outcome.bwrap_status = proc.returncode
    return outcome


# Signals the command must start with at their default action: Python
# ignores SIGPIPE and SIGXFSZ (an ignored signal stays ignored across exec),
# and the forwarded ones have Python handlers until exec.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM,
                    signal.SIGHUP, signal.SIGQUIT)


def _spawn_bridged(argv, env, keep, stdio, limits, bridge) -> int:
    """``_spawn``, with the network bridge in the mode it asks for.

    In auto mode a direct bridge that the host refuses (a user namespace
    without capabilities, as AppArmor gives unprivileged processes on
    Ubuntu 24.04+) is tried again through bwrap, which such hosts allow.
    Nothing has run at that point: the child stopped before exec.
    """
    if bridge is None:
        return _spawn(argv, env, keep, stdio, limits, bridge)
    if bridge.mode in ("auto", "direct"):
        from sandbox.errors import BridgeError

        while True:
            try:
                return _spawn(argv, env, keep, stdio, limits, bridge)
            except BridgeError as err:
                if err.stage == 4 and getattr(err, "errno", 0) == errno.EADDRINUSE:
                    # a process of the session holds the port this run's
                    # proxy was given: never use it, take the next one
                    moved = bridge.another_port(env)
                    if moved is not None:
                        env = moved
                        continue
                # the namespace itself was refused (6: entering a session's)
                if bridge.mode == "direct" or err.stage not in (1, 2, 3, 6):
                    raise
                break
    outer = bridge.wrap(list(argv), sys.executable)
    passed = [bridge.channel.fileno()] if bridge.passes_channel else []
    return _spawn(outer, env, keep + passed, stdio, limits, None)


def _spawn(argv: list[str], env: dict[str, str], keep: list[int], stdio: list[int | None],
           limits: "Limits | None" = None, bridge=None) -> int:
    """Start bwrap with only stdio and the status pipe inherited.

    Descriptors the caller leaked to us must not reach the sandbox, so every
    other one is made close-on-exec first.  bwrap gets a process group of its
    own: a terminal's Ctrl-C must not kill bwrap (and with it, through
    --die-with-parent, the whole sandbox) before the command's own handlers
    have run.

    The child must lower its soft *and hard* rlimits and join its cgroup
    before it becomes bwrap, so something runs between the spawn and bwrap:
    the native launcher (native/launch.c, from one ``posix_spawn``) where it
    is installed, else a fork of this process (``_child``).  Without limits,
    bridge or launcher it is one ``posix_spawn`` of bwrap.  The alternatives
    to a step before bwrap both leak:

    * lowering the limits in the wrapper around ``posix_spawn`` and restoring
      them afterwards works only for root: anyone else cannot raise a hard
      limit again, so the wrapper would keep a CPU or address-space limit
      that could kill it while it supervises (and a soft-only limit is one
      the command could raise itself);
    * ``prlimit()`` / a ``cgroup.procs`` write for bwrap's pid after the
      spawn races with bwrap, which may already have forked the sandbox's
      init (children keep the limits and cgroup they were born with), and a
      setuid bwrap refuses prlimit from its unprivileged parent.

    The fork of a warm wrapper costs 2 to 3 ms before bwrap runs, the
    launcher a few tenths.  With a network bridge the child (launcher or
    fork) also enters the bridge's namespace before it becomes bwrap (see
    ``sandbox.egress.netns``).
    """
    for name in os.listdir(FD_DIR):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass
    for fd in keep:
        os.set_inheritable(fd, True)
    if limits is None and bridge is None and _launcher() is None:
        # (through the launcher where there is one: see its internal signals)
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)
                   if fd is not None]
        return os.posix_spawn(argv[0], argv, env, file_actions=actions, setpgroup=0,
                              setsigdef=_DEFAULT_SIGNALS)
    import resource

    rlimits = [(getattr(resource, name), soft, hard)
               for name, soft, hard in (limits.rlimits if limits is not None else ())]
    procs_fd = limits.procs_fd if limits is not None else None
    err_r, err_w = os.pipe()  # close-on-exec: end-of-file means bwrap was exec'd
    try:
        pid = _launch(argv, env, stdio, rlimits, procs_fd, err_w, bridge)
        if pid is None:
            argv = [os.fsencode(a) for a in argv]
            envb = {os.fsencode(k): os.fsencode(v) for k, v in env.items()}
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child never returns
                _child(argv, envb, stdio, rlimits, procs_fd, err_w, resource.setrlimit, bridge)
        os.close(err_w)
        err_w = -1
        report = b""
        while True:
            chunk = os.read(err_r, 256)
            if not chunk:
                break
            report += chunk
    finally:
        os.close(err_r)
        if err_w >= 0:
            os.close(err_w)
    for line in report.decode("ascii", "replace").split():
        code = int(line[1:]) if line[1:].isdigit() else 0
        if line.startswith("C") and limits is not None:
            limits.not_joined(code)
        elif line.startswith("N"):  # the network bridge failed: N<stage>:<errno>
            os.waitpid(pid, 0)
            from sandbox.egress import netns
            from sandbox.errors import BridgeError

            stage, _, number = line[1:].partition(":")
            error = BridgeError(netns.describe_failure(int(stage or 0), int(number or 0))
                                + "; the command was not run", int(stage or 0),
                                hint=netns.failure_hint(int(stage or 0)))
            error.errno = int(number or 0)
            raise error
        elif line.startswith("E"):
            os.waitpid(pid, 0)
            raise OSError(code, os.strerror(code) if code else "cannot start bwrap",
                          os.fsdecode(argv[0]))
    if limits is not None:
        # only now: a bridge that failed before exec is tried again (another
        # port, or through bwrap), and that child must join the cgroup too
        limits.spawned()
    return pid


# The native launcher (native/launch.c, installed as sandbox/_native/launch):
# _child's steps from a posix_spawn, without forking the wrapper.  Looked up
# once; SANDBOX_LAUNCH=fork keeps the fork (the tests compare the two).
_LAUNCHER: list = []


def _launcher() -> str | None:
    if not _LAUNCHER:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_native", "launch")
        ok = os.environ.get("SANDBOX_LAUNCH") != "fork" and os.access(path, os.X_OK)
        _LAUNCHER.append(path if ok else None)
    return _LAUNCHER[0]


def _launch(argv, env, stdio, rlimits, procs_fd, err_w, bridge) -> int | None:
    """Start the launcher, which becomes bwrap as ``_child`` would; its pid,
    or None when there is none (or it cannot take this bridge): fork then.

    posix_spawn copies nothing of this process: it sets the process group,
    the default signal actions and stdio, and the launcher does the rest
    (the cgroup, the bridge, the rlimits) and reports on ``err_w`` exactly
    as ``_child`` does.  Its own descriptors are inheritable only for the
    moment of the spawn, and it closes them (close-on-exec) before bwrap.
    """
    launcher = _launcher()
    if launcher is None:
        return None
    spec, fds = "-", []
    if bridge is not None:
        # a bridge that only Python can enter (a test's stand-in) takes the fork
        found = getattr(bridge, "launch_args", lambda: None)()
        if found is None:
            return None
        spec, fds = found
    fds = [err_w] + ([procs_fd] if procs_fd is not None else []) + fds
    limits = ",".join(f"{res}:{soft}:{hard}" for res, soft, hard in rlimits) or "-"
    actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)
               if fd is not None]
    for fd in fds:
        os.set_inheritable(fd, True)
    try:
        return os.posix_spawn(launcher, [launcher, str(err_w),
                                         "-" if procs_fd is None else str(procs_fd),
                                         limits, spec, "--", *argv],
                              env, file_actions=actions, setpgroup=0,
                              setsigdef=_DEFAULT_SIGNALS)
    except OSError:  # it cannot be run here (a noexec mount): the fork, from now on
        _LAUNCHER[0] = None
        return None
    finally:
        for fd in fds:
            os.set_inheritable(fd, False)


def _child(argv, env, stdio, rlimits, procs_fd, err_w, setrlimit, bridge=None) -> None:
    """In the forked child: become bwrap, with the limits.  Never returns.

    Only system calls from here on: no imports, and nothing that could run
    the wrapper's code a second time.
    """
    try:
        os.setpgid(0, 0)
        for signum in _DEFAULT_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        if procs_fd is not None:
            try:  # join the run's cgroup: everything bwrap starts is born in it
                os.write(procs_fd, b"0")
            except OSError as exc:
                os.write(err_w, b"C%d\n" % (exc.errno or 0))
        if bridge is not None:
            try:  # after the cgroup, so the namespace's owner is born limited too
                bridge.enter()
            except OSError as exc:
                os.write(err_w, b"N%d:%d\n" % (getattr(exc, "stage", 0), exc.errno or 0))
                os._exit(127)
        for target, fd in enumerate(stdio):
            if fd is not None:
                os.dup2(fd, target)
        for res, soft, hard in rlimits:  # last: RLIMIT_AS may refuse allocations
            setrlimit(res, (soft, hard))
        os.execve(argv[0], argv, env)
    except OSError as exc:
        try:
            os.write(err_w, b"E%d\n" % (exc.errno or 0))
        except OSError:
            pass
    except BaseException:
        try:
            os.write(err_w, b"E0\n")
        except BaseException:
            pass
    finally:
        os._exit(127)


def fork_helper(main) -> int:
    """Fork a host-side helper (the egress proxy) that runs ``main()`` and exits.

    A fork, not an exec: the helper starts with the wrapper's modules already
    loaded.  It gets a process group of its own so a terminal's Ctrl-C does
    not reach it; the wrapper stops it with ``stop_helper``.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        code = 0
        try:
            os.setpgid(0, 0)
            main()
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    return pid


def stop_helper(pid: int, timeout: float = 3.0) -> tuple[bool, int]:
    """Stop a helper from ``fork_helper``.  Returns (it had already exited, status)."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True, 0
    if done:
        return True, os.waitstatus_to_exitcode(status)
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        pass
    reaped = []

    def exited() -> bool:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            reaped.append(status)
        return bool(done)

    _wait_until(pid, exited, timeout)
    if reaped:
        return False, os.waitstatus_to_exitcode(reaped[0])
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return False, os.waitstatus_to_exitcode(status)


class Limits:
    """The ``[limits]`` of one run, ready to apply (see ``sandbox.limits`` for ``plan``).

    Built before the start so that the caller can print a warning for any
    cgroup limit this host cannot give us.  rlimits never raise what the
    wrapper already has: a hard limit above the current one is lowered to it,
    and the soft limit is the smaller of the current soft limit and the new
    hard one (so a caller's conservative soft limit survives).
    """

    def __init__(self, plan: dict) -> None:
        self.timeout = plan.get("timeout")
        self.applied: dict = {}
        self.unavailable: dict = {}
        self.rlimits: list[tuple[str, int, int]] = []
        self.cgroup: str | None = None
        self.procs_fd: int | None = None
        self._cgroup_keys: list[str] = []
        self._set_rlimits(plan.get("rlimits", ()))
        if self.timeout:
            self.applied["timeout_seconds"] = self.timeout
        if plan.get("cgroup"):
            self._make_cgroup(plan["cgroup"])

    def _set_rlimits(self, wanted) -> None:
        import resource

        inf = resource.RLIM_INFINITY
        for key, name, soft, hard, scale in wanted:
            cur_soft, cur_hard = resource.getrlimit(getattr(resource, name))
            new_hard = hard if cur_hard == inf else min(hard, cur_hard)
            new_soft = min(soft, new_hard) if cur_soft == inf else min(soft, new_hard, cur_soft)
            self.rlimits.append((name, new_soft, new_hard))
            if key == "core_dumps":
                self.applied[key] = False
            else:
                shown = new_soft if name == "RLIMIT_CPU" else new_hard
                self.applied[key] = shown // scale

    # -- cgroup v2 ---------------------------------------------------------------
    def _make_cgroup(self, wanted) -> None:
        keys = [key for key, _, _, _ in wanted]
        base, problem = _own_cgroup()
        if base is None:
            self._unavailable(keys, problem)
            return
        try:
            with open(os.path.join(base, "cgroup.subtree_control")) as fh:
                enabled = fh.read().split()
        except OSError as exc:
            self._unavailable(keys, f"cannot read {base}/cgroup.subtree_control: {exc.strerror}")
            return
        usable = []
        for key, controller, file, value in wanted:
            if controller in enabled:
                usable.append((key, file, value))
            else:
                self._unavailable([key], f"the {controller} controller is not delegated to "
                                         f"child cgroups of {base}")
        if not usable:
            return
        path = os.path.join(base, f"sandbox-{os.getpid()}-{os.urandom(4).hex()}")
        try:
            os.mkdir(path, 0o755)
        except OSError as exc:
            self._unavailable([k for k, _, _ in usable],
                              f"cannot create a cgroup in {base}: {exc.strerror}")
            return
        self.cgroup = path  # ours from here on: remove_cgroup() takes it away
        for key, file, value in usable:
            try:
                _write(os.path.join(path, file), value)
            except OSError as exc:
                self._unavailable([key], f"cannot write {file}: {exc.strerror}")
                continue
            if file == "memory.max":
                # swap counts too, or memory_max_mb would only limit RAM
                try:
                    _write(os.path.join(path, "memory.swap.max"), "0")
                except OSError:
                    pass
            self._cgroup_keys.append(key)
            self.applied[key] = int(value) // (1 << 20 if file == "memory.max" else 1)
        if not self._cgroup_keys:
            self.remove_cgroup()
            return
        try:
            self.procs_fd = os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            self.not_joined(exc.errno or 0)

    def _unavailable(self, keys, reason: str) -> None:
        for key in keys:
            self.unavailable[key] = reason
            self.applied.pop(key, None)

    def not_joined(self, code: int) -> None:
        """The child could not move itself into the cgroup: its limits do not apply."""
        reason = f"cannot move the sandbox into {self.cgroup}: {os.strerror(code)}"
        self._unavailable(self._cgroup_keys, reason)
        self._cgroup_keys = []

    def spawned(self) -> None:
        if self.procs_fd is not None:
            os.close(self.procs_fd)
            self.procs_fd = None

    def warning(self) -> str | None:
        """One line naming the limits this host could not apply, or None."""
        if not self.unavailable:
            return None
        reasons = list(dict.fromkeys(self.unavailable.values()))
        return (f"limits not applied ({', '.join(self.unavailable)}): {'; '.join(reasons)}; "
                "the run goes ahead without them (set them to 0 in a profile to stop this warning)")

    def summary(self) -> dict:
        return {"applied": dict(self.applied), "unavailable": dict(self.unavailable),
                "cgroup": self.cgroup}

    def remove_cgroup(self) -> None:
        """Remove our cgroup, killing whatever is still in it.  Only ever ours."""
        self.spawned()
        path, self.cgroup = self.cgroup, None
        if path is None:
            return
        killed = False
        for _ in range(200):  # bounded: about 2 s
            try:
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    return
            if not killed:  # something outlived the sandbox's init: kill it
                killed = True
                try:
                    _write(os.path.join(path, "cgroup.kill"), "1")
                except OSError:
                    pass
            time.sleep(0.01)


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _own_cgroup() -> tuple[str | None, str]:
    """This process's cgroup v2 directory, or (None, why not)."""
    try:
        with open("/proc/self/cgroup") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        return None, f"cannot read /proc/self/cgroup: {exc.strerror}"
    rel = next((line[3:] for line in lines if line.startswith("0::")), None)
    if rel is None:
        return None, "no cgroup v2 hierarchy"
    try:
        with open("/proc/self/mountinfo") as fh:
            mounts = fh.read().splitlines()
    except OSError as exc:
        return None, f"cannot read /proc/self/mountinfo: {exc.strerror}"
    for line in mounts:
        fields = line.split()
        sep = fields.index("-") if "-" in fields else -1
        if sep < 0 or fields[sep + 1] != "cgroup2":
            continue
        root, point = fields[3], fields[4].replace("\\040", " ")
        if rel == root or rel.startswith(root.rstrip("/") + "/"):
            path = os.path.normpath(point + "/" + rel[len(root.rstrip("/")):])
            if os.path.isdir(path):
                return path, ""
    return None, f"the cgroup v2 hierarchy is not mounted where this process's cgroup ({rel}) is visible"


def _kill_before_start(proc: "_Proc") -> None:
    """bwrap waits on its --block-fd and the command has not started: kill
    bwrap and its process group now, and reap it (its sandbox child dies with
    it: --die-with-parent)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    proc.wait()


class _Proc:
    """The spawned bwrap: poll and wait without the subprocess module."""

    __slots__ = ("pid", "returncode")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        if timeout is None:
            if self.returncode is None:
                _, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode
        # bwrap closes the status pipe as it exits, a moment before it can be
        # reaped: on a busy machine that moment often outlasted the first
        # poll, and a 10 ms sleep then cost a whole start (see _wait_until)
        _wait_until(self.pid, lambda: self.poll() is not None, timeout)
        return self.returncode


def _wait_until(pid: int, exited, timeout: float) -> None:
    """Call ``exited()`` until it is true or ``timeout`` seconds have passed,
    waking when ``pid`` exits (a pidfd is readable exactly then), not on a
    polling interval; where there are no pidfds (macOS), every 5 ms."""
    end = time.monotonic() + timeout
    try:
        exit_fd = os.pidfd_open(pid)
    except (OSError, AttributeError):  # AttributeError: not Linux
        exit_fd = None
    try:
        while not exited() and time.monotonic() < end:
            if exit_fd is not None:
                select.select([exit_fd], [], [], max(0.0, end - time.monotonic()))
            else:
                time.sleep(0.005)
    finally:
        if exit_fd is not None:
            os.close(exit_fd)


def _kill_sandbox(proc: "_Proc", init_pid: int | None, plain: bool = False) -> None:
    """SIGKILL the sandbox's init: the kernel then kills every process in it.
    (``plain``: no init and no PID namespace; its process group is killed.)"""
    if plain:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    for pid in (init_pid, proc.pid):
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def probe_namespaces(bwrap_path: str) -> str | None:
    """After a failed start: can bwrap create namespaces at all?  Returns its error."""
    import subprocess

    # bwrap runs on the host: no loader variables; and `true` by its full
    # path, never PATH's (the probe has no seccomp filter and no new session)
    env, _ = hostprogs.split_env(dict(os.environ))
    true = hostprogs.find("true", ()) or "/bin/true"
    try:
        done = subprocess.run([bwrap_path, "--unshare-user", "--unshare-net", "--ro-bind", "/", "/",
                               "--", true], capture_output=True, text=True, timeout=10, env=env,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    return (done.stderr.strip() or f"exit {done.returncode}").splitlines()[-1]


# Where `hold` finds cat: fixed system places, never PATH
_CAT = ("/usr/bin/cat", "/bin/cat")


def hold(fd: int) -> int:
    """Keep ``fd`` open in a small host process until the returned pipe is closed.

    For a descriptor whose last close is slow (an inotify instance waits out
    the kernel's fsnotify grace period, 4 to 16 ms): the wrapper closes its
    copy at once, then the pipe, and ``cat`` sees end-of-file and exits,
    closing the last copy on its own time.  ``cat`` gets nothing but the
    pipe on stdin, /dev/null for output, ``fd`` as its fd 3 and an empty
    environment; every other descriptor of ours is close-on-exec (``_spawn``
    made sure of it before bwrap started).  ``posix_spawn``, not fork: no
    copy-on-write faults for the wrapper afterwards.  Returns -1 (and the
    caller closes ``fd`` itself) when cat cannot be started.
    """
    import fcntl

    cat = next((p for p in _CAT if os.access(p, os.X_OK)), None)
    if cat is None:
        return -1
    wait, release = os.pipe()
    # above 3 both, so neither dup2 below can overwrite the other's source
    # (a caller that closed its stdin would make ours fd 0)
    sources = [fcntl.fcntl(f, fcntl.F_DUPFD_CLOEXEC, 10) for f in (wait, fd)]
    os.close(wait)
    try:
        os.posix_spawn(cat, ["cat"], {}, setpgroup=0, setsigdef=_DEFAULT_SIGNALS, file_actions=[
            (os.POSIX_SPAWN_DUP2, sources[0], 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, sources[1], 3)])
    except OSError:
        os.close(release)
        return -1
    finally:
        for f in sources:
            os.close(f)
    return release


def run_cli(argv: list[str], env: dict[str, str], cwd: str | None, *, stdin=None, input=None,
            stdout=None, stderr=None, pass_fds=(), grace: float = GRACE_DEFAULT):
    """Run ``sandbox`` itself as a child process for the Python API (``sandbox.api``).

    A child, not a call in this process: a run installs signal handlers,
    relays the caller's terminal and writes to descriptors 0-2, none of which
    a library may do to its caller (and signal handlers only work in the
    main thread).  Returns (exit status, stdout bytes or None, stderr bytes
    or None).  If the caller is interrupted (KeyboardInterrupt, or any
    exception while waiting), the child gets SIGTERM, which it forwards to
    the command as it does for a terminal's, then SIGKILL after the grace
    period and a little more; the exception is raised again.
    """
    import subprocess

    proc = subprocess.Popen(argv, env=env, cwd=cwd, pass_fds=tuple(pass_fds),
                            stdin=subprocess.PIPE if input is not None else stdin,
                            stdout=stdout, stderr=stderr)
    try:
        out, err = proc.communicate(input)
    except BaseException:
        proc.terminate()
        try:
            proc.wait(grace + 5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    return proc.returncode, out, err


def in_child(probe, timeout: float = 5.0) -> bytes | None:
    """Run ``probe()`` (returning bytes) in a forked child and return what it
    returned, or None if the child died or took too long.

    For ``sandbox.linux.hostprobe``: a probe that tries ``unshare`` changes the
    process that tries it, and a seccomp filter may kill it outright, so it
    never runs in the wrapper itself.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        try:
            os.close(read_fd)
            write_all(write_fd, probe())
        finally:
            os._exit(0)
    os.close(write_fd)
    out = b""
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([read_fd], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                break
            chunk = os.read(read_fd, 4096)
            if not chunk:
                break
            out += chunk
    finally:
        os.close(read_fd)
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
            if not done:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            status = 0
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        return None
    return out


def host_output(argv: list[str], timeout: float = 10.0) -> tuple[int, str]:
    """(exit status, stdout + stderr) of a host program named by full path;
    no loader variables, stdin from /dev/null (``sandbox doctor``'s probes)."""
    import subprocess

    env, _ = hostprogs.split_env(dict(os.environ))
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return -1, str(exc)
    return done.returncode, (done.stdout + done.stderr).strip()


def spawn_server(python: str, script: str, env: dict[str, str]) -> int:
    """Start the warm server (``sandbox.server``) detached; its pid.

    ``python script server run`` through ``posix_spawn`` with ``setsid``: a
    session of its own, so no terminal signal or hang-up of the caller's
    reaches it.  Its stdio is /dev/null and every other descriptor of ours
    is made close-on-exec first: a caller that reads our output through a
    pipe (``$(sandbox run -- true)``) must see end-of-file when the run
    exits, never wait for a server that outlives it, and nothing the run
    held (a plan, a lock, a report file) may stay open in it.  The caller
    does not wait for it; it is reaped by whoever inherits it.
    """
    for name in os.listdir(FD_DIR):
        fd = int(name)
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass
    actions = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    return os.posix_spawn(python, [python, script, "server", "run"], env,
                          file_actions=actions, setsid=True, setsigdef=_DEFAULT_SIGNALS,
                          setsigmask=())
