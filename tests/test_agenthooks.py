"""``sandbox hook AGENT``: recorded agent events replayed through the installed CLI.

Each shell-tool event comes back rewritten with every field kept; the
rewritten command, run with bash in the event's cwd as the agent would,
runs sandboxed (a secret reads empty, a host loopback server cannot be
reached: both checked to work bare first); heredocs and quotes survive byte
for byte (compared with the same command run bare); other tools pass;
anything malformed exits 2, never 1.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import sandbox_exe
from sandbox import agenthooks

DATA = Path(__file__).parent / "data" / "agents"

# agent -> (shell tool payloads, environment variable naming the project root)
SHELL_EVENTS = {
    "claude-code": (["pretooluse-bash.json", "pretooluse-bash-heredoc.json",
                     "pretooluse-bash-background.json"], "CLAUDE_PROJECT_DIR"),
    "codex": (["pretooluse-bash.json", "pretooluse-bash-heredoc.json"], None),
    "gemini": (["beforetool-shell.json", "beforetool-shell-heredoc.json"], "GEMINI_PROJECT_DIR"),
    "opencode": (["bash.json"], None),
}
PASS_EVENTS = [("claude-code", "pretooluse-edit.json"), ("codex", "pretooluse-apply-patch.json"),
               ("gemini", "beforetool-write-file.json"), ("opencode", "read.json")]
HEREDOC_EVENTS = [("claude-code", "pretooluse-bash-heredoc.json"),
                  ("codex", "pretooluse-bash-heredoc.json"),
                  ("gemini", "beforetool-shell-heredoc.json"), ("opencode", "bash.json")]


def load(agent: str, name: str, cwd: Path) -> dict:
    event = json.loads((DATA / agent / name).read_text())
    for key in ("cwd", "directory", "worktree"):
        if key in event:
            event[key] = str(cwd)
    return event


def tool_input(agent: str, event: dict) -> dict:
    return event["args"] if agent == "opencode" else event["tool_input"]


def answer_input(agent: str, answer: dict) -> dict:
    if agent == "opencode":
        return answer["args"]
    spec = answer["hookSpecificOutput"]
    return spec["tool_input"] if agent == "gemini" else spec["updatedInput"]


def run_hook(senv, agent: str, event, *, env: dict | None = None, args=(), raw: bytes | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    senv.finish()
    data = raw if raw is not None else json.dumps(event).encode()
    return subprocess.run(senv.who.prefix() + [sandbox_exe(), "hook", agent, *args], input=data,
                          capture_output=True, env=senv.environ(**(env or {})),
                          cwd=cwd or senv.ws, timeout=60)


def bash(senv, command: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``command`` the way the agents do: one string, ``bash -c``."""
    senv.finish()
    return subprocess.run(senv.who.prefix() + ["/bin/bash", "-c", command], cwd=cwd,
                          capture_output=True, env=senv.environ(**(env or {})), timeout=120)


def rewritten(senv, agent: str, event: dict, env: dict | None = None) -> tuple[dict, dict]:
    r = run_hook(senv, agent, event, env=env)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stderr == b""
    answer = json.loads(r.stdout)
    return answer, answer_input(agent, answer)


