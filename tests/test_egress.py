"""The egress proxy through the real sandbox: real clients, real bwrap.

Every server here is one the test starts on the host's 127.0.0.1.  Names
such as ``pypi.test`` reach it only through the profile's ``network.hosts``
pin, so no test ever asks DNS anything.  Each refusal is checked both ways:
the same request works without the sandbox (or with a rule that allows it),
and fails inside.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from egress_support import allow_rule as rule
from egress_support import children as _children
from egress_support import proxy_profile as write_profile

CURL = shutil.which("curl")
# a Python the sandbox can run whoever calls it: the test's own interpreter may
# live under a private directory (/root, or a checkout in /tmp)
SYSTEM_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
pytestmark = pytest.mark.skipif(CURL is None, reason="curl is not installed")


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def _record(self) -> None:
        self.server.seen.append((self.command, self.path, self.headers.get("Host")))

    def do_GET(self) -> None:
        self._record()
        if self.path.startswith(("/simple/", "/repo.git/", "/files/", "/npm/")):
            return super().do_GET()
        body = b"hello from the origin\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self._record()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


class Origin:
    """A threaded HTTP (optionally TLS) server on the host's 127.0.0.1."""

    def __init__(self, root: Path, tls: tuple[Path, Path] | None = None) -> None:
        handler = lambda *a, **kw: _Handler(*a, directory=str(root), **kw)  # noqa: E731
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.server.seen = []
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
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
def origin(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    srv = Origin(root)
    srv.root = root
    yield srv
    srv.close()


def curl_status(senv, profile: Path, url: str, *extra: str, report: Path | None = None):
    args = ["--profile", str(profile)]
    if report is not None:
        args += ["--report", str(report)]
    return senv.run([CURL, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20",
                     *extra, url], args=args)


# -- allowed and refused ----------------------------------------------------------

def test_scoped_rule_allows_only_its_method_and_path(senv, origin):
    port = origin.port
    profile = write_profile(senv, rule("pypi.test", [port], ["GET"], ["/simple/"]),
                            {"pypi.test": "127.0.0.1"})
    (origin.root / "simple").mkdir()
    (origin.root / "simple" / "index.html").write_text("index\n")
    # the attack works without the sandbox: the host reaches the server directly
    direct = subprocess.run([CURL, "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                             f"http://127.0.0.1:{port}/admin"], capture_output=True, text=True)
    assert direct.stdout == "200"
    origin.seen.clear()

    ok = curl_status(senv, profile, f"http://pypi.test:{port}/simple/")
    assert ok.stdout == b"200", ok.stderr
    assert origin.seen == [("GET", "/simple/", f"pypi.test:{port}")]

    report = senv.base / "report.json"
    for url, extra, why in [
        (f"http://pypi.test:{port}/admin", (), "path /admin not allowed"),
        (f"http://pypi.test:{port}/simple/", ("-X", "POST"), "method POST not allowed"),
        (f"http://other.test:{port}/simple/", (), "host not allowed"),
        # curl rewrites these spellings to 127.0.0.1, which NO_PROXY would send
        # straight to the sandbox's own loopback; --noproxy '' makes them ask the proxy
        (f"http://2130706433:{port}/simple/", ("--noproxy", ""), "host not allowed"),
        (f"http://0x7f.1:{port}/simple/", ("--noproxy", ""), "host not allowed"),
        (f"http://[::ffff:127.0.0.1]:{port}/simple/", ("--noproxy", ""), "host not allowed"),
        (f"http://pypi.test:{port + 1 if port < 65535 else port - 1}/simple/", (), "not allowed"),
    ]:
        origin.seen.clear()
        done = curl_status(senv, profile, url, *extra, report=report)
        assert done.stdout == b"403", (url, done.stdout, done.stderr)
        assert origin.seen == [], url  # refused before anything reached the origin
        assert why in done.stderr.decode(), done.stderr  # the summary says why
        blocked = json.loads(report.read_text())["network"]["blocked"]
        assert any(why in e["reason"] for e in blocked), blocked
    # without the proxy an IP spelling of the host's loopback reaches nothing
    done = curl_status(senv, profile, f"http://2130706433:{port}/simple/")
    assert done.stdout == b"000" and origin.seen == []


def test_summary_names_the_request_and_the_profile(senv, origin):
    profile = write_profile(senv, rule("pypi.test", [origin.port], ["GET"]),
                            {"pypi.test": "127.0.0.1"})
    done = senv.run([CURL, "-sS", "-o", "/dev/null", "-X", "POST", "--max-time", "20",
                     f"http://uploads.test:{origin.port}/files"], args=["--profile", str(profile)])
    err = done.stderr.decode()
    assert (f"sandbox: blocked POST http://uploads.test:{origin.port}/files - host not allowed"
            in err), err
    assert "(profile 'net')" in err
    assert "[[network.allow]]" in err  # what to do about it


def test_direct_connections_have_no_route(senv, origin):
    """Without the proxy the command reaches nothing outside its namespace."""
    profile = write_profile(senv, rule("pypi.test", [origin.port]), {"pypi.test": "127.0.0.1"})
    url = f"http://127.0.0.1:{origin.port}/"
    assert subprocess.run([CURL, "-sS", "-o", "/dev/null", url]).returncode == 0
    inside = senv.run([CURL, "-sS", "--noproxy", "*", "--max-time", "10", "-o", "/dev/null", url],
                      args=["--profile", str(profile)])
    assert inside.returncode == 7, inside.stderr  # connection refused: its own loopback
    assert origin.seen == [("GET", "/", f"127.0.0.1:{origin.port}")]  # only the host's request
    # the namespace has one interface, lo, and no route anywhere else
    routes = senv.sh("cat /proc/net/dev /proc/net/route", args=["--profile", str(profile)])
    text = routes.stdout.decode()
    assert "lo:" in text and "eth" not in text and "\t00000000\t" not in text


def test_servers_on_the_sandbox_loopback_stay_direct(senv, origin):
    profile = write_profile(senv, rule("pypi.test", [origin.port]), {"pypi.test": "127.0.0.1"})
    script = (f"{SYSTEM_PYTHON} -m http.server 8765 --bind 127.0.0.1 >/dev/null 2>&1 & "
              "i=0; while [ $i -lt 100 ]; do "
              f"  {CURL} -s -o /dev/null http://127.0.0.1:8765/ && break; i=$((i+1)); sleep 0.05; "
              "done; "
              f"{CURL} -sS -o /dev/null -w '%{{http_code}}' http://127.0.0.1:8765/ ; "
              f"{CURL} -sS -o /dev/null -w ' %{{http_code}}' http://localhost:8765/ ; kill $!")
    done = senv.sh(script, args=["--profile", str(profile)])
    assert done.stdout == b"200 200", done.stderr


def test_proxy_variables_are_set(senv, origin):
    profile = write_profile(senv, rule("pypi.test", [origin.port]), {"pypi.test": "127.0.0.1"})
    done = senv.sh("env | sort", args=["--profile", str(profile)])
    env = dict(line.split("=", 1) for line in done.stdout.decode().splitlines() if "=" in line)
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        assert env[name] == "http://127.0.0.1:3128"
    assert env["NO_PROXY"] == env["no_proxy"] == "localhost,127.0.0.1,::1"
    for name in ("npm_config_proxy", "npm_config_https_proxy", "YARN_HTTP_PROXY", "YARN_HTTPS_PROXY"):
        assert env[name] == "http://127.0.0.1:3128"
    assert env["NODE_USE_ENV_PROXY"] == "1"
    # the default profile has no proxy: none of this is set
    plain = senv.sh("env")
    assert b"3128" not in plain.stdout


# -- TLS through CONNECT ----------------------------------------------------------

@pytest.fixture
def tls_origin(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-subj", "/CN=pypi.test", "-addext",
                    "subjectAltName=DNS:pypi.test", "-days", "2"], check=True, capture_output=True)
    root = tmp_path / "tls-www"
    root.mkdir()
    srv = Origin(root, tls=(cert, key))
    srv.cert = cert
    yield srv
    srv.close()


def test_connect_to_local_tls_server(senv, tls_origin):
    port = tls_origin.port
    shutil.copy(tls_origin.cert, senv.ws / "ca.pem")
    allowed = write_profile(senv, rule("pypi.test", [port]), {"pypi.test": "127.0.0.1"})
    done = senv.run([CURL, "-sS", "--cacert", "ca.pem", "--max-time", "20",
                     f"https://pypi.test:{port}/hello"], args=["--profile", str(allowed)])
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"hello from the origin\n"
    # a rule that limits paths cannot be checked inside TLS: CONNECT is refused
    scoped = write_profile(senv, rule("pypi.test", [port], paths=["/hello"]),
                           {"pypi.test": "127.0.0.1"}, name="scoped")
    tls_origin.seen.clear()
    refused = senv.run([CURL, "-sS", "--cacert", "ca.pem", "--max-time", "20",
                        f"https://pypi.test:{port}/hello"], args=["--profile", str(scoped)])
    assert refused.returncode != 0
    assert tls_origin.seen == []
    assert "CONNECT refused" in refused.stderr.decode()


# -- real clients: pip and git ------------------------------------------------------

def _wheel(directory: Path) -> Path:
    """A minimal pure-Python wheel, made here so no index is ever contacted."""
    name = "demo_egress-1.0-py3-none-any.whl"
    files = {
        "demo_egress/__init__.py": "VALUE = 'installed through the proxy'\n",
        "demo_egress-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: demo-egress\nVersion: 1.0\n",
        "demo_egress-1.0.dist-info/WHEEL": ("Wheel-Version: 1.0\nGenerator: test\n"
                                            "Root-Is-Purelib: true\nTag: py3-none-any\n"),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
        zf.writestr("demo_egress-1.0.dist-info/RECORD",
                    "".join(f"{p},,\n" for p in files) + "demo_egress-1.0.dist-info/RECORD,,\n")
    out = directory / name
    out.write_bytes(buf.getvalue())
    return out


def test_pip_install_from_a_local_index(senv, origin):
    pkg = origin.root / "simple" / "demo-egress"
    pkg.mkdir(parents=True)
    wheel = _wheel(pkg)
    (pkg / "index.html").write_text(f'<a href="{wheel.name}">{wheel.name}</a>\n')
    port = origin.port
    profile = write_profile(senv, rule("pypi.test", [port], ["GET"], ["/simple/"]),
                            {"pypi.test": "127.0.0.1"})
    script = (f"{SYSTEM_PYTHON} -m venv .venv && .venv/bin/pip install --disable-pip-version-check "
              f"--no-cache-dir --index-url http://pypi.test:{port}/simple/ "
              f"--trusted-host pypi.test demo-egress && "
              ".venv/bin/python -c 'import demo_egress; print(demo_egress.VALUE)'")
    done = senv.sh(script, args=["--profile", str(profile)], timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"installed through the proxy" in done.stdout
    assert any(path.endswith(".whl") for _, path, _ in origin.seen)


def test_git_clone_over_http(senv, origin, tmp_path):
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    src = tmp_path / "src"
    src.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(tmp_path)}
    subprocess.run(["git", "init", "-q", str(src)], check=True, env=env)
    (src / "README").write_text("cloned through the proxy\n")
    subprocess.run(["git", "-C", str(src), "add", "README"], check=True, env=env)
    subprocess.run(["git", "-C", str(src), "commit", "-qm", "one"], check=True, env=env)
    bare = origin.root / "repo.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(src), str(bare)], check=True, env=env)
    subprocess.run(["git", "-C", str(bare), "update-server-info"], check=True, env=env)
    port = origin.port
    profile = write_profile(senv, rule("git.test", [port], ["GET"], ["/repo.git/"]),
                            {"git.test": "127.0.0.1"})
    done = senv.sh(f"git clone -q http://git.test:{port}/repo.git copy && cat copy/README",
                   args=["--profile", str(profile)])
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"cloned through the proxy\n"


# -- fail closed ----------------------------------------------------------------------

def test_killing_the_proxy_leaves_no_route(senv, origin):
    port = origin.port
    profile = write_profile(senv, rule("pypi.test", [port]), {"pypi.test": "127.0.0.1"})
    script = (f"{CURL} -sS -o /dev/null -w 'first=%{{http_code}}\\n' http://pypi.test:{port}/; "
              "touch ready; i=0; while [ ! -e go ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; "
              f"{CURL} -sS -o /dev/null --max-time 10 http://pypi.test:{port}/ "
              "; echo proxied=$?; "
              f"{CURL} -sS -o /dev/null --max-time 10 --noproxy '*' http://127.0.0.1:{port}/ "
              "; echo direct=$?")
    senv.finish()
    from conftest import sandbox_exe

    proc = subprocess.Popen(senv.who.prefix() + [sandbox_exe(), "run", "--profile", str(profile),
                                                 "--", "sh", "-c", script],
                            cwd=senv.ws, env=senv.environ(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (senv.ws / "ready").exists():
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        # the wrapper's children: bwrap, the proxy (a fork of the wrapper) and
        # the cat that holds the watch on protected files (sandbox.blocked)
        kids = _children(proc.pid)
        proxies = []
        for kid in kids:
            with open(f"/proc/{kid}/comm") as fh:
                if fh.read().strip() not in ("bwrap", "cat"):
                    proxies.append(kid)
        assert len(proxies) == 1, kids
        os.kill(proxies[0], signal.SIGKILL)
        (senv.ws / "go").touch()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.decode()
    assert "first=200" in text, (text, err)
    assert "proxied=7" in text, text  # connection refused: nothing listens any more
    assert "direct=7" in text, text
    assert origin.seen == [("GET", "/", f"pypi.test:{port}")]
    assert b"egress proxy stopped during the run" in err


@pytest.fixture
def origin6(tmp_path):
    class V6Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6

    try:
        server = V6Server(("::1", 0), lambda *a, **kw: _Handler(*a, directory=str(tmp_path), **kw))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    server.daemon_threads = True
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_an_ip_rule_opens_that_address_only(senv, origin6):
    """A loopback address is reachable only when a rule names it, and only it."""
    port = origin6.server_address[1]
    url = f"http://[::1]:{port}/"
    # the host itself reaches the server
    assert subprocess.run([CURL, "-sS", "-o", "/dev/null", "--noproxy", "*", url]).returncode == 0
    origin6.seen.clear()
    named = write_profile(senv, rule("::1", [port]), name="named")
    other = write_profile(senv, rule("127.0.0.1", [port]), name="other")
    # --noproxy '': ask the proxy even for a loopback address (NO_PROXY lists ::1)
    ok = curl_status(senv, named, url, "--noproxy", "")
    assert ok.stdout == b"200", ok.stderr
    assert len(origin6.seen) == 1
    refused = curl_status(senv, other, url, "--noproxy", "")
    assert refused.stdout == b"403", refused.stderr
    mapped = curl_status(senv, named, f"http://[::ffff:127.0.0.1]:{port}/", "--noproxy", "")
    assert mapped.stdout == b"403"
    assert len(origin6.seen) == 1


def test_the_cached_fast_path_starts_the_proxy_too(senv, origin):
    """A second run reuses the cached plan; its network works the same."""
    profile = write_profile(senv, rule("pypi.test", [origin.port]), {"pypi.test": "127.0.0.1"})
    report = senv.base / "report.json"
    senv.finish()  # once: chown (senv.run does it every time) makes every ctime new
    from conftest import sandbox_exe

    argv = senv.who.prefix() + [sandbox_exe(), "run", "--profile", str(profile), "--report",
                                str(report), "--", CURL, "-sS", "-o", "/dev/null", "-w",
                                "%{http_code}", f"http://pypi.test:{origin.port}/"]
    seen = []
    for i in range(4):
        if i in (1, 2):
            time.sleep(2.2)  # plans are cached only from inputs older than 2 s
        done = subprocess.run(argv, cwd=senv.ws, env=senv.environ(), capture_output=True,
                              timeout=60)
        assert done.stdout == b"200", done.stderr
        seen.append(json.loads(report.read_text())["plan_cached"])
    assert seen[-1] is True, seen
    assert len(origin.seen) == 4


def test_summary_tells_refusals_from_unreachable_endpoints():
    from sandbox import resources
    from sandbox.egress import session as egress

    result = {"blocked": [
        {"status": 403, "method": "POST", "url": "http://a.test:80/x", "reason": "host not allowed"},
        {"status": 403, "method": "POST", "url": "http://a.test:80/x", "reason": "host not allowed"},
        {"status": 400, "method": "GET", "url": "http://b.test:80/", "reason": "bare LF"},
        {"status": 502, "method": "CONNECT", "url": "c.test:443", "reason": "connection refused"},
    ], "blocked_count": 9}
    assert egress.summary(result, "p") == [
        "sandbox: blocked POST http://a.test:80/x - host not allowed (2 times) (profile 'p')",
        "sandbox: refused a malformed GET http://b.test:80/ - bare LF",
        "sandbox: could not reach c.test:443 (CONNECT) - connection refused; the profile allows it",
        "sandbox: ... and 5 more refused request(s); see --report",
        "sandbox: to allow an endpoint, add a [[network.allow]] rule to a profile that extends "
        f"this one ({resources.doc('profiles.md')}); 'sandbox explain' shows the rules",
    ]
    busy = {"blocked": [{"status": 503, "method": None, "url": None,
                         "reason": "too many connections (limit 256)"},
                        {"status": 403, "method": "GET", "url": "http://a.test:80/",
                         "reason": "Upgrade is not supported (use CONNECT)"}], "blocked_count": 2}
    assert egress.summary(busy, "p") == [
        "sandbox: the egress proxy turned away request ? - too many connections (limit 256)",
        "sandbox: blocked GET http://a.test:80/ - Upgrade is not supported (use CONNECT) (profile 'p')",
    ]
    unreachable = {"blocked": result["blocked"][3:], "blocked_count": 1, "proxy_died": "killed by signal 9"}
    assert egress.summary(unreachable, "p") == [
        "sandbox: could not reach c.test:443 (CONNECT) - connection refused; the profile allows it",
        "sandbox: warning: the egress proxy stopped during the run (killed by signal 9); from then "
        "on the command had no network",
    ]


def test_the_bridge_made_through_bwrap_works_the_same(senv, origin):
    """SANDBOX_NET_BRIDGE=bwrap (the fallback for hosts that allow user
    namespaces to bwrap only): same rules, same isolation."""
    port = origin.port
    profile = write_profile(senv, rule("pypi.test", [port], ["GET"]), {"pypi.test": "127.0.0.1"})
    env = senv.environ(SANDBOX_NET_BRIDGE="bwrap")
    script = (f"{CURL} -sS -o /dev/null -w '%{{http_code}} ' http://pypi.test:{port}/ ; "
              f"{CURL} -sS -o /dev/null -w '%{{http_code}} ' -X POST http://pypi.test:{port}/ ; "
              f"{CURL} -sS -o /dev/null -w '%{{http_code}} ' --max-time 10 --noproxy '*' "
              f"http://127.0.0.1:{port}/ ; grep -c : /proc/net/dev")
    done = senv.run(["sh", "-c", script], args=["--profile", str(profile)], env=env)
    assert done.stdout.decode().split() == ["200", "403", "000", "1"], done.stderr
    assert origin.seen == [("GET", "/", f"pypi.test:{port}")]
    assert b"blocked POST" in done.stderr


def test_pip_and_npm_install_over_https_through_connect(senv, tls_origin):
    """The way real registries are reached: TLS through a CONNECT tunnel, the
    client checking the origin's certificate end to end."""
    import hashlib
    import tarfile

    www = tls_origin.cert.parent / "tls-www"
    pkg = www / "simple" / "demo-egress"
    pkg.mkdir(parents=True)
    wheel = _wheel(pkg)
    (pkg / "index.html").write_text(f'<a href="{wheel.name}">{wheel.name}</a>\n')
    # an npm registry: the packument at /<name>, the tarball under /files/
    tgz = www / "files" / "demo-egress-1.0.0.tgz"
    tgz.parent.mkdir()
    manifest = json.dumps({"name": "demo-egress", "version": "1.0.0", "main": "index.js"}).encode()
    with tarfile.open(tgz, "w:gz") as tf:
        for name, data in (("package/package.json", manifest),
                           ("package/index.js", b"module.exports = 'npm through the proxy';\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    port = tls_origin.port
    base = f"https://pypi.test:{port}"
    (www / "npm").mkdir()
    (www / "npm" / "demo-egress").write_text(json.dumps({
        "name": "demo-egress", "dist-tags": {"latest": "1.0.0"},
        "versions": {"1.0.0": {"name": "demo-egress", "version": "1.0.0",
                               "dist": {"tarball": f"{base}/files/demo-egress-1.0.0.tgz",
                                        "shasum": hashlib.sha1(tgz.read_bytes()).hexdigest()}}}}))
    shutil.copy(tls_origin.cert, senv.ws / "ca.pem")
    profile = write_profile(senv, rule("pypi.test", [port]), {"pypi.test": "127.0.0.1"})
    script = (f"{SYSTEM_PYTHON} -m venv .venv && .venv/bin/pip install -q --disable-pip-version-check "
              f"--no-cache-dir --cert ca.pem --index-url {base}/simple/ demo-egress && "
              ".venv/bin/python -c 'import demo_egress; print(demo_egress.VALUE)'")
    done = senv.sh(script, args=["--profile", str(profile)], timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"installed through the proxy" in done.stdout
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed (pip over HTTPS passed)")
    script = (f"{npm} install --no-audit --no-fund --cafile ca.pem --registry {base}/npm/ demo-egress "
              "&& node -e \"console.log(require('demo-egress'))\"")
    done = senv.sh(script, args=["--profile", str(profile)], timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"npm through the proxy" in done.stdout
