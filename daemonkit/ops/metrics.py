"""Health and metrics of a running daemon: loop lag, slow callbacks, Prometheus scrapes.

Three pieces, each usable alone:

* :class:`LagMonitor` measures event-loop lag continuously with one cheap
  loop timer: every ``interval`` seconds it asks to be called back and
  records how late the call came. The values go to a cumulative
  :class:`LagHistogram` (for Prometheus) and to a sliding window of recent
  samples (for the p50/p99/max of ``ctl status``).
* :class:`SlowCallbackWatchdog` names the callbacks that block the loop. A
  blocked loop cannot time itself, and uvloop runs its handles in C where
  Python cannot see them, so a small thread pings the loop
  (``call_soon_threadsafe``) and, when the answer is later than
  ``threshold``, samples the loop thread's stack with
  ``sys._current_frames()`` while the culprit is still running, and logs its
  innermost frames. The same code works on both backends.
* :func:`sample` reads a daemon's books into an immutable :class:`Sample`;
  :class:`SampleCollector` turns samples into prometheus-client metric
  families (:func:`families`), :func:`register_collectors` puts it, with
  prometheus-client's process, platform and GC collectors, in a daemon's own
  ``CollectorRegistry`` (``Daemon.metrics_registry``, where the application
  adds its metrics), and :func:`render` writes one scrape of that registry:
  the classic text format 0.0.4, or OpenMetrics when the scraper asks.

Rules it keeps: nothing here writes to the daemon; the hot path pays
nothing (sampling is O(connections), and runs only when asked); clocks and
schedulers are injected, so the lag logic is tested without sleeping; no
process-global registry is used, so two daemons in one process never mix
their figures; prometheus-client (the ``metrics`` extra) is imported only
when a scrape or a registry is asked for, and :func:`require_client` names
the extra when it is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from daemonkit import CORE, __version__
from daemonkit.core.reactor import Reactor
from daemonkit.errors import ConfigError

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector, CollectorRegistry

    from daemonkit.daemon import Daemon

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_LAG_INTERVAL",
    "DEFAULT_LAG_WINDOW",
    "DEFAULT_SLOW_CALLBACK",
    "LAG_BUCKETS",
    "METRICS_EXTRA",
    "EndpointSample",
    "LagHistogram",
    "LagMonitor",
    "LagStats",
    "Sample",
    "SampleCollector",
    "SlowCallbackWatchdog",
    "describe_stack",
    "families",
    "open_fds",
    "register_collectors",
    "render",
    "require_client",
    "resident_memory",
    "sample",
    "unregister_collectors",
]

#: Seconds between two lag measurements. Node's ``monitorEventLoopDelay``
#: samples every 10 ms, but that is a histogram of timer jitter; one
#: measurement every half second costs nothing and still sees any stall
#: longer than that, while the watchdog catches the shorter ones.
DEFAULT_LAG_INTERVAL = 0.5

#: Samples kept for p50/p99/max: one minute at the default interval, the
#: shortest window of the load average.
DEFAULT_LAG_WINDOW = 120

#: A callback that keeps the loop busy longer than this is reported: asyncio's
#: debug mode warns at the same value (``loop.slow_callback_duration`` = 0.1 s).
DEFAULT_SLOW_CALLBACK = 0.1

#: Upper bounds of the lag histogram's buckets, in seconds: prometheus
#: client_python's DEFAULT_BUCKETS (5 ms to 10 s), extended down to 1 ms
#: because a healthy loop's lag is well under 5 ms.
LAG_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

# How many frames of the blocked stack a warning names, innermost first.
_STACK_FRAMES = 4
# How long close() waits for the watchdog thread; it wakes at once when told.
_JOIN_TIMEOUT = 5.0


class _Cancellable(Protocol):
    def cancel(self) -> None: ...


# -- lag -------------------------------------------------------------------


class LagHistogram:
    """Cumulative counts of lag values in the fixed :data:`LAG_BUCKETS`.

    ``record(seconds)`` adds a value; :meth:`cumulative` gives the
    ``(le, count)`` pairs Prometheus expects, ending with ``+Inf``.
    """

    __slots__ = ("_counts", "bounds", "count", "total")

    def __init__(self, bounds: Iterable[float] = LAG_BUCKETS) -> None:
        self.bounds = tuple(sorted(bounds))
        self._counts = [0] * (len(self.bounds) + 1)
        self.count = 0
        self.total = 0.0

    def record(self, seconds: float) -> None:
        """Add one value (negative values count as 0)."""
        seconds = max(0.0, seconds)
        index = len(self.bounds)
        for i, bound in enumerate(self.bounds):
            if seconds <= bound:
                index = i
                break
        self._counts[index] += 1
        self.count += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, values <= it)`` for every bucket, the last bound ``inf``."""
        out = []
        running = 0
        for bound, n in zip((*self.bounds, math.inf), self._counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass(frozen=True)
class LagStats:
    """Loop lag over the recent window: percentiles and maximum in seconds, and the sample count."""

    p50: float
    p99: float
    max: float
    samples: int


def _nearest_rank(ordered: list[float], p: float) -> float:
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


class LagMonitor:
    """Measures how late the loop runs a timer, every ``interval`` seconds.

    ``schedule(delay, fn)`` arms the timer (default ``loop.call_later``: the
    loop's own timer, so a :class:`~daemonkit.core.timers.FakeClock` driving the
    daemon's timers does not stop it, and it is not counted among them) and
    ``clock()`` reads the time (default ``loop.time``). Tests inject both
    and call :meth:`tick` by hand.

    Each tick records ``lag = now - due`` (never negative) into
    :attr:`histogram` and into a window of the last ``window`` samples
    (:meth:`stats`). The next tick is due ``interval`` after this one ran,
    so one long stall is one large sample, not a burst of catch-up ticks.
    """

    def __init__(
        self,
        schedule: Callable[[float, Callable[[], None]], _Cancellable],
        clock: Callable[[], float],
        *,
        interval: float = DEFAULT_LAG_INTERVAL,
        window: int = DEFAULT_LAG_WINDOW,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be positive seconds, not {interval!r}")
        if window < 1:
            raise ValueError(f"window must be at least 1 sample, not {window!r}")
        self._schedule = schedule
        self._clock = clock
        self.interval = interval
        self.histogram = LagHistogram()
        self._recent: deque[float] = deque(maxlen=window)
        self._due = 0.0
        self._handle: _Cancellable | None = None

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`close`."""
        return self._handle is not None

    def start(self) -> None:
        """Arm the first measurement (idempotent)."""
        if self._handle is None:
            self._due = self._clock() + self.interval
            self._handle = self._schedule(self.interval, self.tick)

    def tick(self) -> None:
        """The timer fired: record how late, and arm the next one."""
        if self._handle is None:
            return
        now = self._clock()
        self.record(now - self._due)
        self._due = now + self.interval
        self._handle = self._schedule(self.interval, self.tick)

    def record(self, lag: float) -> None:
        """Add one lag value, in seconds (negative counts as 0)."""
        lag = max(0.0, lag)
        self.histogram.record(lag)
        self._recent.append(lag)

    def stats(self) -> LagStats:
        """p50, p99 and max over the window (nearest rank); zeros before the first tick."""
        if not self._recent:
            return LagStats(0.0, 0.0, 0.0, 0)
        ordered = sorted(self._recent)
        return LagStats(
            p50=_nearest_rank(ordered, 50),
            p99=_nearest_rank(ordered, 99),
            max=ordered[-1],
            samples=len(ordered),
        )

    def close(self) -> None:
        """Stop measuring; idempotent."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()


# -- slow callbacks ------------------------------------------------------------

_ASYNCIO_DIR = os.path.dirname(asyncio.__file__) + os.sep
_LOOP_CODE = frozenset({Reactor.run.__code__, Reactor.run_until_complete.__code__})


def describe_stack(frame: FrameType | None, limit: int = _STACK_FRAMES) -> str:
    """Name the innermost ``limit`` frames of a stack, innermost first.

    ``"module.Class.method:line <- module.caller:line"``. The walk stops at
    the event loop's own machinery (asyncio's files, :meth:`Reactor.run`),
    so what is named is the callback the loop was running and what it
    called. Returns ``"an unknown place"`` when there is no Python frame
    (the loop was inside C code).
    """
    names: list[str] = []
    while frame is not None and len(names) < limit:
        code = frame.f_code
        if code in _LOOP_CODE or code.co_filename.startswith(_ASYNCIO_DIR):
            break
        module = frame.f_globals.get("__name__", "?")
        qualname = getattr(code, "co_qualname", code.co_name)
        names.append(f"{module}.{qualname}:{frame.f_lineno}")
        frame = frame.f_back
    return " <- ".join(names) if names else "an unknown place"


class SlowCallbackWatchdog:
    """A thread that reports callbacks blocking the loop longer than ``threshold``.

    It pings the loop with ``call_soon_threadsafe`` and waits ``threshold``
    seconds for the answer; an answer that is late means the loop thread is
    stuck in one callback (or a run of them). The watchdog then samples that
    thread's stack at once, while the culprit is still on it, waits for the
    loop to answer, and logs one warning with how long the loop was blocked
    and the frames it was in (:func:`describe_stack`). Between pings it
    sleeps ``threshold``, so a block of at least twice the threshold is
    always caught and a shorter one above it usually is.

    Why a thread: the loop cannot notice its own stall until it is over, and
    by then the stack is gone; the stdlib loop's debug mode names the handle
    but costs a traceback per ``call_soon``, and uvloop has no such hook. A
    callback that holds the GIL in C code for the whole stall stops this
    thread too: such a stall may be reported late, with the wrong frames,
    or not at all (the lag histogram still shows it).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        log: logging.Logger,
        *,
        threshold: float = DEFAULT_SLOW_CALLBACK,
        thread_id: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not threshold > 0:
            raise ValueError(f"threshold must be positive seconds, not {threshold!r}")
        self._loop = loop
        self.log = log
        self.threshold = threshold
        self._thread_id = threading.get_ident() if thread_id is None else thread_id
        self._clock = clock
        #: Stalls reported so far.
        self.reported = 0
        self._stop = threading.Event()
        self._answered = threading.Event()
        self._answered_at = 0.0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (idempotent). Call it from the loop's thread, or pass ``thread_id``."""
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(
                target=self._run, name="daemonkit-watchdog", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop the thread and wait for it; idempotent."""
        self._stop.set()
        self._answered.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_TIMEOUT)

    def _answer(self) -> None:
        self._answered_at = self._clock()
        self._answered.set()

    def _run(self) -> None:
        stop, answered, threshold = self._stop, self._answered, self.threshold
        while not stop.is_set():
            answered.clear()
            sent = self._clock()
            try:
                self._loop.call_soon_threadsafe(self._answer)
            except RuntimeError:
                return  # the loop is closed: nothing left to watch
            if answered.wait(threshold):
                stop.wait(threshold)
                continue
            frame = sys._current_frames().get(self._thread_id)
            where = describe_stack(frame)
            del frame
            while not answered.wait(threshold):
                if stop.is_set():
                    return
            if stop.is_set():
                return
            self.reported += 1
            # Measured from the ping, sent after the block began: a lower bound.
            self.log.warning(
                "event loop blocked for at least %.3fs (over slow_callback_duration=%gs) in %s; "
                "move blocking work off the loop (reactor.spawn + run_in_executor)",
                self._answered_at - sent,
                threshold,
                where,
            )


# -- sampling --------------------------------------------------------------


def resident_memory() -> int | None:
    """This process's resident set size in bytes (``/proc/self/statm``), or None off Linux."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def open_fds() -> int | None:
    """Open descriptors (``/proc/self/fd``, counted as prometheus-client does), or None."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


@dataclass(frozen=True)
class EndpointSample:
    """One endpoint: its name, bound address, live connections and EMFILE events."""

    name: str
    address: str | None
    connections: int
    fd_exhausted: int


@dataclass(frozen=True)
class Sample:
    """What a daemon looks like at one moment; see :func:`sample`. Immutable."""

    name: str
    pid: int
    backend: str
    state: str
    uptime: float
    start_time: float
    endpoints: tuple[EndpointSample, ...]
    connections: int
    accepted: int
    closed: int
    rejected: int
    errors: int
    bytes_in: int
    bytes_out: int
    write_buffer: int
    timers: int
    tasks: int
    open_fds: int | None
    rss: int | None
    lag: LagStats
    lag_buckets: tuple[tuple[float, int], ...] = ()
    lag_sum: float = 0.0
    lag_count: int = 0
    slow_callbacks: int = 0
    log_level: str = "info"
    #: The outbound links' ``Link.status()`` dicts (url, state, counts, last error).
    links: tuple[dict[str, Any], ...] = ()
    #: The broker link's ``Broker.status()`` dict, or None without a broker.
    broker: dict[str, Any] | None = None
    #: Seconds to the drain's deadline while ``state`` is ``"draining"``, else None.
    drain_left: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (the ``status`` reply of the control socket)."""
        return {
            "name": self.name,
            "pid": self.pid,
            "backend": self.backend,
            "core": CORE,
            "state": self.state,
            "uptime": round(self.uptime, 3),
            "start_time": self.start_time,
            "endpoints": [
                {
                    "name": e.name,
                    "address": e.address,
                    "connections": e.connections,
                    "fd_exhausted": e.fd_exhausted,
                }
                for e in self.endpoints
            ],
            "connections": self.connections,
            "accepted": self.accepted,
            "closed": self.closed,
            "rejected": self.rejected,
            "errors": self.errors,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "write_buffer": self.write_buffer,
            "timers": self.timers,
            "tasks": self.tasks,
            "open_fds": self.open_fds,
            "rss": self.rss,
            "loop_lag": {
                "p50": self.lag.p50,
                "p99": self.lag.p99,
                "max": self.lag.max,
                "samples": self.lag.samples,
            },
            "slow_callbacks": self.slow_callbacks,
            "log_level": self.log_level,
            "links": [dict(link) for link in self.links],
            "broker": dict(self.broker) if self.broker is not None else None,
            "drain": None
            if self.drain_left is None
            else {"connections": self.connections, "seconds_left": round(self.drain_left, 3)},
        }


def _state(daemon: Daemon) -> str:
    """``running``, ``draining`` (a stop serving the connections it has) or ``stopping``."""
    if daemon.is_draining():
        return "draining"
    return "stopping" if daemon.is_stopping() else "running"


def sample(
    daemon: Daemon,
    *,
    lag: LagMonitor | None = None,
    watchdog: SlowCallbackWatchdog | None = None,
    started: float | None = None,
    start_time: float | None = None,
    hidden_timers: int = 0,
    hidden_tasks: int = 0,
    process: bool = True,
) -> Sample:
    """Read ``daemon``'s books now; call it in the loop thread.

    Costs one pass over the live connections (bytes, write buffers,
    per-endpoint counts). ``started`` is the ``time.monotonic()`` of the
    start (for ``uptime``), ``start_time`` its ``time.time()``.
    ``hidden_timers``/``hidden_tasks`` are subtracted from the reactor's
    counts: the framework's own (the control socket's connections) are not
    the user's. ``process=False`` leaves ``open_fds`` and ``rss`` None: a
    scrape has them from prometheus-client's process collector already.
    """
    conns = daemon.connections
    per_endpoint: dict[str, int] = {}
    bytes_in = conns.closed_bytes_in
    bytes_out = conns.closed_bytes_out
    write_buffer = 0
    for conn in conns:
        bytes_in += conn.bytes_in
        bytes_out += conn.bytes_out
        write_buffer += conn.write_buffer_size
        endpoint = conn.endpoint
        key = str(endpoint.name) if endpoint is not None else "?"
        per_endpoint[key] = per_endpoint.get(key, 0) + 1
    endpoints = []
    for host in daemon.endpoint_hosts:
        name = str(host.endpoint.name)
        listener = getattr(host, "listener", None)
        endpoints.append(
            EndpointSample(
                name=name,
                address=str(host.address) if host.address is not None else None,
                connections=per_endpoint.get(name, 0),
                fd_exhausted=int(getattr(listener, "exhausted", 0)),
            )
        )
    try:
        reactor: Reactor | None = daemon.reactor
    except RuntimeError:  # sampled before the start or after the stop
        reactor = None
    drain_left = daemon.drain_left() if reactor is not None else None
    stats = reactor.stats() if reactor is not None else None
    now = time.monotonic()
    histogram = lag.histogram if lag is not None else LagHistogram()
    return Sample(
        name=str(daemon.name),
        pid=os.getpid(),
        backend=reactor.backend if reactor is not None else "-",
        state=_state(daemon),
        uptime=max(0.0, now - (now if started is None else started)),
        start_time=time.time() if start_time is None else start_time,
        endpoints=tuple(endpoints),
        connections=len(conns),
        accepted=daemon.stats["accepted"],
        closed=daemon.stats["closed"],
        rejected=daemon.stats["rejected"],
        errors=daemon.stats["errors"],
        bytes_in=bytes_in,
        bytes_out=bytes_out,
        write_buffer=write_buffer,
        timers=max(0, stats.timers - hidden_timers) if stats is not None else 0,
        tasks=max(0, stats.tasks - hidden_tasks) if stats is not None else 0,
        open_fds=open_fds() if process else None,
        rss=resident_memory() if process else None,
        lag=lag.stats() if lag is not None else LagStats(0.0, 0.0, 0.0, 0),
        lag_buckets=tuple(histogram.cumulative()),
        lag_sum=histogram.total,
        lag_count=histogram.count,
        slow_callbacks=watchdog.reported if watchdog is not None else 0,
        log_level=logging.getLevelName(daemon.log.getEffectiveLevel()).lower(),
        links=tuple(link.status() for link in daemon.links),
        broker=daemon.broker_link.status() if daemon.broker_link is not None else None,
        drain_left=drain_left,
    )


# -- Prometheus scrapes ------------------------------------------------------------

#: The Content-Type of the classic text format 0.0.4, which :func:`render`
#: answers unless the scraper asks for OpenMetrics.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: What to install for metrics: prometheus-client, as daemonkit's ``metrics`` extra.
METRICS_EXTRA = "pip install 'daemonkit[metrics]'"


def require_client(what: str) -> None:
    """Check that prometheus-client can be imported.

    Raises :class:`~daemonkit.errors.ConfigError` ``"WHAT needs
    prometheus-client: pip install 'daemonkit[metrics]'"`` when it cannot.
    """
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ConfigError(f"{what} needs prometheus-client: {METRICS_EXTRA}") from None


def _bound(value: float) -> str:
    # A bucket's "le" as Prometheus writes it: "+Inf", "0.005", "1.0".
    return "+Inf" if value == math.inf else repr(float(value))


def families(s: Sample) -> list[Metric]:
    """daemonkit's figures in ``s`` as prometheus-client metric families.

    Names start with ``daemonkit_``; names, types and labels are those of
    daemonkit 0.1's hand-written text, so dashboards keep working (see
    docs/operations.md for what each one means). The ``process_*`` figures
    are not here: :func:`register_collectors` adds prometheus-client's
    process collector, which has them all.
    """
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    info = GaugeMetricFamily(
        "daemonkit_info",
        "The daemon: its name, backend and daemonkit version.",
        labels=("name", "backend", "version"),
    )
    info.add_metric((s.name, s.backend, __version__), 1)
    per_endpoint = GaugeMetricFamily(
        "daemonkit_endpoint_connections", "Live connections per endpoint.", labels=("endpoint",)
    )
    exhausted = CounterMetricFamily(
        "daemonkit_accept_fd_exhausted_total",
        "Times accept() failed for lack of file descriptors (EMFILE/ENFILE), per endpoint.",
        labels=("endpoint",),
    )
    for e in s.endpoints:
        per_endpoint.add_metric((e.name,), e.connections)
        exhausted.add_metric((e.name,), e.fd_exhausted)
    link_families = _link_families(s, GaugeMetricFamily, CounterMetricFamily)
    lag = HistogramMetricFamily(
        "daemonkit_loop_lag_seconds",
        "How late the event loop ran a timer, measured every half second.",
        buckets=[(_bound(b), n) for b, n in s.lag_buckets or ((math.inf, 0),)],
        sum_value=s.lag_sum,
    )
    return [
        info,
        GaugeMetricFamily("daemonkit_connections", "Live connections.", value=s.connections),
        per_endpoint,
        CounterMetricFamily(
            "daemonkit_connections_accepted_total", "Connections accepted.", value=s.accepted
        ),
        CounterMetricFamily(
            "daemonkit_connections_rejected_total",
            "Connections closed at once: over max_connections or while stopping.",
            value=s.rejected,
        ),
        CounterMetricFamily(
            "daemonkit_connections_closed_total", "Connections closed.", value=s.closed
        ),
        CounterMetricFamily(
            "daemonkit_callback_errors_total",
            "Exceptions raised by connection callbacks.",
            value=s.errors,
        ),
        CounterMetricFamily(
            "daemonkit_received_bytes_total", "Bytes received from clients.", value=s.bytes_in
        ),
        CounterMetricFamily(
            "daemonkit_sent_bytes_total", "Bytes sent to clients.", value=s.bytes_out
        ),
        GaugeMetricFamily(
            "daemonkit_write_buffer_bytes",
            "Bytes written but not yet taken by the kernel, over all connections.",
            value=s.write_buffer,
        ),
        exhausted,
        GaugeMetricFamily("daemonkit_timers", "Active timers.", value=s.timers),
        GaugeMetricFamily("daemonkit_tasks", "Running tasks (spawned coroutines).", value=s.tasks),
        lag,
        CounterMetricFamily(
            "daemonkit_slow_callbacks_total",
            "Times a callback blocked the event loop longer than the slow-callback threshold.",
            value=s.slow_callbacks,
        ),
        GaugeMetricFamily(
            "daemonkit_uptime_seconds", "Seconds since the daemon started.", value=s.uptime
        ),
        *link_families,
        *_broker_families(s, GaugeMetricFamily, CounterMetricFamily),
    ]


def _link_families(s: Sample, gauge: Any, counter: Any) -> list[Metric]:
    """The outbound links' figures, labelled by the link's URL."""
    up = gauge("daemonkit_link_up", "1 while the outbound link is connected.", labels=("link",))
    reconnects = counter(
        "daemonkit_link_reconnects_total",
        "Connections an outbound link made after its first.",
        labels=("link",),
    )
    failures = counter(
        "daemonkit_link_connect_failures_total",
        "Connect attempts of an outbound link that failed.",
        labels=("link",),
    )
    dropped = counter(
        "daemonkit_link_dropped_total",
        "Sends refused while an outbound link was down (no queue, or over its bound).",
        labels=("link",),
    )
    for link in s.links:
        label = (str(link["url"]),)
        up.add_metric(label, 1 if link["state"] == "up" else 0)
        reconnects.add_metric(label, link["reconnects"])
        failures.add_metric(label, link["failures"])
        dropped.add_metric(label, link["dropped"])
    return [up, reconnects, failures, dropped]


def _broker_families(s: Sample, gauge: Any, counter: Any) -> list[Metric]:
    """The broker link's figures (see daemonkit.framework.broker); none without a broker."""
    b = s.broker
    if b is None:
        return []
    found: list[Metric] = [
        gauge(
            "daemonkit_broker_up",
            "1 while the broker link reaches Redis.",
            value=int(b["state"] == "up"),
        ),
        gauge("daemonkit_broker_peers", "Other processes sharing the broker.", value=b["peers"]),
        gauge(
            "daemonkit_broker_outbox", "Messages waiting to be written to Redis.", value=b["outbox"]
        ),
        gauge(
            "daemonkit_broker_lag_seconds",
            "Age of the last message read from the broker when it was read.",
            value=b["lag"],
        ),
    ]
    for key, help_text in (
        ("sent", "Messages written to the broker."),
        ("received", "Messages of other processes read from the broker."),
        ("delayed", "Messages that waited in the outbox during an outage, then went out."),
        ("dropped", "Messages not sent to other processes: the outbox was full."),
        ("lost", "Messages of other processes gone from the stream before they were read."),
        ("malformed", "Broker entries dropped as unreadable."),
        ("reconnects", "Times the broker link came back after an outage."),
    ):
        found.append(counter(f"daemonkit_broker_{key}_total", help_text, value=b[key]))
    return found


class SampleCollector:
    """A prometheus-client collector of daemonkit's figures: :func:`families` of ``sampler()``.

    ``sampler`` is called once per scrape, in the thread that renders it
    (the loop's, for the metrics endpoint and the control socket). Register
    it in a registry yourself, or let :func:`register_collectors` do it.
    """

    def __init__(self, sampler: Callable[[], Sample]) -> None:
        self._sampler = sampler

    def collect(self) -> list[Metric]:
        """The figures now."""
        return families(self._sampler())


def register_collectors(
    registry: CollectorRegistry, sampler: Callable[[], Sample]
) -> list[Collector]:
    """Put daemonkit's and the process's figures in ``registry``; return the collectors added.

    Adds a :class:`SampleCollector` over ``sampler`` and prometheus-client's
    ``ProcessCollector`` (``process_cpu_seconds_total``, ``process_open_fds``,
    ``process_max_fds``, ``process_resident_memory_bytes``,
    ``process_virtual_memory_bytes``, ``process_start_time_seconds``; read
    from ``/proc``), ``PlatformCollector`` (``python_info``) and
    ``GCCollector`` (``python_gc_*``, on CPython), each in this registry
    only. Hand the list to :func:`unregister_collectors` when done.

    Raises :class:`~daemonkit.errors.ConfigError` when one of those names is
    already in ``registry`` (an application metric named like daemonkit's),
    after taking back what it added; ``ImportError`` without prometheus-client.
    """
    from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

    added: list[Collector] = []
    try:
        mine = SampleCollector(sampler)
        registry.register(mine)
        added.append(mine)
        # Each registers itself in the registry it is given.
        added.append(ProcessCollector(registry=registry))
        added.append(PlatformCollector(registry=registry))
        added.append(GCCollector(registry=registry))  # registers on CPython only
    except ValueError as exc:  # prometheus-client's DuplicateTimeseries
        unregister_collectors(registry, added)
        taken = ", ".join(sorted(getattr(exc, "duplicates", ()))) or str(exc)
        raise ConfigError(
            f"metrics: the daemon's metrics_registry already has {taken}, a name daemonkit "
            "exports (daemonkit_*, process_*, python_*); rename the application's metric"
        ) from None
    return added


def unregister_collectors(registry: CollectorRegistry, collectors: Iterable[Collector]) -> None:
    """Take ``collectors`` (from :func:`register_collectors`) out of ``registry``; idempotent."""
    for collector in collectors:
        with contextlib.suppress(KeyError):  # never registered, or already taken out
            registry.unregister(collector)


def render(registry: CollectorRegistry, accept: str = "") -> tuple[bytes, str]:
    """One scrape of ``registry``: the body and its Content-Type.

    OpenMetrics when ``accept`` (the scraper's ``Accept`` header) names
    ``application/openmetrics-text``, as Prometheus does by default; otherwise
    the classic text format (:data:`CONTENT_TYPE`). prometheus-client chooses
    and encodes; ``ImportError`` without it.
    """
    from prometheus_client.exposition import choose_encoder

    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type
