"""BotRunner: N bots against one target, for a bounded time, with numbers at the end.

The run, in order: bots are created and connected at ``spawn_rate`` per
second; each is driven by its ticks, its script or its own timers (see
:mod:`daemonkit.bots.bot`); every ``interval`` the runner closes a
:class:`~daemonkit.bots.stats.Sample` (req/s, p50/p99, active bots),
samples its own CPU and the daemon's memory, and updates the progress
display; at ``duration`` it stops starting work, gives pending requests
``stop_timeout`` to finish, closes every bot, and returns a
:class:`~daemonkit.bots.result.RunResult`.

Two load models:

* **closed** (default): each bot waits for its reply (and ``think_time``)
  before its next tick; throughput is whatever the server allows.
* **open** (``rate``): ticks are spread over the connected bots round-robin
  at a fixed total rate, and each request is timed from the moment it was
  *scheduled*, so a server that stalls shows its stall in the latency
  instead of slowing the load down (wrk2's correction of coordinated
  omission).

Every run stops by itself: ``duration`` is required and bounded, connects
time out after ``connect_timeout``, and a run whose bots will not close is
ended ``stop_timeout`` + 2 s after its duration.
"""

from __future__ import annotations

import asyncio
import datetime
import errno
import logging
import math
import os
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from daemonkit.bots.bot import Bot
from daemonkit.bots.result import RunResult, ServerMemory
from daemonkit.bots.stats import Interval, Stats
from daemonkit.bots.targets import check_target, split_target
from daemonkit.bots.targets import connector as connector_for
from daemonkit.core.connection import CloseReason, Connection
from daemonkit.core.endpoints import Address
from daemonkit.core.reactor import Reactor
from daemonkit.core.timers import FakeClock
from daemonkit.errors import ConfigError
from daemonkit.framework.hosts import framer_factory
from daemonkit.framework.links import Backoff

if TYPE_CHECKING:
    from daemonkit.bots.progress import Progress
    from daemonkit.core.timers import Timer

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_STOP_TIMEOUT",
    "MAX_DURATION",
    "MAX_WEIGHT_TOTAL",
    "BotRunner",
    "Fleet",
    "read_rss",
    "weighted_order",
]

# curl's --connect-timeout is unset but its happy-eyeballs gives up at 200 ms
# per family; HTTP clients default to 10 s (aiohttp sock_connect 30 s). A bot
# that cannot connect in 10 s on loopback is counted as failed.
DEFAULT_CONNECT_TIMEOUT = 10.0
# Locust's --stop-timeout defaults to 0 (users stop at once); we give replies
# in flight 2 s so the last second's latencies are not simply dropped.
DEFAULT_STOP_TIMEOUT = 2.0
# A load loop must stop by itself: one day is the longest run accepted.
MAX_DURATION = 86_400.0
# The weights of a run's bot classes add up to at most this: one period of
# the assignment is a list that long (80 KB). Locust's weights are small
# integers; a mix finer than 1 in 10,000 is below any run's noise.
MAX_WEIGHT_TOTAL = 10_000
# CPU share of one core above which the bots process is the bottleneck.
SATURATED_CPU = 0.9
# Extra time after stop_timeout for bots to finish closing before the run ends anyway.
_CLOSE_GRACE = 2.0

Connector = Callable[["Fleet", Bot, Connection], None]
"""How a bot's connection is opened: ``connector(fleet, bot, conn)`` starts the
connect, and on success the transport calls ``conn.connection_made``; on
failure the connector calls ``fleet.connect_failed(bot, kind)``."""


