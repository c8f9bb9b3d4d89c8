"""Project profiles (``.sandbox.toml``) are untrusted input (issue 10, item 7).

Through the real CLI, as root and as an unprivileged user:

* an untrusted project profile that opens the network (a proxy rule to a
  loopback origin the test starts) or widens writes has no effect, and one
  notice line says so; ``sandbox trust`` makes it apply; editing the file
  revokes the trust; ``sandbox trust --revoke`` too;
* what only tightens applies untrusted;
* a cached plan made with a trusted profile is not reused once the file
  changes or the trust is revoked;
* the file is read-only inside, a new one is quarantined, and the trust
  records are out of the command's sight and reach.

Each attack is shown to work where the profile is honoured (trusted), so
the refusal is the trust check's doing.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
import time

import pytest

pytestmark = pytest.mark.integration
CURL = shutil.which("curl")
NOTICE = "is not trusted: only what makes the sandbox stricter applies"


class _Hello(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.server.seen.append(self.path)
        body = b"hello from the origin\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def origin():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.daemon_threads = True
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def _exe() -> str:
    from conftest import sandbox_exe

    return sandbox_exe()


def sandbox(senv, *args: str, finish: bool = True) -> subprocess.CompletedProcess:
    """``sandbox ARGS`` (not only run) as the test's user, in the workspace."""
    if finish:
        senv.finish()
    return subprocess.run(senv.who.prefix() + [_exe(), *args], cwd=senv.ws, env=senv.environ(),
                          capture_output=True, timeout=120)


def notices(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode().splitlines() if NOTICE in line]


def network_profile(port: int) -> str:
    return ('[network]\nmode = "proxy"\nhosts = { "proj.test" = "127.0.0.1" }\n'
            f'[[network.allow]]\nhost = "proj.test"\nports = [{port}]\n')


