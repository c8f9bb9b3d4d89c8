"""What a backend returns: everything needed to start the sandbox."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Invocation:
    argv: tuple[str, ...]  # full argv, the command last
    env: dict[str, str]  # the environment bwrap (and so the command) gets
    status_fd_arg: int | None  # index in argv of the --json-status-fd value, if any
    interactive: bool  # the command gets a pseudo-terminal of its own
    seccomp_fd_arg: int | None = None  # index in argv of the --seccomp value, if any
    seccomp_file: str | None = None  # the compiled BPF program bwrap reads from that fd
