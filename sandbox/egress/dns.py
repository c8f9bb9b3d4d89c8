"""Name lookups in a run without network: refused at once, and written down.

Under ``[network] mode = "none"`` the command's network namespace has
loopback only.  Left alone, a name lookup there fails with ``EAI_AGAIN``
("Temporary failure in name resolution": the host's name server cannot be
reached), which clients treat as a passing outage and retry.  So the run
gets a resolver of its own:

* the child that becomes bwrap makes the namespace itself (``sandbox.egress.netns``,
  the egress bridge's mechanism) and binds a UDP socket on 127.0.0.1:53
  *in* it, then hands the socket to the wrapper and execs bwrap, which runs
  without ``--unshare-net`` and so stays in that namespace;
* ``/etc/resolv.conf`` inside names only that address (``sandbox.linux.bwrap``
  binds the file made here);
* a thread of the wrapper, on the host, answers every query with NXDOMAIN
  ("no such name": final, ``EAI_NONAME`` / ``ENOTFOUND``) and records the
  name, for the summary on stderr and the report.

Nothing runs inside the sandbox for this: the command reaches the resolver
only through the socket's address, and the wrapper's own process is outside
its pid namespace.  ``/etc/hosts`` is untouched (``localhost`` resolves).

Where the namespace cannot be made by us (``SANDBOX_NET_BRIDGE=bwrap``, or
a host that lets only bwrap make user namespaces), bwrap makes it as before
and a generated ``nsswitch.conf`` whose ``hosts:`` line is ``files`` only is
bound in: glibc clients then fail at once with ``EAI_NONAME`` too, but
nothing records the names (the report says so).

This module imports only C modules at the top: it is on the fast path.
"""

from __future__ import annotations

import os
import select
import struct

from sandbox.egress import netns

RESOLVER_HOST = "127.0.0.1"
RESOLVER_PORT = 53
RESOLV_CONF = "/etc/resolv.conf"
NSSWITCH_CONF = "/etc/nsswitch.conf"
# The sandbox's own host name (bwrap --hostname): lookups of it are noise
OWN_HOSTNAME = "sandbox"
MAX_NAMES = 256  # distinct names kept; further ones are only counted
MAX_BURST = 64  # packets answered per wake-up, so a flood cannot hold the lock
SUMMARY_LINES = 5
# nsswitch sources that answer from this machine alone; every other hosts:
# source (dns, resolve, mdns, wins...) asks something over the network
LOCAL_SOURCES = ("files", "myhostname")
QUERY_MAX = 1024

RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4


# --- the plan: files made once, bound by bwrap ---------------------------------

def resolv_conf_text(address: str = RESOLVER_HOST) -> str:
    return ("# made by sandbox: this run has no network; the name server below is\n"
            "# the run's own, which answers every query with \"no such name\"\n"
            f"nameserver {address}\n")


def nsswitch_text(host_text: str | None) -> str:
    """The host's nsswitch.conf with a ``hosts:`` line that never asks the network."""
    lines, seen = [], False
    for line in (host_text or "").splitlines():
        key, sep, rest = line.partition(":")
        if sep and key.strip() == "hosts" and not line.lstrip().startswith("#"):
            sources = [w for w in rest.split() if w in LOCAL_SOURCES]
            line = "hosts: " + " ".join(sources or ["files"])
            seen = True
        lines.append(line)
    if not seen:
        lines.append("hosts: files")
    return "# made by sandbox from the host's nsswitch.conf: no network for this run\n" \
        + "\n".join(lines) + "\n"


def _state_file(state: str, name: str, text: str) -> str:
    """A read-only file in the state directory holding ``text`` (made once)."""
    from sandbox import statefile

    path = os.path.join(state, "net", f"{name}-{statefile.sha256_hex(text.encode())[:16]}")
    if not os.path.isfile(path):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o444)
        os.replace(tmp, path)
    return path


def _visible_file(path: str, obs, hidden: tuple[str, ...]) -> str | None:
    """Where ``path`` leads, if that is a regular file the sandbox shows."""
    real = obs.realpath(path)
    if obs.note(real) is None or not os.path.isfile(real):
        return None
    if any(real == h or real.startswith(h.rstrip("/") + "/") for h in hidden):
        return None  # e.g. systemd's link into /run: dangling inside
    return real


