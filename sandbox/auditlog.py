"""The audit log: one JSON line per run, appended after the run.

Where (``SANDBOX_AUDIT_LOG``):

* unset, empty or ``on``: ``$XDG_STATE_HOME/sandbox/audit.jsonl``
  (``~/.local/state/sandbox/audit.jsonl``), in a directory private to the
  user (0700) that is hidden inside every sandbox;
* ``off`` (or ``0``, ``no``, ``false``): no log;
* an absolute path: that file; it and its rotated copies are masked inside
  (read as empty), its directory must exist, and a run whose writable paths
  would hold it is refused.

Writes are safe with concurrent runs: the line is encoded whole first and
written with one ``write()`` on a descriptor opened with ``O_APPEND``, so
lines never interleave.  Past ``MAX_BYTES`` the file is rotated (``.1`` to
``.KEEP``) under an exclusive ``flock`` on ``<log>.lock``; a run still
holding the old file appends its line there, so nothing is lost.

What a line holds, and what is redacted: docs/audit-log.md.  A run that
could not log prints one ``sandbox: warning:`` line; its exit status stays
the command's.  This module is on the fast path after the command ended:
it encodes JSON itself (``json`` imports ``re``, ~6 ms) and imports
nothing heavy.
"""

from __future__ import annotations

import os
import time

ENV = "SANDBOX_AUDIT_LOG"
FILE_NAME = "audit.jsonl"
MAX_BYTES = 10 << 20
KEEP = 3  # audit.jsonl.1 ... audit.jsonl.3
VERSION = 1
MAX_ITEMS = 50  # blocked requests / audit findings / weakenings per line
MAX_STRING = 4096
OFF = ("off", "0", "no", "false")
ON = ("", "on", "1", "yes", "true")


# A served run (sandbox.served) is a child of the warm server: the
# `sandbox` process its caller started (and sees as $!) is the client
caller_pid: int | None = None


def state_home(environ) -> str:
    """``$XDG_STATE_HOME``, or ``~/.local/state`` (a relative value is ignored, per XDG)."""
    value = environ.get("XDG_STATE_HOME", "")
    if value.startswith("/"):
        return os.path.normpath(value)
    home = environ.get("HOME") or os.path.expanduser("~")
    return os.path.join(os.path.normpath(home), ".local", "state")


def default_dir(environ) -> str:
    return os.path.join(state_home(environ), "sandbox")


def location(environ) -> str | None:
    """The log file, or None when the log is off.  Raises UsageError for a bad value."""
    raw = environ.get(ENV, "")
    if raw.lower() in OFF:
        return None
    if raw.lower() in ON:
        return os.path.join(default_dir(environ), FILE_NAME)
    if not raw.startswith("/"):
        from sandbox.errors import UsageError

        raise UsageError(f"{ENV}={raw!r} is neither on, off nor an absolute path",
                         hint=f"set {ENV}=off, {ENV}=on (the default, "
                              f"$XDG_STATE_HOME/sandbox/{FILE_NAME}) or a full file path")
    return os.path.normpath(raw)


def hidden_paths(environ) -> tuple[str, ...]:
    """What a run must hide (``filesystem.deny_read``): the default log's
    directory always (it may hold old logs), and a custom log with its
    rotated copies and lock file."""
    out = [default_dir(environ)]
    try:
        path = location(environ)
    except Exception:  # noqa: BLE001 - prepare() reports the bad value
        path = None
    if path is not None and not path.startswith(out[0] + "/"):
        out += [path, path + ".lock"] + [f"{path}.{n}" for n in range(1, KEEP + 1)]
    return tuple(out)


