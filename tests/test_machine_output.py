"""Versioned machine output: the report and ``explain --json`` against their JSON Schemas.

Every outcome is produced for real through the installed CLI and the real
bwrap (exit, signal, timeout, setup errors, audit finding, blocked lookup,
blocked write, blocked request), and its JSON is validated against the
schema files shipped in docs/schemas/.  Also: ``--report-fd`` (the descriptor
never reaches the command), and the rule that a program using the report
gets the command's stderr untouched (``--quiet`` with a report: every
``sandbox:`` line is in ``diagnostics`` instead).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import jsonschema
import pytest

from conftest import REPO, sandbox_exe
from egress_support import allow_rule, proxy_profile
from sandbox import errors

SCHEMAS = REPO / "docs" / "schemas"
SYSTEM_PYTHON = "/usr/bin/python3"
GIT_ENV = {"GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@example.invalid",
           "GIT_CONFIG_NOSYSTEM": "1"}


def schema(name: str) -> dict:
    doc = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(doc)
    return doc


def validate(doc: dict, name: str) -> None:
    jsonschema.Draft202012Validator(schema(name)).validate(doc)


def run_reported(senv, command, *args, env=None, quiet=False):
    """Run through the CLI with the report on an inherited descriptor; (process, report)."""
    senv.finish()
    out = senv.base / f"report-{len(list(senv.base.glob('report-*')))}.json"
    with open(out, "w") as fh:
        fd = fh.fileno()
        done = subprocess.run(senv.who.prefix() + [sandbox_exe(), "run", f"--report-fd={fd}",
                                                   *(["--quiet"] if quiet else []), *args, "--",
                                                   *command],
                              cwd=senv.ws, env=env or senv.environ(), capture_output=True,
                              timeout=120, pass_fds=(fd,))
    text = out.read_text()
    assert text, (done.returncode, done.stderr)
    return done, json.loads(text)


def _git(senv, *args):
    subprocess.run(["git", *args], cwd=senv.ws, check=True, capture_output=True,
                   env={**os.environ, **GIT_ENV, "HOME": str(senv.home)})


# -- the schemas themselves --------------------------------------------------------

def test_schemas_are_valid_and_list_every_error_code():
    for name in ("report", "explain"):
        doc = schema(name)
        assert set(doc["$defs"]["error"]["properties"]["code"]["enum"]) == set(errors.CODES)
        assert doc["properties"]["schema_version"]["const"] == 1
    from sandbox import report

    assert report.SCHEMA_VERSION == 1
    # every key the report promises is required (present in every outcome)
    rep = schema("report")
    assert set(rep["required"]) == set(rep["properties"])


def test_every_error_class_has_a_documented_code():
    classes = [errors.SandboxError, errors.ProfileError, errors.UsageError, errors.SetupError,
               errors.BridgeError, errors.CommandNotFound, errors.CommandNotExecutable]
    for cls in classes:
        assert cls.code in errors.CODES, cls
    doc = (REPO / "docs" / "machine-output.md").read_text()
    for code in errors.CODES:
        assert f"`{code}`" in doc, code


def test_every_code_given_at_a_raise_site_is_documented():
    import re

    for path in (REPO / "sandbox").rglob("*.py"):  # subpackages too
        for code in re.findall(r'\bcode="([a-z_]+)"', path.read_text()):
            assert code in errors.CODES, (path.name, code)


# -- every outcome, for real ---------------------------------------------------------

def test_exit(senv):
    done, doc = run_reported(senv, ["sh", "-c", "exit 3"])
    assert done.returncode == 3
    validate(doc, "report")
    assert (doc["outcome"], doc["exit_status"], doc["command_status"]) == ("exited", 3, 3)
    assert doc["error"] is None and doc["signal"] is None and doc["blocked"] == []


def test_signal(senv):
    done, doc = run_reported(senv, ["sh", "-c", "kill -KILL $$"])
    assert done.returncode == 137
    validate(doc, "report")
    assert (doc["outcome"], doc["signal"]) == ("signaled", "SIGKILL")


def test_timeout(senv):
    profile = senv.base / "slow.toml"
    profile.write_text('extends = "default"\n[limits]\ntimeout_seconds = 1\n')
    done, doc = run_reported(senv, ["sleep", "30"], "--profile", str(profile))
    assert done.returncode == 124
    validate(doc, "report")
    assert doc["outcome"] == "timeout" and doc["timed_out"] is True
    assert doc["exit_status"] == 124 and doc["forwarded_signals"] == ["SIGTERM"]


@pytest.mark.parametrize("case", ["profile_not_found", "profile_invalid", "workspace_invalid",
                                  "bwrap_missing", "command_not_found"])
def test_setup_errors_have_their_code(senv, case):
    env = None
    args: list[str] = []
    command = ["true"]
    if case == "profile_not_found":
        args = ["--profile", "no-such-profile"]
    elif case == "profile_invalid":
        bad = senv.base / "bad.toml"
        bad.write_text('[filesystem]\nwritabel = ["/x"]\n')
        args = ["--profile", str(bad)]
    elif case == "workspace_invalid":
        args = ["--workspace", "/usr"]
    elif case == "bwrap_missing":
        env = senv.environ(SANDBOX_BWRAP="/nonexistent/bwrap")
    else:
        command = ["no-such-command-xyz"]
    done, doc = run_reported(senv, command, *args, env=env)
    validate(doc, "report")
    assert doc["outcome"] == "error" and doc["error"]["code"] == case, doc["error"]
    assert doc["exit_status"] == done.returncode
    assert doc["command_status"] is None
    assert done.stderr.decode().startswith("sandbox: ")  # the one line, as before


def test_audit_finding(senv):
    done, doc = run_reported(senv, ["mkdir", ".idea"])
    validate(doc, "report")
    [finding] = doc["audit"]
    assert finding["code"] == "audit_finding" and finding["path"] == str(senv.ws / ".idea")


def test_blocked_lookup_and_write(senv):
    _git(senv, "init", "-q", ".")
    done, doc = run_reported(senv, ["sh", "-c", "getent hosts nothing.invalid; "
                                                "git config --local x.y z; true"],
                             env=senv.environ(**GIT_ENV))
    validate(doc, "report")
    codes = {r["code"] for r in doc["blocked"]}
    assert codes == {"dns_refused", "write_protected"}, doc["blocked"]
    assert doc["network"]["mode"] == "none" and doc["network"]["proxy"] is None


def test_blocked_request(senv):
    # a host no rule allows: the proxy answers 403 itself, nothing is resolved or contacted
    profile = proxy_profile(senv, allow_rule("pypi.test", [9]), {"pypi.test": "127.0.0.1"})
    script = ("import urllib.request, urllib.error\n"
              "try:\n urllib.request.urlopen('http://uploads.test:9/x', timeout=20)\n"
              "except urllib.error.HTTPError as e:\n print(e.code)\n")
    done, doc = run_reported(senv, [SYSTEM_PYTHON, "-c", script], "--profile", str(profile))
    assert done.stdout == b"403\n", done.stderr
    validate(doc, "report")
    [record] = doc["blocked"]
    assert record["code"] == "network_refused" and "uploads.test" in record["target"]
    assert doc["network"]["mode"] == "proxy" and doc["network"]["lookups"] is None


def test_every_outcome_has_the_same_keys(senv):
    """Stable shape: the keys of an error report and of a finished run are the same."""
    _, ok = run_reported(senv, ["true"])
    _, bad = run_reported(senv, ["true"], "--profile", "no-such-profile")
    assert set(ok) == set(bad)


# -- explain --json --------------------------------------------------------------------

def _explain(senv, *args):
    senv.finish()
    return subprocess.run(senv.who.prefix() + [sandbox_exe(), "explain", "--json", *args],
                          cwd=senv.ws, env=senv.environ(), capture_output=True, timeout=60)


def test_explain_json_validates(senv):
    profile = proxy_profile(senv, allow_rule("pypi.test", [9]), {"pypi.test": "127.0.0.1"})
    for args in ([], ["--profile", "readonly"], ["--profile", str(profile)]):
        done = _explain(senv, *args)
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        validate(doc, "explain")
        assert doc["schema_version"] == 1 and doc["error"] is None


def test_explain_json_error_has_the_same_keys(senv):
    good = json.loads(_explain(senv).stdout)
    done = _explain(senv, "--profile", "no-such-profile")
    assert done.returncode == 125
    doc = json.loads(done.stdout)
    validate(doc, "explain")
    assert doc["error"]["code"] == "profile_not_found"
    assert set(doc) == set(good)
    assert done.stderr.decode().startswith("sandbox: profile error:")


# -- --report-fd -------------------------------------------------------------------------

PROBE = "readlink /proc/$$/fd/{fd} >/dev/null && echo open || echo closed"


def test_report_fd_is_not_passed_to_the_command(senv):
    fd_file = senv.base / "probe.json"
    with open(fd_file, "w") as fh:
        fd = fh.fileno()
        probe = PROBE.format(fd=fd)
        # without the sandbox, a descriptor passed like this is the command's
        bare = subprocess.run(["sh", "-c", probe], pass_fds=(fd,), capture_output=True)
        assert bare.stdout == b"open\n"
    senv.finish()
    with open(fd_file, "w") as fh:
        fd = fh.fileno()
        done = subprocess.run(senv.who.prefix() + [sandbox_exe(), "run", "--report-fd", str(fd),
                                                   "--", "sh", "-c", PROBE.format(fd=fd)],
                              cwd=senv.ws, env=senv.environ(), capture_output=True, timeout=60,
                              pass_fds=(fd,))
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"closed\n"
    validate(json.loads(fd_file.read_text()), "report")


def test_report_fd_closed_is_refused_before_the_command_runs(senv):
    senv.finish()
    done = subprocess.run(senv.who.prefix() + [sandbox_exe(), "run", "--report-fd", "9", "--",
                                               "touch", "made"],
                          cwd=senv.ws, env=senv.environ(), capture_output=True, timeout=60)
    assert done.returncode == 125
    assert "descriptor 9 is not open" in done.stderr.decode()
    assert not (senv.ws / "made").exists()


def test_report_and_report_fd_exclude_each_other(senv):
    done = subprocess.run([sandbox_exe(), "run", "--report", "x.json", "--report-fd", "1", "--",
                           "true"], cwd=senv.ws, env=senv.environ(), capture_output=True)
    assert done.returncode == 125
    assert b"exclude each other" in done.stderr


@pytest.mark.parametrize("args", [["--report-fd", "7", "--", "x"], ["--report-fd=7", "-q", "--", "x"]])
def test_report_fd_fast_path_agrees_with_typer(args):
    typer_options = _typer_options()

    from sandbox.__main__ import parse_run

    fast = parse_run(args)
    assert fast is not None and fast.report == "/dev/fd/7"
    assert fast == typer_options(args)


def _typer_options():
    """tests/test_main.py's helper, loaded by path: this file may run without it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_test_main_helpers", os.path.join(os.path.dirname(__file__), "test_main.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.typer_options


