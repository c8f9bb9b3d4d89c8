"""The fallback backend's exec shim: ``python -I -m sandbox.linux.confine ... -- CMD``.

Started by ``sandbox.runner`` in place of bwrap when bwrap cannot make its
namespaces (``sandbox.linux.fallback`` builds the argv).  It speaks bwrap's part
of the protocol the runner already reads: ``--json-status-fd`` gets
``{"child-pid": N}`` once the command runs and ``{"exit-code": N}`` when it
has ended; ``--seccomp FD`` holds the BPF program; ``--args FD`` holds
``--setenv NAME VALUE`` for loader variables that must not reach this
interpreter.

Why a program of its own and not a ``preexec_fn`` in the wrapper: the
wrapper may hold threads (the egress proxy's), and after a fork only the
calling thread exists, so Python code in that child can deadlock on a lock
another thread held.  This shim is single-threaded, so it can build the
Landlock ruleset (walking the filesystem) in Python, fork, and have the
child make only system calls before exec:

    parent (unconfined, not dumpable, child subreaper, holds the status fd)
      └─ child: setsid, parent-death signal, no_new_privs, capabilities
         dropped, landlock_restrict_self, seccomp filter, chdir, exec CMD

The parent stays outside the command's Landlock domain, so with ABI 6 the
command can neither signal it nor trace it, and it is not dumpable, so
its status descriptor cannot be taken through /proc.  When the command
ends, whatever it left running is killed (orphans are re-parented to the
parent, a child subreaper), as bwrap's PID namespace would.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import stat
import sys

from sandbox.linux import landlock

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
# NOROOT and its lock, NO_CAP_AMBIENT_RAISE and its lock: uid 0 gains no
# capabilities at exec
SECUREBITS = 0x01 | 0x02 | 0x40 | 0x80
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# /dev is not read by the walk: the host's device nodes are there (virtual
# consoles and other sessions' pseudo-terminals, whose keystrokes a reader
# gets; /dev/kvm, loop and zram devices, hwrng...), where bwrap shows a
# fresh /dev of a few nodes.  Only those nodes are granted (read and write),
# plus the terminal the command was handed (on fd 0, 1 or 2), and listing.
# The cost: a pty the command makes itself (openpty opens its peer by path)
# cannot be opened; Landlock cannot tell it from another session's.
DEV = "/dev"
DEV_WRITABLE = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                "/dev/tty", "/dev/ptmx")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def read_rules(ruleset, hidden, abi: int) -> int:
    """Grant reads everywhere except beneath ``hidden`` paths; return the rule count.

    Landlock only allows, so "everything but X" is spelled as: every entry of
    every directory on the way to a hidden path gets read access, except the
    next step towards it; those directories themselves get only READ_DIR
    (names can be listed, contents of hidden files cannot be read).  An
    entry that is a symlink is granted by what it points at, and skipped
    when that is hidden or holds something hidden.  Something created after
    this walk in such a directory is unreadable (fail closed).
    """
    # a hidden path that is a symlink hides what it points at too: that is
    # where the kernel (and Landlock) finds the content
    hidden = {os.path.normpath(h) for h in hidden} | {os.path.realpath(h) for h in hidden}
    ancestors = set()
    for h in hidden:
        parent = os.path.dirname(h)
        while True:
            ancestors.add(parent)
            if parent == "/":
                break
            parent = os.path.dirname(parent)
    if "/" in hidden:
        return 0
    count = 0
    ruleset.allow_path("/", landlock.READ_DIR)
    pending = ["/"]
    while pending:  # bounded by the ancestors of the hidden paths
        directory = pending.pop()
        try:
            names = os.listdir(directory)
        except OSError:
            continue  # cannot list it: nothing beneath is granted (fail closed)
        for name in names:
            path = os.path.join(directory, name)
            if path in hidden:
                continue
            if path in ancestors and not os.path.islink(path):
                pending.append(path)
                continue
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                real = os.readlink(f"/proc/self/fd/{fd}")  # what the fd really is
                if any(_within(real, h) or _within(h, real) for h in hidden):
                    continue  # a way into (or around) a hidden path
                ruleset.allow_fd(fd, landlock.READ, stat.S_ISDIR(os.fstat(fd).st_mode))
                count += 1
            except OSError:
                continue
            finally:
                os.close(fd)
    return count


def _own_terminals() -> tuple[str, ...]:
    """The terminal(s) the command was handed on fds 0-2, by path."""
    out = []
    for fd in (0, 1, 2):
        try:
            name = os.ttyname(fd)
        except OSError:
            continue
        if name not in out:
            out.append(name)
    return tuple(out)


def build_ruleset(spec: dict, scratch: str):
    abi = landlock.abi_version()
    net = landlock.net_mask(abi)
    ruleset = landlock.Ruleset(abi, landlock.fs_mask(abi), net, landlock.scope_mask(abi))
    read_rules(ruleset, list(spec["hidden"]) + [DEV], abi)
    ruleset.allow_path(DEV, landlock.READ_DIR)  # names only (ls /dev, /dev/fd/N)
    for path in spec["read"]:  # shown although under a hidden path (the workspace in /tmp)
        ruleset.allow_path(path, landlock.READ)
    for path in DEV_WRITABLE + _own_terminals():
        ruleset.allow_path(path, landlock.READ | landlock.WRITE_FILE)
    write = landlock.READ | landlock.write_mask(abi)
    for path in spec["write"] + [scratch]:
        if not ruleset.allow_path(path, write):
            raise OSError(2, f"writable path {path} is missing")
    if net and spec.get("proxy_port"):
        ruleset.allow_port(int(spec["proxy_port"]), landlock.NET_CONNECT_TCP)
    return ruleset


def _parse(argv: list[str]):
    opts: dict = {}
    i = 0
    while i < len(argv) and argv[i] != "--":
        name, value = argv[i], argv[i + 1]
        opts[name] = value
        i += 2
    return opts, argv[i + 1:]


def _read_fd(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _setenv(data: bytes) -> dict[str, str]:
    words = data.split(b"\0")[:-1]
    out = {}
    for i in range(0, len(words) - 2, 3):
        if words[i] == b"--setenv":
            out[os.fsdecode(words[i + 1])] = os.fsdecode(words[i + 2])
    return out


def _drop_capabilities(libc) -> None:
    """No capabilities, now or after exec, even for uid 0 (best effort for the
    parts that need CAP_SETPCAP; the capset itself always works)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as fh:
            last = int(fh.read())
    except (OSError, ValueError):
        last = 63
    libc.prctl(PR_SET_SECUREBITS, SECUREBITS, 0, 0, 0)
    for cap in range(last + 1):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def _child(cmd, env, cwd, ruleset, bpf, err_w, parent) -> None:
    """After fork: confine this process, then become the command.  Never returns."""
    stage = "setup"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        for signum in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM,
                       signal.SIGHUP, signal.SIGQUIT):
            signal.signal(signum, signal.SIG_DFL)
        os.setsid()  # no controlling terminal: TIOCSTI cannot reach the caller's
        stage = "parent-death signal"
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != parent:
            raise OSError(ctypes.get_errno() or 3, "the sandbox's parent is gone")
        stage = "no_new_privs"
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        stage = "dropping capabilities"
        _drop_capabilities(libc)
        stage = "landlock_restrict_self"
        ruleset.restrict_self()
        if bpf:
            stage = "loading the seccomp filter"
            buf = ctypes.create_string_buffer(bpf, len(bpf))
            prog = _SockFprog(len(bpf) // 8, ctypes.addressof(buf))
            if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
        stage = "chdir"
        os.chdir(cwd)
        stage = "exec"
        os.execvpe(cmd[0], cmd, env)
    except OSError as exc:
        msg = f"{stage}:{exc.errno or 0}:{exc}"
    except BaseException as exc:  # noqa: BLE001 - reported, then exit
        msg = f"{stage}:0:{type(exc).__name__}: {exc}"
    try:
        os.write(err_w, msg.encode("utf-8", "replace")[:4000])
    finally:
        os._exit(127)


def _children(pid: int) -> list[int]:
    """Children of every thread of ``pid`` (a thread's children are listed
    under that thread only)."""
    out = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(p) for p in fh.read().split()]
        except (OSError, ValueError):
            continue
    return out


