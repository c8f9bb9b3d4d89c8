"""The egress proxy over real sockets on 127.0.0.1 (no bwrap).

Every server here is started by the test itself on 127.0.0.1; names like
``pypi.test`` reach it only through ``network.hosts`` pins, and the proxy's
resolver raises, so no test looks up a real name or leaves the machine.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import ipaddress
import json
import os
import random
import re
import shutil
import socket
import socketserver
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.egress.netrules import Rules
from sandbox.policy import EgressRule
from sandbox.egress.proxy import Limits, Proxy

REPO = Path(__file__).resolve().parent.parent
CURL = shutil.which("curl")
OPENSSL = shutil.which("openssl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")

BIG = random.Random(7).randbytes(20 * 1024 * 1024)
BIG_SHA = hashlib.sha256(BIG).hexdigest()
INDEX = b"simple index\n"


# -- servers the tests start ---------------------------------------------------

class _OriginHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            for _ in range(100_000):
                line = self.rfile.readline()
                if not line.strip():  # the proxy gave up mid-body
                    return bytes(out)
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        body = self._body()
        self.server.seen.append({"method": self.command, "path": self.path,
                                 "headers": dict(self.headers.items()), "body": body})
        if self.path == "/big":
            self._reply(BIG)
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"one ", b"two ", b"three"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        elif self.command == "POST":
            self._reply(hashlib.sha256(body).hexdigest().encode())
        else:
            self._reply(INDEX)

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = do_OPTIONS = _handle


class _Origin(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, context: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> None:
        super().__init__((host, 0), _OriginHandler)
        self.seen: list[dict] = []
        self.context = context

    def finish_request(self, request, client_address) -> None:
        request.settimeout(30)
        if self.context is None:
            super().finish_request(request, client_address)
            return
        # the handshake runs in the request thread, not the accept loop
        with self.context.wrap_socket(request, server_side=True) as tls:
            super().finish_request(tls, client_address)


class _Origin6(_Origin):
    address_family = socket.AF_INET6


def _serve(server) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    return thread


@pytest.fixture
def origin():
    server = _Origin()
    thread = _serve(server)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def tls_origin(tmp_path):
    if OPENSSL is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-subj", "/CN=pypi.test",
                    "-addext", "subjectAltName=DNS:pypi.test", "-days", "2",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = _Origin(context)
    server.cert = cert
    thread = _serve(server)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(30)
        for _ in range(10_000):
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)


class _Echo(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024
    allow_reuse_address = True


@pytest.fixture
def echo():
    server = _Echo(("127.0.0.1", 0), _EchoHandler)
    thread = _serve(server)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


class _NoDNS:
    """The default resolver of every test proxy: records and refuses."""

    def __init__(self, answers: dict[str, list] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list:
        self.calls.append((host, port))
        if host in self.answers:
            return self.answers[host]
        raise AssertionError("DNS must not be used")


class _Running:
    def __init__(self, proxy: Proxy, events: list, resolver: _NoDNS) -> None:
        self.proxy, self.events, self.resolver = proxy, events, resolver
        self.port = proxy.listener.getsockname()[1]


@pytest.fixture
def make_proxy():
    started: list[_Running] = []

    def make(allow=(), deny=(), hosts=(("pypi.test", "127.0.0.1"),), resolver=None,
             limits=None) -> _Running:
        listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        events: list[dict] = []
        resolver = resolver or _NoDNS()
        proxy = Proxy(listener, Rules(allow, deny, hosts), events.append, resolver=resolver,
                      limits=limits)
        running = _Running(proxy, events, resolver)
        running.thread = proxy.start()
        started.append(running)
        return running

    yield make
    for running in started:
        running.proxy.shutdown()
        running.thread.join(5)
        assert not running.thread.is_alive()


def _index_rule(port: int, **kw) -> EgressRule:
    return EgressRule("pypi.test", ports=(port,), **({"methods": ("GET",), "paths": ("/simple/",)}
                                                    | kw))


# -- helpers -------------------------------------------------------------------

def _curl_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["HOME"] = "/nonexistent"  # no ~/.curlrc
    return env


def _curl(proxy_port: int, url: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([CURL, "-q", "-sS", "--max-time", "30", "-x",
                           f"http://127.0.0.1:{proxy_port}", *extra, url],
                          capture_output=True, env=_curl_env(), timeout=60)


def _raw(port: int, data: bytes, *, timeout: float = 10.0, shut: bool = True,
         family=socket.AF_INET, host="127.0.0.1") -> bytes:
    """Send ``data``, half-close, return everything until the proxy closes."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        try:
            sock.sendall(data)
            if shut:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the proxy may refuse and close before reading it all
        out = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(out) < 64 * 1024 * 1024:
            try:
                piece = sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not piece:
                break
            out += piece
        return bytes(out)


