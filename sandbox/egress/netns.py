"""The network bridge: a fresh network namespace whose only way out is a socket
held by the egress proxy on the host.

``Bridge.enter`` runs in the forked child that is about to become bwrap
(see ``runner._child``).  It moves that child into a new network namespace
(and, for a caller who is not root, a user namespace that maps only the
caller's own uid and gid, which is what lets an unprivileged process own a
network namespace), brings up ``lo``, creates the proxy's listening socket on
127.0.0.1 *inside* that namespace and hands it to the proxy process over a
unix socket.  Then the child execs bwrap, which runs without
``--unshare-net`` and so stays in this namespace.  A run that joins its
session's namespace (``sandbox.egress.netsession``) enters it with ``setns``
instead of making one, and binds its own listener on its own port there.

Why this shape: nothing runs inside the sandbox outside the seccomp filter.
The command reaches the proxy only through the socket's address; the proxy
itself lives on the host, in a pid namespace the command cannot see, so the
command can neither ptrace it nor take its descriptors.  If the proxy dies,
the listening socket dies with it and the namespace has no route at all:
``lo`` is its only interface.

Nothing here spawns a process: ``runner`` is the only module that does.
Everything the child needs is prepared in the parent (``Bridge.__init__``),
because after fork the child runs only system calls.
"""

from __future__ import annotations

import os
# The C module: ``socket`` builds IntEnum classes on import (about 5 ms on
# every start); these few calls need only the C layer.
import _socket as socket
import struct

# Where the egress proxy listens inside the sandbox's network namespace: this
# port for the run that makes the namespace; a run that joins a session's
# namespace gets the next one no member holds (sandbox.egress.netsession).
PROXY_HOST = "127.0.0.1"
PROXY_PORT = 3128

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFF_RUNNING = 0x40
# struct ifreq: a 16-byte interface name, then the flags as a short
_LO_UP = struct.pack("16sH14x", b"lo", IFF_UP | IFF_RUNNING)

# Stage numbers the child reports on failure, so the parent can say which
# step failed (runner turns them into a message with errno_message()).
STAGES = {1: "create the network namespace (unshare)", 2: "map the user and group ids",
          3: "bring up the loopback interface", 4: "create the proxy's listening socket",
          5: "hand the socket to the proxy",
          6: "enter the session's network namespace (setns)",
          7: "listen on a forwarded port ([[network.forward]]) inside the namespace"}
# (6 and 7 by name: the runner falls back to bwrap after STAGE_SETNS, never
# after STAGE_FORWARD, where a port of the namespace is taken)
STAGE_SETNS = 6
STAGE_FORWARD = 7


class StageFailed(OSError):
    """A step of Bridge.enter failed, in the child (the parent gets stage and errno)."""

    def __init__(self, stage: int, code: int) -> None:
        super().__init__(code, os.strerror(code) if code else "unknown error")
        self.stage = stage


# How the bridge's namespace is made (SANDBOX_NET_BRIDGE):
#   direct  the child that becomes bwrap unshares it itself (fastest);
#   bwrap   an outer bwrap makes it, and a tiny launcher inside creates the
#           socket and execs the real bwrap: for hosts that allow user
#           namespaces to bwrap only (AppArmor on Ubuntu 24.04+);
#   auto    direct, and bwrap if direct is refused (the default).
MODES = ("auto", "direct", "bwrap")

