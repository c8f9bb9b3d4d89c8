"""sandbox.gitconfig: the tiny git config reader (hooksPath and includes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import gitconfig


def entries(text: str) -> list[tuple]:
    return list(gitconfig.entries(text))


def test_sections_and_keys_are_lowercased():
    text = "[Core]\n\tHooksPath = hooks\n\tbare = false\n[user]\nname = Me\n"
    assert entries(text) == [("core", None, "hookspath", "hooks"), ("core", None, "bare", "false"),
                             ("user", None, "name", "Me")]


def test_subsections_keep_their_case():
    text = '[remote "Origin"]\n url = x\n[includeIf "gitdir:~/Work/"]\n path = w.inc\n'
    assert entries(text) == [("remote", "Origin", "url", "x"),
                             ("includeif", "gitdir:~/Work/", "path", "w.inc")]


def test_legacy_dotted_subsection():
    assert entries("[branch.main]\nremote = origin\n") == [("branch", "main", "remote", "origin")]


def test_subsection_with_escaped_quote_and_bracket():
    text = '[includeIf "gitdir:/a]\\"b/"]\npath = x\n'
    assert [(s, k, v) for s, _sub, k, v in entries(text)] == [("includeif", "path", "x")]


def test_key_on_the_header_line():
    assert entries("[core] hooksPath = h\n") == [("core", None, "hookspath", "h")]


def test_quoted_values_and_escapes():
    text = ('[a]\n'
            'x = "has # hash ; and semicolon"\n'
            'y = "say \\"hi\\""\n'
            'z = tab\\there\n'
            'w = a"b c"d\n')
    assert entries(text) == [("a", None, "x", "has # hash ; and semicolon"),
                             ("a", None, "y", 'say "hi"'),
                             ("a", None, "z", "tab\there"),
                             ("a", None, "w", "ab cd")]


def test_comments_and_blank_lines():
    text = ("# top comment\n; another\n\n[core] # after header\n"
            "  # indented comment\n  hooksPath = .githooks # trailing\n"
            "  editor = vim ; trailing too\n")
    assert entries(text) == [("core", None, "hookspath", ".githooks"),
                             ("core", None, "editor", "vim")]


def test_key_without_value_is_true():
    assert entries("[core]\nbare\n") == [("core", None, "bare", "true")]


def test_garbage_lines_are_skipped():
    text = "key = before any section\n[core\n= novalue\n1bad = x\n[ok]\ngood = 1\n"
    assert entries(text) == [("ok", None, "good", "1")]


# -- referenced: every file an include names, every hooksPath -------------------
# (all of them, not only the one git would pick: callers protect a superset)

def w(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_include_relative_to_including_file(tmp_path):
    cfg = w(tmp_path / "repo/.git/config", "[include]\n path = ../shared/inc.cfg\n")
    inc = w(tmp_path / "repo/shared/inc.cfg", "[include]\n path = sub/deeper.cfg\n")
    deeper = w(tmp_path / "repo/shared/sub/deeper.cfg", "[core]\n hooksPath = /abs/hooks\n")
    included, hooks, _programs, _worktrees = gitconfig.referenced([cfg])
    assert included == [inc, deeper]
    assert hooks == [("/abs/hooks", deeper)]


def test_include_if_is_followed_unconditionally(tmp_path):
    cfg = w(tmp_path / "c", '[includeIf "gitdir:/nowhere/"]\n path = a.inc\n'
                            '[includeIf "onbranch:main"]\n path = /etc/b.inc\n')
    included, hooks, _programs, _worktrees = gitconfig.referenced([cfg])
    assert included == [str(tmp_path / "a.inc"), "/etc/b.inc"]
    assert hooks == []


def test_include_tilde_uses_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = w(tmp_path / "c", "[include]\npath = ~/.gitconfig.local\n")
    assert gitconfig.referenced([cfg])[0] == [str(tmp_path / "home/.gitconfig.local")]


def test_every_hooks_path_is_returned_with_its_config(tmp_path):
    glob_cfg = w(tmp_path / "global", "[core]\nhooksPath = /global/hooks\n")
    repo_cfg = w(tmp_path / "repo/.git/config", "[core]\nhooksPath = ../x/../hooks\n")
    assert gitconfig.referenced([glob_cfg, repo_cfg])[1] == [("/global/hooks", glob_cfg),
                                                             ("../x/../hooks", repo_cfg)]


def test_hooks_path_from_included_file(tmp_path):
    cfg = w(tmp_path / "repo/.git/config", "[include]\npath = inc\n")
    inc = w(tmp_path / "repo/.git/inc", "[core]\nhooksPath = h\n")
    included, hooks, _programs, _worktrees = gitconfig.referenced([cfg])
    assert included == [inc] and hooks == [("h", inc)]


def test_missing_files_are_ignored(tmp_path):
    cfg = w(tmp_path / "c", "[include]\npath = missing.inc\n")
    included, hooks, _programs, _worktrees = gitconfig.referenced([str(tmp_path / "nope"), cfg])
    assert included == [str(tmp_path / "missing.inc")] and hooks == []


def test_empty_include_path_is_ignored(tmp_path):
    cfg = w(tmp_path / "c", '[include]\npath =\npath = ""\n')
    assert gitconfig.referenced([cfg])[:2] == ([], [])



def test_include_cycle_terminates(tmp_path):
    a = w(tmp_path / "a", "[include]\npath = b\n")
    b = w(tmp_path / "b", "[include]\npath = a\n[include]\npath = b\n")
    included = gitconfig.referenced([a])[0]
    assert included == [b, a]


def test_self_include(tmp_path):
    a = w(tmp_path / "a", "[include]\npath = a\n")
    assert gitconfig.referenced([a])[:2] == ([a], [])


def test_include_depth_is_bounded(tmp_path):
    for i in range(12):
        w(tmp_path / f"f{i}", f"[include]\npath = f{i + 1}\n")
    included = gitconfig.referenced([str(tmp_path / "f0")])[0]
    depth = gitconfig.MAX_INCLUDE_DEPTH
    # every file that was read is listed, plus the first one it did not read
    assert included == [str(tmp_path / f"f{i}") for i in range(1, depth + 2)]


def test_wide_include_fanout_terminates(tmp_path):
    # every file includes every other: the 'already included' rule stops it
    names = [f"n{i}" for i in range(6)]
    for n in names:
        w(tmp_path / n, "".join(f"[include]\npath = {m}\n" for m in names))
    included = gitconfig.referenced([str(tmp_path / "n0")])[0]
    assert sorted(included) == sorted(str(tmp_path / n) for n in names)


# -- rebuild: configs the command wrote, rebuilt from the allow-list ----------------

def test_rebuild_keeps_allowed_keys_only():
    text = ("[core]\n\tbare = false\n\thooksPath = x\n[alias]\n\tco = checkout\n\tp = !sh\n"
            "[filter \"lfs\"]\n\tclean = evil\n\trequired = true\n[user]\n\tname = A\n"
            "[remote \"origin\"]\n\turl = /src/r\n\tuploadpack = touch PWNED\n")
    new, dropped = gitconfig.rebuild(text)
    assert new == ("[core]\n\tbare = false\n[user]\n\tname = A\n"
                   "[remote \"origin\"]\n\turl = /src/r\n")
    assert dropped == ["core.hookspath", "alias.co", "alias.p", "filter.lfs.clean",
                       "filter.lfs.required", "remote.origin.uploadpack"]


def test_rebuild_of_a_git_written_config_is_byte_identical():
    text = ("[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n"
            "\tlogallrefupdates = true\n[remote \"origin\"]\n\turl = \"/a b#c\"\n"
            "\tfetch = +refs/heads/*:refs/remotes/origin/*\n[branch \"main\"]\n"
            "\tremote = origin\n\tmerge = refs/heads/main\n")
    assert gitconfig.rebuild(text) == (text, [])


@pytest.mark.parametrize("text", [
    "[core]\n\tbare = false\x0c\n",  # a control character anywhere
    "[core]\n\tbare = \\\nfalse\n",  # a continuation line
    "\ufeff[core]\n\tbare = false\n",  # a byte-order mark
    "[core.sub]\n\tbare = false\n",  # the legacy form (git lower-cases the subsection)
    "[core] bare = false\n",  # a key on the header line
    "[core]\n\tbare = \"false\n",  # an open quote
    "[core]\n\tbare = fa\\lse\n",  # an escape git refuses
    "bare = false\n",  # a key before any section
    "[core]\n\tbare = false\rfsmonitor = x\n",  # a CR (git ends lines at LF only)
    "[core]\r\n\tbare = false\r\n",  # CRLF too: any control character but tab and LF
])
def test_rebuild_replaces_what_it_cannot_read_exactly(text):
    assert gitconfig.rebuild(text)[0] == gitconfig.SAFE_CONFIG


def test_rebuild_drops_values_git_would_refuse_or_that_hold_control_characters():
    text = "[core]\n\tbare = maybe\n\tfilemode = \"a\\nb\"\n\trepositoryformatversion = 1x\n[user]\n\tname = \"x\\ty\"\n"
    new, dropped = gitconfig.rebuild(text)
    assert new == ""
    assert dropped == ["core.bare", "core.filemode", "core.repositoryformatversion", "user.name"]


def test_rebuild_keeps_core_worktree_only_inside_the_writable_roots(tmp_path):
    text = "[core]\n\tworktree = ../../../mod\n"
    inside = lambda p: p.startswith(str(tmp_path))  # noqa: E731
    base = str(tmp_path / "ws/.git/modules/mod")
    assert gitconfig.rebuild(text, inside, base)[0] == text
    assert gitconfig.rebuild("[core]\n\tworktree = /home/me\n", inside, base)[1] == ["core.worktree"]


@pytest.mark.parametrize("text", [
    '[user]\n\tname = " a \\"q\\" \\\\ ; # "\n',
    '[remote "o \\"x\\\\"]\n\turl = a;b\n\tfetch = x # comment\n',
    "[user]\n  name   =   two  inner   spaces  \n\temail=\"\" \n",
    "[core]\n\tbare\n[branch \"m\"]\n\tmerge = \"re\"fs/x\n",
])
def test_git_reads_the_rebuilt_config_as_it_read_the_original(tmp_path, text):
    """Differential: whatever we keep, git reads from our file exactly as from theirs."""
    import subprocess

    def listed(content: str) -> str:
        cfg = tmp_path / "config"
        cfg.write_bytes(content.encode())
        return subprocess.run(["git", "config", "--file", str(cfg), "--list"],
                              capture_output=True, text=True, check=True).stdout

    new, dropped = gitconfig.rebuild(text)
    assert dropped == [] and new != gitconfig.SAFE_CONFIG
    assert listed(new) == listed(text)


# -- differential, property style: what the real git reads from a rebuilt config ---------
# A rebuilt config is only safe if git parses it into exactly the entries the
# audit meant to keep: a value git reads as two entries (an escaped newline
# written back unescaped: url = "x\n[core]\nfsmonitor = ...") is a host escape.

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

GIT_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1",
           "LANG": "C"}
_SECTIONS = ["[core]", "[Core]", "[user]", "[remote \"origin\"]", "[remote \"a\\\"b\\\\c\"]",
             "[branch \"m\"]", "[submodule \"s\"]", "[include]", "[alias]", "[core.x]",
             "[remote \"o\"] ", "[remote  \"o\"]", "[extensions]", "[gc]", "[filter \"x\"]",
             "\t[user] # c", "[remote \"x\\ty\"]"]
_KEYS = ["bare", "url", "name", "email", "fsmonitor", "hooksPath", "fetch", "path", "worktree",
         "repositoryformatversion", "auto", "merge", "clean", "Url", "pushurl", "x-y"]
_VALUE_BITS = ["a", "b", "/", ".", ":", " ", "  ", "\t", '"', "#", ";", "[", "]", "=", "\\",
               "\\n", "\\t", "\\b", '\\"', "\\\\", "\\x", "\\\n", "\n", "\r", "\x00", "\x0c",
               "\x7f", "é", "\u2028", "true", "0", "12", "[core]", "fsmonitor = x", "~/x"]
_values = st.lists(st.sampled_from(_VALUE_BITS), max_size=8).map("".join)
_key_lines = st.builds(lambda lead, k, sep, v: f"{lead}{k}{sep}{v}",
                       st.sampled_from(["", "\t", "  "]), st.sampled_from(_KEYS),
                       st.sampled_from([" = ", "=", "", " ", " # c", "\t=\t"]), _values)
_lines = st.one_of(st.sampled_from(_SECTIONS), _key_lines, _key_lines,
                   st.sampled_from(["", "# comment", "; x", "\ufeff", "\r"]))
configs = st.lists(_lines, min_size=1, max_size=10).map(lambda ls: "\n".join(ls) + "\n")


def git_reads(path: Path, text: str):
    """The entries git reads from ``text`` ([(name, value or None)]), or None if it refuses it."""
    import subprocess

    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    r = subprocess.run(["git", "config", "--file", str(path), "--list", "--null"],
                       capture_output=True, env=GIT_ENV, timeout=30)
    if r.returncode != 0:
        return None
    out = []
    for item in r.stdout.split(b"\0")[:-1]:
        name, nl, value = item.partition(b"\n")
        out.append((name.decode(), value.decode() if nl else None))
    return out


def meant(new: str):
    """The entries the rebuild meant to write, named as git lists them."""
    out = []
    for item in gitconfig.parse_strict(new) or ():
        if len(item) == 4:
            section, sub, key, value = item
            name = section.lower() + (f".{sub}" if sub is not None else "") + "." + key.lower()
            out.append((name, value))
    return out


def _allowed_name(name: str) -> bool:
    section, _, rest = name.partition(".")
    sub, _, key = rest.rpartition(".")
    table = gitconfig.ALLOWED.get(section + (".*" if sub else ""), {})
    return key in table


PROPERTY = dict(max_examples=400, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@settings(**PROPERTY)
@given(text=configs)
def test_git_reads_every_rebuilt_config_as_exactly_the_entries_meant(tmp_path, text):
    new, _dropped = gitconfig.rebuild(text)
    got = git_reads(tmp_path / "rebuilt", new)
    assert got is not None, f"git refuses the rebuilt config {new!r}"
    assert got == meant(new), (text, new)
    assert all(_allowed_name(name) for name, _ in got), (text, new, got)
    assert not any(v and any(gitconfig._odd(c) for c in v) for _, v in got)


@settings(**PROPERTY)
@given(text=configs)
def test_a_rebuilt_config_never_holds_an_entry_git_did_not_read_from_the_original(tmp_path,
                                                                                  text):
    """What the rebuild keeps is a subsequence of what git itself reads from the
    command's file: the audit's reader never finds an entry git would not."""
    new, _dropped = gitconfig.rebuild(text)
    original = git_reads(tmp_path / "original", text)
    if original is None or new == gitconfig.SAFE_CONFIG:
        return  # git refuses it (or we replaced it whole): nothing of it is kept
    rest = iter(original)
    for entry in git_reads(tmp_path / "rebuilt", new):
        assert entry in rest, (text, new, entry, original)


@settings(**PROPERTY)
@given(items=st.lists(st.tuples(st.sampled_from(["user.name", "remote.origin.url",
                                                 "branch.m.merge", "core.bare",
                                                 "core.fsmonitor", "alias.x"]),
                                 _values.map(lambda v: v.replace("\x00", ""))),
                      min_size=1, max_size=5))
def test_a_config_git_wrote_keeps_every_allowed_entry_without_control_characters(tmp_path,
                                                                                  items):
    """The other direction: on a file git itself wrote (it escapes newlines and
    tabs), the rebuild keeps exactly the allowed entries whose values hold no
    control character, as git reads them."""
    import subprocess

    cfg = tmp_path / "config"
    cfg.write_bytes(b"")
    for name, value in items:
        subprocess.run(["git", "config", "--file", str(cfg), "--add", name, value],
                       check=True, capture_output=True, env=GIT_ENV, timeout=30)
    text = cfg.read_bytes().decode("utf-8", "surrogateescape")
    original = git_reads(tmp_path / "original", text)
    expected = [(n, v) for n, v in original if _allowed_name(n)
                and not any(gitconfig._odd(c) for c in v or "")
                and gitconfig.allowed(*_split(n), v)]
    new, _dropped = gitconfig.rebuild(text)
    if any(gitconfig._control(c) for c in text):  # git writes CR, FF... as they are
        assert new == gitconfig.SAFE_CONFIG
        return
    assert git_reads(tmp_path / "rebuilt", new) == expected, (text, new)


def _split(name: str):
    section, _, rest = name.partition(".")
    sub, _, key = rest.rpartition(".")
    return section, (sub if sub else None), key


def test_an_escaped_newline_in_an_allowed_value_cannot_add_an_entry(tmp_path):
    """The red team's carrier: an allowed key whose value holds escaped newlines."""
    text = ('[core]\n\tbare = false\n[remote "origin"]\n'
            '\turl = "x\\n[core]\\nfsmonitor = echo pwned\\nhooksPath = /x"\n')
    new, dropped = gitconfig.rebuild(text)
    assert dropped == ["remote.origin.url"]
    assert git_reads(tmp_path / "c", new) == [("core.bare", "false")]
