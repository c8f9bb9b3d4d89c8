"""The seccomp layer: a pure rule table, and one function that compiles it.

``rules(...)`` turns a rule set from ``bwrap/seccomp.toml`` plus the profile's
``[syscalls]`` choices into plain ``Rule`` values.  ``compile_bpf`` hands them
to libseccomp (through pyseccomp, imported only here and only when a filter
must be built) and returns the BPF program bwrap loads with ``--seccomp``.
``ensure_bpf`` caches the program in the state directory keyed by the rules,
the architecture and the libseccomp library file, so the hot path never
imports libseccomp.
"""

from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass

from sandbox import resources
from sandbox.errors import ProfileError, SetupError

EPERM = "eperm"
ENOSYS = "enosys"
LOW32 = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Rule:
    """Refuse ``syscall`` with ``action`` when every condition holds.

    A condition is (arg index, mask, value): (arg & mask) == value.  Masks
    never exceed 32 bits (see bwrap/seccomp.toml).  ``syscall`` is a name or,
    for calls newer than libseccomp, a number.
    """

    action: str
    syscall: str | int
    conditions: tuple[tuple[int, int, int], ...] = ()
    why: str = ""


def load_table() -> dict:
    import tomllib

    path = resources.bwrap_dir() / "seccomp.toml"
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def machine_arch() -> str:
    return os.uname().machine


def _arg_rules(entry: dict) -> list[Rule]:
    base = tuple((c["arg"], c["mask"], c["value"]) for c in entry.get("when", ()))
    for _arg, mask, value in base:
        if mask > LOW32 or value > LOW32:
            raise ValueError(f"{entry['syscall']}: masks and values must fit in 32 bits")
    bits = entry.get("any_bit")
    if not bits:
        return [Rule(EPERM, entry["syscall"], base, entry.get("why", ""))]
    out = []
    for bit in range(32):
        flag = 1 << bit
        if bits["bits"] & flag:
            out.append(Rule(EPERM, entry["syscall"], base + ((bits["arg"], flag, flag),),
                            entry.get("why", "")))
    return out


def _personality_rules() -> list[Rule]:
    """Allow personality(0) and personality(0xffffffff) only.

    libseccomp allows one comparison per argument per rule, so "neither 0
    nor 0xffffffff" is spelled bit by bit: with bit 31 clear, any other set
    bit is refused; with bit 31 set, any other clear bit is refused.
    """
    top = 1 << 31
    out = []
    for bit in range(31):
        flag = 1 << bit
        out.append(Rule(EPERM, "personality", ((0, flag | top, flag),), "personality"))
        out.append(Rule(EPERM, "personality", ((0, flag | top, top),), "personality"))
    return out


def rules(set_name: str, *, deny: tuple[str, ...] = (), allow: tuple[str, ...] = (),
          unix_sockets: bool = True, arch: str | None = None,
          table: dict | None = None, extra: tuple[Rule, ...] = ()) -> tuple[Rule, ...]:
    """The rule table for one policy, as plain data (pure given ``table``).

    ``extra``: rules a backend adds (the fallback refuses internet sockets)."""
    table = table if table is not None else load_table()
    arch = arch or machine_arch()
    sets = table.get("sets", {})
    if set_name not in sets:
        raise ProfileError("[syscalls]", f"unknown syscall set '{set_name}'", key="syscalls.set",
                           hint="known sets: " + ", ".join(sorted(sets)))
    if arch not in table.get("arch", {}):
        raise SetupError(f"no seccomp syscall table for architecture {arch}",
                         hint="set [syscalls] enabled = false in a profile to run without the "
                              "seccomp layer (shown as a weakening)", code="seccomp_unavailable")
    chosen = sets[set_name]
    out: list[Rule] = []
    for name in chosen.get("eperm", ()):
        out.append(Rule(EPERM, name, (), "denied"))
    for name in deny:
        out.append(Rule(EPERM, name, (), "denied by profile"))
    for name in chosen.get("enosys", ()):
        out.append(Rule(ENOSYS, name, (), "fall back to the older call"))
    for entry in chosen.get("args", ()):
        out.extend(_arg_rules(entry))
    if not unix_sockets:
        for entry in chosen.get("unix_socket_args", ()):
            out.extend(_arg_rules(entry))
    if chosen.get("personality") == "default-and-query":
        out.extend(_personality_rules())
    top = table["arch"][arch]["max"]
    ceiling = table["numbers"]["ceiling"]
    for number in range(top + 1, ceiling + 1):
        out.append(Rule(ENOSYS, number, (), "newer than the syscall table"))
    allowed = set(allow)
    # a backend's own rules stay whatever [syscalls] allow says
    return tuple(r for r in out if r.syscall not in allowed) + tuple(extra)


