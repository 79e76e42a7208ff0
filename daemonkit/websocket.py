"""WebSocket endpoints: the public face of :mod:`daemonkit.protocols.websocket`.

``from daemonkit import websocket`` then ``websocket.session(conn)`` is how a
daemon uses WebSocket; the implementation lives in the protocols layer
(``daemonkit/protocols/websocket/``), this module only hands its public names on.
"""

from __future__ import annotations

from daemonkit.protocols.websocket import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_COMPRESSION,
    DEFAULT_MAX_MESSAGE,
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
    OPTIONS,
    Close,
    CloseCode,
    Deflate,
    HandshakeError,
    WebSocketSession,
    WebSocketSettings,
    accept,
    check_options,
    session,
)

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_COMPRESSION",
    "DEFAULT_MAX_MESSAGE",
    "DEFAULT_PING_INTERVAL",
    "DEFAULT_PING_TIMEOUT",
    "OPTIONS",
    "Close",
    "CloseCode",
    "Deflate",
    "HandshakeError",
    "WebSocketSession",
    "WebSocketSettings",
    "accept",
    "check_options",
    "session",
]
