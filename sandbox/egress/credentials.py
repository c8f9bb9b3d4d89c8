"""Credentials the sandbox never sees, and credentials it may not bring.

A ``[[network.credentials]]`` entry names a host (and optionally methods
and paths), where the real value lives on the host (a variable of the
caller, or a file the sandbox cannot read), the request header it travels
in, and the variable the command sees.  Inside, that variable holds a
random placeholder made for this run; the egress proxy puts the real value
in its place on requests within the entry's scope, and only there.

Token provenance: on a host that has such an entry, every credential a
request carries must be the placeholder.  Another ``Authorization``, an API
key header, a cookie the origin did not set in this run, or a
credential-looking query parameter is somebody else's credential (an
attacker's key planted in the workspace, say) and the request is refused
before the proxy connects anywhere.

Three parts, used in three places (the third in its own module):

* ``parse_entry`` / ``from_profiles``: profile validation;
* ``Vault``: in the wrapper at the start of a run, reads the real values,
  makes the placeholders and edits the command's environment;
* ``sandbox.egress.provenance.Guard``: in the proxy process, the per-request step
  of plain HTTP (and, with TLS inspection, of HTTPS): refuse foreign
  credentials, strip or refuse named headers, replace placeholders in scope.

The real value is never put in a message, an event or the cached plan.
"""

from __future__ import annotations

import os
import re
import secrets as _random
from dataclasses import dataclass
from fnmatch import fnmatchcase

from sandbox.egress import netrules
from sandbox.errors import SetupError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9._~+-]{0,31}")
# What the real value may hold: it goes into a header, and h11 quotes a bad
# header value in its exception (which would put the secret in a message).
_VALUE = re.compile(r"[\x21-\x7e]+")
PLACEHOLDER_PREFIX = "sandbox-placeholder-"
_KEYS = ("host", "methods", "paths", "env", "from_env", "from_file", "header", "scheme")
_HINT = ('write e.g. host = "api.example.com", from_env = "EXAMPLE_API_KEY", '
         'env = "EXAMPLE_API_KEY", header = "authorization", scheme = "Bearer"')


@dataclass(frozen=True, slots=True)
class Credential:
    """One ``[[network.credentials]]`` entry, validated (no secret in it)."""

    host: str  # exact, normalised name
    env: str  # the variable the command sees, holding the placeholder
    from_env: str = ""  # the caller's variable holding the real value ...
    from_file: str = ""  # ... or a file (absolute, placeholders expanded by profile)
    header: str = "authorization"  # lower-case
    scheme: str = ""  # "Bearer", "token", "Basic"; empty: the bare value
    methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    source: str = ""

    def as_tuple(self) -> tuple:
        return (self.host, self.env, self.from_env, self.from_file, self.header, self.scheme,
                tuple(self.methods), tuple(self.paths), self.source)

    @classmethod
    def from_tuple(cls, data) -> "Credential":
        host, env, from_env, from_file, header, scheme, methods, paths, source = data
        return cls(host, env, from_env, from_file, header, scheme, tuple(methods), tuple(paths),
                   source)

    def where(self) -> str:
        """Where the real value comes from, for messages (never the value)."""
        return f"${self.from_env}" if self.from_env else self.from_file

    def describe(self) -> str:
        """One line for explain and weakenings: "$GH_TOKEN -> GH_TOKEN: github.com ..."."""
        how = f"{self.header}: {self.scheme + ' ' if self.scheme else ''}<value>"
        scope = " ".join([",".join(self.methods)] * bool(self.methods) + list(self.paths))
        return (f"{self.where()} as {self.env}: {self.host} {scope or 'any request'} ({how})"
                + (f"   ({self.source})" if self.source else ""))

    def in_scope(self, method: str, path: str) -> bool:
        rule = netrules.EgressRule(self.host, (), self.methods, self.paths)
        return netrules._scope_ok(rule, method, netrules.normalize_path(path))


# -- profile validation ------------------------------------------------------