def rules_digest(rule_table: tuple[Rule, ...], arch: str, allow_32bit: bool) -> str:
    text = repr((rule_table, arch, allow_32bit, _libseccomp_identity()))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _libseccomp_identity() -> str:
    """The real file of the system libseccomp (its name carries the version)."""
    for d in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
              "/lib/aarch64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib", "/lib"):
        candidate = os.path.join(d, "libseccomp.so.2")
        if os.path.exists(candidate):
            real = os.path.realpath(candidate)
            st = os.stat(real)
            return f"{real}:{st.st_size}:{st.st_mtime_ns}"
    return "unknown"


def compile_bpf(rule_table: tuple[Rule, ...], arch: str, allow_32bit: bool,
                numbers: dict[str, int]) -> bytes:
    """Compile the rules with libseccomp into a BPF program (bytes)."""
    import tempfile

    try:
        import pyseccomp as sc
    except (ImportError, OSError) as exc:  # OSError: libseccomp.so missing
        raise SetupError(f"cannot load libseccomp to build the seccomp filter: {exc}",
                         hint="install libseccomp2 (apt-get install libseccomp2)",
                         code="seccomp_unavailable") from None
    actions = {EPERM: sc.ERRNO(errno.EPERM), ENOSYS: sc.ERRNO(errno.ENOSYS)}
    filt = sc.SyscallFilter(defaction=sc.ALLOW)
    if allow_32bit and arch == "x86_64":
        filt.add_arch(sc.Arch.X86)
        filt.add_rule(actions[EPERM], "socketcall")  # its arguments cannot be inspected
    # binary-tree dispatch: a few comparisons per syscall, not one per rule
    filt.set_attr(sc.Attr.CTL_OPTIMIZE, 2)
    for rule in rule_table:
        syscall = rule.syscall
        if isinstance(syscall, str):
            try:
                number = sc.resolve_syscall(sc.Arch.NATIVE, syscall)
            except (ValueError, OSError, TypeError):
                number = -1
            if number == -1:  # unknown to libseccomp: our table, or a typo
                if syscall not in numbers:
                    raise ProfileError("[syscalls]", f"unknown syscall '{syscall}'", key="syscalls.deny",
                                       hint="check the spelling (see syscalls(2)); a syscall newer "
                                            "than libseccomp needs its number in bwrap/seccomp.toml")
                syscall = numbers[syscall]
            elif number < 0:
                continue  # a real syscall, but not on this architecture
        args = [sc.Arg(index, sc.MASKED_EQ, mask, value) for index, mask, value in rule.conditions]
        filt.add_rule(actions[rule.action], syscall, *args)
    with tempfile.TemporaryFile() as fh:
        filt.export_bpf(fh)
        fh.seek(0)
        return fh.read()


def ensure_bpf(state: str, set_name: str, *, deny=(), allow=(), unix_sockets=True,
               allow_32bit=False, extra=()) -> str:
    """Path of the cached BPF program for these choices, building it if needed."""
    table = load_table()
    arch = machine_arch()
    rule_table = rules(set_name, deny=tuple(deny), allow=tuple(allow),
                       unix_sockets=unix_sockets, arch=arch, table=table, extra=tuple(extra))
    digest = rules_digest(rule_table, arch, allow_32bit)
    directory = os.path.join(state, "seccomp")
    path = os.path.join(directory, f"{digest}.bpf")
    if os.path.isfile(path):
        return path
    numbers = {k: v for k, v in table["numbers"].items() if isinstance(v, int) and k != "ceiling"}
    program = compile_bpf(rule_table, arch, allow_32bit, numbers)
    from sandbox.statefile import write_readonly

    write_readonly(path, program)
    return path
