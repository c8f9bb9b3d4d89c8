"""Unit and property tests for sandbox.egress.netrules (pure: nothing here resolves or connects).

The addresses below are only numbers handed to a pure function; the names are
never looked up.
"""

from __future__ import annotations

import dataclasses
import re
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.egress.netrules import (
    Decision, HostError, PathError, RuleError, Rules, describe, normalize_host, normalize_path,
    parse_hosts, parse_rule, validate_method, validate_path, validate_pattern, validate_port)
from sandbox.policy import EgressRule

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LOOPBACK = IPv4Address("127.0.0.1")


# -- normalize_host ----------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("pypi.org", "pypi.org"),
    ("PyPI.ORG", "pypi.org"),
    ("pypi.org.", "pypi.org"),
    ("localhost", "localhost"),
    ("a-b.c-d.example", "a-b.c-d.example"),
    ("xn--bcher-kva.de", "xn--bcher-kva.de"),
    ("bücher.de", "xn--bcher-kva.de"),
    ("BÜCHER.de.", "xn--bcher-kva.de"),
    ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
    ("allowed.cοm", "allowed.xn--cm-jbc"),  # Greek omicron: a different name
    ("a" * 63 + ".com", "a" * 63 + ".com"),
    (".".join(["a" * 63] * 3 + ["b" * 61]), ".".join(["a" * 63] * 3 + ["b" * 61])),  # 253
    ("1a.example", "1a.example"),
    ("example.0xg", "example.0xg"),  # not a number: a name
])
def test_normalize_host_names(raw, expected):
    assert normalize_host(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("127.0.0.1", LOOPBACK),
    ("127.0.0.1.", LOOPBACK),
    ("2130706433", LOOPBACK),
    ("0x7f000001", LOOPBACK),
    ("0x7F000001", LOOPBACK),
    ("0177.0.0.1", LOOPBACK),
    ("0x7f.0.0.1", LOOPBACK),
    ("0X7F.1", LOOPBACK),
    ("127.1", LOOPBACK),
    ("127.0.1", LOOPBACK),
    ("0177.0x0.00.01", LOOPBACK),
    ("0", IPv4Address("0.0.0.0")),
    ("4294967295", IPv4Address("255.255.255.255")),
    ("10.0x10000", IPv4Address("10.1.0.0")),
    ("[::1]", IPv6Address("::1")),
    ("::1", IPv6Address("::1")),
    ("[2001:DB8::1]", IPv6Address("2001:db8::1")),
    ("::ffff:127.0.0.1", LOOPBACK),
    ("[::ffff:127.0.0.1]", LOOPBACK),
    ("::ffff:7f00:1", LOOPBACK),
    ("::FFFF:7F00:1", LOOPBACK),
    ("::127.0.0.1", IPv6Address("::7f00:1")),  # IPv4-compatible is not collapsed
])
def test_normalize_host_addresses(raw, expected):
    got = normalize_host(raw)
    assert type(got) is type(expected) and got == expected


@pytest.mark.parametrize("raw, reason", [
    ("", "empty"),
    (None, "not text"),
    (b"pypi.org", "not text"),
    ("\x00", "NUL"),
    ("a\x00b.com", "NUL"),
    ("a\x01b.com", "control character"),
    ("a\x7f.com", "control character"),
    ("a.com\r\n", "control character"),
    ("a b.com", "whitespace"),
    ("a\u3000b.com", "whitespace"),
    ("a\u00a0b.com", "whitespace"),
    ("a@b.com", "'@'"),
    ("a/b.com", "'/'"),
    ("a\\b.com", "'\\\\'"),
    ("a#b.com", "'#'"),
    ("a?b.com", "'?'"),
    ("a%2eb.com", "'%'"),
    ("a.com:80", "':'"),
    ("*.a.com", "'*'"),
    ("*", "'*'"),
    ("a..b", "empty label"),
    (".a", "empty label"),
    (".", "only a dot"),
    ("..", "more than one dot"),
    ("a.com..", "more than one dot"),
    ("-a.com", "'-'"),
    ("a-.com", "'-'"),
    ("a.-b.com", "'-'"),
    ("a_b.com", "'_'"),
    ("_dmarc.a.com", "'_'"),
    ("a" * 64 + ".com", "63"),
    (".".join(["a" * 63] * 4), "253"),
    ("a!b.com", "'!'"),
    ("a[b.com", "'['"),
    ("a\u3002com", "full-width dot"),
    ("a\uff0ecom", "full-width dot"),
    ("a\uff61com", "full-width dot"),
    ("ｅｘａｍｐｌｅ.com", "look-alike"),
    ("straße.de", "look-alike"),
    ("a\u00adb.com", "look-alike"),  # soft hyphen vanishes in nameprep
    ("１２７.0.0.1", "look-alike"),
    ("allowed\u2024com", "look-alike"),  # one dot leader folds to '.'
    ("xn--ü.com", "international"),
    ("\u200b.com", "international"),
    ("a\u202eb.com", "international"),  # bidi override: prohibited
    ("1.2.3.999", "out of range"),
    ("256.1.1.1", "out of range"),
    ("1.2.65536", "out of range"),
    ("4294967296", "out of range"),
    ("0x100000000", "out of range"),
    ("example.123", "not an IPv4"),
    ("a.1", "not an IPv4"),
    ("1.2.3.4.5", "more than four"),
    ("08.0.0.1", "not an IPv4"),
    ("0x", "not an IPv4"),
    ("1.0x", "not an IPv4"),
    ("[127.0.0.1]", "IPv6"),
    ("[::1", "bracket"),
    ("::1]", "bracket"),
    ("[]", "IPv6"),
    ("[a.com]", "IPv6"),
    ("1::2::3", "IPv6"),
    ("::ffff:0177.0.0.1", "IPv6"),
    ("fe80::1%eth0", "zone"),
    ("[fe80::1%25eth0]", "zone"),
])
def test_normalize_host_refused(raw, reason):
    with pytest.raises(HostError) as info:
        normalize_host(raw)
    assert reason in str(info.value)


