"""Pointer-file and layout variants for the differential git tests.

A *variant* is one way a sandboxed command could leave a repository layout
that makes the host's git run a program later: a ``.git`` file or symlink,
a ``commondir`` pointer, a bare-looking directory, a new repository, or a
change to a git dir (or a file its config names) that existed before the
run.  Each variant plants payloads that append a word to MARKER when they
run: a ``core.fsmonitor`` command (run by ``git status``) and a hook (run
by ``git commit``), or, for the ``gpg`` carrier, a ``gpg.program``.

This module knows nothing about the sandbox's implementation.  It builds
the host layout that exists before the run (``setup_base``), renders the
attack as a small self-contained Python program (``plant_source``: run it
in the workspace, with or without the sandbox; its text is the
reproduction to hand on), and asks the host's real git whether MARKER
fires (``host_git_fires``).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass

GIT = "/usr/bin/git" if os.path.exists("/usr/bin/git") else "git"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"
IDENT = ["-c", "user.name=T", "-c", "user.email=t@example.invalid"]

# -- the dimensions ---------------------------------------------------------------

# the host layout that exists before the run (see setup_base)
BASES = ("plain", "repo", "repo-nohooks", "worktree", "submodule", "linked", "inside",
         "include", "include-existing", "hookspath", "hookspath-existing", "hookspath-custom",
         "husky", "hook-symlink", "hook-hardlink", "config-script", "filter-script",
         "global-include", "global-hookspath")
# how git is led to the planted git dir
DOTGIT_POINTERS = ("dotgit-file", "dotgit-link", "dotgit-file-link", "init-separate")
COMMONDIR_POINTERS = ("commondir", "commondir-link")
LAYOUT_POINTERS = ("bare", "init", "in-place")
# where the planted git dir lives (relative to the workspace unless absolute)
TARGETS = {
    "ws": "evil",
    "node_modules": "node_modules/pkg/evil",
    "venv": ".venv/lib/evil",
    "deep": "d1/d2/d3/d4/evil",
    "deep1500": "deep/@D@/evil",  # 1500 levels: deeper than a recursive walk goes
    "pathmax": "pm/l0/evil",  # real path longer than PATH_MAX (built by _PATHMAX)
    "locked": "locked/evil",  # in a directory others cannot list (mode 0111)
    "odd-name": "odd/e\udcffv\nil",  # not UTF-8, a newline in the name
    "dotgit-objects": ".git/objects/ev",
    "dotgit-modules": ".git/modules/evil",
    "dotgit-worktrees": ".git/worktrees/evil",
    "cache": "@C@/evil",  # the per-workspace tool cache (writable inside)
    "protected-name": ".vscode/evil",  # inside a new editor-config directory
    "agent-name": ".claude/evil",  # inside a new agent-config directory
}
# what carries the payload inside the planted git dir
CARRIERS = ("config", "include", "hookspath", "gpg", "worktree-config", "newline")
# hooks git runs on `git commit`
HOOKS = ("pre-commit", "prepare-commit-msg", "commit-msg", "reference-transaction",
         "post-commit")
# how the path inside a pointer is written
EOLS = ("\n", "\r\n", "", "\n\n", "\r", "\r\r\n")
KEYWORDS = ("gitdir: ", "gitdir:", "gitdir:\t", "Gitdir: ", " gitdir: ", "gitdir:  ")
# in-place changes: base -> sites
IN_PLACE = {
    "repo": ("hooks", "swap-dotgit", "swap-hooks"),
    "repo-nohooks": ("hooks", "hooks-link"),
    "worktree": ("config.worktree", "wt-config.worktree", "wt-commondir"),
    "submodule": ("module-config", "module-hooks"),
    "include": ("include",),
    "include-existing": ("include-existing",),
    "hookspath": ("hookspath", "hookspath-pointer", "hookspath-gitfile"),
    "hookspath-existing": ("hookspath-existing", "hookspath-pointer"),
    "hookspath-custom": ("hookspath", "hookspath-pointer"),
    "husky": ("husky", "hookspath-pointer"),
    "hook-symlink": ("hook-symlink",),
    "hook-hardlink": ("hook-hardlink",),
    "config-script": ("config-script", "config-script-pointer"),
    "filter-script": ("filter-script", "filter-script-pointer"),
    "global-include": ("global-include",),
    "global-hookspath": ("global-hookspath",),
    "linked": ("linked-commondir",),
    "inside": ("inside-commondir",),
}
IN_PLACE_ENTRY = {"wt-config.worktree": "wt", "wt-commondir": "wt", "module-config": "sm",
                  "module-hooks": "sm", "hookspath-pointer": "sub", "hookspath-gitfile": "sub",
                  "config-script-pointer": "sub", "filter-script-pointer": "sub"}
# the relative core.hooksPath each base's config sets
HOOKS_PATH = {"hookspath": ".githooks", "hookspath-existing": ".githooks", "husky": ".husky/_",
              "hookspath-custom": "ci/hooks"}
# sites whose change rewrites a file that existed before: can keep size and mtime
SAME_SIZE_SITES = ("wt-commondir", "module-config", "include-existing", "hookspath-existing",
                   "hook-symlink", "hook-hardlink", "config-script", "filter-script")


@dataclass(frozen=True)
class Spelling:
    absolute: bool = False
    dots: str = ""  # "", "./", "x/../"
    lead: str = ""  # text before the path (git does not strip it)
    trail: str = ""  # text after the path (a space is part of the name for git)
    eol: str = "\n"
    pad: int = 0  # extra newlines after the line (git strips them all)
    keyword: str = "gitdir: "  # for .git files

    def path(self, rel: str, absolute: str) -> str:
        if self.absolute:  # "@W@/x" -> "@W@/" + dots + "x"
            head, _, rest = absolute.partition("/")
            return self.lead + head + "/" + self.dots + rest + self.trail
        return self.lead + self.dots + rel + self.trail

    def line(self, path: str) -> str:
        return path + self.eol + "\n" * self.pad


@dataclass(frozen=True)
class Variant:
    base: str
    pointer: str
    entry: str = "sub"  # where the host runs git (relative to the workspace)
    target: str = "node_modules"
    carrier: str = "config"
    spelling: Spelling = Spelling()
    site: str = ""  # for commondir / in-place: which git dir or file is changed
    head: bool = True  # does the planted git dir have HEAD (a common dir needs none)
    hook: str = "pre-commit"
    gitlink: bool = False  # also record the entry as a submodule in the index
    same_size: bool = False  # in place: keep the file's size and mtime

    def describe(self) -> str:
        s = self.spelling
        parts = [f"base={self.base}", f"pointer={self.pointer}", f"entry={self.entry}"]
        if self.pointer in DOTGIT_POINTERS + COMMONDIR_POINTERS:
            fields = [f"{k}={getattr(s, k)!r}" for k in s.__dataclass_fields__
                      if getattr(s, k) != getattr(Spelling(), k)]
            parts += [f"target={self.target}", f"spelling({', '.join(fields)})"]
        if self.site:
            parts.append(f"site={self.site}")
        if not self.head:
            parts.append("no-HEAD")
        if self.pointer != "in-place":
            parts += [f"carrier={self.carrier}", f"hook={self.hook}"]
        if self.gitlink:
            parts.append("gitlink")
        if self.same_size:
            parts.append("same-size")
        return " ".join(parts)


# -- the host layout before the run --------------------------------------------------

def host_env(home: str, ceiling: str) -> dict[str, str]:
    """What the host's git runs with: a throwaway HOME, no system config,
    discovery stopped above the example directory."""
    return {"HOME": home, "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CEILING_DIRECTORIES": ceiling}


def _git(prefix, env, cwd, *args) -> None:
    r = subprocess.run(prefix + [GIT, *IDENT, "-c", "protocol.file.allow=always", *args],
                       cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"setup: git {' '.join(args)} in {cwd}: {r.stderr.strip()}")


HUSKY_H = """#!/bin/sh
# what husky 9 installs as .husky/_/h: run the user's script of the same name
n=$(basename "$0")
s=$(dirname "$(dirname "$0")")/$n
[ -f "$s" ] || exit 0
exec sh -e "$s"
"""


def setup_base(base: str, ex: str, ws_name: str, prefix: list[str], env: dict) -> str:
    """Make the layout ``base`` for a workspace named ``ws_name`` in ``ex``;
    return the workspace path.  Run as the user who will run the sandbox
    (``prefix``), so ownership is as in real use."""
    ws = os.path.join(ex, ws_name)
    git = lambda cwd, *a: _git(prefix, env, cwd, *a)  # noqa: E731

    def write(rel: str, text: str, mode: int = 0o644) -> None:
        path = os.path.join(ws, rel)
        subprocess.run(prefix + ["mkdir", "-p", os.path.dirname(path)], check=True)
        subprocess.run(prefix + ["sh", "-c", 'cat > "$1" && chmod "$2" "$1"', "-", path,
                                 oct(mode)[2:]], input=text.encode(), check=True)

    if base == "linked":  # the workspace is a linked worktree of a repository outside it
        main = os.path.join(ex, ws_name + "-main")
        subprocess.run(prefix + ["mkdir", "-p", main], check=True)
        git(main, "init", "-q", "-b", "main")
        git(main, "commit", "-q", "--allow-empty", "-m", "init")
        git(main, "worktree", "add", "-q", ws, "-b", "topic")
        return ws
    if base == "inside":  # the workspace is a subdirectory of a repository
        repo = os.path.join(ex, ws_name + "-repo")
        subprocess.run(prefix + ["mkdir", "-p", os.path.join(repo, "ws")], check=True)
        git(repo, "init", "-q", "-b", "main")
        git(repo, "commit", "-q", "--allow-empty", "-m", "init")
        return os.path.join(repo, "ws")
    subprocess.run(prefix + ["mkdir", "-p", ws], check=True)
    if base == "plain":
        return ws
    git(ws, "init", "-q", "-b", "main", *(["--template="] if base == "repo-nohooks" else []))
    if base == "worktree":
        # a worktree made on the host, and per-worktree config in use (as
        # `git sparse-checkout` sets it up)
        git(ws, "config", "core.repositoryformatversion", "1")
        git(ws, "config", "extensions.worktreeConfig", "true")
    elif base == "include":  # a local include the user has not written yet
        git(ws, "config", "include.path", "../.gitconfig.local")
    elif base == "include-existing":  # a tracked, shared config the repo includes
        write(".gitconfig", "[alias]\n\tst = status\n" + "# shared settings\n" * 8)
        git(ws, "config", "include.path", "../.gitconfig")
    elif base in ("hookspath", "hookspath-custom"):  # a hooks directory not created yet
        git(ws, "config", "core.hooksPath", HOOKS_PATH[base])
    elif base == "hookspath-existing":  # tracked hooks
        write(".githooks/pre-commit", "#!/bin/sh\n# checks\n" + "true\n" * 40, 0o755)
        git(ws, "config", "core.hooksPath", ".githooks")
    elif base == "husky":
        write(".husky/_/h", HUSKY_H, 0o755)
        for hook in ("pre-commit", "commit-msg"):
            write(f".husky/_/{hook}", '#!/bin/sh\n. "$(dirname "$0")/h"\n', 0o755)
        git(ws, "config", "core.hooksPath", ".husky/_")
    elif base == "hook-symlink":  # a tracked hook script, linked into place
        write("scripts/pre-commit", "#!/bin/sh\n# lint\n" + "true\n" * 40, 0o755)
        subprocess.run(prefix + ["ln", "-s", "../../scripts/pre-commit",
                                 os.path.join(ws, ".git/hooks/pre-commit")], check=True)
    elif base == "hook-hardlink":  # a tracked hook script, hard-linked into place
        write("scripts/pre-commit", "#!/bin/sh\n# lint\n" + "true\n" * 40, 0o755)
        subprocess.run(prefix + ["ln", os.path.join(ws, "scripts/pre-commit"),
                                 os.path.join(ws, ".git/hooks/pre-commit")], check=True)
    elif base == "filter-script":  # a clean filter the repository's config names
        write("tools/clean.sh", "#!/bin/sh\n# normalise\n" + "cat\n" + "#\n" * 30, 0o755)
        write(".gitattributes", "*.dat filter=x\n")
        write("a.dat", "data\n")
        git(ws, "config", "filter.x.clean", "tools/clean.sh")
    elif base == "config-script":  # the repository's config runs a tracked script
        write("tools/fsmonitor.sh", "#!/bin/sh\n# no fsmonitor data: git scans\n" +
              "exit 1\n" * 30, 0o755)
        git(ws, "config", "core.fsmonitor", "tools/fsmonitor.sh")
    elif base in ("global-include", "global-hookspath"):
        # the user's own ~/.gitconfig names a file in the workspace (a dotfiles
        # checkout, a team config) that does not exist yet
        line = (f"[include]\n\tpath = {ws}/.gitconfig-team\n" if base == "global-include"
                else f"[core]\n\thooksPath = {ws}/.githooks\n")
        subprocess.run(prefix + ["sh", "-c", 'cat > "$1"', "-",
                                 os.path.join(env["HOME"], ".gitconfig")],
                       input=line.encode(), check=True)
    git(ws, "add", "-A")
    git(ws, "commit", "-q", "--allow-empty", "-m", "init")
    if base == "worktree":
        git(ws, "worktree", "add", "-q", "wt", "-b", "wt")
    elif base == "submodule":
        src = os.path.join(ex, ws_name + "-src")
        subprocess.run(prefix + ["mkdir", "-p", src], check=True)
        git(src, "init", "-q", "-b", "main")
        git(src, "commit", "-q", "--allow-empty", "-m", "sub")
        git(ws, "submodule", "add", "-q", src, "sm")
        git(ws, "commit", "-q", "-m", "add sm")
    return ws


# -- the attack, as a program ---------------------------------------------------------

_HEADER = '''\
import os, subprocess
W = os.getcwd()
C = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.dirname(W), "hostcache")
A = ""  # the admin dir of a workspace that is a linked worktree
if os.path.isfile(".git"):
    A = open(".git").read().split("gitdir: ", 1)[-1].strip()
P = os.path.join(os.path.dirname(W), ".git")  # the repository a workspace may sit in
D = "/".join(["d"] * 1500)
def x(s):
    return (s.replace("@W@", W).replace("@C@", C).replace("@A@", A).replace("@P@", P)
            .replace("@D@", D))
def mkdirs(path):
    """os.makedirs without recursion (paths here can be 1500 levels deep)."""
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        part = "/".join(parts[:i])
        if part and not os.path.isdir(part):
            try:
                os.mkdir(part)
            except FileExistsError:
                pass
def attempt(what, fn):
    try:
        fn()
    except (OSError, subprocess.CalledProcessError) as exc:
        print("plant: blocked:", ascii(what), exc)
def d(p):
    attempt("mkdir " + p, lambda: mkdirs(x(p)))
def rm(p):
    attempt("rm " + p, lambda: os.remove(x(p)) if os.path.lexists(x(p)) else None)
def mv(a, b):
    attempt("mv " + a, lambda: os.rename(x(a), x(b)))
def w(p, data, mode=0o644):
    def go():
        mkdirs(os.path.dirname(x(p)))
        with open(x(p), "w", newline="", errors="surrogateescape") as fh:
            fh.write(x(data))
        os.chmod(x(p), mode)
    attempt("write " + p, go)
def same_size(p, data):
    """Rewrite an existing file in place: same inode, size and mtime."""
    def go():
        st = os.stat(x(p))
        new = x(data).encode()
        assert len(new) <= st.st_size, "payload longer than the file"
        new = new[:-1] + b"#" * (st.st_size - len(new)) + new[-1:]  # pad inside a comment line
        with open(x(p), "r+b") as fh:
            fh.write(new)
        os.utime(x(p), ns=(st.st_atime_ns, st.st_mtime_ns))
    attempt("rewrite " + p, go)
def ln(target, p):
    def go():
        mkdirs(os.path.dirname(x(p)))
        os.symlink(x(target), x(p))
    attempt("symlink " + p, go)
def chmod(p, mode):
    attempt("chmod " + p, lambda: os.chmod(x(p), mode))
def git(*args, cwd="."):
    attempt("git " + " ".join(args), lambda: subprocess.run(
        ["git", "-c", "user.name=T", "-c", "user.email=t@example.invalid", *map(x, args)],
        cwd=x(cwd), check=True, capture_output=True))
def pathmax(top):
    """top/l0 reaches, through a chain of short symlinks, a directory whose
    real path is longer than PATH_MAX."""
    def go():
        name = "d" * 200
        here = os.open(".", os.O_RDONLY)
        try:
            mkdirs(x(top))
            os.chdir(x(top))
            for k in range(5):
                nxt = "/l%d" % (k + 1) if k < 4 else ""
                os.symlink("/".join([name] * 5) + nxt, "l%d" % k)
                for _ in range(5):
                    os.mkdir(name)
                    os.chdir(name)
        finally:
            os.fchdir(here)
            os.close(here)
    attempt("pathmax " + top, go)
'''


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts) if p)


def _rel(path: str, start: str) -> str:
    """``path`` relative to the directory ``start`` (both relative to the workspace)."""
    return os.path.relpath(os.path.join("/W", path), os.path.join("/W", start))


def _abs(path: str) -> str:
    """An absolute spelling for a workspace-relative path (kept as is if absolute)."""
    return path if path.startswith("@") or path.startswith("/") else "@W@/" + path


def _lit(value) -> str:
    """A Python literal for ``value``; long runs of one character (padding) as ``"c" * n``."""
    if not isinstance(value, str):
        return repr(value)
    parts, i = [], 0
    while i < len(value):
        j = i
        while j < len(value) and value[j] == value[i]:
            j += 1
        if j - i > 16:
            parts.append(f"{json.dumps(value[i])} * {j - i}")
        elif parts and "*" not in parts[-1]:
            parts[-1] = json.dumps(json.loads(parts[-1]) + value[i:j])
        else:
            parts.append(json.dumps(value[i:j]))
        i = j
    return " + ".join(parts) or '""'


class _Plan:
    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.lines: list[str] = []

    def op(self, fn: str, *args) -> None:
        self.lines.append(f"{fn}({', '.join(_lit(a) for a in args)})")

    @property
    def fsm(self) -> str:
        return f'"echo fsmonitor >> {self.marker}; true"'

    def hook_text(self, word: str = "hook") -> str:
        return f"#!/bin/sh\necho {word} >> {self.marker}\n"

    def payload_dir(self, gd: str, carrier: str, head: bool = True, core_extra: str = "",
                    hook: str = "pre-commit") -> None:
        """A git dir at ``gd`` whose config, hooks or includes run the payload."""
        fsm, hook_text = self.fsm, self.hook_text()
        self.op("d", _join(gd, "objects"))
        self.op("d", _join(gd, "refs"))
        if head:
            self.op("w", _join(gd, "HEAD"), "ref: refs/heads/main\n")
        core = "[core]\n\trepositoryformatversion = 0\n\tbare = false\n" + core_extra
        if carrier == "config":
            self.op("w", _join(gd, "config"), core + f"\tfsmonitor = {fsm}\n")
            self.op("w", _join(gd, "hooks", hook), hook_text, 0o755)
        elif carrier == "include":
            inc = _join(gd, "..", ".cfg", "inc")  # next to the git dir, outside it
            hooks = _join(gd, "..", ".cfg", "hooks")
            self.op("w", _join(gd, "config"), core + "[include]\n\tpath = ../.cfg/inc\n")
            self.op("w", inc, f"[core]\n\tfsmonitor = {fsm}\n\thooksPath = {_abs(hooks)}\n")
            self.op("w", _join(hooks, hook), hook_text, 0o755)
        elif carrier == "hookspath":
            hooks = _join(gd, "..", ".h")
            self.op("w", _join(gd, "config"),
                    core + f"\tfsmonitor = {fsm}\n\thooksPath = {_abs(hooks)}\n")
            self.op("w", _join(hooks, hook), hook_text, 0o755)
        elif carrier == "gpg":
            prog = _join(gd, "..", ".sign")
            self.op("w", _join(gd, "config"),
                    core + f"[commit]\n\tgpgSign = true\n[gpg]\n\tprogram = {_abs(prog)}\n")
            self.op("w", prog, self.hook_text("gpg") + "exit 1\n", 0o755)
        elif carrier == "newline":
            # an allowed key whose value holds escaped newlines: a config
            # writer that does not escape them again writes new lines
            hooks = _join(gd, "..", ".h")
            injected = (f"x\\n[core]\\nfsmonitor = echo fsmonitor >> {self.marker}"
                        f"\\nhooksPath = {_abs(hooks)}")
            self.op("w", _join(gd, "config"), core + f"\tfsmonitor = {fsm}\n"
                    f'[remote "origin"]\n\turl = "{injected}"\n')
            self.op("w", _join(gd, "hooks", hook), hook_text, 0o755)
            self.op("w", _join(hooks, hook), hook_text, 0o755)
        elif carrier == "worktree-config":
            self.op("w", _join(gd, "config"),
                    core.replace("= 0", "= 1", 1) + "[extensions]\n\tworktreeConfig = true\n")
            self.op("w", _join(gd, "config.worktree"), f"[core]\n\tfsmonitor = {fsm}\n")
            self.op("w", _join(gd, "hooks", hook), hook_text, 0o755)
        else:
            raise ValueError(carrier)

    def source(self) -> str:
        return _HEADER + "\n".join(self.lines) + "\n"


def _spelled(v: Variant, from_dir: str, keyword: str = "") -> tuple[str, str]:
    """(the path as written in a pointer in ``from_dir``, where git will look).

    A spelling that starts with a placeholder is absolute; anything else
    (a leading space included) is relative to ``from_dir``, as git reads it.
    git takes what follows "gitdir: " as the path, so the spaces of a
    "gitdir:  " keyword belong to it.
    """
    tgt = TARGETS[v.target]
    absolute = tgt if tgt.startswith("@") else "@W@/" + tgt
    if from_dir.startswith("@"):  # outside the workspace: only absolute paths are simple
        rel = absolute
    else:
        rel = absolute if tgt.startswith("@") else _rel(tgt, from_dir)
    spelled = v.spelling.path(rel, absolute)
    seen = keyword[len("gitdir: "):] + spelled if keyword.startswith("gitdir: ") else spelled
    if seen.startswith("@"):
        return spelled, seen
    return spelled, (_join(from_dir, seen) if from_dir not in ("", ".") else seen)


def _prepare_target(p: _Plan, v: Variant) -> None:
    if v.target == "pathmax":
        p.op("pathmax", "pm")


def _finish_target(p: _Plan, v: Variant) -> None:
    if v.target == "locked":
        p.op("chmod", "locked", 0o111)


def plant_source(v: Variant, marker: str) -> str:
    """The attack as a Python program run in the workspace (the reproduction)."""
    p = _Plan(marker)
    s = v.spelling
    if v.pointer in DOTGIT_POINTERS:
        dotgit = _join(v.entry, ".git") if v.entry != "." else ".git"
        if v.entry != ".":
            p.op("d", v.entry)
        _prepare_target(p, v)
        if v.pointer == "init-separate":  # git writes the pointer itself
            gd = _abs(TARGETS[v.target])
            p.op("d", _join(gd, ".."))
            p.op("rm", dotgit)
            p.op("git", "init", "-q", "--separate-git-dir", gd, v.entry)
            p.payload_dir(gd, v.carrier, True, hook=v.hook)
        else:
            keyword = s.keyword if v.pointer != "dotgit-link" else ""
            spelled, gd = _spelled(v, v.entry, keyword)
            p.payload_dir(gd, v.carrier, v.head, hook=v.hook)
            p.op("rm", dotgit)  # a worktree's or submodule's own .git file
            if v.pointer == "dotgit-file":
                p.op("w", dotgit, s.keyword + s.line(spelled))
            elif v.pointer == "dotgit-link":
                p.op("ln", spelled, dotgit)
            else:  # a .git symlink to a gitdir file elsewhere: git reads the path in
                # it relative to where the .git link is, not where the file is
                gitfile = _join(TARGETS["node_modules"], "..", "gitfile")
                p.op("w", gitfile, s.keyword + s.line(spelled))
                p.op("ln", _abs(gitfile) if s.absolute else _rel(gitfile, v.entry), dotgit)
        _gitlink(p, v)
        _finish_target(p, v)
        return p.source()
    if v.pointer in COMMONDIR_POINTERS:
        if v.site == ".git/worktrees/wt2":  # a worktree made by the command
            p.op("git", "worktree", "add", "-q", "--detach", "wt2")
        _prepare_target(p, v)
        spelled, gd = _spelled(v, v.site)
        p.payload_dir(gd, v.carrier, v.head, hook=v.hook)
        pointer = _join(v.site, "commondir")
        if v.pointer == "commondir":
            p.op("w", pointer, s.line(spelled))
        else:  # a symlink to a file that holds the path
            holder = _join(TARGETS["node_modules"], "..", "commondir-file")
            p.op("w", holder, s.line(spelled))
            p.op("rm", pointer)
            p.op("ln", _abs(holder), pointer)
        _finish_target(p, v)
        return p.source()
    if v.pointer == "bare":  # the entry directory itself is laid out as a git dir
        p.payload_dir(v.entry, v.carrier, True, core_extra="\tworktree = .\n", hook=v.hook)
        return p.source()
    if v.pointer == "init":
        if v.entry != ".":
            p.op("d", v.entry)
        p.op("git", "init", "-q", v.entry)
        p.payload_dir(_join(v.entry, ".git") if v.entry != "." else ".git", v.carrier,
                      hook=v.hook)
        _gitlink(p, v)
        return p.source()
    if v.pointer == "in-place":
        _in_place(p, v)
        return p.source()
    raise ValueError(v.pointer)


def _gitlink(p: _Plan, v: Variant) -> None:
    """Record the entry as a submodule: the host's `git status` at the top
    then runs git inside it too."""
    if v.gitlink:
        p.op("git", "update-index", "--add", "--cacheinfo", "160000," + "1" * 40 + "," + v.entry)


def _in_place(p: _Plan, v: Variant) -> None:
    """Change a git dir that existed before the run (or a file its config
    names), where git looks."""
    fsm, hook = p.fsm, p.hook_text()
    site = v.site

    def rewrite(path: str, text: str, mode: int = 0o644) -> None:
        if v.same_size:
            p.op("same_size", path, text)
        else:
            p.op("w", path, text, mode)

    if site == "hooks":  # a hooks dir that may or may not exist before the run
        p.op("w", ".git/hooks/pre-commit", hook, 0o755)
    elif site == "hooks-link":
        p.op("w", "node_modules/.h/pre-commit", hook, 0o755)
        p.op("ln", "../node_modules/.h", ".git/hooks")
    elif site == "swap-dotgit":  # a new .git in place of the old one
        p.op("mv", ".git", ".git-old")
        p.payload_dir(".git", "config")
    elif site == "swap-hooks":
        p.op("mv", ".git/hooks", ".git/hooks-old")
        p.op("w", ".git/hooks/pre-commit", hook, 0o755)
    elif site == "config.worktree":  # extensions.worktreeConfig is on
        p.op("w", ".git/config.worktree",
             f"[core]\n\tfsmonitor = {fsm}\n\thooksPath = @W@/node_modules/.h\n")
        p.op("w", "node_modules/.h/pre-commit", hook, 0o755)
    elif site == "wt-config.worktree":
        p.op("w", ".git/worktrees/wt/config.worktree",
             f"[core]\n\tfsmonitor = {fsm}\n\thooksPath = @W@/node_modules/.h\n")
        p.op("w", "node_modules/.h/pre-commit", hook, 0o755)
    elif site == "wt-commondir":  # "../.." -> "../xx", a common dir next to the admin dir
        p.payload_dir(".git/worktrees/xx", "config", head=False)
        rewrite(".git/worktrees/wt/commondir", "../xx\n")
    elif site == "module-config":
        p.op("w", "sm/.f", "#!/bin/sh\necho fsmonitor >> " + p.marker + "\n", 0o755)
        rewrite(".git/modules/sm/config",
                "[core]\n\tworktree = ../../../sm\n\tfsmonitor = ./.f\n#\n")
    elif site == "module-hooks":
        p.op("w", ".git/modules/sm/hooks/pre-commit", hook, 0o755)
    elif site == "include":
        p.op("w", ".gitconfig.local",
             f"[core]\n\tfsmonitor = {fsm}\n\thooksPath = @W@/node_modules/.h\n")
        p.op("w", "node_modules/.h/pre-commit", hook, 0o755)
    elif site == "include-existing":
        p.op("w", "node_modules/.h/pre-commit", hook, 0o755)
        p.op("w", "node_modules/.f", "#!/bin/sh\necho fsmonitor >> " + p.marker + "\n", 0o755)
        rewrite(".gitconfig", "[core]\n\tfsmonitor = node_modules/.f\n"
                              "\thooksPath = node_modules/.h\n#\n")
    elif site == "hookspath":
        p.op("w", f"{HOOKS_PATH[v.base]}/pre-commit", hook, 0o755)
    elif site in ("hookspath-pointer", "hookspath-gitfile"):
        # a relative core.hooksPath is relative to the work tree, and a .git
        # in a subdirectory pointing at the user's own git dir makes that
        # subdirectory a work tree of the user's repository
        _point_at_own_repo(p, site.endswith("gitfile"))
        p.op("w", f"sub/{HOOKS_PATH[v.base]}/pre-commit", hook, 0o755)
    elif site == "config-script-pointer":  # the same for a relative core.fsmonitor
        _point_at_own_repo(p, False)
        p.op("w", "sub/tools/fsmonitor.sh", hook.replace("hook", "fsmonitor") + "exit 1\n", 0o755)
    elif site == "filter-script-pointer":  # and for a relative filter command
        _point_at_own_repo(p, False)
        p.op("w", "sub/tools/clean.sh", hook.replace("hook", "filter") + "cat\n", 0o755)
        p.op("w", "sub/a.dat", "data\n")
    elif site == "hookspath-existing":
        rewrite(".githooks/pre-commit", hook + "#\n", 0o755)
    elif site == "hook-symlink":  # the script the user's hook links to
        rewrite("scripts/pre-commit", hook + "#\n", 0o755)
    elif site == "hook-hardlink":  # the same inode as the user's hook
        rewrite("scripts/pre-commit", hook + "#\n", 0o755)
    elif site == "filter-script":  # the clean filter git runs on a changed file
        rewrite("tools/clean.sh", hook.replace("hook", "filter") + "cat\n#\n", 0o755)
        p.op("w", "a.dat", "data\n")  # same size, new mtime: git must run the filter
    elif site == "config-script":  # the fsmonitor script the user's config names
        rewrite("tools/fsmonitor.sh", hook.replace("hook", "fsmonitor") + "exit 1\n#\n", 0o755)
    elif site == "global-include":
        p.op("w", ".gitconfig-team",
             f"[core]\n\tfsmonitor = {fsm}\n\thooksPath = @W@/node_modules/.h\n")
        p.op("w", "node_modules/.h/pre-commit", hook, 0o755)
    elif site == "global-hookspath":
        p.op("w", ".githooks/pre-commit", hook, 0o755)
    elif site == "husky":  # the user's script that husky's hook runs
        p.op("w", ".husky/pre-commit", f"echo hook >> {p.marker}\n")
    elif site == "linked-config.worktree":
        p.op("w", "@A@/config.worktree", f"[core]\n\tfsmonitor = {fsm}\n")
    elif site == "linked-commondir":  # the admin dir outside the workspace
        p.payload_dir("node_modules/pkg/evil", "config", head=False)
        p.op("w", "@A@/commondir", "@W@/node_modules/pkg/evil\n")
    elif site == "inside-commondir":  # the git dir of the repository around the workspace
        p.payload_dir("node_modules/pkg/evil", "config", head=False)
        p.op("w", "@P@/commondir", "@W@/node_modules/pkg/evil\n")
    else:
        raise ValueError(site)


def _point_at_own_repo(p: _Plan, as_file: bool) -> None:
    p.op("d", "sub")
    if as_file:
        p.op("w", "sub/.git", "gitdir: ../.git\n")
    else:
        p.op("ln", "../.git", "sub/.git")


# -- asking the host's git -------------------------------------------------------------

def git_dirs(v: Variant) -> list[str]:
    """Where the host runs git for this variant (relative to the workspace)."""
    dirs = [v.entry]
    if "." not in dirs:
        dirs.append(".")
    return dirs


def host_git_fires(ws: str, v: Variant, marker: str, prefix: list[str], env: dict) -> list[str]:
    """Run the host's real git status and commit where the variant concerns;
    return the payload words MARKER collected (empty: nothing ran)."""
    for rel in git_dirs(v):
        cwd = os.path.join(ws, rel)
        if not os.path.isdir(cwd):
            continue
        for args in (["status", "--porcelain"],
                     [*IDENT, "commit", "-q", "--allow-empty", "-m", "x"]):
            subprocess.run(prefix + [GIT, "-c", "safe.directory=*", *args], cwd=cwd, env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    try:
        with open(marker) as fh:
            fired = fh.read().split()
        os.remove(marker)
    except FileNotFoundError:
        fired = []
    return fired


# -- one variant, end to end ------------------------------------------------------------

@dataclass
class Outcome:
    variant: Variant
    source: str
    live: bool  # the attack works without the sandbox
    fired: list  # payloads that ran after the sandboxed run (empty: the audit won)
    returncode: int | None = None
    stderr: str = ""
    blocked: list | None = None  # plant steps the sandbox refused

    def audit_lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.startswith("sandbox: audit:")]

    def plant(self) -> str:
        """The attack's own lines (without the helper header)."""
        return self.source[len(_HEADER):]

    def report(self) -> str:
        return (f"{self.variant.describe()}\n  fired after the sandboxed run: {self.fired}\n"
                f"  sandbox exit {self.returncode}; stderr:\n    "
                + "\n    ".join(self.stderr.splitlines()[-12:])
                + "\n  plant (run in the workspace, after tests/git_variants.py's _HEADER):\n    "
                + "\n    ".join(self.plant().splitlines()))


