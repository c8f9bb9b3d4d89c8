"""Policy + Layout -> bubblewrap argv.  A pure function: no I/O, no spawning.

bwrap applies its arguments in order, and a later mount covers an earlier
one at the same or a parent path.  The order below is therefore part of the
policy's meaning (tests pin it exactly):

1. namespaces and process options;
2. ``--ro-bind / /``: the whole host, read-only;
3. fresh ``/dev`` and ``/proc`` (they must cover the host's), with
   ``/proc/sys`` and the other kernel knobs made read-only on top;
4. private scratch (``/tmp``, ``/var/tmp``, ``/dev/shm``) and the empty dirs
   (``/run``...) as tmpfs, *before* the workspace, so a workspace under
   ``/tmp`` is still the real host directory mounted on top; then, read-only,
   the host directory just below a scratch dir that holds a deeper workspace
   or writable root (``/tmp/repo`` for ``/tmp/repo/sub``): the repository
   around it stays whole (git's discovery stops where the device changes),
   and a write beside it fails instead of landing in the tmpfs; then the
   sandbox's own state directory (plans, scans, quarantine) as an empty
   tmpfs, before step 5 binds the workspace's tool-cache dir inside it;
5. writable roots (workspace, extra writable paths, git dirs, caches);
6. keep-in-place binds: parents of protected paths and ``.git`` directories
   become mount points, which cannot be renamed (rename(2) gives EBUSY), so
   ``mv .git x; mkdir -p .git/hooks`` cannot plant a hook;
7. protected paths, read-only, on top of the writable roots;
7b. without network, ``/etc/resolv.conf`` naming the run's own resolver
   (``sandbox.egress.dns``): after the writable roots so none covers it, before
   the secrets so a mask still wins;
8. secrets last, so no earlier bind can re-expose them: directories become
   an empty read-only tmpfs, files, host sockets and FIFOs an empty
   read-only file; a secret-named file git already holds is bound read-only
   with the content git has for it (sandbox.secretfiles);
9. ``--remount-ro`` for tmpfs mounts that had to stay writable while bwrap
   created mount points inside them (it is not recursive, so the binds on
   top keep their own flags);
10. (not made here) masks for host sockets bound after a cached plan was
   made, which the fast path appends after all of these, just before
   ``--chdir`` (``sandbox.linux.drift.add_masks``).

Every bind is ``nodev`` (bwrap gives device access only with
``--dev-bind``): a device node outside the fresh ``/dev`` cannot be opened.
Mounts whose host path vanished before bwrap could make them are dropped
at start-up (``sandbox.linux.drift.prune``).
"""

from __future__ import annotations

from sandbox.envfilter import sandbox_env
from sandbox.invocation import Invocation
from sandbox.layout import SCRATCH_DIRS, Layout
from sandbox.policy import Access, NetworkMode, Policy

SCRATCH = SCRATCH_DIRS
PROC_READ_ONLY = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus")
STATUS_FD = 3
SECCOMP_FD = 4


def namespace_args(policy: Policy) -> list[str]:
    args = [
        # a user namespace even for root: capabilities are dropped inside it
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
    ]
    if policy.network is NetworkMode.NONE:
        # loopback only.  The argv stays runnable as it is (explain,
        # --dry-run); a run drops this option only when it starts bwrap in
        # a namespace of its own that holds the name resolver (sandbox.egress.dns)
        args.append("--unshare-net")
    # NetworkMode.PROXY: no --unshare-net here, because the runner starts
    # bwrap inside the egress bridge's network namespace (sandbox.egress.netns),
    # which is already private; execute refuses this argv without it.
    args += [
        # no nested user namespaces: they are the usual door to kernel bugs
        "--disable-userns",
        "--die-with-parent",
        # a new session: the command has no controlling terminal, so TIOCSTI
        # cannot push keystrokes into the caller's terminal
        "--new-session",
        "--cap-drop", "ALL",
        "--hostname", "sandbox",
    ]
    return args


def mount_args(policy: Policy, layout: Layout) -> list[str]:
    args = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    # Kernel knobs in the fresh /proc stay writable for a caller who is root
    # (uid 0 inside maps to uid 0 outside, and /proc/sys checks only the
    # uid): measured here, kernel.core_pattern could be rewritten.  Cover
    # them with read-only binds; values under /proc/sys/net still follow the
    # reader's own network namespace.
    for sub in PROC_READ_ONLY:
        args += ["--ro-bind-try", sub, sub]
    for d in SCRATCH:
        args += ["--tmpfs", d]
    for d in layout.empty_dirs:
        args += ["--tmpfs", d]
    for d in layout.scratch_parents:
        args += ["--ro-bind", d, d]
    if layout.state_dir:
        # bind sources are read from the host's tree, so the empty file and
        # the cache dir still come from here; the command sees neither the
        # quarantine nor the plans and scans of other workspaces
        args += ["--tmpfs", layout.state_dir]
    if policy.workspace is Access.READ:
        # visible even when it lives under a private dir such as /tmp
        args += ["--ro-bind", layout.workspace, layout.workspace]
    for root in layout.writable_roots:
        args += ["--bind", root, root]
    for path in layout.keep_in_place:
        args += ["--bind", path, path]
    for path in layout.read_only:
        args += ["--ro-bind", path, path]
    if layout.resolv_conf is not None:
        args += ["--ro-bind", *layout.resolv_conf]
    for d in layout.masked_dirs:
        args += ["--tmpfs", d, "--remount-ro", d]
    for source, target in layout.tracked_secrets:
        args += ["--ro-bind", source, target]
    for f in layout.masked_files:
        args += ["--ro-bind", layout.empty_file, f]
    for d in layout.empty_dirs:
        args += ["--remount-ro", d]
    if layout.state_dir:
        args += ["--remount-ro", layout.state_dir]
    if policy.scratch is Access.READ:
        for d in SCRATCH:
            args += ["--remount-ro", d]
    return args


def build(policy: Policy, layout: Layout, command: list[str], environ: dict[str, str], *,
          bwrap_path: str = "bwrap", ctty_helper: str | None = None,
          seccomp_file: str | None = None) -> Invocation:
    """Return the bwrap invocation for ``command``.

    ``ctty_helper`` (util-linux ``setsid``) is given when the caller is on a
    terminal: the command then runs on a pseudo-terminal of its own, which
    the runner relays, and the helper makes it the controlling terminal so
    job control, Ctrl-C and /dev/tty work inside.
    """
    argv = [bwrap_path, *namespace_args(policy), *mount_args(policy, layout), "--chdir", layout.cwd]
    seccomp_index = None
    if seccomp_file is not None:
        # bwrap loads the filter last, just before exec, so it binds the
        # command (and the ctty helper) but not bwrap's own setup
        argv += ["--seccomp", str(SECCOMP_FD)]
        seccomp_index = len(argv) - 1
    argv += ["--json-status-fd", str(STATUS_FD), "--"]
    status_index = len(argv) - 2
    if ctty_helper:
        argv += [ctty_helper, "--wait", "--ctty", "--"]
    argv += command
    env = sandbox_env(environ, policy, layout.cache_dir, layout.cwd)
    return Invocation(tuple(argv), env, status_index, ctty_helper is not None,
                      seccomp_index, seccomp_file)
