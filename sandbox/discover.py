"""Look at the host once per run and describe it as a ``Layout``.

This is the only place that probes the filesystem for the backend: it
resolves the workspace, refuses dangerous ones, expands secret patterns,
finds git repositories and protected paths (``sandbox.scan``), host
sockets (``sandbox.hostsockets`` and the scan) and FIFOs.  The backend then
works from the Layout alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from sandbox import caches, gitconfig, hostsockets, scan, secretfiles, selfguard
from sandbox.observe import Observer
from sandbox.errors import SetupError, UsageError
from sandbox.command import is_within
from sandbox.layout import SCRATCH_DIRS, Layout
from sandbox.policy import Access, NetworkMode, Policy

def refused_paths() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(exact, tree) paths never allowed as workspace or writable (bwrap/refused-paths.txt)."""
    from sandbox import resources

    exact: list[str] = []
    tree: list[str] = []
    for line in (resources.bwrap_dir() / "refused-paths.txt").read_text().splitlines():
        kind, _, path = line.partition(" ")
        if kind == "exact":
            exact.append(path.strip())
        elif kind == "tree":
            tree.append(path.strip())
    return tuple(exact), tuple(tree)



@dataclass(frozen=True, slots=True)
class Workspace:
    real: str
    logical: str
    cwd_real: str
    cwd_logical: str


def logical_cwd(environ: dict[str, str]) -> str:
    """The current directory as the user sees it ($PWD when it is accurate)."""
    real = os.getcwd()
    pwd = environ.get("PWD")
    if pwd and os.path.isabs(pwd):
        try:
            if os.path.samefile(pwd, real):
                return os.path.normpath(pwd)
        except OSError:
            pass
    return real


def state_dir(environ: dict[str, str], home: str) -> str:
    base = environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    return os.path.join(os.path.realpath(base), "sandbox")


