"""The few C library calls the standard library lacks, without ``ctypes``.

``import ctypes`` costs about 1.5 ms (it builds dozens of classes), which a
run without network would pay on every start before Python 3.12 (for
``unshare``).  A function pointer with an ``int`` result needs only the C
module ``_ctypes`` (about 0.4 ms): the two classes below are what ctypes
itself defines for ``c_int`` and for a ``CDLL`` function with
``use_errno=True``.  Arguments may be Python ints (passed as C ``int``) and
bytes (passed as ``char *``).
"""

from __future__ import annotations

import _ctypes


class _Int(_ctypes._SimpleCData):  # ctypes.c_int
    _type_ = "i"


class _Function(_ctypes.CFuncPtr):  # a CDLL function: cdecl, int result, errno saved
    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = _Int


class _Process:
    """The symbols already loaded in this process (``dlopen(NULL)``), as ctypes wants a library."""

    _handle = _ctypes.dlopen(None, 0)


def function(name: str):
    """The C library function ``name``, returning an int; errno via ``errno()``."""
    return _Function((name, _Process))


def errno() -> int:
    """The errno the last call through ``function`` left."""
    return _ctypes.get_errno()
