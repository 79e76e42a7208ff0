"""Shared start-up for the raw asyncio reference servers in this directory.

Each is a bare ``asyncio.Protocol``, run as ``python bench/servers/NAME.py
PORT [--loop uvloop|asyncio]`` (uvloop by default). It listens on
127.0.0.1:PORT until SIGTERM or SIGINT and prints nothing: the benchmark
knows it is ready when the port accepts a connection. It raises its
open-file limit, and measures its loop lag when ``BENCH_LAG_FILE`` is set
(see _probe.py).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable

from _probe import raise_nofile, start_lag_probe

#: The accept backlog; asyncio's default (100) equals the benchmark's
#: connection count, so leave room for the load generator's burst of connects.
BACKLOG = 1024


async def _serve(factory: Callable[[], asyncio.Protocol], port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set_result, None)
    probe = start_lag_probe(loop.call_later)
    server = await loop.create_server(factory, "127.0.0.1", port, backlog=BACKLOG)
    try:
        async with server:
            await stop
    finally:
        if probe is not None:
            probe.flush()


def parse_args(
    modes: tuple[str, ...] = ("echo",), argv: list[str] | None = None
) -> argparse.Namespace:
    """Parse ``PORT [--loop uvloop|asyncio] [--mode MODE]``; exit on bad input.

    The namespace has ``port``, ``loop`` and ``mode`` (the first of ``modes``
    by default).
    """
    parser = argparse.ArgumentParser(prog=sys.argv[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--mode", choices=modes, default=modes[0])
    return parser.parse_args(sys.argv[1:] if argv is None else argv)


def run(main: Callable[[], object], loop: str) -> None:
    """Run the coroutine function ``main`` on uvloop or on the stdlib loop."""
    raise_nofile()
    if loop == "uvloop":
        import uvloop

        uvloop.run(main())  # type: ignore[arg-type]
    else:
        asyncio.run(main())  # type: ignore[arg-type]


def main(factory: Callable[[], asyncio.Protocol], argv: list[str] | None = None) -> None:
    """Serve ``factory`` on 127.0.0.1:PORT (PORT from ``argv``) until SIGTERM."""
    args = parse_args(argv=argv)
    run(lambda: _serve(factory, args.port), args.loop)
