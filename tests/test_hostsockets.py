"""Host sockets, FIFOs and device nodes, wherever they are; and host churn.

* Every unix socket bound with a path in the host's network namespace is
  hidden, however deep and wherever it lives (``sandbox.hostsockets`` reads
  the kernel's list); the list is parsed byte for byte, names with spaces
  and newlines included.
* A socket bound after a plan was cached is hidden on the next run.
* A FIFO with a host reader cannot be written into (they are found by type,
  like sockets, in ``[sockets] scan`` and in the writable roots).
* A device node outside /dev cannot be opened (every bind is ``nodev``).
* A process that keeps creating and removing sockets never makes a run fail
  (``sandbox.linux.drift``).

Each attack is shown to work outside the sandbox with the same user and the
same files.  Servers, readers and the churn process are started here, bound
in time and count, and stopped by their PID.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import _test_root
from sandbox import app, plancache
from test_attacks import CLIENT, PY, Server, assert_blocked, connect_both, out, ran
from test_plancache import OPTS, fresh_and_cached, place  # noqa: F401  (a fixture)

TRUST_BACKDATED_STAMPS = True  # for the plan-cache tests (see conftest)


def serve(senv, who, path: Path) -> Server:
    path.parent.mkdir(parents=True, exist_ok=True)
    senv.finish()
    return Server(socket.AF_UNIX, str(path), chown=(who.uid, who.gid))


# --------------------------------------------------------------------------
# the kernel's list, read from real sockets


def bind(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    return s


@pytest.fixture
def short_dir():
    d = _test_root() / f"u{uuid.uuid4().hex[:6]}"
    d.mkdir()
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=False)


def test_every_bound_name_is_found_byte_for_byte(short_dir):
    from sandbox import hostsockets

    d = str(short_dir)
    names = [f"{d}/plain.sock", f"{d}/with space.sock", f"{d}/new\nline.sock",
             f"{d}/tab\there", f"{d}/back\\slash", f"{d}/trailing ", f"{d}/\n\n",
             os.fsdecode(d.encode() + b"/latin1-\xe9.sock")]
    # a name whose second line looks like a record of its own, naming a decoy
    forged = f"{d}/f\n0000000000000000: 00000002 00000000 00000000 0001 01 1 /decoy"
    if len(os.fsencode(forged)) > hostsockets.MAX_NAME:
        forged = f"{d}/f\n0: 2 0 0 1 1 1 /decoy"
    names.append(forged)
    os.mkdir(os.path.dirname(forged))  # "f\n0000...: ... 1 " is a directory
    socks = [bind(n) for n in names]
    try:
        data = hostsockets.read()
        for n in names:  # the kernel prints them raw: newlines are not escaped
            assert os.fsencode(n).split(b"\n")[0] in data
        found = hostsockets.bound_sockets(data)
        for n in names:
            assert os.path.realpath(d) + n[len(d):] in found, repr(n)
        assert "/decoy" not in found  # a candidate, but not a socket on disk
    finally:
        for s in socks:
            s.close()


def test_abstract_and_relative_names_are_not_paths(short_dir):
    from sandbox import hostsockets

    tag = uuid.uuid4().hex
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind("\0sbx-" + tag)
    cwd = os.getcwd()
    os.chdir(short_dir)
    try:
        relative = bind(f"rel-{tag}.sock")
    finally:
        os.chdir(cwd)
    try:
        data = hostsockets.read()
        assert f"@sbx-{tag}".encode() in data and f" rel-{tag}.sock".encode() in data
        listed = hostsockets.candidates(data)
        assert not [c for c in listed if tag in c]  # neither is an absolute name
    finally:
        abstract.close()
        relative.close()


def test_only_new_sockets_the_sandbox_could_reach_are_reported(short_dir):
    from sandbox import hostsockets

    hidden_dir = short_dir / "hidden"
    hidden_dir.mkdir()
    value = hostsockets.plan_value(hostsockets.read(), (str(hidden_dir),), (), "/e")

    def appeared_here():  # other programs on this host may bind sockets meanwhile
        return [p for p in hostsockets.appeared(value) if p.startswith(str(short_dir.resolve()))]

    first = bind(str(hidden_dir / "x.sock"))
    try:
        assert appeared_here() == []  # where the sandbox cannot look
        second = bind(str(short_dir / "y.sock"))
        try:
            assert appeared_here() == [str(short_dir.resolve() / "y.sock")]
        finally:
            second.close()
        # closed: its file is left, but nothing listens there any more
        assert (short_dir / "y.sock").is_socket() and appeared_here() == []
    finally:
        first.close()


# --------------------------------------------------------------------------
# through the real sandbox


@pytest.mark.integration
@pytest.mark.parametrize("rel", [
    "opt/vendor/run/docker.sock",  # outside $HOME and every directory the old search walked
    "home/a/b/c/d/e/f/g/agent.sock",  # under $HOME, deeper than sockets.max_depth
    "opt/odd dir/new\nline.sock",
], ids=["outside-roots", "deep-home", "odd-name"])
def test_host_socket_anywhere_is_hidden(senv, who, rel):
    server = serve(senv, who, senv.base / rel)
    try:
        outside, inside = connect_both(senv, server, "unix", str(senv.base / rel))
        assert_blocked(server, outside, inside)
    finally:
        server.close()


@pytest.mark.integration
def test_socket_bound_after_the_plan_was_cached_is_hidden(senv, who):
    import json

    from conftest import sandbox_exe

    run_dir = senv.base / "opt" / "svc"
    run_dir.mkdir(parents=True)
    report = senv.base / "report.json"
    client = [PY, "-c", CLIENT, "unix", str(run_dir / "late.sock")]

    def run(command):  # senv.run would chown the tree again, and so make every stamp new
        return subprocess.run(who.prefix() + [sandbox_exe(), "run", "--report", str(report), "--",
                                              *command], cwd=senv.ws, env=senv.environ(),
                              capture_output=True, timeout=120)

    senv.finish()
    for _ in range(4):  # until the plan is cached (what changed in the last 2 s is not trusted)
        time.sleep(2.1)
        first = run(["true"])
        assert first.returncode == 0, out(first)
        if json.loads(report.read_text())["plan_cached"]:
            break
    else:
        pytest.fail("the plan was never cached")
    server = Server(socket.AF_UNIX, str(run_dir / "late.sock"), chown=(who.uid, who.gid))
    try:
        inside = run(client)
        cached = json.loads(report.read_text())["plan_cached"]
        outside = senv.run(client, sandboxed=False)
        assert_blocked(server, outside, inside)
        assert cached  # masked by the cached plan, not by a new one
    finally:
        server.close()


class FifoReader:
    """A host program reading commands from a FIFO; bounded in time."""

    def __init__(self, path: Path, who) -> None:
        os.mkfifo(path, 0o666)
        os.chmod(path, 0o666)
        if os.getuid() == 0:
            os.chown(path, who.uid, who.gid)
        # read-write: the open does not wait for a writer, and the reader
        # never sees end-of-file between writers
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self.got = b""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        deadline = time.monotonic() + 120
        while not self.stop.is_set() and time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                try:
                    self.got += os.read(self.fd, 4096)
                except BlockingIOError:
                    pass

    def drain(self) -> bytes:
        time.sleep(0.3)
        got, self.got = self.got, b""
        return got

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        os.close(self.fd)


@pytest.mark.integration
@pytest.mark.parametrize("where", ["home", "workspace"])
def test_host_fifo_with_a_reader_cannot_be_written(senv, who, where):
    parent = senv.home / ".local" / "share" / "app" if where == "home" else senv.ws / "run"
    parent.mkdir(parents=True)
    path = parent / "control.fifo"
    senv.finish()
    reader = FifoReader(path, who)
    payload = "PAYLOAD-" + uuid.uuid4().hex
    script = f"printf %s {payload} > '{path}'"
    try:
        inside = senv.run(["timeout", "10", "sh", "-c", script])
        got_inside = reader.drain()
        outside = senv.run(["timeout", "10", "sh", "-c", script], sandboxed=False)
        got_outside = reader.drain()
    finally:
        reader.close()
    assert outside.returncode == 0 and got_outside == payload.encode(), out(outside)
    ran(inside)
    assert inside.returncode not in (0, 124), out(inside)  # refused at once, not left waiting
    assert got_inside == b""


@pytest.mark.integration
def test_device_node_outside_dev_cannot_be_opened(senv, who):
    if os.getuid() != 0:
        pytest.skip("making a device node (mknod) needs root")
    node = senv.home / "zero"
    os.mknod(node, 0o666 | 0o020000, os.makedev(1, 5))  # a character device: /dev/zero
    os.chmod(node, 0o666)
    script = f"head -c 4 '{node}' | od -An -c"
    inside = senv.sh(script)
    outside = senv.sh(script, sandboxed=False)
    assert outside.returncode == 0 and out(outside).split() == ["\\0"] * 4, out(outside)
    ran(inside)
    assert "\\0" not in out(inside) and "Permission denied" in out(inside), out(inside)


CHURN = r"""
import os, random, socket, sys, time
d, count, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
os.makedirs(d, exist_ok=True)
end, done = time.monotonic() + seconds, 0
for i in range(count):
    if time.monotonic() > end:
        break
    path = f"{d}/s-{i % 8}.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.listen(1)
    time.sleep(random.uniform(0.002, 0.03))
    s.close()
    os.unlink(path)
    done += 1
