"""udp:// endpoints over real sockets on 127.0.0.1, on both backends."""

from __future__ import annotations

import errno
import logging
import select
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from daemonkit import Daemon, Endpoint, Handler, Lines, StartError
from daemonkit.errors import ConfigError
from daemonkit.protocols.udp import DEFAULT_MAX_DATAGRAM, RECV_BATCH, UdpHost
from daemonkit.testing import DaemonRunner
from tests.helpers import recv_until

UDP = "udp://127.0.0.1:0"
TIMEOUT = 5.0  # per blocking socket operation; a passing test never waits this long
# Linux's IP_RECVERR (socket.IP_RECVERR only exists from Python 3.14).
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)


class Echo(Daemon):
    """Echoes every datagram upper-cased and records what it got."""

    listen = UDP

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.got: list[tuple[bytes, Any]] = []

    def on_datagram(self, endpoint: UdpHost, data: bytes, addr: Any) -> None:
        self.got.append((data, addr))
        if data == b"boom":
            raise ValueError("boom")
        endpoint.sendto(data.upper(), addr)


class Capture(logging.Handler):
    """Collects the records of one logger, whatever the logging set-up of the session."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, text: str) -> list[str]:
        return [r.getMessage() for r in self.records if text in r.getMessage()]


@pytest.fixture
def logs() -> Iterator[Any]:
    """``logs(daemon)`` captures the daemon's log records at every level."""
    attached: list[tuple[logging.Logger, Capture, int]] = []

    def attach(daemon: Daemon) -> Capture:
        capture = Capture()
        attached.append((daemon.log, capture, daemon.log.level))
        daemon.log.addHandler(capture)
        daemon.log.setLevel(logging.DEBUG)
        return capture

    yield attach
    for logger, capture, level in attached:
        logger.removeHandler(capture)
        logger.setLevel(level)


def client() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(TIMEOUT)
    return sock


def target(runner: DaemonRunner, name: str = "udp") -> tuple[str, int]:
    address = runner.daemon.address(name)
    return address.host, address.port


def host_of(daemon: Daemon, name: str = "udp") -> UdpHost:
    for host in daemon.endpoint_hosts:
        if host.endpoint.name == name:
            assert isinstance(host, UdpHost)
            return host
    raise AssertionError(f"no endpoint {name}")


