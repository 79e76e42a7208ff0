"""WebSocket frames (RFC 6455), server side: messages in, frames out.

:class:`WebSocketFramer` reads what a client sends after the opening
handshake and returns whole *messages*: ``str`` for a text message,
``bytes`` for a binary one, fragments already joined and decompressed. The
control frames come back in the same list, in stream order, as
:class:`Ping`, :class:`Pong` and :class:`Close` objects: the connection
layer answers them (this module does no I/O). :meth:`~WebSocketFramer.encode`
turns a ``str`` or ``bytes`` into one unmasked server frame;
:meth:`~WebSocketFramer.encode_ping`, :meth:`~WebSocketFramer.encode_pong`
and :meth:`~WebSocketFramer.encode_close` build the control frames.

Why an own codec: measured against the sans-IO cores of ``websockets``
(``ServerProtocol``) and ``wsproto`` on the same echo loop, this one is
several times faster per message (the numbers are in ``docs/websocket.md``
and in :mod:`daemonkit.websocket`), because it returns plain ``str`` and
``bytes`` instead of event objects and parses a whole read in one loop.

Rules this framer keeps beyond the :mod:`~daemonkit.framing.base` contract:

* Every rule of RFC 6455 5 a server must enforce raises
  :class:`WebSocketError` (a :class:`~daemonkit.errors.ProtocolError`) or
  :class:`MessageTooBig` (a :class:`~daemonkit.errors.FrameTooLarge`), each
  with the close ``code`` to send before closing: unmasked client frames,
  reserved bits or opcodes, fragmented or long (> 125 bytes) control frames,
  a continuation without a message or a new message inside one, and a bad
  Close payload are 1002; invalid UTF-8 in a text message or a close reason
  is 1007; a message longer than ``max_message`` is 1009.
* ``max_message`` bounds the whole message, fragments added up, and after
  decompression: a frame header announcing too much raises before a byte of
  its payload is buffered, and inflating stops one byte past the limit (a
  "zip bomb" costs at most ``max_message`` bytes).
* After a :class:`Close` the stream is over: later input is ignored, and
  ``feed()`` returns nothing more.
* Buffering is linear: a partial header (at most 14 bytes) is re-read, a
  partial payload is appended to, nothing else is rescanned.
* Unmasking is done by a function given as ``apply_mask`` (the C one of the
  ``websockets`` package, say); the default is a pure-Python one, correct
  but about ten times slower on long payloads.

Permessage-deflate (RFC 7692) is on when the framer is made with a
:class:`Deflate` (the negotiated parameters): RSV1 marks a compressed
message, the payload is raw DEFLATE (``wbits`` negative) ending in a sync
flush whose four bytes ``00 00 ff ff`` are left off on the wire.
"""

from __future__ import annotations

import codecs
import enum
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, NoReturn

from mypy_extensions import mypyc_attr

from daemonkit.errors import ConfigError, FrameTooLarge, ProtocolError
from daemonkit.framing.base import DEFAULT_MAX_FRAME, BytesLike, Framer, _to_bytes

__all__ = [
    "DEFAULT_MAX_MESSAGE",
    "MAX_CONTROL_PAYLOAD",
    "Close",
    "CloseCode",
    "Deflate",
    "MessageTooBig",
    "Ping",
    "Pong",
    "WebSocketError",
    "WebSocketFramer",
    "apply_mask",
]

# -- limits and codes ------------------------------------------------------------

# websockets' max_size and nginx's client_max_body_size are both 1 MiB
# (wsproto and Node's ws default to 100 MiB, which a hostile peer can fill).
DEFAULT_MAX_MESSAGE = DEFAULT_MAX_FRAME
"""Default ``max_message``: the longest message accepted, in bytes (1 MiB)."""

# RFC 6455 5.5: "All control frames MUST have a payload length of 125 bytes or less".
MAX_CONTROL_PAYLOAD = 125
"""Longest payload of a control frame (Ping, Pong, Close), in bytes."""

