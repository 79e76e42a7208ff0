"""WebSocketSession: one upgraded connection, its messages, keepalive and closing handshake.

:func:`accept` is what the HTTP layer calls for an upgrade request on a
WebSocket route. It checks the handshake, writes the ``101``, and rehosts
the connection: from then on the connection's host is a
:class:`WebSocketSession` and its framer a
:class:`~daemonkit.framing.websocket.WebSocketFramer`. The session is a
:class:`~daemonkit.framework.hosts.StreamHost` for the one connection, so the daemon's
books (``connections``, ``stats``, groups, the end of a graceful stop) are
kept by the same code as for every other connection.

The callbacks, per connection::

    on_open (on_message | on_drain | on_error)* on_close

``on_close(conn, reason)`` is called exactly once, with a
:class:`~daemonkit.core.connection.CloseReason`; what the closing handshake said
is on the session (:func:`session` ``(conn).close_code``...). Reasons:

* ``PEER_CLOSED``: the client sent a Close (echoed), or the TCP connection
  ended without one (``close_code`` 1006).
* ``LOCAL``: ``conn.close(code=..., reason=...)`` and the client answered.
* ``CLOSE_TIMEOUT``: the client did not answer the Close within
  ``close_timeout``.
* ``IDLE_TIMEOUT``: a keepalive ping got no pong within ``ping_timeout``
  (a Close 1011 was sent).
* ``PROTOCOL_ERROR`` / ``FRAME_TOO_LARGE``: the client broke the protocol
  or ``max_message`` (a Close 1002, 1007 or 1009 was sent).
* ``SHUTDOWN``, ``HANDLER_ERROR``, ``OVERFLOW``, ``ABORTED``: as for any
  connection.

Writes: ``conn.send(str | bytes)`` is one text or binary message. After the
Close is sent, ``send`` drops messages (RFC 6455 5.5.1: no data after a
Close).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from daemonkit.core.connection import CloseReason, Connection
from daemonkit.framework.handler import serve_handler
from daemonkit.framework.hosts import EndpointHost, StreamHost
from daemonkit.framing.base import BytesLike, Framer
from daemonkit.framing.http import HttpRequest, encode_response
from daemonkit.framing.websocket import (
    Close,
    CloseCode,
    Deflate,
    MessageTooBig,
    Ping,
    Pong,
    WebSocketError,
    WebSocketFramer,
)
from daemonkit.framing.websocket import apply_mask as _py_apply_mask
from daemonkit.protocols.websocket.handshake import (
    HandshakeError,
    accept_key,
    check_request,
    negotiate_deflate,
    negotiate_subprotocol,
)
from daemonkit.protocols.websocket.settings import WebSocketSettings, check_options

if TYPE_CHECKING:
    from daemonkit.core.timers import Timer
    from daemonkit.protocols.http.connection import HttpConnection
    from daemonkit.protocols.http.host import HttpHost

__all__ = ["SLOW_UNMASK_NOTE", "WebSocketSession", "accept", "session", "unmasker"]

#: Logged once (INFO, logger ``daemonkit.websocket``) by :func:`unmasker` when
#: the C unmasking is missing: the pure-Python XOR is correct but about ten
#: times slower on long payloads, a hundred on a megabyte (docs/websocket.md).
SLOW_UNMASK_NOTE = (
    "WebSocket payloads are unmasked in pure Python (10-100 times slower on long"
    " messages): pip install 'daemonkit[speedups]' for the C version"
)


@functools.cache
def unmasker() -> Callable[[bytes, bytes], bytes]:
    """The function that unmasks client frames, chosen at the first handshake.

    ``websockets.speedups.apply_mask`` (C) when the ``daemonkit[speedups]``
    extra is installed, else :func:`daemonkit.framing.websocket.apply_mask`
    (pure Python), after logging :data:`SLOW_UNMASK_NOTE` once. Imported
    here, when a WebSocket is first served, so ``import daemonkit`` never
    loads ``websockets``.
    """
    try:
        from websockets.speedups import apply_mask
    except ImportError:
        logging.getLogger("daemonkit.websocket").info("%s", SLOW_UNMASK_NOTE)
        return _py_apply_mask
    return apply_mask


# A Close frame's reason is at most 123 bytes (125 minus the code).
_MAX_REASON = 123


class _Failed:
    """Stands in the frame list for the error that broke the framer."""

    __slots__ = ("error",)

    def __init__(self, error: WebSocketError | MessageTooBig) -> None:
        self.error = error


class _ServerFramer(WebSocketFramer):
    """The framer of a session: errors come back as a last :class:`_Failed` item.

    The connection layer would close at once on a framing error; the
    session must send a Close frame with the error's code first.
    """

    __slots__ = ()

    def feed(self, data: BytesLike) -> list[Any]:
        try:
            return WebSocketFramer.feed(self, data)
        except (WebSocketError, MessageTooBig) as exc:
            frames = exc.frames
            frames.append(_Failed(exc))
            return frames


class _Draining(Framer):
    """The framer once the Close is sent: input read as before, messages sent dropped."""

    __slots__ = ("_inner",)

    def __init__(self, inner: WebSocketFramer) -> None:
        super().__init__()
        self._inner = inner

    def feed(self, data: bytes) -> list[Any]:
        """Read *data* with the session's framer."""
        return self._inner.feed(data)

    def encode(self, frame: Any) -> bytes:
        """Nothing: no message may follow a Close frame."""
        return b""


