"""Is this process already inside a ``sandbox run``?  (Only to explain a failure.)

A sandboxed command cannot start another sandbox: bwrap's ``--disable-userns``
and the seccomp filter refuse new user namespaces, so bwrap fails the way it
does on hosts that block them (Ubuntu's AppArmor rule, Docker's seccomp
profile), and the hint for those would send the user the wrong way.

``SANDBOX_ACTIVE=1`` in the environment is a hint but not proof: the command
can remove it or set it anywhere.  What the command cannot change from
inside is the hostname our UTS namespace was given (``sethostname`` needs
a capability it does not have) and the one-uid map of the user namespace
bwrap made; a host whose init namespace is called "sandbox" has a full map.
"""

from __future__ import annotations

HOSTNAME = "sandbox"  # sandbox.linux.bwrap gives every sandbox this name


def _in_user_namespace() -> bool:
    """True unless the uid map is the init namespace's identity map of all uids."""
    try:
        with open("/proc/self/uid_map", encoding="ascii") as fh:
            rows = [line.split() for line in fh if line.strip()]
    except OSError:
        return False
    return rows != [["0", "0", "4294967295"]]


def inside_sandbox() -> bool:
    import os

    return os.uname().nodename == HOSTNAME and _in_user_namespace()
