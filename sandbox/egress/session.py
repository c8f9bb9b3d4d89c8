"""A run's egress: the plan the proxy needs, the command's proxy variables,
the proxy's lifetime around the run, and what it refused, in plain words.

The proxy itself is ``sandbox.egress.proxy`` (HTTP on the host), its decisions are
``sandbox.egress.netrules`` (pure), and the namespace it serves is ``sandbox.egress.netns``.
This module only wires them to a run; ``runner`` does the forking.
"""

from __future__ import annotations

import os

# netns, not policy: this module is on the cached fast path, and policy
# pulls in dataclasses (milliseconds per start)
from sandbox.egress.netns import PROXY_HOST, PROXY_PORT

PROXY_URL = f"http://{PROXY_HOST}:{PROXY_PORT}"
# Servers the command starts on its own loopback stay direct: an empty
# NO_PROXY would send them through the proxy, which refuses them.
NO_PROXY = "localhost,127.0.0.1,::1"
MAX_EVENTS_BYTES = 4 << 20  # the proxy writes at most 1000 lines; this bounds the read
SUMMARY_LINES = 5
MAX_CONNECTIONS = 4096  # network.max_connections = 0
PR_SET_PDEATHSIG, SIGKILL, PR_SET_DUMPABLE = 1, 9, 4


def plan(policy) -> dict | None:
    """What the proxy process needs, as plain data (it is cached with the plan)."""
    if policy.network.value != "proxy":
        return None

    data = {"profile": policy.name, "allow": [r.as_tuple() for r in policy.egress_allow],
            "deny": [r.as_tuple() for r in policy.egress_deny], "hosts": [list(p) for p in policy.egress_hosts],
            "max_connections": policy.egress_max_connections or MAX_CONNECTIONS,
            # where real values come from, never the values (the plan is cached on disk)
            "credentials": list(policy.egress_credentials), "headers": list(policy.egress_headers)}
    inspected = [r.host for r in policy.egress_allow if r.inspect]
    if inspected:  # the proxy makes a CA for these at start (sandbox.egress.tlsca)
        data["inspect"] = inspected
    return data


def no_proxy(data: dict | None = None) -> str:
    """NO_PROXY for a run: loopback stays direct, except what an allow rule
    names.  A rule naming 127.0.0.1 (or localhost, ::1) means the *host's*
    loopback through the proxy; with the address in NO_PROXY clients would
    go to the sandbox's own loopback instead, where nothing answers.  The
    command's own servers are then reached by the names left direct."""
    named = {rule[0] for rule in (data or {}).get("allow", ())}
    return ",".join(n for n in NO_PROXY.split(",") if n not in named)


def proxy_env(data: dict | None = None, port: int = PROXY_PORT) -> dict[str, str]:
    """The variables that send the command's clients to the proxy.

    Both spellings, because tools disagree (curl reads only lower-case
    http_proxy; Python reads either); npm/pnpm and yarn have their own
    names, and Node's built-in fetch reads the variables only when
    NODE_USE_ENV_PROXY is set (Node 24+).  ``port``: this run's proxy
    (a run that joins a session's namespace has its own, sandbox.egress.netsession).
    """
    url = PROXY_URL if port == PROXY_PORT else f"http://{PROXY_HOST}:{port}"
    env: dict[str, str] = {}
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        env[name] = env[name.upper()] = url
    env["no_proxy"] = env["NO_PROXY"] = no_proxy(data)
    for name in ("npm_config_proxy", "npm_config_https_proxy", "YARN_HTTP_PROXY",
                 "YARN_HTTPS_PROXY"):
        env[name] = url
    env["NODE_USE_ENV_PROXY"] = "1"
    return env


def build_rules(data: dict):
    from sandbox.egress import netrules
    from sandbox.policy import EgressRule

    return netrules.Rules([EgressRule.from_tuple(r) for r in data["allow"]],
                          [EgressRule.from_tuple(r) for r in data["deny"]],
                          tuple(tuple(p) for p in data["hosts"]))


