"""Start the sandbox from a finished plan and turn the outcome into a status.

Shared by the full path (``sandbox.app``) and the cached fast path
(``sandbox.fastrun``), so it imports only what running needs.
"""

from __future__ import annotations

from sandbox import report
from sandbox.errors import SandboxError, SetupError, UsageError

EXIT_TIMEOUT = 124  # like timeout(1)


def execute(opts, argv, env, status_index, interactive, warnings, meta, bwrap_path,
            started, seccomp=None, audit_spec=None, limits=None, egress=None,
            resolver=None, watch=None) -> int:
    """Start the sandbox and wait for it (shared by the cached fast path)."""
    import sys

    from sandbox import runner

    from sandbox.errors import printable

    for warning in warnings:  # they hold file names, which the command chose
        print(f"sandbox: warning: {printable(warning)}", file=sys.stderr)
    if meta.get("weakenings") and not opts.quiet:
        # one line per run, so that no weakened run looks like a default one
        print(printable("sandbox: weakened: " + "; ".join(
            f"{w['source']}: {w['key']}: {w['detail']}" for w in meta["weakenings"])),
            file=sys.stderr)
    if opts.dry_run:
        if egress is not None:
            # this argv has no --unshare-net: on its own it would share the
            # host's network, so say so where someone might copy it
            print("# run by sandbox inside the egress bridge's network namespace; "
                  "do not run this argv by itself", file=sys.stdout)
        print(report.shell_join(argv))
        return 0
    import os

    try:  # everything the caller got wrong is found before the command starts
        grace = runner.grace_seconds(os.environ)
        if egress is not None or resolver is not None:
            from sandbox.netns import bridge_mode

            bridge = bridge_mode(os.environ)
    except SandboxError as err:
        return fail(opts, err, meta, started)
    options = argv[:argv.index("--")] if "--" in argv else argv  # not the command's own args
    if egress is None and "--unshare-net" not in options:
        # fail closed: an argv without a network namespace of its own is
        # only ever meant to run inside the egress bridge's namespace
        return fail(opts, SetupError("internal error: the plan has no network namespace and no "
                                     "egress proxy; the command was not run"), meta, started)
    report_dir = report.open_dir(opts.report)
    if opts.report and (report_dir is None or os.path.isdir(opts.report)):
        from sandbox.errors import report as show

        # no report to write about it: the report path itself is the problem
        return show(UsageError(f"--report {opts.report}: not a file in an existing directory",
                               hint="create the directory, or give another file name"))
    pending = None
    if audit_spec is not None:
        from sandbox import audit

        try:
            pending = audit.mark_pending(audit_spec)  # the next run audits if we are killed
        except OSError as exc:
            return fail(opts, SetupError(f"cannot record the pending audit in {audit_spec['state']}: "
                                         f"{exc.strerror or exc}; the command was not run",
                                         hint="make the state directory writable "
                                              "(XDG_CACHE_HOME/sandbox)"), meta, started)
    session = None
    if egress is not None:
        from sandbox import egress as egress_mod

        try:
            session = egress_mod.Session(egress, bridge)  # the proxy starts before bwrap
        except OSError as exc:
            _audit(audit_spec, pending)
            return fail(opts, SetupError(f"cannot start the egress proxy: {exc.strerror or exc}; "
                                         "the command was not run"), meta, started)
        env = {**env, **egress_mod.proxy_env()}
    names = None
    if resolver is not None:  # no network: lookups answered at once, and recorded
        from sandbox import dns

        try:
            names = dns.Session(resolver, bridge)
        except OSError:
            names = dns.Session(resolver, "bwrap")  # no socket pair: names go unrecorded
        new = names.argv(list(argv))
        # the descriptors' places moved with the edit: follow their options
        status_index = dns.moved(argv, new, status_index)
        if seccomp is not None:
            seccomp = (dns.moved(argv, new, seccomp[0]), seccomp[1])
        argv = new
        env = {**dns.offline_env(), **env}
    network = None
    watcher = None
    if watch is not None:  # before bwrap: what the command tries on protected files
        from sandbox import blocked

        try:
            watcher = blocked.Watch(watch)
        except Exception:  # noqa: BLE001 - no evidence then; nothing else changes
            watcher = None
    try:
        applied = None
        if limits is not None:  # sandbox.limits.plan(); this makes the run's cgroup
            applied = runner.Limits(limits)
            if applied.warning():
                print(f"sandbox: warning: {applied.warning()}", file=sys.stderr)
        # report_dir was opened above, before the command could touch its parents
        try:
            outcome = runner.run(argv, env, status_index, interactive, seccomp, applied, grace,
                                 bridge=session.bridge if session is not None
                                 else names.bridge if names is not None else None)
        except SandboxError as err:  # the bridge could not be made: nothing ran
            if watcher is not None:
                watcher.findings()  # releases the watch off the exit path
            _audit(audit_spec, pending)
            return fail(opts, err, meta, started)
    finally:  # whatever happened, the proxy (or the resolver) goes with the run
        if session is not None:
            network = session.finish()
        elif names is not None:
            network = names.finish()
    if session is not None:
        for line in egress_mod.summary(network, egress["profile"]):
            print(line, file=sys.stderr)
    elif names is not None:
        from sandbox import dns

        for line in dns.summary(network, meta.get("profile", {}).get("name", "?")):
            print(line, file=sys.stderr)
    refused = []
    if watch is not None:
        from sandbox import blocked

        refused = watcher.findings() if watcher is not None else []
        if outcome.started and outcome.exit_status:
            refused += blocked.signing(watch, started)
        for line in blocked.summary(refused, watch):
            print(line, file=sys.stderr)
    findings = _audit(audit_spec, pending)
    if not outcome.started:
        return fail(opts, _setup_failure(bwrap_path, outcome), meta, started)
    status = outcome.exit_status
    if outcome.timed_out:
        status = EXIT_TIMEOUT
        how = ("killed the sandbox after the grace period" if outcome.killed_after_grace
               else "sent SIGTERM")
        print(f"sandbox: timeout: the command ran longer than {limits['timeout']} s "
              f"(limits.timeout_seconds); {how}; exit status {EXIT_TIMEOUT}", file=sys.stderr)
    failed = [f for f in findings if f.action.startswith("COULD NOT")]
    if failed:
        # fail closed: something the host may run by itself is still there
        print(f"sandbox: audit error: {len(failed)} finding(s) could not be neutralised (see "
              f"above); exit status {EXIT_AUDIT_FAILED} instead of the command's {status}",
              file=sys.stderr)
        status = EXIT_AUDIT_FAILED
    doc = report.build(opts.command, meta, started, outcome=outcome, status=status)
    if audit_spec is not None:
        doc["audit"] = [f.as_dict() for f in findings]
    if network is not None:
        doc["network"] = network
    doc["blocked"] = report.blocked_records(refused, network)
    report.write(opts.report, doc, report_dir)
    if report_dir is not None:
        os.close(report_dir)
    return status


