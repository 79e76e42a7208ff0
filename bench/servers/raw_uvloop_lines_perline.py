"""Reference: a line echo that writes each line as it splits it (the slow way).

Splits the input on ``b"\\n"`` and calls ``transport.write`` once per line, so a
pipelined client costs one ``send()`` per line. Issue 2 measured this at 147k
lines/s against 1.45M/s for the coalesced variant; it is the floor a line
framer must stay far above.
Run: ``python bench/servers/raw_uvloop_lines_perline.py PORT``.
"""

from __future__ import annotations

import asyncio

from _serve import main


class PerLineEcho(asyncio.Protocol):
    """Split reads into lines; write each line back on its own."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        lines = (self.buffer + data).split(b"\n")
        self.buffer = lines.pop()
        write = self.transport.write
        for line in lines:
            write(line + b"\n")


if __name__ == "__main__":
    main(PerLineEcho)
