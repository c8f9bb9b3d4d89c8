"""The persistence audit: after a run, neutralise what the host would run by itself.

Protected paths that existed before the run were read-only inside, and the
pre-run snapshot (``sandbox.gitsnapshot``) records what every git dir held
that git runs programs through, and every file the user's git config runs.
After the command, the audit walks every writable root and the tool cache
with ``sandbox.scan`` (into .git directories, skip_dirs and protected
directories too, at any depth and path length) and, in this order:

1. in every git dir (any directory git could use as one, found by what it
   holds, never by following ``.git`` files or ``commondir``): a config
   that is new or changed is rebuilt from an allow-list and written whole
   (``gitconfig.rebuild``); a new or changed hook, a symlinked or odd
   config, and a ``commondir`` added to a git dir that existed before the
   run are quarantined;
2. hooks under every ``core.hooksPath``, and the files the user's git
   config runs (``core.fsmonitor = tools/x.sh``...) or a symlinked hook
   leads to, resolved against every work tree root discovery knew and
   against the directory of every ``.git`` entry that is new or changed
   (never read: wherever it points, git run there would take the relative
   paths from it); then the files an ``include.path`` names;
3. a new agent/editor config, shell rc file, ``.envrc`` (the other
   protected names) is quarantined.

Why no pointer is followed: git only takes a directory for a git dir if it
holds ``HEAD`` (and its common dir only if it holds ``objects`` and
``refs``), so wherever a ``.git`` file or ``commondir`` points, the target
is either inside a writable root, where this walk finds and judges it, or
outside, where the command could not write.

Every act is reached from a writable root without following symlinks
(``sandbox.pathat``): another run's command may be changing the tree
while the audit works, and nothing it does can carry an act outside.

Quarantined items are archived (``sandbox.quarantine``), never left live.
Every finding is one line on stderr and an entry in the report.  Any item
that cannot be neutralised is a failure: the run exits 125 and its pending
marker stays (``sandbox.pending``), so the next run audits again before
anything else.
"""

from __future__ import annotations

import errno
import os
import stat

from sandbox import gitconfig, gitsnapshot, scan
from sandbox.command import is_within
from sandbox.errors import printable

# Classes a profile can switch off ([audit] in the profile), and the
# protected names that belong to each.  A path is classed by the longest
# entry it ends with, so "mise/config.toml" is mise's, not jj's
# "config.toml"; a name with a "/" may also be listed by its last part.
VCS = ("git_config", (".hg", ".jj", "hgrc", "config.toml", ".hg/hgrc", ".jj/repo/config.toml"))
AGENT = ("agent_config", (".claude", ".codex", ".gemini", ".cursor", ".windsurf", ".continue",
                          ".aider.conf.yml", ".mcp.json", ".cursorrules", ".clinerules",
                          "opencode.json", "opencode.jsonc", ".opencode", ".roo", ".roomodes",
                          ".kilocode", ".kiro", ".amazonq", ".qwen", ".junie", "crush.json",
                          ".crush.json", ".sandbox.toml"))
EDITOR = ("editor_config", (".vscode", ".idea", ".zed", ".fleet", ".theia", ".helix",
                            ".devcontainer", ".devcontainer.json", ".dir-locals.el",
                            ".dir-locals-2.el", ".nvim.lua", ".nvimrc", ".exrc", "_exrc", ".vimrc",
                            "_vimrc", ".gvimrc", "_gvimrc", ".lvimrc", ".lazy.lua"))
ENVRC = ("envrc", (".envrc", ".direnv", ".mise.toml", "mise.toml", ".mise", ".mise.local.toml",
                   "mise.local.toml", ".rtx.toml", ".rtx.local.toml", ".miserc.toml",
                   "miserc.toml", ".tool-versions", "mise", "config.local.toml", "conf.d",
                   "mise/config.toml", "mise/config.local.toml", "mise/conf.d"))
HOOKS = ("hook_managers", (".husky", ".githooks", ".git-hooks", ".pre-commit-config.yaml",
                           ".pre-commit-config.yml", ".pre-commit-hooks.yaml", "prek.toml",
                           *(f"{dot}lefthook{local}.{ext}" for dot in ("", ".")
                             for local in ("", "-local")
                             for ext in ("yml", "yaml", "toml", "json", "jsonc")),
                           ".lefthook", ".lefthook-local", ".overcommit.yml", "hk.pkl",
                           "hk.local.pkl", ".rusty-hook.toml", "rusty-hook.toml",
                           *(f"{dot}simple-git-hooks.{ext}" for dot in ("", ".")
                             for ext in ("json", "js", "cjs", "mjs"))))
