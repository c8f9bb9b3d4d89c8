"""``sandbox.tighten``: meeting a policy with an untrusted or managed constraint.

The property: whatever the two policies and whichever fields are met, the
result allows nothing the base does not, and on the met fields nothing the
constraint does not.  "Allows" is checked here independently of how
``tighten`` computes the meet: writable paths by containment, protections
by inclusion, limits by room, and the network by asking the proxy's own
rule engine (``netrules.Rules``) about random requests.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox import tighten
from sandbox.egress import netrules
from sandbox.policy import Access, EgressRule, NetworkMode, Policy

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

PATHS = ["/", "/srv", "/srv/data", "/srv/data/x", "/srv/other", "/home/u/.m2", "/home/u/.m2/repo",
         "/ws", "/ws/.vscode", "/ws/.git/hooks", "/opt"]
NAMES = [".env", ".env.*", "*.example", "node_modules", ".venv", "target", "A", "B", "ptrace",
         "bpf", "git_hooks", "shell_rc"]
HOSTS = ["pypi.org", "files.pythonhosted.org", "*.pythonhosted.org", "*.x.pythonhosted.org", "a.b.example",
         "*.b.example", "127.0.0.1", "::1", "10.0.0.1"]
REQ_HOSTS = ["pypi.org", "files.pythonhosted.org", "x.pythonhosted.org", "pythonhosted.org",
             "a.b.example", "c.b.example", "b.example", "127.0.0.1", "::1", "10.0.0.1", "evil.org"]
PORTS = [80, 443, 8080]
METHODS = ["GET", "POST", "PUT"]
RULE_PATHS = ["/", "/simple/", "/simple", "/simple/pkg", "/packages/*/x", "/packages/", "/a/b",
              "/a/*"]
REQ_PATHS = ["/", "/simple", "/simple/", "/simple/pkg", "/simple/pkg/1", "/packages/q/x",
             "/packages/q/y", "/a/b", "/a/c", "/a/b/c", "/other"]


def sub(pool, max_size=4):
    return st.lists(st.sampled_from(pool), max_size=max_size, unique=True).map(tuple)


rules = st.lists(st.builds(
    EgressRule,
    host=st.sampled_from(HOSTS),
    ports=st.lists(st.sampled_from(PORTS), min_size=1, max_size=3, unique=True).map(tuple),
    methods=sub(METHODS, 2),
    paths=sub(RULE_PATHS, 2),
), max_size=4).map(tuple)
limit = st.sampled_from([0, 64, 100, 1000, 65536])
GRANTS = [("127.0.0.1", 5432, 5432, "", "a"), ("127.0.0.1", 5432, 15432, "pg", "b"),
          ("::1", 6379, 6379, "", "c"), ("127.0.0.1", 6379, 6379, "redis", "d")]

policies = st.builds(
    Policy,
    name=st.just("p"), chain=st.just(("p",)), digest=st.just("d"),
    workspace=st.sampled_from(list(Access)), scratch=st.sampled_from(list(Access)),
    writable=sub(PATHS), deny_read=sub(PATHS), deny_read_names=sub(NAMES),
    allow_read_names=sub(NAMES), empty_dirs=sub(PATHS), protect_git=st.booleans(),
    protected_names=sub(NAMES), unprotect=sub(PATHS), skip_dirs=sub(NAMES),
    socket_scan=sub(PATHS), socket_scan_depth=st.integers(0, 32), socket_skip_dirs=sub(NAMES),
    env_deny=sub(NAMES), env_pass=sub(NAMES),
    env_set=st.sampled_from([(), (("A", "1"),), (("B", "2"),)]),
    caches=st.sampled_from([(), (("PIP_CACHE_DIR", "pip"),), (("PIP_CACHE_DIR", "x"),),
                            (("NPM", "npm"), ("PIP_CACHE_DIR", "pip"))]),
    network=st.sampled_from(list(NetworkMode)), egress_allow=rules, egress_deny=rules,
    egress_hosts=st.sampled_from([(), (("pypi.org", "127.0.0.1"),)]),
    egress_max_connections=st.sampled_from([0, 1, 256, 4096]),
    syscalls_enabled=st.booleans(), syscall_deny=sub(NAMES), syscall_allow=sub(NAMES),
    allow_32bit=st.booleans(), unix_sockets=st.booleans(), audit_classes=sub(NAMES),
    core_dumps=st.booleans(), max_open_files=limit, max_file_size_mb=limit, cpu_seconds=limit,
    max_processes=limit, address_space_mb=limit, timeout_seconds=limit, pids_max=limit,
    memory_max_mb=limit, forwards=sub(GRANTS),
)
requests = st.lists(st.tuples(st.sampled_from(METHODS + ["CONNECT"]), st.sampled_from(REQ_HOSTS),
                              st.sampled_from(PORTS), st.sampled_from(REQ_PATHS)),
                    min_size=1, max_size=30)
field_sets = st.one_of(st.just(tighten.FIELDS), sub(list(tighten.FIELDS), 12))


def inside(path, roots):
    return any(path == r or r == "/" or path.startswith(r.rstrip("/") + "/") for r in roots)


def room(v):
    return float("inf") if v == 0 else v


def egress_allows(policy: Policy, method, host, port, path) -> bool:
    if policy.network is NetworkMode.NONE:
        return False
    r = netrules.Rules(policy.egress_allow, policy.egress_deny, policy.egress_hosts)
    return r.check(method, host, port, None if method == "CONNECT" else path).allowed


def assert_no_looser(result: Policy, than: Policy, fields, reqs) -> None:
    """``result`` allows nothing ``than`` does not, on ``fields``."""
    f = set(fields)
    if "workspace" in f and result.workspace is Access.WRITE:
        assert than.workspace is Access.WRITE
    if "scratch" in f and result.scratch is Access.WRITE:
        assert than.scratch is Access.WRITE
    for name in ("writable", "unprotect"):
        if name in f:
            assert all(inside(p, getattr(than, name)) for p in getattr(result, name)), name
    for name in tighten.UNION:
        if name in f and name != "egress_deny":
            assert set(getattr(than, name)) <= set(getattr(result, name)), name
    for name in tighten.SHARED:
        if name in f:
            assert set(getattr(result, name)) <= set(getattr(than, name)), name
    for name in tighten.BOTH_TRUE:
        if name in f and getattr(than, name):
            assert getattr(result, name), name
    for name in tighten.EITHER_FALSE:
        if name in f and getattr(result, name):
            assert getattr(than, name), name
    for name in tighten.LIMITS:
        if name in f:
            assert room(getattr(result, name)) <= room(getattr(than, name)), name
    if "socket_scan_depth" in f:
        assert result.socket_scan_depth >= than.socket_scan_depth
    if "forwards" in f:  # a host port forward only where both grant it
        assert {g[:3] for g in result.forwards} <= {g[:3] for g in than.forwards}
    if "network" in f and result.network is NetworkMode.PROXY:
        assert than.network is NetworkMode.PROXY
    if {"network", "egress_allow", "egress_deny"} & f:
        for req in reqs:
            if egress_allows(result, *req):
                # the network field of ``than`` may be unconstrained: judge its rules
                opened = dataclasses.replace(than, network=NetworkMode.PROXY) \
                    if "network" not in f else than
                assert egress_allows(opened, *req), (req, result.egress_allow)


@SETTINGS
@given(base=policies, other=policies, fields=field_sets, reqs=requests)
def test_the_result_allows_nothing_base_or_the_constraint_does_not(base, other, fields, reqs):
    result = tighten.tighten(base, other, fields, label="other")
    assert_no_looser(result, base, tighten.FIELDS, reqs)
    assert_no_looser(result, other, fields, reqs)
    for name in tighten.KEPT:
        if result.network is NetworkMode.PROXY or name != "egress_hosts":
            assert getattr(result, name) == getattr(base, name)
    for name in set(tighten.FIELDS) - set(fields):
        if name == "syscall_allow" and "syscall_deny" in fields:
            assert set(result.syscall_allow) <= set(base.syscall_allow)
            assert not set(result.syscall_allow) & (set(other.syscall_deny)
                                                     - set(other.syscall_allow))
            continue
        if name == "allow_read_names" and "deny_read_names" in fields:
            # an exception that would expose a name the constraint hides goes
            assert set(result.allow_read_names) <= set(base.allow_read_names)
            continue
        if name == "env_pass" and "env_deny" in fields:
            # a name the constraint denies is not passed (only what base passes)
            assert set(result.env_pass) <= set(base.env_pass)
            continue
        if result.network is NetworkMode.PROXY or not name.startswith("egress"):
            assert getattr(result, name) == getattr(base, name), name
    assert result.weakenings == base.weakenings
    assert result.chain == base.chain + ("other",)


@SETTINGS
@given(base=policies, reqs=requests)
def test_meeting_a_policy_with_itself_changes_no_permission(base, reqs):
    result = tighten.tighten(base, base)
    for req in reqs:
        assert egress_allows(result, *req) == egress_allows(base, *req)
    for name in tighten.FIELDS:
        if name != "egress_allow" and (base.network is NetworkMode.PROXY
                                       or not name.startswith("egress")):
            assert set(getattr(result, name)) == set(getattr(base, name)) \
                if isinstance(getattr(base, name), tuple) else \
                getattr(result, name) == getattr(base, name), name


def test_a_constraint_cannot_open_anything():
    base = Policy(name="default", chain=("default",), digest="d")
    wide = Policy(name="p", chain=("p",), digest="e", network=NetworkMode.PROXY,
                  egress_allow=(EgressRule("127.0.0.1", (8080,)),), writable=("/srv",),
                  unprotect=("/ws/.vscode",), env_pass=("GITHUB_TOKEN",), syscalls_enabled=False,
                  timeout_seconds=0, core_dumps=True, allow_32bit=True)
    result = tighten.tighten(base, wide, label="p")
    assert result.network is NetworkMode.NONE and result.egress_allow == ()
    assert result.writable == () and result.unprotect == () and result.env_pass == ()
    assert result.syscalls_enabled and not result.core_dumps and not result.allow_32bit
    assert result.tightenings == ()  # nothing changed


def test_what_tightens_is_kept_and_described():
    base = Policy(name="pypi", chain=("default", "pypi"), digest="d", network=NetworkMode.PROXY,
                  egress_allow=(EgressRule("pypi.org", (443,)),
                                EgressRule("*.pythonhosted.org", (443, 80))),
                  writable=("/srv",), timeout_seconds=0)
    narrow = Policy(name="m", chain=("m",), digest="e", network=NetworkMode.PROXY,
                    egress_allow=(EgressRule("files.pythonhosted.org", (443,)),),
                    writable=("/srv/data",), deny_read=("/srv/secret",), timeout_seconds=600)
    result = tighten.tighten(base, narrow, ("egress_allow", "writable", "deny_read",
                                            "timeout_seconds"), label="managed")
    assert [r.host for r in result.egress_allow] == ["files.pythonhosted.org"]
    assert result.egress_allow[0].ports == (443,)
    assert result.writable == ("/srv/data",)
    assert result.deny_read == ("/srv/secret",)
    assert result.timeout_seconds == 600
    keys = {t.key: t.detail for t in result.tightenings}
    assert keys["limits.timeout_seconds"] == "0 -> 600"
    assert "removed pypi.org:443" in keys["network.allow"]
    assert keys["filesystem.writable"] == "added /srv/data; removed /srv"
    assert all(t.source == "managed" for t in result.tightenings)


@pytest.mark.parametrize("a, b, want", [
    ("*.pythonhosted.org", "a.pythonhosted.org", "a.pythonhosted.org"),
    ("*.pythonhosted.org", "*.x.pythonhosted.org", "*.x.pythonhosted.org"),
    ("*.pythonhosted.org", "pythonhosted.org", None),
    ("*.pythonhosted.org", "127.0.0.1", None),
    ("pypi.org", "files.pythonhosted.org", None),
])
def test_host_meet(a, b, want):
    got = tighten.rule_meet(EgressRule(a, (443,)), EgressRule(b, (443,)))
    assert (got.host if got else None) == want
    got = tighten.rule_meet(EgressRule(b, (443,)), EgressRule(a, (443,)))
    assert (got.host if got else None) == want


def test_scoped_rules_meet_on_methods_and_paths():
    a = EgressRule("h.test", (80,), ("GET", "POST"), ("/simple/",))
    b = EgressRule("h.test", (80, 443), ("GET",), ("/simple/pkg", "/other"))
    assert tighten.rule_meet(a, b) == EgressRule("h.test", (80,), ("GET",), ("/simple/pkg",))
    assert tighten.rule_meet(a, EgressRule("h.test", (80,), ("PUT",))) is None
    # an unscoped rule met with a scoped one is scoped: no CONNECT tunnel
    assert tighten.rule_meet(EgressRule("h.test", (443,)), b).scoped()


def test_a_constraint_deny_beats_a_pass_of_base():
    """A name the constraint's env.deny removes is not kept by base's env.pass
    (an --env-pass), unless the constraint passes it too."""
    base = Policy(name="u", chain=("u",), digest="d", env_pass=("CORP_TOKEN", "OTHER"))
    other = Policy(name="m", chain=("m",), digest="e", env_deny=("corp_*",))
    assert tighten.tighten(base, other, ("env_deny",)).env_pass == ("OTHER",)
    other = Policy(name="m", chain=("m",), digest="e", env_deny=("CORP_*",),
                   env_pass=("corp_token",))
    assert tighten.tighten(base, other, ("env_deny",)).env_pass == ("CORP_TOKEN", "OTHER")


def test_require_full_wins():
    base = Policy(name="u", chain=("u",), digest="d")
    other = Policy(name="m", chain=("m",), digest="e", require="full")
    assert tighten.tighten(base, other, ("require",)).require == "full"
    assert tighten.tighten(other, base, ("require",)).require == "full"


def test_a_constraint_hidden_name_beats_an_exception_of_base():
    """default excepts "*.template"; a constraint hiding "credentials.template"
    must hide it (the exception goes), and leaves unrelated exceptions."""
    base = Policy(name="default", chain=("default",), digest="d",
                  deny_read_names=(".env", ".env.*"),
                  allow_read_names=("*.example", "*.template"))
    other = Policy(name="m", chain=("m",), digest="e", deny_read_names=("credentials.template",))
    result = tighten.tighten(base, other, ("deny_read_names",))
    assert result.allow_read_names == ("*.example",)
    other = Policy(name="m", chain=("m",), digest="e", deny_read_names=("*.key", ".env.*"))
    assert tighten.tighten(base, other, ("deny_read_names",)).allow_read_names == \
        base.allow_read_names
    assert tighten._names_overlap("*.template", "secret*")
    assert not tighten._names_overlap("*.template", "*.key")
