"""Benchmark target of bench/workers.py: a daemonkit ``Lines`` echo that names its worker.

Every line is echoed with ``conn.send(line)`` (as daemonkit_lines.py), except
the line ``?worker``, answered with the worker's id (``None`` in a single
process), so a client can tell which worker of a ``--workers N`` set holds
its connection. No load generator message is ever that line. Started as::

    python -m daemonkit bench/servers/daemonkit_workers.py \\
        --listen tcp://127.0.0.1:PORT --workers N --log-level warning
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemonkit import Daemon
from daemonkit.framing import Lines

if TYPE_CHECKING:
    from daemonkit.core.connection import Connection

#: The line a client sends to learn which worker holds its connection.
ASK = b"?worker"


class WorkerEcho(Daemon):
    """Echo every line back; answer ``?worker`` with ``self.worker_id``."""

    framing = Lines

    def on_read(self, conn: Connection, line: bytes) -> None:
        conn.send(str(self.worker_id).encode() if line == ASK else line)
