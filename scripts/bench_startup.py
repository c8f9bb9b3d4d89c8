#!/usr/bin/env python3
"""Startup benchmark: `sandbox run -- true` against bare bwrap, in one run.

Runs the two commands alternately (A B A B ...) so drift on a noisy machine
hits both, and prints median wall time, the median of the pairwise
differences and ratios, and the wrapper's peak RSS (from wait4's rusage).
Then does the same in a workspace of --files files (default 100,000), and
reports the protected-path scan's cost on its first (cold) run.

With --node-modules N, also a workspace holding a node_modules of N
packages (8 directories each, as an npm install leaves them): secret names
are searched below skip_dirs too, so every directory there is one more stat
on every start.

Usage: .venv/bin/python scripts/bench_startup.py [--runs 40] [--files 100000] [--node-modules 1500]
Only public tools: the standard library and the installed `sandbox` script.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARE = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-all",
        "--die-with-parent", "--new-session", "true"]


def timed(argv: list[str], cwd: str, env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one run."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss


def compare(label: str, sandbox: list[str], bare: list[str], cwd: str, env: dict[str, str],
            runs: int) -> None:
    for _ in range(3):  # warm-up: page cache, policy and scan caches
        timed(sandbox, cwd, env)
        timed(bare, cwd, env)
    a, b, rss = [], [], []
    for _ in range(runs):
        t, m = timed(sandbox, cwd, env)
        a.append(t)
        rss.append(m)
        b.append(timed(bare, cwd, env)[0])
    diffs = [x - y for x, y in zip(a, b)]
    ratios = [x / y for x, y in zip(a, b)]
    ms = lambda v: f"{v * 1000:7.1f} ms"  # noqa: E731
    print(f"\n== {label} ({runs} pairs)")
    print(f"sandbox run -- true   median {ms(statistics.median(a))}  min {ms(min(a))}  max {ms(max(a))}")
    print(f"bare bwrap            median {ms(statistics.median(b))}  min {ms(min(b))}  max {ms(max(b))}")
    print(f"difference (paired)   median {ms(statistics.median(diffs))}")
    print(f"ratio (paired)        median {statistics.median(ratios):7.2f}x")
    print(f"wrapper peak RSS      median {statistics.median(rss) / 1024:7.1f} MiB  max {max(rss) / 1024:.1f} MiB")


def make_tree(root: Path, files: int) -> None:
    """A source-like tree: 100 files per directory, 10 directories per level."""
    per_dir = 100
    made = 0
    d = 0
    while made < files:
        sub = root / f"pkg{d // 100}" / f"mod{d % 100}"
        sub.mkdir(parents=True, exist_ok=True)
        for i in range(min(per_dir, files - made)):
            (sub / f"f{i}.py").write_bytes(b"")
        made += per_dir
        d += 1
    (root / ".vscode").mkdir(exist_ok=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)


def make_node_modules(root: Path, packages: int) -> int:
    """A synthetic node_modules: per package 8 directories of 10 files; bin links."""
    dirs = 0
    for p in range(packages):
        base = root / "node_modules" / f"pkg{p}"
        for sub in ("", "lib", "lib/util", "dist", "dist/esm", "dist/cjs", "src", "types"):
            d = base / sub
            d.mkdir(parents=True, exist_ok=True)
            dirs += 1
            for i in range(10):
                (d / f"f{i}.js").write_bytes(b"")
    bin_dir = root / "node_modules" / ".bin"
    bin_dir.mkdir(exist_ok=True)
    for p in range(min(packages, 300)):
        (bin_dir / f"tool{p}").symlink_to(f"../pkg{p}/lib/f0.js")
    return dirs + 2


def age(root: Path) -> None:
    """Make a fresh tree look like a real checkout: nothing modified in the last seconds.

    Plans and scans do not trust a directory changed within the last 2 s (a
    change in the same clock tick would not move its mtime), so a tree
    created a moment ago would never hit the caches.
    """
    old = time.time() - 10
    for dirpath, dirs, files in os.walk(root):
        for name in files + dirs:
            os.utime(os.path.join(dirpath, name), (old, old), follow_symlinks=False)
        os.utime(dirpath, (old, old))
    time.sleep(2.1)  # utime() sets ctime to now, and ctime counts too


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--node-modules", type=int, default=0,
                    help="also time a workspace with a node_modules of this many packages")
    ap.add_argument("--dir", default=None, help="where to create the workspaces (not under /tmp)")
    args = ap.parse_args()

    exe = shutil.which("sandbox", path=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    bwrap = shutil.which("bwrap")
    if not exe or not bwrap:
        sys.exit("need the installed 'sandbox' script and bwrap")
    base = Path(args.dir or Path(__file__).resolve().parent.parent / ".test-root")
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=base))
    try:
        env = dict(os.environ)
        env["XDG_CACHE_HOME"] = str(work / "cache")
        env["XDG_STATE_HOME"] = str(work / "state")  # the audit log: written on every run
        # Measure what users get: an installed package has its .pyc files;
        # with this set, every start would compile changed modules again.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        small = work / "small"
        small.mkdir()
        (small / "README").write_text("small workspace\n")
        subprocess.run(["git", "init", "-q", str(small)], check=True)
        age(small)
        print(f"bwrap {subprocess.run([bwrap, '--version'], capture_output=True, text=True).stdout.strip()}, "
              f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")
        compare("small workspace", [exe, "run", "--", "true"], [bwrap, *BARE], str(small), env, args.runs)

        big = work / "big"
        big.mkdir()
        start = time.perf_counter()
        make_tree(big, args.files)
        print(f"\ncreated {args.files} files in {time.perf_counter() - start:.1f} s")
        age(big)
        cold, _ = timed([exe, "run", "--", "true"], str(big), env)
        print(f"first run in the {args.files}-file workspace (cold scan cache): {cold * 1000:.1f} ms")
        compare(f"{args.files}-file workspace, warm scan cache", [exe, "run", "--", "true"],
                [bwrap, *BARE], str(big), env, max(10, args.runs // 2))

        if args.node_modules:
            js = work / "js"
            js.mkdir()
            subprocess.run(["git", "init", "-q", str(js)], check=True)
            dirs = make_node_modules(js, args.node_modules)
            age(js)
            cold, _ = timed([exe, "run", "--", "true"], str(js), env)
            print(f"\nnode_modules of {args.node_modules} packages ({dirs} directories): "
                  f"first run {cold * 1000:.1f} ms")
            compare(f"workspace with that node_modules, warm caches", [exe, "run", "--", "true"],
                    [bwrap, *BARE], str(js), env, max(10, args.runs // 2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