def closed_port() -> int:
    """A UDP port on 127.0.0.1 with nothing bound to it (it was free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_echo_via_sendto(run_daemon: Any) -> None:
    d = Echo()
    runner = run_daemon(d)
    host = host_of(d)
    with client() as c:
        c.sendto(b"hello", target(runner))
        data, addr = c.recvfrom(65536)
        assert (data, addr) == (b"HELLO", target(runner))
        c.sendto(b"", target(runner))  # an empty datagram is a datagram
        assert c.recvfrom(65536)[0] == b""
        assert d.got == [(b"hello", c.getsockname()), (b"", c.getsockname())]
    assert runner.call(lambda: (host.received, host.sent, host.bytes_in, host.bytes_out)) == (
        2,
        2,
        5,
        5,
    )
    assert (host.name, host.address) == ("udp", d.address("udp"))


def test_many_datagrams_from_several_senders(run_daemon: Any) -> None:
    d = Echo()
    runner = run_daemon(d)
    host = host_of(d)
    senders = [client() for _ in range(4)]
    names = sorted(c.getsockname() for c in senders)
    # Bursts well under the receive buffers (both ways): loopback loses nothing then.
    per_sender, burst = 300, 25
    try:
        for start in range(0, per_sender, burst):
            sent = [b"%d" % i for i in range(start, start + burst)]
            for c in senders:
                for data in sent:
                    c.sendto(data, target(runner))
            for c in senders:
                assert [c.recvfrom(100)[0] for _ in sent] == [d.upper() for d in sent]
    finally:
        for c in senders:
            c.close()
    by_sender: dict[Any, list[bytes]] = {}
    for data, addr in d.got:
        by_sender.setdefault(addr, []).append(data)
    assert sorted(by_sender) == names
    for received in by_sender.values():
        assert received == [b"%d" % i for i in range(per_sender)]
    # The daemon's thread counts a reply after its sendto(): the echo may
    # reach us before the count moves, so wait for it (a race seen in CI).
    total = per_sender * len(senders)
    runner.wait_for(lambda: host.sent == total, timeout=TIMEOUT)
    assert host.received == host.sent == total > RECV_BATCH
    assert host.oversize == host.dropped == host.errors == 0


def test_oversize_datagrams_are_dropped_counted_and_logged(run_daemon: Any, logs: Any) -> None:
    d = Echo(listen=Endpoint(UDP, max_datagram=100))
    captured = logs(d)
    runner = run_daemon(d)
    host = host_of(d)
    with client() as c:
        me = c.getsockname()
        for size in (100, 101, 5000, 50):
            c.sendto(b"x" * size, target(runner))
        runner.wait_for(lambda: host.received + host.oversize == 4, timeout=TIMEOUT)
    assert [len(data) for data, _ in d.got] == [100, 50]  # never delivered cut
    assert (host.received, host.oversize) == (2, 2)
    lines = captured.messages("longer than max_datagram=100")
    assert len(lines) == 1  # the second is collapsed by the storm filter
    assert f"from 127.0.0.1:{me[1]}" in lines[0]
    runner.stop()
    assert captured.messages("repeated 1 times")  # the summary, at close


def test_the_default_limit_delivers_the_largest_ipv4_datagram_whole(run_daemon: Any) -> None:
    d = Echo()
    runner = run_daemon(d)
    host = host_of(d)
    with client() as c:
        c.sendto(b"y" * DEFAULT_MAX_DATAGRAM, target(runner))
        runner.wait_for(lambda: host.received == 1, timeout=TIMEOUT)
    assert len(d.got[0][0]) == DEFAULT_MAX_DATAGRAM == 65_507
    assert host.oversize == 0


def test_icmp_unreachable_is_silent_by_default(run_daemon: Any, logs: Any) -> None:
    """A datagram to a closed port: the kernel gets ICMP port unreachable and drops it.

    Linux (and the BSDs) report ICMP errors on an *unconnected* UDP socket
    only with IP_RECVERR, which we do not set; the reactor watches the socket
    itself, so uvloop and asyncio behave the same: sendto succeeds, nothing
    surfaces, nothing is logged, and serving goes on.
    """
    d = Echo()
    captured = logs(d)
    runner = run_daemon(d)
    host = host_of(d)
    port = closed_port()
    for _ in range(3):
        assert runner.call(host.sendto, b"ping", ("127.0.0.1", port)) is True
    with client() as c:
        c.sendto(b"still there?", target(runner))
        assert c.recvfrom(100)[0] == b"STILL THERE?"
    assert runner.call(lambda: (host.sent, host.errors, host.dropped)) == (4, 0, 0)
    assert not [r for r in captured.records if r.levelno >= logging.WARNING]


@pytest.mark.skipif(sys.platform != "linux", reason="IP_RECVERR is Linux's")
def test_reported_icmp_errors_are_counted_logged_once_and_never_fatal(
    run_daemon: Any, logs: Any
) -> None:
    """With IP_RECVERR the kernel reports the ICMP error: recvfrom/sendto fail with ECONNREFUSED.

    The error is counted and logged once (the storm filter collapses the
    rest), the error queue is drained so the socket does not stay readable
    (no busy loop), and the endpoint goes on serving.
    """
    d = Echo()
    captured = logs(d)
    runner = run_daemon(d)
    host = host_of(d)
    runner.call(lambda: host.sock.setsockopt(socket.SOL_IP, IP_RECVERR, 1))  # type: ignore[union-attr]
    port = closed_port()
    runner.call(host.sendto, b"ping", ("127.0.0.1", port))
    runner.wait_for(lambda: host.errors >= 1, timeout=TIMEOUT)
    for _ in range(10):
        runner.call(host.sendto, b"ping", ("127.0.0.1", port))
        runner.wait_for(lambda: not _pending(host), timeout=TIMEOUT)
    with client() as c:
        c.sendto(b"still there?", target(runner))
        assert c.recvfrom(100)[0] == b"STILL THERE?"
    assert host.errors >= 2
    assert not runner.call(_pending, host)  # nothing left to wake the loop up
    lines = captured.messages("Connection refused")
    assert len(lines) == 1, lines
    assert "serving goes on" in lines[0]
    runner.stop()
    assert any("repeated" in m for m in captured.messages("Connection refused"))


def _pending(host: UdpHost) -> bool:
    """True while the socket is readable or has an error queued (as epoll would see it)."""
    assert host.sock is not None
    poller = select.poll()
    poller.register(host.sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class _FullSocket:
    """Wraps the host's socket; its sendto fails as a full send buffer does."""

    def __init__(self, sock: socket.socket, code: int) -> None:
        self.sock = sock
        self.code = code

    def sendto(self, data: bytes, addr: Any) -> int:
        raise OSError(self.code, "no room")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


@pytest.mark.parametrize("code", [errno.EAGAIN, errno.ENOBUFS])
def test_sendto_drops_when_the_send_buffer_is_full(run_daemon: Any, logs: Any, code: int) -> None:
    # Loopback frees send buffers at once, so a full one is simulated: the
    # point is what sendto does then (drop, count, never block or queue).
    d = Echo()
    captured = logs(d)
    runner = run_daemon(d)
    host = host_of(d)
    real = host.sock
    assert real is not None

    def fill() -> None:
        host.sock = _FullSocket(real, code)  # type: ignore[assignment]

    runner.call(fill)
    try:
        results = [runner.call(host.sendto, b"x", ("127.0.0.1", 9)) for _ in range(5)]
    finally:
        runner.call(lambda: setattr(host, "sock", real))
    assert results == [False] * 5
    assert (host.dropped, host.sent, host.errors) == (5, 0, 0)
    assert len(captured.messages("send buffer full")) == 1
    with client() as c:  # and the endpoint still works
        c.sendto(b"ok", target(runner))
        assert c.recvfrom(100)[0] == b"OK"


