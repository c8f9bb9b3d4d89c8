"""Differential tests: does the host's real git run what a sandboxed command planted?

For every generated variant (tests/git_variants.py: where the pointer is,
what kind of pointer, how its path is spelled, where the planted git dir
lives, which file carries the payload) the test

1. plants it on the host WITHOUT the sandbox, in a copy of the same layout,
   and asks the host's git (``status`` and ``commit`` in a throwaway HOME)
   whether the payload runs.  Variants where it does not are not attacks and
   are discarded (``assume``), so nothing passes vacuously; a minimum share
   of the generated variants must be live;
2. plants it through ``sandbox run`` in a fresh copy and asks the host's git
   again after the run: nothing may fire, the exit status must be the
   command's own (or 125 with ``sandbox: audit:`` lines saying why), and the
   sandbox must not print a traceback.

The tests are black-box: they know ``sandbox run`` and git, not the audit.
Generation uses a fixed seed and bounded example counts, so a CI run is
deterministic; ``test_many_more_generated_variants`` (marked slow, minutes)
runs the same property over ten times as many variants with another seed.
Every failing variant is reported at the end with its plant program: run
that program in a workspace (``python3 -c``, after the helper header in
tests/git_variants.py), then ``git status`` / ``git commit`` there.

The regression tests at the end cover what one plant cannot show: an audit
class turned off, the quarantine reused by a later run, an audit racing a
live command, overlapping runs and the pending-audit marker.

Set ``DIFFTEST_LOG=/path/file`` to append one line per variant tried.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest
from hypothesis import HealthCheck, Phase, assume, example, given, seed, settings
from hypothesis import strategies as st

import git_variants as gv
from conftest import _test_root, sandbox_exe
from git_variants import Spelling, Variant

pytestmark = pytest.mark.integration

SETTINGS = dict(database=None, deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
MIN_LIVE_SHARE = 0.5  # of the generated variants, at least this many must be real attacks

# -- strategies --------------------------------------------------------------------------

# bases whose workspace has a .git directory of its own
REPO_BASES = ("repo", "repo-nohooks", "worktree", "submodule", "include", "include-existing",
              "hookspath", "hookspath-existing", "hookspath-custom", "husky", "hook-symlink",
              "hook-hardlink",
              "config-script", "filter-script", "global-include", "global-hookspath")
ENTRIES = {"plain": (".", "sub", "a/b/c"), "inside": (".", "sub"), "linked": (".", "sub"),
           "worktree": ("sub", "wt"), "submodule": ("sub", "sm")}
COMMONDIR_SITES = {"worktree": ((".git", "."), (".git/worktrees/wt", "wt")),
                   "submodule": ((".git", "."), (".git/modules/sm", "sm")),
                   "linked": (("@A@", "."),), "inside": (("@P@", "."),)}
NEW_WORKTREE = (".git/worktrees/wt2", "wt2")  # made by the command with `git worktree add`

spellings = st.builds(
    Spelling,
    absolute=st.booleans(),
    dots=st.sampled_from(["", "", "./", "x/../"]),
    lead=st.sampled_from(["", "", "", " "]),
    trail=st.sampled_from(["", "", "", " ", "/"]),
    eol=st.sampled_from(gv.EOLS),
    pad=st.sampled_from([0, 0, 0, 5000]),
    keyword=st.sampled_from(("gitdir: ",) * 8 + gv.KEYWORDS[1:]),
)
carriers = st.sampled_from(gv.CARRIERS)
hooks = st.sampled_from(("pre-commit",) * 3 + gv.HOOKS[1:])


SLOW_TARGETS = ("deep1500",)  # seconds per variant: an explicit example only


def _targets(base: str) -> list[str]:
    has_dotgit_dir = base in REPO_BASES
    return [t for t in gv.TARGETS if (has_dotgit_dir or not t.startswith("dotgit-"))
            and t not in SLOW_TARGETS]


@st.composite
def dotgit_variants(draw) -> Variant:
    """A .git file, a .git symlink, a .git symlink to a gitdir file, or
    ``git init --separate-git-dir``, in the workspace or a subdirectory."""
    base = draw(st.sampled_from(("plain",) * 3 + REPO_BASES + ("linked", "inside")))
    entry = draw(st.sampled_from(ENTRIES.get(base, ("sub", "a/b/c"))))
    gitlink = base in REPO_BASES and entry in ("sub", "a/b/c") and draw(st.booleans())
    return Variant(base, draw(st.sampled_from(gv.DOTGIT_POINTERS)), entry=entry,
                   target=draw(st.sampled_from(_targets(base))), carrier=draw(carriers),
                   spelling=draw(spellings), hook=draw(hooks), gitlink=gitlink)


@st.composite
def commondir_variants(draw) -> Variant:
    """A commondir file or symlink added to (or replacing one in) a git dir
    that existed before the run, or one the command made with ``git
    worktree add``; the common dir it names may lack HEAD."""
    base = draw(st.sampled_from(REPO_BASES + ("linked", "inside")))
    sites = COMMONDIR_SITES.get(base, ((".git", "."),))
    if base in REPO_BASES:
        sites += (NEW_WORKTREE,)
    site, entry = draw(st.sampled_from(sites))
    return Variant(base, draw(st.sampled_from(gv.COMMONDIR_POINTERS)), entry=entry,
                   target=draw(st.sampled_from(_targets(base))), carrier=draw(carriers),
                   spelling=draw(spellings), site=site, head=draw(st.booleans()),
                   hook=draw(hooks))


@st.composite
def layout_variants(draw) -> Variant:
    """A bare-looking directory, a new repository, or a change in place to a
    git dir (or hooks path, or include) that existed before the run."""
    pointer = draw(st.sampled_from(gv.LAYOUT_POINTERS + ("in-place",)))
    if pointer == "in-place":
        base = draw(st.sampled_from(sorted(gv.IN_PLACE)))
        site = draw(st.sampled_from(gv.IN_PLACE[base]))
        same = site in gv.SAME_SIZE_SITES and draw(st.booleans())
        return Variant(base, pointer, entry=gv.IN_PLACE_ENTRY.get(site, "."), site=site,
                       same_size=same)
    base = draw(st.sampled_from(("plain",) * 2 + REPO_BASES + ("linked", "inside")))
    entry = draw(st.sampled_from((".", "sub", "a/b/c") if base == "plain" else ("sub", "a/b/c")))
    gitlink = pointer == "init" and base in REPO_BASES and draw(st.booleans())
    return Variant(base, pointer, entry=entry, carrier=draw(carriers), hook=draw(hooks),
                   gitlink=gitlink)


# -- the check -----------------------------------------------------------------------------

class Tally:
    """What one property run saw: variants tried, live ones, and the ones
    that got through the sandbox (reported together at the end)."""

    def __init__(self, who) -> None:
        self.who = who
        self.tried = self.live = 0
        self.failures: list[str] = []

    def check(self, v: Variant) -> None:
        self.tried += 1
        started = time.monotonic()
        ex = os.path.join(_test_root(), f"d-{uuid.uuid4().hex[:12]}")
        os.makedirs(ex)
        try:
            o = gv.attempt(v, ex, self.who.prefix(), (self.who.uid, self.who.gid), sandbox_exe(),
                           str(_test_root()))
        finally:
            gv.rmtree(ex)
        _log(self.who, o, time.monotonic() - started)
        assume(o.live)  # not an attack on the host's git: discard
        self.live += 1
        problems = []
        if o.fired:
            problems.append(f"the host's git ran the planted payload: {o.fired}")
        if "Traceback" in o.stderr:
            problems.append("a traceback on stderr")
        if o.returncode not in (0, 125):
            problems.append(f"exit status {o.returncode}")
        if o.returncode == 125 and not o.audit_lines():
            problems.append("exit status 125 without a 'sandbox: audit:' line")
        if not o.blocked and not o.fired and not o.audit_lines():
            problems.append("the plant went through and was neutralised without a "
                            "'sandbox: audit:' line")
        if problems:
            self.failures.append("; ".join(problems) + "\n" + o.report())

    def verdict(self, family: str) -> None:
        assert self.tried, "no variants generated"
        share = self.live / self.tried
        assert share >= MIN_LIVE_SHARE, (
            f"{family}: only {self.live} of {self.tried} generated variants are attacks on the "
            "host's git; the generator has drifted")
        if self.failures:
            pytest.fail(f"{family}: {len(self.failures)} of {self.live} live variants got "
                        f"through ({self.who.name}):\n\n" + "\n\n".join(self.failures),
                        pytrace=False)


def _log(who, o: gv.Outcome, seconds: float) -> None:
    path = os.environ.get("DIFFTEST_LOG")
    if not path:
        return
    state = "dead" if not o.live else ("FIRED" if o.fired else "held")
    with open(path, "a") as fh:
        fh.write(f"{who.name}\t{state}\t{seconds:.2f}s\t{o.variant.describe()}\t{o.fired}\n")


S = Spelling
# the red team's finding 1, and the layouts the issue lists
LISTED_DOTGIT = [
    Variant("plain", "dotgit-link", entry="sub", target="node_modules"),
    Variant("plain", "dotgit-link", entry="a/b/c", target="venv", spelling=S(absolute=True)),
    Variant("repo", "dotgit-file", entry="sub", target="dotgit-objects", spelling=S(pad=5000)),
    Variant("plain", "dotgit-file", entry="sub", target="ws", spelling=S(trail=" ", eol="\r\n")),
    Variant("plain", "dotgit-file-link", entry="sub", target="node_modules"),
    Variant("worktree", "dotgit-file", entry="wt", target="node_modules"),
    Variant("submodule", "dotgit-file", entry="sm", target="venv"),
    Variant("plain", "init-separate", entry="sub", target="node_modules"),
    Variant("repo", "dotgit-link", entry="sub", target="node_modules", gitlink=True),
    Variant("plain", "dotgit-link", entry="sub", target="deep1500"),
    Variant("plain", "dotgit-link", entry="sub", target="pathmax"),
    Variant("plain", "dotgit-file", entry="sub", target="locked"),
    Variant("plain", "dotgit-link", entry="sub", target="odd-name"),
    Variant("plain", "dotgit-link", entry="sub", target="ws", carrier="newline"),
    Variant("plain", "dotgit-file", entry="sub", target="protected-name"),
]
LISTED_COMMONDIR = [
    Variant("repo", "commondir", entry=".", site=".git", spelling=S(lead=" ")),
    Variant("repo", "commondir-link", entry=".", site=".git"),
    Variant("repo", "commondir", entry=".", site=".git", target="dotgit-objects", head=False,
            spelling=S(eol="\r\n", pad=5000)),
    Variant("worktree", "commondir", entry="wt", site=".git/worktrees/wt", target="ws"),
    Variant("submodule", "commondir", entry="sm", site=".git/modules/sm", target="node_modules",
            carrier="include"),
    Variant("linked", "commondir", entry=".", site="@A@", target="node_modules"),
    Variant("inside", "commondir", entry=".", site="@P@", target="node_modules", head=False),
    Variant("repo", "commondir", entry="wt2", site=".git/worktrees/wt2", target="ws"),
]
LISTED_LAYOUT = [
    Variant("plain", "bare", entry="sub"),
    Variant("repo", "init", entry="a/b/c", carrier="hookspath"),
    Variant("repo", "init", entry="sub", gitlink=True),
    Variant("repo-nohooks", "in-place", entry=".", site="hooks"),
    Variant("repo-nohooks", "in-place", entry=".", site="hooks-link"),
    Variant("repo", "in-place", entry=".", site="swap-dotgit"),
    Variant("repo", "in-place", entry=".", site="swap-hooks"),
    Variant("worktree", "in-place", entry=".", site="config.worktree"),
    Variant("worktree", "in-place", entry="wt", site="wt-config.worktree"),
    Variant("worktree", "in-place", entry="wt", site="wt-commondir", same_size=True),
    Variant("submodule", "in-place", entry="sm", site="module-config", same_size=True),
    Variant("submodule", "in-place", entry="sm", site="module-hooks"),
    Variant("include", "in-place", entry=".", site="include"),
    Variant("include-existing", "in-place", entry=".", site="include-existing", same_size=True),
    Variant("hookspath", "in-place", entry=".", site="hookspath"),
    Variant("hookspath-existing", "in-place", entry=".", site="hookspath-existing",
            same_size=True),
    Variant("husky", "in-place", entry=".", site="husky"),
    Variant("plain", "init", entry="sub", carrier="newline"),
    Variant("hook-symlink", "in-place", entry=".", site="hook-symlink"),
    Variant("config-script", "in-place", entry=".", site="config-script"),
    Variant("filter-script", "in-place", entry=".", site="filter-script"),
    Variant("hookspath", "in-place", entry="sub", site="hookspath-pointer"),
    Variant("husky", "in-place", entry="sub", site="hookspath-pointer"),
    Variant("hookspath-custom", "in-place", entry=".", site="hookspath"),
    Variant("hookspath-custom", "in-place", entry="sub", site="hookspath-pointer"),
    Variant("config-script", "in-place", entry="sub", site="config-script-pointer"),
    Variant("hook-hardlink", "in-place", entry=".", site="hook-hardlink", same_size=True),
    Variant("global-include", "in-place", entry=".", site="global-include"),
    Variant("global-hookspath", "in-place", entry=".", site="global-hookspath"),
]


def run_property(who, family: str, strategy, listed, examples: int, seed_value: int) -> None:
    """Check the listed variants, then ``examples`` generated ones (fixed seed)."""
    tally = Tally(who)

    @seed(seed_value)
    @settings(max_examples=examples, **SETTINGS)
    @given(v=strategy)
    def prop(v):
        tally.check(v)

    for v in reversed(listed):
        prop = example(v=v)(prop)
    prop()
    tally.verdict(family)


FAMILIES = {
    "dotgit pointers": (dotgit_variants(), LISTED_DOTGIT),
    "commondir pointers": (commondir_variants(), LISTED_COMMONDIR),
    "layouts": (layout_variants(), LISTED_LAYOUT),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_generated_variants_do_not_run_on_the_host(who, family):
    strategy, listed = FAMILIES[family]
    run_property(who, family, strategy, listed, examples=8, seed_value=13)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_many_more_generated_variants(who, family):
    """The same property over ten times as many generated variants (minutes)."""
    strategy, _listed = FAMILIES[family]
    run_property(who, family, strategy, [], examples=80, seed_value=8)


# -- regression tests beyond the generator ---------------------------------------------------

def _attempt_once(who, v: Variant, profile: str | None = None) -> gv.Outcome:
    ex = os.path.join(_test_root(), f"d-{uuid.uuid4().hex[:12]}")
    os.makedirs(ex)
    args: tuple[str, ...] = ()
    if profile is not None:
        path = os.path.join(ex, "profile.toml")
        with open(path, "w") as fh:
            fh.write(profile)
        os.chmod(path, 0o644)
        args = ("--profile", path)
    try:
        return gv.attempt(v, ex, who.prefix(), (who.uid, who.gid), sandbox_exe(),
                          str(_test_root()), args)
    finally:
        gv.rmtree(ex)


@pytest.mark.parametrize("cls, target", [("editor_config", "protected-name"),
                                         ("agent_config", "agent-name")])
def test_an_audit_class_turned_off_does_not_hide_git_dirs_below_its_names(who, cls, target):
    """Turning off the audit of editor (or agent) config must not make the
    audit blind to a git dir planted inside a directory of that class's names."""
    v = Variant("plain", "dotgit-link", entry="sub", target=target)
    o = _attempt_once(who, v, profile=f'extends = "default"\n[audit]\n{cls} = false\n')
    assert o.live, "the plant is not an attack on the host's git without the sandbox"
    assert "Traceback" not in o.stderr
    assert not o.fired, o.report()


