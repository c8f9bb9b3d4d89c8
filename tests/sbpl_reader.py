"""A small SBPL (Seatbelt profile language) reader for the tests.

Independent of ``sandbox.macos``: it parses the text as s-expressions and
answers structural questions, so a test can check what a generated profile
*says* without trusting the generator that wrote it.  It knows only the
vocabulary this project uses (the lists below); anything else is an error,
so a typo that macOS would reject (and fail every run) is caught on Linux.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Operations the profiles may name.  Each is documented in docs/macos.md
# with the tool that needs it.
OPERATIONS = frozenset({
    "default",
    "file-read*", "file-read-data", "file-read-metadata", "file-read-xattr",
    "file-write*", "file-write-data", "file-write-create", "file-write-unlink",
    "file-write-mode", "file-write-owner", "file-write-setugid", "file-write-times",
    "file-write-xattr", "file-write-flags", "file-ioctl", "file-link",
    "process-fork", "process-exec", "process-exec*", "process-info*", "signal",
    "mach-host*", "mach-lookup", "user-preference-read", "pseudo-tty",
    "ipc-posix-sem", "ipc-posix-shm", "iokit-open", "sysctl-read",
    "system-socket", "network-bind", "network-outbound", "network-inbound",
})
# Filters (and the combinators around them), with how many arguments they take.
FILTERS = {
    "literal": 1, "subpath": 1, "regex": 1, "param": 1,
    "require-all": None, "require-any": None, "require-not": 1,
    "vnode-type": 1, "file-mode": 1, "target": 1, "global-name": 1,
    "sysctl-name": 1, "sysctl-name-prefix": 1, "iokit-registry-entry-class": 1,
    "socket-domain": 1, "local": 2, "remote": 2, "extension": 1,
}
SYMBOLS = frozenset({"same-sandbox", "AF_UNIX", "REGULAR-FILE", "unix-socket", "ip"})
# The only absolute paths the text may hold: fixed device nodes.
FIXED_PATH = re.compile(r"^/dev/[a-z]+$")
FIXED_REGEX = re.compile(r"^\^/dev/")
PATH_FILTERS = ("literal", "subpath")


class SBPLError(ValueError):
    pass


@dataclass(frozen=True)
class Str:
    value: str
    regex: bool = False  # written #"..."


@dataclass(frozen=True)
class Num:
    value: int


_TOKEN = re.compile(r'''\s+|;[^\n]*|(?P<open>\()|(?P<close>\))|#"(?P<rx>[^"]*)"|"(?P<str>(?:[^"\\]|\\.)*)"|#o(?P<oct>[0-7]+)|(?P<num>-?[0-9]+)(?=[\s()])|(?P<sym>[A-Za-z_*][A-Za-z0-9_*.\-]*)''')


def parse(text: str) -> list:
    """The top-level forms of ``text`` as nested lists of str (symbols), Str and Num."""
    stack: list[list] = [[]]
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise SBPLError(f"cannot read the text at offset {pos}: {text[pos:pos + 30]!r}")
        pos = m.end()
        if m.group("open"):
            stack.append([])
        elif m.group("close"):
            if len(stack) == 1:
                raise SBPLError(f"unbalanced ')' at offset {m.start()}")
            form = stack.pop()
            stack[-1].append(form)
        elif m.group("rx") is not None:
            stack[-1].append(Str(m.group("rx"), regex=True))
        elif m.group("str") is not None:
            stack[-1].append(Str(m.group("str").encode().decode("unicode_escape")))
        elif m.group("oct") is not None:
            stack[-1].append(Num(int(m.group("oct"), 8)))
        elif m.group("num") is not None:
            stack[-1].append(Num(int(m.group("num"))))
        elif m.group("sym"):
            stack[-1].append(m.group("sym"))
    if len(stack) != 1:
        raise SBPLError(f"{len(stack) - 1} '(' left open at the end")
    return stack[0]


@dataclass(frozen=True)
class Rule:
    action: str  # "allow" | "deny"
    operations: tuple[str, ...]
    filters: tuple  # the filter forms, as parsed
    index: int  # position among the rules

    def any_filter(self) -> bool:
        return not self.filters


class Profile:
    def __init__(self, text: str):
        self.forms = parse(text)
        self.rules: list[Rule] = []
        self.version = None
        for form in self.forms:
            if not isinstance(form, list) or not form or not isinstance(form[0], str):
                raise SBPLError(f"a top-level form must be (version ...), (allow ...) or (deny ...): {form!r}")
            head = form[0]
            if head == "version":
                if self.rules or self.version is not None or form[1:] != [Num(1)]:
                    raise SBPLError("(version 1) must come first, once")
                self.version = 1
                continue
            if head not in ("allow", "deny"):
                raise SBPLError(f"unknown top-level form ({head} ...)")
            ops = []
            rest = form[1:]
            while rest and isinstance(rest[0], str):
                if rest[0] not in OPERATIONS:
                    raise SBPLError(f"unknown operation {rest[0]!r}")
                ops.append(rest[0])
                rest = rest[1:]
            if not ops:
                raise SBPLError(f"({head}) names no operation")
            for f in rest:
                _check_filter(f)
            self.rules.append(Rule(head, tuple(ops), tuple(rest), len(self.rules)))

    # -- questions -----------------------------------------------------------
    def params(self) -> set[str]:
        found: set[str] = set()

        def walk(node):
            if isinstance(node, list):
                if node and node[0] == "param":
                    found.add(node[1].value)
                for child in node:
                    walk(child)
        walk(self.forms)
        return found

    def strings(self) -> list[tuple[str, Str]]:
        """Every string literal with the filter it stands in."""
        out: list[tuple[str, Str]] = []

        def walk(node, parent):
            if isinstance(node, list) and node:
                for child in node[1:]:
                    walk(child, node[0])
            elif isinstance(node, Str):
                out.append((parent, node))
        for form in self.forms:
            walk(form, None)
        return out

    def decide(self, operation: str, matches) -> str:
        """The action of the last rule naming ``operation`` (or a wildcard of it) whose
        filters ``matches(filter)`` says apply; "deny" when none does (deny default)."""
        result = "deny" if self.rules and self.rules[0].operations == ("default",) else "allow"
        for rule in self.rules:
            if not any(_covers(op, operation) for op in rule.operations):
                continue
            if not rule.filters or any(matches(f) for f in rule.filters):
                result = rule.action
        return result


def _covers(op: str, operation: str) -> bool:
    if op == operation or op == "default":
        return True
    return op.endswith("*") and operation.startswith(op[:-1])


def _check_filter(f) -> None:
    if not isinstance(f, list) or not f or not isinstance(f[0], str):
        raise SBPLError(f"a filter must be a form: {f!r}")
    name = f[0]
    if name not in FILTERS:
        raise SBPLError(f"unknown filter {name!r}")
    arity = FILTERS[name]
    args = f[1:]
    if arity is not None and len(args) != arity:
        raise SBPLError(f"({name} ...) takes {arity} argument(s), got {len(args)}")
    if name in ("require-all", "require-any", "require-not"):
        for a in args:
            _check_filter(a)
        return
    if name in ("local", "remote"):
        if args[0] not in ("unix-socket", "ip"):
            raise SBPLError(f"({name} {args[0]} ...) is not known")
        if args[0] == "ip":
            if not isinstance(args[1], Str):
                raise SBPLError(f"({name} ip ...) takes a string")
        else:
            _check_filter(args[1])
        return
    for a in args:
        if isinstance(a, list):
            if a and a[0] == "param" and len(a) == 2 and isinstance(a[1], Str):
                continue
            raise SBPLError(f"({name} ...) holds an unknown form {a!r}")
        if isinstance(a, str) and a not in SYMBOLS:
            raise SBPLError(f"unknown symbol {a!r}")


def pasted_paths(profile: Profile) -> list[str]:
    """Absolute paths written into the text instead of passed as parameters."""
    bad = []
    for parent, s in profile.strings():
        if parent == "param":
            continue
        if s.regex:
            if s.value.startswith("^") and not FIXED_REGEX.match(s.value):
                bad.append(s.value)
        elif s.value.startswith("/") and not FIXED_PATH.match(s.value):
            bad.append(s.value)
        elif parent == "ip" or (parent in ("local", "remote")):
            pass
    return bad


def _name_regex_ok(value: str) -> bool:
    """An unanchored regex may only describe a last path part: ``/name$``."""
    body = value[:-len("(/.*)?$")] if value.endswith("(/.*)?$") else value[:-1]
    return (value.startswith("/") and value.endswith("$")
            and "/" not in body[1:].replace("[^/]", ""))


def pasted(profile: Profile) -> list[str]:
    """``pasted_paths`` plus unanchored regexes that spell more than a file name."""
    bad = pasted_paths(profile)
    for _, s in profile.strings():
        if s.regex and not s.value.startswith("^") and not _name_regex_ok(s.value):
            bad.append(s.value)
    return bad


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def evaluate(f, params: dict[str, str], path: str | None, vnode: str = "REGULAR-FILE",
             remote: str | None = None) -> bool:
    """Does filter ``f`` apply to ``path`` (of type ``vnode``), or to a connection to
    ``remote`` ("unix:/path" or "ip:host:port")?  Filters about other things
    (mach names, sysctls, signal targets) never apply to a path."""
    name, args = f[0], f[1:]

    def value(a) -> str:
        if isinstance(a, list):  # (param "X")
            if a[1].value not in params:
                raise SBPLError(f"(param {a[1].value!r}) has no -D value")
            return params[a[1].value]
        return a.value
    if name == "require-all":
        return all(evaluate(a, params, path, vnode, remote) for a in args)
    if name == "require-any":
        return any(evaluate(a, params, path, vnode, remote) for a in args)
    if name == "require-not":
        return not evaluate(args[0], params, path, vnode, remote)
    if name in ("local", "remote"):
        if remote is None:
            return False
        if args[0] == "ip":
            return remote == "ip:" + value(args[1])
        return remote.startswith("unix:") and evaluate(args[1], params, remote[5:], "SOCKET")
    if path is None:
        return False
    if name == "literal":
        return path == value(args[0])
    if name == "subpath":
        return _within(path, value(args[0]))
    if name == "regex":
        return re.search(value(args[0]), path) is not None
    if name == "vnode-type":
        return vnode == args[0]
    return False


def decision(profile: Profile, params: dict[str, str], operation: str, path: str | None = None,
             vnode: str = "REGULAR-FILE", remote: str | None = None) -> str:
    return profile.decide(operation, lambda f: evaluate(f, params, path, vnode, remote))