# -- validate_pattern --------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("pypi.org", "pypi.org"),
    ("PyPI.org.", "pypi.org"),
    ("localhost", "localhost"),
    ("pypi", "pypi"),
    ("*.pythonhosted.org", "*.pythonhosted.org"),
    ("*.PythonHosted.ORG.", "*.pythonhosted.org"),
    ("*.github.io", "*.github.io"),
    ("*.example.co.uk", "*.example.co.uk"),
    ("*.co.example", "*.co.example"),
    ("*.bücher.de", "*.xn--bcher-kva.de"),
    ("127.0.0.1", "127.0.0.1"),
    ("2130706433", "127.0.0.1"),
    ("[::1]", "::1"),
    ("::ffff:127.0.0.1", "127.0.0.1"),
    ("2001:DB8:0::1", "2001:db8::1"),
])
def test_validate_pattern(raw, expected):
    assert validate_pattern(raw) == expected
    assert validate_pattern(expected) == expected


@pytest.mark.parametrize("raw", [
    "*", "", "*.", "*.com", "*.COM.", "*.co.uk", "*.com.au", "*.ac.jp", "*.or.jp", "*.ltd.uk",
    "**.a.com", "*.*.a.com", "foo.*.com", "*foo.com", "a*.com", "a.com*", "*.a*.com",
    "*.1.2.3.4", "*.127.1", "*.[::1]", "*.::1", "*.a..com", "*.a.com..", "a b.com",
    "a.com:443", "user@a.com", "http://a.com", "1.2.3.999", "fe80::1%eth0", 5, None, ["a.com"],
])
def test_validate_pattern_refused(raw):
    with pytest.raises(RuleError) as info:
        validate_pattern(raw)
    assert info.value.key == "host"
    assert str(info.value) and info.value.hint


def test_rule_error_parts():
    err = RuleError("ports", "port 0 is out of range", "ports go from 1 to 65535")
    assert isinstance(err, ValueError)
    assert (err.key, str(err), err.hint) == ("ports", "port 0 is out of range",
                                             "ports go from 1 to 65535")
    assert RuleError("", "x").hint == ""


# -- methods, paths, ports -----------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("GET", "GET"), ("get", "GET"), ("M-SEARCH", "M-SEARCH"), ("PROPFIND", "PROPFIND"),
    ("X_Custom.1~", "X_CUSTOM.1~"), ("A" * 32, "A" * 32),
])
def test_validate_method(raw, expected):
    assert validate_method(raw) == expected


@pytest.mark.parametrize("raw", [
    "", "GE T", "GET\r\n", "GET\n", "G/ET", "G(ET)", "G\"ET", "A" * 33, "GÉT", "ıget",
    "CONNECT", "connect", 5, None, b"GET",
])
def test_validate_method_refused(raw):
    with pytest.raises(RuleError) as info:
        validate_method(raw)
    assert info.value.key == "methods" and info.value.hint


@pytest.mark.parametrize("raw", [
    "/", "/simple", "/simple/", "/packages/*/x", "/a/[0-9]*", "/a/[!x]", "/a~b/-_.x/",
    "/a/.well-known", "/a/..x", "/a;b=c", "/@scope/pkg", "/*",
])
def test_validate_path(raw):
    assert validate_path(raw) == raw


@pytest.mark.parametrize("raw", [
    "", "simple", "*", "/a b", "/a\x00", "/a\t", "/a\x7f", "/a#b", "/a?b", "/a/../b", "/a/./b",
    "/..", "/.", "/a/..", "//a", "/a//b", "/a%2fb", "/a%20b", "/a\\b", "/café", "/a/[0-9",
    "/a]b", "/a/[]", 5, None, ["/a"],
])
def test_validate_path_refused(raw):
    with pytest.raises(RuleError) as info:
        validate_path(raw)
    assert info.value.key == "paths" and info.value.hint


@pytest.mark.parametrize("raw", [1, 80, 443, 65535])
def test_validate_port(raw):
    assert validate_port(raw) == raw


@pytest.mark.parametrize("raw", [0, -1, 65536, 10**20, True, False, "443", 443.0, None, [443]])
def test_validate_port_refused(raw):
    with pytest.raises(RuleError) as info:
        validate_port(raw)
    assert info.value.key == "ports" and info.value.hint


# -- parse_rule ----------------------------------------------------------------------------

def test_parse_rule_full():
    rule = parse_rule({"host": "PyPI.org", "ports": [443, 80, 443], "methods": ["get", "HEAD", "GET"],
                       "paths": ["/simple/", "/packages/", "/simple/"]}, "pypi: network.allow[1]")
    assert rule == EgressRule("pypi.org", (443, 80), ("GET", "HEAD"), ("/simple/", "/packages/"),
                              "pypi: network.allow[1]")
    assert rule.scoped()


def test_parse_rule_defaults():
    assert parse_rule({"host": "a.com"}, "s") == EgressRule("a.com", (443,), (), (), "s")
    assert parse_rule({"host": "a.com"}, "s", deny=True) == EgressRule("a.com", (), (), (), "s")
    assert parse_rule({"host": "a.com", "ports": [22]}, "s", deny=True).ports == (22,)
    assert parse_rule({"host": "2130706433", "ports": (80,)}, "s").host == "127.0.0.1"


@pytest.mark.parametrize("table, key, words", [
    ({"host": "a.com", "port": [443]}, "port", "unknown key"),
    ({"host": "a.com", "Host": "b.com"}, "Host", "unknown key"),
    ({"ports": [443]}, "host", "no host"),
    ({}, "host", "no host"),
    ({"host": 5}, "host", "string"),
    ({"host": ["a.com"]}, "host", "string"),
    ({"host": "*.com"}, "host", "top-level"),
    ({"host": "a.com", "ports": 443}, "ports", "list"),
    ({"host": "a.com", "ports": "443"}, "ports", "list"),
    ({"host": "a.com", "ports": []}, "ports", "empty"),
    ({"host": "a.com", "ports": ["443"]}, "ports", "whole number"),
    ({"host": "a.com", "ports": [0]}, "ports", "out of range"),
    ({"host": "a.com", "methods": "GET"}, "methods", "list"),
    ({"host": "a.com", "methods": []}, "methods", "empty"),
    ({"host": "a.com", "methods": [1]}, "methods", "string"),
    ({"host": "a.com", "methods": ["GE T"]}, "methods", "not an HTTP method"),
    ({"host": "a.com", "paths": "/simple/"}, "paths", "list"),
    ({"host": "a.com", "paths": []}, "paths", "empty"),
    ({"host": "a.com", "paths": ["simple"]}, "paths", "start with '/'"),
    ({"host": "a.com", "paths": [{"a": 1}]}, "paths", "string"),
])
def test_parse_rule_refused(table, key, words):
    with pytest.raises(RuleError) as info:
        parse_rule(table, "p: network.allow[0]")
    assert info.value.key == key
    assert words in str(info.value)
    assert info.value.hint