EXIT_AUDIT_FAILED = 125


def _audit(spec, pending) -> list:
    """Run the persistence audit and print one line per finding.

    The pending marker is removed whatever happens: a finding that cannot be
    neutralised is reported (and fails the run), not retried forever.
    """
    if spec is None:
        return []
    import os
    import sys

    from sandbox import audit

    findings = audit.Auditor(spec).run()  # interrupted: the marker stays, next run audits
    try:
        os.unlink(pending)
    except OSError:
        pass
    for finding in findings:
        print(finding.line(), file=sys.stderr)
    return findings


def audit_leftovers(opts, environ: dict[str, str]) -> None:
    """Audit first if an earlier run in this workspace was killed before its audit.

    Runs before the plan is made or loaded: the audit may move files that a
    plan would otherwise try to mount.
    """
    import os
    import sys

    from sandbox import plancache

    state = plancache.state_dir(environ)
    place = os.path.realpath(os.path.join(os.getcwd(), opts.workspace or "."))
    while True:  # the workspace, or one around it (a run started from a subdirectory)
        path = plancache.pending_audit_path(state, place)
        if os.path.exists(path):
            from sandbox import audit

            for finding in audit.run_pending(path):
                print(finding.line() + " (left by an interrupted run)", file=sys.stderr)
        if place == "/":
            break
        place = os.path.dirname(place)


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
