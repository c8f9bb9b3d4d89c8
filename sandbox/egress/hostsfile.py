"""The host's /etc/hosts, as the egress proxy reads it before asking DNS.

The proxy asks the resolver for ``name.`` (absolute, so resolv.conf search
domains cannot turn ``pypi.org`` into ``pypi.org.<cluster>``), but the C
library's ``files`` source matches names exactly and never finds ``name.``
in /etc/hosts: a name that only the host's /etc/hosts knows could not be
reached.  So the proxy looks the name up here first.  The file is read
once per proxy process, on the first lookup; the addresses still go
through the same address check as any DNS answer.
"""

from __future__ import annotations

import ipaddress
import threading

PATH = "/etc/hosts"
_MAX_BYTES = 4 << 20
_lock = threading.Lock()
_table: dict[str, list] | None = None


def parse(text: str) -> dict[str, list]:
    """name (lower-case, no trailing dot) -> addresses, in file order."""
    table: dict[str, list] = {}
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 2:
            continue
        try:
            addr = ipaddress.ip_address(words[0].split("%", 1)[0])
        except ValueError:
            continue
        for name in words[1:]:
            name = name.lower().rstrip(".")
            if name and addr not in table.setdefault(name, []):
                table[name].append(addr)
    return table


def lookup(name: str) -> list:
    """The addresses /etc/hosts gives ``name`` (normalised), or []."""
    global _table
    with _lock:
        if _table is None:
            try:
                with open(PATH, encoding="utf-8", errors="replace") as fh:
                    _table = parse(fh.read(_MAX_BYTES))
            except OSError:
                _table = {}
        return _table.get(name, [])
