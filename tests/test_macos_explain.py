"""``sandbox explain --platform macos [--json]`` through the installed CLI, on Linux.

The profile it prints is read back by the independent SBPL reader and asked
what it allows for this test's real workspace and home.
"""

from __future__ import annotations

import json
import subprocess

import pytest

import sbpl_reader as reader
from conftest import sandbox_exe


def cli(senv, *args: str) -> subprocess.CompletedProcess:
    senv.finish()
    return subprocess.run(senv.who.prefix() + [sandbox_exe(), *args], cwd=senv.ws,
                          env=senv.environ(), capture_output=True, text=True, timeout=60)


def explain(senv, *args: str) -> dict:
    r = cli(senv, "explain", "--platform", "macos", "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_json_has_profile_params_and_argv(senv):
    (senv.ws / ".git" / "hooks").mkdir(parents=True)
    (senv.ws / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (senv.ws / ".git" / "config").write_text("[core]\n")
    (senv.home / ".ssh").mkdir()
    doc = explain(senv, "--", "make", "test")
    for key in ("sbpl", "params", "argv"):
        assert key in doc
    assert doc["platform"] == "macos" and doc["error"] is None
    prof = reader.Profile(doc["sbpl"])
    params = doc["params"]
    assert prof.params() == set(params)
    argv = doc["argv"]
    assert argv[:3] == ["/usr/bin/sandbox-exec", "-p", doc["sbpl"]]
    assert argv[argv.index("--"):] == ["--", "make", "test"]
    assert reader.pasted(prof) == []
    assert str(senv.ws) not in doc["sbpl"] and str(senv.home) not in doc["sbpl"]
    ws = params["WORKSPACE"]
    assert ws.endswith(str(senv.ws))  # as a Mac spells it (/private/... for /tmp, /var)

    def decide(op, path, **kw):
        return reader.decision(prof, params, op, path, **kw)
    assert decide("file-write-data", ws + "/out.o") == "allow"
    assert decide("file-write-data", str(senv.home) + "/x") == "deny"
    assert decide("file-read-data", str(senv.home / ".ssh" / "id_ed25519")) == "deny"
    assert decide("file-write-data", ws + "/.git/hooks/pre-commit") == "deny"
    assert decide("file-write-data", ws + "/.git/config") == "deny"
    assert decide("file-write-unlink", ws + "/.git", vnode="DIRECTORY") == "deny"
    assert decide("file-write-data", ws + "/.git/objects/ab/cd") == "allow"
    assert decide("network-outbound", None, remote="ip:localhost:80") == "deny"
    assert doc["proxy_port"] is None


def test_proxy_profile_opens_only_its_port(senv):
    doc = explain(senv, "--profile", "pypi")
    prof = reader.Profile(doc["sbpl"])
    port = doc["proxy_port"]
    assert isinstance(port, int)
    assert reader.decision(prof, doc["params"], "network-outbound", None,
                           remote=f"ip:localhost:{port}") == "allow"
    assert reader.decision(prof, doc["params"], "network-outbound", None,
                           remote="ip:localhost:443") == "deny"
    assert doc["env_set"]["HTTPS_PROXY"] == f"http://127.0.0.1:{port}"
    assert doc["env_set"]["TMPDIR"] == doc["params"]["TMPDIR"]


def test_readonly_profile_writes_only_the_run_tmpdir(senv):
    doc = explain(senv, "--profile", "readonly")
    prof = reader.Profile(doc["sbpl"])
    params = doc["params"]
    assert "CACHE_DIR" not in params or reader.decision(
        prof, params, "file-write-data", params["CACHE_DIR"] + "/x") == "deny"
    assert reader.decision(prof, params, "file-write-data",
                           params["WORKSPACE"] + "/x") == "deny"
    assert reader.decision(prof, params, "file-write-data", params["TMPDIR"] + "/x") == "allow"


def test_text_output_shows_profile_and_argv(senv):
    r = cli(senv, "explain", "--platform", "macos")
    assert r.returncode == 0, r.stderr
    assert "(deny default)" in r.stdout
    assert "/usr/bin/sandbox-exec -p PROFILE -D WORKSPACE=" in r.stdout


@pytest.mark.parametrize("value", ["windows", "darwin"])
def test_unknown_platform_is_one_line_error(senv, value):
    r = cli(senv, "explain", "--platform", value)
    assert r.returncode == 125
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sandbox: usage error: --platform")
