"""Intersect a policy with a constraint: the result never allows more than either.

Two inputs may only tighten a run: a project profile the user has not
trusted (``sandbox.projectprofile``) and the administrator's managed policy
(``sandbox.managed``).  Both go through ``tighten(base, other, fields)``, a
pure function over ``Policy``: for every field in ``fields`` the result
takes the stricter of ``base`` and ``other`` (for lists of permissions, what
both allow; for lists of protections, what either asks for), and every
other field is ``base``'s.  So

* network can only close (``proxy`` survives only when both say it, and then
  a request passes only if a rule of each would let it through; a host port
  forward survives only when both grant it);
* writes only shrink (a writable path survives only inside one the other
  side allows too; the workspace is writable only when both say so);
* hidden and protected paths, denied variables and syscalls, deny rules and
  audit classes only grow;
* limits only lower (0, no limit, is the loosest value);
* what is neither (``env.set``, ``network.hosts`` pins, the seccomp rule
  set's name) stays ``base``'s.

``tests/test_tighten.py`` checks with random policies that the result never
allows anything ``base`` (nor, on the constrained fields, ``other``) does not.
Standard library only; nothing here reads a file.
"""

from __future__ import annotations

import dataclasses

from sandbox.policy import Access, EgressRule, NetworkMode, Policy, Weakening

# Policy fields, grouped by how two values meet.
UNION = ("deny_read", "deny_read_names", "empty_dirs", "protected_names", "socket_scan",
         "env_deny", "syscall_deny", "audit_classes", "egress_deny")
SHARED = ("allow_read_names", "skip_dirs", "socket_skip_dirs", "env_pass", "syscall_allow",
          "caches")  # exact entries both allow
PATHS = ("writable", "unprotect")  # paths: what lies inside an entry of each
BOTH_TRUE = ("syscalls_enabled", "protect_git")  # on when either turns it on
EITHER_FALSE = ("allow_32bit", "unix_sockets", "core_dumps")  # allowed only when both allow
LIMITS = ("egress_max_connections", "max_open_files", "max_file_size_mb", "cpu_seconds",
          "max_processes", "address_space_mb", "timeout_seconds", "pids_max", "memory_max_mb")
ACCESS = ("workspace", "scratch")
# forwards: a [[network.forward]] grant survives only when the other side
# grants the same host port at the same inside port (names and sources aside)
OTHER = ("network", "egress_allow", "socket_scan_depth", "require", "forwards")
FIELDS = UNION + SHARED + PATHS + BOTH_TRUE + EITHER_FALSE + LIMITS + ACCESS + OTHER
# Never taken from ``other``: not a permission either way, or not comparable.
KEPT = ("env_set", "egress_hosts", "syscall_set")


def tighten(base: Policy, other: Policy, fields=FIELDS, label: str = "") -> Policy:
    """``base`` with every field in ``fields`` met with ``other``'s.

    ``label`` names ``other`` in the result's chain and its tightenings
    (e.g. "managed: /etc/sandbox/managed.toml").
    """
    changes: dict = {}
    for name in fields:
        old, new = getattr(base, name), getattr(other, name)
        if name in UNION:
            value = old + tuple(v for v in new if v not in old)
        elif name in SHARED:
            value = tuple(v for v in old if v in new)
        elif name in PATHS:
            value = _paths_meet(old, new)
        elif name in BOTH_TRUE:
            value = old or new
        elif name in EITHER_FALSE:
            value = old and new
        elif name in LIMITS:
            value = _lower_limit(old, new)
        elif name in ACCESS:
            value = Access.READ if Access.READ in (old, new) else Access.WRITE
        elif name == "network":
            value = NetworkMode.PROXY if old is new is NetworkMode.PROXY else NetworkMode.NONE
        elif name == "egress_allow":
            value = _rules_meet(old, new)
        elif name == "socket_scan_depth":
            value = max(old, new)  # a deeper search hides more
        elif name == "require":
            value = "full" if "full" in (old, new) else old  # failing closed is stricter
        elif name == "forwards":
            value = tuple(g for g in old if any(g[:3] == h[:3] for h in new))
        else:
            raise ValueError(f"tighten: unknown or unsupported field {name!r}")
        changes[name] = value
    if "env_deny" in fields:
        # a variable the constraint denies by name stays denied: base's [env] pass
        # (or --env-pass) does not reach it, unless the constraint passes it too
        changes["env_pass"] = tuple(
            n for n in changes.get("env_pass", base.env_pass)
            if not _env_denied(n, other.env_deny) or n.upper() in {p.upper() for p in other.env_pass})
    if "syscall_deny" in fields:
        # seccomp's allow list removes deny rules: base's must not undo the constraint's
        changes["syscall_allow"] = tuple(
            n for n in changes.get("syscall_allow", base.syscall_allow)
            if n not in other.syscall_deny or n in other.syscall_allow)
    if "deny_read_names" in fields:
        # a name the constraint hides stays hidden: base's exceptions (default's
        # "*.template") must not expose it, unless the constraint excepts it too
        asked = [d for d in other.deny_read_names if d not in base.deny_read_names]
        changes["allow_read_names"] = tuple(
            e for e in changes.get("allow_read_names", base.allow_read_names)
            if e in other.allow_read_names or not any(_names_overlap(e, d) for d in asked))
    if changes.get("network", base.network) is NetworkMode.NONE:
        # as profile.build_policy does: without the proxy, rules open nothing
        changes.update(egress_allow=(), egress_deny=(), egress_hosts=())
    result = dataclasses.replace(base, **changes)
    effects = describe(base, result, label or other.name)
    return dataclasses.replace(
        result,
        chain=base.chain + ((label,) if label else ()),
        digest=_digest(base.digest, other.digest),
        tightenings=base.tightenings + effects,
    )