print(done, flush=True)
"""


@pytest.mark.integration
def test_socket_churn_on_the_host_never_fails_a_run(senv, who):
    # Under $HOME, which the search by type walks (like /srv in the report).
    # In a network namespace of its own, so that the kernel's list of the
    # host's sockets does not show them: only this test's runs, which walk
    # this $HOME, mask (and lose) them, not every plan other tests make
    # meanwhile.  The deterministic tests below cover listed sockets.
    churn_dir = senv.home / "srv" / "churn"
    churn_dir.parent.mkdir(parents=True)
    senv.finish()
    churn = subprocess.Popen(who.prefix() + ["unshare", "--map-root-user", "--net", PY, "-c",
                                             CHURN, str(churn_dir), "20000", "90"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    results = []
    try:
        time.sleep(0.3)
        for _ in range(15):
            results.append(senv.run(["true"]))
    finally:
        churn.terminate()
        try:
            churn.wait(timeout=10)
        except subprocess.TimeoutExpired:
            churn.kill()
            churn.wait()
    assert churn.returncode in (0, -15), churn.stderr.read().decode()
    failed = [out(r) for r in results if r.returncode != 0]
    assert not failed, failed[0]


# --------------------------------------------------------------------------
# the plan cache


def test_plan_is_kept_for_a_socket_bound_where_the_sandbox_cannot_see(place):
    base, home, _ws, env = place
    (home / ".ssh").mkdir()  # a secret directory of the default profile: empty inside
    os.utime(home, (time.time() - 60, time.time() - 60))
    os.utime(home / ".ssh", (time.time() - 60, time.time() - 60))
    _prepared, plan = fresh_and_cached(env)
    assert plan is not None
    s = bind(str(home / ".ssh" / "agent.sock"))
    try:
        assert plancache.load(OPTS, env) is not None
    finally:
        s.close()


def test_socket_bound_after_caching_is_added_to_the_cached_plan(place):
    base, _home, _ws, env = place
    prepared, plan = fresh_and_cached(env)
    assert plan is not None
    path = str(base.resolve() / "outside.sock")  # not walked: only the kernel's list names it
    s = bind(path)
    try:
        plan = plancache.load(OPTS, env)
        assert plan is not None  # no new plan for it...
        argv = list(plan["argv"])
        empty = prepared.layout.empty_file
        i = argv.index(path)  # ...but a mask, after every other mount
        assert argv[i - 2:i] == ["--ro-bind", empty]
        after = argv[i + 1:argv.index("--chdir")]  # other tests' sockets, if any
        assert all(after[k:k + 2] == ["--ro-bind", empty] for k in range(0, len(after), 3))
        assert argv[plan["status_index"] - 1] == "--json-status-fd"
        assert plan["seccomp"] is None or argv[plan["seccomp"][0] - 1] == "--seccomp"
        fresh = app.prepare(OPTS, env).invocation.argv  # a new plan masks it too
        assert fresh[fresh.index(path) - 2:fresh.index(path)] == ("--ro-bind", empty)
    finally:
        s.close()


# --------------------------------------------------------------------------
# vanished mount points


EMPTY = "/state/empty"


def test_prune_drops_the_mounts_on_vanished_paths_only():
    from sandbox.linux import drift

    head = ["bwrap", "--unshare-user", "--cap-drop", "ALL", "--ro-bind", "/", "/",
            "--dev", "/dev", "--proc", "/proc", "--ro-bind-try", "/proc/sys", "/proc/sys",
            "--tmpfs", "/tmp", "--tmpfs", "/run", "--bind", "/ws", "/ws",
            "--bind", "/ws/.git", "/ws/.git"]
    tail = ["--remount-ro", "/run", "--chdir", "/ws", "--seccomp", "4",
            "--json-status-fd", "3", "--", "sh", "-c", "--bind /srv/a.sock", "/srv/a.sock"]
    argv = head + ["--ro-bind", "/ws/.git/hooks", "/ws/.git/hooks",
                   "--tmpfs", "/home/u/.aws", "--remount-ro", "/home/u/.aws",
                   "--ro-bind", EMPTY, "/srv/a.sock", "--ro-bind", EMPTY, "/srv/b.sock"] + tail
    dirs = {"/", "/ws", "/ws/.git", "/ws/.git/hooks", "/tmp", "/run", "/home/u/.aws"}

    def kind(gone=frozenset(), now_dirs=frozenset()):
        return lambda p: (None if p in gone else
                          "dir" if p in dirs or p in now_dirs else "other")

    new, dropped = drift.prune(argv, kind({"/srv/a.sock", "/ws/.git/hooks", "/home/u/.aws"}))
    assert dropped == ["/ws/.git/hooks", "/home/u/.aws", "/srv/a.sock"]
    assert new == head + ["--ro-bind", EMPTY, "/srv/b.sock"] + tail
    assert drift.prune(argv, kind()) == (argv, [])
    # a vanished source is as fatal to bwrap as a vanished destination
    assert drift.prune(argv, kind({EMPTY}))[1] == ["/srv/a.sock", "/srv/b.sock"]
    # and a file cannot be mounted over what is now a directory
    assert drift.prune(argv, kind(now_dirs={"/srv/b.sock"}))[1] == ["/srv/b.sock"]


def test_prune_leaves_an_argv_it_does_not_understand():
    from sandbox.linux import drift

    argv = ["bwrap", "--ro-bind", "/", "/", "--overlay-src", "/x", "--ro-bind", EMPTY, "/gone",
            "--", "true"]
    assert drift.prune(argv, lambda p: None if p == "/gone" else "other") == (argv, [])


def test_vanished_protection_is_audited_again(short_dir):
    from sandbox.execute import _drop_vanished

    ws = short_dir / "ws"
    (ws / ".vscode").mkdir(parents=True)
    (ws / ".git").mkdir()
    argv = ["bwrap", "--ro-bind", "/", "/", "--bind", str(ws), str(ws),
            "--ro-bind", str(ws / ".vscode"), str(ws / ".vscode"), "--chdir", str(ws),
            "--seccomp", "9", "--json-status-fd", "3", "--", "true"]
    spec = {"known_protected": [str(ws / ".vscode"), str(ws / ".git")]}
    (ws / ".vscode").rmdir()  # the host removed it after the plan was made
    new, status, seccomp, new_spec, gone = _drop_vanished(argv, 13, (11, "bpf"), spec)
    assert gone == [str(ws / ".vscode")]
    assert new[status - 1] == "--json-status-fd" and new[seccomp[0] - 1] == "--seccomp"
    assert new_spec["known_protected"] == [str(ws / ".git")]
    assert spec["known_protected"] == [str(ws / ".vscode"), str(ws / ".git")]  # a copy


def test_prune_knows_every_option_of_a_real_plan(place):
    from sandbox.linux import drift

    _base, _home, _ws, env = place
    argv = list(app.prepare(OPTS, env).invocation.argv)
    masks = [argv[i + 2] for i, a in enumerate(argv[:argv.index("--")])
             if a == "--ro-bind" and argv[i + 1] != argv[i + 2]]
    shadow = next(m for m in masks if m.startswith("/etc/shadow"))
    # what is there now: other tests' sockets may come and go meanwhile
    there = {a: drift._kind(a) for a in argv if a.startswith("/")}
    new, dropped = drift.prune(argv, lambda p: None if p == shadow else there[p])
    also_gone = [p for p in dropped if p != shadow]
    assert shadow in dropped and all(there[p] is None for p in also_gone)
    assert len(new) == len(argv) - 3 * len(dropped)


# --------------------------------------------------------------------------
# a path that vanishes between the plan and bwrap's mounts, made certain: a
# bwrap wrapper removes it the first time, just before the real bwrap runs


def vanishing_bwrap(senv, path: Path) -> dict[str, str]:
    import shutil

    marker = senv.base / "first-start"
    marker.write_text("")
    wrapper = senv.base / "bwrap-vanish"
    wrapper.write_text("#!/bin/sh\n"
                       f"if [ -e '{marker}' ]; then rm -f '{marker}'; rm -rf '{path}'; fi\n"
                       f'exec {shutil.which("bwrap")} "$@"\n')
    wrapper.chmod(0o755)
    return senv.environ(SANDBOX_BWRAP=str(wrapper))


@pytest.mark.integration
def test_secret_that_vanishes_before_the_mounts_does_not_fail_the_run(senv):
    secret = senv.home / ".npmrc"  # masked by the default profile
    secret.write_text("//registry.npmjs.org/:_authToken=x\n")
    env = vanishing_bwrap(senv, secret)
    r = senv.sh("echo ran", env=env)
    assert r.returncode == 0 and r.stdout == b"ran\n", out(r)
    assert "bwrap: Can't create file" in out(r)  # it did vanish at the worst moment
    assert f"sandbox: note: {secret} vanished" in out(r)


@pytest.mark.integration
def test_protected_path_that_vanishes_is_audited_like_a_new_one(senv):
    vscode = senv.ws / ".vscode"
    vscode.mkdir()
    env = vanishing_bwrap(senv, vscode)
    r = senv.sh("mkdir .vscode && echo '{}' > .vscode/tasks.json && echo ran", env=env)
    assert r.returncode == 0 and r.stdout == b"ran\n", out(r)
    assert f"sandbox: note: {vscode} vanished" in out(r)
    # no longer read-only, so the audit treats what the command made there as new
    assert "sandbox: audit:" in out(r) and ".vscode" in out(r), out(r)
    assert not (vscode / "tasks.json").exists()


@pytest.mark.integration
def test_socket_file_removed_before_the_mounts_does_not_fail_the_run(senv, who):
    path = senv.base / "opt" / "svc" / "api.sock"
    server = serve(senv, who, path)
    try:
        env = vanishing_bwrap(senv, path)
        r = senv.sh("echo ran", env=env)
    finally:
        server.close()
    assert r.returncode == 0 and r.stdout == b"ran\n", out(r)
    assert f"sandbox: note: {path} vanished" in out(r)
