"""HTTP endpoints over real sockets, on both backends: what a well-behaved client sees."""

from __future__ import annotations

import http.client
import json
import socket
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from daemonkit import CloseReason, Connection, Daemon, Endpoint, FakeClock, Handler
from daemonkit.daemon import DEFAULT_WRITE_HIGH_WATER
from daemonkit.errors import ConfigError
from daemonkit.framework.hosts import StreamHost
from daemonkit.http import MAX_PIPELINE, HttpConnection, HttpHost, HttpRequest, Response, Router
from daemonkit.testing import DaemonRunner
from tests.http import TIMEOUT, RawClient, get

LOCAL = "http://127.0.0.1:0"
StartDaemon = Callable[..., DaemonRunner]

SIZE = 50 * 1024 * 1024  # the streamed response
PIECE = b"0123456789abcdef" * 4096  # 64 KiB


class App(Daemon):
    """Answers by path; records the paths in the order on_request saw them."""

    listen = LOCAL

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.seen: list[str] = []
        self.max_buffer = 0
        self.pauses = 0

    def on_request(self, conn: HttpConnection, request: HttpRequest) -> Response | None:
        self.seen.append(request.path)
        path = request.path
        if path == "/echo":
            headers = {"x-method": request.method, "x-trailers": repr(request.trailers)}
            conn.respond(200, headers, request.body)
        elif path == "/late":
            # Answered from a timer: the requests after it wait.
            conn.after(float(request.query or 1), conn.respond, 200, (), b"late")
        elif path == "/json":
            return Response.json({"path": path, "n": 1}, status=201)
        elif path == "/big":
            conn.state["left"] = SIZE
            conn.respond_stream(200, {"content-type": "application/octet-stream"})
            self.produce(conn)
        elif path == "/boom":
            raise ValueError("boom")
        else:
            conn.respond(200, {"content-type": "text/plain"}, f"{request.method} {request.target}")
        return None

    def produce(self, conn: HttpConnection) -> None:
        """Write the big body until the connection pushes back; on_drain resumes."""
        left = conn.state["left"]
        while left:
            ok = conn.write_body(PIECE)
            left -= len(PIECE)
            self.max_buffer = max(self.max_buffer, conn.write_buffer_size)
            if not ok:
                self.pauses += 1
                break
        conn.state["left"] = left
        if not left:
            conn.state["left"] = None
            conn.end_body()

    def on_drain(self, conn: Connection) -> None:
        if conn.state.get("left"):
            assert isinstance(conn, HttpConnection)
            self.produce(conn)


@pytest.fixture
def app(run_daemon: StartDaemon) -> tuple[App, DaemonRunner]:
    d = App()
    return d, run_daemon(d)


@pytest.fixture
def clocked(run_daemon: StartDaemon) -> tuple[App, DaemonRunner]:
    d = App()
    return d, run_daemon(d, clock=FakeClock())


def client_for(runner: DaemonRunner) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", runner.address.port, timeout=TIMEOUT)


@pytest.fixture
def raw(app: tuple[App, DaemonRunner]) -> Iterator[RawClient]:
    client = RawClient(app[1].connect())
    yield client
    client.close()


# -- keep-alive, HEAD, bodies ---------------------------------------------------


def test_keep_alive_serves_several_requests_on_one_connection(
    app: tuple[App, DaemonRunner],
) -> None:
    d, runner = app
    client = client_for(runner)
    for n in range(3):
        client.request("GET", f"/n{n}?q=1")
        response = client.getresponse()
        assert response.status == 200
        assert response.read() == f"GET /n{n}?q=1".encode()
        assert response.getheader("content-length") == str(len(f"GET /n{n}?q=1"))
        assert response.getheader("date", "").endswith(" GMT")
        assert response.getheader("connection") is None
    client.close()
    assert runner.call(lambda: d.stats["accepted"]) == 1
    assert d.seen == ["/n0", "/n1", "/n2"]