def _env_denied(name: str, patterns) -> bool:
    """Does an [env] deny pattern (case-insensitive, ``*`` and ``?``) name ``name``?"""
    from fnmatch import fnmatchcase

    return any(fnmatchcase(name.upper(), p.upper()) for p in patterns)


_WILD = set("*?[")


def _names_overlap(a: str, b: str) -> bool:
    """Could one file name match both name patterns?  (True when unsure.)"""
    from fnmatch import fnmatchcase

    if not _WILD & set(a):
        return fnmatchcase(a, b)
    if not _WILD & set(b):
        return fnmatchcase(b, a)
    # both wild: disjoint when their literal starts, or literal ends, differ
    head_a, head_b = (x[:min(x.find(c) for c in _WILD if c in x)] for x in (a, b))
    tail_a, tail_b = (x[max(x.rfind(c) for c in _WILD if c in x) + 1:] for x in (a, b))
    if not (head_a.startswith(head_b) or head_b.startswith(head_a)):
        return False
    return tail_a.endswith(tail_b) or tail_b.endswith(tail_a)


def _digest(a: str, b: str) -> str:
    from sandbox.statefile import sha256_hex

    return sha256_hex(f"{a}\0{b}".encode())


def _room(value: int) -> float:
    return float("inf") if value == 0 else value


