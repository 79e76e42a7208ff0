"""WebSocketFramer: each case fed whole, one byte at a time and with trailing data,
split invariance, a fuzz target, permessage-deflate, and the encoders.

Client frames are built here by :func:`client_frame`, independently of the
framer (and able to break every rule); server frames are read back with the
``websockets`` package's own parser.
"""

from __future__ import annotations

import dataclasses
import itertools
import struct
import zlib
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.frames import Frame
from websockets.speedups import apply_mask as c_apply_mask
from websockets.streams import StreamReader

from daemonkit.errors import ConfigError, FrameTooLarge, FramingError, ProtocolError
from daemonkit.framing.websocket import (
    DEFAULT_MAX_MESSAGE,
    MAX_CONTROL_PAYLOAD,
    Close,
    CloseCode,
    Deflate,
    MessageTooBig,
    Ping,
    Pong,
    WebSocketError,
    WebSocketFramer,
    apply_mask,
)
from tests.framing.test_base import CountingBuffer

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MASK = b"\x37\xfa\x21\x3d"


def xor(data: bytes, mask: bytes) -> bytes:
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def client_frame(
    opcode: int,
    payload: bytes | str = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length: int | None = None,
    form: int | None = None,
) -> bytes:
    """One client frame, rules optional: *length* overrides the announced length,
    *form* forces the 7-bit (0), 16-bit (126) or 64-bit (127) length encoding."""
    data = payload.encode() if isinstance(payload, str) else payload
    n = len(data) if length is None else length
    if form is None:
        form = 0 if n < 126 else 126 if n < 65536 else 127
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    flag = 0x80 if masked else 0
    if form == 0:
        head += bytes([flag | n])
    elif form == 126:
        head += bytes([flag | 126]) + struct.pack("!H", n)
    else:
        head += bytes([flag | 127]) + struct.pack("!Q", n)
    return head + MASK + xor(data, MASK) if masked else head + data


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def compress(messages: Iterable[bytes], *, reset: bool = False) -> list[bytes]:
    """What a permessage-deflate client sends for each message (tail stripped)."""
    out = []
    compressor = zlib.compressobj(wbits=-15)
    for message in messages:
        if reset:
            compressor = zlib.compressobj(wbits=-15)
        data = compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(b"\x00\x00\xff\xff")
        out.append(data[:-4])
    return out


# -- feeding -----------------------------------------------------------------------

Outcome = tuple[list[Any], type[FramingError] | None, int | None]


def feed_chunks(framer: WebSocketFramer, chunks: Iterable[bytes]) -> Outcome:
    """Feed *chunks*; return everything delivered (``exc.frames`` included), the error and code."""
    frames: list[Any] = []
    for chunk in chunks:
        try:
            got = framer.feed(chunk)
        except FramingError as exc:
            frames += exc.frames
            return frames, type(exc), exc.code  # type: ignore[attr-defined]
        assert all(type(f) in (str, bytes, Ping, Pong, Close) for f in got), got
        frames += got
    return frames, None, None


def whole(data: bytes) -> list[bytes]:
    return [data]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


WAYS: dict[str, Callable[[bytes], list[bytes]]] = {"whole": whole, "bytewise": bytewise}

# Both unmasking functions must behave the same.
PROTOTYPES = {
    "py": WebSocketFramer(max_message=1000),
    "c": WebSocketFramer(max_message=1000, apply_mask=c_apply_mask),
}

# -- good streams --------------------------------------------------------------------

