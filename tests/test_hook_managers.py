"""Host-run config in the workspace: hook managers, mise, package managers, editors.

Issue 13 finding 6: a protected git hook that hands over to a workspace file
(husky's ``.husky/pre-commit``, pre-commit's ``.pre-commit-config.yaml``,
lefthook's ``lefthook.yml``) is a hook the command can rewrite.  Every name
in ``[protect] names`` is read-only inside when it exists and quarantined by
the audit when the command creates it.  Real tools where they are installed
here (git with a husky layout, vim with 'exrc'); for the others the test
checks the protection itself, for every protected name, through the real
sandbox, as root and as an unprivileged user.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import tomllib

import pytest

from sandbox import audit, resources

pytestmark = pytest.mark.integration

GIT_ID = ["-c", "user.name=T", "-c", "user.email=t@example.invalid"]

# What the review and the issue list, by tool: each must stay protected.
REQUIRED = [
    ".husky", ".githooks", ".git-hooks", ".pre-commit-config.yaml", ".pre-commit-hooks.yaml",
    "lefthook.yml", ".lefthook.yml", "lefthook-local.yml", ".lefthook", ".lefthook-local",
    ".config/lefthook.yml", ".overcommit.yml", "hk.pkl",
    ".yarnrc.yml", ".yarn/releases", ".yarn/plugins", ".pnpmfile.cjs", ".npmrc",
    ".mise.toml", "mise.toml", ".mise.local.toml", "mise.local.toml", ".config/mise.toml",
    ".config/mise", "mise/config.toml", ".mise", ".tool-versions",
    ".vimrc", ".nvimrc", ".exrc", ".dir-locals-2.el", ".helix", ".devcontainer.json",
    "opencode.json", "opencode.jsonc", ".opencode", ".vscode", ".envrc",
]
# names that tools use as directories (the rest are files)
DIRS = {".claude", ".codex", ".gemini", ".cursor", ".windsurf", ".continue", ".opencode", ".roo",
        ".kilocode", ".kiro", ".amazonq", ".qwen", ".junie", ".vscode", ".idea", ".zed", ".fleet",
        ".theia", ".helix", ".devcontainer", ".direnv", ".mise", ".config/mise", "mise/conf.d",
        ".husky", ".githooks", ".git-hooks", ".lefthook", ".lefthook-local", ".yarn/releases",
        ".yarn/plugins", ".config/fish", ".config/git"}


def protected_names() -> list[str]:
    with open(resources.profiles_dir() / "default.toml", "rb") as fh:
        # .sandbox.toml is read as the project profile (text that is not TOML
        # stops the run); tests/test_project_profile.py checks it is read-only
        return [n for n in tomllib.load(fh)["protect"]["names"] if n != ".sandbox.toml"]


def host(senv, *argv: str, cwd=None, **kw) -> subprocess.CompletedProcess:
    """Run a host tool as the test's user, outside any sandbox."""
    return subprocess.run(senv.who.prefix() + list(argv), cwd=cwd or senv.ws,
                          env=senv.environ(TERM="dumb"), capture_output=True, text=True,
                          timeout=60, **kw)


def test_the_listed_host_run_config_is_protected():
    names = protected_names()
    assert [n for n in REQUIRED if n not in names] == []
    assert len(names) == len(set(names))


def test_every_protected_name_has_an_audit_class():
    """The audit's tables and the profile agree: a name's class is the switch that covers it."""
    classes = {cls for cls, _names in audit.NAMED}
    assert set(audit.CLASSES) >= classes | {audit.SHELL_RC}
    assert audit.class_of(".husky") == "hook_managers"
    assert audit.class_of("releases") == "package_config"  # .yarn/releases, by its last part
    assert audit.class_of(".tool-versions") == "envrc"
    assert audit.class_of(".helix") == "editor_config"
    assert audit.class_of("opencode.json") == "agent_config"
    # a path is classed by the longest entry it ends with, not by its last part
    assert audit.class_of("/w/mise/config.toml") == "envrc"
    assert audit.class_of("/w/.config/mise/config.toml") == "envrc"
    assert audit.class_of("/w/.jj/repo/config.toml") == "git_config"
    assert audit.class_of("/w/app/.yarn/releases") == "package_config"
    assert audit.class_of("/w/.bashrc") == "shell_rc"
    from sandbox.schema import SCHEMA

    assert set(SCHEMA["audit"]) == set(audit.CLASSES)


# -- every name, through the real sandbox ---------------------------------------------

