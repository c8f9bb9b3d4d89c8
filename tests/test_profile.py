"""sandbox.profile: strict validation with exact messages, loading, merge rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import profile, resources
from sandbox.errors import ProfileError
from sandbox.policy import Access, Weakening
from sandbox.schema import SCHEMA, Merge

CTX = profile.Context(workspace="/ws", home="/home/u", tmp="/tmp", runtime="/run/user/1000")
PLACEHOLDER_HINT = "paths must be absolute or start with ${workspace}, ${home}, ${tmp} or ${runtime}"


@pytest.fixture(autouse=True)
def _private_user_dir(user_dir) -> Path:
    """Every test here gets a private XDG_CONFIG_HOME (conftest.user_dir)."""
    return user_dir


def write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(spec: str) -> ProfileError:
    with pytest.raises(ProfileError) as info:
        profile.load(spec, CTX)
    return info.value


def load_text(tmp_path: Path, text: str, name: str = "p.toml"):
    return profile.load(str(write(tmp_path, text, name)), CTX)[0]


# -- bad profiles: the exact message --------------------------------------------

BAD = [
    pytest.param(
        'description = "x"\nbogus = 1\n', 2,
        "{p}:2: key 'bogus': unknown key (hint: known top-level keys: audit, caches, ci, "
        "description, env, extends, filesystem, limits, network, protect, require, sockets, "
        "syscalls)",
        id="unknown-top-level"),
    pytest.param(
        '[filesystem]\nworkspace = "write"\nbogus = []\n', 3,
        "{p}:3: key 'filesystem.bogus': unknown key (hint: known keys in [filesystem]: allow_read, "
        "allow_read_names, deny_read, deny_read_names, empty_dirs, scratch, workspace, writable)",
        id="unknown-in-filesystem"),
    pytest.param(
        '[protect]\ngit = true\nnope = 1\n', 3,
        "{p}:3: key 'protect.nope': unknown key (hint: known keys in [protect]: git, names, "
        "skip_dirs, unprotect)", id="unknown-in-protect"),
    pytest.param(
        'filesystem = 3\n', 1,
        "{p}:1: key 'filesystem': must be a table (hint: write it as [filesystem])", id="table-not-table"),
    pytest.param(
        '[filesystem]\nwritable = "/x"\n', 2,
        "{p}:2: key 'filesystem.writable': must be a list of absolute paths (a list of strings)",
        id="string-for-list"),
    pytest.param(
        '[filesystem]\ndeny_read = ["/a", 3]\n', 2,
        "{p}:2: key 'filesystem.deny_read': must be a list of absolute paths (a list of strings)",
        id="int-in-list"),
    pytest.param(
        '[env]\ndeny = "X"\n', 2,
        "{p}:2: key 'env.deny': must be a list of variable-name patterns (a list of strings)",
        id="string-for-patterns"),
    pytest.param(
        '[protect]\ngit = 1\n', 2,
        "{p}:2: key 'protect.git': must be true or false, not an integer", id="int-for-bool"),
    pytest.param(
        '[protect]\ngit = "yes"\n', 2,
        "{p}:2: key 'protect.git': must be true or false, not a string", id="string-for-bool"),
    pytest.param(
        '[sockets]\nmax_depth = true\n', 2,
        "{p}:2: key 'sockets.max_depth': must be an integer, not a boolean", id="bool-for-int"),
    pytest.param(
        '[sockets]\nmax_depth = 33\n', 2,
        "{p}:2: key 'sockets.max_depth': must be between 0 and 32", id="int-out-of-range"),
    pytest.param(
        '[sockets]\nmax_depth = 1.5\n', 2,
        "{p}:2: key 'sockets.max_depth': must be an integer, not a number", id="float-for-int"),
    pytest.param(
        'description = ["x"]\n', 1,
        "{p}:1: key 'description': must be a string, not a list", id="list-for-string"),
    pytest.param(
        '[filesystem]\nworkspace = "rw"\n', 2,
        "{p}:2: key 'filesystem.workspace': must be one of 'read', 'write', not 'rw'", id="bad-choice"),
    pytest.param(
        '[network]\nmode = "host"\n', 2,
        "{p}:2: key 'network.mode': must be one of 'none', 'proxy', not 'host'", id="bad-network"),
    pytest.param(
        '[env]\nset = "x"\n', 2,
        "{p}:2: key 'env.set': must be a table of strings, not a string", id="strmap-not-table"),
    pytest.param(
        '# c\n[filesystem]\n\nwritable = ["x/y"]\n', 4,
        "{p}:4: key 'filesystem.writable': path 'x/y' is relative (hint: " + PLACEHOLDER_HINT + ")",
        id="relative-path"),
    pytest.param(
        '[filesystem]\nwritable = ["${home/x"]\n', 2,
        "{p}:2: key 'filesystem.writable': path '${home/x' is relative (hint: " + PLACEHOLDER_HINT + ")",
        id="unclosed-placeholder-is-relative"),
    pytest.param(
        '[filesystem]\nwritable = ["~/x"]\n', 2,
        "{p}:2: key 'filesystem.writable': path '~/x' starts with '~' (hint: write ${home}/x)",
        id="tilde"),
    pytest.param(
        '[protect]\nunprotect = ["${foo}/x"]\n', 2,
        "{p}:2: key 'protect.unprotect': unknown placeholder ${foo} in '${foo}/x' (hint: known "
        "placeholders: ${workspace}, ${home}, ${tmp}, ${runtime})", id="unknown-placeholder"),
    pytest.param(
        '[filesystem]\ndeny_read = ["${HOME}/x"]\n', 2,
        "{p}:2: key 'filesystem.deny_read': unknown placeholder ${HOME} in '${HOME}/x' (hint: known "
        "placeholders: ${workspace}, ${home}, ${tmp}, ${runtime})", id="placeholder-case-sensitive"),
    pytest.param(
        '[filesystem]\nwritable = ["/a/../b"]\n', 2,
        "{p}:2: key 'filesystem.writable': path '/a/../b' contains '..'", id="dotdot"),
    pytest.param(
        '[filesystem]\ndeny_read = ["${home}/.."]\n', 2,
        "{p}:2: key 'filesystem.deny_read': path '${home}/..' contains '..'", id="dotdot-trailing"),
    pytest.param(
        '[filesystem]\nwritable = ["/a/*"]\n', 2,
        "{p}:2: key 'filesystem.writable': wildcards are not allowed in '/a/*'", id="wildcard-writable"),
    pytest.param(
        '[filesystem]\nempty_dirs = ["/run/[ab]"]\n', 2,
        "{p}:2: key 'filesystem.empty_dirs': wildcards are not allowed in '/run/[ab]'",
        id="wildcard-empty-dirs"),
    pytest.param(
        '[filesystem]\nwritable = [""]\n', 2,
        "{p}:2: key 'filesystem.writable': entry '' is empty or has a control character", id="empty-entry"),
    pytest.param(
        '[filesystem]\ndeny_read_names = ["a/b"]\n', 2,
        "{p}:2: key 'filesystem.deny_read_names': 'a/b' must be a name, not a path", id="name-with-slash"),
    pytest.param(
        '[protect]\nnames = ["/etc/x"]\n', 2,
        "{p}:2: key 'protect.names': '/etc/x' must be a name relative to a writable root, e.g. .vscode",
        id="protect-name-absolute"),
    pytest.param(
        '[caches]\nFOO = "a/b"\n', 2,
        "{p}:2: key 'caches.FOO': cache subdirectory 'a/b' must be a plain name (hint: use letters, "
        "digits, '.', '_' or '-', no '/')", id="cache-subdir-slash"),
    pytest.param(
        '[caches]\nFOO = ".."\n', 2,
        "{p}:2: key 'caches.FOO': cache subdirectory '..' must be a plain name (hint: use letters, "
        "digits, '.', '_' or '-', no '/')", id="cache-subdir-dotdot"),
    pytest.param(
        '[caches]\nFOO = "pip\\n"\n', 2,
        "{p}:2: key 'caches.FOO': cache subdirectory 'pip\\n' must be a plain name (hint: use "
        "letters, digits, '.', '_' or '-', no '/')", id="cache-subdir-trailing-newline"),
    pytest.param(
        '[caches]\n"1X" = "a"\n', 2,
        "{p}:2: key 'caches.1X': not a valid environment variable name", id="cache-bad-var"),
    pytest.param(
        '[caches]\nFOO = 1\n', 2,
        "{p}:2: key 'caches.FOO': must be a string, not an integer", id="cache-not-string"),
    pytest.param(
        '[filesystem\n', None,
        "{p}: not valid TOML: Expected ']' at the end of a table declaration (at line 1, column 12) "
        "(hint: see {docs}/profiles.md for the format)", id="invalid-toml"),
    pytest.param(
        'a = = 1\n', None,
        "{p}: not valid TOML: Invalid value (at line 1, column 5) (hint: see {docs}/profiles.md for "
        "the format)", id="invalid-toml-value"),
]


@pytest.mark.parametrize("text,line,expected", BAD)
def test_bad_profile_exact_message(tmp_path, text, line, expected):
    path = write(tmp_path, text)
    err = load_error(str(path))
    docs = resources.doc("profiles.md").rsplit("/", 1)[0]  # the installed copy
    assert err.one_line() == "sandbox: profile error: " + expected.replace(
        "{p}", str(path)).replace("{docs}", docs)
    assert err.line == line
    assert err.source == str(path)
    assert err.exit_code == 125


def test_env_set_value_not_string(tmp_path):
    path = write(tmp_path, '[env.set]\nX = 1\n')
    err = load_error(str(path))
    assert err.message == f"{path}: key 'env.set': value of 'X' must be a string, not an integer"
    assert err.key == "env.set"


def test_env_set_bad_name(tmp_path):
    path = write(tmp_path, '[env.set]\n"A-B" = "x"\n')
    assert load_error(str(path)).message == \
        f"{path}: key 'env.set': 'A-B' is not a valid environment variable name"


def test_env_name_with_trailing_newline_refused(tmp_path):
    path = write(tmp_path, '[caches]\n"FOO\\n" = "pip"\n')
    assert load_error(str(path)).message == \
        f"{path}: key 'caches.FOO\n': not a valid environment variable name"


def test_unknown_extends(tmp_path, user_dir):
    path = write(tmp_path, '# a comment\nextends = "nosuch"\n')
    err = load_error(str(path))
    assert err.one_line() == (
        f"sandbox: profile error: {path}: key 'extends': unknown profile 'nosuch' "
        f"(hint: known profiles: anthropic-api, default, github, npm, pypi, readonly; user profiles go in {user_dir})")


def test_unknown_profile_on_command_line(user_dir):
    (user_dir / "mine.toml").write_text('description = "m"\n')
    err = load_error("nosuch")
    assert err.one_line() == (
        "sandbox: profile error: --profile: unknown profile 'nosuch' "
        f"(hint: known profiles: anthropic-api, default, github, npm, pypi, readonly, mine; user profiles go in {user_dir})")
    assert err.key is None


def test_extends_too_long_name_is_a_profile_error(tmp_path, user_dir):
    name = "a" * 300
    path = write(tmp_path, f'extends = "{name}"\n')
    assert load_error(str(path)).message == f"{path}: key 'extends': unknown profile '{name}'"
    path = write(tmp_path, f'extends = "{name}.toml"\n')
    assert load_error(str(path)).message == \
        f"{tmp_path / (name + '.toml')}: key 'extends': profile file not found"


def test_extends_missing_path_is_relative_to_referrer(tmp_path):
    path = write(tmp_path, 'extends = "sub/base.toml"\n')
    err = load_error(str(path))
    assert err.one_line() == (
        f"sandbox: profile error: {tmp_path}/sub/base.toml: key 'extends': profile file not found "
        "(hint: check the path, or use a profile name from 'sandbox profiles list')")


def test_extends_empty(tmp_path):
    path = write(tmp_path, 'extends = ""\n')
    assert load_error(str(path)).one_line() == (
        f"sandbox: profile error: {path}: key 'extends': empty profile name "
        "(hint: give a profile name such as 'default' or a path to a .toml file)")


def test_extends_cycle(user_dir):
    (user_dir / "a.toml").write_text('extends = "b"\n')
    (user_dir / "b.toml").write_text('# b\nextends = "a"\n')
    err = load_error("a")
    assert err.one_line() == (
        f"sandbox: profile error: {user_dir}/a.toml: key 'extends': extends forms a cycle "
        "(hint: a -> b -> a)")


def test_extends_self_cycle_by_path(tmp_path):
    path = write(tmp_path, 'extends = "./p.toml"\n')
    assert load_error(str(path)).one_line() == (
        f"sandbox: profile error: {path}: key 'extends': extends forms a cycle (hint: p -> p)")


def test_extends_too_deep(user_dir):
    for i in range(10):
        (user_dir / f"n{i}.toml").write_text(f'extends = "n{i + 1}"\n' if i < 9 else "")
    assert load_error("n0").message == \
        f"{user_dir}/n8.toml: key 'extends': extends is nested more than 8 deep"


def test_user_profile_shadowing_builtin(user_dir):
    (user_dir / "default.toml").write_text('description = "mine"\n')
    expected = (f"sandbox: profile error: {user_dir}/default.toml: user profile shadows the built-in "
                "profile 'default' (hint: rename the file and use extends = \"default\" to build on "
                "the built-in)")
    assert load_error("default").one_line() == expected
    # and through extends as well
    assert load_error("readonly").one_line() == expected


def test_allow_read_matching_nothing(tmp_path):
    path = write(tmp_path, 'extends = "default"\n\n[filesystem]\nallow_read = ["${home}/.nope"]\n')
    err = load_error(str(path))
    assert err.one_line() == (
        f"sandbox: profile error: {path}:4: key 'filesystem.allow_read': allow_read entry "
        "'/home/u/.nope' matches no deny_read entry (hint: allow_read removes an inherited "
        "deny_read entry; copy it exactly (see 'sandbox explain'))")
    assert err.line == 4


def test_invalid_utf8(tmp_path):
    path = tmp_path / "p.toml"
    path.write_bytes(b'description = "\xff"\n')
    err = load_error(str(path))
    assert err.message.startswith(f"{path}: cannot read profile: ")


def test_missing_file_on_command_line(tmp_path):
    err = load_error(str(tmp_path / "nope.toml"))
    assert err.one_line() == (
        f"sandbox: profile error: {tmp_path}/nope.toml: profile file not found "
        "(hint: check the path, or use a profile name from 'sandbox profiles list')")


def test_error_in_parent_names_the_parent(tmp_path):
    write(tmp_path, '[protect]\ngit = "no"\n', "base.toml")
    child = write(tmp_path, 'extends = "base.toml"\n', "child.toml")
    err = load_error(str(child))
    assert err.message == f"{tmp_path}/base.toml:2: key 'protect.git': must be true or false, not a string"


# -- good profiles -----------------------------------------------------------------

def test_default_loads():
    policy, files = profile.load("default", CTX)
    assert files == [str(resources.profiles_dir() / "default.toml")]
    assert policy.name == "default"
    assert policy.chain == ("default",)
    assert policy.workspace is Access.WRITE and policy.scratch is Access.WRITE
    assert policy.protect_git is True
    assert policy.weakenings == ()
    assert "/home/u/.ssh" in policy.deny_read
    assert "/home/u/.*_history" in policy.deny_read
    assert policy.empty_dirs == ("/run", "/var/run", "/run/user/1000")
    assert policy.socket_scan == ("/home/u", "/var", "/srv", "/home", "/mnt", "/media")
    assert policy.socket_scan_depth == 4
    assert ("TMPDIR", "/tmp") in policy.env_set
    assert ("PIP_CACHE_DIR", "pip") in policy.caches
    assert policy.caches == tuple(sorted(policy.caches))
    assert len(policy.digest) == 64


def test_readonly_extends_default():
    default, _ = profile.load("default", CTX)
    ro, files = profile.load("readonly", CTX)
    assert ro.chain == ("default", "readonly")
    assert files == [str(resources.profiles_dir() / "default.toml"),
                     str(resources.profiles_dir() / "readonly.toml")]
    # a read-only workspace, and the private scratch dirs of every run (tests need them)
    assert ro.workspace is Access.READ and ro.scratch is Access.WRITE
    assert ro.weakenings == ()
    assert ro.description == "Read-only workspace, private scratch /tmp, secrets hidden, no network."
    for field in ("deny_read", "env_deny", "protected_names", "empty_dirs", "caches", "env_set",
                  "protect_git", "skip_dirs", "deny_read_names"):
        assert getattr(ro, field) == getattr(default, field), field
    assert ro.digest != default.digest
    assert not ro.uses_caches()


def test_placeholders_expand(tmp_path):
    pol = load_text(tmp_path, 'extends = "none"\n[filesystem]\nwritable = ["${workspace}/out", "${tmp}/x/", "${runtime}//y"]\n'
                              'deny_read = ["${home}/.secret"]\n[protect]\nunprotect = ["${workspace}/.vscode"]\n'
                              '[sockets]\nscan = ["${runtime}"]\n')
    assert pol.writable == ("/ws/out", "/tmp/x", "/run/user/1000/y")
    assert pol.deny_read == ("/home/u/.secret",)
    assert pol.unprotect == ("/ws/.vscode",)
    assert pol.socket_scan == ("/run/user/1000",)
    assert pol.name == "p" and pol.chain == ("p",)


def test_expanded_duplicates_collapse(tmp_path):
    pol = load_text(tmp_path, '[filesystem]\nwritable = ["/ws/a", "${workspace}/a", "/ws/a/"]\n')
    assert pol.writable == ("/ws/a",)


def test_profile_without_extends_builds_on_default(tmp_path):
    """Issue 8 item 5: leaving out extends used to drop every built-in protection."""
    default, _ = profile.load("default", CTX)
    pol, files = profile.load(str(write(tmp_path, 'description = "mine"\n')), CTX)
    assert pol.chain == ("default", "p") and files[0] == default.sources[0]
    for field in ("deny_read", "deny_read_names", "env_deny", "protected_names", "empty_dirs",
                  "socket_scan", "caches", "env_set", "skip_dirs"):
        assert getattr(pol, field) == getattr(default, field), field
    assert pol.weakenings == () and pol.description == "mine"


def test_extends_none_starts_empty_and_says_so(tmp_path):
    pol = load_text(tmp_path, 'extends = "none"\n')
    assert pol.chain == ("p",) and pol.deny_read == () and pol.env_deny == ()
    assert pol.protected_names == () and pol.deny_read_names == ()
    assert pol.workspace is Access.WRITE and pol.protect_git is True
    assert pol.socket_scan_depth == 4
    assert [(w.source, w.key) for w in pol.weakenings] == [("p", "extends")]
    assert pol.weakenings[0].detail.startswith('extends = "none": starts without the built-in '
                                               "protections")


def test_a_child_of_an_extends_none_profile_keeps_the_weakening(tmp_path):
    write(tmp_path, 'extends = "none"\n[env]\ndeny = ["X_*"]\n', "bare.toml")
    pol = load_text(tmp_path, 'extends = "bare.toml"\n', "kid.toml")
    assert pol.chain == ("bare", "kid") and pol.env_deny == ("X_*",)
    assert [(w.source, w.key) for w in pol.weakenings] == [("bare", "extends")]


def test_none_is_not_a_profile_name(tmp_path, user_dir):
    (user_dir / "none.toml").write_text('description = "x"\n')
    err = load_error("none")
    assert err.one_line() == (
        "sandbox: profile error: --profile: 'none' is not a profile: it is the value of extends "
        "for a profile that starts without the built-in protections (hint: give a profile name "
        "such as 'default', or a path (./none.toml))")
    pol, _ = profile.load(str(user_dir / "none.toml"), CTX)  # by path it is an ordinary file
    assert pol.chain == ("default", "none")


def test_extends_must_still_be_a_string(tmp_path):
    path = write(tmp_path, '\nextends = 3\n')
    assert load_error(str(path)).message == f"{path}:2: key 'extends': must be a string, not an integer"


def test_user_profile_by_name(user_dir):
    (user_dir / "mine.toml").write_text('extends = "default"\ndescription = "m"\n')
    pol, files = profile.load("mine", CTX)
    assert pol.chain == ("default", "mine") and pol.description == "m"
    assert files[-1] == str(user_dir / "mine.toml")


def test_line_numbers_with_quoted_key_and_comments(tmp_path):
    path = write(tmp_path, '# header\n\n[protect]\n# git\n"git" = 0\n')
    assert load_error(str(path)).line == 5


# -- merge rules -------------------------------------------------------------------

def child(tmp_path, body: str, name: str = "child.toml"):
    return load_text(tmp_path, 'extends = "default"\n' + body, name)


def test_every_schema_list_key_has_a_list_merge_rule():
    for table, keys in SCHEMA.items():
        for key, spec in keys.items():
            if spec.kind.name in ("PATHS", "NAMES", "PATTERNS"):
                assert spec.merge in (Merge.APPEND, Merge.WEAKEN, Merge.REMOVE), (table, key)


def test_append_lists_grow(tmp_path):
    default, _ = profile.load("default", CTX)
    pol = child(tmp_path, '[filesystem]\ndeny_read = ["${home}/.extra", "${home}/.ssh"]\n'
                          'deny_read_names = ["*.pem"]\nempty_dirs = ["/srv"]\n'
                          '[protect]\nnames = [".foo"]\n[env]\ndeny = ["MY_*"]\n[sockets]\nscan = ["/var/lib"]\n')
    assert pol.deny_read == default.deny_read + ("/home/u/.extra",)
    assert pol.deny_read_names == default.deny_read_names + ("*.pem",)
    assert pol.empty_dirs == default.empty_dirs + ("/srv",)
    assert pol.protected_names == default.protected_names + (".foo",)
    assert pol.env_deny == default.env_deny + ("MY_*",)
    assert pol.socket_scan == default.socket_scan + ("/var/lib",)
    assert pol.weakenings == ()


def test_merge_tables(tmp_path):
    default, _ = profile.load("default", CTX)
    pol = child(tmp_path, '[env.set]\nFOO = "1"\nTMPDIR = "/var/tmp"\n[caches]\nPIP_CACHE_DIR = "pip2"\nX_CACHE = "x"\n')
    assert dict(pol.env_set) == {"FOO": "1", "TMPDIR": "/var/tmp"}
    caches = dict(default.caches) | {"PIP_CACHE_DIR": "pip2", "X_CACHE": "x"}
    assert pol.caches == tuple(sorted(caches.items()))


def test_replace_stricter_is_not_a_weakening(tmp_path):
    pol = child(tmp_path, '[filesystem]\nworkspace = "read"\n[sockets]\nmax_depth = 8\n')
    assert pol.workspace is Access.READ and pol.socket_scan_depth == 8
    assert pol.weakenings == ()


@pytest.mark.parametrize("parent,body,key,detail", [
    ("readonly", '[filesystem]\nworkspace = "write"\n', "filesystem.workspace", "read -> write"),
    ("./noscratch.toml", '[filesystem]\nscratch = "write"\n', "filesystem.scratch", "read -> write"),
])
def test_replace_looser_than_readonly(tmp_path, parent, body, key, detail):
    write(tmp_path, 'extends = "readonly"\n[filesystem]\nscratch = "read"\n', "noscratch.toml")
    pol = load_text(tmp_path, f'extends = "{parent}"\n' + body, "ro2.toml")
    assert pol.weakenings == (Weakening("ro2", key, detail),)


def test_replace_looser_git_and_depth(tmp_path):
    pol = child(tmp_path, '[protect]\ngit = false\n[sockets]\nmax_depth = 1\n')
    assert pol.protect_git is False and pol.socket_scan_depth == 1
    assert pol.weakenings == (Weakening("child", "protect.git", "true -> false"),
                              Weakening("child", "sockets.max_depth", "4 -> 1"))


def test_replace_looser_than_implicit_default_is_recorded(tmp_path):
    write(tmp_path, 'description = "bare root"\n', "root.toml")
    pol = load_text(tmp_path, 'extends = "root.toml"\n[protect]\ngit = false\n[sockets]\nmax_depth = 0\n',
                    "kid.toml")
    assert pol.weakenings == (Weakening("kid", "protect.git", "true -> false"),
                              Weakening("kid", "sockets.max_depth", "4 -> 0"))


def test_replace_weakening_by_middle_profile(tmp_path):
    write(tmp_path, 'extends = "default"\n[protect]\ngit = false\n', "mid.toml")
    pol = load_text(tmp_path, 'extends = "mid.toml"\n[protect]\ngit = true\n', "top.toml")
    assert pol.protect_git is True
    assert pol.weakenings == (Weakening("mid", "protect.git", "true -> false"),)


@pytest.mark.parametrize("table,key,value,field", [
    ("env", "pass", "MY_TOKEN", "env_pass"),
    ("protect", "unprotect", "${workspace}/.vscode", "unprotect"),
    ("protect", "skip_dirs", "build", "skip_dirs"),
    ("filesystem", "writable", "/srv/data", "writable"),
    ("filesystem", "allow_read_names", "*.pub", "allow_read_names"),
])
def test_weaken_lists(tmp_path, table, key, value, field):
    pol = child(tmp_path, f'[{table}]\n{key} = ["{value}"]\n')
    assert profile.expand(value, CTX) in getattr(pol, field)
    assert pol.weakenings == (Weakening("child", f"{table}.{key}", f"added {value}"),)


def test_weaken_lists_in_an_extends_none_root_are_covered_by_its_weakening(tmp_path):
    pol = load_text(tmp_path, 'extends = "none"\n[env]\npass = ["A"]\n[filesystem]\nwritable = ["/srv"]\n')
    assert [w.key for w in pol.weakenings] == ["extends"]


def test_weaken_lists_without_extends_are_weakenings_of_default(tmp_path):
    pol = load_text(tmp_path, '[env]\npass = ["A"]\n[filesystem]\nwritable = ["/srv"]\n')
    assert set(pol.weakenings) == {Weakening("p", "env.pass", "added A"),
                                   Weakening("p", "filesystem.writable", "added /srv")}


def test_allow_read_removes_inherited_deny(tmp_path):
    default, _ = profile.load("default", CTX)
    pol = child(tmp_path, '[filesystem]\nallow_read = ["${home}/.aws", "${home}/.*_history"]\n')
    assert "/home/u/.aws" not in pol.deny_read
    assert "/home/u/.*_history" not in pol.deny_read
    assert pol.deny_read == tuple(d for d in default.deny_read
                                  if d not in ("/home/u/.aws", "/home/u/.*_history"))
    assert pol.weakenings == (
        Weakening("child", "filesystem.allow_read", "secret no longer masked: /home/u/.aws"),
        Weakening("child", "filesystem.allow_read", "secret no longer masked: /home/u/.*_history"))


def test_allow_read_matches_after_normalisation(tmp_path):
    pol = child(tmp_path, '[filesystem]\nallow_read = ["/home/u//.aws/"]\n')
    assert "/home/u/.aws" not in pol.deny_read
    assert len(pol.weakenings) == 1


def test_allow_read_in_parent_is_attributed_to_parent(tmp_path):
    write(tmp_path, 'extends = "default"\n[filesystem]\nallow_read = ["${home}/.kube"]\n', "mid.toml")
    pol = load_text(tmp_path, 'extends = "mid.toml"\n', "top.toml")
    assert pol.weakenings == (
        Weakening("mid", "filesystem.allow_read", "secret no longer masked: /home/u/.kube"),)


def test_child_can_mask_again_what_a_parent_unmasked(tmp_path, monkeypatch):
    """deny_read/allow_read fold root first: the later profile's word wins."""
    from sandbox import profile as prof

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    parent = tmp_path / "parent.toml"
    parent.write_text('extends = "default"\n[filesystem]\nallow_read = ["${home}/.aws"]\n')
    child = tmp_path / "child.toml"
    child.write_text(f'extends = "{parent}"\n[filesystem]\ndeny_read = ["${{home}}/.aws"]\n')
    ctx = prof.Context(workspace="/w", home="/h", tmp="/tmp", runtime="/run/user/1")
    unmasked, _ = prof.load(str(parent), ctx)
    masked_again, _ = prof.load(str(child), ctx)
    assert "/h/.aws" not in unmasked.deny_read
    assert "/h/.aws" in masked_again.deny_read


