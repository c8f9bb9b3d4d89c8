"""The persistence audit: after a run, neutralise what the host would run by itself.

Protected paths that existed before the run were read-only inside, so they
are unchanged.  What the command could still leave behind is *new*: a
repository made with ``git init`` (with hooks and a config that runs
programs), hooks in a repository whose hooks directory did not exist,
hooks under a ``core.hooksPath`` that did not exist yet, a new ``.vscode/``,
``.claude/``, ``.envrc`` or shell rc file.  The audit finds them with the
same scan as discovery (``sandbox.scan``) and neutralises each precisely:

* a hook file is moved to the quarantine directory (exec bits removed);
* a git config loses only the keys that make git run a program (the
  original is kept in quarantine), so the repository keeps working;
* a new agent/editor config, shell rc file or ``.envrc`` is moved to
  quarantine.

Every finding is one plain line on stderr and an entry in the report.  The
spec of a pending audit is written to the state directory before the
command starts and removed after the audit, so if the wrapper is killed in
between, the next run in that workspace audits first.
"""

from __future__ import annotations

import marshal
import os
import time

from sandbox import gitconfig, scan
from sandbox.command import is_within
from sandbox.errors import printable
from sandbox.safeio import read_text

# Classes a profile can switch off ([audit] in the profile), and the
# protected names that belong to each.  A protected name with a "/" is
# classed by its last part (".yarn/releases" by "releases"); where two
# tables hold the same last part, the first in NAMED wins.
VCS = ("git_config", (".hg", ".jj", "hgrc", "config.toml"))
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
                   "miserc.toml", ".tool-versions", "mise", "config.local.toml", "conf.d"))
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

# git config keys that make git (or a tool reading the config) run a program.
# Sections with a subsection are matched as "section.*.key"; besides these,
# any key whose last part names a command (see DANGEROUS_SUFFIXES) goes.
DANGEROUS_SUFFIXES = ("command", "cmd", "program", "editor", "pager", "helper", "driver",
                      "textconv", "process", "smudge", "clean", "difffilter", "hookspath",
                      "fsmonitor", "askpass", "gitproxy", "external", "uploadpack",
                      "receivepack", "smtpserver")
DANGEROUS_KEYS = {
    "gpg.ssh.defaultkeycommand", "mergetool.*.path", "difftool.*.path",
    "core.hookspath", "core.fsmonitor", "core.sshcommand", "core.pager", "core.editor",
    "core.askpass", "core.gitproxy", "sequence.editor", "diff.external", "include.path",
    "includeif.*.path", "diff.*.textconv", "diff.*.command", "filter.*.clean",
    "filter.*.smudge", "filter.*.process", "merge.*.driver", "credential.helper",
    "credential.*.helper", "gpg.program", "gpg.*.program", "uploadpack.packobjectshook",
    "pager.*", "web.browser", "browser.*.cmd", "browser.*.path", "remote.*.uploadpack",
    "remote.*.receivepack", "remote.*.vcs", "difftool.*.cmd", "mergetool.*.cmd",
    "receive.procreceiverefs", "protocol.*.allow", "ssh.variant", "tar.*.command",
}


class Finding:
    __slots__ = ("kind", "path", "action")

    def __init__(self, kind: str, path: str, action: str) -> None:
        self.kind, self.path, self.action = kind, path, action

    def line(self) -> str:
        return printable(f"sandbox: audit: {self.kind}: {self.path}: {self.action}")

    def as_dict(self) -> dict:
        return {"kind": self.kind, "path": self.path, "action": self.action}


def class_of(name: str) -> str:
    for cls, names in NAMED:
        if name in names:
            return cls
    return SHELL_RC


def _dangerous(section: str, sub: str | None, key: str, value: str) -> bool:
    if section == "alias" or (section == "submodule" and key == "update"):
        return value.lstrip().startswith("!")
    if key.endswith(DANGEROUS_SUFFIXES):
        return True
    exact = f"{section}.{key}"
    wild = f"{section}.*.{key}" if sub is not None else None
    return exact in DANGEROUS_KEYS or (wild in DANGEROUS_KEYS) or f"{section}.*" in DANGEROUS_KEYS


