"""Real attacks against the real sandbox, each run for root and a plain user.

Every test runs an attack twice with the same user and the same files: once
without the sandbox, where it must work (so the test can fail), and once
inside it, where it must not.  Where the "works outside" half does not hold
for a user (an unprivileged user cannot read /etc/shadow anyway), the test
says so and checks only what is meaningful.

Network tests only use servers the test starts itself, on 127.0.0.1, ::1 or
unix sockets.  Every loop is bounded; only processes started here are killed.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import sandbox_exe

pytestmark = pytest.mark.integration

# Debian's python: the pyenv one under /root cannot be run by the test user.
PY = "/usr/bin/python3"
EVIL = "EVIL-" + uuid.uuid4().hex[:8]


def token() -> str:
    return "secret-" + uuid.uuid4().hex


def both(senv, script: str, **kw) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """Run ``script`` inside the sandbox first, then bare: (outside, inside).

    Inside first, so that a write attack that works outside cannot leave
    behind what the inside run is then checked against.
    """
    inside = senv.sh(script, **kw)
    outside = senv.sh(script, sandboxed=False, **kw)
    return outside, inside


def out(r: subprocess.CompletedProcess) -> str:
    return (r.stdout + r.stderr).decode(errors="replace")


def ran(r: subprocess.CompletedProcess) -> None:
    """The command itself ran: not a sandbox error, not 'cannot execute'."""
    assert r.returncode not in (125, 126, 127), out(r)


def write(path: Path, text: str, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mode is not None:
        os.chmod(path, mode)
    return path


# --------------------------------------------------------------------------
# 1. secrets on disk


HOME_SECRETS = [
    ".ssh/id_ed25519",
    ".aws/credentials",
    ".netrc",
    ".config/gh/hosts.yml",
    ".bash_history",
]


@pytest.mark.parametrize("rel", HOME_SECRETS)
def test_read_home_secret(senv, rel):
    secret = token()
    path = write(senv.home / rel, secret + "\n", 0o600)
    outside, inside = both(senv, f'cat "{path}"')
    assert outside.returncode == 0 and secret in outside.stdout.decode(), out(outside)
    ran(inside)
    assert secret not in out(inside)
    if "/" in rel:  # the whole directory is replaced by an empty one
        top = senv.home / rel.split("/")[0]
        if rel.startswith(".config/"):
            top = senv.home / ".config" / rel.split("/")[1]
        listing = senv.sh(f'ls -A "{top}"')
        assert listing.returncode == 0 and listing.stdout.strip() == b"", out(listing)
    else:  # a file is replaced by an empty one
        assert inside.returncode == 0 and inside.stdout == b"", out(inside)


def test_read_secret_through_symlink_planted_inside(senv):
    """A link made inside the sandbox still points at the masked file."""
    secret = token()
    write(senv.home / ".aws" / "credentials", secret, 0o600)
    script = f'ln -sf "{senv.home}/.aws/credentials" link && cat link'
    outside, inside = both(senv, script)
    assert secret in outside.stdout.decode(), out(outside)
    ran(inside)
    assert secret not in out(inside)


def test_workspace_dotenv_is_empty_but_example_readable(senv):
    secret, nested = token(), token()
    write(senv.ws / ".env", f"API_KEY={secret}\n")
    write(senv.ws / "sub" / ".env.local", f"DB={nested}\n")
    write(senv.ws / ".env.example", "API_KEY=changeme\n")
    script = "cat .env; echo ---; cat sub/.env.local; echo ---; cat .env.example"
    outside, inside = both(senv, script)
    assert outside.returncode == 0, out(outside)
    assert secret in outside.stdout.decode() and nested in outside.stdout.decode()
    assert inside.returncode == 0, out(inside)
    env, local, example = inside.stdout.decode().split("---\n")
    assert env == "" and local == ""
    assert example == "API_KEY=changeme\n"
    assert secret not in out(inside) and nested not in out(inside)


def test_workspace_dotenv_cannot_be_replaced(senv):
    """Removing or renaming the masked .env must not reach the host file."""
    secret = token()
    dotenv = write(senv.ws / ".env", f"API_KEY={secret}\n")
    inside = senv.sh("echo ok > control; rm -f .env; mv .env moved; echo X=1 > .env; true")
    ran(inside)
    assert (senv.ws / "control").exists(), out(inside)
    assert dotenv.read_text() == f"API_KEY={secret}\n"
    assert not (senv.ws / "moved").exists()


def test_etc_shadow(senv, who):
    inside = senv.sh("cat /etc/shadow")
    assert inside.returncode == 0, out(inside)
    assert inside.stdout == b""
    outside = senv.sh("cat /etc/shadow", sandboxed=False)
    if who.uid == 0:
        assert outside.returncode == 0 and b"root:" in outside.stdout, out(outside)
    else:
        # Not the attack half: a plain user cannot read it even on the host.
        # Inside it reads as an empty file (rc 0), which shows the mask is
        # there rather than a permission error doing the work.
        assert outside.returncode != 0


# --------------------------------------------------------------------------
# 3. writes outside the workspace


def test_write_home(senv):
    bashrc = write(senv.home / ".bashrc", "# rc\n")
    script = f'echo ok > control && echo {EVIL} > "{senv.home}/planted"'
    outside, inside = both(senv, script)
    ran(inside)
    assert inside.returncode != 0
    assert (senv.ws / "control").exists(), "the workspace must stay writable"
    assert outside.returncode == 0, out(outside)
    assert (senv.home / "planted").read_text().strip() == EVIL
    # persistence through a shell rc file in $HOME
    outside, inside = both(senv, f'echo {EVIL} >> "{bashrc}"')
    ran(inside)
    assert inside.returncode != 0
    assert outside.returncode == 0
    assert bashrc.read_text().count(EVIL) == 1  # only the outside run wrote


def test_write_sibling_of_workspace(senv):
    sibling = senv.base / "sibling"
    sibling.mkdir()
    outside, inside = both(senv, f'echo {EVIL} > "{sibling}/planted"')
    ran(inside)
    assert inside.returncode != 0
    assert outside.returncode == 0, out(outside)
    assert (sibling / "planted").read_text().strip() == EVIL


@pytest.fixture
def root_owned_dir(senv):
    """A root-owned directory outside the workspace, writable only by root."""
    path = senv.base.parent / f"rootdir-{uuid.uuid4().hex[:12]}"
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_write_root_owned_dir_and_etc(senv, who, root_owned_dir):
    if os.getuid() != 0:
        pytest.skip("needs root to create a root-owned directory")
    target = root_owned_dir / "planted"
    etc_target = Path("/etc") / f"sbx-attack-{uuid.uuid4().hex[:12]}"
    try:
        inside = senv.sh(f'echo {EVIL} > "{target}"; a=$?; echo {EVIL} > "{etc_target}"; b=$?; '
                         f'echo "$a $b"; [ $a -ne 0 ] && [ $b -ne 0 ]')
        ran(inside)
        assert inside.returncode == 0, out(inside)
        assert not target.exists() and not etc_target.exists()
    finally:
        if etc_target.exists():
            etc_target.unlink()
    # The stand-in for /etc outside the sandbox: the write works for root.
    # A plain user cannot write there anyway, so that half is root only.
    outside = senv.sh(f'echo {EVIL} > "{target}"', sandboxed=False)
    if who.uid == 0:
        assert outside.returncode == 0, out(outside)
        assert target.read_text().strip() == EVIL
    else:
        assert outside.returncode != 0


def test_write_world_writable_dir_outside(senv):
    """A sticky, world-writable dir outside the workspace (a /tmp lookalike)."""
    path = senv.base.parent / f"shared-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    os.chmod(path, 0o1777)
    try:
        outside, inside = both(senv, f'echo {EVIL} > "{path}/planted"')
        ran(inside)
        assert inside.returncode != 0
        assert outside.returncode == 0, out(outside)
        assert (path / "planted").read_text().strip() == EVIL
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------
# 4. protected paths in the workspace


def _git(env: dict, *args: str, cwd: Path) -> None:
    r = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, timeout=30)
    assert r.returncode == 0, f"git {' '.join(args)}: {out(r)}"


@pytest.fixture
def repo(senv):
    """A real repository with a nested repo, a worktree and a submodule-style gitdir."""
    ws = senv.ws
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(senv.home),
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    _git(env, "init", "-q", "-b", "main", cwd=ws)
    write(ws / "README", "hi\n")
    _git(env, "add", "README", cwd=ws)
    _git(env, "commit", "-q", "-m", "init", cwd=ws)
    _git(env, "worktree", "add", "-q", str(ws / "wt"), cwd=ws)
    nested = ws / "sub" / "nested"
    nested.mkdir(parents=True)
    _git(env, "init", "-q", cwd=nested)
    # what `git submodule add` leaves: a .git file pointing into .git/modules
    (ws / "mod").mkdir()
    (ws / ".git" / "modules").mkdir()
    _git(env, "init", "-q", f"--separate-git-dir={ws / '.git' / 'modules' / 'mod'}", cwd=ws / "mod")
    write(ws / ".vscode" / "settings.json", "{}\n")
    write(ws / ".claude" / "settings.json", "{}\n")
    write(ws / ".envrc", "export A=1\n")
    assert (ws / "wt" / ".git").is_file() and (ws / "mod" / ".git").is_file()
    return ws


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` with its type and content (links not followed)."""
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if rel == "control":
                continue
            if os.path.islink(p):
                snap[rel] = ("l", os.readlink(p))
            elif os.path.isdir(p):
                snap[rel] = ("d",)
            else:
                with open(p, "rb") as fh:
                    snap[rel] = ("f", fh.read())
    return snap


