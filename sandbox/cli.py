"""The command-line surface.  The only module that imports typer.

Every failure of the tool itself (a bad profile, a refused workspace, bad
usage, a sandbox that cannot be set up) is one line on stderr starting with
``sandbox:`` and exit status 125; no tracebacks.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Optional

import typer

from sandbox import __version__
from sandbox.options import RunOptions
from sandbox.errors import EXIT_TOOL_ERROR, SandboxError
from sandbox.errors import report as show_error

HELP = """Run one command inside an OS-level sandbox (bubblewrap on Linux).

By default (profile 'default'): the workspace (the current directory) is
writable; everything else is read-only; secrets such as ~/.ssh, ~/.aws and
tokens in the environment are hidden; git hooks and config, agent and editor
config stay read-only; there is no network; the command gets its own PID,
IPC and UTS namespaces and no capabilities.  Profiles 'pypi', 'npm',
'github' and 'anthropic-api' open just those hosts through the egress proxy
(the last two with your token, which the command sees only as a
placeholder); refused requests are listed on stderr at the end.

Examples:

  sandbox run -- npm test

  sandbox run --profile readonly -- git log -5

  sandbox run --profile pypi -- pip install -r requirements.txt

  sandbox explain -- make          (what would be allowed, and the bwrap argv)

  sandbox sh 'make test && echo ok'   (one shell string; agent hooks: agents.md)

Exit status: the command's own; 128+N if it was killed by signal N; 124 on
a timeout (--timeout or [limits]); 125 when the sandbox itself failed (the command did not
run) or the persistence audit could not neutralise what the command left;
126/127 when the command cannot be executed / is not found.

Environment: SANDBOX_BWRAP (path of bwrap), SANDBOX_KILL_GRACE (seconds
between a forwarded signal and the kill, default 5), SANDBOX_NET_BRIDGE
(how a proxy profile's network namespace is made: auto, direct or bwrap;
see network.md), SANDBOX_AUDIT_LOG (on, off or a file; default
$XDG_STATE_HOME/sandbox/audit.jsonl; see audit-log.md).  Docs (README.md,
profiles.md, network.md, sessions.md, agents.md, api.md, ci.md, fallback.md,
audit-log.md, design.md):

