"""The ``--report FILE`` JSON: one object per run, the machine channel.

stdout and stderr belong to the command, so anything a plugin or CI job
wants to know about the sandbox itself goes here.
"""

from __future__ import annotations

import json
import os
import shlex
import time

from sandbox import __version__


def shell_join(argv) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def build(opts, prepared, started: float, *, outcome=None, error=None, status: int) -> dict:
    doc: dict = {
        "version": __version__,
        "command": list(opts.command),
        "exit_status": status,
        "duration_ms": round((time.time() - started) * 1000, 1),
    }
    if prepared is not None:
        policy, layout = prepared.policy, prepared.layout
        doc.update({
            "workspace": layout.workspace,
            "cwd": layout.cwd,
            "profile": {"name": policy.name, "chain": list(policy.chain), "sha256": policy.digest},
            "weakenings": [{"source": w.source, "key": w.key, "detail": w.detail}
                           for w in policy.weakenings],
            "warnings": list(layout.warnings),
            "env_removed": list(prepared.removed_env),
            "plan_ms": round(prepared.plan_ms, 2),
            "policy_cached": prepared.policy_cached,
        })
    else:
        doc.update({"workspace": None, "profile": {"name": opts.profile}, "warnings": []})
    if outcome is not None:
        signal_name = None
        if outcome.exit_status is not None and outcome.exit_status > 128:
            try:
                import signal

                signal_name = signal.Signals(outcome.exit_status - 128).name
            except ValueError:
                signal_name = None
        doc.update({
            "outcome": "signaled" if signal_name else "exited",
            "signal": signal_name,
            "forwarded_signals": outcome.forwarded,
            "killed_after_grace": outcome.killed_after_grace,
        })
    if error is not None:
        doc.update({"outcome": "error", "error": {"kind": error.kind, "message": error.message,
                                                   "hint": error.hint}})
    return doc


def write(path: str | None, doc: dict) -> None:
    if not path:
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except OSError as exc:
        import sys

        print(f"sandbox: warning: cannot write report {path}: {exc.strerror}", file=sys.stderr)
