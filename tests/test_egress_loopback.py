"""Loopback and /etc/hosts through the egress proxy: what a user expects.

* A name only the host's /etc/hosts knows is found (the proxy asks DNS for
  ``name.``, which the C library never matches in /etc/hosts).
* A rule naming 127.0.0.1 reaches the host's loopback by that address and
  by any name that leads there, and the address leaves NO_PROXY so that
  clients send it to the proxy at all.

Servers are the test's own on the host's 127.0.0.1; the only name used in
the sandbox is ``localhost``, which /etc/hosts answers (no DNS).
"""

from __future__ import annotations

import http.server
import ipaddress
import shutil
import socket
import threading

import pytest
from egress_support import proxy_profile

CURL = shutil.which("curl")


def test_hosts_file_is_read_before_dns(tmp_path, monkeypatch):
    from sandbox.egress import hostsfile, proxy

    hosts = tmp_path / "hosts"
    hosts.write_text("# comment\n10.1.2.3  Build.Internal  alias # trailing\n::1 v6only\n"
                     "bogus line\n10.1.2.4 build.internal\n")
    monkeypatch.setattr(hostsfile, "PATH", str(hosts))
    monkeypatch.setattr(hostsfile, "_table", None)
    asked: list[str] = []

    def glibc_like(host, port, *args, **kwargs):
        # the C library's files source never matches "name." in /etc/hosts
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(proxy.socket, "getaddrinfo", glibc_like)
    assert proxy._system_resolver("build.internal", 80) == [
        ipaddress.ip_address("10.1.2.3"), ipaddress.ip_address("10.1.2.4")]
    assert proxy._system_resolver("v6only", 80) == [ipaddress.ip_address("::1")]
    assert asked == []  # never a DNS question for what /etc/hosts answers
    with pytest.raises(socket.gaierror):
        proxy._system_resolver("elsewhere.example", 80)
    assert asked == ["elsewhere.example."]  # the rest stays absolute


class _Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.server.seen.append(self.headers.get("Host"))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def _localhost_in_hosts_file() -> bool:
    from sandbox.egress import hostsfile

    try:
        with open(hostsfile.PATH) as fh:
            table = hostsfile.parse(fh.read())
    except OSError:
        return False
    return ipaddress.ip_address("127.0.0.1") in table.get("localhost", [])


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
@pytest.mark.skipif(not _localhost_in_hosts_file(),
                    reason="/etc/hosts does not map localhost to 127.0.0.1 (the proxy would ask DNS)")
def test_a_rule_naming_loopback_works_by_address_and_by_name(senv):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    server.daemon_threads = True
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        profile = proxy_profile(senv, (
            f'[[network.allow]]\nhost = "127.0.0.1"\nports = [{port}]\n\n'
            f'[[network.allow]]\nhost = "localhost"\nports = [{port}]\n'))
        curl = f"{CURL} -sS -o /dev/null -w '%{{http_code}}\\n' --max-time 20"
        out = senv.run(["sh", "-c", f'echo "$NO_PROXY"; {curl} http://127.0.0.1:{port}/a; '
                                    f"{curl} http://localhost:{port}/b; "
                                    f"{curl} http://127.0.0.1:{port + 1 if port < 65535 else 1}/c"],
                       args=["--profile", str(profile)])
        lines = out.stdout.decode().split()
        # neither is direct any more: both go to the proxy, which reaches the host's server
        assert lines[0] == "::1"
        assert lines[1:3] == ["200", "200"], out.stderr
        assert lines[3] == "403"  # another port of the host's loopback stays closed
        assert server.seen == [f"127.0.0.1:{port}", f"localhost:{port}"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