# The launcher: run by `python -I -S` inside the outer bwrap, so it reads
# nothing from the workspace, the environment or site-packages.  The
# interpreter is the one running sandbox (``sys.executable``, kept read-only
# by selfguard), and the runner starts it without loader variables
# (``LD_PRELOAD``...: see sandbox.hostprogs), which reach only the command.  It binds
# the proxy's socket in the outer bwrap's fresh network namespace (bwrap has
# brought lo up), hands it over, and becomes the real bwrap: nothing stays.
# Its arguments: the socket's kind (t: TCP listener, u: UDP, n: none), address
# and port, the [[network.forward]] inside ports (comma-separated; the same
# listeners ``Bridge._forward_listeners`` makes), the channel's descriptor,
# then the real bwrap's argv.
LAUNCHER = """\
import _socket, os, struct, sys
kind, host, port, forwards, channel = sys.argv[1:6]
fds, tags = [], []
if kind != "n":
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM if kind == "u" else _socket.SOCK_STREAM)
    s.bind((host, int(port)))
    if kind != "u":
        s.listen(1024)
    fds, tags = [s], [255]
for i, p in enumerate(forwards.split(",") if forwards else ()):
    for family, addr in ((_socket.AF_INET, "127.0.0.1"), (_socket.AF_INET6, "::1")):
        try:
            f = _socket.socket(family, _socket.SOCK_STREAM)
        except OSError:
            if family == _socket.AF_INET6:
                continue
            raise
        f.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT, 1)
        try:
            f.bind((addr, int(p)))
        except OSError as e:
            f.close()
            if family == _socket.AF_INET6 and e.errno in (99, 97):
                continue
            sys.stderr.write(f"sandbox: cannot listen on {addr}:{p} inside the sandbox for "
                             f"[[network.forward]]: {e.strerror}\\n")
            sys.exit(1)
        f.listen(128)
        fds.append(f)
        tags.append(i)
ch = _socket.socket(fileno=int(channel))
ch.sendmsg([b"L" + bytes(tags)], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
           struct.pack("%di" % len(fds), *[f.fileno() for f in fds]))], _socket.MSG_NOSIGNAL)
for f in fds:
    f.close()
ch.close()
os.execv(sys.argv[6], sys.argv[6:])
"""

# Tag of the first descriptor in the hand-over message: the proxy's (or the
# resolver's) own socket; every other descriptor's tag is the index of its
# [[network.forward]] grant.
MAIN_TAG = 255


def bridge_mode(environ) -> str:
    """SANDBOX_NET_BRIDGE, checked before anything starts."""
    mode = environ.get("SANDBOX_NET_BRIDGE") or "auto"
    if mode not in MODES:
        from sandbox.errors import UsageError

        raise UsageError(f"SANDBOX_NET_BRIDGE={mode!r} is not a bridge mode",
                         hint="use auto (the default), direct or bwrap")
    return mode


