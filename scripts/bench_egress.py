#!/usr/bin/env python3
"""Egress proxy benchmark: the same client and server, directly and through the proxy.

Every server is started here on 127.0.0.1; the test name ``bench.test`` is
pinned to it with the proxy's resolver override, so nothing asks DNS.

1. per-request overhead: a new connection and one small GET per request
   (http.client), direct and through the proxy, alternately; medians and
   the median of the paired differences;
2. throughput: curl downloads a file (default 100 MB) directly and through
   the proxy, plain HTTP and HTTPS (CONNECT), alternately; median MB/s and
   the ratio;
3. concurrency: N connections (default 200) through the proxy held open at
   once, then each makes a request; errors are counted;
4. startup: `sandbox run` of `true` with a proxy profile, against bare bwrap
   and against the default profile, alternately;
5. TLS inspection (``inspect = true``): one HTTPS request on a new connection
   directly, through a blind CONNECT tunnel and through an inspected tunnel
   (the proxy ends TLS with the run's CA and opens verified TLS upstream),
   alternately; and whole runs that make one HTTPS request, inspected
   against blind, which includes making the run's CA and the first leaf
   (the origin verified upstream against its own certificate, named by
   ``upstream_ca``, and again against the host's roots, which
   ``SSL_CERT_DIR`` extends by it).  The blind client's CA file is the
   system's roots and the origin's certificate, as many roots as the
   inspected client's bundle holds.

The proxy runs in a process of its own, as it does for a real run.

Usage: .venv/bin/python scripts/bench_egress.py [--requests 300] [--mb 100] [--conns 200] [--runs 30]
Only public tools: the standard library, curl, openssl and the installed `sandbox`.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import os
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sandbox.egress import netrules, proxy  # noqa: E402
from sandbox.policy import EgressRule  # noqa: E402

NAME = "bench.test"
INSPECTED = "inspected.test"  # the same TLS origin, reached through an inspected tunnel
BARE = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-all",
        "--die-with-parent", "--new-session", "true"]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/big"):
            size = os.path.getsize(self.server.big)
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.send_header("Connection", "close")
            self.end_headers()
            with open(self.server.big, "rb") as fh:
                self.wfile.flush()
                self.connection.sendfile(fh)  # zero-copy: a fast origin is the hard baseline
            self.close_connection = True
            return
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _TLSHandler(_Handler):
    # headers and body are two TLS records: without this, Nagle holds the
    # second until the client's delayed ACK (40 ms) on every request
    disable_nagle_algorithm = True


def _fork(target) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            target()
        finally:
            os._exit(0)
    return pid


def start_origin(big: str, cert: tuple[str, str] | None) -> tuple[int, int]:
    """An HTTP (or HTTPS) origin in its own process.  Returns (pid, port)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TLSHandler if cert else _Handler,
                                             bind_and_activate=False)
    server.request_queue_size = 1024
    server.daemon_threads = True
    server.server_bind()
    server.server_activate()
    server.big = big
    if cert is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*cert)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    pid = _fork(server.serve_forever)
    server.socket.close()
    return pid, port


def start_proxy(ports: list[int], inspect_port: int | None = None, upstream_ca: str = "",
                inspector=None) -> tuple[int, int]:
    allow = [EgressRule(NAME, tuple(ports))]
    if inspect_port is not None:  # a second name for the same origin, inspected
        allow.append(EgressRule(INSPECTED, (inspect_port,), inspect=True, upstream_ca=upstream_ca))
    rules = netrules.Rules(allow, (), ((NAME, "127.0.0.1"), (INSPECTED, "127.0.0.1")))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    port = listener.getsockname()[1]

    def serve() -> None:
        threading.stack_size(256 * 1024)

        def no_dns(*_a):
            raise AssertionError("the benchmark never resolves names")

        proxy.Proxy(listener, rules, lambda event: None, resolver=no_dns,
                    inspector=inspector).serve_forever()

    pid = _fork(serve)
    listener.close()
    return pid, port


def one_request(port: int, via: int | None) -> float:
    start = time.perf_counter()
    if via is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/small")
    else:
        conn = http.client.HTTPConnection("127.0.0.1", via, timeout=10)
        conn.request("GET", f"http://{NAME}:{port}/small", headers={"Host": f"{NAME}:{port}"})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    if resp.status != 200 or body != b"ok\n":
        raise SystemExit(f"bad response {resp.status} {body[:80]!r}")
    return time.perf_counter() - start


