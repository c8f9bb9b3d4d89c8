"""Helpers for the credential tests over inspected HTTPS: a loopback TLS
origin that logs every request reaching it, and a raw client that speaks
through the sandbox's proxy byte by byte (for the red-team tests)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import http.server
import os
import shutil
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

OPENSSL = shutil.which("openssl")
NAMES = ("api.test", "hooks.test", "api.anthropic.com", "github.com")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a second request on one connection arrives

    def log_message(self, *args) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append({"method": self.command, "path": self.path,
                                 "headers": [(k.lower(), v) for k, v in self.headers.items()],
                                 "body": body, "sni": getattr(self.connection, "sandbox_sni",
                                                              None)})
        out = f"origin saw {self.command} {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = _serve


def header(seen: dict, name: str) -> list[str]:
    """Every value of ``name`` in one logged request."""
    return [v for k, v in seen["headers"] if k == name]


class TLSOrigin:
    """HTTPS on 127.0.0.1 (``port`` 0: any free port) with a self-signed
    certificate for ``NAMES``; ``seen`` logs method, path, headers and body."""

    def __init__(self, directory: Path, port: int = 0, handler=None) -> None:
        self.cert, self.key = directory / "origin-cert.pem", directory / "origin-key.pem"
        if not self.cert.exists():
            sans = ",".join(f"DNS:{n}" for n in NAMES) + ",IP:127.0.0.1"
            subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(self.key),
                            "-out", str(self.cert), "-subj", "/CN=api.test", "-addext",
                            f"subjectAltName={sans}", "-days", "2"], check=True,
                           capture_output=True)
            os.chmod(self.cert, 0o644)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler or _Handler)
        self.server.daemon_threads = True
        self.server.seen = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.cert), str(self.key))

        def note_sni(tls, name, _ctx):
            tls.sandbox_sni = name
        ctx.sni_callback = note_sni
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


# Runs inside the sandbox under /usr/bin/python3: CONNECT through the proxy
# (or straight to an address with --direct), TLS with the given SNI against
# the bundle the sandbox names in SSL_CERT_FILE (or a CA file), then the raw
# bytes of argv[3] (Python escapes such as \r\n; {PH} is $API_KEY), then
# everything read back.
RAW_CLIENT = r'''
import os, socket, ssl, sys, time
authority, sni, raw = sys.argv[1], sys.argv[2], sys.argv[3].encode().decode("unicode_escape")
raw = raw.replace("{PH}", os.environ.get("API_KEY", ""))  # the run's placeholder
ca = sys.argv[4] if len(sys.argv) > 4 else os.environ.get("SSL_CERT_FILE")
direct = len(sys.argv) > 5
host, _, port = authority.rpartition(":")
if direct:
    s = socket.create_connection((host.strip("[]"), int(port)), timeout=20)
else:
    s = socket.create_connection(("127.0.0.1", 3128), timeout=20)
    s.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    print("CONNECT:", line)
    if " 200" not in line:
        print(head.decode("latin-1"))
        sys.exit(0)
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False  # the name checks under test are the proxy's
ctx.set_alpn_protocols(["http/1.1"])
try:
    t = ctx.wrap_socket(s, server_hostname=sni or None)
except (ssl.SSLError, OSError) as e:
    print("TLSERR:", e)
    sys.exit(0)
t.sendall(raw.encode("latin-1"))
out = b""
t.settimeout(8)
try:
    while True:
        chunk = t.recv(65536)
        if not chunk:
            break
        out += chunk
except (ssl.SSLError, OSError, TimeoutError) as e:
    out += f"\n[read ended: {type(e).__name__}]".encode()
print(out.decode("latin-1"))
'''


@contextlib.contextmanager
def origin_on_443(directory: Path, handler=None):
    """A ``TLSOrigin`` on 127.0.0.1:443, the port the built-in profiles'
    rules name.  One test at a time holds it (a lock next to the test
    trees: pytest-xdist workers run the root and user variants at once)."""
    lock = open(directory.parent / "origin-443.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            srv = TLSOrigin(directory, port=443, handler=handler)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EADDRINUSE):
                pytest.skip(f"cannot listen on 127.0.0.1:443 for the built-in profile's rules: {e}")
            raise
        try:
            yield srv
        finally:
            srv.close()
    finally:
        lock.close()
