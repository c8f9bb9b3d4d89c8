"""[limits]: validation and merge, the plan, and the limits inside a real sandbox.

Integration tests run as root and as the unprivileged test user (``who``).
The cgroup tests skip, naming the reason, where the host gives the caller no
cgroup v2 controllers to delegate (cgroup v1, or a session scope).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import _test_root
from sandbox import app, limits, plancache, profile, runner
from sandbox.errors import ProfileError
from sandbox.options import RunOptions
from sandbox.policy import LIMIT_DEFAULTS, Weakening
from sandbox.schema import SCHEMA

CTX = profile.Context(workspace="/ws", home="/home/u", tmp="/tmp", runtime="/run/user/1000")
MIB = 1 << 20


def load_text(tmp_path: Path, text: str, name: str = "p.toml"):
    path = tmp_path / name
    path.write_text(text)
    return profile.load(str(path), CTX)[0]


def load_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        profile.load(str(path), CTX)
    return info.value.one_line().replace(str(path), "{p}")


# -- schema, defaults, validation -------------------------------------------------

def test_schema_and_defaults_agree(user_dir):
    assert [name for name, _ in LIMIT_DEFAULTS] == list(SCHEMA["limits"])
    policy = profile.load("default", CTX)[0]
    for name, value in LIMIT_DEFAULTS:
        assert getattr(policy, name) == value, name
    assert policy.core_dumps is False
    assert policy.max_open_files == 65536
    assert (policy.cpu_seconds, policy.max_processes, policy.address_space_mb, policy.pids_max,
            policy.max_file_size_mb, policy.timeout_seconds, policy.memory_max_mb) == (0,) * 7


def test_a_root_profile_without_limits_gets_the_defaults(tmp_path, user_dir):
    policy = load_text(tmp_path, 'description = "bare"\n')
    assert policy.max_open_files == 65536 and policy.pids_max == 0 and not policy.core_dumps


@pytest.mark.parametrize("text,expected", [
    ("[limits]\nmax_open_files = 10\n",
     "{p}:2: key 'limits.max_open_files': must be 0 (no limit) or between 64 and 1048576, not 10"),
    ("[limits]\ncpu_seconds = -1\n",
     "{p}:2: key 'limits.cpu_seconds': must be 0 (no limit) or between 1 and 31536000, not -1"),
    ("[limits]\npids_max = 4\n",
     "{p}:2: key 'limits.pids_max': must be 0 (no limit) or between 8 and 4194304, not 4"),
    ("[limits]\n\nmemory_max_mb = 99999999999\n",
     "{p}:3: key 'limits.memory_max_mb': must be 0 (no limit) or between 16 and 16777216, "
     "not 99999999999"),
    ("[limits]\ntimeout_seconds = \"10\"\n",
     "{p}:2: key 'limits.timeout_seconds': must be an integer, not a string"),
    ("[limits]\ntimeout_seconds = 1.5\n",
     "{p}:2: key 'limits.timeout_seconds': must be an integer, not a number"),
    ("[limits]\ncore_dumps = 0\n",
     "{p}:2: key 'limits.core_dumps': must be true or false, not an integer"),
    ("[limits]\nmax_open_files = true\n",
     "{p}:2: key 'limits.max_open_files': must be an integer, not a boolean"),
    ("limits = 5\n", "{p}:1: key 'limits': must be a table (hint: write it as [limits])"),
])
def test_bad_limits_exact_message(tmp_path, user_dir, text, expected):
    assert load_error(tmp_path, text) == "sandbox: profile error: " + expected


def test_unknown_limit_names_the_known_ones(tmp_path, user_dir):
    message = load_error(tmp_path, "[limits]\nnofile = 5\n")
    assert message == ("sandbox: profile error: {p}:2: key 'limits.nofile': unknown key (hint: "
                       "known keys in [limits]: " + ", ".join(sorted(SCHEMA["limits"])) + ")")


def test_max_depth_message_is_unchanged(tmp_path, user_dir):
    assert load_error(tmp_path, "[sockets]\nmax_depth = 40\n") == (
        "sandbox: profile error: {p}:2: key 'sockets.max_depth': must be between 0 and 32")


# -- merge: raising or removing a limit is a weakening ------------------------------

def child(tmp_path: Path, body: str, parent: str = "default"):
    return load_text(tmp_path, f'extends = "{parent}"\n[limits]\n{body}')


def limit_weakenings(policy) -> set[Weakening]:
    return {w for w in policy.weakenings if w.key.startswith("limits.")}


@pytest.mark.parametrize("body", [
    "max_open_files = 1024\n", "pids_max = 100\n", "cpu_seconds = 60\n", "timeout_seconds = 5\n",
    "memory_max_mb = 512\n", "max_processes = 100\n", "address_space_mb = 4096\n",
    "max_file_size_mb = 10\n", "core_dumps = false\n", "max_open_files = 65536\n",
])
def test_tightening_is_not_a_weakening(tmp_path, user_dir, body):
    assert limit_weakenings(child(tmp_path, body)) == set()


@pytest.mark.parametrize("body,weakening", [
    ("max_open_files = 100000\n", ("limits.max_open_files", "65536 -> 100000")),
    ("max_open_files = 0\n", ("limits.max_open_files", "65536 -> 0")),
    ("core_dumps = true\nmax_file_size_mb = 0\n", ("limits.core_dumps", "false -> true")),
    ("core_dumps = true\n", ("limits.core_dumps", "false -> true")),
])
def test_loosening_is_a_weakening(tmp_path, user_dir, body, weakening):
    assert limit_weakenings(child(tmp_path, body)) == {Weakening("p", *weakening)}


def test_removing_a_parents_limit_is_a_weakening_of_the_child(tmp_path, user_dir):
    (tmp_path / "base.toml").write_text(
        'extends = "default"\n[limits]\ntimeout_seconds = 10\ncpu_seconds = 30\n'
        'memory_max_mb = 256\npids_max = 4096\n')
    policy = child(tmp_path, "timeout_seconds = 0\ncpu_seconds = 20\nmemory_max_mb = 1024\n"
                             "pids_max = 0\n", parent="base.toml")
    assert (policy.timeout_seconds, policy.cpu_seconds, policy.memory_max_mb) == (0, 20, 1024)
    assert limit_weakenings(policy) == {Weakening("p", "limits.timeout_seconds", "10 -> 0"),
                                        Weakening("p", "limits.memory_max_mb", "256 -> 1024"),
                                        Weakening("p", "limits.pids_max", "4096 -> 0")}


def test_setting_a_limit_the_parent_left_open_is_not_a_weakening(tmp_path, user_dir):
    (tmp_path / "base.toml").write_text('extends = "default"\n[limits]\ncpu_seconds = 0\n')
    policy = child(tmp_path, "cpu_seconds = 100000\n", parent="base.toml")
    assert limit_weakenings(policy) == set()


# -- the plan ------------------------------------------------------------------------

def test_plan_of_the_default_profile(user_dir):
    plan = limits.plan(profile.load("default", CTX)[0])
    assert plan == {"rlimits": (("core_dumps", "RLIMIT_CORE", 0, 0, 1),
                                ("max_open_files", "RLIMIT_NOFILE", 65536, 65536, 1)),
                    "cgroup": (), "timeout": None}


def test_plan_units(tmp_path, user_dir):
    policy = child(tmp_path, "core_dumps = true\nmax_open_files = 0\nmax_file_size_mb = 3\n"
                             "cpu_seconds = 7\naddress_space_mb = 100\nmax_processes = 50\n"
                             "timeout_seconds = 9\npids_max = 0\nmemory_max_mb = 64\n")
    plan = limits.plan(policy)
    assert plan["rlimits"] == (("max_file_size_mb", "RLIMIT_FSIZE", 3 * MIB, 3 * MIB, MIB),
                               ("cpu_seconds", "RLIMIT_CPU", 7, 8, 1),
                               ("max_processes", "RLIMIT_NPROC", 50, 50, 1),
                               ("address_space_mb", "RLIMIT_AS", 100 * MIB, 100 * MIB, MIB))
    assert plan["cgroup"] == (("memory_max_mb", "memory", "memory.max", str(64 * MIB)),)
    assert plan["timeout"] == 9


def test_limits_travel_in_the_cached_plan(tmp_path, monkeypatch):
    base = _test_root() / f"lim-{uuid.uuid4().hex[:12]}"
    home, ws = base / "home", base / "ws"
    (home / ".cache").mkdir(parents=True)
    ws.mkdir()
    prof = base / "lim.toml"
    prof.write_text('extends = "default"\n[limits]\ntimeout_seconds = 42\nmax_file_size_mb = 5\n')
    try:
        monkeypatch.chdir(ws)
        env = {"HOME": str(home), "PATH": os.environ["PATH"], "PWD": str(ws),
               "XDG_CONFIG_HOME": str(home / ".config")}
        opts = RunOptions(command=("true",), profile=str(prof))
        prepared = app.prepare(opts, env)
        plancache.store(env, prepared, app.plan_meta(prepared))
        path = plancache._path(env, plancache.key(opts, env))
        import marshal

        with open(path, "rb") as fh:
            plan = marshal.load(fh)
        assert plan["format"] == plancache.FORMAT
        assert plan["limits"] == limits.plan(prepared.policy)
        assert plan["limits"]["timeout"] == 42
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_fast_path_imports_stay_light():
    code = ("import sys; from sandbox import fastrun, execute, runner; "
            "bad = {'tomllib', 'dataclasses', 're', 'subprocess', 'json'} & set(sys.modules); "
            "print(sorted(bad))")
    out = subprocess.run([os.sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- runner.Limits, in this process ---------------------------------------------------

def test_rlimits_are_never_raised_above_the_callers():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1 << 20
    lim = runner.Limits({"rlimits": (("max_open_files", "RLIMIT_NOFILE", want, want, 1),)})
    (name, soft, new_hard), = lim.rlimits
    expected = want if hard == resource.RLIM_INFINITY else min(want, hard)
    assert new_hard == expected and soft <= new_hard
    assert lim.applied == {"max_open_files": expected}
    assert lim.warning() is None


def test_the_wrapper_keeps_its_own_limits_and_the_child_gets_them(tmp_path):
    before = {r: resource.getrlimit(r) for r in (resource.RLIMIT_NOFILE, resource.RLIMIT_CORE,
                                                  resource.RLIMIT_CPU, resource.RLIMIT_FSIZE)}
    out = tmp_path / "out"
    plan = {"rlimits": (("core_dumps", "RLIMIT_CORE", 0, 0, 1),
                        ("max_open_files", "RLIMIT_NOFILE", 100, 100, 1),
                        ("cpu_seconds", "RLIMIT_CPU", 30, 31, 1),
                        ("max_file_size_mb", "RLIMIT_FSIZE", MIB, MIB, MIB)),
            "cgroup": (), "timeout": None}
    lim = runner.Limits(plan)
    script = f"ulimit -Hn; ulimit -Sn; ulimit -c; ulimit -t; ulimit -f; ulimit -Ht > {out}.h"
    outcome = runner.run(["/bin/sh", "-c", f"({script}) > {out}"], dict(os.environ), None, False,
                         None, lim)
    assert outcome.started is False  # no bwrap status record: this was not bwrap
    lines = out.read_text().split()
    assert lines[0] == "100" and int(lines[1]) <= 100
    assert lines[2:] == ["0", "30", "2048"]  # ulimit -f counts 512-byte blocks
    assert (tmp_path / "out.h").read_text().strip() == "31"
    assert {r: resource.getrlimit(r) for r in before} == before


def test_a_child_that_cannot_exec_is_an_oserror_in_the_parent():
    lim = runner.Limits({"rlimits": (("core_dumps", "RLIMIT_CORE", 0, 0, 1),)})
    with pytest.raises(FileNotFoundError):
        runner.run(["/nonexistent/bwrap"], {}, None, False, None, lim)


def test_cgroup_plumbing_with_a_fake_hierarchy(tmp_path, monkeypatch):
    """Only memory is 'delegated': pids is reported unavailable, memory is applied,
    the child writes itself into cgroup.procs before exec."""
    (tmp_path / "cgroup.subtree_control").write_text("cpu memory io\n")
    monkeypatch.setattr(runner, "_own_cgroup", lambda: (str(tmp_path), ""))

    def fake_write(path, value):  # a plain directory has no interface files
        Path(os.path.dirname(path), "cgroup.procs").touch()
        Path(path).write_text(value)

    monkeypatch.setattr(runner, "_write", fake_write)
    lim = runner.Limits({"rlimits": (), "timeout": None,
                         "cgroup": (("pids_max", "pids", "pids.max", "50"),
                                    ("memory_max_mb", "memory", "memory.max", str(64 * MIB)))})
    made = Path(lim.cgroup)
    assert made.parent == tmp_path and made.name.startswith(f"sandbox-{os.getpid()}-")
    assert lim.applied == {"memory_max_mb": 64}
    assert set(lim.unavailable) == {"pids_max"}
    assert "pids controller is not delegated" in lim.unavailable["pids_max"]
    assert lim.warning().startswith("limits not applied (pids_max): ")
    outcome = runner.run(["/bin/true"], {}, None, False, None, lim)
    assert outcome.limits["applied"] == {"memory_max_mb": 64}
    assert (made / "memory.max").read_text() == str(64 * MIB)
    assert (made / "memory.swap.max").read_text() == "0"
    assert (made / "cgroup.procs").read_text() == "0"  # written by the child itself
    assert lim.cgroup is None  # forgotten; a real (empty) cgroup would be removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cgroup.subtree_control", made.name]


def test_a_real_cgroup_is_joined_before_exec_and_emptied_after(tmp_path):
    """On a real cgroup v2 hierarchy (no controller needed): the child joins the
    run's cgroup itself, and whatever is left in it afterwards is killed."""
    import ctypes
    import signal

    base, why = runner._own_cgroup()
    if base is None:
        pytest.skip(f"no cgroup v2 hierarchy here ({why})")
    path = os.path.join(base, f"sandbox-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.mkdir(path)
    except OSError as exc:
        pytest.skip(f"cannot create a cgroup in {base}: {exc.strerror}")
    if not os.path.exists(os.path.join(path, "cgroup.kill")):
        os.rmdir(path)
        pytest.skip("this kernel has no cgroup.kill (Linux < 5.14)")
    lim = runner.Limits({})
    lim.cgroup, lim.procs_fd = path, os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY)
    out = tmp_path / "cg"
    # the orphan closes the status pipe, so the run ends when sh does
    orphan = "import os, time; os.closerange(3, 65536); time.sleep(60)"
    script = (f"cat /proc/self/cgroup > {out}; "
              f"{os.sys.executable} -c '{orphan}' </dev/null >/dev/null 2>&1 & echo $! > {out}.pid")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: the orphan becomes ours to reap
    try:
        runner.run(["/bin/sh", "-c", script], dict(os.environ), None, False, None, lim)
        orphan = int(Path(f"{out}.pid").read_text())
        _, status = os.waitpid(orphan, 0)
    finally:
        libc.prctl(36, 0, 0, 0, 0)
        if os.path.isdir(path):
            os.rmdir(path)
    assert out.read_text().splitlines()[-1].endswith("/" + os.path.basename(path))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert not os.path.exists(path)


