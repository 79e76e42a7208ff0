"""HttpBot: a simulated user of an HTTP/1.1 API or site.

::

    from daemonkit.bots import HttpBot

    class Shopper(HttpBot):
        async def script(self):
            resp = await self.get("/")
            await self.post("/cart", body=b'{"sku": 1}',
                            headers={"content-type": "application/json"})
            await self.get(f"/item/{self.random.randint(1, 99)}", name="/item/{id}")

    # python -m daemonkit bots shopper.py --target http://127.0.0.1:8080 --bots 100

A target with a path (``http://host:port/api``) is the base of every
path the bot requests, as Locust's host is: ``self.get("/users")`` sends
``GET /api/users``, still timed as ``/users``.

Each request is timed under a name, the path unless ``name=`` is given,
and judged by status: a status of ``fail_status`` (400) or more is a
failure (``"HTTP 503"``), not a success. Every response is also counted
by its status code, 2xx and 3xx too (``Operation.statuses``, in every
report). The response (``resp.status``,
``resp.headers``, ``resp.header(name)``, ``resp.body``, ``resp.text``) is
returned for checks: ``self.fail(name, why)`` right after, before the next
request or sleep, counts a 2xx whose content is wrong as a failure instead.

The connection is kept alive (HTTP/1.1); requests made without waiting for
the previous reply are pipelined on it, answered in order. The request
bytes come from :func:`~daemonkit.framing.http_client.encode_request` and
responses are read by :class:`~daemonkit.framing.http_client.HttpResponseFramer`,
the client-side halves of the server's own HTTP framing (llhttp, through
``httptools``). ``https://`` targets use TLS (see ``cafile`` and
``verify`` on :class:`~daemonkit.bots.Bot`, or ``--cafile`` and
``--insecure``).

A response that ends the connection (``Connection: close``, HTTP/1.0) is
counted like any other, and the bot's next request opens a new connection,
as every HTTP client does: no drop, no ``on_close``/``on_connect``, the
script and the ticks go on. Its timers (:meth:`HttpBot.after`,
:meth:`HttpBot.every`, sleeps, think times) belong to the bot rather than
to one connection, so they live through the change. Requests pipelined
behind that response are never answered by the server; they fail as
``closed: peer closed``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from daemonkit.bots.bot import END_CLOSE_TIMEOUT, Bot
from daemonkit.core.connection import CloseReason
from daemonkit.framing.http_client import HttpResponse, HttpResponseFramer, encode_request

if TYPE_CHECKING:
    from collections.abc import Callable

    from daemonkit.bots.runner import Fleet
    from daemonkit.core.connection import Connection
    from daemonkit.core.timers import Timer

__all__ = ["DEFAULT_FAIL_STATUS", "ENCODED_REQUESTS_KEPT", "HttpBot", "HttpResponse"]

# Locust's HttpUser and k6 both count 4xx and 5xx responses as failures.
DEFAULT_FAIL_STATUS = 400
"""Default ``fail_status``: responses with this status or above are failures."""

_Headers = Mapping[str, str] | Iterable[tuple[str, str]]

# Requests without a body or headers of their own are encoded once per bot and
# kept, as wrk builds its request once; a bot with more distinct ones (an
# /item/{id} per id) encodes the rest each time, so this many bound the memory.
ENCODED_REQUESTS_KEPT = 32


def _join(base: str, path: str) -> str:
    """``path`` under the target's ``base`` path, as Locust joins its host and a path.

    ``/api`` and ``/users`` (or ``users``) give ``/api/users``; ``*`` (the
    target of ``OPTIONS *``) stays itself.
    """
    if path == "*":
        return path
    return base.rstrip("/") + "/" + path.lstrip("/")


class HttpBot(Bot):
    """A bot that speaks HTTP/1.1 to an ``http://`` or ``https://`` target.

    In ``script()``: ``resp = await self.get(path)``, ``await self.post(path,
    body=..., headers=...)``, ``self.put``, ``self.patch``, ``self.delete``,
    ``self.head``, ``self.options``, or ``self.request(method, path, ...)``.
    Each sends at once and returns a future of the
    :class:`~daemonkit.framing.http_client.HttpResponse`: await it in a
    script; in ``on_tick`` just call it (the reply is timed all the same and
    :meth:`on_read` sees it). A request that gets no answer (timeout,
    connection closed) raises :class:`~daemonkit.bots.RequestFailed` when
    awaited, counted already.

    Settings (class attributes) beyond :class:`~daemonkit.bots.Bot`'s:
    ``headers`` (sent with every request, e.g. an ``Authorization``),
    ``fail_status`` (the lowest status counted as a failure; None: judge
    every status yourself) and ``framing`` (an
    :class:`~daemonkit.framing.http_client.HttpResponseFramer`, e.g. with a
    larger ``max_body`` for downloads).
    """

    schemes: ClassVar[tuple[str, ...]] = ("http", "https")
    framing: ClassVar[Any] = HttpResponseFramer
    headers: ClassVar[_Headers] = {}
    fail_status: ClassVar[int | None] = DEFAULT_FAIL_STATUS

    def __init__(self, fleet: Fleet, index: int) -> None:
        super().__init__(fleet, index)
        self._host_header = ""
        self._on_read = self._http_read
        self._encoded: dict[tuple[str, str], bytes] = {}
        # The server ended the current connection after a response: requests
        # wait in _queued for the next one, _renewal, opened on demand.
        self._ended_by_server = False
        self._queued: list[bytes] = []
        self._renewal: Connection | None = None
        # The bot asked to close (or the run ended) while between connections.
        self._session_closing = False
        self._session_timeout: float | None = None
        self._session_over = False
        # The bot's timers: they outlive a connection the server ended.
        self._timers: list[Timer] = []

    # -- actions ----------------------------------------------------------------

    def request(  # type: ignore[override]
        self,
        method: str,
        path: str,
        *,
        body: bytes | str = b"",
        headers: _Headers | None = None,
        name: str | None = None,
    ) -> asyncio.Future[HttpResponse]:
        """Send ``method path`` now; return the future of its response, timed as ``name``.

        *path* is the request target (``/search?q=x``, percent-encoded),
        under the target's path when it has one (``--target
        http://host:port/api``: ``/users`` is sent as ``/api/users``);
        *body* is sent with a ``content-length`` (a ``str`` as UTF-8);
        *headers* add to the class's ``headers``. ``name`` defaults to *path*.
        Raises :class:`ValueError` for a bad method, path or header (nothing
        is sent).
        """
        kept = self._encoded
        frame = kept.get((method, path)) if headers is None and not body else None
        if frame is None:
            fields: list[tuple[str, str]] = []
            for source in (self.headers, headers):
                if source:
                    fields.extend(source.items() if isinstance(source, Mapping) else source)
            data = body.encode() if isinstance(body, str) else body
            base = self._fleet.target_path
            target = _join(base, path) if base else path
            frame = encode_request(method, target, host=self._host(), headers=fields, body=data)
            if headers is None and not body and len(kept) < ENCODED_REQUESTS_KEPT:
                kept[method, path] = frame
        future: asyncio.Future[HttpResponse] = self._fleet.reactor.loop.create_future()
        send = self._send_on_next if self._ended_by_server else None
        self._request(frame, name or path, None, future, send)
        return future

    def after(self, delay: float, fn: Callable[..., object], *args: object) -> Timer:
        """Run ``fn(*args)`` once after ``delay`` s; cancelled when the bot closes.

        The timer belongs to the bot, not to its connection: it lives through
        a new connection opened after the server ended the last one.
        """
        if self.conn is None:
            raise RuntimeError("the bot is not connected yet; start timers in on_connect")
        return self._own(self.reactor.call_later(delay, fn, *args))

    def every(self, interval: float, fn: Callable[..., object], *args: object) -> Timer:
        """Run ``fn(*args)`` every ``interval`` s until the bot closes (see :meth:`after`)."""
        if self.conn is None:
            raise RuntimeError("the bot is not connected yet; start timers in on_connect")
        return self._own(self.reactor.call_every(interval, fn, *args))

    def get(
        self, path: str, *, headers: _Headers | None = None, name: str | None = None
    ) -> asyncio.Future[HttpResponse]:
        """``GET path``; see :meth:`request`."""
        return self.request("GET", path, headers=headers, name=name)

    def head(
        self, path: str, *, headers: _Headers | None = None, name: str | None = None
    ) -> asyncio.Future[HttpResponse]:
        """``HEAD path`` (the response has no body); see :meth:`request`."""
        return self.request("HEAD", path, headers=headers, name=name)

    def options(
        self, path: str, *, headers: _Headers | None = None, name: str | None = None
    ) -> asyncio.Future[HttpResponse]:
        """``OPTIONS path``; see :meth:`request`."""
        return self.request("OPTIONS", path, headers=headers, name=name)

    def delete(
        self, path: str, *, headers: _Headers | None = None, name: str | None = None
    ) -> asyncio.Future[HttpResponse]:
        """``DELETE path``; see :meth:`request`."""
        return self.request("DELETE", path, headers=headers, name=name)

    def post(
        self,
        path: str,
        body: bytes | str = b"",
        *,
        headers: _Headers | None = None,
        name: str | None = None,
    ) -> asyncio.Future[HttpResponse]:
        """``POST path`` with *body*; see :meth:`request`."""
        return self.request("POST", path, body=body, headers=headers, name=name)

    def put(
        self,
        path: str,
        body: bytes | str = b"",
        *,
        headers: _Headers | None = None,
        name: str | None = None,
    ) -> asyncio.Future[HttpResponse]:
        """``PUT path`` with *body*; see :meth:`request`."""
        return self.request("PUT", path, body=body, headers=headers, name=name)

    def patch(
        self,
        path: str,
        body: bytes | str = b"",
        *,
        headers: _Headers | None = None,
        name: str | None = None,
    ) -> asyncio.Future[HttpResponse]:
        """``PATCH path`` with *body*; see :meth:`request`."""
        return self.request("PATCH", path, body=body, headers=headers, name=name)

    # -- internals --------------------------------------------------------------

    def _host(self) -> str:
        """The ``Host`` field: the target's ``host:port`` (the peer's address without one)."""
        host = self._host_header
        if not host:
            target = self.target
            if target is not None and target.host:
                name = f"[{target.host}]" if ":" in target.host else target.host
                host = f"{name}:{target.port}"
            elif self.conn is not None:
                host = self.conn.peer
            self._host_header = host
        return host

    def _own(self, timer: Timer) -> Timer:
        timers = self._timers
        if len(timers) >= 32 and not len(timers) & (len(timers) - 1):
            # Drop spent timers at 32, 64, 128... entries: amortised O(1) per add.
            timers[:] = [t for t in timers if t.active]
        timers.append(timer)
        return timer

    def _may_queue(self) -> bool:
        # Between connections: a request waits for the next one.
        return self._ended_by_server and not self._fleet.ending

    def _send_on_next(self, frame: bytes) -> bool:
        """Queue a request for the next connection, and open it if nobody has yet."""
        self._queued.append(frame)
        if self._renewal is None:
            fleet = self._fleet
            conn = self._renewal = fleet.new_connection(self, timed=False)
            assert fleet.connector is not None
            fleet.connector(fleet, self, conn)
        return True

    def _http_read(self, conn: Connection, response: HttpResponse) -> None:
        """A response: judged by its status, then timed and matched as any reply."""
        fifo = self._fifo
        if self._ended_by_server or conn is not self.conn:
            return  # more after the response that ended the connection: answers nothing
        if response.keep_alive:
            self._judge(conn, response)
            return
        # The server ends this connection after this response: requests made
        # from now on go to the next connection, opened when one is made.
        self._ended_by_server = True
        behind = len(fifo) - 1  # pipelined on this connection: never answered
        self._judge(conn, response)
        for _ in range(max(0, min(behind, len(fifo)))):
            self._failed(fifo.popleft(), f"closed: {CloseReason.PEER_CLOSED}")
        if not conn.closing:
            conn.close()

    def _judge(self, conn: Connection, response: HttpResponse) -> None:
        fail_status = self.fail_status
        fifo = self._fifo
        if fifo:
            # Every response is counted by its code, whatever its verdict.
            self._fleet.stats.status(fifo[0][1], response.status)
        if fifo and fail_status is not None and response.status >= fail_status:
            # A failure by status: counted once as such, never as a success.
            _, name, future = fifo.popleft()
            fleet = self._fleet
            fleet.stats.fail(name, f"HTTP {response.status}")
            if future is not None and not future.done():
                future.set_result(response)
            self.on_read(response)
            if not fifo and self._has_tick and fleet.closed_model:
                self._next_tick()
        else:
            self._dispatch_read(conn, response)

    # -- connections: a session of the bot may span several ---------------------------

    def _on_connection_made(self, conn: Connection) -> None:
        if conn is not self._renewal:
            # A first connection, or a reconnect after a drop: a new session.
            self._ended_by_server = self._session_closing = self._session_over = False
            self._queued.clear()
            super()._on_connection_made(conn)
            return
        # The next connection of the same session: send what waited for it.
        self._renewal = None
        self._ended_by_server = False
        self.conn = conn
        self._fleet._bot_connected(self)
        queued, self._queued = self._queued, []
        for frame in queued:
            conn.send(frame)
        if self._session_closing:
            conn.close(self._session_timeout)

    def _on_connection_lost(self, conn: Connection, reason: CloseReason) -> None:
        if conn is not self.conn or self._session_over:
            return  # a connection the server ended, replaced already (or the session is over)
        if self._ended_by_server and (
            self._renewal is not None or not (self._session_closing or self._fleet.ending)
        ):
            return  # between connections: the session goes on (on the next one)
        self._end_session(conn, reason)

    def _end_session(self, conn: Connection, reason: CloseReason) -> None:
        """The bot's session is over: its timers go, and on_close is called, once."""
        self._session_over = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._queued.clear()
        self._ended_by_server = False
        super()._on_connection_lost(conn, reason)

    def _connect_failed(self, kind: str) -> bool:
        if self._renewal is None:
            return False
        # The server ended the last connection and refuses the next: the
        # requests that waited fail, and the bot's session drops.
        self._renewal = None
        fifo = self._fifo
        while fifo:
            self._failed(fifo.popleft(), f"connect: {kind}")
        old = self.conn
        assert old is not None
        if not old.closed:
            old.abort()
        if not self._session_over:
            closing = self._session_closing or self._fleet.ending
            self._end_session(old, CloseReason.LOCAL if closing else CloseReason.PEER_CLOSED)
        return True

    def close(self) -> None:
        """Flush what was sent, then close; :meth:`on_close` follows (also between connections)."""
        self._close_session(None)

    def _close_at_end(self) -> None:
        self._close_session(END_CLOSE_TIMEOUT)

    def _close_session(self, timeout: float | None) -> None:
        conn = self.conn
        if conn is None or self._session_over:
            return
        self._session_closing = True
        self._session_timeout = timeout
        if self._renewal is not None:
            return  # closed once it is made (or when it fails)
        if conn.closed:
            self._end_session(conn, CloseReason.LOCAL)  # between connections
        else:
            conn.close(timeout)

    def _call_eof(self, conn: Connection) -> bool:
        # A body that runs until the close is complete now.
        framer = conn._framer
        if isinstance(framer, HttpResponseFramer):
            try:
                responses = framer.feed_eof()
            except Exception as exc:
                self.log.debug("bot #%d: %s", self.index, exc)
                return False
            for response in responses:
                self._http_read(conn, response)
        return False
