"""Sessions (sandbox.egress.netsession) and host port grants (sandbox.egress.forward) together.

Runs of one workspace with the same ``[[network.forward]]`` grants share one
network namespace, and each holds its own listener on the granted port
(SO_REUSEPORT).  Through the installed CLI and the real bwrap, as root and
as the unprivileged user, against a line server of the test's own on the
host's 127.0.0.1:

- two concurrent runs both reach the granted port; a run whose grants
  differ gets a session of its own;
- a connection made by one run survives the end of another run of the
  session (connections go to the oldest member's relay, not to whichever
  listener the kernel's hash picks);
- a command cannot join the listeners' SO_REUSEPORT group to take other
  runs' connections (the seccomp filter refuses SO_REUSEPORT to commands
  of runs with grants).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import sandbox_exe
from test_forward import _Server  # the host service: a TCP server of the test's own

PY = "/usr/bin/python3"  # readable by the unprivileged test user
if not os.path.exists(PY):
    pytest.skip("needs /usr/bin/python3", allow_module_level=True)

# Hold N connections to the granted port, then (once ``go`` exists) send a
# line on each and print what came back; prints "held" once connected.
HOLDER = """\
import os, socket, sys, time
port, n, ready, go = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
conns = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(n)]
for c in conns:
    c.sendall(b"first\\n")
    assert c.makefile("rb").readline().startswith(b"host:")
open(ready, "w").write("held")
end = time.monotonic() + 60
while not os.path.exists(go) and time.monotonic() < end:
    time.sleep(0.05)
ok = 0
for c in conns:
    try:
        c.sendall(b"again\\n")
        if c.makefile("rb").readline() == b"host:again\\n":
            ok += 1
    except OSError as exc:
        print("LOST", exc)
print("OK", ok, "of", n)
"""

SLEEPER = """\
import os, sys, time
open(sys.argv[1], "w").write("up")
end = time.monotonic() + 60
while not os.path.exists(sys.argv[2]) and time.monotonic() < end:
    time.sleep(0.05)
"""

# One short connection each, N times: prints what answered.
ASKER = """\
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
seen = []
for _ in range(n):
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(b"who\\n")
        seen.append(c.makefile("rb").readline().decode().strip() or "EOF")
        c.close()
    except OSError as exc:
        seen.append(f"ERR-{exc.errno}")
print(" ".join(sorted(set(seen))), len(seen))
"""

# The attacker: join the granted port's listeners with SO_REUSEPORT and
# answer whatever arrives with SQUAT (a stolen connection, with its bytes).
SQUATTER = """\
import os, socket, sys, time
port, ready, stop = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.socket()
try:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
except OSError as exc:
    open(ready, "w").write(f"refused {exc.errno}")
    sys.exit(0)
open(ready, "w").write("squatting")
s.settimeout(0.2)
stolen = 0
end = time.monotonic() + 60
while not os.path.exists(stop) and time.monotonic() < end:
    try:
        c, _ = s.accept()
    except socket.timeout:
        continue
    stolen += 1
    c.sendall(b"SQUAT\\n")
    c.close()
