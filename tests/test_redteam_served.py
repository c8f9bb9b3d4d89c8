"""Red-team regression tests for served runs (issue 14) and the changes
that came with them (sandbox.linux.drift's reach check).

Each test runs the real bwrap through the installed CLI, and each shows the
attack working where the protection is absent (a bare run, or the
vulnerable behaviour) so that it can fail.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import sandbox_exe, server_socket

SECRET = b"TOPSECRET-red-4f1c"


def test_a_secret_below_roots_own_unsearchable_dir_stays_masked(senv, who):
    """drift._searchable_parents dropped the mask on a secret whose parent
    directory had no search bit for its owner: root's discovery (which
    ignores modes) had masked ``locked/.env``, the prune step dropped the
    mask because the caller "could not reach it", and the sandboxed command,
    the directory's owner, simply chmod-ed it back and read the secret."""
    if who.name != "root":
        pytest.skip("the planner sees inside a mode-000 directory only as root")
    locked = senv.ws / "locked"
    locked.mkdir()
    (locked / ".env").write_bytes(SECRET + b"\n")
    os.chmod(locked, 0)
    try:
        script = "chmod 700 locked && cat locked/.env"
        bare = senv.sh(script, sandboxed=False)
        assert SECRET in bare.stdout  # the attack itself works without the sandbox
        os.chmod(locked, 0)
        done = senv.sh(script)
        assert SECRET not in done.stdout + done.stderr, done
    finally:
        os.chmod(locked, 0o700)


def _need_native(served):
    if served.client() != [sandbox_exe()]:
        pytest.skip("needs the native client")


def test_the_io_priority_of_the_caller_is_not_lost_by_serving(served):
    """``ionice -c3 sandbox run -- CMD`` (idle I/O class) was served with the
    server's own I/O priority: the peer check compared nice and scheduling
    policy but not the I/O priority, so the command ran at best-effort.  A
    direct run passes the idle class on."""
    _need_native(served)
    direct = subprocess.run(served.senv.who.prefix() + [
        "ionice", "-c3", str(Path(sandbox_exe()).with_name("sandbox-direct")), "run", "--",
        "ionice"], env=served.env, cwd=served.senv.ws, capture_output=True, input=b"",
        timeout=60)
    assert direct.stdout.strip() == b"idle", direct
    done = subprocess.run(served.senv.who.prefix() + ["ionice", "-c3", sandbox_exe(), "run",
                                                      "--", "ionice"],
                          env=served.env, cwd=served.senv.ws, capture_output=True, input=b"",
                          timeout=60)
    assert done.stdout.strip() == b"idle", done
    # and the same command without ionice is still served
    before = served.count()
    assert served.cli("run", "--", "true").returncode == 0
    assert served.count() == before + 1


def test_another_installations_client_is_not_served_by_this_server(served):
    """The state dir (and so the socket) is per user, not per installation:
    a second install's client (another venv, another version) was served
    by whichever server ran, with that server's code, where a direct run
    would have run its own ``sandbox-direct``.  The server must answer "F"
    unless the client's ``sandbox-direct`` is its own."""
    _need_native(served)
    import shutil

    other = served.senv.base / "other-install"
    other.mkdir()
    shutil.copy(sandbox_exe(), other / "sandbox")
    (other / "sandbox-direct").write_text("#!/bin/sh\necho other-install-direct\nexit 42\n")
    os.chmod(other / "sandbox-direct", 0o755)
    served.senv.finish()
    before = served.count()
    done = subprocess.run(served.senv.who.prefix() + [str(other / "sandbox"), "run", "--",
                                                      "true"],
                          env=served.env, cwd=served.senv.ws, capture_output=True, input=b"",
                          timeout=60)
    assert (done.returncode, done.stdout) == (42, b"other-install-direct\n"), done
    assert served.count() == before
    # this installation's own client is served
    assert served.cli("run", "--", "true").returncode == 0
    assert served.count() == before + 1


@pytest.mark.parametrize("value", ["OFF", "Off", " off", "FALSE", "No"])
def test_sandbox_server_off_in_any_spelling_is_never_served(served, value):
    """``SANDBOX_SERVER`` is read case-insensitively and trimmed by Python
    (``server.mode``: no server is started), but the native client only
    knew the four lower-case words: ``SANDBOX_SERVER=OFF`` was served by a
    server another run had left.  Off must mean direct, in every spelling."""
    before = served.count()
    env = dict(served.env, SANDBOX_SERVER=value)
    done = served.cli("run", "--", "true", env=env)
    assert done.returncode == 0, done
    assert served.count() == before
    assert served.cli("run", "--", "true").returncode == 0  # "on" is still served
    assert served.count() == before + 1


