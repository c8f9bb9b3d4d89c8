"""What the namespace flags and /proc cover of sandbox/linux/bwrap.py DO.

tests/test_bwrap.py pins the argv exactly; a mutation run showed that some
protections were caught only there (drop ``--unshare-ipc`` or
``--disable-userns`` from bwrap.py and every behavioural test still passed;
drop the AF_PACKET rule from bwrap/seccomp.toml and only a table test
failed).  Each test here runs the real sandbox, as root and as the
unprivileged user, shows the thing works without the protection (on the
host, in a plain bwrap with the same kind of namespaces, or under a profile
that turns the seccomp filter off) and fails inside.

Nothing on the host is changed: IPC objects are created by the test and
removed again; /proc files are opened for writing and closed, never written.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import random
import subprocess
import textwrap
import uuid

import pytest

pytestmark = pytest.mark.integration

PY = "/usr/bin/python3"  # the test user cannot run root's pyenv python
IPC_CREAT, IPC_EXCL, IPC_RMID = 0o1000, 0o2000, 0
CLONE_NEWUSER = 0x10000000
AF_PACKET = 17


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "mq_open"):  # glibc before 2.34 keeps it in librt
        libc = ctypes.CDLL("librt.so.1", use_errno=True)
    libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
    libc.shmctl.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    libc.mq_open.restype = ctypes.c_int
    return libc


# Run by /usr/bin/python3 inside and outside; prints one RESULT line of JSON.
PROBE = textwrap.dedent(r'''
    import ctypes, errno, json, os, socket, sys
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "mq_open"):
        libc = ctypes.CDLL("librt.so.1", use_errno=True)
    libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
    OUT = {}

    def name(ret):
        return "ok" if ret >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")

    def ipc(key, queue):
        OUT["shm"] = name(libc.shmget(key, 0, 0))
        fd = libc.mq_open(queue.encode(), os.O_RDONLY)
        OUT["mq"] = name(fd)
        if fd >= 0:
            libc.mq_close(fd)

    def userns():
        # in a child, so the probe itself stays where it is
        pid = os.fork()
        if pid == 0:
            os._exit(0 if libc.unshare(0x10000000) == 0 else ctypes.get_errno())
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        OUT["userns"] = "ok" if code == 0 else errno.errorcode.get(code, str(code))

    def packet():
        # SOCK_TYPE 15 does not exist: the kernel answers EINVAL before it
        # asks for CAP_NET_RAW, so only the seccomp rule can say EPERM here
        for label, kind in (("packet_badtype", 15), ("packet_raw", socket.SOCK_RAW)):
            try:
                socket.socket(17, kind, 0).close()
                OUT[label] = "ok"
            except OSError as exc:
                OUT[label] = errno.errorcode.get(exc.errno, str(exc.errno))

    def knob(path):
        try:
            os.close(os.open(path, os.O_WRONLY))  # opened, never written
            OUT["open"] = "ok"
        except OSError as exc:
            OUT["open"] = errno.errorcode.get(exc.errno, str(exc.errno))
        OUT["mounts"] = [line.split()[5] for line in open("/proc/self/mountinfo")
                         if line.split()[4] == path]

    what = sys.argv[1]
    if what == "ipc":
        ipc(int(sys.argv[2]), sys.argv[3])
    elif what == "userns":
        userns()
    elif what == "packet":
        packet()
    elif what == "knob":
        knob(sys.argv[2])
    print("RESULT " + json.dumps(OUT), flush=True)
''')


def show(r: subprocess.CompletedProcess) -> str:
    return (f"exit {r.returncode}\n--- stdout\n{r.stdout.decode(errors='replace')[-2000:]}"
            f"\n--- stderr\n{r.stderr.decode(errors='replace')[-2000:]}")


def result(r: subprocess.CompletedProcess) -> dict:
    lines = [ln for ln in r.stdout.decode(errors="replace").splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and lines, show(r)
    return json.loads(lines[-1][len("RESULT "):])


def probe(senv, *args: str, sandboxed: bool = True, profile: str | None = None) -> dict:
    extra = ["--profile", profile] if profile else []
    return result(senv.run([PY, "-c", PROBE, *args], sandboxed=sandboxed, args=extra))


def plain_bwrap(senv, *args: str) -> dict:
    """The probe in a bare bwrap with a user and pid namespace, a fresh /proc
    and no capabilities, but none of sandbox's flags: what the kernel and
    bwrap give on their own."""
    senv.finish()
    argv = ["bwrap", "--unshare-user", "--unshare-pid", "--unshare-net", "--ro-bind", "/", "/",
            "--dev", "/dev", "--proc", "/proc", "--cap-drop", "ALL", "--",
            PY, "-c", PROBE, *args]
    r = subprocess.run(senv.who.prefix() + argv, cwd=senv.ws, env=senv.environ(),
                       capture_output=True, timeout=60)
    return result(r)


def no_seccomp_profile(senv) -> str:
    """The default profile with the seccomp filter off (a weakening), kept
    outside the workspace so the command cannot rewrite it."""
    path = senv.base / "no-seccomp.toml"
    path.write_text('extends = "default"\n[syscalls]\nenabled = false\n')
    return str(path)


# --------------------------------------------------------------------------
# --unshare-ipc: System V and POSIX IPC objects of the host are out of reach


@pytest.fixture
def host_ipc():
    """A SysV shared memory segment and a POSIX message queue on the host,
    readable by everyone (mode 0666 / 0644), removed after the test."""
    libc = _libc()
    rng = random.Random()
    for _ in range(20):
        key = rng.randrange(0x10000000, 0x7FFFFFFF)
        shm_id = libc.shmget(key, 4096, IPC_CREAT | IPC_EXCL | 0o666)
        if shm_id >= 0:
            break
    else:
        pytest.fail("could not create a SysV shared memory segment")
    queue = f"/sbx-test-{uuid.uuid4().hex[:12]}"
    mq = libc.mq_open(queue.encode(), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666, None)
    try:
        if mq < 0:
            pytest.skip(f"POSIX message queues unavailable: {os.strerror(ctypes.get_errno())}")
        yield str(key), queue
    finally:
        libc.shmctl(shm_id, IPC_RMID, None)
        if mq >= 0:
            libc.mq_close(mq)
            libc.mq_unlink(queue.encode())


def test_host_ipc_objects_are_invisible(senv, host_ipc):
    key, queue = host_ipc
    outside = probe(senv, "ipc", key, queue, sandboxed=False)
    assert outside == {"shm": "ok", "mq": "ok"}, outside  # the same user reaches both on the host
    inside = probe(senv, "ipc", key, queue)
    assert inside == {"shm": "ENOENT", "mq": "ENOENT"}, inside


# --------------------------------------------------------------------------
# --disable-userns: no nested user namespace, even with the seccomp filter off
# (the filter refuses unshare() too, so with it on the flag could not be seen)


def test_no_nested_user_namespace_without_seccomp(senv):
    assert probe(senv, "userns", sandboxed=False)["userns"] == "ok"
    # a sandbox-like bwrap without --disable-userns lets the command nest one
    assert plain_bwrap(senv, "userns")["userns"] == "ok"
    off = probe(senv, "userns", profile=no_seccomp_profile(senv))
    # bwrap caps the namespace count of the sandbox's user namespace
    assert off["userns"] == "ENOSPC", off
    assert probe(senv, "userns")["userns"] == "EPERM"  # and the filter is a second wall


# --------------------------------------------------------------------------
# socket(AF_PACKET): refused by the seccomp rule, not only by the missing
# capability (without capabilities the kernel says EPERM too, so a raw
# socket cannot tell the two apart; an invalid socket type can)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "aarch64"),
                    reason="the seccomp table covers x86_64 and aarch64 only")
def test_af_packet_is_refused_by_the_filter(senv):
    outside = probe(senv, "packet", sandboxed=False)
    without_filter = probe(senv, "packet", profile=no_seccomp_profile(senv))
    inside = probe(senv, "packet")
    # the kernel looks at the type first: EINVAL, on the host and in the sandbox without filter
    assert outside["packet_badtype"] == without_filter["packet_badtype"] == "EINVAL"
    assert inside["packet_badtype"] == "EPERM", inside
    assert inside["packet_raw"] == "EPERM"
    if senv.who.uid == 0:
        assert outside["packet_raw"] == "ok"  # root really gets one on the host


# --------------------------------------------------------------------------
# /proc/sysrq-trigger, /proc/irq, /proc/bus: read-only mounts
#
# bwrap's own --proc covers these too, but only where bwrap can write them
# at setup (bubblewrap's cover_proc_dirs checks access(W_OK)): for a caller
# who is root it binds them read-only itself, for an unprivileged caller it
# leaves them, and only sandbox's binds make them read-only mounts (file
# modes already keep that user out).  So for root, dropping one of
# sandbox's binds changes nothing (bwrap's cover gives EROFS all the same);
# the unprivileged run notices it through /proc/self/mountinfo.  And
# /proc/sysrq-trigger does not exist on kernels built without
# CONFIG_MAGIC_SYSRQ: the test says so and skips.


def _writable_knob(directory: str) -> str | None:
    """A file under ``directory`` that root may open for writing on the host."""
    if not os.path.exists(directory):
        return None
    if not os.path.isdir(directory):
        return directory
    for dirpath, _dirs, files in os.walk(directory):
        for f in sorted(files):
            path = os.path.join(dirpath, f)
            if os.stat(path).st_mode & 0o200:
                return path
        if dirpath.count("/") > 6:
            break
    return None


@pytest.mark.parametrize("mount", ["/proc/sysrq-trigger", "/proc/irq", "/proc/bus"])
def test_proc_kernel_knobs_are_read_only(senv, mount):
    target = _writable_knob(mount)
    if target is None:
        pytest.skip(f"{mount} does not exist on this kernel, or has no file root may write")
    inside = probe(senv, "knob", mount if target == mount else target)
    where = probe(senv, "knob", mount)["mounts"]
    assert where and all(opts.split(",")[0] == "ro" for opts in where), where
    outside = probe(senv, "knob", target, sandboxed=False)
    if senv.who.uid == 0:
        assert outside["open"] == "ok", outside  # root may open it for writing on the host
        assert inside["open"] == "EROFS", inside
    else:
        assert outside["open"] == "EACCES"
        assert inside["open"] in ("EACCES", "EROFS"), inside


# --------------------------------------------------------------------------
# --unshare-uts and --hostname: the host's name is not shown, and a name set
# inside stays inside


def test_host_name_is_hidden_and_cannot_be_changed(senv):
    import socket

    host = socket.gethostname()
    inside = senv.sh("hostname; hostname renamed-by-command 2>/dev/null; hostname")
    assert inside.returncode == 0, show(inside)
    first, after = inside.stdout.decode().split()
    assert first == "sandbox" != host, first
    assert after in ("sandbox", "renamed-by-command")  # no capability: stays "sandbox"
    assert socket.gethostname() == host
