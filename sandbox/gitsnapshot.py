"""What git would run from each git dir, as it stood just before the command.

Taken in ``sandbox.execute`` right before the command starts (on the cached
fast path too), and kept in the pending-audit marker.  After the run the
audit neutralises only what is new or changed compared with it, so what the
host had before the run (the user's own hooks, their ``filter.lfs.process``)
is never taken for something the command made.

A *git dir* is any directory ``sandbox.scan`` reports as GITDIR (an entry
``HEAD`` that is not a directory, or ``objects`` and ``refs``): git's own
necessary condition, so no pointer file (``.git``, ``commondir``) is read.
Per git dir the *sensitive* entries are the ones through which git runs a
program or reads config: ``config``, ``config.worktree``, ``commondir``,
``hooks`` and every entry in ``hooks/``.  Everything else git writes there
(objects, refs, logs, index, HEAD, packed-refs, locks, rebase state...) may
change freely.

A stamp is (file type, device, inode, size, mtime, ctime) from ``lstat``:
replacing, rewriting, linking or renaming an entry changes at least the
inode or the ctime, and nothing short of the kernel's clock sets ctime.

The git dirs to stamp come from the plan (discovery saw every directory
whose listing the plan depends on) and from the list the last audit of this
workspace left in the state directory (git dirs inside .git and skip_dirs,
whose listings the plan leaves out so that a commit or an install does not
invalidate it).  A git dir the host itself made in such a place since the
last run is in neither; the audit then judges it like one the command made,
which can only neutralise more, never less.
"""

from __future__ import annotations

import os
import stat

SENSITIVE = ("config", "config.worktree", "commondir", "hooks")


def stamp(path: str):
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (stat.S_IFMT(st.st_mode), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
            st.st_ctime_ns)


def _hooks(path: str, out: dict) -> None:
    s = out[path] = stamp(path)
    if s is None or s[0] != stat.S_IFDIR:
        return
    try:
        names = os.listdir(path)
    except OSError:
        return  # hidden: the audit opens it up and judges every entry as new
    for name in names:
        entry = f"{path}/{name}"
        out[entry] = stamp(entry)


def known_path(state: str, workspace: str) -> str:
    from sandbox.statefile import sha256_hex

    return os.path.join(state, "gitdirs", sha256_hex(workspace.encode())[:16])


def load_known(state: str, workspace: str) -> list[str]:
    from sandbox import statefile

    data = statefile.load(known_path(state, workspace))
    return [p for p in data if isinstance(p, str)] if isinstance(data, list) else []


def store_known(state: str, workspace: str, gitdirs) -> None:
    from sandbox import statefile

    statefile.dump(known_path(state, workspace), sorted(gitdirs))


def take(spec: dict) -> dict:
    """The pre-run snapshot for an audit spec (see ``sandbox.app.make_audit_spec``)."""
    gitdirs = []
    stamps: dict = {}
    for d in dict.fromkeys(list(spec.get("git_dirs", ())) +
                           load_known(spec["state"], spec["workspace"])):
        s = stamp(d)
        if s is None or s[0] != stat.S_IFDIR:
            continue
        gitdirs.append(d)
        for name in SENSITIVE[:3]:
            stamps[f"{d}/{name}"] = stamp(f"{d}/{name}")
        _hooks(f"{d}/hooks", stamps)
    for hooks in spec.get("hooks_dirs", ()):
        _hooks(hooks, stamps)
    for path in list(spec.get("git_configs", ())) + list(spec.get("hook_managers", ())):
        stamps[path] = stamp(path)
    return {"gitdirs": gitdirs, "stamps": stamps}