def test_unclosed_placeholder_after_a_valid_one(tmp_path):
    """Found by the mutation property test: '${home}${/x' used to pass as a path."""
    from sandbox import profile as prof
    from sandbox.errors import ProfileError

    path = tmp_path / "p.toml"
    path.write_text('[filesystem]\nwritable = ["${home}${/x"]\n')
    with pytest.raises(ProfileError) as err:
        prof.load(str(path), prof.Context(workspace="/w", home="/h", tmp="/tmp", runtime="/r"))
    assert "has an unclosed '${'" in err.value.message


# -- [network]: egress rules -----------------------------------------------------

NET = 'extends = "default"\n[network]\nmode = "proxy"\n'


def test_network_rules_become_policy(tmp_path):
    from sandbox.policy import EgressRule, NetworkMode

    pol = load_text(tmp_path, NET + 'hosts = { "Pypi.Test." = "127.0.0.1" }\n'
                    '[[network.allow]]\nhost = "PyPI.org."\n'
                    '[[network.allow]]\nhost = "*.example.com"\nports = [80, 8080]\n'
                    'methods = ["get"]\npaths = ["/simple/"]\n'
                    '[[network.deny]]\nhost = "upload.example.com"\n')
    assert pol.network is NetworkMode.PROXY
    assert pol.egress_allow == (
        EgressRule("pypi.org", (443,), (), (), "p: network.allow[1]"),
        EgressRule("*.example.com", (80, 8080), ("GET",), ("/simple/",), "p: network.allow[2]"))
    assert pol.egress_deny == (EgressRule("upload.example.com", (), (), (), "p: network.deny[1]"),)
    assert pol.egress_hosts == (("pypi.test", "127.0.0.1"),)
    details = [(w.key, w.detail) for w in pol.weakenings]
    assert ("network.mode", "none -> proxy") in details
    assert sum(key == "network.allow" for key, _ in details) == 2


