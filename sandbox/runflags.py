"""The per-call flags of ``sandbox run``: ``--timeout``, ``--env-pass``,
``--network`` and ``--allow-host``.

What a coding-agent plugin varies from one command to the next.  Two jobs:

* ``normalize``: check the raw values and put them in one canonical form.
  Both parsers call it (the fast path in ``sandbox.__main__`` and the typer
  CLI), so they agree on every value, and the cached plan is keyed on the
  canonical form (``sandbox.plancache.key``).  It is on the fast path: string
  methods only, no ``re``, no ``ipaddress``.  A bad value raises
  ``FlagError`` naming the flag and the fix.
* ``apply``: turn the flags into the policy a run uses, with a
  ``Weakening`` for each protection they remove (``--env-pass``,
  ``--allow-host``, ``--network proxy`` on a profile without network).  Only
  ``app.prepare`` calls it, when a plan is built; ``--timeout`` is not part
  of the plan and is applied when the run starts (``timeout_plan``).
"""

from __future__ import annotations

MAX_TIMEOUT = 1_000_000  # seconds (11.5 days): select() and the clock stay exact below it
NETWORK_MODES = ("none", "proxy")
_NAME_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME_REST = _NAME_FIRST | frozenset("0123456789")
_DIGITS = frozenset("0123456789")


class FlagError(ValueError):
    """A bad value for one of these flags: ``flag`` says which, ``hint`` the fix."""

    def __init__(self, flag: str, message: str, hint: str) -> None:
        super().__init__(f"{flag}: {message}")
        self.flag = flag
        self.message = f"{flag}: {message}"
        self.hint = hint


def parse_timeout(raw) -> int | float | None:
    """``--timeout SECONDS``: a positive number (``30``, ``1.5``), or None."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        raise FlagError("--timeout", f"{raw!r} is not a number of seconds", "e.g. --timeout 30")
    if isinstance(raw, (int, float)):
        value = float(raw)
    else:
        text = str(raw)
        whole, dot, frac = text.partition(".")
        # digits with at most one dot: no "inf", "nan", "1e9", "1_000" or signs
        if (not (whole or frac) or not _DIGITS.issuperset(whole) or not _DIGITS.issuperset(frac)
                or (dot and not frac and not whole)):
            raise FlagError("--timeout", f"{text!r} is not a number of seconds",
                            "give a positive number, e.g. --timeout 30 or --timeout 0.5")
        value = float(text)
    if not value > 0:  # also NaN
        raise FlagError("--timeout", f"{raw!r} is not positive",
                        "give a positive number of seconds, e.g. --timeout 30; leave the flag "
                        "out for no per-call timeout")
    if value > MAX_TIMEOUT:
        raise FlagError("--timeout", f"{raw!r} is more than {MAX_TIMEOUT} seconds",
                        "leave the flag out for no per-call timeout")
    return int(value) if value.is_integer() else value


def parse_env_name(raw: str) -> str:
    """``--env-pass NAME``: an environment variable name (letters, digits, ``_``)."""
    if (not raw or raw[0] not in _NAME_FIRST or not _NAME_REST.issuperset(raw)):
        shown = raw if raw.isprintable() else repr(raw)
        hint = ("give the variable's name only, e.g. --env-pass NPM_TOKEN (its value comes from "
                "your environment)" if "=" in raw else
                "a name is letters, digits and '_', not starting with a digit, e.g. --env-pass CI")
        raise FlagError("--env-pass", f"{shown!r} is not an environment variable name", hint)
    return raw


def parse_network(raw: str | None) -> str | None:
    if raw is None:
        return None
    if raw not in NETWORK_MODES:
        raise FlagError("--network", f"{raw!r} is not a network mode",
                        "use --network none (no network at all) or --network proxy (only what "
                        "the profile's rules and --allow-host allow)")
    return raw


def parse_allow_host(raw: str) -> str:
    """``--allow-host HOST[:PORT]`` in the form ``host:port`` (``[v6]:port``).

    The port defaults to 443, as in a ``[[network.allow]]`` rule.  Only the
    shape is checked here; the host itself is checked like a rule's host
    (``netrules.validate_pattern``) when the plan is built.
    """
    hint = ("write HOST or HOST:PORT, e.g. --allow-host pypi.org or --allow-host "
            "127.0.0.1:8080 ([::1]:8080 for an IPv6 address); without a port, 443")
    text = raw.strip()
    if text != raw or not text or any(c in text for c in "/@ \t"):
        raise FlagError("--allow-host", f"{raw!r} is not HOST[:PORT]", hint)
    if text.startswith("["):
        host, close, rest = text[1:].partition("]")
        if not close or not host or (rest and not rest.startswith(":")):
            raise FlagError("--allow-host", f"{raw!r} is not HOST[:PORT]", hint)
        port = rest[1:] if rest else ""
        if rest and not port:
            raise FlagError("--allow-host", f"{raw!r} has no port after ':'", hint)
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not host or not port:
            raise FlagError("--allow-host", f"{raw!r} is not HOST[:PORT]", hint)
    else:  # a name, or an IPv6 address without a port
        host, port = text, ""
    if port:
        if not _DIGITS.issuperset(port) or not 1 <= int(port) <= 65535:
            raise FlagError("--allow-host", f"port {port!r} in {raw!r} is not 1 to 65535", hint)
        port_number = int(port)
    else:
        port_number = 443
    host = host.lower()
    return f"[{host}]:{port_number}" if ":" in host else f"{host}:{port_number}"


def split_host(canonical: str) -> tuple[str, int]:
    """``parse_allow_host``'s form back into (host, port)."""
    host, _, port = canonical.rpartition(":")
    return host.strip("[]"), int(port)