class Session:
    """The proxy process for one run: started before bwrap, stopped after it."""

    def __init__(self, data: dict, mode: str = "auto", secrets: list | None = None,
                 member=None, forwards=None) -> None:
        import _socket  # the C module: ``socket`` costs milliseconds to import

        from sandbox import runner
        from sandbox.egress import netns

        self.data = data
        # [[network.forward]] (sandbox.egress.forward): relayed by the proxy process,
        # counted where the wrapper reads it after the proxy has gone
        self.forwards = forwards or []
        counters = None
        if self.forwards:
            from sandbox.egress import forward

            counters = forward.Counters(len(self.forwards))
        self.counters = counters
        # The proxy's refusals go to an anonymous in-memory file: the command
        # cannot reach it, and it survives the proxy being killed.
        self.events_fd = _anonymous_file("sandbox-egress-events")
        try:
            proxy_end, launcher_end = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        except OSError:
            os.close(self.events_fd)
            raise
        events_fd, wrapper = self.events_fd, os.getpid()
        # TLS inspection: the proxy sends the run CA's certificate back here
        ca_read, ca_write = os.pipe() if data.get("inspect") else (None, None)
        self.ca_fd, self.trust = ca_read, None
        # the bundle's pipe to bwrap, for runner.run (see ``inspect``): (read end, release)
        self.gate: tuple | None = None
        self._gate_fds: list[int] = []
        self._ca_pending: int | None = None  # the CA pipe, between inspect and release

        def main() -> None:
            launcher_end.close()
            if ca_read is not None:
                os.close(ca_read)
            _proxy_main(proxy_end, data, events_fd, wrapper, ca_write, secrets,
                        (self.forwards, counters))

        try:
            self.pid = runner.fork_helper(main)
        except OSError:
            launcher_end.close()
            os.close(self.events_fd)
            raise
        finally:
            proxy_end.close()
            if ca_write is not None:
                os.close(ca_write)
        # "host" (macOS): no namespace to make; the listener is handed over
        # on the channel directly (sandbox.linux.fallback.hand_proxy_listener)
        self.bridge = (_HostChannel(launcher_end) if mode == "host" else
                       netns.Bridge(launcher_end, mode, member, [g[2] for g in self.forwards]))
        self.result: dict | None = None

    def inspect(self, argv, status, seccomp, env, gated: bool = False):
        """For a profile that inspects TLS: bind the combined bundle over the
        system's inside (``sandbox.egress.tlstrust``); returns the argv, its moved
        option indexes and the command's env.

        Not ``gated``: the run CA's certificate is waited for here, before
        bwrap starts, and the bundle is a file bound inside.  ``gated``
        (bwrap): the bundle reaches bwrap through a pipe
        (``--ro-bind-data``), and ``self.gate`` is set for ``runner.run``,
        which starts bwrap and then calls ``release``: that writes the roots,
        waits for the certificate while bwrap makes its other mounts, and
        writes it last.  bwrap reads the pipe to its end before it goes on,
        so the command cannot start with an incomplete bundle.  If the CA
        cannot be made, ``release`` raises and the runner kills bwrap before
        the pipe's write end closes (end-of-file would give the command the
        roots alone: inspected hosts would fail, nothing else would open,
        but the run is refused instead, as without the gate).
        """
        if self.ca_fd is None and self.trust is None:
            return argv, status, seccomp, env
        from sandbox.egress import tlstrust

        if self.trust is None:
            fd, self.ca_fd = self.ca_fd, None
            try:
                # the roots are written while the proxy is still making the
                # CA; only its certificate is waited for
                try:
                    trust = tlstrust.Trust(env, None if gated else
                                           tlstrust.state_dir(os.environ))
                except BaseException:
                    os.close(fd)
                    raise
                if gated:
                    self.trust, self._ca_pending = trust, fd
                    self._gate_fds = list(os.pipe())
                    self.gate = (self._gate_fds[0], self.release)
                    return (*trust.argv(argv, status, seccomp, data_fd=self._gate_fds[0]),
                            {**env, **trust.env()})
                try:
                    trust.add_ca(tlstrust.read_ca(fd))
                except BaseException:
                    trust.remove()
                    raise
                self.trust = trust
            except OSError as exc:
                raise _bundle_error(exc) from None
        return (*self.trust.argv(argv, status, seccomp), {**env, **self.trust.env()})

    def release(self) -> None:
        """Called by the runner once bwrap runs (gated ``inspect``): the
        bundle through bwrap's pipe, the run CA's certificate last.  Raises
        (SetupError) if the CA cannot be made; bwrap is then killed by the
        runner before ``finish`` closes the pipe."""
        from sandbox.egress import tlstrust

        read_end, write_end = self._gate_fds
        os.close(read_end)  # bwrap has its own copy now
        self._gate_fds = [write_end]
        fd, self._ca_pending = self._ca_pending, None
        try:
            # blocks until bwrap reads, after its other mounts: the proxy
            # makes the CA meanwhile
            _write_all(write_end, self.trust.roots)
        except BrokenPipeError:  # bwrap gave up before: the runner reports why
            os.close(fd)
            return
        ca = tlstrust.read_ca(fd)  # closes fd; raises if the CA was not made
        try:
            _write_all(write_end, ca.rstrip(b"\n") + b"\n")
        except BrokenPipeError:
            return
        self._gate_fds = []
        os.close(write_end)  # end-of-file: bwrap binds the bundle and goes on

    def finish(self) -> dict:
        """Stop the proxy (once); return what it saw, for the report."""
        if self.result is not None:
            return self.result
        from sandbox import runner

        self.bridge.close()
        exited, status = runner.stop_helper(self.pid)
        if self.ca_fd is not None:
            os.close(self.ca_fd)
            self.ca_fd = None
        if self._ca_pending is not None:
            os.close(self._ca_pending)
            self._ca_pending = None
        for fd in self._gate_fds:  # bwrap is gone by now (runner.run returned)
            os.close(fd)
        self._gate_fds = []
        if self.trust is not None:
            self.trust.remove()
        events, stats = _read_events(self.events_fd)
        os.close(self.events_fd)
        result = {"proxy": f"{PROXY_HOST}:{self.bridge.port}", "blocked": events,
                  "allowed_count": stats.get("allowed", 0),
                  "blocked_count": stats.get("blocked", len(events)),
                  "events_dropped": stats.get("dropped_events", 0)}
        if exited:
            # it stopped before we asked: from then on the command had no
            # route at all (the listening socket died with it)
            result["proxy_died"] = (f"killed by signal {-status}" if status < 0
                                    else f"exit status {status}")
        self.result = result
        return result


