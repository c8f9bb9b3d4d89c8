"""The warm server: ``sandbox run`` without the interpreter's start-up.

A run spends most of its wrapper time starting Python and importing the run
path.  This resident process (one per user and state directory) has done
both once; for each request of the native client (``native/client.c``) it
forks a child that runs exactly the code of a direct run (``sandbox.served``).
It is only an accelerator: whatever it cannot serve identically it answers
"fallback" before anything ran, and the client runs ``sandbox-direct``.

Lifetime: started by a direct run after its command finished
(``maybe_start``, through ``runner.spawn_server``); exits when idle for
``SANDBOX_SERVER_IDLE`` seconds (default 300), when its socket is no longer
its own (the state directory was removed, another server took the name),
when its own code changed on disk (a reinstall: ``sandbox.served``'s stale
check), or on SIGTERM (``sandbox server stop``).  ``SANDBOX_SERVER=off``
turns it off.  docs/served.md and docs/design.md argue why this is no
weakening.

Files in the state directory (``plancache.state_dir``), ``<id>`` naming
this installation (``install_id``): ``server-<id>.sock`` (the socket),
``server-<id>.lock`` (held by the running server; it says its pid, start
time, idle timeout and served count for ``sandbox server status``) and
``server.last`` (when the last direct run ended: ``auto`` starts a server
only for runs that come in a loop).

Only the standard library at import: ``maybe_start`` runs at the end of
every direct run.
"""

from __future__ import annotations

import os
import sys

LAST = "server.last"
IDLE_DEFAULT = 300.0
LOOP_SECONDS = 60  # auto: a run that follows the previous direct one this closely
MAX_CHILDREN = 32
TICK = 1.0
OFF = ("off", "0", "no", "false")
ON = ("on", "1", "yes", "true")


def mode(environ) -> str:
    """``SANDBOX_SERVER``: off, on, or auto (the default, and any other value)."""
    value = (environ.get("SANDBOX_SERVER") or "auto").strip().lower()
    return "off" if value in OFF else "on" if value in ON else "auto"


def idle_seconds(environ) -> float:
    try:
        value = float(environ.get("SANDBOX_SERVER_IDLE") or IDLE_DEFAULT)
    except ValueError:
        return IDLE_DEFAULT
    return value if value >= 0 else IDLE_DEFAULT


def install_id(bin_dir: str) -> str:
    """12 hex digits of FNV-1a (64 bits) over ``bin_dir``: the name of one
    installation's server, as native/client.c computes it from its own
    directory.  Two installations sharing a state directory (pipx and a
    project's venv, two versions) get a server each, so a run is always
    served by the code of the ``sandbox`` that was typed."""
    h = 0xCBF29CE484222325
    for byte in os.fsencode(bin_dir):
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h & 0xFFFFFFFFFFFF:012x}"


def _bin_dir() -> str:
    """Where this installation's ``sandbox`` and ``sandbox-direct`` live, resolved."""
    script = _direct_script()
    return os.path.dirname(os.path.realpath(script or sys.executable))


def paths(environ) -> tuple[str, str, str, str]:
    """(state dir, socket, lock, stamp), the state dir exactly as the plans'."""
    from sandbox.plancache import state_dir

    state = state_dir(environ)
    name = f"server-{install_id(_bin_dir())}"
    return (state, os.path.join(state, name + ".sock"), os.path.join(state, name + ".lock"),
            os.path.join(state, LAST))


def _lock_held(lock: str) -> bool:
    """Does a server hold ``lock`` (so one runs for this state dir)?"""
    from sandbox import runlock

    return runlock.held(lock, shared=True)  # the server's own lock is exclusive


def _direct_script() -> str | None:
    """The ``sandbox-direct`` script next to the running one (or the interpreter)."""
    for base in (os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else "",
                 sys.executable):
        if base:
            script = os.path.join(os.path.dirname(base), "sandbox-direct")
            if os.access(script, os.X_OK):
                return script
    return None


