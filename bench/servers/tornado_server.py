"""Peer: Tornado's ``TCPServer`` and ``IOStream`` (on the stdlib asyncio loop, its default).

Its fastest idiomatic forms, by ``--mode``, one ``handle_stream`` coroutine
per connection:

* ``echo``: ``data = await stream.read_bytes(65536, partial=True)``;
  ``await stream.write(data)``;
* ``lines``: ``line = await stream.read_until(b"\\n")``;
  ``await stream.write(line)``;
* ``fanout``: each ``read_bytes(65536, partial=True)`` is written to every
  other stream (not awaited: waiting on each subscriber in turn would
  serialise them).

Sets TCP_NODELAY on every stream (``stream.set_nodelay(True)``; uvloop and
asyncio do it by default). Listens with a backlog of 1024. Run:
``python bench/servers/tornado_server.py PORT [--mode echo|lines|fanout]``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from _probe import raise_nofile, start_lag_probe
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpserver import TCPServer

BACKLOG = 1024
READ_SIZE = 65536
MAX_LINE = 65536


class Echo(TCPServer):
    async def handle_stream(self, stream: IOStream, address: Any) -> None:
        stream.set_nodelay(True)
        try:
            while True:
                data = await stream.read_bytes(READ_SIZE, partial=True)
                await stream.write(data)
        except StreamClosedError:
            pass


class LineEcho(TCPServer):
    async def handle_stream(self, stream: IOStream, address: Any) -> None:
        stream.set_nodelay(True)
        try:
            while True:
                line = await stream.read_until(b"\n", max_bytes=MAX_LINE)
                await stream.write(line)
        except StreamClosedError:
            pass


class Fanout(TCPServer):
    def __init__(self) -> None:
        super().__init__()
        self.peers: dict[IOStream, None] = {}

    async def handle_stream(self, stream: IOStream, address: Any) -> None:
        stream.set_nodelay(True)
        self.peers[stream] = None
        try:
            while True:
                data = await stream.read_bytes(READ_SIZE, partial=True)
                for peer in list(self.peers):
                    if peer is not stream:
                        try:
                            peer.write(data)
                        except StreamClosedError:
                            self.peers.pop(peer, None)
        except StreamClosedError:
            pass
        finally:
            self.peers.pop(stream, None)


async def serve(mode: str, port: int) -> None:
    server: TCPServer = {"echo": Echo, "lines": LineEcho, "fanout": Fanout}[mode]()
    server.listen(port, address="127.0.0.1", backlog=BACKLOG)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    probe = start_lag_probe(IOLoop.current().call_later)
    try:
        await stop.wait()
    finally:
        server.stop()
        if probe is not None:
            probe.flush()


def main() -> None:
    parser = argparse.ArgumentParser(prog=sys.argv[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--mode", choices=("echo", "lines", "fanout"), default="echo")
    args = parser.parse_args()
    raise_nofile()
    asyncio.run(serve(args.mode, args.port))


if __name__ == "__main__":
    main()
