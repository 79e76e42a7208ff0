"""The composition root: build a reactor, attach operations to a daemon, serve.

A :class:`~daemonkit.daemon.Daemon` knows nothing of operations. This module
is the one place that wires them to it, through the daemon's documented
interface (:meth:`~daemonkit.daemon.Daemon.add_lifecycle_hook`,
:meth:`~daemonkit.daemon.Daemon.set_upgrade_handler`, its endpoints,
listeners and connection set):

* the zero-downtime **upgrade** hand-over (:mod:`daemonkit.ops.upgrade`):
  adopts the listeners an old process handed over *before* the daemon binds,
  answers :meth:`Daemon.upgrade <daemonkit.daemon.Daemon.upgrade>` and
  SIGUSR2, tells the old process once this one is ready, and arms the
  **memory guard** when ``max_memory`` is set;
* the **control socket** and the **metrics** endpoint
  (:mod:`daemonkit.ops.control`) when ``control`` or ``metrics`` is set,
  opened once the listeners are bound, before ``on_start``.

``Daemon.run()`` calls :func:`run`; the command line calls it through
``Daemon.run()`` after :mod:`daemonkit.ops.process` added its own hooks
(pidfile, privileges, detaching, systemd). An embedder that drives a reactor
itself calls :func:`attach` before ``daemon.start(reactor)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from daemonkit.core.reactor import Listener, Reactor
from daemonkit.core.timers import Clock, Timer
from daemonkit.daemon import Daemon
from daemonkit.ops.control import Operations, handed_over_listeners
from daemonkit.ops.upgrade import Upgrader
from daemonkit.ops.workers import (
    ENV_WORKER,
    HAND_OVER_SIGNAL,
    AcceptShares,
    share_accepts,
    supervisor_link_from_env,
    watch_supervisor,
    worker_id_from_env,
)

__all__ = ["Attached", "attach", "run"]


class Attached:
    """What :func:`attach` put on a daemon: its upgrader and, once bound, its operations."""

    __slots__ = ("daemon", "operations", "refresh", "shares", "upgrader")

    def __init__(self, daemon: Daemon, upgrader: Upgrader) -> None:
        self.daemon = daemon
        #: The --workers set's table of loads, in a worker a supervisor started.
        self.shares: AcceptShares | None = None
        #: The timer that refreshes this worker's load in :attr:`shares`.
        self.refresh: Timer | None = None
        #: The daemon's side of zero-downtime upgrades (and the memory guard).
        self.upgrader = upgrader
        #: The control socket and metrics endpoint, when the settings ask for them.
        self.operations: Operations | None = None

    def service_listeners(self) -> list[tuple[str, Listener]]:
        """The operations' open listeners, as an upgrade hands them over (``"@control"``...)."""
        ops = self.operations
        return handed_over_listeners(ops.control, ops.metrics) if ops is not None else []

    def _on_event(self, event: str) -> None:
        daemon = self.daemon
        if event == "bound":
            if self.shares is not None and daemon.worker_id is not None:
                # Unmapped at stop, once the listeners that ask it are closed.
                daemon.cleanup(self.shares)
                self.refresh = share_accepts(
                    daemon.reactor, daemon.listeners, self.shares, daemon.worker_id, self._load
                )
            if daemon.control is not None or daemon.metrics is not None:
                daemon.connections.track_ages()  # for ``ctl connections``
                # Binds; raises StartError/ConfigError (the start fails);
                # registers its own cleanup, so it is released at stop.
                self.operations = Operations.start(daemon, daemon.reactor)
        elif event == "ready":
            if daemon.worker_id is not None:  # a --workers worker: stop if orphaned
                watch_supervisor(daemon.reactor, daemon.stop, os.getppid())
                # The supervisor's new set took over (SIGUSR2): drain, then stop.
                daemon.reactor.on_signal(HAND_OVER_SIGNAL, self._handed_over)
            # Added after any pidfile/systemd hook, so the process we replace
            # hears of us only once those name our pid.
            daemon.set_upgrade_handler(self.upgrader.upgrade)
            self.upgrader.start(daemon.reactor)
        elif event == "stopping" and daemon.worker_id is not None:
            # The other workers accept from these sockets' queues: close our
            # descriptors before the stop would drain them (which keeps new
            # clients out of the shared socket, for every worker).
            for listener in daemon.listeners:
                listener.close()
            if self.refresh is not None:
                # The slot's next worker (a reload's) publishes its load there,
                # not this one's connections left to close.
                self.refresh.cancel()
                self.refresh = None

    def _load(self) -> int:
        """The connections this worker holds: open ones and accepted ones being set up."""
        daemon = self.daemon
        return len(daemon.connections) + sum(listener.pending for listener in daemon.listeners)

    def _handed_over(self, signum: int) -> None:
        self.daemon.log.info("the supervisor's new set took over: draining, then stopping")
        self.upgrader.hand_over()


def attach(daemon: Daemon) -> Attached:
    """Attach the operations ``daemon``'s settings ask for; call before it starts.

    Adopts the listeners handed over by an upgrading process now (before the
    daemon binds), and hooks the rest onto the daemon's lifecycle events.
    Raises :class:`~daemonkit.errors.ConfigError` when a handed-over
    descriptor is not a socket.

    A process a ``--workers`` supervisor started (:mod:`daemonkit.ops.workers`)
    learns its worker id here (:attr:`Daemon.worker_id
    <daemonkit.daemon.Daemon.worker_id>`), and its listeners and readiness
    pipe through the upgrade's hand-over, which the supervisor reuses.
    """
    worker = worker_id_from_env()  # before the upgrader takes the supervisor's variables
    os.environ.pop(ENV_WORKER, None)  # not for this worker's own children
    if worker is not None:
        daemon._worker_id = worker
    upgrader = Upgrader(daemon)
    if worker is not None:
        link = supervisor_link_from_env(worker)
        if link.control is not None:
            # The supervisor serves --control and --metrics for the set and
            # asks this worker through its private socket (ops.workerset).
            daemon.control, daemon.metrics = link.control, None
        if link.requests is not None:
            # max_memory/max_runtime: the supervisor recycles one worker at a time.
            upgrader.recycle_request = link.ask_recycle
        upgrader.runtime_stagger = link.stagger
    attached = Attached(daemon, upgrader)
    if worker is not None:
        attached.shares = AcceptShares.from_env()
    attached.upgrader.service_listeners = attached.service_listeners
    daemon.add_lifecycle_hook(attached._on_event)
    return attached


def run(
    daemon: Daemon,
    *,
    backend: str = "auto",
    clock: Clock | None = None,
    install_signals: bool = True,
    on_ready: Callable[[Daemon], object] | None = None,
) -> None:
    """Build a reactor, attach operations, start ``daemon`` and serve until it stops.

    The body of :meth:`Daemon.run <daemonkit.daemon.Daemon.run>` (see there
    for the arguments). Raises :class:`~daemonkit.daemon.StartError`; whatever
    happens, the daemon's connections, hosts and cleanups are released and
    the reactor is closed before it returns.
    """
    reactor = Reactor(backend, clock=clock, log=daemon.log)
    try:
        attach(daemon)
        daemon.start(reactor, install_signals=install_signals)
        if on_ready is not None:
            reactor.call_soon(on_ready, daemon)
        reactor.run()
    finally:
        daemon.release_after_run()
        reactor.close()
