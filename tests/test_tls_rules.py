"""TLS inspection's pure parts: rule parsing and decisions, the run CA's certificates."""

from __future__ import annotations

import ssl

import pytest

from sandbox.egress import netrules
from sandbox.policy import EgressRule


def test_inspect_and_upstream_ca_parse_and_round_trip():
    rule = netrules.parse_rule({"host": "api.test", "methods": ["GET"], "inspect": True,
                                "upstream_ca": "/etc/ca.pem"}, "p: network.allow[1]")
    assert rule.inspect and rule.upstream_ca == "/etc/ca.pem"
    assert EgressRule.from_tuple(rule.as_tuple()) == rule
    # plans cached before these fields existed still load
    assert EgressRule.from_tuple(rule.as_tuple()[:5]) == EgressRule(
        "api.test", (443,), ("GET",), (), "p: network.allow[1]")
    assert "(TLS inspected, upstream CA /etc/ca.pem)" in netrules.describe(rule)


@pytest.mark.parametrize("table, key, words", [
    ({"inspect": 1}, "inspect", "must be true or false"),
    ({"upstream_ca": "/x"}, "upstream_ca", "only when the proxy inspects TLS"),
    ({"inspect": True, "upstream_ca": "x.pem"}, "upstream_ca", "not an absolute path"),
    ({"inspect": True, "upstream_ca": 3}, "upstream_ca", "must be a file path"),
    ({"inspect": True, "upstream_ca": "/a\nb"}, "upstream_ca", "not an absolute path"),
])
def test_bad_tls_keys_name_the_key(table, key, words):
    with pytest.raises(netrules.RuleError) as err:
        netrules.parse_rule({"host": "api.test", **table}, "")
    assert err.value.key == key and words in str(err.value) and err.value.hint


def test_tls_keys_are_refused_on_deny_rules():
    with pytest.raises(netrules.RuleError) as err:
        netrules.parse_rule({"host": "api.test", "inspect": True}, "", deny=True)
    assert err.value.key == "inspect" and "belongs on [[network.allow]]" in str(err.value)


def test_an_inspected_tunnel_is_allowed_and_its_requests_are_checked():
    rules = netrules.Rules([EgressRule("api.test", (443,), ("GET",), ("/v1/",), "a", True),
                            EgressRule("blind.test", (443,), ("GET",), (), "b")],
                           [EgressRule("api.test", (), ("DELETE",), (), "d")])
    tunnel = rules.check("CONNECT", "api.test", 443, None)
    assert tunnel.allowed and tunnel.rule.inspect
    assert rules.inspected("api.test", 443) is tunnel.rule
    assert rules.inspected("api.test", 8443) is None
    # without inspect the same scoped rule cannot open a tunnel
    blind = rules.check("CONNECT", "blind.test", 443, None)
    assert not blind.allowed and "inspect = true" in blind.reason
    # inside, the rules of plain HTTP decide: scope, and deny in every spelling
    assert rules.check("GET", "api.test", 443, "/v1/models").allowed
    assert not rules.check("POST", "api.test", 443, "/v1/models").allowed
    assert not rules.check("GET", "api.test", 443, "/v2/").allowed
    assert "denied" in rules.check("delete", "api.test", 443, "/v1/x").reason


def test_an_unscoped_deny_rule_still_refuses_an_inspected_tunnel():
    rules = netrules.Rules([EgressRule("api.test", (443,), inspect=True)],
                           [EgressRule("api.test", (443,))])
    assert not rules.check("CONNECT", "api.test", 443, None).allowed


def test_the_run_ca_signs_leaves_for_its_hosts_only(tmp_path):
    tlsca = pytest.importorskip("sandbox.egress.tlsca")
    ca = tlsca.RunCA(["api.test", "*.files.test", "127.0.0.1"])
    client = ssl.create_default_context(cadata=ca.cert_pem.decode())
    for host in ("api.test", "a.files.test", "127.0.0.1"):
        _handshake(ca.server_context(host), client, host)
    # a leaf outside the name constraints is refused by the client's OpenSSL
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(ca.server_context("other.test"), client, "other.test")
    assert ca.server_context("api.test") is ca.server_context("api.test")  # cached
    assert b"PRIVATE" not in ca.cert_pem


def test_the_leaf_key_encoded_by_hand_is_the_key_itself():
    """tlsca encodes the leaf key itself (cryptography's private_bytes would
    load its serialization package on the start's path): the PEM must be the
    same key, as cryptography and OpenSSL read it."""
    tlsca = pytest.importorskip("sandbox.egress.tlsca")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    for _ in range(20):  # private values of every length (leading zero bytes)
        key = ec.generate_private_key(ec.SECP256R1())
        read = serialization.load_pem_private_key(tlsca._p256_key_pem(key), None)
        assert read.private_numbers() == key.private_numbers()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # OpenSSL: the key matches the leaf
    ca = tlsca.RunCA(["api.test"])
    tlsca._load_chain(ctx, ca.leaf_pem("api.test") + ca.cert_pem, ca._leaf_key()[1])
    with pytest.raises(ssl.SSLError):  # and a different key would not
        other = tlsca._p256_key_pem(ec.generate_private_key(ec.SECP256R1()))
        tlsca._load_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER),
                          ca.leaf_pem("api.test") + ca.cert_pem, other)


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, name: str) -> None:
    """A handshake in memory: the client verifies the leaf for ``name``."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=name)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        done = 0
        for obj, out, peer_in in ((client, c_out, s_in), (server, s_out, c_in)):
            try:
                obj.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
            finally:
                peer_in.write(out.read())
        if done == 2:
            return
    raise AssertionError("handshake did not finish")
