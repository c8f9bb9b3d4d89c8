"""The user's trust in project profiles: which file, with which content.

``sandbox trust`` pins a project profile (``sandbox.projectprofile``) by its
real path and the sha256 of its content, direnv-style; a file whose content
or place changes is untrusted again.  One record per file, in
``<state>/trust/<sha256 of the path>``, where ``<state>`` is the sandbox's
state directory (``$XDG_CACHE_HOME/sandbox``).  That directory is the one
place the sandbox already keeps from every run: it is an empty directory
inside, a workspace or ``--allow-write`` that overlaps it is refused, and
it must belong to the user with no group or other write bit.  So a command
can neither read which projects are trusted nor trust one itself.  Losing
it (clearing ~/.cache) only makes projects untrusted again.

This module only reads and writes records; it never prints.
"""

from __future__ import annotations

import os
import time

from sandbox import statefile

SUBDIR = "trust"


def content_sha(data: bytes) -> str:
    return statefile.sha256_hex(data)


def store_dir(state: str) -> str:
    return os.path.join(state, SUBDIR)


def record_path(state: str, path: str) -> str:
    return os.path.join(store_dir(state), statefile.sha256_hex(path.encode())[:32])


def _private(path: str) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022 and not os.path.islink(path)


def _read(record: str) -> dict | None:
    if not _private(record) or not _private(os.path.dirname(record)):
        return None
    data = statefile.load(record)
    if (not isinstance(data, dict) or not isinstance(data.get("path"), str)
            or not isinstance(data.get("sha256"), str)):
        return None
    return data


def trusted_sha(state: str, path: str, obs=None) -> str | None:
    """The content hash the user trusted for ``path`` (a real path), if any.
    ``obs`` stamps the record, so a cached plan follows trust and revoke."""
    record = record_path(state, path)
    if obs is not None:
        obs.note(record, full=True)
    data = _read(record)
    return data["sha256"] if data is not None and data["path"] == path else None


def grant(state: str, path: str, sha: str) -> None:
    """Record trust in ``path`` (a real path) with content ``sha``; raise OSError."""
    os.makedirs(store_dir(state), mode=0o700, exist_ok=True)
    statefile.dump(record_path(state, path),
                   {"path": path, "sha256": sha, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                       time.gmtime())},
                   must_succeed=True)


def revoke(state: str, path: str) -> bool:
    """Forget ``path``; False if it was not trusted."""
    try:
        os.unlink(record_path(state, path))
        return True
    except FileNotFoundError:
        return False


def records(state: str) -> list[dict]:
    """Every trust record, by path."""
    base = store_dir(state)
    try:
        names = os.listdir(base)
    except OSError:
        return []
    out = []
    for name in names:
        if len(name) != 32:
            continue
        data = _read(os.path.join(base, name))
        if data is not None and record_path(state, data["path"]) == os.path.join(base, name):
            out.append(data)
    return sorted(out, key=lambda d: d["path"])
