"""The core of ``sandbox run`` and ``sandbox explain``, free of any CLI framework.

Data flows one way:

    options -> policy (profile / policycache) -> layout (discover)
            -> launch plan (sandbox.backend: bwrap.build on Linux)
            -> runner.run -> exit status + report

Both the typer CLI and the fast path in ``sandbox.__main__`` call ``run``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

from sandbox import (auditlog, backend, blocked, command, discover, envfilter, limits, managed,
                     plancache, projectprofile, report, runflags, runlock, selfguard)
from sandbox.egress import dns, session as egress, hostports
from sandbox.errors import SandboxError, SetupError, UsageError
from sandbox.invocation import Invocation
from sandbox.layout import Layout
from sandbox.execute import execute, fail
from sandbox.observe import Observer
from sandbox.options import RunOptions
from sandbox.policy import Policy, Weakening
from sandbox.profile import Context



@dataclass(frozen=True, slots=True)
class Prepared:
    options: RunOptions
    policy: Policy
    layout: Layout
    invocation: Invocation
    bwrap_path: str
    policy_cached: bool
    plan_ms: float
    removed_env: tuple[str, ...]
    deps: tuple = ()  # (path, stamp) of everything the plan was built from
    racy: bool = True  # some input changed too recently to cache the plan
    audit_spec: dict | None = None  # what the persistence audit checks after the run
    watch: dict | None = None  # what sandbox.blocked watches for and checks after the run
    # which rung of the ladder runs the command (sandbox.linux.ladder): name,
    # guarantee, require, and for the fallback its reason and what is degraded
    backend: dict | None = None


def home_dir(environ: dict[str, str]) -> str:
    home = environ.get("HOME") or os.path.expanduser("~")
    if not os.path.isabs(home):
        raise SetupError(f"HOME is not an absolute path: {home!r}", hint="set HOME to your home directory",
                         code="state_dir_invalid")
    return os.path.normpath(home)


def _account_home(home: str) -> str:
    """The password database's home for this uid, if it differs from $HOME."""
    import pwd

    try:
        entry = os.path.normpath(pwd.getpwuid(os.getuid()).pw_dir)
    except (KeyError, OSError):
        return ""
    return entry if entry != home and os.path.isabs(entry) else ""


def _absolute(paths: tuple[str, ...], base: str) -> tuple[str, ...]:
    return tuple(os.path.normpath(os.path.join(base, p)) for p in paths)


def _check_allow_write(paths: tuple[str, ...]) -> None:
    for p in paths:
        if os.path.realpath(p) == "/":
            raise UsageError("--allow-write / would make the whole host writable",
                             hint="name the one directory the command needs",
                             code="workspace_invalid")
        if not os.path.exists(p):
            raise UsageError(f"--allow-write {p}: no such file or directory",
                             hint="create it first; the sandbox never creates host paths",
                             code="workspace_invalid")


def _names_protected(path: str, names) -> bool:
    """Would ``path`` be protected (or audited) once it exists: a protected name
    (``.vscode``, ``.hg/hgrc``...) or a git directory on the way to it?"""
    parts = path.strip("/").split("/")
    if ".git" in parts:
        return True
    for name in names:
        want = name.split("/")
        if any(parts[i:i + len(want)] == want for i in range(len(parts) - len(want) + 1)):
            return True
    return False


def _check_unprotect(paths: tuple[str, ...], layout: Layout, names) -> None:
    """--unprotect PATH that would change nothing is a mistake (a typo, the wrong
    directory): refuse it rather than run with protection the user thinks is off."""
    for path in paths:
        if any(command.is_within(p, path) for p in layout.unprotected):
            continue  # it makes a protected path writable
        holder = next((p for p in layout.read_only if command.is_within(path, p)), None)
        if holder is None and not os.path.lexists(path) and _names_protected(path, names):
            continue  # the command may create it: the audit leaves it alone
        hint = (f"it lies inside the protected path {holder}: unprotect that" if holder else
                "name a protected path such as .git/hooks or .vscode, or a directory holding "
                "one; 'sandbox explain' lists the protected paths")
        raise UsageError(f"--unprotect {path}: nothing there is protected", hint=hint)


def resolve_command(opts_command, env: dict[str, str], layout: Layout) -> str:
    return command.resolve(opts_command, env, layout.cwd, layout.hidden_dirs(),
                           layout.exposed_dirs())


