"""Decide the command's environment: secrets out, tool caches in.

Pure: takes the caller's environment and returns the new one.  The result is
handed to bwrap through execve's environment, never as ``--setenv`` argv, so
no value ever shows up in ``ps``.

A variable is removed when its name matches an ``[env] deny`` pattern of the
profile, or when its value is a secret whatever the name is (built in, see
``secret_value``).  A name listed in ``[env] pass`` is kept whatever either
check says: that is the user's explicit choice, and a weakening that
``sandbox explain`` shows.

This runs on every start over the whole environment, so it uses string
methods only: importing and compiling ``re`` would cost more than all the
checks together (measured with ``python -X importtime``).
"""

from __future__ import annotations

from sandbox.patterns import match


class _Matcher:
    """The deny patterns, sorted by shape once, so each variable costs a few
    string operations instead of a pattern match per pattern (this runs on
    every start, over the whole environment)."""

    __slots__ = ("passed", "exact", "contains", "prefix", "suffix", "general")

    def __init__(self, deny, passed) -> None:
        self.passed = {p.upper() for p in passed}
        exact, contains, prefix, suffix, general = set(), [], [], [], []
        for pattern in (p.upper() for p in deny):
            inner = pattern.strip("*")
            if "*" in inner or "?" in pattern:
                general.append(pattern)
            elif pattern.startswith("*") and pattern.endswith("*") and len(pattern) > 1:
                contains.append(inner)
            elif pattern.endswith("*"):
                prefix.append(inner)
            elif pattern.startswith("*"):
                suffix.append(inner)
            else:
                exact.add(pattern)
        self.exact, self.contains, self.general = exact, tuple(contains), tuple(general)
        self.prefix, self.suffix = tuple(prefix), tuple(suffix)

    def denied(self, name: str) -> bool:
        upper = name.upper()
        return upper not in self.passed and self.denied_upper(upper)

    def denied_upper(self, upper: str) -> bool:
        # map() over a bound method stays in C, unlike a generator expression
        return (upper in self.exact or upper.startswith(self.prefix)
                or upper.endswith(self.suffix) or any(map(upper.__contains__, self.contains))
                or any(match(upper, p) for p in self.general))


# --------------------------------------------------------------------------
# Values that are secrets whatever the variable is called.
#
# Built in rather than a profile key: a token format is a fact about the
# issuer, not a policy choice, and a profile that does not extend "default"
# (no name patterns at all) must still not hand out a GitHub token.  The
# escape hatch is the same as for names: `[env] pass`.

_DIGITS = frozenset("0123456789")
_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_ALNUM = _DIGITS | _LETTERS
_URLSAFE = _ALNUM | {"-", "_"}
_DOTTED = _URLSAFE | {"."}
_HEX = _DIGITS | frozenset("abcdef")
_UPPER32 = _DIGITS | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")