def test_parse_rule_hints():
    with pytest.raises(RuleError) as info:
        parse_rule({"host": "a.com", "verbs": ["GET"]}, "s")
    assert "host, ports, methods and paths" in info.value.hint
    with pytest.raises(RuleError) as info:
        parse_rule({"host": "a.com", "ports": []}, "s")
    assert "leave ports out" in info.value.hint and "443" in info.value.hint
    with pytest.raises(RuleError) as info:
        parse_rule({"host": "a.com", "ports": []}, "s", deny=True)
    assert "every port" in info.value.hint
    with pytest.raises(RuleError) as info:
        parse_rule("a.com", "s")
    assert info.value.key == ""


# -- parse_hosts -----------------------------------------------------------------------------

def test_parse_hosts():
    assert parse_hosts({}) == ()
    assert parse_hosts({"z.test": "10.0.0.5", "PyPI.test.": "127.0.0.1",
                        "six.test": "[::ffff:127.0.0.1]", "v6.test": "2001:DB8::1"}) == (
        ("pypi.test", "127.0.0.1"), ("six.test", "127.0.0.1"), ("v6.test", "2001:db8::1"),
        ("z.test", "10.0.0.5"))


@pytest.mark.parametrize("table", [
    ["pypi.test"], "pypi.test=127.0.0.1",
    {"127.0.0.1": "127.0.0.1"}, {"[::1]": "::1"}, {"*.test": "127.0.0.1"}, {"a..test": "127.0.0.1"},
    {"a.test": "b.test"}, {"a.test": 2130706433}, {"a.test": ["127.0.0.1"]}, {"a.test": ""},
    {"a.test": "127.0.0.1:80"}, {"a.test": "fe80::1%eth0"},
    {"a.test": "127.0.0.1", "A.TEST": "10.0.0.1"}, {1: "127.0.0.1"},
])
def test_parse_hosts_refused(table):
    with pytest.raises(RuleError) as info:
        parse_hosts(table)
    assert info.value.key == "hosts" and info.value.hint


# -- normalize_path --------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("/", "/"),
    ("/simple/", "/simple/"),
    ("/simple/?q=1", "/simple/"),
    ("/simple?", "/simple"),
    ("/?x/../y//z%2f\\", "/"),  # the query is dropped, never looked at
    ("/a%7Eb/%41%2d%5F%2E%30", "/a~b/A-_.0"),
    ("/a%c3%a9", "/a%C3%A9"),
    ("/a%2e", "/a."),
    ("/a/.well-known/x", "/a/.well-known/x"),
    ("/a/..b/c..", "/a/..b/c.."),
    ("/%252e%252e/", "/%252e%252e/"),  # an encoded '%' stays encoded
    ("/a;b=c/d", "/a;b=c/d"),
])
def test_normalize_path(raw, expected):
    assert normalize_path(raw) == expected


@pytest.mark.parametrize("raw, reason", [
    ("", "start with '/'"),
    ("a/b", "start with '/'"),
    ("*", "start with '/'"),
    ("?/a", "start with '/'"),
    ("http://a.com/", "start with '/'"),
    ("/simple/../admin", "'..' segment"),
    ("/simple/%2e%2e/admin", "'..' segment"),
    ("/simple/%2E%2e/admin", "'..' segment"),
    ("/simple/.%2e/admin", "'..' segment"),
    ("/simple/./admin", "'..' segment"),
    ("/simple/%2e/admin", "'..' segment"),
    ("/simple/..", "'..' segment"),
    ("/simple/.", "'..' segment"),
    ("/simple/..;/admin", "'..' segment"),
    ("/simple/..;x=1/admin", "'..' segment"),
    ("/simple%2fadmin", "encoded slash"),
    ("/simple%2Fadmin", "encoded slash"),
    ("/a%5cb", "encoded backslash"),
    ("/a%5Cb", "encoded backslash"),
    ("/a%00", "encoded NUL"),
    ("//evil", "'//'"),
    ("/a//b", "'//'"),
    ("/a/%2e%2e%2f", "encoded slash"),
    ("/a\\b", "backslash"),
    ("/a#b", "'#'"),
    ("/a?b#c", "'#'"),
    ("/a b", "space"),
    ("/a\tb", "control"),
    ("/a\r\nHost: evil", "control"),
    ("/a?x\ny", "control"),
    ("/a\x00", "NUL"),
    ("/a\x7f", "control"),
    ("/é", "non-ASCII"),
    ("/a%", "two hex digits"),
    ("/a%2", "two hex digits"),
    ("/a%zz", "two hex digits"),
    ("/a%%41", "two hex digits"),
    (None, "not text"),
    (b"/", "not text"),
])
def test_normalize_path_refused(raw, reason):
    with pytest.raises(PathError) as info:
        normalize_path(raw)
    assert reason in str(info.value)


# -- describe ------------------------------------------------------------------------------

@pytest.mark.parametrize("rule, text", [
    (EgressRule("pypi.org", (443,), ("GET",), ("/simple/",)), "pypi.org:443 GET /simple/"),
    (EgressRule("pypi.org"), "pypi.org:443"),
    (EgressRule("*.a.org", (80, 443), ("GET", "HEAD"), ("/x/", "/y")), "*.a.org:80,443 GET,HEAD /x/ /y"),
    (EgressRule("::1", (8080,)), "[::1]:8080"),
    (EgressRule("evil.com", ()), "evil.com:*"),
])
def test_describe(rule, text):
    assert describe(rule) == text


