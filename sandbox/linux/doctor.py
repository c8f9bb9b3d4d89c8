"""``sandbox doctor``: what this host can enforce for the default profile, and why not.

``diagnose`` turns the host's facts (``sandbox.linux.hostprobe``) into one table of
guarantees (filesystem, secrets, network, processes, syscalls, limits), each
``enforced``, ``degraded`` or ``unavailable`` for the backend a run would use,
and the problems behind anything less than enforced with their narrowest fix
(``sandbox.fixes``).  Exit status 0 only when the default profile is enforced
in full.
"""

from __future__ import annotations

import importlib.util

from sandbox import fixes
from sandbox.linux import hostprobe

ENFORCED, DEGRADED, UNAVAILABLE = "enforced", "degraded", "unavailable"
AREAS = ("filesystem", "secrets", "network", "processes", "syscalls", "limits")
EXIT_FULL, EXIT_NOT_FULL = 0, 1

# The bwrap backend, when bwrap can make its namespaces
BWRAP_ROWS = {
    "filesystem": "host read-only; writes only to the workspace, a private /tmp and the "
                  "tool caches (mount namespace)",
    "secrets": "secret files and dirs masked, token variables removed",
    "network": "own network namespace: loopback only (or the egress proxy's rules)",
    "processes": "own PID, IPC and UTS namespaces; no capabilities; no new user namespaces",
    "syscalls": "seccomp filter (kernel attack surface, setuid bits, 32-bit ABI)",
    "limits": "rlimits (no core dumps, open files)",
}
# A fallback without user namespaces (Landlock + seccomp, sandbox.linux.landlock and
# sandbox.linux.fallback): what it cannot do whatever the workspace holds.  A run
# under it names its own degraded list (for its workspace) before it starts.
def fallback_rows(abi: int) -> dict[str, tuple[str, str]]:
    processes = ("no PID or IPC namespace: host processes (and network connections) are "
                 "visible, their SysV shared "
                 "memory, semaphores and message queues reachable; detached processes can "
                 "outlive a run that sandbox kills (no cgroup)")
    if abi < 6:
        processes += f"; signals to them not scoped (Landlock ABI {abi} < 6)"
    return {
        "filesystem": (DEGRADED, "Landlock: writes only to the workspace, scratch and caches; "
                                 "protected paths inside the workspace are writable (the audit "
                                 "neutralises changes after the run); modes, times and xattrs "
                                 "of files outside the workspace changeable (Landlock does not "
                                 "cover metadata)"),
        "secrets": (DEGRADED, "Landlock cannot hide a file inside a readable tree: secret "
                              "files in the workspace stay readable, names in secret dirs "
                              "listable"),
        "network": (DEGRADED, "internet sockets refused (seccomp), no loopback TCP/UDP; host "
                              "unix sockets reachable by path"),
        "processes": (DEGRADED, processes),
        "syscalls": (ENFORCED, "the same seccomp deny set, no_new_privs"),
        "limits": (ENFORCED, "rlimits"),
    }


class Problem:
    __slots__ = ("cause", "detail", "fix")

    def __init__(self, cause: str, detail: str, fix: list[str]) -> None:
        self.cause, self.detail, self.fix = cause, detail, fix

    def as_dict(self) -> dict:
        return {"cause": self.cause, "detail": self.detail, "fix": self.fix}


class Diagnosis:
    __slots__ = ("host", "backend", "rows", "problems", "notes")

    def __init__(self, host: hostprobe.Host) -> None:
        self.host = host
        self.backend = "none"
        self.rows: dict[str, tuple[str, str]] = {}
        self.problems: list[Problem] = []
        self.notes: list[str] = []

    @property
    def full(self) -> bool:
        return self.backend == "bwrap" and all(s == ENFORCED for s, _ in self.rows.values())

    def exit_status(self) -> int:
        return EXIT_FULL if self.full else EXIT_NOT_FULL


def fallback_available() -> bool:
    """Does this build have the Landlock + seccomp backend?"""
    try:
        return importlib.util.find_spec("sandbox.linux.landlock") is not None
    except (ImportError, ValueError):
        return False


