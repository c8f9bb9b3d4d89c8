"""The Landlock + seccomp fallback, in a simulated container without user namespaces.

Every run here goes through ``tests/nouserns.py`` (a Docker-default-like
seccomp filter that refuses new user namespaces, and a default container's
capability bounding set for root), so the real bwrap fails to start and the
real ``sandbox run`` falls back to ``sandbox.linux.confine``.  Each attack is
shown to work in that same container *without* the sandbox, then to fail
inside it; each degraded guarantee is shown to be named in the one line the
run prints before the command starts, with what is still blocked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

import nouserns
from conftest import sandbox_exe
from test_workloads import PY, _intree_sdist

pytestmark = [
    pytest.mark.skipif(nouserns.unavailable() is not None, reason=str(nouserns.unavailable())),
    pytest.mark.skipif(not os.path.exists(PY), reason=f"{PY} is needed (the test user runs it)"),
]
FALLBACK = "sandbox: fallback:"


def landlock_abi() -> int:
    from sandbox.linux import landlock

    return landlock.abi_version()


def crun(senv, command, *, args=(), sandboxed=True, env=None, timeout=120, cwd=None):
    """Run ``command`` in the simulated container, through ``sandbox run`` or bare."""
    senv.finish()
    full = [sandbox_exe(), "run", *args, "--", *command] if sandboxed else list(command)
    return subprocess.run(nouserns.prefix() + senv.who.prefix() + full, cwd=cwd or senv.ws,
                          env=env or senv.environ(), capture_output=True, timeout=timeout)


def py(senv, code: str, **kw):
    return crun(senv, [PY, "-c", textwrap.dedent(code)], **kw)


def text(r) -> str:
    return (f"exit {r.returncode}\n--- stdout\n{r.stdout.decode(errors='replace')[-3000:]}"
            f"\n--- stderr\n{r.stderr.decode(errors='replace')[-3000:]}")


def fallback_line(r) -> str:
    lines = [ln for ln in r.stderr.decode().splitlines() if ln.startswith(FALLBACK)]
    assert len(lines) == 1, text(r)
    return lines[0]


@pytest.fixture
def fenv(senv):
    if landlock_abi() < 1:
        pytest.skip("this kernel has no Landlock")
    return senv


# ----------------------------------------------------------------------- the ladder


def test_falls_back_with_one_line_before_the_command(fenv):
    report = fenv.base / "report.json"
    r = crun(fenv, ["sh", "-c", "echo CMD-RAN >&2"], args=["--report", str(report)])
    assert r.returncode == 0, text(r)
    err = r.stderr.decode()
    line = fallback_line(r)
    assert err.index(FALLBACK) < err.index("CMD-RAN"), err  # said before the command started
    assert "bwrap cannot create namespaces" in line and "degraded:" in line
    assert f"Landlock ABI {landlock_abi()}" in line
    doc = json.loads(report.read_text())
    assert doc["backend"]["name"] == "landlock" and doc["backend"]["guarantee"] == "degraded"
    assert doc["backend"]["degraded"] and doc["exit_status"] == 0
    # the host is marked: the next run asks bwrap quietly first (no bwrap error line)
    r = crun(fenv, ["true"])
    assert r.returncode == 0, text(r)
    fallback_line(r)
    assert "bwrap:" not in r.stderr.decode(), text(r)
    # --quiet does not hide it: never a silent downgrade
    r = crun(fenv, ["true"], args=["--quiet"])
    fallback_line(r)


def test_healthy_host_uses_bwrap_and_says_so(fenv):
    report = fenv.base / "report.json"
    fenv.finish()
    r = fenv.run(["true"], args=["--report", str(report)])
    assert r.returncode == 0, text(r)
    assert FALLBACK not in r.stderr.decode()
    doc = json.loads(report.read_text())
    assert doc["backend"]["name"] == "bwrap" and doc["backend"]["guarantee"] == "full"


def test_marker_cleared_when_bwrap_works_again(fenv):
    assert crun(fenv, ["true"]).returncode == 0
    marker = fenv.home / ".cache" / "sandbox" / "userns-blocked"
    assert marker.exists()
    r = fenv.run(["true"])  # the same host, no container: bwrap works again
    assert r.returncode == 0 and FALLBACK not in r.stderr.decode(), text(r)
    assert not marker.exists()


def test_require_full_fails_closed(fenv):
    profile = fenv.base / "ci.toml"
    profile.write_text('extends = "default"\nrequire = "full"\n')
    ran = fenv.ws / "ran"
    r = crun(fenv, ["touch", str(ran)], args=["--profile", str(profile)])
    assert r.returncode == 125, text(r)
    assert not ran.exists()
    assert 'require = "full"' in r.stderr.decode() and FALLBACK not in r.stderr.decode()
    # control: the default profile falls back and runs it
    r = crun(fenv, ["touch", str(ran)])
    assert r.returncode == 0 and ran.exists(), text(r)
    # with the host marked, the plan itself refuses (bwrap is not even started)
    ran.unlink()
    r = crun(fenv, ["touch", str(ran)], args=["--profile", str(profile)])
    assert r.returncode == 125 and not ran.exists(), text(r)
    assert 'require = "full"' in r.stderr.decode() and "bwrap:" not in r.stderr.decode()


def test_fallback_over_full_parent_is_a_weakening(fenv):
    parent = fenv.base / "ci.toml"
    parent.write_text('extends = "default"\nrequire = "full"\n')
    child = fenv.base / "loose.toml"
    child.write_text(f'extends = "{parent}"\nrequire = "fallback"\n')
    r = crun(fenv, ["true"], args=["--profile", str(child)])
    assert r.returncode == 0, text(r)
    assert 'require: "full" -> "fallback"' in r.stderr.decode() or \
        "require: full -> fallback" in r.stderr.decode(), text(r)


def test_explain_names_the_backend(fenv):
    crun(fenv, ["true"])  # marks the host
    r = subprocess.run(nouserns.prefix() + fenv.who.prefix() + [sandbox_exe(), "explain", "--json"],
                       cwd=fenv.ws, env=fenv.environ(), capture_output=True, timeout=60)
    assert r.returncode == 0, text(r)
    doc = json.loads(r.stdout)
    assert doc["backend"]["name"] == "landlock" and doc["backend"]["degraded"]


# --------------------------------------------------------------------------- attacks


def test_writes_outside_the_workspace_fail(fenv):
    outside = fenv.base / "outside"
    outside.mkdir()
    script = f"""
        import os, sys
        hits = []
        for path in ({str(outside / 'x')!r}, {str(fenv.home / 'x')!r}, {str(fenv.home / '.bashrc')!r}):
            try:
                with open(path, "w") as fh:
                    fh.write("planted")
                hits.append(path)
            except OSError as exc:
                print("refused", path, exc.errno)
        try:
            os.symlink("/etc/passwd", {str(outside / 'link')!r})
            hits.append("symlink")
        except OSError:
            pass
        print("HITS", hits)
        open("in-workspace", "w").write("ok")
    """
    bare = py(fenv, script, sandboxed=False)
    assert "HITS []" not in bare.stdout.decode(), text(bare)  # the attack works without
    for p in (outside / "x", fenv.home / "x", fenv.home / ".bashrc", outside / "link"):
        if p.exists() or p.is_symlink():
            p.unlink()
    r = py(fenv, script)
    assert r.returncode == 0, text(r)
    assert "HITS []" in r.stdout.decode(), text(r)
    assert not (outside / "x").exists() and not (fenv.home / "x").exists()
    assert (fenv.ws / "in-workspace").read_text() == "ok"


def test_secret_files_unreadable(fenv):
    (fenv.home / ".ssh").mkdir()
    (fenv.home / ".ssh" / "id_ed25519").write_text("SECRET-KEY\n")
    (fenv.home / ".aws").mkdir()
    (fenv.home / ".aws" / "credentials").write_text("SECRET-AWS\n")
    (fenv.home / ".netrc").write_text("SECRET-NETRC\n")
    (fenv.home / "notes.txt").write_text("plain\n")
    os.symlink(fenv.home / ".ssh" / "id_ed25519", fenv.ws / "key-link")
    script = f"""
        for path in ({str(fenv.home / '.ssh/id_ed25519')!r}, {str(fenv.home / '.aws/credentials')!r},
                     {str(fenv.home / '.netrc')!r}, "key-link", {str(fenv.home / 'notes.txt')!r}):
            try:
                print(open(path).read().strip())
            except OSError as exc:
                print("refused", path, exc.errno)
    """
    bare = py(fenv, script, sandboxed=False).stdout.decode()
    assert "SECRET-KEY" in bare and "SECRET-AWS" in bare and "SECRET-NETRC" in bare
    r = py(fenv, script)
    out = r.stdout.decode()
    assert r.returncode == 0, text(r)
    assert "SECRET" not in out, text(r)
    assert "plain" in out  # the rest of $HOME stays readable
    assert out.count("refused") == 4, out


def test_host_tmp_and_state_unreadable(fenv):
    if fenv.who.name != "root":
        pytest.skip("writes a file in the host's /tmp as root only")
    probe = Path("/tmp") / f"sbx-fallback-{os.getpid()}-{fenv.base.name}"
    probe.write_text("HOST-TMP\n")
    try:
        script = f"""
            import os, tempfile
            try:
                print(open({str(probe)!r}).read())
            except OSError as exc:
                print("refused", exc.errno)
            print("tmpdir", tempfile.gettempdir())
        """
        assert "HOST-TMP" in py(fenv, script, sandboxed=False).stdout.decode()
        r = py(fenv, script)
        assert "HOST-TMP" not in r.stdout.decode() and "refused" in r.stdout.decode(), text(r)
    finally:
        probe.unlink()


def test_inet_sockets_refused(fenv):
    script = """
        import socket
        for fam, kind in ((socket.AF_INET, socket.SOCK_STREAM), (socket.AF_INET, socket.SOCK_DGRAM),
                          (socket.AF_INET6, socket.SOCK_STREAM), (socket.AF_INET6, socket.SOCK_DGRAM)):
            try:
                socket.socket(fam, kind).close()
                print("OPENED", fam, kind)
            except OSError as exc:
                print("refused", exc.errno)
        a, b = socket.socketpair()  # unix socketpairs still work (asyncio needs them)
        print("socketpair ok")
    """
    bare = py(fenv, script, sandboxed=False).stdout.decode()
    assert bare.count("OPENED") == 4, bare
    r = py(fenv, script)
    out = r.stdout.decode()
    assert "OPENED" not in out and out.count("refused") == 4, text(r)
    assert "socketpair ok" in out


def test_kernel_surface_refused(fenv):
    script = """
        import ctypes, os, signal, time
        libc = ctypes.CDLL(None, use_errno=True)
        pid = os.fork()
        if pid == 0:
            time.sleep(5)
            os._exit(0)
        time.sleep(0.1)
        res = {}
        res["ptrace"] = libc.ptrace(16, pid, 0, 0)  # PTRACE_ATTACH
        res["personality"] = libc.personality(0x0040000)  # ADDR_NO_RANDOMIZE
        res["add_key"] = libc.syscall(248, b"user", b"k", b"v", 1, -2)  # add_key (x86_64)
        open("f", "w").close()
        res["setuid-bit"] = libc.chmod(b"f", 0o4755)
        res["newuser"] = libc.unshare(0x10000000)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        print(" ".join(f"{k}={'ok' if v >= 0 else 'refused'}" for k, v in sorted(res.items())))
    """
    if os.uname().machine != "x86_64":
        pytest.skip("the probe uses x86_64 syscall numbers")
    bare = py(fenv, script, sandboxed=False).stdout.decode()
    # in the container without the sandbox: all but the container's own refusal work
    for probe in ("ptrace=ok", "personality=ok", "add_key=ok", "setuid-bit=ok"):
        assert probe in bare, bare
    assert "newuser=refused" in bare
    r = py(fenv, script)
    out = r.stdout.decode()
    assert r.returncode == 0, text(r)
    for probe in ("ptrace", "personality", "add_key", "setuid-bit", "newuser"):
        assert f"{probe}=refused" in out, text(r)


def _host_sleeper(fenv) -> subprocess.Popen:
    # in the same container, as the same user: only the sandbox stands between them
    return subprocess.Popen(nouserns.prefix() + fenv.who.prefix() + ["sleep", "60"])


def test_signals_and_proc_of_host_processes_refused(fenv):
    if landlock_abi() < 6:
        pytest.skip("signal scoping needs Landlock ABI 6")
    victim = _host_sleeper(fenv)
    try:
        time.sleep(0.2)
        script = f"""
            import os
            try:
                open("/proc/{victim.pid}/environ", "rb").read()
                print("ENVIRON-READ")
            except OSError as exc:
                print("environ refused", exc.errno)
            try:
                os.kill({victim.pid}, 0)
                print("SIGNAL-SENT")
            except OSError as exc:
                print("signal refused", exc.errno)
        """
        bare = py(fenv, script, sandboxed=False).stdout.decode()
        assert "ENVIRON-READ" in bare and "SIGNAL-SENT" in bare, bare
        r = py(fenv, script)
        out = r.stdout.decode()
        assert "ENVIRON-READ" not in out and "SIGNAL-SENT" not in out, text(r)
        assert victim.poll() is None
        # the degraded part, named before the run: the process is visible
        assert "host processes visible" in fallback_line(r)
        assert os.path.exists(f"/proc/{victim.pid}")
    finally:
        victim.kill()
        victim.wait()


def test_root_has_no_capabilities(fenv):
    script = """
        for line in open("/proc/self/status"):
            if line.startswith(("CapEff", "CapPrm", "CapBnd", "NoNewPrivs")):
                print(line.strip())
    """
    r = py(fenv, script)
    out = r.stdout.decode()
    assert r.returncode == 0, text(r)
    assert "CapEff:\t0000000000000000" in out and "CapPrm:\t0000000000000000" in out, out
    assert "NoNewPrivs:\t1" in out
    if fenv.who.name == "root":  # the container gives root capabilities; the sandbox takes them
        bare = py(fenv, script, sandboxed=False).stdout.decode()
        assert "CapEff:\t0000000000000000" not in bare


def test_leftover_processes_are_killed(fenv):
    pidfile = fenv.ws / "pid"
    r = crun(fenv, ["sh", "-c", f"(setsid sleep 300 & echo $! > {pidfile}) ; exit 0"])
    assert r.returncode == 0, text(r)
    pid = int(pidfile.read_text())
    for _ in range(100):
        if not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z":
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("a process the command left behind outlived the sandbox")


# ------------------------------------------------------------------- degraded, named


def test_degraded_env_file_in_workspace_is_named_and_readable(fenv):
    (fenv.ws / ".env").write_text("API_TOKEN=ws-secret\n")
    r = crun(fenv, ["cat", ".env"])
    assert r.returncode == 0, text(r)
    line = fallback_line(r)
    assert "secret file(s) inside the workspace readable" in line
    # exactly what is degraded: the content is visible (bwrap would show it empty)
    assert b"ws-secret" in r.stdout
    # still blocked: the same secret outside the workspace
    (fenv.home / ".ssh").mkdir()
    (fenv.home / ".ssh" / "id_rsa").write_text("home-secret\n")
    r = crun(fenv, ["cat", str(fenv.home / ".ssh" / "id_rsa")])
    assert r.returncode != 0 and b"home-secret" not in r.stdout, text(r)


def test_degraded_protected_paths_writable_but_audited(fenv):
    subprocess.run(["git", "init", "-q", str(fenv.ws)], check=True)
    hook = fenv.ws / ".git" / "hooks" / "pre-commit"
    r = crun(fenv, ["sh", "-c", f"printf '#!/bin/sh\\necho pwned\\n' > {hook} && chmod +x {hook} "
                                "&& echo WROTE"])
    line = fallback_line(r)
    assert "protected path(s) in the workspace writable" in line, line
    assert b"WROTE" in r.stdout, text(r)  # degraded: the write itself succeeds
    # still blocked: the audit after the run neutralised the hook before git could run it
    assert not (hook.exists() and os.access(hook, os.X_OK)), text(r)
    assert "audit" in r.stderr.decode().lower(), text(r)


def test_degraded_listing_of_secret_dir_names(fenv):
    (fenv.home / ".ssh").mkdir()
    (fenv.home / ".ssh" / "id_rsa").write_text("k\n")
    r = crun(fenv, ["sh", "-c", f"ls {fenv.home}/.ssh; cat {fenv.home}/.ssh/id_rsa"])
    assert "file names in hidden directories listable" in fallback_line(r)
    assert b"id_rsa" in r.stdout  # the name, which bwrap would hide
    assert r.returncode != 0 and b"k\n" not in r.stdout.replace(b"id_rsa\n", b"")


# ------------------------------------------------------------------------- utility


def test_everyday_work_still_works(fenv):
    dist = fenv.ws / "dist"
    dist.mkdir()
    intree = _intree_sdist(dist)
    pip = ".venv/bin/python -m pip --disable-pip-version-check --no-input"
    script = f"""
        set -e
        {PY} -c 'print("python ok")'
        git init -q repo && cd repo
        echo hi > a.txt && git add a.txt
        git -c user.name=T -c user.email=t@example.invalid commit -qm first
        git log --oneline | wc -l
        cd ..
        t=$(mktemp) && echo temp > "$t" && cat "$t" && rm "$t"
        {PY} -c 'import tempfile; f=tempfile.NamedTemporaryFile(); print("tempfile ok")'
        {PY} -m venv .venv
        {pip} install --no-index dist/{intree.name} >/dev/null
        .venv/bin/python -c 'import tinyback; print("pkg", tinyback.VALUE)'
        ls ~ >/dev/null && echo "home listable"
    """
    r = crun(fenv, ["sh", "-c", textwrap.dedent(script)], env=fenv.environ(
        PIP_CONFIG_FILE="/dev/null"), timeout=300)
    out = r.stdout.decode()
    assert r.returncode == 0, text(r)
    for want in ("python ok", "temp", "tempfile ok", "pkg intree-sdist-ok", "home listable"):
        assert want in out, text(r)
    assert (fenv.ws / "repo" / ".git").is_dir() and (fenv.ws / ".venv" / "bin" / "python").exists()


def test_exit_status_and_scratch_removed(fenv):
    r = crun(fenv, ["sh", "-c", "echo $TMPDIR > tmpdir; touch $TMPDIR/x; exit 7"])
    assert r.returncode == 7, text(r)
    scratch = Path((fenv.ws / "tmpdir").read_text().strip())
    assert scratch.name.startswith("run-") and not scratch.exists()
    r = crun(fenv, ["sh", "-c", "kill -TERM $$"])
    assert r.returncode == 128 + signal.SIGTERM, text(r)


def test_degraded_host_unix_sockets_named_abstract_ones_scoped(fenv):
    import socket

    if landlock_abi() < 6:
        pytest.skip("abstract unix socket scoping needs Landlock ABI 6")
    path = fenv.base / "host.sock"
    named = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    named.bind(str(path))
    named.listen(8)
    os.chmod(path, 0o777)
    abstract_name = f"sbx-fallback-{os.getpid()}-{fenv.base.name}"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind("\0" + abstract_name)
    abstract.listen(8)
    script = f"""
        import socket
        for label, addr in (("named", {str(path)!r}), ("abstract", "\\0" + {abstract_name!r})):
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(addr)
                print(label, "CONNECTED")
            except OSError as exc:
                print(label, "refused", exc.errno)
    """
    try:
        bare = py(fenv, script, sandboxed=False).stdout.decode()
        assert "named CONNECTED" in bare and "abstract CONNECTED" in bare, bare
        r = py(fenv, script)
        out = r.stdout.decode()
        # degraded, and said before the run: a host socket's path still connects
        assert "host unix sockets reachable by path" in fallback_line(r)
        assert "named CONNECTED" in out, text(r)
        # still blocked: abstract sockets outside the sandbox's Landlock domain
        assert "abstract refused" in out, text(r)
        # what the profile can do about it: refuse AF_UNIX sockets altogether
        profile = fenv.base / "nounix.toml"
        profile.write_text('extends = "default"\n[syscalls]\nunix_sockets = false\n')
        r = py(fenv, script, args=["--profile", str(profile)])
        out = r.stdout.decode()
        assert "CONNECTED" not in out, text(r)
        assert "host unix sockets reachable" not in fallback_line(r)
    finally:
        named.close()
        abstract.close()


def test_signals_forwarded_and_timeout(fenv):
    # os.write in the handler: the signal may land while print('ready') still holds stdout
    script = ("import os, signal, time\n"
              "signal.signal(signal.SIGTERM, lambda *a: (os.write(1, b'handled\\n'), os._exit(3)))\n"
              "print('ready', flush=True)\n"
              "time.sleep(30)\n")
    fenv.finish()
    proc = subprocess.Popen(nouserns.prefix() + fenv.who.prefix()
                            + [sandbox_exe(), "run", "--", PY, "-c", script],
                            cwd=fenv.ws, env=fenv.environ(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGTERM)  # to sandbox: passed on to the command
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3 and out == b"handled\n", (out, err)
    profile = fenv.base / "short.toml"
    profile.write_text('extends = "default"\n[limits]\ntimeout_seconds = 1\n')
    started = time.monotonic()
    r = crun(fenv, ["sleep", "30"], args=["--profile", str(profile)])
    assert r.returncode == 124 and time.monotonic() - started < 20, text(r)


def test_fast_path_checks_the_ladder_marker_by_name():
    """fastrun avoids importing sandbox.linux.ladder; the name it stats must stay the same."""
    import inspect

    from sandbox import fastrun
    from sandbox.linux import ladder

    assert f'"{ladder.MARKER}"' in inspect.getsource(fastrun)


def test_root_cannot_write_kernel_knobs(fenv):
    if fenv.who.name != "root":
        pytest.skip("only root can write /proc/sys")
    # writes the value that is already there: harmless if it ever succeeded
    script = """
        knob = "/proc/sys/kernel/domainname"
        value = open(knob).read()
        try:
            with open(knob, "w") as fh:
                fh.write(value)
            print("WROTE")
        except OSError as exc:
            print("refused", exc.errno)
    """
    assert "WROTE" in py(fenv, script, sandboxed=False).stdout.decode()
    r = py(fenv, script)
    assert "refused" in r.stdout.decode() and "WROTE" not in r.stdout.decode(), text(r)


def test_proxy_profile_under_the_fallback(fenv):
    """network.mode = "proxy" without a namespace: TCP only to the proxy's port (Landlock
    ABI 4), the proxy enforcing the rules; UDP refused; the port-only rule named."""
    import http.server
    import threading

    from egress_support import allow_rule, proxy_profile

    if landlock_abi() < 4:
        pytest.skip("Landlock network rules need ABI 4")

    class Quiet(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"origin says hi\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    profile = proxy_profile(fenv, allow_rule("app.test", [port]), {"app.test": "127.0.0.1"})
    script = f"""
        import os, socket, urllib.request
        try:  # only through the proxy: never a real name lookup
            assert os.environ.get("http_proxy"), "no proxy"
            print("via-proxy", urllib.request.urlopen("http://app.test:{port}/", timeout=20).read().decode().strip())
        except Exception as exc:
            print("via-proxy failed", exc)
        try:
            s = socket.create_connection(("127.0.0.1", {port}), timeout=5)
            print("DIRECT-CONNECTED")
        except OSError as exc:
            print("direct refused", exc.errno)
        try:
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            print("UDP-OPENED")
        except OSError as exc:
            print("udp refused", exc.errno)
    """
    try:
        bare = py(fenv, script, sandboxed=False).stdout.decode()
        assert "DIRECT-CONNECTED" in bare and "UDP-OPENED" in bare, bare
        r = py(fenv, script, args=["--profile", str(profile)])
        out = r.stdout.decode()
        assert "via-proxy origin says hi" in out, text(r)
        assert "DIRECT-CONNECTED" not in out and "UDP-OPENED" not in out, text(r)
        assert "proxy's port number" in fallback_line(r)
    finally:
        server.shutdown()
        server.server_close()