def name_service_files(state: str, obs, hidden: tuple[str, ...]):
    """(resolv.conf bind, nsswitch.conf bind) for a run without network.

    Each is (our file, the host path it covers) or None.  No bind is needed
    where the host has no resolv.conf, or one that leads into a directory
    that is empty inside (systemd-resolved's link into /run): the C
    library, Go and musl then all ask 127.0.0.1, which is our resolver.
    """
    resolv = _visible_file(RESOLV_CONF, obs, hidden)
    if resolv is not None:
        resolv = (_state_file(state, "resolv.conf", resolv_conf_text()), resolv)
    nss = _visible_file(NSSWITCH_CONF, obs, hidden)
    if nss is not None:
        host_text = obs.read(nss)
        nss = (_state_file(state, "nsswitch.conf", nsswitch_text(host_text)), nss)
    for made in (resolv, nss):
        if made is not None:
            obs.note(made[0])
    return resolv, nss


def plan(policy, layout) -> dict | None:
    """What a run needs at start, as plain data (cached with the plan)."""
    if policy.network.value != "none":
        return None
    return {"nsswitch": list(layout.nsswitch) if layout.nsswitch else None}


# --- argv -----------------------------------------------------------------------

def _options_end(argv: list[str]) -> int:
    return argv.index("--") if "--" in argv else len(argv)


def without_own_namespace(argv: list[str]) -> list[str]:
    """bwrap's argv for the bridge's namespace: no ``--unshare-net`` of its own."""
    end = _options_end(argv)
    return [a for i, a in enumerate(argv) if i >= end or a != "--unshare-net"]


def static_argv(argv: list[str], nsswitch) -> list[str]:
    """bwrap makes the namespace; lookups fail at once through nsswitch.conf."""
    argv = list(argv)
    end = _options_end(argv)
    if "--unshare-net" not in argv[:end]:
        argv.insert(1, "--unshare-net")
        end += 1
    if nsswitch:
        at = argv.index("--chdir") if "--chdir" in argv[:end] else end
        argv[at:at] = ["--ro-bind", nsswitch[0], nsswitch[1]]
    return argv


def moved(old: list[str], new: list[str], index: int | None) -> int | None:
    """Where the value at ``old[index]`` (an option's argument) is in ``new``."""
    if index is None:
        return None
    option = old[index - 1]
    return new.index(option, 1, _options_end(new)) + 1


# --- the protocol: one question in, NXDOMAIN out ----------------------------------

def parse_query(packet: bytes):
    """(id, flags, question bytes, name) of a standard query, or None.

    Strict and bounded: one question, labels of at most 63 bytes, no
    compression (a query has nothing to point back to), 255 bytes in all.
    """
    if len(packet) < 12:
        return None
    ident, flags, qdcount = struct.unpack_from("!HHH", packet)
    if flags & 0x8000 or qdcount != 1:
        return None  # a response, or not one question
    i, labels, total = 12, [], 0
    while True:
        if i >= len(packet):
            return None
        n = packet[i]
        i += 1
        if n == 0:
            break
        if n > 63:
            return None
        labels.append(packet[i:i + n])
        i += n
        total += n + 1
        if i > len(packet) or total > 255:
            return None
    if i + 4 > len(packet):
        return None
    name = b".".join(labels).decode("ascii", "backslashreplace").lower() or "."
    return ident, flags, packet[12:i + 4], name


def reply(ident: int, flags: int, question: bytes) -> bytes:
    """NXDOMAIN for a standard query (NOTIMP for other opcodes), question echoed.

    The C library checks that the question matches its own; opcode and the
    recursion-desired bit are copied, recursion-available is set so no
    client takes us for a lame server.  Never longer than the query.
    """
    opcode = (flags >> 11) & 0xF
    rcode = RCODE_NXDOMAIN if opcode == 0 else RCODE_NOTIMP
    out = 0x8000 | (flags & 0x7900) | 0x0080 | rcode
    return struct.pack("!HHHHHH", ident, out, 1, 0, 0, 0) + question


# --- the run --------------------------------------------------------------------

