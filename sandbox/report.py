"""The ``--report FILE`` JSON: one object per run, the machine channel.

stdout and stderr belong to the command, so anything a plugin or CI job
wants to know about the sandbox itself goes here.
"""

from __future__ import annotations

import os
import time

from sandbox import __version__
from sandbox.quiet import MUST_SHOW


def shell_join(argv) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in argv)


# The report's contract (machine-output.md and schemas/report.schema.json in the docs).
# It changes only when a key is removed or renamed or a value changes type or
# meaning; keys and codes may be added at any time without a change.
SCHEMA_VERSION = 1

# Every key of the network record, whatever kind of run it was: the
# resolver's (no network) and the egress proxy's; null where not applicable.
_NETWORK_KEYS = ("mode", "names_recorded", "lookups", "queries_unrecorded",
                 "names_not_recorded_because", "resolver_failed", "proxy", "blocked",
                 "allowed_count", "blocked_count", "events_dropped", "proxy_died")
# Policy events: the code of each kind of blocked record
_BLOCKED_CODES = {"write": "write_protected", "signing": "signing_refused",
                  "lookup": "dns_refused", "request": "network_refused"}


def build(command, meta: dict | None, started: float, *, outcome=None, error=None,
          status: int) -> dict:
    """One JSON object for the run.  ``meta`` describes the plan (see app.plan_meta).

    Every key is present whatever happened (null where it does not apply),
    so a program reading the report never has to guess at its shape.
    """
    doc: dict = {
        "schema_version": SCHEMA_VERSION,
        "version": __version__,
        "command": list(command),
        "outcome": "error",
        "exit_status": status,
        "command_status": None,
        "signal": None,
        "timed_out": False,
        "forwarded_signals": [],
        "killed_after_grace": False,
        "duration_ms": round((time.time() - started) * 1000, 1),
        "workspace": None,
        "cwd": None,
        "profile": None,
        "weakenings": [],
        "tightenings": [],
        "warnings": [],
        "plan_ms": None,
        "plan_cached": None,
        "backend": None,  # sandbox.linux.ladder: which mechanism ran the command, and its guarantee
        "limits": None,
        "error": None,
        "audit": [],
        "network": None,
        "session": None,  # sandbox.egress.netsession: the network namespace's session, made or joined
        "forwards": [],  # [[network.forward]] grants and their counts (sandbox.egress.forward)
        "blocked": [],
        "diagnostics": [],
    }
    if meta:
        doc.update(meta)
    if outcome is not None:
        signal_name = None
        if outcome.exit_status is not None and outcome.exit_status > 128:
            import signal

            try:
                signal_name = signal.Signals(outcome.exit_status - 128).name
            except ValueError:
                signal_name = None
        doc.update({
            "outcome": ("timeout" if outcome.timed_out else
                        "signaled" if signal_name else "exited"),
            "command_status": outcome.exit_status,
            "signal": signal_name,
            "forwarded_signals": outcome.forwarded,
            "killed_after_grace": outcome.killed_after_grace,
            "timed_out": outcome.timed_out,
            "limits": outcome.limits,
        })
    if error is not None:
        doc.update({"outcome": "error", "error": {"code": error.code, "kind": error.kind,
                                                   "message": error.message,
                                                   "hint": error.hint},
                    "diagnostics": [error.one_line()]})  # printed after the report is written
    return doc


def finish(doc: dict) -> dict:
    """The stable shape of the parts other modules fill in after ``build``:
    each audit finding and blocked record with its ``code``, the network
    record with every key, and the sandbox's own stderr lines."""
    doc["audit"] = [dict(f, code=f.get("code") or ("audit_failed" if str(
        f.get("action", "")).startswith("COULD NOT") else "audit_finding"))
        for f in doc.get("audit") or ()]
    blocked = []
    for record in doc.get("blocked") or ():
        full = {"code": _BLOCKED_CODES.get(record.get("kind"), record.get("kind")),
                "kind": None, "target": None, "rule": None, "count": 1, "evidence": None}
        full.update(record)
        blocked.append(full)
    doc["blocked"] = blocked
    network = doc.get("network")
    if isinstance(network, dict):
        full = dict.fromkeys(_NETWORK_KEYS)
        full["mode"] = "proxy" if "proxy" in network else "none"
        full.update(network)
        doc["network"] = full
    if _capture is not None:
        said = _capture.lines()
        doc["diagnostics"] = said + [line for line in doc.get("diagnostics") or ()
                                     if line not in said]
    return doc