@pytest.mark.parametrize("args", [["--report-fd", "x", "--", "y"], ["--report-fd", "-1", "--", "y"],
                                  ["--report", "r", "--report-fd", "3", "--", "y"],
                                  ["--report-fd", "3", "--report", "r", "--", "y"]])
def test_report_fd_bad_values_fall_back_to_typer(args):
    typer_options = _typer_options()

    from sandbox.__main__ import parse_run

    assert parse_run(args) is None
    assert typer_options(args) is None  # typer refuses them too


# -- diagnostics never mix with the command's stderr -----------------------------------

NOISY = ["sh", "-c", "echo from-the-command >&2; getent hosts nothing.invalid; exit 0"]


def test_quiet_with_a_report_leaves_stderr_to_the_command(senv):
    extra = senv.base / "extra"
    extra.mkdir()
    done, doc = run_reported(senv, NOISY, "--allow-write", str(extra), quiet=True)
    assert done.stderr == b"from-the-command\n"  # nothing of the sandbox's
    assert any(line.startswith("sandbox: blocked name lookup nothing.invalid")
               for line in doc["diagnostics"]), doc["diagnostics"]
    assert doc["weakenings"] and doc["blocked"]  # what the lines would say is in the report
    validate(doc, "report")


def test_without_quiet_the_lines_are_on_stderr_and_in_the_report(senv):
    done, doc = run_reported(senv, NOISY)
    err = done.stderr.decode().splitlines()
    assert err[0] == "from-the-command"
    ours = [line for line in err if line.startswith("sandbox: ")]
    assert ours and ours == doc["diagnostics"]


