"""Shell-style name matching (``*`` and ``?``) without the ``re`` module.

``fnmatch`` compiles every pattern to a regular expression; on the hot path
of ``sandbox run`` that compile (and importing ``re``) costs more than the
matching itself.  Profiles only need ``*`` and ``?``; a ``[`` is literal.
"""

from __future__ import annotations


def match(name: str, pattern: str) -> bool:
    """True if ``name`` matches ``pattern`` (case-sensitive)."""
    if "*" not in pattern and "?" not in pattern:
        return name == pattern
    n = p = 0
    star = -1
    mark = 0
    while n < len(name):
        if p < len(pattern) and pattern[p] == "*":  # before the literal test: '*' in a name
            star, mark = p, n
            p += 1
        elif p < len(pattern) and (pattern[p] == "?" or pattern[p] == name[n]):
            n += 1
            p += 1
        elif star != -1:  # backtrack: let the last '*' swallow one more character
            p = star + 1
            mark += 1
            n = mark
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


def match_any(name: str, patterns) -> bool:
    return any(match(name, p) for p in patterns)
