"""LengthPrefixed: each case fed whole, one byte at a time, and with trailing data."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from daemonkit.errors import ConfigError, FrameTooLarge, FramingError
from daemonkit.framing import LengthPrefixed

from .test_base import WAYS, CountingBuffer, feed_chunks, outcome

Way = Callable[[bytes], list[bytes]]

# (framer, stream, frames): streams that end on a frame boundary.
GOOD = [
    (LengthPrefixed(), b"", []),
    (LengthPrefixed(), b"\x00\x00\x00\x00", [b""]),
    (LengthPrefixed(), b"\x00\x00\x00\x02hi\x00\x00\x00\x00\x00\x00\x00\x01!", [b"hi", b"", b"!"]),
    (LengthPrefixed("<I"), b"\x02\x00\x00\x00hi", [b"hi"]),
    (LengthPrefixed("!H"), b"\x00\x03abc\x00\x01\x00", [b"abc", b"\x00"]),
    (LengthPrefixed(">H"), b"\x00\x03abc", [b"abc"]),
    (LengthPrefixed("B"), b"\x03abc\x00\x01\xff", [b"abc", b"", b"\xff"]),
    (LengthPrefixed("!Q"), b"\x00" * 7 + b"\x02hi", [b"hi"]),
    (LengthPrefixed("B", max_length=3), b"\x03abc\x03xyz", [b"abc", b"xyz"]),
]
# (framer, stream, frames before the error, error)
BAD = [
    (LengthPrefixed("B", max_length=3), b"\x04", [], FrameTooLarge),
    (LengthPrefixed("B", max_length=3), b"\x04abcd", [], FrameTooLarge),
    (LengthPrefixed("B", max_length=3), b"\x01a\x00\x09", [b"a", b""], FrameTooLarge),
    (LengthPrefixed("!H", max_length=300), b"\x01\x2d", [], FrameTooLarge),
    (LengthPrefixed(), b"\x00\x00\x00\x01a\xff\xff\xff\xff\x00", [b"a"], FrameTooLarge),
]


def ids(cases: list[tuple[object, ...]]) -> list[str]:
    return [f"{case[0]!r}-{case[1]!r}"[:60] for case in cases]


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
@pytest.mark.parametrize(("framer", "stream", "frames"), GOOD, ids=ids(GOOD))
def test_good(framer: LengthPrefixed, stream: bytes, frames: list[bytes], way: Way) -> None:
    fresh = framer.fresh()
    assert feed_chunks(fresh, way(stream)) == (frames, None)
    assert fresh.buffered == 0


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
@pytest.mark.parametrize("cut", [1, -1], ids=["header", "payload"])
@pytest.mark.parametrize(("framer", "stream", "frames"), GOOD, ids=ids(GOOD))
def test_good_with_trailing_data(
    framer: LengthPrefixed, stream: bytes, frames: list[bytes], way: Way, cut: int
) -> None:
    fresh = framer.fresh()
    encoded = fresh.encode(b"abc")
    trailing, rest = encoded[:cut], encoded[cut:]
    assert feed_chunks(fresh, way(stream + trailing)) == (frames, None)
    assert fresh.buffered == len(trailing)
    assert fresh.feed(rest) == [b"abc"]
    assert fresh.buffered == 0


@pytest.mark.parametrize("way", WAYS.values(), ids=WAYS.keys())
@pytest.mark.parametrize(("framer", "stream", "frames", "error"), BAD, ids=ids(BAD))
def test_bad(
    framer: LengthPrefixed,
    stream: bytes,
    frames: list[bytes],
    error: type[FramingError],
    way: Way,
) -> None:
    assert outcome(framer, stream, way) == (frames, error)


def test_oversize_header_raises_before_the_payload() -> None:
    framer = LengthPrefixed("!I", max_length=1000)
    assert framer.feed(b"\x00\x00") == []
    with pytest.raises(FrameTooLarge, match=r"announces 1001 bytes.*max_length=1000"):
        framer.feed(b"\x03\xe9")
    assert framer.buffered == 0


def test_frame_of_exactly_max_length_passes() -> None:
    framer = LengthPrefixed("B", max_length=5)
    assert framer.feed(b"\x0512345\x05123") == [b"12345"]
    assert framer.feed(b"45") == [b"12345"]


def test_header_split_across_feeds() -> None:
    framer = LengthPrefixed("!I")
    assert framer.feed(b"\x00") == []
    assert framer.feed(b"\x00\x00") == []
    assert framer.buffered == 3
    assert framer.feed(b"\x02h") == []
    assert framer.feed(b"i\x00\x00\x00\x00\x00") == [b"hi", b""]
    assert framer.buffered == 1


def test_encode() -> None:
    assert LengthPrefixed().encode(b"hi") == b"\x00\x00\x00\x02hi"
    assert LengthPrefixed("<H").encode(b"hi") == b"\x02\x00hi"
    assert LengthPrefixed("B").encode(b"") == b"\x00"


def test_encode_refuses_more_than_max_length() -> None:
    with pytest.raises(FrameTooLarge, match="4 bytes is longer than max_length=3"):
        LengthPrefixed(max_length=3).encode(b"abcd")


def test_encode_refuses_more_than_the_header_can_express() -> None:
    framer = LengthPrefixed("B", max_length=1000)
    assert framer.encode(b"x" * 255)[:1] == b"\xff"
    with pytest.raises(FrameTooLarge, match=r"does not fit header 'B' \(at most 255 bytes\)"):
        framer.encode(b"x" * 256)


def test_max_length_above_the_header_capacity_is_allowed() -> None:
    framer = LengthPrefixed("!H")  # the default 1 MiB is more than 65535
    frame = b"x" * 65535
    assert framer.feed(framer.encode(frame)) == [frame]


@pytest.mark.parametrize("frame", [b"", b"a", b"\x00" * 300, b"x" * 70000])
@pytest.mark.parametrize("header", ["!H", "!I", "<Q", "B"])
def test_round_trip(header: str, frame: bytes) -> None:
    framer = LengthPrefixed(header)
    if len(frame) > (1 << 8 * struct.calcsize(header)) - 1:
        with pytest.raises(FrameTooLarge):
            framer.encode(frame)
    else:
        assert framer.feed(framer.encode(frame)) == [frame]


@pytest.mark.parametrize("header", ["!H", "!I", "!Q", "<I", ">H", "B", "=L", "@Q", "I", "<B"])
def test_headers_of_one_unsigned_integer_are_accepted(header: str) -> None:
    framer = LengthPrefixed(header, max_length=10)
    assert framer.header == header
    assert framer.feed(framer.encode(b"ok")) == [b"ok"]


@pytest.mark.parametrize(
    "header", ["!i", "!h", "b", "<q", "!II", "2H", "!f", "!?", "", "!", "x", "!N", "!xI", " !I"]
)
def test_other_headers_are_config_errors(header: str) -> None:
    with pytest.raises(ConfigError, match="one unsigned integer") as info:
        LengthPrefixed(header)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_length": 0}, ConfigError),
        ({"max_length": -1}, ConfigError),
        ({"max_length": 2.0}, TypeError),
        ({"header": b"!I"}, ConfigError),
        ({"header": 4}, ConfigError),
    ],
)
def test_constructor_validation(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        LengthPrefixed(**kwargs)  # type: ignore[arg-type]


LONG = 200 * 1024


@pytest.mark.parametrize("header", ["!I", "B"])
def test_a_frame_fed_one_byte_at_a_time_costs_linear_work(header: str) -> None:
    framer = LengthPrefixed(header, max_length=LONG)
    size = framer._size
    frame = b"x" * min(LONG, (1 << 8 * size) - 1)
    buf = framer._buffer = CountingBuffer()
    encoded = framer.encode(frame)
    frames, error = feed_chunks(framer, [encoded[i : i + 1] for i in range(len(encoded))])
    assert (frames, error) == ([frame], None)
    assert framer._buffer is buf, "the buffer was rebuilt"
    # Header bytes are copied at most once per feed while incomplete, the
    # payload once into the buffer and once out.
    assert buf.touched <= size * size + 2 * len(frame)
