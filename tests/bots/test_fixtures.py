"""The pytest fixtures: every endpoint of the daemon kept, and results that measured nothing."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from daemonkit import Connection, Daemon, Endpoint, Lines
from daemonkit.bots import Bot, RunResult
from daemonkit.testing.plugin import BotsFixture, DaemonFixture
from tests.helpers import recv_until


class Upper:
    """The handler of the ``upper`` endpoint: answers each line in capitals."""

    def on_read(self, conn: Connection, line: bytes) -> None:
        conn.send(line.upper())


class Api:
    """The handler of the ``api`` endpoint."""

    def on_request(self, conn: Any, request: Any) -> None:
        conn.respond(200, {"content-type": "text/plain"}, b"api here\n")


class ThreeEndpoints(Daemon):
    # Fixed ports, as a real daemon has: the fixture must move each to a free one.
    listen = [
        "tcp://127.0.0.1:7000",
        Endpoint("tcp://127.0.0.1:7002", name="upper", framing=Lines, handler=Upper()),
        Endpoint("http://127.0.0.1:8080", name="api", handler=Api()),
    ]
    framing = Lines

    def on_read(self, conn: Connection, line: bytes) -> None:
        conn.send(line)


class EchoBot(Bot):
    framing = Lines

    def on_tick(self) -> None:
        self.request(b"hi", name="echo")


class SilentBot(Bot):
    """Connects and does nothing: no request is ever measured."""


@pytest.fixture
def daemon() -> Any:
    fixture = DaemonFixture()
    yield fixture
    fixture.stop_all()


def ask(address: Any, data: bytes, end: bytes) -> bytes:
    with socket.create_connection((address.host, address.port), timeout=10) as sock:
        sock.sendall(data)
        return recv_until(sock, end)


def test_the_daemon_fixture_keeps_every_endpoint_on_free_ports(daemon: DaemonFixture) -> None:
    server = daemon(ThreeEndpoints)
    addresses = server.addresses
    assert list(addresses) == ["tcp", "upper", "api"]
    assert all(a.host == "127.0.0.1" for a in addresses.values())
    assert {a.port for a in addresses.values()}.isdisjoint({0, 7000, 7002, 8080})
    assert addresses["api"].scheme == "http"
    # Each endpoint kept its framing and its handler.
    assert ask(addresses["tcp"], b"abc\n", b"\n") == b"abc\n"
    assert ask(addresses["upper"], b"abc\n", b"\n") == b"ABC\n"
    reply = ask(addresses["api"], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"api here\n")
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"api here\n")
    result = BotsFixture()(EchoBot, server, count=2, duration=0.3)
    result.assert_ok()
    assert result.stats.requests > 0


def test_a_listen_given_to_the_fixture_is_used_as_is(daemon: DaemonFixture) -> None:
    server = daemon(ThreeEndpoints, listen="tcp://127.0.0.1:0")
    assert list(server.addresses) == ["tcp"]


def test_a_result_with_no_request_fails_the_assertion_helpers(daemon: DaemonFixture) -> None:
    server = daemon(ThreeEndpoints)
    result = BotsFixture()(SilentBot, server, count=2, duration=0.2)
    assert result.stats.errors == 0  # the trap: nothing failed because nothing ran
    with pytest.raises(AssertionError, match="no request was measured"):
        result.assert_ok()
    with pytest.raises(AssertionError, match="no request was measured"):
        result.p99()


def test_assert_ok_names_the_errors() -> None:
    from daemonkit.bots import Stats

    stats = Stats()
    stats.record("echo", 0.001)
    stats.fail("echo", "timeout")
    result = RunResult("tcp://x:1", "B", 1, 1.0, 1.0, stats)
    with pytest.raises(AssertionError, match="1 failed: echo: timeout 1"):
        result.assert_ok()
    result.assert_ok(max_errors=1)