# -- Rules.check -----------------------------------------------------------------------------

PYPI = EgressRule("pypi.org", (443, 80), ("GET", "HEAD"), ("/simple/", "/packages"), "pypi: network.allow[0]")
FILES = EgressRule("*.pythonhosted.org", (443,), source="pypi: network.allow[1]")
GITHUB = EgressRule("github.com", (443,), source="git: network.allow[0]")
LOCAL = EgressRule("127.0.0.1", (8080,), source="dev: network.allow[0]")
NO_SSH = EgressRule("github.com", (), source="strict: network.deny[0]")
NO_POST = EgressRule("api.github.com", (), ("POST",), source="strict: network.deny[1]")
API = EgressRule("api.github.com", (443, 80), source="git: network.allow[1]")


@pytest.fixture(scope="module")
def rules():
    return Rules([PYPI, FILES, GITHUB, LOCAL, API], [NO_POST])


@pytest.mark.parametrize("method, host, port, path, allowed, reason, shown", [
    ("CONNECT", "files.pythonhosted.org", 443, None, True,
     "allowed by a [[network.allow]] rule (pypi: network.allow[1])", "files.pythonhosted.org"),
    ("CONNECT", "a.b.pythonhosted.org", 443, None, True, None, "a.b.pythonhosted.org"),
    ("CONNECT", "pythonhosted.org", 443, None, False, "host not allowed", "pythonhosted.org"),
    ("CONNECT", "evilpythonhosted.org", 443, None, False, "host not allowed", "evilpythonhosted.org"),
    ("CONNECT", "GitHub.com.", 443, None, True, None, "github.com"),
    ("CONNECT", "github.com", 22, None, False, "port 22 not allowed for github.com", "github.com"),
    ("CONNECT", "pypi.org", 443, None, False,
     "CONNECT refused: the rule for pypi.org limits methods or paths, which cannot be checked "
     "inside a TLS tunnel (add inspect = true to the rule to check them inside HTTPS)",
     "pypi.org"),
    ("GET", "pypi.org", 80, "/simple/requests/", True,
     "allowed by a [[network.allow]] rule (pypi: network.allow[0])", "pypi.org"),
    ("GET", "pypi.org", 80, "/simple/?q=1", True, None, "pypi.org"),
    # methods are case-sensitive, and forwarded as written: "get" is not GET
    ("get", "pypi.org", 80, "/simple/", False, "method get not allowed for pypi.org", "pypi.org"),
    ("HEAD", "pypi.org", 80, "/packages", True, None, "pypi.org"),
    ("GET", "pypi.org", 80, "/packages/a/b.whl", True, None, "pypi.org"),
    ("GET", "pypi.org", 80, "/%73imple/x", True, None, "pypi.org"),  # %73 = 's'
    ("POST", "pypi.org", 80, "/simple/", False, "method POST not allowed for pypi.org", "pypi.org"),
    ("GET", "pypi.org", 80, "/upload", False, "path /upload not allowed for pypi.org", "pypi.org"),
    ("GET", "pypi.org", 80, "/simple", False, "path /simple not allowed for pypi.org", "pypi.org"),
    ("GET", "pypi.org", 80, "/packagesx", False, "path /packagesx not allowed for pypi.org", "pypi.org"),
    ("GET", "pypi.org", 8080, "/simple/", False, "port 8080 not allowed for pypi.org", "pypi.org"),
    ("GET", "pypi.org", 80, "/simple/../admin", False,
     "bad path: the path contains a '.' or '..' segment", "pypi.org"),
    ("GET", "pypi.org", 80, "/simple%2fadmin", False,
     "bad path: the path contains an encoded slash (%2F)", "pypi.org"),
    ("GET", "api.github.com", 80, "/repos", True, None, "api.github.com"),
    ("POST", "api.github.com", 80, "/repos", False,
     "denied by a [[network.deny]] rule (strict: network.deny[1])", "api.github.com"),
    ("CONNECT", "api.github.com", 443, None, False,
     "denied by a [[network.deny]] rule (strict: network.deny[1])", "api.github.com"),
    ("GET", "127.0.0.1", 8080, "/", True, None, "127.0.0.1"),
    ("GET", "2130706433", 8080, "/", True, None, "127.0.0.1"),
    ("GET", "localhost", 8080, "/", False, "host not allowed", "localhost"),
    ("GET", "127.0.0.2", 8080, "/", False, "host not allowed", "127.0.0.2"),
    ("GET", "::1", 8080, "/", False, "host not allowed", "::1"),
    ("GET", "127.0.0.1", 80, "/", False, "port 80 not allowed for 127.0.0.1", "127.0.0.1"),
    ("GET", "a\x00.com", 80, "/", False, "bad host: the host name contains a NUL character",
     "a\\x00.com"),
    ("GET", None, 80, "/", False, "bad host: the host name is not text", "None"),
    ("GET", "github.com", 0, "/", False, "bad port: 0 is not a port number (1-65535)", "github.com"),
    ("GET", "github.com", 65536, "/", False, None, "github.com"),
    ("GET", "github.com", True, "/", False, None, "github.com"),
    ("GET", "github.com", "443", "/", False, None, "github.com"),
    ("GE T", "github.com", 443, "/", False, "bad method: GE T is not an HTTP method", "github.com"),
    ("", "github.com", 443, "/", False, None, "github.com"),
    (None, "github.com", 443, "/", False, None, "github.com"),
    ("GET\r\n", "github.com", 443, "/", False, None, "github.com"),
    ("GET", "github.com", 443, None, False,
     "bad method: only CONNECT opens a tunnel, and it takes no path", "github.com"),
    ("CONNECT", "github.com", 443, "/", False, None, "github.com"),
    ("GET", "github.com", 443, 5, False, "bad path: the path is not text", "github.com"),
])
def test_check(rules, method, host, port, path, allowed, reason, shown):
    decision = rules.check(method, host, port, path)
    assert isinstance(decision, Decision)
    assert decision.allowed is allowed
    if reason is not None:
        assert decision.reason == reason
    assert decision.host == shown
    if allowed:
        assert decision.rule is not None and decision.rule in rules.allow


