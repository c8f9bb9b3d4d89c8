"""Start the sandbox from a finished plan and turn the outcome into a status.

Shared by the full path (``sandbox.app``) and the cached fast path
(``sandbox.fastrun``), so it imports only what running needs.
"""

from __future__ import annotations

from sandbox import report
from sandbox.errors import SandboxError, SetupError
from sandbox.plancache import PlanStale

EXIT_TIMEOUT = 124  # like timeout(1)
# execute's answer when bwrap could not make its namespaces and the profile
# accepts the fallback: the caller plans again (sandbox.linux.ladder); nothing ran
FALLBACK_RETRY = -1
# execute's answer when the plan it was started from (``verify``,
# sandbox.plancache.Speculation) no longer holds: bwrap was killed before the
# command started, nothing ran and nothing was reported; the caller plans again
PLAN_STALE = -2


def execute(opts, argv, env, status_index, interactive, warnings, meta, bwrap_path,
            started, seccomp=None, audit_spec=None, limits=None, egress=None,
            target=None, resolver=None, watch=None, fallback_ok=True, forwards=None,
            verify=None) -> int:
    """Start the sandbox and wait for it (shared by the cached fast path).

    ``target``: where the report goes (``report.open_target``, opened by the
    caller before anything else); it is closed here.  ``resolver``: a run
    without network gets its own name resolver (``sandbox.egress.dns``); ``watch``:
    what ``sandbox.blocked`` watches for refused replacements.  ``forwards``:
    the ``[[network.forward]]`` grants (``sandbox.egress.hostports.plan``), relayed by
    whichever of the two holds the bridge (``sandbox.egress.forward``).
    ``verify``: the plan is not checked yet (``sandbox.plancache.Speculation``);
    bwrap starts from it and the command waits until it has passed.  What
    the plan says (its warnings, the weakened line) is said only then, and
    a failure before the start is reported only for a plan that held: for
    one that did not, the answer is ``PLAN_STALE`` and nothing was said.
    """
    import sys

    from sandbox import runner

    from sandbox.errors import printable

    timeout_source = "limits.timeout_seconds"
    if opts.timeout:  # --timeout: applied here, not planned (sandbox.runflags)
        from sandbox import runflags

        limits, timeout_source = runflags.timeout_plan(limits, opts.timeout)

    said = _Said(held=verify is not None)  # the plan's lines, held until it is verified
    refuse = fail
    if verify is not None:
        verify = _said_once_verified(verify, said)
        refuse = _refuse_once_verified(verify)
    say = said.say

    for warning in warnings:  # they hold file names, which the command chose
        say(f"sandbox: warning: {printable(warning)}")
    if meta.get("weakenings") and not opts.quiet:
        # one line per run, so that no weakened run looks like a default one
        say(printable("sandbox: weakened: " + "; ".join(
            f"{w['source']}: {w['key']}: {w['detail']}" for w in meta["weakenings"])))
    if opts.dry_run:
        if egress is not None:
            # this argv has no --unshare-net: on its own it would share the
            # host's network, so say so where someone might copy it
            print("# run by sandbox inside the egress bridge's network namespace; "
                  "do not run this argv by itself", file=sys.stdout)
        print(_dry_run_note(argv, status_index, seccomp))
        print(report.shell_join(argv))
        if target is not None:
            target.close()
        return 0
    import os

    try:  # everything the caller got wrong is found before the command starts
        grace = runner.grace_seconds(os.environ)
        if egress is not None or resolver is not None:
            from sandbox.egress.netns import bridge_mode

            bridge = bridge_mode(os.environ)
            if (meta.get("backend") or {}).get("name") == "seatbelt":
                bridge = "host"  # macOS: no namespace; the proxy listens on the host's loopback
    except SandboxError as err:
        return refuse(opts, err, meta, started, target)
    # before bwrap prints a line of its own; a plan that may fall back to
    # another backend (meta "backend", sandbox.linux.ladder) leaves it to the ladder
    backend = meta.get("backend") or {}
    if backend.get("name", "bwrap") == "bwrap" and backend.get("require") != "fallback":
        blocked = userns_blocked(bwrap_path, meta)
        if blocked is not None:
            return refuse(opts, blocked, meta, started, target)
    options = argv[:argv.index("--")] if "--" in argv else argv  # not the command's own args
    backend_name = (meta.get("backend") or {}).get("name", "bwrap")  # sandbox.linux.ladder
    if egress is None and "--unshare-net" not in options and backend_name == "bwrap":
        # fail closed: an argv without a network namespace of its own is
        # only ever meant to run inside the egress bridge's namespace
        return refuse(opts, SetupError("internal error: the plan has no network namespace and no "
                                     "egress proxy; the command was not run",
                                     code="internal_error"), meta, started,
                    target)
    if forwards and egress is None and resolver is None:
        # fail closed: only the bridge of one of them can carry the grants
        return refuse(opts, SetupError("internal error: [[network.forward]] without a network "
                                     "bridge to carry it; the command was not run",
                                     code="internal_error"), meta, started, target)
    secrets = vault = None
    if egress is not None and egress.get("credentials"):
        from sandbox.egress import credentials

        try:  # real values read now, kept in memory: the command gets placeholders
            vault = credentials.Vault.load(egress["credentials"], os.environ)
        except SandboxError as err:  # before the pending audit: nothing ran, nothing owed
            return refuse(opts, err, meta, started, target)
        env, secrets = vault.command_env(env), vault.for_proxy()
        if not opts.quiet:
            for line in vault.notes():
                print(line, file=sys.stderr)
    early = None
    if egress is not None and egress.get("inspect"):
        # TLS inspection: bwrap waits for the run's CA, which the proxy makes
        # as it starts; started here, before the audit's snapshot and the
        # watch, it makes the CA while they run (performance.md in the docs)
        from sandbox.egress import session as egress_mod

        try:
            early = egress_mod.Session(egress, bridge, secrets, forwards=forwards)
        except OSError:
            early = None  # tried again below, which refuses the run in words
    if resolver is not None:  # no network: lookups answered at once (sandbox.egress.dns)
        from sandbox.egress import dns

        env = {**dns.offline_env(), **env}
    pending = watcher = None
    if verify is None:
        try:
            audit_spec, pending, watcher = _before_the_command(audit_spec, watch)
        except SetupError as err:
            if early is not None:
                early.finish()
            return refuse(opts, err, meta, started, target)
    else:
        # bwrap starts before the plan is checked, and the command waits for
        # the check: so can these, which run meanwhile (once; a failure
        # raises in the runner, which kills bwrap first)
        checked = verify

        def verify() -> None:
            nonlocal audit_spec, pending, watcher
            checked()
            if pending is None and watcher is None:
                audit_spec, pending, watcher = _before_the_command(audit_spec, watch)
    member = None
    for attempt in range(1 + MOUNT_RETRIES):
        session = None
        if member is not None:
            member.leave()  # the previous attempt's place in its session
        member = None
        if (egress is not None or resolver is not None) and backend_name == "bwrap":
            # runs of one workspace (or --session NAME) with the same network
            # policy share the namespace (sandbox.egress.netsession); this holds the
            # session's lock until bwrap runs
            from sandbox import plancache
            from sandbox.egress import netsession

            state = plancache.state_dir(os.environ)
            try:
                member = netsession.open_for(opts, meta, egress, resolver, bridge, state,
                                              forwards)
            except SandboxError as err:
                if early is not None:  # the TLS-inspecting run's proxy, started already
                    early.finish()
                _audit(audit_spec, pending)
                return refuse(opts, err, meta, started, target)
        if egress is not None:
            from sandbox.egress import session as egress_mod

            try:
                # the proxy starts before bwrap (a TLS-inspecting run's started
                # already, before the session was chosen: it joins it now)
                if early is not None:
                    session, early = early, None
                    session.bridge.join(member)
                else:
                    session = egress_mod.Session(egress, bridge, secrets, member=member,
                                                 forwards=forwards)
            except OSError as exc:
                if member is not None:
                    member.leave()
                _audit(audit_spec, pending)
                return refuse(opts, SetupError(f"cannot start the egress proxy: {exc.strerror or exc}; "
                                             "the command was not run",
                                             code="network_setup_failed"), meta, started, target)
            if backend_name == "bwrap":
                env = {**env, **egress_mod.proxy_env(egress, session.bridge.port)}
            else:  # the fallback: no namespace, the proxy listens on the host's loopback
                from sandbox.linux import fallback

                try:
                    port = fallback.hand_proxy_listener(session.bridge.channel)
                except OSError as exc:
                    session.finish()
                    _audit(audit_spec, pending)
                    return refuse(opts, SetupError(f"cannot start the egress proxy: "
                                                 f"{exc.strerror or exc}; the command was not run",
                                                 code="network_setup_failed"),
                                meta, started, target)
                session.bridge.port = port  # what the report names (no namespace port here)
                url = f"http://{fallback.PROXY_HOST}:{port}"
                env = {**env, **{k: v.replace(egress_mod.PROXY_URL, url)
                                 for k, v in egress_mod.proxy_env(egress).items()}}
                if backend_name == "seatbelt":  # the port goes in the profile text
                    from sandbox.macos.seatbelt import with_proxy_port

                    argv = with_proxy_port(argv, port)
                else:
                    argv = fallback.with_proxy_port(argv, port)
        names = None
        network = None
        outcome = None  # this attempt's
        try:
            applied = None
            if limits is not None:  # sandbox.limits.plan(); this makes the run's cgroup
                applied = runner.Limits(limits)
                if applied.warning() and attempt == 0:
                    say(f"sandbox: warning: {applied.warning()}")
            # A path to mount over (a socket, a secret) may have gone since
            # the plan was made, and bwrap cannot mount over what is not
            # there (sandbox.linux.drift): checked as late as possible
            argv, status_index, seccomp, audit_spec, gone = _drop_vanished(
                argv, status_index, seccomp, audit_spec)
            if gone and pending is not None and not _remark(audit_spec, pending):
                _audit(audit_spec, pending)
                return refuse(opts, _no_marker(audit_spec), meta, started, target)
            run_argv, run_status, run_seccomp = argv, status_index, seccomp
            if resolver is not None:  # this attempt's resolver, and its edit of the argv
                try:
                    names = dns.Session(resolver, bridge, member,
                                        state if member is not None else None,
                                        forwards=forwards)
                except OSError:
                    if forwards:  # the grants need the bridge: fail closed
                        if member is not None:
                            member.leave()  # and let the session's next run in
                        raise
                    names = dns.Session(resolver, "bwrap")  # no socket pair: names go unrecorded
                run_argv = names.argv(list(argv))
                # the descriptors' places moved with the edit: follow their options
                run_status = dns.moved(argv, run_argv, status_index)
                if seccomp is not None:
                    run_seccomp = (dns.moved(argv, run_argv, seccomp[0]), seccomp[1])
            try:
                if session is not None:  # TLS inspection: the run's CA trusted inside
                    run_argv, run_status, run_seccomp, env = session.inspect(
                        run_argv, run_status, run_seccomp, env, gated=backend_name == "bwrap")
                outcome = runner.run(run_argv, env, run_status, interactive, run_seccomp, applied,
                                     grace, bridge=session.bridge if session is not None
                                     and backend_name == "bwrap"
                                     else names.bridge if names is not None else None,
                                     plain=backend_name == "seatbelt",
                                     gate=session.gate if session is not None else None,
                                     meanwhile=lambda: _meanwhile(watcher, audit_spec),
                                     verify=verify)
            except SandboxError as err:  # the bridge could not be made: nothing ran
                if watcher is not None:
                    watcher.findings()  # releases the watch off the exit path
                _audit(audit_spec, pending)
                return refuse(opts, err, meta, started, target)
            except PlanStale:  # killed before its filter: the command never started
                if watcher is not None:
                    watcher.findings()
                if pending is not None:  # nothing ran, so no audit is owed
                    pending.remove()
                    pending.release()
                return PLAN_STALE
        finally:  # whatever happened, the proxy (or the resolver) goes with the run
            if session is not None:
                network = session.finish()
            elif names is not None:  # (a run not started may start again: see finish)
                network = names.finish(again=outcome is None or not outcome.started)
            if member is not None:
                member.leave()  # this run's line out of its session's registry
        if outcome.started or outcome.bwrap_status != 1 or attempt == MOUNT_RETRIES:
            break
        # bwrap gave up before the command started: if a mount point vanished
        # in the moment after the check, start again without it
        from sandbox.linux import drift

        gone = drift.prune(argv)[1]
        if not gone:
            break
        print(f"sandbox: note: {printable(gone[0])} vanished while bwrap was setting up the "
              "sandbox; nothing is left there to hide, so it was started again without that mount",
              file=sys.stderr)
    if member is not None and member.why is not None and getattr(opts, "session", None) != "none":
        print(f"sandbox: note: this run's network namespace is its own, not its session's: "
              f"{member.why}; servers of other runs are not reachable from it", file=sys.stderr)
    if session is not None:
        for line in egress_mod.summary(network, egress["profile"]):
            print(line, file=sys.stderr)
    elif names is not None:
        from sandbox.egress import dns

        for line in dns.summary(network, meta.get("profile", {}).get("name", "?")):
            print(line, file=sys.stderr)
    forwarded = None
    if forwards:  # what went through each [[network.forward]] grant (sandbox.egress.forward)
        from sandbox.egress import forward

        holder = session if session is not None else names
        counters = holder.counters if holder is not None else None
        forwarded = forward.report(forwards, counters)
        for line in forward.summary(forwards, counters):
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
    ladder_says = _fall_back(meta, bwrap_path, outcome) if not outcome.started else None
    if ladder_says is True and fallback_ok:
        return FALLBACK_RETRY  # the report target stays open for the next attempt
    if isinstance(ladder_says, SandboxError):  # require = "full": fail closed, saying why
        return refuse(opts, ladder_says, meta, started, target)
    if not outcome.started and backend_name == "seatbelt":
        return refuse(opts, SetupError("sandbox-exec did not start the command; the command "
                                     "was not run", code="setup_failed"),
                    meta, started, target)
    if not outcome.started and backend_name != "bwrap":
        return refuse(opts, SetupError("the Landlock + seccomp fallback could not confine the "
                                     "command (its own message is above); the command was not "
                                     "run", hint="'sandbox doctor' names what would let bwrap "
                                                 "run here"),
                    meta, started, target)
    if not outcome.started:
        return refuse(opts, _setup_failure(bwrap_path, outcome), meta, started, target)
    status = outcome.exit_status
    if outcome.timed_out:
        status = EXIT_TIMEOUT
        how = ("killed the sandbox after the grace period" if outcome.killed_after_grace
               else "sent SIGTERM")
        print(f"sandbox: timeout: the command ran longer than {limits['timeout']} s "
              f"({timeout_source}); {how}; exit status {EXIT_TIMEOUT}", file=sys.stderr)
    failed = [f for f in findings if f.failed]
    if failed:
        # fail closed: something the host may run by itself is still there
        print(f"sandbox: audit error: {len(failed)} finding(s) could not be neutralised (see "
              f"above); exit status {EXIT_AUDIT_FAILED} instead of the command's {status}",
              file=sys.stderr)
        status = EXIT_AUDIT_FAILED
    doc = report.build(opts.command, meta, started, outcome=outcome, status=status)
    if audit_spec is not None:
        doc["audit"] = [f.as_dict() for f in findings]
    if member is not None:
        doc["session"] = member.report(proxy=egress is not None)
    if network is not None:
        doc["network"] = network
        if vault is not None:
            doc["network"] = {**network, "credentials": vault.summary()}
    if forwarded is not None:
        doc["forwards"] = forwarded
    doc["blocked"] = report.blocked_records(refused, network)
    report.write(target, doc)  # opened before the command could touch the path
    from sandbox import auditlog

    auditlog.record(doc, opts, env)  # after the run: one line, one write
    return status


