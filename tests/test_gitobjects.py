"""sandbox.gitobjects: what a repository holds, checked against the real git.

Every repository here is made by the real ``git``; every answer is compared
with what ``git`` itself says.  Forged stores (a loose object or a pack
index that names the id of content they do not hold) must never count.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from sandbox import gitobjects

GIT = shutil.which("git")
pytestmark = pytest.mark.skipif(GIT is None, reason="git is not installed")


def git(repo: Path, *args: str, **kw) -> str:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(repo.parent),
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}
    return subprocess.run([GIT, "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env=env, **kw).stdout.strip()


def make_repo(path: Path, *, versions: int = 12, sha256: bool = False) -> Path:
    """A repository whose .env and big.txt change in every commit (so packs hold deltas)."""
    args = ["init", "-q"] + (["--object-format=sha256"] if sha256 else []) + [str(path)]
    subprocess.run([GIT, *args], check=True)
    for i in range(versions):
        (path / "big.txt").write_text("".join(f"line {n}\n" for n in range(300 + i)))
        (path / ".env").write_text(f"API_KEY=key-{i}\n")
        git(path, "add", "-A")
        git(path, "commit", "-qm", f"c{i}")
    return path


def objects(repo: Path) -> str:
    return str(repo / ".git" / "objects")


def env_version(i: int) -> bytes:
    return f"API_KEY=key-{i}\n".encode()


def big_version(i: int) -> bytes:
    return "".join(f"line {n}\n" for n in range(300 + i)).encode()


def test_blob_ids_match_git(tmp_path):
    repo = make_repo(tmp_path / "r", versions=1)
    sha1_id, sha256_id = gitobjects.blob_ids(env_version(0))
    assert sha1_id.hex() == git(repo, "hash-object", ".env")
    assert len(sha256_id) == 32


@pytest.mark.parametrize("layout", ["loose", "packed", "aggressive", "ref-delta"])
def test_every_version_is_found(tmp_path, layout):
    repo = make_repo(tmp_path / "r")
    if layout == "packed":
        git(repo, "gc", "-q")
    elif layout == "aggressive":
        git(repo, "gc", "-q", "--aggressive")
    elif layout == "ref-delta":  # bases named by id instead of by offset
        git(repo, "-c", "repack.useDeltaBaseOffset=false", "repack", "-adfq")
    if layout != "loose":
        assert not any(p.is_dir() and len(p.name) == 2 for p in (repo / ".git/objects").iterdir())
        verify = git(repo, "verify-pack", "-v", *map(str, (repo / ".git/objects/pack").glob("*.idx")))
        if layout != "packed":
            assert " delta" in verify or "chain length" in verify
    with gitobjects.Store(objects(repo)) as store:
        for i in range(12):
            assert store.holds_blob(env_version(i))
            assert store.holds_blob(big_version(i))
        assert not store.holds_blob(env_version(12))
        assert not store.holds_blob(b"API_KEY=key-1")  # a prefix is not the content
        commit = bytes.fromhex(git(repo, "rev-parse", "HEAD"))
        kind, data = store.read(commit)
        assert kind == b"commit" and data.decode() == git(repo, "cat-file", "commit", "HEAD") + "\n"


def test_sha256_repository(tmp_path):
    repo = make_repo(tmp_path / "r", versions=4, sha256=True)
    with gitobjects.Store(objects(repo)) as store:
        assert store.holds_blob(env_version(3)) and not store.holds_blob(env_version(9))
    git(repo, "gc", "-q")
    with gitobjects.Store(objects(repo)) as store:
        assert all(store.holds_blob(env_version(i)) for i in range(4))
        assert not store.holds_blob(env_version(9))


def test_forged_loose_object_does_not_count(tmp_path):
    """An object file named by the secret's id but holding other bytes is not the secret."""
    repo = make_repo(tmp_path / "r", versions=1)
    secret = b"API_KEY=never-committed\n"
    hexid = gitobjects.blob_ids(secret)[0].hex()
    path = repo / ".git/objects" / hexid[:2] / hexid[2:]
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(zlib.compress(b"blob %d\0" % len(secret) + b"X" * len(secret)))
    with gitobjects.Store(objects(repo)) as store:
        assert not store.holds_blob(secret)
    # a symlink named by the id, pointing at the secret itself, is not opened
    real = tmp_path / "secret.env"
    real.write_bytes(zlib.compress(b"blob %d\0" % len(secret) + secret))
    path.unlink()
    path.symlink_to(real)
    with gitobjects.Store(objects(repo)) as store:
        assert not store.holds_blob(secret)
    # the same bytes as a real object file do count: the check is not vacuous
    path.unlink()
    shutil.copy(real, path)
    with gitobjects.Store(objects(repo)) as store:
        assert store.holds_blob(secret)


def _forged_idx(pack_idx: Path, claim: bytes, offset: int) -> bytes:
    """A version-2 pack index that lists only ``claim``, at ``offset`` of the same pack."""
    fanout = b"".join((1 if b >= claim[0] else 0).to_bytes(4, "big") for b in range(256))
    real = pack_idx.read_bytes()
    pack_checksum = real[-40:-20]
    body = (b"\xfftOc\x00\x00\x00\x02" + fanout + claim + b"\0\0\0\0"
            + offset.to_bytes(4, "big") + pack_checksum)
    return body + hashlib.sha1(body).digest()