def test_quiet_with_a_report_also_for_setup_errors(senv):
    done, doc = run_reported(senv, ["true"], "--profile", "no-such-profile", quiet=True)
    assert done.returncode == 125 and done.stderr == b""
    assert doc["diagnostics"] == [doc["diagnostics"][0]]
    assert doc["diagnostics"][0].startswith("sandbox: profile error:")


def test_blocked_request_codes_and_the_stable_record_shape():
    """The proxy's refusals become records with their code; finish() fills every key."""
    from sandbox import report

    network = {"proxy": "127.0.0.1:3128", "blocked": [
        {"status": 403, "reason": "host not allowed", "host": "a.test"},
        {"status": 403, "reason": "foreign credential: a token the profile does not grant",
         "url": "http://b.test/x"},
        {"status": 502, "reason": "upstream unreachable", "host": "c.test"}]}
    doc = report.build(["x"], None, 0.0, status=0)
    doc["blocked"] = report.blocked_records([], network)
    doc["network"] = network
    doc = report.finish(doc)
    assert [r["code"] for r in doc["blocked"]] == ["network_refused", "foreign_credential"]
    assert all(set(r) >= {"code", "kind", "target", "rule", "count", "evidence"}
               for r in doc["blocked"])
    assert doc["network"]["mode"] == "proxy" and doc["network"]["lookups"] is None
