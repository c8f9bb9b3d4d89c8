"""The host facts a Seatbelt profile is built from (``seatbelt.Context``).

Seatbelt matches the path the kernel resolved, so every path reaches the
profile the way a Mac spells it after resolution: symlinks followed on the
host first, and ``/var``, ``/tmp`` and ``/etc`` (symlinks into ``/private``
on macOS) given in both spellings.  On Linux (``sandbox explain --platform
macos``) the same code runs on the Linux host's paths: the workspace and home
given, resolved here, with the ``/private`` spellings added as a Mac would
need them (macos.md in the docs).
"""

from __future__ import annotations

import os

from sandbox.macos.seatbelt import Context
from sandbox.patterns import match

# macOS keeps these in /private and links them from the root
PRIVATE_ALIASES = ("/var", "/tmp", "/etc")


def spellings(path: str, resolve: bool = True) -> list[str]:
    """``path``, its real path, and their ``/private`` aliases (in that order, once each)."""
    found = [path]
    if resolve:
        real = os.path.realpath(path)
        if real != path:
            found.append(real)
    out: list[str] = []
    for p in found:
        out.append(p)
        for top in PRIVATE_ALIASES:
            if p == top or p.startswith(top + "/"):
                out.append("/private" + p)
            elif p == "/private" + top or p.startswith("/private" + top + "/"):
                out.append(p[len("/private"):])
    return list(dict.fromkeys(out))


def _as_mac(path: str | None) -> str | None:
    """``path`` as a Mac's kernel reports it once resolved: ``/tmp/x`` is
    ``/private/tmp/x`` there (on a Mac ``realpath`` has already done this)."""
    if not path:
        return path
    for top in PRIVATE_ALIASES:
        if path == top or path.startswith(top + "/"):
            return "/private" + path
    return path


def secrets(deny_read, extra=(), resolve: bool = True) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """deny_read as (paths, (directory, name pattern) of wildcard entries).

    A wildcard may only stand in the last part of a path (the profile loader
    refuses others); the matches that exist now are resolved too, so a
    symlinked history file's target is denied as well.
    """
    paths: list[str] = []
    globs: list[tuple[str, str]] = []
    for entry in tuple(deny_read) + tuple(extra):
        if "*" in entry or "?" in entry:  # as sandbox.discover.has_magic
            parent, _, name = entry.rpartition("/")
            for d in spellings(parent or "/", resolve):
                globs.append((d, name))
            if resolve and os.path.isdir(parent or "/"):
                try:
                    names = sorted(os.listdir(parent or "/"))
                except OSError:
                    names = []
                for found in names:
                    if match(found, name):
                        full = f"{parent}/{found}"
                        real = os.path.realpath(full)
                        if real != full:
                            paths.extend(spellings(real, resolve))
            continue
        paths.extend(spellings(entry, resolve))
    return tuple(dict.fromkeys(paths)), tuple(dict.fromkeys(globs))


def gather(policy, layout, *, home: str, state: str | None, tmpdir: str | None,
           proxy_port: int | None, mac_spelling: bool = False) -> Context:
    """The Context for ``policy`` from what discovery found (``layout``).

    ``mac_spelling`` (explain on another host): write /tmp, /var and /etc
    paths as ``/private/...``, as a Mac resolves them.  A run never needs it:
    on a Mac the real paths already are.
    """
    as_mac = _as_mac if mac_spelling else (lambda p: p)
    others = tuple(as_mac(r) for r in layout.writable_roots
                   if r not in (layout.workspace, layout.cache_dir))
    found = (tuple(layout.masked_dirs) + tuple(layout.masked_files) + tuple(layout.empty_dirs))
    paths, globs = secrets(policy.deny_read, found)
    return Context(workspace=as_mac(layout.workspace), home=home, tmpdir=as_mac(tmpdir),
                   cache_dir=as_mac(layout.cache_dir), state_dir=as_mac(state),
                   writable=others, secrets=paths, secret_globs=globs,
                   protected=tuple(as_mac(p) for p in layout.read_only),
                   keep_in_place=tuple(as_mac(p) for p in layout.keep_in_place),
                   proxy_port=proxy_port)
