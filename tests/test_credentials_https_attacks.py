"""Red team: TLS inspection and credentials together, byte by byte.

A raw client inside the real sandbox (``https_support.RAW_CLIENT``) opens
a CONNECT tunnel through the proxy, does TLS with the server name it
chooses, and sends exactly the bytes of each attack: pipelined requests,
duplicate and folded headers, trailers, overrides, HTTP/2, other names,
IP addresses, case and trailing dots.  The loopback origin logs what
reaches it.  Every attack that carries the attacker's key is first sent
straight to the origin, where it arrives with the key: the test can fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from egress_support import proxy_profile
from https_support import OPENSSL, RAW_CLIENT, TLSOrigin

PY = "/usr/bin/python3"
pytestmark = pytest.mark.skipif(OPENSSL is None or not os.path.exists(PY),
                                reason="openssl and /usr/bin/python3 are needed")

REAL = "sk-ant-api03-REALsecretVALUE0123456789abcdefghijklmnopqrstuv"
ATTACKER = "sk-ant-api03-ATTACKERkey9876543210zyxwvutsrqponmlkjihgfedcba"
H = "Host: api.test:{port}\r\n"
ZERO = "content-length: 0\r\n\r\n"
OWN = "POST /v1/messages HTTP/1.1\r\n" + H + "x-api-key: {PH}\r\n" + ZERO


@pytest.fixture
def origin(senv):
    srv = TLSOrigin(senv.base)
    yield srv
    srv.close()


def _profile(senv, origin, header: str = "x-api-key", scheme: str = "") -> str:
    rules = (f'[[network.allow]]\nhost = "api.test"\nports = [{origin.port}]\ninspect = true\n'
             f'upstream_ca = "{origin.cert}"\n\n[[network.credentials]]\nhost = "api.test"\n'
             f'from_env = "REAL_API_KEY"\nenv = "API_KEY"\nheader = "{header}"\n'
             f'scheme = "{scheme}"\nmethods = ["POST"]\npaths = ["/v1/messages"]\n')
    return str(proxy_profile(senv, rules, {"api.test": "127.0.0.1"}))


def _inside(senv, prof: str, authority: str, sni: str, data: str):
    (senv.ws / "raw.py").write_text(RAW_CLIENT)
    out = senv.run([PY, "raw.py", authority, sni, data.encode("unicode_escape").decode()],
                   args=["--profile", prof], env=senv.environ(REAL_API_KEY=REAL))
    assert out.returncode == 0, out.stderr
    return out.stdout.decode(), out.stderr.decode()


def _direct(senv, origin, data: str) -> None:
    """The same bytes straight to the origin (no sandbox): the attack works there."""
    (senv.ws / "raw.py").write_text(RAW_CLIENT)
    shutil.copy(origin.cert, senv.ws / "origin.pem")
    subprocess.run([PY, "raw.py", f"127.0.0.1:{origin.port}", "api.test",
                    data.encode("unicode_escape").decode(), "origin.pem", "direct"],
                   cwd=senv.ws, capture_output=True, timeout=60, check=True)


def _no_leak(origin) -> None:
    """The attacker's key reached nothing; the real value went only to the
    session's own, in-scope call."""
    for s in origin.seen:
        text = json.dumps(s["headers"]) + s["path"] + s["body"].decode("latin-1")
        assert ATTACKER not in text and "ATTACKER" not in text, s
        if REAL in text:
            assert (s["method"], s["path"]) == ("POST", "/v1/messages"), s
            assert [k for k, _ in s["headers"]].count("x-api-key") == 1, s
            assert not any(k.startswith("x-original") or "override" in k
                           for k, _ in s["headers"]), s


