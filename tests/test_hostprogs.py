"""Programs ``sandbox`` starts on the host come from trusted places (sandbox.hostprogs).

* bwrap and the ctty helper (setsid) are looked up in the system directories,
  never through PATH: a workspace virtualenv put first on PATH, holding a
  planted ``bwrap`` and ``setsid``, must not get them run.  The control shows
  that a PATH search picks the planted ones and that they are working
  programs (they leave a marker when run).
* SANDBOX_BWRAP may not name a file the command can replace.
* Loader variables (LD_PRELOAD...) reach the command, never bwrap or the
  egress bridge's launcher on the host: a library built here whose
  constructor records the process that loaded it shows who loaded it.
  The control runs bwrap itself with LD_PRELOAD and shows the library
  loaded there.
"""

from __future__ import annotations

import json
import marshal
import os
import shlex
import shutil
import subprocess
import time

import pytest

from conftest import BWRAP, sandbox_exe
from egress_support import proxy_profile

pytestmark = pytest.mark.skipif(BWRAP is None, reason="bwrap is not installed")

REAL_BWRAP = os.path.realpath(BWRAP) if BWRAP else ""


def _plant(bindir, log) -> None:
    """``bwrap`` and ``setsid`` in ``bindir`` that log their name and run the real one."""
    bindir.mkdir(parents=True, exist_ok=True)
    for name in ("bwrap", "setsid"):
        real = shutil.which(name, path="/usr/bin:/bin")
        script = bindir / name
        script.write_text(f"#!/bin/sh\necho {name} >> {shlex.quote(str(log))}\n"
                          f"exec {real} \"$@\"\n")
        script.chmod(0o755)


