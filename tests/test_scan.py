"""sandbox.scan: what the walk finds, and the per-directory cache."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from sandbox import scan

RULES = scan.Rules(protected_names=(".vscode", ".envrc", ".bashrc", ".config/fish"),
                   skip_dirs=("node_modules", ".venv"),
                   secret_names=(".env", ".env.*", "*.pem"),
                   secret_exceptions=("*.example", "*.sample"), secrets_everywhere=True)



# backdated mtimes (utime) leave ctime new: see conftest._trust_backdated_stamps
TRUST_BACKDATED_STAMPS = True

def touch(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def found(result: scan.Result, root: Path) -> list[tuple[str, str, bool]]:
    return [(os.path.relpath(p, root), kind, is_dir) for p, kind, is_dir in result.findings]


def age(root: Path, seconds: int = 3600) -> None:
    """Give every directory under root an old mtime, so the cache may trust it."""
    old = time.time() - seconds
    for dirpath, _dirs, _files in os.walk(root):
        os.utime(dirpath, (old, old))


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "ws"
    (root / ".git/hooks").mkdir(parents=True)
    touch(root / "sub/wt/.git", "gitdir: /elsewhere\n")
    (root / ".vscode").mkdir()
    touch(root / ".vscode/.env")  # inside a protected dir: not descended
    touch(root / "a/b/.envrc")
    touch(root / "a/.bashrc")
    touch(root / ".env")
    touch(root / "a/.env.local")
    touch(root / "a/.env.example")
    touch(root / "a/b/c/key.pem")
    touch(root / "a/b/c/key.pem.sample")
    touch(root / "node_modules/pkg/.env")
    touch(root / "node_modules/.vscode/x")
    touch(root / "deep/.venv/.bashrc")
    touch(root / ".config/fish/config.fish")
    touch(root / "src/main.py")
    return root


EXPECTED = [
    (".config/fish", "protected", True),
    (".env", "secret", False),
    (".git", "git", True),
    (".vscode", "protected", True),
    # a protected directory is searched for secrets (only)
    (".vscode/.env", "secret", False),
    ("a/.bashrc", "protected", False),
    ("a/.env.local", "secret", False),
    ("a/b/.envrc", "protected", False),
    ("a/b/c/key.pem", "secret", False),
    # so is a skip_dir: a secret, but not the protected .vscode in it
    ("node_modules/pkg/.env", "secret", False),
    ("sub/wt/.git", "git", False),
]


def test_findings(tree):
    result = scan.walk(str(tree), RULES, None)
    assert found(result, tree) == EXPECTED
    assert result.dirs_reused == 0


def test_findings_without_git(tree):
    rules = scan.Rules(**{**{f: getattr(RULES, f) for f in RULES.__slots__}, "find_git": False})
    result = scan.walk(str(tree), rules, None)
    kinds = {k for _p, k, _d in result.findings}
    assert scan.GIT not in kinds
    # the .git directory is now walked like any other (hooks has nothing to find)
    assert found(result, tree) == [f for f in EXPECTED if f[1] != "git"]


def test_max_depth(tree):
    rules = scan.Rules(protected_names=RULES.protected_names, skip_dirs=RULES.skip_dirs,
                       secret_names=RULES.secret_names, secret_exceptions=RULES.secret_exceptions,
                       max_depth=1, secrets_everywhere=True)
    got = found(scan.walk(str(tree), rules, None), tree)
    assert got == [f for f in EXPECTED if f[0].count("/") <= 1 or f[0] == ".config/fish"]


def test_exclude(tree):
    rules = scan.Rules(protected_names=RULES.protected_names, secret_names=RULES.secret_names,
                       exclude=(str(tree / "a"), str(tree / "node_modules")),
                       secrets_everywhere=True)
    got = found(scan.walk(str(tree), rules, None), tree)
    # no skip_dirs here: .venv is walked, a/ and node_modules/ are not
    assert got == [(".config/fish", "protected", True), (".env", "secret", False),
                   (".git", "git", True), (".vscode", "protected", True),
                   (".vscode/.env", "secret", False),
                   ("deep/.venv/.bashrc", "protected", False), ("sub/wt/.git", "git", False)]


def test_sockets(tmp_path):
    root = tmp_path / "s"
    (root / "run").mkdir(parents=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = root / "run" / "agent.sock"
    try:
        sock.bind(str(path))
    except OSError as exc:  # pragma: no cover - path too long on odd systems
        pytest.skip(f"cannot bind a unix socket: {exc}")
    try:
        touch(root / "run/plain")
        os.symlink(str(path), str(root / "link.sock"))
        result = scan.walk(str(root), scan.Rules(find_git=False), None)
        assert found(result, root) == [("run/agent.sock", "socket", False)]
    finally:
        sock.close()


def test_symlinks_are_not_followed(tmp_path):
    outside = tmp_path / "outside"
    touch(outside / ".env")
    touch(outside / "inner/.env")
    root = tmp_path / "ws"
    root.mkdir()
    os.symlink(str(outside), str(root / "linkdir"))
    os.symlink(str(outside / ".env"), str(root / ".env"))
    # the link named .env is reported (its target is hidden), linkdir is not walked
    assert found(scan.walk(str(root), RULES, None), root) == [(".env", "secret-link", False)]


def test_symlinks_classified_by_name_and_target(tmp_path):
    root = tmp_path / "ws"
    touch(root / "real.txt")
    links = {
        ".env": "real.txt",  # secret name: what it names is a secret
        "config.txt": "../../secrets/.env",  # target named like a secret
        "sub/app.cfg": "/elsewhere/.env.production",
        ".env.example": ".env.local",  # an exception's name, a secret's target
        "ok.txt": "real.txt",
        "template": ".env.example",  # a target that is an exception
        "dir-link": "somewhere/.env/",  # ends in a directory: not a file name
        "node_modules/pkg/key": "../../x/key.pem",  # in a skip_dir too
    }
    for name, target in links.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / name)
    got = [f for f in found(scan.walk(str(root), RULES, None), root) if f[1] == "secret-link"]
    assert got == [(".env", "secret-link", False), (".env.example", "secret-link", False),
                   ("config.txt", "secret-link", False),
                   ("node_modules/pkg/key", "secret-link", False),
                   ("sub/app.cfg", "secret-link", False)]


@pytest.mark.parametrize("rules", [
    scan.Rules(protected_names=RULES.protected_names, skip_dirs=RULES.skip_dirs,
               secrets_everywhere=True),  # nothing to look for there
    scan.Rules(protected_names=RULES.protected_names, skip_dirs=RULES.skip_dirs,
               secret_names=RULES.secret_names),  # the audit's walk: not asked to
])
def test_skip_dirs_not_walked_without_secrets_everywhere(tree, rules):
    result = scan.walk(str(tree), rules, None)
    assert not any("node_modules" in d or ".venv" in d or ".vscode" in d for d in result.dirs)
    assert not any(p.endswith(("node_modules/pkg/.env", ".vscode/.env")) for p, _k, _d in result.findings)


def test_skip_dirs_hold_secrets_and_sockets_only(tmp_path):
    root = tmp_path / "ws"
    nm = root / "node_modules"
    touch(nm / "a/node_modules/b/.env.production")  # nested packages: any depth
    touch(nm / "a/.bashrc")  # a protected name: not reported there
    (nm / "gitdep/.git/hooks").mkdir(parents=True)  # nor a .git (and it is not walked)
    touch(nm / "gitdep/.git/hooks/.env")
    (nm / "locked").mkdir()
    touch(nm / "locked/.env")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(nm / "a/s.sock"))
    except OSError as exc:  # pragma: no cover - path too long on odd systems
        pytest.skip(f"cannot bind a unix socket: {exc}")
    rules = scan.Rules(protected_names=(".bashrc",), skip_dirs=("node_modules",),
                       secret_names=(".env", ".env.*"), secrets_everywhere=True)
    os.chmod(nm / "locked", 0)
    try:
        result = scan.walk(str(root), rules, None)
    finally:
        os.chmod(nm / "locked", 0o755)
        sock.close()
    got = found(result, root)
    # a .git there is reported as buried (the audit takes its directory for a
    # work tree), never as one discovery acts on
    assert ("node_modules/gitdep/.git", "git-buried", True) in got
    got = [f for f in got if f[1] not in ("git-buried", "unreadable")]
    assert ("node_modules/a/node_modules/b/.env.production", "secret", False) in got
    assert ("node_modules/a/s.sock", "socket", False) in got
    # unreadable only as a normal user; root reads it and finds the secret
    assert got in ([("node_modules/a/node_modules/b/.env.production", "secret", False),
                    ("node_modules/a/s.sock", "socket", False)],
                   [("node_modules/a/node_modules/b/.env.production", "secret", False),
                    ("node_modules/a/s.sock", "socket", False),
                    ("node_modules/locked/.env", "secret", False)])


def test_skip_dir_walk_is_cached(tree, tmp_path):
    cache = str(tmp_path / "c.scan")
    age(tree)
    first = scan.walk(str(tree), RULES, cache)
    second = scan.walk(str(tree), RULES, cache)
    assert second.findings == first.findings and second.dirs_listed == 0
    touch(tree / "node_modules/pkg/deeper/.env.local")
    third = scan.walk(str(tree), RULES, cache)
    assert ("node_modules/pkg/deeper/.env.local", "secret", False) in found(third, tree)
    # the new directory and the one it was made in
    assert third.dirs_listed == 2


def test_root_that_is_not_a_directory(tmp_path):
    f = touch(tmp_path / "f")
    assert scan.walk(str(f), RULES, None) == scan.walk(str(tmp_path / "missing"), RULES, None)
    assert scan.walk(str(f), RULES, None).findings == ()


def test_cache_name_depends_on_root_and_rules():
    a = scan.cache_name("/ws", RULES)
    assert a == scan.cache_name("/ws", RULES)
    assert a != scan.cache_name("/ws2", RULES)
    assert a != scan.cache_name("/ws", scan.Rules())
    assert a.endswith(".scan")


# -- the cache ------------------------------------------------------------------

def test_cache_reuses_old_directories(tree, tmp_path):
    cache = str(tmp_path / "c.scan")
    age(tree)
    first = scan.walk(str(tree), RULES, cache)
    assert first.dirs_reused == 0 and first.dirs_listed > 5
    second = scan.walk(str(tree), RULES, cache)
    assert second.findings == first.findings
    assert second.dirs_listed == 0
    assert second.dirs_reused == first.dirs_listed


def test_cache_sees_a_file_added_later_in_a_subdirectory(tree, tmp_path):
    cache = str(tmp_path / "c.scan")
    age(tree)
    first = scan.walk(str(tree), RULES, cache)
    touch(tree / "a/b/c/.env")  # changes the mtime of a/b/c only
    second = scan.walk(str(tree), RULES, cache)
    assert ("a/b/c/.env", "secret", False) in found(second, tree)
    assert second.dirs_listed == 1
    assert second.dirs_reused == first.dirs_listed - 1
    # and a new directory with a finding in it
    age(tree)
    scan.walk(str(tree), RULES, cache)
    touch(tree / "src/new/.envrc")
    third = scan.walk(str(tree), RULES, cache)
    assert ("src/new/.envrc", "protected", False) in found(third, tree)


def test_cache_sees_a_removed_file(tree, tmp_path):
    cache = str(tmp_path / "c.scan")
    age(tree)
    scan.walk(str(tree), RULES, cache)
    (tree / "a/.env.local").unlink()
    assert ("a/.env.local", "secret", False) not in found(scan.walk(str(tree), RULES, cache), tree)


def test_recent_directories_are_listed_again(tree, tmp_path, monkeypatch):
    monkeypatch.setattr(scan, "RACY_NS", 10**15)  # "recent" = the last ~11 days: robust on slow machines
    cache = str(tmp_path / "c.scan")
    first = scan.walk(str(tree), RULES, cache)  # everything was just created: racy
    second = scan.walk(str(tree), RULES, cache)
    assert second.dirs_reused == 0 and second.dirs_listed == first.dirs_listed
    assert second.findings == first.findings


def test_racy_ns_zero_trusts_fresh_directories(tree, tmp_path, monkeypatch):
    monkeypatch.setattr(scan, "RACY_NS", 0)
    cache = str(tmp_path / "c.scan")
    first = scan.walk(str(tree), RULES, cache)
    second = scan.walk(str(tree), RULES, cache)
    assert second.dirs_reused == first.dirs_listed and second.dirs_listed == 0
    assert second.findings == first.findings


def test_corrupt_cache_is_ignored(tree, tmp_path):
    cache = tmp_path / "c.scan"
    cache.write_bytes(b"\x00garbage")
    assert found(scan.walk(str(tree), RULES, str(cache)), tree) == EXPECTED
    cache.write_bytes(b"")
    assert found(scan.walk(str(tree), RULES, str(cache)), tree) == EXPECTED


def test_cache_file_in_missing_directory_is_not_fatal(tree, tmp_path):
    result = scan.walk(str(tree), RULES, str(tmp_path / "no/such/dir/c.scan"))
    assert found(result, tree) == EXPECTED


def test_modes_together(tmp_path):
    """A skip_dir is walked for git dirs and secrets at once; .git for git dirs only;
    the stamps that count are those of directories whose listing decides secrets."""
    root = tmp_path / "ws"
    touch(root / ".git/HEAD", "ref: refs/heads/main\n")
    touch(root / ".git/.env")  # inside .git: not a secret anyone reads as one
    touch(root / "node_modules/dep/.git/HEAD", "ref: refs/heads/main\n")
    touch(root / "node_modules/dep/.env")
    touch(root / ".vscode/sub/.env.local")
    (root / ".vscode/sub/.git").mkdir()
    touch(root / ".vscode/sub/.git/HEAD", "x")  # protected dirs: git dirs looked for too
    got = found(scan.walk(str(root), RULES, None), root)
    assert got == [(".git", "git", True), (".git", "gitdir", True),
                   (".vscode", "protected", True), (".vscode/sub/.env.local", "secret", False),
                   (".vscode/sub/.git", "git-buried", True), (".vscode/sub/.git", "gitdir", True),
                   ("node_modules/dep/.env", "secret", False),
                   ("node_modules/dep/.git", "git-buried", True),
                   ("node_modules/dep/.git", "gitdir", True)]
    dirs = {os.path.relpath(d, root) for d in scan.walk(str(root), RULES, None).dirs}
    assert dirs == {".", ".vscode", ".vscode/sub", "node_modules", "node_modules/dep"}
    audit_rules = scan.Rules(protected_names=RULES.protected_names, skip_dirs=RULES.skip_dirs,
                             secret_names=RULES.secret_names)  # as the audit walks
    result = scan.walk(str(root), audit_rules, None)
    assert {os.path.relpath(d, root) for d in result.dirs} == {"."}
    assert ("node_modules/dep/.git", "gitdir", True) in found(result, root)
    assert ("node_modules/dep/.env", "secret", False) not in found(result, root)


# -- git dirs wherever git can reach them: however deep, however long the path ---------

def _mkdirs_at(top: Path, names: list[str]) -> int:
    """Make a chain of directories below ``top`` with openat (the path may pass
    PATH_MAX); return a descriptor of the last one."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for name in names:
        os.mkdir(name, dir_fd=fd)
        down = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = down
    return fd


