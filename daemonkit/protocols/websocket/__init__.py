"""WebSocket (RFC 6455) on the paths of an HTTP endpoint.

::

    from daemonkit import Daemon, Endpoint

    class Echo(Daemon):
        listen = Endpoint("http://127.0.0.1:8000", websocket="/ws")

        def on_open(self, conn):
            self.group("all").add(conn)

        def on_message(self, conn, message):   # str (text) or bytes (binary)
            conn.send(message)                  # one message back, same type

        def on_close(self, conn, reason):
            ws = websocket.session(conn)        # close_code, close_reason...

The HTTP layer hands an upgrade request on a WebSocket route to
:func:`accept`, which checks the handshake, answers ``101`` and rehosts the
connection onto a :class:`WebSocketSession`. Per connection the handler
gets ``on_open (on_message | on_drain | on_error)* on_close``;
``conn.send(str | bytes)`` sends one message, ``conn.close(code=1000,
reason="")`` runs the closing handshake, pings keep the connection alive,
and groups (``self.group(name).broadcast(message)``) work as for any
connection: each member gets the message through its own framer, a slow
one is skipped. The endpoint options are :data:`OPTIONS`, read by
:func:`check_options`. The user guide is ``docs/websocket.md``.

Why an own codec. Three candidates, measured on the same echo loop (100,000
masked 64-byte text messages, 16 per read, feed + encode the echo, CPython
3.11, one core, best of 3): the
:class:`~daemonkit.framing.websocket.WebSocketFramer` of this package 1.4-1.8
million messages/s (0.6-0.7 us each) with the C unmasking of ``websockets``
(1.0 million in pure Python); the sans-IO ``ServerProtocol`` of
``websockets`` 17 270,000/s (3.7 us: an event object and a generator step
per frame); ``wsproto`` 1.3 50,000/s (20 us). One message per read:
650,000/s against 185,000/s and 50,000/s. The codec is small (RFC 6455 has
few rules a server must check), keeps the framer contract of
:mod:`daemonkit.framing` (so the same split, limit and fuzz tests apply),
and is tested against the ``websockets`` client and parser.

``websockets`` is not a runtime dependency but the ``daemonkit[speedups]``
extra: when it is installed its C ``apply_mask`` unmasks (ten times faster
on long payloads), else a pure-Python XOR does, after one log line naming
the extra (:func:`~daemonkit.protocols.websocket.sessions.unmasker`);
nothing else is needed beyond the standard library (``zlib`` for
permessage-deflate).

End to end (echo, 50 connections, 64-byte messages, a closed-loop load
generator on the other core of a 2-core machine, median of 3 rounds):
daemonkit on uvloop 24,000 messages/s with one message in flight per
connection and 343,000/s with 16, against 7,600/s and 22,600/s for the
``websockets`` asyncio server (13,200/s and 40,400/s on uvloop): 3.2 and 15
times, for a target of 1.5. Details in ``docs/websocket.md``.
"""

from __future__ import annotations

from daemonkit.framing.websocket import (
    DEFAULT_MAX_MESSAGE,
    Close,
    CloseCode,
    Deflate,
)
from daemonkit.protocols.websocket.handshake import HandshakeError
from daemonkit.protocols.websocket.sessions import WebSocketSession, accept, session
from daemonkit.protocols.websocket.settings import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_COMPRESSION,
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
    OPTIONS,
    WebSocketSettings,
    check_options,
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
