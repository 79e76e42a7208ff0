"""The reactor: a thin, libevent-style event loop over an asyncio backend.

One :class:`Reactor` owns one asyncio event loop (uvloop when it is
importable, else the stdlib loop; or, when asked, the pyuv backend's
:class:`~daemonkit.core.pyuvloop.PyuvEventLoop`) and everything registered on it: descriptor
watches, timers, signal handlers, listeners and spawned tasks. Every one of
them is delivered as an ordinary callback in the loop thread, and every one
has a handle whose ``cancel()``/``close()`` releases it; :meth:`Reactor.close`
releases whatever is left. :meth:`Reactor.stats` counts what is registered so
tests can prove that a closed connection leaves nothing behind.

Rules it keeps:

* Timers are events like any other. All of them live in one
  :class:`~daemonkit.core.timers.TimerQueue` armed on a single backend timer, so a
  :class:`~daemonkit.core.timers.FakeClock` can drive every timer in tests.
* Signals arrive through the loop (``add_signal_handler``), never inside other
  work.
* Accepting is done here, not by the backend, so both backends behave the
  same when the process runs out of descriptors: the listener closes the
  reserve descriptor, accepts and closes what is pending, reports it at most
  once a second, and never spins.
* A unix socket's file belongs to the listener that bound it (or that was
  handed it by an upgrade), and is removed only while it still names that
  socket: a listener never unlinks a path another process serves.
* Closing a listening socket resets every client in its accept queue, so a
  graceful stop closes with ``drain=True``: new clients are kept out first,
  then the queue is accepted, then the socket closes.
* A socket several processes accept from (``--workers``) wakes all of them
  for each client, and the busiest, already running, tends to win. A
  listener given an :class:`AcceptShare` (:meth:`Listener.share`) asks it at
  each wake-up; while it says defer, the listener leaves the queue to the others
  for :data:`ACCEPT_DEFER_DELAY` and then accepts what they left, so a
  process that is over its share never starves a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import signal
import socket
import ssl as ssl_module
import struct
import sys
import warnings
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar, cast

from daemonkit.core.durations import check_duration
from daemonkit.core.endpoints import (
    DEFAULT_BACKLOG,
    Address,
    address_of,
    bind_socket,
    parse_endpoint,
)
from daemonkit.core.timers import Clock, FakeClock, MonotonicClock, Timer, TimerQueue
from daemonkit.errors import ConfigError

if TYPE_CHECKING:
    from daemonkit.core.connection import Connection, _IdleWheel

__all__ = [
    "ACCEPT_DEFER_DELAY",
    "BACKENDS",
    "DEFAULT_CONNECT_TIMEOUT",
    "READ",
    "TIMEOUT",
    "WRITE",
    "AcceptShare",
    "Flushable",
    "Listener",
    "ProtocolFactory",
    "Reactor",
    "ReactorStats",
    "SignalHandle",
    "Watch",
    "new_event_loop",
]

# What ``--backend pyuv`` says when pyuv is missing: the one command that
# builds pyuv from its sdist with the two fixes it needs and installs it
# (daemonkit.cli.build_pyuv), in the interpreter that runs the daemon.
_PYUV_INSTALL = "python -m daemonkit build-pyuv (with the Python that runs the daemon)"

#: Event bits passed to watch callbacks: ``cb(watch, what)``.
READ = 1
WRITE = 2
TIMEOUT = 4

BACKENDS = ("auto", "uvloop", "asyncio", "pyuv")

# How many connections one readiness wakeup of a listener accepts before it
# yields to other work (the stdlib loop uses its backlog, 100; libuv accepts
# until EAGAIN). A bound keeps one busy port from starving the others.
ACCEPT_BATCH = 128

# When accept() fails for lack of descriptors and the reserve descriptor
# cannot help, stop watching the listener this long (asyncio uses 1 s:
# constants.ACCEPT_RETRY_DELAY); shorter would spin, longer loses users.
ACCEPT_RETRY_DELAY = 0.5

# At most one log line per this many seconds about accept failures; the rest
# are counted and reported in the next line.
ACCEPT_LOG_INTERVAL = 1.0

#: Seconds :meth:`Reactor.connect` waits for a connection (and its TLS
#: handshake) before it gives up: Twisted's ``connectTCP`` default, 30 s.
#: (Node and curl leave it to the kernel, which retries SYNs for ~2 minutes.)
DEFAULT_CONNECT_TIMEOUT = 30.0

# How many connections one wake-up accepts from a socket it shares fairly
# with other processes (:meth:`Listener.share`): few, so the next clients are
# weighed again (nginx's default, ``multi_accept off``, takes one).
ACCEPT_SHARED_BATCH = 4

# How long a listener whose ``defer()`` says so (it holds more than its share
# of a socket shared by several processes) leaves the queued clients to the
# others before it accepts what they left: a few scheduler ticks (1-4 ms on
# Linux) for an idle worker to wake on a loaded machine, short enough that
# a client waits no more than a LAN round trip would cost it. nginx's
# accept_mutex_delay is 500 ms; its workers hold the mutex instead.
ACCEPT_DEFER_DELAY = 0.005
# How often a deferring listener asks again, to take its turn back as soon as
# the others caught up: the finest step of the backends' timers (1 ms).
ACCEPT_DEFER_CHECK = 0.001

# The most clients a draining close accepts from one listener's queue: the
# kernel caps a backlog at net.core.somaxconn, at most 65535 on Linux.
DRAIN_ACCEPT_LIMIT = 65536

_FD_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

# Linux's SO_ATTACH_FILTER (asm-generic/socket.h), which the socket module does not name.
_SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
# One classic-BPF instruction, ``ret #0``: accept no packet.
_DROP_ALL = struct.pack("HBBI", 0x06, 0, 0, 0)

# What :meth:`Reactor.connect` says instead of a scheme it cannot honour.
_CONNECT_INSTEAD = {
    "http": "connect to tcp://HOST:PORT and speak HTTP over it",
    "ws": "connect to tcp://HOST:PORT and speak WebSocket over it",
    "https": "connect to tls://HOST:PORT and speak HTTP over it",
    "wss": "connect to tls://HOST:PORT and speak WebSocket over it",
    "udp": "use reactor.loop.create_datagram_endpoint() for datagrams",
}

# A unix socket file as its listener bound it: (path, st_dev, st_ino).
_SocketFile = tuple[str, int, int]


def _socket_file(path: str) -> _SocketFile | None:
    """The identity of the file at ``path`` now, or None if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (path, st.st_dev, st.st_ino)


