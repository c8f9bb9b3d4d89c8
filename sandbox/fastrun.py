"""``sandbox run`` from a cached plan, with as few imports as possible.

Used by ``sandbox.__main__`` before anything heavy is imported.  Returns
None when there is no valid cached plan; the caller then takes the full
path (``sandbox.app.run``), which builds the plan afresh and caches it.
"""

from __future__ import annotations

import time

from sandbox import plancache


class _EnvRules:
    """The four policy fields that envfilter needs, from a cached plan."""

    __slots__ = ("env_deny", "env_pass", "env_set", "caches")

    def __init__(self, plan: dict) -> None:
        self.env_deny = plan["env_deny"]
        self.env_pass = plan["env_pass"]
        self.env_set = plan["env_set"]
        self.caches = plan["caches"]


def run_cached(opts, environ: dict[str, str]) -> int | None:
    started = time.time()
    from sandbox import report
    from sandbox.errors import SandboxError
    from sandbox.execute import audit_leftovers, fail

    try:  # first: a bad --report is refused before anything happens
        target = report.open_target(opts.report)
    except SandboxError as err:
        from sandbox.errors import report as show

        return show(err)
    report.capture(opts, target)  # the sandbox's stderr lines go in the report too
    try:
        audit_leftovers(opts, environ)  # before loading: it may move files the plan mounts
    except SandboxError as err:
        return fail(opts, err, None, started, target)
    # a host where bwrap cannot make namespaces (sandbox.linux.ladder.MARKER): the full
    # path decides between a bwrap that works again and the fallback.  One stat,
    # and not an import of sandbox.linux.ladder (0.4 ms) on every run
    import os

    state = plancache.state_dir(environ)  # a realpath: once, for the marker and the lock
    blocked = os.path.exists(os.path.join(state, "userns-blocked"))
    plan = None if blocked else plancache.load(opts, environ)
    if plan is None:
        if target is not None:
            target.close()  # the full path opens it again
        return None
    from sandbox import command, envfilter

    env = envfilter.sandbox_env(environ, _EnvRules(plan), plan["cache_dir"], plan["cwd"])
    argv = plan["argv"] + tuple(opts.command)
    meta = dict(plan["meta"])
    try:
        command.resolve(opts.command, env, plan["cwd"], plan["hidden"], plan["exposed"])
    except SandboxError as err:
        from sandbox.execute import fail

        return fail(opts, err, meta, started, target)
    from sandbox import runlock
    from sandbox.execute import FALLBACK_RETRY, execute

    lock = runlock.hold_for(opts, state, meta["workspace"])
    try:
        status = execute(opts, argv, env, plan["status_index"], plan["interactive"],
                       plan["warnings"], meta, plan["bwrap"], started, plan["seccomp"],
                       plan["audit"], plan["limits"], plan["egress"], target,
                       resolver=plan["resolver"], watch=plan["blocked"], forwards=plan["forward"])
    finally:
        runlock.release(lock)
    if status == FALLBACK_RETRY:  # bwrap cannot make namespaces here: the full path plans
        if target is not None:
            target.close()
        return None
    return status
