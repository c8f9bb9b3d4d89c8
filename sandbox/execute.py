"""Start the sandbox from a finished plan and turn the outcome into a status.

Shared by the full path (``sandbox.app``) and the cached fast path
(``sandbox.fastrun``), so it imports only what running needs.
"""

from __future__ import annotations

from sandbox import report
from sandbox.errors import SandboxError, SetupError


def execute(opts, argv, env, status_index, interactive, warnings, meta, bwrap_path,
            started, seccomp=None) -> int:
    """Start the sandbox and wait for it (shared by the cached fast path)."""
    import sys

    from sandbox import runner

    for warning in warnings:
        print(f"sandbox: warning: {warning}", file=sys.stderr)
    if opts.dry_run:
        print(report.shell_join(argv))
        return 0
    outcome = runner.run(argv, env, status_index, interactive, seccomp)
    if not outcome.started:
        return fail(opts, _setup_failure(bwrap_path, outcome), meta, started)
    status = outcome.exit_status
    report.write(opts.report, report.build(opts.command, meta, started, outcome=outcome,
                                           status=status))
    return status


def fail(opts, err: SandboxError, meta, started) -> int:
    from sandbox.errors import report as show

    report.write(opts.report, report.build(opts.command, meta, started, error=err,
                                           status=err.exit_code))
    return show(err)


def _setup_failure(bwrap_path: str, outcome) -> SetupError:
    from sandbox import runner

    if outcome.bwrap_status < 0:
        return SetupError(f"bwrap was killed by signal {-outcome.bwrap_status} before the command started")
    problem = runner.probe_namespaces(bwrap_path)
    if problem:
        return SetupError(
            f"bwrap cannot create the sandbox's namespaces ({problem}); the command was not run",
            hint="user namespaces are blocked: on Ubuntu 24.04+ allow them for bwrap with an "
                 "AppArmor profile or sysctl kernel.apparmor_restrict_unprivileged_userns=0; "
                 "in a container run it with a seccomp profile that allows unshare/clone "
                 "(e.g. docker --security-opt seccomp=unconfined)")
    return SetupError(f"bwrap could not set up the sandbox (exit {outcome.bwrap_status}); "
                      "its own message is above; the command was not run",
                      hint="run 'sandbox explain' to see the mounts it was asked to make")
