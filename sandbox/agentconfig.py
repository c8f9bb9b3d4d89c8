"""``sandbox install-hook AGENT``: put the hook into the agent's settings file.

The snippet is merged, never clobbering: every other key and every other
hook stays as it was, a second install changes nothing, a hook this command
wrote before for another ``sandbox`` path is replaced, and a settings file
that is not a JSON object (or has comments, which a plain JSON reader cannot
keep) is refused with a one-line error before anything is written.  The file
is replaced whole (a temporary file renamed over it, with the old mode, and
the old owner when root installs for a user), so
an interrupted install leaves the old file.

Where each agent reads hooks (agents.md in the docs has the sources):

* Claude Code: ``~/.claude/settings.json`` (``$CLAUDE_CONFIG_DIR``), or the
  project's ``.claude/settings.local.json``: the local file, because the
  command names this machine's ``sandbox`` by absolute path and
  ``.claude/settings.json`` is usually committed.
* Codex: ``~/.codex/hooks.json`` (``$CODEX_HOME``) or ``.codex/hooks.json``.
  Codex also reads inline ``[hooks]`` tables in ``config.toml``; the JSON
  file is the form that can be merged without rewriting the user's TOML.
* Gemini CLI: ``~/.gemini/settings.json`` or ``.gemini/settings.json``.
* OpenCode has no hook settings: its plugin (``integrations/opencode/sandbox.js``)
  is copied to ``~/.config/opencode/plugins/`` (``$XDG_CONFIG_HOME``) or the
  project's ``.opencode/plugins/``, with this ``sandbox``'s path written in.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile

from sandbox.agenthooks import quote
from sandbox.errors import SandboxError, UsageError

AGENTS = ("claude-code", "codex", "gemini")
INSTALLABLE = AGENTS + ("opencode",)
PLUGIN_PLACEHOLDER = 'const SANDBOX_EXE = "/absolute/path/of/sandbox"'
PLUGIN_MARKER = "// OpenCode plugin: every `bash` tool call runs inside `sandbox`"


def hook_command(agent: str, exe: str) -> str:
    """The shell command the agent runs.  Whatever goes wrong before our hook
    answers (sandbox uninstalled: 127; a crash: 1) becomes exit 2, which every
    agent here treats as "block": any other status runs the command unwrapped."""
    return (f"{quote(exe)} hook {agent} || {{ s=$?; [ \"$s\" = 2 ] || echo \"sandbox: the "
            f"sandbox hook failed (exit $s); the command was not run\" >&2; exit 2; }}")


def _tail(agent: str) -> str:
    """What every command written by ``hook_command`` for ``agent`` ends with."""
    return hook_command(agent, "X")[len("X"):]


def snippet(agent: str, exe: str) -> dict:
    command = hook_command(agent, exe)
    if agent == "claude-code":
        # PowerShell is matched so that the hook refuses it: it cannot be wrapped.
        # onFailure "block" (Claude Code 2.1.295+): a hook that times out or
        # cannot start blocks the call instead of letting it through.
        handler = {"type": "command", "command": command, "timeout": 30, "onFailure": "block"}
        return {"hooks": {"PreToolUse": [{"matcher": "Bash|PowerShell", "hooks": [handler]}]}}
    if agent == "codex":
        handler = {"type": "command", "command": command, "timeout": 30,
                   "statusMessage": "Sandboxing the command"}
        return {"hooks": {"PreToolUse": [{"matcher": "^Bash$", "hooks": [handler]}]}}
    if agent == "gemini":
        handler = {"name": "sandbox", "type": "command", "command": command, "timeout": 30000,
                   "description": "Run shell commands inside sandbox"}
        return {"hooks": {"BeforeTool": [{"matcher": "run_shell_command", "hooks": [handler]}]}}
    raise UsageError(f"unknown agent {agent!r} (one of {', '.join(AGENTS)})")


def codex_toml(exe: str) -> str:
    """The Codex snippet as inline ``[hooks]`` tables for ``config.toml``, for
    those who keep their hooks there (``install-hook`` itself writes hooks.json:
    the standard library cannot rewrite a TOML file and keep its comments)."""
    group = snippet("codex", exe)["hooks"]["PreToolUse"][0]
    lines = ["[[hooks.PreToolUse]]", f"matcher = {json.dumps(group['matcher'])}", "",
             "[[hooks.PreToolUse.hooks]]"]
    # a JSON string with ensure_ascii is also a TOML basic string
    lines += [f"{key} = {json.dumps(value)}" for key, value in group["hooks"][0].items()]
    return "\n".join(lines) + "\n"


def settings_path(agent: str, project: bool, cwd: str, environ: dict, home: str) -> str:
    if agent == "claude-code":
        if project:
            return os.path.join(cwd, ".claude", "settings.local.json")
        base = environ.get("CLAUDE_CONFIG_DIR") or os.path.join(home, ".claude")
        return os.path.join(base, "settings.json")
    if agent == "codex":
        base = os.path.join(cwd, ".codex") if project else (
            environ.get("CODEX_HOME") or os.path.join(home, ".codex"))
        return os.path.join(base, "hooks.json")
    if agent == "gemini":
        base = os.path.join(cwd if project else home, ".gemini")
        return os.path.join(base, "settings.json")
    raise UsageError(f"unknown agent {agent!r} (one of {', '.join(AGENTS)})")


def plugin_path(project: bool, cwd: str, environ: dict, home: str) -> str:
    base = os.path.join(cwd, ".opencode") if project else os.path.join(
        environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config"), "opencode")
    return os.path.join(base, "plugins", "sandbox.js")


def plugin_text(exe: str) -> str:
    """The shipped OpenCode plugin with ``exe`` as the sandbox to run."""
    from sandbox import resources

    source = resources.data_dir("integrations") / "opencode" / "sandbox.js"
    text = source.read_text(encoding="utf-8")
    if PLUGIN_PLACEHOLDER not in text:
        raise SandboxError(f"{source}: the shipped plugin has no path to fill in; reinstall sandbox")
    return text.replace(PLUGIN_PLACEHOLDER, f"const SANDBOX_EXE = {json.dumps(exe)}", 1)


def install_plugin(exe: str, path: str) -> bool:
    """Write the plugin to ``path``; whether the file changed.  A file there
    that is not this plugin (another plugin of the same name) is refused."""
    text = plugin_text(exe)
    try:
        with open(path, encoding="utf-8") as f:
            old = f.read()
    except FileNotFoundError:
        old = None
    except (OSError, UnicodeDecodeError) as exc:
        raise SandboxError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}")
    if old == text:
        return False
    if old is not None and PLUGIN_MARKER not in old:
        raise SandboxError(f"{path} exists and is not the sandbox plugin; nothing was changed",
                           hint="move it away, or copy the plugin by hand (agents.md)")
    try:
        _replace(path, text, 0o644)
    except OSError as exc:
        raise SandboxError(f"cannot write {path}: {exc.strerror or exc}")
    return True


def merge(existing: dict, agent: str, exe: str, where: str = "settings") -> tuple[dict, bool]:
    """``existing`` with our hook added; (result, whether anything changed)."""
    if not isinstance(existing, dict):
        raise SandboxError(f"{where}: the file is not a JSON object; fix it or add the hook by "
                           "hand (sandbox install-hook --print)")
    result = copy.deepcopy(existing)
    hooks = result.setdefault("hooks", {})
    if not isinstance(hooks, dict):
        raise SandboxError(f"{where}: key 'hooks' is not an object; fix it or add the hook by "
                           "hand (sandbox install-hook --print)")
    ours = snippet(agent, exe)["hooks"]
    command = hook_command(agent, exe)
    changed = False
    for event, groups in ours.items():
        current = hooks.setdefault(event, [])
        if not isinstance(current, list):
            raise SandboxError(f"{where}: key 'hooks.{event}' is not a list; fix it or add the "
                               "hook by hand (sandbox install-hook --print)")
        if any(command in _commands(group) for group in current):
            continue
        stale = [g for g in current if _ours_for_another_path(g, agent)]
        current[:] = [g for g in current if not any(g is s for s in stale)]
        current.extend(copy.deepcopy(groups))
        changed = True
    return result, changed


def _commands(group) -> list:
    if not isinstance(group, dict) or not isinstance(group.get("hooks"), list):
        return []
    return [h.get("command") for h in group["hooks"] if isinstance(h, dict)]


def _ours_for_another_path(group, agent: str) -> bool:
    """A group this command wrote earlier, for a sandbox installed elsewhere."""
    commands = _commands(group)
    return (len(commands) == 1 and len(group["hooks"]) == 1 and isinstance(commands[0], str)
            and commands[0].endswith(_tail(agent)))


def read(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise SandboxError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}")
    if not text.strip():
        return {}
    try:  # a number only Python reads as infinity would be written back as non-JSON
        data = json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except ValueError as exc:
        raise SandboxError(f"{path}: not valid JSON ({exc}); nothing was changed",
                           hint="fix the file, or add the hook by hand: "
                                "sandbox install-hook AGENT --print")
    if not isinstance(data, dict):
        raise SandboxError(f"{path}: not a JSON object; nothing was changed",
                           hint="sandbox install-hook AGENT --print shows the snippet")
    return data


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text[:40]} is too large to write back as JSON")
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def inside_project(path: str, cwd: str) -> None:
    """Refuse a project file that leads out of the project.  The project is
    untrusted input (a cloned repository may ship ``.claude`` or the file as
    a symlink): following it would write our JSON or plugin anywhere."""
    real, root = os.path.realpath(path), os.path.realpath(cwd)
    if not real.startswith(root.rstrip("/") + "/"):
        raise SandboxError(f"{path} leads outside the project (to {real}); nothing was changed",
                           hint="remove the symlink, or add the hook by hand "
                                "(sandbox install-hook AGENT --print)")


def write(path: str, data: dict) -> None:
    """Replace ``path`` (through a symlink, its target) whole with ``data``."""
    _replace(path, json.dumps(data, indent=2) + "\n", 0o600)


def _replace(path: str, text: str, new_mode: int) -> None:
    """Replace ``path`` (through a symlink, its target) whole with ``text``,
    keeping its mode (``new_mode`` for a new file)."""
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    try:
        old = os.stat(target)
        mode = old.st_mode & 0o7777
    except FileNotFoundError:
        old, mode = None, new_mode
    fd, tmp = tempfile.mkstemp(prefix=".sandbox-", dir=directory)
    try:
        if old is not None and os.geteuid() == 0 and (old.st_uid, old.st_gid) != (0, 0):
            # root (sudo -E) installing for a user: a root-owned 0600 file
            # would leave the user's agent unable to read its settings
            os.fchown(fd, old.st_uid, old.st_gid)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def install(agent: str, exe: str, path: str) -> bool:
    """Merge the hook into ``path``; whether the file changed."""
    merged, changed = merge(read(path), agent, exe, where=path)
    if changed:
        try:
            write(path, merged)
        except OSError as exc:
            raise SandboxError(f"cannot write {path}: {exc.strerror or exc}")
    return changed


def install_or_show(agent: str, project: bool, show: bool, environ: dict) -> str:
    """``sandbox install-hook``: install (or with ``show``, print) the hook for
    ``agent``; the text to print."""
    from sandbox.agenthooks import Refusal, sandbox_exe
    from sandbox.app import home_dir
    from sandbox.discover import logical_cwd

    try:
        exe = sandbox_exe()
    except Refusal as err:
        raise SandboxError(str(err)) from None
    cwd, home = logical_cwd(environ), home_dir(environ)
    if agent == "opencode":
        path = plugin_path(project, cwd, environ, home)
        if show:
            return f"// {path}\n{plugin_text(exe)}"
        if project:
            inside_project(path, cwd)
        changed = install_plugin(exe, path)
    else:
        path = settings_path(agent, project, cwd, environ, home)
        if show:
            text = f"# {path}\n{json.dumps(snippet(agent, exe), indent=2)}\n"
            if agent == "codex":
                text += f"\n# or inline in config.toml:\n{codex_toml(exe)}"
            return text
        if project:
            inside_project(path, cwd)
        changed = install(agent, exe, path)
    if changed:
        return f"installed the sandbox hook in {path}\n"
    return f"already installed, unchanged: {path}\n"