LONG = b"x" * 300
GOOD: list[tuple[str, bytes, list[Any]]] = [
    ("empty stream", b"", []),
    ("text", client_frame(TEXT, "hello"), ["hello"]),
    ("empty text", client_frame(TEXT), [""]),
    ("non-ascii text", client_frame(TEXT, "héllo ☃"), ["héllo ☃"]),
    ("binary", client_frame(BINARY, b"\x00\xff"), [b"\x00\xff"]),
    ("empty binary", client_frame(BINARY), [b""]),
    ("16-bit length", client_frame(BINARY, LONG), [LONG]),
    ("64-bit length", client_frame(TEXT, "hi", form=127), ["hi"]),
    ("16-bit length, short", client_frame(TEXT, "hi", form=126), ["hi"]),
    ("max_message exactly", client_frame(BINARY, b"m" * 1000), [b"m" * 1000]),
    (
        "fragmented text",
        client_frame(TEXT, "ab", fin=False)
        + client_frame(CONT, "cd", fin=False)
        + client_frame(CONT, "ef"),
        ["abcdef"],
    ),
    (
        "fragmented binary, empty parts",
        client_frame(BINARY, fin=False) + client_frame(CONT, b"\x01") + client_frame(BINARY),
        [b"\x01", b""],
    ),
    (
        "a character split across fragments",
        client_frame(TEXT, "é".encode()[:1], fin=False) + client_frame(CONT, "é".encode()[1:]),
        ["é"],
    ),
    (
        "control frames between fragments",
        client_frame(TEXT, "a", fin=False)
        + client_frame(PING, b"p")
        + client_frame(PONG, b"q")
        + client_frame(CONT, "b"),
        [Ping(b"p"), Pong(b"q"), "ab"],
    ),
    (
        "fragments add up to max_message",
        client_frame(BINARY, b"m" * 500, fin=False) + client_frame(CONT, b"m" * 500),
        [b"m" * 1000],
    ),
    ("ping", client_frame(PING), [Ping()]),
    ("longest ping", client_frame(PING, b"p" * 125), [Ping(b"p" * 125)]),
    ("pong", client_frame(PONG, b"\x00"), [Pong(b"\x00")]),
    ("messages", client_frame(TEXT, "a") + client_frame(BINARY, b"b"), ["a", b"b"]),
]
# Streams that end with a Close frame: what follows is ignored.
CLOSING: list[tuple[str, bytes, list[Any]]] = [
    ("close without code", client_frame(CLOSE), [Close(1005, "")]),
    ("close", client_frame(CLOSE, close_payload(1000, b"bye")), [Close(1000, "bye")]),
    (
        "close with a private code",
        client_frame(TEXT, "x") + client_frame(CLOSE, close_payload(4999, "é".encode())),
        ["x", Close(4999, "é")],
    ),
    ("close 3000", client_frame(CLOSE, close_payload(3000)), [Close(3000, "")]),
    ("close 1014", client_frame(CLOSE, close_payload(1014)), [Close(1014, "")]),
]

# -- bad streams: (name, stream, frames before the error, error, close code) ---------------

