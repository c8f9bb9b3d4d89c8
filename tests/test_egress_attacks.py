"""Red-team tests for the egress proxy and its network bridge.

Each test attacks the sandbox from the command's side (or from a profile) and
checks the protection.  Where it makes sense the attack is first shown to
work without the protection (the host reaches its own server directly).

Tests with a "Was FINDING n" comment reproduce a weakness this review found
and that has since been fixed; the others show that a protection held from
the start.

Network safety: every server here is started by the test on 127.0.0.1, ::1 or
an abstract unix socket; every name a sandboxed request uses is pinned with
``network.hosts`` or refused before resolution; the in-process proxy tests use
a fake resolver that only ever answers loopback addresses.  Every loop is
bounded in count and time.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from egress_support import allow_rule as allow
from egress_support import children as _children
from egress_support import proxy_profile as _proxy_profile

from sandbox.egress import netrules
from sandbox.egress.netrules import Rules
from sandbox.policy import EgressRule
from sandbox.egress.proxy import Proxy

from conftest import sandbox_exe

PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
BWRAP = shutil.which("bwrap")
pytestmark = pytest.mark.skipif(BWRAP is None, reason="bwrap is not installed")


# -- servers the tests start --------------------------------------------------------------

class RawOrigin:
    """A TCP server on loopback that records every connection's raw bytes.

    It answers ``200 ok`` as soon as a request head has arrived and keeps
    reading until the peer closes or goes quiet, so whatever a proxy sends
    after the first request (a smuggled second one) is recorded too.
    """

    RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"

    def __init__(self, host: str = "127.0.0.1", hold: bool = False) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(1024)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.hold = hold  # keep connections open without answering (tunnel sink)
        self.conns: list[bytearray] = []
        self.held: list[socket.socket] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        deadline = time.monotonic() + 600
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self.hold:
                with self.lock:
                    self.held.append(conn)
                continue
            data = bytearray()
            with self.lock:
                self.conns.append(data)
            threading.Thread(target=self._handle, args=(conn, data), daemon=True).start()

    def _handle(self, conn: socket.socket, data: bytearray) -> None:
        conn.settimeout(0.7)
        answered = False
        try:
            for _ in range(1000):
                piece = conn.recv(65536)
                if not piece:
                    break
                with self.lock:
                    data += piece
                if not answered and b"\r\n\r\n" in data:
                    conn.sendall(self.RESPONSE)
                    answered = True
        except OSError:
            pass
        finally:
            conn.close()

    def requests(self) -> list[bytes]:
        time.sleep(0.8)  # let the handlers finish reading (they stop after 0.7 s of quiet)
        with self.lock:
            return [bytes(c) for c in self.conns]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()
        with self.lock:
            for conn in self.held:
                conn.close()


@pytest.fixture
def raw_origin():
    srv = RawOrigin()
    yield srv
    srv.close()


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# -- profiles and runs ---------------------------------------------------------------------

def write_profile(senv, body: str, name: str = "attack") -> Path:
    path = senv.base / f"{name}.toml"
    path.write_text(body)
    return path


def proxy_profile(senv, rules: str, hosts: dict[str, str], extra: str = "",
                  name: str = "attack", net_extra: str = "") -> Path:
    return _proxy_profile(senv, rules, hosts, name, extra, net_extra)


def run_script(senv, profile: Path, script: str, *args: str, timeout: float = 120):
    """Write ``script`` into the workspace and run it with Python inside the sandbox."""
    name = f"attack_{uuid.uuid4().hex[:8]}.py"
    (senv.ws / name).write_text(script)
    return senv.run([PY, name, *args], args=["--profile", str(profile)], timeout=timeout)


def last_json(done: subprocess.CompletedProcess) -> dict:
    lines = [line for line in done.stdout.decode().splitlines() if line.startswith("{")]
    assert lines, (done.returncode, done.stdout, done.stderr)
    return json.loads(lines[-1])


def _proxy_pid(wrapper_pid: int) -> int:
    """The egress proxy: the wrapper's child that is not bwrap (nor the cat
    that holds the watch on protected files, sandbox.blocked)."""
    found = []
    for kid in _children(wrapper_pid):
        try:
            with open(f"/proc/{kid}/comm") as fh:
                if fh.read().strip() not in ("bwrap", "cat"):
                    found.append(kid)
        except OSError:
            pass
    assert len(found) == 1, found
    return found[0]


class Background:
    """``sandbox run`` in the background, with a ready/go handshake through the workspace."""

    def __init__(self, senv, profile: Path, script: str, *args: str) -> None:
        (senv.ws / "bg_attack.py").write_text(script)
        senv.finish()
        self.senv = senv
        self.proc = subprocess.Popen(
            senv.who.prefix() + [sandbox_exe(), "run", "--profile", str(profile), "--",
                                 PY, "bg_attack.py", *args],
            cwd=senv.ws, env=senv.environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not (self.senv.ws / "ready").exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                out, err = self.finish()
                pytest.fail(f"the sandboxed script never got ready: {out!r} {err!r}")
            time.sleep(0.05)

    def go(self, text: str = "") -> None:
        tmp = self.senv.ws / "go.tmp"
        tmp.write_text(text)
        self.senv.who.chown(tmp)
        tmp.rename(self.senv.ws / "go")

    def finish(self, timeout: float = 60) -> tuple[bytes, bytes]:
        try:
            return self.proc.communicate(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


# Inside-the-sandbox helper used by several scripts: wait (bounded) for "go".
WAIT_GO = '''
import os, time
def wait_go(limit=60.0):
    open("ready", "w").close()
    end = time.monotonic() + limit
    while not os.path.exists("go") and time.monotonic() < end:
        time.sleep(0.05)
    return open("go").read() if os.path.exists("go") else ""
'''


# =========================================================================================
# Protections that hold
# =========================================================================================

def test_host_abstract_unix_socket_is_unreachable(senv):
    """Abstract unix sockets belong to a network namespace: the host's are out of reach."""
    name = f"sbx-redteam-{uuid.uuid4().hex}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\0" + name)
    server.listen(8)
    try:
        # the attack works without the sandbox: anyone on the host can connect
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect("\0" + name)
        profile = proxy_profile(senv, allow("pinned.test", [443]), {"pinned.test": "127.0.0.1"})
        script = '''
import json, socket, sys
name = sys.argv[1]
res = {}
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect("\\0" + name); res["connect"] = "connected"
except OSError as e:
    res["connect"] = e.errno
res["listed"] = name in open("/proc/net/unix").read()
print(json.dumps(res))
'''
        done = run_script(senv, profile, script, name)
        res = last_json(done)
        assert res["connect"] == 111, res  # ECONNREFUSED: no such socket in this namespace
        assert res["listed"] is False
    finally:
        server.close()