@pytest.mark.parametrize("spelling", ["/dev//fd/4", "/dev/fd/./4", "/dev/./fd/4", "fdlink/4",
                                      "reportlink"])
def test_a_report_to_fd_4_in_any_spelling_goes_where_a_direct_run_puts_it(served, spelling):
    """``--report /dev/fd/4`` names the caller's fd 4: the server answers "F"
    for that spelling, but ``/dev//fd/4``, ``/dev/fd/./4``, a symlink to
    /dev/fd or to /dev/fd/4 were served, and the served child (which has no
    fd 4 of the caller's; its own fd 4 is one of the run's files) failed
    with a usage error, 125, where a direct run writes the report into the
    caller's ``4>report.json``."""
    _need_native(served)
    ws = served.senv.ws
    (ws / "fdlink").symlink_to("/dev/fd")
    (ws / "reportlink").symlink_to("/dev/fd/4")
    served.senv.finish()
    results = []
    for exe in (str(Path(sandbox_exe()).with_name("sandbox-direct")), sandbox_exe()):
        report = served.senv.base / "report.json"
        report.unlink(missing_ok=True)
        script = f'exec "$0" run --report {spelling} -- true 4>"$1"'
        done = subprocess.run(served.senv.who.prefix() + ["sh", "-c", script, exe, str(report)],
                              env=served.env, cwd=ws, capture_output=True, input=b"",
                              timeout=60)
        results.append((done.returncode, b'"exit_status": 0' in report.read_bytes()))
    assert results[0] == results[1], results
    assert results[0] in ((0, True), (125, False))


@pytest.mark.parametrize("wrapper,probe", [
    (["nice", "-n", "7"], "nice"),
    (["taskset", "-c", "0"], "grep Cpus_allowed_list /proc/self/status"),
    (["choom", "-n", "321", "--"], "cat /proc/self/oom_score_adj"),
    (["setarch", "-R"], "cat /proc/self/personality"),
    (["prlimit", "--nofile=77:77"], "ulimit -n"),
    (["chrt", "-b", "0"], "chrt -p $$ | sed -n '1s/.*: //p'"),
], ids=["nice", "taskset", "choom", "setarch", "prlimit", "chrt"])
def test_the_callers_process_context_reaches_the_command_as_in_a_direct_run(served, wrapper,
                                                                              probe):
    """Guards the peer check (these attacks failed): whatever the caller's
    context that the served child cannot adopt (nice, CPU affinity, OOM
    score, personality, rlimits, scheduling policy), the command sees what a
    direct run shows it, and differs from what it sees without the wrapper
    (so the test fails if the server served it in its own context)."""
    _need_native(served)
    if wrapper[0] == "taskset" and os.cpu_count() < 2:
        pytest.skip("one CPU: affinity cannot differ")

    def run(exe, pre):
        done = subprocess.run(served.senv.who.prefix() + pre + [exe, "run", "--", "sh", "-c",
                                                                probe],
                              env=served.env, cwd=served.senv.ws, capture_output=True,
                              input=b"", timeout=60)
        assert done.returncode == 0, done
        return done.stdout

    direct = str(Path(sandbox_exe()).with_name("sandbox-direct"))
    expected, plain = run(direct, wrapper), run(direct, [])
    assert expected != plain  # the wrapper does change what the command sees
    assert run(sandbox_exe(), wrapper) == expected


def test_the_audit_logs_pid_is_the_sandbox_process_the_caller_started(served):
    """docs/audit-log.md: ``pid`` is "the ``sandbox`` process".  A direct
    run is that process (the client execs sandbox-direct in place); a served
    run logged the server's child instead, a pid the caller never saw, so
    ``sandbox run ... & pid=$!`` could not find its own record."""
    _need_native(served)
    import json

    (served.senv.base / "logs").mkdir()
    log = served.senv.base / "logs" / "audit.jsonl"
    env = dict(served.env, SANDBOX_AUDIT_LOG=str(log))
    served.senv.finish()
    pids = []
    before = served.count()
    for exe in (str(Path(sandbox_exe()).with_name("sandbox-direct")), sandbox_exe()):
        proc = subprocess.Popen(served.senv.who.prefix() + [exe, "run", "--", "true"], env=env,
                                cwd=served.senv.ws, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert proc.wait(60) == 0, proc.stderr.read()
        pids.append(proc.pid)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["pid"] for line in lines] == pids
    assert served.count() == before + 1  # the second run above was the served one