def test_no_cgroup_is_made_when_nothing_is_delegated(tmp_path, monkeypatch):
    (tmp_path / "cgroup.subtree_control").write_text("\n")
    monkeypatch.setattr(runner, "_own_cgroup", lambda: (str(tmp_path), ""))
    lim = runner.Limits({"cgroup": (("pids_max", "pids", "pids.max", "50"),)})
    assert lim.cgroup is None and lim.applied == {}
    assert list(tmp_path.iterdir()) == [tmp_path / "cgroup.subtree_control"]
    monkeypatch.setattr(runner, "_own_cgroup", lambda: (None, "no cgroup v2 hierarchy"))
    lim = runner.Limits({"cgroup": (("pids_max", "pids", "pids.max", "50"),)})
    assert lim.unavailable == {"pids_max": "no cgroup v2 hierarchy"}


# -- integration: inside a real sandbox, as root and as a plain user ------------------

def with_profile(senv, body: str) -> list[str]:
    prof = senv.base / f"limits-{uuid.uuid4().hex[:8]}.toml"
    prof.write_text(f'extends = "default"\n[limits]\n{body}')
    return ["--profile", str(prof)]


def run_report(senv, body: str, script: str, *, env=None, timeout: float = 60):
    report = senv.base / f"report-{uuid.uuid4().hex[:8]}.json"
    args = with_profile(senv, body) + ["--report", str(report)]
    started = time.monotonic()
    r = senv.sh(script, args=args, env=env, timeout=timeout)
    elapsed = time.monotonic() - started
    doc = json.loads(report.read_text()) if report.exists() else None
    return r, doc, elapsed


