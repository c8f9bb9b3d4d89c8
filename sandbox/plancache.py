"""A cached, validated plan: the fast path of ``sandbox run``.

A plan is everything ``prepare`` worked out for one set of options in one
place (the bwrap argv before the command, the environment rules, the report
metadata) together with the stamp of every file and directory it was built
from (``sandbox.observe``).  The next run with the same key reuses it if and
only if every stamp still matches, so it skips TOML parsing, discovery and
most imports.  When only directory listings changed (a new file, an
editor's atomic save, a build, churn under ``~/.config``), the changed
directories are listed again and the plan is kept if they hold what they
held (``sandbox.relist``); its stamps are then stored anew.
tests/test_plancache.py and tests/test_relist.py check that a cached plan
equals a fresh build.

Plans live in the state directory, which the sandboxed command cannot write
(it is outside every writable root, and a workspace or --allow-write that
overlaps it is refused).  A plan file that is not ours alone is ignored.
"""

from __future__ import annotations

import marshal
import os
import sys

from sandbox import __version__, statefile
from sandbox.observe import stale_packed

FORMAT = 14  # 14: sockets in the state dir (the warm server's) are never masked, the state dir is a tmpfs inside; 13: [[network.forward]] grants (sandbox.egress.hostports); 12: directory stamps carry digests of what each held (sandbox.relist); 11: the report names the backend (sandbox.linux.ladder); 10: a run without network has its own resolver (sandbox.egress.dns) and watch (sandbox.blocked); 9: the kernel's socket list is kept with the plan (sandbox.hostsockets)
# Environment variables that change what the plan would be (the rest of the
# environment is filtered afresh on every run).
KEY_ENV = ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR", "TMPDIR", "PATH",
           "PWD", "SANDBOX_BWRAP", "SANDBOX_MANAGED_EXTRA", "XDG_STATE_HOME",
           "SANDBOX_AUDIT_LOG",
           # a GitHub Actions step's own file-command files (sandbox.ghactions)
           "GITHUB_ACTIONS", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY", "GITHUB_ENV", "GITHUB_PATH",
           "GITHUB_STATE")


def state_dir(environ: dict[str, str]) -> str:
    home = environ.get("HOME") or os.path.expanduser("~")
    base = environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    return os.path.join(os.path.realpath(base), "sandbox")


def key(opts, environ: dict[str, str]) -> str:
    # sys.prefix and the package's place: which installation is running
    # decides which paths are protected (sandbox.selfguard)
    from sandbox import selfguard

    secrets = ()
    if opts.env_pass:  # the weakening's words say whether each value is a secret
        from sandbox import runflags

        secrets = runflags.secret_flags(opts.env_pass, environ)

    # sys.platform: a plan is one backend's (sandbox.backend), never another's
    parts = (FORMAT, __version__, sys.platform, sys.version_info[:2], sys.prefix, __file__,
             selfguard.started_from, selfguard.dropped, os.getuid(), os.getgid(),
             opts.profile, opts.workspace, tuple(opts.allow_write), tuple(opts.unprotect),
             os.getcwd(), os.isatty(0), tuple(environ.get(k) for k in KEY_ENV),
             # the per-call flags that change the plan (not --timeout: see runflags)
             opts.network, tuple(opts.allow_host), tuple(opts.env_pass),
             secrets)
    return statefile.sha256_hex(repr(parts).encode())[:32]


def _path(environ: dict[str, str], plan_key: str) -> str:
    return os.path.join(state_dir(environ), "plans", plan_key)


