"""HTTP/1.1, client side: requests out, responses in.

The mirror of :mod:`daemonkit.framing.http` for a client (the bots):
:func:`encode_request` builds the bytes of a request and
:class:`HttpResponseFramer` turns what a server sends back into
:class:`HttpResponse` objects. Sans-IO like every framer: no socket, clock
or logger.

How the work is shared, as on the server side: llhttp (through
``httptools``, the binding the server framer uses) checks the syntax of each
response *head* (status line, field names and values, ``Content-Length``
digits), fed exactly one head at a time; this module finds the boundaries
itself (the end of the head, of a ``Content-Length`` body, of a chunked
body, or the end of the stream), so every limit is exact and the split of
the stream into reads changes nothing.

Rules this framer keeps beyond the :mod:`~daemonkit.framing.base` contract:

* ``feed()`` returns :class:`HttpResponse` objects, not ``bytes``; interim
  ``1xx`` responses other than ``101`` are skipped.
* Responses are matched to requests in order: :meth:`HttpResponseFramer.encode`
  (or :meth:`~HttpResponseFramer.expect`) notes each request's method, so the
  answer to a ``HEAD`` is read without a body, as RFC 9112 6.3 says.
* A response without ``Content-Length`` or chunked coding runs until the
  server closes: :meth:`~HttpResponseFramer.feed_eof` completes it.
* After a ``101 Switching Protocols`` the framer *pauses*: the bytes after
  the head are kept in :attr:`~HttpResponseFramer.trailing`, for the new
  protocol.
* Errors are :class:`HttpResponseError` (a
  :class:`~daemonkit.errors.ProtocolError`): the server's fault; close the
  connection. ``frames`` holds the responses completed before the bad input.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from typing import Any

from daemonkit.errors import ConfigError, ProtocolError
from daemonkit.framing.base import Framer, _to_bytes
from daemonkit.framing.http import (
    _NAME_KINDS,
    DEFAULT_MAX_HEAD,
    DEFAULT_MAX_HEADERS,
    MAX_CHUNK_LINE,
    _decode_fields,
    _name_kind,
)

try:
    import httptools
except ImportError as _missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        "daemonkit.framing.http_client needs httptools: pip install 'httptools>=0.6.4'"
    ) from _missing

__all__ = [
    "DEFAULT_MAX_RESPONSE_BODY",
    "HttpResponse",
    "HttpResponseError",
    "HttpResponseFramer",
    "encode_request",
]

# The server's request body cap is nginx's 1 MiB; responses are legitimately
# larger (pages, downloads) yet a bots process holds thousands of them at once.
# curl and Go's http.Client have no cap at all; 16 MiB is a compromise, raise it
# per bot class (HttpBot.max_response_body) for a download test.
DEFAULT_MAX_RESPONSE_BODY = 16 * 1024 * 1024
"""Largest response body read, in bytes, after chunked decoding."""

_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_EOF, _PAUSED = range(8)
_NO_BODY_STATUS = frozenset({204, 304})
_CR = 13
_LF = 10


class HttpResponseError(ProtocolError):
    """The server's response is malformed or over a limit: close the connection.

    ``frames`` lists the responses completed before the bad input.
    """


class HttpResponse:
    """One complete response, as :meth:`HttpResponseFramer.feed` returns it.

    * ``status``: the status code (``200``); ``reason``: its phrase as sent.
    * ``version``: ``"1.1"`` or ``"1.0"``.
    * ``headers``: ``(name, value)`` pairs in order, names lower-cased,
      values ISO-8859-1 decoded without surrounding whitespace. Decoded on
      first access, so a bot that never looks at them does not pay for them.
    * ``body``: the body, chunked decoding done; ``b""`` if none.
    * ``keep_alive``: whether the connection carries another request (false
      for ``Connection: close`` and an HTTP/1.0 response without
      ``Connection: keep-alive``, and for a body read until the close).
    """

    __slots__ = ("_fields", "_headers", "body", "keep_alive", "reason", "status", "version")

    def __init__(
        self,
        status: int,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        *,
        reason: str = "",
        version: str = "1.1",
        keep_alive: bool = True,
        _fields: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Build a response; *_fields* is for the framer (raw fields, decoded on demand)."""
        self.status = status
        self._headers = headers if headers is not None or _fields is not None else []
        self._fields = _fields
        self.body = body
        self.reason = reason
        self.version = version
        self.keep_alive = keep_alive

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The header fields, ``(lower-cased name, value)`` in order."""
        headers = self._headers
        if headers is None:
            headers = self._headers = _decode_fields(self._fields or [])
            self._fields = None
        return headers

    @property
    def ok(self) -> bool:
        """True for a status below 400 (not a client or server error)."""
        return self.status < 400

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (invalid bytes replaced)."""
        return self.body.decode("utf-8", "replace")

    def header(self, name: str, default: str | None = None) -> str | None:
        """The value of the header field *name* (any case), or *default*.

        Repeated fields are joined with ``", "`` (RFC 9110 5.3).
        """
        key = name.lower()
        values = [value for field, value in self.headers if field == key]
        if not values:
            return default
        return values[0] if len(values) == 1 else ", ".join(values)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HttpResponse):
            return NotImplemented
        return self._key() == other._key()

    def _key(self) -> tuple[Any, ...]:
        return (self.status, self.headers, self.body, self.reason, self.version, self.keep_alive)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<HttpResponse {self.status} {self.reason!r} body={len(self.body)} bytes>"


