"""GitHub Actions' file commands, for a step wrapped by ``sandbox run``.

The runner gives each step files under ``$RUNNER_TEMP/_runner_file_commands/``
and reads them back when the step ends:

* ``$GITHUB_OUTPUT`` (``set_output_<id>``) and ``$GITHUB_STEP_SUMMARY``
  (``step_summary_<id>``): the step's outputs and its summary.  Harmless, and
  what a build step exists to produce: made writable.
* ``$GITHUB_ENV`` (``set_env_<id>``), ``$GITHUB_PATH`` (``add_path_<id>``)
  and ``$GITHUB_STATE`` (``save_state_<id>``): what the runner sets for
  *later* steps, which run outside the sandbox.  A line written there is a
  variable (``LD_PRELOAD``, ``BASH_ENV``, ``NODE_OPTIONS``...) or a ``PATH``
  entry that runs code the command chose, with the job's token.  Read-only,
  unless the profile opens ``[ci] github_env`` / ``github_path``, or
  ``--allow-write`` names the file itself (either is a weakening, printed on
  every run).

Outside the workspace the files are read-only anyway (everything is); this
module makes the two harmless ones writable and, when a workspace or
``--allow-write`` covers the runner's temp directory, keeps the others
read-only in place (their directories become mount points, so they cannot be
renamed away and replaced).  A path is trusted only when it has the runner's
shape: a regular file named ``<prefix>_<id>`` in a directory called
``_runner_file_commands`` with no other name (no hard link), so a variable
pointed elsewhere (by an earlier step, through ``$GITHUB_ENV``) opens nothing.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat

from sandbox.layout import Layout
from sandbox.policy import Policy

DIR_NAME = "_runner_file_commands"
# variable -> the file name's prefix the runner uses
WRITABLE = {"GITHUB_OUTPUT": "set_output_", "GITHUB_STEP_SUMMARY": "step_summary_"}
CLOSED = {"GITHUB_ENV": "set_env_", "GITHUB_PATH": "add_path_", "GITHUB_STATE": "save_state_"}
# which profile key opens which closed file
OPENED_BY = {"GITHUB_ENV": "github_env", "GITHUB_PATH": "github_path"}
_ID = re.compile(r"[A-Za-z0-9_-]+")
ENV_KEYS = ("GITHUB_ACTIONS",) + tuple(WRITABLE) + tuple(CLOSED)


def active(environ: dict[str, str]) -> bool:
    return environ.get("GITHUB_ACTIONS") == "true"


def runner_file(environ: dict[str, str], var: str, prefix: str) -> str | None:
    """The file ``var`` names if it has the runner's shape, else None."""
    path = environ.get(var, "")
    if not path or not os.path.isabs(path):
        return None
    # the directory's real path (a symlinked /home is fine); the file itself
    # must be a regular file, not a link that would take the bind elsewhere
    path = os.path.join(os.path.realpath(os.path.dirname(os.path.normpath(path))),
                        os.path.basename(path))
    name = os.path.basename(path)
    if os.path.basename(os.path.dirname(path)) != DIR_NAME or not name.startswith(prefix):
        return None
    if not _ID.fullmatch(name[len(prefix):]):
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    # a second name (a hard link to ~/.bashrc, say) is nothing the runner makes
    return path if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 else None


def _inside(path: str, roots) -> str | None:
    for root in roots:
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return root
    return None


def _chain(path: str, root: str) -> list[str]:
    """The directories from just below ``root`` down to ``path``'s parent."""
    out = []
    d = os.path.dirname(path)
    while d != root and d.startswith(root.rstrip("/") + "/"):
        out.append(d)
        d = os.path.dirname(d)
    return out[::-1]


def apply(layout: Layout, policy: Policy, environ: dict[str, str]) -> Layout:
    """``layout`` with the step's file commands made writable or kept read-only."""
    if not active(environ):
        return layout
    writable = list(layout.writable_roots)
    read_only = list(layout.read_only)
    keep = list(layout.keep_in_place)
    warnings = list(layout.warnings)
    for var, prefix in WRITABLE.items():
        path = runner_file(environ, var, prefix)
        if path is None:
            if environ.get(var):
                warnings.append(f"${var} ({environ[var]}) is not a file the runner made in "
                                f"{DIR_NAME}/: it stays read-only")
            continue
        if _inside(path, writable) is None:
            writable.append(path)
    for var, prefix in CLOSED.items():
        path = runner_file(environ, var, prefix)
        if path is None:
            continue
        opened = OPENED_BY.get(var) and getattr(policy, OPENED_BY[var])
        root = _inside(path, writable)
        if opened:
            if root is None:
                writable.append(path)
            continue
        if root == path:
            continue  # --allow-write named this very file: asked for, and shown as a weakening
        if root is None:
            continue  # read-only like the rest of the host
        for d in _chain(path, root):
            if d not in keep:
                keep.append(d)
        if path not in read_only:
            read_only.append(path)
    return dataclasses.replace(layout, writable_roots=tuple(writable), read_only=tuple(read_only),
                               keep_in_place=tuple(keep), warnings=tuple(warnings))
