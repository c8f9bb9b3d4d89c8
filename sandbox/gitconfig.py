"""Just enough of git's config format to find what git would execute.

We need ``core.hooksPath`` and every ``include.path`` / ``includeIf.*.path``
so the files they name can be kept read-only.  Spawning ``git config`` costs
milliseconds per repository on every run, so we read the files ourselves.
The parser is tolerant: a line it cannot read is skipped, never fatal.
"""

from __future__ import annotations

import os
import re

_SECTION = re.compile(r'^\s*\[\s*([A-Za-z0-9.\-]+)(?:\s+"((?:[^"\\]|\\.)*)")?\s*\]')
_KEYVAL = re.compile(r"^\s*([A-Za-z][A-Za-z0-9\-]*)\s*(?:=\s*(.*))?$")
MAX_INCLUDE_DEPTH = 5


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
    for line in text.splitlines():
        m = _SECTION.match(line)
        if m:
            name = m.group(1)
            if m.group(2) is None and "." in name:  # legacy [section.sub] form
                name, sub = name.split(".", 1)
            else:
                sub = m.group(2)
            section = name.lower()
            rest = line[m.end():]
            line = rest
            if not line.strip():
                continue
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        kv = _KEYVAL.match(stripped)
        if kv and section:
            value = _unquote(kv.group(2)) if kv.group(2) is not None else "true"
            yield section, sub, kv.group(1).lower(), value


def _expand(value: str, base_dir: str) -> str:
    if value.startswith("~/") or value == "~":
        value = os.path.expanduser(value)
    if not os.path.isabs(value):
        value = os.path.join(base_dir, value)
    return os.path.normpath(value)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(1 << 20)
    except OSError:
        return None


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
