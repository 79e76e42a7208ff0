"""Connection: one accepted stream, its buffers, limits, timeouts and close.

A :class:`Connection` is the asyncio protocol of one accepted socket and the
object a user's callbacks receive. It owns everything that belongs to that
connection (its framer, its idle timer, its close deadline, the timers made
with :meth:`Connection.after`, its pending writes) and releases all of them
when the connection closes, so a closed connection leaves nothing behind in
the reactor.

Hot path: ``data_received`` → framer ``feed`` → ``on_read`` for each frame →
writes are gathered → one ``transport.write()`` at the end of the read. Writes
made outside a read (timers, other connections' callbacks) are gathered too
and flushed once per loop turn, by the reactor's one end-of-turn callback.

Limits: ``write()`` returns False above the high-water mark (stop producing
until ``on_drain``); past the hard cap the connection is aborted with the
reason "output buffer overflow", because asyncio's own ``write()`` never
refuses data. ``close()`` flushes, then aborts when the close deadline passes,
so a peer that never reads cannot keep a closing connection alive for ever.

Deadlines against slow peers, none of which costs a timer operation per read
(each timer is armed once and re-checks its condition when it comes due):

* idle: no input for ``idle_timeout`` seconds calls ``on_timeout`` (a
  deadline two seconds or more away waits in the reactor's idle wheel, not
  in a timer: see :class:`_IdleWheel`);
* frame: a frame begun and not finished within ``frame_timeout`` seconds (a
  peer trickling one byte a second keeps the idle timer happy, not this one)
  closes with :attr:`CloseReason.FRAME_TIMEOUT`. The framer stays sans-IO: the
  connection only asks it whether it holds part of a frame (``buffered``);
* send: writing paused by backpressure while the peer takes nothing for
  ``send_timeout`` seconds aborts with :attr:`CloseReason.SEND_TIMEOUT`.

Wire dumps: a connection opened while its logger is enabled for ``TRACE``
logs every read and every write to the transport (size and a bounded
hex/ASCII preview, as Netty's ``LoggingHandler``). The decision is taken once,
at ``connection_made``, and kept in one flag: with TRACE off a read costs one
attribute test, never a logging call.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import struct
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, cast

from mypy_extensions import mypyc_attr

from daemonkit.core.log import TRACE, ConnectionLogger, connection_logger, wire_preview
from daemonkit.errors import FrameTooLarge, FramingError

if TYPE_CHECKING:
    from daemonkit.core.endpoints import Endpoint
    from daemonkit.core.reactor import Reactor
    from daemonkit.core.timers import Timer, TimerQueue
    from daemonkit.framing import Framer

__all__ = [
    "DEFAULT_FRAME_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_SEND_TIMEOUT",
    "FRAME_IDLE_FACTOR",
    "CloseReason",
    "Connection",
    "ConnectionHost",
]

#: Seconds a stream connection may send nothing before ``on_timeout`` (which
#: closes it by default): 5 minutes, RFC 5321's SMTP server timeout and
#: Postfix's smtpd_timeout (nginx keeps an idle HTTP keep-alive 75 s, HAProxy
#: configurations commonly use 30-60 s for ``timeout client``).
DEFAULT_IDLE_TIMEOUT = 300.0
#: Seconds from a frame's first byte to its last: nginx's
#: client_header_timeout and client_body_timeout, and Node's headersTimeout, are 60 s.
DEFAULT_FRAME_TIMEOUT = 60.0
#: Without a frame_timeout of its own, a frame may take at most this many idle
#: timeouts: with ``idle_timeout=5`` a trickler is closed 10 s into its frame.
#: Two, because one would close a peer whose frame straddles one quiet period.
FRAME_IDLE_FACTOR = 2
#: Seconds a peer may take nothing while our output waits for it: nginx's send_timeout.
DEFAULT_SEND_TIMEOUT = 60.0
#: Width in seconds of a bucket of the idle wheel (see :class:`_IdleWheel`):
#: the granularity of the timer queue's own coarse level (2**10 ms). An idle
#: deadline at least two buckets away waits in the wheel; a nearer one, in a
#: timer of its own.
_IDLE_BUCKET = 1.0


class CloseReason(str, enum.Enum):
    """Why a connection closed; passed to ``on_close(conn, reason)``.

    Members compare equal to their text, e.g. ``reason == "idle timeout"``.
    """

    PEER_CLOSED = "peer closed"
    LOCAL = "closed locally"
    IDLE_TIMEOUT = "idle timeout"
    FRAME_TOO_LARGE = "frame too large"
    PROTOCOL_ERROR = "protocol error"
    HANDLER_ERROR = "handler error"
    SHUTDOWN = "shutdown"
    ABORTED = "aborted"
    OVERFLOW = "output buffer overflow"
    CONNECTION_ERROR = "connection error"
    CLOSE_TIMEOUT = "close timeout"
    FRAME_TIMEOUT = "frame timeout"
    SEND_TIMEOUT = "send timeout"

    def __str__(self) -> str:
        return self.value


class ConnectionHost(Protocol):
    """What a :class:`Connection` needs from its owner: settings and callbacks.

    An endpoint of a :class:`~daemonkit.daemon.Daemon` is the host of its
    accepted connections; a :class:`~daemonkit.bots.Bot` is the host of its one
    outbound connection. The ``_``-prefixed members are the framework's
    dispatch points (they isolate errors and count), not user API.

    Two settings are optional (a host without them sets no such deadline):
    ``frame_timeout`` (seconds allowed from a frame's first byte to its
    last, or None) and ``send_timeout`` (seconds a peer may take nothing
    while writing is paused, or None).
    """

    write_high_water: int
    write_low_water: int
    max_write_buffer: int
    close_timeout: float
    idle_timeout: float | None
    _on_read: Callable[[Connection, Any], object]
    _on_frames: Callable[[Connection, list[Any]], object] | None

    @property
    def reactor(self) -> Reactor: ...

    @property
    def log(self) -> logging.Logger: ...

    def _call_error(self, conn: Connection, exc: Exception) -> None: ...
    def _call_eof(self, conn: Connection) -> bool: ...
    def _call_drain(self, conn: Connection) -> None: ...
    def _call_timeout(self, conn: Connection) -> None: ...
    def _on_connection_made(self, conn: Connection) -> None: ...
    def _on_connection_lost(self, conn: Connection, reason: CloseReason) -> None: ...


# SO_LINGER on, 0 s: close() resets the connection and drops what is queued.
_LINGER_RESET = struct.pack("ii", 1, 0)


def _format_address(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if isinstance(addr, bytes):
        addr = addr.decode(errors="replace")
    return f"unix:{addr}" if isinstance(addr, str) and addr else "unix"


class _Extras:
    """The parts of a connection most connections never use, made on first use.

    An idle connection needs none of these; keeping them here rather than in
    a slot of every :class:`Connection` saves ~70 bytes per connection
    (memory per idle connection is one of the benchmark targets).
    """

    __slots__ = (
        "close_timer",
        "frame_since",
        "frame_timer",
        "reason",
        "send_since",
        "send_taken",
        "send_timer",
        "state",
        "timers",
        "trace",
        "want_drain",
    )

    def __init__(self) -> None:
        self.close_timer: Timer | None = None
        # When the partial frame the framer holds began (-1.0: it holds
        # none), and the frame deadline's lazy timer.
        self.frame_since = -1.0
        self.frame_timer: Timer | None = None
        self.reason: CloseReason | None = None
        self.state: dict[str, Any] | None = None
        self.timers: list[Timer] | None = None
        # TRACE was enabled when the connection was made: dump reads and writes.
        self.trace = False
        # write() returned False: call on_drain once the buffer empties.
        self.want_drain = False
        # Writing paused: since when the peer has taken nothing, the bytes it
        # had taken then (bytes_out less the transport's buffer), the timer.
        self.send_since = 0.0
        self.send_taken = 0
        self.send_timer: Timer | None = None


@mypyc_attr(allow_interpreted_subclasses=True)
class Connection:
    """One client connection, as seen by the daemon's callbacks.

    Attributes a user reads: ``id`` (unique in the process), ``peer`` and
    ``local`` (printable addresses), ``state`` (a dict for per-connection
    data: keep it here, never in globals), ``log`` (a logger whose lines
    start with ``#id peer``), ``bytes_in``, ``bytes_out``, ``closing``.

    Actions: :meth:`write`, :meth:`send`, :meth:`close`, :meth:`abort`,
    :meth:`pause_reading`, :meth:`resume_reading`, :meth:`set_idle_timeout`,
    :meth:`after`, :meth:`every`.

    The methods ``connection_made``, ``data_received``, ``eof_received``,
    ``pause_writing``, ``resume_writing`` and ``connection_lost`` are the
    asyncio protocol interface the backend calls; user code never calls them.
    """

    # Few slots on purpose: every one costs 8 bytes per idle connection. What
    # most connections never use lives in one lazily made _Extras (``_x``);
    # the idle timeout and the frame deadline, on by default, are used by
    # most, so their six fields are slots here (48 bytes, not a 152-byte
    # _Extras on every connection).
    __slots__ = (
        "_closing",
        "_flushing",
        "_frame",
        "_framer",
        "_high",
        "_host",
        "_idle",
        "_idle_pos",
        "_idle_wait",
        "_last_read",
        "_read_clock",
        "_wbuf",
        "_wsize",
        "_x",
        "bytes_in",
        "bytes_out",
        "id",
        "transport",
    )

    def __init__(self, host: ConnectionHost, conn_id: int, framer: Framer | None) -> None:
        self.id = conn_id
        # The high-water mark write() compares against; -1 while the
        # transport has paused writing, so one comparison covers both.
        self._high = 0
        self._x: _Extras | None = None
        # The idle timeout in force (0.0: none; a plain float, which compiled
        # is stored unboxed: no float object per connection), the time of the
        # last read, and the reactor clock's now() to take it with (None while
        # there is no idle timeout: a read then takes no time at all). Where
        # the deadline waits: a timer of its own when near, else a bucket of
        # the reactor's idle wheel (and the connection's index in it).
        self._idle = 0.0
        self._last_read = 0.0
        self._read_clock: Callable[[], float] | None = None
        self._idle_wait: Timer | _IdleBucket | None = None
        self._idle_pos = 0
        # The frame deadline in force, in seconds (0.0: none); what the frame
        # under way needs (its start, its timer) is in _Extras, made when one
        # arrives in parts.
        self._frame = 0.0
        self._rehost(host, framer)
        self.transport: asyncio.Transport | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        # 0 open, 1 closing, 2 closed: one slot for both states.
        self._closing: int = 0
        # Gathered writes: None, one bytes object (the common case: no list to
        # build and clear per read), or a list of them.
        self._wbuf: bytes | list[bytes] | None = None
        self._wsize = 0
        # How gathered writes reach the transport: None (idle: a write
        # queues a flush), True (inside data_received, which flushes at its
        # end), or False (queued with the reactor's end-of-turn flushes).
        self._flushing: bool | None = None

    def _rehost(self, host: ConnectionHost, framer: Framer | None) -> None:
        """Serve this connection with another host and framer from now on.

        For a protocol switch on a live connection (an HTTP connection
        upgraded to WebSocket); bytes the old framer still buffers are the
        caller's to hand over.
        """
        self._host = host
        self._framer = framer
        if self._high >= 0:
            self._high = host.write_high_water
        if self._frame:
            # The frame deadline is the host's: a WebSocket session has none
            # (its keepalive pings watch the peer).
            frame = getattr(host, "frame_timeout", None) if framer is not None else None
            self._frame = float(frame) if frame else 0.0
            x = self._x
            if x is not None:
                x.frame_since = -1.0

    def _extras(self) -> _Extras:
        x = self._x
        if x is None:
            x = self._x = _Extras()
        return x

    # -- what users read -------------------------------------------------

    @property
    def state(self) -> dict[str, Any]:
        """A dict for this connection's own data; it dies with the connection."""
        x = self._extras()
        if x.state is None:
            x.state = {}
        return x.state

    @property
    def peer(self) -> str:
        """The peer's address, e.g. ``127.0.0.1:5123`` or ``[::1]:5123``."""
        t = self.transport
        return _format_address(t.get_extra_info("peername")) if t is not None else "?"

    @property
    def local(self) -> str:
        """The local address this connection came in on."""
        t = self.transport
        return _format_address(t.get_extra_info("sockname")) if t is not None else "?"

    @property
    def log(self) -> ConnectionLogger:
        """This connection's logger: every line starts with ``#id peer``.

        Made afresh on each use and kept by nobody, so a connection that logs
        (a daemon that says hello in ``on_accept``) holds no memory for it;
        the prefix is built only when a line is actually emitted.
        """
        return connection_logger(self._host.log, self.id, self._peer_name)

    def _peer_name(self) -> str:
        return self.peer

    @property
    def endpoint(self) -> Endpoint | None:
        """The :class:`~daemonkit.core.endpoints.Endpoint` this connection came in on.

        None for a bot's connection.
        """
        return getattr(self._host, "endpoint", None)

    @property
    def closed(self) -> bool:
        """True once the connection is gone (``on_close`` follows, or has run)."""
        return self._closing == 2

    @property
    def closing(self) -> bool:
        """True once :meth:`close` or :meth:`abort` was called or the peer went away."""
        return self._closing != 0

    @property
    def idle_timeout(self) -> float | None:
        """The idle timeout in force, in seconds (see :meth:`set_idle_timeout`), or None."""
        return self._idle or None

    @property
    def write_buffer_size(self) -> int:
        """Bytes written but not yet accepted by the kernel (gathered + the transport's)."""
        t = self.transport
        size = self._wsize
        if t is not None and self._closing != 2:
            size += t.get_write_buffer_size()
        return size

    def __repr__(self) -> str:
        return f"<Connection #{self.id} {self.peer}{' closing' if self._closing else ''}>"

    # -- actions ---------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> bool:
        """Queue ``data`` to be sent; return False when the peer is not keeping up.

        Writes are gathered and handed to the kernel once per read (or once
        per loop turn outside a read). False means the output buffer is above
        the high-water mark: stop producing until ``on_drain(conn)``. Past the
        hard cap (``max_write_buffer``) the connection is aborted with the
        reason "output buffer overflow". Writing to a closing connection
        drops the data and returns False.
        """
        if self._closing:
            return False
        if type(data) is not bytes:
            data = bytes(data)
        buf = self._wbuf
        if buf is None:
            # Nothing gathered yet (so _wsize is 0), and perhaps no flush arranged.
            self._wbuf = data
            size = self._wsize = len(data)
            if self._flushing is None:
                self._schedule_flush()
        else:  # gathered bytes always have their flush arranged
            # isinstance, not type() is: it narrows the type, so compiled the
            # append is a list primitive rather than a method looked up by name.
            if isinstance(buf, bytes):
                self._wbuf = [buf, data]
            else:
                buf.append(data)
            size = self._wsize = self._wsize + len(data)
        return size <= self._high or self._check_backlog()

    def send(self, frame: Any) -> bool:
        """Encode ``frame`` with this connection's framer and :meth:`write` it.

        With ``Lines`` framing ``conn.send(b"hi")`` writes ``b"hi\\n"``. Same
        return value as :meth:`write`.
        """
        framer = self._framer
        return self.write(framer.encode(frame) if framer is not None else frame)

    def send_all(self, frames: Iterable[Any]) -> bool:
        """Encode every frame of ``frames`` and :meth:`write` them as one piece.

        The batch counterpart of :meth:`send`, for ``on_frames``: the framer's
        :meth:`~daemonkit.framing.Framer.encode_all` makes one ``bytes`` of
        the batch (``Lines`` with a one-byte delimiter in one join). Raises
        like :meth:`send` for a frame that cannot be encoded (then nothing of
        the batch is written). Same return value as :meth:`write`.
        """
        batch = frames if type(frames) is list else list(frames)
        if not batch:
            return not self._closing
        framer = self._framer
        return self.write(framer.encode_all(batch) if framer is not None else b"".join(batch))

    def _offer(self, frame: Any) -> int:
        """Send *frame* unless the peer is behind; a group broadcast's step per member.

        Returns 1 when sent, 0 when nothing was sent because the output
        buffer is over the high-water mark (or the transport has paused
        writing), -1 when the connection is closing. One compiled call per
        member, where reading the fields from the group's loop cost an
        attribute lookup each.
        """
        if self._closing:
            return -1
        if self.write_buffer_size > self._high:  # _high is -1 while writing is paused
            return 0
        self.send(frame)
        return 1

    def close(self, timeout: float | None = None) -> None:
        """Close gracefully: flush what was written, then close; idempotent.

        If the peer does not take the data within ``timeout`` seconds
        (default: the daemon's ``close_timeout``), the connection is aborted.
        ``on_close`` follows once the connection is gone.
        """
        self._close(CloseReason.LOCAL, timeout)

    def abort(self) -> None:
        """Close now, dropping anything not yet sent; idempotent."""
        self._abort(CloseReason.ABORTED)

    def pause_reading(self) -> None:
        """Stop receiving data (e.g. while a slow job for this client runs)."""
        if self.transport is not None and not self._closing:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Receive data again after :meth:`pause_reading`."""
        if self.transport is not None and not self._closing:
            self.transport.resume_reading()

    def set_idle_timeout(self, seconds: float | None) -> None:
        """Call ``on_timeout`` after ``seconds`` without input; None or 0 turns it off.

        Costs one clock call per read and no timer work: the connection
        records when it last read and the deadline is re-checked when it comes due.
        """
        self._disarm_idle()
        self._idle = idle = seconds if seconds else 0.0
        if not idle or self._closing:
            self._read_clock = None
            return
        reactor = self._host.reactor
        self._read_clock = reactor.clock.now
        now = self._last_read = reactor.time()
        self._arm_idle(now + idle, now)

    def after(self, delay: float, fn: Callable[..., object], *args: object) -> Timer:
        """Run ``fn(*args)`` after ``delay`` seconds unless this connection closes first."""
        timer = self._host.reactor.call_later(delay, fn, *args)
        self._own(timer)
        return timer

    def every(self, interval: float, fn: Callable[..., object], *args: object) -> Timer:
        """Run ``fn(*args)`` every ``interval`` seconds until this connection closes."""
        timer = self._host.reactor.call_every(interval, fn, *args)
        self._own(timer)
        return timer

    # -- internals -------------------------------------------------------

    def _own(self, timer: Timer) -> None:
        x = self._extras()
        timers = x.timers
        if timers is None:
            timers = x.timers = []
        elif len(timers) >= 32 and not len(timers) & (len(timers) - 1):
            # Drop spent timers at 32, 64, 128... entries: amortised O(1) per add.
            timers[:] = [t for t in timers if t.active]
        timers.append(timer)

    def _check_backlog(self) -> bool:
        host = self._host
        size = self._wsize
        if self.transport is not None:
            size += self.transport.get_write_buffer_size()
        if size > host.max_write_buffer:
            self.log.warning(
                "output buffer overflow: %d bytes queued, over max_write_buffer=%d; aborting",
                size,
                host.max_write_buffer,
            )
            self._abort(CloseReason.OVERFLOW)
            return False
        if size > host.write_high_water:
            self._extras().want_drain = True
            return False
        return True

    def _schedule_flush(self) -> None:
        self._flushing = False
        self._host.reactor.flush_soon(self)

    def _cancel_flush(self) -> None:
        """Forget a queued flush (not the one a read will do); the queue entry finds nothing."""
        if self._flushing is False:
            self._flushing = None

    def _drained(self) -> None:
        """Everything gathered went out: call on_drain if write() had said no."""
        x = self._x
        if x is not None and x.want_drain and self._high >= 0 and not self._closing:
            # Everything went to the kernel at once: no resume_writing will come.
            x.want_drain = False
            self._host._call_drain(self)

    def _flush_soon(self) -> None:
        """The reactor's end-of-turn flush (see :meth:`Reactor.flush_soon`)."""
        if self._flushing is not True:  # never in the middle of a read
            self._flushing = None
            self._flush()

    def _flush(self) -> None:
        buf = self._wbuf
        if buf is None:
            return
        self._wbuf = None
        data = buf if isinstance(buf, bytes) else b"".join(buf)
        self._wsize = 0
        t = self.transport
        if t is None or self._closing == 2:
            return
        self.bytes_out += len(data)
        x = self._x
        if x is not None and x.trace:
            self._trace("write", data)
        t.write(data)
        if self._x is not None:
            self._drained()

    def _close(self, reason: CloseReason, timeout: float | None = None) -> None:
        if self._closing:
            return
        self._closing = 1
        self._extras().reason = reason
        t = self.transport
        if t is None:
            return
        self._cancel_flush()
        self._flush()
        t.close()
        if self._closing != 2 and t.get_write_buffer_size():
            deadline = self._host.close_timeout if timeout is None else timeout
            self._extras().close_timer = self._host.reactor.call_later(
                deadline, self._on_close_deadline
            )

    def _abort(self, reason: CloseReason) -> None:
        if self._closing == 2:
            return
        x = self._extras()
        if not self._closing or x.reason is None:
            x.reason = reason
        self._closing = 1
        self._wbuf = None
        self._wsize = 0
        if self.transport is not None:
            self.transport.abort()

    def _on_close_deadline(self) -> None:
        x = self._extras()
        x.close_timer = None
        if self._closing != 2:
            self.log.info(
                "peer did not take %d buffered bytes within the close deadline; aborting",
                self.write_buffer_size,
            )
            if x.reason is CloseReason.LOCAL:
                x.reason = CloseReason.CLOSE_TIMEOUT
            if self.transport is not None:
                self.transport.abort()

    def _arm_idle(self, due: float, now: float) -> None:
        """Watch the idle deadline *due*: a near one in a timer, a far one in the wheel."""
        reactor = self._host.reactor
        if due - now < 2 * _IDLE_BUCKET:
            self._idle_wait = reactor.timers.call_at(due, _check_idle, self)
            return
        wheel = reactor.idle_wheel
        if wheel is None:
            wheel = reactor.idle_wheel = _IdleWheel(reactor.timers)
        wheel.add(self, due)

    def _disarm_idle(self) -> None:
        """Forget the idle deadline, wherever it waits."""
        wait = self._idle_wait
        if wait is not None:
            self._idle_wait = None
            if isinstance(wait, _IdleBucket):
                wait.remove(self)
            else:
                wait.cancel()

    def _check_idle(self) -> None:
        """The idle deadline came due: call on_timeout if nothing was read since, else re-arm."""
        self._idle_wait = None
        idle = self._idle
        if not idle or self._closing:
            return
        now = self._host.reactor.time()
        due = self._last_read + idle
        if now < due:
            self._arm_idle(due, now)
            return
        self._host._call_timeout(self)
        idle = self._idle
        if not self._closing and idle and self._idle_wait is None:
            # on_timeout kept the connection: give it another full period.
            self._last_read = now
            self._arm_idle(now + idle, now)

    def _frame_began(self, x: _Extras, frame: float) -> None:
        """The framer holds the start of a new frame: its deadline runs from now.

        Called once per frame that does not arrive whole, never per read; the
        one timer is armed only if none is, and re-checks when it comes due.
        """
        if self._idle:
            now = x.frame_since = self._last_read  # this read's time, already taken
        else:
            now = x.frame_since = self._host.reactor.clock.now()
        if x.frame_timer is None:
            x.frame_timer = self._host.reactor.timers.call_at(now + frame, self._check_frame)

    def _check_frame(self) -> None:
        x = self._extras()
        x.frame_timer = None
        frame = self._frame
        if not frame or x.frame_since < 0 or self._closing:
            return  # the frame was finished (or the connection is going): re-armed on the next
        reactor = self._host.reactor
        due = x.frame_since + frame
        if reactor.time() < due:
            x.frame_timer = reactor.timers.call_at(due, self._check_frame)
            return
        held = self._framer.buffered if self._framer is not None else 0
        self.log.info(
            "frame not complete within frame_timeout=%gs (%d bytes held); closing", frame, held
        )
        self._close(CloseReason.FRAME_TIMEOUT)

    def _send_paused(self, timeout: float) -> None:
        """Writing paused: the send deadline runs until the peer takes something."""
        t = self.transport
        if t is None:
            return
        x = self._extras()
        reactor = self._host.reactor
        now = x.send_since = reactor.clock.now()
        x.send_taken = self.bytes_out - t.get_write_buffer_size()
        if x.send_timer is None:
            x.send_timer = reactor.timers.call_at(now + timeout, self._check_send)

    def _check_send(self) -> None:
        """The send deadline came due: abort if the peer took nothing since, else re-arm.

        Progress is seen here, lazily (the transports report none): a peer
        that stops reading is aborted between one and two ``send_timeout``
        after the last byte it took.
        """
        x = self._extras()
        x.send_timer = None
        t = self.transport
        timeout = getattr(self._host, "send_timeout", None)
        if not timeout or t is None or self._closing or self._high >= 0:
            return  # writing resumed: the next pause_writing starts a new deadline
        reactor = self._host.reactor
        now = reactor.time()
        buffered = t.get_write_buffer_size()
        taken = self.bytes_out - buffered
        if taken != x.send_taken:
            x.send_taken = taken
            x.send_since = now
        due = x.send_since + timeout
        if now < due:
            x.send_timer = reactor.timers.call_at(due, self._check_send)
            return
        self.log.info(
            "peer took nothing of %d buffered bytes for send_timeout=%gs; aborting",
            buffered + self._wsize,
            timeout,
        )
        self._reset_on_close()
        self._abort(CloseReason.SEND_TIMEOUT)

    def _reset_on_close(self) -> None:
        """Make the coming close reset the connection (SO_LINGER 0), dropping its queue.

        As nginx's ``reset_timedout_connection`` does. A plain close leaves
        the socket orphaned in FIN-WAIT-1, still holding every byte the peer
        did not take (megabytes), until the kernel gives up probing a zero
        window minutes later; a reset frees it at once.
        """
        t = self.transport
        sock = t.get_extra_info("socket") if t is not None else None
        if sock is not None and sock.family != socket.AF_UNIX:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)

    def _trace(self, what: str, data: bytes) -> None:
        """Log one read or write at TRACE: its size and a bounded preview."""
        log = self.log
        if log.isEnabledFor(TRACE):  # the level may have risen since the connection was made
            log.log(TRACE, "%s %s", what, wire_preview(data))

    def _framing_error(self, exc: FramingError) -> None:
        reason = (
            CloseReason.FRAME_TOO_LARGE
            if isinstance(exc, FrameTooLarge)
            else CloseReason.PROTOCOL_ERROR
        )
        self.log.warning("%s; closing", exc)
        self._close(reason)

    # -- asyncio protocol interface --------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Backend callback: the socket is set up. Registers with the daemon."""
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = t = cast(asyncio.Transport, transport)
        host = self._host
        t.set_write_buffer_limits(host.write_high_water, host.write_low_water)
        if host.idle_timeout:
            self.set_idle_timeout(host.idle_timeout)
        frame = getattr(host, "frame_timeout", None)
        if frame and self._framer is not None:
            self._frame = float(frame)
        if host.log.isEnabledFor(TRACE):
            self._extras().trace = True
        host._on_connection_made(self)

    def data_received(self, data: bytes) -> None:
        """Backend callback: bytes arrived. Frames them and calls ``on_read``."""
        if self._closing:
            return
        self.bytes_in += len(data)
        host = self._host
        now = self._read_clock
        if now is not None:
            self._last_read = now()
        x = self._x
        if x is not None and x.trace:
            self._trace("read", data)
        self._flushing = True
        framer = self._framer
        if framer is None:
            try:
                host._on_read(self, data)
            except Exception as exc:
                self._host._call_error(self, exc)
        else:
            bad: FramingError | None = None
            try:
                frames = framer.feed(data)
            except FramingError as exc:
                # The peer's fault: deliver what came before the bad input, then close.
                frames, bad = exc.frames, exc
            on_frames = host._on_frames
            if on_frames is not None:
                if frames:
                    try:
                        on_frames(self, frames)
                    except Exception as exc:
                        self._host._call_error(self, exc)
            else:
                on_read = host._on_read
                for frame in frames:
                    try:
                        on_read(self, frame)
                    except Exception as exc:
                        # on_error may keep the connection: the next frames still count.
                        self._host._call_error(self, exc)
                    if self._closing:
                        break  # type: ignore[unreachable]  # on_read may close
            if bad is not None and not self._closing:
                self._framing_error(bad)
            frame = self._frame
            if frame and not self._closing:
                # A comparison or two per read; a timer only when a frame starts.
                x = self._x
                if framer.buffered:
                    if frames or x is None or x.frame_since < 0:
                        self._frame_began(self._extras(), frame)
                elif x is not None and x.frame_since >= 0:
                    x.frame_since = -1.0
        self._flushing = None
        self._flush()

    def eof_received(self) -> bool:
        """Backend callback: the peer half-closed. Calls ``on_eof`` or closes after flushing."""
        self._flush()
        # Over TLS the transport ignores True (and asyncio warns about it): a
        # TLS peer's EOF always closes, after what was written is flushed.
        keep_open = not (t := self.transport) or t.get_extra_info("ssl_object") is None
        if self._host._call_eof(self):
            return keep_open
        if not self._closing:
            self._close(CloseReason.PEER_CLOSED)
        return keep_open

    def pause_writing(self) -> None:
        """Backend callback: the transport's buffer passed the high-water mark.

        Starts the send deadline (the host's ``send_timeout``), if any.
        """
        self._high = -1
        timeout = getattr(self._host, "send_timeout", None)
        if timeout and not self._closing:
            self._send_paused(timeout)

    def resume_writing(self) -> None:
        """Backend callback: the transport's buffer fell below the low-water mark."""
        self._high = self._host.write_high_water
        x = self._x
        if x is not None and x.want_drain and not self._closing:
            x.want_drain = False
            self._host._call_drain(self)

    def connection_lost(self, exc: Exception | None) -> None:
        """Backend callback: the socket is closed. Releases everything; ``on_close`` once."""
        if self._closing == 2:
            return
        self._closing = 2
        x = self._x
        reason = x.reason if x is not None else None
        if reason is None:
            reason = CloseReason.PEER_CLOSED if exc is None else CloseReason.CONNECTION_ERROR
        self._disarm_idle()
        if x is not None:
            x.reason = reason
            for timer in (x.close_timer, x.frame_timer, x.send_timer):
                if timer is not None:
                    timer.cancel()
            x.close_timer = x.frame_timer = x.send_timer = None
            if x.timers:
                for timer in x.timers:
                    timer.cancel()
            x.timers = None
        self._cancel_flush()
        self._wbuf = None
        self._wsize = 0
        if exc is not None and reason is CloseReason.CONNECTION_ERROR:
            self.log.debug("connection lost: %s", exc)
        self._host._on_connection_lost(self, reason)
        self._framer = None