\b
{docs}
"""

def _docs_dir() -> str:
    from sandbox import resources

    return os.path.dirname(resources.doc("profiles.md"))


app = typer.Typer(help=HELP.format(docs=_docs_dir()), add_completion=False, no_args_is_help=True,
                  rich_markup_mode=None, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]})
profiles_app = typer.Typer(help="List and show the profiles that --profile accepts.",
                           no_args_is_help=True, rich_markup_mode=None)
app.add_typer(profiles_app, name="profiles")
quarantine_app = typer.Typer(
    help="What the persistence audit took away (archived, inert) and how to put it back.",
    no_args_is_help=True, rich_markup_mode=None)
app.add_typer(quarantine_app, name="quarantine")
cache_app = typer.Typer(help="List and remove the per-workspace tool caches (pip, npm, cargo, "
                             "go... inside the sandbox write there).",
                        no_args_is_help=True, rich_markup_mode=None)
app.add_typer(cache_app, name="cache")
server_app = typer.Typer(help="The warm server that serves 'sandbox run' faster (served.md in the docs).",
                         no_args_is_help=True, rich_markup_mode=None)
app.add_typer(server_app, name="server")

ProfileOpt = Annotated[Optional[str], typer.Option(
    "--profile", "-p", metavar="NAME|PATH",
    help="Profile to apply: a built-in or user profile name "
         "($XDG_CONFIG_HOME/sandbox/profiles/NAME.toml), or a path to a .toml file. "
         "Default: the project's .sandbox.toml once 'sandbox trust' pinned it (untrusted, "
         "it can only tighten), else 'default'.")]
WorkspaceOpt = Annotated[Optional[str], typer.Option(
    "--workspace", "-w", metavar="DIR",
    help="The writable project directory. Default: the current directory. "
         "System directories (/, /usr, /etc, /tmp, ...), your home directory and its "
         "parents are refused.")]
AllowWriteOpt = Annotated[Optional[list[str]], typer.Option(
    "--allow-write", metavar="PATH",
    help="Also make PATH writable (repeatable). It must exist. Protected paths "
         "inside it stay read-only; secrets inside it stay hidden.")]
UnprotectOpt = Annotated[Optional[list[str]], typer.Option(
    "--unprotect", metavar="PATH",
    help="Make a protected path (e.g. .git/hooks, .vscode) writable anyway "
         "(repeatable). Shown as a weakening by 'explain' and in the report. A PATH "
         "that would change nothing (no protected path there) is refused.")]
EnvPassOpt = Annotated[Optional[list[str]], typer.Option(
    "--env-pass", metavar="NAME",
    help="Pass the variable NAME from your environment to the command even if the "
         "environment filter would remove it (repeatable). A weakening: shown on the "
         "'sandbox: weakened:' line, said loudly when NAME is a secret by its name or value.")]
NetworkOpt = Annotated[Optional[str], typer.Option(
    "--network", metavar="none|proxy",
    help="none: no network at all, whatever the profile opens. proxy: the egress proxy "
         "with the profile's rules and --allow-host (on a profile without network, a "
         "weakening).")]
AllowHostOpt = Annotated[Optional[list[str]], typer.Option(
    "--allow-host", metavar="HOST[:PORT]",
    help="Let the command reach HOST (port 443 unless given) through the egress proxy, "
         "which it turns on (repeatable; like a [[network.allow]] rule; a weakening).")]
SessionOpt = Annotated[Optional[str], typer.Option(
    "--session", metavar="NAME|none",
    help="Share the network namespace (loopback servers) with the other runs of session "
         "NAME that have the same network policy, wherever their workspace; 'none': a "
         "namespace of the run's own. Default: the runs in the same workspace (network.md).")]


def _session(raw):
    """--session, checked (sandbox.egress.netsession.parse_name)."""
    from sandbox import runflags
    from sandbox.egress import netsession

    try:
        return netsession.parse_name(raw)
    except runflags.FlagError as err:
        _fail(f"{err.message} (hint: {err.hint})")


CommandArg = Annotated[Optional[list[str]], typer.Argument(
    metavar="-- COMMAND [ARGS]...", help="The command to run, after '--'.")]


def _options(command, profile, workspace, allow_write, unprotect, report=None, dry_run=False,
             quiet=False, timeout=None, env_pass=None, network=None, allow_host=None):
    for option, values in (("--profile", [profile]), ("--workspace", [workspace]),
                           ("--allow-write", allow_write or []), ("--unprotect", unprotect or []),
                           ("--report", [report])):
        for value in values:
            if value is not None and value.startswith("-") and (option, value) != ("--report", "-"):
                # e.g. "--unprotect -- make": the "--" was taken as the path
                _fail(f"{option} needs a value, got {value!r} (write ./{value} for a file "
                      "whose name starts with '-')")
    from sandbox import runflags

    for option, values in (("--network", [network]), ("--env-pass", env_pass or []),
                           ("--allow-host", allow_host or [])):
        for value in values:
            if value is not None and value.startswith("-"):
                _fail(f"{option} needs a value, got {value!r}")
    try:
        timeout, env_pass, network, allow_host = runflags.normalize(
            timeout, env_pass or (), network, allow_host or ())
    except runflags.FlagError as err:
        _fail(f"{err.message} (hint: {err.hint})")
    return RunOptions(command=tuple(command or ()), profile=profile, workspace=workspace,
                      allow_write=tuple(allow_write or ()), unprotect=tuple(unprotect or ()),
                      report=report, dry_run=dry_run, quiet=quiet, timeout=timeout,
                      env_pass=env_pass, network=network, allow_host=allow_host)


@app.command(context_settings={"allow_interspersed_args": False})
def run(
    command: CommandArg = None,
    profile: ProfileOpt = None,
    workspace: WorkspaceOpt = None,
    allow_write: AllowWriteOpt = None,
    unprotect: UnprotectOpt = None,
    report: Annotated[Optional[str], typer.Option(
        "--report", metavar="FILE",
        help="Write one JSON object about the run to FILE: command, workspace, profile "
             "name and sha256, exit status or signal, weakenings, warnings. FILE is replaced "
             "if it is a regular file and refused if it is anything else (a symlink, a FIFO, "
             "a device); '-' or /dev/stdout, /dev/stderr and /dev/fd/N write to that stream.")] = None,
    report_fd: Annotated[Optional[int], typer.Option(
        "--report-fd", metavar="N", min=0,
        help="Write the report (see --report) to the inherited file descriptor N, for "
             "plugins; N is never passed on to the command.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the bwrap command line instead of running it, after a "
                          "comment naming the descriptors only a real run opens.")] = False,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q",
        help="Print only errors on the 'sandbox:' lines: no weakened, warning, blocked, "
             "audit (when neutralised), note or timeout lines. --report and the audit log "
             "still record all of it; with --report or --report-fd no 'sandbox:' line at "
             "all, they are in the report's diagnostics.")] = False,
    timeout: Annotated[Optional[str], typer.Option(
        "--timeout", metavar="SECONDS",
        help="Stop the command after SECONDS (a positive number): SIGTERM to it, the whole "
             "sandbox killed after the grace period; exit status 124. With a profile's "
             "limits.timeout_seconds too, the shorter one applies.")] = None,
    env_pass: EnvPassOpt = None,
    network: NetworkOpt = None,
    allow_host: AllowHostOpt = None,
    session: SessionOpt = None,
) -> None:
    """Run COMMAND in the sandbox: sandbox run [OPTIONS] -- COMMAND [ARGS]...

    \b
    Examples:
      sandbox run -- pytest -q
      sandbox run --workspace ~/src/app -- make test
      sandbox run --profile readonly -- git log -5
      sandbox run --report run.json -- npm test
      sandbox run --allow-write ~/.m2/repository -- mvn -o package
      sandbox run --profile pypi -- pip install -r requirements.txt
      sandbox run --timeout 600 --allow-host registry.npmjs.org -- npm ci

    The workspace is writable, the rest of the host read-only, secrets read as
    empty, protected paths (.git/hooks, .git/config, .vscode, .claude, ...)
    stay read-only, and there is no network. A profile with [network] mode =
    "proxy" (built-in: pypi, npm, github, anthropic-api) lets the command reach only the
    endpoints its [[network.allow]] rules name, through a proxy at
    127.0.0.1:3128 (http_proxy/https_proxy are set); a refused request gets an
    HTTP error (403 when the profile does not allow it) and is listed on
    stderr when the command ends. Use 'sandbox explain' to see exactly what a
    profile allows.

    Exit status: the command's own; 128+N if it was killed by signal N; 124
    on a timeout (--timeout or [limits]); 125 if the sandbox could not be set up (the
    command did not run; stderr has one 'sandbox:' line saying why) or the
    audit could not neutralise what it left; 126/127 cannot execute / not
    found.
    """
    from sandbox.app import run as run_app

    if report_fd is not None:
        if report is not None:
            _fail("--report and --report-fd exclude each other")
        report = f"/dev/fd/{report_fd}"
    opts = _options(command, profile, workspace, allow_write, unprotect, report, dry_run, quiet,
                    timeout, env_pass, network, allow_host)
    opts.session = _session(session)
    if opts.quiet:
        from sandbox import quiet as quiet_mod

        quiet_mod.install()
    if not opts.command:
        _fail("no command given; usage: sandbox run [OPTIONS] -- COMMAND [ARGS]...")
    raise typer.Exit(run_app(opts, dict(os.environ)))


@app.command(context_settings={"allow_interspersed_args": False})
def sh(
    string: Annotated[Optional[list[str]], typer.Argument(
        metavar="'COMMAND STRING'",
        help="One shell command string, quoted as one word.")] = None,
    profile: ProfileOpt = None,
    workspace: WorkspaceOpt = None,
    allow_write: AllowWriteOpt = None,
    unprotect: UnprotectOpt = None,
    report: Annotated[Optional[str], typer.Option(
        "--report", metavar="FILE", help="As for 'sandbox run'.")] = None,
    report_fd: Annotated[Optional[int], typer.Option(
        "--report-fd", metavar="N", min=0, help="As for 'sandbox run'.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="As for 'sandbox run'.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="As for 'sandbox run'.")] = False,
    timeout: Annotated[Optional[str], typer.Option(
        "--timeout", metavar="SECONDS", help="As for 'sandbox run'.")] = None,
    env_pass: EnvPassOpt = None,
    network: NetworkOpt = None,
    allow_host: AllowHostOpt = None,
    session: SessionOpt = None,
) -> None:
    """Run one shell command string in the sandbox: sandbox sh [OPTIONS] [--] 'STRING'

    The string is run by bash -c (sh -c where bash is absent; the shell is
    taken from /usr/bin or /bin, never from PATH) inside the sandbox, exactly
    as given: nothing splits, joins or re-quotes it. This is what the agent
    hooks emit (see agents.md). The options are those of 'sandbox run'; write
    '--' before a string that starts with '-'.

    \b
    Examples:
      sandbox sh 'make test && echo ok'
      sandbox sh -p pypi -- 'pip install -r requirements.txt'
      sandbox sh --workspace ~/src/app -- 'cd web && npm test'
    """
    from sandbox import shellcmd
    from sandbox.app import run as run_app

    if not string or len(string) != 1:
        _fail("sandbox sh takes exactly one command string, quoted as one word: "
              "sandbox sh [OPTIONS] -- 'make test && echo ok'")
    if report_fd is not None:
        if report is not None:
            _fail("--report and --report-fd exclude each other")
        report = f"/dev/fd/{report_fd}"
    opts = _options(shellcmd.argv(string[0]), profile, workspace, allow_write, unprotect,
                    report=report, dry_run=dry_run, quiet=quiet, timeout=timeout,
                    env_pass=env_pass, network=network, allow_host=allow_host)
    opts.session = _session(session)
    if opts.quiet:
        from sandbox import quiet as quiet_mod

        quiet_mod.install()
    raise typer.Exit(run_app(opts, dict(os.environ)))


@app.command()
def explain(
    command: CommandArg = None,
    profile: ProfileOpt = None,
    workspace: WorkspaceOpt = None,
    allow_write: AllowWriteOpt = None,
    unprotect: UnprotectOpt = None,
    env_pass: EnvPassOpt = None,
    network: NetworkOpt = None,
    allow_host: AllowHostOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    platform: Annotated[Optional[str], typer.Option(
        "--platform", metavar="linux|macos",
        help="Whose backend to show: 'macos' prints the Seatbelt profile, its -D parameters "
             "and the sandbox-exec argv, on any host. Default: this host's.")] = None,
) -> None:
    """Show the resolved policy, what is writable, protected and hidden, and the exact bwrap argv.

    Takes the profile, path and network options and --env-pass of 'run' (not
    --report, --dry-run or --timeout) and runs nothing; the command defaults
    to 'true'. Weakenings (protections a profile or option removed on purpose)
    are listed under WEAKENED.

    \b
    Examples:
      sandbox explain
      sandbox explain --profile ./ci.toml -- make
      sandbox explain --json
      sandbox explain --platform macos --json
    """
    from sandbox import explain as render
    from sandbox.app import prepare

    if platform not in (None, "linux", "macos"):
        from sandbox.errors import UsageError

        raise typer.Exit(show_error(UsageError(
            f"--platform {platform}: not a platform sandbox knows",
            hint="use --platform linux or --platform macos")))
    mac = platform == "macos" or (platform is None and sys.platform == "darwin")
    opts = _options(command or ["true"], profile, workspace, allow_write, unprotect,
                    env_pass=env_pass, network=network, allow_host=allow_host)
    try:
        prepared = prepare(opts, dict(os.environ), "macos" if mac else "linux")
    except SandboxError as err:
        if as_json:  # the same keys, null, and the error: programs read one shape
            print(json.dumps(render.error_data(err), indent=2))
        raise typer.Exit(show_error(err))
    if mac:
        from sandbox.macos import explain as mac_render

        data = mac_render.as_data(prepared, dict(os.environ))
        print(json.dumps(data, indent=2) if as_json else mac_render.as_text(data))
    elif as_json:
        print(json.dumps(render.as_data(prepared), indent=2))
    else:
        print(render.as_text(prepared))


@app.command(context_settings={"allow_interspersed_args": False})
def hook(
    agent: Annotated[str, typer.Argument(
        metavar="claude-code|codex|gemini|opencode", help="Whose event is on stdin.")],
    profile: Annotated[Optional[str], typer.Option(
        "--profile", "-p", metavar="NAME|PATH",
        help="Add --profile NAME to the rewritten command.")] = None,
    ask: Annotated[bool, typer.Option(
        "--ask", help="claude-code: let the user confirm each rewritten command "
                      "(permissionDecision 'ask' instead of 'allow').")] = False,
) -> None:
    """Rewrite an agent's shell tool call to run in the sandbox (the agent runs this).

    Reads one hook event (JSON) on stdin. For the shell tool (Claude Code
    and Codex: Bash; Gemini CLI: run_shell_command; OpenCode: bash) it prints
    the tool input with the command rewritten to
    '<sandbox> sh --workspace <project root> -- <command>', every other field
    kept; other tools pass (exit 0, no output). Any problem, a malformed event
    or an unexpected tool input exits 2 with one line on stderr, which the
    agents treat as "do not run". Install it with 'sandbox install-hook';
    see agents.md.
    """
    from sandbox.agenthooks import main as hook_main

    args = [agent] + (["--profile", profile] if profile else []) + (["--ask"] if ask else [])
    raise typer.Exit(hook_main(args))


@app.command("install-hook")
def install_hook(
    agent: Annotated[str, typer.Argument(metavar="claude-code|codex|gemini|opencode",
                                         help="The agent whose settings to change.")],
    project: Annotated[bool, typer.Option(
        "--project", help="The project's settings in the current directory (Claude Code: "
                          ".claude/settings.local.json; Codex: .codex/hooks.json; Gemini CLI: "
                          ".gemini/settings.json; OpenCode: .opencode/plugins/sandbox.js)."
    )] = False,
    user: Annotated[bool, typer.Option(
        "--user", help="Your own settings (the default): ~/.claude/settings.json, "
                       "~/.codex/hooks.json, ~/.gemini/settings.json, "
                       "~/.config/opencode/plugins/sandbox.js.")] = False,
    show: Annotated[bool, typer.Option(
        "--print", help="Print the snippet and where it would go; change nothing.")] = False,
) -> None:
    """Add the 'sandbox hook' to an agent's settings, so its shell commands run sandboxed.

    The snippet is merged into the settings file: other keys and hooks are
    kept, installing twice changes nothing, and a file that is not a plain
    JSON object is refused with nothing written. For OpenCode the shipped
    plugin is written, with this sandbox's path in it. Restart the agent
    (Codex: review and trust the hook in /hooks; Gemini CLI: enable hooks in
    /settings if your version needs it). See agents.md.

    \b
    Examples:
      sandbox install-hook claude-code
      sandbox install-hook codex --project
      sandbox install-hook gemini --print
    """
    from sandbox import agentconfig

    if agent not in agentconfig.INSTALLABLE:
        _fail(f"unknown agent {agent!r}: one of {', '.join(agentconfig.INSTALLABLE)}")
    if project and user:
        _fail("--project and --user exclude each other")
    try:
        print(agentconfig.install_or_show(agent, project, show, dict(os.environ)), end="")
    except SandboxError as err:
        raise typer.Exit(show_error(err))


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Check what this host lets the sandbox enforce, and how to fix what it refuses.

    Probes bwrap, user namespaces (and who blocks them: Ubuntu's AppArmor
    rule, a container's seccomp profile, a sysctl, missing capabilities, an
    enclosing sandbox), seccomp, Landlock, cgroup v2 delegation, container and
    CI. Prints one table of guarantees (filesystem, secrets, network,
    processes, syscalls, limits) as enforced / degraded / unavailable, and for
    each problem its narrowest fix. Exit status 0 only when the default
    profile is fully enforced here, 1 otherwise.

    \b
    Examples:
      sandbox doctor
      sandbox doctor --json
    """
    from sandbox.linux import doctor as diagnose

    raise typer.Exit(diagnose.run(dict(os.environ), as_json))


