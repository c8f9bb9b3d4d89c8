"""What the command sees of each secret-named file (``.env``) found in a root.

Discovery finds secret names in every root, writable or not (``sandbox.scan``).
Each one becomes one of:

- **hidden**: an empty read-only file is mounted over it (the usual case);
- **shown as it is**, read-only, when git already holds its exact content:
  masking it would gain nothing (``git show HEAD:.env`` prints it) and would
  corrupt it through git (an empty mask looks modified, so ``commit -a``
  records it empty and ``stash`` saves it empty and then fails halfway);
- **shown as git has it**, read-only, when git's index stages other content
  for it (a tracked ``.env`` changed locally): the staged version is
  mounted instead, so git inside sees the file unchanged and no commit,
  stash or checkout can record anything about it, while the real content,
  which the repository does not hold, stays hidden.

"Git holds it" is decided from the object store only (``sandbox.gitobjects``):
the bytes rebuilt from the store must hash to the blob id of the real
content, which a command that does not know the content cannot arrange.
The store must be one the command can read anyway: inside a root, or a git
directory the sandbox mounts, and not under a masked directory.

A symlink whose name or target name is secret hides the file it leads to,
wherever that is: bwrap follows symlinks on both sides of a bind, so the
mount goes on the link's resolved target, never on the link, and every path
looked at on the way is stamped for the plan cache.
"""

from __future__ import annotations

import os
import stat

from sandbox import gitconfig, gitobjects
from sandbox.command import is_within

MAX_SECRET = 1 << 20  # a bigger secret-named file is always hidden
MAX_SHOWN = 64  # staged versions written per plan; past this, files are hidden
_NOT_FILES = ("/proc", "/sys", "/dev")


def follow(path: str, obs, limit: int = 40) -> str | None:
    """The physical path ``path`` leads to, stamping every component and link on the way."""
    resolved = ""
    todo = list(reversed(path.split("/")))
    hops = 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            resolved = resolved.rpartition("/")[0]
            continue
        candidate = f"{resolved}/{part}"
        st = obs.note(candidate)
        if st is not None and stat.S_ISLNK(st[1]):
            hops += 1
            try:
                target = os.readlink(candidate)
            except OSError:
                return None
            if hops > limit:
                return None
            if target.startswith("/"):
                resolved = ""
            todo.extend(reversed(target.split("/")))
            continue
        resolved = candidate
    return resolved or "/"


def link_targets(links, obs) -> list[str]:
    """The regular files that secret-named links (or links to secret names) lead to."""
    out = []
    for link in links:
        real = follow(link, obs)
        if real is None or any(is_within(real, d) for d in _NOT_FILES):
            continue
        st = obs.note(real)
        if st is not None and stat.S_ISREG(st[1]):
            out.append(real)
    return out


class Settled:
    """hidden: files to mask; binds: (source, target) read-only binds; warnings."""

    __slots__ = ("hidden", "binds", "warnings")

    def __init__(self) -> None:
        self.hidden: list[str] = []
        self.binds: list[tuple[str, str]] = []
        self.warnings: list[str] = []


def settle(files, *, worktrees: dict[str, str], stores_ok, writable, state: str,
           obs) -> Settled:
    """Decide, for each secret-named regular file, what the command sees.

    ``worktrees`` maps a worktree's top directory to its ``.git`` entry;
    ``stores_ok(objects_dir)`` says whether the command can read that object
    store anyway; ``writable`` are the writable roots (a file shown as it is
    needs a read-only bind only there).
    """
    out = Settled()
    shown = 0
    for path in dict.fromkeys(files):
        st = obs.note(path, full=True)  # content decides: a change re-plans
        try:
            links = os.lstat(path).st_nlink
        except OSError:
            continue
        if st is None or not stat.S_ISREG(st[1]):
            continue
        decision = None
        if 0 < st[2] <= MAX_SECRET:
            decision = _git_view(path, worktrees, stores_ok, obs)
        if decision is None:
            out.hidden.append(path)
            if links > 1:
                out.warnings.append(f"{path} is hidden, but it has {links - 1} more hard link(s) "
                                    "elsewhere; its content can be read through them")
            continue
        kind, where, data = decision
        if kind == "held":
            if any(is_within(path, r) for r in writable):
                out.binds.append((path, path))
            out.warnings.append(
                f"{path} is not hidden: the git repository {where} already holds this exact "
                "content (git show would print it), so it is shown read-only; to keep it "
                "secret, change the secret, remove it from the history and add the file to "
                ".gitignore")
        elif shown < MAX_SHOWN:
            shown += 1
            copy = _store_copy(state, data, obs)
            if copy is None:
                out.hidden.append(path)
                continue
            out.binds.append((copy, path))
            out.warnings.append(
                f"{path} is shown as git's index has it, read-only (your content is not in the "
                "repository and stays hidden); outside the sandbox git sees your file as "
                "modified, so 'git commit -a' there would commit it")
        else:
            out.hidden.append(path)
    return out


def _git_view(path: str, worktrees: dict[str, str], stores_ok, obs):
    """("held", git dir, None) | ("staged", git dir, content) | None."""
    top = os.path.dirname(path)
    while top not in worktrees:
        if top == "/":
            return None
        top = os.path.dirname(top)
    found = gitconfig.locate(worktrees[top], obs.read, obs.realpath,
                             lambda p: obs.isdir(p) and not os.path.islink(p))
    if found is None:
        return None
    gitdir, commondir, _pointed = found
    objects = obs.realpath(os.path.join(commondir, "objects"))
    if not stores_ok(objects):
        return None
    content = gitobjects.read_regular(path, MAX_SECRET)
    if not content:
        return None
    with gitobjects.Store(objects, note=obs.note) as store:
        if store.holds_blob(content):
            return "held", commondir, None
        # not a dependency of the plan unless it names the file: git rewrites
        # the index all the time, and a stale answer only ever shows content
        # the store held (an entry added later stages the empty mask or, from
        # the host, puts the real content in the store, whose paths are stamped)
        rel = os.path.relpath(path, top).encode("utf-8", "surrogateescape")
        oid = gitobjects.staged_blob(os.path.join(gitdir, "index"), rel)
        if oid is None:
            return None
        obs.note(os.path.join(gitdir, "index"), full=True)
        if oid in gitobjects.blob_ids(content):
            return None  # staged but not in the store: nothing to show but the mask
        blob = store.read(oid)
    if blob is None or blob[0] != b"blob" or len(blob[1]) > MAX_SECRET:
        return None
    return "staged", commondir, blob[1]


def _store_copy(state: str, data: bytes, obs) -> str | None:
    """A read-only copy of ``data`` in the state directory, named by its content."""
    name = gitobjects.blob_ids(data)[1].hex()
    directory = os.path.join(state, "staged")
    path = os.path.join(directory, name)
    if gitobjects.read_regular(path, MAX_SECRET) != data:
        try:
            from sandbox.statefile import write_readonly

            write_readonly(path, data)
        except OSError:
            return None
    obs.note(path, full=True)  # removed from the cache: the plan must write it again
    return path
