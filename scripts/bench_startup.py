#!/usr/bin/env python3
"""Startup benchmark: `sandbox run -- true` against bare bwrap, in one run.

Runs the two commands alternately (A B A B ...) so drift on a noisy machine
hits both, and prints median wall time, the median of the pairwise
differences and ratios, and the wrapper's peak RSS (from wait4's rusage),
for five cases, each against its bar (issue 14):

- steady: a small workspace nothing changes in (<= +15 ms);
- edit: the same, with a new file created in its root before every run
  (untimed), as an agent's edit or an editor's save does (<= +25 ms);
- big: a workspace of --files files (default 100,000), steady (<= +20 ms);
- big-edit: the same with a new file in one of its directories before
  every run (<= +30 ms);
- churn: a temporary HOME this script creates (never the real one), first
  quiet, then with a background loop of its own creating and removing a
  file under its ~/.config every 100 ms (<= +15 ms).  The loop is stopped
  by its PID at the end, and stops itself after 15 minutes regardless.

It also reports the first (cold) run in the big workspace.

With --node-modules N, also a workspace holding a node_modules of N
packages (8 directories each, as an npm install leaves them): secret names
are searched below skip_dirs too, so every directory there is one more stat
on every start.

Usage: nice -n -10 .venv/bin/python scripts/bench_startup.py [--runs 40] [--files 100000]
       [--cases steady,edit,big,big-edit,churn] [--node-modules 1500]
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
            runs: int, before=None, bar_ms: float | None = None) -> dict:
    """Alternate sandbox and bare runs; ``before(i)`` runs untimed before each
    sandbox run (the edit whose cost is measured)."""
    for i in range(3):  # warm-up: page cache, policy and scan caches
        if before:
            before(-1 - i)
        timed(sandbox, cwd, env)
        timed(bare, cwd, env)
    a, b, rss = [], [], []
    for i in range(runs):
        if before:
            before(i)
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
    sys.stdout.flush()
    return {"label": label, "sandbox": statistics.median(a), "bare": statistics.median(b),
            "diff": statistics.median(diffs), "ratio": statistics.median(ratios),
            "rss": max(rss) / 1024, "bar": bar_ms, "pairs": runs}


def new_file_in(directory: Path):
    """An edit before each run: one new file in ``directory`` (what an agent's
    edit, an editor's atomic save or a build does to a directory's stamp)."""
    def before(i: int) -> None:
        (directory / f"new-{os.getpid()}-{i}-{time.monotonic_ns()}.txt").write_bytes(b"x")
    return before


CHURN = """
import os, sys, time
path, period, limit = sys.argv[1], float(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while time.monotonic() < limit:  # bounded: never outlives the benchmark by long
    with open(path, "w") as fh:
        fh.write("x")
    os.unlink(path)
    time.sleep(period)
"""


def start_churn(home: Path, period: float = 0.1, limit_s: float = 900) -> subprocess.Popen:
    """A file created and removed under ``home``/.config every ``period`` seconds,
    as a desktop app, a shell or an IDE does; stopped by its PID (and by itself
    after ``limit_s``)."""
    return subprocess.Popen([sys.executable, "-c", CHURN, str(home / ".config" / "churn.tmp"),
                             str(period), str(limit_s)])


def make_home(home: Path) -> None:
    """A small temporary home: a few applications' settings under ~/.config."""
    for i in range(20):
        d = home / ".config" / f"app{i}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "settings.json").write_text("{}\n")
    (home / ".local" / "share").mkdir(parents=True, exist_ok=True)
    (home / ".cache").mkdir(exist_ok=True)


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


def summary(results: list[dict]) -> None:
    print("\n== summary (medians; bar = paired difference over bare bwrap)")
    print(f"{'case':58} {'sandbox':>9} {'bare':>8} {'diff':>9} {'ratio':>6} {'bar':>8} {'peak RSS':>9}")
    for r in results:
        bar = "" if r["bar"] is None else (f"<=+{r['bar']:.0f}" + (" ok" if r["diff"] * 1000 <= r["bar"]
                                                                 else " MISS"))
        print(f"{r['label'][:58]:58} {r['sandbox'] * 1000:8.1f}m {r['bare'] * 1000:7.1f}m "
              f"{r['diff'] * 1000:+8.1f}m {r['ratio']:5.1f}x {bar:>8} {r['rss']:7.1f}Mi")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--node-modules", type=int, default=0,
                    help="also time a workspace with a node_modules of this many packages")
    ap.add_argument("--dir", default=None, help="where to create the workspaces (not under /tmp)")
    ap.add_argument("--cases", default="steady,edit,big,big-edit,churn",
                    help="comma-separated: steady, edit, big, big-edit, churn")
    args = ap.parse_args()
    cases = set(args.cases.split(","))

    exe = shutil.which("sandbox", path=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    bwrap = shutil.which("bwrap")
    if not exe or not bwrap:
        sys.exit("need the installed 'sandbox' script and bwrap")
    base = Path(args.dir or Path(__file__).resolve().parent.parent / ".test-root")
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=base))
    churn = None
    results = []
    run, bare = [exe, "run", "--", "true"], [bwrap, *BARE]
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
              f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}")
        if "steady" in cases:
            results.append(compare("small workspace, steady", run, bare, str(small), env,
                                   args.runs, bar_ms=15))
        if "edit" in cases:
            results.append(compare("small workspace, a new file in its root before each run",
                                   run, bare, str(small), env, args.runs,
                                   before=new_file_in(small), bar_ms=25))

        if cases & {"big", "big-edit"}:
            big = work / "big"
            big.mkdir()
            start = time.perf_counter()
            make_tree(big, args.files)
            print(f"\ncreated {args.files} files in {time.perf_counter() - start:.1f} s")
            age(big)
            cold, _ = timed(run, str(big), env)
            print(f"first run in the {args.files}-file workspace (cold scan cache): {cold * 1000:.1f} ms")
            if "big" in cases:
                results.append(compare(f"{args.files}-file workspace, steady", run, bare, str(big),
                                       env, max(10, args.runs // 2), bar_ms=20))
            if "big-edit" in cases:
                made = sorted(big.glob("pkg*/mod*"))
                edited = made[len(made) // 2]
                results.append(compare(f"{args.files}-file workspace, a new file before each run",
                                       run, bare, str(big), env, max(10, args.runs // 2),
                                       before=new_file_in(edited), bar_ms=30))

        if "churn" in cases:
            home = work / "home"  # never the real home: the churn runs here
            make_home(home)
            henv = dict(env, HOME=str(home))
            henv.pop("XDG_CONFIG_HOME", None)
            age(home)
            results.append(compare("temporary HOME, quiet", run, bare, str(small), henv,
                                   args.runs))
            churn = start_churn(home)
            time.sleep(0.3)
            results.append(compare("temporary HOME, a file churning under ~/.config every 100 ms",
                                   run, bare, str(small), henv, args.runs, bar_ms=15))

        if args.node_modules:
            js = work / "js"
            js.mkdir()
            subprocess.run(["git", "init", "-q", str(js)], check=True)
            dirs = make_node_modules(js, args.node_modules)
            age(js)
            cold, _ = timed(run, str(js), env)
            print(f"\nnode_modules of {args.node_modules} packages ({dirs} directories): "
                  f"first run {cold * 1000:.1f} ms")
            results.append(compare("workspace with that node_modules, warm caches", run, bare,
                                   str(js), env, max(10, args.runs // 2)))
        summary(results)
        print(f"load average at the end: {os.getloadavg()[0]:.2f} (2 cores: above 1 the figures "
              "are inflated)")
    finally:
        if churn is not None:
            churn.kill()  # our own child, by its PID
            churn.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
