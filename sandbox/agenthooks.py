"""``sandbox hook AGENT``: rewrite a coding agent's shell tool call to run in the sandbox.

The agent runs this before every shell command, with one JSON event on
stdin.  For the agent's shell tool the answer is the tool input with only
``command`` changed, to::

    '<absolute path of sandbox>' sh --workspace '<project root>' -- '<original command>'

quoted for a POSIX shell (the agents run the command with bash), so the
original string reaches ``bash -c`` inside the sandbox byte for byte.
Every other field of the tool input is carried over unchanged, known or
not: the agents *replace* the tool input with what a hook returns.  Other
tools pass through (exit 0, no output).

Fail closed.  An agent runs the *unwrapped* command when a hook exits with
anything but 0 (with an answer) or 2, so every refusal, malformed event,
unexpected tool input and internal error here ends in exit 2 with one line
on stderr, which the agent shows the model as the reason.

Protocols (the shapes are recorded in tests/data/agents/, the sources in
the docs' agents.md):

* ``claude-code``: ``PreToolUse`` on ``Bash``; answer
  ``hookSpecificOutput.updatedInput`` with ``permissionDecision`` ``allow``
  (``--ask``, and always in plan mode: ``ask``, the user confirms the
  rewritten command).
  ``PowerShell`` commands cannot be wrapped and are refused.
* ``codex``: ``PreToolUse`` on ``Bash``; ``updatedInput`` is honoured only
  with ``permissionDecision: "allow"``.
* ``gemini``: ``BeforeTool`` on ``run_shell_command``;
  ``hookSpecificOutput.tool_input`` is merged over the model's arguments.
* ``opencode``: the shape our plugin (integrations/opencode/sandbox.js)
  sends from ``tool.execute.before``: ``{"tool", "args", "directory",
  "worktree"}``; the answer is ``{"args": ...}``.

Standard library only, no typer: this runs for every command an agent runs.
"""

from __future__ import annotations

import json
import os
import sys

USAGE = ("usage: sandbox hook claude-code|codex|gemini|opencode [--profile NAME] [--ask] "
         "(reads the agent's event JSON on stdin)")
MAX_EVENT = 16 << 20  # an event bigger than this is not one an agent sends


class Refusal(Exception):
    """The hook will not let this tool call run: exit 2, the message on stderr."""


# -- quoting: the POSIX single-quote form, as shlex.quote writes it ------------------
# (written out here so the hook does not import shlex and re on every command)

_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-")


def quote(word: str) -> str:
    """``word`` as one POSIX shell word: bare when every character is safe,
    else in single quotes with each ``'`` written ``'"'"'``."""
    if word and all(c in _SAFE for c in word):
        return word
    return "'" + word.replace("'", "'\"'\"'") + "'"


def unquote_exact(text: str) -> str | None:
    """The word ``w`` with ``quote(w) == text``, or None when ``text`` is not
    exactly what ``quote`` writes for some word."""
    word = text[1:-1].replace("'\"'\"'", "'") if len(text) >= 2 and text[0] == text[-1] == "'" \
        else text
    return word if quote(word) == text else None


# -- the rewrite ----------------------------------------------------------------------

class Options:
    __slots__ = ("agent", "profile", "decision")

    def __init__(self, agent: str, profile: str | None, decision: str) -> None:
        self.agent = agent
        self.profile = profile
        self.decision = decision


def sandbox_exe(argv0: str | None = None, executable: str | None = None) -> str:
    """The absolute path of the ``sandbox`` console script that is running.

    The rewritten command names it by absolute path, so what runs does not
    depend on the agent's PATH (which a workspace virtualenv may lead).
    """
    argv0 = sys.argv[0] if argv0 is None else argv0
    executable = sys.executable if executable is None else executable
    candidates = []
    if os.path.basename(argv0) == "sandbox":
        candidates.append(os.path.abspath(argv0))
    elif os.path.basename(argv0) == "sandbox-direct":  # started by the native client
        candidates.append(os.path.join(os.path.dirname(os.path.abspath(argv0)), "sandbox"))
    if executable:
        candidates.append(os.path.join(os.path.dirname(os.path.abspath(executable)), "sandbox"))
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise Refusal("cannot find the sandbox executable to run the command with "
                  f"(looked at {', '.join(candidates) or 'nothing'}); reinstall sandbox")