def test_the_quarantine_cannot_be_pointed_at_by_a_later_run(who):
    """Finding 3: what the audit took away in one run must not be usable by
    the next: the second run looks everywhere it can read for a directory
    holding the first run's payload and points a .git at each."""
    ex = os.path.join(_test_root(), f"d-{uuid.uuid4().hex[:12]}")
    os.makedirs(os.path.join(ex, "home"))
    try:
        if os.getuid() == 0:
            for d in (ex, os.path.join(ex, "home")):
                os.chown(d, who.uid, who.gid)
        marker = os.path.join(ex, "MARKER")
        env = gv.host_env(os.path.join(ex, "home"), str(_test_root()))
        ws = gv.setup_base("plain", ex, "ws", who.prefix(), env)
        sbx_env = {k: env[k] for k in ("HOME", "PATH", "LANG")}
        # a bare-looking git dir on its own, and one inside a new editor-config
        # directory (which the audit takes away whole)
        first = gv.plant_source(Variant("plain", "bare", entry="sub"), marker)
        first += gv.plant_source(Variant("plain", "bare", entry=".vscode/r"), marker)
        r = subprocess.run(who.prefix() + [sandbox_exe(), "run", "--", gv.PYTHON, "-c", first],
                           cwd=ws, env=sbx_env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        for entry in ("sub", ".vscode/r"):
            assert not gv.host_git_fires(ws, Variant("plain", "bare", entry=entry), marker,
                                         who.prefix(), env), "the first run's payload was left live"
        r = subprocess.run(who.prefix() + [sandbox_exe(), "run", "--", gv.PYTHON, "-c",
                                           SEEK_AND_POINT, marker, ex],
                           cwd=ws, env=sbx_env, capture_output=True, text=True, timeout=120)
        assert "Traceback" not in r.stderr, r.stderr
        found = [ln for ln in r.stdout.splitlines() if ln.startswith("pointed ")]
        fired = []
        for n in range(len(found)):
            fired += gv.host_git_fires(ws, Variant("plain", "dotgit-link", entry=f"q{n}"), marker,
                                       who.prefix(), env)
        assert not found and not fired, (found, fired, r.stderr)
    finally:
        gv.rmtree(ex)


# Run inside the sandbox: every directory outside the workspace that holds a
# file naming MARKER and looks like a git dir gets a .git symlink pointing at it.
SEEK_AND_POINT = r'''
import os, sys
marker, ex = sys.argv[1], sys.argv[2]
ws = os.getcwd()
n = 0
for top in (os.environ.get("HOME", "/"), ex, "/tmp", "/var/tmp"):
    for dirpath, dirnames, filenames in os.walk(top):
        if dirpath == ws or dirpath.startswith(ws + "/"):
            dirnames[:] = []
            continue
        names = set(dirnames) | set(filenames)
        if not ("HEAD" in names or {"objects", "refs"} <= names):
            continue
        holds = False
        for f in filenames:
            try:
                with open(os.path.join(dirpath, f), "rb") as fh:
                    holds = holds or marker.encode() in fh.read(1 << 20)
            except OSError:
                pass
        if holds:
            os.makedirs(f"q{n}", exist_ok=True)
            os.symlink(dirpath, f"q{n}/.git")
            print("pointed", dirpath)
            n += 1
'''


# A command that keeps running while another `sandbox run` in the same
# workspace audits (that run's own audit at its end, or the audit of this
# run's pending marker at its start) can swap a directory for a symlink
# between the audit's check and its write: the write then lands outside every
# writable root.  The swapped-in link here points at the user's
# ~/.config/git, and the config written there carries the payload.
RACER = r'''
import os, sys, time
victim, marker, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
payload = ("[core]\n  repositoryformatversion=0\n  fsmonitor=false\n[remote \"o\"]\n"
           "  url = \"x\\n[core]\\nfsmonitor = echo fsmonitor >> %s\"\n" % marker)
for k in range(40):
    os.makedirs(f"f{k}/git/objects"); os.makedirs(f"f{k}/git/refs")
    open(f"f{k}/git/HEAD", "w").write("ref: refs/heads/main\n")
    open(f"f{k}/git/config", "w").write(payload)
    os.symlink(victim, f"l{k}")
print("planted", flush=True)
end = time.time() + seconds
while time.time() < end:
    for k in range(40):
        os.rename(f"f{k}", f"d{k}"); os.rename(f"l{k}", f"f{k}")
    time.sleep(0.001)
    for k in range(40):
        os.rename(f"f{k}", f"l{k}"); os.rename(f"d{k}", f"f{k}")
    time.sleep(0.002)
'''


@pytest.mark.slow
def test_an_audit_racing_a_live_command_never_writes_outside_the_roots(who):
    ex = os.path.join(_test_root(), f"d-{uuid.uuid4().hex[:12]}")
    home = os.path.join(ex, "home")
    victim = os.path.join(home, ".config")
    os.makedirs(os.path.join(victim, "git"))
    original = "[user]\n\temail = victim@example.invalid\n"
    with open(os.path.join(victim, "git", "config"), "w") as fh:
        fh.write(original)
    marker = os.path.join(ex, "MARKER")
    try:
        who.chown(ex)
        env = gv.host_env(home, str(_test_root()))
        sbx_env = {k: env[k] for k in ("HOME", "PATH", "LANG")}
        for attempt_no in range(5):  # a race: give it a few chances to show
            ws = gv.setup_base("plain", ex, f"ws{attempt_no}", who.prefix(), env)
            racer = subprocess.Popen(
                who.prefix() + [sandbox_exe(), "run", "--", gv.PYTHON, "-c", RACER,
                                os.path.join(victim, ""), marker, "4"],
                cwd=ws, env=sbx_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                assert racer.stdout.readline().strip() == "planted"
                time.sleep(0.5)
                other = subprocess.run(who.prefix() + [sandbox_exe(), "run", "--", "true"], cwd=ws,
                                       env=sbx_env, capture_output=True, text=True, timeout=120)
                assert "Traceback" not in other.stderr, other.stderr
            finally:
                racer.wait(timeout=60)
            with open(os.path.join(victim, "git", "config")) as fh:
                now = fh.read()
            left = sorted(os.listdir(os.path.join(victim, "git")))
            assert now == original and left == ["config"], (
                f"attempt {attempt_no}: the audit wrote outside the writable roots: "
                f"{left} {now!r}")
        repo = gv.setup_base("repo", ex, "elsewhere", who.prefix(), env)
        assert not gv.host_git_fires(repo, Variant("repo", "in-place", entry="."), marker,
                                     who.prefix(), env)
    finally:
        gv.rmtree(ex)


@pytest.mark.slow
def test_a_killed_run_is_audited_later_even_when_another_run_overlapped(who):
    """Each run keeps one pending-audit marker per workspace, at one path: a
    run that starts and ends while another is still running must not take
    the other's marker away, or a SIGKILL of the other leaves its plants
    unaudited for good (the README promises the next run audits them)."""
    ex = os.path.join(_test_root(), f"d-{uuid.uuid4().hex[:12]}")
    os.makedirs(os.path.join(ex, "home"))
    marker = os.path.join(ex, "MARKER")
    try:
        who.chown(ex)
        env = gv.host_env(os.path.join(ex, "home"), str(_test_root()))
        sbx_env = {k: env[k] for k in ("HOME", "PATH", "LANG")}
        ws = gv.setup_base("plain", ex, "ws", who.prefix(), env)
        v = Variant("plain", "init", entry="sub")
        plant = gv.plant_source(v, marker)
        slow = (f"import time, subprocess, sys\ntime.sleep(3)\n"
                f"subprocess.run([sys.executable, '-c', {plant!r}], check=True)\n"
                "print('planted', flush=True)\ntime.sleep(60)\n")
        victim = subprocess.Popen(
            who.prefix() + [sandbox_exe(), "run", "--", gv.PYTHON, "-c", slow], cwd=ws,
            env=sbx_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        other = None
        try:
            time.sleep(1)  # the first run is inside its command now
            other = subprocess.Popen(who.prefix() + [sandbox_exe(), "run", "--", "true"], cwd=ws,
                                     env=sbx_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
            assert victim.stdout.readline().strip() == "planted"
            try:
                other.wait(timeout=15)  # a sandbox that serialises runs may hold it back
            except subprocess.TimeoutExpired:
                pass
        finally:
            victim.kill()  # SIGKILL: no audit from this run
            victim.wait(timeout=30)
            if other is not None:
                _out, err = other.communicate(timeout=120)
                assert "Traceback" not in err, err
        later = subprocess.run(who.prefix() + [sandbox_exe(), "run", "--", "true"], cwd=ws,
                               env=sbx_env, capture_output=True, text=True, timeout=60)
        assert "Traceback" not in later.stderr, later.stderr
        fired = gv.host_git_fires(ws, v, marker, who.prefix(), env)
        assert not fired, ("the killed run's plant was never audited", later.stderr)
    finally:
        gv.rmtree(ex)