def curl(senv, port: int) -> subprocess.CompletedProcess:
    return senv.run([CURL, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20",
                     f"http://proj.test:{port}/"])


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_untrusted_profile_cannot_open_the_network_until_trusted(senv, origin):
    port = origin.server_address[1]
    direct = subprocess.run([CURL, "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                             f"http://127.0.0.1:{port}/"], capture_output=True, text=True)
    assert direct.stdout == "200"  # the origin is there to reach
    project = senv.ws / ".sandbox.toml"
    project.write_text(network_profile(port))
    origin.seen.clear()

    r = curl(senv, port)
    assert r.stdout != b"200" and origin.seen == [], r.stderr
    (line,) = notices(r.stderr)
    assert line.startswith("sandbox: warning: ") and "network.mode, network.hosts, " \
        "network.allow" in line and "run 'sandbox trust'" in line, line

    t = sandbox(senv, "trust")
    assert t.returncode == 0 and b"trusted" in t.stdout, t.stderr
    assert b"it weakens: .sandbox.toml: network.allow: added proj.test:" in t.stdout
    r = curl(senv, port)
    assert r.stdout == b"200" and origin.seen == ["/"], r.stderr
    assert notices(r.stderr) == []

    project.write_text(network_profile(port) + "# edited\n")  # trust is for one content
    origin.seen.clear()
    r = curl(senv, port)
    assert r.stdout != b"200" and origin.seen == [], r.stderr
    assert len(notices(r.stderr)) == 1
    listed = sandbox(senv, "trust", "--list")
    assert listed.stdout.decode().startswith("changed"), listed.stdout


def test_untrusted_profile_cannot_widen_writes_until_trusted(senv):
    outside = senv.base / "outside"
    outside.mkdir()
    project = senv.ws / ".sandbox.toml"
    project.write_text(f'[filesystem]\nwritable = ["{outside}"]\n')
    plant = f"echo planted > {outside}/f"

    r = senv.sh(plant)
    assert r.returncode != 0 and b"Read-only file system" in r.stderr, r.stderr
    assert not (outside / "f").exists()
    assert "ignored: filesystem.writable" in notices(r.stderr)[0]

    assert sandbox(senv, "trust").returncode == 0
    r = senv.sh(plant)
    assert r.returncode == 0 and (outside / "f").read_text() == "planted\n", r.stderr
    (outside / "f").unlink()

    assert sandbox(senv, "trust", "--revoke").stdout.startswith(b"no longer trusted")
    r = senv.sh(plant)
    assert r.returncode != 0 and not (outside / "f").exists(), r.stderr

    # --profile names the profile: the project's is not used at all
    assert sandbox(senv, "trust").returncode == 0
    r = senv.run(["sh", "-c", plant], args=["--profile", "default"])
    assert r.returncode != 0 and notices(r.stderr) == [], r.stderr


def test_what_tightens_applies_untrusted(senv):
    (senv.home / "notes").mkdir()
    (senv.home / "notes" / "private.txt").write_text("PRIVATE-NOTE")
    read = "cat $HOME/notes/private.txt; echo; sleep 3; echo finished"
    r = senv.sh(read)
    assert b"PRIVATE-NOTE" in r.stdout and b"finished" in r.stdout  # visible by default
    (senv.ws / ".sandbox.toml").write_text(
        '[filesystem]\ndeny_read = ["${home}/notes"]\n[limits]\ntimeout_seconds = 1\n'
        '[network]\nmode = "proxy"\n')
    r = senv.sh(read)
    assert b"PRIVATE-NOTE" not in r.stdout and b"finished" not in r.stdout, r.stdout
    assert r.returncode == 124, r.stderr
    assert "(ignored: network.mode)" in notices(r.stderr)[0]
    shown = sandbox(senv, "explain")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout.decode()
    assert "TIGHTENED" in text and "limits.timeout_seconds: 0 -> 1" in text, text
    assert f"filesystem.deny_read: added {senv.home}/notes" in text


def test_cached_plan_is_not_reused_after_the_file_or_the_trust_changes(senv):
    outside = senv.base / "outside"
    outside.mkdir()
    target = outside / "f"
    target.write_text("host\n")  # overwritten in place: the directory's stamp stays
    project = senv.ws / ".sandbox.toml"
    project.write_text(f'description = "aaaa"\n[filesystem]\nwritable = ["{outside}"]\n')
    report = senv.base / "report.json"
    senv.finish()  # once: chown makes every ctime new, and plans need inputs 2 s old
    assert sandbox(senv, "trust", finish=False).returncode == 0

    def plant(word: str) -> subprocess.CompletedProcess:
        return sandbox(senv, "run", "--report", str(report), "--", "sh", "-c",
                       f"echo {word} > {target}", finish=False)

    cached = []
    for i in range(3):
        if i in (1, 2):
            time.sleep(2.2)
        r = plant(f"trusted{i}")
        assert r.returncode == 0 and target.read_text() == f"trusted{i}\n", r.stderr
        cached.append(json.loads(report.read_text())["plan_cached"])
    assert cached[-1] is True, cached  # the trusted plan is on the fast path now

    # same size, new content: the stamps (ctime, mtime) and the hash tell
    text = project.read_text()
    project.write_text(text.replace("aaaa", "bbbb"))
    assert project.stat().st_size == len(text)
    r = plant("edited")
    assert r.returncode != 0 and target.read_text() == "trusted2\n", r.stderr
    assert len(notices(r.stderr)) == 1
    time.sleep(2.2)  # the untrusted plan is cached too, and says so on every run
    for _ in range(2):
        r = plant("edited")
        assert r.returncode != 0 and target.read_text() == "trusted2\n", r.stderr
        assert len(notices(r.stderr)) == 1
    assert json.loads(report.read_text())["plan_cached"] is True

    # trusted again, then revoked: the plan made while trusted is not used either
    assert sandbox(senv, "trust", finish=False).returncode == 0
    time.sleep(2.2)
    for i in range(2):
        r = plant(f"again{i}")
        assert r.returncode == 0 and target.read_text() == f"again{i}\n", r.stderr
    assert json.loads(report.read_text())["plan_cached"] is True
    assert sandbox(senv, "trust", "--revoke", finish=False).returncode == 0
    r = plant("revoked")
    assert r.returncode != 0 and target.read_text() == "again1\n", r.stderr


def test_the_project_profile_is_read_only_inside_and_a_new_one_is_quarantined(senv):
    project = senv.ws / ".sandbox.toml"
    project.write_text('description = "team profile"\n')
    assert sandbox(senv, "trust").returncode == 0
    r = senv.sh("echo '[network]' >> .sandbox.toml; mv .sandbox.toml gone.toml; "
                "rm -f .sandbox.toml; true")
    assert project.read_text() == 'description = "team profile"\n', r.stderr
    assert not (senv.ws / "gone.toml").exists()
    # without the sandbox, the same command rewrites it
    bare = senv.sh("echo '# rewritten' >> .sandbox.toml", sandboxed=False)
    assert bare.returncode == 0 and "rewritten" in project.read_text()

    project.unlink()
    r = senv.sh('printf \'[filesystem]\\nwritable = ["/srv"]\\n\' > .sandbox.toml')
    assert r.returncode == 0, r.stderr
    assert not project.exists(), "a .sandbox.toml the command wrote stays in the workspace"
    assert b"sandbox: audit: agent config: " in r.stderr and b"quarantined" in r.stderr, r.stderr


def test_trust_records_are_out_of_the_commands_reach(senv):
    (senv.ws / ".sandbox.toml").write_text('description = "x"\n')
    assert sandbox(senv, "trust").returncode == 0
    store = senv.home / ".cache" / "sandbox" / "trust"
    (record,) = os.listdir(store)
    r = senv.sh(f"ls -A {store}; cat {store}/{record}; echo forged > {store}/{record}; "
                f"touch {store}/new; true")
    assert record.encode() not in r.stdout, r.stdout
    assert os.listdir(store) == [record]
    assert b"forged" not in (store / record).read_bytes()


def test_a_linked_or_invalid_project_profile_stops_the_run(senv):
    real = senv.base / "elsewhere.toml"
    real.write_text('description = "x"\n')
    (senv.ws / ".sandbox.toml").symlink_to(real)
    r = senv.run(["true"])
    assert r.returncode == 125 and b"sandbox: profile error:" in r.stderr, r.stderr
    (senv.ws / ".sandbox.toml").unlink()
    (senv.ws / ".sandbox.toml").write_text('[filesystem]\nwritabel = ["/srv"]\n')
    r = senv.run(["true"])
    assert r.returncode == 125 and b"writabel" in r.stderr and b"unknown key" in r.stderr
    (senv.ws / ".sandbox.toml").write_text('extends = "./other.toml"\n')
    assert sandbox(senv, "trust").returncode == 125


def test_project_profile_at_the_git_root_applies_to_a_subdirectory(senv):
    (senv.home / "notes").mkdir()
    (senv.home / "notes" / "private.txt").write_text("PRIVATE-NOTE")
    (senv.ws / ".git").mkdir()
    sub = senv.ws / "pkg"
    sub.mkdir()
    (senv.ws / ".sandbox.toml").write_text('[filesystem]\ndeny_read = ["${home}/notes"]\n')
    r = senv.run(["cat", str(senv.home / "notes" / "private.txt")], cwd=sub,
                 args=["--workspace", str(sub)])
    assert b"PRIVATE-NOTE" not in r.stdout and len(notices(r.stderr)) == 1, (r.stdout, r.stderr)