def prepare(opts: RunOptions, environ: dict[str, str], platform: str = "linux") -> Prepared:
    """The plan for one run.  ``platform="macos"``: policy and layout only; the
    Seatbelt profile is made from them by sandbox.macos (no bwrap, no seccomp)."""
    started = time.perf_counter()
    home = home_dir(environ)
    state = discover.state_dir(environ, home)
    if command.is_within(state, home) and not os.path.isdir(home):
        # e.g. HOME=/nonexistent: creating the state dir would create a home
        raise SetupError(f"the home directory {home} does not exist, and sandbox keeps its state "
                         f"in it ({state}); it never creates a home directory",
                         hint="set HOME to an existing directory, or XDG_CACHE_HOME to a "
                              "directory of yours for sandbox's state", code="state_dir_invalid")
    discover.ensure_state_dir(state)
    cwd = discover.logical_cwd(environ)
    ws_arg = opts.workspace
    ws_logical = discover.workspace_path(ws_arg, environ)
    ctx = Context(workspace=os.path.realpath(ws_logical), home=home,
                  tmp=os.path.normpath(environ.get("TMPDIR") or "/tmp"),
                  runtime=environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}",
                  account_home=_account_home(home))
    obs = Observer()
    # --profile, else the project's .sandbox.toml (trusted, or only tightening), else default
    policy, cached, policy_deps, notices = projectprofile.load(opts.profile, ctx, state, obs)
    allow_write = _absolute(opts.allow_write, cwd)
    # real paths: protected paths are found under the workspace's real path
    unprotect = tuple(os.path.realpath(p) for p in _absolute(opts.unprotect, cwd))
    _check_allow_write(allow_write)
    extra = [Weakening("--allow-write", "filesystem.writable", f"added {p}") for p in allow_write]
    extra += [Weakening("--unprotect", "protect.unprotect", f"added {p}") for p in unprotect]
    if extra:
        policy = dataclasses.replace(policy, weakenings=policy.weakenings + tuple(extra))
    policy = runflags.apply(policy, opts, environ)  # --network, --allow-host, --env-pass
    # the audit log (and the directory of the default one) is hidden inside
    log, log_warning = auditlog.prepare(environ, os.path.isdir(home))
    policy = dataclasses.replace(policy, deny_read=policy.deny_read
                                 + auditlog.hidden_paths(environ))
    # last: the administrator's managed policy tightens whatever came before
    policy = managed.apply(policy, ctx, environ, obs, allow_write, unprotect)
    ws = discover.resolve_workspace(ws_arg, environ, home, state, policy, obs)
    layout = discover.discover(policy, ws, extra_writable=allow_write, unprotect=unprotect,
                               home=home, state=state, environ=environ, obs=obs,
                               tool_paths=selfguard.install_paths())
    _check_unprotect(unprotect, layout, policy.protected_names)
    auditlog.check_roots(log, layout.writable_roots)
    if log_warning:
        layout = dataclasses.replace(layout, warnings=layout.warnings + (log_warning,))
    if notices:
        layout = dataclasses.replace(layout, warnings=layout.warnings + notices)
    if environ.get("GITHUB_ACTIONS") == "true":
        from sandbox import ghactions

        layout = ghactions.apply(layout, policy, environ)
    if platform == "macos":
        return Prepared(opts, policy, layout, None, "", cached,
                        (time.perf_counter() - started) * 1000,
                        tuple(envfilter.removed(environ, policy)),
                        tuple(obs.deps()) + tuple(policy_deps), obs.racy(),
                        make_audit_spec(policy, layout, state, unprotect), None,
                        {"name": "seatbelt", "guarantee": "full", "require": policy.require})
    # the OS backend turns Policy + Layout into argv (sandbox.backend)
    launch = backend.current().prepare(backend.Request(policy, ctx, layout, tuple(opts.command),
                                                       environ, state, obs))
    if launch.warnings:
        layout = dataclasses.replace(layout, warnings=layout.warnings + launch.warnings)
    inv, bwrap_path = launch.invocation, launch.program
    plan_ms = (time.perf_counter() - started) * 1000
    deps = tuple(obs.deps()) + tuple(policy_deps)
    audit_spec = make_audit_spec(policy, layout, state, unprotect)
    return Prepared(opts, policy, layout, inv, bwrap_path, cached, plan_ms,
                    tuple(envfilter.removed(environ, policy)), deps, obs.racy(), audit_spec,
                    blocked.plan(policy, layout, home, environ), launch.mechanism)