def maybe_start(environ) -> None:
    """After a direct run: start a server if the mode asks for one and none runs.

    Never for a terminal (the client runs those directly anyway: a served
    run has no pty relay); in ``auto`` only when the previous direct run in
    this state dir ended less than ``LOOP_SECONDS`` ago, which costs one
    stat and one utime of ``server.last`` per run.  Any failure is silent:
    the run is over and succeeded or failed on its own.
    """
    how = mode(environ)
    if how == "off" or any(os.isatty(fd) for fd in (0, 1, 2)):
        return
    try:
        state, _sock, lock, last = paths(environ)
        if how == "auto":
            import time

            try:
                recent = time.time() - os.stat(last).st_mtime < LOOP_SECONDS
                os.utime(last)
            except FileNotFoundError:
                recent = False
                os.makedirs(state, mode=0o700, exist_ok=True)
                os.close(os.open(last, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            if not recent:
                return
        if _lock_held(lock):
            return  # one answers already: never a second one
        script = _direct_script()
        if script is None:
            return
        from sandbox import runner

        runner.spawn_server(sys.executable, script, dict(environ))
    except OSError:
        return


def read_info(environ) -> dict | None:
    """The running server's pid, socket, start, idle and served count, or None."""
    _state, sock, lock, _last = paths(environ)
    if not _lock_held(lock):
        return None
    try:
        with open(lock, encoding="ascii") as fh:
            pid, started, idle, served = fh.read().split()[:4]
        return {"pid": int(pid), "socket": sock, "started": float(started),
                "idle": float(idle), "served": int(served)}
    except (OSError, ValueError):
        return None


def is_server(pid: int) -> bool:
    """Is ``pid`` a sandbox server of this user (its command line says so)?"""
    try:
        st = os.stat(f"/proc/{pid}")
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return False
    argv = [a for a in argv if a]
    return (st.st_uid == os.getuid() and argv[-2:] == [b"server", b"run"]
            and any(os.path.basename(a) == b"sandbox-direct" for a in argv))


class _Stop(Exception):
    """SIGTERM: leave the loop now."""


def _on_term(_signum, _frame):
    raise _Stop


def serve() -> int:
    """Run the server in the foreground until it has a reason to exit; 0."""
    import fcntl
    import socket
    import time

    environ = dict(os.environ)
    os.chdir("/")  # never hold the starting run's directory (a workspace, a mount)
    try:
        with open("/proc/self/comm", "w") as fh:  # `ps -o comm` and top show what it is
            fh.write("sandbox-server")
    except OSError:
        pass
    state, sock_path, lock_path, _last = paths(environ)
    try:
        os.makedirs(state, mode=0o700, exist_ok=True)
        st = os.stat(state)
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            return 0  # another user could replace our socket: runs refuse this dir too
        lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return 0
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # another server has this state dir: it answers, we go quietly
    os.ftruncate(lock_fd, 0)  # a longer line a foreign writer may have left
    # Everything a run needs, imported once here and shared by every child.
    from sandbox import served

    served.warm_up()
    listener = _listen(socket, sock_path)
    if listener is None:
        return 0
    own = os.stat(sock_path).st_ino
    me = os.getpid()
    served.remember_start(environ)
    idle = idle_seconds(environ)
    started = time.time()
    count = accepted = 0

    def note() -> None:  # for `sandbox server status`
        # one pwrite of a fixed length, never a truncation: a reader sees
        # the old line or the new one, never an empty file
        text = f"{os.getpid()} {started:.3f} {idle:g} {count}".ljust(79) + "\n"
        os.pwrite(lock_fd, text.encode(), 0)

    note()
    import gc
    import select
    import signal

    notify_r, notify_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    children: set[int] = set()
    spare = None  # a child forked in advance, waiting in accept(): see _spare
    last_request = time.monotonic()
    signal.signal(signal.SIGTERM, _on_term)
    # The objects allocated so far (every module of the run path) are never
    # freed: a collection in a child would touch them all and copy their pages
    gc.freeze()
    try:
        while True:
            for pid in list(children):  # reap: bounded by MAX_CHILDREN
                try:
                    done, _status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    children.discard(pid)
                    if pid == spare:
                        spare = None
            try:
                if os.stat(sock_path).st_ino != own:
                    break  # the name is another's now
            except OSError:
                break  # gone: the state dir was removed
            if idle == 0 and accepted:
                break  # SANDBOX_SERVER_IDLE=0: one request, then go
            busy = len(children) - (spare is not None)
            if idle > 0 and not busy and time.monotonic() - last_request >= idle:
                break
            if spare is None and len(children) < MAX_CHILDREN:
                try:
                    spare = os.fork()  # the one fork without exec: see _spare
                except OSError:
                    spare = None  # no process to spare: the parent answers "F" below
                else:
                    if spare == 0:  # pragma: no cover - the child never returns
                        _spare(me, listener, notify_r, notify_w, lock_fd)
                    children.add(spare)
            # Without a spare (at the limit), the parent accepts, only to say "F"
            watched = [notify_r] if spare is not None else [listener, notify_r]
            ready, _, _ = select.select(watched, [], [], TICK)
            if notify_r in ready:
                news = os.read(notify_r, 4096)
                taken = news.count(b"A")
                if taken:  # the spare took a connection: it is a served child now
                    spare = None
                    accepted += taken
                    last_request = time.monotonic()
                count += news.count(b"S")
                note()
                if b"Q" in news:
                    break  # our code changed on disk: a fresh server must load it
            if listener in ready:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                last_request = time.monotonic()
                accepted += 1
                served.refuse(conn)  # at MAX_CHILDREN: "F", never blocking
                conn.close()
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:  # remove our socket, never another server's (nor from a child's copy of this)
            if os.getpid() == me and os.stat(sock_path).st_ino == own:
                os.unlink(sock_path)
        except OSError:
            pass
        if os.getpid() == me:
            # wakes the spare's accept() (EINVAL): it exits; a connection it
            # had already taken is served to its end
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        listener.close()
    return 0


PR_SET_PDEATHSIG = 1


def _spare(parent: int, listener, notify_r: int, notify_w: int, lock_fd: int) -> None:
    """In a child forked before its request: wait for one connection, serve it.

    The fork without exec (the per-request ``os.fork``) is the one place
    outside ``sandbox.runner`` that makes a process: a fork of the warm
    process is the whole point of the server (an exec would pay the
    interpreter's start again).  It happens *before* the request comes, so a
    client does not wait the ~2 ms a fork of the warm process takes; the
    spare tells the parent ("A") when it took a connection, and the parent
    forks the next spare.  The child drops what is the parent's (the lock,
    the notification pipe's read end), and the listening socket once it has
    its connection, so a child that lives on never keeps the server's name or
    lock.  While it waits, it dies with the parent (PR_SET_PDEATHSIG): a
    server that was killed must leave no acceptor that no one replaces, or a
    client would wait for ever; once it serves a run, it serves it to its
    end whatever happens to the server.
    """
    import signal

    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.close(notify_r)
        os.close(lock_fd)
        from sandbox import libc, served

        if libc.function("prctl")(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return
        if os.getppid() != parent:
            return  # the server died before the line above: never accept for it
        reader = served.Reader()  # its thread started now, not on the run's time
        try:
            conn, _ = listener.accept()
        except OSError:
            return  # shut down: the server is exiting
        os.write(notify_w, b"A")
        listener.close()
        libc.function("prctl")(PR_SET_PDEATHSIG, 0, 0, 0, 0)
        code = served.handle(conn, notify_w, reader)
    finally:
        os._exit(code)


def _listen(socket, path: str):
    """Bind ``path`` (a stale socket file is removed first); None if it cannot."""
    if os.path.lexists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            probe.connect(path)
            return None  # something answers there: not ours to take
        except ConnectionRefusedError:
            os.unlink(path)  # a socket nobody listens on: a dead server's
        except OSError:
            return None
        finally:
            probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)  # 0600 from the start: no window where others could connect
    try:
        listener.bind(path)
        listener.listen(64)
    except OSError:
        listener.close()
        return None
    finally:
        os.umask(old)
    return listener


def status_doc(environ) -> dict:
    """``sandbox server status --json``: the same facts, and the server's peak RSS."""
    info = read_info(environ)
    if info is None or not is_server(info["pid"]):
        return {"running": False, "socket": paths(environ)[1]}
    peak = 0
    try:  # VmHWM: the server's own peak; each served run is a fork sharing its pages
        with open(f"/proc/{info['pid']}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {"running": True, **info, "peak_rss_kib": peak}


def status_lines(environ) -> list[str] | None:
    """What ``sandbox server status`` prints, or None when no server runs."""
    import time

    info = read_info(environ)
    if info is None or not is_server(info["pid"]):
        return None
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(info["started"]))
    idle = info["idle"]
    return [f"pid: {info['pid']}", f"socket: {info['socket']}",
            f"started: {started} ({time.time() - info['started']:.0f} s ago)",
            f"served: {info['served']}",
            f"idle timeout: {idle:g} s" + (" (exits after one request)" if idle == 0 else "")]


def stop(environ, timeout: float = 5.0) -> tuple[int, str]:
    """Stop the running server with SIGTERM: (exit status, the line to print).

    The pid comes from the lock file of a held lock, and is checked (pinned
    by a pidfd, so it cannot be recycled in between) to be a sandbox server
    of this user before it gets the signal: never signal a stranger.
    """
    import select
    import signal

    _state, sock, lock, _last = paths(environ)
    info = read_info(environ)
    if info is None:
        return 0, f"no sandbox server runs for {sock}; nothing to stop"
    pid = info["pid"]
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return 0, f"no sandbox server runs for {sock}; nothing to stop"
    try:
        if not is_server(pid):
            return 125, (f"sandbox: error: pid {pid} named in {lock} is not a sandbox server; "
                         "nothing was stopped (hint: remove that file if no server runs)")
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        poll = select.poll()
        poll.register(pidfd, select.POLLIN)
        if not poll.poll(timeout * 1000):
            return 125, (f"sandbox: error: the sandbox server (pid {pid}) did not exit within "
                         f"{timeout:g} s of SIGTERM (hint: kill -KILL {pid})")
    except OSError as exc:
        return 125, f"sandbox: error: cannot stop the sandbox server (pid {pid}): {exc.strerror}"
    finally:
        os.close(pidfd)
    return 0, f"stopped the sandbox server (pid {pid})"
