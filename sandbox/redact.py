"""Take secret values out of text before it is written down (the audit log).

The audit log keeps every run's command line, and people put credentials
on command lines: ``curl -u me:pw``, ``--password=...``, ``TOKEN=... make``,
a URL with a token in it, or ``$GITHUB_TOKEN`` that their shell expanded.
``Redactor.text`` replaces what it recognises with ``[REDACTED]``:

* the value of every variable the environment filter removes from this run,
  of every ``--env-pass`` variable, and of every variable whose name or
  value the built-in checks call a secret (values of 6 characters or more:
  shorter ones are too common to search for);
* tokens in a well-known format (``ghp_...``, ``sk-...``, ``AKIA...``, a
  JWT: ``envfilter.token_word``), a PEM private key block;
* the password or token in a URL (``https://user:pw@host``,
  ``https://TOKEN@host``), and a secret-named query parameter
  (``?access_token=...``, ``&api_key=...``: names as below);
* what follows ``Authorization:``, ``Proxy-Authorization:``, ``Cookie:``,
  ``X-Api-Key:``, ``Private-Token:`` and any ``...-Token:``, ``...-Secret:``,
  ``...-Password:`` header (header values);
* the value of ``NAME=VALUE``, ``--NAME=VALUE`` and ``--NAME VALUE`` when
  NAME holds PASSWORD, PASSWD, PASSPHRASE, SECRET, TOKEN, APIKEY, API_KEY,
  ACCESS_KEY, PRIVATE_KEY, CREDENTIAL, COOKIE or AUTH (not AUTHOR); and the
  password after ``user:`` in ``-u``/``--user``/``--proxy-user`` (curl).

Not recognised, and so kept: a bare password given as a plain argument
(``mysql -pHUNTER2``, ``sshpass -p x``), a secret in a file the command
reads, a value in a format nobody registered.  Pure: string methods only.
"""

from __future__ import annotations

from sandbox import envfilter

MASK = "[REDACTED]"
MIN_VALUE = 6  # shorter environment values are not searched for
SECRET_WORDS = ("PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "TOKEN", "APIKEY", "API_KEY",
                "ACCESS_KEY", "PRIVATE_KEY", "CREDENTIAL", "COOKIE", "AUTH")
HEADERS = ("authorization:", "proxy-authorization:", "cookie:", "x-api-key:", "api-key:",
           "private-token:", "x-auth-token:", "-token:", "-secret:", "-password:")
USER_OPTIONS = ("-u", "--user", "--proxy-user", "-U")


def secret_name(name: str) -> bool:
    """Does an option or variable name say its value is a secret?"""
    upper = name.lstrip("-").upper().replace("-", "_")
    if "AUTHOR" in upper:  # git --author, AUTHOR_NAME
        upper = upper.replace("AUTHOR", "")
    return any(word in upper for word in SECRET_WORDS)


class Redactor:
    """What to take out, learned once from the run's environment."""

    def __init__(self, environ, kept=None, passed=()) -> None:
        """``kept``: the environment the command got (names missing from it
        were removed as secrets), or None when the run never got that far."""
        values = set()
        passed = set(passed)
        for name, value in environ.items():
            if len(value) < MIN_VALUE:
                continue
            if ((kept is not None and name not in kept) or name in passed or secret_name(name)
                    or envfilter.secret_value(value)):
                values.add(value)
        # longest first: a value that contains another is replaced whole
        self.values = sorted(values, key=len, reverse=True)

    def text(self, text: str) -> str:
        if not text:
            return text
        for value in self.values:
            if value in text:
                text = text.replace(value, MASK)
        if "-----BEGIN " in text:
            text = _pem(text)
        if "://" in text:
            text = _url_userinfo(text)
        if "?" in text or "&" in text:
            text = _query(text)
        low = text.lower()
        if any(h in low for h in HEADERS):
            text = _headers(text)
        for word in _token_words(text):
            text = text.replace(word, MASK)
        return _assignments(text)

    def argv(self, argv) -> list[str]:
        """A command line: each word as ``text``, and the word after a
        secret-named option (``--token X``, ``-u user:pw``) too."""
        out: list[str] = []
        after = None
        for word in argv:
            if after == "all":
                out.append(MASK)
            elif after == "password":
                user, colon, _ = word.partition(":")
                out.append(f"{self.text(user)}:{MASK}" if colon else self.text(word))
            else:
                out.append(self.text(word))
            after = None
            if word.startswith("-") and "=" not in word and secret_name(word):
                after = "all"
            elif word in USER_OPTIONS:
                after = "password"
        return out

    def value(self, data):
        """Every string inside ``data`` (dicts, lists), redacted."""
        if isinstance(data, str):
            return self.text(data)
        if isinstance(data, dict):
            return {k: self.value(v) for k, v in data.items()}
        if isinstance(data, (list, tuple)):
            return [self.value(v) for v in data]
        return data


