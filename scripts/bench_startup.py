#!/usr/bin/env python3
"""Startup benchmark: `sandbox run -- true` against bare bwrap, in one run.

Two ways of running are timed side by side with bare bwrap, alternately
(A B C A B C ...) so drift on a noisy machine hits all three:

- served: `sandbox`, the native command, with the per-user server running
  (the default after the first runs of a loop; the script starts it with
  SANDBOX_SERVER=on, checks every timed run was served, and stops it);
- direct: `sandbox-direct`, the Python command, which never uses a server.

It prints median wall time, the median of the paired differences and
ratios, and the peak RSS of the command typed (GNU time's %M, one untimed
run; for served runs also the server's own peak, which is the Python side
of every served run), for five cases, each against its bar (issue 14):

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
       [--cases steady,edit,big,big-edit,churn] [--modes served,direct] [--node-modules 1500]
Only public tools: the standard library and the installed `sandbox` script.
"""

from __future__ import annotations

import argparse
import json
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


def timed(argv: list[str], cwd: str, env: dict[str, str]) -> float:
    """Wall seconds of one run."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, _usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.read().decode()}")
    return elapsed


def peak_rss(argv: list[str], cwd: str, env: dict[str, str]) -> float | None:
    """Peak RSS (MiB) of one run of ``argv`` itself, by GNU time's %M.

    Not wait4's figure for our own child: a high-water mark survives exec,
    so that one is this benchmark's size (the fork before the exec), not
    the command's.  None without /usr/bin/time.
    """
    if not os.access("/usr/bin/time", os.X_OK):
        return None
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    try:
        return int(done.stderr.strip().splitlines()[-1]) / 1024
    except (ValueError, IndexError):
        return None


def compare(label: str, variants: list[tuple[str, list[str], dict[str, str]]], bare: list[str],
            cwd: str, runs: int, before=None, bar_ms: float | None = None) -> list[dict]:
    """Alternate each variant with bare bwrap (A B C A B C ...); ``before(i)``
    runs untimed before every variant's run (the edit whose cost is measured).

    ``variants``: (name, argv, env); the first is what users get by default,
    the one the bar is for.
    """
    benv = variants[0][2]
    for i in range(3):  # warm-up: page cache, policy and scan caches, the server's start
        for _, argv, env in variants:
            if before:
                before(-1 - i * len(variants))
            timed(argv, cwd, env)
        timed(bare, cwd, benv)
    times = {name: [] for name, _, _ in variants}
    b = []
    for i in range(runs):
        for k, (name, argv, env) in enumerate(variants):
            if before:
                before(i * len(variants) + k)
            times[name].append(timed(argv, cwd, env))
        b.append(timed(bare, cwd, benv))
    rss = {name: peak_rss(argv, cwd, env) for name, argv, env in variants}  # untimed
    ms = lambda v: f"{v * 1000:7.1f} ms"  # noqa: E731
    print(f"\n== {label} ({runs} rounds)")
    print(f"bare bwrap                  median {ms(statistics.median(b))}  min {ms(min(b))}  max {ms(max(b))}")
    out = []
    for n, (name, _, _) in enumerate(variants):
        a = times[name]
        diffs = [x - y for x, y in zip(a, b)]
        ratios = [x / y for x, y in zip(a, b)]
        print(f"{name:27} median {ms(statistics.median(a))}  min {ms(min(a))}  max {ms(max(a))}")
        print(f"  difference (paired)       median {ms(statistics.median(diffs))}   "
              f"ratio {statistics.median(ratios):5.2f}x   peak RSS of the command typed "
              f"{rss[name] or 0:5.1f} MiB")
        out.append({"label": label, "variant": name, "sandbox": statistics.median(a),
                    "bare": statistics.median(b), "diff": statistics.median(diffs),
                    "ratio": statistics.median(ratios), "rss": rss[name] or 0.0,
                    "bar": bar_ms if n == 0 else None, "pairs": runs})
    sys.stdout.flush()
    return out


def server_status(exe: str, env: dict[str, str]) -> dict:
    """``sandbox server status --json`` for the state directory ``env`` names."""
    done = subprocess.run([exe, "server", "status", "--json"], env=env, capture_output=True,
                          text=True, timeout=30)
    try:
        return json.loads(done.stdout)
    except ValueError:
        return {}


def ensure_server(exe: str, cwd: str, env: dict[str, str]) -> dict:
    """Start the server for ``env``'s state directory (one run with
    SANDBOX_SERVER=on does) and wait until it answers: at most 10 s."""
    timed([exe, "run", "--", "true"], cwd, env)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = server_status(exe, env)
        if status.get("running"):
            return status
        time.sleep(0.1)
    sys.exit("the sandbox server did not start within 10 s (sandbox server status --json)")


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
    print("\n== summary (medians; bar = paired difference over bare bwrap, for the default)")
    print(f"{'case':46} {'variant':16} {'sandbox':>9} {'bare':>8} {'diff':>9} {'ratio':>6} "
          f"{'bar':>9} {'peak RSS':>9}")
    for r in results:
        bar = "" if r["bar"] is None else (f"<=+{r['bar']:.0f}" + (" ok" if r["diff"] * 1000 <= r["bar"]
                                                                 else " MISS"))
        print(f"{r['label'][:46]:46} {r['variant'][:16]:16} {r['sandbox'] * 1000:8.1f}m "
              f"{r['bare'] * 1000:7.1f}m {r['diff'] * 1000:+8.1f}m {r['ratio']:5.1f}x {bar:>9} "
              f"{r['rss']:7.1f}Mi")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--node-modules", type=int, default=0,
                    help="also time a workspace with a node_modules of this many packages")
    ap.add_argument("--dir", default=None, help="where to create the workspaces (not under /tmp)")
    ap.add_argument("--cases", default="steady,edit,big,big-edit,churn",
                    help="comma-separated: steady, edit, big, big-edit, churn")
    ap.add_argument("--modes", default="served,direct",
                    help="comma-separated, the first is the one the bars are for: served "
                         "(`sandbox` with its server running), direct (`sandbox-direct`, "
                         "the Python command, never served)")
    args = ap.parse_args()
    cases = set(args.cases.split(","))

    where = str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]
    exe = shutil.which("sandbox", path=where)
    direct = shutil.which("sandbox-direct", path=where)
    bwrap = shutil.which("bwrap")
    if not exe or not bwrap:
        sys.exit("need the installed 'sandbox' command and bwrap")
    modes = args.modes.split(",")
    base = Path(args.dir or Path(__file__).resolve().parent.parent / ".test-root")
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=base))
    churn = None
    results = []
    bare = [bwrap, *BARE]
    server_env = None
    try:
        env = dict(os.environ)
        env["XDG_CACHE_HOME"] = str(work / "cache")
        env["XDG_STATE_HOME"] = str(work / "state")  # the audit log: written on every run
        # Measure what users get: an installed package has its .pyc files;
        # with this set, every start would compile changed modules again.
        env.pop("PYTHONDONTWRITEBYTECODE", None)

        def variants(base_env: dict[str, str]) -> list[tuple[str, list[str], dict[str, str]]]:
            out = []
            for mode in modes:
                if mode == "served":
                    out.append(("sandbox (served)", [exe, "run", "--", "true"],
                                dict(base_env, SANDBOX_SERVER="on")))
                elif mode == "direct" and direct:
                    out.append(("sandbox-direct", [direct, "run", "--", "true"],
                                dict(base_env, SANDBOX_SERVER="off")))
            return out
        small = work / "small"
        small.mkdir()
        (small / "README").write_text("small workspace\n")
        subprocess.run(["git", "init", "-q", str(small)], check=True)
        age(small)
        print(f"bwrap {subprocess.run([bwrap, '--version'], capture_output=True, text=True).stdout.strip()}, "
              f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}")
        if "served" in modes:
            server_env = dict(env, SANDBOX_SERVER="on")
            status = ensure_server(exe, str(small), server_env)
            print(f"server: pid {status.get('pid')}, served so far {status.get('served')}")
        served_before = server_status(exe, server_env).get("served", 0) if server_env else 0
        if "steady" in cases:
            results += compare("small workspace, steady", variants(env), bare, str(small),
                               args.runs, bar_ms=15)
        if "edit" in cases:
            results += compare("small workspace, a new file in its root before each run",
                               variants(env), bare, str(small), args.runs,
                               before=new_file_in(small), bar_ms=25)

        if cases & {"big", "big-edit"}:
            big = work / "big"
            big.mkdir()
            start = time.perf_counter()
            make_tree(big, args.files)
            print(f"\ncreated {args.files} files in {time.perf_counter() - start:.1f} s")
            age(big)
            first = variants(env)[0]
            cold = timed(first[1], str(big), first[2])
            print(f"first run in the {args.files}-file workspace (cold scan cache): {cold * 1000:.1f} ms")
            if "big" in cases:
                results += compare(f"{args.files}-file workspace, steady", variants(env), bare,
                                   str(big), max(10, args.runs // 2), bar_ms=20)
            if "big-edit" in cases:
                made = sorted(big.glob("pkg*/mod*"))
                edited = made[len(made) // 2]
                results += compare(f"{args.files}-file workspace, a new file before each run",
                                   variants(env), bare, str(big), max(10, args.runs // 2),
                                   before=new_file_in(edited), bar_ms=30)

        if "churn" in cases:
            home = work / "home"  # never the real home: the churn runs here
            make_home(home)
            henv = dict(env, HOME=str(home))
            henv.pop("XDG_CONFIG_HOME", None)
            age(home)
            results += compare("temporary HOME, quiet", variants(henv), bare, str(small),
                               args.runs)
            churn = start_churn(home)
            time.sleep(0.3)
            results += compare("temporary HOME, a file churning under ~/.config every 100 ms",
                               variants(henv), bare, str(small), args.runs, bar_ms=15)

        if args.node_modules:
            js = work / "js"
            js.mkdir()
            subprocess.run(["git", "init", "-q", str(js)], check=True)
            dirs = make_node_modules(js, args.node_modules)
            age(js)
            first = variants(env)[0]
            cold = timed(first[1], str(js), first[2])
            print(f"\nnode_modules of {args.node_modules} packages ({dirs} directories): "
                  f"first run {cold * 1000:.1f} ms")
            results += compare("workspace with that node_modules, warm caches", variants(env),
                               bare, str(js), max(10, args.runs // 2))
        summary(results)
        if server_env is not None:
            # every timed `sandbox` run must have been served, or the figures
            # are the direct path's under another name
            status = server_status(exe, server_env)
            timed_runs = sum(r["pairs"] for r in results if r["variant"].startswith("sandbox ("))
            print(f"server: served {status.get('served', 0) - served_before} requests during the "
                  f"cases ({timed_runs} timed + warm-up and cold runs); its peak RSS "
                  f"{status.get('peak_rss_kib', 0) / 1024:.1f} MiB (each served run is a fork of it: "
                  f"the peak of the Python side of a served run; the 'peak RSS' column of a "
                  f"served run is the native client's alone)")
        print(f"load average at the end: {os.getloadavg()[0]:.2f} (2 cores: above 1 the figures "
              "are inflated)")
    finally:
        if churn is not None:
            churn.kill()  # our own child, by its PID
            churn.wait()
        if server_env is not None:  # the server this benchmark started (its state dir goes next)
            subprocess.run([exe, "server", "stop"], env=server_env, capture_output=True, timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
