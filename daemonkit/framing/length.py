"""Length-prefixed frames: an unsigned integer header, then that many bytes.

The header is a :mod:`struct` format of one unsigned integer (``"!I"`` is a
4-byte big-endian length, as in Netty's ``LengthFieldBasedFrameDecoder``
default layout and most RPC protocols). Rules this framer keeps beyond the
:mod:`~daemonkit.framing.base` contract:

* A header announcing more than ``max_length`` raises as soon as the header
  is complete, before a byte of the payload is buffered.
* A partial frame costs one append per read; nothing is rescanned.
* The common case (nothing buffered, a chunk of whole frames) slices the
  payloads straight out of the chunk.
"""

from __future__ import annotations

import re
import struct
from typing import Any, NoReturn

from mypy_extensions import mypyc_attr

from daemonkit.errors import ConfigError, FrameTooLarge
from daemonkit.framing.base import (
    DEFAULT_MAX_FRAME,
    BytesLike,
    Framer,
    _check_max_length,
    _to_bytes,
)

__all__ = ["LengthPrefixed"]

# One unsigned integer, with an optional byte order; "N" (size_t) is left out
# because its width depends on the platform.
_HEADER_RE = re.compile(r"[@=<>!]?[BHILQ]")


@mypyc_attr(allow_interpreted_subclasses=True)
class LengthPrefixed(Framer):
    """Frames are payloads preceded by their length in a fixed-size header.

    *header* is a :mod:`struct` format of exactly one unsigned integer, such
    as ``"!I"`` (the default), ``"!H"``, ``"<Q"`` or ``"B"``; any other
    format raises :class:`~daemonkit.errors.ConfigError` (a
    :class:`ValueError`). Without a byte-order prefix (``"I"``, ``"@Q"``) the
    header has the platform's native size and byte order, so prefer ``"!"``,
    ``"<"`` or ``">"`` on the wire. *max_length* is the longest payload accepted, in
    bytes, header excluded; below 1 it raises
    :class:`~daemonkit.errors.ConfigError`. It may exceed what the header can
    express, in which case the header is the real limit.
    """

    __slots__ = ("_capacity", "_header", "_max_length", "_pack", "_size", "_unpack_from")

    # header is a str; typed Any so that any other type gets the ConfigError
    # below, compiled too (mypyc enforces an annotation with a TypeError).
    def __init__(self, header: Any = "!I", max_length: int = DEFAULT_MAX_FRAME) -> None:
        if not isinstance(header, str) or not _HEADER_RE.fullmatch(header):
            raise ConfigError(
                "header must be a struct format of one unsigned integer, "
                f"such as '!I', '<H' or 'B'; got {header!r}"
            )
        max_length = _check_max_length(max_length)
        super().__init__(header=header, max_length=max_length)
        layout = struct.Struct(header)
        self._header = header
        self._max_length = max_length
        self._size = layout.size
        self._capacity = (1 << (8 * layout.size)) - 1
        self._pack = layout.pack
        self._unpack_from = layout.unpack_from

    @property
    def header(self) -> str:
        """The :mod:`struct` format of the length header."""
        return self._header

    @property
    def max_length(self) -> int:
        """The longest payload accepted, in bytes, header excluded."""
        return self._max_length

    def feed(self, data: BytesLike) -> list[bytes]:
        """Append *data* and return the payloads it completes.

        A partial header or payload stays buffered for the next call.

        Raises :class:`~daemonkit.errors.FrameTooLarge` as soon as a header
        announces more than ``max_length`` bytes; the exception's ``frames``
        lists the payloads completed before it in this call. Deliver those
        and close the connection: the framer is broken and every later call
        raises :class:`~daemonkit.errors.FrameTooLarge`.
        """
        if self._buffer or self._error is not None or not isinstance(data, bytes):
            return self._feed_slow(data)
        return self._split(data, [])

    def _split(self, data: bytes, frames: list[bytes]) -> list[bytes]:
        """Cut *data* into payloads appended to *frames*; the buffer must be empty."""
        unpack_from = self._unpack_from
        size = self._size
        max_length = self._max_length
        total = len(data)
        pos = 0
        while total - pos >= size:
            (length,) = unpack_from(data, pos)
            if length > max_length:
                self._too_large(length, frames)
            start = pos + size
            end = start + length
            if end > total:
                break
            frames.append(data[start:end])
            pos = end
        if pos < total:
            self._buffer += data[pos:]
        return frames

    def _feed_slow(self, data: BytesLike) -> list[bytes]:
        """Handle a broken framer, non-bytes input, or data after a partial frame."""
        data = self._checked_input(data)
        buf = self._buffer
        size = self._size
        if len(buf) < size:
            # At most size - 1 bytes of header to carry over: re-cut from scratch.
            data = bytes(buf) + data
            buf.clear()
            return self._split(data, [])
        (length,) = self._unpack_from(buf)
        missing = size + length - len(buf)
        if len(data) < missing:
            buf += data
            return []
        buf += data[:missing]
        del buf[:size]
        frame = bytes(buf)
        buf.clear()
        return self._split(data[missing:], [frame])

    def _too_large(self, length: int, frames: list[bytes]) -> NoReturn:
        self._fail(
            FrameTooLarge(
                f"frame header announces {length} bytes, "
                f"more than max_length={self._max_length} bytes"
            ),
            frames,
        )

    def encode(self, frame: Any) -> bytes:
        """Return the header for *frame*'s length followed by *frame*.

        Raises :class:`~daemonkit.errors.FrameTooLarge` if *frame* is longer
        than ``max_length`` or than the header can express (the peer would
        reject it), and :class:`TypeError` if it is not bytes-like. Nothing
        is sent in that case; split the payload or raise the limit on both
        sides.
        """
        payload = _to_bytes(frame)
        length = len(payload)
        if length > self._max_length:
            raise FrameTooLarge(
                f"payload of {length} bytes is longer than max_length={self._max_length} bytes"
            )
        if length > self._capacity:
            raise FrameTooLarge(
                f"payload of {length} bytes does not fit header {self._header!r} "
                f"(at most {self._capacity} bytes)"
            )
        return self._pack(length) + payload
