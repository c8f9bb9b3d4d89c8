"""Egress rules for the proxy: which requests may leave the sandbox.

Pure logic, no I/O.  The proxy hands over what a request *claims* (method,
host, port, path) and gets a ``Decision``; before it connects it asks
``address_refusal`` about the address it is about to use.

The one idea behind every check here: the host and path that are *checked*
must be the host and path that are *used*.  So anything another parser (a
resolver, a URL library, a web server) could read differently from us is
refused rather than interpreted: user info, ports, stray delimiters, odd
spellings of IP addresses that we cannot map to one canonical address,
look-alike Unicode, encoded slashes, dot segments.  A refusal costs the
command one request; a disagreement between parsers costs the policy.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Sequence

from sandbox.errors import printable
from sandbox.policy import EgressRule

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class RuleError(ValueError):
    """A bad profile rule.

    ``key`` is the sub-key at fault ("host", "ports", "methods", "paths",
    "hosts", or "" for the rule as a whole), ``str(err)`` says what is wrong
    and ``hint`` how to fix it.
    """

    def __init__(self, key: str, message: str, hint: str = ""):
        super().__init__(message)
        self.key = key
        self.message = message
        self.hint = hint


class HostError(ValueError):
    """A request's destination host is not acceptable (a short reason in words)."""


class PathError(ValueError):
    """A request's path is not acceptable (a short reason in words)."""


def _shown(value: object, limit: int = 80) -> str:
    """Something from a request, safe and short enough to put in a message."""
    if isinstance(value, str):
        return printable(value, limit)
    try:
        text = repr(value)
    except Exception:  # a huge int, or a hostile __repr__: still never crash
        text = f"<{type(value).__name__}>"
    return printable(text, limit)


# -- host names and IP literals ------------------------------------------------------

_FULLWIDTH_DOTS = "\u3002\uff0e\uff61"  # the idna codec splits on these too
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_IPV6_TEXT = re.compile(r"[0-9A-Fa-f:.]+")
# WHATWG URL rule: a name whose last label is a number is an IPv4 address or
# nothing.  Otherwise "127.1" could be a name to us and 127.0.0.1 to libc.
_ENDS_IN_NUMBER = re.compile(r"[0-9]+|0x[0-9a-f]*")
_IPV4_PART = re.compile(r"0x[0-9a-f]+|0[0-7]*|[1-9][0-9]*")  # hex, octal, decimal (inet_aton)


def normalize_host(raw: str) -> str | Address:
    """The one canonical form of a request's host, or ``HostError``.

    Names come back as lowercase ASCII without a trailing dot, international
    labels as punycode (IDNA 2003, Python's ``idna`` codec).  IP literals in
    any spelling inet_aton or a URL parser would accept ("2130706433",
    "0x7f.1", "[::ffff:127.0.0.1]") come back as one ``ipaddress`` object,
    IPv4-mapped IPv6 as the IPv4 address, so a rule cannot be dodged by
    spelling its address differently.
    """
    if not isinstance(raw, str):
        raise HostError("the host name is not text")
    if not raw:
        raise HostError("the host name is empty")
    if "\x00" in raw:
        raise HostError("the host name contains a NUL character")
    if any(ord(c) < 0x20 or c == "\x7f" for c in raw):
        raise HostError("the host name contains a control character")
    if any(c.isspace() for c in raw):
        raise HostError("the host name contains whitespace")
    if raw.startswith("[") or raw.endswith("]"):
        if not (raw.startswith("[") and raw.endswith("]")):
            raise HostError("the host name has an unmatched bracket")
        return _ipv6(raw[1:-1])
    if ":" in raw:
        if raw.count(":") >= 2 and _IPV6_TEXT.fullmatch(raw.partition("%")[0]):
            return _ipv6(raw)
        raise HostError("the host name contains ':' (the port is given separately)")
    for ch in "@/\\#?%*":
        if ch in raw:
            raise HostError(f"the host name contains {ch!r}")
    if any(dot in raw for dot in _FULLWIDTH_DOTS):
        raise HostError("the host name contains a full-width dot (write '.')")
    name = raw[:-1] if raw.endswith(".") else raw  # one trailing dot: the DNS root
    if not name:
        raise HostError("the host name is only a dot")
    if name.endswith("."):
        raise HostError("the host name ends in more than one dot")
    labels = name.split(".")
    if "" in labels:
        raise HostError("the host name has an empty label ('..' or a leading dot)")
    labels = [_label(label) for label in labels]
    if _ENDS_IN_NUMBER.fullmatch(labels[-1]):
        return _ipv4(labels)
    name = ".".join(labels)
    if len(name) > 253:
        raise HostError("the host name is longer than 253 characters")
    return name