class _Said:
    """Lines on stderr, or held (``held``) until ``flush``."""

    __slots__ = ("lines",)

    def __init__(self, held: bool) -> None:
        self.lines: list[str] | None = [] if held else None

    def say(self, line: str) -> None:
        if self.lines is None:
            import sys

            print(line, file=sys.stderr)
        else:
            self.lines.append(line)

    def flush(self) -> None:
        lines, self.lines = self.lines or [], None
        for line in lines:
            self.say(line)


def _said_once_verified(verify, said: _Said):
    """``verify``, then the plan's held lines, said once it holds."""
    def verified() -> None:
        verify()
        said.flush()
    return verified


def _refuse_once_verified(verify):
    """``fail`` for a plan that holds; ``PLAN_STALE`` (nothing said) for one
    that does not: an error from a stale plan may not be the run's."""
    def refuse(opts, err, meta, started, target=None) -> int:
        try:
            verify()
        except PlanStale:
            return PLAN_STALE
        return fail(opts, err, meta, started, target)
    return refuse


def _meanwhile(watcher, audit_spec) -> None:
    """What the end of the run needs, done while bwrap sets up and the command runs.

    bwrap takes a few milliseconds to make the sandbox, and the wrapper only
    waits meanwhile: the modules of the audit and the audit log (about 2.5 ms
    of imports) and the process that takes over the watch's last reference
    (``sandbox.blocked``) cost nothing there on a machine with a core to
    spare.  Nothing here decides anything: what runs after the command is
    unchanged, only sooner ready.
    """
    try:
        if watcher is not None:
            watcher.hand_over()
        import _json  # noqa: F401 - sandbox.auditlog's encoder

        from sandbox import auditlog, redact  # noqa: F401
        if audit_spec is not None:
            from sandbox import audit, pathat, quarantine  # noqa: F401
    except Exception:  # noqa: BLE001 - the same imports after the run say what broke
        pass


