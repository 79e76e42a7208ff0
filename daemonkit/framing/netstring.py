"""D. J. Bernstein's netstrings: ``b"5:hello,"`` is the frame ``b"hello"``.

The length is ASCII decimal digits, then ``:``, the payload, and ``,``
(https://cr.yp.to/proto/netstrings.txt). Rules this framer keeps beyond the
:mod:`~daemonkit.framing.base` contract:

* The length is strict: at least one digit, digits only, no leading zero
  (``0:,`` is the empty string, ``05:`` is an error), and no more digits than
  ``max_length`` has, so a hostile stream of digits is cut after a few bytes.
* A length above ``max_length`` raises as soon as its ``:`` arrives, before a
  byte of the payload is buffered; a missing ``,`` raises as soon as the byte
  in its place arrives.
* Each check looks at the bytes in stream order, so the first bad byte
  decides the error whichever way the stream is split.
"""

from __future__ import annotations

from typing import Any, NoReturn

from mypy_extensions import mypyc_attr

from daemonkit.errors import FrameTooLarge, ProtocolError
from daemonkit.framing.base import (
    DEFAULT_MAX_FRAME,
    BytesLike,
    Framer,
    _check_max_length,
    _to_bytes,
)

__all__ = ["Netstrings"]

_COLON = ord(":")
_COMMA = ord(",")
_ZERO = ord("0")
_NINE = ord("9")


@mypyc_attr(allow_interpreted_subclasses=True)
class Netstrings(Framer):
    """Frames are the payloads of netstrings.

    *max_length* is the longest payload accepted, in bytes; below 1 it raises
    :class:`~daemonkit.errors.ConfigError` (a :class:`ValueError`). It also
    bounds the length field to ``len(str(max_length))`` digits.
    """

    __slots__ = ("_digits", "_max_length", "_need", "_skip")

    def __init__(self, max_length: int = DEFAULT_MAX_FRAME) -> None:
        max_length = _check_max_length(max_length)
        super().__init__(max_length=max_length)
        self._max_length = max_length
        self._digits = len(str(max_length))
        # Once the length of the buffered netstring is known: its size in
        # bytes, from the first digit to the comma, and the size of
        # "<length>:". Both 0 while the length is incomplete.
        self._need = 0
        self._skip = 0

    @property
    def max_length(self) -> int:
        """The longest payload accepted, in bytes."""
        return self._max_length

    def feed(self, data: BytesLike) -> list[bytes]:
        """Append *data* and return the payloads of the netstrings it completes.

        A partial netstring stays buffered for the next call.

        Raises :class:`~daemonkit.errors.ProtocolError` for a malformed
        length or a missing ``,``, and :class:`~daemonkit.errors.FrameTooLarge`
        for a length above ``max_length``, each as soon as the bad byte
        arrives; the exception's ``frames`` lists the payloads completed
        before it in this call. Deliver those and close the connection: the
        framer is broken and every later call raises the same kind of error.
        """
        if self._buffer or self._error is not None or not isinstance(data, bytes):
            return self._feed_slow(data)
        return self._split(data, [])

    def _split(self, data: bytes, frames: list[bytes]) -> list[bytes]:
        """Cut *data* into payloads appended to *frames*; the buffer must be empty."""
        digits = self._digits
        max_length = self._max_length
        total = len(data)
        pos = 0
        while pos < total:
            colon = data.find(b":", pos, pos + digits + 1)
            if colon < 0:
                # No ":" yet: keep the partial length only if it is valid so far.
                self._check_length(data[pos : pos + digits + 1], frames)
                break
            head = data[pos:colon]
            if not head.isdigit() or (head[0] == _ZERO and len(head) > 1):
                # _check_length raises for the first bad byte; if none, it is empty.
                self._check_length(head, frames)
                self._fail(ProtocolError("netstring length is empty"), frames)
            length = int(head)
            if length > max_length:
                self._fail(
                    FrameTooLarge(
                        f"netstring length {length} is more than max_length={max_length} bytes"
                    ),
                    frames,
                )
            end = colon + 1 + length
            if end >= total:
                self._need = end + 1 - pos
                self._skip = colon + 1 - pos
                break
            if data[end] != _COMMA:
                self._unterminated(data[end : end + 1], frames)
            frames.append(data[colon + 1 : end])
            pos = end + 1
        if pos < total:
            self._buffer += data[pos:]
        return frames

    def _feed_slow(self, data: BytesLike) -> list[bytes]:
        """Handle a broken framer, non-bytes input, or data after a partial netstring."""
        data = self._checked_input(data)
        buf = self._buffer
        if not self._need:
            # At most a few bytes of valid length are buffered: re-cut from scratch.
            data = bytes(buf) + data
            buf.clear()
            return self._split(data, [])
        missing = self._need - len(buf)
        if len(data) < missing:
            buf += data
            return []
        if data[missing - 1] != _COMMA:
            self._unterminated(data[missing - 1 : missing], [])
        buf += data[: missing - 1]
        del buf[: self._skip]
        frame = bytes(buf)
        buf.clear()
        self._need = self._skip = 0
        return self._split(data[missing:], [frame])

    def _check_length(self, head: bytes, frames: list[bytes]) -> None:
        """Raise ProtocolError for the first bad byte of a partial length, if any."""
        for index, byte in enumerate(head):
            if not _ZERO <= byte <= _NINE:
                self._fail(
                    ProtocolError(f"netstring length has a non-digit byte {bytes([byte])!r}"),
                    frames,
                )
            if index == 1 and head[0] == _ZERO:
                self._fail(ProtocolError("netstring length has a leading zero"), frames)
            if index == self._digits:
                self._fail(
                    ProtocolError(
                        f"netstring length has more than {self._digits} digits without ':' "
                        f"(max_length={self._max_length} bytes)"
                    ),
                    frames,
                )

    def _unterminated(self, found: bytes, frames: list[bytes]) -> NoReturn:
        self._fail(ProtocolError(f"netstring not terminated by ',' (found {found!r})"), frames)

    def encode(self, frame: Any) -> bytes:
        """Return *frame* as a netstring: its length, ``:``, *frame* and ``,``.

        Raises :class:`~daemonkit.errors.FrameTooLarge` if *frame* is longer
        than ``max_length`` (the peer would reject it), and :class:`TypeError`
        if it is not bytes-like. Nothing is sent in that case; split the
        payload or raise the limit on both sides.
        """
        payload = _to_bytes(frame)
        length = len(payload)
        if length > self._max_length:
            raise FrameTooLarge(
                f"payload of {length} bytes is longer than max_length={self._max_length} bytes"
            )
        return b"%d:%s," % (length, payload)
