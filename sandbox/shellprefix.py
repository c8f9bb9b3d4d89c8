"""``sandbox-shell-prefix``: a one-word command for ``CLAUDE_CODE_SHELL_PREFIX``.

Claude Code runs every shell command it spawns (Bash tool calls, hook
commands, stdio MCP server start-up commands) as ``PREFIX <command>``: the
whole command string it built (snapshot sourcing, ``eval`` of the model's
command, its ``pwd`` bookkeeping) arrives as one argument, shell-quoted by
Claude Code; an MCP server's command and arguments arrive as separate words.
So:

* one argument: ``sandbox sh -- ARG`` (bash -c inside the sandbox);
* several: ``sandbox run -- ARG...`` (the words as an argv, not re-joined).

The workspace is the current directory, as for ``sandbox run``.  Both take
the fast path of ``sandbox.__main__``.
"""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if not args:
        print("sandbox: usage error: sandbox-shell-prefix 'COMMAND STRING' | COMMAND ARG... "
              "(set CLAUDE_CODE_SHELL_PREFIX to its absolute path; see agents.md)",
              file=sys.stderr)
        sys.exit(125)
    sys.argv[1:] = ["sh", "--", args[0]] if len(args) == 1 else ["run", "--", *args]
    from sandbox.__main__ import main as sandbox_main

    sandbox_main()


if __name__ == "__main__":
    main()