def prefix(exe: str, workspace: str, profile: str | None) -> str:
    """Everything of the rewritten command before the quoted original."""
    words = [exe, "sh", "--workspace", workspace]
    if profile:
        words += ["--profile", profile]
    return " ".join(quote(w) for w in words) + " -- "


def wrap(command: str, exe: str, workspace: str, profile: str | None) -> str:
    """``command`` run by ``sandbox sh`` in ``workspace``.

    A command that is *exactly* what this function returns for some string
    (same executable, workspace and profile) is already wrapped and comes
    back unchanged: wrapping it again would start a sandbox inside one, which
    fails.  Anything else is wrapped, also a command that merely starts with
    ``sandbox`` or names another workspace: the model may write those.
    """
    head = prefix(exe, workspace, profile)
    if command.startswith(head) and unquote_exact(command[len(head):]) is not None:
        return command
    return head + quote(command)


def _within(path: str, root: str) -> bool:
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def project_root(cwd: str, project_dir: str | None) -> str:
    """The workspace: the agent's project directory when ``cwd`` lies in it,
    else ``cwd`` itself (``sandbox`` refuses a home or system directory)."""
    if project_dir and os.path.isabs(project_dir) and "\0" not in project_dir \
            and _within(cwd, project_dir):
        return os.path.normpath(project_dir)
    return cwd


def rewrite(tool_input, workspace: str, opts: Options) -> dict:
    """The tool input with ``command`` wrapped and every other field kept."""
    if not isinstance(tool_input, dict):
        raise Refusal(f"the shell tool's input is not a JSON object ({type(tool_input).__name__})")
    command = tool_input.get("command")
    if not isinstance(command, str):
        raise Refusal("the shell tool's input has no string 'command'")
    if "\0" in command:
        raise Refusal("the command holds a NUL byte")
    updated = dict(tool_input)
    updated["command"] = wrap(command, sandbox_exe(), workspace, opts.profile)
    return updated


# -- one adapter per agent ------------------------------------------------------------

def _field(event: dict, name: str, kind=str):
    value = event.get(name)
    if not isinstance(value, kind):
        raise Refusal(f"malformed event: '{name}' is missing or not a {kind.__name__}")
    return value


def _cwd(event: dict, name: str = "cwd") -> str:
    cwd = _field(event, name)
    if not os.path.isabs(cwd) or "\0" in cwd:
        raise Refusal(f"malformed event: '{name}' is not an absolute path: {cwd!r}")
    return os.path.normpath(cwd)  # as sandbox itself reads --workspace


def _event_name(event: dict, expected: str) -> None:
    name = _field(event, "hook_event_name")
    if name != expected:
        raise Refusal(f"this hook handles {expected} events, not {name!r}; "
                      f"register it under {expected}")


def claude_code(event: dict, environ: dict, opts: Options):
    _event_name(event, "PreToolUse")
    tool = _field(event, "tool_name")
    if tool == "PowerShell":
        raise Refusal("PowerShell commands cannot run in the sandbox; use the Bash tool")
    if tool != "Bash":
        return None
    cwd = _cwd(event)
    workspace = project_root(cwd, environ.get("CLAUDE_PROJECT_DIR"))
    updated = rewrite(event.get("tool_input"), workspace, opts)
    # "allow" would run it without a prompt; in plan mode the user asked to
    # change nothing, and the workspace is writable inside: let them decide.
    decision = "ask" if event.get("permission_mode") == "plan" else opts.decision
    return {"hookSpecificOutput": {
        "hookEventName": "PreToolUse",
        "permissionDecision": decision,
        "permissionDecisionReason": f"runs inside the sandbox (workspace {workspace})",
        "updatedInput": updated,
    }}