class Diagnostics:
    """``sys.stderr`` while a run is reported: every line the sandbox itself
    prints is kept for the report's ``diagnostics``, and passed on to the
    real stderr unless the caller asked for silence (``--quiet`` with a
    report: then the command's stderr carries nothing but the command's).

    Only the sandbox's own lines pass through here; the command writes to
    descriptor 2 directly.
    """

    # never silenced, with --quiet or without: the lines sandbox.quiet also
    # always passes (a weaker backend is said before the command starts)
    MUST_SHOW = MUST_SHOW

    def __init__(self, real, silent: bool) -> None:
        self.real = real
        self.silent = silent
        self.text = ""
        self._showing = False  # inside a MUST_SHOW line that print() writes in pieces

    def write(self, text: str) -> int:
        self.text += text
        show = self._showing or text.startswith(self.MUST_SHOW)
        if not self.silent or show:
            self.real.write(text)
        self._showing = show and not text.endswith("\n")
        return len(text)

    def flush(self) -> None:
        if not self.silent:
            self.real.flush()

    def lines(self) -> list[str]:
        return self.text.splitlines()

    def __getattr__(self, name):  # encoding, isatty, fileno...: the real stream's
        return getattr(self.real, name)


_capture: Diagnostics | None = None


def capture(opts, target: "Target | None") -> None:
    """Start keeping the sandbox's stderr lines for the report (once per process).

    Silent when ``--quiet`` and a report is written (not for --dry-run,
    which writes no report): everything is in the report then.
    """
    global _capture
    import sys

    silent = bool(opts.quiet and target is not None and not opts.dry_run)
    if _capture is None:
        _capture = Diagnostics(sys.stderr, silent)
        sys.stderr = _capture
    else:
        _capture.silent = silent


def real_stderr():
    """Where a line goes that must be seen even when the report keeps the others."""
    import sys

    return _capture.real if _capture is not None else sys.stderr


def blocked_records(refused: list[dict], network: dict | None) -> list[dict]:
    """Everything the sandbox is known to have refused in this run, one record each.

    ``code`` (added by ``finish``, see ``_BLOCKED_CODES``) is the stable machine
    code; ``kind``: ``write`` (a protected or masked file, see sandbox.blocked),
    ``signing`` (a commit git could not sign), ``lookup`` (a name looked up
    in a run without network), ``request`` (refused by the egress proxy's
    rules).  A plugin can tell "blocked by policy" from "the command
    failed" by this list; what the sandbox cannot observe is never in it
    (the design notes, design.md).
    """
    records = [r for r in refused if r.get("target") is not None]
    if network is not None:
        for item in network.get("lookups", ()):
            records.append({"kind": "lookup", "target": item["name"],
                            "rule": "network.mode = none", "count": item["queries"]})
        for event in network.get("blocked", ()):
            if event.get("status") == 403:
                # a request refused for the credential it carried (credential
                # injection, the proxy's reason says so) has a code of its own
                foreign = str(event.get("reason") or "").startswith("foreign credential")
                records.append({"code": "foreign_credential" if foreign else "network_refused",
                                "kind": "request",
                                "target": event.get("url") or event.get("host"),
                                "rule": event.get("reason"), "count": 1})
    return records


# Names that mean "this stream", not "a file at this path": writing the
# report to a temporary file and renaming it over /dev/stderr (a symlink)
# would replace the host's /dev/stderr with a regular file.
_STREAMS = {"-": 1, "/dev/stdout": 1, "/dev/stderr": 2}
_FD_DIRS = ("/dev/fd/", "/proc/self/fd/")
_HINT = ("give a regular file to replace or a new file in an existing directory; "
         "'-' or /dev/stdout, /dev/stderr or /dev/fd/N to write to that stream")