# The longest frame header: 2 bytes, an 8-byte extended length, a 4-byte mask.
_MAX_HEADER: Final = 14


class CloseCode(enum.IntEnum):
    """The close status codes of RFC 6455 7.4.1 this package sends or names."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    #: Never on the wire: a Close frame without a code reads as this one.
    NO_STATUS = 1005
    #: Never on the wire: the connection closed without a Close frame.
    ABNORMAL = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013


# RFC 6455 7.4.1 and the IANA registry: the codes a Close frame may carry.
# 1004, 1005, 1006 and 1015 are reserved; 1016-2999 are unassigned or for
# extensions, 3000-3999 registered, 4000-4999 private use.
_SENDABLE_BELOW_3000 = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)


def _valid_close_code(code: int) -> bool:
    return code in _SENDABLE_BELOW_3000 or 3000 <= code <= 4999


# -- errors ----------------------------------------------------------------------


class WebSocketError(ProtocolError):
    """The client broke RFC 6455; send a Close frame with ``code``, then close.

    ``code`` is 1002 (protocol error) or 1007 (invalid UTF-8); ``frames``
    lists the messages and control frames completed before the bad input.
    """

    def __init__(self, message: str, code: int = CloseCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = int(code)


class MessageTooBig(FrameTooLarge):
    """A message is longer than ``max_message``; close with ``code`` 1009."""

    # ClassVar: compiled, a bare class-body assignment would be taken for
    # an instance attribute's default, which this class never sets.
    code: ClassVar[int] = int(CloseCode.MESSAGE_TOO_BIG)


# -- control frames ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """A Ping frame from the client: answer it with a Pong of the same ``payload``."""

    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class Pong:
    """A Pong frame from the client, normally the answer to a Ping with ``payload``."""

    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class Close:
    """A Close frame from the client: echo it, then close the connection.

    ``code`` is :attr:`CloseCode.NO_STATUS` (1005) when the frame has no
    payload; ``reason`` is the decoded UTF-8 text, possibly empty.
    """

    code: int = 1005
    reason: str = ""


# -- permessage-deflate -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deflate:
    """The negotiated parameters of permessage-deflate (RFC 7692 7.1).

    * ``server_no_context_takeover``: the server resets its compressor after
      each message (costs ratio, saves nothing here: the compressor stays).
    * ``client_no_context_takeover``: the client resets its own; the
      decompressor is then reset after each message too.
    * ``server_max_window_bits``: the server compresses with a window of
      ``2**bits`` bytes, 9..15 (zlib cannot do 8 in raw mode).
    * ``mem_level``: zlib's ``memLevel`` for the compressor, 1..9.
    * ``level``: zlib's compression level, 0..9 (or -1 for its default).

    The decompressor always uses a 32 KiB window (``wbits=-15``), which
    reads what any client window (8..15 bits) produced.
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = 15
    mem_level: int = 8
    level: int = zlib.Z_DEFAULT_COMPRESSION

    def __post_init__(self) -> None:
        if not 9 <= self.server_max_window_bits <= 15:
            raise ConfigError(
                f"server_max_window_bits must be 9..15, got {self.server_max_window_bits}"
            )
        if not 1 <= self.mem_level <= 9:
            raise ConfigError(f"mem_level must be 1..9, got {self.mem_level}")
        if not -1 <= self.level <= 9:
            raise ConfigError(f"level must be -1..9, got {self.level}")

    def compressor(self) -> Any:
        """A new raw-DEFLATE compressor with these parameters."""
        return zlib.compressobj(
            self.level, zlib.DEFLATED, -self.server_max_window_bits, self.mem_level
        )


# The sync flush every compressed message ends with, left off on the wire.
_TAIL: Final = b"\x00\x00\xff\xff"


# -- masking ----------------------------------------------------------------------


