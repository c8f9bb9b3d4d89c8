"""sandbox.runflags: the per-call flags' values, their policy, and the plan key."""

from __future__ import annotations

import itertools

import pytest

from sandbox import plancache, runflags
from sandbox.options import RunOptions
from sandbox.policy import EgressRule, NetworkMode, Policy, Weakening


# -- values ---------------------------------------------------------------------

@pytest.mark.parametrize("raw, want", [("30", 30), ("0.5", 0.5), ("1.25", 1.25), ("007", 7),
                                       ("2.0", 2), (".5", 0.5), ("5.", 5), (3, 3), (1.5, 1.5),
                                       (None, None), ("1000000", 1_000_000)])
def test_timeout_values(raw, want):
    got = runflags.parse_timeout(raw)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize("raw", ["0", "0.0", "-1", "abc", "", ".", "1e3", "inf", "nan", "1_0",
                                 " 5", "5s", "1.2.3", "+5", "1000001", True, 0, -2.0,
                                 float("nan"), float("inf")])
def test_bad_timeouts_name_the_flag_and_the_fix(raw):
    with pytest.raises(runflags.FlagError) as err:
        runflags.parse_timeout(raw)
    assert err.value.message.startswith("--timeout: ")
    assert err.value.hint


@pytest.mark.parametrize("raw, want", [
    ("pypi.org", "pypi.org:443"), ("PyPI.org:80", "pypi.org:80"),
    ("127.0.0.1:8080", "127.0.0.1:8080"), ("[::1]:8080", "[::1]:8080"), ("::1", "[::1]:443"),
    ("[::1]", "[::1]:443"), ("*.example.com", "*.example.com:443"), ("h:65535", "h:65535"),
])
def test_allow_host_values(raw, want):
    assert runflags.parse_allow_host(raw) == want
    host, port = runflags.split_host(want)
    assert f"{host}:{port}" == want or f"[{host}]:{port}" == want


@pytest.mark.parametrize("raw", ["", ":80", "h:", "h:0", "h:65536", "h:x", "[::1", "[]:80",
                                 "[::1]80", "[::1]:", "http://h", "u@h", "h/x", " h", "h h"])
def test_bad_allow_hosts(raw):
    with pytest.raises(runflags.FlagError) as err:
        runflags.parse_allow_host(raw)
    assert err.value.message.startswith("--allow-host: ") and "HOST" in err.value.hint


@pytest.mark.parametrize("raw", ["", "1X", "A-B", "A=B", "A B", "É", "A\n"])
def test_bad_env_names(raw):
    with pytest.raises(runflags.FlagError) as err:
        runflags.parse_env_name(raw)
    assert err.value.message.startswith("--env-pass: ")


def test_env_names_and_hosts_are_deduplicated_in_order():
    _, names, _, hosts = runflags.normalize(None, ["B", "A", "B"], None, ["x.org", "x.org:443", "y"])
    assert names == ("B", "A")
    assert hosts == ("x.org:443", "y:443")


def test_network_values():
    assert runflags.parse_network("none") == "none"
    assert runflags.parse_network("proxy") == "proxy"
    for bad in ("None", "off", "", "direct"):
        with pytest.raises(runflags.FlagError):
            runflags.parse_network(bad)


def test_network_none_with_allow_host_is_refused():
    with pytest.raises(runflags.FlagError) as err:
        runflags.normalize(None, (), "none", ["x.org"])
    assert "--network none" in err.value.message


# -- policy ---------------------------------------------------------------------

BASE = Policy(name="p", chain=("p",), digest="d", env_deny=("*TOKEN*",))
PROXIED = Policy(name="p", chain=("p",), digest="d", network=NetworkMode.PROXY,
                 egress_allow=(EgressRule("pypi.org", (443,), source="p"),),
                 egress_deny=(EgressRule("evil.pypi.org", (), source="p"),),
                 egress_hosts=(("pypi.test", "127.0.0.1"),),
                 weakenings=(Weakening("p", "network.mode", "none -> proxy"),
                             Weakening("p", "network.allow", "added pypi.org:443"),
                             Weakening("p", "filesystem.writable", "added /x")))


def opts(**kw) -> RunOptions:
    t, names, mode, hosts = runflags.normalize(kw.pop("timeout", None), kw.pop("env_pass", ()),
                                              kw.pop("network", None), kw.pop("allow_host", ()))
    return RunOptions(command=("true",), timeout=t, env_pass=names, network=mode,
                      allow_host=hosts, **kw)


def test_no_flags_no_change():
    assert runflags.apply(BASE, opts(), {}) is BASE


def test_network_none_tightens_a_proxy_profile_and_drops_its_network_weakenings():
    p = runflags.apply(PROXIED, opts(network="none"), {})
    assert p.network is NetworkMode.NONE
    assert p.egress_allow == p.egress_deny == p.egress_hosts == ()
    assert [w.key for w in p.weakenings] == ["filesystem.writable"]


