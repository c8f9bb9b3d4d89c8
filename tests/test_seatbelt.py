"""sandbox.macos.seatbelt: Policy + host facts -> profile text, -D parameters, argv.

Checked on Linux by structure: an independent SBPL reader (tests/sbpl_reader.py)
parses the generated text and answers "would this operation on this path be
allowed?" from the rules alone, the way Seatbelt decides (last matching rule
wins, deny by default).  Nothing here proves macOS accepts the text; the
tests in tests/test_macos_live.py do that on a Mac (docs/macos.md).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

import sbpl_reader as reader
import seatbelt_support as s
from conftest import _test_root
from sandbox.macos import hostfacts, seatbelt
from sandbox.policy import Access, NetworkMode

PROFILES = s.shipped_profiles()


@pytest.fixture(autouse=True)
def _no_user_profiles(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))


def built(name: str):
    sb = s.golden(name)
    return sb, reader.Profile(sb.sbpl)


def decide(sb, prof, op, path=None, **kw) -> str:
    return reader.decision(prof, sb.params, op, path, **kw)


# -- the reader itself can fail -------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("(version 1)\n(deny default", "left open"),
    ("(version 1)\n(deny default))", "unbalanced"),
    ("(version 1)\n(allow file-reed*)", "unknown operation"),
    ("(version 1)\n(allow file-read* (subpathh \"/dev/null\"))", "unknown filter"),
    ("(version 1)\n(allow network-outbound (remote tcp \"x:1\"))", "not known"),
    ("(deny default)\n(version 1)", "must come first"),
])
def test_reader_refuses_malformed_text(text, message):
    with pytest.raises(reader.SBPLError, match=message):
        reader.Profile(text)


@pytest.mark.parametrize("rule", [
    '(allow file-write* (subpath "/Users/dev/src/app"))',
    '(deny file-read* (literal "/etc/shadow"))',
    '(deny file-read* (regex #"^/Users/dev/\\.ssh"))',
    '(deny file-read* (regex #"/Users/dev/\\.ssh$"))',
])
def test_reader_finds_pasted_paths(rule):
    assert reader.pasted(reader.Profile(f"(version 1)\n(deny default)\n{rule}"))


def test_reader_accepts_fixed_device_paths_and_name_patterns():
    prof = reader.Profile('(version 1)\n(deny default)\n(allow file-write-data (literal "/dev/null")'
                          ' (regex #"^/dev/ttys[0-9]+$"))\n(deny file-read* (regex #"/\\.env\\.[^/]*$"))')
    assert reader.pasted(prof) == []


def test_reader_decides_last_rule_wins():
    prof = reader.Profile('(version 1)\n(deny default)\n(allow file-read*)\n'
                          '(deny file-read* (subpath (param "S")))')
    params = {"S": "/h/.ssh"}
    assert reader.decision(prof, params, "file-read-data", "/h/x") == "allow"
    assert reader.decision(prof, params, "file-read-data", "/h/.ssh/id") == "deny"
    assert reader.decision(prof, params, "file-write-data", "/h/x") == "deny"
    with pytest.raises(reader.SBPLError, match="no -D"):
        reader.decision(prof, {}, "file-read-data", "/h/.ssh")


# -- well-formed, parameters, argv ---------------------------------------------

@pytest.mark.parametrize("name", PROFILES)
def test_profile_is_well_formed_and_deny_default(name):
    sb, prof = built(name)
    assert prof.version == 1
    first = prof.rules[0]
    assert (first.action, first.operations, first.filters) == ("deny", ("default",), ())
    assert not any(r.action == "allow" and "default" in r.operations for r in prof.rules)
    assert "no-sandbox" not in sb.sbpl and "(with " not in sb.sbpl


@pytest.mark.parametrize("name", PROFILES)
def test_every_param_is_passed_with_D_and_every_D_is_used(name):
    sb, prof = built(name)
    assert prof.params() == set(sb.params)
    argv = sb.argv
    assert argv[:3] == [seatbelt.SANDBOX_EXEC, "-p", sb.sbpl]
    assert os.path.isabs(argv[0])
    sep = argv.index("--")
    assert argv[sep + 1:] == list(s.COMMAND)
    pairs = argv[3:sep]
    assert pairs[0::2] == ["-D"] * (len(pairs) // 2)
    assert dict(p.split("=", 1) for p in pairs[1::2]) == sb.params


@pytest.mark.parametrize("name", PROFILES)
def test_no_host_path_is_pasted_into_the_text(name):
    sb, prof = built(name)
    assert reader.pasted(prof) == []
    for value in sb.params.values():
        assert value not in sb.sbpl
    assert s.HOME not in sb.sbpl and "/Users" not in sb.sbpl


# -- what the rules mean ----------------------------------------------------------

@pytest.mark.parametrize("name", PROFILES)
def test_secrets_are_denied_in_every_spelling(name):
    sb, prof = built(name)
    policy = s.golden_policy(name)
    assert policy.deny_read
    for entry in policy.deny_read:
        sample = entry.replace("*", "x").replace("?", "x")
        for path in hostfacts.spellings(sample, resolve=False):
            for op in ("file-read-data", "file-read-metadata", "file-write-data", "file-link"):
                assert decide(sb, prof, op, path) == "deny", (op, path)
                assert decide(sb, prof, op, path + "/inner") == "deny", (op, path)
    # the /private spellings a Mac resolves /etc, /var and /tmp to
    for path in ("/private/etc/shadow", "/etc/shadow", "/private/var/run/secrets/x",
                 "/private/etc/ssh/ssh_host_ed25519_key"):
        assert decide(sb, prof, "file-read-data", path) == "deny", path
    assert decide(sb, prof, "file-read-data", s.HOME + "/.zsh_history") == "deny"


@pytest.mark.parametrize("name", PROFILES)
def test_reads_are_allowed_elsewhere(name):
    sb, prof = built(name)
    for path in ("/usr/bin/git", "/System/Library/Frameworks/x", s.WORKSPACE + "/main.c",
                 s.HOME + "/.gitconfig", "/private/etc/ssl/cert.pem", s.WORKSPACE + "/.env.example"):
        assert decide(sb, prof, "file-read-data", path) == "allow", path


@pytest.mark.parametrize("name", PROFILES)
def test_writes_are_confined(name):
    sb, prof = built(name)
    policy = s.golden_policy(name)
    inside = [s.TMPDIR + "/x"]
    if policy.workspace is Access.WRITE:
        inside += [s.WORKSPACE + "/x", s.WORKSPACE + "/.git/objects/ab", s.CACHE + "/pip/x"]
    outside = [s.HOME + "/x", s.HOME + "/.bashrc", "/usr/local/bin/x", "/tmp/x", "/private/tmp/x",
               "/private/var/folders/zz/x", s.STATE + "/plans/x", s.STATE + "/workspaces/other/x",
               s.HOME + "/src/other/x"]
    if policy.workspace is not Access.WRITE:
        outside += [s.WORKSPACE + "/x", s.CACHE + "/pip/x"]
    for op in ("file-write-data", "file-write-create", "file-write-unlink"):
        for path in inside:
            assert decide(sb, prof, op, path) == "allow", (op, path)
        for path in outside:
            assert decide(sb, prof, op, path) == "deny", (op, path)
    # every rule that allows a write names a writable root or a fixed device
    roots = {p for _, p in seatbelt.writable_roots(policy, s.golden_context(policy))}
    for rule in prof.rules:
        if rule.action == "allow" and any(op.startswith("file-write") or op == "file*"
                                          for op in rule.operations):
            assert rule.filters, rule
            for f in rule.filters:
                if f[0] == "subpath":
                    assert sb.params[f[1][1].value] in roots, f
                else:
                    assert _device_filter(f), f


def _device_filter(f) -> bool:
    """A filter naming only fixed device nodes (optionally narrowed by an extension)."""
    if f[0] == "require-all":
        return any(_device_filter(g) for g in f[1:]) and all(
            _device_filter(g) or g[0] == "extension" for g in f[1:])
    return (f[0] in ("literal", "regex") and isinstance(f[1], reader.Str)
            and f[1].value.startswith(("/dev/", "^/dev/")))


@pytest.mark.parametrize("name", PROFILES)
def test_protected_paths_denied_for_write_unlink_and_rename(name):
    sb, prof = built(name)
    for path in s.PROTECTED:
        for target in (path, path + "/pre-commit"):
            for op in ("file-write-data", "file-write-unlink", "file-write-create",
                       "file-write-mode", "file-link"):
                assert decide(sb, prof, op, target) == "deny", (op, target)
    # renaming a parent away (mv .git .git-old; mv sub sub2) is an unlink of it
    for parent in (s.WORKSPACE + "/.git", s.WORKSPACE + "/sub", s.WORKSPACE):
        assert decide(sb, prof, "file-write-unlink", parent, vnode="DIRECTORY") == "deny", parent
        assert decide(sb, prof, "file-write-create", parent, vnode="DIRECTORY") == "deny", parent


@pytest.mark.parametrize("name", PROFILES)
def test_dotenv_files_are_refused_not_templates_or_directories(name):
    sb, prof = built(name)
    for path in (s.WORKSPACE + "/.env", s.WORKSPACE + "/api/.env.local", s.TMPDIR + "/.env"):
        for op in ("file-read-data", "file-write-data", "file-write-unlink"):
            assert decide(sb, prof, op, path) == "deny", (op, path)
    assert decide(sb, prof, "file-read-data", s.WORKSPACE + "/.env.example") == "allow"
    assert decide(sb, prof, "file-read-data", s.WORKSPACE + "/.env", vnode="DIRECTORY") == "allow"
    assert decide(sb, prof, "file-read-data", s.WORKSPACE + "/.env/bin/python") == "allow"


@pytest.mark.parametrize("name", PROFILES)
def test_network_closed_or_only_the_proxy_port(name):
    sb, prof = built(name)
    policy = s.golden_policy(name)
    proxy = policy.network is NetworkMode.PROXY
    port = s.PROXY_PORT
    assert decide(sb, prof, "network-outbound", remote=f"ip:localhost:{port}") == (
        "allow" if proxy else "deny")
    for remote in ("ip:localhost:80", "ip:*:443", "ip:localhost:*", f"ip:*:{port}",
                   "unix:/private/var/run/mDNSResponder", "unix:/var/run/docker.sock",
                   "unix:" + s.HOME + "/.ssh/agent.sock"):
        assert decide(sb, prof, "network-outbound", remote=remote) == "deny", remote
    assert decide(sb, prof, "network-outbound", remote="unix:" + s.TMPDIR + "/s.sock") == "allow"
    # every allowed outbound is the proxy's port or a unix socket in a writable root
    for rule in prof.rules:
        if rule.action == "allow" and any(op.startswith("network") for op in rule.operations):
            assert rule.filters, rule
            for f in rule.filters:
                assert f[1] == "unix-socket" or f == ["remote", "ip", reader.Str(f"localhost:{port}")], f
    assert ("com.apple.trustd.agent" in sb.sbpl) is proxy


@pytest.mark.parametrize("name", PROFILES)
def test_processes_signals_and_setuid(name):
    sb, prof = built(name)
    assert decide(sb, prof, "process-exec", "/usr/bin/make") == "allow"
    assert decide(sb, prof, "process-fork") == "allow"
    for rule in prof.rules:
        if rule.action == "allow" and {"signal", "process-info*"} & set(rule.operations):
            assert rule.filters == (["target", "same-sandbox"],), rule
    assert ["deny", "process-exec*", ["require-any", ["file-mode", reader.Num(0o4000)],
                                      ["file-mode", reader.Num(0o2000)]]] in prof.forms
    last = prof.rules[-1]
    assert (last.action, last.operations, last.filters) == ("deny", ("file-write-setugid",), ())


def test_paths_never_enter_the_text_even_when_odd():
    policy = s.golden_policy("default")
    odd = '/Users/dev/src/a "quoted" (paren) dir'
    ctx = s.golden_context(policy, workspace=odd, writable=("/Volumes/x;y",))
    sb = seatbelt.build(policy, ctx, ["true"])
    prof = reader.Profile(sb.sbpl)
    assert odd not in sb.sbpl and "/Volumes" not in sb.sbpl
    assert sb.params["WORKSPACE"] == odd
    assert reader.decision(prof, sb.params, "file-write-data", odd + "/f") == "allow"


def test_name_patterns_the_text_cannot_hold_are_refused():
    assert seatbelt.name_regex(".env.*") == r"/\.env\.[^/]*$"
    assert seatbelt.name_regex("a[1]") == r"/a\[1\]$"
    with pytest.raises(seatbelt.ProfileError):
        seatbelt.name_regex('x"y')


@pytest.fixture
def root_dir():
    """A directory under the conftest test root (never /tmp: see DESIGN.md)."""
    path = tempfile.mkdtemp(prefix="seatbelt-", dir=_test_root())
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


def test_spellings_cover_private_aliases_and_symlinks(root_dir):
    tmp_path = root_dir
    assert hostfacts.spellings("/etc/shadow", resolve=False) == ["/etc/shadow", "/private/etc/shadow"]
    assert hostfacts.spellings("/private/var/run/x", resolve=False) == ["/private/var/run/x", "/var/run/x"]
    assert hostfacts.spellings("/Users/dev/.ssh", resolve=False) == ["/Users/dev/.ssh"]
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    assert hostfacts.spellings(str(link))[:2] == [str(link), str(real)]
    paths, globs = hostfacts.secrets([str(tmp_path) + "/*_history"], resolve=True)
    assert globs and globs[0] == (str(tmp_path), "*_history")
    hist = tmp_path / "elsewhere"
    hist.write_text("x")
    (tmp_path / "bash_history").symlink_to(hist)
    paths, _ = hostfacts.secrets([str(tmp_path) + "/*_history"], resolve=True)
    assert str(hist) in paths


@pytest.mark.parametrize("name", PROFILES)
def test_golden_profiles_are_current(name):
    """tests/data/seatbelt/NAME.sb and NAME.params: rewrite them with
    scripts/seatbelt_goldens.py after a deliberate change, and review the diff."""
    sb = s.golden(name)
    want_text = (s.GOLDEN_DIR / f"{name}.sb").read_text(encoding="utf-8")
    want_params = (s.GOLDEN_DIR / f"{name}.params").read_text(encoding="utf-8")
    assert sb.sbpl == want_text, "run scripts/seatbelt_goldens.py and review the diff"
    assert s.params_text(sb.params) == want_params


def test_every_shipped_profile_has_a_golden():
    have = {p.stem for p in s.GOLDEN_DIR.glob("*.sb")}
    assert have == set(PROFILES)
    assert {p.stem for p in s.GOLDEN_DIR.glob("*.params")} == set(PROFILES)


def test_read_only_scratch_and_extra_writable_roots():
    import dataclasses

    policy = dataclasses.replace(s.golden_policy("default"), scratch=Access.READ)
    sb = seatbelt.build(policy, s.golden_context(policy, writable=("/Volumes/build",)), ["true"])
    prof = reader.Profile(sb.sbpl)
    assert "TMPDIR" not in sb.params
    assert reader.decision(prof, sb.params, "file-write-data", s.TMPDIR + "/x") == "deny"
    assert reader.decision(prof, sb.params, "file-write-data", "/Volumes/build/x") == "allow"
    assert reader.decision(prof, sb.params, "file-read-data", "/Volumes/build/.env") == "deny"
    # no unix sockets at all when the profile refuses them
    policy = dataclasses.replace(policy, unix_sockets=False)
    sb = seatbelt.build(policy, s.golden_context(policy), ["true"])
    prof = reader.Profile(sb.sbpl)
    assert reader.decision(prof, sb.params, "network-outbound",
                           remote="unix:" + s.WORKSPACE + "/s.sock") == "deny"
    assert "AF_UNIX" not in sb.sbpl


@pytest.mark.parametrize("name", PROFILES)
def test_other_terminals_cannot_be_read(name):
    sb, prof = built(name)
    assert decide(sb, prof, "file-read-data", "/dev/ttys003") == "deny"
    assert decide(sb, prof, "file-write-data", "/dev/ttys003") == "allow"  # shells reopen theirs
    assert decide(sb, prof, "file-read-data", "/dev/ptmx") == "allow"
    assert decide(sb, prof, "file-write-data", "/dev/null") == "allow"
    assert decide(sb, prof, "file-write-data", "/dev/disk0") == "deny"
    assert decide(sb, prof, "file-write-data", "/dev/ttys003/../disk0") == "deny"
