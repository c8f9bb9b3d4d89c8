"""The network bridge on its own: a real namespace, a real socket handed over."""

from __future__ import annotations

import os
import socket
import _socket

import pytest

from sandbox.egress import netns
from sandbox.egress.netns import PROXY_HOST, PROXY_PORT


def _in_child(body) -> tuple[int, bytes]:
    """Fork; the child runs body(write_fd) and exits.  Returns (status, what it wrote)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            os.close(r)
            body(w)
        except BaseException as exc:  # noqa: BLE001 - report anything
            os.write(w, f"ERROR {type(exc).__name__}: {exc}".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out


def test_listener_lives_in_a_namespace_with_only_loopback():
    proxy_end, launcher_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    bridge = netns.Bridge(_socket.socket(fileno=launcher_end.detach()))
    host_ns = os.readlink("/proc/self/ns/net")

    def child(w: int) -> None:
        proxy_end.close()
        bridge.enter()
        with open("/proc/net/dev") as fh:
            interfaces = [line.split(":")[0].strip() for line in fh.read().splitlines()[2:]]
        # the namespace's own loopback answers on the proxy's address
        probe = socket.create_connection((PROXY_HOST, PROXY_PORT), timeout=5)
        probe.sendall(b"ping")
        probe.close()
        os.write(w, f"{os.readlink('/proc/self/ns/net')} {','.join(interfaces)}".encode())

    status, out = _in_child(child)
    bridge.channel.close()
    assert status == 0, out
    ns, interfaces = out.decode().split()
    assert ns != host_ns
    assert interfaces == "lo"
    _, fds, _, _ = socket.recv_fds(proxy_end, 16, 1)
    listener = socket.socket(fileno=fds[0])
    assert listener.getsockname() == (PROXY_HOST, PROXY_PORT)
    # the host side accepts what was sent to 127.0.0.1 inside the namespace
    listener.settimeout(5)
    conn, _ = listener.accept()
    assert conn.recv(16) == b"ping"
    conn.close()
    # the listener is not reachable from the host's own loopback
    with pytest.raises(OSError):
        socket.create_connection((PROXY_HOST, PROXY_PORT), timeout=2).close()
    listener.close()
    proxy_end.close()


def test_closing_the_listener_leaves_nothing_to_connect_to():
    proxy_end, launcher_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    bridge = netns.Bridge(_socket.socket(fileno=launcher_end.detach()))
    go_r, go_w = os.pipe()

    def child(w: int) -> None:
        proxy_end.close()
        os.close(go_w)
        bridge.enter()
        os.read(go_r, 1)  # wait until the "proxy" has closed its socket
        try:
            socket.create_connection((PROXY_HOST, PROXY_PORT), timeout=5).close()
            os.write(w, b"connected")
        except OSError as exc:
            os.write(w, str(exc.errno).encode())

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        try:
            child(w)
        finally:
            os._exit(0)
    os.close(w)
    os.close(go_r)
    bridge.channel.close()
    _, fds, _, _ = socket.recv_fds(proxy_end, 16, 1)
    os.close(fds[0])  # the proxy dies: its socket goes with it
    os.close(go_w)
    out = os.read(r, 100)
    os.waitpid(pid, 0)
    os.close(r)
    import errno

    assert out == str(errno.ECONNREFUSED).encode()


def test_failure_names_the_stage():
    assert netns.describe_failure(1, 1) == ("cannot create the network namespace (unshare) for "
                                            "the egress proxy: Operation not permitted")


def test_a_bridge_that_cannot_be_made_stops_the_run_before_bwrap(tmp_path):
    """Fail closed: the child reports the failed stage and never execs."""
    import errno

    from sandbox import runner
    from sandbox.errors import SetupError

    marker = tmp_path / "ran"

    class Refused:
        mode = "direct"

        def enter(self) -> None:
            raise netns.StageFailed(1, errno.EPERM)

    with pytest.raises(SetupError) as info:
        runner.run(["/bin/sh", "-c", f"touch {marker}"], dict(os.environ), None, False,
                   bridge=Refused())
    assert str(info.value).startswith("cannot create the network namespace (unshare) for the "
                                      "egress proxy: Operation not permitted; the command was not run")
    assert not marker.exists()


def _bridged_run(tmp_path, mode: str, refuse_direct: bool):
    """Run a real sandboxed command through runner.run with a bridge in ``mode``."""
    import errno
    import shutil

    from sandbox import runner

    bwrap = shutil.which("bwrap")
    if bwrap is None:
        pytest.skip("bwrap is not installed")
    proxy_end, launcher_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    class Bridge(netns.Bridge):
        def enter(self) -> None:
            if refuse_direct:  # as a host that allows user namespaces to bwrap only
                raise netns.StageFailed(3, errno.EPERM)
            super().enter()

        def launch_args(self):  # a refusal only the fork's child can stage (test_launch: the launcher's)
            return None if refuse_direct else super().launch_args()

    bridge = Bridge(_socket.socket(fileno=launcher_end.detach()), mode)
    out = tmp_path / "out"
    script = f"cat /proc/net/dev | grep -c : > {out}"
    argv = [bwrap, "--unshare-user", "--unshare-pid", "--die-with-parent", "--ro-bind", "/", "/",
            "--bind", str(tmp_path), str(tmp_path), "--dev", "/dev", "--proc", "/proc",
            "--", "/bin/sh", "-c", script]
    outcome = runner.run(argv, dict(os.environ), None, False, bridge=bridge)
    bridge.close()
    _, fds, _, _ = socket.recv_fds(proxy_end, 16, 1)
    listener = socket.socket(fileno=fds[0])
    name = listener.getsockname()
    listener.close()
    proxy_end.close()
    return outcome, out.read_text().strip(), name


@pytest.mark.parametrize("mode", ["direct", "bwrap"])
def test_each_bridge_mode_gives_a_namespace_with_only_loopback(tmp_path, mode):
    outcome, interfaces, name = _bridged_run(tmp_path, mode, refuse_direct=False)
    assert outcome.bwrap_status == 0
    assert interfaces == "1"  # lo only
    assert name == (netns.PROXY_HOST, netns.PROXY_PORT)


def test_auto_falls_back_to_bwrap_when_the_host_refuses_the_direct_bridge(tmp_path):
    outcome, interfaces, name = _bridged_run(tmp_path, "auto", refuse_direct=True)
    assert outcome.bwrap_status == 0 and interfaces == "1"
    assert name == (netns.PROXY_HOST, netns.PROXY_PORT)


def test_direct_mode_does_not_fall_back(tmp_path):
    from sandbox.errors import SetupError

    with pytest.raises(SetupError) as info:
        _bridged_run(tmp_path, "direct", refuse_direct=True)
    assert "bring up the loopback interface" in str(info.value)
    assert "SANDBOX_NET_BRIDGE=bwrap" in info.value.hint


def test_bridge_mode_comes_from_the_environment():
    from sandbox.errors import UsageError

    assert netns.bridge_mode({}) == "auto"
    assert netns.bridge_mode({"SANDBOX_NET_BRIDGE": "bwrap"}) == "bwrap"
    with pytest.raises(UsageError):
        netns.bridge_mode({"SANDBOX_NET_BRIDGE": "socks"})