EXIT_AUDIT_FAILED = 125
# how many times a run is started again after bwrap failed on a vanished path
MOUNT_RETRIES = 3


def _drop_vanished(argv, status_index, seccomp, audit_spec):
    """The plan without mounts on paths that are gone (see sandbox.linux.drift)."""
    from sandbox.linux import drift

    new, gone = drift.prune(argv)
    if not gone:
        return argv, status_index, seccomp, audit_spec, gone
    status_index, seccomp = drift.fd_indexes(new, status_index, seccomp)
    if audit_spec is not None:  # no longer read-only: the audit looks at it again
        from sandbox.command import is_within

        audit_spec = {**audit_spec, "known_protected": [
            k for k in audit_spec["known_protected"] if not any(is_within(k, g) for g in gone)]}
    return new, status_index, seccomp, audit_spec, gone


def _before_the_command(audit_spec, watch):
    """(audit spec, marker, watch): what must exist before the command starts.

    What git could run from each git dir just before the command starts
    (not in the cached plan: a file can change while its directory's stamp
    does not), kept in this run's own marker, locked while the run lives
    (``sandbox.pending``): the next run audits if this one is killed.  And
    the watch of what the command tries on protected files.  Raises
    SetupError (the command must not start without the marker).
    """
    pending = None
    if audit_spec is not None:
        from sandbox import gitsnapshot
        from sandbox import pending as markers

        try:
            audit_spec = dict(audit_spec, snapshot=gitsnapshot.take(audit_spec))
            pending = markers.create(audit_spec)
        except OSError as exc:
            raise SetupError(f"cannot record the pending audit in {audit_spec['state']}: "
                             f"{exc.strerror or exc}; the command was not run",
                             hint="make the state directory writable (XDG_CACHE_HOME/sandbox)",
                             code="state_dir_invalid") from None
        except Exception as exc:  # noqa: BLE001 - fail closed, without a traceback
            raise SetupError(f"internal error while taking the pre-run snapshot "
                             f"({type(exc).__name__}: {exc}); the command was not run",
                             code="internal_error") from None
    watcher = None
    if watch is not None:
        from sandbox import blocked

        try:
            watcher = blocked.Watch(watch)
        except Exception:  # noqa: BLE001 - no evidence then; nothing else changes
            watcher = None
    return audit_spec, pending, watcher


