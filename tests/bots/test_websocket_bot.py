"""WebSocketBot against real servers: examples/ws_chat.py, over TLS too, and websockets."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemonkit import Endpoint
from daemonkit.bots import BotRunner, RequestFailed, RunResult, WebSocketBot
from daemonkit.core.connection import CloseReason
from daemonkit.errors import ConfigError
from daemonkit.testing import DaemonRunner
from tests.helpers import free_port, load_example

ws_chat = load_example("ws_chat")
http_hello = load_example("http_hello")


def run(bot: type[WebSocketBot], target: str, *, bots: int = 2, duration: float = 1.2) -> RunResult:
    return BotRunner(bot, target, bots=bots, duration=duration, stop_timeout=1.0).run()


class Chatter(WebSocketBot):
    """Joins a room, says timestamped lines, times the broadcasts it gets, quits."""

    path = "/ws"
    bots = 0  # in the run
    closes: list[tuple[int | None, str]] = []

    def reply_key(self, frame: Any) -> Hashable | None:
        # The room's copy of my own line is my SAY's reply; others' are broadcasts.
        if frame.startswith(b"MSG #room bot%d " % self.index):
            return "said"
        if frame.startswith((b"MSG ", b"JOINED ", b"PARTED ")):
            return "broadcast"  # a key no request uses: no reply, on_read sees it
        return None

    async def script(self) -> None:
        assert await self.call(f"NICK bot{self.index}", name="nick") == b"OK nick bot%d" % (
            self.index
        )
        assert await self.call("JOIN #room", name="join") == b"OK join #room"
        for _ in range(100):  # until everybody is in the room (bounded: 100 x 20 ms)
            if await self.call("LIST", name="list") == b"ROOMS #room:%d" % Chatter.bots:
                break
            await self.sleep(0.02)
        for _ in range(3):
            await self.call(f"SAY #room {self.now()!r}", name="say", key="said")
        await self.ping()
        await self.sleep(0.1)
        assert await self.call("QUIT", name="quit") == b"BYE"
        await self.sleep(5)  # the server's Close ends the bot

    def on_read(self, frame: Any) -> None:
        if frame.startswith(b"MSG #room ") and not frame.startswith(
            b"MSG #room bot%d " % self.index
        ):
            sent = float(frame.split()[-1])
            self.record("broadcast", self.now() - sent)

    def on_close(self, reason: CloseReason) -> None:
        Chatter.closes.append((self.close_code, str(reason)))


def check_chat(result: RunResult, bots: int) -> None:
    ops = result.stats.operations
    for name, count in (("nick", 1), ("join", 1), ("say", 3), ("ping", 1), ("quit", 1)):
        assert ops[name].count == bots * count and not ops[name].errors, name
    # Each line reached every other member: a one-way measure of its own.
    assert ops["broadcast"].count == bots * (bots - 1) * 3
    assert "script" not in ops and result.stats.errors == 0
    assert Chatter.closes == [(1000, "closed locally")] * bots


def test_bots_chat_on_ws_chat(backend: str) -> None:
    Chatter.closes = []
    listen = ws_chat.endpoints("http://127.0.0.1:0", "tcp://127.0.0.1:0")
    with DaemonRunner(ws_chat.WsChatDaemon(listen=listen), backend=backend) as daemon:
        target = str(daemon.address).replace("http://", "ws://")
        Chatter.bots = 3
        check_chat(run(Chatter, target, bots=3), 3)


def test_bots_chat_on_ws_chat_over_tls(ca: tuple[Path, Path, Path]) -> None:
    cert, key, ca_file = ca
    Chatter.closes = []
    web = Endpoint(
        "https://127.0.0.1:0", name="web", websocket="/ws", certfile=str(cert), keyfile=str(key)
    )
    with DaemonRunner(ws_chat.WsChatDaemon(listen=[web])) as daemon:
        target = str(daemon.address).replace("https://", "wss://")

        class SecureChatter(Chatter):
            cafile = str(ca_file)

        Chatter.bots = 2
        check_chat(run(SecureChatter, target, bots=2), 2)


def test_a_refused_handshake_is_a_failed_connect() -> None:
    class Lost(WebSocketBot):
        path = "/nowhere"

        async def script(self) -> None:
            await self.call("never")

    with DaemonRunner(http_hello.HelloDaemon(listen="http://127.0.0.1:0")) as daemon:
        target = str(daemon.address).replace("http://", "ws://")
        result = run(Lost, target, bots=2, duration=0.3)
    assert result.peak_connected == 0
    assert result.stats.connect_errors == {"handshake: HTTP 404": 2}


def test_a_websocket_bot_refuses_an_http_target() -> None:
    with pytest.raises(ConfigError, match="use daemonkit.bots.HttpBot"):
        BotRunner(WebSocketBot, "http://127.0.0.1:1", duration=1)


# -- a server that is not ours: the websockets library ----------------------------


#: How each connection to websockets_server ended, as the server saw it.
SERVER_CLOSES: list[int | None] = []


@pytest.fixture
def websockets_server() -> Iterator[str]:
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        try:
            async for message in ws:
                if message == "close please":
                    await ws.close(1011, "asked to")
                    return
                if message == "twice":
                    await ws.send("extra")  # no reply to anything: a broadcast
                await ws.send(message)  # the echo, same type (text or binary)
        finally:
            SERVER_CLOSES.append(ws.close_code)  # 1006: the client sent no Close

    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: asyncio.Future[None] | None = None
    port = 0

    async def main() -> None:
        nonlocal stop, port
        stop = loop.create_future()
        async with serve(
            handler,
            "127.0.0.1",
            0,
            subprotocols=["chat.v2", "chat.v1"],
            ping_interval=0.1,  # the bots must answer these
            ping_timeout=0.2,  # unanswered, it would close with 1011 "keepalive ping timeout"
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            started.set()
            await stop

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),))
    thread.start()
    assert started.wait(5)
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(lambda: stop is not None and stop.set_result(None))
        thread.join(5)
        loop.close()


class Echoer(WebSocketBot):
    subprotocols = ("chat.v1", "chat.v2")
    seen: list[Any] = []

    async def script(self) -> None:
        assert await self.call("hello", name="text") == "hello"
        assert await self.call(b"\x00\xff" * 500, name="binary") == b"\x00\xff" * 500
        assert await self.call("twice", name="twice") == "extra"  # FIFO: the first to come
        await self.sleep(0.4)  # the server pings meanwhile; the bot answers
        Echoer.seen.append((self.subprotocol, self.compression_agreed is not None))
        self.send("close please")
        await self.sleep(5)

    def on_read(self, frame: Any) -> None:
        Echoer.seen.append(frame)

    def on_close(self, reason: CloseReason) -> None:
        Echoer.seen.append((self.close_code, self.close_reason))


def test_against_the_websockets_library(websockets_server: str) -> None:
    Echoer.seen = []
    result = run(Echoer, websockets_server, bots=2, duration=1.0)
    ops = result.stats.operations
    assert ops["text"].count == 2 and ops["binary"].count == 2 and ops["twice"].count == 2
    # The server chose its favourite of those offered, and compressed.
    assert Echoer.seen.count(("chat.v2", True)) == 2
    assert Echoer.seen.count("twice") == 2  # the echo came after the reply: no reply itself
    # The server's pings were answered: it closed when asked, not for a missing pong.
    assert Echoer.seen.count((1011, "asked to")) == 2
    # Its Close 1011 is a failure of the connection, and no drop on top of it.
    assert ops["connection"].errors == {"close 1011": 2}


# -- pings and close codes go through the paths of requests -------------------------


class Pinger(WebSocketBot):
    """Two pings: the first kept, the second failed by the script's own check."""

    subprotocols = ("chat.v1",)  # the server takes no client without one

    async def script(self) -> None:
        rtt = await self.ping()
        assert rtt >= 0
        await self.ping()
        self.fail("ping", "too slow")  # judges the ping that just returned: once, a failure
        await self.call("hello", name="text")
        await self.sleep(5)