BAD: list[tuple[str, bytes, list[Any], type[FramingError], int]] = [
    ("unmasked", client_frame(TEXT, "hi", masked=False), [], WebSocketError, 1002),
    (
        "unmasked after good",
        client_frame(TEXT, "a") + client_frame(BINARY, b"b", masked=False),
        ["a"],
        WebSocketError,
        1002,
    ),
    ("unmasked ping", client_frame(PING, masked=False), [], WebSocketError, 1002),
    ("rsv1 without deflate", client_frame(TEXT, "x", rsv=4), [], WebSocketError, 1002),
    ("rsv2", client_frame(TEXT, "x", rsv=2), [], WebSocketError, 1002),
    ("rsv3", client_frame(BINARY, b"x", rsv=1), [], WebSocketError, 1002),
    ("opcode 3", client_frame(3, b"x"), [], WebSocketError, 1002),
    ("opcode 0xb", client_frame(0xB), [], WebSocketError, 1002),
    ("opcode 0xf", client_frame(0xF, fin=False), [], WebSocketError, 1002),
    ("fragmented ping", client_frame(PING, b"p", fin=False), [], WebSocketError, 1002),
    ("fragmented close", client_frame(CLOSE, fin=False), [], WebSocketError, 1002),
    ("ping of 126 bytes", client_frame(PING, b"p" * 126), [], WebSocketError, 1002),
    ("pong of 126 bytes", client_frame(PONG, b"p" * 126), [], WebSocketError, 1002),
    ("close over 125 bytes", client_frame(CLOSE, length=200), [], WebSocketError, 1002),
    ("lone continuation", client_frame(CONT, "x"), [], WebSocketError, 1002),
    (
        "continuation after a whole message",
        client_frame(TEXT, "a") + client_frame(CONT, "b"),
        ["a"],
        WebSocketError,
        1002,
    ),
    (
        "new message inside a fragmented one",
        client_frame(TEXT, "a", fin=False) + client_frame(BINARY, b"b"),
        [],
        WebSocketError,
        1002,
    ),
    (
        "rsv1 on a continuation",
        client_frame(TEXT, "a", fin=False) + client_frame(CONT, "b", rsv=4),
        [],
        WebSocketError,
        1002,
    ),
    ("too long", client_frame(BINARY, b"m" * 1001), [], MessageTooBig, 1009),
    ("too long, header only", client_frame(BINARY, length=1001)[:8], [], MessageTooBig, 1009),
    (
        "64-bit length, top bit set",
        client_frame(BINARY, length=1 << 63)[:10],
        [],
        MessageTooBig,
        1009,
    ),
    (
        "fragments add up to too long",
        client_frame(TEXT, "m" * 600, fin=False) + client_frame(CONT, "m" * 401),
        [],
        MessageTooBig,
        1009,
    ),
    (
        "too long after a ping",
        client_frame(PING) + client_frame(TEXT, length=5000)[:8],
        [Ping()],
        MessageTooBig,
        1009,
    ),
    ("invalid utf-8", client_frame(TEXT, b"\xff"), [], WebSocketError, 1007),
    ("surrogate in utf-8", client_frame(TEXT, b"\xed\xa0\x80"), [], WebSocketError, 1007),
    ("overlong utf-8", client_frame(TEXT, b"\xc0\xaf"), [], WebSocketError, 1007),
    (
        "invalid utf-8 in a first fragment",
        client_frame(TEXT, b"ok\xff", fin=False),
        [],
        WebSocketError,
        1007,
    ),
    (
        "text ends inside a character",
        client_frame(TEXT, "é".encode()[:1], fin=False) + client_frame(CONT, b""),
        [],
        WebSocketError,
        1007,
    ),
    ("close of 1 byte", client_frame(CLOSE, b"\x03"), [], WebSocketError, 1002),
    ("close 1005", client_frame(CLOSE, close_payload(1005)), [], WebSocketError, 1002),
    ("close 1006", client_frame(CLOSE, close_payload(1006)), [], WebSocketError, 1002),
    ("close 999", client_frame(CLOSE, close_payload(999)), [], WebSocketError, 1002),
    ("close 2000", client_frame(CLOSE, close_payload(2000)), [], WebSocketError, 1002),
    ("close 5000", client_frame(CLOSE, close_payload(5000)), [], WebSocketError, 1002),
    (
        "close reason not utf-8",
        client_frame(CLOSE, close_payload(1000, b"\xff")),
        [],
        WebSocketError,
        1007,
    ),
]


def names(cases: list[tuple[Any, ...]]) -> list[str]:
    return [case[0] for case in cases]


@pytest.fixture(params=sorted(PROTOTYPES))
def framer(request: pytest.FixtureRequest) -> WebSocketFramer:
    return PROTOTYPES[request.param].fresh()


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
@pytest.mark.parametrize(("name", "stream", "frames"), GOOD + CLOSING, ids=names(GOOD + CLOSING))
def test_good(
    framer: WebSocketFramer, name: str, stream: bytes, frames: list[Any], way: Callable[..., Any]
) -> None:
    assert feed_chunks(framer, way(stream)) == (frames, None, None)
    assert framer.buffered == 0


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
@pytest.mark.parametrize("cut", [1, 7, -1], ids=["header", "mask", "payload"])
@pytest.mark.parametrize(("name", "stream", "frames"), GOOD, ids=names(GOOD))
def test_good_with_trailing_data(
    framer: WebSocketFramer,
    name: str,
    stream: bytes,
    frames: list[Any],
    way: Callable[..., Any],
    cut: int,
) -> None:
    following = client_frame(TEXT, "next" * 40)
    trailing, rest = following[:cut], following[cut:]
    assert feed_chunks(framer, way(stream + trailing)) == (frames, None, None)
    assert framer.buffered == len(trailing)
    assert framer.feed(rest) == ["next" * 40]
    assert framer.buffered == 0


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
@pytest.mark.parametrize(("name", "stream", "frames"), CLOSING, ids=names(CLOSING))
def test_input_after_close_is_ignored(
    framer: WebSocketFramer, name: str, stream: bytes, frames: list[Any], way: Callable[..., Any]
) -> None:
    junk = client_frame(TEXT, "late") + b"\xff\x00garbage" + client_frame(TEXT, "x", masked=False)
    assert feed_chunks(framer, way(stream + junk)) == (frames, None, None)
    assert framer.closed
    assert framer.feed(b"more") == []
    assert framer.buffered == 0


