"""The host drifting between planning and mounting: paths gone, sockets new.

A plan names host paths to mount over (sockets, FIFOs, secrets) or onto
themselves (protected paths, writable roots).  Other programs on the host
keep working meanwhile: a socket can be closed and unlinked between the
moment the plan was made (or checked) and the moment bwrap mounts over it.
bwrap 0.8 then has to create the missing mount point on the read-only root,
which it cannot, and gives up ("Can't create file at ...").  Its ``-try``
variants only tolerate a missing *source*, and every other operation needs
its destination too.

A path that is gone is no longer reachable: there is nothing to hide.  So
the mounts on it are dropped, just before bwrap starts and again (the run is
retried, a bounded number of times) if bwrap failed to set up because one
vanished in the few milliseconds after that.  A protected path whose
read-only mount is dropped is no longer "known protected" to the
persistence audit, which then inspects whatever the command puts there.

A socket bound after a plan was cached does not make the plan stale: the
cached run adds a mask for it at the end of the mounts (``add_masks``; found
by ``sandbox.hostsockets.appeared``), which costs a few ``lstat`` calls
instead of a new plan.  A path that *appears* after that check (in the
milliseconds before bwrap mounts, or while the command runs) is not masked:
see README, "Does not protect against".
"""

from __future__ import annotations

import os
import stat

# bwrap options sandbox.linux.bwrap emits, with how many arguments each takes
_ARITY = {
    "--unshare-user": 0, "--unshare-pid": 0, "--unshare-ipc": 0, "--unshare-uts": 0,
    "--unshare-cgroup-try": 0, "--unshare-net": 0, "--disable-userns": 0,
    "--die-with-parent": 0, "--new-session": 0, "--cap-drop": 1, "--hostname": 1,
    "--ro-bind": 2, "--bind": 2, "--ro-bind-try": 2, "--bind-try": 2, "--dev": 1,
    "--proc": 1, "--tmpfs": 1, "--remount-ro": 1, "--chdir": 1, "--seccomp": 1,
    "--json-status-fd": 1,
}
_NEEDS_PATHS = ("--ro-bind", "--bind", "--tmpfs")  # not the -try ones, nor /dev, /proc


def _kind(path: str) -> str | None:
    """"dir", "other" or None (gone, or out of the sandbox's reach), following
    symlinks as bwrap does."""
    try:
        kind = "dir" if stat.S_ISDIR(os.stat(path).st_mode) else "other"
    except (OSError, ValueError):
        return None
    return kind if _searchable_parents(path) else None


_GROUPS: set[int] | None = None


def _searchable_parents(path: str) -> bool:
    """Can a process with our uid and groups but no capabilities reach ``path``?

    A mount point below a directory it cannot search (another user's 0700
    state dir holding that user's server socket, seen by root) is out of the
    sandbox's reach: bwrap, which sets up mounts without power over host
    files, cannot even look there ("Can't create file ... Permission
    denied"), and the command could not either, so there is nothing to hide.
    Only the mode bits are read; a directory with an ACL counts as
    searchable (the ACL may allow more), so the mount stays.
    """
    global _GROUPS
    if _GROUPS is None:
        _GROUPS = {os.getgid(), *os.getgroups()}
    parent = os.path.dirname(path)
    while parent and parent != "/":
        ok = _SEARCHABLE.get(parent)
        if ok is None:
            ok = _SEARCHABLE[parent] = _searchable(parent)
        if not ok:
            return False
        parent = os.path.dirname(parent)
    return True


_SEARCHABLE: dict[str, bool] = {}  # for one prune(): most mounts share their parents


def _searchable(directory: str) -> bool:
    try:
        st = os.stat(directory)
    except OSError:
        return False
    if st.st_uid == os.getuid():
        # our own directory: the command (same uid) can chmod it searchable
        # again where it is writable (a workspace), so what is below it is
        # within its reach; root's discovery looked inside it
        return True
    bit = stat.S_IXGRP if st.st_gid in _GROUPS else stat.S_IXOTH
    if st.st_mode & bit:
        return True
    try:
        return "system.posix_acl_access" in os.listxattr(directory)
    except OSError:
        return False


def prune(argv, kind=_kind) -> tuple[list[str], list[str]]:
    """(argv without the mounts on vanished paths, the destinations dropped).

    A mask (a file bound over another path) whose destination became a
    directory counts as vanished too: bwrap cannot put a file over one, and
    what was there is gone.  Only bwrap's own options (before ``--``) are
    looked at.  An option this module does not know leaves the argv
    unchanged: better a failed start than a mount dropped by a misreading.
    ``kind`` is ``_kind`` (tests pass their own).
    """
    argv = list(argv)
    _SEARCHABLE.clear()
    try:
        end = argv.index("--")
    except ValueError:
        end = len(argv)
    out = argv[:1]
    dropped: list[str] = []
    i = 1
    while i < end:
        opt = argv[i]
        arity = _ARITY.get(opt)
        if arity is None or i + arity >= end:
            return list(argv), []
        args = argv[i + 1:i + 1 + arity]
        gone = False
        if opt in _NEEDS_PATHS:
            kinds = {kind(a) for a in dict.fromkeys(args)}  # one stat for a bind onto itself
            gone = None in kinds or len(kinds) > 1
        elif opt == "--remount-ro" and args[0] in dropped:
            gone = True  # the tmpfs it would remount is not there
        if gone:
            if args[-1] not in dropped:
                dropped.append(args[-1])
        else:
            out += [opt, *args]
        i += 1 + arity
    return out + argv[end:], dropped


def add_masks(argv, empty_file: str, paths) -> list[str]:
    """``argv`` with ``empty_file`` mounted read-only over each of ``paths``.

    They go after every other mount (just before ``--chdir``): over a file
    nothing later can re-expose it, and a mount point outside the tmpfs
    directories does not care that those were already made read-only.
    """
    argv = list(argv)
    at = argv.index("--chdir")
    extra: list[str] = []
    for path in paths:
        extra += ["--ro-bind", empty_file, path]
    return argv[:at] + extra + argv[at:]


def fd_indexes(argv, status_index, seccomp):
    """Where the descriptor numbers go after mounts were added or dropped.

    ``--seccomp`` and ``--json-status-fd`` come after every mount option, and
    the first occurrence is bwrap's own (the command comes after ``--``).
    """
    if status_index is not None:
        status_index = argv.index("--json-status-fd") + 1
    if seccomp is not None:
        seccomp = (argv.index("--seccomp") + 1, seccomp[1])
    return status_index, seccomp