def diagnose(host: hostprobe.Host) -> Diagnosis:
    d = Diagnosis(host)
    ns = host.userns
    if not ns.ok:
        d.problems.append(Problem(ns.cause, ns.detail, fixes.steps(
            ns.cause, host.bwrap or "/usr/bin/bwrap", host.container, host.apparmor_label,
            host.proc_masked)))
    if ns.ok:
        d.backend = "bwrap"
        d.rows = {area: (ENFORCED, how) for area, how in BWRAP_ROWS.items()}
    elif host.landlock_abi > 0 and fallback_available():
        d.backend = f"landlock (ABI {host.landlock_abi}) + seccomp"
        d.rows = fallback_rows(host.landlock_abi)
    else:
        why = ("bwrap cannot make namespaces and " + (
            f"Landlock is unavailable ({host.landlock_problem})" if host.landlock_abi == 0 else
            f"this build has no Landlock fallback (Landlock ABI {host.landlock_abi} is there)"))
        d.rows = {area: (UNAVAILABLE, "no backend") for area in AREAS}
        d.notes.append(f"{why}: sandbox run fails closed here (exit 125), the command never "
                       "runs unsandboxed")
    if host.libseccomp is None:
        d.rows["syscalls"] = (UNAVAILABLE, "libseccomp cannot be loaded: the filter cannot be "
                                           "built")
        d.problems.append(Problem("libseccomp_missing", "libseccomp (and pyseccomp) cannot be "
                                  "loaded", ["install it: sudo apt-get install libseccomp2"]))
    elif d.backend == "bwrap":
        d.rows["syscalls"] = (ENFORCED, f"{BWRAP_ROWS['syscalls']}; libseccomp {host.libseccomp}")
    if host.cgroup_controllers and {"pids", "memory"} <= set(host.cgroup_controllers):
        d.notes.append(f"cgroup v2 limits (pids_max, memory_max_mb) can be applied under "
                       f"{host.cgroup}")
    else:
        d.notes.append("cgroup v2 limits (pids_max, memory_max_mb; off in the default profile) "
                       f"cannot be applied: {host.cgroup_problem or 'pids/memory not delegated'}")
    return d


def as_data(d: Diagnosis) -> dict:
    return {
        "full": d.full,
        "exit_status": d.exit_status(),
        "backend": d.backend,
        "guarantees": {area: {"status": s, "how": how} for area, (s, how) in d.rows.items()},
        "problems": [p.as_dict() for p in d.problems],
        "notes": d.notes,
        "host": d.host.as_dict(),
    }


def _yes(value: object) -> str:
    return "none" if value in (None, "") else str(value)


def as_text(d: Diagnosis) -> str:
    h = d.host
    if d.full:
        head = "the default profile is fully enforced here (backend: bwrap)"
    elif d.backend == "none":
        head = "the default profile CANNOT be enforced here: sandbox run fails closed"
    else:
        head = f"the default profile is only partly enforced here ({d.backend})"
    ns = h.userns
    lines = [f"sandbox doctor: {head}", "",
             f"  host         Linux {h.kernel} {h.arch}, uid {h.uid}, container: "
             f"{_yes(h.container)}, CI: {_yes(h.ci)}",
             f"  bwrap        {h.bwrap or 'not found'}"
             + (f" ({h.bwrap_version})" if h.bwrap_version else "")
             + (f" - {h.bwrap_problem}" if h.bwrap_problem else ""),
             f"  user ns      " + (f"ok: {ns.detail}" if ns.ok else
                                   f"BLOCKED ({ns.cause}): see the problem below"),
             f"  seccomp      {'libseccomp ' + h.libseccomp if h.libseccomp else 'libseccomp missing'}"
             f"; filters already on this process: {h.filtered}",
             f"  landlock     " + (f"ABI {h.landlock_abi}" if h.landlock_abi else
                                   f"unavailable ({h.landlock_problem})"),
             f"  cgroup v2    {h.cgroup or 'none'}: delegated controllers: "
             f"{' '.join(h.cgroup_controllers) or 'none'}",
             "", f"  {'guarantee':<12} {'status':<12} how"]
    for area in AREAS:
        status, how = d.rows[area]
        lines += _wrap(f"  {area:<12} {status:<12} ", how)
    for note in d.notes:
        lines += _wrap("  note: ", note)
    for p in d.problems:
        lines += [""] + _wrap(f"problem ({p.cause}): ", p.detail, indent=2) + ["fix:"]
        for line in p.fix:
            if line.startswith("    ") or "{" in line:  # profile text: verbatim
                lines.append("  " + line)
            else:
                body = line.lstrip(" ")
                lines += _wrap("  " + line[:len(line) - len(body)], body)
    return "\n".join(lines)


WIDTH = 100  # one screen: the table and the fix fit a 100-column terminal


def _wrap(first: str, text: str, indent: int | None = None) -> list[str]:
    """``first`` + ``text`` wrapped at WIDTH, continuation lines under the text."""
    import textwrap

    pad = " " * (len(first) if indent is None else indent)
    return textwrap.wrap(first + text, WIDTH, subsequent_indent=pad,
                         break_long_words=False, break_on_hyphens=False) or [first.rstrip()]


def run(environ: dict[str, str], as_json: bool = False) -> int:
    """``sandbox doctor``: print the diagnosis, return the exit status."""
    import json

    from sandbox.linux.backend import find_bwrap
    from sandbox.errors import SandboxError

    try:
        bwrap, problem = find_bwrap(environ), None
    except SandboxError as err:
        bwrap, problem = None, err.message
    d = diagnose(hostprobe.probe(environ, bwrap, problem))
    print(json.dumps(as_data(d), indent=2) if as_json else as_text(d))
    return d.exit_status()

