"""The egress proxy: the sandboxed command's only way out of its network namespace.

The command sees one listening socket, 127.0.0.1:3128 in its own namespace.
Its file descriptor is handed to this proxy, which runs on the host and
decides every request with ``sandbox.egress.netrules``:

* ``CONNECT host:port`` opens a tunnel (https and anything else over TCP);
  only host and port can be checked, so rules limited to methods or paths
  never match a tunnel.
* a ``CONNECT`` that an ``inspect = true`` rule covers has its TLS ended by
  ``sandbox.egress.tlsinspect``, which runs each request inside through
  ``_Client._forward`` below, exactly as plain HTTP (https upstream);
* ``GET http://host/path`` (absolute form) is plain HTTP: method, host, port
  and path are checked, and the request is re-serialized by h11 before it
  goes upstream.  Nothing of the client's raw bytes reaches the origin, so
  framing tricks (request smuggling) cannot make the origin see a request
  that was never checked.

Names are resolved only after a request is allowed, and the address
connected to is exactly the one ``Rules.address_refusal`` accepted (no second
lookup by ``create_connection``), so DNS cannot steer an allowed name to
loopback or a metadata service.

One thread per client connection, plus one more for the second direction of
a tunnel.  Every wait has a timeout and every loop ends on EOF, error,
timeout or shutdown.
"""

from __future__ import annotations

import errno
import http
import ipaddress
import json
import mmap
import os
import re
import resource
import select
import signal
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable, NoReturn

import h11

from sandbox.egress import netrules
from sandbox.errors import printable

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_CHUNK = 256 * 1024  # upstream reads: big enough that h11's per-event overhead vanishes
_BODY_CHUNK = 1 << 20  # fixed-length bodies and tunnels: fewer, larger system calls
_LINGER = 1.0  # seconds to keep reading after our last byte, so it is not lost to a RST
_MAX_CANDIDATES = 8  # addresses tried per request
_MAX_EVENT_LINES = 1000
_STACK_SIZE = 256 * 1024

# Hop-by-hop headers (RFC 9110 7.6.1) and the proxy's own: never forwarded.
_HOP_BY_HOP = frozenset({
    b"connection", b"proxy-connection", b"proxy-authorization", b"proxy-authenticate",
    b"keep-alive", b"te", b"trailer", b"upgrade",
})
# Set by the proxy itself, never copied: h11 frames each side from the parsed
# framing, Host is the checked authority, 100-continue is answered here.
_SET_BY_PROXY = frozenset({b"content-length", b"transfer-encoding", b"host", b"expect"})
# Headers that ask the origin to use another method or path than the request
# line's (h11 gives header names lower-cased).
_OVERRIDES = frozenset({
    b"x-http-method-override", b"x-http-method", b"x-method-override", b"x-original-url",
    b"x-rewrite-url", b"x-original-method", b"x-override-url",
})
_OBS_FOLD = re.compile(rb"\r?\n[ \t]")


@dataclass(frozen=True)
class Limits:
    """Bounds on what one client can make the proxy hold.  Seconds and bytes."""

    max_head: int = 32 * 1024  # request line + headers (431 beyond)
    head_timeout: float = 10.0  # the whole head must arrive within this (slowloris: 408)
    idle_timeout: float = 300.0  # no byte either way in a tunnel or body: close
    max_connections: int = 256  # concurrent client connections (503 beyond)
    connect_timeout: float = 10.0  # per upstream address
    max_upstream_head: int = 64 * 1024


