"""The Seatbelt backend on a real Mac: the real /usr/bin/sandbox-exec, the installed CLI.

Skipped everywhere else, with the reason shown (``pytest -ra``).  Each
security test first shows the attack working without the sandbox, then
failing inside it.  .github/workflows/macos.yml runs this file on
``macos-latest``; docs/macos.md says what it covers.  Written on Linux and
not yet run on a Mac: the first run there is its first test.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading

import pytest

from conftest import sandbox_exe

pytestmark = pytest.mark.skipif(
    sys.platform != "darwin",
    reason="needs macOS: runs the real /usr/bin/sandbox-exec (the Seatbelt backend)")


def sh(senv, script: str, *args: str, sandboxed: bool = True) -> subprocess.CompletedProcess:
    return senv.run(["/bin/sh", "-c", script], args=list(args), sandboxed=sandboxed)


def test_sandbox_exec_accepts_every_shipped_profile(senv):
    from sandbox.profile import builtin_names

    for name in builtin_names():
        if name in ("github", "anthropic-api"):  # TLS inspection: refused on macOS (documented)
            continue
        r = senv.run(["/usr/bin/true"], args=["--profile", name])
        assert r.returncode == 0, (name, r.stderr)


def test_explain_argv_runs_as_printed(senv):
    senv.finish()
    r = subprocess.run([sandbox_exe(), "explain", "--platform", "macos", "--json", "--",
                        "/bin/echo", "hello"],
                       cwd=senv.ws, env=senv.environ(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    # explain names the run's TMPDIR with a placeholder; make a real one beside it
    parent = os.path.dirname(doc["params"]["TMPDIR"])
    real = tempfile.mkdtemp(prefix="sandbox-run-", dir=parent)
    try:
        argv = [a.replace("sandbox-run-XXXXXXXX", os.path.basename(real)) for a in doc["argv"]]
        done = subprocess.run(argv, capture_output=True, text=True, env=senv.environ())
        assert done.returncode == 0 and done.stdout.strip() == "hello", done.stderr
    finally:
        os.rmdir(real)


def test_secrets_unreadable(senv):
    ssh = senv.home / ".ssh"
    ssh.mkdir()
    (ssh / "id_ed25519").write_text("PRIVATE KEY\n")
    (senv.ws / ".env").write_text("TOKEN=x\n")
    (senv.ws / ".env.example").write_text("TOKEN=\n")
    script = f"cat {ssh}/id_ed25519; cat .env"
    assert b"PRIVATE KEY" in sh(senv, script, sandboxed=False).stdout
    inside = sh(senv, script)
    assert b"PRIVATE KEY" not in inside.stdout and b"TOKEN=x" not in inside.stdout
    assert sh(senv, "cat .env.example").returncode == 0
    assert sh(senv, "cat /etc/passwd >/dev/null").returncode == 0  # reads elsewhere work


def test_secrets_not_reachable_by_hard_link_or_symlink(senv):
    ssh = senv.home / ".ssh"
    ssh.mkdir()
    (ssh / "id_ed25519").write_text("PRIVATE KEY\n")
    r = sh(senv, f"ln {ssh}/id_ed25519 stolen; ln -s {ssh}/id_ed25519 link; cat stolen link")
    assert b"PRIVATE KEY" not in r.stdout


def test_writes_confined(senv):
    outside = senv.home / "planted"
    r = sh(senv, 'echo x > made && echo x > "$TMPDIR/t" && echo ok')
    assert r.returncode == 0 and b"ok" in r.stdout, r.stderr
    assert sh(senv, f"echo x > {outside}", sandboxed=False).returncode == 0
    outside.unlink()
    assert sh(senv, f"echo x > {outside}").returncode != 0
    assert not outside.exists()
    assert sh(senv, "echo x > /tmp/sandbox-live-probe").returncode != 0


def test_protected_paths_cannot_be_written_renamed_or_linked(senv):
    git = senv.ws / ".git"
    (git / "hooks").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "config").write_text("[core]\n")
    (senv.ws / "sub" / ".vscode").mkdir(parents=True)
    attacks = ["echo x > .git/hooks/pre-commit", "echo x >> .git/config",
               "mv .git .git-old", "mv sub sub2", "rm -rf sub/.vscode",
               "ln .git/config cfg && echo x >> cfg"]
    for attack in attacks:
        r = sh(senv, attack)
        assert r.returncode != 0, attack
    assert (git / "config").read_text() == "[core]\n"
    assert not (git / "hooks" / "pre-commit").exists()
    assert (senv.ws / "sub" / ".vscode").is_dir()


def _serve_tcp() -> tuple[socket.socket, int]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    threading.Thread(target=lambda: [srv.accept()[0].close() for _ in range(4)],
                     daemon=True).start()
    return srv, srv.getsockname()[1]


def test_network_closed(senv):
    srv, port = _serve_tcp()
    try:
        probe = f"{sys.executable} -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), 5)'"
        assert sh(senv, probe, sandboxed=False).returncode == 0
        assert sh(senv, probe).returncode != 0
    finally:
        srv.close()


def test_host_unix_sockets_refused_own_ones_work(senv):
    path = str(senv.home / "host.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(4)
    try:
        probe = f"{sys.executable} -c 'import socket; s=socket.socket(socket.AF_UNIX); s.connect(\"{path}\")'"
        assert sh(senv, probe, sandboxed=False).returncode == 0
        assert sh(senv, probe).returncode != 0
    finally:
        srv.close()
    own = ("import os, socket, threading\n"
           "p = os.path.join(os.environ['TMPDIR'], 's')\n"
           "s = socket.socket(socket.AF_UNIX); s.bind(p); s.listen(1)\n"
           "c = socket.socket(socket.AF_UNIX); c.connect(p); print('ok')\n")
    r = senv.run([sys.executable, "-c", own])
    assert r.returncode == 0 and b"ok" in r.stdout, r.stderr


def test_no_signals_to_host_processes(senv):
    victim = subprocess.Popen(["/bin/sleep", "60"])
    try:
        assert sh(senv, f"kill -0 {victim.pid}", sandboxed=False).returncode == 0
        assert sh(senv, f"kill -TERM {victim.pid}").returncode != 0
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_setuid_programs_refused(senv):
    assert sh(senv, "/usr/bin/sudo -n /usr/bin/true").returncode != 0


def test_real_tools_work(senv):
    script = ("git init -q . && git -c user.email=a@b -c user.name=a commit -q --allow-empty "
              "-m x && git log --oneline | wc -l && "
              f"{sys.executable} -c 'import multiprocessing as m, tempfile; "
              "tempfile.mkstemp(); print(m.Pool(2).map(abs, [-1, -2]))'")
    r = sh(senv, script)
    assert r.returncode == 0, r.stderr
    assert b"[1, 2]" in r.stdout


def test_proxy_profile_reaches_only_the_proxy(senv):
    probe = ("import os, socket, urllib.parse\n"
             "u = urllib.parse.urlsplit(os.environ['HTTPS_PROXY'])\n"
             "s = socket.create_connection((u.hostname, u.port), timeout=10)\n"
             "s.sendall(b'CONNECT not-allowed.invalid:443 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n"
             "print(s.recv(100).decode().split()[1])\n")
    r = senv.run([sys.executable, "-c", probe], args=["--profile", "pypi"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == b"403"
    srv, port = _serve_tcp()
    try:
        direct = f"import socket; socket.create_connection(('127.0.0.1', {port}), 5)"
        assert senv.run([sys.executable, "-c", direct], args=["--profile", "pypi"]).returncode != 0
    finally:
        srv.close()