print("stolen", stolen)
"""


def _lines(conn) -> None:
    """The host service: answers each line with ``host:LINE``."""
    conn.settimeout(90)
    for line in conn.makefile("rb"):
        conn.sendall(b"host:" + line)


@pytest.fixture
def service():
    server = _Server(_lines, backlog=64)  # counts the connections it accepted
    yield server
    server.close()


def _profile(senv, port: int, name: str = "fw.toml", extra_port: int | None = None) -> str:
    text = f'extends = "default"\n[[network.forward]]\nport = {port}\n'
    if extra_port is not None:
        text += f"[[network.forward]]\nport = {extra_port}\n"
    (senv.ws / name).write_text(text)
    return f"./{name}"


class Background:
    """A ``sandbox run`` in the background, until ``ready`` exists in the workspace."""

    def __init__(self, senv, argv, ready: str, args=(), env=None) -> None:
        senv.finish()
        self.ready = senv.ws / ready
        self.proc = subprocess.Popen(
            senv.who.prefix() + [sandbox_exe(), "run", *args, "--", *argv],
            cwd=senv.ws, env=env or senv.environ(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        end = time.monotonic() + 60
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > end:
                out, err = self.finish(5)
                raise AssertionError(f"the background run did not start: {out!r} {err!r}")
            time.sleep(0.05)

    def finish(self, timeout: float = 60):
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return out.decode(), err.decode()


def _report(path: Path) -> dict:
    return json.loads(path.read_text())


def test_two_runs_of_a_session_both_reach_a_granted_port(senv, service):
    profile = _profile(senv, service.port)
    (senv.ws / "holder.py").write_text(HOLDER)
    (senv.ws / "asker.py").write_text(ASKER)
    held = Background(senv, [PY, "holder.py", str(service.port), "2", "held", "go"], "held",
                      args=["--profile", profile, "--report", str(senv.base / "a.json")])
    try:
        done = senv.run([PY, "asker.py", str(service.port), "6"],
                        args=["--profile", profile, "--report", str(senv.base / "b.json")])
        assert done.returncode == 0, done.stderr.decode()
        assert done.stdout.decode().split() == ["host:who", "6"]
    finally:
        (senv.ws / "go").write_text("")
        out, err = held.finish()
    assert out.split() == ["OK", "2", "of", "2"], (out, err)
    a, b = _report(senv.base / "a.json"), _report(senv.base / "b.json")
    assert a["session"]["namespace"] == "created"
    assert b["session"]["namespace"] == "joined" and b["session"]["key"] == a["session"]["key"]
    # every connection reached the host service, and each is counted once, by
    # the relay that carried it (the oldest member's: see the next test)
    assert service.accepted == 8
    total = sum(r["forwards"][0]["connections"] for r in (a, b))
    assert total == 8, (a["forwards"], b["forwards"])
    assert a["forwards"][0]["connections"] == 8  # the session's first run relays for all


def test_a_run_with_other_grants_does_not_join(senv, service):
    other = _Server(_lines, backlog=64)
    try:
        (senv.ws / "asker.py").write_text(ASKER)
        (senv.ws / "sleeper.py").write_text(SLEEPER)
        one = _profile(senv, service.port, "one.toml")
        two = _profile(senv, service.port, "two.toml", extra_port=other.port)
        first = Background(senv, [PY, "sleeper.py", "up", "stop"], "up",
                           args=["--profile", one, "--report", str(senv.base / "a.json")])
        try:
            done = senv.run([PY, "asker.py", str(other.port), "1"],
                            args=["--profile", two, "--report", str(senv.base / "b.json")])
            assert done.returncode == 0, done.stderr.decode()
            same = senv.run([PY, "asker.py", str(service.port), "1"],
                            args=["--profile", one, "--report", str(senv.base / "c.json")])
            assert same.returncode == 0, same.stderr.decode()
        finally:
            (senv.ws / "stop").write_text("")
            first.finish()
        a, b, c = (_report(senv.base / f"{n}.json") for n in "abc")
        assert done.stdout.decode().split() == ["host:who", "1"]
        assert b["session"]["namespace"] == "created" and b["session"]["key"] != a["session"]["key"]
        assert c["session"]["namespace"] == "joined" and c["session"]["key"] == a["session"]["key"]
    finally:
        other.close()


def test_a_connection_outlives_another_runs_end(senv, service):
    """A run's connections through a grant must not be reset when a younger
    run of the session ends.  With the kernel's plain SO_REUSEPORT hash each
    connection went to any member's listener, and about a third of these
    died with the short run that happened to relay them."""
    profile = _profile(senv, service.port)
    (senv.ws / "holder.py").write_text(HOLDER)
    (senv.ws / "sleeper.py").write_text(SLEEPER)
    first = Background(senv, [PY, "sleeper.py", "up1", "stop1"], "up1", args=["--profile", profile])
    try:
        short = Background(senv, [PY, "sleeper.py", "up2", "stop2"], "up2",
                           args=["--profile", profile])
        try:
            held = Background(senv, [PY, "holder.py", str(service.port), "12", "held", "go"],
                              "held", args=["--profile", profile])
        finally:
            (senv.ws / "stop2").write_text("")
            short.finish()  # the short run is over: its relay and listener are gone
        (senv.ws / "go").write_text("")
        out, err = held.finish()
    finally:
        (senv.ws / "stop1").write_text("")
        first.finish()
    assert out.split() == ["OK", "12", "of", "12"], (out, err)


def test_a_command_cannot_steal_a_forwards_connections_with_so_reuseport(senv, service):
    """The attack: a command of one run of the session binds the granted
    port with SO_REUSEPORT (same uid as the bridge, so the kernel would let
    it into the listeners' group) and answers another run's connections
    itself: a database client would hand it its password."""
    # the kernel allows it to a same-uid process: shown on the host
    host_listener = socket.socket()
    host_listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    host_listener.bind(("127.0.0.1", 0))
    host_listener.listen(1)
    joiner = socket.socket()
    joiner.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    joiner.bind(host_listener.getsockname())  # no error: it joined the group
    joiner.close()
    host_listener.close()

    profile = _profile(senv, service.port)
    (senv.ws / "squat.py").write_text(SQUATTER)
    (senv.ws / "asker.py").write_text(ASKER)
    squat = Background(senv, [PY, "squat.py", str(service.port), "squatted", "stop"], "squatted",
                       args=["--profile", profile])
    try:
        state = (senv.ws / "squatted").read_text()
        done = senv.run([PY, "asker.py", str(service.port), "16"], args=["--profile", profile])
    finally:
        (senv.ws / "stop").write_text("")
        out, _err = squat.finish()
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split() == ["host:who", "16"], (state, out, done.stdout)
    assert state == "refused 1", state  # EPERM: the seccomp filter refused SO_REUSEPORT


FLOOD = """\
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
held, ok, lost = [], 0, 0
for _ in range(n):
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(b"x\\n")
        if c.makefile("rb").readline() == b"host:x\\n":
            ok += 1
            held.append(c)
        else:
            lost += 1
    except OSError:
        lost += 1
for c in held:
    c.close()
# the relay frees its places as the connections end: one more gets through
for _ in range(100):
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(b"y\\n")
        if c.makefile("rb").readline() == b"host:y\\n":
            print("after", "ok")
            break
    except OSError:
        pass
    time.sleep(0.1)
print("held", ok, "lost", lost)
"""


def test_a_connection_flood_through_a_grant_is_bounded(senv, service):
    """A command opening connections without end gets at most the relay's
    limit to the host service at once; the rest are reset and counted, and
    the grant works again once they close."""
    from sandbox.egress import forward

    limit = forward.MAX_CONNECTIONS
    profile = _profile(senv, service.port)
    (senv.ws / "flood.py").write_text(FLOOD)
    done = senv.run([PY, "flood.py", str(service.port), str(limit + 40)],
                    args=["--profile", profile, "--report", str(senv.base / "r.json")],
                    timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    assert lines[0] == "after ok", lines
    assert lines[1] == f"held {limit} lost 40", lines
    rep = _report(senv.base / "r.json")["forwards"][0]
    assert rep["refused"] >= 40 and rep["connections"] == limit + 1, rep
    assert service.accepted == limit + 1


@pytest.mark.parametrize("proxy", [False, True], ids=["no-network", "proxy"])
def test_sigkill_of_a_run_leaves_no_relay_behind(senv, service, proxy):
    """The relay lives in the ``sandbox`` process (no network) or its proxy
    process: SIGKILL of the run ends it, and with it the connection to the
    host service (the service sees the end), so nothing of the run keeps a
    way to the host."""
    import signal

    text = 'extends = "default"\n'
    if proxy:
        text += '[network]\nmode = "proxy"\n'
    text += f"[[network.forward]]\nport = {service.port}\n"
    (senv.ws / "fw.toml").write_text(text)
    (senv.ws / "holder.py").write_text(HOLDER)
    held = Background(senv, [PY, "holder.py", str(service.port), "1", "held", "go"], "held",
                      args=["--profile", "./fw.toml"])
    assert service.accepted == 1 and _open_to(service.port) == 1  # the relay's, on the host
    os.kill(held.proc.pid, signal.SIGKILL)  # by pid: the run's `sandbox` process
    held.finish(30)
    # nothing of the run may still hold a connection to the service: a new
    # connection from the host works, and the held one has ended
    probe = socket.create_connection(("127.0.0.1", service.port), timeout=5)
    probe.sendall(b"ping\n")
    assert probe.makefile("rb").readline() == b"host:ping\n"
    probe.close()
    end = time.monotonic() + 20
    while time.monotonic() < end and _open_to(service.port) > 0:
        time.sleep(0.2)
    assert _open_to(service.port) == 0, "a relay of the killed run still holds a connection"


def _open_to(port: int) -> int:
    """Established TCP connections to 127.0.0.1:port whose client end is on
    the host (the relay's), from /proc/net/tcp of the test's namespace."""
    count = 0
    target = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as fh:
        for line in fh.readlines()[1:]:
            fields = line.split()
            if fields[2] == target and fields[3] == "01":  # remote = service, ESTABLISHED
                count += 1
    return count


def test_bwrap_bridge_mode_runs_with_grants_each_have_their_own_namespace(senv, service):
    """SANDBOX_NET_BRIDGE=bwrap: bwrap makes each run's namespace, which no
    run can enter; two concurrent runs with the same grants are each private,
    each relays its own connections, and both reach the service."""
    profile = _profile(senv, service.port)
    (senv.ws / "holder.py").write_text(HOLDER)
    (senv.ws / "asker.py").write_text(ASKER)
    env = senv.environ(SANDBOX_NET_BRIDGE="bwrap")
    held = Background(senv, [PY, "holder.py", str(service.port), "2", "held", "go"], "held",
                      args=["--profile", profile, "--report", str(senv.base / "a.json")],
                      env=env)
    try:
        done = senv.run([PY, "asker.py", str(service.port), "3"], env=env,
                        args=["--profile", profile, "--report", str(senv.base / "b.json")])
        assert done.returncode == 0, done.stderr.decode()
        assert done.stdout.decode().split() == ["host:who", "3"]
    finally:
        (senv.ws / "go").write_text("")
        out, err = held.finish()
    assert out.split() == ["OK", "2", "of", "2"], (out, err)
    a, b = _report(senv.base / "a.json"), _report(senv.base / "b.json")
    assert a["session"]["namespace"] == b["session"]["namespace"] == "private"
    assert a["forwards"][0]["connections"] == 2 and b["forwards"][0]["connections"] == 3


def test_setns_and_forward_failures_have_their_own_stage_and_hint():
    """The merge of the two features: 6 is entering the session's namespace
    (the runner may fall back to bwrap after it), 7 a forwarded port's
    listener (never a fallback); each names itself and its fix."""
    import errno

    from sandbox.egress import netns

    assert netns.STAGE_SETNS == 6 and netns.STAGE_FORWARD == 7
    assert netns.describe_failure(6, errno.EPERM) == (
        "cannot enter the session's network namespace (setns) for the egress proxy: "
        "Operation not permitted")
    assert netns.describe_failure(7, errno.EADDRINUSE) == (
        "cannot listen on a forwarded port ([[network.forward]]) inside the namespace: "
        "Address already in use")
    assert "[[network.forward]] port is taken" in netns.failure_hint(7)
    assert "could not enter the network namespace of its session" in netns.failure_hint(6)
    assert "SANDBOX_NET_BRIDGE=bwrap" in netns.failure_hint(1)


BINDER = """\
import socket, sys
port = int(sys.argv[1])
for opts, p in (((), port), (((socket.SO_REUSEADDR, 1),), port), (((socket.SO_REUSEADDR, 1),), 0)):
    s = socket.socket()
    try:
        for o in opts:
            s.setsockopt(socket.SOL_SOCKET, *o)
        s.bind(("127.0.0.1", p))
        s.listen(1)
        print("bound")
    except OSError as exc:
        print("err", exc.errno)
    s.close()
"""


def test_a_granted_port_cannot_be_bound_inside_and_ordinary_servers_still_can(senv, service):
    """The grant's listener holds the port for the whole run: a command's
    server on it (plain or SO_REUSEADDR) gets EADDRINUSE, so no client of
    the run can reach anything but the host service there; the seccomp rule
    leaves ordinary servers (SO_REUSEADDR, any other port) alone."""
    profile = _profile(senv, service.port)
    (senv.ws / "binder.py").write_text(BINDER)
    done = senv.run([PY, "binder.py", str(service.port)], args=["--profile", profile])
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split("\n")[:3] == ["err 98", "err 98", "bound"]
    # the control: without the grant, the same port is free inside
    bare = senv.run([PY, "binder.py", str(service.port)])
    assert bare.stdout.decode().split("\n")[:3] == ["bound", "bound", "bound"], bare


def test_a_grant_on_a_members_proxy_port_moves_the_proxy_not_the_grant(senv, service):
    """Proxy mode: a joining run's proxy gets 3129, 3130... in the shared
    namespace; a grant whose inside port is one of those holds it first
    (the session's first run binds it), so the joining run's proxy takes the
    next port, and the grant still leads to the host service alone."""
    (senv.ws / "fw.toml").write_text(
        'extends = "default"\n[network]\nmode = "proxy"\n'
        f"[[network.forward]]\nport = {service.port}\ninside_port = 3129\n")
    (senv.ws / "asker.py").write_text(ASKER)
    (senv.ws / "sleeper.py").write_text(SLEEPER)
    first = Background(senv, [PY, "sleeper.py", "up", "stop"], "up",
                       args=["--profile", "./fw.toml", "--report", str(senv.base / "a.json")])
    try:
        done = senv.sh(f"echo $http_proxy; {PY} asker.py 3129 2",
                       args=["--profile", "./fw.toml", "--report", str(senv.base / "b.json")])
    finally:
        (senv.ws / "stop").write_text("")
        first.finish()
    assert done.returncode == 0, done.stderr.decode()
    proxy, asked = done.stdout.decode().splitlines()
    b = _report(senv.base / "b.json")
    assert b["session"]["namespace"] == "joined"
    assert b["session"]["proxy_port"] == 3130 and proxy == "http://127.0.0.1:3130"
    assert asked.split() == ["host:who", "2"]


@pytest.mark.parametrize("host", ["localhost", "127.1", "0x7f000001", "2130706433",
                                  "0:0:0:0:0:0:0:1", "[::1]", " 127.0.0.1", "127.0.0.1 ",
                                  "::", "::ffff:7f00:1", "127.0.0.1%lo", "::1%1"])
def test_only_the_two_literal_loopback_spellings_are_grantable(host):
    """Host name tricks: the relay connects to the grant's host as written,
    so any spelling other than the two literals is refused, not resolved."""
    from sandbox.egress import hostports

    with pytest.raises(hostports.GrantError) as err:
        hostports.parse({"port": 5432, "host": host}, "p")
    assert err.value.key == "host"


WAIT_ASK = """\
import os, socket, sys, time
port, ready, go = int(sys.argv[1]), sys.argv[2], sys.argv[3]
open(ready, "w").write("up")
end = time.monotonic() + 60
while not os.path.exists(go) and time.monotonic() < end:
    time.sleep(0.05)
seen = []
for _ in range(6):
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.sendall(b"who\\n")
        seen.append(c.makefile("rb").readline().decode().strip() or "EOF")
        c.close()
    except OSError as exc:
        seen.append(f"ERR-{exc.errno}")
print(" ".join(seen))
"""


def test_when_the_oldest_run_is_killed_the_others_relay(senv, service):
    """SIGKILL of the session's first run (whose relay took every
    connection): its listener goes with it, and the grant keeps working for
    the runs still alive, through their own relay."""
    import signal

    profile = _profile(senv, service.port)
    (senv.ws / "sleeper.py").write_text(SLEEPER)
    (senv.ws / "wait_ask.py").write_text(WAIT_ASK)
    first = Background(senv, [PY, "sleeper.py", "up1", "stop1"], "up1",
                       args=["--profile", profile])
    try:
        later = Background(senv, [PY, "wait_ask.py", str(service.port), "up2", "go"], "up2",
                           args=["--profile", profile, "--report", str(senv.base / "b.json")])
    finally:
        os.kill(first.proc.pid, signal.SIGKILL)
        first.finish(30)
    (senv.ws / "go").write_text("")
    out, err = later.finish()
    assert out.split() == ["host:who"] * 6, (out, err)
    b = _report(senv.base / "b.json")
    assert b["session"]["namespace"] == "joined" and b["forwards"][0]["connections"] == 6