def test_check_reports_the_rule(rules):
    assert rules.check("CONNECT", "github.com", 443, None).rule == GITHUB
    assert rules.check("POST", "api.github.com", 80, "/").rule == NO_POST
    assert rules.check("CONNECT", "pypi.org", 443, None).rule == PYPI
    assert rules.check("CONNECT", "nowhere.example", 443, None).rule is None


def test_deny_wins_and_covers_every_port():
    rules = Rules([GITHUB, EgressRule("github.com", (22, 443))], [NO_SSH])
    for port in (22, 443, 9418):
        decision = rules.check("CONNECT", "github.com", port, None)
        assert not decision.allowed
        assert decision.reason == "denied by a [[network.deny]] rule (strict: network.deny[0])"
    # the deny rule names github.com exactly: its subdomains are not covered
    assert Rules([EgressRule("*.github.com")], [NO_SSH]).check(
        "CONNECT", "api.github.com", 443, None).allowed


def test_empty_ports_deny_every_port_but_allow_none():
    assert not Rules([EgressRule("a.test", ())]).check("CONNECT", "a.test", 443, None).allowed
    assert not Rules([EgressRule("a.test")], [EgressRule("a.test", ())]).check(
        "CONNECT", "a.test", 443, None).allowed


def test_deny_reason_without_source():
    rules = Rules([GITHUB], [EgressRule("github.com", (443,), ("POST",))])
    assert rules.check("POST", "github.com", 443, "/").reason == \
        "denied by a [[network.deny]] rule (github.com:443 POST)"


def test_scoped_deny_on_paths():
    deny = EgressRule("pypi.org", (), (), ("/admin/",), "d")
    rules = Rules([EgressRule("pypi.org", (80, 443))], [deny])
    assert rules.check("GET", "pypi.org", 80, "/simple/").allowed
    assert not rules.check("GET", "pypi.org", 80, "/admin/x").allowed
    assert not rules.check("GET", "pypi.org", 80, "/admin/").allowed
    assert not rules.check("CONNECT", "pypi.org", 443, None).allowed  # unknowable inside a tunnel


def test_tunnel_allowed_by_one_unscoped_rule_among_scoped():
    rules = Rules([PYPI, EgressRule("pypi.org", (443,), source="u")])
    decision = rules.check("CONNECT", "pypi.org", 443, None)
    assert decision.allowed and decision.rule.source == "u"


def test_method_rule_and_path_rule_separately():
    rules = Rules([EgressRule("h.test", (80,), ("GET",), ("/simple/",)),
                   EgressRule("h.test", (80,), ("POST",), ("/upload/",))])
    assert rules.check("GET", "h.test", 80, "/simple/x").allowed
    assert rules.check("POST", "h.test", 80, "/upload/x").allowed
    assert rules.check("POST", "h.test", 80, "/simple/x").reason == \
        "path /simple/x not allowed for h.test"
    assert rules.check("PUT", "h.test", 80, "/simple/x").reason == "method PUT not allowed for h.test"


def test_rules_normalize_directly_built_rules():
    rules = Rules([EgressRule("PyPI.ORG.", (80,), ("get",)), EgressRule("[::FFFF:127.0.0.1]", (80,))])
    assert rules.allow[0].host == "pypi.org" and rules.allow[0].methods == ("GET",)
    assert rules.check("GET", "pypi.org", 80, "/").allowed
    assert rules.check("GET", "127.1", 80, "/").allowed
    with pytest.raises(RuleError):
        Rules([EgressRule("*")])


@pytest.mark.parametrize("pattern, path, expected", [
    ("/simple", "/simple", True),
    ("/simple", "/simple/", True),
    ("/simple", "/simple/x", True),
    ("/simple", "/simplex", False),
    ("/simple", "/", False),
    ("/simple/", "/simple/", True),
    ("/simple/", "/simple/x/y", True),
    ("/simple/", "/simple", False),
    ("/simple/", "/simplex/", False),
    ("/", "/anything/at/all", True),
    ("/a/*/c", "/a/b/c", True),
    ("/a/*/c", "/a/b/x/c", False),  # '*' does not cross '/'
    ("/a/*/c", "/a//c", False),  # refused as a request anyway
    ("/a/*/c", "/a/b/c/d", False),  # globs are whole paths, not prefixes
    ("/a/*", "/a/", True),
    ("/a/*", "/a/b", True),
    ("/a/*", "/a/b/", False),
    ("/a/*.whl", "/a/x-1.0.whl", True),
    ("/a/*.whl", "/a/x-1.0.tar.gz", False),
    ("/v[0-9]/x", "/v1/x", True),
    ("/v[0-9]/x", "/va/x", False),
    ("/v[!0-9]/x", "/va/x", True),
    ("/*", "/%2e%2e", False),  # decoded to '..' and refused
    ("/A", "/a", False),  # paths are case-sensitive
])
def test_path_rules(pattern, path, expected):
    rules = Rules([EgressRule("h.test", (80,), (), (validate_path(pattern),))])
    assert rules.check("GET", "h.test", 80, path).allowed is expected


# -- the evil corpus ---------------------------------------------------------------------------

EVIL_RULES = [EgressRule("allowed.com", (80, 443)), EgressRule("*.allowed.com", (80, 443))]


@pytest.mark.parametrize("host", [
    "allowed.com\x00.evil.com", "allowed.com@evil.com", "evil.com#.allowed.com",
    "evil.com/.allowed.com", "evil.com?.allowed.com", "evil.com\\.allowed.com",
    "allowed.com.evil.com", "evilallowed.com", "allowed.com..", " allowed.com", "allowed.com ",
    "allowed.cοm", "аllowed.com",  # Greek omicron; Cyrillic a
    "allowed.com\t", "allowed.com\r\nX: y", "allowed.com:443", "allowed.com%00",
    "allowed.com\u3002", "allowed\uff0ecom", "ａｌｌｏｗｅｄ.com", "x.allowed.com.evil.com",
    "allowed.com.\x00", "*.allowed.com", "[allowed.com]", ".allowed.com", "..allowed.com",
    "allowed\u00ad.com", "allowed.c\u200bom", "xn--allowed.com", "allowed.com/",
])
def test_evil_hosts_refused(host):
    rules = Rules(EVIL_RULES)
    for method, port, path in (("CONNECT", 443, None), ("GET", 80, "/")):
        assert not rules.check(method, host, port, path).allowed, (host, method)


