"""The warm server's lifetime (sandbox.server): when it starts, how it is
seen and stopped, and every reason it exits.  Real servers, real bwrap;
every server a test starts is stopped by its own PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Env, alive, link_site_packages, sandbox_exe, server_pid, server_socket

from served_support import connect, read_reply, send_request


def direct_exe() -> str:
    return str(Path(sandbox_exe()).with_name("sandbox-direct"))


def state(senv: Env) -> Path:
    return Path(os.path.realpath(senv.home / ".cache")) / "sandbox"


def sock(senv: Env) -> Path:
    return server_socket(state(senv))


def run(senv: Env, args, env, **kw):
    senv.finish()
    return subprocess.run(senv.who.prefix() + [sandbox_exe(), *args], cwd=senv.ws, env=env,
                          capture_output=True, input=b"", timeout=kw.pop("timeout", 120), **kw)


@pytest.fixture
def stop_servers(senv):
    """Stops, after the test, the server of senv's state dir, by the PID it reports."""
    yield
    env = senv.environ()
    pid = server_pid(env, senv)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def wait_for_server(senv: Env, env, seconds: float = 5) -> int | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pid = server_pid(env, senv)
        if pid is not None:
            return pid
        time.sleep(0.05)
    return None


def wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def foreground(senv: Env, env, python=sys.executable, script=None, stderr=subprocess.DEVNULL,
               extra=()):
    senv.finish()
    return subprocess.Popen(senv.who.prefix() + [python, *extra, script or direct_exe(),
                                                 "server", "run"],
                            cwd="/", env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=stderr)


def test_off_never_starts_a_server(senv, stop_servers):
    env = senv.environ(SANDBOX_SERVER="off")
    for _ in range(2):
        assert run(senv, ["run", "--", "true"], env).returncode == 0
    assert wait_for_server(senv, env, 1) is None
    assert not (state(senv) / "server.last").exists()


def test_auto_starts_a_server_for_runs_in_a_loop(senv, stop_servers):
    env = senv.environ(SANDBOX_SERVER="auto")
    assert run(senv, ["run", "--", "true"], env).returncode == 0
    assert wait_for_server(senv, env, 1) is None  # one run is not a loop
    assert (state(senv) / "server.last").exists()
    assert run(senv, ["run", "--", "true"], env).returncode == 0
    assert wait_for_server(senv, env) is not None


def test_auto_does_not_start_after_a_long_pause(senv, stop_servers):
    env = senv.environ(SANDBOX_SERVER="auto")
    assert run(senv, ["run", "--", "true"], env).returncode == 0
    old = time.time() - 120
    os.utime(state(senv) / "server.last", (old, old))
    assert run(senv, ["run", "--", "true"], env).returncode == 0
    assert wait_for_server(senv, env, 1) is None


def test_on_starts_one_server_and_never_a_second(senv, stop_servers):
    env = senv.environ(SANDBOX_SERVER="on")
    assert run(senv, ["run", "--", "true"], env).returncode == 0
    pid = wait_for_server(senv, env)
    assert pid is not None
    assert run(senv, [direct_exe(), "run", "--", "true"][1:], env).returncode == 0
    second = foreground(senv, env)
    assert second.wait(10) == 0  # the lock is held: it goes quietly
    assert server_pid(env, senv) == pid


def test_command_substitution_returns_at_once_with_the_server_started(senv, stop_servers):
    """The server holds none of the caller's descriptors: `$(sandbox run -- true)`
    ends when the run ends, although the server it started stays (idle 300 s)."""
    env = senv.environ(SANDBOX_SERVER="on", SANDBOX_SERVER_IDLE="300")
    senv.finish()
    for attempt in range(2):
        began = time.monotonic()
        done = subprocess.run(senv.who.prefix() + [
            "sh", "-c", f'x=$({sandbox_exe()} run -- echo hi); echo "got $x"'],
            cwd=senv.ws, env=env, capture_output=True, input=b"", timeout=60)
        assert done.stdout == b"got hi\n", done.stderr
        assert time.monotonic() - began < 20
        assert wait_for_server(senv, env) is not None


def test_status_and_stop(senv, stop_servers):
    env = senv.environ(SANDBOX_SERVER="on", SANDBOX_SERVER_IDLE="120")
    none = run(senv, ["server", "status"], env)
    assert none.returncode == 1 and b"no sandbox server runs for" in none.stdout
    nothing = run(senv, ["server", "stop"], env)
    assert nothing.returncode == 0 and b"nothing to stop" in nothing.stdout
    assert run(senv, ["run", "--", "true"], env).returncode == 0
    pid = wait_for_server(senv, env)
    status = run(senv, ["server", "status"], env).stdout.decode()
    assert f"pid: {pid}\n" in status
    assert f"socket: {sock(senv)}\n" in status
    assert "served: 0\n" in status and "idle timeout: 120 s\n" in status
    assert "started: " in status
    stopped = run(senv, ["server", "stop"], env)
    assert stopped.returncode == 0 and f"(pid {pid})".encode() in stopped.stdout
    assert wait_gone(pid, 5)
    assert not sock(senv).exists()


