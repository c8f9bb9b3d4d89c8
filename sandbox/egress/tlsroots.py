"""The host's trusted roots for verifying upstream servers, without parsing
them all up front.  Proxy process only (``sandbox.egress.tlsinspect``).

OpenSSL's default trust is a bundle file *and* a hashed directory (one link
per root, named after its subject's hash), both named by
``ssl.get_default_verify_paths`` (``SSL_CERT_FILE`` and ``SSL_CERT_DIR``
included).  ``ssl.create_default_context()`` parses every root in the file
as it starts, about 21 ms for Debian's 144, and an inspecting run's first
request waits for it.  The directory alone is read on demand: a handshake
looks up only the issuers it needs.

Trusting the directory alone is never wider than the default, which
trusts the directory too.  It is narrower if the file holds a root that
the directory does not (a certificate appended to the bundle by hand):
then the file is loaded as before.  That is judged by counting: the file's
certificates against the directory's hash links (``update-ca-certificates``
and ``openssl rehash`` make one link per certificate).  A miscount can only
make a server fail verification (refused in words), never pass one.
"""

from __future__ import annotations

import os
import re
import ssl

_HASH_LINK = re.compile(r"[0-9a-f]{8}\.[0-9]+")
_MAX_BUNDLE = 16 << 20  # a bundle bigger than this is loaded the ordinary way


def lazy_capath() -> str | None:
    """The hashed directory that holds every default root, or None (load the file)."""
    paths = ssl.get_default_verify_paths()
    capath = paths.capath
    if not capath or not os.path.isdir(capath):
        return None
    try:
        links = sum(1 for name in os.listdir(capath) if _HASH_LINK.fullmatch(name))
    except OSError:
        return None
    if not links:
        return None  # a directory without hash links (Fedora's) answers no lookup
    if paths.cafile:  # get_default_verify_paths: None when the file does not exist
        try:
            if os.path.getsize(paths.cafile) > _MAX_BUNDLE:
                return None
            with open(paths.cafile, "rb") as fh:
                certs = fh.read().count(b"-----BEGIN CERTIFICATE-----")
        except OSError:
            return None
        if certs > links:
            return None
    return capath


def host_roots_context() -> ssl.SSLContext:
    """A client context trusting the host's default roots (see above)."""
    capath = lazy_capath()
    if capath is None:
        return ssl.create_default_context()
    # with capath given, create_default_context loads only that (not the defaults)
    return ssl.create_default_context(capath=capath)
