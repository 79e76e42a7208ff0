"""HttpConnection: one HTTP/1.1 client, its requests answered strictly in order.

The hot path is the one of every connection, with HTTP in the middle::

    data_received → framer.feed() → on_request(conn, request) → conn.respond()
                  → gathered → one transport.write() at the end of the read

One Python call into the handler per request, one ``transport.write`` per
read however many pipelined requests it carried. What the connection adds
to :class:`~daemonkit.core.connection.Connection`:

* **Order.** One request is answered at a time (the *current* one). A
  handler that returns without answering will answer later (from a timer or
  a task): the requests after it are *held*, and reading pauses once
  :data:`MAX_PIPELINE` are held.
* **Keep-alive.** After each response the connection either waits for the
  next request or closes: HTTP/1.0 rules, ``Connection: close`` from either
  side, a stopping daemon.
* **Deadlines.** One lazy timer per connection, never re-armed on the hot
  path: the head of a request must arrive within ``header_timeout`` of its
  first byte (else ``408``), a body must not stall for as long, and an idle
  keep-alive connection closes after ``keepalive_timeout``.
* **Errors.** Bad input (the framer's :class:`~daemonkit.framing.http.HttpError`)
  is answered with its status and ``Connection: close`` once the requests
  before it are answered, logged at info, never with a traceback. The close
  after an error *lingers*, as nginx and Apache do: the write side is shut
  and the input drained for up to :data:`LINGER_TIMEOUT`, so that the
  client reads the error instead of a reset.

The legal call order per connection, as a grammar::

    on_accept (on_request | on_drain | on_timeout | on_error)* on_close

and for each request: ``respond()`` once, or ``respond_stream()`` then
``write_body()*`` then ``end_body()``, or a returned :class:`Response`.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final, NoReturn, Protocol

from mypy_extensions import mypyc_attr

from daemonkit.core.connection import CloseReason, Connection
from daemonkit.errors import FramingError
from daemonkit.framing.http import (
    LAST_CHUNK,
    HttpError,
    HttpRequest,
    HttpRequestFramer,
    encode_chunk,
    encode_continue,
    encode_response,
)
from daemonkit.protocols.http.response import Headers, Response

if TYPE_CHECKING:
    from daemonkit.core.timers import Timer, TimerQueue
    from daemonkit.protocols.http.host import HttpHost

__all__ = ["LINGER_TIMEOUT", "MAX_PIPELINE", "HttpConnection"]

# uvicorn stops reading at the first request held behind an unanswered one;
# a few more keep a pipelining client busy while bounding what is held to
# MAX_PIPELINE requests (plus what one read carried).
MAX_PIPELINE = 8
"""Requests held behind an unanswered one before reading pauses."""

# nginx's lingering_timeout is 5 s (its lingering_time, the total, 30 s).
LINGER_TIMEOUT = 5.0
"""Seconds a close after an error or ``Connection: close`` drains input before closing."""

# What the connection waits for; see _settle(). (Final, here and below:
# compiled, a constant is inlined instead of looked up in the module's dict.)
_FRESH: Final = 0
_IDLE: Final = 1
_HEAD: Final = 2
_BODY: Final = 3
_BUSY: Final = 4
# How the current response's body is sent.
_NO_STREAM: Final = 0
_CHUNKED: Final = 1
_COUNTED: Final = 2
_UNTIL_CLOSE: Final = 3

_CONTINUE: Final = encode_continue()
_TEXT: Final = ("content-type", "text/plain; charset=utf-8")
_KEEP_ALIVE: Final = ("connection", "keep-alive")
_CHUNKED_FIELD: Final = ("transfer-encoding", "chunked")


class _Upgraded(Protocol):
    """What the WebSocket side sets as ``conn._upgraded``: something to close."""

    def close(self, code: int, reason: str, timeout: float | None) -> None: ...


class _Fields:
    """What the header fields a caller gave say about the framing (see _scan)."""

    __slots__ = ("close", "length", "transfer")

    def __init__(self) -> None:
        self.close = False
        self.length: str | None = None
        self.transfer = False


def _scan(headers: Headers, date: tuple[str, str]) -> tuple[list[tuple[str, str]], _Fields]:
    """Return *headers* as a list with a ``Date`` field added unless given, and what they say."""
    # A tuple or list (the common constant) first: isinstance() against the
    # Mapping ABC costs more than the rest of the scan of a short list.
    if type(headers) is tuple or type(headers) is list:
        items = list(headers)
    elif type(headers) is dict or isinstance(headers, Mapping):
        items = list(headers.items())
    else:
        items = list(headers)
    found = _Fields()
    has_date = False
    for name, value in items:
        if type(name) is not str or len(name) not in (4, 10, 14, 17):
            continue  # not one of the four (encode_response checks the names)
        lower = name.lower()
        if lower == "date":
            has_date = True
        elif lower == "connection":
            found.close = "close" in str(value).lower()
        elif lower == "content-length":
            found.length = str(value)
        elif lower == "transfer-encoding":
            found.transfer = True
    if not has_date:
        items.append(date)
    return items, found


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


@mypyc_attr(allow_interpreted_subclasses=True)
class HttpConnection(Connection):
    """One HTTP/1.1 client connection; ``on_request(conn, request)`` gets it.

    Answer each request once, in any of three ways:

    * :meth:`respond`: the whole response at once;
    * return a :class:`~daemonkit.http.Response` from ``on_request``;
    * :meth:`respond_stream`, then :meth:`write_body` as often as needed
      (wait for ``on_drain`` when it returns False), then :meth:`end_body`.

    Answering may happen later, from a timer or a task: until then the
    requests that follow are held, and answered in order after it.

    ``conn.request`` is the request being answered (None between requests).
    Everything else is a :class:`~daemonkit.core.connection.Connection`: ``log``,
    ``state``, ``after()``, ``close()``...
    """

    __slots__ = (
        "_bad",
        "_continue",
        "_current",
        "_draining",
        "_held",
        "_hh",
        "_http",
        "_lingering",
        "_now",
        "_on_request",
        "_phase",
        "_pumping",
        "_queue",
        "_since",
        "_stream",
        "_stream_head",
        "_stream_keep",
        "_stream_left",
        "_timer",
        "_timer_due",
        "_tq",
        "_upgraded",
    )

    def __init__(self, host: HttpHost, conn_id: int, framer: HttpRequestFramer | None) -> None:
        if framer is None:
            raise TypeError("an HttpConnection needs its HttpRequestFramer")
        super().__init__(host, conn_id, framer)
        self._hh = host
        #: The HTTP framer; None once the connection is handed over (WebSocket).
        self._http: HttpRequestFramer | None = framer
        self._on_request: Callable[[HttpConnection, HttpRequest], object] = host._on_request
        self._current: HttpRequest | None = None
        self._queue: collections.deque[HttpRequest] = collections.deque()
        self._pumping = False
        self._continue: HttpRequest | None = None
        self._bad: FramingError | None = None
        self._held = False
        # Why the connection closes once the answer in flight is sent (a
        # stopping daemon, a client that half-closed), or None.
        self._draining: CloseReason | None = None
        self._lingering = False
        self._stream = _NO_STREAM
        self._stream_head = False
        self._stream_keep = True
        self._stream_left = 0
        self._phase = _FRESH
        self._since = 0.0
        self._timer: Timer | None = None
        self._timer_due = 0.0
        self._now: Callable[[], float] = _zero
        self._tq: TimerQueue | None = None
        #: Set by the WebSocket side after an upgrade: close() goes to it.
        self._upgraded: _Upgraded | None = None

    # -- what users read --------------------------------------------------

    @property
    def request(self) -> HttpRequest | None:
        """The request being answered, or None between requests."""
        return self._current

    # -- answering --------------------------------------------------------

    def respond(
        self,
        status: int | Response,
        headers: Headers = (),
        body: bytes | bytearray | memoryview | str = b"",
    ) -> bool:
        """Answer the current request: *status*, *headers*, *body*; return like ``write()``.

        *status* is 200-599 (or a :class:`~daemonkit.http.Response`, whose
        fields are used); *headers* a mapping or ``(name, value)`` pairs;
        *body* bytes, or str sent as UTF-8. ``Content-Length`` and ``Date``
        are added unless given, ``Connection: close`` when the connection
        closes after this response (the client asked, HTTP/1.0 without
        keep-alive, a ``Connection: close`` in *headers*, or the daemon is
        stopping). A ``HEAD`` request gets the headers of *body* without it.

        Returns False if the output buffer is above the high-water mark
        (the response is queued all the same). Raises :class:`RuntimeError`
        if no request is waiting for an answer (each is answered once),
        :class:`ValueError`/:class:`TypeError` for a bad status or header
        (nothing is sent; the request still waits).
        """
        request = self._current
        if request is None or self._stream:
            self._not_answering("respond")
        if type(status) is not int:
            if not isinstance(status, Response):
                raise TypeError(f"status must be an int or a Response, not {status!r}")
            response: Response = status
            status, headers, body = response.status, response.headers, response.body
        if status < 200:
            raise ValueError(f"respond() sends final responses (200-599), not {status}")
        if type(body) is not bytes:
            body = body.encode() if isinstance(body, str) else bytes(body)
        draining = self._draining
        keep = request.keep_alive and (draining is None or self._drain_more(draining))
        if keep and self._hh.daemon.is_stopping():
            keep = False  # a stopping daemon answers, then closes: say so
        date = self._hh._date()
        if headers:
            fields, found = _scan(headers, date)
            if found.close:
                keep = False
        else:
            fields = [date]
        if keep and request.version == "1.0":
            fields.append(_KEEP_ALIVE)
        data = encode_response(status, fields, body, keep_alive=keep, head=request.method == "HEAD")
        self._current = None
        ok = self.write(data)
        if not keep or not self._pumping:
            self._finish(keep)
        return ok

    def respond_stream(self, status: int, headers: Headers = ()) -> bool:
        """Start answering the current request with a body sent in parts.

        Send the parts with :meth:`write_body` and finish with
        :meth:`end_body`. With a ``Content-Length`` in *headers* the body
        must have exactly that many bytes; without one it is sent chunked
        (HTTP/1.1 clients) or until the connection closes (HTTP/1.0). For a
        ``HEAD`` request only the headers are sent and the parts are dropped.

        Returns like ``write()``. Raises :class:`RuntimeError` if no request
        is waiting for an answer, :class:`ValueError` for a status without a
        body (1xx, 204, 304), a ``Transfer-Encoding`` in *headers* (this
        method chooses it) or a bad header.
        """
        request = self._current
        if request is None or self._stream:
            self._not_answering("respond_stream")
        if type(status) is not int or status < 200 or status in (204, 304):
            raise ValueError(f"respond_stream() needs a status with a body, not {status!r}")
        draining = self._draining
        keep = request.keep_alive and (draining is None or self._drain_more(draining))
        if keep and self._hh.daemon.is_stopping():
            keep = False
        fields, found = _scan(headers, self._hh._date())
        if found.transfer:
            raise ValueError("respond_stream() sets Transfer-Encoding itself; drop it")
        head = request.method == "HEAD"
        if found.close:
            keep = False
        if found.length is not None:
            try:
                left = int(found.length)
            except ValueError:
                raise ValueError(f"bad Content-Length {found.length!r}") from None
            mode = _COUNTED
        elif request.version == "1.1":
            fields.append(_CHUNKED_FIELD)
            mode, left = _CHUNKED, 0
        else:
            mode, left, keep = _UNTIL_CLOSE, 0, False
        if keep and request.version == "1.0":
            fields.append(_KEEP_ALIVE)
        if mode == _UNTIL_CLOSE:
            # encode_response always frames a body; a close-delimited one has
            # no framing field, so frame it as chunked and take the field out
            # again (ours is the last field line, after the caller's).
            fields.append(_CHUNKED_FIELD)
            data = encode_response(status, fields, b"", keep_alive=False, head=head)
            cut = data.rfind(b"transfer-encoding: chunked\r\n")
            data = data[:cut] + data[cut + 28 :]
        else:
            data = encode_response(status, fields, b"", keep_alive=keep, head=head)
        self._stream = mode
        self._stream_head = head
        self._stream_keep = keep
        self._stream_left = left
        return self.write(data)

    def write_body(self, data: bytes | bytearray | memoryview) -> bool:
        """Send the next part of a body started with :meth:`respond_stream`.

        Returns False when the output buffer is above the high-water mark:
        stop and carry on from ``on_drain(conn)``. Parts past the hard cap
        (``max_write_buffer``) abort the connection, as for ``write()``.
        Raises :class:`RuntimeError` outside a streamed response and
        :class:`ValueError` for more bytes than its ``Content-Length``
        (the connection is aborted: the response cannot be finished).
        """
        mode = self._stream
        if not mode:
            raise RuntimeError("write_body() needs respond_stream() first")
        if type(data) is not bytes:
            data = bytes(data)
        if self._stream_head or not data:
            return not self._closing and (self._x is None or not self._x.want_drain)
        if mode == _CHUNKED:
            return self.write(encode_chunk(data))
        if mode == _COUNTED:
            left = self._stream_left = self._stream_left - len(data)
            if left < 0:
                self.abort()
                raise ValueError("write_body(): more bytes than the Content-Length given")
        return self.write(data)

    def end_body(self) -> None:
        """Finish the body started with :meth:`respond_stream`; the next request may go.

        Raises :class:`RuntimeError` outside a streamed response and
        :class:`ValueError` if fewer bytes than its ``Content-Length`` were
        sent (the connection is aborted: the client would wait for the rest).
        """
        mode = self._stream
        if not mode:
            raise RuntimeError("end_body() needs respond_stream() first")
        self._stream = _NO_STREAM
        self._current = None
        keep = self._stream_keep
        if not self._stream_head:
            if mode == _CHUNKED:
                self.write(LAST_CHUNK)
            elif mode == _COUNTED and self._stream_left:
                self.abort()
                raise ValueError(
                    f"end_body(): {self._stream_left} bytes short of the Content-Length given"
                )
            elif mode == _UNTIL_CLOSE:
                keep = False
        self._finish(keep)

    def close(self, timeout: float | None = None, *, code: int = 1000, reason: str = "") -> None:
        """Close gracefully, like :meth:`Connection.close <daemonkit.Connection.close>`.

        After a WebSocket upgrade the close goes through the WebSocket
        protocol, with *code* and *reason*; they are ignored before.
        """
        upgraded = self._upgraded
        if upgraded is not None:
            upgraded.close(code, reason, timeout)
        else:
            self._close(CloseReason.LOCAL, timeout)

    # -- the asyncio protocol interface -----------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Backend callback: set up, then wait ``header_timeout`` for the first request."""
        reactor = self._hh.reactor
        self._now = reactor.clock.now
        self._tq = reactor.timers
        super().connection_made(transport)
        if not self._closing:
            self._phase = _FRESH
            self._since = now = self._now()
            timeout = self._hh.header_timeout
            if timeout is not None:
                self._arm(now + timeout)

    def data_received(self, data: bytes) -> None:
        """Backend callback: parse requests and answer them in order."""
        framer = self._http
        if framer is None:
            Connection.data_received(self, data)  # handed over (WebSocket)
            return
        if self._closing:
            return  # closing or lingering: the input is drained and dropped
        self.bytes_in += len(data)
        now = self._now()
        if self._idle:
            self._last_read = now
        self._flushing = True
        try:
            requests = framer.feed(data)
        except FramingError as exc:
            # The client's fault: answer what came before, then the error.
            requests = exc.frames
            self._bad = exc
        if requests:
            if self._current is None and not self._queue and len(requests) == 1:
                # The common case, inlined: one request, nothing in the way.
                request = requests[0]
                if request.upgrade is None:
                    self._current = request
                    self._pumping = True  # respond() leaves the rest to us
                    try:
                        result = self._on_request(self, request)
                    except Exception as exc:
                        self._failed(request, exc)
                    else:
                        if result is not None:
                            self._returned(request, result)
                    self._pumping = False
                else:
                    self._queue.append(request)
            else:
                self._queue.extend(requests)
        pending = framer.take_continue()
        if pending is not None:
            self._continue = pending
        if self._queue or pending is not None or self._bad is not None:
            self._pump()
        if self._http is not None and not self._closing:
            if self._held or framer.paused or self._bad is not None or self._queue:
                self._flow()
            self._settle(now, bool(requests))
        self._flushing = None
        self._flush()

    def eof_received(self) -> bool:
        """Backend callback: the client half-closed.

        Ends a lingering close at once. A request being answered still gets
        its answer (then the connection closes); else as for any connection.
        """
        if self._lingering:
            self._end_linger()
            return True
        if self._http is not None and self._current is not None and not self._closing:
            if self._draining is None:
                self._draining = CloseReason.PEER_CLOSED
            return True
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        """Backend callback: the socket is closed; release the HTTP state, then as usual."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()
        self._continue = None
        super().connection_lost(exc)

    # -- internals: requests in order -------------------------------------

    def _pump(self) -> None:
        """Dispatch the held requests while nothing is being answered; then what waits."""
        queue = self._queue
        if not self._pumping:
            self._pumping = True
            try:
                while self._current is None and queue and not self._closing:
                    if self._http is None:
                        break
                    self._dispatch(queue.popleft())
            finally:
                self._pumping = False
        if self._current is None and not queue and not self._closing and self._http is not None:
            if self._continue is not None:
                # RFC 9110 10.1.1: the interim response belongs to the request
                # being read, so it goes after the answers to the ones before.
                self._continue = None
                self.write(_CONTINUE)
            if self._bad is not None:
                bad, self._bad = self._bad, None
                self._answer_error(bad)

    def _dispatch(self, request: HttpRequest) -> None:
        """Hand *request* to ``on_request`` (or to the WebSocket side)."""
        if request is self._continue:
            self._continue = None
        if request.upgrade is not None and self._hh._upgrade(self, request):
            return
        self._current = request
        try:
            result = self._on_request(self, request)
        except Exception as exc:
            self._failed(request, exc)
            return
        if result is not None:
            self._returned(request, result)

    def _returned(self, request: HttpRequest, result: object) -> None:
        """``on_request`` returned *result*: send it if it is a Response."""
        if not isinstance(result, Response):
            error: Exception = TypeError(
                f"on_request must return None or a Response, not {type(result).__name__}"
            )
        elif self._current is not request or self._stream:
            error = RuntimeError("on_request answered the request and also returned a Response")
        else:
            try:
                self.respond(result.status, result.headers, result.body)
            except Exception as exc:
                error = exc
            else:
                return
        self._failed(request, error)

    def _failed(self, request: HttpRequest, exc: Exception) -> None:
        """The handler raised while answering *request*: 500 if still possible, on_error, close."""
        if self._current is request and not self._stream and not self._closing:
            self._current = None
            self._queue.clear()
            body = b"500 Internal Server Error\n"
            self.write(encode_response(500, [_TEXT, self._hh._date()], body, keep_alive=False))
        self._hh._call_error(self, exc)
        if not self._closing:
            # The response said "Connection: close" (or one is half sent).
            self._close(CloseReason.HANDLER_ERROR)

    def _finish(self, keep: bool) -> None:
        """The current response is complete: close, or go on with the next request."""
        if not keep:
            self._queue.clear()
            if self._draining is not None:
                Connection._close(self, self._draining)
            else:
                self._linger(CloseReason.LOCAL)
            return
        if self._pumping:
            return  # the running _pump() goes on with the next one
        self._pump()
        if self._flushing is not True and self._http is not None and not self._closing:
            self._flow()
            self._settle(self._now(), True)

    def _drain_more(self, draining: CloseReason) -> bool:
        """While draining: keep the connection after this answer?

        A client that half-closed still gets the answers to every request
        it sent; a stopping daemon answers only the one in flight.
        """
        return draining is CloseReason.PEER_CLOSED and bool(self._queue)

    def _not_answering(self, what: str) -> NoReturn:
        if self._stream:
            raise RuntimeError(f"{what}(): a streamed response is in progress; end_body() first")
        raise RuntimeError(
            f"{what}(): no request is waiting for an answer on this connection "
            "(each request is answered once)"
        )

    def _decline_upgrade(self, request: HttpRequest) -> None:
        """Serve an ``Upgrade`` request as plain HTTP: parse what follows it again."""
        framer = self._http
        if framer is None or not request.keep_alive or not framer.paused:
            return
        try:
            more = framer.resume()
        except FramingError as exc:
            more = exc.frames
            self._bad = exc
        self._queue.extend(more)
        pending = framer.take_continue()
        if pending is not None:
            self._continue = pending

    def _hand_over(self, accept: Callable[..., object], request: HttpRequest, handler: Any) -> None:
        """Give the connection to the WebSocket side: ``accept(conn, request, handler, ...)``."""
        framer = self._http
        assert framer is not None
        self._http = None
        self._queue.clear()
        self._continue = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        host = self._hh
        try:
            accept(self, request, handler, host=host, trailing=framer.trailing)
        except Exception as exc:
            host._call_error(self, exc)
            if not self._closing:
                self._close(CloseReason.HANDLER_ERROR)
            return
        if self._closing:
            return
        if self._framer is framer:
            self.log.error("the WebSocket accept() kept the HTTP framer; closing")
            self._close(CloseReason.PROTOCOL_ERROR)
            return
        if self._held and self.transport is not None:
            self._held = False
            self.transport.resume_reading()

    # -- internals: reading, deadlines, closing ---------------------------

    def _flow(self) -> None:
        """Pause reading while the framer is paused, broken, or too many requests are held."""
        framer = self._http
        t = self.transport
        if framer is None or t is None or self._closing:
            return
        want = framer.paused or self._bad is not None or len(self._queue) >= MAX_PIPELINE
        if want != self._held:
            self._held = want
            if want:
                t.pause_reading()
            else:
                t.resume_reading()

    def _settle(self, now: float, fresh: bool) -> None:
        """Note what the connection waits for from *now* on, and arm its deadline.

        Costs a comparison or two per read: the timer is only (re)armed
        when the new deadline is earlier than the armed one; when it fires
        it checks the state again (see :meth:`_on_deadline`).
        """
        framer = self._http
        assert framer is not None
        hh = self._hh
        if self._current is not None or self._queue or self._stream:
            self._phase = _BUSY  # our turn: the client is not late
            return
        if not framer.buffered:
            self._phase = _IDLE
            self._since = now
            timeout = hh.keepalive_timeout
        elif framer.reading_head:
            if self._phase != _HEAD or fresh:
                self._phase = _HEAD
                self._since = now  # the head's deadline runs from its first byte
            timeout = hh.header_timeout
        else:
            self._phase = _BODY
            self._since = now  # a body may take long, but must not stall
            timeout = hh.header_timeout
        if timeout is not None:
            due = self._since + timeout
            if self._timer is None or due < self._timer_due:
                self._arm(due)

    def _arm(self, due: float) -> None:
        timer = self._timer
        if timer is not None:
            timer.cancel()
        tq = self._tq
        assert tq is not None
        self._timer_due = due
        self._timer = tq.call_at(due, self._on_deadline)

    def _on_deadline(self) -> None:
        """The deadline timer came due: act if the connection is still late, else re-arm."""
        self._timer = None
        if self._closing or self._http is None:
            return
        phase = self._phase
        if phase == _BUSY:
            return  # _settle() arms it again when the answer is sent
        hh = self._hh
        timeout = hh.keepalive_timeout if phase == _IDLE else hh.header_timeout
        if timeout is None:
            return
        due = self._since + timeout
        if self._now() < due:
            self._arm(due)
            return
        if phase == _HEAD:
            error = HttpError(f"request head not complete within header_timeout={timeout:g}s", 408)
            self._answer_error(error, CloseReason.IDLE_TIMEOUT)
        elif phase == _BODY:
            error = HttpError(f"request body stalled for header_timeout={timeout:g}s", 408)
            self._answer_error(error, CloseReason.IDLE_TIMEOUT)
        else:
            what = "no request" if phase == _FRESH else "idle keep-alive connection"
            self.log.debug("%s for %gs; closing", what, timeout)
            self._close(CloseReason.IDLE_TIMEOUT)

    def _answer_error(self, exc: FramingError, reason: CloseReason | None = None) -> None:
        """Answer the client's error *exc* with its status and ``Connection: close``, then close."""
        status = exc.status if isinstance(exc, HttpError) else 400
        phrase = _phrase(status)
        self.log.info("%s; answering %d %s and closing", exc, status, phrase)
        body = f"{status} {phrase}\n".encode()
        self.write(encode_response(status, [_TEXT, self._hh._date()], body, keep_alive=False))
        if reason is None:
            too_large = status in (413, 414, 431)
            reason = CloseReason.FRAME_TOO_LARGE if too_large else CloseReason.PROTOCOL_ERROR
        self._linger(reason)

    def _close(self, reason: CloseReason, timeout: float | None = None) -> None:
        # A stopping daemon tells a WebSocket peer it is going away (1001)
        # with the closing handshake instead of dropping TCP.
        if reason is CloseReason.SHUTDOWN and self._upgraded is not None and not self._closing:
            self._upgraded.close(1001, "going away", timeout)
            return
        # A stopping daemon closes every connection: let the request being
        # answered finish first (its response says "Connection: close").
        if (
            reason is CloseReason.SHUTDOWN
            and self._current is not None
            and self._http is not None
            and not self._closing
            and self._draining is None
        ):
            self._draining = reason
            self._held = True
            if self.transport is not None:
                self.transport.pause_reading()
            return
        super()._close(reason, timeout)

    def _linger(self, reason: CloseReason) -> None:
        """Close after a response, draining the client's input first (see the module doc).

        Closing a socket with unread input makes the kernel send a reset,
        which may destroy the response before the client reads it. So:
        send what is queued, shut the write side (the client sees the end
        of the response), drop whatever arrives, and close at the client's
        end of input or after :data:`LINGER_TIMEOUT`.
        """
        t = self.transport
        if self._closing:
            return
        if t is None or self.closed or not t.can_write_eof():
            self._close(reason)
            return
        self._closing = 1
        self._lingering = True
        x = self._extras()
        x.reason = reason
        self._cancel_flush()
        self._flush()
        t.write_eof()
        if self._held:
            self._held = False
            t.resume_reading()
        tq = self._tq
        assert tq is not None
        x.close_timer = tq.call_later(min(LINGER_TIMEOUT, self._hh.close_timeout), self._end_linger)

    def _end_linger(self) -> None:
        """Lingering is over: close for good (aborting if the client never reads)."""
        if not self._lingering:
            return
        self._lingering = False
        x = self._extras()
        if x.close_timer is not None:
            x.close_timer.cancel()
            x.close_timer = None
        t = self.transport
        if t is None or self.closed:
            return
        t.close()
        if t.get_write_buffer_size():
            x.close_timer = self._hh.reactor.call_later(
                self._hh.close_timeout, self._on_close_deadline
            )


def _zero() -> float:
    """The clock before the connection is made."""
    return 0.0
