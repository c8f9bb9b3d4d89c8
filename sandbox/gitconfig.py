"""Just enough of git's config format to find what git would execute.

We need ``core.hooksPath`` and every ``include.path`` / ``includeIf.*.path``
so the files they name can be kept read-only.  Spawning ``git config`` costs
milliseconds per repository on every run, so we read the files ourselves.
The parser is tolerant: a line it cannot read is skipped, never fatal.
"""

from __future__ import annotations

import os

MAX_INCLUDE_DEPTH = 5
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")

# Hand-written rather than regular expressions: the persistence audit reads
# configs after every run, and importing ``re`` would cost more than parsing.


def section_header(line: str):
    """``[name]`` or ``[name "sub"]`` at the start of ``line``: (name, sub, end) or None."""
    i, n = 0, len(line)
    while i < n and line[i] in " \t":
        i += 1
    if i >= n or line[i] != "[":
        return None
    i += 1
    while i < n and line[i] in " \t":
        i += 1
    start = i
    while i < n and line[i] in _NAME_CHARS:
        i += 1
    if i == start:
        return None
    name, sub = line[start:i], None
    j = i
    while j < n and line[j] in " \t":
        j += 1
    if j > i and j < n and line[j] == '"':
        j += 1
        chars = []
        while j < n and line[j] != '"':
            if line[j] == "\\" and j + 1 < n:
                j += 1
            chars.append(line[j])
            j += 1
        if j >= n:
            return None
        sub = "".join(chars)
        i = j + 1
    while i < n and line[i] in " \t":
        i += 1
    if i >= n or line[i] != "]":
        return None
    return name, sub, i + 1


def _key_value(stripped: str):
    """``key`` or ``key = value``: (key, raw value or None), or None."""
    if not stripped or not stripped[0].isascii() or not stripped[0].isalpha():
        return None
    i = 1
    while i < len(stripped) and stripped[i] in _KEY_CHARS:
        i += 1
    key, rest = stripped[:i], stripped[i:].lstrip(" \t")
    if not rest:
        return key, None
    if rest[0] != "=":
        return None
    return key, rest[1:].lstrip(" \t")


def _unquote(raw: str) -> str:
    out, quoted, i = [], False, 0
    while i < len(raw):
        ch = raw[i]
        if ch == '"':
            quoted = not quoted
        elif ch == "\\" and i + 1 < len(raw):
            i += 1
            out.append({"n": "\n", "t": "\t", "b": "\b"}.get(raw[i], raw[i]))
        elif ch in "#;" and not quoted:
            break
        else:
            out.append(ch)
        i += 1
    return "".join(out).strip()


def entries(text: str):
    """Yield (section, subsection, key, value) with section/key lower-cased."""
    section, sub = "", None
    text = text.lstrip("\ufeff")  # git skips a UTF-8 byte-order mark; so must we
    # git ends lines at "\n" only; str.splitlines() would also split at \f,
    # \v, \x1c-\x1e, \x85, \u2028... and see a section header inside a comment
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        header = section_header(line)
        if header:
            name, sub, end = header
            if sub is None and "." in name:  # legacy [section.sub] form
                name, sub = name.split(".", 1)
            section = name.lower()
            line = line[end:]
            if not line.strip():
                continue
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        kv = _key_value(stripped)
        if kv and section:
            value = _unquote(kv[1]) if kv[1] is not None else "true"
            yield section, sub, kv[0].lower(), value


def _expand(value: str, base_dir: str) -> str:
    if value.startswith("~/") or value == "~":
        value = os.path.expanduser(value)
    if not os.path.isabs(value):
        value = os.path.join(base_dir, value)
    return os.path.normpath(value)


def _read(path: str) -> str | None:
    from sandbox.safeio import read_text

    return read_text(os.path.realpath(path), 4 << 20)