# more processes than a run can hold under the default limits: the walk stops there
MAX_DESCENDANTS = 1 << 16


def _descendants(pid: int) -> list[int]:
    """Every process beneath ``pid``, the whole tree at once.  Killing only the
    direct children, round after round, let a chain deeper than the rounds
    outlive the run (each round only reached one more level)."""
    out: list[int] = []
    pending = [pid]
    while pending and len(out) < MAX_DESCENDANTS:
        kids = _children(pending.pop())
        out += kids
        pending += kids
    return out


def _write_status(fd: int, record: dict) -> None:
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    except OSError:
        pass


def main(argv: list[str]) -> int:
    opts, cmd = _parse(argv)
    status_fd = int(opts["--json-status-fd"])
    spec = json.loads(opts["--spec"])
    bpf = _read_fd(int(opts["--seccomp"])) if "--seccomp" in opts else b""
    env = dict(os.environ)
    if "--args" in opts:
        env.update(_setenv(_read_fd(int(opts["--args"]))))
    os.set_inheritable(status_fd, False)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    import tempfile

    os.makedirs(spec["scratch_base"], mode=0o700, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="run-", dir=spec["scratch_base"])
    try:
        abi = landlock.abi_version()
        if abi < spec["abi_min"]:
            print(f"sandbox: the fallback needs Landlock ABI {spec['abi_min']}, this kernel has "
                  f"{abi or 'none'}; the command was not run", file=sys.stderr)
            return 1
        try:
            ruleset = build_ruleset(spec, scratch)
        except OSError as exc:
            print(f"sandbox: cannot build the Landlock ruleset: {exc}; the command was not run",
                  file=sys.stderr)
            return 1
        for name in ("TMPDIR", "TMP", "TEMP"):
            env[name] = scratch
        err_r, err_w = os.pipe()  # close-on-exec: end-of-file means the exec happened
        me = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            os.close(err_r)
            _child(cmd, env, spec["cwd"], ruleset, bpf, err_w, me)
        os.close(err_w)
        ruleset.close()
        report = _read_fd(err_r).decode("utf-8", "replace")
        if report:
            stage, _, rest = report.partition(":")
            code, _, text = rest.partition(":")
            os.waitpid(pid, 0)
            if stage != "exec":
                print(f"sandbox: cannot confine the command ({stage}: {text}); the command "
                      "was not run", file=sys.stderr)
                return 1
            print(f"sandbox: cannot run {cmd[0]}: {os.strerror(int(code or 0))}", file=sys.stderr)
            _write_status(status_fd, {"child-pid": me})
            _write_status(status_fd, {"exit-code": 127})
            return 127
        _write_status(status_fd, {"child-pid": me})
        return _wait(pid, status_fd)
    finally:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)


def _wait(pid: int, status_fd: int) -> int:
    """Wait for the command; then kill and reap whatever it left behind."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_IGN)  # the runner signals the command's group
    code = None
    while code is None:
        try:
            done, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if done == pid:
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code
    # bounded: each round kills the whole tree left so far; a later round only
    # meets what was forked while the previous one was being killed
    for _ in range(1000):
        tree = _descendants(os.getpid())
        if not tree:
            break
        for kid in tree:
            try:
                os.kill(kid, signal.SIGKILL)
            except OSError:
                pass
        for kid in _children(os.getpid()):  # reap; deeper ones are re-parented here as they die
            try:
                os.waitpid(kid, 0)
            except ChildProcessError:
                pass
    _write_status(status_fd, {"exit-code": code if code is not None else 1})
    return code if code is not None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
