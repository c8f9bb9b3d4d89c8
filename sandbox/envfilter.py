"""Decide the command's environment: secrets out, tool caches in.

Pure: takes the caller's environment and returns the new one.  The result is
handed to bwrap through execve's environment, never as ``--setenv`` argv, so
no value ever shows up in ``ps``.
"""

from __future__ import annotations

from sandbox.patterns import match


def is_denied(name: str, policy) -> bool:
    upper = name.upper()
    if any(upper == p.upper() for p in policy.env_pass):
        return False
    return any(match(upper, pattern.upper()) for pattern in policy.env_deny)


def removed(environ: dict[str, str], policy) -> list[str]:
    """Names of the variables the policy takes out (for explain and reports)."""
    return sorted(name for name in environ if is_denied(name, policy))


def sandbox_env(environ: dict[str, str], policy, cache_dir: str | None,
                cwd: str) -> dict[str, str]:
    env = {k: v for k, v in environ.items() if not is_denied(k, policy)}
    env.update(dict(policy.env_set))
    if cache_dir is not None:
        for var, sub in policy.caches:
            env[var] = f"{cache_dir}/{sub}"
    env["PWD"] = cwd
    env["SANDBOX_ACTIVE"] = "1"
    return env
