"""Read TOML profiles into a validated, immutable ``Policy``.

Validation is strict: an unknown key, a wrong type, a relative path, an
unknown placeholder or an unknown ``extends`` is a ``ProfileError`` naming the
file, the key, the line where it can, and a fix.  Nothing falls back to a
looser default.  Merge rules are documented in ``sandbox.schema``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from sandbox import resources
from sandbox.errors import ProfileError
from sandbox.policy import (EGRESS_MAX_CONNECTIONS, LIMIT_DEFAULTS, Access, NetworkMode, Policy,
                            Weakening)
from sandbox.schema import PLACEHOLDERS, SCHEMA, Key, Kind, Merge

MAX_EXTENDS_DEPTH = 8
# A profile without `extends` builds on this built-in: secure by default.
# Starting from nothing takes `extends = "none"`, a weakening of its own.
BASE_PROFILE = "default"
NO_BASE = "none"
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_CACHE_SUBDIR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")


@dataclass(frozen=True, slots=True)
class Context:
    """Values the placeholders expand to."""

    workspace: str
    home: str
    tmp: str
    runtime: str
    # The account's home from the password database, when $HOME points
    # elsewhere (sudo without -H, CI jobs that set HOME): secrets listed under
    # ${home} are masked in both places.
    account_home: str = ""

    def get(self, name: str) -> str:
        return getattr(self, name)

    def homes(self) -> tuple["Context", ...]:
        if not self.account_home or self.account_home == self.home:
            return (self,)
        return (self, Context(self.workspace, self.account_home, self.tmp, self.runtime))


@dataclass(frozen=True, slots=True)
class Source:
    """One profile file's text, with the name it is known by."""

    name: str
    path: str
    text: str


# -- locating profiles --------------------------------------------------------

def user_profile_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "sandbox" / "profiles"


def builtin_names() -> list[str]:
    return sorted(p.stem for p in resources.profiles_dir().glob("*.toml"))


def user_names() -> list[str]:
    d = user_profile_dir()
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # e.g. a name too long for the filesystem
        return False


def locate(spec: str, referrer: str | None = None) -> tuple[str, Path]:
    """Return (name, path) for a profile name or path.

    Anything with a ``/`` or ending in ``.toml`` is a path (relative to the
    referring profile's directory when it comes from ``extends``).  A bare name
    is a built-in profile or one in ``$XDG_CONFIG_HOME/sandbox/profiles``.
    """
    where = referrer or "--profile"
    if not spec:
        raise ProfileError(where, "empty profile name", key="extends" if referrer else None,
                           hint="give a profile name such as 'default' or a path to a .toml file")
    if spec == NO_BASE:  # only ever reaches here from --profile: extends handles it
        raise ProfileError(where, f"'{NO_BASE}' is not a profile: it is the value of extends for "
                                  "a profile that starts without the built-in protections",
                           hint="give a profile name such as 'default', or a path (./none.toml)")
    if "/" in spec or spec.endswith(".toml"):
        path = Path(spec)
        if not path.is_absolute() and referrer:
            path = Path(referrer).parent / path
        path = Path(os.path.abspath(path))
        if not _is_file(path):
            raise ProfileError(str(path), "profile file not found",
                               key="extends" if referrer else None,
                               hint="check the path, or use a profile name from 'sandbox profiles list'",
                               code="profile_not_found")
        return path.stem, path
    builtin = resources.profiles_dir() / f"{spec}.toml"
    user = user_profile_dir() / f"{spec}.toml"
    if _is_file(builtin):
        if _is_file(user):
            raise ProfileError(str(user), f"user profile shadows the built-in profile '{spec}'",
                               hint="rename the file and use extends = \"%s\" to build on the built-in" % spec)
        return spec, builtin
    if _is_file(user):
        return spec, user
    known = ", ".join(builtin_names() + user_names())
    raise ProfileError(referrer or "--profile", f"unknown profile '{spec}'",
                       key="extends" if referrer else None,
                       hint=f"known profiles: {known}; user profiles go in {user_profile_dir()}",
                       code="profile_not_found")


