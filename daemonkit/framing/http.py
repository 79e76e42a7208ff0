"""HTTP/1.1, server side: requests in, responses out.

:class:`HttpRequestFramer` turns the bytes a client sends into
:class:`HttpRequest` objects; :func:`encode_response`, :func:`encode_chunk`
and :func:`encode_continue` build the bytes to send back. Like every framer
it is sans-IO: no socket, clock or logger, so the daemon, the tests and the
fuzzers drive the same code.

The parser is llhttp (Node's), through ``httptools``, the binding uvicorn
uses, chosen by measurement: 100,000 small GET requests (5 headers),
pipelined 16 per chunk, CPython 3.11, best of 5 (a throwaway script):
httptools 0.9 with bare callbacks 850,000 requests/s (1.2 us each); h11
0.16 28,000/s (36 us; 49,000/s without the response cycle it needs between
pipelined requests); this framer 415,000/s (2.4 us, request objects and
all limits included; 500,000/s for one-header requests one per read).
A C parser is 20-30 times faster, so there is no pure-Python fallback:
without ``httptools`` the import fails with a message saying what to
install.

How the two share the work. llhttp checks the syntax (methods, URL and
token characters, the version, ``Content-Length`` digits, chunk framing),
in C, in strict mode. This module finds the *boundaries* itself (the end of
the head, of a ``Content-Length`` body, of a chunked body) and feeds llhttp
exactly one request at a time, which buys three things llhttp alone cannot
give: exact limits (the head is measured in bytes, not in callback bytes),
the bytes after a ``Connection: close`` or upgrade request kept intact in
:attr:`HttpRequestFramer.trailing`, and errors that do not depend on how the
stream was split. Every check runs at a fixed position of the stream, after
llhttp has accepted the bytes before it, so the first bad byte decides the
error, whatever the reads were.

Rules this framer keeps beyond the :mod:`~daemonkit.framing.base` contract:

* ``feed()`` returns :class:`HttpRequest` objects, not ``bytes``.
* A request carries one valid ``Host`` field (RFC 9112 3.2): an HTTP/1.1
  request without one, any request with two, or a value that is not RFC
  3986 ``host[:port]`` is a 400, whatever the target's form.
* Errors are :class:`HttpError` (a :class:`~daemonkit.errors.ProtocolError`)
  with the ``status`` to answer with before closing: 400, 413, 414, 431,
  501 or 505. ``frames`` holds the requests completed before the bad input.
* After a request that ends the HTTP stream (``Connection: close``, HTTP/1.0
  without keep-alive, or an upgrade) the framer *pauses*: it parses nothing
  more and keeps the bytes in :attr:`~HttpRequestFramer.trailing`.
* A request whose head says ``Expect: 100-continue`` and whose body has not
  all arrived is announced by :meth:`~HttpRequestFramer.take_continue`.
* Empty lines (CR, LF) before a request line are skipped, as RFC 9112 2.2
  allows; they count towards no limit and are never buffered.
* Buffering is linear: partial lines are appended to, never rescanned;
  bodies are collected in parts and joined once. (httptools joins a header
  name or value split across reads with ``bytes +=``, which is quadratic
  in its length; ``max_head`` bounds it.)
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final, NoReturn
from urllib.parse import unquote

from mypy_extensions import mypyc_attr

from daemonkit.errors import ConfigError, ProtocolError
from daemonkit.framing.base import BytesLike, Framer, _to_bytes

try:
    import httptools
except ImportError as _missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        "daemonkit.framing.http needs httptools, the llhttp binding: pip install 'httptools>=0.6.4'"
    ) from _missing

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_HEAD",
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_TARGET",
    "LAST_CHUNK",
    "MAX_CHUNK_LINE",
    "HttpError",
    "HttpRequest",
    "HttpRequestFramer",
    "encode_chunk",
    "encode_continue",
    "encode_response",
]

# -- limits ------------------------------------------------------------------

# Node's --max-http-header-size and h11's max_incomplete_event_size are both
# 16 KiB (nginx: large_client_header_buffers 4 x 8k, one line per buffer).
DEFAULT_MAX_HEAD = 16 * 1024
"""Longest request head (request line, header lines, empty line), in bytes."""

# Apache's LimitRequestFields and CPython's http.server (http.client's
# _MAXHEADERS) both stop at 100 header fields.
DEFAULT_MAX_HEADERS = 100
"""Most header fields in a request head (and, separately, in its trailers)."""

# nginx's client_max_body_size is 1 MiB.
DEFAULT_MAX_BODY = 1024 * 1024
"""Largest request body, in bytes, after chunked decoding."""

# Apache's LimitRequestLine is 8190 bytes and nginx answers 414 when the
# request line outgrows an 8k buffer; RFC 9112 3 asks for at least 8000.
DEFAULT_MAX_TARGET = 8 * 1024
"""Longest request target (``/path?query``), in bytes."""

# Node bounds chunk extensions to 16 KiB (kMaxChunkExtensionsSize, the
# CVE-2024-22019 fix): without it a peer streams extension bytes that no
# body limit counts. Here the whole size line is bounded.
MAX_CHUNK_LINE = 16 * 1024
"""Longest chunk-size line (size and extensions, CRLF excluded), in bytes."""

# Room on the request line around the target: method, two spaces, version.
_LINE_SLACK = 64

# -- errors and requests -------------------------------------------------------


class HttpError(ProtocolError):
    """The client's request is malformed or over a limit.

    ``status`` is the response to send before closing the connection: 400
    (malformed), 413 (body too large), 414 (target too long), 431 (head too
    large or too many headers), 501 (a transfer coding or method this server
    does not implement) or 505 (an HTTP version other than 1.0 and 1.1).
    ``frames`` lists the requests completed before the bad input in the same
    ``feed()`` call: answer those first, then the error, then close.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class HttpRequest:
    """One complete request, as :meth:`HttpRequestFramer.feed` returns it.

    * ``method``: ``"GET"``, ``"POST"``... as sent (llhttp knows the methods).
    * ``target``: the request target exactly as sent (``/a%20b?x=1``).
    * ``path``: the target's path, percent-decoded as UTF-8 (``/a b``); for
      an absolute-form target (``http://host/a``) its path part, and ``*``
      for ``OPTIONS *``. Computed from ``target`` on each access.
    * ``query``: the part after ``?``, still encoded; ``""`` if none.
      Computed from ``target`` on each access.
    * ``version``: ``"1.0"`` or ``"1.1"``.
    * ``headers``: ``(name, value)`` pairs in order, names lower-cased,
      values ISO-8859-1 decoded without surrounding whitespace, repeated
      fields kept apart. Decoded from llhttp's bytes on first access, so a
      handler that never looks at them does not pay for them.
    * ``body``: the body, chunked decoding done; ``b""`` if none.
    * ``keep_alive``: whether the connection may carry another request
      (HTTP/1.1 unless ``Connection: close``, HTTP/1.0 only with
      ``Connection: keep-alive``). When false the framer has paused.
    * ``expect_continue``: an HTTP/1.1 request with a body and
      ``Expect: 100-continue``.
    * ``upgrade``: the lower-cased ``Upgrade`` value (``"websocket"``) when
      the request asks to switch protocols (``Connection: upgrade`` and
      ``Upgrade``), else ``None``. Its body, if any, has been read like any
      other (the protocol switches after the whole request, RFC 9110 7.8);
      the framer has paused after it.
    * ``trailers``: the trailer fields of a chunked body, like ``headers``.

    Requests compare equal when all of the above are equal.
    """

    __slots__ = (
        "_fields",
        "_headers",
        "body",
        "expect_continue",
        "keep_alive",
        "method",
        "target",
        "trailers",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: str,
        version: str = "1.1",
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        keep_alive: bool = True,
        expect_continue: bool = False,
        upgrade: str | None = None,
        trailers: Sequence[tuple[str, str]] = (),
        _fields: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Build a request; *_fields* is for the framer (raw fields, decoded on demand)."""
        self.method = method
        self.target = target
        self.version = version
        self._headers = headers
        self._fields = _fields
        self.body = body
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.upgrade = upgrade
        self.trailers = trailers

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The header fields, ``(lower-cased name, value)`` in order."""
        headers = self._headers
        if headers is None:
            fields = self._fields
            headers = self._headers = _decode_fields(fields) if fields else []
            self._fields = None
        return headers

    @headers.setter
    def headers(self, value: list[tuple[str, str]]) -> None:
        self._headers = value
        self._fields = None

    @property
    def path(self) -> str:
        """The target's path, percent-decoded; see the class documentation."""
        target = self.target
        if "%" in target or "#" in target or target[:1] != "/":
            return _split_target(target)[0]
        return target.partition("?")[0]

    @property
    def query(self) -> str:
        """The target's query, after ``?``, still percent-encoded; ``""`` if none."""
        target = self.target
        if "#" in target or target[:1] != "/":
            return _split_target(target)[1]
        return target.partition("?")[2]

    def header(self, name: str, default: str | None = None) -> str | None:
        """Return the value of the header field *name* (any case), or *default*.

        Repeated fields are joined with ``", "`` as RFC 9110 5.3 allows
        (which is wrong for ``Set-Cookie``: read ``headers`` for that one).
        """
        key = name.lower()
        values = [value for field_name, value in self.headers if field_name == key]
        if not values:
            return default
        return values[0] if len(values) == 1 else ", ".join(values)

    def _key(self) -> tuple[Any, ...]:
        return (
            self.method,
            self.target,
            self.version,
            self.headers,
            self.body,
            self.keep_alive,
            self.expect_continue,
            self.upgrade,
            list(self.trailers),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HttpRequest):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        extras = "".join(
            f", {name}={value!r}"
            for name, value, default in (
                ("body", self.body, b""),
                ("keep_alive", self.keep_alive, True),
                ("expect_continue", self.expect_continue, False),
                ("upgrade", self.upgrade, None),
                ("trailers", list(self.trailers), []),
            )
            if value != default
        )
        return (
            f"HttpRequest({self.method!r}, {self.target!r}, {self.version!r}, "
            f"headers={self.headers!r}{extras})"
        )


def _decode_fields(fields: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Decode llhttp's raw fields: names lower-cased, values without trailing whitespace.

    llhttp drops the whitespace before a value, not the whitespace after it
    (RFC 9110 5.5 excludes both from the value).
    """
    return [
        (name.lower().decode("latin1"), value.rstrip().decode("latin1")) for name, value in fields
    ]


# -- the framer -----------------------------------------------------------------

# What the framer is reading. Values are small ints for cheap comparisons.
# (Final, here and below: compiled, a constant is inlined or kept in a C
# variable instead of being looked up in the module's dict on each use.)
_HEAD: Final = 0
_BODY: Final = 1
_CHUNK_SIZE: Final = 2
_CHUNK_DATA: Final = 3
_TRAILER: Final = 4
_PAUSED: Final = 5

_EMPTY_LINES: Final = re.compile(rb"[\r\n]*")
_VERSION_ENDS: Final = (b" HTTP/1.1\r", b" HTTP/1.0\r")
_OTHER_VERSION: Final = re.compile(rb" HTTP/[0-9]\.[0-9]\r\Z")
_V11: Final = "1.1"
_V10: Final = "1.0"
_ONE: Final = 49  # ord("1")
_CR: Final = 13
_LF: Final = 10
# llhttp's method names (bytes) as str; llhttp knows a fixed set of methods.
_METHODS: Final[dict[bytes, str]] = {}
# llhttp reasons that mean "a version this server does not speak".
_VERSION_REASONS = ("Invalid HTTP version", "Pause on PRI/Upgrade")
# A Host field value (RFC 9112 3.2, RFC 9110 7.2): RFC 3986 host [":" port],
# the host an IP-literal in brackets (IPv6, checked again by _valid_host, or
# IPvFuture) or a reg-name, which also matches an IPv4 address; possibly
# empty. No userinfo, path or whitespace inside.
_REG_NAME = rb"[-A-Za-z0-9._~!$&'()*+,;=]*(?:%[0-9A-Fa-f]{2}[-A-Za-z0-9._~!$&'()*+,;=]*)*"
_IP_LITERAL = rb"\[(?:[0-9A-Fa-f:.]+|[vV][0-9A-Fa-f]+\.[-A-Za-z0-9._~!$&'()*+,;=:]+)\]"
_HOST = re.compile(rb"(?:%b|%b)(?::[0-9]*)?" % (_IP_LITERAL, _REG_NAME))
# A synthetic head fed to llhttp to read the body of an upgrade request
# (see HttpRequestFramer._read_upgrade_body); %d is the Content-Length.
_REPLAY_LENGTH = b"PUT / HTTP/1.1\r\nContent-Length: %d\r\n\r\n"
_REPLAY_CHUNKED = b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"


def _method(raw: bytes) -> str:
    """Return llhttp's method name *raw* as str, remembered; 501 for CONNECT."""
    if raw == b"CONNECT":
        # llhttp would hand the connection over as for an upgrade.
        raise HttpError("CONNECT is not supported: this is not a proxy", 501)
    method = _METHODS[raw] = raw.decode("ascii")
    return method


def _valid_host(value: bytes) -> bool:
    """Return whether *value* (OWS stripped) is a valid Host field value."""
    if _HOST.fullmatch(value) is None:
        return False
    if value[:1] != b"[" or value[1:2] in (b"v", b"V"):
        return True
    # The regex let any hex digits, colons and dots through the brackets.
    try:
        ipaddress.IPv6Address(value[1 : value.index(b"]")].decode("ascii"))
    except ValueError:
        return False
    return True


def _host_error(count: int, value: bytes, version: str) -> HttpError:
    """Return the 400 for a head with *count* Host fields, the last one *value*."""
    why = "RFC 9112 3.2"
    if not count:
        return HttpError(f"HTTP/{version} request without a Host header field ({why} requires one)")
    if count > 1:
        return HttpError(f"{count} Host header fields in one request ({why} allows one)")
    text = value.decode("latin1")
    shown = repr(text) if len(text) <= 60 else repr(text[:60]) + "..."
    return HttpError(f"invalid Host header field {shown}: not host[:port] ({why}, RFC 3986 3.2.2)")


def _check_limit(name: str, value: Any) -> int:
    """Return *value* as an int; ConfigError (a ValueError) if below 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}")
    return value


@mypyc_attr(allow_interpreted_subclasses=True)
class HttpRequestFramer(Framer):
    """Frames are the :class:`HttpRequest` objects of an HTTP/1.x request stream.

    Settings, each a whole number at least 1 (else
    :class:`~daemonkit.errors.ConfigError`):

    * *max_head*: longest request head in bytes, from the request line to
      the empty line included (431). Trailers get the same bound.
    * *max_headers*: most header fields (431); trailers get as many again.
    * *max_body*: largest body in bytes, chunked or not (413): refused as
      soon as ``Content-Length`` or a chunk-size line says so.
    * *max_target*: longest request target in bytes (414). A request line
      longer than ``max_target + 64`` is refused before it ends.

    Pipelining: one ``feed()`` may return several requests; answer them in
    order. Three things to check after each ``feed()``:

    * :meth:`take_continue`: a request's head asked for
      ``Expect: 100-continue`` and its body is still to come. After
      answering the requests returned so far, send :func:`encode_continue`
      (or a final response such as 417, then close).
    * :attr:`paused`: the last request returned ends the HTTP stream (its
      ``keep_alive`` is false, or its ``upgrade`` is set). Nothing more is
      parsed; the bytes after it are in :attr:`trailing`: ignore them and
      close after the response, or hand them to the upgraded protocol after
      the ``101`` response. To decline an upgrade and carry on with HTTP
      instead, call :meth:`resume`.
    * :class:`HttpError`: answer ``exc.frames``, then ``exc.status``, then
      close. The framer is broken from then on.

    :meth:`encode` passes already-encoded response bytes through unchanged
    (like :class:`~daemonkit.framing.Raw`), so ``conn.send()`` works with
    the output of :func:`encode_response`; it builds nothing itself.
    """

    __slots__ = (
        "_body_left",
        "_body_parts",
        "_body_total",
        "_continue",
        "_fields",
        "_good_host",
        "_head_len",
        "_host",
        "_hosts",
        "_in_head",
        "_line_open",
        "_max_body",
        "_max_head",
        "_max_headers",
        "_max_line",
        "_max_target",
        "_out",
        "_parser",
        "_paused_by",
        "_request",
        "_seam",
        "_seen",
        "_state",
        "_stop",
        "_trailing",
        "_upgrade_body",
        "_url",
        "_version",
    )

    def __init__(
        self,
        *,
        # Any: checked by _check_limit, so that True or 1.5 get the same
        # TypeError compiled (where an int annotation converts True to 1).
        max_head: Any = DEFAULT_MAX_HEAD,
        max_headers: Any = DEFAULT_MAX_HEADERS,
        max_body: Any = DEFAULT_MAX_BODY,
        max_target: Any = DEFAULT_MAX_TARGET,
    ) -> None:
        self._max_head = _check_limit("max_head", max_head)
        self._max_headers = _check_limit("max_headers", max_headers)
        self._max_body = _check_limit("max_body", max_body)
        self._max_target = _check_limit("max_target", max_target)
        super().__init__(
            max_head=self._max_head,
            max_headers=self._max_headers,
            max_body=self._max_body,
            max_target=self._max_target,
        )
        self._max_line = self._max_target + _LINE_SLACK
        self._parser = httptools.HttpRequestParser(self)
        self._state = _HEAD
        # The head being read: bytes of it seen so far (0 before its first
        # byte), whether the request line is still open (its bytes are then
        # in self._buffer), the last 3 bytes seen (to find an empty line
        # split across reads), and whether llhttp has not finished it yet.
        self._head_len = 0
        self._line_open = True
        self._seam = b""
        self._in_head = True
        self._version: str | None = None
        self._url: list[bytes] = []
        # The raw (name, value) pairs of the head, then of the trailers.
        self._fields: list[tuple[bytes, bytes]] = []
        self._request: HttpRequest | None = None
        self._body_parts: list[bytes] = []
        self._body_left = 0
        self._body_total = 0
        self._continue: HttpRequest | None = None
        self._stop = False
        self._paused_by: HttpRequest | None = None
        # The Host fields of the head being read: how many, the last one;
        # and the last value found valid (a client sends the same one on
        # every request: a comparison instead of a regex). "" is valid.
        self._hosts = 0
        self._host = b""
        self._good_host = b""
        # An upgrade request's body is being read: see _read_upgrade_body.
        self._upgrade_body = False
        self._trailing = bytearray()
        # Bytes of the current request fed to llhttp; the requests completed
        # in the current feed() call.
        self._seen = 0
        self._out: list[HttpRequest] = []

    # -- public state ----------------------------------------------------------

    @property
    def max_head(self) -> int:
        """Longest request head accepted, in bytes."""
        return self._max_head

    @property
    def max_headers(self) -> int:
        """Most header fields accepted in a head (and in trailers)."""
        return self._max_headers

    @property
    def max_body(self) -> int:
        """Largest request body accepted, in bytes."""
        return self._max_body

    @property
    def max_target(self) -> int:
        """Longest request target accepted, in bytes."""
        return self._max_target

    @property
    def buffered(self) -> int:
        """Bytes of the incomplete request received so far (0 when paused or broken).

        This is how far into the request the stream is, not the memory it
        takes: llhttp keeps the head as parsed fields, and skipped empty
        lines before a request do not count.
        """
        if self._error is not None or self._state == _PAUSED:
            return 0
        return self._seen

    @property
    def reading_head(self) -> bool:
        """True while the bytes of a request head are coming in (not a body, not paused).

        Together with :attr:`buffered` this says which deadline applies to an
        incomplete request: the header timeout, or the body's.
        """
        return self._state == _HEAD and self._error is None

    @property
    def paused(self) -> bool:
        """True once a request ended the HTTP stream: nothing more is parsed.

        That request (the last one returned) has ``keep_alive`` false or
        ``upgrade`` set. Later bytes go to :attr:`trailing`.
        """
        return self._state == _PAUSED

    @property
    def trailing(self) -> bytes:
        """The bytes after the request that paused the framer, not parsed.

        After an upgrade they belong to the new protocol (a WebSocket
        framer); after ``Connection: close`` they are to be ignored. Empty
        until the framer pauses. A paused framer keeps whatever it is fed,
        without limit: stop reading, or hand the connection over.
        """
        return bytes(self._trailing)

    def take_continue(self) -> HttpRequest | None:
        """Return, once, the head of a request waiting for ``100 Continue``.

        Non-``None`` when the last ``feed()`` completed the head of an
        HTTP/1.1 request with ``Expect: 100-continue`` and a body that has
        not all arrived yet: the client may be waiting before sending it.
        The returned object has the method, target and headers (its ``body``
        is empty). Send :func:`encode_continue` after the responses to the
        requests already returned (an interim response belongs to the
        request being answered), or a final status and close. ``None`` when
        the body came with the head, and after the first call.
        """
        pending = self._continue
        self._continue = None
        return pending

    def resume(self) -> list[HttpRequest]:
        """Decline the upgrade that paused the framer and parse :attr:`trailing` as HTTP.

        For a server that answers an ``Upgrade`` request normally (RFC 9110
        7.8 lets it ignore the header, e.g. ``h2c``): the request, body
        included, was an ordinary one. Returns the requests the trailing
        bytes complete, like :meth:`feed`, and raises :class:`HttpError`
        like it.

        Raises :class:`RuntimeError` if the framer is not paused by a
        keep-alive upgrade request.
        """
        request = self._paused_by
        if self._state != _PAUSED or request is None or request.upgrade is None:
            raise RuntimeError("resume() is only for a framer paused by an upgrade request")
        if not request.keep_alive:
            raise RuntimeError("the upgrade request also closes the connection")
        data = bytes(self._trailing)
        self._trailing.clear()
        self._state = _HEAD
        self._paused_by = None
        return self.feed(data)

    # -- feeding ---------------------------------------------------------------

    def feed(self, data: BytesLike) -> list[HttpRequest]:
        """Append *data* and return the requests it completes, in order.

        A partial request is kept for the next call (llhttp holds its parsed
        fields, this framer at most one partial line). After a request that
        pauses the framer (see :attr:`paused`), the rest of *data* and of
        every later call goes to :attr:`trailing` and ``[]`` is returned.

        Raises :class:`HttpError` for a malformed request or one over a
        limit, as soon as the bytes seen prove it; its ``frames`` lists the
        requests completed before it in this call, ``status`` the response
        to send. The framer is broken from then on: every later call raises
        :class:`HttpError` again, with the same status and no frames.
        """
        if (
            self._state != _HEAD
            or self._head_len
            or self._error is not None
            or type(data) is not bytes
        ):
            return self._feed_slow(data)
        # The fast path: whole heads, each fed to llhttp in one call, checked
        # beforehand with a few searches. Anything else goes to _run.
        out: list[HttpRequest] = []
        self._out = out
        pos = 0
        n = len(data)
        try:
            while pos < n:
                first = data[pos]
                end = data.find(b"\r\n\r\n", pos)
                if end < 0 or first in (_CR, _LF):
                    break
                stop = end + 4
                lf = data.find(b"\n", pos)
                if (
                    stop - pos > self._max_head
                    or lf - pos > self._max_line
                    or not data.endswith(_VERSION_ENDS, pos, lf)
                ):
                    break
                self._version = _V11 if data[lf - 2] == _ONE else _V10
                self._in_head = True
                chunk = data if stop == n and pos == 0 else data[pos:stop]
                self._seen += stop - pos
                try:
                    self._parser.feed_data(chunk)
                except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
                    self._parser_failed(exc, chunk)
                if self._in_head:
                    raise HttpError("malformed request head")
                pos = stop
                if self._request is not None:  # llhttp waits for a body
                    self._framing(self._request)
                    break
                if self._stop:
                    break
            if pos < n or self._stop:
                self._run(data, pos, out)
        except HttpError as exc:
            self._fail(exc, out)
        return out

    def _feed_slow(self, data: BytesLike) -> list[HttpRequest]:
        """Feed a broken or paused framer, non-bytes input, or the rest of a request."""
        data = self._checked_input(data)
        if self._state == _PAUSED:
            self._trailing += data
            return []
        out: list[HttpRequest] = []
        self._out = out
        try:
            self._run(data, 0, out)
        except HttpError as exc:
            self._fail(exc, out)
        return out

    def _run(self, data: bytes, pos: int, out: list[HttpRequest]) -> None:
        """Parse *data* from *pos* on, byte-exactly; complete requests go to *out*."""
        n = len(data)
        while not self._stop:
            if pos >= n:
                return
            state = self._state
            if state == _HEAD:
                pos = self._head(data, pos, n, out)
            elif state == _BODY:
                pos = self._body(data, pos, n, out)
            elif state == _CHUNK_DATA:
                pos = self._chunk_data(data, pos, n, out)
            elif state == _CHUNK_SIZE:
                pos = self._chunk_size(data, pos, n, out)
            else:
                pos = self._trailer(data, pos, n, out)
        # The last request ends the HTTP stream: keep the rest unparsed.
        self._stop = False
        self._state = _PAUSED
        self._paused_by = out[-1]
        self._trailing += data[pos:]

    def _parse(self, chunk: bytes | memoryview, out: list[HttpRequest]) -> None:
        """Feed *chunk* to llhttp; completed requests go to *out*."""
        self._seen += len(chunk)  # on_message_complete resets it
        try:
            self._parser.feed_data(chunk)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._parser_failed(exc, chunk)

    def _parser_failed(self, exc: Exception, chunk: bytes | memoryview) -> None:
        """Turn what llhttp raised into an :class:`HttpError`, or accept an upgrade.

        An upgrade is fine if llhttp stopped where this framer did: at the
        end of the head it fed.
        """
        if isinstance(exc, httptools.HttpParserUpgrade):
            if exc.args[0] != len(chunk) or not (self._stop or self._upgrade_body):
                raise HttpError("malformed upgrade request") from None
            return
        if isinstance(exc, httptools.HttpParserCallbackError):
            error = exc.__context__
            if not isinstance(error, HttpError):
                raise exc  # a bug in a callback: let it show
            raise error from None
        reason = str(exc)
        status = 505 if reason in _VERSION_REASONS else 400
        raise HttpError(f"malformed request: {reason}", status) from None

    def _head(self, data: bytes, pos: int, n: int, out: list[HttpRequest]) -> int:
        """Feed the head byte-exactly: stop at the first limit, the line end, the head end."""
        if self._head_len == 0:
            match = _EMPTY_LINES.match(data, pos)
            assert match is not None  # an empty match at worst
            pos = match.end()
            if pos == n:
                return n
            self._in_head = True
            self._version = None  # until the request line proves it
        if self._line_open:
            if self._max_line < self._max_head:
                window, limit, error = self._max_line + 1, self._max_line, self._line_too_long
            else:
                window, limit, error = self._max_head, self._max_head, self._head_too_long
            start = pos
            lf = self._line(data, pos, n, window, limit, error, out)
            if lf < 0:
                self._head_len += n - start
                return n
            line = data[start:lf]
            buf = self._buffer
            if buf:
                buf += line
                line = bytes(buf)
                buf.clear()
            self._line_open = False
            self._head_len += lf + 1 - start
            self._seam = line[-2:] + b"\n"
            if line.endswith(_VERSION_ENDS):
                self._version = _V11 if line[-2] == _ONE else _V10
            elif _OTHER_VERSION.search(line):
                raise HttpError(f"HTTP version {line[-4:-1].decode()} is not supported", 505)
            else:
                raise HttpError("malformed request line: no HTTP/1.x version")
            pos = lf + 1
            if pos == n:
                return n
        # The request line is done: find the empty line that ends the head.
        used = self._head_len
        end = self._find_end(data, pos)
        if end >= 0 and used + end - pos <= self._max_head:
            self._parse(data[pos:end], out)
            if self._in_head:
                raise HttpError("malformed request head")
            self._head_len = 0
            self._line_open = True
            self._seam = b""
            if self._request is not None:  # llhttp waits for a body
                self._framing(self._request)
            return end
        if end >= 0 or used + n - pos > self._max_head:
            self._parse(data[pos : pos + self._max_head - used], out)
            self._head_too_long()
        self._parse(data[pos:n], out)
        if not self._in_head:
            raise HttpError("malformed request head")
        self._keep_seam(data, pos, n)
        self._head_len = used + n - pos
        return n

    def _line(
        self,
        data: bytes,
        pos: int,
        n: int,
        window: int,
        limit: int,
        error: Callable[[], NoReturn],
        out: list[HttpRequest],
    ) -> int:
        """Feed the rest of the line held in the buffer; return its LF's index or -1.

        The line may end (LF) at offsets below *window*; a byte at offset
        *limit* that does not end it calls *error* once llhttp has had the
        bytes before it. The unfinished part is appended to the buffer.
        """
        buf = self._buffer
        held = len(buf)
        lf = data.find(b"\n", pos, pos + window - held)
        if lf >= 0:
            self._parse(data[pos : lf + 1], out)
            return lf
        if held + n - pos > limit:
            self._parse(data[pos : pos + limit - held], out)
            error()
        self._parse(data[pos:n], out)
        buf += data[pos:n]
        return -1

    def _find_end(self, data: bytes, pos: int) -> int:
        """Return the index just past the first CRLFCRLF from *pos* (seam included), or -1."""
        seam = self._seam
        if seam:
            found = (seam + data[pos : pos + 3]).find(b"\r\n\r\n")
            if found >= 0:
                return pos + found + 4 - len(seam)
        found = data.find(b"\r\n\r\n", pos)
        return found + 4 if found >= 0 else -1

    def _keep_seam(self, data: bytes, pos: int, n: int) -> None:
        """Remember the last 3 bytes seen, so that a CRLFCRLF split across reads is found."""
        if n - pos >= 3:
            self._seam = data[n - 3 : n]
        else:
            self._seam = (self._seam + data[pos:n])[-3:]

    def _body(self, data: bytes, pos: int, n: int, out: list[HttpRequest]) -> int:
        """Feed the rest of a Content-Length body, or as much of it as is here."""
        left = self._body_left
        if n - pos >= left:
            self._parse(memoryview(data)[pos : pos + left], out)
            if self._state != _HEAD:
                raise HttpError("malformed request body")
            return pos + left
        self._parse(memoryview(data)[pos:n], out)
        self._body_left = left - (n - pos)
        return n

    def _chunk_size(self, data: bytes, pos: int, n: int, out: list[HttpRequest]) -> int:
        """Feed a chunk-size line; once whole, check the body limit and move on."""
        lf = self._line(
            data, pos, n, MAX_CHUNK_LINE + 2, MAX_CHUNK_LINE + 1, self._chunk_line_too_long, out
        )
        if lf < 0:
            return n
        line = data[pos:lf]
        buf = self._buffer
        if buf:
            buf += line
            line = bytes(buf)
            buf.clear()
        try:
            size = int(line.split(b";", 1)[0], 16)
        except ValueError:
            raise HttpError("malformed chunk size") from None
        total = self._body_total + size
        if total > self._max_body:
            raise HttpError(f"chunked body larger than max_body={self._max_body} bytes", 413)
        self._body_total = total
        if size:
            self._state = _CHUNK_DATA
            self._body_left = size + 2  # the data and its CRLF
        else:
            self._state = _TRAILER
            self._seam = b"\r\n"  # the last chunk's line end: "\r\n" alone ends the body
            self._head_len = 0
        return lf + 1

    def _chunk_data(self, data: bytes, pos: int, n: int, out: list[HttpRequest]) -> int:
        """Feed a chunk's data and its CRLF, or as much of them as is here."""
        left = self._body_left
        if n - pos >= left:
            self._parse(memoryview(data)[pos : pos + left], out)
            self._state = _CHUNK_SIZE
            return pos + left
        self._parse(memoryview(data)[pos:n], out)
        self._body_left = left - (n - pos)
        return n

    def _trailer(self, data: bytes, pos: int, n: int, out: list[HttpRequest]) -> int:
        """Feed the trailer section up to its empty line, within max_head bytes."""
        used = self._head_len
        end = self._find_end(data, pos)
        if end >= 0 and used + end - pos <= self._max_head:
            self._parse(data[pos:end], out)
            if self._state != _HEAD:
                raise HttpError("malformed trailer section")
            self._head_len = 0
            self._seam = b""
            return end
        if end >= 0 or used + n - pos > self._max_head:
            self._parse(data[pos : pos + self._max_head - used], out)
            raise HttpError(f"trailer section longer than max_head={self._max_head} bytes", 431)
        self._parse(data[pos:n], out)
        self._keep_seam(data, pos, n)
        self._head_len = used + n - pos
        return n

    # -- errors ------------------------------------------------------------------

    def _line_too_long(self) -> NoReturn:
        raise HttpError(f"request line too long for max_target={self._max_target} bytes", 414)

    def _head_too_long(self) -> NoReturn:
        raise HttpError(f"request head longer than max_head={self._max_head} bytes", 431)

    def _chunk_line_too_long(self) -> NoReturn:
        raise HttpError(f"chunk-size line longer than MAX_CHUNK_LINE={MAX_CHUNK_LINE} bytes", 413)

    def _raise_broken(self) -> NoReturn:
        """Raise an :class:`HttpError` with the status of the one that broke the framer."""
        error = self._error
        assert isinstance(error, HttpError)
        again = HttpError(f"framer already failed: {error}", error.status)
        again.frames = []
        raise again

    # -- llhttp callbacks (public names: httptools looks them up) ---------------

    def on_url(self, url: bytes) -> None:
        """llhttp callback: part of the request target (several for a split line)."""
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        """llhttp callback: one header (or trailer) field, whole; decoded when needed."""
        self._fields.append((name, value))
        if len(name) == 4 and name.lower() == b"host":
            self._hosts += 1
            self._host = value

    def on_headers_complete(self) -> None:
        """llhttp callback: the head is complete; build the request, check the limits.

        What frames the body is read after llhttp returns, and only if the
        request has one (llhttp then waits for it): see :meth:`_framing`.
        """
        if self._upgrade_body:
            # The synthetic head of _read_upgrade_body: no request of its own.
            self._upgrade_body = False
            self._url.clear()
            self._fields.clear()
            return
        self._in_head = False
        parser = self._parser
        version = self._version
        if version is None:
            found = parser.get_http_version()
            raise HttpError(f"HTTP version {found} is not supported", 505)
        method = _METHODS.get(parser.get_method()) or _method(parser.get_method())
        parts = self._url
        url = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        if len(url) > self._max_target:
            raise HttpError(f"request target longer than max_target={self._max_target} bytes", 414)
        fields = self._fields
        if len(fields) > self._max_headers:
            raise HttpError(f"more than max_headers={self._max_headers} header fields", 431)
        # RFC 9112 3.2 (on_header counted the Host fields): the common case,
        # one Host with the value of the last request, costs one comparison.
        if self._hosts != 1 or self._host != self._good_host:
            self._check_host(version)
        self._hosts = 0
        self._fields = []  # collects the trailers, if any
        request = self._request = HttpRequest(
            method,
            url.decode("latin1"),
            version,
            None,
            b"",
            parser.should_keep_alive(),
            False,
            None,
            (),
            fields,
        )
        if parser.should_upgrade():
            upgrade = request.header("upgrade")
            if upgrade is not None:
                request.upgrade = upgrade.lower()
                # httptools makes llhttp skip the body of an upgrade request
                # and end it here; the body is read all the same (RFC 9110
                # 7.8: the protocol switches after the whole request).
                length = request.header("content-length")
                if request.header("transfer-encoding") is not None or int(length or 0) > 0:
                    self._upgrade_body = True

    def _check_host(self, version: str) -> None:
        """Raise the 400 unless the head has one valid Host field (none in HTTP/1.0).

        RFC 9112 3.2; the value is RFC 3986 ``host[:port]`` (see ``_HOST``).
        """
        count = self._hosts
        if count == 1:
            value = self._host.rstrip(b" \t")  # llhttp strips the OWS before it
            if not _valid_host(value):
                raise _host_error(count, value, version)
            self._good_host = self._host
        elif count or version == _V11:
            raise _host_error(count, b"", version)

    def _framing(self, request: HttpRequest) -> None:
        """Read what frames the body of *request* (llhttp waits for one) and check it.

        Sets the state for a Content-Length or chunked body, refuses one
        over ``max_body`` (413) or with a coding other than chunked (501),
        and notes a pending ``100 Continue``.
        """
        codings = request.header("transfer-encoding")
        if codings is not None:
            if request.version == _V10:
                raise HttpError("Transfer-Encoding in an HTTP/1.0 request")
            names = [coding.strip().lower() for coding in codings.split(",")]
            unknown = [name for name in names if name != "chunked"]
            if unknown:
                raise HttpError(f"unsupported transfer coding {unknown[0]!r}", 501)
            self._state = _CHUNK_SIZE
            self._body_total = 0
        else:
            length = request.header("content-length")
            # llhttp has checked the digits and refused a second Content-Length.
            size = int(length) if length is not None else 0
            if size > self._max_body:
                raise HttpError(
                    f"Content-Length {size} larger than max_body={self._max_body} bytes", 413
                )
            if size <= 0:
                raise HttpError("malformed request head: llhttp expects a body")
            self._state = _BODY
            self._body_left = size
            self._body_total = size
        if request.version == _V11:
            expect = request.header("expect")
            if expect is not None and expect.lower() == "100-continue":
                request.expect_continue = True
                self._continue = request
        if self._upgrade_body:
            self._read_upgrade_body(self._state == _CHUNK_SIZE)

    def _read_upgrade_body(self, chunked: bool) -> None:
        """Make llhttp read the body of the pending upgrade request, as for any request.

        llhttp ended that request at its head and now waits for the next
        one, so it is fed a synthetic head with the same body framing, which
        :meth:`on_headers_complete` drops; the body that follows completes
        the upgrade request, with llhttp's checks (chunk syntax, trailers).
        The bytes of the synthetic head count towards no limit.
        """
        self._parser.feed_data(_REPLAY_CHUNKED if chunked else _REPLAY_LENGTH % self._body_left)
        assert not self._upgrade_body  # on_headers_complete saw it

    def on_body(self, body: bytes) -> None:
        """llhttp callback: part of the body, chunked decoding done."""
        self._body_parts.append(body)

    def on_message_complete(self) -> None:
        """llhttp callback: the request is complete; hand it out."""
        if self._upgrade_body:
            return  # llhttp's end of an upgrade request's head: the body is to come
        request = self._request
        assert request is not None
        self._request = None
        parts = self._body_parts
        if parts:
            request.body = parts[0] if len(parts) == 1 else b"".join(parts)
            self._body_parts = []
        fields = self._fields
        if fields:
            if len(fields) > self._max_headers:
                raise HttpError(f"more than max_headers={self._max_headers} trailer fields", 431)
            request.trailers = _decode_fields(fields)
            fields.clear()
            self._hosts = 0  # on_header counted any Host among them
        self._out.append(request)
        self._seen = 0
        self._state = _HEAD
        self._continue = None
        if not request.keep_alive or request.upgrade is not None:
            self._stop = True

    # -- encoding ------------------------------------------------------------------

    def encode(self, frame: Any) -> bytes:
        """Return *frame*, already-encoded response bytes, unchanged.

        Build responses with :func:`encode_response` (and
        :func:`encode_chunk`, :data:`LAST_CHUNK`); this pass-through lets a
        connection's ``send()`` take their output. Raises :class:`TypeError`
        if *frame* is not bytes-like (an :class:`HttpRequest` cannot be
        sent back).
        """
        return _to_bytes(frame)


def _split_target(target: str) -> tuple[str, str]:
    """Return the decoded path and the raw query of a request target."""
    if target == "*":
        return "*", ""
    rest = target.partition("#")[0]
    if rest[:1] != "/":
        # absolute-form, "http://host:port/path?query": the path starts at
        # the first "/" or "?" after the authority. (urlsplit would raise
        # on some authorities llhttp lets through, such as "[::1".)
        start = rest.find("://")
        start = start + 3 if start >= 0 else 0
        cut = len(rest)
        for separator in "/?":
            found = rest.find(separator, start)
            if 0 <= found < cut:
                cut = found
        rest = rest[cut:]
    path, _, query = rest.partition("?")
    if "%" in path:
        path = unquote(path)
    return path or "/", query


# -- responses -----------------------------------------------------------------

_STATUS_LINES: dict[str, dict[int, str]] = {
    version: {
        status.value: f"HTTP/{version} {status.value} {status.phrase}\r\n" for status in HTTPStatus
    }
    for version in (_V11, _V10)
}
_LINES_11: Final = _STATUS_LINES[_V11]
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# What a header name means to the framing, as bits: set by the caller, the
# encoder adds no field of its own of that kind.
_CONTENT_LENGTH: Final = 1
_TRANSFER_ENCODING: Final = 2
_CONNECTION: Final = 4
_KINDS = {
    "content-length": _CONTENT_LENGTH,
    "transfer-encoding": _TRANSFER_ENCODING,
    "connection": _CONNECTION,
}
# Validated header names and their kind. Names are nearly always constants
# in the code, so this stays small; it is capped anyway, past the cap names
# are checked on each use.
_NAME_KINDS: Final[dict[str, int]] = {}
_NAME_CACHE_SIZE = 512

LAST_CHUNK = b"0\r\n\r\n"
"""The zero-length chunk (and empty trailer section) that ends a chunked body."""


def _name_kind(name: str) -> int:
    """Validate the header name *name* and return its kind (see _KINDS)."""
    if type(name) is not str:
        raise TypeError(f"header names must be str, got {name!r}")
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"invalid header name {name!r}: it must be a token (RFC 9110 5.1)")
    kind = _KINDS.get(name.lower(), 0)
    if len(_NAME_KINDS) < _NAME_CACHE_SIZE:
        _NAME_KINDS[name] = kind
    return kind


def _status_line(status: Any, version: str) -> str:
    """Return the status line for *status* and *version*, or raise ValueError."""
    if version not in _STATUS_LINES:
        raise ValueError(f"version must be '1.1' or '1.0', got {version!r}")
    if type(status) is not int or not 100 <= status <= 599:
        raise ValueError(f"status must be an int from 100 to 599, got {status!r}")
    line = _STATUS_LINES[version].get(status)
    return line if line is not None else f"HTTP/{version} {status} \r\n"


def encode_response(
    # Any: checked by hand (a ValueError for "200"), the same on both cores.
    status: Any,
    headers: Iterable[tuple[str, str]] | Mapping[str, str] = (),
    body: BytesLike = b"",
    *,
    keep_alive: bool = True,
    head: bool = False,
    version: str = "1.1",
) -> bytes:
    """Return the bytes of an HTTP/1.x response: status line, headers, body.

    * *status*: 100-599; the reason phrase comes from :class:`http.HTTPStatus`
      (empty for codes it does not know).
    * *headers*: ``(name, value)`` pairs or a mapping, sent in order and as
      given. Names must be tokens, values ``str`` (or ``int``) without CR,
      LF or NUL (:class:`ValueError`: no header injection), both ISO-8859-1
      (:class:`UnicodeEncodeError`, a ValueError).
    * *body*: the body, bytes-like. ``content-length: len(body)`` is added
      unless the headers have a ``Content-Length`` (which must then match a
      non-empty *body*) or a ``Transfer-Encoding`` (then *body* is sent as
      given: build it with :func:`encode_chunk` and :data:`LAST_CHUNK`, or
      send the chunks later), or the status is 1xx, 204 or 304, which have
      no body (:class:`ValueError` if *body* is not empty).
    * *keep_alive*: false adds ``connection: close``; true with *version*
      ``"1.0"`` adds ``connection: keep-alive``. Nothing is added if the
      headers have a ``Connection`` field.
    * *head*: answering a HEAD request: the headers (``content-length``
      included) are those of *body*, but the body is not sent.
    * *version*: ``"1.1"`` (what RFC 9110 asks a 1.1 server to send, even
      to 1.0 clients) or ``"1.0"``.

    A ``Date`` header is not added: send one if you need it.
    """
    line = _LINES_11.get(status) if version == "1.1" else None
    if line is None:
        line = _status_line(status, version)
    parts = [line]
    append = parts.append
    kinds = 0
    length = None
    if type(headers) is dict or (type(headers) is not list and isinstance(headers, Mapping)):
        headers = headers.items()
    for name, value in headers:
        kind = _NAME_KINDS.get(name)
        if kind is None:
            kind = _name_kind(name)
        if type(value) is not str:
            value = _value_text(value)
        if kind:
            kinds |= kind
            if kind == _CONTENT_LENGTH:
                length = value
        append(f"{name}: {value}\r\n")
    count = len(parts)
    if type(body) is not bytes:
        body = _to_bytes(body)
    if kinds or status < 200 or status == 204 or status == 304 or version != "1.1":
        _framing_lines(parts, status, body, kinds, length, keep_alive, head, version)
        lines = len(parts)
    elif keep_alive:
        append(f"content-length: {len(body)}\r\n\r\n")
        lines = len(parts) + 1
    else:
        append(f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
        lines = len(parts) + 2
    text = "".join(parts)
    # Cheaper than a regex per value: there are exactly as many CRs and LFs
    # as CRLFs were written, unless a value smuggled one in.
    if text.count("\n") != lines or text.count("\r") != lines or "\x00" in text:
        _refuse_injection(parts[1:count])
    data = text.encode("latin1")
    return data if head or not body else data + body


def _framing_lines(
    parts: list[str],
    status: int,
    body: bytes,
    kinds: int,
    length: str | None,
    keep_alive: bool,
    head: bool,
    version: str,
) -> None:
    """Append the Content-Length, Connection and final lines for the uncommon cases."""
    if status < 200 or status == 204 or status == 304:
        if body:
            raise ValueError(f"a {status} response has no body")
    elif length is not None:
        if body and not head and length.strip() != str(len(body)):
            raise ValueError(f"Content-Length {length} but the body has {len(body)} bytes")
    elif not kinds & _TRANSFER_ENCODING:
        parts.append(f"content-length: {len(body)}\r\n")
    if not kinds & _CONNECTION:
        if not keep_alive:
            parts.append("connection: close\r\n")
        elif version != "1.1":
            parts.append("connection: keep-alive\r\n")
    parts.append("\r\n")


def _value_text(value: object) -> str:
    """Return a header value given as an int as text; TypeError for anything but str and int."""
    if type(value) is int:
        return str(value)
    raise TypeError(f"header values must be str (or int), got {value!r}")


def _refuse_injection(lines: list[str]) -> NoReturn:
    """Raise the ValueError that names the header line with CR, LF or NUL in it."""
    for line in lines:
        if line.count("\r") != 1 or line.count("\n") != 1 or "\x00" in line:
            raise ValueError(f"header line {line[:-2]!r} contains CR, LF or NUL")
    raise AssertionError("no bad header line found")  # pragma: no cover


def encode_chunk(data: BytesLike) -> bytes:
    """Return *data* as one chunk of a chunked body: size in hex, CRLF, data, CRLF.

    Empty *data* gives ``b""``, not a zero-length chunk, which would end the
    body: send :data:`LAST_CHUNK` for that. Raises :class:`TypeError` if
    *data* is not bytes-like.
    """
    if type(data) is not bytes:
        data = _to_bytes(data)
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)


_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def encode_continue() -> bytes:
    """Return the ``100 Continue`` interim response.

    Send it when :meth:`HttpRequestFramer.take_continue` says a client waits.
    """
    return _CONTINUE
