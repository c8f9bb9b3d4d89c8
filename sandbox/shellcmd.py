"""``sandbox sh 'COMMAND STRING'``: run one shell command string inside the sandbox.

Coding agents hold a shell *string* (``make test && echo ok``), not an argv.
``sandbox sh`` hands that string, unchanged, as the single word after
``-c --`` to a shell found at a fixed absolute path: bash, or sh where bash is absent.
Nothing on our side splits, joins or re-quotes it, so heredocs, quotes and
newlines reach the shell byte for byte.

Syntax (the run options are exactly ``sandbox run``'s)::

    sandbox sh [RUN OPTIONS] 'STRING'
    sandbox sh [RUN OPTIONS] -- 'STRING'      (needed when STRING starts with '-')

Standard library only: this is on the fast path, next to ``parse_run``.
"""

from __future__ import annotations

import os

# Looked up in fixed places, never on PATH: the command's workspace may put
# its own ``bash`` first on PATH (an activated virtualenv).  Inside the
# sandbox these directories are the host's, read-only.
SHELLS = ("/usr/bin/bash", "/bin/bash", "/usr/bin/sh", "/bin/sh")


def shell_path() -> str:
    """The shell that runs the string: the first of ``SHELLS`` that is executable."""
    for path in SHELLS:
        if os.access(path, os.X_OK) and os.path.isfile(path):
            return path
    return SHELLS[-1]  # not there either: the run fails with "not found" (127)


def argv(string: str) -> tuple[str, str, str, str]:
    """The command ``sandbox run`` gets for ``sandbox sh STRING``.

    ``--`` ends the shell's own options: without it bash and dash read a
    string that starts with ``-`` (``-n``, ``--version``) as options.
    """
    return (shell_path(), "-c", "--", string)


def as_run_args(args: list[str]) -> list[str] | None:
    """``sh`` arguments rewritten as ``run`` arguments (options, ``--``, the string).

    Without ``--`` the last argument is the string and everything before it
    options; a last argument that looks like an option (a forgotten string)
    gives None, and typer then prints the usage error.
    """
    if "--" in args:
        return list(args)
    if not args or args[-1].startswith("-"):
        return None
    return [*args[:-1], "--", args[-1]]