def parse_entry(table: object, source: str) -> Credential:
    """One entry as a ``Credential``, or ``netrules.RuleError`` (key, message, hint).

    ``from_file`` is returned as written; ``sandbox.profile`` expands and
    checks it (``check_file``).
    """
    if not isinstance(table, dict):
        raise netrules.RuleError("", "a credential entry must be a table", _HINT)
    for key in table:
        if key not in _KEYS:
            raise netrules.RuleError(str(key), f"unknown key {netrules._shown(str(key))!r}",
                                     "an entry takes the keys " + ", ".join(_KEYS))
    for key in ("host", "env"):
        if key not in table:
            raise netrules.RuleError(key, f"the entry has no {key}", _HINT)
    for key in ("env", "from_env", "from_file", "header", "scheme"):
        if key in table and not isinstance(table[key], str):
            raise netrules.RuleError(key, f"{key} must be a string", _HINT)
    host = netrules.validate_pattern(table["host"])
    if host.startswith("*.") or _is_address(host):
        raise netrules.RuleError("host", f"{host!r}: a credential is for one host name",
                                 "name the exact host, e.g. api.example.com")
    env = table["env"]
    if not _ENV_NAME.fullmatch(env):
        raise netrules.RuleError("env", f"{netrules._shown(env)!r} is not a variable name", _HINT)
    if ("from_env" in table) == ("from_file" in table):
        raise netrules.RuleError("from_env", "give exactly one of from_env and from_file",
                                 'from_env = "VARIABLE" (the caller\'s environment) or '
                                 'from_file = "${home}/.config/x/token" (a masked file)')
    from_env = table.get("from_env", "")
    if "from_env" in table and not _ENV_NAME.fullmatch(from_env):
        raise netrules.RuleError("from_env", f"{netrules._shown(from_env)!r} is not a variable "
                                 "name", _HINT)
    from_file = table.get("from_file", "")
    if "from_file" in table and not (from_file.startswith(("/", "${")) and "\0" not in from_file):
        raise netrules.RuleError("from_file", f"{netrules._shown(from_file)!r} is not an "
                                 "absolute path", "write an absolute path or start with ${home}")
    header = netrules.validate_header_name(table.get("header", "authorization"), "header")
    if header in ("host", "cookie", "content-length", "transfer-encoding", "connection",
                  "proxy-authorization"):
        raise netrules.RuleError("header", f"the credential cannot travel in {header}",
                                 'use header = "authorization" or an API-key header')
    scheme = table.get("scheme", "")
    if scheme and not _SCHEME.fullmatch(scheme):
        raise netrules.RuleError("scheme", f"{netrules._shown(scheme)!r} is not an "
                                 "authorization scheme", 'write scheme = "Bearer"')
    methods = _optional(table, "methods", netrules.validate_method)
    paths = _optional(table, "paths", netrules.validate_path)
    return Credential(host, env, from_env, from_file, header, scheme, methods, paths, source)


def _optional(table: dict, key: str, check) -> tuple:
    if key not in table:
        return ()
    value = table[key]
    if not isinstance(value, list) or not value:
        raise netrules.RuleError(key, f"{key} must be a non-empty list", f"leave {key} out to "
                                 "mean any, or list them")
    return tuple(dict.fromkeys(check(item) for item in value))


def _is_address(host: str) -> bool:
    return not isinstance(netrules.normalize_host(host), str)