class Bridge:
    """Prepared in the parent; ``enter`` is called in the child before exec
    (direct mode), or ``wrap`` turns bwrap's argv into the launcher's."""

    def __init__(self, channel: socket.socket, mode: str = "auto", member=None,
                 forwards=()) -> None:
        import fcntl

        self.channel = channel
        self.mode = mode
        self.wrapped = False
        self._os_setns = getattr(os, "setns", None)  # Python 3.12+
        self.join(member)
        # [[network.forward]]: the inside ports to listen on, in grant order
        self.forwards = tuple(int(p) for p in forwards)
        if self.forwards:  # made here, used in the child (_forward_listeners)
            self._oldest_first = _oldest_listener_program()
        self._sock_kind = "t"  # the launcher's word for _listen's socket
        self._os_unshare = getattr(os, "unshare", None)  # Python 3.12+
        if self._os_unshare is None:  # before Python 3.12
            from sandbox import libc  # not ctypes: see there

            self._libc_unshare = libc.function("unshare")
            self._get_errno = libc.errno
        self._ioctl = fcntl.ioctl
        self.uid, self.gid = os.getuid(), os.getgid()
        self._maps = ((b"/proc/self/setgroups", b"deny"),
                      (b"/proc/self/uid_map", b"%d %d 1" % (self.uid, self.uid)),
                      (b"/proc/self/gid_map", b"%d %d 1" % (self.gid, self.gid)))

    def join(self, member) -> None:
        """This run's place in its session (sandbox.egress.netsession): the namespace
        to enter instead of making one, and the port to listen on.  Set in the
        parent before the child forks; a proxy started early (TLS inspection,
        sandbox.execute) gets it once the session is chosen."""
        self.member = member
        self.port = member.port if member is not None else PROXY_PORT
        if self._os_setns is None and member is not None:
            from sandbox import libc

            self._libc_setns = libc.function("setns")
            self._get_errno = libc.errno

    def _unshare(self, flags: int) -> int:
        """unshare(2); 0 or the errno."""
        if self._os_unshare is not None:
            try:
                self._os_unshare(flags)
                return 0
            except OSError as exc:
                return exc.errno or 1
        if self._libc_unshare(flags) == 0:
            return 0
        return self._get_errno() or 1

    def _setns(self, fd: int, nstype: int) -> int:
        """setns(2); 0 or the errno."""
        if self._os_setns is not None:
            try:
                self._os_setns(fd, nstype)
                return 0
            except OSError as exc:
                return exc.errno or 1
        if self._libc_setns(fd, nstype) == 0:
            return 0
        return self._get_errno() or 1

    def enter(self) -> None:
        """In the child: make the namespace (or enter the session's), the
        listener, and send it.  Raises StageFailed."""
        join = self.member.join if self.member is not None else None
        if join is not None:
            # the user namespace first: it owns the network namespace, and
            # entering it is what gives this child the right to enter that
            user_fd, net_fd = join
            code = self._setns(user_fd, CLONE_NEWUSER) if user_fd >= 0 else 0
            if not code:
                code = self._setns(net_fd, CLONE_NEWNET)
            if code:
                raise StageFailed(STAGE_SETNS, code)
        else:
            self._make()
        self._hand_over()

    def _make(self) -> None:
        # root owns a network namespace without a user namespace; keeping
        # the real root here leaves bwrap's own user namespace (and its
        # capability drop) exactly as it is without the bridge.  Root without
        # CAP_SYS_ADMIN (some containers) falls back to a user namespace.
        code = self._unshare(CLONE_NEWNET) if self.uid == 0 else -1
        mapped = code != 0
        if mapped:
            code = self._unshare(CLONE_NEWUSER | CLONE_NEWNET)
        if code:
            raise StageFailed(1, code)
        if mapped:
            # Only our own ids, so bwrap still sees the caller's uid and takes
            # its unprivileged path; setgroups must be denied before gid_map.
            try:
                for path, value in self._maps:
                    fd = os.open(path, os.O_WRONLY)
                    try:
                        os.write(fd, value)
                    finally:
                        os.close(fd)
            except OSError as exc:
                raise StageFailed(2, exc.errno or 0) from None
        try:
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                self._ioctl(probe.fileno(), SIOCSIFFLAGS, _LO_UP)
            finally:
                probe.close()
        except OSError as exc:
            raise StageFailed(3, exc.errno or 0) from None

    def _hand_over(self) -> None:
        try:
            listener = self._listen()
        except OSError as exc:
            raise StageFailed(4, exc.errno or 0) from None
        sockets, tags = [listener], [MAIN_TAG]
        try:
            try:
                for index, port in enumerate(self.forwards):
                    for sock in self._forward_listeners(port):
                        sockets.append(sock)
                        tags.append(index)
            except OSError as exc:
                raise StageFailed(STAGE_FORWARD, exc.errno or 0) from None
            try:
                # MSG_NOSIGNAL: a proxy that already died must give EPIPE (a clear
                # error), not SIGPIPE, which the child has back at its default
                self.channel.sendmsg([b"L" + bytes(tags)], [(
                    socket.SOL_SOCKET, socket.SCM_RIGHTS,
                    struct.pack("%di" % len(sockets), *[s.fileno() for s in sockets]))],
                    socket.MSG_NOSIGNAL)
            except OSError as exc:
                raise StageFailed(5, exc.errno or 0) from None
        finally:
            # only the proxy may hold them: if the proxy dies, so does the route
            for sock in sockets:
                sock.close()
            self.channel.close()

    def _forward_listeners(self, port: int) -> list:
        """In the child: 127.0.0.1:port and (where the namespace has IPv6) [::1]:port.

        SO_REUSEPORT: runs that share one namespace with the same grants
        each hold a listener of their own on the same port.  The group gets
        a program that gives every connection to its oldest listener (the
        session's longest-lived run; when it ends, the kernel moves another
        into its place): with the kernel's hash instead, a connection of a
        long run (a dev server's pooled database connection) often went to
        the relay of a short run of the session and was reset when that run
        ended.  Commands of runs with grants cannot set SO_REUSEPORT (the
        seccomp filter, ``hostports.seccomp_rules``), so no listener but
        sandbox's joins the group, and none can replace the program.
        """
        out = []
        try:
            for family, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                try:
                    sock = socket.socket(family, socket.SOCK_STREAM)
                except OSError:
                    if family == socket.AF_INET6:
                        continue  # no IPv6 in this kernel: 127.0.0.1 only
                    raise
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                    sock.bind((addr, port))
                    sock.listen(128)
                    # after listen: the socket is in its group, whose program this
                    # replaces.  Not fatal: without it the kernel's hash picks the
                    # listener (connections may end with a younger run, see above)
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF,
                                        self._oldest_first[0])
                    except OSError:
                        pass
                except OSError as exc:
                    sock.close()
                    if family == socket.AF_INET6 and exc.errno in (97, 99):
                        continue  # EAFNOSUPPORT, EADDRNOTAVAIL: lo has no ::1 here
                    raise
                out.append(sock)
        except OSError:
            for sock in out:
                sock.close()
            raise
        return out

    def _listen(self) -> socket.socket:
        """In the child, inside the new namespace: the socket to hand over.

        The egress proxy's TCP listener; ``sandbox.egress.dns`` binds its resolver's
        UDP socket here instead.
        """
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((PROXY_HOST, self.port))
        listener.listen(1024)
        return listener

    def another_port(self, env: dict[str, str]) -> dict[str, str] | None:
        """In the parent, after this run's port was taken in the session's
        namespace (a command of the session bound it first): the next free
        one, and ``env`` naming it; None when there is none to try."""
        if self.member is None or not self.member.joined:
            return None
        new = self.member.another_port()
        if new is None:
            return None
        old_url, new_url = f"http://{PROXY_HOST}:{self.port}", f"http://{PROXY_HOST}:{new}"
        self.port = new
        return {k: new_url if v == old_url else v for k, v in env.items()}

    # Whether ``wrap``'s argv needs the channel (the launcher sends the socket
    # through it); the runner keeps it open for bwrap only then.
    passes_channel = True

    def started(self, pid: int | None = None) -> None:
        """In the parent, once bwrap runs (called by the runner): ``pid`` is
        the process that became bwrap, in the namespace unless ``wrap`` made
        it; the session's registry gets this run's line."""
        if self.member is not None:
            self.member.spawned(None if self.wrapped else pid)

    def wrap(self, argv: list[str], python: str) -> list[str]:
        """bwrap mode: the outer bwrap and the launcher, then the real bwrap's argv.

        The outer bwrap only makes the user and network namespaces: the
        whole host stays visible (``--bind / /``) for the real bwrap to set
        up the sandbox from, exactly as it would without the bridge.  The
        channel descriptor must be inheritable (the runner keeps it).
        """
        self.wrapped = True
        host, port = self._address()
        return [argv[0], "--unshare-user", "--unshare-net", "--bind", "/", "/",
                "--die-with-parent", "--", python, "-I", "-S", "-c", LAUNCHER,
                self._sock_kind, host, str(port), ",".join(map(str, self.forwards)),
                str(self.channel.fileno()), *argv]

    def launch_args(self) -> tuple[str, list[int]] | None:
        """What the native launcher does instead of ``enter`` (sandbox.runner):
        its BRIDGE argument (native/launch.c) and the descriptors it needs;
        None when only ``enter`` can (a socket kind it does not make)."""
        if self._sock_kind not in ("t", "u"):
            return None
        host, port = self._address()
        join = self.member.join if self.member is not None else None
        user_fd, net_fd = join if join is not None else (-1, -1)
        channel = self.channel.fileno()
        spec = ":".join((self._sock_kind, host, str(port), "+".join(map(str, self.forwards)),
                         str(channel), str(user_fd), str(net_fd)))
        return spec, [fd for fd in (channel, user_fd, net_fd) if fd >= 0]

    def _address(self) -> tuple[str, int]:
        """Where ``_listen``'s socket is bound (for the launcher): this run's port."""
        return PROXY_HOST, self.port

    def close(self) -> None:
        """In the parent, once the child has it: the proxy's end must see EOF if the child dies."""
        self.channel.close()


