"""Deadlines against slow clients: the frame deadline, the idle default, the send deadline.

A client that trickles one byte a second, one that never reads what it asked
for, and one that says nothing at all must each lose its connection after a
named, finite time. Real sockets on 127.0.0.1 on both backends; the
deadlines run on a FakeClock, so nothing sleeps and nothing asserts on time.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from daemonkit import CloseReason, Connection, Daemon, FakeClock, Lines
from daemonkit.cli import build_parser
from daemonkit.core.connection import (
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_SEND_TIMEOUT,
    FRAME_IDLE_FACTOR,
    _IdleBucket,
)
from daemonkit.core.endpoints import Endpoint
from daemonkit.core.timers import Timer
from daemonkit.errors import ConfigError
from daemonkit.http import HttpConnection
from daemonkit.testing import DaemonRunner
from tests.helpers import daemonkit_log_to, recv_all, recv_until

LOCAL = "tcp://127.0.0.1:0"
SEND = 10.0  # the send_timeout of the send-deadline tests


class Lined(Daemon):
    """Echoes lines and records close reasons, for assertions from the test thread."""

    listen = LOCAL
    framing = Lines

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.live: list[Connection] = []
        self.reasons: list[CloseReason] = []

    def on_accept(self, conn: Connection) -> None:
        self.live.append(conn)

    def on_read(self, conn: Connection, data: Any) -> None:
        conn.send(data)

    def on_close(self, conn: Connection, reason: CloseReason) -> None:
        self.reasons.append(reason)


class Flood(Lined):
    """Writes to every client until the client stops taking it (at most 64 MiB)."""

    CHUNK = b"f" * (64 * 1024)
    LIMIT = 64 << 20

    def on_accept(self, conn: Connection) -> None:
        super().on_accept(conn)
        self.pump(conn)

    def on_drain(self, conn: Connection) -> None:
        self.pump(conn)

    def pump(self, conn: Connection) -> None:
        for _ in range(64):
            if conn.bytes_out >= self.LIMIT or not conn.write(self.CHUNK):
                return


def taken(conn: Connection) -> int:
    """Bytes the kernel has taken from this connection so far."""
    return conn.bytes_out - conn.write_buffer_size


def paused(runner: DaemonRunner, conn: Connection) -> None:
    """Wait until ours holds more than the high mark and the kernel takes no more.

    The kernel may still take bytes for a moment after writing paused (its
    buffers grow while acknowledgements come in); a fake clock moved on in
    that moment would see progress that no reader made.
    """
    runner.wait_for(lambda: conn.write_buffer_size > runner.daemon.write_high_water)
    last, same = -1, 0
    for _ in range(500):  # at most 10 s
        now = runner.call(taken, conn)
        same = same + 1 if now == last else 0
        if same == 5:
            return
        last = now
        time.sleep(0.02)
    raise AssertionError("the kernel kept taking bytes from a client that does not read")


def closed_reasons(runner: DaemonRunner, d: Lined) -> list[CloseReason]:
    return runner.call(lambda: list(d.reasons))


# -- item 7: the frame deadline ----------------------------------------------------


def test_a_partial_line_is_closed_at_the_frame_deadline(run_daemon: Any) -> None:
    d = Lined(frame_timeout=10)
    runner = run_daemon(d, clock=FakeClock())
    records: list[logging.LogRecord] = []
    with daemonkit_log_to(records.append), runner.connect() as sock:
        conn = runner.call(lambda: d.live[0])
        sock.sendall(b"abc")
        runner.wait_for(lambda: conn.bytes_in == 3)
        runner.advance(9.9)
        assert closed_reasons(runner, d) == []
        runner.advance(0.2)
        assert recv_all(sock) == b""
        runner.wait_for(lambda: d.reasons == [CloseReason.FRAME_TIMEOUT])
    lines = [r for r in records if "frame_timeout" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelno == logging.INFO
    assert conn.peer in lines[0].getMessage()  # the connection logger's "#id peer" prefix
    assert "frame_timeout=10s" in lines[0].getMessage()


def test_a_trickler_is_closed_within_a_few_idle_timeouts(run_daemon: Any) -> None:
    """One byte a second resets the idle timer; the frame deadline still ends it."""
    d = Lined(idle_timeout=5)  # no frame_timeout: at most FRAME_IDLE_FACTOR idle timeouts
    runner = run_daemon(d, clock=FakeClock())
    with runner.connect() as sock:
        conn = runner.call(lambda: d.live[0])
        sent = 0
        for _ in range(20):  # 20 fake seconds, one byte each
            if closed_reasons(runner, d):
                break
            sock.sendall(b"x")
            sent += 1
            runner.wait_for(lambda n=sent: conn.bytes_in == n or conn.closing)  # type: ignore[misc]
            runner.advance(1)
        runner.wait_for(lambda: bool(d.reasons))
    assert d.reasons == [CloseReason.FRAME_TIMEOUT]
    assert sent <= FRAME_IDLE_FACTOR * 5 + 1


def test_a_completed_frame_restarts_the_frame_deadline(run_daemon: Any) -> None:
    d = Lined(frame_timeout=10, idle_timeout=None)
    runner = run_daemon(d, clock=FakeClock())
    with runner.connect() as sock:
        conn = runner.call(lambda: d.live[0])
        sock.sendall(b"a")
        runner.wait_for(lambda: conn.bytes_in == 1)
        runner.advance(8)
        sock.sendall(b"b\nc")  # ends the first line at t=8 and starts another
        assert recv_until(sock, b"\n") == b"ab\n"
        runner.advance(8)  # t=16: the first line would be late, the second is not
        assert closed_reasons(runner, d) == []
        sock.sendall(b"d\n")
        assert recv_until(sock, b"\n") == b"cd\n"
        runner.advance(60)  # nothing held: no frame deadline runs
        assert closed_reasons(runner, d) == []
        sock.sendall(b"e")
        runner.wait_for(lambda: conn.bytes_in == 7)
        runner.advance(10.1)
        assert recv_all(sock) == b""
        runner.wait_for(lambda: d.reasons == [CloseReason.FRAME_TIMEOUT])


def test_a_raw_endpoint_has_no_frame_deadline(run_daemon: Any) -> None:
    """Without a framer there are no frames: only the idle timeout applies."""
    d = Lined(framing=None, frame_timeout=1, idle_timeout=None)
    runner = run_daemon(d, clock=FakeClock())
    with runner.connect() as sock:
        sock.sendall(b"no newline")
        assert recv_until(sock, b"newline") == b"no newline"
        runner.advance(600)
        assert closed_reasons(runner, d) == []


def test_the_frame_timeout_defaults(run_daemon: Any) -> None:
    d = Lined()
    runner = run_daemon(d, clock=FakeClock())
    assert runner.call(lambda: d.host("tcp").frame_timeout) == DEFAULT_FRAME_TIMEOUT  # type: ignore[attr-defined]
    short = Lined(idle_timeout=5, listen=[LOCAL, Endpoint(LOCAL, name="slow", frame_timeout=30)])
    assert short.host("tcp").frame_timeout == FRAME_IDLE_FACTOR * 5  # type: ignore[attr-defined]
    assert short.host("slow").frame_timeout == 30  # type: ignore[attr-defined]
    assert Lined(frame_timeout=0).host("tcp").frame_timeout is None  # type: ignore[attr-defined]


# -- item 7: the default idle timeout ----------------------------------------------


def test_a_silent_client_is_closed_after_the_default_idle_timeout(run_daemon: Any) -> None:
    assert Daemon.idle_timeout == DEFAULT_IDLE_TIMEOUT
    d = Lined()
    runner = run_daemon(d, clock=FakeClock())
    with runner.connect() as sock:
        runner.advance(DEFAULT_IDLE_TIMEOUT - 1)
        assert closed_reasons(runner, d) == []
        runner.advance(1.5)
        assert recv_all(sock) == b""
        runner.wait_for(lambda: d.reasons == [CloseReason.IDLE_TIMEOUT])


def test_idle_timeout_none_still_means_never(run_daemon: Any) -> None:
    d = Lined(idle_timeout=None)
    runner = run_daemon(d, clock=FakeClock())
    with runner.connect() as sock:
        runner.advance(10 * DEFAULT_IDLE_TIMEOUT)
        sock.sendall(b"still here\n")
        assert recv_until(sock, b"\n") == b"still here\n"
    assert d.reasons in ([], [CloseReason.PEER_CLOSED])


# -- issue 17: far idle deadlines wait in the reactor's idle wheel ---------------------


def test_a_far_idle_deadline_is_kept_to_the_millisecond(run_daemon: Any) -> None:
    """A far deadline waits in a wheel bucket, then in a timer of its own: never early."""
    d = Lined(idle_timeout=30)
    runner = run_daemon(d, clock=FakeClock(1000.25))  # the deadline is not on a bucket edge
    with runner.connect() as sock:
        conn = runner.call(lambda: d.live[0])
        assert runner.call(lambda: type(conn._idle_wait)) is _IdleBucket
        runner.advance(29.998)
        assert closed_reasons(runner, d) == []
        assert runner.call(lambda: isinstance(conn._idle_wait, Timer))  # a timer of its own
        runner.advance(0.002)
        assert recv_all(sock) == b""
        runner.wait_for(lambda: d.reasons == [CloseReason.IDLE_TIMEOUT])
    assert runner.call(lambda: d.reactor.stats().timers) == 0


def test_a_late_idle_bucket_spares_what_an_on_timeout_changed(run_daemon: Any) -> None:
    """Run late (the loop was stuck), a bucket times out at once what is past due.

    An ``on_timeout`` may meanwhile change the timeout of another connection
    of the same bucket: that one follows its new setting.
    """

    class Sparing(Lined):
        def on_timeout(self, conn: Connection) -> None:
            for other in self.live:
                if other is not conn:
                    other.set_idle_timeout(None)
            conn.close()

    d = Sparing(idle_timeout=10)
    runner = run_daemon(d, clock=FakeClock())
    with contextlib.ExitStack() as stack:
        for _ in range(3):
            stack.enter_context(runner.connect())

        def run_bucket_late() -> None:
            bucket = d.live[0]._idle_wait
            assert isinstance(bucket, _IdleBucket)
            assert all(c._idle_wait is bucket for c in d.live)
            for conn in d.live:
                conn._last_read -= 20  # as if the loop had been stuck for 20 s
            assert bucket.timer is not None
            bucket.timer.cancel()
            bucket.wheel._run(bucket.key)

        runner.call(run_bucket_late)
        runner.wait_for(lambda: d.reasons == [CloseReason.LOCAL])
        runner.advance(100)
        assert closed_reasons(runner, d) == [CloseReason.LOCAL]
        spared = runner.call(lambda: [(c.idle_timeout, c._idle_wait) for c in d.live])
    # The first timed out (and closed), with its setting; the others were spared.
    assert spared == [(10.0, None)] + [(None, None)] * 2


# -- item 8: the send deadline -----------------------------------------------------


def test_a_reader_that_never_reads_is_closed_after_send_timeout(run_daemon: Any) -> None:
    d = Flood(send_timeout=SEND, idle_timeout=None)
    runner = run_daemon(d, clock=FakeClock())
    records: list[logging.LogRecord] = []
    with daemonkit_log_to(records.append), runner.connect() as sock:
        conn = runner.call(lambda: d.live[0])
        paused(runner, conn)
        runner.advance(SEND - 0.5)
        assert closed_reasons(runner, d) == []
        for _ in range(3):  # a byte the kernel took just after the pause restarts it once
            runner.advance(SEND)
            if closed_reasons(runner, d):
                break
        runner.wait_for(lambda: bool(d.reasons))
        assert d.reasons == [CloseReason.SEND_TIMEOUT]
        # Reset, not closed: the kernel dropped the megabytes queued for this
        # client instead of keeping them in an orphaned socket.
        with pytest.raises(ConnectionResetError):
            for _ in range(10_000):  # what was in flight, then the reset
                if not sock.recv(1 << 20):
                    break
    lines = [r for r in records if "send_timeout" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO


def test_a_slow_but_progressing_reader_is_not_closed(run_daemon: Any) -> None:
    d = Flood(send_timeout=SEND, idle_timeout=None)
    runner = run_daemon(d, clock=FakeClock())
    with runner.connect() as sock:
        conn = runner.call(lambda: d.live[0])
        paused(runner, conn)
        for _ in range(6):  # 6 x 0.6 send_timeouts: 3.6 of them in all
            before = runner.call(taken, conn)
            for _ in range(400):  # read until the daemon's kernel buffer takes more
                assert sock.recv(256 * 1024)
                if runner.call(taken, conn) > before:
                    break
            assert runner.call(taken, conn) > before
            runner.advance(0.6 * SEND)
            assert closed_reasons(runner, d) == []
    runner.wait_for(lambda: bool(d.reasons))
    # Closing with unread data resets the connection: the client's doing either way.
    assert d.reasons in ([CloseReason.PEER_CLOSED], [CloseReason.CONNECTION_ERROR])


class Stream(Daemon):
    """Streams a large HTTP body to every GET, as fast as the client takes it."""

    listen = Endpoint("http://127.0.0.1:0")

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.reasons: list[CloseReason] = []
        self.live: list[Connection] = []

    def on_request(self, conn: HttpConnection, request: Any) -> None:
        self.live.append(conn)
        conn.respond_stream(200)
        self.on_drain(conn)

    def on_drain(self, conn: Connection) -> None:
        assert isinstance(conn, HttpConnection)
        for _ in range(64):
            if conn.bytes_out >= Flood.LIMIT or not conn.write_body(Flood.CHUNK):
                return

    def on_close(self, conn: Connection, reason: CloseReason) -> None:
        self.reasons.append(reason)


def test_an_http_reader_that_never_reads_is_closed_after_send_timeout(run_daemon: Any) -> None:
    d = Stream(send_timeout=SEND)
    runner = run_daemon(d, clock=FakeClock())
    with runner.connect() as sock:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        runner.wait_for(lambda: bool(d.live))
        conn = runner.call(lambda: d.live[0])
        paused(runner, conn)
        for _ in range(4):
            runner.advance(SEND)
            if runner.call(lambda: list(d.reasons)):
                break
        runner.wait_for(lambda: bool(d.reasons))
    assert d.reasons == [CloseReason.SEND_TIMEOUT]


def test_send_timeout_default_and_off(run_daemon: Any) -> None:
    assert Daemon.send_timeout == DEFAULT_SEND_TIMEOUT
    d = Flood(send_timeout=None, idle_timeout=None)
    runner = run_daemon(d, clock=FakeClock())
    with runner.connect():
        conn = runner.call(lambda: d.live[0])
        paused(runner, conn)
        runner.advance(10 * DEFAULT_SEND_TIMEOUT)
        assert closed_reasons(runner, d) == []


# -- item 8: kernel buffer sizes ---------------------------------------------------


@pytest.mark.parametrize("scheme", ["tcp", "unix"])
def test_sndbuf_and_rcvbuf_are_set_on_accepted_sockets(
    run_daemon: Any, scheme: str, tmp_path: Path
) -> None:
    url = LOCAL if scheme == "tcp" else f"unix://{tmp_path / 'd.sock'}"
    d = Lined(listen=Endpoint(url, sndbuf=50_000, rcvbuf=60_000))
    runner = run_daemon(d)
    with runner.connect():
        conn = runner.call(lambda: d.live[0])

        def sizes() -> tuple[int, int]:
            assert conn.transport is not None
            sock = conn.transport.get_extra_info("socket")
            return (
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            )

        snd, rcv = runner.call(sizes)
    assert snd in (50_000, 100_000)  # Linux doubles the value asked for (socket(7))
    assert rcv in (60_000, 120_000)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"sndbuf": 0}, "sndbuf"),
        ({"sndbuf": -1}, "sndbuf"),
        ({"rcvbuf": "64k"}, "rcvbuf"),
        ({"rcvbuf": True}, "rcvbuf"),
        ({"sndbuf": 1 << 40}, "sndbuf"),
        ({"send_timeout": -1}, "send_timeout"),
        ({"frame_timeout": float("inf")}, "frame_timeout"),
    ],
)
def test_bad_endpoint_options_are_refused(options: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Lined(listen=Endpoint(LOCAL, **options))


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"frame_timeout": -1}, "frame_timeout"),
        ({"frame_timeout": float("nan")}, "frame_timeout"),
        ({"send_timeout": float("inf")}, "send_timeout"),
        ({"send_timeout": "60"}, "send_timeout"),
        ({"idle_timeout": 1e12}, "idle_timeout"),
    ],
)
def test_bad_deadline_settings_are_refused(settings: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Lined(**settings)


def test_an_http_endpoint_refuses_frame_timeout() -> None:
    with pytest.raises(ConfigError, match="header_timeout"):
        Endpoint("http://127.0.0.1:0", frame_timeout=5)


def test_the_command_line_sets_the_deadlines() -> None:
    args = build_parser().parse_args(["app:Echo", "--frame-timeout", "15", "--send-timeout", "30s"])
    assert (args.frame_timeout, args.send_timeout) == (15.0, 30.0)
