"""Reference: a line echo that writes once per read (the coalesced way).

The same split as raw_uvloop_lines_perline.py, but the echoed lines of one read
are joined and handed to ``transport.write`` once, so a pipelined client costs
one ``send()`` per read. This is the denominator of the lines-echo ratios in
bench/echo.py: DESIGN.md requires daemonkit's ``Lines`` echo to land near it.
Run: ``python bench/servers/raw_uvloop_lines_coalesced.py PORT``.
"""

from __future__ import annotations

import asyncio

from _serve import main


class CoalescedLineEcho(asyncio.Protocol):
    """Split reads into lines; write all of one read's lines back at once."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        lines = (self.buffer + data).split(b"\n")
        self.buffer = lines.pop()
        if lines:
            out = []
            for line in lines:
                out.append(line)
                out.append(b"\n")
            self.transport.write(b"".join(out))


if __name__ == "__main__":
    main(CoalescedLineEcho)