PACKAGES = ("package_config", (".npmrc", ".yarnrc", ".yarnrc.yml", "releases", "plugins",
                               ".pnpmfile.cjs", ".pnpmfile.mjs", "pnpmfile.js"))
NAMED = (AGENT, EDITOR, ENVRC, HOOKS, PACKAGES, VCS)
GIT_HOOKS = "git_hooks"
GIT_CONFIG = "git_config"
SHELL_RC = "shell_rc"  # every other protected name: shell and REPL start-up files
CLASSES = (GIT_HOOKS, GIT_CONFIG, SHELL_RC, AGENT[0], EDITOR[0], ENVRC[0], HOOKS[0], PACKAGES[0])


class Finding:
    __slots__ = ("kind", "path", "action")

    def __init__(self, kind: str, path: str, action: str) -> None:
        self.kind, self.path, self.action = kind, path, action

    def line(self) -> str:
        return printable(f"sandbox: audit: {self.kind}: {self.path}: {self.action}")

    def as_dict(self) -> dict:
        return {"code": "audit_failed" if self.failed else "audit_finding",
                "kind": self.kind, "path": self.path, "action": self.action}

    @property
    def failed(self) -> bool:
        return self.action.startswith("COULD NOT")


def class_of(path: str) -> str:
    """The audit class of a protected path (or bare name): the longest table
    entry the path ends with decides; the first table in NAMED breaks ties."""
    best, found = 0, SHELL_RC
    for cls, names in NAMED:
        for name in names:
            if len(name) > best and (path == name or path.endswith("/" + name)):
                best, found = len(name), cls
    return found


class _Clean(Exception):
    """Nothing to do after all (not a finding)."""


def _kind_of(stamp) -> int:
    """The file type in a stamp (a content stamp is a regular file's)."""
    return stat.S_IFREG if stamp[0] == gitsnapshot.HASHED else stamp[0]