# (attack, the file that holds EVIL when the attack works)
PROTECTED_ATTACKS = {
    "hook": ("echo {evil} > .git/hooks/pre-commit && chmod +x .git/hooks/pre-commit",
             ".git/hooks/pre-commit"),
    "git-config": (r"printf '[core]\n\tfsmonitor = {evil}\n' >> .git/config", ".git/config"),
    "hooks-dir-replaced": ("rm -rf .git/hooks && mkdir .git/hooks && echo {evil} > .git/hooks/pre-commit",
                           ".git/hooks/pre-commit"),
    "hooks-dir-renamed": ("mv .git/hooks .git/hooks-old && mkdir .git/hooks && "
                          "echo {evil} > .git/hooks/pre-commit", ".git/hooks/pre-commit"),
    "dotgit-renamed": ("mv .git .git-old && mkdir -p .git/hooks && echo {evil} > .git/hooks/pre-commit",
                       ".git/hooks/pre-commit"),
    "vscode": ("echo {evil} > .vscode/settings.json", ".vscode/settings.json"),
    "vscode-new-file": ("echo {evil} > .vscode/tasks.json", ".vscode/tasks.json"),
    "vscode-renamed": ("mv .vscode .vscode-old && mkdir .vscode && echo {evil} > .vscode/settings.json",
                       ".vscode/settings.json"),
    "claude": ("echo {evil} > .claude/settings.json", ".claude/settings.json"),
    "claude-removed": ("rm -rf .claude && mkdir .claude && echo {evil} > .claude/settings.json",
                       ".claude/settings.json"),
    "envrc": ("echo {evil} >> .envrc", ".envrc"),
    "envrc-replaced": ("rm -f .envrc && echo {evil} > .envrc", ".envrc"),
    "nested-hook": ("echo {evil} > sub/nested/.git/hooks/pre-commit", "sub/nested/.git/hooks/pre-commit"),
    "nested-config": (r"printf '[core]\n\thooksPath = {evil}\n' >> sub/nested/.git/config",
                      "sub/nested/.git/config"),
    "nested-dotgit-renamed": ("mv sub/nested/.git sub/nested/.git-old && mkdir -p sub/nested/.git/hooks && "
                              "echo {evil} > sub/nested/.git/hooks/pre-commit",
                              "sub/nested/.git/hooks/pre-commit"),
    "nested-parent-renamed": ("mv sub/nested sub/nested-old && mkdir -p sub/nested/.git/hooks && "
                              "echo {evil} > sub/nested/.git/hooks/pre-commit",
                              "sub/nested/.git/hooks/pre-commit"),
    "nested-grandparent-renamed": ("mv sub sub-old && mkdir -p sub/nested/.git/hooks && "
                                   "echo {evil} > sub/nested/.git/hooks/pre-commit",
                                   "sub/nested/.git/hooks/pre-commit"),
    "worktree-dotgit-file": ("echo 'gitdir: /{evil}' > wt/.git", "wt/.git"),
    "worktree-dotgit-replaced": ("rm -f wt/.git && echo 'gitdir: /{evil}' > wt/.git", "wt/.git"),
    "worktree-renamed": ("mv wt wt-old && mkdir wt && echo 'gitdir: /{evil}' > wt/.git", "wt/.git"),
    "submodule-dotgit-file": ("echo 'gitdir: /{evil}' > mod/.git", "mod/.git"),
    "submodule-dotgit-renamed": ("mv mod/.git mod/dotgit && echo 'gitdir: /{evil}' > mod/.git", "mod/.git"),
    "submodule-hook": ("echo {evil} > .git/modules/mod/hooks/pre-commit", ".git/modules/mod/hooks/pre-commit"),
    "submodule-config": (r"printf '[core]\n\tfsmonitor = {evil}\n' >> .git/modules/mod/config",
                         ".git/modules/mod/config"),
}