def _remove_socket_file(file: _SocketFile) -> None:
    """Unlink ``file``'s path only while it still names that file (not a successor's)."""
    if _socket_file(file[0]) == file:
        with contextlib.suppress(OSError):
            os.unlink(file[0])


def _keep_out_new_clients(sock: socket.socket) -> None:
    """Make a TCP listener drop new SYNs, so its accept queue can only shrink.

    A socket filter that accepts nothing runs on every packet for the
    listener (not on its already-established children): handshakes not yet
    complete never finish, and the clients see a refusal once the socket is
    closed. Best effort: without it a client may still slip in between the
    last accept and the close.
    """
    if not sys.platform.startswith("linux"):
        return
    code = ctypes.create_string_buffer(_DROP_ALL)
    program = struct.pack("HP", 1, ctypes.addressof(code))
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, program)


T = TypeVar("T")

#: What listeners and :meth:`Reactor.connect` take: a factory of asyncio
#: protocols or of :class:`~daemonkit.core.connection.Connection`\ s. A
#: Connection has the asyncio protocol's methods without subclassing
#: ``asyncio.Protocol`` (a class with a pure-Python base cannot be a native
#: mypyc class), and the loops only ever call those methods.
ProtocolFactory: TypeAlias = "Callable[[], asyncio.BaseProtocol | Connection]"


def _asyncio_factory(factory: ProtocolFactory) -> Callable[[], asyncio.BaseProtocol]:
    """``factory`` as the loop's methods are typed: it makes protocols the loop can drive."""
    return cast("Callable[[], asyncio.BaseProtocol]", factory)


def new_event_loop(backend: str = "auto") -> tuple[asyncio.AbstractEventLoop, str]:
    """Create a new event loop for ``backend`` and return it with the backend's name.

    ``"auto"`` picks uvloop when it can be imported, else the stdlib loop;
    ``"uvloop"`` fails with :class:`~daemonkit.errors.ConfigError` when
    uvloop is missing (install it, or choose ``"asyncio"``). ``"pyuv"`` is
    :class:`~daemonkit.core.pyuvloop.PyuvEventLoop`, and fails with
    :class:`~daemonkit.errors.ConfigError` naming the command that builds
    pyuv when it is missing; "auto" never picks it.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "pyuv":
        try:
            from daemonkit.core.pyuvloop import PyuvEventLoop
        except ImportError as exc:
            raise ConfigError(
                f"backend 'pyuv' requested but pyuv cannot be imported ({exc}); "
                f"build and install it with: {_PYUV_INSTALL} "
                "(or use --backend uvloop or asyncio)"
            ) from exc
        return PyuvEventLoop(), "pyuv"
    if backend in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError as exc:
            if backend == "uvloop":
                raise ConfigError(
                    "backend 'uvloop' requested but uvloop is not installed "
                    "(pip install uvloop, or use --backend asyncio)"
                ) from exc
        else:
            return uvloop.new_event_loop(), "uvloop"
    return asyncio.SelectorEventLoop(), "asyncio"


class Flushable(Protocol):
    """What :meth:`Reactor.flush_soon` queues: a connection with gathered writes."""

    def _flush_soon(self) -> None: ...


class AcceptShare(Protocol):
    """What a listener whose socket other processes accept from asks (:meth:`Listener.share`)."""

    def defer(self) -> bool:
        """At a wake-up for new clients: True to leave them to the others for a moment."""
        ...

    def accepted(self) -> None:
        """After the listener accepted some: the process's load changed (tell the others)."""
        ...


