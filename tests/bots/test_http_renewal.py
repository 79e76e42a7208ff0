"""An HttpBot whose server ends the connection after a response opens a new one.

As every HTTP client does: after ``Connection: close`` (examples/http_hello.py
asked for it) or an HTTP/1.0 response (the stdlib's http.server), the next
request goes on a new connection; that is not a drop, and the bot's session
(its script, ticks, timers, on_connect/on_close) goes on across connections.
"""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from daemonkit.bots import BotRunner, HttpBot, RequestFailed, RunResult
from daemonkit.core.connection import CloseReason
from daemonkit.testing import DaemonRunner
from tests.helpers import load_example, serve_stdlib_http

http_hello = load_example("http_hello")


def run(bot: type[HttpBot], target: str, *, bots: int = 2, **options: Any) -> RunResult:
    options.setdefault("duration", 0.6)
    return BotRunner(bot, target, bots=bots, stop_timeout=1.0, **options).run()


class OldHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one response per connection, then the server closes
    peers: set[tuple[str, int]] = set()

    def do_GET(self) -> None:
        OldHandler.peers.add(self.client_address)
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http10() -> Iterator[str]:
    OldHandler.peers = set()
    yield from serve_stdlib_http(OldHandler)


class Session(HttpBot):
    """Five pages with pauses, and a timer started once: all live through the renewals."""

    events: list[str] = []

    def on_connect(self) -> None:
        Session.events.append("connect")
        self.state["beats"] = 0
        self.every(0.05, self.beat)

    def beat(self) -> None:
        self.state["beats"] += 1

    async def script(self) -> None:
        for _ in range(5):
            resp = await self.get("/")
            assert resp.status == 200 and not resp.keep_alive
            await self.sleep(0.03)  # a timer of the bot, between two connections
        Session.events.append(f"beats>1:{self.state['beats'] > 1}")

    def on_close(self, reason: CloseReason) -> None:
        Session.events.append(f"close:{reason}")


def test_a_script_goes_on_across_http_10_connections(http10: str) -> None:
    Session.events = []
    result = run(Session, http10)
    ops = result.stats.operations
    assert ops["/"].count == 10 and not ops["/"].errors and result.stats.errors == 0
    assert result.stats.drops == 0 and "connection" not in ops
    assert len(OldHandler.peers) == 10  # one connection per request
    # One session per bot: on_connect once, on_close once; the every() timer kept beating.
    assert (
        sorted(Session.events)
        == ["beats>1:True"] * 2 + ["close:closed locally"] * 2 + ["connect"] * 2
    )


class Ticker(HttpBot):
    def on_tick(self) -> None:
        self.get("/", name="home")


class Closing(Ticker):
    headers = {"connection": "close"}  # the daemon answers, then closes


def test_tick_bots_go_on_after_connection_close_from_http_hello(backend: str) -> None:
    with DaemonRunner(http_hello.HelloDaemon(listen="http://127.0.0.1:0"), backend=backend) as d:
        result = run(Closing, str(d.address), bots=3)
    op = result.stats.operations["home"]
    assert op.count > 9 and not op.errors and op.statuses == {200: op.count}
    assert result.stats.drops == 0 and result.stats.errors == 0
    assert result.peak_connected == 3 and not result.warnings


def test_the_open_model_ticks_bots_between_connections(http10: str) -> None:
    result = run(Ticker, http10, bots=2, rate=40)
    op = result.stats.operations["home"]
    assert op.count >= 10 and not op.errors and result.stats.drops == 0
    assert not any("found no connected bot" in w for w in result.warnings)


# -- a server that ends the connection and then refuses the next ------------------------


@pytest.fixture
def once() -> Iterator[str]:
    """Answers the first request with Connection: close, then stops listening."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    port = listener.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        finally:
            listener.close()  # the next connect is refused
        with conn:
            conn.settimeout(5)
            data = b""
            while data.count(b"\r\n\r\n") < 2:  # both pipelined requests, whole
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        listener.close()
        thread.join(timeout=5)


class Pipelined(HttpBot):
    kinds: list[str] = []

    async def script(self) -> None:
        first, second = self.get("/"), self.get("/", name="second")
        await first
        for future in (second, self.get("/", name="third")):
            try:
                await future
            except RequestFailed as exc:
                Pipelined.kinds.append(exc.kind)


def test_requests_behind_the_close_fail_and_a_refused_renewal_is_a_drop(once: str) -> None:
    Pipelined.kinds = []
    result = run(Pipelined, once, bots=1, duration=0.4)
    ops = result.stats.operations
    assert ops["/"].count == 1
    # Pipelined behind the response that ended the connection: never answered.
    assert ops["second"].errors == {"closed: peer closed": 1}
    # Made after it, for the next connection, which the server refused.
    assert ops["third"].errors == {"connect: ECONNREFUSED": 1}
    # The refused connect drops the bot's session, which ends its script.
    assert Pipelined.kinds == ["closed: peer closed"]
    assert result.stats.drops == 1 and ops["connection"].errors == {"closed: peer closed": 1}
