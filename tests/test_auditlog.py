"""The audit log (sandbox.auditlog, sandbox.redact) through the installed CLI.

One JSON line per run under the XDG state dir; never a secret value; safe
with concurrent runs and rotation; out of the command's reach.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
from conftest import sandbox_exe

from sandbox import auditlog
from sandbox.redact import Redactor

SECRET = "ghp_" + "Q7" * 18  # a GitHub token's shape; not a real one
PASSWORD = "hunter2-" + uuid.uuid4().hex[:8]


def log_path(senv) -> Path:
    return senv.home / ".local" / "state" / "sandbox" / "audit.jsonl"


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run(senv, command, args=(), env=None, **kw):
    return senv.run(command, args=list(args), env=env, **kw)


# -- what a line holds -----------------------------------------------------------

def test_one_line_per_run_with_what_happened(senv):
    log = log_path(senv)
    assert not log.exists()
    r = run(senv, ["sh", "-c", "exit 3"], args=["--env-pass", "CI", "--timeout", "60"],
            env=senv.environ(CI="1"))
    assert r.returncode == 3
    (first,) = lines(log)
    assert first["audit_log_version"] == 1
    assert first["command"] == ["sh", "-c", "exit 3"]
    assert first["workspace"] == str(senv.ws.resolve())
    assert first["profile"]["name"] == "default" and len(first["profile"]["sha256"]) == 64
    assert first["outcome"] == "exited" and first["exit_status"] == 3
    assert first["flags"] == {"timeout": 60, "network": None, "allow_host": [], "env_pass": ["CI"]}
    assert first["weakenings"] == ["--env-pass: env.pass: added CI"]
    assert first["time"].endswith("Z") and first["uid"] == senv.who.uid
    # the directory is the user's own
    st = os.stat(log.parent)
    assert st.st_uid == senv.who.uid and st.st_mode & 0o777 == 0o700
    assert os.stat(log).st_mode & 0o777 == 0o600
    run(senv, ["true"])
    assert [x["exit_status"] for x in lines(log)] == [3, 0]


def test_outcomes_signal_timeout_setup_error(senv):
    log = log_path(senv)
    run(senv, ["sh", "-c", "kill -TERM $$"])
    run(senv, ["sleep", "30"], args=["--timeout", "0.5"])
    r = run(senv, ["true"], args=["--profile", "no-such-profile"])
    assert r.returncode == 125
    signaled, timed_out, error = lines(log)
    assert (signaled["outcome"], signaled["signal"], signaled["exit_status"]) == (
        "signaled", "SIGTERM", 143)
    assert (timed_out["outcome"], timed_out["exit_status"]) == ("timeout", 124)
    assert error["outcome"] == "error" and error["exit_status"] == 125
    assert error["error"]["kind"] == "profile error" and "no-such-profile" in error["error"]["message"]


def test_blocked_requests_and_audit_findings_are_logged(senv):
    (senv.ws / ".git" / "hooks").mkdir(parents=True)
    (senv.ws / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (senv.ws / ".git" / "objects").mkdir()
    (senv.ws / ".git" / "refs").mkdir()
    r = run(senv, ["sh", "-c", "getent hosts registry.example.invalid; mkdir -p new/.git/hooks "
                               "new/.git/objects new/.git/refs; : > new/.git/HEAD; "
                               "echo '#!/bin/sh' > new/.git/hooks/post-checkout"])
    (line,) = lines(log_path(senv))
    assert {"kind": "lookup", "target": "registry.example.invalid", "rule": "network.mode = none",
            "count": line["blocked"][0]["count"]} in line["blocked"], r.stderr
    assert any(f["path"].endswith("new/.git/hooks/post-checkout") for f in line["audit"]), r.stderr


# -- never a secret value -----------------------------------------------------------

def test_no_secret_value_reaches_the_log(senv):
    env = senv.environ(GITHUB_TOKEN=SECRET, DB_PASSWORD=PASSWORD, INNOCENT_NAME=SECRET[::-1] + "x",
                       ODD_NAME=SECRET)
    command = ["sh", "-c",
               f"curl -s -u bob:{PASSWORD} https://u:{PASSWORD}@example.invalid/?t={SECRET}; "
               f"echo {SECRET} DB_PASSWORD={PASSWORD}",
               "--password", PASSWORD, f"--api-key={PASSWORD}", "-H",
               f"Authorization: Bearer {PASSWORD}", f"https://{SECRET}@example.invalid/"]
    r = run(senv, command, args=["--env-pass", "ODD_NAME"], env=env)
    assert r.returncode == 0, r.stderr
    text = log_path(senv).read_text()
    (line,) = lines(log_path(senv))
    assert SECRET not in text and PASSWORD not in text, text
    assert SECRET not in r.stderr.decode()
    # what is left is still useful
    assert line["command"][0:2] == ["sh", "-c"] and "curl -s -u bob:[REDACTED]" in line["command"][2]
    assert line["command"][3:5] == ["--password", "[REDACTED]"]
    # the weakening says the value is a secret, and never says the value
    assert any("ODD_NAME - its value is a SECRET" in w for w in line["weakenings"])
    # and the blocked lookup is recorded under its name
    assert any(b["target"] == "example.invalid" for b in line["blocked"])


def test_a_failed_run_redacts_too(senv):
    env = senv.environ(MY_API_KEY=PASSWORD)
    r = run(senv, ["deploy", f"--token={PASSWORD}", PASSWORD], args=["--profile", "missing"],
            env=env)
    assert r.returncode == 125
    text = log_path(senv).read_text()
    assert PASSWORD not in text and '"--token=[REDACTED]"' in text


def test_redactor_rules():
    r = Redactor({"AWS_SECRET_ACCESS_KEY": "abcdefgh12", "SHORT_TOKEN": "abc"}, None)
    assert r.text("x abcdefgh12 y") == "x [REDACTED] y"
    assert r.text("abc") == "abc"  # too short to look for
    assert r.text("git commit --author 'A B <a@b>'") == "git commit --author 'A B <a@b>'"
    assert r.text("PGPASSWORD=pw psql") == "PGPASSWORD=[REDACTED] psql"
    assert r.text("mysql --password pw -h db") == "mysql --password [REDACTED] -h db"
    assert r.text("curl -H 'X-Api-Key: k1' u") == "curl -H 'X-Api-Key: [REDACTED]' u"
    assert r.text("git clone https://oauth2:tok@host/r") == "git clone https://oauth2:[REDACTED]@host/r"
    assert r.text("ssh://git@host/r") == "ssh://git@host/r"  # a user name is no secret
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----"
    assert r.text(f"echo '{key}'") == "echo '[REDACTED]'"
    cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
    assert r.text(cert) == cert
    assert r.argv(["curl", "-u", "me:pw", "--token", "t", "ok"]) == [
        "curl", "-u", "me:[REDACTED]", "--token", "[REDACTED]", "ok"]
    # kept env given: what the filter removed is redacted even with a plain name
    r2 = Redactor({"REMOVED": "plainvalue", "KEPT": "keptvalue"}, {"KEPT": "keptvalue"})
    assert r2.text("plainvalue keptvalue") == "[REDACTED] keptvalue"


# -- out of the command's reach ----------------------------------------------------

def test_the_log_is_hidden_and_read_only_inside(senv):
    log = log_path(senv)
    run(senv, ["true"])
    assert log.exists()
    before = log.read_bytes()
    probe = (f"ls -A {log.parent}; echo forged >> {log} || echo refused; "
             f"ln -s /etc/passwd {log.parent}/x || echo refused")
    # the attack works without the sandbox: the host user can write there
    assert os.access(log, os.W_OK) or senv.who.name == "user"
    r = run(senv, ["sh", "-c", probe])
    assert r.stdout.decode().split() == ["refused", "refused"], r.stdout  # empty, read-only
    assert log.read_bytes().startswith(before)
    assert len(lines(log)) == 2  # every line is JSON: "forged" was never appended


def test_a_workspace_that_holds_the_log_is_refused(senv):
    state = senv.home / ".local" / "state"
    state.mkdir(parents=True)
    r = run(senv, ["touch", "made"], args=["--workspace", str(senv.home / ".local")])
    assert r.returncode == 125
    assert "would hold the audit log" in r.stderr.decode(), r.stderr
    assert not (senv.home / ".local" / "made").exists()
    # with the log somewhere else, that workspace is fine
    elsewhere = senv.base / "logs"
    elsewhere.mkdir()
    env = senv.environ(SANDBOX_AUDIT_LOG=str(elsewhere / "a.jsonl"))
    r = run(senv, ["true"], args=["--workspace", str(senv.home / ".local")], env=env)
    assert r.returncode == 0, r.stderr


def test_a_custom_log_inside_the_workspace_is_refused(senv):
    env = senv.environ(SANDBOX_AUDIT_LOG=str(senv.ws / "logs" / "audit.jsonl"))
    (senv.ws / "logs").mkdir()
    r = run(senv, ["touch", "made"], env=env)
    assert r.returncode == 125 and "would hold the audit log" in r.stderr.decode()
    assert not (senv.ws / "made").exists()


def test_off_and_a_custom_path(senv):
    r = run(senv, ["true"], env=senv.environ(SANDBOX_AUDIT_LOG="off"))
    assert r.returncode == 0 and not log_path(senv).exists()
    logs = senv.base / "logs"
    logs.mkdir()
    custom = logs / "sandbox.jsonl"
    env = senv.environ(SANDBOX_AUDIT_LOG=str(custom))
    assert run(senv, ["true"], env=env).returncode == 0
    assert len(lines(custom)) == 1 and not log_path(senv).exists()
    # masked inside: the file reads empty and cannot be written
    r = run(senv, ["sh", "-c", f"wc -c < {custom}; echo x >> {custom} || echo refused"], env=env)
    assert r.stdout.decode().split() == ["0", "refused"], r.stderr
    assert len(lines(custom)) == 2


@pytest.mark.parametrize("value, message", [
    ("relative/log", "is neither on, off nor an absolute path"),
    ("/no/such/dir/log.jsonl", "the directory /no/such/dir does not exist"),
])
def test_bad_settings_are_one_line(senv, value, message):
    r = run(senv, ["touch", "made"], env=senv.environ(SANDBOX_AUDIT_LOG=value))
    err = r.stderr.decode().strip().splitlines()
    assert r.returncode == 125 and len(err) == 1 and message in err[0] and "hint:" in err[0]
    assert not (senv.ws / "made").exists()


def test_missing_home_with_a_cache_dir_elsewhere_still_runs(senv):
    home = senv.base / "no-such-home"
    cache = senv.base / "cache"
    cache.mkdir()
    r = run(senv, ["true"], env=senv.environ(HOME=str(home), XDG_CACHE_HOME=str(cache)))
    assert r.returncode == 0, r.stderr
    assert "no audit log" in r.stderr.decode() and not home.exists()


# -- concurrency and rotation -------------------------------------------------------

def test_concurrent_runs_each_append_one_whole_line(senv):
    senv.finish()
    procs = [subprocess.Popen(senv.who.prefix() + [sandbox_exe(), "run", "--", "sh", "-c",
                                                   f"exit {i}"],
                              cwd=senv.ws, env=senv.environ(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for i in range(8)]
    for p in procs:
        p.wait(timeout=120)
    assert sorted(x["exit_status"] for x in lines(log_path(senv))) == list(range(8))


def test_rotation_through_the_cli(senv):
    log = log_path(senv)
    run(senv, ["true"])  # makes the directory
    with open(log, "ab") as fh:
        fh.truncate(auditlog.MAX_BYTES - 10)  # the next line does not fit
    senv.finish()
    r = run(senv, ["sh", "-c", "exit 7"])
    assert r.returncode == 7
    rotated = Path(f"{log}.1")
    assert rotated.stat().st_size == auditlog.MAX_BYTES - 10
    assert [x["exit_status"] for x in lines(log)] == [7]


def test_rotation_keeps_every_line_under_concurrent_writers(tmp_path, monkeypatch):
    """Many writers at once, the limit small: every line lands whole in some file."""
    monkeypatch.setattr(auditlog, "MAX_BYTES", 4096)
    path = str(tmp_path / "audit.jsonl")
    writers, per = 8, 60

    def work(n: int) -> None:
        for i in range(per):
            auditlog.append(path, (auditlog.encode({"w": n, "i": i, "pad": "x" * 100}) + "\n").encode())

    threads = [threading.Thread(target=work, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    files = [path] + [f"{path}.{n}" for n in range(1, auditlog.KEEP + 1)]
    got = []
    for f in files:
        if os.path.exists(f):
            # a soft limit: a writer that opened the file before it was rotated
            # (or checked its size a moment before another wrote) still appends
            assert os.path.getsize(f) <= 4096 + writers * 140
            got += [json.loads(line) for line in Path(f).read_text().splitlines()]
    assert not os.path.exists(f"{path}.{auditlog.KEEP + 1}")
    # older files beyond KEEP are dropped: what remains is whole and unique
    seen = {(x["w"], x["i"]) for x in got}
    assert len(seen) == len(got)
    # each rotated file was (nearly) full when it was rotated
    assert len(got) >= auditlog.KEEP * (4096 - 150) // 150


def test_encode_matches_json():
    value = {"a": [1, 2.5, None, True, False, "é\n\"\\"], "b": {"c": "\udcff"}, "n": -3}
    assert json.loads(auditlog.encode(value)) == json.loads(json.dumps(value))


def test_a_symlink_at_the_log_path_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("")
    link = tmp_path / "audit.jsonl"
    link.symlink_to(target)
    with pytest.raises(OSError):
        auditlog.append(str(link), b"{}\n")
    assert target.read_text() == ""


def test_where_the_log_goes():
    home = {"HOME": "/home/me"}
    assert auditlog.location(home) == "/home/me/.local/state/sandbox/audit.jsonl"
    assert auditlog.location({**home, "XDG_STATE_HOME": "/s"}) == "/s/sandbox/audit.jsonl"
    # a relative XDG_STATE_HOME is ignored, as the XDG spec says
    assert auditlog.location({**home, "XDG_STATE_HOME": "rel"}) == auditlog.location(home)
    for on in ("", "on", "ON", "1", "yes", "true"):
        assert auditlog.location({**home, "SANDBOX_AUDIT_LOG": on}) == auditlog.location(home)
    for off in ("off", "OFF", "0", "no", "false"):
        assert auditlog.location({**home, "SANDBOX_AUDIT_LOG": off}) is None
    assert auditlog.location({**home, "SANDBOX_AUDIT_LOG": "/var/log//x.jsonl"}) == "/var/log/x.jsonl"
    hidden = auditlog.hidden_paths({**home, "SANDBOX_AUDIT_LOG": "/var/log/x.jsonl"})
    assert hidden == ("/home/me/.local/state/sandbox", "/var/log/x.jsonl", "/var/log/x.jsonl.lock",
                      "/var/log/x.jsonl.1", "/var/log/x.jsonl.2", "/var/log/x.jsonl.3")