def _layout(root, names, nested: bool) -> list[str]:
    """Create every name under ``root`` (and under root/pkg/sub for names without '/')."""
    made = []
    for name in names:
        places = [name] + ([f"pkg/sub/{name}"] if nested and "/" not in name else [])
        for rel in places:
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if name in DIRS:
                path.mkdir()
                (path / "kept").write_text("original\n")
            else:
                path.write_text("original\n")
            made.append(rel)
    return made


def _tamper_script(paths: list[str], dirs: set[str], renames: bool = True) -> str:
    """Try to change each path; print WROTE <path> for each change that worked."""
    lines = []
    for rel in paths:
        q = shlex.quote(rel)
        if rel in dirs:
            lines.append(f"echo evil >> {q}/kept 2>/dev/null && echo WROTE {q}")
            lines.append(f"echo evil > {q}/planted 2>/dev/null && echo WROTE {q}")
        else:
            lines.append(f"echo evil >> {q} 2>/dev/null && echo WROTE {q}")
        if renames:
            lines.append(f"mv {q} {q}.away 2>/dev/null && echo WROTE {q}")
            top = rel.split("/")[0]
            if top != rel and top != "pkg":  # nor the parent of a root-relative name
                lines.append(f"mv {shlex.quote(top)} {shlex.quote(top)}.away 2>/dev/null "
                             f"&& echo WROTE {q}")
    return "\n".join(lines) + "\ntrue\n"


def test_existing_host_run_config_is_read_only_inside(senv):
    names = protected_names()
    made = _layout(senv.ws, names, nested=True)
    dirs = {rel for rel in made if rel.rsplit("pkg/sub/", 1)[-1] in DIRS}
    script = senv.base / "tamper.sh"
    script.write_text(_tamper_script(made, dirs))
    # without the sandbox every one of them can be changed
    copy = senv.base / "copy"
    _layout(copy, names, nested=True)
    (senv.base / "write.sh").write_text(_tamper_script(made, dirs, renames=False))
    bare = senv.run(["sh", str(senv.base / "write.sh")], cwd=copy, sandboxed=False)
    assert len(set(bare.stdout.decode().split())) - 1 == len(made)
    r = senv.run(["sh", str(script)])
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == "", r.stdout.decode()[:2000]
    for rel in made:
        target = senv.ws / rel / "kept" if rel in dirs else senv.ws / rel
        assert target.read_text() == "original\n", rel
        assert not (senv.ws / rel / "planted").exists(), rel


def test_new_host_run_config_is_quarantined_after_the_run(senv):
    names = protected_names()
    report = senv.base / "report.json"
    plant = []
    for name in names:
        for rel in [name] + ([f"pkg/sub/{name}"] if "/" not in name else []):
            q = shlex.quote(rel)
            plant.append(f"mkdir -p \"$(dirname {q})\"")
            plant.append(f"mkdir {q} && echo evil > {q}/x" if name in DIRS else f"echo evil > {q}")
    script = senv.base / "plant.sh"
    script.write_text("set -e\n" + "\n".join(plant) + "\n")
    r = senv.run(["sh", str(script)], args=["--report", str(report)])
    assert r.returncode == 0, r.stderr
    left = [rel for name in names for rel in [name] + ([f"pkg/sub/{name}"] if "/" not in name else [])
            if (senv.ws / rel).exists() or (senv.ws / rel).is_symlink()]
    assert left == []
    kinds = {f["path"]: f["kind"] for f in json.loads(report.read_text())["audit"]}
    ws = senv.ws.resolve()
    assert kinds[str(ws / ".husky")] == "hook managers"
    assert kinds[str(ws / "pkg/sub/lefthook.yml")] == "hook managers"
    assert kinds[str(ws / ".yarn/releases")] == "package config"
    assert kinds[str(ws / ".tool-versions")] == "envrc"
    assert kinds[str(ws / ".config/mise")] == "envrc"
    assert kinds[str(ws / ".helix")] == "editor config"
    assert kinds[str(ws / "opencode.json")] == "agent config"
    assert len(kinds) == len(names) + sum("/" not in n for n in names)


def test_hook_managers_audit_class_can_be_turned_off_visibly(senv):
    profile = senv.base / "p.toml"
    profile.write_text('extends = "default"\n[audit]\nhook_managers = false\n')
    r = senv.sh("echo 'pre-commit: {}' > lefthook.yml", args=["--profile", str(profile)])
    assert r.returncode == 0, r.stderr
    assert (senv.ws / "lefthook.yml").exists()
    assert b"sandbox: weakened: p: audit.hook_managers: true -> false" in r.stderr


# -- real git with a husky layout ----------------------------------------------------