def test_host_loopback_servers_are_unreachable_directly(senv, raw_origin):
    """127.0.0.1, the rest of 127/8, 0.0.0.0, ::1 and mapped spellings are the
    sandbox's own loopback: the host's servers on them are out of reach."""
    v6 = RawOrigin("::1") if _has_ipv6_loopback() else None
    try:
        # the attack works without the sandbox
        with socket.create_connection(("127.0.0.1", raw_origin.port), timeout=5):
            pass
        if v6 is not None:
            with socket.create_connection(("::1", v6.port), timeout=5):
                pass
            v6.requests()
            v6.conns.clear()
        raw_origin.requests()
        raw_origin.conns.clear()
        targets = [[h, raw_origin.port] for h in ("127.0.0.1", "127.0.0.2", "127.255.255.254",
                                                  "0.0.0.0", "::ffff:127.0.0.1")]
        if v6 is not None:
            targets += [["::1", v6.port], ["::", v6.port]]
        profile = proxy_profile(senv, allow("pinned.test", [443]), {"pinned.test": "127.0.0.1"})
        script = '''
import json, socket, sys
res = {}
for host, port in json.loads(sys.argv[1]):
    try:
        socket.create_connection((host, port), timeout=3).close(); res[host] = "connected"
    except OSError as e:
        res[host] = e.errno
print(json.dumps(res))
'''
        res = last_json(run_script(senv, profile, script, json.dumps(targets)))
        assert all(v == 111 for v in res.values()), res  # refused on the sandbox's own lo
        assert raw_origin.requests() == []
        if v6 is not None:
            assert v6.requests() == []
    finally:
        if v6 is not None:
            v6.close()


def test_no_capability_over_the_network_namespace(senv):
    """The bridge's user namespace gives the command nothing: no interfaces, routes,
    raw sockets, and it cannot take over the proxy's address."""
    profile = proxy_profile(senv, allow("pinned.test", [443]), {"pinned.test": "127.0.0.1"})
    script = '''
import json, os, shutil, socket, subprocess
res = {}
def attempt(name, fn):
    try:
        fn(); res[name] = "ok"
    except OSError as e:
        res[name] = e.errno
def bind(addr, reuseport=False):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(addr); s.listen(1)
attempt("bind_proxy_addr", lambda: bind(("127.0.0.1", 3128)))
attempt("bind_proxy_reuseport", lambda: bind(("127.0.0.1", 3128), True))
attempt("bind_any_3128", lambda: bind(("0.0.0.0", 3128)))
attempt("raw_icmp", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
attempt("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
ip = shutil.which("ip")
if ip:
    for name, argv in (("link_add", ["link", "add", "sbxrt0", "type", "dummy"]),
                       ("addr_add", ["addr", "add", "192.0.2.77/32", "dev", "lo"]),
                       ("route_add", ["route", "add", "default", "dev", "lo"]),
                       ("lo_down", ["link", "set", "lo", "down"])):
        res[name] = subprocess.run([ip, *argv], capture_output=True).returncode
for line in open("/proc/self/status"):
    if line.startswith(("CapEff", "CapPrm", "CapAmb")):
        res[line.split(":")[0]] = line.split()[1]
res["ifaces"] = sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:])
res["routes"] = open("/proc/net/route").read().count("\\n") - 1
# the proxy still answers afterwards
s = socket.create_connection(("127.0.0.1", 3128), timeout=5)
s.sendall(b"CONNECT nothere.test:443 HTTP/1.1\\r\\nHost: nothere.test:443\\r\\n\\r\\n")
res["proxy"] = s.recv(64).split(b"\\r\\n")[0].decode()
print(json.dumps(res))
'''
    res = last_json(run_script(senv, profile, script))
    assert res["bind_proxy_addr"] == 98 and res["bind_proxy_reuseport"] == 98, res
    assert res["bind_any_3128"] == 98, res
    assert res["raw_icmp"] != "ok" and res["packet"] != "ok", res
    for key in ("link_add", "addr_add", "route_add", "lo_down"):
        assert res.get(key, 1) != 0, res
    assert res["CapEff"] == res["CapPrm"] == res["CapAmb"] == "0000000000000000", res
    assert res["ifaces"] == ["lo"] and res["routes"] == 0, res
    assert res["proxy"] == "HTTP/1.1 403 Forbidden", res


