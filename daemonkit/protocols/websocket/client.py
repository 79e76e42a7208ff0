"""The opening handshake (RFC 6455 4.1), client side: build the request, check the 101.

Pure functions, the mirror of :mod:`daemonkit.protocols.websocket.handshake`
for a client (the bots' :class:`~daemonkit.bots.WebSocketBot`):
:func:`new_key` and :func:`handshake_request` make the upgrade request,
:func:`check_response` reads the server's answer (an
:class:`~daemonkit.framing.http_client.HttpResponse`) and returns what was
agreed: the subprotocol and the permessage-deflate parameters for a
:class:`~daemonkit.framing.websocket_client.WebSocketClientFramer`.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Sequence

from daemonkit.framing.http_client import HttpResponse, encode_request
from daemonkit.framing.websocket import Deflate
from daemonkit.framing.websocket_client import client_deflate
from daemonkit.protocols.websocket.handshake import (
    HandshakeError,
    _parse_extensions,
    _tokens,
    _window_bits,
    accept_key,
)

__all__ = ["DEFLATE_OFFER", "check_response", "handshake_request", "new_key"]

# What websockets' client offers by default: permessage-deflate, letting the
# server pick the client's window (client_max_window_bits without a value).
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"
"""The ``Sec-WebSocket-Extensions`` value offered when compression is wanted."""


def new_key() -> str:
    """A fresh ``Sec-WebSocket-Key``: 16 random bytes in base64 (RFC 6455 4.1)."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def handshake_request(
    host: str,
    path: str,
    key: str,
    *,
    subprotocols: Sequence[str] = (),
    compression: bool = True,
    headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """The bytes of the upgrade request for *path* on *host* (``host:port``).

    *subprotocols* are offered in order (``Sec-WebSocket-Protocol``);
    *compression* offers permessage-deflate (:data:`DEFLATE_OFFER`);
    *headers* are added as given (an ``Origin``, a cookie...).
    """
    fields = [
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", key),
        ("sec-websocket-version", "13"),
    ]
    if subprotocols:
        fields.append(("sec-websocket-protocol", ", ".join(subprotocols)))
    if compression:
        fields.append(("sec-websocket-extensions", DEFLATE_OFFER))
    fields.extend(headers)
    return encode_request("GET", path, host=host, headers=fields)


def check_response(
    response: HttpResponse,
    key: str,
    *,
    subprotocols: Sequence[str] = (),
    compression: bool = True,
) -> tuple[str | None, Deflate | None]:
    """Check the server's answer to the upgrade request made with *key*.

    Returns ``(subprotocol, deflate)``: the subprotocol the server chose
    (None: none) and the :class:`Deflate` for the client framer (None: no
    compression). Raises :class:`HandshakeError` (``status`` is the
    response's) when the answer is not a valid ``101`` for this request:
    another status, a wrong ``Sec-WebSocket-Accept``, a subprotocol or an
    extension that was not offered.
    """
    status = response.status
    if status != 101:
        raise HandshakeError(f"the server answered {status} {response.reason}, not 101", status)
    if "websocket" not in _tokens(response.header("upgrade")):
        raise HandshakeError("the 101 response's Upgrade header does not name websocket", status)
    if "upgrade" not in _tokens(response.header("connection")):
        raise HandshakeError("the 101 response's Connection header does not say upgrade", status)
    if response.header("sec-websocket-accept") != accept_key(key):
        raise HandshakeError("wrong Sec-WebSocket-Accept in the 101 response", status)
    chosen = response.header("sec-websocket-protocol")
    if chosen is not None and chosen not in subprotocols:
        raise HandshakeError(f"the server chose subprotocol {chosen!r}, which was not offered")
    extensions = response.header("sec-websocket-extensions")
    deflate = None
    if extensions:
        if not compression:
            raise HandshakeError(f"the server accepted extensions never offered: {extensions}")
        deflate = _read_deflate(extensions)
    return chosen, deflate


def _read_deflate(value: str) -> Deflate:
    """The client's :class:`Deflate` from the server's extension answer (RFC 7692 7.1)."""
    offers = _parse_extensions(value)
    if len(offers) != 1 or offers[0][0] != "permessage-deflate":
        raise HandshakeError(f"the server accepted unknown extensions: {value}")
    server_reset = client_reset = False
    client_bits = 15
    seen: set[str] = set()
    for param, param_value in offers[0][1]:
        if param in seen:
            raise HandshakeError(f"permessage-deflate parameter {param} twice: {value}")
        seen.add(param)
        if param == "server_no_context_takeover" and param_value is None:
            server_reset = True
        elif param == "client_no_context_takeover" and param_value is None:
            client_reset = True
        elif param == "server_max_window_bits" and _window_bits(param_value) is not None:
            pass  # the decompressor reads any window
        elif param == "client_max_window_bits":
            bits = _window_bits(param_value)
            if bits is None or bits == 8:  # zlib's raw mode cannot compress with 8
                raise HandshakeError(f"unusable client_max_window_bits in {value}")
            client_bits = bits
        else:
            raise HandshakeError(f"bad permessage-deflate parameter {param!r} in {value}")
    return client_deflate(
        server_no_context_takeover=server_reset,
        client_no_context_takeover=client_reset,
        client_max_window_bits=client_bits,
    )
