"""Daemon: the base class a user subclasses to write a network daemon.

The class attributes are the settings (the CLI overrides them), the ``on_*``
methods are the callbacks, and the helpers (``after``, ``every``,
``cleanup``, ``spawn``, ``broadcast``, ``stop``) are what a callback may use.
See :class:`Daemon` for the legal order of callbacks.

Ownership: the daemon owns its listeners, its connections, the timers and
tasks it made, and whatever was registered with :meth:`Daemon.cleanup`; a
stop releases all of them, in reverse order of registration for cleanups.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import resource
import signal
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from typing import Any, ClassVar, TypeVar

from daemonkit.connection import CloseReason, Connection
from daemonkit.endpoints import Address, parse_endpoint
from daemonkit.errors import ConfigError, DaemonkitError
from daemonkit.framing import Framer, Raw
from daemonkit.reactor import Listener, Reactor
from daemonkit.timers import Clock, Timer

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_WRITE_BUFFER",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "DEFAULT_WRITE_HIGH_WATER",
    "DEFAULT_WRITE_LOW_WATER",
    "ConnectionSet",
    "Daemon",
    "StartError",
]

T = TypeVar("T")

#: Write buffer watermarks: asyncio's transports default to 64 KiB high and
#: high/4 low (selector_events._FlowControlMixin); Node's highWaterMark is 16 KiB.
DEFAULT_WRITE_HIGH_WATER = 64 * 1024
#: Low-water mark: ``on_drain`` fires once the buffer falls below it.
DEFAULT_WRITE_LOW_WATER = 16 * 1024
#: Hard cap on one connection's output buffer: 16x the high mark. A client
#: that falls this far behind is not reading; Netty and Node would grow without
#: bound here, which is how a month-long run dies.
DEFAULT_MAX_WRITE_BUFFER = 1024 * 1024
#: Default connection cap, further bounded by 90 % of the open-file limit so
#: log files, the control socket and outbound connections still get descriptors.
DEFAULT_MAX_CONNECTIONS = 10_000
#: Share of the open-file limit that connections may use by default.
FD_SHARE_FOR_CONNECTIONS = 0.9
#: Seconds a graceful close waits for the peer to take buffered data (nginx's
#: lingering_timeout is 5 s, its send_timeout 60 s).
DEFAULT_CLOSE_TIMEOUT = 10.0
#: Seconds a graceful stop waits for connections to drain; Kubernetes sends
#: SIGKILL 30 s after SIGTERM, so stay well inside that.
DEFAULT_SHUTDOWN_TIMEOUT = 10.0
#: Seconds an immediate stop waits for aborted connections to report
#: connection_lost (they do so on the next loop turn; this only guards a bug).
STOP_BACKSTOP = 2.0


class StartError(DaemonkitError):
    """The daemon could not start: a listener failed to bind or ``on_start`` raised."""


class ConnectionSet:
    """The live connections of a daemon: accepted, ``on_close`` not yet called.

    Supports ``len()``, iteration (over a snapshot, so closing while
    iterating is safe), ``in`` and :meth:`get` by connection id.
    """

    __slots__ = ("_by_id",)

    def __init__(self) -> None:
        self._by_id: dict[int, Connection] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._by_id.values()))

    def __contains__(self, conn: object) -> bool:
        return isinstance(conn, Connection) and self._by_id.get(conn.id) is conn

    def get(self, conn_id: int) -> Connection | None:
        """The live connection with this id, or None."""
        return self._by_id.get(conn_id)

    def _add(self, conn: Connection) -> None:
        self._by_id[conn.id] = conn

    def _remove(self, conn: Connection) -> None:
        self._by_id.pop(conn.id, None)


def _open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit and return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return int(soft)


class Daemon:
    """Subclass this, set ``listen``, and fill in the callbacks you need.

    Settings (class attributes; instance keyword arguments and the CLI
    override them): ``listen``, ``framing``, ``max_connections``,
    ``idle_timeout``, ``write_high_water``, ``write_low_water``,
    ``max_write_buffer``, ``close_timeout``, ``shutdown_timeout``, ``name``,
    ``signals``.

    Callbacks are plain methods, never ``async``, all optional. The legal
    order, as a grammar::

        on_start
          ( on_accept (on_read | on_frames | on_drain | on_eof | on_timeout | on_error)*
            on_close )*
          (on_reload | on_signal)*
        on_stop

    Define ``on_frames(conn, frames)`` instead of ``on_read`` to get all the
    frames one read completed as one list (answer them with
    ``conn.send_all()``): one call per read instead of one per frame.

    ``on_close`` is called exactly once for every connection that got
    ``on_accept``, with a :class:`~daemonkit.connection.CloseReason`.
    Connections still open at stop get ``on_close(conn, "shutdown")`` after
    ``on_stop``.

    An exception in a connection callback goes to ``on_error(conn, exc)``,
    whose default logs it with the traceback and the connection's context
    and closes that connection only; the daemon keeps running. An exception
    in ``on_start`` aborts the start (:class:`StartError`).
    """

    # -- settings --------------------------------------------------------
    listen: ClassVar[str | Sequence[str]] = "tcp://127.0.0.1:7000"
    framing: ClassVar[Any] = None
    max_connections: int | None = None
    idle_timeout: float | None = None
    write_high_water: int = DEFAULT_WRITE_HIGH_WATER
    write_low_water: int = DEFAULT_WRITE_LOW_WATER
    max_write_buffer: int = DEFAULT_MAX_WRITE_BUFFER
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    name: str | None = None
    #: Extra signals delivered to :meth:`on_signal` (SIGTERM/SIGINT stop,
    #: SIGHUP reloads and SIGUSR1 reopens the log file without it).
    signals: ClassVar[Sequence[int]] = ()

    _SETTINGS: ClassVar[tuple[str, ...]] = (
        "listen",
        "framing",
        "max_connections",
        "idle_timeout",
        "write_high_water",
        "write_low_water",
        "max_write_buffer",
        "close_timeout",
        "shutdown_timeout",
        "name",
        "signals",
    )

    def __init__(self, **settings: Any) -> None:
        for key, value in settings.items():
            if key not in self._SETTINGS:
                raise ConfigError(
                    f"unknown setting {key!r} for {type(self).__name__}; "
                    f"valid: {', '.join(self._SETTINGS)}"
                )
            setattr(self, key, value)
        if self.name is None:
            self.name = type(self).__name__
        self.log = logging.getLogger(f"daemonkit.{self.name}")
        #: The live connections (see :class:`ConnectionSet`).
        self.connections = ConnectionSet()
        #: The bound listeners, in ``listen`` order, while running.
        self.listeners: list[Listener] = []
        self._reactor: Reactor | None = None
        self._ids = itertools.count(1)
        self._cleanups: list[Any] = []
        self._timers: list[Timer] = []
        self._stopping = False
        self._stopped = False
        self._drain_timer: Timer | None = None
        self._backstop: asyncio.TimerHandle | None = None
        self._on_log_reopen: Callable[[], object] | None = None
        self.endpoints = self._validate()
        #: Counters since start: ``accepted`` and ``closed`` connections,
        #: ``rejected`` ones (over ``max_connections`` or while stopping) and
        #: callback ``errors``. Read them, e.g. for a stats line; do not write.
        self.stats = {"accepted": 0, "closed": 0, "rejected": 0, "errors": 0}
        self._on_read: Callable[[Connection, Any], object] = self.on_read
        on_frames = getattr(self, "on_frames", None)
        if on_frames is not None and not callable(on_frames):
            raise ConfigError(f"{type(self).__name__}.on_frames must be a method")
        self._on_frames: Callable[[Connection, list[Any]], object] | None = on_frames

    # -- callbacks (override) --------------------------------------------

    def on_start(self) -> None:
        """Called once, after the listeners are bound, before the first accept."""

    def on_stop(self) -> None:
        """Called once at a graceful stop, after accepting stopped, before connections close."""

    def on_reload(self) -> None:
        """Called on SIGHUP: re-read configuration here."""

    def on_signal(self, signum: int) -> None:
        """Called for each signal listed in the ``signals`` setting."""

    def on_accept(self, conn: Connection) -> None:
        """A client connected."""

    def on_read(self, conn: Connection, data: Any) -> None:
        """Bytes (raw framing) or one frame arrived from ``conn``."""

    def on_drain(self, conn: Connection) -> None:
        """``conn.write()`` returned False earlier and ``conn`` can take more again.

        That is: the transport's buffer fell below the low-water mark, or the
        kernel took the gathered bytes at once so the transport never paused.
        """

    def on_timeout(self, conn: Connection) -> None:
        """No input for ``idle_timeout`` seconds. Default: close with reason "idle timeout"."""
        conn.log.info("idle for %.3gs; closing", conn._idle or 0.0)
        conn._close(CloseReason.IDLE_TIMEOUT)

    def on_close(self, conn: Connection, reason: CloseReason) -> None:
        """``conn`` is gone (exactly once per accepted connection)."""

    def on_error(self, conn: Connection, exc: Exception) -> None:
        """A callback for ``conn`` raised ``exc``. Default: log it and close ``conn``."""
        conn.log.error("%s raised in a callback; closing", type(exc).__name__, exc_info=exc)
        conn._close(CloseReason.HANDLER_ERROR)

    # ``on_frames(conn, frames)`` is looked up, not defined here: define it to
    # get, with a framer, all the frames one read completed as one list,
    # instead of one on_read per frame (answer them with conn.send_all()).
    # It replaces on_read for framed connections; raw bytes still go to on_read.
    #
    # ``on_eof(conn)`` is looked up, not defined here: define it to keep a
    # half-closed connection open (you must close it later). Without it the
    # daemon flushes what was written and closes.

    # -- helpers ---------------------------------------------------------

    @property
    def reactor(self) -> Reactor:
        """The reactor this daemon runs on (set while it runs)."""
        if self._reactor is None:
            raise RuntimeError("the daemon is not running; start it with run() or the CLI")
        return self._reactor

    @property
    def addresses(self) -> list[Address]:
        """The addresses actually bound (port 0 resolved), in ``listen`` order."""
        return [listener.address for listener in self.listeners]

    def after(self, delay: float, fn: Callable[..., object], *args: object) -> Timer:
        """Run ``fn(*args)`` once after ``delay`` seconds; cancelled at stop."""
        return self.reactor.call_later(delay, fn, *args)

    def every(self, interval: float, fn: Callable[..., object], *args: object) -> Timer:
        """Run ``fn(*args)`` every ``interval`` seconds (drift-free); cancelled at stop."""
        return self.reactor.call_every(interval, fn, *args)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run asyncio code; its errors are logged and it is cancelled at stop."""
        return self.reactor.spawn(coro)

    def cleanup(self, obj: T) -> T:
        """Register ``obj`` to be released at stop and return it.

        A callable is called; anything else has its ``close()`` called.
        Registrations are released in reverse order, after the connections
        closed; an exception in one is logged and the rest still run.
        """
        if not callable(obj) and not hasattr(obj, "close"):
            raise TypeError(f"cleanup() needs a callable or an object with close(), not {obj!r}")
        self._cleanups.append(obj)
        return obj

    def broadcast(self, data: bytes, conns: Iterable[Connection] | None = None) -> int:
        """Write ``data`` to every live connection (or to ``conns``); return how many took it.

        A connection above its high-water mark still gets the data (up to its
        hard cap) but is not counted.
        """
        count = 0
        for conn in self.connections if conns is None else list(conns):
            if conn.write(data):
                count += 1
        return count

    def stop(self, *, now: bool = False) -> None:
        """Stop the daemon: gracefully, or with ``now=True`` at once.

        Graceful: stop accepting, ``on_stop``, flush and close every
        connection, wait up to ``shutdown_timeout``, abort the rest, run the
        cleanups, then leave the loop. With ``now=True`` (or a second call
        with it, as a second SIGTERM does) connections are aborted instead of
        drained. Either way every connection still gets its ``on_close``.
        """
        if self._reactor is None or self._stopped:
            return
        if not self._stopping:
            self._stopping = True
            self.log.info("stopping: %d connection(s) to close", len(self.connections))
            for listener in self.listeners:
                listener.close()
            try:
                self.on_stop()
            except Exception:
                self.log.exception("on_stop failed")
            for conn in self.connections:
                conn._close(CloseReason.SHUTDOWN, self.shutdown_timeout)
            if not now:
                self._drain_timer = self.reactor.call_later(
                    self.shutdown_timeout, self._drain_expired
                )
        if now:
            for conn in self.connections:
                conn._abort(CloseReason.SHUTDOWN)
            # Aborted transports report connection_lost on the next loop turns;
            # this backstop (on the loop's own clock, so a FakeClock cannot hold
            # it back) ends the stop even if a backend never does.
            if self._backstop is None:
                self._backstop = self.reactor.loop.call_later(STOP_BACKSTOP, self._finish)
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self._stopping and not self._stopped and len(self.connections) == 0:
            self._finish()

    # -- running ---------------------------------------------------------

    def run(
        self,
        *,
        backend: str = "auto",
        clock: Clock | None = None,
        install_signals: bool = True,
        on_ready: Callable[[Daemon], object] | None = None,
    ) -> None:
        """Bind, start and serve until stopped; blocks. Raises :class:`StartError`.

        ``install_signals=False`` leaves signal handling alone (needed when
        running outside the main thread, as :class:`~daemonkit.testing.DaemonRunner`
        does). ``on_ready(daemon)`` runs in the loop once it accepts.
        """
        reactor = Reactor(backend, clock=clock, log=self.log)
        try:
            self.start(reactor, install_signals=install_signals)
            if on_ready is not None:
                reactor.call_soon(on_ready, self)
            reactor.run()
        finally:
            self._teardown()
            reactor.close()
            self._reactor = None

    def start(self, reactor: Reactor, *, install_signals: bool = True, bind: bool = True) -> None:
        """Bind the listeners, install signal handlers and call ``on_start`` on ``reactor``.

        For embedding: the caller runs and closes the reactor. ``run()`` is
        the usual way in. A daemon object runs once; make a new one to run again.
        ``bind=False`` starts it without listeners, for a caller that hands it
        connections itself (the in-memory :class:`~daemonkit.testing.Simulation`).
        """
        if self._reactor is not None or self._stopped:
            raise RuntimeError(f"{type(self).__name__} already ran; create a new instance")
        self._reactor = reactor
        limit = _open_file_limit()
        if self.max_connections is None:
            self.max_connections = max(
                1, min(DEFAULT_MAX_CONNECTIONS, int(limit * FD_SHARE_FOR_CONNECTIONS))
            )
        self.log.info("open-file limit %d; max_connections %d", limit, self.max_connections)
        for address in self.endpoints if bind else ():
            try:
                listener = reactor.listen(
                    address, self._new_connection, admit=self._admit, start=False
                )
            except OSError as exc:
                for bound in self.listeners:
                    bound.close()
                self.listeners.clear()
                raise StartError(f"cannot listen on {address}: {exc.strerror or exc}") from exc
            self.listeners.append(listener)
        if install_signals:
            self._install_signals(reactor)
        try:
            self.on_start()
        except Exception as exc:
            for listener in self.listeners:
                listener.close()
            raise StartError(f"on_start failed: {type(exc).__name__}: {exc}") from exc
        for listener in self.listeners:
            listener.start()
            self.log.info("listening on %s (backend %s)", listener.address, reactor.backend)

    def _install_signals(self, reactor: Reactor) -> None:
        reactor.on_signal(signal.SIGTERM, self._on_stop_signal)
        reactor.on_signal(signal.SIGINT, self._on_stop_signal)
        reactor.on_signal(signal.SIGHUP, self._on_hup)
        reactor.on_signal(signal.SIGUSR1, self._on_usr1)
        for signum in self.signals:
            reactor.on_signal(signum, self._on_user_signal)

    def _on_stop_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._stopping:
            self.log.warning("%s again: stopping now", name)
            self.stop(now=True)
        else:
            self.log.info("%s: stopping gracefully (send it again to stop at once)", name)
            self.stop()

    def _on_hup(self, signum: int) -> None:
        self.log.info("SIGHUP: reloading")
        try:
            self.on_reload()
        except Exception:
            self.log.exception("on_reload failed")

    def _on_usr1(self, signum: int) -> None:
        if self._on_log_reopen is not None:
            self._on_log_reopen()
            self.log.info("SIGUSR1: log file reopened")

    def _on_user_signal(self, signum: int) -> None:
        try:
            self.on_signal(signum)
        except Exception:
            self.log.exception("on_signal(%s) failed", signal.Signals(signum).name)

    def _drain_expired(self) -> None:
        self._drain_timer = None
        left = len(self.connections)
        if left:
            self.log.warning(
                "shutdown_timeout=%gs passed; aborting %d connection(s)",
                self.shutdown_timeout,
                left,
            )
        self.stop(now=True)

    def _finish(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        if self._backstop is not None:
            self._backstop.cancel()
            self._backstop = None
        for listener in self.listeners:
            listener.close()
        self._run_cleanups()
        self.log.info("stopped")
        self.reactor.stop()

    def _run_cleanups(self) -> None:
        while self._cleanups:
            obj = self._cleanups.pop()
            try:
                if callable(obj):
                    obj()
                else:
                    obj.close()
            except Exception:
                self.log.exception("cleanup of %r failed", obj)

    def _teardown(self) -> None:
        """After the loop ended (normally or not): release what is left."""
        for conn in self.connections:
            conn._abort(CloseReason.SHUTDOWN)
        for listener in self.listeners:
            listener.close()
        self._run_cleanups()

    # -- connection plumbing (called by Connection) ----------------------

    def _validate(self) -> list[Address]:
        endpoints = [self.listen] if isinstance(self.listen, str) else list(self.listen)
        if not endpoints:
            raise ConfigError(
                "listen is empty: give at least one endpoint, e.g. tcp://127.0.0.1:7000"
            )
        addresses = [parse_endpoint(e) for e in endpoints]
        self._framer_factory = _framer_factory(self.framing)
        for key in ("write_high_water", "write_low_water", "max_write_buffer"):
            value = getattr(self, key)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{key} must be a positive number of bytes, not {value!r}")
        if self.write_low_water > self.write_high_water:
            raise ConfigError("write_low_water must not exceed write_high_water")
        if self.max_write_buffer < self.write_high_water:
            raise ConfigError("max_write_buffer must be at least write_high_water")
        for key in ("idle_timeout",):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int | float) or value < 0):
                raise ConfigError(f"{key} must be seconds >= 0 or None, not {value!r}")
        for key in ("close_timeout", "shutdown_timeout"):
            value = getattr(self, key)
            if not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"{key} must be seconds >= 0, not {value!r}")
        mc = self.max_connections
        if mc is not None and (not isinstance(mc, int) or mc < 1):
            raise ConfigError(f"max_connections must be a whole number >= 1, not {mc!r}")
        return addresses

    def _admit(self) -> bool:
        limit = self.max_connections
        pending = sum(listener.pending for listener in self.listeners)
        if self._stopping or (limit is not None and len(self.connections) + pending >= limit):
            self.stats["rejected"] += 1
            return False
        return True

    def _new_connection(self) -> Connection:
        factory = self._framer_factory
        return Connection(self, next(self._ids), factory() if factory is not None else None)

    def _on_connection_made(self, conn: Connection) -> None:
        self.connections._add(conn)
        self.stats["accepted"] += 1
        try:
            self.on_accept(conn)
        except Exception as exc:
            self._call_error(conn, exc)

    def _on_connection_lost(self, conn: Connection, reason: CloseReason) -> None:
        self.connections._remove(conn)
        self.stats["closed"] += 1
        try:
            self.on_close(conn, reason)
        except Exception:
            conn.log.exception("on_close raised")
        self._maybe_finish()

    def _call_error(self, conn: Connection, exc: Exception) -> None:
        self.stats["errors"] += 1
        try:
            self.on_error(conn, exc)
        except Exception:
            conn.log.exception("on_error raised; closing")
            conn._close(CloseReason.HANDLER_ERROR)

    def _call_eof(self, conn: Connection) -> bool:
        on_eof = getattr(self, "on_eof", None)
        if on_eof is None:
            return False
        try:
            on_eof(conn)
        except Exception as exc:
            self._call_error(conn, exc)
        return True

    def _call_drain(self, conn: Connection) -> None:
        try:
            self.on_drain(conn)
        except Exception as exc:
            self._call_error(conn, exc)

    def _call_timeout(self, conn: Connection) -> None:
        try:
            self.on_timeout(conn)
        except Exception as exc:
            self._call_error(conn, exc)


def _framer_factory(framing: Any) -> Callable[[], Framer] | None:
    """Turn the ``framing`` setting into a per-connection factory (None = raw bytes)."""
    if framing is None or framing is Raw:
        return None
    if isinstance(framing, Raw):
        return None
    if isinstance(framing, Framer):
        return framing.fresh
    if isinstance(framing, type) and issubclass(framing, Framer):
        return framing
    if callable(framing):
        return framing  # type: ignore[no-any-return]
    raise ConfigError(
        f"framing must be a Framer class (e.g. Lines), a Framer instance or a factory, "
        f"not {framing!r}"
    )
