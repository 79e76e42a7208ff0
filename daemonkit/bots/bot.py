"""Bot: one simulated user, written like a daemon.

A bot is the client-side mirror of :class:`~daemonkit.daemon.Daemon`: the
same framers, the same :class:`~daemonkit.core.connection.Connection` with its
buffers and limits, callbacks named ``on_*``. Thousands of bots share one
reactor; each owns one connection and everything hung on it (timers, pending
requests), released when it closes.

A bot measures what it does with :meth:`Bot.request` (send a frame and time
the reply), :meth:`Bot.record` (a custom measure, in a row of its own) and
:meth:`Bot.fail`. Replies are matched to requests first-in-first-out, or by
a key when the bot overrides :meth:`Bot.reply_key`.

A reply is judged inside the bot, as Locust's ``catch_response`` does: it
counts as a success only once its verdict is in, and ``self.fail(name,
why)`` before then counts it as a failure instead (once, never as both).
The verdict of a :meth:`Bot.request` reply is in when :meth:`Bot.on_read`
returns; that of a :meth:`Bot.call` reply when the script makes its next
request or call, sleeps, thinks or ends.

Three ways to drive a bot, pick one:

* **ticks** — override :meth:`Bot.on_tick` to do one operation. In the closed
  model (the default) the runner calls it after connecting and again once
  every request it made is answered, after ``think_time``. In the open model
  (``--rate N/s``) the runner calls it on a fixed schedule and latency is
  measured from the *scheduled* time, so a stalling server cannot hide its
  latency (coordinated omission, as wrk2 measures it).
* **a script** — override ``async def script(self)`` and write the steps in
  order: ``reply = await self.call(frame)``, ``await self.sleep(1)``,
  ``await self.think()``. The bot closes when the script returns.
* **callbacks and timers** — ``on_connect`` / ``on_read`` plus
  :meth:`Bot.after` / :meth:`Bot.every`, for anything else.

Call order, as a grammar: ``on_connect (on_read | on_tick)* on_close``;
``on_close`` is called exactly once per connection, also when the run ends.
A bot with ``reconnect = True`` goes through it again for each connection:
``(on_connect (on_read | on_tick)* on_close)+``. An HttpBot whose server
ends a connection after a response goes on over a new one without a new
``on_connect``: for it the grammar is per session, not per connection.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, ClassVar

from daemonkit.core.connection import CloseReason, Connection
from daemonkit.daemon import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_MAX_WRITE_BUFFER,
    DEFAULT_WRITE_HIGH_WATER,
    DEFAULT_WRITE_LOW_WATER,
)
from daemonkit.errors import DaemonkitError
from daemonkit.framework.links import Backoff

if TYPE_CHECKING:
    from daemonkit.bots.runner import Fleet
    from daemonkit.core.endpoints import Address
    from daemonkit.core.reactor import Reactor
    from daemonkit.core.timers import Timer

__all__ = [
    "DEFAULT_RECONNECT_MAX",
    "DEFAULT_RECONNECT_MIN",
    "DEFAULT_REQUEST_TIMEOUT",
    "Bot",
    "RequestFailed",
    "between",
]

# Locust and wrk default to no request timeout at all, which hides a server
# that stops answering; 10 s is the connect timeout of curl's happy eyeballs
# and of most HTTP clients' read timeouts (aiohttp's sock_read is unset, requests
# recommends a few seconds). A lost reply is counted as an error after this.
DEFAULT_REQUEST_TIMEOUT = 10.0

# A bot's reconnect backoff: the first delay is drawn from 0.1 s, as
# daemonkit's outbound links and the websockets library start; doubling with
# full jitter up to 5 s, not the links' 30 s: bots measure how long a restart
# keeps users out, and a longer cap would add up to 30 s of the bots' own
# waiting to the outage measured.
DEFAULT_RECONNECT_MIN = 0.1
DEFAULT_RECONNECT_MAX = 5.0

# At the run's end each bot's connection gets this long to close cleanly
# (flush, or a WebSocket's closing handshake) before it is aborted: half the
# runner's 2 s grace for closing, so a clean close lands before the runner
# gives up on every bot at once.
END_CLOSE_TIMEOUT = 1.0

# In the closed model a tick that sent nothing is retried after this long,
# so a bot that has nothing to do does not spin.
IDLE_TICK = 1.0


class RequestFailed(DaemonkitError):
    """A request made with :meth:`Bot.call` got no reply: timeout or connection closed.

    ``kind`` is what was counted as the error (e.g. ``"timeout"``).
    """

    def __init__(self, name: str, kind: str) -> None:
        super().__init__(f"{name}: {kind}")
        self.name = name
        self.kind = kind


class between:
    """A think time drawn uniformly from ``low``..``high`` seconds (Locust's ``between``).

    Use as ``think_time = between(0.5, 1.5)``. Draws come from the bot's own
    seeded :attr:`Bot.random`, so a run is repeatable.
    """

    __slots__ = ("high", "low")

    def __init__(self, low: float, high: float) -> None:
        if not 0 <= low <= high:
            raise ValueError(f"between({low}, {high}) needs 0 <= low <= high")
        self.low = low
        self.high = high

    def __call__(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)

    def __repr__(self) -> str:
        return f"between({self.low}, {self.high})"


def _failed_future(future: asyncio.Future[Any], exc: RequestFailed) -> None:
    """Fail a request's future; awaiting it raises ``exc``, leaving it unawaited is no error.

    The failure is counted already, so a future nobody awaits (an HttpBot's
    request made in ``on_tick``) must not be logged as "exception never
    retrieved": marking it retrieved here costs nothing per success.
    """
    future.set_exception(exc)
    future.exception()


# One pending request: when it started (the scheduled time in the open
# model), its operation name, and the future of a script's call(), if any.
_Pending = tuple[float, str, "asyncio.Future[Any] | None"]


class Bot:
    """Base class of a simulated user; override the ``on_*`` callbacks you need.

    Settings (class attributes): ``framing`` (as for a daemon: a Framer class
    or instance; default raw bytes), ``think_time`` (seconds, or
    :func:`between`), ``request_timeout``, and the connection limits
    ``write_high_water``, ``write_low_water``, ``max_write_buffer``,
    ``close_timeout``; ``reconnect`` (connect again when the daemon or the
    network drops the connection mid-run, after ``reconnect_min`` ..
    ``reconnect_max`` seconds of exponential backoff with jitter; the bot
    object is kept, and ``on_connect`` and the ticks or the script start
    again); ``weight`` (this class's share of the bots when a run has several
    classes, as Locust's ``weight``).

    Attributes: ``index`` (0..N-1 within the run), ``state`` (a dict for this
    bot's data), ``random`` (a :class:`random.Random` seeded from the run's
    seed and ``index``: use it for every random choice, so runs repeat),
    ``conn`` (the :class:`~daemonkit.core.connection.Connection`, None before
    connecting), ``log``.
    """

    framing: ClassVar[Any] = None
    think_time: ClassVar[float | between] = 0.0
    request_timeout: ClassVar[float] = DEFAULT_REQUEST_TIMEOUT
    write_high_water: int = DEFAULT_WRITE_HIGH_WATER
    write_low_water: int = DEFAULT_WRITE_LOW_WATER
    max_write_buffer: int = DEFAULT_MAX_WRITE_BUFFER
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    idle_timeout: float | None = None
    #: The target schemes this class speaks; a run against another is refused
    #: before it starts, naming the class to use (see daemonkit.bots.targets).
    schemes: ClassVar[tuple[str, ...]] = ("tcp", "unix", "tls")
    #: TLS targets (tls://, https://, wss://): a CA file (PEM) to trust instead of
    #: the system's, and whether to verify the server at all (False: tests only).
    cafile: ClassVar[str | None] = None
    verify: ClassVar[bool] = True
    reconnect: ClassVar[bool] = False
    weight: ClassVar[int] = 1
    reconnect_min: ClassVar[float] = DEFAULT_RECONNECT_MIN
    reconnect_max: ClassVar[float] = DEFAULT_RECONNECT_MAX

    # True while the bot may send no request though its connection is open
    # (a WebSocket bot that sent its Close): requests count as "not connected".
    _refusing: bool = False

    # Which driving style the class uses, found once per class.
    _has_tick: ClassVar[bool] = False
    _has_script: ClassVar[bool] = False
    _keyed: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._has_tick = cls.on_tick is not Bot.on_tick
        cls._has_script = cls.script is not Bot.script
        cls._keyed = cls.reply_key is not Bot.reply_key
        if cls._has_tick and cls._has_script:
            raise TypeError(f"{cls.__name__} defines both on_tick and script; use one of them")

    def __init__(self, fleet: Fleet, index: int) -> None:
        self._fleet = fleet
        self.index = index
        #: The endpoint this bot connects to (set by the runner's connector).
        self.target: Address | None = None
        self.random = random.Random(f"{fleet.seed}:{index}")
        self.conn: Connection | None = None
        self._state: dict[str, Any] | None = None
        self._fifo: collections.deque[_Pending] = collections.deque()
        self._by_key: dict[Hashable, _Pending] = {}
        self._scheduled: float | None = None
        self._sent_in_tick = False
        self._script_task: asyncio.Task[None] | None = None
        # Replies timed and awaiting their verdict: (name, latency). The one
        # on_read is looking at, and those a script's call() returned.
        self._judging: tuple[str, float] | None = None
        self._unjudged_calls: list[tuple[str, float]] = []
        self._on_read: Callable[[Connection, Any], object] = self._dispatch_read
        self._on_frames: Callable[[Connection, list[Any]], object] | None = None
        self._backoff: Backoff | None = None
        # "Class:" before every operation name when the run has several classes.
        self._prefix = ""
        # A drop the protocol saw before the connection closed (a WebSocket
        # Close from the server mid-run), for the fleet to count: see _bot_closed.
        self._drop_kind: str | None = None

    # -- callbacks: override these --------------------------------------------

    def on_connect(self) -> None:
        """The connection is up. Start the bot's work here (or in on_tick/script)."""

    def on_read(self, frame: Any) -> None:
        """A frame arrived (after it was matched to a pending request, if it was a reply)."""

    def on_tick(self) -> None:
        """Do one operation (see the module docstring for when the runner calls it)."""

    async def script(self) -> None:
        """The bot's steps in order, as a coroutine; the bot closes when it returns."""

    def reply_key(self, frame: Any) -> Hashable | None:
        """Which request ``frame`` answers: a key given to :meth:`request`, or None.

        Not overridden: every frame answers the oldest pending request (FIFO).
        Overridden: a frame answers the request made with the returned key; a
        frame for which it returns None answers the oldest request made
        without a key, if any, else it is no reply (e.g. a broadcast).
        """
        return None

    def on_close(self, reason: CloseReason) -> None:
        """The connection closed (``reason`` says why); called exactly once."""

    def on_error(self, exc: Exception) -> None:
        """A callback of this bot raised; by default: counted, logged, the bot closes."""
        self.log.error("bot #%d failed: %s: %s; closing", self.index, type(exc).__name__, exc)
        if self.conn is not None:
            self.conn.close()

    # -- actions --------------------------------------------------------------

    @property
    def state(self) -> dict[str, Any]:
        """A dict for this bot's own data."""
        if self._state is None:
            self._state = {}
        return self._state

    @property
    def reactor(self) -> Reactor:
        """The reactor all bots of the run share."""
        return self._fleet.reactor

    @property
    def log(self) -> logging.Logger:
        """The bots' logger."""
        return self._fleet.log

    def now(self) -> float:
        """The run's clock, in seconds (fake in a simulation)."""
        return self._fleet.clock_now()

    def send(self, frame: Any) -> bool:
        """Encode ``frame`` with the bot's framer and send it; False = wait (backpressure)."""
        conn = self.conn
        if conn is None:
            raise RuntimeError("the bot is not connected yet; send from on_connect or later")
        return conn.send(frame)

    def write(self, data: bytes) -> bool:
        """Send raw bytes, bypassing the framer."""
        conn = self.conn
        if conn is None:
            raise RuntimeError("the bot is not connected yet; write from on_connect or later")
        return conn.write(data)

    def close(self) -> None:
        """Flush what was sent, then close; :meth:`on_close` follows."""
        if self.conn is not None:
            self.conn.close()

    def request(self, frame: Any, name: str = "request", *, key: Hashable | None = None) -> bool:
        """Send ``frame`` and time it until its reply arrives, as operation ``name``.

        The reply is the next unmatched frame (FIFO), or the frame for which
        :meth:`reply_key` returns ``key``. No reply within ``request_timeout``
        counts as a ``"timeout"`` error; the connection closing first counts
        as ``"closed: <reason>"``. Returns what :meth:`send` returns, or False
        when the bot is not connected (counted as ``"not connected"``).
        """
        return self._request(frame, name, key, None)

    async def call(self, frame: Any, name: str = "request", *, key: Hashable | None = None) -> Any:
        """:meth:`request`, awaited: returns the reply frame (for ``script``).

        Raises :class:`RequestFailed` when it timed out or the connection
        closed (the failure is counted already).
        """
        future: asyncio.Future[Any] = self._fleet.reactor.loop.create_future()
        self._request(frame, name, key, future)
        return await future

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on the run's clock (a fake clock in simulations)."""
        self._judge_calls()
        future: asyncio.Future[None] = self._fleet.reactor.loop.create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        self.after(seconds, wake)
        await future

    async def think(self) -> None:
        """Wait one ``think_time``."""
        await self.sleep(self._think())

    def record(self, name: str, seconds: float) -> None:
        """Count one custom measure ``name`` of ``seconds``.

        It gets a row of its own and is not a request: the headline req/s and
        the ``total`` row leave it out.
        """
        self._fleet.stats.measure(self._prefix + name, seconds)

    def fail(self, name: str, why: str) -> None:
        """Count one failed ``name`` operation; ``why`` is the error's kind.

        If a reply of request ``name`` is awaiting its verdict (``on_read``
        is looking at it, or a script's ``call`` just returned it), that
        request is what failed: it counts as this failure and not as a
        success. Otherwise one more failure of ``name`` is counted.
        """
        stats = self._fleet.stats
        name = self._prefix + name
        judging = self._judging
        if judging is not None and judging[0] == name:
            self._judging = None
            stats.fail(name, why)
            return
        calls = self._unjudged_calls
        for i, (called, _) in enumerate(calls):
            if called == name:
                del calls[i]
                stats.fail(name, why)
                return
        stats.fail(name, why, request=False)

    def after(self, delay: float, fn: Callable[..., object], *args: object) -> Timer:
        """Run ``fn(*args)`` once after ``delay`` s; cancelled when the bot closes."""
        conn = self.conn
        if conn is None:
            raise RuntimeError("the bot is not connected yet; start timers in on_connect")
        return conn.after(delay, fn, *args)

    def every(self, interval: float, fn: Callable[..., object], *args: object) -> Timer:
        """Run ``fn(*args)`` every ``interval`` s; cancelled when the bot closes."""
        conn = self.conn
        if conn is None:
            raise RuntimeError("the bot is not connected yet; start timers in on_connect")
        return conn.every(interval, fn, *args)

    @property
    def running(self) -> bool:
        """True until the run's duration is over (then start nothing new)."""
        return not self._fleet.ending

    @property
    def pending(self) -> int:
        """Requests sent and not yet answered."""
        return len(self._fifo) + len(self._by_key)

    # -- internals --------------------------------------------------------------

    def _think(self) -> float:
        think = self.think_time
        return think(self.random) if isinstance(think, between) else float(think)

    def _judge_calls(self) -> None:
        """The script moved on: the replies its calls returned are successes."""
        calls = self._unjudged_calls
        if calls:
            record = self._fleet.stats.record
            for name, latency in calls:
                record(name, latency)
            calls.clear()

    def _may_queue(self) -> bool:
        """Whether a request may be made while the connection is closed (see HttpBot)."""
        return False

    def _request(
        self,
        frame: Any,
        name: str,
        key: Hashable | None,
        future: asyncio.Future[Any] | None,
        send: Callable[[Any], bool] | None = None,
    ) -> bool:
        """Register a pending request ``name`` and send ``frame`` (with ``send``, if given).

        Every request goes through here: the verdict of the previous calls,
        the class prefix, the run's end, the connection's state, the timing.
        """
        if self._unjudged_calls:
            self._judge_calls()
        if self._prefix:
            name = self._prefix + name
        fleet = self._fleet
        conn = self.conn
        if fleet.ending:
            # The run is over: nothing new is started or counted.
            if future is not None:
                _failed_future(future, RequestFailed(name, "run ended"))
            return False
        if (conn is None or conn.closing or self._refusing) and not self._may_queue():
            fleet.stats.fail(name, "not connected")
            if future is not None:
                _failed_future(future, RequestFailed(name, "not connected"))
            return False
        start = self._scheduled
        if start is None:
            start = fleet.clock_now()
        if key is None:
            self._fifo.append((start, name, future))
        elif key in self._by_key:
            fleet.stats.fail(name, "duplicate key")
            if future is not None:
                _failed_future(future, RequestFailed(name, "duplicate key"))
            return False
        else:
            self._by_key[key] = (start, name, future)
        self._sent_in_tick = True
        if send is not None:
            return send(frame)
        assert conn is not None
        return conn.send(frame)

    def _dispatch_read(self, conn: Connection, frame: Any) -> None:
        # The bots' hot path: one call per reply, locals instead of attribute chains.
        fifo = self._fifo
        by_key = self._by_key
        if not fifo and not by_key:
            self.on_read(frame)
            return
        key = self.reply_key(frame) if self._keyed else None
        item = (fifo.popleft() if fifo else None) if key is None else by_key.pop(key, None)
        fleet = self._fleet
        if item is None:
            self.on_read(frame)
        else:
            start, name, future = item
            latency = fleet.clock_now() - start
            if future is None:
                # Success once on_read has not failed it (see fail()).
                self._judging = (name, latency)
                try:
                    self.on_read(frame)
                finally:
                    judged = self._judging
                    self._judging = None
                    if judged is not None:
                        fleet.stats.record(name, latency)
            else:
                # Judged when the script moves on (see _judge_calls).
                self._unjudged_calls.append((name, latency))
                if not future.done():
                    future.set_result(frame)
                self.on_read(frame)
        if item is not None and not fifo and not by_key and self._has_tick and fleet.closed_model:
            self._next_tick()

    def _next_tick(self) -> None:
        conn = self.conn
        if self._fleet.ending or conn is None or (conn._closing and not self._may_queue()):
            return
        setting = self.think_time
        think = setting(self.random) if setting.__class__ is between else setting
        if think > 0:  # type: ignore[operator]
            self.after(think, self._tick)  # type: ignore[arg-type]
        else:
            self._tick()

    def _tick(self, scheduled: float | None = None) -> None:
        """Run on_tick once; ``scheduled`` is the open model's planned time."""
        conn = self.conn
        if conn is None or (conn.closing and not self._may_queue()):
            return
        self._scheduled = scheduled
        self._sent_in_tick = False
        try:
            self.on_tick()
        except Exception as exc:
            self._call_error(conn, exc)
            return
        finally:
            self._scheduled = None
        if self._fleet.closed_model and not self._sent_in_tick and not self._fleet.ending:
            self.after(max(self._think(), IDLE_TICK), self._tick)

    def _expire(self, now: float) -> None:
        """Fail the requests older than ``request_timeout`` (the fleet's sweep calls this)."""
        limit = now - self.request_timeout
        expired = 0
        fifo = self._fifo
        while fifo and fifo[0][0] <= limit:
            self._failed(fifo.popleft(), "timeout")
            expired += 1
        if self._by_key:
            for key, item in list(self._by_key.items()):
                if item[0] <= limit:
                    del self._by_key[key]
                    self._failed(item, "timeout")
                    expired += 1
        if expired and self._fleet.closed_model and self._has_tick and not self.pending:
            self._next_tick()

    def _failed(self, item: _Pending, kind: str) -> None:
        _, name, future = item
        self._fleet.stats.fail(name, kind)
        if future is not None and not future.done():
            _failed_future(future, RequestFailed(name, kind))

    def _drop_pending(self, reason: CloseReason) -> int:
        """At close: fail the pending requests (or count them unfinished at the run's end)."""
        items = list(self._fifo) + list(self._by_key.values())
        self._fifo.clear()
        self._by_key.clear()
        if self._fleet.ending:
            for _, name, future in items:
                if future is not None and not future.done():
                    _failed_future(future, RequestFailed(name, "run ended"))
            self._fleet.unfinished += len(items)
        else:
            for item in items:
                self._failed(item, f"closed: {reason}")
        return len(items)

    async def _run_script(self) -> None:
        try:
            await self.script()
        except asyncio.CancelledError:
            raise
        except RequestFailed:
            pass  # counted when it failed
        except Exception as exc:
            self._judge_calls()
            self._fleet.stats.fail(self._prefix + "script", type(exc).__name__, request=False)
            self.log.error("bot #%d script failed: %s: %s", self.index, type(exc).__name__, exc)
        finally:
            self._script_task = None
            self._judge_calls()
        self.close()

    # -- the connection's host interface (see ConnectionHost) ------------------

    def _on_connection_made(self, conn: Connection) -> None:
        self.conn = conn
        fleet = self._fleet
        fleet._bot_connected(self)
        if fleet.ending:
            conn.close()  # connected after the run's end: nothing left to do
            return
        try:
            self.on_connect()
        except Exception as exc:
            self._call_error(conn, exc)
            return
        if conn.closing:
            return
        if self._has_script:
            self._script_task = fleet.reactor.spawn(self._run_script())
        elif self._has_tick and fleet.closed_model:
            self._tick()

    def _on_connection_lost(self, conn: Connection, reason: CloseReason) -> None:
        task = self._script_task
        if task is not None:
            task.cancel()
            self._script_task = None
        self._judge_calls()
        self._drop_pending(reason)
        try:
            self.on_close(reason)
        except Exception:
            self.log.exception("bot #%d: on_close raised", self.index)
        self._fleet._bot_closed(self, reason, self._drop_kind)
        self._drop_kind = None

    def _connect_failed(self, kind: str) -> bool:
        """A connect of this bot failed; True if the bot dealt with it (see HttpBot)."""
        return False

    def _close_at_end(self) -> None:
        """The run is over: close the connection cleanly (the runner calls this once)."""
        conn = self.conn
        if conn is not None:
            conn.close(timeout=END_CLOSE_TIMEOUT)

    def _call_error(self, conn: Connection, exc: Exception) -> None:
        self._fleet.stats.fail(self._prefix + "bot", type(exc).__name__, request=False)
        try:
            self.on_error(exc)
        except Exception:
            self.log.exception("bot #%d: on_error raised; closing", self.index)
            conn.close()

    def _call_eof(self, conn: Connection) -> bool:
        return False

    def _call_drain(self, conn: Connection) -> None:
        pass

    def _call_timeout(self, conn: Connection) -> None:
        conn.close()

    def __repr__(self) -> str:
        state = "connected" if self.conn is not None and not self.conn.closed else "idle"
        return f"<{type(self).__name__} #{self.index} {state} pending={self.pending}>"
