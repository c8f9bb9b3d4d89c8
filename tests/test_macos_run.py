"""The darwin run path (sandbox.macos.run), its plumbing checked on Linux.

macOS's sandbox-exec does not exist here, so these tests give the run path a
stand-in at an absolute path: a script that records the argv it was given
and then runs the command WITHOUT any sandbox.  They prove the plumbing (the
profile and its -D parameters reach sandbox-exec, the run's own TMPDIR,
the exit status, the report, the egress proxy on the host's loopback with
its real port in the profile), never the enforcement: that is
tests/test_macos_live.py, on a Mac.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import sbpl_reader as reader
from conftest import sandbox_exe

SHIM = '''#!{python}
import json, os, sys
args = sys.argv[1:]
assert args[0] == "-p", args
profile, rest = args[1], args[2:]
params = {{}}
while rest[0] == "-D":
    key, _, value = rest[1].partition("=")
    params[key] = value
    rest = rest[2:]
assert rest[0] == "--", rest
with open({log!r}, "w") as fh:
    json.dump({{"profile": profile, "params": params, "command": rest[1:],
               "env": dict(os.environ)}}, fh)
os.execvp(rest[1], rest[1:])
'''

# macOS's Python has none of these: without them the run must take the
# portable paths (an unlinked temp file for the proxy's events, no pidfd,
# no MSG_NOSIGNAL, no PR_SET_PDEATHSIG)
NOT_ON_MACOS = '''
import os, socket
for name in ("memfd_create", "pidfd_open", "MFD_CLOEXEC"):
    if hasattr(os, name):
        delattr(os, name)
if hasattr(socket, "MSG_NOSIGNAL"):
    delattr(socket, "MSG_NOSIGNAL")
'''

DRIVER = '''
import sys
from sandbox.macos.run import run
from sandbox.options import RunOptions
opts = RunOptions(command=tuple(sys.argv[3:]), profile=sys.argv[2] or None, report=sys.argv[1] or None)
sys.exit(run(opts, dict(__import__("os").environ), sandbox_exec={shim!r}))
'''


def python_of_sandbox() -> str:
    return str(Path(sandbox_exe()).parent / "python")


def make_shim(senv) -> tuple[Path, Path]:
    log = senv.base / "shim.json"
    shim = senv.base / "sandbox-exec"
    shim.write_text(SHIM.format(python=python_of_sandbox(), log=str(log)))
    shim.chmod(0o755)
    return shim, log


def run_mac(senv, *command: str, profile: str = "", report: str = "",
            shim: Path | None = None, portable: bool = False) -> subprocess.CompletedProcess:
    if shim is None:
        shim, _ = make_shim(senv)
    code = (NOT_ON_MACOS if portable else "") + DRIVER.format(shim=str(shim))
    senv.finish()
    return subprocess.run(senv.who.prefix() + [python_of_sandbox(), "-c", code, report, profile,
                                               *command],
                          cwd=senv.ws, env=senv.environ(), capture_output=True, text=True,
                          timeout=60)


def test_missing_sandbox_exec_fails_closed(senv):
    made = senv.ws / "made"
    r = run_mac(senv, "touch", str(made), shim=senv.base / "no-such-sandbox-exec")
    assert r.returncode == 125, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sandbox: setup error: "), r.stderr
    assert "no-such-sandbox-exec was not found; the command was not run" in lines[0]
    assert "Traceback" not in r.stderr
    assert not made.exists()


def test_profile_params_tmpdir_status_and_report(senv):
    shim, log = make_shim(senv)
    report = senv.base / "report.json"
    r = run_mac(senv, "sh", "-c", 'test -d "$TMPDIR" && echo "$TMPDIR" > tmpdir.txt; exit 7',
                report=str(report), shim=shim)
    assert r.returncode == 7, r.stderr
    seen = json.loads(log.read_text())
    prof = reader.Profile(seen["profile"])
    assert prof.params() == set(seen["params"])
    assert reader.pasted(prof) == []
    assert seen["command"] == ["sh", "-c", 'test -d "$TMPDIR" && echo "$TMPDIR" > tmpdir.txt; '
                               "exit 7"]
    assert seen["params"]["WORKSPACE"].endswith(str(senv.ws))
    tmpdir = (senv.ws / "tmpdir.txt").read_text().strip()
    assert os.path.basename(tmpdir).startswith("sandbox-run-")
    assert seen["params"]["TMPDIR"] == tmpdir == seen["env"]["TMPDIR"]
    assert not os.path.exists(tmpdir)  # removed after the run
    assert seen["env"]["SANDBOX_ACTIVE"] == "1"
    doc = json.loads(report.read_text())
    import jsonschema

    schema = json.loads((Path(__file__).resolve().parent.parent / "docs" / "schemas"
                         / "report.schema.json").read_text())
    jsonschema.validate(doc, schema)
    assert doc["exit_status"] == 7
    assert doc["backend"]["name"] == "seatbelt"
    assert "(remote ip" not in seen["profile"]


@pytest.mark.parametrize("portable", [False, True], ids=["linux-calls", "macos-calls"])
def test_proxy_listens_on_host_loopback_with_its_port_in_the_profile(senv, portable):
    shim, log = make_shim(senv)
    # the command asks the proxy for a host no rule allows: refused by the
    # proxy itself, which contacts nothing
    probe = ("import os, socket, urllib.parse\n"
             "u = urllib.parse.urlsplit(os.environ['HTTPS_PROXY'])\n"
             "s = socket.create_connection((u.hostname, u.port), timeout=10)\n"
             "s.sendall(b'CONNECT not-allowed.invalid:443 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n"
             "print(s.recv(100).decode().split()[1])\n")
    r = run_mac(senv, python_of_sandbox(), "-c", probe, profile="pypi", shim=shim,
                portable=portable)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "403", r.stdout
    seen = json.loads(log.read_text())
    port = int(seen["env"]["HTTPS_PROXY"].rsplit(":", 1)[1])
    assert 0 < port < 65536
    assert seen["env"]["HTTPS_PROXY"] == f"http://127.0.0.1:{port}"
    prof = reader.Profile(seen["profile"])
    assert reader.decision(prof, seen["params"], "network-outbound", None,
                           remote=f"ip:localhost:{port}") == "allow"
    assert '(remote ip "localhost:0")' not in seen["profile"]
    assert "not-allowed.invalid" in r.stderr  # the proxy's summary names what it refused


def test_tls_inspecting_profile_is_refused(senv):
    made = senv.ws / "made"
    r = run_mac(senv, "touch", str(made), profile="github")
    assert r.returncode == 125
    assert "inspects TLS" in r.stderr and "not run" in r.stderr
    assert not made.exists()
