"""Policy + host facts -> a Seatbelt profile, its ``-D`` parameters and the argv.

Pure: nothing here reads the filesystem or spawns.  ``sandbox.macos.hostfacts``
resolves the paths first (real paths, the ``/private`` aliases, wildcard
matches), so the rules below are only about meaning.

The profile is the static text ``seatbelt/base.sb`` followed by generated
rules.  SBPL lets the last matching rule decide, so the generated part is
ordered from broad to narrow:

1. writes to the writable roots (workspace, the run's TMPDIR, the
   per-workspace tool cache, ``writable`` and --allow-write; reads are
   allowed everywhere by the base text);
2. unix sockets inside the writable roots, and the egress proxy's
   ``localhost:PORT`` when the run has one;
3. sandbox's state directory hidden, its tool cache given back;
4. secrets denied (read, write, hard links), then dotenv files in the roots;
5. protected paths denied for every write (unlink and rename included), and
   the directories on the way to them (and the ones kept in place) denied
   unlink and create, so no parent can be renamed away;
6. no setuid/setgid bits.

Every host path is a ``(param "NAME")`` whose value goes in ``-D NAME=VALUE``;
the text itself holds only fixed device paths (/dev/...), name patterns
(``/\\.env$``) and the proxy's port number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sandbox import resources
from sandbox.errors import SandboxError
from sandbox.policy import Access, Policy

SANDBOX_EXEC = "/usr/bin/sandbox-exec"
BASE_FILE = "base.sb"

# Mach services TLS certificate evaluation needs, allowed only when the run
# has an egress proxy (with no network they would be useless, and trustd can
# fetch OCSP/CRL/AIA URLs from outside the sandbox: docs/macos.md).
TLS_SERVICES = (
    # Go's crypto/x509 verifies through Security.framework (SecTrustEvaluate);
    # so do curl and git-remote-https from the Command Line Tools, Python's
    # truststore and Node started with --use-system-ca
    "com.apple.trustd.agent",
    # the keychain's certificates (login and System keychains) for the same
    "com.apple.SecurityServer",
    # certificate revocation checks made during that evaluation
    "com.apple.ocspd",
)


@dataclass(frozen=True, slots=True)
class Context:
    """What the host says, resolved before the profile is made (hostfacts.gather).

    Every path is absolute and already resolved; lists carry every spelling a
    Mac may report (``/private/var/...`` and ``/var/...``).
    """

    workspace: str  # real path
    home: str
    tmpdir: str | None = None  # the run's own TMPDIR (None: no scratch)
    cache_dir: str | None = None  # the per-workspace tool cache
    state_dir: str | None = None  # sandbox's state, hidden except the cache
    writable: tuple[str, ...] = ()  # policy.writable and --allow-write
    secrets: tuple[str, ...] = ()  # deny_read entries and masked files, resolved
    secret_globs: tuple[tuple[str, str], ...] = ()  # (directory, name pattern)
    protected: tuple[str, ...] = ()  # protected paths in the writable roots
    keep_in_place: tuple[str, ...] = ()  # directories that must not be renamed
    proxy_port: int | None = None  # the egress proxy on the host's 127.0.0.1


@dataclass(frozen=True)
class Seatbelt:
    sbpl: str
    params: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)


class ProfileError(SandboxError):
    """A profile value that cannot become a Seatbelt rule."""

    kind = "profile error"
    code = "profile_invalid"


def base_text() -> str:
    return (resources.data_dir("seatbelt") / BASE_FILE).read_text(encoding="utf-8")


class _Params:
    """Names for host paths: one ``-D`` parameter per distinct value and kind."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self._names: dict[tuple[str, str], str] = {}
        self._count: dict[str, int] = {}

    def fixed(self, name: str, value: str) -> str:
        self.values[name] = value
        self._names[(name, value)] = name
        return f'(param "{name}")'

    def numbered(self, kind: str, value: str) -> str:
        name = self._names.get((kind, value))
        if name is None:
            n = self._count.get(kind, 0)
            self._count[kind] = n + 1
            name = f"{kind}_{n}"
            self._names[(kind, value)] = name
            self.values[name] = value
        return f'(param "{name}")'


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _parents(path: str, root: str) -> list[str]:
    """The directories from ``path``'s parent up to ``root`` itself."""
    out = []
    parent = path.rsplit("/", 1)[0]
    while _within(parent, root) and parent:
        out.append(parent)
        if parent == root:
            break
        parent = parent.rsplit("/", 1)[0]
    return out


_NAME_SAFE = re.compile(r"[A-Za-z0-9_\-~@%,:= ]")


