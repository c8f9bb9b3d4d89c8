"""Render a prepared run for people (text) and programs (JSON)."""

from __future__ import annotations

from sandbox.app import Prepared
from sandbox.limits import describe as describe_limits
from sandbox.policy import to_data
from sandbox import __version__
from sandbox.report import SCHEMA_VERSION, shell_join


def as_data(p: Prepared) -> dict:
    layout = p.layout
    return {
        "schema_version": SCHEMA_VERSION,
        "version": __version__,
        "error": None,
        "profile": {"name": p.policy.name, "chain": list(p.policy.chain), "sha256": p.policy.digest,
                    "description": p.policy.description},
        "policy": {k: _plain(v) for k, v in to_data(p.policy).items()},
        "workspace": layout.workspace,
        "cwd": layout.cwd,
        "writable": list(layout.writable_roots),
        "kept_in_place": list(layout.keep_in_place),
        "protected_read_only": list(layout.read_only),
        "unprotected": list(layout.unprotected),
        "secrets_masked": {"directories": list(layout.masked_dirs), "files": list(layout.masked_files)},
        "secrets_git_holds": [{"path": target, "shown": source}
                              for source, target in layout.tracked_secrets],
        "emptied_dirs": list(layout.empty_dirs),
        "scratch_parents_read_only": list(layout.scratch_parents),
        "cache_dir": layout.cache_dir,
        "env_removed": list(p.removed_env),
        "weakenings": [{"source": w.source, "key": w.key, "detail": w.detail}
                       for w in p.policy.weakenings],
        "warnings": list(layout.warnings),
        # what the managed policy or an untrusted project profile took away (sandbox.tighten)
        "tightenings": [{"source": t.source, "key": t.key, "detail": t.detail}
                        for t in p.policy.tightenings],
        "network": p.policy.network.value,
        "egress": _egress(p),
        "forwards": [{"host": g[0], "port": g[1], "inside_port": g[2], "name": g[3] or None,
                      "source": g[4]} for g in p.policy.forwards],
        "backend": dict(p.backend) if p.backend else None,
        "argv": list(p.invocation.argv),
        "plan_ms": round(p.plan_ms, 2),
    }


# Every key of ``as_data``: on an error, ``error_data`` gives them all, null.
_KEYS = ("profile", "policy", "workspace", "cwd", "writable", "kept_in_place",
         "protected_read_only", "unprotected", "secrets_masked", "secrets_git_holds",
         "emptied_dirs", "scratch_parents_read_only", "cache_dir", "env_removed", "weakenings",
         "warnings", "network", "egress", "argv", "plan_ms", "tightenings", "backend",
         "forwards")


def error_data(err) -> dict:
    """``explain --json`` when the plan cannot be made: the error, every other key null."""
    doc = {"schema_version": SCHEMA_VERSION, "version": __version__,
           "error": {"code": err.code, "kind": err.kind, "message": err.message,
                     "hint": err.hint}}
    doc.update(dict.fromkeys(_KEYS))
    return doc


def _egress(p: Prepared) -> dict | None:
    from sandbox.egress import session as egress

    if egress.plan(p.policy) is None:
        return None
    from sandbox.egress.netrules import describe

    return {"proxy": egress.PROXY_URL, "no_proxy": egress.no_proxy(egress.plan(p.policy)),
            "max_connections": p.policy.egress_max_connections or egress.MAX_CONNECTIONS,
            "allow": [f"{describe(r)}   ({r.source})" for r in p.policy.egress_allow],
            "deny": [f"{describe(r)}   ({r.source})" for r in p.policy.egress_deny],
            "hosts": [f"{name} = {addr}" for name, addr in p.policy.egress_hosts],
            "credentials": [_credential(c) for c in p.policy.egress_credentials],
            "headers": [f"{host}:{','.join(map(str, ports))} "
                        + " ".join([f"strip {','.join(strip)}"] * bool(strip)
                                   + [f"refuse {','.join(refuse)}"] * bool(refuse))
                        for host, ports, strip, refuse in p.policy.egress_headers],
            "inspected": [f"{describe(r)}   ({r.source})" for r in p.policy.egress_allow
                          if r.inspect]}



def _credential(data: tuple) -> str:
    from sandbox.egress.credentials import Credential

    return Credential.from_tuple(data).describe()