class _Refused(Exception):
    """Answer the client with ``status`` and record a blocked event."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _Gone(Exception):
    """The client or upstream went away (or shutdown): close, nothing to answer."""


def _printable(text: str, limit: int = 200) -> str:
    """For events and headers: ASCII without control characters, short."""
    return printable(text, limit, ascii_only=True)


def _url(host: str, port: int, path: str | None, scheme: str = "http") -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}" if path is None else f"{scheme}://{shown}:{port}{path}"


def _system_resolver(host: str, port: int) -> list[_Address]:
    # /etc/hosts first: the C library never matches "name." there (sandbox.egress.hostsfile)
    from sandbox.egress import hostsfile

    listed = hostsfile.lookup(host)
    if listed:
        return list(listed)
    # the trailing dot makes the name absolute: resolv.conf search domains
    # (Kubernetes' ndots:5) must not turn pypi.org into pypi.org.<cluster>
    infos = socket.getaddrinfo(host + ".", port, type=socket.SOCK_STREAM)
    # scope ids are dropped: link-local addresses are refused anyway
    return [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]


def _split_authority(text: str, default_port: int | None) -> tuple[str, int]:
    """``host[:port]`` or ``[v6]:port`` -> (host without brackets, port); refuses anything else."""
    if not text or "@" in text:
        raise _Refused(400, "bad authority (no user info allowed)" if text else "empty host")
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[1:end], text[end + 1:]
        if end < 0 or ":" not in host or (rest and not rest.startswith(":")):
            raise _Refused(400, "bad IPv6 literal in authority")
        port_text = rest[1:] if rest else None
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        if ":" in host:
            raise _Refused(400, "IPv6 literal must be in brackets")
    else:
        host, port_text = text, None
    if not host:
        raise _Refused(400, "empty host")
    if not port_text:  # absent or empty ("host:"): the scheme's default
        if default_port is None:
            raise _Refused(400, "CONNECT needs host:port")
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5
            and 0 < int(port_text) < 65536):
        raise _Refused(400, "bad port")
    return host, int(port_text)


_QUOTED_BYTES = re.compile(r"(bytearray\()?b(['\"]).*", re.S)


def _h11_reason(error: Exception) -> str:
    """h11's message without the bytes it quotes ("illegal header line:
    bytearray(b'x-api-key : ...')"): a refusal reason is shown inside, on
    stderr and in the report and audit log, and never holds a header's value."""
    return _QUOTED_BYTES.sub("(not shown)", str(error))


def _normalize(host: str) -> str | _Address:
    try:
        return netrules.normalize_host(host)
    except netrules.HostError as e:
        raise _Refused(400, f"bad host: {e}") from None


def _send_all(sock: socket.socket, pieces) -> None:
    """Send what h11 produced; small framing pieces travel with their data."""
    if pieces is None:
        return
    if len(pieces) > 1 and sum(map(len, pieces)) <= 64 * 1024:
        pieces = [b"".join(pieces)]
    for piece in pieces:
        sock.sendall(piece)


def _end_to_end(headers) -> list[tuple[bytes, bytes]]:
    """The headers to pass on, original spelling kept: not hop-by-hop, not
    named in Connection, not ours to set; plus the parsed framing headers,
    from which h11 frames the other side itself (chunked becomes
    close-delimited for an HTTP/1.0 client, and so on)."""
    chunked = any(name == b"transfer-encoding" for name, _ in headers)
    named = {token.strip().lower() for name, value in headers if name == b"connection"
             for token in value.split(b",")}
    out = []
    for raw_name, value in headers.raw_items():
        name = raw_name.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and not chunked):
            out.append((raw_name, value))  # h11 read the body by the same rule: TE wins
        elif name not in _HOP_BY_HOP and name not in _SET_BY_PROXY and name not in named:
            out.append((raw_name, value))
    return out