@profiles_app.command("list")
def profiles_list() -> None:
    """List built-in and user profiles with their descriptions."""
    from sandbox import profile as prof

    builtins = prof.builtin_names()
    for name in builtins:
        print(f"{name:<16} built-in  {_description(prof.resources.profiles_dir() / f'{name}.toml')}")
    for name in prof.user_names():
        path = prof.user_profile_dir() / f"{name}.toml"
        if name in builtins:  # listed so that the problem can be seen and fixed
            print(f"{name:<16} user      (invalid: shadows the built-in '{name}'; rename {path})")
            continue
        print(f"{name:<16} user      {_description(path)}")


@profiles_app.command("show")
def profiles_show(name: Annotated[str, typer.Argument(help="Profile name or path.")]) -> None:
    """Print a profile's TOML text and the chain of profiles it extends."""
    from sandbox import profile as prof

    try:
        chain = prof.read_chain(name)
        for src in chain:
            prof.parse(src)
    except SandboxError as err:
        raise typer.Exit(show_error(err))
    for src in chain:
        print(f"# --- {src.name}: {src.path}")
        print(src.text.rstrip())


def _state() -> str:
    from sandbox import discover
    from sandbox.app import home_dir

    return discover.state_dir(dict(os.environ), home_dir(dict(os.environ)))


