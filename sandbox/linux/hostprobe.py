"""What this host lets the sandbox enforce, and why not: the facts ``doctor`` reads.

Each probe reads a file or asks the kernel once; none changes this process
(the ones that try ``unshare`` or ``clone`` run in a forked child through
``sandbox.runner.in_child``, since a seccomp filter may kill the caller).

User namespaces are what bwrap needs and what hosts most often refuse, and
the fix depends on *who* refuses them, so ``userns`` tells the causes apart:

* a **seccomp filter** (Docker's, Podman's, containerd's default profile, a
  Kubernetes ``RuntimeDefault``, systemd's ``RestrictNamespaces=``) answers
  before the kernel looks at the arguments.  ``unshare(CLONE_NEWUSER |
  CLONE_SETTLS)`` and ``clone(CLONE_NEWUSER | CLONE_FS)`` are invalid flag
  sets the kernel itself refuses with EINVAL; EPERM for them can only come
  from a filter.  Neither call can succeed, so the probe changes nothing;
* **Ubuntu's AppArmor rule** (``kernel.apparmor_restrict_unprivileged_userns
  = 1``, 23.10 and later, GitHub's ubuntu-24.04 runners): the namespace is
  made but has no capabilities, so bwrap fails while setting it up;
* **sysctls**: ``user.max_user_namespaces = 0`` (ENOSPC) or Debian's old
  ``kernel.unprivileged_userns_clone = 0`` (EPERM without CAP_SYS_ADMIN);
* an **LSM** (SELinux, an AppArmor profile confining this process): EACCES;
* **already inside a sandbox** (``sandbox.linux.nesting``).

``sandbox.linux.usernsgate.quick`` is the cheap subset that runs before every
start of bwrap: a few small file reads, and the filter probe here only when
this process is under a seccomp filter at all (a container, or nesting).
"""

from __future__ import annotations

import errno
import os

from sandbox.fixes import CONTAINER_APPARMOR
from sandbox.linux.usernsgate import (MAX_USERNS_SYSCTL, USERNS_CLONE_SYSCTL, Userns, quick,
                                read_int as sysctl_int, status as status_fields)

# clone(2) / unshare(2) flags
CLONE_FS = 0x00000200
CLONE_SETTLS = 0x00080000
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
CAP_SYS_ADMIN = 21  # the same as usernsgate's
# syscall numbers (x86_64 / the generic table used by aarch64, riscv64...)
_SYSCALLS = {"x86_64": {"clone": 56, "unshare": 272, "landlock_create_ruleset": 444},
             "aarch64": {"clone": 220, "unshare": 97, "landlock_create_ruleset": 444},
             "riscv64": {"clone": 220, "unshare": 97, "landlock_create_ruleset": 444}}
LANDLOCK_CREATE_RULESET_VERSION = 1

APPARMOR_SYSCTL = "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"

CI_VARS = (("GITHUB_ACTIONS", "github-actions"), ("GITLAB_CI", "gitlab-ci"),
           ("BUILDKITE", "buildkite"), ("CIRCLECI", "circleci"), ("JENKINS_URL", "jenkins"),
           ("TF_BUILD", "azure-pipelines"), ("TRAVIS", "travis"),
           ("BITBUCKET_BUILD_NUMBER", "bitbucket"), ("TEAMCITY_VERSION", "teamcity"),
           ("CI", "ci"))


class Host:
    """Everything ``doctor`` reports about this host, as plain data."""

    FIELDS = ("kernel", "arch", "uid", "caps", "bwrap", "bwrap_version", "bwrap_problem",
              "userns", "seccomp_filter_mode", "libseccomp", "filtered", "no_new_privs",
              "landlock_abi", "landlock_problem", "cgroup", "cgroup_controllers",
              "cgroup_problem", "container", "ci", "apparmor_label", "proc_masked", "sysctls")

    def __init__(self) -> None:
        self.kernel = self.arch = ""
        self.uid = self.caps = self.filtered = self.landlock_abi = 0
        self.bwrap = self.bwrap_version = self.bwrap_problem = self.libseccomp = None
        self.userns = Userns(False, "unknown")
        self.seccomp_filter_mode = self.no_new_privs = self.proc_masked = False
        self.landlock_problem = self.cgroup_problem = ""
        self.cgroup = self.container = self.ci = self.apparmor_label = None
        self.cgroup_controllers: tuple[str, ...] = ()
        self.sysctls: dict = {}

    def as_dict(self) -> dict:
        out = {name: getattr(self, name) for name in self.FIELDS}
        out["userns"] = self.userns.as_dict()
        out["caps"] = f"{self.caps:016x}"
        out["cgroup_controllers"] = list(self.cgroup_controllers)
        return out


