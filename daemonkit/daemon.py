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
import fcntl
import functools
import itertools
import logging
import resource
import signal
import socket
import struct
import termios
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from daemonkit.core.connection import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_SEND_TIMEOUT,
    CloseReason,
    Connection,
)
from daemonkit.core.cron import CronJob, schedule_cron
from daemonkit.core.durations import check_duration, check_optional_duration
from daemonkit.core.endpoints import INHERIT, Address, Endpoint, parse_endpoint
from daemonkit.core.reactor import Listener, Reactor
from daemonkit.core.timers import Clock, Timer
from daemonkit.errors import ConfigError, DaemonkitError, UpgradeError
from daemonkit.framework.broker import (
    DEFAULT_BROKER_HEARTBEAT,
    Broker,
    BrokerError,
    check_broker_url,
)
from daemonkit.framework.groups import Group
from daemonkit.framework.handler import Handler
from daemonkit.framework.hosts import EndpointHost, StreamHost, framer_factory
from daemonkit.framework.links import Link
from daemonkit.framework.offload import (
    DEFAULT_OFFLOAD_QUEUE_LIMIT,
    DEFAULT_OFFLOAD_TIMEOUT,
    OffloadPool,
    default_offload_processes,
    default_offload_threads,
)
from daemonkit.protocols.http.host import HttpHost
from daemonkit.protocols.udp import UdpHost

if TYPE_CHECKING:
    from datetime import tzinfo

    from prometheus_client import CollectorRegistry

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_RUNTIME_JITTER",
    "DEFAULT_MAX_WRITE_BUFFER",
    "DEFAULT_MEMORY_CHECK_INTERVAL",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "DEFAULT_UPGRADE_DRAIN",
    "DEFAULT_WRITE_HIGH_WATER",
    "DEFAULT_WRITE_LOW_WATER",
    "DRAIN_REPORT_INTERVAL",
    "ConnectionSet",
    "Daemon",
    "StartError",
    "check_memory_settings",
    "name_endpoints",
    "override_listen",
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
#: Seconds the old process of an upgrade keeps serving the connections it has
#: before closing them as a graceful stop does (0: close them at once). nginx
#: (worker_shutdown_timeout) and HAProxy (hard-stop-after) keep old processes
#: serving without limit unless told, and old processes then pile up; 60 s lets
#: what is in flight finish (nginx's send_timeout and proxy_read_timeout are
#: 60 s) and keeps upgrade_drain + shutdown_timeout inside systemd's 90 s
#: DefaultTimeoutStopSec.
DEFAULT_UPGRADE_DRAIN = 60.0
#: Seconds between two "draining: N connection(s) left" log lines (pound
#: counts its busy threads every 10 s while it shuts down).
DRAIN_REPORT_INTERVAL = 10.0
#: Seconds between two RSS samples. RoadRunner's supervisor samples every
#: second (``watch_tick``); a leak grows over minutes to hours, and each
#: sample is a read of /proc, so every 5 s is prompt and costs nothing.
DEFAULT_MEMORY_CHECK_INTERVAL = 5.0
#: Largest random extra added to ``max_runtime``, as a fraction of it, so a
#: fleet started together does not recycle together: gRPC servers add +/-10 %
#: jitter to MAX_CONNECTION_AGE for the same reason.
DEFAULT_MAX_RUNTIME_JITTER = 0.1
#: Seconds an immediate stop waits for aborted connections to report
#: connection_lost (they do so on the next loop turn; this only guards a bug).
STOP_BACKSTOP = 2.0
#: Seconds between two looks, during a graceful stop, for connections that
#: have read what their clients sent (upgrade's attach poll is as short).
SHUTDOWN_READ_POLL = 0.005


def check_memory_settings(max_memory: object, interval: object) -> None:
    """Refuse a bad ``max_memory`` or ``memory_check_interval`` with a :class:`ConfigError`."""
    if max_memory is not None and (
        not isinstance(max_memory, int) or isinstance(max_memory, bool) or max_memory <= 0
    ):
        raise ConfigError(
            f"max_memory must be a number of bytes > 0 or None, not {max_memory!r} "
            "(on the command line: --max-memory 512M)"
        )
    check_duration("memory_check_interval", interval, positive=True)


class StartError(DaemonkitError):
    """The daemon could not start: a listener failed to bind or ``on_start`` raised."""


class ConnectionSet:
    """The live connections of a daemon: accepted, ``on_close`` not yet called.

    Supports ``len()``, iteration (over a snapshot, so closing while
    iterating is safe), ``in`` and :meth:`get` by connection id.
    """

    __slots__ = ("_by_id", "_since", "closed_bytes_in", "closed_bytes_out")

    def __init__(self) -> None:
        self._by_id: dict[int, Connection] = {}
        # Accept time (reactor clock) by id, for the control socket's ``age``;
        # kept only when the control socket or metrics are on (memory per
        # idle connection is a target of its own).
        self._since: dict[int, float] | None = None
        #: Bytes received from and sent to the connections that have closed.
        self.closed_bytes_in = self.closed_bytes_out = 0

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._by_id.values()))

    def __contains__(self, conn: object) -> bool:
        return isinstance(conn, Connection) and self._by_id.get(conn.id) is conn

    def get(self, conn_id: int) -> Connection | None:
        """The live connection with this id, or None."""
        return self._by_id.get(conn_id)

    def track_ages(self) -> None:
        """Keep each connection's accept time from now on (see :meth:`accepted_at`).

        Off by default: memory per idle connection is a target of its own.
        The control socket and metrics turn it on.
        """
        if self._since is None:
            self._since = {}

    def accepted_at(self, conn_id: int) -> float | None:
        """When the live connection ``conn_id`` was accepted (reactor clock), if tracked."""
        since = self._since
        return since.get(conn_id) if since is not None else None

    def _add(self, conn: Connection) -> None:
        self._by_id[conn.id] = conn
        since = self._since
        if since is not None:
            since[conn.id] = conn._host.reactor.clock.now()

    def _remove(self, conn: Connection) -> None:
        if self._by_id.pop(conn.id, None) is not None:
            self.closed_bytes_in += conn.bytes_in
            self.closed_bytes_out += conn.bytes_out
            since = self._since
            if since is not None:
                since.pop(conn.id, None)


def _open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit and return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return int(soft)