def name_regex(pattern: str, subtree: bool = False) -> str:
    """A profile's file-name pattern (``*`` and ``?``; sandbox.patterns) as an
    SBPL regex on a path's last part: ``.env.*`` becomes ``/\\.env\\.[^/]*$``.
    With ``subtree`` it also matches everything below such a name (a
    directory).  Characters that would need quoting inside ``#"..."`` are
    refused rather than guessed at.
    """
    out = ["/"]
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c in "[]":  # literal in profile patterns (sandbox.patterns)
            out.append("\\" + c)
        elif c == ".":
            out.append(r"\.")
        elif c == "+":
            out.append(r"\+")
        elif _NAME_SAFE.match(c):
            out.append(c)
        else:
            raise ProfileError(f"the name pattern {pattern!r} cannot be written in a Seatbelt "
                              "profile", hint="use letters, digits, '.', '-', '_', '*' and '?'")
        i += 1
    out.append("(/.*)?$" if subtree else "$")
    return "".join(out)


def _filters(terms: list[str], indent: str = "  ") -> str:
    return "\n".join(indent + t for t in terms)


def _rule(comment: str, head: str, terms: list[str]) -> list[str]:
    if not terms:
        return []
    lines = [f";; {line}" if line else ";;" for line in comment.split("\n")] if comment else []
    return lines + [f"({head}\n{_filters(terms)})", ""]


def writable_roots(policy: Policy, ctx: Context) -> list[tuple[str, str]]:
    """(kind, path) of every place the command may write, in a fixed order."""
    roots: list[tuple[str, str]] = []
    if policy.workspace is Access.WRITE:
        roots.append(("WORKSPACE", ctx.workspace))
    if policy.scratch is Access.WRITE and ctx.tmpdir:
        roots.append(("TMPDIR", ctx.tmpdir))
    if policy.uses_caches() and ctx.cache_dir:
        roots.append(("CACHE_DIR", ctx.cache_dir))
    roots.extend(("WRITABLE", p) for p in ctx.writable)
    return roots


