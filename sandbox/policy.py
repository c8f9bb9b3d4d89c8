"""The sandbox policy as plain, immutable data.

A ``Policy`` is what a profile means once it has been validated, merged with
the profiles it extends, and had its placeholders expanded.  Backends read it;
nothing here touches the filesystem or spawns anything.  Standard library only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Access(enum.Enum):
    """How the sandboxed command may use a place."""

    READ = "read"
    WRITE = "write"


class NetworkMode(enum.Enum):
    """How the sandbox reaches the network.

    ``NONE``: own network namespace, loopback only (the safe default).
    ``PROXY``: own network namespace whose only way out is the egress proxy
    listening on its loopback; the proxy runs on the host and lets through
    only what the ``egress_allow`` rules grant.
    """

    NONE = "none"
    PROXY = "proxy"


@dataclass(frozen=True, slots=True)
class EgressRule:
    """One ``[[network.allow]]`` or ``[[network.deny]]`` entry, validated.

    ``host`` is normalised: a lowercase ASCII name without a trailing dot
    (``pypi.org``), a suffix pattern (``*.pythonhosted.org``: subdomains
    only), or a canonical IP literal (``127.0.0.1``, ``::1``).  Empty
    ``methods``/``paths`` mean any; a rule with either can only be checked on
    plain HTTP, never inside a CONNECT tunnel.
    """

    host: str
    ports: tuple[int, ...] = (443,)
    methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    source: str = ""  # where it came from, for messages: "pypi: network.allow[1]"
    # TLS inspection (allow rules only; sandbox.egress.tlsinspect): the proxy ends
    # the client's TLS with a per-run CA, so methods and paths are checked
    # inside HTTPS too; upstream is verified against the host's roots, or
    # only against ``upstream_ca`` (an absolute path) when it is set
    inspect: bool = False
    upstream_ca: str = ""

    def scoped(self) -> bool:
        """True when the rule limits methods or paths (plain HTTP only)."""
        return bool(self.methods or self.paths)

    def as_tuple(self) -> tuple:
        """Plain data for caches and the proxy process (``from_tuple`` reads it back)."""
        return (self.host, tuple(self.ports), tuple(self.methods), tuple(self.paths), self.source,
                self.inspect, self.upstream_ca)

    @classmethod
    def from_tuple(cls, data) -> "EgressRule":
        host, ports, methods, paths, source, *tls = data
        return cls(host, tuple(ports), tuple(methods), tuple(paths), source, *tls)


@dataclass(frozen=True, slots=True)
class Weakening:
    """A protection that a child profile or a CLI option removed, explicitly.

    ``explain`` and ``--report`` show every one, so nothing is weakened quietly.
    """

    source: str  # profile name or CLI option that did it
    key: str  # e.g. "filesystem.allow_read"
    detail: str  # what was removed, in words


@dataclass(frozen=True, slots=True)
class Policy:
    """The resolved policy.  All paths are absolute and placeholder-free.

    Path lists may hold shell-style wildcards (``*``, ``?``, ``[...]``) in
    ``deny_read``; everything else is literal.
    """

    name: str
    chain: tuple[str, ...]  # profiles from the root ancestor to this one
    digest: str  # sha256 over the text of every profile in the chain
    # the file of each profile in ``chain``: read-only inside the run when it
    # lies in a writable root, so the command cannot weaken the next run
    sources: tuple[str, ...] = ()
    description: str = ""
    # where bwrap cannot run: "full" fails closed, "fallback" accepts
    # sandbox.linux.fallback (Landlock + seccomp); see sandbox.linux.ladder
    require: str = "fallback"

    # filesystem
    workspace: Access = Access.WRITE
    scratch: Access = Access.WRITE  # private /tmp, /var/tmp, /dev/shm
    writable: tuple[str, ...] = ()
    deny_read: tuple[str, ...] = ()
    deny_read_names: tuple[str, ...] = ()  # file-name patterns inside writable roots
    allow_read_names: tuple[str, ...] = ()  # exceptions to deny_read_names
    empty_dirs: tuple[str, ...] = ()  # replaced by an empty read-only tmpfs

    # protected paths inside writable roots
    protect_git: bool = True
    protected_names: tuple[str, ...] = ()
    unprotect: tuple[str, ...] = ()
    skip_dirs: tuple[str, ...] = ()

    # host sockets outside the empty dirs
    socket_scan: tuple[str, ...] = ()
    socket_scan_depth: int = 4
    socket_skip_dirs: tuple[str, ...] = ()

    # environment
    env_deny: tuple[str, ...] = ()
    env_pass: tuple[str, ...] = ()
    env_set: tuple[tuple[str, str], ...] = ()
    caches: tuple[tuple[str, str], ...] = ()  # env var -> subdirectory of the cache dir

    network: NetworkMode = NetworkMode.NONE
    egress_allow: tuple[EgressRule, ...] = ()
    egress_deny: tuple[EgressRule, ...] = ()  # wins over egress_allow
    egress_hosts: tuple[tuple[str, str], ...] = ()  # name -> address, like curl --resolve
    egress_max_connections: int = 256  # the proxy's open connections at once (0: 4096)
    # [[network.credentials]] as Credential.as_tuple() (sandbox.egress.credentials),
    # and (host pattern, ports, strip_headers, refuse_headers) of allow rules
    egress_credentials: tuple[tuple, ...] = ()
    egress_headers: tuple[tuple, ...] = ()
    # [[network.forward]]: host loopback TCP ports relayed into the run's
    # namespace, each (host, port, inside_port, name, source); sandbox.egress.hostports
    forwards: tuple[tuple, ...] = ()

    # seccomp (rule sets live in bwrap/seccomp.toml)
    syscalls_enabled: bool = True
    syscall_set: str = "default"
    syscall_deny: tuple[str, ...] = ()
    syscall_allow: tuple[str, ...] = ()
    allow_32bit: bool = False
    unix_sockets: bool = True

    # persistence audit: the classes checked after each run (see sandbox.audit)
    audit_classes: tuple[str, ...] = ("git_hooks", "git_config", "shell_rc", "agent_config",
                                      "editor_config", "envrc", "hook_managers",
                                      "package_config")

    weakenings: tuple[Weakening, ...] = field(default=())

    # GitHub Actions file commands for later steps ([ci]; see sandbox.ghactions)
    github_env: bool = False
    github_path: bool = False

    # resource limits ([limits]; 0 = no limit; see sandbox.limits)
    core_dumps: bool = False
    max_open_files: int = 65536
    max_file_size_mb: int = 0
    cpu_seconds: int = 0
    max_processes: int = 0
    address_space_mb: int = 0
    timeout_seconds: int = 0
    pids_max: int = 0
    memory_max_mb: int = 0

    # what a managed policy or an untrusted project profile took away
    # (sandbox.tighten): (source, key, detail), shown by explain
    tightenings: tuple[Weakening, ...] = ()

    # -- queries -----------------------------------------------------------
    def uses_caches(self) -> bool:
        return self.workspace is Access.WRITE and bool(self.caches)


# network.max_connections when no profile sets it
EGRESS_MAX_CONNECTIONS = Policy.__dataclass_fields__["egress_max_connections"].default

# [limits] when no profile in the chain sets a key: the same as profiles/default.toml
LIMIT_DEFAULTS = tuple((name, Policy.__dataclass_fields__[name].default) for name in (
    "core_dumps", "max_open_files", "max_file_size_mb", "cpu_seconds", "max_processes",
    "address_space_mb", "timeout_seconds", "pids_max", "memory_max_mb"))


# -- plain-data form, for the policy cache and `explain --json` -----------------

def to_data(policy: Policy) -> dict:
    out: dict = {}
    for name in Policy.__slots__:
        value = getattr(policy, name)
        if isinstance(value, enum.Enum):
            value = value.value
        elif name in ("weakenings", "tightenings"):
            value = tuple((w.source, w.key, w.detail) for w in value)
        elif name in ("egress_allow", "egress_deny"):
            value = tuple(r.as_tuple() for r in value)
        out[name] = value
    return out


def from_data(data: dict) -> Policy:
    kwargs = dict(data)
    kwargs["workspace"] = Access(kwargs["workspace"])
    kwargs["scratch"] = Access(kwargs["scratch"])
    kwargs["network"] = NetworkMode(kwargs["network"])
    kwargs["weakenings"] = tuple(Weakening(*w) for w in kwargs["weakenings"])
    kwargs["tightenings"] = tuple(Weakening(*w) for w in kwargs.get("tightenings", ()))
    for name in ("egress_allow", "egress_deny"):
        kwargs[name] = tuple(EgressRule.from_tuple(r) for r in kwargs[name])
    for name in ("env_set", "caches", "egress_hosts"):
        kwargs[name] = tuple(tuple(pair) for pair in kwargs[name])
    kwargs["forwards"] = tuple(tuple(g) for g in kwargs.get("forwards", ()))
    return Policy(**kwargs)