def test_proxy_process_is_invisible_and_unsignalable(senv):
    """The proxy lives in the host's pid namespace: the command cannot see, signal or
    open it (it runs as the same uid for a non-root caller)."""
    profile = proxy_profile(senv, allow("pinned.test", [443]), {"pinned.test": "127.0.0.1"})
    script = WAIT_GO + '''
import json, os, signal
pid = int(wait_go())
res = {}
for name, fn in (("kill0", lambda: os.kill(pid, 0)), ("stop", lambda: os.kill(pid, signal.SIGSTOP)),
                 ("pidfd", lambda: os.pidfd_open(pid)), ("proc", lambda: os.stat(f"/proc/{pid}"))):
    try:
        fn(); res[name] = "ok"
    except OSError as e:
        res[name] = e.errno
res["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
open("result.tmp", "w").write(json.dumps(res))
os.rename("result.tmp", "result.json")
end = time.monotonic() + 60
while not os.path.exists("go2") and time.monotonic() < end:
    time.sleep(0.05)
'''
    bg = Background(senv, profile, script)
    try:
        bg.wait_ready()
        proxy = _proxy_pid(bg.proc.pid)
        bg.go(str(proxy))
        result = senv.ws / "result.json"
        deadline = time.monotonic() + 60
        while not result.exists() and time.monotonic() < deadline and bg.proc.poll() is None:
            time.sleep(0.05)
        res = json.loads(result.read_text())
        with open(f"/proc/{proxy}/status") as fh:  # it was never stopped
            assert "State:\tT" not in fh.read()
        (senv.ws / "go2").touch()
        bg.finish()
    finally:
        if bg.proc.poll() is None:
            bg.proc.kill()
            bg.proc.wait()
    assert res["kill0"] == res["stop"] == res["pidfd"] == 3, res  # ESRCH
    assert res["proc"] == 2, res  # ENOENT
    assert proxy not in res["pids"] and max(res["pids"]) < 1000, res


