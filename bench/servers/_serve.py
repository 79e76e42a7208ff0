"""Shared start-up for the raw reference echo servers in this directory.

Each reference server is a bare ``asyncio.Protocol`` on uvloop, run as
``python bench/servers/NAME.py PORT``. It listens on 127.0.0.1:PORT until
SIGTERM or SIGINT and prints nothing: bench/echo.py knows it is ready when the
port accepts a connection.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable

import uvloop

#: The accept backlog; asyncio's default (100) equals the benchmark's
#: connection count, so leave room for the load generator's burst of connects.
BACKLOG = 1024


async def _serve(factory: Callable[[], asyncio.Protocol], port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set_result, None)
    server = await loop.create_server(factory, "127.0.0.1", port, backlog=BACKLOG)
    async with server:
        await stop


def main(factory: Callable[[], asyncio.Protocol], argv: list[str] | None = None) -> None:
    """Serve ``factory`` on 127.0.0.1:PORT (PORT from ``argv``) until SIGTERM."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        sys.exit(f"usage: {sys.argv[0]} PORT")
    uvloop.run(_serve(factory, int(args[0])))
