"""``sandbox doctor`` and the one-line ``userns_blocked`` error, on this host and
under a simulated container without user namespaces (tests/nouserns.py)."""

from __future__ import annotations

import json
import subprocess

import pytest

import nouserns
from conftest import sandbox_exe

needs_sim = pytest.mark.skipif(nouserns.unavailable() is not None,
                               reason=str(nouserns.unavailable()))
AREAS = ("filesystem", "secrets", "network", "processes", "syscalls", "limits")
SCREEN = 40  # lines: the diagnosis and its fix must fit on one screen


def _doctor(senv, pre: list[str], *args: str) -> subprocess.CompletedProcess:
    senv.finish()
    return subprocess.run(pre + senv.who.prefix() + [sandbox_exe(), "doctor", *args],
                          cwd=senv.ws, env=senv.environ(), capture_output=True, text=True,
                          timeout=60)


def test_doctor_reports_full_enforcement_here(senv):
    r = _doctor(senv, [])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fully enforced" in r.stdout.splitlines()[0]
    for area in AREAS:
        assert any(line.split()[:2] == [area, "enforced"] for line in r.stdout.splitlines()
                   if line.strip()), area
    data = json.loads(_doctor(senv, [], "--json").stdout)
    assert data["full"] is True and data["backend"] == "bwrap" and data["exit_status"] == 0
    assert data["host"]["userns"] == {"ok": True, "cause": "ok",
                                      "detail": "bwrap made its namespaces"}
    assert data["host"]["bwrap_version"].startswith("bubblewrap ")
    assert data["host"]["landlock_abi"] >= 1
    assert {a: g["status"] for a, g in data["guarantees"].items()} == dict.fromkeys(AREAS,
                                                                                    "enforced")


@needs_sim
def test_doctor_names_the_container_seccomp_cause_and_the_narrow_fix(senv):
    r = _doctor(senv, nouserns.prefix())
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout
    assert len(out.splitlines()) <= SCREEN, out
    assert all(len(line) <= 100 or " " not in line.strip() for line in out.splitlines()), out
    # this build has the Landlock fallback: degraded, named, never "fully enforced"
    head = out.splitlines()[0]
    assert "CANNOT be enforced" in head or "only partly enforced" in head, head
    assert "BLOCKED (container_seccomp)" in out
    assert "problem (container_seccomp): a seccomp filter" in out
    fix = out[out.index("\nfix:"):]
    assert "--security-opt seccomp=sandbox-userns.json" in fix
    assert "clone, unshare, mount, umount2, pivot_root" in fix
    # the wide switches are named only as what not to do
    for line in fix.splitlines():
        if "unconfined" in line and "seccomp" in line or "--privileged" in line:
            assert line.strip().startswith("not "), line
    data = json.loads(_doctor(senv, nouserns.prefix(), "--json").stdout)
    assert data["full"] is False and data["exit_status"] == 1
    assert data["host"]["userns"]["cause"] == "container_seccomp"
    assert [p["cause"] for p in data["problems"]] == ["container_seccomp"]
    # no fallback backend in this build: every guarantee is unavailable, never silently less
    if data["backend"] == "none":
        assert all(g["status"] == "unavailable" for g in data["guarantees"].values())
        assert any("fails closed" in n for n in data["notes"])


