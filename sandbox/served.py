"""One served run: what a child of the warm server (``sandbox.server``) does.

The child was forked from a process that has imported the run path.  It
reads the native client's request (argv, environment, umask, signal state,
and its stdio and cwd as descriptors), decides whether it can run it
*exactly* as a direct run would, and if so becomes that run: it adopts the
client's process state and calls ``sandbox.__main__.run_args``, the code a
direct run calls.  Whatever it cannot make identical is answered "F"
(fallback) before anything ran, and the client runs ``sandbox-direct``
itself, so nothing ever runs twice and nothing is served that a direct run
would do differently.

What cannot be adopted from a request (namespaces, root, cgroup, rlimits,
credentials, capabilities, seccomp, nice, CPU set...) must already be equal
(``sandbox.peer``); what Python read once at start (``PYTHON*``, the locale
variables) must be equal to the server's own start environment; and the
code must be the code on disk (a reinstall makes the server stale: "F", and
the server exits).  Wire protocol: docs/served.md.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import sys
import time

from sandbox import peer

READ_SECONDS = 5.0  # the whole request; a client that stalls is dropped
FALLBACK = b"F" + struct.pack("=i", 0)
PAYLOAD_MAX = 4 << 20  # the client sends bigger requests nowhere: it runs directly
ALL_SIGNALS = range(1, 65)

# What a run imports, on the cached path and the full one (listed from
# sys.modules after a fresh and a cached direct run).  Imported once in the
# server: each child then starts with them loaded.  A module missing here is
# not an error: the child imports it itself, as a direct run would, only slower.
WARM = (
    "sandbox.__main__", "sandbox.fastrun", "sandbox.app", "sandbox.execute", "sandbox.runner",
    "sandbox.audit", "sandbox.auditlog", "sandbox.backend", "sandbox.blocked", "sandbox.caches",
    "sandbox.command", "sandbox.constraint", "sandbox.dirstamps", "sandbox.discover",
    "sandbox.egress.dns", "sandbox.egress.hostports", "sandbox.egress.netns",
    "sandbox.egress.netsession", "sandbox.egress.session", "sandbox.envfilter",
    "sandbox.errors", "sandbox.gitconfig", "sandbox.gitobjects", "sandbox.gitsnapshot",
    "sandbox.hostprogs", "sandbox.hostsockets", "sandbox.invocation", "sandbox.layout",
    "sandbox.libc", "sandbox.limits", "sandbox.linux.backend", "sandbox.linux.bwrap",
    "sandbox.linux.drift", "sandbox.linux.ladder", "sandbox.linux.seccomp", "sandbox.managed",
    "sandbox.observe", "sandbox.options", "sandbox.pathat", "sandbox.patterns",
    "sandbox.pending", "sandbox.plancache", "sandbox.policy", "sandbox.policycache",
    "sandbox.profile", "sandbox.projectprofile", "sandbox.ptyrelay", "sandbox.quarantine",
    "sandbox.quiet", "sandbox.redact", "sandbox.relist", "sandbox.report", "sandbox.resources",
    "sandbox.runflags", "sandbox.runlock", "sandbox.safeio", "sandbox.scan", "sandbox.schema",
    "sandbox.secretfiles", "sandbox.selfguard", "sandbox.statefile", "sandbox.tighten",
    "sandbox.trust", "pyseccomp", "threading", "traceback")

_start_env: dict[str, str] = {}
_stamps: tuple = ()


def warm_up() -> None:
    """Import the run path (a module missing on this platform is skipped).

    ``__import__``, not ``importlib.import_module``: the same import statement
    machinery a run uses, and one that ``-X importtime`` sees (the test that
    the server never imports typer reads that log)."""
    for name in WARM:
        try:
            __import__(name)
        except ImportError:
            pass


def _interpreter_env(environ) -> dict[str, str]:
    """The variables the process read once at start: the interpreter's (site,
    codecs, locale) and the C library's and dynamic loader's (a preloaded
    library, tunables, malloc's settings), which shape the process a direct
    run's wrapper would be and which a forked server cannot take on later."""
    return {k: v for k, v in environ.items()
            if k.startswith(("PYTHON", "LC_", "LD_", "MALLOC_"))
            or k in ("LANG", "LANGUAGE", "GLIBC_TUNABLES")}


_stamped: tuple[str, ...] = ()


def _code_paths() -> tuple[str, ...]:
    """Every loaded sandbox module's file, the package directories,
    site-packages and the interpreter: what a reinstall changes."""
    paths = {sys.executable}
    for name, module in list(sys.modules.items()):
        if name == "sandbox" or name.startswith("sandbox."):
            if getattr(module, "__file__", None):
                paths.add(module.__file__)
            paths.update(getattr(module, "__path__", ()))
    from sandbox import selfguard

    paths.update(d for d in selfguard.trusted_dirs() if "-packages" in d)
    return tuple(sorted(paths))


def _code_stamps() -> tuple:
    """(inode, mtime, size) of each path of ``_code_paths`` (listed once, at start)."""
    out = []
    for path in _stamped:
        try:
            st = os.stat(path)
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


def remember_start(environ) -> None:
    """Called by the server once everything is imported."""
    global _start_env, _stamps, _stamped
    _start_env = _interpreter_env(environ)
    _stamped = _code_paths()
    _stamps = _code_stamps()


def refuse(conn: socket.socket) -> None:
    """"F" without blocking (the server's parent, at its limit of children)."""
    try:
        conn.setblocking(False)
        conn.send(FALLBACK)
    except OSError:
        pass


class BadRequest(Exception):
    pass


class TooBig(BadRequest):
    pass


def _receive(conn: socket.socket) -> tuple[list[int], bytes]:
    """(the 4 descriptors, the payload), within READ_SECONDS.

    Reads exactly the request, never past it: what follows are "K" messages,
    the reader thread's.  Received descriptors are close-on-exec
    (MSG_CMSG_CLOEXEC) until adopted, so none reaches the sandbox by accident.
    """
    import array

    deadline = time.monotonic() + READ_SECONDS
    fds: list[int] = []
    buf = b""
    need = 8
    try:
        while len(buf) < need:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BadRequest("the request took too long")
            conn.settimeout(left)
            data, anc, flags, _ = conn.recvmsg(min(need - len(buf), 1 << 20),
                                               socket.CMSG_SPACE(16 * 4),
                                               socket.MSG_CMSG_CLOEXEC)
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    got = array.array("i")
                    got.frombytes(cdata[:len(cdata) - len(cdata) % got.itemsize])
                    fds.extend(got)
            if flags & socket.MSG_CTRUNC:
                raise BadRequest("too many descriptors")
            if not data:
                raise BadRequest("end of file in the request")
            buf += data
            if need == 8 and len(buf) == 8:
                if buf[:4] != b"SBX1":
                    raise BadRequest("not a version 1 request")
                length = struct.unpack("=I", buf[4:8])[0]
                if length > PAYLOAD_MAX:
                    raise TooBig("request too big")
                need = 8 + length
        if len(fds) != 4:
            raise BadRequest("not exactly 4 descriptors")
        conn.settimeout(None)
        return fds, buf[8:]
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise



def _parse(payload: bytes):
    """(argv, environ dict, umask, ignored mask, blocked mask); BadRequest if malformed."""
    pos = 0

    def u32() -> int:
        nonlocal pos
        if pos + 4 > len(payload):
            raise BadRequest("short payload")
        pos += 4
        return struct.unpack_from("=I", payload, pos - 4)[0]

    def strings(count: int) -> list[str]:
        nonlocal pos
        out = []
        for _ in range(count):
            end = payload.find(b"\0", pos)
            if end < 0:
                raise BadRequest("unterminated string")
            out.append(os.fsdecode(payload[pos:end]))  # as Python decodes its own
            pos = end + 1
        return out

    argv = strings(u32())
    env: dict[str, str] = {}
    for entry in strings(u32()):
        key, eq, value = entry.partition("=")
        if eq:
            env.setdefault(key, value)  # the first of a repeated name wins, as in Python
    umask = u32()
    if pos + 16 != len(payload):
        raise BadRequest("bad payload length")
    ignored, blocked = struct.unpack_from("=QQ", payload, pos)
    return argv, env, umask & 0o777, ignored, blocked


# where /dev/fd/N and /proc/self/fd/N lead (compiled once, in the server)
_FD_DIR = re.compile(r"/proc/[0-9]+(/task/[0-9]+)?/fd")


def _other_descriptor(args: list[str], report: str | None, cwd_fd: int) -> bool:
    """Does the run name one of the caller's descriptors other than 0-2?

    (``report``: the report's, or any path option's value: a profile file,
    a workspace, --allow-write/--unprotect.)  The path is followed as the kernel would follow it from the
    client's cwd (``cwd_fd``): every spelling of /dev/fd/N (``/dev//fd/N``,
    ``/dev/fd/./N``, a symlink to /dev/fd or to /dev/fd/N, ``fd/N`` in /dev)
    ends in a /proc/PID/fd directory, whose N is a descriptor of whoever
    opens it: the client's in a direct run, this child's here.
    """
    if any(a == "--report-fd" or a.startswith("--report-fd=") for a in args):
        return True
    if not report:
        return False
    path = os.path.join(f"/proc/self/fd/{cwd_fd}", report)
    for _ in range(40):  # the kernel's own bound on symlinks in a path
        head, name = os.path.split(path)
        parent = os.path.realpath(head)
        if _FD_DIR.fullmatch(parent):
            return name not in ("0", "1", "2")
        try:
            target = os.readlink(os.path.join(parent, name))
        except OSError:
            return False  # not a symlink (or nothing there): a file name
        path = os.path.join(parent, target)
    return True  # a symlink loop: the direct run will say what it makes of it


def _signals(mask: int) -> set[int]:
    valid = signal.valid_signals()
    return {n for n in ALL_SIGNALS if mask >> (n - 1) & 1 and n in valid}


def _adopt(fds: list[int], argv: list[str], env: dict[str, str], umask: int,
           ignored: int, blocked: int) -> None:
    """Become the client's process, as far as a direct run inherits it."""
    os.fchdir(fds[3])
    for target in (0, 1, 2):
        os.dup2(fds[target], target)  # inheritable, like the stdio a direct run gets
    for fd in fds:
        os.close(fd)
    os.umask(umask)
    # Dispositions as a fresh interpreter started by the client would have
    # them: what the client ignores stays ignored (exec keeps SIG_IGN), every
    # other one is default, then Python's own changes at start.
    # (Only those that differ from what the server's child has are changed.)
    skip = _signals(ignored)
    want = {signal.SIGPIPE: signal.SIG_IGN, signal.SIGXFSZ: signal.SIG_IGN}
    if signal.SIGINT not in skip:
        want[signal.SIGINT] = signal.default_int_handler
    for n in signal.valid_signals():
        if n in (signal.SIGKILL, signal.SIGSTOP):
            continue
        disposition = want.get(n, signal.SIG_IGN if n in skip else signal.SIG_DFL)
        try:
            if signal.getsignal(n) != disposition:
                signal.signal(n, disposition)
        except (OSError, ValueError, RuntimeError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, _signals(blocked))
    _replace_environ(env)
    time.tzset()
    tempfile = sys.modules.get("tempfile")
    if tempfile is not None:
        tempfile.tempdir = None  # it caches $TMPDIR at first use: the client's now
    sys.argv[:] = [sys.argv[0], *argv[1:]]


def _replace_environ(env: dict[str, str]) -> None:
    """``os.environ`` (and the C environment) becomes ``env``, in its order.

    Usually the client's environment has the names of the server's own, in
    the same order (one shell starts both): then only the values that
    differ are set, in place, which keeps the order.  Otherwise everything
    is replaced, which also makes the order the client's.
    """
    current = os.environ
    if list(current) == list(env):
        for key, value in env.items():
            if current[key] != value:
                current[key] = value
        return
    current.clear()
    current.update(env)


class _Reply:
    """The one "X" (or the death) reported to the client, from either thread."""

    def __init__(self, conn: socket.socket) -> None:
        import threading

        self.conn = conn
        self.lock = threading.Lock()
        self.sent = False

    def exit_status(self, status: int) -> None:
        with self.lock:
            if not self.sent:
                self.sent = True
                try:
                    self.conn.sendall(b"X" + struct.pack("=i", status))
                except OSError:
                    pass


def _relay_signals(conn: socket.socket, reply: _Reply, main_thread: int,
                   blocked: set[int]) -> None:
    """The reader thread: the client's "K" messages, and its end.

    A forwarded signal is raised in the main thread, where the runner's
    handlers relay it to the sandbox exactly as for a direct run's caller.
    If the main thread has no handler for it (before the runner installed
    one), a direct run would die of it: so does this one, after telling the
    client the status a shell would show (128 + n); a signal the client
    blocked stays pending, as it would in a direct run.  End of file means the
    client is gone (SIGKILL): this process dies at once, and bwrap, started
    with --die-with-parent, takes the sandbox with it.
    """
    from sandbox.runner import FORWARDED

    buf = b""
    while True:
        try:
            data = conn.recv(64)
        except OSError:
            data = b""
        if not data:
            os.kill(os.getpid(), signal.SIGKILL)
            return
        buf += data
        while len(buf) >= 5:
            kind, signum = buf[:1], struct.unpack("=i", buf[1:5])[0]
            buf = buf[5:]
            if kind != b"K" or signum not in FORWARDED:
                continue
            handler = signal.getsignal(signum)
            if handler == signal.SIG_IGN:
                continue
            if handler == signal.SIG_DFL and signum not in blocked:
                reply.exit_status(128 + signum)
            signal.pthread_kill(main_thread, signum)


def handle(conn: socket.socket, notify_w: int, reader: Reader | None = None) -> int:
    """Serve one connection in a child of the server; the child's exit status.
    ``reader``: its reader thread, started ahead (else started here)."""
    try:
        fds, payload = _receive(conn)
    except TooBig:
        return 1  # dropped unanswered, as the protocol says
    except (BadRequest, OSError):
        refuse(conn)
        return 1
    try:
        argv, env, umask, ignored, blocked = _parse(payload)
        client = peer.check(conn, sys.argv[0])  # rule 1: the peer is in exactly our context
        if any(os.isatty(fd) for fd in fds[:3]):
            # a terminal means job control and a controlling tty, which a
            # child of a daemon cannot adopt (the client never sends one)
            raise BadRequest("a terminal")
        if _interpreter_env(env) != _start_env:  # rule 2
            raise BadRequest("the interpreter's start environment differs")
        if _code_stamps() != _stamps:  # rule 3: this server's code is stale
            os.write(notify_w, b"Q")
            raise BadRequest("the installed code changed")
        from sandbox.__main__ import parse_run, parse_sh

        args = argv[1:]
        opts = None
        if args[:1] in (["run"], ["sh"]):
            opts = (parse_run if args[0] == "run" else parse_sh)(args[1:])
        if opts is None:
            raise BadRequest("not a run this server takes")  # rule 4: typer's business
        paths = [opts.report, getattr(opts, "profile", None), getattr(opts, "workspace", None),
                 *(getattr(opts, "allow_write", None) or ()),
                 *(getattr(opts, "unprotect", None) or ())]
        if any(_other_descriptor(args, p, fds[3]) for p in paths):
            # a descriptor other than stdio is the client's, which this
            # process does not have (its own number may even be the socket)
            raise BadRequest("a report or path through an inherited descriptor")
    except Exception:  # noqa: BLE001 - whatever went wrong, nothing ran yet: fail closed to "F"
        for fd in fds:
            os.close(fd)
        conn.sendall(FALLBACK)
        return 1
    _adopt(fds, argv, env, umask, ignored, blocked)
    from sandbox import auditlog

    auditlog.caller_pid = client  # the `sandbox` process its caller started, as in a direct run
    os.write(notify_w, b"S")  # counted in `sandbox server status`
    os.close(notify_w)
    return _run(conn, args, _signals(blocked), reader)


class Reader:
    """The reader thread (``_relay_signals``), started before its connection
    comes: a spare starts it while it waits, because starting a thread in
    the forked child costs about half a millisecond of the run's time.

    It must never take a signal meant for the run: it starts with every
    signal blocked, so the kernel delivers process signals to the main
    thread, whose handlers (the runner's) see them.
    """

    def __init__(self) -> None:
        import threading

        self._go = threading.Lock()
        self._go.acquire()
        self._args: tuple | None = None
        old = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            threading.Thread(target=self._wait, daemon=True).start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def _wait(self) -> None:
        self._go.acquire()
        if self._args is not None:
            _relay_signals(*self._args)

    def start(self, conn: socket.socket, reply: "_Reply", blocked: set[int]) -> None:
        import threading

        self._args = (conn, reply, threading.get_ident(), blocked)
        self._go.release()


def _run(conn: socket.socket, args: list[str], blocked: set[int],
         reader: Reader | None = None) -> int:
    reply = _Reply(conn)
    from sandbox import runner

    # a signal the runner raises again with its default action (a stale plan's)
    runner.BEFORE_FATAL_SIGNAL[0] = lambda signum: reply.exit_status(128 + signum)
    (reader or Reader()).start(conn, reply, blocked)
    status = _call(args)
    reply.exit_status(status)
    return status & 0xFF


def _call(args: list[str]) -> int:
    """``run_args`` as ``main`` runs it, ending as a direct run's interpreter ends."""
    import atexit
    import threading

    from sandbox.__main__ import run_args

    try:
        status = run_args(args, dict(os.environ))
    except SystemExit as exc:
        code = exc.code
        status = code if isinstance(code, int) else 0 if code is None else 1
        if not isinstance(code, int) and code is not None:
            print(code, file=sys.stderr)
    except KeyboardInterrupt:  # Python's own uncaught Ctrl-C: traceback, then 128 + SIGINT
        import traceback

        traceback.print_exc()
        status = 128 + signal.SIGINT
    except BaseException:  # an internal error: the traceback, as a direct run shows it
        import traceback

        traceback.print_exc()
        status = 1
    if status is None:
        status = 1
    # What Python's shutdown would still do for a direct run: join the
    # non-daemon threads, run atexit handlers, flush (a failed flush is 120)
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except Exception:  # noqa: BLE001 - a closed pipe, as Python reports it at exit
        status = 120
    return status
