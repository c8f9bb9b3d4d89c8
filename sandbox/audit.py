"""The persistence audit: after a run, neutralise what the host would run by itself.

Protected paths that existed before the run were read-only inside, and the
pre-run snapshot (``sandbox.gitsnapshot``) records what every git dir held
that git runs programs through.  After the command, the audit walks every
writable root and the tool cache with ``sandbox.scan`` (into .git
directories and skip_dirs too) and, in this order:

1. in every git dir (any directory git could use as one, found by what it
   holds, never by following ``.git`` files or ``commondir``): a config
   that is new or changed is rebuilt from an allow-list and written whole
   (``gitconfig.rebuild``); a new or changed hook, a symlinked or odd
   config, and a ``commondir`` added to a git dir that existed before the
   run are quarantined; the same for hooks under a ``core.hooksPath`` and
   the files an ``include.path`` names;
2. a new agent/editor config, shell rc file, ``.envrc`` (the other
   protected names) is quarantined.

Why no pointer is followed: git only takes a directory for a git dir if it
holds ``HEAD`` (and its common dir only if it holds ``objects`` and
``refs``), so wherever a ``.git`` file or ``commondir`` points, the target
is either inside a writable root, where this walk finds and judges it, or
outside, where the command could not write.

Quarantined items are archived (``sandbox.quarantine``), never left live.
Every finding is one line on stderr and an entry in the report.  Any item
that cannot be neutralised is a failure: the run exits 125 and the pending
marker stays, so the next run audits again before anything else.
"""

from __future__ import annotations

import marshal
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
                          ".crush.json"))
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
        return {"kind": self.kind, "path": self.path, "action": self.action}

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


