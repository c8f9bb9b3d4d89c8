"""The only module that starts processes.

It starts bwrap, reads bwrap's ``--json-status-fd`` to tell a sandbox that
could not be set up apart from a command that exited 1, forwards signals to
the command, relays a pseudo-terminal for interactive use, and makes sure no
sandboxed process outlives the wrapper.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import subprocess
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
    """Incremental reader for bwrap's stream of JSON status documents."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
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
        self.buf += chunk
        decoder = json.JSONDecoder()
        text = self.buf.decode("utf-8", "replace").lstrip()
        while text:
            try:
                doc, end = decoder.raw_decode(text)
            except ValueError:
                break
            if isinstance(doc, dict):
                if "child-pid" in doc:
                    self.child_pid = int(doc["child-pid"])
                if "exit-code" in doc:
                    self.exit_code = int(doc["exit-code"])
            text = text[end:].lstrip()
        self.buf = text.encode()


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
    # bwrap's init (pid 1 inside) has one child: the command, which called
    # setsid() (--new-session) and so leads its own process group.
    try:
        with open(f"/proc/{init_pid}/task/{init_pid}/children") as fh:
            kids = fh.read().split()
        return int(kids[0]) if kids else None
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


def run(argv, env: dict[str, str], status_fd_arg: int | None, interactive: bool) -> Outcome:
    """Run bwrap's argv to completion and return what happened."""
    read_fd, write_fd = os.pipe()
    argv = list(argv)
    if status_fd_arg is not None:
        argv[status_fd_arg] = str(write_fd)
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
            # bwrap gets a process group of its own: a terminal's Ctrl-C must
            # not kill bwrap (and with it, via --die-with-parent, the whole
            # sandbox) before the command's own handlers have run.
            proc = subprocess.Popen(argv, env=env, pass_fds=(write_fd,), close_fds=True,
                                    stdin=stdio[0], stdout=stdio[1], stderr=stdio[2],
                                    process_group=0)
        finally:
            os.close(write_fd)
            if slave is not None:
                os.close(slave)
        return _supervise(proc, _Status(read_fd), master, pending)
    finally:
        for s, handler in old_handlers.items():
            signal.signal(s, handler)
        os.close(read_fd)
        if master is not None:
            os.close(master)


def _supervise(proc: subprocess.Popen, status: _Status, master: int | None,
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
                pgrp = _command_pgrp(status.child_pid, master)
                if pgrp is not None:
                    try:
                        os.killpg(pgrp, signum)
                    except OSError:
                        pass
                # a second signal means: do not wait any longer
                deadline = time.monotonic() + GRACE_SECONDS if deadline is None else time.monotonic()
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
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            _kill_sandbox(proc, status.child_pid)
        proc.wait()
    outcome.started = status.exit_code is not None
    outcome.exit_status = status.exit_code
    outcome.bwrap_status = proc.returncode
    return outcome


def _kill_sandbox(proc: subprocess.Popen, init_pid: int | None) -> None:
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
    try:
        done = subprocess.run([bwrap_path, "--unshare-user", "--unshare-net", "--ro-bind", "/", "/",
                               "true"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    return (done.stderr.strip() or f"exit {done.returncode}").splitlines()[-1]