def read_chain(spec: str) -> list[Source]:
    """Read a profile and everything it extends, root ancestor first."""
    chain: list[Source] = []
    seen: set[str] = set()
    referrer = None
    while True:
        name, path = locate(spec, referrer)
        key = str(path)
        if key in seen:
            raise ProfileError(key, "extends forms a cycle", key="extends",
                               hint=" -> ".join(s.name for s in chain) + f" -> {name}")
        if len(chain) >= MAX_EXTENDS_DEPTH:
            raise ProfileError(key, f"extends is nested more than {MAX_EXTENDS_DEPTH} deep", key="extends")
        seen.add(key)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ProfileError(key, f"cannot read profile: {exc}") from None
        src = Source(name, key, text)
        chain.append(src)
        data = parse(src)
        parent = data.get("extends")
        if parent is None:
            if path == resources.profiles_dir() / f"{BASE_PROFILE}.toml":
                break  # the root of every chain
            parent = BASE_PROFILE  # no extends: the built-in protections still apply
        if not isinstance(parent, str):
            raise ProfileError(key, "must be a string", key="extends", line=line_of(text, "", "extends"))
        if parent == NO_BASE:
            break  # asked for explicitly; build_policy records it as a weakening
        spec, referrer = parent, key
    chain.reverse()
    return chain


# -- parsing and validation ---------------------------------------------------

