"""The per-call flags of ``sandbox run`` through the installed CLI and the real bwrap:
--timeout, --env-pass, --network, --allow-host and --quiet.

Network tests talk only to a server this file starts on the host's
127.0.0.1; every refusal is checked both ways (the same request works with
the flag that allows it).
"""

from __future__ import annotations

import http.server
import json
import os
import shlex
import shutil
import subprocess
import threading
import time
import uuid

import pytest
from conftest import sandbox_exe
from egress_support import allow_rule, proxy_profile

CURL = shutil.which("curl")
SECRET = "ghp_" + "Z9" * 18  # a GitHub token's shape; not a real one


class _Hello(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hits += 1
        body = b"hello\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def origin():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.daemon_threads = True
    server.hits = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def report_of(senv, args, command, env=None, timeout=60):
    report = senv.base / f"report-{uuid.uuid4().hex[:8]}.json"
    r = senv.run(command, args=[*args, "--report", str(report)], env=env, timeout=timeout)
    return r, (json.loads(report.read_text()) if report.exists() else None)


def stderr_lines(r) -> list[str]:
    return [line for line in r.stderr.decode().splitlines() if line.startswith("sandbox:")]


def survivors(marker: str) -> list[int]:
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


# -- --timeout ------------------------------------------------------------------

def test_timeout_kills_the_whole_sandbox_with_124(senv):
    marker = f"100.{uuid.uuid4().int % 10**8:08d}"
    # a process in its own session escapes a process-group signal: the
    # grace-period kill of the whole sandbox still ends it
    script = f"setsid sleep {marker} & trap '' TERM; sleep {marker}; echo survived"
    started = time.monotonic()
    r, doc = report_of(senv, ["--timeout", "1"], ["sh", "-c", script],
                       env=senv.environ(SANDBOX_KILL_GRACE="1"))
    elapsed = time.monotonic() - started
    assert r.returncode == 124, r.stderr
    assert elapsed < 15
    assert b"survived" not in r.stdout
    line = [x for x in stderr_lines(r) if x.startswith("sandbox: timeout:")]
    assert len(line) == 1 and "1 s (--timeout)" in line[0] and "killed the sandbox" in line[0]
    assert doc["outcome"] == "timeout" and doc["timed_out"] is True
    assert doc["exit_status"] == 124 and doc["limits"]["applied"]["timeout_seconds"] == 1
    assert survivors(marker) == []


def test_timeout_accepts_fractions_and_leaves_a_quick_command_alone(senv):
    r, doc = report_of(senv, ["--timeout", "0.5"], ["sh", "-c", "sleep 30"])
    assert r.returncode == 124 and doc["outcome"] == "timeout"
    r, doc = report_of(senv, ["--timeout", "30"], ["sh", "-c", "exit 3"])
    assert r.returncode == 3 and doc["outcome"] == "exited" and doc["timed_out"] is False


def test_the_shorter_of_flag_and_profile_wins(senv):
    prof = senv.base / "limited.toml"
    prof.write_text('extends = "default"\n[limits]\ntimeout_seconds = 1\n')
    started = time.monotonic()
    r, doc = report_of(senv, ["--profile", str(prof), "--timeout", "60"], ["sleep", "30"])
    assert r.returncode == 124 and time.monotonic() - started < 15
    assert any("(limits.timeout_seconds)" in x for x in stderr_lines(r))
    assert doc["limits"]["applied"]["timeout_seconds"] == 1


# -- --env-pass -------------------------------------------------------------------

def test_env_pass_passes_one_variable_and_says_so(senv):
    env = senv.environ(DEPLOY_TOKEN="dep-123", OTHER_TOKEN="other-456")
    plain = senv.sh('echo "[$DEPLOY_TOKEN][$OTHER_TOKEN]"', env=env)
    assert plain.stdout == b"[][]\n"  # the filter removes both
    assert not any("weakened" in x for x in stderr_lines(plain))
    r, doc = report_of(senv, ["--env-pass", "DEPLOY_TOKEN"],
                       ["sh", "-c", 'echo "[$DEPLOY_TOKEN][$OTHER_TOKEN]"'], env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"[dep-123][]\n"
    weakened = [x for x in stderr_lines(r) if x.startswith("sandbox: weakened:")]
    assert len(weakened) == 1
    assert "--env-pass: env.pass: added DEPLOY_TOKEN - a SECRET by its name" in weakened[0]
    assert "dep-123" not in r.stderr.decode()
    assert {"source": "--env-pass", "key": "env.pass",
            "detail": weakened[0].split("--env-pass: env.pass: ", 1)[1]} in doc["weakenings"]


def test_env_pass_of_a_secret_value_is_said_loudly(senv):
    env = senv.environ(HARMLESS_NAME=SECRET)
    assert senv.sh('echo "[$HARMLESS_NAME]"', env=env).stdout == b"[]\n"
    r = senv.sh('echo "[$HARMLESS_NAME]"', args=["--env-pass", "HARMLESS_NAME"], env=env)
    assert r.stdout == f"[{SECRET}]\n".encode()
    assert any("HARMLESS_NAME - its value is a SECRET" in x for x in stderr_lines(r))
    assert SECRET not in r.stderr.decode()


def test_explain_shows_the_flags_weakenings(senv):
    senv.finish()
    r = subprocess.run(senv.who.prefix() + [sandbox_exe(), "explain", "--json", "--env-pass", "CI",
                                            "--allow-host", "127.0.0.1:9"],
                       cwd=senv.ws, env=senv.environ(), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    weak = {(w["source"], w["key"], w["detail"]) for w in json.loads(r.stdout)["weakenings"]}
    assert ("--env-pass", "env.pass", "added CI") in weak
    assert ("--allow-host", "network.allow", "added 127.0.0.1:9") in weak


# -- --network and --allow-host ------------------------------------------------------

def curl(url: str) -> list[str]:
    # --noproxy '': ask the proxy even for a loopback address (NO_PROXY lists it,
    # so that servers the command starts on its own loopback stay direct)
    return [CURL, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20",
            "--noproxy", "", url]


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_allow_host_opens_one_endpoint_through_the_proxy(senv, origin):
    port = origin.server_address[1]
    url = f"http://127.0.0.1:{port}/"
    closed = senv.run(curl(url))
    assert closed.returncode != 0 and origin.hits == 0  # the default: no network
    r, doc = report_of(senv, ["--allow-host", f"127.0.0.1:{port}"], curl(url))
    assert r.stdout == b"200", r.stderr
    assert origin.hits == 1
    weakened = [x for x in stderr_lines(r) if x.startswith("sandbox: weakened:")]
    assert len(weakened) == 1 and f"--allow-host: network.allow: added 127.0.0.1:{port}" in weakened[0]
    assert "network.mode: none -> proxy" in weakened[0]
    # only that port: another one is refused by the proxy, and reported
    r, doc = report_of(senv, ["--allow-host", f"127.0.0.1:{port}"],
                       curl(f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}/"))
    assert r.stdout == b"403" and origin.hits == 1
    assert [b["kind"] for b in doc["blocked"]] == ["request"]


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_network_none_closes_a_proxy_profile(senv, origin):
    port = origin.server_address[1]
    prof = proxy_profile(senv, allow_rule("127.0.0.1", [port]))
    url = f"http://127.0.0.1:{port}/"
    opened = senv.run(curl(url), args=["--profile", str(prof)])
    assert opened.stdout == b"200", opened.stderr  # the profile opens it
    r, doc = report_of(senv, ["--profile", str(prof), "--network", "none"], curl(url))
    assert r.stdout == b"000" and r.returncode != 0
    assert origin.hits == 1
    assert "network" not in " ".join(w["key"] for w in doc["weakenings"])
    assert not any("weakened" in x for x in stderr_lines(r))


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_a_cached_plan_is_never_reused_for_other_flags(senv, origin):
    """Run by run, alternating flags: each run gets its own flags' sandbox, and
    a repeated set of flags does come from the cache (the fast path)."""
    port = origin.server_address[1]
    url = f"http://127.0.0.1:{port}/"
    senv.finish()  # once: chown makes every ctime new, and new inputs are never cached
    # a first run makes the audit log's directory; plans trust it 2 s later
    subprocess.run(senv.who.prefix() + [sandbox_exe(), "run", "--", "true"], cwd=senv.ws,
                   env=senv.environ(), capture_output=True, timeout=60)
    time.sleep(2.2)
    env = senv.environ(PASS_ME_TOKEN="t-1")
    script = f'echo "[$PASS_ME_TOKEN]"; {shlex.join(curl(url))}'
    cases = {
        "none": ([], b"[]\n000"),
        "host": (["--allow-host", f"127.0.0.1:{port}"], b"[]\n200"),
        "env": (["--env-pass", "PASS_ME_TOKEN"], b"[t-1]\n000"),
        "both": (["--env-pass", "PASS_ME_TOKEN", "--allow-host", f"127.0.0.1:{port}"],
                 b"[t-1]\n200"),
        "proxy": (["--network", "proxy"], b"[]\n403"),
    }
    cached = {}
    for name in ["none", "host", "env", "both", "proxy"] * 3:
        args, want = cases[name]
        report = senv.base / "r.json"
        r = subprocess.run(senv.who.prefix() + [sandbox_exe(), "run", *args, "--report",
                                                str(report), "--", "sh", "-c", script],
                           cwd=senv.ws, env=env, capture_output=True, timeout=60)
        assert r.stdout == want, (name, r.stdout, r.stderr)
        cached.setdefault(name, []).append(json.loads(report.read_text())["plan_cached"])
    # the fast path serves each set of flags (a busy host may change a stamped
    # directory now and then, which makes one run plan afresh)
    assert all(any(runs[1:]) for runs in cached.values()), cached


# -- --quiet ------------------------------------------------------------------------

def test_quiet_keeps_only_error_lines(senv):
    (senv.ws / ".git" / "hooks").mkdir(parents=True)
    (senv.ws / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (senv.ws / ".git" / "objects").mkdir()
    (senv.ws / ".git" / "refs").mkdir()
    # each run plants a new git dir with a hook: the audit quarantines it
    script = ("getent hosts example.invalid; echo own line >&2; d=sub$(date +%s%N); "
              "mkdir -p $d/.git/hooks; echo '#!/bin/sh' > $d/.git/hooks/pre-commit; "
              ": > $d/.git/HEAD; mkdir -p $d/.git/objects $d/.git/refs; exit 4")
    args = ["--env-pass", "CI", "--timeout", "30"]
    loud = senv.sh(script, args=args, env=senv.environ(CI="1"))
    kinds = {x.split(":")[1].strip().split()[0] for x in stderr_lines(loud)}
    assert {"weakened", "blocked", "audit"} <= kinds, loud.stderr  # what there is to silence
    r, doc = report_of(senv, ["--quiet", *args], ["sh", "-c", script], env=senv.environ(CI="1"))
    assert r.returncode == 4
    assert stderr_lines(r) == [], r.stderr
    assert b"own line\n" in r.stderr  # the command's own stderr is untouched
    assert doc["weakenings"] and doc["blocked"] and doc["audit"]  # the report keeps all of it
    # errors still print, with --quiet on both parsers
    for bad in (["--quiet", "--profile", "no-such-profile"], ["-q", "--timeout", "0"]):
        err = senv.run(["true"], args=bad)
        lines = stderr_lines(err)
        assert err.returncode == 125 and len(lines) == 1 and "error:" in lines[0], err.stderr


def test_bad_flag_values_through_the_installed_cli(senv):
    for args, words in ((["--timeout", "-1"], "--timeout"), (["--network", "offline"], "--network"),
                        (["--allow-host", "*.com"], "--allow-host *.com:443"),
                        (["--env-pass", "1X"], "--env-pass")):
        r = senv.run(["touch", "ran"], args=args)
        lines = r.stderr.decode().strip().splitlines()
        assert r.returncode == 125 and len(lines) == 1, r.stderr
        assert lines[0].startswith("sandbox: usage error: ") and words in lines[0]
        assert "hint:" in lines[0]
        assert not (senv.ws / "ran").exists()


def test_timeout_on_the_cached_fast_path(senv):
    """--timeout is applied when the run starts, so a plan cached without it serves it."""
    senv.finish()
    report = senv.base / "r.json"
    seen = []
    for args in ([], None, ["--timeout", "1"], ["--timeout", "1"]):
        if args is None:  # the first run made the audit log's directory: let it age
            time.sleep(2.2)
            continue
        r = subprocess.run(senv.who.prefix() + [sandbox_exe(), "run", *args, "--report",
                                                str(report), "--", "sleep", "20"
                                                if args else "0"],
                           cwd=senv.ws, env=senv.environ(), capture_output=True, timeout=60)
        doc = json.loads(report.read_text())
        seen.append((r.returncode, doc["outcome"], doc["plan_cached"]))
    assert seen[0][:2] == (0, "exited")
    assert seen[1][:2] == seen[2][:2] == (124, "timeout"), seen
    assert seen[2][2] is True, seen
