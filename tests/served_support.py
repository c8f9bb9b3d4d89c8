"""A minimal client of the warm server's protocol (docs/served.md), in Python.

Not the real client (native/client.c): it skips the client's check of the
server and its rules for going direct, so tests can send what an attacker
would send (any argv, from any context: tests/test_peer.py), hold a
connection silent (tests/test_server.py's 33rd request) or get the raw "F"
(the stale-code test).  As a script it behaves like the real client's served path:
``python served_support.py SOCKET ARGV...`` sends the request with its own
stdio and cwd, forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT as "K" messages and
exits with the "X" status; on "F" it prints ``served_support: fallback``
to stderr and exits 99 (nothing ran); with no answer it exits 98.
"""

from __future__ import annotations

import array
import os
import signal
import socket
import struct
import sys

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def payload(argv: list[str], environ: dict[str, str], umask: int = 0o022,
            ignored: int = 0, blocked: int = 0) -> bytes:
    def strings(items):
        return struct.pack("=I", len(items)) + b"".join(os.fsencode(s) + b"\0" for s in items)

    body = (strings(argv) + strings([f"{k}={v}" for k, v in environ.items()])
            + struct.pack("=IQQ", umask, ignored, blocked))
    return b"SBX1" + struct.pack("=I", len(body)) + body


def send_request(sock: socket.socket, argv, environ, fds=(0, 1, 2), umask=None,
                 ignored: int = 0, blocked: int = 0) -> None:
    if umask is None:
        umask = os.umask(0)
        os.umask(umask)
    cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        data = payload(list(argv), dict(environ), umask, ignored, blocked)
        rights = array.array("i", [*fds, cwd]).tobytes()
        sent = sock.sendmsg([data[:8]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
        assert sent == 8
        sock.sendall(data[8:])
    finally:
        os.close(cwd)


def read_reply(sock: socket.socket) -> tuple[bytes, int] | None:
    """("F"|"X", value), or None when the server closed without a reply."""
    buf = b""
    while len(buf) < 5:
        try:
            chunk = sock.recv(5 - len(buf))
        except InterruptedError:
            continue
        if not chunk:
            return None
        buf += chunk
    return buf[:1], struct.unpack("=i", buf[1:5])[0]


def connect(path: str, timeout: float | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(path)
    return sock


def main(argv: list[str]) -> int:
    path, command = argv[0], argv[1:]
    sock = connect(path)

    def forward(signum, _frame):
        try:
            sock.sendall(b"K" + struct.pack("=i", signum))
        except OSError:
            pass

    for s in FORWARDED:
        signal.signal(s, forward)
    send_request(sock, [sys.argv[0], *command], os.environ)
    reply = read_reply(sock)
    if reply is None:
        print("served_support: no reply", file=sys.stderr)
        return 98
    if reply[0] == b"F":
        print("served_support: fallback", file=sys.stderr)
        return 99
    return reply[1] & 0xFF


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
