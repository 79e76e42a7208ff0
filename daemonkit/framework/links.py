"""Outbound links: one upstream connection a daemon keeps up, reconnecting.

``daemon.connect(url, handler=...)`` makes a :class:`Link`. The link owns at
most one live :class:`~daemonkit.core.connection.Connection` at a time, the
same class as an accepted connection (framer, watermarks, hard cap, idle and
frame deadlines, ``#id`` logging, close reasons), and is that connection's
:class:`~daemonkit.core.connection.ConnectionHost`. The handler gets
``on_connect(conn)`` (the outbound counterpart of ``on_accept``), then
``on_read``/``on_frames``, ``on_drain``, ``on_eof``, ``on_timeout``,
``on_error`` and ``on_close`` as for an inbound connection.

When the connection ends or cannot be made, the link tries again after a
delay drawn by :class:`Backoff` (exponential, full jitter, between a minimum
and a maximum), until :meth:`Link.close` or the daemon stops. A draining stop
(an upgrade's old process serving the clients it has) is not the end yet:
those clients may need the upstream, so the link still redials then. The link sees
its daemon only through :class:`LinkOwner`, so this layer does not import the
daemon.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from daemonkit.core.connection import DEFAULT_FRAME_TIMEOUT, CloseReason, Connection
from daemonkit.core.durations import check_duration, check_optional_duration
from daemonkit.core.endpoints import parse_endpoint
from daemonkit.errors import ConfigError
from daemonkit.framework.handler import Handler, HandlerCalls
from daemonkit.framework.hosts import framer_factory

if TYPE_CHECKING:
    from daemonkit.core.reactor import Reactor
    from daemonkit.core.timers import Timer
    from daemonkit.framing import Framer

__all__ = [
    "BACKOFF_FACTOR",
    "DEFAULT_LINK_CONNECT_TIMEOUT",
    "DEFAULT_RECONNECT_MAX",
    "DEFAULT_RECONNECT_MIN",
    "DEFAULT_STABLE_AFTER",
    "Backoff",
    "Link",
    "LinkOwner",
]

#: Seconds a link's connect (and TLS handshake) may take: the common HTTP
#: client default (requests' recommended connect timeout, Go's net.Dialer in
#: http.DefaultTransport 30 s, curl's happy-eyeballs far less); a live
#: upstream answers on a LAN in milliseconds.
DEFAULT_LINK_CONNECT_TIMEOUT = 10.0
#: Seconds before the first reconnect: 0.1 s, AWS's and Netty/Finagle's base backoff.
DEFAULT_RECONNECT_MIN = 0.1
#: Seconds the reconnect delay never exceeds: 30 s, AWS SDKs' cap (gRPC's is 120 s).
DEFAULT_RECONNECT_MAX = 30.0
#: Each failed attempt doubles the ceiling of the next delay, as gRPC (1.6) and AWS (2) do.
BACKOFF_FACTOR = 2.0
#: Seconds a connection must have lived for the backoff to start over at the
#: minimum when it ends: less, and an upstream that accepts then drops at
#: once would be hammered every ``min_delay``. 10 s is well past a handshake
#: and short against the 30 s maximum (Akka's BackoffSupervisor resets the
#: same way, after a child ran a while).
DEFAULT_STABLE_AFTER = 10.0

_UP, _DOWN, _CONNECTING, _CLOSED = "up", "down", "connecting", "closed"
_DEFAULTS = Handler()


class LinkOwner(Protocol):
    """What a :class:`Link` needs from the daemon that made it, and nothing more."""

    @property
    def reactor(self) -> Reactor:
        """The reactor the daemon runs on."""

    @property
    def log(self) -> logging.Logger:
        """The daemon's logger."""

    @property
    def stats(self) -> dict[str, int]:
        """The daemon's counters; links add to ``"errors"``."""

    @property
    def write_high_water(self) -> int:
        """Bytes buffered past which ``write()`` says stop."""

    @property
    def write_low_water(self) -> int:
        """Bytes buffered below which ``on_drain`` fires."""

    @property
    def max_write_buffer(self) -> int:
        """Hard cap on one connection's output buffer."""

    @property
    def close_timeout(self) -> float:
        """Seconds a graceful close waits for the peer."""

    @property
    def send_timeout(self) -> float | None:
        """Seconds a paused writer's peer may take nothing, or None."""

    def is_stopping(self) -> bool:
        """True once a stop has begun: links then stop reconnecting, unless draining."""

    def is_draining(self) -> bool:
        """True while a stop keeps serving the connections it has: links still redial."""

    def new_connection_id(self) -> int:
        """The next connection id."""

    def link_done(self, link: Link) -> None:
        """``link`` is closed and has no connection left: forget it."""

    def check_drained(self) -> None:
        """After a link's connection closed: finish a stop if nothing is left."""


