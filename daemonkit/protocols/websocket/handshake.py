"""The opening handshake (RFC 6455 4.2), server side: check a request, build the 101.

Pure functions over an :class:`~daemonkit.framing.http.HttpRequest`: no
connection, no I/O, so every rule is tested by building requests.
:func:`check_request` returns the client's key or raises
:class:`HandshakeError` with the status to answer (400, 403 or 426 with
``Sec-WebSocket-Version: 13``); :func:`negotiate_deflate` and
:func:`negotiate_subprotocol` pick what the response confirms;
:func:`accept_key` computes ``Sec-WebSocket-Accept``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Collection, Sequence

from daemonkit.framing.http import HttpRequest
from daemonkit.framing.websocket import Deflate

__all__ = [
    "GUID",
    "HandshakeError",
    "accept_key",
    "check_request",
    "negotiate_deflate",
    "negotiate_subprotocol",
]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""The constant of RFC 6455 1.3 that ``Sec-WebSocket-Accept`` hashes with the key."""


class HandshakeError(Exception):
    """The upgrade request is not a valid WebSocket handshake; answer ``status`` and close.

    ``status`` is 400 (malformed), 403 (origin not allowed) or 426 (a
    WebSocket version other than 13); ``headers`` are the fields to add to
    that response.
    """

    def __init__(
        self, message: str, status: int = 400, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = list(headers)


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for the client's ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def _tokens(value: str | None) -> list[str]:
    """The comma-separated tokens of a header value, lower-cased, blanks dropped."""
    if not value:
        return []
    return [token.strip().lower() for token in value.split(",") if token.strip()]


def check_request(request: HttpRequest, *, origins: Collection[str] | None = None) -> str:
    """Check *request* as a WebSocket opening handshake; return its ``Sec-WebSocket-Key``.

    Checks, in this order: a GET, HTTP/1.1, ``Upgrade: websocket``,
    ``Connection: upgrade``, exactly one ``Sec-WebSocket-Key`` that is 16
    bytes in base64, ``Sec-WebSocket-Version: 13`` (else 426 asking for
    13), and, when *origins* is given, an ``Origin`` in it (else 403;
    browsers always send one, other clients may not).

    Raises :class:`HandshakeError`: answer its status and headers, then close.
    """
    if request.method != "GET":
        raise HandshakeError(f"a WebSocket handshake is a GET, not {request.method}")
    if request.version != "1.1":
        raise HandshakeError(f"a WebSocket handshake needs HTTP/1.1, not {request.version}")
    if "websocket" not in _tokens(request.header("upgrade")):
        raise HandshakeError("Upgrade header does not name websocket")
    if "upgrade" not in _tokens(request.header("connection")):
        raise HandshakeError("Connection header does not say upgrade")
    keys = [value for name, value in request.headers if name == "sec-websocket-key"]
    if len(keys) != 1:
        raise HandshakeError(f"expected one Sec-WebSocket-Key header, got {len(keys)}")
    key = keys[0]
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(f"Sec-WebSocket-Key {key[:40]!r} is not 16 bytes in base64")
    versions = _tokens(request.header("sec-websocket-version"))
    if versions != ["13"]:
        raise HandshakeError(
            f"unsupported Sec-WebSocket-Version {request.header('sec-websocket-version')!r}",
            426,
            [("Sec-WebSocket-Version", "13")],
        )
    if origins is not None:
        origin = request.header("origin")
        if origin not in origins:
            raise HandshakeError(f"Origin {origin!r} is not allowed", 403)
    return key


def _parse_extensions(value: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Parse ``Sec-WebSocket-Extensions`` into ``(name, [(param, value|None)])`` offers.

    Quoted values (RFC 7692 7.1 allows ``client_max_window_bits="10"``) are
    unquoted. Returns no offer at all for a value it cannot read.
    """
    offers = []
    for offer in value.split(","):
        parts = [part.strip() for part in offer.split(";")]
        if not parts[0]:
            continue
        params: list[tuple[str, str | None]] = []
        for part in parts[1:]:
            name, equals, param_value = part.partition("=")
            name = name.strip().lower()
            if not name:
                return []
            if equals:
                param_value = param_value.strip()
                if len(param_value) >= 2 and param_value[0] == param_value[-1] == '"':
                    param_value = param_value[1:-1]
                params.append((name, param_value))
            else:
                params.append((name, None))
        offers.append((parts[0].lower(), params))
    return offers


def _window_bits(value: str | None) -> int | None:
    """A ``*_max_window_bits`` value: 8..15, or None if it is not one."""
    if value is None or not value.isdigit() or len(value) > 2:
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None


def negotiate_deflate(value: str | None, config: Deflate) -> tuple[str, Deflate] | None:
    """Pick the first acceptable permessage-deflate offer in *value* (RFC 7692 7).

    *config* is what this server wants: ``server_max_window_bits`` is the
    largest window it compresses with (the response says the smaller of it
    and the client's request), ``server_no_context_takeover`` and
    ``client_no_context_takeover`` are imposed when true and granted when
    the client asks. ``client_max_window_bits`` needs no answer: the
    decompressor reads any window. An offer with an unknown or repeated
    parameter, a bad value, or ``server_max_window_bits=8`` (zlib's raw
    mode cannot do it) is declined.

    Returns the ``Sec-WebSocket-Extensions`` response value and the
    :class:`Deflate` for the framer, or None: no compression.
    """
    if not value:
        return None
    for name, params in _parse_extensions(value):
        if name != "permessage-deflate":
            continue
        seen: set[str] = set()
        server_bits = config.server_max_window_bits
        server_reset = config.server_no_context_takeover
        client_reset = config.client_no_context_takeover
        ok = True
        for param, param_value in params:
            if param in seen:
                ok = False
                break
            seen.add(param)
            if param == "server_no_context_takeover" and param_value is None:
                server_reset = True
            elif param == "client_no_context_takeover" and param_value is None:
                client_reset = True
            elif param == "server_max_window_bits":
                bits = _window_bits(param_value)
                if bits is None or bits == 8:
                    ok = False
                    break
                server_bits = min(server_bits, bits)
            elif param == "client_max_window_bits":
                if param_value is not None and _window_bits(param_value) is None:
                    ok = False
                    break
            else:
                ok = False
                break
        if not ok:
            continue
        response = ["permessage-deflate"]
        if server_reset:
            response.append("server_no_context_takeover")
        if client_reset:
            response.append("client_no_context_takeover")
        if server_bits < 15:
            response.append(f"server_max_window_bits={server_bits}")
        deflate = Deflate(
            server_no_context_takeover=server_reset,
            client_no_context_takeover=client_reset,
            server_max_window_bits=server_bits,
            mem_level=config.mem_level,
            level=config.level,
        )
        return "; ".join(response), deflate
    return None


def negotiate_subprotocol(value: str | None, supported: Sequence[str]) -> str | None:
    """The first of *supported* (in the server's order) that the client offers, or None.

    Subprotocol names are case-sensitive (RFC 6455 11.5). None means the
    response names no subprotocol; a client that required one then fails
    the connection itself.
    """
    if not value or not supported:
        return None
    offered = {token.strip() for token in value.split(",")}
    for name in supported:
        if name in offered:
            return name
    return None