def _check_limit(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}")
    return value


class HttpResponseFramer(Framer):
    """Frames are the :class:`HttpResponse` objects of an HTTP/1.x response stream.

    Settings, whole numbers at least 1 (else :class:`~daemonkit.errors.ConfigError`):
    *max_head* (longest response head, bytes), *max_headers* (most header
    fields), *max_body* (largest body, bytes, after chunked decoding).

    :meth:`encode` takes the bytes of a request built by
    :func:`encode_request` and notes its method (so a ``HEAD`` is answered
    without a body). Bytes that do not start with a method are refused
    (:class:`TypeError`); call :meth:`expect` before writing them yourself.

    How llhttp stays in step: one parser reads every head and is fed each
    ``Content-Length`` body too, so after such a response it waits for the
    next head, as after a response without a body; after any other response
    (to a ``HEAD``, chunked, read until the close) a new parser is made.
    """

    __slots__ = (
        "_body",
        "_body_size",
        "_chunk_left",
        "_fields",
        "_framing",
        "_keep_alive",
        "_max_body",
        "_max_head",
        "_max_headers",
        "_methods",
        "_parser",
        "_reason",
        "_response",
        "_scan",
        "_state",
        "_trailing",
    )

    def __init__(
        self,
        *,
        max_head: int = DEFAULT_MAX_HEAD,
        max_headers: int = DEFAULT_MAX_HEADERS,
        max_body: int = DEFAULT_MAX_RESPONSE_BODY,
    ) -> None:
        max_head = _check_limit("max_head", max_head)
        max_headers = _check_limit("max_headers", max_headers)
        max_body = _check_limit("max_body", max_body)
        super().__init__(max_head=max_head, max_headers=max_headers, max_body=max_body)
        self._max_head = max_head
        self._max_headers = max_headers
        self._max_body = max_body
        self._state = _HEAD
        # Where the search for the end of a buffered head resumes (no rescanning).
        self._scan = 0
        self._methods: collections.deque[str] = collections.deque()
        self._parser: Any = None
        # The head llhttp is reading: its raw fields, reason phrase, and the
        # values of the fields that frame the body (Content-Length, Transfer-Encoding).
        self._fields: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._framing: list[bytes | None] = [None, None]
        self._keep_alive = True
        self._response: HttpResponse | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self._chunk_left = 0
        self._trailing = b""

    @property
    def paused(self) -> bool:
        """True after a ``101`` response: the rest of the stream is :attr:`trailing`."""
        return self._state == _PAUSED

    @property
    def trailing(self) -> bytes:
        """The bytes after a ``101`` response's head (the new protocol's)."""
        return self._trailing

    @property
    def buffered(self) -> int:
        """Bytes of the incomplete response held or read so far."""
        if self._error is not None or self._state == _PAUSED:
            return 0
        return len(self._buffer) + self._body_size

    def expect(self, method: str) -> None:
        """Note that a request with *method* was sent (encode() does it for you)."""
        self._methods.append(method)

    def encode(self, frame: Any) -> bytes:
        """Return the request bytes *frame* unchanged, noting its method.

        Build *frame* with :func:`encode_request`. Raises :class:`TypeError`
        for anything that is not the bytes of a request.
        """
        data = frame if type(frame) is bytes else _to_bytes(frame)
        space = data.find(b" ", 0, 24)
        if space <= 0:
            raise TypeError("encode() takes the bytes of a request (see encode_request)")
        self._methods.append(data[:space].decode("ascii"))
        return data

    # -- llhttp's callbacks ---------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        """llhttp callback: (part of) the reason phrase."""
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        """llhttp callback: one header field; notes those that frame the body."""
        fields = self._fields
        fields.append((name, value))
        if len(name) in (14, 17):
            lower = name.lower()
            if lower == b"content-length":
                self._framing[0] = value
            elif lower == b"transfer-encoding":
                self._framing[1] = value

    def on_headers_complete(self) -> None:
        """llhttp callback: the head is read; whether the connection stays open is known.

        Read here, not after ``feed_data``: once a message without a body
        (``Content-Length: 0``) is complete, llhttp has reset its flags for
        the next one and would say the connection ends.
        """
        self._keep_alive = bool(self._parser.should_keep_alive())

    # -- reading ------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Any]:
        """Append *data*; return the responses it completes, in order.

        Raises :class:`HttpResponseError` for a malformed response or one
        over a limit; its ``frames`` are the responses before it. After a
        ``101`` response the rest goes to :attr:`trailing`.
        """
        if self._error is not None or type(data) is not bytes:
            data = self._checked_input(data)
        state = self._state
        if state == _PAUSED:
            self._trailing += data
            return []
        out: list[Any] = []
        buf = self._buffer
        if buf:
            # A partial head or chunk line waits for its end (both bounded).
            buf += data
            try:
                if not self._line_ends(buf, state):
                    return out
            except HttpResponseError as exc:
                self._fail(exc, out)
            data = bytes(buf)
            buf.clear()
        try:
            self._run(data, out)
        except HttpResponseError as exc:
            self._fail(exc, out)
        return out

    def feed_eof(self) -> list[Any]:
        """The server closed: return the response whose body ran until the close, if any.

        Raises :class:`HttpResponseError` if the stream ended inside a
        response that was to end otherwise.
        """
        if self._error is not None:
            self._raise_broken()
        if self._state == _UNTIL_EOF:
            out: list[Any] = []
            self._complete(out)
            return out
        if self._state not in (_HEAD, _PAUSED) or self._buffer:
            self._fail(HttpResponseError("the server closed in the middle of a response"), [])
        return []

    def _line_ends(self, buf: bytearray, state: int) -> bool:
        """Whether the buffered head (or chunk line) is complete; raise if over its limit."""
        if state == _HEAD:
            end = buf.find(b"\r\n\r\n", self._scan)
            limit, what = self._max_head, f"response head longer than max_head={self._max_head}"
        else:
            end = buf.find(b"\r\n", self._scan)
            limit, what = MAX_CHUNK_LINE, f"chunk line longer than {MAX_CHUNK_LINE} bytes"
        if end < 0 and len(buf) > limit:
            raise HttpResponseError(what)
        if end < 0:
            self._scan = max(0, len(buf) - 3)
            return False
        self._scan = 0
        return True

    def _run(self, data: bytes, out: list[Any]) -> None:
        """Read *data* from its start; a partial head or chunk line is buffered."""
        pos = 0
        n = len(data)
        while pos < n:
            state = self._state
            if state == _HEAD:
                while pos < n and data[pos] in (_CR, _LF):
                    pos += 1  # empty lines before a status line, as before a request
                end = data.find(b"\r\n\r\n", pos)
                if end < 0:
                    if n - pos > self._max_head:
                        raise HttpResponseError(
                            f"response head longer than max_head={self._max_head}"
                        )
                    self._buffer += data[pos:]
                    return
                stop = end + 4
                if stop - pos > self._max_head:
                    raise HttpResponseError(f"response head longer than max_head={self._max_head}")
                self._head(data[pos:stop] if pos or stop != n else data, out)
                pos = stop
                if self._state == _PAUSED:
                    self._trailing = data[pos:]
                    return
            elif state in (_BODY, _CHUNK_DATA):
                take = min(self._chunk_left, n - pos)
                part = data if take == n and not pos else data[pos : pos + take]
                pos += take
                self._chunk_left -= take
                self._body.append(part)
                self._body_size += take
                if state == _BODY:
                    self._parser.feed_data(part)  # keeps llhttp in step
                    if not self._chunk_left:
                        self._complete(out)
                elif not self._chunk_left:
                    self._state = _CHUNK_END
            elif state == _UNTIL_EOF:
                self._add_body(data[pos:] if pos else data)
                return
            else:
                end = data.find(b"\r\n", pos)
                if end < 0:
                    if n - pos > MAX_CHUNK_LINE:
                        raise HttpResponseError(f"chunk line longer than {MAX_CHUNK_LINE} bytes")
                    self._buffer += data[pos:]
                    return
                line = data[pos:end]
                pos = end + 2
                self._chunk_line(line, out)

    def _chunk_line(self, line: bytes, out: list[Any]) -> None:
        state = self._state
        if state == _CHUNK_END:
            if line:
                raise HttpResponseError("chunk data not followed by CRLF")
            self._state = _CHUNK_SIZE
        elif state == _CHUNK_SIZE:
            size_text = line.split(b";", 1)[0].strip()
            try:
                if not size_text or size_text.startswith((b"-", b"+", b"0x", b"0X")):
                    raise ValueError
                size = int(size_text, 16)
            except ValueError:
                raise HttpResponseError(f"bad chunk size line {line[:40]!r}") from None
            if size == 0:
                self._state = _TRAILER
                return
            if self._body_size + size > self._max_body:
                raise HttpResponseError(f"response body larger than max_body={self._max_body}")
            self._chunk_left = size
            self._state = _CHUNK_DATA
        elif not line:  # _TRAILER: the empty line ends the trailer section
            self._complete(out)

    def _add_body(self, part: bytes) -> None:
        if self._body_size + len(part) > self._max_body:
            raise HttpResponseError(f"response body larger than max_body={self._max_body}")
        self._body.append(part)
        self._body_size += len(part)

    def _head(self, head: bytes, out: list[Any]) -> None:
        """Parse one whole head with llhttp and set up the reading of its body."""
        parser = self._parser
        if parser is None:
            parser = self._parser = httptools.HttpResponseParser(self)
        fields: list[tuple[bytes, bytes]] = []
        self._fields = fields
        self._reason = b""
        framing = self._framing
        framing[0] = framing[1] = None
        self._keep_alive = True
        try:
            parser.feed_data(head)
        except httptools.HttpParserUpgrade:
            pass  # a 101: llhttp hands the rest over, as this framer does
        except httptools.HttpParserError as exc:
            # llhttp pauses after a 101's head ("Pause on CONNECT/Upgrade").
            if not str(exc).startswith("Pause on"):
                raise HttpResponseError(f"malformed response head: {exc}") from None
        if len(fields) > self._max_headers:
            raise HttpResponseError(f"more than max_headers={self._max_headers} header fields")
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # interim (100 Continue, 103 Early Hints): the final one follows
        response = self._response = HttpResponse(
            status,
            None,
            reason=self._reason.decode("latin1"),
            version=parser.get_http_version(),
            keep_alive=self._keep_alive,
            _fields=fields,
        )
        method = self._methods.popleft() if self._methods else "GET"
        length, coding = framing
        if status == 101:
            self._complete(out)
            self._state = _PAUSED
            self._parser = None
        elif method == "HEAD" or status in _NO_BODY_STATUS:
            self._parser = None  # llhttp may wait for the body a HEAD's answer announces
            self._complete(out)
        elif coding is not None:
            self._parser = None
            if coding.split(b",")[-1].strip().lower() != b"chunked":
                # RFC 9112 6.3: a final coding other than chunked runs to the close.
                response.keep_alive = False
                self._state = _UNTIL_EOF
            else:
                self._state = _CHUNK_SIZE
        elif length is not None:
            # llhttp has checked the digits and refused a second, different value.
            size = int(length)
            if size > self._max_body:
                raise HttpResponseError(
                    f"Content-Length {size} larger than max_body={self._max_body}"
                )
            if size:
                self._chunk_left = size
                self._state = _BODY
            else:
                self._complete(out)
        else:
            self._parser = None
            response.keep_alive = False
            self._state = _UNTIL_EOF

    def _complete(self, out: list[Any]) -> None:
        response = self._response
        assert response is not None
        parts = self._body
        if parts:
            response.body = parts[0] if len(parts) == 1 else b"".join(parts)
            self._body = []
            self._body_size = 0
        if self._state == _UNTIL_EOF:
            response.keep_alive = False
        self._response = None
        self._state = _HEAD
        out.append(response)