class Auditor:
    """One audit pass over the writable roots of one run.

    Everything under the writable roots was written by the command, so the
    audit trusts nothing there: it reaches every entry from a root one
    directory at a time without following symlinks, and acts relative to
    the parent it reached (``sandbox.pathat``), so nothing it does can land
    outside the roots, however the tree changes meanwhile; it archives links
    as links.  A symlink on the way to something git reads or runs is
    itself a finding, unless it was there before the run.
    """

    def __init__(self, spec: dict) -> None:
        from sandbox import pathat, quarantine

        self.spec = spec
        self.known = set(spec["known_protected"])
        self.classes = set(spec["classes"])
        # where the command could write: the scanned roots and its tool caches
        self.tree = pathat.Roots(gitsnapshot.roots_of(spec))
        snapshot = spec.get("snapshot") or {}
        self.before: dict = snapshot.get("stamps", {})
        self.old_gitdirs = set(snapshot.get("gitdirs", ()))
        self.findings: list[Finding] = []
        self.failed = 0
        self.gitdirs: list[str] = []
        self.session = quarantine.Session(spec["state"])

    # -- where the command could write ---------------------------------------

    def _unprotected(self, path: str, gitdir: str | None = None) -> bool:
        """Did the user make ``path`` writable (--unprotect, [protect])?

        For an entry of git dir ``gitdir`` only if the unprotected path lies
        inside that git dir (``--unprotect .git/hooks``) or the git dir was
        there before the run: a directory unprotected for its own sake
        (``--unprotect .vscode``) does not make a git dir planted in it trusted.
        """
        for u in self.spec["unprotected"]:
            if is_within(path, u) and (gitdir is None or is_within(u, gitdir)
                                       or gitdir in self.old_gitdirs):
                return True
        return False

    def _stamp(self, path: str):
        """The stamp of ``path`` now, reached without following a symlink (None:
        absent).  Raises pathat.LinkOnTheWay."""
        try:
            with self.tree.parent(path) as (fd, name):
                return gitsnapshot.stamp_at(fd, name, self.before.get(path))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _changed(self, path: str):
        """The entry's stamp now, if it differs from before the run (else None)."""
        now = self._stamp(path)
        return None if now == self.before.get(path) else now

    # -- acting ----------------------------------------------------------------

    def _act(self, kind: str, path: str, action) -> None:
        """Run one neutralising action, ``action(room)``; on a permission error run
        it again with room=True (make the command's directories ours to change)."""
        from sandbox import pathat

        for attempt in (1, 2):
            try:
                self.findings.append(Finding(kind, path, action(attempt == 2)))
                return
            except _Clean:
                return
            except pathat.LinkOnTheWay as exc:
                self._link(kind, path, exc.link)
                return
            except PermissionError as exc:
                if attempt == 2:
                    self._failure(kind, path, exc)
                    return
            except Exception as exc:  # noqa: BLE001 - counted, never a traceback
                self._failure(kind, path, exc)
                return

    def _failure(self, kind: str, path: str, exc: BaseException) -> None:
        self.failed += 1
        self.findings.append(failure_finding(kind, path, exc))

    def _move_at(self, fd: int, name: str, path: str, kind: str, why: str, room: bool) -> str:
        from sandbox import pathat

        if room:
            pathat.make_room(fd, name)
        return f"{why}; quarantined as {self.session.move(path, kind, (fd, name))}"

    def _quarantine(self, kind: str, path: str, why: str, only_if_changed: bool = False) -> None:
        """Archive and remove ``path`` (with ``only_if_changed``: unless its stamp is
        as before the run)."""
        def go(room: bool) -> str:
            with _Reach(self.tree, path, room) as (fd, name):
                if only_if_changed:
                    before = self.before.get(path)
                    now = gitsnapshot.stamp_at(fd, name, before)
                    if now is None or now == before:
                        raise _Clean()
                elif not _lexists_at(fd, name):
                    raise _Clean()
                return self._move_at(fd, name, path, kind, why, room)
        self._act(kind, path, go)

    def _link(self, kind: str, path: str, link: str) -> None:
        """A symlink on the way to ``path``: git would follow it.  The user's own
        link, as it was before the run, is left alone (what it leads to inside
        the roots is judged by its own path); any other is quarantined."""
        from sandbox import pathat

        try:
            now = self._stamp(link)
        except pathat.LinkOnTheWay as exc:  # moved under us meanwhile: count it
            self._failure(kind, path, exc)
            return
        if now is not None and now == self.before.get(link):
            return
        self._quarantine(kind, link, f"a symlink on the way to {path}, made during the run")

    # -- the pass ----------------------------------------------------------------

    def run(self) -> list[Finding]:
        try:
            self._run()
        except Exception as exc:  # noqa: BLE001 - a bug must not leave hooks live unreported
            self._failure("audit", self.spec.get("workspace", "?"), exc)
        return self.findings

    def _walk(self):
        rules = scan.Rules(protected_names=tuple(self.spec["names"]),
                           skip_dirs=tuple(self.spec["skip_dirs"]),
                           secret_names=tuple(self.spec["secret_names"]),
                           secret_exceptions=tuple(self.spec["secret_exceptions"]), find_git=True)
        bare = scan.Rules(find_git=True)  # the tool cache and git dirs outside: git dirs only
        cache_dir = os.path.join(self.spec["state"], "scan")
        walks = [(r, rules) for r in self.spec["roots"]]
        walks += [(r, bare) for r in list(self.spec.get("git_roots", ()))
                  + [self.spec.get("cache_dir") or ""] if r]
        gitdirs, dotgits, names = {}, {}, []
        for root, how in walks:
            if not os.path.isdir(root):
                continue
            result = scan.walk(root, how, os.path.join(cache_dir, scan.cache_name(root, how)))
            pending = list(result.findings)
            for _round in range(64):  # directories made unreadable: open them up, look again
                more = []
                for path, kind, _is_dir in pending:
                    if kind == scan.GITDIR:
                        gitdirs[path] = None
                    elif kind in (scan.GIT, scan.GIT_BURIED):
                        dotgits[path] = None
                    elif kind == scan.PROTECTED and how is rules:
                        names.append(path)
                    elif kind == scan.UNREADABLE and self._open_up(path):
                        more.extend(scan.walk(path, how, None).findings)
                if not more:
                    break
                pending = more
        return list(gitdirs), list(dotgits), names

    def _worktrees(self, dotgits: list[str]) -> tuple[list[str], list[str]]:
        """(the work tree roots whose relative hooksPath and programs count, the
        new or changed ``.git`` entries among them): those discovery knew (their
        files are in the snapshot) and every directory whose ``.git`` entry is
        new or changed (wherever it points, git run there may take relative
        paths of a trusted config from it)."""
        from sandbox import pathat

        known = set(self.spec.get("worktrees", ()))
        out = [w for w in self.spec.get("worktrees", ()) if self.tree.inside(w)]
        new = []
        for entry in dotgits:
            top = os.path.dirname(entry)
            if not self.tree.inside(top):
                continue
            try:
                changed = self._changed(entry) is not None
            except pathat.LinkOnTheWay:
                changed = True
            if changed:
                out.append(top)
                new.append(entry)
        return list(dict.fromkeys(out)), new

    def _pointed(self, entry: str) -> tuple[list[str], list[tuple[str, str, str]]]:
        """(hooks paths, programs) of the configs a new ``.git`` entry may lead git
        to, resolved against its directory.

        Read only to do more, never less: the entry may name a repository
        outside the writable roots (another of the user's) whose config runs
        ``tools/x.sh`` relative to the work tree, which is now this
        directory.  The pointer is read several ways (as git reads it, and
        trimmed), and every reading counts.
        """
        from sandbox import safeio

        top = os.path.dirname(entry)
        gitdirs: list[str] = []
        try:
            target = os.path.realpath(entry)
        except OSError:
            return [], []
        if os.path.isdir(target):
            gitdirs.append(target)
        else:
            text = (safeio.read_text(target, 1 << 20) or "").split("\0", 1)[0]
            for line in {text.rstrip("\r\n"), text.strip()}:
                _, sep, rest = line.partition(":")
                if sep and line[:6].lower() == "gitdir":
                    for spelled in {rest[1:], rest.strip()}:
                        if spelled:
                            gitdirs.append(os.path.realpath(os.path.join(top, spelled)))
        configs: list[str] = []
        for g in dict.fromkeys(gitdirs):
            configs += [f"{g}/config", f"{g}/config.worktree"]
            common = (safeio.read_text(os.path.realpath(f"{g}/commondir"), 1 << 20) or "")
            common = common.split("\0", 1)[0]
            for spelled in {common.rstrip("\r\n"), common.strip()} - {""}:
                configs.append(os.path.realpath(os.path.join(g, spelled)) + "/config")
        _inc, hooks, programs, _tops = gitconfig.referenced(configs)
        hooks_dirs = [os.path.normpath(os.path.join(top, os.path.expanduser(v)))
                      for v, _cfg in hooks]
        found = [(os.path.normpath(os.path.join(top, os.path.expanduser(word))),
                  f"a program {key} runs (in {cfg})", GIT_CONFIG)
                 for word, key, cfg in programs]
        return hooks_dirs, found

    def _run(self) -> None:
        gitdirs, dotgits, names = self._walk()
        # git first: hooks and configs are what the host runs without being asked
        for d in gitdirs:
            self._gitdir(d)
        worktrees, new_entries = self._worktrees(dotgits)
        hooks_dirs = list(self.spec.get("hooks_dirs", ()))
        for rel in self.spec.get("hooks_relative", ()):  # a relative core.hooksPath, per worktree
            hooks_dirs += [os.path.normpath(os.path.join(w, rel)) for w in worktrees]
        programs = [tuple(p) for p in self.spec.get("program_files", ())]
        for rel, why, cls in self.spec.get("program_relative", ()):
            programs += [(os.path.normpath(os.path.join(w, rel)), why, cls) for w in worktrees]
        for entry in new_entries:  # the configs a new pointer leads to count there too
            more_hooks, more_programs = self._pointed(entry)
            hooks_dirs += more_hooks
            programs += more_programs
        for hooks in dict.fromkeys(hooks_dirs):
            self._hooks(hooks)
        for path, why, cls in dict.fromkeys(programs):
            self._program(path, why, cls)
        for manager in self.spec.get("hook_managers", ()):
            if self.before.get(manager) is None and GIT_HOOKS in self.classes:
                self._new_tree("git hook", manager, "a hook manager directory made during the run")
        for path in self.spec.get("git_configs", ()):
            self._config(path)
        for path in names:
            self._name(path)
        self.gitdirs = [d for d in gitdirs if self._is_dir(d)]
        if self.failed == 0:
            gitsnapshot.store_known(self.spec["state"], self.spec["workspace"], self.gitdirs)

    def _is_dir(self, path: str) -> bool:
        from sandbox import pathat

        try:
            now = self._stamp(path)
        except (pathat.LinkOnTheWay, OSError):
            return False
        return now is not None and now[0] == stat.S_IFDIR

    def _open_up(self, path: str) -> bool:
        """Make a directory the command hid from us listable again (it is ours)."""
        from sandbox import pathat

        if not self.tree.inside(path) or path in self.tree.roots:
            return False
        try:
            with self.tree.parent(path, True) as (fd, name):
                entry = pathat.open_entry(fd, name)
                try:
                    if not stat.S_ISDIR(os.fstat(entry).st_mode):
                        return False
                    pathat.add_bits(entry)
                finally:
                    os.close(entry)
            return True
        except pathat.LinkOnTheWay:
            return False  # not a place git reaches without a link: the link is judged
        except (FileNotFoundError, NotADirectoryError):
            return False  # gone meanwhile
        except OSError as exc:
            self._failure("unreadable directory", path, exc)
            return False

    def _new_tree(self, kind: str, path: str, why: str) -> None:
        if self.tree.inside(path) and not self._unprotected(path):
            self._quarantine(kind, path, why)

    def _known_protected(self, path: str) -> bool:
        """Is ``path`` or one of its parents a path protected before the run?
        (A set lookup per parent: thousands of protected paths must not make
        the audit quadratic.)"""
        while True:
            if path in self.known:
                return True
            parent = os.path.dirname(path)
            if parent == path:
                return "/" in self.known
            path = parent

    def _name(self, path: str) -> None:
        if self._known_protected(path) or self._unprotected(path):
            return
        if not self.tree.inside(path):
            return
        cls = class_of(path)
        if cls not in self.classes:
            return
        self._quarantine(cls.replace("_", " "), path, "created during the run")

    def _gitdir(self, d: str) -> None:
        if not self.tree.inside(d):
            return
        for name in ("config", "config.worktree"):
            self._config(f"{d}/{name}", d)
        self._hooks(f"{d}/hooks", d)
        # git writes commondir once, when it makes a worktree's git dir; one
        # that appears in (or changes under) a git dir that existed before
        # the run redirects the user's repository to a directory of the
        # command's choosing.  In a new git dir it is left alone: whatever
        # it names is judged as a git dir itself, or lies outside the roots.
        pointer = f"{d}/commondir"
        if d in self.old_gitdirs and GIT_CONFIG in self.classes and not self._unprotected(pointer, d):
            self._quarantine("git commondir", pointer,
                             "added to or changed in a git dir that existed before the run",
                             only_if_changed=True)

    def _config(self, path: str, gitdir: str | None = None) -> None:
        if (GIT_CONFIG not in self.classes or self._unprotected(path, gitdir)
                or not self.tree.inside(path)):
            return

        def go(room: bool) -> str:
            with _Reach(self.tree, path, room) as (fd, name):
                before = self.before.get(path)
                now = gitsnapshot.stamp_at(fd, name, before)
                if now is None or now == before:
                    raise _Clean()  # absent, or just as it was before the run
                kind = _kind_of(now)
                if kind == stat.S_IFLNK:  # git would read the target, which may change later
                    return self._move_at(fd, name, path, "git config", "a symlink where git "
                                         "reads a config", room)
                if kind == stat.S_IFREG:
                    return self._rebuild(fd, name, path, room)
                if kind != stat.S_IFDIR:  # a FIFO would hang git; git cannot read a directory
                    return self._move_at(fd, name, path, "git config", "not a regular file", room)
                raise _Clean()
        self._act("git config", path, go)

    def _rebuild(self, fd: int, name: str, path: str, room: bool) -> str:
        from sandbox import pathat

        if room:
            pathat.make_room(fd, name)
        data = pathat.read_regular(fd, name, gitconfig.MAX_CONFIG + 1)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = "\x00"  # not UTF-8: git may read it differently; replace it whole
        if len(data) > gitconfig.MAX_CONFIG:
            text = "\x00"
        new, dropped = gitconfig.rebuild(text, self.tree.inside, os.path.dirname(path))
        if new.encode("utf-8") == data:
            raise _Clean()  # git's own config, nothing it could run: leave it be
        ident = self.session.keep(path, "git config", "replaced", (fd, name))
        pathat.replace_file(fd, name, new.encode("utf-8"), os.lstat(name, dir_fd=fd).st_mode)
        what = f"removed {', '.join(dropped)}" if dropped else "rewritten in plain form"
        return f"{what}; original quarantined as {ident}"

    def _hooks(self, hooks_dir: str, gitdir: str | None = None) -> None:
        from sandbox import pathat

        if GIT_HOOKS not in self.classes or self._unprotected(hooks_dir, gitdir):
            return
        if not self.tree.inside(hooks_dir):
            return
        try:
            with self.tree.parent(hooks_dir, True) as (fd, name):
                before = self.before.get(hooks_dir)
                now = gitsnapshot.stamp_at(fd, name, before)
                if now is None:
                    return
                if now[0] != stat.S_IFDIR:  # a link (never listed or followed) or a file
                    if now != before:
                        self._act("git hook", hooks_dir, lambda room: self._move_at(
                            fd, name, hooks_dir, "git hook",
                            "a hooks directory that is not a directory", room))
                    return
                try:
                    hooks = os.open(name, pathat.READ_DIR, dir_fd=fd)
                except PermissionError:  # hidden from us: git runs hooks by path, open it up
                    pathat.make_room(fd, name)
                    hooks = os.open(name, pathat.READ_DIR, dir_fd=fd)
                try:
                    st = os.fstat(hooks)
                    if (st.st_dev, st.st_ino) != (now[1], now[2]):
                        raise OSError(errno.ESTALE, "the hooks directory was replaced meanwhile")
                    self._hook_entries(hooks, hooks_dir)
                finally:
                    os.close(hooks)
        except (FileNotFoundError, NotADirectoryError):
            return
        except pathat.LinkOnTheWay as exc:
            self._link("git hook", hooks_dir, exc.link)
        except OSError as exc:
            self._failure("git hook", hooks_dir, exc)

    def _hook_entries(self, hooks: int, hooks_dir: str) -> None:
        for name in sorted(os.listdir(hooks)):
            path = f"{hooks_dir}/{name}"
            before = self.before.get(path)
            now = gitsnapshot.stamp_at(hooks, name, before)
            if now is None or now == before or name.endswith(".sample") or now[0] == stat.S_IFDIR:
                continue  # unchanged; never run by git; git cannot run a directory
            why = "new or changed during the run"
            if before is not None and before[0] == gitsnapshot.HASHED:
                why = ("the user's own hook, whose content the command changed through "
                       "another hard link to it")
            self._act("git hook", path, lambda room, n=name, p=path, w=why: self._move_at(
                hooks, n, p, "git hook", w, room))

    def _program(self, path: str, why: str, cls: str) -> None:
        """A program the user's git config runs (or a hook links to), in a writable root."""
        if cls not in self.classes or self._unprotected(path) or not self.tree.inside(path):
            return

        def go(room: bool) -> str:
            with _Reach(self.tree, path, room) as (fd, name):
                before = self.before.get(path)
                now = gitsnapshot.stamp_at(fd, name, before)
                if now is None or now == before or now[0] == stat.S_IFDIR:
                    raise _Clean()  # absent, unchanged, or nothing git can run
                what = "made during the run" if before is None else "changed during the run"
                if before is not None and before[0] == gitsnapshot.HASHED:
                    what = "its content changed during the run through another hard link"
                return self._move_at(fd, name, path, "git program", f"{why}; {what}", room)
        self._act("git program", path, go)


class _Reach:
    """``with _Reach(tree, path, room) as (fd, name)``: the parent of ``path``
    reached from its root; nothing there on the way is nothing to do (_Clean)."""

    __slots__ = ("tree", "path", "room", "fd")

    def __init__(self, tree, path: str, room: bool) -> None:
        self.tree, self.path, self.room, self.fd = tree, path, room, -1

    def __enter__(self) -> tuple[int, str]:
        try:
            self.fd, name = self.tree.open_parent(self.path, self.room)
        except (FileNotFoundError, NotADirectoryError):
            raise _Clean() from None
        return self.fd, name

    def __exit__(self, *_exc) -> None:
        os.close(self.fd)


def _lexists_at(fd: int, name: str) -> bool:
    try:
        os.lstat(name, dir_fd=fd)
        return True
    except OSError:
        return False


def failure_finding(kind: str, path: str, exc: BaseException) -> Finding:
    why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return Finding(kind, path, f"COULD NOT NEUTRALISE ({why}); "
                               "remove it by hand before running host tools here")
