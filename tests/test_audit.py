"""The persistence audit: what a run leaves behind cannot run on the host later.

Each attack is shown to work without the sandbox (the planted hook really
runs when the host commits) and to be neutralised after a sandboxed run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import sandbox_exe
from sandbox import audit

pytestmark = pytest.mark.integration

PLANT_HOOK = (
    "git init -q newrepo && "
    "printf '#!/bin/sh\\necho ran > \"$(git rev-parse --git-dir)/../HOOK-RAN\"\\n' "
    "> newrepo/.git/hooks/pre-commit && chmod +x newrepo/.git/hooks/pre-commit"
)
GIT_ID = ["-c", "user.name=T", "-c", "user.email=t@example.invalid"]


def host_git(senv, repo, *args):
    return subprocess.run(senv.who.prefix() + ["git", "-C", str(repo), *GIT_ID, *args],
                          capture_output=True, text=True, env=senv.environ(), timeout=60)


def test_hook_planted_by_git_init_does_not_run_on_host(senv):
    # without the sandbox the attack works: the host's commit runs the hook
    outside = senv.base / "outside"
    outside.mkdir()
    senv.finish()
    subprocess.run(senv.who.prefix() + ["sh", "-c", PLANT_HOOK], cwd=outside, check=True,
                   env=senv.environ())
    assert host_git(senv, outside / "newrepo", "commit", "-q", "--allow-empty", "-m", "x").returncode == 0
    assert (outside / "newrepo" / "HOOK-RAN").exists()
    # inside the sandbox the hook is planted, then quarantined by the audit
    r = senv.sh(PLANT_HOOK)
    assert r.returncode == 0, r.stderr
    assert b"sandbox: audit: git hook:" in r.stderr
    assert host_git(senv, senv.ws / "newrepo", "commit", "-q", "--allow-empty", "-m", "x").returncode == 0
    assert not (senv.ws / "newrepo" / "HOOK-RAN").exists()
    assert [n for n in os.listdir(senv.ws / "newrepo" / ".git" / "hooks") if not n.endswith(".sample")] == []


def test_dangerous_git_config_keys_are_stripped_and_repo_still_works(senv):
    script = ("git init -q r && git -C r config core.fsmonitor ./evil.sh && "
              "git -C r config alias.st '!sh -c evil' && git -C r config user.name Keep")
    r = senv.sh(script)
    assert r.returncode == 0, r.stderr
    config = (senv.ws / "r" / ".git" / "config").read_text()
    assert "fsmonitor" not in config and "evil" not in config
    assert "name = Keep" in config
    assert host_git(senv, senv.ws / "r", "status", "--short").returncode == 0
    assert b"removed core.fsmonitor, alias.st" in r.stderr


def test_new_editor_and_agent_config_are_quarantined_existing_ones_untouched(senv):
    (senv.ws / ".vscode").mkdir()
    (senv.ws / ".vscode" / "settings.json").write_text("{}\n")
    r = senv.sh("mkdir -p pkg/.vscode .claude && echo '{}' > pkg/.vscode/tasks.json && "
                "echo '{}' > .claude/settings.json && echo 'export X=1' > .envrc")
    assert r.returncode == 0, r.stderr
    assert not (senv.ws / "pkg" / ".vscode").exists()
    assert not (senv.ws / ".claude").exists()
    assert not (senv.ws / ".envrc").exists()
    assert (senv.ws / ".vscode" / "settings.json").read_text() == "{}\n"


def test_hook_under_a_hookspath_that_did_not_exist(senv):
    subprocess.run(["git", "init", "-q", str(senv.ws)], check=True)
    subprocess.run(["git", "-C", str(senv.ws), "config", "core.hooksPath", "githooks"], check=True)
    r = senv.sh("mkdir githooks && printf '#!/bin/sh\\ntouch HOOK-RAN\\n' > githooks/pre-commit && "
                "chmod +x githooks/pre-commit")
    assert r.returncode == 0, r.stderr
    assert not (senv.ws / "githooks" / "pre-commit").exists()
    assert host_git(senv, senv.ws, "commit", "-q", "--allow-empty", "-m", "x").returncode == 0
    assert not (senv.ws / "HOOK-RAN").exists()


def test_report_lists_findings(senv):
    report = senv.base / "r.json"
    r = senv.sh("mkdir .idea", args=["--report", str(report)])
    assert r.returncode == 0
    doc = json.loads(report.read_text())
    assert [f["kind"] for f in doc["audit"]] == ["editor config"]
    assert doc["audit"][0]["path"] == str(senv.ws / ".idea")


def test_profile_can_turn_a_class_off_visibly(senv):
    profile = senv.base / "p.toml"
    profile.write_text('extends = "default"\n[audit]\neditor_config = false\n')
    r = senv.sh("mkdir .idea", args=["--profile", str(profile)])
    assert r.returncode == 0
    assert (senv.ws / ".idea").is_dir()
    shown = subprocess.run(senv.who.prefix() + [sandbox_exe(), "explain", "--profile", str(profile)],
                           cwd=senv.ws, env=senv.environ(), capture_output=True, text=True)
    assert "audit.editor_config: true -> false" in shown.stdout


def test_killed_wrapper_is_audited_by_the_next_run(senv):
    senv.finish()
    proc = subprocess.Popen(
        senv.who.prefix() + [sandbox_exe(), "run", "--", "sh", "-c",
                             "mkdir .codex && echo READY && sleep 60"],
        cwd=senv.ws, env=senv.environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not (senv.ws / ".codex").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (senv.ws / ".codex").exists()
        os.kill(proc.pid, signal.SIGKILL)  # no audit from this run
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (senv.ws / ".codex").exists()
    r = senv.run(["true"])
    assert r.returncode == 0
    assert b"left by an earlier run" in r.stderr
    assert not (senv.ws / ".codex").exists()


def test_restoring_a_directory_mtime_does_not_hide_new_things(senv):
    """Red-team finding: utimensat() put the workspace's mtime back so the audit's
    scan cache (and the next plan) reused the old listing; ctime gives it away."""
    old = time.time() - 3600
    os.utime(senv.ws, (old, old))
    time.sleep(2.1)  # out of the racy window, so the listing is cached
    assert senv.run(["true"]).returncode == 0
    script = ("import os, subprocess; st = os.stat('.'); "
              "subprocess.run(['git', 'init', '-q', 'r']); "
              "subprocess.run(['git', '-C', 'r', 'config', 'core.fsmonitor', 'echo FSMON']); "
              "os.makedirs('.vscode'); "
              "os.utime('.', ns=(st.st_atime_ns, st.st_mtime_ns))")
    r = senv.run(["/usr/bin/python3", "-c", script])
    assert r.returncode == 0, r.stderr
    assert b"sandbox: audit:" in r.stderr
    assert not (senv.ws / ".vscode").exists()
    assert "fsmonitor" not in (senv.ws / "r" / ".git" / "config").read_text()


def test_symlinked_hooks_dir_never_moves_host_files(senv):
    """Red-team finding: a hooks symlink made the audit move files out of a host directory."""
    victim = senv.base / "victim"
    victim.mkdir()
    (victim / "authorized_keys").write_text("ssh-ed25519 AAAA keep-me\n")
    r = senv.sh(f"mkdir -p e/.git && cd e/.git && echo 'ref: refs/heads/main' > HEAD && "
                f"mkdir objects refs && ln -s {victim} hooks")
    assert r.returncode == 0, r.stderr
    assert (victim / "authorized_keys").read_text() == "ssh-ed25519 AAAA keep-me\n"
    assert not (senv.ws / "e" / ".git" / "hooks").exists()  # the link itself was taken away


def test_bare_repository_layout_is_audited(senv):
    """Red-team finding: git treats a directory with HEAD, objects/ and refs/ as a repository."""
    (senv.ws / "sub").mkdir()
    plant = ("cd sub && echo 'ref: refs/heads/master' > HEAD && mkdir -p objects refs && "
             "printf '[core]\\n\\trepositoryformatversion = 0\\n\\tbare = false\\n\\tworktree = .\\n"
             "\\tfsmonitor = echo FSMON-BARE >&2\\n' > config")
    outside = senv.base / "outside"
    outside.mkdir()
    (outside / "sub").mkdir()
    senv.finish()
    subprocess.run(senv.who.prefix() + ["sh", "-c", plant], cwd=outside, check=True, env=senv.environ())
    ran = subprocess.run(senv.who.prefix() + ["git", "status"], cwd=outside / "sub",
                         capture_output=True, text=True, env=senv.environ())
    assert "FSMON-BARE" in ran.stderr  # the attack works without the sandbox
    r = senv.sh(plant)
    assert r.returncode == 0, r.stderr
    ran = subprocess.run(senv.who.prefix() + ["git", "status"], cwd=senv.ws / "sub",
                         capture_output=True, text=True, env=senv.environ())
    assert "FSMON-BARE" not in ran.stderr


@pytest.mark.parametrize("trick", ["bom", "padding"])
def test_config_parser_tricks_do_not_hide_keys(senv, trick):
    """Red-team finding: a byte-order mark or 1 MiB of padding hid core.fsmonitor."""
    if trick == "bom":
        write = ("printf '\\357\\273\\277[core]\\n\\trepositoryformatversion = 0\\n"
                 "\\tfsmonitor = echo FSMON >&2\\n' > r/.git/config")
    else:
        write = ("/usr/bin/python3 -c \"open('r/.git/config','a').write('#' * 1100000 + chr(10))\" && "
                 "printf '[core]\\n\\tfsmonitor = echo FSMON >&2\\n' >> r/.git/config")
    script = f"git init -q r && {write}"
    outside = senv.base / "outside"
    outside.mkdir()
    senv.finish()
    subprocess.run(senv.who.prefix() + ["sh", "-c", script], cwd=outside, check=True, env=senv.environ())
    ran = subprocess.run(senv.who.prefix() + ["git", "status"], cwd=outside / "r",
                         capture_output=True, text=True, env=senv.environ())
    assert "FSMON" in ran.stderr  # the trick is a working attack without the sandbox
    r = senv.sh(script)
    assert r.returncode == 0, r.stderr
    ran = subprocess.run(senv.who.prefix() + ["git", "status"], cwd=senv.ws / "r",
                         capture_output=True, text=True, env=senv.environ())
    assert "FSMON" not in ran.stderr


def test_read_only_leftovers_do_not_crash_the_audit(senv):
    """Red-team finding: chmod 555 on a hooks dir made the audit crash, every time."""
    r = senv.sh("git init -q r1 && printf '#!/bin/sh\\necho evil\\n' > r1/.git/hooks/pre-commit && "
                "chmod +x r1/.git/hooks/pre-commit && chmod 555 r1/.git/hooks && "
                "mkdir -p d/.vscode && chmod 555 d")
    assert b"Traceback" not in r.stderr
    assert not (senv.ws / "r1" / ".git" / "hooks" / "pre-commit").exists()
    assert not (senv.ws / "d" / ".vscode").exists()
    assert senv.run(["true"]).returncode == 0  # and the next run is fine


def _host_git_stderr(senv, cwd, *args):
    return subprocess.run(senv.who.prefix() + ["git", "-c", "safe.directory=*", *GIT_ID, *args],
                          cwd=cwd, capture_output=True, text=True, env=senv.environ(),
                          timeout=60).stderr


def test_git_dir_in_the_tool_cache_is_audited(senv):
    """Second red-team finding: git init --separate-git-dir into $XDG_CACHE_HOME."""
    r = senv.sh("git init -q --separate-git-dir=\"$XDG_CACHE_HOME/r\" . && "
                "git config core.fsmonitor 'echo FSMON >&2; false'")
    assert r.returncode == 0, r.stderr
    assert "FSMON" not in _host_git_stderr(senv, senv.ws, "status")


def test_form_feed_in_a_comment_does_not_hide_a_key(senv):
    """Second red-team finding: git splits lines at \\n only; Python's splitlines does not."""
    script = ("import subprocess; subprocess.run(['git', 'init', '-q']); "
              "open('.git/config', 'a').write('# note\\x0c[alias]\\n\\tfsmonitor = \"echo FSMON >&2; false\"\\n')")
    r = senv.run(["/usr/bin/python3", "-c", script])
    assert r.returncode == 0, r.stderr
    assert "FSMON" not in _host_git_stderr(senv, senv.ws, "status")


