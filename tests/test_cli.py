"""The CLI surface end to end: options, explain, profiles, readonly, weakenings."""

from __future__ import annotations

import json
import os
import subprocess

from conftest import sandbox_exe


def cli(senv, *args: str, cwd=None) -> subprocess.CompletedProcess:
    senv.finish()
    return subprocess.run(senv.who.prefix() + [sandbox_exe(), *args], cwd=cwd or senv.ws,
                          env=senv.environ(), capture_output=True, text=True, timeout=60)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 125, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sandbox: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def test_allow_write_refuses_root(senv):
    line = one_error_line(cli(senv, "run", "--allow-write", "/", "--", "true"))
    assert "whole host writable" in line


def test_allow_write_refuses_missing_path(senv):
    line = one_error_line(cli(senv, "run", "--allow-write", str(senv.base / "nope"), "--", "true"))
    assert "no such file or directory" in line


def test_allow_write_makes_one_more_path_writable(senv):
    extra = senv.base / "extra"
    extra.mkdir()
    script = f"echo ok > {extra}/made"
    assert senv.sh(script).returncode != 0  # not writable by default
    assert not (extra / "made").exists()
    r = senv.sh(script, args=["--allow-write", str(extra)])
    assert r.returncode == 0, r.stderr
    assert (extra / "made").read_text() == "ok\n"


def test_allow_write_keeps_protected_paths_read_only(senv):
    extra = senv.base / "extra"
    (extra / ".vscode").mkdir(parents=True)
    r = senv.sh(f"echo x > {extra}/.vscode/tasks.json", args=["--allow-write", str(extra)])
    assert r.returncode != 0
    assert not (extra / ".vscode" / "tasks.json").exists()


def test_unprotect_is_explicit_and_shown(senv):
    (senv.ws / ".vscode").mkdir()
    blocked = senv.sh("echo x > .vscode/settings.json")
    assert blocked.returncode != 0
    r = senv.sh("echo x > .vscode/settings.json", args=["--unprotect", ".vscode"])
    assert r.returncode == 0, r.stderr
    shown = cli(senv, "explain", "--unprotect", ".vscode")
    assert shown.returncode == 0, shown.stderr
    assert "WEAKENED" in shown.stdout and "--unprotect" in shown.stdout
    assert "UNPROTECTED" in shown.stdout


def test_readonly_profile_writes_nothing(senv):
    (senv.ws / "file").write_text("before\n")
    r = senv.sh("echo after > file; echo y > new; echo z > /tmp/t; cat file",
                args=["--profile", "readonly"])
    assert r.stdout == b"before\n"
    assert (senv.ws / "file").read_text() == "before\n"
    assert not (senv.ws / "new").exists()
    assert b"Read-only file system" in r.stderr


def test_explain_json_describes_the_run(senv):
    (senv.ws / ".claude").mkdir()
    r = cli(senv, "explain", "--json", "--", "make")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["profile"]["name"] == "default"
    assert doc["network"] == "none"
    assert doc["argv"][-1] == "make" and doc["argv"][-2] == "--"
    assert str(senv.ws / ".claude") in doc["protected_read_only"]
    assert doc["workspace"] == str(senv.ws)
    assert doc["weakenings"] == []


def test_dry_run_prints_argv_and_runs_nothing(senv):
    r = senv.run(["touch", "made"], args=["--dry-run"])
    assert r.returncode == 0
    assert b"bwrap" in r.stdout and r.stdout.strip().endswith(b"touch made")
    assert not (senv.ws / "made").exists()


def test_profiles_list_and_show(senv):
    listed = cli(senv, "profiles", "list")
    assert listed.returncode == 0
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert {"default", "readonly"} <= set(names)
    shown = cli(senv, "profiles", "show", "readonly")
    assert shown.returncode == 0
    assert 'extends = "default"' in shown.stdout and "[filesystem]" in shown.stdout


def test_user_profile_by_name_extends_default(senv):
    cfg = senv.home / ".config" / "sandbox" / "profiles"
    cfg.mkdir(parents=True)
    (cfg / "mine.toml").write_text('extends = "default"\n[filesystem]\n'
                                   'deny_read = ["${workspace}/private"]\n')
    (senv.ws / "private").mkdir()
    (senv.ws / "private" / "notes").write_text("secret notes\n")
    assert senv.sh("cat private/notes").stdout == b"secret notes\n"
    r = senv.sh("ls -A private; cat private/notes", args=["--profile", "mine"])
    assert b"secret notes" not in r.stdout


