"""``--report``: the report only ever replaces a regular file; stream names are streams.

Found by a newcomer's trial: as root, ``--report /dev/stderr`` replaced the
host's /dev/stderr symlink with a regular file (write a temporary file, then
rename it over the target), FIFOs were replaced the same way, and
``/dev/fd/N`` failed after the run with a warning and exit status 0.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest

from conftest import sandbox_exe


def run(senv, *args: str, cwd=None, pass_fds=(), stdout=subprocess.PIPE):
    senv.finish()
    return subprocess.run(senv.who.prefix() + [sandbox_exe(), "run", *args], cwd=cwd or senv.ws,
                          env=senv.environ(), stdout=stdout, stderr=subprocess.PIPE, text=True,
                          timeout=60, pass_fds=pass_fds)


def one_error_line(r) -> str:
    assert r.returncode == 125, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sandbox: usage error: --report"), r.stderr
    return lines[0]


def json_in(text: str) -> dict:
    """The report object in ``text`` (a stream that may carry other lines first)."""
    return json.JSONDecoder().raw_decode(text[text.index("{\n"):])[0]


@pytest.fixture
def host_streams():
    """The host's /dev/stdout and /dev/stderr links, put back if a regression replaced
    them (as root the old code did: every process on the machine then wrote there)."""
    links = {p: os.readlink(p) for p in ("/dev/stdout", "/dev/stderr") if os.path.islink(p)}
    yield links
    for path, target in links.items():
        if not os.path.islink(path) and os.getuid() == 0:
            os.unlink(path)
            os.symlink(target, path)


def test_dev_stderr_is_written_to_and_stays_a_symlink(senv, host_streams):
    """The damage case (as root): /dev/stderr must still be the host's symlink."""
    assert "/dev/stderr" in host_streams, "this host's /dev/stderr is not a symlink"
    r = run(senv, "--report", "/dev/stderr", "--", "sh", "-c", "echo out; echo err >&2")
    assert os.path.islink("/dev/stderr")
    assert os.readlink("/dev/stderr") == host_streams["/dev/stderr"]
    assert r.returncode == 0, r.stderr
    assert r.stdout == "out\n"
    assert r.stderr.startswith("err\n")
    assert json_in(r.stderr)["command"] == ["sh", "-c", "echo out; echo err >&2"]
    assert "sandbox: warning" not in r.stderr


@pytest.mark.parametrize("name", ["-", "/dev/stdout"])
def test_standard_output_names(senv, name, host_streams):
    r = run(senv, "--report", name, "--", "echo", "from the command")
    assert r.returncode == 0, r.stderr
    first, rest = r.stdout.split("\n", 1)
    assert first == "from the command"
    assert json.loads(rest)["exit_status"] == 0
    assert r.stderr == ""


def test_dev_fd_n_writes_to_that_descriptor(senv):
    out = senv.base / "fd.json"
    with open(out, "w") as fh:
        os.set_inheritable(fh.fileno(), True)
        r = run(senv, "--report", f"/dev/fd/{fh.fileno()}", "--", "sh", "-c", "exit 3",
                pass_fds=(fh.fileno(),))
    assert r.returncode == 3, r.stderr
    assert "sandbox: warning" not in r.stderr
    assert json.loads(out.read_text())["exit_status"] == 3


def test_closed_descriptor_is_refused_before_the_command_runs(senv):
    line = one_error_line(run(senv, "--report", "/dev/fd/9", "--", "touch", "made"))
    assert "descriptor 9 is not open" in line
    assert not (senv.ws / "made").exists()


def test_fifo_is_refused_and_left_alone(senv):
    fifo = senv.base / "pipe"
    os.mkfifo(fifo)
    line = one_error_line(run(senv, "--report", str(fifo), "--", "touch", "made"))
    assert "named pipe" in line
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert not (senv.ws / "made").exists()


def test_symlink_is_refused_and_left_alone(senv):
    target = senv.base / "real.json"
    target.write_text("keep\n")
    link = senv.base / "link.json"
    link.symlink_to(target)
    line = one_error_line(run(senv, "--report", str(link), "--", "touch", "made"))
    assert "symbolic link" in line
    assert link.is_symlink() and target.read_text() == "keep\n"
    assert not (senv.ws / "made").exists()


@pytest.mark.parametrize("kind", ["char-device", "directory"])
def test_devices_and_directories_are_refused(senv, kind):
    if kind == "directory":
        path = str(senv.ws)
    elif senv.who.uid == 0:
        # a copy of /dev/null in the test directory: if this regressed, the
        # copy would be replaced, not the device every process on the host uses
        path = str(senv.base / "null")
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    else:
        path = "/dev/null"  # the test user cannot replace anything in /dev
    r = run(senv, "--report", path, "--", "touch", "made")
    one_error_line(r)
    assert not (senv.ws / "made").exists()
    if kind == "char-device":
        assert stat.S_ISCHR(os.lstat(path).st_mode)


def test_report_error_comes_first_even_with_a_bad_profile(senv):
    """A failing run writes a report too: through a checked target, never the raw path."""
    fifo = senv.base / "pipe"
    os.mkfifo(fifo)
    line = one_error_line(run(senv, "--report", str(fifo), "--profile", "no-such", "--", "true"))
    assert "named pipe" in line
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_tool_error_report_on_stderr(senv, host_streams):
    r = run(senv, "--report", "/dev/stderr", "--profile", "no-such", "--", "true")
    assert r.returncode == 125
    assert json_in(r.stderr)["outcome"] == "error"
    assert r.stderr.strip().splitlines()[-1].startswith("sandbox: profile error:")
    assert os.path.islink("/dev/stderr")  # the failure's report did not replace it either


def test_existing_regular_file_is_replaced(senv):
    out = senv.base / "r.json"
    out.write_text("old\n")
    r = run(senv, "--report", str(out), "--", "true")
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["exit_status"] == 0


def test_unwritable_directory_is_refused_before_the_command_runs(senv):
    if senv.who.uid == 0:
        pytest.skip("root can create files in any directory")
    line = one_error_line(run(senv, "--report", "/etc/sbx-report.json", "--", "touch", "made"))
    assert "cannot create files in /etc" in line
    assert not (senv.ws / "made").exists()
