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
    from sandbox.execute import FALLBACK_RETRY, PLAN_STALE, audit_leftovers, fail

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
    found = None if blocked else plancache.read(opts, environ)
    if found is None:
        if target is not None:
            target.close()  # the full path opens it again
        return None
    path, plan = found
    verify = None
    if _speculate(opts, plan):
        # bwrap starts from the plan while it is checked (plancache.Speculation)
        verify = plancache.Speculation(path, plan)
    else:
        plan = plancache.check(path, plan)
    while plan is not None:
        status = _execute(opts, environ, plan, state, started, target, verify)
        if status != PLAN_STALE:
            break
        # bwrap was killed before the command started: the plan checked
        # (only new socket masks), or none and the full path plans afresh
        plan, verify = verify.fresh, None
    else:
        status = None
    if status is None or status == FALLBACK_RETRY:
        # none, or bwrap cannot make namespaces here: the full path plans
        if target is not None:
            target.close()
        return None
    return status


def _speculate(opts, plan: dict) -> bool:
    """Start bwrap before the plan is checked?  Only where the seccomp filter
    can hold the command back (sandbox.runner) and nothing is said or started
    for the plan before bwrap: no proxy (its credentials and CA), no dry run
    (which prints the plan)."""
    return plan["seccomp"] is not None and plan["egress"] is None and not opts.dry_run


def _execute(opts, environ, plan: dict, state: str, started: float, target, verify) -> int:
    from sandbox import command, envfilter
    from sandbox.errors import SandboxError
    from sandbox.execute import PLAN_STALE, execute, fail

    env = envfilter.sandbox_env(environ, _EnvRules(plan), plan["cache_dir"], plan["cwd"])
    argv = plan["argv"] + tuple(opts.command)
    meta = dict(plan["meta"])
    try:
        command.resolve(opts.command, env, plan["cwd"], plan["hidden"], plan["exposed"])
    except SandboxError as err:
        if verify is not None:
            try:  # an error from a plan that no longer holds may not be this run's
                verify()
            except plancache.PlanStale:
                return PLAN_STALE
        return fail(opts, err, meta, started, target)
    from sandbox import runlock

    lock = runlock.hold_for(opts, state, meta["workspace"])
    try:
        return execute(opts, argv, env, plan["status_index"], plan["interactive"],
                       plan["warnings"], meta, plan["bwrap"], started, plan["seccomp"],
                       plan["audit"], plan["limits"], plan["egress"], target,
                       resolver=plan["resolver"], watch=plan["blocked"],
                       forwards=plan["forward"], verify=verify)
    finally:
        runlock.release(lock)
