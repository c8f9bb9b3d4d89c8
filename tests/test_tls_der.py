"""The run CA's certificates, laid out by hand (sandbox.egress.x509der): read back by
cryptography and OpenSSL exactly as cryptography's own builder would make them."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import sys

import pytest

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from sandbox.egress import tlsca, x509der  # noqa: E402

OPENSSL = shutil.which("openssl")
HOSTS = ["api.test", "*.files.test", "127.0.0.1", "::1"]


def test_the_ca_certificate_reads_back_as_the_ca_it_was_meant_to_be():
    ca = tlsca.RunCA(HOSTS)
    cert = x509.load_pem_x509_certificate(ca.cert_pem)
    pub = ca._key.public_key()
    assert cert.version == x509.Version.v3
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value == "sandbox"
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value.startswith(
        "sandbox run CA ")
    assert cert.public_key() == pub
    assert 0 < cert.serial_number < 1 << 159
    lasts = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lasts.days == 30 and lasts.seconds == 3600
    cert.verify_directly_issued_by(cert)  # self-signed, ECDSA with SHA-256
    assert cert.signature_hash_algorithm.name == "sha256"
    ext = cert.extensions
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert ku.value.digital_signature and not ku.value.key_encipherment
    assert (ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
            == x509.SubjectKeyIdentifier.from_public_key(pub))
    nc = ext.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    assert nc.value.permitted_subtrees == [
        x509.DNSName("api.test"), x509.DNSName("files.test"),
        x509.IPAddress(ipaddress.ip_network("127.0.0.1/32")),
        x509.IPAddress(ipaddress.ip_network("::1/128"))]
    assert nc.value.excluded_subtrees is None
    # names only: every address excluded (no permitted address would leave them all open)
    only_names = x509.load_pem_x509_certificate(tlsca.RunCA(["api.test"]).cert_pem)
    assert only_names.extensions.get_extension_for_class(x509.NameConstraints).value \
        .excluded_subtrees == [x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
                               x509.IPAddress(ipaddress.ip_network("::/0"))]
    assert b"PRIVATE" not in ca.cert_pem


@pytest.mark.parametrize("host", ["api.test", "a.files.test", "127.0.0.1", "::1"])
def test_a_leaf_reads_back_as_a_server_certificate_for_its_host(host):
    ca = tlsca.RunCA(HOSTS)
    issuer = x509.load_pem_x509_certificate(ca.cert_pem)
    leaf = x509.load_pem_x509_certificate(ca.leaf_pem(host))
    leaf.verify_directly_issued_by(issuer)
    assert leaf.issuer == issuer.subject
    assert leaf.public_key() == ca._leaf_key()[0].public_key()
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    try:
        assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(host)]
        assert list(leaf.subject) == []  # no common name for an address
        assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical
    except ValueError:
        assert san.get_values_for_type(x509.DNSName) == [host]
        assert leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == host
    bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        x509.ExtendedKeyUsageOID.SERVER_AUTH]
    assert (leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
            == x509.AuthorityKeyIdentifier.from_issuer_public_key(ca._key.public_key()))
    assert leaf.not_valid_before_utc == issuer.not_valid_before_utc


@pytest.mark.skipif(OPENSSL is None, reason="needs openssl")
def test_openssl_verifies_leaves_inside_the_constraints_and_refuses_others(tmp_path):
    ca = tlsca.RunCA(["api.test", "*.files.test", "127.0.0.1"])
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)

    def verify(host: str, *check: str) -> subprocess.CompletedProcess:
        (tmp_path / "leaf.pem").write_bytes(ca.leaf_pem(host))
        return subprocess.run([OPENSSL, "verify", "-x509_strict", "-purpose", "sslserver",
                               "-CAfile", str(tmp_path / "ca.pem"), *check,
                               str(tmp_path / "leaf.pem")], capture_output=True, text=True)

    for host, check in (("api.test", "-verify_hostname"), ("x.files.test", "-verify_hostname"),
                        ("127.0.0.1", "-verify_ip")):
        done = verify(host, check, host)
        assert done.returncode == 0, done.stdout + done.stderr
    for host in ("other.test", "files.test.evil", "10.0.0.1"):
        done = verify(host)
        assert done.returncode != 0 and "subtree" in (done.stdout + done.stderr), host


def test_long_contents_and_far_dates_are_encoded_as_der():
    """Lengths over 127 and 255 bytes (a profile that inspects many hosts),
    INTEGERs with the top bit set, GeneralizedTime from 2050 on."""
    key = ec.generate_private_key(ec.SECP256R1())
    point = tlsca._point(key)
    hosts = [f"host{i}.example.test" for i in range(300)]
    der = x509der.ca_certificate(
        subject=x509der.name(CN="x" * 200), point=point, key_id=tlsca._key_id(point),
        serial=(1 << 159) - 1,
        not_before=0, not_after=4102444800,  # 2100-01-01
        permitted=hosts, sign=lambda d: key.sign(d, ec.ECDSA(hashes.SHA256())))
    cert = x509.load_der_x509_certificate(der)
    cert.verify_directly_issued_by(cert)
    assert cert.serial_number == (1 << 159) - 1
    assert cert.not_valid_after_utc.year == 2100 and cert.not_valid_before_utc.year == 1970
    assert [n.value for n in cert.extensions.get_extension_for_class(
        x509.NameConstraints).value.permitted_subtrees] == hosts
    assert x509der.integer(0) == b"\x02\x01\x00" and x509der.integer(128) == b"\x02\x02\x00\x80"
    with pytest.raises(UnicodeEncodeError):  # a dNSName is ASCII: A-labels only
        x509der.general_name("bücher.test")


def test_making_the_ca_and_a_leaf_imports_no_more_than_it_needs():
    """cryptography.x509 costs about 22 ms more to import, and cryptography's
    OpenSSL backend module (ECDSA's constructor) 6 ms, which an inspecting
    run would wait for before bwrap starts."""
    code = ("import sys\nfrom sandbox.egress import tlsca\nca = tlsca.RunCA(['api.test'])\n"
            "ca.server_context('api.test')\n"
            "print(sorted(m for m in sys.modules if m.startswith(("
            "'cryptography.x509', 'cryptography.hazmat.backends.openssl', 'email')) "
            "or m in ('hashlib', 'threading')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_signing_falls_back_to_cryptographys_own_ecdsa_if_the_shortcut_is_refused():
    class Refused(tlsca._SHA256ECDSA):
        @property
        def algorithm(self):
            raise AttributeError("a release that reads something else")

    ca = tlsca.RunCA(["api.test"])
    ca._ecdsa = Refused()
    leaf = x509.load_pem_x509_certificate(ca.leaf_pem("api.test"))
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_pem))
    assert type(ca._ecdsa) is ec.ECDSA


def test_the_proxys_warm_start_loads_no_module_it_does_not_need():
    """What an inspecting proxy does before the first request (sandbox.egress.session:
    the CA, the inspector, the host's roots, the named hosts' leaves): not
    cryptography.x509 (22 ms), not sandbox.resources and pathlib (2 ms,
    only for a refused handshake's message)."""
    code = ("import sys\nfrom sandbox.egress import session as egress, tlsca, tlsinspect\n"
            "ca = tlsca.RunCA(['api.test'])\n"
            "rules = egress.build_rules({'allow': [['api.test', [443], [], [], 'p', True, '']],"
            " 'deny': [], 'hosts': []})\n"
            "tlsinspect.Inspector(ca).warm(rules)\n"
            "print(sorted(m for m in ('cryptography.x509', 'sandbox.resources', 'pathlib', "
            "'hashlib', 'email.utils') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
