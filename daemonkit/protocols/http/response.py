"""Response: an HTTP answer as a value, for handlers that return one.

``on_request`` may answer with ``conn.respond(status, headers, body)`` or
return a :class:`Response`; both end in the same encoder. A Response is a
plain record (status, headers, body) with constructors for the common
bodies. It holds no connection and does no I/O, so tests can build and
compare them.
"""

from __future__ import annotations

import json as _json
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

__all__ = ["Headers", "Response"]

Headers: TypeAlias = Mapping[str, str] | Iterable[tuple[str, str]]
"""Response header fields: a mapping or ``(name, value)`` pairs, sent in order."""

_TEXT = ("content-type", "text/plain; charset=utf-8")
_JSON = ("content-type", "application/json")
_HTML = ("content-type", "text/html; charset=utf-8")


def _pairs(headers: Headers) -> list[tuple[str, str]]:
    """Return *headers* as a new list of pairs."""
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


class Response:
    """A complete response: ``Response(status=200, headers=(), body=b"")``.

    *headers* is a mapping or ``(name, value)`` pairs; *body* is bytes, or
    str (encoded as UTF-8). Return one from ``on_request`` (or pass it to
    ``conn.respond(response)``); the connection adds ``Content-Length``,
    ``Date`` and ``Connection`` as needed and drops the body for ``HEAD``.

    The constructors :meth:`text`, :meth:`json` and :meth:`html` also set
    ``Content-Type``. Responses compare equal when their three fields do.
    """

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int = 200, headers: Headers = (), body: bytes | str = b"") -> None:
        self.status = status
        self.headers = headers
        self.body = body.encode() if isinstance(body, str) else body

    @classmethod
    def text(cls, text: str, status: int = 200, headers: Headers = ()) -> Response:
        """A ``text/plain; charset=utf-8`` response with *text* as its body."""
        return cls(status, [_TEXT, *_pairs(headers)], text.encode())

    @classmethod
    def html(cls, html: str, status: int = 200, headers: Headers = ()) -> Response:
        """A ``text/html; charset=utf-8`` response with *html* as its body."""
        return cls(status, [_HTML, *_pairs(headers)], html.encode())

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: Headers = ()) -> Response:
        """An ``application/json`` response: *data* encoded with :func:`json.dumps`.

        Compact separators, UTF-8 (non-ASCII kept as is). Raises
        :class:`TypeError` for data JSON cannot represent, as ``json.dumps``
        does.
        """
        body = _json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        return cls(status, [_JSON, *_pairs(headers)], body)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return (self.status, _pairs(self.headers), self.body) == (
            other.status,
            _pairs(other.headers),
            other.body,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Response({self.status!r}, {_pairs(self.headers)!r}, {self.body!r})"