class Closer(WebSocketBot):
    subprotocols = ("chat.v1",)  # the server takes no client without one

    async def script(self) -> None:
        await self.call("hello", name="text")
        self.send("close please")  # the server closes with 1011
        await self.sleep(5)


def test_pings_and_close_codes_have_the_class_prefix_and_the_verdict(
    websockets_server: str,
) -> None:
    result = BotRunner(
        [Pinger, Closer], websockets_server, bots=4, duration=0.8, stop_timeout=1.0
    ).run()
    ops = result.stats.operations
    # Two of each class; every operation named Class:name, pings and closes included.
    assert ops["Pinger:ping"].count == 2 and ops["Pinger:ping"].errors == {"too slow": 2}
    assert ops["Pinger:text"].count == 2 and ops["Closer:text"].count == 2
    assert ops["Closer:connection"].errors == {"close 1011": 2} and ops["Closer:connection"].measure
    assert "ping" not in ops and "connection" not in ops
    # A ping is a request: in the total, and its failures are request failures.
    assert result.stats.requests == 6 and result.stats.request_errors == 2


class LatePinger(WebSocketBot):
    subprotocols = ("chat.v1",)  # the server takes no client without one

    async def script(self) -> None:
        self.close()
        try:
            await self.ping()
        except RequestFailed as exc:
            self.state["kind"] = exc.kind