def _status(response: bytes) -> int | None:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", response)
    return int(m.group(1)) if m else None


def _header(response: bytes, name: str) -> str | None:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def _get(proxy_port: int, url: str, method="GET", body=None, headers=None, timeout=30,
         chunked=False):
    conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=timeout)
    try:
        conn.request(method, url, body=body, headers=headers or {}, encode_chunked=chunked)
        response = conn.getresponse()
        return response.status, response.msg, response.read()
    finally:
        conn.close()


def _connect(host: str, port: int) -> bytes:
    return f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_head(sock: socket.socket) -> bytes:
    out = bytearray()
    for _ in range(10_000):
        if b"\r\n\r\n" in out:
            break
        piece = sock.recv(1)
        if not piece:
            break
        out += piece
    return bytes(out)


# -- allowed plain HTTP ---------------------------------------------------------

@needs_curl
def test_allowed_get_through_curl(origin, make_proxy):
    p = make_proxy(allow=[_index_rule(origin.server_port)])
    done = _curl(p.port, f"http://pypi.test:{origin.server_port}/simple/")
    assert done.returncode == 0, done.stderr
    assert done.stdout == INDEX
    assert [r["path"] for r in origin.seen] == ["/simple/"]
    assert p.proxy.allowed == 1 and p.proxy.blocked == 0 and p.events == []
    assert p.resolver.calls == []


def test_allowed_get_through_http_client_is_reserialized(origin, make_proxy):
    p = make_proxy(allow=[_index_rule(origin.server_port)])
    status, headers, body = _get(p.port, f"http://pypi.test:{origin.server_port}/simple/?q=1",
                                 headers={"Proxy-Connection": "keep-alive", "X-Keep": "yes",
                                          "Proxy-Authorization": "Basic c2VjcmV0",
                                          "Connection": "x-drop", "X-Drop": "no"})
    assert (status, body) == (200, INDEX)
    assert headers["Connection"] == "close"
    (seen,) = origin.seen
    assert seen["path"] == "/simple/?q=1"  # origin form, query kept
    sent = {k.lower(): v for k, v in seen["headers"].items()}
    assert sent["host"] == f"pypi.test:{origin.server_port}"
    assert sent["connection"] == "close" and sent["x-keep"] == "yes"
    for hop in ("proxy-connection", "proxy-authorization", "x-drop"):
        assert hop not in sent


def test_chunked_response_and_http10_client(origin, make_proxy):
    port = origin.server_port
    p = make_proxy(allow=[EgressRule("pypi.test", ports=(port,))])
    status, _, body = _get(p.port, f"http://pypi.test:{port}/chunked")
    assert (status, body) == (200, b"one two three")
    # HTTP/1.0 client: no chunked framing, the body ends at close
    raw = _raw(p.port, f"GET http://pypi.test:{port}/chunked HTTP/1.0\r\n"
                       f"Host: pypi.test:{port}\r\n\r\n".encode())
    assert _status(raw) == 200
    assert _header(raw, "Transfer-Encoding") is None
    assert raw.split(b"\r\n\r\n", 1)[1] == b"one two three"


def test_post_body_chunked_and_expect_100_continue(origin, make_proxy):
    port = origin.server_port
    p = make_proxy(allow=[EgressRule("pypi.test", ports=(port,), methods=("POST",))])
    payload = BIG[:3 * 1024 * 1024]
    chunks = (payload[i:i + 100_000] for i in range(0, len(payload), 100_000))
    status, _, body = _get(p.port, f"http://pypi.test:{port}/upload", "POST", body=chunks,
                           headers={"Transfer-Encoding": "chunked"}, chunked=True)
    assert (status, body.decode()) == (200, hashlib.sha256(payload).hexdigest())
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as sock:
        sock.sendall(f"POST http://pypi.test:{port}/upload HTTP/1.1\r\nHost: pypi.test:{port}\r\n"
                     "Content-Length: 5\r\nExpect: 100-continue\r\n\r\n".encode())
        assert _read_head(sock).startswith(b"HTTP/1.1 100 ")
        sock.sendall(b"hello")
        sock.shutdown(socket.SHUT_WR)
        rest = b"".join(iter(lambda: sock.recv(65536), b""))
    assert _status(rest) == 200 and rest.endswith(hashlib.sha256(b"hello").hexdigest().encode())
    assert "expect" not in {k.lower() for k in origin.seen[-1]["headers"]}


