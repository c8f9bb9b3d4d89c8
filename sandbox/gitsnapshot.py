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
change freely.  Besides them the snapshot stamps what discovery named in
the spec: hooks directories of ``core.hooksPath``, files an ``include.path``
names, hook managers' directories, the programs the user's git config
runs (``program_files``) and every ``.git`` entry (``git_entries``).  For
each of those named paths it also stamps any symlink on the way to it
inside a writable root: git follows it, so a new one is a finding.

A stamp is (file type, device, inode, size, mtime, ctime) from ``lstat``:
replacing, rewriting, linking or renaming an entry changes at least the
inode or the ctime, and nothing short of the kernel's clock sets ctime.  A
regular file with other hard links is stamped by its content and mode
instead (``HASHED``): it may be the user's hook hard-linked to a tracked
script, which the command can rewrite through the other name; its ctime
would also change when the command merely adds or removes a link.

The git dirs to stamp come from the plan (discovery saw every directory
whose listing the plan depends on) and from the list the last audit of this
workspace left in the state directory (git dirs inside .git and skip_dirs,
whose listings the plan leaves out so that a commit or an install does not
invalidate it).  A git dir the host itself made in such a place since the
last run is in neither; the audit then judges it like one the command made,
which can only neutralise more, never less.
"""

from __future__ import annotations

import errno
import os
import stat

SENSITIVE = ("config", "config.worktree", "commondir", "hooks")
HASHED = "hashed"  # the first field of a content stamp
MAX_HASHED = 16 << 20  # a bigger file with other links keeps its inode stamp


def _content(fd: int, st) -> tuple | None:
    import hashlib

    digest = hashlib.sha256()
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        digest.update(chunk)
    return (HASHED, st.st_dev, st.st_ino, stat.S_IMODE(st.st_mode), digest.hexdigest())


def _from(st, open_file, like=None):
    """The stamp for an ``lstat`` result; ``open_file()`` opens the file to hash it."""
    hashed = like is not None and like[0] == HASHED
    if stat.S_ISREG(st.st_mode) and (hashed or st.st_nlink > 1) and st.st_size <= MAX_HASHED:
        try:
            fd = open_file()
        except OSError:
            fd = None
        if fd is not None:
            try:
                now = os.fstat(fd)
                if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                    return _content(fd, now)
            finally:
                os.close(fd)
    return (stat.S_IFMT(st.st_mode), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
            st.st_ctime_ns)


_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def stamp_at(dir_fd: int, name: str, like=None):
    """The stamp of entry ``name`` under the directory ``dir_fd`` (None: absent)."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except OSError:
        return None
    return _from(st, lambda: os.open(name, _READ, dir_fd=dir_fd), like)


def stamp(path: str, like=None):
    """The stamp of ``path`` by its name (for the pre-run snapshot: the host's
    own state, before the command ran), however long the path."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            return None
        from sandbox.scan import open_long

        try:
            fd = open_long(os.path.dirname(path))
        except OSError:
            return None
        try:
            return stamp_at(fd, os.path.basename(path), like)
        finally:
            os.close(fd)
    return _from(st, lambda: os.open(path, _READ), like)


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


def _links_on_the_way(path: str, roots, out: dict) -> None:
    """Stamp the first symlink between the root holding ``path`` and ``path``."""
    root = next((r for r in roots if path.startswith(r.rstrip("/") + "/")), None)
    if root is None:
        return
    here = root.rstrip("/")
    for part in path[len(here) + 1:].split("/")[:-1]:
        here = f"{here}/{part}"
        try:
            st = os.lstat(here)
        except OSError:
            return
        if stat.S_ISLNK(st.st_mode):
            out[here] = stamp(here)
            return
        if not stat.S_ISDIR(st.st_mode):
            return


def known_path(state: str, workspace: str) -> str:
    from sandbox.statefile import sha256_hex

    return os.path.join(state, "gitdirs", sha256_hex(workspace.encode())[:16])


def load_known(state: str, workspace: str) -> list[str]:
    from sandbox import statefile

    data = statefile.load(known_path(state, workspace))
    return [p for p in data if isinstance(p, str)] if isinstance(data, list) else []


def store_known(state: str, workspace: str, gitdirs) -> None:
    """Remember the git dirs the audit found, for the next run's snapshot.

    Not rewritten when the list is the one stored: the new file renamed over
    the old one made ext4 write it out at once (``auto_da_alloc``), about
    1 ms after every run measured here, for a list that rarely changes.
    """
    from sandbox import statefile

    path = known_path(state, workspace)
    new = sorted(gitdirs)
    if statefile.load(path) == new:
        return
    statefile.dump(path, new)


def roots_of(spec: dict) -> list[str]:
    """Every place the command could write, shortest first."""
    roots = list(spec["roots"]) + list(spec.get("git_roots", ())) + [spec.get("cache_dir") or ""]
    return sorted({os.path.normpath(r) for r in roots if r}, key=len)


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
    roots = roots_of(spec)
    for hooks in spec.get("hooks_dirs", ()):
        _hooks(hooks, stamps)
        _links_on_the_way(hooks, roots, stamps)
    programs = [p[0] for p in spec.get("program_files", ())]
    for path in (list(spec.get("git_configs", ())) + list(spec.get("hook_managers", ()))
                 + programs):
        stamps[path] = stamp(path)
        _links_on_the_way(path, roots, stamps)
    for path in spec.get("git_entries", ()):
        stamps[path] = stamp(path)
    return {"gitdirs": gitdirs, "stamps": stamps}
