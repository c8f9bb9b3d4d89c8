"""sandbox.egress.credentials and sandbox.egress.provenance without the sandbox: entry
validation, and the proxy's per-request step (Guard) on headers and query strings."""

from __future__ import annotations

import base64

import pytest

from sandbox.egress import credentials
from sandbox.egress.credentials import Credential, parse_entry
from sandbox.egress.provenance import Guard, Refusal
from sandbox.egress.netrules import RuleError

REAL = "real-secret-value-123"
PH = "sandbox-placeholder-" + "0" * 32


def guard(**entry) -> Guard:
    cred = Credential(**{"host": "api.test", "env": "K", "from_env": "K", **entry})
    return Guard({"credentials": [cred.as_tuple()]}, [(PH, REAL)])


def send(g: Guard, headers, path="/v1/x", method="POST", host="api.test"):
    raw = [(n.encode(), v.encode()) for n, v in headers]
    return [(n.decode(), v.decode()) for n, v in g.outgoing(host, 80, method, path, raw)]


def test_bearer_placeholder_replaced_in_scope_and_dropped_outside():
    g = guard(scheme="Bearer", paths=("/v1/",))
    assert send(g, [("Authorization", f"bearer {PH}")]) == [("Authorization", f"bearer {REAL}")]
    assert send(g, [("Authorization", f"Bearer {PH}"), ("Accept", "*/*")], path="/v2/x") == [
        ("Accept", "*/*")]