# Keys whose value git, or a program git starts for it, runs as a command (a
# superset).  A word of such a value that holds a "/" names a file that runs
# (or that what runs reads): relative to the work tree root, where git runs
# these, or absolute.  "section.*.key" stands for any subsection.
RUNS = frozenset((
    "core.fsmonitor", "core.editor", "core.pager", "core.askpass", "core.sshcommand",
    "core.gitproxy", "core.alternaterefscommand", "sequence.editor", "gpg.program",
    "credential.helper", "diff.external", "web.browser", "interactive.difffilter",
    "uploadpack.packobjectshook", "imap.tunnel", "instaweb.httpd", "gui.editor",
    "sendemail.smtpserver", "sendemail.tocmd", "sendemail.cccmd", "sendemail.headercmd",
    "filter.*.clean", "filter.*.smudge", "filter.*.process", "diff.*.textconv",
    "diff.*.command", "merge.*.driver", "difftool.*.cmd", "difftool.*.path",
    "mergetool.*.cmd", "mergetool.*.path", "credential.*.helper", "gpg.*.program",
    "gpg.*.defaultkeycommand", "man.*.cmd", "man.*.path", "browser.*.cmd", "browser.*.path",
    "remote.*.uploadpack", "remote.*.receivepack", "trailer.*.command", "trailer.*.cmd",
    "guitool.*.cmd", "sendemail.*.smtpserver", "sendemail.*.tocmd", "sendemail.*.cccmd",
    "lfs.*.path", "lfs.*.clean", "lfs.*.smudge",
))
# with any key: the value is a command when it starts with "!" (alias, submodule
# update), or always (pager.<cmd>)
_RUNS_BANG = frozenset(("alias", "submodule"))
_RUNS_ANY = frozenset(("pager",))


def runs(section: str, sub, key: str, value: str) -> bool:
    """Does git (or what it starts) run ``value`` of this entry as a command?"""
    if section in _RUNS_ANY:
        return True
    if section in _RUNS_BANG:
        return value.lstrip().startswith("!")
    name = f"{section}.*.{key}" if sub is not None else f"{section}.{key}"
    return name in RUNS


def _words(value: str) -> list[str]:
    """Shell words of ``value`` (quotes and backslashes as sh reads them; never fails)."""
    words, word, quote, i, any_ = [], [], "", 0, False
    while i < len(value):
        ch = value[i]
        if quote == "'":
            if ch == "'":
                quote = ""
            else:
                word.append(ch)
        elif ch == "\\" and i + 1 < len(value):
            i += 1
            word.append(value[i])
            any_ = True
        elif quote == '"':
            if ch == '"':
                quote = ""
            else:
                word.append(ch)
        elif ch in "'\"":
            quote, any_ = ch, True
        elif ch in " \t\n;&|()<>`":
            if word or any_:
                words.append("".join(word))
            word, any_ = [], False
        else:
            word.append(ch)
        i += 1
    if word or any_:
        words.append("".join(word))
    return words


def program_paths(value: str) -> list[str]:
    """The words of a command that name a file by a path (they hold a "/"):
    what runs, and what it is given to run (``sh tools/x.sh``)."""
    out = []
    words = _words(value.lstrip().removeprefix("!"))
    for word in list(words):
        if " " in word or "\t" in word:  # sh -c "tools/x.sh --fast": the words inside too
            words += _words(word)
    for word in words:
        for part in (word, word.rpartition("=")[2]):  # VAR=path, --opt=path
            if "/" in part and "://" not in part and not part.startswith("-"):
                out.append(part)
    return list(dict.fromkeys(out))


def referenced(config_files: list[str], read=_read):
    """(every file an include.path names, every core.hooksPath value with its
    config file, every path a command names with its key and config file,
    every core.worktree: another work tree root).

    All of them, not just the one git would pick: callers protect a superset.
    An ``init.templateDir`` counts as a hooks path (its ``hooks/`` is copied
    into every repository git makes).
    """
    included: list[str] = []
    hooks: list[tuple[str, str]] = []
    programs: list[tuple[str, str, str]] = []
    worktrees: list[str] = []

    def visit(path: str, depth: int) -> None:
        text = read(path)
        if text is None:
            return
        for section, sub, key, value in entries(text):
            if section == "core" and key == "hookspath" and value:
                hooks.append((value, path))
            elif section == "core" and key == "worktree" and value:
                worktrees.append(_expand(value, os.path.dirname(path)))
            elif section == "init" and key == "templatedir" and value:
                hooks.append((value.rstrip("/") + "/hooks", path))
            elif section in ("include", "includeif") and key == "path" and value:
                target = _expand(value, os.path.dirname(path))
                if target not in included:
                    included.append(target)
                    if depth < MAX_INCLUDE_DEPTH:
                        visit(target, depth + 1)
            elif value and runs(section, sub, key, value):
                name = f"{section}.{sub}.{key}" if sub is not None else f"{section}.{key}"
                programs.extend((word, name, path) for word in program_paths(value))

    for cfg in config_files:
        visit(cfg, 0)
    return included, hooks, programs, worktrees