def _lower_limit(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        raise ValueError("a limit is an integer")
    return a if _room(a) <= _room(b) else b


def within(path: str, root: str) -> bool:
    return path == root or root == "/" or path.startswith(root.rstrip("/") + "/")


def _paths_meet(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    """The paths lying inside an entry of ``a`` and inside one of ``b``: the
    narrower of each overlapping pair."""
    out = [p for p in a if any(within(p, q) for q in b)]
    out += [q for q in b if any(within(q, p) for p in a) and q not in out]
    return tuple(out)


# -- network rules ------------------------------------------------------------------

def _rules_meet(a: tuple[EgressRule, ...], b: tuple[EgressRule, ...]) -> tuple[EgressRule, ...]:
    """Rules that let through only what a rule of ``a`` and a rule of ``b`` both would."""
    out: list[EgressRule] = []
    for ra in a:
        for rb in b:
            rule = rule_meet(ra, rb)
            if rule is not None and rule.as_tuple()[:4] not in [r.as_tuple()[:4] for r in out]:
                out.append(rule)
    return tuple(out)


def rule_meet(a: EgressRule, b: EgressRule) -> EgressRule | None:
    """One rule matching exactly the requests both match, or None if there are none
    (or none we can express: then we refuse, which errs on the strict side)."""
    host = _host_meet(a.host, b.host)
    ports = tuple(p for p in a.ports if p in b.ports)
    if host is None or not ports:
        return None
    if a.methods and b.methods:
        methods = tuple(m for m in a.methods if m in b.methods)
        if not methods:
            return None
    else:
        methods = a.methods or b.methods
    if a.paths and b.paths:
        paths = tuple(dict.fromkeys([p for p in a.paths if any(_path_within(p, q) for q in b.paths)]
                                    + [q for q in b.paths if any(_path_within(q, p) for p in a.paths)]))
        if not paths:
            return None
    else:
        paths = a.paths or b.paths
    return EgressRule(host, ports, methods, paths, a.source)


def _is_ip(host: str) -> bool:
    return ":" in host or host.replace(".", "").isdigit()


def _host_meet(a: str, b: str) -> str | None:
    if a == b:
        return a
    for x, y in ((a, b), (b, a)):
        # "*.x.org" holds every subdomain of x.org: a name or a narrower suffix under it
        if x.startswith("*.") and not _is_ip(y) and y.endswith(x[1:]):
            return y
    return None


_GLOB = set("*?[")


def _path_within(p: str, q: str) -> bool:
    """Does every path matching pattern ``p`` also match pattern ``q``?
    (False when unsure.)  See netrules._path_matches for what they mean."""
    if p == q:
        return True
    if _GLOB & set(q):
        return False  # a glob holds another pattern only when equal
    if _GLOB & set(p):
        segments = p.split("/")
        first = next(i for i, s in enumerate(segments) if _GLOB & set(s))
        # every match starts with the literal segments before the first glob,
        # and has more after them
        p = "/".join(segments[:first]) + "/"
    if q.endswith("/"):
        return p.startswith(q)
    return p == q or p.startswith(q + "/")


# -- what changed, in words ------------------------------------------------------------

# Policy field -> profile key, where the names differ
FIELD_KEYS = {
    "workspace": "filesystem.workspace", "scratch": "filesystem.scratch",
    "writable": "filesystem.writable", "deny_read": "filesystem.deny_read",
    "deny_read_names": "filesystem.deny_read_names",
    "allow_read_names": "filesystem.allow_read_names", "empty_dirs": "filesystem.empty_dirs",
    "protect_git": "protect.git", "protected_names": "protect.names",
    "unprotect": "protect.unprotect", "skip_dirs": "protect.skip_dirs",
    "socket_scan": "sockets.scan", "socket_scan_depth": "sockets.max_depth",
    "socket_skip_dirs": "sockets.skip_dirs", "env_deny": "env.deny", "env_pass": "env.pass",
    "env_set": "env.set", "caches": "caches", "network": "network.mode",
    "egress_allow": "network.allow", "egress_deny": "network.deny",
    "egress_hosts": "network.hosts", "egress_max_connections": "network.max_connections",
    "forwards": "network.forward",
    "syscalls_enabled": "syscalls.enabled", "syscall_set": "syscalls.set",
    "syscall_deny": "syscalls.deny", "syscall_allow": "syscalls.allow",
    "allow_32bit": "syscalls.allow_32bit", "unix_sockets": "syscalls.unix_sockets",
    "audit_classes": "audit", "require": "require",
    **{name: f"limits.{name}" for name in ("core_dumps", "max_open_files", "max_file_size_mb",
                                            "cpu_seconds", "max_processes", "address_space_mb",
                                            "timeout_seconds", "pids_max", "memory_max_mb")},
}


def _show(value) -> str:
    if isinstance(value, (Access, NetworkMode)):
        return value.value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, EgressRule):
        from sandbox.egress.netrules import describe as rule

        return rule(value)
    if isinstance(value, tuple) and len(value) == 5 and isinstance(value[1], int):
        from sandbox.egress.hostports import describe as grant  # a [[network.forward]] grant

        return "forward " + grant(value)
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, str) for v in value):
        return f"{value[0]} = {value[1]}"
    return str(value)


def describe(before: Policy, after: Policy, source: str) -> tuple[Weakening, ...]:
    """What ``tighten`` changed, one entry per field (a ``Weakening`` with the
    opposite meaning: source, key, detail)."""
    out = []
    for name in FIELD_KEYS:
        old, new = getattr(before, name), getattr(after, name)
        if old == new:
            continue
        if isinstance(old, tuple):
            added = [v for v in new if v not in old]
            removed = [v for v in old if v not in new]
            words = ([f"added {', '.join(map(_show, added))}"] if added else []) + (
                [f"removed {', '.join(map(_show, removed))}"] if removed else [])
            detail = "; ".join(words)
        else:
            detail = f"{_show(old)} -> {_show(new)}"
        out.append(Weakening(source, FIELD_KEYS[name], detail))
    return tuple(out)