def _private(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def load(opts, environ: dict[str, str]) -> dict | None:
    """The cached plan for these options, if it is still exactly right."""
    found = read(opts, environ)
    return None if found is None else check(*found)


def read(opts, environ: dict[str, str]) -> tuple[str, dict] | None:
    """(file, plan) for these options, *not yet checked*: only ``check`` says
    whether the plan still holds.  A caller may start bwrap from it before
    that, as long as the command cannot start until ``check`` has passed
    (``Speculation``)."""
    path = _path(environ, key(opts, environ))
    if not _private(path) or not _private(os.path.dirname(path)):
        return None
    try:
        with open(path, "rb") as fh:
            plan = marshal.loads(fh.read())  # not marshal.load: statefile.load
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if not isinstance(plan, dict) or plan.get("format") != FORMAT:
        return None
    if not _programs_outside_roots(plan):
        return None  # before anything of it runs: bwrap may start before ``check``
    return path, plan


def _programs_outside_roots(plan: dict) -> bool:
    """What the plan runs on the host (bwrap, and the terminal helper) is
    outside every root the command can write: checked against these roots
    when the plan was made, and here again (a few string compares), before
    bwrap is started from a plan not yet checked."""
    from sandbox.hostprogs import inside

    programs = (plan["argv"][0], *plan["host_programs"])
    return not any(inside(p, plan["host_roots"]) for p in programs)


def check(path: str, plan: dict) -> dict | None:
    """``plan`` (from ``read``, only) if every stamp it was built from still
    matches, else None.  It may come back changed: new stamps after a
    re-listing, masks for host sockets bound since it was made."""
    stale = stale_packed(plan["deps"])
    if stale is None:
        return None
    if stale:
        # only directory listings changed: list those directories again and
        # keep the plan if they hold what they held (sandbox.relist)
        from sandbox import relist

        deps = relist.refresh_deps(plan["deps"], stale)
        if deps is None:
            return None
        if deps != plan["deps"]:  # new stamps: the next run need not list them again
            plan["deps"] = deps
            statefile.dump(path, plan)
    # (what the plan runs on the host: read() refused a plan naming a
    # writable program, and the stamps above say nothing moved since)
    if plan["host_sockets"] is not None:
        from sandbox import hostsockets

        new = hostsockets.appeared(plan["host_sockets"])
        if new:  # bound since: masked too, without planning again (sandbox.linux.drift)
            from sandbox.linux import drift

            plan["argv"] = tuple(drift.add_masks(plan["argv"], plan["host_sockets"][4], new))
            plan["status_index"], plan["seccomp"] = drift.fd_indexes(
                plan["argv"], plan["status_index"], plan["seccomp"])
    return plan


class PlanStale(Exception):
    """Raised by ``Speculation`` when the plan a run was started from no
    longer holds; bwrap is killed before the command starts."""


class Speculation:
    """Check a plan from ``read`` while bwrap already builds the sandbox.

    The check (every stamp, re-listings, the kernel's socket list) takes 1 to
    3 ms, as long as bwrap takes to make its mounts: run side by side on two
    cores, it costs nothing.  What makes that safe is where bwrap waits: it
    reads the seccomp filter from a pipe, after every mount and before the
    command (``sandbox.runner.run``), and the filter is written only once
    this has passed.  Stale, bwrap is killed first; had the wrapper died
    instead, the pipe would end empty and bwrap refuses an empty filter.
    So a command only ever starts in a sandbox built from a plan that held
    when it started, as without speculation.

    Call it (any number of times, it checks once): raises ``PlanStale``
    when the plan changed, with ``fresh`` the checked plan when only its
    argv did (masks for sockets bound since), else None (plan afresh).
    """

    __slots__ = ("path", "plan", "argv", "passed", "fresh")

    def __init__(self, path: str, plan: dict) -> None:
        self.path, self.plan = path, plan
        self.argv = plan["argv"]
        self.passed: bool | None = None
        self.fresh: dict | None = None

    def __call__(self) -> None:
        if self.passed is None:
            fresh = check(self.path, self.plan)
            self.passed = fresh is not None and fresh["argv"] == self.argv
            self.fresh = None if self.passed else fresh
        if not self.passed:
            raise PlanStale()


def store(environ: dict[str, str], prepared, meta: dict) -> None:
    """Save a plan built by ``app.prepare`` (only when no input was racy)."""
    from sandbox import limits  # only here: the fast path reads the plan's copy
    from sandbox.egress import dns, session as egress, hostports

    inv, policy, layout = prepared.invocation, prepared.policy, prepared.layout
    command_len = len(prepared.options.command)
    plan = {
        "format": FORMAT,
        "argv": tuple(inv.argv[:len(inv.argv) - command_len]),
        "status_index": inv.status_fd_arg,
        "interactive": inv.interactive,
        "seccomp": (inv.seccomp_fd_arg, inv.seccomp_file) if inv.seccomp_file else None,
        "audit": prepared.audit_spec,
        "limits": limits.plan(policy),
        "egress": egress.plan(policy),
        "resolver": dns.plan(policy, layout),
        "forward": hostports.plan(policy),
        "blocked": prepared.watch,
        "env_deny": policy.env_deny,
        "env_pass": policy.env_pass,
        "env_set": policy.env_set,
        "caches": policy.caches,
        "cache_dir": layout.cache_dir,
        "cwd": layout.cwd,
        "hidden": layout.hidden_dirs(),
        "exposed": layout.exposed_dirs(),
        "warnings": layout.warnings,
        "bwrap": prepared.bwrap_path,
        "host_programs": (prepared.bwrap_path,) + ((inv.argv[inv.status_fd_arg + 2],)
                                                   if inv.interactive else ()),
        "host_roots": layout.writable_roots + layout.keep_in_place,
        "meta": {**meta, "plan_cached": True},
        "deps": tuple((p, s) for p, s in prepared.deps if s.__class__ is not list),
        # what the kernel's socket list said (sandbox.hostsockets): not a stamp
        "host_sockets": next((s for _p, s in prepared.deps if s.__class__ is list), None),
    }
    statefile.dump(_path(environ, key(prepared.options, environ)), plan)