def test_unlistable_hooks_directory_is_opened_and_cleaned(senv):
    """Second red-team finding: chmod 311 hid a hook that git (which runs hooks by path) ran."""
    r = senv.sh("git init -q && printf '#!/bin/sh\\ntouch HOOK-RAN\\n' > .git/hooks/pre-commit && "
                "chmod +x .git/hooks/pre-commit && chmod 311 .git/hooks")
    assert r.returncode == 0, r.stderr
    _host_git_stderr(senv, senv.ws, "commit", "-q", "--allow-empty", "-m", "x")
    assert not (senv.ws / "HOOK-RAN").exists()


def test_fifo_named_dot_git_does_not_hang_the_audit(senv):
    """Second red-team finding: a FIFO .git blocked the audit (and every later run)."""
    r = senv.run(["sh", "-c", "mkdir a && mkfifo a/.git"], timeout=60)
    assert r.returncode == 0, r.stderr
    assert senv.run(["true"], timeout=60).returncode == 0


def test_split_bare_layout_with_commondir_is_audited(senv):
    """Second red-team finding: HEAD + commondir is a repository to git too."""
    r = senv.sh("mkdir -p store/objects store/refs/heads && echo 'ref: refs/heads/main' > HEAD && "
                "echo store > commondir && "
                "printf '[core]\\n\\tfsmonitor = \"echo FSMON >&2; false\"\\n' > store/config")
    assert r.returncode == 0, r.stderr
    assert "fsmonitor" not in (senv.ws / "store" / "config").read_text()


