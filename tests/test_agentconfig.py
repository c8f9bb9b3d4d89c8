"""``sandbox install-hook``: merged into the agent's settings, never clobbering, and the
command it writes really blocks when the hook cannot run."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from conftest import sandbox_exe
from sandbox import agentconfig

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent / "data" / "agents"
USER_FILES = {"claude-code": ".claude/settings.json", "codex": ".codex/hooks.json",
              "gemini": ".gemini/settings.json"}
PROJECT_FILES = {"claude-code": ".claude/settings.local.json", "codex": ".codex/hooks.json",
                 "gemini": ".gemini/settings.json"}
EVENTS = {"claude-code": "PreToolUse", "codex": "PreToolUse", "gemini": "BeforeTool"}


def install(senv, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    senv.finish()
    return subprocess.run(senv.who.prefix() + [sandbox_exe(), "install-hook", *args],
                          capture_output=True, env=senv.environ(**(env or {})), cwd=senv.ws,
                          timeout=60)


def our_groups(data: dict, agent: str) -> list:
    return [g for g in data["hooks"][EVENTS[agent]]
            if any(f" hook {agent} " in h.get("command", "") for h in g["hooks"])]


@pytest.mark.parametrize("agent", list(USER_FILES))
def test_user_install_creates_then_leaves_alone(senv, agent):
    path = senv.home / USER_FILES[agent]
    r = install(senv, agent)
    assert r.returncode == 0, r.stderr.decode()
    assert f"installed the sandbox hook in {path}" in r.stdout.decode()
    data = json.loads(path.read_text())
    assert data == agentconfig.snippet(agent, sandbox_exe())
    before = path.read_bytes()
    again = install(senv, agent, "--user")
    assert again.returncode == 0 and b"already installed" in again.stdout
    assert path.read_bytes() == before


@pytest.mark.parametrize("agent", list(USER_FILES))
def test_merge_keeps_every_other_key_and_hook(senv, agent):
    path = senv.home / USER_FILES[agent]
    path.parent.mkdir(parents=True)
    theirs = {"model": "x", "permissions": {"allow": ["Bash(npm test)"]},
              "hooks": {EVENTS[agent]: [{"matcher": "Write", "hooks": [
                  {"type": "command", "command": "my-linter"}]}],
                        "Stop": [{"hooks": [{"type": "command", "command": "notify"}]}]}}
    path.write_text(json.dumps(theirs))
    path.chmod(0o640)
    r = install(senv, agent)
    assert r.returncode == 0, r.stderr.decode()
    data = json.loads(path.read_text())
    assert data["model"] == "x" and data["permissions"] == theirs["permissions"]
    assert data["hooks"]["Stop"] == theirs["hooks"]["Stop"]
    assert data["hooks"][EVENTS[agent]][0] == theirs["hooks"][EVENTS[agent]][0]
    assert len(our_groups(data, agent)) == 1
    assert path.stat().st_mode & 0o777 == 0o640


def test_a_hook_for_another_sandbox_path_is_replaced(senv):
    path = senv.home / USER_FILES["claude-code"]
    path.parent.mkdir(parents=True)
    old = agentconfig.snippet("claude-code", "/old/place/sandbox")
    old["hooks"]["PreToolUse"].insert(0, {"matcher": "Edit", "hooks": [
        {"type": "command", "command": "keep-me"}]})
    path.write_text(json.dumps(old))
    assert install(senv, "claude-code").returncode == 0
    data = json.loads(path.read_text())
    ours = our_groups(data, "claude-code")
    assert len(ours) == 1 and sandbox_exe() in ours[0]["hooks"][0]["command"]
    assert data["hooks"]["PreToolUse"][0]["hooks"][0]["command"] == "keep-me"


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"hooks": []}',
                                  '{"hooks": {"PreToolUse": {}}}',
                                  '// a comment\n{"hooks": {}}'])
def test_malformed_settings_are_refused_and_left_alone(senv, text):
    path = senv.home / USER_FILES["claude-code"]
    path.parent.mkdir(parents=True)
    path.write_text(text)
    r = install(senv, "claude-code")
    assert r.returncode == 125
    err = r.stderr.decode()
    assert err.startswith("sandbox: error:") and str(path) in err
    assert len(err.strip().splitlines()) == 1
    assert path.read_text() == text


def test_print_changes_nothing(senv):
    r = install(senv, "gemini", "--print")
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    assert out.startswith(f"# {senv.home / USER_FILES['gemini']}\n")
    assert json.loads(out.split("\n", 1)[1]) == agentconfig.snippet("gemini", sandbox_exe())
    assert not (senv.home / ".gemini").exists()


def test_codex_print_also_shows_the_config_toml_form(senv):
    import tomllib

    r = install(senv, "codex", "--print")
    assert r.returncode == 0, r.stderr.decode()
    json_part, toml_part = r.stdout.decode().split("\n# or inline in config.toml:\n")
    assert json.loads(json_part.split("\n", 1)[1]) == agentconfig.snippet("codex", sandbox_exe())
    assert tomllib.loads(toml_part) == agentconfig.snippet("codex", sandbox_exe())


@pytest.mark.parametrize("agent", list(PROJECT_FILES))
def test_project_install_goes_into_the_current_directory(senv, agent):
    r = install(senv, agent, "--project")
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads((senv.ws / PROJECT_FILES[agent]).read_text()) == \
        agentconfig.snippet(agent, sandbox_exe())


def test_codex_home_and_claude_config_dir_are_honoured(senv):
    codex_home, claude_dir = senv.base / "codexhome", senv.base / "claudecfg"
    env = {"CODEX_HOME": str(codex_home), "CLAUDE_CONFIG_DIR": str(claude_dir)}
    assert install(senv, "codex", env=env).returncode == 0
    assert install(senv, "claude-code", env=env).returncode == 0
    assert (codex_home / "hooks.json").is_file() and (claude_dir / "settings.json").is_file()


def test_symlinked_settings_file_stays_a_symlink(senv):
    real = senv.base / "dotfiles" / "settings.json"
    real.parent.mkdir()
    real.write_text('{"theme": "dark"}')
    link = senv.home / ".claude" / "settings.json"
    link.parent.mkdir()
    link.symlink_to(real)
    assert install(senv, "claude-code").returncode == 0
    assert link.is_symlink()
    assert json.loads(real.read_text())["theme"] == "dark"
    assert our_groups(json.loads(real.read_text()), "claude-code")


# -- OpenCode: the plugin file, with this sandbox's path filled in ------------------

def test_opencode_plugin_is_written_filled_in_and_left_alone(senv):
    path = senv.home / ".config" / "opencode" / "plugins" / "sandbox.js"
    r = install(senv, "opencode")
    assert r.returncode == 0, r.stderr.decode()
    text = path.read_text()
    assert f"const SANDBOX_EXE = {json.dumps(sandbox_exe())}" in text
    assert agentconfig.PLUGIN_PLACEHOLDER not in text
    before = path.read_bytes()
    again = install(senv, "opencode")
    assert again.returncode == 0 and b"already installed" in again.stdout
    assert path.read_bytes() == before


def test_opencode_foreign_plugin_of_that_name_is_refused(senv):
    path = senv.ws / ".opencode" / "plugins" / "sandbox.js"
    path.parent.mkdir(parents=True)
    path.write_text("export const Mine = async () => ({})\n")
    r = install(senv, "opencode", "--project")
    assert r.returncode == 125 and str(path) in r.stderr.decode()
    assert path.read_text() == "export const Mine = async () => ({})\n"


def test_opencode_print_shows_the_plugin(senv):
    r = install(senv, "opencode", "--print")
    assert r.returncode == 0
    assert r.stdout.decode().split("\n", 1)[1] == agentconfig.plugin_text(sandbox_exe())
    assert not (senv.home / ".config").exists()


@pytest.mark.parametrize("args", [["cursor"], ["codex", "--project", "--user"], []])
def test_bad_usage(senv, args):
    r = install(senv, *args)
    assert r.returncode == 125 and r.stderr.startswith(b"sandbox: usage error:")


# -- the written command, run the way the agents run it ---------------------------

@pytest.mark.parametrize("agent,payload", [("claude-code", "claude-code/pretooluse-bash.json"),
                                           ("codex", "codex/pretooluse-bash.json"),
                                           ("gemini", "gemini/beforetool-shell.json")])
def test_installed_command_answers_the_event(senv, agent, payload):
    assert install(senv, agent).returncode == 0
    data = json.loads((senv.home / USER_FILES[agent]).read_text())
    command = our_groups(data, agent)[0]["hooks"][0]["command"]
    event = json.loads((DATA / payload).read_text())
    event["cwd"] = str(senv.ws)
    senv.finish()
    r = subprocess.run(senv.who.prefix() + ["/bin/sh", "-c", command],
                       input=json.dumps(event).encode(), capture_output=True,
                       env=senv.environ(), cwd=senv.ws, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    spec = json.loads(r.stdout)["hookSpecificOutput"]
    updated = spec["tool_input"] if agent == "gemini" else spec["updatedInput"]
    assert shlex.split(updated["command"])[:2] == [sandbox_exe(), "sh"]


@pytest.mark.parametrize("exe", ["/nonexistent/sandbox", "/bin/false"])
def test_installed_command_blocks_when_the_hook_cannot_run(exe):
    """sandbox uninstalled (127) or crashing (1): the agent must see 2 and a reason,
    or it would run the command unwrapped."""
    command = agentconfig.hook_command("codex", exe)
    r = subprocess.run(["/bin/sh", "-c", command], input=b"{}", capture_output=True, timeout=30)
    assert r.returncode == 2
    assert b"the command was not run" in r.stderr


def test_installed_command_keeps_the_hooks_own_refusal(tmp_path):
    command = agentconfig.hook_command("codex", sandbox_exe())
    r = subprocess.run(["/bin/sh", "-c", command], input=b"not json", capture_output=True,
                       timeout=30)
    assert r.returncode == 2
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sandbox hook: refused")


# -- the docs show what the code writes ---------------------------------------------

@pytest.mark.parametrize("agent", list(USER_FILES))
def test_agents_md_shows_each_snippet(agent):
    doc = (Path(__file__).parent.parent / "docs" / "agents.md").read_text()
    text = json.dumps(agentconfig.snippet(agent, "/home/you/.local/bin/sandbox"), indent=2)
    assert f"```json\n{text}\n```" in doc


def test_agents_md_shows_the_codex_toml():
    doc = (Path(__file__).parent.parent / "docs" / "agents.md").read_text()
    assert f"```toml\n{agentconfig.codex_toml('/home/you/.local/bin/sandbox')}```" in doc


@pytest.mark.parametrize("argv", [["sh"], ["hook"], ["install-hook"]])
def test_new_commands_have_help(argv):
    out = subprocess.run([sandbox_exe(), *argv, "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout
    assert len(out.stdout.split("Usage:", 1)[1].strip().splitlines()) >= 3
