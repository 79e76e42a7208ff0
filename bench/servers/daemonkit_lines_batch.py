"""Benchmark target: a daemonkit ``Lines`` echo that answers each read's lines at once.

Where ``daemonkit_lines.py`` gets one ``on_read`` per line and answers each
with ``conn.send(line)``, this one defines ``on_frames`` and answers all the
lines one read completed with one ``conn.send_all(lines)``: one Python call
per read instead of two per line. Started by bench/echo.py as::

    python -m daemonkit bench/servers/daemonkit_lines_batch.py \\
        --listen tcp://127.0.0.1:PORT --backend uvloop --log-level warning
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemonkit import Daemon
from daemonkit.framing import Lines

if TYPE_CHECKING:
    from daemonkit.core.connection import Connection


class BatchLineEcho(Daemon):
    """Echo every line back, a read's worth at a time."""

    framing = Lines

    def on_frames(self, conn: Connection, lines: list[bytes]) -> None:
        conn.send_all(lines)
