"""WebSocket frames (RFC 6455), client side: messages in, masked frames out.

:class:`WebSocketClientFramer` is :class:`~daemonkit.framing.websocket.WebSocketFramer`
turned around, for the bots: it reads what a *server* sends (frames that
must not be masked, RFC 6455 5.1) and masks what it encodes with a fresh
4-byte key per frame. Messages, control frames, fragments, limits and
permessage-deflate work as on the server side and share its code; only the
frame header rules and the writing differ.

Permessage-deflate: the :class:`~daemonkit.framing.websocket.Deflate` given
names the parameters from *this side's* point of view, as for the server
framer: ``server_*`` is the side that owns the framer. Build it from a
server's answer with :func:`client_deflate`.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from typing import Any

from daemonkit.framing.base import BytesLike, _to_bytes
from daemonkit.framing.websocket import (
    _BINARY,
    _CLOSE,
    _CONT,
    _KNOWN_OPCODES,
    _PING,
    _PONG,
    _TAIL,
    _TEXT,
    _WHOLE_BINARY,
    _WHOLE_TEXT,
    DEFAULT_MAX_MESSAGE,
    MAX_CONTROL_PAYLOAD,
    CloseCode,
    Deflate,
    MessageTooBig,
    WebSocketFramer,
    _opcode_name,
    _pack_h,
    _pack_q,
    _unpack_h,
    _unpack_q,
    apply_mask,
)

__all__ = ["WebSocketClientFramer", "client_deflate"]

_Mask = Callable[[bytes, bytes], bytes]
# The longest server frame header: 2 bytes and an 8-byte extended length.
_MAX_HEADER = 10


def client_deflate(
    *,
    server_no_context_takeover: bool = False,
    client_no_context_takeover: bool = False,
    client_max_window_bits: int = 15,
) -> Deflate:
    """The :class:`Deflate` a client framer takes, from what the server's answer says.

    The parameters are those of ``Sec-WebSocket-Extensions`` (RFC 7692 7.1),
    seen from the client: it compresses with a window of
    ``client_max_window_bits`` (9..15) and resets its compressor after each
    message when ``client_no_context_takeover``; it resets its decompressor
    when the server said ``server_no_context_takeover``.
    """
    return Deflate(
        server_no_context_takeover=client_no_context_takeover,
        client_no_context_takeover=server_no_context_takeover,
        server_max_window_bits=client_max_window_bits,
    )


class WebSocketClientFramer(WebSocketFramer):
    """Frames are the messages of a server's WebSocket stream; writes are masked.

    ``feed()`` returns, in stream order, ``str`` (text), ``bytes``
    (binary), :class:`~daemonkit.framing.websocket.Ping`,
    :class:`~daemonkit.framing.websocket.Pong` and
    :class:`~daemonkit.framing.websocket.Close`, and raises
    :class:`~daemonkit.framing.websocket.WebSocketError` (close code 1002)
    for a masked server frame as for every other broken rule.

    Settings, keyword-only, as for the server framer (*max_message*,
    *deflate*, *apply_mask*), plus *mask_key*: a function of ``n`` returning
    ``n`` random bytes, the source of each frame's masking key (default
    :func:`os.urandom`, the strong entropy RFC 6455 10.3 asks for).
    """

    __slots__ = ("_key",)

    def __init__(
        self,
        *,
        max_message: int = DEFAULT_MAX_MESSAGE,
        deflate: Deflate | None = None,
        apply_mask: _Mask = apply_mask,
        mask_key: Callable[[int], bytes] = os.urandom,
    ) -> None:
        super().__init__(max_message=max_message, deflate=deflate, apply_mask=apply_mask)
        self._settings["mask_key"] = mask_key
        self._key = mask_key

    # -- reading: server frames carry no mask -------------------------------------

    _MASK_BYTES = 0  # the shared slow path then finds each frame's end unmasked

    def _split(self, data: bytes, frames: list[Any]) -> list[Any]:
        """Read the unmasked frames of *data* into *frames*; the buffer must be empty."""
        total = len(data)
        pos = 0
        while total - pos >= 2:
            first = data[pos]
            second = data[pos + 1]
            length = second & 0x7F
            if length < 126:
                start = pos + 2
            elif length == 126:
                if total - pos < 4:
                    break
                length = _unpack_h(data, pos + 2)[0]
                start = pos + 4
            else:
                if total - pos < 10:
                    break
                length = _unpack_q(data, pos + 2)[0]
                start = pos + 10
            if (
                (first != _WHOLE_TEXT and first != _WHOLE_BINARY)
                or second & 0x80
                or length > self._max_message
                or self._message_opcode is not None
            ):
                self._check_header(first, second, length, frames)
            end = start + length
            if end > total:
                break
            payload = data[start:end]
            pos = end
            if first == _WHOLE_TEXT:
                try:
                    frames.append(payload.decode())
                except UnicodeDecodeError as exc:
                    self._bad_utf8(exc, frames)
            elif first == _WHOLE_BINARY:
                frames.append(payload)
            else:
                self._slow_frame(first, payload, frames)
                if self._closed:
                    return frames
        if pos < total:
            self._buffer += data[pos:] if pos else data
        return frames

    def _check_header(self, first: int, second: int, length: int, frames: list[Any]) -> None:
        opcode = first & 0x0F
        if opcode not in _KNOWN_OPCODES:
            self._protocol_error(f"reserved opcode {opcode:#x}", frames)
        rsv = first & 0x70
        if rsv and (rsv != 0x40 or self._deflate is None or opcode not in (_TEXT, _BINARY)):
            what = "RSV1 without permessage-deflate" if rsv == 0x40 else f"{rsv >> 4:#x}"
            self._protocol_error(f"reserved bits set: {what}", frames)
        if second & 0x80:
            self._protocol_error("server frame is masked (RFC 6455 5.1)", frames)
        if opcode & 0x08:
            if not first & 0x80:
                self._protocol_error(f"fragmented {_opcode_name(opcode)} frame", frames)
            if length > MAX_CONTROL_PAYLOAD:
                self._protocol_error(
                    f"{_opcode_name(opcode)} frame of {length} bytes, "
                    f"more than {MAX_CONTROL_PAYLOAD}",
                    frames,
                )
            return
        if opcode == _CONT:
            if self._message_opcode is None:
                self._protocol_error("continuation frame without a message to continue", frames)
        elif self._message_opcode is not None:
            self._protocol_error(
                f"new {_opcode_name(opcode)} message inside a fragmented message", frames
            )
        if length > self._max_message - self._message_size:
            self._fail(
                MessageTooBig(
                    f"message longer than max_message={self._max_message} bytes "
                    f"(a frame of {length} bytes after {self._message_size})"
                ),
                frames,
            )

    # -- writing: every frame masked ----------------------------------------------

    def _masked(self, first: int, payload: bytes) -> bytes:
        n = len(payload)
        key = self._key(4)
        if n < 126:
            header = bytes((first, 0x80 | n))
        elif n < 65536:
            header = _pack_h(first, 0x80 | 126, n)
        else:
            header = _pack_q(first, 0x80 | 127, n)
        return header + key + self._mask(payload, key)

    def encode(self, frame: Any) -> bytes:
        """Return one masked frame carrying *frame*: text for ``str``, binary for bytes.

        With permessage-deflate the message is compressed (RSV1 set).
        Raises :class:`TypeError` for anything else.
        """
        if type(frame) is str:
            opcode, payload = _TEXT, frame.encode()
        else:
            opcode, payload = _BINARY, frame if type(frame) is bytes else _to_bytes(frame)
        compressor = self._compressor
        if compressor is None:
            return self._masked(0x80 | opcode, payload)
        data: bytes = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if data.endswith(_TAIL):
            data = data[:-4]
        deflate = self._deflate
        if deflate is not None and deflate.server_no_context_takeover:
            self._compressor = deflate.compressor()
        return self._masked(0xC0 | opcode, data)

    def encode_ping(self, payload: BytesLike = b"") -> bytes:
        """Return a masked Ping frame; ValueError if *payload* is over 125 bytes."""
        return self._control(_PING, _to_bytes(payload))

    def encode_pong(self, payload: BytesLike = b"") -> bytes:
        """Return a masked Pong frame (the answer to a Ping with the same *payload*)."""
        return self._control(_PONG, _to_bytes(payload))

    def encode_close(self, code: int = CloseCode.NORMAL, reason: str = "") -> bytes:
        """Return a masked Close frame with *code* and *reason* (see the server framer)."""
        unmasked = super().encode_close(code, reason)
        return self._control(_CLOSE, unmasked[2:])

    def _control(self, opcode: int, payload: bytes) -> bytes:
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise ValueError(
                f"control frame payload of {len(payload)} bytes, more than {MAX_CONTROL_PAYLOAD}"
            )
        return self._masked(0x80 | opcode, payload)