# (name, bytes sent inside the tunnel, what the command must read back,
#  what reaches the origin as (method, path) pairs)
ATTACKS = [
    ("pipelined: a foreign request after the session's own, in one TLS write",
     OWN + "POST /v1/files HTTP/1.1\r\n" + H + f"x-api-key: {ATTACKER}\r\n" + ZERO,
     "origin saw POST /v1/messages", [("POST", "/v1/messages")]),
    ("keep-alive: a foreign request after an allowed anonymous one",
     "GET /a HTTP/1.1\r\n" + H + "\r\n" + "POST /v1/files HTTP/1.1\r\n" + H
     + f"x-api-key: {ATTACKER}\r\n" + ZERO,
     "origin saw GET /a", [("GET", "/a")]),
    ("duplicate header: the placeholder, then the attacker's key",
     "POST /v1/messages HTTP/1.1\r\n" + H + "x-api-key: {PH}\r\n"
     + f"x-api-key: {ATTACKER}\r\n" + ZERO, "foreign credential", []),
    ("duplicate header: the attacker's key, then the placeholder",
     "POST /v1/messages HTTP/1.1\r\n" + H + f"X-API-KEY: {ATTACKER}\r\n"
     + "x-api-key: {PH}\r\n" + ZERO, "foreign credential", []),
    ("a list value: placeholder, attacker",
     "POST /v1/messages HTTP/1.1\r\n" + H + "x-api-key: {PH}, " + ATTACKER + "\r\n" + ZERO,
     "foreign credential", []),
    ("a folded continuation line carrying the key",
     "POST /v1/messages HTTP/1.1\r\n" + H + "x-api-key: {PH}\r\n " + ATTACKER + "\r\n" + ZERO,
     "obs-fold", []),
    ("the key in a chunked body's trailer",
     "POST /v1/files HTTP/1.1\r\n" + H + "transfer-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n"
     + f"x-api-key: {ATTACKER}\r\nAuthorization: Bearer {ATTACKER}\r\n\r\n",
     "origin saw POST /v1/files", [("POST", "/v1/files")]),
    ("the key in a header the Connection header names (hop-by-hop)",
     "POST /v1/files HTTP/1.1\r\n" + H + "connection: keep-alive, x-api-key\r\n"
     + f"x-api-key: {ATTACKER}\r\n" + ZERO, "origin saw POST /v1/files", [("POST", "/v1/files")]),
    ("the key under another credential-like name",
     "POST /v1/messages HTTP/1.1\r\n" + H + "x-api-key: {PH}\r\n"
     + f"X-Forwarded-Authorization: {ATTACKER}\r\n" + ZERO, "foreign credential", []),
    ("the key in a query parameter of the in-scope endpoint",
     "POST /v1/messages?anthropic_api_key=" + ATTACKER + " HTTP/1.1\r\n" + H
     + "x-api-key: {PH}\r\n" + ZERO, "foreign credential", []),
    ("h2c upgrade with the key",
     "POST /v1/files HTTP/1.1\r\n" + H + f"x-api-key: {ATTACKER}\r\nUpgrade: h2c\r\n"
     "Connection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n" + ZERO,
     "X-Sandbox-Blocked", []),
    ("HTTP/2 preface inside the tunnel", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
     "HTTP/2 is not supported", []),
    ("Host header naming another host",
     "POST /v1/files HTTP/1.1\r\nHost: evil.test\r\n" + f"x-api-key: {ATTACKER}\r\n" + ZERO,
     "Host header does not match", []),
    ("absolute-form target naming another host",
     "POST https://evil.test/v1/files HTTP/1.1\r\nHost: evil.test\r\n"
     + f"x-api-key: {ATTACKER}\r\n" + ZERO, "origin form", []),
    ("a nested CONNECT inside the tunnel",
     "CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n", "CONNECT inside", []),
    ("the key under x_api_key (CGI and WSGI servers read _ as -) beside the placeholder",
     "POST /v1/messages HTTP/1.1\r\n" + H + "x-api-key: {PH}\r\n" + f"x_api_key: {ATTACKER}\r\n"
     + ZERO, "foreign credential", []),
    ("Expect: 100-continue with the key (refused before anything connects)",
     "POST /v1/files HTTP/1.1\r\n" + H + f"x-api-key: {ATTACKER}\r\nExpect: 100-continue\r\n"
     "content-length: 4\r\n\r\ndata", "foreign credential", []),
    ("HTTP/1.0 with the key",
     "POST /v1/files HTTP/1.0\r\n" + H + f"x-api-key: {ATTACKER}\r\n" + ZERO,
     "foreign credential", []),
    ("two Host headers, the second another host",
     "POST /v1/files HTTP/1.1\r\n" + H + "Host: evil.test\r\n" + f"x-api-key: {ATTACKER}\r\n"
     + ZERO, "multiple Host", []),
    # the fixed ones: before, the real value went out with these
    ("method override on the in-scope call (fixed)",
     "POST /v1/messages HTTP/1.1\r\n" + H + "x-api-key: {PH}\r\nX-HTTP-Method-Override: DELETE\r\n"
     + ZERO, "x-http-method-override is not allowed", []),
    ("path override on the in-scope call (fixed)",
     "POST /v1/messages HTTP/1.1\r\n" + H + "x-api-key: {PH}\r\nX-Original-URL: /v1/files\r\n"
     + ZERO, "x-original-url is not allowed", []),
]