@dataclass(frozen=True)
class ReactorStats:
    """What a reactor has registered right now (see :meth:`Reactor.stats`)."""

    watches: int
    timers: int
    tasks: int
    signals: int
    listeners: int


class Watch:
    """A persistent interest in a descriptor's readiness, made by :meth:`Reactor.watch`.

    The callback runs as ``callback(watch, what)`` with ``what`` one of
    :data:`READ`, :data:`WRITE` or :data:`TIMEOUT` each time the descriptor is
    ready, until :meth:`cancel`. With a ``timeout`` it also runs with
    :data:`TIMEOUT` when no readiness came for that many seconds (the timeout
    restarts after every event, as libevent's ``EV_PERSIST`` does).
    """

    __slots__ = ("_last", "_reactor", "_timer", "callback", "events", "fd", "fileobj", "timeout")

    def __init__(
        self,
        reactor: Reactor,
        fileobj: Any,
        fd: int,
        events: int,
        callback: Callable[[Watch, int], object],
        timeout: float | None,
    ) -> None:
        self._reactor: Reactor | None = reactor
        self.fileobj = fileobj
        self.fd = fd
        self.events = events
        self.callback = callback
        self.timeout = timeout
        self._timer: Timer | None = None
        self._last = 0.0

    @property
    def active(self) -> bool:
        """True until :meth:`cancel` (or the reactor's close) releases the watch."""
        return self._reactor is not None

    def cancel(self) -> None:
        """Stop watching; idempotent. The descriptor itself stays open: its owner closes it."""
        reactor = self._reactor
        if reactor is None:
            return
        self._reactor = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        reactor._unwatch(self)

    def _fire(self, what: int) -> None:
        reactor = self._reactor
        if reactor is None:
            return
        if self.timeout is not None:
            self._last = reactor.clock.now()
        try:
            self.callback(self, what)
        except Exception:
            reactor.log.exception("watch callback %r failed", self.callback)

    def _on_deadline(self) -> None:
        reactor = self._reactor
        if reactor is None or self.timeout is None:
            return
        now = reactor.clock.now()
        due = self._last + self.timeout
        if now >= due:
            self._last = now
            self._timer = reactor.timers.call_at(now + self.timeout, self._on_deadline)
            try:
                self.callback(self, TIMEOUT)
            except Exception:
                reactor.log.exception("watch callback %r failed", self.callback)
        else:
            self._timer = reactor.timers.call_at(due, self._on_deadline)


class SignalHandle:
    """A signal callback registered with :meth:`Reactor.on_signal`; ``cancel()`` removes it."""

    __slots__ = ("_reactor", "callback", "signum")

    def __init__(self, reactor: Reactor, signum: int, callback: Callable[[int], object]) -> None:
        self._reactor: Reactor | None = reactor
        self.signum = signum
        self.callback = callback

    def cancel(self) -> None:
        """Remove this callback; the signal's default action returns with the last one."""
        reactor = self._reactor
        if reactor is not None:
            self._reactor = None
            reactor._remove_signal(self)