def test_basic_placeholder_as_password_or_user():
    g = guard(scheme="Basic")
    for pair, want in ((f"x-access-token:{PH}", f"x-access-token:{REAL}"),
                       (f"{PH}:x-oauth-basic", f"{REAL}:x-oauth-basic")):
        got = send(g, [("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())])
        assert base64.b64decode(got[0][1].split()[1]).decode() == want


@pytest.mark.parametrize("headers,path", [
    ([("Authorization", "Bearer sk-someone-else")], "/v1/x"),
    ([("Authorization", f"Bearer {PH}x")], "/v1/x"),
    ([("Authorization", "Basic " + base64.b64encode(b"u:other").decode())], "/v1/x"),
    ([("X-Api-Key", "abc")], "/v1/x"),
    ([("Private-Token", "abc")], "/v1/x"),
    ([("X-Upload-Session", "abc")], "/v1/x"),
    ([("Cookie", "sid=1")], "/v1/x"),
    ([("X-Note", "ghp_" + "a1" * 18)], "/v1/x"),
    ([], "/v1/x?api_key=abc"),
    ([], "/v1/x?Access_Token=abc"),
    ([], "/v1/x?q=1&upload_token=abc"),
    ([], "/v1/x?x=sk-ant-api03-" + "Ab1" * 12),
    ([], "/bot/ghp_" + "a1" * 18 + "/send"),
])
def test_foreign_credentials_refused_without_their_value(headers, path):
    g = guard(scheme="Bearer")
    with pytest.raises(Refusal) as err:
        send(g, headers, path=path)
    text = str(err.value)
    assert text.startswith("foreign credential")
    assert REAL not in text and "abc" not in text and "other" not in text


def test_other_hosts_untouched_and_ordinary_headers_pass():
    g = guard(header="x-api-key")
    assert send(g, [("Authorization", "Bearer x")], host="other.test") == [
        ("Authorization", "Bearer x")]
    ordinary = [("Content-Type", "application/json"), ("Anthropic-Version", "2023-06-01"),
                ("Idempotency-Key", "abc"), ("User-Agent", "curl/8")]
    assert send(g, ordinary + [("x-api-key", PH)]) == ordinary + [("x-api-key", REAL)]


def test_entry_validation():
    ok = parse_entry({"host": "API.Test.", "from_env": "A", "env": "B", "header": "X-Api-Key"}, "s")
    assert (ok.host, ok.header) == ("api.test", "x-api-key")
    for bad, key in (({"host": "*.x.test", "from_env": "A", "env": "B"}, "host"),
                     ({"host": "127.0.0.1", "from_env": "A", "env": "B"}, "host"),
                     ({"host": "a.test", "env": "B"}, "from_env"),
                     ({"host": "a.test", "from_env": "A", "from_file": "/x", "env": "B"}, "from_env"),
                     ({"host": "a.test", "from_env": "A", "env": "1B"}, "env"),
                     ({"host": "a.test", "from_file": "rel/x", "env": "B"}, "from_file"),
                     ({"host": "a.test", "from_env": "A", "env": "B", "header": "cookie"}, "header"),
                     ({"host": "a.test", "from_env": "A", "env": "B", "value": "x"}, "value")):
        with pytest.raises(RuleError) as err:
            parse_entry(bad, "s")
        assert err.value.key == key, bad


def test_file_must_be_masked(tmp_path):
    secret = tmp_path / "cfg" / "token"
    secret.parent.mkdir()
    secret.write_text("x")
    assert credentials.file_problem(str(secret), (str(tmp_path / "cfg"),)) is None
    assert "readable inside" in credentials.file_problem(str(secret), (str(tmp_path / "other"),))
    link = tmp_path / "cfg" / "link"
    link.symlink_to(tmp_path / "visible")
    (tmp_path / "visible").write_text("x")
    # masked where it is named, readable where it leads
    assert "visible" in credentials.file_problem(str(link), (str(tmp_path / "cfg"),))


def test_vault_reads_and_hides(tmp_path):
    cred = Credential("api.test", "API_KEY", from_env="REAL_KEY")
    vault = credentials.Vault.load([cred.as_tuple()], {"REAL_KEY": REAL})
    env = vault.command_env({"REAL_KEY": REAL, "COPY": f"x{REAL}x", "PATH": "/bin"})
    assert env["API_KEY"].startswith(credentials.PLACEHOLDER_PREFIX)
    assert set(env) == {"API_KEY", "PATH"}
    bad = credentials.Vault
    from sandbox.errors import SetupError
    with pytest.raises(SetupError) as err:
        bad.load([cred.as_tuple()], {"REAL_KEY": "has space"})
    assert "has space" not in str(err.value)


@pytest.mark.parametrize("name, host, env, header", [
    ("github", "github.com", "GH_TOKEN", "authorization"),
    ("anthropic-api", "api.anthropic.com", "ANTHROPIC_API_KEY", "x-api-key")])
def test_builtin_profiles_carry_their_credential(name, host, env, header):
    from sandbox import profile

    ctx = profile.Context(workspace="/ws", home="/home/u", tmp="/tmp", runtime="/run/user/1")
    policy = profile.load(name, ctx)[0]
    (entry,) = [Credential.from_tuple(t) for t in policy.egress_credentials]
    assert (entry.host, entry.env, entry.from_env, entry.header) == (host, env, env, header)
    # the push half / the messages endpoint only
    assert entry.paths and all(r.scoped() for r in policy.egress_allow)


@pytest.mark.parametrize("pair", [
    f"{PH}:ghp_" + "a1" * 18,  # the placeholder as user, somebody's token as password
    f"{PH}:attacker-password",
    "ghp_" + "b2" * 18 + f":{PH}",  # somebody's token as user next to the placeholder
])
def test_basic_with_a_second_credential_beside_the_placeholder_is_foreign(pair):
    """Red team: before, the other half of a Basic pair went upstream next to
    the real value ("REAL:<their token>")."""
    g = guard(scheme="Basic")
    with pytest.raises(Refusal, match="^foreign credential"):
        send(g, [("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())])


def test_one_hosts_placeholder_is_foreign_to_another_credential_host():
    """Red team: the placeholder of api.test sent to other.test (both with an
    entry) must not become other.test's real value, nor pass as its own."""
    a = Credential(host="api.test", env="A", from_env="A", header="x-api-key")
    b = Credential(host="other.test", env="B", from_env="B", header="x-api-key")
    g = Guard({"credentials": [a.as_tuple(), b.as_tuple()]}, [(PH, REAL), (PH[:-1] + "1", "b-real")])
    assert send(g, [("x-api-key", PH)], host="api.test") == [("x-api-key", REAL)]
    with pytest.raises(Refusal, match="^foreign credential"):
        send(g, [("x-api-key", PH)], host="other.test")