# A token is a *word* of the value (a maximal run of letters, digits, "_",
# "-" and "."), so one is found after "=", ":", "@", "/", a space or a quote,
# and the prefix must start the word: "/opt/sk-learn" or "mask-rcnn" are not
# tokens.  After the prefix come at least `shortest` (at most `longest`)
# characters of `alphabet`.  `digit` (for prefixes that ordinary words also
# start with) asks for a digit and a letter in that part, as random tokens
# of this length all but certainly have and names rarely do.
#        prefix:   (shortest, longest, alphabet, digit)
_TOKENS: dict[str, tuple[int, int, frozenset, bool]] = {
    # GitHub: classic, OAuth, user-to-server, server-to-server, refresh; fine-grained
    "ghp_": (30, 255, _ALNUM, False), "gho_": (30, 255, _ALNUM, False),
    "ghu_": (30, 255, _ALNUM, False), "ghs_": (30, 255, _ALNUM, False),
    "ghr_": (30, 255, _ALNUM, False), "github_pat_": (40, 255, _URLSAFE, False),
    # GitLab: personal/project/group, deploy, runner, trigger, CI job, feed,
    # incoming mail, agent, OAuth app secret, SCIM, feature-flag client
    "glpat-": (20, 255, _URLSAFE, False), "gldt-": (20, 255, _URLSAFE, False),
    "glrt-": (20, 255, _URLSAFE, False), "glptt-": (20, 255, _URLSAFE, False),
    "glcbt-": (20, 255, _URLSAFE, False), "glft-": (20, 255, _URLSAFE, False),
    "glimt-": (20, 255, _URLSAFE, False), "glagent-": (20, 255, _URLSAFE, False),
    "gloas-": (20, 255, _URLSAFE, False), "glsoat-": (20, 255, _URLSAFE, False),
    "glffct-": (20, 255, _URLSAFE, False),
    # Slack: bot, user, workspace-app, refresh, legacy, config; app-level
    "xoxb-": (20, 255, _URLSAFE, False), "xoxp-": (20, 255, _URLSAFE, False),
    "xoxa-": (20, 255, _URLSAFE, False), "xoxr-": (20, 255, _URLSAFE, False),
    "xoxs-": (20, 255, _URLSAFE, False), "xoxe-": (20, 255, _URLSAFE, False),
    "xoxe.": (20, 255, _URLSAFE, False), "xapp-": (20, 255, _URLSAFE, False),
    # OpenAI, Anthropic (sk-ant-), OpenRouter, DeepSeek and the many APIs
    # that copied the "sk-" shape
    "sk-": (32, 400, _URLSAFE, True),
    # Stripe secret and restricted keys, webhook signing secrets
    "sk_live_": (20, 255, _ALNUM, False), "rk_live_": (20, 255, _ALNUM, False),
    "sk_test_": (20, 255, _ALNUM, False), "rk_test_": (20, 255, _ALNUM, False),
    "whsec_": (24, 255, _ALNUM, False),
    # AWS access key ids: long-term, temporary (STS), bearer, context
    "AKIA": (16, 16, _UPPER32, False), "ASIA": (16, 16, _UPPER32, False),
    "ABIA": (16, 16, _UPPER32, False), "ACCA": (16, 16, _UPPER32, False),
    # Google API keys, OAuth access tokens, OAuth client secrets
    "AIza": (30, 60, _URLSAFE, False), "ya29.": (30, 4096, _DOTTED, False),
    "GOCSPX-": (20, 60, _URLSAFE, False),
    # package registries: npm, PyPI, RubyGems, Docker Hub
    "npm_": (30, 255, _ALNUM, False), "pypi-": (50, 4096, _URLSAFE, False),
    "rubygems_": (40, 255, _HEX, False), "dckr_pat_": (20, 255, _URLSAFE, False),
    # Hugging Face, HashiCorp Vault, DigitalOcean, Doppler, age secret keys
    "hf_": (30, 255, _ALNUM, True),
    "hvs.": (20, 4096, _URLSAFE, False), "hvb.": (20, 4096, _URLSAFE, False),
    "hvr.": (20, 4096, _URLSAFE, False),
    "dop_v1_": (40, 255, _HEX, False), "doo_v1_": (40, 255, _HEX, False),
    "dor_v1_": (40, 255, _HEX, False),
    "dp.st.": (20, 255, _DOTTED, False), "dp.pt.": (20, 255, _DOTTED, False),
    "dp.ct.": (20, 255, _DOTTED, False), "dp.sa.": (20, 255, _DOTTED, False),
    "AGE-SECRET-KEY-1": (40, 255, _UPPER32, False),
    # SaaS tokens with a registered prefix: Shopify, Databricks, Pulumi,
    # Linear, Postman, New Relic, Grafana, Sentry, Atlassian, Figma, Notion,
    # Supabase, Fly.io, Netlify, SendGrid
    "shpat_": (32, 255, _ALNUM, False), "shpss_": (32, 255, _ALNUM, False),
    "shpca_": (32, 255, _ALNUM, False), "shppa_": (32, 255, _ALNUM, False),
    "dapi": (32, 40, _HEX, True), "pul-": (40, 40, _HEX, False),
    "lin_api_": (30, 255, _ALNUM, False), "PMAK-": (40, 255, _URLSAFE, False),
    "NRAK-": (20, 255, _UPPER32, False), "glc_": (30, 4096, _URLSAFE, False),
    "glsa_": (30, 255, _URLSAFE, False), "sntrys_": (30, 4096, _URLSAFE, False),
    "sntryu_": (30, 255, _ALNUM, False), "ATATT3": (50, 4096, _URLSAFE, False),
    "figd_": (20, 255, _URLSAFE, False), "ntn_": (30, 255, _ALNUM, False),
    "sbp_": (30, 255, _ALNUM, False), "fo1_": (30, 255, _URLSAFE, False),
    "nfp_": (30, 255, _ALNUM, False), "SG.": (60, 255, _DOTTED, False),
}
_PREFIXES = tuple(_TOKENS)
_SHORTEST = min(len(p) + spec[0] for p, spec in _TOKENS.items())

