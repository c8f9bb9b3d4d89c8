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
    """A failure of the tool itself; the command did not run.

    ``code`` is the stable machine code (one of ``CODES``, below) that the
    report's ``error.code`` and the Python API carry; a raise site may give a
    more precise one than its class's (``code="bwrap_missing"``).
    """

    exit_code = EXIT_TOOL_ERROR
    kind = "error"
    code = "internal_error"
    result = None  # the Python API's Result holding the error report, when there is one

    def __init__(self, message: str, hint: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def one_line(self) -> str:
        text = f"sandbox: {self.kind}: {self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text.replace("\n", " ")


class ProfileError(SandboxError):
    """A profile could not be read or does not validate."""

    kind = "profile error"
    code = "profile_invalid"

    def __init__(self, source: str, message: str, *, key: str | None = None,
                 line: int | None = None, hint: str | None = None,
                 code: str | None = None) -> None:
        where = source
        if line is not None:
            where += f":{line}"
        if key:
            where += f": key '{key}'"
        super().__init__(f"{where}: {message}", hint, code=code)
        self.source = source
        self.key = key
        self.line = line


class UsageError(SandboxError):
    """A bad option value: refused workspace, bad --allow-write, ..."""

    kind = "usage error"
    code = "usage_invalid"


class SetupError(SandboxError):
    """The sandbox could not be set up (bwrap missing, namespaces blocked...)."""

    kind = "setup error"
    code = "setup_failed"


class UsernsBlocked(SetupError):
    """bwrap cannot make user namespaces here (``cause``: ``sandbox.linux.hostprobe``'s code)."""

    code = "userns_blocked"

    def __init__(self, cause: str, detail: str, hint: str) -> None:
        super().__init__(f"user namespaces are blocked ({cause}): {detail}; "
                         "the command was not run", hint)
        self.cause = cause


class BridgeError(SetupError):
    """The egress proxy's network namespace could not be made (``stage``: which step)."""

    code = "network_setup_failed"

    def __init__(self, message: str, stage: int, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.stage = stage


class CommandNotFound(SandboxError):
    exit_code = EXIT_NOT_FOUND
    kind = "command not found"
    code = "command_not_found"


class CommandNotExecutable(SandboxError):
    exit_code = EXIT_CANNOT_EXECUTE
    kind = "cannot execute"
    code = "command_not_executable"


# Every machine code an error may carry (report ``error.code``, the Python
# API's ``SandboxError.code``), and what it means.  Stable: a code is never
# renamed or reused; new ones may be added (machine-output.md in the docs).
CODES = {
    "usage_invalid": "a bad option, argument or environment variable value",
    "report_target_invalid": "--report/--report-fd names nothing the report may be written to",
    "workspace_invalid": "the workspace or a writable path is refused (system directory, home, "
                         "secret, missing, protected, ...)",
    "install_writable": "the sandbox's own code or import path would be writable by the command",
    "profile_invalid": "a profile does not parse or validate (unknown key, wrong type, cycle, ...)",
    "profile_not_found": "no profile by that name or path",
    "setup_failed": "the sandbox could not be set up for another reason (see the message)",
    "bwrap_missing": "bubblewrap was not found, or SANDBOX_BWRAP is not usable",
    "host_program_unsafe": "a program run on the host lies where the command could replace it",
    "userns_blocked": "bwrap cannot create namespaces (AppArmor, a container's seccomp profile)",
    "bwrap_failed": "bwrap could not set up the mounts, or was killed before the command started",
    "nested_sandbox": "started inside a sandbox, which cannot start another",
    "network_setup_failed": "the egress proxy or its network namespace could not be started",
    "state_dir_invalid": "the state directory (or the home holding it) is missing or unusable",
    "audit_pending": "an earlier run left something its persistence audit could not neutralise",
    "seccomp_unavailable": "the seccomp filter cannot be built on this host",
    "plan_too_large": "the plan needs more mounts than bwrap accepts",
    "internal_error": "a bug in sandbox; the command was not run",
    "command_not_found": "the command does not exist inside the sandbox (exit status 127)",
    "command_not_executable": "the command cannot be executed (exit status 126)",
}


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
