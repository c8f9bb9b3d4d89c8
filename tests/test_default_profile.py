"""The default profile's lists, checked by what the sandbox does with them.

tests/test_attacks.py attacks a handful of secrets and protected names in
depth; a mutation run (scripts/mutate.py) showed that dropping any other
entry of profiles/default.toml went unnoticed.  Here every entry is
planted (in the fake home, in the workspace) or, for host-wide secrets,
looked at where it exists on this machine, and one sandbox run checks them
all, as root and as the unprivileged user.  The lists below are the
specification (what the README promises to hide or protect); they are not
read from the profile, so an entry dropped from the profile fails here.

Entries that are not checked, and why: host-wide secrets that do not exist
on this machine (planting them would change the host); `/run/secrets` and
`/var/run/secrets`, which the emptied `/run` hides anyway;
`${home}/.local/share/fish/fish_history`, which the `*_history` entry
beside it covers too.
"""

from __future__ import annotations

import glob
import json
import os
import uuid

import pytest

pytestmark = pytest.mark.integration

PY = "/usr/bin/python3"  # the test user cannot run root's pyenv python

# ${home} entries of deny_read, as directories (planted with a file inside) ...
HOME_SECRET_DIRS = [
    ".ssh", ".aws", ".gnupg", ".config/gh", ".config/hub", ".config/glab-cli", ".docker", ".kube",
    ".config/gcloud", ".azure", ".oci", ".config/doctl", ".terraform.d", ".local/share/python_keyring",
    ".config/rclone", ".config/heroku", ".config/ngrok", ".ngrok2", ".config/op", ".config/1Password",
    ".config/Bitwarden", ".config/Bitwarden CLI", ".config/sops", ".config/age", ".wrangler",
    ".config/.wrangler", ".fly", ".config/netlify", ".vercel", ".config/vercel", ".supabase",
    ".config/stripe", ".config/twilio-cli", ".snowflake", ".config/snowflake", ".kaggle",
    ".config/kaggle", ".config/github-copilot", ".config/gcloud-cli", ".config/anthropic",
    ".config/openai", ".local/share/keyrings", ".password-store", ".keepass", ".config/keepassxc",
    ".pki", ".mozilla", ".config/google-chrome", ".config/chromium", ".config/BraveSoftware",
    ".config/microsoft-edge", ".config/vivaldi", ".config/opera", "snap/firefox", "snap/chromium",
    ".zsh_sessions",
]
# ... and as files (glob entries by an example name each)
HOME_SECRET_FILES = [
    ".netrc", ".git-credentials", ".config/git/credentials", ".npmrc", ".yarnrc", ".yarnrc.yml",
    ".pypirc", ".pgpass", ".my.cnf", ".vault-token", ".cargo/credentials", ".cargo/credentials.toml",
    ".gem/credentials", ".config/pypoetry/auth.toml", ".m2/settings.xml", ".m2/settings-security.xml",
    ".gradle/gradle.properties", ".s3cfg", ".boto", ".databrickscfg", ".huggingface/token",
    ".cache/huggingface/token", ".config/huggingface/token", ".claude/.credentials.json",
    ".claude.json", ".codex/auth.json", ".gemini/oauth_creds.json", ".gemini/google_accounts.json",
    ".aider.oauth-keys.env", ".cursor/mcp.json", ".local/share/opencode/auth.json",
    ".bash_history", ".python_history", ".psql_history", ".history",
    ".local/share/fish/work_history", ".lesshst", ".viminfo", ".local/state/nvim/shada",
]
# host-wide entries, checked where they exist (globs expanded)
HOST_SECRETS = [
    "/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/ssh/ssh_host_*_key",
    "/etc/sudoers", "/etc/sudoers.d", "/etc/security/opasswd", "/var/lib/docker", "/etc/ssl/private",
    "/etc/kubernetes", "/etc/rancher", "/etc/docker", "/etc/containers/auth.json", "/etc/wireguard",
    "/etc/NetworkManager/system-connections", "/etc/ppp/chap-secrets", "/etc/ppp/pap-secrets",
    "/etc/krb5.keytab", "/etc/letsencrypt", "/etc/pki/tls/private", "/etc/libvirt/secrets",
    "/etc/credstore", "/etc/credstore.encrypted", "/var/lib/kubelet", "/var/lib/rancher",
    "/var/lib/containers", "/var/lib/libvirt", "/var/lib/sss", "/var/lib/mysql",
    "/var/lib/postgresql", "/var/spool/cron", "/var/backups",
]

# [protect] names: kept read-only where they exist in a writable root
PROTECTED_DIRS = [
    ".claude", ".codex", ".gemini", ".cursor", ".windsurf", ".continue", ".vscode", ".idea", ".zed",
    ".devcontainer", ".direnv", ".mise", ".config/fish", ".config/git",
]
PROTECTED_FILES = [
    ".aider.conf.yml", ".mcp.json", ".cursorrules", ".clinerules", ".envrc", ".mise.toml", "mise.toml",
    ".dir-locals.el", ".nvim.lua", ".exrc", ".bash_aliases", ".bashrc", ".bash_profile", ".bash_login",
    ".bash_logout", ".profile", ".zshrc", ".zshenv", ".zprofile", ".zlogin", ".zlogout", ".inputrc",
    ".pythonrc", ".pythonstartup", ".gitconfig", ".npmrc", ".yarnrc", ".pypirc", ".hg/hgrc",
    ".jj/repo/config.toml",
]