def test_a_ping_after_the_close_is_a_request_that_could_not_be_made(
    websockets_server: str,
) -> None:
    result = run(LatePinger, websockets_server, bots=1, duration=0.5)
    assert result.stats.operations["ping"].errors == {"not connected": 1}


# -- the end of a run: a clean close -------------------------------------------------


class Lingerer(WebSocketBot):
    """Still open when the run ends: the runner closes it."""

    subprotocols = ("chat.v1",)

    async def script(self) -> None:
        await self.call("hello", name="text")
        await self.sleep(30)


def test_a_bot_still_open_at_the_end_sends_close_1000(websockets_server: str) -> None:
    SERVER_CLOSES.clear()
    result = run(Lingerer, websockets_server, bots=3, duration=0.5)
    assert result.stats.operations["text"].count == 3 and result.stats.errors == 0
    for _ in range(100):  # the server's handlers finish just after the run (bounded: 2 s)
        if len(SERVER_CLOSES) == 3:
            break
        threading.Event().wait(0.02)
    # Before, the runner dropped the TCP connection and the server saw 1006.
    assert SERVER_CLOSES == [1000, 1000, 1000]


class Reconnecter(WebSocketBot):
    """Asks LIST again and again; reconnects when the server goes away."""

    path = "/ws"
    reconnect = True
    reconnect_min = 0.02  # a test's restart takes a fraction of a second
    reconnect_max = 0.2
    think_time = 0.01

    def on_tick(self) -> None:
        self.request("LIST", name="list")


def test_a_graceful_restart_is_a_drop_and_websocket_bots_reconnect(backend: str) -> None:
    # A daemon's graceful stop sends Close 1001 (going away): from the client
    # side that is the connection dropped by the server, which a bot with
    # `reconnect` comes back from, as it does from a reset.
    bots = 5
    port = free_port()
    listen = ws_chat.endpoints(f"http://127.0.0.1:{port}", "tcp://127.0.0.1:0")
    first = DaemonRunner(ws_chat.WsChatDaemon(listen=listen), backend=backend).start()
    runner = BotRunner(
        Reconnecter, f"ws://127.0.0.1:{port}", bots=bots, duration=60.0, backend=backend
    )
    results: list[RunResult] = []
    thread = threading.Thread(target=lambda: results.append(runner.run()), daemon=True)
    thread.start()
    second: DaemonRunner | None = None

    def wait_until(predicate: Any, what: str) -> None:
        deadline = time.monotonic() + 15.0
        while not predicate():
            assert time.monotonic() < deadline, f"not within 15 s: {what}"
            time.sleep(0.01)

    try:
        wait_until(lambda: runner.fleet is not None and len(runner.fleet.live) == bots, "up")
        first.stop()  # graceful: every WebSocket client gets Close 1001
        wait_until(lambda: runner.stats.drops == bots, "all dropped")
        listen = ws_chat.endpoints(f"http://127.0.0.1:{port}", "tcp://127.0.0.1:0")
        second = DaemonRunner(ws_chat.WsChatDaemon(listen=listen), backend=backend).start()
        wait_until(lambda: runner.stats.reconnects == bots, "all reconnected")
    finally:
        if runner._reactor is not None:
            runner._reactor.loop.call_soon_threadsafe(runner.stop)
        thread.join(15.0)
        if second is not None:
            second.stop(now=True)
        first.stop(now=True)
    (result,) = results
    stats = result.stats
    assert (stats.drops, stats.reconnects) == (bots, bots)
    # Each drop counted once, as a failure of the connection, named by its close code.
    connection = stats.operations["connection"]
    assert connection.failures == bots
    assert dict(connection.errors) == {"close 1001": bots}
