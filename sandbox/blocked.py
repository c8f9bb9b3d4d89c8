"""Say what the sandbox refused during a run, from evidence it can be sure of.

The kernel refuses a write to a read-only mount (``EROFS``) or a rename
over a mount point (``EBUSY``) without telling anyone but the caller, and
the command's stdout and stderr are not ours to read (they pass through
untouched).  An unprivileged process has no way to watch another's failed
system calls (no audit log, no seccomp listener through bwrap 0.8, no
fanotify permission events; ptrace and LD_PRELOAD are out of the question).
So this module reports only what leaves evidence outside the command:

* **Replacing a protected or masked file.**  Tools change a file by writing
  a new one next to it and renaming it over the old: git writes
  ``.git/config.lock``, npm's write-file-atomic ``.npmrc.<hash>``.  The
  rename onto the read-only mount fails (``EBUSY``) and the tool removes its
  copy.  An inotify watch, set on the host before the run on each directory
  that holds such a file inside a writable root, sees the copy created and
  removed: the command tried to replace that file and could not.
* **Commit signing.**  After a failed run: a repository whose
  ``COMMIT_EDITMSG`` was written during the run with no commit recorded
  after it (``logs/HEAD`` older), while ``commit.gpgsign`` is true in a
  config file git reads: git prepared a commit and could not sign it (the
  keys and agents are hidden).

Not reported, because nothing shows them: a direct write to a read-only
path (``echo > .vscode/settings.json``, ``pip install --user``, writing a
masked ``.env`` in place), which fails with "Read-only file system"; a
replacement whose temporary name does not start with the file's name.

``plan`` runs when the plan is made (cached with it); ``Watch`` and
``signing`` on every run, so they import nothing heavy.
"""

from __future__ import annotations

import os

IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_MOVED_FROM = 0x40
IN_Q_OVERFLOW = 0x4000
MAX_WATCHES = 256
MAX_EVENT_BYTES = 1 << 20
SUMMARY_LINES = 5
# Suffixes of a replacement's temporary copy: git's lock files, common
# ".tmp"/".new", and a hex or decimal tag (write-file-atomic, many others).
NAMED_SUFFIXES = ("lock", "tmp", "new")


# --- at plan time -------------------------------------------------------------

def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def plan(policy, layout, home: str, environ: dict[str, str]) -> dict | None:
    """Which directories to watch, and where to look after a failed commit."""
    roots = layout.writable_roots
    watch: dict[str, list[list[str]]] = {}
    for paths, rule in ((layout.read_only, "protected"), (layout.masked_files, "secret")):
        for path in paths:
            if any(_within(path, r) for r in roots) and os.path.isfile(path) \
                    and not os.path.islink(path):
                watch.setdefault(os.path.dirname(path), []).append([os.path.basename(path), rule])
    git_dirs = [g for g in dict.fromkeys(layout.git_dirs + layout.git_roots) if os.path.isdir(g)]
    xdg = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    config_files = ["/etc/gitconfig", os.path.join(xdg, "git", "config"),
                    os.path.join(home, ".gitconfig")]
    hidden_keys = [d for d in (os.path.join(home, ".gnupg"), os.path.join(home, ".ssh"))
                   if d in layout.masked_dirs]
    if not watch and not git_dirs:
        return None
    return {"watch": [[d, names] for d, names in list(watch.items())[:MAX_WATCHES]],
            "git_dirs": git_dirs, "config_files": config_files, "hidden_keys": hidden_keys,
            "workspace": layout.workspace, "home": home, "profile": policy.name}


# --- during the run -------------------------------------------------------------