def _plant_gitdir_at(fd: int) -> None:
    os.mkdir("objects", dir_fd=fd)
    os.mkdir("refs", dir_fd=fd)
    with os.fdopen(os.open("HEAD", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as fh:
        fh.write("ref: refs/heads/main\n")


def _rm(path: Path) -> None:
    import subprocess

    subprocess.run(["rm", "-rf", str(path)], check=True)


def test_a_git_dir_past_path_max_is_found(tmp_path):
    """Git reaches such a directory through a chain of short symlinks; a walk
    that names paths whole (stat, scandir) fails there with ENAMETOOLONG."""
    names = ["d" * 200] * 25  # 5000 bytes below the root
    fd = _mkdirs_at(tmp_path, names)
    try:
        os.mkdir("evil", dir_fd=fd)
        evil = os.open("evil", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        _plant_gitdir_at(evil)
        os.close(evil)
    finally:
        os.close(fd)
    try:
        got = [(p, k) for p, k, _ in scan.walk(str(tmp_path), scan.Rules(), None).findings]
        want = str(tmp_path) + "/" + "/".join(names) + "/evil"
        assert len(os.fsencode(want)) > 4096
        assert (want, scan.GITDIR) in got
    finally:
        _rm(tmp_path / names[0])


def test_a_git_dir_deeper_than_any_limit_is_found(tmp_path):
    names = ["d"] * 5000
    fd = _mkdirs_at(tmp_path, names)
    try:
        _plant_gitdir_at(fd)
    finally:
        os.close(fd)
    try:
        got = scan.walk(str(tmp_path), scan.Rules(), None).findings
        assert (str(tmp_path) + "/" + "/".join(names), scan.GITDIR, True) in got
    finally:
        _rm(tmp_path / "d")


@pytest.mark.parametrize("where", [".vscode/evil", "node_modules/x/.claude/e v\nil",
                                   "a/.git/objects/ab/evil"])
def test_git_dirs_and_dotgit_entries_are_found_under_every_name(tmp_path, where):
    root = tmp_path / "ws"
    touch(root / where / "HEAD", "ref: refs/heads/main\n")
    touch(root / "sub" / where / ".git", "gitdir: ../x\n")
    got = found(scan.walk(str(root), RULES, None), root)
    assert (where, "gitdir", True) in got
    kinds = {k for p, k, _ in got if p == f"sub/{where}/.git"}
    assert kinds & {"git", "git-buried"}, got


@pytest.mark.parametrize("change", ["new-file", "new-secret", "inside-git", "new-dir", "removed-dir"])
def test_summary_is_the_walk_and_any_change_is_seen(tmp_path, change):
    """A walk whose directories are all unchanged returns its kept summary
    (without loading the per-directory cache); a change anywhere it went,
    inside .git too, takes the full walk, which finds what a walk without any
    cache finds."""
    root = tmp_path / "ws"
    touch(root / "src" / "a.py")
    touch(root / "lib" / "x" / "b.py")
    touch(root / ".git" / "HEAD", "ref: refs/heads/main\n")
    touch(root / ".git" / "refs" / "heads" / "main", "0" * 40 + "\n")
    (root / ".vscode").mkdir()
    age(root)
    cache = str(tmp_path / "c.scan")
    first = scan.walk(str(root), RULES, cache)
    second = scan.walk(str(root), RULES, cache)
    assert os.path.exists(cache + ".sum")
    assert second.dirs_listed == 0 and second.findings == first.findings
    assert (second.dirs, second.stamps, second.found) == (first.dirs, first.stamps, first.found)
    {"new-file": lambda: touch(root / "src" / "c.py"),
     "new-secret": lambda: touch(root / "lib" / "x" / ".env", "K=1\n"),
     "inside-git": lambda: touch(root / ".git" / "refs" / "heads" / "x" / "HEAD", "ref: y\n"),
     "new-dir": lambda: (root / "lib" / "x" / ".claude").mkdir(),
     "removed-dir": lambda: [os.unlink(root / "lib" / "x" / "b.py"),
                             os.rmdir(root / "lib" / "x")]}[change]()
    third = scan.walk(str(root), RULES, cache)
    assert third.dirs_listed > 0
    fresh = scan.walk(str(root), RULES, None)
    assert (third.findings, third.dirs, third.found) == (fresh.findings, fresh.dirs, fresh.found)
