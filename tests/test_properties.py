"""Property tests for profile loading and merging (hypothesis).

* Any profile text, valid or not, loads to a Policy or raises ProfileError;
  nothing else escapes.
* A child of ``default`` with valid values never loses a protection without
  a matching Weakening, and never gets a Weakening for something stricter.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox import profile, resources
from sandbox.egress import hostports, netrules
from sandbox.errors import ProfileError
from sandbox.policy import LIMIT_DEFAULTS, Policy, Weakening
from sandbox.schema import SCHEMA, Kind

CTX = profile.Context(workspace="/ws", home="/home/u", tmp="/tmp", runtime="/run/user/1000")
SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def workdir():
    """One directory for the module; each example overwrites its files."""
    with tempfile.TemporaryDirectory(prefix="sbx-prop-") as d, pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CONFIG_HOME", os.path.join(d, "cfg"))
        yield Path(d)


@pytest.fixture(scope="module")
def default_policy(workdir) -> Policy:
    return profile.load("default", CTX)[0]


DEFAULT_RAW = tomllib.loads((resources.profiles_dir() / "default.toml").read_text())


# -- a tiny TOML writer ------------------------------------------------------------

def tstr(s: str) -> str:
    out = []
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def tval(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return tstr(v)
    if isinstance(v, list):
        return "[" + ", ".join(tval(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{tstr(k)} = {tval(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def to_toml(doc: dict) -> str:
    lines = []
    tables = {k: v for k, v in doc.items() if isinstance(v, dict)}
    for k, v in doc.items():
        if k not in tables:
            lines.append(f"{tstr(k)} = {tval(v)}")
    for name, body in tables.items():
        lines.append(f"[{tstr(name)}]")
        for k, v in body.items():
            lines.append(f"{tstr(k)} = {tval(v)}")
    return "\n".join(lines) + "\n"


def test_toml_writer_round_trips():
    doc = {"a": 'q"\\\x00\x7f\n', "t": {"l": ["x", 1, True, 1.5], "m": {"k": "v"}}}
    assert tomllib.loads(to_toml(doc)) == doc


# -- value strategies ----------------------------------------------------------------

PATH_POOL = ["/srv/data", "/opt/x y", "/a//b/", "${workspace}", "${workspace}/out", "${home}/.cache/x",
             "${tmp}/build", "${runtime}/s", "/ws/sub", "/home/u/.ssh", "/etc/[ab]*", "/x/*.key"]
NAME_POOL = [".env.local", "*.pem", "secrets.json", ".npmrc", "build", "dist", "node_modules",
             ".config/nvim", "id_*", "*.sample"]
VAR_POOL = ["MY_TOKEN", "FOO", "BAR_*", "*_SECRET", "X", "LANG", "TOKENIZERS_PARALLELISM"]
HOST_POOL = ["pypi.org", "*.pythonhosted.org", "127.0.0.1", "::1", "Example.COM.", "localhost"]
BAD_PATHS = ["rel/x", "~/x", "${nope}/x", "/a/../b", "", "${home", "a\nb"]


def valid_paths(glob_ok: bool):
    pool = PATH_POOL if glob_ok else [p for p in PATH_POOL if not any(c in p for c in "*?[")]
    return st.lists(st.sampled_from(pool), max_size=4)


def valid_value(table: str, key: str):
    spec = SCHEMA[table][key]
    if spec.kind is Kind.CHOICE:
        return st.sampled_from(spec.choices)
    if spec.kind is Kind.BOOL:
        return st.booleans()
    if spec.kind is Kind.INT and spec.zero_unlimited:
        return st.one_of(st.just(0), st.integers(spec.minimum, spec.maximum))
    if spec.kind is Kind.INT:
        return st.integers(spec.minimum, spec.maximum)
    if spec.kind is Kind.STR:
        return st.text(max_size=20)
    if spec.kind is Kind.PATHS:
        return valid_paths(spec.allow_glob)
    if spec.kind is Kind.NAMES:
        if table == "syscalls":
            return st.lists(st.sampled_from(["ptrace", "bpf", "mount", "io_uring_setup", "keyctl"]),
                            max_size=4)
        pool = NAME_POOL if table == "protect" else [n for n in NAME_POOL if "/" not in n]
        return st.lists(st.sampled_from(pool), max_size=4)
    if spec.kind is Kind.PATTERNS:
        return st.lists(st.sampled_from(VAR_POOL), max_size=4)
    if spec.kind is Kind.RULES:
        return st.lists(st.fixed_dictionaries(
            {"host": st.sampled_from(HOST_POOL)},
            optional={"ports": st.lists(st.integers(1, 65535), min_size=1, max_size=3),
                      "methods": st.lists(st.sampled_from(["GET", "HEAD", "POST"]), min_size=1,
                                          max_size=2),
                      "paths": st.lists(st.sampled_from(["/simple/", "/a/*.whl", "/x"]),
                                        min_size=1, max_size=2)}), max_size=3)
    if spec.kind is Kind.CREDENTIALS:
        # an entry is valid only beside an allow rule that lets the proxy read
        # its host (checked across keys): test_credentials*.py cover entries
        return st.just([])
    if spec.kind is Kind.FORWARDS:  # one grant per port, so no inside port twice
        return st.lists(st.fixed_dictionaries(
            {"port": st.integers(1, 65535).filter(lambda p: p not in (53, 3128))},
            optional={"host": st.sampled_from(["127.0.0.1", "::1"]),
                      "name": st.sampled_from(["pg", "redis cache"])}),
            max_size=3, unique_by=lambda d: d["port"])
    if spec.kind is Kind.HOSTMAP:
        return st.dictionaries(st.sampled_from(["pypi.test", "a.example", "X.Example."]),
                               st.sampled_from(["127.0.0.1", "::1", "10.0.0.1"]), max_size=2)
    if spec.kind is Kind.STRMAP:
        return st.dictionaries(st.sampled_from(["A", "B_C", "TMPDIR", "x1"]), st.text(max_size=10), max_size=3)
    raise AssertionError(spec)


ANY_VALUE = st.recursive(
    st.one_of(st.text(max_size=12), st.integers(-5, 100), st.booleans(),
              st.floats(allow_nan=False), st.sampled_from(BAD_PATHS + PATH_POOL)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


@st.composite
def random_profile(draw) -> dict:
    """A mix of known keys with valid or invalid values, and unknown keys."""
    doc: dict = {}
    if draw(st.booleans()):
        doc["description"] = draw(st.one_of(st.text(max_size=10), ANY_VALUE))
    if draw(st.integers(0, 3)) == 0:
        doc["extends"] = draw(st.one_of(
            st.sampled_from(["default", "readonly", "nosuch", "", "p.toml", "./p.toml", "missing.toml",
                             "base.toml", "sub/x.toml"]),
            st.text(alphabet="abcdefXYZ._-", max_size=8)))
    for table, keys in SCHEMA.items():
        if not table or not draw(st.booleans()):
            continue
        body: dict = {}
        for key in keys:
            if key == "*" or not draw(st.booleans()):
                continue
            body[key] = draw(valid_value(table, key)) if draw(st.integers(0, 3)) else draw(ANY_VALUE)
        if table == "caches":
            body.update(draw(st.dictionaries(
                st.sampled_from(["PIP_CACHE_DIR", "X", "1BAD", "a-b", ""]),
                st.one_of(st.sampled_from(["pip", "a/b", "..", ".x", "ok-1", ""]), ANY_VALUE), max_size=3)))
        if draw(st.integers(0, 5)) == 0:
            body[draw(st.text(max_size=8))] = draw(ANY_VALUE)
        doc[table] = body if draw(st.integers(0, 9)) else draw(ANY_VALUE)
    if draw(st.integers(0, 5)) == 0:
        doc[draw(st.text(max_size=8))] = draw(ANY_VALUE)
    return doc


def load_bytes(workdir: Path, data: bytes, name: str = "p.toml"):
    path = workdir / name
    path.write_bytes(data)
    try:
        policy, files = profile.load(str(path), CTX)
    except ProfileError as err:
        assert err.one_line().startswith("sandbox: profile error: ")
        assert "\n" not in err.one_line()
        return None
    assert isinstance(policy, Policy)
    for p in policy.deny_read + policy.writable + policy.empty_dirs + policy.unprotect + policy.socket_scan:
        assert p.startswith("/") and "${" not in p and os.path.normpath(p) == p, p
    return policy


@pytest.fixture(scope="module")
def base_file(workdir):
    (workdir / "base.toml").write_text('extends = "default"\n[env]\ndeny = ["BASE_*"]\n')


# -- never anything but ProfileError -------------------------------------------------

@SETTINGS
@given(doc=random_profile())
def test_random_profiles_load_or_raise_profile_error(workdir, base_file, doc):
    load_bytes(workdir, to_toml(doc).encode())


MUTATIONS = st.lists(st.tuples(st.sampled_from(["del", "ins", "dup", "swap"]), st.integers(0, 10_000),
                               st.text(alphabet='[]="{},\n#\\.\' xa${}', max_size=4)),
                     min_size=1, max_size=4)


def mutate(text: str, edits) -> str:
    for op, pos, chunk in edits:
        i = pos % (len(text) + 1)
        if op == "del":
            text = text[:i] + text[i + len(chunk) + 1:]
        elif op == "ins":
            text = text[:i] + chunk + text[i:]
        elif op == "dup":
            lines = text.splitlines(keepends=True) or [""]
            j = pos % len(lines)
            text = "".join(lines[:j + 1] + lines[j:])
        else:
            lines = text.splitlines(keepends=True) or [""]
            j, k = pos % len(lines), (pos // 7) % len(lines)
            lines[j], lines[k] = lines[k], lines[j]
            text = "".join(lines)
    return text


@SETTINGS
@given(doc=random_profile(), edits=MUTATIONS)
def test_mutated_profiles_load_or_raise_profile_error(workdir, base_file, doc, edits):
    load_bytes(workdir, mutate(to_toml(doc), edits).encode())


@SETTINGS
@given(edits=MUTATIONS)
def test_mutated_default_loads_or_raises_profile_error(workdir, edits):
    text = (resources.profiles_dir() / "default.toml").read_text()
    load_bytes(workdir, mutate(text, edits).encode())


@SETTINGS
@given(data=st.one_of(st.binary(max_size=200),
                      st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass"))))
def test_garbage_loads_or_raises_profile_error(workdir, data):
    load_bytes(workdir, data)


# -- valid root profiles always load ----------------------------------------------------

@st.composite
def valid_body(draw, tables=None) -> dict:
    doc: dict = {}
    for table, keys in SCHEMA.items():
        if not table or (tables is not None and table not in tables) or not draw(st.booleans()):
            continue
        body = {}
        for key in keys:
            if key in ("*", "allow_read") or not draw(st.booleans()):
                continue
            if (table, key) == ("network", "upstream_ca"):
                # valid only as an existing file beside an inspecting rule
                # (checked across keys): test_credentials_https.py covers it
                continue
            body[key] = draw(valid_value(table, key))
        if table == "caches":
            body = draw(st.dictionaries(st.sampled_from(["PIP_CACHE_DIR", "X", "npm_config_cache"]),
                                        st.sampled_from(["pip", "x.y", "a-1", "B_2"]), max_size=3))
        doc[table] = body
    if doc.get("network", {}).get("allow"):
        doc["network"]["mode"] = "proxy"  # allow rules need the proxy (else a profile error)
    return doc


@SETTINGS
@given(doc=valid_body())
def test_valid_root_profiles_load(workdir, doc):
    assert load_bytes(workdir, to_toml(doc).encode()) is not None


# -- a child of default never weakens quietly --------------------------------------------

@st.composite
def child_of_default(draw) -> dict:
    doc = draw(valid_body())
    doc["extends"] = "default"
    allow = draw(st.lists(st.sampled_from(DEFAULT_RAW["filesystem"]["deny_read"]), max_size=4, unique=True))
    if allow:
        # sometimes written as the expanded path: the same entry
        if draw(st.booleans()):
            allow = [a.replace("${home}", "/home/u") for a in allow]
        doc.setdefault("filesystem", {})["allow_read"] = allow
    return doc


def limit_room(value: int) -> float:
    return float("inf") if value == 0 else value  # [limits]: 0 is no limit


def expected_weakenings(doc: dict) -> set[Weakening]:
    out = set()
    for table, keys in SCHEMA.items():
        for key, spec in keys.items():
            value = doc.get(table, {}).get(key) if table else None
            if value is None:
                continue
            dotted = f"{table}.{key}"
            if spec.merge.name == "WEAKEN" and spec.kind is Kind.RULES:
                out |= {Weakening("p", dotted, "added " + netrules.describe(netrules.parse_rule(v, "")))
                        for v in value}
            elif spec.merge.name == "WEAKEN" and spec.kind is Kind.FORWARDS:
                out |= {Weakening("p", dotted, "added forward "
                                  + hostports.describe(hostports.parse(v, ""))) for v in value}
            elif spec.merge.name == "WEAKEN":
                out |= {Weakening("p", dotted, f"added {v}") for v in value}
    if doc.get("network", {}).get("mode") == "proxy":
        out.add(Weakening("p", "network.mode", "none -> proxy"))
    conns = doc.get("network", {}).get("max_connections")
    if conns is not None and limit_room(conns) > limit_room(256):
        out.add(Weakening("p", "network.max_connections", f"256 -> {conns}"))
    for name, addr in doc.get("network", {}).get("hosts", {}).items():
        out.add(Weakening("p", "network.hosts", f"pinned {name} = {addr}"))
    if doc.get("protect", {}).get("git") is False:
        out.add(Weakening("p", "protect.git", "true -> false"))
    for name, value in doc.get("audit", {}).items():
        if value is False:
            out.add(Weakening("p", f"audit.{name}", "true -> false"))
    if doc.get("syscalls", {}).get("enabled") is False:
        out.add(Weakening("p", "syscalls.enabled", "true -> false"))
    if doc.get("syscalls", {}).get("allow_32bit") is True:
        out.add(Weakening("p", "syscalls.allow_32bit", "false -> true"))
    depth = doc.get("sockets", {}).get("max_depth")
    if depth is not None and depth < 4:
        out.add(Weakening("p", "sockets.max_depth", f"4 -> {depth}"))
    if doc.get("limits", {}).get("core_dumps") is True:
        out.add(Weakening("p", "limits.core_dumps", "false -> true"))
    for name in ("github_env", "github_path"):
        if doc.get("ci", {}).get(name) is True:
            out.add(Weakening("p", f"ci.{name}", "false -> true"))
    for name, default in LIMIT_DEFAULTS:
        value = doc.get("limits", {}).get(name)
        if name != "core_dumps" and value is not None and limit_room(value) > limit_room(default):
            out.add(Weakening("p", f"limits.{name}", f"{default} -> {value}"))
    for entry in doc.get("filesystem", {}).get("allow_read", []):
        out.add(Weakening("p", "filesystem.allow_read",
                          f"secret no longer masked: {profile.expand(entry, CTX)}"))
    return out


@SETTINGS
@given(doc=child_of_default())
def test_child_of_default_never_weakens_quietly(workdir, default_policy, doc):
    policy = load_bytes(workdir, to_toml(doc).encode())
    assert policy is not None, doc
    allowed = {profile.expand(a, CTX) for a in doc.get("filesystem", {}).get("allow_read", [])}
    assert set(policy.deny_read) >= set(default_policy.deny_read) - allowed
    assert not (set(policy.deny_read) & allowed)
    assert set(policy.env_deny) >= set(default_policy.env_deny)
    assert set(policy.protected_names) >= set(default_policy.protected_names)
    assert set(policy.deny_read_names) >= set(default_policy.deny_read_names)
    assert set(policy.empty_dirs) >= set(default_policy.empty_dirs)
    assert set(policy.socket_scan) >= set(default_policy.socket_scan)
    assert policy.network == default_policy.network or (
        Weakening("p", "network.mode", "none -> proxy") in policy.weakenings)
    assert set(policy.syscall_deny) >= set(default_policy.syscall_deny)
    if doc.get("syscalls", {}).get("enabled") is not False:
        assert policy.syscalls_enabled
    git_off = doc.get("protect", {}).get("git") is False
    assert policy.protect_git is (not git_off)
    if not policy.protect_git:
        assert Weakening("p", "protect.git", "true -> false") in policy.weakenings
    assert set(policy.weakenings) == expected_weakenings(doc)
    # every WEAKEN entry the child added is in the policy
    for v in doc.get("env", {}).get("pass", []):
        assert v in policy.env_pass
    for v in doc.get("filesystem", {}).get("writable", []):
        assert profile.expand(v, CTX) in policy.writable


@SETTINGS
@given(parent=valid_body(), child=valid_body())
def test_grandchild_weakenings_are_attributed(workdir, parent, child):
    """A chain default -> base -> p: p's own loosening is recorded under p."""
    parent["extends"] = "default"
    child["extends"] = "base2.toml"
    (workdir / "base2.toml").write_text(to_toml(parent))
    base = profile.load(str(workdir / "base2.toml"), CTX)[0]
    policy = load_bytes(workdir, to_toml(child).encode())
    assert policy is not None
    assert set(policy.env_deny) >= set(base.env_deny)
    assert set(policy.protected_names) >= set(base.protected_names)
    assert set(policy.deny_read) >= set(base.deny_read)
    for w in base.weakenings:
        assert w in policy.weakenings
    mine = {w for w in policy.weakenings if w.source == "p"}
    for key, dotted in (("pass", "env.pass"),):
        for v in child.get("env", {}).get(key, []):
            assert Weakening("p", dotted, f"added {v}") in mine
    if base.protect_git and child.get("protect", {}).get("git") is False:
        assert Weakening("p", "protect.git", "true -> false") in mine
    depth = child.get("sockets", {}).get("max_depth")
    if depth is not None and depth < base.socket_scan_depth:
        assert Weakening("p", "sockets.max_depth", f"{base.socket_scan_depth} -> {depth}") in mine
    for name, _ in LIMIT_DEFAULTS:
        value = child.get("limits", {}).get(name)
        old = getattr(base, name)
        if name != "core_dumps" and value is not None and limit_room(value) > limit_room(old):
            assert Weakening("p", f"limits.{name}", f"{old} -> {value}") in mine
    if base.workspace.value == "read" and child.get("filesystem", {}).get("workspace") == "write":
        assert Weakening("p", "filesystem.workspace", "read -> write") in mine
