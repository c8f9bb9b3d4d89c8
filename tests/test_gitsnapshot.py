"""sandbox.gitsnapshot: the git dirs remembered between runs."""

from __future__ import annotations

import os

from sandbox import gitsnapshot


def test_the_known_git_dirs_are_stored_and_read_back(tmp_path):
    state, ws = str(tmp_path / "state"), str(tmp_path / "ws")
    assert gitsnapshot.load_known(state, ws) == []
    gitsnapshot.store_known(state, ws, [f"{ws}/b/.git", f"{ws}/.git"])
    assert gitsnapshot.load_known(state, ws) == [f"{ws}/.git", f"{ws}/b/.git"]
    gitsnapshot.store_known(state, ws, [f"{ws}/.git"])
    assert gitsnapshot.load_known(state, ws) == [f"{ws}/.git"]


def test_an_unchanged_list_is_not_written_again(tmp_path):
    # every audit stores the list; rewriting it (a new file renamed over the
    # old) cost about 1 ms per run on ext4
    state, ws = str(tmp_path / "state"), str(tmp_path / "ws")
    gitsnapshot.store_known(state, ws, [f"{ws}/.git"])
    path = gitsnapshot.known_path(state, ws)
    before = os.stat(path).st_ino
    gitsnapshot.store_known(state, ws, [f"{ws}/.git"])
    assert os.stat(path).st_ino == before
    gitsnapshot.store_known(state, ws, [f"{ws}/.git", f"{ws}/sub/.git"])
    assert os.stat(path).st_ino != before
