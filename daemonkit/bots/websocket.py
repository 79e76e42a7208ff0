"""WebSocketBot: a simulated user of a WebSocket endpoint.

::

    from daemonkit.bots import WebSocketBot

    class Chatter(WebSocketBot):
        path = "/ws"
        subprotocols = ("chat.v1",)

        async def script(self):
            reply = await self.call("NICK bot%d" % self.index, name="nick")
            self.send("SAY #lobby hello")         # one-way
            await self.ping()                     # a ping's round trip, as "ping"

    # python -m daemonkit bots chatter.py --target ws://127.0.0.1:8000 --bots 100

The bot connects, makes the opening handshake (the request of
:func:`~daemonkit.protocols.websocket.client.handshake_request`, the 101
checked by :func:`~daemonkit.protocols.websocket.client.check_response`,
subprotocols and permessage-deflate offered as the class says), and only
then is connected: ``on_connect`` or the script start, and the connect time
reported includes the handshake. A refused handshake counts as a failed
connect (``"handshake: HTTP 403"``).

Messages are ``str`` (text) and ``bytes`` (binary), sent with
:meth:`~daemonkit.bots.Bot.send` (one-way) or :meth:`~daemonkit.bots.Bot.call`
/ :meth:`~daemonkit.bots.Bot.request` (timed until the reply, matched
first-in-first-out or by :meth:`~daemonkit.bots.Bot.reply_key`, as for
stream bots); a message that is no reply reaches :meth:`on_read` (a
broadcast: time it yourself with :meth:`~daemonkit.bots.Bot.record`). The
frames are read and written by
:class:`~daemonkit.framing.websocket_client.WebSocketClientFramer`, the
server's own codec turned around. Pings from the server are answered;
:meth:`WebSocketBot.ping` times a round trip. ``close(code, reason)`` runs
the closing handshake; ``close_code`` and ``close_reason`` say how the
connection ended. A Close from the server mid-run with a code other than
1000 is a drop, as a reset is: one failure of ``"connection"`` (``"close
1001"``), and a reconnect when the class asks for one.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar

from daemonkit.bots.bot import END_CLOSE_TIMEOUT, Bot
from daemonkit.core.connection import CloseReason
from daemonkit.framing.http_client import HttpResponse, HttpResponseFramer
from daemonkit.framing.websocket import DEFAULT_MAX_MESSAGE, Close, CloseCode, Ping, Pong
from daemonkit.framing.websocket_client import WebSocketClientFramer
from daemonkit.protocols.websocket.client import check_response, handshake_request, new_key
from daemonkit.protocols.websocket.handshake import HandshakeError
from daemonkit.protocols.websocket.sessions import unmasker

if TYPE_CHECKING:
    from daemonkit.bots.runner import Fleet
    from daemonkit.core.connection import Connection
    from daemonkit.core.timers import Timer

__all__ = ["DEFAULT_HANDSHAKE_TIMEOUT", "WebSocketBot"]

# The opening handshake is part of connecting: the same 10 s as the runner's
# connect timeout (websockets' open_timeout is 10 s too).
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
"""Seconds from the TCP (or TLS) connect to the server's ``101``."""

# websockets' close_timeout is 10 s; the server side uses the same default.
_CLOSE_TIMEOUT = 10.0

# A ping's key among the bot's pending requests: a tuple no reply_key of a
# user's returns, so a Pong answers its own Ping and nothing else.
_PING = object()