class _HostChannel:
    """The launcher's end of the proxy's channel, where no network namespace is made."""

    def __init__(self, channel) -> None:
        self.channel = channel
        self.port = None  # the host loopback port, once the listener is made (sandbox.execute)

    def close(self) -> None:
        self.channel.close()


def _anonymous_file(name: str) -> int:
    """A file only this process and its helpers hold: a memfd on Linux, an
    unlinked temporary file elsewhere (macOS has no memfd_create)."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create(name, os.MFD_CLOEXEC)
    import tempfile

    with tempfile.TemporaryFile(prefix=name) as fh:
        return os.dup(fh.fileno())


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _bundle_error(exc: OSError):
    from sandbox.errors import SetupError

    return SetupError(f"cannot write the CA bundle for TLS inspection: "
                      f"{exc.strerror or exc}; the command was not run")


def _proxy_main(channel, data: dict, events_fd: int, wrapper: int, ca_fd: int | None = None,
                secrets: list | None = None, forwards=((), None)) -> None:
    """In the forked proxy process: wait for the first connection, then serve.

    The proxy's modules (h11, the rules, threading) cost about 30 ms of CPU
    to import.  Importing them only once the command first connects keeps
    that off the start of every run (on two cores it would compete with
    bwrap); the first request waits for it instead, and a command that never
    uses the network never pays it.  Until then this process needs nothing
    but the C socket layer, and it leaves when the wrapper does.
    """
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    keep = {channel.fileno(), events_fd, ca_fd}
    for name in os.listdir("/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    import select

    # not ctypes: 1.4 ms more, before the CA an inspecting run waits for
    from sandbox import libc

    # die with the wrapper (SIGKILL included); checked once more after, in
    # case it died before the request took effect
    if hasattr(os, "memfd_create"):  # Linux; elsewhere the ppid checks below suffice
        libc.function("prctl")(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
    if os.getppid() != wrapper:
        return
    # TLS inspection: the CA is made now, while bwrap starts; the wrapper
    # waits for its certificate (the key stays in this process)
    inspector = _make_inspector(data, ca_fd) if ca_fd is not None else None
    rules = None
    if inspector is not None:
        # a profile that inspects will use the network: load the host's
        # roots and mint the named hosts' leaves now, while the command
        # starts, rather than on its first request
        rules = build_rules(data)
        try:
            inspector.warm(rules)
        except Exception:  # noqa: BLE001 - made again when needed, and refused in words then
            pass
    from sandbox.egress import netns

    try:
        listener, forwarded = netns.receive(channel)
    except OSError:
        listener, forwarded = None, []
    channel.close()
    if listener is None:
        return  # the bridge was not made: nothing to serve
    if forwarded:  # [[network.forward]]: relayed from now on, whatever the proxy does
        from sandbox.egress import forward

        forward.start(forwarded, *forwards)
    while not select.select([listener], [], [], 0.5)[0]:
        if os.getppid() != wrapper:
            return  # the wrapper is gone (belt and braces: the death signal ends us too)
    import socket

    from sandbox.egress import proxy

    guard = None
    if data.get("credentials") or data.get("headers"):
        # the real values came with the fork (sandbox.egress.credentials.Vault), never through a file
        from sandbox.egress import provenance

        guard = provenance.Guard(data, secrets or [])
    if rules is None:
        rules = build_rules(data)
    proxy.serve_listener(socket.socket(fileno=listener), rules, events_fd,
                         proxy.Limits(max_connections=data["max_connections"]), inspector,
                         guard=guard)


def _make_inspector(data: dict, ca_fd: int):
    """The run's CA, in this process only; its certificate goes to ``ca_fd``.

    bwrap waits for that certificate before it starts the command, so only
    what the CA needs is imported first (``cryptography``'s key code, about
    15 ms: the certificates are laid out by ``sandbox.egress.x509der``);
    the inspector's HTTP side comes after, while the command starts.
    """
    ca = None
    try:
        from sandbox import libc

        # nothing of this process may be read through /proc or a core dump,
        # not even by the caller's other processes: it holds the CA key
        if libc.function("prctl")(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            raise OSError(libc.errno(), "prctl(PR_SET_DUMPABLE, 0) failed")
        from sandbox.egress import tlsca

        ca = tlsca.RunCA(data["inspect"])
        message = ca.cert_pem
    except Exception as exc:  # noqa: BLE001 - the wrapper says it, and does not run the command
        message = f"{type(exc).__name__}: {exc}".encode("ascii", "replace")
    try:
        while message:
            message = message[os.write(ca_fd, message):]
    except OSError:
        pass
    os.close(ca_fd)
    if ca is None:
        return None
    from sandbox.egress import tlsinspect

    return tlsinspect.Inspector(ca)


def _read_events(fd: int) -> tuple[list[dict], dict]:
    """The proxy's JSON event lines, and its closing ``stats A B D`` line."""
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, MAX_EVENTS_BYTES)
    events: list[dict] = []
    stats: dict = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        words = line.split()
        if len(words) == 4 and words[0] == "stats" and all(w.isdigit() for w in words[1:]):
            stats = dict(zip(("allowed", "blocked", "dropped_events"), map(int, words[1:])))
            continue
        import json  # only when something was blocked

        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and item.pop("type", None) == "blocked":
            events.append(item)
    return events, stats