class Bridge(netns.Bridge):
    """The egress bridge's namespace, with the resolver's UDP socket instead of a listener."""

    passes_channel = False  # wrap() needs no launcher: bwrap makes the namespace

    def __init__(self, channel, mode: str, session: "Session", member=None,
                 forwards=()) -> None:
        super().__init__(channel, mode, member, forwards)
        self.session = session
        self.address = session.address
        self.launched = False  # wrapped, with the launcher making the forwards' listeners
        self._sock_kind = "u"

    def _listen(self):
        import _socket

        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
        try:
            # Runs of a session share the namespace; each has its own
            # address (sandbox.egress.netsession).  Where resolv.conf is not ours
            # to set, they share 127.0.0.1, each answering some queries.
            # Port 53 is below 1024: the command cannot bind it, so this
            # group has no member but resolvers of sandbox.
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT, 1)
            sock.bind((self.address, RESOLVER_PORT))
        except OSError:
            sock.close()
            raise
        return sock

    def _address(self) -> tuple[str, int]:
        return self.address, RESOLVER_PORT

    def wrap(self, argv: list[str], python: str) -> list[str]:
        """The host refused our namespace: bwrap makes it, nothing answers names.

        With ``[[network.forward]]`` grants an outer bwrap makes it instead
        and the bridge's launcher (``sandbox.egress.netns``) creates the forwarded
        ports' listeners there; no resolver socket (port 53 needs a
        capability the launcher does not have), so the nsswitch.conf
        fallback applies to names as without grants.
        """
        self.wrapped = True
        if self.forwards:
            self.launched = self.passes_channel = True
            self._sock_kind = "n"  # the launcher sends the forwards' listeners only
            inner = without_own_namespace(static_argv(argv, self.session.nsswitch))
            return super().wrap(inner, python)
        self.channel.close()  # nothing will be sent; the child end is not passed on
        return static_argv(argv, self.session.nsswitch)

    def started(self, pid: int | None = None) -> None:
        super().started(pid)
        self.session.started()


