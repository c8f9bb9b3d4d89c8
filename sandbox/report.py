"""The ``--report FILE`` JSON: one object per run, the machine channel.

stdout and stderr belong to the command, so anything a plugin or CI job
wants to know about the sandbox itself goes here.
"""

from __future__ import annotations

import os
import time

from sandbox import __version__


def shell_join(argv) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in argv)


def build(command, meta: dict | None, started: float, *, outcome=None, error=None,
          status: int) -> dict:
    """One JSON object for the run.  ``meta`` describes the plan (see app.plan_meta)."""
    doc: dict = {
        "version": __version__,
        "command": list(command),
        "exit_status": status,
        "duration_ms": round((time.time() - started) * 1000, 1),
        "workspace": None,
        "warnings": [],
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
            "outcome": "signaled" if signal_name else "exited",
            "signal": signal_name,
            "forwarded_signals": outcome.forwarded,
            "killed_after_grace": outcome.killed_after_grace,
            "timed_out": outcome.timed_out,
            "limits": outcome.limits,
        })
    if error is not None:
        doc.update({"outcome": "error", "error": {"kind": error.kind, "message": error.message,
                                                   "hint": error.hint}})
    return doc


def blocked_records(refused: list[dict], network: dict | None) -> list[dict]:
    """Everything the sandbox is known to have refused in this run, one record each.

    ``kind``: ``write`` (a protected or masked file, see sandbox.blocked),
    ``signing`` (a commit git could not sign), ``lookup`` (a name looked up
    in a run without network), ``request`` (refused by the egress proxy's
    rules).  A plugin can tell "blocked by policy" from "the command
    failed" by this list; what the sandbox cannot observe is never in it
    (docs/design.md).
    """
    records = [r for r in refused if r.get("target") is not None]
    if network is not None:
        for item in network.get("lookups", ()):
            records.append({"kind": "lookup", "target": item["name"],
                            "rule": "network.mode = none", "count": item["queries"]})
        for event in network.get("blocked", ()):
            if event.get("status") == 403:
                records.append({"kind": "request",
                                "target": event.get("url") or event.get("host"),
                                "rule": event.get("reason"), "count": 1})
    return records


def open_dir(path: str | None) -> int | None:
    """Open the report's directory before the command runs (see ``write``)."""
    if not path:
        return None
    try:
        return os.open(os.path.dirname(os.path.abspath(path)) or "/",
                       os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None


def write(path: str | None, doc: dict, dir_fd: int | None = None) -> None:
    """Write the report.  ``dir_fd``: the directory as it was before the run,
    so a command that swaps a parent directory for a symlink cannot send the
    report (and the overwrite) somewhere else."""
    if not path:
        return
    import json

    # The report may be asked for inside the workspace, where the command
    # could have planted a symlink at the temporary name: create it
    # exclusively, never through a link, then rename over the final name
    # (rename replaces a symlink there instead of following it).
    name = os.path.basename(path) if dir_fd is not None else path
    tmp = f"{name}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                     dir_fd=dir_fd)
        with open(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as exc:
        import sys

        print(f"sandbox: warning: cannot write report {path}: {exc.strerror}", file=sys.stderr)