def test_head_gets_the_headers_without_the_body(app: tuple[App, DaemonRunner]) -> None:
    _, runner = app
    client = client_for(runner)
    client.request("HEAD", "/page")
    response = client.getresponse()
    assert response.status == 200
    assert response.getheader("content-length") == str(len("HEAD /page"))
    assert response.read() == b""
    # No stray body bytes: the next response on the connection is intact.
    client.request("GET", "/next")
    assert client.getresponse().read() == b"GET /next"
    client.close()


def test_chunked_request_body(app: tuple[App, DaemonRunner]) -> None:
    _, runner = app
    client = client_for(runner)
    client.request("POST", "/echo", body=iter([b"hello ", b"chunked ", b"world"]))
    response = client.getresponse()
    assert response.status == 200
    assert response.getheader("x-method") == "POST"
    assert response.read() == b"hello chunked world"
    client.close()


def test_chunked_body_with_trailers(raw: RawClient) -> None:
    raw.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\n"
    )
    reply = raw.response()
    assert reply.body == b"hello"
    assert reply.header("x-trailers") == "[('x-sum', '42')]"


def test_expect_100_continue(raw: RawClient) -> None:
    raw.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    interim = raw.response()
    assert interim.status == 100
    raw.send(b"hello")
    reply = raw.response()
    assert (reply.status, reply.body) == (200, b"hello")


def test_no_100_continue_when_the_body_came_with_the_head(raw: RawClient) -> None:
    raw.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi"
    )
    reply = raw.response()
    assert (reply.status, reply.body) == (200, b"hi")