def build(policy: Policy, ctx: Context, command=(), *,
          sandbox_exec: str = SANDBOX_EXEC) -> Seatbelt:
    """The profile, its parameters and the ``sandbox-exec`` argv for ``command``.

    ``ctx.proxy_port`` 0 stands for "not known yet": a run learns its proxy's
    port only once the proxy listens, and ``with_proxy_port`` puts it in.
    """
    params = _Params()

    def ref(kind: str, value: str) -> str:
        if kind in ("WORKSPACE", "TMPDIR", "CACHE_DIR", "STATE_DIR"):
            return params.fixed(kind, value)
        return params.numbered(kind, value)

    roots = writable_roots(policy, ctx)
    out: list[str] = ["", ";; ---- generated from the policy "
                      f"'{policy.name}' ({' -> '.join(policy.chain)}) ----", ""]

    out += _rule("Writes: the workspace, the run's own TMPDIR, the per-workspace tool\n"
                 "cache, `writable` and --allow-write.  Nothing else on the host.",
                 "allow file-write*", [f"(subpath {ref(k, p)})" for k, p in roots])

    # -- sockets -------------------------------------------------------------
    if policy.unix_sockets and roots:
        out += _rule("AF_UNIX sockets (test servers, asyncio, multiprocessing's forkserver,\n"
                     "Python's multiprocessing.Manager) may be made at all ...",
                     "allow system-socket", ["(socket-domain AF_UNIX)"])
        out += _rule("... and bound and connected only inside the writable roots; the\n"
                     "host's own sockets (docker, ssh-agent, gpg-agent, launchd's) stay\n"
                     "unreachable.",
                     "allow network-bind",
                     [f"(local unix-socket (subpath {ref(k, p)}))" for k, p in roots])
        out += _rule("", "allow network-outbound",
                     [f"(remote unix-socket (subpath {ref(k, p)}))" for k, p in roots])
    if ctx.proxy_port is not None:
        port = int(ctx.proxy_port)
        if not 0 <= port < 65536:
            raise ProfileError(f"proxy port {port} is out of range")
        out += _rule("Network: only the egress proxy this run started on the host's\n"
                     "loopback; every other address, and DNS, stays closed.  The proxy\n"
                     "applies the profile's [[network.allow]] rules.",
                     "allow network-outbound", [f'(remote ip "localhost:{port}")'])
        out += _rule("TLS certificate evaluation through Security.framework: Go's\n"
                     "crypto/x509, curl and git-remote-https from the Command Line Tools,\n"
                     "Python's truststore, Node with --use-system-ca.",
                     "allow mach-lookup", [f'(global-name "{s}")' for s in TLS_SERVICES])
    else:
        out += [";; Network: none.  (deny default) refuses every TCP and UDP socket",
                ";; operation and the DNS resolver's service, so clients fail at once.", ""]

    # -- sandbox's own state ---------------------------------------------------
    if ctx.state_dir:
        out += _rule("sandbox's own state (plans, scans, the quarantine) is not the\n"
                     "command's business ...",
                     "deny file-read* file-write*", [f"(subpath {ref('STATE_DIR', ctx.state_dir)})"])
        if policy.uses_caches() and ctx.cache_dir and _within(ctx.cache_dir, ctx.state_dir):
            out += _rule("... except this workspace's tool cache inside it.",
                         "allow file-read* file-write*",
                         [f"(subpath {ref('CACHE_DIR', ctx.cache_dir)})"])

    # -- secrets -------------------------------------------------------------
    out += _rule("Secrets: not readable, not writable, no hard link to them.  Seatbelt\n"
                 "can refuse a file but not show it empty, as Linux does.",
                 "deny file-read* file-write* file-link",
                 [f"(subpath {ref('SECRET', p)})" for p in ctx.secrets])
    out += _rule("Secrets given with a wildcard: that name (and what is below it) anywhere\n"
                 "below the directory.",
                 "deny file-read* file-write* file-link",
                 [f"(require-all (subpath {ref('SECRET_DIR', d)}) (regex #\"{name_regex(n, subtree=True)}\"))"
                  for d, n in ctx.secret_globs])
    env_roots = ([("WORKSPACE", ctx.workspace)] if policy.workspace is not Access.WRITE else []) + roots
    if policy.deny_read_names:
        names = [f'(regex #"{name_regex(n)}")' for n in policy.deny_read_names]
        keep = [f'(require-not (regex #"{name_regex(n)}"))' for n in policy.allow_read_names]
        match = names[0] if len(names) == 1 else f"(require-any {' '.join(names)})"
        out += _rule("Dotenv files (deny_read_names, minus allow_read_names) in the workspace\n"
                     "and the writable roots: refused, not emptied.  Only regular files:\n"
                     "a virtualenv directory named .env keeps working.",
                     "deny file-read* file-write* file-link",
                     [f"(require-all (subpath {ref(k, p)}) (vnode-type REGULAR-FILE) {match}"
                      + "".join(f" {k2}" for k2 in keep) + ")" for k, p in env_roots])

    # -- protected paths -----------------------------------------------------
    out += _rule("Protected paths (git hooks and config, agent and editor config, ...):\n"
                 "no write of any kind, which includes unlinking and renaming them, and\n"
                 "no hard link that could be written instead.",
                 "deny file-write* file-link",
                 [f"(subpath {ref('PROTECTED', p)})" for p in ctx.protected])
    keep: list[str] = []
    for path in ctx.keep_in_place:
        keep.append(path)
    for path in ctx.protected + ctx.secrets:
        for _, root in roots:
            if _within(path, root) and path != root:
                keep.extend(_parents(path, root))
    keep = list(dict.fromkeys(keep))
    out += _rule("Their parent directories (and the ones kept in place) cannot be\n"
                 "unlinked, renamed away or replaced: `mv .git .git-old` and a fresh\n"
                 "`.git/hooks` would otherwise plant a hook on the host.",
                 "deny file-write-unlink file-write-create",
                 [f"(literal {ref('KEEP', p)})" for p in keep])
    out += [";; No setuid or setgid bits on anything the command writes (last, so",
            ";; no file-write* allowance above can bring them back).",
            "(deny file-write-setugid)", ""]

    sbpl = base_text() + "\n".join(out)
    argv = [sandbox_exec, "-p", sbpl]
    for name, value in params.values.items():
        argv += ["-D", f"{name}={value}"]
    argv += ["--", *command]
    return Seatbelt(sbpl, dict(params.values), argv)


def with_proxy_port(argv, port: int) -> list[str]:
    """``argv`` from ``build`` with proxy port 0 replaced by the proxy's real one."""
    placeholder = '(remote ip "localhost:0")'
    argv = list(argv)
    if argv[1] != "-p" or argv[2].count(placeholder) != 1 or not 0 < int(port) < 65536:
        from sandbox.errors import SetupError

        raise SetupError("internal error: the Seatbelt profile has no place for the proxy's "
                         "port; the command was not run", code="internal_error")
    argv[2] = argv[2].replace(placeholder, f'(remote ip "localhost:{int(port)}")')
    return argv