def summary(result: dict, profile: str) -> list[str]:
    """A few lines for stderr, in words a person or a model can act on.

    The proxy records three kinds of refusal, told apart by the status it
    answered: 403 the profile does not allow it, other 4xx the request was
    malformed, 5xx the endpoint was allowed but could not be reached.
    """
    lines: list[str] = []
    counts: dict[tuple, int] = {}
    for event in result["blocked"]:
        key = (event.get("status") or 0, event.get("method") or "request",
               event.get("url") or event.get("host") or "?", event.get("reason") or "refused")
        counts[key] = counts.get(key, 0) + 1
    shown = list(counts.items())[:SUMMARY_LINES]
    for (status, method, url, reason), n in shown:
        times = f" ({n} times)" if n > 1 else ""
        if status == 403:
            lines.append(f"sandbox: blocked {method} {url} - {reason}{times} (profile '{profile}')")
        elif status == 495:  # TLS inspection: the client did not accept the run's certificate
            lines.append(f"sandbox: TLS inspection of {url} failed - {reason}{times}")
        elif 400 <= status < 500:
            lines.append(f"sandbox: refused a malformed {method} {url} - {reason}{times}")
        elif status in (502, 504):
            lines.append(f"sandbox: could not reach {url} ({method}) - {reason}{times}; "
                         "the profile allows it")
        else:  # 503 at the connection limit, 500 if the proxy failed itself
            lines.append(f"sandbox: the egress proxy turned away {method} {url} - {reason}{times}")
    more = result["blocked_count"] - sum(n for _, n in shown)
    if more > 0:
        lines.append(f"sandbox: ... and {more} more refused request(s); see --report")
    # only where a rule would help: not for Upgrade or method-override headers,
    # which the proxy refuses whatever the rules say
    if any(status == 403 and not reason.startswith(("Upgrade ", "header ", "foreign credential",
                                                    "blind tunnel"))
           for (status, _m, _u, reason) in counts):
        from sandbox import resources

        lines.append("sandbox: to allow an endpoint, add a [[network.allow]] rule to a profile "
                     f"that extends this one ({resources.doc('profiles.md')}); 'sandbox explain' "
                     "shows the rules")
    if any(status == 403 and reason.startswith("foreign credential")
           for (status, _m, _u, reason) in counts):
        lines.append("sandbox: a host with a [[network.credentials]] entry takes only the "
                     "session's credential: send the placeholder its variable holds "
                     "('sandbox explain' names it; docs/credentials.md)")
    if "proxy_died" in result:
        lines.append(f"sandbox: warning: the egress proxy stopped during the run "
                     f"({result['proxy_died']}); from then on the command had no network")
    return lines