# Every byte that cannot be part of a token becomes a space, so that
# bytes.split() cuts a value into words; on bytes, translate and split run
# in C at memory speed (str.translate with a dict is 30 times slower).
_WORDS = bytes(c if chr(c) in _DOTTED else 0x20 for c in range(256))

# Substrings (of the value in lower case) that make a value a secret:
# cloud connection strings and signed URLs, webhook URLs (the URL itself is
# the credential), HTTP authorization headers handed to git or curl.
_MARKERS = (
    "accountkey=", "sharedaccesskey=", "sharedaccesssignature=",
    "hooks.slack.com/services/", "hooks.slack.com/workflows/", "hooks.slack.com/triggers/",
    "discord.com/api/webhooks/", "discordapp.com/api/webhooks/",
    "webhook.office.com/", "outlook.office.com/webhook",
    "authorization: basic ", "authorization: bearer ", "authorization: token ",
    ".atlasv1.",
)
# PEM blocks are secrets unless their label says they are public.
_PUBLIC_PEM = ("CERTIFICATE", "PUBLIC KEY", "X509 CRL", "SIGNATURE", "PARAMETERS")


def token_word(word: str) -> bool:
    """Is ``word`` (no separators in it) a token in a well-known format?"""
    if word.startswith("eyJ"):
        return _jwt(word)
    if not word.startswith(_PREFIXES):
        return False
    for prefix, (shortest, longest, alphabet, digit) in _TOKENS.items():
        if word.startswith(prefix):
            body = word[len(prefix):]
            if (shortest <= len(body) <= longest and alphabet.issuperset(body)
                    and (not digit or (not _DIGITS.isdisjoint(body)
                                       and not _LETTERS.isdisjoint(body)))):
                return True
    return False


def _jwt(word: str) -> bool:
    """header.payload.signature (or the five parts of an encrypted JWT), each
    base64url, the header a JSON object (so base64 "eyJ")."""
    parts = word.split(".")
    return (len(parts) in (3, 5) and len(parts[0]) >= 10 and len(parts[1]) >= 10
            and all(_URLSAFE.issuperset(p) for p in parts))


def _pem_secret(value: str) -> bool:
    at = value.find("-----BEGIN ")
    while at != -1:
        label = value[at + 11:value.find("-----", at + 11)]
        if not any(word in label for word in _PUBLIC_PEM):
            return True
        at = value.find("-----BEGIN ", at + 11)
    return False


