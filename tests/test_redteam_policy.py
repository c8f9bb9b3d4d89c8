"""Red team: project profiles, the managed policy, per-call flags, --quiet.

Each test is an attack that worked on the integration branch before its fix,
run for real through the installed CLI and bwrap (as root and as the
unprivileged test user), and shown to fail now.  The attacks that held are
listed in the red-team report, not here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _exe() -> str:
    from conftest import sandbox_exe

    return sandbox_exe()


def _sandbox(senv, *args: str, env=None) -> subprocess.CompletedProcess:
    senv.finish()
    return subprocess.run(senv.who.prefix() + [_exe(), *args], cwd=senv.ws,
                          env=env or senv.environ(), capture_output=True, timeout=120)


def _text(r) -> str:
    return (f"exit {r.returncode}\n--- stdout\n{r.stdout.decode(errors='replace')[-2000:]}"
            f"\n--- stderr\n{r.stderr.decode(errors='replace')[-3000:]}")


# -- untrusted project profile: keys that are no constraint ---------------------------

@pytest.mark.parametrize("text,ignored", [
    ('[ci]\ngithub_env = true\ngithub_path = true\n', "ci.github_env, ci.github_path"),
    ('[[network.credentials]]\nhost = "api.example.com"\nfrom_env = "SBX_RT_TOKEN"\n'
     'env = "SBX_RT_TOKEN"\nheader = "x-api-key"\n', "network.credentials"),
])
def test_untrusted_keys_that_only_loosen_are_ignored_not_a_crash(senv, text, ignored):
    """An untrusted .sandbox.toml with [ci] or [[network.credentials]] made every
    run in the repository die with a Python traceback (KeyError, exit 1): the
    constraint reader knew no field for those keys.  Now they are ignored and
    named on the notice line, like every other key that would loosen."""
    (senv.ws / ".sandbox.toml").write_text(text)
    check = _sandbox(senv, "explain")
    if check.returncode == 125 and b"credentials" in check.stderr:
        pytest.skip(f"the credentials entry is not valid here: {_text(check)}")
    r = senv.run(["sh", "-c", "echo RAN"])
    assert r.returncode == 0 and r.stdout == b"RAN\n", _text(r)
    assert b"Traceback" not in r.stderr, _text(r)
    assert f"(ignored: {ignored})".encode() in r.stderr, _text(r)


def test_untrusted_require_full_tightens_instead_of_crashing(senv):
    """``require = "full"`` (fail closed where bwrap cannot run) is a tightening;
    untrusted, it crashed every run with a TypeError traceback."""
    (senv.ws / ".sandbox.toml").write_text('require = "full"\n')
    r = senv.run(["sh", "-c", "echo RAN"])
    assert r.returncode == 0 and r.stdout == b"RAN\n", _text(r)
    assert b"Traceback" not in r.stderr, _text(r)
    e = _sandbox(senv, "explain", "--json")
    assert e.returncode == 0, _text(e)
    import json

    doc = json.loads(e.stdout)
    keys = [t.get("key") for t in doc.get("tightenings") or []]
    assert "require" in keys, doc.get("tightenings")


# -- managed policy: env.deny against --env-pass ---------------------------------------

@pytest.fixture
def admin_dir():
    if os.getuid() != 0:
        pytest.skip("a managed file must be root's: needs root to write one")
    from conftest import _test_root

    d = _test_root() / f"managed-rt-{uuid.uuid4().hex[:12]}"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _managed(admin_dir: Path, text: str) -> Path:
    path = admin_dir / "managed.toml"
    path.write_text(text)
    os.chmod(path, 0o644)
    return path


def test_managed_env_deny_is_not_undone_by_env_pass(senv, admin_dir):
    """The administrator denies CORP_* variables; ``--env-pass CORP_TOKEN`` (or a
    profile's ``env.pass``) used to carry the value in anyway, since a pass
    beats every deny.  A managed deny now wins unless the managed file itself
    passes the name."""
    secret = "corp-" + uuid.uuid4().hex
    path = _managed(admin_dir, '[env]\ndeny = ["CORP_*"]\n')
    env = senv.environ(CORP_TOKEN=secret, SANDBOX_MANAGED_EXTRA=str(path))
    script = ["sh", "-c", 'printf "%s" "$CORP_TOKEN"']
    # the attack's premise: without --env-pass the managed deny removes it...
    r = senv.run(script, env=env)
    assert r.returncode == 0 and r.stdout == b"", _text(r)
    # ...and --env-pass brings a variable that a profile denies through
    r = senv.run(["sh", "-c", 'printf "%s" "$SBX_RT_X"'], args=["--env-pass", "SBX_RT_X"],
                 env=senv.environ(SBX_RT_X=secret, SANDBOX_MANAGED_EXTRA=str(path)))
    assert r.stdout == secret.encode(), _text(r)
    # the attack: --env-pass of the managed-denied name
    r = senv.run(script, args=["--env-pass", "CORP_TOKEN"], env=env)
    assert r.returncode == 0, _text(r)
    assert secret.encode() not in r.stdout, "the managed env.deny was undone by --env-pass"
    # the managed file may pass it itself
    path = _managed(admin_dir, '[env]\ndeny = ["CORP_*"]\npass = ["CORP_TOKEN"]\n')
    r = senv.run(script, args=["--env-pass", "CORP_TOKEN"], env=env)
    assert r.stdout == secret.encode(), _text(r)


def test_managed_require_full_is_a_tightening(senv, admin_dir):
    """An administrator's ``require = "full"`` crashed every run (traceback, exit 1)."""
    path = _managed(admin_dir, 'require = "full"\n')
    r = senv.run(["sh", "-c", "echo RAN"], env=senv.environ(SANDBOX_MANAGED_EXTRA=str(path)))
    assert r.returncode == 0 and r.stdout == b"RAN\n", _text(r)
    assert b"Traceback" not in r.stderr, _text(r)


# -- --quiet and the fallback line -----------------------------------------------------

def test_quiet_does_not_hide_the_fallback_line(senv):
    """Where bwrap cannot make namespaces, the run falls back to Landlock +
    seccomp and must say so on one ``sandbox: fallback:`` line, "not even
    --quiet drops it" (docs/fallback.md).  The --quiet filter dropped it: a
    plugin passing --quiet got a degraded sandbox without a word."""
    import nouserns

    if nouserns.unavailable() is not None:
        pytest.skip(str(nouserns.unavailable()))
    from sandbox.linux import landlock

    if landlock.abi_version() < 1:
        pytest.skip("this kernel has no Landlock")
    senv.finish()

    def crun(*args):
        return subprocess.run(nouserns.prefix() + senv.who.prefix()
                              + [_exe(), "run", *args, "--", "true"],
                              cwd=senv.ws, env=senv.environ(), capture_output=True, timeout=120)

    r = crun()
    assert r.returncode == 0 and b"sandbox: fallback:" in r.stderr, _text(r)
    r = crun("--quiet")
    assert r.returncode == 0, _text(r)
    assert b"sandbox: fallback:" in r.stderr, _text(r)


# -- the audit log: secrets in URL query strings and custom token headers ---------------

def test_audit_log_redacts_query_tokens_and_token_headers(senv):
    """``curl 'https://api.test/v1?access_token=SECRET'`` or ``-H 'X-Vault-Token:
    SECRET'`` wrote SECRET into the audit log: the redactor knew URL userinfo
    and a fixed list of headers, not a secret-named query parameter or a
    ``...-Token:`` header."""
    import json

    q1, q2, h = ("q" + uuid.uuid4().hex, "k" + uuid.uuid4().hex, "h" + uuid.uuid4().hex)
    (senv.base / "logs").mkdir()
    log = senv.base / "logs" / "audit.jsonl"
    words = [f"https://api.test/v1/x?page=2&access_token={q1}&api_key={q2}#top",
             f"X-Vault-Token: {h}"]
    r = senv.run(["printf", "%s\\n", *words], env=senv.environ(SANDBOX_AUDIT_LOG=str(log)))
    # the attack's premise: the words reached the command whole
    assert r.returncode == 0 and q1.encode() in r.stdout and h.encode() in r.stdout, _text(r)
    line = log.read_text().splitlines()[-1]
    for secret in (q1, q2, h):
        assert secret not in line, line
    command = json.loads(line)["command"]
    assert command[2] == ("https://api.test/v1/x?page=2&access_token=[REDACTED]"
                          "&api_key=[REDACTED]#top"), command
    assert command[3] == "X-Vault-Token: [REDACTED]", command


def test_managed_read_only_workspace_is_not_undone_by_allow_write(senv, admin_dir):
    """The administrator says ``[filesystem] workspace = "read"``; ``--allow-write .``
    (or a profile's ``writable`` naming the workspace) made it writable again,
    since only a managed ``filesystem.writable`` bounded --allow-write."""
    path = _managed(admin_dir, '[filesystem]\nworkspace = "read"\n')
    env = senv.environ(SANDBOX_MANAGED_EXTRA=str(path))
    (senv.ws / "sub").mkdir()
    (senv.base / "elsewhere").mkdir()
    r = senv.run(["sh", "-c", "echo x > planted"], env=env)
    assert r.returncode != 0 and not (senv.ws / "planted").exists(), _text(r)
    for arg in (str(senv.ws), str(senv.ws / "sub")):
        r = senv.run(["sh", "-c", "echo x > planted; echo x > sub/planted"],
                     args=["--allow-write", arg], env=env)
        assert not (senv.ws / "planted").exists() and not (senv.ws / "sub" / "planted").exists(), \
            _text(r)
        assert r.returncode == 125 and b"keeps it read-only" in r.stderr, _text(r)
    # a profile's writable entry holding the workspace is dropped too
    prof = senv.base / "p.toml"
    prof.write_text(f'[filesystem]\nwritable = ["{senv.ws}"]\n')
    r = senv.run(["sh", "-c", "echo x > planted"], args=["--profile", str(prof)], env=env)
    assert not (senv.ws / "planted").exists(), _text(r)
    # what lies outside the workspace stays the user's to open
    r = senv.run(["sh", "-c", f"echo x > {senv.base / 'elsewhere' / 'f'}"],
                 args=["--allow-write", str(senv.base / "elsewhere")], env=env)
    assert r.returncode == 0 and (senv.base / "elsewhere" / "f").exists(), _text(r)


def test_a_fifo_at_the_audit_log_does_not_hang_the_run(senv):
    """A log kept in a directory others can write (``SANDBOX_AUDIT_LOG=/tmp/...``
    on the host): another user plants a FIFO at its name, and every run hung
    for ever after the command ended, opening it for writing.  Now the run
    ends with the command's status and one warning."""
    logs = senv.base / "logs"
    logs.mkdir()
    log = logs / "audit.jsonl"
    os.mkfifo(log)
    try:
        r = senv.run(["sh", "-c", "exit 3"], env=senv.environ(SANDBOX_AUDIT_LOG=str(log)),
                     timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the run hung on the FIFO at the audit log's name")
    assert r.returncode == 3, _text(r)
    assert b"cannot write the audit log" in r.stderr, _text(r)


def test_managed_hidden_name_is_not_exposed_by_defaults_exceptions(senv, admin_dir):
    """The administrator hides ``credentials.template`` by name; default's
    exception ``*.template`` (meant for ``.env.template``) exposed it again, so
    the managed deny did nothing.  An untrusted project profile asking the same
    was just as powerless."""
    secret = "tmpl-" + uuid.uuid4().hex
    (senv.ws / "credentials.template").write_text(secret)
    (senv.ws / ".env.example").write_text("EXAMPLE=1\n")
    cat = ["sh", "-c", "cat credentials.template; echo; cat .env.example"]
    r = senv.run(cat)
    assert secret.encode() in r.stdout, _text(r)  # the premise: readable by default
    path = _managed(admin_dir, '[filesystem]\ndeny_read_names = ["credentials.template"]\n')
    r = senv.run(cat, env=senv.environ(SANDBOX_MANAGED_EXTRA=str(path)))
    assert secret.encode() not in r.stdout, _text(r)
    assert b"EXAMPLE=1" in r.stdout, _text(r)  # other exceptions stay
    (senv.ws / ".sandbox.toml").write_text('[filesystem]\ndeny_read_names = '
                                           '["credentials.template"]\n')
    r = senv.run(cat)
    assert secret.encode() not in r.stdout, _text(r)


def test_managed_syscall_deny_is_not_undone_by_a_profile_allow(senv, admin_dir):
    """The administrator denies ``mkdir``/``mkdirat``; a user profile's
    ``[syscalls] allow`` took the managed deny rule out of the filter again
    (an allow removes every rule for the syscall)."""
    path = _managed(admin_dir, '[syscalls]\ndeny = ["mkdir", "mkdirat"]\n')
    prof = senv.base / "p.toml"
    prof.write_text('[syscalls]\nallow = ["mkdir", "mkdirat"]\n')
    env = senv.environ(SANDBOX_MANAGED_EXTRA=str(path))
    r = senv.run(["mkdir", "d0"], args=["--profile", str(prof)])
    assert r.returncode == 0 and (senv.ws / "d0").is_dir(), _text(r)  # the premise
    r = senv.run(["mkdir", "d1"], env=env)
    assert r.returncode != 0 and not (senv.ws / "d1").exists(), _text(r)
    r = senv.run(["mkdir", "d2"], args=["--profile", str(prof)], env=env)
    assert r.returncode != 0 and not (senv.ws / "d2").exists(), _text(r)


@pytest.mark.xfail(strict=True, reason=(
    "a managed [protect] names entry is undone by a profile's protect.unprotect or "
    "--unprotect unless the managed file also sets protect.unprotect (an empty list "
    "forbids both): unprotect paths act on protected paths found at layout time "
    "(a directory unprotects everything under it), so a name-level fix needs "
    "discover's help; until then the admin must pair names with unprotect = []"))
def test_managed_protected_name_is_not_undone_by_unprotect(senv, admin_dir):
    path = _managed(admin_dir, '[protect]\nnames = [".mycfg"]\n')
    env = senv.environ(SANDBOX_MANAGED_EXTRA=str(path))
    (senv.ws / ".mycfg").write_text("orig\n")
    r = senv.run(["sh", "-c", "echo pwn > .mycfg"], env=env)
    assert (senv.ws / ".mycfg").read_text() == "orig\n", _text(r)  # the managed name holds
    r = senv.run(["sh", "-c", "echo pwn > .mycfg"], args=["--unprotect", ".mycfg"], env=env)
    assert (senv.ws / ".mycfg").read_text() == "orig\n", _text(r)


# -- a profile file that is also a protected name, with a second hard link ----------------

@pytest.mark.parametrize("how", ["--profile", "trusted"])
def test_a_hard_link_to_the_project_profile_is_refused(senv, how):
    """A profile file in a writable root with a second hard link there is
    refused, since the command could write the profile through the link.  The
    check was skipped for a file a protected path already holds, and
    ``.sandbox.toml`` is a protected name: the command rewrote the profile the
    next ``--profile ./.sandbox.toml`` run (or the trusted file) would use."""
    prof = senv.ws / ".sandbox.toml"
    prof.write_text('description = "mine"\n')
    if how == "trusted":
        r = _sandbox(senv, "trust", ".")
        assert r.returncode == 0, _text(r)
    os.link(prof, senv.ws / "innocent.txt")
    args = ["--profile", "./.sandbox.toml"] if how == "--profile" else []
    r = senv.run(["sh", "-c", 'printf "[protect]\\ngit = false\\n" >> innocent.txt'], args=args)
    assert b"git = false" not in prof.read_bytes(), (
        "the command rewrote the profile through its hard link\n" + _text(r))
    assert r.returncode == 125 and b"hard link" in r.stderr, _text(r)


def test_a_deeply_nested_project_profile_is_a_profile_error_not_a_traceback(senv):
    """A repository's .sandbox.toml with arrays nested 5000 deep made every run
    there die with a RecursionError traceback; it is a one-line profile error."""
    (senv.ws / ".sandbox.toml").write_text("description = " + "[" * 5000 + "]" * 5000 + "\n")
    r = senv.run(["sh", "-c", "echo RAN"])
    assert b"Traceback" not in r.stderr and b"RecursionError" not in r.stderr, _text(r)
    assert r.returncode == 125 and b"nested too deeply" in r.stderr, _text(r)
    assert r.stdout == b"", _text(r)