@pytest.mark.parametrize("option", ["--profile", "--allow-write"])
def test_a_path_option_through_the_callers_fd_5_runs_as_directly(served, option):
    """``--profile /dev/fd/5 5<readonly.toml`` (or a directory on fd 5 for
    --allow-write) names the caller's fd 5: a direct run reads that profile;
    a served one, which has no fd 5 of the caller's, failed with a profile
    error (125).  Any path option through a /proc/PID/fd directory must go
    direct."""
    _need_native(served)
    profile = Path(__file__).resolve().parent.parent / "profiles" / "readonly.toml"
    target = profile if option == "--profile" else served.senv.ws
    results = []
    for exe in (str(Path(sandbox_exe()).with_name("sandbox-direct")), sandbox_exe()):
        script = f'exec "$0" run {option} /dev/fd/5 -- sh -c "touch x; echo done" 5<"$1"'
        done = subprocess.run(served.senv.who.prefix() + ["sh", "-c", script, exe, str(target)],
                              env=served.env, cwd=served.senv.ws, capture_output=True,
                              input=b"", timeout=60)
        results.append((done.returncode, done.stdout, done.stderr.replace(exe.encode(), b"")))
    assert results[0] == results[1]
    assert results[0][1] == b"done\n", results  # the direct run did run the command


IMPOSTOR = r"""
import os, socket, sys, time
path, out = sys.argv[1], sys.argv[2]
os.makedirs(os.path.dirname(path), exist_ok=True)
srv = socket.socket(socket.AF_UNIX)
srv.bind(path)
srv.listen(4)
srv.settimeout(float(sys.argv[3]))
got = b""
try:
    conn, _ = srv.accept()
    conn.settimeout(3)
    try:
        while len(got) < 1 << 20:
            data = conn.recv(65536)
            if not data:
                break
            got += data
    except OSError:
        pass
except OSError:
    got = b"no-connection"
with open(out, "wb") as fh:
    fh.write(got)
"""


