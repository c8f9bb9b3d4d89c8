"""``--quiet``: sandbox's own stderr carries errors only.

A plugin that reads the report (``--report``) and the audit log does not
want the ``sandbox: warning:``, ``weakened:``, ``blocked ...``, ``audit:``,
``note:`` and ``timeout:`` lines mixed into the command's stderr.  Rather
than thread a flag through every place that prints one, ``install`` puts a
filter in front of ``sys.stderr`` for the rest of the process: lines that
start with ``sandbox: `` are dropped unless they report an error.  Only our
own Python-level writes pass through it; the command writes to the real
descriptor 2 and is never filtered.

What still prints: the one-line errors of the tool itself (``sandbox:
error:``, ``usage error:``, ``profile error:``, ``setup error:``,
``command not found:``, ``cannot execute:``), ``sandbox: audit error:``,
the ``sandbox: audit:`` findings that could not be neutralised (the error
line refers to them), and the ``sandbox: fallback:`` line that says a weaker
backend runs the command (never a silent downgrade).
"""

from __future__ import annotations

import sys

ERROR_PREFIXES = ("sandbox: error:", "sandbox: usage error:", "sandbox: profile error:",
                  "sandbox: setup error:", "sandbox: command not found:",
                  "sandbox: cannot execute:", "sandbox: audit error:")


# Not errors, but never hidden: the run uses a weaker backend (sandbox.linux.ladder)
MUST_SHOW = ("sandbox: fallback:",)


def is_error(line: str) -> bool:
    if line.startswith(ERROR_PREFIXES + MUST_SHOW):
        return True
    # a finding the audit could not neutralise (audit.Finding.failed)
    return line.startswith("sandbox: audit:") and ": COULD NOT" in line


class _ErrorsOnly:
    """A text stream that passes everything but sandbox's non-error lines."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._partial = ""

    def write(self, text: str) -> int:
        data = self._partial + text
        lines = data.split("\n")
        self._partial = lines.pop()  # print() writes the text and "\n" separately
        kept = [line for line in lines if not line.startswith("sandbox: ") or is_error(line)]
        if kept:
            self._stream.write("".join(line + "\n" for line in kept))
        return len(text)

    def flush(self) -> None:
        if self._partial and (not self._partial.startswith("sandbox: ")
                              or is_error(self._partial)):
            self._stream.write(self._partial)
        self._partial = ""
        self._stream.flush()

    def __getattr__(self, name: str):  # fileno, isatty, encoding...
        return getattr(self._stream, name)


def install() -> None:
    """Filter ``sys.stderr`` for the rest of this process (idempotent)."""
    if sys.stderr is not None and not isinstance(sys.stderr, _ErrorsOnly):
        sys.stderr = _ErrorsOnly(sys.stderr)
