"""The built-in ``github`` profile's credential entry, with real git over
plain HTTP to a git smart-HTTP origin on the host's 127.0.0.1 (``github.com``
is pinned there by the test's profile, so nothing asks DNS).

What it must give: clone anything without a credential; push with the
user's own $GH_TOKEN (which the sandbox sees only as a placeholder) to a
repository the profile names; no push anywhere else; and a token planted
in the workspace pushes nowhere.  The real TLS path needs ``inspect``
(another branch); the proxy's per-request step is the same.
"""

from __future__ import annotations

import base64
import http.server
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

GIT = shutil.which("git")
BACKEND = next((p for p in ("/usr/lib/git-core/git-http-backend",
                            "/usr/libexec/git-core/git-http-backend") if os.path.exists(p)), None)
pytestmark = pytest.mark.skipif(GIT is None or BACKEND is None,
                                reason="git and git-http-backend are needed")

REAL = "ghp_" + "R3alT0ken" * 4
ATTACKER = "ghp_" + "Att4ckerX" * 4


class _GitHandler(http.server.BaseHTTPRequestHandler):
    """git's smart HTTP through git-http-backend; pushes need the real token."""

    def log_message(self, *args) -> None:
        pass

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        auth = self.headers.get("Authorization")
        self.server.seen.append((self.command, self.path, auth))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if path.endswith("/git-receive-pack") or "service=git-receive-pack" in query:
            if not auth:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            password = base64.b64decode(auth.split(" ", 1)[1]).decode().partition(":")[2]
            if password != REAL:
                self.send_response(403)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        env = {"GIT_PROJECT_ROOT": str(self.server.root), "GIT_HTTP_EXPORT_ALL": "1",
               "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command,
               "CONTENT_TYPE": self.headers.get("Content-Type", ""),
               "CONTENT_LENGTH": str(len(body)), "REMOTE_USER": "user",
               "REMOTE_ADDR": "127.0.0.1", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
               "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(self.server.root)}
        out = subprocess.run([BACKEND], input=body, env=env, capture_output=True,
                             timeout=60).stdout
        sep = b"\r\n\r\n" if b"\r\n\r\n" in out else b"\n\n"
        head, _, payload = out.partition(sep)
        status = 200
        headers = []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _serve


def _bare(root: Path, name: str) -> Path:
    repo = root / name
    repo.parent.mkdir(parents=True, exist_ok=True)
    work = root / (name + ".work")
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(root)}
    for args in (["init", "-q", "-b", "main", str(work)],
                 ["-C", str(work), "-c", "user.email=o@x", "-c", "user.name=o", "commit", "-q",
                  "--allow-empty", "-m", "first"],
                 ["clone", "-q", "--bare", str(work), str(repo)]):
        subprocess.run([GIT, *args], check=True, env=env, capture_output=True)
    return repo


def _head(repo: Path) -> str:
    return subprocess.run([GIT, "--git-dir", str(repo), "rev-parse", "main"], check=True,
                          capture_output=True, text=True,
                          env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}).stdout.strip()


@pytest.fixture
def git_origin(tmp_path):
    root = tmp_path / "git"
    root.mkdir()
    mine, theirs = _bare(root, "me/app.git"), _bare(root, "attacker/evil.git")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GitHandler)
    server.daemon_threads = True
    server.seen, server.root = [], root
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.mine, server.theirs = mine, theirs
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


HELPER = ("!f() { echo username=x-access-token; echo \"password=$(cat \"$TOKEN_SOURCE\" "
          "2>/dev/null || echo \"$GH_TOKEN\")\"; }; f")


def test_github_profile_pushes_only_with_the_users_token_to_named_repos(senv, git_origin):
    port = git_origin.server_address[1]
    profile = senv.base / "gh-test.toml"
    profile.write_text(
        'extends = "github"\n\n[network]\nhosts = { "github.com" = "127.0.0.1" }\n\n'
        # the built-in's rules are for 443 with inspection; the same on the test's plain port
        f'[[network.allow]]\nhost = "github.com"\nports = [{port}]\nmethods = ["GET", "HEAD"]\n\n'
        f'[[network.allow]]\nhost = "github.com"\nports = [{port}]\nmethods = ["POST"]\n'
        'paths = ["/*/*/git-upload-pack"]\n\n'
        f'[[network.allow]]\nhost = "github.com"\nports = [{port}]\nmethods = ["POST"]\n'
        'paths = ["/me/app.git/git-receive-pack"]\n')
    (senv.ws / "planted-token").write_text(ATTACKER + "\n")
    base = f"http://github.com:{port}"
    git = f"git -c credential.helper= -c credential.helper='{HELPER}' -c user.email=a@b -c user.name=a"
    script = f"""
echo "token=$GH_TOKEN"
{git} clone -q {base}/attacker/evil.git evil && echo clone-ok
{git} clone -q {base}/me/app.git app && cd app && {git} commit -q --allow-empty -m mine
{git} push -q origin HEAD:main && echo push-mine-ok
{git} push -q {base}/attacker/evil.git HEAD:main 2>/dev/null || echo push-theirs-refused
TOKEN_SOURCE=../planted-token {git} push -q origin HEAD:refs/heads/planted 2>/dev/null \
  || echo planted-refused
true
"""
    before_theirs = _head(git_origin.theirs)
    out = senv.run(["sh", "-c", script], args=["--profile", str(profile)],
                   env=senv.environ(GH_TOKEN=REAL))
    stdout, stderr = out.stdout.decode(), out.stderr.decode()
    lines = stdout.split()
    assert lines[0].startswith("token=sandbox-placeholder-"), (stdout, stderr)
    assert lines[1:] == ["clone-ok", "push-mine-ok", "push-theirs-refused", "planted-refused"], (
        stdout, stderr)
    # the user's repository got the push, made with the real token
    pushed = [s for s in git_origin.seen if s[0] == "POST" and s[1].startswith("/me/app.git/git-receive")]
    assert len(pushed) == 1
    assert base64.b64decode(pushed[0][2].split()[1]).decode() == f"x-access-token:{REAL}"
    # nothing was pushed to the other repository, and the planted token reached nothing
    assert _head(git_origin.theirs) == before_theirs
    assert not any(s[0] == "POST" and "evil.git/git-receive-pack" in s[1] for s in git_origin.seen)
    planted = base64.b64encode(f"x-access-token:{ATTACKER}".encode()).decode()
    assert not any(s[2] and planted in s[2] for s in git_origin.seen)
    # reads carried no credential at all
    assert all(s[2] is None for s in git_origin.seen if "upload-pack" in s[1])
    assert "foreign credential" in stderr and REAL not in stdout + stderr