@pytest.fixture
def listener():
    """A TCP server on the host's loopback; counts the connections it gets."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    hits: list[int] = []
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            hits.append(1)
            conn.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield srv.getsockname()[1], hits
    stop.set()
    thread.join(2)
    srv.close()


def connected(hits: list, timeout: float = 3.0) -> bool:
    """Whether the listener got a connection (its thread may count it a moment later)."""
    deadline = time.monotonic() + timeout
    while not hits and time.monotonic() < deadline:
        time.sleep(0.02)
    return bool(hits)


def plant_secrets(senv) -> tuple[str, str]:
    env_secret, key_secret = f"env-{os.urandom(6).hex()}", f"key-{os.urandom(6).hex()}"
    (senv.ws / ".env").write_text(f"API_TOKEN={env_secret}\n")
    (senv.home / ".ssh").mkdir(exist_ok=True)
    (senv.home / ".ssh" / "id_ed25519").write_text(f"{key_secret}\n")
    return env_secret, key_secret


def probe(port: int) -> str:
    return ('cat .env; cat "$HOME/.ssh/id_ed25519"; pwd; '
            f'if (echo hi > /dev/tcp/127.0.0.1/{port}) 2>/dev/null; '
            'then echo NET-OPEN; else echo NET-CLOSED; fi')


# -- the acceptance: replayed shell events run sandboxed ----------------------------

CASES = [(agent, name) for agent, (names, _) in SHELL_EVENTS.items() for name in names]


@pytest.mark.integration
@pytest.mark.parametrize("agent,name", CASES, ids=[f"{a}:{n}" for a, n in CASES])
def test_shell_event_is_rewritten_with_every_field_kept(senv, agent, name):
    event = load(agent, name, senv.ws)
    tool_input(agent, event)["x_unknown_field"] = {"nested": [1, "two"]}  # fields we do not know
    original = dict(tool_input(agent, event))
    answer, updated = rewritten(senv, agent, event)
    assert set(updated) == set(original)
    for key, value in original.items():
        if key != "command":
            assert updated[key] == value, key
    words = shlex.split(updated["command"])
    assert words == [sandbox_exe(), "sh", "--workspace", str(senv.ws), "--", original["command"]]
    if agent == "claude-code":
        spec = answer["hookSpecificOutput"]
        assert spec["hookEventName"] == "PreToolUse" and spec["permissionDecision"] == "allow"
    elif agent == "codex":
        assert answer["hookSpecificOutput"] == {"hookEventName": "PreToolUse",
                                                "permissionDecision": "allow",
                                                "updatedInput": updated}
    elif agent == "gemini":
        assert answer["hookSpecificOutput"]["hookEventName"] == "BeforeTool"


@pytest.mark.integration
@pytest.mark.parametrize("agent", list(SHELL_EVENTS))
def test_rewritten_command_runs_sandboxed(senv, agent, listener):
    port, hits = listener
    env_secret, key_secret = plant_secrets(senv)
    names, project_var = SHELL_EVENTS[agent]
    sub = senv.ws / "sub"
    sub.mkdir()
    event = load(agent, names[0], sub)  # the agent is in a subdirectory of the project
    if agent == "opencode":
        event["worktree"] = str(senv.ws)
    tool_input(agent, event)["command"] = probe(port)
    env = {project_var: str(senv.ws)} if project_var else {}

    bare = bash(senv, probe(port), senv.ws)  # the attack works without the sandbox
    assert env_secret in bare.stdout.decode() and key_secret in bare.stdout.decode()
    assert b"NET-OPEN" in bare.stdout and connected(hits)

    _, updated = rewritten(senv, agent, event, env)
    hits.clear()
    inside = bash(senv, updated["command"], sub)
    text = inside.stdout.decode()
    assert inside.returncode == 0, inside.stderr.decode()
    assert env_secret not in text and key_secret not in text
    assert "NET-CLOSED" in text and not connected(hits, 0.3)
    assert str(sub) in text  # it ran where the agent was
    workspace = senv.ws if agent in ("claude-code", "gemini", "opencode") else sub
    assert f"--workspace {workspace} " in updated["command"]


@pytest.mark.integration
@pytest.mark.parametrize("agent,name", HEREDOC_EVENTS, ids=[a for a, _ in HEREDOC_EVENTS])
def test_heredoc_and_quotes_survive_byte_for_byte(senv, agent, name):
    event = load(agent, name, senv.ws)
    command = tool_input(agent, event)["command"]
    bare_dir = senv.base / "bare"
    bare_dir.mkdir()
    bare = bash(senv, command, bare_dir)
    assert bare.returncode == 0, bare.stderr.decode()
    _, updated = rewritten(senv, agent, event)
    inside = bash(senv, updated["command"], senv.ws)
    assert inside.returncode == 0, inside.stderr.decode()
    for out in ("heredoc.out", "args.out"):
        assert (senv.ws / out).read_bytes() == (bare_dir / out).read_bytes()
    assert b"$HOME and `date`" in (senv.ws / "heredoc.out").read_bytes()
    assert (senv.ws / "args.out").read_bytes() == b"a  b|c'd|e\tf|"


@pytest.mark.integration
def test_claude_code_eval_form_runs_sandboxed(senv, listener):
    """Claude Code runs the (rewritten) command as ``eval 'CMD' < /dev/null``
    after sourcing its shell snapshot: the same, through that extra parse."""
    port, hits = listener
    env_secret, _ = plant_secrets(senv)
    event = load("claude-code", "pretooluse-bash.json", senv.ws)
    event["tool_input"]["command"] = probe(port)
    _, updated = rewritten(senv, "claude-code", event, {"CLAUDE_PROJECT_DIR": str(senv.ws)})
    outer = f"source /nonexistent 2>/dev/null || true && eval {shlex.quote(updated['command'])} " \
            "< /dev/null && pwd -P >| /dev/null"
    inside = bash(senv, outer, senv.ws)
    assert inside.returncode == 0, inside.stderr.decode()
    assert env_secret not in inside.stdout.decode() and b"NET-CLOSED" in inside.stdout
    assert not connected(hits, 0.3)


@pytest.mark.integration
@pytest.mark.parametrize("agent,name", PASS_EVENTS, ids=[a for a, _ in PASS_EVENTS])
def test_other_tools_pass_through(senv, agent, name):
    r = run_hook(senv, agent, load(agent, name, senv.ws))
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")


@pytest.mark.integration
def test_already_wrapped_is_not_wrapped_twice(senv):
    event = load("claude-code", "pretooluse-bash.json", senv.ws)
    _, first = rewritten(senv, "claude-code", event)
    event["tool_input"] = dict(first)
    _, second = rewritten(senv, "claude-code", event)
    assert second["command"] == first["command"]
    inside = bash(senv, second["command"].replace("npm test -- --watch=false", "echo once"),
                  senv.ws)
    assert inside.stdout == b"once\n", inside.stderr.decode()


@pytest.mark.integration
@pytest.mark.parametrize("command", [
    "sandbox sh -- 'cat .env'",                                    # a bare name: any PATH
    "{exe} sh --workspace / -- 'cat .env'",                        # another workspace
    "{exe} sh --workspace {ws} -- 'cat .env'; cat .env",           # more after our form
    "{exe} sh --workspace {ws} --allow-write / -- 'cat .env'",     # extra options
    "{exe} run --workspace {ws} -- cat .env",
])
def test_look_alike_commands_are_wrapped(senv, command):
    secret, _ = plant_secrets(senv)
    command = command.format(exe=sandbox_exe(), ws=senv.ws)
    event = load("claude-code", "pretooluse-bash.json", senv.ws)
    event["tool_input"]["command"] = command
    _, updated = rewritten(senv, "claude-code", event)
    assert shlex.split(updated["command"])[-1] == command  # wrapped whole
    inside = bash(senv, updated["command"], senv.ws)
    assert secret not in inside.stdout.decode() + inside.stderr.decode()


# -- fail closed: exit 2 and one line, never 1 ----------------------------------------

MALFORMED = [
    ("claude-code", b"not json"),
    ("claude-code", b"[1, 2]"),
    ("claude-code", b"\xff\xfe"),
    ("claude-code", b""),
    ("claude-code", b'{"hook_event_name": "PreToolUse", "tool_name": "Bash", "cwd": "/x"}'),
    ("claude-code", b'{"hook_event_name": "PreToolUse", "tool_name": "Bash", "cwd": "/x", '
                    b'"tool_input": {"command": ["ls"]}}'),
    ("claude-code", b'{"hook_event_name": "PreToolUse", "tool_name": "Bash", "cwd": "rel", '
                    b'"tool_input": {"command": "ls"}}'),
    ("claude-code", b'{"hook_event_name": "PreToolUse", "tool_name": "Bash", "cwd": "/x", '
                    b'"tool_input": "ls"}'),
    ("claude-code", b'{"hook_event_name": "PreToolUse", "tool_name": "Bash", "cwd": "/x", '
                    b'"tool_input": {"command": "ls\\u0000"}}'),
    ("claude-code", b'{"tool_name": "Bash", "cwd": "/x", "tool_input": {"command": "ls"}}'),
    ("codex", b'{"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {}, '
              b'"cwd": "/x"}'),
    ("gemini", b'{"hook_event_name": "PreToolUse", "tool_name": "run_shell_command", '
               b'"cwd": "/x", "tool_input": {"command": "ls"}}'),
    ("opencode", b'{"tool": "bash", "args": {"command": "ls"}}'),
]


@pytest.mark.integration
@pytest.mark.parametrize("agent,raw", MALFORMED, ids=[f"{a}:{r[:30]!r}" for a, r in MALFORMED])
def test_malformed_events_exit_2_with_one_line(senv, agent, raw):
    r = run_hook(senv, agent, None, raw=raw)
    assert r.returncode == 2
    assert r.stdout == b""
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sandbox hook: ")
    assert "Traceback" not in r.stderr.decode()


@pytest.mark.integration
@pytest.mark.parametrize("agent,name", [("claude-code", "pretooluse-powershell.json"),
                                        ("claude-code", "posttooluse-bash.json")])
def test_unwrappable_events_are_refused(senv, agent, name):
    r = run_hook(senv, agent, load(agent, name, senv.ws))
    assert r.returncode == 2 and r.stdout == b"", r.stderr
    assert len(r.stderr.decode().strip().splitlines()) == 1


@pytest.mark.integration
@pytest.mark.parametrize("args", [[], ["cursor"], ["codex", "--ask"], ["claude-code", "--bogus"],
                                  ["claude-code", "-p"], ["claude-code", "-p=x"]])
def test_bad_hook_usage_exits_2(senv, args):
    senv.finish()
    r = subprocess.run(senv.who.prefix() + [sandbox_exe(), "hook", *args], input=b"{}",
                       capture_output=True, env=senv.environ(), cwd=senv.ws, timeout=60)
    assert r.returncode == 2 and r.stdout == b""
    assert r.stderr.decode().startswith("sandbox hook: ")


@pytest.mark.integration
def test_plan_mode_always_asks(senv):
    event = load("claude-code", "pretooluse-bash.json", senv.ws)
    event["permission_mode"] = "plan"
    answer, updated = rewritten(senv, "claude-code", event)
    assert answer["hookSpecificOutput"]["permissionDecision"] == "ask"
    assert shlex.split(updated["command"])[1] == "sh"


@pytest.mark.integration
def test_profile_and_ask_options(senv):
    event = load("claude-code", "pretooluse-bash.json", senv.ws)
    r = run_hook(senv, "claude-code", event, args=["--profile", "readonly", "--ask"])
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    assert answer["hookSpecificOutput"]["permissionDecision"] == "ask"
    words = shlex.split(answer["hookSpecificOutput"]["updatedInput"]["command"])
    assert words[:7] == [sandbox_exe(), "sh", "--workspace", str(senv.ws), "--profile", "readonly",
                         "--"]
    probe_cmd = shlex.join(words[:-1] + ["touch made-here"])
    inside = bash(senv, probe_cmd, senv.ws)
    assert inside.returncode != 0 and not (senv.ws / "made-here").exists()  # readonly applied


def test_internal_error_exits_2(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(agenthooks, "sandbox_exe", broken)
    event = json.loads((DATA / "codex" / "pretooluse-bash.json").read_text())
    out, err = io.StringIO(), io.StringIO()
    status = agenthooks.main(["codex"], stdin=io.BytesIO(json.dumps(event).encode()),
                             stdout=out, stderr=err, environ={})
    assert status == 2 and out.getvalue() == ""
    assert err.getvalue().startswith("sandbox hook: internal error") and "boom" in err.getvalue()


def test_missing_executable_is_a_refusal(tmp_path):
    with pytest.raises(agenthooks.Refusal):
        agenthooks.sandbox_exe(argv0=str(tmp_path / "sandbox"),
                               executable=str(tmp_path / "bin" / "python"))


# -- quoting ---------------------------------------------------------------------------

TEXT = st.text(st.characters(blacklist_characters="\0"), max_size=40)


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_quote_is_one_shell_word(word):
    assert shlex.split(agenthooks.quote(word)) == [word]
    assert agenthooks.quote(word) == shlex.quote(word)
    assert agenthooks.unquote_exact(agenthooks.quote(word)) == word


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from("ab'\" \\$;&|\n"), max_size=20))
def test_unquote_accepts_only_what_quote_writes(text):
    word = agenthooks.unquote_exact(text)
    assert word is None or agenthooks.quote(word) == text


@settings(max_examples=200, deadline=None)
@given(TEXT)
def test_wrap_is_idempotent_and_splits_back(command):
    once = agenthooks.wrap(command, "/opt/x y/sandbox", "/w s", None)
    assert agenthooks.wrap(once, "/opt/x y/sandbox", "/w s", None) == once
    assert shlex.split(once) == ["/opt/x y/sandbox", "sh", "--workspace", "/w s", "--", command]


def test_project_root_only_when_cwd_is_inside(tmp_path):
    (tmp_path / "p" / "sub").mkdir(parents=True)
    (tmp_path / "q").mkdir()
    p = str(tmp_path / "p")
    assert agenthooks.project_root(f"{p}/sub", p) == p
    assert agenthooks.project_root(str(tmp_path / "q"), p) == str(tmp_path / "q")
    assert agenthooks.project_root(f"{p}/sub", "relative") == f"{p}/sub"
    assert agenthooks.project_root(f"{p}/sub", None) == f"{p}/sub"


def test_cwd_is_normalised_as_sandbox_reads_it(tmp_path):
    opts = agenthooks.parse_args(["codex"])
    event = {"hook_event_name": "PreToolUse", "tool_name": "Bash", "cwd": f"{tmp_path}/a/../b/",
             "tool_input": {"command": "ls"}}
    answer = agenthooks.codex(event, {}, opts)
    words = shlex.split(answer["hookSpecificOutput"]["updatedInput"]["command"])
    assert words[2:4] == ["--workspace", f"{tmp_path}/b"]


def test_hook_path_never_imports_typer():
    import sys

    code = ("import io, json, sys; sys.argv = ['sandbox', 'hook', 'claude-code']\n"
            "sys.stdin = io.TextIOWrapper(io.BytesIO(b'{\"hook_event_name\": \"PreToolUse\", "
            "\"tool_name\": \"Edit\"}'))\n"
            "from sandbox.__main__ import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print('typer' in sys.modules, 'click' in sys.modules, 'shlex' in sys.modules, code)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.stdout.split() == ["False", "False", "False", "0"], out.stderr


# -- OpenCode: the shipped plugin, run by node ----------------------------------------

def _plugin_source() -> Path:
    from sandbox import resources

    return resources.data_dir("integrations") / "opencode" / "sandbox.js"


DRIVER = """
import { SandboxPlugin } from "./sandbox.mjs"
const event = JSON.parse(process.argv[2])
const hooks = await SandboxPlugin({ directory: event.directory, worktree: event.worktree })
const output = { args: event.args }
try {
  await hooks["tool.execute.before"]({ tool: event.tool, sessionID: "s", callID: "c" }, output)
  process.stdout.write(JSON.stringify(output.args))
} catch (err) {
  process.stderr.write(String(err.message))
  process.exit(3)
}
"""


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_opencode_plugin_rewrites_and_runs_sandboxed(senv, listener):
    port, hits = listener
    secret, _ = plant_secrets(senv)
    source = _plugin_source()
    assert "sandbox_exe" not in str(source) and source.is_file(), source  # shipped in the wheel
    plugdir = senv.base / "plugin"
    plugdir.mkdir()
    shutil.copy(source, plugdir / "sandbox.mjs")
    (plugdir / "driver.mjs").write_text(DRIVER)
    event = load("opencode", "bash.json", senv.ws)
    event["args"]["command"] = probe(port)
    senv.finish()

    def node(env: dict, ev: dict) -> subprocess.CompletedProcess:
        return subprocess.run(senv.who.prefix() + ["node", str(plugdir / "driver.mjs"),
                                                   json.dumps(ev)],
                              capture_output=True, env=senv.environ(**env), cwd=senv.ws,
                              timeout=60)

    r = node({"SANDBOX_EXE": sandbox_exe()}, event)
    assert r.returncode == 0, r.stderr.decode()
    args = json.loads(r.stdout)
    assert {k: v for k, v in args.items() if k != "command"} == \
        {k: v for k, v in event["args"].items() if k != "command"}
    inside = bash(senv, args["command"], senv.ws)
    assert secret not in inside.stdout.decode() and b"NET-CLOSED" in inside.stdout, inside
    assert not connected(hits, 0.3)

    unset = node({}, event)  # no sandbox named: the call is stopped, not run bare
    assert unset.returncode == 3 and b"SANDBOX_EXE" in unset.stderr
    refused = node({"SANDBOX_EXE": sandbox_exe()}, {**event, "directory": "relative"})
    assert refused.returncode == 3 and b"sandbox hook: refused" in refused.stderr
    other = node({"SANDBOX_EXE": "/nonexistent/sandbox"}, {**event, "tool": "read"})
    assert other.returncode == 0  # other tools never start sandbox

    # as `sandbox install-hook opencode` writes it: the path filled in, no variable needed
    from sandbox import agentconfig

    (plugdir / "sandbox.mjs").write_text(agentconfig.plugin_text(sandbox_exe()))
    filled = node({}, event)
    assert filled.returncode == 0, filled.stderr.decode()
    assert json.loads(filled.stdout)["command"] == args["command"]


# -- CLAUDE_CODE_SHELL_PREFIX ----------------------------------------------------------

def prefix_exe() -> str:
    return str(Path(sandbox_exe()).parent / "sandbox-shell-prefix")


@pytest.mark.integration
def test_shell_prefix_runs_claude_codes_command_string_sandboxed(senv, listener):
    """The shape Claude Code spawns: ``bash -c "'PREFIX' 'FULL COMMAND'"``, the
    full command being its snapshot sourcing, ``eval`` of the model's command
    and its cwd bookkeeping, quoted as one word."""
    port, hits = listener
    secret, key = plant_secrets(senv)
    full = (f"source {shlex.quote(str(senv.home / 'snapshot.sh'))} 2>/dev/null || true && "
            "{ shopt -u extglob || setopt NO_EXTENDED_GLOB; } >/dev/null 2>&1 || true && "
            f"eval {shlex.quote(probe(port))} < /dev/null && pwd -P >| /tmp/claude-1a2b-cwd")
    inside = bash(senv, f"{shlex.quote(prefix_exe())} {shlex.quote(full)}", senv.ws)
    assert inside.returncode == 0, inside.stderr.decode()
    text = inside.stdout.decode()
    assert secret not in text and key not in text and "NET-CLOSED" in text
    assert not connected(hits, 0.3)
    assert str(senv.ws) in text


@pytest.mark.integration
def test_shell_prefix_keeps_an_mcp_servers_argv(senv):
    """stdio MCP servers start as ``PREFIX command arg...``: the words stay words."""
    inside = bash(senv, f"{shlex.quote(prefix_exe())} /usr/bin/printf '%s|' 'a  b' \"c'd\"",
                  senv.ws)
    assert inside.stdout == b"a  b|c'd|", inside.stderr.decode()


@pytest.mark.integration
def test_shell_prefix_without_arguments_is_a_usage_error(senv):
    senv.finish()
    r = subprocess.run(senv.who.prefix() + [prefix_exe()], capture_output=True,
                       env=senv.environ(), cwd=senv.ws, timeout=60)
    assert r.returncode == 125 and r.stderr.startswith(b"sandbox: usage error:")
