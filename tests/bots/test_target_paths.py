"""A path in the target: the WebSocket handshake's path, the base of an HttpBot's paths.

``ws://host:port/ws`` against examples/ws_chat.py (which upgrades only /ws),
``http://host:port/api`` against the stdlib's http.server; a path on a stream
target is refused with a message saying why.
"""

from __future__ import annotations

import http.server
import io
from collections.abc import Iterator

import pytest

from daemonkit.bots import Bot, BotRunner, HttpBot, WebSocketBot
from daemonkit.bots.targets import split_target
from daemonkit.cli import bots as bots_cli
from daemonkit.core.endpoints import Address
from daemonkit.errors import ConfigError
from daemonkit.testing import DaemonRunner
from tests.helpers import ROOT, load_example, serve_stdlib_http

ws_chat = load_example("ws_chat")
ECHO_BOT = str(ROOT / "examples" / "echo_bot.py")


@pytest.mark.parametrize(
    ("target", "address", "path"),
    [
        ("ws://127.0.0.1:8000/chat", "ws://127.0.0.1:8000", "/chat"),
        ("wss://127.0.0.1:8000/chat?room=1", "wss://127.0.0.1:8000", "/chat?room=1"),
        ("ws://127.0.0.1:8000?room=1", "ws://127.0.0.1:8000", "/?room=1"),
        ("http://127.0.0.1:8080/api/v1", "http://127.0.0.1:8080", "/api/v1"),
        ("HTTPS://[::1]:8443/", "https://[::1]:8443", "/"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080", ""),
        ("tcp://127.0.0.1:7000", "tcp://127.0.0.1:7000", ""),
    ],
)
def test_a_target_splits_into_its_endpoint_and_path(target: str, address: str, path: str) -> None:
    got, got_path = split_target(target)
    assert (str(got), got_path) == (address, path)


def test_a_unix_target_is_a_path_itself() -> None:
    assert split_target("unix:///run/app.sock") == (Address("unix", path="/run/app.sock"), "")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("tcp://127.0.0.1:7000/chat", "a tcp:// target has no path; stream bots send none"),
        ("tls://127.0.0.1:7000/x", "a tls:// target has no path"),
        ("http://127.0.0.1:8080/api?x=1", "takes no query"),
        ("ws://127.0.0.1/chat", "has no port"),
    ],
)
def test_paths_that_mean_nothing_are_refused(target: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        split_target(target)


def test_a_stream_bot_with_a_path_is_refused_by_the_runner_and_the_cli(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(ConfigError, match="stream bots send none"):
        BotRunner(Bot, "tcp://127.0.0.1:1/chat", duration=1)
    code = bots_cli.main([ECHO_BOT, "-H", "tcp://127.0.0.1:1/chat", "-t", "1s"], out=io.StringIO())
    assert code == bots_cli.EXIT_CONFIG
    assert "a tcp:// target has no path" in capsys.readouterr().err


class Nick(WebSocketBot):
    # No path setting: the default "/" would be refused by ws_chat (404).
    async def script(self) -> None:
        await self.call(f"NICK bot{self.index}", name="nick")
        await self.sleep(5)


def test_the_path_of_a_ws_target_is_the_handshakes(backend: str) -> None:
    listen = ws_chat.endpoints("http://127.0.0.1:0", "tcp://127.0.0.1:0")
    with DaemonRunner(ws_chat.WsChatDaemon(listen=listen), backend=backend) as daemon:
        base = str(daemon.address).replace("http://", "ws://")
        result = BotRunner(Nick, base + "/ws", bots=2, duration=0.4, stop_timeout=1.0).run()
        refused = BotRunner(Nick, base, bots=1, duration=0.3, stop_timeout=1.0).run()
    assert result.stats.operations["nick"].count == 2 and result.stats.errors == 0
    assert result.target.endswith("/ws")  # the report names the whole target
    assert refused.stats.connect_errors == {"handshake: HTTP 404": 1}


class Paths(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[str] = []

    def do_GET(self) -> None:
        Paths.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def stdlib() -> Iterator[str]:
    Paths.seen = []
    yield from serve_stdlib_http(Paths)


class Api(HttpBot):
    async def script(self) -> None:
        await self.get("/users")
        await self.get("items?page=2", name="items")


def test_the_path_of_an_http_target_is_the_base_of_the_bots_paths(stdlib: str) -> None:
    result = BotRunner(Api, stdlib + "/api/", bots=1, duration=0.4, stop_timeout=1.0).run()
    assert Paths.seen == ["/api/users", "/api/items?page=2"]
    # The rows keep the names the bot gave: the same in every environment.
    assert result.stats.operations["/users"].count == 1
    assert result.stats.operations["items"].count == 1
    Paths.seen = []
    BotRunner(Api, stdlib, bots=1, duration=0.3, stop_timeout=1.0).run()
    assert Paths.seen[0] == "/users"  # no base: the path as given