@pytest.mark.parametrize("name", list(PROTECTED_ATTACKS))
def test_write_protected_path(senv, repo, name):
    attack, planted = PROTECTED_ATTACKS[name]
    script = "set -e; echo ok > control; " + attack.format(evil=EVIL)
    senv.finish()
    before = snapshot(repo)
    inside = senv.sh(script)
    ran(inside)
    assert (repo / "control").exists(), f"the command did not run: {out(inside)}"
    assert inside.returncode != 0, f"attack {name!r} worked inside: {out(inside)}"
    after = snapshot(repo)
    assert after == before, f"host workspace changed: {sorted(set(after.items()) ^ set(before.items()))}"
    (repo / "control").unlink()
    outside = senv.sh(script, sandboxed=False)
    assert outside.returncode == 0, out(outside)
    assert EVIL in (repo / planted).read_text()


def test_protected_paths_leave_normal_git_work_alone(senv, repo):
    """Control: the protections do not make the repository unusable."""
    script = ("set -e; export GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@x "
              "GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@x; echo change >> README; "
              "git -c safe.directory='*' commit -qam change; git -c safe.directory='*' log --oneline | wc -l")
    inside = senv.sh(script)
    assert inside.returncode == 0, out(inside)
    assert inside.stdout.strip() == b"2"