def dangerous_entries(text: str) -> list[str]:
    """``section[.sub].key`` of every entry in a git config that runs a program."""
    return [_name(e) for e in gitconfig.entries(text) if _dangerous(*e)]


def strip_config(text: str) -> tuple[str, list[str]]:
    """Remove the dangerous entries from a git config text; keep everything else.

    Each key line is parsed together with the section header above it, so
    the same parser decides what is dangerous here and in ``dangerous_entries``.
    """
    out, removed = [], []
    header = ""
    text = text.lstrip("\ufeff")
    for line in _lines(text):
        match = gitconfig.section_header(line)
        if match:
            header = line[:match[2]] + "\n"
            inline = list(gitconfig.entries(line))
            drop = [e for e in inline if _dangerous(*e)]
            if drop:
                removed.extend(_name(e) for e in drop)
                out.append(header)
            else:
                out.append(line)
            continue
        drop = [e for e in gitconfig.entries(header + line) if _dangerous(*e)]
        if drop:
            removed.extend(_name(e) for e in drop)
            continue
        if _unparsed(line):  # git might read it differently from us: do not keep it
            removed.append("a line that is not plain config")
            continue
        out.append(line)
    return "".join(out), removed


def _lines(text: str) -> list[str]:
    """Lines as git sees them: ended by "\n" only (keeping the ends)."""
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _name(entry) -> str:
    section, sub, key, _value = entry
    return f"{section}.{sub}.{key}" if sub is not None else f"{section}.{key}"


MAX_CONFIG = 4 << 20  # a git config larger than this is replaced whole, not parsed
SAFE_CONFIG = "[core]\n\trepositoryformatversion = 0\n\tbare = false\n"