def _label(label: str) -> str:
    if not label.isascii():
        try:
            ace = label.encode("idna").decode("ascii")
        except UnicodeError:
            raise HostError("the host name is not a valid international name") from None
        # Nameprep folds some characters to plain ASCII ("ｅｘａｍｐｌｅ" -> "example",
        # "straße" -> "strasse", soft hyphens vanish).  Such a name is a disguise
        # of an ASCII one, and IDNA 2008 reads some of them differently: refuse.
        if not ace.startswith("xn--"):
            raise HostError("the host name spells an ASCII label with look-alike characters")
        label = ace
    label = label.lower()
    if len(label) > 63:
        raise HostError("a label of the host name is longer than 63 characters")
    if "_" in label:
        raise HostError("the host name contains '_'")
    if label.startswith("-") or label.endswith("-"):
        raise HostError("a label of the host name starts or ends with '-'")
    for ch in label:
        if ch not in _LABEL_CHARS:
            raise HostError(f"the host name contains {_shown(ch)!r}")
    return label


def _ipv4(parts: list[str]) -> ipaddress.IPv4Address:
    """inet_aton: 1 to 4 parts, each decimal, 0-octal or 0x-hex; the last fills the rest."""
    if len(parts) > 4:
        raise HostError("the host name ends in a number but has more than four parts")
    numbers = []
    for part in parts:
        if not _IPV4_PART.fullmatch(part):
            raise HostError("the host name ends in a number but is not an IPv4 address")
        if part.startswith("0x"):
            numbers.append(int(part[2:], 16))
        elif part.startswith("0"):
            numbers.append(int(part, 8))
        else:
            numbers.append(int(part))
    last = numbers.pop()
    if any(n > 255 for n in numbers) or last >= 256 ** (4 - len(numbers)):
        raise HostError("the IPv4 address is out of range")
    value = last + sum(n << (8 * (3 - i)) for i, n in enumerate(numbers))
    return ipaddress.IPv4Address(value)


def _ipv6(text: str) -> Address:
    if "%" in text:
        # A zone names an interface of *this* machine: never a destination to allow.
        raise HostError("the IPv6 address has a zone id ('%...')")
    if not _IPV6_TEXT.fullmatch(text):
        raise HostError("the host name is not a valid IPv6 address")
    try:
        addr = ipaddress.IPv6Address(text)
    except ValueError:
        raise HostError("the host name is not a valid IPv6 address") from None
    return addr.ipv4_mapped or addr


