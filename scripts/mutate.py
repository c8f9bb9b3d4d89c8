#!/usr/bin/env python3
"""Mutation check of the security rules: does a test notice when one rule goes?

Each mutant is one small change to a security rule: a bwrap flag or mount
dropped from sandbox/linux/bwrap.py, a rule dropped from bwrap/seccomp.toml, an
entry dropped from profiles/default.toml (deny_read, protected names, env
deny, ...), a token format or check dropped from sandbox/envfilter.py, an
audit rule switched off, an address block dropped from the egress rules.
For each mutant the script changes a private copy of the checkout, runs
the tests that guard that kind of rule, and records whether they fail
(killed) or pass (survived: no test noticed the protection was gone).

By default the tests that pin spelling (tests/test_bwrap.py's exact argv,
the seccomp table tests of tests/test_seccomp.py) are left out, so a
protection that only they catch shows up as a survivor; pass
--with-spelling-tests to include them.

How a mutant is run: the copy (the working tree's tracked and untracked,
not ignored, files) gets a venv of its own that links this environment's
installed packages (pytest, typer, pyseccomp, ...) and the copy's
``sandbox`` package, plus a ``sandbox`` console script; the copy's tests
run the copy's code through the real bwrap, as root and as the test user,
exactly like the normal suite.  One copy and one venv serve every mutant:
a mutant is applied to one file, its bytecode is dropped, the tests run,
and the file is restored.  Nothing outside --workdir is changed.

    .venv/bin/python scripts/mutate.py --list
    .venv/bin/python scripts/mutate.py --only 'bwrap:drop --unshare-ipc' --only 'seccomp:rule socket'
    .venv/bin/python scripts/mutate.py --group seccomp --sample 5 --jobs 2

Exit status: 0 when every mutant run was killed, 1 when one survived (or
timed out), 2 when the unmutated copy already fails its tests.
Standard library only.  docs/testing.md describes how to read the table.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import time
import venv
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The tests that guard each group of rules (by behaviour).  "-m integration"
# keeps only the real-sandbox half of files that also hold table tests.
BEHAVIOUR_TESTS = {
    "bwrap": ["tests/test_isolation.py", "tests/test_attacks.py", "tests/test_root_parity.py",
              "tests/test_terminal.py"],
    "seccomp": ["-m", "integration", "tests/test_seccomp.py", "tests/test_isolation.py"],
    "profile": ["tests/test_default_profile.py", "tests/test_attacks.py"],
    "env": ["tests/test_envfilter.py"],
    "audit": ["tests/test_audit.py", "tests/test_gitdir_trust.py", "tests/test_gitconfig.py"],
    "proxy": ["tests/test_netrules.py", "tests/test_egress_attacks.py", "tests/test_egress_attacks2.py"],
}
# Tests that compare spelling (exact argv, the rule table as data).
SPELLING_TESTS = {
    "bwrap": ["tests/test_bwrap.py"],
    "seccomp": ["tests/test_seccomp.py"],  # without "-m integration": its table tests too
    "profile": ["tests/test_profile.py"],
}


@dataclass
class Mutant:
    id: str
    group: str       # a key of BEHAVIOUR_TESTS
    file: str        # relative to the checkout
    lineno: int      # 1-based first line changed
    old: list[str]   # the lines as they are
    new: list[str]   # what they become

    def apply(self, root: Path) -> str:
        """Change the copy; return the original text to restore."""
        path = root / self.file
        text = path.read_text()
        lines = text.splitlines(keepends=True)
        at = self.lineno - 1
        if lines[at:at + len(self.old)] != self.old:
            raise SystemExit(f"mutate: {self.id}: {self.file}:{self.lineno} changed since listing")
        lines[at:at + len(self.old)] = self.new
        path.write_text("".join(lines))
        _drop_bytecode(path)
        return text


    def invalid(self, root: Path) -> str:
        """Why the mutated file would not even load ("" if it would): such a
        mutant tests the generator, not the tests."""
        text = (root / self.file).read_text().splitlines(keepends=True)
        at = self.lineno - 1
        text[at:at + len(self.old)] = self.new
        text = "".join(text)
        try:
            if self.file.endswith(".py"):
                compile(text, self.file, "exec")
            elif self.file.endswith(".toml"):
                import tomllib

                tomllib.loads(text)
        except (SyntaxError, ValueError) as err:
            return f"does not load: {err}"
        return ""


def _drop_bytecode(path: Path) -> None:
    # a .pyc written for the other version of the file in the same second,
    # with the same size, would be taken as current
    if path.suffix == ".py":
        for pyc in (path.parent / "__pycache__").glob(path.stem + ".*.pyc"):
            pyc.unlink()


# --------------------------------------------------------------------------
# Mutant generators.  Each reads the current file, so the list follows the code.

_LITERAL = re.compile(r'"([^"\\]*)"')


def _drop_literal(line: str, literal: str) -> str:
    """``line`` without the string literal ``literal`` and one comma next to it."""
    quoted = f'"{literal}"'
    for pattern in (quoted + ", ", ", " + quoted, quoted + ",", quoted):
        if pattern in line:
            return line.replace(pattern, "", 1)
    raise ValueError(literal)


def _function_lines(lines: list[str], name: str) -> range:
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"def {name}("))
    end = next((i for i in range(start + 1, len(lines)) if lines[i] and not lines[i][0].isspace()
                and lines[i].strip()), len(lines))
    return range(start, end)


def _as_pass(line: str) -> str:
    return line[:len(line) - len(line.lstrip())] + "pass  # mutant\n"


def bwrap_mutants(root: Path) -> list[Mutant]:
    rel = "sandbox/linux/bwrap.py"
    lines = (root / rel).read_text().splitlines(keepends=True)
    out = []
    for i in _function_lines(lines, "namespace_args"):
        code = lines[i].split("#", 1)[0]
        flags = [lit for lit in _LITERAL.findall(code) if lit.startswith("--")]
        if not flags:
            continue
        # a list element line goes; a statement becomes "pass"
        new = [] if code.strip().endswith(",") else [_as_pass(lines[i])]
        out.append(Mutant(f"bwrap:drop {' '.join(_LITERAL.findall(code))}", "bwrap", rel, i + 1,
                          [lines[i]], new))
    for i, line in enumerate(lines):
        if line.startswith("PROC_READ_ONLY = "):
            for lit in _LITERAL.findall(line):
                out.append(Mutant(f"bwrap:proc read-only {lit}", "bwrap", rel, i + 1, [line],
                                  [_drop_literal(line, lit)]))
    for i in _function_lines(lines, "mount_args"):
        stripped = lines[i].strip()
        if stripped.startswith("args += [") and i != _function_lines(lines, "mount_args")[0]:
            out.append(Mutant(f"bwrap:mount line {i + 1} {stripped[len('args += '):]}", "bwrap",
                              rel, i + 1, [lines[i]], [_as_pass(lines[i])]))
    return out


def seccomp_mutants(root: Path) -> list[Mutant]:
    rel = "bwrap/seccomp.toml"
    lines = (root / rel).read_text().splitlines(keepends=True)
    out = []
    in_list = None
    for i, line in enumerate(lines):
        head = line.split("#", 1)[0]
        if re.match(r"(eperm|enosys) = \[", head):
            in_list = head.split()[0]
        if in_list:
            for lit in _LITERAL.findall(head):
                out.append(Mutant(f"seccomp:{in_list} {lit}", "seccomp", rel, i + 1, [line],
                                  [_drop_literal(line, lit)]))
            if "]" in head:
                in_list = None
        if line.strip() in ("[[sets.default.args]]", "[[sets.default.unix_socket_args]]"):
            end = next((j for j in range(i + 1, len(lines))
                        if lines[j].startswith("[") or lines[j].startswith("# ")), len(lines))
            block = lines[i:end]
            text = "".join(block)
            syscall = re.search(r'syscall = "([^"]+)"', text).group(1)
            why = re.search(r'why = "([^"]+)"', text).group(1)
            if "unix_socket" in line:
                continue  # only in effect with unix_sockets = false, which no shipped profile sets
            out.append(Mutant(f"seccomp:rule {syscall} ({why})", "seccomp", rel, i + 1, block,
                              ["# " + b if b.strip() else b for b in block]))
    return out


# default.toml lists (one table key each) that are mutated entry by entry
PROFILE_LISTS = {
    ("filesystem", "deny_read"): "profile",
    ("filesystem", "deny_read_names"): "profile",
    ("filesystem", "empty_dirs"): "profile",
    ("protect", "names"): "profile",
    ("sockets", "scan"): "profile",
    ("env", "deny"): "env",
}


def profile_mutants(root: Path) -> list[Mutant]:
    rel = "profiles/default.toml"
    lines = (root / rel).read_text().splitlines(keepends=True)
    out, table, key = [], "", None
    for i, line in enumerate(lines):
        head = line.split("#", 1)[0]
        m = re.match(r"\[([a-z_.]+)\]", head)
        if m:
            table = m.group(1)
        m = re.match(r"(\w+) = \[", head)
        if m:
            key = m.group(1)
        if key and (table, key) in PROFILE_LISTS:
            for lit in _LITERAL.findall(head):
                out.append(Mutant(f"profile:{table}.{key} {lit}", PROFILE_LISTS[(table, key)], rel,
                                  i + 1, [line], [_drop_literal(line, lit)]))
        if key and "]" in head:
            key = None
        if head.strip() == "git = true" and table == "protect":
            out.append(Mutant("profile:protect.git off", "audit", rel, i + 1, [line],
                              ["git = false\n"]))
    return out


def envfilter_mutants(root: Path) -> list[Mutant]:
    rel = "sandbox/envfilter.py"
    lines = (root / rel).read_text().splitlines(keepends=True)
    out = []
    entry = re.compile(r'"([^"]+)": \([^)]*\),? ?')
    in_tokens = in_markers = False
    for i, line in enumerate(lines):
        if line.startswith("_TOKENS"):
            in_tokens = True
        elif line.startswith("_MARKERS"):
            in_markers = True
        elif line.startswith("}") or line.startswith(")"):
            in_tokens = in_markers = False
        elif in_tokens:
            for m in entry.finditer(line):
                out.append(Mutant(f"env:token {m.group(1)}", "env", rel, i + 1, [line],
                                  [line.replace(m.group(0), "", 1)]))
        elif in_markers:
            for lit in _LITERAL.findall(line.split("#", 1)[0]):
                out.append(Mutant(f"env:marker {lit}", "env", rel, i + 1, [line],
                                  [_drop_literal(line, lit)]))
    curated = [
        ("env:url password rule", '(":" in userinfo or _bare_token(userinfo))', "_bare_token(userinfo)"),
        ("env:url bare-token rule", '(":" in userinfo or _bare_token(userinfo))', '":" in userinfo'),
        ("env:pem check", 'if "-----BEGIN " in value and _pem_secret(value):', "if False:"),
        ("env:jwt check", "        return _jwt(word)", "        return False"),
        ("env:pass beats values", "            continue  # [env] pass keeps it", "            pass  #"),
    ]
    return out + _curated(root, rel, "env", curated)


def _curated(root: Path, rel: str, group: str, items) -> list[Mutant]:
    """Mutants given as (id, text on one line, replacement text)."""
    lines = (root / rel).read_text().splitlines(keepends=True)
    out = []
    for ident, old, new in items:
        hits = [i for i, ln in enumerate(lines) if old in ln]
        if len(hits) != 1:
            print(f"mutate: skipping {ident}: {len(hits)} matches in {rel}", file=sys.stderr)
            continue
        i = hits[0]
        out.append(Mutant(ident, group, rel, i + 1, [lines[i]], [lines[i].replace(old, new, 1)]))
    return out


def audit_mutants(root: Path) -> list[Mutant]:
    rel = "sandbox/audit.py"
    lines = (root / rel).read_text().splitlines(keepends=True)
    out = []
    section = None
    for i, line in enumerate(lines):
        if line.startswith(("DANGEROUS_SUFFIXES", "DANGEROUS_KEYS")):
            section = line.split()[0]
        if section:
            for lit in _LITERAL.findall(line.split("#", 1)[0]):
                out.append(Mutant(f"audit:{section} {lit}", "audit", rel, i + 1, [line],
                                  [_drop_literal(line, lit)]))
            if line.rstrip().endswith(("}", ")")):
                section = None
    curated = [
        ("audit:symlinked git config", "if os.path.islink(path):  # git would read the target",
         "if False:  # git would read the target"),
        ("audit:control characters in git config", "odd = any(ord(c) < 32", "odd = False and any(ord(c) < 32"),
        ("audit:unparsed config lines", "        if _unparsed(line):  # git might read it differently",
         "        if False:  # git might read it differently"),
    ]
    return out + _curated(root, rel, "audit", curated)


def proxy_mutants(root: Path) -> list[Mutant]:
    rel = "sandbox/egress/netrules.py"
    lines = (root / rel).read_text().splitlines(keepends=True)
    out = []
    section = None
    for i, line in enumerate(lines):
        if line.startswith(("_V4_BLOCKS", "_V6_BLOCKS")):
            section = line.split()[0]
            continue
        if section:
            if line.startswith("))"):
                section = None
                continue
            lits = _LITERAL.findall(line)
            if lits:
                out.append(Mutant(f"proxy:{section} {lits[0]}", "proxy", rel, i + 1, [line], []))
    curated = [
        ("proxy:deny rules first", "            if (matches(name) and (not rule.ports or port in rule.ports)",
         "            if False and (matches(name) and (not rule.ports or port in rule.ports)"),
    ]
    return out + _curated(root, rel, "proxy", curated)


GENERATORS = (bwrap_mutants, seccomp_mutants, profile_mutants, envfilter_mutants, audit_mutants,
              proxy_mutants)


def all_mutants(root: Path) -> list[Mutant]:
    found = []
    for gen in GENERATORS:
        found += gen(root)
    seen = set()
    for m in found:  # ids must be unique: they are how --only picks
        while m.id in seen:
            m.id += "'"
        seen.add(m.id)
    return found


# --------------------------------------------------------------------------
# The copy and its venv


def make_copy(work: Path) -> Path:
    """The working tree's tracked and untracked (not ignored) files."""
    copy = work / "copy"
    if copy.exists():
        shutil.rmtree(copy)
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if not src.is_file() or src.is_symlink() and not src.exists():
            continue
        dest = copy / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
    for d in [copy, *[p for p in copy.rglob("*") if p.is_dir()]]:
        d.chmod(0o755)  # the tests also run the sandbox as an unprivileged user
    return copy


