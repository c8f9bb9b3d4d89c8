"""``sandbox cache list`` and ``sandbox cache clean``: the per-workspace tool caches."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import sandbox_exe


def cache(senv, *args: str, cwd=None) -> subprocess.CompletedProcess:
    senv.finish()
    return subprocess.run(senv.who.prefix() + [sandbox_exe(), "cache", *args],
                          cwd=cwd or senv.ws, env=senv.environ(), capture_output=True, text=True,
                          timeout=60)


def cache_dirs(senv) -> list[str]:
    root = senv.home / ".cache" / "sandbox" / "workspaces"
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def test_list_shows_each_workspace_and_its_size(senv):
    assert "no tool caches" in cache(senv, "list").stdout
    r = senv.sh('head -c 300000 /dev/zero > "$PIP_CACHE_DIR/big"')
    assert r.returncode == 0, r.stderr
    listed = cache(senv, "list")
    assert listed.returncode == 0, listed.stderr
    first = listed.stdout.splitlines()[0]
    assert first.endswith(f"  {senv.ws}")
    size, unit = first.split()[:2]
    assert unit == "KiB" and float(size) >= 290
    assert "total, 1 cache(s)" in listed.stdout.splitlines()[-1]


def test_clean_removes_this_workspace_cache_and_the_next_run_starts_fresh(senv):
    other = senv.base / "other"
    other.mkdir()
    assert senv.sh('echo x > "$PIP_CACHE_DIR/old"').returncode == 0
    assert senv.sh('echo y > "$PIP_CACHE_DIR/other"', cwd=other).returncode == 0
    assert len(cache_dirs(senv)) == 2
    r = cache(senv, "clean")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("removed ") and r.stdout.strip().endswith(str(senv.ws))
    assert len(cache_dirs(senv)) == 1  # the other workspace's is still there
    again = senv.sh('ls -A "$PIP_CACHE_DIR"; echo z > "$PIP_CACHE_DIR/new" && echo ok')
    assert again.returncode == 0, again.stderr
    assert again.stdout == b"ok\n"
    assert "no tool cache for" in cache(senv, "clean", "-w", str(senv.base / "never")).stdout


def test_clean_removes_read_only_trees_and_never_follows_links(senv):
    """Go's module cache is read-only; a link the command left must not lead the clean out."""
    victim = senv.base / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep\n")
    script = ('mkdir -p "$GOMODCACHE/m/d" && echo f > "$GOMODCACHE/m/d/f" && '
              f'ln -s {victim} "$GOMODCACHE/link" && ln -s {victim}/precious "$GOMODCACHE/flink" && '
              'chmod -R a-w "$GOMODCACHE/m"')
    r = senv.sh(script)
    assert r.returncode == 0, r.stderr
    cleaned = cache(senv, "clean", "--all")
    assert cleaned.returncode == 0, cleaned.stderr
    assert cache_dirs(senv) == []
    assert (victim / "precious").read_text() == "keep\n"


def test_clean_a_workspace_that_is_gone(senv):
    gone = senv.base / "gone"
    gone.mkdir()
    assert senv.sh("true", cwd=gone).returncode == 0
    gone.rmdir()
    listed = cache(senv, "list")
    assert f"{gone}  (gone)" in listed.stdout
    r = cache(senv, "clean", "--workspace", str(gone))
    assert r.returncode == 0, r.stderr
    assert str(gone) not in cache(senv, "list").stdout


def test_all_and_workspace_exclude_each_other(senv):
    r = cache(senv, "clean", "--all", "-w", str(senv.ws))
    assert r.returncode == 125
    assert r.stderr.strip() == "sandbox: usage error: --all and --workspace exclude each other"


@pytest.mark.parametrize("argv", [["cache"], ["cache", "list"], ["cache", "clean"]])
def test_cache_commands_have_help(argv):
    out = subprocess.run([sandbox_exe(), *argv, "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.split("Usage:", 1)[1].strip().splitlines()) >= 3


def test_the_workspace_record_is_outside_the_writable_cache(senv):
    """The command can write its cache dir, not the label that says whose it is."""
    r = senv.sh('echo /etc > "$PIP_CACHE_DIR/../../$(basename $(dirname $PIP_CACHE_DIR)).workspace"')
    assert r.returncode != 0
    assert os.path.isfile(senv.home / ".cache" / "sandbox" / "workspaces"
                          / f"{cache_dirs(senv)[0]}.workspace")
