"""sandbox.envfilter: which variables the command keeps."""

from __future__ import annotations

import pytest

from sandbox import envfilter, profile
from sandbox.policy import Policy

CTX = profile.Context(workspace="/ws", home="/home/u", tmp="/tmp", runtime="/run/user/1000")


@pytest.fixture(scope="module")
def default() -> Policy:
    return profile.load("default", CTX)[0]


def small(deny=(), passed=(), env_set=(), caches=()) -> Policy:
    return Policy(name="t", chain=("t",), digest="0", env_deny=tuple(deny), env_pass=tuple(passed),
                  env_set=tuple(env_set), caches=tuple(caches))


@pytest.mark.parametrize("name", [
    "GITHUB_TOKEN", "github_token", "GitHub_Token", "NPM_TOKEN", "HF_TOKEN", "TOKEN",
    "MY_SECRET", "client_secret_value", "DB_PASSWORD", "MYSQL_PWD_PASSWD", "GPG_PASSPHRASE",
    "GOOGLE_APPLICATION_CREDENTIALS", "AZURE_CREDENTIALS", "OPENAI_API_KEY", "ANTHROPIC_API_KEY",
    "stripe_api_key", "AWS_ACCESS_KEY_ID", "AWS_REGION", "aws_profile", "SIGNING_KEY",
    "SIGNING_KEY_ID", "PRIVATE_KEY_PATH", "MYAPIKEY", "BASIC_AUTH", "AUTHORIZATION", "OAUTH_X",
    "SESSION_COOKIE", "FLASK_SESSION_ID", "AZURE_CLIENT_ID", "ARM_CLIENT_SECRET", "GH_PAT",
    "SENTRY_DSN", "DATABASE_URL", "APP_DATABASE_URL", "REDIS_URL", "MONGODB_URI",
    "SSH_AUTH_SOCK", "ssh_agent_pid", "GPG_AGENT_INFO", "DBUS_SESSION_BUS_ADDRESS",
    "DOCKER_HOST", "KUBECONFIG", "VAULT_ADDR", "NETRC",
])
def test_default_removes(default, name):
    assert envfilter.is_denied(name, default)


@pytest.mark.parametrize("name", [
    "PATH", "HOME", "USER", "LANG", "LC_ALL", "TERM", "SHELL", "EDITOR", "PWD", "TMPDIR",
    "TOKENIZERS_PARALLELISM", "tokenizers_parallelism", "KEYBOARD", "KEYS", "MONKEY",
    "PYTHONPATH", "VIRTUAL_ENV", "GOPATH", "CARGO_HOME", "NODE_ENV", "CI",
    "DISPLAY", "COLORTERM", "XDG_RUNTIME_DIR", "KEY_LAYOUT", "DATABASE", "SESSION",
])
def test_default_keeps(default, name):
    assert not envfilter.is_denied(name, default)


def test_patterns_are_case_insensitive_both_ways():
    pol = small(deny=["*token*", "Aws_*"])
    for name in ("GITHUB_TOKEN", "github_token", "aws_x", "AWS_X", "Aws_x"):
        assert envfilter.is_denied(name, pol), name
    assert not envfilter.is_denied("AWSX", pol)


def test_pass_is_exact_and_case_insensitive():
    pol = small(deny=["*TOKEN*"], passed=["Keep_Token"])
    assert not envfilter.is_denied("KEEP_TOKEN", pol)
    assert not envfilter.is_denied("keep_token", pol)
    assert envfilter.is_denied("KEEP_TOKEN2", pol)
    assert envfilter.is_denied("X_KEEP_TOKEN", pol)


def test_pass_is_not_a_pattern():
    pol = small(deny=["*TOKEN*"], passed=["*"])
    assert envfilter.is_denied("A_TOKEN", pol)


def test_question_mark_and_literal_bracket():
    pol = small(deny=["KEY?", "X[0-9]"])
    assert envfilter.is_denied("KEY1", pol) and envfilter.is_denied("key1", pol)
    assert not envfilter.is_denied("KEY12", pol) and not envfilter.is_denied("KEY", pol)
    # only '*' and '?' are special in variable-name patterns
    assert envfilter.is_denied("X[0-9]", pol) and not envfilter.is_denied("X7", pol)


