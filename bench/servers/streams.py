"""Peer: asyncio streams (``StreamReader`` / ``StreamWriter``), on uvloop or the stdlib loop.

The way the asyncio documentation writes a server: one coroutine per
connection. Its fastest idiomatic forms, by ``--mode``:

* ``echo``: ``data = await reader.read(65536)``; ``writer.write(data)``;
  ``await writer.drain()``;
* ``lines``: ``line = await reader.readline()``; ``writer.write(line)``;
  ``await writer.drain()`` (one write per line, as streams code does);
* ``fanout``: every ``read(65536)`` is written to every other connection's
  writer, then ``drain()`` on this one only (the fastest form: one write per
  subscriber per read; draining each subscriber in turn would serialise them).

Run: ``python bench/servers/streams.py PORT [--loop uvloop|asyncio]
[--mode echo|lines|fanout]``.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from _probe import start_lag_probe
from _serve import BACKLOG, parse_args, run

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
READ_SIZE = 65536

#: Every writer of the fan-out server.
PEERS: dict[asyncio.StreamWriter, None] = {}


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
    except (OSError, ValueError):  # ValueError: a line over the reader's limit
        pass
    finally:
        writer.close()


async def fanout(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    PEERS[writer] = None
    try:
        while data := await reader.read(READ_SIZE):
            for peer in PEERS:
                if peer is not writer:
                    peer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        PEERS.pop(writer, None)
        writer.close()


async def serve(handler: Handler, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set_result, None)
    probe = start_lag_probe(loop.call_later)
    server = await asyncio.start_server(handler, "127.0.0.1", port, backlog=BACKLOG)
    try:
        await stop
    finally:
        server.close()
        if probe is not None:
            probe.flush()


def main() -> None:
    args = parse_args(("echo", "lines", "fanout"))
    handler = {"echo": echo, "lines": lines, "fanout": fanout}[args.mode]
    run(lambda: serve(handler, args.port), args.loop)


if __name__ == "__main__":
    main()