def _under_a_terminal(senv, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``argv`` with a terminal on stdin (util-linux script), so setsid is wanted.

    No chown here (``senv.finish``): it would make every ctime new, and plans
    are cached only from inputs older than two seconds.
    """
    if shutil.which("script") is None:
        pytest.skip("script (util-linux) is not installed")
    return subprocess.run(senv.who.prefix() + ["script", "-qec", shlex.join(argv), "/dev/null"],
                          stdin=subprocess.DEVNULL, capture_output=True, cwd=senv.ws, env=env,
                          timeout=60)


def _cached_runs(report):
    """Run until the plan is stored, then once more from it; yield each attempt's label."""
    yield "fresh plan"
    time.sleep(2.2)  # plans are cached only from inputs older than 2 s
    yield "plan stored"
    yield "cached plan"
    assert json.loads(report.read_text())["plan_cached"] is True


def test_planted_bwrap_and_setsid_on_path_are_never_run(senv):
    log = senv.base / "planted.log"  # outside the workspace: only the host writes it
    bindir = senv.ws / ".venv" / "bin"
    _plant(bindir, log)
    env = senv.environ(PATH=f"{bindir}:{senv.environ()['PATH']}")

    # control: a PATH search (the old lookup) finds the planted programs, and
    # they run (and log) when started
    assert shutil.which("bwrap", path=env["PATH"]) == str(bindir / "bwrap")
    assert shutil.which("setsid", path=env["PATH"]) == str(bindir / "setsid")
    senv.finish()
    control = subprocess.run(senv.who.prefix() + ["sh", "-c", "bwrap --version; setsid true"],
                             env=env, cwd=senv.ws, capture_output=True, timeout=30)
    assert control.returncode == 0, control.stderr
    assert log.read_text().split() == ["bwrap", "setsid"]
    log.unlink()

    # the first run builds the plan (cache miss), the last one reuses it
    report = senv.base / "report.json"
    for attempt in _cached_runs(report):
        done = _under_a_terminal(
            senv, [sandbox_exe(), "run", "--report", str(report), "--", "sh", "-c",
                   "test -t 0 && echo RAN-ON-A-TTY"], env)
        assert b"RAN-ON-A-TTY" in done.stdout, (attempt, done.stdout, done.stderr)
        assert not log.exists(), f"{attempt}: planted program ran on the host: {log.read_text()}"

    # the plan names the system's programs
    dry = _under_a_terminal(senv, [sandbox_exe(), "run", "--dry-run", "--", "true"], env)
    argv_line = [line for line in dry.stdout.decode().replace("\r", "").splitlines()
                 if line and not line.startswith("#")][-1]  # after the comment on fds
    words = shlex.split(argv_line)
    assert os.path.realpath(words[0]) == REAL_BWRAP and words[0].startswith(("/usr/", "/bin/")), dry.stdout
    assert "--ctty" in words and os.path.dirname(words[words.index("--ctty") - 2]) in (
        "/usr/bin", "/bin"), dry.stdout
    assert str(bindir) not in dry.stdout.decode()


@pytest.mark.parametrize("how", ["relative", "in-workspace", "symlink-in-workspace",
                                 "linked-dir-in-workspace"])
def test_sandbox_bwrap_that_the_command_could_replace_is_refused(senv, how):
    if how == "relative":
        value, expect = "bwrap", b"is not an absolute path"
    elif how == "in-workspace":
        _plant(senv.ws / "tools", senv.base / "planted.log")
        value, expect = str(senv.ws / "tools" / "bwrap"), b"lies inside the writable root"
    elif how == "symlink-in-workspace":  # the link is in the workspace, its target is not
        (senv.ws / "bwrap").symlink_to(REAL_BWRAP)
        value, expect = str(senv.ws / "bwrap"), b"lies inside the writable root"
    else:  # named through a link to the workspace, via a directory link inside it that
        # points out: neither the name nor the real path is in the workspace, the link is
        (senv.ws / "tools").symlink_to(os.path.dirname(REAL_BWRAP))
        (senv.base / "ws-link").symlink_to(senv.ws)
        value, expect = str(senv.base / "ws-link" / "tools" / "bwrap"), b"(through "
    marker = senv.ws / "ran"
    done = senv.run(["touch", str(marker)], env=senv.environ(SANDBOX_BWRAP=value))
    assert done.returncode == 125, done.stderr
    assert expect in done.stderr and b"SANDBOX_BWRAP" in done.stderr, done.stderr
    assert len(done.stderr.decode().strip().splitlines()) == 1, done.stderr
    assert not marker.exists()
    assert not (senv.base / "planted.log").exists()


def test_sandbox_bwrap_outside_the_writable_roots_is_used(senv):
    link = senv.base / "bin" / "bwrap"  # outside the workspace: the user's own choice
    link.parent.mkdir()
    link.symlink_to(REAL_BWRAP)
    done = senv.run(["sh", "-c", "echo ran"], env=senv.environ(SANDBOX_BWRAP=str(link)))
    assert done.returncode == 0 and done.stdout == b"ran\n", done.stderr


def test_system_program_inside_a_writable_root_is_refused():
    """A workspace or --allow-write over a system directory: refused, not used.
    (Through the CLI such a run is refused earlier, by selfguard, because the
    interpreter lives there too; the rule itself is checked here.)"""
    from sandbox import hostprogs
    from sandbox.errors import SetupError

    assert os.path.realpath(hostprogs.find("bwrap", ("/srv",))) == REAL_BWRAP
    with pytest.raises(SetupError, match="lies inside the writable root /usr"):
        hostprogs.find("bwrap", ("/usr",))
    assert hostprogs.find("no-such-program-here", ()) is None


def test_places_lists_every_link_on_the_way(tmp_path):
    from sandbox import hostprogs

    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "prog").write_text("")
    (tmp_path / "dirlink").symlink_to("real")
    (tmp_path / "real" / "proglink").symlink_to("../dirlink/prog")
    got = hostprogs.places(str(tmp_path / "real" / "proglink"))
    assert got == [str(tmp_path / "real" / "proglink"), str(tmp_path / "dirlink"),
                   str(tmp_path / "real" / "prog")]
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    assert hostprogs.places(str(loop))  # ends, does not hang


