"""sandbox.envfilter: which variables the command keeps."""

from __future__ import annotations

import pytest

from sandbox import envfilter, profile
from conftest import sandbox_exe
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


# --------------------------------------------------------------------------
# Finding 13: secret variables that passed the filter.  Names first, then
# values whatever the name, then what must stay (false positives measured
# against realistic environments), then env.pass, then the real sandbox.

import os
import random
import string
import subprocess
import sys
from pathlib import Path

ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "-_"
HEX = "0123456789abcdef"
_rng = random.Random(13)


def rnd(n: int, alphabet: str = ALNUM) -> str:
    """Random token material, made at run time (no real-looking token is
    stored in this file).  Fixed seed: the same values on every run."""
    return "".join(_rng.choice(alphabet) for _ in range(n))


@pytest.mark.parametrize("name", [
    "SSHPASS", "sshpass", "DB_PW", "LDAP_BIND_PW", "SMTP_PASS", "RABBITMQ_DEFAULT_PASS",
    "OP_SESSION_my_team", "OP_SESSION_ABCDEF123", "BW_SESSION",
    "AZURE_STORAGE_CONNECTION_STRING", "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "ConnectionStrings__Default", "SERVICEBUS_CONN_STR", "GCP_SA_KEY_JSON", "FIREBASE_KEY_B64",
    "SIGNING_KEY_BASE64", "TLS_KEY_PEM",
])
def test_default_removes_finding_13_names(default, name):
    assert envfilter.is_denied(name, default)


@pytest.mark.parametrize("name", [
    "OLDPWD", "SSH_ASKPASS", "GIT_ASKPASS", "SUDO_ASKPASS", "COMPASS_HOME", "BYPASS_LIST",
    "DESKTOP_SESSION", "XDG_SESSION_TYPE", "OP_BIOMETRIC_UNLOCK_ENABLED", "CONNECTION_TIMEOUT",
    "PASSENGER_APP_ENV", "PW_DIR", "KEY_JSON_SCHEMA",
])
def test_default_keeps_similar_names(default, name):
    assert not envfilter.is_denied(name, default)


