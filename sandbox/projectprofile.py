"""The project profile: ``.sandbox.toml`` in the project, untrusted until pinned.

When ``run`` or ``explain`` gets no ``--profile``, the profile comes from the
project: the nearest ``.sandbox.toml`` in the workspace's root, else in the
root of the git work tree the workspace lies in.  The file is written by
whoever wrote the repository, so it is input, not trust:

* until the user runs ``sandbox trust`` (``sandbox.trust`` records its real
  path and content hash), it is only a constraint on the user's default
  profile (``sandbox.constraint`` + ``sandbox.tighten``): whatever it asks
  that would loosen the default is ignored, with a one-line notice per run;
* once trusted, it is used like ``--profile FILE``; a changed file (or the
  same file elsewhere) is untrusted again.

A trusted file may ``extends`` a profile by name only (built-in or user
profile): a file named by path would not be covered by the trusted hash.
Either way the file is one of the policy's sources, so it is read-only
inside a run (``sandbox.discover``), and the name ``.sandbox.toml`` is a
protected name in ``default`` (a new one is quarantined by the audit).
"""

from __future__ import annotations

import dataclasses
import os
import stat

from sandbox import constraint, policycache, profile, trust
from sandbox.errors import ProfileError
from sandbox.policy import Policy
from sandbox.tighten import tighten

NAME = ".sandbox.toml"
BASE = "default"  # what an untrusted project profile constrains
MAX_BYTES = 1 << 20


def candidates(workspace: str, obs) -> list[str]:
    """Where a project profile may be, nearest first: the workspace's root, then
    the root of the git work tree holding it (every step is stamped)."""
    out = [os.path.join(workspace, NAME)]
    current = workspace
    while True:
        if obs.lexists(os.path.join(current, ".git")):
            if current != workspace:
                out.append(os.path.join(current, NAME))
            break
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return out


def find(workspace: str, obs) -> str | None:
    for path in candidates(workspace, obs):
        if obs.lexists(path):
            return path
    return None


def read(path: str, obs) -> bytes:
    """The file's bytes: a regular file, not a link, read once (what is hashed
    is what is parsed), and stamped as it was read."""
    obs.note(path, full=True)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        hint = ("replace the link by the file itself, or name the profile with --profile"
                if os.path.islink(path) else None)
        raise ProfileError(path, f"cannot read the project profile: {exc.strerror}",
                           hint=hint) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ProfileError(path, "the project profile is not a regular file",
                               hint="remove it, or pass --profile to use another profile")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise ProfileError(path, f"the project profile is larger than {MAX_BYTES} bytes")
    seen = obs.note(path, full=True)
    if seen is None or seen[0] != st.st_ino or seen[2:] != (st.st_size, st.st_mtime_ns,
                                                            st.st_ctime_ns):
        raise ProfileError(path, "the project profile changed while it was read",
                           hint="run the command again")
    return data


def source(path: str, data: bytes) -> profile.Source:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProfileError(path, "not valid UTF-8") from None
    return profile.Source(NAME, path, text)


def trusted_chain(src: profile.Source, data: dict) -> list[profile.Source]:
    """The chain of a trusted project profile: what it extends (by name), then itself."""
    parent = data.get("extends", profile.BASE_PROFILE)
    if parent == profile.NO_BASE:
        return [src]
    if "/" in parent or parent.endswith(".toml"):
        raise ProfileError(src.path, f"a project profile may extend a profile by name only, "
                                     f"not the file {parent!r}", key="extends",
                           line=profile.line_of(src.text, "", "extends"),
                           hint="'sandbox trust' covers this file only; put the profile you "
                                "extend in ~/.config/sandbox/profiles/ and name it")
    chain = profile.read_chain(parent)
    if any(s.path == src.path for s in chain):
        raise ProfileError(src.path, "extends forms a cycle", key="extends")
    return chain + [src]


def load(spec: str | None, ctx: profile.Context, state: str,
         obs) -> tuple[Policy, bool, list, tuple[str, ...]]:
    """The run's profile: ``spec`` if given, else the project's, else ``default``.

    Returns (policy, came from the policy cache, its (file, stamp) deps,
    notices for a ``sandbox: warning:`` line on every run).
    """
    if spec is not None:
        return (*policycache.load(spec, ctx, state), ())
    base, cached, deps = policycache.load(BASE, ctx, state)
    path = find(ctx.workspace, obs)
    if path is None:
        return base, cached, deps, ()
    # the workspace is a real path, and read() refuses a link: no realpath
    data = read(path, obs)
    sha = trust.content_sha(data)
    src = source(path, data)
    table = profile.parse(src)
    if trust.trusted_sha(state, path, obs) == sha:
        chain = trusted_chain(src, table)
        for each in chain[:-1]:
            obs.note(each.path, full=True)
        for each in chain[:-1]:  # a user profile made later may shadow a name
            obs.note(str(profile.user_profile_dir() / os.path.basename(each.path)), full=True)
        return profile.build_policy(chain, ctx), False, deps, ()
    policy, notice = untrusted(constraint.resolved(base, obs), src, table, sha, ctx, obs)
    return policy, cached, deps, (notice,)


def untrusted(base: Policy, src: profile.Source, table: dict, sha: str,
              ctx: profile.Context, obs) -> tuple[Policy, str]:
    """``base`` met with what the file asks (only what tightens applies), and the notice."""
    asked, fields, _ = constraint.build(table, ctx, NAME, digest=sha)
    asked = constraint.resolved(asked, obs)
    label = f"{NAME} (untrusted: tightens only)"
    policy = tighten(base, asked, fields, label=label)
    # its own file is read-only inside, like any profile's
    policy = dataclasses.replace(policy, sources=base.sources + (src.path,))
    applied = {t.key for t in policy.tightenings if t.source == label}
    ignored = [k for k in constraint.keys_of(table) if k != "description" and k not in applied]
    words = f"{src.path} is not trusted: only what makes the sandbox stricter applies"
    if ignored:
        words += f" (ignored: {', '.join(ignored)})"
    return policy, words + "; run 'sandbox trust' to use it as it is"