def parse(src: Source) -> dict:
    import tomllib  # imported here: the cached fast path never needs it

    try:
        data = tomllib.loads(src.text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(src.path, f"not valid TOML: {exc}",
                           hint=f"see {resources.doc('profiles.md')} for the format") from None
    except RecursionError:  # arrays or tables nested thousands deep (a hostile file)
        raise ProfileError(src.path, "not valid TOML: nested too deeply",
                           hint=f"see {resources.doc('profiles.md')} for the format") from None
    validate(src, data)
    return data


def line_of(text: str, table: str, key: str) -> int | None:
    """Best-effort line number of ``key`` inside ``[table]`` (for messages)."""
    current = ""
    pattern = re.compile(r"^\s*(?:\"%s\"|%s)\s*=" % (re.escape(key), re.escape(key)))
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(r"^\s*\[\s*([A-Za-z0-9_.\-]+)\s*\]", line)
        if header:
            current = header.group(1)
            if not key and current == table:
                return number
            continue
        if current == table and key and pattern.match(line):
            return number
    return None


def _fail(src: Source, table: str, key: str, message: str, hint: str | None = None) -> ProfileError:
    dotted = f"{table}.{key}" if table and key else (table or key)
    return ProfileError(src.path, message, key=dotted, line=line_of(src.text, table, key), hint=hint)


def validate(src: Source, data: dict) -> None:
    for top, value in data.items():
        if top in SCHEMA[""]:
            _check_value(src, "", top, SCHEMA[""][top], value)
            continue
        if top not in SCHEMA:
            known = ", ".join(sorted({k for k in SCHEMA if k} | set(SCHEMA[""])))
            raise _fail(src, "", top, "unknown key", hint=f"known top-level keys: {known}")
        if not isinstance(value, dict):
            raise _fail(src, "", top, "must be a table", hint=f"write it as [{top}]")
        keys = SCHEMA[top]
        for key, item in value.items():
            spec = keys.get(key) or keys.get("*")
            if spec is None:
                raise _fail(src, top, key, "unknown key",
                            hint=f"known keys in [{top}]: {', '.join(sorted(keys))}")
            _check_value(src, top, key, spec, item)
            if top == "caches":
                if not _ENV_NAME.match(key):
                    raise _fail(src, top, key, "not a valid environment variable name")
                if not _CACHE_SUBDIR.match(item):
                    raise _fail(src, top, key, f"cache subdirectory {item!r} must be a plain name",
                                hint="use letters, digits, '.', '_' or '-', no '/'")


def _check_value(src: Source, table: str, key: str, spec: Key, value: object) -> None:
    kind = spec.kind
    if kind in (Kind.STR, Kind.CHOICE):
        if not isinstance(value, str):
            raise _fail(src, table, key, f"must be a string, not {_tname(value)}")
        if kind is Kind.CHOICE and value not in spec.choices:
            raise _fail(src, table, key, f"must be one of {', '.join(map(repr, spec.choices))}, not {value!r}")
    elif kind is Kind.BOOL:
        if not isinstance(value, bool):
            raise _fail(src, table, key, f"must be true or false, not {_tname(value)}")
    elif kind is Kind.INT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(src, table, key, f"must be an integer, not {_tname(value)}")
        if spec.zero_unlimited:
            if value != 0 and not spec.minimum <= value <= spec.maximum:
                raise _fail(src, table, key, f"must be 0 (no limit) or between {spec.minimum} "
                                             f"and {spec.maximum}, not {value}")
        elif not spec.minimum <= value <= spec.maximum:
            raise _fail(src, table, key, f"must be between {spec.minimum} and {spec.maximum}")
    elif kind is Kind.RULES:
        _check_rules(src, table, key, value)
    elif kind is Kind.CREDENTIALS:
        _check_credentials(src, table, key, value)
    elif kind is Kind.FORWARDS:
        _check_forwards(src, table, key, value)
    elif kind is Kind.HOSTMAP:
        from sandbox.egress import netrules

        if not isinstance(value, dict):
            raise _fail(src, table, key, f"must be a table of name = address, not {_tname(value)}",
                        hint='e.g. hosts = { "pypi.test" = "127.0.0.1" }')
        try:
            netrules.parse_hosts(value)
        except netrules.RuleError as err:
            raise _fail(src, table, key, str(err), hint=err.hint or None) from None
    elif kind is Kind.STRMAP:
        if not isinstance(value, dict):
            raise _fail(src, table, key, f"must be a table of strings, not {_tname(value)}")
        for name, item in value.items():
            if not isinstance(item, str):
                raise _fail(src, table, key, f"value of {name!r} must be a string, not {_tname(item)}")
            if not _ENV_NAME.match(name):
                raise _fail(src, table, key, f"{name!r} is not a valid environment variable name")
    else:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _fail(src, table, key, f"must be a {kind.value} (a list of strings)")
        for item in value:
            _check_item(src, table, key, spec, item)


def _check_rules(src: Source, table: str, key: str, value: object) -> None:
    from sandbox.egress import netrules

    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ProfileError(src.path, f"must be an array of tables, not {_tname(value)}",
                           key=f"{table}.{key}",
                           line=(line_of(src.text, table, key)
                                 or line_of(src.text, f"{table}.{key}", "")),
                           hint=f'write each entry as [[{table}.{key}]] with host = "..." below it')
    for index, rule in enumerate(value, 1):
        try:
            netrules.parse_rule(rule, f"{src.name}: {table}.{key}[{index}]", deny=key == "deny")
        except netrules.RuleError as err:
            sub = f".{err.key}" if err.key else ""
            raise ProfileError(src.path, str(err), key=f"{table}.{key}[{index}]{sub}",
                               line=_rule_line(src.text, f"{table}.{key}", index),
                               hint=err.hint or None) from None


def _check_credentials(src: Source, table: str, key: str, value: object) -> None:
    from sandbox.egress import credentials, netrules

    if not isinstance(value, list):
        raise _fail(src, table, key, f"must be an array of tables, not {_tname(value)}",
                    hint="write each entry as [[network.credentials]]")
    for index, entry in enumerate(value, 1):
        try:
            credentials.parse_entry(entry, f"{src.name}: {table}.{key}[{index}]")
        except netrules.RuleError as err:
            sub = f".{err.key}" if err.key else ""
            raise ProfileError(src.path, str(err), key=f"{table}.{key}[{index}]{sub}",
                               line=_rule_line(src.text, f"{table}.{key}", index),
                               hint=err.hint or None) from None


def _check_forwards(src: Source, table: str, key: str, value: object) -> None:
    """``[[network.forward]]``: each entry on its own (sandbox.egress.hostports), then
    no inside port twice in one file (across files: ``_forwards``)."""
    from sandbox.egress import hostports

    if not isinstance(value, list):
        raise _fail(src, table, key, f"must be an array of tables, not {_tname(value)}",
                    hint="write each grant as [[network.forward]] with port = N below it")
    grants: list[tuple] = []
    for index, entry in enumerate(value, 1):
        try:
            grant = hostports.parse(entry, f"{src.name}: {table}.{key}[{index}]")
        except hostports.GrantError as err:
            sub = f".{err.key}" if err.key else ""
            raise ProfileError(src.path, str(err), key=f"{table}.{key}[{index}]{sub}",
                               line=_rule_line(src.text, f"{table}.{key}", index),
                               hint=err.hint or None) from None
        if any(hostports.same(grant, g) for g in grants):
            continue
        first = next((g for g in grants if g[2] == grant[2]), None)
        if first is not None:
            raise ProfileError(src.path, f"inside port {grant[2]} is granted twice (also by "
                                         f"{first[4]}: {hostports.describe(first)})",
                               key=f"{table}.{key}[{index}]",
                               line=_rule_line(src.text, f"{table}.{key}", index),
                               hint="give one of them another inside_port, or remove one")
        grants.append(grant)
    if len(grants) > hostports.MAX_GRANTS:
        raise _fail(src, table, key, f"{len(grants)} grants, more than {hostports.MAX_GRANTS}",
                    hint="forward only the services the command needs")


def _rule_line(text: str, table: str, index: int) -> int | None:
    """Line of the index-th ``[[table]]`` header (1-based), for messages."""
    header = re.compile(r"^\s*\[\[\s*%s\s*\]\]" % re.escape(table))
    seen = 0
    for number, line in enumerate(text.splitlines(), 1):
        if header.match(line):
            seen += 1
            if seen == index:
                return number
    return None


def _check_item(src: Source, table: str, key: str, spec: Key, item: str) -> None:
    if not item or "\x00" in item or "\n" in item:
        raise _fail(src, table, key, f"entry {item!r} is empty or has a control character")
    if spec.kind is Kind.PATHS:
        for name in _PLACEHOLDER.findall(item):
            if name not in PLACEHOLDERS:
                raise _fail(src, table, key, f"unknown placeholder ${{{name}}} in {item!r}",
                            hint="known placeholders: " + ", ".join("${%s}" % p for p in PLACEHOLDERS))
        if item.startswith("~"):
            raise _fail(src, table, key, f"path {item!r} starts with '~'",
                        hint="write ${home}" + item[1:])
        if not (item.startswith("/") or _PLACEHOLDER.match(item)):
            raise _fail(src, table, key, f"path {item!r} is relative",
                        hint="paths must be absolute or start with ${workspace}, ${home}, ${tmp} or ${runtime}")
        if "${" in _PLACEHOLDER.sub("", item):
            raise _fail(src, table, key, f"path {item!r} has an unclosed '${{'",
                        hint="placeholders look like ${home}")
        if not spec.allow_glob and any(c in item for c in "*?["):
            raise _fail(src, table, key, f"wildcards are not allowed in {item!r}")
        if spec.allow_glob and any(c in item.rpartition("/")[0] for c in "*?"):
            raise _fail(src, table, key, f"a wildcard may only appear in the last part of {item!r}",
                        hint="list each directory explicitly")
        parts = item.split("/")
        if ".." in parts:
            raise _fail(src, table, key, f"path {item!r} contains '..'")
    elif table == "syscalls" and not item.replace("_", "").isalnum():
        raise _fail(src, table, key, f"{item!r} is not a syscall name")
    elif spec.kind is Kind.NAMES and "/" in item and table != "protect":
        raise _fail(src, table, key, f"{item!r} must be a name, not a path")
    elif spec.kind is Kind.NAMES and table == "protect" and key in ("names", "skip_dirs"):
        if item.startswith("/") or ".." in item.split("/"):
            raise _fail(src, table, key, f"{item!r} must be a name relative to a writable root, e.g. .vscode")


def _tname(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


# -- merging --------------------------------------------------------------------

def merge(chain: list[Source], datas: list[dict]) -> tuple[dict, list[Weakening]]:
    """Fold the chain (root first) into one table, recording weakenings."""
    merged: dict[str, dict] = {table: {} for table in SCHEMA}
    weakenings: list[Weakening] = []
    for index, (src, data) in enumerate(zip(chain, datas)):
        is_child = index > 0
        for table, keys in SCHEMA.items():
            section = data if table == "" else data.get(table, {})
            for key, value in section.items():
                if table == "" and key in SCHEMA:
                    continue  # a table, not a top-level scalar
                spec = keys.get(key) or keys.get("*")
                if spec is None:
                    continue
                dotted = f"{table}.{key}" if table else key
                target = merged[table]
                if table == "caches":
                    target[key] = value
                elif spec.merge in (Merge.APPEND, Merge.WEAKEN, Merge.REMOVE):
                    target[key] = target.get(key, []) + [v for v in value if v not in target.get(key, [])]
                    if spec.merge is Merge.WEAKEN and is_child:
                        for v in value:
                            weakenings.append(Weakening(src.name, dotted, f"added {_entry(v)}"))
                elif spec.merge is Merge.MERGE:
                    if spec.kind is Kind.HOSTMAP and is_child:
                        # a pin decides which address an allowed name reaches,
                        # loopback and private ones included: a loosening
                        for name, addr in value.items():
                            if target.get(key, {}).get(name) != addr:
                                weakenings.append(Weakening(src.name, dotted,
                                                            f"pinned {name} = {addr}"))
                    target[key] = {**target.get(key, {}), **value}
                else:
                    old = target.get(key, _UNSET.get(dotted))
                    if is_child and old is not None and _looser(spec, old, value):
                        weakenings.append(Weakening(src.name, dotted, f"{_show(old)} -> {_show(value)}"))
                    target[key] = value
    return merged, weakenings


# what build_policy uses when no profile in the chain sets the key
_UNSET = {"filesystem.workspace": "write", "filesystem.scratch": "write", "protect.git": True,
          "sockets.max_depth": 4, "network.mode": "none", "network.max_connections": EGRESS_MAX_CONNECTIONS,
          "syscalls.enabled": True,
          "syscalls.allow_32bit": False, "syscalls.unix_sockets": True,
          "ci.github_env": False, "ci.github_path": False,
          **{f"audit.{name}": True for name in SCHEMA["audit"]},
          **{f"limits.{name}": value for name, value in LIMIT_DEFAULTS}}


def _looser(spec: Key, old: object, new: object) -> bool:
    if spec.kind is Kind.INT and spec.zero_unlimited:
        # 0 is no limit: the loosest value of all
        def room(v: object) -> float:
            return float("inf") if v == 0 else v  # type: ignore[return-value]
        return isinstance(new, int) and isinstance(old, int) and room(new) > room(old)
    if spec.kind is Kind.INT:
        return isinstance(new, int) and isinstance(old, int) and new < old
    if not spec.looser or old not in spec.looser or new not in spec.looser:
        return False
    return spec.looser.index(new) > spec.looser.index(old)


def _entry(value: object) -> str:
    """A list entry for a weakening: a path, or a network rule in one line."""
    if isinstance(value, dict) and "port" in value:  # a [[network.forward]] grant
        from sandbox.egress import hostports

        try:
            return "forward " + hostports.describe(hostports.parse(value, ""))
        except hostports.GrantError:
            return str(value)
    if isinstance(value, dict) and "env" in value:  # a [[network.credentials]] entry
        from sandbox.egress import credentials, netrules

        try:
            return "credential " + credentials.parse_entry(value, "").describe()
        except netrules.RuleError:
            return str(value)
    if isinstance(value, dict):
        from sandbox.egress import netrules

        try:
            return netrules.describe(netrules.parse_rule(value, ""))
        except netrules.RuleError:
            return str(value)
    return str(value)


def _show(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


# -- expansion into a Policy ----------------------------------------------------

def expand(path: str, ctx: Context) -> str:
    out = _PLACEHOLDER.sub(lambda m: ctx.get(m.group(1)), path)
    # normpath collapses '//' and a trailing '/'; '..' was refused earlier
    return os.path.normpath(out) if out.startswith("/") else out


def build_policy(chain: list[Source], ctx: Context) -> Policy:
    datas = [parse(src) for src in chain]
    merged, weakenings = merge(chain, datas)
    if datas[0].get("extends") == NO_BASE:
        # weakenings are measured against a parent; this profile has none
        weakenings.insert(0, Weakening(chain[0].name, "extends", (
            f'extends = "{NO_BASE}": starts without the built-in protections (secrets, .env '
            "masks, environment filter, protected names, hidden /run and host sockets) "
            "except what it lists itself")))
    fs, prot, sock, env, net, sys_ = (merged[t] for t in ("filesystem", "protect", "sockets", "env",
                                                          "network", "syscalls"))

    def paths(table: dict, key: str) -> tuple[str, ...]:
        out: list[str] = []
        for p in table.get(key, []):
            e = expand(p, ctx)
            if e not in out:
                out.append(e)
        return tuple(out)

    # Fold deny_read / allow_read profile by profile, root first, so that a
    # child can mask again what a parent un-masked (the later word wins).
    deny: list[str] = []
    for src, data in zip(chain, datas):
        section = data.get("filesystem", {})
        for p in section.get("deny_read", []):
            for each in ctx.homes():
                e = expand(p, each)
                if e not in deny:
                    deny.append(e)
        for p in section.get("allow_read", []):
            allowed = expand(p, ctx)
            for each in ctx.homes()[1:]:  # the same entry under the account's home goes too
                other = expand(p, each)
                if other != allowed and other in deny:
                    deny.remove(other)
            if allowed not in deny:
                raise ProfileError(src.path, f"allow_read entry {allowed!r} matches no deny_read entry",
                                   key="filesystem.allow_read",
                                   line=line_of(src.text, "filesystem", "allow_read"),
                                   hint="allow_read removes an inherited deny_read entry; copy it "
                                        "exactly (see 'sandbox explain')")
            deny.remove(allowed)
            weakenings.append(Weakening(src.name, "filesystem.allow_read",
                                        f"secret no longer masked: {allowed}"))

    egress_allow, egress_deny, egress_hosts = _egress(chain, datas, net, weakenings)
    egress_credentials, egress_headers = _credentials(chain, datas, net, ctx, tuple(deny))
    forwards = _forwards(chain, datas, weakenings)
    digest = hashlib.sha256()
    for src in chain:
        digest.update(src.path.encode() + b"\0" + src.text.encode() + b"\0")
    top = merged[""]
    return Policy(
        name=chain[-1].name,
        chain=tuple(s.name for s in chain),
        sources=tuple(s.path for s in chain),
        digest=digest.hexdigest(),
        description=top.get("description", ""),
        require=top.get("require", "fallback"),
        workspace=Access(fs.get("workspace", "write")),
        scratch=Access(fs.get("scratch", "write")),
        writable=paths(fs, "writable"),
        deny_read=tuple(deny),
        deny_read_names=tuple(fs.get("deny_read_names", [])),
        allow_read_names=tuple(fs.get("allow_read_names", [])),
        empty_dirs=paths(fs, "empty_dirs"),
        protect_git=prot.get("git", True),
        protected_names=tuple(prot.get("names", [])),
        unprotect=paths(prot, "unprotect"),
        skip_dirs=tuple(prot.get("skip_dirs", [])),
        socket_scan=paths(sock, "scan"),
        socket_skip_dirs=tuple(sock.get("skip_dirs", [])),
        socket_scan_depth=sock.get("max_depth", 4),
        env_deny=tuple(env.get("deny", [])),
        env_pass=tuple(env.get("pass", [])),
        env_set=tuple(sorted(env.get("set", {}).items())),
        caches=tuple(sorted(merged["caches"].items())),
        network=NetworkMode(net.get("mode", "none")),
        egress_allow=egress_allow,
        egress_deny=egress_deny,
        egress_hosts=egress_hosts,
        egress_max_connections=net.get("max_connections", EGRESS_MAX_CONNECTIONS),
        egress_credentials=egress_credentials,
        egress_headers=egress_headers,
        forwards=forwards,
        syscalls_enabled=sys_.get("enabled", True),
        syscall_set=sys_.get("set", "default"),
        syscall_deny=tuple(sys_.get("deny", [])),
        syscall_allow=tuple(sys_.get("allow", [])),
        allow_32bit=sys_.get("allow_32bit", False),
        unix_sockets=sys_.get("unix_sockets", True),
        audit_classes=tuple(name for name in SCHEMA["audit"] if merged["audit"].get(name, True)),
        weakenings=tuple(weakenings),
        github_env=merged["ci"].get("github_env", False),
        github_path=merged["ci"].get("github_path", False),
        **{name: merged["limits"].get(name, value) for name, value in LIMIT_DEFAULTS},
    )


def _egress(chain: list[Source], datas: list[dict], net: dict,
            weakenings: list[Weakening]) -> tuple:
    """The network rules of the whole chain, each naming the profile it came from."""
    if not any(k in net for k in ("allow", "deny", "hosts", "upstream_ca")):
        return (), (), ()  # most profiles: no rule module to import
    from sandbox.egress import netrules

    default_ca = _default_upstream_ca(chain, datas, weakenings)
    rules: dict[str, list] = {"allow": [], "deny": []}
    for src, data in zip(chain, datas):
        for kind in rules:
            for index, table in enumerate(data.get("network", {}).get(kind, []), 1):
                rule = netrules.parse_rule(table, f"{src.name}: network.{kind}[{index}]",
                                           deny=kind == "deny")
                if rule.upstream_ca and not os.path.isfile(rule.upstream_ca):
                    raise ProfileError(src.path, f"upstream_ca {rule.upstream_ca!r} is not a "
                                                 "file", key=f"network.{kind}[{index}].upstream_ca",
                                       line=_rule_line(src.text, f"network.{kind}", index),
                                       hint="name a PEM file of the CA certificates that "
                                            "sign the upstream server's certificate")
                if rule.inspect and not rule.upstream_ca and default_ca:
                    # [network] upstream_ca: the chain's default (the rule's own key wins)
                    rule = dataclasses.replace(rule, upstream_ca=default_ca)
                if not any(_same_rule(rule, r) for r in rules[kind]):
                    rules[kind].append(rule)  # the same rule from two profiles: the first
    if net.get("mode", "none") != "proxy":
        # A profile that writes allow rules but leaves the network off has
        # forgotten the mode; a later profile that says mode = "none" on
        # purpose turns a parent's network off, which is always allowed.
        sections = [d.get("network", {}) for d in datas]
        last_rules = max((i for i, n in enumerate(sections) if n.get("allow")), default=-1)
        last_mode = max((i for i, n in enumerate(sections) if "mode" in n), default=-1)
        if last_rules >= 0 and last_rules >= last_mode:
            src = chain[last_rules]
            raise ProfileError(src.path, "[[network.allow]] rules need the egress proxy, but "
                                         f"network.mode is {net.get('mode', 'none')!r}",
                               key="network.mode", line=line_of(src.text, "network", "mode"),
                               hint='set mode = "proxy" in [network]')
        return (), (), ()  # no network at all: the rules have nothing to open
    if default_ca and not any(r.inspect for r in rules["allow"]):
        src = next(s for s, d in reversed(list(zip(chain, datas)))
                   if "upstream_ca" in d.get("network", {}))
        raise ProfileError(src.path, "upstream_ca is used only when the proxy inspects TLS, and "
                                     "no [[network.allow]] rule of the profile says inspect = true",
                           key="network.upstream_ca", line=line_of(src.text, "network", "upstream_ca"),
                           hint="add inspect = true to the rules it is for, or remove upstream_ca")
    return tuple(rules["allow"]), tuple(rules["deny"]), netrules.parse_hosts(net.get("hosts", {}))


def _forwards(chain: list[Source], datas: list[dict], weakenings: list[Weakening]) -> tuple:
    """``[[network.forward]]`` of the whole chain: appended root first, the same
    grant from two profiles kept once (the first), one inside port per grant.

    Every grant is a weakening: a child's is recorded by ``merge``; the root
    profile's (``extends = "none"``) here, since it has no parent to weaken."""
    if not any("forward" in d.get("network", {}) for d in datas):
        return ()  # most profiles: no module to import
    from sandbox.egress import hostports

    grants: list[tuple] = []
    for position, (src, data) in enumerate(zip(chain, datas)):
        entries = data.get("network", {}).get("forward", [])
        for index, entry in enumerate(entries, 1):
            grant = hostports.parse(entry, f"{src.name}: network.forward[{index}]")
            if any(hostports.same(grant, g) for g in grants):
                continue
            grants.append(grant)
            if position == 0:
                weakenings.append(Weakening(src.name, "network.forward",
                                            f"added forward {hostports.describe(grant)}"))
            clash = hostports.check_all(grants)
            if clash is not None:
                first = next(g for g in grants if g[2] == grant[2])
                raise ProfileError(src.path, f"inside port {grant[2]} is granted twice (also by "
                                             f"{first[4]}: {hostports.describe(first)})",
                                   key=f"network.forward[{index}]",
                                   line=_rule_line(src.text, "network.forward", index),
                                   hint="give one of them another inside_port, or remove one")
    if len(grants) > hostports.MAX_GRANTS:
        src = chain[-1]
        raise ProfileError(src.path, f"{len(grants)} [[network.forward]] grants in the chain, more "
                                     f"than {hostports.MAX_GRANTS}", key="network.forward",
                           hint="forward only the services the command needs")
    return tuple(grants)


def _default_upstream_ca(chain: list[Source], datas: list[dict],
                         weakenings: list[Weakening]) -> str:
    """``[network] upstream_ca``: the CA file every inspected rule of the chain
    verifies its upstream against unless the rule names its own (the last
    profile that sets it wins).  It lets a child profile point a built-in
    inspected host (github.com, api.anthropic.com) at a private or test
    origin, so a child that sets it is recorded as a weakening."""
    ca, where = "", None
    for index, (src, data) in enumerate(zip(chain, datas)):
        if "upstream_ca" in data.get("network", {}):
            ca, where = data["network"]["upstream_ca"], (index, src)
    if where is None:
        return ""
    index, src = where
    line = line_of(src.text, "network", "upstream_ca")
    hint = ('write upstream_ca = "/etc/ssl/private-registry-ca.pem" (an absolute path of a PEM '
            "file of the CA certificates that sign the upstream server's certificate)")
    if not ca or not ca.startswith("/") or any(ord(c) < 0x20 for c in ca):
        raise ProfileError(src.path, f"upstream_ca {ca!r} is not an absolute path",
                           key="network.upstream_ca", line=line, hint=hint)
    if not os.path.isfile(ca):
        raise ProfileError(src.path, f"upstream_ca {ca!r} is not a file",
                           key="network.upstream_ca", line=line, hint=hint)
    if index > 0:
        weakenings.append(Weakening(src.name, "network.upstream_ca",
                                    f"inspected hosts without their own upstream_ca are verified "
                                    f"against {ca} instead of the host's roots"))
    return ca


def _credentials(chain: list[Source], datas: list[dict], net: dict, ctx: Context,
                 deny_read: tuple[str, ...]) -> tuple[tuple, tuple]:
    """``[[network.credentials]]`` of the chain and the allow rules' header
    lists, checked across keys by ``sandbox.egress.credentials.from_profiles``."""
    if net.get("mode", "none") != "proxy" or not any(
            k in d.get("network", {}) for d in datas for k in ("credentials", "allow")):
        return (), ()  # most profiles: no module to import
    from sandbox.egress import credentials

    try:
        return credentials.from_profiles([(src.name, data) for src, data in zip(chain, datas)],
                                         lambda path: expand(path, ctx), deny_read)
    except credentials.EntryError as err:
        src = chain[err.profile]
        raise ProfileError(src.path, err.message, key=f"network.credentials[{err.index}].{err.key}",
                           line=_rule_line(src.text, "network.credentials", err.index),
                           hint=err.hint) from None


def _same_rule(a, b) -> bool:
    """Equal but for the profile each came from (``source``)."""
    ta, tb = a.as_tuple(), b.as_tuple()
    return ta[:4] + ta[5:] == tb[:4] + tb[5:]


def load(spec: str, ctx: Context) -> tuple[Policy, list[str]]:
    """Load a profile by name or path.  Returns the policy and the files read."""
    chain = read_chain(spec)
    return build_policy(chain, ctx), [s.path for s in chain]
