"""Benchmark target: a Redis-protocol daemon on daemonkit's public API, per-frame dispatch.

A request/reply protocol written the way a daemonkit user writes one:
``framing = Resp`` (:class:`daemonkit.framing.Resp`, the built-in framer of
the Redis protocol, part of the compiled core) and ``on_read(conn,
command)`` answering each command with one ``conn.write(reply)``; daemonkit
gathers the replies of one read into one write. The store is the one the raw
uvloop reference (``raw_resp.py``) uses (``_resp.py``); that reference
parses with ``_resp.parse_command``, in Python, as a user without a
framework would. bench/run.py starts it as::

    python -m daemonkit bench/servers/daemonkit_resp.py \\
        --listen tcp://127.0.0.1:PORT --backend uvloop --log-level warning

and drives it with ``redis-benchmark -t get,set``; try it with
``redis-cli -p PORT set k v``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from _resp import Store

from daemonkit import Daemon
from daemonkit.framing import Resp

if TYPE_CHECKING:
    from daemonkit.core.connection import Connection


class RespDaemon(Daemon):
    """A tiny Redis: GET, SET, PING, INCR, one ``conn.write`` per command."""

    framing = Resp
    execute: Callable[[list[bytes]], bytes]

    def on_start(self) -> None:
        self.execute = Store().execute

    def on_read(self, conn: Connection, command: list[bytes]) -> None:
        conn.write(self.execute(command))
