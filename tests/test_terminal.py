"""Terminals and signals: the real ``sandbox run`` under a pty, signalled and killed.

What is checked, and why:

* Interactive mode (stdin is a terminal): the command runs on a pty of its
  own that the wrapper relays.  Ctrl-C typed on the caller's terminal reaches
  the command's SIGINT handler; ``test -t 0`` holds.  ``tty`` prints
  ``/dev/console``, not ``/dev/pts/N``: bwrap's ``--dev`` mounts a fresh
  devpts instance and binds its own stdout terminal (here: the sandbox's pty)
  over ``/dev/console``, so that is the only name the terminal has inside.
  ``/proc/self/fd/0`` still reads ``/dev/pts/N`` (the host's name), and that
  N must differ from the caller's terminal.
* TIOCSTI.  Non-interactive with stdout on the caller's terminal: the command
  is in a new session without a controlling terminal, so pushing a byte into
  the caller's terminal through fd 0/1/2, /dev/tty or /dev/console must fail
  (EPERM/EIO/ENOTTY/ENXIO) and nothing may arrive in the terminal's input
  queue; a control run of the same snippet *outside* the sandbox shows the
  attack works on this kernel (dev.tty.legacy_tiocsti).  Interactive: TIOCSTI
  may succeed, but only into the sandbox's own pty: the command reads the
  injected byte back itself, and none of its terminal fds, /dev/tty or
  /dev/console is the caller's terminal (compared by st_rdev).
* The caller's terminal on stdout/stderr only (stdin a pipe or /dev/null):
  the command gets a private pty there too, so it cannot read what the user
  types, turn echo off or resize the caller's terminal (a control run shows
  all three work on the bare terminal); pipe input with its EOF and output
  to a file pass untouched, and the relayed bytes are unchanged.
* Input through a terminal: bytes piped through ``script`` reach python
  (input at once, python starting late, the wrapper starting after script
  gave up waiting) and its EOF ends it; keys typed while the wrapper starts
  are kept (the raw-mode switch does not flush); Ctrl-D ends ``cat``.
* Signals sent to the wrapper are forwarded to the command, whose handler
  runs; a command that ignores SIGTERM is killed after SANDBOX_KILL_GRACE;
  SIGKILL on the wrapper takes the sandbox down (--die-with-parent).  Host
  PIDs of sandboxed processes are found by a unique argv marker in /proc.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import select
import shutil
import signal
import struct
import subprocess
import termios
import time
import tty

import pytest

from conftest import sandbox_exe

PY = "/usr/bin/python3"


# ----------------------------------------------------------------- helpers


def _make_ctty(fd: int):
    """preexec_fn: after setsid, make ``fd`` the child's controlling terminal."""
    def hook() -> None:
        fcntl.ioctl(fd, termios.TIOCSCTTY, 0)
    return hook


