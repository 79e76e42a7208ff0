"""Benchmark peer: the ``websockets`` library's asyncio server, echo and broadcast.

The documented idiom: ``websockets.asyncio.server.serve`` with a handler that
runs ``async for message in ws: await ws.send(message)``; on ``/sub`` the
connection joins a set and waits, and each message of a ``/pub`` connection
goes to that set with ``websockets.asyncio.server.broadcast``. Default
settings (the load generator offers no compression, so none is used).
Run as ``python bench/servers/ws_websockets.py PORT [--loop asyncio|uvloop]``
(the stdlib loop by default: the reference of the issue).
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from websockets.asyncio.server import ServerConnection, broadcast, serve

SUBSCRIBERS: set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    """Echo, or subscribe (``/sub``), or publish (``/pub``)."""
    path = ws.request.path if ws.request is not None else "/"
    if path == "/sub":
        SUBSCRIBERS.add(ws)
        try:
            await ws.wait_closed()
        finally:
            SUBSCRIBERS.discard(ws)
    elif path == "/pub":
        async for message in ws:
            broadcast(SUBSCRIBERS, message)
    else:
        async for message in ws:
            await ws.send(message)


async def serve_until_signal(port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set_result, None)
    async with serve(handler, "127.0.0.1", port, backlog=1024):
        await stop


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve_until_signal(args.port))
    else:
        asyncio.run(serve_until_signal(args.port))


if __name__ == "__main__":
    main()
