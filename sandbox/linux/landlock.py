"""Landlock through ctypes: ABI detection, rulesets, rules, restrict_self.

No compiler and no third-party module: the three system calls are reached
through libc's ``syscall()``.  Their numbers are the same on every
architecture that has Landlock (the generic table: 444, 445, 446).

A ruleset names the accesses it *handles*; everything handled is refused
unless a rule grants it beneath some path (or for some port).  Accesses a
kernel does not know are never handled, so the masks below depend on the
ABI the kernel reports:

* ABI 1: filesystem reads, writes, creations and removals;
* ABI 2: ``REFER`` (rename and link across directories);
* ABI 3: ``TRUNCATE``;
* ABI 4: TCP ``bind`` and ``connect`` by port;
* ABI 5: ``IOCTL_DEV`` (ioctl on device files; not handled here: terminals
  need their ioctls, and the seccomp filter refuses TIOCSTI);
* ABI 6: scopes: signals and abstract unix sockets cannot reach processes
  outside the sandbox's domain.

This module only talks to the kernel; ``sandbox.linux.confine`` decides what to
grant.
"""

from __future__ import annotations

import ctypes
import os

SYS_CREATE_RULESET = 444
SYS_ADD_RULE = 445
SYS_RESTRICT_SELF = 446
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1
RULE_NET_PORT = 2

# filesystem accesses (include/uapi/linux/landlock.h)
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5

# network accesses (ABI 4)
NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1

# scopes (ABI 6)
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

READ = EXECUTE | READ_FILE | READ_DIR
# what may be granted on a file (not a directory): the kernel refuses the rest
FILE_ACCESS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64),
                ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in the kernel's header: 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPort(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


_libc = None


def _syscall():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc.syscall


def abi_version() -> int:
    """The Landlock ABI this kernel offers; 0 when it has none (or it is off)."""
    try:
        got = _syscall()(ctypes.c_long(SYS_CREATE_RULESET), None, ctypes.c_size_t(0),
                         ctypes.c_uint32(CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(int(got), 0)


def fs_mask(abi: int) -> int:
    """Every filesystem access this ABI can handle (IOCTL_DEV left out, see above)."""
    if abi < 1:
        return 0
    mask = (1 << 13) - 1
    if abi >= 2:
        mask |= REFER
    if abi >= 3:
        mask |= TRUNCATE
    return mask


def write_mask(abi: int) -> int:
    """What a writable root grants: everything but device nodes."""
    return fs_mask(abi) & ~(MAKE_CHAR | MAKE_BLOCK)


def net_mask(abi: int) -> int:
    return NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0


def scope_mask(abi: int) -> int:
    return SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return int(result)


class Ruleset:
    """One ruleset under construction; ``fd`` is what ``restrict_self`` takes.

    Made in the parent: only ``restrict_self`` changes the calling process,
    so the child after fork has one system call left to make.
    """

    def __init__(self, abi: int, fs: int, net: int = 0, scoped: int = 0) -> None:
        self.abi = abi
        self.fs = fs
        attr = _RulesetAttr(fs, net, scoped)
        # older ABIs know a shorter struct: give the size they expect
        size = 24 if abi >= 6 else 16 if abi >= 4 else 8
        self.fd = _check(_syscall()(ctypes.c_long(SYS_CREATE_RULESET), ctypes.byref(attr),
                                    ctypes.c_size_t(size), ctypes.c_uint32(0)),
                         "landlock_create_ruleset")
        os.set_inheritable(self.fd, False)

    def allow_fd(self, fd: int, access: int, is_dir: bool) -> None:
        """Grant ``access`` beneath the file or directory open at ``fd``."""
        access &= self.fs if is_dir else self.fs & FILE_ACCESS
        if not access:
            return
        attr = _PathBeneath(access, fd)
        _check(_syscall()(ctypes.c_long(SYS_ADD_RULE), ctypes.c_int(self.fd),
                          ctypes.c_int(RULE_PATH_BENEATH), ctypes.byref(attr), ctypes.c_uint32(0)),
               "landlock_add_rule")

    def allow_path(self, path: str, access: int) -> bool:
        """Grant ``access`` beneath ``path``; False when it does not exist."""
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            import stat

            self.allow_fd(fd, access, stat.S_ISDIR(os.fstat(fd).st_mode))
        finally:
            os.close(fd)
        return True

    def allow_port(self, port: int, access: int) -> None:
        attr = _NetPort(access, port)
        _check(_syscall()(ctypes.c_long(SYS_ADD_RULE), ctypes.c_int(self.fd),
                          ctypes.c_int(RULE_NET_PORT), ctypes.byref(attr), ctypes.c_uint32(0)),
               "landlock_add_rule (port)")

    def restrict_self(self) -> None:
        """Enforce the ruleset on this thread and its future children (needs
        no_new_privs or CAP_SYS_ADMIN); irreversible."""
        _check(_syscall()(ctypes.c_long(SYS_RESTRICT_SELF), ctypes.c_int(self.fd),
                          ctypes.c_uint32(0)), "landlock_restrict_self")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
