"""Skip TOML parsing on the hot path: cache the validated Policy.

A coding agent starts ``sandbox run`` for every shell command; parsing and
validating TOML costs more than the rest of our startup.  The cached entry
holds the Policy as plain data plus a stamp (inode, size, mtime) of every
file it was built from.  A stamp that differs, or one too recent to trust,
means a fresh load.  The cache sits in the state directory, which the
sandboxed command cannot write, and is keyed by everything the policy
depends on besides those files (profile spec, placeholders, tool version).
"""

from __future__ import annotations

import hashlib
import marshal
import os
import sys
import time

from sandbox import __version__, profile, resources
from sandbox.observe import RACY_NS, stamp, still_valid
from sandbox.policy import Policy, from_data, to_data


def _deps(spec: str, files: list[str]) -> list[str]:
    deps = list(files)
    if "/" not in spec and not spec.endswith(".toml"):
        # a user profile created later with the same name changes the answer
        deps.append(str(profile.user_profile_dir() / f"{spec}.toml"))
        deps.append(str(resources.profiles_dir() / f"{spec}.toml"))
    # a built-in reached through extends is shadowed the same way
    builtin_dir = str(resources.profiles_dir())
    for f in files:
        if os.path.dirname(f) == builtin_dir:
            user = str(profile.user_profile_dir() / os.path.basename(f))
            if user not in deps:
                deps.append(user)
    return deps


def cache_key(spec: str, ctx: profile.Context) -> str:
    text = repr((__version__, sys.version_info[:2], spec, os.path.abspath(spec) if "/" in spec else "",
                 ctx, str(profile.user_profile_dir()), str(resources.profiles_dir()),
                 Policy.__slots__))  # a new Policy field must not read an old entry's default
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def load(spec: str, ctx: profile.Context, state: str | None) -> tuple[Policy, bool, list]:
    """Return (policy, came_from_cache, [(file, stamp)] it depends on)."""
    path = os.path.join(state, "policy", cache_key(spec, ctx)) if state else None
    if path:
        try:
            with open(path, "rb") as fh:
                entry = marshal.loads(fh.read())  # not marshal.load: statefile.load
            deps = entry["deps"]
            if still_valid(deps):
                return from_data(entry["policy"]), True, deps
        except (OSError, EOFError, ValueError, TypeError, KeyError):
            pass
    policy, files = profile.load(spec, ctx)
    now = time.time_ns()
    stamps = [(dep, stamp(dep)) for dep in _deps(spec, files)]
    if path and all(s is None or now - max(s[3:]) > RACY_NS for _, s in stamps):
        _store(path, {"deps": stamps, "policy": to_data(policy)})
    return policy, False, stamps


def _store(path: str, entry: dict) -> None:
    from sandbox import statefile

    statefile.dump(path, entry)