def test_head_allowed_and_refused(origin, make_proxy):
    port = origin.server_port
    p = make_proxy(allow=[EgressRule("pypi.test", ports=(port,), methods=("HEAD",))])
    raw = _raw(p.port, f"HEAD http://pypi.test:{port}/simple/ HTTP/1.1\r\n"
                       f"Host: pypi.test:{port}\r\n\r\n".encode())
    assert _status(raw) == 200 and _header(raw, "Content-Length") == str(len(INDEX))
    assert raw.endswith(b"\r\n\r\n")  # no body
    raw = _raw(p.port, f"HEAD http://pypi.test:{port + 1}/ HTTP/1.1\r\n"
                       f"Host: pypi.test:{port + 1}\r\n\r\n".encode())
    assert _status(raw) == 403 and raw.endswith(b"\r\n\r\n")


class _OneShot:
    """A server that reads one request head and answers with fixed bytes (or nothing)."""

    def __init__(self, answer: bytes | None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.answer = answer
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(10)
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            _read_head(conn)
            if self.answer is None:
                time.sleep(2)  # the proxy gives up first
                return
            conn.sendall(self.answer)

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


@pytest.mark.parametrize("answer, status, words", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhello\r\n0\r\n\r\n", 200, None),
    (b"HTTP/1.1 200 OK\r\n\r\nclose-delimited body", 200, None),
    (b"garbage\r\n\r\n", 502, "bad response"),
    (b"", 502, "without a response"),
    (None, 504, "did not answer"),
])
def test_upstream_answers_are_reframed(make_proxy, answer, status, words):
    server = _OneShot(answer)
    try:
        p = make_proxy(allow=[EgressRule("up.test", ports=(server.port,))],
                       hosts=(("up.test", "127.0.0.1"),), limits=Limits(idle_timeout=0.5))
        raw = _raw(p.port, f"GET http://up.test:{server.port}/ HTTP/1.1\r\n"
                           f"Host: up.test:{server.port}\r\n\r\n".encode())
    finally:
        server.close()
    assert _status(raw) == status, raw
    if words:
        assert words in _header(raw, "X-Sandbox-Blocked")
        return
    head, body = raw.split(b"\r\n\r\n", 1)
    assert _header(raw, "Content-Length") is None  # one framing only
    assert _header(raw, "Transfer-Encoding") == "chunked"
    assert body.endswith(b"0\r\n\r\n")


# -- refused plain HTTP ---------------------------------------------------------

@pytest.mark.parametrize("case", ["host", "port", "method", "path"])
def test_refused_request(origin, make_proxy, case):
    port = origin.server_port
    p = make_proxy(allow=[_index_rule(port)])
    method, url, reason = {
        "host": ("GET", f"http://uploads.test:{port}/files", "host not allowed"),
        "port": ("GET", f"http://pypi.test:{port + 1}/simple/", f"port {port + 1} not allowed"),
        "method": ("POST", f"http://pypi.test:{port}/simple/", "method POST not allowed"),
        "path": ("GET", f"http://pypi.test:{port}/admin", "path /admin not allowed"),
    }[case]
    status, headers, body = _get(p.port, url, method, body=b"x" if method == "POST" else None)
    assert status == 403
    assert reason in headers["X-Sandbox-Blocked"]
    assert headers["Connection"] == "close" and headers["Content-Type"] == "text/plain"
    assert body.decode().startswith(f"sandbox: blocked {method} http://")
    assert body.decode().endswith(f" - {headers['X-Sandbox-Blocked']}\n")
    (event,) = p.events
    host = urllib.parse.urlsplit(url).hostname
    assert event["method"] == method and event["host"] == host and event["status"] == 403
    assert reason in event["reason"]
    assert event["url"] == url and event["path"] == urllib.parse.urlsplit(url).path
    assert origin.seen == [] and p.resolver.calls == []
    assert (p.proxy.allowed, p.proxy.blocked) == (0, 1)


def test_deny_rule_wins_over_allow(origin, make_proxy):
    port = origin.server_port
    p = make_proxy(allow=[EgressRule("pypi.test", ports=(port,))],
                   deny=[EgressRule("pypi.test", ports=(), paths=("/simple/secret",))])
    assert _get(p.port, f"http://pypi.test:{port}/simple/")[0] == 200
    status, headers, _ = _get(p.port, f"http://pypi.test:{port}/simple/secret/x")
    assert status == 403 and "network.deny" in headers["X-Sandbox-Blocked"]
    # the deny rule names a path, so it refuses the whole tunnel
    raw = _raw(p.port, _connect("pypi.test", port))
    assert _status(raw) == 403
    assert [r["path"] for r in origin.seen] == ["/simple/"]


