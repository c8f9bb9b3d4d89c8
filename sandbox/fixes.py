"""The narrowest fix for each reason user namespaces are blocked, as text.

``hint`` is one line for ``sandbox run``'s error; ``steps`` is what
``sandbox doctor`` prints.  Narrowest first: a permission for bwrap alone
before a host-wide switch, a container seccomp profile that allows just the
calls bwrap makes before ``seccomp=unconfined`` (never suggested) or
``--privileged`` (never suggested).  docs/ci.md has the same recipes with
their reasons; tests/test_doctor.py keeps the profile text in step.
"""

from __future__ import annotations

# The profile Ubuntu's own packages use for programs that may make user
# namespaces (e.g. /etc/apparmor.d/chrome on 24.04): it confines nothing, it
# only grants 'userns' to this one binary, where the host-wide sysctl would
# grant it to every program.
APPARMOR_PROFILE = """abi <abi/4.0>,
include <tunables/global>

profile bwrap {bwrap} flags=(unconfined) {{
  userns,

  include if exists <local/bwrap>
}}
"""
APPARMOR_FILE = "/etc/apparmor.d/bwrap"

# What bwrap needs from a container's seccomp profile on top of the runtime's
# default (ci.md shows how to build the file from it)
SECCOMP_PROFILE_NAME = "sandbox-userns.json"
SECCOMP_EXTRA_CALLS = ("clone", "unshare", "mount", "umount2", "pivot_root")
# AppArmor profiles container runtimes put their containers under
CONTAINER_APPARMOR = ("docker-default", "containers-default", "cri-containerd")


def ci_doc() -> str:
    """The installed ci.md, for hints (a source-tree path means nothing to a wheel user)."""
    from sandbox import resources

    return resources.doc("ci.md")


def apparmor_profile(bwrap: str) -> str:
    return APPARMOR_PROFILE.format(bwrap=bwrap)


def hint(cause: str, bwrap: str = "/usr/bin/bwrap", container: str | None = None) -> str:
    """One line: what to do about ``cause`` (a ``hostprobe.Userns`` cause)."""
    if cause == "container_seccomp":
        where = ("the pod's securityContext.seccompProfile (type Localhost)"
                 if container == "kubernetes" else
                 f"--security-opt seccomp={SECCOMP_PROFILE_NAME}")
        return (f"start the container with {where}: the runtime's default profile plus "
                f"{', '.join(SECCOMP_EXTRA_CALLS)} (see {ci_doc()}; 'sandbox doctor' says the rest); "
                "not seccomp=unconfined or --privileged")
    if cause == "apparmor":
        return (f"give bwrap the AppArmor 'userns' permission: 'sandbox doctor' prints the "
                f"profile for {APPARMOR_FILE} (then: sudo apparmor_parser -r {APPARMOR_FILE}); "
                "host-wide fallback: sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0")
    if cause in ("max_user_namespaces", "userns_limit"):
        return ("raise the limit on the host: sudo sysctl -w user.max_user_namespaces=15000 "
                "(and put it in /etc/sysctl.d/ to keep it)")
    if cause == "unprivileged_userns_clone":
        return ("allow unprivileged user namespaces on the host: "
                "sudo sysctl -w kernel.unprivileged_userns_clone=1 (and put it in /etc/sysctl.d/)")
    if cause == "missing_capability":
        return ("this kernel lets only CAP_SYS_ADMIN make user namespaces: allow unprivileged "
                "ones on the host (sysctl kernel.unprivileged_userns_clone=1) rather than "
                "granting the capability")
    if cause == "lsm":
        return ("allow user namespace creation for this process's security context "
                "(SELinux: the user_namespace create permission; AppArmor: 'userns,' in its "
                "profile)")
    if cause == "container_apparmor":
        return ("start the container with --security-opt apparmor=unconfined, or a copy of its "
                "AppArmor profile that allows mount and pivot_root (Kubernetes: "
                "securityContext.appArmorProfile)")
    if cause == "container_proc":
        return ("start the container with --security-opt systempaths=unconfined (Kubernetes: "
                "procMount: Unmasked)")
    if cause == "inside_sandbox":
        return ("run the command directly, it is sandboxed already; or start 'sandbox run' "
                "from outside the sandbox")
    if cause == "no_kernel_support":
        return "use a kernel built with CONFIG_USER_NS=y"
    if cause == "bwrap_missing":
        return ("install it: sudo apt-get install bubblewrap (Debian/Ubuntu), "
                "sudo dnf install bubblewrap (Fedora)")
    return "run 'sandbox doctor' to see what this host refuses"


def steps(cause: str, bwrap: str = "/usr/bin/bwrap", container: str | None = None,
          apparmor_label: str | None = None, proc_masked: bool = False) -> list[str]:
    """The fix for ``doctor``, as lines (narrowest first, fallback last)."""
    if cause == "apparmor":
        profile = apparmor_profile(bwrap).rstrip("\n").splitlines()
        return ([f"give bwrap (and only bwrap) the 'userns' permission; as root write "
                 f"{APPARMOR_FILE}:"]
                + ["    " + line for line in profile]
                + [f"  then: sudo apparmor_parser -r {APPARMOR_FILE}",
                   "  fallback (every program on the host may then make user namespaces):",
                   "    sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"])
    if cause == "container_seccomp":
        calls = ", ".join(SECCOMP_EXTRA_CALLS)
        out = [f"the container's seccomp profile refuses {calls} (bwrap needs them; inside its "
               "own user namespace they reach nothing of the container's)"]
        if container == "kubernetes":
            out += ["  pod spec: securityContext.seccompProfile: {type: Localhost, "
                    f"localhostProfile: {SECCOMP_PROFILE_NAME}}}",
                    f"  ({SECCOMP_PROFILE_NAME} on each node under the kubelet's seccomp "
                    "directory: the runtime's default profile plus those calls)"]
        else:
            out += [f"  docker run --security-opt seccomp={SECCOMP_PROFILE_NAME} ...   "
                    "(podman run: the same option)",
                    f"  {SECCOMP_PROFILE_NAME}: the runtime's default profile plus those calls; "
                    f"{ci_doc()} shows the one-line jq to make it"]
        if apparmor_label and apparmor_label.startswith(CONTAINER_APPARMOR):
            out.append(f"  this container is also confined by AppArmor '{apparmor_label}', "
                       "which refuses mount: add --security-opt apparmor=unconfined or a "
                       "profile that allows mount (Kubernetes: appArmorProfile)")
        if proc_masked:
            out.append("  /proc is partly masked here, so a new /proc is refused: add "
                       "--security-opt systempaths=unconfined (Kubernetes: procMount: Unmasked)")
        out.append("  not --privileged, not seccomp=unconfined: they open far more than bwrap "
                   "needs")
        return out
    return [hint(cause, bwrap, container)]
