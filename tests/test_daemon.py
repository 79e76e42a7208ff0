"""Daemon and Connection over real sockets on 127.0.0.1, on both backends."""

from __future__ import annotations

import socket
import sys
import threading
from typing import Any

import pytest

from daemonkit import CloseReason, Connection, Daemon, FakeClock, Lines, StartError
from daemonkit.core import connection as connection_module
from daemonkit.core.connection import DEFAULT_IDLE_TIMEOUT
from daemonkit.errors import ConfigError
from daemonkit.framing import LengthPrefixed
from daemonkit.testing import DaemonRunner
from tests.helpers import recv_all, recv_until

LOCAL = "tcp://127.0.0.1:0"


class Recorder(Daemon):
    """Records every callback, in order, for assertions from the test thread."""

    listen = LOCAL

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.events: list[tuple[Any, ...]] = []
        self.closed = threading.Event()
        self.reasons: list[CloseReason] = []

    def on_accept(self, conn: Connection) -> None:
        self.events.append(("accept", conn.id))

    def on_read(self, conn: Connection, data: Any) -> None:
        self.events.append(("read", conn.id, data))
        conn.send(data)

    def on_close(self, conn: Connection, reason: CloseReason) -> None:
        self.events.append(("close", conn.id, reason))
        self.reasons.append(reason)
        self.closed.set()


class Flooder(Recorder):
    """Answers any input with 8 MiB: more than a peer with a tiny buffer will read."""

    write_high_water = 1 << 20
    max_write_buffer = 16 << 20

    def on_read(self, conn: Connection, data: Any) -> None:
        for _ in range(8):
            conn.write(b"s" * (1 << 20))


def wait_closed(daemon: Recorder, count: int = 1, timeout: float = 10.0) -> None:
    for _ in range(200):
        if len(daemon.reasons) >= count:
            return
        daemon.closed.wait(timeout / 200)
        daemon.closed.clear()
    raise AssertionError(f"expected {count} close(s), saw {daemon.reasons}")


def test_echo_raw(run_daemon: Any) -> None:
    d = Recorder()
    runner = run_daemon(d)
    with runner.connect() as sock:
        sock.sendall(b"hello")
        assert recv_until(sock, b"hello") == b"hello"
    wait_closed(d)
    assert d.reasons == [CloseReason.PEER_CLOSED]
    assert d.events[0][0] == "accept"
    assert d.events[-1][0] == "close"


def test_lines_framing_split_and_pipelined(run_daemon: Any) -> None:
    class LineEcho(Recorder):
        framing = Lines

        def on_read(self, conn: Connection, data: Any) -> None:
            self.events.append(("read", conn.id, data))
            conn.send(data.upper())

    d = LineEcho()
    runner = run_daemon(d)
    with runner.connect() as sock:
        sock.sendall(b"one\ntw")
        assert recv_until(sock, b"ONE\n") == b"ONE\n"
        sock.sendall(b"o\nthree\nfour\n")
        assert recv_until(sock, b"FOUR\n") == b"TWO\nTHREE\nFOUR\n"
    wait_closed(d)
    reads = [e[2] for e in d.events if e[0] == "read"]
    assert reads == [b"one", b"two", b"three", b"four"]


def test_framing_instance_is_copied_per_connection(run_daemon: Any) -> None:
    class Framed(Recorder):
        framing = LengthPrefixed(header="!H", max_length=10)

        def on_read(self, conn: Connection, data: Any) -> None:
            conn.send(data)  # encoded by the framer: the header comes back

    d = Framed()
    runner = run_daemon(d)
    with runner.connect() as a, runner.connect() as b:
        a.sendall(b"\x00\x03ab")  # partial frame on a must not leak into b
        b.sendall(b"\x00\x02xy")
        assert recv_until(b, b"\x00\x02xy") == b"\x00\x02xy"
        a.sendall(b"c")
        assert recv_until(a, b"\x00\x03abc") == b"\x00\x03abc"