class Watch:
    """inotify watches on the directories of protected and masked files, set before bwrap starts.

    Closing an inotify instance that has watches waits for the kernel's
    fsnotify grace period (SRCU: 4 to 16 ms measured here), and so does the
    exit of the last process holding it.  So a small host process
    (``runner.hold``), started while the command runs (``hand_over``), takes
    over the last reference and the wait happens there, off the run's path.
    """

    def __init__(self, data: dict) -> None:
        self.fd = -1
        self.release = None  # the holder's pipe (``hand_over``), -1 if it could not start
        self.dirs: dict[int, tuple[str, dict[str, str]]] = {}
        if not data["watch"]:
            return
        from sandbox import libc

        fd = libc.function("inotify_init1")(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            return  # out of inotify instances: nothing is reported, nothing breaks
        self.fd = fd
        add = libc.function("inotify_add_watch")
        for directory, names in data["watch"]:
            wd = add(fd, os.fsencode(directory), IN_CREATE | IN_DELETE | IN_MOVED_FROM)
            if wd >= 0:
                self.dirs[wd] = (directory, dict(names))

    def hand_over(self) -> None:
        """Start the holder of the last reference now (while the command runs),
        so that ``findings`` only has to close."""
        if self.fd < 0 or self.release is not None:
            return
        from sandbox import runner

        try:
            self.release = runner.hold(self.fd)
        except OSError:
            self.release = -1

    def _close(self) -> None:
        self.hand_over()
        os.close(self.fd)  # not the last reference when cat holds one
        if self.release is not None and self.release >= 0:
            os.close(self.release)
        self.release = None
        self.fd = -1

    def findings(self) -> list[dict]:
        """Read what happened, once, after the run; close the watch."""
        if self.fd < 0:
            return []
        import struct

        data = b""
        try:
            while len(data) < MAX_EVENT_BYTES:
                data += os.read(self.fd, 65536)
        except (BlockingIOError, OSError):
            pass
        self._close()
        created: dict[tuple[int, str], int] = {}
        removed: set[tuple[int, str]] = set()
        overflow = False
        at = 0
        while at + 16 <= len(data):
            wd, mask, _cookie, size = struct.unpack_from("iIII", data, at)
            name = os.fsdecode(data[at + 16:at + 16 + size].rstrip(b"\0"))
            at += 16 + size
            if mask & IN_Q_OVERFLOW:
                overflow = True
            elif mask & IN_CREATE:
                created[(wd, name)] = created.get((wd, name), 0) + 1
            elif mask & (IN_DELETE | IN_MOVED_FROM):
                removed.add((wd, name))
        counts: dict[tuple[str, str, str], list] = {}
        for (wd, name), n in created.items():
            if (wd, name) not in removed or wd not in self.dirs:
                continue  # a new file that stayed is the command's own, not a failed copy
            directory, names = self.dirs[wd]
            target = replaced(name, names)
            if target is None:
                continue
            key = (os.path.join(directory, target), names[target], name)
            counts.setdefault(key, [0])[0] += n
        out = [{"kind": "write", "target": path, "rule": rule,
                "evidence": f"{temp} created and removed next to it", "count": n[0]}
               for (path, rule, temp), n in counts.items()]
        if overflow:
            out.append({"kind": "write", "target": None, "rule": None,
                        "evidence": "inotify queue overflowed: some attempts may be missing",
                        "count": 0})
        return out


def replaced(temp: str, names: dict[str, str]) -> str | None:
    """The watched file ``temp`` is a temporary copy of, by its name."""
    base, dot, tag = temp.rpartition(".")
    if not dot or base not in names:
        return None
    if tag in NAMED_SUFFIXES or (tag.isdigit() and len(tag) <= 20) or (
            4 <= len(tag) <= 16 and all(c in "0123456789abcdefABCDEF" for c in tag)):
        return base
    return None


# --- after the run ----------------------------------------------------------------

def _true(value: str) -> bool:
    return value.strip().lower() in ("true", "yes", "on", "1")


def _gpgsign_source(files: list[str]) -> str | None:
    """The last config file that sets commit.gpgsign, if it sets it true (includes not followed)."""
    from sandbox import gitconfig
    from sandbox.safeio import read_text

    source = None
    for path in files:
        text = read_text(os.path.realpath(path), 4 << 20)
        if text is None:
            continue
        for section, _sub, key, value in gitconfig.entries(text):
            if section == "commit" and key == "gpgsign":
                source = path if _true(value) else None
    return source


def signing(data: dict, started: float) -> list[dict]:
    """Commits that git prepared in this run and could not sign (call only after a failure)."""
    out = []
    since = int(started * 1e9)
    for gitdir in data["git_dirs"]:
        try:
            message = os.stat(os.path.join(gitdir, "COMMIT_EDITMSG")).st_mtime_ns
        except OSError:
            continue
        if message < since:
            continue
        try:
            if os.stat(os.path.join(gitdir, "logs", "HEAD")).st_mtime_ns >= message:
                continue  # a commit was recorded after the message was written
        except OSError:
            pass
        source = _gpgsign_source(data["config_files"] + [os.path.join(gitdir, "config")])
        if source is None:
            continue
        out.append({"kind": "signing", "target": gitdir, "rule": "secret",
                    "evidence": "COMMIT_EDITMSG written during the run, no commit recorded after it",
                    "config": source, "hidden": data["hidden_keys"], "count": 1})
    return out


def _shown(path: str, data: dict) -> str:
    workspace, home = data["workspace"], data["home"]
    if _within(path, workspace) and path != workspace:
        return os.path.relpath(path, workspace)
    if _within(path, home):
        return "~" + path[len(home):]
    return path


def summary(findings: list[dict], data: dict) -> list[str]:
    """One ``sandbox:`` line per finding (bounded), in the proxy summary's style."""
    from sandbox.errors import printable

    lines = []
    for f in findings[:SUMMARY_LINES]:
        if f["target"] is None:
            lines.append(f"sandbox: warning: {f['evidence']}")
            continue
        where = printable(_shown(f["target"], data), 200)
        times = f" ({f['count']} times)" if f.get("count", 1) > 1 else ""
        if f["kind"] == "signing":
            repo = os.path.dirname(f["target"]) if f["target"].endswith("/.git") else f["target"]
            repo = "the workspace" if repo == data["workspace"] else printable(_shown(repo, data))
            lines.append(f"sandbox: blocked commit signing in {repo}: commit.gpgsign is true "
                         f"({printable(_shown(f['config'], data))}) and signing keys and agents "
                         "are hidden in the sandbox; commit with "
                         "'git -c commit.gpgsign=false commit', or sign on the host")
        elif f["rule"] == "protected":
            git_config = os.path.basename(f["target"]) == "config" and "/.git" in f["target"]
            hint = ("git config --local, git remote add and the like: run them on the host"
                    if git_config else "change it on the host")
            lines.append(f"sandbox: blocked a write to {where}{times} - protected path, "
                         f"read-only in the sandbox ({hint})")
        else:
            lines.append(f"sandbox: blocked a write to {where}{times} - a secret, masked "
                         "(empty and read-only) in the sandbox")
    if len(findings) > SUMMARY_LINES:
        lines.append(f"sandbox: ... and {len(findings) - SUMMARY_LINES} more; see --report")
    return lines
