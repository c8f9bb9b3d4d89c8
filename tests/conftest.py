"""Shared fixtures: run the real ``sandbox`` CLI, as root and as a plain user.

Test directories live under ``SANDBOX_TEST_ROOT`` (default: ``.test-root`` in
the checkout), never under /tmp: the sandbox gives the command a private
/tmp, so a fake home under /tmp would be hidden for the wrong reason and a
secret test could pass without the secret mask doing anything.

When the suite runs as root it also runs the sandbox as an unprivileged user
(``sbxtest``, created on first use) so every protection is checked both ways.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings as _hypothesis_settings

# Property tests are derandomized by default, so a CI run is repeatable and
# never fails on an example an earlier run did not try; the random search
# runs with HYPOTHESIS_PROFILE=random (docs/testing.md).
_hypothesis_settings.register_profile("deterministic", derandomize=True)
_hypothesis_settings.register_profile("random", derandomize=False)
_hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

REPO = Path(__file__).resolve().parent.parent
# The warm server (docs/served.md) is off for every run the suite makes,
# unless a test asks for it (the ``served`` fixture): thousands of fake
# HOMEs must not each leave a server behind.  setdefault: for the tests that
# copy os.environ into a run's environment.
os.environ.setdefault("SANDBOX_SERVER", "off")
TEST_USER = "sbxtest"
BWRAP = shutil.which("bwrap")


PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run")


def traversable_by_others(path: Path) -> bool:
    """Can another user reach ``path`` (x bit for others on every ancestor)?"""
    path = path.resolve()
    for p in [path, *path.parents]:
        try:
            if not os.stat(p).st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


def _test_root() -> Path:
    """Where test homes and workspaces go.

    Not under /tmp (the sandbox's /tmp is private, so a fake home there would
    be hidden for the wrong reason) and, when the suite runs as root,
    somewhere the unprivileged test user can reach.
    """
    if os.environ.get("SANDBOX_TEST_ROOT"):
        root = Path(os.environ["SANDBOX_TEST_ROOT"])
    else:
        root = REPO / ".test-root"
        under_private = any(str(REPO.resolve()).startswith(d + "/") for d in PRIVATE_DIRS)
        if under_private or (os.getuid() == 0 and not traversable_by_others(REPO)):
            # /opt: outside the default socket search, so parallel tests
            # creating directories do not invalidate each other's cached plans
            root = (Path("/opt/sandbox-tests") if os.getuid() == 0
                    else Path.home() / ".cache" / "sandbox-tests")
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    return root


def sandbox_exe() -> str:
    """The installed console script of the environment running the tests.

    ``sys.prefix`` is resolved because scripts/setup may keep the venv
    outside the checkout (when the checkout is private to root) and link it
    as .venv; the resolved path is the one the test user can reach.
    """
    exe = Path(os.path.realpath(sys.prefix)) / "bin" / "sandbox"
    if not exe.exists():
        found = shutil.which("sandbox")
        if not found:
            pytest.fail("the 'sandbox' console script is not installed; run scripts/setup first")
        return found
    return str(exe)


def ensure_test_user() -> pwd.struct_passwd | None:
    """Create the unprivileged test user when running as root; None if impossible."""
    if os.getuid() != 0:
        return None
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        pass
    if not shutil.which("useradd"):
        return None
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", TEST_USER],
                   check=False, capture_output=True)
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        return None


@dataclass
class Who:
    """Who runs the sandbox in a test: 'root', 'user' (sbxtest) or 'self'."""

    name: str
    uid: int
    gid: int

    def chown(self, path: Path) -> None:
        if os.getuid() == 0 and self.uid != 0:
            for dirpath, dirnames, filenames in os.walk(path):
                os.lchown(dirpath, self.uid, self.gid)
                for f in dirnames + filenames:
                    os.lchown(os.path.join(dirpath, f), self.uid, self.gid)

    def prefix(self) -> list[str]:
        if os.getuid() == 0 and self.uid != 0:
            return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--"]
        return []


def _who_params() -> list[str]:
    return ["root", "user"] if os.getuid() == 0 else ["self"]


@pytest.fixture(params=_who_params())
def who(request) -> Who:
    if request.param == "user":
        pw = ensure_test_user()
        if pw is None:
            pytest.skip("cannot create the unprivileged test user (no useradd?)")
        return Who("user", pw.pw_uid, pw.pw_gid)
    return Who(request.param, os.getuid(), os.getgid())


@dataclass
class Env:
    """A fake home and a workspace for one test, owned by ``who``."""

    who: Who
    base: Path
    home: Path
    ws: Path

    def environ(self, **extra: str) -> dict[str, str]:
        env = {
            "HOME": str(self.home),
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "USER": self.who.name if self.who.name != "self" else os.environ.get("USER", ""),
            "SANDBOX_SERVER": "off",  # unless the test asks for it (``served``)
        }
        env.update(extra)
        return env

    def finish(self) -> None:
        """Hand the tree to the user who will run the sandbox."""
        self.who.chown(self.base)

    def run(self, command: list[str], *, args: list[str] = (), cwd: Path | None = None,
            env: dict[str, str] | None = None, input: bytes | None = None,
            timeout: float = 120, sandboxed: bool = True) -> subprocess.CompletedProcess:
        """Run ``command`` through ``sandbox run`` (or bare, when sandboxed=False)."""
        self.finish()
        full = list(command)
        if sandboxed:
            full = [sandbox_exe(), "run", *args, "--", *command]
        return subprocess.run(self.who.prefix() + full, cwd=cwd or self.ws,
                              env=env or self.environ(), input=input, capture_output=True,
                              timeout=timeout)

    def sh(self, script: str, **kw) -> subprocess.CompletedProcess:
        return self.run(["sh", "-c", script], **kw)


@pytest.fixture
def senv(who: Who) -> Env:
    base = _test_root() / f"t-{uuid.uuid4().hex[:12]}"
    home = base / "home"
    ws = base / "ws"
    home.mkdir(parents=True)
    ws.mkdir()
    os.chmod(base, 0o755)
    env = Env(who, base, home, ws)
    yield env
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def user_dir(tmp_path, monkeypatch) -> Path:
    """A private XDG_CONFIG_HOME so the real user's profiles never interfere."""
    cfg = tmp_path / "cfg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(cfg))
    d = cfg / "sandbox" / "profiles"
    d.mkdir(parents=True)
    return d