@pytest.mark.parametrize("host, shown", [
    ("ALLOWED.COM", "allowed.com"), ("allowed.com.", "allowed.com"), ("Sub.Allowed.Com.", "sub.allowed.com"),
    ("a.b.allowed.com", "a.b.allowed.com"),
])
def test_evil_corpus_lookalikes_that_are_fine(host, shown):
    decision = Rules(EVIL_RULES).check("CONNECT", host, 443, None)
    assert decision.allowed and decision.host == shown


LOOPBACK_SPELLINGS = ["127.0.0.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.1", "127.0.1",
                      "0x7f.0.0.1", "0X7F.1", "127.0.0.1.", "[::ffff:127.0.0.1]", "::ffff:7f00:1",
                      "::ffff:127.0.0.1"]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_loopback_spellings(host):
    assert not Rules(EVIL_RULES).check("GET", host, 80, "/").allowed
    assert not Rules(EVIL_RULES).check("CONNECT", host, 443, None).allowed
    named = Rules([*EVIL_RULES, EgressRule("127.0.0.1", (80, 443))])
    for method, port, path in (("CONNECT", 443, None), ("GET", 80, "/")):
        decision = named.check(method, host, port, path)
        assert decision.allowed and decision.host == "127.0.0.1"
    # and a deny rule for the address catches every spelling too
    denied = Rules([EgressRule("127.0.0.1", (80,))], [EgressRule("0x7f.1", ())])
    assert not denied.check("GET", host, 80, "/").allowed


@pytest.mark.parametrize("path", ["/simple/../admin", "/simple/%2e%2e/admin", "/simple%2fadmin",
                                  "//evil", "/a\\b", "/simple/..;/admin", "/simple/%2E./admin",
                                  "/simple/\x00", "/simple/#x", "/simple/%5c../admin"])
def test_evil_paths_refused(path):
    rules = Rules([EgressRule("pypi.org", (80,), (), ("/simple/", "/a"))])
    decision = rules.check("GET", "pypi.org", 80, path)
    assert not decision.allowed and decision.reason.startswith("bad path: ")


def test_query_is_not_a_path():
    rules = Rules([EgressRule("pypi.org", (80,), (), ("/simple/",))])
    assert rules.check("GET", "pypi.org", 80, "/simple/?q=1").allowed
    assert not rules.check("GET", "pypi.org", 80, "/admin?/simple/").allowed


# -- addresses -----------------------------------------------------------------------------------

REFUSED_ADDRESSES = [
    "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1", "127.0.0.1", "127.8.9.10",
    "169.254.169.254", "100.100.100.200", "100.64.0.1", "0.0.0.0", "0.1.2.3", "224.0.0.1",
    "239.255.255.250", "255.255.255.255", "240.0.0.1", "192.0.0.1", "192.0.2.1", "198.18.0.1",
    "198.19.255.255", "198.51.100.7", "203.0.113.9", "192.88.99.1",
    "::", "::1", "fe80::1", "fec0::1", "fc00::1", "fd00:ec2::254", "ff02::1", "100::1",
    "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::10.0.0.1", "64:ff9b::a00:1",
    "64:ff9b::a9fe:a9fe", "64:ff9b:1::808:808", "2002:a00:1::1", "2002:7f00:1::", "2001::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001:db8::1", "2001:2::1", "3fff::1", "4000::1",
]


@pytest.mark.parametrize("addr", REFUSED_ADDRESSES)
def test_address_refused(addr):
    rules = Rules([EgressRule("example.com")])
    why = rules.address_refusal("example.com", ip_address(addr))
    assert why and why.startswith("address ") and " of example.com " in why
    assert "network.hosts" in why


@pytest.mark.parametrize("addr", ["93.184.216.34", "8.8.8.8", "1.1.1.1", "100.63.255.255",
                                  "100.128.0.0", "172.32.0.1", "192.169.0.1", "2606:4700::1",
                                  "2a00:1450:4001::1", "::ffff:93.184.216.34", "64:ff9b::808:808",
                                  "2002:808:808::1", "::8.8.8.8"])
def test_address_accepted(addr):
    assert Rules([EgressRule("example.com")]).address_refusal("example.com", ip_address(addr)) is None


def test_address_refusal_words():
    rules = Rules([])
    assert rules.address_refusal("example.com", ip_address("10.0.0.5")) == (
        'address 10.0.0.5 of example.com is private (10.0.0.0/8); to allow it, pin the name in '
        'network.hosts ("example.com" = "10.0.0.5")')
    assert "embeds 10.0.0.1 (NAT64), which is private" in rules.address_refusal(
        "example.com", ip_address("64:ff9b::a00:1"))
    assert "Teredo" in rules.address_refusal("example.com", ip_address("2001::1"))
    assert rules.address_refusal(ip_address("10.0.0.5"), ip_address("10.0.0.5")) == (
        "address 10.0.0.5 is private (10.0.0.0/8); to allow it, name the address in a "
        "[[network.allow]] rule")


def test_pinned_name_gets_its_address_only():
    rules = Rules([EgressRule("pypi.test", (80,)), EgressRule("other.test", (80,))],
                  hosts=parse_hosts({"pypi.test": "127.0.0.1", "v6.test": "::1"}))
    assert rules.pinned("pypi.test") == LOOPBACK
    assert rules.pinned("v6.test") == IPv6Address("::1")
    assert rules.pinned("other.test") is None
    assert rules.pinned(LOOPBACK) is None
    assert rules.address_refusal("pypi.test", LOOPBACK) is None
    assert rules.address_refusal("pypi.test", ip_address("::ffff:127.0.0.1")) is None
    assert rules.address_refusal("PyPI.test.", LOOPBACK) is None
    assert rules.address_refusal("pypi.test", ip_address("127.0.0.2")) is not None
    assert rules.address_refusal("pypi.test", ip_address("10.0.0.1")) is not None
    assert rules.address_refusal("other.test", LOOPBACK) is not None
    assert rules.address_refusal("v6.test", ip_address("::1")) is None
    assert rules.address_refusal("v6.test", LOOPBACK) is not None
    assert rules.address_refusal(LOOPBACK, LOOPBACK) is not None  # no rule names 127.0.0.1