def test_allow_host_turns_the_proxy_on_as_a_weakening():
    p = runflags.apply(BASE, opts(allow_host=["127.0.0.1:8080", "*.example.com"]), {})
    assert p.network is NetworkMode.PROXY
    assert [(r.host, r.ports) for r in p.egress_allow] == [("127.0.0.1", (8080,)),
                                                          ("*.example.com", (443,))]
    assert [(w.source, w.key) for w in p.weakenings] == [
        ("--allow-host", "network.mode"), ("--allow-host", "network.allow"),
        ("--allow-host", "network.allow")]
    assert p.weakenings[1].detail == "added 127.0.0.1:8080"


def test_allow_host_adds_to_a_proxy_profile_and_keeps_its_deny_rules():
    p = runflags.apply(PROXIED, opts(allow_host=["files.example.org", "pypi.org"]), {})
    assert [r.host for r in p.egress_allow] == ["pypi.org", "files.example.org"]
    assert p.egress_deny == PROXIED.egress_deny and p.egress_hosts == PROXIED.egress_hosts
    new = p.weakenings[len(PROXIED.weakenings):]
    assert [w.detail for w in new] == ["added files.example.org:443"]  # pypi.org was there


def test_network_proxy_alone_on_a_closed_profile_is_a_weakening_that_opens_nothing():
    p = runflags.apply(BASE, opts(network="proxy"), {})
    assert p.network is NetworkMode.PROXY and p.egress_allow == ()
    assert len(p.weakenings) == 1 and "every request is refused" in p.weakenings[0].detail
    assert runflags.apply(PROXIED, opts(network="proxy"), {}).weakenings == PROXIED.weakenings


def test_allow_host_bad_host_is_a_usage_error():
    from sandbox.errors import UsageError

    with pytest.raises(UsageError) as err:
        runflags.apply(BASE, opts(allow_host=["*.com"]), {})
    assert err.value.message.startswith("--allow-host *.com:443:") and err.value.hint


def test_env_pass_says_loudly_when_it_passes_a_secret():
    environ = {"PLAIN": "x", "GH_TOKEN": "whatever", "ODD": "ghp_" + "a" * 36}
    p = runflags.apply(BASE, opts(env_pass=["PLAIN", "GH_TOKEN", "ODD"]), environ)
    assert p.env_pass == ("PLAIN", "GH_TOKEN", "ODD")
    details = [w.detail for w in p.weakenings]
    assert details[0] == "added PLAIN"
    assert "SECRET by its name" in details[1]
    assert "value is a SECRET" in details[2]
    assert all(w.source == "--env-pass" and w.key == "env.pass" for w in p.weakenings)
    assert not any("a" * 36 in d for d in details)  # never the value


def test_timeout_plan_the_shorter_one_wins():
    profile = {"rlimits": (), "cgroup": (), "timeout": 10}
    assert runflags.timeout_plan(profile, None) == (profile, "limits.timeout_seconds")
    assert runflags.timeout_plan(profile, 20) == (profile, "limits.timeout_seconds")
    shorter, source = runflags.timeout_plan(profile, 2.5)
    assert shorter["timeout"] == 2.5 and source == "--timeout" and profile["timeout"] == 10
    none = {"rlimits": (), "cgroup": (), "timeout": None}
    assert runflags.timeout_plan(none, 3)[0]["timeout"] == 3
    assert runflags.timeout_plan(None, 3)[0]["timeout"] == 3


# -- the cached plan's key: one set of flags never reads another's plan ---------

def test_every_flag_combination_has_its_own_plan_key():
    environ = {"HOME": "/h", "PATH": "/usr/bin", "A": "x", "B": "y"}
    keys = {}
    for network, hosts, names in itertools.product(
            (None, "none", "proxy"), ((), ("a.org",), ("a.org:80",), ("a.org", "b.org")),
            ((), ("A",), ("B",), ("A", "B"), ("B", "A"))):
        if network == "none" and hosts:
            continue
        o = opts(network=network, allow_host=hosts, env_pass=names)
        keys.setdefault(plancache.key(o, environ), []).append((network, hosts, names))
    assert all(len(v) == 1 for v in keys.values()), [v for v in keys.values() if len(v) > 1]


def test_the_key_follows_whether_a_passed_value_is_a_secret():
    o = opts(env_pass=["X"])
    plain = plancache.key(o, {"HOME": "/h", "X": "hello"})
    assert plancache.key(o, {"HOME": "/h", "X": "world"}) == plain  # same words in the plan
    assert plancache.key(o, {"HOME": "/h", "X": "ghp_" + "b" * 36}) != plain


def test_timeout_and_quiet_share_a_plan():
    """They are applied when the run starts, not planned: one plan serves them all."""
    environ = {"HOME": "/h"}
    assert plancache.key(opts(timeout="5"), environ) == plancache.key(opts(), environ)
    assert plancache.key(opts(quiet=True), environ) == plancache.key(opts(), environ)


def test_the_audit_log_setting_is_part_of_the_key():
    o = opts()
    base = plancache.key(o, {"HOME": "/h"})
    assert plancache.key(o, {"HOME": "/h", "SANDBOX_AUDIT_LOG": "/var/log/x"}) != base
    assert plancache.key(o, {"HOME": "/h", "XDG_STATE_HOME": "/s"}) != base
