"""Real developer work inside the sandbox: default profile, no flags, both users.

Every test runs the real ``sandbox run`` (bubblewrap) as root and as the
unprivileged test user (see conftest.py) and checks the result on the host
afterwards, so a workflow that only *looks* fine inside cannot pass.

Git identity: inside the sandbox ``.git/config`` of a pre-existing repository
is read-only, so tests never write the identity there from inside.  The main
workflow writes ``user.name``/``user.email`` into ``$HOME/.gitconfig`` of the
fake HOME *before* the run (HOME is read-only but readable inside, so git must
still read its global config); other tests use ``git -c user.name=...`` or the
GIT_AUTHOR_* / GIT_COMMITTER_* environment, and each checks the author that
ends up in the commit.

Offline package installs: pip always gets ``--no-index`` and a null config
file (PIP_CONFIG_FILE=/dev/null) so no host pip.conf can add an index or
find-links; npm gets ``--offline`` with the update notifier, audit and fund
off, also for ``npm pack`` on the host.  Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import textwrap
from pathlib import Path

import pytest

PY = "/usr/bin/python3"  # the sbxtest user cannot run root's pyenv python

GIT_AUTHOR = {"GIT_AUTHOR_NAME": "Env Author", "GIT_AUTHOR_EMAIL": "env-author@example.invalid"}
GIT_COMMITTER = {"GIT_COMMITTER_NAME": "Env Committer",
                 "GIT_COMMITTER_EMAIL": "env-committer@example.invalid"}
NPM_OFFLINE = {
    "npm_config_offline": "true", "npm_config_update_notifier": "false",
    "npm_config_audit": "false", "npm_config_fund": "false",
}


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed on this host")
    return path


def _ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, (
        f"exit {r.returncode}\n--- stdout\n{r.stdout.decode(errors='replace')[-4000:]}"
        f"\n--- stderr\n{r.stderr.decode(errors='replace')[-4000:]}")
    return r.stdout.decode()


def _write(path: Path, text: str, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    if mode is not None:
        os.chmod(path, mode)
    return path


def _cache_dir(senv) -> Path:
    """Where the default profile puts this workspace's tool caches."""
    key = hashlib.sha256(os.path.realpath(senv.ws).encode()).hexdigest()[:16]
    return senv.home / ".cache" / "sandbox" / "workspaces" / key


def _host_git(senv, *args: str, cwd: Path | None = None) -> str:
    """git on the host, as the same user, to see what the sandbox left behind."""
    return _ok(senv.run(["git", *args], sandboxed=False, cwd=cwd or senv.ws))


# --------------------------------------------------------------------------- git


def test_git_workflow_in_workspace(senv):
    _need("git")
    # the identity comes from the (read-only inside) global config in HOME
    _write(senv.home / ".gitconfig", """\
        [user]
        \tname = Global Config User
        \temail = global@example.invalid
        [init]
        \tdefaultBranch = main
        """)
    script = """
        set -e
        git init -q .
        echo one > a.txt
        mkdir -p src/deep && echo code > src/deep/m.py
        git add a.txt src
        git commit -q -m first
        git branch feature
        git checkout -q feature
        echo two >> a.txt
        git commit -q -am second
        git checkout -q main
        git merge -q --ff-only feature
        # the same from a subdirectory of the repository
        cd src/deep
        echo more >> m.py
        git add m.py
        git commit -q -m third
        git status --porcelain
        echo "toplevel=$(git rev-parse --show-toplevel)"
        cd ../..
        git status --porcelain --branch
        git branch --list
        git log --format='%an|%ae|%s'
    """
    out = _ok(senv.sh(textwrap.dedent(script)))
    assert f"toplevel={senv.ws}" in out
    assert "## main" in out
    assert "* main" in out and "feature" in out
    log = [line for line in out.splitlines() if line.count("|") == 2]
    assert log == [f"Global Config User|global@example.invalid|{s}"
                   for s in ("third", "second", "first")]
    # the repository the sandbox wrote is real and intact on the host
    assert _host_git(senv, "log", "--format=%s").split() == ["third", "second", "first"]
    assert _host_git(senv, "status", "--porcelain") == ""
    _ok(senv.run(["git", "fsck", "--strict", "--no-progress"], sandboxed=False))