def encode_request(
    method: str,
    target: str,
    *,
    host: str,
    headers: Iterable[tuple[str, str]] | Mapping[str, str] = (),
    body: bytes = b"",
) -> bytes:
    """Return the bytes of an HTTP/1.1 request.

    *target* is sent as given (``/path?query``, already percent-encoded);
    *host* is the ``Host`` field (``host:port``). ``content-length`` is
    added for a body (or a method that takes one) unless *headers* have a
    ``Content-Length`` or ``Transfer-Encoding``. Header names must be tokens
    and values free of CR, LF and NUL (:class:`ValueError`: no injection).
    """
    if not method or not method.isascii() or not method.isalpha() or not method.isupper():
        raise ValueError(f"invalid method {method!r}: upper-case letters only")
    if not target or any(c in target for c in " \r\n\x00"):
        raise ValueError(f"invalid request target {target!r}")
    lines = [f"{method} {target} HTTP/1.1\r\nhost: {host}\r\n"]
    framed = False
    if isinstance(headers, Mapping):
        headers = headers.items()
    for name, value in headers:
        kind = _NAME_KINDS.get(name)
        if kind is None:
            kind = _name_kind(name)
        if kind & 3:  # Content-Length or Transfer-Encoding: the caller frames the body
            framed = True
        if type(value) is not str:
            value = str(value) if type(value) is int else _bad_value(value)
        if "\r" in value or "\n" in value or "\x00" in value:
            raise ValueError(f"header {name!r} value contains CR, LF or NUL")
        lines.append(f"{name}: {value}\r\n")
    body = _to_bytes(body)
    if not framed and (body or method in ("POST", "PUT", "PATCH")):
        lines.append(f"content-length: {len(body)}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin1") + body


def _bad_value(value: object) -> str:
    raise TypeError(f"header values must be str (or int), got {value!r}")