def test_frame_too_large_closes_with_reason_and_delivers_earlier_frames(
    run_daemon: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class Small(Recorder):
        framing = Lines(max_length=8)

    d = Small()
    runner = run_daemon(d)
    with runner.connect() as sock:
        sock.sendall(b"ok\n" + b"x" * 100 + b"\n")
        assert recv_all(sock) == b"ok\n"
    wait_closed(d)
    assert d.reasons == [CloseReason.FRAME_TOO_LARGE]
    assert any("max_length=8" in r.getMessage() for r in caplog.records)


def test_handler_exception_closes_only_that_connection(
    run_daemon: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class Fragile(Recorder):
        def on_read(self, conn: Connection, data: Any) -> None:
            if data.startswith(b"boom"):
                raise ValueError("bad input")
            conn.write(data)

    d = Fragile()
    runner = run_daemon(d)
    with runner.connect() as good, runner.connect() as bad:
        bad.sendall(b"boom")
        assert recv_all(bad) == b""
        good.sendall(b"still here")
        assert recv_until(good, b"here") == b"still here"
    wait_closed(d, 2)
    assert CloseReason.HANDLER_ERROR in d.reasons
    errors = [r for r in caplog.records if "ValueError raised" in r.getMessage()]
    assert errors and errors[0].exc_info is not None
    assert errors[0].getMessage().startswith("#")  # the connection's context
    assert d.stats["errors"] == 1


def test_on_error_may_keep_the_connection(run_daemon: Any) -> None:
    class Forgiving(Recorder):
        def on_read(self, conn: Connection, data: Any) -> None:
            if data == b"boom":
                raise ValueError("bad")
            conn.write(data)

        def on_error(self, conn: Connection, exc: Exception) -> None:
            conn.write(b"error: " + str(exc).encode() + b"\n")

    d = Forgiving()
    runner = run_daemon(d)
    with runner.connect() as sock:
        sock.sendall(b"boom")
        assert recv_until(sock, b"\n") == b"error: bad\n"
        sock.sendall(b"again")
        assert recv_until(sock, b"again") == b"again"


def test_idle_timeout_with_fake_clock(run_daemon: Any) -> None:
    clock = FakeClock()
    d = Recorder(idle_timeout=30)
    runner = run_daemon(d, clock=clock)
    with runner.connect() as sock:
        sock.sendall(b"ping")
        assert recv_until(sock, b"ping") == b"ping"
        runner.advance(20)
        sock.sendall(b"pong")  # activity restarts the idle period
        assert recv_until(sock, b"pong") == b"pong"
        runner.advance(20)  # 40 s since start, 20 since input: still open
        assert d.reasons == []
        runner.advance(10.5)
        assert recv_all(sock) == b""
    wait_closed(d)
    assert d.reasons == [CloseReason.IDLE_TIMEOUT]


def test_on_timeout_can_keep_the_connection(run_daemon: Any) -> None:
    class Patient(Recorder):
        def on_timeout(self, conn: Connection) -> None:
            conn.write(b"still there?\n")

    clock = FakeClock()
    d = Patient(idle_timeout=5)
    runner = run_daemon(d, clock=clock)
    with runner.connect() as sock:
        runner.advance(5)
        assert recv_until(sock, b"\n") == b"still there?\n"
        runner.advance(5)
        assert recv_until(sock, b"\n") == b"still there?\n"


def test_close_deadline_aborts_a_peer_that_never_reads(run_daemon: Any) -> None:
    payload = b"x" * (256 * 1024)

    class Flood(Recorder):
        write_high_water = 512 * 1024
        max_write_buffer = 8 * 1024 * 1024

        def on_read(self, conn: Connection, data: Any) -> None:
            for _ in range(16):
                conn.write(payload)
            conn.close(timeout=5)

    clock = FakeClock()
    d = Flood()
    runner = run_daemon(d, clock=clock)
    sock = runner.connect()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with sock:
        sock.sendall(b"go")
        runner.wait_for(lambda: all(c.closing for c in d.connections) and d.stats["accepted"])
        assert d.reasons == []  # 4 MiB cannot fit in the socket buffers: still closing
        runner.advance(5.1)
        wait_closed(d)
    assert d.reasons == [CloseReason.CLOSE_TIMEOUT]


def test_backpressure_write_returns_false_then_on_drain(run_daemon: Any) -> None:
    chunk = b"y" * 65536
    results: list[bool] = []
    drained = threading.Event()

    class Producer(Recorder):
        write_high_water = 128 * 1024
        write_low_water = 32 * 1024

        def on_read(self, conn: Connection, data: Any) -> None:
            while conn.write(chunk):
                results.append(True)
            results.append(False)

        def on_drain(self, conn: Connection) -> None:
            drained.set()

    d = Producer()
    runner = run_daemon(d)
    with runner.connect() as sock:
        sock.sendall(b"go")
        sock.settimeout(0.05)  # drain may come after our last read: re-check the flag
        got = 0
        for _ in range(400):
            if drained.is_set():
                break
            try:
                got += len(sock.recv(65536))
            except TimeoutError:
                pass
        assert drained.is_set()
        assert got <= 4 * 65536
    assert results[-1] is False
    assert results.count(True) >= 1


def test_output_buffer_overflow_aborts(run_daemon: Any) -> None:
    class Hog(Recorder):
        write_high_water = 16 * 1024
        write_low_water = 4 * 1024
        max_write_buffer = 256 * 1024

        def on_read(self, conn: Connection, data: Any) -> None:
            for _ in range(100):  # ignores write()'s False: must hit the hard cap
                conn.write(b"z" * 16384)

    d = Hog()
    runner = run_daemon(d)
    sock = runner.connect()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with sock:
        sock.sendall(b"go")
        wait_closed(d)
    assert d.reasons == [CloseReason.OVERFLOW]
    assert str(CloseReason.OVERFLOW) == "output buffer overflow"


def test_half_close_default_flushes_then_closes(run_daemon: Any) -> None:
    d = Recorder()
    runner = run_daemon(d)
    with runner.connect() as sock:
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)
        assert recv_all(sock) == b"last words"
    wait_closed(d)
    assert d.reasons == [CloseReason.PEER_CLOSED]


def test_half_close_on_eof_keeps_writing(run_daemon: Any) -> None:
    class Summer(Recorder):
        def on_read(self, conn: Connection, data: Any) -> None:
            conn.state["n"] = conn.state.get("n", 0) + len(data)

        def on_eof(self, conn: Connection) -> None:
            # Reply after the peer's EOF, from a timer: the write side is still open.
            conn.after(0.01, lambda: (conn.write(b"%d" % conn.state["n"]), conn.close()))

    d = Summer()
    runner = run_daemon(d)
    with runner.connect() as sock:
        sock.sendall(b"12345")
        sock.shutdown(socket.SHUT_WR)
        assert recv_all(sock) == b"5"
    wait_closed(d)
    assert d.reasons == [CloseReason.LOCAL]


def test_max_connections_rejects_at_once(run_daemon: Any) -> None:
    d = Recorder(max_connections=2)
    runner = run_daemon(d)
    a, b = runner.connect(), runner.connect()
    with a, b:
        a.sendall(b"a")
        b.sendall(b"b")
        assert recv_until(a, b"a") == b"a" and recv_until(b, b"b") == b"b"
        with runner.connect() as c:
            assert recv_all(c) == b""  # closed at once, not left hanging
        assert runner.call(lambda: d.stats["rejected"]) == 1
        assert runner.call(lambda: len(d.connections)) == 2


@pytest.mark.parametrize(
    ("idle", "idle_timers"),
    [(1.5, 5), (60, 1)],
    ids=["near-idle-deadlines", "far-idle-deadlines"],
)
def test_on_close_exactly_once_and_nothing_left_behind(
    run_daemon: Any, idle: float, idle_timers: int
) -> None:
    """Near idle deadlines have a timer each; far ones share their wheel bucket's one timer."""
    clock = FakeClock()

    class Busy(Recorder):
        def on_accept(self, conn: Connection) -> None:
            super().on_accept(conn)
            conn.set_idle_timeout(idle)
            conn.after(100, lambda: None)
            conn.every(1, lambda: None)

    d = Busy()
    runner = run_daemon(d, clock=clock)
    baseline = runner.call(lambda: d.reactor.stats())
    socks = [runner.connect() for _ in range(5)]
    for s in socks:
        s.sendall(b"x")
        assert recv_until(s, b"x") == b"x"
    timers = baseline.timers + 10 + idle_timers
    assert runner.call(lambda: d.reactor.stats()).timers == timers
    for i, s in enumerate(socks):
        if i % 2:
            s.shutdown(socket.SHUT_RDWR)
        s.close()
    wait_closed(d, 5)
    stats = runner.call(lambda: d.reactor.stats())
    assert stats == baseline
    closes = [e for e in d.events if e[0] == "close"]
    assert sorted(e[1] for e in closes) == [1, 2, 3, 4, 5]
    assert runner.call(lambda: len(d.connections)) == 0


def test_broadcast_and_timers_flush_outside_reads(run_daemon: Any) -> None:
    clock = FakeClock()

    class Ticker(Recorder):
        def on_start(self) -> None:
            self.every(1.0, self.broadcast, b"tick\n")

    d = Ticker()
    runner = run_daemon(d, clock=clock)
    with runner.connect() as a, runner.connect() as b:
        a.sendall(b"hi")
        b.sendall(b"hi")
        recv_until(a, b"hi")
        recv_until(b, b"hi")
        runner.advance(2)
        assert recv_until(a, b"tick\ntick\n") == b"tick\ntick\n"
        assert recv_until(b, b"tick\ntick\n") == b"tick\ntick\n"


def test_a_broadcast_skips_a_member_behind_and_forgets_a_closing_one() -> None:
    """The three outcomes of a member in Group.broadcast, in-process (no sockets)."""
    from daemonkit.core.reactor import Reactor
    from daemonkit.testing import MemoryTransport

    daemon = Recorder(idle_timeout=None)
    reactor = Reactor("asyncio")
    try:
        daemon.start(reactor, install_signals=False, bind=False)
        members = []
        for _ in range(3):
            conn = daemon._new_connection()
            transport = MemoryTransport(conn)
            conn.connection_made(transport)
            daemon.group("room").add(conn)
            members.append((conn, transport))
        (ok, ok_t), (behind, behind_t), (closing, _) = members
        behind.pause_writing()  # as the transport does past its high-water mark
        closing.close()
        group = daemon.group("room")
        assert group.broadcast(b"hi") == 1
        assert (group.sent, group.skipped) == (1, 1)
        assert ok in group and behind in group and closing not in group
        ok._flush()
        behind._flush()
        assert bytes(ok_t.data) == b"hi" and bytes(behind_t.data) == b""
    finally:
        daemon.release_after_run()
        reactor.close()


def test_graceful_stop_flushes_calls_on_stop_then_cleanups_in_reverse(backend: str) -> None:
    order: list[str] = []

    class Polite(Recorder):
        def on_start(self) -> None:
            self.cleanup(lambda: order.append("first registered"))
            self.cleanup(lambda: order.append("second registered"))

        def on_stop(self) -> None:
            order.append("on_stop")
            self.broadcast(b"bye\n")

        def on_close(self, conn: Connection, reason: CloseReason) -> None:
            order.append(f"on_close {reason}")

    d = Polite()
    runner = DaemonRunner(d, backend=backend).start()
    with runner.connect() as sock:
        sock.sendall(b"x")
        recv_until(sock, b"x")
        runner.stop()
        assert recv_all(sock) == b"bye\n"
    assert order == ["on_stop", "on_close shutdown", "second registered", "first registered"]


def test_shutdown_timeout_aborts_stuck_connections(backend: str) -> None:
    clock = FakeClock()

    d = Flooder(shutdown_timeout=3)
    runner = DaemonRunner(d, backend=backend, clock=clock).start()
    sock = runner.connect()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with sock:
        sock.sendall(b"go")
        runner.wait_for(lambda: all(c.bytes_out for c in d.connections))
        runner.call(d.stop)
        assert runner._thread is not None and runner._thread.is_alive()
        runner.advance(3.5)
        runner.stop()
    assert d.reasons == [CloseReason.SHUTDOWN]


def test_unix_endpoint(run_daemon: Any, tmp_path: Any) -> None:
    path = tmp_path / "echo.sock"
    d = Recorder(listen=f"unix://{path}")
    runner = run_daemon(d)
    with runner.connect() as sock:
        sock.sendall(b"over unix")
        assert recv_until(sock, b"unix") == b"over unix"
    runner.stop()
    assert not path.exists()  # the listener removes its socket file


def test_ipv6_endpoint(run_daemon: Any) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("::1 is not configured")
    d = Recorder(listen="tcp://[::1]:0")
    runner = run_daemon(d)
    assert str(runner.address).startswith("tcp://[::1]:")
    with socket.create_connection(("::1", runner.address.port), timeout=10) as sock:
        sock.sendall(b"six")
        assert recv_until(sock, b"six") == b"six"


def test_port_in_use_is_a_start_error(backend: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = Recorder(listen=f"tcp://127.0.0.1:{port}")
        with pytest.raises(StartError, match="cannot listen on tcp://127.0.0.1"):
            DaemonRunner(d, backend=backend).start()


def test_on_start_exception_aborts_start(backend: str) -> None:
    class Broken(Recorder):
        def on_start(self) -> None:
            raise RuntimeError("no config")

    with pytest.raises(StartError, match="on_start failed: RuntimeError: no config"):
        DaemonRunner(Broken(), backend=backend).start()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"listen": "tcp://nope"}, "no port"),
        ({"listen": ""}, r"listen is '': .* listen = \[\] for a worker daemon"),
        ({"max_connections": 0}, "max_connections"),
        ({"idle_timeout": -1}, "idle_timeout"),
        ({"write_low_water": 10, "write_high_water": 5}, "write_low_water"),
        ({"max_write_buffer": 10}, "max_write_buffer"),
        ({"framing": 42}, "framing must be"),
        ({"colour": "red"}, "unknown setting 'colour'"),
    ],
)
def test_bad_settings_are_config_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Recorder(**settings)


