"""Benchmark targets: daemonkit broadcast fan-out, run through the daemonkit CLI.

Every connection joins the group ``"all"``; whatever one sends goes to all
the others with ``self.group("all").broadcast(..., exclude=conn)``, which
skips (never waits for) a member past its high-water mark. Two forms:

* ``GroupLines``: ``framing = Lines``, one ``broadcast`` per line -- the way a
  daemonkit chat or pub/sub server is written;
* ``GroupRaw``: raw framing, one ``broadcast`` per read -- what the raw
  Protocol peers do.

bench/run.py starts them as::

    python -m daemonkit bench/servers/daemonkit_fanout.py:GroupLines \\
        --listen tcp://127.0.0.1:PORT --backend uvloop --log-level warning
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemonkit import Daemon
from daemonkit.framing import Lines

if TYPE_CHECKING:
    from daemonkit.core.connection import Connection


class GroupRaw(Daemon):
    """Broadcast every read to every other connection."""

    def on_accept(self, conn: Connection) -> None:
        self.group("all").add(conn)

    def on_read(self, conn: Connection, data: bytes) -> None:
        self.group("all").broadcast(data, exclude=conn)


class GroupLines(GroupRaw):
    """Broadcast every line to every other connection."""

    framing = Lines
