"""Keep the sandbox's own code out of the sandboxed command's reach.

The wrapper and the egress proxy run on the host, unconfined, and they
import modules *after* the command has started: the proxy when the command
first connects, the wrapper for the audit and the report when the command
ends; and Python itself looks for code at every start (``sitecustomize``,
``.pth`` files).  If the command could write any file those imports read, it
would run code on the host, now or at the next start.  So:

* ``harden_sys_path`` (called first thing in ``__main__``) cuts ``sys.path``
  down to the standard library and site-packages, so no other directory
  (the current one for ``python -m sandbox``, ``PYTHONPATH``, a ``.pth``
  entry) is searched again; it records what it dropped, and ``discover``
  refuses to run when the command could write one of those (Python
  searched them at this start and will at the next);
* ``install_paths`` lists where the running sandbox loads code from (its
  package, the interpreter's directory, the standard library,
  site-packages, the modules it imports late); ``discover`` makes any of
  them that sits inside a writable root read-only, like a protected path,
  and refuses to run when a writable root is one of them or lies inside
  one.

Standard library only; it reads the filesystem (realpath, lexists, module
specs) but never writes.
"""

from __future__ import annotations

import os
import sys


# Set by harden_sys_path: the directory `python -m sandbox` was started from
# (Python put it first on sys.path, before any of our code ran), and every
# directory it took off sys.path.  Python searched them at start-up (for
# sitecustomize, among others), and will again next time: discover refuses
# to run when the command could write one of them.
started_from: str | None = None
dropped: tuple[str, ...] = ()


def trusted_dirs() -> list[str]:
    """The standard library and the site-packages directories, and nothing else."""
    import site

    stdlib = os.path.dirname(os.__file__)
    dirs = [stdlib, os.path.join(stdlib, "lib-dynload")]
    dirs += site.getsitepackages() if hasattr(site, "getsitepackages") else []
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return dirs


def harden_sys_path(path: list[str] | None = None, trusted: list[str] | None = None,
                    module_run: bool = False) -> None:
    """Cut ``path`` down to the standard library and site-packages.

    Everything else goes: the current directory (``python -m``),
    ``PYTHONPATH``, and directories that ``.pth`` files add (an editable
    install of the project being worked on puts the workspace there).  A
    directory left anywhere on the path is searched by every import that
    fails, and the standard library tries modules that are meant to be
    missing (``org``, ``_winapi``...), so a file planted there would run.
    The sandbox's own submodules are found through the package's
    ``__path__``, not ``sys.path``.
    """
    global started_from, dropped
    path = sys.path if path is None else path
    trusted = trusted_dirs() if trusted is None else trusted
    keep = {os.path.realpath(d) for d in trusted}
    if module_run and path and path[0] and not sys.flags.safe_path:
        started_from = path[0]  # `python -m`: the current directory, searched first
    libdir = os.path.dirname(os.path.dirname(os.__file__))  # holds python3X.zip, if any
    kept = [e for e in path if e and (os.path.realpath(e) in keep
                                      or e.endswith(".zip") and os.path.dirname(e) == libdir)]
    dropped = tuple(os.path.realpath(e or ".") for e in path if e not in kept)
    path[:] = kept


# Modules the wrapper or the proxy may import only after the command has
# started; where they live is protected even if nothing has loaded them yet.
LATE_IMPORTS = ("h11", "json", "ctypes", "mmap", "threading", "ipaddress", "http", "resource",
                "select", "socket", "sysconfig")


def install_paths() -> tuple[str, ...]:
    """Files and directories the running sandbox imports code from, outermost first.

    Not ``sys.prefix`` as a whole: for a system install that is ``/usr``,
    and a workspace under ``/usr/local/src`` is not sandbox code.  The
    interpreter's directory and a venv's ``pyvenv.cfg`` are included: the
    next run starts from them.
    """
    import importlib.util
    import sysconfig

    import sandbox

    found = [os.path.dirname(sandbox.__file__), os.path.dirname(sys.executable)]
    found += trusted_dirs()  # also those that do not exist yet: see _existing
    if sys.pycache_prefix:
        found.append(sys.pycache_prefix)  # bytecode that would be trusted next time
    cfg = os.path.join(sys.prefix, "pyvenv.cfg")
    if os.path.exists(cfg):
        found.append(cfg)
    paths = sysconfig.get_paths()
    found += [paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths]
    for name in LATE_IMPORTS:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            found += list(spec.submodule_search_locations or ())
            if spec.origin and os.path.isabs(spec.origin):
                found.append(os.path.dirname(spec.origin))
    # the directory of every module already loaded from elsewhere
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file:
            found.append(os.path.dirname(file))
    out: list[str] = []
    for p in sorted({_existing(os.path.realpath(p)) for p in found if p}, key=len):
        if not any(p == o or p.startswith(o.rstrip("/") + "/") for o in out):
            out.append(p)
    return tuple(out)


def _existing(path: str) -> str:
    """``path``, or its nearest existing parent: a site directory that does not
    exist yet is added to sys.path by the next start once it does, so the
    place where it would be created is what must stay read-only."""
    while not os.path.lexists(path) and path != "/":
        path = os.path.dirname(path)
    return path
