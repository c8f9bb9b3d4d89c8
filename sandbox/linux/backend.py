"""The Linux backend: Policy + Layout -> the bwrap argv (or the fallback's).

``prepare`` is this platform's side of ``sandbox.backend``: it finds bwrap
where the command cannot replace it, picks the rung of the ladder
(``sandbox.linux.ladder``: bwrap, or Landlock + seccomp where bwrap cannot make
namespaces and the profile accepts it), compiles the seccomp filter and
builds the argv (``sandbox.linux.bwrap.build`` or ``sandbox.linux.fallback.build``).
Everything it is given was decided by the shared core.
"""

from __future__ import annotations

import os

from sandbox import hostprogs
from sandbox.backend import LaunchPlan, Request
from sandbox.errors import SetupError


def find_bwrap(environ: dict[str, str], writable_roots=()) -> str:
    """bwrap from $SANDBOX_BWRAP, else from the system directories (never PATH:
    see sandbox.hostprogs).  Missing bwrap, or one the command could replace, is fatal."""
    explicit = environ.get("SANDBOX_BWRAP")
    if explicit:
        return hostprogs.explicit("bwrap", "SANDBOX_BWRAP", explicit, writable_roots)
    path = hostprogs.find("bwrap", writable_roots)
    if path is None:
        raise SetupError("bubblewrap (bwrap) was not found in " + ", ".join(hostprogs.SYSTEM_DIRS)
                         + "; the command was not run",
                         hint="install it: sudo apt-get install bubblewrap (Debian/Ubuntu), "
                              "sudo dnf install bubblewrap (Fedora); one installed elsewhere "
                              "is used with SANDBOX_BWRAP=/full/path/bwrap", code="bwrap_missing")
    return path


def choose_rung(policy, state: str, bwrap_path: str) -> dict:
    """bwrap, unless an earlier run found it cannot make namespaces here and the
    profile accepts the fallback (sandbox.linux.ladder; one stat on a healthy host)."""
    from sandbox.linux import ladder

    reason = ladder.blocked_reason(state, bwrap_path, None)
    if reason is None:
        return {"name": "bwrap", "guarantee": "full", "require": policy.require}
    err = ladder.fallback_error(policy.name, policy.require, reason)
    if err is not None:
        raise err
    from sandbox.linux import fallback, landlock

    abi = landlock.abi_version()
    fallback.check(policy, abi)
    return {"name": "landlock", "guarantee": "degraded", "require": policy.require,
            "reason": reason, "landlock_abi": abi, "degraded": []}


def prepare(req: Request) -> LaunchPlan:
    policy, layout, environ, state, obs = req.policy, req.layout, req.environ, req.state, req.obs
    host_roots = layout.writable_roots + layout.keep_in_place
    bwrap_path = find_bwrap(environ, host_roots)
    obs.realpath(bwrap_path)  # stamps its path chain and the file: a cached plan re-checks them
    rung = choose_rung(policy, state, bwrap_path)
    helper, warnings = None, ()
    if os.isatty(0):
        helper = hostprogs.find("setsid", host_roots)
        if helper is not None:
            obs.realpath(helper)
        else:
            warnings = ("setsid (util-linux) not found: running without a terminal of its own",)
    bpf = None
    if policy.syscalls_enabled:
        from sandbox import resources
        from sandbox.linux import seccomp

        extra = ()
        if rung["name"] == "landlock":
            from sandbox.linux import fallback

            extra = fallback.seccomp_extra(policy)
        if policy.forwards:  # no SO_REUSEPORT next to the grants' listeners
            from sandbox.egress import hostports

            extra = tuple(extra) + hostports.seccomp_rules(policy)
        bpf = seccomp.ensure_bpf(state, policy.syscall_set, deny=policy.syscall_deny,
                                 allow=policy.syscall_allow, unix_sockets=policy.unix_sockets,
                                 allow_32bit=policy.allow_32bit, extra=extra)
        obs.note(bpf)
        obs.note(str(resources.bwrap_dir() / "seccomp.toml"), full=True)
    if rung["name"] == "landlock":
        from sandbox.linux import fallback

        rung["degraded"] = fallback.degraded(policy, layout, rung["landlock_abi"])
        inv = fallback.build(policy, layout, list(req.command), environ, state=state,
                             ctty_helper=helper, seccomp_file=bpf)
    else:
        from sandbox.linux import bwrap

        inv = bwrap.build(policy, layout, list(req.command), environ,
                          bwrap_path=bwrap_path, ctty_helper=helper, seccomp_file=bpf)
    return LaunchPlan(inv, program=bwrap_path, mechanism=rung, warnings=warnings)
