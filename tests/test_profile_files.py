"""Profiles cannot be weakened behind the user's back.

* A profile without ``extends`` builds on the built-in protections (issue 8
  item 5); ``extends = "none"`` starts from nothing and says so on every run.
* A profile file, or any file it extends, that lies in a writable root is
  read-only inside the run (issue 13 finding 7), or refused when it cannot
  be kept read-only (a symlink or a second hard link in a writable root).
* Every weakening in effect is one ``sandbox: weakened:`` line per run on
  stderr, on the cached fast path too; ``--quiet`` drops the line, the
  ``--report`` JSON keeps the list.

Each attack is first shown to work without the protection, then to fail
through the real sandbox, as root and as an unprivileged user.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

pytestmark = pytest.mark.integration

SECRET = "ssh-key-SECRET-1234"
TOKEN = "ghp_0123456789abcdefSECRET"
DOTENV = "DB_PASSWORD=dotenv-SECRET"
# prints what a weakened profile would let the command see
READ_SECRETS = 'cat "$HOME/.ssh/id_rsa"; echo; echo "token=$GITHUB_TOKEN"; cat .env 2>/dev/null; true'


def plant_secrets(senv) -> dict[str, str]:
    (senv.home / ".ssh").mkdir()
    (senv.home / ".ssh" / "id_rsa").write_text(SECRET)
    (senv.ws / ".env").write_text(DOTENV)
    return senv.environ(GITHUB_TOKEN=TOKEN)


def leaked(out: bytes) -> list[str]:
    text = out.decode(errors="replace")
    return [s for s in (SECRET, TOKEN, DOTENV) if s in text]


def weakened_lines(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode().splitlines() if line.startswith("sandbox: weakened:")]


# -- a profile without extends --------------------------------------------------

def test_profile_without_extends_keeps_every_protection(senv):
    env = plant_secrets(senv)
    profile = senv.base / "mine.toml"
    profile.write_text('description = "my profile, no extends"\n')
    bare = senv.run(["sh", "-c", READ_SECRETS], env=env, sandboxed=False)
    assert leaked(bare.stdout) == [SECRET, TOKEN, DOTENV]  # what there is to hide
    r = senv.run(["sh", "-c", READ_SECRETS], args=["--profile", str(profile)], env=env)
    assert r.returncode == 0, r.stderr
    assert leaked(r.stdout) == [], r.stdout
    assert weakened_lines(r.stderr) == []


def test_extends_none_is_explicit_and_printed_on_every_run(senv):
    env = plant_secrets(senv)
    profile = senv.base / "bare.toml"
    profile.write_text('extends = "none"\n')
    report = senv.base / "report.json"
    r = senv.run(["sh", "-c", READ_SECRETS], args=["--profile", str(profile), "--report", str(report)],
                 env=env)
    assert r.returncode == 0, r.stderr
    assert leaked(r.stdout) == [SECRET, TOKEN, DOTENV]  # asked for, and ...
    lines = weakened_lines(r.stderr)
    assert len(lines) == 1 and lines[0].startswith(  # ... said on stderr
        'sandbox: weakened: bare: extends: extends = "none": starts without the built-in protections')
    quiet = senv.run(["true"], args=["--quiet", "--profile", str(profile), "--report", str(report)])
    assert quiet.returncode == 0 and weakened_lines(quiet.stderr) == [], quiet.stderr
    assert [w["key"] for w in json.loads(report.read_text())["weakenings"]] == ["extends"]


# -- profile files in a writable root --------------------------------------------

ATTACK_FILE = (
    "mv {f} {f}.old; rm -f {f}; "
    "printf 'extends = \"none\"\\n' > {f}; printf '[protect]\\ngit = false\\n' >> {f}; "
    "if grep -q none {f}; then echo REWRITTEN; fi"
)


def test_profile_in_the_workspace_cannot_be_rewritten_by_the_command(senv):
    env = plant_secrets(senv)
    text = 'extends = "default"\ndescription = "ci"\n'
    # without the protection: rewriting the file weakens the next run
    other = senv.base / "other"
    other.mkdir()
    (other / "ci.toml").write_text(text)
    senv.run(["sh", "-c", ATTACK_FILE.format(f="ci.toml")], cwd=other, sandboxed=False)
    weakened = senv.run(["sh", "-c", READ_SECRETS], args=["--profile", str(other / "ci.toml")],
                        env=env)
    assert leaked(weakened.stdout) == [SECRET, TOKEN, DOTENV]
    # with it: the file is read-only inside, and cannot be renamed or removed
    (senv.ws / "ci.toml").write_text(text)
    r = senv.run(["sh", "-c", ATTACK_FILE.format(f="ci.toml")], args=["--profile", "./ci.toml"])
    assert b"REWRITTEN" not in r.stdout, r.stderr
    assert (senv.ws / "ci.toml").read_text() == text
    assert not (senv.ws / "ci.toml.old").exists()
    again = senv.run(["sh", "-c", READ_SECRETS], args=["--profile", "./ci.toml"], env=env)
    assert again.returncode == 0, again.stderr
    assert leaked(again.stdout) == []


def test_every_file_of_the_extends_chain_is_protected(senv):
    env = plant_secrets(senv)
    (senv.ws / "conf").mkdir()
    base_text = 'extends = "default"\n[env]\ndeny = ["MY_*"]\n'
    (senv.ws / "conf" / "base.toml").write_text(base_text)
    (senv.ws / "ci.toml").write_text('extends = "conf/base.toml"\n')
    attack = (ATTACK_FILE.format(f="conf/base.toml")
              + "; mv conf conf.old && mkdir conf && printf 'extends = \"none\"\\n' > conf/base.toml"
              + " && echo SWAPPED")
    r = senv.run(["sh", "-c", attack], args=["--profile", "./ci.toml"])
    assert b"REWRITTEN" not in r.stdout and b"SWAPPED" not in r.stdout, (r.stdout, r.stderr)
    assert (senv.ws / "conf" / "base.toml").read_text() == base_text
    again = senv.run(["sh", "-c", READ_SECRETS + '; echo "my=$MY_VAR"'], args=["--profile", "./ci.toml"],
                     env={**env, "MY_VAR": "mine-SECRET"})
    assert leaked(again.stdout) == [] and b"mine-SECRET" not in again.stdout, again.stdout


def test_user_profile_under_allow_write_is_protected(senv):
    cfg = senv.base / "cfg"
    profiles = cfg / "sandbox" / "profiles"
    profiles.mkdir(parents=True)
    text = 'extends = "default"\n'
    (profiles / "mine.toml").write_text(text)
    env = senv.environ(XDG_CONFIG_HOME=str(cfg))
    r = senv.run(["sh", "-c", ATTACK_FILE.format(f=f"{profiles}/mine.toml")],
                 args=["--profile", "mine", "--allow-write", str(profiles)], env=env)
    assert b"REWRITTEN" not in r.stdout, r.stderr
    assert (profiles / "mine.toml").read_text() == text
    assert b"sandbox: weakened: --allow-write: filesystem.writable: added" in r.stderr


def test_profile_reached_through_a_symlink_in_the_workspace_is_refused(senv):
    (senv.ws / "real.toml").write_text('extends = "default"\n')
    (senv.ws / "link.toml").symlink_to("real.toml")
    (senv.ws / "confdir").mkdir()
    (senv.ws / "confdir" / "p.toml").write_text('extends = "default"\n')
    (senv.ws / "conf").symlink_to("confdir")
    for spec in ("./link.toml", "./conf/p.toml"):
        r = senv.run(["touch", "RAN"], args=["--profile", spec])
        assert r.returncode == 125, r.stderr
        lines = r.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and "is reached through the symlink" in lines[0], r.stderr
        assert "cannot be kept read-only" in lines[0]
        assert not (senv.ws / "RAN").exists()  # the command never ran
    # a symlink outside every writable root cannot be changed: that one is fine
    (senv.base / "to-ws").symlink_to(senv.ws)
    r = senv.run(["sh", "-c", ATTACK_FILE.format(f="real.toml")],
                 args=["--profile", str(senv.base / "to-ws" / "real.toml")])
    assert r.returncode == 0 and b"REWRITTEN" not in r.stdout, r.stderr
    assert (senv.ws / "real.toml").read_text() == 'extends = "default"\n'


def test_profile_with_a_second_hard_link_in_the_workspace_is_refused(senv):
    (senv.ws / "ci.toml").write_text('extends = "default"\n')
    os.link(senv.ws / "ci.toml", senv.ws / "notes.txt")  # writable under another name
    r = senv.run(["touch", "RAN"], args=["--profile", "./ci.toml"])
    assert r.returncode == 125, r.stderr
    assert b"other hard link(s)" in r.stderr and not (senv.ws / "RAN").exists()


def test_explain_lists_a_profile_in_the_workspace_as_protected(senv):
    outside = senv.base / "outside.toml"
    outside.write_text('extends = "default"\n')
    (senv.ws / "ci.toml").write_text(f'extends = "{outside}"\n')
    senv.finish()
    shown = subprocess.run(senv.who.prefix() + [_exe(), "explain", "--json", "--profile", "./ci.toml"],
                           cwd=senv.ws, env=senv.environ(), capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    protected = json.loads(shown.stdout)["protected_read_only"]
    assert str(senv.ws.resolve() / "ci.toml") in protected
    # outside every writable root it needs no mount: the host is read-only anyway
    assert str(outside) not in protected


def _exe() -> str:
    from conftest import sandbox_exe

    return sandbox_exe()


# -- the weakened line -------------------------------------------------------------

def test_weakened_line_once_per_run_on_the_cached_path_too(senv):
    extra = senv.base / "extra"
    extra.mkdir()
    profile = senv.base / "loose.toml"
    profile.write_text('extends = "default"\n[env]\npass = ["MY_TOKEN"]\n[protect]\ngit = false\n')
    report = senv.base / "report.json"
    senv.finish()  # once: chown makes every ctime new, and plans need inputs 2 s old
    argv = senv.who.prefix() + [_exe(), "run", "--profile", str(profile), "--allow-write", str(extra),
                                "--report", str(report), "--", "true"]
    cached = []
    for i in range(4):
        if i in (1, 2):
            time.sleep(2.2)
        r = subprocess.run(argv, cwd=senv.ws, env=senv.environ(), capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert weakened_lines(r.stderr) == [
            "sandbox: weakened: loose: protect.git: true -> false; loose: env.pass: added MY_TOKEN; "
            f"--allow-write: filesystem.writable: added {extra}"], r.stderr
        cached.append(json.loads(report.read_text())["plan_cached"])
    assert cached[-1] is True, cached  # the fast path printed it as well
    quiet = subprocess.run(argv[:-2] + ["--quiet", "--", "true"], cwd=senv.ws, env=senv.environ(),
                           capture_output=True, timeout=60)
    assert quiet.returncode == 0 and weakened_lines(quiet.stderr) == [], quiet.stderr
    assert len(json.loads(report.read_text())["weakenings"]) == 3


def test_default_profile_prints_no_weakened_line(senv):
    r = senv.run(["true"])
    assert r.returncode == 0 and weakened_lines(r.stderr) == [], r.stderr


def test_weakened_line_shows_control_characters_escaped(senv):
    extra = senv.base / "odd\x1b[2Jname"
    extra.mkdir()
    r = senv.run(["true"], args=["--allow-write", str(extra)])
    assert r.returncode == 0, r.stderr
    (line,) = weakened_lines(r.stderr)
    assert "\x1b" not in line and "odd\\x1b[2Jname" in line