def test_ip_rule_allows_its_own_address_only():
    rules = Rules([EgressRule("10.0.0.5", (80,)), EgressRule("::1", (80,)), EgressRule("a.test", (80,))])
    assert rules.address_refusal(ip_address("10.0.0.5"), ip_address("10.0.0.5")) is None
    assert rules.address_refusal(ip_address("::1"), ip_address("::1")) is None
    assert rules.address_refusal(ip_address("10.0.0.6"), ip_address("10.0.0.6")) is not None
    # a name that resolves to the named address reaches it on the rule's ports
    # (the command could name the address itself), and on no other port
    assert rules.address_refusal("a.test", ip_address("10.0.0.5"), 80) is None
    assert rules.address_refusal("a.test", ip_address("10.0.0.5"), 81) is not None
    # nor does the IP host reach a different address
    assert rules.address_refusal(ip_address("10.0.0.5"), ip_address("10.0.0.6")) is not None
    assert rules.address_refusal("a..test", ip_address("8.8.8.8")).startswith("bad host")


def test_scoped_ip_rule_lends_its_address_to_no_name():
    """A tunnel by name would carry what the address rule's methods and paths refuse."""
    rules = Rules([EgressRule("127.0.0.1", (80,), ("GET",)), EgressRule("a.test", (80,))])
    assert rules.address_refusal(LOOPBACK, LOOPBACK, 80) is None
    assert rules.address_refusal("a.test", LOOPBACK, 80) is not None


# -- properties ------------------------------------------------------------------------------------

HOSTISH = st.text(alphabet="aAbx01279fF.:[]%-_@/ \x00*\u3002\u00e9\u03bf", max_size=40)


@SETTINGS
@given(st.one_of(st.text(), HOSTISH))
def test_normalize_host_only_raises_host_error(raw):
    try:
        host = normalize_host(raw)
    except HostError as err:
        assert str(err)
        return
    if isinstance(host, str):
        assert len(host) <= 253
        assert all(re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", label)
                   for label in host.split("."))
        assert normalize_host(host) == host
    else:
        assert isinstance(host, (IPv4Address, IPv6Address))
        assert not (isinstance(host, IPv6Address) and host.ipv4_mapped)
        assert normalize_host(str(host)) == host


@SETTINGS
@given(st.one_of(st.text(), st.text(alphabet="*.aAbcom0127:[]-", max_size=20)))
def test_validate_pattern_only_raises_rule_error(raw):
    try:
        pattern = validate_pattern(raw)
    except RuleError as err:
        assert err.key == "host" and str(err) and err.hint
        return
    assert validate_pattern(pattern) == pattern
    assert "*" not in pattern[1:]


PATHISH = st.text(alphabet="/.%2eEfF5cC0a7?#\\; ;\x00é", max_size=30)


@SETTINGS
@given(st.one_of(st.text(), PATHISH))
def test_normalize_path_only_raises_path_error(raw):
    try:
        path = normalize_path(raw)
    except PathError as err:
        assert str(err)
        return
    assert path.startswith("/")
    for bad in ("/../", "/./", "//", "\\", "?", "#"):
        assert bad not in path
    assert not path.endswith(("/..", "/."))
    assert normalize_path(path) == path


# Rule sets over a small alphabet of names, and requests in many spellings, against an oracle
# written independently of the module: lowercase, one trailing dot, plain labels only.
LABELS = ["a", "b", "x", "com", "org"]
NAMES = st.lists(st.sampled_from(LABELS), min_size=1, max_size=3).map(".".join)
IPS = ["127.0.0.1", "10.0.0.1", "::1"]
# spellings of each address; the oracle knows what they mean
IP_SPELLINGS = {"127.0.0.1": ["127.0.0.1", "2130706433", "0x7f.1", "[::ffff:127.0.0.1]"],
                "10.0.0.1": ["10.0.0.1", "10.1", "012.0.0.1", "::ffff:a00:1"],
                "::1": ["::1", "[::1]", "0:0::1"]}
PATTERNS = st.one_of(NAMES, NAMES.filter(lambda n: n.count(".") >= 1).map(lambda n: "*." + n),
                     st.sampled_from(IPS))
PORTS = st.sampled_from([22, 80, 443, 8080])
RULES = st.builds(
    EgressRule, PATTERNS,
    st.lists(PORTS, min_size=1, max_size=3, unique=True).map(tuple),
    st.one_of(st.just(()), st.lists(st.sampled_from(["GET", "POST"]), min_size=1, unique=True).map(tuple)),
    st.one_of(st.just(()), st.lists(st.sampled_from(["/a", "/b/", "/c/*"]), min_size=1, unique=True).map(tuple)))
DENY_RULES = st.builds(
    EgressRule, PATTERNS, st.one_of(st.just(()), st.lists(PORTS, min_size=1, max_size=2).map(tuple)),
    st.one_of(st.just(()), st.lists(st.sampled_from(["GET", "POST"]), min_size=1, unique=True).map(tuple)))


def _case_and_dot(draw, name):
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    name = "".join(c.upper() if f else c for c, f in zip(name, flips))
    return name + "." if draw(st.booleans()) else name