class EntryError(ValueError):
    """A credential entry that is valid alone but not in its profile chain:
    ``profile`` (index in the chain), ``index`` (1-based entry), ``key``."""

    def __init__(self, profile: int, index: int, key: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.profile, self.index, self.key, self.message, self.hint = (
            profile, index, key, message, hint)


def from_profiles(chain: list[tuple[str, dict]], expand, deny_read: tuple[str, ...]
                  ) -> tuple[tuple, tuple]:
    """The chain's credential entries (``Credential.as_tuple()``, ``from_file``
    expanded by ``expand``) and its allow rules' (host, ports, strip_headers,
    refuse_headers), or ``EntryError``.  ``chain``: (profile name, parsed
    TOML) from the root; each entry was validated alone (``parse_entry``)."""
    allow = [t for _, data in chain for t in data.get("network", {}).get("allow", [])]
    headers = tuple(dict.fromkeys(
        (netrules.validate_pattern(t["host"]), tuple(t.get("ports", [443])),
         tuple(h.lower() for h in t.get("strip_headers", ())),
         tuple(h.lower() for h in t.get("refuse_headers", ())))
        for t in allow if t.get("strip_headers") or t.get("refuse_headers")))
    out: list[tuple] = []
    for at, (name, data) in enumerate(chain):
        for index, table in enumerate(data.get("network", {}).get("credentials", []), 1):
            cred = parse_entry(table, f"{name}: network.credentials[{index}]")
            problem = reach_problem(cred, allow)
            if problem is not None:
                raise EntryError(at, index, "host", problem,
                                 "add inspect = true to the host's [[network.allow]] rule "
                                 "(TLS inspection), or allow it over plain HTTP (ports = [80])")
            if cred.from_file:
                cred = Credential.from_tuple((*cred.as_tuple()[:3], expand(cred.from_file),
                                              *cred.as_tuple()[4:]))
                problem = file_problem(cred.from_file, deny_read)
                if problem is not None:
                    raise EntryError(at, index, "from_file", problem,
                                     "keep the token in a file the profile masks (deny_read)")
            if any(c[1] == cred.env for c in out):
                raise EntryError(at, index, "env", f"{cred.env} is already the variable of "
                                 "another credential entry", "give each entry its own variable")
            out.append(cred.as_tuple())
    return tuple(out), headers


def reach_problem(cred: Credential, allow_tables: list[dict]) -> str | None:
    """Why the proxy could not see ``cred``'s requests, or None.

    The placeholder is replaced, and foreign credentials refused, only
    where the proxy reads the request: plain HTTP, or HTTPS through an
    allow rule with ``inspect = true``.  A blind tunnel shows neither.
    """
    matching = [t for t in allow_tables if _rule_matches(t, cred.host)]
    if not matching:
        return f"no [[network.allow]] rule allows {cred.host}"
    if any(t.get("inspect") is True or any(p != 443 for p in t.get("ports", [443]))
           for t in matching):
        return None
    return (f"{cred.host} is allowed only over HTTPS through a blind tunnel, where the proxy "
            "can neither put the credential in nor see a foreign one")


def _rule_matches(table: dict, host: str) -> bool:
    try:
        pattern = netrules.validate_pattern(table.get("host"))
    except netrules.RuleError:
        return False
    return pattern == host or (pattern.startswith("*.") and host.endswith(pattern[1:]))


def file_problem(path: str, deny_read: tuple[str, ...]) -> str | None:
    """Why ``path`` (expanded) would be readable inside the sandbox, or None.

    It must lie under a ``filesystem.deny_read`` entry (masked), and so must
    the file a symlink there leads to; otherwise the command could read the
    secret itself, or (where it can write) swap in a value of its own.
    """
    for candidate in dict.fromkeys((path, os.path.realpath(path))):
        if not any(_under(candidate, entry) for entry in deny_read):
            return (f"{candidate} is readable inside the sandbox; list it (or a directory "
                    "holding it) in filesystem.deny_read")
    return None


def _under(path: str, entry: str) -> bool:
    if any(c in entry for c in "*?["):
        parts = path.split("/")
        depth = entry.count("/")
        return fnmatchcase("/".join(parts[:depth + 1]), entry)
    return path == entry or path.startswith(entry.rstrip("/") + "/")


# -- the run: real values in, placeholders out -------------------------------------

class Vault:
    """In the wrapper: the real values (kept off disk) and their placeholders."""

    def __init__(self, entries: list[Credential], values: list[str | None]) -> None:
        self.entries = entries
        self.values = values
        self.placeholders = [PLACEHOLDER_PREFIX + _random.token_hex(16) for _ in entries]
        self.missing = [e for e, v in zip(entries, values) if v is None]

    @classmethod
    def load(cls, plan: list, environ: dict[str, str]) -> "Vault":
        entries = [Credential.from_tuple(t) for t in plan]
        values: list[str | None] = []
        for cred in entries:
            values.append(_read(cred, environ))
        return cls(entries, values)

    def command_env(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` without any real value, with each placeholder set.

        The source variable goes whatever ``[env] pass`` said, and so does
        any other variable holding the value (GH_TOKEN and GITHUB_TOKEN set
        alike).  A credential with no value on the host leaves the
        command's variable unset: the tool then works anonymously.
        """
        out = dict(env)
        for cred, value, placeholder in zip(self.entries, self.values, self.placeholders):
            if cred.from_env:
                out.pop(cred.from_env, None)
            if value:  # a short value only where it is the whole value (PATH may hold "abc")
                for name in [n for n, v in out.items()
                             if v == value or (len(value) >= 8 and value in v)]:
                    del out[name]
        for cred, value, placeholder in zip(self.entries, self.values, self.placeholders):
            if value is not None:
                out[cred.env] = placeholder
            else:
                out.pop(cred.env, None)
        return out

    def for_proxy(self) -> list[tuple[str, str]]:
        """(placeholder, real value) per entry, in plan order ("" where the host has none)."""
        return [(p, v or "") for p, v in zip(self.placeholders, self.values)]

    def summary(self) -> list[dict]:
        """For the report: which entries had a value (never the value)."""
        return [{"host": c.host, "env": c.env, "from": c.where(), "available": v is not None}
                for c, v in zip(self.entries, self.values)]

    def notes(self) -> list[str]:
        return [f"sandbox: note: credential for {c.host}: {c.where()} is not set on the host; "
                f"{c.env} is left unset inside and requests to {c.host} go without it"
                for c in self.missing]


def _read(cred: Credential, environ: dict[str, str]) -> str | None:
    """The real value, or None when the host has none; ``SetupError`` when it is unusable."""
    if cred.from_env:
        value = environ.get(cred.from_env)
        if not value:
            return None
    else:
        try:
            with open(cred.from_file, "rb") as fh:
                raw = fh.read(16385)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SetupError(f"cannot read the credential for {cred.host} from {cred.from_file}: "
                             f"{exc.strerror or exc}; the command was not run",
                             hint="make the file readable by you, or remove the entry") from None
        if len(raw) > 16384:
            raise SetupError(f"the credential file {cred.from_file} is larger than 16 KiB; "
                             "the command was not run", hint="it should hold only the token")
        try:
            value = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            value = "\x00"  # refused just below, without showing it
        if not value:
            return None
    if not _VALUE.fullmatch(value):
        raise SetupError(f"the credential for {cred.host} from {cred.where()} holds spaces, "
                         "control or non-ASCII characters, which cannot go in an HTTP header; "
                         "the command was not run", hint="store the bare token")
    return value
