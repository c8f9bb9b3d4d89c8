"""Credentials and token provenance over inspected HTTPS, through the real
sandbox: TLS inspection (``inspect = true``) and ``[[network.credentials]]``
together, as issue 9's acceptance asks.

Every origin is an HTTPS server this test starts on the host's 127.0.0.1
with its own self-signed certificate, trusted by the proxy through
``upstream_ca`` (on the rule, or as ``[network] upstream_ca`` for the
built-in profiles); names reach it only through ``network.hosts`` pins,
so nothing asks DNS.  Each attack is first shown to work without the
sandbox, or through a blind tunnel, so every test can fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from egress_support import proxy_profile
from https_support import OPENSSL, RAW_CLIENT, TLSOrigin, header

CURL = shutil.which("curl")
PY = "/usr/bin/python3"
pytestmark = pytest.mark.skipif(CURL is None or OPENSSL is None or not os.path.exists(PY),
                                reason="curl, openssl and /usr/bin/python3 are needed")

REAL = "sk-ant-api03-REALsecretVALUE0123456789abcdefghijklmnopqrstuv"
ATTACKER = "sk-ant-api03-ATTACKERkey9876543210zyxwvutsrqponmlkjihgfedcba"
API_KEY_ENTRY = ('host = "api.test"\nfrom_env = "REAL_API_KEY"\nenv = "API_KEY"\n'
                 'header = "x-api-key"\nmethods = ["POST"]\npaths = ["/v1/messages"]\n')


@pytest.fixture
def origin(senv):
    # next to the workspace (not /tmp): the unprivileged user's proxy reads its certificate
    srv = TLSOrigin(senv.base)
    yield srv
    srv.close()


def _profile(senv, origin: TLSOrigin, *, inspect: bool = True, cred: str | None = API_KEY_ENTRY,
             rule_extra: str = "", name: str = "net", extra: str = "") -> Path:
    rules = f'[[network.allow]]\nhost = "api.test"\nports = [{origin.port}]\n{rule_extra}'
    if inspect:
        rules += f'inspect = true\nupstream_ca = "{origin.cert}"\n'
    if cred:
        rules += f"\n[[network.credentials]]\n{cred}\n"
    return proxy_profile(senv, rules, {"api.test": "127.0.0.1"}, name=name, extra=extra)


def _curl(url: str, *extra: str) -> str:
    return " ".join([CURL, "-sS", "-o", "/dev/null", "-w", "'%{http_code}\\n'", "--max-time",
                     "20", *extra, f'"{url}"'])


def _run(senv, profile: Path, script: str, report: Path | None = None, **env):
    args = ["--profile", str(profile)]
    if report is not None:
        args += ["--report", str(report)]
    return senv.run(["sh", "-c", script], args=args, env=senv.environ(**env))


def _raw(senv, profile: Path, authority: str, sni: str, data: str, **env):
    """The raw client inside the sandbox: CONNECT, TLS with ``sni``, ``data``."""
    (senv.ws / "raw.py").write_text(RAW_CLIENT)
    return senv.run([PY, "raw.py", authority, sni, data], args=["--profile", str(profile)],
                    env=senv.environ(**env))


KEY = "$(sed -n 's/^use this key: //p' notes.txt)"
ATTACKS = [
    ("-H", f'"x-api-key: {KEY}"'),
    ("-H", f'"Authorization: Bearer {KEY}"'),
    ("-H", '"Cookie: session=abc123"'),
    ("-H", f'"X-Custom: {KEY}"'),  # a well-known token format in any header
    ("-u", f'"attacker:{KEY}"'),
]


# -- (a) the approved-domain exfiltration, over HTTPS ------------------------------------

def test_exfiltration_with_an_attackers_key_is_refused_over_inspected_https(senv, origin):
    (senv.ws / "notes.txt").write_text(f"use this key: {ATTACKER}\n")
    (senv.ws / "private.txt").write_text("company secrets\n")
    shutil.copy(origin.cert, senv.ws / "origin.pem")
    base = f"https://api.test:{origin.port}"
    upload = [_curl(f"{base}/v1/files", "-X", "POST", *attack, "--data-binary", "@private.txt")
              for attack in ATTACKS]
    upload += [_curl(f"{base}/v1/files?key={KEY}", "-X", "POST", "--data-binary", "@private.txt")]

    # 1. without the sandbox, the upload works: the origin gets the file and the key
    direct = subprocess.run(["sh", "-c", upload[0].replace(
        "curl ", f"curl --cacert origin.pem --resolve api.test:{origin.port}:127.0.0.1 ", 1)],
        cwd=senv.ws, capture_output=True, text=True)
    assert direct.stdout == "200\n", direct.stderr
    assert header(origin.seen[0], "x-api-key") == [ATTACKER]
    assert origin.seen[0]["body"] == b"company secrets\n"
    origin.seen.clear()

    # 2. a blind tunnel to the same host (what the proxy does without
    # inspect) carries every attack through: the proxy cannot see inside
    blind = _profile(senv, origin, inspect=False, cred=None, name="blind")
    out = _run(senv, blind, "; ".join(u.replace("curl ", "curl --cacert origin.pem ", 1)
                                      for u in upload))
    assert out.stdout.decode().split() == ["200"] * 6, (out.stdout, out.stderr)
    assert len(origin.seen) == 6 and all(s["body"] == b"company secrets\n" for s in origin.seen)
    assert header(origin.seen[1], "authorization") == [f"Bearer {ATTACKER}"]
    origin.seen.clear()

    # 3. inspected, with the session's credential: every attack is refused
    # before the proxy connects, the session's own call goes through
    prof = _profile(senv, origin, rule_extra='methods = ["POST"]\n'
                    'paths = ["/v1/messages", "/v1/files"]\n',
                    cred=API_KEY_ENTRY.replace('paths = ["/v1/messages"]',
                                               'paths = ["/v1/messages", "/v1/files"]'))
    own = _curl(f"{base}/v1/messages", "-X", "POST", "-H", '"x-api-key: $API_KEY"', "-d", "hi")
    report = senv.base / "report.json"
    out = _run(senv, prof, "; ".join(upload + [own]), report=report, REAL_API_KEY=REAL)
    codes = out.stdout.decode().split()
    assert codes == ["403"] * 6 + ["200"], (codes, out.stderr)
    assert len(origin.seen) == 1, origin.seen  # nothing of the attacks arrived
    assert origin.seen[0]["path"] == "/v1/messages"
    assert header(origin.seen[0], "x-api-key") == [REAL]
    stderr = out.stderr.decode()
    assert stderr.count("foreign credential") >= 5, stderr  # repeats are grouped
    doc = json.loads(report.read_text())
    reasons = [b["reason"] for b in doc["network"]["blocked"]]
    assert len(reasons) == 6 and all(r.startswith("foreign credential") for r in reasons), reasons
    for text in (stderr, report.read_text(), out.stdout.decode()):
        assert REAL not in text


# -- (b) in scope only --------------------------------------------------------------------

def test_placeholder_replaced_only_in_scope_over_https(senv, origin):
    prof = _profile(senv, origin)
    base = f"https://api.test:{origin.port}"
    script = "; ".join([
        'echo "var=$API_KEY"',
        _curl(f"{base}/v1/messages", "-X", "POST", "-H", '"x-api-key: $API_KEY"', "-d", "hi"),
        _curl(f"{base}/v1/models", "-H", '"x-api-key: $API_KEY"'),  # path out of scope
        _curl(f"{base}/v1/messages", "-H", '"x-api-key: $API_KEY"'),  # GET: out of scope
        _curl(f"{base}/v1/messagesX", "-X", "POST", "-H", '"x-api-key: $API_KEY"'),  # no prefix
        _curl(f"{base}/v1/messages/../files", "--path-as-is", "-X", "POST",
              "-H", '"x-api-key: $API_KEY"'),
    ])
    out = _run(senv, prof, script, REAL_API_KEY=REAL)
    lines = out.stdout.decode().splitlines()
    placeholder = lines[0].removeprefix("var=")
    assert placeholder.startswith("sandbox-placeholder-") and REAL not in out.stdout.decode()
    assert lines[1:5] == ["200"] * 4, (lines, out.stderr)
    seen = {(s["method"], s["path"]): s for s in origin.seen}
    assert header(seen["POST", "/v1/messages"], "x-api-key") == [REAL]
    for key in (("GET", "/v1/models"), ("GET", "/v1/messages"), ("POST", "/v1/messagesX")):
        assert header(seen[key], "x-api-key") == [], key  # dropped, never the real value
    # a dot-segment path is refused or normalised out of scope: never the real value
    assert not any(REAL in json.dumps(s["headers"]) for s in origin.seen
                   if s["path"] != "/v1/messages")
    assert placeholder not in json.dumps([s["headers"] for s in origin.seen])


# -- (c) the secret is never visible inside ---------------------------------------------

def test_secret_never_visible_inside_over_https(senv, origin):
    secret_dir = senv.home / ".config" / "apitoken"
    secret_dir.mkdir(parents=True)
    file_real = REAL.replace("REAL", "FILE")
    (secret_dir / "token").write_text(file_real + "\n")
    file_entry = ('host = "api.test"\nfrom_file = "${home}/.config/apitoken/token"\n'
                  'env = "FILE_TOKEN"\nheader = "authorization"\nscheme = "Bearer"\n'
                  'paths = ["/v1/files"]\n')
    extra = ('[env]\npass = ["REAL_API_KEY", "COPY_OF_KEY"]\n'
             '[filesystem]\ndeny_read = ["${home}/.config/apitoken"]\n'
             )
    prof = _profile(senv, origin, cred=API_KEY_ENTRY + "\n[[network.credentials]]\n" + file_entry,
                    extra=extra)
    base = f"https://api.test:{origin.port}"
    script = ("env; cat /proc/[0-9]*/environ | tr '\\0' '\\n'; "
              f"cat {secret_dir}/token; ls {secret_dir}; "
              # every file the command can read in the places a copy could land
              f"timeout 60 grep -rIl -e REALsecret -e FILEsecret /etc /tmp /run /var {senv.home} "
              f"{senv.ws} 2>/dev/null | head; echo grep-done; "
              + _curl(f"{base}/v1/files", "-H", '"Authorization: Bearer $FILE_TOKEN"') + "; "
              + _curl(f"{base}/v1/messages", "-X", "POST", "-H", '"x-api-key: $API_KEY"') + "; "
              + _curl(f"{base}/v1/messages", "-X", "POST", "-H", '"x-api-key: nope"'))
    report = senv.base / "report.json"
    out = _run(senv, prof, script, report=report, REAL_API_KEY=REAL, COPY_OF_KEY=REAL)
    stdout, stderr = out.stdout.decode(), out.stderr.decode()
    assert "grep-done" in stdout
    assert "FILE_TOKEN=sandbox-placeholder-" in stdout and "API_KEY=sandbox-placeholder-" in stdout
    assert stdout.split()[-3:] == ["200", "200", "403"], (stdout[-400:], stderr)
    for secret in (REAL, file_real):
        assert secret not in stdout and secret not in stderr
        assert secret not in report.read_text()
    by_path = {s["path"]: s for s in origin.seen}
    assert header(by_path["/v1/files"], "authorization") == [f"Bearer {file_real}"]
    assert header(by_path["/v1/messages"], "x-api-key") == [REAL]
    assert "REAL_API_KEY" not in stdout and "COPY_OF_KEY" not in stdout
    # nor on disk anywhere under the test's tree: plan cache, audit log, caches
    for path in senv.base.rglob("*"):
        if path.is_file() and not path.is_symlink() and path != secret_dir / "token":
            data = path.read_bytes()
            assert REAL.encode() not in data and file_real.encode() not in data, path
    logs = _audit_logs(senv)
    assert any(p.name == "audit.jsonl" for p in logs), logs  # the audit log was looked at
    for log in logs:
        data = log.read_bytes()
        assert REAL.encode() not in data and file_real.encode() not in data, log
    assert "foreign credential" in stderr


def _audit_logs(senv) -> list[Path]:
    roots = [senv.home / ".local" / "state", senv.home / ".cache"]
    return [p for r in roots if r.exists() for p in r.rglob("*") if p.is_file()]


# -- (e) strip_headers / refuse_headers over HTTPS ---------------------------------------

def test_strip_and_refuse_headers_over_https(senv, origin):
    prof = _profile(senv, origin, cred=None, rule_extra=(
        'strip_headers = ["X-Forwarded-For"]\nrefuse_headers = ["x-fetch-url"]\n'))
    base = f"https://api.test:{origin.port}"
    script = "; ".join([
        _curl(f"{base}/a", "-H", '"X-Forwarded-For: 10.0.0.1"', "-H", '"X-Keep: 1"'),
        _curl(f"{base}/b", "-H", '"X-Fetch-URL: http://169.254.169.254/"'),
        _curl(f"{base}/c", "-H", '"x-FETCH-url: http://169.254.169.254/"'),
        _curl(f"{base}/d", "-H", '"X-Forwarded-For: 1"', "-H", '"x-forwarded-for: 2"'),
    ])
    out = _run(senv, prof, script)
    assert out.stdout.decode().split() == ["200", "403", "403", "200"], out.stderr
    assert [s["path"] for s in origin.seen] == ["/a", "/d"]
    for s in origin.seen:
        assert header(s, "x-forwarded-for") == []
    assert header(origin.seen[0], "x-keep") == ["1"]
    assert "header x-fetch-url is refused" in out.stderr.decode()
    # through a blind tunnel the same headers reach the origin: the test can fail
    origin.seen.clear()
    shutil.copy(origin.cert, senv.ws / "origin.pem")
    blind = _profile(senv, origin, inspect=False, cred=None, name="blind")
    out = _run(senv, blind, _curl(f"{base}/b", "--cacert", "origin.pem",
                                  "-H", '"X-Fetch-URL: http://169.254.169.254/"'))
    assert out.stdout.decode().split() == ["200"]
    assert header(origin.seen[0], "x-fetch-url") == ["http://169.254.169.254/"]


# -- [network] upstream_ca ----------------------------------------------------------------

def test_network_upstream_ca_is_the_default_and_a_rules_own_key_wins(senv, origin):
    other = senv.base / "other"
    other.mkdir()
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", str(other / "k.pem"), "-out", str(other / "ca.pem"),
                    "-subj", "/CN=other", "-days", "2"], check=True, capture_output=True)
    os.chmod(other / "ca.pem", 0o644)
    url = f"https://api.test:{origin.port}/x"

    def profile(name: str, network_ca: Path, rule_ca: Path | None) -> Path:
        rule = (f'[[network.allow]]\nhost = "api.test"\nports = [{origin.port}]\ninspect = true\n'
                + (f'upstream_ca = "{rule_ca}"\n' if rule_ca else ""))
        return proxy_profile(senv, rule, {"api.test": "127.0.0.1"}, name=name,
                             net_extra=f'upstream_ca = "{network_ca}"\n')

    cases = [("default", origin.cert, None, "200"),  # the [network] key is used ...
             ("rule-wins", other / "ca.pem", origin.cert, "200"),  # ... unless the rule names one
             ("wrong-default", other / "ca.pem", None, "502")]  # proves it is the one used
    for name, network_ca, rule_ca, want in cases:
        out = _run(senv, profile(name, network_ca, rule_ca), _curl(url))
        assert out.stdout.decode().strip() == want, (name, out.stderr)
    assert f"checked against the CA file {other / 'ca.pem'}" in out.stderr.decode()
    assert len(origin.seen) == 2

    # a child of a built-in profile that sets it is listed as a weakening
    child = senv.base / "child.toml"
    child.write_text(f'extends = "anthropic-api"\n[network]\nupstream_ca = "{origin.cert}"\n')
    out = senv.run(["true"], args=["--profile", str(child)])
    assert out.returncode == 0, out.stderr
    assert f"child: network.upstream_ca: inspected hosts without their own upstream_ca are " \
           f"verified against {origin.cert}" in out.stderr.decode()


@pytest.mark.parametrize("value,extra_rule,message", [
    ("relative/ca.pem", True, "is not an absolute path"),
    ("/nonexistent/ca.pem", True, "is not a file"),
    ("{cert}", False, "upstream_ca is used only when the proxy inspects TLS"),
])
def test_network_upstream_ca_errors_name_file_key_and_fix(senv, origin, value, extra_rule,
                                                           message):
    rule = (f'[[network.allow]]\nhost = "api.test"\nports = [{origin.port}]\n'
            + ("inspect = true\n" if extra_rule else ""))
    prof = proxy_profile(senv, rule, {"api.test": "127.0.0.1"}, name="bad",
                         net_extra=f'upstream_ca = "{value.format(cert=origin.cert)}"\n')
    out = senv.run(["true"], args=["--profile", str(prof)])
    err = out.stderr.decode()
    assert out.returncode == 125, err
    assert f"{prof}:" in err and "key 'network.upstream_ca'" in err and message in err, err
    assert "hint:" in err and "Traceback" not in err