@pytest.fixture(autouse=True)
def _trust_backdated_stamps(monkeypatch, request):
    """For modules that set TRUST_BACKDATED_STAMPS: their tests backdate mtimes
    with utime(), which sets ctime to now, so the 2-second racy rule (which
    looks at ctime too) would refuse to cache anything.  Tests about the racy
    rule itself ("racy"/"recent" in their names) keep it."""
    if not getattr(request.module, "TRUST_BACKDATED_STAMPS", False):
        return
    if "racy" in request.node.name or "recent" in request.node.name:
        return
    from sandbox import dirstamps, observe, policycache, scan

    monkeypatch.setattr(dirstamps, "RACY_NS", 0)
    monkeypatch.setattr(observe, "RACY_NS", 0)
    monkeypatch.setattr(policycache, "RACY_NS", 0)
    monkeypatch.setattr(scan, "RACY_NS", 0)


def pytest_report_header(config):
    return [f"sandbox: bwrap={BWRAP} uid={os.getuid()} users={_who_params()}"]


def link_site_packages(site: Path, skip: tuple[str, ...] = ()) -> None:
    """Make ``site`` (a test venv's site-packages) hold this environment's
    installed packages, as symlinks, the way a real install co-locates a tool
    and its dependencies.  (A .pth pointing at another site-packages would
    not do: the sandbox drops such entries from sys.path at start.)"""
    import sysconfig

    real = Path(sysconfig.get_paths()["purelib"])
    for entry in real.iterdir():
        if entry.name in skip or entry.suffix == ".pth" or entry.name.startswith("__editable__"):
            continue
        target = site / entry.name
        if not target.exists():
            target.symlink_to(entry)