def carries_credentials(value: str) -> bool:
    """A URL whose userinfo holds a secret: ``user:password@`` (as proxies and
    package indexes are configured), or a bare token as the user name
    (``https://<token>@github.com/``).  A plain user name (``ssh://git@``,
    ``postgres://app@db``) is not a secret."""
    at = value.find("://")
    while at != -1:
        authority = value[at + 3:]
        for end in "/?# \t\n\"'":
            authority = authority.split(end, 1)[0]
        userinfo, sep, _host = authority.rpartition("@")
        if sep and userinfo and (":" in userinfo or _bare_token(userinfo)):
            return True
        at = value.find("://", at + 3)
    return False


def _bare_token(userinfo: str) -> bool:
    # a known prefix is enough here ("ghp_x" in a URL is still meant as a
    # token); otherwise a long run with digits in it, as random tokens have
    # (GitHub's old 40-hex tokens, Azure DevOps PATs)
    if userinfo.startswith(_PREFIXES) or userinfo.startswith("eyJ"):
        return True
    return (len(userinfo) >= 30 and not _DIGITS.isdisjoint(userinfo)
            and not _LETTERS.isdisjoint(userinfo))


def _token_words(text: str) -> set[str]:
    words = text.encode("utf-8", "surrogatepass").translate(_WORDS).split()
    return {w.decode() for w in words if len(w) >= _SHORTEST and token_word(w.decode())}


def secret_value(value: str) -> bool:
    """Is ``value`` a secret whatever the variable's name?"""
    if "://" in value and carries_credentials(value):
        return True
    if len(value) < _SHORTEST:
        return False
    if "-----BEGIN " in value and _pem_secret(value):
        return True
    low = value.lower()
    return any(marker in low for marker in _MARKERS) or bool(_token_words(value))


def _secret_names(items: list[tuple[str, str]]) -> set[str]:
    """The names in ``items`` whose value is a secret: the same answer as
    ``secret_value`` for each, but the checks other than the URL one look at
    all values joined into one string first (with a separator between them,
    so no word or marker spans two values).  Without secrets that is a few
    C calls instead of a dozen per variable; with one, only the values that
    hold what was found are looked at again."""
    found = {n for n, v in items if "://" in v and carries_credentials(v)}
    rest = [(n, v) for n, v in items if n not in found and len(v) >= _SHORTEST]
    blob = "\0".join(v for _, v in rest)
    low = blob.lower()
    hints = [m for m in _MARKERS if m in low]
    if "-----BEGIN " in blob:
        hints.append("-----begin ")
    hints.extend(w.lower() for w in _token_words(blob))
    if hints:
        found.update(n for n, v in rest if any(h in v.lower() for h in hints) and secret_value(v))
    return found


def _removed_names(environ: dict[str, str], matcher: _Matcher) -> set[str]:
    by_name, candidates = set(), []
    for name, value in environ.items():
        upper = name.upper()
        if upper in matcher.passed:
            continue  # [env] pass keeps it, whatever its name or value
        if matcher.denied_upper(upper):
            by_name.add(name)
        else:
            candidates.append((name, value))
    return by_name | _secret_names(candidates)


def is_denied(name: str, policy) -> bool:
    """Does a name pattern of ``policy`` remove ``name`` (whatever its value)?"""
    return _Matcher(policy.env_deny, policy.env_pass).denied(name)


def removed(environ: dict[str, str], policy) -> list[str]:
    """Names of the variables the policy takes out (for explain and reports;
    never their values)."""
    return sorted(_removed_names(environ, _Matcher(policy.env_deny, policy.env_pass)))


def sandbox_env(environ: dict[str, str], policy, cache_dir: str | None,
                cwd: str) -> dict[str, str]:
    gone = _removed_names(environ, _Matcher(policy.env_deny, policy.env_pass))
    env = {k: v for k, v in environ.items() if k not in gone}
    env.update(dict(policy.env_set))
    if cache_dir is not None:
        for var, sub in policy.caches:
            env[var] = f"{cache_dir}/{sub}"
    env["PWD"] = cwd
    env["SANDBOX_ACTIVE"] = "1"
    return env
