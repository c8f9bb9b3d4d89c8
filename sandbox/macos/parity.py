"""How each Policy field is enforced on Linux and on macOS: the parity table.

Every field of ``sandbox.policy.Policy`` has a row; tests/test_parity.py
checks that, and that docs/macos.md shows exactly this table (rendered by
``markdown()``).  A status is one of:

- ``yes``: enforced by this backend;
- ``shared``: the same code does it on both platforms (profile loading,
  env filter, persistence audit, egress proxy, limits, report);
- ``differs``: enforced, in a different way the text says;
- ``n/a``: not enforced here, with the reason.
"""

from __future__ import annotations

STATUSES = ("yes", "shared", "differs", "n/a")

# field: ((Linux status, how), (macOS status, how or why not))
TABLE: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "name": (("shared", "profile name, in explain and the report"),
             ("shared", "the same")),
    "chain": (("shared", "the extends chain, in explain and the report"),
              ("shared", "the same")),
    "digest": (("shared", "sha256 of the chain, in the report and plan cache"),
               ("shared", "the same")),
    "sources": (("yes", "a profile file in a writable root is bound read-only"),
                ("yes", "found by the same discovery; denied file-write* like protected paths")),
    "description": (("shared", "shown by profiles list/show"), ("shared", "the same")),
    "require": (("yes", "full: fail closed without bwrap; fallback: Landlock + seccomp"),
                ("n/a", "Seatbelt is the only macOS backend: without /usr/bin/sandbox-exec the "
                        "run fails closed whatever require says")),
    "workspace": (("yes", "bound read-write (write) or read-only (read)"),
                  ("yes", "(allow file-write* (subpath WORKSPACE)) only when write")),
    "scratch": (("yes", "private empty /tmp, /var/tmp, /dev/shm; TMPDIR=/tmp"),
                ("differs", "a fresh per-run directory as TMPDIR, writable; the host's /tmp "
                            "is shared on macOS and stays read-only")),
    "writable": (("yes", "bound read-write"),
                 ("yes", "(allow file-write* (subpath WRITABLE_n))")),
    "deny_read": (("yes", "masked: an empty directory or file"),
                  ("differs", "denied (read, write, hard link) in every spelling (/private, "
                              "resolved symlinks); Seatbelt can refuse a file, not show it "
                              "empty; a wildcard name is denied at any depth below its "
                              "directory")),
    "deny_read_names": (("yes", "matching files in the writable roots appear empty"),
                        ("differs", "matching regular files in the workspace and writable roots "
                                    "are refused, not emptied; git sees EPERM for a tracked "
                                    ".env instead of git's own copy")),
    "allow_read_names": (("yes", "exceptions to deny_read_names"),
                         ("yes", "(require-not (regex ...)) in the same rule")),
    "empty_dirs": (("yes", "replaced by an empty read-only directory"),
                   ("differs", "denied like a secret (read and write), not emptied")),
    "protect_git": (("yes", "git config, hooks and what they run bound read-only; parents "
                            "kept in place"),
                    ("yes", "the same paths from the same discovery: (deny file-write* "
                            "file-link) and parents (deny file-write-unlink file-write-create)")),
    "protected_names": (("yes", "read-only wherever they exist; audited when created"),
                        ("yes", "denied file-write* and file-link; parents not renamable; "
                                "audited when created")),
    "unprotect": (("yes", "left writable on request (a weakening)"),
                  ("yes", "the same discovery leaves them out of the protected list")),
    "skip_dirs": (("shared", "directories the protected-path scan does not walk"),
                  ("shared", "the same")),
    "socket_scan": (("yes", "host sockets and FIFOs found there are masked"),
                    ("differs", "not needed for sockets: connect() to any unix socket outside "
                                "the writable roots is refused (network-outbound); host FIFOs "
                                "outside the writable roots are not writable, inside them they "
                                "are")),
    "socket_scan_depth": (("yes", "depth of that scan"),
                          ("n/a", "no scan on macOS (see socket_scan)")),
    "socket_skip_dirs": (("yes", "directories that scan skips"),
                         ("n/a", "no scan on macOS (see socket_scan)")),
    "env_deny": (("shared", "the env filter (names and values)"), ("shared", "the same")),
    "env_pass": (("shared", "exceptions to the env filter"), ("shared", "the same")),
    "env_set": (("shared", "set in the command's environment"),
                ("differs", "the same, except TMPDIR, which points at the run's own "
                            "directory")),
    "caches": (("shared", "per-workspace tool cache directories, writable"),
               ("shared", "the same directory, (allow file-write* (subpath CACHE_DIR))")),
    "network": (("yes", "none: own network namespace; proxy: only the egress proxy leads out"),
                ("differs", "none: (deny default) closes every socket but the writable roots' "
                            "unix sockets, so the command's own loopback servers cannot be "
                            "reached either; proxy: only (remote ip \"localhost:PORT\") of the "
                            "run's proxy")),
    "egress_allow": (("shared", "the proxy's allow rules"),
                     ("differs", "the same proxy, on the host's 127.0.0.1; a rule with "
                                 "inspect = true is refused on macOS (the run fails closed): "
                                 "the run CA cannot be put in the system trust store there")),
    "egress_deny": (("shared", "the proxy's deny rules"), ("shared", "the same")),
    "egress_hosts": (("shared", "the proxy's name overrides"), ("shared", "the same")),
    "egress_max_connections": (("shared", "the proxy's connection cap"), ("shared", "the same")),
    "egress_credentials": (("shared", "the proxy puts real tokens in; the command holds "
                                      "placeholders"), ("shared", "the same")),
    "egress_headers": (("shared", "headers the proxy strips or refuses"), ("shared", "the same")),
    "forwards": (("yes", "[[network.forward]]: the granted host loopback TCP ports are "
                         "relayed into the run's network namespace"),
                 ("differs", "refused on macOS (the run fails closed): without a network "
                             "namespace the command would reach the host's port itself, and "
                             "the grant would not be counted; not built yet")),
    "syscalls_enabled": (("yes", "seccomp filter on"),
                         ("n/a", "seccomp syscall filtering has no Seatbelt equivalent; Seatbelt's "
                                 "own operations cover the same ground by resource: deny default "
                                 "over files, network, mach services, IOKit, sysctls, signals and "
                                 "process inspection")),
    "syscall_set": (("yes", "the rule set from bwrap/seccomp.toml"),
                    ("n/a", "no seccomp on macOS (see syscalls_enabled)")),
    "syscall_deny": (("yes", "more syscalls refused"),
                     ("n/a", "no seccomp on macOS (see syscalls_enabled)")),
    "syscall_allow": (("yes", "syscalls let through"),
                      ("n/a", "no seccomp on macOS (see syscalls_enabled)")),
    "allow_32bit": (("yes", "i386/x32 syscalls refused unless true"),
                    ("n/a", "macOS runs no 32-bit code since 10.15")),
    "unix_sockets": (("yes", "false: socket(AF_UNIX) refused by seccomp"),
                     ("yes", "true: AF_UNIX sockets bound and connected only inside the "
                             "writable roots; false: no AF_UNIX rule at all")),
    "audit_classes": (("shared", "the persistence audit after the run"), ("shared", "the same")),
    "weakenings": (("shared", "explain, the report, the weakened: line"), ("shared", "the same")),
    "github_env": (("shared", "GitHub Actions file commands (sandbox.ghactions)"),
                   ("shared", "the same")),
    "github_path": (("shared", "GitHub Actions file commands (sandbox.ghactions)"),
                    ("shared", "the same")),
    "core_dumps": (("shared", "RLIMIT_CORE"), ("shared", "the same setrlimit")),
    "max_open_files": (("shared", "RLIMIT_NOFILE"), ("shared", "the same setrlimit")),
    "max_file_size_mb": (("shared", "RLIMIT_FSIZE"), ("shared", "the same setrlimit")),
    "cpu_seconds": (("shared", "RLIMIT_CPU"), ("shared", "the same setrlimit")),
    "max_processes": (("shared", "RLIMIT_NPROC"), ("shared", "the same setrlimit")),
    "address_space_mb": (("shared", "RLIMIT_AS"),
                         ("shared", "the same setrlimit (macOS may ignore RLIMIT_AS)")),
    "timeout_seconds": (("shared", "wall clock, exit status 124"), ("shared", "the same")),
    "pids_max": (("yes", "cgroup v2 pids.max where delegated"),
                 ("n/a", "macOS has no cgroups: the run warns that the limit is not applied")),
    "memory_max_mb": (("yes", "cgroup v2 memory.max where delegated"),
                      ("n/a", "macOS has no cgroups: the run warns that the limit is not "
                              "applied")),
    "tightenings": (("shared", "explain and the report"), ("shared", "the same")),
}

HEADER = "| Policy field | Linux (bwrap + seccomp) | macOS (Seatbelt) |"


def _cell(status: str, text: str) -> str:
    return f"**{status}**: {text}".replace("|", "\\|")


def markdown() -> str:
    """The table as docs/macos.md shows it."""
    lines = [HEADER, "|---|---|---|"]
    for name, (linux, mac) in TABLE.items():
        lines.append(f"| `{name}` | {_cell(*linux)} | {_cell(*mac)} |")
    return "\n".join(lines)