def test_handler_exception_is_isolated(run_daemon: Any, logs: Any) -> None:
    d = Echo()
    captured = logs(d)
    runner = run_daemon(d)
    with client() as c:
        me = c.getsockname()
        c.sendto(b"boom", target(runner))
        c.sendto(b"after", target(runner))
        assert c.recvfrom(100)[0] == b"AFTER"
    assert d.stats["errors"] == 1
    errors = [r for r in captured.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert f"ValueError for a datagram from 127.0.0.1:{me[1]}" in (errors[0].getMessage())
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is ValueError


def test_stop_closes_the_socket(backend: str) -> None:
    d = Echo()
    runner = DaemonRunner(d, backend=backend).start()
    host = host_of(d)
    port = d.address("udp").port
    runner.stop()
    assert host.sock is None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))  # free again
    assert host.sendto(b"late", ("127.0.0.1", port)) is False
    assert host.dropped == 1
    host.close()  # idempotent


def test_a_callback_that_stops_the_daemon_ends_the_batch(run_daemon: Any, logs: Any) -> None:
    stopped = threading.Event()

    class StopOnFirst(Echo):
        def on_datagram(self, endpoint: UdpHost, data: bytes, addr: Any) -> None:
            self.got.append((data, addr))
            self.stop()
            stopped.set()

    d = StopOnFirst()
    captured = logs(d)
    runner = run_daemon(d)
    with client() as c:
        for _ in range(10):
            c.sendto(b"x", target(runner))
    assert stopped.wait(TIMEOUT)
    runner.stop()
    assert len(d.got) == 1
    assert not [r for r in captured.records if r.levelno >= logging.WARNING]


def test_udp_and_tcp_endpoints_with_a_handler_object(run_daemon: Any) -> None:
    class Counter(Handler):
        def on_datagram(self, endpoint: UdpHost, data: bytes, addr: Any) -> None:
            assert self.daemon is not None
            endpoint.sendto(b"%d" % len(self.daemon.connections), addr)

    class Both(Daemon):
        listen = ["tcp://127.0.0.1:0", Endpoint(UDP, name="stats", handler=Counter())]
        framing = Lines

        def on_read(self, conn: Any, line: bytes) -> None:
            conn.send(line)

    d = Both()
    runner = run_daemon(d)
    tcp, udp = d.addresses
    assert (tcp.scheme, udp.scheme) == ("tcp", "udp")
    assert udp.port != 0 and udp == d.address("stats")
    with runner.connect() as conn, client() as c:
        conn.sendall(b"hi\n")
        assert recv_until(conn, b"hi\n") == b"hi\n"
        c.sendto(b"?", target(runner, "stats"))
        assert c.recvfrom(100)[0] == b"1"


# -- configuration -------------------------------------------------------------------


def test_unknown_option_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown endpoint option\(s\): max_body.*max_datagram"):
        Echo(listen=Endpoint(UDP, max_body=10))


@pytest.mark.parametrize("bad", [0, -1, 65_528, 1.5, "64k", True])
def test_bad_max_datagram_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="max_datagram must be a whole number"):
        Echo(listen=Endpoint(UDP, max_datagram=bad))


def test_missing_on_datagram_refused() -> None:
    class NoDatagrams(Daemon):
        listen = UDP

    with pytest.raises(ConfigError, match=r"udp://127.0.0.1:0.*'udp'.*NoDatagrams.*on_datagram"):
        NoDatagrams()
    with pytest.raises(ConfigError, match="object has no on_datagram"):
        Echo(listen=Endpoint(UDP, handler=object()))


def test_framing_and_idle_timeout_refused() -> None:
    with pytest.raises(ConfigError, match="drop framing="):
        Echo(listen=Endpoint(UDP, framing=Lines))
    with pytest.raises(ConfigError, match="drop idle_timeout="):
        Echo(listen=Endpoint(UDP, idle_timeout=5))


def test_port_in_use_is_a_start_error(backend: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(StartError, match=f"cannot listen on udp://127.0.0.1:{port}"):
            DaemonRunner(Echo(listen=f"udp://127.0.0.1:{port}"), backend=backend).start()


def test_a_port_held_by_another_daemon_is_a_start_error(backend: str) -> None:
    with DaemonRunner(Echo(), backend=backend) as first:
        port = first.daemon.address("udp").port
        second = DaemonRunner(Echo(listen=f"udp://127.0.0.1:{port}"), backend=backend)
        try:
            second.start()
        except StartError:
            return
        second.stop()
        raise AssertionError(f"a second daemon bound udp port {port} too")


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv6(run_daemon: Any) -> None:
    d = Echo(listen="udp://[::1]:0")
    runner = run_daemon(d)
    assert str(d.address("udp")).startswith("udp://[::1]:")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c:
        c.bind(("::1", 0))
        c.settimeout(TIMEOUT)
        c.sendto(b"six", target(runner))
        assert c.recvfrom(100)[0] == b"SIX"
        assert d.got[0][1][:2] == c.getsockname()[:2]
