"""``sandbox run`` on macOS: the shared plan and run, with Seatbelt instead of bwrap.

The profile loading, discovery, env filter, persistence audit, limits,
egress proxy and report are the Linux code (``sandbox.app.prepare`` with
``platform="macos"`` and ``sandbox.execute.execute``); only the argv
differs: ``/usr/bin/sandbox-exec -p PROFILE -D ... -- COMMAND``.  The run's
TMPDIR is a fresh directory in the host's temp directory, removed after the
run.  With a proxy profile the proxy listens on the host's 127.0.0.1 at a
free port, which execute() writes into the profile once it is known
(``seatbelt.with_proxy_port``).

Not yet run on a real Mac (macos.md in the docs says what is verified).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from sandbox.errors import SandboxError, SetupError
from sandbox.macos import plan, seatbelt
from sandbox.policy import Access, NetworkMode


def check_sandbox_exec(path: str = seatbelt.SANDBOX_EXEC) -> None:
    """Fail closed without macOS's own sandbox-exec (never looked up on PATH)."""
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise SetupError(f"{path} was not found; the command was not run",
                         hint="sandbox uses macOS's built-in sandbox-exec at that path and "
                              "never one from PATH; it ships with every macOS release",
                         code="setup_failed")


def check_supported(policy) -> None:
    """What the Linux backend does that this one cannot yet: refused, never skipped."""
    inspected = [r.host for r in policy.egress_allow if r.inspect]
    if inspected:
        raise SetupError(f"profile '{policy.name}' inspects TLS ({', '.join(inspected)}: "
                         "inspect = true), which sandbox does not support on macOS yet; the "
                         "command was not run",
                         hint="use a profile without inspect = true on macOS, or run on Linux",
                         code="setup_failed")
    if policy.forwards:  # no Seatbelt form yet (sandbox.macos.parity)
        ports = ", ".join(str(g[1]) for g in policy.forwards)
        raise SetupError(f"profile '{policy.name}' grants host ports with [[network.forward]] "
                         f"({ports}), which sandbox does not support on macOS yet; the "
                         "command was not run",
                         hint="remove the [[network.forward]] tables on macOS, or run on Linux",
                         code="setup_failed")


def make_tmpdir(environ: dict[str, str]) -> str:
    """The run's own TMPDIR: private (0700), fresh, resolved as Seatbelt sees it."""
    return os.path.realpath(tempfile.mkdtemp(prefix=plan.RUN_TMP_PREFIX,
                                             dir=plan.host_tmp(environ)))


def run(opts, environ: dict[str, str], sandbox_exec: str = seatbelt.SANDBOX_EXEC) -> int:
    """Run ``opts.command`` under Seatbelt; the exit status to use."""
    from sandbox import app, limits, report, runlock
    from sandbox.egress import session as egress
    from sandbox.execute import audit_leftovers, execute, fail

    started = time.time()
    try:
        target = report.open_target(opts.report)
    except SandboxError as err:
        from sandbox.errors import report as show

        return show(err)
    report.capture(opts, target)
    prepared = None
    tmpdir = None
    try:
        check_sandbox_exec(sandbox_exec)
        audit_leftovers(opts, environ)
        prepared = app.prepare(opts, environ, platform="macos")
        policy, layout = prepared.policy, prepared.layout
        home = app.home_dir(environ)
        from sandbox import discover

        state = discover.state_dir(environ, home)
        check_supported(policy)
        if policy.scratch is Access.WRITE:
            tmpdir = make_tmpdir(environ)
        proxy = egress.plan(policy)
        # the proxy's port is known only once it listens: 0 until then
        port = 0 if policy.network is NetworkMode.PROXY else None
        ctx = plan.context(policy, layout, environ, home=home, state=state, tmpdir=tmpdir,
                           proxy_port=port)
        sb = seatbelt.build(policy, ctx, list(opts.command), sandbox_exec=sandbox_exec)
        # proxy variables: execute() adds them with the real port
        env = plan.command_env(environ, policy, layout, ctx.tmpdir, None, None)
        app.resolve_command(opts.command, env, layout)
        meta = app.plan_meta(prepared)
        lock = runlock.hold_for(opts, state, layout.workspace)
        try:
            return execute(opts, sb.argv, env, None, False, layout.warnings, meta, sandbox_exec,
                           started, None, prepared.audit_spec, limits.plan(policy), proxy,
                           target, resolver=None, watch=None, fallback_ok=False)
        finally:
            runlock.release(lock)
    except SandboxError as err:
        return fail(opts, err, app.plan_meta(prepared) if prepared else None, started, target)
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
