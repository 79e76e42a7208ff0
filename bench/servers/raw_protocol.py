"""Reference: a bare ``asyncio.Protocol``, on uvloop or on the stdlib loop.

``--mode echo`` (default): ``data_received`` hands each read straight back to
``transport.write`` -- as fast as Python can echo, the denominator of every
raw ratio in bench/run.py. ``--mode fanout``: each read is written to every
other connection, one ``transport.write`` per subscriber per read (the
fastest form a Protocol can broadcast in).

Run: ``python bench/servers/raw_protocol.py PORT [--loop uvloop|asyncio]
[--mode echo|fanout]``.
"""

from __future__ import annotations

import asyncio

from _serve import _serve, parse_args, run


class Echo(asyncio.Protocol):
    """Write back every read as it arrives."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


#: Every connection of the fan-out server (a dict keeps insertion order).
PEERS: dict[asyncio.Transport, None] = {}


class Fanout(asyncio.Protocol):
    """Write every read to every other connection."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        PEERS[self.transport] = None

    def data_received(self, data: bytes) -> None:
        me = self.transport
        for peer in PEERS:
            if peer is not me:
                peer.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        PEERS.pop(self.transport, None)


def main() -> None:
    args = parse_args(("echo", "fanout"))
    factory = Echo if args.mode == "echo" else Fanout
    run(lambda: _serve(factory, args.port), args.loop)


if __name__ == "__main__":
    main()
