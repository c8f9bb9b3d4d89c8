"""The options of ``sandbox run`` / ``explain`` as one plain value.

A plain class rather than a dataclass: it is built on the fast path, where
importing ``dataclasses`` (and ``inspect`` behind it) would cost more than
the rest of the start.
"""

from __future__ import annotations

FIELDS = ("command", "profile", "workspace", "allow_write", "unprotect", "report", "dry_run",
          "quiet", "timeout", "env_pass", "network", "allow_host", "session")


class RunOptions:
    __slots__ = FIELDS

    def __init__(self, command=(), profile: str | None = None, workspace: str | None = None,
                 allow_write=(), unprotect=(), report: str | None = None,
                 dry_run: bool = False, quiet: bool = False, timeout=None, env_pass=(),
                 network: str | None = None, allow_host=(), session: str | None = None) -> None:
        self.command = tuple(command)
        self.profile = profile  # None: not given (the project profile, else default)
        self.workspace = workspace
        self.allow_write = tuple(allow_write)
        self.unprotect = tuple(unprotect)
        self.report = report
        self.dry_run = bool(dry_run)
        self.quiet = bool(quiet)  # only error lines from sandbox itself (sandbox.quiet)
        # the per-call flags, checked and canonical (sandbox.runflags.normalize)
        self.timeout = timeout  # seconds, or None
        self.env_pass = tuple(env_pass)
        self.network = network  # "none", "proxy" or None (the profile's)
        self.allow_host = tuple(allow_host)  # "host:port"
        # the network namespace's session (sandbox.egress.netsession): None is the
        # workspace's, "none" the run's own; applied at run time, not planned
        self.session = session

    def _values(self) -> tuple:
        return tuple(getattr(self, f) for f in FIELDS)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunOptions) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f in FIELDS)
        return f"RunOptions({inner})"