# --------------------------------------------------------------------------
# 5. secret environment variables

SECRET_VARS = {"GITHUB_TOKEN": "ghp_" + uuid.uuid4().hex, "AWS_SECRET_ACCESS_KEY": token(),
               "MY_API_KEY": token(), "DATABASE_URL": "postgres://u:" + token() + "@localhost/db"}


def test_secret_env_vars_removed(senv):
    env = senv.environ(FOO="bar", **SECRET_VARS)
    outside, inside = both(senv, "env", env=env)
    assert outside.returncode == 0 and inside.returncode == 0, out(inside)
    outside_env = dict(line.split("=", 1) for line in outside.stdout.decode().splitlines() if "=" in line)
    inside_text = inside.stdout.decode()
    inside_env = dict(line.split("=", 1) for line in inside_text.splitlines() if "=" in line)
    for name, value in SECRET_VARS.items():
        assert outside_env.get(name) == value
        assert name not in inside_env
        assert value not in inside_text
    assert outside_env.get("FOO") == "bar" and inside_env.get("FOO") == "bar"


# --------------------------------------------------------------------------
# 6./7. host network services: loopback TCP and unix sockets

CLIENT = r"""
import socket, sys
kind, addr = sys.argv[1], sys.argv[2]
if kind == "unix":
    fam, target = socket.AF_UNIX, ("\0" + addr[1:] if addr.startswith("@") else addr)
else:
    fam = socket.AF_INET6 if kind == "tcp6" else socket.AF_INET
    target = (addr, int(sys.argv[3]))
s = socket.socket(fam, socket.SOCK_STREAM)
s.settimeout(3)
try:
    s.connect(target)
    print("GOT", s.recv(200).decode())
except OSError as e:
    print("ERR", type(e).__name__, e.errno)
    sys.exit(3)
"""


class Server:
    """A one-banner stream server owned by the test; bounded in time."""

    def __init__(self, family: int, address, chown: tuple[int, int] | None = None) -> None:
        self.banner = "banner-" + uuid.uuid4().hex
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(address)
        if family == socket.AF_UNIX and isinstance(address, str) and chown:
            os.chown(address, *chown)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.address = self.sock.getsockname()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        deadline = time.monotonic() + 120
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                try:
                    conn.sendall(self.banner.encode())
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        self.sock.close()


def connect_both(senv, server: Server, *client_args: str):
    cmd = [PY, "-c", CLIENT, *client_args]
    inside = senv.run(cmd)
    outside = senv.run(cmd, sandboxed=False)
    return outside, inside


def assert_blocked(server: Server, outside, inside) -> None:
    assert outside.returncode == 0 and f"GOT {server.banner}" in outside.stdout.decode(), out(outside)
    ran(inside)
    assert inside.returncode == 3, out(inside)
    assert server.banner not in out(inside)


def test_host_loopback_tcp(senv):
    server = Server(socket.AF_INET, ("127.0.0.1", 0))
    try:
        outside, inside = connect_both(senv, server, "tcp", "127.0.0.1", str(server.address[1]))
        assert_blocked(server, outside, inside)
    finally:
        server.close()