@needs_sim
def test_run_fails_closed_with_one_line(senv):
    """A profile that requires full enforcement (the default one falls back
    instead, tests/test_fallback.py) fails closed with one line."""
    report = senv.base / "report.json"
    full = senv.base / "full.toml"
    full.write_text('require = "full"\n')
    cmd = [sandbox_exe(), "run", "--profile", str(full), "--report", str(report), "--",
           "touch", "ran"]
    senv.finish()
    bare = subprocess.run(senv.who.prefix() + cmd, cwd=senv.ws, env=senv.environ(),
                          capture_output=True, text=True, timeout=60)
    assert bare.returncode == 0 and (senv.ws / "ran").exists(), bare.stderr  # the control
    (senv.ws / "ran").unlink()
    r = subprocess.run(nouserns.prefix() + senv.who.prefix() + cmd, cwd=senv.ws,
                       env=senv.environ(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 125
    assert not (senv.ws / "ran").exists()
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr  # no "bwrap: ..." line before ours
    assert lines[0].startswith("sandbox: setup error: user namespaces are blocked "
                               "(container_seccomp): ")
    assert "--security-opt seccomp=sandbox-userns.json" in lines[0]
    assert "seccomp=unconfined" not in lines[0].replace("not seccomp=unconfined", "")
    doc = json.loads(report.read_text())
    assert doc["outcome"] == "error" and "container_seccomp" in doc["error"]["message"]


def test_userns_blocked_is_its_own_error():
    from sandbox.errors import SetupError, UsernsBlocked

    err = UsernsBlocked("apparmor", "Ubuntu's AppArmor restricts", "give bwrap a profile")
    assert isinstance(err, SetupError) and err.code == "userns_blocked"
    assert getattr(SetupError, "code", None) != "userns_blocked"  # bwrap missing is not this
    assert "\n" not in err.one_line()


def test_apparmor_fix_is_a_profile_for_bwrap_alone():
    from sandbox import fixes

    lines = fixes.steps("apparmor", "/usr/bin/bwrap")
    text = "\n".join(lines)
    assert "profile bwrap /usr/bin/bwrap flags=(unconfined) {" in text
    assert "  userns," in text and "apparmor_parser -r /etc/apparmor.d/bwrap" in text
    # the host-wide switch comes last, as the fallback
    assert text.index("apparmor_restrict_unprivileged_userns=0") > text.index("userns,")


def test_sysctl_cause_in_a_user_namespace_of_our_own(senv):
    """user.max_user_namespaces is per user namespace: set it to 0 in one of our
    own (the host's value is untouched) and doctor and run name that sysctl."""
    import shutil

    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("util-linux unshare is needed")
    full = senv.base / "full.toml"
    full.write_text('require = "full"\n')
    script = ("echo 0 > /proc/sys/user/max_user_namespaces || exit 99; "
              f"{sandbox_exe()} doctor; echo doctor=$?; "
              f"{sandbox_exe()} run --profile {full} -- touch ran; echo run=$?")
    senv.finish()
    r = subprocess.run(senv.who.prefix() + [unshare, "--user", "--map-root-user", "sh", "-c",
                                            script],
                       cwd=senv.ws, env=senv.environ(), capture_output=True, text=True,
                       timeout=120)
    assert "doctor=1" in r.stdout and "run=125" in r.stdout, r.stdout + r.stderr
    assert "BLOCKED (max_user_namespaces)" in r.stdout
    assert "sudo sysctl -w user.max_user_namespaces=" in r.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "sandbox: setup error: user namespaces are blocked (max_user_namespaces): "), r.stderr
    assert not (senv.ws / "ran").exists()


def test_a_fallback_backend_is_shown_degraded_and_never_healthy(monkeypatch):
    """With a Landlock fallback in the build, blocked namespaces give degraded rows
    (named, exit 1); without one, every row is unavailable.  No host is faked:
    only the build's contents are, since this branch has no fallback module."""
    from sandbox.linux import doctor, hostprobe
    from sandbox.linux.usernsgate import Userns

    host = hostprobe.Host()
    host.userns = Userns(False, "container_seccomp", "refused")
    host.landlock_abi, host.libseccomp = 5, "2.5.4"
    monkeypatch.setattr(doctor, "fallback_available", lambda: True)
    d = doctor.diagnose(host)
    assert d.backend == "landlock (ABI 5) + seccomp" and d.exit_status() == 1
    assert d.rows["secrets"][0] == doctor.DEGRADED and d.rows["syscalls"][0] == doctor.ENFORCED
    assert "not scoped (Landlock ABI 5 < 6)" in d.rows["processes"][1]
    monkeypatch.setattr(doctor, "fallback_available", lambda: False)
    d = doctor.diagnose(host)
    assert d.backend == "none" and {s for s, _ in d.rows.values()} == {doctor.UNAVAILABLE}


def test_doctor_inside_a_sandbox_says_so(senv):
    r = senv.run([sandbox_exe(), "doctor", "--json"])
    assert r.returncode == 1, r.stderr
    data = json.loads(r.stdout)
    assert data["host"]["userns"]["cause"] == "inside_sandbox"
    assert data["problems"][0]["fix"][0].startswith("run the command directly")
