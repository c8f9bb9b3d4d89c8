"""Say when the sandbox blocked something (sandbox.blocked), through the real sandbox.

Each refusal is checked both ways: the same command works where the
protection is lifted (``--unprotect``, ``-c commit.gpgsign=false``) and then
nothing is reported; and what the sandbox cannot know is never claimed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sandbox import blocked

SYSTEM_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
GIT_ENV = {"GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@example.invalid",
           "GIT_CONFIG_NOSYSTEM": "1"}


def _git(senv, *args: str) -> None:
    subprocess.run(["git", *args], cwd=senv.ws, check=True, capture_output=True,
                   env={**os.environ, **GIT_ENV, "HOME": str(senv.home)})


def _repo(senv) -> None:
    _git(senv, "init", "-q", ".")
    (senv.ws / "a").write_text("a\n")
    _git(senv, "add", "a")
    _git(senv, "commit", "-qm", "first")


def _report(path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("command", [["git", "config", "--local", "x.y", "z"],
                                     ["git", "remote", "add", "origin", "https://example.invalid/r"]])
def test_git_config_writes_are_named_as_blocked(senv, command):
    _repo(senv)
    report = senv.base / "report.json"
    done = senv.run(command, args=["--report", str(report)], env=senv.environ(**GIT_ENV))
    assert done.returncode != 0
    assert b"Device or resource busy" in done.stderr  # git's own message, untouched
    assert ("sandbox: blocked a write to .git/config - protected path, read-only in the sandbox "
            "(git config --local, git remote add and the like: run them on the host)"
            ) in done.stderr.decode()
    [record] = _report(report)["blocked"]
    assert record["kind"] == "write" and record["rule"] == "protected"
    assert record["target"] == str(senv.ws.resolve() / ".git" / "config")
    assert "config.lock" in record["evidence"]


def test_with_the_protection_lifted_the_same_write_works_and_nothing_is_reported(senv):
    _repo(senv)
    report = senv.base / "report.json"
    done = senv.run(["git", "config", "--local", "x.y", "z"],
                    args=["--report", str(report), "--unprotect", ".git/config", "--quiet"],
                    env=senv.environ(**GIT_ENV))
    assert done.returncode == 0, done.stderr
    assert b"sandbox: blocked" not in done.stderr
    assert _report(report)["blocked"] == []


def test_replacing_a_masked_secret_is_named(senv):
    (senv.ws / ".env").write_text("TOKEN=secret\n")
    script = ("import os\nopen('.env.tmp', 'w').write('TOKEN=x')\n"
              "try:\n    os.replace('.env.tmp', '.env')\nexcept OSError as e:\n"
              "    print(e.errno)\n    os.unlink('.env.tmp')\n")
    report = senv.base / "report.json"
    done = senv.run([SYSTEM_PYTHON, "-c", script], args=["--report", str(report)])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == b"16"  # EBUSY: that is all the command learns
    assert ("sandbox: blocked a write to .env - a secret, masked (empty and read-only) in the "
            "sandbox") in done.stderr.decode()
    assert [(r["kind"], r["rule"]) for r in _report(report)["blocked"]] == [("write", "secret")]
    assert (senv.ws / ".env").read_text() == "TOKEN=secret\n"


def test_files_the_command_creates_and_keeps_are_not_refusals(senv):
    """Only a copy made *and removed* next to a protected file counts."""
    _repo(senv)
    report = senv.base / "report.json"
    done = senv.run(["sh", "-c", "touch .git/config.lock .git/config.bak && echo ok"],
                    args=["--report", str(report)])
    assert done.returncode == 0, done.stderr
    assert b"sandbox: blocked" not in done.stderr
    assert _report(report)["blocked"] == []


def _signing_home(senv) -> None:
    (senv.home / ".gnupg").mkdir(mode=0o700)
    (senv.home / ".gitconfig").write_text(
        "[user]\n\tname = T\n\temail = t@example.invalid\n\tsigningkey = 0123456789ABCDEF\n"
        "[commit]\n\tgpgsign = true\n")


def test_commit_signing_with_hidden_keys_is_named(senv):
    _repo(senv)
    _signing_home(senv)
    (senv.ws / "a").write_text("b\n")
    report = senv.base / "report.json"
    env = senv.environ(GIT_CONFIG_NOSYSTEM="1")
    done = senv.run(["git", "commit", "-qam", "second"], args=["--report", str(report)], env=env)
    assert done.returncode != 0
    err = done.stderr.decode()
    assert ("sandbox: blocked commit signing in the workspace: commit.gpgsign is true "
            "(~/.gitconfig) and signing keys and agents are hidden in the sandbox; commit with "
            "'git -c commit.gpgsign=false commit', or sign on the host") in err
    [record] = _report(report)["blocked"]
    assert record["kind"] == "signing" and record["config"] == str(senv.home / ".gitconfig")
    # the recipe works, and then nothing is reported
    done = senv.run(["git", "-c", "commit.gpgsign=false", "commit", "-qam", "second"],
                    args=["--report", str(report)], env=env)
    assert done.returncode == 0, done.stderr
    assert _report(report)["blocked"] == []


def test_the_profile_recipe_for_unsigned_commits_works(senv):
    _repo(senv)
    _signing_home(senv)
    (senv.ws / "a").write_text("c\n")
    profile = senv.base / "unsigned.toml"
    profile.write_text('extends = "default"\n\n[env.set]\nGIT_CONFIG_COUNT = "1"\n'
                       'GIT_CONFIG_KEY_0 = "commit.gpgsign"\nGIT_CONFIG_VALUE_0 = "false"\n')
    done = senv.run(["git", "commit", "-qam", "third"], args=["--profile", str(profile)],
                    env=senv.environ(GIT_CONFIG_NOSYSTEM="1"))
    assert done.returncode == 0, done.stderr
    assert b"sandbox: blocked" not in done.stderr


def test_a_failed_command_that_did_not_commit_is_not_blamed_on_signing(senv):
    _repo(senv)
    _signing_home(senv)
    report = senv.base / "report.json"
    done = senv.run(["sh", "-c", "git status >/dev/null; exit 3"], args=["--report", str(report)],
                    env=senv.environ(GIT_CONFIG_NOSYSTEM="1"))
    assert done.returncode == 3
    assert _report(report)["blocked"] == []


def test_a_quiet_run_reports_an_empty_list(senv):
    report = senv.base / "report.json"
    done = senv.run(["true"], args=["--report", str(report)])
    assert done.returncode == 0, done.stderr
    assert _report(report)["blocked"] == []


@pytest.mark.parametrize("temp, expected", [
    ("config.lock", "config"), (".npmrc.1a2b3c4d", ".npmrc"), (".env.tmp", ".env"),
    ("config.12345", "config"), ("config.bak", None), (".env.local", None), ("other.lock", None),
    ("config", None), ("config.lock.lock", None),
])
def test_which_temporary_names_count_as_a_replacement(temp, expected):
    assert blocked.replaced(temp, {"config": "protected", ".npmrc": "protected",
                                   ".env": "secret"}) == expected


def test_a_watch_found_on_the_cached_fast_path_too(senv):
    import time

    from conftest import sandbox_exe

    _repo(senv)
    report = senv.base / "report.json"
    senv.finish()  # once: chown makes every ctime new
    argv = senv.who.prefix() + [sandbox_exe(), "run", "--report", str(report), "--",
                                "git", "config", "--local", "x.y", "z"]
    cached = []
    for i in range(4):
        if i in (1, 2):
            time.sleep(2.2)  # plans are cached only from inputs older than 2 s
        done = subprocess.run(argv, cwd=senv.ws, env=senv.environ(**GIT_ENV),
                              capture_output=True, timeout=60)
        assert b"sandbox: blocked a write to .git/config" in done.stderr, done.stderr
        cached.append(_report(report)["plan_cached"])
    assert cached[-1] is True, cached


def test_hold_keeps_a_descriptor_open_until_released():
    """runner.hold: cat holds the last copy, so the wrapper's own close is not the last."""
    import select

    from sandbox import runner

    r, w = os.pipe()
    release = runner.hold(w)
    assert release >= 0
    os.close(w)
    # cat still holds the write end: no end-of-file yet
    assert select.select([r], [], [], 0.3)[0] == []
    os.close(release)
    assert select.select([r], [], [], 10)[0] == [r]
    assert os.read(r, 1) == b""
    os.close(r)


def test_the_watch_is_handed_over_while_the_command_runs(tmp_path):
    # execute calls hand_over once bwrap has started: the process that takes
    # the watch's last reference is started then, and findings only closes
    (tmp_path / "config").write_text("x")
    watch = blocked.Watch({"watch": [[str(tmp_path), [["config", "protected"]]]]})
    assert watch.fd >= 0
    watch.hand_over()
    holder = watch.release
    assert holder is not None and holder >= 0
    watch.hand_over()  # once only
    assert watch.release == holder
    (tmp_path / "config.lock").write_text("y")  # what git does before its rename
    (tmp_path / "config.lock").unlink()
    found = watch.findings()
    assert [(f["target"], f["rule"]) for f in found] == [(str(tmp_path / "config"), "protected")]
    assert watch.fd == -1 and watch.release is None