@quarantine_app.command("list")
def quarantine_list() -> None:
    """List quarantined items: ID, when, what, where it was, and what was done."""
    from sandbox import quarantine
    from sandbox.errors import printable

    try:
        found = quarantine.items(_state())
    except SandboxError as err:
        raise typer.Exit(show_error(err))
    for ident, item in found:
        done = f"restored {item['restored']}" if item.get("restored") else item.get("action", "")
        print(printable(f"{ident}  {item.get('time', '')}  {item.get('kind', '')}  "
                        f"{item.get('path', '')}  ({done})"))


@quarantine_app.command("restore")
def quarantine_restore(ident: Annotated[str, typer.Argument(
        metavar="ID", help="An ID from 'sandbox quarantine list'.")]) -> None:
    """Put a quarantined item back where the audit found it.

    An item the audit moved is restored only where nothing exists now; a git
    config the audit rebuilt is put back over the rebuilt one. The restored
    item is live again: a hook runs at the next commit.
    """
    from sandbox import quarantine
    from sandbox.errors import printable

    try:
        item = quarantine.restore(_state(), ident)
    except quarantine.QuarantineError as err:
        raise typer.Exit(show_error(SandboxError(str(err))))
    except SandboxError as err:
        raise typer.Exit(show_error(err))
    print(printable(f"restored {item['path']}"))