class Listener:
    """A listening socket and its accept loop, made by :meth:`Reactor.listen`.

    Each accepted connection is handed to ``protocol_factory()`` through the
    backend's ``connect_accepted_socket``. ``admit()`` (when given) is asked
    before that: when it says no, the socket is closed at once and counted in
    :attr:`rejected`, so a client over the limit learns it immediately
    instead of hanging in the backlog.
    """

    def __init__(
        self,
        reactor: Reactor,
        sock: socket.socket,
        protocol_factory: ProtocolFactory,
        admit: Callable[[], bool] | None,
        *,
        scheme: str = "tcp",
        ssl: ssl_module.SSLContext | None = None,
        ssl_handshake_timeout: float | None = None,
        socket_file: _SocketFile | None = None,
    ) -> None:
        self._reactor: Reactor | None = reactor
        self.sock = sock
        self.address: Address = address_of(sock, scheme)
        #: The unix socket file this listener owns and removes at close
        #: (path, st_dev, st_ino), or None: one it did not bind, or handed over.
        self.socket_file = socket_file
        self._ssl = ssl
        self._ssl_timeout = ssl_handshake_timeout
        self._factory = protocol_factory
        self._admit = admit
        self._tcp = sock.family in (socket.AF_INET, socket.AF_INET6)
        self.accepted = 0
        self.rejected = 0
        self.exhausted = 0
        self.pending = 0
        #: Wake-ups on which the :meth:`share` left the queue to the other processes.
        self.deferred = 0
        self._share: AcceptShare | None = None
        self._deferred_until = 0.0
        self._reading = False
        self._retry: Timer | None = None
        self._suppressed = 0
        self._last_log = float("-inf")

    @property
    def active(self) -> bool:
        """True until :meth:`close`."""
        return self._reactor is not None

    def start(self) -> None:
        """Begin accepting (idempotent)."""
        reactor = self._reactor
        if reactor is None or self._reading:
            return
        reactor.loop.add_reader(self.sock.fileno(), self._on_readable)
        self._reading = True

    def pause(self) -> None:
        """Stop accepting for now; pending clients wait in the kernel backlog.

        Also withdraws a resume the listener had planned for itself (after a
        deferral or a shortage of descriptors): only :meth:`start` resumes.
        """
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        reactor = self._reactor
        if reactor is not None and self._reading:
            reactor.loop.remove_reader(self.sock.fileno())
            self._reading = False

    def share(self, share: AcceptShare | None) -> None:
        """Share the accept queue fairly with other processes accepting from this socket.

        ``share.defer()`` is asked at each wake-up for new clients; when it
        returns True (this process holds more than its share) the listener
        stops watching the socket for :data:`ACCEPT_DEFER_DELAY` seconds, so
        an idle process accepts them first, then accepts whatever is still
        queued and watches again: a deferral delays a client, never drops
        it; it takes its turn back sooner, at the first of its checks every
        :data:`ACCEPT_DEFER_CHECK` seconds at which ``share.defer()`` says
        False. ``share.accepted()`` is called after each batch of accepts.
        ``None`` accepts at once again (the default). Deferrals are counted
        in :attr:`deferred`.
        """
        self._share = share

    def claim_socket_file(self, file: _SocketFile) -> None:
        """Own ``file`` (path, st_dev, st_ino) from now on: :meth:`close` removes it.

        For the new process of an upgrade once it took over: the old one
        bound the file and hands it over with the socket.
        """
        self.socket_file = file

    def release_socket_file(self) -> None:
        """Leave the socket file alone at :meth:`close`: another process serves it now."""
        self.socket_file = None

    def close(self, *, drain: bool = False) -> None:
        """Stop accepting and close the socket; idempotent.

        The unix socket file is removed if this listener owns it
        (:attr:`socket_file`) and the path still names it. With ``drain``
        (a graceful stop of the last process holding the socket) the
        clients already in the accept queue are not reset: new ones are kept
        out first (a TCP listener drops their SYNs, a unix one's file is
        removed), then every queued client is accepted into
        ``protocol_factory()`` without asking ``admit()`` (they connected,
        and maybe sent a request, before the stop), then the socket closes.
        Never drain a socket another process still accepts from (an
        upgrade): its queue survives this close.
        """
        reactor = self._reactor
        if reactor is None:
            return
        self.pause()
        file, self.socket_file = self.socket_file, None
        if drain:
            if self._tcp:
                _keep_out_new_clients(self.sock)
            elif file is not None:
                _remove_socket_file(file)
                file = None
            self._accept_queued(reactor)
        self._reactor = None
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        reactor._listeners.discard(self)
        if file is not None:
            _remove_socket_file(file)
        self.sock.close()

    def _accept_queued(self, reactor: Reactor) -> None:
        """Accept every client queued now, bypassing ``admit`` (a draining close)."""
        for _ in range(DRAIN_ACCEPT_LIMIT):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._report(reactor, "accept() on %s while stopping failed: %s", exc)
                return
            self._set_up(reactor, conn)

    def _on_readable(self) -> None:
        reactor = self._reactor
        if reactor is None:
            return
        share = self._share
        if share is None:
            self._accept(reactor, ACCEPT_BATCH)
        elif share.defer():
            self.deferred += 1
            self.pause()
            self._deferred_until = reactor.clock.now() + ACCEPT_DEFER_DELAY
            self._retry = reactor.timers.call_later(ACCEPT_DEFER_CHECK, self._after_deferral)
        else:
            self._accept(reactor, ACCEPT_SHARED_BATCH)
            share.accepted()

    def _after_deferral(self) -> None:
        """Ask again; once the others caught up, or at the deadline, accept what they left."""
        self._retry = None
        reactor = self._reactor
        if reactor is None:
            return
        share = self._share
        if share is not None and reactor.clock.now() < self._deferred_until and share.defer():
            self._retry = reactor.timers.call_later(ACCEPT_DEFER_CHECK, self._after_deferral)
            return
        self._accept(reactor, ACCEPT_SHARED_BATCH)
        if share is not None:
            share.accepted()
        if self._retry is None:  # not paused again for lack of descriptors
            self.start()

    def _accept(self, reactor: Reactor, batch: int) -> None:
        """Accept up to ``batch`` queued clients into ``protocol_factory()``."""
        sock = self.sock
        admit = self._admit
        for _ in range(batch):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in _FD_EXHAUSTED:
                    self._on_exhausted(reactor, exc)
                else:
                    self._report(reactor, "accept() on %s failed: %s", exc)
                return
            if admit is not None and not admit():
                self.rejected += 1
                conn.close()
                continue
            self._set_up(reactor, conn)

    def _set_up(self, reactor: Reactor, conn: socket.socket) -> None:
        self.accepted += 1
        conn.setblocking(False)
        if self._tcp:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending += 1
        reactor.spawn(self._attach(reactor, conn))

    async def _attach(self, reactor: Reactor, conn: socket.socket) -> None:
        """Hand an accepted socket to the backend; a peer gone meanwhile is not an error."""
        try:
            if self._ssl is None:
                await reactor.loop.connect_accepted_socket(_asyncio_factory(self._factory), conn)
            else:
                await reactor.loop.connect_accepted_socket(
                    _asyncio_factory(self._factory),
                    conn,
                    ssl=self._ssl,
                    ssl_handshake_timeout=self._ssl_timeout,
                )
        except (OSError, asyncio.TimeoutError, ConnectionError) as exc:
            # e.g. reset before the transport existed, or a TLS handshake that
            # failed or never finished: nothing to report but at debug.
            reactor.log.debug("accepted connection on %s failed to attach: %r", self.address, exc)
            conn.close()
        finally:
            self.pending -= 1

    def _on_exhausted(self, reactor: Reactor, exc: OSError) -> None:
        """Out of descriptors: shed the pending clients instead of spinning (libuv's trick)."""
        self.exhausted += 1
        shed = 0
        if reactor._release_reserve():
            while True:
                try:
                    conn, _ = self.sock.accept()
                except OSError:
                    break
                conn.close()
                shed += 1
            reactor._restore_reserve()
        self.rejected += shed
        self._report(
            reactor,
            "out of file descriptors at accept() on %s (%s): closed %d pending connection(s); "
            "raise the open-file limit (ulimit -n) or lower max_connections",
            exc,
            shed,
        )
        if shed == 0:
            # Nothing could be shed: stop watching for a moment instead of spinning.
            self.pause()
            self._retry = reactor.timers.call_later(ACCEPT_RETRY_DELAY, self._resume)

    def _resume(self) -> None:
        self._retry = None
        self.start()

    def _report(self, reactor: Reactor, msg: str, exc: OSError, *args: object) -> None:
        now = reactor.clock.now()
        if now - self._last_log < ACCEPT_LOG_INTERVAL:
            self._suppressed += 1
            return
        self._last_log = now
        suffix = ""
        if self._suppressed:
            suffix = f" (and {self._suppressed} similar failure(s) since the last report)"
            self._suppressed = 0
        reactor.log.error(msg + suffix, self.address, exc.strerror or exc, *args)


