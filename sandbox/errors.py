"""The one error family of the tool, and how it is shown.

Every failure that is the tool's own (a bad profile, a refused workspace, a
sandbox that cannot be set up) is a ``SandboxError``.  The CLI edge turns it
into one line on stderr and exit status 125, so a model or a CI log can read
it without a traceback.  ``hint`` says how to fix it.
"""

from __future__ import annotations

import sys

# The tool's own failures use 125 so they never collide with the command's
# own status, nor with 126/127 (cannot execute / not found) from the shell.
EXIT_TOOL_ERROR = 125
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127


class SandboxError(Exception):
    """A failure of the tool itself; the command did not run."""

    exit_code = EXIT_TOOL_ERROR
    kind = "error"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = f"sandbox: {self.kind}: {self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text.replace("\n", " ")


class ProfileError(SandboxError):
    """A profile could not be read or does not validate."""

    kind = "profile error"

    def __init__(self, source: str, message: str, *, key: str | None = None,
                 line: int | None = None, hint: str | None = None) -> None:
        where = source
        if line is not None:
            where += f":{line}"
        if key:
            where += f": key '{key}'"
        super().__init__(f"{where}: {message}", hint)
        self.source = source
        self.key = key
        self.line = line


class UsageError(SandboxError):
    """A bad option value: refused workspace, bad --allow-write, ..."""

    kind = "usage error"


class SetupError(SandboxError):
    """The sandbox could not be set up (bwrap missing, namespaces blocked...)."""

    kind = "setup error"


class UsernsBlocked(SetupError):
    """bwrap cannot make user namespaces here (``cause``: ``sandbox.hostprobe``'s code)."""

    code = "userns_blocked"

    def __init__(self, cause: str, detail: str, hint: str) -> None:
        super().__init__(f"user namespaces are blocked ({cause}): {detail}; "
                         "the command was not run", hint)
        self.cause = cause


class BridgeError(SetupError):
    """The egress proxy's network namespace could not be made (``stage``: which step)."""

    def __init__(self, message: str, stage: int, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.stage = stage


class CommandNotFound(SandboxError):
    exit_code = EXIT_NOT_FOUND
    kind = "command not found"


class CommandNotExecutable(SandboxError):
    exit_code = EXIT_CANNOT_EXECUTE
    kind = "cannot execute"


def printable(text: str, limit: int | None = None, ascii_only: bool = False) -> str:
    """Text the command chose (file names, request targets): no control characters
    on the terminal, at most ``limit`` characters; ``ascii_only`` for HTTP headers."""
    if limit is not None:
        text = text[:limit + 1]

    def keep(c: str) -> bool:
        return " " <= c <= "~" if ascii_only else c.isprintable()

    out = "".join(c if keep(c) else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
                  for c in text)
    return out if limit is None or len(out) <= limit else out[:limit - 3] + "..."


def report(err: SandboxError) -> int:
    """Print the one-line message and return the exit status to use."""
    print(err.one_line(), file=sys.stderr)
    return err.exit_code
