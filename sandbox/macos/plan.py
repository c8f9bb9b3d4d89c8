"""One macOS run's plan: the host facts, the profile, the command's environment.

Shared by ``sandbox explain --platform macos`` (on any host) and the darwin
run path (``sandbox.macos.run``).  The profile loading, env filter, audit,
limits and report are the same as on Linux; only the enforcement differs.
"""

from __future__ import annotations

import os

from sandbox.envfilter import sandbox_env
from sandbox.macos import hostfacts, seatbelt
from sandbox.policy import Access, NetworkMode

# The run's own TMPDIR is made fresh (mkdtemp) in the host's temp directory;
# explain shows where, with this in place of the random part.
RUN_TMP_PREFIX = "sandbox-run-"
EXPLAIN_TMP_NAME = RUN_TMP_PREFIX + "XXXXXXXX"
# explain cannot know the ephemeral port a run's proxy will get
EXPLAIN_PROXY_PORT = 49152


def host_tmp(environ: dict[str, str]) -> str:
    """The host's temp directory, resolved (/var/folders/... -> /private/var/folders/...)."""
    return os.path.realpath(environ.get("TMPDIR") or "/tmp")


def context(policy, layout, environ: dict[str, str], *, home: str, state: str | None,
            tmpdir: str | None, proxy_port: int | None,
            mac_spelling: bool = False) -> seatbelt.Context:
    scratch = tmpdir if policy.scratch is Access.WRITE else None
    port = proxy_port if policy.network is NetworkMode.PROXY else None
    return hostfacts.gather(policy, layout, home=home, state=state, tmpdir=scratch,
                            proxy_port=port, mac_spelling=mac_spelling)


def command_env(environ: dict[str, str], policy, layout, tmpdir: str | None,
                proxy_port: int | None, egress_plan: dict | None) -> dict[str, str]:
    """The environment the command gets: the Linux one (env filter, env.set,
    caches), with TMPDIR pointing at the run's own directory (the host's /tmp
    is shared on macOS and stays read-only) and the proxy on its real port."""
    env = sandbox_env(environ, policy, layout.cache_dir, layout.cwd)
    if tmpdir and policy.scratch is Access.WRITE:
        env["TMPDIR"] = tmpdir
    elif env.get("TMPDIR") == "/tmp":
        env.pop("TMPDIR")  # no private /tmp here: let tools find their own
    if proxy_port is not None and egress_plan is not None:
        from sandbox.egress import session as egress

        url = f"http://127.0.0.1:{int(proxy_port)}"
        env.update({k: (url if v == egress.PROXY_URL else v)
                    for k, v in egress.proxy_env(egress_plan).items()})
    return env