# A plain-HTTP rule limited to GET/POST on /ok.  Each case is raw bytes sent to the
# proxy; "fwd" cases may reach the origin (the one allowed request only), the others
# must be refused by the proxy itself.
H = "a.test:{port}"
PARSER_CASES = {
    # forwarded, but only as one clean, re-framed request
    "pipelined_second_request": ("fwd", "GET http://{H}/ok HTTP/1.1\r\nHost: {H}\r\n\r\n"
                                 "GET http://{H}/evil HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    "bytes_after_content_length": ("fwd", "POST http://{H}/ok HTTP/1.1\r\nHost: {H}\r\n"
                                   "Content-Length: 5\r\n\r\nhelloGET /evil HTTP/1.1\r\n"
                                   "Host: {H}\r\n\r\n"),
    "http10_chunked": ("fwd", "POST http://{H}/ok HTTP/1.0\r\nHost: {H}\r\nTransfer-Encoding: "
                       "chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /evil HTTP/1.1\r\nHost: x\r\n\r\n"),
    "expect_100": ("fwd", "POST http://{H}/ok HTTP/1.1\r\nHost: {H}\r\nExpect: 100-continue\r\n"
                   "Content-Length: 3\r\n\r\nabc"),
    "connection_names_host": ("fwd", "GET http://{H}/ok HTTP/1.1\r\nHost: {H}\r\n"
                              "Connection: host, content-length\r\n\r\n"),
    "trailer_smuggles_length": ("fwd", "POST http://{H}/ok HTTP/1.1\r\nHost: {H}\r\n"
                                "Transfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 50\r\n"
                                "X-Evil: 1\r\n\r\nGET /evil HTTP/1.1\r\n\r\n"),
    "case_and_dot_in_url": ("fwd", "GET http://A.TEST.:{port}/ok HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    "proxy_headers_stripped": ("fwd", "GET http://{H}/ok HTTP/1.1\r\nHost: {H}\r\n"
                               "Proxy-Authorization: Basic eDp5\r\nProxy-Connection: keep-alive"
                               "\r\nTE: trailers\r\nKeep-Alive: 5\r\n\r\n"),
    # refused by the proxy
    "cl_and_te": ("no", "POST http://{H}/ok HTTP/1.1\r\nHost: {H}\r\nContent-Length: 4\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "two_lengths": ("no", "POST http://{H}/ok HTTP/1.1\r\nHost: {H}\r\nContent-Length: 4\r\n"
                    "Content-Length: 5\r\n\r\nhello"),
    "te_not_chunked": ("no", "POST http://{H}/ok HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: "
                       "identity, chunked\r\n\r\n0\r\n\r\n"),
    # refused mid-body: the allowed head already went out, the origin sees a cut-off body
    "chunk_ext_with_crlf": ("late", "POST http://{H}/ok HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: "
                            "chunked\r\n\r\n5;x=\"a\r\nGET /evil\"\r\nhello\r\n0\r\n\r\n"),
    "bare_lf": ("no", "GET http://{H}/ok HTTP/1.1\nHost: {H}\n\n"),
    "obs_fold": ("no", "GET http://{H}/ok HTTP/1.1\r\nHost: {H}\r\nX-A: 1\r\n GET /evil\r\n\r\n"),
    "space_before_colon": ("no", "GET http://{H}/ok HTTP/1.1\r\nHost : {H}\r\n\r\n"),
    "host_mismatch": ("no", "GET http://{H}/ok HTTP/1.1\r\nHost: b.test:{port}\r\n\r\n"),
    "host_header_default_port": ("no", "GET http://{H}/ok HTTP/1.1\r\nHost: a.test\r\n\r\n"),
    "url_default_port": ("no", "GET http://a.test/ok HTTP/1.1\r\nHost: a.test:80\r\n\r\n"),
    "two_host_headers": ("no", "GET http://{H}/ok HTTP/1.1\r\nHost: {H}\r\nHost: {H}\r\n\r\n"),
    "no_host_http10": ("no", "GET http://{H}/ok HTTP/1.0\r\n\r\n"),
    "userinfo": ("no", "GET http://x:y@{H}/ok HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    "userinfo_in_host_header": ("no", "GET http://{H}/ok HTTP/1.1\r\nHost: x@{H}\r\n\r\n"),
    "origin_form": ("no", "GET /ok HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    "asterisk_form": ("no", "OPTIONS * HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    "https_absolute": ("no", "GET https://{H}/ok HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    "ftp_absolute": ("no", "GET ftp://{H}/ok HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    "query_only": ("no", "GET http://{H}?/ok HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    "dot_segment_encoded": ("no", "GET http://{H}/ok/%2e%2E/evil HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    "tomcat_dotdot_semicolon": ("no", "GET http://{H}/ok/..;/evil HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    "encoded_slash": ("no", "GET http://{H}/ok%2F..%2Fevil HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    "encoded_nul": ("no", "GET http://{H}/ok%00/x HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    "backslash": ("no", "GET http://{H}/ok\\..\\evil HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    "double_slash": ("no", "GET http://{H}/ok//evil HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    "fragment": ("no", "GET http://{H}/ok#x HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    "iis_unicode_escape": ("no", "GET http://{H}/ok/%u002e%u002e/evil HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    "tab_in_target": ("no", "GET http://{H}/ok\t/evil HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    "http09": ("no", "GET http://{H}/ok\r\n\r\n"),
    "method_not_allowed": ("no", "DELETE http://{H}/ok HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    "lowercase_connect_absolute": ("no", "connect http://{H}/ok HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    "connect_to_scoped_host": ("no", "CONNECT {H} HTTP/1.1\r\nHost: {H}\r\n\r\n"
                               "GET /evil HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    "h2c_upgrade": ("no", "GET http://{H}/ok HTTP/1.1\r\nHost: {H}\r\nConnection: Upgrade, "
                    "HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"),
    "websocket_upgrade": ("no", "GET http://{H}/ok HTTP/1.1\r\nHost: {H}\r\nConnection: Upgrade\r\n"
                          "Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          "Sec-WebSocket-Version: 13\r\n\r\n"),
    "ipv6_zone_authority": ("no", "GET http://[fe80::1%25lo]:{port}/ok HTTP/1.1\r\n"
                            "Host: [fe80::1%25lo]:{port}\r\n\r\n"),
    "ip_spelling_of_pin": ("no", "GET http://2130706433:{port}/ok HTTP/1.1\r\n"
                           "Host: 2130706433:{port}\r\n\r\n"),
    "port_leading_zeros": ("no", "GET http://a.test:0{port}/ok HTTP/1.1\r\nHost: a.test:0{port}\r\n\r\n"),
    "oversized_head": ("no", "GET http://{H}/ok HTTP/1.1\r\nHost: {H}\r\nX-Big: " + "a" * 40000
                       + "\r\n\r\n"),
}

PARSER_SCRIPT = '''
import json, socket, sys
cases = json.loads(open(sys.argv[1]).read())
res = {}
for name, data in cases.items():
    s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    try:
        s.sendall(data.encode("latin-1"))
    except OSError:
        pass
    out = b""
    try:
        for _ in range(1000):
            piece = s.recv(65536)
            if not piece:
                break
            out += piece
    except OSError:
        pass
    s.close()
    head = out.split(b"\\r\\n\\r\\n")
    blocked = [l for l in out.split(b"\\r\\n") if l.lower().startswith(b"x-sandbox-blocked:")]
    statuses = [int(l.split()[1]) for l in out.split(b"\\r\\n") if l.startswith(b"HTTP/1.")]
    res[name] = {"statuses": statuses, "blocked": blocked[0].decode()[19:] if blocked else None,
                 "body": out.split(b"\\r\\n\\r\\n")[-1].decode("latin-1")[:200]}
print(json.dumps(res))
'''


def _split_request(raw: bytes) -> tuple[str, dict[str, list[str]], bytes]:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep, raw
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers.setdefault(key.strip().lower(), []).append(value.strip())
    return lines[0], headers, rest


def _nothing_after_body(headers: dict[str, list[str]], rest: bytes) -> bool:
    """Does the framing the origin sees account for every byte after the head?
    (A body cut off early is fine: the connection closed, nothing followed it.)"""
    if headers.get("transfer-encoding") == ["chunked"]:
        for _ in range(1000):
            size_line, sep, rest = rest.partition(b"\r\n")
            if not sep:
                return True  # cut off
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                return rest == b"\r\n"  # no trailers forwarded, nothing after
            if len(rest) < size + 2:
                return True  # cut off
            rest = rest[size + 2:]
        return False
    length = int(headers.get("content-length", ["0"])[0])
    return len(rest) <= length


def test_request_parsing_tricks_are_refused_or_reframed(senv, raw_origin):
    port = raw_origin.port
    profile = proxy_profile(senv, allow("a.test", [port], ["GET", "POST"], ["/ok"]),
                            {"a.test": "127.0.0.1"})
    cases = {name: text.replace("{H}", H.format(port=port)).replace("{port}", str(port))
             for name, (_, text) in PARSER_CASES.items()}
    (senv.ws / "cases.json").write_text(json.dumps(cases))
    done = run_script(senv, profile, PARSER_SCRIPT, "cases.json")
    res = last_json(done)
    forwarded = [n for n, (kind, _) in PARSER_CASES.items() if kind in ("fwd", "late")]
    for name, (kind, _) in PARSER_CASES.items():
        got = res[name]
        if kind == "fwd":
            assert got["blocked"] is None and got["statuses"][-1] == 200, (name, got)
            assert got["body"] == "ok\n", (name, got)
        else:
            assert got["blocked"], (name, got)
            assert got["statuses"] and got["statuses"][0] >= 400, (name, got)
    seen = raw_origin.requests()
    assert len(seen) == len(forwarded), seen
    for raw in seen:
        line, headers, rest = _split_request(raw)
        assert line in ("GET /ok HTTP/1.1", "POST /ok HTTP/1.1"), raw
        assert headers["host"] == [f"a.test:{port}"], raw
        assert headers["connection"] == ["close"], raw
        for hop in ("expect", "proxy-authorization", "proxy-connection", "te", "keep-alive",
                    "upgrade", "x-evil"):
            assert hop not in headers, (hop, raw)
        assert _nothing_after_body(headers, rest), raw  # nothing smuggled after it


CONNECT_SCRIPT = '''
import json, socket, sys
res = {}
for target in json.loads(sys.argv[1]):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    s.sendall(f"CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n".encode("latin-1"))
    out = b""
    try:
        for _ in range(100):
            piece = s.recv(4096)
            if not piece:
                break
            out += piece
            if b"\\r\\n\\r\\n" in out:
                break
        if out.startswith(b"HTTP/1.1 200"):
            s.sendall(b"PING " + target.encode("latin-1") + b"\\r\\n\\r\\n")
            out += s.recv(4096)
    except OSError:
        pass
    s.close()
    res[target] = out.split(b"\\r\\n")[0].decode("latin-1")
print(json.dumps(res))
'''


def test_connect_authority_spellings_match_only_the_rule(senv, raw_origin):
    """CONNECT with every spelling of the pinned address, or look-alikes of the
    name: only the name itself (case and trailing dot folded) opens a tunnel."""
    port = raw_origin.port
    profile = proxy_profile(senv, allow("b.test", [port]), {"b.test": "127.0.0.1"})
    allowed = [f"b.test:{port}", f"B.TEST.:{port}"]
    refused = [
        f"127.0.0.1:{port}", f"[::1]:{port}", f"[::ffff:127.0.0.1]:{port}", f"[::ffff:7f00:1]:{port}",
        f"2130706433:{port}", f"0x7f.1:{port}", f"0177.0.0.1:{port}", f"127.1:{port}",
        f"0:{port}", f"[::]:{port}", f"0.0.0.0:{port}", f"localhost:{port}", f"localhost.:{port}",
        f"b.test..:{port}", f".b.test:{port}", f"b.test:{port + 1 if port < 65535 else port - 1}",
        "b.test:0", f"b.test:{port}0", f"b.test:+{port}", f"x@b.test:{port}", f"b.test%2e:{port}",
        f"b_test:{port}", f"xn--b.test:{port}", f"b.test\\:{port}", f"[fe80::1%25lo]:{port}",
        f"[fe80::1%lo]:{port}", "b.test", f"b.test:{port}:{port}", f"[b.test]:{port}",
        f"*.test:{port}", f"b.test/:{port}",
    ]
    res = last_json(run_script(senv, profile, CONNECT_SCRIPT, json.dumps(allowed + refused)))
    for target in allowed:
        assert res[target] == "HTTP/1.1 200 Connection established", (target, res[target])
    for target in refused:
        assert res[target].split()[1] in ("400", "403"), (target, res[target])
    seen = raw_origin.requests()
    assert sorted(seen) == sorted(f"PING {t}\r\n\r\n".encode() for t in allowed), seen


# -- DNS: names that resolve to what a pin names ------------------------------------------

class FakeResolver:
    """Answers from a table of loopback addresses only; records every question."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        for addrs in answers.values():  # safety: only this machine's own addresses
            for a in addrs:
                ip = ipaddress.ip_address(a)
                ip = getattr(ip, "ipv4_mapped", None) or ip
                assert ip.is_loopback or ip.is_unspecified, a
        self.answers = answers
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list:
        self.calls.append(host)
        if host not in self.answers:
            raise OSError("no such name (fake resolver)")
        return list(self.answers[host])


def _proxy(rules: Rules, resolver) -> tuple[Proxy, threading.Thread, list, int]:
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    events: list = []
    proxy = Proxy(listener, rules, events.append, resolver=resolver)
    return proxy, proxy.start(), events, listener.getsockname()[1]


def _ask(port: int, data: bytes, timeout: float = 10) -> bytes:
    if data.startswith(b"CONNECT ") and b"\r\nHost:" not in data:  # h11 wants Host on 1.1
        target = data.split(b" ")[1]
        data = data.replace(b"\r\n", b"\r\nHost: " + target + b"\r\n", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # no getaddrinfo here
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
        s.sendall(data)
        out = b""
        for _ in range(100):
            try:
                piece = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not piece:
                break
            out += piece
            if out.startswith(b"HTTP/1.1 200 Connection") and b"\r\n\r\n" in out:
                break
        return out


def test_unpinned_alias_of_a_pinned_address_is_refused(raw_origin):
    """A pin makes the address reachable for that name only: another allowed name
    that resolves to the same (or any other non-public) address is refused."""
    port = raw_origin.port
    rules = Rules([EgressRule("*.svc.example", (port,))], (),
                  (("pinned.svc.example", "127.0.0.1"),))
    resolver = FakeResolver({
        "alias.svc.example": ["127.0.0.1"],
        "mapped.svc.example": ["::ffff:127.0.0.1"],
        "other.svc.example": ["127.0.0.2"],
        "six.svc.example": ["::1"],
        "any.svc.example": ["0.0.0.0"],
    })
    proxy, thread, events, pport = _proxy(rules, resolver)
    try:
        ok = _ask(pport, f"CONNECT pinned.svc.example:{port} HTTP/1.1\r\n\r\n".encode())
        assert ok.startswith(b"HTTP/1.1 200"), ok
        for name in ("alias", "mapped", "other", "six", "any"):
            host = f"{name}.svc.example"
            got = _ask(pport, f"CONNECT {host}:{port} HTTP/1.1\r\n\r\n".encode())
            assert got.startswith(b"HTTP/1.1 403"), (host, got)
            plain = _ask(pport, f"GET http://{host}:{port}/ HTTP/1.1\r\nHost: {host}:{port}"
                                f"\r\n\r\n".encode())
            assert plain.startswith(b"HTTP/1.1 403"), (host, plain)
        # names refused by the rules, and pinned names, are never looked up
        for data in (f"CONNECT evil.example:{port} HTTP/1.1\r\n\r\n",
                     f"CONNECT svc.example:{port} HTTP/1.1\r\n\r\n",
                     f"CONNECT pinned.svc.example:{port + 1} HTTP/1.1\r\n\r\n"):
            assert _ask(pport, data.encode()).startswith(b"HTTP/1.1 403")
        assert "pinned.svc.example" not in resolver.calls
        assert not {"evil.example", "svc.example"} & set(resolver.calls)
    finally:
        proxy.shutdown()
        thread.join(5)
    assert len(raw_origin.requests()) == 1  # the pinned tunnel only


def test_metadata_and_private_answers_are_refused_without_connecting():
    """What a hostile resolver could answer for an allowed name (checked on the
    address, no connection made)."""
    rules = Rules([EgressRule("*.svc.example", (443,))], (), (("pinned.svc.example", "10.1.2.3"),))
    for addr in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "10.0.0.1", "192.168.1.1",
                 "172.16.0.1", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1",
                 "2001::1", "fe80::1", "127.0.0.1", "::1", "0.0.0.0", "224.0.0.1", "100.64.0.1"):
        addr_obj = netrules.normalize_host(f"[{addr}]" if ":" in addr else addr)
        assert rules.address_refusal("alias.svc.example", addr_obj), addr
    # the pin counts for its own name and address only
    assert rules.address_refusal("pinned.svc.example", netrules.normalize_host("10.1.2.3")) is None
    assert rules.address_refusal("pinned.svc.example", netrules.normalize_host("10.1.2.4"))
    assert rules.address_refusal("alias.svc.example", netrules.normalize_host("10.1.2.3"))


# =========================================================================================
# Findings
# =========================================================================================

PLANTED = '''
import os
with open({marker!r}, "w") as fh:
    fh.write("pid=%d uid=%d netns=%s\\n" % (os.getpid(), os.getuid(), os.readlink("/proc/self/ns/net")))
raise ImportError("planted by the sandboxed command")
'''


def _make_project_venv(ws: Path) -> Path:
    """A project venv in the workspace with sandbox installed in it (as `pip install`
    would leave it: the console script, h11 in site-packages, sandbox on the path)."""
    venv = ws / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   capture_output=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    import h11
    import sandbox as pkg

    shutil.copytree(Path(h11.__file__).parent, site / "h11")
    from conftest import link_site_packages

    link_site_packages(site, skip=("h11",))  # the other dependencies (pyseccomp...)
    # the sandbox package itself, from this checkout
    (site / "zz_sandbox.pth").write_text(f"{Path(pkg.__file__).parent.parent}\n")
    script = venv / "bin" / "sandbox"
    script.write_text(f"#!{venv}/bin/python\nimport sys\nfrom sandbox.__main__ import main\n"
                      "sys.exit(main())\n")
    script.chmod(0o755)
    return site / "h11" / "__init__.py"


# Was FINDING 1: the proxy (a host process outside bwrap, seccomp and the namespaces)
# imports h11, sandbox.egress.proxy, json, ctypes... only after the command first connects; when
# the sandbox's own import path is writable inside (python -m sandbox from the workspace, or
# sandbox installed in a venv inside the workspace), the command plants a module and gets
# code execution on the host
@pytest.mark.parametrize("install", ["python_m_from_workspace", "project_venv"])
def test_command_cannot_run_code_in_the_host_proxy(senv, raw_origin, install):
    port = raw_origin.port
    profile = proxy_profile(senv, allow("a.test", [port]), {"a.test": "127.0.0.1"})
    marker = senv.base / "escaped"
    blocked = senv.base / "inside-write-attempt"
    if install == "python_m_from_workspace":
        python = str(Path(sandbox_exe()).parent / "python")
        command = [python, "-m", "sandbox"]
        target = "h11.py"  # the cwd (the workspace) is sys.path[0] for `python -m`
    else:
        target = str(_make_project_venv(senv.ws).relative_to(senv.ws))
        command = [str(senv.ws / ".venv" / "bin" / "sandbox")]
    (senv.ws / "planted.py").write_text(PLANTED.format(marker=str(marker)))
    script = (f"touch {blocked} 2>/dev/null; cat planted.py > {target}; "
              f"{PY} -c 'import socket; s = socket.create_connection((\"127.0.0.1\", 3128)); "
              f"s.sendall(b\"CONNECT a.test:{port} HTTP/1.1\\r\\n\\r\\n\"); s.recv(100)' ; true")
    senv.finish()
    done = subprocess.run(senv.who.prefix() + command + ["run", "--profile", str(profile), "--",
                                                         "sh", "-c", script],
                          cwd=senv.ws, env=senv.environ(), capture_output=True, timeout=120)
    # the command itself cannot write there: the sandbox holds for the command...
    assert not blocked.exists(), done.stderr
    if install == "python_m_from_workspace":  # refused: the cwd comes first on sys.path
        assert done.returncode == 125 and b"python -m sandbox" in done.stderr, done.stderr
    else:
        assert done.returncode == 0, done.stderr
    # ...but the host-side proxy ran the command's code
    assert not marker.exists(), (marker.read_text(), done.stderr.decode())


TUNNELS_SCRIPT = WAIT_GO + '''
import json, socket, sys
n, target = int(sys.argv[1]), sys.argv[2]
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    s.sendall(f"CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n".encode())
    head = s.recv(100)
    if not head.startswith(b"HTTP/1.1 200"):
        break
    socks.append(s)
print(json.dumps({"open": len(socks)}), flush=True)
wait_go()
'''


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# Was FINDING 2: each idle CONNECT tunnel costs the host-side proxy two zero-filled 1 MiB
# buffers (_Relay._pump) and two threads; 512 tunnels pin ~1 GiB of host memory and ~1000
# threads outside the sandbox's memory_max_mb / pids_max cgroup
def test_idle_tunnels_do_not_pin_host_memory(senv):
    sink = RawOrigin(hold=True)
    try:
        n = 200
        profile = proxy_profile(senv, allow("a.test", [sink.port]), {"a.test": "127.0.0.1"},
                                net_extra="max_connections = 64\n")
        bg = Background(senv, profile, TUNNELS_SCRIPT, str(n), f"a.test:{sink.port}")
        try:
            bg.wait_ready(timeout=90)
            proxy = _proxy_pid(bg.proc.pid)
            rss_mib = _rss_kib(proxy) / 1024
            with open(f"/proc/{proxy}/status") as fh:
                threads = int(next(l for l in fh if l.startswith("Threads:")).split()[1])
            bg.go()
            out, err = bg.finish()
        finally:
            if bg.proc.poll() is None:
                bg.proc.kill()
                bg.proc.wait()
        # network.max_connections = 64: the 65th tunnel got 503
        assert json.loads(out.decode().splitlines()[0])["open"] == 64, (out, err)
        # it bounds the threads, and idle tunnels hold no buffers
        assert threads <= 2 * 64 + 4 and rss_mib < 64, \
            f"proxy: {rss_mib:.0f} MiB RSS and {threads} threads for {n} idle tunnels"
    finally:
        sink.close()


def _explain_weakenings(senv, profile: Path) -> list[dict]:
    done = senv.run([sandbox_exe(), "explain", "--profile", str(profile), "--json"],
                    sandboxed=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["weakenings"]


FETCH_SCRIPT = '''
import json, socket, sys
s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
s.sendall(f"GET http://{sys.argv[1]}/x HTTP/1.1\\r\\nHost: {sys.argv[1]}\\r\\n\\r\\n".encode())
out = b""
for _ in range(100):
    piece = s.recv(65536)
    if not piece:
        break
    out += piece
print(json.dumps({"status": out.split(b"\\r\\n")[0].decode()}))
'''


# Was FINDING 3a: network.hosts merges silently: a child profile that adds nothing but a pin
# re-points a host its parent allowed to loopback (or metadata, or a private address) and no
# weakening is recorded, while the same reach through an allow rule is one
def test_child_pin_to_loopback_is_a_recorded_weakening(senv, raw_origin):
    port = raw_origin.port
    write_profile(senv, f'extends = "default"\n[network]\nmode = "proxy"\n\n'
                        f'{allow("mirror.test", [port])}', "parent")
    child = write_profile(senv, 'extends = "parent.toml"\n[network]\n'
                                'hosts = { "mirror.test" = "127.0.0.1" }\n', "child")
    by_rule = write_profile(senv, f'extends = "parent.toml"\n\n{allow("127.0.0.1", [port])}',
                            "byrule")
    # the child reaches the host's loopback server
    res = last_json(run_script(senv, child, FETCH_SCRIPT, f"mirror.test:{port}"))
    assert res["status"] == "HTTP/1.1 200 OK", res
    assert len(raw_origin.requests()) == 1
    # an allow rule naming the address is a recorded weakening...
    assert any(w["source"] == "byrule" and w["key"] == "network.allow"
               for w in _explain_weakenings(senv, by_rule))
    # ...a pin to the same address is not
    assert any(w["source"] == "child" and w["key"] == "network.hosts"
               for w in _explain_weakenings(senv, child))


# Was FINDING 3b: a [[network.deny]] rule naming an address is matched against the request's
# host only, never against the address connected to: a pinned (or resolved) name reaches an
# address that a deny rule names
def test_deny_rule_on_an_address_also_stops_names_pinned_to_it(senv, raw_origin):
    port = raw_origin.port
    profile = proxy_profile(senv, allow("a.test", [port]) +
                            '\n[[network.deny]]\nhost = "127.0.0.1"\n',
                            {"a.test": "127.0.0.1"})
    res = last_json(run_script(senv, profile, FETCH_SCRIPT, f"a.test:{port}"))
    seen = raw_origin.requests()
    assert seen == [], (res, seen)


# Was FINDING 4: method/path override headers (X-HTTP-Method-Override, X-Method-Override,
# X-Original-URL, X-Rewrite-URL) are forwarded, so a rule limited to GET /ok can drive
# DELETE /admin on origins (Symfony, IIS rewrite, many REST stacks) that honour them
def test_method_and_path_override_headers_are_not_forwarded(senv, raw_origin):
    port = raw_origin.port
    profile = proxy_profile(senv, allow("a.test", [port], ["GET"], ["/ok"]),
                            {"a.test": "127.0.0.1"})
    script = '''
import json, socket, sys
s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
s.sendall(("GET http://%s/ok HTTP/1.1\\r\\nHost: %s\\r\\nX-HTTP-Method-Override: DELETE\\r\\n"
           "X-Method-Override: DELETE\\r\\nX-Original-URL: /admin\\r\\nX-Rewrite-URL: /admin\\r\\n"
           "\\r\\n" % (sys.argv[1], sys.argv[1])).encode())
out = b""
for _ in range(100):
    piece = s.recv(65536)
    if not piece:
        break
    out += piece
print(json.dumps({"status": out.split(b"\\r\\n")[0].decode()}))
'''
    res = last_json(run_script(senv, profile, script, f"a.test:{port}"))
    # refused outright where a rule limits methods or paths: nothing reaches the origin
    assert res["status"] == "HTTP/1.1 403 Forbidden", res
    assert raw_origin.requests() == []


# Was FINDING 5: the proxy resolves the checked name as a relative name (the trailing dot is
# dropped and getaddrinfo is asked for 'name'), so resolv.conf search domains and ndots
# apply: with ndots:5 (Kubernetes) 'pypi.org' is first looked up as 'pypi.org.<search
# domain>', a different name from the one the rule allowed
def test_resolver_is_asked_for_the_fully_qualified_name(monkeypatch):
    from sandbox.egress import proxy as proxy_mod

    asked: list[str] = []

    def fake_getaddrinfo(host, port, *args, **kwargs):
        asked.append(host)
        # loopback only: refused by the address check, so nothing is ever contacted
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(proxy_mod.socket, "getaddrinfo", fake_getaddrinfo)
    rules = Rules([EgressRule("pypi.example", (443,))])
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    proxy = Proxy(listener, rules, lambda e: None)  # the default (system) resolver
    thread = proxy.start()
    try:
        got = _ask(listener.getsockname()[1], b"CONNECT pypi.example.:443 HTTP/1.1\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 403"), got  # loopback answer refused
    finally:
        proxy.shutdown()
        thread.join(5)
    assert asked and all(name.endswith(".") for name in asked), asked