def test_stop_never_signals_a_process_that_is_not_a_server(senv):
    """A lock file naming another process (here a sleep holding the lock)."""
    env = senv.environ()
    st = state(senv)
    st.mkdir(parents=True, mode=0o700)
    lock = server_socket(st).with_suffix(".lock")
    lock.write_text("")
    senv.finish()
    holder = subprocess.Popen(senv.who.prefix() + ["flock", "-n", str(lock), "sleep", "60"])
    try:
        time.sleep(0.3)
        pids = [p for p in _children_of(holder.pid)] or [holder.pid]
        lock.write_text(f"{pids[-1]} 0 300 0\n")
        done = run(senv, ["server", "stop"], env)
        assert done.returncode == 125
        assert b"is not a sandbox server; nothing was stopped" in done.stderr
        assert holder.poll() is None and alive(pids[-1])
    finally:
        holder.kill()
        holder.wait(10)
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def _children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def test_idle_server_exits(senv):
    env = senv.environ(SANDBOX_SERVER_IDLE="1")
    proc = foreground(senv, env)
    pid = wait_for_server(senv, env)
    assert pid is not None
    assert proc.wait(10) == 0
    assert not sock(senv).exists()


def test_idle_zero_serves_one_request_then_exits(served_once):
    senv, env, proc = served_once
    done = subprocess.run(senv.who.prefix() + [sys.executable, str(senv.base / "ss.py"),
                                               str(sock(senv)), "run", "--",
                                               "true"],
                          cwd=senv.ws, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert proc.wait(10) == 0


@pytest.fixture
def served_once(senv):
    env = senv.environ(SANDBOX_SERVER_IDLE="0")
    shutil.copy(Path(__file__).with_name("served_support.py"), senv.base / "ss.py")
    proc = foreground(senv, env)
    assert wait_for_server(senv, env) is not None
    yield senv, env, proc
    if proc.poll() is None:
        proc.terminate()
    proc.wait(10)


def test_removing_the_state_dir_stops_the_server(served):
    shutil.rmtree(state(served.senv))
    assert wait_gone(served.pid, 2.5)


def test_another_server_on_the_name_stops_this_one(served):
    path = sock(served.senv)
    os.unlink(path)
    other = socket.socket(socket.AF_UNIX)
    other.bind(str(path))
    try:
        assert wait_gone(served.pid, 2.5)
        assert path.exists()  # the exiting server never removes a name that is not its own
    finally:
        other.close()


def test_the_33rd_concurrent_request_gets_fallback(served):
    """32 children at once at most: 32 silent clients hold them (each waits 5 s
    for its request); the 33rd is answered "F" by the server itself."""
    quiet = []
    try:
        for _ in range(32):
            quiet.append(connect(str(served.sock), timeout=10))
        deadline = time.monotonic() + 5
        while len(_children_of(served.pid)) < 32 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_children_of(served.pid)) == 32
        began = time.monotonic()
        extra = connect(str(served.sock), timeout=10)
        assert read_reply(extra) == (b"F", 0)
        assert time.monotonic() - began < 2
        extra.close()
    finally:
        for sock in quiet:
            sock.close()


def test_the_server_never_imports_typer(senv):
    """The server's imports, logged by -X importtime: the run path, no typer."""
    env = senv.environ(SANDBOX_SERVER_IDLE="1")
    log = senv.base / "imports.log"
    with open(log, "wb") as fh:
        proc = foreground(senv, env, stderr=fh, extra=["-X", "importtime"])
        assert proc.wait(20) == 0
    text = log.read_text()
    names = {line.rsplit("|", 1)[-1].strip() for line in text.splitlines() if "|" in line}
    assert {"sandbox.app", "sandbox.execute", "sandbox.fastrun", "sandbox.served"} <= names
    assert not {n for n in names if n.split(".")[0] in ("typer", "click", "sandbox.cli")}
    assert "sandbox.cli" not in names


