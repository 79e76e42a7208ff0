"""Hostile and broken HTTP clients: each gets its 4xx and a close, never a traceback in the log.

After each case the daemon must still serve a well-behaved client.
Deadlines are driven by a FakeClock: nothing here sleeps.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import pytest

from daemonkit import CloseReason, Daemon, Endpoint, FakeClock
from daemonkit.http import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEPALIVE_TIMEOUT,
    HttpConnection,
    HttpRequest,
)
from daemonkit.testing import DaemonRunner
from tests.http import RawClient, assert_no_traceback, get

LOCAL = "http://127.0.0.1:0"
StartDaemon = Callable[..., DaemonRunner]


class App(Daemon):
    listen = LOCAL

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.reasons: list[CloseReason] = []

    def on_request(self, conn: HttpConnection, request: HttpRequest) -> None:
        conn.respond(200, (), f"{request.method} {request.path} {len(request.body)}")

    def on_close(self, conn: Any, reason: CloseReason) -> None:
        self.reasons.append(reason)


def serves(runner: DaemonRunner) -> None:
    """A well-behaved client still gets its answer."""
    client = RawClient(runner.connect())
    try:
        client.send(get("/ok", method="POST", body=b"abc"))
        assert client.response().body == b"POST /ok 3"
    finally:
        client.close()


def refused(runner: DaemonRunner, data: bytes, status: int) -> None:
    """Send *data*; the answer is *status* with Connection: close, then the end."""
    client = RawClient(runner.connect())
    try:
        client.send(data)
        reply = client.response()
        assert (reply.status, reply.header("connection")) == (status, "close"), reply
        assert client.closed()
    finally:
        client.close()


@pytest.fixture(autouse=True)
def _info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="daemonkit")


@pytest.fixture
def runner(run_daemon: StartDaemon) -> DaemonRunner:
    return run_daemon(App())


def headers(count: int, size: int = 10) -> list[str]:
    return [f"X-Field-{n}: {'v' * size}" for n in range(count)]


@pytest.mark.parametrize(
    ("data", "status"),
    [
        pytest.param(get("/" + "a" * 9000), 414, id="request-line-too-long"),
        pytest.param(get("/", *headers(101)), 431, id="too-many-headers"),
        pytest.param(get("/", *headers(20, 1000)), 431, id="head-over-16-kib"),
        pytest.param(b"GARBAGE\r\n\r\n", 400, id="not-http"),
        pytest.param(b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n", 400, id="bad-header-line"),
        pytest.param(get("/", "Content-Length: x"), 400, id="bad-content-length"),
        pytest.param(get("/", "Content-Length: 1", "Content-Length: 2"), 400, id="two-lengths"),
        pytest.param(
            get("/", "Transfer-Encoding: chunked", method="POST") + b"zz\r\n", 400, id="bad-chunk"
        ),
        pytest.param(
            get("/", "Transfer-Encoding: gzip, chunked", method="POST"), 501, id="gzip-coding"
        ),
        pytest.param(b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505, id="http-2"),
    ],
)
def test_bad_requests_get_their_status_and_a_close(
    runner: DaemonRunner, caplog: pytest.LogCaptureFixture, data: bytes, status: int
) -> None:
    refused(runner, data, status)
    serves(runner)
    assert_no_traceback(caplog)
    assert any(f"answering {status}" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", "without a Host", id="no-host"),
        pytest.param(get("/", "Host: again"), "2 Host header fields", id="two-hosts"),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "invalid Host header field", id="host-a-b"
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: u@h\r\nContent-Length: 3\r\n\r\nabc",
            "invalid Host header field",
            id="bad-host-with-a-body",
        ),
        pytest.param(
            b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", "2 Host", id="two-hosts-http10"
        ),
    ],
)
def test_a_missing_repeated_or_invalid_host_gets_400(
    runner: DaemonRunner, caplog: pytest.LogCaptureFixture, data: bytes, reason: str
) -> None:
    refused(runner, data, 400)
    serves(runner)
    assert_no_traceback(caplog)
    assert any(reason in r.getMessage() and "RFC 9112" in r.getMessage() for r in caplog.records)


def test_host_forms_that_are_served(runner: DaemonRunner) -> None:
    client = RawClient(runner.connect())
    try:
        client.send(b"GET http://x/abs HTTP/1.1\r\nHost: x\r\n\r\n")  # absolute-form
        assert client.response().body == b"GET /abs 0"
        client.send(b"GET /v6 HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n")
        assert client.response().body == b"GET /v6 0"
        client.send(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")  # 1.0: optional
        assert client.response().body == b"GET /old 0"
    finally:
        client.close()


def test_requests_before_the_bad_one_are_answered_first(
    runner: DaemonRunner, caplog: pytest.LogCaptureFixture
) -> None:
    client = RawClient(runner.connect())
    client.send(get("/first") + get("/second") + b"GARBAGE\r\n\r\n")
    assert client.response().body == b"GET /first 0"
    assert client.response().body == b"GET /second 0"
    assert client.response().status == 400
    assert client.closed()
    client.close()
    serves(runner)
    assert_no_traceback(caplog)


def test_a_body_over_max_body_is_refused_before_it_is_sent(
    runner: DaemonRunner, caplog: pytest.LogCaptureFixture
) -> None:
    # Only the head is sent: the 413 must come without waiting for the body.
    refused(runner, get("/up", "Content-Length: 2000000", method="POST"), 413)
    # With Expect: 100-continue, the client gets the 413 and never a 100.
    refused(
        runner,
        get("/up", "Content-Length: 2000000", "Expect: 100-continue", method="POST"),
        413,
    )
    serves(runner)
    assert_no_traceback(caplog)


def test_a_chunked_body_over_max_body(
    run_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    runner = run_daemon(App(listen=Endpoint(LOCAL, max_body=100)))
    data = get("/up", "Transfer-Encoding: chunked", method="POST")
    refused(runner, data + b"40\r\n" + b"x" * 64 + b"\r\n40\r\n", 413)
    serves(runner)
    assert_no_traceback(caplog)


def test_endpoint_limits_apply(run_daemon: StartDaemon, caplog: pytest.LogCaptureFixture) -> None:
    runner = run_daemon(App(listen=Endpoint(LOCAL, max_target=100, max_headers=5, max_head=512)))
    refused(runner, get("/" + "a" * 101), 414)
    refused(runner, get("/", *headers(5)), 431)  # Host makes six
    refused(runner, get("/", *headers(3, 200)), 431)
    serves(runner)
    assert_no_traceback(caplog)


# -- deadlines ----------------------------------------------------------------------


@pytest.fixture
def clocked(run_daemon: StartDaemon) -> tuple[App, DaemonRunner]:
    d = App()
    return d, run_daemon(d, clock=FakeClock())


def only_connection(d: App, runner: DaemonRunner) -> HttpConnection:
    conn = runner.call(lambda: next(iter(d.connections)))
    assert isinstance(conn, HttpConnection)
    return conn


def nothing_to_read(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(1)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(5.0)
    return False


def test_slowloris_gets_408_at_the_header_timeout(
    clocked: tuple[App, DaemonRunner], caplog: pytest.LogCaptureFixture
) -> None:
    d, runner = clocked
    client = RawClient(runner.connect())
    conn = only_connection(d, runner)
    data = get("/", "X-Slow: " + "s" * 20)
    # One byte a second: the head's deadline runs from its first byte.
    for n in range(int(DEFAULT_HEADER_TIMEOUT)):
        client.send(data[n : n + 1])
        runner.wait_for(lambda: conn.bytes_in == n + 1)  # noqa: B023 (called at once)
        runner.advance(1 if n < DEFAULT_HEADER_TIMEOUT - 1 else 0.9)
    assert nothing_to_read(client.sock)  # 9.9 s after the first byte: still open
    assert runner.call(lambda: len(d.connections)) == 1
    runner.advance(0.1)
    reply = client.response()
    assert (reply.status, reply.header("connection")) == (408, "close")
    assert client.closed()
    client.close()
    runner.wait_for(lambda: d.reasons == [CloseReason.IDLE_TIMEOUT])
    serves(runner)
    assert_no_traceback(caplog)
    assert any("header_timeout=10s" in r.getMessage() for r in caplog.records)


def test_a_stalled_body_gets_408(
    clocked: tuple[App, DaemonRunner], caplog: pytest.LogCaptureFixture
) -> None:
    d, runner = clocked
    client = RawClient(runner.connect())
    conn = only_connection(d, runner)
    head = get("/up", "Content-Length: 10", method="POST")
    client.send(head + b"12345")
    runner.wait_for(lambda: conn.bytes_in == len(head) + 5)
    runner.advance(DEFAULT_HEADER_TIMEOUT - 0.5)
    client.send(b"6")  # progress: the body may take long, it must not stall
    runner.wait_for(lambda: conn.bytes_in == len(head) + 6)
    runner.advance(DEFAULT_HEADER_TIMEOUT - 0.5)
    assert nothing_to_read(client.sock)
    runner.advance(0.5)
    assert client.response().status == 408
    assert client.closed()
    client.close()
    serves(runner)
    assert_no_traceback(caplog)


def test_an_idle_keep_alive_connection_closes_at_the_keepalive_timeout(
    clocked: tuple[App, DaemonRunner], caplog: pytest.LogCaptureFixture
) -> None:
    d, runner = clocked
    client = RawClient(runner.connect())
    client.send(get("/one"))
    assert client.response().body == b"GET /one 0"
    runner.advance(DEFAULT_KEEPALIVE_TIMEOUT - 1)
    client.send(get("/two"))  # a request restarts the idle period
    assert client.response().body == b"GET /two 0"
    runner.advance(DEFAULT_KEEPALIVE_TIMEOUT - 0.1)
    assert nothing_to_read(client.sock)
    runner.advance(0.1)
    assert client.closed()  # closed quietly: no 408 for a client that asked nothing
    client.close()
    runner.wait_for(lambda: d.reasons == [CloseReason.IDLE_TIMEOUT])
    serves(runner)
    assert_no_traceback(caplog)


def test_a_silent_new_connection_closes_at_the_header_timeout(
    clocked: tuple[App, DaemonRunner], caplog: pytest.LogCaptureFixture
) -> None:
    d, runner = clocked
    client = RawClient(runner.connect())
    runner.advance(DEFAULT_HEADER_TIMEOUT - 0.1)
    assert nothing_to_read(client.sock)
    runner.advance(0.1)
    assert client.closed()
    client.close()
    runner.wait_for(lambda: d.reasons == [CloseReason.IDLE_TIMEOUT])
    serves(runner)
    assert_no_traceback(caplog)


def test_timeouts_can_be_turned_off(run_daemon: StartDaemon) -> None:
    d = App(listen=Endpoint(LOCAL, header_timeout=None, keepalive_timeout=None))
    runner = run_daemon(d, clock=FakeClock())
    client = RawClient(runner.connect())
    client.send(b"GET / HTTP/1.1\r\n")
    conn = only_connection(d, runner)
    runner.wait_for(lambda: conn.bytes_in == 16)
    runner.advance(3600)
    client.send(b"Host: t\r\n\r\n")
    assert client.response().body == b"GET / 0"
    runner.advance(3600)
    client.send(get("/again"))
    assert client.response().body == b"GET /again 0"
    client.close()
