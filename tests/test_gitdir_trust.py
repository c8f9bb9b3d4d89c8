"""A .git file written by an earlier run must not make host directories writable.

discover.py makes a repository's git directory writable even when it lies
outside the workspace (worktrees, a workspace inside a repository). A .git
file inside the workspace is attacker-controlled input, so a target outside
the writable roots is only trusted when it points back.
"""

from __future__ import annotations

import subprocess

import pytest

pytestmark = pytest.mark.integration


def test_planted_gitdir_pointer_does_not_open_a_host_directory(senv):
    victim = senv.base / "victim"
    victim.mkdir()
    (victim / "HEAD").write_text("ref: refs/heads/main\n")  # looks like a git dir
    script = f"echo planted > {victim}/owned"
    # the attack works without the sandbox
    assert senv.sh(script, sandboxed=False).returncode == 0
    (victim / "owned").unlink()
    # run 1 plants the pointer (the workspace is writable: this succeeds)
    r = senv.sh(f"mkdir sub && printf 'gitdir: {victim}\\n' > sub/.git")
    assert r.returncode == 0, r.stderr
    # run 2 must not bind the victim directory writable
    r = senv.sh(script)
    assert r.returncode != 0
    assert not (victim / "owned").exists()
    assert b"ignored" in r.stderr and b"does not point back" in r.stderr


def test_real_worktree_outside_the_workspace_still_works(senv):
    main = senv.base / "main"
    subprocess.run(["git", "init", "-q", "-b", "main", str(main)], check=True)
    subprocess.run(["git", "-C", str(main), "-c", "user.name=T", "-c", "user.email=t@e.invalid",
                    "commit", "-q", "--allow-empty", "-m", "init"], check=True)
    wt = senv.ws / "wt"
    subprocess.run(["git", "-C", str(main), "worktree", "add", "-q", str(wt), "-b", "topic"],
                   check=True)
    r = senv.run(["git", "-c", "user.name=T", "-c", "user.email=t@e.invalid", "commit", "-q",
                  "--allow-empty", "-m", "inside"], cwd=wt)
    assert r.returncode == 0, r.stderr
    log = subprocess.run(["git", "-c", "safe.directory=*", "-C", str(main), "log", "--format=%s", "-1",
                          "topic"],
                         capture_output=True, text=True).stdout
    assert log == "inside\n"


def test_workspace_posing_as_a_worktree_gitdir_cannot_open_its_grandparent(senv):
    """Red-team finding: with the workspace at .../worktrees/feat, files written inside
    it claimed that the grandparent is the common git dir."""
    home_like = senv.base / "grand"
    ws = home_like / "worktrees" / "feat"
    ws.mkdir(parents=True)
    victim = home_like / "victim.txt"
    victim.write_text("precious\n")
    plant = "printf 'gitdir: .\\n' > .git; printf '%s/.git\\n' \"$PWD\" > gitdir; printf '../..\\n' > commondir"
    r = senv.sh(plant, cwd=ws)
    assert r.returncode == 0, r.stderr
    # the write works without the sandbox, and must fail inside on the next run
    attack = f"echo owned > {victim}"
    r = senv.sh(attack, cwd=ws)
    assert r.returncode != 0
    assert victim.read_text() == "precious\n"
    assert senv.sh(attack, cwd=ws, sandboxed=False).returncode == 0


def test_planted_symlink_under_git_modules_opens_nothing(senv):
    """Second red-team finding: a link in .git/modules made its target a bind-mounted,
    writable mount point on the next run."""
    subprocess.run(["git", "init", "-q", str(senv.ws)], check=True)
    victim = senv.base / "victim"
    (victim / "proj").mkdir(parents=True)
    (victim / "proj" / "HEAD").write_text("ref: refs/heads/main\n")
    r = senv.sh(f"mkdir -p .git/modules && ln -s {victim} .git/modules/x")
    assert r.returncode == 0, r.stderr
    r = senv.sh(f"touch {victim}/PWNED")
    assert r.returncode != 0
    assert not (victim / "PWNED").exists()


def test_planted_symlink_for_a_two_part_protected_name_opens_nothing(senv):
    """Second red-team finding: `.config` -> a host directory holding `git` made that
    directory writable (.config/git is a protected name)."""
    victim = senv.base / "victim"
    (victim / "git").mkdir(parents=True)
    r = senv.sh(f"ln -s {victim} .config")
    assert r.returncode == 0, r.stderr
    r = senv.sh(f"touch {victim}/PWNED")
    assert r.returncode != 0
    assert not (victim / "PWNED").exists()
