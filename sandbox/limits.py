"""The ``[limits]`` of a policy as plain data for the runner.

Pure: nothing here applies a limit (``sandbox.runner`` does, in the child it
starts, so the wrapper itself is never limited).  The result is made of
tuples, ints and strings only, so it travels in the cached plan
(``sandbox.plancache``) and the fast path needs neither the Policy nor this
module.

Shape::

    {"rlimits": ((key, "RLIMIT_NAME", soft, hard, scale), ...),
     "cgroup": ((key, controller, file, value), ...),
     "timeout": seconds or None}

``scale`` turns the kernel's unit back into the profile's (bytes -> MiB) for
the report.
"""

from __future__ import annotations

MIB = 1 << 20

# profile key, resource, the kernel's units per profile unit
RLIMITS = (
    ("max_open_files", "RLIMIT_NOFILE", 1),
    ("max_file_size_mb", "RLIMIT_FSIZE", MIB),
    ("cpu_seconds", "RLIMIT_CPU", 1),
    ("max_processes", "RLIMIT_NPROC", 1),
    ("address_space_mb", "RLIMIT_AS", MIB),
)
# profile key, cgroup v2 controller, interface file, the kernel's units per profile unit
CGROUP = (
    ("pids_max", "pids", "pids.max", 1),
    ("memory_max_mb", "memory", "memory.max", MIB),
)


def plan(policy) -> dict:
    """The limits to apply for ``policy`` (0 means no limit, so nothing to apply)."""
    rlimits = []
    if not policy.core_dumps:
        rlimits.append(("core_dumps", "RLIMIT_CORE", 0, 0, 1))
    for key, name, scale in RLIMITS:
        value = getattr(policy, key)
        if value:
            soft = value * scale
            # CPU: SIGXCPU at the limit (a program may catch it to clean up),
            # SIGKILL one second later.  Everything else: soft = hard.
            hard = soft + 1 if name == "RLIMIT_CPU" else soft
            rlimits.append((key, name, soft, hard, scale))
    cgroup = tuple((key, controller, file, str(getattr(policy, key) * scale))
                   for key, controller, file, scale in CGROUP if getattr(policy, key))
    return {"rlimits": tuple(rlimits), "cgroup": cgroup, "timeout": policy.timeout_seconds or None}


def describe(policy) -> str:
    """One line for ``sandbox explain``."""
    parts = ["core dumps " + ("allowed" if policy.core_dumps else "off")]
    for key, _, _ in RLIMITS + (("timeout_seconds", "", 1),):
        parts.append(f"{key} {getattr(policy, key) or 'unlimited'}")
    for key, _, _, _ in CGROUP:
        parts.append(f"{key} {getattr(policy, key) or 'unlimited'} (cgroup)")
    return ", ".join(parts)
