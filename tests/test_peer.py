"""The server serves only a peer in exactly its own context (sandbox.peer).

A process inside a sandbox that could reach the server's socket must not get
a run made by an unconfined host process: it would ask for ``--allow-write``
or ``--unprotect`` and get it.  Each test shows the request works from the
host (so the test can fail) and not from the other context.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, sandbox_exe

from sandbox import peer


def _peer_conn(tmp_dir, prefix: list[str]):
    """(connection accepted from a client started under ``prefix``, the client)."""
    path = str(tmp_dir / "peer.sock")
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o777)
    listener.listen(1)
    listener.settimeout(20)
    client = subprocess.Popen(prefix + [
        "/usr/bin/python3", "-c",
        "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.recv(1)",
        path])
    try:
        conn, _ = listener.accept()
    finally:
        listener.close()
    return conn, client


def _verdict(tmp_dir, prefix: list[str]) -> str:
    conn, client = _peer_conn(tmp_dir, prefix)
    try:
        peer.check(conn)
        return "same"
    except peer.Mismatch as exc:
        return f"differs: {exc}"
    finally:
        conn.close()
        client.wait(20)


@pytest.fixture
def tmp_dir(senv):
    return senv.base


def test_a_peer_in_our_context_passes(tmp_dir):
    assert _verdict(tmp_dir, []) == "same"


@pytest.mark.parametrize("prefix", [
    ["unshare", "--user", "--map-current-user"],   # another user namespace
    ["unshare", "--mount"],                        # another mount namespace
    ["setpriv", "--no-new-privs"],                 # NoNewPrivs, as bwrap sets it
    ["prlimit", "--nofile=256:256"],               # other rlimits
    ["nice", "-n", "5"],                           # another nice value
    ["taskset", "-c", "0"],                        # another CPU set (two cores here)
    ["setarch", "-R"],                             # another personality (no ASLR)
], ids=["userns", "mountns", "no-new-privs", "rlimit", "nice", "cpuset", "personality"])
def test_a_peer_in_another_context_is_refused(tmp_dir, prefix):
    if os.cpu_count() == 1 and prefix[0] == "taskset":
        pytest.skip("one CPU: taskset -c 0 changes nothing")
    if prefix[0] == "unshare" and os.getuid() != 0 and prefix[1] == "--mount":
        prefix = ["unshare", "--user", "--map-root-user", "--mount"]
    assert _verdict(tmp_dir, prefix).startswith("differs"), prefix


def test_another_users_peer_is_refused(tmp_dir, who):
    if who.name != "user":
        pytest.skip("needs the unprivileged test user (the suite runs as root)")
    assert _verdict(tmp_dir, who.prefix()).startswith("differs")


ATTACK = """
import os, sys
sys.path.insert(0, os.getcwd())
import served_support as s
for path in sys.argv[1:3]:
    try:
        sock = s.connect(path, timeout=10)
    except OSError as exc:
        print("cannot connect:", path, exc.strerror)
        continue
    try:
        s.send_request(sock, ["sandbox", "run", "--allow-write", sys.argv[3], "--",
                              "touch", sys.argv[3] + "/pwned"], os.environ)
        print("reply:", s.read_reply(sock))
    except OSError as exc:
        print("refused:", path, exc)
"""


def test_a_sandboxed_process_cannot_get_a_run_served(served):
    """From inside `sandbox run`: the server's socket is not there (the state
    dir is a tmpfs inside); given a way to it anyway (a hard link in the
    workspace), the hand-made request asking for a writable directory
    outside the workspace gets "F" or nothing, and nothing runs.  The same
    request from the host is served, which is what the check is for."""
    senv = served.senv
    outside = senv.base / "outside"
    outside.mkdir()
    (senv.ws / "served_support.py").write_text((REPO / "tests" / "served_support.py").read_text())
    (senv.ws / "attack.py").write_text(ATTACK)
    linked = senv.ws / "linked.sock"
    os.link(served.sock, linked)
    senv.finish()
    before = served.count()
    inside = served.cli("run", "--", "python3", "attack.py", str(served.sock), str(linked),
                        str(outside))
    out = inside.stdout.decode()
    assert inside.returncode == 0, inside.stderr
    assert f"cannot connect: {served.sock}" in out, out
    assert "reply: (b'X'" not in out, out  # "F", or no reply at all
    assert not (outside / "pwned").exists()
    # the outer `sandbox run` itself may be served (the native client), the attack never
    inner = served.count() - before
    assert inner in (0, 1)
    # the same hand-made request from the host is served
    host = subprocess.run(senv.who.prefix() + ["/usr/bin/python3", "attack.py", str(linked),
                                               str(linked), str(outside)],
                          cwd=senv.ws, env=served.env, capture_output=True, timeout=60)
    assert "reply: (b'X', 0)" in host.stdout.decode(), host
    assert (outside / "pwned").exists()
    assert served.count() == before + inner + 2


@pytest.mark.parametrize("context", [
    ["bwrap", "--dev-bind", "/", "/", "--unshare-user", "--unshare-pid", "--"],
    ["setpriv", "--no-new-privs", "--"],
], ids=["bwrap-namespaces", "no-new-privs"])
def test_the_real_server_answers_fallback_to_another_context(served, context):
    """The running server's own check: a client that reaches the socket from
    other namespaces (a bare bwrap) or with NoNewPrivs (as every sandboxed
    process has) gets "F" and nothing runs; from the host it is served."""
    senv = served.senv
    outside = senv.base / "outside"
    outside.mkdir()
    (senv.ws / "served_support.py").write_text((REPO / "tests" / "served_support.py").read_text())
    (senv.ws / "attack.py").write_text(ATTACK)
    senv.finish()
    before = served.count()
    args = ["/usr/bin/python3", "attack.py", str(served.sock), str(served.sock), str(outside)]
    other = subprocess.run(senv.who.prefix() + context + args, cwd=senv.ws, env=served.env,
                           capture_output=True, timeout=60)
    assert other.stdout.decode().count("reply: (b'F', 0)") == 2, other
    assert not (outside / "pwned").exists()
    assert served.count() == before
    host = subprocess.run(senv.who.prefix() + args, cwd=senv.ws, env=served.env,
                          capture_output=True, timeout=60)
    assert host.stdout.decode().count("reply: (b'X', 0)") == 2, host
    assert (outside / "pwned").exists()
    assert served.count() == before + 2