def apply_mask(data: BytesLike, mask: bytes | bytearray) -> bytes:
    """Return *data* XOR the 4-byte *mask* repeated (masking and unmasking alike).

    Pure Python, by big-integer XOR: about 1 us for short payloads, 5 ms a
    MiB. The ``websockets`` package has a C version with this signature
    (``websockets.speedups.apply_mask``) about ten times faster on long
    payloads; pass it to :class:`WebSocketFramer` as ``apply_mask``.
    """
    n = len(data)
    if not n:
        return b""
    key = int.from_bytes((mask * ((n >> 2) + 1))[:n], "little")
    return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


# -- the framer -------------------------------------------------------------------

# Opcodes. (Final, here and below: compiled, a constant is inlined or kept
# in a C variable instead of being looked up in the module's dict.)
_CONT: Final = 0x0
_TEXT: Final = 0x1
_BINARY: Final = 0x2
_CLOSE: Final = 0x8
_PING: Final = 0x9
_PONG: Final = 0xA
# The first byte of an unfragmented, uncompressed text or binary frame.
_WHOLE_TEXT: Final = 0x81
_WHOLE_BINARY: Final = 0x82
_KNOWN_OPCODES: Final = frozenset({_CONT, _TEXT, _BINARY, _CLOSE, _PING, _PONG})
_OPCODE_NAMES: Final = {_CONT: "continuation", _TEXT: "text", _BINARY: "binary"}

_unpack_h: Final = struct.Struct("!H").unpack_from
_unpack_q: Final = struct.Struct("!Q").unpack_from
_pack_h: Final = struct.Struct("!BBH").pack
_pack_q: Final = struct.Struct("!BBQ").pack

# Headers of short unmasked server frames, built once: FIN + opcode, length.
_SHORT_TEXT: Final = tuple(bytes((0x80 | _TEXT, n)) for n in range(126))
_SHORT_BINARY: Final = tuple(bytes((0x80 | _BINARY, n)) for n in range(126))

_Mask = Callable[[bytes, bytes], bytes]
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")


def _header(first: int, length: int) -> bytes:
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return _pack_h(first, 126, length)
    return _pack_q(first, 127, length)


