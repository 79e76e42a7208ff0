"""HttpBot against real HTTP servers: the project's example, TLS, and the stdlib's http.server."""

from __future__ import annotations

import http.server
import io
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemonkit import Endpoint
from daemonkit.bots import Bot, BotRunner, HttpBot, RunResult
from daemonkit.bots.http import HttpResponse
from daemonkit.cli import bots as bots_cli
from daemonkit.errors import ConfigError
from daemonkit.testing import DaemonRunner
from tests.helpers import ROOT, load_example, serve_stdlib_http

http_hello = load_example("http_hello")
ECHO_BOT = str(ROOT / "examples" / "echo_bot.py")


def run(bot: type[Bot], target: str, *, bots: int = 2, duration: float = 0.6) -> RunResult:
    return BotRunner(bot, target, bots=bots, duration=duration, stop_timeout=1.0).run()


@pytest.fixture
def hello(backend: str) -> Iterator[str]:
    with DaemonRunner(http_hello.HelloDaemon(listen="http://127.0.0.1:0"), backend=backend) as d:
        yield str(d.address)


class Visitor(HttpBot):
    """Three pages, the last one missing; checks what came back."""

    async def script(self) -> None:
        for _ in range(5):
            resp = await self.get("/")
            assert resp.status == 200 and resp.body == b"Hello, world!\n"
            assert resp.header("content-type") == "text/plain; charset=utf-8"
            health = await self.get("/health", name="health")
            assert b'"status": "ok"' in health.body or b'"status":"ok"' in health.body
            missing = await self.get("/nowhere")
            assert missing.status == 404
        self.state["done"] = True


def test_a_script_against_http_hello_times_each_path_and_fails_the_404(hello: str) -> None:
    result = run(Visitor, hello)
    ops = result.stats.operations
    assert ops["/"].count == 10 and not ops["/"].errors
    assert ops["health"].count == 10
    # The 404 is a failure, counted once by its status, never as a success.
    assert ops["/nowhere"].count == 0 and ops["/nowhere"].errors == {"HTTP 404": 10}
    assert "script" not in ops  # every assertion in the script held


class Ticker(HttpBot):
    def on_tick(self) -> None:
        self.get("/", name="hello")


def test_tick_bots_keep_the_connection_alive(hello: str) -> None:
    result = run(Ticker, hello, bots=4)
    op = result.stats.operations["hello"]
    assert op.count > 20 and not op.errors
    assert result.peak_connected == 4 and "connection" not in result.stats.operations


class Pipeliner(HttpBot):
    """Three requests in flight on one connection, answered in order."""

    async def script(self) -> None:
        futures = [self.get("/"), self.head("/"), self.get("/health", name="health")]
        got = [await f for f in futures]
        self.state["got"] = [(r.status, len(r.body)) for r in got]
        if got[1].body == b"":
            self.record("pipelined", 0.0)


def test_pipelined_requests_are_matched_in_order_and_head_has_no_body(hello: str) -> None:
    result = run(Pipeliner, hello, bots=1)
    ops = result.stats.operations
    assert ops["/"].count == 2 and ops["health"].count == 1
    assert ops["pipelined"].count == 1


class Poster(HttpBot):
    headers = {"x-bot": "yes"}

    async def script(self) -> None:
        resp = await self.post("/echo", body="héllo", headers={"content-type": "text/plain"})
        self.state["resp"] = resp


def test_a_post_sends_its_body_and_headers_to_a_third_party_server(stdlib: str) -> None:
    result = run(Poster, stdlib, bots=1)
    assert result.stats.operations["/echo"].count == 1
    assert Seen.posts == [("/echo", "héllo".encode(), "yes")]


# -- TLS -----------------------------------------------------------------------------


def test_https_with_a_ca_file_and_with_verification_off(
    ca: tuple[Path, Path, Path], backend: str
) -> None:
    cert, key, ca_file = ca
    listen = Endpoint("https://127.0.0.1:0", certfile=str(cert), keyfile=str(key))
    with DaemonRunner(http_hello.HelloDaemon(listen=listen), backend=backend) as d:
        target = str(d.address)
        assert target.startswith("https://")

        class Trusting(Ticker):
            cafile = str(ca_file)

        class Careless(Ticker):
            verify = False

        class Strict(Ticker):
            pass  # the system's CAs do not know this one

        for bot in (Trusting, Careless):
            result = run(bot, target, bots=2, duration=0.5)
            assert result.stats.operations["hello"].count > 5, bot.__name__
        strict = run(Strict, target, bots=2, duration=0.3)
        assert strict.peak_connected == 0
        assert strict.stats.connect_errors == {"tls: certificate verify failed": 2}


