"""A fixed, made-up Mac for the Seatbelt tests and goldens.

The goldens under tests/data/seatbelt/ are built from these paths, never
from the machine the tests run on, so they are the same everywhere.
``scripts/seatbelt_goldens.py`` rewrites them after a deliberate change.
"""

from __future__ import annotations

from pathlib import Path

from sandbox import profile, resources
from sandbox.macos import hostfacts, seatbelt
from sandbox.policy import NetworkMode

HOME = "/Users/dev"
WORKSPACE = "/Users/dev/src/app"
TMPDIR = "/private/var/folders/zz/zyxvpxvq6csfxvn_n0000000000000/T/sandbox-run-golden"
STATE = "/Users/dev/.cache/sandbox"
CACHE = STATE + "/workspaces/0123456789abcdef"
PROXY_PORT = 49152
PROTECTED = (WORKSPACE + "/.git/config", WORKSPACE + "/.git/hooks", WORKSPACE + "/.vscode",
             WORKSPACE + "/sub/.claude")
KEEP = (WORKSPACE + "/.git",)
COMMAND = ("make", "test")
GOLDEN_DIR = Path(__file__).resolve().parent / "data" / "seatbelt"


def shipped_profiles() -> list[str]:
    return sorted(p.stem for p in resources.profiles_dir().glob("*.toml"))


def golden_policy(name: str):
    ctx = profile.Context(workspace=WORKSPACE, home=HOME, tmp="/tmp", runtime="/run/user/501")
    return profile.load(name, ctx)[0]


def golden_context(policy, **changes) -> seatbelt.Context:
    secrets, globs = hostfacts.secrets(policy.deny_read, policy.empty_dirs, resolve=False)
    fields = dict(workspace=WORKSPACE, home=HOME, tmpdir=TMPDIR, cache_dir=CACHE, state_dir=STATE,
                  writable=(), secrets=secrets, secret_globs=globs, protected=PROTECTED,
                  keep_in_place=KEEP,
                  proxy_port=PROXY_PORT if policy.network is NetworkMode.PROXY else None)
    fields.update(changes)
    return seatbelt.Context(**fields)


def golden(name: str) -> seatbelt.Seatbelt:
    policy = golden_policy(name)
    return seatbelt.build(policy, golden_context(policy), COMMAND)


def params_text(params: dict[str, str]) -> str:
    return "".join(f"{k}={v}\n" for k, v in params.items())