class WebSocketBot(Bot):
    """A bot that speaks WebSocket (RFC 6455) to a ``ws://`` or ``wss://`` target.

    Settings (class attributes) beyond :class:`~daemonkit.bots.Bot`'s:

    * ``path``: the request target of the handshake (default ``"/"``); a
      target with a path (``ws://host:port/chat``) overrides it.
    * ``subprotocols``: offered in order; the chosen one is ``self.subprotocol``.
    * ``compression``: offer permessage-deflate (default True); what was
      agreed is ``self.compression`` (a Deflate, or None).
    * ``handshake_headers``: extra fields of the handshake request
      (``Origin``, a cookie, a token).
    * ``max_message``: the longest message read, in bytes.
    * ``handshake_timeout``: seconds to get the ``101``.

    ``framing`` is not a setting: the handshake and the frames have their own.
    """

    schemes: ClassVar[tuple[str, ...]] = ("ws", "wss")
    framing: ClassVar[Any] = HttpResponseFramer
    path: ClassVar[str] = "/"
    subprotocols: ClassVar[tuple[str, ...]] = ()
    compression: ClassVar[bool] = True
    handshake_headers: ClassVar[tuple[tuple[str, str], ...]] = ()
    max_message: ClassVar[int] = DEFAULT_MAX_MESSAGE
    handshake_timeout: ClassVar[float] = DEFAULT_HANDSHAKE_TIMEOUT

    def __init__(self, fleet: Fleet, index: int) -> None:
        super().__init__(fleet, index)
        #: The subprotocol the server chose, or None.
        self.subprotocol: str | None = None
        #: The permessage-deflate parameters agreed (this side's view), or None.
        self.compression_agreed: Any = None
        #: How the connection ended: the Close code (1006 without one) and reason.
        self.close_code: int | None = None
        self.close_reason = ""
        self._key = ""
        self._opened = False
        self._gave_up = False
        self._framer: WebSocketClientFramer | None = None
        self._close_sent = False
        self._timer: Timer | None = None
        self._ping_seq = 0
        self._on_read = self._handshake_read

    # -- actions ---------------------------------------------------------------------

    async def ping(self, name: str = "ping") -> float:
        """Send a Ping, wait for its Pong; return the round trip in seconds, timed as ``name``.

        A ping is a request like any other: named with the class prefix in a
        run of several classes, failed by ``request_timeout`` or by the
        connection closing, and judged by the script as a :meth:`call`'s
        reply is (``self.fail(name, why)`` right after it counts it as a
        failure instead). Raises :class:`~daemonkit.bots.RequestFailed` when
        it got no Pong (counted already).
        """
        self._ping_seq += 1
        payload = b"%d" % self._ping_seq
        future: asyncio.Future[float] = self._fleet.reactor.loop.create_future()
        self._request(payload, name, (_PING, payload), future, self._send_ping)
        return await future

    def _send_ping(self, payload: bytes) -> bool:
        conn, framer = self.conn, self._framer
        if conn is None or framer is None:
            return False
        return conn.write(framer.encode_ping(payload))

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake (Close *code* *reason*); :meth:`on_close` follows.

        The TCP connection closes when the server's Close arrives, or after
        10 s. Before the handshake is done, or a second time: just closes.
        """
        self._start_closing(code, reason, _CLOSE_TIMEOUT)

    def _start_closing(self, code: int, reason: str, timeout: float) -> None:
        conn = self.conn
        framer = self._framer
        if conn is None or conn.closing:
            return
        if framer is None or self._close_sent:
            conn.close(timeout)
            return
        self._close_sent = self._refusing = True
        conn.write(framer.encode_close(code, reason))
        conn.after(timeout, conn.close, timeout)

    def _close_at_end(self) -> None:
        # The run is over: a clean Close 1000, so the server sees a normal
        # closure rather than 1006; its Close is awaited END_CLOSE_TIMEOUT.
        self._start_closing(CloseCode.NORMAL, "", END_CLOSE_TIMEOUT)

    # -- the handshake ---------------------------------------------------------------

    def _on_connection_made(self, conn: Connection) -> None:
        # A new connection (the first, or a reconnect) starts with a handshake.
        self.conn = conn
        self._opened = self._gave_up = self._close_sent = self._refusing = False
        self._drop_kind = None
        self._framer = None
        self.close_code = None
        self.close_reason = ""
        self._on_read = self._handshake_read
        if self._fleet.ending:
            conn.close()
            return
        target = self.target
        if target is not None and target.host:
            name = f"[{target.host}]" if ":" in target.host else target.host
            host = f"{name}:{target.port}"
        else:
            host = conn.peer
        self._key = new_key()
        conn.write(
            handshake_request(
                host,
                self._fleet.target_path or self.path,  # the target's path wins
                self._key,
                subprotocols=self.subprotocols,
                compression=self.compression,
                headers=self.handshake_headers,
            )
        )
        self._timer = conn.after(self.handshake_timeout, self._handshake_expired)

    def _handshake_expired(self) -> None:
        self._give_up("handshake timeout")

    def _give_up(self, kind: str) -> None:
        """The handshake failed: a failed connect, and the connection closes."""
        if not self._gave_up:
            self._gave_up = True
            self._fleet.connect_failed(self, kind)
            self.log.debug("bot #%d: %s", self.index, kind)
        if self.conn is not None:
            self.conn.close()

    def _handshake_read(self, conn: Connection, response: HttpResponse) -> None:
        if self._opened or self._gave_up:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            subprotocol, deflate = check_response(
                response, self._key, subprotocols=self.subprotocols, compression=self.compression
            )
        except HandshakeError as exc:
            status = getattr(exc, "status", 0)
            self._give_up(f"handshake: HTTP {status}" if status != 101 else f"handshake: {exc}")
            return
        old = conn._framer
        trailing = old.trailing if isinstance(old, HttpResponseFramer) else b""
        framer = WebSocketClientFramer(
            max_message=self.max_message, deflate=deflate, apply_mask=unmasker()
        )
        self._framer = framer
        self.subprotocol = subprotocol
        self.compression_agreed = deflate
        self._opened = True
        conn._rehost(self, framer)
        self._on_read = self._ws_read
        Bot._on_connection_made(self, conn)
        if trailing and not conn.closing:
            try:
                frames = framer.feed(trailing)
            except Exception as exc:
                self.log.warning("bot #%d: %s; closing", self.index, exc)
                conn.close()
                return
            for frame in frames:
                self._ws_read(conn, frame)

    # -- frames ----------------------------------------------------------------------

    def _ws_read(self, conn: Connection, frame: Any) -> None:
        kind = frame.__class__
        if kind is str or kind is bytes:
            self._dispatch_read(conn, frame)
        elif kind is Ping:
            framer = self._framer
            if framer is not None and not self._close_sent:
                conn.write(framer.encode_pong(frame.payload))
        elif kind is Pong:
            self._pong(frame.payload)
        elif kind is Close:
            self._closed_by(conn, frame)

    def _pong(self, payload: bytes) -> None:
        """A Pong: the reply of the ping with that payload (an unsolicited one answers none)."""
        item = self._by_key.pop((_PING, payload), None)
        if item is None:
            return
        start, name, future = item
        latency = self.now() - start
        # Judged when the script moves on, as a call's reply is (see Bot.fail).
        self._unjudged_calls.append((name, latency))
        if future is not None and not future.done():
            future.set_result(latency)
        fleet = self._fleet
        if not self._fifo and not self._by_key and self._has_tick and fleet.closed_model:
            self._next_tick()

    def _closed_by(self, conn: Connection, frame: Close) -> None:
        self.close_code = frame.code
        self.close_reason = frame.reason
        framer = self._framer
        if not self._close_sent and framer is not None:
            # The server closes: echo its Close, then close the TCP connection.
            self._close_sent = self._refusing = True
            conn.write(framer.encode_close(frame.code))
            if frame.code not in (CloseCode.NORMAL, CloseCode.NO_STATUS) and not (
                self._fleet.ending
            ):
                # The server ended the session mid-run for a reason of its own
                # (a graceful restart sends 1001 "going away", an error 1011):
                # the bot was dropped, as by a reset. Counted once, by the
                # fleet, named by the code; a bot with `reconnect` comes back.
                # A normal Close (1000, after QUIT say) ends the session as agreed.
                self._drop_kind = f"close {frame.code}"
        conn.close()

    # -- the connection's host interface ----------------------------------------------

    def _on_connection_lost(self, conn: Connection, reason: CloseReason) -> None:
        if self.close_code is None:
            self.close_code = int(CloseCode.ABNORMAL)
        if not self._opened:
            # Never connected as far as the run is concerned.
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._give_up(f"handshake: {reason}")
            self.conn = None
            return
        super()._on_connection_lost(conn, reason)