class Auditor:
    """One audit pass over the writable roots of one run.

    Everything under the writable roots was written by the command, so the
    audit trusts nothing there: paths are resolved before any decision, a
    symlink is moved as a link (never followed), and only entries whose
    real location is inside a writable root are touched.
    """

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.known = set(spec["known_protected"])
        self.classes = set(spec["classes"])
        # where the command could write: the scanned roots and its tool caches
        # (a git dir can live in the cache: git init --separate-git-dir)
        self.roots = [os.path.realpath(r) for r in spec["roots"] + [spec.get("cache_dir") or ""] if r]
        self.findings: list[Finding] = []
        self.failed = 0
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{os.getpid()}"
        self.quarantine = os.path.join(spec["state"], "quarantine", stamp)

    def _protected_before(self, path: str) -> bool:
        return any(is_within(path, k) for k in self.known)

    def _unprotected(self, path: str) -> bool:
        return any(is_within(path, u) for u in self.spec["unprotected"])

    def _inside(self, real: str) -> bool:
        return any(is_within(real, r) for r in self.roots)

    def _entry_inside(self, path: str) -> bool:
        """The entry itself (not what a symlink points to) lies in a writable root."""
        return self._inside(os.path.join(os.path.realpath(os.path.dirname(path)),
                                         os.path.basename(path)))

    def _act(self, kind: str, path: str, action) -> None:
        """Run one neutralising action; on a permission error, make room and retry once."""
        try:
            self.findings.append(Finding(kind, path, action()))
            return
        except _Clean:
            return
        except PermissionError:
            for target in (os.path.dirname(path), path):
                try:
                    if not os.path.islink(target):
                        os.chmod(target, os.lstat(target).st_mode | 0o700)
                except OSError:
                    pass
        except OSError as exc:
            self._failure(kind, path, exc)
            return
        try:
            self.findings.append(Finding(kind, path, action()))
        except _Clean:
            return
        except OSError as exc:
            self._failure(kind, path, exc)

    def _failure(self, kind: str, path: str, exc: OSError) -> None:
        self.failed += 1
        self.findings.append(Finding(kind, path, f"COULD NOT NEUTRALISE ({exc.strerror or exc}); "
                                                 "remove it by hand before running host tools here"))

    def _move(self, path: str) -> str:
        import shutil

        dest = os.path.join(self.quarantine, path.lstrip("/"))
        os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
        shutil.move(path, dest)  # a rename: a symlink moves as a link
        for dirpath, _dirs, files in os.walk(dest):  # does not follow links
            for name in files:
                full = os.path.join(dirpath, name)
                if not os.path.islink(full):
                    os.chmod(full, os.lstat(full).st_mode & ~0o7111)
        if not os.path.islink(dest) and os.path.isfile(dest):
            os.chmod(dest, os.lstat(dest).st_mode & ~0o7111)
        return dest

    def _quarantine(self, kind: str, path: str, why: str) -> None:
        self._act(kind, path, lambda: f"{why}; moved to {self._move(path)}")

    def run(self) -> list[Finding]:
        rules = scan.Rules(protected_names=tuple(self.spec["names"]),
                           skip_dirs=tuple(self.spec["skip_dirs"]),
                           secret_names=tuple(self.spec["secret_names"]),
                           secret_exceptions=tuple(self.spec["secret_exceptions"]), find_git=True)
        cache_dir = os.path.join(self.spec["state"], "scan")
        git_entries = set(self.spec["git_entries"])
        for root in self.spec["roots"]:
            if not os.path.isdir(root):
                continue
            result = scan.walk(root, rules, os.path.join(cache_dir, scan.cache_name(root, rules)))
            pending = list(result.findings)
            for _round in range(64):  # directories made unreadable: open them up, look again
                more = []
                for path, kind, _is_dir in pending:
                    if kind in (scan.GIT, scan.BARE):
                        git_entries.add(path)
                    elif kind == scan.PROTECTED:
                        self._name(path)
                    elif kind == scan.UNREADABLE and self._open_up(path):
                        more.extend(scan.walk(path, rules, None).findings)
                if not more:
                    break
                pending = more
        for dotgit in sorted(git_entries):
            self._repository(dotgit)
        return self.findings

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

    def _name(self, path: str) -> None:
        if self._protected_before(path) or self._unprotected(path) or not self._entry_inside(path):
            return
        cls = class_of(os.path.basename(path))
        if cls not in self.classes or not os.path.lexists(path):
            return
        self._quarantine(cls.replace("_", " "), path, "created during the run")

    def _repository(self, dotgit: str) -> None:
        worktree = os.path.dirname(dotgit)
        found = gitconfig.locate(dotgit, read_text, os.path.realpath,
                                 lambda p: os.path.isdir(p) and not os.path.islink(p))
        if found is None:
            return
        gitdir, common, _pointed = found
        gitdirs = [gitdir] + ([common] if common != gitdir else [])
        gitdirs += gitconfig.module_gitdirs(os.path.join(common, "modules"), 6,
                                            lambda p: _listdir(p) or [], os.path.islink,
                                            os.path.isfile, os.path.isdir)
        for d in gitdirs:
            for cfg in ("config", "config.worktree"):
                self._config(os.path.join(d, cfg))
            self._hooks(os.path.join(d, "hooks"))
        for wt in _listdir(os.path.join(common, "worktrees")) or []:
            self._config(os.path.join(common, "worktrees", wt, "config.worktree"))
        # what git reads for this repository: the user's global and system
        # config too (a relative core.hooksPath there points into the repo)
        home = os.path.expanduser("~")
        xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
        configs = ["/etc/gitconfig", os.path.join(xdg, "git", "config"),
                   os.path.join(home, ".gitconfig"), os.path.join(common, "config"),
                   os.path.join(gitdir, "config.worktree")]
        included, hooks_path = gitconfig.referenced_paths(configs, worktree, _read_all)
        for path in included:  # include files that did not exist before the run
            self._config(path)
        if hooks_path:
            self._hooks(hooks_path)

    def _config(self, path: str) -> None:
        if GIT_CONFIG not in self.classes or not self._entry_inside(path):
            return
        if self._protected_before(path) or self._unprotected(path) or not os.path.lexists(path):
            return
        if os.path.islink(path):  # git would read the target: take the link away
            self._quarantine("git config", path, "a symlinked git config")
            return
        if not os.path.isfile(path):
            return
        self._act("git config", path, lambda: self._clean_config(path))

    def _clean_config(self, path: str):
        import shutil

        text = read_text(path, MAX_CONFIG + 1)
        if text is None:
            raise OSError(f"cannot read {path} as a regular file")
        # git and we must see the same lines: any control character but tab and
        # CR/LF makes the whole file suspect
        odd = any(ord(c) < 32 and c not in "\t\r\n" or c in "\x7f\x85\u2028\u2029" for c in text)
        oversized = len(text) > MAX_CONFIG or odd
        if not oversized and not dangerous_entries(text):
            if not any(_unparsed(line) for line in text.split("\n")):
                # nothing to do: drop this non-finding again
                raise _Clean()
        keep = os.path.join(self.quarantine, path.lstrip("/"))
        os.makedirs(os.path.dirname(keep), mode=0o700, exist_ok=True)
        shutil.copyfile(path, keep, follow_symlinks=False)
        if oversized:
            cleaned, removed = SAFE_CONFIG, ["everything (over 4 MiB, or control characters)"]
        else:
            cleaned, removed = strip_config(text)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(cleaned)
        return f"removed {', '.join(removed)} (original kept at {keep})"

    def _hooks(self, hooks_dir: str) -> None:
        if GIT_HOOKS not in self.classes or not self._entry_inside(hooks_dir):
            return
        if self._protected_before(hooks_dir) or self._unprotected(hooks_dir):
            return
        if os.path.islink(hooks_dir):  # never list or move what a link points to
            self._quarantine("git hook", hooks_dir, "a symlinked hooks directory")
            return
        names = _listdir(hooks_dir)
        if names is None:  # there, but not listable: git runs hooks by path, so open it up
            if not self._open_up(hooks_dir):
                return
            names = _listdir(hooks_dir) or []
        for name in names:
            path = os.path.join(hooks_dir, name)
            if name.endswith(".sample") or os.path.isdir(path) and not os.path.islink(path):
                continue
            self._quarantine("git hook", path, "created during the run")