@pytest.mark.parametrize("way", [*WAYS.values(), "trailing"], ids=[*WAYS.keys(), "trailing"])
@pytest.mark.parametrize(("name", "stream", "frames", "error", "code"), BAD, ids=names(BAD))
def test_bad(
    framer: WebSocketFramer,
    name: str,
    stream: bytes,
    frames: list[Any],
    error: type[FramingError],
    code: int,
    way: Callable[..., Any] | str,
) -> None:
    chunks = [stream + client_frame(TEXT, "after")] if way == "trailing" else way(stream)  # type: ignore[operator]
    assert feed_chunks(framer, chunks) == (frames, error, code)
    assert framer.buffered == 0
    # Broken from then on: the same kind of error, with the same code.
    with pytest.raises(error) as info:
        framer.feed(client_frame(TEXT, "ok"))
    assert info.value.frames == []
    assert info.value.code == code  # type: ignore[attr-defined]


def test_error_classes() -> None:
    assert issubclass(WebSocketError, ProtocolError)
    assert issubclass(MessageTooBig, FrameTooLarge)
    assert MessageTooBig("x").code == CloseCode.MESSAGE_TOO_BIG == 1009
    assert WebSocketError("x").code == 1002
    assert WebSocketError("x", CloseCode.INVALID_DATA).code == 1007


def test_errors_say_what_is_wrong() -> None:
    cases = {
        client_frame(TEXT, "x", masked=False): "not masked",
        client_frame(BINARY, length=2000)[:8]: r"max_message=1000 bytes",
        client_frame(PING, b"p" * 126): "Ping frame of 126 bytes, more than 125",
        client_frame(CONT): "continuation frame without a message",
        client_frame(TEXT, b"\xff"): "invalid UTF-8 in a text message",
        client_frame(CLOSE, close_payload(1000, b"\xff")): "invalid UTF-8 in a close reason",
        client_frame(CLOSE, close_payload(1006)): "invalid code 1006",
        client_frame(7): "reserved opcode 0x7",
        client_frame(TEXT, rsv=4): "RSV1 without permessage-deflate",
    }
    for stream, message in cases.items():
        with pytest.raises(FramingError, match=message):
            WebSocketFramer(max_message=1000).feed(stream)


def test_oversize_header_raises_before_the_payload() -> None:
    framer = WebSocketFramer(max_message=1000)
    header = client_frame(BINARY, length=1 << 40)[:14]
    assert framer.feed(header[:9]) == []
    with pytest.raises(MessageTooBig):
        framer.feed(header[9:])
    assert framer.buffered == 0


def test_partial_frames_are_buffered_linearly() -> None:
    # One byte at a time, a frame costs a bounded re-read of its header per
    # read and one append per payload byte, never a rescan of the buffer.
    framer = WebSocketFramer(max_message=1 << 20)
    framer._buffer = counting = CountingBuffer()
    stream = client_frame(BINARY, b"z" * 100_000)
    for i in range(len(stream) - 1):
        assert framer.feed(stream[i : i + 1]) == []
    assert framer.feed(stream[-1:]) == [b"z" * 100_000]
    assert framer._buffer is counting
    assert counting.touched < 3 * len(stream)