class Backoff:
    """Reconnect delays: exponential with full jitter, between two bounds.

    The n-th delay since the last :meth:`reset` (n from 0) is drawn
    uniformly from ``[min_delay, min(max_delay, min_delay * factor**n)]``:
    AWS's "full jitter", kept at or above ``min_delay``. ``rng`` is anything
    with ``uniform(a, b)`` (a seeded :class:`random.Random` in tests).
    """

    def __init__(
        self,
        min_delay: float = DEFAULT_RECONNECT_MIN,
        max_delay: float = DEFAULT_RECONNECT_MAX,
        *,
        factor: float = BACKOFF_FACTOR,
        rng: Any = None,
    ) -> None:
        self.min_delay = check_duration("min_delay", min_delay, positive=True)
        self.max_delay = check_duration("max_delay", max_delay, positive=True)
        if self.max_delay < self.min_delay:
            raise ConfigError(
                f"max_delay={max_delay!r} must not be less than min_delay={min_delay!r}"
            )
        if isinstance(factor, bool) or not isinstance(factor, int | float) or factor < 1:
            raise ConfigError(f"backoff factor must be a number >= 1, not {factor!r}")
        self.factor = float(factor)
        self.rng = rng if rng is not None else random.Random()
        #: Delays drawn since the last reset.
        self.attempt = 0
        self._ceiling = self.min_delay

    def next(self) -> float:
        """The next delay, in seconds; the one after may be longer."""
        delay: float = self.rng.uniform(self.min_delay, self._ceiling)
        self.attempt += 1
        self._ceiling = min(self.max_delay, self._ceiling * self.factor)
        return min(self.max_delay, max(self.min_delay, delay))

    def reset(self) -> None:
        """Start over at ``min_delay`` (a connection lived long enough)."""
        self.attempt = 0
        self._ceiling = self.min_delay