def _remark(audit_spec, marker) -> bool:
    """Record the changed audit in this run's marker, in case this run is killed."""
    try:
        marker.rewrite(audit_spec)
    except OSError:
        return False
    return True


def _no_marker(audit_spec) -> SetupError:
    return SetupError(f"cannot record the pending audit in {audit_spec['state']}; "
                      "the command was not run",
                      hint="make the state directory writable (XDG_CACHE_HOME/sandbox)",
                      code="state_dir_invalid")


def _dry_run_note(argv, status_index, seccomp) -> str:
    """A comment for --dry-run: the descriptors the argv names exist only in a real run."""
    import shlex

    fds = []
    by_hand = []
    if status_index is not None:
        fds.append(f"{argv[status_index]} (--json-status-fd: sandbox reads the exit status there)")
        by_hand.append(f"{argv[status_index]}>/dev/null")
    if seccomp is not None:
        fds.append(f"{argv[seccomp[0]]} (--seccomp: the filter {seccomp[1]})")
        by_hand.append(f"{argv[seccomp[0]]}<{shlex.quote(seccomp[1])}")
    if not fds:
        return "# the argv sandbox would run"
    return (f"# fds {' and '.join(fds)} are opened by sandbox for the run; to try this argv by "
            f"hand append {' '.join(by_hand)} (it then runs with your environment unfiltered, "
            "without the terminal relay and without the persistence audit)")


