"""Reference: the Redis-protocol store as a bare ``asyncio.Protocol``, parsing in Python.

The way a user writes it without a framework: ``data_received`` joins the
read to what was left over, cuts out every complete command with the same
parser and answers from the same store as ``daemonkit_resp.py`` (``_resp.py``),
and keeps the rest. Two forms:

* ``--mode coalesced`` (default): the replies of one read are joined and
  handed to ``transport.write`` once -- the faster form at pipeline 16 (each
  ``write`` is a ``send()`` on uvloop), and no slower at pipeline 1, so it
  is the reference of the RESP ratios in bench/run.py;
* ``--mode perwrite``: one ``transport.write`` per reply.

Run: ``python bench/servers/raw_resp.py PORT [--loop uvloop|asyncio]
[--mode coalesced|perwrite]``.
"""

from __future__ import annotations

import asyncio

from _resp import RespError, Store, parse_command
from _serve import _serve, parse_args, run

#: The one store of this server (every connection sees the same keys).
STORE = Store()


class RespProtocol(asyncio.Protocol):
    """Parse commands from each read; write all of one read's replies at once."""

    transport: asyncio.Transport
    execute = staticmethod(STORE.execute)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        if self.buffer:
            data = self.buffer + data
        replies = []
        pos, total = 0, len(data)
        try:
            while pos < total:
                args, end = parse_command(data, pos)
                if args is None:
                    break
                if args:
                    replies.append(self.execute(args))
                pos = end
        except RespError:
            self.transport.close()
            return
        self.buffer = data[pos:]
        if replies:
            self.transport.write(b"".join(replies))


class RespPerWrite(RespProtocol):
    """The same, with one ``transport.write`` per reply."""

    def data_received(self, data: bytes) -> None:
        if self.buffer:
            data = self.buffer + data
        write = self.transport.write
        pos, total = 0, len(data)
        try:
            while pos < total:
                args, end = parse_command(data, pos)
                if args is None:
                    break
                if args:
                    write(self.execute(args))
                pos = end
        except RespError:
            self.transport.close()
            return
        self.buffer = data[pos:]


def main() -> None:
    args = parse_args(("coalesced", "perwrite"))
    factory = RespProtocol if args.mode == "coalesced" else RespPerWrite
    run(lambda: _serve(factory, args.port), args.loop)


if __name__ == "__main__":
    main()