def test_ssh_signing_key_command_is_stripped(senv):
    r = senv.sh("git init -q && git config gpg.ssh.defaultKeyCommand 'touch PWNED' && "
                "git config submodule.x.update '!touch PWNED'")
    assert r.returncode == 0, r.stderr
    config = (senv.ws / ".git" / "config").read_text()
    assert "defaultKeyCommand" not in config and "PWNED" not in config


# -- what a protected file runs is protected too ----------------------------------------

def _repo(senv, *config: tuple[str, str]) -> None:
    subprocess.run(["git", "init", "-q", str(senv.ws)], check=True)
    for key, value in config:
        subprocess.run(["git", "-C", str(senv.ws), "config", key, value], check=True)


FSM = "#!/bin/sh\necho ran >> \"$(dirname \"$0\")/../FSM-RAN\"\nexit 1\n"


def test_a_program_the_repo_config_runs_is_read_only(senv):
    _repo(senv, ("core.fsmonitor", "tools/fsmonitor.sh"))
    (senv.ws / "tools").mkdir()
    (senv.ws / "tools" / "fsmonitor.sh").write_text("#!/bin/sh\nexit 1\n")
    (senv.ws / "tools" / "fsmonitor.sh").chmod(0o755)
    r = senv.sh(f"printf '{FSM}' > tools/fsmonitor.sh || echo REFUSED")
    assert b"REFUSED" in r.stdout, r.stderr
    assert host_git(senv, senv.ws, "status", "--short").returncode == 0
    assert not (senv.ws / "FSM-RAN").exists()


