"""WebSocket endpoints over real sockets, on both backends.

Well-behaved clients are the ``websockets`` library's (``websockets.sync``);
hostile or silent ones are raw sockets that speak frames built by
:func:`~tests.websocket.test_framing.client_frame`. Timers (keepalive pings,
the closing handshake's deadline) run on a :class:`~daemonkit.core.timers.FakeClock`:
nothing here sleeps to wait for one.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from daemonkit import CloseReason, Connection, Daemon, Endpoint
from daemonkit.core.timers import FakeClock
from daemonkit.errors import ConfigError
from daemonkit.testing import DaemonRunner
from daemonkit.websocket import (
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
    OPTIONS,
    Deflate,
    check_options,
    session,
)
from tests.helpers import recv_until

from .test_framing import BINARY, CLOSE, PING, PONG, TEXT, client_frame

TIMEOUT = 5.0  # per blocking socket operation; a passing test never waits this long
KEY = "dGhlIHNhbXBsZSBub25jZQ=="

StartDaemon = Callable[..., DaemonRunner]


class WsDaemon(Daemon):
    """Echoes messages; a few text commands drive the server side of the tests."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.opened: list[Connection] = []
        self.closed: list[tuple[int, str, int | None, str]] = []
        self.messages: list[str | bytes] = []

    def on_open(self, conn: Connection) -> None:
        self.opened.append(conn)
        ws = session(conn)
        assert ws is not None
        if ws.request.path == "/slow":
            # A member whose kernel buffers are tiny and which never reads.
            sock = conn.transport.get_extra_info("socket")  # type: ignore[union-attr]
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            self.group("room").add(conn)

    def on_message(self, conn: Connection, message: str | bytes) -> None:
        self.messages.append(message)
        if isinstance(message, bytes) or not message.startswith("!"):
            conn.send(message)
            return
        command, _, arg = message[1:].partition(" ")
        if command == "close":
            code, _, reason = arg.partition(" ")
            conn.close(code=int(code), reason=reason)  # type: ignore[call-arg]
            conn.send("dropped: sent after the Close")
        elif command == "join":
            self.group("room").add(conn)
            conn.send("joined")
        elif command == "say":
            self.group("room").broadcast(arg * 50_000)
        elif command == "boom":
            raise RuntimeError("boom")

    def on_close(self, conn: Connection, reason: CloseReason) -> None:
        ws = session(conn)
        assert ws is not None
        assert ws.close_code is not None
        self.closed.append((conn.id, str(reason), ws.close_code, ws.close_reason))


def endpoint(**options: Any) -> Endpoint:
    return Endpoint("http://127.0.0.1:0", websocket=["/ws", "/slow"], **options)


@pytest.fixture
def server(run_daemon: StartDaemon) -> DaemonRunner:
    return run_daemon(WsDaemon(listen=endpoint()))


def url(runner: DaemonRunner, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{runner.address.port}{path}"


def client(runner: DaemonRunner, path: str = "/ws", **kwargs: Any) -> ClientConnection:
    kwargs.setdefault("ping_interval", None)  # the server's pings are under test
    return connect(url(runner, path), open_timeout=TIMEOUT, close_timeout=TIMEOUT, **kwargs)


def closes(runner: DaemonRunner, count: int = 1) -> list[tuple[int, str, int | None, str]]:
    daemon = runner.daemon
    assert isinstance(daemon, WsDaemon)
    runner.wait_for(lambda: len(daemon.closed) >= count, timeout=TIMEOUT)
    return list(daemon.closed)


def handshake(path: str = "/ws", *, extra: str = "", version: str = "13", key: str = KEY) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n{extra}\r\n"
    ).encode()