def read_rss(pid: int) -> int | None:
    """Resident memory of process ``pid`` in bytes, from ``/proc`` (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            fields = f.read().split()
        return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return None


def weighted_order(weights: Sequence[int]) -> list[int]:
    """One period of the classes given to bots in spawn order: positions into ``weights``.

    nginx's smooth weighted round robin: over ``sum(weights)`` bots each
    class gets exactly its weight, spread out rather than in blocks, so the
    classes arrive together at any spawn rate. Bot ``i`` of the run is of
    class ``order[i % len(order)]``, which keeps ``--procs`` workers (disjoint
    index ranges) in the same mix as one process.
    """
    current = [0] * len(weights)
    total = sum(weights)
    order = []
    for _ in range(total):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(weights)), key=lambda i: current[i])
        current[best] -= total
        order.append(best)
    return order


def _check_classes(
    bot_class: type[Bot] | Sequence[type[Bot]], weights: Sequence[int] | None
) -> tuple[list[type[Bot]], list[int]]:
    classes = [bot_class] if isinstance(bot_class, type) else list(bot_class)
    if not classes:
        raise ConfigError("no bot class to run")
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, Bot)):
            raise ConfigError(f"{cls!r} is not a Bot subclass")
    names = [cls.__name__ for cls in classes]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"bot class {name} is given twice; each class's rows go by its name")
    chosen = [cls.weight for cls in classes] if weights is None else list(weights)
    if len(chosen) != len(classes):
        raise ConfigError(f"{len(chosen)} weights for {len(classes)} bot classes")
    for cls, w in zip(classes, chosen, strict=True):
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise ConfigError(f"the weight of {cls.__name__} must be a whole number >= 1, not {w}")
    if sum(chosen) > MAX_WEIGHT_TOTAL:
        raise ConfigError(f"the weights add up to {sum(chosen)}; at most {MAX_WEIGHT_TOTAL}")
    return classes, chosen


def _class_connector(by_class: dict[type[Bot], Connector]) -> Connector:
    """One connector per bot class (each has its own TLS settings), chosen per bot."""
    if len(by_class) == 1:
        (only,) = by_class.values()
        return only

    def connect(fleet: Fleet, bot: Bot, conn: Connection) -> None:
        by_class[type(bot)](fleet, bot, conn)

    return connect


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "connect timeout"
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno in errno.errorcode:
        return errno.errorcode[exc.errno]
    return type(exc).__name__


class Fleet:
    """What the bots of one run share: the reactor, the stats, the clock, the counters.

    Bots reach it as ``self._fleet``; users do not make one (the runner does).
    """

    def __init__(
        self,
        reactor: Reactor,
        stats: Stats,
        *,
        seed: int | str = 0,
        closed_model: bool = True,
        log: logging.Logger | None = None,
    ) -> None:
        self.reactor = reactor
        self.stats = stats
        self.seed = seed
        self.closed_model = closed_model
        self.log = log or logging.getLogger("daemonkit.bots")
        self.clock_now: Callable[[], float] = reactor.clock.now
        self.ending = False
        self.unfinished = 0
        self.live: dict[Bot, None] = {}
        self.peak_connected = 0
        self.closed: dict[str, int] = {}
        self.connecting = 0
        #: How bots connect (the runner sets it; a reconnect uses it again).
        self.connector: Connector | None = None
        #: Overrides every bot class's ``reconnect`` setting when not None.
        self.reconnect: bool | None = None
        #: The target's path (``ws://h:p/chat``: ``"/chat"``), or "" when it has none.
        self.target_path = ""
        #: Dropped bots, and when they dropped, until they connect again.
        self.down: dict[Bot, float] = {}
        self._reconnect_timers: dict[Bot, Timer] = {}
        self._attempting: set[Bot] = set()  # dropped bots with a reconnect in flight
        self._ids = 0
        self._spawned_at: dict[Bot, float] = {}

    def new_connection(self, bot: Bot, *, timed: bool = True) -> Connection:
        """A Connection owned by ``bot``, with a fresh framer of the bot's ``framing``.

        ``timed``: the connect time goes into the ``connect`` row (first
        connects; a reconnect's goes into the outage instead).
        """
        factory = framer_factory(bot.framing)
        self._ids += 1
        if timed:
            self._spawned_at[bot] = self.clock_now()
        self.connecting += 1
        return Connection(bot, self._ids, factory() if factory is not None else None)

    def connect_failed(self, bot: Bot, kind: str) -> None:
        """The connector could not connect ``bot``: counted, and the bot is done.

        A dropped bot's reconnect attempt that failed is counted apart and
        tried again after the bot's backoff.
        """
        self._spawned_at.pop(bot, None)
        self.connecting -= 1
        self._attempting.discard(bot)
        if bot._connect_failed(kind):
            return  # an HttpBot's next connection, after the server ended the last one
        if bot in self.down:
            self.stats.reconnect_failed(kind)
            self._schedule_reconnect(bot)
            return
        self.stats.connect_failed(kind)

    def stop_reconnecting(self, now: float, *, final: bool = False) -> None:
        """The run is over: no more reconnects; bots still down count as down until ``now``.

        A reconnect already in flight may still land (its outage ends then),
        unless ``final``.
        """
        for timer in self._reconnect_timers.values():
            timer.cancel()
        self._reconnect_timers.clear()
        for bot, since in list(self.down.items()):
            if final or bot not in self._attempting:
                self.stats.stayed_down(max(0.0, now - since))
                del self.down[bot]

    def _reconnects(self, bot: Bot) -> bool:
        return self.reconnect if self.reconnect is not None else bot.reconnect

    def _schedule_reconnect(self, bot: Bot) -> None:
        if self.ending or self.connector is None:
            return
        backoff = bot._backoff
        if backoff is None:
            rng = random.Random(f"{self.seed}:{bot.index}:reconnect")
            backoff = bot._backoff = Backoff(bot.reconnect_min, bot.reconnect_max, rng=rng)
        self._reconnect_timers[bot] = self.reactor.call_later(
            backoff.next(), self._reconnect_now, bot
        )

    def _reconnect_now(self, bot: Bot) -> None:
        self._reconnect_timers.pop(bot, None)
        if self.ending or self.connector is None:
            return
        conn = self.new_connection(bot, timed=False)
        self._attempting.add(bot)
        try:
            self.connector(self, bot, conn)
        except Exception as exc:
            self.connect_failed(bot, _error_kind(exc))

    def _bot_connected(self, bot: Bot) -> None:
        started = self._spawned_at.pop(bot, None)
        self.connecting -= 1
        if started is not None:
            self.stats.connected(self.clock_now() - started)
        self.live[bot] = None
        if len(self.live) > self.peak_connected:
            self.peak_connected = len(self.live)
        self._attempting.discard(bot)
        since = self.down.pop(bot, None)
        if since is not None:
            self.stats.reconnected(self.clock_now() - since)
            if bot._backoff is not None:
                bot._backoff.reset()

    def _bot_closed(self, bot: Bot, reason: CloseReason, drop: str | None = None) -> None:
        """A bot's connection ended; ``drop`` names a drop the bot saw in its protocol.

        A close that was not the bot's own (``reason`` not LOCAL), or one the
        bot says the server asked for (``drop``: a WebSocket Close from the
        server mid-run), is a drop: counted once as a failure of the
        connection, and reconnected when the bot class asks for it.
        """
        self.live.pop(bot, None)
        key = str(reason)
        self.closed[key] = self.closed.get(key, 0) + 1
        if not self.ending and (reason is not CloseReason.LOCAL or drop is not None):
            # The daemon (or the network) dropped a bot mid-run: that is an error.
            kind = drop or f"closed: {reason}"
            self.stats.fail(bot._prefix + "connection", kind, request=False)
            self.stats.dropped()
            self.down[bot] = self.clock_now()
            if self._reconnects(bot):
                self._schedule_reconnect(bot)


class BotRunner:
    """Run ``bots`` instances of ``bot_class`` against ``target`` for ``duration`` seconds.

    ``bot_class`` may be a list of classes: the bots are shared among them
    by ``weights`` (default: each class's ``weight``), in spawn order (see
    :func:`weighted_order`), and every operation is named ``Class:name``
    so each class has its own rows.

    ``spawn_rate`` bots are started per second (default: all at once);
    ``rate`` (requests per second, all bots together) selects the open model.
    ``seed`` makes every bot's :attr:`~daemonkit.bots.Bot.random` repeatable;
    bots are numbered from ``first_index`` (``--procs`` workers get disjoint ranges).
    ``progress`` receives a live update every ``interval`` seconds.
    ``server_pid`` is the daemon's process, whose RSS is sampled to report
    memory per connected bot. ``cafile`` and ``verify`` override every bot
    class's TLS settings (``--cafile``, ``--insecure``). ``reactor`` and
    ``connector`` let a caller run the bots on its own reactor over its own
    transports (the simulation does).

    :meth:`run` blocks and returns the :class:`~daemonkit.bots.result.RunResult`.
    Raises :class:`~daemonkit.errors.ConfigError` for impossible settings.
    """

    def __init__(
        self,
        bot_class: type[Bot] | Sequence[type[Bot]],
        target: str | Address,
        *,
        bots: int = 1,
        duration: float = 10.0,
        spawn_rate: float | None = None,
        rate: float | None = None,
        backend: str = "auto",
        seed: int | str = 0,
        first_index: int = 0,
        progress: Progress | None = None,
        server_pid: int | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        interval: float = 1.0,
        reactor: Reactor | None = None,
        connector: Connector | None = None,
        reconnect: bool | None = None,
        weights: Sequence[int] | None = None,
        cafile: str | None = None,
        verify: bool | None = None,
    ) -> None:
        classes, chosen = _check_classes(bot_class, weights)
        if bots < 1:
            raise ConfigError(f"bots must be at least 1, not {bots}")
        if not 0 < duration <= MAX_DURATION:
            raise ConfigError(f"duration must be within 0..{MAX_DURATION:.0f} s, not {duration}")
        if spawn_rate is not None and spawn_rate <= 0:
            raise ConfigError(f"spawn_rate must be positive, not {spawn_rate}")
        if rate is not None and not rate > 0:
            raise ConfigError(f"rate must be positive, not {rate}")
        for cls in classes:
            if rate is not None and not cls._has_tick:
                raise ConfigError(
                    f"the open model (rate) calls on_tick on a schedule; {cls.__name__} "
                    "defines no on_tick"
                )
        if interval <= 0:
            raise ConfigError(f"interval must be positive, not {interval}")
        for cls in classes:
            if reconnect if reconnect is not None else cls.reconnect:
                Backoff(cls.reconnect_min, cls.reconnect_max)  # checks the bounds
        #: The first (or only) bot class; :attr:`classes` has them all.
        self.bot_class = classes[0]
        self.classes = classes
        self.weights = chosen
        self._order = weighted_order(chosen)
        # A path in the target (ws://h:p/chat, http://h:p/api) is for the bots.
        self.address, self.path = split_target(target)
        for cls in classes:
            check_target(cls, self.address)  # ws:// with a plain Bot: refused, never raw TCP
        self.target = str(target)
        self.bots = bots
        self.duration = duration
        self.spawn_rate = spawn_rate
        self.rate = rate
        self.backend = backend
        self.seed = seed
        self.first_index = first_index
        self.progress = progress
        self.server_pid = server_pid
        self.stop_timeout = stop_timeout
        self.interval = interval
        self.reconnect = reconnect
        self.stats = Stats()
        self.fleet: Fleet | None = None
        self.warnings: list[str] = []
        #: The warnings the live progress display showed as they happened.
        self.shown_warnings: list[str] = []
        self._reactor = reactor
        self._connector = connector or _class_connector(
            {
                cls: connector_for(self.address, connect_timeout, cls, cafile=cafile, verify=verify)
                for cls in classes
            }
        )
        self._timers: list[Timer] = []
        self._spawn_timer: Timer | None = None
        self._spawn_rate = 1.0
        self._spawned = 0
        self._class_counts: dict[str, int] = {}
        self._started = 0.0
        self._started_wall = ""
        self._measured_until: float | None = None
        self._last_sample = 0.0
        self._end_at = 0.0
        self._open_sent = 0
        self._open_missed = 0
        self._rr: list[Bot] = []
        self._rr_index = 0
        self._cpu: list[float] = []
        self._cpu_last: tuple[float, float] | None = None
        self._hot_seconds = 0
        self._server: ServerMemory | None = None
        self._server_gone = False
        self._done = False
        self._result: RunResult | None = None
        #: Called with each closed interval and the CPU share (``--procs`` workers use it).
        self.on_interval: Callable[[Interval, float | None], object] | None = None
        #: Called with the result at the end instead of stopping the reactor.
        self.on_done: Callable[[RunResult], object] | None = None

    # -- running ---------------------------------------------------------------

    def run(self) -> RunResult:
        """Run the whole load on a reactor of its own (or the given one) and return the result."""
        owned = self._reactor is None
        reactor = self._reactor or Reactor(self.backend, log=logging.getLogger("daemonkit.bots"))
        self._reactor = reactor
        try:
            self.start(reactor)
            reactor.run()
        finally:
            if owned:
                reactor.close()
        return self.result()

    def start(self, reactor: Reactor) -> None:
        """Schedule the run on ``reactor`` (which the caller runs); :attr:`done` says when over."""
        self._reactor = reactor
        closed_model = self.rate is None
        self.fleet = Fleet(reactor, self.stats, seed=self.seed, closed_model=closed_model)
        self.fleet.connector = self._connector
        self.fleet.reconnect = self.reconnect
        self.fleet.target_path = self.path
        now = reactor.time()
        self._started = self._last_sample = now
        self._end_at = now + self.duration
        self._started_wall = datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        )
        if self.server_pid is not None:
            rss = read_rss(self.server_pid)
            if rss is None:
                raise ConfigError(f"no process {self.server_pid} to sample (--server-pid)")
            self._server = ServerMemory(self.server_pid, baseline=rss, peak=rss, connected=0)
        self._cpu_mark()
        spawn_rate = self.spawn_rate or math.inf  # None: every bot at once
        spawn_every = min(1.0, max(1.0 / spawn_rate, 0.01))
        self._spawn_rate = spawn_rate
        self._spawn_some()
        if self._spawned < self.bots:
            self._spawn_timer = reactor.call_every(spawn_every, self._spawn_some)
            self._timers.append(self._spawn_timer)
        self._timers.append(reactor.call_every(self.interval, self._sample))
        self._timers.append(reactor.call_every(0.25, self._sweep))
        if self.rate is not None:
            tick = max(1.0 / self.rate, 0.001)
            self._timers.append(reactor.call_every(tick, self._open_tick))
        self._timers.append(reactor.call_at(self._end_at, self._end))

    @property
    def done(self) -> bool:
        """True once every bot closed and the result is ready."""
        return self._done

    def result(self) -> RunResult:
        """The :class:`~daemonkit.bots.result.RunResult`; ``RuntimeError`` before the run ends."""
        if self._result is None:
            raise RuntimeError("the run has not finished")
        return self._result

    def stop(self) -> None:
        """End the run early (as if its duration had passed); for Ctrl-C."""
        if self.fleet is not None and not self.fleet.ending:
            self._end()

    # -- the schedule ------------------------------------------------------------

    def _spawn_some(self) -> None:
        fleet = self.fleet
        assert fleet is not None
        if fleet.ending:
            return
        elapsed = fleet.clock_now() - self._started
        if math.isinf(self._spawn_rate):
            due = self.bots - self._spawned
        else:
            due = min(self.bots, math.floor(elapsed * self._spawn_rate + 1e-9) + 1) - self._spawned
        order = self._order
        several = len(self.classes) > 1
        for _ in range(max(0, due)):
            index = self.first_index + self._spawned
            cls = self.classes[order[index % len(order)]]
            bot = cls(fleet, index)
            if several:
                bot._prefix = f"{cls.__name__}:"
            self._class_counts[cls.__name__] = self._class_counts.get(cls.__name__, 0) + 1
            self._spawned += 1
            conn = fleet.new_connection(bot)
            try:
                self._connector(fleet, bot, conn)
            except Exception as exc:
                fleet.connect_failed(bot, _error_kind(exc))
        if self._spawned >= self.bots and self._spawn_timer is not None:
            self._spawn_timer.cancel()
            self._spawn_timer = None

    def _open_tick(self) -> None:
        fleet = self.fleet
        assert fleet is not None and self.rate is not None
        if fleet.ending:
            return
        now = fleet.clock_now()
        due = math.floor((now - self._started) * self.rate + 1e-9) + 1 - self._open_sent
        for _ in range(max(0, due)):
            scheduled = self._started + self._open_sent / self.rate
            self._open_sent += 1
            bot = self._next_live()
            if bot is None:
                self._open_missed += 1
                continue
            bot._tick(scheduled)

    def _next_live(self) -> Bot | None:
        fleet = self.fleet
        assert fleet is not None
        for _ in range(2):
            rr = self._rr
            while self._rr_index < len(rr):
                bot = rr[self._rr_index]
                self._rr_index += 1
                conn = bot.conn
                if conn is not None and (not conn.closing or bot._may_queue()):
                    return bot
            self._rr = list(fleet.live)
            self._rr_index = 0
            if not self._rr:
                return None
        return None

    def _sweep(self) -> None:
        fleet = self.fleet
        assert fleet is not None
        now = fleet.clock_now()
        for bot in list(fleet.live):
            if bot._fifo or bot._by_key:
                bot._expire(now)

    def _sample(self) -> None:
        fleet = self.fleet
        assert fleet is not None
        now = fleet.clock_now()
        seconds = now - self._last_sample
        if seconds <= 0:
            return
        self._last_sample = now
        interval = self.stats.take_interval(now - self._started, seconds, len(fleet.live))
        sample = interval.sample()
        self.stats.series.append(sample)
        cpu = self._cpu_mark()
        if self.on_interval is not None:
            self.on_interval(interval, cpu)
        if cpu is not None:
            self._cpu.append(cpu)
            self._hot_seconds = self._hot_seconds + 1 if cpu >= SATURATED_CPU else 0
            if self._hot_seconds == 3:
                self._warn(
                    f"the bots process is at {cpu:.0%} CPU: its figures measure the load "
                    "generator, not the daemon; spread the bots with --procs N"
                )
        self._sample_server(len(fleet.live))
        if self.progress is not None:
            self.progress.update(
                sample,
                elapsed=min(now - self._started, self.duration),
                duration=self.duration,
                connected=len(fleet.live),
                target_bots=self.bots,
                errors_total=self.stats.errors,
                cpu=cpu,
            )

    def _sample_server(self, connected: int) -> None:
        server = self._server
        if server is None or self._server_gone:
            return
        rss = read_rss(server.pid)
        if rss is None:
            self._server_gone = True
            self._warn(f"the daemon (pid {server.pid}) is gone; its memory is no longer sampled")
            return
        # Keep the sample with the most bots connected (the latest among equals).
        if connected >= server.connected:
            server.connected = connected
            server.peak = rss

    def _cpu_mark(self) -> float | None:
        fleet = self.fleet
        if fleet is not None and isinstance(fleet.reactor.clock, FakeClock):
            return None  # CPU per fake second means nothing
        times = os.times()
        mark = (times.user + times.system, times.elapsed)
        last, self._cpu_last = self._cpu_last, mark
        if last is None or mark[1] <= last[1]:
            return None
        return (mark[0] - last[0]) / (mark[1] - last[1])

    def _warn(self, message: str) -> None:
        if message in self.warnings:
            return
        self.warnings.append(message)
        if self.progress is not None:
            self.progress.log(f"warning: {message}")
            if self.progress.displays:
                self.shown_warnings.append(message)
        else:
            logging.getLogger("daemonkit.bots").warning("%s", message)

    # -- the end -------------------------------------------------------------------

    def _end(self) -> None:
        fleet = self.fleet
        assert fleet is not None and self._reactor is not None
        if fleet.ending:
            return
        now = fleet.clock_now()
        self._measured_until = now
        if now > self._last_sample:
            self._sample()
        fleet.ending = True
        fleet.stop_reconnecting(now)
        for timer in self._timers:
            timer.cancel()
        self._timers = []
        for bot in list(fleet.live):
            task = bot._script_task
            if task is not None:
                task.cancel()  # a script's steps end with the run
        reactor = self._reactor
        deadline = now + self.stop_timeout
        self._timers.append(reactor.call_every(0.01, self._drain_pending, deadline))

    def _drain_pending(self, deadline: float) -> None:
        fleet = self.fleet
        assert fleet is not None and self._reactor is not None
        now = fleet.clock_now()
        waiting = any(bot._fifo or bot._by_key for bot in fleet.live)
        if waiting and now < deadline:
            return
        for timer in self._timers:
            timer.cancel()
        self._timers = []
        for bot in list(fleet.live):
            bot._close_at_end()  # a WebSocket bot sends its Close 1000 first
        hard = now + _CLOSE_GRACE
        self._timers.append(self._reactor.call_every(0.01, self._wait_closed, hard))

    def _wait_closed(self, hard_deadline: float) -> None:
        fleet = self.fleet
        assert fleet is not None
        if (fleet.live or fleet.connecting > 0) and fleet.clock_now() < hard_deadline:
            return
        for bot in list(fleet.live):
            if bot.conn is not None:
                bot.conn.abort()
        self._finish()

    def _finish(self) -> None:
        fleet = self.fleet
        assert fleet is not None and self._reactor is not None
        for timer in self._timers:
            timer.cancel()
        self._timers = []
        fleet.stop_reconnecting(self._measured_until or fleet.clock_now(), final=True)
        if fleet.unfinished:
            self._warn(
                f"{fleet.unfinished} requests were still waiting for a reply "
                f"{self.stop_timeout:g} s after the end; not counted"
            )
        if self._open_missed:
            self._warn(f"{self._open_missed} scheduled requests found no connected bot")
        failed = sum(self.stats.connect_errors.values())
        if failed:
            self._warn(f"{failed} of {self.bots} bots could not connect")
        measured = (self._measured_until or fleet.clock_now()) - self._started
        cpu = self._cpu
        saturated = len(cpu) >= 2 and sum(cpu) / len(cpu) >= SATURATED_CPU
        self._result = RunResult(
            target=self.target,
            bot=", ".join(cls.__name__ for cls in self.classes),
            classes=dict(self._class_counts),
            spawn_rate=self.spawn_rate,
            bots=self.bots,
            duration=self.duration,
            elapsed=measured,
            stats=self.stats,
            started=self._started_wall,
            model="closed" if self.rate is None else "open",
            rate=self.rate,
            peak_connected=fleet.peak_connected,
            server=self._server,
            cpu=list(cpu),
            saturated=saturated,
            warnings=list(self.warnings),
        )
        self._done = True
        if self.progress is not None:
            self.progress.close()
        if self.on_done is not None:
            self.on_done(self._result)
        else:
            self._reactor.stop()

    def __repr__(self) -> str:
        names = ", ".join(cls.__name__ for cls in self.classes)
        return f"<BotRunner {names} x{self.bots} -> {self.target}>"
