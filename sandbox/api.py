"""The Python API for plugins: run a command in the sandbox, get the report back.

    from sandbox import run

    result = run(["pytest", "-q"], workspace="/src/app", capture_output=True)
    result.exit_status, result.stdout, result.report["blocked"]

Each run is the installed ``sandbox run`` started as a child process, with
``--quiet --report-fd N``: the same code, options, checks and exit statuses
as the command line, and a ``Result`` holding the report (the same JSON
object, docs/schemas/report.schema.json) with the command's own output.
A child rather than a call in this process because a run installs signal
handlers, relays the caller's terminal and hands descriptors 0-2 to the
command: a library must not do that to its caller, and signal handlers can
only be set from the main thread.  So a run never changes the caller's
working directory, environment, signal handlers or descriptors, and runs
from several threads at once are safe (each has its own child and report).

Fail closed: when the sandbox itself fails (the command did not run) the
call raises the ``SandboxError`` subclass of that failure, with the stable
machine ``code`` (errors.CODES) and the ``result`` that carries the report.

No typer, no json schema library: importing this module costs the standard
library's ``subprocess`` and ``json`` only (api.md in the docs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from sandbox.errors import (CODES, CommandNotExecutable, CommandNotFound, ProfileError,
                            SandboxError, SetupError, UsageError)
from sandbox.options import FIELDS, RunOptions

__all__ = ["run", "explain", "cli_args", "Result", "RunOptions", "SandboxError", "ProfileError",
           "UsageError", "SetupError", "CommandNotFound", "CommandNotExecutable", "CODES",
           "CAPTURE", "DEVNULL", "schema_path"]

CAPTURE = subprocess.PIPE  # stdout=CAPTURE / stderr=CAPTURE: the bytes are in the Result
DEVNULL = subprocess.DEVNULL

# Options of RunOptions that the API sets itself: the report always comes
# back on a descriptor of its own, and --quiet keeps the command's stderr
# free of the sandbox's lines (they are in the report's diagnostics).
_OWN = ("command", "report", "quiet", "dry_run")
_DEFAULTS = RunOptions()
_EXPLAIN = ("profile", "workspace", "allow_write", "unprotect")  # what `explain` takes


class Result:
    """One finished run: the report and what the command wrote (when captured)."""

    __slots__ = ("report", "stdout", "stderr")

    def __init__(self, report: dict, stdout: bytes | None, stderr: bytes | None) -> None:
        self.report = report  # the --report object (schemas/report.schema.json in the docs)
        self.stdout = stdout  # bytes if stdout=CAPTURE (or capture_output), else None
        self.stderr = stderr  # the command's stderr only: the sandbox's lines are in diagnostics

    @property
    def exit_status(self) -> int:
        """The status `sandbox run` exits with (the command's, 128+N, 124, 125...)."""
        return self.report["exit_status"]

    returncode = exit_status  # the name subprocess uses

    @property
    def outcome(self) -> str:
        """``exited``, ``signaled`` or ``timeout`` (``error`` is raised, never returned)."""
        return self.report["outcome"]

    @property
    def signal(self) -> str | None:
        return self.report["signal"]

    @property
    def timed_out(self) -> bool:
        return self.report["timed_out"]

    @property
    def blocked(self) -> list[dict]:
        """What the sandbox refused (each with a ``code``: dns_refused, network_refused...)."""
        return self.report["blocked"]

    @property
    def audit(self) -> list[dict]:
        """What the persistence audit neutralised (``code`` audit_finding / audit_failed)."""
        return self.report["audit"]

    @property
    def audit_failed(self) -> bool:
        """Something the command left could not be neutralised (exit status 125)."""
        return any(f["code"] == "audit_failed" for f in self.report["audit"])

    @property
    def diagnostics(self) -> list[str]:
        """The ``sandbox:`` lines the command line would have printed on stderr."""
        return self.report["diagnostics"]

    def __repr__(self) -> str:
        return (f"Result(outcome={self.outcome!r}, exit_status={self.exit_status}, "
                f"blocked={len(self.blocked)}, audit={len(self.audit)})")


def cli_args(opts: RunOptions) -> list[str]:
    """The `sandbox run` options that mean ``opts`` (without --report/--quiet), then
    ``--`` and the command.  Every RunOptions field ``name`` is the option
    ``--name`` (underscores as dashes): a flag for a bool, repeated for a
    tuple, ``--name=value`` otherwise; fields at their default are left out."""
    args: list[str] = []
    for field in FIELDS:
        value = getattr(opts, field)
        if field in _OWN or value == getattr(_DEFAULTS, field):
            continue
        flag = "--" + field.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag)
            continue
        for item in value if isinstance(value, tuple) else (value,):
            text = str(item)
            if not text or text.startswith("-"):
                # the command line takes no such value either (it would be an option)
                raise UsageError(f"{flag} needs a value, got {text!r} (write ./{text} for a "
                                 "file whose name starts with '-')", code="usage_invalid")
            args.append(f"{flag}={text}")
    return args + ["--", *opts.command]


def _options(command, options: dict) -> RunOptions:
    if isinstance(command, RunOptions):
        if options:
            raise TypeError("run(RunOptions) takes no further option keywords: "
                            + ", ".join(sorted(options)))
        opts = command
    else:
        if isinstance(command, (str, bytes)):
            raise TypeError("command must be a sequence of arguments, not a string "
                            "(for a shell string use ['sh', '-c', string])")
        opts = RunOptions(command=tuple(command), **options)
    if not opts.command:
        raise UsageError("no command given", hint="run(['make', 'test'], ...)")
    if opts.dry_run:
        raise UsageError("dry_run is not available through the API",
                         hint="use sandbox.api.explain() to see the bwrap argv")
    if opts.report is not None:
        raise UsageError("report is set by the API (the report is in Result.report)")
    return opts