def test_a_new_dotgit_pointer_cannot_supply_the_program_a_relative_path_names(senv):
    """A .git in a subdirectory pointing at the user's own git dir makes that
    subdirectory a work tree: the relative core.fsmonitor then runs from it."""
    _repo(senv, ("core.fsmonitor", "tools/fsmonitor.sh"))
    plant = (f"mkdir -p sub/tools && ln -s ../.git sub/.git && printf '{FSM}' > "
             "sub/tools/fsmonitor.sh && chmod +x sub/tools/fsmonitor.sh")
    outside = senv.base / "outside"
    subprocess.run(["cp", "-a", str(senv.ws), str(outside)], check=True)
    senv.finish()
    subprocess.run(senv.who.prefix() + ["sh", "-c", plant], cwd=outside, check=True)
    host_git(senv, outside / "sub", "status", "--short")
    assert (outside / "sub" / "FSM-RAN").exists()  # the attack works without the sandbox
    r = senv.sh(plant)
    assert r.returncode == 0, r.stderr
    assert b"sandbox: audit: git program: " + str(senv.ws / "sub/tools/fsmonitor.sh").encode() in r.stderr
    host_git(senv, senv.ws / "sub", "status", "--short")
    assert not (senv.ws / "sub" / "FSM-RAN").exists()