def test_settings() -> None:
    assert WebSocketFramer().max_message == DEFAULT_MAX_MESSAGE == 1 << 20
    assert WebSocketFramer().deflate is None
    with pytest.raises(ConfigError, match="at least 1"):
        WebSocketFramer(max_message=0)
    with pytest.raises(TypeError):
        WebSocketFramer(max_message=1.5)
    with pytest.raises(TypeError):
        WebSocketFramer(max_message=True)  # an int to Python, refused on both cores
    with pytest.raises(TypeError):
        WebSocketFramer(deflate=True)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="9..15"):
        Deflate(server_max_window_bits=8)
    with pytest.raises(ConfigError, match="mem_level"):
        Deflate(mem_level=0)
    with pytest.raises(ConfigError, match="level"):
        Deflate(level=10)
    framer = WebSocketFramer(max_message=10, deflate=Deflate())
    fresh = framer.fresh()
    assert (fresh.max_message, fresh.deflate) == (10, Deflate())
    assert "max_message=10" in repr(framer)


def test_non_bytes_input() -> None:
    framer = WebSocketFramer()
    assert framer.feed(bytearray(client_frame(TEXT, "a"))) == ["a"]
    assert framer.feed(memoryview(client_frame(BINARY, b"b"))) == [b"b"]
    assert framer.encode_ping(bytearray(b"p")) == framer.encode_ping(b"p")
    assert framer.encode_pong(memoryview(b"p")) == framer.encode_pong(b"p")
    with pytest.raises(TypeError):
        framer.feed("text")  # type: ignore[arg-type]


def test_apply_mask() -> None:
    for n in (0, 1, 3, 4, 5, 127, 1000):
        data = bytes(range(256)) * 4
        assert apply_mask(data[:n], MASK) == xor(data[:n], MASK) == c_apply_mask(data[:n], MASK)
    # Any bytes-like payload, as the C version takes (compiled too).
    assert apply_mask(bytearray(b"abcd"), MASK) == apply_mask(memoryview(b"abcd"), MASK)
    assert apply_mask(bytearray(b"abcd"), MASK) == c_apply_mask(b"abcd", MASK)


# -- encoding ------------------------------------------------------------------------------


class KeepRsv1:
    """A stand-in extension for the websockets parser: accept RSV1, note it in ``seen``."""

    def __init__(self) -> None:
        self.seen: list[bool] = []

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        self.seen.append(frame.rsv1)
        return dataclasses.replace(frame, rsv1=False)


def read_server_frames(data: bytes) -> list[tuple[Frame, bool]]:
    """Parse server frames with the websockets package's client-side reader.

    Returns each frame with its RSV1 bit (see :class:`KeepRsv1`).
    """
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames = []
    rsv1 = KeepRsv1()
    while reader.buffer:
        parser = Frame.parse(
            reader.read_exact,
            mask=False,
            max_size=None,
            extensions=[rsv1],  # type: ignore[list-item]
        )
        try:
            while True:
                next(parser)
        except StopIteration as done:
            frames.append((done.value, rsv1.seen[-1]))
    return frames


@pytest.mark.parametrize(
    "message", ["", "hi", "é" * 100, "x" * 70_000, b"", b"\x00" * 125, b"b" * 126, b"c" * 65_536]
)
def test_encode(message: str | bytes) -> None:
    [(frame, rsv1)] = read_server_frames(WebSocketFramer().encode(message))
    assert frame.fin and not rsv1
    assert frame.opcode == (TEXT if isinstance(message, str) else BINARY)
    expected = message.encode() if isinstance(message, str) else message
    assert frame.data == expected


def test_encode_refuses_what_is_not_a_message() -> None:
    framer = WebSocketFramer()
    with pytest.raises(TypeError):
        framer.encode(12)
    with pytest.raises(UnicodeEncodeError):
        framer.encode("\ud800")
    assert framer.encode(bytearray(b"ab")) == b"\x82\x02ab"


def test_control_encoders() -> None:
    framer = WebSocketFramer()
    assert framer.encode_ping(b"abc") == b"\x89\x03abc"
    assert framer.encode_pong(b"") == b"\x8a\x00"
    assert framer.encode_close() == b"\x88\x02\x03\xe8"
    assert framer.encode_close(CloseCode.NO_STATUS) == b"\x88\x00"
    assert framer.encode_close(4000, "é") == b"\x88\x04\x0f\xa0\xc3\xa9"
    assert framer.encode_ping(b"p" * MAX_CONTROL_PAYLOAD)[1] == 125
    with pytest.raises(ValueError, match="more than 125"):
        framer.encode_ping(b"p" * 126)
    with pytest.raises(ValueError, match="at most 123"):
        framer.encode_close(1000, "r" * 124)
    for code in (999, 1004, 1005, 1006, 1015, 2999, 5000):
        with pytest.raises(ValueError, match="not a close code"):
            framer.encode_close(code, "x")