# What a path looks like to the reader: missing, unreadable, empty, or content.
LOOK = r"""
import json, os, sys
out = {}
for path in json.load(open(sys.argv[1])):
    try:
        if os.path.isdir(path):
            out[path] = "content" if os.listdir(path) else "empty"
        else:
            with open(path, "rb") as fh:
                out[path] = "content" if fh.read(64) else "empty"
    except FileNotFoundError:
        out[path] = "missing"
    except OSError:
        out[path] = "unreadable"
print("RESULT " + json.dumps(out))
"""

# Try to change each protected path; print the ones where that worked.
CHANGE = r"""
import json, os, sys
worked = []
for path, kind in json.load(open(sys.argv[1])):
    tries = []
    if kind == "file":
        tries = [lambda: open(path, "a").write("planted\n"),
                 lambda: os.rename(path, path + ".moved"),
                 lambda: os.unlink(path)]
    else:
        tries = [lambda: open(os.path.join(path, "planted"), "w").write("x"),
                 lambda: os.rename(path, path + ".moved")]
    for n, attempt in enumerate(tries):
        try:
            attempt()
            worked.append(f"{path} #{n}")
        except OSError:
            pass
print("RESULT " + json.dumps(worked))
"""


def _result(r) -> object:
    text = r.stdout.decode(errors="replace")
    lines = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and lines, (r.returncode, text[-2000:], r.stderr.decode(errors="replace")[-2000:])
    return json.loads(lines[-1][len("RESULT "):])


def _look(senv, paths: list[str], **kw) -> dict[str, str]:
    listing = senv.base / f"paths-{uuid.uuid4().hex[:8]}.json"
    listing.write_text(json.dumps(paths))
    return _result(senv.run([PY, "-c", LOOK, str(listing)], **kw))


def test_every_home_secret_is_masked(senv):
    marker = "SECRET-" + uuid.uuid4().hex
    planted = []
    for rel in HOME_SECRET_DIRS:
        (senv.home / rel).mkdir(parents=True, exist_ok=True)
        (senv.home / rel / "secret").write_text(marker)
        planted.append(str(senv.home / rel))
    for rel in HOME_SECRET_FILES:
        (senv.home / rel).parent.mkdir(parents=True, exist_ok=True)
        (senv.home / rel).write_text(marker)
        planted.append(str(senv.home / rel))
    outside = _look(senv, planted, sandboxed=False)
    assert set(outside.values()) == {"content"}, {p: s for p, s in outside.items() if s != "content"}
    inside = _look(senv, planted)
    leaked = sorted(p for p, state in inside.items() if state != "empty")
    assert not leaked, f"readable inside: {leaked}"


def test_every_host_secret_that_exists_here_is_masked(senv):
    paths = sorted({p for entry in HOST_SECRETS for p in (glob.glob(entry) if "*" in entry else [entry])
                    if os.path.lexists(p)})
    if not paths:
        pytest.skip("none of the host-wide secrets exists on this machine")
    outside = _look(senv, paths, sandboxed=False)
    readable = [p for p, state in outside.items() if state == "content"]
    if not readable:
        pytest.skip(f"{senv.who.name} cannot read any of {paths} on the host anyway")
    inside = _look(senv, readable)
    leaked = sorted(p for p in readable if inside[p] == "content")
    assert not leaked, f"readable inside: {leaked}"


def test_workspace_dotenv_names_are_masked(senv):
    marker = "SECRET-" + uuid.uuid4().hex
    for rel in (".env", "app/.env.production", "app/.env.local"):
        (senv.ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (senv.ws / rel).write_text(marker)
    (senv.ws / "app" / ".env.example").write_text("KEY=changeme")
    paths = [str(senv.ws / rel) for rel in (".env", "app/.env.production", "app/.env.local",
                                            "app/.env.example")]
    assert set(_look(senv, paths, sandboxed=False).values()) == {"content"}
    inside = _look(senv, paths)
    assert inside == {**{p: "empty" for p in paths[:3]}, paths[3]: "content"}, inside


def test_runtime_dir_is_emptied(senv):
    runtime = senv.base / "runtime"
    runtime.mkdir(mode=0o700)
    (runtime / "agent.sock-like").write_text("x")
    env = senv.environ(XDG_RUNTIME_DIR=str(runtime))
    assert _look(senv, [str(runtime)], sandboxed=False, env=env) == {str(runtime): "content"}
    assert _look(senv, [str(runtime)], env=env) == {str(runtime): "empty"}


def test_every_protected_name_stays_unchanged(senv):
    planted = []
    for rel in PROTECTED_DIRS:
        (senv.ws / rel).mkdir(parents=True, exist_ok=True)
        (senv.ws / rel / "settings").write_text("original\n")
        planted.append([str(senv.ws / rel), "dir"])
    for rel in PROTECTED_FILES:
        (senv.ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (senv.ws / rel).write_text("original\n")
        planted.append([str(senv.ws / rel), "file"])
    listing = senv.base / "protected.json"
    listing.write_text(json.dumps(planted))
    inside = _result(senv.run([PY, "-c", CHANGE, str(listing)]))
    assert inside == [], f"changed inside: {inside}"
    for rel in PROTECTED_FILES:
        assert (senv.ws / rel).read_text() == "original\n", rel
    for rel in PROTECTED_DIRS:
        assert sorted(os.listdir(senv.ws / rel)) == ["settings"], rel
    # the same attempts work on the host (first change of each: append / plant)
    outside = _result(senv.run([PY, "-c", CHANGE, str(listing)], sandboxed=False))
    assert {w.rsplit(" #", 1)[0] for w in outside if w.endswith("#0")} == {p for p, _ in planted}
