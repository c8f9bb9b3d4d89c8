"""Hatchling build hook: ship the native `sandbox` client (and bwrap's launcher) in the wheel.

`sandbox` is the command users type; native/client.c is a small C program
that hands runs to the warm server (docs/served.md) and otherwise execs
`sandbox-direct`, the Python CLI.  It is compiled here with $CC (default
`cc`), statically when that links, and shipped as a shared script, which
makes the wheel platform-specific (py3-none-<platform>).  Without a working
compiler (or off Linux, where there is no server) the wheel stays pure and
ships native/sandbox.py as `sandbox` instead: every run then goes direct,
a little slower, never different.  native/launch.c becomes
sandbox/_native/launch, which sandbox.runner starts bwrap through.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

FLAGS = ["-O2", "-Wall", "-Wextra", "-s"]
# Static first (one exec, no dynamic loader: faster start); glibc's static
# getpwuid would need the build's NSS libraries at run time, so the client
# does without it there (-DSANDBOX_STATIC).
ATTEMPTS = (["-static", "-DSANDBOX_STATIC"], [])


class CustomBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel":
            return
        self._tmp = tempfile.mkdtemp(prefix="sandbox-client-")
        exe = launch = None
        if sys.platform.startswith("linux"):  # no server elsewhere: the script does the same
            exe = self._compile(os.path.join(self.root, "native", "client.c"),
                                os.path.join(self._tmp, "sandbox"))
            # bwrap's launcher (native/launch.c): inside the package, next to the
            # code that uses it, never on PATH; without it runs fork instead
            launch = self._compile(os.path.join(self.root, "native", "launch.c"),
                                   os.path.join(self._tmp, "launch"))
        if launch is not None:
            build_data.setdefault("force_include", {})[launch] = "sandbox/_native/launch"
        if exe is not None or launch is not None:  # native programs: for this platform only
            build_data["pure_python"] = False
            platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
            build_data["tag"] = f"py3-none-{platform}"
        if exe is None:
            # a copy, made executable: the wheel keeps the file's mode, pip keeps the wheel's
            exe = shutil.copyfile(os.path.join(self.root, "native", "sandbox.py"),
                                  os.path.join(self._tmp, "sandbox"))
            os.chmod(exe, 0o755)
        build_data["shared_scripts"][exe] = "sandbox"

    def finalize(self, version: str, build_data: dict, artifact_path: str) -> None:
        if getattr(self, "_tmp", None):
            shutil.rmtree(self._tmp, ignore_errors=True)

    @staticmethod
    def _compile(source: str, out: str) -> str | None:
        cc = shlex.split(os.environ.get("CC") or "cc")
        error = "no attempt"
        for extra in ATTEMPTS:
            try:
                done = subprocess.run([*cc, *FLAGS, *extra, "-o", out, source],
                                      capture_output=True, text=True, timeout=300)
            except (OSError, subprocess.SubprocessError) as exc:
                error = str(exc)
                continue
            if done.returncode == 0 and os.path.isfile(out):
                return out
            error = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        what = ("shipping the Python 'sandbox' script (every run goes direct)"
                if source.endswith("client.c") else
                "runs start bwrap from a fork of the wrapper instead (a little slower)")
        print(f"sandbox build: warning: cannot compile {os.path.relpath(source)} with "
              f"{' '.join(cc)} ({error}); {what}", file=sys.stderr)
        return None