def test_plan_naming_a_program_in_a_writable_root_is_not_reused(senv):
    """The fast path checks what a cached plan runs on the host against the
    plan's own writable roots (tampering stands in for a stale plan)."""
    env = senv.environ()
    report = senv.base / "report.json"
    log = senv.base / "planted.log"
    _plant(senv.ws / "bin", log)
    senv.finish()
    argv = senv.who.prefix() + [sandbox_exe(), "run", "--report", str(report), "--", "true"]
    for _ in _cached_runs(report):
        done = subprocess.run(argv, cwd=senv.ws, env=env, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
    plans = list((senv.home / ".cache" / "sandbox" / "plans").iterdir())
    assert len(plans) == 1
    plan = marshal.loads(plans[0].read_bytes())
    planted = str(senv.ws / "bin" / "bwrap")
    plan["argv"] = (planted,) + tuple(plan["argv"][1:])
    plan["bwrap"] = planted
    plan["host_programs"] = (planted,)
    plans[0].write_bytes(marshal.dumps(plan))  # the file keeps its owner and mode
    done = subprocess.run(argv, cwd=senv.ws, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(report.read_text())["plan_cached"] is False
    assert not log.exists(), "a cached plan ran a program from the workspace"


PRELOAD_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
/* Record which program loaded this library: its executable and its argv. */
__attribute__((constructor)) static void record(void) {
    char exe[512] = {0}, cmd[512] = {0}, line[1200];
    if (readlink("/proc/self/exe", exe, sizeof exe - 1) < 0) strcpy(exe, "?");
    int fd = open("/proc/self/cmdline", O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, cmd, sizeof cmd - 1) : 0;
    if (fd >= 0) close(fd);
    for (ssize_t i = 0; i < n; i++) if (cmd[i] == 0 || cmd[i] == '\n') cmd[i] = ' ';
    int out = open(MARKER, O_WRONLY | O_CREAT | O_APPEND, 0666);
    if (out < 0) return;
    int len = snprintf(line, sizeof line, "%s\t%s\n", exe, cmd);
    write(out, line, len > 0 ? (size_t)len : 0);
    close(out);
}
"""


@pytest.fixture
def preload_lib(senv):
    """A library in the workspace that logs every process that loads it."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc) to build the LD_PRELOAD library")
    marker = senv.ws / "loaded-by.log"
    src = senv.base / "record.c"
    src.write_text(PRELOAD_C)
    lib = senv.ws / "librecord.so"
    subprocess.run([cc, "-shared", "-fPIC", f'-DMARKER="{marker}"', "-o", str(lib), str(src)],
                   check=True, capture_output=True)
    lib.chmod(0o755)
    marker.touch()
    marker.chmod(0o666)  # setpriv (root) and the command (the test user) both write it

    def loaders() -> list[tuple[str, str]]:
        out = [tuple(line.split("\t", 1)) for line in marker.read_text().splitlines()]
        marker.write_text("")
        return out

    return lib, loaders


@pytest.mark.parametrize("network", ["none", "proxy-direct", "proxy-bwrap"])
def test_ld_preload_reaches_the_command_not_bwrap(senv, preload_lib, network):
    lib, loaders = preload_lib
    env = senv.environ(LD_PRELOAD=str(lib))
    args: list[str] = []
    if network != "none":
        args = ["--profile", str(proxy_profile(senv, ""))]
        env["SANDBOX_NET_BRIDGE"] = network.split("-")[1]

    # control: bwrap on the host loads it when it is in bwrap's environment
    senv.finish()
    bare = subprocess.run(senv.who.prefix() + [REAL_BWRAP, "--version"], env=env,
                          capture_output=True, timeout=30)
    assert bare.returncode == 0, bare.stderr
    assert REAL_BWRAP in [exe for exe, _ in loaders()]

    done = senv.run(["sh", "-c", 'echo "preload=$LD_PRELOAD"'], args=args, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == f"preload={lib}\n"  # the command has it
    seen = loaders()
    exes = [exe for exe, _ in seen]
    # the command's shell loaded it (inside the sandbox, where the workspace
    # is writable); `sandbox` itself (and setpriv) did too: the caller's own
    # environment starts them, which is not the sandbox's to change
    assert os.path.realpath(shutil.which("sh")) in exes, seen
    assert REAL_BWRAP not in exes, f"bwrap loaded the library on the host: {seen}"
    assert not [cmd for _, cmd in seen if " -I -S -c " in cmd], (
        f"the bridge launcher loaded the library on the host: {seen}")


def test_loader_variables_keep_their_values_for_the_command(senv):
    values = {"LD_LIBRARY_PATH": "/opt/x/lib:/opt/y lib", "GCONV_PATH": "/opt/gconv",
              "PYTHONDONTWRITEBYTECODE": "1", "TZDIR": "/usr/share/zoneinfo", "MALLOC_ARENA_MAX": "2",
              "BASH_ENV": "/dev/null"}
    script = "; ".join(f'echo "{k}=${k}"' for k in values)
    done = senv.run(["sh", "-c", script], env=senv.environ(**values))
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == [f"{k}={v}" for k, v in values.items()]
    # and nowhere in bwrap's argv (they travel through a descriptor)
    dry = senv.run(["true"], args=["--dry-run"], env=senv.environ(**values))
    assert b"/opt/gconv" not in dry.stdout and b"--setenv" not in dry.stdout


def test_split_env_moves_only_loader_variables():
    from sandbox import hostprogs

    env = {"PATH": "/usr/bin", "LD_PRELOAD": "/x.so", "LD_AUDIT": "a", "GCONV_PATH": "/g",
           "PYTHONHOME": "/p", "BASH_FUNC_f%%": "() { :; }", "HOME": "/h", "LANG": "C"}
    host, moved = hostprogs.split_env(env)
    assert host == {"PATH": "/usr/bin", "HOME": "/h", "LANG": "C"}
    assert dict(moved) == {k: v for k, v in env.items() if k not in host}
    assert hostprogs.setenv_args([("A", "1"), ("B", "x y")]) == b"--setenv\0A\x001\0--setenv\0B\0x y\0"
    plain = {"PATH": "/usr/bin"}
    assert hostprogs.split_env(plain) == (plain, [])
