"""The only module that starts processes.

It starts bwrap, reads bwrap's ``--json-status-fd`` to tell a sandbox that
could not be set up apart from a command that exited 1, forwards signals to
the command, relays a pseudo-terminal for interactive use, and makes sure no
sandboxed process outlives the wrapper.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import sys
import time

# After forwarding SIGINT/SIGTERM/SIGHUP, how long the command may take to
# run its handlers before the whole sandbox is killed.
GRACE_SECONDS = float(os.environ.get("SANDBOX_KILL_GRACE", "5"))
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class Outcome:
    """What happened to one run (a plain class: this module is on the fast path)."""

    __slots__ = ("started", "exit_status", "bwrap_status", "forwarded", "killed_after_grace")

    def __init__(self) -> None:
        self.started = False  # bwrap reported the command's exit status
        self.exit_status: int | None = None  # the command's status as bwrap reported it
        self.bwrap_status = 0  # bwrap's own exit status (negative: killed by signal)
        self.forwarded: list[str] = []  # signals passed on to the command
        self.killed_after_grace = False


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


def _copy_winsize(src: int, dst: int) -> None:
    import fcntl
    import termios

    try:
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, termios.TIOCSWINSZ, size)
    except OSError:
        pass


def run(argv, env: dict[str, str], status_fd_arg: int | None, interactive: bool,
        seccomp: tuple[int, str] | None = None) -> Outcome:
    """Run bwrap's argv to completion and return what happened.

    ``seccomp`` is (argv index, BPF file): the file is opened and its
    descriptor number written into argv for bwrap's --seccomp.
    """
    read_fd, write_fd = os.pipe()
    argv = list(argv)
    if status_fd_arg is not None:
        argv[status_fd_arg] = str(write_fd)
    keep = [write_fd]
    if seccomp is not None:
        bpf_fd = os.open(seccomp[1], os.O_RDONLY | os.O_CLOEXEC)
        argv[seccomp[0]] = str(bpf_fd)
        keep.append(bpf_fd)
    master = slave = None
    stdio: list[int | None] = [None, None, None]
    if interactive:
        master, slave = os.openpty()
        _copy_winsize(sys.stdin.fileno(), slave)
        stdio = [slave if os.isatty(fd) else None for fd in (0, 1, 2)]

    pending: list[int] = []

    def on_signal(signum, _frame):
        pending.append(signum)

    old_handlers = {s: signal.signal(s, on_signal) for s in FORWARDED}
    if interactive:
        old_handlers[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, on_signal)
    try:
        try:
            proc = _Proc(_spawn(argv, env, keep, stdio))
        finally:
            for fd in keep:
                os.close(fd)
            if slave is not None:
                os.close(slave)
        return _supervise(proc, _Status(read_fd), master, pending)
    finally:
        for s, handler in old_handlers.items():
            signal.signal(s, handler)
        os.close(read_fd)
        if master is not None:
            os.close(master)


def _supervise(proc: "_Proc", status: _Status, master: int | None,
               pending: list[int]) -> Outcome:
    outcome = Outcome()
    os.set_blocking(status.fd, False)
    # Python retries select() after a signal handler runs, so a signal would
    # not wake a blocking select; the wakeup fd makes it readable instead.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    old_wakeup = signal.set_wakeup_fd(wake_w)
    deadline: float | None = None
    undelivered: list[int] = []
    relay = _Relay(master) if master is not None else None
    try:
        while True:
            while pending:
                signum = pending.pop(0)
                if signum == signal.SIGWINCH:
                    if master is not None:
                        _copy_winsize(sys.stdin.fileno(), master)
                    continue
                outcome.forwarded.append(signal.Signals(signum).name)
                undelivered.append(signum)
                # a second signal means: do not wait any longer
                deadline = time.monotonic() + GRACE_SECONDS if deadline is None else time.monotonic()
            if undelivered:
                # The command may not exist yet (bwrap still setting up); then
                # keep the signal and try again after the next status update.
                if status.child_pid is None and not status.closed:
                    status.pump()
                pgrp = _command_pgrp(status.child_pid, master)
                if pgrp is not None:
                    for signum in undelivered:
                        try:
                            os.killpg(pgrp, signum)
                        except OSError:
                            pass
                    undelivered.clear()
            if deadline is not None and time.monotonic() >= deadline and proc.poll() is None:
                _kill_sandbox(proc, status.child_pid)
                outcome.killed_after_grace = True
                deadline = None
            # bwrap holds the status pipe until it exits (the command does not
            # inherit it), so end-of-file on it means the sandbox is gone.
            if status.closed and (relay is None or relay.done):
                break
            fds = [wake_r] + ([] if status.closed else [status.fd])
            if relay is not None:
                fds += relay.wanted()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if undelivered:  # poll until the command can be signalled
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
            _kill_sandbox(proc, status.child_pid)
        proc.wait()
    outcome.started = status.exit_code is not None
    outcome.exit_status = status.exit_code
    if not outcome.started and outcome.killed_after_grace and status.child_pid is not None:
        # the command ran and was SIGKILLed with the sandbox: not a setup error
        outcome.started = True
        outcome.exit_status = 128 + signal.SIGKILL
    outcome.bwrap_status = proc.returncode
    return outcome


def _spawn(argv: list[str], env: dict[str, str], keep: list[int], stdio: list[int | None]) -> int:
    """posix_spawn bwrap with only stdio and the status pipe inherited.

    (``subprocess`` would do the same at a higher import cost.)  Descriptors
    the caller leaked to us must not reach the sandbox, so every other one
    is made close-on-exec first.  bwrap gets a process group of its own: a
    terminal's Ctrl-C must not kill bwrap (and with it, through
    --die-with-parent, the whole sandbox) before the command's own handlers
    have run.  Python ignores SIGPIPE; the command must not inherit that.
    """
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass
    for fd in keep:
        os.set_inheritable(fd, True)
    actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio) if fd is not None]
    return os.posix_spawn(argv[0], argv, env, file_actions=actions, setpgroup=0,
                          setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT,
                                     signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT))


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
        end = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < end:
            time.sleep(0.01)
        return self.returncode


def _kill_sandbox(proc: "_Proc", init_pid: int | None) -> None:
    """SIGKILL the sandbox's init: the kernel then kills every process in it."""
    for pid in (init_pid, proc.pid):
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