def _state_dir() -> str:
    from sandbox.app import home_dir
    from sandbox.discover import state_dir

    try:
        return state_dir(dict(os.environ), home_dir(dict(os.environ)))
    except SandboxError as err:
        raise typer.Exit(show_error(err))


@cache_app.command("list")
def cache_list() -> None:
    """List the tool caches, largest first: size, and the workspace each belongs to.

    A workspace that no longer exists is marked (gone); 'sandbox cache clean
    --workspace PATH' still removes its cache.
    """
    from sandbox import caches

    state = _state_dir()
    found = caches.entries(state)
    if not found:
        print(f"no tool caches in {caches.root(state)}")
        return
    for entry in found:
        name = entry.workspace or f"(unknown workspace: {entry.path})"
        print(f"{caches.human(entry.size):>10}  {name}{'  (gone)' if entry.gone else ''}")
    total = sum(e.size for e in found)
    print(f"{caches.human(total):>10}  total, {len(found)} cache(s) in {caches.root(state)}")


@cache_app.command("clean")
def cache_clean(
    workspace: Annotated[Optional[str], typer.Option(
        "--workspace", "-w", metavar="DIR",
        help="Remove the cache of this workspace (it need not exist any more). "
             "Default: the current directory.")] = None,
    everything: Annotated[bool, typer.Option(
        "--all", help="Remove every workspace's tool cache.")] = False,
) -> None:
    """Remove a workspace's tool cache (or all of them) to free the space.

    A cache in use by a running sandbox is left alone (exit status 125); the
    next run in a cleaned workspace starts with an empty cache.

    \b
    Examples:
      sandbox cache clean                  (the current directory's workspace)
      sandbox cache clean -w ~/src/old-app
      sandbox cache clean --all
    """
    from sandbox import caches
    from sandbox.discover import logical_cwd

    if everything and workspace is not None:
        _fail("--all and --workspace exclude each other")
    state = _state_dir()
    found = caches.entries(state)
    if not everything:
        cwd = logical_cwd(dict(os.environ))
        target = os.path.realpath(os.path.join(cwd, workspace or "."))
        found = [e for e in found if e.key == caches.key(target)]
        if not found:
            print(f"no tool cache for {target}")
            return
    busy = []
    for entry in found:
        try:
            caches.remove(state, entry)
        except caches.Busy:
            busy.append(entry)
            continue
        except OSError as exc:
            print(f"sandbox: error: cannot remove {entry.path}: {exc.strerror or exc}",
                  file=sys.stderr)
            raise typer.Exit(EXIT_TOOL_ERROR)
        print(f"removed {caches.human(entry.size)}: {entry.workspace or entry.path}")
    if everything:
        caches.remove_leftovers(state)
    if busy:
        names = ", ".join(e.workspace or e.path for e in busy)
        print(f"sandbox: error: not removed, a running sandbox uses it: {names} (hint: run "
              "'sandbox cache clean' again when that run has finished)", file=sys.stderr)
        raise typer.Exit(EXIT_TOOL_ERROR)


