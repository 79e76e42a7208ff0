"""Operations: what steers a running daemon from outside it.

:mod:`~daemonkit.ops.runner` is the composition root: it builds the reactor,
attaches what the command line or the settings ask for — the control socket
and metrics (:mod:`~daemonkit.ops.control`, :mod:`~daemonkit.ops.metrics`),
zero-downtime upgrade (:mod:`~daemonkit.ops.upgrade`), the memory guard
(:mod:`~daemonkit.ops.memguard`), pidfile, systemd and privileges
(:mod:`~daemonkit.ops.process`, :mod:`~daemonkit.ops.pidfile`,
:mod:`~daemonkit.ops.systemd`), the development reloader
(:mod:`~daemonkit.ops.reloader`) — through the daemon's documented lifecycle
hooks, and runs it. ``--workers`` runs a supervisor instead
(:mod:`~daemonkit.ops.workers`), which serves the set's control socket and
metrics (:mod:`~daemonkit.ops.workerset`). A daemon never imports this layer.
"""

__all__: list[str] = []