# -- permessage-deflate ------------------------------------------------------------------------


def test_deflate_reads_compressed_messages_with_context_takeover() -> None:
    framer = WebSocketFramer(deflate=Deflate())
    texts = [b"hello hello hello", b"hello hello hello", b"\xe2\x98\x83" * 10]
    parts = compress(texts)
    assert len(parts[1]) < len(parts[0])  # the second one refers to the first
    stream = client_frame(TEXT, parts[0], rsv=4) + client_frame(BINARY, parts[1], rsv=4)
    stream += client_frame(TEXT, parts[2], rsv=4) + client_frame(TEXT, "plain")
    expected = [texts[0].decode(), texts[1], "☃" * 10, "plain"]
    assert framer.feed(stream) == expected
    assert feed_chunks(framer.fresh(), bytewise(stream)) == (expected, None, None)


def test_deflate_fragmented_message() -> None:
    [data] = compress([b"abcdefgh" * 100])
    stream = client_frame(TEXT, data[:5], rsv=4, fin=False) + client_frame(CONT, data[5:])
    assert WebSocketFramer(deflate=Deflate()).feed(stream) == ["abcdefgh" * 100]


def test_deflate_client_no_context_takeover_resets_the_decompressor() -> None:
    framer = WebSocketFramer(deflate=Deflate(client_no_context_takeover=True))
    parts = compress([b"same same", b"same same"], reset=True)
    stream = b"".join(client_frame(BINARY, part, rsv=4) for part in parts)
    assert framer.feed(stream) == [b"same same"] * 2


def test_deflate_bomb_stops_at_max_message() -> None:
    [bomb] = compress([b"\x00" * 10_000_000])
    assert len(bomb) < 11_000
    framer = WebSocketFramer(max_message=20_000, deflate=Deflate())
    with pytest.raises(MessageTooBig, match="once decompressed"):
        framer.feed(client_frame(BINARY, bomb, rsv=4))


def test_deflate_garbage_is_a_protocol_error() -> None:
    framer = WebSocketFramer(deflate=Deflate())
    with pytest.raises(WebSocketError, match="bad compressed data") as info:
        framer.feed(client_frame(BINARY, b"\xff\xff\xff\xff", rsv=4))
    assert info.value.code == 1002


def test_deflate_rsv1_on_a_control_frame() -> None:
    with pytest.raises(WebSocketError, match="RSV1 on a Ping frame"):
        WebSocketFramer(deflate=Deflate()).feed(client_frame(PING, rsv=4))


@pytest.mark.parametrize("takeover", [True, False])
def test_deflate_encode(takeover: bool) -> None:
    framer = WebSocketFramer(
        deflate=Deflate(server_no_context_takeover=not takeover, server_max_window_bits=10)
    )
    decompressor = zlib.decompressobj(wbits=-15)
    sizes = []
    for message in ["repeat " * 20, "repeat " * 20, b"\x01\x02" * 1000]:
        [(frame, rsv1)] = read_server_frames(framer.encode(message))
        assert rsv1 and frame.fin
        if not takeover:
            decompressor = zlib.decompressobj(wbits=-15)
        data = decompressor.decompress(frame.data + b"\x00\x00\xff\xff")
        assert data == (message.encode() if isinstance(message, str) else message)
        sizes.append(len(frame.data))
    assert (sizes[1] < sizes[0]) is takeover


# -- properties ----------------------------------------------------------------------------------

SETTINGS = settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_SETTINGS = settings(SETTINGS, max_examples=150)

messages = st.one_of(st.text(max_size=40), st.binary(max_size=300))
controls = st.one_of(
    st.binary(max_size=125).map(Ping),
    st.binary(max_size=125).map(Pong),
)


