#!/usr/bin/env python3
"""Rewrite the Seatbelt goldens (tests/data/seatbelt/) after a deliberate change.

    .venv/bin/python scripts/seatbelt_goldens.py          # rewrite them
    .venv/bin/python scripts/seatbelt_goldens.py --check  # exit 1 if any differs

One ``NAME.sb`` (the profile text) and ``NAME.params`` (its -D parameters,
KEY=VALUE per line) per shipped profile, built for the made-up Mac in
tests/seatbelt_support.py.  Review the diff before committing: it is the
whole of what changed on macOS.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# the source tree's code and seatbelt/base.sb, not an installed copy; and
# only the shipped profiles, never one of the same name in the user's config
sys.path[:0] = [str(REPO), str(REPO / "tests")]
os.environ["XDG_CONFIG_HOME"] = str(REPO / "tests" / "data" / "no-user-config")

import seatbelt_support as support  # noqa: E402


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    support.GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    differ = []
    for name in support.shipped_profiles():
        sb = support.golden(name)
        for path, text in ((support.GOLDEN_DIR / f"{name}.sb", sb.sbpl),
                           (support.GOLDEN_DIR / f"{name}.params", support.params_text(sb.params))):
            old = path.read_text(encoding="utf-8") if path.exists() else None
            if old == text:
                continue
            differ.append(path.name)
            if not check:
                path.write_text(text, encoding="utf-8")
    verb = "differ" if check else "rewritten"
    print(f"{len(differ)} golden file(s) {verb}" + (f": {', '.join(differ)}" if differ else ""))
    return 1 if check and differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
