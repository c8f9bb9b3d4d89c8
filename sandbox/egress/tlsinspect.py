"""TLS inspection in the egress proxy: end the client's TLS, check each request
inside exactly as plain HTTP is checked, and open a verified TLS connection
upstream.  Proxy process only.

A ``CONNECT`` to a host and port that some ``[[network.allow]]`` rule marks
``inspect = true`` is answered ``200`` by ``sandbox.egress.proxy`` and handed here.
The client's TLS is ended with a leaf certificate for the ``CONNECT`` host,
minted by the run's CA (``sandbox.egress.tlsca``).  The request inside is then read
by an ``_Inspected`` client: a ``sandbox.egress.proxy._Client`` whose only
differences are where the request target comes from (the tunnel's authority,
not an absolute URL), that it speaks https upstream, and that a nested
``CONNECT`` is refused.  Everything else (the head checks against
smuggling, method and path rules, the ``Host`` check, override headers,
h11 re-framing, and whatever per-request checks ``_forward`` grows) is the
plain-HTTP code itself, so HTTPS through an inspected tunnel gets every
check plain HTTP gets.

Names must agree everywhere: the TLS server name the client asks for (SNI),
the ``Host`` header, and the name sent upstream (SNI and certificate check)
are all the ``CONNECT`` host.  HTTP/1.1 only: ALPN offers nothing else, and
a client that starts HTTP/2 anyway is refused in words.  One request per
TLS connection, as on plain HTTP (``Connection: close``).
"""

from __future__ import annotations

import socket
import ssl
import threading

from sandbox.egress import netrules
from sandbox.errors import printable
from sandbox.egress.proxy import _Client, _Gone, _Refused

_H2_PREFACE = b"PRI * HTTP/2.0"
_MAX_SESSIONS = 256
# answered when the TLS handshake with the command's client fails; shown
# apart from refusals by the rules (sandbox.egress.session.summary)
HANDSHAKE_STATUS = 495


def _client_advice() -> str:
    """Said when a client refuses the run's certificate.  Made when needed:
    ``sandbox.resources`` (pathlib) costs 2 ms to import, before the first
    request of every inspecting run otherwise."""
    from sandbox import resources

    return ("the client does not trust the run's CA: it pins certificates or uses its "
            f"own CA list ({resources.doc('network.md')}, 'TLS inspection')")


class Inspector:
    """Shared by all connections of one proxy: the run's CA and upstream contexts."""

    def __init__(self, ca) -> None:
        self.ca = ca  # sandbox.egress.tlsca.RunCA
        self._upstream: dict[str, ssl.SSLContext] = {}
        # TLS sessions of upstream servers, to resume instead of a full
        # handshake on the next request (one request per connection)
        self._sessions: dict[tuple, ssl.SSLSession] = {}
        self._lock = threading.Lock()

    def session(self, key: tuple) -> ssl.SSLSession | None:
        with self._lock:
            return self._sessions.get(key)

    def keep_session(self, key: tuple, session: ssl.SSLSession | None) -> None:
        if session is None or not session.has_ticket:
            return
        with self._lock:
            if len(self._sessions) >= _MAX_SESSIONS and key not in self._sessions:
                self._sessions.pop(next(iter(self._sessions)))
            self._sessions[key] = session

    def upstream_context(self, cafile: str) -> ssl.SSLContext:
        """A verifying client context: the host's roots, or only ``cafile``."""
        with self._lock:
            ctx = self._upstream.get(cafile)
        if ctx is None:
            if cafile:
                ctx = ssl.create_default_context(cafile=cafile)
            else:  # the host's roots, read as handshakes need them (sandbox.egress.tlsroots)
                from sandbox.egress import tlsroots

                ctx = tlsroots.host_roots_context()
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_alpn_protocols(["http/1.1"])
            with self._lock:
                ctx = self._upstream.setdefault(cafile, ctx)
        return ctx

    def warm(self, rules: netrules.Rules) -> None:
        """Make what the first requests need before they come (the host's roots
        take milliseconds to load), in the proxy process while the command starts."""
        for rule in rules.allow:
            if rule.inspect:
                self.upstream_context(rule.upstream_ca)
                if not rule.host.startswith("*."):
                    self.ca.server_context(rule.host)

    def _client_context(self, name: str) -> ssl.SSLContext:
        ctx = self.ca.server_context(name)  # one per host, cached by the CA
        if ctx.sni_callback is None:
            def check_sni(tls, sni, _ctx) -> int | None:
                if _same_name(sni, name):
                    return None
                tls.sandbox_refused_sni = sni  # for the event, after the handshake fails
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            ctx.sni_callback = check_sni
        return ctx

    def serve(self, client: _Client, host, port: int) -> None:
        """End the client's TLS on ``client.sock`` and serve the request inside."""
        proxy = client.proxy
        name = str(host)
        client.sock.settimeout(client.limits.head_timeout)
        tls = self._client_context(name).wrap_socket(client.sock, server_side=True,
                                                     do_handshake_on_connect=False)
        proxy.untrack_and_close(client.sock)  # detached by the wrap: the fd is tls's now
        try:
            proxy.track(tls)
        except _Gone:
            tls.close()
            raise
        cafile = client.rule.upstream_ca if client.rule is not None else ""
        inner = _Inspected(proxy, tls, client.host or name, port, self, cafile)
        try:
            try:
                tls.do_handshake()
            except (ssl.SSLError, OSError) as e:
                sni = getattr(tls, "sandbox_refused_sni", None)
                if sni is not None:
                    proxy._record(403, f"the TLS server name {printable(sni, 80)!r} "
                                       f"is not the CONNECT host {name} (they must agree)",
                                  "CONNECT", name, port)
                else:
                    reason = getattr(e, "reason", None) or str(e) or type(e).__name__
                    proxy._record(HANDSHAKE_STATUS, f"TLS handshake with the client failed "
                                                    f"({reason}); {_client_advice()}",
                                  "CONNECT", name, port)
                inner.answered = True  # nothing can be said to this client in HTTP
                return
            inner.run()
        finally:
            inner.close()