# -- where a repository's git directories are ----------------------------------
# Shared by discovery (which reads through an Observer, to stamp what it saw)
# and the audit (which reads files the command may have planted), so each
# passes its own file-system functions.

def locate(dotgit: str, read, realpath, is_dir) -> tuple[str, str, bool] | None:
    """(gitdir, commondir, pointed) for a ``.git`` entry, or None if it is not one.

    ``pointed``: the entry is a ``gitdir:`` file (worktree, submodule), not the
    directory itself.  ``commondir`` comes from ``<gitdir>/commondir`` if any.
    """
    # Read as git reads them (setup.c): up to 1 MiB, the text ends at a NUL,
    # only trailing LF/CR are dropped, "gitdir: " with exactly one space.
    # Only grants depend on this (which directory outside the writable roots
    # may be made writable), and they also need the target to point back.
    if is_dir(dotgit):
        gitdir, pointed = dotgit, False
    else:
        line = (read(dotgit, 1 << 20) or "").split("\0", 1)[0].rstrip("\r\n")
        if not line.startswith("gitdir: ") or len(line) == 8:
            return None
        gitdir = realpath(os.path.join(os.path.dirname(dotgit), line[8:]))
        pointed = True
    commondir = gitdir
    pointer = read(os.path.join(gitdir, "commondir"), 1 << 20)
    if pointer is not None:
        pointer = pointer.split("\0", 1)[0].rstrip("\r\n")
        if not pointer:
            return None
        commondir = realpath(os.path.join(gitdir, pointer))
    return gitdir, commondir, pointed


def module_gitdirs(path: str, depth: int, listdir, is_link, is_file, is_dir) -> list[str]:
    """Git dirs of submodules under ``<commondir>/modules`` (names may hold '/').

    A symlink is never followed: it may have been planted there.
    """
    found: list[str] = []
    for name in listdir(path):
        sub = os.path.join(path, name)
        if is_link(sub):
            continue
        if is_file(os.path.join(sub, "HEAD")):
            found.append(sub)
            if depth > 0:
                found += module_gitdirs(os.path.join(sub, "modules"), depth - 1,
                                        listdir, is_link, is_file, is_dir)
        elif depth > 0 and is_dir(sub):
            found += module_gitdirs(sub, depth - 1, listdir, is_link, is_file, is_dir)
    return found


# -- rebuilding a config the command wrote ---------------------------------------
# The audit never edits a config the command wrote, nor trusts that it reads
# it as git does.  It rebuilds it: the entries it can read in a strict subset
# of git's syntax are kept if an ALLOW-list says they cannot make git (or a
# tool reading the config) run a program, and the result is written in the
# form git itself writes, which git reads back exactly as we mean it.  A file
# outside that subset (control characters, continuation lines, escapes git
# would reject, the legacy [section.sub] form, a byte-order mark, more than
# MAX_CONFIG) is replaced by SAFE_CONFIG whole.

MAX_CONFIG = 4 << 20
SAFE_CONFIG = "[core]\n\trepositoryformatversion = 0\n"

