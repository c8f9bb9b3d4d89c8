"""Check, before starting bwrap, that the command exists inside (126/127).

bwrap reports an exec failure the same way as a setup failure (exit 1, no
exit-code record), so we look the command up ourselves, with the sandbox's
PATH, the way a shell would.  Kept free of heavy imports: it runs on the
cached fast path.
"""

from __future__ import annotations

import os

from sandbox.errors import CommandNotExecutable, CommandNotFound, UsageError


def is_within(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return path == root or root == "/" or path.startswith(root + "/")


def which(name: str, path_var: str) -> str | None:
    for entry in path_var.split(os.pathsep):
        candidate = os.path.join(entry or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    for entry in path_var.split(os.pathsep):  # exists but not executable: 126
        candidate = os.path.join(entry or ".", name)
        if os.path.lexists(candidate):
            return candidate
    return None


def resolve(command, env: dict[str, str], cwd: str, hidden, exposed) -> str:
    """Return the path that will run; raise CommandNotFound / CommandNotExecutable."""
    if not command:
        raise UsageError("no command given", hint="usage: sandbox run [OPTIONS] -- COMMAND [ARGS...]")
    name = command[0]
    if "/" in name:
        path = os.path.normpath(os.path.join(cwd, name))
    else:
        path = which(name, env.get("PATH", os.defpath)) or ""
        if not path:
            raise CommandNotFound(f"{name}: not found in the sandbox's PATH")
    if not os.path.lexists(path):
        raise CommandNotFound(f"{name}: no such file")
    real = os.path.realpath(path)
    if any(is_within(real, d) for d in hidden) and not any(is_within(real, r) for r in exposed):
        raise CommandNotFound(f"{name}: {real} is hidden inside the sandbox",
                              hint="the host's /tmp and /run are private; put it in the workspace")
    if os.path.isdir(real) or not os.access(real, os.X_OK):
        raise CommandNotExecutable(f"{name}: permission denied or not a regular executable")
    return path