def _same_name(sni: str | None, host: str) -> bool:
    if sni is None:  # clients send no server name for IP addresses
        return True
    try:
        return str(netrules.normalize_host(sni)) == host
    except netrules.HostError:
        return False


class _Inspected(_Client):
    """A request inside an inspected tunnel: https to the tunnel's host and port."""

    scheme = "https"
    default_port = 443

    def __init__(self, proxy, sock: ssl.SSLSocket, host_raw: str, port: int,
                 inspector: Inspector, cafile: str) -> None:
        super().__init__(proxy, sock)
        self.tunnel_host, self.tunnel_port = host_raw, port
        self.inspector = inspector
        self.cafile = cafile  # the inspecting rule's upstream_ca ("" = the host's roots)
        self._session_key: tuple = ()
        self._first = True

    def _tunnel(self, request, target: str) -> None:
        self.host, self.port = self.tunnel_host, self.tunnel_port
        raise _Refused(400, "CONNECT inside an inspected tunnel")

    def _target(self, target: str) -> tuple[str, int, str]:
        """The tunnel's authority and the request's path (origin form only)."""
        self.host, self.port = self.tunnel_host, self.tunnel_port
        if not target.startswith("/"):
            raise _Refused(400, "inside an inspected tunnel requests must be in origin form "
                                "(GET /path)")
        return self.tunnel_host, self.tunnel_port, target

    def _read_head(self):
        try:
            request = super()._read_head()
        except _Gone:
            request = None  # a TLS alert or a reset: the same story
        if request is None:
            # A client that checks a pinned key does so after the handshake
            # and then hangs up: say why, since it will only say "pin"
            self.proxy._record(HANDSHAKE_STATUS, "the client closed the TLS connection without "
                                                 f"a request; {_client_advice()}",
                               "CONNECT", self.tunnel_host, self.tunnel_port)
            self.answered = True
        return request

    def _recv_client(self, timeout: float) -> bytes:
        data = super()._recv_client(timeout)
        if self._first:
            self._first = False
            if len(data) >= 4 and data.startswith(_H2_PREFACE[:len(data)]):
                self.host, self.port, self.method = self.tunnel_host, self.tunnel_port, "PRI"
                raise _Refused(505, "HTTP/2 is not supported where the proxy inspects TLS "
                                    "(ALPN offers http/1.1 only); use HTTP/1.1")
        return data

    def _open_upstream(self, host, port: int) -> socket.socket:
        """The checked address, as ``_Client`` connects it, then TLS verified
        for the CONNECT host (its name as SNI and in the certificate)."""
        cafile = self.cafile
        try:
            ctx = self.inspector.upstream_context(cafile)
        except (OSError, ssl.SSLError) as e:
            raise _Refused(502, f"cannot load upstream_ca {cafile}: "
                                f"{getattr(e, 'strerror', None) or e}") from None
        raw = super()._open_upstream(host, port)
        name = str(host)
        # the session of the same name, port, address and trust: resuming it
        # skips the certificate exchange, which verified the same thing
        self._session_key = (name, port, raw.getpeername()[0], cafile)
        try:
            tls = ctx.wrap_socket(raw, server_hostname=name,
                                  session=self.inspector.session(self._session_key))
        except ssl.SSLCertVerificationError as e:
            self.upstream = None
            self.proxy.untrack_and_close(raw)
            where = f"the CA file {cafile}" if cafile else "the host's trusted roots"
            raise _Refused(502, f"upstream certificate of {name} not trusted "
                                f"({e.verify_message}; checked against {where})") from None
        except (ssl.SSLError, OSError) as e:
            self.upstream = None
            self.proxy.untrack_and_close(raw)
            raise _Refused(502, f"upstream TLS with {name} failed: "
                                f"{getattr(e, 'reason', None) or e}") from None
        self.proxy.untrack_and_close(raw)  # detached by the wrap
        self.proxy.track(tls)
        self.upstream = tls
        return tls

    def close(self) -> None:
        self._first = False  # the drain below is not a request's first bytes
        if self.upstream is not None and self.answered:
            try:  # a ticket arrives with the response (TLS 1.3): keep it
                self.inspector.keep_session(self._session_key, self.upstream.session)
            except (AttributeError, ValueError, OSError):
                pass
        # close_notify first, without waiting for the client's: a client
        # that reads to the end must not see a truncation
        try:
            self.sock.setblocking(False)
            self.sock.unwrap()
        except (ssl.SSLError, OSError, ValueError):
            pass
        super().close()
