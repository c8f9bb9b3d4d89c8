"""Entry point.  ``run``, ``sh``, ``hook`` and ``--version`` take a fast path without typer.

A coding-agent plugin starts ``sandbox run -- CMD`` for every shell command,
and importing typer costs more than the whole sandbox start.  The fast path
understands exactly the ``run`` options; anything else (``--help``, an
unknown option, a missing ``--``) falls through to the typer CLI, which gives
the full help and error messages.  tests/test_main.py checks that both paths
produce the same options.
"""

from __future__ import annotations

import os
import sys

from sandbox import selfguard

# Before anything else is imported: nothing in the current directory (the
# workspace, for `python -m sandbox`) may shadow a module we load later.
selfguard.harden_sys_path(module_run=__name__ == "__main__")

GC_THRESHOLD = 20_000  # allocations between young-generation collections (Python's is 700)

_VALUE_OPTS = {"--profile": "profile", "-p": "profile", "--workspace": "workspace",
               "-w": "workspace", "--report": "report", "--report-fd": "report",
               "--timeout": "timeout", "--network": "network", "--session": "session"}
_LIST_OPTS = {"--allow-write": "allow_write", "--unprotect": "unprotect",
              "--env-pass": "env_pass", "--allow-host": "allow_host"}


def parse_run(args: list[str]):
    """Parse ``run`` arguments, or return None to let typer handle them."""
    from sandbox.options import RunOptions

    values: dict = {"allow_write": [], "unprotect": [], "env_pass": [], "allow_host": []}
    report_from = None  # "--report" or "--report-fd": not both
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            command = args[i + 1:]
            if not command:
                return None
            if ("timeout" in values or "network" in values or values["env_pass"]
                    or values["allow_host"]):
                from sandbox import runflags

                try:  # the same check and canonical form as the typer CLI's
                    (values["timeout"], values["env_pass"], values["network"],
                     values["allow_host"]) = runflags.normalize(
                        values.get("timeout"), values["env_pass"], values.get("network"),
                        values["allow_host"])
                except runflags.FlagError:
                    return None  # typer gives the error message
            if "session" in values:
                from sandbox import runflags
                from sandbox.egress import netsession

                try:
                    netsession.parse_name(values["session"])
                except runflags.FlagError:
                    return None  # typer gives the error message
            values["allow_write"] = tuple(values["allow_write"])
            values["unprotect"] = tuple(values["unprotect"])
            return RunOptions(command=tuple(command), **values)
        name, eq, inline = arg.partition("=")
        key = _VALUE_OPTS.get(name) or _LIST_OPTS.get(name)
        if arg == "--dry-run":
            values["dry_run"] = True
            i += 1
            continue
        if arg in ("--quiet", "-q"):
            values["quiet"] = True
            i += 1
            continue
        if key is None or (eq and name.startswith("-") and not name.startswith("--")):
            return None
        if eq:
            value = inline
            i += 1
        else:
            if i + 1 >= len(args):
                return None
            value = args[i + 1]
            i += 2
        if not value or (value.startswith("-") and not (key == "report" and value == "-")):
            return None  # typer gives the error message ("--report -" is standard output)
        if key == "report":
            if report_from not in (None, name):
                return None  # --report and --report-fd together: typer says so
            report_from = name
        if name == "--report-fd":  # the report on an inherited descriptor (plugins)
            if not value.isdigit():
                return None  # typer gives the error message
            value = f"/dev/fd/{int(value)}"
        if key in _LIST_OPTS.values():
            values[key].append(value)
        else:
            values[key] = value
    return None


def parse_sh(args: list[str]):
    """Parse ``sh`` arguments (``run``'s options and one command string), or None for typer."""
    from sandbox import shellcmd

    run_args = shellcmd.as_run_args(args)
    opts = parse_run(run_args) if run_args is not None else None
    if opts is None or len(opts.command) != 1:
        return None
    opts.command = shellcmd.argv(opts.command[0])
    return opts


def exit_now(status: int) -> None:
    """End the process once a run is over: flush our streams, then ``os._exit``.

    Python's own shutdown (tearing down every module and object) took about
    3 ms of every run here and does nothing a finished run needs: what the
    run wrote (marker, report, audit log, plan) is written with ``os.write``
    or in ``with`` blocks and closed by now, and the resolver's thread is
    told to stop.  Whenever shutdown could matter, it runs as before: an
    ``atexit`` handler was registered (a site hook, a coverage tool), the
    ``threading`` module has a thread to join, or a flush fails (a closed
    pipe, which Python then reports as it always did).
    """
    import atexit

    threading = sys.modules.get("threading")
    if (atexit._ncallbacks() == 0 and isinstance(status, int)
            and (threading is None or threading.active_count() <= 1)):
        try:
            for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
                if stream is not None:
                    stream.flush()
        except Exception:  # noqa: BLE001 - the normal exit reports it
            sys.exit(status)
        os._exit(status)
    sys.exit(status)


def run_args(args: list[str], environ: dict[str, str]) -> int | None:
    """Run ``sandbox run``/``sh`` from ``args``; its exit status, or None for typer.

    The one run path of a direct run (``main``) and of a served one
    (``sandbox.served``, in a child of the warm server): both must go through
    exactly this code so a served run is the same run, with the same plan.
    """
    if args[:1] not in (["run"], ["sh"]):
        return None
    opts = (parse_run if args[0] == "run" else parse_sh)(args[1:])
    if opts is None:
        return None
    if opts.quiet:
        from sandbox import quiet

        quiet.install()
    from sandbox.fastrun import run_cached

    # cached plans are bwrap plans; macOS plans afresh (sandbox.macos.run)
    status = run_cached(opts, environ) if sys.platform != "darwin" else None
    if status is None:
        from sandbox.app import run

        status = run(opts, environ)
    return status


def main() -> None:
    # A start allocates some 10,000 objects (the modules' code, the plan) and
    # frees few of them: at the default threshold (700) the collector walked
    # them 14 times per cached run, about 1 ms.  It still runs, less often.
    import gc

    gc.set_threshold(GC_THRESHOLD, 10, 10)
    args = sys.argv[1:]
    if args == ["--version"]:  # asked by scripts and plugins: not worth importing typer
        from sandbox import __version__

        print(f"sandbox {__version__}")
        sys.exit(0)
    if args[:1] == ["hook"] and not {"--help", "-h"} & set(args[1:]):
        # run by an agent before every shell command: no typer, exit 0 or 2 only
        from sandbox.agenthooks import main as hook_main

        sys.exit(hook_main(args[1:]))
    if args == ["server", "run"]:  # the warm server (sandbox.server): never typer
        from sandbox import server

        sys.exit(server.serve())
    status = run_args(args, dict(os.environ))
    if status is not None:
        # a direct run is over: maybe leave a warm server for the next one
        # (after the command, so the run itself never waits for it)
        if sys.platform == "linux":
            from sandbox import server

            server.maybe_start(os.environ)
        exit_now(status)
    from sandbox.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