class Link(HandlerCalls):
    """One outbound connection kept up: see the module docstring and docs/outbound.md.

    Read: ``url``, ``state`` (``"connecting"``, ``"up"``, ``"down"`` while
    waiting to retry, ``"closed"``), ``up``, ``connection`` (the live
    :class:`~daemonkit.core.connection.Connection` or None), ``connects``
    (connections made), ``reconnects`` (connections made after the first),
    ``failures`` (attempts that failed), ``last_error``, ``queued`` (bytes
    waiting for the next connection), ``dropped`` (sends refused while down),
    ``next_attempt`` (the reactor time of the next try while down, else None).

    Act: :meth:`send`, :meth:`write`, :meth:`close`.
    """

    def __init__(
        self,
        owner: LinkOwner,
        url: str,
        handler: object,
        *,
        framing: Any = None,
        ssl_context: ssl.SSLContext | None = None,
        cafile: str | None = None,
        verify: bool = True,
        connect_timeout: float = DEFAULT_LINK_CONNECT_TIMEOUT,
        reconnect: bool = True,
        min_delay: float = DEFAULT_RECONNECT_MIN,
        max_delay: float = DEFAULT_RECONNECT_MAX,
        stable_after: float = DEFAULT_STABLE_AFTER,
        queue: int = 0,
        idle_timeout: float | None = None,
        rng: Any = None,
    ) -> None:
        self.address = parse_endpoint(url)
        self.url = str(url)
        scheme = self.address.scheme
        if scheme not in ("tcp", "unix", "tls"):
            raise ConfigError(
                f"connect({url}): a link takes tcp://, unix:// or tls:// (not {scheme}://)"
            )
        self._owner = owner
        self.handler = handler
        self._framer_factory: Callable[[], Framer] | None = framer_factory(framing)
        self.connect_timeout = check_duration(
            f"connect({url}): connect_timeout", connect_timeout, positive=True
        )
        self.stable_after = check_duration(f"connect({url}): stable_after", stable_after)
        self.reconnect = bool(reconnect)
        self.backoff = Backoff(min_delay, max_delay, rng=rng)
        if isinstance(queue, bool) or not isinstance(queue, int) or queue < 0:
            raise ConfigError(
                f"connect({url}): queue must be a number of bytes >= 0, not {queue!r}"
            )
        self.queue_limit = queue
        self._ssl = self._tls_context(ssl_context, cafile, verify)
        # The ConnectionHost settings its connections read.
        self.idle_timeout: float | None = check_optional_duration(
            f"connect({url}): idle_timeout", idle_timeout
        )
        self.frame_timeout: float | None = (
            DEFAULT_FRAME_TIMEOUT if self._framer_factory is not None else None
        )
        self.send_timeout: float | None = owner.send_timeout
        self.write_high_water: int = owner.write_high_water
        self.write_low_water: int = owner.write_low_water
        self.max_write_buffer: int = owner.max_write_buffer
        self.close_timeout: float = owner.close_timeout
        self._on_read: Callable[[Connection, Any], object] = self._callback("on_read")
        on_frames = getattr(handler, "on_frames", None)
        self._on_frames: Callable[[Connection, list[Any]], object] | None = (
            on_frames if callable(on_frames) else None
        )
        self._on_connect = self._callback("on_connect")
        self._on_close = self._callback("on_close")
        self._on_error = self._callback("on_error")
        self._on_drain = self._callback("on_drain")
        self._on_timeout = self._callback("on_timeout")
        self._on_eof: Callable[[Connection], object] | None = getattr(handler, "on_eof", None)
        # Encodes frames sent while down (queue=): the live connection's framer is its own.
        self._encoder: Framer | None = (
            self._framer_factory() if self._framer_factory is not None else None
        )
        self.state = _DOWN
        self.connection: Connection | None = None
        self.connects = 0
        self.reconnects = 0
        self.failures = 0
        self.dropped = 0
        self.last_error: str | None = None
        self.queued = 0
        self._queue: deque[bytes] = deque()
        self._timer: Timer | None = None
        self._task: asyncio.Task[Any] | None = None
        self._up_since = 0.0
        self._closed = False
        self._warned = False

    def _tls_context(
        self, context: ssl.SSLContext | None, cafile: str | None, verify: bool
    ) -> ssl.SSLContext | None:
        url = self.url
        if self.address.scheme != "tls":
            if context is not None or cafile is not None or not verify:
                raise ConfigError(f"connect({url}): ssl_context, cafile and verify are for tls://")
            return None
        if context is not None and (cafile is not None or not verify):
            raise ConfigError(f"connect({url}): give ssl_context or cafile/verify, not both")
        if context is None:
            try:
                context = ssl.create_default_context(cafile=cafile)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"connect({url}): cannot load cafile {cafile!r}: {exc}") from None
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            self._owner.log.warning(
                "link %s: TLS certificate verification is OFF (verify=False)", url
            )
        return context

    def _callback(self, name: str) -> Callable[..., Any]:
        found = getattr(self.handler, name, None)
        if found is None:
            found = getattr(_DEFAULTS, name)
        if not callable(found):
            raise ConfigError(f"{type(self.handler).__name__}.{name} must be a method")
        return found  # type: ignore[no-any-return]

    # -- what users read ---------------------------------------------------

    @property
    def reactor(self) -> Reactor:
        """The daemon's reactor."""
        return self._owner.reactor

    @property
    def log(self) -> logging.Logger:
        """The daemon's logger."""
        return self._owner.log

    @property
    def up(self) -> bool:
        """True while a connection is live (made and not closing)."""
        conn = self.connection
        return conn is not None and not conn.closing

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called or the daemon stopped it."""
        return self._closed

    @property
    def next_attempt(self) -> float | None:
        """The reactor time of the next connect attempt while waiting, else None."""
        timer = self._timer
        return timer.when if timer is not None and timer.active else None

    def status(self) -> dict[str, Any]:
        """A JSON-ready summary (the ``links`` of ``ctl status``)."""
        return {
            "url": self.url,
            "state": self.state,
            "connects": self.connects,
            "reconnects": self.reconnects,
            "failures": self.failures,
            "last_error": self.last_error,
            "queued": self.queued,
            "dropped": self.dropped,
        }

    def __repr__(self) -> str:
        return f"<Link {self.url} {self.state}>"

    # -- actions -----------------------------------------------------------

    def send(self, frame: Any) -> bool:
        """Send one frame on the live connection (see ``Connection.send``).

        While the link is down: False and nothing kept, or, with ``queue=N``,
        the encoded frame waits for the next connection (False when it would
        take the queue past N bytes; counted in ``dropped``).
        """
        conn = self.connection
        if conn is not None and not conn.closing:
            return conn.send(frame)
        encoder = self._encoder
        return self._hold(encoder.encode(frame) if encoder is not None else bytes(frame))

    def write(self, data: bytes | bytearray | memoryview) -> bool:
        """Write raw bytes on the live connection; while down, as :meth:`send`."""
        conn = self.connection
        if conn is not None and not conn.closing:
            return conn.write(data)
        return self._hold(bytes(data))

    def close(self) -> None:
        """Close the link for good: no more reconnects; the connection closes gracefully."""
        self._shutdown(CloseReason.LOCAL, abort=False)

    # -- the daemon's side ---------------------------------------------------

    def start(self) -> None:
        """Make the first connect attempt (the daemon calls it)."""
        if not self._closed and self.state == _DOWN and self._task is None:
            self._dial()

    def _shutdown(self, reason: CloseReason, *, abort: bool) -> None:
        """Stop for good: cancel the retry or the attempt, close the connection."""
        if not self._closed:
            self._closed = True
            self.state = _CLOSED
            self._queue.clear()
            self.queued = 0
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._task is not None:
                self._task.cancel()
                self._task = None
        conn = self.connection
        if conn is None:
            self._owner.link_done(self)
        elif abort:
            conn._abort(reason)
        else:
            conn._close(reason)

    def _hold(self, data: bytes) -> bool:
        if self._closed or not self.queue_limit or self.queued + len(data) > self.queue_limit:
            self.dropped += 1
            return False
        self._queue.append(data)
        self.queued += len(data)
        return True

    def _dial(self) -> None:
        self._timer = None
        if self._closed:
            return
        if self._stop_is_final():  # the drain ended while this attempt waited
            self._shutdown(CloseReason.LOCAL, abort=False)
            self._owner.check_drained()
            return
        self.state = _CONNECTING
        factory = self._framer_factory
        conn = Connection(self, self._owner.new_connection_id(), factory() if factory else None)
        self._task = self.reactor.spawn(self._open(conn))

    async def _open(self, conn: Connection) -> None:
        try:
            await self.reactor.connect(
                self.address, lambda: conn, ssl=self._ssl, timeout=self.connect_timeout
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # refused, unreachable, TLS refused, timed out
            self._task = None
            self._failed(exc)
        else:
            self._task = None

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self.last_error = str(exc) or type(exc).__name__
        if self._closed:
            return
        if self._retry():
            level = logging.INFO if self._warned else logging.WARNING
            self._warned = True
            self.log.log(
                level,
                "link %s: cannot connect: %s; retrying in %.3gs",
                self.url,
                self.last_error,
                (self.next_attempt or 0.0) - self.reactor.time(),
            )
        else:
            self.log.warning("link %s: cannot connect: %s", self.url, self.last_error)
            self._owner.check_drained()

    def _stop_is_final(self) -> bool:
        """A stop has begun and is past its drain: no new attempt is worth making."""
        return self._owner.is_stopping() and not self._owner.is_draining()

    def _retry(self) -> bool:
        """Arm the next attempt (True), or close the link for good (False).

        While the daemon drains (it still serves the connections it has, which
        may need this upstream) the link redials as usual; once the stop is
        final it closes.
        """
        if self._closed or not self.reconnect or self._stop_is_final():
            self._shutdown(CloseReason.LOCAL, abort=False)
            return False
        self.state = _DOWN
        self._timer = self.reactor.call_later(self.backoff.next(), self._dial)
        return True

    # -- the ConnectionHost interface ------------------------------------------

    def _on_connection_made(self, conn: Connection) -> None:
        self._task = None
        if self._closed:  # closed while the connect was finishing
            self.connection = conn
            conn._abort(CloseReason.SHUTDOWN)
            return
        self.connection = conn
        self.state = _UP
        self._up_since = self.reactor.time()
        if self.connects:
            self.reconnects += 1
        self.connects += 1
        self._warned = False
        # The daemon's logger, not the connection's: a link's ups and downs are
        # its lifecycle, which the storm filter must never fold (it folds a
        # connection logger's lines, one per peer); the connection's id is kept.
        self.log.info("link %s up (#%d)", self.url, conn.id)
        try:
            self._on_connect(conn)
        except Exception as exc:
            self._call_error(conn, exc)
        queue = self._queue
        while queue and not conn.closing:
            data = queue.popleft()
            self.queued -= len(data)
            conn.write(data)

    def _on_connection_lost(self, conn: Connection, reason: CloseReason) -> None:
        self.connection = None
        if reason not in (CloseReason.LOCAL, CloseReason.SHUTDOWN):
            self.last_error = str(reason)
        try:
            self._on_close(conn, reason)
        except Exception:
            conn.log.exception("on_close raised")
        if self._closed:
            self._owner.link_done(self)
            self._owner.check_drained()
            return
        if self.reactor.time() - self._up_since >= self.stable_after:
            self.backoff.reset()
        if self._retry():
            self.log.info(
                "link %s down (%s, #%d); reconnecting in %.3gs",
                self.url,
                reason,
                conn.id,
                (self.next_attempt or 0.0) - self.reactor.time(),
            )
        else:
            self._owner.check_drained()

    def _error_counts(self) -> dict[str, int]:
        return self._owner.stats
