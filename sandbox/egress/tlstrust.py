"""Trusting the run's CA inside the sandbox: the wrapper's side of TLS inspection.

The egress proxy process makes the run's CA (``sandbox.egress.tlsca``) as soon as it
starts and sends back only its certificate, over a pipe.  The wrapper
hands bwrap a combined bundle (the host's system roots, the CA files the
caller's own variables named, and the run's CA) through another pipe,
which bwrap binds read-only *over the system bundle's path* inside the
sandbox (``--ro-bind-data``; the fallback without bwrap gets a file of the
wrapper's own instead).  So clients that use the system's trust store without being told
(OpenSSL's default, Python's ``ssl``, wget, Go, git and curl as built on
Debian) trust the run's CA, and the variables below point everything else
at the same file.  The CA key never leaves the proxy process.

Only runs whose profile inspects some host come here: no other run imports
this module, ``ssl`` or ``cryptography``.
"""

from __future__ import annotations

import os
import select
import time

from sandbox.errors import SetupError

# Where distributions keep the PEM bundle of trusted roots; the first that
# exists is the one replaced inside.
SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Arch, Alpine, Gentoo
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL, CentOS
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
)
# Variables that name a CA bundle, for tools that do not read the system's.
CA_VARIABLES = (
    "SSL_CERT_FILE",  # OpenSSL's default paths: Python ssl/urllib, uv, Go, Ruby, curl (OpenSSL)
    "REQUESTS_CA_BUNDLE",  # Python requests (otherwise certifi's own list)
    "CURL_CA_BUNDLE",  # curl
    "NODE_EXTRA_CA_CERTS",  # Node, npm, yarn, pnpm (added to Node's built-in list)
    "GIT_SSL_CAINFO",  # git over https
    "PIP_CERT",  # pip (otherwise its vendored certifi or truststore)
    "CARGO_HTTP_CAINFO",  # cargo
    "AWS_CA_BUNDLE",  # AWS CLI and SDKs
    "HTTPLIB2_CA_CERTS",  # httplib2 (Google's older Python clients)
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",  # gRPC
    "DENO_CERT",  # Deno
    "BUNDLE_SSL_CA_CERT",  # Ruby bundler
    "COMPOSER_CAFILE",  # PHP composer
    "YARN_HTTPS_CA_FILE_PATH",  # yarn 2+
    "NIX_SSL_CERT_FILE",  # nix
)
MAX_CA_BYTES = 64 * 1024
MAX_EXTRA_BYTES = 4 << 20  # a caller's own bundle carried over
CA_WAIT = 20.0  # seconds for the proxy to make the CA (about 17 ms of CPU here)
_PEM = b"-----BEGIN CERTIFICATE-----"


def system_bundle() -> str:
    """The host's PEM bundle of trusted roots (resolved), or SetupError."""
    for path in SYSTEM_BUNDLES:
        if os.path.isfile(path):
            return os.path.realpath(path)
    raise SetupError("TLS inspection needs the system's bundle of trusted CA certificates, and "
                     f"none of {', '.join(SYSTEM_BUNDLES)} exists; the command was not run",
                     hint="install the ca-certificates package, or remove inspect = true from "
                          "the profile's [[network.allow]] rules")


def read_ca(fd: int, timeout: float = CA_WAIT) -> bytes:
    """The run CA's certificate from the proxy process (it closes the pipe after)."""
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while len(data) <= MAX_CA_BYTES:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise SetupError("the egress proxy did not make the run's CA for TLS inspection "
                                 f"within {timeout:g} s; the command was not run")
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if not data.startswith(_PEM):
        why = data.decode("ascii", "replace").strip()[:300] or "it stopped"
        raise SetupError(f"the egress proxy could not make the run's CA for TLS inspection "
                         f"({why}); the command was not run",
                         hint="check that the Python package 'cryptography' is installed with "
                              "sandbox, or remove inspect = true from the profile")
    return data


class Trust:
    """The combined bundle of one run, bound over the system bundle inside.

    Made in two steps so that the wrapper's share overlaps the proxy's:
    the host's roots (and the caller's own CA files) are read (and, with a
    ``state`` directory, written to a file) while the proxy process is still
    importing ``cryptography`` (``Trust(env, state)``), and only the run
    CA's certificate is added once it arrives (``add_ca``, or
    ``sandbox.egress.session.Session.release`` through bwrap's pipe).  Until then
    the bundle is not bound anywhere.
    """

    def __init__(self, env: dict[str, str], state: str | None) -> None:
        """``state``: where the bundle file goes; None: no file, the roots are
        kept in ``self.roots`` for bwrap's ``--ro-bind-data`` (``argv``)."""
        self.target = system_bundle()
        with open(self.target, "rb") as fh:
            parts = [fh.read()]
        seen = {self.target}
        for name in CA_VARIABLES:  # a caller's own CA (a corporate proxy's) stays trusted
            path = env.get(name)
            real = os.path.realpath(path) if path and os.path.isabs(path) else None
            if real and real not in seen and os.path.isfile(real):
                seen.add(real)
                try:
                    if os.path.getsize(real) <= MAX_EXTRA_BYTES:
                        with open(real, "rb") as fh:
                            parts.append(fh.read())
                except OSError:
                    pass
        self.roots = b"\n".join(p.rstrip(b"\n") for p in parts) + b"\n"
        self.path: str | None = None
        self._fd: int | None = None
        if state is None:
            return
        directory = os.path.join(state, "tls")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.path = os.path.join(directory, f"bundle-{os.getpid()}-{os.urandom(6).hex()}.pem")
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            _write_all(self._fd, self.roots)
        except OSError:
            self.remove()
            raise

    def add_ca(self, ca_pem: bytes) -> None:
        """Append the run CA's certificate: the bundle is complete after this."""
        fd, self._fd = self._fd, None
        try:
            _write_all(fd, ca_pem.rstrip(b"\n") + b"\n")
        finally:
            os.close(fd)

    def env(self) -> dict[str, str]:
        return {name: self.target for name in CA_VARIABLES}

    def argv(self, argv: list[str], status: int | None, seccomp, data_fd: int | None = None):
        """bwrap's argv with the bundle bound over the system's, after every
        other mount (just before ``--chdir``); the option indexes that moved.

        ``data_fd``: the bundle comes through this pipe (``--ro-bind-data``)
        instead of the file: bwrap makes every other mount first and then
        reads it to its end, so the sandbox is set up while the run's CA is
        still being made (``sandbox.egress.session.Session.release`` writes it).
        """
        end = argv.index("--") if "--" in argv else len(argv)
        at = argv.index("--chdir", 1, end) if "--chdir" in argv[1:end] else end
        if data_fd is None:
            bind = ["--ro-bind", self.path, self.target]
        else:  # readable by every uid inside, as the system's bundle is
            bind = ["--perms", "0444", "--ro-bind-data", str(data_fd), self.target]
        argv = [*argv[:at], *bind, *argv[at:]]

        def moved(index: int | None) -> int | None:
            return index + len(bind) if index is not None and index >= at else index

        if seccomp is not None:
            seccomp = (moved(seccomp[0]), seccomp[1])
        return argv, moved(status), seccomp

    def remove(self) -> None:
        """The bundle file is needed only until bwrap has bound it; gone after the run."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.path is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def state_dir(environ) -> str:
    """Where the wrapper keeps its files (sandbox.discover.state_dir's rule)."""
    home = environ.get("HOME") or os.path.expanduser("~")
    base = environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    return os.path.join(os.path.realpath(base), "sandbox")