@pytest.mark.parametrize("text,key,words", [
    ('[[network.allow]]\nhost = "*"\n', "network.allow[1].host", "would allow"),
    ('[[network.allow]]\nhost = "*.com"\n', "network.allow[1].host", "would allow"),
    ('[[network.allow]]\nhost = "*.co.uk"\n', "network.allow[1].host", "would allow"),
    ('[[network.allow]]\nhost = "a.com"\nports = [0]\n', "network.allow[1].ports", ""),
    ('[[network.allow]]\nhost = "a.com"\nports = []\n', "network.allow[1].ports", ""),
    ('[[network.allow]]\nhost = "a.com"\nmethods = ["G ET"]\n', "network.allow[1].methods", ""),
    ('[[network.allow]]\nhost = "a.com"\npaths = ["/a/../b"]\n', "network.allow[1].paths", ""),
    ('[[network.allow]]\nhost = "a.com"\nbogus = 1\n', "network.allow[1].bogus", "unknown key"),
    ('[[network.allow]]\nports = [443]\n', "network.allow[1].host", ""),
    ('[network.allow]\nhost = "a.com"\n', "network.allow", "array of tables"),
    ('hosts = { "a.test" = "not-an-ip" }\n', "network.hosts", ""),
])
def test_bad_network_rules_name_the_key_and_line(tmp_path, text, key, words):
    path = write(tmp_path, NET + text)
    err = load_error(str(path))
    assert err.key == key, str(err)
    assert words in str(err)
    assert err.line is not None and err.line >= 4, str(err)


def test_allow_rules_without_proxy_mode_are_refused(tmp_path):
    path = write(tmp_path, 'extends = "default"\n[[network.allow]]\nhost = "pypi.org"\n')
    err = load_error(str(path))
    assert err.key == "network.mode"
    assert 'set mode = "proxy"' in err.hint


def test_builtin_network_profiles_are_narrow():
    for name, hosts in (("pypi", {"pypi.org", "files.pythonhosted.org"}),
                        ("npm", {"registry.npmjs.org"}), ("github", {"github.com"})):
        pol = profile.load(name, CTX)[0]
        assert {r.host for r in pol.egress_allow} == hosts
        assert all(r.ports == (443,) for r in pol.egress_allow)
        assert pol.chain == ("default", name)


def test_a_child_may_turn_a_parents_network_off(tmp_path):
    from sandbox.policy import NetworkMode

    write(tmp_path, NET + '[[network.allow]]\nhost = "pypi.org"\n', "base.toml")
    pol = load_text(tmp_path, 'extends = "base.toml"\n[network]\nmode = "none"\n', "p.toml")
    assert pol.network is NetworkMode.NONE
    assert pol.egress_allow == ()
