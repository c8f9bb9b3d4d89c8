"""Red team: foreign credentials in query and path parameters spelled the way
real origins read them, through the real sandbox and a loopback origin.

The provenance step refused ``?key=...`` but let these through, each of
which some server stack reads as a ``key``/``api_key``/session parameter:

* ``?x=1;key=K``: ``;`` separates query parameters in Rack 2 and older
  Java/Python stacks;
* ``/v1/files;key=K``: a matrix parameter (JAX-RS ``@MatrixParam``, Spring
  ``@MatrixVariable``); ``;jsessionid=S`` is the servlet session in the URL;
* ``?api.key=K`` and ``?access%20token=K``: PHP reads both as ``api_key`` /
  ``access_token``;
* ``?key[]=K``: PHP, Rails and Node's ``qs`` read it as ``key``.

Each is shown reaching the origin without the sandbox, then refused (403,
nothing at the origin) inside, while the session's own call still works.
"""

from __future__ import annotations

import http.server
import subprocess

import pytest
from test_credentials import API_KEY_ENTRY, CURL, REAL, Origin, _curl, _profile, _run

# a key in no well-known format: only the parameter's name can give it away
KEY = "acct7f3e9attackerkey"

SPELLINGS = [
    f"/v1/files?x=1;key={KEY}",
    f"/v1/files;key={KEY}",
    f"/v1/files;jsessionid={KEY}",
    f"/v1/files?api.key={KEY}",
    f"/v1/files?access%20token={KEY}",
    f"/v1/files?key[]={KEY}",
]


@pytest.fixture
def origin():
    srv = Origin()
    yield srv
    srv.close()


def test_credential_parameters_in_every_spelling_are_refused(senv, origin):
    # without the sandbox each request reaches the origin, key and all
    for path in SPELLINGS:
        direct = subprocess.run(["sh", "-c", _curl(f"'http://127.0.0.1:{origin.port}{path}'",
                                                   "-g", "-X", "POST", "-d", "x")],
                                capture_output=True, text=True)
        assert direct.stdout == "200\n", (path, direct.stderr)
    assert [s["path"] for s in origin.seen] == SPELLINGS
    origin.seen.clear()

    profile = _profile(senv, origin.port, API_KEY_ENTRY.replace(
        'paths = ["/v1/messages"]', 'paths = ["/v1/messages", "/v1/files"]'))
    base = f"http://api.test:{origin.port}"
    script = "; ".join(
        [_curl(f"'{base}{path}'", "-g", "-X", "POST", "-d", "x") for path in SPELLINGS]
        + [_curl(f"'{base}/v1/messages?page=2;sort=asc'", "-X", "POST",
                 "-H", '"x-api-key: $API_KEY"', "-d", "hi")])
    out = _run(senv, profile, script, REAL_API_KEY=REAL)
    codes = out.stdout.decode().split()
    assert codes == ["403"] * len(SPELLINGS) + ["200"], (codes, out.stderr)
    assert [s["path"] for s in origin.seen] == ["/v1/messages?page=2;sort=asc"]
    assert origin.seen[0]["headers"]["x-api-key"] == REAL
    assert "foreign credential" in out.stderr.decode()


# a token in a well-known format (the attacker's), where the path check missed it
TOKEN = "sk-ant-api03-ATTACKERkey9876543210zyxwvutsrqponmlkjihgfedcba"
TOKEN_SPELLINGS = [
    "/v1/keys/%73" + TOKEN[1:],  # percent-encoded: the origin decodes the path
    f"/v1/keys/{TOKEN}.json",  # cut at the dot by the origin's router
    f"/v1/files?{TOKEN}",  # a bare query word, no '='
]


def test_well_known_tokens_in_encoded_or_suffixed_paths_are_refused(senv, origin):
    for path in TOKEN_SPELLINGS:
        direct = subprocess.run(["sh", "-c", _curl(f"'http://127.0.0.1:{origin.port}{path}'")],
                                capture_output=True, text=True)
        assert direct.stdout == "200\n", (path, direct.stderr)
    assert [s["path"] for s in origin.seen] == TOKEN_SPELLINGS
    origin.seen.clear()

    profile = _profile(senv, origin.port, API_KEY_ENTRY)
    base = f"http://api.test:{origin.port}"
    script = "; ".join(
        [_curl(f"'{base}{path}'") for path in TOKEN_SPELLINGS]
        + [_curl(f"{base}/v1/models/claude-3.5/index.html")])  # dotted paths still work
    out = _run(senv, profile, script, REAL_API_KEY=REAL)
    codes = out.stdout.decode().split()
    assert codes == ["403"] * len(TOKEN_SPELLINGS) + ["200"], (codes, out.stderr)
    assert [s["path"] for s in origin.seen] == ["/v1/models/claude-3.5/index.html"]


