"""The host side of ``[[network.forward]]``: relay granted ports to the host's loopback.

The network bridge (``sandbox.egress.netns``) listens on each granted inside port
in the run's namespace and hands the listeners over with the proxy's (or
the resolver's) socket.  ``Relay`` accepts on them, on the host, and
connects each connection to the grant's own ``host``:``port`` (127.0.0.1 or
::1, nothing else: see ``sandbox.egress.hostports``), then moves bytes both ways
until both sides have finished.

Bounded: at most ``MAX_CONNECTIONS`` at once (more are reset at once and
counted), at most one ``CHUNK`` buffered per direction (a slow reader stops
the reading on the other side, nothing piles up), and a half-close (one
side's FIN) is passed on as a half-close, so protocols that end a request
with ``shutdown(SHUT_WR)`` work.  An error on either side closes both.
There is no idle timeout: a database client's pooled connection may stay
quiet for a long time; it ends with the run.

One thread, one ``poll`` loop, for every grant.  It runs in the process
that received the listeners: the egress proxy's (``network.mode = "proxy"``)
or the wrapper itself (no network: next to the resolver's thread).  What it
did is counted in ``Counters``, a small shared mapping made by the wrapper
before any fork, so the counts survive the proxy process and reach the
report.  Only C modules are imported at the top.
"""

from __future__ import annotations

import os
import select
import struct

import _socket

MAX_CONNECTIONS = 256
CHUNK = 64 * 1024
# per grant, in this order (``Counters.read`` names them for the report):
# connections made to the host service, bytes each way, connections the
# service refused or could not take (failed), and connections reset at the
# limit before any attempt (refused)
FIELDS = ("connections", "bytes_to_host", "bytes_from_host", "failed", "refused")
_CONNECTIONS, _TO_HOST, _FROM_HOST, _FAILED, _REFUSED = range(len(FIELDS))
_EINPROGRESS = 115
_IN, _OUT = select.POLLIN, select.POLLOUT
_BAD = select.POLLERR | select.POLLNVAL


class Counters:
    """Per-grant counts in an anonymous shared mapping (one writer: the relay's thread)."""

    def __init__(self, grants: int) -> None:
        import mmap

        self.grants = grants
        self.map = mmap.mmap(-1, max(1, grants) * len(FIELDS) * 8)  # MAP_SHARED

    def add(self, grant: int, field: int, value: int = 1) -> None:
        at = (grant * len(FIELDS) + field) * 8
        struct.pack_into("Q", self.map, at, struct.unpack_from("Q", self.map, at)[0] + value)

    def read(self, grant: int) -> dict:
        at = grant * len(FIELDS) * 8
        return dict(zip(FIELDS, struct.unpack_from("%dQ" % len(FIELDS), self.map, at)))


def report(grants, counters: "Counters | None") -> list[dict]:
    """The report's ``forwards``: each grant with what went through it."""
    out = []
    for index, (host, port, inside, name) in enumerate(grants):
        counts = counters.read(index) if counters is not None else dict.fromkeys(FIELDS, 0)
        out.append({"host": host, "port": port, "inside_port": inside, "name": name or None,
                    **counts})
    return out


def summary(grants, counters: "Counters | None") -> list[str]:
    """Lines for stderr after the run: only what went wrong (a quiet run says nothing)."""
    lines = []
    for item in report(grants, counters):
        shown = f"[{item['host']}]" if ":" in item["host"] else item["host"]
        if item["failed"]:
            lines.append(f"sandbox: forward to host {shown}:{item['port']}: {item['failed']} "
                         "connection(s) failed (nothing listening there on the host?)")
        if item["refused"]:
            lines.append(f"sandbox: forward to host {shown}:{item['port']}: {item['refused']} "
                         f"connection(s) reset: more than {MAX_CONNECTIONS} open at once")
    return lines


class _Flow:
    """One direction of a connection: bytes read from ``src``, not yet written to ``dst``."""

    __slots__ = ("src", "dst", "field", "pending", "eof", "shut")

    def __init__(self, src, dst, field: int) -> None:
        self.src, self.dst, self.field = src, dst, field  # field: its byte counter
        self.pending = b""
        self.eof = False  # src said end of file
        self.shut = False  # our FIN sent on to dst

    def wants_input(self) -> int:
        return 0 if self.eof or self.pending else _IN

    def pull(self, counters: "Counters", grant: int) -> None:
        if self.eof or self.pending:
            return
        data = _recv(self.src)
        if data:
            self.pending = data
            counters.add(grant, self.field, len(data))
        elif data is not None:
            self.eof = True

    def push(self) -> None:
        """Write what is waiting; pass the end of file on once all is written."""
        if self.pending:
            self.pending = self.pending[_send(self.dst, self.pending):]
        if self.eof and not self.pending and not self.shut:
            self.dst.shutdown(_socket.SHUT_WR)
            self.shut = True


class _Conn:
    """One forwarded connection: the command's side and the host service's."""

    __slots__ = ("client", "upstream", "grant", "connecting", "up", "down")

    def __init__(self, client, upstream, grant: int, connecting: bool) -> None:
        self.client, self.upstream, self.grant = client, upstream, grant
        self.connecting = connecting
        self.up = _Flow(client, upstream, _TO_HOST)  # the command to the host service
        self.down = _Flow(upstream, client, _FROM_HOST)

    def interest(self):
        if self.connecting:
            return ((self.upstream, _OUT),)
        return ((self.client, self.up.wants_input() | (_OUT if self.down.pending else 0)),
                (self.upstream, self.down.wants_input() | (_OUT if self.up.pending else 0)))

    def finished(self) -> bool:
        return self.up.shut and self.down.shut


