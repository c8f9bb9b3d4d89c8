"""Pointer-file and layout variants for the differential git tests.

A *variant* is one way a sandboxed command could leave a repository layout
that makes the host's git run a program later: a ``.git`` file or symlink,
a ``commondir`` pointer, a bare-looking directory, a new repository, or an
in-place change to a git dir that existed before the run.  Each variant
plants two payloads that append to MARKER when they run: a
``core.fsmonitor`` command (``git status``) and a ``pre-commit`` hook
(``git commit``), or, for the ``gpg`` carrier, a ``gpg.program``.

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

# the host layout that exists before the run
BASES = ("plain", "repo", "repo-nohooks", "worktree", "submodule", "linked", "include",
         "hookspath")
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
    "dotgit-objects": ".git/objects/ev",
    "dotgit-modules": ".git/modules/evil",
    "dotgit-worktrees": ".git/worktrees/evil",
    "cache": "@C@/evil",
}
# what carries the payload inside the planted git dir
CARRIERS = ("config", "include", "hookspath", "gpg", "worktree-config")
# how the path inside a pointer is written
LEADS = ("", " ")
TRAILS = ("", " ", "/")
EOLS = ("\n", "\r\n", "", "\n\n", "\r", "\r\r\n")
KEYWORDS = ("gitdir: ", "gitdir:", "gitdir:\t", "Gitdir: ", " gitdir: ", "gitdir:  ")


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
    site: str = ""  # for commondir / in-place: which git dir is changed
    head: bool = True  # does the planted git dir have HEAD (a common dir needs none)

    def describe(self) -> str:
        s = self.spelling
        parts = [f"base={self.base}", f"pointer={self.pointer}", f"entry={self.entry}"]
        if self.pointer in DOTGIT_POINTERS + COMMONDIR_POINTERS:
            parts += [f"target={self.target}", f"spelling={s!r}"]
        if self.site:
            parts.append(f"site={self.site}")
        if not self.head:
            parts.append("no HEAD")
        parts.append(f"carrier={self.carrier}")
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


def setup_base(base: str, ex: str, ws_name: str, prefix: list[str], env: dict) -> str:
    """Make the layout ``base`` for workspace ``ex/ws_name``; return the workspace path.

    Run as the user who will run the sandbox (``prefix``), so ownership is real.
    """
    ws = os.path.join(ex, ws_name)
    git = lambda cwd, *a: _git(prefix, env, cwd, *a)  # noqa: E731
    if base == "linked":  # the workspace is a linked worktree of a repository outside it
        main = os.path.join(ex, ws_name + "-main")
        subprocess.run(prefix + ["mkdir", "-p", main], check=True)
        git(main, "init", "-q", "-b", "main")
        git(main, "commit", "-q", "--allow-empty", "-m", "init")
        git(main, "worktree", "add", "-q", ws, "-b", "topic")
        return ws
    subprocess.run(prefix + ["mkdir", "-p", ws], check=True)
    if base == "plain":
        return ws
    if base == "repo-nohooks":
        git(ws, "init", "-q", "-b", "main", "--template=")
    else:
        git(ws, "init", "-q", "-b", "main")
    git(ws, "commit", "-q", "--allow-empty", "-m", "init")
    if base == "worktree":
        # a worktree made on the host, and per-worktree config in use (as
        # `git sparse-checkout` sets it up)
        git(ws, "config", "core.repositoryformatversion", "1")
        git(ws, "config", "extensions.worktreeConfig", "true")
        git(ws, "worktree", "add", "-q", "wt", "-b", "wt")
    elif base == "submodule":
        src = os.path.join(ex, ws_name + "-src")
        subprocess.run(prefix + ["mkdir", "-p", src], check=True)
        git(src, "init", "-q", "-b", "main")
        git(src, "commit", "-q", "--allow-empty", "-m", "sub")
        git(ws, "submodule", "add", "-q", src, "sm")
        git(ws, "commit", "-q", "-m", "add sm")
    elif base == "include":
        # a common pattern: a local include the user has not written yet
        git(ws, "config", "include.path", "../.gitconfig.local")
    elif base == "hookspath":
        git(ws, "config", "core.hooksPath", ".githooks")
    return ws


# -- the attack, as a program ---------------------------------------------------------

_HEADER = '''\
import os, subprocess, sys
W = os.getcwd()
C = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.dirname(W), "hostcache")
A = ""  # the admin dir of a workspace that is a linked worktree
if os.path.isfile(".git"):
    A = open(".git").read().split("gitdir: ", 1)[-1].strip()
def x(s):
    return s.replace("@W@", W).replace("@C@", C).replace("@A@", A)
def attempt(what, fn):
    try:
        fn()
    except (OSError, subprocess.CalledProcessError) as exc:
        print("plant: blocked:", what, exc)
def d(p):
    attempt("mkdir " + p, lambda: os.makedirs(x(p), exist_ok=True))
def rm(p):
    attempt("rm " + p, lambda: os.remove(x(p)) if os.path.lexists(x(p)) else None)
def w(p, data, mode=0o644):
    def go():
        os.makedirs(os.path.dirname(x(p)) or ".", exist_ok=True)
        with open(x(p), "w", newline="") as fh:
            fh.write(x(data))
        os.chmod(x(p), mode)
    attempt("write " + p, go)
def ln(target, p):
    def go():
        os.makedirs(os.path.dirname(x(p)) or ".", exist_ok=True)
        os.symlink(x(target), x(p))
    attempt("symlink " + p, go)
def git(*args, cwd="."):
    attempt("git " + " ".join(args), lambda: subprocess.run(
        ["git", "-c", "user.name=T", "-c", "user.email=t@example.invalid", *map(x, args)],
        cwd=x(cwd), check=True, capture_output=True))
'''


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts) if p)


def _rel(path: str, start: str) -> str:
    """``path`` relative to the directory ``start`` (both relative to the workspace)."""
    return os.path.relpath(os.path.join("/W", path), os.path.join("/W", start))


class _Plan:
    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.lines: list[str] = []

    def op(self, fn: str, *args) -> None:
        self.lines.append(f"{fn}({', '.join(_lit(a) for a in args)})")

    def payload_dir(self, gd: str, carrier: str, head: bool = True, core_extra: str = "") -> None:
        """A git dir at ``gd`` whose config, hooks or includes run the payload."""
        m = self.marker
        fsm = f'"echo fsmonitor >> {m}; true"'
        hook = f"#!/bin/sh\necho hook >> {m}\n"
        self.op("d", _join(gd, "objects"))
        self.op("d", _join(gd, "refs"))
        if head:
            self.op("w", _join(gd, "HEAD"), "ref: refs/heads/main\n")
        core = "[core]\n\trepositoryformatversion = 0\n\tbare = false\n" + core_extra
        if carrier == "config":
            self.op("w", _join(gd, "config"), core + f"\tfsmonitor = {fsm}\n")
            self.op("w", _join(gd, "hooks", "pre-commit"), hook, 0o755)
        elif carrier == "include":
            inc = _join(gd, "..", ".cfg", "inc")  # next to the git dir, outside it
            hooks = _join(gd, "..", ".cfg", "hooks")
            self.op("w", _join(gd, "config"), core + "[include]\n\tpath = ../.cfg/inc\n")
            self.op("w", inc, f"[core]\n\tfsmonitor = {fsm}\n\thooksPath = {_abs(hooks)}\n")
            self.op("w", _join(hooks, "pre-commit"), hook, 0o755)
        elif carrier == "hookspath":
            hooks = _join(gd, "..", ".h")
            self.op("w", _join(gd, "config"),
                    core + f"\tfsmonitor = {fsm}\n\thooksPath = {_abs(hooks)}\n")
            self.op("w", _join(hooks, "pre-commit"), hook, 0o755)
        elif carrier == "gpg":
            prog = _join(gd, "..", ".sign")
            self.op("w", _join(gd, "config"),
                    core + f"[commit]\n\tgpgSign = true\n[gpg]\n\tprogram = {_abs(prog)}\n")
            self.op("w", prog, f"#!/bin/sh\necho gpg >> {m}\nexit 1\n", 0o755)
        elif carrier == "worktree-config":
            self.op("w", _join(gd, "config"),
                    core.replace("= 0", "= 1", 1) + "[extensions]\n\tworktreeConfig = true\n")
            self.op("w", _join(gd, "config.worktree"), f"[core]\n\tfsmonitor = {fsm}\n")
            self.op("w", _join(gd, "hooks", "pre-commit"), hook, 0o755)
        else:
            raise ValueError(carrier)

    def source(self) -> str:
        return _HEADER + "\n".join(self.lines) + "\n"


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
        elif parts and not parts[-1].endswith("]") and "*" not in parts[-1]:
            parts[-1] = json.dumps(json.loads(parts[-1]) + value[i:j])
        else:
            parts.append(json.dumps(value[i:j]))
        i = j
    return " + ".join(parts) or '""'



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


def plant_source(v: Variant, marker: str) -> str:
    """The attack as a Python program run in the workspace (the reproduction)."""
    p = _Plan(marker)
    s = v.spelling
    if v.pointer in DOTGIT_POINTERS:
        dotgit = _join(v.entry, ".git") if v.entry != "." else ".git"
        if v.entry != ".":
            p.op("d", v.entry)
        if v.pointer == "init-separate":  # git writes the pointer itself
            gd = _abs(TARGETS[v.target])
            p.op("d", _join(gd, ".."))
            p.op("rm", dotgit)
            p.op("git", "init", "-q", "--separate-git-dir", gd, v.entry)
            p.payload_dir(gd, v.carrier, True)
            return p.source()
        keyword = s.keyword if v.pointer != "dotgit-link" else ""
        spelled, gd = _spelled(v, v.entry, keyword)
        p.payload_dir(gd, v.carrier, v.head)
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
        return p.source()
    if v.pointer in COMMONDIR_POINTERS:
        spelled, gd = _spelled(v, v.site)
        p.payload_dir(gd, v.carrier, v.head)
        pointer = _join(v.site, "commondir")
        if v.pointer == "commondir":
            p.op("w", pointer, s.line(spelled))
        else:  # a symlink to a file that holds the path
            holder = _join(TARGETS["node_modules"], "..", "commondir-file")
            p.op("w", holder, s.line(spelled))
            p.op("rm", pointer)
            p.op("ln", _abs(holder), pointer)
        return p.source()
    if v.pointer == "bare":  # the entry directory itself is laid out as a git dir
        p.payload_dir(v.entry, v.carrier, True, core_extra="\tworktree = .\n")
        return p.source()
    if v.pointer == "init":
        if v.entry != ".":
            p.op("d", v.entry)
        p.op("git", "init", "-q", v.entry)
        p.payload_dir(_join(v.entry, ".git") if v.entry != "." else ".git", v.carrier)
        return p.source()
    if v.pointer == "in-place":
        _in_place(p, v)
        return p.source()
    raise ValueError(v.pointer)


def _in_place(p: _Plan, v: Variant) -> None:
    """Change a git dir that existed before the run, where git looks."""
    m = p.marker
    fsm = f'"echo fsmonitor >> {m}; true"'
    hook = f"#!/bin/sh\necho hook >> {m}\n"
    site = v.site
    if site == "hooks":  # a hooks dir that may or may not exist before the run
        p.op("w", ".git/hooks/pre-commit", hook, 0o755)
    elif site == "config.worktree":  # extensions.worktreeConfig is on
        p.op("w", ".git/config.worktree",
             f"[core]\n\tfsmonitor = {fsm}\n\thooksPath = @W@/node_modules/.h\n")
        p.op("w", "node_modules/.h/pre-commit", hook, 0o755)
    elif site == "wt-config.worktree":
        p.op("w", ".git/worktrees/wt/config.worktree",
             f"[core]\n\tfsmonitor = {fsm}\n\thooksPath = @W@/node_modules/.h\n")
        p.op("w", "node_modules/.h/pre-commit", hook, 0o755)
    elif site == "wt-hooks":  # git reads hooks from the common dir, not here
        p.op("w", ".git/worktrees/wt/hooks/pre-commit", hook, 0o755)
    elif site == "module-config":
        p.op("w", ".git/modules/sm/config",
             "[core]\n\trepositoryformatversion = 0\n\tbare = false\n\tworktree = ../../../sm\n"
             f"\tfsmonitor = {fsm}\n")
        p.op("w", ".git/modules/sm/hooks/pre-commit", hook, 0o755)
    elif site == "module-hooks":
        p.op("w", ".git/modules/sm/hooks/pre-commit", hook, 0o755)
    elif site == "include":
        p.op("w", ".gitconfig.local",
             f"[core]\n\tfsmonitor = {fsm}\n\thooksPath = @W@/node_modules/.h\n")
        p.op("w", "node_modules/.h/pre-commit", hook, 0o755)
    elif site == "hookspath":
        p.op("w", ".githooks/pre-commit", hook, 0o755)
    elif site == "linked-config.worktree":
        p.op("w", "@A@/config.worktree", f"[core]\n\tfsmonitor = {fsm}\n")
    elif site == "linked-commondir":  # the admin dir outside the workspace
        p.payload_dir("node_modules/pkg/evil", "config", head=False)
        p.op("w", "@A@/commondir", "@W@/node_modules/pkg/evil\n")
    else:
        raise ValueError(site)


# -- asking the host's git -------------------------------------------------------------

def git_dirs(v: Variant) -> list[str]:
    """Where the host runs git for this variant (relative to the workspace)."""
    dirs = [v.entry]
    if "." not in dirs:
        dirs.append(".")
    return dirs


def host_git_fires(ws: str, v: Variant, marker: str, prefix: list[str], env: dict) -> list[str]:
    """Run the host's real git status and commit where the variant concerns;
    return the payload lines MARKER collected (empty: nothing ran)."""
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

    def report(self) -> str:
        return (f"{self.variant.describe()}\n  fired after the sandboxed run: {self.fired}\n"
                f"  sandbox exit {self.returncode}; stderr:\n    "
                + "\n    ".join(self.stderr.splitlines()[-12:])
                + "\n  plant (run in the workspace):\n    "
                + "\n    ".join(self.source.splitlines()[len(_HEADER.splitlines()):]))


def attempt(v: Variant, ex: str, prefix: list[str], owner: tuple[int, int], sandbox: str,
            ceiling: str) -> Outcome:
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
    subprocess.run(prefix + [PYTHON, "-c", source], cwd=ws, env=env, capture_output=True,
                   timeout=60, check=True)
    if os.path.exists(marker):
        os.remove(marker)  # the plant's own git runs do not count
    if not host_git_fires(ws, v, marker, prefix, env):
        return Outcome(v, source, live=False, fired=[])
    # 2. through the sandbox, in a copy made the same way
    ws = setup_base(v.base, ex, "sbx", prefix, env)
    sbx_env = {k: env[k] for k in ("HOME", "PATH", "LANG")}
    r = subprocess.run(prefix + [sandbox, "run", "--", PYTHON, "-c", source], cwd=ws,
                       env=sbx_env, capture_output=True, text=True, timeout=120)
    blocked = [ln for ln in r.stdout.splitlines() if ln.startswith("plant: blocked:")]
    inside = []
    if os.path.exists(marker):  # the payload could not write there from inside
        inside = ["inside:" + x for x in open(marker).read().split()]
        os.remove(marker)
    fired = inside + host_git_fires(ws, v, marker, prefix, env)
    return Outcome(v, source, live=True, fired=fired, returncode=r.returncode,
                   stderr=r.stderr, blocked=blocked)
