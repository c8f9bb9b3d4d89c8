"""The facts about this host that the bwrap backend needs, as plain data.

``Layout`` is what discovery (``sandbox.discover``) found on the filesystem for
one policy and one workspace: which paths exist, which are secrets, which are
protected.  The backend turns Policy + Layout into argv without touching the
filesystem, so it stays a pure function that tests can pin exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

# Private scratch directories: an empty tmpfs each, inside every sandbox.
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


@dataclass(frozen=True, slots=True)
class Layout:
    workspace: str  # real path of the workspace
    cwd: str  # directory the command starts in (the path the user sees)
    writable_roots: tuple[str, ...]  # real paths bound read-write
    keep_in_place: tuple[str, ...]  # dirs bound onto themselves so they cannot be renamed
    read_only: tuple[str, ...]  # protected paths bound read-only onto themselves
    masked_dirs: tuple[str, ...]  # secrets (directories): empty read-only tmpfs
    masked_files: tuple[str, ...]  # secrets (files), host sockets, FIFOs: empty read-only file
    empty_dirs: tuple[str, ...]  # host dirs replaced by an empty read-only tmpfs
    cache_dir: str | None  # per-workspace tool cache directory, if mounted
    empty_file: str  # the empty file bound over masked files
    warnings: tuple[str, ...] = ()
    unprotected: tuple[str, ...] = ()  # protected paths left writable on request
    # for the persistence audit (sandbox.audit, sandbox.gitsnapshot)
    git_dirs: tuple[str, ...] = ()  # every directory git could use as a git dir (scan.GITDIR)
    git_roots: tuple[str, ...] = ()  # git dirs outside the workspace made writable
    hooks_dirs: tuple[str, ...] = ()  # core.hooksPath targets inside the writable roots
    hooks_relative: tuple[str, ...] = ()  # relative core.hooksPath values of the user's config
    hook_managers: tuple[str, ...] = ()  # e.g. .husky for core.hooksPath = .husky/_
    git_configs: tuple[str, ...] = ()  # include.path targets inside the writable roots
    # files the user's git config runs (or hooks link to) in the writable roots:
    # ((path, why, audit class), ...); relative ones ((word, why, class), ...)
    # are resolved again by the audit against every work tree root it finds
    program_files: tuple[tuple[str, str, str], ...] = ()
    program_relative: tuple[tuple[str, str, str], ...] = ()
    worktrees: tuple[str, ...] = ()  # work tree roots discovery resolved them against
    git_entries: tuple[str, ...] = ()  # every .git entry in the writable roots
    # the sandbox's state directory: an empty tmpfs inside (its cache dir is bound on top)
    state_dir: str | None = None
    # host directories just below a private scratch dir (/tmp/proj for a
    # workspace /tmp/proj/sub), bound read-only over the empty tmpfs: the
    # repository around the workspace stays whole, and a write beside the
    # workspace fails (EROFS) instead of vanishing with the tmpfs
    scratch_parents: tuple[str, ...] = ()
    # secret-named files whose content git holds (sandbox.secretfiles):
    # (what is shown, read-only; where)
    tracked_secrets: tuple[tuple[str, str], ...] = ()
    # network none (sandbox.egress.dns): (our file, host path it covers), or None.
    # resolv.conf is always bound; nsswitch.conf only when the run falls back
    # to bwrap's own namespace, where no resolver answers.
    resolv_conf: tuple[str, str] | None = None
    nsswitch: tuple[str, str] | None = None

    def hidden_dirs(self) -> tuple[str, ...]:
        """Host directories the command cannot see (unless a writable root is inside)."""
        return SCRATCH_DIRS + self.empty_dirs + self.masked_dirs

    def exposed_dirs(self) -> tuple[str, ...]:
        return self.writable_roots + (self.workspace,) + self.scratch_parents
