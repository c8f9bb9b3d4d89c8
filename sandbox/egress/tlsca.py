"""The run's own certificate authority, for TLS inspection.  Proxy process only.

``RunCA`` is made when a run whose profile inspects TLS starts, inside the
egress proxy process (``sandbox.egress.session._proxy_main``).  Its private key is
never serialised: it exists only as a ``cryptography`` key object in this
process's memory, which lives in the host's pid namespace (the command
cannot see it in /proc) and dies with the run.  Only the CA *certificate*
leaves the process, to be trusted inside the sandbox (``sandbox.egress.tlstrust``).

The CA carries a name constraint: it can vouch only for the hosts the
profile inspects, so even a leaked key, or a client that trusts the run's
bundle for something else, cannot be fooled about any other name.

Leaf certificates are minted per host on first use and cached for the run,
all with one leaf key of their own (generating a key per host would cost
time and buy nothing: the key never leaves this process either).

Why this module and no other imports ``cryptography``: its key code costs
about 12 ms to import (``typing`` most of it, which the proxy's HTTP code
loads anyway), which only runs that inspect TLS should pay (and pay in this
process, alongside the start of bwrap).  Not ``cryptography.x509``: that
package loads every x509 module, about 22 ms more, so the two certificates
are laid out by ``sandbox.egress.x509der`` and only signed here.
"""

from __future__ import annotations

import _thread  # not threading: 3 ms to import, for a lock, before the CA is out
import os
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from sandbox.egress import x509der

# Long enough for any run; a clock set a little wrong inside must not matter.
_VALID_BEFORE = 3600  # seconds (an hour)
_VALID_FOR = 30 * 86400  # seconds (30 days)
MAX_LEAVES = 256  # TLS contexts kept (a wildcard rule can name many hosts; more are made again)


def _point(key) -> bytes:
    """The uncompressed P-256 public point (65 bytes)."""
    pub = key.public_key().public_numbers()
    return b"\x04" + pub.x.to_bytes(32, "big") + pub.y.to_bytes(32, "big")


class _SHA256ECDSA(ec.ECDSA):
    """ECDSA with SHA-256, randomised (not RFC 6979), as ``ec.ECDSA(hashes.SHA256())``.

    ``ECDSA.__init__`` imports cryptography's OpenSSL backend module (about
    6 ms, ciphers and RSA padding with it) only to check that deterministic
    signing is supported, which is not asked for here.  The key's ``sign``
    reads just the two properties below; ``_sign`` falls back to the real
    constructor should a release want more.
    """

    def __init__(self) -> None:  # noqa: D107 - nothing to check (see above)
        pass

    @property
    def algorithm(self):
        return _SHA256

    @property
    def deterministic_signing(self) -> bool:
        return False


_SHA256 = hashes.SHA256()


def _key_id(point: bytes) -> bytes:
    """RFC 5280 4.2.1.2 method 1: SHA-1 of the public key's bits (not hashlib: 2 ms to import)."""
    digest = hashes.Hash(hashes.SHA1())
    digest.update(point)
    return digest.finalize()


def _serial() -> int:
    """159 random bits: positive, at most 20 bytes (RFC 5280 4.1.2.2)."""
    return int.from_bytes(os.urandom(20), "big") >> 1


class RunCA:
    """A CA for one run: ``cert_pem`` to trust, ``server_context(host)`` to serve."""

    def __init__(self, hosts: list[str]) -> None:
        """``hosts``: the inspected rules' hosts (names, ``*.suffix`` patterns, IPs)."""
        now = time.time()
        self._not_before, self._not_after = now - _VALID_BEFORE, now + _VALID_FOR
        self._key = ec.generate_private_key(ec.SECP256R1())
        point = _point(self._key)
        # a different name each run: a bundle left over from another run
        # can never be mistaken for this one
        self._name = x509der.name(O="sandbox", CN=f"sandbox run CA {os.urandom(6).hex()}")
        self._key_id = _key_id(point)
        self._ecdsa = _SHA256ECDSA()
        der = x509der.ca_certificate(subject=self._name, point=point, key_id=self._key_id,
                                     serial=_serial(),
                                     not_before=self._not_before, not_after=self._not_after,
                                     permitted=list(hosts), sign=self._sign)
        self.cert_pem = x509der.pem(der)
        self._contexts: dict = {}  # host -> ssl.SSLContext
        self._lock = _thread.allocate_lock()
        # the leaf key is made on first use, after the CA's certificate is
        # out: the wrapper waits only for the CA
        self._leaf: tuple | None = None  # (key, its PEM)

    def _sign(self, data: bytes) -> bytes:
        try:
            return self._key.sign(data, self._ecdsa)
        except Exception:  # noqa: BLE001 - a release that wants more than the shortcut gives
            if type(self._ecdsa) is ec.ECDSA:
                raise
            self._ecdsa = ec.ECDSA(_SHA256)
            return self._key.sign(data, self._ecdsa)

    def _leaf_key(self) -> tuple:
        with self._lock:
            if self._leaf is None:
                key = ec.generate_private_key(ec.SECP256R1())
                self._leaf = (key, _p256_key_pem(key))
            return self._leaf

    def leaf_pem(self, host: str) -> bytes:
        """A certificate for ``host`` (a normalised name or IP), signed by this CA."""
        der = x509der.leaf_certificate(host=host, issuer=self._name, issuer_key_id=self._key_id,
                                       point=_point(self._leaf_key()[0]), serial=_serial(),
                                       not_before=self._not_before, not_after=self._not_after,
                                       sign=self._sign)
        return x509der.pem(der)

    def server_context(self, host: str):
        """The client-facing TLS context for ``host``, made once per host.

        HTTP/1.1 only (ALPN): the proxy re-frames requests with h11.
        """
        with self._lock:
            ctx = self._contexts.get(host)
            if ctx is not None:
                return ctx
            if len(self._contexts) >= MAX_LEAVES:
                self._contexts.clear()  # bounded memory; they are cheap to make again
        import ssl  # not before the CA's certificate is out: the wrapper waits for it

        chain = self.leaf_pem(host) + self.cert_pem
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["http/1.1"])
        _load_chain(ctx, chain, self._leaf_key()[1])
        with self._lock:
            return self._contexts.setdefault(host, ctx)


# SEC 1 ECPrivateKey, DER, for a P-256 key (RFC 5915): version 1, the 32-byte
# private value, the curve's OID, the uncompressed public point.
_P256_HEAD = bytes.fromhex("307702010104 20")
_P256_CURVE = bytes.fromhex("a00a 0608 2a8648ce3d030107 a144 034200 04")


def _p256_key_pem(key) -> bytes:
    """The leaf key as PEM for ``ssl``, encoded here: cryptography's own
    ``private_bytes`` loads its whole serialization package (about 10 ms of
    CPU, SSH key code and ``dataclasses`` included) for these 121 bytes."""
    der = (_P256_HEAD + key.private_numbers().private_value.to_bytes(32, "big") + _P256_CURVE
           + _point(key)[1:])
    return x509der.pem(der, "EC PRIVATE KEY")


def _load_chain(ctx, chain: bytes, key: bytes) -> None:
    """``load_cert_chain`` from memory.

    The ssl module reads certificates and keys only from files; anonymous
    memory files (memfd) are files without a place on any disk, reachable
    only through this process's own descriptors.
    """
    fds = []
    try:
        for label, data in (("sandbox-leaf", chain), ("sandbox-leaf-key", key)):
            fd = os.memfd_create(label, os.MFD_CLOEXEC)
            fds.append(fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        ctx.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
    finally:
        for fd in fds:
            os.close(fd)
