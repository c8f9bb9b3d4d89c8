"""The start of a run that inspects TLS: bwrap sets the sandbox up while the
proxy makes the run's CA, and waits on its --block-fd (sandbox.egress.session.Session
and runner.run's gate) until the CA is in the bundle.

Real bwrap, a real proxy process and the real runner; the bwrap argv is a
small one of the test's own (the CLI's is covered by tests/test_tls_inspect.py),
so that a CA that cannot be made can be arranged: the proxy is forked from a
process where ``tlsca.RunCA`` raises.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

BWRAP = shutil.which("bwrap")
pytestmark = pytest.mark.skipif(BWRAP is None, reason="needs bwrap")

_SCRIPT = textwrap.dedent('''
    import os, sys
    from sandbox import runner; from sandbox.egress import session as egress, tlsca, tlstrust
    from sandbox.errors import SandboxError

    ws, mode = sys.argv[1], sys.argv[2]
    if mode in ("broken", "broken-unguarded"):
        class Broken:
            def __init__(self, hosts):
                raise RuntimeError("planted: the CA cannot be made")
        tlsca.RunCA = Broken  # the proxy is forked from here: it inherits this
    left = []
    if mode == "broken-unguarded":  # what the kill is for: without it
        runner._kill_before_start = left.append
    target = tlstrust.system_bundle()
    argv = ["BWRAP", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--bind", ws, ws, "--unshare-all", "--die-with-parent", "--chdir", ws, "--",
            "sh", "-c", f"cp {target} inside.pem; touch started"]
    session = egress.Session({"inspect": ["api.test"], "allow": [], "deny": [], "hosts": [],
                              "max_connections": 10})
    try:
        argv, status, _, env = session.inspect(argv, None, None, {"PATH": os.environ["PATH"]},
                                               gated=True)
        assert "--ro-bind-data" in argv and session.gate is not None
        runner.run(argv, env, status, False, gate=session.gate)
        print("ran")
    except SandboxError as err:
        print("refused", err)
    finally:
        session.finish()
        for proc in left:  # bwrap, left waiting on its gate, which finish closed
            print("bwrap", proc.wait())
''').replace("BWRAP", BWRAP or "bwrap")


def _run(tmp_dir, mode: str) -> str:
    ws = tmp_dir / f"ws-{mode}"
    ws.mkdir()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_dir / "cache")}
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(ws), mode], capture_output=True,
                          text=True, timeout=60, env=env)
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


@pytest.fixture
def tmp_dir():
    from conftest import _test_root

    base = _test_root() / f"tls-start-{os.getpid()}-{os.urandom(4).hex()}"
    base.mkdir()
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_the_command_starts_only_once_the_run_ca_is_in_the_bundle(tmp_dir):
    from sandbox.egress import tlstrust

    out = _run(tmp_dir, "ok")
    assert "ran" in out, out
    assert (tmp_dir / "ws-ok" / "started").exists()
    assert not (tmp_dir / "cache" / "sandbox" / "tls").exists()  # no bundle file on the host
    inside = (tmp_dir / "ws-ok" / "inside.pem").read_bytes()
    with open(tlstrust.system_bundle(), "rb") as fh:
        roots = fh.read()
    marker = b"-----BEGIN CERTIFICATE-----"
    assert inside.startswith(roots.rstrip(b"\n"))
    assert inside.count(marker) == roots.count(marker) + 1  # the roots and the run's CA
    x509 = pytest.importorskip("cryptography.x509")
    last = x509.load_pem_x509_certificate(marker + inside.rsplit(marker, 1)[1])
    assert last.subject.rfc4514_string().startswith("CN=sandbox run CA ")


def test_a_ca_that_cannot_be_made_stops_bwrap_before_the_command(tmp_dir):
    out = _run(tmp_dir, "broken")
    assert "refused" in out and "could not make the run's CA" in out, out
    assert "planted: the CA cannot be made" in out and "the command was not run" in out
    assert not (tmp_dir / "ws-broken" / "started").exists()
    # the kill is what stops it: without it the gate's end-of-file would let
    # bwrap start the command (with the roots alone) once the session closes it
    out = _run(tmp_dir, "broken-unguarded")
    assert "refused" in out and "bwrap" in out, out
    assert (tmp_dir / "ws-broken-unguarded" / "started").exists()