@mypyc_attr(allow_interpreted_subclasses=True)
class WebSocketFramer(Framer):
    """Frames are the messages of a client's WebSocket stream; see the module docstring.

    ``feed()`` returns, in stream order, ``str`` (a text message), ``bytes``
    (a binary message), :class:`Ping`, :class:`Pong` and :class:`Close`.
    What to do with them: deliver the messages, answer each Ping with
    ``encode_pong(ping.payload)``, note the Pongs (keepalive), and on a
    Close write ``encode_close`` (the echo) and close the connection.

    Settings, keyword-only:

    * *max_message*: the longest message accepted in bytes, fragments
      added up and decompressed (:class:`MessageTooBig`, close code 1009).
    * *deflate*: a :class:`Deflate` when permessage-deflate was
      negotiated; None (the default) refuses compressed frames (1002).
    * *apply_mask*: the unmasking function (see :func:`apply_mask`).

    A *max_message* below 1 raises :class:`~daemonkit.errors.ConfigError`.
    """

    __slots__ = (
        "_closed",
        "_compressor",
        "_decoder",
        "_decompressor",
        "_deflate",
        "_fragments",
        "_mask",
        "_max_message",
        "_message_compressed",
        "_message_opcode",
        "_message_size",
    )

    #: Bytes of masking key after each frame header this side reads: a
    #: client's frames are masked (4), a server's are not (the client framer: 0).
    _MASK_BYTES: ClassVar[int] = 4

    def __init__(
        self,
        *,
        # Any: checked by hand below, so that True or 1.5 get the same
        # TypeError compiled (where an int annotation converts True to 1).
        max_message: Any = DEFAULT_MAX_MESSAGE,
        deflate: Deflate | None = None,
        apply_mask: _Mask = apply_mask,
    ) -> None:
        if isinstance(max_message, bool) or not isinstance(max_message, int):
            raise TypeError(f"max_message must be an int, got {max_message!r}")
        if max_message < 1:
            raise ConfigError(f"max_message must be at least 1 byte, got {max_message}")
        if deflate is not None and not isinstance(deflate, Deflate):
            raise TypeError(f"deflate must be a Deflate or None, got {deflate!r}")
        super().__init__(max_message=max_message, deflate=deflate, apply_mask=apply_mask)
        self._max_message: int = max_message
        self._deflate = deflate
        self._mask = apply_mask
        self._closed = False
        # The fragmented message being read: its opcode (None: none), parts, size.
        self._message_opcode: int | None = None
        self._message_compressed = False
        self._message_size = 0
        self._fragments: list[Any] = []
        self._decoder: codecs.IncrementalDecoder | None = None
        self._compressor: Any = deflate.compressor() if deflate is not None else None
        self._decompressor: Any = zlib.decompressobj(-15) if deflate is not None else None

    @property
    def max_message(self) -> int:
        """The longest message accepted, in bytes (decompressed, fragments added up)."""
        return self._max_message

    @property
    def deflate(self) -> Deflate | None:
        """The permessage-deflate parameters, or None when compression is off."""
        return self._deflate

    @property
    def closed(self) -> bool:
        """True once a Close frame was read: later input is ignored."""
        return self._closed

    # -- reading -----------------------------------------------------------------

    def feed(self, data: BytesLike) -> list[Any]:
        """Append *data* and return the messages and control frames it completes.

        A partial frame stays buffered for the next call; after a
        :class:`Close` everything is ignored and the result is empty.

        Raises :class:`WebSocketError` or :class:`MessageTooBig` when the
        client breaks the protocol or the size limit, as soon as the frame
        header shows it (the payload for UTF-8 and Close checks). Its
        ``frames`` lists what came before in this call and its ``code`` is
        the close code: deliver the frames, write ``encode_close(exc.code)``
        and close. The framer is broken from then on.
        """
        if self._buffer or self._error is not None or self._closed or type(data) is not bytes:
            return self._feed_slow(data)
        return self._split(data, [])

    def _feed_slow(self, data: BytesLike) -> list[Any]:
        """A broken or closed framer, non-bytes input, or data after a partial frame."""
        data = self._checked_input(data)
        if self._closed:
            return []
        buf = self._buffer
        if len(buf) < _MAX_HEADER:
            # At most a header's worth carried over: re-read it from scratch.
            data = bytes(buf) + data
            buf.clear()
            return self._split(data, [])
        # A whole header is buffered: it was checked when first read. Append
        # up to the frame's end, so a long frame in many reads costs linear time.
        mask = self._MASK_BYTES
        length = buf[1] & 0x7F
        if length == 126:
            length = _unpack_h(buf, 2)[0] + 4 + mask
        elif length == 127:
            length = _unpack_q(buf, 2)[0] + 10 + mask
        else:
            length += 2 + mask
        missing = length - len(buf)
        if len(data) < missing:
            buf += data
            return []
        buf += data[:missing]
        frame = bytes(buf)
        buf.clear()
        frames: list[Any] = []
        self._split(frame, frames)
        if self._closed or not len(data) - missing:
            return frames
        return self._split(data[missing:], frames)

    def _split(self, data: bytes, frames: list[Any]) -> list[Any]:
        """Read the frames of *data* into *frames*; the buffer must be empty."""
        total = len(data)
        pos = 0
        unmask = self._mask
        while total - pos >= 2:
            first = data[pos]
            second = data[pos + 1]
            length = second & 0x7F
            if length < 126:
                start = pos + 6
            elif length == 126:
                if total - pos < 4:
                    break
                length = _unpack_h(data, pos + 2)[0]
                start = pos + 8
            else:
                if total - pos < 10:
                    break
                length = _unpack_q(data, pos + 2)[0]
                start = pos + 14
            if (
                (first != _WHOLE_TEXT and first != _WHOLE_BINARY)
                or second < 0x80
                or length > self._max_message
                or self._message_opcode is not None
            ):
                # Anything but a whole, uncompressed, masked, short enough data frame.
                self._check_header(first, second, length, frames)
            end = start + length
            if end > total:
                break
            payload = unmask(data[start:end], data[start - 4 : start])
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
        """Raise for a frame header that breaks a rule; return for a legal one."""
        opcode = first & 0x0F
        if opcode not in _KNOWN_OPCODES:
            self._protocol_error(f"reserved opcode {opcode:#x}", frames)
        rsv = first & 0x70
        # RSV1 marks the first frame of a compressed message (RFC 7692 6).
        if rsv and (rsv != 0x40 or self._deflate is None or opcode not in (_TEXT, _BINARY)):
            what = "RSV1 without permessage-deflate" if rsv == 0x40 else f"{rsv >> 4:#x}"
            if rsv == 0x40 and self._deflate is not None:
                what = f"RSV1 on a {_opcode_name(opcode)} frame"
            self._protocol_error(f"reserved bits set: {what}", frames)
        if not second & 0x80:
            self._protocol_error("client frame is not masked (RFC 6455 5.1)", frames)
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

    def _slow_frame(self, first: int, payload: bytes, frames: list[Any]) -> None:
        """Handle a checked control, fragment or compressed frame."""
        opcode = first & 0x0F
        if opcode == _PING:
            frames.append(Ping(payload))
        elif opcode == _PONG:
            frames.append(Pong(payload))
        elif opcode == _CLOSE:
            frames.append(self._read_close(payload, frames))
            self._closed = True
        else:
            self._fragment(first, payload, frames)

    def _fragment(self, first: int, payload: bytes, frames: list[Any]) -> None:
        """Add a data frame to the message it starts or continues."""
        opcode = first & 0x0F
        if opcode != _CONT:
            self._message_opcode = opcode
            self._message_compressed = bool(first & 0x40)
            self._message_size = 0
            if opcode == _TEXT:
                self._decoder = _Utf8Decoder()
        fin = first & 0x80
        if self._message_compressed:
            payload = self._inflate(payload + _TAIL if fin else payload, frames)
        else:
            self._message_size += len(payload)
        if self._decoder is not None:
            try:
                self._fragments.append(self._decoder.decode(payload, bool(fin)))
            except UnicodeDecodeError as exc:
                self._bad_utf8(exc, frames)
        else:
            self._fragments.append(payload)
        if not fin:
            return
        parts = self._fragments
        if self._decoder is not None:
            frames.append(parts[0] if len(parts) == 1 else "".join(parts))
        else:
            frames.append(parts[0] if len(parts) == 1 else b"".join(parts))
        self._fragments = []
        self._decoder = None
        self._message_opcode = None
        self._message_size = 0
        if self._message_compressed and self._deflate is not None:
            self._message_compressed = False
            if self._deflate.client_no_context_takeover:
                self._decompressor = zlib.decompressobj(-15)

    def _inflate(self, data: bytes, frames: list[Any]) -> bytes:
        """Decompress *data*, at most up to one byte past ``max_message``."""
        room = self._max_message - self._message_size
        try:
            out: bytes = self._decompressor.decompress(data, room + 1)
        except zlib.error as exc:
            self._protocol_error(f"bad compressed data: {exc}", frames)
        if len(out) > room:
            self._fail(
                MessageTooBig(
                    f"message longer than max_message={self._max_message} bytes once decompressed"
                ),
                frames,
            )
        self._message_size += len(out)
        return out

    def _read_close(self, payload: bytes, frames: list[Any]) -> Close:
        if not payload:
            return Close()
        if len(payload) == 1:
            self._protocol_error("Close frame with a 1-byte payload", frames)
        code = _unpack_h(payload)[0]
        if not _valid_close_code(code):
            self._protocol_error(f"Close frame with the invalid code {code}", frames)
        try:
            reason = payload[2:].decode()
        except UnicodeDecodeError as exc:
            self._bad_utf8(exc, frames, "a close reason")
        return Close(code, reason)

    def _protocol_error(self, message: str, frames: list[Any]) -> NoReturn:
        self._fail(WebSocketError(message), frames)

    def _bad_utf8(
        self, exc: UnicodeDecodeError, frames: list[Any], where: str = "a text message"
    ) -> NoReturn:
        self._fail(
            WebSocketError(
                f"invalid UTF-8 in {where} ({exc.reason} at byte {exc.start})",
                CloseCode.INVALID_DATA,
            ),
            frames,
        )

    def _fail(self, error: Any, frames: list[Any]) -> NoReturn:
        self._fragments = []
        self._decoder = None
        super()._fail(error, frames)

    def _raise_broken(self) -> NoReturn:
        error = self._error
        assert error is not None
        again: Any = type(error)(f"framer already failed: {error}")
        again.code = getattr(error, "code", CloseCode.PROTOCOL_ERROR)
        again.frames = []
        raise again

    # -- writing -----------------------------------------------------------------

    def encode(self, frame: Any) -> bytes:
        """Return one unmasked frame carrying *frame*: text for ``str``, binary for bytes.

        With permessage-deflate the message is compressed (RSV1 set).
        Raises :class:`TypeError` for anything else; ``max_message`` is not
        checked (it bounds what this side reads). A ``str`` with lone
        surrogates raises :class:`UnicodeEncodeError` (a ValueError).
        """
        if type(frame) is str:
            payload = frame.encode()
            if self._compressor is None:
                n = len(payload)
                if n < 126:
                    return _SHORT_TEXT[n] + payload
                return _header(0x80 | _TEXT, n) + payload
            return self._compressed(_TEXT, payload)
        payload = frame if type(frame) is bytes else _to_bytes(frame)
        if self._compressor is None:
            n = len(payload)
            if n < 126:
                return _SHORT_BINARY[n] + payload
            return _header(0x80 | _BINARY, n) + payload
        return self._compressed(_BINARY, payload)

    def _compressed(self, opcode: int, payload: bytes) -> bytes:
        compressor = self._compressor
        data: bytes = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if data.endswith(_TAIL):
            data = data[:-4]
        deflate = self._deflate
        if deflate is not None and deflate.server_no_context_takeover:
            self._compressor = deflate.compressor()
        return _header(0xC0 | opcode, len(data)) + data

    def encode_ping(self, payload: BytesLike = b"") -> bytes:
        """Return a Ping frame; ValueError if *payload* is over 125 bytes."""
        return _control(_PING, _to_bytes(payload))

    def encode_pong(self, payload: BytesLike = b"") -> bytes:
        """Return a Pong frame (the answer to a Ping with the same *payload*)."""
        return _control(_PONG, _to_bytes(payload))

    def encode_close(self, code: int = CloseCode.NORMAL, reason: str = "") -> bytes:
        """Return a Close frame with *code* and *reason*.

        :attr:`CloseCode.NO_STATUS` (1005) gives an empty Close frame (the
        echo of one). Raises :class:`ValueError` for a code a Close frame
        may not carry (1004, 1006, 1015, 1016..2999, outside 1000..4999) or
        a reason over 123 bytes of UTF-8.
        """
        if code == CloseCode.NO_STATUS and not reason:
            return _control(_CLOSE, b"")
        if not _valid_close_code(code):
            raise ValueError(f"{code} is not a close code a Close frame may carry")
        return _control(_CLOSE, struct.pack("!H", code) + reason.encode())


def _control(opcode: int, payload: bytes) -> bytes:
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise ValueError(
            f"control frame payload of {len(payload)} bytes, more than {MAX_CONTROL_PAYLOAD}"
            + (" (the close reason takes at most 123)" if opcode == _CLOSE else "")
        )
    return bytes((0x80 | opcode, len(payload))) + payload


def _opcode_name(opcode: int) -> str:
    return {_CLOSE: "Close", _PING: "Ping", _PONG: "Pong"}.get(
        opcode, _OPCODE_NAMES.get(opcode, f"{opcode:#x}")
    )