class Target:
    """Where the report goes, fixed before the command runs.

    A stream (``name`` is None): ``fd`` is our own duplicate of the caller's
    descriptor.  A file: ``fd`` is its directory, opened before the command
    could touch the parents, and ``name`` the entry in it.
    """

    __slots__ = ("path", "fd", "name")

    def __init__(self, path: str, fd: int, name: str | None) -> None:
        self.path = path
        self.fd = fd
        self.name = name

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def stream_fd(path: str) -> int | None:
    """The descriptor ``path`` names (``-``, /dev/stdout, /dev/stderr, /dev/fd/N), or None."""
    if path in _STREAMS:
        return _STREAMS[path]
    norm = os.path.normpath(path) if path.startswith("/") else path
    if norm in _STREAMS:
        return _STREAMS[norm]
    for prefix in _FD_DIRS:
        if norm.startswith(prefix) and norm[len(prefix):].isdigit():
            return int(norm[len(prefix):])
    return None


def _kind(mode: int) -> str:
    import stat

    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_target(path: str | None) -> Target | None:
    """Check ``--report PATH`` and fix where the report goes; before anything runs.

    The report only ever replaces a regular file (or creates a new one):
    anything else at the path is refused here, so a typo or a device name
    cannot make the sandbox replace a host symlink, FIFO or device.
    Raises UsageError.
    """
    from sandbox.errors import UsageError

    if not path:
        return None
    number = stream_fd(path)
    if number is not None:
        import fcntl

        try:
            flags = fcntl.fcntl(number, fcntl.F_GETFL)
        except OSError:
            raise UsageError(f"--report {path}: file descriptor {number} is not open",
                             hint=f"open it for the run (e.g. {number}>report.json), or give a "
                                  "file name", code="report_target_invalid") from None
        if flags & os.O_ACCMODE == os.O_RDONLY:
            raise UsageError(f"--report {path}: file descriptor {number} is open read-only",
                             hint=f"open it for writing (e.g. {number}>report.json)",
                             code="report_target_invalid")
        return Target(path, os.dup(number), None)  # ours: the run cannot close it for us
    parent, name = os.path.split(os.path.abspath(path))
    try:
        dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"--report {path}: {parent} is not an existing directory "
                         f"({exc.strerror})", hint="create the directory, or give another "
                                                   "file name",
                                                   code="report_target_invalid") from None
    try:
        try:
            st = os.lstat(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        else:
            import stat

            if not stat.S_ISREG(st.st_mode):
                raise UsageError(f"--report {path} is {_kind(st.st_mode)}, not a regular file; "
                                 "the report would replace it", hint=_HINT,
                                 code="report_target_invalid")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UsageError(f"--report {path}: cannot create files in {parent}",
                             hint="give a file in a directory you can write",
                             code="report_target_invalid")
    except BaseException:
        os.close(dir_fd)
        raise
    return Target(path, dir_fd, name)


def write(target: Target | None, doc: dict) -> None:
    """Write the report where ``open_target`` said, then close the target."""
    if target is None or target.fd < 0:
        return
    import json

    text = json.dumps(finish(doc), indent=2, sort_keys=True) + "\n"
    try:
        if target.name is None:
            _write_stream(target.fd, text.encode())
        else:
            _replace(target.fd, target.name, text)
    except OSError as exc:
        print(f"sandbox: warning: cannot write report {target.path}: {exc.strerror or exc}",
              file=real_stderr())
    finally:
        target.close()


def _write_stream(fd: int, data: bytes) -> None:
    import select

    while data:
        try:
            data = data[os.write(fd, data):]
        except BlockingIOError:  # the caller's descriptor may be non-blocking
            select.select([], [fd], [], 1)


def _replace(dir_fd: int, name: str, text: str) -> None:
    """Write ``name`` in ``dir_fd`` whole: a temporary file renamed over it.

    The directory is the one opened before the run, so a command that swaps
    a parent directory for a symlink cannot send the report (and the
    overwrite) somewhere else.  The report may be asked for inside the
    workspace, where the command could have planted a symlink at the
    temporary name: ``pathat.replace_file`` creates it exclusively, never
    through a link, and the rename replaces a symlink at the final name
    instead of following it.
    """
    from sandbox.pathat import replace_file

    replace_file(dir_fd, name, text.encode("utf-8"), 0o644)
