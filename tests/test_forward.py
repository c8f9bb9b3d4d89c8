"""``[[network.forward]]``: a host loopback port by explicit grant, and nothing else.

Every sandbox test runs the installed CLI and the real bwrap, as root and
as the unprivileged test user.  The host services are the test's own, on
the host's 127.0.0.1 (ephemeral ports): an echo server that answers only
after the client's half-close (so the half-close must pass through), and
a server-speaks-first line protocol (not HTTP: the relay is protocol
agnostic).  Each reachability test first shows the service answers the
same client outside the sandbox, so an unreachable result means the
sandbox, not a broken server.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading

import pytest

from conftest import sandbox_exe

PYTHON = "/usr/bin/python3"  # readable by the unprivileged test user (not /root's pyenv)

# The sandboxed client: connect, send, half-close, read to the end.
ECHO_CLIENT = """\
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
except OSError as e:
    print("CONNECT-FAILED", type(e).__name__, e.errno)
    sys.exit(3)
s.sendall(b"ping-" * 4000)
s.shutdown(socket.SHUT_WR)
out = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    out += d
print(out.decode())
"""

# Server speaks first, then a line each way: an SMTP/Redis-like exchange.
GREETING_CLIENT = """\
import socket, sys
s = socket.create_connection((sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1",
                              int(sys.argv[1])), timeout=10)
