"""No network fails fast and says so (sandbox.egress.dns), through the real sandbox.

Every lookup here happens inside a sandbox's own network namespace, which
has loopback only: nothing can leave it, and no test depends on the host's
DNS.  Each check is made both ways: the same lookup in a bare
``bwrap --unshare-net`` (what the sandbox did before) fails with the
*temporary* error clients retry, inside the sandbox with the final one.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.egress import dns

SYSTEM_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
BWRAP = shutil.which("bwrap")
NAME = "pkg.sandbox-test.invalid"

# getaddrinfo inside: prints the error number and how long the lookup took
LOOKUP = f"""
import socket, sys, time
for name in sys.argv[1:]:
    t = time.monotonic()
    try:
        socket.getaddrinfo(name, 443)
        print(name, "ok", round(time.monotonic() - t, 3))
    except socket.gaierror as e:
        print(name, e.errno, round(time.monotonic() - t, 3))
"""


def _query(name: str, ident: int = 0x1234, qtype: int = 1, flags: int = 0x0100) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p)
    return struct.pack("!HHHHHH", ident, flags, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", qtype, 1)


def _lookups(stdout: bytes) -> dict[str, str]:
    return {line.split()[0]: line.split()[1] for line in stdout.decode().splitlines()}


def _report(path) -> dict:
    return json.loads(path.read_text())


# --- the protocol -------------------------------------------------------------------

def test_reply_is_nxdomain_for_the_same_question():
    query = _query("Registry.NPMJS.org", ident=0xBEEF, qtype=28)
    ident, flags, question, name = dns.parse_query(query)
    assert (ident, name) == (0xBEEF, "registry.npmjs.org")
    answer = dns.reply(ident, flags, question)
    rid, rflags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", answer)
    assert rid == 0xBEEF
    assert rflags & 0x8000  # a response
    assert rflags & 0x0100  # recursion desired, copied
    assert rflags & 0xF == 3  # NXDOMAIN
    assert (qd, an, ns, ar) == (1, 0, 0, 0)
    assert answer[12:] == query[12:]  # the question, as the C library checks it
    assert len(answer) <= len(query)


def test_other_opcodes_get_not_implemented():
    query = _query(NAME, flags=(2 << 11))  # STATUS
    ident, flags, question, _ = dns.parse_query(query)
    assert struct.unpack_from("!H", dns.reply(ident, flags, question), 2)[0] & 0xF == 4


@pytest.mark.parametrize("packet", [
    b"", b"\0" * 11,
    _query(NAME)[:-1],  # truncated question
    struct.pack("!HHHHHH", 1, 0x8000, 1, 0, 0, 0) + b"\0\0\1\0\1",  # a response
    struct.pack("!HHHHHH", 1, 0, 2, 0, 0, 0) + b"\0\0\1\0\1",  # two questions
    struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c\0\1\0\1",  # compression
    struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + (b"\x3f" + b"a" * 63) * 5 + b"\0\0\1\0\1",
])
def test_malformed_queries_are_dropped(packet):
    assert dns.parse_query(packet) is None


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_any_packet_is_parsed_safely_and_never_amplified(packet):
    query = dns.parse_query(packet)
    if query is not None:
        ident, flags, question, name = query
        assert len(dns.reply(ident, flags, question)) <= len(packet)
        assert len(name) <= 255 * 4


def test_nsswitch_keeps_every_line_but_the_network_sources():
    host = ("# comment\npasswd: files systemd\nhosts:          files mdns4_minimal "
            "[NOTFOUND=return] resolve [!UNAVAIL=return] dns myhostname\nnetworks: files\n")
    text = dns.nsswitch_text(host)
    assert "passwd: files systemd" in text and "networks: files" in text
    assert "hosts: files myhostname" in text.splitlines()
    assert "dns" not in text and "resolve" not in text
    assert "hosts: files" in dns.nsswitch_text(None).splitlines()


def test_argv_edits_keep_the_command_and_the_descriptor_places():
    argv = ["bwrap", "--unshare-user", "--unshare-net", "--ro-bind", "/", "/", "--chdir", "/ws",
            "--seccomp", "4", "--json-status-fd", "3", "--", "echo", "--unshare-net", "--chdir"]
    bridged = dns.without_own_namespace(argv)
    assert bridged == [a for i, a in enumerate(argv) if i != 2]
    assert dns.moved(argv, bridged, 11) == bridged.index("--json-status-fd") + 1
    assert dns.moved(argv, bridged, 9) == bridged.index("--seccomp") + 1
    static = dns.static_argv(bridged, ("/state/nss", "/etc/nsswitch.conf"))
    assert static[:2] == ["bwrap", "--unshare-net"]
    at = static.index("--chdir")
    assert static[at - 3:at] == ["--ro-bind", "/state/nss", "/etc/nsswitch.conf"]
    assert static[static.index("--") + 1:] == ["echo", "--unshare-net", "--chdir"]
    assert dns.static_argv(argv, None) == argv  # already has its namespace, nothing to bind


# --- through the real sandbox -------------------------------------------------------

def test_lookups_fail_at_once_with_a_final_answer_and_are_named(senv):
    report = senv.base / "report.json"
    done = senv.run([SYSTEM_PYTHON, "-c", LOOKUP, NAME, "localhost"],
                    args=["--report", str(report)])
    assert done.returncode == 0, done.stderr
    seen = _lookups(done.stdout)
    assert seen[NAME] == str(socket.EAI_NONAME)  # final: "no such name"
    assert seen["localhost"] == "ok"  # /etc/hosts still answers
    assert float(done.stdout.decode().split()[2]) < 1.0
    err = done.stderr.decode()
    assert f"sandbox: blocked name lookup {NAME} - no network (profile 'default')" in err
    assert "localhost" not in err
    doc = _report(report)
    assert doc["network"]["names_recorded"] is True
    assert NAME in [item["name"] for item in doc["network"]["lookups"]]
    assert {"kind": "lookup", "target": NAME}.items() <= next(
        r for r in doc["blocked"] if r["target"] == NAME).items()


@pytest.mark.skipif(BWRAP is None, reason="bwrap is not installed")
def test_before_the_resolver_the_same_lookup_failed_as_temporary(senv):
    """What the sandbox did before: bwrap's own namespace, the host's resolv.conf."""
    done = senv.run([BWRAP, "--unshare-net", "--unshare-user", "--ro-bind", "/", "/", "--dev",
                     "/dev", "--proc", "/proc", "--", SYSTEM_PYTHON, "-c", LOOKUP, NAME],
                    sandboxed=False)
    assert done.returncode == 0, done.stderr
    assert _lookups(done.stdout)[NAME] == str(socket.EAI_AGAIN)


def test_a_namespace_made_by_bwrap_still_fails_at_once_but_records_nothing(senv):
    report = senv.base / "report.json"
    done = senv.run([SYSTEM_PYTHON, "-c", LOOKUP, NAME, "localhost"],
                    args=["--report", str(report)],
                    env=senv.environ(SANDBOX_NET_BRIDGE="bwrap"))
    assert done.returncode == 0, done.stderr
    seen = _lookups(done.stdout)
    if os.path.isfile("/etc/nsswitch.conf"):
        assert seen[NAME] == str(socket.EAI_NONAME)
    assert seen["localhost"] == "ok"
    assert b"blocked name lookup" not in done.stderr
    network = _report(report)["network"]
    assert network["names_recorded"] is False
    assert network["names_not_recorded_because"] == "SANDBOX_NET_BRIDGE=bwrap"


def test_the_resolver_socket_is_held_by_nobody_inside(senv):
    """The wrapper holds it on the host; no process in the sandbox has a copy."""
    script = r"""