class Session:
    """The resolver for one run: prepared before bwrap, stopped after it."""

    def __init__(self, data: dict, mode: str, member=None, state: str | None = None,
                 forwards=None) -> None:
        import _socket
        import _thread

        self.nsswitch = tuple(data["nsswitch"]) if data.get("nsswitch") else None
        self.names: dict[str, int] = {}
        self.unrecorded = 0  # queries for names beyond MAX_NAMES
        self.sock = None
        self.serving = False  # the thread was started
        self.failed = None  # set by the thread if it had to stop early
        self.fallback = None  # why names are not recorded, if they are not
        self.bridge = None
        self._thread = _thread
        self.address = RESOLVER_HOST
        self.state = state  # the state directory: where resolv.conf files are made
        self.member = member
        if member is not None and member.resolver != 1 and self.state:
            from sandbox.egress import netsession

            self.address = netsession.resolver_address(member.resolver)
        # [[network.forward]] (sandbox.egress.forward): relayed by a thread of the wrapper
        self.forwards = forwards or []
        self.counters = self.relay = None
        if self.forwards:
            from sandbox.egress import forward

            self.counters = forward.Counters(len(self.forwards))
        if mode == "bwrap" and not self.forwards:
            self.fallback = "SANDBOX_NET_BRIDGE=bwrap"
            if member is not None:
                member.resolver_at = None  # nothing answers names in bwrap's namespace
            return
        self.channel, child_end = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self.bridge = Bridge(child_end, mode, self, member, [g[2] for g in self.forwards])

    def argv(self, argv: list[str]) -> list[str]:
        if self.bridge is None:
            return static_argv(argv, self.nsswitch)
        argv = without_own_namespace(argv)
        if self.address != RESOLVER_HOST:
            argv = self._own_resolv_conf(argv)
        return argv

    def _own_resolv_conf(self, argv: list[str]) -> list[str]:
        """Bind a resolv.conf naming this run's own resolver address (a run
        that joined a session's namespace), in place of the plan's."""
        ours = _state_file(self.state, "resolv.conf", resolv_conf_text())
        end = _options_end(argv)
        at = next((i for i in range(1, end - 1) if argv[i] == ours), None)
        if at is None:  # the plan binds none: the C library asks 127.0.0.1
            self.address = RESOLVER_HOST
            if self.bridge is not None:
                self.bridge.address = RESOLVER_HOST
            if self.member is not None:
                self.member.resolver_at = RESOLVER_HOST
            return argv
        argv = list(argv)
        argv[at] = _state_file(self.state, "resolv.conf", resolv_conf_text(self.address))
        return argv

    def started(self) -> None:
        """In the wrapper, once bwrap runs: take the socket, answer from a thread.

        (``self.member``, the run's session: its report names the resolver's
        address, or None where bwrap made the namespace after all.)

        Called by the runner after its fork, so no thread exists while it
        forks.  Never raises: the command is already running.
        """
        import _socket

        waiting = False
        try:
            self.bridge.close()  # our copy of the child's end
            if self.bridge.wrapped:
                self.fallback = ("SANDBOX_NET_BRIDGE=bwrap" if self.bridge.mode == "bwrap" else
                                 "the host did not let sandbox make the network namespace")
                if self.member is not None:
                    self.member.resolver_at = None
                if self.bridge.launched:  # the launcher sends once the outer bwrap runs
                    self._thread.start_new_thread(self._await_forwards, ())
                    waiting = True
                return
            fd, forwarded = netns.receive(self.channel, _socket.MSG_DONTWAIT)
            if forwarded:
                from sandbox.egress import forward

                self.relay = forward.start(forwarded, self.forwards, self.counters)
            if fd is None:
                self.fallback = "the resolver's socket did not arrive"
                return
            self.sock = _socket.socket(fileno=fd)
            self.sock.setblocking(False)
            self._stop_r, self._stop_w = os.pipe()
            self._done = self._thread.allocate_lock()
            self._done.acquire()
            self._thread.start_new_thread(self._serve, ())
            self.serving = True
        except Exception as exc:  # noqa: BLE001 - the run goes on without names
            self.fallback = f"the resolver could not start ({exc})"
            self._close_sock()
        finally:
            if not waiting:
                self.channel.close()

    def _await_forwards(self) -> None:
        """A thread: the launcher's listeners, then their relay (bounded wait:
        the launcher sends them, or exits, within its start-up)."""
        try:
            if select.select([self.channel], [], [], 30.0)[0]:
                _fd, forwarded = netns.receive(self.channel)
                if forwarded:
                    from sandbox.egress import forward

                    self.relay = forward.start(forwarded, self.forwards, self.counters)
        except BaseException:  # noqa: BLE001 - a thread must not print a traceback
            pass
        finally:
            self.channel.close()

    def _serve(self) -> None:
        # poll, not select: descriptors above 1023 (a caller that leaked
        # many) would make select fail, and then nobody would answer
        try:
            poller = select.poll()
            poller.register(self.sock.fileno(), select.POLLIN)
            poller.register(self._stop_r, select.POLLIN)
            while True:
                ready = [fd for fd, _ in poller.poll()]
                if self._stop_r in ready:
                    return
                self._answer(MAX_BURST)
        except BaseException as exc:  # noqa: BLE001 - a thread must not print a traceback
            # without an answerer, lookups must still fail at once: a closed
            # port gives "connection refused" (EAI_AGAIN), not a 5 s timeout
            self.failed = f"the resolver stopped ({type(exc).__name__})"
            self._close_sock()
        finally:
            self._done.release()

    def _answer(self, limit: int) -> None:
        for _ in range(limit):
            try:
                packet, peer = self.sock.recvfrom(QUERY_MAX)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            query = parse_query(packet)
            if query is None:
                continue
            ident, flags, question, name = query
            if name in self.names:
                self.names[name] += 1
            elif len(self.names) < MAX_NAMES:
                self.names[name] = 1
            else:
                self.unrecorded += 1
            try:
                self.sock.sendto(reply(ident, flags, question), peer)
            except OSError:
                pass

    def _close_sock(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def finish(self, again: bool = False) -> dict:
        """Stop answering; what the command looked up, for the report.

        ``again``: the run starts again (its command never started), in a
        namespace that may be its session's, where this socket holds the
        run's address in a SO_REUSEPORT group: it is closed before that, or
        it would take some of the next attempt's queries and answer none."""
        if self.relay is not None:
            # the sandbox is gone: what is left are host-side ends; bounded wait
            self.relay.stop()
            self.relay = None
        names, unrecorded = dict(self.names), self.unrecorded
        if self.serving:
            # The sandbox is gone, so nothing is on its way: every query the
            # command waited for has been answered and counted.  Tell the
            # thread to leave and do not wait for it (waking it costs a
            # scheduling round, milliseconds on a busy machine); while it may
            # still run, its socket and pipe stay open (process exit closes
            # them), so no descriptor number is reused under it.
            os.write(self._stop_w, b"x")
            if self._done.acquire(again, 5 if again else -1):
                self._close_sock()
                os.close(self._stop_r)
                os.close(self._stop_w)
        elif self.bridge is not None and not self.bridge.wrapped and self.fallback is None:
            self.fallback = "the run did not start"
        if self.bridge is not None:
            self.bridge.close()
            self.channel.close()
        result = {"mode": "none", "names_recorded": self.fallback is None,
                  "lookups": [{"name": n, "queries": c} for n, c in names.items()],
                  "queries_unrecorded": unrecorded}
        if self.fallback is not None:
            result["names_not_recorded_because"] = self.fallback
        if self.failed is not None:
            result["resolver_failed"] = self.failed
        return result


def _builtin_profiles_allowing(names: list[str]) -> dict[str, str]:
    """name -> the built-in profile whose own rules allow it (only when asked)."""
    try:
        import tomllib

        from sandbox import resources

        found: dict[str, str] = {}
        for path in sorted(resources.profiles_dir().glob("*.toml")):
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
            if data.get("network", {}).get("mode") != "proxy":
                continue
            hosts = [r.get("host", "") for r in data.get("network", {}).get("allow", [])]
            for name in names:
                if name not in found and any(
                        h == name or (h.startswith("*.") and name.endswith(h[1:])) for h in hosts):
                    found[name] = path.stem
        return found
    except Exception:  # noqa: BLE001 - advice only
        return {}


def _local_names() -> set[str]:
    """Names this machine answers itself: a client that finds only an IPv4
    entry in /etc/hosts still asks DNS for the IPv6 one, which is no attempt
    to reach the network."""
    names = {OWN_HOSTNAME, "localhost"}
    try:
        with open("/etc/hosts", encoding="utf-8", errors="replace") as fh:
            for line in fh.read(1 << 20).splitlines():
                names.update(w.lower() for w in line.split("#", 1)[0].split()[1:])
    except OSError:
        pass
    return names


def summary(result: dict, profile: str) -> list[str]:
    """Lines for stderr, in the egress proxy's style."""
    from sandbox.errors import printable

    if not result["lookups"] and not result["queries_unrecorded"]:
        return []
    local = _local_names()
    lookups = [item for item in result["lookups"] if item["name"] not in local
               and not item["name"].endswith(".localhost")]
    if not lookups and not result["queries_unrecorded"]:
        return []
    lines = []
    # no counts: one lookup is one or two queries (A and AAAA), retries more
    for item in lookups[:SUMMARY_LINES]:
        lines.append(f"sandbox: blocked name lookup {printable(item['name'], 253)} - "
                     f"no network (profile '{profile}')")
    extra, unrecorded = len(lookups) - SUMMARY_LINES, result["queries_unrecorded"]
    if extra > 0 or unrecorded:
        what = [f"{extra} more name(s)"] if extra > 0 else []
        if unrecorded:
            what.append(f"{unrecorded} queries for names beyond the first {MAX_NAMES}")
        lines.append(f"sandbox: ... and {', '.join(what)}; see --report")
    names = [item["name"] for item in lookups]
    builtin = _builtin_profiles_allowing(names)
    profiles = sorted(set(builtin.values()))
    if profiles:
        which = ", ".join(f"--profile {p} ({', '.join(n for n in names if builtin.get(n) == p)})"
                          for p in profiles)
        lines.append(f"sandbox: built-in profiles that allow them: {which}")
    if len(builtin) < len(names):
        lines.append("sandbox: to reach a host, use a profile that extends this one with "
                     "[network] mode = \"proxy\" and a [[network.allow]] rule naming it, "
                     f"or for one run --allow-host NAME (see {_doc('network.md')})")
    return lines


def _doc(name: str) -> str:
    from sandbox import resources  # pathlib: only when there is something to say

    return resources.doc(name)


# Clients that retry a failed lookup as if the network might come back.
# Without network it cannot: npm retries even "no such name" (ENOTFOUND) for
# about 70 s by default, pip five times with back-off (about 8 s), cargo
# three times (about 10 s).  Set only in runs without network, and only
# where the caller has not set them.
OFFLINE_ENV = (("npm_config_fetch_retries", "0"), ("PIP_RETRIES", "0"), ("CARGO_NET_RETRY", "0"))


def offline_env() -> dict[str, str]:
    return dict(OFFLINE_ENV)
