"""sandbox: run one command inside an OS-level sandbox.

The core library (policy, profile, backends, runner) never imports the CLI
framework; ``sandbox.cli`` is the only module that imports typer.
"""

__version__ = "0.1.0"