# -- small readers -----------------------------------------------------------------

def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _has_cap(caps: int, cap: int) -> bool:
    return bool(caps >> cap & 1)


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _syscall_errno(name: str, *args: int) -> int:
    """errno of a raw syscall that must fail (0 if it returned >= 0; -1 when this
    architecture's number is not known here)."""
    import ctypes

    number = _SYSCALLS.get(os.uname().machine, {}).get(name)
    if number is None:
        return -1
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    rc = libc.syscall(ctypes.c_long(number), *(ctypes.c_ulong(a) for a in args))
    if rc == 0 and name == "clone":  # a kernel that took the flags: we are the child
        os._exit(0)
    if rc > 0 and name == "clone":
        os.waitpid(rc, 0)
    return ctypes.get_errno() if rc < 0 else 0


# -- user namespaces ---------------------------------------------------------------

def filter_refuses() -> str | None:
    """In a child: do the kernel-invalid namespace calls get EPERM (a filter)?"""
    from sandbox import runner

    def probe() -> bytes:
        a = _syscall_errno("unshare", CLONE_NEWUSER | CLONE_SETTLS)
        b = _syscall_errno("clone", CLONE_NEWUSER | CLONE_FS, 0, 0, 0, 0)
        return f"{a} {b}".encode()

    out = runner.in_child(probe)
    if out is None:
        return "the probe was killed (a seccomp filter whose action kills the caller)"
    try:
        unshare_err, clone_err = (int(x) for x in out.split())
    except ValueError:
        return None
    # ENOSYS too (a filter may answer so); -1: an architecture we have no numbers for
    refused = [n for n, e in (("unshare", unshare_err), ("clone", clone_err))
               if e in (errno.EPERM, errno.EACCES, errno.ENOSYS)]
    if not refused:
        return None
    return (f"a seccomp filter on this process (a container runtime's default profile, or "
            f"systemd's RestrictNamespaces=) refuses {' and '.join(refused)}(CLONE_NEWUSER): "
            "they fail with EPERM for flags the kernel itself rejects with EINVAL")


def _steps() -> bytes:
    """In a child: make a user namespace the way bwrap does, step by step.

    Returns ``step errno``: 0 0 when all worked; else the step that failed.
    """
    libc = _libc()
    import ctypes

    def fail(step: int) -> bytes:
        return f"{step} {ctypes.get_errno()}".encode()

    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(CLONE_NEWUSER) != 0:
        return fail(1)
    try:
        for path, text in (("/proc/self/setgroups", "deny"),
                           ("/proc/self/uid_map", f"{uid} {uid} 1"),
                           ("/proc/self/gid_map", f"{gid} {gid} 1")):
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
    except OSError as exc:
        return f"2 {exc.errno}".encode()
    if libc.unshare(CLONE_NEWNS | CLONE_NEWNET) != 0:
        return fail(3)
    return b"0 0"


def userns(bwrap: str | None, status: dict[str, str] | None = None) -> Userns:
    """Why bwrap can or cannot make its namespaces here (runs bwrap once)."""
    from sandbox import runner

    if status is None:
        status = status_fields()
    if not os.path.exists("/proc/self/ns/user"):
        return Userns(False, "no_kernel_support", "the kernel has no user namespaces "
                      "(CONFIG_USER_NS is off)")
    certain = quick(status)
    if certain is not None:
        return certain
    if bwrap is None:
        return Userns(False, "bwrap_missing", "bwrap was not found")
    problem = runner.probe_namespaces(bwrap)
    if problem is None:
        return Userns(True, "ok", "bwrap made its namespaces")
    return explain_failure(problem, status)