def test_http_10_closes_unless_keep_alive(app: tuple[App, DaemonRunner]) -> None:
    _, runner = app
    plain = RawClient(runner.connect())
    plain.send(b"GET /old HTTP/1.0\r\n\r\n")
    reply = plain.response()
    assert (reply.body, reply.header("connection")) == (b"GET /old", "close")
    assert plain.closed()
    plain.close()
    kept = RawClient(runner.connect())
    for _ in range(2):
        kept.send(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        reply = kept.response()
        assert (reply.body, reply.header("connection")) == (b"GET /old", "keep-alive")
    kept.close()


def test_connection_close_from_the_client(raw: RawClient) -> None:
    raw.send(get("/bye", "Connection: close"))
    reply = raw.response()
    assert (reply.body, reply.header("connection")) == (b"GET /bye", "close")
    assert raw.closed()


def test_a_response_object(app: tuple[App, DaemonRunner]) -> None:
    _, runner = app
    client = client_for(runner)
    client.request("GET", "/json")
    response = client.getresponse()
    assert response.status == 201
    assert response.getheader("content-type") == "application/json"
    assert json.loads(response.read()) == {"path": "/json", "n": 1}
    client.close()


def test_a_handler_error_answers_500_and_closes_only_that_connection(
    app: tuple[App, DaemonRunner], caplog: pytest.LogCaptureFixture
) -> None:
    d, runner = app
    bad = RawClient(runner.connect())
    bad.send(get("/boom") + get("/after"))
    reply = bad.response()
    assert (reply.status, reply.header("connection")) == (500, "close")
    assert bad.closed()  # the pipelined /after is dropped with the connection
    bad.close()
    assert d.seen == ["/boom"]
    good = RawClient(runner.connect())
    good.send(get("/fine"))
    assert good.response().body == b"GET /fine"
    good.close()
    errors = [r for r in caplog.records if "ValueError raised" in r.getMessage()]
    assert errors and errors[0].exc_info is not None  # a bug in the handler: traceback


# -- pipelining -------------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order(raw: RawClient) -> None:
    raw.send(get("/one") + get("/two", method="HEAD") + get("/echo", body=b"three"))
    assert raw.response().body == b"GET /one"
    assert raw.response(head=True).header("content-length") == str(len("HEAD /two"))
    assert raw.response().body == b"three"


def test_a_late_answer_holds_the_requests_after_it(clocked: tuple[App, DaemonRunner]) -> None:
    d, runner = clocked
    raw = RawClient(runner.connect())
    raw.send(get("/late") + get("/a") + get("/b"))
    runner.wait_for(lambda: d.seen == ["/late"])
    assert runner.call(lambda: d.seen) == ["/late"]  # /a and /b are held, not dispatched
    runner.advance(1)
    assert [raw.response().body for _ in range(3)] == [b"late", b"GET /a", b"GET /b"]
    assert d.seen == ["/late", "/a", "/b"]
    raw.close()


def test_reading_pauses_when_too_many_requests_are_held(
    clocked: tuple[App, DaemonRunner],
) -> None:
    d, runner = clocked
    raw = RawClient(runner.connect())
    count = MAX_PIPELINE + 4
    raw.send(get("/late") + b"".join(get(f"/{n}") for n in range(count)))
    conn = runner.call(lambda: next(iter(d.connections)))
    assert isinstance(conn, HttpConnection)
    runner.wait_for(lambda: conn._held)
    runner.advance(1)
    assert raw.response().body == b"late"
    assert [raw.response().body for _ in range(count)] == [
        f"GET /{n}".encode() for n in range(count)
    ]
    assert not runner.call(lambda: conn._held)
    raw.close()


def test_100_continue_waits_for_the_answers_before_it(clocked: tuple[App, DaemonRunner]) -> None:
    d, runner = clocked
    raw = RawClient(runner.connect())
    raw.send(
        get("/late")
        + b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    )
    runner.wait_for(lambda: d.seen == ["/late"])
    runner.advance(1)
    assert raw.response().body == b"late"
    assert raw.response().status == 100
    raw.send(b"body")
    assert raw.response().body == b"body"
    raw.close()


def test_a_client_that_half_closes_gets_every_answer(clocked: tuple[App, DaemonRunner]) -> None:
    d, runner = clocked
    raw = RawClient(runner.connect())
    raw.send(get("/late") + get("/a"))
    raw.sock.shutdown(socket.SHUT_WR)
    runner.wait_for(lambda: d.seen == ["/late"])
    runner.advance(1)
    assert raw.response().body == b"late"
    reply = raw.response()
    assert (reply.body, reply.header("connection")) == (b"GET /a", "close")
    assert raw.closed()
    raw.close()


def test_a_stopping_daemon_finishes_the_answer_in_flight(
    clocked: tuple[App, DaemonRunner],
) -> None:
    d, runner = clocked
    raw = RawClient(runner.connect())
    raw.send(get("/late"))
    runner.wait_for(lambda: d.seen == ["/late"])
    runner.call(d.stop)
    runner.advance(1)
    reply = raw.response()
    assert (reply.body, reply.header("connection")) == (b"late", "close")
    assert raw.closed()
    raw.close()


# -- streaming ----------------------------------------------------------------------


def test_streaming_50_mib_to_a_slow_reader_keeps_the_buffer_bounded(
    app: tuple[App, DaemonRunner],
) -> None:
    d, runner = app
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", runner.address.port))
    raw = RawClient(sock)
    raw.send(get("/big"))
    # Read nothing until the daemon had to stop producing: a slow reader.
    runner.wait_for(lambda: d.pauses > 0)
    reply = raw.response()
    assert reply.header("transfer-encoding") == "chunked"
    assert len(reply.body) == SIZE
    assert reply.body == PIECE * (SIZE // len(PIECE))
    assert d.pauses > 1
    # The buffer stayed near the high-water mark, far below the hard cap.
    assert d.max_buffer <= DEFAULT_WRITE_HIGH_WATER + len(PIECE) + 64
    assert d.max_buffer < d.max_write_buffer
    raw.send(get("/after"))  # the connection carries on
    assert raw.response().body == b"GET /after"
    raw.close()


class Streamer(Daemon):
    listen = LOCAL

    def on_request(self, conn: HttpConnection, request: HttpRequest) -> None:
        parts = [b"alpha", b"beta"]
        headers = {"content-length": "9"} if request.path == "/counted" else {}
        conn.respond_stream(200, headers)
        for part in parts:
            conn.write_body(part)
        conn.end_body()


def test_streaming_with_content_length_http_10_and_head(run_daemon: StartDaemon) -> None:
    runner = run_daemon(Streamer())
    raw = RawClient(runner.connect())
    raw.send(get("/counted") + get("/chunked") + get("/chunked", method="HEAD"))
    counted = raw.response()
    assert (counted.header("content-length"), counted.body) == ("9", b"alphabeta")
    chunked = raw.response()
    assert (chunked.header("transfer-encoding"), chunked.body) == ("chunked", b"alphabeta")
    head = raw.response(head=True)
    assert head.header("transfer-encoding") == "chunked"
    raw.send(get("/after"))
    assert raw.response().body == b"alphabeta"  # nothing stray from the HEAD answer
    raw.close()
    old = RawClient(runner.connect())
    old.send(b"GET /old HTTP/1.0\r\n\r\n")
    reply = old.response()  # no length, not chunked: the body ends with the connection
    assert reply.header("transfer-encoding") is None
    assert reply.header("content-length") is None
    assert (reply.header("connection"), reply.body) == ("close", b"alphabeta")
    old.close()


# -- the router ---------------------------------------------------------------------

router = Router()


@router.get("/health")
def health(conn: HttpConnection, request: HttpRequest) -> Response:
    return Response.text("ok\n")


@router.post("/items/{name}")
def post_item(conn: HttpConnection, request: HttpRequest, name: str) -> None:
    conn.respond(201, [("x-name", name)], request.body)


class Routed(Daemon):
    listen = LOCAL
    on_request = router.dispatch


class Counter(Daemon):
    """Routes declared in the class body: the router calls them as methods."""

    listen = LOCAL
    routes = Router()

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.count = 0

    @routes.get("/count")
    def count_up(self, conn: HttpConnection, request: HttpRequest) -> Response:
        self.count += 1
        return Response.text(str(self.count))

    on_request = routes


def test_router_routes_404_405_and_head(run_daemon: StartDaemon) -> None:
    runner = run_daemon(Routed())
    raw = RawClient(runner.connect())
    raw.send(get("/health"))
    assert raw.response().body == b"ok\n"
    raw.send(get("/health", method="HEAD"))
    assert raw.response(head=True).header("content-length") == "3"
    raw.send(get("/nowhere"))
    assert raw.response().status == 404
    raw.send(get("/health", method="DELETE"))
    reply = raw.response()
    assert (reply.status, reply.header("allow")) == (405, "GET, HEAD")
    raw.send(get("/items/a%20b", method="POST", body=b"data"))
    reply = raw.response()
    assert (reply.status, reply.header("x-name"), reply.body) == (201, "a b", b"data")
    raw.send(get("/items/x"))
    assert raw.response().status == 405
    raw.send(get("/items/", method="POST"))
    assert raw.response().status == 404
    raw.close()
    assert router.routes == [("GET", "/health"), ("POST", "/items/{name}")]


def test_a_router_in_a_class_body_calls_methods(run_daemon: StartDaemon) -> None:
    d = Counter()
    runner = run_daemon(d)
    raw = RawClient(runner.connect())
    for n in (1, 2):
        raw.send(get("/count"))
        assert raw.response().body == str(n).encode()
    raw.close()
    assert d.count == 2


def test_router_refuses_bad_routes() -> None:
    r = Router()
    r.get("/a")(health)
    with pytest.raises(ValueError, match="twice"):
        r.get("/a")(health)
    with pytest.raises(ValueError, match="starts with"):
        r.get("a")
    with pytest.raises(ValueError, match="whole segment"):
        r.get("/a{b}")
    with pytest.raises(ValueError, match="method"):
        r.route("GE T", "/b")


def test_a_handler_without_on_request_answers_404(run_daemon: StartDaemon) -> None:
    class Bare(Daemon):
        listen = LOCAL

    runner = run_daemon(Bare())
    raw = RawClient(runner.connect())
    raw.send(get("/"))
    assert raw.response().status == 404
    raw.close()


# -- options ----------------------------------------------------------------------------


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="unknown endpoint option"):
        App(listen=Endpoint(LOCAL, max_bodyy=10))
    with pytest.raises(ConfigError, match="max_body must be a whole number"):
        App(listen=Endpoint(LOCAL, max_body=0))
    with pytest.raises(ConfigError, match="header_timeout must be seconds"):
        App(listen=Endpoint(LOCAL, header_timeout=-1))
    with pytest.raises(ConfigError, match="websocket path"):
        App(listen=Endpoint(LOCAL, websocket="ws"))
    App(listen=Endpoint(LOCAL, max_body=10, header_timeout=None, websocket=["/a", "/b"]))


def test_websocket_options_are_checked_when_the_daemon_is_created() -> None:
    websocket = pytest.importorskip("daemonkit.websocket")
    assert websocket.OPTIONS <= HttpHost.OPTIONS
    with pytest.raises(ConfigError, match="max_message"):
        App(listen=Endpoint(LOCAL, websocket="/ws", max_message=0))
    with pytest.raises(ConfigError, match="max_message"):
        App(listen=Endpoint("ws://127.0.0.1:0", max_message=0))


# -- the WebSocket hand-over (with a stand-in for daemonkit.websocket) --------------

UPGRADE = (
    "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: {proto}\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def upgrade(path: str, proto: str = "websocket") -> bytes:
    return UPGRADE.format(path=path, proto=proto).encode()


class Echo(Handler):
    def on_read(self, conn: Connection, data: Any) -> None:
        conn.write(data)


class Closer:
    """What the WebSocket side sets as conn._upgraded."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.calls: list[tuple[int, str, float | None]] = []

    def close(self, code: int, reason: str, timeout: float | None) -> None:
        self.calls.append((code, reason, timeout))
        self.conn._close(CloseReason.LOCAL, timeout)


@pytest.fixture
def fake_websocket(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Install a stand-in daemonkit.websocket whose accept() turns the connection into echo."""
    accepted: list[tuple[Any, ...]] = []

    def accept(
        conn: HttpConnection, request: HttpRequest, handler: Any, *, host: Any, trailing: bytes
    ) -> None:
        closer = Closer(conn)
        accepted.append((request.path, handler, trailing, conn, closer))
        conn.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
        echo = StreamHost(host.daemon, Endpoint("tcp://127.0.0.1:0", handler=Echo()))
        conn._rehost(echo, None)
        conn._upgraded = closer
        if trailing:
            conn.write(trailing)

    module = types.ModuleType("daemonkit.websocket")
    module.accept = accept  # type: ignore[attr-defined]
    module.OPTIONS = frozenset({"ping_interval"})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "daemonkit.websocket", module)
    return accepted


def test_an_upgrade_to_a_websocket_route_is_handed_over(
    run_daemon: StartDaemon, fake_websocket: list[tuple[Any, ...]]
) -> None:
    chat = Echo()
    d = App(listen=Endpoint(LOCAL, websocket={"/chat": chat}, ping_interval=5))
    runner = run_daemon(d)
    raw = RawClient(runner.connect())
    raw.send(get("/first") + upgrade("/chat") + b"early bytes")
    assert raw.response().body == b"GET /first"
    assert raw.response().status == 101
    while len(raw.buf) < len(b"early bytes"):
        raw._fill()
    assert raw.buf == b"early bytes"  # the trailing bytes reached the new protocol
    raw.buf = b""
    raw.send(b"ping")
    while raw.buf != b"ping":
        assert raw._fill()
    path, handler, trailing, conn, closer = fake_websocket[0]
    assert (path, handler, trailing) == ("/chat", chat, b"early bytes")
    assert d.seen == ["/first"]  # the upgrade did not go to on_request
    runner.call(lambda: conn.close(code=1001, reason="going away"))
    assert closer.calls == [(1001, "going away", None)]
    raw.buf = b""
    assert raw.closed()
    raw.close()


def test_websocket_routes_and_other_upgrades(
    run_daemon: StartDaemon, fake_websocket: list[tuple[Any, ...]]
) -> None:
    d = App(listen=Endpoint(LOCAL, websocket="/ws"))
    runner = run_daemon(d)
    raw = RawClient(runner.connect())
    raw.send(get("/ws"))  # a plain request to a route path is plain HTTP
    assert raw.response().body == b"GET /ws"
    raw.send(upgrade("/h2", "h2c"))  # another protocol: served as plain HTTP
    assert raw.response().body == b"GET /h2"
    raw.send(get("/still-http"))
    assert raw.response().body == b"GET /still-http"
    raw.send(upgrade("/elsewhere"))  # not a route: 404 and close
    reply = raw.response()
    assert (reply.status, reply.header("connection")) == (404, "close")
    assert raw.closed()
    raw.close()
    assert fake_websocket == []


UPGRADE_FOO = b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"


@pytest.mark.parametrize(
    "framed_body",
    [
        pytest.param(b"Content-Length: 11\r\n\r\nhello world", id="content-length"),
        pytest.param(
            b"Transfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n",
            id="chunked",
        ),
    ],
)
def test_a_declined_upgrade_with_a_body_is_an_ordinary_request(
    app: tuple[App, DaemonRunner], framed_body: bytes
) -> None:
    d, runner = app
    raw = RawClient(runner.connect())
    raw.send(UPGRADE_FOO + framed_body)
    reply = raw.response()
    assert (reply.status, reply.body, reply.header("connection")) == (200, b"hello world", None)
    # Exactly one response, and the connection carries on.
    raw.send(get("/second"))
    reply = raw.response()
    assert (reply.status, reply.body) == (200, b"GET /second")
    assert raw.buf == b""
    raw.close()
    assert d.seen == ["/echo", "/second"]


def test_a_declined_upgrade_with_a_body_pipelined(app: tuple[App, DaemonRunner]) -> None:
    _, runner = app
    raw = RawClient(runner.connect())
    body = b"Content-Length: 3\r\nExpect: 100-continue\r\n\r\n"
    raw.send(get("/first") + UPGRADE_FOO + body)
    assert raw.response().body == b"GET /first"
    assert raw.response().status == 100
    raw.send(b"abc" + get("/third"))
    assert raw.response().body == b"abc"
    assert raw.response().body == b"GET /third"
    raw.close()


def test_an_upgrade_to_another_protocol_on_a_plain_endpoint(
    app: tuple[App, DaemonRunner],
) -> None:
    _, runner = app
    raw = RawClient(runner.connect())
    raw.send(upgrade("/page", "foo") + get("/next"))
    assert raw.response().body == b"GET /page"
    assert raw.response().body == b"GET /next"
    raw.close()


def test_a_websocket_upgrade_with_a_body_hands_over_what_follows_it(
    run_daemon: StartDaemon, fake_websocket: list[tuple[Any, ...]]
) -> None:
    runner = run_daemon(App(listen=Endpoint(LOCAL, websocket="/chat")))
    raw = RawClient(runner.connect())
    head = upgrade("/chat")[:-2] + b"Content-Length: 4\r\n\r\n"
    raw.send(head + b"bodyframes")
    assert raw.response().status == 101
    while len(raw.buf) < len(b"frames"):
        assert raw._fill()
    assert raw.buf == b"frames"
    raw.close()
    assert fake_websocket[0][2] == b"frames"  # the body stayed with the request


def test_every_path_of_a_ws_endpoint_is_a_route(
    run_daemon: StartDaemon, fake_websocket: list[tuple[Any, ...]]
) -> None:
    d = App(listen="ws://127.0.0.1:0")
    runner = run_daemon(d)
    raw = RawClient(runner.connect())
    raw.send(upgrade("/any/path"))
    assert raw.response().status == 101
    raw.close()
    assert fake_websocket[0][:2] == ("/any/path", d)
    with pytest.raises(ConfigError, match="ping_interval"):
        App(listen=Endpoint(LOCAL, ping_intervall=5))


@pytest.mark.parametrize(
    "shape",
    [tuple, list, dict, iter, lambda pairs: types.MappingProxyType(dict(pairs))],
    ids=["tuple", "list", "dict", "iterator", "mapping"],
)
def test_header_fields_in_every_shape_say_the_same(shape: Callable[[Any], Any]) -> None:
    """What respond() reads of the caller's fields, whatever container holds them."""
    from daemonkit.protocols.http.connection import _scan

    pairs = (("Content-Length", "3"), ("connection", "close"), ("x-a", "b"))
    items, found = _scan(shape(pairs), ("date", "D"))
    assert items == [*pairs, ("date", "D")]
    assert (found.length, found.close, found.transfer) == ("3", True, False)
    items, found = _scan(shape((("Date", "mine"),)), ("date", "D"))
    assert items == [("Date", "mine")]  # a Date given is kept, none added
