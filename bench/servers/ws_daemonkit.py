"""Benchmark target: a daemonkit WebSocket echo (and broadcast) daemon.

A ``ws://`` endpoint with three WebSocket routes, each its own handler (the
``websocket={path: handler}`` form of docs/websocket.md), so the echo path
runs nothing but ``on_message`` -> ``conn.send``:

* ``/``: echo every message back;
* ``/sub``: join the ``subscribers`` group, ignore what arrives;
* ``/pub``: broadcast every message to the ``subscribers`` group.

Defaults otherwise (compression offered, not used: the load generator does not
ask for it; pings every 20 s). bench/http_ws.py runs it as::

    python -m daemonkit bench/servers/ws_daemonkit.py \\
        --listen ws://127.0.0.1:PORT --log-level warning

(a plain ``--listen`` URL keeps the routes of the single endpoint).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemonkit import Daemon, Endpoint
from daemonkit.framework.handler import Handler

if TYPE_CHECKING:
    from daemonkit.core.connection import Connection

GROUP = "subscribers"


class Echo(Handler):
    """Send every message back, same type."""

    def on_message(self, conn: Connection, message: str | bytes) -> None:
        conn.send(message)


class Subscriber(Handler):
    """Receive the publisher's messages."""

    def on_open(self, conn: Connection) -> None:
        assert self.daemon is not None
        self.daemon.group(GROUP).add(conn)

    def on_message(self, conn: Connection, message: str | bytes) -> None:
        pass


class Publisher(Handler):
    """Send every message to every subscriber."""

    def on_message(self, conn: Connection, message: str | bytes) -> None:
        assert self.daemon is not None
        self.daemon.group(GROUP).broadcast(message)


class WsBench(Daemon):
    """The three routes on one ``ws://`` endpoint."""

    listen = Endpoint(
        "ws://127.0.0.1:8000",
        websocket={"/": Echo(), "/sub": Subscriber(), "/pub": Publisher()},
    )
