"""examples/ws_chat.py: a WebSocket client and a line client in one room."""

from __future__ import annotations

import contextlib
import socket
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from daemonkit import cli
from daemonkit.testing import DaemonRunner
from tests.helpers import ROOT

from .test_chat import TIMEOUT, Client, load_example

ws_chat = load_example("ws_chat")

StartDaemon = Callable[..., DaemonRunner]


@pytest.fixture
def server(run_daemon: StartDaemon) -> DaemonRunner:
    listen = ws_chat.endpoints("http://127.0.0.1:0", "tcp://127.0.0.1:0")
    return run_daemon(ws_chat.WsChatDaemon(listen=listen))


def web_port(runner: DaemonRunner) -> int:
    return runner.daemon.host("web").address.port  # type: ignore[union-attr]


def lines_port(runner: DaemonRunner) -> int:
    return runner.daemon.host("lines").address.port  # type: ignore[union-attr]


class LineClient(Client):
    """The chat test's line client, on the ``lines`` endpoint."""

    def __init__(self, runner: DaemonRunner) -> None:
        self.sock = socket.create_connection(("127.0.0.1", lines_port(runner)), timeout=TIMEOUT)
        self.buf = b""


@pytest.fixture
def web(server: DaemonRunner) -> Iterator[Callable[[], ClientConnection]]:
    with contextlib.ExitStack() as stack:

        def make() -> ClientConnection:
            url = f"ws://127.0.0.1:{web_port(server)}/ws"
            return stack.enter_context(connect(url, open_timeout=TIMEOUT, ping_interval=None))

        yield make


def recv_text(ws: ClientConnection) -> str:
    """The next message from the daemon: binary messages holding one UTF-8 line."""
    message = ws.recv(timeout=TIMEOUT)
    assert isinstance(message, bytes), message
    return message.decode()


def test_one_room_two_protocols(server: DaemonRunner, web: Callable[[], ClientConnection]) -> None:
    alice = web()
    alice.send("NICK alice")
    assert recv_text(alice) == "OK nick alice"
    alice.send("JOIN #lobby")
    assert recv_text(alice) == "OK join #lobby"

    bob = LineClient(server)
    try:
        assert bob.ask(b"NICK bob") == b"OK nick bob"
        assert bob.ask(b"JOIN #lobby") == b"OK join #lobby"
        assert recv_text(alice) == "JOINED #lobby bob"

        alice.send("SAY #lobby hello from the browser ☃")
        assert recv_text(alice) == "MSG #lobby alice hello from the browser ☃"
        assert bob.line() == "MSG #lobby alice hello from the browser ☃".encode()

        bob.send(b"SAY #lobby hello from the terminal")
        assert bob.line() == b"MSG #lobby bob hello from the terminal"
        assert recv_text(alice) == "MSG #lobby bob hello from the terminal"

        alice.send("LIST")
        assert recv_text(alice) == "ROOMS #lobby:2"
        alice.send(b"SAY #lobby two\nSAY #lobby lines")  # one message, two commands
        assert bob.line() == b"MSG #lobby alice two"
        assert bob.line() == b"MSG #lobby alice lines"
        assert recv_text(alice) == "MSG #lobby alice two"
        assert recv_text(alice) == "MSG #lobby alice lines"

        alice.send("QUIT")
        assert recv_text(alice) == "BYE"
        assert bob.line() == b"PARTED #lobby alice"
        assert bob.ask(b"LIST") == b"ROOMS #lobby:1"
    finally:
        bob.close()


def test_errors_are_the_same_on_both(
    server: DaemonRunner, web: Callable[[], ClientConnection]
) -> None:
    alice = web()
    bob = LineClient(server)
    try:
        for command, reply in [
            ("JOIN #lobby", "ERR no-nick"),
            ("NICK bad!", "ERR bad-nick"),
            ("FOO", "ERR unknown-command"),
            ("NICK same", "OK nick same"),
            ("SAY #lobby hi", "ERR not-in-room"),
        ]:
            alice.send(command)
            assert recv_text(alice) == reply
        assert bob.ask(b"NICK same") == b"ERR nick-taken"
    finally:
        bob.close()


def test_a_message_longer_than_a_line_closes_the_websocket(
    server: DaemonRunner, web: Callable[[], ClientConnection]
) -> None:
    alice = web()
    alice.send("SAY #lobby " + "x" * ws_chat.MAX_LINE)
    with pytest.raises(ConnectionClosed) as info:
        alice.recv(timeout=TIMEOUT)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009


def test_the_page_is_served(server: DaemonRunner) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port(server)}/", timeout=TIMEOUT) as page:
        assert page.status == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        body = page.read().decode()
    assert "new WebSocket(" in body and "/ws" in body


def test_the_cli_loads_it() -> None:
    path = str(ROOT / "examples" / "ws_chat.py")
    argv = [
        path,
        "--check",
        "--listen",
        "web=http://127.0.0.1:0",
        "--listen",
        "lines=tcp://127.0.0.1:0",
    ]
    assert cli.main(argv) == cli.EXIT_OK