def make_venv(work: Path, copy: Path) -> Path:
    """A venv whose site-packages links this environment's packages, except
    the installed ``sandbox``, which is the copy's package instead."""
    env = work / "venv"
    if env.exists():
        shutil.rmtree(env)
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env)
    site = Path(subprocess.run([str(env / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():
        name = entry.name
        if (name == "sandbox" or name.startswith("sandbox-") or name.endswith(".pth")
                or name.startswith("__editable__") or name == "__pycache__"):
            continue
        (site / name).symlink_to(entry)
    (site / "sandbox").symlink_to(copy / "sandbox")
    script = env / "bin" / "sandbox"
    script.write_text(f"#!{env / 'bin' / 'python'}\nimport sys\nfrom sandbox.__main__ import main\n"
                      "if __name__ == '__main__':\n    sys.exit(main())\n")
    script.chmod(0o755)
    for d in [work, env, *[p for p in env.rglob("*") if p.is_dir() and not p.is_symlink()]]:
        d.chmod(0o755)
    return env


# --------------------------------------------------------------------------
# Running


@dataclass
class Outcome:
    mutant: Mutant | None
    status: str      # killed, survived, timeout, error
    seconds: float
    detail: str = ""
    output: str = field(default="", repr=False)


def tests_for(group: str, spelling: bool, override: list[str] | None) -> list[str]:
    if override:
        return list(override)
    tests = list(BEHAVIOUR_TESTS[group])
    if spelling:
        extra = SPELLING_TESTS.get(group, [])
        if "tests/test_seccomp.py" in extra and "-m" in tests:
            i = tests.index("-m")
            del tests[i:i + 2]
        tests += [t for t in extra if t not in tests]
    return tests


def run_tests(env: Path, copy: Path, tests: list[str], jobs: int, timeout: float) -> tuple[int | None, str, float]:
    argv = [str(env / "bin" / "python"), "-m", "pytest", "-q", "-x", "-rfE", "-p", "no:cacheprovider",
            "-o", "addopts=", *tests]
    if jobs > 1:
        argv[4:4] = ["-n", str(jobs)]
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=copy, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    try:
        out, _ = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the group this script started, nothing else
        out, _ = proc.communicate()
        rc = None
    return rc, out.decode(errors="replace"), time.monotonic() - started


def run_mutant(m: Mutant, env: Path, copy: Path, tests: list[str], jobs: int,
               timeout: float) -> tuple[int | None, str, float]:
    original = m.apply(copy)
    try:
        return run_tests(env, copy, tests, jobs, timeout)
    finally:
        path = copy / m.file
        path.write_text(original)
        _drop_bytecode(path)


def judge(m: Mutant, env: Path, copy: Path, tests: list[str], args) -> tuple[str, str, float, str]:
    """(status, killing test, seconds, pytest output) of one mutant.

    A kill counts only when the killing test, run alone, fails again with
    the mutant and passes without it (--confirm times each).  The machine is shared: another run
    creating and removing sockets, or a slow disk, can fail a test that has
    nothing to do with the mutant; such a run is repeated (--retries) and
    reported as flaky if it never settles.
    """
    problem = m.invalid(copy)
    if problem:
        return "invalid", problem, 0.0, ""
    total = 0.0
    for _ in range(1 + args.retries):
        rc, out, secs = run_mutant(m, env, copy, tests, args.jobs, args.timeout)
        total += secs
        status, killer = classify(rc, out)
        if status != "killed" or not killer:
            return status, killer, total, out
        steady = True
        for _ in range(args.confirm):
            again, _, secs = run_mutant(m, env, copy, [killer], 1, args.timeout)
            unmutated, _, more = run_tests(env, copy, [killer], 1, args.timeout)
            total += secs + more
            steady = steady and again != 0 and unmutated == 0
        if steady:
            return "killed", killer, total, out
    return "flaky", f"{killer} (fails without the mutant too, or passes with it)", total, out


def first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" - ", 1)[0].split(" ", 1)[1]
    return ""


def classify(rc: int | None, output: str) -> tuple[str, str]:
    if rc is None:
        return "timeout", ""
    if rc == 0:
        return "survived", ""
    failed = first_failure(output)
    # -x under xdist ends with exit 2 (interrupted) after the first failure
    if rc == 1 or (rc == 2 and failed):
        return "killed", failed
    return "error", f"pytest exit {rc}: " + (output.strip().splitlines() or [""])[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--group", action="append", choices=sorted(BEHAVIOUR_TESTS),
                    help="only mutants of this group (repeatable)")
    ap.add_argument("--only", action="append", metavar="TEXT",
                    help="only mutants whose id contains TEXT (repeatable)")
    ap.add_argument("--sample", type=int, metavar="N", help="a random N of the selected mutants")
    ap.add_argument("--seed", type=int, default=13, help="for --sample (default 13)")
    ap.add_argument("--tests", metavar="ARGS", type=shlex.split,
                    help="pytest arguments to use instead of each group's test files, as one "
                         "string: --tests='-m integration tests/test_seccomp.py'")
    ap.add_argument("--with-spelling-tests", action="store_true",
                    help="also run the tests that pin spelling (exact argv, rule table)")
    ap.add_argument("--jobs", type=int, default=1, help="pytest-xdist workers per run (default 1)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per run (default 900)")
    ap.add_argument("--workdir", type=Path, default=REPO / ".test-root" / "mutate",
                    help="where the copy and its venv go (default .test-root/mutate)")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip running the unmutated copy's tests first")
    ap.add_argument("--retries", type=int, default=2,
                    help="re-runs of a mutant whose killing test also fails unmutated (default 2)")
    ap.add_argument("--confirm", type=int, default=2,
                    help="times the killing test alone must fail with the mutant and pass "
                         "without it for a kill to count (default 2)")
    ap.add_argument("--keep", action="store_true", help="keep --workdir afterwards")
    ap.add_argument("--verbose", action="store_true", help="print pytest's output of every run")
    args = ap.parse_args(argv)

    mutants = all_mutants(REPO)
    if args.group:
        mutants = [m for m in mutants if m.group in args.group]
    if args.only:
        mutants = [m for m in mutants if any(o in m.id for o in args.only)]
    if args.sample is not None and args.sample < len(mutants):
        mutants = sorted(random.Random(args.seed).sample(mutants, args.sample), key=mutants.index)
    if args.list:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `--list | head` ends quietly
        for m in mutants:
            print(f"{m.id:70}  {m.file}:{m.lineno}")
        print(f"{len(mutants)} mutants", file=sys.stderr)
        return 0
    if not mutants:
        print("mutate: no mutant selected (see --list)", file=sys.stderr)
        return 2

    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    copy = make_copy(work)
    env = make_venv(work, copy)
    results: list[Outcome] = []
    try:
        groups = sorted({m.group for m in mutants})
        if not args.no_baseline:
            for group in groups:
                tests = tests_for(group, args.with_spelling_tests, args.tests)
                rc, out, secs = run_tests(env, copy, tests, args.jobs, args.timeout)
                print(f"baseline {group:8} {'ok' if rc == 0 else 'FAILS'}  {secs:6.1f} s  "
                      f"({' '.join(tests)})", flush=True)
                if rc != 0:
                    print(out[-4000:], file=sys.stderr)
                    print(f"mutate: the unmutated copy fails the {group} tests: fix that first",
                          file=sys.stderr)
                    return 2
        for n, m in enumerate(mutants, 1):
            tests = tests_for(m.group, args.with_spelling_tests, args.tests)
            status, detail, secs, out = judge(m, env, copy, tests, args)
            results.append(Outcome(m, status, secs, detail, out))
            print(f"[{n}/{len(mutants)}] {status:8} {secs:6.1f} s  {m.id}  {detail}", flush=True)
            if args.verbose or status == "error":
                print(out[-3000:], flush=True)
    finally:
        if results:
            print_table(results)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r.status == "killed" for r in results) else 1


def print_table(results: list[Outcome]) -> None:
    width = max(len(r.mutant.id) for r in results)
    print()
    print(f"{'mutant':{width}}  {'status':8}  {'seconds':>7}  killed by")
    for r in results:
        print(f"{r.mutant.id:{width}}  {r.status:8}  {r.seconds:7.1f}  {r.detail}")
    print()
    for status in ("killed", "survived", "flaky", "timeout", "error", "invalid"):
        times = [r.seconds for r in results if r.status == status]
        if times:
            print(f"{status:8} {len(times):4}   median {statistics.median(times):7.1f} s")
    survivors = [r.mutant.id for r in results if r.status != "killed"]
    if survivors:
        print("\nnot killed: " + "; ".join(survivors))


if __name__ == "__main__":
    sys.exit(main())