def explain_failure(problem: str, status: dict[str, str] | None = None) -> Userns:
    """bwrap could not make its namespaces (its message: ``problem``): why?"""
    from sandbox import runner

    if status is None:
        status = status_fields()
    certain = quick(status)
    if certain is not None:
        return certain
    caps = int(status.get("CapEff", "0") or "0", 16)
    out = runner.in_child(_steps) or b"? 0"
    step, _, code = out.decode().partition(" ")
    err = int(code) if code.isdigit() else 0
    what = {"1": "unshare(CLONE_NEWUSER)", "2": "writing the uid map",
            "3": "a mount namespace inside it"}.get(step, "the probe")
    said = problem if problem.startswith("bwrap:") else f"bwrap: {problem}"
    seen = f"{said}; {what}: {os.strerror(err)}" if err else said
    if sysctl_int(APPARMOR_SYSCTL) == 1 and not _has_cap(caps, CAP_SYS_ADMIN):
        return Userns(False, "apparmor", "Ubuntu's AppArmor restricts unprivileged user "
                      "namespaces (kernel.apparmor_restrict_unprivileged_userns = 1) and "
                      "no AppArmor profile gives bwrap the 'userns' permission; " + seen)
    if err == errno.ENOSPC:
        return Userns(False, "userns_limit", "the user namespace limit is reached "
                      f"(user.max_user_namespaces = {sysctl_int(MAX_USERNS_SYSCTL)}); " + seen)
    if err == errno.EACCES:
        return Userns(False, "lsm", "a security module (SELinux, or an AppArmor profile "
                      "confining this process) refuses user namespaces; " + seen)
    if err == errno.EPERM and step == "1" and not _has_cap(caps, CAP_SYS_ADMIN):
        return Userns(False, "missing_capability", "user namespaces need CAP_SYS_ADMIN "
                      "here, which this process lacks; " + seen)
    if err == errno.EINVAL and step == "1":
        return Userns(False, "no_kernel_support", "the kernel refuses user namespaces; " + seen)
    if not err:  # the namespaces themselves can be made: what refused bwrap's mounts?
        label = apparmor_label() or ""
        if label.startswith(CONTAINER_APPARMOR):
            return Userns(False, "container_apparmor", f"this container's AppArmor profile "
                          f"'{label}' refuses the mounts bwrap makes; " + seen)
        if proc_masked() and "proc" in problem:
            return Userns(False, "container_proc", "this container masks parts of /proc, so "
                          "the kernel refuses a new /proc; " + seen)
    return Userns(False, "unknown", seen)


# -- the rest of the host ------------------------------------------------------------

def landlock_abi() -> tuple[int, str]:
    """(Landlock ABI version, why not when 0)."""
    def probe() -> bytes:
        import ctypes

        number = _SYSCALLS.get(os.uname().machine, {}).get("landlock_create_ruleset")
        if number is None:
            return b"0 unknown architecture"
        libc = _libc()
        libc.syscall.restype = ctypes.c_long
        rc = libc.syscall(ctypes.c_long(number), None, ctypes.c_size_t(0),
                          ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
        return f"{rc} {ctypes.get_errno() if rc < 0 else 0}".encode()

    from sandbox import runner

    out = runner.in_child(probe)  # a filter may kill the caller of an unknown syscall
    if out is None:
        return 0, "the probe was killed (a seccomp filter)"
    abi, _, code = out.decode().partition(" ")
    if abi.lstrip("-").isdigit() and int(abi) > 0:
        return int(abi), ""
    err = int(code) if code.isdigit() else 0
    why = {errno.ENOSYS: "the kernel has no Landlock (or a seccomp filter refuses it)",
           errno.EOPNOTSUPP: "Landlock is built in but not enabled (add landlock to the "
                             "kernel's lsm= boot parameter)"}.get(err, os.strerror(err) if err
                                                                  else code)
    return 0, why


def libseccomp_version() -> str | None:
    """libseccomp's version (the filter is compiled with it), or None if it cannot load."""
    try:
        import ctypes

        import pyseccomp
    except Exception:  # noqa: BLE001 - pyseccomp raises RuntimeError without the library
        return None
    try:
        class _Version(ctypes.Structure):
            _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint),
                        ("micro", ctypes.c_uint)]

        fn = pyseccomp._libseccomp.seccomp_version
        fn.restype = ctypes.POINTER(_Version)
        v = fn().contents
        return f"{v.major}.{v.minor}.{v.micro}"
    except Exception:  # noqa: BLE001 - loaded, version unknown
        return "?"