class _TraceHandler(http.server.BaseHTTPRequestHandler):
    """An origin with TRACE on (Apache's default ``TraceEnable On``): the
    request comes back as the body, headers and all."""

    def log_message(self, *args) -> None:
        pass

    def do_TRACE(self) -> None:
        self.server.seen.append({"method": "TRACE", "path": self.path,
                                 "headers": {k.lower(): v for k, v in self.headers.items()}})
        body = (self.requestline + "\r\n").encode() + bytes(self.headers)
        self.send_response(200)
        self.send_header("Content-Type", "message/http")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def trace_origin():
    srv = Origin()
    srv.server.RequestHandlerClass = _TraceHandler
    yield srv
    srv.close()


def test_trace_does_not_echo_the_real_value_back(senv, trace_origin):
    # an entry without methods: every request to the host is in scope
    entry = API_KEY_ENTRY.replace('methods = ["POST"]\n', "").replace(
        'paths = ["/v1/messages"]\n', "")
    profile = _profile(senv, trace_origin.port, entry)
    script = (f'{CURL} -sS --max-time 20 -X TRACE -H "x-api-key: $API_KEY" '
              f"http://api.test:{trace_origin.port}/v1/messages")
    out = _run(senv, profile, script, REAL_API_KEY=REAL)
    assert REAL not in out.stdout.decode(), "the real value came back into the sandbox"
    for seen in trace_origin.seen:
        assert seen["headers"].get("x-api-key") != REAL


def test_override_headers_do_not_carry_the_real_value_out_of_scope(senv, origin):
    """The entry is scoped to POST /v1/messages; the allow rule is not.  An
    override header makes the origin (many frameworks) serve another method
    or path than the one the scope was checked on, with the real key."""
    profile = _profile(senv, origin.port, API_KEY_ENTRY)
    base = f"http://api.test:{origin.port}"
    script = "; ".join([
        _curl(f"{base}/v1/messages", "-X", "POST", "-H", '"x-api-key: $API_KEY"',
              "-H", '"X-HTTP-Method-Override: DELETE"', "-d", "hi"),
        _curl(f"{base}/v1/messages", "-X", "POST", "-H", '"x-api-key: $API_KEY"',
              "-H", '"X-Original-URL: /v1/files"', "-d", "hi"),
        _curl(f"{base}/v1/messages", "-X", "POST", "-H", '"x-api-key: $API_KEY"', "-d", "hi"),
    ])
    out = _run(senv, profile, script, REAL_API_KEY=REAL)
    assert out.returncode == 0, out.stderr
    with_key = [s for s in origin.seen if s["headers"].get("x-api-key") == REAL]
    assert [s["headers"].get("x-http-method-override") or s["headers"].get("x-original-url")
            for s in with_key] == [None], with_key  # only the plain call in scope


def test_a_malformed_header_line_is_not_quoted_in_messages(senv, origin):
    """h11 quotes the line it cannot parse; the refusal reason went into the
    403 answer, stderr and the report with the header's value in it."""
    held = "ghp_" + "Q" * 36  # a token the command holds (its own, say)
    (senv.ws / "raw.py").write_text(
        "import os, socket, urllib.parse, sys\n"
        "p = urllib.parse.urlsplit(os.environ['http_proxy'])\n"
        "s = socket.create_connection((p.hostname, p.port))\n"
        f"h = 'api.test:{origin.port}'\n"
        f"s.sendall(('GET http://' + h + '/v1/x HTTP/1.1\\r\\nHost: ' + h + "
        f"'\\r\\nAuthorization : token {held}\\r\\n\\r\\n').encode())\n"
        "print(s.recv(4096).decode().splitlines()[0])\n")
    profile = _profile(senv, origin.port, API_KEY_ENTRY)
    report = senv.base / "report.json"
    out = _run(senv, profile, "python3 raw.py", report=report, REAL_API_KEY=REAL)
    assert "400" in out.stdout.decode(), (out.stdout, out.stderr)
    assert origin.seen == []
    assert "malformed request" in out.stderr.decode()
    for text in (out.stderr.decode(), report.read_text()):
        assert held not in text
