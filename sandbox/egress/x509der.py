"""The DER of the run CA's certificate and its leaves, written by hand.

Why not ``cryptography.x509``: importing that package loads every x509
module (and ``email.utils`` with them), about 22 ms of CPU beyond the key
code, and an inspecting run waits for the CA before bwrap starts
(performance.md in the docs).  The two certificates the proxy makes are fixed
templates with a handful of fields filled in (names, key, serial, dates),
so they are encoded here: a few DER primitives (X.690) and the structure of
RFC 5280, section 4.  Signing stays with ``cryptography``'s key objects
(``sandbox.egress.tlsca``); this module only lays out bytes, and imports nothing
but the standard library.  Tests read every certificate back with
``cryptography.x509`` and OpenSSL (tests/test_tls_der.py).

Everything here is pure: the caller passes the key's public point, a
``sign(data) -> DER signature`` function, random bytes and times.
"""

from __future__ import annotations

import ipaddress
import time


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element: tag, definite length, contents."""
    return bytes([tag]) + _length(len(content)) + content


def seq(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def integer(value: int) -> bytes:
    """A non-negative INTEGER (two's complement: a leading zero when the top bit is set)."""
    if value < 0:
        raise ValueError("negative INTEGER")
    return tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def oid(dotted: str) -> bytes:
    first, second, *rest = (int(p) for p in dotted.split("."))
    out = bytearray([40 * first + second])
    for arc in rest:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return tlv(0x06, bytes(out))


def bit_string(data: bytes) -> bytes:
    return tlv(0x03, b"\x00" + data)


def _time(seconds: float) -> bytes:
    """UTCTime until 2049, GeneralizedTime after (RFC 5280, 4.1.2.5)."""
    t = time.gmtime(int(seconds))
    if t.tm_year < 2050:
        return tlv(0x17, time.strftime("%y%m%d%H%M%SZ", t).encode())
    return tlv(0x18, time.strftime("%Y%m%d%H%M%SZ", t).encode())


_ECDSA_SHA256 = seq(oid("1.2.840.10045.4.3.2"))  # no parameters (RFC 5758)
_P256_SPKI_ALG = seq(oid("1.2.840.10045.2.1"), oid("1.2.840.10045.3.1.7"))
_CN, _O = oid("2.5.4.3"), oid("2.5.4.10")
_TRUE = tlv(0x01, b"\xff")
_SKI, _KU, _SAN, _BC = oid("2.5.29.14"), oid("2.5.29.15"), oid("2.5.29.17"), oid("2.5.29.19")
_NC, _AKI, _EKU = oid("2.5.29.30"), oid("2.5.29.35"), oid("2.5.29.37")
_SERVER_AUTH = oid("1.3.6.1.5.5.7.3.1")
# digitalSignature (bit 0), keyCertSign (5), cRLSign (6): 1000 0110, the
# last (unused) bit dropped as DER wants for a named bit list
_KU_CA = tlv(0x03, b"\x01\x86")


def name(**attrs: str) -> bytes:
    """A Name of single-valued RDNs in the order given: ``O``, ``CN`` (UTF8String)."""
    oids = {"O": _O, "CN": _CN}
    return seq(*(tlv(0x31, seq(oids[k], tlv(0x0C, v.encode("utf-8")))) for k, v in attrs.items()))


def general_name(host: str, constraint: bool = False) -> bytes:
    """dNSName for a name, iPAddress for an address (with an all-ones mask
    in a name constraint, RFC 5280 4.2.1.10).  A name must be ASCII (IA5String):
    the proxy's hosts are normalised to their A-labels before they get here."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return tlv(0x82, host.encode("ascii"))
    packed = addr.packed
    return tlv(0x87, packed + b"\xff" * len(packed) if constraint else packed)


def _extension(ident: bytes, value: bytes, critical: bool = False) -> bytes:
    return seq(ident, *([_TRUE] if critical else []), tlv(0x04, value))


def _certificate(tbs: bytes, sign) -> bytes:
    return seq(tbs, _ECDSA_SHA256, bit_string(sign(tbs)))


def _tbs(serial: int, issuer: bytes, not_before: float, not_after: float, subject: bytes,
         point: bytes, extensions: list[bytes]) -> bytes:
    return seq(tlv(0xA0, integer(2)),  # v3
               integer(serial), _ECDSA_SHA256, issuer, seq(_time(not_before), _time(not_after)),
               subject, seq(_P256_SPKI_ALG, bit_string(point)),
               tlv(0xA3, seq(*extensions)))


def ca_certificate(*, subject: bytes, point: bytes, key_id: bytes, serial: int,
                   not_before: float, not_after: float, permitted: list[str], sign) -> bytes:
    """A self-signed CA for one run: path length 0, name-constrained to ``permitted``.

    ``point``: the uncompressed P-256 public point (65 bytes); ``key_id``:
    its identifier (RFC 5280 4.2.1.2 method 1: SHA-1 of those bytes,
    hashed by the caller with the library that signs).  Without an
    address among ``permitted`` every address is excluded outright: RFC
    5280 leaves a name type with no permitted entry unconstrained.
    """
    extensions = [
        _extension(_BC, seq(_TRUE, integer(0)), critical=True),
        _extension(_KU, _KU_CA, critical=True),
        _extension(_SKI, tlv(0x04, key_id)),
    ]
    hosts = [h[2:] if h.startswith("*.") else h for h in dict.fromkeys(permitted)]
    if hosts:
        # "*.example.com" -> example.com and every name under it (dNSName
        # constraints cover the name and its subdomains)
        trees = [general_name(h, constraint=True) for h in hosts]
        body = tlv(0xA0, b"".join(seq(t) for t in trees))
        if not any(t[0] == 0x87 for t in trees):
            # 0.0.0.0/0 and ::/0: address and mask all zeros
            body += tlv(0xA1, seq(tlv(0x87, bytes(8))) + seq(tlv(0x87, bytes(32))))
        extensions.append(_extension(_NC, seq(body), critical=True))
    return _certificate(_tbs(serial, subject, not_before, not_after, subject, point, extensions),
                        sign)


def leaf_certificate(*, host: str, issuer: bytes, issuer_key_id: bytes, point: bytes,
                     serial: int, not_before: float, not_after: float, sign) -> bytes:
    """A server certificate for one name or address.  An address gets no
    common name: OpenSSL would check "127.0.0.1" in it against the CA's DNS
    name constraints; with the subject empty, the alternative name is
    critical (RFC 5280 4.2.1.6; OpenSSL's strict mode refuses it otherwise)."""
    san = general_name(host)
    subject = seq() if san[0] == 0x87 else name(CN=host[:64])
    extensions = [
        _extension(_SAN, seq(san), critical=san[0] == 0x87),
        _extension(_BC, seq(), critical=True),
        _extension(_EKU, seq(_SERVER_AUTH)),
        _extension(_AKI, seq(tlv(0x80, issuer_key_id))),
    ]
    return _certificate(_tbs(serial, issuer, not_before, not_after, subject, point, extensions),
                        sign)


def pem(der: bytes, label: str = "CERTIFICATE") -> bytes:
    import binascii

    body = binascii.b2a_base64(der, newline=False)
    lines = b"\n".join(body[i:i + 64] for i in range(0, len(body), 64))
    return (f"-----BEGIN {label}-----\n".encode() + lines
            + f"\n-----END {label}-----\n".encode())
