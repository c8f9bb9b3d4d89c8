"""The native client (native/client.c), the installed ``sandbox`` binary.

When it goes direct (execs ``sandbox-direct``), what it sends to a server
(protocol v1, SERVED.md), how it treats the server's answers and signals,
and its check of the server before it sends anything.  The server here is
a small TEST-ONLY one (``FAKE_SERVER`` below) that records what it receives
and answers as told.  Comments marked "final server" say what to repeat
against sandbox/server.py when it exists (the lead integrates): the request
fields as the served child adopts them, the fallback, the K relay, and the
impostor control (the real server in our context serves the run).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Env, sandbox_exe, server_socket

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the native client serves on Linux only")

EOF_ERROR = ("sandbox: error: the sandbox server ended before reporting the command's exit "
             "status; see 'sandbox server status'\n")

# A test-only server for protocol v1.  argv: socket path, mode, record file.
# Mode "X<n>": answer "X" n; "F": fallback; "EOF": close without an answer;
# "K": wait for a "K" message, record it, answer "X" 128+signum; "KF": the
# same, but answer "F" (the server stopped before anything ran); "RST": never
# accept, close the listening socket once a client waits (a server exiting
# as a client connects: the client sees ECONNRESET).  Each
# connection appends one JSON line to the record file BEFORE the answer (so a
# test that sees the client exit sees the record).  Exits when <record>.stop
# exists or after 60 s.
FAKE_SERVER = r'''
import json, os, select, socket, struct, sys, time
path, mode, record = sys.argv[1:4]
# 0755, not the real 0700: a live socket in another user's private directory
# makes every root sandbox run on this machine fail to mask it (bwrap cannot
# create the mount point there), and the suite runs as root and sbxtest at once
os.makedirs(os.path.dirname(path), exist_ok=True)
os.chmod(os.path.dirname(path), 0o755)
try:
    os.unlink(path)
except FileNotFoundError:
    pass
lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
os.chdir(os.path.dirname(path))  # a relative name: a path longer than sun_path binds too
lsock.bind(os.path.basename(path))
lsock.listen(8)
print("ready", flush=True)

def note(entry):
    with open(record, "a") as f:
        f.write(json.dumps(entry) + "\n")

def strings(data, at):
    n, = struct.unpack_from("=I", data, at)
    at += 4
    out = []
    for _ in range(n):
        end = data.index(b"\0", at)
        out.append(data[at:end].decode("utf-8", "surrogateescape"))
        at = end + 1
    return out, at

def serve(conn):
    conn.settimeout(10)
    data, fds, _, _ = socket.recv_fds(conn, 65536, 16)
    received = len(data)
    while data:  # until the whole request (header, then its length) or EOF
        need = 8 if len(data) < 8 else 8 + struct.unpack_from("=I", data, 4)[0]
        more = conn.recv(65536) if len(data) < need else b""
        if not more:
            break
        data += more
    entry = {"bytes": len(data), "nfds": len(fds),
             "fds": [[os.fstat(fd).st_dev, os.fstat(fd).st_ino] for fd in fds]}
    if len(data) >= 8:
        entry["magic"] = data[:4].decode("latin-1")
        length, = struct.unpack_from("=I", data, 4)
        payload = data[8:]
        entry["complete"] = len(payload) == length
        argv, at = strings(payload, 0)
        env, at = strings(payload, at)
        umask, ignored, blocked = struct.unpack_from("=IQQ", payload, at)
        entry.update(argv=argv, env=env, umask=umask, ignored=ignored, blocked=blocked,
                     trailing=len(payload) - at - 20)
    for fd in fds:
        os.close(fd)
    if not received:
        note(entry)
        return
    if mode == "EOF":
        note(entry)
        return
    if mode in ("K", "KF"):
        note(entry)
        msg = b""
        while len(msg) < 5:
            more = conn.recv(5 - len(msg))
            if not more:
                break
            msg += more
        sig = struct.unpack("=i", msg[1:5])[0] if len(msg) == 5 and msg[:1] == b"K" else None
        note({"kill": sig})
        conn.sendall(b"F" + struct.pack("=i", 0) if mode == "KF"
                     else b"X" + struct.pack("=i", 128 + (sig or 0)))
        return
    note(entry)
    conn.sendall(b"F" + struct.pack("=i", 0) if mode == "F" else b"X" + struct.pack("=i", int(mode[1:])))

deadline = time.monotonic() + 60
if mode == "RST":
    if select.select([lsock], [], [], 30)[0]:
        time.sleep(0.5)  # the client checks us and sends its request into the queue
        note({"closed_unaccepted": True})
    lsock.close()
    sys.exit(0)
while time.monotonic() < deadline and not os.path.exists(record + ".stop"):
    if select.select([lsock], [], [], 0.1)[0]:
        conn, _ = lsock.accept()
        try:
            serve(conn)
        except (OSError, ValueError, struct.error) as exc:
            note({"error": repr(exc)})
        finally:
            conn.close()
'''


def sock_path(env: Env) -> Path:
    """<state>/server-<install id>.sock as the client computes it (HOME set, XDG_CACHE_HOME not)."""
    return server_socket(Path(os.path.realpath(env.home / ".cache")) / "sandbox")


class FakeServer:
    def __init__(self, env: Env, mode: str, prefix: list[str] = (), path: Path | None = None) -> None:
        self.env = env
        script = env.base / "fake_server.py"
        script.write_text(FAKE_SERVER)
        self.record = env.base / f"record-{time.monotonic_ns()}.jsonl"
        path = path or sock_path(env)
        path.parent.parent.mkdir(parents=True, exist_ok=True)
        env.finish()  # the tree belongs to who runs the client (and the server)
        self.proc = subprocess.Popen(
            [*env.who.prefix(), *prefix, sys.executable, "-I", str(script), str(path),
             mode, str(self.record)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/", text=True)
        line = self.proc.stdout.readline()  # bounded: the server prints it or dies
        if line.strip() != "ready":
            self.proc.kill()
            pytest.fail(f"the test server did not start: {self.proc.stderr.read()}")

    def records(self, wait_for: int = 0, timeout: float = 10) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            lines = self.record.read_text().splitlines() if self.record.exists() else []
            if len(lines) >= wait_for or time.monotonic() > deadline:
                return [json.loads(line) for line in lines]
            time.sleep(0.05)

    def stop(self) -> list[dict]:
        """Stop the server (after the connection it handles) and return its records."""
        Path(str(self.record) + ".stop").touch()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        return self.records()


@pytest.fixture
def servers():
    started: list[FakeServer] = []

    def start(env: Env, mode: str, prefix: list[str] = (), path: Path | None = None) -> FakeServer:
        server = FakeServer(env, mode, prefix, path)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(timeout=5)


def served_environ(env: Env, **extra: str) -> dict[str, str]:
    """The test's environment with the server allowed (the suite turns it off by
    default) unless ``extra`` sets SANDBOX_SERVER itself."""
    environ = env.environ(**extra)
    if "SANDBOX_SERVER" not in extra:
        environ.pop("SANDBOX_SERVER", None)
    return environ


def client(env: Env, args: list[str], *, exe: str | None = None, stdin=subprocess.DEVNULL,
           extra_env: dict | None = None, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    """Run the installed client (or ``exe``) with ``args`` from the workspace, not on a terminal."""
    env.finish()
    environ = served_environ(env, **(extra_env or {}))
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.run([*env.who.prefix(), exe or sandbox_exe(), *args], cwd=env.ws, env=environ,
                          stdin=stdin, timeout=timeout, **kw)


def direct_exe() -> str:
    return str(Path(sandbox_exe()).with_name("sandbox-direct"))


def own_lines(stderr: bytes) -> list[bytes]:
    """stderr without the notes a run may add when a socket that parallel tests
    bind comes or goes under it (sandbox.linux.drift), which differ run to run."""
    return [line for line in stderr.splitlines()
            if not line.startswith((b"bwrap: ", b"sandbox: note: "))]


CMD = ["run", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]


def test_installed_sandbox_is_the_native_client_and_sandbox_direct_the_python_cli():
    with open(sandbox_exe(), "rb") as f:
        assert f.read(4) == b"\x7fELF", "scripts/setup installed no native client (no C compiler?)"
    with open(direct_exe(), "rb") as f:
        first = f.readline()
    assert first.startswith(b"#!") and b"python" in first


def test_no_server_goes_direct_with_the_same_outcome_as_sandbox_direct(senv):
    via_client = client(senv, CMD)
    # off: so that (with the final server) this second direct run starts no server
    via_direct = client(senv, CMD, exe=direct_exe(), extra_env={"SANDBOX_SERVER": "off"})
    assert (via_client.returncode, via_client.stdout, own_lines(via_client.stderr)) == \
        (via_direct.returncode, via_direct.stdout, own_lines(via_direct.stderr))
    assert via_client.returncode == 3 and via_client.stdout == b"out\n"
    assert b"err\n" in via_client.stderr


def test_a_listening_server_gets_the_run_unless_sandbox_server_is_off(senv, servers):
    server = servers(senv, "X7")
    off = client(senv, CMD, extra_env={"SANDBOX_SERVER": "off"})
    assert (off.returncode, off.stdout) == (3, b"out\n"), off.stderr  # ran direct
    for value in ("0", "no", "false"):
        assert client(senv, CMD, extra_env={"SANDBOX_SERVER": value}).returncode == 3
    assert server.records() == [], "SANDBOX_SERVER=off must not even connect"
    served = client(senv, CMD)  # the same run, server allowed: it answers 7
    assert served.returncode == 7 and served.stdout == b"" and served.stderr == b""
    records = server.stop()
    assert len(records) == 1 and records[0]["complete"]


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["explain", "--", "true"],
                                  ["run", "--report-fd", "1", "--", "true"],
                                  ["run", "--report-fd=1", "--", "true"],
                                  ["sh", "--report-fd", "1", "--", "true"]])
def test_other_commands_and_report_fd_go_direct_without_connecting(senv, servers, args):
    server = servers(senv, "X7")
    out = client(senv, args)
    assert out.returncode == 0, out.stderr
    assert server.stop() == []


@pytest.mark.parametrize("where", ["xdg", "empty-xdg", "xdg-link"])
def test_the_socket_is_in_the_state_dir_plancache_names(senv, servers, where):
    xdg = senv.base / "xdg"
    xdg.mkdir()
    value = {"xdg": str(xdg), "empty-xdg": "", "xdg-link": str(senv.base / "link")}[where]
    if where == "xdg-link":
        os.symlink("xdg", senv.base / "link")  # realpath'd, as plancache.state_dir does
    from sandbox import plancache

    state = plancache.state_dir({"HOME": str(senv.home), "XDG_CACHE_HOME": value})
    assert state == (str(senv.home / ".cache" / "sandbox") if where == "empty-xdg"
                     else str(xdg / "sandbox"))
    server = servers(senv, "X7", path=server_socket(Path(state)))
    assert client(senv, CMD, extra_env={"XDG_CACHE_HOME": value}).returncode == 7
    assert len(server.stop()) == 1


def test_a_socket_path_too_long_for_sun_path_goes_direct(senv, servers):
    deep = senv.base / ("d" * 60) / ("e" * 60)
    state = deep / "sandbox"
    server = servers(senv, "X7", path=server_socket(state))
    out = client(senv, CMD, extra_env={"XDG_CACHE_HOME": str(deep)})
    assert (out.returncode, out.stdout) == (3, b"out\n"), out.stderr
    assert server.stop() == []


def _big_stack():
    import resource

    resource.setrlimit(resource.RLIMIT_STACK, (256 << 20, resource.RLIM_INFINITY))


def test_a_request_over_4_mib_goes_direct_unsent(senv, servers):
    # exec allows an environment of a quarter of the stack limit: raise it
    server = servers(senv, "X7")
    big = {f"BIG{i}": "x" * (100 << 10) for i in range(45)}  # 4.5 MiB
    try:
        out = client(senv, ["run", "--", "true"], extra_env=big, preexec_fn=_big_stack)
    except OSError as exc:  # E2BIG: this host cannot pass such an environment at all
        pytest.skip(f"cannot start a process with a 4.5 MiB environment: {exc}")
    assert out.returncode != 7
    assert server.stop() == [{"bytes": 0, "nfds": 0, "fds": []}], "connected, checked, sent nothing"
    # the control: a 3.5 MiB environment is sent
    server = servers(senv, "X7")
    small = {f"BIG{i}": "x" * (100 << 10) for i in range(35)}
    assert client(senv, ["run", "--", "true"], extra_env=small, preexec_fn=_big_stack).returncode == 7
    record, = server.stop()
    assert record["complete"] and record["bytes"] > 35 * (100 << 10)


def test_a_terminal_on_stdio_goes_direct(senv, servers):
    server = servers(senv, "X7")
    master, slave = os.openpty()
    try:
        out = client(senv, ["run", "--", "sh", "-c", "echo tty; exit 4"], stdin=slave)
    finally:
        os.close(slave)
        os.close(master)
    assert out.returncode == 4 and b"tty" in out.stdout
    assert server.records() == []
    # the control: not on a terminal, the same run reaches the server
    assert client(senv, ["run", "--", "sh", "-c", "echo tty; exit 4"]).returncode == 7
    assert len(server.stop()) == 1


def _ignore_usr1_block_usr2_umask():
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    os.umask(0o027)


def test_the_request_carries_argv_environ_umask_signals_and_the_stdio_and_cwd_fds(senv, servers):
    server = servers(senv, "X7")
    io = {name: senv.base / name for name in ("in", "out", "err")}
    io["in"].write_bytes(b"input\n")
    extra = {"ODD": "a=b c\tд", "EMPTY": ""}
    with open(io["in"], "rb") as i, open(io["out"], "wb") as o, open(io["err"], "wb") as e:
        out = client(senv, ["run", "--", "echo", "hi there"], stdin=i, stdout=o, stderr=e,
                     extra_env=extra, preexec_fn=_ignore_usr1_block_usr2_umask)
    assert out.returncode == 7
    # a run without the changed dispositions and umask: the fields differ (the test can fail)
    plain = client(senv, ["run", "--", "echo", "hi there"])
    assert plain.returncode == 7
    first, second = server.stop()
    assert first["magic"] == "SBX1" and first["complete"] and first["trailing"] == 0
    assert first["argv"] == [sandbox_exe(), "run", "--", "echo", "hi there"]
    environ = served_environ(senv, **extra)
    assert first["env"] == [f"{k}={v}" for k, v in environ.items()]
    assert first["umask"] == 0o027 and second["umask"] != 0o027
    bit = lambda sig: 1 << (sig - 1)  # noqa: E731
    assert first["ignored"] & bit(signal.SIGUSR1) and not second["ignored"] & bit(signal.SIGUSR1)
    assert first["blocked"] & bit(signal.SIGUSR2) and not second["blocked"] & bit(signal.SIGUSR2)
    assert not first["ignored"] & bit(signal.SIGTERM)
    assert first["nfds"] == 4
    expect = [os.stat(io["in"]), os.stat(io["out"]), os.stat(io["err"]), os.stat(senv.ws)]
    assert first["fds"] == [[s.st_dev, s.st_ino] for s in expect]


@pytest.mark.parametrize("status,expect", [(0, 0), (7, 7), (255, 255), (256 + 9, 9)])
def test_the_exit_status_is_the_servers_low_byte(senv, servers, status, expect):
    server = servers(senv, f"X{status}")
    out = client(senv, ["sh", "--", "echo from sh"])
    assert (out.returncode, out.stdout, out.stderr) == (expect, b"", b"")
    record, = server.stop()
    assert record["argv"][1:] == ["sh", "--", "echo from sh"]


def test_fallback_runs_direct_once(senv, servers):
    server = servers(senv, "F")
    out = client(senv, CMD)
    assert (out.returncode, out.stdout) == (3, b"out\n") and b"err\n" in out.stderr, out.stderr
    assert len(server.stop()) == 1


def test_a_server_that_ends_without_an_answer_is_an_error_125(senv, servers):
    server = servers(senv, "EOF")
    out = client(senv, CMD)
    assert out.returncode == 125 and out.stdout == b""
    assert out.stderr.decode() == EOF_ERROR
    assert len(server.stop()) == 1


def test_a_server_that_closes_before_taking_the_request_means_direct(senv, servers):
    # ECONNRESET with nothing of ours sent after the request: the server never
    # read the request, so nothing ran (the final server's idle exit races a
    # connecting client this way; a 125 there would be a spurious failure)
    server = servers(senv, "RST")
    out = client(senv, CMD)
    assert (out.returncode, out.stdout) == (3, b"out\n"), out.stderr
    assert server.stop() == [{"closed_unaccepted": True}]


def test_sigterm_to_the_client_is_forwarded_as_k15(senv, servers):
    # final server: the served child raises it, the runner relays it to the command
    server = servers(senv, "K")
    senv.finish()
    environ = served_environ(senv)
    proc = subprocess.Popen([*senv.who.prefix(), sandbox_exe(), "run", "--", "sleep", "30"],
                            cwd=senv.ws, env=environ, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert len(server.records(wait_for=1)) == 1, "the request never arrived"
        # the client itself, not setpriv: with the `user` prefix setpriv execs it (same pid)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert server.stop()[1] == {"kill": signal.SIGTERM}


def _ignore_sigterm():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@pytest.mark.parametrize("ignored", [False, True])
def test_a_signal_before_a_fallback_acts_as_without_a_server(senv, servers, ignored):
    # SIGTERM reaches the client, which sends it on; the server answers "F"
    # (nothing ran).  Not ignored: the client dies of it and nothing runs.
    # Ignored when the client started: it stays ignored, and the run goes
    # direct (the disposition is put back before the exec, not left SIG_DFL).
    server = servers(senv, "KF")
    senv.finish()
    marker = senv.ws / "ran"
    proc = subprocess.Popen([*senv.who.prefix(), sandbox_exe(), "run", "--", "sh", "-c",
                             f"touch {marker}; echo ran"],
                            cwd=senv.ws, env=served_environ(senv), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_ignore_sigterm if ignored else None)
    try:
        assert len(server.records(wait_for=1)) == 1, "the request never arrived"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    assert server.stop()[1] == {"kill": signal.SIGTERM}
    if ignored:
        assert (proc.returncode, out) == (0, b"ran\n"), err
        assert marker.exists()
    else:
        assert proc.returncode == -signal.SIGTERM, err
        assert not marker.exists() and out == b""


# Impostors: a server that is not in exactly the client's context.  The
# client must connect, check, and go direct without sending one byte.
IMPOSTORS = {
    "no-new-privs": ["setpriv", "--no-new-privs", "--"],
    "user-namespace": ["unshare", "--user", "--map-current-user", "--"],
    "user+mount-namespace": ["unshare", "--user", "--map-root-user", "--mount", "--"],
}


def _impostor_possible(prefix: list[str], who_prefix: list[str]) -> bool:
    probe = subprocess.run([*who_prefix, *prefix, "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


@pytest.mark.parametrize("impostor", [None, *IMPOSTORS])
def test_the_client_sends_nothing_to_a_server_in_another_context(senv, servers, impostor):
    prefix = IMPOSTORS.get(impostor, [])
    if prefix and not _impostor_possible(prefix, senv.who.prefix()):
        pytest.skip(f"cannot start a process with {' '.join(prefix)} here")
    # final server: the same with `sandbox-direct server run` under the prefix
    server = servers(senv, "X7", prefix)
    out = client(senv, CMD)
    records = server.stop()
    if impostor is None:  # the control: the same server in our context gets the run
        assert out.returncode == 7
        assert len(records) == 1 and records[0]["complete"]
        return
    assert (out.returncode, out.stdout) == (3, b"out\n"), out.stderr  # ran direct
    assert records == [{"bytes": 0, "nfds": 0, "fds": []}], \
        "the client must connect, check the peer and close without sending"


def test_the_hook_names_the_native_client_when_run_as_sandbox_direct(senv):
    # `sandbox hook` runs as sandbox-direct (the client execs it): the rewritten
    # command must still name the `sandbox` next to it, not another one
    from sandbox import agenthooks

    bin_dir = senv.base / "bin"
    bin_dir.mkdir()
    (bin_dir / "sandbox").write_bytes(b"\x7fELF")
    os.chmod(bin_dir / "sandbox", 0o755)
    other = senv.base / "python-elsewhere" / "python"
    assert agenthooks.sandbox_exe(argv0=str(bin_dir / "sandbox-direct"),
                                  executable=str(other)) == str(bin_dir / "sandbox")


@pytest.mark.slow
def test_without_a_c_compiler_the_wheel_is_pure_and_its_sandbox_runs_direct(senv):
    """CC that does not exist: one warning, a py3-none-any wheel whose `sandbox`
    is the Python script, and that script works (runs direct)."""
    from conftest import REPO, link_site_packages

    dist = senv.base / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(dist),
                            str(REPO)], env={**os.environ, "CC": str(senv.base / "no-such-cc")},
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    warnings = [line for line in (build.stdout + build.stderr).splitlines()
                if "sandbox build: warning: cannot compile native/client.c" in line]
    assert len(warnings) == 1, build.stdout[-2000:]
    wheel, = dist.glob("*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")
    venv = senv.base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site, = venv.glob("lib/python*/site-packages")
    link_site_packages(site, skip=("sandbox", "sandbox-0.1.0.dist-info"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                    "-q", "--no-deps", str(wheel)], check=True, capture_output=True, timeout=300)
    exe = venv / "bin" / "sandbox"
    assert exe.read_bytes().startswith(b"#!") and os.access(exe, os.X_OK)
    assert (venv / "bin" / "sandbox-direct").exists()
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.startswith("sandbox ")
    out = client(senv, ["run", "--", "echo", "hi"], exe=str(exe))
    assert (out.returncode, out.stdout) == (0, b"hi\n"), out.stderr