def bench_requests(port: int, proxy_port: int, n: int) -> None:
    for _ in range(20):
        one_request(port, None)
        one_request(port, proxy_port)
    direct, proxied = [], []
    for _ in range(n):
        direct.append(one_request(port, None))
        proxied.append(one_request(port, proxy_port))
    diffs = [p - d for p, d in zip(proxied, direct)]
    us = lambda v: f"{v * 1e6:8.0f} us"  # noqa: E731
    print(f"\n== per-request: new connection + GET, {n} pairs (http.client)")
    print(f"direct          median {us(statistics.median(direct))}")
    print(f"through proxy   median {us(statistics.median(proxied))}")
    print(f"overhead        median {us(statistics.median(diffs))}  (bar: 1000 us)")


def curl_speed(url: str, proxy_url: str | None, cacert: str | None) -> float:
    argv = ["curl", "-sS", "-o", "/dev/null", "-w", "%{speed_download} %{size_download}",
            "--max-time", "120"]
    if proxy_url:
        argv += ["-x", proxy_url]
    else:
        argv += ["--noproxy", "*", "--resolve", f"{NAME}:{url.split(':')[2].split('/')[0]}:127.0.0.1"]
    if cacert:
        argv += ["--cacert", cacert]
    out = subprocess.run(argv + [url], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]) / 1e6


def bench_throughput(label: str, url: str, proxy_port: int, cacert: str | None, runs: int) -> None:
    direct, proxied = [], []
    proxy_url = f"http://127.0.0.1:{proxy_port}"
    curl_speed(url, None, cacert)
    curl_speed(url, proxy_url, cacert)
    for _ in range(runs):
        direct.append(curl_speed(url, None, cacert))
        proxied.append(curl_speed(url, proxy_url, cacert))
    d, p = statistics.median(direct), statistics.median(proxied)
    print(f"\n== throughput: {label}, {runs} pairs (curl)")
    print(f"direct          median {d:8.0f} MB/s")
    print(f"through proxy   median {p:8.0f} MB/s")
    print(f"ratio           {p / d:8.2f}  (bar: 0.80)")