def test_bad_user_profile_is_one_line_and_nothing_runs(senv):
    bad = senv.base / "bad.toml"
    bad.write_text('extends = "default"\n[filesystem]\nwritable = "/x"\n')
    r = cli(senv, "run", "--profile", str(bad), "--", "touch", "made")
    line = one_error_line(r)
    assert line == (f"sandbox: profile error: {bad}:3: key 'filesystem.writable': must be a "
                    "list of absolute paths (a list of strings)")
    assert not (senv.ws / "made").exists()


def test_report_for_a_tool_error(senv):
    report = senv.base / "report.json"
    r = cli(senv, "run", "--report", str(report), "--profile", "no-such-profile", "--", "true")
    one_error_line(r)
    doc = json.loads(report.read_text())
    assert doc["outcome"] == "error" and doc["exit_status"] == 125
    assert "unknown profile" in doc["error"]["message"]


def test_report_is_never_written_through_a_planted_symlink(senv):
    victim = senv.base / "victim.txt"
    victim.write_text("precious\n")
    report = senv.ws / "report.json"
    r = senv.sh(f"ln -s {victim} report.json", args=["--report", str(report)])
    assert r.returncode == 0, r.stderr
    assert victim.read_text() == "precious\n"
    assert not report.is_symlink()
    assert json.loads(report.read_text())["exit_status"] == 0


def test_report_temporary_name_is_not_followed(tmp_path):
    """A symlink planted at the exact temporary name must not be written through."""
    import os

    from sandbox import report

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    target = tmp_path / "r.json"
    os.symlink(victim, f"{target}.{os.getpid()}.tmp")
    report.write(report.open_target(str(target)), {"exit_status": 0})
    assert victim.read_text() == "precious\n"


def test_report_parent_swapped_for_a_symlink_is_not_followed(senv):
    """Red-team finding: replacing the report's parent directory with a symlink sent the
    report (an overwrite) outside the workspace."""
    outside = senv.base / "outside"
    outside.mkdir()
    (outside / "run.json").write_text("precious\n")
    (senv.ws / "reports").mkdir()
    report = senv.ws / "reports" / "run.json"
    r = senv.sh(f"mv reports reports.old && ln -s {outside} reports", args=["--report", str(report)])
    assert r.returncode == 0, r.stderr
    assert (outside / "run.json").read_text() == "precious\n"


def test_workspace_under_tmp_is_the_real_host_directory(senv):
    """/tmp is private inside, but a workspace under it is mounted on top of that."""
    import shutil
    import tempfile

    ws = tempfile.mkdtemp(prefix="sbx-ws-", dir="/tmp")
    try:
        os.chmod(ws, 0o755)
        if senv.who.uid != os.getuid():
            os.chown(ws, senv.who.uid, senv.who.gid)
        r = senv.run(["sh", "-c", "pwd; echo made > inside.txt; ls /tmp"], cwd=ws)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.decode().splitlines()
        assert lines[0] == ws
        assert open(os.path.join(ws, "inside.txt")).read() == "made\n"
        assert lines[1:] == [os.path.basename(ws)]  # nothing else of the host's /tmp
    finally:
        shutil.rmtree(ws, ignore_errors=True)


def test_option_missing_its_value_is_an_error(senv):
    r = cli(senv, "run", "--unprotect", "--", "touch", "made")
    line = one_error_line(r)
    assert "--unprotect needs a value" in line
    assert not (senv.ws / "made").exists()


def test_unknown_syscall_name_in_a_profile_is_refused(senv):
    profile = senv.base / "p.toml"
    profile.write_text('extends = "default"\n[syscalls]\ndeny = ["ptrce"]\n')
    line = one_error_line(cli(senv, "run", "--profile", str(profile), "--", "true"))
    assert "unknown syscall 'ptrce'" in line


def test_bad_kill_grace_and_report_dir_fail_before_the_command(senv):
    senv.finish()
    env = senv.environ(SANDBOX_KILL_GRACE="5s")
    r = subprocess.run(senv.who.prefix() + [sandbox_exe(), "run", "--", "touch", "made"],
                       cwd=senv.ws, env=env, capture_output=True, text=True, timeout=60)
    assert "SANDBOX_KILL_GRACE" in one_error_line(r)
    r = cli(senv, "run", "--report", str(senv.base / "missing" / "r.json"), "--", "touch", "made")
    assert "--report" in one_error_line(r)
    assert not (senv.ws / "made").exists()