class Proxy:
    """Serve the allowlist on ``listener`` until ``shutdown()``."""

    def __init__(self, listener: socket.socket, rules: netrules.Rules,
                 on_event: Callable[[dict], None], *,
                 resolver: Callable[[str, int], list] | None = None,
                 limits: Limits | None = None, inspector=None, guard=None) -> None:
        self.listener = listener
        self.guard = guard  # sandbox.egress.provenance.Guard: credentials and header rules
        # sandbox.egress.tlsinspect.Inspector when some rule says inspect = true:
        # it ends such tunnels' TLS and hands each request inside back to a
        # _Client (so every check of plain HTTP applies there too)
        self.inspector = inspector
        self.rules = rules
        self.on_event = on_event
        self.resolver = resolver or _system_resolver
        self.limits = limits or Limits()
        self.allowed = 0  # requests forwarded upstream (tunnels and plain HTTP)
        self.blocked = 0  # requests answered with an error by the proxy (= events)
        self._lock = threading.Lock()
        self._active = 0
        self._sockets: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        # A plain flag and a socket, no lock: shutdown() runs in a signal
        # handler in the proxy process, possibly while the same thread holds
        # self._lock.
        self._stopping = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._serving = False
        self._done = threading.Event()

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="proxy-accept", daemon=True)
        self._serving = True  # before start(), so an early shutdown() waits for it
        thread.start()
        return thread

    def shutdown(self) -> None:
        """Stop accepting and close every connection; waits (bounded) unless
        called from the serving thread itself (a signal handler)."""
        self._stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        serving_here = threading.current_thread() is getattr(self, "_server_thread", None)
        if self._serving and not serving_here:
            if self._done.wait(timeout=5.0):
                # closed only here, by the one thread that sends on them: a
                # close racing a send could hit a reused descriptor number
                self._wake_r.close()
                self._wake_w.close()

    def serve_forever(self) -> None:
        self._serving = True
        self._server_thread = threading.current_thread()
        poller = select.poll()
        try:
            self.listener.setblocking(False)
            poller.register(self.listener, select.POLLIN)
            poller.register(self._wake_r, select.POLLIN)
            while not self._stopping:
                ready = dict(poller.poll(1000))  # the timeout only re-checks the flag
                if ready.get(self.listener.fileno(), 0) & (select.POLLERR | select.POLLNVAL):
                    break  # the listener is gone: nothing left to serve
                if self.listener.fileno() in ready:
                    self._accept_burst()
        finally:
            self._close_all()
            self._done.set()

    def _accept_burst(self) -> None:
        for _ in range(64):  # bounded, then back to poll (and the stop flag)
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as e:
                if e.errno in (errno.EBADF, errno.EINVAL, errno.ENOTSOCK):
                    raise  # the listener itself is unusable: stop serving
                # out of descriptors or memory, or a network error of the
                # connection being accepted: let the others finish, go on
                time.sleep(0.05)
                return
            self._admit(sock)

    def _admit(self, sock: socket.socket) -> None:
        with self._lock:
            full = self._active >= self.limits.max_connections or self._stopping
            if not full:
                self._active += 1
                self._sockets.add(sock)
        if not full:
            thread = threading.Thread(target=self._handle, args=(sock,), name="proxy-client",
                                      daemon=True)
            try:
                with self._lock:
                    self._threads.add(thread)
                thread.start()
                return
            except RuntimeError:  # can't start new thread: treat as full
                with self._lock:
                    self._threads.discard(thread)
                    self._sockets.discard(sock)
                    self._active -= 1
        # Answered from the accept loop: the socket is fresh, so the short
        # answer fits its send buffer and never blocks.
        self._record(503, f"too many connections (limit {self.limits.max_connections})")
        try:
            sock.setblocking(False)
            sock.send(_error_bytes(h11.Connection(h11.SERVER), 503, "too many connections",
                                   "request"))
        except OSError:
            pass
        sock.close()

    def _close_all(self) -> None:
        try:
            self.listener.close()
        except OSError:
            pass
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:  # wakes every blocked recv/poll; owners close them
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + 1.0  # the wrapper waits 3 s for us in all
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            if self._stopping:
                raise _Gone()
            self._sockets.add(sock)

    def untrack_and_close(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        sock.close()

    def _handle(self, sock: socket.socket) -> None:
        client = _Client(self, sock)
        try:
            client.run()
        except Exception as e:  # a bug must cost one connection, never the proxy
            client.refuse(500, f"internal error: {type(e).__name__}: {e}")
        finally:
            client.close()
            with self._lock:
                self._active -= 1
                self._threads.discard(threading.current_thread())

    # -- accounting --------------------------------------------------------
    def count_allowed(self) -> None:
        with self._lock:
            self.allowed += 1

    def _record(self, status: int, reason: str, method: str | None = None,
                host: str | None = None, port: int | None = None, path: str | None = None,
                scheme: str = "http") -> None:
        with self._lock:
            self.blocked += 1
        host = _printable(host) if host is not None else None
        path = _printable(path) if path is not None else None
        event = {"method": method, "host": host, "port": port, "path": path,
                 "url": _url(host, port, path, scheme) if host is not None and port else None,
                 "reason": _printable(reason, 500), "status": status}
        try:
            self.on_event(event)
        except Exception:
            pass  # a failing observer must not take the connection down


def _error_bytes(conn: h11.Connection, status: int, reason: str, what: str,
                 head_only: bool = False) -> bytes:
    """A complete plain-text error response, built by h11 (``conn`` or a fresh
    one); ``head_only`` for an answer to HEAD."""
    reason = _printable(reason, 300).strip() or "refused"
    body = f"sandbox: blocked {what} - {reason}\n".encode("ascii")
    headers = [(b"Content-Type", b"text/plain"), (b"Content-Length", str(len(body)).encode()),
               (b"Connection", b"close"), (b"X-Sandbox-Blocked", reason.encode("ascii"))]
    response = h11.Response(status_code=status, headers=headers,
                            reason=http.HTTPStatus(status).phrase.encode())
    for attempt in (conn, h11.Connection(h11.SERVER)):  # h11 may refuse to answer in its state
        try:
            out = attempt.send(response)
            if not head_only:
                out += attempt.send(h11.Data(data=body))
            return out + attempt.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            continue
    raise AssertionError("a fresh h11 connection always accepts a response")


class _Client:
    """One client connection: one request (or one tunnel), then close."""

    # plain HTTP; a request inside an inspected tunnel is https, port 443
    # by default (sandbox.egress.tlsinspect)
    scheme = "http"
    default_port = 80

    def __init__(self, proxy: Proxy, sock: socket.socket) -> None:
        self.proxy = proxy
        self.limits = proxy.limits
        self.sock = sock
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head)
        self.upstream: socket.socket | None = None
        self.answered = False  # response bytes went out: an error can only close now
        self.method: str | None = None
        self.host: str | None = None  # for events: normalized when known, raw before
        self.port: int | None = None
        self.path: str | None = None
        self.rule = None  # the allow rule that let the request through

    # -- the request -------------------------------------------------------
    def run(self) -> None:
        try:
            _nodelay(self.sock)
            request = self._read_head()
            if request is None:
                return
            self.method = request.method.decode("ascii")
            target = request.target.decode("ascii")  # h11 allows visible ASCII only
            if self.method == "CONNECT":
                self._tunnel(request, target)
            else:
                self._forward(request, target)
        except _Refused as r:
            self.refuse(r.status, r.reason)
        except (_Gone, OSError):
            pass  # peer vanished, timed out mid-stream, or shutdown: just close

    def _recv_client(self, timeout: float) -> bytes:
        self.sock.settimeout(max(timeout, 0.001))
        return self.sock.recv(65536)

    def _read_head(self) -> h11.Request | None:
        deadline = time.monotonic() + self.limits.head_timeout
        raw = bytearray()  # kept for the line-ending check; h11 caps it at max_head + 64 KiB
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as e:
                raise _Refused(e.error_status_hint, f"malformed request: {_h11_reason(e)}") from None
            if type(event) is h11.Request:
                break
            if type(event) is h11.ConnectionClosed:
                return None  # connected and closed without a request: nothing to report
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise socket.timeout()
                data = self._recv_client(remaining)
            except socket.timeout:
                raise _Refused(408, "request head not received within "
                               f"{self.limits.head_timeout:g}s") from None
            except OSError:
                raise _Gone() from None
            raw += data
            self.conn.receive_data(data)
        head = bytes(raw[: len(raw) - len(self.conn.trailing_data[0])])
        if len(head) > self.limits.max_head:  # h11 only bounds heads still incomplete
            raise _Refused(431, f"request head larger than {self.limits.max_head} bytes")
        # h11 tolerates bare LF and unfolds obs-fold; other HTTP parsers do not
        # agree on either, which is what smuggling feeds on.  RFC 9112 lets
        # us reject both, and we do: nothing legitimate sends them.
        if b"\n" in head.replace(b"\r\n", b""):
            raise _Refused(400, "malformed request: bare LF line ending")
        if _OBS_FOLD.search(head.split(b"\n", 1)[-1]):
            raise _Refused(400, "malformed request: folded header line (obs-fold)")
        return event

    def _tunnel(self, request: h11.Request, target: str) -> None:
        host_raw, port = _split_authority(target, None)
        self.host, self.port = host_raw, port
        # A CONNECT carries no body; anything else before the switch is a trick.
        for _ in range(3):
            event = self._next_event()
            if event is h11.PAUSED:
                break
            if type(event) is not h11.EndOfMessage:
                raise _Refused(400, "malformed request: CONNECT with a body")
        else:
            raise _Refused(400, "malformed request: CONNECT with a body")
        host = self._check(host_raw, port, None)
        guard = self.proxy.guard
        if guard is not None and guard.covers(host) and not getattr(self.rule, "inspect", False):
            # inside a blind tunnel neither the placeholder nor a foreign
            # credential can be seen: the host's credentials would mean nothing
            raise _Refused(403, f"blind tunnel to {host} refused: it has a [[network.credentials]] "
                                "entry, so its requests must be readable (plain HTTP, or "
                                "inspect = true on its allow rule)")
        if self.rule is not None and self.rule.inspect:
            return self._inspect(host, port)
        upstream = self._open_upstream(host, port)
        established = h11.Response(status_code=200, headers=[], reason=b"Connection established")
        self.sock.sendall(self.conn.send(established))
        self.answered = True
        early, _ = self.conn.trailing_data  # bytes the client sent right after CONNECT
        if early:
            upstream.sendall(early)
        _Relay(self.proxy, self.sock, upstream, self.limits.idle_timeout).run()

    def _inspect(self, host: str | _Address, port: int) -> None:
        """An inspected tunnel: answer the CONNECT, then let the inspector end
        the client's TLS and run each request inside through ``_forward``."""
        if self.proxy.inspector is None:
            raise _Refused(500, "TLS inspection is not available in this proxy")
        if self.conn.trailing_data[0]:
            raise _Refused(400, "TLS data sent before the proxy answered CONNECT "
                                "(not supported where the proxy inspects TLS)")
        established = h11.Response(status_code=200, headers=[], reason=b"Connection established")
        self.sock.sendall(self.conn.send(established))
        self.answered = True
        self.proxy.inspector.serve(self, host, port)

    def _target(self, target: str) -> tuple[str, int, str]:
        """(host as written, port, path) of a plain HTTP request's target."""
        if target.startswith("/"):
            raise _Refused(400, "send requests through the proxy in absolute form "
                           "(http://host/path)")
        scheme, sep, rest = target.partition("://")
        if not sep:
            raise _Refused(400, f"{self.method} needs an absolute http:// URL")
        if scheme.lower() == "https":
            raise _Refused(400, "use CONNECT for https")
        if scheme.lower() != "http":
            raise _Refused(400, f"only http:// URLs are proxied, not {scheme}://")
        if "#" in rest:
            raise _Refused(400, "fragment in request target")
        authority = re.split(r"[/?]", rest, maxsplit=1)[0]
        path = rest[len(authority):] or "/"
        if path.startswith("?"):
            path = "/" + path
        host_raw, port = _split_authority(authority, 80)
        return host_raw, port, path

    def _forward(self, request: h11.Request, target: str) -> None:
        host_raw, port, path = self._target(target)
        self.host, self.port, self.path = host_raw, port, path
        if any(name == b"upgrade" for name, _ in request.headers):
            raise _Refused(403, "Upgrade is not supported (use CONNECT)")
        framing = {name for name, _ in request.headers} & {b"content-length", b"transfer-encoding"}
        if len(framing) == 2:
            raise _Refused(400, "malformed request: both Content-Length and Transfer-Encoding")
        hosts = [value for name, value in request.headers if name == b"host"]
        if len(hosts) != 1:
            raise _Refused(400, "exactly one Host header is required")
        h_host, h_port = _split_authority(hosts[0].decode("latin-1"), self.default_port)
        if _normalize(h_host) != _normalize(host_raw) or h_port != port:
            raise _Refused(400, "Host header does not match the URL")
        host = self._check(host_raw, port, path)
        if self.scheme == "http" and self.proxy.rules.inspected(host, port) is not None:
            # A port a rule inspects speaks TLS: plain HTTP there would carry
            # the host's real credential (and everything else) in clear, to
            # an address no certificate was checked for.
            raise _Refused(403, f"plain HTTP to {host}:{port}, which a rule marks inspect = true "
                                "(TLS): use https://")
        guard = self.proxy.guard
        if ((self.rule is not None and self.rule.scoped())
                or (guard is not None and guard.scoped(host))):
            # Many frameworks take the method or path from these headers; a
            # rule (or a credential entry) that limits methods or paths would
            # then check one request while the origin serves another.
            override = next((name for name, _ in request.headers if name in _OVERRIDES), None)
            if override is not None:
                raise _Refused(403, f"header {override.decode()} is not allowed where a rule "
                                    "or a credential limits methods or paths")
        headers = self._outgoing_headers(request, host, port, path)
        upstream = self._open_upstream(host, port)
        self._exchange(request, host, port, path, upstream, headers)

    def _outgoing_headers(self, request: h11.Request, host: str | _Address, port: int,
                          path: str) -> list[tuple[bytes, bytes]]:
        """The end-to-end headers to send upstream, after the credential step
        (``sandbox.egress.provenance.Guard``): decided before anything connects, so a
        refused request reaches no origin at all."""
        headers = _end_to_end(request.headers)
        guard = self.proxy.guard
        if guard is None:
            return headers
        from sandbox.egress.provenance import Refusal

        try:
            return guard.outgoing(host if isinstance(host, str) else str(host), port,
                                  self.method, path, headers)
        except Refusal as r:
            raise _Refused(403, str(r)) from None

    def _check(self, host_raw: str, port: int, path: str | None) -> str | _Address:
        """The policy decision; returns the normalized host when allowed."""
        host = _normalize(host_raw)
        self.host = str(host)
        decision = self.proxy.rules.check(self.method, host_raw, port, path)
        if decision.host:
            self.host = decision.host
        if not decision.allowed:
            raise _Refused(403, decision.reason)
        self.rule = decision.rule
        return host

    def _open_upstream(self, host: str | _Address, port: int) -> socket.socket:
        """Resolve (pins first) and connect to the first address the rules accept."""
        rules = self.proxy.rules
        pinned = rules.pinned(host) if isinstance(host, str) else None
        if pinned is not None:
            candidates = [pinned]
        elif not isinstance(host, str):
            candidates = [host]
        else:
            try:
                candidates = list(self.proxy.resolver(host, port))
            except Exception as e:
                raise _Refused(502, f"cannot resolve {host}: {e}") from None
        refusal, failure, tried = None, None, 0
        for candidate in candidates[:_MAX_CANDIDATES]:
            addr = ipaddress.ip_address(str(candidate))
            why = rules.address_refusal(host, addr, port)
            if why is not None:
                refusal = refusal or why
                continue
            tried += 1
            sock = socket.socket(socket.AF_INET6 if addr.version == 6 else socket.AF_INET,
                                 socket.SOCK_STREAM)
            try:
                self.proxy.track(sock)
                sock.settimeout(self.limits.connect_timeout)
                sock.connect((str(addr), port))  # exactly the checked address
            except _Gone:
                sock.close()
                raise
            except OSError as e:
                self.proxy.untrack_and_close(sock)
                failure = e if failure is None or isinstance(failure, socket.timeout) else failure
                continue
            _nodelay(sock)
            self.upstream = sock
            self.proxy.count_allowed()
            return sock
        if not tried:
            raise _Refused(403, refusal or f"{host} resolved to no address")
        if isinstance(failure, socket.timeout):
            raise _Refused(504, f"connecting to {host}:{port} timed out")
        raise _Refused(502, f"cannot connect to {host}:{port}: {failure.strerror or failure}")

    # -- plain HTTP --------------------------------------------------------
    def _exchange(self, request: h11.Request, host: str | _Address, port: int, path: str,
                  upstream: socket.socket, forwarded: list | None = None) -> None:
        uconn = h11.Connection(h11.CLIENT,
                               max_incomplete_event_size=self.limits.max_upstream_head)
        shown = f"[{host}]" if isinstance(host, ipaddress.IPv6Address) else str(host)
        authority = shown if port == self.default_port else f"{shown}:{port}"
        if forwarded is None:  # a caller that skipped _forward: the same step, late
            forwarded = self._outgoing_headers(request, host, port, path)
        headers = [(b"Host", authority.encode("ascii")), *forwarded, (b"Connection", b"close")]
        upstream.settimeout(self.limits.idle_timeout)
        self.sock.settimeout(self.limits.idle_timeout)
        try:
            upstream.sendall(uconn.send(h11.Request(method=request.method,
                                                    target=path.encode(), headers=headers)))
        except OSError as e:
            raise _Refused(502, f"upstream failed: {e.strerror or e}") from None
        if self.conn.client_is_waiting_for_100_continue:
            go_on = h11.InformationalResponse(status_code=100, headers=[])
            self.sock.sendall(self.conn.send(go_on))
        self._stream_request_body(uconn, upstream)
        self._stream_response(uconn, upstream)

    def _stream_request_body(self, uconn: h11.Connection, upstream: socket.socket) -> None:
        while True:
            event = self._next_event()
            try:
                if type(event) is h11.Data:
                    _send_all(upstream, uconn.send_with_data_passthrough(event))
                elif type(event) is h11.EndOfMessage:
                    upstream.sendall(uconn.send(h11.EndOfMessage()))
                    return
                else:
                    raise _Refused(400, "malformed request: body ended early")
            except OSError:
                return  # upstream stopped reading: it may still have answered

    def _stream_response(self, uconn: h11.Connection, upstream: socket.socket) -> None:
        started = False
        while True:
            try:
                event = uconn.next_event()
            except h11.RemoteProtocolError as e:
                if started:
                    raise _Gone() from None
                raise _Refused(502, f"bad response from upstream: {_h11_reason(e)}") from None
            if event is h11.NEED_DATA:
                try:
                    data = upstream.recv(_CHUNK)
                except socket.timeout:
                    if started:
                        raise _Gone() from None
                    raise _Refused(504, "upstream did not answer within "
                                   f"{self.limits.idle_timeout:g}s") from None
                except OSError as e:
                    if started:
                        raise _Gone() from None
                    raise _Refused(502, f"upstream failed: {e.strerror or e}") from None
                if not data and not started:
                    raise _Refused(502, "upstream closed without a response")
                uconn.receive_data(data)  # b"" ends a close-delimited body
            elif type(event) is h11.Response:
                if self.proxy.guard is not None:  # cookies the origin sets are its own
                    self.proxy.guard.incoming(self.host, event.headers)
                headers = _end_to_end(event.headers) + [(b"Connection", b"close")]
                length = _fixed_length(event, self.method)  # its header is in `headers`
                response = h11.Response(status_code=event.status_code, headers=headers,
                                        reason=event.reason)
                self.sock.sendall(self.conn.send(response))
                started = self.answered = True
                if length is not None:
                    self._copy_body(uconn, upstream, length)
                    return
            elif type(event) is h11.Data:
                _send_all(self.sock, self.conn.send_with_data_passthrough(event))
            elif type(event) is h11.EndOfMessage:
                self.sock.sendall(self.conn.send(h11.EndOfMessage()))
                return
            elif type(event) is h11.InformationalResponse:
                continue  # 1xx: ours to answer (100-continue), not forwarded
            else:  # ConnectionClosed or PAUSED before a response
                if started:
                    raise _Gone()
                raise _Refused(502, "upstream closed without a response")

    def _copy_body(self, uconn: h11.Connection, upstream: socket.socket, length: int) -> None:
        """A response body of a known length, copied without h11 re-framing it.

        h11 parsed and checked the head (one valid Content-Length, no
        Transfer-Encoding), so the body is exactly ``length`` bytes; moving
        them through h11 would copy each byte three more times (measured:
        about a quarter of the direct throughput).  This is the response
        side only: requests are always re-framed.  The connection closes
        afterwards, so h11's state for it is not needed again.
        """
        remaining = length
        while remaining:  # first what h11 has already read past the head
            event = uconn.next_event()
            if type(event) is h11.Data:
                self.sock.sendall(event.data)
                remaining -= len(event.data)
            elif event is h11.NEED_DATA:
                break
            elif type(event) is h11.EndOfMessage:
                return
            else:
                raise _Gone()
        buf = memoryview(bytearray(_BODY_CHUNK))
        while remaining:
            n = upstream.recv_into(buf, min(len(buf), remaining))
            if not n:
                raise _Gone()  # truncated: the client sees a short body and a close
            self.sock.sendall(buf[:n])
            remaining -= n

    # -- helpers -------------------------------------------------------------
    def _next_event(self):
        """Next client event; reads with the idle timeout; bounded by data or time."""
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as e:
                raise _Refused(e.error_status_hint, f"malformed request: {_h11_reason(e)}") from None
            if event is not h11.NEED_DATA:
                return event
            try:
                data = self._recv_client(self.limits.idle_timeout)
            except socket.timeout:
                raise _Refused(408, "request body stalled") from None
            self.conn.receive_data(data)

    def refuse(self, status: int, reason: str) -> None:
        """Record the event and, if nothing was answered yet, send the error."""
        self.proxy._record(status, reason, self.method, self.host, self.port, self.path,
                           self.scheme)
        if self.answered:
            return
        self.answered = True
        if self.method:
            url = (_url(self.host, self.port, self.path, self.scheme) if self.host and self.port
                   else "?")
            what = f"{self.method} {_printable(url, 300)}"
        else:
            what = "request"
        try:
            self.sock.settimeout(5.0)
            self.sock.sendall(_error_bytes(self.conn, status, reason, what,
                                           head_only=self.method == "HEAD"))
        except OSError:
            pass

    def close(self) -> None:
        """Half-close, drain briefly (a close with unread input would RST away
        our answer), then close both sockets."""
        if self.upstream is not None:
            self.proxy.untrack_and_close(self.upstream)
        try:
            self.sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + _LINGER
            for _ in range(64):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._recv_client(remaining):
                    break
        except OSError:
            pass
        self.proxy.untrack_and_close(self.sock)