def _host_repo(senv, root: Path) -> None:
    """A repository made on the host (so the sandbox protects its .git)."""
    root.mkdir(parents=True, exist_ok=True)
    for args in (["init", "-q", "-b", "main", "."],
                 ["-c", "user.name=Host", "-c", "user.email=host@example.invalid",
                  "commit", "-q", "--allow-empty", "-m", "root"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True,
                       env=senv.environ())


def test_git_from_subdirectory_of_existing_repo(senv):
    """Workspace = a subdirectory two levels below the repository root."""
    _need("git")
    _host_repo(senv, senv.ws)
    deep = senv.ws / "pkg" / "mod"
    deep.mkdir(parents=True)
    (deep / "x.txt").write_text("x\n")
    # author from `git -c`, committer from the environment
    script = """
        set -e
        git status --porcelain
        git add x.txt
        git -c user.name='Dash C' -c user.email=dashc@example.invalid commit -q -m from-deep
        git branch topic
        git log --format='%an|%cn|%s' -2
        echo "prefix=$(git rev-parse --show-prefix)"
    """
    out = _ok(senv.sh(textwrap.dedent(script), cwd=deep, env=senv.environ(**GIT_COMMITTER)))
    assert "?? pkg/" in out  # porcelain paths are relative to the repo root
    assert "Dash C|Env Committer|from-deep" in out
    assert "prefix=pkg/mod/" in out
    assert _host_git(senv, "log", "--format=%an|%cn|%s", "-1") == "Dash C|Env Committer|from-deep\n"
    assert "topic" in _host_git(senv, "branch", "--list")


def test_git_identity_from_environment(senv):
    _need("git")
    out = _ok(senv.sh("git init -q . && git commit -q --allow-empty -m env-id && "
                      "git log --format='%an|%ae|%cn|%ce' -1",
                      env=senv.environ(**GIT_AUTHOR, **GIT_COMMITTER)))
    assert out == ("Env Author|env-author@example.invalid|"
                   "Env Committer|env-committer@example.invalid\n")


def test_git_workspace_below_repo_root(senv):
    """The repo root is the workspace's parent: commit works, hooks/config stay read-only."""
    _need("git")
    _host_repo(senv, senv.ws)
    sub = senv.ws / "sub"
    sub.mkdir()
    (sub / "f.txt").write_text("f\n")
    hooks = senv.ws / ".git" / "hooks"
    config_before = (senv.ws / ".git" / "config").read_bytes()
    script = """
        git -c user.name='Dash C' -c user.email=dashc@example.invalid add f.txt || exit 10
        git -c user.name='Dash C' -c user.email=dashc@example.invalid commit -q -m in-sub || exit 11
        git -c user.name='Dash C' -c user.email=dashc@example.invalid checkout -q -b work || exit 12
        git log --format='%an|%s' -1
        # the git dir is writable for git's data, not for code or config
        if git config --local user.name Evil 2>/dev/null; then echo CONFIG-WRITTEN; fi
        if (echo 'touch /tmp/pwned' > ../.git/hooks/post-commit) 2>/dev/null; then echo HOOK-WRITTEN; fi
        if (echo '[core]' >> ../.git/config) 2>/dev/null; then echo CONFIG-APPENDED; fi
        exit 0
    """
    out = _ok(senv.sh(textwrap.dedent(script), cwd=sub))
    assert "Dash C|in-sub" in out
    assert "WRITTEN" not in out and "APPENDED" not in out, out
    assert not (hooks / "post-commit").exists()
    assert (senv.ws / ".git" / "config").read_bytes() == config_before
    assert _host_git(senv, "log", "--format=%an|%s", "-1") == "Dash C|in-sub\n"
    assert _host_git(senv, "rev-parse", "--abbrev-ref", "HEAD") == "work\n"
    # the same writes succeed outside the sandbox: the checks above can fail
    probe = senv.run(["sh", "-c", "echo '# probe' >> .git/config"], sandboxed=False)
    assert probe.returncode == 0, probe.stderr


# ------------------------------------------------------------------ python, make


def test_python_script(senv):
    _write(senv.ws / "tool" / "main.py", """\
        import json, os, subprocess, sys, tempfile
        from helper import double
        with tempfile.NamedTemporaryFile("w", delete=False, suffix=".txt") as fh:
            fh.write("tmp-ok")
        out = {"double": double(int(sys.argv[1])), "tmp": fh.name,
               "tmpdir": tempfile.gettempdir(),
               "child": subprocess.run([sys.executable, "-c", "print(6*7)"],
                                       capture_output=True, text=True).stdout.strip()}
        with open("result.json", "w") as f:
            json.dump(out, f)
        print("script-done")
        """)
    _write(senv.ws / "tool" / "helper.py", "def double(x):\n    return 2 * x\n")
    out = _ok(senv.run([PY, "tool/main.py", "21"]))
    assert out == "script-done\n"
    result = json.loads((senv.ws / "result.json").read_text())
    assert result["double"] == 42 and result["child"] == "42"
    assert result["tmpdir"] == "/tmp" and result["tmp"].startswith("/tmp/")
    # the byte-code cache was written into the workspace
    assert list((senv.ws / "tool" / "__pycache__").glob("helper.*.pyc"))


def test_make_compiles_and_runs_c(senv):
    _need("make")
    _need("cc")
    _write(senv.ws / "hello.c", """\
        #include <stdio.h>
        int main(int argc, char **argv) {
            printf("hello from c, %d args\\n", argc);
            return 0;
        }
        """)
    _write(senv.ws / "Makefile",
           "hello: hello.c\n\t$(CC) -O1 -o $@ hello.c\n\n"
           "run: hello\n\t./hello a b\n\n"
           "clean:\n\trm -f hello\n\n.PHONY: run clean\n")
    out = _ok(senv.run(["make", "run"]))
    assert "hello from c, 3 args" in out
    binary = senv.ws / "hello"
    assert binary.is_file() and os.access(binary, os.X_OK)
    # incremental: a second make does not rebuild
    assert "is up to date" in _ok(senv.run(["make", "hello"]))
    _ok(senv.run(["make", "clean"]))
    assert not binary.exists()


# --------------------------------------------------------------------------- pip


def _setuptools_build(src: Path, dist: Path, *, sdist: bool) -> Path:
    """Build with the host's own setuptools (outside the sandbox)."""
    probe = subprocess.run([PY, "-c", "import setuptools, wheel"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"{PY} has no setuptools+wheel on the host to build the test package")
    hook = "build_sdist" if sdist else "build_wheel"
    r = subprocess.run([PY, "-c", f"import sys; from setuptools import build_meta as b; "
                        f"print(b.{hook}(sys.argv[1]))", str(dist)],
                       cwd=src, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    return dist / r.stdout.strip().splitlines()[-1]


def _setuptools_project(root: Path, name: str, value: str) -> Path:
    _write(root / "pyproject.toml", f"""\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{name}"
        version = "1.0"
        """)
    _write(root / name / "__init__.py", f"VALUE = {value!r}\n")
    return root


# A PEP 517 backend that ships inside the sdist and needs only the standard
# library, so pip can build the sdist with full build isolation and --no-index.
_INTREE_BACKEND = '''\
import base64, hashlib, os, zipfile

NAME, VERSION = "tinyback", "1.0"
DIST = f"{NAME}-{VERSION}.dist-info"
META = f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n"
WHEEL = "Wheel-Version: 1.0\\nGenerator: tinyback\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    os.makedirs(os.path.join(metadata_directory, DIST))
    for fname, text in (("METADATA", META), ("WHEEL", WHEEL)):
        with open(os.path.join(metadata_directory, DIST, fname), "w") as fh:
            fh.write(text)
    return DIST


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = {f"{NAME}/__init__.py": open(os.path.join(NAME, "__init__.py"), "rb").read(),
             f"{DIST}/METADATA": META.encode(), f"{DIST}/WHEEL": WHEEL.encode()}
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{DIST}/RECORD,,")
    files[f"{DIST}/RECORD"] = ("\\n".join(record) + "\\n").encode()
    name = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return name
'''


def _intree_sdist(dist: Path) -> Path:
    members = {
        "pyproject.toml": ('[build-system]\nrequires = []\nbuild-backend = "tinyback_backend"\n'
                           'backend-path = ["."]\n'),
        "tinyback_backend.py": _INTREE_BACKEND,
        "tinyback/__init__.py": "VALUE = 'intree-sdist-ok'\n",
        "PKG-INFO": "Metadata-Version: 2.1\nName: tinyback\nVersion: 1.0\n",
    }
    out = dist / "tinyback-1.0.tar.gz"
    with tarfile.open(out, "w:gz") as tf:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(f"tinyback-1.0/{name}")
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
    return out


def test_venv_offline_pip_install_wheel_and_sdist(senv):
    dist = senv.ws / "dist"
    dist.mkdir()
    src = senv.base / "src"  # sources live outside the workspace
    whl = _setuptools_build(_setuptools_project(src / "tinywhl", "tinywhl", "wheel-ok"),
                            dist, sdist=False)
    sdist = _setuptools_build(_setuptools_project(src / "tinysd", "tinysd", "sdist-ok"),
                              dist, sdist=True)
    intree = _intree_sdist(dist)
    pip = ".venv/bin/python -m pip --disable-pip-version-check --no-input"
    script = f"""
        set -e
        {PY} -m venv .venv
        echo "cache=$({pip} cache dir)"
        echo "env=$PIP_CACHE_DIR"
        {pip} install --no-index dist/{whl.name}
        # an sdist: pip builds it in an isolated build env, offline
        {pip} install --no-index dist/{intree.name}
        # a setuptools sdist: the venv's setuptools cannot build wheels without
        # the 'wheel' package, so build it with --no-build-isolation by the
        # system pip (setuptools+wheel from the read-only host) into the workspace
        {PY} -m pip --disable-pip-version-check --no-input install --no-index \\
            --no-build-isolation --target site-extra dist/{sdist.name}
        PYTHONPATH=site-extra .venv/bin/python -c '
import sys, tinywhl, tinyback, tinysd
print("values", tinywhl.VALUE, tinyback.VALUE, tinysd.VALUE)
print("prefix", sys.prefix)'
        {pip} list --format=freeze
    """
    env = senv.environ(PIP_CONFIG_FILE="/dev/null")
    out = _ok(senv.sh(textwrap.dedent(script), env=env, timeout=300))
    assert "values wheel-ok intree-sdist-ok sdist-ok" in out
    assert f"prefix {senv.ws}/.venv" in out
    assert "tinywhl==1.0" in out and "tinyback==1.0" in out
    cache = _cache_dir(senv) / "pip"
    assert f"cache={cache}" in out
    assert f"env={cache}" in out
    # pip stored the wheels it built from the sdists in the per-workspace cache
    built = sorted(p.name for p in cache.rglob("*.whl"))
    assert "tinysd-1.0-py3-none-any.whl" in built, built
    assert not (senv.home / ".cache" / "pip").exists()
    # the venv works on the host afterwards, too
    assert _ok(senv.run([str(senv.ws / ".venv/bin/python"), "-c",
                         "import tinywhl; print(tinywhl.VALUE)"], sandboxed=False)) == "wheel-ok\n"


# --------------------------------------------------------------------------- npm


def test_npm_offline_install_local_tarball(senv):
    npm = shutil.which("npm")
    node = shutil.which("node")
    if npm is None or node is None:
        pytest.skip("npm/node are not installed on this host")
    pkg = senv.base / "tinynpm"
    _write(pkg / "package.json", json.dumps({"name": "tinynpm", "version": "1.0.0",
                                             "main": "index.js"}))
    _write(pkg / "index.js", "module.exports = (x) => `npm-ok:${x}`;\n")
    host_cache = senv.base / "host-npm-cache"
    packed = subprocess.run([npm, "pack", "--pack-destination", str(senv.ws)], cwd=pkg,
                            capture_output=True, text=True, timeout=120,
                            env=senv.environ(npm_config_cache=str(host_cache), **NPM_OFFLINE))
    assert packed.returncode == 0, packed.stderr
    tarball = senv.ws / "tinynpm-1.0.0.tgz"
    assert tarball.is_file()
    script = """
        set -e
        npm install ./tinynpm-1.0.0.tgz --offline --no-audit --no-fund
        node -e 'console.log(require("tinynpm")(7))'
        echo "cache=$npm_config_cache"
    """
    out = _ok(senv.sh(textwrap.dedent(script), env=senv.environ(**NPM_OFFLINE), timeout=180))
    assert "npm-ok:7" in out
    cache = _cache_dir(senv) / "npm"
    assert f"cache={cache}" in out
    assert (senv.ws / "node_modules" / "tinynpm" / "index.js").is_file()
    manifest = json.loads((senv.ws / "package.json").read_text())
    assert "tinynpm" in manifest.get("dependencies", {})
    assert any(cache.iterdir()), "npm wrote nothing to the per-workspace cache"
    assert not (senv.home / ".npm").exists()


# ------------------------------------------------------------- process basics


def test_mktemp_and_tmpdir(senv):
    script = """
        set -e
        echo "TMPDIR=$TMPDIR"
        f=$(mktemp)
        d=$(mktemp -d)
        echo data > "$f"
        echo more > "$d/inner"
        cat "$f" "$d/inner"
        echo "file=$f"
        echo "dir=$d"
        p=$(mktemp -p /var/tmp) && echo var > "$p" && echo "var=$p"
        s=$(mktemp -p /dev/shm) && echo "shm=$s"
    """
    out = _ok(senv.sh(textwrap.dedent(script)))
    lines = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert lines["TMPDIR"] == "/tmp"
    assert "data\nmore\n" in out
    for key in ("file", "dir"):
        assert lines[key].startswith("/tmp/tmp.")
    # private scratch: nothing the command made is left in the host's /tmp
    for key in ("file", "dir", "var", "shm"):
        assert not os.path.exists(lines[key]), f"{lines[key]} leaked to the host"


@pytest.mark.parametrize("code", [0, 1, 3, 255])
def test_exit_codes(senv, code):
    r = senv.sh(f"exit {code}")
    assert r.returncode == code, r.stderr


def test_killed_by_signal_is_128_plus_n(senv):
    report = senv.base / "kill-report.json"
    r = senv.sh("kill -TERM $$; sleep 5", args=["--report", str(report)], timeout=30)
    assert r.returncode == 143, r.stderr
    doc = json.loads(report.read_text())
    assert doc["exit_status"] == 143 and doc["signal"] == "SIGTERM"


def test_stdin_is_piped_through(senv):
    data = os.urandom(1 << 20) + "tail ✓\n".encode()
    r = senv.run(["cat"], input=data)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data


def test_large_stdout(senv):
    size = 20 * 1024 * 1024
    unit = b"0123456789abcdefghijklmnopqrstuvwxyz-sandbox\n"
    expected = (unit * (size // len(unit) + 1))[:size]
    r = senv.run([PY, "-c", f"import sys; u={unit!r}; n={size}; "
                  "sys.stdout.buffer.write((u * (n // len(u) + 1))[:n])"], timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(r.stdout) == size
    assert hashlib.sha256(r.stdout).hexdigest() == hashlib.sha256(expected).hexdigest()


def test_unicode_arguments_round_trip(senv):
    args = ["héllo ✓ 日本", "emoji 🐍 tab\there", "", "-n", "--", "a'b\"c $HOME `x`",
            "line1\nline2"]
    r = senv.run([PY, "-c", "import os, sys; sys.stdout.buffer.write("
                  "b'\\0'.join(os.fsencode(a) for a in sys.argv[1:]))", *args])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split(b"\0") == [a.encode() for a in args]


def test_non_utf8_argument_round_trips(senv):
    raw = b"caf\xe9-\xff\xfe"  # latin-1, not valid UTF-8
    r = senv.run(["printf", "%s", raw])
    assert r.returncode == 0, r.stderr
    assert r.stdout == raw


def test_command_not_found_is_127(senv):
    r = senv.run(["no-such-command-7f3a9"])
    assert r.returncode == 127
    assert b"no-such-command-7f3a9" in r.stderr
    # the same inside a shell in the sandbox
    assert senv.sh("no-such-command-7f3a9").returncode == 127


def test_non_executable_file_is_126(senv):
    script = _write(senv.ws / "script.sh", "#!/bin/sh\necho ran\n", mode=0o644)
    r = senv.run(["./script.sh"])
    assert r.returncode == 126, (r.returncode, r.stderr)
    assert b"ran" not in r.stdout
    assert senv.sh("./script.sh").returncode == 126
    os.chmod(script, 0o755)  # proves the file itself is fine once executable
    assert _ok(senv.run(["./script.sh"])) == "ran\n"


def test_report_file(senv):
    report = senv.base / "report.json"
    r = senv.sh("echo out; exit 3", args=["--report", str(report)])
    assert r.returncode == 3
    assert r.stdout == b"out\n"  # the report never goes to the command's stdout
    doc = json.loads(report.read_text())
    assert doc["command"] == ["sh", "-c", "echo out; exit 3"]
    assert doc["workspace"] == os.path.realpath(senv.ws)
    assert doc["exit_status"] == 3
    assert doc["profile"]["name"] == "default"
    digest = doc["profile"]["sha256"]
    assert isinstance(digest, str) and len(digest) == 64 and int(digest, 16) >= 0
    # the digest is stable for the same policy
    report2 = senv.base / "report2.json"
    _ok(senv.run(["true"], args=["--report", str(report2)]))
    assert json.loads(report2.read_text())["profile"]["sha256"] == digest
