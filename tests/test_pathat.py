"""sandbox.pathat: the audit reaches entries from a root, never through a symlink."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sandbox import pathat


@pytest.fixture
def roots(tmp_path):
    ws = tmp_path / "ws"
    (ws / "d").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    return pathat.Roots([str(ws)]), ws, tmp_path / "outside"


def test_paths_outside_the_roots_are_refused(roots):
    tree, ws, outside = roots
    for path in (str(outside / "x"), str(ws), str(ws) + "-sibling/x", f"{ws}/d/../../outside/x"):
        with pytest.raises(pathat.Outside):
            tree.open_parent(path)


def test_a_symlink_on_the_way_stops_the_walk(roots):
    tree, ws, outside = roots
    (ws / "link").symlink_to(outside)
    with pytest.raises(pathat.LinkOnTheWay) as info:
        tree.open_parent(f"{ws}/link/git/config")
    assert info.value.link == f"{ws}/link"
    # the last component may be a link: it is acted on as a link, never followed
    with tree.parent(f"{ws}/link") as (fd, name):
        assert os.readlink(name, dir_fd=fd) == str(outside)


def test_a_directory_swapped_after_it_was_reached_keeps_the_act_inside(roots):
    """The race the red team won: the act lands in the directory that was
    reached, wherever it has moved, never in the symlink's target."""
    tree, ws, outside = roots
    with tree.parent(f"{ws}/d/config") as (fd, name):
        os.rename(ws / "d", ws / "moved")
        (ws / "d").symlink_to(outside)
        pathat.replace_file(fd, name, b"[core]\n", 0o644)
    assert (ws / "moved" / "config").read_bytes() == b"[core]\n"
    assert os.listdir(outside) == []


def test_paths_longer_than_path_max_work(roots):
    tree, ws, _outside = roots
    parts = ["p" * 250] * 20
    fd = os.open(ws, os.O_RDONLY | os.O_DIRECTORY)
    for part in parts:
        os.mkdir(part, dir_fd=fd)
        down = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = down
    os.close(fd)
    path = f"{ws}/{'/'.join(parts)}/config"
    assert len(os.fsencode(path)) > 4096
    try:
        with tree.parent(path) as (fd, name):
            pathat.replace_file(fd, name, b"x", 0o600)
            assert pathat.read_regular(fd, name, 10) == b"x"
    finally:
        subprocess.run(["rm", "-rf", str(ws / parts[0])], check=True)


def test_read_regular_refuses_fifos_and_links(roots):
    tree, ws, outside = roots
    os.mkfifo(ws / "d" / "fifo")
    (outside / "secret").write_text("s")
    (ws / "d" / "l").symlink_to(outside / "secret")
    for name in ("fifo", "l"):
        with tree.parent(f"{ws}/d/{name}") as (fd, last), pytest.raises(OSError):
            pathat.read_regular(fd, last, 10)


def test_the_outermost_root_anchors_a_nested_one(tmp_path):
    """A writable root inside another is reached from the outer one: the
    command could replace the inner root's own path."""
    tree = pathat.Roots([str(tmp_path / "ws/inner"), str(tmp_path / "ws")])
    assert tree.anchor(str(tmp_path / "ws/inner/x")) == str(tmp_path / "ws")


def test_make_room_opens_up_a_hidden_directory_without_following_links(roots):
    tree, ws, outside = roots
    (ws / "d" / "hidden").mkdir()
    os.chmod(ws / "d" / "hidden", 0)
    os.chmod(outside, 0o500)
    (ws / "d" / "link").symlink_to(outside)
    try:
        with tree.parent(f"{ws}/d/hidden") as (fd, name):
            pathat.make_room(fd, name)
        with tree.parent(f"{ws}/d/link") as (fd, name):
            pathat.make_room(fd, name)
        assert os.stat(ws / "d" / "hidden").st_mode & 0o700 == 0o700
        assert os.stat(outside).st_mode & 0o777 == 0o500  # never through the link
    finally:
        os.chmod(outside, 0o755)