def _audit(spec, marker) -> list:
    """Run the persistence audit and print one line per finding.

    Then drain (``sandbox.pending``): when no run overlapping this one's
    roots is live, every marker left there is audited again and removed,
    this run's own with them.  The run's marker stays when something could
    not be neutralised (the next run in this workspace audits again before
    it starts) and when another run is live (that run drains at its end).
    """
    if spec is None or marker is None:  # no marker: the command never started
        return []
    import sys

    from sandbox import audit, pending

    audited = pending.now()
    findings = audit.Auditor(spec).run()  # interrupted: the marker stays, next run audits
    earlier: list = []
    if any(f.failed for f in findings):
        marker.release()  # owed in full: the next run audits again before it starts
    else:
        try:
            earlier, again, drained = pending.drain(spec["state"], pending.places(spec),
                                                     marker, audited)
        except Exception as exc:  # noqa: BLE001 - the markers stay; counted, no traceback
            earlier, again, drained = [audit.failure_finding("pending audits", spec["state"],
                                                             exc)], [], True
        findings = findings + again
        if drained or any(f.failed for f in again):
            marker.release()  # removed by the drain, or owed in full
        else:  # another run is live: it audits this run's marker again when it ends
            marker.finish()
    for finding in findings:
        print(finding.line(), file=sys.stderr)
    for finding in earlier:
        print(finding.line() + " (left by an earlier run)", file=sys.stderr)
    return findings + earlier


