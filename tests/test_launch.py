"""The native launcher (native/launch.c) against its reference, ``runner._child``.

Every other sandbox test runs through the launcher (it is the default
wherever it is installed); here the same runs also go through the Python
fork (``SANDBOX_LAUNCH=fork``) and must come out the same: the descriptors
the sandbox gets, its limits, the resolver and proxy sockets handed over
from inside the namespace, a session's shared namespace, host-port grants,
and every failure path, as root and as the unprivileged test user.  The
launcher itself is also fed malformed argv: it must refuse before it execs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import test_forward
import test_netsession
from conftest import Env
from sandbox import runner

MODES = ("native", "fork")


@pytest.fixture
def launch_mode(request, monkeypatch):
    """Every run of the test through one launcher: ``native`` or ``fork``."""
    mode = request.param
    original = Env.environ

    def environ(self, **extra):
        env = original(self, **extra)
        if mode == "fork":
            env["SANDBOX_LAUNCH"] = "fork"
        return env

    monkeypatch.setattr(Env, "environ", environ)
    return mode


def test_the_installed_package_has_the_launcher():
    """A build with a C compiler (scripts/setup installs one) ships it; without
    it, runs fork and this is the test that says so."""
    path = runner._launcher()
    assert path is not None, "sandbox/_native/launch is missing from the installed package"
    assert path.startswith(os.path.dirname(os.path.abspath(runner.__file__)) + os.sep)
    st = os.stat(path)
    assert not st.st_mode & 0o022  # nobody but its owner can replace it


PROBE = """\
ls -l /proc/self/fd | awk 'NR > 1 {print $9, $10, $11}' | sed 's/\\[[0-9]*\\]/[N]/'
ulimit -c; ulimit -n; ulimit -Hn
grep -E '^(NoNewPrivs|Seccomp|CapEff|CapBnd|SigIgn|SigBlk):' /proc/self/status
cat /proc/self/net/dev 2>/dev/null | awk 'NR > 2 {print $1}'
getent hosts x.invalid; echo lookup=$?
"""


def _battery(senv, mode: str):
    env = senv.environ()
    if mode == "fork":
        env["SANDBOX_LAUNCH"] = "fork"
    done = senv.sh(PROBE, env=env)
    # the resolver's blocked-lookup line names nothing run-specific
    return done.returncode, done.stdout, done.stderr


def test_the_sandbox_is_the_same_either_way(senv):
    """Descriptors, rlimits, privileges, the network's interfaces and the
    resolver (whose socket the launcher made inside and handed over): the
    same from the launcher as from the fork, and the run's own pipes do not
    reach the command through either."""
    native, fork = _battery(senv, "native"), _battery(senv, "fork")
    assert native == fork
    code, out, err = native
    assert code == 0, err
    lines = out.decode().splitlines()
    # stdio only (and ls's own directory fd): no status pipe, channel, cgroup or error pipe
    fds = [line for line in lines if re.match(r"^\d+ ->", line)]
    assert [f.split()[0] for f in fds] == ["0", "1", "2", "3"], lines
    assert "lookup=2" in lines and b"blocked name lookup x.invalid" in err


@pytest.mark.parametrize("launch_mode", MODES, indirect=True)
def test_a_session_shares_its_namespace_either_way(senv, launch_mode):
    """The launcher enters the session's namespace (setns, user namespace
    first) as the fork does: a server of one run answers the next."""
    test_netsession.test_server_in_one_run_answers_the_next_and_nothing_else(senv)


@pytest.mark.parametrize("launch_mode", MODES, indirect=True)
def test_a_grant_opens_exactly_its_port_either_way(senv, launch_mode):
    """The forward listeners (SO_REUSEPORT, 127.0.0.1 and ::1) made by the launcher."""
    echo, greeter = test_forward._Server(test_forward._echo), \
        test_forward._Server(test_forward._greeting)
    try:
        test_forward.test_only_the_granted_port_is_reachable(senv, echo, greeter)
    finally:
        echo.close()
        greeter.close()


@pytest.mark.parametrize("launch_mode", MODES, indirect=True)
@pytest.mark.parametrize("squatted, expect", [((3129, 3130), 3131),
                                              (tuple(range(3129, 3145)), None)])
def test_a_taken_port_fails_the_same_either_way(senv, launch_mode, squatted, expect):
    """The launcher's failure lines (N<stage>:<errno>) drive the runner's
    retry on another port, and its refusal when all are taken."""
    test_netsession.test_a_squatted_proxy_port_is_never_used(senv, squatted, expect)


class _Member:
    """A session member whose namespace cannot be entered (not a namespace fd)."""

    joined = True
    port = 3128

    def __init__(self, join) -> None:
        self.join = join

    def spawned(self, pid) -> None:
        pass

    def another_port(self):
        return None


def test_a_namespace_that_cannot_be_entered_fails_the_same_either_way(tmp_path, monkeypatch):
    """A real failure of the launcher's setns (stage 6), not a stand-in:
    reported in the same words as the fork's, and nothing ran.  In auto mode
    the runner then lets bwrap make the namespace, as for the fork."""
    import socket

    from conftest import BWRAP
    from sandbox.egress import netns
    from sandbox.errors import SetupError

    said = {}
    for mode in MODES:
        monkeypatch.setattr(runner, "_LAUNCHER", [] if mode == "native" else [None])
        if mode == "native" and runner._launcher() is None:
            pytest.skip("no native launcher in this installation")
        for bridge_mode in ("direct", "auto"):
            proxy_end, launcher_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            null = os.open("/dev/null", os.O_RDONLY)
            marker = tmp_path / f"ran-{mode}-{bridge_mode}"
            bridge = netns.Bridge(socket.socket(fileno=launcher_end.detach()), bridge_mode,
                                  _Member((-1, null)))
            argv = [BWRAP, "--unshare-user", "--unshare-pid", "--die-with-parent",
                    "--ro-bind", "/", "/", "--bind", str(tmp_path), str(tmp_path), "--dev", "/dev",
                    "--proc", "/proc", "--", "/bin/sh", "-c", f"touch {marker}"]
            try:
                if bridge_mode == "direct":
                    with pytest.raises(SetupError) as info:
                        runner.run(argv, dict(os.environ), None, False, bridge=bridge)
                    said[mode] = str(info.value)
                    assert not marker.exists()
                else:
                    outcome = runner.run(argv, dict(os.environ), None, False, bridge=bridge)
                    assert outcome.bwrap_status == 0 and marker.exists()
            finally:
                os.close(null)
                bridge.close()
                proxy_end.close()
    assert said["native"] == said["fork"]
    assert said["native"].startswith("cannot enter the session's network namespace (setns)")


# -- the launcher on its own ---------------------------------------------------------

def _launch_direct(args: list[str], pass_err: bool = True):
    """Run the launcher with ``args`` after its ERR_FD; (exit status, err lines, stdout)."""
    path = runner._launcher()
    if path is None:
        pytest.skip("no native launcher in this installation")
    err_r, err_w = os.pipe()
    try:
        done = subprocess.run([path, str(err_w) if pass_err else "x", *args],
                              pass_fds=(err_w,), capture_output=True, timeout=30)
    finally:
        os.close(err_w)
    with os.fdopen(err_r, "rb") as fh:
        lines = fh.read().decode().split()
    return done.returncode, lines, done.stdout


@pytest.mark.parametrize("args", [
    [],
    ["-", "-", "-"],                                   # no "--" and no program
    ["-", "-", "-", "--"],                             # nothing to exec
    ["-", "x:1:2", "-", "--", "/bin/echo", "ran"],     # a limit that is no number
    ["-", "-", "t:127.0.0.1:99999:::-1:-1", "--", "/bin/echo", "ran"],   # port out of range
    ["-", "-", "q:127.0.0.1:53::3:-1:-1", "--", "/bin/echo", "ran"],     # an unknown kind
    ["-", "-", "t:127.0.0.1:3128", "--", "/bin/echo", "ran"],            # fields missing
    ["-", "-", "t:127.0.0.1:3128::3:-1:-1:extra", "--", "/bin/echo", "ran"],
    ["-", "-", "u:127.0.0.1:53:0:3:-1:-1", "--", "/bin/echo", "ran"],    # grant port 0
    ["99999999999", "-", "-", "--", "/bin/echo", "ran"],                 # no such fd
])
def test_malformed_argv_is_refused_before_anything_runs(args):
    code, lines, out = _launch_direct(args)
    assert code == 127 and out == b""
    assert lines in ([], ["E22"]), lines


def test_without_an_error_descriptor_it_does_nothing():
    code, lines, out = _launch_direct(["-", "-", "-", "--", "/bin/echo", "ran"], pass_err=False)
    assert (code, lines, out) == (127, [], b"")


def test_limits_then_exec_and_the_error_pipe_ends_at_exec():
    """Good argv: the rlimits hold in the program it becomes, whose
    descriptors do not include the error pipe (end-of-file at the exec is
    how the runner knows it started)."""
    import resource

    limits = f"{resource.RLIMIT_CORE}:0:0,{resource.RLIMIT_NOFILE}:512:1024"
    code, lines, out = _launch_direct(
        ["-", limits, "-", "--", "/bin/sh", "-c", "ulimit -c; ulimit -n; ulimit -Hn; "
                                                 "ls /proc/self/fd | sort -n | tr '\\n' ' '"])
    assert (code, lines) == (0, [])
    assert out.decode().split() == ["0", "512", "1024", "0", "1", "2", "3"]


def test_an_exec_failure_is_reported_as_the_fork_reports_it():
    code, lines, _ = _launch_direct(["-", "-", "-", "--", "/nonexistent/bwrap"])
    assert (code, lines) == (127, ["E2"])


def test_a_refused_limit_is_reported_and_nothing_runs():
    import resource

    # raising a hard limit above the caller's is refused to everyone but root
    if os.getuid() == 0:
        limit = f"{resource.RLIMIT_NOFILE}:{1 << 30}:{1 << 30}"  # over fs.nr_open
    else:
        limit = f"{resource.RLIMIT_NOFILE}:-1:-1"
    code, lines, out = _launch_direct(["-", limit, "-", "--", "/bin/echo", "ran"])
    assert code == 127 and out == b"" and lines[0] in ("E1", "E22"), lines


def test_spawn_reports_the_same_from_launcher_and_fork(tmp_path, monkeypatch):
    """``runner._spawn`` itself (without bwrap): the same exit status, limits
    and descriptors from the launcher's posix_spawn as from the fork."""
    import resource

    class Limits:
        rlimits = [("RLIMIT_CORE", 0, 0), ("RLIMIT_NOFILE", 256, 512)]
        procs_fd = None

        def not_joined(self, code):
            raise AssertionError("no cgroup here")

        def spawned(self):
            pass

    # limits, descriptors, ignored signals (none: SIGPIPE is Python's), own process group
    script = ("ulimit -c; ulimit -n; ulimit -Hn; ls /proc/self/fd | sort -n | tr '\\n' ' '; "
              "grep SigIgn /proc/self/status; "
              "[ \"$(ps -o pgid= $$ | tr -d ' ')\" = \"$$\" ] && echo own-group")
    results = {}
    for mode in MODES:
        monkeypatch.setattr(runner, "_LAUNCHER", [] if mode == "native" else [None])
        if mode == "native" and runner._launcher() is None:
            pytest.skip("no native launcher in this installation")
        out = tmp_path / f"{mode}.out"
        fd = os.open(out, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            pid = runner._spawn(["/bin/sh", "-c", script], {"PATH": "/usr/bin:/bin"}, [],
                                [None, fd, None], Limits())
        finally:
            os.close(fd)
        _, status = os.waitpid(pid, 0)
        results[mode] = (os.waitstatus_to_exitcode(status), out.read_text())
    assert results["native"] == results["fork"]
    assert resource.RLIMIT_CORE != resource.RLIMIT_NOFILE
    assert results["native"][1].split() == ["0", "256", "512", "0", "1", "2", "3",
                                            "SigIgn:", "0000000000000000", "own-group"]


def test_the_runner_uses_the_launcher_unless_told_not_to(monkeypatch):
    monkeypatch.setattr(runner, "_LAUNCHER", [])
    monkeypatch.setenv("SANDBOX_LAUNCH", "fork")
    assert runner._launcher() is None
    monkeypatch.setattr(runner, "_LAUNCHER", [])
    monkeypatch.delenv("SANDBOX_LAUNCH")
    assert runner._launcher() == os.path.join(os.path.dirname(os.path.abspath(runner.__file__)),
                                              "_native", "launch")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
