"""Reference: the rawest echo asyncio can do, a bare Protocol on uvloop.

``data_received`` hands each read straight back to ``transport.write``. This is
the denominator of the raw-echo ratios in bench/echo.py.
Run: ``python bench/servers/raw_uvloop.py PORT``.
"""

from __future__ import annotations

import asyncio

from _serve import main


class Echo(asyncio.Protocol):
    """Write back every read as it arrives."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


if __name__ == "__main__":
    main(Echo)