@st.composite
def scenarios(draw):
    """Rules, then a request aimed at them more often than not, with its canonical host."""
    allow = draw(st.lists(RULES, max_size=4))
    deny = draw(st.lists(DENY_RULES, max_size=2))
    if allow and deny and draw(st.booleans()):  # a deny rule for a host that is also allowed
        deny[0] = dataclasses.replace(deny[0], host=draw(st.sampled_from(allow)).host)
    patterns = [r.host for r in allow + deny]
    kind = draw(st.sampled_from(["rule", "rule", "rule", "name", "ip", "junk"]))
    if kind == "rule" and patterns:
        pattern = draw(st.sampled_from(patterns))
        if pattern.startswith("*."):  # under it, or the bare suffix (never matches)
            canonical = draw(st.sampled_from(["", "a.", "b.x."])) + pattern[2:]
        else:
            canonical = pattern
        kind = "ip" if canonical in IPS else "name"
    elif kind in ("rule", "name"):
        canonical, kind = draw(NAMES), "name"
    elif kind == "ip":
        canonical = draw(st.sampled_from(IPS))
    if kind == "name":
        raw = _case_and_dot(draw, canonical)
    elif kind == "ip":
        raw = draw(st.sampled_from(IP_SPELLINGS[canonical]))
    else:
        raw = draw(st.text(alphabet="abxcomrgABX.*@/-_ #:%\x00", max_size=16))
        lowered = raw.lower()
        canonical = lowered[:-1] if lowered.endswith(".") else lowered
        if not re.fullmatch(r"[a-z]+(\.[a-z]+)*", canonical):
            canonical = None  # the oracle says no such host can be allowed
    # mostly well-formed, so that requests get as far as the rules; sometimes garbage
    method = draw(st.sampled_from(["GET", "get", "POST", "HEAD", None]))
    if method is None:
        method = draw(st.text(max_size=5))
    path = draw(st.one_of(st.none(), st.sampled_from(["/", "/a", "/a/x", "/b/", "/b/x", "/c/x",
                                                       "/c/x/y", "/a/../b/", "/b/%2e%2e/"])))
    if path is None:
        method = "CONNECT"
    port = draw(st.sampled_from([22, 80, 443, 8080, None]))
    if port is None:
        port = draw(st.one_of(st.integers(-2, 70000), st.none()))
    return allow, deny, (raw, canonical, method, port, path)


def _oracle_host_match(pattern, canonical):
    if canonical is None:
        return False
    if pattern in IPS or canonical in IPS:
        return pattern == canonical
    if pattern.startswith("*."):
        return canonical.endswith(pattern[1:])
    return canonical == pattern


@settings(SETTINGS, max_examples=600)
@given(scenarios())
def test_check_never_allows_beyond_the_rules(scenario):
    allow, deny, (raw, canonical, method, port, path) = scenario
    decision = Rules(allow, deny).check(method, raw, port, path)
    assert isinstance(decision, Decision) and decision.reason
    tunnel = path is None
    if not decision.allowed:
        # ...nor refuses what is plainly allowed: a well-formed request, an unscoped rule
        # for its host and port, and no deny rule for it (DENY_RULES have no paths).
        well_formed = (canonical is not None and port in (22, 80, 443, 8080)
                       and re.fullmatch(r"[A-Za-z]+", method) is not None
                       and path not in ("/a/../b/", "/b/%2e%2e/"))
        granted = any(_oracle_host_match(r.host, canonical) and port in r.ports and not r.scoped()
                      for r in allow)
        denied = any(_oracle_host_match(r.host, canonical) and (not r.ports or port in r.ports)
                     and (tunnel or not r.methods or method.upper() in r.methods) for r in deny)
        assert not (well_formed and granted and not denied), decision.reason
        return
    assert any(_oracle_host_match(r.host, canonical) and port in r.ports
               and (not tunnel or not r.scoped()) for r in allow)
    assert decision.rule in allow and _oracle_host_match(decision.rule.host, canonical)
    assert port in decision.rule.ports
    assert isinstance(method, str) and (tunnel or not decision.rule.methods
                                        or method.upper() in decision.rule.methods)
    for r in deny:
        hits = _oracle_host_match(r.host, canonical) and (not r.ports or port in r.ports)
        assert not (hits and (tunnel or not r.methods or method.upper() in r.methods))


@SETTINGS
@given(st.lists(RULES, max_size=3), st.lists(DENY_RULES, max_size=2),
       st.one_of(st.none(), st.integers(), st.text(), st.binary()),
       st.one_of(st.none(), st.integers(), st.text(), HOSTISH),
       st.one_of(st.none(), st.integers(), st.booleans(), st.text()),
       st.one_of(st.none(), st.integers(), st.text(), PATHISH))
def test_check_never_raises(allow, deny, method, host, port, path):
    decision = Rules(allow, deny).check(method, host, port, path)
    assert isinstance(decision, Decision) and decision.reason
    assert decision.host.isprintable()


@pytest.mark.parametrize("addr, words", [("fd00:ec2::254", "unique-local"), ("fc00::1", "unique-local"),
                                         ("fe80::1", "link-local"), ("169.254.169.254", "link-local")])
def test_address_refusal_names_the_block(addr, words):
    """The refusal says which block an address is in (what the summary tells the user):
    fc00::/7 is also outside global unicast, so only its own words show the rule is there."""
    why = Rules([EgressRule("example.com")]).address_refusal("example.com", ip_address(addr))
    assert words in why, why


@pytest.mark.parametrize("method, path", [
    ("POST", "/admin"), ("post", "/admin"), ("Post", "/admin/x"), ("POST", "/ADMIN/x"),
    ("POST", "/admin;x/y"), ("POST", "/Admin;jsessionid=1"), ("pOsT", "/aDmIn;a=b/c")])
def test_deny_rules_match_every_spelling_an_origin_could_read_as_theirs(method, path):
    """Deny fails closed: an origin that folds case or strips ;parameters would read
    each of these as POST /admin (found by an independent egress battery)."""
    rules = Rules([EgressRule("api.test", (80,))],
                  [EgressRule("api.test", (80,), ("POST",), ("/admin",))])
    assert not rules.check(method, "api.test", 80, path).allowed


@pytest.mark.parametrize("method, path", [("GET", "/admin"), ("POST", "/administrator"),
                                          ("POST", "/public;admin"), ("post", "/x/admin")])
def test_deny_rules_still_leave_what_they_do_not_name(method, path):
    rules = Rules([EgressRule("api.test", (80,))],
                  [EgressRule("api.test", (80,), ("POST",), ("/admin",))])
    assert rules.check(method, "api.test", 80, path).allowed
