"""``sandbox explain --platform macos``: the Seatbelt profile a run would use.

Works on any host, so a reviewer on Linux can read what a Mac would run.  On
Linux the paths are the Linux host's (the workspace and home given,
resolved there) with the ``/private`` spellings a Mac needs added; the
run's TMPDIR and the proxy's port are shown as placeholders because a run
makes them fresh (macos.md in the docs).
"""

from __future__ import annotations

import os
import sys

from sandbox import __version__, discover
from sandbox.macos import plan, seatbelt
from sandbox.policy import NetworkMode
from sandbox.report import SCHEMA_VERSION, shell_join


def as_data(p, environ: dict[str, str]) -> dict:
    from sandbox.egress import session as egress
    from sandbox.app import home_dir

    home = home_dir(environ)
    state = discover.state_dir(environ, home)
    tmpdir = os.path.join(plan.host_tmp(environ), plan.EXPLAIN_TMP_NAME)
    port = plan.EXPLAIN_PROXY_PORT if p.policy.network is NetworkMode.PROXY else None
    ctx = plan.context(p.policy, p.layout, environ, home=home, state=state, tmpdir=tmpdir,
                       proxy_port=port, mac_spelling=sys.platform != "darwin")
    sb = seatbelt.build(p.policy, ctx, list(p.options.command))
    env = plan.command_env(environ, p.policy, p.layout, ctx.tmpdir, port, egress.plan(p.policy))
    notes = []
    if sys.platform != "darwin":
        notes.append(f"made on {sys.platform}: paths are this host's, resolved here, with the "
                     "/private spellings a Mac needs added")
    if ctx.tmpdir:
        notes.append(f"TMPDIR: a fresh directory per run; {plan.EXPLAIN_TMP_NAME} stands for "
                     "its random name")
    if any(r.inspect for r in p.policy.egress_allow):
        notes.append("this profile inspects TLS (inspect = true): a run on macOS refuses it")
    if port is not None:
        notes.append(f"proxy port: a free port on 127.0.0.1 chosen per run; {port} stands for it")
    return {
        "schema_version": SCHEMA_VERSION,
        "version": __version__,
        "error": None,
        "platform": "macos",
        "profile": {"name": p.policy.name, "chain": list(p.policy.chain),
                    "sha256": p.policy.digest},
        "workspace": ctx.workspace,
        "cwd": p.layout.cwd,
        "tmpdir": ctx.tmpdir,
        "cache_dir": ctx.cache_dir if p.policy.uses_caches() else None,
        "proxy_port": port,
        "env_set": {k: env[k] for k in sorted(env) if environ.get(k) != env[k]},
        "env_removed": sorted(k for k in environ if k not in env),
        "sbpl": sb.sbpl,
        "params": sb.params,
        "argv": sb.argv,
        "notes": notes,
    }


def as_text(data: dict) -> str:
    lines = [f"profile     {data['profile']['name']} ({' -> '.join(data['profile']['chain'])}), "
             f"sha256 {data['profile']['sha256'][:16]}",
             f"platform    macos (Seatbelt, {seatbelt.SANDBOX_EXEC})",
             f"workspace   {data['workspace']}",
             f"TMPDIR      {data['tmpdir'] or '(none: scratch is read-only)'}"]
    if data["proxy_port"] is not None:
        lines.append(f"network     only the egress proxy at 127.0.0.1:{data['proxy_port']}")
    else:
        lines.append("network     none")
    lines += [f"note: {n}" for n in data["notes"]]
    lines.append(f"parameters ({len(data['params'])})")
    lines += [f"  {k}={v}" for k, v in data["params"].items()]
    lines.append("profile text:")
    lines += ["  " + line if line else "" for line in data["sbpl"].splitlines()]
    lines.append("sandbox-exec argv (the profile text stands as PROFILE):")
    argv = ["PROFILE" if i == 2 else a for i, a in enumerate(data["argv"])]
    lines.append("  " + shell_join(argv))
    return "\n".join(lines)