def test_stale_code_falls_back_and_the_server_exits(senv):
    """A changed module file (a reinstall) makes the next request "F" and the
    server exit, so the next direct run starts one with the new code.  The
    server runs from a private copy of the package, which the test touches."""
    if senv.who.name == "user":
        pytest.skip("the private install is made as root; the rule is the same")
    venv = senv.base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    link_site_packages(site, skip=("sandbox",))
    import sandbox

    shutil.copytree(os.path.dirname(sandbox.__file__), site / "sandbox",
                    ignore=shutil.ignore_patterns("__pycache__"))
    script = venv / "bin" / "sandbox-direct"
    script.write_text(f"#!{venv / 'bin' / 'python'}\nfrom sandbox.__main__ import main\nmain()\n")
    script.chmod(0o755)
    shutil.copy(Path(__file__).with_name("served_support.py"), senv.base / "ss.py")
    env = senv.environ(SANDBOX_SERVER_IDLE="60")
    proc = foreground(senv, env, python=str(venv / "bin" / "python"), script=str(script))
    from sandbox.server import install_id

    # that installation's own server: its name carries the private venv's bin
    private = state(senv) / f"server-{install_id(os.path.realpath(venv / 'bin'))}.sock"
    try:
        deadline = time.monotonic() + 5
        while not private.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert private.exists() and proc.poll() is None
        assert wait_for_server(senv, env, 0.2) is None  # not the installed sandbox's server

        def request():
            return subprocess.run([sys.executable, str(senv.base / "ss.py"),
                                   str(private), "run", "--", "true"],
                                  cwd=senv.ws, env=env, capture_output=True, timeout=60)

        assert request().returncode == 0  # served
        later = time.time() + 5
        os.utime(site / "sandbox" / "plancache.py", (later, later))
        stale = request()
        assert stale.returncode == 99 and b"fallback" in stale.stderr
        assert proc.wait(2.5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_another_users_server_does_not_break_roots_runs(senv, who, stop_servers, request):
    """Root's sandbox masks every host socket it can reach; another user's
    server socket sits in that user's 0700 state dir, where neither bwrap nor
    the command can look: root's runs (cached plan and fresh) still work."""
    if who.name != "user":
        pytest.skip("needs the unprivileged test user's server next to root's runs")
    # outside senv.base, which is handed to the test user
    root_home = senv.base.with_name(senv.base.name + "-roothome")
    root_ws = senv.base.with_name(senv.base.name + "-rootws")
    root_home.mkdir()
    root_ws.mkdir()
    request.addfinalizer(lambda: [shutil.rmtree(d, ignore_errors=True)
                                  for d in (root_home, root_ws)])
    root_env = dict(senv.environ(), HOME=str(root_home), USER="root")

    def root_run(*args):
        return subprocess.run([sandbox_exe(), "run", *args, "--", "true"], cwd=root_ws,
                              env=root_env, capture_output=True, input=b"", timeout=120)

    assert root_run().returncode == 0
    assert root_run().returncode == 0  # the plan is cached now
    env = senv.environ(SANDBOX_SERVER="on")
    assert run(senv, ["run", "--", "true"], env).returncode == 0
    assert wait_for_server(senv, env) is not None
    cached = root_run()
    assert cached.returncode == 0, cached.stderr
    fresh = root_run("--network", "none")
    assert fresh.returncode == 0, fresh.stderr


def test_a_killed_server_leaves_no_acceptor(served):
    """The child forked ahead of the next request dies with a SIGKILLed
    server, so no client connects to a socket nobody will ever answer: the
    next run goes direct at once."""
    spares = _children_of(served.pid)
    assert len(spares) == 1  # the spare, waiting in accept()
    os.kill(served.pid, signal.SIGKILL)
    assert wait_gone(served.pid, 2) and wait_gone(spares[0], 2)
    path = sock(served.senv)
    probe = socket.socket(socket.AF_UNIX)
    with pytest.raises(ConnectionRefusedError):
        probe.connect(str(path))
    probe.close()
    began = time.monotonic()  # the client connects, is refused, runs it directly
    done = subprocess.run(served.senv.who.prefix() + [sandbox_exe(), "run", "--", "echo", "ok"],
                          cwd=served.senv.ws, env=served.env, capture_output=True, input=b"",
                          timeout=60)
    assert done.returncode == 0 and done.stdout == b"ok\n", done.stderr
    assert time.monotonic() - began < 20


def test_no_server_for_a_state_dir_others_can_write(senv):
    """Another user could replace the socket there: the server refuses the
    directory (as runs do) and exits at once."""
    env = senv.environ(SANDBOX_SERVER_IDLE="30")
    st = state(senv)
    st.mkdir(parents=True)
    st.chmod(0o777)
    proc = foreground(senv, env)
    assert proc.wait(10) == 0
    assert not server_socket(st).exists()
