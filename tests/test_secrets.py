"""Secret-named files through the real sandbox, as root and as a plain user.

Issue 13, findings 8 and 11: ``.env`` files must be hidden in a read-only
workspace, behind symlinks (by the link's name and by its target's name),
and inside ``skip_dirs`` and protected directories.  Issue 8, item 1: a
``.env`` that git tracks must survive every git operation run inside, and
a forged object store or index must never reveal a secret.

Every attack is run bare as well, where it must work (so the test can fail),
and inside, where it must not.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from conftest import sandbox_exe

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")]


def token(tag: str = "secret") -> str:
    return f"{tag}-{os.urandom(8).hex()}"


def out(r: subprocess.CompletedProcess) -> str:
    return (r.stdout + r.stderr).decode(errors="replace")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def both(senv, script: str, **kw):
    inside = senv.sh(script, **kw)
    outside = senv.sh(script, sandboxed=False, **kw)
    return outside, inside


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, out(r)
    return r.stdout.decode()


# -- finding 8: a workspace the command can only read --------------------------------

def test_readonly_profile_hides_dotenv(senv):
    top, nested = token(), token()
    write(senv.ws / ".env", f"API_KEY={top}\n")
    write(senv.ws / "app" / ".env.production", f"DB={nested}\n")
    write(senv.ws / ".env.example", "API_KEY=changeme\n")
    script = "cat .env app/.env.production; echo; cat .env.example"
    outside, inside = both(senv, script, args=["--profile", "readonly"])
    assert top in out(outside) and nested in out(outside)
    text = ok(inside)
    assert top not in out(inside) and nested not in out(inside)
    assert "API_KEY=changeme" in text  # templates stay readable


def test_allow_write_root_hides_dotenv(senv):
    """Every --allow-write root is searched too (also before this change)."""
    extra = senv.base / "extra"
    secret = token()
    write(extra / "sub" / ".env", f"K={secret}\n")
    outside, inside = both(senv, f'cat "{extra}/sub/.env"', args=["--allow-write", str(extra)])
    assert secret in out(outside)
    ok(inside)
    assert secret not in out(inside)


# -- finding 11: symlinks, skip_dirs, protected directories --------------------------

def test_dotenv_symlink_hides_what_it_names(senv):
    """.env -> ../vault/app.env: the target (outside the workspace) is the secret."""
    secret = token()
    write(senv.base / "vault" / "app.env", f"API_KEY={secret}\n")
    os.symlink("../vault/app.env", senv.ws / ".env")
    script = f'cat .env; cat "{senv.base}/vault/app.env"'
    for args in ([], ["--profile", "readonly"]):
        outside, inside = both(senv, script, args=args)
        assert secret in out(outside)
        ok(inside)
        assert secret not in out(inside)
    assert (senv.ws / ".env").is_symlink()  # nothing was mounted over the link itself


def test_link_to_a_secret_name_hides_its_target(senv):
    """config.txt -> ../../secrets/.env: read through any name, it is empty."""
    secret, inner = token(), token()
    write(senv.base / "secrets" / ".env", f"API_KEY={secret}\n")
    write(senv.ws / ".env.production", f"DB={inner}\n")
    (senv.ws / "cfg").mkdir()
    os.symlink("../../secrets/.env", senv.ws / "cfg" / "config.txt")
    os.symlink("../.env.production", senv.ws / "cfg" / "db.conf")
    # a chain of links, the last one named like a secret
    os.symlink("cfg/config.txt", senv.ws / "settings")
    script = "cat cfg/config.txt cfg/db.conf settings"
    outside, inside = both(senv, script)
    assert secret in out(outside) and inner in out(outside)
    ok(inside)
    assert secret not in out(inside) and inner not in out(inside)


SKIPPED_PLACES = ["node_modules/pkg/.env", "node_modules/@scope/pkg/node_modules/dep/.env.local",
                  ".venv/.env", ".next/standalone/.env.production", "target/classes/.env",
                  ".devcontainer/.env", ".vscode/.env", ".claude/.env"]


@pytest.mark.parametrize("readonly", [False, True], ids=["default", "readonly"])
def test_dotenv_in_skip_dirs_and_protected_dirs(senv, readonly):
    secrets = {rel: token() for rel in SKIPPED_PLACES}
    for rel, secret in secrets.items():
        write(senv.ws / rel, f"KEY={secret}\n")
    script = "cat " + " ".join(SKIPPED_PLACES)
    args = ["--profile", "readonly"] if readonly else []
    outside, inside = both(senv, script, args=args)
    for secret in secrets.values():
        assert secret in out(outside)
    ok(inside)
    for rel, secret in secrets.items():
        assert secret not in out(inside), rel


def test_odd_secret_links_do_not_break_runs(senv):
    """Links named like secrets that lead nowhere useful are left alone."""
    os.symlink("/dev/zero", senv.ws / ".env")
    os.symlink("/proc/self/environ", senv.ws / ".env.proc")
    os.symlink("missing/file", senv.ws / ".env.dangling")
    (senv.ws / "dir").mkdir()
    os.symlink("dir", senv.ws / ".env.dir")
    os.symlink(".env.loop", senv.ws / ".env.loop")
    r = senv.sh("head -c 4 .env | wc -c; ls -d .env.dir/; echo done")
    assert ok(r).split() == ["4", ".env.dir/", "done"]


def test_dotenv_link_cannot_be_followed_into_a_mount_elsewhere(senv):
    """A link planted in one run is resolved afresh: the next run hides its target,
    never mounts over the link (bwrap would follow it), and the target's own
    directory stays writable."""
    secret = token()
    target = write(senv.ws / "data" / "real.txt", f"K={secret}\n")
    r = senv.sh("ln -s data/real.txt .env && echo planted")
    assert "planted" in ok(r)
    r = senv.sh("cat .env data/real.txt; touch data/new && echo writable")
    assert secret not in out(r) and "writable" in ok(r)
    assert target.read_text() == f"K={secret}\n"


# -- issue 8, item 1: a .env that git tracks -------------------------------------------

def git_setup(senv) -> None:
    write(senv.home / ".gitconfig",
          "[user]\n\tname = t\n\temail = t@example.com\n[init]\n\tdefaultBranch = main\n")


def host_git(senv, *args: str) -> subprocess.CompletedProcess:
    return senv.run(["git", *args], sandboxed=False)


def make_repo(senv, files: dict[str, str]) -> None:
    git_setup(senv)
    ok(host_git(senv, "init", "-q"))
    for rel, text in files.items():
        write(senv.ws / rel, text)
    ok(host_git(senv, "add", "-A"))
    ok(host_git(senv, "commit", "-qm", "init"))


ROUND_TRIP = """
set -e
git status --porcelain --untracked-files=no > status.txt
echo more >> a.txt
git stash -q
git stash pop -q
git add -A && git commit -qm inside
git checkout -qb feature
echo feature > f.txt && git add f.txt && git commit -qm feature
git checkout -q main
echo main > m.txt && git add m.txt && git commit -qm main
git checkout -q feature
git rebase -q main
git checkout -q main
git merge -q --no-edit feature
git stash -q || true
echo round-trip-done
"""


def test_tracked_dotenv_round_trip(senv):
    """Commit, stash, stash pop, checkout, rebase inside; the host file and the
    committed blob stay byte-identical (the issue's scenario)."""
    secret = token()
    content = f"API_KEY={secret}\n"
    make_repo(senv, {".env": content, "a.txt": "a\n"})
    blob = ok(host_git(senv, "rev-parse", "HEAD:.env")).strip()
    r = senv.sh(ROUND_TRIP)
    assert "round-trip-done" in ok(r)
    assert (senv.ws / "status.txt").read_text() == ""  # git saw nothing modified
    # one line saying why the file is visible, and how to fix it
    assert "already holds this exact content" in r.stderr.decode()
    assert (senv.ws / ".env").read_text() == content
    assert ok(host_git(senv, "rev-parse", "HEAD:.env")).strip() == blob
    assert ok(host_git(senv, "log", "--format=%s", "--", ".env")).split() == ["init"]
    # and a stash made inside, popped on the host, leaves .env alone
    r = senv.sh("echo x >> a.txt && git stash -q && echo stashed")
    assert "stashed" in ok(r)
    ok(host_git(senv, "stash", "pop", "-q"))
    assert (senv.ws / ".env").read_text() == content


def test_tracked_dotenv_writes_fail(senv):
    content = f"API_KEY={token()}\n"
    make_repo(senv, {".env": content})
    r = senv.sh("echo X=1 > .env; rm -f .env; mv .env moved; git checkout -- .env; true")
    assert r.returncode == 0, out(r)
    assert (senv.ws / ".env").read_text() == content
    assert not (senv.ws / "moved").exists()


def test_tracked_dotenv_changed_locally_stays_hidden(senv):
    """Committed defaults, real values added locally: inside git sees the committed
    version (unchanged); the local values are never shown nor committed."""
    secret = token()
    make_repo(senv, {".env": "API_KEY=changeme\n", "a.txt": "a\n"})
    write(senv.ws / ".env", f"API_KEY={secret}\n")
    outside, inside = both(senv, "cat .env; git status --porcelain")
    assert secret in out(outside) and " M .env" in out(outside)
    text = ok(inside)
    assert secret not in out(inside)
    assert "API_KEY=changeme" in text and ".env" not in text.replace("API_KEY", "")
    assert "index has it" in inside.stderr.decode()
    r = senv.sh("echo b >> a.txt && git add -A && git commit -qm inside && git stash -q && "
                "git checkout -qb other && git checkout -q main && echo done")
    assert "done" in ok(r)
    assert (senv.ws / ".env").read_text() == f"API_KEY={secret}\n"
    assert ok(host_git(senv, "show", "HEAD:.env")) == "API_KEY=changeme\n"
    assert secret not in ok(host_git(senv, "log", "-p", "--all"))


def test_untracked_dotenv_committed_inside(senv):
    """Not ignored, not tracked: inside it is empty and 'git add -A' commits it
    empty.  The host copy survives the host's git commands that keep local
    changes, and the next run says what happened."""
    secret = token()
    content = f"API_KEY={secret}\n"
    make_repo(senv, {"a.txt": "a\n"})
    write(senv.ws / ".env", content)
    r = senv.sh("cat .env; git add -A && git commit -qm inside && echo committed")
    assert "committed" in ok(r) and secret not in out(r)
    assert ok(host_git(senv, "show", "HEAD:.env")) == ""
    assert (senv.ws / ".env").read_text() == content
    assert " M .env" in ok(host_git(senv, "status", "--porcelain"))
    # a checkout that would overwrite it is refused; a stash keeps it
    assert host_git(senv, "checkout", "-q", "HEAD~1").returncode != 0
    assert (senv.ws / ".env").read_text() == content
    ok(host_git(senv, "stash", "-q"))
    ok(host_git(senv, "stash", "pop", "-q"))
    assert (senv.ws / ".env").read_text() == content
    # the stash put the secret into the object store, where any command can
    # read it; so from now on it is shown, and the run says so
    r = senv.sh("git cat-file --batch-all-objects --batch | grep -a API_KEY= | sort -u")
    assert secret in ok(r)
    r = senv.sh("cat .env")
    assert ok(r) == content
    assert "already holds this exact content" in r.stderr.decode()


# -- forged stores never reveal a secret -------------------------------------------

def test_planted_index_entry_does_not_unmask(senv):
    """A command can write .git/index: an entry naming .env proves nothing."""
    secret = token()
    make_repo(senv, {"a.txt": "a\n"})
    write(senv.ws / ".env", f"API_KEY={secret}\n")
    a_blob = ok(host_git(senv, "rev-parse", "HEAD:a.txt")).strip()
    fake = "1" * 40
    r = senv.sh(f"git update-index --add --cacheinfo 100644,{fake},.env && echo planted")
    assert "planted" in ok(r)
    r = senv.sh("cat .env")
    assert secret not in out(r) and ok(r) == ""
    # an entry naming a blob the store holds shows that blob: never the secret
    r = senv.sh(f"git update-index --cacheinfo 100644,{a_blob},.env && cat .env")
    assert secret not in out(r)
    r = senv.sh("cat .env")
    assert ok(r) == "a\n" and secret not in out(r)
    assert (senv.ws / ".env").read_text() == f"API_KEY={secret}\n"


def test_forged_object_named_by_the_secret_does_not_unmask(senv):
    """Even an attacker who knew the secret's blob id (not its content) cannot
    make the sandbox show it: the object must rebuild to the real bytes."""
    secret = token()
    content = f"API_KEY={secret}\n".encode()
    make_repo(senv, {"a.txt": "a\n"})
    (senv.ws / ".env").write_bytes(content)
    hexid = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
    obj = senv.ws / ".git" / "objects" / hexid[:2] / hexid[2:]
    obj.parent.mkdir(exist_ok=True)
    obj.write_bytes(zlib.compress(b"blob %d\0" % len(content) + b"Z" * len(content)))
    r = senv.sh("cat .env")
    assert secret not in out(r) and ok(r) == ""
    # the real object does unmask it: the check is not vacuous
    obj.unlink()
    ok(host_git(senv, "hash-object", "-w", ".env"))
    r = senv.sh("cat .env")
    assert secret in ok(r)


def test_store_outside_the_sandbox_view_does_not_count(senv):
    """A planted .git file pointing a subdirectory at a store the command cannot
    read (under a masked directory) must not unmask a secret that store holds."""
    secret = token()
    content = f"API_KEY={secret}\n"
    hidden_repo = senv.home / ".password-store"  # masked by the default profile
    hidden_repo.mkdir()
    subprocess.run(["git", "init", "-q", str(hidden_repo)], check=True)
    write(hidden_repo / "copy.env", content)
    subprocess.run(["git", "-C", str(hidden_repo), "add", "-A"], check=True)
    git_setup(senv)
    write(senv.ws / "app" / ".env", content)
    write(senv.ws / "app" / ".git", f"gitdir: {hidden_repo}/.git\n")
    outside, inside = both(senv, f'cat app/.env; cat "{hidden_repo}/copy.env"')
    assert secret in out(outside)
    assert secret not in out(inside)


# -- the plan cache follows what the decision read ---------------------------------

def test_cached_plan_follows_the_object_store(senv):
    secret = token()
    content = f"API_KEY={secret}\n"
    make_repo(senv, {"a.txt": "a\n"})
    write(senv.ws / ".env", content)
    time.sleep(2.2)  # older than the racy window: the plan is cached
    for _ in range(2):
        r = senv.sh("cat .env")
        assert ok(r) == ""
    ok(host_git(senv, "add", ".env"))  # the real content enters the store (loose)
    r = senv.sh("cat .env")
    assert secret in ok(r)
    ok(host_git(senv, "commit", "-qm", "env"))
    ok(host_git(senv, "gc", "-q", "--prune=now"))  # now only in a pack
    time.sleep(2.2)
    for _ in range(2):
        r = senv.sh("cat .env; git status --porcelain")
        assert ok(r) == content
    write(senv.ws / ".env", "API_KEY=rotated-" + secret[-6:] + "\n")  # a new value
    r = senv.sh("cat .env")
    assert ok(r) == content  # the committed version, not the new value
    assert "rotated" not in out(r)


def test_explain_lists_shown_secrets(senv):
    make_repo(senv, {".env": "PUBLIC=1\n"})
    senv.finish()
    r = subprocess.run(senv.who.prefix() + [sandbox_exe(), "explain", "--json", "--", "true"],
                       cwd=senv.ws, env=senv.environ(), capture_output=True)
    data = json.loads(ok(r))
    assert data["secrets_git_holds"] == [{"path": str(senv.ws.resolve() / ".env"),
                                          "shown": str(senv.ws.resolve() / ".env")}]
    assert str(senv.ws.resolve() / ".env") not in data["secrets_masked"]["files"]


def test_stash_with_untracked_files_keeps_the_host_dotenv(senv):
    """git stash -u inside saves the hidden .env empty and cannot remove it; the
    stash it leaves cannot overwrite the real file when popped on the host."""
    content = f"API_KEY={token()}\n"
    make_repo(senv, {"a.txt": "a\n"})
    write(senv.ws / ".env", content)
    r = senv.sh("echo b >> a.txt; git stash -u; echo rc=$?")
    assert "rc=" in ok(r)
    assert (senv.ws / ".env").read_text() == content
    host_git(senv, "checkout", "--", "a.txt")
    host_git(senv, "stash", "pop")
    assert (senv.ws / ".env").read_text() == content


@pytest.mark.parametrize("scratch", ["/tmp", "/var/tmp"])
def test_workspace_under_tmp_hides_link_targets_beside_it(senv, scratch):
    """A workspace /tmp/x/sub sees /tmp/x read-only (the repository around it):
    a .env link there into /tmp/x is hidden like any other."""
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="sbx-sec-", dir=scratch))
    try:
        os.chmod(top, 0o755)
        secret, inner = token(), token()
        write(top / "vault.env", f"K={secret}\n")
        sub = top / "sub"
        write(sub / ".env.local", f"K={inner}\n")
        os.symlink("../vault.env", sub / ".env")
        senv.finish()
        senv.who.chown(top)
        script = "cat .env .env.local ../vault.env; echo done"
        outside = senv.sh(script, sandboxed=False, cwd=sub)
        inside = senv.sh(script, cwd=sub)
        assert secret in out(outside) and inner in out(outside)
        assert "done" in ok(inside)
        assert secret not in out(inside) and inner not in out(inside)
    finally:
        shutil.rmtree(top, ignore_errors=True)