def test_forged_pack_index_does_not_count(tmp_path):
    repo = make_repo(tmp_path / "r", versions=3)
    git(repo, "gc", "-q")
    idx = next((repo / ".git/objects/pack").glob("*.idx"))
    secret = b"API_KEY=never-committed\n"
    claim = gitobjects.blob_ids(secret)[0]
    # point the claim at a real blob of the pack: it rebuilds, but to other bytes
    blob = git(repo, "rev-parse", "HEAD:.env")
    line = next(l for l in git(repo, "verify-pack", "-v", str(idx)).splitlines()
                if l.startswith(blob))
    offset = int(line.split()[4])
    forged = _forged_idx(idx, claim, offset)
    os.chmod(idx, 0o644)
    idx.write_bytes(forged)
    with gitobjects.Store(objects(repo)) as store:
        assert store.packs(), "the forged index must be read, or the test proves nothing"
        assert store.packs()[0].offset(claim) == offset
        assert not store.holds_blob(secret)
        assert not store.holds_blob(env_version(2))  # the real index is gone: not found either


def test_bombs_and_garbage_are_bounded(tmp_path, monkeypatch):
    repo = make_repo(tmp_path / "r", versions=1)
    monkeypatch.setattr(gitobjects, "MAX_OBJECT", 1 << 20)
    big = b"\0" * (8 << 20)
    hexid = gitobjects.blob_ids(big)[0].hex()
    path = repo / ".git/objects" / hexid[:2] / hexid[2:]
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(zlib.compress(b"blob %d\0" % len(big) + big))
    with gitobjects.Store(objects(repo)) as store:
        assert not store.holds_blob(big)  # bigger than allowed: not inflated
    pack_dir = repo / ".git/objects/pack"
    pack_dir.mkdir(exist_ok=True)
    (pack_dir / "pack-x.idx").write_bytes(b"\xfftOc\x00\x00\x00\x02" + b"\xff" * 2000)
    (pack_dir / "pack-x.pack").write_bytes(b"PACK\x00\x00\x00\x02" + os.urandom(100))
    os.mkfifo(pack_dir / "pack-y.idx")  # would block a plain open()
    (pack_dir / "pack-y.pack").write_bytes(b"")
    with gitobjects.Store(objects(repo)) as store:
        assert store.packs() == []
        assert store.holds_blob(env_version(0))


@pytest.mark.parametrize("delta", [
    b"\x05\x03\x91\x00\x09",  # copy past the end of the base
    b"\x05\x03\x00",  # opcode 0 is reserved
    b"\x06\x03\x03abc",  # the base is not the size the delta says
    b"\x05\x04\x03abc",  # the result is not the size the delta says
    b"\x05\x03\x05ab",  # an insert runs past the end
])
def test_bad_deltas_are_refused(delta):
    with pytest.raises(gitobjects._Bad):
        gitobjects.apply_delta(b"hello", delta)


def test_delta_copy_and_insert():
    # copy 3 bytes from offset 1, then insert "XY"
    assert gitobjects.apply_delta(b"hello", b"\x05\x05\x91\x01\x03\x02XY") == b"ellXY"


# -- the index -----------------------------------------------------------------------

@pytest.mark.parametrize("version", ["2", "3", "4"])
def test_staged_blob_matches_git(tmp_path, version):
    repo = make_repo(tmp_path / "r", versions=2)
    (repo / "sub").mkdir()
    (repo / "sub" / ".env").write_text("SUB=1\n")
    (repo / "xsub").mkdir()
    (repo / "xsub" / "sub").mkdir()
    (repo / "xsub" / "sub" / ".env").write_text("OTHER=1\n")  # a path ending like sub/.env
    long = "/".join(["d" * 200] * 15) + "/.env"  # a 3 KB path
    (repo / long).parent.mkdir(parents=True)
    (repo / long).write_text("long name\n")
    git(repo, "add", "-A")
    git(repo, "update-index", "--skip-worktree", "sub/.env")  # an extended flag in v3
    git(repo, "update-index", "--index-version", version)
    index = str(repo / ".git" / "index")
    for rel in (".env", "sub/.env", "xsub/sub/.env", "big.txt", long):
        assert gitobjects.staged_blob(index, rel.encode()).hex() == git(repo, "rev-parse", f":{rel}")
    assert gitobjects.staged_blob(index, b"missing/.env") is None
    assert gitobjects.staged_blob(index, b"sub") is None


def test_intent_to_add_and_conflicts_are_not_staged_content(tmp_path):
    repo = make_repo(tmp_path / "r", versions=1)
    (repo / ".env.new").write_text("NEW=1\n")
    git(repo, "add", "-N", ".env.new")
    index = str(repo / ".git" / "index")
    assert gitobjects.staged_blob(index, b".env.new") is None
    git(repo, "checkout", "-qb", "other")
    (repo / ".env").write_text("A=other\n")
    git(repo, "commit", "-qam", "other")
    git(repo, "checkout", "-q", "master" if "master" in git(repo, "branch") else "main")
    (repo / ".env").write_text("A=main\n")
    git(repo, "commit", "-qam", "main")
    subprocess.run([GIT, "-C", str(repo), "merge", "other"], capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"})
    assert "UU .env" in git(repo, "status", "--porcelain")
    assert gitobjects.staged_blob(index, b".env") is None  # only stages 1-3: nothing to show


def test_staged_blob_refuses_non_files(tmp_path):
    index = tmp_path / "index"
    os.mkfifo(index)
    assert gitobjects.staged_blob(str(index), b".env") is None
    os.unlink(index)
    index.write_bytes(b"DIRC\x00\x00\x00\x09" + b"\x00" * 64)  # unknown version
    assert gitobjects.staged_blob(str(index), b".env") is None
