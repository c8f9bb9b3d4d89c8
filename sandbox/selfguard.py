"""Keep the sandbox's own code out of the sandboxed command's reach.

The wrapper and the egress proxy run on the host, unconfined, and they
import modules *after* the command has started: the proxy when the command
first connects, the wrapper for the audit and the report when the command
ends.  If the command could write any file those imports read, it would run
code on the host.  Two things stop that:

* ``harden_sys_path`` (called first thing in ``__main__``): entries that
  come before the standard library (the current directory for
  ``python -m sandbox``, the script's directory, ``PYTHONPATH``) move to the
  end of ``sys.path``, so nothing there can shadow a module the sandbox uses.
  The sandbox's own submodules are found through the package's ``__path__``,
  not ``sys.path``.
* ``install_paths`` lists where the running sandbox loads code from (its
  package, the interpreter's directory, the standard library,
  site-packages, the modules it imports late); ``discover`` makes any of
  them that sits inside a writable root read-only, like a protected path,
  and refuses to run when a writable root is one of them or lies inside
  one.

Standard library only; no I/O beyond ``realpath``.
"""

from __future__ import annotations

import os
import sys


def harden_sys_path(path: list[str] | None = None) -> None:
    """Move entries that precede the standard library to the end of ``path``."""
    path = sys.path if path is None else path
    stdlib = os.path.dirname(os.__file__)
    first = next((i for i, entry in enumerate(path)
                  if entry and os.path.realpath(entry) == os.path.realpath(stdlib)), None)
    if first is None:
        return
    # zip archives of the standard library (python3X.zip) come just before it
    while first > 0 and path[first - 1].endswith(".zip"):
        first -= 1
    moved = path[:first]
    del path[:first]
    path.extend(e for e in moved if e)  # '' (the current directory) is dropped


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
    for p in sorted({os.path.realpath(p) for p in found if p}, key=len):
        if not any(p == o or p.startswith(o.rstrip("/") + "/") for o in out):
            out.append(p)
    return tuple(out)