def test_host_loopback_tcp6(senv):
    try:
        server = Server(socket.AF_INET6, ("::1", 0))
    except OSError as exc:
        pytest.skip(f"::1 is not available on this host: {exc}")
    try:
        outside, inside = connect_both(senv, server, "tcp6", "::1", str(server.address[1]))
        assert_blocked(server, outside, inside)
    finally:
        server.close()


@pytest.mark.parametrize("rel", [".local/share/app/agent.sock", ".docker/run/docker.sock"])
def test_host_unix_socket_under_home(senv, who, rel):
    path = senv.home / rel
    path.parent.mkdir(parents=True)
    senv.finish()
    server = Server(socket.AF_UNIX, str(path), chown=(who.uid, who.gid))
    try:
        outside, inside = connect_both(senv, server, "unix", str(path))
        assert_blocked(server, outside, inside)
    finally:
        server.close()


def test_host_abstract_unix_socket(senv):
    name = "sbx-attack-" + uuid.uuid4().hex
    server = Server(socket.AF_UNIX, "\0" + name)
    try:
        outside, inside = connect_both(senv, server, "unix", "@" + name)
        assert_blocked(server, outside, inside)
    finally:
        server.close()


# --------------------------------------------------------------------------
# 8. host processes


def test_host_process_invisible_and_unsignalable(senv, who):
    # a distinctive argument, so `ps` output can be searched for it
    arg = f"{60 + uuid.uuid4().int % 1000 / 1000:.3f}"
    proc = subprocess.Popen(who.prefix() + ["sleep", arg], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pid = proc.pid
        # setpriv execs sleep: wait (bounded) until the pid shows the sleep
        for _ in range(100):
            try:
                if f"sleep\0{arg}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    break
            except OSError:
                pass
            time.sleep(0.02)
        else:
            pytest.fail("the host sleep did not start")
        checks = (f'kill -0 {pid} 2>/dev/null && echo KILL-OK; '
                  f'test -e /proc/{pid} && echo PROC-OK; '
                  f'ps -eo pid=,args= | awk -v a={arg} \'$2 == "sleep" && $3 == a {{print "PS-OK"}}\'; true')
        outside, inside = both(senv, checks)
        assert outside.returncode == 0 and inside.returncode == 0, out(inside)
        for marker in (b"KILL-OK", b"PROC-OK", b"PS-OK"):
            assert marker in outside.stdout, out(outside)
            assert marker not in inside.stdout, out(inside)
        # a real signal must not arrive either
        inside = senv.sh(f"kill -TERM {pid}")
        ran(inside)
        assert inside.returncode != 0
        assert proc.poll() is None, "the host process was killed from inside the sandbox"
    finally:
        proc.kill()
        proc.wait(timeout=5)


# --------------------------------------------------------------------------
# 9. /run


def test_run_is_empty(senv):
    outside, inside = both(senv, "ls -A /run")
    assert outside.returncode == 0
    if not outside.stdout.strip():
        pytest.skip("the host's /run is empty: nothing to hide")
    assert inside.returncode == 0, out(inside)
    assert inside.stdout.strip() == b""
    # and nothing can be planted there for later
    inside = senv.sh(f"echo {EVIL} > /run/planted")
    ran(inside)
    assert inside.returncode != 0
    assert not Path("/run/planted").exists()


# --------------------------------------------------------------------------
# 10. fail closed


def assert_refused(r: subprocess.CompletedProcess, marker: Path, *words: str) -> str:
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 125, out(r)
    assert "Traceback" not in err, err
    assert not marker.exists(), "the command ran although the sandbox refused"
    lines = [line for line in err.splitlines() if line.startswith("sandbox:")]
    assert len(lines) == 1, err
    for word in words:
        assert word.lower() in lines[0].lower(), err
    return lines[0]


def test_missing_bwrap(senv):
    marker = senv.ws / "ran"
    r = senv.run(["touch", str(marker)], env=senv.environ(SANDBOX_BWRAP="/nonexistent/bwrap"))
    assert_refused(r, marker, "bwrap", "install")
    # control: the same command runs with bwrap present
    r = senv.run(["touch", str(marker)])
    assert r.returncode == 0, out(r)
    assert marker.exists()


@pytest.mark.parametrize("kind", ["missing", "bad-toml", "unknown-key"])
def test_bad_profile(senv, kind):
    marker = senv.ws / "ran"
    profile = senv.base / "p.toml"
    if kind == "bad-toml":
        profile.write_text("[filesystem\nworkspace = 'write'\n")
    elif kind == "unknown-key":
        profile.write_text("extends = 'default'\n[filesystem]\ndeny_reed = ['/x']\n")
    r = senv.run(["touch", str(marker)], args=["--profile", str(profile)])
    assert_refused(r, marker, "profile")


@pytest.mark.parametrize("where", ["root", "home"])
def test_refused_workspace(senv, where):
    # where the command could write if the refused workspace were accepted
    marker = (senv.ws if where == "root" else senv.home) / "ran"
    ws = "/" if where == "root" else str(senv.home)
    r = senv.run(["touch", str(marker)], args=["--workspace", ws])
    line = assert_refused(r, marker, "workspace")
    assert ("whole system" if where == "root" else "home directory") in line
    # started from inside $HOME itself, without --workspace
    if where == "home":
        r = senv.run(["touch", str(marker)], cwd=senv.home)
        assert_refused(r, marker, "home directory")


CLONE_NEWUSER = 0x10000000


def _userns_blocker():
    """A container-like seccomp filter: no new user namespaces (built in the parent)."""
    import pyseccomp as sc

    f = sc.SyscallFilter(defaction=sc.ALLOW)
    # the flags are compared masked, so high bits cannot sneak past the rule
    f.add_rule(sc.ERRNO(errno.EPERM), "unshare", sc.Arg(0, sc.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
    f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
    # clone3 passes its flags in memory, which seccomp cannot read: refuse it
    # as Docker does, so callers fall back to clone()
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    return f


def test_blocked_user_namespaces(senv, who):
    filt = _userns_blocker()
    marker = senv.ws / "ran"
    senv.finish()

    def under_filter(argv, **kw):
        return subprocess.run(who.prefix() + argv, cwd=senv.ws, env=senv.environ(), capture_output=True,
                              timeout=60, preexec_fn=filt.load, **kw)

    # control: the filter really stops bwrap (so 125 below is for this reason)
    probe = under_filter(["bwrap", "--unshare-user", "--ro-bind", "/", "/", "true"])
    assert probe.returncode != 0, out(probe)
    probe = senv.run(["bwrap", "--unshare-user", "--ro-bind", "/", "/", "true"], sandboxed=False)
    assert probe.returncode == 0, out(probe)

    # a profile that requires bwrap's guarantees fails closed (docs/fallback.md)
    full = senv.base / "full.toml"
    full.write_text('extends = "default"\nrequire = "full"\n')
    senv.finish()
    r = under_filter([sandbox_exe(), "run", "--profile", str(full), "--", "touch", str(marker)])
    assert_refused(r, marker, "namespace", 'require = "full"')
    # the default profile runs it under the fallback, and says so first
    r = under_filter([sandbox_exe(), "run", "--", "touch", str(marker)])
    assert r.returncode == 0 and marker.exists(), out(r)
    assert "sandbox: fallback:" in r.stderr.decode(), out(r)


def test_secrets_of_the_account_home_are_masked_when_HOME_points_elsewhere(senv):
    """Red-team finding: with HOME overridden (sudo without -H, CI), the real home's
    secrets were readable.  ${home} entries now cover the password-database home too.
    (Checked through the resolved policy: planting files in the real home would race
    with the other tests running in parallel.)"""
    import json
    import pwd

    real_home = pwd.getpwuid(senv.who.uid).pw_dir
    senv.finish()
    out = subprocess.run(senv.who.prefix() + [sandbox_exe(), "explain", "--json"], cwd=senv.ws,
                         env=senv.environ(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    deny = json.loads(out.stdout)["policy"]["deny_read"]
    assert str(senv.home / ".ssh") in deny  # $HOME, the fake one
    assert os.path.join(real_home, ".ssh") in deny  # and the account's real home
    assert os.path.join(real_home, ".netrc") in deny


def test_credentials_in_url_values_do_not_reach_the_command(senv):
    """A proxy or index URL with a password in it is a secret, whatever the variable is called."""
    env = senv.environ(HTTPS_PROXY="http://me:HUNTER2@proxy.example.invalid:3128",
                       PIP_INDEX_URL="https://me:HUNTER2@pypi.example.invalid/simple")
    outside = senv.run(["env"], env=env, sandboxed=False)
    assert b"HUNTER2" in outside.stdout
    inside = senv.run(["env"], env=env)
    assert inside.returncode == 0
    assert b"HUNTER2" not in inside.stdout