@pytest.mark.parametrize("request_bytes, words", [
    (b"GET http://pypi.test:{port}/simple/ HTTP/1.1\r\nHost: evil.test\r\n\r\n",
     "does not match"),
    (b"GET http://pypi.test:{port}/simple/ HTTP/1.1\r\nHost: pypi.test\r\n\r\n",
     "does not match"),  # same name, other port
    (b"GET http://pypi.test:{port}/simple/ HTTP/1.0\r\n\r\n", "Host header"),
    (b"GET /simple/ HTTP/1.1\r\nHost: pypi.test:{port}\r\n\r\n", "absolute form"),
    (b"OPTIONS * HTTP/1.1\r\nHost: pypi.test:{port}\r\n\r\n", "absolute"),
    (b"GET pypi.test:{port} HTTP/1.1\r\nHost: pypi.test:{port}\r\n\r\n", "absolute"),
    (b"GET https://pypi.test:{port}/simple/ HTTP/1.1\r\nHost: pypi.test:{port}\r\n\r\n",
     "use CONNECT for https"),
    (b"GET ftp://pypi.test:{port}/simple/ HTTP/1.1\r\nHost: pypi.test:{port}\r\n\r\n", "http://"),
    (b"GET http://x@pypi.test:{port}/simple/ HTTP/1.1\r\nHost: pypi.test:{port}\r\n\r\n",
     "user info"),
    (b"CONNECT pypi.test HTTP/1.1\r\nHost: pypi.test\r\n\r\n", "host:port"),
])
def test_malformed_or_misdirected_requests_get_400(origin, make_proxy, request_bytes, words):
    port = origin.server_port
    p = make_proxy(allow=[EgressRule("pypi.test", ports=(port,))])
    raw = _raw(p.port, request_bytes.replace(b"{port}", str(port).encode()))
    assert _status(raw) == 400, raw
    assert words in _header(raw, "X-Sandbox-Blocked")
    assert origin.seen == [] and len(p.events) == 1 and p.events[0]["status"] == 400


def test_unparseable_request_is_an_event_without_method(make_proxy):
    p = make_proxy()
    raw = _raw(p.port, b"\x16\x03\x01 this is not http\r\n\r\n")
    assert _status(raw) == 400
    (event,) = p.events
    assert event["method"] is None and event["host"] is None and "malformed" in event["reason"]


def test_upgrade_is_refused(origin, make_proxy):
    port = origin.server_port
    p = make_proxy(allow=[EgressRule("pypi.test", ports=(port,))])
    raw = _raw(p.port, f"GET http://pypi.test:{port}/ws HTTP/1.1\r\nHost: pypi.test:{port}\r\n"
                       "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n".encode())
    assert _status(raw) == 403 and "Upgrade" in _header(raw, "X-Sandbox-Blocked")
    assert origin.seen == []


# -- CONNECT ---------------------------------------------------------------------

@needs_curl
def test_connect_tls_through_curl(tls_origin, make_proxy):
    port = tls_origin.server_port
    p = make_proxy(allow=[EgressRule("pypi.test", ports=(port,))])
    done = _curl(p.port, f"https://pypi.test:{port}/simple/", "--cacert", str(tls_origin.cert))
    assert done.returncode == 0, done.stderr
    assert done.stdout == INDEX
    assert [r["path"] for r in tls_origin.seen] == ["/simple/"]
    assert p.proxy.allowed == 1 and p.events == []


def test_connect_refused_when_the_only_rule_is_scoped(origin, make_proxy):
    port = origin.server_port
    p = make_proxy(allow=[_index_rule(port)])
    raw = _raw(p.port, _connect("pypi.test", port))
    assert _status(raw) == 403
    assert "limits methods or paths" in _header(raw, "X-Sandbox-Blocked")
    (event,) = p.events
    assert event["method"] == "CONNECT" and event["path"] is None
    assert event["url"] == f"pypi.test:{port}"
    assert origin.seen == []


def test_connect_forwards_bytes_sent_with_the_request(echo, make_proxy):
    port = echo.server_address[1]
    p = make_proxy(allow=[EgressRule("echo.test", ports=(port,))],
                   hosts=(("echo.test", "127.0.0.1"),))
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as sock:
        sock.sendall(f"CONNECT echo.test:{port} HTTP/1.1\r\nHost: echo.test:{port}\r\n\r\n"
                     "early bytes".encode())
        head = _read_head(sock)
        assert head.startswith(b"HTTP/1.1 200 ")
        got = b""
        while len(got) < 11:
            got += sock.recv(100)
        assert got == b"early bytes"
        sock.shutdown(socket.SHUT_WR)  # half-close travels through the tunnel
        assert sock.recv(100) == b""