def test_connection_attributes(run_daemon: Any) -> None:
    seen: dict[str, Any] = {}

    class Inspect(Recorder):
        def on_read(self, conn: Connection, data: Any) -> None:
            seen.update(peer=conn.peer, local=conn.local, id=conn.id, repr=repr(conn))
            conn.state["k"] = 1
            conn.write(data)

    d = Inspect()
    runner = run_daemon(d)
    with runner.connect() as sock:
        sock.sendall(b"?")
        recv_until(sock, b"?")
        client_port = sock.getsockname()[1]
    assert seen["peer"] == f"127.0.0.1:{client_port}"
    assert seen["local"] == f"127.0.0.1:{runner.address.port}"
    assert seen["repr"].startswith("<Connection #1 127.0.0.1:")


def test_write_after_close_is_dropped(run_daemon: Any) -> None:
    results: list[bool] = []

    class Closer(Recorder):
        def on_read(self, conn: Connection, data: Any) -> None:
            conn.write(b"bye")
            conn.close()
            results.append(conn.write(b"more"))

    d = Closer()
    runner = run_daemon(d)
    with runner.connect() as sock:
        sock.sendall(b"x")
        assert recv_all(sock) == b"bye"
    assert results == [False]


def test_stop_now_still_calls_on_close_for_every_connection(backend: str) -> None:
    clock = FakeClock()

    d = Flooder(shutdown_timeout=600)
    runner = DaemonRunner(d, backend=backend, clock=clock).start()
    socks = [runner.connect() for _ in range(3)]
    for s in socks:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"go")
    runner.wait_for(lambda: all(c.bytes_out for c in d.connections))
    runner.call(d.stop)  # graceful: would wait ten minutes for these peers
    runner.stop(now=True)  # ... so stop at once, as a second SIGTERM does
    for s in socks:
        s.close()
    assert sorted(d.reasons) == [CloseReason.SHUTDOWN] * 3
    assert len(d.connections) == 0


