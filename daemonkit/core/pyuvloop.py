"""An asyncio event loop on pyuv: the backend behind ``--backend pyuv``.

:class:`PyuvEventLoop` is a :class:`asyncio.BaseEventLoop` whose turn is one
``pyuv.Loop.run()``: everything that waits is a libuv handle, everything
above it (futures, tasks, ``call_soon``/``call_later``, the executor,
``create_connection``, TLS through :mod:`asyncio.sslproto`) is the stdlib's
own code, so daemonkit and any asyncio library run on it unchanged.

What rides on which libuv handle:

* one turn of the loop: ``pyuv.Loop.run(UV_RUN_ONCE)`` (``UV_RUN_NOWAIT``
  while callbacks are ready), then the ready queue, as the stdlib loop does
  after its ``select()``;
* ``call_later``/``call_at``: the stdlib's heap, woken by one ``pyuv.Timer``
  armed for the earliest deadline;
* ``call_soon_threadsafe``: a ``pyuv.Async`` wakes the loop;
* ``add_reader``/``add_writer``: one ``pyuv.Poll`` per descriptor;
* ``add_signal_handler``: ``pyuv.Signal`` (libuv queues a signal that arrives
  before the loop runs and delivers it on the first turn);
* Python's own signal handlers (``signal.signal``, Ctrl-C's
  ``KeyboardInterrupt``): while the loop runs in the main thread, a socket
  pair is the interpreter's wake-up fd (:func:`signal.set_wakeup_fd`, as the
  stdlib loop does) and a ``pyuv.Poll`` on it ends the wait, so the handler
  runs at once (libuv retries a wait a signal interrupts, so without it the
  handler would wait for the next event);
* stream transports: ``pyuv.TCP`` and ``pyuv.Pipe`` over the accepted or
  connected socket (libuv's reads, its ``try_write`` and C write queue);
* datagram transports: ``pyuv.UDP``.

Why ``BaseEventLoop`` and not ``AbstractEventLoop``: the base class carries
the parts that must behave exactly as the stdlib's do (task and future
plumbing, debug mode and its slow-callback report, ``run_until_complete``,
``create_connection``'s happy eyeballs, ``connect_accepted_socket``, the
default executor, ``getaddrinfo``) and leaves I/O to a few documented hooks
(``_make_socket_transport``, ``_make_ssl_transport``,
``_make_datagram_transport``, ``_write_to_self``, ``sock_*``), which is the
seam this module fills. Only ``_run_once`` is replaced wholesale.

What it does not do, and says so: subprocesses, ``create_server`` and
``create_unix_server`` raise :class:`NotImplementedError` (daemonkit accepts
connections itself and never uses them); signal handlers, as on every
asyncio loop, only from the main thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import logging
import math
import os
import signal
import socket
import sys
import threading
import warnings
from asyncio import base_events, events, sslproto, trsock
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pyuv

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike
    from typing_extensions import TypeVarTuple, Unpack

    _Ts = TypeVarTuple("_Ts")

_ProtocolT = TypeVar("_ProtocolT", bound=asyncio.BaseProtocol)

# asyncio's own logger: the stdlib loop reports slow callbacks and transport
# errors there, and the test suite filters its messages by their format.
_log = logging.getLogger("asyncio")

# How the stdlib names a callback in its slow-callback warning.
_format_handle: Callable[[events.Handle], str] = getattr(base_events, "_format_handle", repr)

__all__ = ["PyuvEventLoop"]

# The stdlib loop's cap on one wait (base_events.MAXIMUM_SELECT_TIMEOUT, one
# day): a deadline further out is re-armed on the next turn.
MAXIMUM_WAIT = 24 * 3600

# When the heap of calls holds more than this many and over half are
# cancelled, it is rebuilt: base_events._MIN_SCHEDULED_TIMER_HANDLES (100)
# and _MIN_CANCELLED_TIMER_HANDLES_FRACTION (0.5), the stdlib's figures.
CANCELLED_SWEEP_MIN = 100

# libuv's timers count whole milliseconds of a clock cached once per turn, so
# a timer may wake up to a millisecond before its deadline; calls due within
# that much are run on that wake-up rather than re-armed for 0 ms.
CLOCK_RESOLUTION = 1e-3
# The backend timer's repeat, in seconds: the longest a wait can overrun a
# deadline that came due between arming the timer and libuv's poll (one
# libuv tick, the clock's resolution).
TIMER_REPEAT = 1e-3

# The most unread input a graceful close reads and drops so the peer is not
# reset: the stdlib loop's read size (selector_events.max_size, 256 KiB), i.e.
# what that loop has already taken in when its protocol answers and closes.
CLOSE_DISCARD_LIMIT = 256 * 1024

# How large a read a BufferedProtocol (asyncio's SSLProtocol) is asked for:
# libuv hands the loop at most 64 KiB per read (pyuv's loop buffer).
READ_SIZE = 65536

_UV_EOF = pyuv.errno.UV_EOF
_UV_ECANCELED = pyuv.errno.UV_ECANCELED
_READABLE = pyuv.UV_READABLE
_WRITABLE = pyuv.UV_WRITABLE


def _os_error(uverr: int) -> OSError:
    """The OSError for a libuv error number (libuv's are negated errnos on Unix)."""
    if uverr < 0:
        return OSError(-uverr, os.strerror(-uverr))
    return OSError(uverr, pyuv.errno.strerror(uverr))


def _drain(sock: socket.socket) -> None:
    """Read and drop what the signal wake-up fd received (the interpreter runs the handlers)."""
    with contextlib.suppress(OSError):
        while sock.recv(4096):
            pass


def _noop(*args: object) -> None:
    pass


def _unschedule(handle: events.TimerHandle) -> None:
    """Mark a call as out of the heap, as ``BaseEventLoop`` does."""
    handle._scheduled = False  # type: ignore[attr-defined]


def _set_result_unless_cancelled(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.cancelled():
        fut.set_result(result)


class _FdWatch:
    """One descriptor's ``pyuv.Poll`` and the reader/writer handles on it."""

    __slots__ = ("poll", "reader", "writer")

    def __init__(self, poll: pyuv.Poll) -> None:
        self.poll = poll
        self.reader: events.Handle | None = None
        self.writer: events.Handle | None = None


class PyuvEventLoop(asyncio.BaseEventLoop):
    """An asyncio event loop whose waiting is done by libuv through pyuv.

    Create it directly or with ``new_event_loop("pyuv")`` in
    :mod:`daemonkit.core.reactor`; use it like any asyncio loop. Close it with
    :meth:`close` when done (it closes every libuv handle it made).
    """

    # BaseEventLoop's own state and helpers that this loop's turn works on
    # (set by BaseEventLoop.__init__; typeshed does not declare them).
    _ready: collections.deque[events.Handle]
    _scheduled: list[events.TimerHandle]
    _timer_cancelled_count: int
    _stopping: bool
    _debug: bool
    _current_handle: events.Handle | None
    _check_closed: Callable[[], None]
    _create_connection_transport: Callable[..., Any]

    def __init__(self) -> None:
        super().__init__()
        self._uv = pyuv.Loop()
        self._uv.excepthook = self._uv_excepthook
        self._clock_resolution = CLOCK_RESOLUTION
        self._waker = pyuv.Async(self._uv, _noop)
        self._timer = pyuv.Timer(self._uv)
        self._timer_armed = False
        self._fd_watches: dict[int, _FdWatch] = {}
        self._signal_handlers: dict[int, tuple[pyuv.Signal, events.Handle, Any]] = {}
        self._uv_error: BaseException | None = None

    # -- the turn ----------------------------------------------------------

    def run_forever(self) -> None:
        """Run until :meth:`stop`; Python signal handlers run as soon as their signal comes."""
        wakeup = self._signal_wakeup()
        try:
            super().run_forever()
        finally:
            if wakeup is not None:
                wakeup()

    def _signal_wakeup(self) -> Callable[[], None] | None:
        """Make a signal end libuv's wait; return what undoes it (None: not the main thread).

        Only when no wake-up fd is set already (someone else's is kept).
        """
        if threading.current_thread() is not threading.main_thread():
            return None
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        try:
            previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        except ValueError:  # pragma: no cover - main thread checked above
            previous = -1
        if previous != -1:  # another owner's: leave it in place
            signal.set_wakeup_fd(previous)
            reader.close()
            writer.close()
            return None
        poll = pyuv.Poll(self._uv, reader.fileno())
        poll.start(pyuv.UV_READABLE, lambda *_: _drain(reader))
        poll.ref = False  # a wake-up source keeps nobody waiting

        def undo() -> None:
            current = signal.set_wakeup_fd(-1)
            if current != writer.fileno():  # someone else's now: keep it
                signal.set_wakeup_fd(current)
            poll.close()
            reader.close()
            writer.close()

        return undo

    def _uv_excepthook(self, typ: type[BaseException], value: BaseException, tb: Any) -> None:
        """An exception escaped a libuv callback: report it, or stop for an exit."""
        if isinstance(value, (SystemExit, KeyboardInterrupt)):
            self._uv_error = value
            self._uv.stop()
            return
        self.call_exception_handler(
            {"message": "Unhandled exception in a pyuv callback", "exception": value}
        )

    def _run_once(self) -> None:
        """One turn: wait in libuv (I/O, timer, wake-up, signals), then run what is ready.

        The same steps as ``BaseEventLoop._run_once`` with ``select()``
        replaced by ``pyuv.Loop.run``; I/O callbacks run inside that call.
        """
        scheduled: list[events.TimerHandle] = self._scheduled
        cancelled = self._timer_cancelled_count
        if len(scheduled) > CANCELLED_SWEEP_MIN and cancelled * 2 > len(scheduled):
            # Mostly cancelled calls (timeouts that were not needed): rebuild
            # the heap instead of carrying them, as the stdlib loop does.
            for timer in scheduled:
                if timer.cancelled():
                    _unschedule(timer)
            scheduled = [timer for timer in scheduled if not timer.cancelled()]
            heapq.heapify(scheduled)
            self._scheduled = scheduled
            self._timer_cancelled_count = 0
        while scheduled and scheduled[0]._cancelled:
            self._timer_cancelled_count -= 1
            handle = heapq.heappop(scheduled)
            _unschedule(handle)
        ready: collections.deque[events.Handle] = self._ready
        if ready or self._stopping:
            mode = pyuv.UV_RUN_NOWAIT
            if self._timer_armed:
                self._timer.stop()
                self._timer_armed = False
        else:
            mode = pyuv.UV_RUN_ONCE
            if scheduled:
                timeout = min(max(0.0, scheduled[0].when() - self.time()), MAXIMUM_WAIT)
                if timeout <= 0.0:
                    mode = pyuv.UV_RUN_NOWAIT  # due now: no wait at all
                # Whole milliseconds, rounded up: libuv would truncate. The
                # timer repeats: uv_run(ONCE) runs the timers that are due
                # *before* it polls, and a one-shot timer that came due in
                # between (a busy machine) would leave the poll with no timeout
                # at all, blocking for ever; repeating, it bounds that poll.
                self._uv.update_time()
                self._timer.start(_noop, math.ceil(timeout * 1000) / 1000, TIMER_REPEAT)
                self._timer_armed = True
            elif self._timer_armed:
                self._timer.stop()
                self._timer_armed = False
        self._uv.run(mode)
        if self._uv_error is not None:
            exc, self._uv_error = self._uv_error, None
            raise exc

        end_time = self.time() + self._clock_resolution
        while scheduled:
            handle = scheduled[0]
            if handle.when() >= end_time:
                break
            handle = heapq.heappop(scheduled)
            _unschedule(handle)
            ready.append(handle)

        ntodo = len(ready)
        debug = self._debug
        for _ in range(ntodo):
            h = ready.popleft()
            if h.cancelled():
                continue
            if debug:
                try:
                    self._current_handle = h
                    t0 = self.time()
                    h._run()
                    dt = self.time() - t0
                    if dt >= self.slow_callback_duration:
                        # The stdlib loop's message, word for word (the tests filter it).
                        _log.warning("Executing %s took %.3f seconds", _format_handle(h), dt)
                finally:
                    self._current_handle = None
            else:
                h._run()

    def _write_to_self(self) -> None:
        """Wake the loop from another thread (``call_soon_threadsafe``)."""
        waker = self._waker
        if not waker.closed:
            waker.send()

    def _process_events(self, event_list: Any) -> None:  # pragma: no cover - no selector
        raise AssertionError("PyuvEventLoop has no selector")

    def close(self) -> None:
        """Close the loop and every libuv handle it made; idempotent."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        for signum in list(self._signal_handlers):
            self.remove_signal_handler(signum)
        super().close()
        for fd in list(self._fd_watches):
            self._drop_watch(fd)
        for handle in list(self._uv.handles):
            if not handle.closed:
                handle.close()
        self._uv.run(pyuv.UV_RUN_NOWAIT)  # the close callbacks

    # -- descriptor readiness ---------------------------------------------

    def _watch(self, fd: int) -> _FdWatch:
        w = self._fd_watches.get(fd)
        if w is None:
            w = self._fd_watches[fd] = _FdWatch(pyuv.Poll(self._uv, fd))
        return w

    def _rearm(self, fd: int, w: _FdWatch) -> None:
        mask = (_READABLE if w.reader is not None else 0) | (
            _WRITABLE if w.writer is not None else 0
        )
        if mask:
            w.poll.start(mask, self._on_poll)
        else:
            self._drop_watch(fd)

    def _drop_watch(self, fd: int) -> None:
        w = self._fd_watches.pop(fd, None)
        if w is not None:
            # Closed now, not later: libuv must forget a descriptor before its
            # owner closes it (and a new one may reuse the number).
            w.poll.close()
            for h in (w.reader, w.writer):
                if h is not None:
                    h.cancel()

    def _on_poll(self, poll: pyuv.Poll, events_mask: int, error: int | None) -> None:
        w = self._fd_watches.get(poll.fileno())
        if w is None or w.poll is not poll:
            return
        if error is not None:  # tell both: each finds the error on its own I/O
            events_mask = _READABLE | _WRITABLE
        if events_mask & _READABLE and (r := w.reader) is not None:
            if r.cancelled():
                self.remove_reader(poll.fileno())
            else:
                r._run()
        if events_mask & _WRITABLE and (wr := w.writer) is not None:
            if wr.cancelled():
                self.remove_writer(poll.fileno())
            else:
                wr._run()

    def add_reader(
        self, fd: FileDescriptorLike, callback: Callable[[Unpack[_Ts]], Any], *args: Unpack[_Ts]
    ) -> None:
        """Call ``callback(*args)`` whenever ``fd`` is readable."""
        self._add_watch(fd, "reader", events.Handle(callback, args, self, None))

    def remove_reader(self, fd: FileDescriptorLike) -> bool:
        """Stop watching ``fd`` for reading; True if it was watched."""
        return self._remove_watch(fd, "reader")

    def add_writer(
        self, fd: FileDescriptorLike, callback: Callable[[Unpack[_Ts]], Any], *args: Unpack[_Ts]
    ) -> None:
        """Call ``callback(*args)`` whenever ``fd`` is writable."""
        self._add_watch(fd, "writer", events.Handle(callback, args, self, None))

    def remove_writer(self, fd: FileDescriptorLike) -> bool:
        """Stop watching ``fd`` for writing; True if it was watched."""
        return self._remove_watch(fd, "writer")

    def _add_watch(self, fd: FileDescriptorLike, side: str, handle: events.Handle) -> None:
        """Make ``handle`` the ``side`` ("reader" or "writer") callback of ``fd``."""
        self._check_closed()
        fd = _fileno(fd)
        w = self._watch(fd)
        old: events.Handle | None = getattr(w, side)
        setattr(w, side, handle)
        if old is not None:
            old.cancel()
        self._rearm(fd, w)

    def _remove_watch(self, fd: FileDescriptorLike, side: str) -> bool:
        fd = _fileno(fd)
        w = self._fd_watches.get(fd)
        old: events.Handle | None = getattr(w, side) if w is not None else None
        if w is None or old is None:
            return False
        old.cancel()
        setattr(w, side, None)
        if not self.is_closed():
            self._rearm(fd, w)
        return True

    # -- socket operations (what create_connection and friends await) -----

    async def sock_connect(self, sock: socket.socket, address: Any) -> None:
        """Connect the non-blocking ``sock`` to a resolved ``address``."""
        try:
            sock.connect(address)
            return
        except (BlockingIOError, InterruptedError):
            pass
        fut = self.create_future()
        fd = sock.fileno()

        def on_writable() -> None:
            if fut.done():
                return
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                fut.set_exception(OSError(err, f"Connect call failed {address}"))
            else:
                fut.set_result(None)

        self.add_writer(fd, on_writable)
        try:
            await fut
        finally:
            self.remove_writer(fd)

    async def sock_recv(self, sock: socket.socket, n: int) -> bytes:
        """Receive up to ``n`` bytes from the non-blocking ``sock``."""
        while True:
            try:
                return sock.recv(n)
            except (BlockingIOError, InterruptedError):
                await self._wait_fd(sock.fileno(), readable=True)

    async def sock_recv_into(self, sock: socket.socket, buf: Any) -> int:
        """Receive into ``buf`` from the non-blocking ``sock``."""
        while True:
            try:
                return sock.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                await self._wait_fd(sock.fileno(), readable=True)

    async def sock_sendall(self, sock: socket.socket, data: Any) -> None:
        """Send all of ``data`` on the non-blocking ``sock``."""
        view = memoryview(data).cast("B")
        while view:
            try:
                view = view[sock.send(view) :]
            except (BlockingIOError, InterruptedError):
                await self._wait_fd(sock.fileno(), readable=False)

    async def sock_accept(self, sock: socket.socket) -> tuple[socket.socket, Any]:
        """Accept a connection on the non-blocking listening ``sock``."""
        while True:
            try:
                conn, address = sock.accept()
                conn.setblocking(False)
                return conn, address
            except (BlockingIOError, InterruptedError):
                await self._wait_fd(sock.fileno(), readable=True)

    async def _wait_fd(self, fd: int, *, readable: bool) -> None:
        fut = self.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        (self.add_reader if readable else self.add_writer)(fd, ready)
        try:
            await fut
        finally:
            (self.remove_reader if readable else self.remove_writer)(fd)

    async def create_unix_connection(
        self,
        protocol_factory: Callable[[], _ProtocolT],
        path: str | None = None,
        *,
        ssl: Any = None,
        sock: socket.socket | None = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> tuple[asyncio.Transport, _ProtocolT]:
        """Connect to a unix stream socket at ``path`` (or over ``sock``), as the stdlib does."""
        if ssl and server_hostname is None:
            raise ValueError("you have to pass server_hostname when using ssl")
        if path is not None:
            if sock is not None:
                raise ValueError("path and sock can not be specified at the same time")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
            try:
                sock.setblocking(False)
                await self.sock_connect(sock, os.fspath(path))
            except BaseException:
                sock.close()
                raise
        elif sock is None:
            raise ValueError("no path and sock were specified")
        else:
            sock.setblocking(False)
        kwargs: dict[str, Any] = {"ssl_handshake_timeout": ssl_handshake_timeout}
        if sys.version_info >= (3, 11):
            kwargs["ssl_shutdown_timeout"] = ssl_shutdown_timeout
        transport, protocol = await self._create_connection_transport(
            sock, protocol_factory, ssl, server_hostname, **kwargs
        )
        return transport, protocol

    # -- transports ---------------------------------------------------------

    def _make_socket_transport(
        self,
        sock: socket.socket,
        protocol: asyncio.BaseProtocol,
        waiter: asyncio.Future[Any] | None = None,
        *,
        extra: dict[str, Any] | None = None,
        server: Any = None,
    ) -> _StreamTransport:
        if sock.family == socket.AF_UNIX:
            handle: Any = pyuv.Pipe(self._uv)
        else:
            handle = pyuv.TCP(self._uv)
        handle.open(sock.fileno())
        return _StreamTransport(self, handle, sock, protocol, waiter, extra)

    def _make_ssl_transport(
        self,
        rawsock: socket.socket,
        protocol: asyncio.BaseProtocol,
        sslcontext: Any,
        waiter: asyncio.Future[Any] | None = None,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        extra: dict[str, Any] | None = None,
        server: Any = None,
        **timeouts: Any,
    ) -> asyncio.Transport:
        ssl_protocol = sslproto.SSLProtocol(
            self,
            protocol,
            sslcontext,
            cast("asyncio.Future[Any]", waiter),  # None is allowed, as the stdlib loop passes it
            server_side,
            server_hostname,
            **timeouts,
        )
        self._make_socket_transport(rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport

    def _make_datagram_transport(
        self,
        sock: socket.socket,
        protocol: asyncio.BaseProtocol,
        address: Any = None,
        waiter: asyncio.Future[Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> asyncio.DatagramTransport:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            raise NotImplementedError(
                "the pyuv backend has no datagram transport for "
                f"{socket.AddressFamily(sock.family).name} sockets (pyuv.UDP is IP only); "
                "use --backend uvloop or asyncio"
            )
        return _DatagramTransport(self, sock, protocol, address, waiter, extra)

    # -- signals --------------------------------------------------------------

    def add_signal_handler(
        self, sig: int, callback: Callable[[Unpack[_Ts]], Any], *args: Unpack[_Ts]
    ) -> None:
        """Call ``callback(*args)`` in the loop whenever the process gets ``sig``.

        Main thread only (raises ValueError elsewhere), like every asyncio loop.
        """
        if asyncio.iscoroutine(callback) or asyncio.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        if not isinstance(sig, int) or sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig!r}")
        self._check_closed()
        if threading.current_thread() is not threading.main_thread():
            raise ValueError("signal handlers can only be added in the main thread")
        handle = events.Handle(callback, args, self, None)
        old = self._signal_handlers.get(sig)
        if old is not None:
            old[1].cancel()
            self._signal_handlers[sig] = (old[0], handle, old[2])
            return
        previous = signal.getsignal(sig)
        watcher = pyuv.Signal(self._uv)
        try:
            watcher.start(self._on_signal, sig)
        except pyuv.error.SignalError as exc:
            watcher.close()
            raise OSError(-exc.args[0], str(exc.args[-1])) from None
        watcher.ref = False  # like a wakeup fd: keeps nobody waiting
        self._signal_handlers[sig] = (watcher, handle, previous)

    def _on_signal(self, watcher: pyuv.Signal, signum: int) -> None:
        entry = self._signal_handlers.get(signum)
        if entry is not None and not entry[1].cancelled():
            self._ready.append(entry[1])

    def remove_signal_handler(self, sig: int) -> bool:
        """Remove the handler for ``sig``, giving the signal back to Python; True if one was set."""
        entry = self._signal_handlers.pop(sig, None)
        if entry is None:
            return False
        watcher, handle, previous = entry
        handle.cancel()
        watcher.close()
        # libuv leaves SIG_DFL behind; put back what Python had installed.
        if previous is None:
            previous = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, previous)
        except (OSError, ValueError):
            pass
        return True

    # -- what daemonkit never uses ------------------------------------------

    async def create_server(self, *args: Any, **kwargs: Any) -> Any:
        """Not provided: daemonkit's listeners accept connections themselves."""
        raise NotImplementedError(
            "the pyuv backend has no create_server(); daemonkit's Listener accepts itself"
        )

    async def create_unix_server(self, *args: Any, **kwargs: Any) -> Any:
        """Not provided: daemonkit's listeners accept connections themselves."""
        raise NotImplementedError(
            "the pyuv backend has no create_unix_server(); daemonkit's Listener accepts itself"
        )

    async def subprocess_exec(self, *args: Any, **kwargs: Any) -> Any:
        """Not provided: use the stdlib or uvloop backend for asyncio subprocesses."""
        raise NotImplementedError("the pyuv backend has no asyncio subprocesses")

    async def subprocess_shell(self, *args: Any, **kwargs: Any) -> Any:
        """Not provided: use the stdlib or uvloop backend for asyncio subprocesses."""
        raise NotImplementedError("the pyuv backend has no asyncio subprocesses")


def _fileno(fd: Any) -> int:
    return fd if isinstance(fd, int) else int(fd.fileno())


# A transport's default write-buffer limits: asyncio's (64 KiB high water,
# a quarter of it low: transports._FlowControlMixin).
DEFAULT_HIGH_WATER = 64 * 1024


class _WriteFlow(asyncio.BaseTransport):
    """``pause_writing``/``resume_writing`` around a transport's high/low water marks.

    What asyncio's ``_FlowControlMixin`` does, kept here so the transports
    rely on no private stdlib class.
    """

    # Every attribute named, here and in the transports: no dict per connection.
    __slots__ = ("_high_water", "_loop", "_low_water", "_protocol", "_protocol_paused")

    _loop: PyuvEventLoop
    _protocol: Any
    _protocol_paused: bool
    _high_water: int
    _low_water: int

    def __init__(self) -> None:
        self._protocol_paused = False
        self._high_water = DEFAULT_HIGH_WATER
        self._low_water = DEFAULT_HIGH_WATER // 4

    def get_write_buffer_size(self) -> int:
        raise NotImplementedError

    def _maybe_pause_protocol(self) -> None:
        if self._protocol_paused or self.get_write_buffer_size() <= self._high_water:
            return
        self._protocol_paused = True
        try:
            self._protocol.pause_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {"message": "protocol.pause_writing() failed", "exception": exc, "transport": self}
            )

    def _maybe_resume_protocol(self) -> None:
        if not self._protocol_paused or self.get_write_buffer_size() > self._low_water:
            return
        self._protocol_paused = False
        try:
            self._protocol.resume_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {"message": "protocol.resume_writing() failed", "exception": exc, "transport": self}
            )

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """The (low, high) water marks in bytes."""
        return (self._low_water, self._high_water)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the water marks: pause the protocol above ``high``, resume at ``low``."""
        if high is None:
            high = 4 * low if low is not None else DEFAULT_HIGH_WATER
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water = high
        self._low_water = low
        self._maybe_pause_protocol()


def _socket_info(sock: socket.socket, extra: dict[str, Any] | None) -> dict[str, Any]:
    """What ``get_extra_info`` answers for a transport over ``sock``."""
    info = dict(extra or {})
    info["socket"] = trsock.TransportSocket(sock)
    try:
        info["sockname"] = sock.getsockname()
    except OSError:
        info["sockname"] = None
    if "peername" not in info:
        try:
            info["peername"] = sock.getpeername()
        except OSError:
            info["peername"] = None
    return info


class _StreamTransport(_WriteFlow, asyncio.Transport):
    """A TCP or unix stream on ``pyuv.TCP``/``pyuv.Pipe`` (the loop's ``_make_socket_transport``).

    Reads are libuv's (``start_read``); a write tries ``try_write`` first and
    queues the rest in libuv's C write queue, whose size is
    ``get_write_buffer_size()``; ``write_eof`` is ``shutdown()`` (which waits
    for the queue); ``close`` waits for the queue, ``abort`` does not; the
    protocol's ``connection_lost`` comes through ``call_soon``. The socket
    object is kept for ``get_extra_info`` and detached when libuv closes the
    descriptor.
    """

    __slots__ = (
        "_aborted",
        "_buffered",
        "_closing",
        "_conn_lost",
        "_eof",
        "_handle",
        "_info",
        "_lost_called",
        "_paused",
        "_reading",
        "_sock",
    )

    def __init__(
        self,
        loop: PyuvEventLoop,
        handle: Any,
        sock: socket.socket,
        protocol: asyncio.BaseProtocol,
        waiter: asyncio.Future[Any] | None,
        extra: dict[str, Any] | None,
    ) -> None:
        _WriteFlow.__init__(self)
        self._loop = loop
        self._handle = handle
        self._sock: socket.socket | None = sock
        self._info = _socket_info(sock, extra)
        self._protocol = None
        self._buffered = False
        self.set_protocol(protocol)
        self._closing = False
        self._conn_lost = 0
        self._reading = False
        self._paused = False  # by pause_reading()
        self._eof = False
        self._lost_called = False
        self._aborted = False
        loop.call_soon(self._protocol.connection_made, self)
        loop.call_soon(self._start)
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter, None)

    def __repr__(self) -> str:
        state = "closed" if self._sock is None else ("closing" if self._closing else "open")
        return f"<{type(self).__name__} {state} {type(self._handle).__name__}>"

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if self._sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._sock.detach()
            self._handle.close()

    def _start(self) -> None:
        if not self._closing and not self._paused:
            self._start_reading()

    def _start_reading(self) -> None:
        if not self._reading:
            self._handle.start_read(self._on_read)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._handle.stop_read()

    # -- protocol side ------------------------------------------------------

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Deliver further events to ``protocol``."""
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        """The protocol events go to."""
        return cast(asyncio.BaseProtocol, self._protocol)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``socket``, ``sockname``, ``peername`` and what the loop passed in."""
        return self._info.get(name, default)

    def _on_read(self, handle: Any, data: bytes | None, error: int | None) -> None:
        if error is not None:
            self._stop_reading()
            if error == _UV_EOF:
                self._on_eof()
            else:
                self._fatal_error(_os_error(error), "Fatal read error on a pyuv transport")
            return
        if data is None:
            return
        try:
            if self._buffered:
                self._feed_buffered(data)
            else:
                self._protocol.data_received(data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")

    def _feed_buffered(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            buf = self._protocol.get_buffer(max(len(view), 1))
            n = min(len(buf), len(view))
            if not n:
                raise RuntimeError("get_buffer() returned an empty buffer")
            buf[:n] = view[:n]
            self._protocol.buffer_updated(n)
            view = view[n:]

    def _on_eof(self) -> None:
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if not keep_open:
            self.close()

    # -- reading control ------------------------------------------------------

    def is_reading(self) -> bool:
        """True unless reading is paused or the transport is closing."""
        return not self._paused and not self._closing

    def pause_reading(self) -> None:
        """Stop delivering ``data_received`` until :meth:`resume_reading`."""
        if self._closing or self._paused:
            return
        self._paused = True
        self._stop_reading()

    def resume_reading(self) -> None:
        """Deliver ``data_received`` again."""
        if self._closing or not self._paused:
            return
        self._paused = False
        self._start_reading()

    # -- writing --------------------------------------------------------------

    def write(self, data: Any) -> None:
        """Send ``data``: what the kernel takes now, the rest through libuv's write queue."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be a bytes-like object, not {type(data).__name__}")
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data:
            return
        if self._conn_lost:
            self._conn_lost += 1
            return
        handle = self._handle
        if not handle.write_queue_size:
            try:
                n = handle.try_write(data)
            except pyuv.error.StreamError as exc:
                if exc.args[0] != pyuv.errno.UV_EAGAIN:
                    self._fatal_error(
                        _os_error(exc.args[0]), "Fatal write error on a pyuv transport"
                    )
                    return
                n = 0
            if n == len(data):
                return
            data = memoryview(data)[n:]
        # libuv keeps a reference, not a copy: a mutable buffer is copied now.
        if not isinstance(data, bytes):
            data = bytes(data)
        try:
            handle.write(data, self._on_written)
        except pyuv.error.StreamError as exc:
            self._fatal_error(_os_error(exc.args[0]), "Fatal write error on a pyuv transport")
            return
        self._maybe_pause_protocol()

    def _on_written(self, handle: Any, error: int | None) -> None:
        if self._sock is None:
            return
        if error is not None:
            if error != _UV_ECANCELED:
                self._fatal_error(_os_error(error), "Fatal write error on a pyuv transport")
            return
        if handle.write_queue_size:
            self._maybe_resume_protocol()
            return
        self._maybe_resume_protocol()
        if self._closing and not self._conn_lost:
            self._conn_lost += 1
            self._loop.call_soon(self._call_connection_lost, None)

    def get_write_buffer_size(self) -> int:
        """Bytes in libuv's write queue, not yet taken by the kernel."""
        return int(self._handle.write_queue_size) if self._sock is not None else 0

    def write_eof(self) -> None:
        """Half-close: send FIN once the queued bytes are out (libuv's shutdown)."""
        if self._closing or self._eof:
            return
        self._eof = True
        try:
            self._handle.shutdown(self._on_shutdown)
        except pyuv.error.StreamError as exc:
            self._fatal_error(_os_error(exc.args[0]), "Fatal error on shutdown")

    def _on_shutdown(self, handle: Any, error: int | None) -> None:
        if error is not None and error != _UV_ECANCELED and self._sock is not None:
            self._fatal_error(_os_error(error), "Fatal error on shutdown")

    def can_write_eof(self) -> bool:
        """True: TCP and unix streams half-close."""
        return True

    # -- closing --------------------------------------------------------------

    def is_closing(self) -> bool:
        """True once :meth:`close` or :meth:`abort` was called, or the peer is gone."""
        return self._closing

    def close(self) -> None:
        """Close once the queued bytes are written; ``connection_lost(None)`` follows."""
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        if not self._handle.write_queue_size and not self._conn_lost:
            self._conn_lost += 1
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self) -> None:
        """Close now, dropping queued bytes; ``connection_lost(None)`` follows."""
        self._aborted = True
        self._force_close(None)

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        if not isinstance(exc, OSError):
            self._loop.call_exception_handler(
                {
                    "message": message,
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                }
            )
        elif self._loop.get_debug():
            _log.debug("%r: %s", self, message, exc_info=True)
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._conn_lost:
            return
        self._closing = True
        self._stop_reading()
        self._conn_lost += 1
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        if self._lost_called:
            return
        self._lost_called = True
        try:
            self._protocol.connection_lost(exc)
        finally:
            sock, self._sock = self._sock, None
            if sock is not None:
                if exc is None and not self._aborted:
                    _discard_unread(sock)
                sock.detach()  # libuv closes the descriptor
            self._handle.close()
            self._protocol = None