def prepare(environ, home_exists: bool) -> tuple[str | None, str | None]:
    """Before a plan is made: make the default directory, so it exists to be
    hidden.  Returns (log path or None, warning or None).  Raises UsageError."""
    path = location(environ)
    if path is None:
        return None, None
    directory = os.path.dirname(path)
    if directory == default_dir(environ):
        home = os.path.normpath(environ.get("HOME") or os.path.expanduser("~"))
        if not home_exists and (directory + "/").startswith(home + "/"):
            return None, (f"no audit log: it would be in {directory}, in a home directory "
                          f"that does not exist (set XDG_STATE_HOME, or {ENV}=off or a path)")
        _ensure_private_dir(directory)
    elif not os.path.isdir(directory):
        from sandbox.errors import UsageError

        raise UsageError(f"{ENV}={path}: the directory {directory} does not exist",
                         hint=f"create it, or set {ENV}=on (the default place) or off")
    return path, None


def _ensure_private_dir(directory: str) -> None:
    from sandbox.errors import SetupError

    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        st = os.stat(directory)
    except OSError as exc:
        raise SetupError(f"cannot create the audit log directory {directory}: {exc.strerror}",
                         hint=f"set XDG_STATE_HOME to a writable directory, or {ENV}=off") from None
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise SetupError(f"audit log directory {directory} is not private to this user",
                         hint=f"chmod 700 {directory} and make sure you own it")


def check_roots(path: str | None, writable_roots) -> None:
    """Refuse a run whose writable paths hold the log (or its directory): the
    command could plant a symlink or a file where the next run appends."""
    if path is None:
        return
    from sandbox.command import is_within
    from sandbox.errors import UsageError

    directory = os.path.realpath(os.path.dirname(path))
    for root in writable_roots:
        if is_within(directory, root) or is_within(root, directory):
            raise UsageError(f"the writable path {root} would hold the audit log {path}",
                             hint=f"pick another workspace or --allow-write, or set {ENV} to "
                                  "a file elsewhere (or off)")


# -- one line per run ------------------------------------------------------------

def record(doc: dict, opts, kept_env=None, environ=None) -> None:
    """Append the line for this run (``doc``: the report of ``report.build``).

    ``kept_env``: the environment the command got, so that the values the
    filter removed are redacted; None when the run failed before that.
    Never raises: a log that cannot be written is one warning line.
    """
    if getattr(opts, "dry_run", False):
        return  # nothing ran, or would have
    environ = os.environ if environ is None else environ
    try:
        path = location(environ)
    except Exception:  # noqa: BLE001 - reported by prepare() as the run's error
        return
    if path is None:
        return
    try:
        line = encode(entry(doc, opts, kept_env, environ)) + "\n"
        if os.path.dirname(path) == default_dir(environ):
            home = os.path.normpath(environ.get("HOME") or os.path.expanduser("~"))
            if path.startswith(home + "/") and not os.path.isdir(home):
                return  # said when the plan was made: never create a home
            _ensure_private_dir(os.path.dirname(path))
        append(path, line.encode("utf-8", "surrogateescape"))
    except Exception as exc:  # noqa: BLE001 - the run's outcome stands; say why, once
        if doc.get("outcome") == "error":
            return  # the run's own error line says what is wrong (often this very setting)
        import sys

        reason = getattr(exc, "strerror", None) or getattr(exc, "message", None) or exc
        print(f"sandbox: warning: cannot write the audit log {path}: {reason}", file=sys.stderr)


