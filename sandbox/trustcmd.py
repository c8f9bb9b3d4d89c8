"""What ``sandbox trust [PATH] [--list | --revoke]`` does, as lines to print.

``PATH`` is a project profile file, or a directory whose project profile is
found the way ``run`` finds it (that directory as the workspace); default:
the current directory.  Trusting validates the whole profile first (a file
that would fail a run is not pinned) and lists what it weakens, since that
is what the user is agreeing to.
"""

from __future__ import annotations

import os

from sandbox import discover, profile, projectprofile, trust
from sandbox.errors import SandboxError, UsageError
from sandbox.observe import Observer


def _state(environ: dict[str, str]) -> str:
    from sandbox.app import home_dir

    state = discover.state_dir(environ, home_dir(environ))
    discover.ensure_state_dir(state)
    return state


def locate(arg: str | None, environ: dict[str, str], must_exist: bool = True) -> str:
    """The project profile ``arg`` names (by its real directory, the file unresolved)."""
    base = discover.logical_cwd(environ)
    target = os.path.normpath(os.path.join(base, arg)) if arg else base
    if os.path.isdir(target) and not os.path.islink(target):
        found = projectprofile.find(os.path.realpath(target), Observer())
        if found is None:
            raise UsageError(f"no {projectprofile.NAME} in {target} or the root of the git work "
                             "tree around it",
                             hint=f"write one, or name the file: sandbox trust PATH/"
                                  f"{projectprofile.NAME}")
        return found
    if os.path.basename(target) != projectprofile.NAME:
        raise UsageError(f"{target} is not a project profile (only files named "
                         f"{projectprofile.NAME} are picked up)",
                         hint="name the file or the directory holding it")
    path = os.path.join(os.path.realpath(os.path.dirname(target)), projectprofile.NAME)
    if must_exist and not os.path.lexists(path):
        raise UsageError(f"{path} does not exist")
    return path


def grant(arg: str | None, environ: dict[str, str]) -> list[str]:
    from sandbox.app import home_dir

    state = _state(environ)
    path = locate(arg, environ)
    obs = Observer()
    data = projectprofile.read(path, obs)
    sha = trust.content_sha(data)
    src = projectprofile.source(path, data)
    chain = projectprofile.trusted_chain(src, profile.parse(src))
    home = home_dir(environ)
    ctx = profile.Context(workspace=os.path.dirname(path), home=home,
                          tmp=os.path.normpath(environ.get("TMPDIR") or "/tmp"),
                          runtime=environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}")
    policy = profile.build_policy(chain, ctx)  # refuses what a run would refuse
    if trust.trusted_sha(state, path) == sha:
        return [f"already trusted: {path} (sha256 {sha[:16]})"]
    try:
        trust.grant(state, path, sha)
    except OSError as exc:
        raise SandboxError(f"cannot record the trust in {trust.store_dir(state)}: "
                           f"{exc.strerror or exc}") from None
    lines = [f"trusted {path} (sha256 {sha[:16]}); runs without --profile there use it "
             "until it changes"]
    lines += [f"  it weakens: {w.source}: {w.key}: {w.detail}" for w in policy.weakenings]
    return lines


def revoke(arg: str | None, environ: dict[str, str]) -> list[str]:
    state = _state(environ)
    path = locate(arg, environ, must_exist=False)
    if trust.revoke(state, path):
        return [f"no longer trusted: {path}"]
    return [f"was not trusted: {path}"]


def listing(environ: dict[str, str]) -> list[str]:
    state = _state(environ)
    lines = []
    for record in trust.records(state):
        path = record["path"]
        try:
            data = projectprofile.read(path, Observer())
            status = "trusted" if trust.content_sha(data) == record["sha256"] else "changed"
        except SandboxError:
            status = "missing" if not os.path.lexists(path) else "unreadable"
        lines.append(f"{status:<10} {record['sha256'][:16]}  {record.get('time', '')}  {path}")
    return lines or [f"no trusted project profiles (records live in {trust.store_dir(state)})"]