def test_the_script_a_symlinked_hook_runs_is_read_only(senv):
    _repo(senv)
    (senv.ws / "scripts").mkdir()
    (senv.ws / "scripts" / "pre-commit").write_text("#!/bin/sh\ntrue\n")
    (senv.ws / "scripts" / "pre-commit").chmod(0o755)
    (senv.ws / ".git" / "hooks" / "pre-commit").symlink_to("../../scripts/pre-commit")
    r = senv.sh("echo 'touch HOOK-RAN' >> scripts/pre-commit || echo REFUSED")
    assert b"REFUSED" in r.stdout, r.stderr
    assert host_git(senv, senv.ws, "commit", "-q", "--allow-empty", "-m", "x").returncode == 0
    assert not (senv.ws / "HOOK-RAN").exists()


def test_a_hook_rewritten_through_a_hard_link_is_quarantined_and_named_so(senv):
    _repo(senv)
    (senv.ws / "scripts").mkdir()
    script = senv.ws / "scripts" / "pre-commit"
    script.write_text("#!/bin/sh\ntrue\n")
    script.chmod(0o755)
    os.link(script, senv.ws / ".git" / "hooks" / "pre-commit")
    assert b"audit" not in senv.sh("chmod 755 scripts/pre-commit; ln scripts/pre-commit x").stderr
    r = senv.sh("echo 'touch HOOK-RAN' >> scripts/pre-commit")
    assert r.returncode == 0, r.stderr
    assert b"the user's own hook, whose content the command changed through another hard link" \
        in r.stderr
    assert host_git(senv, senv.ws, "commit", "-q", "--allow-empty", "-m", "x").returncode == 0
    assert not (senv.ws / "HOOK-RAN").exists()


def _works_without_sandbox(senv, plant: str, where: str) -> None:
    """Plant in a copy of the workspace without the sandbox: the host's git runs it."""
    outside = senv.base / "outside"
    subprocess.run(["cp", "-a", str(senv.ws), str(outside)], check=True)
    senv.finish()
    subprocess.run(senv.who.prefix() + ["sh", "-c", plant], cwd=outside, check=True)
    host_git(senv, outside / where, "status", "--short")
    assert list(outside.rglob("FSM-RAN")), "the attack does not work without the sandbox"


@pytest.mark.parametrize("plant, where", [
    # a .git pointer in a skip_dir re-roots the user's repository there
    ("mkdir -p node_modules/x/tools && ln -s ../../.git node_modules/x/.git && "
     "printf '{fsm}' > node_modules/x/tools/fsmonitor.sh && "
     "chmod +x node_modules/x/tools/fsmonitor.sh", "node_modules/x"),
    # the program reached through a symlink made in the run
    ("mkdir -p sub evil && ln -s ../.git sub/.git && ln -s ../evil sub/tools && "
     "printf '{fsm}' > evil/fsmonitor.sh && chmod +x evil/fsmonitor.sh", "sub"),
    # the program behind a directory the command made unlistable
    ("mkdir -p sub/tools && ln -s ../.git sub/.git && printf '{fsm}' > sub/tools/fsmonitor.sh && "
     "chmod +x sub/tools/fsmonitor.sh && chmod 111 sub/tools", "sub"),
])
def test_a_relative_program_is_neutralised_under_every_new_work_tree(senv, plant, where):
    _repo(senv, ("core.fsmonitor", "tools/fsmonitor.sh"))
    plant = plant.format(fsm=FSM)
    _works_without_sandbox(senv, plant, where)
    r = senv.sh(plant)
    assert r.returncode == 0, r.stderr
    assert b"sandbox: audit: git program: " in r.stderr
    host_git(senv, senv.ws / where, "status", "--short")
    assert not list(senv.ws.rglob("FSM-RAN"))


