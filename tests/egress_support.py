"""Helpers shared by the egress tests: proxy-mode profiles and process lookups."""

from __future__ import annotations

import json
import os
from pathlib import Path


def allow_rule(host: str, ports, methods=None, paths=None) -> str:
    """One ``[[network.allow]]`` table."""
    out = f'[[network.allow]]\nhost = "{host}"\nports = {list(ports)}\n'
    if methods:
        out += f"methods = {json.dumps(methods)}\n"
    if paths:
        out += f"paths = {json.dumps(paths)}\n"
    return out


def proxy_profile(senv, rules: str, hosts: dict[str, str] | None = None, name: str = "net",
                  extra: str = "", net_extra: str = "") -> Path:
    """A profile extending default in proxy mode, written next to the workspace.

    ``extra`` goes before ``[network]`` (other tables), ``net_extra`` inside it.
    """
    pins = ", ".join(f'"{k}" = "{v}"' for k, v in (hosts or {}).items())
    path = senv.base / f"{name}.toml"
    path.write_text(f'extends = "default"\n{extra}\n[network]\nmode = "proxy"\n'
                    f"{net_extra}hosts = {{ {pins} }}\n\n{rules}\n")
    return path


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (all its threads), from /proc."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(x) for x in fh.read().split()]
        except OSError:
            pass
    return out
