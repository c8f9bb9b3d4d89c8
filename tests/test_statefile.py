"""sandbox.statefile: state files written whole, read back safely."""

from __future__ import annotations

import marshal

from sandbox import statefile


def test_what_is_dumped_is_loaded(tmp_path):
    data = {"argv": ("bwrap", "--ro-bind", "/", "/"), "deps": [("/x", (1, 2, 3, 4, 5))], "n": None}
    path = str(tmp_path / "sub" / "plan")
    assert statefile.dump(path, data)
    assert statefile.load(path) == data


def test_a_missing_truncated_or_foreign_file_is_none(tmp_path):
    assert statefile.load(str(tmp_path / "missing")) is None
    whole = marshal.dumps({"a": list(range(100))})
    (tmp_path / "cut").write_bytes(whole[:len(whole) // 2])
    assert statefile.load(str(tmp_path / "cut")) is None
    (tmp_path / "junk").write_bytes(b"\xff\x00 not marshal")
    assert statefile.load(str(tmp_path / "junk")) is None
