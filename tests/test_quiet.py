"""sandbox.quiet: the --quiet filter over sandbox's own stderr lines."""

from __future__ import annotations

import io

from sandbox import quiet
from sandbox.audit import Finding
from sandbox.errors import CommandNotFound, ProfileError, SetupError, UsageError


def filtered(*writes: str) -> str:
    out = io.StringIO()
    stream = quiet._ErrorsOnly(out)
    for text in writes:
        stream.write(text)
    stream.flush()
    return out.getvalue()


def test_error_lines_pass_and_the_rest_of_sandbox_lines_do_not():
    errors = [UsageError("u").one_line(), SetupError("s", hint="h").one_line(),
              ProfileError("p.toml", "bad").one_line(), CommandNotFound("x").one_line(),
              "sandbox: audit error: 1 finding(s) could not be neutralised (see above)",
              Finding("git_hooks", "/w/.git/hooks/x", "COULD NOT quarantine: EPERM").line()]
    others = ["sandbox: weakened: --env-pass: env.pass: added CI",
              "sandbox: warning: setsid not found", "sandbox: blocked name lookup a.b - no network",
              "sandbox: timeout: the command ran longer than 1 s (--timeout); sent SIGTERM",
              "sandbox: note: /x vanished", Finding("git_hooks", "/w/h", "quarantined (ID 1)").line(),
              "sandbox: to reach a host, use a profile ..."]
    # print() writes the text and the newline separately
    writes = [part for line in others + errors for part in (line, "\n")]
    assert filtered(*writes) == "".join(line + "\n" for line in errors)


def test_other_text_passes_untouched():
    assert filtered("plain\n", "two ", "parts\n", "  sandbox: indented\n", "tail") == (
        "plain\ntwo parts\n  sandbox: indented\ntail")


def test_install_is_idempotent_and_restorable(monkeypatch):
    import sys

    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    quiet.install()
    quiet.install()
    assert isinstance(sys.stderr, quiet._ErrorsOnly) and sys.stderr._stream is out
    print("sandbox: warning: x", file=sys.stderr)
    print("sandbox: error: y", file=sys.stderr)
    assert out.getvalue() == "sandbox: error: y\n"
    monkeypatch.setattr(sys, "stderr", None)
    quiet.install()  # no stderr at all: nothing to wrap
    assert sys.stderr is None
