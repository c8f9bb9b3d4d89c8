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
    masked_files: tuple[str, ...]  # secrets (files) and host sockets: empty read-only file
    empty_dirs: tuple[str, ...]  # host dirs replaced by an empty read-only tmpfs
    cache_dir: str | None  # per-workspace tool cache directory, if mounted
    empty_file: str  # the empty file bound over masked files
    warnings: tuple[str, ...] = ()
    unprotected: tuple[str, ...] = ()  # protected paths left writable on request
    git_entries: tuple[str, ...] = ()  # every .git found in or around the writable roots
    # network none (sandbox.dns): (our file, host path it covers), or None.
    # resolv.conf is always bound; nsswitch.conf only when the run falls back
    # to bwrap's own namespace, where no resolver answers.
    resolv_conf: tuple[str, str] | None = None
    nsswitch: tuple[str, str] | None = None

    def hidden_dirs(self) -> tuple[str, ...]:
        """Host directories the command cannot see (unless a writable root is inside)."""
        return SCRATCH_DIRS + self.empty_dirs + self.masked_dirs

    def exposed_dirs(self) -> tuple[str, ...]:
        return self.writable_roots + (self.workspace,)
