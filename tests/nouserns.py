"""Simulate a container that refuses new user namespaces, on this machine.

Docker's (and containerd's, Podman's, a Kubernetes ``RuntimeDefault``) seccomp
profile lets a container call ``clone`` only without namespace flags, refuses
``unshare``, ``setns``, ``mount``, ``umount2`` and ``pivot_root`` with EPERM
unless the container has CAP_SYS_ADMIN, and answers ``clone3`` with ENOSYS (so
libc falls back to ``clone``, where the flags can be checked).  A default
container's root also keeps only 14 capabilities in its bounding set.  That
is exactly what stops bwrap there, and what this helper reproduces:

    from tests import nouserns            (or: sys.path has tests/)
    subprocess.run(nouserns.prefix() + who.prefix() + [sandbox, "run", "--", "true"])

``prefix()`` is an argv prefix: the command after it runs under that filter
and, when the caller is root, with a default container's bounding set (the
capabilities are recomputed from it at the exec, as in a container).  Put
``Who.prefix()`` (setpriv to the test user) *after* it: the filter is
installed while still root, and the drop to the user happens inside, as in a
container whose entrypoint switches user.  By hand:

    .venv/bin/python tests/nouserns.py -- .venv/bin/sandbox doctor

Not simulated: the container's own mount namespace, its masked ``/proc``
paths and its AppArmor profile (docs/ci.md says what those need).
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys

# The capabilities a default Docker container keeps (moby's defaults list).
DOCKER_CAPS = ("chown", "dac_override", "fsetid", "fowner", "mknod", "net_raw", "setgid",
               "setuid", "setfcap", "setpcap", "net_bind_service", "sys_chroot", "kill",
               "audit_write")
_CAP_NUMBERS = {"chown": 0, "dac_override": 1, "fowner": 3, "fsetid": 4, "kill": 5,
                "setgid": 6, "setuid": 7, "setpcap": 8, "net_bind_service": 10, "net_raw": 13,
                "sys_chroot": 18, "mknod": 27, "audit_write": 29, "setfcap": 31}
CAP_SYS_ADMIN = 21
PR_CAPBSET_DROP = 24

# clone() flags Docker's profile refuses without CAP_SYS_ADMIN: CLONE_NEWNS,
# CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID,
# CLONE_NEWNET (its mask 0x7E020000)
NAMESPACE_FLAGS = 0x7E020000
# refused outright (EPERM), as the default profile does without CAP_SYS_ADMIN
REFUSED = ("unshare", "setns", "mount", "umount2", "pivot_root", "fsopen", "fsmount",
           "move_mount", "open_tree")


def prefix() -> list[str]:
    """argv prefix that runs the rest of the argv in the simulated container."""
    return [sys.executable, os.path.abspath(__file__), "--"]


def unavailable() -> str | None:
    """Why the simulation cannot run here (a skip reason), or None."""
    try:
        import pyseccomp  # noqa: F401
    except ImportError as exc:
        return f"pyseccomp (libseccomp) is needed for the simulation: {exc}"
    return None


def _has_cap(cap: int) -> bool:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> cap & 1)
    return False


def _drop_bounding_set() -> None:
    """Keep only DOCKER_CAPS in the bounding set (root only: needs CAP_SETPCAP)."""
    libc = ctypes.CDLL(None, use_errno=True)
    keep = {_CAP_NUMBERS[c] for c in DOCKER_CAPS}
    with open("/proc/sys/kernel/cap_last_cap") as fh:
        last = int(fh.read())
    for cap in range(last + 1):
        if cap not in keep and libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"PR_CAPBSET_DROP {cap}")


def install_filter() -> None:
    import pyseccomp as sc

    flt = sc.SyscallFilter(defaction=sc.ALLOW)
    # Without CAP_SYS_ADMIN the kernel wants no_new_privs for a filter; a
    # container's runtime has the capability and leaves no_new_privs off
    flt.set_attr(sc.Attr.CTL_NNP, 0 if _has_cap(CAP_SYS_ADMIN) else 1)
    for name in REFUSED:
        flt.add_rule(sc.ERRNO(errno.EPERM), name)
    for bit in range(32):
        if NAMESPACE_FLAGS >> bit & 1:
            flt.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, 1 << bit, 1 << bit))
    flt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    flt.load()


def main(argv: list[str]) -> int:
    if argv[:1] != ["--"] or len(argv) < 2:
        print("usage: nouserns.py -- COMMAND [ARGS]...", file=sys.stderr)
        return 2
    if os.getuid() == 0:
        _drop_bounding_set()
    install_filter()
    cmd = argv[1:]
    try:
        os.execvp(cmd[0], cmd)
    except OSError as exc:
        print(f"nouserns: cannot run {cmd[0]}: {exc.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
