"""TLS inspection (``inspect = true``) through the real sandbox: real clients, real bwrap.

Every origin here is an HTTPS server the test starts on the host's
127.0.0.1 with its own self-signed certificate, which the profile names as
``upstream_ca``; the name ``pypi.test`` reaches it only through the
profile's ``network.hosts`` pin, so nothing ever asks DNS.  Each check is
made both ways: the same request through a blind tunnel (no inspect) or
without the sandbox behaves differently, so every test can fail.
"""

from __future__ import annotations

import http.server
import os
import shutil
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from egress_support import children, proxy_profile

CURL = shutil.which("curl")
OPENSSL = shutil.which("openssl")
SYSTEM_PYTHON = "/usr/bin/python3"
pytestmark = pytest.mark.skipif(CURL is None or OPENSSL is None or not os.path.exists(SYSTEM_PYTHON),
                                reason="curl, openssl and /usr/bin/python3 are needed")
NAME = "pypi.test"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append((self.command, self.path, self.headers.get("Host"), body))
        out = f"origin saw {self.command} {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = _answer


class TLSOrigin:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate for ``NAME``."""

    def __init__(self, directory: Path) -> None:
        self.cert, self.key = directory / "origin-cert.pem", directory / "origin-key.pem"
        subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(self.key), "-out",
                        str(self.cert), "-subj", f"/CN={NAME}", "-addext",
                        f"subjectAltName=DNS:{NAME}", "-days", "2"], check=True,
                       capture_output=True)
        os.chmod(self.cert, 0o644)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.seen = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.cert), str(self.key))
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
def tls_origin(senv):
    # next to the workspace (not under /tmp): the unprivileged test user's
    # proxy must read the origin's certificate as its upstream CA
    srv = TLSOrigin(senv.base)
    yield srv
    srv.close()


def rule(port: int, *, inspect: bool, methods=None, paths=None, ca: Path | None = None) -> str:
    out = f'[[network.allow]]\nhost = "{NAME}"\nports = [{port}]\n'
    if methods:
        out += f"methods = {list(methods)!r}\n".replace("'", '"')
    if paths:
        out += f"paths = {list(paths)!r}\n".replace("'", '"')
    if inspect:
        out += "inspect = true\n"
        if ca is not None:
            out += f'upstream_ca = "{ca}"\n'
    return out


def profile(senv, origin: TLSOrigin, name: str, **kw) -> Path:
    return proxy_profile(senv, rule(origin.port, ca=origin.cert if kw.get("inspect") else None,
                                    **kw), {NAME: "127.0.0.1"}, name=name)


def curl(*args: str) -> list[str]:
    return [CURL, "-sS", "--max-time", "20", "-w", "%{http_code}\n", *args]


# -- method and path rules over HTTPS -----------------------------------------------------

def test_inspected_host_enforces_methods_and_paths_over_https(senv, tls_origin):
    port = tls_origin.port
    base = f"https://{NAME}:{port}"
    get = "curl -sS --max-time 20 -w '%{http_code}\\n' CA"
    script = (f"{get} {base}/simple/pkg; {get} {base}/upload; "
              f"{get} -X POST -d secret=1 {base}/simple/pkg; {get} '{base}/ADMIN;x'")
    # without inspection an unscoped rule is the only way to allow HTTPS, and
    # everything inside the tunnel reaches the origin: the test can fail
    blind = profile(senv, tls_origin, "blind", inspect=False)
    shutil.copy(tls_origin.cert, senv.ws / "origin.pem")
    done = senv.sh(script.replace(" CA", " --cacert origin.pem"), args=["--profile", str(blind)])
    assert done.returncode == 0, done.stderr
    assert [s[:2] for s in tls_origin.seen] == [("GET", "/simple/pkg"), ("GET", "/upload"),
                                               ("POST", "/simple/pkg"), ("GET", "/ADMIN;x")]
    tls_origin.seen.clear()

    scoped = profile(senv, tls_origin, "inspected", inspect=True, methods=["GET"],
                     paths=["/simple/"])
    done = senv.sh(script.replace(" CA", ""), args=["--profile", str(scoped)])
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode().splitlines()
    assert out[0:2] == ["origin saw GET /simple/pkg", "200"]
    assert out[2:] == ["sandbox: blocked GET https://pypi.test:%d/upload - path /upload not allowed "
                       "for pypi.test" % port, "403",
                       "sandbox: blocked POST https://pypi.test:%d/simple/pkg - method POST not "
                       "allowed for pypi.test" % port, "403",
                       "sandbox: blocked GET https://pypi.test:%d/ADMIN;x - path /ADMIN;x not "
                       "allowed for pypi.test" % port, "403"]
    # refused requests never reach the origin, nor does their body
    assert [s[:2] for s in tls_origin.seen] == [("GET", "/simple/pkg")]
    assert tls_origin.seen[0][2] == f"{NAME}:{port}"
    err = done.stderr.decode()
    assert f"blocked POST https://{NAME}:{port}/simple/pkg - method POST not allowed" in err


def test_python_clients_work_unchanged_through_inspection(senv, tls_origin):
    port = tls_origin.port
    prof = profile(senv, tls_origin, "py", inspect=True, methods=["GET"], paths=["/ok"])
    code = (
        "import os, urllib.request, urllib.error, ssl\n"
        f"u = 'https://{NAME}:{port}'\n"
        "print(urllib.request.urlopen(u + '/ok', timeout=20).read().decode().strip())\n"
        "try:\n"
        "    urllib.request.urlopen(urllib.request.Request(u + '/ok', data=b'x', method='PUT'),"
        " timeout=20)\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code, e.headers['X-Sandbox-Blocked'])\n"
        "print(os.environ['REQUESTS_CA_BUNDLE'], os.environ['NODE_EXTRA_CA_CERTS'])\n"
    )
    done = senv.run([SYSTEM_PYTHON, "-c", code], args=["--profile", str(prof)])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[0] == "origin saw GET /ok"
    assert lines[1] == "403 method PUT not allowed for pypi.test"
    bundle = lines[2].split()[0]
    assert lines[2] == f"{bundle} {bundle}" and bundle.startswith("/etc/")
    assert [s[:2] for s in tls_origin.seen] == [("GET", "/ok")]


def test_deny_rules_apply_inside_an_inspected_tunnel(senv, tls_origin):
    port = tls_origin.port
    rules = (rule(port, inspect=True, ca=tls_origin.cert)
             + f'[[network.deny]]\nhost = "{NAME}"\nmethods = ["DELETE"]\n')
    prof = proxy_profile(senv, rules, {NAME: "127.0.0.1"}, name="deny")
    done = senv.sh(f"curl -sS --max-time 20 -o /dev/null -w '%{{http_code}} ' "
                   f"https://{NAME}:{port}/a; "
                   f"curl -sS --max-time 20 -o /dev/null -w '%{{http_code}}' -X delete "
                   f"https://{NAME}:{port}/a", args=["--profile", str(prof)])
    assert done.stdout == b"200 403", done.stderr
    assert [s[:2] for s in tls_origin.seen] == [("GET", "/a")]
    # the same deny rule without inspection refuses the whole tunnel
    blind = proxy_profile(senv, rule(port, inspect=False)
                          + f'[[network.deny]]\nhost = "{NAME}"\nmethods = ["DELETE"]\n',
                          {NAME: "127.0.0.1"}, name="deny-blind")
    done = senv.run(curl("-k", f"https://{NAME}:{port}/a"), args=["--profile", str(blind)])
    assert done.returncode != 0 and "denied by a [[network.deny]] rule" in done.stderr.decode()


# -- what inspection refuses in words --------------------------------------------------------

def test_pinning_clients_fail_at_once_with_a_clear_message(senv, tls_origin):
    port = tls_origin.port
    url = f"https://{NAME}:{port}/ok"
    shutil.copy(tls_origin.cert, senv.ws / "origin.pem")
    own_ca = (
        "import ssl, urllib.request\n"
        "ctx = ssl.create_default_context(cafile='origin.pem')\n"
        "try:\n"
        f"    print(urllib.request.urlopen('{url}', context=ctx, timeout=20).read().decode())\n"
        "except Exception as e:\n"
        "    print('refused:', e)\n"
    )
    pin = subprocess.run([OPENSSL, "x509", "-in", str(tls_origin.cert), "-pubkey", "-noout"],
                         capture_output=True, check=True).stdout
    der = subprocess.run([OPENSSL, "pkey", "-pubin", "-outform", "DER"], input=pin,
                         capture_output=True, check=True).stdout
    import base64
    import hashlib
    pinned = "sha256//" + base64.b64encode(hashlib.sha256(der).digest()).decode()
    script = (f"curl -k -sS --max-time 20 --pinnedpubkey '{pinned}' -o /dev/null {url}; "
              f"echo curl=$?; {SYSTEM_PYTHON} -c \"$0\"")
    # through a blind tunnel both clients reach the origin they pinned
    blind = profile(senv, tls_origin, "blind", inspect=False)
    done = senv.run(["sh", "-c", script, own_ca], args=["--profile", str(blind)])
    assert b"curl=0" in done.stdout and b"origin saw GET /ok" in done.stdout, done.stderr

    inspected = profile(senv, tls_origin, "pin", inspect=True)
    tls_origin.seen.clear()
    start = time.monotonic()
    done = senv.run(["sh", "-c", script, own_ca], args=["--profile", str(inspected)], timeout=60)
    assert time.monotonic() - start < 20  # no hang
    out, err = done.stdout.decode(), done.stderr.decode()
    assert "curl=90" in out and "public key does not match pinned public key" in err
    assert "refused:" in out and "CERTIFICATE_VERIFY_FAILED" in out
    assert f"sandbox: TLS inspection of {NAME}:{port} failed" in err
    assert "does not trust the run's CA: it pins certificates or uses its own CA list" in err
    assert tls_origin.seen == []


def test_http2_is_refused_in_words(senv, tls_origin):
    port = tls_origin.port
    prof = profile(senv, tls_origin, "h2", inspect=True)
    code = (
        "import os, socket, ssl\n"
        "s = socket.create_connection(('127.0.0.1', 3128), timeout=20)\n"
        f"s.sendall(b'CONNECT {NAME}:{port} HTTP/1.1\\r\\nHost: {NAME}:{port}\\r\\n\\r\\n')\n"
        "assert s.recv(4096).startswith(b'HTTP/1.1 200')\n"
        "ctx = ssl.create_default_context()\n"
        "ctx.set_alpn_protocols(['h2'])\n"
        f"t = ctx.wrap_socket(s, server_hostname='{NAME}')\n"
        "print('alpn', t.selected_alpn_protocol())\n"
        "t.sendall(b'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n')\n"
        "print(t.recv(4096).split(b'\\r\\n')[0].decode())\n"
    )
    done = senv.run([SYSTEM_PYTHON, "-c", code], args=["--profile", str(prof)])
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == ["alpn None", "HTTP/1.1 505 HTTP Version Not Supported"]
    assert "HTTP/2 is not supported where the proxy inspects TLS" in done.stderr.decode()
    assert tls_origin.seen == []
    # curl asking for h2 falls back to HTTP/1.1 and works
    done = senv.run(curl("--http2", "-o", "/dev/null", f"https://{NAME}:{port}/x"),
                    args=["--profile", str(prof)])
    assert done.stdout == b"200\n", done.stderr


def test_a_different_server_name_inside_the_tunnel_is_refused(senv, tls_origin):
    """Domain fronting: SNI and Host must both be the CONNECT host."""
    port = tls_origin.port
    prof = profile(senv, tls_origin, "sni", inspect=True)
    code = (
        "import socket, ssl, sys\n"
        "def tunnel():\n"
        "    s = socket.create_connection(('127.0.0.1', 3128), timeout=20)\n"
        f"    s.sendall(b'CONNECT {NAME}:{port} HTTP/1.1\\r\\nHost: {NAME}:{port}\\r\\n\\r\\n')\n"
        "    assert s.recv(4096).startswith(b'HTTP/1.1 200')\n"
        "    return s\n"
        "ctx = ssl.create_default_context()\n"
        "ctx.check_hostname = False\n"
        "try:\n"
        "    ctx.wrap_socket(tunnel(), server_hostname='forbidden.test')\n"
        "    print('sni accepted')\n"
        "except ssl.SSLError as e:\n"
        "    print('sni refused', e.reason)\n"
        f"t = ssl.create_default_context().wrap_socket(tunnel(), server_hostname='{NAME}')\n"
        "t.sendall(b'GET /x HTTP/1.1\\r\\nHost: forbidden.test\\r\\n\\r\\n')\n"
        "print(t.recv(4096).split(b'\\r\\n')[0].decode())\n"
    )
    done = senv.run([SYSTEM_PYTHON, "-c", code], args=["--profile", str(prof)])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[0].startswith("sni refused")
    assert lines[1].startswith("HTTP/1.1 400")
    assert "is not the CONNECT host" in done.stderr.decode()
    assert tls_origin.seen == []


def test_an_untrusted_upstream_is_refused(senv, tls_origin):
    """Upstream TLS is verified: without upstream_ca the origin's self-signed
    certificate is not trusted (the host's roots do not know it)."""
    port = tls_origin.port
    prof = proxy_profile(senv, rule(port, inspect=True), {NAME: "127.0.0.1"}, name="roots")
    done = senv.run(curl("-o", "/dev/null", f"https://{NAME}:{port}/x"),
                    args=["--profile", str(prof)])
    assert done.stdout == b"502\n"
    err = done.stderr.decode()
    assert f"upstream certificate of {NAME} not trusted" in err
    assert "checked against the host's trusted roots" in err
    assert tls_origin.seen == []


# -- the CA key ----------------------------------------------------------------------------

_KEY_HUNT = r"""
set -u
ca=$(awk '/BEGIN CERT/{b=""} {b=b $0 "\n"} END{printf "%s", b}' "$SSL_CERT_FILE")
printf '%s' "$ca" | openssl x509 -noout -subject
capub=$(printf '%s' "$ca" | openssl x509 -pubkey -noout)
found=0
for f in $(grep -rlsI -- "PRIVATE KEY" /tmp /var/tmp /dev/shm /run "$HOME" "$PWD" /etc/ssl \
           "${XDG_CACHE_HOME:-$HOME/.cache}" 2>/dev/null); do
  found=$((found+1))
  pub=$(openssl pkey -in "$f" -pubout 2>/dev/null)
  [ "$pub" = "$capub" ] && echo "CA KEY FOUND in $f"
done
echo "private keys found: $found"
for p in $PROXY_PIDS; do
  [ -e /proc/$p/mem ] && cat /proc/$p/mem >/dev/null 2>&1 && echo "proxy memory readable: $p"
done
curl -sS --max-time 20 -o /dev/null -w '%{http_code}\n' "$URL"
"""


def test_the_ca_key_cannot_be_read_from_inside(senv, tls_origin):
    port = tls_origin.port
    prof = profile(senv, tls_origin, "key", inspect=True)
    # a private key the command can see: proves the hunt finds keys at all
    shutil.copy(tls_origin.key, senv.ws / "planted-key.pem")
    env = senv.environ(URL=f"https://{NAME}:{port}/x", PROXY_PIDS="")
    senv.finish()
    proc = subprocess.Popen(senv.who.prefix() + [
        _exe(), "run", "--profile", str(prof), "--", "sh", "-c",
        "sleep 1; " + _KEY_HUNT.replace("$PROXY_PIDS", "$(cat proxy-pids)")],
        cwd=senv.ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # the proxy is a child of the wrapper: give its host pid to the command
    pids = _proxy_pids(proc.pid)
    (senv.ws / "proxy-pids").write_text(" ".join(map(str, pids)))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    text = out.decode()
    assert "sandbox run CA" in text  # the bundle ends with the run's CA certificate
    assert "CA KEY FOUND" not in text
    assert "private keys found: 1" in text  # only the planted one
    assert "proxy memory readable" not in text
    assert text.strip().endswith("200")  # and inspection worked meanwhile
    assert pids, "the proxy process was not found"


def test_the_proxy_is_not_dumpable_on_the_host(senv, tls_origin):
    """The caller's other processes cannot read the key out of the proxy either
    (a run without inspection keeps an ordinary, readable proxy: the check can fail)."""
    if senv.who.name == "root":
        pytest.skip("root may read any process's memory on the host")
    port = tls_origin.port
    results = {}
    for inspect in (False, True):
        prof = profile(senv, tls_origin, f"dump{inspect}", inspect=inspect)
        senv.finish()
        proc = subprocess.Popen(senv.who.prefix() + [
            _exe(), "run", "--profile", str(prof), "--", "sleep", "3"],
            cwd=senv.ws, env=senv.environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        pids = _proxy_pids(proc.pid)
        time.sleep(0.5)  # the CA is made: the proxy has set itself non-dumpable
        probe = subprocess.run(senv.who.prefix() + [SYSTEM_PYTHON, "-c",
                               f"open('/proc/{pids[0]}/environ','rb').read(); print('readable')"],
                               capture_output=True)
        results[inspect] = probe.stdout.strip()
        proc.communicate(timeout=30)
    assert results == {False: b"readable", True: b""}
    del port


def _exe() -> str:
    from conftest import sandbox_exe

    return sandbox_exe()


def _proxy_pids(wrapper: int) -> list[int]:
    """The wrapper's children once bwrap runs: bwrap, the forked proxy
    (which runs the wrapper's own program) and the cat that holds the watch
    on protected files (sandbox.blocked); the proxy's pids."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        exes = {}
        for pid in children(wrapper):
            try:
                exes[pid] = os.readlink(f"/proc/{pid}/exe")
            except OSError:
                exes[pid] = ""
        if any(exe.endswith("/bwrap") for exe in exes.values()):
            return [pid for pid, exe in exes.items()
                    if not exe.endswith(("/bwrap", "/cat"))]
        time.sleep(0.05)
    return []


# -- the profile ---------------------------------------------------------------------------

def test_profile_errors_name_the_key_and_the_fix(senv, tls_origin):
    cases = {
        'inspect = "yes"': ("network.allow[1].inspect", "inspect must be true or false"),
        'upstream_ca = "/etc/hosts"': ("network.allow[1].upstream_ca",
                                       "upstream_ca is used only when the proxy inspects TLS"),
        'inspect = true\nupstream_ca = "ca.pem"': ("network.allow[1].upstream_ca",
                                                   "is not an absolute path"),
        'inspect = true\nupstream_ca = "/nonexistent/ca.pem"': ("network.allow[1].upstream_ca",
                                                                "is not a file"),
    }
    for i, (extra, (key, words)) in enumerate(cases.items()):
        prof = proxy_profile(senv, f'[[network.allow]]\nhost = "{NAME}"\n{extra}\n', {},
                             name=f"bad{i}")
        done = senv.run(["true"], args=["--profile", str(prof)])
        err = done.stderr.decode()
        assert done.returncode != 0 and str(prof) in err and key in err and words in err, err
        assert "Traceback" not in err
    prof = proxy_profile(senv, f'[[network.allow]]\nhost = "{NAME}"\n[[network.deny]]\n'
                               f'host = "{NAME}"\ninspect = true\n', {}, name="baddeny")
    done = senv.run(["true"], args=["--profile", str(prof)])
    assert "network.deny[1].inspect" in done.stderr.decode()
    assert "inspect belongs on [[network.allow]] rules" in done.stderr.decode()


def test_explain_shows_which_hosts_are_inspected(senv, tls_origin):
    prof = proxy_profile(senv, rule(tls_origin.port, inspect=True, ca=tls_origin.cert)
                         + '[[network.allow]]\nhost = "files.test"\n', {NAME: "127.0.0.1"},
                         name="explain")
    done = senv.run([_exe(), "explain", "--profile", str(prof)], sandboxed=False)
    text = done.stdout.decode()
    assert f"{NAME}:{tls_origin.port} (TLS inspected, upstream CA {tls_origin.cert})" in text
    assert "files.test:443   (" in text  # a blind tunnel says nothing more
    assert "TLS inspected: run CA trusted inside through" in text


# -- real clients ----------------------------------------------------------------------------

def test_pip_npm_git_and_wget_work_through_inspection(senv, tls_origin, tmp_path):
    """The run's CA is trusted with no client flags: pip (PIP_CERT), npm
    (NODE_EXTRA_CA_CERTS), git (GIT_SSL_CAINFO) and wget (the system bundle)
    fetch through an inspected tunnel whose rule allows GET and HEAD only."""
    import hashlib
    import io
    import json
    import tarfile

    from test_egress import _wheel

    www = senv.base / "www"
    pkg = www / "simple" / "demo-egress"
    pkg.mkdir(parents=True)
    wheel = _wheel(pkg)
    (pkg / "index.html").write_text(f'<a href="{wheel.name}">{wheel.name}</a>\n')
    tgz = www / "files" / "demo-egress-1.0.0.tgz"
    tgz.parent.mkdir()
    manifest = json.dumps({"name": "demo-egress", "version": "1.0.0", "main": "index.js"}).encode()
    with tarfile.open(tgz, "w:gz") as tf:
        for name, data in (("package/package.json", manifest),
                           ("package/index.js", b"module.exports = 'npm through inspection';\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    base = f"https://{NAME}:{tls_origin.port}"
    (www / "npm").mkdir()
    (www / "npm" / "demo-egress").write_text(json.dumps({
        "name": "demo-egress", "dist-tags": {"latest": "1.0.0"},
        "versions": {"1.0.0": {"name": "demo-egress", "version": "1.0.0",
                               "dist": {"tarball": f"{base}/files/demo-egress-1.0.0.tgz",
                                        "shasum": hashlib.sha1(tgz.read_bytes()).hexdigest()}}}}))
    src = tmp_path / "src"
    subprocess.run(["git", "init", "-q", "-b", "main", str(src)], check=True)
    subprocess.run(["git", "-C", str(src), "-c", "user.email=t@t", "-c", "user.name=t", "commit",
                    "-q", "--allow-empty", "-m", "through inspection"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(src), str(www / "repo.git")], check=True)
    subprocess.run(["git", "-C", str(www / "repo.git"), "update-server-info"], check=True)
    tls_origin.server.RequestHandlerClass = _static(www)
    prof = profile(senv, tls_origin, "clients", inspect=True, methods=["GET", "HEAD"])
    npm = shutil.which("npm") or "true"
    script = (f"{SYSTEM_PYTHON} -m venv .venv && .venv/bin/pip install -q --disable-pip-version-check "
              f"--no-cache-dir --index-url {base}/simple/ demo-egress && "
              ".venv/bin/python -c 'import demo_egress; print(demo_egress.VALUE)' && "
              f"git clone -q {base}/repo.git cloned && git -C cloned log --format=%s && "
              f"wget -q -O - {base}/npm/demo-egress | head -c 20 && echo && "
              f"{npm} install --no-audit --no-fund --registry {base}/npm/ demo-egress && "
              "node -e \"console.log(require('demo-egress'))\"")
    done = senv.sh(script, args=["--profile", str(prof)], timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    out = done.stdout.decode()
    assert "installed through the proxy" in out
    assert "through inspection" in out
    assert '{"name": "demo-egres' in out
    if npm != "true":
        assert "npm through inspection" in out


def _static(root: Path):
    class Static(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args) -> None:
            pass

    return Static


def test_runs_without_inspection_load_no_tls_code(senv, tls_origin):
    """The proxy of a run without inspect never loads OpenSSL's Python module
    or cryptography (seen in its memory map); an inspecting run's does."""
    if os.getuid() != 0 and senv.who.name != "self":
        pytest.skip("needs to read the proxy's memory map")
    loaded = {}
    for inspect in (False, True):
        prof = profile(senv, tls_origin, f"lazy{inspect}", inspect=inspect)
        senv.finish()
        proc = subprocess.Popen(senv.who.prefix() + [
            _exe(), "run", "--profile", str(prof), "--", "sh", "-c",
            f"curl -sk -o /dev/null https://{NAME}:{tls_origin.port}/x; sleep 2"],
            cwd=senv.ws, env=senv.environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        pids = _proxy_pids(proc.pid)
        time.sleep(1.0)
        maps = "".join(Path(f"/proc/{p}/maps").read_text() for p in pids)
        loaded[inspect] = ("_ssl." in maps, "cryptography" in maps)
        proc.communicate(timeout=30)
    assert loaded == {False: (False, False), True: (True, True)}
