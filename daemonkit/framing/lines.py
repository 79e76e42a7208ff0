"""Delimited lines: ``b"PING\\n"`` is the frame ``b"PING"``.

Rules this framer keeps beyond the :mod:`~daemonkit.framing.base` contract:

* The delimiter may be several bytes (``b"\\r\\n"``) and may arrive split
  across two reads. Lines are cut where the delimiter first occurs, scanning
  left to right, exactly as ``stream.split(delimiter)`` would.
* A partial line is never buffered past ``max_length`` (plus the
  ``len(delimiter) - 1`` bytes that may be the start of the delimiter): the
  error is raised as soon as the line is known to be too long, so a peer that
  never sends the delimiter cannot make us buffer without bound.
* Scanning is linear: the buffer never holds a whole delimiter, so each read
  is searched once, plus the seam where the buffer's last
  ``len(delimiter) - 1`` bytes meet it (the scan position backs off that far
  to find a split delimiter). No byte is searched more than
  ``len(delimiter)`` times however the stream is split, and the buffer is
  only ever appended to and cleared, never rebuilt.
* The common case (nothing buffered, a chunk of whole short lines) is one
  ``bytes.split`` call.
"""

from __future__ import annotations

from typing import Any, NoReturn

from mypy_extensions import mypyc_attr

from daemonkit.errors import ConfigError, FrameTooLarge
from daemonkit.framing.base import BytesLike, Framer, _check_max_length, _to_bytes

__all__ = ["DEFAULT_MAX_LINE", "Lines"]

# asyncio's StreamReader limit (64 KiB); Twisted's LineReceiver uses 16 KiB.
DEFAULT_MAX_LINE = 64 * 1024
"""Default ``max_length`` of :class:`Lines`, in bytes, delimiter excluded."""