@st.composite
def conversation(draw: Callable[..., Any]) -> tuple[bytes, list[Any]]:
    """A valid client stream: messages (some fragmented) and control frames."""
    stream = b""
    expected: list[Any] = []
    for item in draw(st.lists(st.one_of(messages, controls), max_size=8)):
        if isinstance(item, Ping | Pong):
            stream += client_frame(PING if isinstance(item, Ping) else PONG, item.payload)
            expected.append(item)
            continue
        data = item.encode() if isinstance(item, str) else item
        cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=3)))
        pieces = split_at(data, cuts)
        for index, piece in enumerate(pieces):
            opcode = (TEXT if isinstance(item, str) else BINARY) if index == 0 else CONT
            stream += client_frame(opcode, piece, fin=index == len(pieces) - 1)
        expected.append(item)
    return stream, expected


def cut(draw: Callable[..., Any], data: bytes) -> list[bytes]:
    if draw(st.booleans()):
        return bytewise(data)
    return split_at(data, draw(st.lists(st.integers(0, len(data)), max_size=12)))


@SETTINGS
@given(data=st.data(), case=conversation())
def test_any_split_of_a_valid_stream_gives_the_same_frames(
    data: st.DataObject, case: tuple[bytes, list[Any]]
) -> None:
    stream, expected = case
    framer = WebSocketFramer(max_message=1000, apply_mask=c_apply_mask)
    partial = client_frame(BINARY, b"p" * 200)
    partial = partial[: data.draw(st.integers(0, len(partial) - 1))]
    assert feed_chunks(framer, cut(data.draw, stream + partial)) == (expected, None, None)
    assert framer.buffered == len(partial)


@SETTINGS
@given(data=st.data(), case=conversation(), bad=st.sampled_from(BAD))
def test_any_split_of_a_bad_stream_gives_the_same_frames_and_error(
    data: st.DataObject, case: tuple[bytes, list[Any]], bad: tuple[Any, ...]
) -> None:
    stream, expected = case
    _, bad_stream, before, error, code = bad
    full = stream + bad_stream + data.draw(st.binary(max_size=20))
    whole_outcome = feed_chunks(WebSocketFramer(max_message=1000), [full])
    assert whole_outcome == (expected + before, error, code)
    assert feed_chunks(WebSocketFramer(max_message=1000), cut(data.draw, full)) == whole_outcome


# Pieces of client frames, so random streams get past the header checks often.
PIECES = [
    client_frame(TEXT, "a")[:2],
    client_frame(BINARY, b"bb")[:2],
    client_frame(TEXT, "a", fin=False)[:2],
    client_frame(CONT, "a")[:2],
    client_frame(PING)[:2],
    client_frame(CLOSE, close_payload(1000))[:2],
    client_frame(BINARY, length=300)[:4],
    MASK,
    b"\x00\x00\x00\x00",
    b"\xff",
    b"\xc3\xa9",
    b"\x80",
]


@FUZZ_SETTINGS
@given(data=st.data(), deflate=st.booleans())
def test_fuzz_only_documented_errors_escape(data: st.DataObject, deflate: bool) -> None:
    stream = data.draw(
        st.one_of(
            st.binary(max_size=300),
            st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=8)), max_size=30).map(
                b"".join
            ),
        )
    )
    prototype = WebSocketFramer(max_message=500, deflate=Deflate() if deflate else None)
    framer = prototype.fresh()
    delivered: list[Any] = []
    error: type[FramingError] | None = None
    code = None
    for chunk in cut(data.draw, stream):
        try:
            got = framer.feed(chunk)
        except (WebSocketError, MessageTooBig) as exc:
            delivered += exc.frames
            error, code = type(exc), exc.code
            assert code in (1002, 1007, 1009)
            break
        assert all(type(f) in (str, bytes, Ping, Pong, Close) for f in got)
        delivered += got
        assert framer.buffered <= 500 + 14
    assert feed_chunks(prototype.fresh(), [stream]) == (delivered, error, code)


@SETTINGS
@given(message=messages)
def test_encoded_frames_read_back(message: str | bytes) -> None:
    [(frame, _)] = read_server_frames(WebSocketFramer().encode(message))
    assert frame.data == (message.encode() if isinstance(message, str) else message)