@app.command("trust")
def trust_cmd(
    path: Annotated[Optional[str], typer.Argument(
        metavar="[PATH]", help="A .sandbox.toml, or a directory whose project profile to use "
                               "(found as 'run' finds it). Default: the current directory.")] = None,
    list_all: Annotated[bool, typer.Option("--list", help="List trusted project profiles: "
                                           "trusted, changed (untrusted again) or missing.")] = False,
    revoke: Annotated[bool, typer.Option("--revoke", help="Stop trusting it.")] = False,
) -> None:
    """Trust a project's .sandbox.toml, so that runs without --profile use it as it is.

    Until then it only tightens the default profile. The trust records the
    file's path and sha256 in the sandbox's state directory, out of every
    run's reach; any change to the file makes it untrusted again.

    \b
    Examples:
      sandbox trust                 (the .sandbox.toml of this project)
      sandbox trust --list
      sandbox trust --revoke ~/src/app
    """
    from sandbox import trustcmd

    if list_all and (revoke or path is not None):
        _fail("--list takes no PATH and excludes --revoke")
    try:
        lines = (trustcmd.listing(dict(os.environ)) if list_all else
                 trustcmd.revoke(path, dict(os.environ)) if revoke else
                 trustcmd.grant(path, dict(os.environ)))
    except SandboxError as err:
        raise typer.Exit(show_error(err))
    for line in lines:
        print(line)


