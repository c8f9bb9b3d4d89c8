"""sandbox: run one command inside an OS-level sandbox.

The core library (policy, profile, backends, runner) never imports the CLI
framework; ``sandbox.cli`` is the only module that imports typer.

The Python API (``from sandbox import run, RunOptions, Result, SandboxError``,
docs/api.md) lives in ``sandbox.api`` and is loaded on first use: the
command line's fast path imports this package and must not pay for it.
"""

__version__ = "0.1.0"

# Names served from sandbox.api on first access.  None of them is the name
# of a submodule (``sandbox.explain`` is one: the API's is sandbox.api.explain).
_API = frozenset(("run", "Result", "RunOptions", "SandboxError", "ProfileError", "UsageError",
                  "SetupError", "CommandNotFound", "CommandNotExecutable", "CODES", "CAPTURE",
                  "DEVNULL"))


def __getattr__(name: str):
    if name in _API:
        from sandbox import api

        return getattr(api, name)
    raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