def audit_leftovers(opts, environ: dict[str, str]) -> None:
    """Audit first what earlier runs in this workspace (or one overlapping it)
    left owed: killed before their audit, an audit that could not neutralise
    everything, or one made while another run was live (``sandbox.pending``).

    Runs before the plan is made or loaded: the audit may move files that a
    plan would otherwise try to mount.  Fails closed: while something is
    left that the audit cannot neutralise, no command runs here.  While a
    run overlapping this workspace is live, its markers and the others are
    left to that run, which audits them when it ends.
    """
    import os
    import sys

    from sandbox import pending, plancache

    state = plancache.state_dir(environ)
    if not os.path.isdir(os.path.join(state, pending.DIR)):
        return  # no run has left anything (the common case: one stat)
    place = os.path.realpath(os.path.join(os.getcwd(), opts.workspace or "."))
    findings, _mine, _drained = pending.drain(state, [place])
    for finding in findings:
        print(finding.line() + " (left by an earlier run)", file=sys.stderr)
    failed = sum(1 for f in findings if f.failed)
    if failed:
        raise SetupError(f"the persistence audit of an earlier run in {place} could not "
                         f"neutralise {failed} item(s) (see above); the command was not "
                         "run", hint="remove them by hand, then run again", code="audit_pending")


def fail(opts, err: SandboxError, meta, started, target=None) -> int:
    """Report a failure of the sandbox itself (the command did not run)."""
    from sandbox.errors import report as show

    if isinstance(err, SetupError):
        from sandbox.linux import nesting

        if nesting.inside_sandbox():  # then that is why, whatever broke first
            err = SetupError("already inside a sandbox: a sandboxed command cannot start "
                             "another one (new user namespaces are refused inside); "
                             "the command was not run",
                             hint="run the command directly, it is sandboxed already; or start "
                                  "'sandbox run' from outside the sandbox", code="nested_sandbox")

    if target is None and opts.report:
        try:  # a caller that did not open the report's target first
            target = report.open_target(opts.report)
        except SandboxError:
            target = None  # nowhere safe to write it; the error line says enough
    doc = report.build(opts.command, meta, started, error=err, status=err.exit_code)
    report.write(target, doc)
    from sandbox import auditlog

    auditlog.record(doc, opts)
    return show(err)


