"""Before bwrap starts: are user namespaces certainly refused here?

Runs on every ``sandbox run`` (the cached fast path too), so it stays tiny:
``/proc/self/status`` and two sysctls, a few tens of microseconds.  Only
when a seccomp filter is already on this process (a container, an
enclosing sandbox) does it fork the filter probe of ``sandbox.linux.hostprobe``.
A cause found here is certain; anything else is left to bwrap's own start,
and ``hostprobe.explain_failure`` names it if bwrap fails.
"""

from __future__ import annotations

CAP_SYS_ADMIN = 21
MAX_USERNS_SYSCTL = "/proc/sys/user/max_user_namespaces"
USERNS_CLONE_SYSCTL = "/proc/sys/kernel/unprivileged_userns_clone"


class Userns:
    """Can bwrap make its namespaces here?  ``cause`` is a stable code:

    ok | container_seccomp | apparmor | max_user_namespaces |
    unprivileged_userns_clone | missing_capability | lsm | inside_sandbox |
    no_kernel_support | userns_limit | container_apparmor | container_proc |
    bwrap_missing | unknown
    """

    __slots__ = ("ok", "cause", "detail")

    def __init__(self, ok: bool, cause: str, detail: str = "") -> None:
        self.ok, self.cause, self.detail = ok, cause, detail

    def as_dict(self) -> dict:
        return {"ok": self.ok, "cause": self.cause, "detail": self.detail}


def read_int(path: str) -> int | None:
    try:
        with open(path, "rb") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return None


def status() -> dict[str, str]:
    """The fields of /proc/self/status (bytes read: no codec import on the fast path)."""
    try:
        with open("/proc/self/status", "rb") as fh:
            text = fh.read().decode("latin-1")
    except OSError:
        return {}
    return dict((k, v.strip()) for k, _, v in (line.partition(":") for line in text.splitlines()))


def has_sys_admin(fields: dict[str, str]) -> bool:
    try:
        return bool(int(fields.get("CapEff", "0"), 16) >> CAP_SYS_ADMIN & 1)
    except ValueError:
        return False


def quick(fields: dict[str, str] | None = None) -> Userns | None:
    """The causes that are certain without starting bwrap, or None."""
    if fields is None:
        fields = status()
    if read_int(MAX_USERNS_SYSCTL) == 0:
        return Userns(False, "max_user_namespaces", "user.max_user_namespaces = 0")
    if read_int(USERNS_CLONE_SYSCTL) == 0 and not has_sys_admin(fields):
        return Userns(False, "unprivileged_userns_clone",
                      "kernel.unprivileged_userns_clone = 0 and this process has no "
                      "CAP_SYS_ADMIN")
    if fields.get("Seccomp", "0") not in ("0", ""):
        from sandbox.linux import nesting

        if nesting.inside_sandbox():
            return Userns(False, "inside_sandbox", "this process runs inside a sandbox already")
        from sandbox.linux import hostprobe

        refused = hostprobe.filter_refuses()
        if refused:
            return Userns(False, "container_seccomp", refused)
    return None