# -- a server that is not ours: the stdlib's http.server --------------------------


class Seen:
    posts: list[tuple[str, bytes, str | None]] = []


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; HTTP/1.0 closes after each response

    def do_GET(self) -> None:
        status = 500 if self.path == "/fail" else 200
        body = b"broken\n" if status == 500 else b"fine\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Seen.posts.append((self.path, body, self.headers.get("x-bot")))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class OldHandler(Handler):
    protocol_version = "HTTP/1.0"


@pytest.fixture
def stdlib() -> Iterator[str]:
    Seen.posts = []
    yield from serve_stdlib_http(Handler)


@pytest.fixture
def stdlib_10() -> Iterator[str]:
    yield from serve_stdlib_http(OldHandler)


class Mixed(HttpBot):
    async def script(self) -> None:
        for _ in range(4):
            ok = await self.get("/ok")
            failed = await self.get("/fail")
            self.state.setdefault("seen", []).append((ok.status, failed.status, failed.body))


def test_an_http_500_from_http_server_is_a_failure(stdlib: str) -> None:
    result = run(Mixed, stdlib, bots=2)
    ops = result.stats.operations
    assert ops["/ok"].count == 8 and not ops["/ok"].errors
    assert ops["/fail"].count == 0 and ops["/fail"].errors == {"HTTP 500": 8}
    assert result.stats.errors == 8


class Judge(HttpBot):
    fail_status = None  # every status is the script's to judge

    async def script(self) -> None:
        resp = await self.get("/fail")
        if resp.status != 500:
            self.fail("/fail", "expected a 500")


def test_fail_status_none_leaves_the_verdict_to_the_bot(stdlib: str) -> None:
    result = run(Judge, stdlib, bots=2)
    assert result.stats.operations["/fail"].count == 2 and result.stats.errors == 0


class Once(HttpBot):
    async def script(self) -> None:
        resp = await self.get("/ok")
        self.state["keep_alive"] = resp.keep_alive


def test_an_http_10_server_closing_after_its_response_is_no_error(stdlib_10: str) -> None:
    result = run(Once, stdlib_10, bots=2)
    assert result.stats.operations["/ok"].count == 2
    assert result.stats.errors == 0


# -- a scheme the class cannot speak -----------------------------------------------


def test_a_runner_refuses_a_scheme_its_bot_class_does_not_speak() -> None:
    with pytest.raises(ConfigError, match="use daemonkit.bots.HttpBot"):
        BotRunner(Bot, "http://127.0.0.1:1", duration=1)
    with pytest.raises(ConfigError, match="use daemonkit.bots.Bot"):
        BotRunner(HttpBot, "tcp://127.0.0.1:1", duration=1)
    with pytest.raises(ConfigError, match="cannot speak udp"):
        BotRunner(HttpBot, "udp://127.0.0.1:1", duration=1)


@pytest.mark.parametrize(
    ("scheme", "use"),
    [("ws", "daemonkit.bots.WebSocketBot"), ("http", "daemonkit.bots.HttpBot")],
)
def test_the_cli_refuses_a_stream_bot_on_a_protocol_target_before_connecting(
    scheme: str, use: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        out = io.StringIO()
        code = bots_cli.main(
            [ECHO_BOT, "--target", f"{scheme}://127.0.0.1:{port}", "--duration", "1s"], out=out
        )
        assert code == bots_cli.EXIT_CONFIG
        assert f"use {use}" in capsys.readouterr().err
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing was ever spoken to it as raw TCP


def test_responses_are_the_framers() -> None:
    assert HttpResponse(200).ok and not HttpResponse(503).ok


class Checker(HttpBot):
    """A 200 whose body is wrong is failed by the script: one failure, no success."""

    async def script(self) -> None:
        resp = await self.get("/ok")
        if resp.body != b"expected\n":
            self.fail("/ok", "wrong body")
        await self.get("/ok", name="second")


def test_a_2xx_failed_by_the_script_counts_once_as_a_failure(stdlib: str) -> None:
    result = run(Checker, stdlib, bots=2)
    ops = result.stats.operations
    assert ops["/ok"].count == 0 and ops["/ok"].errors == {"wrong body": 2}
    assert ops["second"].count == 2 and result.stats.errors == 2