def make_audit_spec(policy: Policy, layout: Layout, state: str, unprotect) -> dict | None:
    """What the persistence audit needs after the run, as plain data (it is cached)."""
    if not layout.writable_roots or not policy.audit_classes:
        return None
    return {
        "state": state,
        "workspace": layout.workspace,
        # the tool cache and git dirs outside the workspace are walked for git
        # dirs only (a .git file can point there; nothing else is the host's)
        "roots": [r for r in layout.writable_roots
                  if r != layout.cache_dir and r not in layout.git_roots],
        "git_roots": list(layout.git_roots),
        "cache_dir": layout.cache_dir,
        "known_protected": list(layout.read_only),
        "unprotected": list(layout.unprotected) + list(policy.unprotect) + list(unprotect),
        "git_dirs": list(layout.git_dirs),
        "hooks_dirs": list(layout.hooks_dirs),
        "hooks_relative": list(layout.hooks_relative),
        "hook_managers": list(layout.hook_managers),
        "git_configs": list(layout.git_configs),
        "program_files": [list(p) for p in layout.program_files],
        "program_relative": [list(p) for p in layout.program_relative],
        "worktrees": list(layout.worktrees),
        "git_entries": list(layout.git_entries),
        "names": list(policy.protected_names),
        "skip_dirs": list(policy.skip_dirs),
        "secret_names": list(policy.deny_read_names),
        "secret_exceptions": list(policy.allow_read_names),
        "classes": list(policy.audit_classes),
    }


def plan_meta(p: Prepared) -> dict:
    """What a report says about the plan; stored with a cached plan too."""
    return {
        "workspace": p.layout.workspace,
        "cwd": p.layout.cwd,
        "profile": {"name": p.policy.name, "chain": list(p.policy.chain), "sha256": p.policy.digest},
        "weakenings": [{"source": w.source, "key": w.key, "detail": w.detail}
                       for w in p.policy.weakenings],
        # what the managed policy or an untrusted project profile took away (sandbox.tighten)
        "tightenings": [{"source": t.source, "key": t.key, "detail": t.detail}
                        for t in p.policy.tightenings],
        "warnings": list(p.layout.warnings),
        "plan_ms": round(p.plan_ms, 2),
        "plan_cached": False,
        "backend": dict(p.backend) if p.backend else None,
    }


def run(opts: RunOptions, environ: dict[str, str]) -> int:
    """Run ``opts.command`` in the sandbox; return the exit status to use."""
    import sys

    if sys.platform == "darwin":  # Seatbelt, not bwrap (sandbox.macos.run)
        from sandbox.macos.run import run as run_macos

        return run_macos(opts, environ)
    started = time.time()
    try:  # first: a bad --report is refused before anything happens
        target = report.open_target(opts.report)
    except SandboxError as err:
        from sandbox.errors import report as show

        return show(err)
    report.capture(opts, target)  # the sandbox's stderr lines go in the report too
    from sandbox.execute import FALLBACK_RETRY

    status = _run_once(opts, environ, started, target, may_fall_back=True)
    if status == FALLBACK_RETRY:  # bwrap could not make namespaces: plan again (sandbox.linux.ladder)
        status = _run_once(opts, environ, started, target, may_fall_back=False)
    return status


def _run_once(opts: RunOptions, environ: dict[str, str], started: float, target,
              may_fall_back: bool) -> int:
    prepared = None
    try:
        from sandbox.execute import audit_leftovers

        audit_leftovers(opts, environ)
        prepared = prepare(opts, environ)
        resolve_command(opts.command, prepared.invocation.env, prepared.layout)
        meta = plan_meta(prepared)
        fallback = prepared.backend is not None and prepared.backend["name"] != "bwrap"
        if not prepared.racy and not fallback:
            # a fallback plan is never cached: each run asks bwrap again first
            plancache.store(environ, prepared, meta)
        if fallback:  # never a silent downgrade, not even with --quiet
            import sys

            from sandbox.linux import ladder

            print(ladder.line(prepared.backend["reason"], prepared.backend["landlock_abi"],
                              prepared.backend["degraded"]), file=sys.stderr)
        inv = prepared.invocation
        seccomp_fd = (inv.seccomp_fd_arg, inv.seccomp_file) if inv.seccomp_file else None
        lock = runlock.hold_for(opts, discover.state_dir(environ, home_dir(environ)),
                                prepared.layout.workspace)
        try:
            return execute(opts, inv.argv, inv.env, inv.status_fd_arg, inv.interactive,
                           prepared.layout.warnings, meta, prepared.bwrap_path, started,
                           seccomp_fd, prepared.audit_spec, limits.plan(prepared.policy),
                           egress.plan(prepared.policy), target,
                           resolver=None if fallback else dns.plan(prepared.policy,
                                                                   prepared.layout),
                           watch=prepared.watch, fallback_ok=may_fall_back,
                           forwards=hostports.plan(prepared.policy))
        finally:
            runlock.release(lock)
    except SandboxError as err:
        return fail(opts, err, plan_meta(prepared) if prepared else None, started, target)
