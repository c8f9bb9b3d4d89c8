"""Decide the command's environment: secrets out, tool caches in.

Pure: takes the caller's environment and returns the new one.  The result is
handed to bwrap through execve's environment, never as ``--setenv`` argv, so
no value ever shows up in ``ps``.
"""

from __future__ import annotations

from sandbox.patterns import match


class _Matcher:
    """The deny patterns, sorted by shape once, so each variable costs a few
    string operations instead of a pattern match per pattern (this runs on
    every start, over the whole environment)."""

    __slots__ = ("passed", "exact", "contains", "prefix", "suffix", "general")

    def __init__(self, deny, passed) -> None:
        self.passed = {p.upper() for p in passed}
        self.exact, self.contains, self.prefix, self.suffix, self.general = set(), [], [], [], []
        for pattern in (p.upper() for p in deny):
            inner = pattern.strip("*")
            if "*" in inner or "?" in pattern:
                self.general.append(pattern)
            elif pattern.startswith("*") and pattern.endswith("*") and len(pattern) > 1:
                self.contains.append(inner)
            elif pattern.endswith("*"):
                self.prefix.append(inner)
            elif pattern.startswith("*"):
                self.suffix.append(inner)
            else:
                self.exact.add(pattern)

    def denied(self, name: str) -> bool:
        upper = name.upper()
        if upper in self.passed:
            return False
        return (upper in self.exact or any(c in upper for c in self.contains)
                or upper.startswith(tuple(self.prefix)) or upper.endswith(tuple(self.suffix))
                or any(match(upper, p) for p in self.general))


def carries_credentials(value: str) -> bool:
    """A URL with a password in it (``https://user:secret@host/``), as proxies and
    package indexes are often configured: the value is a secret whatever the name."""
    at = value.find("://")
    while at != -1:
        authority = value[at + 3:].split("/", 1)[0]
        userinfo, sep, _host = authority.rpartition("@")
        if sep and ":" in userinfo:
            return True
        at = value.find("://", at + 3)
    return False


def is_denied(name: str, policy) -> bool:
    return _Matcher(policy.env_deny, policy.env_pass).denied(name)


def removed(environ: dict[str, str], policy) -> list[str]:
    """Names of the variables the policy takes out (for explain and reports)."""
    matcher = _Matcher(policy.env_deny, policy.env_pass)
    return sorted(name for name, value in environ.items()
                  if matcher.denied(name) or carries_credentials(value))


def sandbox_env(environ: dict[str, str], policy, cache_dir: str | None,
                cwd: str) -> dict[str, str]:
    matcher = _Matcher(policy.env_deny, policy.env_pass)
    env = {k: v for k, v in environ.items()
           if not matcher.denied(k) and not carries_credentials(v)}
    env.update(dict(policy.env_set))
    if cache_dir is not None:
        for var, sub in policy.caches:
            env[var] = f"{cache_dir}/{sub}"
    env["PWD"] = cwd
    env["SANDBOX_ACTIVE"] = "1"
    return env