def failure_hint(stage: int) -> str:
    if stage == STAGE_FORWARD:
        return ("a [[network.forward]] port is taken inside the run's network namespace "
                "(by a command of its session, or a run whose grant is not the same); "
                "--session none gives the run a namespace of its own")
    if stage == STAGE_SETNS:
        return ("the run could not enter the network namespace of its session (another run "
                "of this workspace); --session none gives it one of its own")
    if stage == 4:
        return ("the port is taken in the session's shared network namespace; --session none "
                "gives the run a namespace of its own")
    return ("the egress proxy's network namespace could not be made; "
            "SANDBOX_NET_BRIDGE=bwrap makes it through bwrap instead, "
            "or use a profile with network.mode = \"none\"")


SO_ATTACH_REUSEPORT_CBPF = 51


def _oldest_listener_program():
    """The classic BPF program ``ret #0`` as a ``struct sock_fprog``, and the
    buffer it points into (kept alive with it): for a SO_REUSEPORT group, the
    index of the listener that gets each new connection, 0 being the oldest."""
    import array

    code = array.array("B", struct.pack("HBBI", 0x06, 0, 0, 0))  # BPF_RET | BPF_K, k = 0
    return struct.pack("HP", 1, code.buffer_info()[0]), code


# the most descriptors one hand-over carries: the main socket, two per grant
# (sandbox.egress.hostports.MAX_GRANTS; not imported: this module is on the fast path)
MAX_FDS = 1 + 2 * 32


