"""sandbox.backend: the seam between the shared core and the OS backends.

* an unsupported platform is a one-line setup error, and the command never runs;
* the core, the egress package and the macOS adapter import with every Linux
  module made unimportable (what macOS will see), so imports flow one way;
* no module outside the macOS backend imports it at module level.

The module names below are dotted names on purpose: they follow a module
wherever the package layout puts it (the relayout script rewrites them).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sandbox
from sandbox import backend
from sandbox.errors import SetupError

PACKAGE = Path(sandbox.__file__).resolve().parent  # the installed package
PYTHON = str(Path(os.path.realpath(sys.prefix)) / "bin" / "python")

# The Linux backend: nothing else may need one of these at import time.
LINUX = (
    "sandbox.linux.backend",
    "sandbox.linux.bwrap",
    "sandbox.linux.seccomp",
    "sandbox.linux.fallback",
    "sandbox.linux.confine",
    "sandbox.linux.landlock",
    "sandbox.linux.ladder",
    "sandbox.linux.usernsgate",
    "sandbox.linux.hostprobe",
    "sandbox.linux.nesting",
    "sandbox.linux.drift",
    "sandbox.linux.doctor",
)
# Egress (proxy, rules, bridge, resolver, TLS): shared by every backend.
EGRESS = (
    "sandbox.egress.proxy",
    "sandbox.egress.netrules",
    "sandbox.egress.session",
    "sandbox.egress.netns",
    "sandbox.egress.dns",
    "sandbox.egress.tlsca",
    "sandbox.egress.tlsinspect",
    "sandbox.egress.tlstrust",
    "sandbox.egress.credentials",
    "sandbox.egress.provenance",
    "sandbox.egress.hostsfile",
)


def _file(module: str) -> Path:
    return PACKAGE.parent / (module.replace(".", "/") + ".py")


def _imported(tree: ast.AST) -> set[str]:
    """Every sandbox module a file imports, wherever the import statement is."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in names if n.startswith("sandbox.")}


def test_the_module_lists_name_real_modules():
    for module in LINUX + EGRESS:
        assert _file(module).is_file(), module


def test_this_platform_gets_the_linux_backend():
    assert backend.current().name == "linux"
    assert backend.current("linux").prepare.__module__ == LINUX[0]
    assert backend.current("darwin").name == "macos"


def test_an_unsupported_platform_is_a_setup_error():
    with pytest.raises(SetupError, match=r"no backend for this platform \(sunos5\)"):
        backend.current("sunos5")


def _run_on(platform: str, senv) -> subprocess.CompletedProcess:
    code = ("import sys\n"
            f"sys.platform = {platform!r}\n"
            "sys.argv = ['sandbox', 'run', '--', 'sh', '-c', 'echo ran > marker']\n"
            "from sandbox.__main__ import main\n"
            "main()\n")
    senv.finish()
    return subprocess.run(senv.who.prefix() + [PYTHON, "-P", "-c", code], cwd=senv.ws,
                          env=senv.environ(), capture_output=True, text=True, timeout=120)


@pytest.mark.integration
def test_the_cli_refuses_an_unsupported_platform_in_one_line(senv):
    # control: the same code with this machine's platform runs the command
    done = _run_on(sys.platform, senv)
    assert done.returncode == 0, done.stderr
    assert (senv.ws / "marker").read_text() == "ran\n"
    (senv.ws / "marker").unlink()

    done = _run_on("sunos5", senv)
    assert done.returncode == 125
    assert not (senv.ws / "marker").exists()
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sandbox: setup error: sandbox has no backend "
                                                   "for this platform (sunos5)"), done.stderr
    assert "Traceback" not in done.stderr


def test_the_core_imports_without_the_linux_backend():
    """What macOS sees: every module but the Linux ones imports with those
    unimportable, and the macOS adapter is chosen without touching them."""
    modules = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        if name in LINUX or name.startswith(("sandbox.linux.", "sandbox.macos.")):
            continue
        if name in ("sandbox.__main__", "sandbox.shellprefix"):
            continue  # entry points: they act on import (checked through sandbox.cli)
        modules.append(name)
    code = f"""
import importlib, importlib.abc, sys
BLOCKED = {LINUX!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in BLOCKED or name.startswith("sandbox.linux."):
            raise ImportError("a Linux module imported on macOS: " + name)
sys.meta_path.insert(0, Block())
for name in {modules!r}:
    importlib.import_module(name)
from sandbox import backend
assert backend.current("darwin").name == "macos"
print(len({modules!r}))
"""
    done = subprocess.run([PYTHON, "-P", "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 40


def test_egress_never_imports_the_linux_backend():
    for module in EGRESS:
        bad = {n for n in _imported(ast.parse(_file(module).read_text()))
               if n in LINUX or n.startswith("sandbox.linux")}
        assert not bad, f"{module} imports {bad}"


def _module_level(tree: ast.AST):
    """The module's own statements, not those inside a function or class."""
    todo = list(ast.iter_child_nodes(tree))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


def test_nothing_needs_the_macos_backend_at_import_time():
    """Outside sandbox/macos/, its modules are imported inside a function
    (the seam's adapter, ``explain --platform macos``), never on import."""
    for path in PACKAGE.rglob("*.py"):
        if "macos" in path.relative_to(PACKAGE).parts:
            continue
        body = ast.Module(body=list(_module_level(ast.parse(path.read_text()))), type_ignores=[])
        bad = {n for n in _imported(body) if n.startswith("sandbox.macos")}
        assert not bad, f"{path} imports {bad} at module level"