class Daemon(Handler):
    """Subclass this, set ``listen``, and fill in the callbacks you need.

    ``listen`` is an endpoint string, an :class:`~daemonkit.core.endpoints.Endpoint`
    (its own framing, handler, TLS files, options) or a list of them; the
    daemon handles every endpoint that names no other handler.

    Settings (class attributes; instance keyword arguments and the CLI
    override them): ``listen``, ``framing``, ``max_connections``,
    ``idle_timeout``, ``frame_timeout``, ``send_timeout``, ``write_high_water``,
    ``write_low_water``, ``max_write_buffer``, ``close_timeout``,
    ``shutdown_timeout``, ``name``, ``signals``; for blocking work
    (:meth:`offload`) ``offload_threads``, ``offload_processes``,
    ``offload_queue_limit``, ``offload_timeout``; ``max_runtime`` and
    ``max_runtime_jitter`` recycle the process; ``upgrade_drain`` is how
    long an upgrade's old process keeps serving its clients. ``listen = []`` makes a
    worker daemon, with no endpoint.

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
    ``on_accept``, with a :class:`~daemonkit.core.connection.CloseReason`.
    Connections still open at stop get ``on_close(conn, "shutdown")`` after
    ``on_stop``.

    An exception in a connection callback goes to ``on_error(conn, exc)``,
    whose default logs it with the traceback and the connection's context
    and closes that connection only; the daemon keeps running. An exception
    in ``on_start`` aborts the start (:class:`StartError`).
    """

    # -- settings --------------------------------------------------------
    listen: ClassVar[str | Endpoint | Sequence[str | Endpoint]] = "tcp://127.0.0.1:7000"
    framing: ClassVar[Any] = None
    max_connections: int | None = None
    #: Seconds without input before ``on_timeout``; None: never. HTTP
    #: endpoints take it only when set (their keepalive_timeout is theirs).
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT
    #: Seconds from a frame's first byte to its last on framed stream
    #: endpoints; None: automatic (60 s, or 2 idle timeouts if shorter); 0: none.
    frame_timeout: float | None = None
    #: Seconds a client may take nothing while writing to it is paused; None: never.
    send_timeout: float | None = DEFAULT_SEND_TIMEOUT
    write_high_water: int = DEFAULT_WRITE_HIGH_WATER
    write_low_water: int = DEFAULT_WRITE_LOW_WATER
    max_write_buffer: int = DEFAULT_MAX_WRITE_BUFFER
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    name: str | None = None
    #: Extra signals delivered to :meth:`on_signal` (SIGTERM/SIGINT stop,
    #: SIGHUP reloads and SIGUSR1 reopens the log file without it; SIGUSR2
    #: upgrades unless listed here).
    signals: ClassVar[Sequence[int]] = ()
    #: Path of the control socket (see daemonkit.ops.control), or None.
    control: str | None = None
    #: Endpoint serving Prometheus metrics over HTTP (``tcp://127.0.0.1:9100``), or None.
    metrics: str | None = None
    #: Resident memory (bytes) past which the daemon recycles itself with a
    #: zero-downtime upgrade (see daemonkit.ops.upgrade), or None.
    max_memory: int | None = None
    #: Seconds between two samples of resident memory when ``max_memory`` is set.
    memory_check_interval: float = DEFAULT_MEMORY_CHECK_INTERVAL
    # Blocking work and worker daemons (issue 12; see offload() and docs/outbound.md):
    #: Threads of the offload pool; None: ``min(32, cpus + 4)``, as asyncio's executor.
    offload_threads: int | None = None
    #: Processes of the offload pool (``offload(..., process=True)``); None: one per CPU.
    offload_processes: int | None = None
    #: Offloaded calls in flight past which ``offload()`` raises OffloadFull at once.
    offload_queue_limit: int = DEFAULT_OFFLOAD_QUEUE_LIMIT
    #: Seconds one offloaded call may take before its caller gets OffloadTimeout.
    offload_timeout: float = DEFAULT_OFFLOAD_TIMEOUT
    #: Seconds after which the process recycles itself (upgrade, or exit), or None.
    max_runtime: float | None = None
    #: Largest random extra added to ``max_runtime``, as a fraction of it (0 to 1).
    max_runtime_jitter: float = DEFAULT_MAX_RUNTIME_JITTER
    #: Seconds the old process of an upgrade keeps serving its connections
    #: (0: it closes them at once, as a stop does); see :meth:`stop` ``drain``.
    upgrade_drain: float = DEFAULT_UPGRADE_DRAIN
    #: Redis URL (``redis://host:port/db``) making every group span the processes
    #: sharing it (see daemonkit.framework.broker), or None: groups are local.
    broker: str | None = None
    #: Seconds between two presence heartbeats of the broker (see docs/scaling.md).
    broker_heartbeat: float = DEFAULT_BROKER_HEARTBEAT

    _SETTINGS: ClassVar[tuple[str, ...]] = (
        "listen",
        "framing",
        "max_connections",
        "idle_timeout",
        "frame_timeout",
        "send_timeout",
        "write_high_water",
        "write_low_water",
        "max_write_buffer",
        "close_timeout",
        "shutdown_timeout",
        "name",
        "signals",
        "control",
        "metrics",
        "max_memory",
        "memory_check_interval",
        "offload_threads",
        "offload_processes",
        "offload_queue_limit",
        "offload_timeout",
        "max_runtime",
        "max_runtime_jitter",
        "upgrade_drain",
        "broker",
        "broker_heartbeat",
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
        #: The bound stream listeners, in ``listen`` order, while running.
        self.listeners: list[Listener] = []
        self._reactor: Reactor | None = None
        self._ids = itertools.count(1)
        self._cleanups: list[Any] = []
        self._timers: list[Timer] = []
        self._stopping = False
        self._stopped = False
        self._drain_timer: Timer | None = None
        # A draining stop (stop(drain=...)): its deadline, its log line, when it began.
        self._drain_deadline: Timer | None = None
        self._drain_reporter: Timer | None = None
        self._drain_began = 0.0
        self._backstop: asyncio.TimerHandle | None = None
        # A graceful stop's sweep (see _sweep), whether on_stop ran, and the
        # connections it has closed.
        self._sweeper: asyncio.TimerHandle | None = None
        self._stop_called = False
        self._shut: set[int] = set()
        self._on_log_reopen: Callable[[], object] | None = None
        #: The endpoints, in ``listen`` order, each with its (unique) name.
        self.endpoints: list[Endpoint] = self._validate()
        #: Counters since start: ``accepted`` and ``closed`` connections,
        #: ``rejected`` ones (over ``max_connections`` or while stopping) and
        #: callback ``errors``. Read them, e.g. for a stats line; do not write.
        self.stats = {"accepted": 0, "closed": 0, "rejected": 0, "errors": 0}
        self._hosts: list[EndpointHost] = [_host_for(self, e) for e in self.endpoints]
        _check_endpoint_durations(self.endpoints)  # after the hosts' own checks of type
        self._groups: dict[str, Group] = {}
        self._inherited: dict[str, socket.socket] = {}
        # Operations' hooks (add_lifecycle_hook), called with each lifecycle event.
        self._lifecycle: list[Callable[[str], object]] = []
        self._upgrade_handler: Callable[[], int] | None = None
        # Blocking work (offload) and the tasks of spawn(), which a graceful stop waits for.
        self._offload_pool: OffloadPool | None = None
        self._spawned: set[asyncio.Task[Any]] = set()
        self._work_abandoned = False
        #: True once the daemon stopped itself because ``max_runtime`` passed
        #: with no listener to hand over (the CLI then exits with EXIT_RECYCLE).
        self.retired = False
        self._worker_id: int | None = None  # set by the runner in a --workers worker
        self._links: list[Link] = []  # outbound links (see connect())
        #: The link to the broker while running with one (``broker`` set), else None.
        self.broker_link: Broker | None = None
        if self.broker is not None:
            check_broker_url(self.broker)
            check_duration("broker_heartbeat", self.broker_heartbeat, positive=True)

    # -- callbacks (override) --------------------------------------------

    def on_start(self) -> None:
        """Called once, after the listeners are bound, before the first accept."""

    def on_stop(self) -> None:
        """Called once at a graceful stop, after accepting stopped, before connections close."""

    def on_reload(self) -> None:
        """Called on SIGHUP: re-read configuration here."""

    def on_signal(self, signum: int) -> None:
        """Called for each signal listed in the ``signals`` setting."""

    # on_accept, on_read, on_drain, on_timeout, on_close and on_error come
    # from Handler, with their defaults (see daemonkit.framework.handler).

    # ``on_frames(conn, frames)`` is looked up, not defined here: define it to
    # get, with a framer, all the frames one read completed as one list,
    # instead of one on_read per frame (answer them with conn.send_all()).
    # It replaces on_read for framed connections; raw bytes still go to on_read.
    #
    # ``on_eof(conn)`` is looked up, not defined here: define it to keep a
    # half-closed connection open (you must close it later). Without it the
    # daemon flushes what was written and closes.

    # -- helpers ---------------------------------------------------------

    @functools.cached_property
    def metrics_registry(self) -> CollectorRegistry:
        """This daemon's own prometheus-client registry: create your metrics on it.

        ``Counter("jobs", "Jobs done.", registry=self.metrics_registry)``. The
        ``metrics`` endpoint and ``ctl metrics`` serve it with daemonkit's and
        the process's figures; without them your metrics still count, unserved.
        Made on first use, one per daemon (never the library's global one).
        Raises :class:`~daemonkit.errors.ConfigError` without ``daemonkit[metrics]``.
        """
        try:
            from prometheus_client import CollectorRegistry
        except ImportError:
            raise ConfigError(
                "metrics_registry needs prometheus-client: pip install 'daemonkit[metrics]'"
            ) from None
        return CollectorRegistry(auto_describe=True)  # a name taken twice fails at once

    @property
    def reactor(self) -> Reactor:
        """The reactor this daemon runs on (set while it runs)."""
        if self._reactor is None:
            raise RuntimeError("the daemon is not running; start it with run() or the CLI")
        return self._reactor

    @property
    def worker_id(self) -> int | None:
        """Which worker of ``--workers N`` this process is (0 to N-1); None in a single process."""
        return self._worker_id

    @property
    def addresses(self) -> list[Address]:
        """The addresses actually bound (port 0 resolved), in ``listen`` order."""
        return [host.address for host in self._hosts if host.address is not None]

    def adopt(self, name: str, sock: socket.socket) -> None:
        """Serve the endpoint named ``name`` on ``sock``, an already bound socket.

        For sockets handed over by systemd (socket activation) or by the
        process being replaced in a zero-downtime upgrade: the daemon does
        not bind that endpoint at start but takes ``sock`` (and owns it from
        then on). Call before start; ``KeyError`` for an unknown name,
        :class:`~daemonkit.errors.ConfigError` when the socket's type does
        not fit the endpoint (a datagram socket for a stream endpoint...).
        """
        endpoint = next((e for e in self.endpoints if e.name == name), None)
        if endpoint is None:
            names = ", ".join(str(e.name) for e in self.endpoints)
            raise KeyError(f"no endpoint named {name!r}; there are: {names}")
        wanted = socket.SOCK_DGRAM if endpoint.address.datagram else socket.SOCK_STREAM
        if sock.type != wanted:
            raise ConfigError(
                f"endpoint {name!r} ({endpoint}) cannot use a {sock.type.name} socket"
            )
        if self._reactor is not None:
            raise RuntimeError("adopt() must be called before the daemon starts")
        self._inherited[name] = sock

    def host(self, name: str) -> EndpointHost:
        """The host of the endpoint named ``name`` (its listener, counters).

        Raises ``KeyError`` when no endpoint has that name.
        """
        for host in self._hosts:
            if host.endpoint.name == name:
                return host
        raise KeyError(f"no endpoint named {name!r}")

    def address(self, name: str) -> Address:
        """The bound address of the endpoint named ``name``; ``KeyError`` if none is."""
        for host in self._hosts:
            if host.endpoint.name == name and host.address is not None:
                return host.address
        raise KeyError(f"no bound endpoint named {name!r}")

    # -- for endpoint hosts and operations -----------------------------------
    # Endpoint hosts see the daemon through the narrow EndpointOwner interface
    # (daemonkit.framework.hosts); operations (daemonkit.ops) use these and the
    # public attributes above. Users may call them; overriding them breaks the
    # daemon's books.

    def is_stopping(self) -> bool:
        """True once a stop (graceful or immediate) has begun."""
        return self._stopping

    def is_draining(self) -> bool:
        """True while a stop with ``drain`` keeps serving the connections (see :meth:`stop`)."""
        return self._drain_deadline is not None

    def drain_left(self) -> float | None:
        """Seconds until the drain's deadline while :meth:`is_draining`, else None."""
        deadline = self._drain_deadline
        if deadline is None:
            return None
        return max(0.0, deadline.when - self.reactor.time())

    def is_stopped(self) -> bool:
        """True once the stop has finished (every connection closed, cleanups run)."""
        return self._stopped

    @property
    def endpoint_hosts(self) -> tuple[EndpointHost, ...]:
        """The endpoint hosts, one per endpoint, in ``listen`` order."""
        return tuple(self._hosts)

    @property
    def inherited_sockets(self) -> dict[str, socket.socket]:
        """Sockets handed over and not yet taken, by name (``adopt`` fills it).

        Endpoint names for endpoints; operations keep their own sockets under
        ``"@"`` names (``"@control"``, ``"@metrics"``) across an upgrade.
        Whoever takes a socket out owns it.
        """
        return self._inherited

    def add_lifecycle_hook(self, hook: Callable[[str], object]) -> None:
        """Call ``hook(event)`` at each lifecycle event, in the order hooks were added.

        Events: ``"bound"`` (listeners bound, before ``on_start``; ``"started"``
        instead when started with ``bind=False``), ``"ready"`` (accepting),
        ``"reloading"``/``"reloaded"`` (around ``on_reload``), ``"stopping"``.
        This is how operations (pidfile, systemd, control socket, upgrade)
        attach to a daemon without the daemon knowing them. A hook that
        raises at ``"bound"`` aborts the start with its exception.
        """
        self._lifecycle.append(hook)

    def set_upgrade_handler(self, handler: Callable[[], int] | None) -> None:
        """What :meth:`upgrade` (and SIGUSR2) calls: returns the new process's pid.

        Set by :mod:`daemonkit.ops.upgrade` when the runner attaches it;
        without one, :meth:`upgrade` raises :class:`~daemonkit.errors.UpgradeError`.
        """
        self._upgrade_handler = handler

    def admit_connection(self) -> bool:
        """May one more client be accepted? No while stopping or at ``max_connections``.

        A refusal is counted in ``stats["rejected"]``.
        """
        limit = self.max_connections
        pending = sum(listener.pending for listener in self.listeners)
        if self._stopping or (limit is not None and len(self.connections) + pending >= limit):
            self.stats["rejected"] += 1
            return False
        return True

    def new_connection_id(self) -> int:
        """The next connection id (unique within this daemon, from 1)."""
        return next(self._ids)

    def take_inherited(self, name: str) -> socket.socket | None:
        """Remove and return the socket handed over under ``name``, or None."""
        return self._inherited.pop(name, None)

    def connection_opened(self, conn: Connection) -> None:
        """Book a new connection: it joins :attr:`connections`; ``stats["accepted"]`` counts it."""
        self.connections._add(conn)
        self.stats["accepted"] += 1

    def connection_closed(self, conn: Connection) -> None:
        """Book a closed connection (before its ``on_close``): out of the set and its groups."""
        self.connections._remove(conn)
        self._leave_groups(conn)
        self.stats["closed"] += 1

    def check_drained(self) -> None:
        """During a stop, finish it once no connection is left (after an ``on_close``).

        A draining stop ends its drain then: the process need not wait for the deadline.
        """
        if self._drain_deadline is not None and not self.connections:
            age = self.reactor.time() - self._drain_began
            self._end_drain(("drained: the last connection closed after %.3gs", age), logging.INFO)
        self._maybe_finish()

    def after(self, delay: float, fn: Callable[..., object], *args: object) -> Timer:
        """Run ``fn(*args)`` once after ``delay`` seconds; cancelled at stop."""
        return self.reactor.call_later(delay, fn, *args)

    def every(self, interval: float, fn: Callable[..., object], *args: object) -> Timer:
        """Run ``fn(*args)`` every ``interval`` seconds (drift-free); cancelled at stop."""
        return self.reactor.call_every(interval, fn, *args)

    # -- cron schedules (issue 12; see daemonkit.core.cron) -----------------

    #: The cron jobs made by cron() that may still be active (cancelled at stop).
    _cron_jobs: list[CronJob] | None = None

    def cron(
        self,
        expression: str,
        fn: Callable[..., object],
        *args: object,
        tz: str | tzinfo | None = None,
    ) -> CronJob:
        """Run ``fn(*args)`` at the times of a cron expression; cancelled at stop.

        ``"*/5 * * * *"`` (five fields, or six with seconds first), in UTC or
        the zone ``tz`` names (``"Europe/Berlin"``), on the daemon's timer
        queue, so a :class:`~daemonkit.FakeClock` drives it (its time is then
        the wall clock too: start it at an epoch timestamp). Missed runs are
        skipped and counted in ``job.skipped``; an exception in ``fn`` is
        logged and the schedule goes on. Returns the
        :class:`~daemonkit.core.cron.CronJob`; ``job.cancel()`` stops it.
        Raises :class:`~daemonkit.errors.ConfigError` for a bad expression or
        zone, or without ``daemonkit[cron]`` (see docs/outbound.md).
        """
        job = schedule_cron(self.reactor.timers, expression, fn, *args, tz=tz, log=self.log)
        if self._cron_jobs is None:
            self._cron_jobs = []
            self.cleanup(self._cancel_cron_jobs)
        # Forget the jobs already over, so memory follows the live ones.
        self._cron_jobs = [j for j in self._cron_jobs if j.active]
        self._cron_jobs.append(job)
        return job

    def _cancel_cron_jobs(self) -> None:
        for job in self._cron_jobs or ():
            job.cancel()
        self._cron_jobs = None

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run asyncio code; its errors are logged.

        A graceful stop waits for it (up to ``shutdown_timeout``) before it
        closes the connections, then cancels it: end a task that runs
        forever in ``on_stop``.
        """
        task = self.reactor.spawn(coro)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)
        return task

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

    def group(self, name: str) -> Group:
        """The broadcast group ``name`` (made on first use); see :class:`~daemonkit.Group`.

        Members leave when their connection closes; an empty group is forgotten.
        """
        group = self._groups.get(name)
        if group is None:
            now = self._reactor.time if self._reactor is not None else None
            group = self._groups[name] = Group(
                name, self.log, now, self._groups, broker=self.broker_link
            )
        return group

    @property
    def groups(self) -> dict[str, Group]:
        """The groups that have members, by name (a copy)."""
        return {name: g for name, g in self._groups.items() if len(g)}

    def _leave_groups(self, conn: Connection) -> None:
        if self._groups:
            for group in list(self._groups.values()):
                if conn in group:
                    group.discard(conn)  # an emptied group forgets itself

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

    def stop(self, *, now: bool = False, keep_backlog: bool = False, drain: float = 0.0) -> None:
        """Stop the daemon: gracefully, or with ``now=True`` at once.

        Graceful: stop accepting, then accept the clients already waiting in
        the listen backlog (closing a listener would reset them; they are
        let in whatever ``max_connections`` says, since they connected before
        the stop and the backlog bounds them), ``on_stop`` once they are
        set up, then wait for the answers being computed (offloaded calls
        and tasks of :meth:`spawn`), then close every connection as soon as
        it has read what its client had sent (answered by the usual
        callbacks), wait up to
        ``shutdown_timeout``, abort the rest, run the cleanups, then leave
        the loop. ``keep_backlog=True`` leaves the clients queued in the
        backlog to the process that shares the listeners: an upgrade's old
        process stops that way, and the new one accepts them. With
        ``now=True`` (or a second call with it, as a second SIGTERM does)
        connections are aborted instead of drained.
        Either way every connection still gets its ``on_close``.

        ``drain=S`` (seconds; an upgrade's old process passes ``upgrade_drain``)
        puts a drain before the graceful close: accepting nothing, the daemon
        keeps serving the connections it has (callbacks, timers, links) until
        the last one closes or ``S`` seconds pass, then stops as above:
        ``on_stop``, WebSocket 1001, HTTP ``Connection: close`` after the
        response being written. Meanwhile :meth:`is_draining` is true and
        ``stop()`` again ends the drain at once.
        """
        if self._reactor is None or self._stopped:
            return
        check_duration("drain", drain)
        if not self._stopping:
            self._stopping = True
            self._announce("stopping")
            self.log.info("stopping: %d connection(s) to close", len(self.connections))
            for host in self._hosts:
                host.pause()
            for listener in self.listeners:
                listener.close(drain=not (now or keep_backlog))
            if not now and drain > 0 and self.connections:
                self._begin_drain(drain)
            elif not now:
                self._end_drain()
        elif not now and self._drain_deadline is not None:
            left = len(self.connections)
            self._end_drain(("drain ended by a stop: closing the %d connection(s) left", left))
        if now:
            self._cancel_drain()
            self._abandon_work("stopping now")
            self._call_on_stop()
            for conn in self.connections:
                conn._abort(CloseReason.SHUTDOWN)
            for link in list(self._links):
                link._shutdown(CloseReason.SHUTDOWN, abort=True)
            # Aborted transports report connection_lost on the next loop turns;
            # this backstop (on the loop's own clock, so a FakeClock cannot hold
            # it back) ends the stop even if a backend never does.
            if self._backstop is None:
                self._backstop = self.reactor.loop.call_later(STOP_BACKSTOP, self._finish)
        self._maybe_finish()

    def _call_on_stop(self) -> None:
        if not self._stop_called:
            self._stop_called = True
            try:
                self.on_stop()
            except Exception:
                self.log.exception("on_stop failed")

    def _begin_drain(self, seconds: float) -> None:
        """Keep serving the connections for up to ``seconds``; then the graceful close."""
        reactor = self.reactor
        self._drain_began = reactor.time()
        self._drain_deadline = reactor.call_later(seconds, self._drain_deadline_passed, seconds)
        self._drain_reporter = reactor.call_every(DRAIN_REPORT_INTERVAL, self._report_drain)
        self.log.info(
            "draining: accepting nothing, serving the %d connection(s) left until they close "
            "or %gs pass, then closing them",
            len(self.connections),
            seconds,
        )

    def _report_drain(self) -> None:
        deadline = self._drain_deadline
        if deadline is not None:
            self.log.info(
                "draining: %d connection(s) left, %.3gs to the deadline",
                len(self.connections),
                max(0.0, deadline.when - self.reactor.time()),
            )

    def _drain_deadline_passed(self, seconds: float) -> None:
        self._drain_deadline = None  # fired: nothing to cancel
        left = len(self.connections)
        self._end_drain(
            ("drain deadline (%gs) passed: closing the %d connection(s) left", seconds, left)
        )

    def _cancel_drain(self) -> None:
        for timer in (self._drain_deadline, self._drain_reporter):
            if timer is not None:
                timer.cancel()
        self._drain_deadline = self._drain_reporter = None

    def _end_drain(self, message: tuple[Any, ...] = (), level: int = logging.WARNING) -> None:
        """End a drain (if any), log ``message`` (format, args), begin the graceful close."""
        self._cancel_drain()
        if message:
            self.log.log(level, *message)
        self._drain_timer = self.reactor.call_later(self.shutdown_timeout, self._drain_expired)
        self._sweep()

    def _sweep(self) -> None:
        """A graceful stop's step: on_stop, then close each connection that read its input.

        Closing a socket whose input was not read sends a reset, which
        destroys the answer to a request the client sent before the stop.
        So a connection is closed once the kernel holds none of its input
        (the backend read it, the handler answered). Runs again every
        :data:`SHUTDOWN_READ_POLL` on the loop's own clock while something
        is left; ``shutdown_timeout`` bounds it.
        """
        self._sweeper = None
        if self._stopped:
            return
        waiting = sum(listener.pending for listener in self.listeners)
        if not waiting:
            self._call_on_stop()  # every client let in has had its on_accept
            # Answers still being computed (offload, spawn) need their connections.
            busy = self._work_busy()
            waiting += busy
            for conn in () if busy else self.connections:
                if conn.id in self._shut:
                    continue
                if _unread_bytes(conn):
                    waiting += 1
                    continue
                self._shut.add(conn.id)
                conn._close(CloseReason.SHUTDOWN, self.shutdown_timeout)
        if waiting and not self._stopped:
            self._sweeper = self.reactor.loop.call_later(SHUTDOWN_READ_POLL, self._sweep)
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if (
            self._stopping
            and not self._stopped
            and len(self.connections) == 0
            and self._stop_called
            and not any(listener.pending for listener in self.listeners)
            and not self._work_busy()
        ):
            # The clients are answered: now the links they may have needed go.
            for link in list(self._links):
                link._shutdown(CloseReason.SHUTDOWN, abort=False)
            if not self._links:
                self._finish()

    # -- outbound links (see daemonkit.framework.links) ---------------------

    def connect(self, url: str, *, handler: object = None, **options: Any) -> Link:
        """Open an outbound link to ``url`` (``tcp://``, ``unix://``, ``tls://``) and return it.

        The link keeps at most one connection up, reconnecting with backoff
        until :meth:`Link.close` or the stop; ``handler`` (default: the
        daemon) gets ``on_connect``, ``on_read``, ``on_drain``, ``on_close``,
        ``on_error``. Options: ``framing``, ``ssl_context``, ``cafile``,
        ``verify``, ``connect_timeout``, ``reconnect``, ``min_delay``,
        ``max_delay``, ``stable_after``, ``queue``, ``idle_timeout``, ``rng``
        (see docs/outbound.md). Call it from ``on_start`` or later.
        """
        if self._reactor is None or (self._stopping and not self.is_draining()):
            raise ConfigError(f"connect({url}): the daemon is not running (call it from on_start)")
        link = Link(self, url, self if handler is None else handler, **options)
        self._links.append(link)
        link.start()
        return link

    @property
    def links(self) -> tuple[Link, ...]:
        """The outbound links not yet closed, in the order they were made."""
        return tuple(self._links)

    def link_done(self, link: Link) -> None:
        """A link is closed and its connection gone: forget it."""
        if link in self._links:
            self._links.remove(link)

    # -- blocking work off the loop, worker daemons (issue 12; docs/outbound.md) --

    def offload(
        self,
        fn: Callable[..., T],
        *args: Any,
        callback: Callable[[T], object] | None = None,
        process: bool = False,
        timeout: float | None = None,
    ) -> asyncio.Future[T]:
        """Run the blocking call ``fn(*args)`` in a worker thread; its result comes to the loop.

        Returns a future of the loop: ``await`` it in a coroutine (see
        :meth:`spawn`), or give ``callback``, which gets the result in the
        loop thread; with a callback, an exception of ``fn`` or of the
        callback is logged with what was called and counted in
        ``stats["errors"]``, and the callback is not called. ``process=True``
        runs it in a worker process instead (``fn`` and its arguments must
        pickle). After ``timeout`` seconds (default ``offload_timeout``) the
        caller gets :class:`~daemonkit.framework.offload.OffloadTimeout`; the
        thread cannot be killed and runs on, its result dropped. Raises
        :class:`~daemonkit.framework.offload.OffloadFull` at once when
        ``offload_queue_limit`` calls are in flight (answer "busy"), and
        ``RuntimeError`` when the daemon is not running. A graceful stop
        waits for the calls in flight (up to ``shutdown_timeout``).
        """
        if self._reactor is None or self._stopped:
            raise RuntimeError("the daemon is not running; offload() works from on_start on")
        if timeout is not None:
            check_duration("offload timeout", timeout, positive=True)
        pool = self._offload_pool
        if pool is None:
            pool = self._offload_pool = OffloadPool(
                self._reactor.loop,
                self._reactor.call_later,
                self._offload_failed,
                threads=self.offload_threads or default_offload_threads(),
                processes=self.offload_processes or default_offload_processes(),
                queue_limit=self.offload_queue_limit,
                timeout=self.offload_timeout,
            )
            self.cleanup(pool.close)
        return pool.submit(fn, args, callback=callback, process=process, timeout=timeout)

    def offload_in_flight(self) -> int:
        """Offloaded calls whose thread or process has not returned yet."""
        pool = self._offload_pool
        return 0 if pool is None else pool.in_flight

    def _offload_failed(self, what: str, exc: BaseException) -> None:
        self.stats["errors"] += 1
        self.log.error("%s: %s: %s", what, type(exc).__name__, exc, exc_info=exc)

    def _work_busy(self) -> bool:
        """Are answers still being computed (offloaded calls, spawned tasks)? A stop waits."""
        if self._work_abandoned:
            return False
        pool = self._offload_pool
        return bool(pool is not None and pool.pending) or any(
            not task.done() for task in self._spawned
        )

    def _abandon_work(self, why: str) -> None:
        """A stop gives up on the work in flight: log it, cancel the tasks. Once."""
        if self._work_abandoned:
            return
        self._work_abandoned = True
        pool = self._offload_pool
        dropped = pool.abandon() if pool is not None else 0
        if dropped:
            self.log.warning(
                "%s; %d offloaded call(s) still running, abandoned "
                "(a thread cannot be killed: it runs on, its result is dropped)",
                why,
                dropped,
            )
        tasks = [task for task in self._spawned if not task.done()]
        if tasks:
            self.log.warning(
                "%s; cancelling %d task(s): %s",
                why,
                len(tasks),
                ", ".join(task.get_name() for task in tasks),
            )
            for task in tasks:
                task.cancel()

    def _check_work_settings(self) -> None:
        for key in ("offload_threads", "offload_processes"):
            value = getattr(self, key)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ConfigError(f"{key} must be a whole number >= 1 or None, not {value!r}")
        limit = self.offload_queue_limit
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ConfigError(f"offload_queue_limit must be a whole number >= 1, not {limit!r}")
        check_duration("offload_timeout", self.offload_timeout, positive=True)
        if self.max_runtime is not None:
            check_duration("max_runtime", self.max_runtime, positive=True)
        jitter = self.max_runtime_jitter
        if not isinstance(jitter, int | float) or isinstance(jitter, bool) or not 0 <= jitter <= 1:
            raise ConfigError(
                f"max_runtime_jitter must be a fraction of max_runtime from 0 to 1, not {jitter!r}"
            )

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

        This is :func:`daemonkit.ops.runner.run`: it attaches the operations
        the settings ask for (``control``, ``metrics``, ``max_memory``, the
        upgrade hand-over) and serves. :meth:`start` alone starts the bare
        daemon on a reactor of the caller's.
        """
        # The one import that goes up a layer: the composition root lives in
        # the operations layer, which imports the daemon, never the reverse.
        from daemonkit.ops.runner import run

        run(
            self,
            backend=backend,
            clock=clock,
            install_signals=install_signals,
            on_ready=on_ready,
        )

    def start(self, reactor: Reactor, *, install_signals: bool = True, bind: bool = True) -> None:
        """Bind the listeners, install signal handlers and call ``on_start`` on ``reactor``.

        For embedding: the caller runs and closes the reactor. ``run()`` is
        the usual way in; it also attaches operations (control socket,
        metrics, upgrade, memory guard), which ``start()`` alone does not —
        call :func:`daemonkit.ops.runner.attach` first for those. A daemon
        object runs once; make a new one to run again.
        ``bind=False`` starts it without listeners, for a caller that hands it
        connections itself (the in-memory :class:`~daemonkit.testing.Simulation`).
        """
        if self._reactor is not None or self._stopped:
            raise RuntimeError(f"{type(self).__name__} already ran; create a new instance")
        self._reactor = reactor
        # The hot helpers go straight to the timer queue: no wrapper calls.
        self.after = reactor.timers.call_later  # type: ignore[method-assign]
        self.every = reactor.timers.call_every  # type: ignore[method-assign]
        limit = _open_file_limit()
        if self.max_connections is None:
            self.max_connections = max(
                1, min(DEFAULT_MAX_CONNECTIONS, int(limit * FD_SHARE_FOR_CONNECTIONS))
            )
        self.log.info("open-file limit %d; max_connections %d", limit, self.max_connections)
        # Handlers first: a port accepts as soon as it is bound, and a SIGHUP or
        # SIGTERM sent then must find the daemon's handlers, not the defaults.
        if install_signals:
            self._install_signals(reactor)
        for host in self._hosts if bind else ():
            try:
                host.open(reactor)
            except OSError as exc:
                for opened in self._hosts:
                    opened.close()
                self.listeners.clear()
                raise StartError(
                    f"cannot listen on {host.endpoint}: {exc.strerror or exc}"
                ) from exc
            if isinstance(host, StreamHost) and host.listener is not None:
                self.listeners.append(host.listener)
        # Operations open their own sockets here (the control socket, metrics),
        # and privileges are dropped: after binding, before on_start.
        self._announce("bound" if bind else "started")
        if self.broker is not None:
            self._open_broker(reactor)
        try:
            self.on_start()
        except Exception as exc:
            for host in self._hosts:
                host.close()
            raise StartError(f"on_start failed: {type(exc).__name__}: {exc}") from exc
        for host in self._hosts:
            if host.address is None:
                continue
            host.start()
            name = host.endpoint.name
            label = "" if name == host.address.scheme else f"{name} "
            self.log.info("listening on %s%s (backend %s)", label, host.address, reactor.backend)
        # Before the process we replace hears of it (the upgrader's "ready"
        # hook, added last): systemd must learn our pid (MAINPID=) and the
        # pidfile must name us before that one exits.
        self._announce("ready")

    def _open_broker(self, reactor: Reactor) -> None:
        """Connect the broker (a StartError if it cannot be used) and close it at stop.

        redis is imported here, and only here: a daemon without a broker never loads it.
        """
        try:
            link = Broker(
                str(self.broker),
                registry=self._groups,
                reactor=reactor,
                log=self.log,
                heartbeat=self.broker_heartbeat,
            )
            link.open()
        except (BrokerError, ConfigError) as exc:
            for host in self._hosts:
                host.close()
            if isinstance(exc, ConfigError):  # no redis package: the user's to install
                raise
            raise StartError(str(exc)) from None  # the message says it all: no traceback
        self.broker_link = link
        self.cleanup(link)

    def _announce(self, event: str) -> None:
        for hook in self._lifecycle:
            hook(event)

    def _install_signals(self, reactor: Reactor) -> None:
        reactor.on_signal(signal.SIGTERM, self._on_stop_signal)
        reactor.on_signal(signal.SIGINT, self._on_stop_signal)
        reactor.on_signal(signal.SIGHUP, self._on_hup)
        reactor.on_signal(signal.SIGUSR1, self._on_usr1)
        if signal.SIGUSR2 not in self.signals:  # listed there, it is the user's
            reactor.on_signal(signal.SIGUSR2, self._on_usr2)
        for signum in self.signals:
            reactor.on_signal(signum, self._on_user_signal)

    def _on_stop_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.is_draining():
            # An upgrade's old process, draining: the signal ends the drain
            # (graceful close now); one more aborts.
            self.log.warning(
                "%s while draining: closing the %d connection(s) left now "
                "(send it again to stop at once)",
                name,
                len(self.connections),
            )
            self.stop()
        elif self._stopping:
            self.log.warning("%s again: stopping now", name)
            self.stop(now=True)
        else:
            self.log.info("%s: stopping gracefully (send it again to stop at once)", name)
            self.stop()

    def _on_hup(self, signum: int) -> None:
        self.log.info("SIGHUP: reloading")
        with contextlib.suppress(Exception):  # logged by reload()
            self.reload()

    def reload(self) -> None:
        """Call :meth:`on_reload`, as SIGHUP and ``ctl reload`` do.

        An exception from it is logged with its traceback and re-raised;
        the daemon goes on serving either way.
        """
        self._announce("reloading")
        try:
            self.on_reload()
        except Exception:
            self.log.exception("on_reload failed")
            raise
        finally:
            self._announce("reloaded")

    def _on_usr2(self, signum: int) -> None:
        self.log.info("SIGUSR2: upgrading")
        with contextlib.suppress(UpgradeError):  # logged by the upgrader
            self.upgrade()

    def upgrade(self) -> int:
        """Replace this process by a new copy of itself without dropping clients (as SIGUSR2).

        Starts the new process (same command line, listeners inherited) and
        returns its pid; once it listens, this daemon drains (serves the
        clients it has for up to ``upgrade_drain``) and stops gracefully. If it
        fails, this daemon goes on serving and logs why. See
        :mod:`daemonkit.ops.upgrade`. Raises :class:`~daemonkit.ops.upgrade.UpgradeError`
        when no upgrade can begin now (not running, stopping, one under way).
        """
        if self._upgrade_handler is None:
            raise UpgradeError("the daemon is not running (start it with run() or the CLI)")
        return self._upgrade_handler()

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
        self._abandon_work(f"shutdown_timeout={self.shutdown_timeout:g}s passed")
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
        self._cancel_drain()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        if self._backstop is not None:
            self._backstop.cancel()
            self._backstop = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for host in self._hosts:
            host.close()
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

    def release_after_run(self) -> None:
        """After the loop ended (normally or not): release what is left.

        Aborts the connections still open, closes every endpoint and runs the
        cleanups; the daemon then forgets its reactor (its owner closes it).
        :func:`daemonkit.ops.runner.run` calls it; an embedder that called
        :meth:`start` calls it after its loop ends. Idempotent.
        """
        for conn in self.connections:
            conn._abort(CloseReason.SHUTDOWN)
        for link in list(self._links):
            link._shutdown(CloseReason.SHUTDOWN, abort=True)
        for host in self._hosts:
            host.close()
        self._run_cleanups()
        self._reactor = None

    # -- connection plumbing (called by Connection) ----------------------

    def _validate(self) -> list[Endpoint]:
        listen = self.listen
        # A worker daemon writes listen = [] (no endpoint); "" and None are mistakes.
        if (isinstance(listen, str) and not listen.strip()) or _is_none(listen):
            raise ConfigError(
                f"listen is {listen!r}: give an endpoint, e.g. tcp://127.0.0.1:7000, "
                "or listen = [] for a worker daemon with no endpoint"
            )
        given = [listen] if isinstance(listen, str | Endpoint) else list(listen)
        endpoints = _name_endpoints([e if isinstance(e, Endpoint) else Endpoint(e) for e in given])
        framer_factory(self.framing)  # refuse a bad framing setting now
        for key in ("write_high_water", "write_low_water", "max_write_buffer"):
            value = getattr(self, key)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{key} must be a positive number of bytes, not {value!r}")
        if self.write_low_water > self.write_high_water:
            raise ConfigError("write_low_water must not exceed write_high_water")
        if self.max_write_buffer < self.write_high_water:
            raise ConfigError("max_write_buffer must be at least write_high_water")
        for key in ("idle_timeout", "frame_timeout", "send_timeout"):
            check_optional_duration(key, getattr(self, key))
        for key in ("close_timeout", "shutdown_timeout", "upgrade_drain"):
            check_duration(key, getattr(self, key))
        check_memory_settings(self.max_memory, self.memory_check_interval)
        self._check_work_settings()
        mc = self.max_connections
        if mc is not None and (not isinstance(mc, int) or mc < 1):
            raise ConfigError(f"max_connections must be a whole number >= 1, not {mc!r}")
        return endpoints

    def _new_connection(self) -> Connection:
        """A connection of the first stream endpoint (for callers that bring their own)."""
        for host in self._hosts:
            if isinstance(host, StreamHost):
                return host.new_connection()
        raise ConfigError(f"{type(self).__name__} has no stream endpoint")


def _is_none(value: object) -> bool:
    """``value is None``, for a setting whose declared type excludes None (a user's may not)."""
    return value is None


def _unread_bytes(conn: Connection) -> int:
    """Bytes the kernel holds for ``conn`` that its transport has not read (FIONREAD)."""
    transport = conn.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0  # closed meanwhile, or not a socket (a test transport)
    return int(struct.unpack("i", raw)[0])


def _check_endpoint_durations(endpoints: list[Endpoint]) -> None:
    """Refuse a per-endpoint duration that is not finite or longer than 30 days.

    Every endpoint option named ``*_timeout`` or ``*_interval`` (a protocol's
    ``header_timeout``, ``ping_interval``, ``tls_handshake_timeout``... and
    any it adds later) and the endpoint's ``idle_timeout`` go through
    :func:`~daemonkit.core.durations.check_optional_duration`, whichever host
    reads them: ``inf`` there broke every connection at ``connection_made``.
    """
    for endpoint in endpoints:
        durations = {
            key: value
            for key, value in endpoint.options.items()
            if key.endswith(("_timeout", "_interval"))
        }
        if endpoint.idle_timeout is not INHERIT:
            durations["idle_timeout"] = endpoint.idle_timeout
        for key, value in durations.items():
            check_optional_duration(f"{endpoint}: {key}", value)


def _name_endpoints(endpoints: list[Endpoint]) -> list[Endpoint]:
    """Give every endpoint a unique name: its own, or its scheme (numbered when repeated)."""
    taken = {e.name for e in endpoints if e.name is not None}
    if len(taken) != sum(1 for e in endpoints if e.name is not None):
        raise ConfigError("two endpoints have the same name; names must be unique")
    named = []
    for endpoint in endpoints:
        if endpoint.name is None:
            base = endpoint.address.scheme
            name, n = base, 1
            while name in taken:
                n += 1
                name = f"{base}{n}"
            taken.add(name)
            endpoint = endpoint.replace(name=name)
        named.append(endpoint)
    return named


def name_endpoints(
    listen: str | Endpoint | Sequence[str | Endpoint],
    *,
    tls_files: tuple[str, str] | None = None,
) -> list[Endpoint]:
    """The endpoints of a ``listen`` setting, each with the name the daemon will give it.

    ``tls_files`` (certfile, keyfile) go to each ``tls``/``https``/``wss``
    string, which has no files of its own. Raises
    :class:`~daemonkit.errors.ConfigError` for a bad endpoint or a name used twice.
    """
    items = [listen] if isinstance(listen, str | Endpoint) else list(listen)
    files: dict[str, Any] = {}
    if tls_files is not None:
        files = {"certfile": tls_files[0], "keyfile": tls_files[1]}
    return _name_endpoints(
        [
            e if isinstance(e, Endpoint) else Endpoint(e, **(files if _tls_url(e) else {}))
            for e in items
        ]
    )


def _tls_url(url: str) -> bool:
    """True when ``url`` parses as a tls, https or wss endpoint string."""
    try:
        return parse_endpoint(url).tls
    except ConfigError:
        return False  # Endpoint(url) reports the error


def override_listen(
    listen: str | Endpoint | Sequence[str | Endpoint],
    given: Sequence[str],
    *,
    tls_files: tuple[str, str] | None = None,
) -> list[Endpoint]:
    """Apply the CLI's ``--listen`` values to a ``listen`` setting.

    ``NAME=URL`` moves the endpoint named NAME to URL and keeps its framing,
    handler and options. Plain URLs replace the endpoints in order when
    there are as many; with one endpoint, each URL gets a copy of it.
    Either way an endpoint with settings of its own moves only to a URL of
    its kind (tcp/unix, tls, http/ws, https/wss, udp), since another
    protocol cannot use them. Raises :class:`~daemonkit.errors.ConfigError`
    otherwise, naming the endpoints there are. ``tls_files`` (certfile,
    keyfile) serve every TLS URL given to an endpoint without files of its own.
    """
    current = name_endpoints(listen, tls_files=tls_files)
    names = ", ".join(str(e.name) for e in current)
    named: dict[str, str] = {}
    plain: list[str] = []
    for value in given:
        head, sep, url = value.partition("=")
        if sep and "://" not in head:
            if head in named:
                raise ConfigError(f"--listen {head}= is given twice")
            named[head] = url
        else:
            plain.append(value)
    if named and plain:
        raise ConfigError("--listen: give either NAME=URL values or plain URLs, not both")
    if named:
        unknown = sorted(set(named) - {str(e.name) for e in current})
        if unknown:
            raise ConfigError(f"--listen: no endpoint named {unknown[0]!r}; there are: {names}")
        return [
            _move(e, named[str(e.name)], "", tls_files) if e.name in named else e for e in current
        ]
    if len(current) == 1:
        return [_move(current[0], url, "", tls_files, name=None) for url in plain]
    if len(plain) == len(current):
        hint = (
            f"; plain --listen URLs replace the endpoints in order ({names}): "
            "name the one you move instead, --listen NAME=URL"
        )
        return [_move(e, url, hint, tls_files) for e, url in zip(current, plain, strict=True)]
    raise ConfigError(
        f"--listen: the daemon has {len(current)} endpoints ({names}); "
        "move them by name, e.g. --listen NAME=tcp://0.0.0.0:7000"
    )


# Schemes that can take each other's place under an endpoint's settings: the
# same protocol, with or without TLS alike (a TLS endpoint carries its files).
_SCHEME_KINDS = (("tcp", "unix"), ("tls",), ("http", "ws"), ("https", "wss"), ("udp",))


def _move(
    endpoint: Endpoint,
    url: str,
    hint: str,
    tls_files: tuple[str, str] | None = None,
    **changes: Any,
) -> Endpoint:
    """``endpoint`` at ``url``, keeping its settings; ConfigError if ``url``'s protocol differs.

    A bare endpoint (a URL with nothing of its own) may change protocol:
    there is nothing to lose. ``hint`` ends the error message.
    """
    scheme = parse_endpoint(url).scheme
    old = endpoint.address.scheme
    kind = next((k for k in _SCHEME_KINDS if old in k), (old,))
    own = [
        label
        for label, present in (
            ("framing", endpoint.framing is not INHERIT),
            ("handler", endpoint.handler is not None),
            ("TLS files", endpoint.address.tls),
            ("idle_timeout", endpoint.idle_timeout is not INHERIT),
            *((f"option {key}", True) for key in sorted(endpoint.options)),
        )
        if present
    ]
    if scheme not in kind and own:
        raise ConfigError(
            f"--listen {url}: endpoint {endpoint.name!r} ({endpoint}) has settings for "
            f"{'/'.join(kind)} ({', '.join(own)}) that a {scheme} endpoint cannot use; "
            f"give it a URL starting {' or '.join(s + '://' for s in kind)}{hint}"
        )
    if tls_files is not None and parse_endpoint(url).tls and not endpoint.address.tls:
        changes = {"certfile": tls_files[0], "keyfile": tls_files[1], **changes}
    return endpoint.replace(url, **changes)


def _host_for(daemon: Daemon, endpoint: Endpoint) -> EndpointHost:
    """The host of an endpoint's protocol: HTTP (and WebSocket), UDP or a plain stream."""
    address = endpoint.address
    if address.http:
        return HttpHost(daemon, endpoint)
    if address.datagram:
        return UdpHost(daemon, endpoint)
    return StreamHost(daemon, endpoint)
