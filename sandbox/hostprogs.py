"""Which programs ``sandbox`` starts on the host, and what they inherit.

bwrap runs on the host, unconfined, until it has built the sandbox; the
ctty helper (util-linux ``setsid``) is named in bwrap's argv; in the egress
bridge's ``bwrap`` mode a Python launcher runs between two bwraps.  If any of
them could be a file the sandboxed command can write, or could load one, the
command would run code on the host at the next start.  So:

* **Where they come from.**  Never ``PATH``: an activated virtualenv inside
  the workspace puts ``.venv/bin`` first, and the command can write there.
  A program is looked up only in ``SYSTEM_DIRS`` (the distribution's own
  directories, writable by root alone), or taken from an explicit setting
  (``SANDBOX_BWRAP``) that is an absolute path.  ``/usr/local/bin`` is not
  searched: it is the local administrator's, and on many hosts it is not
  root's alone (Debian's ``staff`` group may write it, ``pip install`` as
  root drops console scripts there); a bwrap installed there is used through
  ``SANDBOX_BWRAP=/usr/local/bin/bwrap``, a choice the user made.  Either
  way a program is refused when its path, or any symlink met on the way
  to the file (``places``), lies inside a writable root of the run: the
  command could replace it.
  The launcher is the interpreter already running ``sandbox``
  (``sys.executable``), which ``selfguard`` keeps read-only.
* **What they inherit.**  The loader and interpreter start-up variables
  (``LOADER_VARS``: ``LD_PRELOAD``, ``LD_LIBRARY_PATH``, ``GCONV_PATH``,
  ``BASH_ENV``, ``PYTHONPATH``...) would make bwrap (or the launcher) load a
  library or run a script before anything is confined.  ``split_env`` takes
  them out of the environment those programs are started with; the runner
  hands them to bwrap as ``--setenv NAME VALUE`` pairs through an ``--args``
  descriptor (so no value shows in ``ps``), and bwrap sets them only for the
  command it execs.  The command gets exactly the environment it would have
  had; bwrap's own loader never sees them.

Standard library only, and cheap: the runner calls ``split_env`` on every
start, on the cached fast path too.
"""

from __future__ import annotations

import os

from sandbox.errors import SetupError

# Searched in this order; nothing else is.
SYSTEM_DIRS = ("/usr/bin", "/bin", "/usr/sbin", "/sbin")

# Read by the dynamic loader or libc of any program, or by an interpreter at
# start-up.  The exact names are glibc's own list of variables it removes
# before running a setuid program (``unsecvars.h``) but TMPDIR (the profile
# sets it to /tmp, and nothing started on the host makes temporary files
# through it), plus the shells' start-up files and tracing; the prefixes
# cover the rest of the loader's ``LD_`` family, the malloc debugging hooks,
# every ``PYTHON`` variable and bash's exported functions.
LOADER_VARS = frozenset({
    "GCONV_PATH", "GETCONF_DIR", "GLIBC_TUNABLES", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH",
    "NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TZDIR",
    "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4",
})
LOADER_PREFIXES = ("LD_", "MALLOC_", "PYTHON", "BASH_FUNC_")


def inside(path: str, roots) -> str | None:
    """The writable root that holds ``path`` (or is it), if any."""
    for root in roots:
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return root
    return None


def places(path: str) -> list[str]:
    """Every real place the lookup of ``path`` passes through: each symlink
    met on the way (where it lies, after the links before it) and the file.

    Replacing any of them changes what runs, so none may be writable by the
    command; the link's target alone (``realpath``) would miss a link inside
    the workspace that points out of it.
    """
    found: list[str] = []
    todo = [p for p in path.split("/") if p]
    cur = "/"
    for _ in range(256):  # bounded: a symlink loop ends here
        if not todo:
            break
        part = todo.pop(0)
        if part == ".":
            continue
        if part == "..":
            cur = os.path.dirname(cur)
            continue
        nxt = os.path.join(cur, part)
        if os.path.islink(nxt):
            found.append(nxt)
            target = os.readlink(nxt)
            todo = [p for p in target.split("/") if p] + todo
            if target.startswith("/"):
                cur = "/"
        else:
            cur = nxt
    found.append(cur)
    return found


def _refuse_writable(name: str, given: str, roots, how: str) -> None:
    for path in places(given):
        root = inside(path, roots)
        if root is not None:
            where = given if path == given else f"{given} (through {path})"
            raise SetupError(
                f"{name} at {where} ({how}) lies inside the writable root {root}: the command "
                "could replace it and have it run on the host; the command was not run",
                hint=f"install {name} from your distribution (it lands in /usr/bin), or point "
                     f"SANDBOX_BWRAP at a copy outside the workspace and every --allow-write path"
                     if name == "bwrap" else
                     f"install {name} from your distribution (it lands in /usr/bin)",
                     code="host_program_unsafe")


def _usable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find(name: str, roots) -> str | None:
    """``name`` from the system directories, or None if absent.

    Raises SetupError when the program found lies inside a writable
    root (a workspace or --allow-write under /usr, say).
    """
    for directory in SYSTEM_DIRS:
        path = f"{directory}/{name}"
        if _usable(path):
            _refuse_writable(name, path, roots, "found in " + directory)
            return path
    return None


def explicit(name: str, var: str, value: str, roots) -> str:
    """The program an environment variable names, checked like a found one."""
    if not os.path.isabs(value):
        # relative to the current directory, which is usually the workspace
        raise SetupError(f"{var}={value} is not an absolute path; the command was not run",
                         hint=f"give the full path of {name}, e.g. {var}=/usr/bin/{name}",
                         code="bwrap_missing")
    if not _usable(value):
        raise SetupError(f"{var}={value} is not an executable file; the command was not run",
                         hint=f"point {var} at an installed {name}, or unset it to use the one "
                              "in /usr/bin (install it with your distribution's package manager)",
                         code="bwrap_missing")
    _refuse_writable(name, value, roots, "from " + var)
    return value


def is_loader_var(name: str) -> bool:
    return name in LOADER_VARS or name.startswith(LOADER_PREFIXES)


def split_env(env: dict[str, str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(the environment for programs on the host, the loader variables taken out)."""
    moved = [(k, v) for k, v in env.items() if is_loader_var(k)]
    if not moved:
        return env, moved
    return {k: v for k, v in env.items() if not is_loader_var(k)}, moved


def setenv_args(moved: list[tuple[str, str]]) -> bytes:
    """bwrap ``--args`` data (NUL-separated) that sets ``moved`` for the command only.

    bwrap applies ``--setenv`` to its own environment while it parses its
    arguments, long after its loader ran, and execs the command with it.
    """
    out = []
    for name, value in moved:
        out += [b"--setenv", os.fsencode(name), os.fsencode(value)]
    return b"\0".join(out) + b"\0"