def _read_config(path: str) -> bytes:
    """The bytes of a regular file, at most MAX_CONFIG + 1 (never through a link or FIFO)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        chunks, left = [], gitconfig.MAX_CONFIG + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _replace(path: str, text: str, mode: int) -> None:
    """Write ``text`` to a new file beside ``path`` and rename it over ``path``:
    never through the old file, which may be a hard link to someone else's."""
    tmp = os.path.join(os.path.dirname(path), f".sandbox-audit-{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode & 0o666 or 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class Auditor:
    """One audit pass over the writable roots of one run.

    Everything under the writable roots was written by the command, so the
    audit trusts nothing there: it acts only on entries that lie in a
    writable root themselves (their parent resolved, the entry not), never
    reads or lists through a symlink, and archives links as links.
    """

    def __init__(self, spec: dict) -> None:
        from sandbox import quarantine

        self.spec = spec
        self.known = set(spec["known_protected"])
        self.classes = set(spec["classes"])
        # where the command could write: the scanned roots and its tool caches
        self.roots = [os.path.realpath(r) for r in
                      list(spec["roots"]) + list(spec.get("git_roots", ())) +
                      [spec.get("cache_dir") or ""] if r]
        snapshot = spec.get("snapshot") or {}
        self.before: dict = snapshot.get("stamps", {})
        self.old_gitdirs = set(snapshot.get("gitdirs", ()))
        self.findings: list[Finding] = []
        self.failed = 0
        self.gitdirs: list[str] = []
        self.session = quarantine.Session(spec["state"])

    # -- where the command could write ---------------------------------------

    def _unprotected(self, path: str) -> bool:
        return any(is_within(path, u) for u in self.spec["unprotected"])

    def _inside(self, real: str) -> bool:
        return any(is_within(real, r) for r in self.roots)

    def _entry_inside(self, path: str) -> bool:
        """The entry itself (not what a symlink points to) lies in a writable root."""
        return self._inside(os.path.join(os.path.realpath(os.path.dirname(path)),
                                         os.path.basename(path)))

    def _changed(self, path: str):
        """The entry's stamp now, if it differs from before the run (else None)."""
        now = gitsnapshot.stamp(path)
        return None if now == self.before.get(path) else now

    # -- acting ----------------------------------------------------------------

    def _act(self, kind: str, path: str, action) -> None:
        """Run one neutralising action; on a permission error, make room and retry once."""
        for attempt in (1, 2):
            try:
                self.findings.append(Finding(kind, path, action()))
                return
            except _Clean:
                return
            except PermissionError as exc:
                if attempt == 2:
                    self._failure(kind, path, exc)
                    return
                for target in (os.path.dirname(path), path):
                    try:
                        if not os.path.islink(target):
                            os.chmod(target, os.lstat(target).st_mode | 0o700)
                    except OSError:
                        pass
            except Exception as exc:  # noqa: BLE001 - counted, never a traceback
                self._failure(kind, path, exc)
                return

    def _failure(self, kind: str, path: str, exc: BaseException) -> None:
        self.failed += 1
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        self.findings.append(Finding(kind, path, f"COULD NOT NEUTRALISE ({why}); "
                                                 "remove it by hand before running host tools here"))

    def _quarantine(self, kind: str, path: str, why: str) -> None:
        self._act(kind, path,
                  lambda: f"{why}; quarantined as {self.session.move(path, kind)}")

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
        gitdirs, worktrees, names = {}, [], []
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
                    elif kind == scan.GIT:
                        worktrees.append(os.path.dirname(path))
                    elif kind == scan.PROTECTED and how is rules:
                        names.append(path)
                    elif kind == scan.UNREADABLE and self._open_up(path):
                        more.extend(scan.walk(path, how, None).findings)
                if not more:
                    break
                pending = more
        return list(gitdirs), worktrees, names

    def _run(self) -> None:
        gitdirs, worktrees, names = self._walk()
        # git first: hooks and configs are what the host runs without being asked
        for d in gitdirs:
            self._gitdir(d)
        hooks_dirs = list(self.spec.get("hooks_dirs", ()))
        for rel in self.spec.get("hooks_relative", ()):  # a relative core.hooksPath, per worktree
            hooks_dirs += [os.path.normpath(os.path.join(w, rel)) for w in worktrees]
        for hooks in dict.fromkeys(hooks_dirs):
            self._hooks(hooks)
        for manager in self.spec.get("hook_managers", ()):
            if self.before.get(manager) is None and GIT_HOOKS in self.classes:
                self._new_tree("git hook", manager, "a hook manager directory made during the run")
        for path in self.spec.get("git_configs", ()):
            self._config(path)
        for path in names:
            self._name(path)
        self.gitdirs = [d for d in gitdirs if os.path.isdir(d) and not os.path.islink(d)]
        if self.failed == 0:
            gitsnapshot.store_known(self.spec["state"], self.spec["workspace"], self.gitdirs)

    def _open_up(self, path: str) -> bool:
        """Make a directory the command hid from us listable again (it is ours)."""
        if not self._entry_inside(path) or os.path.islink(path):
            return False
        try:
            os.chmod(path, os.lstat(path).st_mode | 0o700)
            return True
        except OSError as exc:
            self._failure("unreadable directory", path, exc)
            return False

    def _new_tree(self, kind: str, path: str, why: str) -> None:
        if os.path.lexists(path) and self._entry_inside(path) and not self._unprotected(path):
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
        if not self._entry_inside(path):
            return
        cls = class_of(path)
        if cls not in self.classes or not os.path.lexists(path):
            return
        self._quarantine(cls.replace("_", " "), path, "created during the run")

    def _gitdir(self, d: str) -> None:
        if not self._entry_inside(d) or os.path.islink(d):
            return
        for name in ("config", "config.worktree"):
            self._config(f"{d}/{name}")
        self._hooks(f"{d}/hooks")
        # git writes commondir once, when it makes a worktree's git dir; one
        # that appears in (or changes under) a git dir that existed before
        # the run redirects the user's repository to a directory of the
        # command's choosing.  In a new git dir it is left alone: whatever
        # it names is judged as a git dir itself, or lies outside the roots.
        pointer = f"{d}/commondir"
        if (d in self.old_gitdirs and GIT_CONFIG in self.classes and not self._unprotected(pointer)
                and os.path.lexists(pointer) and self._changed(pointer) is not None):
            self._quarantine("git commondir", pointer,
                             "added to or changed in a git dir that existed before the run")

    def _config(self, path: str) -> None:
        if GIT_CONFIG not in self.classes or self._unprotected(path):
            return
        now = self._changed(path)
        if now is None or not self._entry_inside(path):
            return  # absent, or just as it was before the run
        kind = now[0]
        if kind == stat.S_IFLNK:  # git would read the target, which may change later
            self._quarantine("git config", path, "a symlink where git reads a config")
        elif kind == stat.S_IFREG:
            self._act("git config", path, lambda: self._rebuild(path))
        elif kind != stat.S_IFDIR:  # a FIFO would hang git; git cannot read a directory
            self._quarantine("git config", path, "not a regular file")

    def _rebuild(self, path: str) -> str:
        data = _read_config(path)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = "\x00"  # not UTF-8: git may read it differently; replace it whole
        if len(data) > gitconfig.MAX_CONFIG:
            text = "\x00"
        base = os.path.dirname(path)
        new, dropped = gitconfig.rebuild(text, self._inside, base)
        if new.encode("utf-8") == data:
            raise _Clean()  # git's own config, nothing it could run: leave it be
        ident = self.session.keep(path, "git config", "replaced")
        _replace(path, new, os.lstat(path).st_mode)
        what = f"removed {', '.join(dropped)}" if dropped else "rewritten in plain form"
        return f"{what}; original quarantined as {ident}"

    def _hooks(self, hooks_dir: str) -> None:
        if GIT_HOOKS not in self.classes or self._unprotected(hooks_dir):
            return
        if not os.path.lexists(hooks_dir) or not self._entry_inside(hooks_dir):
            return
        st = os.lstat(hooks_dir)
        if not stat.S_ISDIR(st.st_mode):  # a link (never listed or followed) or a file
            if self._changed(hooks_dir) is not None:
                self._quarantine("git hook", hooks_dir, "a hooks directory that is not a directory")
            return
        try:
            names = sorted(os.listdir(hooks_dir))
        except OSError:  # there, but not listable: git runs hooks by path, so open it up
            if not self._open_up(hooks_dir):
                return
            try:
                names = sorted(os.listdir(hooks_dir))
            except OSError as exc:
                self._failure("git hook", hooks_dir, exc)
                return
        for name in names:
            path = f"{hooks_dir}/{name}"
            now = self._changed(path)
            if now is None or name.endswith(".sample") or now[0] == stat.S_IFDIR:
                continue  # unchanged; never run by git; git cannot run a directory
            self._quarantine("git hook", path, "new or changed during the run")


# -- pending audits: survive a wrapper that is killed mid-run ---------------------

def mark_pending(spec: dict) -> str:
    from sandbox.plancache import pending_audit_path

    from sandbox import statefile

    path = pending_audit_path(spec["state"], spec["workspace"])
    statefile.dump(path, spec, must_succeed=True)  # no audit promise, no run
    return path


def run_pending(path: str) -> list[Finding]:
    """Audit what an earlier, interrupted run left; forget it only if that worked."""
    try:
        with open(path, "rb") as fh:
            spec = marshal.load(fh)
    except (OSError, EOFError, ValueError, TypeError):
        return []
    if not isinstance(spec, dict):
        return []
    findings = Auditor(spec).run()
    if not any(f.failed for f in findings):
        try:
            os.unlink(path)
        except OSError:
            pass
    return findings
