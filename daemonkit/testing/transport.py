"""MemoryTransport: an in-memory asyncio transport for socket-free protocol tests."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["MemoryTransport"]


class MemoryTransport(asyncio.Transport):
    """A transport that records writes instead of sending them.

    ``data`` holds everything written; ``closed`` / ``aborted`` tell how it
    ended. ``buffer_size`` lets a test pretend the peer is not reading (what
    ``get_write_buffer_size()`` reports), and the protocol's
    ``pause_writing``/``resume_writing`` are called as a real transport
    would when it crosses the limits set with ``set_write_buffer_limits``.
    """

    def __init__(
        self, protocol: asyncio.Protocol | None = None, *, peer: Any = ("127.0.0.1", 40000)
    ) -> None:
        super().__init__()
        self.data = bytearray()
        self.closed = False
        self.aborted = False
        self.reading = True
        self.eof = False
        self.buffer_size = 0
        self._protocol = protocol
        self._extra = {"peername": peer, "sockname": ("127.0.0.1", 7000)}
        self._high = 64 * 1024
        self._low = 16 * 1024
        self._paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def is_closing(self) -> bool:
        return self.closed

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            return
        self.data += data

    def writelines(self, list_of_data: Any) -> None:
        for chunk in list_of_data:
            self.write(chunk)

    def write_eof(self) -> None:
        self.eof = True

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return self.buffer_size

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = 64 * 1024 if high is None else high
        self._low = self._high // 4 if low is None else low

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_buffer_size(self, size: int) -> None:
        """Pretend ``size`` bytes wait in the kernel; crosses the watermarks like a socket."""
        self.buffer_size = size
        if self._protocol is None:
            return
        if not self._paused and size > self._high:
            self._paused = True
            self._protocol.pause_writing()
        elif self._paused and size <= self._low:
            self._paused = False
            self._protocol.resume_writing()

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._protocol is not None:
            self._protocol.connection_lost(None)

    def abort(self) -> None:
        self.aborted = True
        self.close()