class Relay:
    """Serve the forward listeners until ``stop``.  ``listeners``: [(socket, grant index)];
    ``grants``: [(host, port, inside_port, name)] as in the plan."""

    def __init__(self, listeners, grants, counters: Counters) -> None:
        import _thread

        self.listeners = {sock.fileno(): (sock, index) for sock, index in listeners}
        for sock, _ in listeners:
            sock.setblocking(False)
        self.targets = [(_socket.AF_INET6 if ":" in host else _socket.AF_INET, (host, port))
                        for host, port, _inside, _name in grants]
        self.counters = counters
        self.conns: dict[int, _Conn] = {}  # by the fd of either side
        self._stop_r, self._stop_w = os.pipe()
        self._thread = _thread
        self._done = _thread.allocate_lock()
        self._done.acquire()

    def start(self) -> None:
        self._thread.start_new_thread(self._run, ())

    def stop(self, wait: float = 0.5) -> None:
        """Stop accepting and relaying; waits (bounded) for the thread to close everything."""
        try:
            os.write(self._stop_w, b"x")
        except OSError:
            return
        if self._done.acquire(True, wait):
            os.close(self._stop_r)
            os.close(self._stop_w)
        # else: the thread still runs; its descriptors stay open until the process exits

    # -- the loop ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException:  # noqa: BLE001 - a thread must not print a traceback
            pass
        finally:
            for conn in list(dict.fromkeys(self.conns.values())):
                self._close(conn, reset=True)
            for sock, _ in self.listeners.values():
                sock.close()
            self._done.release()

    def _loop(self) -> None:
        while True:
            poller = select.poll()
            poller.register(self._stop_r, _IN)
            for fd in self.listeners:
                poller.register(fd, _IN)
            for conn in dict.fromkeys(self.conns.values()):
                for sock, mask in conn.interest():
                    if mask:  # a socket with nothing to wait for is left out (POLLHUP)
                        poller.register(sock.fileno(), mask)
            for fd, events in poller.poll():
                if fd == self._stop_r:
                    return
                if fd in self.listeners:
                    self._accept(*self.listeners[fd])
                    continue
                conn = self.conns.get(fd)
                if conn is None:
                    continue  # closed earlier in this round
                try:
                    self._move(conn, fd, events)
                except OSError:
                    self._close(conn, reset=True)
                    continue
                if conn.finished():
                    self._close(conn)

    def _accept(self, listener, grant: int) -> None:
        for _ in range(16):  # bounded, then back to poll
            try:
                fd, _addr = listener._accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # out of descriptors, or the connection went: try on the next round
            client = _socket.socket(fileno=fd)
            if len(self.conns) // 2 >= MAX_CONNECTIONS:
                self.counters.add(grant, _REFUSED)
                _reset(client)
                continue
            family, target = self.targets[grant]
            try:
                upstream = _socket.socket(family, _socket.SOCK_STREAM)
            except OSError:
                self.counters.add(grant, _FAILED)
                _reset(client)
                continue
            client.setblocking(False)
            upstream.setblocking(False)
            code = upstream.connect_ex(target)
            if code not in (0, _EINPROGRESS):
                self.counters.add(grant, _FAILED)
                upstream.close()
                _reset(client)
                continue
            if code == 0:
                self.counters.add(grant, _CONNECTIONS)
            conn = _Conn(client, upstream, grant, connecting=code != 0)
            self.conns[client.fileno()] = self.conns[upstream.fileno()] = conn

    def _move(self, conn: _Conn, fd: int, events: int) -> None:
        """One socket's readiness: connect, read, write; then pass half-closes on."""
        if conn.connecting:
            code = conn.upstream.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
            if code:
                self.counters.add(conn.grant, _FAILED)
                raise OSError(code, os.strerror(code))
            conn.connecting = False
            self.counters.add(conn.grant, _CONNECTIONS)  # made: counted once it is
            return
        if events & _BAD:
            raise OSError("socket error")
        if events & (_IN | select.POLLHUP):
            (conn.up if fd == conn.client.fileno() else conn.down).pull(self.counters, conn.grant)
        # write whatever is waiting, whichever side woke us (saves a round)
        conn.up.push()
        conn.down.push()

    def _close(self, conn: _Conn, reset: bool = False) -> None:
        for sock in (conn.client, conn.upstream):
            self.conns.pop(sock.fileno(), None)
        if reset:  # the command sees a reset, not a clean end, when something broke
            _reset(conn.client)
        else:
            conn.client.close()
        conn.upstream.close()


def _recv(sock) -> bytes | None:
    try:
        return sock.recv(CHUNK)
    except (BlockingIOError, InterruptedError):
        return None


def _send(sock, data: bytes) -> int:
    try:
        return sock.send(data, _socket.MSG_NOSIGNAL)
    except (BlockingIOError, InterruptedError):
        return 0


def _reset(sock) -> None:
    """Close with RST (SO_LINGER 0): the peer learns the connection failed."""
    try:
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def start(listeners, grants, counters: Counters) -> "Relay | None":
    """A running relay for the received listeners (None when there are none)."""
    if not listeners:
        return None
    relay = Relay([(_socket.socket(fileno=fd), index) for fd, index in listeners],
                  grants, counters)
    relay.start()
    return relay