def codex(event: dict, environ: dict, opts: Options):
    _event_name(event, "PreToolUse")
    if _field(event, "tool_name") != "Bash":
        return None  # apply_patch, MCP tools: not shell commands
    workspace = _cwd(event)  # hooks run in the session's cwd, the project
    updated = rewrite(event.get("tool_input"), workspace, opts)
    # Codex applies updatedInput only together with "allow" ("ask" is refused)
    return {"hookSpecificOutput": {"hookEventName": "PreToolUse",
                                   "permissionDecision": "allow", "updatedInput": updated}}


def gemini(event: dict, environ: dict, opts: Options):
    _event_name(event, "BeforeTool")
    if _field(event, "tool_name") != "run_shell_command":
        return None
    cwd = _cwd(event)
    workspace = project_root(cwd, environ.get("GEMINI_PROJECT_DIR"))
    updated = rewrite(event.get("tool_input"), workspace, opts)
    return {"hookSpecificOutput": {"hookEventName": "BeforeTool", "tool_input": updated}}


def opencode(event: dict, environ: dict, opts: Options):
    if _field(event, "tool") != "bash":
        return None
    directory = _cwd(event, "directory")
    worktree = event.get("worktree")
    root = worktree if isinstance(worktree, str) and worktree not in ("", "/") else None
    workspace = project_root(directory, root)
    return {"args": rewrite(event.get("args"), workspace, opts)}


ADAPTERS = {"claude-code": claude_code, "codex": codex, "gemini": gemini, "opencode": opencode}


def parse_args(args: list[str]) -> Options:
    if not args or args[0] not in ADAPTERS:
        raise Refusal(f"unknown agent {args[0]!r}; {USAGE}" if args else USAGE)
    agent, profile, decision = args[0], None, "allow"
    rest = list(args[1:])
    while rest:
        arg = rest.pop(0)
        name, eq, value = arg.partition("=")
        if name in ("--profile", "-p") and (eq and name == "--profile" or not eq):
            if not eq:
                if not rest:
                    raise Refusal(f"{name} needs a value; {USAGE}")
                value = rest.pop(0)
            if not value or value.startswith("-"):
                raise Refusal(f"{name} needs a value, got {value!r}")
            profile = value
        elif arg == "--ask" and agent == "claude-code":
            decision = "ask"
        else:
            raise Refusal(f"unknown option {arg!r} for {agent}; {USAGE}")
    return Options(agent, profile, decision)


def respond(raw: bytes, opts: Options, environ: dict):
    """The answer to print for the event ``raw``, or None to let the call pass."""
    if len(raw) > MAX_EVENT:
        raise Refusal("the event on stdin is too large")
    try:
        event = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refusal(f"malformed event: stdin is not JSON ({exc})") from None
    if not isinstance(event, dict):
        raise Refusal("malformed event: stdin is not a JSON object")
    return ADAPTERS[opts.agent](event, environ, opts)


def main(args: list[str], stdin=None, stdout=None, stderr=None, environ=None) -> int:
    """Run the hook; the exit status is 0 (answer printed, or pass) or 2 (refused)."""
    stdin = sys.stdin.buffer if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    try:
        opts = parse_args(args)
        answer = respond(stdin.read(MAX_EVENT + 1), opts, dict(os.environ if environ is None
                                                             else environ))
        if answer is not None:
            stdout.write(json.dumps(answer) + "\n")
            stdout.flush()
        return 0
    except Refusal as exc:
        message = f"sandbox hook: refused, the command was not run: {exc}"
    except BaseException as exc:  # noqa: BLE001 - any failure must block, never exit 1
        message = (f"sandbox hook: internal error, the command was not run: "
                   f"{type(exc).__name__}: {exc}")
    try:
        stderr.write(message.replace("\n", " ") + "\n")
        stderr.flush()
    except BaseException:  # noqa: BLE001 - nowhere left to say it; still block
        pass
    return 2
