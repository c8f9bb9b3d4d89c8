"""The managed policy (issue 10, item 8), through the real CLI.

The tests never touch ``/etc/sandbox/managed.toml`` (other runs on this
machine would see it): they name a managed file with
``SANDBOX_MANAGED_EXTRA``, which is applied on top of the system file and
checked the same way.  A file there must be root's, so these tests need
root to write one (they run the sandbox as root and as the test user).

* each key tightens whatever the user picks: a hidden path, a refused
  host, a forced limit, writes and ``--allow-write`` forbidden; a trusted
  project profile cannot get around it either;
* a malformed file, one a user could change, one with a key that cannot
  tighten, or a missing one fail closed (exit 125, one line);
* ``explain`` shows what it changed; a cached plan follows the file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.getuid() != 0, reason="a managed file must be root's: "
                                 "these tests need root to write one")]


def _exe() -> str:
    from conftest import sandbox_exe

    return sandbox_exe()


@pytest.fixture
def admin_dir():
    """A root-owned directory for managed files, outside the test's tree (which
    the fixtures hand to the test user)."""
    from conftest import _test_root

    d = _test_root() / f"managed-{uuid.uuid4().hex[:12]}"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def managed(admin_dir: Path, text: str) -> Path:
    path = admin_dir / "managed.toml"
    path.write_text(text)
    os.chmod(path, 0o644)
    return path


def run(senv, command, path: Path | None, args=(), finish=True,
        **extra: str) -> subprocess.CompletedProcess:
    env = senv.environ(**({"SANDBOX_MANAGED_EXTRA": str(path)} if path else {}), **extra)
    if finish:
        senv.finish()
    return subprocess.run(senv.who.prefix() + [_exe(), "run", *args, "--", *command],
                          cwd=senv.ws, env=env, capture_output=True, timeout=120)


def test_managed_hides_paths_and_forces_limits_whatever_the_profile(senv, admin_dir):
    (senv.home / "notes").mkdir()
    (senv.home / "notes" / "private.txt").write_text("PRIVATE-NOTE")
    loose = senv.base / "loose.toml"
    loose.write_text('[limits]\ntimeout_seconds = 0\n[env]\npass = ["MY_TOKEN"]\n')
    script = ["sh", "-c", "cat $HOME/notes/private.txt; echo; echo token=$MY_TOKEN; sleep 3; "
                          "echo finished"]
    bare = run(senv, script, None, ["--profile", str(loose)], MY_TOKEN="tok-VALUE")
    assert b"PRIVATE-NOTE" in bare.stdout and b"finished" in bare.stdout, bare.stderr
    assert b"token=tok-VALUE" in bare.stdout  # the profile passes it

    path = managed(admin_dir, '[filesystem]\ndeny_read = ["${home}/notes"]\n'
                              '[limits]\ntimeout_seconds = 1\n[env]\npass = []\n')
    r = run(senv, script, path, ["--profile", str(loose)], MY_TOKEN="tok-VALUE")
    assert b"PRIVATE-NOTE" not in r.stdout and b"finished" not in r.stdout, r.stdout
    assert b"tok-VALUE" not in r.stdout
    assert r.returncode == 124, r.stderr


def test_managed_forbids_allow_write_and_profile_writes(senv, admin_dir):
    outside = senv.base / "outside"
    outside.mkdir()
    plant = ["sh", "-c", f"echo planted > {outside}/f"]
    r = run(senv, plant, None, ["--allow-write", str(outside)])
    assert r.returncode == 0 and (outside / "f").exists(), r.stderr  # allowed by default
    (outside / "f").unlink()

    path = managed(admin_dir, "[filesystem]\nwritable = []\n")
    r = run(senv, plant, path, ["--allow-write", str(outside)])
    assert r.returncode == 125 and not (outside / "f").exists()
    assert r.stderr.decode().startswith(
        f"sandbox: usage error: --allow-write {outside} is not allowed by the managed policy "
        f"{path} (filesystem.writable)"), r.stderr

    # nor through a profile, a trusted project profile included
    (senv.ws / ".sandbox.toml").write_text(f'[filesystem]\nwritable = ["{outside}"]\n')
    senv.finish()
    t = subprocess.run(senv.who.prefix() + [_exe(), "trust"], cwd=senv.ws, env=senv.environ(),
                       capture_output=True, timeout=60)
    assert t.returncode == 0, t.stderr
    r = run(senv, plant, None)
    assert r.returncode == 0 and (outside / "f").exists(), r.stderr  # trusted: it applies
    (outside / "f").unlink()
    r = run(senv, plant, path)
    assert r.returncode != 0 and not (outside / "f").exists(), r.stderr

    # an envelope: a directory inside it may be named, one outside may not
    inner = outside / "inner"
    inner.mkdir()
    path = managed(admin_dir, f'[filesystem]\nwritable = ["{outside}"]\n')
    r = run(senv, ["sh", "-c", f"echo ok > {inner}/f"], path, ["--allow-write", str(inner)])
    assert r.returncode == 0 and (inner / "f").exists(), r.stderr
    r = run(senv, ["true"], path, ["--allow-write", str(senv.base)])
    assert r.returncode == 125 and b"is not allowed by the managed policy" in r.stderr


def test_managed_forbids_unprotect(senv, admin_dir):
    (senv.ws / ".vscode").mkdir()
    (senv.ws / ".vscode" / "tasks.json").write_text("{}")
    write = ["sh", "-c", "echo planted > .vscode/tasks.json"]
    r = run(senv, write, None, ["--unprotect", ".vscode"])
    assert r.returncode == 0, r.stderr
    path = managed(admin_dir, "[protect]\nunprotect = []\n")
    r = run(senv, write, path, ["--unprotect", ".vscode"])
    assert r.returncode == 125 and b"/.vscode is not allowed by the managed policy" in r.stderr
    assert (senv.ws / ".vscode" / "tasks.json").read_text() == "planted\n"  # from the first run


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_managed_refuses_hosts_a_profile_allows(senv, admin_dir):
    import http.server
    import threading

    class Hello(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        profile = senv.base / "net.toml"
        profile.write_text('[network]\nmode = "proxy"\nhosts = { "a.test" = "127.0.0.1", '
                           f'"b.test" = "127.0.0.1" }}\n[[network.allow]]\nhost = "a.test"\n'
                           f'ports = [{port}]\n[[network.allow]]\nhost = "b.test"\n'
                           f'ports = [{port}]\n')
        curl = [shutil.which("curl"), "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                "--max-time", "20"]

        def status(host, path):
            return run(senv, curl + [f"http://{host}:{port}/"], path,
                       ["--profile", str(profile)]).stdout

        assert status("a.test", None) == b"200" and status("b.test", None) == b"200"
        deny = managed(admin_dir, '[[network.deny]]\nhost = "b.test"\n')
        assert status("a.test", deny) == b"200" and status("b.test", deny) == b"403"
        closed = managed(admin_dir, '[network]\nmode = "none"\n')
        assert status("a.test", closed) == b"000"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize("text, mode, owner, words", [
    ("[filesystem]\nwritabel = []\n", 0o644, "root", b"unknown key"),
    ("[limits\n", 0o644, "root", b"not valid TOML"),
    ('extends = "default"\n', 0o644, "root", b"a managed policy can only tighten"),
    ('[env.set]\nX = "1"\n', 0o644, "root", b"a managed policy can only tighten"),
    ('[network]\nhosts = { "a.test" = "127.0.0.1" }\n', 0o644, "root", b"can only tighten"),
    ("[limits]\ntimeout_seconds = 60\n", 0o666, "root", b"writable by group or others"),
    ("[limits]\ntimeout_seconds = 60\n", 0o644, "user", b"is not owned by root"),
])
def test_a_bad_managed_file_fails_closed(senv, admin_dir, text, mode, owner, words):
    path = managed(admin_dir, text)
    os.chmod(path, mode)
    if owner == "user":
        os.chown(path, 65534, 65534)
    r = run(senv, ["sh", "-c", "echo RAN"], path)
    assert r.returncode == 125 and b"RAN" not in r.stdout, r.stdout
    (line,) = r.stderr.decode().splitlines()
    assert line.startswith("sandbox: ") and str(path) in line and words.decode() in line, line


def test_a_managed_file_in_a_directory_users_can_change_fails_closed(senv, admin_dir):
    path = managed(admin_dir, "[limits]\ntimeout_seconds = 60\n")
    os.chmod(admin_dir, 0o777)  # anyone could replace the file
    r = run(senv, ["sh", "-c", "echo RAN"], path)
    assert r.returncode == 125 and b"RAN" not in r.stdout
    assert b"which a user other than root can change" in r.stderr, r.stderr
    os.chmod(admin_dir, 0o755)
    r = run(senv, ["sh", "-c", "echo RAN"], admin_dir / "missing.toml")
    assert r.returncode == 125 and b"does not exist" in r.stderr, r.stderr


def test_explain_shows_the_managed_policy_and_cached_plans_follow_it(senv, admin_dir):
    path = managed(admin_dir, "[limits]\ntimeout_seconds = 1\n")
    env = senv.environ(SANDBOX_MANAGED_EXTRA=str(path))
    senv.finish()
    shown = subprocess.run(senv.who.prefix() + [_exe(), "explain", "--json"], cwd=senv.ws,
                           env=env, capture_output=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["tightenings"] == [{"source": f"managed: {path}", "key": "limits.timeout_seconds",
                                    "detail": "0 -> 1"}]
    text = subprocess.run(senv.who.prefix() + [_exe(), "explain"], cwd=senv.ws, env=env,
                          capture_output=True, timeout=60).stdout.decode()
    assert f"managed: {path}: limits.timeout_seconds: 0 -> 1" in text, text

    # a plan made under one managed file is not reused once it changes
    os.utime(path, (time.time() - 10, time.time() - 10))
    report = senv.base / "report.json"
    args = ["--report", str(report)]
    for i in range(3):
        if i:
            time.sleep(2.2)
        r = run(senv, ["sleep", "2"], path, args, finish=False)
        assert r.returncode == 124, r.stderr
    assert json.loads(report.read_text())["plan_cached"] is True
    managed(admin_dir, "[limits]\ntimeout_seconds = 9\n")
    r = run(senv, ["sleep", "2"], path, args, finish=False)
    assert r.returncode == 0, r.stderr