def test_a_git_dir_behind_an_unlistable_directory_in_a_skip_dir_is_found(senv):
    plant = ("mkdir -p node_modules/locked/evil/objects node_modules/locked/evil/refs && "
             "cd node_modules/locked/evil && echo 'ref: refs/heads/main' > HEAD && "
             "printf '[core]\\n\\tbare = false\\n\\tworktree = .\\n\\tfsmonitor = "
             "\"echo ran >> FSM-RAN; false\"\\n' > config && cd ../../.. && "
             "chmod 0 node_modules/locked")
    r = senv.sh(plant)
    assert r.returncode == 0, r.stderr
    assert b"removed core.fsmonitor" in r.stderr


def test_a_git_dir_planted_in_an_unprotected_directory_is_still_audited(senv):
    """--unprotect .vscode lets the command write editor config, not plant a
    repository whose config git runs (the red team's class 6)."""
    plant = ("mkdir -p .vscode/evil/objects .vscode/evil/refs .vscode/evil/hooks && "
             "echo 'ref: refs/heads/main' > .vscode/evil/HEAD && "
             "printf '[core]\\n\\tfsmonitor = echo pwned\\n' > .vscode/evil/config && "
             "printf '#!/bin/sh\\necho pwned\\n' > .vscode/evil/hooks/pre-commit && "
             "chmod +x .vscode/evil/hooks/pre-commit && echo '{}' > .vscode/settings.json")
    r = senv.sh(plant, args=["--unprotect", ".vscode"])
    assert r.returncode == 0, r.stderr
    assert b"removed core.fsmonitor" in r.stderr
    assert not (senv.ws / ".vscode/evil/hooks/pre-commit").exists()
    assert (senv.ws / ".vscode/settings.json").exists()  # what was unprotected stays


def test_unprotecting_a_hooks_directory_still_lets_the_command_install_hooks(senv):
    _repo(senv)
    r = senv.sh("printf '#!/bin/sh\\ntrue\\n' > .git/hooks/pre-commit && "
                "chmod +x .git/hooks/pre-commit", args=["--unprotect", ".git/hooks"])
    assert r.returncode == 0, r.stderr
    assert (senv.ws / ".git/hooks/pre-commit").exists()
    assert b"audit" not in r.stderr


@pytest.mark.parametrize("pointer", ["file", "symlink"])
def test_a_new_dotgit_pointing_at_another_of_the_users_repositories(senv, pointer):
    """The work tree of the user's *other* repository (outside the workspace,
    its config never read by discovery) moved into the workspace: its
    relative core.fsmonitor and hooksPath then run the command's files."""
    other = senv.base / "other"
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    for key, value in (("core.fsmonitor", "tools/fsmonitor.sh"), ("core.hooksPath", "ci/hooks")):
        subprocess.run(["git", "-C", str(other), "config", key, value], check=True)
    link = (f"printf 'gitdir: {other}/.git\\n' > sub/.git" if pointer == "file"
            else f"ln -s {other}/.git sub/.git")
    plant = (f"mkdir -p sub/tools sub/ci/hooks && {link} && printf '{FSM}' > sub/tools/fsmonitor.sh"
             " && chmod +x sub/tools/fsmonitor.sh && printf '#!/bin/sh\\ntouch HOOK-RAN\\n' > "
             "sub/ci/hooks/pre-commit && chmod +x sub/ci/hooks/pre-commit")
    _works_without_sandbox(senv, plant, "sub")
    r = senv.sh(plant)
    assert r.returncode == 0, r.stderr
    assert b"sandbox: audit: git program: " in r.stderr
    host_git(senv, senv.ws / "sub", "status", "--short")
    host_git(senv, senv.ws / "sub", "commit", "-q", "--allow-empty", "-m", "x")
    assert not list(senv.ws.rglob("FSM-RAN")) and not list(senv.ws.rglob("HOOK-RAN"))