def _fixed_length(response: h11.Response, method: str | None) -> int | None:
    """The body length of a response framed by Content-Length alone, else None."""
    if method == "HEAD" or response.status_code in (204, 304):
        return None
    lengths = [value for name, value in response.headers if name == b"content-length"]
    if len(lengths) != 1 or any(name == b"transfer-encoding" for name, _ in response.headers):
        return None
    return int(lengths[0]) if lengths[0].isdigit() else None


def _nodelay(sock: socket.socket) -> None:
    # Heads and bodies go out in separate writes; Nagle would hold the second.
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


class _Relay:
    """Both directions of a tunnel until both sides close, or idle_timeout
    passes with no byte either way.

    Blocking sockets with kernel timeouts (SO_RCVTIMEO/SO_SNDTIMEO): one
    system call per chunk.  A Python socket timeout would poll() before every
    recv, and a non-blocking loop polls whenever the peer is slower; either
    doubles the calls, which showed in throughput on a 2-core machine.
    splice(2) was measured too: no less CPU on loopback and lower throughput
    (a 64 KiB pipe means more calls), so bytes go through one reused buffer.
    """

    _TICK = 5.0  # seconds between looks at the idle clock and the stop flag

    def __init__(self, proxy: Proxy, client: socket.socket, upstream: socket.socket,
                 idle: float) -> None:
        self.proxy, self.client, self.upstream, self.idle = proxy, client, upstream, idle
        self.last = time.monotonic()  # last byte in either direction

    def run(self) -> None:
        every = min(self._TICK, max(self.idle, 0.01))
        tick = struct.pack("ll", int(every), int(every % 1 * 1e6))
        for sock in (self.client, self.upstream):
            sock.settimeout(None)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tick)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tick)
        other = threading.Thread(target=self._pump, args=(self.upstream, self.client),
                                 name="proxy-tunnel", daemon=True)
        other.start()
        self._pump(self.client, self.upstream)
        # The other direction ends on its own (EOF, error, idle, shutdown).
        while other.is_alive() and not self.proxy._stopping:
            other.join(timeout=self.idle + 1.0)
        other.join(timeout=2.0)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        # An anonymous mapping, not a bytearray (which is zero-filled at
        # once): an idle tunnel then holds no memory, and a busy one only
        # the pages its reads touch (network.max_connections tunnels may be open).
        buf = memoryview(mmap.mmap(-1, _BODY_CHUNK))
        try:
            while True:
                try:
                    n = src.recv_into(buf)
                except BlockingIOError:  # SO_RCVTIMEO: nothing for a tick
                    self._still_alive()
                    continue
                if n == 0:
                    break
                self.last = time.monotonic()
                sent = 0
                while sent < n:
                    try:
                        sent += dst.send(buf[sent:n])
                    except BlockingIOError:  # SO_SNDTIMEO: the peer is not reading
                        self._still_alive()
            dst.shutdown(socket.SHUT_WR)  # pass the half-close on
        except (OSError, _Gone):
            # reset, idle or shutdown: end both directions now
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _still_alive(self) -> None:
        if self.proxy._stopping or time.monotonic() - self.last >= self.idle:
            raise _Gone()