@server_app.command("status")
def server_status(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: running, pid, "
                                          "socket, started, idle, served, peak_rss_kib.")] = False,
) -> None:
    """Say whether a server runs for this state directory: pid, socket, start, runs served.

    Exit status 1 when none runs (with --json too, after {"running": false, ...}).
    """
    from sandbox import server

    if as_json:
        import json

        doc = server.status_doc(dict(os.environ))
        print(json.dumps(doc, sort_keys=True))
        raise typer.Exit(0 if doc["running"] else 1)
    lines = server.status_lines(dict(os.environ))
    if lines is None:
        print(f"no sandbox server runs for {server.paths(dict(os.environ))[1]}")
        raise typer.Exit(1)
    for line in lines:
        print(line)


@server_app.command("stop")
def server_stop() -> None:
    """Stop the running server (SIGTERM to its checked pid); exit 0 if none runs."""
    from sandbox import server

    code, line = server.stop(dict(os.environ))
    print(line, file=sys.stderr if code else sys.stdout)
    raise typer.Exit(code)


@server_app.command("run")
def server_run() -> None:
    """Run the server in the foreground (what a direct run starts; served.md in the docs).

    'sandbox-direct server run' is handled before this CLI is loaded: the
    server never imports it.
    """
    _fail("'server run' takes no options")


def _description(path) -> str:
    from sandbox import profile as prof

    try:
        chain = prof.read_chain(str(path))
        return prof.parse(chain[-1]).get("description", "")
    except SandboxError as err:
        return f"(invalid: {err.message})"


def _fail(message: str) -> None:
    print(f"sandbox: usage error: {message}", file=sys.stderr)
    raise typer.Exit(EXIT_TOOL_ERROR)


@app.callback(invoke_without_command=True)
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False) -> None:
    if version:
        print(f"sandbox {__version__}")
        raise typer.Exit(0)


def _help_for(exc) -> str:
    """The help that explains the command the usage error is about."""
    ctx = getattr(exc, "ctx", None)
    path = ["sandbox"]
    while ctx is not None and ctx.parent is not None:  # the root's name is the script's
        path.insert(1, ctx.info_name)
        ctx = ctx.parent
    return " ".join(path + ["--help"])


def main() -> None:
    """Run the CLI; bad usage is a one-line error with exit status 125."""
    try:
        # "sandbox", not argv[0]: the native client runs us as `sandbox-direct`
        rc = app(standalone_mode=False, prog_name="sandbox")
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:  # click's usage errors carry format_message()
        if type(exc).__name__ == "NoArgsIsHelpError":  # plain `sandbox`: teach, don't scold
            print(exc.format_message())
            sys.exit(0)
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            print(f"sandbox: usage error: {exc.format_message()} (see '{_help_for(exc)}')",
                  file=sys.stderr)
            sys.exit(EXIT_TOOL_ERROR)
        raise
    sys.exit(rc if isinstance(rc, int) else 0)
