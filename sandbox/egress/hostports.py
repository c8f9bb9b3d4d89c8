"""``[[network.forward]]``: host loopback TCP ports granted to the command, as data.

A grant names one TCP port of a service on the *host's* loopback
(PostgreSQL on 5432, Redis on 6379).  The run's network namespace has its
own loopback, so the service is unreachable there; with the grant, the
network bridge (``sandbox.egress.netns``) listens on 127.0.0.1:``inside_port``
(and ::1) inside the namespace and the host side (``sandbox.egress.forward``)
relays each connection to the host's ``host``:``port``, and nowhere else.

Only host loopback is grantable (``127.0.0.1`` or ``::1``): a forward to any
other address would be an unfiltered route around the egress proxy.

This module parses, checks and describes grants; it is pure (standard
library only, no sockets).  A grant travels as a plain tuple
``(host, port, inside_port, name, source)`` in the policy, the cached plan
and the report.
"""

from __future__ import annotations

HOSTS = ("127.0.0.1", "::1")
KEYS = ("port", "host", "inside_port", "name")
MAX_GRANTS = 32  # two listeners each, all handed over in one SCM_RIGHTS message
MAX_NAME = 64
# Ports the run's namespace already uses for the sandbox itself (sandbox.egress.netns,
# sandbox.egress.dns): a grant there would take the proxy's or the resolver's place.
RESERVED = {3128: "the egress proxy's port", 53: "the name resolver's port"}


class GrantError(ValueError):
    """A bad ``[[network.forward]]`` entry: ``key`` is the sub-key at fault."""

    def __init__(self, key: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.key = key
        self.message = message
        self.hint = hint


def _port(entry: dict, key: str) -> int:
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise GrantError(key, f"must be an integer port number, not {type(value).__name__}",
                         hint=f"e.g. {key} = 5432")
    if not 1 <= value <= 65535:
        raise GrantError(key, f"must be a port between 1 and 65535, not {value}",
                         hint=f"e.g. {key} = 5432")
    return value


def parse(entry: object, source: str) -> tuple:
    """One table -> ``(host, port, inside_port, name, source)``.  Raises GrantError."""
    if not isinstance(entry, dict):
        raise GrantError("", "each entry must be a table",
                         hint="write each grant as [[network.forward]] with port = N below it")
    for key in entry:
        if key not in KEYS:
            raise GrantError(key, "unknown key",
                             hint=f"known keys in [[network.forward]]: {', '.join(KEYS)}")
    if "port" not in entry:
        raise GrantError("port", "is required",
                         hint="name the host's port, e.g. port = 5432 for PostgreSQL")
    port = _port(entry, "port")
    inside = _port(entry, "inside_port") if "inside_port" in entry else port
    host = entry.get("host", "127.0.0.1")
    if not isinstance(host, str) or host not in HOSTS:
        shown = host if isinstance(host, str) else type(host).__name__
        raise GrantError("host", f"{shown!r} is not the host's loopback: only \"127.0.0.1\" "
                                 "or \"::1\" can be forwarded",
                         hint="a service elsewhere is reached through the egress proxy "
                              "(network.mode = \"proxy\" and a [[network.allow]] rule)")
    if inside in RESERVED:
        raise GrantError("inside_port" if "inside_port" in entry else "port",
                         f"{inside} is {RESERVED[inside]} inside the sandbox",
                         hint=f"set inside_port = to another port (e.g. {inside + 10000}); "
                              "the command then connects to 127.0.0.1 on that port")
    name = entry.get("name", "")
    if not isinstance(name, str) or len(name) > MAX_NAME or not name.isprintable():
        raise GrantError("name", f"must be a short printable string (at most {MAX_NAME} "
                                 "characters)", hint='e.g. name = "postgres"')
    return (host, port, inside, name, source)


def check_all(grants: list[tuple]) -> int | None:
    """The index (0-based) of the first grant whose inside port an earlier one
    already uses, or None.  Identical grants are merged before this."""
    seen: set[int] = set()
    for index, grant in enumerate(grants):
        if grant[2] in seen:
            return index
        seen.add(grant[2])
    return None


def same(a: tuple, b: tuple) -> bool:
    """The same grant, whatever its name and the profile it came from."""
    return a[:3] == b[:3]


def describe(grant: tuple) -> str:
    """One line: ``127.0.0.1:5432 (host) at 127.0.0.1:5432 inside ("postgres")``."""
    host, port, inside, name = grant[:4]
    shown = f"[{host}]" if ":" in host else host
    words = f"host {shown}:{port} reachable inside at 127.0.0.1:{inside}"
    return words + (f" ({name})" if name else "")


def plan(policy) -> list | None:
    """What a run needs to forward, as plain data (cached with the plan)."""
    if not policy.forwards:
        return None
    return [list(g[:4]) for g in policy.forwards]


# setsockopt(SOL_SOCKET, ...) options that would let a command into (or rule)
# the SO_REUSEPORT group of a granted port's listeners: SO_REUSEPORT,
# SO_ATTACH_REUSEPORT_CBPF, SO_ATTACH_REUSEPORT_EBPF, SO_DETACH_REUSEPORT_BPF
REUSEPORT_OPTIONS = (15, 51, 52, 68)


def seccomp_rules(policy) -> tuple:
    """Seccomp rules for a run with grants: no SO_REUSEPORT for the command.

    The bridge's listeners on a granted port share it through SO_REUSEPORT
    (one per run of a session, ``sandbox.egress.netns``), and the kernel lets any
    process of the same uid join such a group: a command would then be
    handed connections meant for the host service, another run's database
    password with them.  Refused with EPERM; a server that asks for
    SO_REUSEPORT for itself fails to start and says so.
    """
    if not policy.forwards:
        return ()
    from sandbox.linux.seccomp import EPERM, Rule

    why = "[[network.forward]]: a command joining a granted port's listeners"
    return tuple(Rule(EPERM, "setsockopt", ((1, 0xFFFFFFFF, 1), (2, 0xFFFFFFFF, option)), why)
                 for option in REUSEPORT_OPTIONS)
