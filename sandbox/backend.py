"""The seam between the shared core and an OS backend.

The core works out, the same way on every platform, *what* a run may do:
the Policy (profiles, managed policy, flags), the Layout (what discovery
found: workspace, writable roots, secrets, protected paths), the filtered
environment, the limits, the egress plan and the persistence audit.  A
backend turns that into *how* this OS enforces it, and nothing else:

    Request(policy, context, layout, command, environ, state, obs)
        -> backend.prepare(request) -> LaunchPlan

* Linux (``sandbox.linux.backend``): bubblewrap argv plus a seccomp BPF
  file, or on a host where bwrap cannot make namespaces the Landlock
  fallback (``sandbox.linux.ladder``).
* macOS: ``sandbox-exec`` with a Seatbelt profile from
  ``sandbox.macos.seatbelt.build(policy, context, command)``, its context
  made from the Policy and the Layout (``sandbox.macos.plan.context``).

The runner (``sandbox.runner``, through ``sandbox.execute``) starts the
plan's argv whatever made it.  Imports flow one way: a backend imports the
core; the core reaches a backend only through ``current()`` below, inside a
function, so importing the core never needs another platform's modules.
Only the standard library is imported here: ``sandbox.app`` imports this
module, and nothing on the cached fast path does.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True, slots=True)
class Request:
    """What a backend is given.  All of it is decided by the shared core."""

    policy: Any  # sandbox.policy.Policy
    context: Any  # sandbox.profile.Context: workspace, home, tmp, runtime
    layout: Any  # sandbox.layout.Layout: what discovery found on the host
    command: tuple[str, ...]  # the command, argv[0] not yet resolved
    environ: dict[str, str]  # the caller's environment (the backend filters it: envfilter)
    state: str  # the sandbox's state directory (cached BPF, ladder marker)
    obs: Any  # sandbox.observe.Observer: a backend stamps the host files it relies on


@dataclass(frozen=True, slots=True)
class LaunchPlan:
    """What a backend returns: everything needed to start the sandbox.

    ``invocation`` holds the argv (the command last), the environment, the
    file to pass on an fd (the seccomp BPF, at ``seccomp_fd_arg``) and
    whether the command gets a terminal of its own.
    """

    invocation: Any  # sandbox.invocation.Invocation
    program: str  # the host program argv[0] names (bwrap, sandbox-exec): a cached plan re-checks it
    # what the report says ran the command: name, guarantee, require, and for
    # a fallback its reason and what is degraded (sandbox.linux.ladder)
    mechanism: dict
    warnings: tuple[str, ...] = ()  # added to the layout's warnings
    # directories made for this run alone, removed by whoever runs the plan
    # once it ends: none on Linux (the BPF is a cache in the state directory);
    # on macOS the run's own TMPDIR (sandbox.macos.run removes it)
    cleanup: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Backend:
    name: str  # "linux", "macos"
    prepare: Callable[[Request], LaunchPlan]


def current(platform: str | None = None) -> Backend:
    """The backend for this OS (``sys.platform``); a SetupError elsewhere."""
    platform = sys.platform if platform is None else platform
    if platform.startswith("linux"):
        from sandbox.linux import backend as linuxbackend

        return Backend("linux", linuxbackend.prepare)
    if platform == "darwin":
        return Backend("macos", _prepare_macos)
    from sandbox.errors import SetupError

    raise SetupError(f"sandbox has no backend for this platform ({platform}); "
                     "the command was not run",
                     hint="sandbox runs on Linux (bubblewrap) and macOS (Seatbelt)")


def _prepare_macos(req: Request) -> LaunchPlan:
    """Seatbelt: ``sandbox-exec`` with the profile text and its ``-D`` parameters.

    The same steps as the darwin run path (``sandbox.macos.run.run``), which
    ``sandbox.app.run`` takes on a Mac today; this is where that path plugs
    into the seam.  ``sandbox.macos`` is imported here, when a run needs it,
    so the core imports nothing of it on Linux.  With a proxy profile the
    port is 0 until the proxy listens (``seatbelt.with_proxy_port``).
    """
    from sandbox.invocation import Invocation
    from sandbox.macos import plan, run, seatbelt
    from sandbox.policy import Access, NetworkMode

    policy = req.policy
    run.check_sandbox_exec()
    run.check_supported(policy)
    tmpdir = run.make_tmpdir(req.environ) if policy.scratch is Access.WRITE else None
    ctx = plan.context(policy, req.layout, req.environ, home=req.context.home, state=req.state,
                       tmpdir=tmpdir, proxy_port=0 if policy.network is NetworkMode.PROXY else None)
    built = seatbelt.build(policy, ctx, list(req.command))
    env = plan.command_env(req.environ, policy, req.layout, ctx.tmpdir, None, None)
    return LaunchPlan(Invocation(tuple(built.argv), env, None, False),
                      program=seatbelt.SANDBOX_EXEC,
                      mechanism={"name": "seatbelt", "guarantee": "full",
                                 "require": policy.require},
                      cleanup=(tmpdir,) if tmpdir else ())