# -- the proxy process -------------------------------------------------------
class _EventSink:
    """One JSON line per event on ``fd``; after _MAX_EVENT_LINES only counts."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        self.written = 0
        self.dropped = 0

    def __call__(self, event: dict) -> None:
        with self.lock:
            if self.written >= _MAX_EVENT_LINES:
                self.dropped += 1
                return
            self.written += 1
            self._write({"type": "blocked", **event})

    def _write(self, record: dict | str) -> None:
        text = record if isinstance(record, str) else json.dumps(record, ensure_ascii=True)
        data = (text + "\n").encode("ascii")
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError:
            self.written = _MAX_EVENT_LINES  # reader gone: stop trying

    def stats(self, proxy: Proxy | None) -> None:
        with self.lock:
            # plain words, not JSON: a run with nothing blocked then costs the
            # wrapper no json import (milliseconds on every start)
            self._write(f"stats {proxy.allowed if proxy else 0} {proxy.blocked if proxy else 0} "
                        f"{self.dropped}")


def serve_listener(listener: socket.socket, rules: netrules.Rules, events_fd: int,
                   limits: Limits | None = None, inspector=None, guard=None) -> NoReturn:
    """Serve ``listener`` until SIGTERM; events go to ``events_fd``.  Never returns.

    Called in the proxy process (``sandbox.egress.session._proxy_main``), which has
    already arranged to die with the wrapper.
    """
    proxy: Proxy | None = None
    stop_early = False

    def on_term(signum, frame) -> None:
        nonlocal stop_early
        stop_early = True
        if proxy is not None:
            proxy.shutdown()  # only sets a flag and wakes the loop: signal-safe

    sink = _EventSink(events_fd)
    try:
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_IGN)  # the wrapper decides when we stop
        signal.signal(signal.SIGTERM, on_term)
        # a tunnel holds two sockets: the default soft limit of 1024 is too few
        try:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
            if soft != resource.RLIM_INFINITY and soft < want:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (OSError, ValueError):
            pass  # fewer tunnels at once
        threading.stack_size(_STACK_SIZE)  # hundreds of threads, shallow stacks
        proxy = Proxy(listener, rules, sink, limits=limits, inspector=inspector, guard=guard)
        if stop_early:
            proxy.shutdown()
        proxy.serve_forever()
    except BaseException:
        pass  # exit with whatever stats we have; never a traceback on the terminal
    finally:
        sink.stats(proxy)
        os._exit(0)