class _IdleWheel:
    """The far idle deadlines of one reactor's connections, in buckets of one second.

    Why: a deadline in a timer of its own costs an idle connection ~145 bytes
    (the :class:`Timer`, its deadline as a float object, its argument tuple)
    for the whole idle period, five minutes by default; in a bucket it costs
    a list entry (8 bytes) and the index kept in the connection. The
    connection is its own entry, as nginx's connections carry their timer
    node, and a hashed timing wheel (Varghese and Lauck; Netty's
    ``HashedWheelTimer``) holds them.

    A deadline ``due`` at least two buckets away goes in the bucket ``key =
    floor(due) - 1``, whose one timer fires at ``key`` seconds: at least one
    and less than two seconds before any of its deadlines. Each connection
    the bucket still holds then goes through ``_check_idle`` again, which
    gives it a timer of its own for its exact deadline (or, if it read since,
    a later bucket): the deadline is kept as exactly as a timer would keep it.
    Removal is O(1) (swap with the last entry), so a connection that closes
    leaves no reference behind, and a bucket left empty is dropped with its
    timer: the reactor holds nothing for connections that are gone.
    """

    __slots__ = ("_buckets", "_timers")

    def __init__(self, timers: TimerQueue) -> None:
        self._timers = timers
        self._buckets: dict[int, _IdleBucket] = {}

    def add(self, conn: Connection, due: float) -> None:
        """Hold *conn* until shortly before *due* (at least two buckets from now)."""
        key = int(due // _IDLE_BUCKET) - 1
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _IdleBucket(self, key)
            bucket.timer = self._timers.call_at(key * _IDLE_BUCKET, self._run, key)
        conns = bucket.conns
        conn._idle_pos = len(conns)
        conn._idle_wait = bucket
        conns.append(conn)

    def _run(self, key: int) -> None:
        """The bucket's time came: hand each of its connections back to ``_check_idle``."""
        conns = self._buckets.pop(key).conns
        # Detach them all first: an on_timeout may change another one's
        # timeout (which would take it out of this bucket) while this runs.
        for conn in conns:
            conn._idle_wait = None
        for conn in conns:
            if conn._idle_wait is None:
                conn._check_idle()


class _IdleBucket:
    """One bucket of an :class:`_IdleWheel`: its connections and its timer."""

    __slots__ = ("conns", "key", "timer", "wheel")

    def __init__(self, wheel: _IdleWheel, key: int) -> None:
        self.wheel = wheel
        self.key = key
        self.conns: list[Connection] = []
        self.timer: Timer | None = None

    @property
    def active(self) -> bool:
        """True, as :attr:`Timer.active`: a bucket a connection is in has yet to run."""
        return True

    def remove(self, conn: Connection) -> None:
        """Take *conn* out, in O(1): the last entry takes its place."""
        conns = self.conns
        last = conns.pop()
        if last is not conn:
            pos = conn._idle_pos
            conns[pos] = last
            last._idle_pos = pos
        elif not conns:
            # Empty: drop it and its timer, so that nothing is left behind.
            del self.wheel._buckets[self.key]
            if self.timer is not None:
                self.timer.cancel()


def _check_idle(conn: Connection) -> None:
    """The idle timer's callback: :meth:`Connection._check_idle` of ``conn``.

    A plain function with the connection as the timer's argument, not the
    bound method ``conn._check_idle``: the argument tuple (48 bytes) is
    smaller than a bound method (64 bytes, 72 compiled).
    """
    conn._check_idle()
