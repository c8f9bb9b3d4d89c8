"""The fallback backend: Policy + Layout -> the ``sandbox.linux.confine`` argv.

Used only when bwrap cannot make its namespaces (a container's seccomp
profile, Ubuntu's AppArmor rule; see ``sandbox.linux.ladder``) and the profile
accepts it.  The command then runs on the host's own mounts, confined by
what a process can do to itself before exec: Landlock (filesystem, TCP
ports, signal and abstract-socket scopes), the same seccomp deny set as
the bwrap backend plus a refusal of internet sockets, no_new_privs, no
capabilities, and the same rlimits and cgroup.  A pure function like
``sandbox.linux.bwrap.build``: the shim walks the filesystem when it runs.

What this cannot express is named, never dropped in silence: ``degraded``
lists it, the run prints it in one line before the command starts, and
``explain`` and the report carry it.
"""

from __future__ import annotations

import json
import sys

from sandbox.envfilter import sandbox_env
from sandbox.errors import SetupError
from sandbox.invocation import Invocation
from sandbox.layout import SCRATCH_DIRS, Layout
from sandbox.policy import Access, NetworkMode, Policy
from sandbox.linux.seccomp import EPERM, Rule

STATUS_FD = 3
SECCOMP_FD = 4
ABI_MIN = 1
AF_INET, AF_INET6 = 2, 10


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


# socket types other than SOCK_STREAM (the low 4 bits of the type argument;
# SOCK_NONBLOCK and SOCK_CLOEXEC sit above them): DGRAM, RAW, RDM, SEQPACKET,
# DCCP, PACKET
NON_STREAM_TYPES = (2, 3, 4, 5, 6, 10)
# stream protocols Landlock's TCP rules do not see: SCTP, MPTCP
NON_TCP_STREAM_PROTOCOLS = (132, 262)
PROXY_HOST = "127.0.0.1"


def seccomp_extra(policy: Policy) -> tuple[Rule, ...]:
    """Rules added to the profile's seccomp set: the network without a namespace.

    Landlock's network rules cover TCP ports only (not UDP, not addresses),
    so the rest is closed one level down.  Without network,
    ``socket(AF_INET/AF_INET6)`` fails with EPERM.  In proxy mode only TCP
    stream sockets can be made (Landlock then lets them connect to the
    proxy's port alone).  Unix sockets and socketpairs are untouched.
    """
    if policy.network is not NetworkMode.PROXY:
        why = "no network namespace: internet sockets refused"
        return tuple(Rule(EPERM, "socket", ((0, 0xFFFFFFFF, family),), why)
                     for family in (AF_INET, AF_INET6))
    out = []
    for family in (AF_INET, AF_INET6):
        for kind in NON_STREAM_TYPES:
            out.append(Rule(EPERM, "socket", ((0, 0xFFFFFFFF, family), (1, 0xF, kind)),
                            "proxy mode without a namespace: TCP only"))
        for proto in NON_TCP_STREAM_PROTOCOLS:
            out.append(Rule(EPERM, "socket", ((0, 0xFFFFFFFF, family), (2, 0xFFFFFFFF, proto)),
                            "proxy mode without a namespace: TCP only"))
    return tuple(out)


def check(policy: Policy, abi: int) -> None:
    """Refuse what the fallback cannot enforce at all (fail closed)."""
    if policy.forwards:
        raise SetupError(
            f"profile '{policy.name}' forwards host ports ([[network.forward]]), which needs a "
            "network namespace of the run's own, and the Landlock + seccomp fallback has none "
            "(the command would reach every host loopback port or none); the command was not run",
            hint="let bwrap run (sandbox doctor names the fix), or use a profile without "
                 "[[network.forward]]")
    if policy.network is NetworkMode.PROXY and abi < 4:
        raise SetupError(
            f"profile '{policy.name}' opens the network through the egress proxy, and without "
            f"a network namespace only Landlock's TCP rules (ABI 4, this kernel has {abi}) "
            "could keep the command to the proxy's port; the command was not run",
            hint="let bwrap run (sandbox doctor names the fix), or use a profile with "
                 'network.mode = "none"')
    if not policy.syscalls_enabled:
        raise SetupError(
            f"profile '{policy.name}' turns the seccomp filter off ([syscalls] enabled = false), "
            "and without a network namespace the fallback needs it to keep the network closed; "
            "the command was not run",
            hint="remove [syscalls] enabled = false, or let bwrap run (sandbox doctor)")


def plan_paths(policy: Policy, layout: Layout) -> tuple[list[str], list[str], list[str]]:
    """(paths made unreadable, secrets Landlock cannot hide, paths read by a rule of their own).

    A secret inside a writable root, or inside a directory that needs a
    read rule of its own (the workspace under /tmp), cannot be hidden:
    Landlock grants by directory and never takes away beneath a grant.
    """
    blind = list(SCRATCH_DIRS) + list(layout.empty_dirs)
    if layout.state_dir:
        blind.append(layout.state_dir)
    read = list(layout.exposed_dirs()) + list(layout.scratch_parents)
    if policy.workspace is Access.READ:
        read.append(layout.workspace)
    # only what lies beneath a blind spot needs a rule: the walk grants the rest
    read = sorted({p for p in read if any(_within(p, b) for b in blind)}
                  - set(layout.writable_roots))
    granted = tuple(layout.writable_roots) + tuple(read)
    hidden, exposed = [], []
    for path in layout.masked_dirs + layout.masked_files:
        (exposed if any(_within(path, r) for r in granted) else hidden).append(path)
    exposed += [target for _source, target in layout.tracked_secrets]
    return sorted(set(hidden + blind)), sorted(set(exposed)), read