def _discard_unread(sock: socket.socket) -> None:
    """Read and drop what the peer sent that nobody read, up to CLOSE_DISCARD_LIMIT bytes.

    Closing a socket with unread input makes the kernel reset the connection,
    and the peer may lose the reply that was just written (on a unix socket it
    reads ECONNRESET instead). libuv reads 64 KiB at a time where the stdlib
    loop reads 256 KiB, so without this a graceful close on this backend would
    reset peers that the other backends answer.
    """
    left = CLOSE_DISCARD_LIMIT
    while left > 0:
        try:
            chunk = sock.recv(min(left, READ_SIZE))
        except OSError:  # nothing more now (EAGAIN), or the peer is gone
            return
        if not chunk:
            return
        left -= len(chunk)


class _DatagramTransport(_WriteFlow, asyncio.DatagramTransport):
    """A UDP socket on ``pyuv.UDP`` (the loop's ``_make_datagram_transport``)."""

    __slots__ = (
        "_address",
        "_closing",
        "_conn_lost",
        "_info",
        "_sock",
        "_udp",
    )

    def __init__(
        self,
        loop: PyuvEventLoop,
        sock: socket.socket,
        protocol: asyncio.BaseProtocol,
        address: Any,
        waiter: asyncio.Future[Any] | None,
        extra: dict[str, Any] | None,
    ) -> None:
        _WriteFlow.__init__(self)
        self._loop = loop
        self._sock: socket.socket | None = sock
        self._udp = pyuv.UDP(loop._uv)
        self._udp.open(sock.fileno())
        self._address = address
        self._info = _socket_info(sock, extra)
        if address is not None:
            self._info["peername"] = address
        self._protocol = protocol
        self._closing = False
        self._conn_lost = 0
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(self._start)
        if waiter is not None:
            loop.call_soon(_set_result_unless_cancelled, waiter, None)

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if self._sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._sock.detach()
            self._udp.close()

    def _start(self) -> None:
        if not self._closing:
            self._udp.start_recv(self._on_recv)

    def get_protocol(self) -> asyncio.BaseProtocol:
        """The protocol events go to."""
        return cast(asyncio.BaseProtocol, self._protocol)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``socket``, ``sockname``, ``peername`` and what the loop passed in."""
        return self._info.get(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Deliver further events to ``protocol``."""
        self._protocol = protocol

    def _on_recv(
        self, handle: Any, address: Any, flags: int, data: bytes | None, error: int | None
    ) -> None:
        if self._sock is None:
            return
        try:
            if error is not None:
                self._protocol.error_received(_os_error(error))
            elif data is not None:
                self._protocol.datagram_received(data, address)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.datagram_received() call failed.")

    def get_write_buffer_size(self) -> int:
        """Bytes queued in libuv, not yet sent."""
        return int(self._udp.send_queue_size) if self._sock is not None else 0

    def sendto(self, data: Any, addr: Any = None) -> None:
        """Send one datagram to ``addr`` (or the connected peer)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be a bytes-like object, not {type(data).__name__}")
        if self._address is not None:
            if addr not in (None, self._address):
                raise ValueError(f"Invalid address: must be None or {self._address}")
            addr = self._address
        if addr is None:
            raise ValueError("the pyuv backend needs an address for each datagram")
        if self._conn_lost:
            self._conn_lost += 1
            return
        udp = self._udp
        if not udp.send_queue_size:
            try:
                udp.try_send(addr, data)
                return
            except pyuv.error.UDPError as exc:
                if exc.args[0] != pyuv.errno.UV_EAGAIN:
                    self._protocol.error_received(_os_error(exc.args[0]))
                    return
        if not isinstance(data, bytes):
            data = bytes(data)
        udp.send(addr, data, self._on_sent)
        self._maybe_pause_protocol()

    def _on_sent(self, handle: Any, error: int | None) -> None:
        if self._sock is None:
            return
        if error is not None and error != _UV_ECANCELED:
            self._protocol.error_received(_os_error(error))
        self._maybe_resume_protocol()
        if self._closing and not self._udp.send_queue_size and not self._conn_lost:
            self._conn_lost += 1
            self._loop.call_soon(self._call_connection_lost, None)

    def is_closing(self) -> bool:
        """True once :meth:`close` or :meth:`abort` was called."""
        return self._closing

    def close(self) -> None:
        """Close once queued datagrams are sent; ``connection_lost(None)`` follows."""
        if self._closing:
            return
        self._closing = True
        self._udp.stop_recv()
        if not self._udp.send_queue_size and not self._conn_lost:
            self._conn_lost += 1
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self) -> None:
        """Close now, dropping queued datagrams."""
        self._force_close(None)

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        self._loop.call_exception_handler(
            {"message": message, "exception": exc, "transport": self, "protocol": self._protocol}
        )
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._conn_lost:
            return
        self._closing = True
        if self._sock is not None:
            self._udp.stop_recv()
        self._conn_lost += 1
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            sock, self._sock = self._sock, None
            if sock is not None:
                sock.detach()
                self._udp.close()
            self._protocol = None
