"""Runs of one workspace session share a network namespace (sandbox.egress.netsession).

Through the installed CLI and the real bwrap, as root and as the
unprivileged user: a server started by one run answers a later, concurrent
run of the same workspace, and nothing else (another workspace, the host,
a run with another network policy, a forged registry).  When the server's
run ends, nothing of it is left, and its registry line is gone.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import sandbox_exe
from egress_support import allow_rule, proxy_profile

PY = "/usr/bin/python3"  # readable by the unprivileged test user (not pyenv's under /root)
if not os.path.exists(PY):
    pytest.skip("needs /usr/bin/python3", allow_module_level=True)

SERVER = """\
import http.server, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        body = sys.argv[2].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
s = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
open(sys.argv[3], "w").write("listening")
s.serve_forever()
"""

CLIENT = """\
import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())
except OSError as exc:
    reason = getattr(exc, "reason", exc)
    print("FAILED", getattr(reason, "errno", None), reason)
"""


def _free_port() -> int:
    """A port nothing on the host listens on (checked by connecting)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if 20000 < port < 60000 and not _host_reaches(port):
            return port
    raise AssertionError("no free port")


def _host_reaches(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


class Server:
    """``sandbox run`` of a server in the background (run A)."""

    def __init__(self, senv, ws: Path, port: int, body: str, args=()) -> None:
        self.ready = ws / f".ready-{port}"
        (ws / "server.py").write_text(SERVER)
        senv.finish()
        self.proc = subprocess.Popen(
            senv.who.prefix() + [sandbox_exe(), "run", *args, "--", PY, "server.py", str(port),
                                 body, self.ready.name],
            cwd=ws, env=senv.environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        end = time.monotonic() + 60
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise AssertionError(f"the server did not start: {self.proc.stderr.read()!r}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # by PID: the sandbox forwards it, then ends the sandbox
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()


def _fetch(senv, ws: Path, port: int, args=(), report: Path | None = None):
    (ws / "client.py").write_text(CLIENT)
    extra = ["--report", str(report)] if report is not None else []
    done = senv.run([PY, "client.py", f"http://127.0.0.1:{port}/"], args=[*extra, *args],
                    cwd=ws)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().strip(), (json.loads(report.read_text()) if report else None)


def _registry(senv) -> Path:
    return senv.home / ".cache" / "sandbox" / "sessions"


def _lines(senv) -> list[str]:
    d = _registry(senv)
    if not d.is_dir():
        return []
    return [line for f in d.iterdir() for line in f.read_text().splitlines()]


def test_server_in_one_run_answers_the_next_and_nothing_else(senv):
    other = senv.base / "other"
    other.mkdir()
    port = _free_port()
    server = Server(senv, senv.ws, port, "hello from run A")
    try:
        out, doc = _fetch(senv, senv.ws, port, report=senv.base / "b.json")
        assert out == "hello from run A"
        assert doc["session"]["namespace"] == "joined"
        assert doc["session"]["name"] is None and doc["session"]["key"]
        # another workspace: its own namespace, nothing listens there
        out, doc = _fetch(senv, other, port, report=senv.base / "c.json")
        assert out.startswith("FAILED 111"), out  # connection refused
        assert doc["session"]["namespace"] == "created"
        # the host: the server is in no namespace of the host's
        assert not _host_reaches(port)
        # --session none: a namespace of the run's own, in the same workspace
        out, doc = _fetch(senv, senv.ws, port, args=["--session", "none"],
                          report=senv.base / "d.json")
        assert out.startswith("FAILED 111"), out
        assert doc["session"]["namespace"] == "private"
        assert len(_lines(senv)) == 1  # only the server's run is a member
    finally:
        server.stop()
    # its run is over: the server is gone, and so is its registry line
    assert _lines(senv) == []
    out, doc = _fetch(senv, senv.ws, port, report=senv.base / "e.json")
    assert out.startswith("FAILED 111"), out
    assert doc["session"]["namespace"] == "created"
    assert _lines(senv) == []


LOOKUP = """\
import socket
try:
    socket.getaddrinfo("sessions-test.invalid", 80)
    print("resolved")
except socket.gaierror as exc:
    print("gaierror", exc.errno)
"""


def test_each_run_of_a_session_has_its_own_resolver(senv):
    """Runs without network: a joining run's lookups are answered (no such
    name) by its own resolver and recorded in its own report."""
    port = _free_port()
    server = Server(senv, senv.ws, port, "A")
    try:
        (senv.ws / "lookup.py").write_text(LOOKUP)
        done = senv.run([PY, "lookup.py"], args=["--report", str(senv.base / "b.json")])
        assert done.stdout.decode().split() == ["gaierror", str(socket.EAI_NONAME)], done
        doc = json.loads((senv.base / "b.json").read_text())
        assert doc["session"]["namespace"] == "joined"
        assert doc["session"]["resolver"] == "127.0.0.2"
        assert doc["network"]["names_recorded"] is True
        assert "sessions-test.invalid" in [x["name"] for x in doc["network"]["lookups"]]
    finally:
        server.stop()


def test_a_run_with_other_network_policy_does_not_join(senv):
    port = _free_port()
    server = Server(senv, senv.ws, port, "A")
    try:
        # the same workspace, but the proxy on: another session
        out, doc = _fetch(senv, senv.ws, port, args=["--network", "proxy"],
                          report=senv.base / "b.json")
        assert out.startswith("FAILED"), out
        assert doc["session"]["namespace"] == "created"
        out, _ = _fetch(senv, senv.ws, port)
        assert out == "A"  # the same policy still joins
    finally:
        server.stop()
    # proxy mode both, but other rules: not the same session either
    server = Server(senv, senv.ws, port, "P", args=["--network", "proxy"])
    try:
        out, doc = _fetch(senv, senv.ws, port, args=["--allow-host", "localhost:9"],
                          report=senv.base / "c.json")
        assert out.startswith("FAILED 111"), out
        assert doc["session"]["namespace"] == "created"
        out, doc = _fetch(senv, senv.ws, port, args=["--network", "proxy"],
                          report=senv.base / "d.json")
        assert out == "P"
        assert (doc["session"]["namespace"], doc["session"]["proxy_port"]) == ("joined", 3129)
    finally:
        server.stop()


def test_a_named_session_spans_workspaces_only_when_named(senv):
    other = senv.base / "other"
    other.mkdir()
    port = _free_port()
    server = Server(senv, senv.ws, port, "named", args=["--session", "web"])
    try:
        out, doc = _fetch(senv, other, port, args=["--session", "web"],
                          report=senv.base / "b.json")
        assert out == "named"
        assert doc["session"] == {**doc["session"], "name": "web", "namespace": "joined"}
        # not named: neither the other workspace nor the server's own joins it
        for ws in (other, senv.ws):
            out, _ = _fetch(senv, ws, port)
            assert out.startswith("FAILED 111"), out
        out, _ = _fetch(senv, other, port, args=["--session", "web2"])
        assert out.startswith("FAILED 111"), out
    finally:
        server.stop()


def test_bad_session_names_are_refused(senv):
    for bad in ("../x", "-x", "a b", "x" * 65):
        done = senv.run(["true"], args=["--session", bad])
        assert done.returncode != 0
        assert b"--session" in done.stderr, done.stderr


def _forge(senv, path: Path, line: str) -> None:
    """Write a registry file as a member would (private to the user)."""
    path.write_text(line + "\n")
    os.chmod(path, 0o600)
    os.chown(path, senv.who.uid, senv.who.gid)


def test_a_forged_or_stale_registry_line_is_not_joined(senv):
    """pid reuse: a line naming a live process whose start time or namespace
    is not the one recorded is pruned, never joined.  The decoy is a run in
    another workspace (another session); the control, its line exactly as
    written, shows that the registry decides and the checks are what refuse."""
    other = senv.base / "other"
    other.mkdir()
    port = _free_port()
    _, doc = _fetch(senv, senv.ws, port, report=senv.base / "k.json")
    path = _registry(senv) / doc["session"]["key"]
    assert not path.exists()  # nothing left by that run
    decoy = Server(senv, other, port, "decoy")
    try:
        (line,) = _lines(senv)
        pid, start, net, user, proxy, resolver = (int(w) for w in line.split())
        forged = [f"{pid} {start + 1} {net} {user} {proxy} {resolver}",  # a reused pid
                  f"{pid} {start} {net + 1} {user} {proxy} {resolver}"]  # another namespace
        for bad in forged:
            _forge(senv, path, bad)
            out, doc = _fetch(senv, senv.ws, port, report=senv.base / "f.json")
            assert out.startswith("FAILED 111"), (bad, out)
            assert doc["session"]["namespace"] == "created"
            assert not path.exists()  # pruned with the run's own line
        _forge(senv, path, line)
        out, doc = _fetch(senv, senv.ws, port, report=senv.base / "g.json")
        assert out == "decoy", out
        assert doc["session"]["namespace"] == "joined"
    finally:
        decoy.stop()
    # the copied line outlives its process only until the next run here reads it
    out, doc = _fetch(senv, senv.ws, port, report=senv.base / "h.json")
    assert out.startswith("FAILED 111") and doc["session"]["namespace"] == "created"
    assert _lines(senv) == []


def test_a_registry_another_user_can_write_is_not_used(senv):
    port = _free_port()
    server = Server(senv, senv.ws, port, "A")
    try:
        d = _registry(senv)
        os.chmod(d, 0o777)
        out, doc = _fetch(senv, senv.ws, port, report=senv.base / "b.json")
        assert out.startswith("FAILED 111"), out
        assert doc["session"]["namespace"] == "private"
        assert "not private" in doc["session"]["why"]
    finally:
        os.chmod(_registry(senv), 0o700)
        server.stop()


class _Upstream(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        body = b"upstream"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


PROXY_CLIENT = """\
import os, sys, time, urllib.request
def get():
    try:
        return urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
    except OSError as exc:
        return f"FAILED {exc}"
print(os.environ["http_proxy"], get())
if len(sys.argv) > 2:
    open(sys.argv[2], "w").write("up")
    end = time.time() + 60
    while not os.path.exists(sys.argv[3]) and time.time() < end:
        time.sleep(0.05)
    print(get())
"""


def test_concurrent_proxy_runs_each_have_their_own_proxy(senv):
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = upstream.server_address[1]
    try:
        profile = proxy_profile(senv, allow_rule("127.0.0.1", [port]))
        (senv.ws / "pc.py").write_text(PROXY_CLIENT)
        senv.finish()
        url = f"http://127.0.0.1:{port}/"
        a = subprocess.Popen(senv.who.prefix() + [
            sandbox_exe(), "run", "--profile", str(profile), "--report", str(senv.base / "a.json"),
            "--", PY, "pc.py", url, "a-up", "a-go"], cwd=senv.ws, env=senv.environ(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            end = time.monotonic() + 60
            while not (senv.ws / "a-up").exists():
                assert a.poll() is None and time.monotonic() < end, a.stderr.read()
                time.sleep(0.05)
            done = senv.run([PY, "pc.py", url], args=["--profile", str(profile), "--report",
                                                      str(senv.base / "b.json")])
            assert done.returncode == 0, done.stderr
            assert done.stdout.decode().split() == ["http://127.0.0.1:3129", "upstream"]
            (senv.ws / "a-go").write_text("go")
            out, err = a.communicate(timeout=60)
        finally:
            if a.poll() is None:
                a.kill()
                a.communicate()
        assert a.returncode == 0, err
        assert out.decode().split() == ["http://127.0.0.1:3128", "upstream", "upstream"]
        doc_a = json.loads((senv.base / "a.json").read_text())
        doc_b = json.loads((senv.base / "b.json").read_text())
        assert doc_a["session"]["namespace"] == "created"
        assert doc_b["session"]["namespace"] == "joined"
        assert doc_a["session"]["key"] == doc_b["session"]["key"]
        # each run's own proxy counted only its own requests
        assert (doc_a["network"]["proxy"], doc_a["network"]["allowed_count"]) == (
            "127.0.0.1:3128", 2)
        assert (doc_b["network"]["proxy"], doc_b["network"]["allowed_count"]) == (
            "127.0.0.1:3129", 1)
    finally:
        upstream.shutdown()
        upstream.server_close()


SQUATTER = """\
import os, select, socket, sys, time
socks = []
for port in sys.argv[1].split(","):
    s = socket.socket()
    s.bind(("127.0.0.1", int(port)))
    s.listen()
    socks.append(s)
open("squat-up", "w").write("up")
end = time.time() + 60
while not os.path.exists("squat-go") and time.time() < end:
    ready, _, _ = select.select(socks, [], [], 0.05)
    for s in ready:
        conn, _ = s.accept()
        open("squat-hit", "a").write("hit\\n")
        conn.close()
"""


@pytest.mark.parametrize("squatted, expect", [((3129, 3130), 3131),
                                              (tuple(range(3129, 3145)), None)])
def test_a_squatted_proxy_port_is_never_used(senv, squatted, expect):
    """A command of the session binds the ports the next run's proxy would
    get: that run takes another port, or (all taken) fails closed; it never
    talks to the squatter."""
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = upstream.server_address[1]
    try:
        # with a cgroup limit: the child tried again must join the run's cgroup too
        profile = proxy_profile(senv, allow_rule("127.0.0.1", [port]),
                                extra="[limits]\nmemory_max_mb = 4096\n")
        (senv.ws / "pc.py").write_text(PROXY_CLIENT)
        (senv.ws / "squat.py").write_text(SQUATTER)
        senv.finish()
        a = subprocess.Popen(senv.who.prefix() + [
            sandbox_exe(), "run", "--profile", str(profile), "--", PY, "squat.py",
            ",".join(map(str, squatted))], cwd=senv.ws, env=senv.environ(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            end = time.monotonic() + 60
            while not (senv.ws / "squat-up").exists():
                assert a.poll() is None and time.monotonic() < end, a.stderr.read()
                time.sleep(0.05)
            done = senv.run(["sh", "-c", f"{PY} pc.py http://127.0.0.1:{port}/; "
                                         "grep -c /sandbox- /proc/self/cgroup"],
                            args=["--profile", str(profile), "--report",
                                  str(senv.base / "b.json")])
            (senv.ws / "squat-go").write_text("go")
            a.communicate(timeout=60)
        finally:
            if a.poll() is None:
                a.kill()
                a.communicate()
        doc = json.loads((senv.base / "b.json").read_text())
        if expect is not None:
            out = done.stdout.decode().split()
            assert out[:2] == [f"http://127.0.0.1:{expect}", "upstream"], done
            assert doc["session"]["namespace"] == "joined"
            assert doc["session"]["proxy_port"] == expect
            # the run's cgroup, where this host gives one: the child tried
            # again on another port was born in it too
            in_cgroup = "memory_max_mb" in doc["limits"]["applied"]
            assert out[2] == ("1" if in_cgroup else "0"), (out, doc["limits"])
        else:
            assert done.returncode == 125, done
            assert b"Address already in use" in done.stderr, done.stderr
            assert doc["error"]["code"] == "network_setup_failed"
        assert not (senv.ws / "squat-hit").exists()  # the squatter never heard from it
    finally:
        upstream.shutdown()
        upstream.server_close()


def test_bwrap_bridge_mode_gives_a_private_namespace_and_says_so(senv):
    """SANDBOX_NET_BRIDGE=bwrap: bwrap makes the namespace and cannot enter
    another run's; the run is private, with one line saying so."""
    port = _free_port()
    server = Server(senv, senv.ws, port, "A")
    try:
        (senv.ws / "client.py").write_text(CLIENT)
        done = senv.run([PY, "client.py", f"http://127.0.0.1:{port}/"],
                        args=["--report", str(senv.base / "b.json")],
                        env=senv.environ(SANDBOX_NET_BRIDGE="bwrap"))
        assert done.stdout.decode().startswith("FAILED 111"), done
        notes = [line for line in done.stderr.decode().splitlines() if "session" in line]
        assert len(notes) == 1 and notes[0].startswith("sandbox: note: "), done.stderr
        doc = json.loads((senv.base / "b.json").read_text())
        assert doc["session"]["namespace"] == "private"
        assert "SANDBOX_NET_BRIDGE=bwrap" in doc["session"]["why"]
        assert len(_lines(senv)) == 1  # not registered: nothing could join it
    finally:
        server.stop()


def _pid_gone(pid: int, timeout: float = 30) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not os.path.exists(f"/proc/{pid}") or \
                Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return True
        time.sleep(0.05)
    return False


def test_the_namespace_lives_while_any_member_does(senv):
    """A (the server, which made the namespace) ends while B still runs: the
    server is gone, the namespace stays B's, and a later run joins it."""
    port = _free_port()
    server = Server(senv, senv.ws, port, "A")
    (senv.ws / "hold.py").write_text(
        "import os, sys, time\nopen(sys.argv[1], 'w').write('up')\nend = time.time() + 60\n"
        "while not os.path.exists(sys.argv[2]) and time.time() < end:\n    time.sleep(0.05)\n")
    senv.finish()
    holder = subprocess.Popen(senv.who.prefix() + [
        sandbox_exe(), "run", "--report", str(senv.base / "h.json"), "--", PY, "hold.py",
        "hold-up", "hold-go"], cwd=senv.ws, env=senv.environ(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 60
        while not (senv.ws / "hold-up").exists():
            assert holder.poll() is None and time.monotonic() < end, holder.stderr.read()
            time.sleep(0.05)
        server.stop()
        (line,) = _lines(senv)  # the holder's
        out, doc = _fetch(senv, senv.ws, port, report=senv.base / "c.json")
        assert out.startswith("FAILED 111"), out  # nothing of A is left
        assert doc["session"]["namespace"] == "joined"
        assert _lines(senv) == [line]
    finally:
        (senv.ws / "hold-go").write_text("go")
        holder.communicate(timeout=60)
        server.stop()
    assert json.loads((senv.base / "h.json").read_text())["session"]["namespace"] == "joined"
    assert _lines(senv) == []


def test_a_run_killed_with_sigkill_leaves_a_line_the_next_run_prunes(senv):
    port = _free_port()
    server = Server(senv, senv.ws, port, "A")
    (line,) = _lines(senv)
    bwrap_pid = int(line.split()[0])
    os.kill(server.proc.pid, 9)  # the wrapper: no chance to take its line out
    server.proc.wait(30)
    assert _pid_gone(bwrap_pid)  # bwrap dies with its parent, the sandbox with it
    server.stop()
    assert _lines(senv) == [line]
    out, doc = _fetch(senv, senv.ws, port, report=senv.base / "b.json")
    assert out.startswith("FAILED 111"), out
    assert doc["session"]["namespace"] == "created"
    assert _lines(senv) == []


def test_runs_starting_together_make_one_namespace(senv):
    (senv.ws / "hold.py").write_text("import time\ntime.sleep(3)\n")
    senv.finish()
    procs = [subprocess.Popen(senv.who.prefix() + [
        sandbox_exe(), "run", "--report", str(senv.base / f"r{i}.json"), "--", PY, "hold.py"],
        cwd=senv.ws, env=senv.environ(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for i in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    docs = [json.loads((senv.base / f"r{i}.json").read_text())["session"] for i in range(4)]
    assert sorted(d["namespace"] for d in docs) == ["created", "joined", "joined", "joined"]
    assert sorted(d["resolver"] for d in docs) == [f"127.0.0.{i}" for i in (1, 2, 3, 4)]
    assert _lines(senv) == []


def _in_namespace(inode: int) -> list[tuple[int, str, str]]:
    """(pid, comm, seccomp mode) of every process whose network namespace is ``inode``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}/ns/net").st_ino != inode:
                continue
            comm = Path(f"/proc/{name}/comm").read_text().strip()
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        mode = next((line.split()[1] for line in status.splitlines()
                     if line.startswith("Seccomp:")), "?")
        found.append((int(name), comm, mode))
    return found


def test_nothing_unfiltered_runs_in_the_shared_namespace(senv):
    """Two runs in one namespace: every process in it is a bwrap (which
    applies the filter) or runs under the seccomp filter (mode 2)."""
    port = _free_port()
    server = Server(senv, senv.ws, port, "A")
    try:
        (senv.ws / "client.py").write_text(CLIENT)
        (line,) = _lines(senv)
        inode = int(line.split()[2])
        (senv.ws / "hold.py").write_text(
            "import os, sys, time\nopen(sys.argv[1], 'w').write('up')\nend = time.time() + 60\n"
            "while not os.path.exists(sys.argv[2]) and time.time() < end:\n    time.sleep(0.05)\n")
        senv.finish()
        b = subprocess.Popen(senv.who.prefix() + [sandbox_exe(), "run", "--", PY, "hold.py",
                                                  "b-up", "b-go"],
                             cwd=senv.ws, env=senv.environ(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        try:
            end = time.monotonic() + 60
            while not (senv.ws / "b-up").exists():
                assert b.poll() is None and time.monotonic() < end, b.stderr.read()
                time.sleep(0.05)
            procs = _in_namespace(inode)
        finally:
            (senv.ws / "b-go").write_text("go")
            b.communicate(timeout=60)
    finally:
        server.stop()
    commands = [p for p in procs if p[1] != "bwrap"]
    assert sum(1 for p in procs if p[1] == "bwrap") >= 2, procs  # both runs' bwraps
    assert {p[1] for p in commands} >= {"python3"}, procs  # the server and the holder
    assert all(mode == "2" for _, _, mode in commands), procs


def test_the_command_cannot_write_the_registry(senv):
    registry = _registry(senv)
    registry.mkdir(parents=True, mode=0o700)
    target = registry / "forged"
    script = f"echo '1 2 3 0 3128 1' > {target} && echo WROTE"
    senv.finish()
    done = senv.sh(script, sandboxed=False)  # the control: the user can, outside
    assert done.stdout.strip() == b"WROTE"
    target.unlink()
    done = senv.sh(script)
    assert b"WROTE" not in done.stdout and not target.exists(), done


def test_the_landlock_fallback_has_no_session(senv):
    """No namespace at all under the fallback (docs/fallback.md): nothing to
    share, nothing registered, and the report says null."""
    import nouserns

    if nouserns.unavailable() is not None:
        pytest.skip(str(nouserns.unavailable()))
    senv.finish()
    report = senv.base / "r.json"
    done = subprocess.run(nouserns.prefix() + senv.who.prefix() + [
        sandbox_exe(), "run", "--session", "web", "--report", str(report), "--", "true"],
        cwd=senv.ws, env=senv.environ(), capture_output=True, timeout=120)
    doc = json.loads(report.read_text())
    if doc["backend"]["name"] != "landlock":
        pytest.skip(f"the fallback did not run here: {done.stderr!r}")
    assert done.returncode == 0, done.stderr
    assert doc["session"] is None
    assert _lines(senv) == []


def test_both_parsers_take_session():
    from sandbox.__main__ import parse_run, parse_sh

    assert parse_run(["--session", "web", "--", "true"]).session == "web"
    assert parse_run(["--session=none", "--", "true"]).session == "none"
    assert parse_run(["--", "true"]).session is None
    assert parse_sh(["--session", "a.b_c-1", "--", "echo hi"]).session == "a.b_c-1"
    for bad in ("../x", "a b", "x" * 65, ".hidden"):
        assert parse_run(["--session", bad, "--", "true"]) is None  # typer says why
    from typer.testing import CliRunner

    from sandbox.cli import app

    result = CliRunner().invoke(app, ["run", "--session", "a/b", "--", "true"])
    assert result.exit_code == 125 and "--session" in result.output, result.output


def test_the_key_separates_what_must_not_share():
    from sandbox.egress import netsession

    proxy = {"profile": "p", "allow": [("a.example", (443,))]}
    base = netsession.key("workspace:/w", netsession.network_of(None, {}, {"sha256": "1"}), 1000)
    others = [
        netsession.key("workspace:/v", netsession.network_of(None, {}, {"sha256": "1"}), 1000),
        netsession.key("name:/w", netsession.network_of(None, {}, {"sha256": "1"}), 1000),
        netsession.key("workspace:/w", netsession.network_of(None, {}, {"sha256": "2"}), 1000),
        netsession.key("workspace:/w", netsession.network_of(None, {}, {"sha256": "1"}), 0),
        netsession.key("workspace:/w", netsession.network_of(proxy, None, {"sha256": "1"}), 1000),
        netsession.key("workspace:/w", netsession.network_of(
            {**proxy, "allow": [("b.example", (443,))]}, None, {"sha256": "1"}), 1000),
    ]
    assert len({base, *others}) == 1 + len(others)
    assert base == netsession.key("workspace:/w",
                                  netsession.network_of(None, {}, {"sha256": "1"}), 1000)