def _backend_line(backend: dict | None) -> str:
    """Which rung of the ladder runs the command (sandbox.linux.ladder), and its guarantee."""
    if not backend or backend["name"] == "bwrap":
        require = backend["require"] if backend else "fallback"
        return (f"backend     bwrap (full guarantees; where bwrap cannot run: "
                f"{'fail closed' if require == 'full' else 'Landlock + seccomp fallback'}, "
                f"require = \"{require}\")")
    return (f"backend     FALLBACK: Landlock ABI {backend['landlock_abi']} + seccomp "
            f"({backend['reason']}); degraded: {'; '.join(backend['degraded'])}")


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def as_text(p: Prepared) -> str:
    d = as_data(p)
    lines = [
        f"profile     {d['profile']['name']} ({' -> '.join(d['profile']['chain'])}), "
        f"sha256 {d['profile']['sha256'][:16]}",
        f"workspace   {d['workspace']} ({p.policy.workspace.value})",
        f"starts in   {d['cwd']}",
        f"network     {d['network']} " + (
            "(no network namespace under the fallback: internet sockets refused by seccomp, "
            "unix sockets work)" if p.backend and p.backend["name"] != "bwrap" else
            "(own network namespace, loopback only; name lookups get \"no such name\" at "
            "once and are listed after the run)" if d["network"] == "none" else
            "(own network namespace, loopback only)" if d["egress"] is None else
            f"(own network namespace; only the egress proxy at {d['egress']['proxy']} leads out, "
            f"at most {d['egress']['max_connections']} connections at once)"),
        "seccomp     " + (f"set '{p.policy.syscall_set}'"
                          + (f", also denied: {', '.join(p.policy.syscall_deny)}" if p.policy.syscall_deny else "")
                          + (f", allowed: {', '.join(p.policy.syscall_allow)}" if p.policy.syscall_allow else "")
                          + (", 32-bit allowed" if p.policy.allow_32bit else "")
                          + ("" if p.policy.unix_sockets else ", AF_UNIX refused")
                          + (f" ({p.invocation.seccomp_file})" if p.invocation.seccomp_file else "")
                          if p.policy.syscalls_enabled else "OFF"),
        "audit       " + (", ".join(p.policy.audit_classes) if p.policy.audit_classes else "OFF"),
        f"limits      {describe_limits(p.policy)}",
        _backend_line(p.backend),
    ]

    def section(title: str, items: list[str]) -> None:
        lines.append(f"{title} ({len(items)})")
        lines.extend(f"  {item}" for item in items)

    section("writable", d["writable"])
    section("protected, read-only", d["protected_read_only"])
    section("kept in place (cannot be renamed)", d["kept_in_place"])
    section("secrets, shown empty", d["secrets_masked"]["directories"] + d["secrets_masked"]["files"])
    if d["secrets_git_holds"]:
        section("secret names git already holds, shown read-only",
                [s["path"] if s["path"] == s["shown"] else f"{s['path']} (as staged: {s['shown']})"
                 for s in d["secrets_git_holds"]])
    section("replaced by an empty directory", d["emptied_dirs"])
    if d["scratch_parents_read_only"]:
        section("host directories in the private /tmp, read-only", d["scratch_parents_read_only"])
    section("environment variables removed", d["env_removed"])
    if d["egress"] is not None:
        section("network: allowed through the proxy", d["egress"]["allow"])
        if d["egress"]["deny"]:
            section("network: refused even if allowed", d["egress"]["deny"])
        if d["egress"]["hosts"]:
            section("network: names resolved by the profile (no DNS)", d["egress"]["hosts"])
        if d["egress"]["credentials"]:
            section("network: credentials the command holds only a placeholder for",
                    d["egress"]["credentials"])
        if d["egress"]["headers"]:
            section("network: request headers stripped or refused", d["egress"]["headers"])
        if d["egress"]["inspected"]:
            from sandbox.egress.tlstrust import CA_VARIABLES

            section("network: TLS inspected (methods, paths and deny rules checked inside "
                    "HTTPS)", d["egress"]["inspected"])
            lines.append("  TLS inspected: run CA trusted inside through the system CA bundle "
                         f"and {', '.join(CA_VARIABLES)}")
    if p.policy.forwards:
        from sandbox.egress.hostports import describe as grant

        section("network: host ports forwarded (each a weakening)",
                [f"{grant(g)}   ({g[4]})" for g in p.policy.forwards])
    if d["cache_dir"]:
        lines.append(f"tool caches {d['cache_dir']}")
    if d["weakenings"]:
        section("WEAKENED (protections removed on purpose)",
                [f"{w['source']}: {w['key']}: {w['detail']}" for w in d["weakenings"]])
    if d["tightenings"]:
        section("TIGHTENED (by the managed policy or an untrusted project profile)",
                [f"{t['source']}: {t['key']}: {t['detail']}" for t in d["tightenings"]])
    if d["unprotected"]:
        section("UNPROTECTED (writable although protected)", d["unprotected"])
    for w in d["warnings"]:
        lines.append(f"warning: {w}")
    if p.backend and p.backend["name"] != "bwrap":
        lines.append("fallback argv (sandbox.linux.confine applies Landlock and seccomp, then execs):")
    elif d["egress"] is not None:
        lines.append("bwrap argv (started inside the egress bridge's network namespace, "
                     "which is why it has no --unshare-net):")
    else:
        lines.append("bwrap argv:")
    lines.append("  " + shell_join(d["argv"]))
    return "\n".join(lines)