def test_frames_after_a_forgiven_error_in_the_same_read_are_delivered(run_daemon: Any) -> None:
    class Divider(Recorder):
        framing = Lines

        def on_read(self, conn: Connection, line: Any) -> None:
            conn.send(b"%d" % (100 // int(line)))

        def on_error(self, conn: Connection, exc: Exception) -> None:
            conn.send(b"error: " + type(exc).__name__.encode())

    d = Divider()
    runner = run_daemon(d)
    with runner.connect() as sock:
        sock.sendall(b"5\n0\n4\n")  # one read, the middle frame raises
        assert recv_until(sock, b"25\n") == b"20\nerror: ZeroDivisionError\n25\n"


def test_framing_error_raised_by_own_send_goes_to_on_error(
    run_daemon: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class Oversender(Recorder):
        framing = LengthPrefixed(header="!B", max_length=255)

        def on_read(self, conn: Connection, frame: Any) -> None:
            conn.send(frame * 300)  # our own bug: too large to encode

    d = Oversender()
    runner = run_daemon(d)
    with runner.connect() as sock:
        sock.sendall(b"\x01x")
        assert recv_all(sock) == b""
    wait_closed(d)
    assert d.reasons == [CloseReason.HANDLER_ERROR]  # our fault, not the peer's
    assert any("FrameTooLarge raised in a callback" in r.getMessage() for r in caplog.records)


def test_a_daemon_object_runs_once(backend: str) -> None:
    d = Recorder()
    DaemonRunner(d, backend=backend).start().stop()
    with pytest.raises(RuntimeError, match="already ran"):
        DaemonRunner(d, backend=backend).start()


def test_lines_send_refuses_a_frame_with_the_delimiter(run_daemon: Any) -> None:
    outcomes: list[str] = []

    class Careful(Recorder):
        framing = Lines

        def on_read(self, conn: Connection, line: Any) -> None:
            try:
                conn.send(b"two\nlines")  # would corrupt the stream: refused
            except ValueError as exc:
                outcomes.append(str(exc))
            conn.send(bytearray(b"ok"))  # any bytes-like frame is fine

    d = Careful()
    runner = run_daemon(d)
    with runner.connect() as sock:
        sock.sendall(b"x\n")
        assert recv_until(sock, b"ok\n") == b"ok\n"
    assert outcomes and "contains the delimiter" in outcomes[0]


class Batcher(Recorder):
    """Gets every read's frames as one list and answers them with one send_all."""

    framing = Lines

    def on_frames(self, conn: Connection, frames: list[bytes]) -> None:
        self.events.append(("frames", conn.id, list(frames)))
        conn.send_all([f.upper() for f in frames])


def test_on_frames_gets_each_reads_frames_as_one_batch(run_daemon: Any) -> None:
    d = Batcher()
    runner = run_daemon(d)
    with runner.connect() as sock:
        sock.sendall(b"a\nb\nc")
        assert recv_until(sock, b"B\n") == b"A\nB\n"
        sock.sendall(b"\n")
        assert recv_until(sock, b"C\n") == b"C\n"
    wait_closed(d)
    batches = [e[2] for e in d.events if e[0] == "frames"]
    assert batches == [[b"a", b"b"], [b"c"]]  # one call per read, never an empty one
    assert not [e for e in d.events if e[0] == "read"]  # on_frames replaces on_read


def test_on_frames_error_and_bad_input(run_daemon: Any, caplog: pytest.LogCaptureFixture) -> None:
    class Strict(Batcher):
        framing = Lines(max_length=4)

        def on_frames(self, conn: Connection, frames: list[bytes]) -> None:
            if b"boom" in frames:
                raise RuntimeError("batch failed")
            super().on_frames(conn, frames)

    d = Strict()
    runner = run_daemon(d)
    with runner.connect() as sock:
        sock.sendall(b"ok\nfine\n" + b"x" * 10 + b"\n")  # good frames, then too long
        assert recv_all(sock) == b"OK\nFINE\n"
    with runner.connect() as sock:
        sock.sendall(b"boom\n")
        assert recv_all(sock) == b""
    wait_closed(d, 2)
    assert d.reasons == [CloseReason.FRAME_TOO_LARGE, CloseReason.HANDLER_ERROR]
    assert any("RuntimeError raised" in r.getMessage() for r in caplog.records)


def test_send_all_refuses_a_bad_frame_and_writes_nothing(run_daemon: Any) -> None:
    outcomes: list[str] = []

    class Careful(Batcher):
        def on_frames(self, conn: Connection, frames: list[bytes]) -> None:
            try:
                conn.send_all([b"fine", b"two\nlines"])
            except ValueError as exc:
                outcomes.append(str(exc))
            conn.send_all(iter([bytearray(b"x"), b"y"]))  # any iterable of bytes-likes
            conn.send_all([])

    d = Careful()
    runner = run_daemon(d)
    with runner.connect() as sock:
        sock.sendall(b"go\n")
        assert recv_until(sock, b"y\n") == b"x\ny\n"  # nothing of the refused batch
    assert outcomes and "contains the delimiter" in outcomes[0]


@pytest.mark.parametrize(
    ("framing", "frames", "wire"),
    [
        (LengthPrefixed(header="!B"), [b"ab", b"c"], b"\x02ab\x01c"),
        (Lines(delimiter=b"\r\n"), [b"ab", b"c"], b"ab\r\nc\r\n"),
        (None, [b"ab", b"c"], b"abc"),
    ],
)
def test_send_all_encodes_with_any_framer(
    run_daemon: Any, framing: Any, frames: list[bytes], wire: bytes
) -> None:
    class Sender(Recorder):
        def on_accept(self, conn: Connection) -> None:
            conn.send_all(frames)

    d = Sender(framing=framing)
    runner = run_daemon(d)
    with runner.connect() as sock:
        assert recv_until(sock, wire[-1:], limit=len(wire)) == wire


def test_idle_timeout_property_follows_set_idle_timeout(run_daemon: Any) -> None:
    seen: list[float | None] = []

    class Tuner(Recorder):
        def on_read(self, conn: Connection, data: Any) -> None:
            seen.append(conn.idle_timeout)
            conn.set_idle_timeout(None if data == b"off" else 7.5)
            seen.append(conn.idle_timeout)
            conn.send(data)

    d = Tuner(idle_timeout=30)
    runner = run_daemon(d, clock=FakeClock())
    with runner.connect() as sock:
        sock.sendall(b"on")
        assert recv_until(sock, b"on") == b"on"
        sock.sendall(b"off")
        assert recv_until(sock, b"off") == b"off"
    assert seen == [30, 7.5, 7.5, None]


class Keeper(Recorder):
    """Keeps the connections it accepted, for tests that look inside one."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.live: list[Connection] = []

    def on_accept(self, conn: Connection) -> None:
        self.live.append(conn)

    def echoed(self, sock: socket.socket, data: bytes) -> Connection:
        """Echo ``data`` once over ``sock``; return the daemon's side of it."""
        sock.sendall(data)
        assert recv_until(sock, data) == data
        return self.live[-1]


class LoggingKeeper(Keeper):
    """Says hello in ``on_accept``, as examples/echo_daemon.py does."""

    def on_accept(self, conn: Connection) -> None:
        super().on_accept(conn)
        conn.log.info("connected")


class LinesKeeper(Keeper):
    """A framed Keeper: its connections have a frame deadline (frame_timeout) too."""

    framing = Lines


@pytest.mark.parametrize(
    ("daemon_class", "idle_timeout"),
    [
        (Keeper, None),
        (Keeper, DEFAULT_IDLE_TIMEOUT),
        (LoggingKeeper, DEFAULT_IDLE_TIMEOUT),
        (LinesKeeper, DEFAULT_IDLE_TIMEOUT),
    ],
    ids=["no-idle-timeout", "default-idle-timeout", "logs-on-accept", "framed"],
)
def test_an_idle_connection_carries_no_extras(
    run_daemon: Any, daemon_class: type[Keeper], idle_timeout: float | None
) -> None:
    """Memory per idle connection is a target: the rarely used parts are made on demand.

    The idle timeout, on by default, is not one of them: its fields are slots
    of the connection, and its far deadline waits in a bucket of the
    reactor's idle wheel, not in a timer of its own. Nor is the frame
    deadline of a framed connection, until a frame arrives in parts.
    ``conn.log`` keeps nothing.
    """
    d = daemon_class(idle_timeout=idle_timeout)
    runner = run_daemon(d)
    with runner.connect() as sock:
        conn = d.echoed(sock, b"hello\n")
        assert conn._x is None  # echoing made no timers, state, logger or close reason
        assert conn.idle_timeout == idle_timeout
        bucket = conn._idle_wait
        if idle_timeout is None:
            assert bucket is None
        else:
            assert isinstance(bucket, connection_module._IdleBucket)
            assert bucket.conns[conn._idle_pos] is conn
        # 18 slots: a slot more costs 8 bytes on every connection of every
        # daemon. Compiled (a mypyc native class: no __slots__), the same 18
        # fields: with the GC and object headers (4 words) and, compiled, the
        # vtable pointer and the bitmap that marks an unboxed float attribute
        # as set, at most 24 words.
        if hasattr(Connection, "__slots__"):
            assert len(Connection.__slots__) <= 18
        assert sys.getsizeof(conn) <= 24 * 8
    wait_closed(d)
    assert d.reasons == [CloseReason.PEER_CLOSED]
    assert conn._idle_wait is None


def test_a_read_flushes_what_was_written_before_it_in_the_same_turn(run_daemon: Any) -> None:
    """A write outside a read schedules a flush; a read that comes first sends it along."""
    d = Keeper()
    runner = run_daemon(d)
    with runner.connect() as sock:
        conn = d.echoed(sock, b"1")

        def write_then_read() -> tuple[bool, object]:
            conn.write(b"timer;")  # as from a timer: not inside a read
            scheduled = conn._flushing is not None and conn._flushing is not True
            conn.data_received(b"read;")  # bytes arrive before the flush ran
            return scheduled, conn._flushing

        scheduled, after = runner.call(write_then_read)
        assert scheduled
        assert after is None  # the scheduled flush was cancelled: nothing left to do
        assert recv_until(sock, b"read;") == b"timer;read;"
        runner.call(conn.write, b"late;")  # outside a read again: needs a new flush
        assert recv_until(sock, b"late;") == b"late;"
        sock.sendall(b"2")
        assert recv_until(sock, b"2") == b"2"


# -- durations: refused where they enter (issue 10, item 4) ------------------------

# Each breaks the daemon later if let in: inf and 1e308 make every timer fail
# ("timer delay must be a finite number"), nan compares false with everything.
BAD_DURATIONS = [float("inf"), float("nan"), 1e308, -1]


@pytest.mark.parametrize("value", BAD_DURATIONS, ids=repr)
@pytest.mark.parametrize(
    "setting", ["idle_timeout", "close_timeout", "shutdown_timeout", "memory_check_interval"]
)
def test_duration_settings_refuse_inf_nan_huge_and_negative(setting: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"^{setting}\b.* s"):
        Recorder(**{setting: value})


@pytest.mark.parametrize("value", BAD_DURATIONS, ids=repr)
@pytest.mark.parametrize(
    ("url", "option"),
    [
        ("tcp://127.0.0.1:0", "idle_timeout"),
        ("tcp://127.0.0.1:0", "tls_handshake_timeout"),
        ("http://127.0.0.1:0", "idle_timeout"),
        ("http://127.0.0.1:0", "header_timeout"),
        ("http://127.0.0.1:0", "keepalive_timeout"),
        ("ws://127.0.0.1:0", "ping_interval"),
        ("ws://127.0.0.1:0", "ping_timeout"),
        ("ws://127.0.0.1:0", "close_timeout"),
    ],
)
def test_endpoint_durations_refuse_inf_nan_huge_and_negative(
    url: str, option: str, value: float
) -> None:
    from daemonkit import Endpoint

    with pytest.raises(ConfigError, match=rf"^{url}.*\b{option}\b"):
        Recorder(listen=Endpoint(url, **{option: value}))


def test_the_longest_durations_allowed_still_work() -> None:
    """30 days is the ceiling (daemonkit.core.durations.MAX_DURATION); None still means none."""
    from daemonkit import Endpoint
    from daemonkit.core.durations import MAX_DURATION

    d = Recorder(
        listen=Endpoint("ws://127.0.0.1:0", ping_interval=MAX_DURATION, ping_timeout=None),
        idle_timeout=MAX_DURATION,
        shutdown_timeout=0,
        close_timeout=MAX_DURATION,
    )
    assert d.idle_timeout == MAX_DURATION