import os
held = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            held[os.readlink(f"/proc/{pid}/fd/{fd}")] = pid
    except OSError:
        pass
udp = [l.split() for l in open("/proc/net/udp").read().splitlines()[1:]]
bound = [row[9] for row in udp if row[1] == "0100007F:0035"]
print(len(bound), sum(f"socket:[{i}]" in held for i in bound))
"""
    done = senv.run([SYSTEM_PYTHON, "-c", script])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [b"1", b"0"]


def test_a_flood_of_queries_and_garbage_does_not_hurt_the_run(senv):
    script = r"""
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
def q(name, ident):
    body = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!HHHHHH", ident, 0x100, 1, 0, 0, 0) + body + b"\0\0\1\0\1"
for i in range(300):  # each answered before the next, so the socket's buffer never drops one
    s.sendto(b"\xff" * (i % 700), ("127.0.0.1", 53))
    s.sendto(q(f"n{i}.flood.invalid", i), ("127.0.0.1", 53))
    assert s.recv(512)[:2] == struct.pack("!H", i)
for i in range(2000):  # and a burst nobody waits for
    s.sendto(q(f"burst{i}.invalid", i), ("127.0.0.1", 53))
s.sendto(b"\x1b[31m" * 100, ("127.0.0.1", 53))
try:
    socket.getaddrinfo("after.flood.invalid", 80)