def _token_words(text: str) -> list[str]:
    words = text.encode("utf-8", "surrogatepass").translate(envfilter._WORDS).split()
    return [w.decode("utf-8", "surrogatepass") for w in words
            if len(w) >= 8 and envfilter.token_word(w.decode("utf-8", "surrogatepass"))]


def _pem(text: str) -> str:
    out, at = [], 0
    while True:
        start = text.find("-----BEGIN ", at)
        if start == -1:
            break
        label_end = text.find("-----", start + 11)
        label = text[start + 11:label_end] if label_end != -1 else ""
        end = text.find("-----END ", start)
        stop = text.find("-----", end + 9) if end != -1 else -1
        if label_end == -1 or any(p in label for p in envfilter._PUBLIC_PEM):
            out.append(text[at:start + 11])
            at = start + 11
            continue
        out.append(text[at:start] + MASK)
        at = len(text) if stop == -1 else stop + 5
    out.append(text[at:])
    return "".join(out)


def _url_userinfo(text: str) -> str:
    out, at = [], 0
    while True:
        mark = text.find("://", at)
        if mark == -1:
            break
        begin = mark + 3
        end = begin
        while end < len(text) and text[end] not in "/?# \t\n\"'":
            end += 1
        userinfo, sep, _host = text[begin:end].rpartition("@")
        out.append(text[at:begin])
        user, colon, _pw = userinfo.partition(":")
        if sep and colon:
            out.append(f"{user}:{MASK}@")
            at = begin + len(userinfo) + 1
        elif sep and envfilter._bare_token(userinfo):  # https://TOKEN@host
            out.append(f"{MASK}@")
            at = begin + len(userinfo) + 1
        else:  # no user, or a plain user name (ssh://git@host)
            at = begin
    out.append(text[at:])
    return "".join(out)


_QUERY_NAME_END = "=&#? \t\n\"'"
_QUERY_VALUE_END = "&# \t\n\"'"


def _query(text: str) -> str:
    """A URL query's secret-named parameters: ``?access_token=X&api_key=Y``."""
    at = 0
    while True:
        marks = [i for i in (text.find("?", at), text.find("&", at)) if i != -1]
        if not marks:
            return text
        start = min(marks) + 1
        end = start
        while end < len(text) and text[end] not in _QUERY_NAME_END:
            end += 1
        name = text[start:end]
        if end < len(text) and text[end] == "=" and name and secret_name(name) \
                and _name_like(name):
            stop = end + 1
            while stop < len(text) and text[stop] not in _QUERY_VALUE_END:
                stop += 1
            if text[end + 1:stop] and text[end + 1:stop] != MASK:
                text = text[:end + 1] + MASK + text[stop:]
            at = end + 1
        else:
            at = start


def _headers(text: str) -> str:
    low = text.lower()
    for header in HEADERS:
        at = low.find(header)
        while at != -1:
            start = at + len(header)
            end = start
            while end < len(text) and text[end] not in "\n\"'":
                end += 1
            if text[start:end].strip() and text[start:end].strip() != MASK:
                text = text[:start] + " " + MASK + text[end:]
                low = text.lower()
            at = low.find(header, start + 1)
    return text


def _assignments(text: str) -> str:
    """Inside one string (an argv word, or a ``sh -c`` script): ``NAME=VALUE``
    with a secret-sounding NAME, the word after ``--token``-like options, and
    the password of ``-u user:pw``."""
    if "=" not in text and " " not in text:
        return text
    words = text.split(" ")
    after = None
    for i, word in enumerate(words):
        if not word:
            continue
        if after == "all" and word != MASK:
            words[i] = MASK + (word[-1] if word[-1] in "'\";" and len(word) > 1 else "")
        elif after == "password" and ":" in word:
            user, _, rest = word.partition(":")
            words[i] = f"{user}:{MASK}" + (rest[-1] if rest[-1:] in ("'", '"', ";") else "")
        after = None
        name, eq, value = word.partition("=")
        bare = name.lstrip("'\"")
        if eq and value and value != MASK and bare and secret_name(bare) and _name_like(bare):
            quote = value[-1] if value[-1] in "'\";" and len(value) > 1 else ""
            words[i] = f"{name}={MASK}{quote}"
        elif not eq and word.startswith("-") and _name_like(word) and secret_name(word):
            after = "all"
        elif word in USER_OPTIONS:
            after = "password"
    return " ".join(words)


def _name_like(name: str) -> bool:
    core = name.lstrip("-")
    return bool(core) and all(c.isalnum() or c in "_-." for c in core)
