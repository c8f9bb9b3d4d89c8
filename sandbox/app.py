"""The core of ``sandbox run`` and ``sandbox explain``, free of any CLI framework.

Data flows one way:

    options -> policy (profile / policycache) -> layout (discover)
            -> invocation (bwrap.build) -> runner.run -> exit status + report

Both the typer CLI and the fast path in ``sandbox.__main__`` call ``run``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass

from sandbox import bwrap, discover, envfilter, policycache, report
from sandbox.errors import (CommandNotExecutable, CommandNotFound, SandboxError, SetupError,
                            UsageError)
from sandbox.invocation import Invocation
from sandbox.layout import Layout
from sandbox.policy import Policy, Weakening
from sandbox.profile import Context

EXIT_TOOL_ERROR = 125


@dataclass(frozen=True, slots=True)
class RunOptions:
    command: tuple[str, ...] = ()
    profile: str = "default"
    workspace: str | None = None
    allow_write: tuple[str, ...] = ()
    unprotect: tuple[str, ...] = ()
    report: str | None = None
    dry_run: bool = False


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


def home_dir(environ: dict[str, str]) -> str:
    home = environ.get("HOME") or os.path.expanduser("~")
    if not os.path.isabs(home):
        raise SetupError(f"HOME is not an absolute path: {home!r}", hint="set HOME to your home directory")
    return os.path.normpath(home)


def find_bwrap(environ: dict[str, str]) -> str:
    """bwrap from $SANDBOX_BWRAP, else from PATH.  Missing bwrap is fatal."""
    explicit = environ.get("SANDBOX_BWRAP")
    path = explicit if explicit else shutil.which("bwrap", path=environ.get("PATH", os.defpath))
    if not path or not os.access(path, os.X_OK) or os.path.isdir(path):
        where = f"SANDBOX_BWRAP={explicit}" if explicit else "PATH"
        raise SetupError(f"bubblewrap (bwrap) was not found in {where}; the command was not run",
                         hint="install it: sudo apt-get install bubblewrap (Debian/Ubuntu), "
                              "sudo dnf install bubblewrap (Fedora)")
    return path


def _absolute(paths: tuple[str, ...], base: str) -> tuple[str, ...]:
    return tuple(os.path.normpath(os.path.join(base, p)) for p in paths)


def _check_allow_write(paths: tuple[str, ...]) -> None:
    for p in paths:
        if os.path.realpath(p) == "/":
            raise UsageError("--allow-write / would make the whole host writable",
                             hint="name the one directory the command needs")
        if not os.path.exists(p):
            raise UsageError(f"--allow-write {p}: no such file or directory",
                             hint="create it first; the sandbox never creates host paths")


def resolve_command(command: tuple[str, ...], env: dict[str, str], cwd: str,
                    layout: Layout) -> str:
    """Check on the host that the command exists inside, as a shell would (126/127)."""
    if not command:
        raise UsageError("no command given", hint="usage: sandbox run [OPTIONS] -- COMMAND [ARGS...]")
    name = command[0]
    if "/" in name:
        path = os.path.normpath(os.path.join(cwd, name))
    else:
        path = shutil.which(name, mode=os.F_OK, path=env.get("PATH", os.defpath)) or ""
        if not path:
            raise CommandNotFound(f"{name}: not found in the sandbox's PATH")
    if not os.path.lexists(path):
        raise CommandNotFound(f"{name}: no such file")
    hidden = bwrap.SCRATCH + layout.empty_dirs + layout.masked_dirs
    real = os.path.realpath(path)
    exposed = layout.writable_roots + ((layout.workspace,) if layout.workspace else ())
    if any(discover.is_within(real, d) for d in hidden) and not any(
            discover.is_within(real, r) for r in exposed):
        raise CommandNotFound(f"{name}: {real} is hidden inside the sandbox",
                              hint="the host's /tmp and /run are private; put it in the workspace")
    if os.path.isdir(real) or not os.access(real, os.X_OK):
        raise CommandNotExecutable(f"{name}: permission denied or not a regular executable")
    return path


def prepare(opts: RunOptions, environ: dict[str, str]) -> Prepared:
    started = time.perf_counter()
    home = home_dir(environ)
    state = discover.state_dir(environ, home)
    discover.ensure_state_dir(state)
    cwd = discover.logical_cwd(environ)
    ws_arg = opts.workspace
    ws_logical = os.path.normpath(os.path.join(cwd, ws_arg)) if ws_arg else cwd
    if not os.path.isdir(ws_logical):
        raise UsageError(f"workspace {ws_logical} is not a directory",
                         hint="pass an existing directory to --workspace")
    ctx = Context(workspace=os.path.realpath(ws_logical), home=home,
                  tmp=os.path.normpath(environ.get("TMPDIR") or "/tmp"),
                  runtime=environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}")
    policy, cached = policycache.load(opts.profile, ctx, state)
    allow_write = _absolute(opts.allow_write, cwd)
    unprotect = _absolute(opts.unprotect, cwd)
    _check_allow_write(allow_write)
    extra = [Weakening("--allow-write", "filesystem.writable", f"added {p}") for p in allow_write]
    extra += [Weakening("--unprotect", "protect.unprotect", f"added {p}") for p in unprotect]
    if extra:
        policy = dataclasses.replace(policy, weakenings=policy.weakenings + tuple(extra))
    ws = discover.resolve_workspace(ws_arg, environ, home, state, policy)
    layout = discover.discover(policy, ws, extra_writable=allow_write, unprotect=unprotect,
                               home=home, state=state, environ=environ)
    bwrap_path = find_bwrap(environ)
    helper = None
    if os.isatty(0):
        helper = shutil.which("setsid")
        if helper is None:
            layout = dataclasses.replace(layout, warnings=layout.warnings + (
                "setsid (util-linux) not found: running without a terminal of its own",))
    inv = bwrap.build(policy, layout, list(opts.command), environ,
                      bwrap_path=bwrap_path, ctty_helper=helper)
    plan_ms = (time.perf_counter() - started) * 1000
    return Prepared(opts, policy, layout, inv, bwrap_path, cached, plan_ms,
                    tuple(envfilter.removed(environ, policy)))


def run(opts: RunOptions, environ: dict[str, str]) -> int:
    """Run ``opts.command`` in the sandbox; return the exit status to use."""
    from sandbox import runner
    from sandbox.errors import report as show

    started = time.time()
    prepared = None
    try:
        prepared = prepare(opts, environ)
        resolve_command(opts.command, prepared.invocation.env, prepared.layout.cwd, prepared.layout)
        for warning in prepared.layout.warnings:
            print(f"sandbox: warning: {warning}", file=__import__("sys").stderr)
        if opts.dry_run:
            print(report.shell_join(prepared.invocation.argv))
            return 0
        outcome = runner.run(prepared.invocation)
        if not outcome.started:
            raise _setup_failure(prepared.bwrap_path, outcome)
        status = outcome.exit_status if outcome.exit_status is not None else outcome.bwrap_status
        report.write(opts.report, report.build(opts, prepared, started, outcome=outcome, status=status))
        return status
    except SandboxError as err:
        report.write(opts.report, report.build(opts, prepared, started, error=err,
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