except socket.gaierror as e:
    print(e.errno)
"""
    report = senv.base / "report.json"
    done = senv.run([SYSTEM_PYTHON, "-c", script], args=["--report", str(report)], timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(socket.EAI_NONAME).encode()]
    network = _report(report)["network"]
    assert len(network["lookups"]) == dns.MAX_NAMES
    assert network["queries_unrecorded"] >= 300 - dns.MAX_NAMES
    lines = done.stderr.decode().splitlines()
    assert len([line for line in lines if "blocked name lookup" in line]) == dns.SUMMARY_LINES
    assert any("queries for names beyond the first 256" in line for line in lines)
    assert "\x1b" not in done.stderr.decode()


def test_names_the_command_chose_are_printed_harmlessly(senv):
    script = r"""
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
name = b"\x1b[2Jevil\x07"
s.sendto(struct.pack("!HHHHHH", 7, 0x100, 1, 0, 0, 0) + bytes([len(name)]) + name + b"\0\0\1\0\1",
         ("127.0.0.1", 53))
print(len(s.recv(512)))
"""
    done = senv.run([SYSTEM_PYTHON, "-c", script])
    assert done.returncode == 0, done.stderr
    err = done.stderr.decode()
    assert "\x1b" not in err and "\x07" not in err
    assert "sandbox: blocked name lookup \\x1b[2jevil\\x07" in err


def test_retries_that_cannot_help_are_off_unless_the_caller_set_them(senv):
    show = [SYSTEM_PYTHON, "-c", "import os; print(os.environ.get('npm_config_fetch_retries'), "
            "os.environ.get('PIP_RETRIES'), os.environ.get('CARGO_NET_RETRY'))"]
    assert senv.run(show).stdout.split() == [b"0", b"0", b"0"]
    mine = senv.run(show, env=senv.environ(PIP_RETRIES="3"))
    assert mine.stdout.split() == [b"0", b"3", b"0"]


def test_dry_run_argv_keeps_its_own_namespace(senv):
    done = senv.run(["true"], args=["--dry-run"])
    assert done.returncode == 0, done.stderr
    argv = done.stdout.decode()
    assert "--unshare-net" in argv
    if os.path.isfile("/etc/resolv.conf") and not os.path.realpath("/etc/resolv.conf").startswith("/run/"):
        assert "/etc/resolv.conf" in argv


def _timed(senv, command, *, env=None, cwd=None, timeout=60):
    start = time.monotonic()
    done = senv.run(command, env=env, cwd=cwd, timeout=timeout)
    return done, time.monotonic() - start


NPM = shutil.which("npm")


@pytest.mark.skipif(NPM is None, reason="npm is not installed")
def test_npm_install_fails_within_seconds_and_names_the_registry(senv):
    (senv.ws / "package.json").write_text(json.dumps(
        {"name": "t", "version": "1.0.0", "dependencies": {"left-pad": "^1.3.0"}}))
    done, elapsed = _timed(senv, ["npm", "install"], timeout=120)
    err = done.stderr.decode()
    assert done.returncode != 0
    assert "ENOTFOUND" in err
    assert elapsed < 5, f"npm install took {elapsed:.1f} s"
    assert "sandbox: blocked name lookup registry.npmjs.org - no network (profile 'default')" in err
    assert "--profile npm (registry.npmjs.org)" in err


CLIENTS = {
    "curl": (["curl", "-sS", "https://files.sandbox-test.invalid/x"], "files.sandbox-test.invalid"),
    "git": (["git", "clone", "-q", "https://github.com/octocat/Hello-World.git", "hw"], "github.com"),
    "urllib": ([SYSTEM_PYTHON, "-c", "import urllib.request; "
                "urllib.request.urlopen('https://pypi.org/simple/')"], "pypi.org"),
    "node": (["node", "-e", "fetch('https://api.sandbox-test.invalid/').catch(e => "
              "{ console.error(e.cause.code); process.exit(1) })"], "api.sandbox-test.invalid"),
    "pip": ([SYSTEM_PYTHON, "-m", "pip", "download", "--no-cache-dir", "-d", "dl", "left-pad"],
            "pypi.org"),
}


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_clients_fail_within_seconds_and_the_name_is_said(senv, client):
    command, name = CLIENTS[client]
    if not shutil.which(command[0]):
        pytest.skip(f"{command[0]} is not installed")
    if client == "pip" and subprocess.run([SYSTEM_PYTHON, "-m", "pip", "--version"],
                                          capture_output=True).returncode:
        pytest.skip("no pip for the system Python")
    done, elapsed = _timed(senv, command, timeout=120)
    assert done.returncode != 0
    assert elapsed < 5, f"{client} took {elapsed:.1f} s"
    assert f"sandbox: blocked name lookup {name} - no network" in done.stderr.decode()


# --- the fallback, at the runner: a host that refuses our namespace ---------------------

@pytest.mark.skipif(BWRAP is None, reason="bwrap is not installed")
def test_auto_falls_back_to_bwraps_namespace_when_ours_is_refused(tmp_path):
    import errno

    from sandbox import runner
    from sandbox.egress import netns

    nss = tmp_path / "nsswitch.conf"
    nss.write_text(dns.nsswitch_text(open("/etc/nsswitch.conf").read()
                                     if os.path.isfile("/etc/nsswitch.conf") else None))

    class Refusing(dns.Bridge):
        def enter(self) -> None:  # as a host that allows user namespaces to bwrap only
            raise netns.StageFailed(3, errno.EPERM)

        def launch_args(self):  # a refusal only the fork's child can stage
            return None

    session = dns.Session({"nsswitch": [str(nss), "/etc/nsswitch.conf"]}, "auto")
    session.bridge = Refusing(session.bridge.channel, "auto", session)
    out = tmp_path / "out"
    script = (f"grep -c : /proc/net/dev > {out}; {SYSTEM_PYTHON} -c '{LOOKUP}' {NAME} >> {out}")
    argv = [BWRAP, "--unshare-user", "--unshare-net", "--unshare-pid", "--die-with-parent",
            "--ro-bind", "/", "/", "--bind", str(tmp_path), str(tmp_path), "--dev", "/dev",
            "--proc", "/proc", "--chdir", "/", "--", "/bin/sh", "-c", script]
    outcome = runner.run(session.argv(argv), dict(os.environ), None, False, bridge=session.bridge)
    result = session.finish()
    assert outcome.bwrap_status == 0
    lines = out.read_text().split()
    assert lines[0] == "1"  # lo only: bwrap made the namespace after all
    if os.path.isfile("/etc/nsswitch.conf"):
        assert lines[2] == str(socket.EAI_NONAME)
    assert result["names_recorded"] is False
    assert "did not let sandbox make the network namespace" in result["names_not_recorded_because"]


def test_the_cached_fast_path_answers_and_names_too(senv):
    """A later run reuses the cached plan; lookups fail the same way and are named."""
    report = senv.base / "report.json"
    senv.finish()  # once: chown (senv.run does it every time) makes every ctime new
    from conftest import sandbox_exe

    argv = senv.who.prefix() + [sandbox_exe(), "run", "--report", str(report), "--",
                                SYSTEM_PYTHON, "-c", LOOKUP, NAME]
    cached = []
    for i in range(4):
        if i in (1, 2):
            time.sleep(2.2)  # plans are cached only from inputs older than 2 s
        done = subprocess.run(argv, cwd=senv.ws, env=senv.environ(), capture_output=True,
                              timeout=60)
        assert _lookups(done.stdout)[NAME] == str(socket.EAI_NONAME), done.stderr
        assert f"blocked name lookup {NAME}" in done.stderr.decode()
        cached.append(_report(report)["plan_cached"])
    assert cached[-1] is True, cached
