"""Benchmark target: a daemonkit ``Lines`` echo, run through the daemonkit CLI.

Each line is echoed with ``conn.send(line)``, one call per frame, so the
framework's write coalescing (DESIGN.md, "Writes are coalesced") decides its
throughput. This file has no ``main``; bench/echo.py starts it as::

    python -m daemonkit bench/servers/daemonkit_lines.py \\
        --listen tcp://127.0.0.1:PORT --backend uvloop --log-level warning
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemonkit import Daemon
from daemonkit.framing import Lines

if TYPE_CHECKING:
    from daemonkit.core.connection import Connection


class LineEcho(Daemon):
    """Echo every line back, delimiter restored by ``Lines.encode``."""

    framing = Lines

    def on_read(self, conn: Connection, line: bytes) -> None:
        conn.send(line)
