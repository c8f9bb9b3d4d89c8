"""Second, independent red-team pass over the egress bridge, the proxy's lifetime
and the sandbox's own installation (selfguard).

Tests under "Findings" reproduce weaknesses this review found, since fixed
(FINDING n); the others show a protection that holds.

Network safety: the only servers are the sandbox's own proxy (reached from
inside on 127.0.0.1:3128 in the sandbox's namespace); every name a request uses
is pinned with ``network.hosts`` to 127.0.0.1 or refused before resolution.
Every wait is bounded in count and time; only processes this file started (the
wrapper, and what it started) are ever signalled, by pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import uuid
from pathlib import Path

import pytest
from egress_support import children as _kids

from conftest import sandbox_exe

PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bwrap is not installed")

# sandbox's own checkout (the package's parent) and the venv running the tests
import sandbox as _pkg  # noqa: E402

PKG_DIR = Path(_pkg.__file__).resolve().parent
PKG_PARENT = PKG_DIR.parent
VENV_PY = str(Path(sandbox_exe()).parent / "python")
REAL_SITE = sysconfig.get_paths()["purelib"]


# -- helpers (this file's own) --------------------------------------------------------------

def profile_file(senv, name: str = "rt2", extra: str = "") -> Path:
    """A proxy-mode profile whose only name is pinned to loopback."""
    path = senv.base / f"{name}.toml"
    path.write_text('extends = "default"\n'
                    f"{extra}\n"
                    '[network]\nmode = "proxy"\nhosts = { "a.test" = "127.0.0.1" }\n\n'
                    '[[network.allow]]\nhost = "a.test"\nports = [9]\n')
    return path


def wrapper(senv, command: list[str], args: list[str], env: dict[str, str] | None = None,
            entry: list[str] | None = None, cwd: Path | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """``sandbox run ARGS -- COMMAND`` through ``entry`` (default: the console script)."""
    senv.finish()
    entry = entry or [sandbox_exe()]
    return subprocess.run(senv.who.prefix() + entry + ["run", *args, "--", *command],
                          cwd=cwd or senv.ws, env=env or senv.environ(), capture_output=True,
                          timeout=timeout)


def planted(marker: Path) -> str:
    """Module source that leaves proof it ran (pid, uid, network namespace), then
    fails like a missing optional module would."""
    return ("import os\n"
            f"with open({str(marker)!r}, 'w') as fh:\n"
            "    fh.write('pid=%d uid=%d netns=%s' % (os.getpid(), os.getuid(),"
            " os.readlink('/proc/self/ns/net')))\n"
            "raise ImportError('planted by the sandboxed command')\n")


def descendants(pid: int) -> list[int]:
    seen: list[int] = []
    todo = [pid]
    for _ in range(10000):  # bounded walk
        if not todo:
            break
        for kid in _kids(todo.pop()):
            if kid not in seen:
                seen.append(kid)
                todo.append(kid)
    return seen


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that is not us counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return "?"


def with_token(token: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                if token.encode() in fh.read():
                    found.append(int(name))
        except OSError:
            pass
    return [p for p in found if alive(p)]


# =========================================================================================
# Protections that hold
# =========================================================================================

FD_SCRIPT = r'''
import json, os, stat
res = {}
for name in os.listdir("/proc/self/fd"):
    try:
        res[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    except FileNotFoundError:
        pass  # the descriptor listdir itself used, closed by now
status = {l.split(":")[0]: l.split(":", 1)[1].strip() for l in open("/proc/self/status")}
print(json.dumps({"fds": res, "nnp": status.get("NoNewPrivs"), "seccomp": status.get("Seccomp"),
                  "cap": status.get("CapEff"),
                  "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}))
'''


@pytest.mark.parametrize("mode", ["direct", "bwrap"])
def test_only_stdio_reaches_the_command_in_either_bridge_mode(senv, mode):
    """Neither the bridge's channel, the listener, the status pipe, the seccomp
    file nor the events memfd leaks into the command, in either bridge mode, and
    the outer bwrap / launcher are not visible in its pid namespace."""
    (senv.ws / "fds.py").write_text(FD_SCRIPT)
    done = wrapper(senv, [PY, "fds.py"], ["--profile", str(profile_file(senv))],
                   env=senv.environ(SANDBOX_NET_BRIDGE=mode))
    assert done.returncode == 0, done.stderr
    res = json.loads(done.stdout.decode().splitlines()[-1])
    assert sorted(res["fds"]) == ["0", "1", "2"], res["fds"]
    for target in res["fds"].values():
        assert not target.startswith(("socket:", "anon_inode:", "/memfd")), res["fds"]
    assert res["nnp"] == "1" and res["seccomp"] == "2" and res["cap"] == "0" * 16, res
    # bwrap's init and the command (and its python): nothing of the outer layers
    assert max(res["pids"]) < 10, res["pids"]


SLEEPER = r'''
import os, socket, sys, time
if sys.argv[2] == "serving":  # the proxy has imported h11 and runs client threads
    s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    s.sendall(b"CONNECT b.test:443 HTTP/1.1\r\nHost: b.test:443\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 403")
    held = socket.create_connection(("127.0.0.1", 3128), timeout=10)  # an open client
open("ready", "w").close()
end = time.monotonic() + 90
while time.monotonic() < end:
    time.sleep(0.2)
'''


@pytest.mark.parametrize("proxy_state", ["idle", "serving"])
@pytest.mark.parametrize("mode", ["direct", "bwrap"])
def test_sigkill_of_the_wrapper_leaves_nothing_running(senv, mode, proxy_state):
    """SIGKILL the wrapper mid-run: bwrap (outer and real), the command and the
    host-side proxy all go (--die-with-parent chain + the proxy's PDEATHSIG)."""
    token = f"rt2tok{uuid.uuid4().hex[:12]}"
    (senv.ws / "sleeper.py").write_text(SLEEPER)
    profile = profile_file(senv)
    senv.finish()
    proc = subprocess.Popen(senv.who.prefix() + [sandbox_exe(), "run", "--profile", str(profile),
                                                 "--", PY, "sleeper.py", token, proxy_state],
                            cwd=senv.ws, env=senv.environ(SANDBOX_NET_BRIDGE=mode),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tree: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not (senv.ws / "ready").exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                out, err = proc.communicate(timeout=30)
                pytest.fail(f"the command never started: {out!r} {err!r}")
            time.sleep(0.05)
        tree = descendants(proc.pid)
        names = [comm(p) for p in tree]
        assert "bwrap" in names and with_token(token), (tree, names)
        # the proxy is the wrapper's direct child that is not bwrap
        assert any(comm(k) != "bwrap" for k in _kids(proc.pid)), names
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (any(alive(p) for p in tree) or with_token(token)):
            time.sleep(0.1)
        survivors = [(p, comm(p)) for p in tree if alive(p)]
        assert not survivors and not with_token(token), survivors
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in tree + with_token(token):  # only what our wrapper started
            if alive(p):
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass


ESCAPES = r'''
import json, socket
reqs = [
    b"GET http://x\x1b]0;PWNED\x07.test/\x1b[2J HTTP/1.1\r\nHost: x.test\r\n\r\n",
    b"CONNECT evil\x1b[31m.test\x9b:443 HTTP/1.1\r\n\r\n",
    b"GET\x1b[31m http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b"GET http://a.test/\xc2\x9b31m HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b"CONNECT \xe2\x80\xaeevil.test:443 HTTP/1.1\r\n\r\n",
    b"GET http://a.test:9/ok HTTP/1.1\r\nHost: a.test:9\x9b31m\r\n\r\n",
    b"GET http://b.test/%1b%5b2J HTTP/1.1\r\nHost: b.test\r\nX-A: \x1b[2J\r\n\r\n",
    b"GET http://b.test/\x7f HTTP/1.1\r\nHost: b.test\r\n\r\n",
    b"CONNECT xn--e1afmkfd.test:443 HTTP/1.1\r\n\r\n",
]
out = []
for r in reqs:
    s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    s.sendall(r)
    out.append(s.recv(100)[:12].decode("latin-1"))
    s.close()
print(json.dumps(out))
'''


def test_refusal_summary_and_report_carry_no_control_characters(senv):
    """The stderr summary and the --report JSON echo what the command asked for:
    no escape sequence, C1 control, DEL or bidi override gets through."""
    (senv.ws / "esc.py").write_text(ESCAPES)
    report = senv.base / "report.json"
    done = wrapper(senv, [PY, "esc.py"], ["--profile", str(profile_file(senv)),
                                          "--report", str(report)])
    assert done.returncode == 0, done.stderr
    statuses = json.loads(done.stdout.decode().splitlines()[-1])
    assert all(s.startswith("HTTP/1.1 4") for s in statuses), statuses
    err = done.stderr.decode("utf-8", "replace")
    assert "sandbox: " in err, err
    for ch in err:
        assert ch == "\n" or " " <= ch <= "~", repr(err)
    doc = json.loads(report.read_text())
    assert doc["network"]["blocked_count"] == len(statuses), doc["network"]

    def walk(value):
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            assert all(" " <= c <= "~" for c in value), repr(value)
    walk(doc["network"])


def test_hostile_workspace_name_cannot_inject_into_the_launcher(senv):
    """bwrap mode passes the real bwrap's argv through `python -I -S -c LAUNCHER`:
    a workspace named like options or shell code stays one argument."""
    ws = senv.ws / "-- --bind $(touch PWN) ;x'\"`touch PWN2` -c"
    ws.mkdir()
    done = wrapper(senv, ["sh", "-c", "pwd; touch ok"], ["--profile", str(profile_file(senv))],
                   env=senv.environ(SANDBOX_NET_BRIDGE="bwrap"), cwd=ws)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == str(ws)
    assert (ws / "ok").exists()
    assert not list(senv.base.rglob("PWN*")) and not Path("PWN").exists()


def _venv_with_sandbox(where: Path, extra_pth: list[str] = ()) -> Path:
    """A venv (without pip) that imports sandbox from this checkout, plus its deps."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True,
                   capture_output=True, timeout=120)
    site = next((where / "lib").glob("python3*/site-packages"))
    from conftest import link_site_packages

    link_site_packages(site)
    (site / "zz_sandbox.pth").write_text(f"{PKG_PARENT}\n" + "".join(
        f"{p}\n" for p in extra_pth))
    script = where / "bin" / "sandbox"
    script.write_text(f"#!{where}/bin/python\nimport sys\nfrom sandbox.__main__ import main\n"
                      "sys.exit(main())\n")
    script.chmod(0o755)
    return site


@pytest.mark.parametrize("target", ["site_packages", "venv_bin", "site_packages_parent_link",
                                    "allow_write_site", "allow_write_symlink_to_pkg",
                                    "allow_write_stdlib", "workspace_is_pkg_parent_link"])
def test_own_installation_is_never_a_writable_root(senv, target):
    """Workspaces and --allow-write paths that are (or contain, or lead through a
    symlink to) the sandbox's own installation are refused before anything runs."""
    venv = senv.ws / "proj" / ".venv"
    venv.parent.mkdir()
    site = _venv_with_sandbox(venv)
    entry = [str(venv / "bin" / "sandbox")]
    args = ["--profile", str(profile_file(senv))]
    cwd = senv.ws
    if target == "site_packages":
        cwd = site
    elif target == "venv_bin":
        cwd = venv / "bin"
    elif target == "site_packages_parent_link":
        # the venv reached through a symlink inside the workspace
        (senv.ws / "proj" / "venvlink").symlink_to(venv)
        args += ["--workspace", str(senv.ws / "proj" / "venvlink" / site.relative_to(venv))]
    elif target == "allow_write_site":
        entry = [sandbox_exe()]
        args += ["--allow-write", REAL_SITE]
        cwd = senv.ws / "proj"
    elif target == "allow_write_symlink_to_pkg":
        entry = [sandbox_exe()]
        (senv.base / "pkglink").symlink_to(PKG_DIR)
        args += ["--allow-write", str(senv.base / "pkglink")]
        cwd = senv.ws / "proj"
    elif target == "allow_write_stdlib":
        entry = [sandbox_exe()]
        args += ["--allow-write", os.path.dirname(os.__file__)]
        cwd = senv.ws / "proj"
    elif target == "workspace_is_pkg_parent_link":
        entry = [sandbox_exe()]
        (senv.base / "srclink").symlink_to(PKG_PARENT)
        args += ["--workspace", str(senv.base / "srclink")]
        cwd = senv.ws / "proj"
    marker = senv.base / "ran"
    done = wrapper(senv, ["sh", "-c", f"touch {marker}"], args, entry=entry, cwd=cwd)
    assert done.returncode != 0, done.stderr
    assert not marker.exists()
    err = done.stderr.decode()
    assert "installation" in err or "system directory" in err or "home directory" in err, err


@pytest.mark.parametrize("layout", ["venv_in_workspace", "workspace_is_the_venv"])
def test_venv_in_workspace_is_read_only_including_pth_and_pycache(senv, layout):
    """With sandbox installed in a venv inside the workspace (or a venv that is the
    workspace), the command cannot add a .pth, a sitecustomize, a __pycache__
    entry or a sourceless .pyc on that venv's import path, nor touch pyvenv.cfg
    or the interpreter's directory, nor rename the venv away."""
    venv = senv.ws / ".venv"
    site = _venv_with_sandbox(venv)
    cwd = senv.ws if layout == "venv_in_workspace" else venv
    rel_site = os.path.relpath(site, cwd)
    rel_venv = os.path.relpath(venv, cwd)
    attempts = {
        "pth": f"{rel_site}/zzz_evil.pth",
        "sitecustomize": f"{rel_site}/sitecustomize.py",
        "pycache": f"{rel_site}/__pycache__/evil.cpython-311.pyc",
        "sourceless": f"{rel_site}/h11.pyc",
        "cfg": f"{rel_venv}/pyvenv.cfg",
        "bin_cfg": f"{rel_venv}/bin/pyvenv.cfg",
        "bin": f"{rel_venv}/bin/python3.evil",
    }
    script = "; ".join(f"(echo x >> {p}) 2>/dev/null && echo W:{k}" for k, p in attempts.items())
    script += (f"; mv {rel_venv}/lib {rel_venv}/lib.old 2>/dev/null && echo W:rename_lib"
               f"; mv {rel_venv}/bin {rel_venv}/bin.old 2>/dev/null && echo W:rename_bin; true")
    done = wrapper(senv, ["sh", "-c", script], ["--profile", str(profile_file(senv))],
                   entry=[str(venv / "bin" / "sandbox")], cwd=cwd)
    if layout == "workspace_is_the_venv":  # the installation itself is never a writable root
        assert done.returncode == 125 and b"installation" in done.stderr, done.stderr
        return
    assert done.returncode == 0, done.stderr
    assert "W:" not in done.stdout.decode(), done.stdout


# =========================================================================================
# Findings (all fixed since; the tests keep them fixed)
# =========================================================================================

# FINDING 1 (critical): selfguard.harden_sys_path only *moves* writable entries (the cwd of
# `python -m sandbox`, PYTHONPATH) to the end of sys.path, and an editable install of the
# project being worked on puts the workspace on sys.path through a .pth file.  The
# wrapper's planning imports modules that are *meant* to be missing (copy.py tries
# `org.python.core`, subprocess `_winapi`, and `nt`), and every failed import walks the
# whole of sys.path: a module the command leaves in the workspace under one of those names
# runs on the host, unconfined, at the next run (or `sandbox explain`).  With PYTHONPATH a
# `sitecustomize.py` runs even before any sandbox code.
# (fixed) FINDING 1: failed optional imports (org, _winapi, nt) and sitecustomize are found in workspace entries of sys.path: host code execution on the next run
@pytest.mark.parametrize("vector", ["python_m_cwd", "pythonpath", "pythonpath_sitecustomize",
                                    "editable_project_pth"])
def test_no_host_code_from_failed_imports_in_writable_sys_path_entries(senv, vector):
    marker = senv.base / f"escaped-{vector}"
    name = "sitecustomize" if vector == "pythonpath_sitecustomize" else "org"
    env = senv.environ()
    entry = [sandbox_exe()]
    if vector == "python_m_cwd":
        entry = [VENV_PY, "-m", "sandbox"]
    elif vector.startswith("pythonpath"):
        env = senv.environ(PYTHONPATH=str(senv.ws))
    else:  # `pip install -e .` of the project in the venv that also has sandbox
        venv = senv.base / "venv"
        _venv_with_sandbox(venv, extra_pth=[str(senv.ws)])
        entry = [str(venv / "bin" / "sandbox")]
    (senv.base / "payload.txt").write_text(planted(marker))
    profile = profile_file(senv)
    # run 1: the sandboxed command plants the module (and cannot write the marker itself)
    first = wrapper(senv, ["sh", "-c", f"cat {senv.base}/payload.txt > {name}.py; "
                                       f"touch {marker} 2>/dev/null; true"],
                    ["--profile", str(profile)], env=env, entry=entry)
    # protected either way: the sandbox refuses to run in this setup (nothing was planted),
    # or it ran and the module it planted is never imported on the host
    assert first.returncode == 0 or (first.returncode == 125 and b"usage error" in first.stderr), \
        first.stderr
    assert (senv.ws / f"{name}.py").exists() == (first.returncode == 0) and not marker.exists()
    # run 2: any later run in this workspace
    wrapper(senv, ["true"], ["--profile", str(profile)], env=env, entry=entry)
    assert not marker.exists(), marker.read_text()


# FINDING 2 (high): `python -m sandbox` from the workspace (the invocation the first pass
# hardened) imports the package `sandbox` from the current directory before any sandbox
# code can run: a `sandbox/` package (or a sourceless `sandbox.pyc`) left by the command
# replaces the whole sandbox at the next run, unconfined.  Neither selfguard nor the
# persistence audit looks for it.
# (fixed) FINDING 2: a sandbox/ package planted in the workspace is what `python -m sandbox` runs next time
def test_python_m_sandbox_does_not_run_a_planted_package(senv):
    marker = senv.base / "escaped-pkg"
    (senv.base / "payload.txt").write_text(planted(marker).replace("raise ImportError(",
                                                                    "raise SystemExit("))
    entry = [VENV_PY, "-m", "sandbox"]
    profile = profile_file(senv)
    first = wrapper(senv, ["sh", "-c", f"mkdir -p sandbox && cat {senv.base}/payload.txt > "
                                       "sandbox/__init__.py && : > sandbox/__main__.py"],
                    ["--profile", str(profile)], entry=entry)
    # refused: `python -m sandbox` from a directory the command may write
    assert first.returncode == 125 and b"python -m sandbox" in first.stderr, first.stderr
    assert not (senv.ws / "sandbox").exists()
    wrapper(senv, ["true"], ["--profile", str(profile)], entry=entry)
    assert not marker.exists(), marker.read_text()


# FINDING 3 (medium): with an interpreter that has the user site enabled (sandbox installed
# system-wide, e.g. by a distribution package, rather than in a venv), the user site-packages
# directory is on the wrapper's import path but not in selfguard.install_paths when it does
# not exist yet (or holds nothing sandbox loaded).  `--allow-write ~/.local` (what
# `pip install --user` inside the sandbox needs) is accepted, and a usercustomize.py or .pth
# the command creates there runs on the host at every later run.
# (fixed) FINDING 3: user site-packages is not protected; usercustomize/.pth planted there runs on the host
def test_user_site_packages_is_protected(senv):
    probe = subprocess.run([PY, "-c", "import site, sys; print(int(site.ENABLE_USER_SITE), "
                                      "sys.prefix != sys.base_prefix, "
                                      "'python%d.%d' % sys.version_info[:2])"],
                           capture_output=True, text=True, timeout=60,
                           env={"HOME": str(senv.home), "PATH": os.environ.get("PATH", "")})
    if probe.stdout.split()[:2] != ["1", "False"]:
        pytest.skip(f"{PY} has no user site: {probe.stdout!r}")
    ver = probe.stdout.split()[2]
    local = senv.home / ".local"
    local.mkdir()
    marker = senv.base / "escaped-usersite"
    (senv.base / "payload.txt").write_text(planted(marker).replace("raise ImportError(", "("))
    # the system interpreter, running this checkout (and its deps) from PYTHONPATH
    entry = [PY, "-c", "import sys; sys.argv = ['sandbox'] + sys.argv[1:]; "
                       "from sandbox.__main__ import main; main()"]
    env = senv.environ(PYTHONPATH=f"{PKG_PARENT}:{REAL_SITE}")
    profile = profile_file(senv)
    first = wrapper(senv, ["sh", "-c", f"d=$HOME/.local/lib/{ver}/site-packages; mkdir -p $d && "
                                       f"cat {senv.base}/payload.txt > $d/usercustomize.py"],
                    ["--profile", str(profile), "--allow-write", str(local)], env=env,
                    entry=entry)
    # refused: the writable ~/.local holds the user site, where Python looks for code
    # at start-up (this harness's PYTHONPATH is refused too, for the same reason)
    assert first.returncode == 125 and b"usage error" in first.stderr, first.stderr
    wrapper(senv, ["true"], ["--profile", str(profile)], env=env, entry=entry)
    assert not marker.exists(), marker.read_text()


# FINDING 4 (low): with PYTHONPYCACHEPREFIX (sys.pycache_prefix) inside a writable root,
# the wrapper reads the bytecode of its own modules from there.  A .pyc only has to carry
# the source's mtime and size to be trusted, so the command swaps sandbox.report (imported
# on every run) for its own code.  install_paths does not include sys.pycache_prefix.
# (fixed) FINDING 4: sys.pycache_prefix inside a writable root lets the command replace the wrapper's bytecode
def test_pycache_prefix_is_not_writable_by_the_command(senv):
    import importlib._bootstrap_external as bootstrap

    from sandbox import report

    prefix = senv.ws / ".pycache"
    src = os.path.realpath(report.__file__)
    st = os.stat(src)
    marker = senv.base / "escaped-pyc"
    code = compile(planted(marker).replace("raise ImportError(", "(")
                   + f"exec(compile(open({src!r}).read(), {src!r}, 'exec'))\n", src, "exec")
    (senv.base / "evil.pyc").write_bytes(
        bytes(bootstrap._code_to_timestamp_pyc(code, int(st.st_mtime), st.st_size)))
    dest = prefix / os.path.dirname(src).lstrip("/")
    cached = dest / f"report.{sys.implementation.cache_tag}.pyc"
    env = senv.environ(PYTHONPYCACHEPREFIX=str(prefix))
    profile = profile_file(senv)
    first = wrapper(senv, ["sh", "-c", f"mkdir -p '{dest}' && cp {senv.base}/evil.pyc '{cached}'"],
                    ["--profile", str(profile)], env=env)
    # the bytecode cache is read-only inside (it is part of what the sandbox loads)
    assert first.returncode == 1 and b"Read-only file system" in first.stderr, first.stderr
    wrapper(senv, ["true"], ["--profile", str(profile)], env=env)
    assert not marker.exists(), marker.read_text()