HUSKY_H = '#!/bin/sh\n# husky 9 "h": run .husky/<hook name>\nn=$(basename "$0")\ns="$(dirname "$(dirname "$0")")/$n"\n[ -f "$s" ] || exit 0\nexec sh -e "$s" "$@"\n'
HUSKY_SHIM = '#!/bin/sh\n. "$(dirname "$0")/h"\n'


def husky_repo(senv, repo, with_husky: bool = True) -> None:
    repo.mkdir(exist_ok=True)
    if with_husky:
        (repo / ".husky" / "_").mkdir(parents=True)
        (repo / ".husky" / "_" / "h").write_text(HUSKY_H)
        (repo / ".husky" / "_" / "pre-commit").write_text(HUSKY_SHIM)
        (repo / ".husky" / "_" / "h").chmod(0o755)
        (repo / ".husky" / "_" / "pre-commit").chmod(0o755)
        (repo / ".husky" / "pre-commit").write_text("echo checks passed\n")
    senv.finish()  # the repository belongs to the user who runs git on it
    assert host(senv, "git", "init", "-q", str(repo)).returncode == 0
    if with_husky:
        assert host(senv, "git", "-C", str(repo), "config", "core.hooksPath", ".husky/_").returncode == 0


def husky_commit_runs(senv, repo, marker) -> bool:
    done = host(senv, "git", "-C", str(repo), *GIT_ID, "commit", "-q", "--allow-empty", "-m", "x")
    assert done.returncode == 0, done.stderr
    return marker.exists()


def test_husky_hook_script_cannot_be_rewritten(senv):
    marker = senv.base / "HUSKY-RAN"
    attack = f"printf 'touch {marker}\\n' >> .husky/pre-commit"
    # without the sandbox: the protected hook (core.hooksPath .husky/_) runs it
    outside = senv.base / "outside"
    husky_repo(senv, outside)
    host(senv, "sh", "-c", attack, cwd=outside)
    assert husky_commit_runs(senv, outside, marker)
    marker.unlink()
    # inside: .husky is read-only, the host's next commit runs the user's own hook
    husky_repo(senv, senv.ws)
    r = senv.sh(attack)
    assert r.returncode != 0
    assert (senv.ws / ".husky" / "pre-commit").read_text() == "echo checks passed\n"
    assert not husky_commit_runs(senv, senv.ws, marker)


def test_new_husky_directory_is_quarantined(senv):
    """The command plants .husky/ for the host's next `npm install` (prepare: husky)."""
    marker = senv.base / "HUSKY-RAN"
    plant = (f"mkdir -p .husky/_ && printf '{HUSKY_H}' > .husky/_/h && "
             f"printf '{HUSKY_SHIM}' > .husky/_/pre-commit && chmod +x .husky/_/h .husky/_/pre-commit && "
             f"printf 'touch {marker}\\n' > .husky/pre-commit")
    outside = senv.base / "outside"
    husky_repo(senv, outside, with_husky=False)
    host(senv, "sh", "-c", plant, cwd=outside)
    host(senv, "git", "-C", str(outside), "config", "core.hooksPath", ".husky/_")  # what husky does
    assert husky_commit_runs(senv, outside, marker)
    marker.unlink()
    husky_repo(senv, senv.ws, with_husky=False)
    r = senv.sh(plant)
    assert r.returncode == 0, r.stderr
    assert b"sandbox: audit: hook managers: " in r.stderr
    assert not (senv.ws / ".husky").exists()
    host(senv, "git", "-C", str(senv.ws), "config", "core.hooksPath", ".husky/_")
    assert not husky_commit_runs(senv, senv.ws, marker)


# -- real vim with 'exrc' --------------------------------------------------------------

@pytest.mark.skipif(not (shutil.which("vim") and shutil.which("script")),
                    reason="needs vim and script(1) on the host")
@pytest.mark.parametrize("name", [".vimrc", ".exrc"])
def test_vim_exrc_file_planted_in_the_workspace_does_not_run_on_the_host(senv, name):
    (senv.home / ".vimrc").write_text("set exrc\n")  # the user reads project vimrc files
    marker = senv.base / "VIM-RAN"
    plant = f"echo \"call writefile(['x'], '{marker}')\" > {name}"

    def open_vim(where) -> bool:
        done = host(senv, "script", "-qc", "vim -c qa", "/dev/null", cwd=where,
                    stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        return marker.exists()

    outside = senv.base / "outside"
    outside.mkdir()
    senv.finish()
    host(senv, "sh", "-c", plant, cwd=outside)
    assert open_vim(outside)  # the attack works without the sandbox
    marker.unlink()
    r = senv.sh(plant)
    assert r.returncode == 0, r.stderr
    assert f"sandbox: audit: editor config: {senv.ws.resolve() / name}".encode() in r.stderr
    assert not open_vim(senv.ws)
