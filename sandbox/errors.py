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


class CommandNotFound(SandboxError):
    exit_code = EXIT_NOT_FOUND
    kind = "command not found"


class CommandNotExecutable(SandboxError):
    exit_code = EXIT_CANNOT_EXECUTE
    kind = "cannot execute"


def printable(text: str) -> str:
    """File names come from the command: no control characters on the terminal."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def report(err: SandboxError) -> int:
    """Print the one-line message and return the exit status to use."""
    print(err.one_line(), file=sys.stderr)
    return err.exit_code