_BOOL = frozenset(("true", "false", "yes", "no", "on", "off", "1", "0", ""))
_ANY, _BOOLEAN, _INT, _PATH = "any", "bool", "int", "path"
# section -> {key: value check}; sections with a subsection are "section.*"
ALLOWED = {
    "core": {"repositoryformatversion": _INT, "filemode": _BOOLEAN, "bare": _BOOLEAN,
             "logallrefupdates": _ANY, "ignorecase": _BOOLEAN, "precomposeunicode": _BOOLEAN,
             "symlinks": _BOOLEAN, "worktree": _PATH, "autocrlf": _ANY, "eol": _ANY,
             "sharedrepository": _ANY, "sparsecheckout": _BOOLEAN,
             "sparsecheckoutcone": _BOOLEAN, "quotepath": _BOOLEAN, "untrackedcache": _ANY,
             "splitindex": _BOOLEAN, "commitgraph": _BOOLEAN, "multipackindex": _BOOLEAN},
    "extensions": {"objectformat": _ANY, "worktreeconfig": _BOOLEAN, "refstorage": _ANY,
                   "partialclone": _ANY, "preciousobjects": _BOOLEAN, "noop": _ANY},
    "remote.*": {"url": _ANY, "pushurl": _ANY, "fetch": _ANY, "push": _ANY, "tagopt": _ANY,
                 "prune": _BOOLEAN, "mirror": _BOOLEAN, "promisor": _BOOLEAN,
                 "partialclonefilter": _ANY},
    "remote": {"pushdefault": _ANY},
    "branch.*": {"remote": _ANY, "merge": _ANY, "rebase": _ANY, "pushremote": _ANY},
    "submodule.*": {"url": _ANY, "active": _BOOLEAN, "branch": _ANY},
    "user": {"name": _ANY, "email": _ANY},
    "init": {"defaultbranch": _ANY},
    "lfs": {"repositoryformatversion": _INT},
    "pull": {"rebase": _ANY, "ff": _ANY},
    "push": {"default": _ANY, "autosetupremote": _BOOLEAN},
    "fetch": {"prune": _BOOLEAN},
    "gc": {"auto": _INT},
}


def _control(ch: str) -> bool:
    """A character no config the audit keeps may hold in its text (tab and LF are
    the text's own layout; inside a value or name they are refused by _odd)."""
    o = ord(ch)
    return o < 32 and ch not in "\t\n" or 0x7f <= o <= 0x9f or ch in "\u2028\u2029"


def _odd(ch: str) -> bool:
    """A character a kept value or subsection may not hold: every control
    character, LF and tab included.  Git's writer escapes them, and a reader
    that unescapes them (``\\n`` -> LF) then meets a second line; we write no
    escapes at all, so such a value is dropped instead."""
    o = ord(ch)
    return o < 32 or 0x7f <= o <= 0x9f or ch in "\u2028\u2029"


def _strict_header(body: str):
    """``[name]`` / ``[name "sub"]`` then only blanks or a comment: (name, sub) or None."""
    i, n = 1, len(body)
    start = i
    while i < n and (body[i].isascii() and (body[i].isalnum() or body[i] == "-")):
        i += 1
    name, sub = body[start:i], None
    if not name:
        return None
    if i < n and body[i] == " ":
        i += 1
        if i >= n or body[i] != '"':
            return None
        i += 1
        chars = []
        while i < n and body[i] != '"':
            if body[i] == "\\":
                if i + 1 >= n or body[i + 1] not in '"\\':
                    return None
                i += 1
            chars.append(body[i])
            i += 1
        if i >= n:
            return None
        sub = "".join(chars)
        i += 1
    if i >= n or body[i] != "]":
        return None
    rest = body[i + 1:].lstrip(" \t")
    if rest and rest[0] not in "#;":
        return None
    return name, sub


def _strict_value(raw: str):
    """A value as git's parse_value reads it, or None where git would not (or differ).

    Unquoted blanks between words are kept as they are (git 2.39 turns each
    into a space, later gits keep them): a tab there would be read two ways,
    so it makes the value unreadable; leading and trailing blanks go.
    """
    out, blanks, quoted, i = [], "", False, 0
    while i < len(raw):
        ch = raw[i]
        if ch in " \t" and not quoted:
            if out:
                blanks += ch
            i += 1
            continue
        if not quoted and ch in "#;":
            break
        if blanks:
            if "\t" in blanks:
                return None
            out.append(blanks)
            blanks = ""
        if ch == "\\":
            if i + 1 >= len(raw):
                return None  # a continuation line
            esc = raw[i + 1]
            if esc not in 'ntb"\\':
                return None
            out.append({"n": "\n", "t": "\t", "b": "\b"}.get(esc, esc))
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        else:
            out.append(ch)
        i += 1
    if quoted:
        return None
    return "".join(out)