def ensure_state_dir(path: str) -> None:
    """Create the state directory; refuse one another user could tamper with."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.stat(path)
    except OSError as exc:
        raise SetupError(f"cannot create the state directory {path}: {exc.strerror}",
                         hint="set XDG_CACHE_HOME to a writable directory",
                         code="state_dir_invalid") from None
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise SetupError(f"state directory {path} is not private to this user",
                         hint=f"chmod 700 {path} and make sure you own it",
                         code="state_dir_invalid")


def has_magic(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def glob_last(pattern: str, obs: Observer) -> list[str]:
    """Expand a wildcard in the last path component (the only place profiles allow one)."""
    parent, _, name = pattern.rpartition("/")
    parent = parent or "/"
    return [f"{parent.rstrip('/')}/{entry}" for entry in obs.glob(parent, name)]


def check_root(path: str, what: str, home: str, state: str, deny: tuple[str, ...],
               obs: Observer) -> None:
    """Refuse a workspace or writable path that would give away the host."""
    real = obs.realpath(path)
    if real == "/":
        raise UsageError(f"{what} {path} is the whole system",
                         hint="use a project directory, e.g. cd ~/src/project",
                         code="workspace_invalid")
    home_real = obs.realpath(home)
    if is_within(home_real, real):
        raise UsageError(f"{what} {path} is your home directory or one of its parents",
                         hint="use a project directory inside it", code="workspace_invalid")
    exact, trees = refused_paths()
    if real in exact or any(is_within(real, t) for t in trees):
        raise UsageError(f"{what} {path} is a system directory",
                         hint="use a project directory, e.g. cd ~/src/project",
                         code="workspace_invalid")
    if is_within(real, state) or is_within(state, real):
        raise UsageError(f"{what} {path} overlaps the sandbox state directory {state}",
                         hint="the sandbox keeps its caches there; pick another directory",
                         code="workspace_invalid")
    for secret in deny:
        if has_magic(secret):
            if any(is_within(real, m) for m in glob_last(secret, obs)):
                raise UsageError(f"{what} {path} is inside the secret path {secret}",
                                 code="workspace_invalid")
        elif is_within(real, obs.realpath(secret)) and obs.lexists(secret):
            raise UsageError(f"{what} {path} is inside the secret path {secret}",
                             hint="secrets stay hidden; work on a copy elsewhere",
                             code="workspace_invalid")


def workspace_path(arg: str | None, environ: dict[str, str]) -> str:
    """The workspace as the user names it (``--workspace``, else the current directory)."""
    cwd = logical_cwd(environ)
    logical = os.path.normpath(os.path.join(cwd, arg)) if arg else cwd
    if not os.path.isdir(logical):
        raise UsageError(f"workspace {logical} is not a directory",
                         hint="pass an existing directory to --workspace", code="workspace_invalid")
    return logical


def resolve_workspace(arg: str | None, environ: dict[str, str], home: str, state: str,
                      policy: Policy, obs: Observer) -> Workspace:
    cwd_log = logical_cwd(environ)
    cwd_real = obs.realpath(cwd_log)
    logical = workspace_path(arg, environ)
    obs.isdir(logical)  # stamped: the plan depends on it
    real = obs.realpath(logical)
    check_root(logical, "workspace", home, state, policy.deny_read, obs)
    if not is_within(cwd_real, real):  # started elsewhere: begin in the workspace
        cwd_log, cwd_real = logical, real
    return Workspace(real, logical, cwd_real, cwd_log)


def _inside_cwd(ws: Workspace, hidden: tuple[str, ...]) -> str:
    """Start in the path the user sees, unless that path is hidden inside."""
    if ws.cwd_logical != ws.cwd_real and any(is_within(ws.cwd_logical, d) for d in hidden):
        return ws.cwd_real
    return ws.cwd_logical


def expand_secrets(patterns: tuple[str, ...], obs: Observer) -> tuple[list[str], list[str]]:
    dirs: list[str] = []
    files: list[str] = []
    for pattern in patterns:
        for path in (glob_last(pattern, obs) if has_magic(pattern) else [pattern]):
            real = obs.realpath(path)
            if obs.note(real) is None:
                continue
            target = dirs if os.path.isdir(real) else files
            if real not in target:
                target.append(real)
    return dirs, files


@dataclass(slots=True)
class _Plan:
    writable: list[str]
    keep: list[str]
    read_only: list[str]
    masked_files: list[str]
    unprotected: list[str]
    warnings: list[str]


def _points_back(dotgit: str, gitdir: str, commondir: str, obs: Observer) -> bool:
    """Does a git dir outside the writable roots really belong to this ``.git`` file?

    A ``.git`` file inside the workspace may have been written by an earlier
    sandboxed command, and it names the directory we would make writable:
    ``gitdir: /home/me`` must not hand out the home directory.  So a target
    outside the writable roots is trusted only if it points back, in files
    the command could not have written: a worktree's ``<gitdir>/gitdir``
    names this ``.git`` file and ``<gitdir>`` sits in ``<commondir>/worktrees``;
    a submodule's ``<gitdir>/config`` has ``core.worktree`` = this checkout.
    """
    me = obs.realpath(dotgit)
    back = obs.read(os.path.join(gitdir, "gitdir"), 4096)
    if back is not None:
        target = obs.realpath(os.path.join(gitdir, back.strip()))
        return target == me and os.path.dirname(gitdir) == os.path.join(commondir, "worktrees")
    config = obs.read(os.path.join(gitdir, "config"))
    if config is None or commondir != gitdir:
        return False
    for section, _sub, key, value in gitconfig.entries(config):
        if section == "core" and key == "worktree":
            return obs.realpath(os.path.join(gitdir, value)) == obs.realpath(os.path.dirname(dotgit))
    return False


def _git_paths(dotgit: str, plan: _Plan, protect: bool, obs: Observer,
               roots: list[str], trusted: bool = False, guard=None) -> list[str]:
    """Which git directories outside the writable roots this ``.git`` entry makes writable.

    This is about *grants*, so it stays strict: it reads the pointer files
    (``.git`` file, ``commondir``) only to decide whether a directory
    outside the writable roots may be made writable.  What is *protected*
    does not depend on them (see ``_protect_git_dirs``).
    ``trusted``: the ``.git`` entry lies outside every writable root (found
    above the workspace), so no sandboxed command can have written it.
    """
    found = gitconfig.locate(dotgit, obs.read, obs.realpath,
                             lambda p: obs.isdir(p) and not os.path.islink(p))
    if found is None:
        return []
    gitdir, commondir, pointed = found
    if not pointed:
        plan.keep.append(dotgit)
    elif protect:
        # the .git file says where the repository is: rewriting it would point
        # the user's git at another directory (integrity, not code: wherever
        # it points, that git dir is audited or lies outside the roots)
        plan.read_only.append(dotgit)
    outside = [d for d in dict.fromkeys((gitdir, commondir))
               if not any(is_within(d, r) for r in roots)]
    # Everything that vouches for a directory outside the writable roots must
    # itself lie outside them: a git dir inside the workspace (writable by an
    # earlier run) can claim any "commondir", and files it holds prove nothing.
    if outside and not trusted and (
            gitdir not in outside or not _points_back(dotgit, gitdir, commondir, obs)):
        plan.warnings.append(f"ignored {dotgit}: it points to {commondir if gitdir not in outside else gitdir}, "
                             "outside the writable roots, which does not point back to it")
        return []
    for d in outside:
        try:  # never a system directory, the home directory, the state dir, a secret
            if guard is not None:
                guard(d)
        except UsageError as err:
            plan.warnings.append(f"ignored {dotgit}: its git directory {d} cannot be made "
                                 f"writable ({err.message})")
            return []
    granted = [d for d in outside if obs.isdir(d)]
    plan.writable.extend(granted)
    return granted


def _in_skip_dir(path: str, root: str, skip_dirs: tuple[str, ...]) -> bool:
    rest = path[len(root.rstrip("/")) + 1:].split("/")
    return any(part in skip_dirs for part in rest)


@dataclass(slots=True)
class _Git:
    """Everything discovery hands the persistence audit about git."""

    dirs: list[str]  # every git dir (scan.GITDIR) in the writable roots
    roots: list[str]  # git dirs outside the workspace made writable (walked for git dirs)
    hooks_dirs: list[str]
    hooks_relative: list[str]  # relative core.hooksPath of the user's own configs
    managers: list[str]  # hook managers' directories (.husky for .husky/_)
    configs: list[str]  # files an include.path names, inside the writable roots
    # what the user's git config runs, and what their hooks link to, inside the
    # writable roots: [(path, why, audit class)]; relative ones per work tree
    programs: list = field(default_factory=list)
    programs_relative: list = field(default_factory=list)
    worktrees: list[str] = field(default_factory=list)  # work tree roots the above used
    entries: list[str] = field(default_factory=list)  # every .git entry in the roots
    protected: list[str] = field(default_factory=list)  # protected names found (scan)


def _protect_git_dirs(git: _Git, worktrees: list[str], plan: _Plan, protect: bool,
                      obs: Observer, roots: list[str], skip_dirs: tuple[str, ...],
                      home: str, unprotect: tuple[str, ...] = ()) -> None:
    """Protect what git runs programs through, decided from the host's state.

    Every git dir found (not only those a pointer names) keeps its config,
    config.worktree, commondir and hooks read-only, so a planted pointer can
    add protection but never move it off the real ones.  Git dirs inside
    skip_dirs are left to the audit: making their parents mount points would
    stop `rm -rf node_modules`; so are those inside a protected directory
    (read-only whole already).  Every core.hooksPath and include.path in the
    user's global config and in any git dir's config counts (a superset).

    What a protected file runs is protected too: every path named in a
    command those configs run (core.fsmonitor, filter.*.clean, diff.*.textconv,
    a "!" alias...) and the file a symlinked hook leads to, resolved against
    every work tree root, is read-only when it lies in a writable root, and
    the audit neutralises it if the run made or changed it.  Relative ones
    are resolved by the audit again against every work tree root a run
    makes (a new ``.git`` file or symlink re-roots the user's repository).
    """
    writable = roots + git.roots
    inside = lambda p: any(is_within(p, r) for r in writable)  # noqa: E731

    def protectable(p: str) -> bool:
        """In a writable root, and not inside a skip_dir (mount points there would
        stop `rm -rf node_modules`; the audit still judges it after the run)."""
        root = max((r for r in writable if is_within(p, r)), key=len, default="")
        return bool(root) and not _in_skip_dir(p, root, skip_dirs)
    # inside a protected directory that stays read-only whole
    boxed = lambda p: any(is_within(p, q) and p != q and  # noqa: E731
                          not any(is_within(q, u) for u in unprotect) for q in git.protected)
    configs = []
    for d in git.dirs:
        root = max((r for r in writable if is_within(d, r)), key=len, default="")
        if protect and not _in_skip_dir(d, root, skip_dirs) and not boxed(d):
            for name in ("config", "config.worktree", "commondir", "hooks"):
                if obs.lexists(os.path.join(d, name)):
                    plan.read_only.append(os.path.join(d, name))
            for sub in ("modules", "worktrees"):  # a new one makes the plan stale
                obs.note(os.path.join(d, sub), full=True)
            _linked_hooks(git, os.path.join(d, "hooks"), plan, obs, inside, protectable)
        configs += [os.path.join(d, "config"), os.path.join(d, "config.worktree")]
    if not protect:
        return
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    global_files = ["/etc/gitconfig", os.path.join(xdg, "git", "config"),
                    os.path.join(home, ".gitconfig")]
    included, hooks, programs, tops = gitconfig.referenced(global_files + configs, obs.read)
    # a core.worktree (a submodule's, a split layout's) is a work tree root too
    git.worktrees = list(dict.fromkeys(worktrees + [t for t in tops if inside(t)]))
    for path in included:
        if obs.lexists(path) and not inside(path):
            plan.read_only.append(obs.realpath(path))  # already read-only, unless a root is in it
        elif inside(path):
            git.configs.append(path)
            if obs.lexists(path):
                plan.read_only.append(path)
    for value, config in hooks:
        value = os.path.expanduser(value)
        if os.path.isabs(value):
            targets = [(os.path.normpath(value), None)]
        else:
            git.hooks_relative.append(value)  # the audit resolves it against new work trees
            targets = [(os.path.normpath(os.path.join(w, value)), w) for w in git.worktrees]
            targets.append((os.path.normpath(os.path.join(os.path.dirname(config), value)), None))
        # a hooks path through a symlink (.githooks -> tools/hooks): the hooks
        # git runs are in the real directory, which counts on its own
        targets += [(real, None) for real in (obs.realpath(t) for t, _w in targets
                                              if obs.lexists(t))
                    if real not in (t for t, _w in targets)]
        for target, worktree in dict.fromkeys(targets):
            if not inside(target):
                if obs.lexists(target):
                    plan.read_only.append(obs.realpath(target))
                continue
            git.hooks_dirs.append(target)
            _linked_hooks(git, target, plan, obs, inside, protectable)
            manager = target
            if worktree is not None and is_within(target, worktree) and target != worktree:
                # a hook manager's hooks call scripts beside them (husky's
                # .husky/_/pre-commit runs .husky/pre-commit): the whole
                # top-level directory is the manager's
                manager = os.path.join(worktree, target[len(worktree.rstrip("/")) + 1:].split("/")[0])
                git.managers.append(manager)
            if obs.lexists(manager):
                plan.read_only.append(manager)
    for word, key, config in programs:
        word = os.path.expanduser(word)
        why = f"a program {key} runs (in {config})"
        if os.path.isabs(word):
            candidates = [os.path.normpath(word)]
        else:
            git.programs_relative.append((word, why, "git_config"))
            candidates = [os.path.normpath(os.path.join(w, word)) for w in git.worktrees]
        for path in candidates:
            _program(git, path, why, "git_config", plan, obs, inside, protectable)


def _program(git: _Git, path: str, why: str, cls: str, plan: _Plan, obs: Observer,
             inside, protectable) -> None:
    """A file git runs: read-only if it is in a writable root, and audited there.

    Both the path as git names it and its real path count: the audit stamps
    a symlink on the way (git follows it; the command may replace it) and
    judges the file it leads to by the real path.
    """
    real = obs.realpath(path)
    for form in dict.fromkeys((path, real)):
        if inside(form):
            git.programs.append((form, why, cls))
    if protectable(real) and obs.lexists(real) and not obs.isdir(real):
        plan.read_only.append(real)


def _linked_hooks(git: _Git, hooks: str, plan: _Plan, obs: Observer, inside,
                  protectable) -> None:
    """Hooks that are symlinks (``pre-commit -> ../../scripts/pre-commit``): the
    file each leads to is what git runs, so it is protected like the hook."""
    import stat as stat_mod

    if not inside(hooks):
        return
    for name in obs.listdir(hooks):
        entry = os.path.join(hooks, name)
        st = obs.note(entry)
        if name.endswith(".sample") or st is None or not stat_mod.S_ISLNK(st[1]):
            continue
        _program(git, obs.realpath(entry), f"the file the hook {entry} links to", "git_hooks",
                 plan, obs, inside, protectable)


def _settle_secrets(files: list[str], links: list[str], worktrees: dict[str, str],
                    outer: str | None, roots: list[str], read_roots: list[str], git_dirs: list[str],
                    masked_dirs: list[str], policy: Policy, state: str,
                    obs: Observer) -> secretfiles.Settled:
    """Hide secret-named files, or show the ones git already holds (sandbox.secretfiles)."""
    trusted: list[str] = []
    if outer:  # the repository the workspace sits in: visible unless under a hidden dir
        found = gitconfig.locate(outer, obs.read, obs.realpath,
                                 lambda p: obs.isdir(p) and not os.path.islink(p))
        if found:
            trusted = [d for d in found[:2] if not any(
                is_within(d, h) for h in SCRATCH_DIRS + tuple(policy.empty_dirs))]

    def stores_ok(objects: str) -> bool:
        # the command could read this store anyway: it is in a root or a git
        # directory the sandbox mounts, and not under a masked directory
        return (any(is_within(objects, r) for r in roots + read_roots + git_dirs + trusted)
                and not any(is_within(objects, d) for d in masked_dirs)
                and not is_within(objects, state))

    return secretfiles.settle(files + secretfiles.link_targets(links, obs), worktrees=worktrees,
                              stores_ok=stores_ok, writable=roots, state=state, obs=obs)


def _enclosing_repo(path: str, obs: Observer) -> str | None:
    parent = os.path.dirname(path)
    while parent and parent != path:
        candidate = os.path.join(parent, ".git")
        if obs.lexists(candidate):
            return candidate
        path, parent = parent, os.path.dirname(parent)
    return None


def _link_below(root: str, path: str, obs: Observer) -> bool:
    """Is any component after ``root`` on the way to ``path`` (itself included) a symlink?"""
    import stat as stat_mod

    rest = path[len(root.rstrip("/")):].strip("/").split("/") if path != root else []
    current = root.rstrip("/")
    for part in rest:
        current = f"{current}/{part}"
        st = obs.note(current)  # (inode, mode): a later swap invalidates the plan
        if st is None or stat_mod.S_ISLNK(st[1]):
            return True
    return False


def _profile_file(path: str, writable: list[str], obs: Observer) -> str:
    """The real path of a profile file; refuse one reached through a symlink
    that lies in a writable root (the command could point it at another file:
    a read-only bind protects one path)."""
    import stat as stat_mod

    current = "/"
    for part in path.strip("/").split("/"):
        step = os.path.join(current, part)
        st = obs.note(step)  # (inode, mode): a swapped link invalidates a cached plan
        if st is not None and stat_mod.S_ISLNK(st[1]) and any(is_within(step, r) for r in writable):
            raise UsageError(f"profile {path} is reached through the symlink {step}, which the "
                             "command may change, so the profile cannot be kept read-only",
                             hint=f"name the file by its real path ({os.path.realpath(path)}) "
                                  "in --profile or extends")
        current = os.path.realpath(step)
    return current


def _single_link(path: str, real: str) -> None:
    """Refuse a profile file with other hard links: the command could write through one."""
    try:
        links = os.stat(real).st_nlink
    except OSError:
        return
    if links > 1:
        raise UsageError(f"profile {path} has {links - 1} other hard link(s), which the command "
                         "could write through, so the profile cannot be kept read-only",
                         hint=f"make it a file of its own: cp {real} {real}.new && "
                              f"mv {real}.new {real}")


def _ancestors_between(root: str, path: str) -> list[str]:
    """Directories strictly between ``root`` and ``path``."""
    out = []
    parent = os.path.dirname(path)
    while parent != root and is_within(parent, root) and parent != "/":
        out.append(parent)
        parent = os.path.dirname(parent)
    return out


def _scratch_parents(paths, obs: Observer) -> list[str]:
    """Host directories just below a private scratch dir that hold one of ``paths``
    deeper down (``/tmp/repo`` for ``/tmp/repo/sub``); see Layout.scratch_parents."""
    import stat as stat_mod

    out: list[str] = []
    for path in paths:
        for scratch in SCRATCH_DIRS:
            if path == scratch or not is_within(path, scratch):
                continue
            top = f"{scratch}/{path[len(scratch) + 1:].split('/', 1)[0]}"
            if top == path or top in out or any(is_within(top, p) for p in paths):
                continue  # nothing between, or a writable root covers it
            st = obs.note(top)  # stamped: a swap invalidates a cached plan
            if st is not None and stat_mod.S_ISDIR(st[1]):
                out.append(top)
    return out


def _depth_sorted(paths) -> tuple[str, ...]:
    return tuple(sorted(dict.fromkeys(paths), key=lambda p: (p.count("/"), p)))


def discover(policy: Policy, ws: Workspace, *, extra_writable: tuple[str, ...] = (),
             unprotect: tuple[str, ...] = (), home: str, state: str,
             environ: dict[str, str], obs: Observer, tool_paths: tuple[str, ...] = ()) -> Layout:
    """Describe the host for ``policy`` and ``ws``; see ``Layout``.

    Everything read from the filesystem goes through ``obs`` so that a
    cached plan can be checked against it (see ``sandbox.observe``).
    """
    unprotect = tuple(policy.unprotect) + tuple(unprotect)
    plan = _Plan([], [], [], [], [], [])
    roots: list[str] = []
    if policy.workspace is Access.WRITE:
        roots.append(ws.real)
    for path in policy.writable + extra_writable:
        if obs.note(obs.realpath(path)) is None:
            origin = ("--allow-write" if path in extra_writable
                      else f"filesystem.writable in profile '{policy.name}'")
            raise UsageError(f"writable path {path} ({origin}) does not exist",
                             hint="create it first, or drop it; the sandbox never creates host paths",
                             code="workspace_invalid")
        check_root(path, "writable path", home, state, policy.deny_read, obs)
        roots.append(obs.realpath(path))

    dirs, files = expand_secrets(policy.deny_read, obs)
    rules = scan.Rules(protected_names=policy.protected_names, skip_dirs=policy.skip_dirs,
                       secret_names=policy.deny_read_names, secret_exceptions=policy.allow_read_names,
                       find_git=True, secrets_everywhere=True)
    scan_cache = os.path.join(state, "scan")
    os.makedirs(scan_cache, mode=0o700, exist_ok=True)
    git_entries: list[str] = []
    git = _Git([], [], [], [], [], [])
    # secret names are hidden in a workspace the command can only read, too
    read_roots = [ws.real] if policy.workspace is Access.READ else []
    secret_files: list[str] = []
    secret_links: list[str] = []
    worktrees: dict[str, str] = {}  # worktree top -> its .git entry, to find tracked secrets
    for root in dict.fromkeys(roots + read_roots):
        result = scan.walk(root, rules, os.path.join(scan_cache, scan.cache_name(root, rules)))
        # every directory whose listing decided something (see scan.Result),
        # as one compact dependency: a node_modules has tens of thousands
        obs.note_walk(root, root, rules, result)
        for rel in (n for n in rules.protected_names if "/" in n):
            # looked up by name (scan.walk), not in a listing: its own stamp
            obs.note(os.path.join(root, rel))
        writable_root = root in roots
        for path, kind, _is_dir in result.findings:
            if kind == scan.GIT:
                worktrees.setdefault(os.path.dirname(path), path)
            if kind == scan.SECRET:
                secret_files.append(path)
            elif kind == scan.SECRET_LINK:
                secret_links.append(path)
            elif kind in (scan.SOCKET, scan.FIFO):  # host sockets and FIFOs look empty inside
                plan.masked_files.append(path)
            elif not writable_root:
                continue  # read-only anyway: only secrets and sockets matter
            elif kind == scan.GIT:
                git_entries.append(path)
                git.entries.append(path)
            elif kind == scan.GIT_BURIED:
                git.entries.append(path)  # for the audit's snapshot only
            elif kind == scan.GITDIR:
                git.dirs.append(path)
            elif kind == scan.PROTECTED:
                plan.read_only.append(path)
                git.protected.append(path)
            # UNREADABLE: the owner's choice; the audit opens up ones the command made
    # A workspace inside a repository (and not a repository itself): git run
    # in it uses that repository, so its git dir must be writable too.
    outer = None
    if policy.workspace is Access.WRITE and not obs.lexists(os.path.join(ws.real, ".git")):
        outer = _enclosing_repo(ws.real, obs)
        if outer:
            git_entries.append(outer)
    elif policy.workspace is Access.READ and not obs.lexists(os.path.join(ws.real, ".git")):
        outer = _enclosing_repo(ws.real, obs)
    if outer:
        worktrees.setdefault(os.path.dirname(outer), outer)
    for dotgit in git_entries:
        git.roots += _git_paths(dotgit, plan, policy.protect_git, obs, roots,
                                trusted=dotgit == outer,
                                guard=lambda d: check_root(d, "git directory", home, state,
                                                           policy.deny_read, obs))
    git.roots = list(dict.fromkeys(git.roots))
    bare_rules = scan.Rules(find_git=True)
    for g in git.roots:  # git dirs outside made writable: the git dirs inside them count too
        result = scan.walk(g, bare_rules, os.path.join(scan_cache, scan.cache_name(g, bare_rules)))
        git.dirs += [p for p, kind, _ in result.findings if kind == scan.GITDIR]
    git.dirs = list(dict.fromkeys(git.dirs))
    # work tree roots: every directory holding a .git entry, and the workspace
    tops = [os.path.dirname(e) for e in git_entries] + (
        [ws.real] if policy.workspace is Access.WRITE else [])
    _protect_git_dirs(git, tops, plan, policy.protect_git,
                      obs, roots, policy.skip_dirs, home, unprotect)
    secrets = _settle_secrets(secret_files, secret_links, worktrees, outer, roots, read_roots,
                              list(git.roots), dirs, policy, state, obs)
    plan.masked_files.extend(secrets.hidden)
    plan.warnings.extend(secrets.warnings)
    for root in roots:
        for name in policy.protected_names:
            if os.path.basename(root) == name or root.endswith("/" + name):
                raise UsageError(f"writable path {root} is protected ({name})",
                                 hint="use --unprotect PATH to make a protected path writable",
                                 code="workspace_invalid")

    # Host sockets and FIFOs outside the writable roots (the scan above found
    # those inside): connect() and a FIFO's write end both work through a
    # read-only mount, so each gets an empty file mounted over it.  Sockets
    # bound with a path come from the kernel's list, further down.
    # Here, by file type, what that list cannot name: sockets bound with a
    # relative name, moved after bind() or bound in another network namespace
    # (a container's), and FIFOs, of which the kernel keeps no list at all.
    # A cached plan re-lists only the directories of this search that
    # changed, and keeps the plan unless a FIFO or socket came or went
    # (sandbox.relist; why this design: sandbox.hostsockets).
    socket_rules = scan.Rules(skip_dirs=policy.skip_dirs + policy.socket_skip_dirs + (".git",),
                              find_git=False,
                              max_depth=policy.socket_scan_depth,
                              # hidden inside anyway: no need to look (or to re-check
                              # these busy directories on every start)
                              exclude=tuple(roots) + tuple(dirs) + (state,) + SCRATCH_DIRS
                              + tuple(policy.empty_dirs))
    for base in policy.socket_scan:
        if obs.isdir(base):
            real = obs.realpath(base)
            result = scan.walk(real, socket_rules,
                               os.path.join(scan_cache, scan.cache_name(real, socket_rules)))
            # a busy directory here (~/.config) is listed again by the next
            # run when it changed, not planned afresh (sandbox.relist)
            obs.note_walk("sockets:" + real, real, socket_rules, result)
            plan.masked_files.extend(p for p, kind, _ in result.findings
                                     if kind in (scan.SOCKET, scan.FIFO))

    cache_dir = None
    if policy.uses_caches():
        cache_dir = caches.prepare(state, ws.real, [sub for _var, sub in policy.caches])
        for _var, sub in policy.caches:
            obs.note(os.path.join(cache_dir, sub))
        plan.writable.append(cache_dir)

    # Writable roots and the git directories that must stay writable.
    writable = [r for r in roots] + [g for g in plan.writable
                                     if not any(is_within(g, r) for r in roots)]
    keep = [g for g in plan.writable if any(is_within(g, r) for r in roots)] + plan.keep
    # Protected paths: honour explicit unprotect, then make every directory
    # between a writable root and a protected path a mount point, so that no
    # parent of a protected path can be renamed away and replaced.
    read_only: list[str] = []
    for path in dict.fromkeys(plan.read_only):
        if any(is_within(path, u) for u in unprotect):
            plan.unprotected.append(path)
            continue
        containing = [r for r in writable if is_within(path, r)]
        if not containing:
            continue  # already read-only: it sits on the read-only root
        if _link_below(max(containing, key=len), path, obs):
            plan.warnings.append(f"not protecting {path}: a symlink on the way to it")
            continue
        read_only.append(path)
        keep.extend(_ancestors_between(max(containing, key=len), path))
    # The sandbox's own code (see sandbox.selfguard): read-only whatever the
    # profile says, because the wrapper and the proxy import from it on the
    # host while the command runs.  --unprotect does not apply.
    if selfguard.started_from and any(is_within(selfguard.started_from, r) for r in writable):
        # Python imported `sandbox` from there before any of our code ran: a
        # `sandbox` package the command plants would run unconfined next time
        raise UsageError(f"'python -m sandbox' was started from {selfguard.started_from}, which "
                         "the command may write: Python would look there first for 'sandbox' "
                         "next time", hint="run the 'sandbox' script, or 'python -P -m sandbox'",
                         code="install_writable")
    for entry in selfguard.dropped:
        if any(is_within(entry, t) for t in tool_paths):
            continue  # part of the installation: made read-only below
        if any(is_within(entry, r) for r in writable):
            from_env = entry in {os.path.realpath(p or ".")
                                 for p in environ.get("PYTHONPATH", "").split(":") if p}
            where = "PYTHONPATH" if from_env else "a .pth file (an editable install of this project?)"
            raise UsageError(f"{entry} is on the sandbox's own Python import path (from {where}), "
                             "and the command may write there: a sitecustomize.py planted in it "
                             "would run outside the sandbox at the next start",
                             hint=("set PYTHONPATH for the command instead: sandbox run -- env "
                                   "PYTHONPATH=... CMD" if from_env else
                                   "install sandbox in an environment of its own (e.g. with pipx)"),
                             code="install_writable")
    for path in tool_paths:
        inside = [r for r in writable if is_within(r, path)]
        if inside:  # the root is the installation or part of it: nothing to bind over it
            raise UsageError(f"writable path {inside[0]} is inside the sandbox's own installation "
                             f"({path}); the command could change the code that confines it",
                             hint="use a workspace outside the installation, or install sandbox "
                                  "elsewhere (e.g. with pipx)", code="install_writable")
        containing = [r for r in writable if is_within(path, r)]
        if not containing:
            continue  # already read-only: it sits on the read-only root
        if _link_below(max(containing, key=len), path, obs):
            raise UsageError(f"the sandbox's own installation {path} is inside a writable path "
                             "and reached through a symlink, so it cannot be made read-only",
                             hint="install sandbox outside the workspace (e.g. with pipx)",
                             code="install_writable")
        # listed by 'sandbox explain' with the other protected paths; no
        # warning on every run (it only ever adds protection)
        read_only.append(path)
        keep.extend(_ancestors_between(max(containing, key=len), path))
    # Every profile file of the chain that lies in a writable root: rewritten
    # by the command, it would weaken the next run.  --unprotect does not apply.
    for source in policy.sources:
        real = _profile_file(source, writable, obs)
        containing = [r for r in writable if is_within(real, r)]
        if not containing:
            continue  # on the read-only host
        # also for one a protected path holds (.sandbox.toml is a protected
        # name): a read-only bind keeps one name, not a second hard link
        _single_link(source, real)
        if any(is_within(real, ro) for ro in read_only):
            continue
        read_only.append(real)
        keep.extend(_ancestors_between(max(containing, key=len), real))
    # bwrap follows symlinks on both sides of a bind: a bind of a planted link
    # would make its target writable, so every mount point below a writable
    # root must be reached without one
    keep = [k for k in dict.fromkeys(keep) if k not in writable and k not in read_only
            and not _link_below(max((r for r in writable if is_within(k, r)), key=len, default="/"),
                                k, obs)]

    # A workspace deeper under /tmp: its host parents, read-only (not our own
    # cache dir: the state directory around it is not the command's business)
    scratch_parents = _scratch_parents([p for p in writable if p != cache_dir] + [ws.real], obs)
    for top in scratch_parents:  # host sockets and FIFOs in them: hidden, as under [sockets] scan
        result = scan.walk(top, socket_rules, os.path.join(scan_cache, scan.cache_name(top, socket_rules)))
        obs.note_walk("sockets:" + top, top, socket_rules, result)
        plan.masked_files.extend(p for p, kind, _ in result.findings
                                 if kind in (scan.SOCKET, scan.FIFO))

    # Every socket bound with a path in the host's network namespace, from
    # the kernel's own list: no roots to pick, no depth limit.
    listing = hostsockets.read()
    if not listing:  # not even the header line: no /proc, or not ours to read
        plan.warnings.append(f"cannot read {hostsockets.SOURCE}: host sockets are hidden only "
                             "where [sockets] scan finds them")
    # the state dir is a tmpfs inside (sandbox.linux.bwrap): its sockets (the
    # warm server's, sandbox.server) are unreachable there, and a mask on one
    # would need a mount point bwrap cannot make
    hidden = SCRATCH_DIRS + tuple(policy.empty_dirs) + tuple(dirs) + (state,)
    exposed = tuple(writable) + (ws.real,) + tuple(scratch_parents)
    # a cached run reads the list again and masks what was bound since
    obs.note_value(hostsockets.SOURCE, hostsockets.plan_value(listing, hidden, exposed,
                                                              os.path.join(state, "empty")))
    # Not stamped: a socket that goes away is dropped from the mounts when
    # the run starts (sandbox.linux.drift), so that churn costs no new plan.
    plan.masked_files.extend(real for real in hostsockets.bound_sockets(listing)
                             # not behind a tmpfs inside (/run, /tmp, a secret directory)
                             if hostsockets.reachable(real, hidden, exposed))

    empty_dirs = []
    for d in policy.empty_dirs:
        if obs.isdir(d) and not os.path.islink(d) and not any(is_within(d, e) for e in empty_dirs):
            empty_dirs.append(d)
    # Secrets and sockets under a masked directory are hidden with it; under
    # an empty dir or a scratch dir they are hidden too, unless a root (or a
    # scratch parent) mounted there re-exposes them.
    exposed = writable + read_roots + scratch_parents

    def reachable(f: str) -> bool:
        return (not any(is_within(f, d) for d in dirs)
                and (not any(is_within(f, d) for d in empty_dirs + list(SCRATCH_DIRS) + [state])
                     or any(is_within(f, r) for r in exposed)))

    masked_files = [f for f in dict.fromkeys(files + plan.masked_files) if reachable(f)]
    tracked_secrets = tuple(b for b in dict.fromkeys(secrets.binds)
                            if reachable(b[1]) and b[1] not in masked_files)
    resolv_conf = nsswitch = None
    if policy.network is NetworkMode.NONE:  # lookups go to the run's own resolver
        from sandbox.egress import dns

        resolv_conf, nsswitch = dns.name_service_files(
            state, obs, SCRATCH_DIRS + tuple(empty_dirs) + tuple(dirs))
    empty_file = os.path.join(state, "empty")
    if not os.path.isfile(empty_file):
        with open(empty_file, "w"):
            pass
        os.chmod(empty_file, 0o444)
    obs.note(empty_file)
    return Layout(
        workspace=ws.real,
        cwd=_inside_cwd(ws, SCRATCH_DIRS + tuple(empty_dirs)),
        writable_roots=_depth_sorted(writable),
        keep_in_place=_depth_sorted(keep),
        read_only=_depth_sorted(read_only),
        masked_dirs=_depth_sorted(dirs),
        masked_files=_depth_sorted(masked_files),
        tracked_secrets=tuple(sorted(tracked_secrets, key=lambda b: (b[1].count("/"), b[1]))),
        empty_dirs=_depth_sorted(empty_dirs),
        cache_dir=cache_dir,
        empty_file=empty_file,
        warnings=tuple(plan.warnings),
        unprotected=tuple(dict.fromkeys(plan.unprotected)),
        git_dirs=tuple(git.dirs),
        git_roots=tuple(git.roots),
        hooks_dirs=tuple(dict.fromkeys(git.hooks_dirs)),
        hooks_relative=tuple(dict.fromkeys(git.hooks_relative)),
        hook_managers=tuple(dict.fromkeys(git.managers)),
        git_configs=tuple(dict.fromkeys(git.configs)),
        program_files=tuple(dict.fromkeys(git.programs)),
        program_relative=tuple(dict.fromkeys(git.programs_relative)),
        worktrees=tuple(git.worktrees),
        git_entries=tuple(dict.fromkeys(git.entries)),
        state_dir=state,
        scratch_parents=_depth_sorted(scratch_parents),
        resolv_conf=resolv_conf,
        nsswitch=nsswitch,
    )
