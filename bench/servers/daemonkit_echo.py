"""Benchmark target: daemonkit's raw echo, run through the daemonkit CLI.

``on_read`` hands each read to ``conn.write``, as ``examples/echo_daemon.py``
does, without that example's per-connection log lines (the churn workload
would otherwise measure logging). When ``BENCH_LAG_FILE`` is set it also
measures its loop lag with a chain of ``self.after`` timers (see _probe.py).
bench/run.py starts it as::

    python -m daemonkit bench/servers/daemonkit_echo.py \\
        --listen tcp://127.0.0.1:PORT --backend uvloop --log-level warning
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from _probe import LagProbe, lag_probe_from_env

from daemonkit import Daemon

if TYPE_CHECKING:
    from daemonkit.core.connection import Connection


class Echo(Daemon):
    """Write back every read as it arrives."""

    probe: LagProbe | None = None

    def on_start(self) -> None:
        self.probe = lag_probe_from_env()
        if self.probe is not None:
            self.probe.start(self.after)

    def on_read(self, conn: Connection, data: bytes) -> None:
        conn.write(data)

    def on_stop(self) -> None:
        if self.probe is not None:
            self.probe.flush()