def survivors(marker: str) -> list[int]:
    """Processes anywhere on the host whose command line holds ``marker``."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as fh:
                    if marker.encode() in fh.read():
                        found.append(int(name))
            except OSError:
                pass
    return found


def test_ulimits_inside(senv):
    r, doc, _ = run_report(senv, "max_open_files = 256\nmax_file_size_mb = 2\n",
                           "ulimit -n; ulimit -Hn; ulimit -c; ulimit -Hc; ulimit -f; ulimit -t")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split() == ["256", "256", "0", "0", "4096", "unlimited"]
    assert doc["limits"]["applied"]["max_open_files"] == 256
    assert doc["limits"]["applied"]["max_file_size_mb"] == 2
    assert doc["limits"]["applied"]["core_dumps"] is False
    assert doc["timed_out"] is False


def test_default_profile_caps_open_files_and_core(senv):
    r = senv.sh("ulimit -Hn; ulimit -Hc")
    assert r.returncode == 0, r.stderr
    hard_n, hard_c = r.stdout.decode().split()
    assert b"sandbox:" not in r.stderr  # nothing the default asks for is missing here
    assert hard_c == "0"
    assert hard_n != "unlimited" and int(hard_n) <= 65536


def test_core_dumps_true_leaves_the_core_limit_alone(senv):
    r, doc, _ = run_report(senv, "core_dumps = true\n", "ulimit -Hc")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == ("unlimited" if resource.getrlimit(resource.RLIMIT_CORE)[1]
                                         == resource.RLIM_INFINITY
                                         else str(resource.getrlimit(resource.RLIMIT_CORE)[1] // 1024))
    assert "core_dumps" not in doc["limits"]["applied"]


def test_writing_past_max_file_size_is_stopped(senv):
    r, _, _ = run_report(senv, "max_file_size_mb = 1\n",
                         "head -c 3000000 /dev/zero > big; echo killed=$?; "
                         "(trap '' XFSZ; head -c 3000000 /dev/zero > big2) 2>err; echo ignored=$?; "
                         "wc -c < big; wc -c < big2; cat err")
    out = r.stdout.decode().split("\n")
    assert out[0] == "killed=153"  # 128 + SIGXFSZ
    assert out[1] == "ignored=1"
    assert out[2].strip() == out[3].strip() == str(MIB)
    assert "File too large" in out[4]  # EFBIG once the signal is ignored


def test_cpu_seconds_kills_a_busy_loop(senv):
    r, doc, elapsed = run_report(senv, "cpu_seconds = 1\n", "while :; do :; done", timeout=60)
    assert r.returncode in (128 + 24, 128 + 9), r.stderr  # SIGXCPU, or SIGKILL a second later
    assert elapsed < 20
    assert doc["limits"]["applied"]["cpu_seconds"] == 1


def test_timeout_kills_sleep_with_124(senv):
    marker = f"100.{uuid.uuid4().int % 10**8:08d}"
    r, doc, elapsed = run_report(senv, "timeout_seconds = 1\n", f"sleep {marker} & sleep {marker}")
    assert r.returncode == 124, r.stderr
    assert elapsed < 8
    lines = [line for line in r.stderr.decode().splitlines() if line.startswith("sandbox: timeout:")]
    assert len(lines) == 1 and "1 s" in lines[0]
    assert doc["timed_out"] is True and doc["exit_status"] == 124
    assert doc["limits"]["applied"]["timeout_seconds"] == 1
    assert survivors(marker) == []


def test_timeout_kills_a_command_that_ignores_sigterm(senv):
    marker = f"100.{uuid.uuid4().int % 10**8:08d}"
    env = senv.environ(SANDBOX_KILL_GRACE="1")
    r, doc, elapsed = run_report(senv, "timeout_seconds = 1\n",
                                 f"trap '' TERM; sleep {marker}; echo survived", env=env)
    assert r.returncode == 124, r.stderr
    assert elapsed < 10
    assert b"survived" not in r.stdout
    assert doc["timed_out"] is True and doc["killed_after_grace"] is True
    assert "killed the sandbox" in r.stderr.decode()
    assert survivors(marker) == []


def test_a_quick_command_is_not_timed_out(senv):
    r, doc, _ = run_report(senv, "timeout_seconds = 30\n", "exit 3")
    assert r.returncode == 3
    assert doc["timed_out"] is False


def cgroup_or_skip(senv, body: str) -> None:
    """Skip, saying why, when this caller gets no cgroup for the sandbox."""
    r, doc, _ = run_report(senv, body, "true")
    assert r.returncode == 0, r.stderr
    wanted = {line.split("=")[0].strip() for line in body.splitlines() if "=" in line}
    missing = {k: v for k, v in doc["limits"]["unavailable"].items() if k in wanted}
    if missing:
        assert "sandbox: warning: limits not applied" in r.stderr.decode()
        pytest.skip(f"cgroup v2 delegation unavailable for {senv.who.name}: "
                    + "; ".join(f"{k}: {v}" for k, v in missing.items()))
    assert doc["limits"]["cgroup"]


def test_unavailable_cgroup_limits_are_reported_not_silent(senv):
    r, doc, _ = run_report(senv, "pids_max = 64\nmemory_max_mb = 256\n", "true")
    assert r.returncode == 0, r.stderr
    got = doc["limits"]
    assert set(got["applied"]) | set(got["unavailable"]) >= {"pids_max", "memory_max_mb"}
    assert not set(got["applied"]) & set(got["unavailable"])
    warnings = [line for line in r.stderr.decode().splitlines()
                if line.startswith("sandbox: warning: limits not applied")]
    assert len(warnings) == (1 if got["unavailable"] else 0)
    if got["cgroup"]:
        assert not os.path.exists(got["cgroup"])  # removed after the run


PIDS_SCRIPT = """
import os, time
kids, failed = [], 0
for _ in range(200):
    try:
        pid = os.fork()
    except OSError:
        failed += 1
        continue
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    kids.append(pid)
for pid in kids:
    os.kill(pid, 9)
for pid in kids:
    os.waitpid(pid, 0)
print(len(kids), failed)
"""


def test_pids_max_stops_a_bounded_fork_loop(senv):
    cgroup_or_skip(senv, "pids_max = 50\n")
    (senv.ws / "forks.py").write_text(PIDS_SCRIPT)
    r, doc, elapsed = run_report(senv, "pids_max = 50\n", "python3 forks.py")
    assert r.returncode == 0, r.stderr
    started, failed = map(int, r.stdout.split())
    assert started < 50 and failed > 150 and started + failed == 200
    assert doc["limits"]["applied"]["pids_max"] == 50
    assert not os.path.exists(doc["limits"]["cgroup"])


def test_memory_max_kills_a_hog(senv):
    cgroup_or_skip(senv, "memory_max_mb = 64\n")
    r, doc, _ = run_report(senv, "memory_max_mb = 64\n",
                           "python3 -c 'b = bytearray(400 * 1024 * 1024); print(len(b))'")
    assert r.returncode == 128 + 9, (r.returncode, r.stderr)
    assert doc["limits"]["applied"]["memory_max_mb"] == 64
