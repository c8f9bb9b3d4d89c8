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
Generation is derandomized (fixed seed) with bounded example counts, so a
CI run is deterministic.  Every failing variant is reported at the end with
its plant program: run that program in a workspace (``python3 -c``), then
``git status`` / ``git commit`` there, to reproduce.

Set ``DIFFTEST_LOG=/path/file`` to append one line per variant tried.
"""

from __future__ import annotations

import os
import shutil
import uuid

import pytest
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st

import git_variants as gv
from conftest import _test_root, sandbox_exe
from git_variants import Spelling, Variant

pytestmark = pytest.mark.integration

SETTINGS = dict(derandomize=True, database=None, deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
MIN_LIVE_SHARE = 0.5  # of the generated variants, at least this many must be real attacks

# -- strategies --------------------------------------------------------------------------

REPO_BASES = ("repo", "repo-nohooks", "worktree", "submodule", "include", "hookspath")
ENTRIES = {"plain": (".", "sub", "a/b/c"), "linked": (".", "sub"), "worktree": ("sub", "wt"),
           "submodule": ("sub", "sm")}
COMMONDIR_SITES = {"worktree": ((".git", "."), (".git/worktrees/wt", "wt")),
                   "submodule": ((".git", "."), (".git/modules/sm", "sm")),
                   "linked": (("@A@", "."),)}
IN_PLACE = {"repo": ("hooks",), "repo-nohooks": ("hooks",),
            "worktree": ("config.worktree", "wt-config.worktree"),
            "submodule": ("module-config", "module-hooks"), "include": ("include",),
            "hookspath": ("hookspath",), "linked": ("linked-commondir",)}
IN_PLACE_ENTRY = {"wt-config.worktree": "wt", "module-config": "sm", "module-hooks": "sm"}

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


def _targets(base: str) -> list[str]:
    has_dotgit_dir = base in REPO_BASES
    return [t for t in gv.TARGETS if has_dotgit_dir or not t.startswith("dotgit-")]


@st.composite
def dotgit_variants(draw) -> Variant:
    """A .git file, a .git symlink, a .git symlink to a gitdir file, or
    ``git init --separate-git-dir``, in the workspace or a subdirectory."""
    base = draw(st.sampled_from(("plain",) * 3 + REPO_BASES + ("linked",)))
    entry = draw(st.sampled_from(ENTRIES.get(base, ("sub", "a/b/c"))))
    return Variant(base, draw(st.sampled_from(gv.DOTGIT_POINTERS)), entry=entry,
                   target=draw(st.sampled_from(_targets(base))), carrier=draw(carriers),
                   spelling=draw(spellings))


@st.composite
def commondir_variants(draw) -> Variant:
    """A commondir file or symlink added to (or replacing one in) a git dir
    that existed before the run; the common dir it names may lack HEAD."""
    base = draw(st.sampled_from(REPO_BASES + ("linked",)))
    site, entry = draw(st.sampled_from(COMMONDIR_SITES.get(base, ((".git", "."),))))
    return Variant(base, draw(st.sampled_from(gv.COMMONDIR_POINTERS)), entry=entry,
                   target=draw(st.sampled_from(_targets(base))), carrier=draw(carriers),
                   spelling=draw(spellings), site=site, head=draw(st.booleans()))


@st.composite
def layout_variants(draw) -> Variant:
    """A bare-looking directory, a new repository, or a change in place to a
    git dir (or hooks path, or include) that existed before the run."""
    pointer = draw(st.sampled_from(gv.LAYOUT_POINTERS))
    if pointer == "in-place":
        base = draw(st.sampled_from(sorted(IN_PLACE)))
        site = draw(st.sampled_from(IN_PLACE[base]))
        return Variant(base, pointer, entry=IN_PLACE_ENTRY.get(site, "."), site=site,
                       carrier="config")
    base = draw(st.sampled_from(("plain",) * 2 + REPO_BASES + ("linked",)))
    entries = ENTRIES.get(base, ("sub", "a/b/c"))
    entry = draw(st.sampled_from([e for e in entries if e in (".", "sub", "a/b/c")]))
    if entry == "." and base != "plain":
        entry = "sub"
    return Variant(base, pointer, entry=entry, carrier=draw(carriers))


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
        ex = os.path.join(_test_root(), f"d-{uuid.uuid4().hex[:12]}")
        os.makedirs(ex)
        try:
            o = gv.attempt(v, ex, self.who.prefix(), (self.who.uid, self.who.gid), sandbox_exe(),
                           str(_test_root()))
        finally:
            shutil.rmtree(ex, ignore_errors=True)
        _log(self.who, o)
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


def _log(who, o: gv.Outcome) -> None:
    path = os.environ.get("DIFFTEST_LOG")
    if not path:
        return
    state = "dead" if not o.live else ("FIRED" if o.fired else "held")
    with open(path, "a") as fh:
        fh.write(f"{who.name}\t{state}\t{o.variant.describe()}\t{o.fired}\n")


S = Spelling
# the red team's finding 1, and the other layouts the issue lists
LISTED_DOTGIT = [
    Variant("plain", "dotgit-link", entry="sub", target="node_modules"),
    Variant("plain", "dotgit-link", entry="a/b/c", target="venv", spelling=S(absolute=True)),
    Variant("repo", "dotgit-file", entry="sub", target="dotgit-objects", spelling=S(pad=5000)),
    Variant("plain", "dotgit-file", entry="sub", target="ws", spelling=S(trail=" ", eol="\r\n")),
    Variant("plain", "dotgit-file-link", entry="sub", target="node_modules"),
    Variant("worktree", "dotgit-file", entry="wt", target="node_modules"),
    Variant("submodule", "dotgit-file", entry="sm", target="venv"),
    Variant("plain", "init-separate", entry="sub", target="node_modules"),
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
]
LISTED_LAYOUT = [
    Variant("plain", "bare", entry="sub"),
    Variant("repo", "init", entry="a/b/c", carrier="hookspath"),
    Variant("repo-nohooks", "in-place", entry=".", site="hooks"),
    Variant("worktree", "in-place", entry=".", site="config.worktree"),
    Variant("worktree", "in-place", entry="wt", site="wt-config.worktree"),
    Variant("include", "in-place", entry=".", site="include"),
    Variant("submodule", "in-place", entry="sm", site="module-hooks"),
]


def _with_examples(listed):
    def deco(fn):
        for v in reversed(listed):
            fn = example(v=v)(fn)
        return fn
    return deco


def test_dotgit_pointer_variants(who):
    tally = Tally(who)

    @settings(max_examples=16, **SETTINGS)
    @_with_examples(LISTED_DOTGIT)
    @given(v=dotgit_variants())
    def prop(v):
        tally.check(v)

    prop()
    tally.verdict("dotgit pointers")


def test_commondir_variants(who):
    tally = Tally(who)

    @settings(max_examples=12, **SETTINGS)
    @_with_examples(LISTED_COMMONDIR)
    @given(v=commondir_variants())
    def prop(v):
        tally.check(v)

    prop()
    tally.verdict("commondir pointers")


def test_layout_variants(who):
    tally = Tally(who)

    @settings(max_examples=12, **SETTINGS)
    @_with_examples(LISTED_LAYOUT)
    @given(v=layout_variants())
    def prop(v):
        tally.check(v)

    prop()
    tally.verdict("layouts")
