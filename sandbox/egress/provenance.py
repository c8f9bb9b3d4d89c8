"""Token provenance: the egress proxy's credential step on each request it reads.

For a host with a ``[[network.credentials]]`` entry (sandbox.egress.credentials),
every credential a request carries must be the run's placeholder, in the
entry's header and form: another ``Authorization``, an API-key header, a
cookie the host did not set in this run, a credential-looking query
parameter or a well-known token format anywhere in the headers is somebody
else's credential, and the request is refused (``Refusal``) before the
proxy connects anywhere.  In the entry's scope the placeholder becomes the
real value; outside it the placeholder is dropped.  For every host, an
allow rule's ``strip_headers`` are removed and its ``refuse_headers``
refused.

Runs in the proxy process (``sandbox.egress.proxy``, plain HTTP now, inspected
HTTPS through the same per-request path).  No message holds a header's
value.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

from sandbox import envfilter
from sandbox.egress import netrules
from sandbox.egress.credentials import Credential

_MAX_COOKIES = 256  # per host and run: what a hostile origin can make the proxy hold


# Methods whose answer is the request itself (TRACE is on by default in
# Apache): the real value put in would come straight back to the command.
_ECHOED = frozenset({"TRACE", "TRACK"})


class Refusal(Exception):
    """Refuse the request with 403 and this reason (which never holds a value)."""


# Request headers that carry credentials by name (lower-case).  Names with
# these words in them are credentials too (``_credential_header``).
_CREDENTIAL_HEADERS = frozenset({
    "authorization", "cookie", "x-api-key", "api-key", "apikey", "x-apikey", "x-auth-token",
    "x-access-token", "private-token", "job-token", "x-goog-api-key", "x-amz-security-token",
    "authentication", "x-auth", "x-auth-key", "x-auth-email", "x-session-token",
    "ocp-apim-subscription-key", "x-functions-key", "x-figma-token", "x-shopify-access-token",
})
_CREDENTIAL_WORDS = ("auth", "token", "secret", "password", "passwd", "credential", "api-key",
                     "api_key", "apikey", "session", "signature")
# Names with those words that clients send on every request and that carry
# no credential (npm's session id is random per command).
_NOT_CREDENTIALS = frozenset({"idempotency-key", "sec-websocket-key", "npm-session",
                              "npm-auth-type"})
# Query parameters that carry credentials (lower-case, after decoding).
_CREDENTIAL_PARAMS = frozenset({
    "key", "api_key", "apikey", "api-key", "access_token", "token", "auth", "auth_token",
    "client_secret", "secret", "password", "passwd", "sig", "signature", "private_token",
    "id_token", "refresh_token", "session", "sessionid", "session_id", "jwt", "bearer",
    "x-amz-credential", "x-amz-signature", "x-amz-security-token", "x-goog-credential",
    "x-goog-signature", "code", "access_key", "secret_key", "subscription-key",
})


def _credential_header(name: str) -> bool:
    if name in _CREDENTIAL_HEADERS:
        return True
    if name in _NOT_CREDENTIALS or name == "proxy-authorization":  # the proxy's own, dropped
        return False
    return any(word in name for word in _CREDENTIAL_WORDS) or name.endswith(("-key", "_key"))


def _parameters(where: str, query: str) -> list[tuple[str, str]]:
    """Every (name, value) some origin could read from the path and query.

    A refusal must match each spelling an origin may read as a credential
    parameter: ``;`` separates query parameters too (Rack 2, older Java and
    Python stacks), ``;name=value`` in a path segment is a matrix parameter
    (JAX-RS, Spring), and names are read loosely (PHP turns ``api.key`` and
    ``api key`` into ``api_key``; PHP, Rails and ``qs`` read ``key[]`` and
    ``key[0]`` as ``key``).  Each name comes back in its plain and its loose
    spelling.
    """
    pairs = parse_qsl(query.replace(";", "&"), keep_blank_values=True)
    for segment in where.split("/"):
        pairs += parse_qsl("&".join(segment.split(";")[1:]), keep_blank_values=True)
    out = []
    for name, value in pairs:
        loose = name.split("[", 1)[0].strip(" \t\0").replace(".", "_").replace(" ", "_")
        out += [(name, value), (loose, value)]
    return out


def _credential_param(name: str) -> bool:
    name = name.lower()
    return (name in _CREDENTIAL_PARAMS or name.endswith(("_token", "-token", "_key", "-key",
                                                         "_secret", "apikey"))
            or "password" in name or "session" in name)  # ;jsessionid=, PHPSESSID


@dataclass(frozen=True, slots=True)
class _Live:
    cred: Credential
    placeholder: str
    value: str


class Guard:
    """In the proxy process: the credential and header step of every
    request the proxy can read.  Built from the plan and the Vault's pairs."""

    def __init__(self, plan: dict, pairs: list[tuple[str, str]]) -> None:
        entries = [Credential.from_tuple(t) for t in plan.get("credentials", ())]
        self.by_host: dict[str, list[_Live]] = {}
        for cred, (placeholder, value) in zip(entries, pairs):
            self.by_host.setdefault(cred.host, []).append(_Live(cred, placeholder, value))
        self.hosts = frozenset(c.host for c in entries)  # value or not: provenance holds
        # cookies each credential host set in this run: the only ones it may get back
        self.cookies: dict[str, set[tuple[str, str]]] = {h: set() for h in self.hosts}
        self._lock = threading.Lock()
        self.headers = [(netrules._host_matcher(netrules.validate_pattern(h)), tuple(ports),
                         frozenset(strip), frozenset(refuse))
                        for h, ports, strip, refuse in plan.get("headers", ())]

    def covers(self, host) -> bool:
        return isinstance(host, str) and host in self.hosts

    def scoped(self, host) -> bool:
        """Does a credential of ``host`` go only to some methods or paths?  Then
        a header that makes the origin serve another method or path (the
        proxy's override list) would carry the real value out of scope."""
        return any(live.cred.methods or live.cred.paths
                   for live in self.by_host.get(host if isinstance(host, str) else "", ()))

    def incoming(self, host, headers) -> None:
        """Note the cookies a credential host sets (``Set-Cookie`` of a response
        the proxy passes on): sent back, they are the session's own, not foreign.
        Clients such as httpx keep a cookie jar, and CDNs in front of APIs set
        cookies on every answer."""
        if not self.covers(host):
            return
        with self._lock:
            jar = self.cookies[host]
            for name, value in headers:
                if name.lower() == b"set-cookie" and len(jar) < _MAX_COOKIES:
                    pair = value.decode("latin-1").split(";", 1)[0]
                    key, sep, val = pair.partition("=")
                    if sep:
                        jar.add((key.strip(), val.strip()))

    def outgoing(self, host, port: int, method: str, path: str,
                 headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The headers to send upstream, or ``Refusal``.  ``host`` is normalised."""
        strip: set[str] = set()
        for matches, ports, stripped, refused in self.headers:
            if matches(host) and port in ports:
                strip |= stripped
                hit = next((n for n, _ in headers if n.decode("latin-1").lower() in refused), None)
                if hit is not None:
                    raise Refusal(f"header {hit.decode('latin-1').lower()} is refused by a rule "
                                  f"for {host}")
        out = [(n, v) for n, v in headers if n.decode("latin-1").lower() not in strip]
        if not self.covers(host):
            return out
        return self._credentials(host, method, path, out)

    def _credentials(self, host: str, method: str, path: str,
                     headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        lives = self.by_host.get(host, [])
        named = {live.cred.header for live in lives}
        out = []
        for raw_name, raw_value in headers:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            if name == "cookie":
                if not self._own_cookies(host, value):
                    raise Refusal(f"foreign credential: a cookie {host} did not set in this run")
                out.append((raw_name, raw_value))
                continue
            if not (_credential_header(name) or name in named):
                if envfilter.secret_value(value):  # a token in a well-known format
                    raise Refusal(f"foreign credential: the {name} header holds a token, and "
                                  f"{host} takes only the session's")
                out.append((raw_name, raw_value))
                continue
            live = next((live for live in lives if live.cred.header == name
                         and _unwrap(live, value) is not None), None)
            if live is None:
                raise Refusal(f"foreign credential: the {name} header is not the session's "
                              f"credential for {host}")
            if live.value and method.upper() not in _ECHOED and live.cred.in_scope(method, path):
                out.append((raw_name, _unwrap(live, value).encode("latin-1")))
            # out of scope (or no value on the host): the placeholder is
            # dropped and the request goes without a credential
        where, _, query = path.partition("?")
        # /bot<TOKEN>/ style APIs; as the origin reads it (percent-decoded), and
        # also cut at dots (/keys/<TOKEN>.json; a JWT is whole in the first view)
        plain = unquote(where).replace("/", " ")
        if envfilter.secret_value(plain) or envfilter.secret_value(plain.replace(".", " ")):
            raise Refusal(f"foreign credential: the path holds a token, and {host} takes "
                          "only the session's")
        for name, value in _parameters(where, query):
            if _credential_param(name) or envfilter.secret_value(value) \
                    or envfilter.secret_value(name):  # ?<TOKEN> with no value
                raise Refusal(f"foreign credential: the query parameter "
                              f"{netrules._shown(name, 40)} looks like a credential, and "
                              f"{host} takes only the session's")
        return out


    def _own_cookies(self, host: str, value: str) -> bool:
        pairs = [p.strip().partition("=") for p in value.split(";") if p.strip()]
        with self._lock:
            jar = self.cookies.get(host, set())
            return all(sep and (k.strip(), v.strip()) in jar for k, sep, v in pairs)


def _unwrap(live: _Live, value: str) -> str | None:
    """``value`` with the real credential in place of the placeholder, when
    ``value`` is exactly the placeholder in the entry's form; else None."""
    scheme, _, rest = value.strip().partition(" ")
    want = live.cred.scheme
    if want.lower() == "basic":
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(rest.strip(), validate=True).decode(
                "latin-1").partition(":")
        except ValueError:
            return None
        if not sep or live.placeholder not in (user, password):
            return None
        # The other half must not be a credential of its own: it would reach
        # the origin next to the real value, and some origins read the user
        # half as the token (GitHub takes "TOKEN:x-oauth-basic").
        if password == live.placeholder and envfilter.secret_value(user):
            return None
        if user == live.placeholder and password not in ("", "x-oauth-basic", live.placeholder):
            return None
        if password == live.placeholder:
            pair = f"{user}:{live.value}"
        else:
            pair = f"{live.value}:{password}"
        return f"{scheme} {base64.b64encode(pair.encode('latin-1')).decode('ascii')}"
    if want:
        if scheme.lower() != want.lower() or rest.strip() != live.placeholder:
            return None
        return f"{scheme} {live.value}"
    return live.value if value.strip() == live.placeholder else None
