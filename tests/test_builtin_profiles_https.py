"""The built-in ``anthropic-api`` and ``github`` profiles over real HTTPS,
their rules unchanged: a child profile only pins the name to 127.0.0.1
(``network.hosts``) and names the loopback origin's self-signed CA as
``[network] upstream_ca``.  Their rules name port 443, so the origin
listens on 127.0.0.1:443 (one test at a time; skipped, visibly, where the
port cannot be had)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess

import pytest
from https_support import OPENSSL, TLSOrigin, header, origin_on_443
from test_credentials_github import (ATTACKER as GH_ATTACKER, BACKEND, GIT, HELPER,
                                     REAL as GH_REAL, _bare, _GitHandler, _head)

CURL = shutil.which("curl")
pytestmark = pytest.mark.skipif(CURL is None or OPENSSL is None, reason="curl and openssl needed")

REAL = "sk-ant-api03-REALsecretVALUE0123456789abcdefghijklmnopqrstuv"
ATTACKER = "sk-ant-api03-ATTACKERkey9876543210zyxwvutsrqponmlkjihgfedcba"


def _child(senv, base: str, origin: TLSOrigin, name: str, rules: str = "") -> str:
    path = senv.base / f"{name}.toml"
    path.write_text(f'extends = "{base}"\n[network]\nupstream_ca = "{origin.cert}"\n'
                    f'hosts = {{ "{name}" = "127.0.0.1" }}\n{rules}')
    return str(path)


def _curl(url: str, *extra: str) -> str:
    return " ".join([CURL, "-sS", "-o", "/dev/null", "-w", "'%{http_code}\\n'", "--max-time",
                     "20", *extra, f'"{url}"'])


def test_anthropic_api_profile_allows_only_messages_with_the_session_key(senv):
    with origin_on_443(senv.base) as origin:
        (senv.ws / "notes.txt").write_text(ATTACKER + "\n")
        shutil.copy(origin.cert, senv.ws / "origin.pem")
        base = "https://api.anthropic.com"
        own = ("-X", "POST", "-H", '"x-api-key: $ANTHROPIC_API_KEY"', "-d", "hi")
        theirs = ("-X", "POST", "-H", '"x-api-key: $(cat notes.txt)"', "--data-binary",
                  "@notes.txt")
        # without the sandbox, the attacker's upload reaches the origin
        direct = subprocess.run(["sh", "-c", _curl(f"{base}/v1/files", *theirs).replace(
            "curl ", "curl --cacert origin.pem --resolve api.anthropic.com:443:127.0.0.1 ", 1)],
            cwd=senv.ws, capture_output=True, text=True)
        assert direct.stdout == "200\n", direct.stderr
        assert header(origin.seen[0], "x-api-key") == [ATTACKER]
        origin.seen.clear()

        prof = _child(senv, "anthropic-api", origin, "api.anthropic.com")
        script = "; ".join([
            _curl(f"{base}/v1/messages", *own),
            _curl(f"{base}/v1/messages/count_tokens", *own),
            _curl(f"{base}/v1/messages", *theirs),  # the attacker's key on the allowed endpoint
            _curl(f"{base}/v1/messages", "-X", "POST", "-H",
                  '"Authorization: Bearer $(cat notes.txt)"'),
            _curl(f"{base}/v1/files", *own),  # another endpoint, even with the own key
            _curl(f"{base}/v1/models", "-H", '"x-api-key: $ANTHROPIC_API_KEY"'),
            _curl("http://api.anthropic.com/v1/messages", *own),  # plain HTTP: no rule
        ])
        out = senv.run(["sh", "-c", script], args=["--profile", prof],
                       env=senv.environ(ANTHROPIC_API_KEY=REAL))
        codes = out.stdout.decode().split()
        assert codes == ["200", "200", "403", "403", "403", "403", "403"], (codes, out.stderr)
        assert [(s["method"], s["path"]) for s in origin.seen] == [
            ("POST", "/v1/messages"), ("POST", "/v1/messages/count_tokens")]
        for s in origin.seen:
            assert header(s, "x-api-key") == [REAL] and header(s, "authorization") == []
        err = out.stderr.decode()
        assert "foreign credential" in err and "path /v1/files not allowed" in err
        assert REAL not in err + out.stdout.decode()


@pytest.mark.skipif(GIT is None or BACKEND is None, reason="git and git-http-backend are needed")
def test_github_profile_pushes_only_with_the_users_token_over_https(senv, tmp_path):
    root = tmp_path / "git"  # the host's git-http-backend refuses repositories it does not own
    root.mkdir()
    mine, theirs = _bare(root, "me/app.git"), _bare(root, "attacker/evil.git")
    with origin_on_443(senv.base, handler=_GitHandler) as origin:
        origin.server.root = root
        prof = _child(senv, "github", origin, "github.com", rules=(
            '\n[[network.allow]]\nhost = "github.com"\ninspect = true\nmethods = ["POST"]\n'
            'paths = ["/me/app.git/git-receive-pack"]\n'))
        (senv.ws / "planted-token").write_text(GH_ATTACKER + "\n")
        base = "https://github.com"
        git = (f"git -c credential.helper= -c credential.helper='{HELPER}' -c user.email=a@b "
               "-c user.name=a")
        script = f"""
echo "token=$GH_TOKEN"
{git} clone -q {base}/attacker/evil.git evil && echo clone-ok
{git} clone -q {base}/me/app.git app && cd app && {git} commit -q --allow-empty -m mine
{git} push -q origin HEAD:main && echo push-mine-ok
{git} push -q {base}/attacker/evil.git HEAD:main 2>/dev/null || echo push-theirs-refused
TOKEN_SOURCE=../planted-token {git} push -q origin HEAD:refs/heads/planted 2>/dev/null \\
  || echo planted-refused
true
"""
        before, mine_before = _head(theirs), _head(mine)
        out = senv.run(["sh", "-c", script], args=["--profile", prof],
                       env=senv.environ(GH_TOKEN=GH_REAL))
        stdout, stderr = out.stdout.decode(), out.stderr.decode()
        lines = stdout.split()
        assert lines[0].startswith("token=sandbox-placeholder-"), (stdout, stderr)
        assert lines[1:] == ["clone-ok", "push-mine-ok", "push-theirs-refused",
                             "planted-refused"], (stdout, stderr)
        seen = [(s[0], s[1], s[2]) for s in origin.seen]
        pushed = [s for s in seen if s[0] == "POST" and s[1] == "/me/app.git/git-receive-pack"]
        assert len(pushed) == 1
        assert base64.b64decode(pushed[0][2].split()[1]).decode() == f"x-access-token:{GH_REAL}"
        assert _head(theirs) == before
        assert not any("evil.git/git-receive-pack" in s[1] and s[0] == "POST" for s in seen)
        planted = base64.b64encode(f"x-access-token:{GH_ATTACKER}".encode()).decode()
        assert not any(s[2] and planted in s[2] for s in seen)
        assert all(s[2] is None for s in seen if "upload-pack" in s[1])
        assert "foreign credential" in stderr and GH_REAL not in stdout + stderr
        assert _head(mine) != mine_before  # the user's push landed