def bench_concurrency(port: int, proxy_port: int, n: int) -> None:
    barrier = threading.Barrier(n + 1, timeout=60)
    errors: list[str] = []
    oks: list[int] = []

    def client() -> None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=30)
            conn.connect()
            barrier.wait()  # all n connections are open at once
            conn.request("GET", f"http://{NAME}:{port}/small", headers={"Host": f"{NAME}:{port}"})
            resp = conn.getresponse()
            if resp.read() == b"ok\n" and resp.status == 200:
                oks.append(1)
            else:
                errors.append(f"status {resp.status}")
            conn.close()
        except Exception as exc:  # noqa: BLE001 - counted, not raised
            errors.append(repr(exc))
            try:
                barrier.abort()
            except threading.BrokenBarrierError:
                pass

    threads = [threading.Thread(target=client) for _ in range(n)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    for t in threads:
        t.join(60)
    took = time.perf_counter() - start
    print(f"\n== concurrency: {n} connections open at once through the proxy")
    print(f"succeeded {len(oks)}, errors {len(errors)}, {took * 1000:.0f} ms in all")
    for e in errors[:5]:
        print(f"  error: {e}")


def timed(argv: list[str], cwd: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({done.returncode}): {done.stderr.decode()}")
    return time.perf_counter() - start


def bench_startup(runs: int, origin_port: int) -> None:
    from bench_startup import age  # the same workspace preparation as the startup benchmark

    exe = str(Path(os.path.realpath(sys.prefix)) / "bin" / "sandbox")
    bwrap = shutil.which("bwrap")
    base = Path(__file__).resolve().parent.parent / ".test-root"  # not under /tmp: private inside
    base.mkdir(parents=True, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench-egress-", dir=base)
    try:
        prof = Path(work) / "net.toml"
        prof.write_text('extends = "default"\n[network]\nmode = "proxy"\n'
                        f'hosts = {{ "{NAME}" = "127.0.0.1" }}\n'
                        f'[[network.allow]]\nhost = "{NAME}"\nports = [8080]\n')
        ws = Path(work) / "ws"
        ws.mkdir()
        (ws / "README").write_text("workspace\n")
        age(Path(work))  # plans are cached only for inputs older than 2 s, as in a real checkout
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["XDG_CACHE_HOME"] = str(Path(work) / "cache")
        net = [exe, "run", "--profile", str(prof), "--", "true"]
        plain = [exe, "run", "--", "true"]
        bare = [bwrap, *BARE]
        for _ in range(3):
            for argv in (net, plain, bare):
                timed(argv, str(ws), env)
        a, b, c = [], [], []
        for _ in range(runs):
            a.append(timed(net, str(ws), env))
            b.append(timed(plain, str(ws), env))
            c.append(timed(bare, str(ws), env))
        # a run whose command makes one request: the proxy's deferred import
        # happens on this first connection
        prof.write_text(prof.read_text().replace("8080", str(origin_port)))
        age(Path(work))
        curl = ["curl", "-sS", "-o", "/dev/null", f"http://{NAME}:{origin_port}/small"]
        first = [exe, "run", "--profile", str(prof), "--", *curl]
        direct = curl[:-1] + ["--noproxy", "*", "--resolve", f"{NAME}:{origin_port}:127.0.0.1",
                              curl[-1]]
        for _ in range(3):
            timed(first, str(ws), env)
        d, e = [], []
        for _ in range(runs):
            d.append(timed(first, str(ws), env))
            e.append(timed(direct, str(ws), env))
        ms = lambda v: f"{v * 1000:7.1f} ms"  # noqa: E731
        print(f"\n== startup: `sandbox run -- true`, {runs} triples")
        print(f"proxy profile        median {ms(statistics.median(a))}")
        print(f"default (no network) median {ms(statistics.median(b))}")
        print(f"bare bwrap           median {ms(statistics.median(c))}")
        print(f"proxy - bare (paired) median {ms(statistics.median(x - z for x, z in zip(a, c)))}"
              "  (bar: +60 ms)")
        print(f"proxy - default       median {ms(statistics.median(x - y for x, y in zip(a, b)))}")
        print(f"\n== a run that makes one request: `sandbox run -- curl URL` (proxy profile), {runs} pairs")
        print(f"sandbox run -- curl  median {ms(statistics.median(d))}")
        print(f"curl on the host     median {ms(statistics.median(e))}")
        print(f"difference (paired)  median {ms(statistics.median(x - y for x, y in zip(d, e)))}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def tls_request(port: int, via: int | None, name: str, ctx: ssl.SSLContext) -> float:
    """One GET over a new TLS connection (and a new tunnel), http.client."""
    start = time.perf_counter()
    if via is None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
        conn._create_connection = _pinned(name)  # TLS name checked, address pinned
        conn.host = name
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", via, timeout=10, context=ctx)
        conn.set_tunnel(name, port)
    conn.request("GET", "/small")
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    if resp.status != 200 or body != b"ok\n":
        raise SystemExit(f"bad response {resp.status} {body[:80]!r}")
    return time.perf_counter() - start


def _pinned(name: str):
    def connect(address, timeout=None, source_address=None):
        return socket.create_connection(("127.0.0.1", address[1]), timeout)
    return connect


def bench_inspection(tport: int, proxy_port: int, origin_ctx: ssl.SSLContext,
                     run_ctx: ssl.SSLContext, n: int) -> None:
    """Direct, blind tunnel and inspected tunnel, one new connection per request."""
    cases = (("direct", lambda: tls_request(tport, None, NAME, origin_ctx)),
             ("blind tunnel", lambda: tls_request(tport, proxy_port, NAME, origin_ctx)),
             ("inspected", lambda: tls_request(tport, proxy_port, INSPECTED, run_ctx)))
    for _ in range(20):
        for _, fn in cases:
            fn()
    times: dict[str, list[float]] = {label: [] for label, _ in cases}
    for _ in range(n):
        for label, fn in cases:
            times[label].append(fn())
    us = lambda v: f"{v * 1e6:8.0f} us"  # noqa: E731
    med = {label: statistics.median(v) for label, v in times.items()}
    print(f"\n== TLS inspection, per request: new connection + GET over HTTPS, {n} triples")
    for label in times:
        print(f"{label:15} median {us(med[label])}")
    diff = [i - b for i, b in zip(times["inspected"], times["blind tunnel"])]
    print(f"blind - direct        median {us(statistics.median(b - d for b, d in zip(times['blind tunnel'], times['direct'])))}")
    print(f"inspected - blind     median {us(statistics.median(diff))}  (bar: 2000 us)")


def bench_inspected_runs(runs: int, tport: int, cert: str) -> None:
    """Whole runs that make one HTTPS request: inspected (CA and first leaf
    made in the run) against a blind tunnel, alternately."""
    from bench_startup import age

    exe = str(Path(os.path.realpath(sys.prefix)) / "bin" / "sandbox")
    base = Path(__file__).resolve().parent.parent / ".test-root"
    base.mkdir(parents=True, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench-tls-", dir=base)
    try:
        ca = Path(work) / "origin.pem"
        shutil.copy(cert, ca)
        ws = Path(work) / "ws"
        ws.mkdir()
        shutil.copy(cert, ws / "origin.pem")
        head = ('extends = "default"\n[network]\nmode = "proxy"\n'
                f'hosts = {{ "{NAME}" = "127.0.0.1" }}\n[[network.allow]]\nhost = "{NAME}"\n'
                f'ports = [{tport}]\n')
        blind, inspected = Path(work) / "blind.toml", Path(work) / "inspected.toml"
        blind.write_text(head)
        inspected.write_text(head + f'inspect = true\nupstream_ca = "{ca}"\n')
        # the same without upstream_ca: the proxy verifies the origin against
        # the host's roots (as most real profiles do), which SSL_CERT_DIR
        # extends by the origin's certificate: a copy of the system's hashed
        # directory with one link more
        host_roots = Path(work) / "host-roots.toml"
        host_roots.write_text(head + "inspect = true\n")
        roots = _roots_with(cert, Path(work) / "certs")
        age(Path(work))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["XDG_CACHE_HOME"] = str(Path(work) / "cache")
        url = f"https://{NAME}:{tport}/small"
        # The blind client trusts what a client of a public origin trusts, the
        # system's roots, with the origin's certificate added: curl parses
        # its whole CA file at start (about 22 ms of CPU for Debian's 144
        # roots), and so does the inspected client, whose bundle is the
        # system's roots and the run's CA.  A one-certificate file for the
        # blind client would charge that parse to inspection ("blind, one
        # root": how this was measured before, kept for comparison).
        from sandbox.egress.tlstrust import system_bundle

        with open(system_bundle(), "rb") as fh:
            (ws / "roots-and-origin.pem").write_bytes(fh.read() + Path(cert).read_bytes())
        cmd = {"blind": [exe, "run", "--profile", str(blind), "--", "curl", "-sS", "-o",
                         "/dev/null", "--cacert", "roots-and-origin.pem", url],
               "blind, one root": [exe, "run", "--profile", str(blind), "--", "curl", "-sS",
                                   "-o", "/dev/null", "--cacert", "origin.pem", url],
               "inspected": [exe, "run", "--profile", str(inspected), "--", "curl", "-sS", "-o",
                             "/dev/null", url],
               "host roots": [exe, "run", "--profile", str(host_roots), "--", "curl", "-sS",
                              "-o", "/dev/null", url],
               "blind true": [exe, "run", "--profile", str(blind), "--", "true"],
               "inspected true": [exe, "run", "--profile", str(inspected), "--", "true"]}
        envs = {k: {**env, "SSL_CERT_DIR": roots} if k == "host roots" else env for k in cmd}
        for _ in range(3):
            for label, argv in cmd.items():
                timed(argv, str(ws), envs[label])
        times: dict[str, list[float]] = {k: [] for k in cmd}
        cpu: dict[str, list[float]] = {k: [] for k in cmd}
        for _ in range(runs):
            for label, argv in cmd.items():
                # CPU of the run and everything it waited for (the proxy, bwrap,
                # the command): steadier than wall time on a shared machine
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                times[label].append(timed(argv, str(ws), envs[label]))
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[label].append(after.ru_utime + after.ru_stime
                                  - before.ru_utime - before.ru_stime)
        ms = lambda v: f"{v * 1000:7.1f} ms"  # noqa: E731
        print(f"\n== TLS inspection, whole runs, {runs} rounds")
        for label, values in times.items():
            print(f"{label:17} median {ms(statistics.median(values))}   CPU "
                  f"{ms(statistics.median(cpu[label]))}")
        pair = lambda a, b: statistics.median(x - y for x, y in zip(times[a], times[b]))  # noqa: E731
        print(f"one request, inspected - blind (paired) median {ms(pair('inspected', 'blind'))}"
              "  (bar: +50 ms)")
        print(f"the same, upstream checked against host roots   median "
              f"{ms(pair('host roots', 'blind'))}  (bar: +50 ms)")
        print(f"inspected - blind with a one-root CA file  median "
              f"{ms(pair('inspected', 'blind, one root'))}  (the earlier method)")
        print(f"`true`, inspected - blind (paired)       median {ms(pair('inspected true', 'blind true'))}")
        cpair = lambda a, b: statistics.median(x - y for x, y in zip(cpu[a], cpu[b]))  # noqa: E731
        print(f"CPU, one request, inspected - blind      median {ms(cpair('inspected', 'blind'))}")
        print(f"CPU, the same with the host's roots      median {ms(cpair('host roots', 'blind'))}")
        print(f"CPU, inspected - blind with one root     median "
              f"{ms(cpair('inspected', 'blind, one root'))}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _roots_with(cert: str, directory: Path) -> str:
    """A hashed CA directory: the system's links, and one for ``cert``."""
    import re

    directory.mkdir()
    system = ssl.get_default_verify_paths().capath or "/etc/ssl/certs"
    for name in os.listdir(system):
        if re.fullmatch(r"[0-9a-f]{8}\.[0-9]+", name):
            os.symlink(os.path.join(system, name), directory / name)
    digest = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", cert],
                            capture_output=True, text=True, check=True).stdout.strip()
    n = 0
    while (directory / f"{digest}.{n}").exists():
        n += 1
    shutil.copy(cert, directory / f"{digest}.{n}")
    return str(directory)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--conns", type=int, default=200)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--transfers", type=int, default=15)
    ap.add_argument("--only-tls", action="store_true", help="only the TLS inspection figures")
    args = ap.parse_args()
    pids: list[int] = []
    tmp = tempfile.mkdtemp(prefix="bench-egress-")
    try:
        big = os.path.join(tmp, "big")
        with open(big, "wb") as fh:
            chunk = os.urandom(1 << 20)
            for _ in range(args.mb):
                fh.write(chunk)
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", cert, "-subj", f"/CN={NAME}", "-addext",
                        f"subjectAltName=DNS:{NAME},DNS:{INSPECTED}", "-days", "1"], check=True,
                       capture_output=True)
        pid, port = start_origin(big, None)
        pids.append(pid)
        tpid, tport = start_origin(big, (cert, key))
        pids.append(tpid)
        from sandbox.egress import tlsca, tlsinspect

        inspector = tlsinspect.Inspector(tlsca.RunCA([INSPECTED]))  # before the fork: the
        run_ctx = ssl.create_default_context(cadata=inspector.ca.cert_pem.decode())  # client needs it
        origin_ctx = ssl.create_default_context(cafile=cert)
        ppid, proxy_port = start_proxy([port, tport], tport, cert, inspector)
        pids.append(ppid)
        time.sleep(0.2)
        if args.only_tls:
            bench_inspection(tport, proxy_port, origin_ctx, run_ctx, args.requests)
            bench_inspected_runs(args.runs, tport, cert)
            return
        print(f"origin 127.0.0.1:{port}, TLS origin 127.0.0.1:{tport}, proxy 127.0.0.1:{proxy_port}; "
              f"{os.cpu_count()} CPUs")
        bench_requests(port, proxy_port, args.requests)
        bench_throughput(f"{args.mb} MB over plain HTTP", f"http://{NAME}:{port}/big", proxy_port,
                         None, args.transfers)
        bench_throughput(f"{args.mb} MB over HTTPS (CONNECT tunnel)", f"https://{NAME}:{tport}/big",
                         proxy_port, cert, args.transfers)
        bench_concurrency(port, proxy_port, args.conns)
        bench_startup(args.runs, port)
        bench_inspection(tport, proxy_port, origin_ctx, run_ctx, args.requests)
        bench_inspected_runs(args.runs, tport, cert)
    finally:
        for pid in pids:  # only the processes this script started
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