class _Relay:
    """Copy bytes between the caller's terminal and the command's pty."""

    def __init__(self, master: int) -> None:
        import termios
        import tty

        self.master = master
        self.stdin = sys.stdin.fileno()
        self.out = 1 if os.isatty(1) else 2
        self.stdin_open = True
        self.done = False
        self.saved = None
        try:
            self.saved = termios.tcgetattr(self.stdin)
            tty.setraw(self.stdin)
        except termios.error:
            self.saved = None

    def wanted(self) -> list[int]:
        fds = [] if self.done else [self.master]
        if self.stdin_open and not self.done:
            fds.append(self.stdin)
        return fds

    def move(self, ready: list[int]) -> None:
        if self.master in ready:
            try:
                data = os.read(self.master, 65536)
            except OSError as exc:  # EIO: every slave end is closed
                if exc.errno != errno.EIO:
                    raise
                data = b""
            if not data:
                self.done = True
            else:
                _write_all(self.out, data)
        if self.stdin in ready and self.stdin_open:
            data = os.read(self.stdin, 65536)
            if data:
                _write_all(self.master, data)
            else:
                self.stdin_open = False

    def drain(self) -> None:
        """Copy what the command wrote before it exited."""
        for _ in range(64):
            if self.done or not select.select([self.master], [], [], 0)[0]:
                return
            self.move([self.master])

    def restore(self) -> None:
        if self.saved is not None:
            import termios

            termios.tcsetattr(self.stdin, termios.TCSAFLUSH, self.saved)
            self.saved = None


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            select.select([], [fd], [], 1)
            continue
        except OSError:
            return
        data = data[n:]


def probe_namespaces(bwrap_path: str) -> str | None:
    """After a failed start: can bwrap create namespaces at all?  Returns its error."""
    import subprocess

    try:
        done = subprocess.run([bwrap_path, "--unshare-user", "--unshare-net", "--ro-bind", "/", "/",
                               "true"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    return (done.stderr.strip() or f"exit {done.returncode}").splitlines()[-1]