f = s.makefile("rwb")
print(f.readline().decode().strip())
f.write(b"PING\\n"); f.flush()
print(f.readline().decode().strip())
"""


class _Server:
    """A TCP server of the test's own on the host's loopback (ephemeral port)."""

    def __init__(self, handler, host: str = "127.0.0.1", backlog: int = 16) -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.bind((host, 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.handler = handler
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn) -> None:
        try:
            conn.settimeout(20)
            self.handler(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()


def _echo(conn) -> None:
    data = b""
    while True:  # until the client's half-close
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    conn.sendall(f"got {len(data)} bytes, first {data[:10].decode()}".encode())


def _greeting(conn) -> None:
    conn.sendall(b"220 host-service ready\n")
    f = conn.makefile("rb")
    line = f.readline()
    conn.sendall(b"PONG\n" if line == b"PING\n" else b"ERR\n")


@pytest.fixture
def echo():
    server = _Server(_echo)
    yield server
    server.close()


@pytest.fixture
def greeter():
    server = _Server(_greeting)
    yield server
    server.close()


def _write(senv, name: str, text: str):
    path = senv.ws / name
    path.write_text(text)
    return path


def _forward_profile(senv, grants: str, proxy: bool = False, name: str = "fw.toml"):
    mode = '[network]\nmode = "proxy"\n\n' if proxy else ""
    return _write(senv, name, f'extends = "default"\n{mode}{grants}')


def _grant(port: int, **extra) -> str:
    lines = [f"port = {port}"] + [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    return "[[network.forward]]\n" + "\n".join(lines) + "\n"


def _report(senv, name: str) -> dict:
    return json.loads((senv.ws / name).read_text())


# -- reachability, through the real sandbox ------------------------------------------------

def test_without_a_grant_a_host_port_is_unreachable(senv, echo):
    _write(senv, "client.py", ECHO_CLIENT)
    bare = senv.run([PYTHON, "client.py", str(echo.port)], sandboxed=False)
    assert bare.returncode == 0 and b"got 20000 bytes" in bare.stdout  # the service answers
    done = senv.run([PYTHON, "client.py", str(echo.port)])
    assert done.returncode == 3, done.stderr
    assert b"CONNECT-FAILED ConnectionRefusedError" in done.stdout


@pytest.mark.parametrize("proxy", [False, True], ids=["no-network", "proxy"])
def test_a_granted_port_round_trips_with_half_close(senv, echo, proxy):
    _write(senv, "client.py", ECHO_CLIENT)
    _forward_profile(senv, _grant(echo.port, name="echo"), proxy=proxy)
    done = senv.run([PYTHON, "client.py", str(echo.port)],
                    args=["--profile", "./fw.toml", "--report", "r.json"])
    assert done.returncode == 0, done.stderr
    # the server answers only after our FIN: the half-close went through, and
    # its answer came back after it
    assert done.stdout.strip() == b"got 20000 bytes, first ping-ping-"
    # shown as a weakening at the start, like any other
    assert done.stderr.startswith(b"sandbox: weakened: fw: ")
    assert (b"fw: network.forward: added forward host 127.0.0.1:"
            + str(echo.port).encode()) in done.stderr
    rep = _report(senv, "r.json")
    assert rep["forwards"] == [{"host": "127.0.0.1", "port": echo.port,
                                "inside_port": echo.port, "name": "echo", "connections": 1,
                                "bytes_to_host": 20000, "bytes_from_host": len(done.stdout.strip()),
                                "failed": 0, "refused": 0}]
    assert any(w["key"] == "network.forward" for w in rep["weakenings"])


def test_only_the_granted_port_is_reachable(senv, echo, greeter):
    """A grant for one host service opens exactly that one: another host
    server (which answers outside) stays unreachable, by its own port and
    as a guess at the inside port of a grant mapped elsewhere."""
    _write(senv, "client.py", ECHO_CLIENT)
    _write(senv, "greet.py", GREETING_CLIENT)
    bare = senv.run([PYTHON, "greet.py", str(greeter.port)], sandboxed=False)
    assert bare.stdout.split() == [b"220", b"host-service", b"ready", b"PONG"]
    _forward_profile(senv, _grant(echo.port))
    done = senv.sh(f"{PYTHON} client.py {echo.port}; echo rc=$?; "
                   f"{PYTHON} greet.py {greeter.port}; echo rc=$?",
                   args=["--profile", "./fw.toml"])
    out = done.stdout.decode() + done.stderr.decode()
    assert "got 20000 bytes" in out and "rc=0" in out
    assert "ConnectionRefusedError" in out and "rc=1" in out, out
    assert greeter.accepted == 1  # only the bare run reached it


def test_a_server_speaks_first_protocol_on_another_inside_port(senv, greeter):
    """Not HTTP: the service talks first; the grant maps it to another inside port."""
    _write(senv, "greet.py", GREETING_CLIENT)
    _forward_profile(senv, _grant(greeter.port, inside_port=6399), proxy=True)
    done = senv.run([PYTHON, "greet.py", "6399"], args=["--profile", "./fw.toml", "-q"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == ["220 host-service ready", "PONG"]
    # the host port itself is not where the grant is, inside
    again = senv.run([PYTHON, "greet.py", str(greeter.port)], args=["--profile", "./fw.toml"])
    assert again.returncode != 0 and b"ConnectionRefusedError" in again.stderr


def test_ipv6_loopback_inside_reaches_the_grant_too(senv, greeter):
    """Clients that try ``localhost`` as ::1 first find the grant there too."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    _write(senv, "greet.py", GREETING_CLIENT)
    _forward_profile(senv, _grant(greeter.port))
    probe = senv.run([PYTHON, "-c", "import socket; s=socket.socket(socket.AF_INET6); "
                                    "s.bind(('::1', 0))"], args=["-q"])
    if probe.returncode != 0:
        pytest.skip("the sandbox's loopback has no ::1 on this host")
    done = senv.run([PYTHON, "greet.py", str(greeter.port), "::1"],
                    args=["--profile", "./fw.toml", "-q"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines()[-1] == "PONG"


def test_a_grant_to_a_port_nothing_listens_on_is_reset_and_counted(senv, echo):
    _write(senv, "client.py", ECHO_CLIENT)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    dead = probe.getsockname()[1]  # bound, never listening: connections are refused
    try:
        _forward_profile(senv, _grant(dead))
        done = senv.run([PYTHON, "client.py", str(dead)],
                        args=["--profile", "./fw.toml", "--report", "r.json"])
    finally:
        probe.close()
    assert done.returncode != 0
    # reset, not a clean end: the client knows the service was not there
    assert b"ConnectionResetError" in done.stdout + done.stderr
    assert _report(senv, "r.json")["forwards"][0]["failed"] == 1
    assert b"connection(s) failed" in done.stderr


def test_bwrap_bridge_mode_carries_the_grant_with_the_proxy(senv, echo):
    _write(senv, "client.py", ECHO_CLIENT)
    _forward_profile(senv, _grant(echo.port, inside_port=15432), proxy=True)
    done = senv.run([PYTHON, "client.py", "15432"], args=["--profile", "./fw.toml", "-q"],
                    env=senv.environ(SANDBOX_NET_BRIDGE="bwrap"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == b"got 20000 bytes, first ping-ping-"


def test_bwrap_bridge_mode_carries_the_grant_without_network(senv, echo):
    """bwrap makes the namespace, the launcher the grant's listeners; names
    still fail at once (the nsswitch.conf fallback), unrecorded."""
    _write(senv, "client.py", ECHO_CLIENT)
    _forward_profile(senv, _grant(echo.port))
    done = senv.sh(f"{PYTHON} client.py {echo.port}; {PYTHON} -c \"import socket; "
                   "socket.getaddrinfo('pypi.org', 443)\"",
                   args=["--profile", "./fw.toml", "--report", "r.json"],
                   env=senv.environ(SANDBOX_NET_BRIDGE="bwrap"))
    assert done.stdout.strip() == b"got 20000 bytes, first ping-ping-", done.stderr
    assert b"Name or service not known" in done.stderr
    rep = _report(senv, "r.json")
    assert rep["forwards"][0]["connections"] == 1
    assert rep["network"]["names_not_recorded_because"] == "SANDBOX_NET_BRIDGE=bwrap"


def test_explain_shows_each_grant_as_a_weakening(senv, echo):
    _forward_profile(senv, _grant(echo.port, name="db") + _grant(6379, inside_port=16379))
    senv.finish()
    run = subprocess.run(senv.who.prefix() + [sandbox_exe(), "explain", "--profile", "./fw.toml"],
                         cwd=senv.ws, env=senv.environ(), capture_output=True, timeout=60)
    text = run.stdout.decode()
    assert run.returncode == 0, run.stderr
    assert f"network.forward: added forward host 127.0.0.1:{echo.port} reachable inside at " \
           f"127.0.0.1:{echo.port} (db)" in text
    assert "network: host ports forwarded (each a weakening) (2)" in text
    run = subprocess.run(senv.who.prefix() + [sandbox_exe(), "explain", "--json", "--profile",
                                              "./fw.toml"],
                         cwd=senv.ws, env=senv.environ(), capture_output=True, timeout=60)
    doc = json.loads(run.stdout)
    assert [w["detail"] for w in doc["weakenings"] if w["key"] == "network.forward"] == [
        f"added forward host 127.0.0.1:{echo.port} reachable inside at 127.0.0.1:{echo.port} (db)",
        "added forward host 127.0.0.1:6379 reachable inside at 127.0.0.1:16379"]
    assert doc["forwards"] == [
        {"host": "127.0.0.1", "port": echo.port, "inside_port": echo.port, "name": "db",
         "source": "fw: network.forward[1]"},
        {"host": "127.0.0.1", "port": 6379, "inside_port": 16379, "name": None,
         "source": "fw: network.forward[2]"}]


# -- bad profiles: one line naming the file, the key and the fix ----------------------------

BAD = [
    ("port = 0", "network.forward[1].port", "must be a port between 1 and 65535, not 0"),
    ("port = 70000", "network.forward[1].port", "must be a port between 1 and 65535, not 70000"),
    ('port = "5432"', "network.forward[1].port", "must be an integer port number, not str"),
    ("name = \"x\"", "network.forward[1].port", "is required"),
    ("port = 5432\nhots = \"x\"", "network.forward[1].hots", "unknown key"),
    ("port = 5432\nhost = \"10.0.0.5\"", "network.forward[1].host",
     "'10.0.0.5' is not the host's loopback"),
    ("port = 5432\nhost = \"localhost\"", "network.forward[1].host",
     "'localhost' is not the host's loopback"),
    ("port = 3128", "network.forward[1].port", "3128 is the egress proxy's port inside"),
    ("port = 5432\ninside_port = 53", "network.forward[1].inside_port",
     "53 is the name resolver's port inside"),
    ("port = 5432\n[[network.forward]]\nport = 5433\ninside_port = 5432", "network.forward[2]",
     "inside port 5432 is granted twice"),
]


@pytest.mark.parametrize("body,key,message", BAD, ids=[b[1] + ":" + b[2][:20] for b in BAD])
def test_bad_grants_are_one_line_errors(senv, body, key, message):
    path = _write(senv, "bad.toml", f"[[network.forward]]\n{body}\n")
    done = senv.run(["true"], args=["--profile", "./bad.toml"])
    assert done.returncode == 125, done.stderr
    line = done.stderr.decode()
    assert line.count("\n") == 1 and "Traceback" not in line
    assert line.startswith(f"sandbox: profile error: {path}:")
    assert f"key '{key}'" in line and message in line


def test_a_grant_in_an_extended_profile_is_merged_once(senv, echo):
    _write(senv, "client.py", ECHO_CLIENT)
    _forward_profile(senv, _grant(echo.port), name="base.toml")
    _write(senv, "child.toml", 'extends = "./base.toml"\n' + _grant(echo.port, name="again"))
    done = senv.run([PYTHON, "client.py", str(echo.port)],
                    args=["--profile", "./child.toml", "--report", "r.json"])
    assert done.returncode == 0, done.stderr
    assert len(_report(senv, "r.json")["forwards"]) == 1
    _write(senv, "clash.toml", 'extends = "./base.toml"\n' + _grant(1, inside_port=echo.port))
    done = senv.run(["true"], args=["--profile", "./clash.toml"])
    assert done.returncode == 125
    assert b"clash.toml" in done.stderr and b"inside port" in done.stderr


# -- only trusted inputs can grant: the project profile and the managed policy -------------

def test_an_untrusted_project_profile_cannot_grant_a_port_until_trusted(senv, echo):
    _write(senv, "client.py", ECHO_CLIENT)
    _write(senv, ".sandbox.toml", _grant(echo.port))
    done = senv.run([PYTHON, "client.py", str(echo.port)])
    assert done.returncode == 3 and b"ConnectionRefusedError" in done.stdout, done.stderr
    assert echo.accepted == 0
    assert b"ignored: network.forward" in done.stderr
    senv.finish()
    trusted = subprocess.run(senv.who.prefix() + [sandbox_exe(), "trust"], cwd=senv.ws,
                             env=senv.environ(), capture_output=True, timeout=60)
    assert trusted.returncode == 0, trusted.stderr
    assert b"network.forward: added forward host 127.0.0.1:" in trusted.stdout
    done = senv.run([PYTHON, "client.py", str(echo.port)])
    assert done.returncode == 0 and b"got 20000 bytes" in done.stdout, done.stderr


@pytest.mark.skipif(__import__("os").getuid() != 0,
                    reason="a managed file must be root's: needs root to write one")
def test_the_managed_policy_limits_grants_to_the_ones_it_lists(senv, echo, greeter):
    import os
    import shutil
    import uuid

    from conftest import _test_root

    admin = _test_root() / f"managed-{uuid.uuid4().hex[:12]}"
    admin.mkdir(mode=0o755)
    try:
        managed = admin / "managed.toml"
        _write(senv, "client.py", ECHO_CLIENT)
        _write(senv, "greet.py", GREETING_CLIENT)
        _forward_profile(senv, _grant(echo.port) + _grant(greeter.port))
        script = (f"{PYTHON} client.py {echo.port}; echo rc=$?; "
                  f"{PYTHON} greet.py {greeter.port}; echo rc=$?")

        def run(text):
            managed.write_text(text)
            os.chmod(managed, 0o644)
            done = senv.sh(script, args=["--profile", "./fw.toml"],
                           env=senv.environ(SANDBOX_MANAGED_EXTRA=str(managed)))
            return done.stdout.decode() + done.stderr.decode()

        both = run("[limits]\ntimeout_seconds = 600\n")  # says nothing about forwards
        assert "got 20000 bytes" in both and "PONG" in both
        only = run(_grant(greeter.port))
        assert "got 20000 bytes" not in only and "ConnectionRefusedError" in only
        assert "PONG" in only
        none = run("[network]\nforward = []\n")
        assert "got 20000 bytes" not in none and "PONG" not in none
    finally:
        shutil.rmtree(admin, ignore_errors=True)


def test_the_audit_log_records_the_grants_use(senv, echo):
    _write(senv, "client.py", ECHO_CLIENT)
    _forward_profile(senv, _grant(echo.port, name="echo"))
    done = senv.run([PYTHON, "client.py", str(echo.port)], args=["--profile", "./fw.toml"])
    assert done.returncode == 0, done.stderr
    log = senv.home / ".local" / "state" / "sandbox" / "audit.jsonl"
    (line,) = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(f["port"], f["connections"]) for f in line["forwards"]] == [(echo.port, 1)]
    assert any("network.forward: added forward" in w for w in line["weakenings"])


def test_a_cached_plan_follows_an_edited_grant(senv, echo, greeter):
    """The plan (and with it the grants) is cached; the profile file is stamped,
    so changing the granted port takes effect on the next run, cached or not."""
    import time

    _write(senv, "client.py", ECHO_CLIENT)
    _write(senv, "greet.py", GREETING_CLIENT)
    profile = _forward_profile(senv, _grant(echo.port, inside_port=7000))
    report = senv.base / "r.json"
    senv.finish()  # once: chown (senv.run does it every time) makes every ctime new

    def run(script):
        done = subprocess.run(senv.who.prefix() + [sandbox_exe(), "run", "--profile", "./fw.toml",
                                                   "-q", "--report", str(report), "--", PYTHON,
                                                   script, "7000"],
                              cwd=senv.ws, env=senv.environ(), capture_output=True, timeout=60)
        return done, json.loads(report.read_text())

    cached = []
    for i in range(3):
        if i:
            time.sleep(2.2)  # plans are cached only from inputs older than 2 s
        done, rep = run("client.py")
        assert b"got 20000 bytes" in done.stdout, done.stderr
        assert rep["forwards"][0]["connections"] == 1
        cached.append(rep["plan_cached"])
    assert cached[-1] is True, cached
    profile.write_text(profile.read_text().replace(f"port = {echo.port}",
                                                   f"port = {greeter.port}"))
    done, rep = run("greet.py")
    assert done.stdout.decode().splitlines() == ["220 host-service ready", "PONG"], done.stderr
    assert rep["plan_cached"] is False and rep["forwards"][0]["port"] == greeter.port
    assert echo.accepted == 3


def test_network_none_on_the_command_line_drops_the_grants(senv, echo):
    """--network none means no network whatever the profile opens: its grants
    go too (and with them their weakenings), the run is not silently wider."""
    _write(senv, "client.py", ECHO_CLIENT)
    _forward_profile(senv, _grant(echo.port))
    done = senv.run([PYTHON, "client.py", str(echo.port)],
                    args=["--profile", "./fw.toml", "--network", "none", "--report", "r.json"])
    assert done.returncode == 3 and b"ConnectionRefusedError" in done.stdout, done.stderr
    assert b"weakened" not in done.stderr and echo.accepted == 0
    assert _report(senv, "r.json")["forwards"] == []


def test_the_landlock_fallback_refuses_a_profile_with_grants(senv, echo):
    """No network namespace there: a grant would be every host port or none,
    so the run fails closed (the same profile without the grant falls back and runs)."""
    import nouserns

    if nouserns.unavailable() is not None:
        pytest.skip(str(nouserns.unavailable()))
    from sandbox.linux import landlock

    if landlock.abi_version() < 1:
        pytest.skip("this kernel has no Landlock")
    _forward_profile(senv, _grant(echo.port))
    _write(senv, "plain.toml", 'extends = "default"\n')
    senv.finish()

    def run(profile):
        return subprocess.run(nouserns.prefix() + senv.who.prefix() + [
            sandbox_exe(), "run", "--profile", profile, "--", "sh", "-c", "echo RAN"],
            cwd=senv.ws, env=senv.environ(), capture_output=True, timeout=120)

    plain = run("./plain.toml")
    assert plain.returncode == 0 and b"RAN" in plain.stdout, plain.stderr
    refused = run("./fw.toml")
    assert refused.returncode == 125 and b"RAN" not in refused.stdout
    assert b"forwards host ports ([[network.forward]])" in refused.stderr, refused.stderr
    assert echo.accepted == 0
