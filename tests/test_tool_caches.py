"""Tool-cache settings never make a tool print warnings.

Found by a newcomer's trial: under the default profile every npm command
warned ``Unknown env config "store-dir"``, because pnpm's store was set
through ``npm_config_store_dir``, which npm reads too.  pnpm is now told
through names npm never reads (``PNPM_HOME``, ``pnpm_config_store_dir``).
"""

from __future__ import annotations

import shutil

import pytest

from sandbox import profile

NPM = shutil.which("npm")
PNPM = shutil.which("pnpm")


def default_caches() -> dict[str, str]:
    ctx = profile.Context(workspace="/ws", home="/home/u", tmp="/tmp", runtime="/run/user/1")
    return dict(profile.load("default", ctx)[0].caches)


def test_no_npm_config_variable_npm_does_not_know():
    """npm warns about every npm_config_* that is not one of its own settings."""
    npm_vars = [v for v in default_caches() if v.lower().startswith("npm_config_")]
    assert npm_vars == ["npm_config_cache"]


@pytest.mark.skipif(NPM is None, reason="npm is not installed on this machine")
def test_npm_prints_no_warning(senv):
    r = senv.sh("npm --version && npm config list && npm config get cache")
    assert r.returncode == 0, r.stderr
    # npm's own output only: the sandbox's one-line notes (npm's update check
    # looks up the registry, which a run without network names) are not npm's
    npm_lines = [ln for ln in r.stderr.decode().splitlines() if not ln.startswith("sandbox: ")]
    assert npm_lines == [], r.stderr.decode()
    assert "Unknown env config" not in r.stderr.decode()
    cache = r.stdout.decode().strip().splitlines()[-1]
    assert "/sandbox/workspaces/" in cache and cache.endswith("/npm")


@pytest.mark.skipif(PNPM is None, reason="pnpm is not installed on this machine")
def test_pnpm_store_goes_to_the_tool_cache(senv):
    r = senv.sh("pnpm store path")
    assert r.returncode == 0, r.stderr
    assert "/sandbox/workspaces/" in r.stdout.decode()
    assert b"WARN" not in r.stderr