def _short(text: str) -> str:
    """*text* cut to fit a Close frame's reason (123 bytes of UTF-8)."""
    data = text.encode()
    if len(data) <= _MAX_REASON:
        return text
    return data[:_MAX_REASON].decode(errors="ignore")


class WebSocketSession(StreamHost):
    """The WebSocket side of one upgraded connection; get it with :func:`session`.

    What a user reads:

    * ``request``: the :class:`~daemonkit.framing.http.HttpRequest` of the
      handshake (``path``, ``query``, ``header()``: cookies, tokens...).
    * ``subprotocol``: the negotiated subprotocol, or None.
    * ``compression``: the negotiated :class:`~daemonkit.framing.websocket.Deflate`,
      or None.
    * ``close_sent`` / ``close_received``: the
      :class:`~daemonkit.framing.websocket.Close` frames of the closing
      handshake, None until sent or received.
    * ``close_code`` / ``close_reason``: once closed, the code and reason of
      the client's Close (RFC 6455 7.1.5), 1006 and ``""`` if it sent none;
      None and ``""`` while the connection is open.

    ``close(code, reason, timeout)`` is what ``conn.close(code=..., reason=...)``
    calls.
    """

    def __init__(
        self,
        http_host: HttpHost,
        conn: HttpConnection,
        request: HttpRequest,
        handler: Any,
        settings: WebSocketSettings,
        framer: WebSocketFramer,
        subprotocol: str | None,
    ) -> None:
        # Not StreamHost.__init__: that one reads an endpoint's framing and
        # options; this host borrows the HTTP host's settings instead.
        EndpointHost.__init__(self, http_host.daemon, http_host.endpoint)
        self.handler = handler
        serve_handler(handler, self.daemon)
        self.address = http_host.address
        self.idle_timeout: float | None = None
        self.write_high_water: int = http_host.write_high_water
        self.write_low_water: int = http_host.write_low_water
        self.max_write_buffer: int = http_host.max_write_buffer
        self.close_timeout: float = http_host.close_timeout
        self._on_message = self.callback("on_message")
        on_open = getattr(handler, "on_open", None)
        self._on_open: Any = on_open if callable(on_open) else None
        self._on_close = self.callback("on_close")
        self._on_error = self.callback("on_error")
        self._on_drain = self.callback("on_drain")
        self._on_timeout = self.callback("on_timeout")
        self._on_eof = None
        self._on_read = self._read_one
        self._on_frames = self._read
        self.listener = None
        self.conn: HttpConnection | None = conn
        self.request = request
        self.subprotocol = subprotocol
        self.compression: Deflate | None = framer.deflate
        self.settings = settings
        self._framer = framer
        self.close_sent: Close | None = None
        self.close_received: Close | None = None
        self.closed = False
        self._end = CloseReason.LOCAL
        self._close_timer: Timer | None = None
        self._pong_timer: Timer | None = None
        self._waiting: bytes | None = None  # the payload of the ping awaiting its pong
        self._pings = 0

    # -- what users read ---------------------------------------------------------

    @property
    def close_code(self) -> int | None:
        """The client's close code once closed (1005: none given, 1006: no Close); else None."""
        if self.close_received is not None:
            return self.close_received.code
        return CloseCode.ABNORMAL if self.closed else None

    @property
    def close_reason(self) -> str:
        """The client's close reason; ``""`` if none (or still open)."""
        return self.close_received.reason if self.close_received is not None else ""

    def __repr__(self) -> str:
        conn = f"#{self.conn.id}" if self.conn is not None else "closed"
        return f"<WebSocketSession {conn} {self.request.path}>"

    # -- actions -------------------------------------------------------------------

    def close(
        self, code: int = CloseCode.NORMAL, reason: str = "", timeout: float | None = None
    ) -> None:
        """Start the closing handshake: send Close(*code*, *reason*), wait for the client's.

        The TCP connection closes when the client's Close arrives, or after
        *timeout* seconds (default: the ``close_timeout`` option) with the
        reason ``close timeout``. Idempotent: once a Close was sent or
        received, nothing happens. Raises :class:`ValueError` for a code a
        Close frame may not carry or a reason over 123 bytes of UTF-8
        (nothing is sent).
        """
        conn = self.conn
        if conn is None or self.close_sent is not None or conn.closing:
            return
        data = self._framer.encode_close(code, reason)
        stopping = self.daemon.is_stopping()
        self._end = CloseReason.SHUTDOWN if stopping else CloseReason.LOCAL
        self._send_close(conn, data, Close(code, reason))
        wait = self.settings.close_timeout if timeout is None else timeout
        self._close_timer = conn.after(wait, self._close_expired)

    # -- opening ---------------------------------------------------------------------

    def _open(self, conn: HttpConnection, trailing: bytes) -> None:
        """Take the connection over, call ``on_open``, then read *trailing*."""
        conn._rehost(self, self._framer)
        conn._upgraded = self
        conn.set_idle_timeout(None)  # the keepalive pings watch the client now
        settings = self.settings
        if settings.ping_interval:
            conn.every(settings.ping_interval, self._ping)
        if self._on_open is not None:
            try:
                self._on_open(conn)
            except Exception as exc:
                self._call_error(conn, exc)
        if trailing and not conn.closing:
            self._read(conn, self._framer.feed(trailing))

    # -- reading ---------------------------------------------------------------------

    def _read(self, conn: Connection, frames: list[Any]) -> None:
        """The connection's ``on_frames``: messages to ``on_message``, the rest handled here."""
        on_message = self._on_message
        for frame in frames:
            kind = type(frame)
            if kind is str or kind is bytes:
                if self.close_sent is not None:
                    continue  # the application closed: the rest is not wanted
                try:
                    on_message(conn, frame)
                except Exception as exc:
                    self._call_error(conn, exc)
            else:
                self._control(conn, frame)
            if conn.closing:
                return

    def _read_one(self, conn: Connection, frame: Any) -> None:
        """The connection's ``on_read`` (used when ``on_frames`` is not)."""
        self._read(conn, [frame])

    def _control(self, conn: Connection, frame: Any) -> None:
        kind = type(frame)
        if kind is Ping:
            if self.close_sent is None:
                conn.write(self._framer.encode_pong(frame.payload))
        elif kind is Pong:
            if frame.payload == self._waiting:
                self._waiting = None
                if self._pong_timer is not None:
                    self._pong_timer.cancel()
                    self._pong_timer = None
        elif kind is Close:
            self.close_received = frame
            if self.close_sent is None:
                # Echo it (RFC 6455 5.5.1), then close the TCP connection
                # first, as a server should (7.1.1).
                data = self._framer.encode_close(frame.code, frame.reason)
                self._send_close(conn, data, frame)
                self._end = CloseReason.PEER_CLOSED
            Connection._close(conn, self._end)
        elif kind is _Failed:
            error = frame.error
            conn.log.warning("%s; closing with %d", error, error.code)
            reason = (
                CloseReason.FRAME_TOO_LARGE
                if isinstance(error, MessageTooBig)
                else CloseReason.PROTOCOL_ERROR
            )
            self._fail(conn, error.code, str(error), reason)

    def _fail(self, conn: Connection, code: int, text: str, reason: CloseReason) -> None:
        """Send Close(*code*) unless one was sent, and close the TCP connection now."""
        if self.close_sent is None:
            text = _short(text)
            self._send_close(conn, self._framer.encode_close(code, text), Close(code, text))
        Connection._close(conn, reason)

    def _send_close(self, conn: Connection, data: bytes, frame: Close) -> None:
        conn.write(data)
        self.close_sent = frame
        conn._rehost(self, _Draining(self._framer))

    # -- timers ----------------------------------------------------------------------

    def _ping(self) -> None:
        """Every ``ping_interval``: send a ping, unless one still waits for its pong."""
        conn = self.conn
        if conn is None or conn.closing or self.close_sent is not None or self._waiting:
            return
        self._pings += 1
        payload = self._waiting = self._pings.to_bytes(4, "big")
        conn.write(self._framer.encode_ping(payload))
        timeout = self.settings.ping_timeout
        if timeout:
            self._pong_timer = conn.after(timeout, self._pong_missing)

    def _pong_missing(self) -> None:
        self._pong_timer = None
        conn = self.conn
        if conn is None or conn.closing or self._waiting is None:
            return
        timeout = self.settings.ping_timeout
        conn.log.info("no pong within ping_timeout=%gs; closing with 1011", timeout)
        self._fail(
            conn, CloseCode.INTERNAL_ERROR, "keepalive ping timeout", CloseReason.IDLE_TIMEOUT
        )

    def _close_expired(self) -> None:
        self._close_timer = None
        conn = self.conn
        if conn is None or conn.closing:
            return
        conn.log.info(
            "no Close from the client within close_timeout=%gs; closing",
            self.settings.close_timeout,
        )
        Connection._close(conn, CloseReason.CLOSE_TIMEOUT)

    # -- the ConnectionHost interface -----------------------------------------------------

    def _on_connection_lost(self, conn: Connection, reason: CloseReason) -> None:
        self.closed = True
        # The connection's own timers (pings, pong and close deadlines) die with it.
        self._close_timer = self._pong_timer = None
        super()._on_connection_lost(conn, reason)
        self.conn = None