class PtyRun:
    """``sandbox run`` (or a bare command) with a pty as the caller's terminal."""

    def __init__(self, senv, command: list[str], *, stdin_tty: bool = True,
                 sandboxed: bool = True, env: dict[str, str] | None = None,
                 args: list[str] = (), stdin_data: bytes | None = None,
                 stdout_file=None) -> None:
        """``stdin_data``: stdin is a pipe that gets these bytes, then EOF;
        ``stdout_file``: stdout goes to that file (stderr stays the terminal)."""
        senv.finish()
        self.master, self.slave = os.openpty()
        self.slave_rdev = os.fstat(self.slave).st_rdev
        self.slave_name = os.ttyname(self.slave)
        full = [sandbox_exe(), "run", *args, "--", *command] if sandboxed else list(command)
        stdin = self.slave if stdin_tty else subprocess.DEVNULL
        if stdin_data is not None:
            stdin_tty, stdin = False, subprocess.PIPE
        stdout = self.slave if stdout_file is None else open(stdout_file, "wb")
        try:
            self.proc = subprocess.Popen(
                senv.who.prefix() + full, cwd=senv.ws, env=env or senv.environ(),
                stdin=stdin, stdout=stdout, stderr=self.slave, start_new_session=True,
                preexec_fn=_make_ctty(0 if stdin_tty else 2))
        finally:
            if stdout_file is not None:
                stdout.close()
        if stdin_data is not None:
            self.proc.stdin.write(stdin_data)
            self.proc.stdin.close()
        self.out = b""

    def read_until(self, needle: bytes, timeout: float = 20) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.out and time.monotonic() < deadline:
            if not self._read(min(0.2, max(0.0, deadline - time.monotonic()))):
                if self.proc.poll() is not None and not self._read(0.1):
                    break
        return self.out

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError as exc:  # EIO: nobody holds the slave any more
            if exc.errno != errno.EIO:
                raise
            return False
        self.out += data
        return bool(data)

    def finish(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.1)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
            pytest.fail(f"the wrapper did not exit within {timeout}s; output: {self.out!r}")
        for _ in range(50):  # drain what is left, bounded
            if not self._read(0.02):
                break
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def pty_runs():
    runs: list[PtyRun] = []

    def start(*a, **kw) -> PtyRun:
        run = PtyRun(*a, **kw)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.close()


def _marker() -> str:
    """A sleep duration that no other process on the host has in its argv."""
    return f"{random.randint(900, 999)}.{random.randint(10**8, 10**9 - 1)}"


def _pids_with_argv(*argv: str) -> list[int]:
    want = ("\0".join(argv) + "\0").encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                if fh.read() == want:
                    found.append(int(entry))
        except OSError:
            continue
    return found


