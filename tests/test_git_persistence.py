"""Git persistence through the real sandbox, judged by the host's real git.

Each test plants, inside the sandbox, a git layout that makes git run a
marker (``core.fsmonitor`` and a ``pre-commit`` hook), then asks the host's
own ``git status`` / ``git commit`` (throwaway HOME, no system config,
safe.directory=*) whether the marker runs.  Each attack is first shown to
work without the sandbox, so the test can fail.  Regression tests for the
red-team findings of issue 13 (1: pointer files read differently from git,
3: a reusable quarantine, 4: an audit that crashes, 5: a planted commondir
moving the protection) and the two audit mutation survivors.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

MKGIT = r'''
mkgit() {  # $1: a git dir whose config and pre-commit hook touch $M/FSMON and $M/HOOK
  mkdir -p "$1/objects" "$1/refs/heads" "$1/hooks"
  echo 'ref: refs/heads/main' > "$1/HEAD"
  printf '[core]\n\trepositoryformatversion = 0\n\tbare = false\n\tfsmonitor = "touch %s/FSMON; false"\n' "$M" > "$1/config"
  printf '#!/bin/sh\ntouch %s/HOOK\n' "$M" > "$1/hooks/pre-commit"
  chmod +x "$1/hooks/pre-commit"
}
mkcommon() {  # $1: a common dir (objects, refs) with the same config and hook
  mkgit "$1"; rm "$1/HEAD"
}
'''


def host_git(senv, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The host's real git, as the user who ran the sandbox, in a throwaway HOME."""
    home = senv.base / "githome"
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "GIT_CONFIG_NOSYSTEM": "1", "LANG": "C.UTF-8"}
    senv.finish()
    return subprocess.run(senv.who.prefix() + [
        "git", "-c", "safe.directory=*", "-c", "user.name=T", "-c", "user.email=t@e.invalid",
        *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def markers(senv) -> list[str]:
    return sorted(n for n in ("FSMON", "HOOK", "USERHOOK") if (senv.base / "m" / n).exists())


def clear_markers(senv) -> None:
    for n in ("FSMON", "HOOK", "USERHOOK"):
        (senv.base / "m" / n).unlink(missing_ok=True)


def host_runs_marker(senv, where: Path) -> list[str]:
    """What a host `git status` and `git commit` in ``where`` ran."""
    host_git(senv, where, "status")
    host_git(senv, where, "commit", "-q", "--allow-empty", "-m", "x")
    return markers(senv)


def plant(senv, script: str, *, sandboxed: bool = True, cwd: Path | None = None, args=()):
    (senv.base / "m").mkdir(exist_ok=True)
    os.chmod(senv.base / "m", 0o777)
    full = f"set -e; M={senv.base / 'm'}; {MKGIT}\n{script}"
    return senv.sh(full, sandboxed=sandboxed, cwd=cwd, args=list(args))


def init_repo(senv, path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(senv.base),
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e.invalid"}
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, env=env)
    subprocess.run(["git", "-C", str(path), "commit", "-q", "--allow-empty", "-m", "init"],
                   check=True, env=env)


def attack_works_without_sandbox(senv, script: str, where: str, *, repo: bool = False) -> None:
    """Run the plant on a copy outside the sandbox: the host's git must run a marker."""
    copy = senv.base / "outside"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(senv.ws, copy, symlinks=True)
    senv.finish()
    r = plant(senv, script, sandboxed=False, cwd=copy)
    assert r.returncode == 0, r.stderr
    assert host_runs_marker(senv, copy / where), "the variant is not an attack on this git"
    clear_markers(senv)
    shutil.rmtree(copy)


# (plant script run in the workspace, where the host runs git, needs a host repo first)
VARIANTS = {
    # finding 1: pointer files git reads differently from the old audit
    "commondir-symlink": (
        "mkcommon .git/evil; echo evil > .git/target; ln -s target .git/commondir", ".", True),
    "commondir-leading-space": (
        "mkcommon '.git/ evil'; printf ' evil\\n' > .git/commondir", ".", True),
    "commondir-crlf": ("mkcommon .git/evil; printf 'evil\\r\\n' > .git/commondir", ".", True),
    "dotgit-symlink-into-node_modules": (
        "mkgit node_modules/pkg/x; mkdir -p sub; ln -s ../node_modules/pkg/x sub/.git", "sub", False),
    "dotgit-symlink-into-venv": (
        "mkgit .venv/lib/r; mkdir -p sub; ln -s ../.venv/lib/r sub/.git", "sub", False),
    "dotgit-file-over-4k": (
        "mkgit evil; mkdir -p sub; { printf 'gitdir: ../evil'; head -c 5000 /dev/zero; } > sub/.git",
        "sub", False),
    "dotgit-file-crlf": ("mkgit evil; mkdir -p sub; printf 'gitdir: ../evil\\r\\n' > sub/.git",
                         "sub", False),
    "gitdir-nested-in-objects": (
        "mkgit .git/objects/ab/evil; mkdir -p sub; printf 'gitdir: ../.git/objects/ab/evil\\n' > sub/.git",
        "sub", True),
    "gitdir-in-tool-cache": (
        'C=${XDG_CACHE_HOME:-$PWD/../cache}; mkgit "$C/evil"; mkdir -p sub; '
        'printf "gitdir: %s\\n" "$C/evil" > sub/.git',
        "sub", False),
    "bare-layout-in-node_modules": (
        "mkgit node_modules/x; printf '\\tworktree = .\\n' >> node_modules/x/config",
        "node_modules/x", False),
    "commondir-into-node_modules": (
        "mkcommon node_modules/c; mkdir -p w/g; echo 'ref: refs/heads/main' > w/g/HEAD; "
        "echo ../../node_modules/c > w/g/commondir; printf 'gitdir: g\\n' > w/.git", "w", False),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_planted_git_layout_does_not_run_on_the_host(senv, name):
    script, where, repo = VARIANTS[name]
    if repo:
        init_repo(senv, senv.ws)
    attack_works_without_sandbox(senv, script, where, repo=repo)
    r = plant(senv, script)
    assert r.returncode == 0, r.stderr
    assert b"Traceback" not in r.stderr
    assert b"sandbox: audit: git" in r.stderr
    assert host_runs_marker(senv, senv.ws / where) == []
    assert senv.run(["true"]).returncode == 0  # and the next run is clean


def test_worktree_and_submodule_git_dirs_made_inside(senv):
    """git worktree add / submodule add inside a repo made in the run: their git dirs count."""
    script = (
        "export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@e GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@e; "
        "git init -q -b main lib; git -C lib commit -q --allow-empty -m l; "
        "git init -q -b main r; git -C r commit -q --allow-empty -m i; "
        "git -C r worktree add -q ../wt -b topic; "
        "git -C r -c protocol.file.allow=always submodule -q add ../lib lib; "
        "git -C r config extensions.worktreeConfig true; "
        "printf '[core]\\n\\tfsmonitor = \"touch %s/FSMON; false\"\\n' \"$M\" > r/.git/worktrees/wt/config.worktree; "
        "printf '#!/bin/sh\\ntouch %s/HOOK\\n' \"$M\" > r/.git/modules/lib/hooks/pre-commit; "
        "chmod +x r/.git/modules/lib/hooks/pre-commit; "
        "printf '[core]\\n\\tfsmonitor = \"touch %s/FSMON; false\"\\n' \"$M\" >> r/.git/modules/lib/config")
    attack = senv.base / "outside"
    attack.mkdir()
    senv.finish()
    r = plant(senv, script, sandboxed=False, cwd=attack)
    assert r.returncode == 0, r.stderr
    assert host_runs_marker(senv, attack / "wt") == ["FSMON"]
    clear_markers(senv)
    assert host_runs_marker(senv, attack / "r" / "lib") == ["FSMON", "HOOK"]
    clear_markers(senv)
    r = plant(senv, script)
    assert r.returncode == 0, r.stderr
    assert host_runs_marker(senv, senv.ws / "wt") == []
    assert host_runs_marker(senv, senv.ws / "r" / "lib") == []
    # and the repositories still work on the host
    assert host_git(senv, senv.ws / "wt", "log", "--format=%s", "-1").stdout == "x\n"
    assert host_git(senv, senv.ws / "r", "submodule", "status").returncode == 0


def test_new_repo_workflow_keeps_working_and_is_left_alone(senv):
    """git init, add, commit, branch, clone from a local path, worktree add: nothing to
    neutralise, nothing broken."""
    script = (
        "set -e; export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@e GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@e; "
        "git init -q -b main r; echo a > r/a; git -C r add a; git -C r commit -q -m a; "
        "git -C r branch topic; git clone -q r c; git -C r worktree add -q ../wt topic; "
        "git -C c commit -q --allow-empty -m c; git -C c fetch -q; git -C wt log --oneline | wc -l")
    r = senv.sh(script)
    assert r.returncode == 0, r.stderr
    assert b"sandbox: audit" not in r.stderr, r.stderr
    r = senv.sh("git -C c status --short && git -C wt status --short && git -C r log --oneline | wc -l")
    assert r.returncode == 0 and b"sandbox: audit" not in r.stderr, r.stderr
    assert host_git(senv, senv.ws / "c", "log", "--format=%s", "-1").stdout == "c\n"
    assert "origin" in host_git(senv, senv.ws / "c", "remote").stdout


def test_planted_commondir_does_not_move_protection_or_touch_the_users_hooks(senv):
    """Finding 5: run 1 plants .git/commondir; run 2 must still find .git/config read-only,
    and neither audit may take the user's own hook or filter.lfs.process."""
    init_repo(senv, senv.ws)
    hook = senv.ws / ".git" / "hooks" / "pre-commit"
    hook.write_text(f"#!/bin/sh\ntouch {senv.base / 'm'}/USERHOOK\n")
    hook.chmod(0o755)
    with open(senv.ws / ".git" / "config", "a") as fh:
        fh.write('[filter "lfs"]\n\tprocess = git-lfs filter-process\n\trequired = true\n')
    config_before = (senv.ws / ".git" / "config").read_text()
    r = plant(senv, "mkcommon evilc; echo ../evilc > .git/commondir")
    assert r.returncode == 0, r.stderr
    r = plant(senv, "printf '[core]\\n\\tfsmonitor = \"touch %s/FSMON\"\\n' \"$M\" >> .git/config")
    assert r.returncode != 0  # .git/config is still read-only
    assert (senv.ws / ".git" / "config").read_text() == config_before
    assert hook.exists() and os.access(hook, os.X_OK)
    assert host_runs_marker(senv, senv.ws) == ["USERHOOK"]  # the user's own hook, nothing else


def test_bare_repo_quarantined_is_not_a_git_dir_for_the_next_run(senv):
    """Finding 3: a planted bare repo under a protected name went live into the state dir;
    the next run pointed a .git file at it."""
    r = plant(senv, "mkgit .vscode")
    assert r.returncode == 0, r.stderr
    assert not (senv.ws / ".vscode").exists()
    state = senv.home / ".cache" / "sandbox"
    # whatever the audit line says, the next run points at it (and at everything there)
    r = plant(senv, f"ls {state} >&2 || true; mkdir sub; "
                    f"printf 'gitdir: %s\\n' \"$(find {state}/quarantine -maxdepth 4 -name .vscode | head -1)\" > sub/.git")
    assert host_runs_marker(senv, senv.ws / "sub") == []
    for path in state.rglob("*"):  # nothing in the state dir is a git dir or executable
        if path.is_dir() and not path.is_symlink():
            assert not (path / "HEAD").exists(), path
        elif path.is_file() and not path.is_symlink():
            assert not os.stat(path).st_mode & 0o111, path


def test_state_dir_is_invisible_inside_except_the_cache_dir(senv):
    state = senv.home / ".cache" / "sandbox"
    assert senv.run(["true"]).returncode == 0
    assert (state / "scan").is_dir() and (state / "empty").is_file()
    r = senv.sh(f"ls -A {state}; ls -A {state}/workspaces | wc -l; touch \"$XDG_CACHE_HOME/ok\"")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [b"workspaces", b"1"]


def test_deep_tree_under_a_protected_name_does_not_crash_the_audit(senv):
    """Finding 4: 1500 levels under .vscode gave RecursionError, exit 1, a live hook."""
    script = ("git init -q r; printf '#!/bin/sh\\ntouch %s/HOOK\\n' \"$M\" > r/.git/hooks/pre-commit; "
              "chmod +x r/.git/hooks/pre-commit; "
              "mkdir -p .vscode/$(printf 'a/%.0s' $(seq 1500)); touch .vscode/$(printf 'a/%.0s' $(seq 1500))x")
    r = plant(senv, script)
    assert b"Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (senv.ws / ".vscode").exists()
    assert host_runs_marker(senv, senv.ws / "r") == []


def test_an_item_that_cannot_be_neutralised_fails_closed_until_fixed(senv):
    """Per-item failures count: exit 125, and the next run audits again before anything."""
    state = senv.home / ".cache" / "sandbox"
    assert senv.run(["true"]).returncode == 0
    (state / "quarantine").write_text("not a directory\n")  # the quarantine cannot be made
    r = plant(senv, "git init -q r; printf '#!/bin/sh\\ntouch %s/HOOK\\n' \"$M\" > r/.git/hooks/pre-commit; "
                    "chmod +x r/.git/hooks/pre-commit")
    assert r.returncode == 125, r.stderr
    assert b"COULD NOT NEUTRALISE" in r.stderr and b"Traceback" not in r.stderr
    r = senv.run(["touch", "ran"])
    assert r.returncode == 125 and not (senv.ws / "ran").exists(), r.stderr
    (state / "quarantine").unlink()
    r = senv.run(["touch", "ran"])
    assert r.returncode == 0, r.stderr
    assert (senv.ws / "ran").exists()
    assert host_runs_marker(senv, senv.ws / "r") == []


def test_symlinked_config_is_quarantined(senv):
    """Mutation survivor: a git config replaced by a symlink must be taken away; git
    follows the link, so the target (here a file the next run may rewrite) is the config."""
    script = ("git init -q r; printf '[core]\\n\\tfsmonitor = \"touch %s/FSMON; false\"\\n' \"$M\" > notes; "
              "rm r/.git/config; ln -s ../../notes r/.git/config")
    attack = senv.base / "outside"
    attack.mkdir()
    senv.finish()
    assert plant(senv, script, sandboxed=False, cwd=attack).returncode == 0
    assert "FSMON" in host_runs_marker(senv, attack / "r")
    clear_markers(senv)
    r = plant(senv, script)
    assert r.returncode == 0, r.stderr
    assert not (senv.ws / "r" / ".git" / "config").is_symlink()
    assert host_runs_marker(senv, senv.ws / "r") == []


@pytest.mark.parametrize("char", ["\\014", "\\033", "\\013"])
def test_control_characters_force_the_config_to_be_replaced(senv, char):
    """Mutation survivor: a control character (git splits lines at LF only; other
    readers do not) makes the whole config suspect: it is replaced, not edited."""
    script = (f"git init -q r; printf '[user]\\n\\tname = a{char}b\\n' >> r/.git/config")
    r = plant(senv, script)
    assert r.returncode == 0, r.stderr
    text = (senv.ws / "r" / ".git" / "config").read_text()
    assert text == "[core]\n\trepositoryformatversion = 0\n"
    assert b"everything" in r.stderr


def test_hardlinked_config_is_replaced_not_written_through(senv):
    """The audit writes a new file and renames it: another name of the same inode
    (a host file, had the command been able to link one) keeps its bytes."""
    script = ("git init -q r; printf '[core]\\n\\tfsmonitor = x\\n' >> r/.git/config; "
              "ln r/.git/config other-name")
    r = plant(senv, script)
    assert r.returncode == 0, r.stderr
    assert "fsmonitor" in (senv.ws / "other-name").read_text()  # as the command left it
    assert "fsmonitor" not in (senv.ws / "r" / ".git" / "config").read_text()


def test_hook_manager_directory_is_protected_whole(senv):
    """core.hooksPath = .husky/_ runs .husky/pre-commit: .husky/ is the manager's."""
    init_repo(senv, senv.ws)
    subprocess.run(["git", "-C", str(senv.ws), "config", "core.hooksPath", ".husky/_"], check=True)
    (senv.ws / ".husky" / "_").mkdir(parents=True)
    (senv.ws / ".husky" / "_" / "pre-commit").write_text('#!/bin/sh\n. "$(dirname "$0")/../pre-commit"\n')
    (senv.ws / ".husky" / "_" / "pre-commit").chmod(0o755)
    (senv.ws / ".husky" / "pre-commit").write_text("#!/bin/sh\ntrue\n")
    r = plant(senv, "printf 'touch %s/HOOK\\n' \"$M\" >> .husky/pre-commit")
    assert r.returncode != 0
    assert "HOOK" not in (senv.ws / ".husky" / "pre-commit").read_text()
    assert host_runs_marker(senv, senv.ws) == []


def test_quarantine_list_and_restore(senv):
    from conftest import sandbox_exe

    r = plant(senv, "git init -q r; printf '#!/bin/sh\\necho mine\\n' > r/.git/hooks/pre-commit; "
                    "chmod +x r/.git/hooks/pre-commit")
    assert r.returncode == 0, r.stderr
    hook = senv.ws / "r" / ".git" / "hooks" / "pre-commit"
    assert not hook.exists()
    cli = senv.who.prefix() + [sandbox_exe(), "quarantine"]
    listed = subprocess.run(cli + ["list"], env=senv.environ(), capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    line = next(ln for ln in listed.stdout.splitlines() if str(hook) in ln)
    ident = line.split()[0]
    done = subprocess.run(cli + ["restore", ident], env=senv.environ(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert hook.read_text() == "#!/bin/sh\necho mine\n" and os.access(hook, os.X_OK)
    again = subprocess.run(cli + ["restore", ident], env=senv.environ(), capture_output=True, text=True)
    assert again.returncode == 125 and again.stderr.startswith("sandbox: ")
