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


def referenced_paths(config_files: list[str], worktree: str | None,
                     read=_read) -> tuple[list[str], str | None]:
    """Read config files in order; return (included files, effective hooksPath).

    Included files are followed up to MAX_INCLUDE_DEPTH.  A relative
    ``core.hooksPath`` is relative to the worktree root, as git treats it.
    """
    included: list[str] = []
    hooks_path: str | None = None

    def visit(path: str, depth: int) -> None:
        nonlocal hooks_path
        text = read(path)
        if text is None:
            return
        for section, _sub, key, value in entries(text):
            if section == "core" and key == "hookspath":
                base = worktree or os.path.dirname(path)
                hooks_path = _expand(value, base)
            elif section in ("include", "includeif") and key == "path" and value:
                target = _expand(value, os.path.dirname(path))
                if target not in included:
                    included.append(target)
                    if depth < MAX_INCLUDE_DEPTH:
                        visit(target, depth + 1)

    for cfg in config_files:
        visit(cfg, 0)
    return included, hooks_path


# -- where a repository's git directories are ----------------------------------
# Shared by discovery (which reads through an Observer, to stamp what it saw)
# and the audit (which reads files the command may have planted), so each
# passes its own file-system functions.

def locate(dotgit: str, read, realpath, is_dir) -> tuple[str, str, bool] | None:
    """(gitdir, commondir, pointed) for a ``.git`` entry, or None if it is not one.

    ``pointed``: the entry is a ``gitdir:`` file (worktree, submodule), not the
    directory itself.  ``commondir`` comes from ``<gitdir>/commondir`` if any.
    """
    if is_dir(dotgit):
        gitdir, pointed = dotgit, False
    else:
        line = (read(dotgit, 4096) or "").strip()
        if not line.startswith("gitdir:"):
            return None
        gitdir = realpath(os.path.join(os.path.dirname(dotgit), line[len("gitdir:"):].strip()))
        pointed = True
    commondir = gitdir
    pointer = read(os.path.join(gitdir, "commondir"), 4096)
    if pointer is not None:
        commondir = realpath(os.path.join(gitdir, pointer.strip()))
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