def test_200_concurrent_tunnels(echo, make_proxy):
    port = echo.server_address[1]
    p = make_proxy(allow=[EgressRule("echo.test", ports=(port,))],
                   hosts=(("echo.test", "127.0.0.1"),))
    socks = []
    deadline = time.monotonic() + 60
    try:
        for i in range(200):
            sock = socket.create_connection(("127.0.0.1", p.port), timeout=20)
            socks.append(sock)
            sock.sendall(f"CONNECT echo.test:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        for sock in socks:  # every tunnel is open at the same time
            assert _read_head(sock).startswith(b"HTTP/1.1 200 ")
        for i, sock in enumerate(socks):
            sock.sendall(b"ping %d" % i)
        for i, sock in enumerate(socks):
            want, got = b"ping %d" % i, b""
            while len(got) < len(want) and time.monotonic() < deadline:
                got += sock.recv(100)
            assert got == want
    finally:
        for sock in socks:
            sock.close()
    assert p.proxy.allowed == 200 and p.events == []


def _sha_of_response(sock: socket.socket, timeout: float) -> tuple[str, int]:
    digest, total = hashlib.sha256(), 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        piece = sock.recv(1 << 20)
        if not piece:
            break
        digest.update(piece)
        total += len(piece)
    return digest.hexdigest(), total


def test_20mb_download_through_connect_and_plain_http(origin, make_proxy):
    port = origin.server_port
    p = make_proxy(allow=[EgressRule("pypi.test", ports=(port,))])
    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=30)
    conn.set_tunnel("pypi.test", port)
    try:
        conn.request("GET", "/big")
        tunneled = conn.getresponse().read()
    finally:
        conn.close()
    assert len(tunneled) == len(BIG) and hashlib.sha256(tunneled).hexdigest() == BIG_SHA
    status, headers, plain = _get(p.port, f"http://pypi.test:{port}/big")
    assert status == 200 and headers["Content-Length"] == str(len(BIG))
    assert hashlib.sha256(plain).hexdigest() == BIG_SHA


# -- resolution ------------------------------------------------------------------