def receive(channel: socket.socket, flags: int = 0):
    """The other end of the hand-over: (main socket's fd or None, [(fd, grant index)]).

    Every descriptor that arrived is made close-on-exec (descriptors
    received this way are inheritable) and either returned or, when the
    message is not what it should be, closed: none leaks.
    """
    data, ancillary, _, _ = channel.recvmsg(1 + MAX_FDS, socket.CMSG_SPACE(4 * MAX_FDS), flags)
    fds: list[int] = []
    for level, kind, cdata in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            count = len(cdata) // 4
            fds.extend(struct.unpack("%di" % count, cdata[:4 * count]))
    for fd in fds:
        os.set_inheritable(fd, False)
    tags = data[1:]
    if not fds or len(tags) != len(fds):
        for fd in fds:
            os.close(fd)
        return None, []
    main = None
    if tags[0] == MAIN_TAG:  # absent when only the forwards were sent (sandbox.egress.dns)
        main, fds, tags = fds[0], fds[1:], tags[1:]
    return main, list(zip(fds, tags))


def describe_failure(stage: int, code: int) -> str:
    what = STAGES.get(stage, "set up the network bridge")
    # the forward's stage names its own purpose; setns is the session's
    for_what = "" if stage == STAGE_FORWARD else " for the egress proxy"
    return f"cannot {what}{for_what}: {os.strerror(code) if code else 'unknown error'}"
