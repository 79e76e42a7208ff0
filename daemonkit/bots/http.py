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

Each request is timed under a name, the path unless ``name=`` is given,
and counted by status: a status of ``fail_status`` (400) or more is a
failure (``"HTTP 503"``), not a success. The response (``resp.status``,
``resp.headers``, ``resp.header(name)``, ``resp.body``, ``resp.text``) is
returned for checks: ``self.fail(name, why)`` right after, before the next
request or sleep, counts a 2xx whose content is wrong as a failure instead.

The connection is kept alive (HTTP/1.1); requests made without waiting for
the previous reply are pipelined on it, answered in order. The request
bytes come from :func:`~daemonkit.framing.http_client.encode_request` and
responses are read by :class:`~daemonkit.framing.http_client.HttpResponseFramer`,
the client-side halves of the server's own HTTP framing (llhttp, through
``httptools``). ``https://`` targets use TLS (see ``cafile`` and
``verify`` on :class:`~daemonkit.bots.Bot`).

A response that ends the connection (``Connection: close``, HTTP/1.0) is
counted like any other; the bot then closes, as it would when the server
drops it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from daemonkit.bots.bot import Bot
from daemonkit.framing.http_client import HttpResponse, HttpResponseFramer, encode_request

if TYPE_CHECKING:
    from daemonkit.bots.runner import Fleet
    from daemonkit.core.connection import Connection

__all__ = ["DEFAULT_FAIL_STATUS", "HttpBot", "HttpResponse"]

# Locust's HttpUser and k6 both count 4xx and 5xx responses as failures.
DEFAULT_FAIL_STATUS = 400
"""Default ``fail_status``: responses with this status or above are failures."""

_Headers = Mapping[str, str] | Iterable[tuple[str, str]]


def _retrieve(future: asyncio.Future[Any]) -> None:
    # A request made in on_tick is not awaited: its failure is counted
    # already, so the future's exception is not an unhandled error.
    if not future.cancelled():
        future.exception()


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

        *path* is the request target (``/search?q=x``, percent-encoded);
        *body* is sent with a ``content-length`` (a ``str`` as UTF-8);
        *headers* add to the class's ``headers``. ``name`` defaults to *path*.
        Raises :class:`ValueError` for a bad method, path or header (nothing
        is sent).
        """
        fields: list[tuple[str, str]] = []
        for source in (self.headers, headers):
            if source:
                fields.extend(source.items() if isinstance(source, Mapping) else source)
        data = body.encode() if isinstance(body, str) else body
        frame = encode_request(method, path, host=self._host(), headers=fields, body=data)
        future: asyncio.Future[HttpResponse] = self._fleet.reactor.loop.create_future()
        future.add_done_callback(_retrieve)
        self._request(frame, name or path, None, future)
        return future

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

    def _http_read(self, conn: Connection, response: HttpResponse) -> None:
        """A response: judged by its status, then timed and matched as any reply."""
        fail_status = self.fail_status
        fifo = self._fifo
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
        if not response.keep_alive and not conn.closing:
            conn.close()  # the server ends the connection after this response

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