def degraded(policy: Policy, layout: Layout, abi: int) -> list[str]:
    """What the bwrap backend enforces and this one does not, in short phrases."""
    _hidden, exposed, _read = plan_paths(policy, layout)
    out = []
    if layout.read_only:
        out.append(f"{len(layout.read_only)} protected path(s) in the workspace writable "
                   "(the audit after the run still neutralises changes)")
    if exposed:
        out.append(f"{len(exposed)} secret file(s) inside the workspace readable")
    out.append("file names in hidden directories listable (secrets, /tmp, /run; not their contents)")
    # Landlock has no right for metadata: chmod, chown (to one's own group),
    # utime and setxattr reach any file the user owns (for root: the system's)
    out.append("modes, times and xattrs of files outside the workspace changeable "
               "(Landlock does not cover metadata)")
    if policy.unix_sockets:
        out.append("host unix sockets reachable by path")
    # no network namespace: /proc/net and netlink's sock_diag show the host's sockets
    out.append("host processes visible, and the host's network connections (/proc/net)")
    # no IPC namespace, and Landlock does not cover SysV IPC or mqueues (names, not paths)
    out.append("SysV shared memory, semaphores and message queues of host processes "
               "reachable (no IPC namespace)")
    if not policy.pids_max:
        out.append("detached processes can outlive a run that sandbox kills (no cgroup)")
    if abi < 6:
        out.append(f"signals to host processes not scoped (Landlock ABI {abi} < 6)")
    if abi < 3:
        out.append(f"truncate() outside the workspace not refused (Landlock ABI {abi} < 3)")
    if policy.network is NetworkMode.PROXY:
        out.append("TCP to any address on the proxy's port number connects (Landlock's rules "
                   "name ports, not addresses); UDP refused; the proxy listens on the host's "
                   "loopback")
    else:
        out.append("no loopback TCP/UDP (internet sockets refused)")
    return out


def hand_proxy_listener(channel) -> int:
    """Give the egress proxy (``sandbox.egress.session.Session``) its listener for a
    fallback run, on the host's loopback at a free port; return the port.

    The same hand-over as the network bridge's (``sandbox.egress.netns``), without
    the namespace: afterwards only the proxy holds the socket.
    """
    import socket
    import struct

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind((PROXY_HOST, 0))
        listener.listen(1024)
        port = listener.getsockname()[1]
        channel.sendmsg([b"L\xff"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                   struct.pack("i", listener.fileno()))],
                         getattr(socket, "MSG_NOSIGNAL", 0))  # macOS has none
    finally:
        listener.close()
        channel.close()
    return port


def with_proxy_port(argv, port: int) -> list[str]:
    """The shim's argv with the proxy's port in its spec (known only at run time)."""
    argv = list(argv)
    at = argv.index("--spec") + 1
    spec = json.loads(argv[at])
    spec["proxy_port"] = port
    argv[at] = json.dumps(spec, separators=(",", ":"))
    return argv


def build(policy: Policy, layout: Layout, command: list[str], environ: dict[str, str], *,
          state: str, ctty_helper: str | None = None, seccomp_file: str | None = None,
          python: str | None = None) -> Invocation:
    """The argv that runs ``command`` under ``sandbox.linux.confine``."""
    hidden, _exposed, read = plan_paths(policy, layout)
    spec = {
        "abi_min": ABI_MIN,
        "hidden": hidden,
        "read": read,
        "write": list(layout.writable_roots) if policy.workspace is Access.WRITE
        else [r for r in layout.writable_roots if r != layout.workspace],
        "scratch_base": f"{state}/scratch",
        "cwd": layout.cwd,
        "proxy_port": None,
    }
    # -I: none of the caller's PYTHON* variables, no user site, not the
    # current directory on sys.path (it is the workspace)
    argv = [python or sys.executable, "-I", "-m", "sandbox.linux.confine"]
    seccomp_index = None
    if seccomp_file is not None:
        argv += ["--seccomp", str(SECCOMP_FD)]
        seccomp_index = len(argv) - 1
    argv += ["--json-status-fd", str(STATUS_FD)]
    status_index = len(argv) - 1
    argv += ["--spec", json.dumps(spec, separators=(",", ":")), "--"]
    if ctty_helper:
        argv += [ctty_helper, "--wait", "--ctty", "--"]
    argv += command
    env = sandbox_env(environ, policy, layout.cache_dir, layout.cwd)
    return Invocation(tuple(argv), env, status_index, ctty_helper is not None,
                      seccomp_index, seccomp_file)