@mypyc_attr(allow_interpreted_subclasses=True)
class Lines(Framer):
    """Frames are lines, without their delimiter.

    *delimiter* is the non-empty byte string that ends each line; *max_length*
    is the longest line accepted, in bytes, delimiter excluded. Both are
    checked here: an empty delimiter or a *max_length* below 1 raises
    :class:`~daemonkit.errors.ConfigError` (a :class:`ValueError`).
    """

    __slots__ = ("_backoff", "_delimiter", "_limit", "_max_length")

    def __init__(self, delimiter: BytesLike = b"\n", max_length: int = DEFAULT_MAX_LINE) -> None:
        delimiter = _to_bytes(delimiter)
        if not delimiter:
            raise ConfigError("delimiter must not be empty, e.g. b'\\n' or b'\\r\\n'")
        max_length = _check_max_length(max_length)
        super().__init__(delimiter=delimiter, max_length=max_length)
        self._delimiter = delimiter
        self._max_length = max_length
        # A buffered partial line may end with the first len(delimiter) - 1
        # bytes of the delimiter: rescan those, and do not count them yet.
        self._backoff = len(delimiter) - 1
        self._limit = max_length + self._backoff

    @property
    def delimiter(self) -> bytes:
        """The byte string that ends each line."""
        return self._delimiter

    @property
    def max_length(self) -> int:
        """The longest line accepted, in bytes, delimiter excluded."""
        return self._max_length

    def feed(self, data: BytesLike) -> list[bytes]:
        """Append *data* and return the lines it completes, without delimiters.

        The bytes after the last delimiter stay buffered for the next call.

        Raises :class:`~daemonkit.errors.FrameTooLarge` when a line is longer
        than ``max_length``, as soon as the buffered part proves it; the
        exception's ``frames`` lists the lines completed before it in this
        call. Deliver those and close the connection: the framer is broken
        and every later call raises :class:`~daemonkit.errors.FrameTooLarge`.
        """
        buf = self._buffer
        if buf or self._error is not None or not isinstance(data, bytes):
            return self._feed_slow(data)
        if len(data) > self._max_length:
            return self._split(data, [])
        # Fast path: nothing buffered and no part of data can be too long.
        lines = data.split(self._delimiter)
        tail = lines.pop()
        if tail:
            buf += tail
        return lines

    def _split(self, data: bytes, lines: list[bytes]) -> list[bytes]:
        """Cut *data* into lines appended to *lines*; the buffer must be empty."""
        parts = data.split(self._delimiter)
        tail = parts.pop()
        if len(data) > self._max_length:
            max_length = self._max_length
            for index, part in enumerate(parts):
                if len(part) > max_length:
                    lines += parts[:index]
                    self._too_long(lines)
            if len(tail) > self._limit:
                lines += parts
                self._too_long(lines)
        if tail:
            self._buffer += tail
        lines += parts
        return lines

    def _feed_slow(self, data: BytesLike) -> list[bytes]:
        """Handle a broken framer, non-bytes input, or data after a partial line."""
        data = self._checked_input(data)
        buf = self._buffer
        if not buf:
            return self._split(data, [])
        delimiter = self._delimiter
        held = len(buf)
        backoff = self._backoff
        if backoff:
            # The buffer holds no delimiter, but its last len(delimiter) - 1
            # bytes may start one that ends in data: search just that seam.
            # (A delimiter found there starts in the buffer: it cannot fit in
            # the seam's len(delimiter) - 1 bytes of data.)
            start = held - backoff if held > backoff else 0
            end = (buf[start:] + data[:backoff]).find(delimiter)
            if end >= 0:
                end += start
                if end > self._max_length:
                    self._too_long([])
                rest = data[end + len(delimiter) - held :]
                del buf[end:]
                line = bytes(buf)
                buf.clear()
                return self._split(rest, [line])
        # Any other delimiter lies wholly in data, which is searched only once.
        end = data.find(delimiter)
        if end < 0:
            if held + len(data) > self._limit:
                self._too_long([])
            buf += data
            return []
        if held + end > self._max_length:
            self._too_long([])
        line = bytes(buf) + data[:end]
        buf.clear()
        return self._split(data[end + len(delimiter) :], [line])

    def _too_long(self, lines: list[bytes]) -> NoReturn:
        self._fail(
            FrameTooLarge(f"line longer than max_length={self._max_length} bytes"),
            lines,
        )

    def encode(self, frame: Any) -> bytes:
        """Return *frame* followed by the delimiter.

        A ``str`` is sent as UTF-8 (so one message can go to line and
        WebSocket clients alike). Raises :class:`ValueError` if *frame*
        contains the delimiter, or ends with bytes that would run into it so
        that the peer would cut the line elsewhere; :class:`TypeError` if it is
        neither bytes-like nor str. Escape or split such frames before
        sending. ``max_length`` is not checked: it bounds what this side
        reads, not what it writes.
        """
        if type(frame) is bytes:
            line = frame
        elif isinstance(frame, str):
            line = frame.encode()
        else:
            line = _to_bytes(frame)
        delimiter = self._delimiter
        if not self._backoff:  # a one-byte delimiter: nothing can run into it
            # Its byte as an int: ``int in bytes`` is a memchr in the bytes
            # type's own slot, four times cheaper than ``line.find(delimiter)``.
            if delimiter[0] not in line:
                return line + delimiter
            raise ValueError(f"cannot encode a line that contains the delimiter {delimiter!r}")
        data = line + delimiter
        if data.find(delimiter) != len(line):
            if delimiter in line:
                raise ValueError(f"cannot encode a line that contains the delimiter {delimiter!r}")
            raise ValueError(
                f"cannot encode a line ending in bytes that run into the delimiter {delimiter!r}"
            )
        return data

    def encode_all(self, frames: list[Any]) -> bytes:
        """Return every frame of *frames* as lines, in order, as one ``bytes``.

        Raises as :meth:`encode` would for the first frame that cannot be
        encoded. With a one-byte delimiter a batch of bytes frames costs two
        joins and one ``memchr``, not a call per frame.
        """
        delimiter = self._delimiter
        if frames and not self._backoff:
            try:
                joined = b"".join(frames)
            except TypeError:  # a str frame (or worse): encode() sorts them out
                return super().encode_all(frames)
            # No frame holds the delimiter's byte: one memchr over the batch
            # (``bytes.count`` of it, which this replaces, reads byte by byte
            # and took 0.4 µs for 16 lines of 64 bytes; this takes a tenth).
            if delimiter[0] not in joined:
                # An empty last frame puts the final delimiter in the same join.
                frames.append(b"")
                try:
                    return delimiter.join(frames)
                finally:
                    frames.pop()
        # A frame holds the delimiter (or is not bytes): encode() finds it and raises.
        return super().encode_all(frames)
