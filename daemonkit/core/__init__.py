"""The engine: the event loop and what rides on it, with no idea of a daemon.

:mod:`~daemonkit.core.reactor` (the loop, watches, signals, listeners),
:mod:`~daemonkit.core.timers` (the timer queue and clocks),
:mod:`~daemonkit.core.connection` (one stream's buffers, limits and deadlines),
:mod:`~daemonkit.core.endpoints` (where to listen), :mod:`~daemonkit.core.log`
(one handler, colours, storms) and :mod:`~daemonkit.core.durations` (the one
duration validator). Imports only :mod:`daemonkit.errors` and
:mod:`daemonkit.framing`.
"""

__all__: list[str] = []