def test_an_impostor_server_inside_a_sandbox_receives_nothing(senv):
    """A sandboxed command whose workspace holds the state dir a later
    client looks in (XDG_CACHE_HOME pointing into that workspace) binds
    its ``server-<id>.sock`` there.  The client must check the listener before it
    sends its environment and stdio: it goes direct, and the impostor gets
    nothing.  The same impostor on the host (same uid, same context)
    receives the whole request: the attack needs the check to fail."""
    import time

    _ws2 = senv.base / "other"
    _ws2.mkdir()
    (senv.ws / "impostor.py").write_text(IMPOSTOR)
    sock = server_socket(senv.ws / "cache" / "sandbox")
    client_env = senv.environ(XDG_CACHE_HOME=str(senv.ws / "cache"), SANDBOX_SERVER="auto",
                              SECRET_TOKEN="tok-" + SECRET.decode())
    senv.finish()

    def attack(sandboxed: bool) -> bytes:
        got = senv.ws / "received"
        got.unlink(missing_ok=True)
        if sock.exists():
            sock.unlink()
        cmd = ["/usr/bin/python3", str(senv.ws / "impostor.py"), str(sock), str(got), "8"]
        if sandboxed:
            cmd = [sandbox_exe(), "run", "--", *cmd]
        impostor = subprocess.Popen(senv.who.prefix() + cmd, cwd=senv.ws, env=senv.environ(),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 20
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sock.exists(), impostor.stderr.read() if impostor.poll() is not None else ""
            # auto: no server.last, so the client's direct run starts no server
            (sock.parent / "server.last").unlink(missing_ok=True)
            done = subprocess.run(senv.who.prefix() + [sandbox_exe(), "run", "--", "true"],
                                  cwd=_ws2, env=client_env, capture_output=True, input=b"",
                                  timeout=60)
            assert impostor.wait(30) == 0, impostor.stderr.read()
        finally:
            if impostor.poll() is None:
                impostor.kill()
                impostor.wait()
        assert done.returncode in (0, 125), done  # direct (125: a state dir it refuses)
        return got.read_bytes()

    assert SECRET in attack(sandboxed=False)  # a host impostor gets the environment
    assert attack(sandboxed=True) == b""  # the sandboxed one: connected, sent nothing


SECCOMP_EXEC = r"""
import errno, os, sys
import pyseccomp as seccomp
f = seccomp.SyscallFilter(seccomp.ALLOW)
if os.environ.get("SECCOMP_NO_NNP"):
    f.set_attr(seccomp.Attr.CTL_NNP, 0)  # root (CAP_SYS_ADMIN) needs no no_new_privs
for name in sys.argv[1].split(","):
    f.add_rule(seccomp.ERRNO(errno.EPERM), name)
f.load()  # sets no_new_privs first unless told not to
os.execv(sys.argv[2], sys.argv[2:])
"""


@pytest.mark.parametrize("nnp", [True, False], ids=["no-new-privs", "cap-sys-admin"])
def test_a_caller_under_its_own_seccomp_filter_is_not_served_by_a_differently_filtered_server(
        senv, nnp):
    """The peer check compares seccomp by ``Seccomp``/``Seccomp_filters``
    counts only.  A server started under one filter (here: acct denied)
    served a caller confined by another filter of the same count (link and
    linkat denied): the command made the hard link its caller's own filter
    forbids, which a direct run (inheriting the caller's filter) refuses.
    Filter contents cannot be read without CAP_SYS_ADMIN, so a caller under
    a filter it installed itself (no_new_privs) must go direct."""
    import sys
    import time

    if not nnp and senv.who.name != "root":
        pytest.skip("only CAP_SYS_ADMIN installs a filter without no_new_privs")
    helper = senv.base / "seccomp_exec.py"
    helper.write_text(SECCOMP_EXEC)
    env = senv.environ(SANDBOX_SERVER="on", SANDBOX_SERVER_IDLE="30")
    if not nnp:
        env["SECCOMP_NO_NNP"] = "1"
    senv.finish()
    direct = str(Path(sandbox_exe()).with_name("sandbox-direct"))
    server = subprocess.Popen(senv.who.prefix() + [sys.executable, str(helper), "acct",
                                                   sys.executable, direct, "server", "run"],
                              cwd="/", env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sock = server_socket(Path(os.path.realpath(senv.home / ".cache")) / "sandbox")
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sock.exists()
        script = "touch a; ln a b && echo LINKED; rm -f a b"

        def run(exe):
            return subprocess.run(senv.who.prefix() + [sys.executable, str(helper), "link,linkat",
                                                       exe, "run", "--", "sh", "-c", script],
                                  cwd=senv.ws, env=env, capture_output=True, input=b"",
                                  timeout=60)

        assert b"LINKED" not in run(direct).stdout  # the caller's filter holds in a direct run
        served = run(sandbox_exe())
        assert b"LINKED" not in served.stdout, served
        # (the attack needs the server: without the caller's filter the link is made)
        bare = subprocess.run(senv.who.prefix() + [sandbox_exe(), "run", "--", "sh", "-c",
                                                   script],
                              cwd=senv.ws, env=env, capture_output=True, input=b"", timeout=60)
        assert b"LINKED" in bare.stdout, bare
    finally:
        server.terminate()
        server.wait(10)


def test_a_client_with_a_personality_goes_direct_without_connecting(senv):
    """``setarch -X`` (READ_IMPLIES_EXEC), ``-R`` (no ASLR), ``linux32``: a
    direct run passes the caller's personality on to the command.  The
    server compares it only where it can read the client's
    /proc/PID/personality, which Yama (ptrace_scope >= 1, Ubuntu's default)
    allows only to ancestors: there a served run silently got the server's
    personality.  So the client itself goes direct (no connection at all)
    when its personality is not the default."""
    from test_client import FakeServer

    server = FakeServer(senv, "X7")
    try:
        env = dict(senv.environ())
        env.pop("SANDBOX_SERVER", None)
        senv.finish()
        done = subprocess.run(senv.who.prefix() + ["setarch", "-R", sandbox_exe(), "run", "--",
                                                   "cat", "/proc/self/personality"],
                              cwd=senv.ws, env=env, capture_output=True, stdin=subprocess.DEVNULL,
                              timeout=60)
        assert done.returncode == 0, done  # direct: not the fake server's 7
        assert int(done.stdout, 16) & 0x0040000  # ADDR_NO_RANDOMIZE reached the command
    finally:
        assert server.stop() == []  # nothing was sent to the server
