"""The run's own certificate authority, for TLS inspection.  Proxy process only.

``RunCA`` is made when a run whose profile inspects TLS starts, inside the
egress proxy process (``sandbox.egress._proxy_main``).  Its private key is
never serialised: it exists only as a ``cryptography`` key object in this
process's memory, which lives in the host's pid namespace (the command
cannot see it in /proc) and dies with the run.  Only the CA *certificate*
leaves the process, to be trusted inside the sandbox (``sandbox.tlstrust``).

The CA carries a name constraint: it can vouch only for the hosts the
profile inspects, so even a leaked key, or a client that trusts the run's
bundle for something else, cannot be fooled about any other name.

Leaf certificates are minted per host on first use and cached for the run,
all with one leaf key of their own (generating a key per host would cost
time and buy nothing: the key never leaves this process either).

Why this module and no other imports ``cryptography``: its import costs about
40 ms, which only runs that inspect TLS should pay (and pay in this process,
alongside the start of bwrap).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The wrapper waits for this import before bwrap starts (sandbox.egress), so
# only what the CA needs: the public ``serialization`` package also loads
# its SSH key code (and with it ``dataclasses`` and the ciphers), about 10 ms
# of CPU for one name that lives in ``_serialization``, which x509 has
# loaded already (and the leaf key is encoded here: ``_p256_key_pem``).  The
# public package is the fallback should a release move the name.
try:
    from cryptography.hazmat.primitives._serialization import Encoding
except ImportError:  # pragma: no cover - depends on the installed release
    from cryptography.hazmat.primitives.serialization import Encoding

# Long enough for any run; a clock set a little wrong inside must not matter.
_VALID_BEFORE = datetime.timedelta(hours=1)
_VALID_FOR = datetime.timedelta(days=30)
MAX_LEAVES = 256  # TLS contexts kept (a wildcard rule can name many hosts; more are made again)


def _constraint(pattern: str) -> x509.GeneralSubtree | None:
    """The permitted subtree for one inspected rule host (None: cannot be expressed)."""
    try:
        addr = ipaddress.ip_address(pattern)
    except ValueError:
        # "*.example.com" -> example.com and every name under it (RFC 5280
        # dNSName constraints cover the name and its subdomains)
        return x509.DNSName(pattern[2:] if pattern.startswith("*.") else pattern)
    return x509.IPAddress(ipaddress.ip_network(f"{addr}/{addr.max_prefixlen}"))


class RunCA:
    """A CA for one run: ``cert_pem`` to trust, ``server_context(host)`` to serve."""

    def __init__(self, hosts: list[str]) -> None:
        """``hosts``: the inspected rules' hosts (names, ``*.suffix`` patterns, IPs)."""
        now = datetime.datetime.now(datetime.timezone.utc)
        self._not_before, self._not_after = now - _VALID_BEFORE, now + _VALID_FOR
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sandbox"),
            # a different name each run: a bundle left over from another run
            # can never be mistaken for this one
            x509.NameAttribute(NameOID.COMMON_NAME, f"sandbox run CA {os.urandom(6).hex()}"),
        ])
        self._name = name
        names = [c for c in (_constraint(h) for h in dict.fromkeys(hosts)) if c is not None]
        dns = [c for c in names if isinstance(c, x509.DNSName)]
        ips = [c for c in names if isinstance(c, x509.IPAddress)]
        builder = (x509.CertificateBuilder()
                   .subject_name(name).issuer_name(name)
                   .public_key(self._key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(self._not_before).not_valid_after(self._not_after)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                                crl_sign=True, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False,
                                                key_agreement=False, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(
                       self._key.public_key()), critical=False))
        if dns or ips:
            # RFC 5280: a name type with no permitted entry is unconstrained,
            # so without an inspected IP every address is excluded outright
            excluded = []
            if not ips:
                excluded += [x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
                             x509.IPAddress(ipaddress.ip_network("::/0"))]
            builder = builder.add_extension(
                x509.NameConstraints(permitted_subtrees=names or None,
                                     excluded_subtrees=excluded or None), critical=True)
        self._cert = builder.sign(self._key, hashes.SHA256())
        self._ski = x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key())
        self.cert_pem = self._cert.public_bytes(Encoding.PEM)
        self._contexts: dict = {}  # host -> ssl.SSLContext
        self._lock = threading.Lock()
        # the leaf key is made on first use, after the CA's certificate is
        # out: the wrapper waits only for the CA
        self._leaf: tuple | None = None  # (key, its PEM)

    def _leaf_key(self) -> tuple:
        with self._lock:
            if self._leaf is None:
                key = ec.generate_private_key(ec.SECP256R1())
                self._leaf = (key, _p256_key_pem(key))
            return self._leaf

    def leaf_pem(self, host: str) -> bytes:
        """A certificate for ``host`` (a normalised name or IP), signed by this CA."""
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
            # no common name: OpenSSL would check "127.0.0.1" in it against
            # the CA's DNS name constraints
            subject = x509.Name([])
        except ValueError:
            san = x509.DNSName(host)
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])])
        cert = (x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(self._name)
                .public_key(self._leaf_key()[0].public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(self._not_before).not_valid_after(self._not_after)
                .add_extension(x509.SubjectAlternativeName([san]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .add_extension(self._ski, critical=False)
                .sign(self._key, hashes.SHA256()))
        return cert.public_bytes(Encoding.PEM)

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
    import binascii

    pub = key.public_key().public_numbers()
    der = (_P256_HEAD + key.private_numbers().private_value.to_bytes(32, "big") + _P256_CURVE
           + pub.x.to_bytes(32, "big") + pub.y.to_bytes(32, "big"))
    body = binascii.b2a_base64(der, newline=False)
    lines = b"\n".join(body[i:i + 64] for i in range(0, len(body), 64))
    return b"-----BEGIN EC PRIVATE KEY-----\n" + lines + b"\n-----END EC PRIVATE KEY-----\n"


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