def _collapse(addr: Address) -> Address:
    """IPv4-mapped IPv6 is the IPv4 address: one address, one spelling."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return addr.ipv4_mapped
    return addr


# -- validating profile values ---------------------------------------------------------

_HOST_HINT = "write a name like 'pypi.org', a pattern like '*.pythonhosted.org', or an IP address"
# Second-level labels under which registries sell names ("*.co.uk"): a pattern
# over one of these would allow a whole country's companies.
_PUBLIC_SECOND_LEVEL = frozenset(
    "co com net org gov edu ac or ne go mil ltd plc sch nic".split())


def _rule_host(raw: str, shown: str) -> str | Address:
    try:
        return normalize_host(raw)
    except HostError as err:
        raise RuleError("host", f"bad host {shown!r}: {err}", _HOST_HINT) from None


def validate_pattern(raw: str) -> str:
    """A rule's ``host``, normalised: exact name, IP literal or ``*.suffix``.

    ``*.suffix`` matches names *under* the suffix only, never the suffix
    itself.  It is refused when the suffix is a single label ("*.com") or
    looks like a public registry suffix: two labels, the last of two letters
    (a country) and the first one of co, com, net, org, gov, edu, ac, or, ne,
    go, mil, ltd, plc, sch, nic ("*.co.uk", "*.com.au", "*.ac.jp").  The
    check is a heuristic, not the Public Suffix List; it catches the common
    mistakes.  IP literals come back canonical (``str(ipaddress)``).
    """
    if not isinstance(raw, str):
        raise RuleError("host", f"the host must be a string, not {type(raw).__name__}", _HOST_HINT)
    shown = _shown(raw)
    if "*" not in raw:
        host = _rule_host(raw, shown)
        return host if isinstance(host, str) else str(host)
    if raw == "*":
        raise RuleError("host", "'*' would allow every host", "name the hosts the command needs")
    if not raw.startswith("*.") or raw.count("*") != 1:
        raise RuleError("host", f"{shown!r}: '*' may only be the whole first label",
                        "write '*.example.com' to allow every name under example.com")
    if raw == "*.":
        raise RuleError("host", "'*.' names no domain", "write '*.example.com'")
    suffix = _rule_host(raw[2:], shown)
    if not isinstance(suffix, str):
        raise RuleError("host", f"{shown!r}: a wildcard cannot cover an IP address",
                        "name each address in its own rule")
    labels = suffix.split(".")
    if len(labels) == 1:
        raise RuleError("host", f"{shown!r} would allow a whole top-level domain",
                        "write a pattern under a domain you trust, like '*.example.com'")
    if (len(labels) == 2 and len(labels[1]) == 2 and labels[1].isalpha()
            and labels[0] in _PUBLIC_SECOND_LEVEL):
        raise RuleError("host", f"{shown!r} would allow a whole public suffix",
                        "write a pattern under a domain you trust, like '*.example.co.uk'")
    return "*." + suffix


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}")  # RFC 9110 tchar


def validate_method(raw: str) -> str:
    """An HTTP method name (RFC 9110 token, 1 to 32 characters), uppercased."""
    hint = "use method names like GET, HEAD or POST"
    if not isinstance(raw, str):
        raise RuleError("methods", f"a method must be a string, not {type(raw).__name__}", hint)
    if not _TOKEN.fullmatch(raw):
        raise RuleError("methods", f"{_shown(raw)!r} is not an HTTP method name", hint)
    method = raw.upper()
    if method == "CONNECT":
        # A rule listing methods can never allow a tunnel, so this would
        # quietly allow nothing.
        raise RuleError("methods", "CONNECT cannot be listed: it opens a TLS tunnel, "
                        "inside which methods cannot be checked",
                        "leave methods out of the rule to allow HTTPS to the host")
    return method


# A path segment: literal characters and [...] classes (optionally [!...]).
_GLOB_SEGMENT = re.compile(r"(?:[^\[\]]|\[!?[^\[\]]+\])*")


def validate_path(raw: str) -> str:
    """A rule's path, returned unchanged.

    Written decoded, as ``normalize_path`` leaves requests: so no '%'.  No
    query ('?'), fragment, backslash, '.'/'..' segment or '//': requests with
    those are refused, so such a rule could never match.  Without '*' or '['
    the path is a prefix at a segment boundary; with them it is a glob per
    segment ('*' never crosses '/').  Non-ASCII characters are refused: on
    the wire they are percent-encoded, so they could never match literally.
    """
    def bad(message: str, hint: str = "write a path like '/simple/' or '/packages/*/'"):
        return RuleError("paths", message, hint)

    if not isinstance(raw, str):
        raise bad(f"a path must be a string, not {type(raw).__name__}")
    shown = _shown(raw)
    if not raw.startswith("/"):
        raise bad(f"{shown!r} does not start with '/'")
    if not raw.isascii():
        raise bad(f"{shown!r} contains a non-ASCII character",
                  "match that segment with '*', e.g. '/files/*'")
    if any(ord(c) <= 0x20 or c == "\x7f" for c in raw):
        raise bad(f"{shown!r} contains a control character or a space")
    for ch, why in (("?", "a query (rules never look at it)"), ("#", "a fragment"),
                    ("%", "a percent-encoding (write the path decoded)"),
                    ("\\", "a backslash")):
        if ch in raw:
            raise bad(f"{shown!r} contains {ch!r}: {why}")
    if "//" in raw:
        raise bad(f"{shown!r} contains '//'")
    segments = raw.split("/")[1:]
    if any(s in (".", "..") for s in segments):
        raise bad(f"{shown!r} contains a '.' or '..' segment")
    if not all(_GLOB_SEGMENT.fullmatch(s) for s in segments):
        raise bad(f"{shown!r} has an unmatched '[' or ']'",
                  "a '[' starts a class like [0-9] and needs its ']'")
    return raw


def validate_header_name(raw: str, key: str = "strip_headers") -> str:
    """A request header name (RFC 9110 token), lower-cased."""
    hint = "write header names like 'x-forwarded-for'"
    if not isinstance(raw, str) or not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}", raw):
        raise RuleError(key, f"{_shown(raw)!r} is not a header name", hint)
    return raw.lower()


def validate_port(raw: int) -> int:
    """A port number, 1 to 65535 (an int, not a bool)."""
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise RuleError("ports", f"a port must be a whole number, not {_shown(raw)}",
                        "write ports = [443]")
    if not 1 <= raw <= 65535:
        raise RuleError("ports", f"port {_shown(raw)} is out of range", "ports go from 1 to 65535")
    return raw


_RULE_KEYS = ("host", "ports", "methods", "paths")
_TLS_KEYS = ("inspect", "upstream_ca")  # allow rules only (sandbox.egress.tlsinspect)
# Allow rules only: request headers the proxy strips or refuses for the
# rule's host (sandbox.egress.credentials).
_HEADER_KEYS = ("strip_headers", "refuse_headers")
_ALLOW_ONLY_KEYS = _TLS_KEYS + _HEADER_KEYS


def _list(table: dict, key: str, check, what: str, example: str, default_words: str,
          default: tuple) -> tuple:
    if key not in table:
        return default
    value = table[key]
    if not isinstance(value, (list, tuple)):
        raise RuleError(key, f"{key} must be a list of {what}", f"write {key} = {example}")
    if not value:
        raise RuleError(key, f"{key} is an empty list", f"leave {key} out to mean {default_words}")
    return tuple(dict.fromkeys(check(item) for item in value))  # no duplicates, order kept


def parse_rule(table: dict, source: str, *, deny: bool = False) -> EgressRule:
    """One ``[[network.allow]]`` or ``[[network.deny]]`` table as an ``EgressRule``.

    Without ``ports`` an allow rule means port 443 and a deny rule every
    port; for deny rules ``ports == ()`` means every port.  Without
    ``methods``/``paths`` any method/path.
    """
    if not isinstance(table, dict):
        raise RuleError("", "a rule must be a table", 'write { host = "pypi.org" }')
    for key in table:
        if key in _ALLOW_ONLY_KEYS and deny:
            raise RuleError(str(key), f"{key} belongs on [[network.allow]] rules",
                            f"remove {key} from this [[network.deny]] rule; a deny rule with "
                            "methods or paths is checked inside every inspected tunnel")
        if key not in _RULE_KEYS + _ALLOW_ONLY_KEYS:
            raise RuleError(str(key), f"unknown key {_shown(str(key))!r}",
                            "a rule takes the keys host, ports, methods and paths"
                            + ("" if deny else ", inspect, upstream_ca, strip_headers and "
                               "refuse_headers"))
    for key in _HEADER_KEYS:
        _list(table, key, lambda name, key=key: validate_header_name(name, key),
              "header names", '["x-forwarded-for"]', "none", ())
    if "host" not in table:
        raise RuleError("host", "the rule has no host", 'write host = "pypi.org"')
    inspect, upstream_ca = _tls_keys(table)
    return EgressRule(
        host=validate_pattern(table["host"]),
        ports=_list(table, "ports", validate_port, "whole numbers", "[443]",
                    "every port" if deny else "the default, port 443",
                    () if deny else (443,)),
        methods=_list(table, "methods", validate_method, "strings", '["GET", "HEAD"]',
                      "any method", ()),
        paths=_list(table, "paths", validate_path, "strings", '["/simple/"]', "any path", ()),
        source=source,
        inspect=inspect,
        upstream_ca=upstream_ca,
    )


def _tls_keys(table: dict) -> tuple[bool, str]:
    """``inspect`` (a boolean) and ``upstream_ca`` (an absolute path, only with inspect)."""
    inspect = table.get("inspect", False)
    if not isinstance(inspect, bool):
        raise RuleError("inspect", f"inspect must be true or false, not {_shown(inspect)}",
                        "write inspect = true to check methods and paths inside HTTPS")
    ca = table.get("upstream_ca", "")
    if "upstream_ca" not in table:
        return inspect, ""
    hint = 'write upstream_ca = "/etc/ssl/private-registry-ca.pem" (an absolute path)'
    if not inspect:
        raise RuleError("upstream_ca", "upstream_ca is used only when the proxy inspects TLS",
                        "add inspect = true to the rule, or remove upstream_ca (without "
                        "inspection the command's own client verifies the server)")
    if not isinstance(ca, str) or not ca:
        raise RuleError("upstream_ca", f"upstream_ca must be a file path, not {_shown(ca)}", hint)
    if not ca.startswith("/") or "\x00" in ca or any(ord(c) < 0x20 for c in ca):
        raise RuleError("upstream_ca", f"upstream_ca {_shown(ca)!r} is not an absolute path", hint)
    return inspect, ca


def parse_hosts(table: dict) -> tuple[tuple[str, str], ...]:
    """``network.hosts``: exact name -> one IP address, like ``curl --resolve``.

    Returns sorted (name, canonical address) pairs.
    """
    hint = 'write hosts = { "pypi.test" = "127.0.0.1" }'
    if not isinstance(table, dict):
        raise RuleError("hosts", "network.hosts must be a table of name = address", hint)
    out: dict[str, str] = {}
    for name, addr in table.items():
        if not isinstance(name, str) or "*" in name:
            raise RuleError("hosts", f"{_shown(name)!r} is not an exact host name",
                            "network.hosts takes exact names, not patterns")
        try:
            host = normalize_host(name)
        except HostError as err:
            raise RuleError("hosts", f"bad name {_shown(name)!r}: {err}", hint) from None
        if not isinstance(host, str):
            raise RuleError("hosts", f"{_shown(name)!r} is an address, not a name", hint)
        if host in out:
            raise RuleError("hosts", f"{host} is named twice", "keep one entry per name")
        try:
            ip = normalize_host(addr) if isinstance(addr, str) else None
        except HostError:
            ip = None
        if ip is None or isinstance(ip, str):
            raise RuleError("hosts", f"the address for {host}, {_shown(addr)}, is not an IP address",
                            hint)
        out[host] = str(ip)
    return tuple(sorted(out.items()))


# -- request paths -----------------------------------------------------------------------

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")
_ENCODED_NAMES = {"/": "slash", "\\": "backslash", "\x00": "NUL"}


def normalize_path(target_path: str) -> str:
    """The path of a request target (``/path?query``), normalised, or ``PathError``.

    The query is dropped: rules never look at it.  Percent-encoded unreserved
    characters are decoded, other encodings uppercased, so "/%7Euser" and
    "/~user" are one path.  Anything a server could resolve to a different
    path than the one checked is refused: '.'/'..' segments (also encoded,
    and Tomcat-style "..;"), '//', backslashes, encoded '/', '\\' and NUL.
    """
    if not isinstance(target_path, str):
        raise PathError("the path is not text")
    if not target_path.isascii():
        raise PathError("the path contains a non-ASCII character (it must be percent-encoded)")
    if "\x00" in target_path:
        raise PathError("the path contains a NUL character")
    if any(ord(c) <= 0x20 or c == "\x7f" for c in target_path):
        raise PathError("the path contains a control character or a space")
    if "#" in target_path:
        raise PathError("the path contains '#'")
    path = target_path.partition("?")[0]
    if not path.startswith("/"):
        raise PathError("the path does not start with '/'")
    if "\\" in path:
        raise PathError("the path contains a backslash")
    pieces = path.split("%")
    out = [pieces[0]]
    for piece in pieces[1:]:  # each piece starts with the two hex digits of one '%XX'
        code = piece[:2]
        if len(code) < 2 or not _HEX.issuperset(code):
            raise PathError("the path has a '%' not followed by two hex digits")
        ch = chr(int(code, 16))
        if ch in _ENCODED_NAMES:
            raise PathError(f"the path contains an encoded {_ENCODED_NAMES[ch]} (%{code.upper()})")
        out.append(ch if ch in _UNRESERVED else "%" + code.upper())
        out.append(piece[2:])
    path = "".join(out)
    if "//" in path:
        raise PathError("the path contains '//'")
    for segment in path.split("/"):
        if segment.partition(";")[0] in (".", ".."):
            raise PathError("the path contains a '.' or '..' segment")
    return path


def _path_matches(pattern: str, path: str) -> bool:
    if "*" in pattern or "[" in pattern:
        # Per segment, so '*' never crosses '/'.
        want, have = pattern.split("/"), path.split("/")
        return len(want) == len(have) and all(map(fnmatchcase, have, want))
    if pattern.endswith("/"):
        return path.startswith(pattern)
    return path == pattern or path.startswith(pattern + "/")


# -- deciding ---------------------------------------------------------------------------

def describe(rule: EgressRule) -> str:
    """One line for messages: "pypi.org:443 GET /simple/" ("*" = every port)."""
    host = f"[{rule.host}]" if ":" in rule.host else rule.host
    words = [f"{host}:{','.join(map(str, rule.ports)) or '*'}"]
    if rule.methods:
        words.append(",".join(rule.methods))
    words.extend(rule.paths)
    if rule.inspect:
        words.append("(TLS inspected" + (f", upstream CA {rule.upstream_ca})"
                                         if rule.upstream_ca else ")"))
    return " ".join(words)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str  # plain words a model can act on
    host: str  # normalised host (str of an IP), or a printable form of a bad one
    rule: EgressRule | None  # the rule that decided it, if any


def _host_matcher(pattern: str):
    """host -> bool for a normalised pattern.  Names never match IPs, nor IPs names."""
    if pattern.startswith("*."):
        suffix = pattern[1:]  # ".x.org": subdomains only, never x.org itself
        return lambda host: isinstance(host, str) and host.endswith(suffix)
    try:
        addr: Address | str = ipaddress.ip_address(pattern)
    except ValueError:
        addr = pattern
    return lambda host: host == addr  # str == IPv4Address is False, as is v4 == v6


def _scope_ok(rule: EgressRule, method: str, path: str) -> bool:
    return ((not rule.methods or method in rule.methods)
            and (not rule.paths or any(_path_matches(p, path) for p in rule.paths)))


def _loose_path(path: str) -> str:
    """``path`` as the most lenient origin could read it: case folded, and
    ``;parameters`` dropped from every segment (Tomcat, Jetty and Spring
    strip them: ``/admin;x/y`` is ``/admin/y`` there)."""
    return "/".join(seg.split(";", 1)[0] for seg in path.lower().split("/"))


def _deny_scope_hits(rule: EgressRule, method: str, path: str) -> bool:
    """A deny rule hits every spelling some origin could read as what it names.

    Allow rules stay exact (``_scope_ok``); a deny rule must fail closed:
    ``post`` and ``Post`` are POST to frameworks that fold case, and
    ``/ADMIN/x`` or ``/admin;x/y`` is ``/admin`` to case-insensitive or
    parameter-stripping origins.
    """
    if rule.methods and method.upper() not in rule.methods:
        return False
    if not rule.paths:
        return True
    loose = _loose_path(path)
    return any(_path_matches(p, path) or _path_matches(_loose_path(p), loose) for p in rule.paths)


# Non-public IPv4 networks, first match wins.  Spelled out rather than taken
# from ipaddress.is_private/is_global, whose meaning changed between Python
# releases: what the sandbox refuses must not depend on the interpreter.
_V4_BLOCKS = tuple((ipaddress.IPv4Network(net), words) for net, words in (
    ("0.0.0.0/32", "unspecified"),
    ("0.0.0.0/8", "'this network'"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT space"),  # and metadata 100.100.100.200
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),  # cloud metadata 169.254.169.254
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved for IETF protocols"),
    ("192.0.2.0/24", "for documentation"),
    ("192.88.99.0/24", "the old 6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "for benchmarking"),
    ("198.51.100.0/24", "for documentation"),
    ("203.0.113.0/24", "for documentation"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
))
_V6_BLOCKS = tuple((ipaddress.IPv6Network(net), words) for net, words in (
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "local-use NAT64"),  # operator-chosen layout: no fixed place to look
    ("100::/64", "discard-only"),
    ("2001::/32", "Teredo"),  # tunnels to whatever the embedded server says: refuse outright
    ("2001::/23", "reserved for IETF protocols"),
    ("2001:db8::/32", "for documentation"),
    ("3fff::/20", "for documentation"),
    ("fc00::/7", "private unique-local"),  # cloud metadata fd00:ec2::254 too
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
))
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
# IPv6 forms that carry an IPv4 address: (network, shift of the 32 bits, name).
_V6_EMBEDDING = tuple((ipaddress.IPv6Network(net), shift, name) for net, shift, name in (
    ("::ffff:0:0/96", 0, "IPv4-mapped"),
    ("::/96", 0, "IPv4-compatible"),
    ("64:ff9b::/96", 0, "NAT64"),
    ("2002::/16", 80, "6to4"),
))


def _not_public(addr: Address) -> str | None:
    """Why ``addr`` is not a public address ("is private (10.0.0.0/8)"), or None."""
    if isinstance(addr, ipaddress.IPv4Address):
        for net, words in _V4_BLOCKS:
            if addr in net:
                return f"is {words} ({net})"
        return None
    for net, words in _V6_BLOCKS[:2]:  # :: and ::1 sit inside ::/96; name them first
        if addr in net:
            return f"is {words} ({net})"
    for net, shift, name in _V6_EMBEDDING:
        if addr in net:
            inner = ipaddress.IPv4Address((int(addr) >> shift) & 0xFFFFFFFF)
            why = _not_public(inner)
            return f"embeds {inner} ({name}), which {why}" if why else None
    for net, words in _V6_BLOCKS[2:]:
        if addr in net:
            return f"is {words} ({net})"
    if addr not in _GLOBAL_UNICAST:
        return f"is outside global unicast ({_GLOBAL_UNICAST})"
    return None


class Rules:
    """The egress policy: allow rules, deny rules (which win), pinned names.

    Rule hosts are normalised again here (``validate_pattern``; a bad one
    raises ``RuleError``) and methods uppercased, so directly built
    ``EgressRule``s match the same way parsed ones do.  Empty ``ports``
    means every port on a deny rule and no port on an allow rule (parse_rule
    never makes one): where a rule is unclear, it errs towards refusing.
    """

    def __init__(self, allow: Sequence[EgressRule], deny: Sequence[EgressRule] = (),
                 hosts: Sequence[tuple[str, str]] = ()):
        def normalised(rule: EgressRule) -> EgressRule:
            return replace(rule, host=validate_pattern(rule.host),
                           methods=tuple(m.upper() for m in rule.methods))

        self.allow = tuple(normalised(r) for r in allow)
        self.deny = tuple(normalised(r) for r in deny)
        self._allow = [(r, _host_matcher(r.host)) for r in self.allow]
        self._deny = [(r, _host_matcher(r.host)) for r in self.deny]
        self._pins: dict[str, Address] = {}
        for name, addr in hosts:
            self._pins[normalize_host(name)] = _collapse(ipaddress.ip_address(addr))

    def check(self, method: str, host: str, port: int, path: str | None) -> Decision:
        """May this request go out?  ``path is None`` means a CONNECT tunnel.

        Never raises: anything malformed is a refusal with its reason.
        """
        try:
            name = normalize_host(host)
        except HostError as err:
            return Decision(False, f"bad host: {err}", _shown(host, 253), None)
        shown = str(name)

        def refuse(reason: str, rule: EgressRule | None = None) -> Decision:
            return Decision(False, reason, shown, rule)

        def allow(rule: EgressRule) -> Decision:
            return Decision(True, f"allowed by a [[network.allow]] rule ({rule.source or describe(rule)})",
                            shown, rule)

        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            return refuse(f"bad port: {_shown(port)} is not a port number (1-65535)")
        if not isinstance(method, str) or not _TOKEN.fullmatch(method):
            return refuse(f"bad method: {_shown(method)} is not an HTTP method")
        # Methods are case-sensitive (RFC 9110): "get" is not GET, and the
        # proxy forwards the method as written, so allow rules match it as
        # written; deny rules match every case (see _deny_scope_hits).
        tunnel = path is None
        if tunnel != (method == "CONNECT"):
            return refuse("bad method: only CONNECT opens a tunnel, and it takes no path")
        if not tunnel:
            try:
                path = normalize_path(path)
            except PathError as err:
                return refuse(f"bad path: {err}")

        # An inspected tunnel (some allow rule for this host and port says
        # inspect = true): the proxy ends its TLS and checks every request
        # inside it as plain HTTP, so rules with methods or paths are
        # decided there, request by request.
        inspected = tunnel and self.inspected(name, port) is not None
        # Deny first.  Inside a blind tunnel methods and paths are invisible,
        # so a deny rule limited to some of them refuses the whole tunnel.
        for rule, matches in self._deny:
            if (matches(name) and (not rule.ports or port in rule.ports)
                    and (not (tunnel and inspected and rule.scoped()))
                    and (tunnel or _deny_scope_hits(rule, method, path))):
                return refuse(f"denied by a [[network.deny]] rule ({rule.source or describe(rule)})",
                              rule)

        rules = [r for r, matches in self._allow if matches(name)]
        if not rules:
            return refuse("host not allowed")
        rules = [r for r in rules if port in r.ports]
        if not rules:
            return refuse(f"port {port} not allowed for {shown}")
        if tunnel:
            if inspected:  # the rule that says inspect decides how (upstream_ca)
                return allow(self.inspected(name, port))
            for rule in rules:
                if not rule.scoped():
                    return allow(rule)
            return refuse(f"CONNECT refused: the rule for {shown} limits methods or paths, "
                          "which cannot be checked inside a TLS tunnel (add inspect = true "
                          "to the rule to check them inside HTTPS)", rules[0])
        rules = [r for r in rules if not r.methods or method in r.methods]
        if not rules:
            return refuse(f"method {method} not allowed for {shown}")
        for rule in rules:
            if _scope_ok(rule, method, path):
                return allow(rule)
        return refuse(f"path {path} not allowed for {shown}")

    def inspected(self, host: str | Address, port: int) -> EgressRule | None:
        """The first allow rule for a normalised ``host`` and ``port`` with
        ``inspect = true``: a CONNECT there gets its TLS ended and each
        request inside checked.  None: a blind tunnel."""
        for rule, matches in self._allow:
            if rule.inspect and port in rule.ports and matches(host):
                return rule
        return None

    def pinned(self, host: str) -> Address | None:
        """The ``network.hosts`` address of a normalised name, if it has one."""
        return self._pins.get(host) if isinstance(host, str) else None

    def address_refusal(self, host: str | Address, addr: Address,
                        port: int | None = None) -> str | None:
        """Why the proxy must not connect to ``addr`` for ``host``, or None.

        Checked on the address actually used, after resolution, so a public
        name that resolves to 10.0.0.5 or 169.254.169.254 (DNS rebinding, a
        hostile resolver) cannot reach inside.  Non-public addresses pass
        only when the profile says so for this very destination: an allow
        rule naming the address (for any name, if the rule has no methods
        or paths; else only for the address itself), or a ``network.hosts``
        entry pinning the name to that address.
        """
        addr = _collapse(addr)
        # A deny rule naming this address refuses it whatever name led here
        # (a pinned or resolved alias), and whatever methods or paths the
        # rule lists: deny wins, and at this stage there is no finer check.
        for rule, matches in self._deny:
            if matches(addr) and (port is None or not rule.ports or port in rule.ports):
                return f"denied by a [[network.deny]] rule ({rule.source or describe(rule)})"
        if isinstance(host, str):
            try:
                host = normalize_host(host)
            except HostError as err:
                return f"bad host: {err}"
        if isinstance(host, str) and self._pins.get(host) == addr:
            return None
        if host == addr and any(matches(addr) for _, matches in self._allow):
            return None  # the request named the address, and a rule names it
        # An allow rule naming this very address for this port, with no
        # methods or paths, opens it to every allowed name that leads there:
        # the command could open a tunnel to the address itself, so the name
        # grants nothing more.  (A scoped one does not: a tunnel by name
        # would carry what its methods and paths refuse.)
        if any(matches(addr) and not rule.scoped() and (port is None or port in rule.ports)
               for rule, matches in self._allow):
            return None
        why = _not_public(addr)
        if why is None:
            return None
        if isinstance(host, str):
            return (f"address {addr} of {host} {why}; to allow it, pin the name in "
                    f'network.hosts ("{host}" = "{addr}")')
        return f"address {addr} {why}; to allow it, name the address in a [[network.allow]] rule"
