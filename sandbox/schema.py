"""The profile schema as data: every key, its type, and how it merges.

Keeping the schema in one table means validation, merging, the docs and the
property tests all read the same source of truth.

Merge rules (child profile over the profile it ``extends``):

* ``APPEND``  lists: the child's entries are added after the parent's.
  Protections only ever grow this way.
* ``REPLACE`` scalars: the child's value wins.  If it is looser than the
  parent's (``write`` over ``read``, ``false`` over ``true``, a smaller scan
  depth) that is recorded as a weakening.
* ``MERGE``   tables of strings: keys are merged, the child wins per key.
* ``REMOVE``  lists that take entries away from another list
  (``filesystem.allow_read`` removes from ``filesystem.deny_read``).  Every
  entry is recorded as a weakening.
* ``WEAKEN``  lists that append but loosen the policy (``filesystem.writable``,
  ``filesystem.allow_read_names``, ``protect.unprotect``, ``protect.skip_dirs``,
  ``sockets.skip_dirs``, ``env.pass``, ``syscalls.allow``): every entry a child
  profile adds is recorded as a weakening.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    STR = "string"
    BOOL = "boolean"
    INT = "integer"
    PATHS = "list of absolute paths"
    NAMES = "list of file names or patterns"
    PATTERNS = "list of variable-name patterns"
    STRMAP = "table of strings"
    CHOICE = "string (one of a fixed set)"
    RULES = "array of tables ([[network.allow]] entries)"
    HOSTMAP = "table of host name = IP address"
    CREDENTIALS = "array of tables ([[network.credentials]] entries)"
    FORWARDS = "array of tables ([[network.forward]] entries)"


class Merge(enum.Enum):
    APPEND = "append"
    REPLACE = "replace"
    MERGE = "merge"
    REMOVE = "remove"
    WEAKEN = "append, and counts as a weakening"


@dataclass(frozen=True, slots=True)
class Key:
    kind: Kind
    merge: Merge
    doc: str
    choices: tuple[str, ...] = ()
    # for REPLACE scalars: values ordered from strictest to loosest
    looser: tuple[object, ...] = ()
    # for REMOVE: the key whose entries this one removes
    removes: str = ""
    allow_glob: bool = False
    # for INT: the allowed range; with zero_unlimited, 0 means "no limit" (the
    # loosest value) and a larger number is looser than a smaller one
    minimum: int = 0
    maximum: int = 32
    zero_unlimited: bool = False


SCHEMA: dict[str, dict[str, Key]] = {
    "": {
        "description": Key(Kind.STR, Merge.REPLACE, "One line saying what the profile is for."),
        "extends": Key(Kind.STR, Merge.REPLACE, "Name or path of the profile this one builds on."),
        "require": Key(Kind.CHOICE, Merge.REPLACE,
                       "Where bwrap cannot run: \"full\" fails closed, \"fallback\" runs under "
                       "Landlock + seccomp and names what is degraded (fallback.md).",
                       choices=("full", "fallback"), looser=("full", "fallback")),
    },
    "filesystem": {
        "workspace": Key(Kind.CHOICE, Merge.REPLACE, "Whether the workspace is writable.",
                         choices=("read", "write"), looser=("read", "write")),
        "scratch": Key(Kind.CHOICE, Merge.REPLACE,
                       "Private, empty /tmp, /var/tmp and /dev/shm: writable or read-only.",
                       choices=("read", "write"), looser=("read", "write")),
        "writable": Key(Kind.PATHS, Merge.WEAKEN, "Extra host paths the command may write."),
        "deny_read": Key(Kind.PATHS, Merge.APPEND,
                         "Secrets: paths (wildcards allowed) that appear empty inside.",
                         allow_glob=True),
        "allow_read": Key(Kind.PATHS, Merge.REMOVE,
                          "Entries to take out of the inherited deny_read (exact match).",
                          removes="deny_read", allow_glob=True),
        "deny_read_names": Key(Kind.NAMES, Merge.APPEND,
                               "File names (wildcards allowed) masked wherever they are found "
                               "inside writable roots, e.g. .env."),
        "allow_read_names": Key(Kind.NAMES, Merge.WEAKEN,
                                "Exceptions to deny_read_names, e.g. *.example."),
        "empty_dirs": Key(Kind.PATHS, Merge.APPEND,
                          "Host directories replaced by an empty read-only directory "
                          "(hides host sockets and /run/secrets)."),
    },
    "protect": {
        "git": Key(Kind.BOOL, Merge.REPLACE,
                   "Keep every repository's hooks, config and .git entry read-only.",
                   looser=(True, False)),
        "names": Key(Kind.NAMES, Merge.APPEND,
                     "File and directory names kept read-only wherever they exist in a "
                     "writable root (agent and editor config, shell rc files)."),
        "unprotect": Key(Kind.PATHS, Merge.WEAKEN,
                         "Protected paths made writable anyway."),
        "skip_dirs": Key(Kind.NAMES, Merge.WEAKEN,
                         "Directory names the protected-path scan does not descend into."),
    },
    "sockets": {
        "scan": Key(Kind.PATHS, Merge.APPEND,
                    "Directories searched by file type for FIFOs and for the unix sockets "
                    "the kernel's list cannot name; both are then hidden."),
        "max_depth": Key(Kind.INT, Merge.REPLACE, "How deep that search goes.",
                         looser=("larger", "smaller")),
        "skip_dirs": Key(Kind.NAMES, Merge.WEAKEN,
                         "Directory names that search does not walk into (package caches "
                         "and toolchains, which hold no sockets or FIFOs but many directories)."),
    },
    "env": {
        "deny": Key(Kind.PATTERNS, Merge.APPEND,
                    "Variable-name patterns removed from the environment (case-insensitive)."),
        "pass": Key(Kind.NAMES, Merge.WEAKEN,
                    "Variable names kept even though a deny pattern matches them."),
        "set": Key(Kind.STRMAP, Merge.MERGE, "Variables set inside the sandbox."),
    },
    "caches": {
        "*": Key(Kind.STR, Merge.MERGE,
                 "VARIABLE = \"subdir\": point a tool's cache at a per-workspace directory."),
    },
    "syscalls": {
        "enabled": Key(Kind.BOOL, Merge.REPLACE,
                       "Load the seccomp filter into the command.", looser=(True, False)),
        "set": Key(Kind.STR, Merge.REPLACE,
                   "Named rule set from the shipped seccomp table (bwrap/seccomp.toml)."),
        "deny": Key(Kind.NAMES, Merge.APPEND, "More syscalls refused with EPERM."),
        "allow": Key(Kind.NAMES, Merge.WEAKEN, "Syscalls taken out of the set's rules."),
        "allow_32bit": Key(Kind.BOOL, Merge.REPLACE,
                           "Also allow the 32-bit ABI (the same rules apply; socketcall is denied).",
                           looser=(False, True)),
        "unix_sockets": Key(Kind.BOOL, Merge.REPLACE,
                            "Allow socket(AF_UNIX); host sockets stay hidden either way.",
                            looser=(False, True)),
    },
    "audit": {
        name: Key(Kind.BOOL, Merge.REPLACE, doc, looser=(True, False))
        for name, doc in (
            ("git_hooks", "After the run, quarantine git hooks that appeared where hooks "
                          "were not read-only (e.g. in a repository made by git init)."),
            ("git_config", "Strip keys that run programs (core.hooksPath, core.fsmonitor, "
                           "aliases with '!', filter drivers...) from git configs the run could write."),
            ("shell_rc", "Quarantine new shell and REPL start-up files (.bashrc, .zshrc...)."),
            ("agent_config", "Quarantine new coding-agent config (.claude, .codex, .mcp.json...)."),
            ("editor_config", "Quarantine new editor config (.vscode, .idea...)."),
            ("envrc", "Quarantine new .envrc / .direnv and new mise or asdf config "
                      "(mise.toml, .tool-versions...)."),
            ("hook_managers", "Quarantine new git hook manager config (.husky, "
                              ".pre-commit-config.yaml, lefthook.yml, .lefthook/...)."),
            ("package_config", "Quarantine new package manager config that runs code "
                               "(.npmrc, .yarnrc.yml, .yarn/releases, .pnpmfile.cjs...)."),
        )
    },
    "network": {
        "mode": Key(Kind.CHOICE, Merge.REPLACE,
                    "none: own network namespace with loopback only. proxy: the same, plus the "
                    "egress proxy on 127.0.0.1:3128, which lets through only what "
                    "[[network.allow]] grants.",
                    choices=("none", "proxy"), looser=("none", "proxy")),
        "allow": Key(Kind.RULES, Merge.WEAKEN,
                     "Endpoints the proxy lets through: host (exact, *.suffix or an IP), ports "
                     "(default [443]), and for plain HTTP methods and paths; inspect = true "
                     "checks those inside HTTPS too (upstream_ca: the CA to verify upstream "
                     "against)."),
        "deny": Key(Kind.RULES, Merge.APPEND,
                    "Endpoints refused even when an allow rule matches (ports default to all)."),
        "upstream_ca": Key(Kind.STR, Merge.REPLACE,
                           "Absolute path of a PEM CA file: the default upstream_ca of every "
                           "inspect = true allow rule of the chain that names none (a private or "
                           "test origin for a built-in profile's hosts); a rule's own key wins."),
        "max_connections": Key(Kind.INT, Merge.REPLACE,
                               "Connections the proxy holds open at once for the command "
                               "(each costs the host two threads); 0 means the ceiling, 4096.",
                               minimum=1, maximum=4096, zero_unlimited=True),
        "hosts": Key(Kind.HOSTMAP, Merge.MERGE,
                     "Resolver override, like curl --resolve: name = address. The proxy never "
                     "asks DNS for these names, and the address counts as named for that name "
                     "only. Each pin a child profile adds or changes is a weakening."),
        "credentials": Key(Kind.CREDENTIALS, Merge.WEAKEN,
                           "Credentials the command never sees: the proxy puts the real value "
                           "(from a variable of the caller or a file the sandbox cannot read) "
                           "into requests to the entry's host, methods and paths, in place of "
                           "a per-run placeholder the command's variable holds "
                           "(credentials.md)."),
        "forward": Key(Kind.FORWARDS, Merge.WEAKEN,
                       "Host loopback TCP ports the command may reach: port (required), host "
                       "(\"127.0.0.1\", the default, or \"::1\"), inside_port (default: port), "
                       "name. Each appears at 127.0.0.1:inside_port inside, with or without "
                       "the proxy; every grant is a weakening (network.md)."),
    },
}



def _limit(doc: str, minimum: int, maximum: int) -> Key:
    """An integer resource limit: 0 is no limit, raising or removing one is a weakening."""
    return Key(Kind.INT, Merge.REPLACE, doc, minimum=minimum, maximum=maximum, zero_unlimited=True)


SCHEMA["limits"] = {
    "core_dumps": Key(Kind.BOOL, Merge.REPLACE,
                      "Allow core dumps (RLIMIT_CORE); false sets it to 0.",
                      looser=(False, True)),
    "max_open_files": _limit("Open file descriptors per process (RLIMIT_NOFILE).", 64, 1 << 20),
    "max_file_size_mb": _limit("Largest file a process may write, in MiB (RLIMIT_FSIZE).",
                               1, 1 << 24),
    "cpu_seconds": _limit("CPU time per process in seconds (RLIMIT_CPU).", 1, 31_536_000),
    "max_processes": _limit("Processes of the user (RLIMIT_NPROC; host-wide, not for root).",
                            1, 1 << 22),
    "address_space_mb": _limit("Virtual memory per process in MiB (RLIMIT_AS).", 64, 1 << 24),
    "timeout_seconds": _limit("Wall-clock limit for the whole run (exit status 124).",
                              1, 31_536_000),
    "pids_max": _limit("Processes and threads in the whole sandbox (cgroup v2 pids.max).",
                       8, 1 << 22),
    "memory_max_mb": _limit("Memory of the whole sandbox in MiB (cgroup v2 memory.max).",
                            16, 1 << 24),
}

SCHEMA["ci"] = {
    "github_env": Key(Kind.BOOL, Merge.REPLACE,
                      "GitHub Actions: let the command write $GITHUB_ENV, which sets variables "
                      "for the job's later, unsandboxed steps.", looser=(False, True)),
    "github_path": Key(Kind.BOOL, Merge.REPLACE,
                       "GitHub Actions: let the command write $GITHUB_PATH, which puts "
                       "directories on PATH for the job's later, unsandboxed steps.",
                       looser=(False, True)),
}

PLACEHOLDERS = ("workspace", "home", "tmp", "runtime")