def native_client() -> bool:
    """Is the installed ``sandbox`` the native client (docs/served.md), not a Python script?"""
    with open(sandbox_exe(), "rb") as fh:
        return fh.read(4) == b"\x7fELF"


@dataclass
class Served:
    """A warm server running for ``senv`` (its own state dir), and how to use it."""

    senv: Env
    env: dict
    pid: int
    sock: Path

    def cli(self, *args: str, env: dict | None = None, timeout: float = 30):
        """``sandbox ARGS`` as the test's user, with the server's environment."""
        return subprocess.run(self.senv.who.prefix() + [sandbox_exe(), *args],
                              env=env or self.env, cwd=self.senv.ws, capture_output=True,
                              input=b"", timeout=timeout)

    def count(self) -> int:
        """How many runs the server has served (``sandbox server status``)."""
        out = self.cli("server", "status").stdout.decode()
        for line in out.splitlines():
            if line.startswith("served: "):
                return int(line.split()[1])
        raise AssertionError(f"no server runs: {out!r}")

    def client(self) -> list[str]:
        """The argv prefix of a served ``sandbox``: the native client when it is
        installed, else the protocol's test client (tests/served_support.py)."""
        if native_client():
            return [sandbox_exe()]
        support = self.senv.base / "served_support.py"
        if not support.exists():
            shutil.copy(REPO / "tests" / "served_support.py", support)
            os.chmod(support, 0o644)
        return [sys.executable, str(support), str(self.sock)]


def server_pid(served_env: dict, senv: Env) -> int | None:
    done = subprocess.run(senv.who.prefix() + [sandbox_exe(), "server", "status"],
                          env=served_env, cwd=senv.ws, capture_output=True, input=b"",
                          timeout=30)
    for line in done.stdout.decode().splitlines():
        if line.startswith("pid: "):
            return int(line.split()[1])
    return None


@pytest.fixture
def served(senv: Env):
    """A server for ``senv``: SANDBOX_SERVER=on, started by one direct run;
    stopped by ``sandbox server stop`` (its pid) afterwards, and checked gone."""
    import time

    env = senv.environ(SANDBOX_SERVER="on")
    senv.finish()
    first = subprocess.run(senv.who.prefix() + [sandbox_exe(), "run", "--", "true"], env=env,
                           cwd=senv.ws, capture_output=True, input=b"", timeout=120)
    assert first.returncode == 0, first.stderr
    pid = None
    deadline = time.monotonic() + 5
    while pid is None and time.monotonic() < deadline:
        pid = server_pid(env, senv)
        if pid is None:
            time.sleep(0.05)
    assert pid is not None, "the server did not start within 5 s"
    sock = server_socket(Path(os.path.realpath(senv.home / ".cache")) / "sandbox")
    yield Served(senv, env, pid, sock)
    subprocess.run(senv.who.prefix() + [sandbox_exe(), "server", "stop"], env=env, cwd=senv.ws,
                   capture_output=True, input=b"", timeout=30)
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid), f"server {pid} still runs"


def server_socket(state: Path) -> Path:
    """The socket the installed client looks for in the state dir ``state``:
    its name carries the client's installation (sandbox.server.install_id)."""
    from sandbox.server import install_id

    return state / f"server-{install_id(os.path.dirname(os.path.realpath(sandbox_exe())))}.sock"


def alive(pid: int) -> bool:
    """Does ``pid`` run (not gone, not a zombie nobody reaped yet)?"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rpartition(b")")[2].split()[0] not in (b"Z", b"X")
    except OSError:
        return False