def test_star_backtracking():
    pol = small(deny=["*_KEY", "A*B*C"])
    assert envfilter.is_denied("MY_KEY_KEY", pol) and not envfilter.is_denied("MY_KEYS", pol)
    assert envfilter.is_denied("AXBXBXC", pol) and envfilter.is_denied("ABC", pol)
    assert not envfilter.is_denied("ABCX", pol)


def test_removed_lists_sorted_names(default):
    environ = {"Z_TOKEN": "1", "PATH": "/bin", "A_SECRET": "2", "HOME": "/h", "TOKENIZERS_PARALLELISM": "1"}
    assert envfilter.removed(environ, default) == ["A_SECRET", "Z_TOKEN"]


def test_sandbox_env_order_of_effects():
    pol = small(deny=["*TOKEN*", "TMPDIR_TOKEN"], env_set=[("TMPDIR", "/tmp"), ("A_TOKEN", "set")],
                caches=[("PIP_CACHE_DIR", "pip")])
    env = envfilter.sandbox_env({"A_TOKEN": "host", "TMPDIR": "/x", "PWD": "/old", "SANDBOX_ACTIVE": "0",
                                 "PIP_CACHE_DIR": "/host"}, pol, "/c", "/ws")
    # env.set is applied after the filter: a profile's own value is kept
    assert env == {"A_TOKEN": "set", "TMPDIR": "/tmp", "PIP_CACHE_DIR": "/c/pip", "PWD": "/ws",
                   "SANDBOX_ACTIVE": "1"}


def test_sandbox_env_without_cache_dir_keeps_host_value():
    pol = small(caches=[("PIP_CACHE_DIR", "pip")])
    env = envfilter.sandbox_env({"PIP_CACHE_DIR": "/host"}, pol, None, "/ws")
    assert env == {"PIP_CACHE_DIR": "/host", "PWD": "/ws", "SANDBOX_ACTIVE": "1"}


def test_fast_matcher_agrees_with_pattern_matching():
    """The shape-sorted matcher must decide exactly like matching each pattern in turn."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from sandbox.envfilter import _Matcher
    from sandbox.patterns import match

    patterns = ["*TOKEN*", "AWS_*", "*_KEY", "DATABASE_URL", "A?C*", "*", "X*Y*Z", "*_PAT"]
    alphabet = st.sampled_from(list("ATOKENWS_KEYPDBXZC?*az"))

    @settings(max_examples=300, deadline=None)
    @given(names=st.lists(st.text(alphabet, max_size=12), max_size=20),
           chosen=st.lists(st.sampled_from(patterns), max_size=5))
    def check(names, chosen):
        matcher = _Matcher(chosen, ())
        for name in names:
            slow = any(match(name.upper(), p.upper()) for p in chosen)
            assert matcher.denied(name) == slow, (name, chosen)

    check()


@pytest.mark.parametrize("name,value", [
    ("MYSQL_PWD", "x"), ("CI_JOB_JWT", "x"), ("SLACK_WEBHOOK_URL", "https://hooks.example.invalid/x"),
    ("HTTPS_PROXY", "http://user:secret@proxy.example.invalid:3128"),
    ("PIP_INDEX_URL", "https://me:token@pypi.example.invalid/simple"),
])
def test_default_profile_removes_more_secret_shapes(name, value):
    from sandbox import envfilter, profile

    ctx = profile.Context(workspace="/w", home="/h", tmp="/tmp", runtime="/run/user/1")
    policy, _ = profile.load("default", ctx)
    env = envfilter.sandbox_env({name: value, "PWD": "/w", "OLDPWD": "/", "HTTP_PROXY":
                                 "http://proxy.example.invalid:3128"}, policy, None, "/w")
    assert name not in env
    assert env["OLDPWD"] == "/" and env["HTTP_PROXY"] == "http://proxy.example.invalid:3128"
