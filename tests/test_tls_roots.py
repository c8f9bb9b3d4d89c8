"""Upstream verification against the host's roots, read on demand (sandbox.egress.tlsroots):
the same servers pass and fail as with OpenSSL's defaults, without parsing
the whole bundle when the proxy starts."""

from __future__ import annotations

import shutil
import ssl
import subprocess

import pytest

tlsca = pytest.importorskip("sandbox.egress.tlsca")
from test_tls_rules import _handshake  # noqa: E402

from sandbox.egress import tlsroots  # noqa: E402

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="needs openssl (for the subject hash)")


def _link(directory, ca) -> None:
    """What update-ca-certificates / openssl rehash make: <subject hash>.0."""
    pem = directory.parent / "tmp.pem"
    pem.write_bytes(ca.cert_pem)
    digest = subprocess.run([OPENSSL, "x509", "-hash", "-noout", "-in", str(pem)],
                            capture_output=True, text=True, check=True).stdout.strip()
    (directory / f"{digest}.0").write_bytes(ca.cert_pem)


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """Two roots: ``a`` in both the bundle and the hashed directory, ``b`` nowhere yet."""
    a, b = tlsca.RunCA(["a.test"]), tlsca.RunCA(["b.test"])
    directory = tmp_path / "certs"
    directory.mkdir()
    _link(directory, a)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(a.cert_pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("SSL_CERT_DIR", str(directory))
    return a, b, bundle, directory


def test_the_directory_is_read_on_demand_and_trusts_what_the_defaults_trust(roots):
    a, b, _bundle, directory = roots
    assert tlsroots.lazy_capath() == str(directory)
    ctx = tlsroots.host_roots_context()
    assert ctx.cert_store_stats()["x509_ca"] == 0  # nothing parsed up front
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    _handshake(a.server_context("a.test"), ctx, "a.test")
    with pytest.raises(ssl.SSLCertVerificationError):  # b is no root of this host
        _handshake(b.server_context("b.test"), ctx, "b.test")
    with pytest.raises(ssl.SSLCertVerificationError):  # nor is a valid for another name
        _handshake(a.server_context("b.test"), ctx, "b.test")
    # the defaults agree on both
    default = ssl.create_default_context()
    _handshake(a.server_context("a.test"), default, "a.test")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(b.server_context("b.test"), default, "b.test")


def test_a_root_only_in_the_bundle_keeps_the_bundle_loaded(roots):
    """A certificate appended to the bundle by hand has no hash link: the
    directory alone would not trust it, so the file is parsed as before."""
    a, b, bundle, _directory = roots
    bundle.write_bytes(a.cert_pem + b.cert_pem)
    assert tlsroots.lazy_capath() is None
    ctx = tlsroots.host_roots_context()
    assert ctx.cert_store_stats()["x509_ca"] == 2
    _handshake(b.server_context("b.test"), ctx, "b.test")
    _handshake(a.server_context("a.test"), ctx, "a.test")


def test_a_directory_without_hash_links_is_not_used(roots, tmp_path, monkeypatch):
    a, _b, _bundle, _directory = roots
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.pem").write_bytes(a.cert_pem)  # Fedora's /etc/pki/tls/certs: no links
    monkeypatch.setenv("SSL_CERT_DIR", str(plain))
    assert tlsroots.lazy_capath() is None
    _handshake(a.server_context("a.test"), tlsroots.host_roots_context(), "a.test")
    monkeypatch.setenv("SSL_CERT_DIR", f"{plain}:{tmp_path}")  # a list: left to OpenSSL
    assert tlsroots.lazy_capath() is None
