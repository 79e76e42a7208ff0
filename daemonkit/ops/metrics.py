"""Health and metrics of a running daemon: loop lag, slow callbacks, Prometheus text.

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
  :func:`render_prometheus` writes it in the Prometheus text exposition
  format (version 0.0.4), which is small enough to write here rather than
  depend on ``prometheus-client`` and its process-global registry.

Rules it keeps: nothing here writes to the daemon; the hot path pays
nothing (sampling is O(connections), and runs only when asked); clocks and
schedulers are injected, so the lag logic is tested without sleeping.
"""

from __future__ import annotations

import asyncio
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

from daemonkit import __version__
from daemonkit.core.reactor import Reactor

if TYPE_CHECKING:
    from daemonkit.daemon import Daemon

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_LAG_INTERVAL",
    "DEFAULT_LAG_WINDOW",
    "DEFAULT_SLOW_CALLBACK",
    "LAG_BUCKETS",
    "EndpointSample",
    "LagHistogram",
    "LagMonitor",
    "LagStats",
    "Sample",
    "SlowCallbackWatchdog",
    "describe_stack",
    "open_fds",
    "render_prometheus",
    "resident_memory",
    "sample",
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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (the ``status`` reply of the control socket)."""
        return {
            "name": self.name,
            "pid": self.pid,
            "backend": self.backend,
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
        }


def sample(
    daemon: Daemon,
    *,
    lag: LagMonitor | None = None,
    watchdog: SlowCallbackWatchdog | None = None,
    started: float | None = None,
    start_time: float | None = None,
    hidden_timers: int = 0,
    hidden_tasks: int = 0,
) -> Sample:
    """Read ``daemon``'s books now; call it in the loop thread.

    Costs one pass over the live connections (bytes, write buffers,
    per-endpoint counts). ``started`` is the ``time.monotonic()`` of the
    start (for ``uptime``), ``start_time`` its ``time.time()``.
    ``hidden_timers``/``hidden_tasks`` are subtracted from the reactor's
    counts: the framework's own (the control socket's connections) are not
    the user's.
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
    stats = reactor.stats() if reactor is not None else None
    now = time.monotonic()
    histogram = lag.histogram if lag is not None else LagHistogram()
    return Sample(
        name=str(daemon.name),
        pid=os.getpid(),
        backend=reactor.backend if reactor is not None else "-",
        state="stopping" if daemon.is_stopping() else "running",
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
        open_fds=open_fds(),
        rss=resident_memory(),
        lag=lag.stats() if lag is not None else LagStats(0.0, 0.0, 0.0, 0),
        lag_buckets=tuple(histogram.cumulative()),
        lag_sum=histogram.total,
        lag_count=histogram.count,
        slow_callbacks=watchdog.reported if watchdog is not None else 0,
        log_level=logging.getLevelName(daemon.log.getEffectiveLevel()).lower(),
    )


# -- Prometheus text -------------------------------------------------------------

#: The Content-Type of :func:`render_prometheus`'s output.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def value(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        if labels:
            inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{inner}}} {_number(value)}")
        else:
            self.lines.append(f"{name} {_number(value)}")

    def one(self, name: str, kind: str, help_text: str, value: float | None) -> None:
        if value is not None:
            self.family(name, kind, help_text)
            self.value(name, value)


def render_prometheus(s: Sample) -> str:
    """``s`` in the Prometheus text exposition format 0.0.4 (serve it as :data:`CONTENT_TYPE`).

    Names start with ``daemonkit_``, except the three ``process_*`` gauges,
    which use prometheus-client's standard names so existing dashboards
    work. See docs/operations.md for what each one means.
    """
    w = _Writer()
    w.family("daemonkit_info", "gauge", "The daemon: its name, backend and daemonkit version.")
    w.value("daemonkit_info", 1, {"name": s.name, "backend": s.backend, "version": __version__})
    w.one("daemonkit_connections", "gauge", "Live connections.", s.connections)
    w.family("daemonkit_endpoint_connections", "gauge", "Live connections per endpoint.")
    for e in s.endpoints:
        w.value("daemonkit_endpoint_connections", e.connections, {"endpoint": e.name})
    w.one(
        "daemonkit_connections_accepted_total",
        "counter",
        "Connections accepted.",
        s.accepted,
    )
    w.one(
        "daemonkit_connections_rejected_total",
        "counter",
        "Connections closed at once: over max_connections or while stopping.",
        s.rejected,
    )
    w.one("daemonkit_connections_closed_total", "counter", "Connections closed.", s.closed)
    w.one(
        "daemonkit_callback_errors_total",
        "counter",
        "Exceptions raised by connection callbacks.",
        s.errors,
    )
    w.one("daemonkit_received_bytes_total", "counter", "Bytes received from clients.", s.bytes_in)
    w.one("daemonkit_sent_bytes_total", "counter", "Bytes sent to clients.", s.bytes_out)
    w.one(
        "daemonkit_write_buffer_bytes",
        "gauge",
        "Bytes written but not yet taken by the kernel, over all connections.",
        s.write_buffer,
    )
    w.family(
        "daemonkit_accept_fd_exhausted_total",
        "counter",
        "Times accept() failed for lack of file descriptors (EMFILE/ENFILE), per endpoint.",
    )
    for e in s.endpoints:
        w.value("daemonkit_accept_fd_exhausted_total", e.fd_exhausted, {"endpoint": e.name})
    w.one("daemonkit_timers", "gauge", "Active timers.", s.timers)
    w.one("daemonkit_tasks", "gauge", "Running tasks (spawned coroutines).", s.tasks)
    w.family(
        "daemonkit_loop_lag_seconds",
        "histogram",
        "How late the event loop ran a timer, measured every half second.",
    )
    for bound, count in s.lag_buckets:
        w.value("daemonkit_loop_lag_seconds_bucket", count, {"le": _number(bound)})
    w.value("daemonkit_loop_lag_seconds_sum", s.lag_sum)
    w.value("daemonkit_loop_lag_seconds_count", s.lag_count)
    w.one(
        "daemonkit_slow_callbacks_total",
        "counter",
        "Times a callback blocked the event loop longer than the slow-callback threshold.",
        s.slow_callbacks,
    )
    w.one("daemonkit_uptime_seconds", "gauge", "Seconds since the daemon started.", s.uptime)
    w.one("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", s.rss)
    w.one("process_open_fds", "gauge", "Number of open file descriptors.", s.open_fds)
    w.one(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        s.start_time,
    )
    return "\n".join(w.lines) + "\n"
