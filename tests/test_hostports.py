"""``sandbox.egress.hostports`` (the grants as data) and ``sandbox.egress.forward`` (the relay).

The grants: every key, every bad value, the merge through ``extends`` and
the policy cache's plain-data form.  The relay: run in this process on
real loopback sockets (the listener stands for the one the bridge makes
inside the sandbox; tests/test_forward.py runs it through the real
sandbox): bytes both ways, a half-close each way, a service that is not
there, the connection limit, and stop.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from sandbox import policy, profile
from sandbox.egress import forward, hostports
from sandbox.errors import ProfileError


def parse(entry):
    return hostports.parse(entry, "p: network.forward[1]")


def test_a_grant_and_its_defaults():
    assert parse({"port": 5432}) == ("127.0.0.1", 5432, 5432, "", "p: network.forward[1]")
    assert parse({"port": 6379, "host": "::1", "inside_port": 16379, "name": "redis"}) == (
        "::1", 6379, 16379, "redis", "p: network.forward[1]")
    assert hostports.describe(parse({"port": 6379, "host": "::1", "name": "r"})) == \
        "host [::1]:6379 reachable inside at 127.0.0.1:6379 (r)"


@pytest.mark.parametrize("entry,key,words", [
    ({}, "port", "is required"),
    ({"port": True}, "port", "integer port number"),
    ({"port": 5432.0}, "port", "integer port number"),
    ({"port": 0}, "port", "between 1 and 65535"),
    ({"port": 65536}, "port", "between 1 and 65535"),
    ({"port": 1, "inside_port": -1}, "inside_port", "between 1 and 65535"),
    ({"port": 1, "host": "0.0.0.0"}, "host", "not the host's loopback"),
    ({"port": 1, "host": "127.0.0.2"}, "host", "not the host's loopback"),
    ({"port": 1, "host": "::ffff:127.0.0.1"}, "host", "not the host's loopback"),
    ({"port": 1, "host": 1}, "host", "not the host's loopback"),
    ({"port": 3128}, "port", "egress proxy's port"),
    ({"port": 1, "inside_port": 3128}, "inside_port", "egress proxy's port"),
    ({"port": 53}, "port", "name resolver's port"),
    ({"port": 1, "name": "x" * 65}, "name", "short printable"),
    ({"port": 1, "name": "a\nb"}, "name", "short printable"),
    ({"port": 1, "comment": "x"}, "comment", "unknown key"),
])
def test_bad_grants(entry, key, words):
    with pytest.raises(hostports.GrantError) as err:
        parse(entry)
    assert err.value.key == key and words in str(err.value) and err.value.hint


def _load(tmp_path, **files) -> policy.Policy:
    for name, text in files.items():
        (tmp_path / f"{name}.toml").write_text(text)
    ctx = profile.Context(str(tmp_path), str(tmp_path / "home"), "/tmp", "/run")
    return profile.load(str(tmp_path / f"{list(files)[-1]}.toml"), ctx)[0]


def test_grants_merge_through_extends_and_each_is_a_weakening(tmp_path):
    pol = _load(tmp_path, base='[[network.forward]]\nport = 5432\n',
                child='extends = "./base.toml"\n[[network.forward]]\nport = 5432\nname = "pg"\n'
                      '[[network.forward]]\nport = 6379\n')
    assert [g[:4] for g in pol.forwards] == [("127.0.0.1", 5432, 5432, ""),
                                             ("127.0.0.1", 6379, 6379, "")]
    assert [w.source for w in pol.weakenings if w.key == "network.forward"] == \
        ["base", "child", "child"]
    # the policy cache's plain data comes back equal
    assert policy.from_data(policy.to_data(pol)) == pol


def test_a_root_profile_without_a_parent_still_records_its_grants(tmp_path):
    pol = _load(tmp_path, solo='extends = "none"\n[[network.forward]]\nport = 5432\n')
    assert any(w.key == "network.forward" and "5432" in w.detail for w in pol.weakenings)


def test_an_inside_port_granted_twice_across_the_chain_is_an_error(tmp_path):
    with pytest.raises(ProfileError) as err:
        _load(tmp_path, base='[[network.forward]]\nport = 5432\n',
              child='extends = "./base.toml"\n[[network.forward]]\nport = 5433\n'
                    'inside_port = 5432\n')
    assert "child.toml" in err.value.one_line() and "inside port 5432 is granted twice" in \
        err.value.one_line() and "network.forward[1]" in err.value.one_line()


def test_too_many_grants(tmp_path):
    text = "".join(f"[[network.forward]]\nport = {10000 + i}\n" for i in range(33))
    with pytest.raises(ProfileError) as err:
        _load(tmp_path, many=text)
    assert "more than 32" in err.value.one_line()


def test_forward_must_be_an_array_of_tables(tmp_path):
    with pytest.raises(ProfileError) as err:
        _load(tmp_path, bad='[network]\nforward = 5432\n')
    assert "network.forward" in err.value.one_line() and "array of tables" in err.value.one_line()


# -- the relay, in this process --------------------------------------------------------------

class _Service:
    """Echo service: reads to EOF, answers, closes (or, greet=True, talks first)."""

    def __init__(self, greet: bool = False) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.greet = greet
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn) -> None:
        with conn:
            if self.greet:
                conn.sendall(b"hello\n")
                conn.shutdown(socket.SHUT_WR)  # the service half-closes first
                conn.recv(100)  # what the client still sends after our FIN
                return
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            conn.sendall(b"%d:" % len(data) + data[:8])


@pytest.fixture
def relay_for():
    made = []

    def make(service_port: int, host: str = "127.0.0.1"):
        inside = socket.socket()
        inside.bind(("127.0.0.1", 0))
        inside.listen(16)
        counters = forward.Counters(1)
        grant = [(host, service_port, inside.getsockname()[1], "svc")]
        relay = forward.Relay([(inside, 0)], grant, counters)
        relay.start()
        made.append(relay)
        return inside.getsockname()[1], counters, grant

    yield make
    for relay in made:
        relay.stop()


def _client(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := c.recv(65536):
            out += chunk
        return out


def test_bytes_go_both_ways_and_the_clients_half_close_passes_on(relay_for):
    service = _Service()
    port, counters, grant = relay_for(service.port)
    payload = bytes(range(256)) * 4096  # 1 MiB: many rounds of the 64 KiB buffer
    assert _client(port, payload) == b"1048576:" + payload[:8]
    assert _client(port, b"x") == b"1:x"
    counts = counters.read(0)
    assert counts["connections"] == 2 and counts["bytes_to_host"] == len(payload) + 1
    assert counts["bytes_from_host"] == len(b"1048576:" + payload[:8]) + 3
    assert forward.report(grant, counters)[0]["name"] == "svc"
    assert forward.summary(grant, counters) == []


def test_the_services_half_close_passes_on_and_the_client_can_still_send(relay_for):
    service = _Service(greet=True)
    port, counters, _ = relay_for(service.port)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        f = c.makefile("rb")
        assert f.readline() == b"hello\n"
        assert f.read() == b""  # the service's FIN arrived as a FIN
        c.sendall(b"late")  # our direction is still open
        c.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + 5
    while counters.read(0)["bytes_to_host"] < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert counters.read(0)["bytes_to_host"] == 4


def test_a_service_that_is_not_there_resets_the_client_and_is_counted(relay_for):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))  # bound, not listening: refused
    port, counters, grant = relay_for(probe.getsockname()[1])
    try:
        with pytest.raises(ConnectionResetError):
            _client(port, b"x")
    finally:
        probe.close()
    assert counters.read(0)["failed"] == 1 and counters.read(0)["connections"] == 0
    assert "1 connection(s) failed" in forward.summary(grant, counters)[0]


def test_connections_beyond_the_limit_are_reset_and_counted(relay_for, monkeypatch):
    monkeypatch.setattr(forward, "MAX_CONNECTIONS", 1)
    service = _Service()
    port, counters, _ = relay_for(service.port)
    held = socket.create_connection(("127.0.0.1", port), timeout=10)  # stays open
    deadline = time.monotonic() + 5
    while counters.read(0)["connections"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        _client(port, b"x")
    assert counters.read(0)["refused"] == 1
    held.sendall(b"ok")
    held.shutdown(socket.SHUT_WR)
    assert held.recv(100) == b"2:ok"
    held.close()


def test_stop_closes_every_connection(relay_for):
    service = _Service()
    inside = socket.socket()
    inside.bind(("127.0.0.1", 0))
    inside.listen(4)
    relay = forward.Relay([(inside, 0)], [("127.0.0.1", service.port, 0, "")],
                          forward.Counters(1))
    relay.start()
    c = socket.create_connection(inside.getsockname(), timeout=10)
    c.sendall(b"partial")
    time.sleep(0.1)
    relay.stop()
    c.settimeout(5)
    with pytest.raises(ConnectionResetError):
        while c.recv(100):
            pass
    c.close()