class Reactor:
    """A libevent-style reactor: descriptor watches, timers, signals, listeners, tasks.

    ``Reactor(backend="auto")`` creates and owns a new asyncio event loop
    (:func:`new_event_loop`). ``clock`` defaults to the monotonic clock; pass
    a :class:`~daemonkit.core.timers.FakeClock` to drive every timer by hand in
    tests (then timers fire only on ``clock.advance()``).

    Use it from one thread. :meth:`run` blocks until :meth:`stop`;
    :meth:`close` releases everything still registered and closes the loop.
    """

    def __init__(
        self,
        backend: str = "auto",
        *,
        clock: Clock | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.loop, self.backend = new_event_loop(backend)
        self.log = log or logging.getLogger("daemonkit.reactor")
        self.clock: Clock = clock or MonotonicClock()
        self._backend_timer: asyncio.TimerHandle | None = None
        self._armed_for: float | None = None
        self.timers = TimerQueue(
            self.clock,
            arm=None if isinstance(self.clock, FakeClock) else self._arm,
            on_error=self._on_timer_error,
        )
        #: The far idle deadlines of the connections (see daemonkit.core.connection),
        #: made by the first connection whose idle deadline is far.
        self.idle_wheel: _IdleWheel | None = None
        self._readers: dict[int, Watch] = {}
        self._writers: dict[int, Watch] = {}
        self._signals: dict[int, list[SignalHandle]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listeners: set[Listener] = set()
        self._reserve_fd: int | None = None
        self._closed = False
        # Connections with writes gathered outside a read: flushed together
        # by one callback at the end of this loop turn (see flush_soon).
        self._to_flush: list[Flushable] = []
        # uvloop listens for signals only while it runs: see _catch_early_signals.
        self._early: tuple[socket.socket, socket.socket] | None = None
        self._early_old_fd = -1
        self.loop.set_exception_handler(self._on_loop_exception)

    # -- time and timers -------------------------------------------------

    def time(self) -> float:
        """The reactor's clock, in seconds (monotonic, or the fake clock's)."""
        return self.clock.now()

    def call_soon(self, fn: Callable[..., object], *args: object) -> asyncio.Handle:
        """Run ``fn(*args)`` on the next loop turn; returns a handle with ``cancel()``."""
        return self.loop.call_soon(fn, *args)

    def flush_soon(self, item: Flushable) -> None:
        """Call ``item._flush_soon()`` on the next loop turn, with all the others queued.

        A broadcast to 1,000 connections queues 1,000 flushes; one loop
        callback runs them all, instead of a handle per connection. An item
        queued twice is flushed twice (the second finds nothing to send).
        """
        queue = self._to_flush
        if not queue:
            self.loop.call_soon(self._run_flushes)
        queue.append(item)

    def _run_flushes(self) -> None:
        queue = self._to_flush
        self._to_flush = []  # flushes may queue more: those go to the next turn
        for item in queue:
            try:
                item._flush_soon()
            except Exception as exc:  # a bug, not the peer's doing: report, flush the rest
                self.loop.call_exception_handler(
                    {"message": "flushing gathered writes failed", "exception": exc}
                )

    def call_later(self, delay: float, fn: Callable[..., object], *args: object) -> Timer:
        """Run ``fn(*args)`` once after ``delay`` seconds; ``timer.cancel()`` to withdraw."""
        return self.timers.call_later(delay, fn, *args)

    def call_at(self, when: float, fn: Callable[..., object], *args: object) -> Timer:
        """Run ``fn(*args)`` once when :meth:`time` reaches ``when``."""
        return self.timers.call_at(when, fn, *args)

    def call_every(self, interval: float, fn: Callable[..., object], *args: object) -> Timer:
        """Run ``fn(*args)`` every ``interval`` seconds on a drift-free grid.

        Ticks come at start + k*interval; when the loop was too busy to run
        one on time, the missed ticks are skipped and counted in
        ``timer.skipped`` rather than run back to back.
        """
        return self.timers.call_every(interval, fn, *args)

    def _arm(self, when: float | None) -> None:
        if when == self._armed_for:
            return
        if self._backend_timer is not None:
            self._backend_timer.cancel()
            self._backend_timer = None
        self._armed_for = when
        if when is not None and not self._closed:
            delay = max(0.0, when - self.clock.now())
            self._backend_timer = self.loop.call_later(delay, self._on_backend_timer)

    def _on_backend_timer(self) -> None:
        self._backend_timer = None
        self._armed_for = None
        self.timers.run_due()
        if self._armed_for is None and self._backend_timer is None:
            self._arm(self.timers.next_deadline())

    def _on_timer_error(self, timer: Timer, exc: BaseException) -> None:
        self.log.error("timer callback failed: %r", timer, exc_info=exc)

    # -- descriptors -----------------------------------------------------

    def watch(
        self,
        fileobj: Any,
        events: int,
        callback: Callable[[Watch, int], object],
        *,
        timeout: float | None = None,
    ) -> Watch:
        """Call ``callback(watch, what)`` whenever ``fileobj`` is ready for ``events``.

        ``fileobj`` is a descriptor number or anything with ``fileno()``;
        ``events`` is :data:`READ`, :data:`WRITE` or both. The watch persists
        until ``watch.cancel()``. With ``timeout``, the callback also gets
        :data:`TIMEOUT` after that many seconds without readiness. A
        descriptor may carry one READ and one WRITE watch; a second raises
        ``ValueError`` (cancel the first).
        """
        if not events & (READ | WRITE) or events & ~(READ | WRITE):
            raise ValueError("events must be READ, WRITE or READ | WRITE")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive seconds or None")
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        if events & READ and fd in self._readers:
            raise ValueError(f"descriptor {fd} already has a READ watch; cancel it first")
        if events & WRITE and fd in self._writers:
            raise ValueError(f"descriptor {fd} already has a WRITE watch; cancel it first")
        w = Watch(self, fileobj, fd, events, callback, timeout)
        if events & READ:
            self.loop.add_reader(fd, w._fire, READ)
            self._readers[fd] = w
        if events & WRITE:
            self.loop.add_writer(fd, w._fire, WRITE)
            self._writers[fd] = w
        if timeout is not None:
            w._last = self.clock.now()
            w._timer = self.timers.call_later(timeout, w._on_deadline)
        return w

    def _unwatch(self, w: Watch) -> None:
        if self._readers.get(w.fd) is w:
            del self._readers[w.fd]
            self.loop.remove_reader(w.fd)
        if self._writers.get(w.fd) is w:
            del self._writers[w.fd]
            self.loop.remove_writer(w.fd)

    # -- signals ---------------------------------------------------------

    def on_signal(self, signum: int, callback: Callable[[int], object]) -> SignalHandle:
        """Call ``callback(signum)`` in the loop each time the process gets ``signum``.

        Several callbacks may share a signal; they run in registration order.
        Must be called from the main thread (a Python rule for signals).
        ``handle.cancel()`` removes the callback.
        """
        handle = SignalHandle(self, signum, callback)
        handlers = self._signals.get(signum)
        if handlers is None:
            self.loop.add_signal_handler(signum, self._dispatch_signal, signum)
            handlers = self._signals[signum] = []
            if self.backend == "uvloop" and not self.loop.is_running():
                self._catch_early_signals()
        handlers.append(handle)
        return handle

    def _catch_early_signals(self) -> None:
        """Keep the signals that arrive before uvloop runs, to replay them once it does.

        uvloop points Python's signal wakeup fd at its own pipe only while the
        loop runs; a signal in between (a SIGHUP or SIGTERM right after the
        daemon said it was listening) would wait for the next signal to be
        noticed. Until the loop runs, the wakeup fd is a socket pair of ours;
        :meth:`_replay_early_signals` re-raises what it caught.
        """
        if self._early is not None:
            return
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        try:
            self._early_old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        except ValueError:  # not the main thread: no signal handlers either
            reader.close()
            writer.close()
            return
        self._early = (reader, writer)

    def _replay_early_signals(self) -> None:
        early = self._early
        if early is None:
            return
        caught = b""
        while True:
            try:
                chunk = early[0].recv(4096)
            except InterruptedError:
                continue
            except BlockingIOError:
                break
            if not chunk:
                break
            caught += chunk
        # Once each, in order: the kernel coalesces a pending signal too.
        for signum in dict.fromkeys(caught):
            if signum in self._signals:
                signal.raise_signal(signum)  # the running loop notices it now

    def _dispatch_signal(self, signum: int) -> None:
        for handle in list(self._signals.get(signum, ())):
            try:
                handle.callback(signum)
            except Exception:
                self.log.exception("signal callback for %s failed", signal.Signals(signum).name)

    def _remove_signal(self, handle: SignalHandle) -> None:
        handlers = self._signals.get(handle.signum)
        if handlers is None or handle not in handlers:
            return
        handlers.remove(handle)
        if not handlers:
            del self._signals[handle.signum]
            if not self.loop.is_closed():
                self.loop.remove_signal_handler(handle.signum)

    # -- tasks -----------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run asyncio code as a task the reactor owns.

        The reactor keeps a strong reference (the loop keeps only a weak one),
        logs the task's exception if it fails, and cancels it at :meth:`close`.
        """
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._on_task_done)
        return task

    def _on_task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.log.error("task %s failed", task.get_name(), exc_info=exc)

    # -- sockets ---------------------------------------------------------

    def listen(
        self,
        endpoint: str | Address,
        protocol_factory: ProtocolFactory,
        *,
        backlog: int = DEFAULT_BACKLOG,
        admit: Callable[[], bool] | None = None,
        start: bool = True,
        ssl: ssl_module.SSLContext | None = None,
        ssl_handshake_timeout: float | None = None,
        sock: socket.socket | None = None,
    ) -> Listener:
        """Bind ``endpoint`` now and accept connections into ``protocol_factory()``.

        Binding happens before this returns, so ``OSError`` (address in use,
        permission denied) and :class:`~daemonkit.errors.EndpointError` reach
        the caller at once. ``listener.address`` is the bound address (port 0
        resolved). ``admit()``, when given, is asked before each connection is
        set up; a refused one is closed at once. With ``start=False`` call
        ``listener.start()`` later. ``sock`` is a listening socket to use
        instead of binding (one inherited from systemd or from the process
        being upgraded); the listener owns it from then on, but not its unix
        socket file, which it did not bind (see :meth:`Listener.claim_socket_file`).
        With ``ssl`` (a server-side context) each connection is TLS; a
        handshake not done within ``ssl_handshake_timeout`` seconds drops the
        connection.
        """
        address = parse_endpoint(endpoint) if isinstance(endpoint, str) else endpoint
        file: _SocketFile | None = None
        if sock is None:
            sock = bind_socket(address, backlog=backlog)
            if address.scheme == "unix":
                file = _socket_file(address.path)  # ours: we just bound it
        else:
            sock.setblocking(False)  # an inherited listening socket, already bound
        self._ensure_reserve()
        listener = Listener(
            self,
            sock,
            protocol_factory,
            admit,
            scheme=address.scheme,
            ssl=ssl,
            ssl_handshake_timeout=ssl_handshake_timeout,
            socket_file=file,
        )
        self._listeners.add(listener)
        if start:
            listener.start()
        return listener

    async def connect(
        self,
        endpoint: str | Address,
        protocol_factory: ProtocolFactory,
        *,
        ssl: ssl_module.SSLContext | None = None,
        timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
        """Open an outbound connection to a ``tcp://``, ``tls://`` or ``unix://`` endpoint.

        A coroutine: ``await`` it from spawned code, or ``reactor.spawn()`` it.
        ``tcp`` and ``unix`` are plain. ``tls`` is TLS that verifies the
        server's certificate and name (``ssl.create_default_context()``, the
        endpoint's host as server name); pass ``ssl`` (a client context, e.g.
        one trusting a private CA) to change that. Other schemes raise
        :class:`~daemonkit.errors.ConfigError` saying what to use instead,
        as does ``ssl`` with a scheme that is not ``tls``.

        Returns the backend's ``(transport, protocol)``. Raises ``OSError``
        (refused, unreachable), ``ssl.SSLError`` (verification failed), or
        ``TimeoutError`` naming the endpoint when the connection and its
        handshake are not done within ``timeout`` seconds
        (:data:`DEFAULT_CONNECT_TIMEOUT`), for the caller to handle.
        """
        address = parse_endpoint(endpoint) if isinstance(endpoint, str) else endpoint
        seconds = check_duration("connect timeout", timeout, positive=True)
        instead = _CONNECT_INSTEAD.get(address.scheme)
        if instead is not None:
            raise ConfigError(
                f"connect({address}): {address.scheme}:// is not supported; {instead}"
            )
        if ssl is not None and address.scheme != "tls":
            raise ConfigError(f"connect({address}): ssl= is for tls:// endpoints only")
        factory = _asyncio_factory(protocol_factory)
        if address.scheme == "unix":
            opening = self.loop.create_unix_connection(factory, address.path)
        elif address.scheme == "tls":
            if not address.host:
                raise ConfigError(f"connect({address}): a tls endpoint needs a host to verify")
            context = ssl if ssl is not None else ssl_module.create_default_context()
            opening = self.loop.create_connection(
                factory,
                address.host,
                address.port,
                ssl=context,
                server_hostname=address.host,
            )
        else:
            opening = self.loop.create_connection(factory, address.host, address.port)
        try:
            return await asyncio.wait_for(opening, seconds)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"connecting to {address}: no answer within {seconds:g}s (timeout=)"
            ) from None

    def _ensure_reserve(self) -> None:
        if self._reserve_fd is None:
            with contextlib.suppress(OSError):
                self._reserve_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    def _release_reserve(self) -> bool:
        if self._reserve_fd is None:
            return False
        os.close(self._reserve_fd)
        self._reserve_fd = None
        return True

    def _restore_reserve(self) -> None:
        self._ensure_reserve()

    # -- running ---------------------------------------------------------

    def run(self) -> None:
        """Run the loop until :meth:`stop` is called."""
        if self._early is not None:
            self.loop.call_soon(self._replay_early_signals)
        self.loop.run_forever()

    def run_until_complete(self, awaitable: Coroutine[Any, Any, T]) -> T:
        """Run the loop until ``awaitable`` completes and return its result."""
        if self._early is not None:
            self.loop.call_soon(self._replay_early_signals)
        return self.loop.run_until_complete(awaitable)

    def stop(self) -> None:
        """Make :meth:`run` return after the current loop turn; safe to call from callbacks."""
        self.loop.stop()

    def stats(self) -> ReactorStats:
        """Count what is registered now: watches, active timers, tasks, signals, listeners."""
        watches = {id(w) for w in self._readers.values()} | {id(w) for w in self._writers.values()}
        return ReactorStats(
            watches=len(watches),
            timers=len(self.timers),
            tasks=len(self._tasks),
            signals=sum(len(h) for h in self._signals.values()),
            listeners=len(self._listeners),
        )

    def close(self) -> None:
        """Release everything still registered and close the loop; idempotent.

        Listeners close, watches and signal handlers are removed, timers are
        cancelled, spawned tasks are cancelled and awaited. Must not be called
        while :meth:`run` is running.
        """
        if self._closed:
            return
        for listener in list(self._listeners):
            listener.close()
        for w in list(self._readers.values()) + list(self._writers.values()):
            w.cancel()
        for handlers in list(self._signals.values()):
            for handle in list(handlers):
                handle.cancel()
        self.timers.clear()
        self._arm(None)
        if self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        with contextlib.suppress(RuntimeError):
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self._closed = True
        if self._reserve_fd is not None:
            os.close(self._reserve_fd)
            self._reserve_fd = None
        self.loop.close()
        early = self._early
        if early is not None:
            self._early = None
            with contextlib.suppress(ValueError):
                current = signal.set_wakeup_fd(self._early_old_fd)
                if current != early[1].fileno():
                    signal.set_wakeup_fd(current)  # no longer ours: leave it be
            early[0].close()
            early[1].close()

    def __del__(self, _warn: Any = warnings.warn) -> None:
        # The owner forgot close(): say so, as asyncio does for its loops.
        if not getattr(self, "_closed", True):
            _warn(f"unclosed {self!r}; call Reactor.close()", ResourceWarning, source=self)

    def _on_loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = context.get("message", "unhandled exception in the event loop")
        self.log.error("%s", message, exc_info=exc if isinstance(exc, BaseException) else None)