def _wait_for(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def _read_line_until(proc: subprocess.Popen, needle: bytes, timeout: float) -> bytes:
    """Read the child's stdout pipe until ``needle`` shows up (bounded)."""
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while needle not in buf and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
    return buf


# ------------------------------------------------------------ interactive


CTRL_C_SCRIPT = """
import os, signal, sys, time
def on_int(signum, frame):
    os.write(1, b"HANDLED\\n"); os._exit(7)  # not sys.stdout: the handler may interrupt a print
signal.signal(signal.SIGINT, on_int)
print("READY", flush=True)
time.sleep(30)
print("NOT-INTERRUPTED", flush=True)
"""


def test_ctrl_c_reaches_the_command_under_a_pty(senv, pty_runs):
    run = pty_runs(senv, [PY, "-c", CTRL_C_SCRIPT])
    assert b"READY" in run.read_until(b"READY"), run.out
    started = time.monotonic()
    os.write(run.master, b"\x03")
    status = run.finish(timeout=15)
    assert b"HANDLED" in run.out, run.out
    assert status == 7, run.out
    assert time.monotonic() - started < 10
    assert b"NOT-INTERRUPTED" not in run.out


def test_command_has_a_terminal_of_its_own(senv, pty_runs):
    script = ("tty; test -t 0 && echo STDIN-IS-TTY; test -t 1 && echo STDOUT-IS-TTY; "
              "echo fd0=$(readlink /proc/self/fd/0); echo via-devtty > /dev/tty; "
              "stty size")
    run = pty_runs(senv, ["sh", "-c", script])
    status = run.finish()
    text = run.out.decode(errors="replace").replace("\r\n", "\n")
    assert status == 0, text
    first = text.splitlines()[0]
    # bwrap binds the terminal over /dev/console (see the module docstring)
    assert first.startswith("/dev/pts/") or first == "/dev/console", text
    assert "not a tty" not in text
    assert "STDIN-IS-TTY" in text and "STDOUT-IS-TTY" in text
    assert "via-devtty" in text
    fd0 = [line for line in text.splitlines() if line.startswith("fd0=")][0][4:]
    assert fd0.startswith("/dev/pts/"), text
    assert fd0 != run.slave_name, "the command sits on the caller's own terminal"


def test_non_tty_stdin_gets_no_terminal(senv):
    r = senv.sh("test -t 0 && echo STDIN-TTY; tty; exit 0")
    assert b"STDIN-TTY" not in r.stdout
    assert b"not a tty" in r.stdout


# -------------------------------------------------------------- TIOCSTI


TIOCSTI_SCRIPT = r"""
import errno, fcntl, os, sys, termios
results = []
def attempt(label, fd):
    try:
        fcntl.ioctl(fd, termios.TIOCSTI, b"x")
        results.append(f"{label}=OK")
    except OSError as exc:
        results.append(f"{label}={errno.errorcode.get(exc.errno, exc.errno)}")
for fd in (0, 1, 2):
    attempt(f"fd{fd}", fd)
for path in ("/dev/tty", "/dev/console"):
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    except OSError as exc:
        results.append(f"{path}=open-{errno.errorcode.get(exc.errno, exc.errno)}")
        continue
    attempt(path, fd)
    os.close(fd)
print("RESULTS " + " ".join(results), flush=True)
"""

REFUSED = ("EPERM", "EIO", "ENOTTY", "ENXIO", "EACCES", "open-ENXIO", "open-ENOENT",
           "open-EACCES", "open-EPERM", "open-EROFS", "open-ENODEV")


def _results(out: bytes) -> dict[str, str]:
    line = [ln for ln in out.decode(errors="replace").splitlines() if ln.startswith("RESULTS ")]
    assert line, out
    return dict(item.split("=", 1) for item in line[0].split()[1:])


def _pending_input(slave: int) -> bytes:
    """Bytes waiting in the terminal's input queue (the terminal is raw)."""
    got = b""
    for _ in range(16):
        if not select.select([slave], [], [], 0.3)[0]:
            break
        got += os.read(slave, 4096)
    return got


def test_tiocsti_cannot_reach_the_callers_terminal(senv, pty_runs):
    """stdin is not a terminal, stdout is the caller's terminal (a pty)."""
    def go(sandboxed: bool):
        run = pty_runs(senv, [PY, "-c", TIOCSTI_SCRIPT], stdin_tty=False, sandboxed=sandboxed)
        tty.setraw(run.slave)  # injected bytes become readable at once
        status = run.finish()
        return run, status

    # control: the attack works here when not sandboxed
    control, status = go(sandboxed=False)
    assert status == 0, control.out
    if _results(control.out).get("fd1") != "OK":
        pytest.skip(f"TIOCSTI does not work on this host even unsandboxed: {control.out!r}")
    assert b"x" in _pending_input(control.slave)

    run, status = go(sandboxed=True)
    assert status == 0, run.out
    results = _results(run.out)
    assert all(v in REFUSED for v in results.values()), results
    assert _pending_input(run.slave) == b"", "bytes were injected into the caller's terminal"


TIOCSTI_INTERACTIVE = r"""
import fcntl, os, struct, sys, termios
TIOCGDEV = 0x80045432  # the real device behind a tty fd (/dev/tty is always 5:0)
def real_dev(fd):
    raw = struct.unpack("I", fcntl.ioctl(fd, TIOCGDEV, b"\0" * 4))[0]
    return os.makedev(os.major(raw), os.minor(raw))
try:  # the seccomp filter refuses TIOCSTI outright, even into the sandbox's own pty
    fcntl.ioctl(0, termios.TIOCSTI, b"z")
    line = "INJECTED"
except OSError as exc:
    line = os.strerror(exc.errno)
rdevs = {f"fd{fd}": real_dev(fd) for fd in (0, 1, 2)}
for path in ("/dev/tty", "/dev/console"):
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        rdevs[path] = real_dev(fd)
        os.close(fd)
    except OSError:
        pass
print("GOT", repr(line), "RDEVS", " ".join(f"{k}={v}" for k, v in rdevs.items()), flush=True)
"""


def test_tiocsti_interactive_stays_in_the_sandbox_pty(senv, pty_runs):
    run = pty_runs(senv, [PY, "-c", TIOCSTI_INTERACTIVE])
    status = run.finish()
    text = run.out.decode(errors="replace")
    assert status == 0, text
    # refused by the seccomp filter (before it, TIOCSTI could reach only this private pty)
    assert "GOT 'Operation not permitted'" in text, text
    rdevs = dict(item.split("=", 1) for item in text.split("RDEVS", 1)[1].split())
    assert {"fd0", "fd1", "fd2", "/dev/tty"} <= set(rdevs), rdevs
    assert len(set(rdevs.values())) == 1, f"one terminal, the sandbox's own: {rdevs}"
    assert str(run.slave_rdev) not in rdevs.values(), (
        f"the command holds the caller's terminal ({run.slave_rdev}): {rdevs}")


# ------------------------------------- the caller's terminal on stdout only


HOLD_THE_TERMINAL = r"""
import fcntl, os, select, struct, sys, termios
TIOCGDEV = 0x80045432
raw = struct.unpack("I", fcntl.ioctl(1, TIOCGDEV, b"\0" * 4))[0]
got = sys.stdin.buffer.read()  # the pipe, to its end
print("STDIN", repr(got), "TTY1", os.isatty(1), "RDEV1", os.makedev(os.major(raw), os.minor(raw)),
      flush=True)
print("READY", flush=True)
# what the user types now: can the command read it from its stdout?
if select.select([1], [], [], 2)[0]:
    print("READ", repr(os.read(1, 100)), flush=True)
else:
    print("NOTHING-TO-READ", flush=True)
attrs = termios.tcgetattr(1)
attrs[3] &= ~termios.ECHO
termios.tcsetattr(1, termios.TCSANOW, attrs)  # echo off, and left off
fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 11, 22, 0, 0))  # SIGWINCH to its job
print("DONE", flush=True)
"""


def _winsize(fd: int) -> tuple[int, int]:
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return rows, cols


@pytest.mark.parametrize("stdin", ["pipe", "devnull"])
def test_terminal_on_stdout_only_is_never_handed_to_the_command(senv, pty_runs, stdin):
    """stdin is a pipe (or /dev/null), stdout and stderr the caller's terminal.
    Without the relay the command holds the terminal: it reads what the user
    types, leaves echo off, resizes it (SIGWINCH to the caller's job)."""
    def go(sandboxed: bool):
        data = b"piped-data\n" if stdin == "pipe" else None
        run = pty_runs(senv, [PY, "-c", HOLD_THE_TERMINAL], stdin_tty=False, sandboxed=sandboxed,
                       stdin_data=data)
        fcntl.ioctl(run.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
        assert b"READY" in run.read_until(b"READY"), run.out
        os.write(run.master, b"typed-secret\n")  # the user types a line
        status = run.finish()
        assert status == 0, run.out
        return run, run.out.decode(errors="replace")

    control, text = go(sandboxed=False)  # the attack works on the bare terminal
    assert "READ b'typed-secret\\n'" in text, text
    assert not termios.tcgetattr(control.slave)[3] & termios.ECHO
    assert _winsize(control.slave) == (11, 22)

    run, text = go(sandboxed=True)
    if stdin == "pipe":  # a pipe still reaches the command, to its end
        assert "STDIN b'piped-data\\n'" in text, text
    else:
        assert "STDIN b''" in text, text
    assert "TTY1 True" in text, text  # a terminal still, the sandbox's own
    rdev = int(text.split("RDEV1 ", 1)[1].split()[0])
    assert rdev != run.slave_rdev, "the command's stdout is the caller's terminal"
    assert "NOTHING-TO-READ" in text and "typed-secret'" not in text.split("READY", 1)[1], text
    assert "DONE" in text, text
    attrs = termios.tcgetattr(run.slave)
    assert attrs[3] & termios.ECHO, "the command turned the caller's echo off"
    assert _winsize(run.slave) == (40, 100), "the command resized the caller's terminal"
    # what the user typed is still there for the caller (the terminal is cooked)
    assert select.select([run.slave], [], [], 1)[0] and os.read(run.slave, 100) == b"typed-secret\n"


def test_output_through_the_relay_is_unchanged(senv, pty_runs):
    """Output-only relay: the bytes reach the caller's terminal as if written
    to it directly (its own ONLCR makes \\r\\n; the private pty adds nothing)."""
    run = pty_runs(senv, ["printf", "a\\nb\\tc\\n"], stdin_tty=False)
    assert run.finish() == 0, run.out
    assert run.out == b"a\r\nb\tc\r\n", run.out


def test_stdout_to_a_file_and_stdin_from_a_pipe_pass_untouched(senv, pty_runs):
    out = senv.base / "out.bin"
    script = "cat; printf 'to-stderr\\n' >&2; test -t 1 || echo STDOUT-NOT-TTY; test -t 2 && echo STDERR-TTY >&2"
    payload = bytes(range(256)) * 64 + b"\nend\n"
    run = pty_runs(senv, ["sh", "-c", script], stdin_data=payload, stdout_file=out)
    assert run.finish() == 0, run.out
    assert out.read_bytes() == payload + b"STDOUT-NOT-TTY\n"
    assert b"to-stderr\r\n" in run.out and b"STDERR-TTY" in run.out, run.out


def test_ctrl_c_reaches_the_command_when_only_output_is_a_terminal(senv, pty_runs):
    """Ctrl-C on the caller's (cooked) terminal signals the wrapper's job; the
    wrapper passes it on to the command."""
    run = pty_runs(senv, [PY, "-c", CTRL_C_SCRIPT], stdin_tty=False)
    assert b"READY" in run.read_until(b"READY"), run.out
    os.write(run.master, b"\x03")
    assert run.finish(timeout=15) == 7, run.out
    assert b"HANDLED" in run.out, run.out


# ------------------------------------------------ input through a terminal


def _script(senv, command: list[str], data: bytes, timeout: float = 40):
    """``printf DATA | script -qec 'sandbox run -- COMMAND' /dev/null`` (util-linux)."""
    import shlex

    if shutil.which("script") is None:
        pytest.skip("script (util-linux) is not installed")
    senv.finish()
    inner = shlex.join([*command])
    return subprocess.run(senv.who.prefix() + ["script", "-qec", inner, "/dev/null"],
                          input=data, capture_output=True, cwd=senv.ws, env=senv.environ(),
                          timeout=timeout)


@pytest.mark.parametrize("timing", ["at-once", "late-reader", "late-start"])
def test_piped_input_through_a_terminal_reaches_python(senv, timing):
    """``printf 'print(1+1)\\n' | script -qc 'sandbox run -- python3'``: script
    gives the piped bytes to the wrapper's terminal, then an end-of-file.
    late-reader: python starts a second later than the input arrived, so the
    end-of-file must wait for it; late-start: the wrapper itself starts after
    script stopped waiting, so the end-of-file is a mark in a cooked terminal."""
    command = [sandbox_exe(), "run", "--", PY, "-q"]
    if timing == "late-reader":
        command = [sandbox_exe(), "run", "--", "sh", "-c", f"sleep 1; exec {PY} -q"]
    if timing == "late-start":
        command = ["sh", "-c", "sleep 3; exec \"$0\" \"$@\"", *command]
    done = _script(senv, command, b"print(6*7)\n")
    lines = done.stdout.decode(errors="replace").replace("\r", "").splitlines()
    assert "42" in lines, done.stdout
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)


@pytest.mark.parametrize("when", ["during-start", "after-start"])
def test_ctrl_d_ends_the_input_of_an_interactive_command(senv, pty_runs, when):
    run = pty_runs(senv, ["sh", "-c", "cat; echo CAT-DONE"])
    if when == "after-start":
        run.read_until(b"never-printed", timeout=2)  # let it start and wait for input
    os.write(run.master, b"a line\n")
    os.write(run.master, b"\x04")
    assert run.finish(timeout=20) == 0, run.out
    assert b"CAT-DONE" in run.out, run.out
    assert run.out.count(b"a line") >= 1, run.out


def test_keys_typed_while_the_run_starts_are_kept(senv, pty_runs):
    run = pty_runs(senv, ["sh", "-c", "read line; echo \"GOT:$line\""])
    os.write(run.master, b"early-keys\n")  # before the wrapper has even started
    assert run.finish(timeout=20) == 0, run.out
    assert b"GOT:early-keys" in run.out, run.out


# --------------------------------------------------------------- signals


HANDLER_SCRIPT = """
import pathlib, signal, sys, time
def handler(signum, frame):
    pathlib.Path(sys.argv[1]).write_text(signal.Signals(signum).name)
    sys.exit(0)
for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(s, handler)
print("READY", flush=True)
time.sleep(60)
sys.exit(9)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT],
                         ids=lambda s: s.name)
def test_signal_to_wrapper_reaches_handler(senv, sig):
    marker = senv.ws / "marker.txt"
    senv.finish()
    proc = subprocess.Popen(
        senv.who.prefix() + [sandbox_exe(), "run", "--", PY, "-c", HANDLER_SCRIPT, str(marker)],
        cwd=senv.ws, env=senv.environ(SANDBOX_KILL_GRACE="30"), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert b"READY" in _read_line_until(proc, b"READY", 20)
        started = time.monotonic()
        os.kill(proc.pid, sig)
        status = proc.wait(timeout=15)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert status == 0, (status, proc.stderr.read())
    assert marker.read_text() == sig.name
    assert elapsed < 5, f"took {elapsed:.1f}s: the handler did not end the run promptly"


def test_command_ignoring_sigterm_is_killed_after_grace(senv):
    mark = _marker()
    report = senv.base / "grace-report.json"
    senv.finish()
    script = f"trap '' TERM; sleep {mark} & echo READY; wait; echo AFTER-WAIT"
    proc = subprocess.Popen(
        senv.who.prefix() + [sandbox_exe(), "run", "--report", str(report), "--",
                             "sh", "-c", script],
        cwd=senv.ws, env=senv.environ(SANDBOX_KILL_GRACE="1"), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert b"READY" in _read_line_until(proc, b"READY", 20)
        assert _wait_for(lambda: _pids_with_argv("sleep", mark), 10), "sleep never started"
        started = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        status = proc.wait(timeout=10)
        elapsed = time.monotonic() - started
        gone = _wait_for(lambda: not _pids_with_argv("sleep", mark), 5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for pid in _pids_with_argv("sleep", mark):  # never leave it behind
            os.kill(pid, signal.SIGKILL)
    assert gone, f"sleep {mark} survived the sandbox"
    assert 0.8 <= elapsed < 6, f"the wrapper took {elapsed:.1f}s with a 1s grace"
    # the command did not exit by itself: it was SIGKILLed after the grace
    # period, which is 128+9, not a sandbox setup error (125)
    assert status == 128 + signal.SIGKILL, (status, proc.stderr.read())
    doc = json.loads(report.read_text())
    assert doc["killed_after_grace"] is True
    assert doc["forwarded_signals"] == ["SIGTERM"]


def test_sigkill_on_wrapper_takes_the_sandbox_down(senv):
    mark = _marker()
    senv.finish()
    proc = subprocess.Popen(
        senv.who.prefix() + [sandbox_exe(), "run", "--", "sleep", mark],
        cwd=senv.ws, env=senv.environ(), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert _wait_for(lambda: _pids_with_argv("sleep", mark), 15), "sleep never started"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        gone = _wait_for(lambda: not _pids_with_argv("sleep", mark), 5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for pid in _pids_with_argv("sleep", mark):
            os.kill(pid, signal.SIGKILL)
    assert gone, f"sleep {mark} outlived the SIGKILLed wrapper"
