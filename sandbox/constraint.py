"""A profile file read as a constraint: only the keys it names restrict a run.

An untrusted project profile and the managed policy are profile-format TOML
files (validated by ``sandbox.profile``), but they do not build a policy of
their own: each key they set is met with the run's policy
(``sandbox.tighten``), and a key they leave out restricts nothing.  So a
managed file saying only ``[limits] timeout_seconds = 600`` caps the
timeout and leaves the network, the writable paths and everything else to
the user's profile.

Keys that cannot tighten anything (``extends``, ``filesystem.allow_read``,
``env.set``, ``network.hosts``, ``syscalls.set``) are returned apart: the
project profile ignores them (and says so), the managed policy refuses them.
"""

from __future__ import annotations

from sandbox.policy import Access, NetworkMode, Policy
from sandbox.profile import Context, expand
from sandbox.tighten import FIELD_KEYS

# (``network.credentials`` hands a secret to the proxy and ``[ci]`` opens GitHub's
# files: both only loosen, so neither can be a constraint.)
NOT_CONSTRAINTS = ("extends", "filesystem.allow_read", "env.set", "network.hosts",
                   "syscalls.set", "network.credentials", "ci.github_env", "ci.github_path")
_FIELD_OF = {key: field for field, key in FIELD_KEYS.items()}
_FIELD_OF["sockets.max_depth"] = "socket_scan_depth"


def keys_of(data: dict) -> list[str]:
    """Every dotted key a validated profile table sets (``audit`` and ``caches``
    count as one key each: they constrain one field)."""
    out = []
    for top, value in data.items():
        if top in ("audit", "caches"):
            out.append(top)
        elif isinstance(value, dict):
            out.extend(f"{top}.{key}" for key in value)
        else:
            out.append(top)
    return out


def build(data: dict, ctx: Context, name: str,
          digest: str = "") -> tuple[Policy, tuple[str, ...], list[str]]:
    """(policy holding the constraint, the Policy fields it constrains, keys that
    are no constraint).  ``data`` must have passed ``profile.validate``."""
    values: dict = {}
    ignored: list[str] = []
    for key in keys_of(data):
        if key in NOT_CONSTRAINTS:
            ignored.append(key)
            continue
        if key == "description":
            continue
        if key == "audit":
            values["audit_classes"] = tuple(k for k, on in data["audit"].items() if on)
            continue
        if key == "caches":
            values["caches"] = tuple(sorted(data["caches"].items()))
            continue
        table, _, sub = key.partition(".")
        value = data[table][sub] if sub else data[table]
        field = _FIELD_OF[key]
        if key == "filesystem.deny_read":
            value = tuple(dict.fromkeys(expand(p, each) for p in value for each in ctx.homes()))
        elif key in ("filesystem.writable", "filesystem.empty_dirs", "protect.unprotect",
                     "sockets.scan"):
            value = tuple(dict.fromkeys(expand(p, ctx) for p in value))
        elif key in ("filesystem.workspace", "filesystem.scratch"):
            value = Access(value)
        elif key == "network.mode":
            value = NetworkMode(value)
        elif key == "network.forward":  # the grants the constraint allows, no others
            from sandbox.egress import hostports

            value = tuple(hostports.parse(entry, f"{name}: network.forward[{i}]")
                          for i, entry in enumerate(value, 1))
        elif key in ("network.allow", "network.deny"):
            from sandbox.egress import netrules

            kind = sub
            value = tuple(netrules.parse_rule(rule, f"{name}: network.{kind}[{i}]",
                                              deny=kind == "deny")
                          for i, rule in enumerate(value, 1))
        elif isinstance(value, list):
            value = tuple(value)
        values[field] = value
    policy = Policy(name=name, chain=(name,), digest=digest, **values)
    return policy, tuple(values), ignored


def resolved(policy: Policy, obs) -> Policy:
    """``policy`` with its writable and unprotected paths as real paths, before a
    meet: ``tighten`` compares paths as strings, and a link inside an allowed
    directory must not carry a write permission out of it."""
    import dataclasses

    return dataclasses.replace(policy, **{
        name: tuple(dict.fromkeys(obs.realpath(p) for p in getattr(policy, name)))
        for name in ("writable", "unprotect")})
