"""Red team: ``sandbox install-hook`` corrupting files it should not touch.

* ``--project`` writes into the current project, which is untrusted input
  (a cloned repository): a ``.claude/settings.local.json`` (or ``.codex``,
  ``.gemini``, ``.opencode/plugins/sandbox.js``) shipped as a symlink to a
  file outside the project made the install write there (here a missing
  ``~/.ssh/config`` came into being holding JSON).
* Run as root for a user (``sudo -E``), the file came back owned by root,
  mode 0600: the user's agent could no longer read it (nor the hook).
* A settings value that JSON can spell but Python reads as infinity
  (``1e400``) was written back as ``Infinity``, which is not JSON: the
  agent can no longer read its settings (and with them the hook).
"""

from __future__ import annotations

import json
import os

import pytest
from test_agentconfig import PROJECT_FILES, USER_FILES, install

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("agent", [*PROJECT_FILES, "opencode"])
def test_project_install_does_not_follow_a_symlink_out_of_the_project(senv, agent):
    rel = PROJECT_FILES.get(agent, ".opencode/plugins/sandbox.js")
    target = senv.home / ".ssh" / "config"  # not there yet
    target.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(target.parent, 0o777)
    link = senv.ws / rel
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    r = install(senv, agent, "--project")
    assert not target.exists(), target.read_text()
    assert r.returncode != 0
    assert "outside the project" in r.stderr.decode()


@pytest.mark.parametrize("agent", list(USER_FILES))
def test_a_huge_number_does_not_become_invalid_json(senv, agent):
    path = senv.home / USER_FILES[agent]
    path.parent.mkdir(parents=True)
    original = '{"limits": {"big": 1e400}, "model": "x"}\n'
    path.write_text(original)
    os.chmod(path, 0o666)
    r = install(senv, agent)
    text = path.read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} written: not JSON"))
    assert r.returncode != 0 and text == original
    assert "nothing was changed" in r.stderr.decode()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run install-hook for another user")
def test_root_install_keeps_the_owner_of_the_users_settings(senv):
    """``sudo -E sandbox install-hook claude-code``: the file was replaced by
    one owned by root, mode 0600; the user's agent could no longer read its
    settings, and with them the hook."""
    import pwd
    import subprocess

    from conftest import sandbox_exe

    user = pwd.getpwnam("sbxtest")
    path = senv.home / USER_FILES["claude-code"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"model": "x"}\n')
    os.chmod(path, 0o600)
    os.chown(path, user.pw_uid, user.pw_gid)
    r = subprocess.run([sandbox_exe(), "install-hook", "claude-code"], capture_output=True,
                       env={**os.environ, "HOME": str(senv.home)}, cwd=senv.ws, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    st = path.stat()
    assert (st.st_uid, st.st_gid) == (user.pw_uid, user.pw_gid)
    assert "hooks" in json.loads(path.read_text())