def cgroup() -> tuple[str | None, tuple[str, ...], str]:
    """(this process's cgroup v2 directory, controllers we could delegate, problem)."""
    from sandbox import runner

    path, problem = runner._own_cgroup()
    if path is None:
        return None, (), problem
    enabled = tuple((_read(os.path.join(path, "cgroup.subtree_control")) or "").split())
    if not os.access(path, os.W_OK):
        return path, (), f"{path} is not writable by this user (not delegated)"
    return path, enabled, "" if enabled else f"no controllers enabled in {path}/cgroup.subtree_control"


def container(environ: dict[str, str]) -> str | None:
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return "kubernetes"
    if os.path.exists("/.dockerenv"):
        return "docker"
    if os.path.exists("/run/.containerenv"):
        return "podman"
    if environ.get("container"):
        return environ["container"]
    text = _read("/proc/1/cgroup") or ""
    for mark, name in (("kubepods", "kubernetes"), ("docker", "docker"), ("libpod", "podman"),
                       ("containerd", "containerd"), ("lxc", "lxc")):
        if mark in text:
            return name
    return None


def ci(environ: dict[str, str]) -> str | None:
    for var, name in CI_VARS:
        value = environ.get(var, "")
        if value and value.lower() not in ("0", "false"):
            return name
    return None


def bwrap_version(path: str) -> tuple[str | None, str | None]:
    """(version, problem) of the bwrap at ``path``."""
    from sandbox import runner

    rc, out = runner.host_output([path, "--version"])
    if rc == 0 and out:
        return out.splitlines()[0], None
    return None, f"'{path} --version' failed: {out or rc}"


def apparmor_label() -> str | None:
    """This process's AppArmor confinement (``docker-default (enforce)``...)."""
    for path in ("/proc/self/attr/apparmor/current", "/proc/self/attr/current"):
        label = _read(path)
        if label:
            return label.rstrip("\x00") or None
    return None


def proc_masked() -> bool:
    """Are parts of /proc covered by mounts (a container's masked paths)?  Then
    the kernel refuses a new procfs in a user namespace unless /proc is unmasked."""
    text = _read("/proc/self/mountinfo") or ""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] in ("/proc/kcore", "/proc/keys", "/proc/timer_list",
                                              "/proc/scsi", "/proc/acpi"):
            return True
    return False


def probe(environ: dict[str, str], bwrap: str | None, bwrap_problem: str | None) -> Host:
    """Every fact ``doctor`` shows; ``bwrap`` as ``sandbox run`` would choose it."""
    status = status_fields()
    host = Host()
    host.kernel, host.arch = os.uname().release, os.uname().machine
    host.uid = os.getuid()
    host.caps = int(status.get("CapEff", "0") or "0", 16)
    host.bwrap, host.bwrap_problem = bwrap, bwrap_problem
    if bwrap is not None:
        host.bwrap_version, host.bwrap_problem = bwrap_version(bwrap)
    host.userns = userns(bwrap, status)
    host.seccomp_filter_mode = "Seccomp" in status and os.path.exists("/proc/sys/kernel/seccomp")
    host.libseccomp = libseccomp_version()
    host.filtered = int(status.get("Seccomp_filters", "0") or "0")
    host.no_new_privs = status.get("NoNewPrivs", "0") == "1"
    host.landlock_abi, host.landlock_problem = landlock_abi()
    host.cgroup, host.cgroup_controllers, host.cgroup_problem = cgroup()
    host.container = container(environ)
    host.ci = ci(environ)
    host.apparmor_label = apparmor_label()
    host.proc_masked = proc_masked()
    host.sysctls = {name: sysctl_int(path) for name, path in (
        ("user.max_user_namespaces", MAX_USERNS_SYSCTL),
        ("kernel.unprivileged_userns_clone", USERNS_CLONE_SYSCTL),
        ("kernel.apparmor_restrict_unprivileged_userns", APPARMOR_SYSCTL))}
    return host