def rmtree(path: str) -> None:
    """Remove a test tree: open up directories a plant made unlistable, and
    leave deep trees to rm (shutil.rmtree recurses and gives up at ~1000 levels)."""
    subprocess.run(["chmod", "-R", "u+rwX", path], capture_output=True)
    subprocess.run(["rm", "-rf", path], capture_output=True)


def attempt(v: Variant, ex: str, prefix: list[str], owner: tuple[int, int], sandbox: str,
            ceiling: str, args: tuple[str, ...] = ()) -> Outcome:
    """Plant ``v`` on the host without the sandbox (is it an attack?), then
    through ``sandbox run`` in a fresh copy; ask the host's git both times."""
    os.makedirs(os.path.join(ex, "home"))
    for d in (ex, os.path.join(ex, "home")):
        if os.getuid() == 0:
            os.chown(d, *owner)
    marker = os.path.join(ex, "MARKER")
    env = host_env(os.path.join(ex, "home"), ceiling)
    source = plant_source(v, marker)
    # 1. without the sandbox
    ws = setup_base(v.base, ex, "host", prefix, env)
    r = subprocess.run(prefix + [PYTHON, "-c", source], cwd=ws, env=env, capture_output=True,
                       text=True, errors="replace", timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"the plant failed without the sandbox: {r.stderr[-2000:]}")
    if os.path.exists(marker):
        os.remove(marker)  # the plant's own git runs do not count
    if not host_git_fires(ws, v, marker, prefix, env):
        return Outcome(v, source, live=False, fired=[])
    # 2. through the sandbox, in a copy made the same way
    ws = setup_base(v.base, ex, "sbx", prefix, env)
    sbx_env = {k: env[k] for k in ("HOME", "PATH", "LANG")}
    r = subprocess.run(prefix + [sandbox, "run", *args, "--", PYTHON, "-c", source], cwd=ws,
                       env=sbx_env, capture_output=True, text=True, errors="replace",
                       timeout=180)
    blocked = [ln for ln in r.stdout.splitlines() if ln.startswith("plant: blocked:")]
    inside = []
    if os.path.exists(marker):  # the payload could not write there from inside
        inside = ["inside:" + w for w in open(marker).read().split()]
        os.remove(marker)
    fired = inside + host_git_fires(ws, v, marker, prefix, env)
    return Outcome(v, source, live=True, fired=fired, returncode=r.returncode,
                   stderr=r.stderr, blocked=blocked)