# (label, value) pairs that are secrets whatever the variable is called
SECRET_VALUES = [
    ("github classic", "ghp_" + rnd(36)),
    ("github oauth", "gho_" + rnd(36)),
    ("github user-to-server", "ghu_" + rnd(36)),
    ("github server-to-server", "ghs_" + rnd(36)),
    ("github refresh", "ghr_" + rnd(76)),
    ("github fine-grained", "github_pat_" + rnd(22) + "_" + rnd(59)),
    ("github token in a header", "Authorization: token ghp_" + rnd(36)),
    ("gitlab", "glpat-" + rnd(20, URLSAFE)),
    ("gitlab deploy", "gldt-" + rnd(20, URLSAFE)),
    ("slack bot", "xoxb-" + rnd(12, string.digits) + "-" + rnd(13, string.digits) + "-" + rnd(24)),
    ("slack user", "xoxp-" + rnd(12, string.digits) + "-" + rnd(12, string.digits) + "-" + rnd(32, HEX)),
    ("slack app", "xapp-1-" + rnd(11) + "-" + rnd(13, string.digits) + "-" + rnd(64, HEX)),
    ("slack webhook", "https://hooks.slack.com/services/T" + rnd(8) + "/B" + rnd(8) + "/" + rnd(24)),
    ("discord webhook", "https://discord.com/api/webhooks/" + rnd(18, string.digits) + "/" + rnd(68, URLSAFE)),
    ("openai", "sk-" + rnd(48)),
    ("openai project", "sk-proj-" + rnd(156, URLSAFE)),
    ("anthropic", "sk-ant-api03-" + rnd(93, URLSAFE) + "AA"),
    ("deepseek-style hex", "sk-" + rnd(32, HEX)),
    ("stripe live", "sk_live_" + rnd(99)),
    ("stripe restricted", "rk_live_" + rnd(99)),
    ("stripe webhook", "whsec_" + rnd(32)),
    ("aws key id", "AKIA" + rnd(16, string.ascii_uppercase + "234567")),
    ("aws temporary key id", "ASIA" + rnd(16, string.ascii_uppercase + "234567")),
    ("aws key id in a pair", "AKIA" + rnd(16, string.ascii_uppercase + "234567") + ":" + rnd(40)),
    ("azure storage", "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey="
                      + rnd(86) + "==;EndpointSuffix=core.windows.net"),
    ("azure service bus", "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;"
                          "SharedAccessKey=" + rnd(44)),
    ("pem private key", "-----BEGIN OPENSSH PRIVATE KEY-----\n" + rnd(70) + "\n-----END OPENSSH PRIVATE KEY-----\n"),
    ("pem rsa key", "-----BEGIN RSA PRIVATE KEY-----\\n" + rnd(64) + "\\n-----END RSA PRIVATE KEY-----"),
    ("pem pgp key", "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n" + rnd(64) + "\n"),
    ("pem bundle with a key", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
                              "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"),
    ("npm", "npm_" + rnd(36)),
    ("npmrc line", "//registry.npmjs.org/:_authToken=npm_" + rnd(36)),
    ("pypi", "pypi-AgEIcHlwaS5vcmc" + rnd(150, URLSAFE)),
    ("google api key", "AIza" + rnd(35, URLSAFE)),
    ("google oauth", "ya29." + rnd(150, URLSAFE)),
    ("huggingface", "hf_" + rnd(34)),
    ("vault", "hvs." + rnd(90, URLSAFE)),
    ("docker hub", "dckr_pat_" + rnd(27, URLSAFE)),
    ("digitalocean", "dop_v1_" + rnd(64, HEX)),
    ("jwt", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0." + rnd(43, URLSAFE)),
    ("jwt unsigned", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4eXoifQ."),
    ("bearer jwt", "Bearer eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL3gifQ." + rnd(86, URLSAFE)),
    ("token as url user", "https://ghp_" + rnd(36) + "@github.com/org/repo.git"),
    ("placeholder token as url user", "https://ghp_x@github.com/org/repo.git"),
    ("old 40-hex token as url user", "https://" + rnd(40, HEX) + "@github.com/org/repo.git"),
    ("azure devops pat as url user", "https://" + rnd(52, "abcdefghijklmnopqrstuvwxyz234567")
                                     + "@dev.azure.com/org/proj/_git/repo"),
    ("url user and password", "https://me:hunter2@pypi.example.invalid/simple"),
    ("url with empty password", "https://me:@proxy.example.invalid"),
    ("git config in env", "'url.https://ghp_" + rnd(36) + "@github.com/.insteadof'='https://github.com/'"),
    ("second of two urls", "https://a.example.invalid https://me:pw@b.example.invalid"),
    ("token after equals", "--token=glpat-" + rnd(20, URLSAFE)),
    ("token in json", '{"auths":{"x":{"token":"ghs_' + rnd(36) + '"}}}'),
]


@pytest.mark.parametrize("label,value", SECRET_VALUES, ids=[s[0] for s in SECRET_VALUES])
def test_secret_values_whatever_the_name(default, label, value):
    assert envfilter.secret_value(value), label
    # and so through the whole filter, under a name no pattern matches
    env = {"PLAIN_SETTING": value, "PATH": "/usr/bin:/bin"}
    assert envfilter.removed(env, default) == ["PLAIN_SETTING"]
    assert "PLAIN_SETTING" not in envfilter.sandbox_env(env, default, None, "/ws")


# Ordinary values that share a prefix or a shape with a token: all kept.
ORDINARY_VALUES = [
    "/opt/conda/envs/sk-learn/bin:/usr/local/bin:/usr/bin:/bin",
    "scikit-learn==1.5.2", "sk-learn", "/home/u/projects/sk-learn-experiments/src",
    "mask-rcnn-resnet50-fpn", "ask-me-anything-about-the-weather-forecast-today",
    "sk-this-is-a-long-but-ordinary-dashed-name-with-no-digits",
    "hf_transfer", "hf_hub_enable_hf_transfer_for_every_download", "npm_config_cache",
    "/usr/lib/node_modules/npm/bin/npm-cli.js", "ASIAN_PACIFIC_REGION_DEFAULT", "AKIA",
    "ghp_", "github_pat_", "xoxb-", "glpat-short",
    "ssh://git@github.com/org/repo.git", "git+ssh://git@gitlab.com/org/repo.git",
    "postgres://app@localhost:5432/db", "https://user@bitbucket.org/team/repo.git",
    "https://john.doe%40corp.example@git.example.invalid/r.git",
    "https://registry.npmjs.org/@types%2fnode", "https://www.npmjs.com/package/@scope/name",
    "http://proxy.example.invalid:3128", "https://github.com/org/repo/blob/main/README.md#L10",
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n",
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
    "eyJmb28iOiJiYXIifQ", "eyJhIjoxfQ.eyJiIjoyfQ",
    "0123456789abcdef0123456789abcdef01234567", "550e8400-e29b-41d4-a716-446655440000",
    "(venv) \\[\\e]0;\\u@\\h: \\w\\a\\]\\u@\\h:\\w\\$ ",
    "--max-old-space-size=4096 --enable-source-maps", "-Xmx2g -Dfile.encoding=UTF-8",
    "Endpoint=https://example.invalid;AccountName=acct",
    "authorization header is set by the proxy",
]


@pytest.mark.parametrize("value", ORDINARY_VALUES)
def test_ordinary_values_stay(value):
    assert not envfilter.secret_value(value)


def _ls_colors() -> str:
    """The real dircolors database (the longest value in most shells)."""
    try:
        r = subprocess.run(["sh", "-c", 'eval "$(dircolors -b)"; printf %s "$LS_COLORS"'],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return r.stdout


def _realistic_environments() -> dict[str, dict[str, str]]:
    """Environments as seen on a developer's shell with a venv activated, a
    GitHub Actions runner, a GitLab CI job and a conda shell.  Their secret
    variables are listed in SECRETS_IN_REALISTIC and nothing else may go."""
    sha = rnd(40, HEX)
    run_uuid = "6e9b3c1a-4f0d-4a8e-9b7c-2d1f0e3a5b6c"
    shell = {
        "PATH": "/home/dev/proj/.venv/bin:/home/dev/.local/bin:/home/dev/.cargo/bin:/usr/local/sbin:"
                "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/snap/bin:/home/dev/.nvm/versions/node/v20.11.0/bin",
        "VIRTUAL_ENV": "/home/dev/proj/.venv", "VIRTUAL_ENV_PROMPT": "(.venv) ",
        "PS1": "(.venv) \\[\\e]0;\\u@\\h: \\w\\a\\]${debian_chroot:+($debian_chroot)}\\[\\033[01;32m\\]\\u@\\h"
               "\\[\\033[00m\\]:\\[\\033[01;34m\\]\\w\\[\\033[00m\\]\\$ ",
        "_OLD_VIRTUAL_PATH": "/home/dev/.local/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/home/dev", "USER": "dev", "LOGNAME": "dev", "SHELL": "/bin/bash", "SHLVL": "2",
        "PWD": "/home/dev/proj", "OLDPWD": "/home/dev", "LANG": "en_US.UTF-8", "TERM": "xterm-256color",
        "COLORTERM": "truecolor", "EDITOR": "vim", "PAGER": "less", "LESSOPEN": "| /usr/bin/lesspipe %s",
        "LESSCLOSE": "/usr/bin/lesspipe %s %s", "LS_COLORS": _ls_colors(),
        "XDG_RUNTIME_DIR": "/run/user/1000", "XDG_SESSION_ID": "c2", "XDG_SESSION_TYPE": "tty",
        "XDG_DATA_DIRS": "/usr/local/share:/usr/share:/var/lib/snapd/desktop",
        "XDG_CONFIG_DIRS": "/etc/xdg", "MOTD_SHOWN": "pam", "DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0",
        "DESKTOP_SESSION": "ubuntu", "GDMSESSION": "ubuntu", "DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus",
        "SSH_CONNECTION": "192.0.2.10 50522 192.0.2.20 22", "SSH_CLIENT": "192.0.2.10 50522 22",
        "SSH_TTY": "/dev/pts/3", "SSH_AUTH_SOCK": "/tmp/ssh-XXXXkR3tbd/agent.2201",
        "NVM_DIR": "/home/dev/.nvm", "NVM_BIN": "/home/dev/.nvm/versions/node/v20.11.0/bin",
        "PYENV_ROOT": "/home/dev/.pyenv", "CARGO_HOME": "/home/dev/.cargo", "GOPATH": "/home/dev/go",
        "JAVA_HOME": "/usr/lib/jvm/java-17-openjdk-amd64", "HISTCONTROL": "ignoreboth",
        "PYTHONSTARTUP": "/home/dev/.pythonrc", "PIP_INDEX_URL": "https://pypi.org/simple",
        "NODE_OPTIONS": "--max-old-space-size=4096", "TOKENIZERS_PARALLELISM": "false",
        "HF_HOME": "/home/dev/.cache/huggingface", "HF_HUB_ENABLE_HF_TRANSFER": "1",
        "GIT_AUTHOR_NAME": "Dev Eloper", "GIT_AUTHOR_EMAIL": "dev@example.invalid",
        "GPG_TTY": "/dev/pts/3", "_": "/home/dev/proj/.venv/bin/python",
    }
    github = {
        "CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_ACTION": "__run_2", "GITHUB_ACTOR": "octocat",
        "GITHUB_ACTOR_ID": "583231", "GITHUB_API_URL": "https://api.github.com",
        "GITHUB_BASE_REF": "", "GITHUB_ENV": f"/home/runner/work/_temp/_runner_file_commands/set_env_{run_uuid}",
        "GITHUB_EVENT_NAME": "push", "GITHUB_EVENT_PATH": "/home/runner/work/_temp/_github_workflow/event.json",
        "GITHUB_GRAPHQL_URL": "https://api.github.com/graphql", "GITHUB_HEAD_REF": "",
        "GITHUB_JOB": "test", "GITHUB_OUTPUT": f"/home/runner/work/_temp/_runner_file_commands/set_output_{run_uuid}",
        "GITHUB_PATH": f"/home/runner/work/_temp/_runner_file_commands/add_path_{run_uuid}",
        "GITHUB_REF": "refs/heads/main", "GITHUB_REF_NAME": "main", "GITHUB_REF_PROTECTED": "true",
        "GITHUB_REF_TYPE": "branch", "GITHUB_REPOSITORY": "octo-org/octo-repo",
        "GITHUB_REPOSITORY_ID": "123456789", "GITHUB_REPOSITORY_OWNER": "octo-org",
        "GITHUB_RETENTION_DAYS": "90", "GITHUB_RUN_ATTEMPT": "1", "GITHUB_RUN_ID": "7123456789",
        "GITHUB_RUN_NUMBER": "42", "GITHUB_SERVER_URL": "https://github.com", "GITHUB_SHA": sha,
        "GITHUB_STATE": f"/home/runner/work/_temp/_runner_file_commands/save_state_{run_uuid}",
        "GITHUB_STEP_SUMMARY": f"/home/runner/work/_temp/_runner_file_commands/step_summary_{run_uuid}",
        "GITHUB_TRIGGERING_ACTOR": "octocat", "GITHUB_WORKFLOW": "CI",
        "GITHUB_WORKFLOW_REF": "octo-org/octo-repo/.github/workflows/ci.yml@refs/heads/main",
        "GITHUB_WORKFLOW_SHA": sha, "GITHUB_WORKSPACE": "/home/runner/work/octo-repo/octo-repo",
        "RUNNER_ARCH": "X64", "RUNNER_NAME": "GitHub Actions 12", "RUNNER_OS": "Linux",
        "RUNNER_TEMP": "/home/runner/work/_temp", "RUNNER_TOOL_CACHE": "/opt/hostedtoolcache",
        "RUNNER_ENVIRONMENT": "github-hosted", "ImageOS": "ubuntu22", "ImageVersion": "20240225.1.0",
        "ACTIONS_RUNNER_ACTION_ARCHIVE_CACHE": "/opt/actionarchivecache",
        "ACTIONS_CACHE_URL": "https://acghubeus1.actions.githubusercontent.com/" + rnd(50) + "/",
        "ACTIONS_RESULTS_URL": "https://results-receiver.actions.githubusercontent.com/",
        "ACTIONS_RUNTIME_TOKEN": "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJzY3AiOiJBY3Rpb25zIn0." + rnd(300, URLSAFE),
        "ACTIONS_ID_TOKEN_REQUEST_URL": "https://pipelines.actions.githubusercontent.com/" + rnd(50) + "/idtoken",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJuYW1laWQiOiJ4In0." + rnd(300, URLSAFE),
        "GITHUB_TOKEN": "ghs_" + rnd(36),
        "pythonLocation": "/opt/hostedtoolcache/Python/3.12.2/x64",
        "PKG_CONFIG_PATH": "/opt/hostedtoolcache/Python/3.12.2/x64/lib/pkgconfig",
        "Python3_ROOT_DIR": "/opt/hostedtoolcache/Python/3.12.2/x64",
        "JAVA_HOME_17_X64": "/usr/lib/jvm/temurin-17-jdk-amd64", "ANDROID_SDK_ROOT": "/usr/local/lib/android/sdk",
        "CHROMEWEBDRIVER": "/usr/local/share/chromedriver-linux64", "DOTNET_NOLOGO": "1",
        "AGENT_TOOLSDIRECTORY": "/opt/hostedtoolcache", "BOOTSTRAP_HASKELL_NONINTERACTIVE": "1",
        "PATH": "/opt/hostedtoolcache/Python/3.12.2/x64/bin:/snap/bin:/home/runner/.local/bin:"
                "/opt/pipx_bin:/home/runner/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    }
    gitlab = {
        "CI": "true", "GITLAB_CI": "true", "CI_COMMIT_SHA": sha, "CI_COMMIT_SHORT_SHA": sha[:8],
        "CI_COMMIT_REF_NAME": "main", "CI_COMMIT_BRANCH": "main", "CI_PIPELINE_ID": "1234567",
        "CI_JOB_ID": "7654321", "CI_JOB_NAME": "test", "CI_PROJECT_DIR": "/builds/group/project",
        "CI_PROJECT_PATH": "group/project", "CI_PROJECT_URL": "https://gitlab.com/group/project",
        "CI_SERVER_URL": "https://gitlab.com", "CI_API_V4_URL": "https://gitlab.com/api/v4",
        "CI_REGISTRY": "registry.gitlab.com", "CI_REGISTRY_USER": "gitlab-ci-token",
        "CI_REGISTRY_IMAGE": "registry.gitlab.com/group/project", "CI_RUNNER_ID": "12270837",
        "CI_RUNNER_SHORT_TOKEN": "xS6Vzpvo", "CI_JOB_TOKEN": "glcbt-" + rnd(20, URLSAFE),
        "CI_REGISTRY_PASSWORD": "glcbt-" + rnd(20, URLSAFE), "CI_JOB_JWT_V2": "eyJhbGciOiJSUzI1NiJ9."
        "eyJuYW1lc3BhY2VfaWQiOiIxIn0." + rnd(200, URLSAFE),
        "CI_REPOSITORY_URL": "https://gitlab-ci-token:" + rnd(20) + "@gitlab.com/group/project.git",
        "FF_USE_FASTZIP": "true", "HOME": "/root", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    }
    conda = {
        "CONDA_PREFIX": "/opt/conda/envs/sk-learn", "CONDA_DEFAULT_ENV": "sk-learn",
        "CONDA_PROMPT_MODIFIER": "(sk-learn) ", "CONDA_EXE": "/opt/conda/bin/conda",
        "CONDA_PYTHON_EXE": "/opt/conda/bin/python", "CONDA_SHLVL": "2", "CONDA_PREFIX_1": "/opt/conda",
        "PATH": "/opt/conda/envs/sk-learn/bin:/opt/conda/condabin:/usr/local/bin:/usr/bin:/bin",
        "CUDA_HOME": "/usr/local/cuda-12.4", "LD_LIBRARY_PATH": "/usr/local/cuda-12.4/lib64",
        "MKL_THREADING_LAYER": "GNU", "OMP_NUM_THREADS": "8", "MPLBACKEND": "Agg",
        "JUPYTER_CONFIG_DIR": "/home/dev/.jupyter", "WANDB_MODE": "offline",
    }
    return {"venv shell": shell, "github actions": github, "gitlab ci": gitlab, "conda": conda}


# The secrets among the realistic environments: removed by name or value.
SECRETS_IN_REALISTIC = {
    "venv shell": ["DBUS_SESSION_BUS_ADDRESS", "SSH_AUTH_SOCK"],
    "github actions": ["ACTIONS_ID_TOKEN_REQUEST_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_URL",
                       "ACTIONS_RUNTIME_TOKEN", "GITHUB_TOKEN"],
    "gitlab ci": ["CI_JOB_JWT_V2", "CI_JOB_TOKEN", "CI_REGISTRY_PASSWORD", "CI_REPOSITORY_URL",
                  "CI_RUNNER_SHORT_TOKEN"],
    "conda": [],
}


@pytest.mark.parametrize("label", sorted(SECRETS_IN_REALISTIC))
def test_realistic_environments_lose_only_their_secrets(default, label):
    env = _realistic_environments()[label]
    assert envfilter.removed(env, default) == SECRETS_IN_REALISTIC[label]
    # and the value check alone takes nothing that a name pattern left
    by_value = [n for n, v in env.items() if envfilter.secret_value(v) and not envfilter.is_denied(n, default)]
    assert by_value == (["CI_REPOSITORY_URL"] if label == "gitlab ci" else [])


def test_every_token_format_is_found_inside_any_word_position():
    """Each prefix of the table, with a body of its own shape, is found at the
    start of a value, after '=' or ':' or a space, and inside quotes; glued
    to a preceding word it is not (the prefix must start the word)."""
    for prefix, (shortest, _longest, alphabet, _digit) in envfilter._TOKENS.items():
        chars = "".join(sorted(alphabet & set(ALNUM)))
        letter = sorted(alphabet & set(string.ascii_letters))[0]
        body = rnd(shortest - 2, chars) + "7" + letter  # a digit and a letter, as random tokens have
        token = prefix + body
        for value in (token, f"x={token}", f"a:{token}", f"Bearer {token}", f'"{token}"'):
            assert envfilter.secret_value(value), (prefix, value)
        assert not envfilter.secret_value("zz" + token), prefix
        assert not envfilter.secret_value(prefix + body[:shortest - 1]), prefix


def test_blob_fast_path_agrees_with_value_by_value():
    """_secret_names checks all values joined first; it must give exactly what
    secret_value gives value by value, also when secrets sit next to each
    other (a word or marker must never span two values)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    pieces = [v for _, v in SECRET_VALUES] + ORDINARY_VALUES + [
        "ghp_", rnd(20), "AccountKey", "=x", "-----BEGIN ", "PRIVATE KEY-----", "https://", "@h",
        "eyJhbGciOiJub25lIn0", ".eyJzdWIiOiJ4eXoifQ.", "hooks.slack.com/", "services/x"]

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.lists(st.sampled_from(pieces), max_size=3).map("".join), max_size=8))
    def check(values):
        items = [(f"V{i}", v) for i, v in enumerate(values)]
        assert envfilter._secret_names(items) == {n for n, v in items if envfilter.secret_value(v)}

    check()


def test_pass_keeps_a_variable_whatever_its_value(default):
    token = "ghp_" + rnd(36)
    env = {"MY_REMOTE": f"https://{token}@github.com/o/r.git", "HELPER": token,
           "GITHUB_TOKEN": token, "OTHER": token}
    pol = small(deny=["*TOKEN*"], passed=["my_remote", "HELPER", "GITHUB_TOKEN"])
    kept = envfilter.sandbox_env(env, pol, None, "/ws")
    assert kept["MY_REMOTE"] == env["MY_REMOTE"] and kept["HELPER"] == token
    assert kept["GITHUB_TOKEN"] == token and "OTHER" not in kept
    assert envfilter.removed(env, pol) == ["OTHER"]


def test_value_check_applies_without_any_name_pattern():
    """A profile with no [env] deny at all (one that does not extend default)
    still does not hand out a token: the value check is built in."""
    env = {"X": "glpat-" + rnd(20, URLSAFE), "Y": "plain"}
    assert envfilter.sandbox_env(env, small(), None, "/ws") == {"Y": "plain", "PWD": "/ws",
                                                               "SANDBOX_ACTIVE": "1"}


def test_undecodable_values_are_handled():
    # os.environ gives undecodable bytes as lone surrogates
    for value in ("\udcff" * 30, "ghp_" + "\udc80" * 36, "caf\u00e9-" + "x" * 40):
        assert not envfilter.secret_value(value)
    assert envfilter.secret_value("\udcff ghp_" + rnd(36))


def test_envfilter_does_not_import_re():
    """It runs on every start; `re` costs more to import than the filter takes."""
    code = ("import sys; from sandbox import envfilter; "
            "env = {'A': 'ghp_' + 'x1' * 18, 'B': 'https://u:p@h/', 'C': '/usr/bin'}; "
            "envfilter.sandbox_env(env, type('P', (), {'env_deny': ('*TOKEN*',), "
            "'env_pass': (), 'env_set': (), 'caches': ()})(), None, '/ws'); "
            "print('re' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------
# Through the real sandbox, as root and as the unprivileged user: each
# variable is visible without the sandbox, and inside under a profile that
# keeps it with env.pass (so bwrap itself does not drop it and the filter is
# what removes it); it is absent under the default profile, and
# `sandbox explain` names it without ever printing its value.

def _finding_13_env() -> dict[str, str]:
    return {
        # by name
        "SSHPASS": rnd(16), "DB_PW": rnd(16), "SMTP_PASS": rnd(16), "OP_SESSION_myteam": rnd(43, URLSAFE),
        "BW_SESSION": rnd(88), "AZURE_STORAGE_CONNECTION_STRING": "AccountName=a;" + rnd(20),
        "GCP_SA_KEY_JSON": '{"type": "service_account", "private_key_id": "' + rnd(40, HEX) + '"}',
        # by value, under names no pattern matches
        "GIT_REMOTE_URL": "https://ghp_" + rnd(36) + "@github.com/org/repo.git",
        "REMOTE_HEX_USER": "https://" + rnd(40, HEX) + "@github.com/org/repo.git",
        "PLAIN_GH": "github_pat_" + rnd(22) + "_" + rnd(59),
        "PLAIN_GL": "glpat-" + rnd(20, URLSAFE),
        "PLAIN_SLACK": "xoxb-" + rnd(12, string.digits) + "-" + rnd(13, string.digits) + "-" + rnd(24),
        "PLAIN_OPENAI": "sk-proj-" + rnd(100, URLSAFE),
        "PLAIN_ANTHROPIC": "sk-ant-api03-" + rnd(93, URLSAFE) + "AA",
        "PLAIN_AWS_ID": "AKIA" + rnd(16, string.ascii_uppercase + "234567"),
        "PLAIN_AZURE": "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=" + rnd(86) + "==",
        "PLAIN_PEM": "-----BEGIN OPENSSH PRIVATE KEY-----\n" + rnd(64) + "\n-----END OPENSSH PRIVATE KEY-----",
        "PLAIN_NPM": "npm_" + rnd(36),
        "PLAIN_ID_VALUE": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0." + rnd(43, URLSAFE),
        "PLAIN_NOTIFY_URL": "https://hooks.slack.com/services/T" + rnd(8) + "/B" + rnd(8) + "/" + rnd(24),
    }


# Look-alikes that must reach the command unchanged.
CONTROLS = {"FOO": "bar", "CONDA_PREFIX": "/opt/conda/envs/sk-learn", "DEPLOY_REMOTE": "ssh://git@github.com/o/r",
            "OLDPWD": "/", "SSH_ASKPASS": "/usr/bin/ssh-askpass"}


def _env_of(r: subprocess.CompletedProcess) -> dict[str, str]:
    assert r.returncode == 0, (r.returncode, r.stderr.decode(errors="replace")[-2000:])
    return dict(item.split("=", 1) for item in r.stdout.decode().split("\0") if "=" in item)


@pytest.mark.integration
def test_finding_13_secrets_do_not_reach_the_command(senv, default):
    secrets = _finding_13_env()
    # the value cases carry names no pattern matches: only their value can remove them
    for name in list(secrets)[7:]:
        assert not envfilter.is_denied(name, default), name
    environ = senv.environ(**secrets, **CONTROLS)
    keep = senv.base / "keep-them.toml"  # outside the workspace
    keep.write_text('extends = "default"\n[env]\npass = [' + ", ".join(f'"{n}"' for n in secrets) + "]\n")

    outside = _env_of(senv.run(["env", "-0"], env=environ, sandboxed=False))
    kept = _env_of(senv.run(["env", "-0"], env=environ, args=["--profile", str(keep)]))
    inside_run = senv.run(["env", "-0"], env=environ)
    inside = _env_of(inside_run)
    for name, value in secrets.items():
        assert outside.get(name) == value, name
        assert kept.get(name) == value, name  # env.pass keeps it: the filter alone removes it
        assert name not in inside, name
        assert value.encode() not in inside_run.stdout + inside_run.stderr, name
    for name, value in CONTROLS.items():
        if name != "OLDPWD":
            assert inside.get(name) == value, name

    senv.finish()
    shown = subprocess.run(senv.who.prefix() + [sandbox_exe(), "explain", "--json"], cwd=senv.ws,
                           env=environ, capture_output=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    import json

    listed = json.loads(shown.stdout)["env_removed"]
    assert set(secrets) <= set(listed) and not set(CONTROLS) & set(listed)
    text = subprocess.run(senv.who.prefix() + [sandbox_exe(), "explain"], cwd=senv.ws, env=environ,
                          capture_output=True, timeout=60)
    assert text.returncode == 0, text.stderr
    for value in secrets.values():
        assert value.encode() not in shown.stdout + shown.stderr + text.stdout + text.stderr
    assert b"PLAIN_PEM" in text.stdout
