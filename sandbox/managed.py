"""The managed policy: an administrator's file every run is intersected with.

``/etc/sandbox/managed.toml`` is a profile-format file read as a constraint
(``sandbox.constraint``): each key it sets is met with the run's policy by
``sandbox.tighten``, so it can only tighten (more hidden paths, fewer hosts,
lower limits), whatever profile, project profile or option the user picks.
Its ``filesystem.writable`` and ``protect.unprotect`` also bound the
``--allow-write`` and ``--unprotect`` options (an empty list forbids them).

Who decides which file applies: the path is fixed.  An environment variable
or a user's config that *replaced* it would let any user drop it, so the
only variable, ``SANDBOX_MANAGED_EXTRA``, names a file applied *in addition*
(the tests use it; it can only tighten further, so it is no way around the
system file).  Both must be root's: owned by root, not writable by group
or others (group root excepted), in directories that are the same, else
the run fails closed, as it does for a file that does not validate or sets
a key that cannot tighten (``extends``, ``allow_read``, ``env.set``,
``network.hosts``, ``syscalls.set``, ``network.credentials``, ``[ci]``).  A
missing system file means no managed policy.
"""

from __future__ import annotations

import os
import stat

from sandbox import constraint, profile, trust
from sandbox.errors import ProfileError, SetupError, UsageError
from sandbox.policy import Access, Policy
from sandbox.tighten import tighten, within

SYSTEM_PATH = "/etc/sandbox/managed.toml"
EXTRA_ENV = "SANDBOX_MANAGED_EXTRA"
MAX_BYTES = 1 << 20


def paths(environ: dict[str, str]) -> list[tuple[str, bool]]:
    """(path, must exist) of every managed file that applies."""
    out = [(SYSTEM_PATH, False)]
    extra = environ.get(EXTRA_ENV)
    if extra:
        out.append((extra, True))
    return out


def _root_only(st: os.stat_result) -> bool:
    return st.st_uid == 0 and not st.st_mode & 0o002 and not (st.st_mode & 0o020 and st.st_gid != 0)


def _refuse(path: str, why: str) -> SetupError:
    return SetupError(f"managed policy {path} {why}; the sandbox does not run without it",
                      hint=f"as root: chown root:root {path} && chmod 644 {path} (and its "
                           "directories), or remove it")


def _check_dirs(path: str) -> None:
    """Every directory on the way (as named and as resolved) is root's alone."""
    for name in (path, os.path.realpath(path)):
        current = os.path.dirname(name)
        while True:
            try:
                st = os.stat(current)
            except OSError as exc:
                raise _refuse(path, f"cannot be checked ({current}: {exc.strerror})") from None
            if not _root_only(st):
                raise _refuse(path, f"lies in {current}, which a user other than root can change")
            parent = os.path.dirname(current)
            if parent == current:
                break
            current = parent


def read(path: str, obs) -> bytes | None:
    """The file's bytes after the ownership checks; None if it does not exist."""
    if not obs.lexists(path):
        return None
    real = obs.realpath(path)
    obs.note(real, full=True)  # a chown or chmod changes its ctime: plans follow
    _check_dirs(path)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise _refuse(path, f"cannot be read ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, "is not a regular file")
        if not _root_only(st):
            raise _refuse(path, "is not owned by root, or is writable by group or others")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise _refuse(path, f"is larger than {MAX_BYTES} bytes")
    return data


def load(path: str, data: bytes, ctx: profile.Context) -> tuple[Policy, tuple[str, ...]]:
    """The managed file as a constraint: (policy, the fields it constrains)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProfileError(path, "not valid UTF-8") from None
    src = profile.Source("managed", path, text)
    table = profile.parse(src)  # strict: unknown keys, wrong types... name the key
    asked, fields, refused = constraint.build(table, ctx, "managed",
                                              digest=trust.content_sha(data))
    if refused:
        table_name, _, key = refused[0].partition(".")
        raise ProfileError(path, "a managed policy can only tighten, and this key cannot",
                           key=refused[0], line=profile.line_of(text, table_name if key else "",
                                                                key or table_name),
                           hint="remove it; managed keys restrict what every profile allows")
    return asked, fields


def apply(policy: Policy, ctx: profile.Context, environ: dict[str, str], obs,
          allow_write=(), unprotect=()) -> Policy:
    """``policy`` met with every managed file; the options it forbids are refused."""
    for path, required in paths(environ):
        if not os.path.isabs(path):
            raise SetupError(f"{EXTRA_ENV}={path} is not an absolute path",
                             hint="name the managed file by its full path")
        data = read(path, obs)
        if data is None:
            if required:
                raise SetupError(f"managed policy {path} ({EXTRA_ENV}) does not exist; the "
                                 "sandbox does not run without it",
                                 hint=f"create it, or unset {EXTRA_ENV}")
            continue
        asked, fields = load(path, data, ctx)
        asked = constraint.resolved(asked, obs)
        _check_options(path, asked, fields, allow_write, unprotect)
        policy = tighten(constraint.resolved(policy, obs), asked, fields,
                         label=f"managed: {path}")
        if "workspace" in fields and asked.workspace is Access.READ:
            policy = _read_only_workspace(path, policy, ctx.workspace, allow_write)
    return policy


def _read_only_workspace(path: str, policy: Policy, workspace: str, allow_write) -> Policy:
    """``workspace = "read"`` means the workspace: a writable path that is, holds
    or lies in it (a profile's ``writable``, ``--allow-write .``) would undo it."""
    import dataclasses

    def overlaps(p: str) -> bool:
        return within(p, workspace) or within(workspace, p)

    for value in allow_write:
        if overlaps(os.path.realpath(value)):
            raise UsageError(f"--allow-write {value} would make (part of) the workspace "
                             f"writable, and the managed policy {path} keeps it read-only "
                             "(filesystem.workspace)",
                             hint="the administrator allows no writes to the workspace; write "
                                  "elsewhere")
    kept = tuple(p for p in policy.writable if not overlaps(p))
    return dataclasses.replace(policy, writable=kept) if kept != policy.writable else policy


def _check_options(path: str, asked: Policy, fields, allow_write, unprotect) -> None:
    for option, field, values in (("--allow-write", "writable", allow_write),
                                  ("--unprotect", "unprotect", unprotect)):
        if field not in fields:
            continue
        allowed = getattr(asked, field)
        for value in values:
            if not any(within(os.path.realpath(value), a) for a in allowed):
                key = "filesystem.writable" if field == "writable" else "protect.unprotect"
                raise UsageError(
                    f"{option} {value} is not allowed by the managed policy {path} ({key})",
                    hint=("the administrator allows only: " + ", ".join(allowed)) if allowed
                    else f"the administrator forbids {option}")