class RawClient:
    """A WebSocket client on a bare socket: sends what it is told, reads frames."""

    def __init__(
        self, runner: DaemonRunner, path: str = "/ws", trailing: bytes = b"", rcvbuf: int = 0
    ) -> None:
        if rcvbuf:
            # Set before connecting, so that the TCP window is small from the start.
            self.sock = socket.socket()
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(TIMEOUT)
            self.sock.connect(("127.0.0.1", runner.address.port))
        else:
            self.sock = runner.connect(timeout=TIMEOUT)
        self.sock.sendall(handshake(path) + trailing)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            assert chunk, f"closed during the handshake: {data!r}"
            data += chunk
        head, _, self.buf = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, size: int) -> None:
        while len(self.buf) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed; unread: {self.buf!r}")
            self.buf += chunk

    def frame(self) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload); server frames are never masked."""
        self._fill(2)
        length = self.buf[1] & 0x7F
        start = 2
        if length == 126:
            self._fill(4)
            length, start = struct.unpack("!H", self.buf[2:4])[0], 4
        elif length == 127:
            self._fill(10)
            length, start = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._fill(start + length)
        opcode = self.buf[0] & 0x0F
        payload = self.buf[start : start + length]
        self.buf = self.buf[start + length :]
        return opcode, payload

    def close_frame(self) -> tuple[int, str]:
        """Read frames up to a Close; return its code and reason."""
        while True:
            opcode, payload = self.frame()
            if opcode == CLOSE:
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode()

    def at_eof(self) -> bool:
        return not self.buf and self.sock.recv(65536) == b""

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw() -> Iterator[Callable[..., RawClient]]:
    clients: list[RawClient] = []

    def make(
        runner: DaemonRunner, path: str = "/ws", trailing: bytes = b"", rcvbuf: int = 0
    ) -> RawClient:
        c = RawClient(runner, path, trailing, rcvbuf)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


# -- messages ------------------------------------------------------------------------


def test_echo_text_binary_large_and_fragmented(server: DaemonRunner) -> None:
    with client(server, compression=None) as ws:
        ws.send("hello ☃")
        assert ws.recv() == "hello ☃"
        ws.send(b"\x00\xffbinary")
        assert ws.recv() == b"\x00\xffbinary"
        ws.send("")
        assert ws.recv() == ""
        large = bytes(range(256)) * 3000  # 768,000 bytes: a 64-bit length
        ws.send(large)
        assert ws.recv() == large
        ws.send(["frag", "ment", "ed"])  # one message in three frames
        assert ws.recv() == "fragmented"
        ws.send([b"\x01", b"\x02"])
        assert ws.recv() == b"\x01\x02"
    assert closes(server) == [(1, "peer closed", 1000, "")]


def test_messages_sent_with_the_handshake_are_read(
    server: DaemonRunner, raw: Callable[..., RawClient]
) -> None:
    c = raw(server, trailing=client_frame(TEXT, "early") + client_frame(BINARY, b"bird"))
    assert c.frame() == (TEXT, b"early")
    assert c.frame() == (BINARY, b"bird")


def test_ping_from_the_client_gets_its_pong(
    server: DaemonRunner, raw: Callable[..., RawClient]
) -> None:
    c = raw(server)
    c.send(client_frame(PING, b"are you there") + client_frame(TEXT, "after"))
    assert c.frame() == (PONG, b"are you there")
    assert c.frame() == (TEXT, b"after")


def test_handler_error_closes_that_connection_only(server: DaemonRunner) -> None:
    with client(server) as bad, client(server) as good:
        bad.send("!boom")
        with pytest.raises(ConnectionClosed):
            bad.recv(timeout=TIMEOUT)
        good.send("still here")
        assert good.recv() == "still here"
    assert closes(server)[0][1:3] == ("handler error", 1006)
    assert server.daemon.stats["errors"] == 1


# -- the handshake -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "status", "says"),
    [
        (handshake(key="short"), b"400", b"not 16 bytes"),
        (handshake(version="8"), b"426", b"sec-websocket-version: 13"),
        (handshake().replace(b"Sec-WebSocket-Key", b"X-Key"), b"400", b"Sec-WebSocket-Key"),
        (handshake("/nowhere"), b"404", b"not a WebSocket path"),
    ],
    ids=["bad-key", "version-8", "no-key", "not-a-route"],
)
def test_bad_handshakes_are_refused(
    server: DaemonRunner, request_bytes: bytes, status: bytes, says: bytes
) -> None:
    with server.connect(timeout=TIMEOUT) as sock:
        sock.sendall(request_bytes)
        answer = recv_until(sock, b"\n\n")
        assert answer.startswith(b"HTTP/1.1 " + status), answer
        assert says.lower() in answer.lower()
        assert sock.recv(65536) == b""
    with client(server) as ws:  # and the daemon serves the next one
        ws.send("ok")
        assert ws.recv() == "ok"
    assert not server.daemon.opened[1:]  # type: ignore[attr-defined]


def test_origins_and_subprotocols(run_daemon: StartDaemon) -> None:
    runner = run_daemon(
        WsDaemon(
            listen=endpoint(origins=["https://good.example"], subprotocols=["chat", "superchat"])
        )
    )
    with pytest.raises(InvalidStatus) as info:
        client(runner, origin="https://evil.example")
    assert info.value.response.status_code == 403
    with client(runner, origin="https://good.example", subprotocols=["superchat", "chat"]) as ws:
        assert ws.subprotocol == "chat"  # the server's preference wins
        ws.send("hi")
        assert ws.recv() == "hi"
    with client(runner, origin="https://good.example") as ws:
        assert ws.subprotocol is None


# -- compression -------------------------------------------------------------------------


def test_compression_is_negotiated_and_used(server: DaemonRunner) -> None:
    message = "all work and no play makes jack a dull boy " * 2000  # 88 KB
    with client(server) as ws:  # the websockets client offers permessage-deflate
        extensions = ws.response.headers["Sec-WebSocket-Extensions"]
        assert extensions == "permessage-deflate; server_max_window_bits=12"
        ws.send(message)
        assert ws.recv() == message
        ws.send(message)
        assert ws.recv() == message
        conn = server.daemon.opened[0]  # type: ignore[attr-defined]
        stats = server.call(lambda: (conn.bytes_in, conn.bytes_out))
    # Both directions compressed: far fewer bytes than two 88 KB messages each way.
    assert stats[0] < 20_000
    assert stats[1] < 20_000
    assert server.call(lambda: session(conn).compression) == Deflate(  # type: ignore[union-attr]
        server_max_window_bits=12, mem_level=5
    )


def test_compression_can_be_turned_off(run_daemon: StartDaemon) -> None:
    runner = run_daemon(WsDaemon(listen=endpoint(compression=None)))
    with client(runner) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send("x" * 1000)
        assert ws.recv() == "x" * 1000


# -- keepalive ------------------------------------------------------------------------------


def test_keepalive_pings_keep_a_live_client(run_daemon: StartDaemon) -> None:
    runner = run_daemon(WsDaemon(listen=endpoint()), clock=FakeClock())
    with client(runner) as ws:  # its reader thread answers pings
        ws.send("hi")
        assert ws.recv() == "hi"
        conn = runner.daemon.opened[0]  # type: ignore[attr-defined]
        ws_session = session(conn)
        assert ws_session is not None
        for n in range(1, 4):
            runner.advance(DEFAULT_PING_INTERVAL)
            assert ws_session._pings == n
            runner.wait_for(lambda: ws_session._waiting is None)
        runner.advance(DEFAULT_PING_TIMEOUT)
        ws.send("still open")
        assert ws.recv() == "still open"


def test_keepalive_closes_a_client_that_does_not_answer(
    run_daemon: StartDaemon, raw: Callable[..., RawClient]
) -> None:
    runner = run_daemon(WsDaemon(listen=endpoint(ping_timeout=5)), clock=FakeClock())
    c = raw(runner)
    runner.advance(DEFAULT_PING_INTERVAL)
    assert c.frame() == (PING, b"\x00\x00\x00\x01")
    runner.advance(4.9)
    c.send(client_frame(PONG, b"wrong payload"))  # not the answer: ignored
    c.send(client_frame(TEXT, "ping me"))
    assert c.frame() == (TEXT, b"ping me")
    runner.advance(0.1)
    assert c.close_frame() == (1011, "keepalive ping timeout")
    assert c.at_eof()
    assert closes(runner) == [(1, "idle timeout", 1006, "")]


def test_no_pings_with_ping_interval_none(
    run_daemon: StartDaemon, raw: Callable[..., RawClient]
) -> None:
    runner = run_daemon(WsDaemon(listen=endpoint(ping_interval=None)), clock=FakeClock())
    c = raw(runner)
    runner.advance(DEFAULT_PING_INTERVAL * 10)
    c.send(client_frame(TEXT, "quiet"))
    assert c.frame() == (TEXT, b"quiet")


# -- closing ---------------------------------------------------------------------------------


def test_client_closes_with_code_and_reason(server: DaemonRunner) -> None:
    with client(server) as ws:
        ws.send("hi")
        assert ws.recv() == "hi"
        ws.close(code=4000, reason="bye now")
        assert ws.protocol.close_rcvd is not None
        assert (ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason) == (4000, "bye now")
    assert closes(server) == [(1, "peer closed", 4000, "bye now")]


def test_server_closes_with_code_and_reason(server: DaemonRunner) -> None:
    with client(server) as ws:
        ws.send("!close 4001 done here")
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=TIMEOUT)  # the message sent after the Close never comes
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "done here")
    assert closes(server) == [(1, "closed locally", 4001, "done here")]


def test_close_waits_close_timeout_for_the_answer(
    run_daemon: StartDaemon, raw: Callable[..., RawClient]
) -> None:
    runner = run_daemon(WsDaemon(listen=endpoint(close_timeout=3)), clock=FakeClock())
    c = raw(runner)
    c.send(client_frame(TEXT, "!close 1000 bye"))
    assert c.close_frame() == (1000, "bye")
    c.send(client_frame(TEXT, "ignored: the server closed"))
    c.send(client_frame(PING, b"not answered either"))
    runner.advance(2.9)
    assert runner.call(lambda: not runner.daemon.closed)  # type: ignore[attr-defined]
    runner.advance(0.1)
    assert c.at_eof()
    assert closes(runner) == [(1, "close timeout", 1006, "")]
    assert runner.daemon.messages == ["!close 1000 bye"]  # type: ignore[attr-defined]


def test_conn_close_validates_code_and_reason(server: DaemonRunner) -> None:
    with client(server) as ws:
        ws.send("hi")
        assert ws.recv() == "hi"
        conn = server.daemon.opened[0]  # type: ignore[attr-defined]
        with pytest.raises(ValueError, match="not a close code"):
            server.call(lambda: conn.close(code=1005, reason="x"))
        with pytest.raises(ValueError, match="at most 123"):
            server.call(lambda: conn.close(code=1000, reason="r" * 124))
        ws.send("still open")
        assert ws.recv() == "still open"


def test_a_close_without_code_is_echoed_empty(
    server: DaemonRunner, raw: Callable[..., RawClient]
) -> None:
    c = raw(server)
    c.send(client_frame(CLOSE))
    assert c.frame() == (CLOSE, b"")
    assert c.at_eof()
    assert closes(server) == [(1, "peer closed", 1005, "")]


def test_tcp_close_without_close_frame_is_1006(
    server: DaemonRunner, raw: Callable[..., RawClient]
) -> None:
    raw(server).close()
    assert closes(server) == [(1, "peer closed", 1006, "")]


def test_stop_closes_websocket_connections(server: DaemonRunner) -> None:
    with client(server) as ws:
        ws.send("hi")
        assert ws.recv() == "hi"
        server.stop()
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=TIMEOUT)
    assert [reason for _, reason, _, _ in server.daemon.closed] == ["shutdown"]  # type: ignore[attr-defined]


# -- groups ------------------------------------------------------------------------------------


ROUNDS = 12  # broadcasts of 50 KB: a few fill the silent member's buffers


def test_broadcast_skips_a_member_that_does_not_read(
    server: DaemonRunner, raw: Callable[..., RawClient]
) -> None:
    raw(server, "/slow", rcvbuf=4096)  # joins the room and never reads
    with contextlib.ExitStack() as stack:
        fast = [stack.enter_context(client(server, compression=None)) for _ in range(2)]
        for ws in fast:
            ws.send("!join")
            assert ws.recv() == "joined"
        for n in range(ROUNDS):
            fast[0].send(f"!say {n}")
            for ws in fast:
                assert ws.recv(timeout=TIMEOUT) == str(n) * 50_000
        group = server.daemon.group("room")
        assert server.call(lambda: len(group)) == 3
        skipped = server.call(lambda: group.skipped)
        assert 0 < skipped < ROUNDS  # the first messages went into its buffers
        assert server.call(lambda: group.sent) == 2 * ROUNDS + (ROUNDS - skipped)


# -- hostile input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code", "reason"),
    [
        (client_frame(BINARY, length=2_000_000)[:14], 1009, "frame too large"),
        (client_frame(TEXT, b"ok \xff"), 1007, "protocol error"),
        (client_frame(TEXT, "plain", masked=False), 1002, "protocol error"),
        (client_frame(0x3), 1002, "protocol error"),
        (client_frame(PING, b"p" * 126), 1002, "protocol error"),
    ],
    ids=["too-large", "bad-utf8", "unmasked", "reserved-opcode", "long-ping"],
)
def test_hostile_input_is_closed_with_its_code(
    server: DaemonRunner, raw: Callable[..., RawClient], frame: bytes, code: int, reason: str
) -> None:
    with client(server) as bystander:
        c = raw(server)
        c.send(client_frame(TEXT, "before") + frame + client_frame(TEXT, "after"))
        assert c.frame() == (TEXT, b"before")
        assert c.close_frame()[0] == code
        assert c.at_eof()
        bystander.send("still served")
        assert bystander.recv() == "still served"
    assert closes(server, 2)[0] == (2, reason, 1006, "")
    assert server.daemon.messages == ["before", "still served"]  # type: ignore[attr-defined]


def test_max_message_option(run_daemon: StartDaemon) -> None:
    runner = run_daemon(WsDaemon(listen=endpoint(max_message=1000)))
    with client(runner, compression=None) as ws:
        ws.send("x" * 1000)
        assert ws.recv() == "x" * 1000
        ws.send("x" * 1001)
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=TIMEOUT)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009


# -- options -------------------------------------------------------------------------------------


def test_options() -> None:
    assert {"max_message", "ping_interval", "ping_timeout", "close_timeout"} <= OPTIONS
    defaults = check_options({})
    assert (defaults.ping_interval, defaults.ping_timeout, defaults.close_timeout) == (20, 20, 10)
    assert defaults.max_message == 1 << 20
    assert check_options({"ping_interval": None, "ping_timeout": 0}).ping_timeout is None
    assert check_options({"compression": None}).compression is None
    assert check_options({"subprotocols": "chat"}).subprotocols == ("chat",)
    for bad in [
        {"max_message": 0},
        {"max_message": "1"},
        {"ping_interval": -1},
        {"close_timeout": None},
        {"compression": "gzip"},
        {"subprotocols": [1]},
        {"origins": [None]},
    ]:
        with pytest.raises(ConfigError, match=next(iter(bad))):
            check_options(bad, "http://127.0.0.1:0")


def test_bad_options_are_refused_when_the_daemon_is_made() -> None:
    with pytest.raises(ConfigError, match="ping_timeout"):
        WsDaemon(listen=endpoint(ping_timeout="soon"))


def test_session_of_a_connection_that_is_not_a_websocket() -> None:
    assert session(Connection.__new__(Connection)) is None
