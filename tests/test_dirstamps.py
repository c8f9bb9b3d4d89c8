"""sandbox.dirstamps: many directory stamps as one plan dependency."""

from __future__ import annotations

import os
import time

from sandbox import dirstamps, scan
from sandbox.observe import Observer, still_valid


def make(tmp_path, n=50):
    dirs = []
    for i in range(n):
        d = tmp_path / f"d{i}" / "sub"
        d.mkdir(parents=True)
        dirs.append(str(d))
    old = time.time() - 3600
    for d in dirs:
        os.utime(d, (old, old))
    return dirs


def stamps(dirs):
    out = []
    for d in dirs:
        st = os.lstat(d)
        out.append((st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
    return out


def test_unchanged_directories_are_valid(tmp_path):
    dirs = make(tmp_path)
    blob, newest = dirstamps.pack(dirs, stamps(dirs))
    assert dirstamps.valid(blob)
    assert time.time_ns() - newest < 10**9  # utime() moved ctime just now
    assert dirstamps.valid(dirstamps.pack([], [])[0])


def test_any_change_is_seen(tmp_path):
    dirs = make(tmp_path)
    blob, _ = dirstamps.pack(dirs, stamps(dirs))
    (tmp_path / "d17" / "sub" / ".env").write_text("x")  # a new entry: mtime and ctime move
    assert not dirstamps.valid(blob)
    blob, _ = dirstamps.pack(dirs, stamps(dirs))
    os.rmdir(tmp_path / "d3" / "sub")
    assert not dirstamps.valid(blob)
    os.mkdir(tmp_path / "d3" / "sub")  # back, but another inode (or at least another ctime)
    assert not dirstamps.valid(blob)


def test_mtime_put_back_is_still_seen(tmp_path):
    dirs = make(tmp_path)
    before = os.lstat(dirs[5])
    blob, _ = dirstamps.pack(dirs, stamps(dirs))
    (tmp_path / "d5" / "sub" / "f").write_text("x")
    os.utime(dirs[5], ns=(before.st_atime_ns, before.st_mtime_ns))  # ctime cannot be put back
    assert os.lstat(dirs[5]).st_mtime_ns == before.st_mtime_ns
    assert not dirstamps.valid(blob)


def test_garbage_is_not_valid():
    assert not dirstamps.valid(b"")
    assert not dirstamps.valid(b"XXXX\x01\x00\x00\x00")
    assert not dirstamps.valid(dirstamps._MAGIC + (2).to_bytes(4, "little") + b"\0" * 48 + b"/a")


def test_observer_and_still_valid(tmp_path, monkeypatch):
    from sandbox import observe

    dirs = make(tmp_path, 5)
    obs = Observer()
    result = scan.walk(str(tmp_path), scan.Rules(), None)
    obs.note_dirs(str(tmp_path), result.dirs, result.stamps)
    assert obs.racy()  # just made
    deps = obs.deps()
    assert len(deps) == 1 and deps[0][1].__class__ is bytes
    assert still_valid(deps)
    (tmp_path / "d2" / "sub" / "new").mkdir()
    assert not still_valid(deps)
    monkeypatch.setattr(observe, "RACY_NS", 0)
    obs = Observer()
    obs.note_dirs(str(tmp_path), *(lambda r: (r.dirs, r.stamps))(scan.walk(str(tmp_path), scan.Rules(), None)))
    assert not obs.racy()