def _fall_back(meta, bwrap_path: str, outcome):
    """bwrap did not start the command: is that because this host refuses its
    namespaces?  Then the host is marked (sandbox.linux.ladder), and the answer is
    True when the profile accepts the fallback (the run is planned again),
    or the error naming ``require = "full"`` when it does not.  None: some
    other failure, reported as before."""
    backend = meta.get("backend") or {}
    if backend.get("name") != "bwrap" or outcome.bwrap_status < 0:
        return None
    import os

    from sandbox import plancache, runner
    from sandbox.linux import ladder, nesting

    if nesting.inside_sandbox():
        return None
    problem = runner.probe_namespaces(bwrap_path)
    if not problem:
        return None
    reason = ladder.reason_of(problem)
    ladder.record(plancache.state_dir(os.environ), reason)
    if backend.get("require") == ladder.FULL:
        return ladder.fallback_error(meta.get("profile", {}).get("name", "?"), ladder.FULL, reason)
    return True


def _setup_failure(bwrap_path: str, outcome) -> SetupError:
    from sandbox import runner

    if outcome.bwrap_status < 0:
        return SetupError(f"bwrap was killed by signal {-outcome.bwrap_status} before the command started",
                          code="bwrap_failed")
    problem = runner.probe_namespaces(bwrap_path)
    if problem:
        from sandbox import fixes
        from sandbox.linux import hostprobe
        from sandbox.errors import UsernsBlocked

        ns = hostprobe.explain_failure(problem)
        return UsernsBlocked(ns.cause, ns.detail, fixes.hint(ns.cause, bwrap_path))
    return SetupError(f"bwrap could not set up the sandbox (exit {outcome.bwrap_status}); "
                      "its own message is above; the command was not run",
                      hint="run 'sandbox explain' to see the mounts it was asked to make",
                      code="bwrap_failed")


def userns_blocked(bwrap_path: str, meta: dict | None = None):
    """A ``UsernsBlocked`` error when user namespaces are certainly refused here
    (``sandbox.linux.usernsgate``: a few file reads on most hosts), else None: then
    bwrap's own start is the test.  When the profile says ``require = "full"``
    the line says so: that is why no weaker backend runs the command."""
    from sandbox.linux import usernsgate

    ns = usernsgate.quick()
    if ns is None:
        return None
    import os

    from sandbox import fixes
    from sandbox.linux import hostprobe
    from sandbox.errors import UsernsBlocked

    detail = ns.detail
    if ((meta or {}).get("backend") or {}).get("require") == "full":
        name = ((meta or {}).get("profile") or {}).get("name", "?")
        detail += (f"; profile '{name}' has require = \"full\", so the Landlock + seccomp "
                   "fallback is not used")
    return UsernsBlocked(ns.cause, detail,
                         fixes.hint(ns.cause, bwrap_path, hostprobe.container(dict(os.environ))))
