"""Reading files a sandboxed command may have planted, without being fooled.

A name under a writable root can be a FIFO (an open() that never returns),
a symlink to a device (opening some devices has effects), or a huge file.
``read_text`` opens without following a final symlink and without
blocking, refuses anything that is not a regular file, and reads at most
``limit`` characters.
"""

from __future__ import annotations

import os
import stat


def read_text(path: str, limit: int = 1 << 20, dir_fd: int | None = None) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limit)
        return data.decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)