def _environ(env: dict[str, str] | None, cwd: str | None) -> dict[str, str]:
    """The environment the child starts with; PWD follows ``cwd`` as a shell's cd
    would (the sandbox takes the logical directory from an accurate PWD)."""
    environ = dict(os.environ if env is None else env)
    if cwd is not None:
        environ["PWD"] = os.path.abspath(cwd)
    return environ


def _child(verb: str) -> list[str]:
    # -P: not the current directory first on sys.path (it may be the
    # workspace, and the sandbox refuses to start from a writable import path)
    return [sys.executable, "-P", "-m", "sandbox", verb]


def run(command, *, stdin=None, input: bytes | None = None, stdout=None, stderr=None,
        capture_output: bool = False, env: dict[str, str] | None = None,
        cwd: str | None = None, **options) -> Result:
    """Run ``command`` (a list of arguments) in the sandbox and wait for it.

    ``options`` are the fields of ``RunOptions`` (the `sandbox run` options:
    profile, workspace, allow_write, unprotect, ...), or pass a ready
    ``RunOptions`` as ``command``.  ``stdin``/``stdout``/``stderr``: None
    passes the caller's own descriptor through, ``CAPTURE`` collects the
    bytes into the Result, ``DEVNULL``, a file object or a descriptor
    number; ``input`` feeds bytes to stdin; ``capture_output`` captures both.
    ``env`` (default: a copy of os.environ now) and ``cwd`` (default: the
    current directory; the workspace unless ``workspace`` says otherwise)
    are the environment and directory `sandbox run` starts from.

    Returns the Result of a run that started (whatever the command's own
    status); raises the ``SandboxError`` subclass (``.code``, ``.result``)
    when the sandbox could not run the command.
    """
    opts = _options(command, options)
    if capture_output:
        if stdout is not None or stderr is not None:
            raise ValueError("capture_output and stdout/stderr exclude each other")
        stdout = stderr = CAPTURE
    environ = _environ(env, cwd)
    report_fd = os.memfd_create("sandbox-report", os.MFD_CLOEXEC)
    try:
        argv = _child("run") + ["--quiet", f"--report-fd={report_fd}"] + cli_args(opts)
        from sandbox import runner

        grace = runner.grace_seconds(environ)  # how long the child may take after SIGTERM
        status, out, err = runner.run_cli(argv, environ, cwd, stdin=stdin, input=input,
                                          stdout=stdout, stderr=stderr, pass_fds=(report_fd,),
                                          grace=grace)
        os.lseek(report_fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(report_fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(report_fd)
    raw = b"".join(chunks)
    if not raw:
        # nothing reported: the child failed before it could; never mistaken
        # for a run.  125 then is the command line refusing its options (the
        # report target is ours and always valid); anything else is a crash
        tail = (err or b"").decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        cls, code = (UsageError, "usage_invalid") if status == 125 else (SandboxError,
                                                                         "internal_error")
        exc = cls(f"sandbox exited with status {status} without a report"
                  + (f": {tail[0]}" if tail[0] else " (its message is on stderr)"), code=code)
        raise exc
    result = Result(json.loads(raw), out, err)
    if result.report.get("error") is not None:
        raise _error(result.report["error"], result)
    return result


# The error classes by the ``kind`` the report gives them
_BY_KIND = {cls.kind: cls for cls in (SandboxError, ProfileError, UsageError, SetupError,
                                      CommandNotFound, CommandNotExecutable)}


def _error(data: dict, result: Result | None) -> SandboxError:
    """The exception for a report's (or explain's) ``error`` object."""
    cls = _BY_KIND.get(data.get("kind"), SandboxError)
    exc = cls.__new__(cls)
    SandboxError.__init__(exc, data["message"], data.get("hint"), code=data["code"])
    if isinstance(exc, ProfileError):
        exc.source = exc.key = exc.line = None  # only in the message, once reported
    exc.result = result
    return exc


def explain(command=("true",), *, env: dict[str, str] | None = None, cwd: str | None = None,
            **options) -> dict:
    """`sandbox explain --json`: what a run with these options would be allowed, and
    the bwrap argv (schemas/explain.schema.json in the docs).  Takes the options of
    `explain` (profile, workspace, allow_write, unprotect); raises the
    SandboxError subclass when the plan cannot be made."""
    unknown = set(options) - set(_EXPLAIN)
    if unknown:
        raise TypeError(f"explain() takes the options {', '.join(_EXPLAIN)}, not "
                        + ", ".join(sorted(unknown)))
    opts = _options(command, options)
    argv = _child("explain") + ["--json"] + cli_args(opts)
    from sandbox import runner

    status, out, err = runner.run_cli(argv, _environ(env, cwd), cwd,
                                      stdin=subprocess.DEVNULL, stdout=CAPTURE, stderr=CAPTURE)
    try:
        doc = json.loads(out)
    except ValueError:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise SandboxError(f"sandbox explain exited with status {status} without JSON: "
                           f"{tail[0]}", code="internal_error") from None
    if doc.get("error") is not None:
        raise _error(doc["error"], None)
    return doc


def schema_path(name: str) -> str:
    """The installed JSON Schema ``report`` or ``explain`` (schemas/NAME.schema.json in the docs)."""
    if name not in ("report", "explain"):
        raise ValueError("name is 'report' or 'explain'")
    from sandbox import resources

    return resources.doc(f"schemas/{name}.schema.json")