def parse_strict(text: str):
    """[(section, sub, key, value or None)] with names as written, or None.

    ``value`` None: a key with no ``=`` (git reads it as true).
    """
    if len(text) > MAX_CONFIG or text.startswith("\ufeff") or any(map(_control, text)):
        return None
    out: list = []
    section = None
    for line in text.split("\n"):  # git ends lines at \n; a CR anywhere was refused above
        body = line.lstrip(" \t")
        if not body or body[0] in "#;":
            continue
        if body[0] == "[":
            section = _strict_header(body)
            if section is None:
                return None
            out.append(section)  # a header: kept to lay entries out as they were
            continue
        if section is None or not body[0].isascii() or not body[0].isalpha():
            return None
        i = 1
        while i < len(body) and body[i] in _KEY_CHARS:
            i += 1
        key, rest = body[:i], body[i:].lstrip(" \t")
        if not rest:
            value = None  # git reads a key alone as true ("key # note" is an error)
        elif rest[0] == "=":
            value = _strict_value(rest[1:])
            if value is None:
                return None
        else:
            return None
        out.append((section[0], section[1], key, value))
    return out


def allowed(section: str, sub, key: str, value, inside=None, base: str = "") -> bool:
    """May this entry stay in a config the command wrote?"""
    table = ALLOWED.get(section.lower() + (".*" if sub is not None else ""), {})
    check = table.get(key.lower())
    if check is None or (sub is not None and any(map(_odd, sub))):
        return False
    if value is None:
        return check in (_ANY, _BOOLEAN)
    if any(map(_odd, value)):
        return False  # we write no escapes (see _odd)
    if check == _BOOLEAN:
        return value.lower() in _BOOL
    if check == _INT:
        return value.isascii() and value.isdigit() and len(value) < 10
    if check == _PATH:  # core.worktree: only a place the command could write anyway
        target = os.path.normpath(os.path.join(base, os.path.expanduser(value)))
        return inside is not None and inside(target)
    return True


def _quote(value: str) -> str:
    """A value as git's own config writer spells it (never one with a control
    character: ``allowed`` drops those, and this refuses them again)."""
    if any(map(_odd, value)):
        raise ValueError("a control character in a config value")
    text = value.replace("\\", "\\\\").replace('"', '\\"')
    if value[:1] == " " or value[-1:] == " " or "#" in value or ";" in value:
        return f'"{text}"'
    return text


def _header(name: str, sub) -> str:
    if sub is None:
        return f"[{name}]\n"
    if any(map(_odd, sub)):
        raise ValueError("a control character in a subsection name")
    return '[%s "%s"]\n' % (name, sub.replace("\\", "\\\\").replace('"', '\\"'))


def rebuild(text: str, inside=None, base: str = "") -> tuple[str, list[str]]:
    """(the config to write instead of ``text``, names of what was dropped).

    ``inside(path)``: is this a place the command could write (for
    core.worktree); ``base``: the directory holding the config.

    What is written is read back with the same strict reader before it is
    returned: if that does not give exactly the entries meant, the minimal
    config is written instead (a check on this writer, not on the input).
    """
    parsed = parse_strict(text)
    if parsed is None:
        return SAFE_CONFIG, ["everything (not plain git config: control characters, "
                             "continuation lines or over 4 MiB)"]
    out, dropped, header, kept = [], [], None, []
    for item in parsed:
        if len(item) == 2:
            header = _header(*item)
            continue
        section, sub, key, value = item
        if not allowed(section, sub, key, value, inside, base):
            name = f"{section}.{sub}.{key}" if sub is not None else f"{section}.{key}"
            if name.lower() not in dropped:
                dropped.append(name.lower())
            continue
        if header:
            out.append(header)
            header = None
        out.append(f"\t{key}\n" if value is None else f"\t{key} = {_quote(value)}\n")
        kept.append(item)
    new = "".join(out)
    if [e for e in parse_strict(new) or () if len(e) == 4] != kept:
        return SAFE_CONFIG, ["everything (it could not be written back exactly)"]
    return new, dropped