def test_unpinned_name_resolving_to_loopback_is_refused(origin, make_proxy):
    port = origin.server_port
    resolver = _NoDNS({"real.test": [ipaddress.ip_address("127.0.0.1")]})
    p = make_proxy(allow=[EgressRule("real.test", ports=(port,))], hosts=(), resolver=resolver)
    status, headers, _ = _get(p.port, f"http://real.test:{port}/simple/")
    assert status == 403 and "loopback" in headers["X-Sandbox-Blocked"]
    assert "network.hosts" in headers["X-Sandbox-Blocked"]  # says how to allow it
    raw = _raw(p.port, f"CONNECT real.test:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert _status(raw) == 403
    # a refused name never reaches the resolver
    assert _get(p.port, f"http://other.test:{port}/simple/")[0] == 403
    assert resolver.calls == [("real.test", port), ("real.test", port)]
    assert origin.seen == [] and p.proxy.allowed == 0


def test_connect_failure_is_502_and_resolver_order_is_kept(make_proxy):
    dead = _free_port()
    resolver = _NoDNS({"dead.test": ["198.51.100.7", "127.0.0.1"]})
    p = make_proxy(allow=[EgressRule("dead.test", ports=(dead,))],
                   hosts=(("pinned.test", "127.0.0.1"),), resolver=resolver)
    # documentation and loopback addresses are refused before any connect
    status, headers, _ = _get(p.port, f"http://dead.test:{dead}/")
    assert status == 403 and "198.51.100.7" in headers["X-Sandbox-Blocked"]
    q = make_proxy(allow=[EgressRule("pinned.test", ports=(dead,))],
                   hosts=(("pinned.test", "127.0.0.1"),))
    status, headers, _ = _get(q.port, f"http://pinned.test:{dead}/")
    assert status == 502 and "cannot connect" in headers["X-Sandbox-Blocked"]
    assert q.events[0]["status"] == 502


@pytest.mark.parametrize("authority", ["2130706433", "0x7f.1", "[::ffff:127.0.0.1]", "127.1",
                                       "017700000001", "[::1]", "localhost"])
def test_ip_literal_spellings_are_refused(origin, make_proxy, authority):
    port = origin.server_port
    p = make_proxy(allow=[EgressRule("pypi.test", ports=(port,))])
    raw = _raw(p.port, f"GET http://{authority}:{port}/simple/ HTTP/1.1\r\n"
                       f"Host: {authority}:{port}\r\n\r\n".encode())
    assert _status(raw) in (400, 403)
    assert origin.seen == [] and p.resolver.calls == []


def test_ip_literal_allowed_when_a_rule_names_the_address(origin, make_proxy):
    port = origin.server_port
    p = make_proxy(allow=[EgressRule("127.0.0.1", ports=(port,))], hosts=())
    raw = _raw(p.port, f"GET http://2130706433:{port}/simple/ HTTP/1.1\r\n"
                       f"Host: 127.0.0.1:{port}\r\n\r\n".encode())
    assert _status(raw) == 200 and raw.endswith(INDEX)
    assert origin.seen[0]["headers"]["Host"] == f"127.0.0.1:{port}"
    assert p.resolver.calls == []


def test_ipv6_listener_and_upstream(make_proxy):
    try:
        server = _Origin6(host="::1")
    except OSError as e:
        pytest.skip(f"no IPv6 loopback: {e}")
    thread = _serve(server)
    try:
        port = server.server_address[1]
        p = make_proxy(allow=[EgressRule("v6.test", ports=(port,))], hosts=(("v6.test", "::1"),))
        status, _, body = _get(p.port, f"http://v6.test:{port}/simple/")
        assert (status, body) == (200, INDEX)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- smuggling and limits -----------------------------------------------------------

SMUGGLE = "GET http://pypi.test:{port}/smuggled HTTP/1.1\r\nHost: pypi.test:{port}\r\n\r\n"


@pytest.mark.parametrize("name, head", [
    ("cl+te", "Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("te+cl", "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"),
    ("two cl", "Content-Length: 0\r\nContent-Length: {n}\r\n\r\n"),
    ("obs-fold te", "Transfer-Encoding:\r\n chunked\r\nContent-Length: {n}\r\n\r\n0\r\n\r\n"),
    ("obs-fold", "X-Note: one\r\n two\r\nContent-Length: 0\r\n\r\n"),
    ("bare lf", "Content-Length: 0\nX-Other: 1\r\n\r\n"),
    ("te obfuscated", "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
    ("bad chunk", "Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"),
])
def test_smuggling_attempts_are_refused(origin, make_proxy, name, head):
    port = origin.server_port
    p = make_proxy(allow=[EgressRule("pypi.test", ports=(port,), methods=("GET", "POST"),
                                     paths=("/simple/",))])
    smuggled = SMUGGLE.format(port=port)
    start = f"POST http://pypi.test:{port}/simple/ HTTP/1.1\r\nHost: pypi.test:{port}\r\n"
    data = (start + head.format(n=len(smuggled) + 5) + smuggled).encode()
    raw = _raw(p.port, data)
    assert _status(raw) in (400, 501), raw
    assert "/smuggled" not in [r["path"] for r in origin.seen]
    assert len(origin.seen) <= 1 and p.proxy.blocked == 1


def test_pipelined_second_request_is_never_forwarded(origin, make_proxy):
    port = origin.server_port
    p = make_proxy(allow=[EgressRule("pypi.test", ports=(port,), methods=("GET", "POST"),
                                     paths=("/simple/",))])
    first = (f"POST http://pypi.test:{port}/simple/ HTTP/1.1\r\nHost: pypi.test:{port}\r\n"
             "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    raw = _raw(p.port, (first + SMUGGLE.format(port=port)).encode())
    assert _status(raw) == 200
    assert [(r["method"], r["path"], r["body"]) for r in origin.seen] == \
        [("POST", "/simple/", b"hello")]


def test_oversized_head_then_still_serving(origin, make_proxy):
    port = origin.server_port
    p = make_proxy(allow=[_index_rule(port)])
    big = (f"GET http://pypi.test:{port}/simple/ HTTP/1.1\r\nHost: pypi.test:{port}\r\n"
           f"X-Big: {'a' * 40_000}\r\n\r\n").encode()
    raw = _raw(p.port, big)
    assert raw == b"" or _status(raw) == 431
    assert origin.seen == []
    assert _get(p.port, f"http://pypi.test:{port}/simple/")[:1] == (200,)


def test_slow_client_is_closed_after_the_head_timeout(origin, make_proxy):
    port = origin.server_port
    p = make_proxy(allow=[_index_rule(port)], limits=Limits(head_timeout=0.5))
    start = time.monotonic()
    raw = _raw(p.port, f"GET http://pypi.test:{port}/simple/ HTTP/1.1\r\nHost: pyp".encode(),
               shut=False, timeout=10)
    elapsed = time.monotonic() - start
    assert _status(raw) == 408 and 0.4 < elapsed < 5
    assert p.events[0]["status"] == 408 and origin.seen == []


def test_connection_limit_answers_503(origin, make_proxy):
    port = origin.server_port
    p = make_proxy(allow=[_index_rule(port)], limits=Limits(max_connections=2, head_timeout=5))
    idle = [socket.create_connection(("127.0.0.1", p.port), timeout=10) for _ in range(2)]
    try:
        deadline = time.monotonic() + 5
        while p.proxy._active < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        raw = _raw(p.port, b"")
        assert _status(raw) == 503 and "too many connections" in _header(raw, "X-Sandbox-Blocked")
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 5
    while p.proxy._active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _get(p.port, f"http://pypi.test:{port}/simple/")[0] == 200


def test_idle_tunnel_is_closed(echo, make_proxy):
    port = echo.server_address[1]
    p = make_proxy(allow=[EgressRule("echo.test", ports=(port,))],
                   hosts=(("echo.test", "127.0.0.1"),), limits=Limits(idle_timeout=0.5))
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as sock:
        sock.sendall(f"CONNECT echo.test:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert _read_head(sock).startswith(b"HTTP/1.1 200 ")
        start = time.monotonic()
        assert sock.recv(100) == b""
        assert time.monotonic() - start < 5


def test_shutdown_closes_open_tunnels(echo, make_proxy):
    port = echo.server_address[1]
    p = make_proxy(allow=[EgressRule("echo.test", ports=(port,))],
                   hosts=(("echo.test", "127.0.0.1"),))
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as sock:
        sock.sendall(f"CONNECT echo.test:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert _read_head(sock).startswith(b"HTTP/1.1 200 ")
        start = time.monotonic()
        p.proxy.shutdown()
        assert time.monotonic() - start < 5
        try:
            assert sock.recv(100) == b""
        except ConnectionResetError:
            pass
    assert not p.thread.is_alive()


# -- fuzzing ----------------------------------------------------------------------

_PRINTABLE = re.compile(r"[ -~]*")

_VISIBLE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1, max_size=10)


def _mostly(usual, odd):
    """``usual`` nine times in ten, else ``odd``."""
    return st.integers(0, 9).flatmap(lambda i: odd if i == 0 else usual)


# Mostly well-formed, so that most examples get past h11 to the proxy's own
# checks; the odd pieces are what a client could do to confuse them.
_methods = _mostly(st.sampled_from(["GET"] * 6 + ["POST", "HEAD", "CONNECT", "PUT", "OPTIONS",
                                                  "get", "DELETE", "TRACE"]), _VISIBLE)
_schemes = st.sampled_from(["http://"] * 6 + ["HTTP://", "https://", "ftp://", "", "http:/",
                                              "//", "http:\\\\"])
_hosts = _mostly(st.sampled_from(["pypi.test"] * 6 + [
    "PYPI.test", "pypi.test.", "127.0.0.1", "2130706433", "0x7f.1", "[::1]", "[::ffff:7f00:1]",
    "evil.test", "pypi.test@evil.test", "evil.test@pypi.test", "pypi.test%40evil.test",
    "pypi.test\\@evil.test", "[pypi.test]", "pypi%2etest", "xn--pypi-", "pypi.test..",
    "pypi.test:80@evil.test", "", "pypi.tes", "sub.pypi.test", "pypi.test.evil.test"]), _VISIBLE)
_paths = _mostly(st.sampled_from(["/simple/"] * 4 + [
    "/simple/x?y=1", "/simple/../admin", "/admin", "/simple/%2e%2e/admin", "/simple/%2F..",
    "/%73imple/", "", "?x", "/simple/#frag", "*", "/simple/..;/admin", "/simple//x",
    "/simple\\..\\admin", "/SIMPLE/", "/simple", "/simple/%00", "/simple/%zz"]),
    _VISIBLE.map(lambda t: "/simple/" + t))
_versions = _mostly(st.sampled_from(["HTTP/1.1"] * 6 + ["HTTP/1.0"]),
                    st.sampled_from(["HTTP/2", "HTTP/1.1x", "", "http/1.1", "HTTP/0.9"]))
_eols = _mostly(st.just("\r\n"), st.sampled_from(["\n", "\r", "\r\r\n"]))
_extra_headers = st.lists(_mostly(st.sampled_from([
    "Host: evil.test", "Host: {authority}", "Host: ", "Content-Length: 5", "Content-Length: -1",
    "Content-Length: 5, 6", "Content-Length: 0", "Transfer-Encoding: chunked",
    "Transfer-Encoding: gzip, chunked", " folded", "Connection: host", "Connection: close",
    "Expect: 100-continue", "Upgrade: h2c", "X: \x01\x7f", "Proxy-Connection: keep-alive",
    ": empty", "NoColon", "X-Forwarded-Host: evil.test", "Host:{authority}",
]), _VISIBLE.map(lambda t: f"X-{t}: {t}")), max_size=3)
_bodies = st.sampled_from(["", "", "hello", "0\r\n\r\n",
                           "0\r\n\r\nGET http://pypi.test/admin HTTP/1.1\r\n"
                           "Host: pypi.test\r\n\r\n",
                           "5\r\nhello\r\n0\r\n\r\n"]) | st.text(max_size=30)


@st.composite
def _requests(draw, port: int) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    eol = draw(_eols)
    authority = draw(_hosts) + draw(st.sampled_from([f":{port}"] * 6 + [
        "", ":", ":0", ":99999", f":{port + 1}", ":80", f":0{port}", f":{port}:{port}"]))
    method = draw(_methods)
    target = authority if method == "CONNECT" and draw(st.booleans()) else \
        draw(_schemes) + authority + draw(_paths)
    headers = [f"Host: {authority}"] if draw(st.integers(0, 4)) else []
    headers += [h.replace("{authority}", authority) for h in draw(_extra_headers)]
    draw(st.randoms()).shuffle(headers)
    text = eol.join([f"{method} {target} {draw(_versions)}", *headers, "", ""]) + draw(_bodies)
    return text.encode("utf-8", "surrogatepass")


def test_fuzzing_never_crashes_nor_lets_through(origin, make_proxy):
    port = origin.server_port
    p = make_proxy(allow=[_index_rule(port)], limits=Limits(head_timeout=2.0))

    @settings(max_examples=400, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=_requests(port))
    def one(data: bytes) -> None:
        response = _raw(p.port, data, timeout=5)
        assert response == b"" or _status(response) is not None, response[:200]

    one()
    assert p.thread.is_alive()
    assert _get(p.port, f"http://pypi.test:{port}/simple/")[:1] == (200,)
    for request in origin.seen:  # only what the rule allows ever reached the origin
        path = urllib.parse.unquote(request["path"].partition("?")[0])
        assert request["method"] == "GET" and path.startswith("/simple/"), request
        assert ".." not in path.split("/") and "//" not in path
        assert request["headers"]["Host"] == f"pypi.test:{port}"
    assert p.resolver.calls == []
    for event in p.events:
        for key in ("host", "path", "url", "reason"):
            value = event[key]
            assert value is None or _PRINTABLE.fullmatch(value), event
        for key in ("host", "path"):
            assert event[key] is None or len(event[key]) <= 200


# -- the proxy process -------------------------------------------------------------

_CHILD_SCRIPT = textwrap.dedent("""
    import json, os, signal, socket, sys, time
    sys.path.insert(0, {repo!r})
    from sandbox.egress.netrules import Rules
    from sandbox.policy import EgressRule
    from sandbox.egress.session import _proxy_main

    send_fd = sys.argv[1] == "send"
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    ours, theirs = socket.socketpair()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        ours.close(); listener.close(); os.close(r)
        _proxy_main(theirs, {{"allow": [("pypi.test", (1,), (), (), "")], "deny": [], "hosts": [],
                             "max_connections": 256}}, w, os.getppid())
        os._exit(0)
    theirs.close(); os.close(w)
    if send_fd:
        socket.send_fds(ours, [b"L\\xff"], [listener.fileno()])  # netns.MAIN_TAG
    ours.close(); listener.close()

    def ask(data):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            return b"".join(iter(lambda: s.recv(65536), b""))

    answers = []
    if send_fd:
        answers.append(ask(b"GET http://evil.test/x HTTP/1.1\\r\\nHost: evil.test\\r\\n\\r\\n"))
        os.kill(pid, signal.SIGINT)  # ignored: the wrapper decides
        time.sleep(0.2)
        answers.append(ask(b"nonsense\\r\\n\\r\\n"))
        os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        status = -1
    lines = os.read(r, 1 << 20).decode().splitlines()
    print(json.dumps({{"status": status, "answers": [a[:12].decode() for a in answers],
                       "lines": [l if l.startswith("stats ") else json.loads(l) for l in lines]}}))
""")


@pytest.mark.parametrize("mode", ["send", "close"])
def test_the_proxy_process_serves_until_sigterm(tmp_path, mode):
    script = tmp_path / "child.py"
    script.write_text(_CHILD_SCRIPT.format(repo=str(REPO)))
    done = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == 0  # exited 0, not killed
    if mode == "close":  # no listener handed over: quiet exit, no lines
        assert result["lines"] == []
        return
    assert result["answers"] == ["HTTP/1.1 403", "HTTP/1.1 400"]
    blocked, bad, stats = result["lines"]
    assert blocked["type"] == "blocked" and blocked["host"] == "evil.test"
    assert blocked["reason"] == "host not allowed" and blocked["status"] == 403
    assert bad["type"] == "blocked" and bad["method"] is None
    assert stats == "stats 0 2 0"  # allowed, blocked, dropped event lines