@pytest.mark.parametrize("name,data,expect,reached", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_attack_through_an_inspected_tunnel(senv, origin, name, data, expect, reached):
    data = data.replace("{port}", str(origin.port))
    if ATTACKER in data:
        _direct(senv, origin, data.replace("{PH}", "x"))
        assert any(ATTACKER in json.dumps(s["headers"]) + s["path"] for s in origin.seen) or \
            "trailer" in name or "hop-by-hop" in name or "folded" in name, origin.seen
        origin.seen.clear()
    out, err = _inside(senv, _profile(senv, origin), f"api.test:{origin.port}", "api.test", data)
    assert "CONNECT: HTTP/1.1 200" in out, (out, err)
    assert expect in out, (out, err)
    assert [(s["method"], s["path"]) for s in origin.seen] == reached, (out, err)
    _no_leak(origin)
    assert REAL not in out + err


@pytest.mark.parametrize("authority,sni,expect", [
    ("api.test:{port}", "evil.test", "TLSERR"),  # SNI other than the CONNECT host
    ("127.0.0.1:{port}", "", "host not allowed"),  # the inspected host's address
    ("127.0.0.1:{port}", "api.test", "host not allowed"),
    ("api.test:1", "api.test", "not allowed"),  # another port of the host
    ("[::1]:{port}", "", "not allowed"),  # loopback by its IPv6 literal
])
def test_other_names_addresses_and_ports_are_refused(senv, origin, authority, sni, expect):
    authority = authority.format(port=origin.port)
    data = "POST /v1/files HTTP/1.1\r\nHost: " + authority + "\r\n" + \
        f"x-api-key: {ATTACKER}\r\n" + ZERO
    out, err = _inside(senv, _profile(senv, origin), authority, sni, data)
    assert expect in out, (out, err)
    assert origin.seen == []


@pytest.mark.parametrize("authority", ["API.TEST:{port}", "Api.Test.:{port}", "api.test.:{port}"])
def test_case_and_trailing_dot_are_the_same_host(senv, origin, authority):
    """Another spelling of the host is the same host to the rules and to the
    credential check: the foreign key is refused, the session's call works."""
    authority = authority.format(port=origin.port)
    attack = ("POST /v1/files HTTP/1.1\r\nHost: " + authority + "\r\n"
              + f"x-api-key: {ATTACKER}\r\n" + ZERO)
    own = ("POST /v1/messages HTTP/1.1\r\nHost: " + authority + "\r\nx-api-key: {PH}\r\n"
           + ZERO)
    prof = _profile(senv, origin)
    sni = authority.rpartition(":")[0]
    out, _ = _inside(senv, prof, authority, sni, attack)
    assert "foreign credential" in out and origin.seen == []
    out, _ = _inside(senv, prof, authority, sni, own)
    assert "origin saw POST /v1/messages" in out
    assert [v for k, v in origin.seen[0]["headers"] if k == "x-api-key"] == [REAL]


def test_placeholder_is_not_replaced_for_a_lower_case_method(senv, origin):
    """``post`` is not the entry's ``POST``: the placeholder is dropped, so
    a case-folding origin never gets the real value out of scope."""
    data = "post /v1/messages HTTP/1.1\r\n" + H.format(port=origin.port) + "x-api-key: {PH}\r\n" \
        + ZERO
    out, err = _inside(senv, _profile(senv, origin), f"api.test:{origin.port}", "api.test", data)
    assert REAL not in out + err
    # the origin (http.server) answers 501 to "post" without logging it: look at the wire
    assert "501" in out or "403" in out, out


@pytest.mark.parametrize("pair", ["{PH}:" + "ghp_" + "Att4ckerX" * 4,
                                  "ghp_" + "Att4ckerX" * 4 + ":{PH}"])
def test_basic_with_a_second_token_beside_the_placeholder(senv, origin, pair):
    """Fixed: the other half of a Basic pair went upstream next to the real value."""
    token = "ghp_" + "Att4ckerX" * 4
    prof = _profile(senv, origin, header="authorization", scheme="Basic")
    script = (
        "import base64, os, subprocess, sys\n"
        f"pair = {pair!r}.replace('{{PH}}', os.environ['API_KEY'])\n"
        "auth = base64.b64encode(pair.encode()).decode()\n"
        f"data = 'POST /v1/messages HTTP/1.1\\r\\nHost: api.test:{origin.port}\\r\\n'"
        " + 'Authorization: Basic ' + auth + '\\r\\ncontent-length: 0\\r\\n\\r\\n'\n"
        f"subprocess.run([sys.executable, 'raw.py', 'api.test:{origin.port}', 'api.test',"
        " data.encode('unicode_escape').decode()])\n")
    (senv.ws / "raw.py").write_text(RAW_CLIENT)
    out = senv.run([PY, "-c", script], args=["--profile", prof],
                   env=senv.environ(REAL_API_KEY=REAL))
    text = out.stdout.decode()
    assert "foreign credential" in text, (text, out.stderr)
    assert origin.seen == []
    assert token not in out.stderr.decode()
    # the placeholder with a harmless other half still works: the built-in
    # github profile's push (test_builtin_profiles_https) sends x-access-token:<placeholder>


def test_plain_http_to_an_inspected_port_is_refused(senv, origin):
    """Fixed: ``http://host:port`` to a port whose rule says inspect = true
    went out as plain HTTP, and the placeholder became the real value on the
    wire in clear (for the built-in anthropic-api profile:
    ``http://api.anthropic.com:443/v1/messages``), to an address no
    certificate was checked for.  Here a plain-HTTP origin sits on the
    inspected port and logs what arrives."""
    from test_credentials import Origin as PlainOrigin

    plain = PlainOrigin()
    try:
        rules = (f'[[network.allow]]\nhost = "api.test"\nports = [{plain.port}]\ninspect = true\n'
                 f'upstream_ca = "{origin.cert}"\n\n[[network.credentials]]\nhost = "api.test"\n'
                 'from_env = "REAL_API_KEY"\nenv = "API_KEY"\nheader = "x-api-key"\n')
        prof = proxy_profile(senv, rules, {"api.test": "127.0.0.1"})
        out = senv.run(["sh", "-c", "curl -sS -o /dev/null -w '%{http_code}' -X POST -H "
                        f"\"x-api-key: $API_KEY\" -d hi http://api.test:{plain.port}/v1/messages"],
                       args=["--profile", str(prof)], env=senv.environ(REAL_API_KEY=REAL))
        assert out.stdout == b"403", out.stderr
        assert plain.seen == []
        assert "which a rule marks inspect = true (TLS): use https://" in out.stderr.decode()
    finally:
        plain.close()
