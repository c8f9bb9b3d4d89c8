"""Which backend runs the command: bwrap, or the Landlock fallback.  Policy, not luck.

The ladder has two rungs.  bwrap (namespaces, mounts, seccomp) is the full
guarantee and always tried first.  When it cannot run (bubblewrap missing,
or user namespaces refused: a container's seccomp profile, Ubuntu's
AppArmor rule), a profile with ``require = "fallback"`` (the built-in
default) runs the command under ``sandbox.linux.fallback`` and says so in one line
before it starts; ``require = "full"`` fails closed (exit 125).

Cost on a healthy host: none.  A run does not probe anything in advance; it
starts bwrap, and only a start that fails is diagnosed (``record``), which
leaves a marker in the state directory.  While the marker is there, each
run first asks bwrap again, quietly (``runner.probe_namespaces``, a few
milliseconds), so a host that has been fixed goes back to bwrap at once.
"""

from __future__ import annotations

import os

from sandbox.errors import SetupError

MARKER = "userns-blocked"  # sandbox.fastrun checks this name too, without importing us
FULL, FALLBACK = "full", "fallback"


def _marker(state: str) -> str:
    return os.path.join(state, MARKER)


def record(state: str, reason: str) -> None:
    """bwrap could not make its namespaces here: the next runs check first."""
    from sandbox import statefile

    statefile.dump(_marker(state), reason)  # on failure the next run finds out again


def blocked_here(state: str) -> bool:
    """Has a run found that bwrap cannot make namespaces here?  (One stat.)"""
    return os.path.exists(_marker(state))


def blocked_reason(state: str, bwrap_path: str | None, missing: str | None) -> str | None:
    """Why bwrap cannot run here, or None when it can (as far as we know)."""
    if bwrap_path is None:
        return missing or "bubblewrap (bwrap) was not found"
    if not os.path.exists(_marker(state)):
        return None  # the common case: one stat
    from sandbox import runner

    problem = runner.probe_namespaces(bwrap_path)
    if problem is None:
        try:
            os.unlink(_marker(state))
        except OSError:
            pass
        return None
    return reason_of(problem)


def reason_of(problem: str) -> str:
    """bwrap's message, cut to its first clause (its advice is for another setup)."""
    short = problem.removeprefix("bwrap: ").split(", likely")[0].split(". ")[0].rstrip(".")
    return f"bwrap cannot create namespaces ({short[:120]})"


def fallback_error(policy_name: str, require: str, reason: str) -> SetupError | None:
    """The error when the fallback may not be used, or None when it may."""
    if require == FULL:
        return SetupError(f"{reason}; profile '{policy_name}' has require = \"full\", so the "
                          "command was not run with less than bwrap's guarantees",
                          hint="'sandbox doctor' names the narrowest fix for this host; a profile "
                               "with require = \"fallback\" runs under Landlock + seccomp instead")
    from sandbox.linux import landlock, nesting

    if nesting.inside_sandbox():
        return SetupError("already inside a sandbox: a sandboxed command cannot start "
                          "another one (new user namespaces are refused inside); "
                          "the command was not run",
                          hint="run the command directly, it is sandboxed already; or start "
                               "'sandbox run' from outside the sandbox")
    abi = landlock.abi_version()
    if abi < 1:
        return SetupError(f"{reason}, and this kernel has no Landlock for the fallback; "
                          "the command was not run",
                          hint="'sandbox doctor' names the fix that lets bwrap run here")
    return None


def line(reason: str, abi: int, degraded: list[str]) -> str:
    """The one line a fallback run prints before the command starts."""
    from sandbox import resources

    return (f"sandbox: fallback: {reason}; running under Landlock ABI {abi} + seccomp, "
            f"degraded: {'; '.join(degraded)} (see {resources.doc('fallback.md')})")