def session(conn: Connection) -> WebSocketSession | None:
    """The :class:`WebSocketSession` of *conn*, or None if it is not a WebSocket connection.

    Valid from ``on_open`` to the end of ``on_close`` (and after: it keeps
    the close codes).
    """
    upgraded = getattr(conn, "_upgraded", None)
    return upgraded if isinstance(upgraded, WebSocketSession) else None


def accept(
    conn: HttpConnection,
    request: HttpRequest,
    handler: Any,
    *,
    host: HttpHost,
    trailing: bytes = b"",
) -> None:
    """Answer the upgrade *request* on *conn* and serve it as a WebSocket with *handler*.

    Called by the HTTP layer (see :mod:`daemonkit.protocols.http.host`), once every
    request before this one is answered. A valid handshake gets ``101
    Switching Protocols`` (with the negotiated permessage-deflate and
    subprotocol), then the connection is rehosted, ``handler.on_open(conn)``
    is called and *trailing* (bytes the client sent after the request) is
    read as WebSocket input. An invalid one gets 400, 403 or 426 and the
    connection closes (the handler hears nothing).

    Raises :class:`~daemonkit.errors.ConfigError` for bad WebSocket endpoint
    options or a handler without ``on_message``, before anything is sent.
    """
    settings = getattr(host, "websocket_settings", None)
    if not isinstance(settings, WebSocketSettings):
        # The host checks them when the daemon is created; this is for other hosts.
        settings = check_options(host.endpoint.options, str(host.endpoint))
    try:
        key = check_request(request, origins=settings.origins)
    except HandshakeError as exc:
        conn.log.info("WebSocket handshake refused: %s; answering %d", exc, exc.status)
        body = f"{exc.status} {exc}\n".encode()
        headers = [*exc.headers, ("content-type", "text/plain; charset=utf-8")]
        conn.write(encode_response(exc.status, headers, body, keep_alive=False))
        Connection._close(conn, CloseReason.PROTOCOL_ERROR)
        return
    headers = [
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-accept", accept_key(key)),
    ]
    deflate = None
    if settings.compression is not None:
        negotiated = negotiate_deflate(
            request.header("sec-websocket-extensions"), settings.compression
        )
        if negotiated is not None:
            headers.append(("sec-websocket-extensions", negotiated[0]))
            deflate = negotiated[1]
    subprotocol = negotiate_subprotocol(
        request.header("sec-websocket-protocol"), settings.subprotocols
    )
    if subprotocol is not None:
        headers.append(("sec-websocket-protocol", subprotocol))
    framer = _ServerFramer(max_message=settings.max_message, deflate=deflate, apply_mask=unmasker())
    ws = WebSocketSession(host, conn, request, handler, settings, framer, subprotocol)
    conn.write(encode_response(101, headers))
    if conn.log.isEnabledFor(logging.DEBUG):
        conn.log.debug("WebSocket open on %s", request.path)
    ws._open(conn, trailing)