class _Clean(Exception):
    """A config that needed no change (not a finding)."""


def _unparsed(line: str) -> bool:
    stripped = line.strip().lstrip("\ufeff")
    if not stripped or stripped[0] in "#;" or gitconfig.section_header(line.lstrip("\ufeff")):
        return False
    return gitconfig._key_value(stripped) is None


def _listdir(path: str):
    """Sorted names, [] if the directory does not exist, None if it cannot be listed."""
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []
    except OSError:
        return None if os.path.isdir(path) else []


def _read_all(path: str) -> str | None:
    return read_text(path, MAX_CONFIG)


# -- pending audits: survive a wrapper that is killed mid-run ---------------------

def mark_pending(spec: dict) -> str:
    from sandbox.plancache import pending_audit_path

    from sandbox import statefile

    path = pending_audit_path(spec["state"], spec["workspace"])
    statefile.dump(path, spec, must_succeed=True)  # no audit promise, no run
    return path


def run_pending(path: str) -> list[Finding]:
    """Audit what an earlier, interrupted run left; then forget it."""
    try:
        with open(path, "rb") as fh:
            spec = marshal.load(fh)
    except (OSError, EOFError, ValueError, TypeError):
        return []
    if not isinstance(spec, dict):
        return []
    findings = Auditor(spec).run()
    try:
        os.unlink(path)
    except OSError:
        pass
    return findings