def entry(doc: dict, opts, kept_env, environ) -> dict:
    """The line's fields, every string redacted (sandbox.redact)."""
    from sandbox.redact import Redactor

    redactor = Redactor(environ, kept_env, getattr(opts, "env_pass", ()))
    started = time.time() - (doc.get("duration_ms") or 0) / 1000
    profile = doc.get("profile") or {}
    line = {
        "audit_log_version": VERSION,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started))
                + f".{int(started * 1000) % 1000:03d}Z",
        "duration_ms": doc.get("duration_ms"),
        "sandbox_version": doc.get("version"),
        "uid": os.getuid(),
        "pid": caller_pid or os.getpid(),
        "command": redactor.argv(_clip(list(doc.get("command") or ()))),
        "workspace": doc.get("workspace"),
        "cwd": doc.get("cwd"),
        "profile": {"name": profile.get("name", getattr(opts, "profile", None)),
                    "sha256": profile.get("sha256")},
        "outcome": doc.get("outcome"),
        "exit_status": doc.get("exit_status"),
        "signal": doc.get("signal"),
        "flags": {"timeout": getattr(opts, "timeout", None),
                  "network": getattr(opts, "network", None),
                  "allow_host": list(getattr(opts, "allow_host", ())),
                  "env_pass": list(getattr(opts, "env_pass", ()))},
        "weakenings": [f"{w['source']}: {w['key']}: {w['detail']}"
                       for w in doc.get("weakenings") or ()],
        "blocked": list(doc.get("blocked") or ()),
        # [[network.forward]] grants and what went through them, as in the report
        "forwards": list(doc.get("forwards") or ()),
        "audit": list(doc.get("audit") or ()),
    }
    if doc.get("error"):
        line["error"] = {"kind": doc["error"].get("kind"), "message": doc["error"].get("message")}
    for key in ("weakenings", "blocked", "audit"):
        if len(line[key]) > MAX_ITEMS:
            line[key + "_dropped"] = len(line[key]) - MAX_ITEMS
            line[key] = line[key][:MAX_ITEMS]
    command = line.pop("command")
    line = redactor.value(_clip(line))
    line["command"] = command
    return line


def _clip(data):
    """Long strings cut to MAX_STRING characters: a line stays one small write."""
    if isinstance(data, str):
        return data if len(data) <= MAX_STRING else data[:MAX_STRING] + "...[cut]"
    if isinstance(data, dict):
        return {k: _clip(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_clip(v) for v in data[:256]]
    return data


def encode(value) -> str:
    """Compact JSON for dicts, lists, strings, numbers, booleans and None."""
    from _json import encode_basestring_ascii as quote  # the C encoder json uses

    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else "null"
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{quote(str(k))}:{encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(encode(v) for v in value) + "]"
    return quote(str(value))


# -- the file ------------------------------------------------------------------

# O_NONBLOCK: a FIFO planted at the name (in a shared directory) fails at once
# (ENXIO) instead of blocking the run forever; regular files ignore it
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _open(path: str) -> int:
    import stat

    fd = os.open(path, _FLAGS, 0o600)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
        os.close(fd)
        raise OSError(0, "not a regular file of this user")
    return fd


def append(path: str, data: bytes) -> None:
    """One line, one write; rotate first when the file would pass MAX_BYTES."""
    fd = _open(path)
    try:
        if os.fstat(fd).st_size + len(data) > MAX_BYTES:
            fd = _rotate(path, fd)
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(0, f"short write ({written} of {len(data)} bytes)")
    finally:
        os.close(fd)


def _rotate(path: str, fd: int) -> int:
    """Under the lock: if ``fd`` is still the file at ``path`` and still too
    big, shift the copies (.1 -> .2 ...) and start a new file.  Returns the
    descriptor to write to (the new file, or the one another run made)."""
    import fcntl

    lock = os.open(path + ".lock", _FLAGS, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        mine = os.fstat(fd)
        try:
            now = os.lstat(path)
        except FileNotFoundError:
            now = None
        if now is None or (now.st_ino, now.st_dev) != (mine.st_ino, mine.st_dev):
            new = _open(path)  # another run rotated it a moment ago: use the new file
            os.close(fd)
            return new
        if mine.st_size == 0:
            return fd  # one line bigger than the limit: it goes in a file of its own
        for n in range(KEEP - 1, 0, -1):
            try:
                os.rename(f"{path}.{n}", f"{path}.{n + 1}")
            except FileNotFoundError:
                pass
        os.rename(path, f"{path}.1")
        new = _open(path)
        os.close(fd)
        return new
    finally:
        os.close(lock)  # releases the flock