def normalize(timeout=None, env_pass=(), network=None, allow_host=()) -> tuple:
    """All four flags, checked and canonical: (timeout, env_pass, network, allow_host)."""
    names = tuple(dict.fromkeys(parse_env_name(n) for n in env_pass))
    hosts = tuple(dict.fromkeys(parse_allow_host(h) for h in allow_host))
    mode = parse_network(network)
    if mode == "none" and hosts:
        raise FlagError("--allow-host", "--network none turns the network off, so there is "
                        "nothing for --allow-host to open",
                        "drop one of the two: --allow-host implies --network proxy")
    return parse_timeout(timeout), names, mode, hosts


# -- the plan: flags -> policy -------------------------------------------------

def apply(policy, opts, environ: dict[str, str]):
    """The policy with the flags' network and environment changes, and a
    ``Weakening`` for each protection they remove."""
    import dataclasses

    from sandbox.policy import NetworkMode, Weakening

    changes: dict = {}
    weakened: list = []
    mode = getattr(opts, "network", None)
    hosts = getattr(opts, "allow_host", ())
    kept = policy.weakenings
    if mode == "none":  # tightens any profile: no proxy, no rules, no host port forwards
        changes.update(network=NetworkMode.NONE, egress_allow=(), egress_deny=(),
                       egress_hosts=(), forwards=())
        # what the profile opened is closed again: no longer a weakening
        kept = tuple(w for w in kept if not w.key.startswith("network."))
    elif mode == "proxy" or hosts:
        if policy.network is NetworkMode.NONE:
            source = "--network proxy" if mode == "proxy" else "--allow-host"
            rules = ("the --allow-host rules" if hosts
                     else "no allow rules: every request is refused")
            weakened.append(Weakening(source, "network.mode",
                                      f"none -> proxy (the command reaches the egress proxy; "
                                      f"{rules})"))
        rules = tuple(_rule(h) for h in hosts)
        known = {r.as_tuple()[:4] for r in policy.egress_allow}
        new = tuple(r for r in rules if r.as_tuple()[:4] not in known)
        weakened += [Weakening("--allow-host", "network.allow",
                               f"added {h}") for h, r in zip(hosts, rules) if r in new]
        changes.update(network=NetworkMode.PROXY, egress_allow=policy.egress_allow + new)
    names = getattr(opts, "env_pass", ())
    if names:
        for name in names:
            weakened.append(Weakening("--env-pass", "env.pass",
                                      f"added {name}" + _secret_note(name, policy, environ)))
        changes["env_pass"] = tuple(dict.fromkeys(policy.env_pass + names))
    if not changes:
        return policy
    changes["weakenings"] = kept + tuple(weakened)
    return dataclasses.replace(policy, **changes)


def _secret_note(name: str, policy, environ: dict[str, str]) -> str:
    """Said loudly when the variable is one the filter would have removed: passing
    it is the user's explicit choice, but never a silent one."""
    from sandbox import envfilter

    if envfilter.is_denied(name, policy):
        return (" - a SECRET by its name (an [env] deny pattern of the profile): its value "
                "reaches the command")
    if envfilter.secret_value(environ.get(name, "")):
        return " - its value is a SECRET (a token or credential): it reaches the command"
    return ""


def secret_flags(names, environ: dict[str, str]) -> tuple:
    """Which ``--env-pass`` values are secrets now: part of the plan's key, as
    the weakening's words (``_secret_note``) depend on it."""
    if not names:
        return ()
    from sandbox import envfilter

    return tuple(envfilter.secret_value(environ.get(n, "")) for n in names)


def _rule(canonical: str):
    from sandbox.egress import netrules
    from sandbox.errors import UsageError
    from sandbox.policy import EgressRule

    host, port = split_host(canonical)
    try:
        host = netrules.validate_pattern(host)
    except netrules.RuleError as err:
        raise UsageError(f"--allow-host {canonical}: {err.message}", hint=err.hint) from None
    return EgressRule(host, (port,), source=f"--allow-host {canonical}")


# -- the run: --timeout --------------------------------------------------------

def timeout_plan(limits: dict | None, timeout) -> tuple[dict | None, str]:
    """The limits with the per-call timeout, and which setting decided it.

    A profile's ``timeout_seconds`` and ``--timeout`` both apply: the shorter
    one wins, so a flag can shorten a profile's limit but never lengthen it.
    """
    own = (limits or {}).get("timeout")
    if not timeout or (own and own <= timeout):
        return limits, "limits.timeout_seconds"
    return {**(limits or {"rlimits": (), "cgroup": ()}), "timeout": timeout}, "--timeout"
